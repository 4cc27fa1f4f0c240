#!/usr/bin/env bash
# Full-size training on a lent GPU machine (the device tool), in one prepared run.
# Needs .carry/traces.npz (training.traces.pack_traces) and .whl/ (orjson for cp312).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ort', onnxruntime.__version__)"
mkdir -p "$OUT/models"
timeout "${TRAIN_TIMEOUT:-500}" python3 -m consumer.cli -v train --mode "${TRAIN_MODES:-both}" \
  --traces .carry/traces.npz --out "$OUT/models" --device cuda --batch-size 512 -q \
  2>&1 | grep -v "Quantization parameters" | tee "$OUT/train.log"
ls -la "$OUT/models"
