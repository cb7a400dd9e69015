#!/usr/bin/env bash
# VantageEdge benchmark: one invocation measures, with the same load, on this machine:
#   (a) the upstream directly           (nginx `return 200`, a 12-byte JSON body)
#   (b) nginx as a plain reverse proxy  (keepalive to the upstream, access log off)
#   (c) bare Pingora                    (loadtest/bare-pingora: one pool, no filters)
#   (d) vantage-proxy, 1 tenant, 1 route
#   (e) vantage-proxy, 10,000 tenants, 100,000 routes and 1,000,000 API keys loaded
#       (loadtest/bigconfig.py; BIG_TENANTS and BIG_KEYS per tenant make it smaller)
#   (d') as (d) without X-Forwarded-* headers (shows what those header inserts cost)
#   (f) as (d) with API-key auth and a local rate limit that never refuses
#   (g) as (d) with JWT auth (RS256, static public key)
#   (h) as (d) with a Redis-backed rate limit (private redis-server on the load CPU)
#   (i) nginx proxy_cache, every request a hit
#   (j) as (d) with the route's memory cache, every request a hit
#   (k) as (d) with usage metering into Postgres (a database of its own, dropped after)
#   (l) pingap 0.13.1, one location (the nearest Pingora-based peer; its own release
#       profile: Pingora 0.8, fat LTO, codegen-units 1, panic abort)
#   (f') as (f) with `rate_limit_headers: draft` (no X-RateLimit-* fields)
#   (m) as (d) with a weighted split of the route between two origins (90/10, at random;
#       both origins are the same upstream)
# Layout (see ../shared/reference/benchmarking.md): the proxy under test alone on CPU 0 with
# one worker; upstream and load generator on CPU 1. Saturation with wrk (closed loop, 64
# keep-alive connections); latency with oha at a fixed rate (open loop). Rounds interleave
# the targets so drift hits all of them alike; report ratios, not absolute figures.
#
# Usage: loadtest/bench.sh            (ROUNDS=3 DURATION=10 RATE=5000 by default)
# Output: a Markdown report on stdout and in loadtest/results/latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages nginx:nginx-light wrk:wrk jq:jq
ensure_postgres

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-5000}
CONNS=64
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PATH_UNDER_TEST=/svc5/items/42

ensure_oha
ensure_pingap
cargo build --release -q -p vantage-proxy -p bare-pingora
BIN=target/release

start_work bench
# nginx's cache and temp files; its workers run unprivileged when started as root.
mkdir -p "$work/nginx-cache" "$work/nginx-temp"
chmod 777 "$work/nginx-cache" "$work/nginx-temp"

UP=18080 NGX=18081 BARE=18082 VP1=18083 VP1K=18084 VP1NF=18085 VPKEY=18086 VPJWT=18087 VPRED=18088 REDIS=18089 NGXC=18090 VPCACHE=18091 VPMET=18092 PINGAPP=18093 VPKEYD=18094 VPSPLIT=18095

# (k)'s database: the schema applied with psql, dropped when the run ends.
DB=vantage_bench_$$
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
for f in migrations/V*.sql; do psql -h 127.0.0.1 -U postgres -d "$DB" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done
drop_db() { psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true; }
trap '_stop_work; drop_db' EXIT


# --- upstream and nginx -------------------------------------------------------------------
upstream_conf "$work/upstream.conf" "$UP" "$work"
cat >"$work/nginx-proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx-proxy.pid;
error_log $work/nginx-proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  proxy_cache_path $work/nginx-cache keys_zone=hits:10m;
  proxy_temp_path $work/nginx-temp;
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:$NGXC;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hits;
      proxy_cache_valid 200 10m;
    }
  }
}
EOF

