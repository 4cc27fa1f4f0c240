"""ONNX Runtime alone on a shipped model: 512 rows in calls of each size, predictions/s
(medians of 5, sizes interleaved), to choose predictor/runtime.py's CELLS_PER_THREAD.

    .venv/bin/python scripts/rows-per-call.py THREADS MODE [SIZES]   # e.g. 1 datacenter 16,32,64,128
"""

import statistics
import sys
import time

import numpy as np

from predictor.link_predictor import models_for_mode
from predictor.runtime import SessionSettings, load_models

threads, mode = int(sys.argv[1]), sys.argv[2]
sizes = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "16,32,64,128,256").split(",")]
(model,) = load_models(None, models_for_mode(mode), SessionSettings(intra_op_threads=threads)).models.values()
rows = np.random.default_rng(0).standard_normal((512, model.spec.window, 11)).astype(np.float32)
rates: dict[int, list[float]] = {size: [] for size in sizes}
for _ in range(5):
    for size in sizes:
        started = time.perf_counter()
        for _ in range(3):
            for i in range(0, len(rows), size):
                model.run_call(rows[i:i + size])
        rates[size].append(3 * len(rows) / (time.perf_counter() - started))
print(threads, "thread(s),", mode, {size: round(statistics.median(r)) for size, r in rates.items()})
