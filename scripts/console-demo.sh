#!/usr/bin/env bash
# The control plane on the demo data, to open the operator console:
#   - Postgres and Redis on loopback (installed and started when missing, as for the tests);
#   - the demo tenants of conf/demo.yaml seeded into the database `vantage_demo`;
#   - vantage-admin (REST API and console) on http://127.0.0.1:8081 (conf/admin.yaml);
#   - a vantage-proxy reading Postgres on 127.0.0.1:8080 (conf/proxy-postgres.yaml);
#   - the demo origins, and one request a second of demo traffic so the charts move
#     (logs in target/console-demo/).
# Prints the console's address and a new superadmin token. Ctrl-C stops everything.
# Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/vantage_demo).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages
ensure_postgres
ensure_redis

cargo build -p vantage-admin -p vantage-proxy
bin=target/debug
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/vantage_demo}"
# The proxy reads the same database.
export VANTAGE_DATABASE_URL="$DATABASE_URL"
admin() { "$bin/vantage-admin" --config conf/admin.yaml "$@"; }
admin migrate
admin seed
token=$(admin create-token --role superadmin --name "console-demo-$(date +%s)")

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

logs=target/console-demo
mkdir -p "$logs"
origins=()
for addr in $(grep -o '127\.0\.0\.1:91[0-9][0-9]' conf/demo.yaml | sort -u); do
  origins+=(--listen "$addr")
done
"$bin/vantage-proxy" demo-origin "${origins[@]}" --name demo >"$logs/origins.log" 2>&1 &
pids+=($!)
admin serve >"$logs/admin.log" 2>&1 &
pids+=($!)
"$bin/vantage-proxy" --config conf/proxy-postgres.yaml >"$logs/proxy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:8081/healthz 2>/dev/null &&
    curl -fsS -o /dev/null http://127.0.0.1:9090/readyz 2>/dev/null && break
  sleep 0.2
done

cat <<EOF

  Console:  http://127.0.0.1:8081/console/
  Token:    $token   (superadmin; sign in with it)
  Proxy:    curl -H 'Host: acme.vantage.localhost' -H 'X-API-Key: vk_live_demo_acme_key_do_not_use_in_prod' http://127.0.0.1:8080/api/users/1

  Logs:     $logs/{admin,proxy,origins}.log
  Demo traffic (one request a second to acme) runs until Ctrl-C.

EOF

while true; do
  curl -s -o /dev/null -H 'Host: acme.vantage.localhost' \
    -H 'X-API-Key: vk_live_demo_acme_key_do_not_use_in_prod' \
    http://127.0.0.1:8080/api/users/1 || true
  sleep 1
done
