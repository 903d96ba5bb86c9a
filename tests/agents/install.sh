#!/usr/bin/env bash
# Installs the coding agents that tests/agents.rs drives, Claude Code and the
# Codex CLI, at the versions pinned in package-lock.json, into node_modules.
# Each npm package carries its native binary as an optional dependency, so
# nothing is downloaded from anywhere but the registry. Run again after
# changing package.json; an install already up to date is kept.
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.tollgate-lock

# Both agents write into their home even for --version: give them a
# throwaway one.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
agents_run() {
    HOME="$scratch" CODEX_HOME="$scratch/.codex" CLAUDE_CONFIG_DIR="$scratch/.claude" \
        node_modules/.bin/claude --version >/dev/null 2>&1 &&
        HOME="$scratch" CODEX_HOME="$scratch/.codex" \
            node_modules/.bin/codex --version >/dev/null 2>&1
}

if cmp -s package-lock.json "$stamp" && agents_run; then
    exit 0
fi
npm ci --no-audit --no-fund
# Claude Code's postinstall copies its native binary over a stub; should npm
# ever leave install scripts out, run it here.
if ! agents_run; then
    (cd node_modules/@anthropic-ai/claude-code && node install.cjs)
fi
agents_run || {
    echo "tests/agents/install.sh: claude or codex does not start" >&2
    exit 1
}
cp package-lock.json "$stamp"
