#!/usr/bin/env python3
"""The big configuration of the scale runs (stdlib only).

TENANTS tenants `scale<i>`, each with one origin (every target the given upstream), ROUTES
routes per tenant (half `/svc<s>/items/:id` GET-only, half `/svc<s>/*`) and KEYS API keys per
tenant. Key `k` of tenant `i` is the string `scale<i>-key-<k>` (its SHA-256 is stored), so a
benchmark can present a real key.

    bigconfig.py yaml TENANTS ROUTES KEYS UPSTREAM_PORT > config.yaml   (tenants, origins, routes, api_keys)
    bigconfig.py sql  TENANTS ROUTES KEYS UPSTREAM_PORT | psql ...      (the same rows in Postgres)

The YAML is streamed (a million keys never sit in memory); the SQL makes the rows in
Postgres with generate_series and sha256() in one transaction of a few statements.
Default server settings are not written: the caller puts its `server:` section first.
"""
import hashlib
import sys


def key(t, k):
    return f"scale{t}-key-{k}"


def routes_of(t, routes):
    for s in range(routes):
        if s % 2 == 0:
            yield f"scale{t}-r{s}", f"/svc{s // 2}/items/:id", "[GET]"
        else:
            yield f"scale{t}-r{s}", f"/svc{s // 2}/*", "[]"


def yaml(tenants, routes, keys, port):
    w = sys.stdout.write
    w("tenants:\n")
    for t in range(tenants):
        w(f"  - {{id: scale{t}, name: Scale {t}, subdomain: scale{t}}}\n")
    w("origins:\n")
    for t in range(tenants):
        w(f"  - {{id: scale{t}-o, tenant_id: scale{t}, targets: [{{url: \"http://127.0.0.1:{port}\"}}], "
          "circuit_breaker: {enabled: false}}\n")
    w("routes:\n")
    for t in range(tenants):
        for rid, pattern, methods in routes_of(t, routes):
            w(f"  - {{id: {rid}, tenant_id: scale{t}, path_pattern: \"{pattern}\", methods: {methods}, origin_id: scale{t}-o}}\n")
    if keys:
        w("api_keys:\n")
        for t in range(tenants):
            for k in range(keys):
                h = hashlib.sha256(key(t, k).encode()).hexdigest()
                w(f"  - {{id: scale{t}-k{k}, tenant_id: scale{t}, name: k{k}, key_hash: \"{h}\"}}\n")


def sql(tenants, routes, keys, port):
    half = routes // 2
    print(f"""BEGIN;
INSERT INTO tenants (name, subdomain)
  SELECT 'Scale ' || i, 'scale' || i FROM generate_series(0, {tenants - 1}) i;
INSERT INTO origins (tenant_id, targets, timeouts, circuit_breaker, tls)
  SELECT id, '[{{"url": "http://127.0.0.1:{port}", "weight": 1}}]', '{{}}', '{{"enabled": false}}', '{{}}'
    FROM tenants WHERE subdomain LIKE 'scale%';
INSERT INTO routes (tenant_id, origin_id, path_pattern, methods)
  SELECT o.tenant_id, o.id, '/svc' || s || '/items/:id', '{{GET}}'
    FROM origins o JOIN tenants t ON t.id = o.tenant_id AND t.subdomain LIKE 'scale%',
         generate_series(0, {half + routes % 2 - 1}) s;
INSERT INTO routes (tenant_id, origin_id, path_pattern)
  SELECT o.tenant_id, o.id, '/svc' || s || '/*'
    FROM origins o JOIN tenants t ON t.id = o.tenant_id AND t.subdomain LIKE 'scale%',
         generate_series(0, {half - 1}) s;""")
    if keys:
        print(f"""INSERT INTO api_keys (tenant_id, name, key_hash, prefix)
  SELECT t.id, 'k' || k, encode(sha256(convert_to(t.subdomain || '-key-' || k, 'UTF8')), 'hex'), ''
    FROM tenants t, generate_series(0, {keys - 1}) k WHERE t.subdomain LIKE 'scale%';""")
    print("COMMIT;")


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] not in ("yaml", "sql"):
        sys.exit(__doc__)
    mode, t, r, k, port = sys.argv[1], *map(int, sys.argv[2:])
    (yaml if mode == "yaml" else sql)(t, r, k, port)
