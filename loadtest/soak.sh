#!/usr/bin/env bash
# Bounded soak of vantage-proxy: steady open-loop load (oha at fixed rates) for SOAK_SECONDS
# against three routes at once — plain proxying, API-key auth with a local rate limit that
# never refuses, and a cache hit — while the proxy's RSS (/proc/PID/status VmRSS) and open file
# descriptors (/proc/PID/fd) are sampled every SAMPLE_SECONDS.
#
# Verdict (exit 1 on FAIL). The first third of the samples is warm-up (allocator arenas,
# connection pools and the cache fill up) and is ignored. Over the remaining two thirds:
#   memory keeps growing  <=>  least-squares slope of RSS > SOAK_MAX_SLOPE_KIB_MIN KiB/min
#                              AND median RSS of the last third exceeds the median of the
#                              middle third by more than SOAK_MAX_GROWTH_PCT %
#   (both: a slope alone is noisy over short runs, a step alone can be a one-off allocation)
#   fd leak               <=>  fds at the end > 1.5 x the median fds of the middle third + 16
#   errors                <=>  any non-2xx answer or transport error reported by oha
#
# Usage: loadtest/soak.sh     (SOAK_SECONDS=600 SAMPLE_SECONDS=5 RATE=3000 by default)
# Output: loadtest/results/soak-latest.{csv,md,png}
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages nginx:nginx-light jq:jq gnuplot:gnuplot-nox

SOAK_SECONDS=${SOAK_SECONDS:-600}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-5}
RATE=${RATE:-3000}                       # total req/s, split 50% plain, 25% API key, 25% cache hit
SOAK_MAX_SLOPE_KIB_MIN=${SOAK_MAX_SLOPE_KIB_MIN:-512}
SOAK_MAX_GROWTH_PCT=${SOAK_MAX_GROWTH_PCT:-5}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
[ "$SOAK_SECONDS" -ge 30 ] || { echo "SOAK_SECONDS must be at least 30" >&2; exit 2; }

ensure_oha
# VANTAGE_BIN: an already built binary (skips the build), e.g. while the tree does not compile.
if [ -n "${VANTAGE_BIN:-}" ]; then
  BIN=$VANTAGE_BIN
else
  cargo build --release -q -p vantage-proxy
  BIN=target/release/vantage-proxy
fi

start_work soak

UP=18180 VP=18181 OPS=18191

upstream_conf "$work/upstream.conf" "$UP" "$work"
KEY_LINES=$("$BIN" gen-key)
API_KEY=$(echo "$KEY_LINES" | awk '/^key:/ {print $2}')
KEY_HASH=$(echo "$KEY_LINES" | awk '/^key_hash:/ {print $2}')
{
  server_yaml "$VP" "$OPS" soak.local
  cat <<YAML
tenants: [{id: t, name: T, subdomain: t}]
origins: [{id: o, tenant_id: t, targets: [{url: "http://127.0.0.1:$UP"}], circuit_breaker: {enabled: false}}]
routes:
  - {id: plain, tenant_id: t, path_pattern: "/plain/*", origin_id: o}
  - {id: keyed, tenant_id: t, path_pattern: "/keyed/*", origin_id: o, auth: {mode: apikey_required}, rate_limits: [{name: high, algorithm: {type: token_bucket, rate: 1000000, burst: 1000000}, subject: {by: api_key}}]}
  - {id: cached, tenant_id: t, path_pattern: "/cached/*", origin_id: o, cache: {enabled: true, default_ttl_seconds: 3600}}
api_keys: [{id: soak, tenant_id: t, name: soak, key_hash: "$KEY_HASH"}]
YAML
} >"$work/proxy.yaml"
"$BIN" --config "$work/proxy.yaml" --check >&2

taskset -c "$LOAD_CPU" nginx -c "$work/upstream.conf" -p "$work" & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN" --config "$work/proxy.yaml" >"$work/proxy.log" 2>&1 &
VPID=$!; pids+=($VPID)
wait_port $UP; wait_port $VP
H=(-H "Host: t.soak.local")
for path in /plain/a /cached/a; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" "http://127.0.0.1:$VP$path")" = 200 ] || { echo "$path does not answer 200" >&2; exit 1; }
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" -H "X-API-Key: $API_KEY" "http://127.0.0.1:$VP/keyed/a")" = 200 ] || { echo "/keyed does not answer 200" >&2; exit 1; }

