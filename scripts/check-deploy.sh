#!/usr/bin/env bash
# Checks the operator artifacts under deploy/ without a container engine or a running systemd:
#   1. systemd units: `systemd-analyze verify` on the unit files as written, in a throw-away
#      root that holds the units, the distribution's own units (for the default
#      dependencies) and executables at the paths ExecStart=/ExecReload= name: the built
#      binaries when target/ has them, else stand-ins (verify checks that they exist and
#      are executable, not what they do). Any warning counts as a failure.
#      The worker unit keeps its stop timeout above the worker's lease.
#   2. the upgrade helper: `sh -n`; the example proxy configs: `vantage-proxy --check`, the
#      example admin/worker settings: loaded by `vantage-admin` (unknown fields are errors),
#      when built binaries exist; docs/workers.md lists every worker setting.
#   3. compose: `docker-compose config -q` (Debian's docker-compose; needs no engine); the
#      worker service runs `vantage-admin worker`, publishes nothing but on loopback, and
#      listens for metrics where Prometheus scrapes it.
#   4. Prometheus: `promtool check config --syntax-only` (the admin token file exists only
#      in a deployment), `check rules`, `test rules` (Debian's prometheus
#      package ships promtool; set CHECK_DEPLOY_INSTALL=0 to skip installing it).
#   5. Grafana: every JSON file parses (jq) and has panels with PromQL targets, and every
#      target parses as PromQL (promtool, with Grafana's variables filled in).
# Exits non-zero on any failure. Usage: scripts/check-deploy.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
INSTALL=${CHECK_DEPLOY_INSTALL:-1}

failures=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }
skip() { echo "skip $*"; }

need() { # COMMAND PACKAGE: install the Debian package when the command is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  [ "$INSTALL" = 1 ] || return 1
  ensure_packages "$1:$2" >&2 || return 1
  command -v "$1" >/dev/null 2>&1
}

work=$(mktemp -d /tmp/vantage-check-deploy.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- 1. systemd ------------------------------------------------------------------------------
if need systemd-analyze systemd; then
  root="$work/root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/" 2>/dev/null || mkdir -p "$root/usr/lib/systemd/system"
  ln -s usr/lib "$root/lib"
  ln -s usr/bin "$root/bin"
  ln -s usr/sbin "$root/sbin"
  mkdir -p "$root/usr/bin" "$root/usr/sbin"
  cp deploy/systemd/*.service "$root/etc/systemd/system/"
  # Every absolute executable the units run, at its path inside the root.
  for exe in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' deploy/systemd/*.service | sort -u); do
    mkdir -p "$root$(dirname "$exe")"
    case "$exe" in
      */vantage-proxy) src=$(ls target/release/vantage-proxy target/debug/vantage-proxy 2>/dev/null | head -1) ;;
      */vantage-admin) src=$(ls target/release/vantage-admin target/debug/vantage-admin 2>/dev/null | head -1) ;;
      */vantage-proxy-upgrade) src=deploy/systemd/vantage-proxy-upgrade ;;
      *) src=$exe ;;
    esac
    if [ -n "$src" ] && [ -x "$src" ]; then
      cp "$src" "$root$exe"
    else
      printf '#!/bin/sh\n# stand-in for %s (not built)\n' "$exe" >"$root$exe"
      chmod 755 "$root$exe"
    fi
  done
  for unit in deploy/systemd/*.service; do
    name=$(basename "$unit")
    out=$(systemd-analyze verify --root="$root" "$root/etc/systemd/system/$name" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify $name"
    else fail "systemd-analyze verify $name (rc $rc):"; echo "$out" >&2; fi
  done
  # The proxy unit keeps the properties the upgrade procedure in docs/operations.md relies on.
  u=deploy/systemd/vantage-proxy.service
  for line in 'Type=forking' 'PIDFile=/run/vantage-proxy/proxy.pid' 'ExecReload=/bin/kill -HUP $MAINPID' \
              'ProtectSystem=strict' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'ProtectHome=yes' \
              'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' \
              'Restart=on-failure' 'User=vantage'; do
    grep -qxF "$line" "$u" || fail "$u lacks '$line'"
  done
  grep -qxF 'CapabilityBoundingSet=' deploy/systemd/vantage-admin.service || fail "vantage-admin.service must drop every capability"
  # The worker unit: the admin's sandbox and account, restarted whatever the exit, and given
  # longer to stop than a job's lease (SIGTERM lets the jobs in hand finish, up to it).
  u=deploy/systemd/vantage-worker.service
  for line in 'ExecStart=/usr/local/bin/vantage-admin --config /etc/vantage/admin.yaml worker' \
              'EnvironmentFile=-/etc/vantage/admin.env' 'User=vantage' 'Group=vantage' \
              'Restart=always' 'CapabilityBoundingSet=' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
              'ProtectHome=yes' 'PrivateTmp=yes' 'SystemCallFilter=@system-service'; do
    grep -qxF "$line" "$u" || fail "$u lacks '$line'"
  done
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$u")
  lease=$(sed -n '/^worker:/,/^[^ #]/s/^  lease_s: *\([0-9]*\).*/\1/p' deploy/systemd/admin.yaml)
  if [ -n "$stop" ] && [ "$stop" -gt "${lease:-60}" ]; then ok "vantage-worker.service stops within TimeoutStopSec=$stop > lease_s ${lease:-60}"
  else fail "$u: TimeoutStopSec (${stop:-unset}) must be above worker.lease_s (${lease:-60})"; fi
  grep -q '^pid_file: */run/vantage-proxy/proxy.pid\|^  pid_file: /run/vantage-proxy/proxy.pid$' deploy/systemd/proxy.yaml || fail "deploy/systemd/proxy.yaml: pid_file must match the unit's PIDFile"
  grep -q '^  upgrade_sock: /run/vantage-proxy/upgrade.sock$' deploy/systemd/proxy.yaml || fail "deploy/systemd/proxy.yaml: upgrade_sock must be /run/vantage-proxy/upgrade.sock"
