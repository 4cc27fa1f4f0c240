"""The per-link adaptation's CPU per event in the service: the same batches through two
RecordProcessors in one process, with and without the adaptation, interleaved.

    python scripts/adaptation-cost.py [--mode datacenter] [--links 500] [--batch 2048]

Prints microseconds per event on each side (docs/BENCHMARKS.md, seventh session).
"""
from __future__ import annotations

import argparse
import time

from consumer.config import ServiceConfig
from consumer.metrics import Metrics
from consumer.processor import RecordProcessor
from consumer.tools.bench import load
from predictor.forecaster import Forecaster
from predictor.link_predictor import LinkPredictor, models_for_mode
from predictor.modes import WINDOW_STEPS_BY_NAME
from predictor.runtime import load_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("datacenter", "internet"), default="datacenter")
    parser.add_argument("--links", type=int, default=500)
    parser.add_argument("--batch", type=int, default=2048)
    args = parser.parse_args()
    models = load_models(None, models_for_mode(args.mode))

    def processor(adapted: bool) -> RecordProcessor:
        link_predictor = LinkPredictor(Forecaster(models), args.mode, 1_000_000,
                                       **({} if adapted else {"adaptation": None}))
        return RecordProcessor(link_predictor, ServiceConfig(mode=args.mode), Metrics())

    sides = {"with": processor(True), "without": processor(False)}
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
