// Plain proxying: GET PLAIN_PATH through the gateway, every answer 200.
//   k6 run -e BASE_URL=http://edge:8080 -e TENANT_HOST=acme.vantage.localhost loadtest/k6/plain.js
import http from 'k6/http';
import { openLoop, url, headers, expectStatus, RATE } from './lib.js';

const PATH = __ENV.PLAIN_PATH || '/status';
export const options = openLoop(RATE);

export default function () {
  const res = http.get(url(PATH), { headers: headers(), tags: { scenario_kind: 'plain' } });
  expectStatus(res, 200, 'plain');
}