# --- vantage configs -----------------------------------------------------------------------
{
  server_yaml $VP1 19083
  cat <<EOF
tenants: [{id: t5, name: T5, subdomain: t5}]
origins: [{id: o5, tenant_id: t5, targets: [{url: "http://127.0.0.1:$UP"}], circuit_breaker: {enabled: false}}]
routes: [{id: r5, tenant_id: t5, path_pattern: "/*", origin_id: o5}]
EOF
} >"$work/vp1.yaml"
sed -e "s/$VP1/$VP1NF/g; s/19083/19085/; s/  access_log: false/  access_log: false\n  forwarded_headers: false/" "$work/vp1.yaml" >"$work/vp1nf.yaml"
{
  server_yaml $VP1K 19084
  python3 loadtest/bigconfig.py yaml "${BIG_TENANTS:-10000}" 10 "${BIG_KEYS:-100}" "$UP"
} >"$work/vp1k.yaml"
# (e) hits /svc5/... which only exists in (d)'s catch-all; give tenant scale500 its route too.
sed -i "s|^routes:|routes:\n  - {id: scale500-svc5, tenant_id: scale500, path_pattern: \"/svc5/items/:id\", origin_id: scale500-o}|" "$work/vp1k.yaml"
"$BIN/vantage-proxy" --config "$work/vp1k.yaml" --check >&2

# (f) API key + local limit; (g) JWT; (h) Redis limit — all variants of (d).
KEY_LINES=$("$BIN/vantage-proxy" gen-key)
API_KEY=$(echo "$KEY_LINES" | awk '/^key:/ {print $2}')
KEY_HASH=$(echo "$KEY_LINES" | awk '/^key_hash:/ {print $2}')
variant() { # port ops-port route-extra [server-extra] [top-level-extra]
  sed -e "s/$VP1/$1/g; s/19083/$2/" "$work/vp1.yaml" |
    sed -e "s|origin_id: o5}]|origin_id: o5$3}]|" -e "s|^  access_log: false|  access_log: false\n$4|"
  printf '%b' "${5:-}"
}
variant $VPKEY 19086 ", auth: {mode: apikey_required}, rate_limits: [{name: high, algorithm: {type: token_bucket, rate: 1000000, burst: 1000000}, subject: {by: api_key}}]" "" \
  "api_keys: [{id: bench, tenant_id: t5, name: bench, key_hash: \"$KEY_HASH\"}]\n" >"$work/vpkey.yaml"
mint_jwt "$work" bench
PEM_YAML=$(sed 's/^/      /' "$work/jwt.pub")
variant $VPJWT 19087 ", auth: {mode: jwt_required}" "" \
  "jwt_issuers:\n  - id: bench\n    tenant_id: t5\n    issuer: https://issuer.bench\n    algorithms: [RS256]\n    public_key_pem: |\n${PEM_YAML//$'\n'/\\n}\n" >"$work/vpjwt.yaml"
variant $VPRED 19088 ", rate_limits: [{name: shared, algorithm: {type: token_bucket, rate: 1000000, burst: 1000000}, subject: {by: tenant}, backend: redis, on_redis_error: deny}]" \
  "  redis: {url: \"redis://127.0.0.1:$REDIS\", timeout_ms: 50}" >"$work/vpred.yaml"
variant $VPCACHE 19089 ", cache: {enabled: true, default_ttl_seconds: 600}" "" >"$work/vpcache.yaml"
variant $VPMET 19090 "" \
  "  postgres: {url: \"postgres://postgres@127.0.0.1:5432/$DB\", request_logs: {enabled: false}, usage: {flush_interval_ms: 1000}}" >"$work/vpmet.yaml"
sed -e "s/$VPKEY/$VPKEYD/g; s/19086/19091/; s|^  access_log: false|  access_log: false\n  rate_limit_headers: draft|" "$work/vpkey.yaml" >"$work/vpkeyd.yaml"
variant $VPSPLIT 19095 ", traffic: {split: {origins: [{origin_id: o5, weight: 90}, {origin_id: o5b, weight: 10}]}}" "" >"$work/vpsplit.yaml"
sed -i 's|^origins: \[{id: o5, \(.*\)}\]$|origins: [{id: o5, \1}, {id: o5b, \1}]|' "$work/vpsplit.yaml"
for f in vpkey vpjwt vpred vpcache vpmet vpkeyd vpsplit; do "$BIN/vantage-proxy" --config "$work/$f.yaml" --check >&2; done

