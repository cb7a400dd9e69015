// Cache hits: GET one URL of a caching route; after the first MISS every answer must be a HIT.
// Threshold: at least CACHE_HIT_RATIO (default 0.99) of the answers have X-Cache: HIT.
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { openLoop, url, headers, expectStatus, RATE } from './lib.js';

const PATH = __ENV.CACHE_PATH || '/catalog/items/42';
const MIN_HIT = parseFloat(__ENV.CACHE_HIT_RATIO || '0.99');
const hits = new Rate('cache_hits');
export const options = openLoop(RATE, { cache_hits: [`rate>${MIN_HIT}`] });

export function setup() {
  // Fill the cache once.
  http.get(url(PATH), { headers: headers() });
}

export default function () {
  const res = http.get(url(PATH), { headers: headers(), tags: { scenario_kind: 'cache' } });
  expectStatus(res, 200, 'cache');
  const hit = res.headers['X-Cache'] === 'HIT';
  hits.add(hit);
  check(res, { 'cache: has X-Cache': (r) => !!r.headers['X-Cache'] });
}
