#!/usr/bin/env bash
# Install r1kit and its tools into ./.venv (or the venv in $R1KIT_VENV).
#
#   bash scripts/install.sh          # CPU machine: torch==2.13.0 CPU build, never the multi-GB CUDA one
#   R1KIT_DEVICE=cuda bash scripts/install.sh   # GPU machine: the ordinary CUDA torch + the vllm extra
#
# What it does: apt-installs bubblewrap (the code sandbox) when missing and apt is usable,
# creates the venv, pip-installs torch (pinned CPU build unless R1KIT_DEVICE=cuda), then
# `pip install -e .[dev]` (or .[dev,vllm] on CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${R1KIT_VENV:-.venv}
PY=${PYTHON:-python3}
DEVICE=${R1KIT_DEVICE:-cpu}

if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing bubblewrap (code sandbox) with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "warning: bubblewrap (bwrap) is missing; install it (apt-get install bubblewrap) for the code sandbox" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "$DEVICE" = cuda ]; then
  "$VENV/bin/python" -m pip install -q -e ".[dev,vllm]"
else
  # The pin selects the CPU wheel; without it pip pulls a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[dev]" "torch==2.13.0"
fi
echo "installed: $("$VENV/bin/python" -c 'import torch, transformers, trl; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__)')"
echo "activate with: source $VENV/bin/activate"
