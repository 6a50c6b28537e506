#!/usr/bin/env bash
# Fill .whl/ with the wheels the GPU check's llm_kernels stage needs (the GPU machine has no network access):
#
#   bash scripts/gpu_wheels.sh        # then send .whl/ along with the checkout (it is git-ignored)
#
# liger-kernel (the version of requirements/cpu.lock) and torchao (ALARM_TORCHAO_SPEC, default torchao==0.18.0),
# for CPython 3.12 on Linux x86_64 (the GPU image), without dependencies: bench/gpu_check.sh installs them with
# --no-deps into a folder of their own, so the image's torch is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
liger=$(grep -oE '^liger-kernel==[^ ;]+' requirements/cpu.lock)
torchao=${ALARM_TORCHAO_SPEC:-torchao==0.18.0}
mkdir -p .whl
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "$liger" "$torchao" \
  2>&1 | grep -v "^WARNING: Location" || true
ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_wheels: nothing was downloaded" >&2; exit 1; }
ls -l .whl/
