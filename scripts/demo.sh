#!/usr/bin/env bash
# The main job on an embedded default: set up (idempotent), start or reuse a local Label Studio with a
# sample digits project (10% of labels flipped on purpose), audit it, and print where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
RELABEL_SKIP_CHROMIUM=${RELABEL_SKIP_CHROMIUM:-1} bash scripts/setup.sh
.venv/bin/python scripts/demo.py "$@"
