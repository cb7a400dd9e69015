#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Works on a fresh Debian machine with the Rust toolchain (installs build packages with apt).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
# dnsmasq (the executable only, no service) answers the DNS discovery tests; Debian's
# chromium, driven by playwright-core from npm (admin/console/tests, no browser download),
# runs the console's browser tests.
ensure_packages redis-server:redis-server dnsmasq:dnsmasq-base chromium:chromium node:nodejs npm:npm
(cd admin/console/tests && npm ci --no-audit --no-fund --silent)
# The admin tests use the shared Postgres and Redis on loopback.
ensure_postgres
ensure_redis

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
# The admin's OpenAPI document passes a real OpenAPI linter (Redocly CLI, needs node and npm).
bash scripts/openapi-lint.sh
# RFC 9111 conformance of the response cache (http-cache-tests 0.4.5, needs node and npm).
bash scripts/cache-conformance.sh
# Deploy artifacts: systemd units verify, compose validates, Prometheus config and rules check.
bash scripts/check-deploy.sh
