"""ONNX Runtime alone on a shipped model, one session, predictions/s by rows per call (the
bench's own timing, consumer/tools/bench/ceiling.py, for sizes of your choice), to choose
predictor/runtime.py's CELLS_PER_THREAD.

    .venv/bin/python scripts/rows-per-call.py THREADS MODE [SIZES]   # e.g. 1 datacenter 16,32,64,128
"""

import sys

from consumer.tools.bench.ceiling import one_session
from predictor.runtime import SessionSettings

threads, mode = int(sys.argv[1]), sys.argv[2]
sizes = tuple(int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "16,32,64,128,256").split(","))
rates = one_session(mode, SessionSettings(intra_op_threads=threads), batches=sizes)
print(threads, "thread(s),", mode, {size: round(rate) for size, rate in rates.items()})
