#!/usr/bin/env bash
# The GPU check, finished within a fixed budget (default 480 s, so a 10-minute call has room) whatever happens:
#
#   bash bench/gpu_check.sh [--dry-run] [OUT]      OUT defaults to $OUT, else bench/results/gpu-check-<UTC time>
#
# Stages, each under its own `timeout` (cut to the time left), each writing its results before the next starts,
# so a stage that hangs or runs long costs only itself. In order of priority (what the budget cannot reach is
# recorded as skipped):
#   environment.json   device, versions, git sha
#   wheels             liger-kernel / torchao from .whl/ (no network on the GPU machine; scripts/gpu_wheels.sh)
#   build.log          the CUDA extension, built in the background while correctness-triton runs (< 70 s on an H200)
#   correctness-triton.json, correctness-cuda.json: every op fwd+bwd at the model's shapes in bf16 against the
#       float64 oracle, autotuning off (attention D = 64/128/192, atomic and deterministic dQ)
#   overhead/          host cost of each op's forward+backward vs plain PyTorch (python -m bench.overhead)
#   frontends/         log-mel / fbank front ends on the GPU vs the extractors (python -m bench.frontends)
#   e2e_stage_B.json   ALARM-CA step (its four encoders) on the adapter-output cache, reference vs fast, token
#                      rates 1/2/4, with profile_stageB_fast.txt (bench/e2e_step.py --stages B)
#   e2e_stage_A.json   the same with the encoders online (--stages A), profile_stageA_fast.txt
#   train_run.json     a 60-step torchrun training run of tiny ALARM-CA (bench/train_run.py): tokens/s, memory
#   e2e_llm_kernels.json  stage B at rate 1: the frozen LLM plain / Liger / regional torch.compile / FP8 (fast path)
#   syncs.json, memory_bound.json, attention.json, gemm.json: host syncs and the kernel micro-benchmarks, with the
#                      time left (measured in full by the first H200 run, bench/results/h200-2026-11-29)
# Stage limits, from the first H200 run where measured (environment 7 s, correctness 67 + 20 s, build < 70 s, one
# full-size e2e step 1.2-1.6 s with Whisper + w2v-BERT online) and estimated otherwise (MuQ and SSLAM add 45% to
# the encoders' FLOPs, about 15% to the step's: 1.4-1.9 s; stage B step about half the stage A one; 2 warm-up + 10
# timed steps x 2 paths x 3 rates per e2e stage plus ~30 s of model building and encoding; the compile variant's
# first steps compile the decoder layer). stages.jsonl has one line per stage (name, exit status,
# seconds; 124 = hit its time limit). The Triton cache lives in OUT/triton-cache, so a rerun into the same folder
# skips the compiles.
#   --dry-run    CPU plumbing check (tiny shapes, Triton interpreter, no build); CI runs a part of it
#   PYTHON=...   interpreter (default python3); ALARM_GPU_CHECK_BUDGET=seconds (default 480)
#   ALARM_GIT_SHA=...   the sha to record (a copy sent to a GPU machine may carry a stale .git or none)
#   ALARM_GPU_CHECK_ONLY=environment,syncs   run only these stages (the others are recorded as not selected)
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-${OUT:-bench/results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${ALARM_GPU_CHECK_BUDGET:-480}
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
  export TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  QUICK=(--quick) CORRECT_OPS=(--ops weighted_layer_sum) BENCH=(--quick --budget 0.01 --variants triton)
  ATTN_OPS=weighted_layer_sum MEM_OPS=weighted_layer_sum GEMM_OPS=weighted_layer_sum
  # the tiny model, one timed step; Liger's kernels and the compile variant's CPU compile are GPU-check material
  E2E=(--config quick --steps 1 --warmup 1) E2E_A=() LLM_VARIANTS=none,fp8
  OVERHEAD=(--dry-run) FRONTENDS=(--dry-run)
else
  QUICK=() CORRECT_OPS=() BENCH=()
  ATTN_OPS=attention MEM_OPS=varlen_pool,weighted_layer_sum GEMM_OPS=multi_encoder_concat,varlen_conv1d
  E2E=() E2E_A=(--warmup 1) LLM_VARIANTS=none,liger,compile,fp8
  OVERHEAD=(--repeats 100 --calls 10) FRONTENDS=(--cases 8x20s,32x5s --budget 0.5)
fi

stage environment 30 $PY -c "
import json, sys; sys.path.insert(0, '.')
import torch
from bench.ops import environment
from alarm.fileio import atomic_write_json
env = environment(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
atomic_write_json('$OUT/environment.json', env); print(json.dumps(env))"

# liger-kernel and torchao for the llm_kernels stage: the GPU machine has no network, so their wheels travel in
# .whl/ (bash scripts/gpu_wheels.sh fills it); installed without dependencies into a folder of their own
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  DEPS="${TMPDIR:-/tmp}/alarm-gpu-check-deps"
  stage wheels 30 $PY -m pip install --quiet --no-deps --no-index --upgrade --target "$DEPS" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$DEPS"
else
  printf '{"stage": "wheels", "status": "no .whl/ folder (liger / fp8 rows need liger-kernel, torchao)", "seconds": 0}\n' \
    >>"$OUT/stages.jsonl"
fi

BUILD_PID=""
if [ "$DRY" = 0 ]; then
  echo "== build alarm_kernels._C in the background (limit 240 s; log in $OUT/build.log) =="
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-12}
  # in place: the .so lands in kernels/alarm_kernels, which PYTHONPATH above already points at
  timeout -k 5 240 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1 &
  BUILD_PID=$!
fi

stage correctness-triton 90 $PY -m bench.gpu_correctness ${QUICK[@]+"${QUICK[@]}"} ${CORRECT_OPS[@]+"${CORRECT_OPS[@]}"} --backends triton \
  --out "$OUT/correctness-triton.json"

if [ -n "$BUILD_PID" ]; then
  wait "$BUILD_PID"; rc=$?
  printf '{"stage": "build", "exit": %d}\n' "$rc" >>"$OUT/stages.jsonl"
  if [ "$rc" -eq 0 ]; then
    stage correctness-cuda 30 $PY -m bench.gpu_correctness --backends cuda --ops \
      varlen_pool,varlen_conv1d,weighted_layer_sum,multi_encoder_concat --out "$OUT/correctness-cuda.json"
  else
    echo "extension build failed or timed out (exit $rc); see $OUT/build.log"; tail -n 20 "$OUT/build.log"; status=1
  fi
fi

stage overhead 30 $PY -m bench.overhead "${OVERHEAD[@]}" --out "$OUT/overhead"
stage frontends 60 $PY -m bench.frontends "${FRONTENDS[@]}" --out "$OUT/frontends"
stage e2e_stage_B 90 $PY -m bench.e2e_step ${E2E[@]+"${E2E[@]}"} --stages B --name e2e_stage_B --out "$OUT"
stage e2e_stage_A 140 $PY -m bench.e2e_step ${E2E[@]+"${E2E[@]}"} ${E2E_A[@]+"${E2E_A[@]}"} --stages A \
  --name e2e_stage_A --out "$OUT"
if [ "$DRY" = 0 ]; then
  stage train_run 60 $PY bench/train_run.py --out "$OUT" --work "${TMPDIR:-/tmp}/alarm-train-run" --steps 60
else
  stage train_run 60 $PY bench/train_run.py --out "$OUT" --work "$OUT/train-run-work" --device cpu --steps 3 \
    --clips 8 --workers 0
fi
stage llm_kernels 90 $PY -m bench.e2e_step ${E2E[@]+"${E2E[@]}"} --stages B --token-rates 1 --no-profile \
  --llm-variants "$LLM_VARIANTS" --name e2e_llm_kernels --out "$OUT"
stage syncs 30 $PY -m bench.sync_count --out "$OUT/syncs.json"
stage memory_bound 60 $PY -m bench.ops ${BENCH[@]+"${BENCH[@]}"} --ops "$MEM_OPS" --out "$OUT/memory_bound.json"
ALARM_KERNELS_AUTOTUNE=1 stage attention 90 $PY -m bench.ops ${BENCH[@]+"${BENCH[@]}"} --ops "$ATTN_OPS" \
  --out "$OUT/attention.json"
stage gemm 60 $PY -m bench.ops ${BENCH[@]+"${BENCH[@]}"} --ops "$GEMM_OPS" --out "$OUT/gemm.json"
echo; echo "gpu_check: done in $(( $(date +%s) - T0 )) s, status $status; results in $OUT"
exit $status
