// Config churn: traffic flows through a route while an admin user keeps changing the
// configuration through the admin API (a route of a churn tenant is updated every
// CHURN_INTERVAL seconds). Thresholds: no failed proxied request, latency as in lib.js, and
// every admin write accepted. The proxies pick the changes up through Redis notices.
//   k6 run -e BASE_URL=http://edge:8080 -e ADMIN_URL=http://admin:8081 -e ADMIN_TOKEN=... \
//          -e CHURN_ROUTE_ID=<route uuid> loadtest/k6/config_churn.js
import http from 'k6/http';
import { check, sleep, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { url, headers, RATE, DURATION, VUS, MAX_VUS, P95_MS, P99_MS } from './lib.js';

const PATH = __ENV.PLAIN_PATH || '/status';
const ADMIN = (__ENV.ADMIN_URL || 'http://127.0.0.1:8081').replace(/\/$/, '');
const TOKEN = __ENV.ADMIN_TOKEN || '';
const ROUTE = __ENV.CHURN_ROUTE_ID || '';
const INTERVAL = parseFloat(__ENV.CHURN_INTERVAL || '1');
const writes = new Counter('admin_writes');
const writeFailures = new Counter('admin_write_failures');

export const options = {
  scenarios: {
    traffic: {
      executor: 'constant-arrival-rate', exec: 'traffic', rate: RATE, timeUnit: '1s',
      duration: DURATION, preAllocatedVUs: VUS, maxVUs: MAX_VUS,
    },
    churn: { executor: 'constant-vus', exec: 'churn', vus: 1, duration: DURATION },
  },
  thresholds: {
    'http_req_failed{scenario:traffic}': ['rate==0'],
    'http_req_duration{scenario:traffic}': [`p(95)<${P95_MS}`, `p(99)<${P99_MS}`],
    admin_write_failures: ['count==0'],
    admin_writes: ['count>0'],
  },
};

export function setup() {
  if (!TOKEN || !ROUTE) fail('set -e ADMIN_TOKEN=... and -e CHURN_ROUTE_ID=<a route id to rewrite>');
}

export function traffic() {
  const res = http.get(url(PATH), { headers: headers() });
  check(res, { 'traffic: 200': (r) => r.status === 200 });
}

export function churn() {
  const auth = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' };
  // Flip the route's priority: a real change, a new config version, no effect on traffic.
  const priority = (Math.floor(Date.now() / 1000) % 50) + 1;
  const res = http.patch(`${ADMIN}/api/v1/routes/${ROUTE}`, JSON.stringify({ priority: priority }), { headers: auth });
  writes.add(1);
  if (!check(res, { 'admin: write accepted': (r) => r.status >= 200 && r.status < 300 })) {
    writeFailures.add(1);
  }
  sleep(INTERVAL);
}
