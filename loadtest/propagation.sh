#!/usr/bin/env bash
# Control-plane benchmark (issue 5): on this machine, with real Postgres, Redis, vantage-admin
# and a fleet of three vantage-proxy processes in `source: postgres` mode:
#   1. propagation: the time from the admin's 2xx to every proxy serving the change, over
#      CHANGES (default 200) route creations 300 ms apart (more than the proxies'
#      min_reload_interval_ms, which back-to-back changes would measure) while traffic flows
#      (oha at a fixed rate against every proxy), as p50/p99/max;
#   2. reload cost with 1,000 tenants / 10,000 routes: time to fetch, validate, compile and
#      swap the snapshot (the proxy's own vantage_config_reload_seconds), RSS before and
#      after, and failed requests during the reload (must be 0).
# Output: Markdown on stdout and in loadtest/results/propagation-latest.md.
# Needs Postgres on 127.0.0.1:5432 (trust auth; scripts/test.sh starts it) — a database of
# its own is created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages redis-server:redis-server psql:postgresql-client python3:python3 jq:jq

CHANGES=${CHANGES:-200}
RATE=${RATE:-200}
SECRET=propagation-bench-secret-0123456789
ensure_oha
cargo build --release -q -p vantage-proxy -p vantage-admin
BIN=target/release

work=$(mktemp -d /tmp/vantage-prop.XXXXXX)
DB="vantage_bench_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
start_control_plane bench
TENANT=$(api POST /api/v1/tenants '{"name":"Bench","subdomain":"bench"}' | jq -r .id)
ORIGIN_ID=$(api POST /api/v1/origins "{\"tenant_id\":\"$TENANT\",\"targets\":[{\"url\":\"http://127.0.0.1:$ORIGIN\"}],\"circuit_breaker\":{\"enabled\":false}}" | jq -r .id)
api POST /api/v1/routes "{\"tenant_id\":\"$TENANT\",\"path_pattern\":\"/steady\",\"origin_id\":\"$ORIGIN_ID\"}" >/dev/null

PROXY_PORTS=(); OPS_PORTS=(); PROXY_PIDS=()
for n in 1 2 3; do
  port=$(free_port); ops=$(free_port)
  fleet_proxy_yaml "$n" "$port" "$ops" bench.local >"$work/proxy$n.yaml"
  "$BIN/vantage-proxy" --config "$work/proxy$n.yaml" >"$work/proxy$n.log" 2>&1 & pids+=($!); PROXY_PIDS+=($!)
  PROXY_PORTS+=("$port"); OPS_PORTS+=("$ops")
done
for p in "${PROXY_PORTS[@]}"; do wait_port "$p"; done
for o in "${OPS_PORTS[@]}"; do
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$o/readyz" | grep -q '"redis":"connected"' && break; sleep 0.1; done
done

# Traffic flows during the changes.
for p in "${PROXY_PORTS[@]}"; do
  "$OHA" -z 3600s -q "$RATE" -c 8 --no-tui -H "Host: bench.bench.local" "http://127.0.0.1:$p/steady" >"$work/oha-$p.txt" 2>&1 & pids+=($!)
done
PROP=$(python3 loadtest/propagation.py "$ADMIN" "$TOKEN" "$TENANT" "$ORIGIN_ID" "$CHANGES" "$(IFS=,; echo "${PROXY_PORTS[*]}")" bench.bench.local 300)
echo "propagation: $PROP" >&2

# Reload cost: 1,000 tenants / 10,000 routes added in one transaction of plain SQL (the
# admin's API validates each write against the whole configuration; this is bulk loading).
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
RSS_BEFORE=$(rss "${PROXY_PIDS[0]}")
reload_sum() { curl -s "http://127.0.0.1:${OPS_PORTS[0]}/metrics" | awk '/^vantage_config_reload_seconds_sum/ {print $2}'; }
reload_count() { curl -s "http://127.0.0.1:${OPS_PORTS[0]}/metrics" | awk '/^vantage_config_reload_seconds_count/ {print $2}'; }
S0=$(reload_sum); C0=$(reload_count); V0=$(curl -s "http://127.0.0.1:${OPS_PORTS[0]}/config/version" | jq .version)
psql -h 127.0.0.1 -U postgres -d "$DB" -q >/dev/null <<SQL
BEGIN;
INSERT INTO tenants (name, subdomain) SELECT 'T' || i, 'bulk' || i FROM generate_series(0, 999) i;
INSERT INTO origins (tenant_id, targets, timeouts, circuit_breaker, tls)
  SELECT id, '[{"url": "http://127.0.0.1:$ORIGIN", "weight": 1}]', '{}', '{"enabled": false}', '{}' FROM tenants WHERE subdomain LIKE 'bulk%';
