# Installs what building and testing VantageEdge needs on a fresh Debian machine.
# Sourced by scripts/demo.sh, scripts/test.sh and loadtest/bench.sh; installs only what is
# missing. Extra needs are given as COMMAND:PACKAGE pairs, e.g. `ensure_packages wrk:wrk`.

ensure_packages() {
  local need=()
  local pair
  for pair in cmake:cmake pkg-config:pkg-config curl:curl openssl:openssl cc:build-essential "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  [ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
  [ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
  [ ${#need[@]} -eq 0 ] && return 0
  echo "installing: ${need[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

# Postgres on 127.0.0.1:5432 where user postgres connects without a password (the admin
# tests and the control-plane quick start in docs/control-plane.md). Installs Debian's postgresql when missing, starts
# the cluster when it is not accepting connections, and adds a trust line for
# postgres@127.0.0.1 when a fresh install refuses it. A server that already works is left
# alone; nothing is ever stopped.
ensure_postgres() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  _pg_ok() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }
  if command -v psql >/dev/null 2>&1 && _pg_ok; then return 0; fi
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing: postgresql" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  fi
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    $sudo pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  fi
  local i
  for i in $(seq 1 50); do _pg_ok && return 0; sleep 0.2; done
  # Running but refusing us: trust postgres on loopback (first lines win), then reload.
  local hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if ! $sudo grep -qE '^host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    echo "pg_hba.conf: trusting user postgres on 127.0.0.1 (tests)" >&2
    $sudo sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  fi
  $sudo pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  for i in $(seq 1 50); do _pg_ok && return 0; sleep 0.2; done
  echo "Postgres is not usable on 127.0.0.1:5432 as user postgres" >&2
  return 1
}

# Redis on 127.0.0.1:6379 (started as a daemon without persistence when nothing answers).
ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return 0; fi
  command -v redis-server >/dev/null 2>&1 || ensure_packages redis-server:redis-server
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
  local i
  for i in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  echo "Redis did not come up on 127.0.0.1:6379" >&2
  return 1
}
