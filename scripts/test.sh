#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run every test suite: core, each plugin and the
# cross-plugin tests, slow ones included (the browser test needs Debian's chromium, installed
# here with apt-get: run as root). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Debian's chromium for the web page's browser test (sigerlm-serving); apt-get, once
bash plugins/serving/scripts/install-browser.sh
# lint every distribution (rules in pyproject.toml)
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