echo "soak: ${SOAK_SECONDS}s at $RATE req/s, sampling every ${SAMPLE_SECONDS}s (proxy pid $VPID)" >&2
load() { # name rate path [header]
  local extra=()
  [ -n "${4:-}" ] && extra=(-H "$4")
  taskset -c "$LOAD_CPU" "$OHA" -z "${SOAK_SECONDS}s" -q "$2" -c 16 --latency-correction --no-tui \
    --output-format json "${H[@]}" "${extra[@]}" "http://127.0.0.1:$VP$3" >"$work/oha-$1.json" 2>"$work/oha-$1.err" &
  pids+=($!)
  loaders+=($!)
}
loaders=()
load plain $((RATE / 2)) /plain/items/42
load keyed $((RATE / 4)) /keyed/items/42 "X-API-Key: $API_KEY"
load cached $((RATE / 4)) /cached/items/42

mkdir -p loadtest/results
csv=loadtest/results/soak-latest.csv
echo "elapsed_s,rss_kib,fds,threads" >"$csv"
start=$(date +%s)
while :; do
  now=$(date +%s)
  el=$((now - start))
  [ -r "/proc/$VPID/status" ] || { echo "the proxy died; log:" >&2; tail -20 "$work/proxy.log" >&2; exit 1; }
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$VPID/status")
  thr=$(awk '/^Threads:/ {print $2}' "/proc/$VPID/status")
  fds=$(ls "/proc/$VPID/fd" | wc -l)
  echo "$el,$rss,$fds,$thr" >>"$csv"
  [ "$el" -ge "$SOAK_SECONDS" ] && break
  sleep "$SAMPLE_SECONDS"
done
for p in "${loaders[@]}"; do wait "$p" || true; done

