#!/usr/bin/env bash
# Installs Debian's chromium for the serving plugin's browser test (tests/test_browser.py),
# unless it is already there. Playwright drives it through executable_path=/usr/bin/chromium,
# so no browser is downloaded by Playwright. Needs root (apt-get).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium: $(/usr/bin/chromium --version)"
