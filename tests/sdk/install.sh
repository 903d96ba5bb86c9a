#!/usr/bin/env bash
# Makes tests/sdk/.venv with the official anthropic and openai Python SDKs at
# the versions pinned in requirements.txt, for tests/dialects.rs. Run again
# after changing requirements.txt; a venv already up to date is kept.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
stamp=.venv/.requirements
if [ -x .venv/bin/python ] && cmp -s requirements.txt "$stamp" &&
    .venv/bin/python -c 'import anthropic, openai' 2>/dev/null; then
    exit 0
fi
rm -rf .venv
"$PY" -m venv .venv
.venv/bin/python -m pip install --disable-pip-version-check --quiet -r requirements.txt
cp requirements.txt "$stamp"
