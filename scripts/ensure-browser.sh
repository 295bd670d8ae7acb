#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian's chromium and
# chromium-driver) for the workbench's browser test. Idempotent: quick when
# both are there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-browser: installing chromium and chromium-driver (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
