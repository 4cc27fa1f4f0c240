"""How long a SIGKILLed `pba run` takes to be ready again, under load.

Starts the embedded broker, `pba simulate` (300 mixed links at 1,500 events/s), and
`pba run` with the given extra arguments; SIGKILLs the service three times, restarting
it at once in the same group, and prints the seconds from each kill to /readyz
answering 200, with the service's own account of its rebuild.

    .venv/bin/python scripts/restart-time.py --session-timeout-s 6
    .venv/bin/python scripts/restart-time.py --session-timeout-s 6 --group-instance-id pod-0

Figures: docs/RELIABILITY.md, "Restarts".
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "support"))
from kafka_support import free_port, ready_now  # noqa: E402

from consumer.broker import EmbeddedBroker  # noqa: E402

KILLS, RUN_BEFORE_KILL_S = 3, 8.0


def main(extra: list[str]) -> None:
    broker = EmbeddedBroker().start()
    logs = Path(tempfile.mkdtemp(prefix="pba-restart-"))
    pba = [sys.executable, "-m", "consumer.cli"]
    sim = subprocess.Popen([*pba, "simulate", "--bootstrap", broker.bootstrap, "--links", "300", "--rate",
                            "1500", "--duration", "120", "--regime", "mixed"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(name: str) -> tuple[subprocess.Popen[bytes], int, Path]:
        port, log = free_port(), logs / f"{name}.log"
        proc = subprocess.Popen([*pba, "run", "--bootstrap", broker.bootstrap, "--metrics-port", str(port),
                                 *extra], stderr=log.open("w"))
        return proc, port, log

    def until_ready(port: int) -> None:
        while not ready_now(port):
            time.sleep(0.05)

    try:
        proc, port, _ = start("first")
        until_ready(port)
        time.sleep(15)
        for kill in range(KILLS):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = time.monotonic()
            proc, port, log = start(f"restart-{kill}")
            until_ready(port)
            ready = time.monotonic() - killed
            rebuilt = re.findall(r"assigned .*? in [0-9.]+ s", log.read_text())
            print(f"restart {kill + 1}: ready {ready:.2f} s after the kill; {'; '.join(rebuilt)}", flush=True)
            time.sleep(RUN_BEFORE_KILL_S)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        sim.kill()
        broker.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
