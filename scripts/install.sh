#!/usr/bin/env bash
# Create .venv (once) and install SigerLM's core and every first-party plugin into it,
# editable, with their test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The CPU build of torch first: a looser requirement would make pip fetch a CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
# sigerlm-text[test] builds llama-cpp-python from source once (pip caches the wheel): use every core
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -e "./core[test]" \
  -e "./testkit" \
  -e "./plugins/kernels[test]" \
  -e "./plugins/text[test]" \
  -e "./plugins/lora[test]" \
  -e "./plugins/moe[test]" \
  -e "./plugins/lampung[test]" \
  -e "./plugins/serving[test]" \
  -e "./plugins/timeseries[test]" \
  -e "./plugins/eval[test]" \
  -e "./plugins/onnx[test]"
