#!/usr/bin/env bash
# Compile checks of the CUDA sources without a GPU.
#   scripts/check_cuda.sh           every csrc/*.cu with plain nvcc for sm_90 (seconds per file)
#   scripts/check_cuda.sh --full    also builds the whole torch extension alarm_kernels._C in a separate
#                                   venv made from requirements/gpu.lock (CUDA torch; docs/building.md; ~5 GB, minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda: nvcc not found; CUDA sources NOT compiled" >&2
  exit 1
fi
# The nvcc on PATH may be a wrapper script: find the real toolkit folder for CUDA_HOME.
real_nvcc=$(grep -oE '/[^ "]*/bin/nvcc' "$(command -v "$NVCC")" 2>/dev/null | head -n1 || true)
[ -n "$real_nvcc" ] || real_nvcc=$(readlink -f "$(command -v "$NVCC")")
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$real_nvcc")")}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for cu in csrc/*.cu; do
  [ -e "$cu" ] || continue
  start=$(date +%s)
  "$NVCC" -c -std=c++20 -O3 -Icsrc -gencode=arch=compute_90,code=sm_90 -o "$tmp/$(basename "$cu").o" "$cu"
  echo "check_cuda: $cu compiled for sm_90 in $(( $(date +%s) - start )) s"
  n=$((n + 1))
done
echo "check_cuda: $n CUDA source files compiled"

if [ "${1:-}" = "--full" ]; then
  venv=${ALARM_CUDA_VENV:-.venv-cuda}
  if ! "$venv/bin/python" -c "import torch; assert torch.version.cuda" 2>/dev/null; then
    echo "check_cuda: creating $venv with a CUDA build of torch (once)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip -q --disable-pip-version-check install --require-hashes --no-deps \
      -r requirements/gpu.lock >"$tmp/pip.log" 2>&1 || { grep -v "^WARNING: Location" "$tmp/pip.log" | tail -n 20; exit 1; }
  fi
  start=$(date +%s)
  inc=$("$venv/bin/python" -c "import glob, site; print(':'.join(glob.glob(site.getsitepackages()[0] + '/nvidia/cu13/include')))")
  rm -rf "$tmp/build"
  CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=9.0 CPATH=$inc MAX_JOBS=2 \
    "$venv/bin/python" setup.py -q build_ext --build-temp "$tmp/build" --build-lib "$tmp/lib" >"$tmp/build.log" 2>&1 \
    || { tail -n 60 "$tmp/build.log"; echo "check_cuda: extension build FAILED" >&2; exit 1; }
  so=$(find "$tmp/lib" -name '_C*.so' | head -n1)
  [ -n "$so" ] || { tail -n 30 "$tmp/build.log"; echo "check_cuda: no _C*.so produced" >&2; exit 1; }
  echo "check_cuda: torch extension built ($(basename "$so"), $(( $(date +%s) - start )) s)"
  # It must also load (without a GPU) and expose its functions.
  (cd "$tmp/lib" && "$venv/bin/python" -c "import torch, alarm_kernels._C as C; print('check_cuda: _C exports', ', '.join(n for n in dir(C) if not n.startswith('_')))")
fi
