// Rate-limit refusals: drive a limited route above its limit. Every answer must be either 200
// or the gateway's 429 `rate_limited` with Retry-After; the share of 429s must be near what
// the limit implies: 1 - LIMIT_RPS / RATE (within LIMIT_TOLERANCE, default 0.1).
//   k6 run -e RL_PATH=/api/orders/1 -e API_KEY=... -e RATE=50 -e LIMIT_RPS=5 loadtest/k6/ratelimit.js
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { openLoop, url, headers, isGatewayError, RATE } from './lib.js';

const PATH = __ENV.RL_PATH || '/api/orders/1';
const KEY = __ENV.API_KEY || 'vk_live_demo_acme_key_do_not_use_in_prod';
const LIMIT = parseFloat(__ENV.LIMIT_RPS || '5');
const TOL = parseFloat(__ENV.LIMIT_TOLERANCE || '0.1');
const expected = Math.max(0, 1 - LIMIT / RATE);
const limited = new Rate('ratelimit_refused');
http.setResponseCallback(http.expectedStatuses(200, 429));
export const options = openLoop(RATE, {
  ratelimit_refused: [`rate>${Math.max(0, expected - TOL)}`, `rate<${Math.min(1, expected + TOL)}`],
});

export default function () {
  const h = KEY ? { 'X-API-Key': KEY } : {};
  const res = http.get(url(PATH), { headers: headers(h), tags: { scenario_kind: 'ratelimit' } });
  limited.add(res.status === 429);
  check(res, {
    'ratelimit: 200 or 429': (r) => r.status === 200 || r.status === 429,
    'ratelimit: 429 is rate_limited with Retry-After': (r) =>
      r.status !== 429 || (isGatewayError(r, 'rate_limited') && !!r.headers['Retry-After']),
  });
}
