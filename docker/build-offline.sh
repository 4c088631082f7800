#!/usr/bin/env bash
# Build the CPU image where no base image can be pulled and containers cannot reach a package index
# (as an air-gapped shop would): a Debian base made with mmdebstrap and `docker import`, and the
# Python dependencies from a local wheel folder (docker/wheels) filled on the host.
#
#   bash docker/build-offline.sh            # -> images fashion-base:bookworm and fashion-parts:cpu
#   WITH_RAY=1 bash docker/build-offline.sh # -> fashion-parts:ray, with Ray Serve (compose's `ray` profile)
#
# The wheels are chosen for the image's Python (its version, ABI and glibc, asked of the base
# image), not the host's. torch is the version requirements-serve.txt pins (the README's), in its CPU
# build: TORCH_WHEEL may name a local wheel of it (default: torch-<version>+cpu-<tag>-*.whl in
# /opt/wheels or docker/wheels); otherwise PyTorch's CPU index when it can be reached, and failing
# that the host's configured index, whose torch may be the CUDA build (gigabytes of nvidia wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-fashion-base:bookworm}
WITH_RAY=${WITH_RAY:-0}
if [ "$WITH_RAY" = 1 ]; then IMAGE=${FASHION_RAY_IMAGE:-fashion-parts:ray}; else IMAGE=${FASHION_IMAGE:-fashion-parts:cpu}; fi
ray_requirements=()
[ "$WITH_RAY" = 1 ] && ray_requirements=(-r docker/requirements-ray.txt)  # resolved with the service's own
PY=${PY:-python3}

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "making base image $BASE with mmdebstrap"
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,redis-server,redis-tools \
    bookworm - | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE"
fi

# The image's interpreter: version, CPython tag and the glibc its wheels must fit.
read -r py_version py_tag glibc arch < <(docker run --rm "$BASE" python3 -c '
import platform, sys
print(platform.python_version(), "cp%d%d" % sys.version_info[:2], platform.libc_ver()[1], platform.machine())')
echo "image Python $py_version ($py_tag, glibc $glibc, $arch)"
platforms=()
for minor in $(seq "${glibc#2.}" -1 17); do platforms+=(--platform "manylinux_2_${minor}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}")  # and manylinux2010, manylinux1 with it

torch_version=$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' docker/requirements-serve.txt)
TORCH_WHEEL=${TORCH_WHEEL:-$(ls /opt/wheels/torch-"$torch_version"+cpu-"$py_tag"-*.whl \
  docker/wheels/torch-"$torch_version"+cpu-"$py_tag"-*.whl 2>/dev/null | head -n 1 || true)}
torch_source=()
if [ -n "$TORCH_WHEEL" ]; then
  echo "torch: $TORCH_WHEEL"
  torch_source=("$TORCH_WHEEL")
elif $PY -c 'import urllib.request; urllib.request.urlopen("https://download.pytorch.org/whl/cpu/", timeout=5)' \
  >/dev/null 2>&1; then
  echo "torch $torch_version: from PyTorch's CPU index"
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu)
else
  echo "torch $torch_version: PyTorch's CPU index cannot be reached: from the host's index"
fi

echo "filling docker/wheels"
# async-timeout: redis needs it on Debian bookworm's Python 3.11.2 (pip reads the markers of
# dependencies with the host's Python, so it is named here).
$PY -m pip download -q -d docker/wheels --only-binary=:all: \
  --python-version "$py_version" --implementation cp --abi "$py_tag" "${platforms[@]}" \
  "${torch_source[@]}" -r docker/requirements-serve.txt "${ray_requirements[@]}" "async-timeout>=4.0.3"
if ls docker/wheels/nvidia_* >/dev/null 2>&1; then
  echo "note: docker/wheels holds CUDA libraries ($(du -sh docker/wheels | cut -f1) in all): the torch found is" \
    "the CUDA build; a CPU wheel (TORCH_WHEEL=torch-$torch_version+cpu-...whl) makes a far smaller image" >&2
fi

docker build -f docker/Dockerfile --build-arg BASE_IMAGE="$BASE" --build-arg WITH_RAY="$WITH_RAY" \
  --build-arg PIP_ARGS="--no-index --find-links /wheels" -t "$IMAGE" .
