# Shared by the loadtest scripts (sourced after `cd` to the repository root).

# Wait until something listens on 127.0.0.1:$1 ($2 tries 50 ms apart; 10 s by default).
wait_port() {
  for _ in $(seq 1 "${2:-200}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  return 1
}

# The benchmark upstream: nginx answering `{"ok":true}` (12 bytes) on 127.0.0.1:$2, with its
# pid and error log under $3. Writes the config to $1; run it with `nginx -c $1 -p $3`.
upstream_conf() {
  cat >"$1" <<NGX
worker_processes 1;
daemon off;
pid $3/upstream.pid;
error_log $3/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$2;
    location / { default_type application/json; return 200 '{"ok":true}\\n'; }
  }
}
NGX
}

# Sets OHA to the oha binary, installing it from crates.io the first time.
ensure_oha() {
  if ! command -v oha >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/oha" ]; then
    echo "installing oha from crates.io (a few minutes, once)" >&2
    cargo install oha --locked >/dev/null
  fi
  OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
}

# pingap 0.13.1, the nearest Pingora-based peer (a reference of bench.sh): installed from
# crates.io once (its build needs protoc; ~20 minutes on two cores). Sets PINGAP.
ensure_pingap() {
  if ! command -v pingap >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/pingap" ]; then
    ensure_packages protoc:protobuf-compiler
    echo "installing pingap 0.13.1 from crates.io (a long build, once)" >&2
    cargo install pingap --version 0.13.1 --locked >/dev/null
  fi
  PINGAP=$(command -v pingap || echo "$HOME/.cargo/bin/pingap")
}

# Is pingap installed (without installing it)? Sets PINGAP when it is.
pingap_installed() {
  PINGAP=$(command -v pingap || echo "$HOME/.cargo/bin/pingap")
  [ -x "$PINGAP" ]
}

# A fleet proxy's configuration on stdout: number $1, listener $2, ops $3, base domain $4,
# reading Postgres ($DATABASE_URL; $5 adds settings to server.postgres, e.g. "timeout_ms: 5000,
# ") and Redis ($REDIS_URL) with notices signed by $SECRET; files in $work.
fleet_proxy_yaml() {
  cat <<YAML
server:
  listen: ["127.0.0.1:$2"]
  ops_listen: "127.0.0.1:$3"
  threads: 1
  base_domains: [$4]
  access_log: false
  pid_file: $work/p$1.pid
  upgrade_sock: $work/p$1.sock
  source: postgres
  postgres: {url: "$DATABASE_URL", poll_interval_ms: 1000, ${5:-}last_good_file: "$work/last-good-$1.json", notify_secret: "$SECRET", request_logs: {enabled: false}}
  redis: {url: "$REDIS_URL", key_prefix: vantage, timeout_ms: 50}
YAML
}

# pingap's configuration in $1: one worker, one location on 127.0.0.1:$2 proxying to the
# upstream on 127.0.0.1:$3.
pingap_conf() {
  cat >"$1" <<EOF
[basic]
threads = 1

[upstreams.up]
addrs = ["127.0.0.1:$3"]

[locations.lo]
upstream = "up"

[servers.s]
addr = "127.0.0.1:$2"
locations = ["lo"]
EOF
}

# An RS256 key pair in $1/jwt.key and $1/jwt.pub, and in JWT a token signed with it for
# subject $2 and issuer https://issuer.$2, valid for a day.
mint_jwt() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/jwt.key" 2>/dev/null
  openssl pkey -in "$1/jwt.key" -pubout -out "$1/jwt.pub"
  local head body sig
  head=$(printf '{"alg":"RS256","typ":"JWT"}' | _b64url)
  body=$(printf '{"sub":"%s","iss":"https://issuer.%s","exp":%s}' "$2" "$2" $(( $(date +%s) + 86400 )) | _b64url)
  sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -sign "$1/jwt.key" -binary | _b64url)
  JWT="$head.$body.$sig"
}
_b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# A fresh work directory in $work (readable by nginx's unprivileged workers), the array
# $pids of processes to stop, and an exit trap that stops them and removes the directory.
start_work() {
  work=$(mktemp -d "/tmp/vantage-$1.XXXXXX")
  chmod 755 "$work"
  pids=()
  trap _stop_work EXIT
}

_stop_work() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

# The server section of a benchmark proxy: listener port $1, ops port $2, base domain $3
# (default bench.local); one worker, no access log, files in $work.
server_yaml() {
  cat <<EOF
server:
  listen: ["127.0.0.1:$1"]
  ops_listen: "127.0.0.1:$2"
  threads: 1
  base_domains: [${3:-bench.local}]
  access_log: false
  watch_config: false
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  pid_file: $work/vp-$1.pid
  upgrade_sock: $work/vp-$1.sock
EOF
}

# A loopback port free now (for the scripts' own servers).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The control plane of a fleet benchmark, with $BIN's binaries: database $DB created and
# migrated, a private redis-server, `vantage-admin serve` and a demo origin named $1, each
# on a free port, their pids in pids[]; sets DATABASE_URL, REDIS, REDIS_URL, ADMIN, ORIGIN
# and TOKEN (a superadmin's), exports VANTAGE_NOTIFY_SECRET=$SECRET, and defines
# `api METHOD PATH [BODY]` for the admin API.
start_control_plane() {
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
  REDIS=$(free_port); ADMIN=$(free_port); ORIGIN=$(free_port)
  redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$REDIS" VANTAGE_NOTIFY_SECRET="$SECRET"
  "$BIN/vantage-admin" migrate >"$work/migrate.log" 2>&1
  TOKEN=$("$BIN/vantage-admin" create-token --role superadmin --name bench 2>/dev/null | awk 'length($0) >= 20 {print $NF}' | tail -1)
  "$BIN/vantage-admin" serve --listen "127.0.0.1:$ADMIN" >"$work/admin.log" 2>&1 & pids+=($!)
  "$BIN/vantage-proxy" demo-origin --listen "127.0.0.1:$ORIGIN" --name "$1" >/dev/null 2>&1 & pids+=($!)
  wait_port "$REDIS"; wait_port "$ADMIN"; wait_port "$ORIGIN"
  api() { curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "http://127.0.0.1:$ADMIN$2" ${3:+-d "$3"}; }
}
