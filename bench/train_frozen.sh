#!/usr/bin/env bash
# Frozen-trunk training of every variant the README reports (same seed, same validation split),
# each timed, then the validation report they are chosen on. The test report is a separate, last
# step (see README). Every option is spelt out, so the runs do not depend on the defaults.
# Usage: bash bench/train_frozen.sh [cache_dir]   (FASHION_DATA_DIR must point at the data)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-.cache/features}
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-25}
ONLY=${ONLY:-}  # e.g. ONLY="attention crops-only": train just these variants (the rest keep their checkpoints)
stage() { local name=$1; shift; [[ -z $ONLY || " $ONLY validation-report " == *" $name "* ]] || return 0; local t0=$(date +%s); "$@"; echo "STAGE $name: $(( $(date +%s) - t0 )) s" | tee -a reports/train_timings.txt; }
mkdir -p reports
echo "machine: $(nproc) cores, $(uname -m), $(date -u +%F)" >> reports/train_timings.txt
train() { local out=$1; shift; $PY -m model.train --out "checkpoints/$out" --epochs "$EPOCHS" --cache-dir "$CACHE" "$@"; }
stage attention train attention --classification sigmoid --box-weight 2 --usage-weight 0.1 --whole-scores --centre-weight 1 --group-weight 1
# the same without the group term (the default until 2026-11-28), and both recipes at two more init seeds
stage attention-no-group train attention-no-group --classification sigmoid --box-weight 2 --usage-weight 0.1 --whole-scores --centre-weight 1 --group-weight 0
stage seeds bash -c 'for s in 1 2; do for g in 0 1; do $0 -m model.train --out checkpoints/seed$s-group$g --epochs $1 --cache-dir $2 --classification sigmoid --box-weight 2 --usage-weight 0.1 --whole-scores --centre-weight 1 --group-weight $g --init-seed $s; done; done' "$PY" "$EPOCHS" "$CACHE"
stage attention-lite2 train attention-lite2 --trunk efficientnet_lite2 --classification sigmoid --box-weight 2 --usage-weight 0.1 --whole-scores --centre-weight 1 --group-weight 0
stage attention-no-centre train attention-no-centre --classification sigmoid --box-weight 2 --usage-weight 0.1 --whole-scores --centre-weight 0 --group-weight 0
stage crops-only train crops-only --classification sigmoid --box-weight 2 --usage-weight 0.1 --no-whole-scores --centre-weight 1 --group-weight 0
stage crops-only-no-centre train crops-only-no-centre --classification sigmoid --box-weight 2 --usage-weight 0.1 --no-whole-scores --centre-weight 0 --group-weight 0
stage attention-no-usage train attention-no-usage --classification sigmoid --box-weight 1 --usage-weight 0 --no-whole-scores --centre-weight 0 --group-weight 0
stage box-softmax train box-softmax --classification softmax --box-weight 1 --usage-weight 0 --no-whole-scores --centre-weight 0 --group-weight 0
stage weak-softmax train weak-softmax --classification softmax --box-weight 0 --usage-weight 0 --no-whole-scores --centre-weight 0 --group-weight 0
stage weak-sigmoid train weak-sigmoid --classification sigmoid --box-weight 0 --usage-weight 0 --no-whole-scores --centre-weight 0 --group-weight 0
stage global train global --architecture global --classification sigmoid --box-weight 0 --usage-weight 0 --group-weight 0
stage validation-report $PY -m model.evaluate --split validation --out reports/ccp_validation.json \
  --checkpoint checkpoints/attention/best.pt --checkpoint checkpoints/attention-lite2/best.pt \
  --checkpoint checkpoints/attention-no-centre/best.pt \
  --checkpoint checkpoints/crops-only/best.pt --checkpoint checkpoints/crops-only-no-centre/best.pt \
  --checkpoint checkpoints/attention-no-usage/best.pt \
  --checkpoint checkpoints/box-softmax/best.pt --checkpoint checkpoints/weak-softmax/best.pt \
  --checkpoint checkpoints/weak-sigmoid/best.pt --checkpoint checkpoints/global/best.pt