else
  fail "systemd-analyze is missing (apt-get install systemd)"
fi

# --- 2. helper script and example configs -----------------------------------------------------
if sh -n deploy/systemd/vantage-proxy-upgrade; then ok "sh -n vantage-proxy-upgrade"; else fail "sh -n vantage-proxy-upgrade"; fi
PROXY_BIN=$(ls target/release/vantage-proxy target/debug/vantage-proxy 2>/dev/null | head -1)
if [ -n "$PROXY_BIN" ]; then
  for f in deploy/systemd/proxy.yaml deploy/compose/proxy.yaml; do
    if "$PROXY_BIN" --config "$f" --check >/dev/null; then ok "vantage-proxy --check $f"; else fail "vantage-proxy --check $f"; fi
  done
  # The compose seed is a tenants/origins/routes file: check it under a file-mode server section.
  { printf 'server: {listen: ["127.0.0.1:1"], redis: {url: "redis://127.0.0.1:1"}}\n'; cat deploy/compose/seed.yaml; } >"$work/seed.yaml"
  if "$PROXY_BIN" --config "$work/seed.yaml" --check >/dev/null; then ok "deploy/compose/seed.yaml validates"; else fail "deploy/compose/seed.yaml does not validate"; fi
else
  skip "vantage-proxy --check on example configs (no built binary under target/)"
fi
ADMIN_BIN=$(ls target/release/vantage-admin target/debug/vantage-admin 2>/dev/null | head -1)
if [ -n "$ADMIN_BIN" ]; then
  # `openapi` needs no database: it only loads the settings (and refuses unknown fields).
  for f in deploy/systemd/admin.yaml deploy/compose/admin.yaml conf/admin.yaml; do
    if out=$(env -u DATABASE_URL -u REDIS_URL "$ADMIN_BIN" --config "$f" openapi 2>&1 >/dev/null); then ok "vantage-admin loads $f"
    else fail "vantage-admin cannot load $f:"; echo "$out" >&2; fi
  done
else
  skip "vantage-admin settings files (no built binary under target/)"
fi

