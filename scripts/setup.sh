#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv: torch, then this project with its
# test extra, editable. Safe to rerun: it does nothing when pyproject.toml and setup.py are unchanged.
#
#   ALARM_TORCH_SPEC   torch requirement to install first (default torch==2.13.0: the CPU build these
#                      machines keep on disk; on a GPU machine set e.g. ALARM_TORCH_SPEC='torch==2.11.0')
#   ALARM_PYTHON       interpreter to create the venv with (default python3)
#   ALARM_EXTRAS       extras to install (default test)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${ALARM_PYTHON:-python3}
TORCH_SPEC=${ALARM_TORCH_SPEC:-torch==2.13.0}
EXTRAS=${ALARM_EXTRAS:-test}
VENV=.venv
STAMP=$VENV/.alarm-setup-stamp

want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)-$TORCH_SPEC-$EXTRAS
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
# pip, quiet, minus the noise of this machine's unused local index locations; fails when pip fails
pip() {
  local log status=0
  log=$(mktemp)
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
  return $status
}
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC"
  pip install "$TORCH_SPEC"
fi
pip install setuptools wheel
echo "setup: installing the project (.[${EXTRAS}], editable)"
pip install --no-build-isolation -e ".[${EXTRAS}]"
"$VENV/bin/python" -c "import torch, alarm_kernels, alarm" || { echo "setup: the install did not import" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