pingap_conf "$work/pingap.toml" "$PINGAPP" "$UP"

taskset -c "$LOAD_CPU" redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -p "$work" & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/nginx-proxy.conf" -p "$work" & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/bare-pingora" "127.0.0.1:$BARE" "127.0.0.1:$UP" 1 >"$work/bare.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vp1.yaml" >"$work/vp1.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vp1k.yaml" >"$work/vp1k.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vp1nf.yaml" >"$work/vp1nf.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpkey.yaml" >"$work/vpkey.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpjwt.yaml" >"$work/vpjwt.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpred.yaml" >"$work/vpred.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpcache.yaml" >"$work/vpcache.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpmet.yaml" >"$work/vpmet.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$PINGAP" -c "$work/pingap.toml" >"$work/pingap.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpkeyd.yaml" >"$work/vpkeyd.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/vpsplit.yaml" >"$work/vpsplit.log" 2>&1 & pids+=($!)
for p in $REDIS $UP $NGX $BARE $VP1 $VP1K $VP1NF $VPKEY $VPJWT $VPRED $NGXC $VPCACHE $VPMET $PINGAPP $VPKEYD $VPSPLIT; do wait_port "$p" 3000; done
for ops in 19088; do
  for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$ops/readyz" | grep -q '"redis":"connected"' && break; sleep 0.1; done
done

names=(upstream nginx bare-pingora vantage-1route vantage-100k-routes-1m-keys vantage-1route-no-xff vantage-apikey-limit vantage-jwt vantage-redis-limit nginx-cache-hit vantage-cache-hit vantage-metering pingap vantage-apikey-limit-draft vantage-split)
labels=("(a) upstream directly" "(b) nginx reverse proxy" "(c) bare Pingora" "(d) vantage-proxy, 1 tenant / 1 route" "(e) vantage-proxy, 10,000 tenants / 100,000 routes / 1M keys" "(d′) as (d), \`forwarded_headers: false\`" "(f) as (d) + API key + local limit" "(g) as (d) + JWT (RS256)" "(h) as (d) + Redis limit" "(i) nginx proxy_cache hit" "(j) as (d), memory cache hit" "(k) as (d) + usage metering" "(l) pingap 0.13.1, one location" "(f′) as (f), \`rate_limit_headers: draft\`" "(m) as (d), split between two origins (90/10)")
ports=($UP $NGX $BARE $VP1 $VP1K $VP1NF $VPKEY $VPJWT $VPRED $NGXC $VPCACHE $VPMET $PINGAPP $VPKEYD $VPSPLIT)
hosts=(up.bench.local up.bench.local up.bench.local t5.bench.local scale500.bench.local t5.bench.local t5.bench.local t5.bench.local t5.bench.local up.bench.local t5.bench.local t5.bench.local up.bench.local t5.bench.local t5.bench.local)
extra=("" "" "" "" "" "" "X-API-Key: $API_KEY" "Authorization: Bearer $JWT" "" "" "" "" "" "X-API-Key: $API_KEY" "")
# pids[0] is redis-server; the nginx proxy process serves (b) and (i).
pidof_target=("${pids[1]}" "${pids[2]}" "${pids[3]}" "${pids[4]}" "${pids[5]}" "${pids[6]}" "${pids[7]}" "${pids[8]}" "${pids[9]}" "${pids[2]}" "${pids[10]}" "${pids[11]}" "${pids[12]}" "${pids[13]}" "${pids[14]}")
hdrs() { # the -H arguments for target $1
  H=(-H "Host: ${hosts[$1]}")
  if [ -n "${extra[$1]}" ]; then H+=(-H "${extra[$1]}"); fi
}

# Sanity: every target answers 200 with the upstream's body.
for i in "${!names[@]}"; do
  hdrs "$i"
  body=$(curl -s "${H[@]}" "http://127.0.0.1:${ports[$i]}$PATH_UNDER_TEST")
  [ "$body" = '{"ok":true}' ] || { echo "${names[$i]} answered: $body" >&2; exit 1; }