# --- verdict -----------------------------------------------------------------------------------
read -r slope med_mid med_last growth fd_mid fd_end n_used < <(awk -F, 'NR > 1 { t[n] = $1; r[n] = $2; f[n] = $3; n++ }
  function median(a, lo, hi,   m, i, j, k, tmp, b) {
    m = 0; for (i = lo; i < hi; i++) b[m++] = a[i]
    for (i = 1; i < m; i++) { tmp = b[i]; for (j = i - 1; j >= 0 && b[j] > tmp; j--) b[j + 1] = b[j]; b[j + 1] = tmp }
    return (m % 2) ? b[int(m / 2)] : (b[m / 2 - 1] + b[m / 2]) / 2
  }
  END {
    s = int(n / 3); u = n - s; mid = s + int(u / 2)
    for (i = s; i < n; i++) { sx += t[i]; sy += r[i] }
    mx = sx / u; my = sy / u
    for (i = s; i < n; i++) { sxy += (t[i] - mx) * (r[i] - my); sxx += (t[i] - mx) ^ 2 }
    slope = (sxx > 0) ? sxy / sxx * 60 : 0
    a = median(r, s, mid); b = median(r, mid, n)
    printf "%.1f %d %d %.2f %d %d %d\n", slope, a, b, (a > 0 ? (b - a) / a * 100 : 0), median(f, s, mid), f[n - 1], u
  }' "$csv")

total=0 bad=0
declare -A p50 p99 rps okc
for name in plain keyed cached; do
  j="$work/oha-$name.json"
  okc[$name]=$(jq '[.statusCodeDistribution | to_entries[] | select(.key | startswith("2")) | .value] | add // 0' "$j")
  all=$(jq '([.statusCodeDistribution[]] | add // 0) + ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)' "$j")
  total=$((total + all)); bad=$((bad + all - okc[$name]))
  p50[$name]=$(jq -r '.latencyPercentiles.p50 * 1000 | . * 1000 | round / 1000' "$j")
  p99[$name]=$(jq -r '.latencyPercentiles.p99 * 1000 | . * 1000 | round / 1000' "$j")
  rps[$name]=$(jq -r '.summary.requestsPerSec | round' "$j")
done

verdict=PASS reasons=()
mem_growing=$(awk -v s="$slope" -v g="$growth" -v ms="$SOAK_MAX_SLOPE_KIB_MIN" -v mg="$SOAK_MAX_GROWTH_PCT" 'BEGIN { print (s > ms && g > mg) ? 1 : 0 }')
[ "$mem_growing" = 1 ] && { verdict=FAIL; reasons+=("memory keeps growing: ${slope} KiB/min and +${growth}% (last third vs middle third)"); }
awk -v e="$fd_end" -v m="$fd_mid" 'BEGIN { exit !(e > 1.5 * m + 16) }' && { verdict=FAIL; reasons+=("fd count grew from $fd_mid to $fd_end"); }
[ "$bad" -gt 0 ] && { verdict=FAIL; reasons+=("$bad of $total requests failed"); }

# --- plot and report -----------------------------------------------------------------------------
png=loadtest/results/soak-latest.png
gnuplot <<GP || echo "gnuplot failed: no plot" >&2
set terminal pngcairo size 1000,500 font ",10"
set output "$png"
set datafile separator ","
set title "vantage-proxy soak: ${SOAK_SECONDS}s at ${RATE} req/s ($(date -u +%Y-%m-%d))"
set xlabel "elapsed (s)"
set ylabel "RSS (MiB)"
set y2label "open fds"
set y2tics
set ytics nomirror
set grid
set key top left
plot "$csv" using 1:(\$2/1024) skip 1 with lines lw 2 title "RSS (MiB)", \
     "$csv" using 1:3 skip 1 axes x1y2 with lines lw 1 title "open fds"
GP

first=$(awk -F, 'NR == 2 {print $2}' "$csv"); last=$(tail -1 "$csv" | cut -d, -f2)
max=$(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m}' "$csv")
md=loadtest/results/soak-latest.md
{
  echo "# Soak — $(date -u +%Y-%m-%dT%H:%MZ): $verdict"
  echo
  echo "vantage-proxy (release, one worker, CPU $PROXY_CPU) in front of nginx \`return 200\` (CPU $LOAD_CPU);"
  echo "oha open loop, latency-corrected, ${SOAK_SECONDS}s: $((RATE / 2)) req/s plain proxying, $((RATE / 4)) req/s API key + local"
  echo "rate limit (never refusing), $((RATE / 4)) req/s cache hits. Sampled every ${SAMPLE_SECONDS}s: [CSV](soak-latest.csv), ![plot](soak-latest.png)"
  echo
  echo "| stream | req/s | 2xx | p50 ms | p99 ms |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for name in plain keyed cached; do echo "| $name | ${rps[$name]} | ${okc[$name]} | ${p50[$name]} | ${p99[$name]} |"; done
  echo
  echo "| measure | value |"
  echo "| --- | ---: |"
  echo "| RSS first / last / max sample | $((first / 1024)) / $((last / 1024)) / $((max / 1024)) MiB |"
  echo "| RSS slope after warm-up (least squares, last 2/3 of samples) | $slope KiB/min (limit $SOAK_MAX_SLOPE_KIB_MIN) |"
  echo "| median RSS, middle third → last third | $((med_mid / 1024)) → $((med_last / 1024)) MiB (${growth}%, limit ${SOAK_MAX_GROWTH_PCT}%) |"
  echo "| open fds, middle-third median → end | $fd_mid → $fd_end |"
  echo "| failed requests | $bad of $total |"
  echo
  echo "Rule: the first third of the samples is warm-up. FAIL when memory keeps growing — the RSS"
  echo "slope over the last two thirds is above the limit **and** the median RSS of the last third"
  echo "is more than ${SOAK_MAX_GROWTH_PCT}% above the middle third's — or when fds grow past 1.5× + 16, or any request fails."
  if [ ${#reasons[@]} -gt 0 ]; then echo; for r in "${reasons[@]}"; do echo "- $r"; done; fi
} | tee "$md"
[ "$verdict" = PASS ]