# docs/workers.md documents every worker setting conf/admin.yaml shows.
if out=$(python3 -c '
import sys, yaml
keys = yaml.safe_load(open("conf/admin.yaml"))["worker"].keys()
doc = open("docs/workers.md").read()
missing = [k for k in keys if "| `%s` |" % k not in doc]
assert not missing, "not in the settings table of docs/workers.md: " + ", ".join(missing)
' 2>&1); then ok "docs/workers.md documents every worker setting"
else fail "$out"; fi

# --- 3. compose ------------------------------------------------------------------------------
if need docker-compose docker-compose; then
  if out=$(docker-compose -f deploy/compose.yaml config -q 2>&1); then ok "docker-compose config -q deploy/compose.yaml"
  else fail "docker-compose config deploy/compose.yaml:"; echo "$out" >&2; fi
  for f in $(docker-compose -f deploy/compose.yaml config 2>/dev/null | sed -n 's/^ *source: \(\/.*\)$/\1/p'); do
    [ -e "$f" ] || fail "compose mounts $f, which does not exist"
  done
  for f in deploy/docker/Dockerfile.proxy deploy/docker/Dockerfile.admin .dockerignore; do
    [ -f "$f" ] || fail "$f missing"
  done
  grep -q '^HEALTHCHECK' deploy/docker/Dockerfile.proxy && grep -q '^HEALTHCHECK' deploy/docker/Dockerfile.admin || fail "Dockerfiles need a HEALTHCHECK"
  grep -q '^USER vantage' deploy/docker/Dockerfile.proxy && grep -q '^USER vantage' deploy/docker/Dockerfile.admin || fail "Dockerfiles must run as the vantage user"
  # The worker: runs `vantage-admin worker`, publishes no port beyond loopback (so it can be
  # scaled), and its metrics_listen is the port Prometheus scrapes.
  if out=$(docker-compose -f deploy/compose.yaml config 2>/dev/null | python3 -c '
import sys, yaml
c = yaml.safe_load(sys.stdin)
w = c["services"].get("worker")
assert w, "no worker service"
cmd = " ".join(w.get("entrypoint") or []) + " " + " ".join(w.get("command") or [])
assert "vantage-admin --config /etc/vantage/admin.yaml worker" in cmd, "worker does not run vantage-admin worker: " + cmd
for p in w.get("ports") or []:
    assert str(p).startswith("127.0.0.1:"), "worker publishes %s beyond loopback" % p
assert "/etc/vantage/admin.yaml" in " ".join(str(v) for v in w.get("volumes") or []), "worker lacks the admin settings file"
settings = yaml.safe_load(open("deploy/compose/admin.yaml"))
port = str(settings["worker"]["metrics_listen"]).rsplit(":", 1)[1]
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
assert "vantage-worker" in jobs, "prometheus.yml has no vantage-worker job"
sd = jobs["vantage-worker"].get("dns_sd_configs") or []
ports = {str(d.get("port")) for d in sd} | {t.rsplit(":", 1)[1] for s in jobs["vantage-worker"].get("static_configs") or [] for t in s["targets"]}
assert port in ports, "worker metrics on %s, Prometheus scrapes %s" % (port, sorted(ports))
' 2>&1); then ok "compose worker service and its scrape job"
  else fail "compose worker service: $out"; fi
else
  fail "docker-compose is missing (apt-get install docker-compose)"
fi

# --- 4. Prometheus ---------------------------------------------------------------------------
if need promtool prometheus; then
  (cd deploy/prometheus && promtool check config --syntax-only prometheus.yml >/dev/null) && ok "promtool check config" || fail "promtool check config deploy/prometheus/prometheus.yml"
  promtool check rules deploy/prometheus/alerts.yml >/dev/null && ok "promtool check rules" || fail "promtool check rules deploy/prometheus/alerts.yml"
  (cd deploy/prometheus && promtool test rules alerts.test.yml >/dev/null) && ok "promtool test rules" || fail "promtool test rules deploy/prometheus/alerts.test.yml"
else
  skip "promtool not available (apt-get install prometheus): Prometheus files not checked"
fi

# --- 5. Grafana ------------------------------------------------------------------------------
if need jq jq; then
  n=0
  while IFS= read -r f; do
    n=$((n + 1))
    if ! jq -e '.panels | length > 0' "$f" >/dev/null 2>&1; then fail "$f: not JSON, or no panels"; continue; fi
    empty=$(jq -r '[.panels[] | select(.type != "row") | select((.targets // []) | map(.expr // "") | map(length > 0) | all | not) | .title] | join(", ")' "$f")
    [ -z "$empty" ] && ok "grafana $f" || fail "$f: panels without a PromQL expression: $empty"
    # Each target as PromQL: Grafana's $__interval-like variables as 5m, other variables
    # (instance, tenant) as '.*', checked by promtool as recording rules.
    if command -v promtool >/dev/null 2>&1; then
      rules="$work/$(basename "$f").rules.yml"
      jq -r '[.panels[] | .targets[]? | .expr] | to_entries[]
             | "      - record: dashboard_expr_\(.key)\n        expr: \(.value | gsub("\\$__[a-z_]+"; "5m") | gsub("\\$[a-z_]+"; ".*") | tojson)"' "$f" \
        | { echo "groups:"; echo "  - name: dashboard"; echo "    rules:"; cat; } >"$rules"
      if out=$(promtool check rules "$rules" 2>&1); then ok "grafana $f: every target parses as PromQL"
      else fail "$f: a target is not PromQL:"; echo "$out" >&2; fi
    fi
  done < <(find deploy/grafana -name '*.json')
  [ "$n" -gt 0 ] || fail "no Grafana dashboard JSON under deploy/grafana"
  for f in deploy/grafana/provisioning/*/*.yml; do
    python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f" 2>/dev/null \
      || ruby -ryaml -e 'YAML.load_file(ARGV[0])' "$f" 2>/dev/null \
      || grep -q '^apiVersion: 1$' "$f" || fail "$f: not a Grafana provisioning file"
  done
else
  fail "jq is missing"
fi

if [ "$failures" -gt 0 ]; then
  echo "check-deploy: $failures failure(s)" >&2
  exit 1
fi
echo "check-deploy: all checks passed"