INSERT INTO routes (tenant_id, origin_id, path_pattern, methods)
  SELECT o.tenant_id, o.id, '/svc' || s || '/items/:id', '{GET}' FROM origins o, generate_series(0, 4) s
   WHERE o.tenant_id IN (SELECT id FROM tenants WHERE subdomain LIKE 'bulk%');
INSERT INTO routes (tenant_id, origin_id, path_pattern)
  SELECT o.tenant_id, o.id, '/svc' || s || '/*' FROM origins o, generate_series(0, 4) s
   WHERE o.tenant_id IN (SELECT id FROM tenants WHERE subdomain LIKE 'bulk%');
COMMIT;
SQL
V1=$(psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "SELECT vantage_config_version()")
for _ in $(seq 1 600); do
  v=$(curl -s "http://127.0.0.1:${OPS_PORTS[0]}/config/version" | jq .version)
  [ "$v" -ge "$V1" ] && break; sleep 0.05
done
sleep 1
S1=$(reload_sum); C1=$(reload_count)
RSS_AFTER=$(rss "${PROXY_PIDS[0]}")
BULK_OK=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: bulk500.bench.local" "http://127.0.0.1:${PROXY_PORTS[0]}/svc3/items/7")
RELOAD_MS=$(awk -v s0="$S0" -v s1="$S1" -v c0="$C0" -v c1="$C1" 'BEGIN { if (c1 > c0) printf "%.1f", (s1 - s0) / (c1 - c0) * 1000; else print "-" }')
RELOADS=$(awk -v c0="$C0" -v c1="$C1" 'BEGIN { print c1 - c0 }')

# Stop the traffic and count failed requests.
for p in "${pids[@]: -3}"; do kill -INT "$p" 2>/dev/null || true; done
sleep 1
FAILED=0; TOTAL=0
for p in "${PROXY_PORTS[@]}"; do
  f="$work/oha-$p.txt"
  ok=$(awk '/\[200\]/ {print $2}' "$f" | head -1); ok=${ok:-0}
  all=$(awk '/^  \[[0-9]+\]/ {s += $2} END {print s+0}' "$f")
  errs=$(awk '/Error distribution/ {e=1; next} e && /\[/ {s += $2} END {print s+0}' "$f")
  TOTAL=$((TOTAL + all + errs)); FAILED=$((FAILED + all - ok + errs))
done

report=loadtest/results/propagation-latest.md
mkdir -p loadtest/results
{
  echo "# Control-plane benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) vCPU, $(uname -sr); PostgreSQL $(psql -V | awk '{print $3}'), $(redis-server --version | awk '{print $3}' | tr -d 'v='),"
  echo "three vantage-proxy processes (one worker thread each), vantage-admin, all on loopback;"
  echo "oha at $RATE req/s against every proxy throughout."
  echo
  echo "| measure | value |"
  echo "| --- | ---: |"
  echo "| changes (route creations through the admin API) | $(echo "$PROP" | jq .changes) (measured $(echo "$PROP" | jq .measured), failed $(echo "$PROP" | jq .failures)) |"
  echo "| propagation p50 (admin 2xx → all 3 proxies serve it) | $(echo "$PROP" | jq .p50_ms) ms |"
  echo "| propagation p99 | $(echo "$PROP" | jq .p99_ms) ms |"
  echo "| propagation max | $(echo "$PROP" | jq .max_ms) ms |"
  echo "| reload with 1,000 tenants / 10,000 routes (fetch + validate + compile + swap) | $RELOAD_MS ms (mean of $RELOADS reloads) |"
  echo "| proxy RSS before → after the bulk load | $((RSS_BEFORE / 1024)) MiB → $((RSS_AFTER / 1024)) MiB |"
  echo "| a bulk tenant's route served after the reload | HTTP $BULK_OK |"
  echo "| requests during the whole run: failed / total | $FAILED / $TOTAL |"
} | tee "$report"
