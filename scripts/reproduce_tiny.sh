#!/usr/bin/env bash
# docs/reproduce.md's command sequence, end to end, at tiny scale on a CPU:
# import-corpora -> stage A (4 encoders + AL-Whisper-Instruct-R) -> adapter cache -> stage B (ALARM-CA, ALARM-P)
# -> the four benchmarks with --protocol paper (ALARM-CA and ALARM-E) -> the comparison with the paper.
#
#   bash scripts/reproduce_tiny.sh WORK [--reduced]
#
# WORK (created) plays the repository root of the doc: synthetic stand-ins of the downloads are written there
# (scripts/reproduce_tiny_inputs.py), alarm/train/recipes links to this checkout's recipes, and every command
# below is the doc's command as printed there, followed by tiny overrides ($TINY_*: random tiny models of all
# four encoders and of the LLM with the tiny test tokenizer, 2 optimizer steps, CPU, short generations).
# tests/alarm/test_reproduce_doc.py checks that every command of the doc appears here verbatim.
# --reduced (CI) leaves out ALARM-P, MMAU test and ALARM-E on MMAU.
# TINY_NPROC=2: run the doc's torchrun lines as 2 gloo processes (default 1: no launcher, same command).
# Generated answers of random models are junk: the point is that the commands run and their files connect.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:?usage: bash scripts/reproduce_tiny.sh WORK [--reduced]}"
REDUCED="${2:-}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONSAFEPATH=1  # WORK/alarm (the recipes link) must not shadow the alarm package
mkdir -p "$WORK/alarm/train"
ln -sfn "$REPO/alarm/train/recipes" "$WORK/alarm/train/recipes"
cd "$WORK"

alarm() { "$PY" -m alarm "$@"; }
torchrun() {  # the doc's "torchrun --nproc_per_node N -m alarm ...", on TINY_NPROC CPU processes
    local n="${TINY_NPROC:-1}" args=()
    while (($#)); do
        case "$1" in
            --nproc_per_node) args+=("$1" "$n"); shift 2 ;;
            *) args+=("$1"); shift ;;
        esac
    done
    if [ "$n" = 1 ]; then "$PY" "${args[@]:2}"; else "$PY" -m torch.distributed.run "${args[@]}"; fi
}
step() { echo; echo "=== $*"; }

step "synthetic downloads (corpus shards, audio trees in the official layouts, benchmark metadata and audio)"
"$PY" "$REPO/scripts/reproduce_tiny_inputs.py" . > /dev/null

TINY_TRAIN="model.preset=tiny run.device=cpu run.max_steps=2 run.eval_every=2 run.sample_every=0 run.save_every=0
            run.plot=false run.progress=lines data.num_workers=0 batch.accumulation=1"
TINY_B="$TINY_TRAIN model.n_encoders=4"
TINY_CACHE="model.preset=tiny model.n_encoders=4 data.num_workers=0 --device cpu"
TINY_EVAL="--device cpu --max-thinking-tokens 4 --max-new-tokens 6 --no-progress"

step "3. the training manifests"
alarm data sources > /dev/null
alarm data import-corpora --corpus data/ALARM-Corpora --out data/alarm --audio-roots data/audio \
    --audio-map data/audio/maps/alarm-corpora.tsv --allow-missing --no-progress  # (no progress bar in logs)
DATA="data.train_manifest=data/alarm/train.jsonl data.eval_manifest=data/alarm/validation.jsonl"

step "4. stage A"
torchrun --nproc_per_node 4 -m alarm train --config alarm/train/recipes/al_whisper_r.yaml $DATA $TINY_TRAIN
torchrun --nproc_per_node 2 -m alarm train --config alarm/train/recipes/al_w2vbert2_r.yaml $DATA $TINY_TRAIN
torchrun --nproc_per_node 2 -m alarm train --config alarm/train/recipes/al_muq_r.yaml $DATA $TINY_TRAIN
torchrun --nproc_per_node 2 -m alarm train --config alarm/train/recipes/al_sslam_r.yaml $DATA $TINY_TRAIN
torchrun --nproc_per_node 2 -m alarm train --config alarm/train/recipes/al_whisper_instruct_r.yaml $DATA $TINY_TRAIN