done

# CPU ticks (utime+stime) of a process and its children.
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

declare -A reqs cpu secs errs
for i in "${!names[@]}"; do reqs[$i]=0; cpu[$i]=0; secs[$i]=0; errs[$i]=0; done

for round in $(seq 1 "$ROUNDS"); do
  for i in "${!names[@]}"; do
    # warm-up
    hdrs "$i"
    taskset -c "$LOAD_CPU" wrk -t1 -c$CONNS -d1s "${H[@]}" "http://127.0.0.1:${ports[$i]}$PATH_UNDER_TEST" >/dev/null
    before=$(cpu_ticks "${pidof_target[$i]}")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c$CONNS -d"${DURATION}s" "${H[@]}" "http://127.0.0.1:${ports[$i]}$PATH_UNDER_TEST")
    after=$(cpu_ticks "${pidof_target[$i]}")
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    bad=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    sockerr=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4+$6+$8+$10}')
    reqs[$i]=$((reqs[$i] + n))
    cpu[$i]=$((cpu[$i] + after - before))
    secs[$i]=$((secs[$i] + DURATION))
    errs[$i]=$((errs[$i] + ${bad:-0} + ${sockerr:-0}))
    echo "round $round ${names[$i]}: $n requests" >&2
  done
done

# (k) really metered: its rows reach Postgres (flushed every second).
sleep 2
METERED=$(psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "SELECT COALESCE(sum(requests), 0) FROM usage_minute")
[ "$METERED" -gt 0 ] || { echo "(k) wrote no usage rows" >&2; exit 1; }

declare -A p50 p99
for i in "${!names[@]}"; do
  hdrs "$i"
  json=$(taskset -c "$LOAD_CPU" "$OHA" -z "${DURATION}s" -q "$RATE" -c $CONNS --latency-correction --no-tui --output-format json \
    "${H[@]}" "http://127.0.0.1:${ports[$i]}$PATH_UNDER_TEST" 2>/dev/null || true)
  p50[$i]=$(echo "$json" | jq -r '.latencyPercentiles.p50 * 1000 | . * 1000 | round / 1000' 2>/dev/null || echo "-")
  p99[$i]=$(echo "$json" | jq -r '.latencyPercentiles.p99 * 1000 | . * 1000 | round / 1000' 2>/dev/null || echo "-")
done

