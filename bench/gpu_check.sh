#!/usr/bin/env bash
# The checks that need a GPU, in one short script for a machine that has one (a few minutes):
#   bash bench/gpu_check.sh
# 1. the tests that need CUDA (the model on CUDA against the CPU, faiss-gpu against faiss-cpu
#    when faiss-gpu is installed, the service with FASHION_DEVICE=cuda);
# 2. the product set indexed on the GPU (PyTorch on CUDA, FAISS on the GPU where it is present);
# 3. the serving bench with FASHION_DEVICE=cuda on that bundle.
# Results: reports/gpu/ (the bundle stays in $BUNDLES, default /tmp/gpu-bundles).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUNDLES=${BUNDLES:-/tmp/gpu-bundles}
DATA=${FASHION_DATA_DIR:-../shared/data}
mkdir -p reports/gpu
$PY -c 'import torch, faiss; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-"); print("faiss GPUs", faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0)'
$PY -m pytest -q -rs tests/app/test_cuda.py tests/model/test_runtime.py 2>&1 | tee reports/gpu/tests.txt
time $PY -m indexer build --catalogue "$DATA/fashion-product" --checkpoint weights/ccp-attention.pt \
  --bundles "$BUNDLES" --device cuda 2>&1 | tail -40 | tee reports/gpu/index.txt
$PY bench/serve_latency.py --bundles "$BUNDLES" --device cuda --runtime pytorch --out reports/gpu/bench_serve.json
