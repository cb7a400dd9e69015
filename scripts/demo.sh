#!/usr/bin/env bash
# Runs the gateway on the self-contained demo configuration, with its demo origins.
# No Postgres or Redis needed. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages
exec cargo run -p vantage-proxy -- --config conf/demo.yaml --demo-origins "$@"
