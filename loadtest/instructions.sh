#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable to ~0.05% whatever
# the machine's noise (see ../shared/reference/benchmarking.md), so two builds or two
# configurations compare exactly where wall-clock figures drift by 5-10% between runs.
#
# Measures, each under callgrind with counters zeroed after a warm-up:
#   bare       loadtest/bare-pingora (one pool, no filters)
#   vantage    vantage-proxy, 1 tenant / 1 route (the benchmark's (d))
#   metering   the same with usage metering into Postgres (the benchmark's (k); a database of
#              its own, dropped after)
#   apikey     the same with an API key and a local rate limit that never refuses (the
#              benchmark's (f)), with every rate-limit field and with `rate_limit_headers: draft`
#   split      the same with the route split between two origins (90/10 at random; the
#              benchmark's (m))
#   pingap     pingap 0.13.1 proxying one location (the benchmark's (l)), when it is
#              installed (loadtest/bench.sh installs it)
# and prints instructions per request, their ratios, and the vantage phases' inclusive share.
#
# Usage: loadtest/instructions.sh            (N=20000 requests after 2000 of warm-up)
#        BASE_BIN=/path/to/older/vantage-proxy loadtest/instructions.sh   (adds that build)
#        BARE_BASE_BIN=/path/to/other/bare-pingora loadtest/instructions.sh   (adds that floor,
#                                                   e.g. loadtest/bare-pingora built on Pingora 0.8)
#        KEEP=/some/dir loadtest/instructions.sh   (keeps the callgrind files there, for
#                                                   callgrind_annotate)
# Output: a Markdown report on stdout and in loadtest/results/instructions-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages nginx:nginx-light valgrind:valgrind
ensure_postgres
ensure_oha

N=${N:-20000}
WARM=${WARM:-2000}
cargo build --release -q -p vantage-proxy -p bare-pingora
BIN=target/release

start_work instr
DB=vantage_instr_$$
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
for f in migrations/V*.sql; do psql -h 127.0.0.1 -U postgres -d "$DB" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done
trap '_stop_work; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true' EXIT

UP=18380 BARE=18382 VP=18383
upstream_conf "$work/upstream.conf" "$UP" "$work"
nginx -c "$work/upstream.conf" >/dev/null 2>&1 & pids+=($!)
{
  server_yaml "$VP" 18384
  cat <<EOF
tenants: [{id: t5, name: T5, subdomain: t5}]
origins: [{id: o5, tenant_id: t5, targets: [{url: "http://127.0.0.1:$UP"}], circuit_breaker: {enabled: false}}]
routes: [{id: r5, tenant_id: t5, path_pattern: "/*", origin_id: o5}]
EOF
} >"$work/vp.yaml"
KEY_LINES=$("$BIN/vantage-proxy" gen-key)
API_KEY=$(echo "$KEY_LINES" | awk '/^key:/ {print $2}')
KEY_HASH=$(echo "$KEY_LINES" | awk '/^key_hash:/ {print $2}')
sed -e 's|origin_id: o5}]|origin_id: o5, auth: {mode: apikey_required}, rate_limits: [{name: high, algorithm: {type: token_bucket, rate: 1000000, burst: 1000000}, subject: {by: api_key}}]}]|' "$work/vp.yaml" >"$work/vp-apikey.yaml"
echo "api_keys: [{id: bench, tenant_id: t5, name: bench, key_hash: \"$KEY_HASH\"}]" >>"$work/vp-apikey.yaml"
sed -e "s|^  access_log: false|  access_log: false\n  rate_limit_headers: draft|" "$work/vp-apikey.yaml" >"$work/vp-apikey-draft.yaml"
sed -e 's|origin_id: o5}]|origin_id: o5, traffic: {split: {origins: [{origin_id: o5, weight: 90}, {origin_id: o5b, weight: 10}]}}}]|' \
  -e 's|^origins: \[{id: o5, \(.*\)}\]$|origins: [{id: o5, \1}, {id: o5b, \1}]|' "$work/vp.yaml" >"$work/vp-split.yaml"
"$BIN/vantage-proxy" --config "$work/vp-split.yaml" --check >&2
sed -e "s|^  access_log: false|  access_log: false\n  postgres: {url: \"postgres://postgres@127.0.0.1:5432/$DB\", request_logs: {enabled: false}, usage: {flush_interval_ms: 1000}}|" \
  "$work/vp.yaml" >"$work/vp-metering.yaml"

# measure NAME PORT CMD...: instructions per request of CMD serving PORT (requests carry
# the header in $HDR when set).
HDR=""
measure() {
  local name=$1 port=$2
  shift 2
  local hdr=(-H "Host: t5.bench.local")
  [ -z "$HDR" ] || hdr+=(-H "$HDR")
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  # Under valgrind a start takes seconds.
  for _ in 1 2 3 4 5 6; do wait_port "$port" 2>/dev/null && break; done
  wait_port "$port"
  "$OHA" -n "$WARM" -c 8 --no-tui "${hdr[@]}" "http://127.0.0.1:$port/svc5/items/42" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  "$OHA" -n "$N" -c 8 --no-tui "${hdr[@]}" "http://127.0.0.1:$port/svc5/items/42" >"$work/$name.oha"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -s "${STOP_SIGNAL:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The dump on request is <file>.1 (the one at exit has the rest of the run).
  [ -z "${KEEP:-}" ] || cp "$work/$name.out.1" "$KEEP/$name.callgrind"
  local total
  total=$(awk '/^summary:/ {print $2; exit}' "$work/$name.out.1")
  echo $(( total / N ))
}

