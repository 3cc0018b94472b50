#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run every test suite: core, each plugin and the
# cross-plugin tests, slow ones included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
