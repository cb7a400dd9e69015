#!/usr/bin/env bash
# Decision-service benchmark: decisions per second per core and latency, for the JSON
# endpoint and Envoy's gRPC rate-limit API, with the counters in the proxy (a plan's quota,
# local) and in Redis (the fleet's). The proxy runs alone on CPU 0; the load generator
# (loadtest/decision-load, closed loop) and Redis on CPU 1. "per core" is decisions divided
# by the CPU seconds the proxy process used, so it does not depend on whether the client
# saturated it.
#
# Usage: loadtest/decision.sh            (ROUNDS=2 DURATION=10 CONC=32 by default)
# Output: a Markdown report on stdout and in loadtest/results/decision-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. loadtest/lib.sh
ensure_packages jq:jq redis-server:redis-server

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
CONC=${CONC:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
TOKEN=decision-bench-token-0123456789

cargo build --release -q -p vantage-proxy -p decision-load
BIN=target/release
start_work decision

LOCAL=18201 REDISD=18202 REDIS=18203
KEY_LINES=$("$BIN/vantage-proxy" gen-key)
API_KEY=$(echo "$KEY_LINES" | awk '/^key:/ {print $2}')
KEY_HASH=$(echo "$KEY_LINES" | awk '/^key_hash:/ {print $2}')
config() { # decision port, proxy port, ops port, [server extra]
  server_yaml "$2" "$3"
  echo "  decision: {listen: \"127.0.0.1:$1\", token: \"$TOKEN\"}"
  [ -n "${4:-}" ] && echo "$4"
  cat <<YAML
tenants: [{id: t, name: T, subdomain: t}]
plans: [{id: p, tenant_id: t, name: pro, quotas: [{name: monthly, limit: 1000000000000, period: month}]}]
api_keys: [{id: k, tenant_id: t, name: bench, key_hash: "$KEY_HASH", plan_id: p}]
YAML
}
config $LOCAL 18211 18221 >"$work/local.yaml"
config $REDISD 18212 18222 "  redis: {url: \"redis://127.0.0.1:$REDIS\", timeout_ms: 50}" >"$work/redis.yaml"
for f in local redis; do "$BIN/vantage-proxy" --config "$work/$f.yaml" --check >&2; done

taskset -c "$LOAD_CPU" redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/local.yaml" >"$work/local.log" 2>&1 & pids+=($!)
taskset -c "$PROXY_CPU" "$BIN/vantage-proxy" --config "$work/redis.yaml" >"$work/redis-proxy.log" 2>&1 & pids+=($!)
for p in $REDIS $LOCAL $REDISD; do wait_port "$p"; done
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:18222/readyz" | grep -q '"redis":"connected"' && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
names=("JSON, local counters" "gRPC, local counters" "JSON, Redis counters" "gRPC, Redis counters")
modes=(json grpc json grpc)
ports=($LOCAL $LOCAL $REDISD $REDISD)
procs=("${pids[1]}" "${pids[1]}" "${pids[2]}" "${pids[2]}")
declare -A calls ticks p50 p99 errs
for i in "${!names[@]}"; do calls[$i]=0; ticks[$i]=0; p50[$i]=0; p99[$i]=0; errs[$i]=0; done
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!names[@]}"; do
    taskset -c "$LOAD_CPU" "$BIN/decision-load" "${modes[$i]}" "127.0.0.1:${ports[$i]}" "$TOKEN" "$API_KEY" 1 "$CONC" >/dev/null
    before=$(cpu_ticks "${procs[$i]}")
    out=$(taskset -c "$LOAD_CPU" "$BIN/decision-load" "${modes[$i]}" "127.0.0.1:${ports[$i]}" "$TOKEN" "$API_KEY" "$DURATION" "$CONC")
    after=$(cpu_ticks "${procs[$i]}")
    calls[$i]=$((calls[$i] + $(echo "$out" | jq .calls)))
    errs[$i]=$((errs[$i] + $(echo "$out" | jq '.errors + .refused')))
    ticks[$i]=$((ticks[$i] + after - before))
    # Percentiles: the last round's (rounds agree to a few per cent).
    p50[$i]=$(echo "$out" | jq '.p50_ms * 1000 | round / 1000')
    p99[$i]=$(echo "$out" | jq '.p99_ms * 1000 | round / 1000')
    echo "round $round ${names[$i]}: $out" >&2
  done
done

report=loadtest/results/decision-latest.md
mkdir -p loadtest/results
{
  echo "# Decision service — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) vCPU ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)). Proxy (one"
  echo "worker) on CPU $PROXY_CPU; decision-load ($CONC concurrent calls, closed loop) and Redis on CPU $LOAD_CPU;"
  echo "$ROUNDS rounds × ${DURATION}s. Each call: one API key, its plan's monthly quota, cost 1."
  echo
  echo "| target | decisions/s | decisions per CPU-second of the proxy | p50 ms | p99 ms | errors or refusals |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for i in "${!names[@]}"; do
    awk -v n="${calls[$i]}" -v t="${ticks[$i]}" -v hz="$HZ" -v s=$((ROUNDS * DURATION)) \
      -v l="${names[$i]}" -v a="${p50[$i]}" -v b="${p99[$i]}" -v e="${errs[$i]}" \
      'BEGIN { printf "| %s | %.0f | %.0f | %s | %s | %d |\n", l, n / s, (t > 0 ? n / (t / hz) : 0), a, b, e }'
  done
  echo
  echo "The load generator shares its core with Redis; where the proxy's core is not saturated,"
  echo "decisions/s is the client's limit and \"per CPU-second\" the figure to compare."
} | tee "$report"
