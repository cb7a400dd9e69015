// API-key authentication: every request carries API_KEY (X-API-Key). Also sends a share of
// requests without a key (BAD_KEY_SHARE, default 0.05), which must be refused with 401
// `unauthorized` — those are expected answers, not errors.
//   k6 run -e API_KEY=vk_live_... -e APIKEY_PATH=/api/orders/1 loadtest/k6/apikey.js
import http from 'k6/http';
import { check } from 'k6';
import { openLoop, url, headers, isGatewayError, RATE } from './lib.js';

const PATH = __ENV.APIKEY_PATH || '/api/orders/1';
const KEY = __ENV.API_KEY || 'vk_live_demo_acme_key_do_not_use_in_prod';
const BAD_SHARE = parseFloat(__ENV.BAD_KEY_SHARE || '0.05');
// 401s are expected here: count only 5xx and transport errors as failures.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 499 }));
export const options = openLoop(RATE);

export default function () {
  if (Math.random() < BAD_SHARE) {
    const res = http.get(url(PATH), { headers: headers(), tags: { scenario_kind: 'apikey_missing' } });
    check(res, { 'apikey: no key -> 401 unauthorized': (r) => r.status === 401 && isGatewayError(r, 'unauthorized') });
    return;
  }
  const res = http.get(url(PATH), { headers: headers({ 'X-API-Key': KEY }), tags: { scenario_kind: 'apikey' } });
  // A per-key limit of the route may answer 429 at high rates: set RATE under it.
  check(res, { 'apikey: 200': (r) => r.status === 200 });
}
