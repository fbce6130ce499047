#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when either is missing: the dashboard's suite
# (crates/tally/tests/dashboard, feature `browser`) drives a real headless Chromium through
# chromedriver. Idempotent; needs root (apt-get).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "chromium.sh: installing chromium and chromium-driver" >&2
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null
