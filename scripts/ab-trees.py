"""A/B of `pba run` between source trees, in one sitting: the same broker, the same
pre-loaded load, runs rotated so that no tree always goes first; only the code the
service's members import differs (PYTHONPATH). The bench's own side (load, reader)
runs from the checkout this is started in, in every arm.

    python scripts/ab-trees.py TREE [TREE ...] [--rounds N] [--shape 2x1]
                               [--mode datacenter] [--events 160000] [--links 500]
                               [--latency-rate EVENTS_PER_S]

With --latency-rate, each run is the bench's latency part at that rate instead (200
links, 10 s live): the figure is its p99 in ms, lower being better.

A tree is a checkout of the project, e.g. `git worktree add /tmp/before HEAD~1`. Prints
each run as it ends, then a JSON summary: per tree every rate and their median, and
each tree's median over the first's. Run from this checkout's root with its venv.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys

from consumer.tools.bench import harness
from consumer.tools.broker import EmbeddedBroker
from predictor.runtime import SessionSettings

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("trees", nargs="+")
parser.add_argument("--rounds", type=int, default=4)
parser.add_argument("--shape", default="2x1", help="members x inference threads")
parser.add_argument("--mode", default="datacenter", choices=("datacenter", "internet"))
parser.add_argument("--events", type=int, default=160_000)
parser.add_argument("--links", type=int, default=500)
parser.add_argument("--latency-rate", type=float, default=None)
args = parser.parse_args()
members, threads = map(int, args.shape.split("x"))
settings = SessionSettings(intra_op_threads=threads)
trees = [os.path.abspath(t) for t in args.trees]
rates: dict[str, list[int]] = {t: [] for t in trees}

with EmbeddedBroker() as broker:
    for n in range(args.rounds):
        order = trees[n % len(trees):] + trees[:n % len(trees)]
        for tree in order:
            os.environ["PYTHONPATH"] = tree
            os.chdir(tree)  # `python -m` puts the working directory first on the path
            run = f"ab-{n}-{trees.index(tree)}"
            if args.latency_rate:
                lat = asyncio.run(harness.latency(broker.bootstrap, args.mode, settings, min(args.links, 200),
                                                  args.latency_rate, 10.0, run, members))
                rates[tree].append(round(lat["p99_ms"]))
                print(f"round {n}: {tree} p50 {lat['p50_ms']:.0f} / p99 {lat['p99_ms']:.0f} ms",
                      file=sys.stderr, flush=True)
                continue
            e2e = asyncio.run(harness.end_to_end(broker.bootstrap, args.mode, settings, args.links,
                                                 args.events, run, members))
            rates[tree].append(round(e2e["model_predictions_per_s"]))
            print(f"round {n}: {tree} {rates[tree][-1]:,}/s", file=sys.stderr, flush=True)

medians = {t: statistics.median(r) for t, r in rates.items()}
figure = f"p99 ms at {args.latency_rate:g}/s" if args.latency_rate else "model predictions/s"
print(json.dumps({"shape": args.shape, "mode": args.mode, "events": args.events, "figure": figure,
                  "runs": rates,
                  "median": medians,
                  "median_over_first": {t: round(m / medians[trees[0]], 3) for t, m in medians.items()}},
                 indent=1))
