#!/usr/bin/env bash
# The first-GPU-run check, finished within a fixed budget (default 570 s) whatever happens:
#
#   bash bench/gpu_check.sh [--dry-run] [OUT]      OUT defaults to $OUT, else bench/results/gpu-check-<UTC time>
#
# Stages, each under its own `timeout` (cut to the time left), each writing its JSON before the next starts,
# so a stage that hangs or runs long costs only itself:
#   environment.json   device, versions, git sha
#   build.log          the CUDA extension, built in the background while (a) runs
#   (a) correctness-triton.json, correctness-cuda.json: every op fwd+bwd at the model's shapes in bf16 against
#       the float64 oracle, autotuning off (attention D = 64/128/192, atomic and deterministic dQ)
#   (b) attention.json       attention timing, autotuning on, vs flash-attn varlen / SDPA / FlexAttention
#   (c) memory_bound.json    pooling and layer mix: GB/s against the measured copy bandwidth
#   (d) gemm.json            fused concat + projection and conv vs cuBLAS (F.linear on a materialized concat)
#   (e) syncs.json           host syncs in one training step (torch.cuda.set_sync_debug_mode)
#   (f) train_run.json       a 60-step torchrun training run of tiny ALARM-CA (bench/train_run.py): tokens/s, memory
#   (g) e2e_step.json        end-to-end training steps, reference vs fast path, with the time left
# Stage limits follow the first H200 run (bench/results/h200-2026-11-29): correctness 67 + 20 s, attention
# 9 cases x ~15 s of autotuning, pooling + layer mix ~110 s, gemm ~61 s, e2e ~56 s.
# stages.jsonl has one line per stage (name, exit status, seconds; 124 = hit its time limit). The Triton
# cache lives in OUT/triton-cache, so a rerun into the same folder skips the compiles.
#   --dry-run    CPU plumbing check (tiny shapes, Triton interpreter, no build); CI runs it
#   PYTHON=...   interpreter (default python3); ALARM_GPU_CHECK_BUDGET=seconds (default 570)
#   ALARM_GIT_SHA=...   the sha to record (a copy sent to a GPU machine may carry a stale .git or none)
#   ALARM_GPU_CHECK_ONLY=environment,syncs   run only these stages (the others are recorded as not selected)
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-${OUT:-bench/results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${ALARM_GPU_CHECK_BUDGET:-570}
T0=$(date +%s)
export TRITON_CACHE_DIR="$PWD/$OUT/triton-cache" ALARM_KERNELS_AUTOTUNE=0 PYTHONUNBUFFERED=1
# the stages import the checkout's packages directly, so they run while (or if) the extension is building
export PYTHONPATH="$PWD/kernels:$PWD${PYTHONPATH:+:$PYTHONPATH}"
case "$OUT" in /*) export TRITON_CACHE_DIR="$OUT/triton-cache" ;; esac
status=0
: >"$OUT/stages.jsonl"

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# stage NAME LIMIT_S CMD...: run CMD under `timeout` (LIMIT_S, cut to the budget left), log to OUT/NAME.log
stage() {
  local name=$1 limit=$2; shift 2
  if [ -n "${ALARM_GPU_CHECK_ONLY:-}" ] && [[ ",$ALARM_GPU_CHECK_ONLY," != *",$name,"* ]]; then
    printf '{"stage": "%s", "status": "not selected", "seconds": 0}\n' "$name" >>"$OUT/stages.jsonl"
    return
  fi
  local remaining; remaining=$(left)
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  if [ "$limit" -lt 5 ]; then
    echo "== $name: skipped (budget spent) =="
    printf '{"stage": "%s", "status": "skipped", "seconds": 0}\n' "$name" >>"$OUT/stages.jsonl"
    return
  fi
  echo "== $name (limit ${limit} s) =="
  local start rc; start=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 12 "$OUT/$name.log"
  printf '{"stage": "%s", "exit": %d, "seconds": %d, "limit": %d}\n' "$name" "$rc" "$(( $(date +%s) - start ))" \
    "$limit" >>"$OUT/stages.jsonl"
  [ "$rc" -eq 0 ] || status=1
}

if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1
  QUICK=(--quick) CORRECT_OPS=(--ops weighted_layer_sum) BENCH=(--quick --budget 0.01 --variants triton)
  ATTN_OPS=weighted_layer_sum MEM_OPS=weighted_layer_sum GEMM_OPS=weighted_layer_sum
else
  QUICK=() CORRECT_OPS=() BENCH=()
  ATTN_OPS=attention MEM_OPS=varlen_pool,weighted_layer_sum GEMM_OPS=multi_encoder_concat,varlen_conv1d
fi

stage environment 30 $PY -c "
import json, sys; sys.path.insert(0, '.')
import torch
from bench.kernels import environment
from alarm.fileio import atomic_write_json
env = environment(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
atomic_write_json('$OUT/environment.json', env); print(json.dumps(env))"

BUILD_PID=""
if [ "$DRY" = 0 ]; then
  echo "== build alarm_kernels._C in the background (limit 240 s; log in $OUT/build.log) =="
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-12}
  # in place: the .so lands in kernels/alarm_kernels, which PYTHONPATH above already points at
  timeout -k 5 240 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1 &
  BUILD_PID=$!
fi

stage correctness-triton 100 $PY -m bench.gpu_correctness ${QUICK[@]+"${QUICK[@]}"} ${CORRECT_OPS[@]+"${CORRECT_OPS[@]}"} --backends triton \
  --out "$OUT/correctness-triton.json"

if [ -n "$BUILD_PID" ]; then
  wait "$BUILD_PID"; rc=$?
  printf '{"stage": "build", "exit": %d}\n' "$rc" >>"$OUT/stages.jsonl"
  if [ "$rc" -eq 0 ]; then
    stage correctness-cuda 40 $PY -m bench.gpu_correctness --backends cuda --ops \
      varlen_pool,varlen_conv1d,weighted_layer_sum,multi_encoder_concat --out "$OUT/correctness-cuda.json"
  else
    echo "extension build failed or timed out (exit $rc); see $OUT/build.log"; tail -n 20 "$OUT/build.log"; status=1
  fi
fi

ALARM_KERNELS_AUTOTUNE=1 stage attention 160 $PY -m bench.kernels ${BENCH[@]+"${BENCH[@]}"} --ops "$ATTN_OPS" \
  --out "$OUT/attention.json"
stage memory_bound 110 $PY -m bench.kernels ${BENCH[@]+"${BENCH[@]}"} --ops "$MEM_OPS" --out "$OUT/memory_bound.json"
stage gemm 75 $PY -m bench.kernels ${BENCH[@]+"${BENCH[@]}"} --ops "$GEMM_OPS" --out "$OUT/gemm.json"
stage syncs 45 $PY -m bench.sync_count --out "$OUT/syncs.json"
if [ "$DRY" = 0 ]; then
  stage train_run 80 $PY bench/train_run.py --out "$OUT" --work "${TMPDIR:-/tmp}/alarm-train-run" --steps 60
  stage e2e_step "$(left)" $PY bench/e2e_step.py --steps 2 --out "$OUT"
else
  stage train_run 60 $PY bench/train_run.py --out "$OUT" --work "$OUT/train-run-work" --device cpu --steps 3 \
    --clips 8 --workers 0
  printf '{"stage": "e2e_step", "status": "skipped (dry run)", "seconds": 0}\n' >>"$OUT/stages.jsonl"
fi
echo; echo "gpu_check: done in $(( $(date +%s) - T0 )) s, status $status; results in $OUT"
exit $status
