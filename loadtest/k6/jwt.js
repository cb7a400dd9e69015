// JWT authentication: every request carries `Authorization: Bearer $JWT` on a route with
// `auth: {mode: jwt_required}`. Mint the token with the issuer's private key, e.g. as
// loadtest/matrix.sh does (openssl, RS256), and pass it in:
//   k6 run -e JWT=eyJ... -e JWT_PATH=/secure/items/1 loadtest/k6/jwt.js
import http from 'k6/http';
import { check, fail } from 'k6';
import { openLoop, url, headers, isGatewayError, RATE } from './lib.js';

const PATH = __ENV.JWT_PATH || '/secure/items/1';
const JWT = __ENV.JWT || '';
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 499 }));
export const options = openLoop(RATE);

export function setup() {
  if (!JWT) fail('set -e JWT=<a token the tenant\'s jwt_issuers accept>');
}

export default function () {
  const res = http.get(url(PATH), { headers: headers({ Authorization: `Bearer ${JWT}` }), tags: { scenario_kind: 'jwt' } });
  check(res, { 'jwt: 200': (r) => r.status === 200 });
  if (Math.random() < 0.01) {
    const bad = http.get(url(PATH), { headers: headers({ Authorization: 'Bearer not.a.jwt' }) });
    check(bad, { 'jwt: bad token -> 401': (r) => r.status === 401 && isGatewayError(r, 'unauthorized') });
  }
}
