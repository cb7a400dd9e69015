#!/usr/bin/env bash
# Lints the admin service's OpenAPI document (`vantage-admin openapi`, generated from the
# types; no database needed) with Redocly CLI, a real OpenAPI 3.1 validator and linter, using
# the rules below. Redocly CLI is installed from npm, pinned, into
# target/openapi-lint on first use. Fails on any lint error.
#
# Rules: Redocly's `recommended` set, with two matters of taste settled:
# - `no-illogical-composition-keywords` is off: to give a referenced schema a `default`,
#   utoipa wraps the `$ref` in a one-element `oneOf`, which means the same as the `$ref`
#   (the rule only warns about that style).
# - `operation-4xx-response` is not asked of `GET /healthz` (in an ignore file, so every
#   other operation is still held to it): it needs no token and reads no input, so it has
#   no client error to document.
#
# Usage: scripts/openapi-lint.sh
# Env:   VANTAGE_ADMIN_BIN (default: target/debug/vantage-admin, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages node:nodejs npm:npm

REDOCLY_VERSION=2.77.0
LINT_HOME="$PWD/target/openapi-lint"
CLI="$LINT_HOME/node_modules/@redocly/cli"
if [ ! -f "$CLI/package.json" ] || ! grep -q "\"version\": \"$REDOCLY_VERSION\"" "$CLI/package.json"; then
  mkdir -p "$LINT_HOME"
  echo "installing @redocly/cli@$REDOCLY_VERSION into $LINT_HOME" >&2
  (cd "$LINT_HOME" && npm install --silent --no-audit --no-fund --prefix . \
    "@redocly/cli@$REDOCLY_VERSION" >/dev/null)
fi

# Built with the workspace's features, so that after `cargo test --workspace` this is a no-op.
BIN="${VANTAGE_ADMIN_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build -q --workspace --bin vantage-admin
  BIN=target/debug/vantage-admin
fi
"$BIN" openapi >"$LINT_HOME/openapi.json"
cat >"$LINT_HOME/redocly.yaml" <<'YAML'
extends:
  - recommended
rules:
  no-illogical-composition-keywords: off
YAML
cat >"$LINT_HOME/.redocly.lint-ignore.yaml" <<'YAML'
openapi.json:
  operation-4xx-response:
    - '#/paths/~1healthz/get/responses'
YAML

# No telemetry or update check: the lint runs offline apart from the install above.
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  "$LINT_HOME/node_modules/.bin/redocly" lint \
  --config "$LINT_HOME/redocly.yaml" --format stylish "$LINT_HOME/openapi.json"
