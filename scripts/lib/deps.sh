# Installs what building and testing VantageEdge needs on a fresh Debian machine.
# Sourced by scripts/demo.sh and scripts/test.sh; installs nothing that is already there.

ensure_packages() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v cc >/dev/null 2>&1 || missing+=(build-essential)
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  [ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  missing+=("$@")
  local need=()
  for p in "${missing[@]}"; do
    case "$p" in
      cmake|pkg-config|curl|openssl|build-essential|libssl-dev|zlib1g-dev) need+=("$p") ;;
      *) dpkg -s "$p" >/dev/null 2>&1 || need+=("$p") ;;
    esac
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "installing: ${need[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}
