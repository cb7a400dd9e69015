#!/usr/bin/env bash
# The k6 scenario matrix (loadtest/k6/), run here with oha against the release proxy, each
# scenario next to nginx where nginx can do the same job:
#   plain         proxying                         vs nginx proxy_pass (keepalive upstream)
#   cache-hit     route cache, every request a hit vs nginx proxy_cache hit
#   apikey        API-key auth (X-API-Key)         (no nginx equivalent)
#   jwt           JWT auth, RS256                  (nginx OSS cannot verify JWTs)
#   ratelimit     local limit, offered RATE > limit vs nginx limit_req (same rate, burst, 429)
#   config-churn  plain traffic while the config is rewritten and reloaded (SIGHUP) every
#                 CHURN_MS ms                      vs nginx reloaded (SIGHUP) as often
# (The k6 config-churn script writes through the admin API; here the proxy runs from a file,
# the same swap path without Postgres.)
# Layout as loadtest/bench.sh: each proxy one worker pinned to CPU 0; upstream (nginx
# `return 200`) and oha on CPU 1. Load: oha open loop at RATE req/s, 64 connections,
# DURATION seconds per scenario, latency-corrected.
#
# Usage: loadtest/matrix.sh     (DURATION=10 RATE=3000 LIMIT=1000 CHURN_MS=500 by default)
# Output: loadtest/results/matrix-latest.md and loadtest/results/matrix-latest.png
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages nginx:nginx-light jq:jq gnuplot:gnuplot-nox

DURATION=${DURATION:-10}
RATE=${RATE:-3000}
LIMIT=${LIMIT:-1000}
CHURN_MS=${CHURN_MS:-500}
CONNS=64
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
REQ_PATH=/items/42

ensure_oha
# VANTAGE_BIN: an already built binary (skips the build), e.g. while the tree does not compile.
if [ -n "${VANTAGE_BIN:-}" ]; then
  BIN=$VANTAGE_BIN
else
  cargo build --release -q -p vantage-proxy
  BIN=target/release/vantage-proxy
fi

work=$(mktemp -d /tmp/vantage-matrix.XXXXXX)
mkdir -p "$work/nginx-cache" "$work/nginx-temp"
chmod 755 "$work"; chmod 777 "$work/nginx-cache" "$work/nginx-temp"
pids=()
churner=""
cleanup() {
  [ -n "$churner" ] && kill "$churner" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

UP=18280 NGX=18281 NGXC=18282 NGXRL=18283 NGXCH=18284
VPLAIN=18290 VCACHE=18291 VKEY=18292 VJWT=18293 VRL=18294 VCH=18295


# --- upstream and nginx ---------------------------------------------------------------------
upstream_conf "$work/upstream.conf" "$UP" "$work"
nginx_conf() { # name port location-extra [http-extra]
  cat <<NGX
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  proxy_temp_path $work/nginx-temp;
  ${4:-}
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $3
    }
  }
}
NGX
}
nginx_conf ngx $NGX "" >"$work/ngx.conf"
nginx_conf ngxc $NGXC "proxy_cache hits; proxy_cache_valid 200 10m;" "proxy_cache_path $work/nginx-cache keys_zone=hits:10m;" >"$work/ngxc.conf"
nginx_conf ngxrl $NGXRL "limit_req zone=rl burst=100 nodelay; limit_req_status 429;" "limit_req_zone \$binary_remote_addr zone=rl:1m rate=${LIMIT}r/s;" >"$work/ngxrl.conf"
nginx_conf ngxch $NGXCH "" >"$work/ngxch.conf"

# --- vantage configs ------------------------------------------------------------------------
KEY_LINES=$("$BIN" gen-key)
API_KEY=$(echo "$KEY_LINES" | awk '/^key:/ {print $2}')
KEY_HASH=$(echo "$KEY_LINES" | awk '/^key_hash:/ {print $2}')
mint_jwt "$work" matrix

vconf() { # port ops route-extra [top-level-extra] [marker]
  server_yaml "$1" "$2" matrix.local
  cat <<YAML
tenants: [{id: t, name: "T ${5:-0}", subdomain: t}]
origins: [{id: o, tenant_id: t, targets: [{url: "http://127.0.0.1:$UP"}], circuit_breaker: {enabled: false}}]
routes: [{id: r, tenant_id: t, path_pattern: "/*", origin_id: o$3}]
YAML
  printf '%b' "${4:-}"
}
vconf $VPLAIN 19290 "" >"$work/plain.yaml"
vconf $VCACHE 19291 ", cache: {enabled: true, default_ttl_seconds: 600}" >"$work/cache.yaml"
vconf $VKEY 19292 ", auth: {mode: apikey_required}" "api_keys: [{id: m, tenant_id: t, name: m, key_hash: \"$KEY_HASH\"}]\n" >"$work/key.yaml"
PEM_YAML=$(sed 's/^/      /' "$work/jwt.pub")
vconf $VJWT 19293 ", auth: {mode: jwt_required}" \
  "jwt_issuers:\n  - id: m\n    tenant_id: t\n    issuer: https://issuer.matrix\n    algorithms: [RS256]\n    public_key_pem: |\n${PEM_YAML//$'\n'/\\n}\n" >"$work/jwt.yaml"
