#!/usr/bin/env bash
# Builds the workbench's browser bundle into webui/dist, which the
# verdict-workbench crate embeds (so running Verdict needs no Node).
#
# Idempotent and quick when nothing changed: `npm ci` runs only when the
# lock file changed since the last install, the build only when a source
# changed since the last build. Needs Node 20+ and npm (Debian's nodejs and
# npm packages, or the machine's own).
set -euo pipefail
cd "$(dirname "$0")/../webui"

if ! command -v npm >/dev/null 2>&1; then
  echo "build-webui: npm is needed to build the workbench UI (apt-get install nodejs npm)" >&2
  exit 1
fi

lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f node_modules/.verdict-lock ] || [ "$(cat node_modules/.verdict-lock)" != "$lock_sum" ]; then
  echo "build-webui: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.verdict-lock
fi

src_sum="$(find src index.html package.json package-lock.json tsconfig.json vite.config.ts -type f -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ -f dist/index.html ] && [ -f .build-stamp ] && [ "$(cat .build-stamp)" = "$src_sum" ]; then
  exit 0
fi
echo "build-webui: building webui/dist" >&2
npm run --silent build
echo "$src_sum" > .build-stamp
