#!/usr/bin/env bash
# The test command: set up (idempotent), lint, then run the whole test suite.
# The suite starts one real Label Studio server on 127.0.0.1 (data in a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check relabel connectors tests scripts
.venv/bin/python -m pytest "$@"