wait_port "$UP"
bare=$(measure bare "$BARE" "$BIN/bare-pingora" "127.0.0.1:$BARE" "127.0.0.1:$UP" 1)
vantage=$(measure vantage "$VP" "$BIN/vantage-proxy" --config "$work/vp.yaml")
metering=$(measure metering "$VP" "$BIN/vantage-proxy" --config "$work/vp-metering.yaml")
split=$(measure split "$VP" "$BIN/vantage-proxy" --config "$work/vp-split.yaml")
split_ratio=$(awk -v a="$split" -v b="$vantage" 'BEGIN { printf "%.3f", a / b }')
pingap_row=""
if pingap_installed; then
  pingap_conf "$work/pingap.toml" "$VP" "$UP"
  # pingap drains for minutes after SIGTERM; its figures are dumped already.
  pingap=$(STOP_SIGNAL=KILL measure pingap "$VP" "$PINGAP" -c "$work/pingap.toml")
  pingap_row="| pingap 0.13.1, one location | $pingap ($(awk -v a="$pingap" -v b="$bare" 'BEGIN { printf "%.2f", a / b }') × bare; vantage = $(awk -v a="$vantage" -v b="$pingap" 'BEGIN { printf "%.2f", a / b }') × pingap) |"
fi
apikey=$(HDR="X-API-Key: $API_KEY" measure apikey "$VP" "$BIN/vantage-proxy" --config "$work/vp-apikey.yaml")
apikey_ratio=$(awk -v a="$apikey" -v b="$vantage" 'BEGIN { printf "%.3f", a / b }')
draft=$(HDR="X-API-Key: $API_KEY" measure apikey-draft "$VP" "$BIN/vantage-proxy" --config "$work/vp-apikey-draft.yaml")
draft_ratio=$(awk -v a="$draft" -v b="$vantage" 'BEGIN { printf "%.3f", a / b }')
metered=$(psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "SELECT COALESCE(sum(requests), 0) FROM usage_minute")
ratio=$(awk -v a="$vantage" -v b="$bare" 'BEGIN { printf "%.2f", a / b }')
metering_ratio=$(awk -v a="$metering" -v b="$vantage" 'BEGIN { printf "%.3f", a / b }')
base_row="" bare_base_row=""
if [ -n "${BARE_BASE_BIN:-}" ]; then
  bare_base=$(measure bare-base "$BARE" "$BARE_BASE_BIN" "127.0.0.1:$BARE" "127.0.0.1:$UP" 1)
  bare_base_row="| bare Pingora, BARE_BASE_BIN ($BARE_BASE_BIN) | $bare_base ($(awk -v a="$bare_base" -v b="$bare" 'BEGIN { printf "%.3f", a / b }') × bare) |"
fi
if [ -n "${BASE_BIN:-}" ]; then
  base=$(measure base "$VP" "$BASE_BIN" --config "$work/vp.yaml")
  base_row="| vantage-proxy, BASE_BIN ($BASE_BIN) | $base ($(awk -v a="$base" -v b="$bare" 'BEGIN { printf "%.2f", a / b }') × bare) |"
fi

# Inclusive cost of each gateway phase and of the connection layer's head reading.
phases=$(callgrind_annotate --inclusive=yes "$work/vantage.out.1" 2>/dev/null | awk -v n="$N" '
  { v = $1; gsub(",", "", v) }
  match($0, /ProxyHttp>::[a-z_]+::[{][{]closure[}][}] [[]/) {
    name = substr($0, RSTART + 12, RLENGTH - 12 - 15)
    if (!(name in seen)) { seen[name] = 1; printf "| `%s` | %d |\n", name, v / n }
  }
  match($0, /edge::head::(parse|read_some)[^ ]* [[]/) {
    name = substr($0, RSTART, RLENGTH - 2)
    if (!(name in seen)) { seen[name] = 1; printf "| `%s` | %d |\n", name, v / n }
  }')

report="loadtest/results/instructions-latest.md"
{
  echo "# Instructions per request — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "callgrind, counters zeroed after $WARM requests, then $N requests (oha, 8 connections);"
  echo "one worker each; GET /svc5/items/42 to nginx \`return 200\`."
  echo
  echo "| target | instructions/request |"
  echo "| --- | ---: |"
  echo "| bare Pingora | $bare |"
  echo "| vantage-proxy, 1 tenant / 1 route | $vantage |"
  echo "| ratio | $ratio |"
  echo "| vantage-proxy + usage metering | $metering ($metering_ratio × vantage; $metered requests metered into Postgres) |"
  echo "| vantage-proxy + API key + local limit | $apikey ($apikey_ratio × vantage) |"
  echo "| the same, \`rate_limit_headers: draft\` | $draft ($draft_ratio × vantage) |"
  echo "| vantage-proxy, route split between two origins (90/10) | $split ($split_ratio × vantage) |"
  [ -z "$pingap_row" ] || echo "$pingap_row"
  [ -z "$bare_base_row" ] || echo "$bare_base_row"
  [ -z "$base_row" ] || echo "$base_row"
  echo
  echo "vantage-proxy, inclusive per request (the release profile's fat LTO inlines most phases"
  echo "into their callers; build with CARGO_PROFILE_RELEASE_LTO=thin"
  echo "CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4 to see each, as in docs/benchmark.md):"
  echo
  echo "| function | instructions/request |"
  echo "| --- | ---: |"
  echo "$phases"
} | tee "$report"
