#!/usr/bin/env bash
# Full-size training on a lent GPU machine (the device tool), in one prepared run.
# Needs .carry/traces.npz and .whl/ (orjson for cp312), made here first:
#   .venv/bin/python -c "from pathlib import Path; from training.traces import *; pack_traces(read_index('../shared/traces'), Path('.carry/traces.npz'))"
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl orjson
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
