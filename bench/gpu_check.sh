#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA extension, run the GPU parity tests, run the kernel
# benchmarks and the end-to-end step benchmark, and leave results (JSON + logs) in OUT.
#
#   bash bench/gpu_check.sh [OUT]        OUT defaults to $OUT, else bench/results/
#
# Uses the machine's own python/torch (a CUDA build, torch 2.11-2.14); installs nothing from the network.
# Sized to finish in about 8 minutes on one H100/H200.
#   PYTHON=...             interpreter (default python3)
#   ALARM_BENCH_ARGS=...   extra arguments for bench.kernels and e2e_step (e.g. --quick to dry-run on CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-bench/results}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
status=0
step() { echo; echo "== $* =="; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

step "build alarm_kernels._C"
start=$(date +%s)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
if $PY -m pip install -q --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  echo "built in $(( $(date +%s) - start )) s"
else
  tail -n 40 "$OUT/build.log"; echo "extension build FAILED (continuing with Triton only)"; status=1
fi
$PY -c "import alarm_kernels._ext as e; print('extension:', e.extension_unavailable_reason() or 'loaded')"

step "GPU parity tests"
timeout 200 $PY -m pytest -q -x --no-header -p no:cacheprovider tests -k "not hf and not model and not rephrase and not eval" \
  --junitxml="$OUT/parity-junit.xml" 2>&1 | tail -n 25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
$PY -m alarm_kernels.report >"$OUT/parity-report.txt" 2>&1 || status=1
tail -n 3 "$OUT/parity-report.txt"

step "kernel benchmarks"
timeout 180 $PY -m bench.kernels ${ALARM_BENCH_ARGS:-} --out "$OUT/kernels-$stamp.json" 2>&1 | tail -n 80
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "end-to-end training step (reference vs fast path)"
timeout 120 $PY bench/e2e_step.py ${ALARM_BENCH_ARGS:-} --out "$OUT" 2>&1 | tail -n 20
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo; echo "gpu_check: done, status $status; results in $OUT"
exit $status
