#!/usr/bin/env bash
# The plugin's tests in a fresh virtual environment holding only core, text, lora and moe
# (and sigerlm-kernels, which text depends on)
# (issue 16: "the plugin's tests pass in a fresh environment holding only core, text, lora and
# moe"), plus sigerlm-testkit, the test doubles every test extra names. sigerlm-serving is not
# installed, so its test skips.
#
#   bash plugins/moe/scripts/fresh-env-check.sh [VENV (default /tmp/moe-env)] [pytest args...]
#
# torch: the CPU build 2.13.0 (pip finds the machine's wheel or the package index's; set
# TORCH_WHEEL=/path/to/torch-2.13.0+cpu-...whl to install a file). Run from anywhere.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="${1:-/tmp/moe-env}"
shift || true
PYTHON="${PYTHON:-python3.11}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
"${PIP[@]}" "${TORCH_WHEEL:-torch==2.13.0}"
"${PIP[@]}" -e "$ROOT/core" -e "$ROOT/testkit" -e "$ROOT/plugins/kernels" -e "$ROOT/plugins/text" -e "$ROOT/plugins/lora" -e "$ROOT/plugins/moe[test]"
# exactly these SigerLM distributions, nothing else
"$VENV/bin/python" - <<'PY'
from importlib import metadata
names = sorted({d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].startswith("sigerlm")})
assert names == ["sigerlm", "sigerlm-kernels", "sigerlm-lora", "sigerlm-moe", "sigerlm-testkit", "sigerlm-text"], names
print("SigerLM distributions:", ", ".join(names))
PY
cd "$VENV"  # not the workspace: its pyproject and .venv play no part
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -W error -o "markers=slow: slow tests" --rootdir "$ROOT/plugins/moe" "$ROOT/plugins/moe/tests" "$@"
