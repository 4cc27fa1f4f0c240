"""`make demo`: the whole loop on one machine.

The service, simulator and live tail are not built yet (issues 5 and 6); until then the
demo runs the embedded broker alone so a newcomer can point a Kafka client at it.
"""

from __future__ import annotations

import sys

from consumer.broker import run_foreground


def main() -> int:
    print(
        "PBA stream demo: the streaming service, simulator and live tail are not built yet;\n"
        "running the embedded Kafka-protocol broker only.",
        flush=True,
    )
    return run_foreground()


if __name__ == "__main__":
    sys.exit(main())
