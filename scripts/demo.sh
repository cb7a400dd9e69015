#!/usr/bin/env bash
# Runs the gateway on the self-contained demo configuration, with its demo origins.
# No Postgres or Redis needed. Ctrl-C stops it.
# An optimised build (--release), since people point load generators (oha, wrk) at what this
# starts; the first run compiles it (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages
exec cargo run --release -p vantage-proxy -- --config conf/demo.yaml --demo-origins "$@"
