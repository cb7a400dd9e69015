#!/usr/bin/env bash
# Scale run (issue 14): a fleet of three vantage-proxy processes in `source: postgres` mode
# serving TENANTS tenants / TENANTS×ROUTES routes / TENANTS×KEYS API keys (default 10,000 /
# 100,000 / 1,000,000; made by loadtest/bigconfig.py), with real Postgres, Redis and
# vantage-admin on loopback. Measures:
#   1. cold start from Postgres (process start → the version served), per proxy;
#   2. RSS: empty, with the tenants and routes, with the keys too (→ per route, per key);
#   3. propagation of one change (a route created through the admin API for one tenant)
#      to all three proxies, p50/p99/max over CHANGES changes 300 ms apart (more than the
#      proxies' min_reload_interval_ms of 250, which back-to-back changes would measure),
#      the proxies' own reload time for those changes, and the admin's answer time;
#   4. a full read (the change log made incomplete): its reload time;
#   5. /metrics of one proxy after every route of the first METRIC_TENANTS tenants was
#      called once (bytes and series).
# Output: Markdown on stdout and in loadtest/results/scale-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages redis-server:redis-server psql:postgresql-client python3:python3 jq:jq curl:curl

TENANTS=${TENANTS:-10000}
ROUTES=${ROUTES:-10}
KEYS=${KEYS:-100}
CHANGES=${CHANGES:-100}
METRIC_TENANTS=${METRIC_TENANTS:-$TENANTS}
SECRET=scale-bench-secret-0123456789
# BIN=/dir/with/both/binaries skips the build (e.g. to measure a build kept aside).
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p vantage-proxy -p vantage-admin
  BIN=target/release
fi

start_work scale
DB="vantage_scale_$$"
psql_db() { psql -h 127.0.0.1 -U postgres -d "$DB" -v ON_ERROR_STOP=1 "$@"; }
trap '_stop_work; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
ms_now() { date +%s%3N; }
start_control_plane scale

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
version_of() { curl -s "http://127.0.0.1:$1/config/version" | jq -r '.version // 0' 2>/dev/null || echo 0; }
db_version() { psql_db -tAc "SELECT vantage_config_version()"; }

# start_proxy N: a proxy following the database; sets PORT_N, OPS_N, PID_N and COLD_N (ms
# from process start to serving the database's version).
start_proxy() {
  local n=$1 port ops
  port=$(free_port); ops=$(free_port)
  fleet_proxy_yaml "$n" "$port" "$ops" scale.local "timeout_ms: 5000, " >"$work/proxy$n.yaml"
  local want t0
  want=$(db_version)
  t0=$(ms_now)
  "$BIN/vantage-proxy" --config "$work/proxy$n.yaml" >"$work/proxy$n.log" 2>&1 & pids+=($!)
  eval "PID_$n=$!; PORT_$n=$port; OPS_$n=$ops"
  wait_port "$ops" 1200
  until [ "$(version_of "$ops")" -ge "$want" ]; do sleep 0.02; done
  eval "COLD_$n=$(( $(ms_now) - t0 ))"
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$ops/readyz" | grep -q '"redis":"connected"' && break; sleep 0.1; done
}
stop_proxy() { local pid; eval "pid=\$PID_$1"; kill "$pid"; wait "$pid" 2>/dev/null || true; }

# 1. Empty, then tenants and routes, then keys: RSS after each (a proxy started on each).
start_proxy 0
RSS_EMPTY=$(rss_kib "$PID_0"); stop_proxy 0
t0=$(ms_now)
python3 loadtest/bigconfig.py sql "$TENANTS" "$ROUTES" 0 "$ORIGIN" | psql_db -q >/dev/null
LOAD_ROUTES_MS=$(( $(ms_now) - t0 ))
start_proxy 0
RSS_ROUTES=$(rss_kib "$PID_0"); COLD_ROUTES=$COLD_0; stop_proxy 0
t0=$(ms_now)
psql_db -q >/dev/null <<SQL
INSERT INTO api_keys (tenant_id, name, key_hash, prefix)
  SELECT t.id, 'k' || k, encode(sha256(convert_to(t.subdomain || '-key-' || k, 'UTF8')), 'hex'), ''
    FROM tenants t, generate_series(0, $((KEYS - 1))) k WHERE t.subdomain LIKE 'scale%';
SQL
LOAD_KEYS_MS=$(( $(ms_now) - t0 ))
N_TENANTS=$(psql_db -tAc "SELECT count(*) FROM tenants")
N_ROUTES=$(psql_db -tAc "SELECT count(*) FROM routes")
N_KEYS=$(psql_db -tAc "SELECT count(*) FROM api_keys")
for n in 1 2 3; do start_proxy $n; done
RSS_ALL=$(rss_kib "$PID_1")
# A key of the big config works (the last tenant's last key, on a route that wants none:
# served; the decision service would name its tenant).
SERVED=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: scale$((TENANTS - 1)).scale.local" "http://127.0.0.1:$PORT_1/svc0/items/1")

