#!/usr/bin/env bash
# Installs what the browser tests need on a fresh machine: Debian's Chromium
# (only when /usr/bin/chromium is missing) and playwright-core from the npm
# lock file. playwright-core never downloads a browser of its own.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y chromium
fi

npm ci --no-audit --no-fund
