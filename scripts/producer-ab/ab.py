"""A/B, in one sitting, of the producer `pba run` publishes with: aiokafka's (A, as
shipped) against librdkafka's through confluent-kafka (B, librdkafka.patch), runs
alternated, each arm in the same tree and the same broker; only AB_PRODUCER differs.

    python ab.py PAIRS SHAPE MODE [LATENCY_RATE ...]     (SHAPE: members x threads, e.g. 2x1)

Run by run.sh, in a worktree with the patch applied.
"""

import asyncio
import json
import os
import sys

from consumer.tools.bench import harness
from consumer.tools.broker import EmbeddedBroker
from predictor.runtime import SessionSettings

pairs, shape, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rates = [float(r) for r in sys.argv[4:]]
members, threads = map(int, shape.split("x"))
settings = SessionSettings(intra_op_threads=threads)
out: dict[str, list[object]] = {"A": [], "B": [], "A_latency": [], "B_latency": []}


def arms(n: int) -> tuple[str, str]:
    return ("A", "B") if n % 2 == 0 else ("B", "A")


with EmbeddedBroker() as broker:
    for n in range(pairs):
        for arm in arms(n):
            os.environ["AB_PRODUCER"] = "librdkafka" if arm == "B" else "aiokafka"
            e2e = asyncio.run(harness.end_to_end(broker.bootstrap, mode, settings, 500, 40_000,
                                                 f"ab-{n}-{arm}", members))
            out[arm].append(round(e2e["model_predictions_per_s"]))
            print(arm, "end to end", out[arm][-1], file=sys.stderr, flush=True)
    for rate in rates:
        for n in range(2):
            for arm in arms(n):
                os.environ["AB_PRODUCER"] = "librdkafka" if arm == "B" else "aiokafka"
                lat = asyncio.run(harness.latency(broker.bootstrap, mode, settings, 200, rate, 10.0,
                                                  f"ab-lat-{int(rate)}-{n}-{arm}", members))
                out[f"{arm}_latency"].append({"rate": rate, "p50_ms": round(lat["p50_ms"]),
                                              "p99_ms": round(lat["p99_ms"])})
print(json.dumps(out))
