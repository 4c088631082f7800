#!/usr/bin/env bash
# Frozen-trunk training from nothing cached: trunk-map cache, then the attention model (paper loss),
# the global baseline, the BCE option, then the test report. Times each stage.
# Usage: bash bench/train_frozen.sh [cache_dir]   (FASHION_DATA_DIR must point at the data)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-.cache/features}
PY=${PY:-.venv/bin/python}
stage() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "STAGE $name: $(( $(date +%s) - t0 )) s" | tee -a reports/train_timings.txt; }
mkdir -p reports; : > reports/train_timings.txt
echo "machine: $(nproc) cores, $(uname -m), $(date -u +%F)" >> reports/train_timings.txt
stage attention-softmax $PY -m model.train --out checkpoints/attention --cache-dir "$CACHE"
stage global-sigmoid $PY -m model.train --architecture global --classification sigmoid --out checkpoints/global --cache-dir "$CACHE"
stage attention-sigmoid $PY -m model.train --classification sigmoid --out checkpoints/attention-bce --cache-dir "$CACHE"
stage global-softmax $PY -m model.train --architecture global --out checkpoints/global-softmax --cache-dir "$CACHE"
