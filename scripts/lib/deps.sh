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