cpu_us() { # µs of CPU per request for target $1
  awk -v t="${cpu[$1]}" -v hz="$HZ" -v n="${reqs[$1]}" 'BEGIN { if (n == 0) print 0; else printf "%.2f", t / hz * 1e6 / n }'
}
report="loadtest/results/latest.md"
mkdir -p loadtest/results
{
  echo "# Benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) vCPU ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GiB,"
  echo "$(uname -sr). $(nginx -v 2>&1 | sed 's|nginx version: ||'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), oha $("$OHA" --version | awk '{print $2}')."
  echo "Proxy on CPU $PROXY_CPU with one worker; upstream (nginx \`return 200\`, 12-byte body) and"
  echo "load generator on CPU $LOAD_CPU. wrk -t1 -c$CONNS, $ROUNDS interleaved rounds × ${DURATION}s;"
  echo "latency: oha at a fixed $RATE req/s for ${DURATION}s (open loop, latency-corrected)."
  echo "Request: GET $PATH_UNDER_TEST. Access logs off everywhere; upstream keep-alive everywhere."
  echo
  echo "| target | req/s | CPU µs/req | util % | p50 ms | p99 ms | CPU/req ÷ nginx | CPU/req ÷ bare Pingora | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for i in "${!names[@]}"; do
    rps=$(awk -v n="${reqs[$i]}" -v s="${secs[$i]}" 'BEGIN { printf "%.0f", n / s }')
    util=$(awk -v t="${cpu[$i]}" -v hz="$HZ" -v s="${secs[$i]}" 'BEGIN { printf "%.0f", t / hz / s * 100 }')
    if [ "$i" -eq 0 ]; then
      vs_nginx="–"; vs_bare="–"; c="–"; util="–"
    else
      c=$(cpu_us "$i")
      vs_nginx=$(awk -v a="$c" -v b="$(cpu_us 1)" 'BEGIN { printf "%.2f", a / b }')
      vs_bare=$(awk -v a="$c" -v b="$(cpu_us 2)" 'BEGIN { printf "%.2f", a / b }')
    fi
    echo "| ${labels[$i]} | $rps | $c | $util | ${p50[$i]} | ${p99[$i]} | $vs_nginx | $vs_bare | ${errs[$i]} |"
  done
  echo
  echo "util % ≈ 100 means the proxy's core was saturated; lower means the client or upstream"
  echo "was the limit, and CPU µs/req is the figure to compare."
  echo
  echo "Gateway features against plain proxying (d), same run:"
  echo
  echo "| target | req/s ÷ (d) | CPU/req ÷ (d) | p50 − p50(d) ms |"
  echo "| --- | ---: | ---: | ---: |"
  for i in 6 13 7 8 10 11 14; do
    awk -v n="${reqs[$i]}" -v nd="${reqs[3]}" -v c="$(cpu_us "$i")" -v cd="$(cpu_us 3)" -v p="${p50[$i]}" -v pd="${p50[3]}" -v l="${labels[$i]}" \
      'BEGIN { printf "| %s | %.2f | %.2f | %+.3f |\n", l, n / nd, c / cd, p - pd }'
  done
  echo
  echo "Usage metering (k) ÷ plain proxying (d), CPU per request: $(awk -v c="$(cpu_us 11)" -v cd="$(cpu_us 3)" 'BEGIN { printf "%.3f", c / cd }')"
  echo "(goal ≤ 1.05); (k) wrote $METERED requests into usage_minute during the run."
  echo
  ratio() { awk -v a="$(cpu_us "$1")" -v b="$(cpu_us "$2")" 'BEGIN { printf "%.2f", a / b }'; }
  echo "The targets of issues 14 and 15, CPU per request in this run:"
  echo
  echo "| ratio | value | target |"
  echo "| --- | ---: | ---: |"
  echo "| (d) vantage ÷ (l) pingap | $(ratio 3 12) | ≤ 1.00 |"
  echo "| (d) vantage ÷ (c) bare Pingora | $(ratio 3 2) | < 1.10 |"
  echo "| (e) 10,000 tenants / 100,000 routes / 1M keys ÷ (d) | $(ratio 4 3) | 1.00 within noise |"
  echo "| (f) API key + local limit ÷ (d) | $(ratio 6 3) | ≤ 1.05 |"
  echo "| (f′) the same, \`rate_limit_headers: draft\`, ÷ (d) | $(ratio 13 3) | |"
  echo "| (l) pingap ÷ (c) bare Pingora | $(ratio 12 2) | |"
  echo "| (m) two-origin split ÷ (d) (issue 15) | $(ratio 14 3) | ≤ 1.03 |"
  echo
  echo "Cache hits, same run: vantage's hit (j) against its own proxied miss path (d) and"
  echo "against nginx's proxy_cache hit (i) (below 1.00 = vantage uses less CPU per request):"
  echo
  echo "| comparison | CPU/req ratio | req/s ratio | p50 ratio |"
  echo "| --- | ---: | ---: | ---: |"
  for pair in "10 3" "10 9"; do
    set -- $pair
    awk -v c="$(cpu_us "$1")" -v cd="$(cpu_us "$2")" -v n="${reqs[$1]}" -v nd="${reqs[$2]}" -v p="${p50[$1]}" -v pd="${p50[$2]}" \
      -v l="${labels[$1]} ÷ ${labels[$2]}" \
      'BEGIN { printf "| %s | %.2f | %.2f | %.2f |\n", l, c / cd, n / nd, (pd > 0 ? p / pd : 0) }'
  done
} | tee "$report"
