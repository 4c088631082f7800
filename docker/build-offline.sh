#!/usr/bin/env bash
# Build the CPU image where no base image can be pulled and containers cannot reach a package index
# (as an air-gapped shop would): a Debian base made with mmdebstrap and `docker import`, and the
# Python dependencies from a local wheel folder (docker/wheels) filled on the host.
#
#   bash docker/build-offline.sh            # -> images fashion-base:bookworm and fashion-parts:cpu
#
# TORCH_WHEEL may name a local CPU wheel of torch (default: the one in /opt/wheels when present).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-fashion-base:bookworm}
TORCH_WHEEL=${TORCH_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | head -n 1 || true)}

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "making base image $BASE with mmdebstrap"
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,redis-server,redis-tools \
    bookworm - | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE"
fi

echo "filling docker/wheels"
PY=${PY:-python3}
torch_req=()
if [ -n "$TORCH_WHEEL" ]; then torch_req=("$TORCH_WHEEL"); fi
# async-timeout: redis needs it on Debian bookworm's Python 3.11.2
$PY -m pip download -q -d docker/wheels --only-binary=:all: "${torch_req[@]}" -r docker/requirements-serve.txt "async-timeout>=4.0.3"

docker build -f docker/Dockerfile --build-arg BASE_IMAGE="$BASE" \
  --build-arg PIP_ARGS="--no-index --find-links /wheels" -t fashion-parts:cpu .
