"""An example subscriber: apply each link's allocation the way the service means it.

    python examples/subscriber.py --bootstrap HOST:PORT [--group-id my-senders]

Three rules, all from the prediction contract (schemas/prediction.schema.json):

- drop duplicates by `prediction_id`: delivery is at-least-once, and a re-sent
  prediction carries the id of the first (docs/RELIABILITY.md);
- act only while `valid_until` is ahead: after an outage the backlog describes the
  past, and a stale allocation is worse than the one already in place;
- ignore `shadow: true`: shadow predictions are for comparison, never for acting on.

`apply()` prints what a sender would do; put your transport's call there. Needs only
aiokafka and the standard library; stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas import PREDICTIONS_TOPIC

#: ids remembered for dropping duplicates; a re-send comes within a rebuild's reach
#: (minutes), so a bounded memory of recent ids is enough
REMEMBERED_IDS = 100_000


class Subscriber:
    """Decides, for each prediction, whether to act on it; remembers recent ids."""

    def __init__(self, apply: Callable[[dict[str, Any]], None], clock: Callable[[], float] = time.time,
                 remembered: int = REMEMBERED_IDS) -> None:
        self._apply = apply
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered

    def handle(self, value: bytes) -> str:
        """Act on one message of the predictions topic; returns what was done with it:
        applied, duplicate, expired, shadow or unreadable."""
        try:
            prediction = json.loads(value)
            pid, valid_until = str(prediction["prediction_id"]), float(prediction["valid_until"])
        except (ValueError, KeyError, TypeError):
            return "unreadable"
        if pid in self._seen:
            return "duplicate"
        self._seen[pid] = None
        if len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        if prediction.get("shadow"):
            return "shadow"
        if valid_until <= self._clock():
            return "expired"
        self._apply(prediction)
        return "applied"


def apply(prediction: dict[str, Any]) -> None:
    a = prediction["allocation"]
    print(f"{prediction['link_id']}: {a['action']} {a['streams']} streams, pacing "
          f"{a['pacing_bytes_per_s'] * 8 / 1e6:.1f} Mbit/s, window {a['window_bytes']} B "
          f"(predicted {prediction['predicted_bandwidth_mbps']:.1f} Mbit/s, reserve "
          f"{prediction['reserve_mbps']:.1f}, confidence {prediction['confidence']:.2f})", flush=True)


async def main(bootstrap: str, topic: str, group_id: str) -> Counter[str]:
    """Act on predictions until Ctrl-C or SIGTERM; returns what was done with them."""
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    # a group of its own: several subscribers share the links; auto-commit is fine here,
    # since a prediction seen twice is dropped and one missed is soon replaced
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group_id,
                                auto_offset_reset="latest")
    subscriber = Subscriber(apply)
    done: Counter[str] = Counter()
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                done.update(subscriber.handle(record.value or b"") for record in records)
            if consumer.assignment() and not done["listening"]:
                done["listening"] = 1
                print(f"listening on {topic}", file=sys.stderr, flush=True)
    finally:
        await consumer.stop()
    del done["listening"]
    print(", ".join(f"{what} {n}" for what, n in sorted(done.items())) or "nothing received",
          file=sys.stderr, flush=True)
    return done


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    parser.add_argument("--topic", default=PREDICTIONS_TOPIC)
    parser.add_argument("--group-id", default="pba-example-subscriber")
    args = parser.parse_args()
    asyncio.run(main(args.bootstrap, args.topic, args.group_id))