# 2. Propagation: route creations for one tenant of the big config through the admin API.
TENANT=$(psql_db -tAc "SELECT id FROM tenants WHERE subdomain = 'scale$((TENANTS / 2))'")
ORIGIN_ID=$(psql_db -tAc "SELECT id FROM origins WHERE tenant_id = '$TENANT'")
reload_stat() { curl -s "http://127.0.0.1:$OPS_1/metrics" | awk -v m="vantage_config_reload_seconds_$1" '$1 == m {print $2}'; }
S0=$(reload_stat sum); C0=$(reload_stat count)
PROP=$(python3 loadtest/propagation.py "$ADMIN" "$TOKEN" "$TENANT" "$ORIGIN_ID" "$CHANGES" "$PORT_1,$PORT_2,$PORT_3" "scale$((TENANTS / 2)).scale.local" 300)
echo "propagation: $PROP" >&2
S1=$(reload_stat sum); C1=$(reload_stat count)
INC_MS=$(awk -v s0="$S0" -v s1="$S1" -v c0="$C0" -v c1="$C1" 'BEGIN { if (c1 > c0) printf "%.2f", (s1 - s0) / (c1 - c0) * 1000; else print "-" }')
INC_N=$(awk -v c0="$C0" -v c1="$C1" 'BEGIN { print c1 - c0 }')

# 3. A full read: the change log made incomplete (as a TRUNCATE would), one tenant renamed.
psql_db -q >/dev/null <<SQL
BEGIN;
UPDATE tenants SET name = 'Renamed' WHERE subdomain = 'scale1';
UPDATE config_version SET changes_from = vantage_bump_config_version() WHERE id;
COMMIT;
SQL
V=$(db_version)
until [ "$(version_of "$OPS_1")" -ge "$V" ]; do sleep 0.05; done
S2=$(reload_stat sum)
FULL_MS=$(awk -v a="$S1" -v b="$S2" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
RSS_AFTER=$(rss_kib "$PID_1")

# 4. /metrics after every route of METRIC_TENANTS tenants was called once.
python3 - "$PORT_1" "$METRIC_TENANTS" "$ROUTES" <<'PY'
import http.client, sys
port, tenants, routes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for t in range(tenants):
    for s in range(routes):
        path = f"/svc{s // 2}/items/1" if s % 2 == 0 else f"/svc{s // 2}/x"
        c.request("GET", path, headers={"Host": f"scale{t}.scale.local"})
        c.getresponse().read()
PY
curl -s "http://127.0.0.1:$OPS_1/metrics" >"$work/metrics.txt"
METRICS_BYTES=$(wc -c <"$work/metrics.txt")
METRICS_SERIES=$(grep -vc '^#' "$work/metrics.txt")

mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print "-" }'; }
report=loadtest/results/scale-latest.md
mkdir -p loadtest/results
{
  echo "# Scale run — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) vCPU, $(uname -sr); PostgreSQL $(psql -V | awk '{print $3}'), Redis $(redis-server --version | awk '{print $3}' | tr -d 'v='),"
  echo "release builds; three vantage-proxy processes (one worker thread each) in \`source: postgres\`"
  echo "mode, vantage-admin, all on loopback. Config from \`loadtest/bigconfig.py\`: $N_TENANTS tenants,"
  echo "$N_ROUTES routes, $N_KEYS API keys (made in Postgres in $LOAD_ROUTES_MS ms + $LOAD_KEYS_MS ms for the keys)."
  echo
  echo "| measure | value | target |"
  echo "| --- | ---: | ---: |"
  echo "| cold start from Postgres, tenants + routes, no keys | $COLD_ROUTES ms | |"
  echo "| cold start from Postgres, everything (proxies 1, 2, 3) | $COLD_1 / $COLD_2 / $COLD_3 ms | < 5000 ms |"
  echo "| one change (a route created) served by all 3 proxies: p50 | $(echo "$PROP" | jq .p50_ms) ms | |"
  echo "| … p99 ($(echo "$PROP" | jq .measured) changes, $(echo "$PROP" | jq .failures) failed) | $(echo "$PROP" | jq .p99_ms) ms | < 100 ms |"
  echo "| … max | $(echo "$PROP" | jq .max_ms) ms | |"
  echo "| the proxy's reload for one change (delta read + compile + swap), mean of $INC_N | $INC_MS ms | |"
  echo "| the admin's answer to one route creation: p50 / p99 | $(echo "$PROP" | jq .admin_p50_ms) / $(echo "$PROP" | jq .admin_p99_ms) ms | |"
  echo "| a full read (change log incomplete): reload | $FULL_MS ms | |"
  echo "| proxy RSS: empty | $(mib "$RSS_EMPTY") MiB | |"
  echo "| proxy RSS: tenants + routes | $(mib "$RSS_ROUTES") MiB ($(per "$RSS_EMPTY" "$RSS_ROUTES" "$N_ROUTES") B per route, its tenant's share included) | |"
  echo "| proxy RSS: everything | $(mib "$RSS_ALL") MiB ($(per "$RSS_ROUTES" "$RSS_ALL" "$N_KEYS") B per key) | |"
  echo "| proxy RSS after the changes and the full read | $(mib "$RSS_AFTER") MiB | |"
  echo "| a big-config tenant's route served | HTTP $SERVED | 200 |"
  echo "| /metrics after every route of $METRIC_TENANTS tenants was called once | $METRICS_BYTES bytes, $METRICS_SERIES series | |"
} | tee "$report"