step "5. the adapter cache and stage B"
alarm cache --config alarm/train/recipes/alarm_ca.yaml $DATA --out cache/alarm_ca --level adapter --dtype bfloat16 \
    $TINY_CACHE
torchrun --nproc_per_node 4 -m alarm train --config alarm/train/recipes/alarm_ca.yaml $DATA data.cache=cache/alarm_ca \
    $TINY_B
if [ "$REDUCED" != --reduced ]; then
    torchrun --nproc_per_node 4 -m alarm train --config alarm/train/recipes/alarm_p.yaml $DATA $TINY_B
fi

step "6. the benchmarks (ALARM-CA, then ALARM-E where the paper reports it)"
B=data/bench
alarm eval run --benchmark mmau --model runs/alarm_ca/final --data $B/mmau/mmau-test-mini.json --audio-root $B/mmau \
    --output out/alarm_ca/mmau-test-mini.json --protocol paper --device cuda --max-thinking-tokens 8192 \
    --max-new-tokens 16384 $TINY_EVAL
if [ "$REDUCED" != --reduced ]; then
    alarm eval run --benchmark mmau --model runs/alarm_ca/final --data $B/mmau/mmau-test.json --audio-root $B/mmau \
        --output out/alarm_ca/mmau-test.json --protocol paper --device cuda --max-thinking-tokens 8192 \
        --max-new-tokens 16384 $TINY_EVAL
fi
alarm eval run --benchmark mmar --model runs/alarm_ca/final --data $B/mmar/MMAR-meta.json --audio-root $B/mmar \
    --output out/alarm_ca/mmar.json --protocol paper --device cuda --max-thinking-tokens 8192 \
    --max-new-tokens 16384 $TINY_EVAL
alarm eval run --benchmark mmsu --model runs/alarm_ca/final --data $B/mmsu/question/mmsu.jsonl --audio-root $B/mmsu \
    --output out/alarm_ca/mmsu.jsonl --protocol paper --device cuda --max-thinking-tokens 8192 \
    --max-new-tokens 16384 $TINY_EVAL
alarm eval run --benchmark airbench --model runs/alarm_ca/final --data $B/airbench/Foundation/Foundation_meta.json \
    --audio-root $B/airbench/Foundation --output out/alarm_ca/airbench.jsonl --protocol paper --device cuda \
    --max-thinking-tokens 8192 --max-new-tokens 16384 $TINY_EVAL
alarm eval run --benchmark mmsu --model runs/alarm_ca/final --ensemble runs/al_whisper_instruct_r/final \
    --data $B/mmsu/question/mmsu.jsonl --audio-root $B/mmsu --output out/alarm_e/mmsu.jsonl --protocol paper \
    --device cuda --max-thinking-tokens 8192 --max-new-tokens 16384 $TINY_EVAL
if [ "$REDUCED" != --reduced ]; then
    alarm eval run --benchmark mmau --model runs/alarm_ca/final --ensemble runs/al_whisper_instruct_r/final \
        --data $B/mmau/mmau-test-mini.json --audio-root $B/mmau --output out/alarm_e/mmau-test-mini.json \
        --protocol paper --device cuda --max-thinking-tokens 8192 --max-new-tokens 16384 $TINY_EVAL
    alarm eval run --benchmark mmau --model runs/alarm_ca/final --ensemble runs/al_whisper_instruct_r/final \
        --data $B/mmau/mmau-test.json --audio-root $B/mmau --output out/alarm_e/mmau-test.json \
        --protocol paper --device cuda --max-thinking-tokens 8192 --max-new-tokens 16384 $TINY_EVAL
fi
alarm eval score --benchmark mmar --input out/alarm_ca/mmar.json --output out/alarm_ca/mmar.rescored.json \
    --protocol paper

step "7. the comparison with the paper"
alarm eval compare out
