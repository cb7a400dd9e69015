#!/usr/bin/env bash
# RFC 9111 conformance of the response cache: runs the public http-cache-tests suite
# (cache-tests.fyi, npm package http-cache-tests 0.4.5) against vantage-proxy with a route that
# caches everything as a shared cache and forwards every method. Fails when fewer than
# MIN_PASS scored tests pass. With --nginx, runs the same suite against nginx's proxy_cache
# in the same invocation and prints both counts.
#
# Usage: scripts/cache-conformance.sh [--nginx] [--failures]
# Env:   VANTAGE_BIN (default target/debug/vantage-proxy, built if missing), MIN_PASS (200).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_packages node:nodejs npm:npm

WITH_NGINX=0
FAILURES=""
for a in "$@"; do
  case "$a" in
    --nginx) WITH_NGINX=1 ;;
    --failures) FAILURES="--failures" ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
[ "$WITH_NGINX" = 1 ] && ensure_packages nginx:nginx-light

MIN_PASS="${MIN_PASS:-200}"
BIN="${VANTAGE_BIN:-target/debug/vantage-proxy}"
[ -x "$BIN" ] || cargo build -q -p vantage-proxy
ROOT="$PWD"
SUITE_HOME="$ROOT/target/http-cache-tests"
SUITE="$SUITE_HOME/node_modules/http-cache-tests"
if [ ! -f "$SUITE/package.json" ] || ! grep -q '"version": "0.4.5"' "$SUITE/package.json"; then
  mkdir -p "$SUITE_HOME"
  (cd "$SUITE_HOME" && npm install --silent --no-audit --no-fund --prefix . http-cache-tests@0.4.5 >/dev/null)
fi

WORK="$(mktemp -d /tmp/vantage-cache-conformance.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# The suite's origin server.
ORIGIN_PORT="$(free_port)"
(cd "$SUITE" && npm_config_port="$ORIGIN_PORT" npm_package_config_protocol=http \
  npm_config_pidfile="$WORK/origin.pid" exec node server/server.mjs) >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

run_suite() { # base-url results-file
  (cd "$SUITE" && env -u npm_config_id npm_package_config_id= npm_config_base="$1" \
    node --no-warnings cli.mjs) >"$2" 2>"$2.err"
}

PROXY_PORT="$(free_port)"
OPS_PORT="$(free_port)"
cat >"$WORK/proxy.yaml" <<YAML
server:
  listen: ["127.0.0.1:$PROXY_PORT"]
  ops_listen: "127.0.0.1:$OPS_PORT"
  base_domains: [conformance.test]
  pid_file: $WORK/proxy.pid
  upgrade_sock: $WORK/upgrade.sock
  watch_config: false
  access_log: false
  forwarded_headers: false
tenants:
  - {id: conformance, name: Conformance, subdomain: suite, custom_hosts: ["127.0.0.1"]}
origins:
  - {id: suite, tenant_id: conformance, preserve_host: true, health_check: null, circuit_breaker: {enabled: false}, targets: [{url: "http://127.0.0.1:$ORIGIN_PORT"}]}
routes:
  # Every method is forwarded; GET and HEAD are cached by RFC 9111 rules, as a shared cache.
  - id: everything
    tenant_id: conformance
    path_pattern: /*
    origin_id: suite
    cache:
      enabled: true
      statuses: [200, 203, 204, 299, 300, 301, 302, 303, 307, 308, 400, 404, 405, 410, 414, 500, 501, 502, 503, 504, 599]
YAML
"$BIN" --config "$WORK/proxy.yaml" >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
wait_port "$PROXY_PORT"
run_suite "http://127.0.0.1:$PROXY_PORT" "$WORK/vantage.json"
OURS="$(node scripts/lib/cache-score.mjs "$SUITE" "$WORK/vantage.json" $FAILURES)"
echo "vantage-proxy: $OURS"

if [ "$WITH_NGINX" = 1 ]; then
  NGINX_PORT="$(free_port)"
  # nginx's workers run as an unprivileged user when started as root.
  mkdir -p "$WORK/nginx-cache" "$WORK/nginx-temp"
  chmod 755 "$WORK"
  chmod 777 "$WORK/nginx-cache" "$WORK/nginx-temp"
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 256; }
http {
  access_log off;
  proxy_temp_path $WORK/nginx-temp;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=suite:10m;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN_PORT;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_cache suite;
      proxy_cache_revalidate on;
    }
  }
}
NGINX
  nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"
  wait_port "$NGINX_PORT"
  run_suite "http://127.0.0.1:$NGINX_PORT" "$WORK/nginx.json"
  echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'): $(node scripts/lib/cache-score.mjs "$SUITE" "$WORK/nginx.json")"
fi

PASSED="$(echo "$OURS" | sed 's/.*"passed":\([0-9]*\).*/\1/')"
if [ "$PASSED" -lt "$MIN_PASS" ]; then
  echo "cache conformance: $PASSED scored tests passed, fewer than $MIN_PASS" >&2
  exit 1
fi
echo "cache conformance: $PASSED scored tests passed (minimum $MIN_PASS)"
