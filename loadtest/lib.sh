# Shared by the loadtest scripts (sourced after `cd` to the repository root).

# Wait until something listens on 127.0.0.1:$1 (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
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
