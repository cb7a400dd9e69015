#!/usr/bin/env python3
"""Config propagation benchmark driver (stdlib only; started by loadtest/propagation.sh).

For each of N changes: POST a new route to the admin API, take the time of its 2xx, then
poll every proxy of the fleet until it serves the new route; the propagation time of the
change is when the last proxy served it. Reports p50/p99/max in milliseconds as JSON, and
the admin's answer time (p50/p99).
"""
import http.client
import json
import sys
import threading
import time

admin_port, token, tenant, origin_id, changes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
proxy_ports = [int(p) for p in sys.argv[6].split(",")]
host = sys.argv[7]
# Pause between changes, in ms (optional 8th argument): a proxy reloads at most once per
# `min_reload_interval_ms` for announcements, so back-to-back changes measure that guard.
pause = float(sys.argv[8]) / 1000 if len(sys.argv) > 8 else 0.0


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = {"Host": host} if headers is None else headers
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h = dict(h, **{"Content-Type": "application/json"})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    payload = r.read()
    c.close()
    return r.status, payload


def serves(port, path):
    try:
        status, _ = call(port, "GET", path)
        return status == 200
    except OSError:
        return False


results = []
admin_ms = []
failures = 0
for i in range(changes):
    time.sleep(pause)
    path = f"/prop{i}-{int(time.time() * 1000)}"
    sent = time.perf_counter()
    status, payload = call(int(admin_port), "POST", "/api/v1/routes",
                           {"tenant_id": tenant, "path_pattern": path, "origin_id": origin_id},
                           {"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    admin_ms.append((t0 - sent) * 1000)
    if status != 201:
        print(f"admin answered {status}: {payload[:200]!r}", file=sys.stderr)
        failures += 1
        continue
    done = {}

    def wait(port):
        deadline = t0 + 10
        while time.perf_counter() < deadline:
            if serves(port, path):
                done[port] = time.perf_counter() - t0
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=wait, args=(p,)) for p in proxy_ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(done) != len(proxy_ports):
        failures += 1
        continue
    results.append(max(done.values()) * 1000)

results.sort()
admin_ms.sort()


def pct(q, xs=results):
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


print(json.dumps({"changes": changes, "measured": len(results), "failures": failures,
                  "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                  "max_ms": round(results[-1], 2) if results else None,
                  "admin_p50_ms": pct(0.50, admin_ms), "admin_p99_ms": pct(0.99, admin_ms)}))
