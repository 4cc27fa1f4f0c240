"""`pba bench`: the service's speed against ONNX Runtime alone, in one run on one machine.

harness.py runs the parts, load.py makes the traffic and times it, report.py renders
the result (docs/BENCHMARKS.md keeps the figures and the commands behind them)."""

from consumer.tools.bench.harness import PARTS, latency_sweep, run_bench
from consumer.tools.bench.report import render

__all__ = ["PARTS", "latency_sweep", "render", "run_bench"]