vconf $VRL 19294 ", rate_limits: [{name: rl, algorithm: {type: token_bucket, rate: $LIMIT, burst: 100}, subject: {by: route}}]" >"$work/rl.yaml"
vconf $VCH 19295 "" "" 0 >"$work/churn.yaml"
for f in plain cache key jwt rl churn; do "$BIN" --config "$work/$f.yaml" --check >/dev/null; done

taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -p "$work" & pids+=($!)
for n in ngx ngxc ngxrl ngxch; do taskset -c "$PROXY_CPU" nginx -c "$work/$n.conf" -p "$work" & pids+=($!); done
NGXCH_PID=${pids[4]}
for f in plain cache key jwt rl churn; do
  taskset -c "$PROXY_CPU" "$BIN" --config "$work/$f.yaml" >"$work/$f.log" 2>&1 & pids+=($!)
done
VCH_PID=${pids[10]}
for p in $UP $NGX $NGXC $NGXRL $NGXCH $VPLAIN $VCACHE $VKEY $VJWT $VRL $VCH; do wait_port "$p"; done

H="Host: t.matrix.local"
check200() { # port [header]
  local extra=()
  [ -n "${2:-}" ] && extra=(-H "$2")
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "${extra[@]}" "http://127.0.0.1:$1$REQ_PATH")
  [ "$code" = 200 ] || { echo "port $1 answered $code" >&2; exit 1; }
}
for p in $NGX $NGXC $NGXRL $NGXCH $VPLAIN $VCACHE $VRL $VCH; do check200 $p; done
check200 $VKEY "X-API-Key: $API_KEY"
check200 $VJWT "Authorization: Bearer $JWT"
[ "$(curl -s -D - -o /dev/null -H "$H" "http://127.0.0.1:$VCACHE$REQ_PATH" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" {print $2}')" = HIT ] \
  || { echo "the cache route does not hit" >&2; exit 1; }

# --- config churn: rewrite + SIGHUP every CHURN_MS during the scenario ----------------------
churn_vantage() {
  local i=0
  while :; do
    i=$((i + 1))
    vconf $VCH 19295 "" "" "$i" >"$work/churn.yaml.tmp" && mv "$work/churn.yaml.tmp" "$work/churn.yaml"
    kill -HUP "$VCH_PID" 2>/dev/null || return 0
    sleep "$(awk -v m="$CHURN_MS" 'BEGIN { print m / 1000 }')"
  done
}
churn_nginx() {
  while :; do
    kill -HUP "$NGXCH_PID" 2>/dev/null || return 0
    sleep "$(awk -v m="$CHURN_MS" 'BEGIN { print m / 1000 }')"
  done
}

# --- run ---------------------------------------------------------------------------------------
# scenario|target|port|header|churn
runs=(
  "plain|vantage|$VPLAIN||"
  "plain|nginx|$NGX||"
  "cache-hit|vantage|$VCACHE||"
  "cache-hit|nginx|$NGXC||"
  "apikey|vantage|$VKEY|X-API-Key: $API_KEY|"
  "jwt|vantage|$VJWT|Authorization: Bearer $JWT|"
  "ratelimit|vantage|$VRL||"
  "ratelimit|nginx|$NGXRL||"
  "config-churn|vantage|$VCH||churn_vantage"
  "config-churn|nginx|$NGXCH||churn_nginx"
)
declare -A res
for i in "${!runs[@]}"; do
  IFS='|' read -r scen target port header churn <<<"${runs[$i]}"
  extra=()
  [ -n "$header" ] && extra=(-H "$header")
  # warm-up (1 s), then the measured run
  taskset -c "$LOAD_CPU" "$OHA" -z 1s -q "$RATE" -c $CONNS --no-tui --output-format json -H "$H" "${extra[@]}" \
    "http://127.0.0.1:$port$REQ_PATH" >/dev/null 2>&1 || true
  if [ -n "$churn" ]; then $churn & churner=$!; fi
  taskset -c "$LOAD_CPU" "$OHA" -z "${DURATION}s" -q "$RATE" -c $CONNS --latency-correction --no-tui \
    --output-format json -H "$H" "${extra[@]}" "http://127.0.0.1:$port$REQ_PATH" >"$work/run-$i.json" 2>"$work/run-$i.err" || true
  if [ -n "$churner" ]; then kill "$churner" 2>/dev/null || true; wait "$churner" 2>/dev/null || true; churner=""; fi
  res[$i]=$(jq -r '[
      (.summary.requestsPerSec | round),
      ([.statusCodeDistribution | to_entries[] | select(.key | startswith("2")) | .value] | add // 0),
      (.statusCodeDistribution["429"] // 0),
      ([.statusCodeDistribution | to_entries[] | select((.key | startswith("2") | not) and .key != "429") | .value] | add // 0),
      ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0),
      (.latencyPercentiles.p50 * 1000), (.latencyPercentiles.p90 * 1000),
      (.latencyPercentiles.p99 * 1000), (.latencyPercentiles["p99.9"] * 1000)
    ] | map(tostring) | join(" ")' "$work/run-$i.json" 2>/dev/null || echo "0 0 0 0 0 0 0 0 0")
  echo "$scen $target: ${res[$i]}" >&2
done

# --- report --------------------------------------------------------------------------------------
mkdir -p loadtest/results
md=loadtest/results/matrix-latest.md
png=loadtest/results/matrix-latest.png
dat="$work/plot.dat"
: >"$dat"
fmt() { awk -v v="$1" 'BEGIN { printf "%.3f", v }'; }
{
  echo "# Scenario matrix — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$(nproc) vCPU ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr);"
  echo "$(nginx -v 2>&1 | sed 's|nginx version: ||'), oha $("$OHA" --version | awk '{print $2}'). Each proxy: one worker on CPU $PROXY_CPU;"
  echo "upstream (nginx \`return 200\`, 12-byte body) and oha on CPU $LOAD_CPU. oha open loop at $RATE req/s,"
  echo "$CONNS connections, ${DURATION}s per row, latency-corrected; GET $REQ_PATH. Access logs off everywhere."
  echo "Rate limit: $LIMIT req/s, burst 100 (vantage token bucket per route; nginx \`limit_req\` nodelay) —"
  echo "about $(awk -v l="$LIMIT" -v r="$RATE" 'BEGIN { printf "%d", (r > l ? (1 - l / r) * 100 : 0) }')% of the offered load should get 429. Config churn: a reload (SIGHUP; vantage also"
  echo "rewrites its file first) every ${CHURN_MS} ms during the run. k6 versions of the same scenarios: [loadtest/k6/](../k6/)."
  echo
  echo "| scenario | target | req/s | 2xx | 429 | other status | transport errors | p50 ms | p90 ms | p99 ms | p99.9 ms | p50 ÷ nginx | p99 ÷ nginx |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for i in "${!runs[@]}"; do
    IFS='|' read -r scen target _ <<<"${runs[$i]}"
    read -r rps ok r429 other terr p50 p90 p99 p999 <<<"${res[$i]}"
    vs50="–"; vs99="–"
    if [ "$target" = vantage ]; then
      for j in "${!runs[@]}"; do
        IFS='|' read -r s2 t2 _ <<<"${runs[$j]}"
        if [ "$s2" = "$scen" ] && [ "$t2" = nginx ]; then
          read -r _ _ _ _ _ n50 _ n99 _ <<<"${res[$j]}"
          vs50=$(awk -v a="$p50" -v b="$n50" 'BEGIN { printf (b > 0 ? "%.2f" : "–"), a / b }')
          vs99=$(awk -v a="$p99" -v b="$n99" 'BEGIN { printf (b > 0 ? "%.2f" : "–"), a / b }')
        fi
      done
    fi
    echo "| $scen | $target | $rps | $ok | $r429 | $other | $terr | $(fmt "$p50") | $(fmt "$p90") | $(fmt "$p99") | $(fmt "$p999") | $vs50 | $vs99 |"
    echo "\"$scen\\n$target\" $p50 $p99" >>"$dat"
  done
  echo
  echo "![latency per scenario](matrix-latest.png)"
  echo
  echo "Reading it: 2xx + 429 + other + transport errors = requests answered during the run; a"
  echo "transport error is a connection reset or refused (oha's end-of-run cut-offs are not counted)."
  echo "Compare figures within this report only (noise between runs here is ~5–7%)."
} | tee "$md"

gnuplot <<GP || echo "gnuplot failed: no plot" >&2
set terminal pngcairo size 1200,550 font ",10"
set output "$png"
set title "vantage-proxy vs nginx — open loop $RATE req/s, ${DURATION}s per scenario ($(date -u +%Y-%m-%d))"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set ylabel "latency (ms)"
set logscale y
set grid ytics
set xtics rotate by -30 font ",9"
set key top left
plot "$dat" using 2:xtic(1) title "p50", "" using 3 title "p99"
GP
echo "report: $md, plot: $png" >&2
