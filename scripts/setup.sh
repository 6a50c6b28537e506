#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv: the locked dependencies, then this project
# editable. Safe to rerun: it does nothing when the lock, pyproject.toml and setup.py are unchanged, and makes the
# venv anew when any of them changed.
#
#   ALARM_DEPS     locked (default): exactly the versions in $ALARM_LOCK, verified by their hashes.
#                  latest: the newest versions pyproject.toml allows (torch stays the lock's build), to see what
#                  the next releases break before refreshing the lock (scripts/lock.sh).
#   ALARM_LOCK     the lock to install (default requirements/cpu.lock: CPython 3.11, Linux x86_64, CPU torch;
#                  requirements/gpu.lock: the CUDA build of torch, any CPython 3.10+ on Linux)
#   ALARM_TORCH_INDEX  where torch comes from when the configured indexes lack the locked build (default
#                  https://download.pytorch.org/whl/cpu; the hash in the lock is checked either way)
#   ALARM_PYTHON   interpreter to create the venv with (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${ALARM_PYTHON:-python3}
DEPS=${ALARM_DEPS:-locked}
LOCK=${ALARM_LOCK:-requirements/cpu.lock}
TORCH_INDEX=${ALARM_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
VENV=.venv
STAMP=$VENV/.alarm-setup-stamp

case "$DEPS" in
  locked|latest) ;;
  *) echo "setup: ALARM_DEPS must be 'locked' or 'latest', not '$DEPS'" >&2; exit 2 ;;
esac
[ -f "$LOCK" ] || { echo "setup: ALARM_LOCK: no such file: $LOCK" >&2; exit 2; }

want=$(cat "$LOCK" pyproject.toml setup.py | sha256sum | cut -d' ' -f1)-$DEPS
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

# A venv made from another lock, mode or project version is made anew: what a lock leaves out must not linger.
if [ -d "$VENV" ]; then
  echo "setup: $VENV is out of date; making it anew"
  rm -rf "$VENV"
fi
echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
"$PYTHON" -m venv "$VENV"
# pip, quiet, minus the noise of unused local index locations; fails when pip fails
pip() {
  local log status=0
  log=$(mktemp)
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
  return $status
}

if [ "$DEPS" = locked ]; then
  echo "setup: installing $LOCK (hash-checked)"
  # torch first, on its own: the CPU build (2.13.0+cpu) is not on PyPI. It comes from the indexes pip is
  # configured with (here a local folder of wheels); failing that, from PyTorch's own CPU index, asked for torch
  # alone so that no other package waits on an index it does not need.
  torch_req=$VENV/torch-requirement.txt
  awk '/^torch==/{p=1} p{print} p&&!/\\$/{exit}' "$LOCK" >"$torch_req"
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check -q install --require-hashes --no-deps \
      -r "$torch_req" >/dev/null 2>&1; then
    echo "setup: $(head -n1 "$torch_req" | cut -d' ' -f1) is not on the configured indexes; trying ${TORCH_INDEX}"
    pip install --require-hashes --no-deps --extra-index-url "$TORCH_INDEX" -r "$torch_req"
  fi
  pip install --require-hashes --no-deps -r "$LOCK"
else
  torch_pin=$(grep -oE '^torch==[^ ;]+' "$LOCK")
  echo "setup: installing the newest versions pyproject.toml allows, with $torch_pin"
  echo "$torch_pin" > "$VENV/torch-pin.txt"
  pip install --upgrade setuptools wheel
  pip install --upgrade --upgrade-strategy eager -c "$VENV/torch-pin.txt" --no-build-isolation -e ".[test,liger]"
fi
echo "setup: installing the project (editable, no dependencies of its own)"
pip install --no-deps --no-build-isolation -e .
pip check || { echo "setup: the installed packages do not agree (pip check above)" >&2; exit 1; }
"$VENV/bin/python" -c "import torch, alarm_kernels, alarm" || { echo "setup: the install did not import" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'), $DEPS)"
