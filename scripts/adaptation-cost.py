"""The per-link adaptation's CPU per event in the service: the same batches through two
RecordProcessors in one process, with and without the adaptation, interleaved.

    python scripts/adaptation-cost.py [--mode datacenter] [--links 500] [--batch 2048]

Prints microseconds per event on each side (docs/BENCHMARKS.md, seventh session).
"""
from __future__ import annotations

import argparse
import time

from consumer.tools.bench import load
from consumer.tools.bench.harness import service_processor
from predictor.modes import WINDOW_STEPS_BY_NAME
from predictor.runtime import SessionSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("datacenter", "internet"), default="datacenter")
    parser.add_argument("--links", type=int, default=500)
    parser.add_argument("--batch", type=int, default=2048)
    args = parser.parse_args()
    settings = SessionSettings()
    sides = {"with": service_processor(args.mode, settings),
             "without": service_processor(args.mode, settings, adaptation=None)}
    steps = WINDOW_STEPS_BY_NAME[args.mode]
    records = load.records(load.events(args.links, steps + 370, args.mode))
    for p in sides.values():
        p.observe_history(records[:args.links * steps])  # windows full: the models serve
    rest = records[args.links * steps:]
    spent = dict.fromkeys(sides, 0.0)
    for n, start in enumerate(range(0, len(rest), args.batch)):
        for side in ("with", "without") if n % 2 else ("without", "with"):
            started = time.perf_counter()
            sides[side].process(rest[start:start + args.batch])
            spent[side] += time.perf_counter() - started
    for side, seconds in spent.items():
        print(f"{side} the adaptation: {seconds / len(rest) * 1e6:.1f} us per event")


if __name__ == "__main__":
    main()
