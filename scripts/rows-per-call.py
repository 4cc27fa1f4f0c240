"""ONNX Runtime alone on a shipped model, one session of one thread (one lane), predictions/s
by rows per call (the bench's own timing, consumer/tools/bench/ceiling.py, for sizes of
your choice), to choose predictor/runtime.py's CELLS_PER_CALL.

    .venv/bin/python scripts/rows-per-call.py MODE [SIZES]   # e.g. datacenter 16,32,64,128

(Before the lanes, docs/BENCHMARKS.md's tenth session, it took THREADS first: the
intra-op threads of the one session.)
"""

import sys

from consumer.tools.bench.ceiling import one_session
from predictor.runtime import SessionSettings

mode = sys.argv[1]
sizes = tuple(int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "16,32,64,128,256").split(","))
rates = one_session(mode, SessionSettings(intra_op_threads=1), batches=sizes, single_call=True)
print(mode, {size: round(rate) for size, rate in rates.items()})
