"""How long a SIGKILLed `pba run` takes to be ready again, under load.

Starts the embedded broker, `pba simulate` (300 mixed links at 1,500 events/s), and
`pba run` with the arguments after `--`; lets it run --warm-up seconds, then SIGKILLs
it --kills times, every --every seconds, restarting it at once in the same group. Prints
the seconds from each kill to /readyz answering 200, with the service's own account of
its rebuild, the maximum, and how many rebalances each run saw (1: only its start).

    .venv/bin/python scripts/restart-time.py -- --session-timeout-s 6
    .venv/bin/python scripts/restart-time.py --kills 10 --warm-up 120 -- --session-timeout-s 1

Figures: docs/RELIABILITY.md, "Restarts".
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "support"))
from kafka_support import free_port, ready_now  # noqa: E402

from consumer.tools.broker import EmbeddedBroker  # noqa: E402


def main(kills: int, warm_up: float, every: float, extra: list[str]) -> None:
    broker = EmbeddedBroker().start()
    logs = Path(tempfile.mkdtemp(prefix="pba-restart-"))
    pba = [sys.executable, "-m", "consumer.cli"]
    sim = subprocess.Popen([*pba, "simulate", "--bootstrap", broker.bootstrap, "--links", "300", "--rate",
                            "1500", "--duration", str(warm_up + kills * (every + 30)), "--regime", "mixed"],
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
        proc, port, log = start("first")
        until_ready(port)
        time.sleep(warm_up)
        took = []
        for kill in range(kills):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            rebalances = log.read_text().count("assigned ")
            killed = time.monotonic()
            proc, port, log = start(f"restart-{kill}")
            until_ready(port)
            took.append(time.monotonic() - killed)
            rebuilt = re.findall(r"assigned .*? in [0-9.]+ s", log.read_text())
            print(f"kill {kill + 1}: ready {took[-1]:.2f} s after it; the run before saw {rebalances} "
                  f"rebalance(s); {'; '.join(rebuilt)}", flush=True)
            time.sleep(every)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        print(f"ready after a kill: max {max(took):.2f} s, median {sorted(took)[len(took) // 2]:.2f} s "
              f"over {kills} kills; logs in {logs}")
    finally:
        sim.kill()
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--warm-up", type=float, default=15.0, help="seconds before the first kill")
    parser.add_argument("--every", type=float, default=8.0, help="seconds from ready to the next kill")
    parser.add_argument("extra", nargs="*", help="arguments for pba run (after --)")
    args = parser.parse_args()
    main(args.kills, args.warm_up, args.every, args.extra)
