// Shared settings of the VantageEdge k6 scenarios. Everything comes from environment
// variables (k6 run -e NAME=value ...), so the scripts point at any deployment.
import { check } from 'k6';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
// Host header that selects the tenant: <subdomain>.<base domain> or a custom host.
export const TENANT_HOST = __ENV.TENANT_HOST || 'acme.vantage.localhost';
export const RATE = parseInt(__ENV.RATE || '200', 10); // requests per second (open loop)
export const DURATION = __ENV.DURATION || '1m';
export const VUS = parseInt(__ENV.VUS || '50', 10); // pre-allocated virtual users
export const MAX_VUS = parseInt(__ENV.MAX_VUS || String(VUS * 4), 10);
export const P99_MS = parseInt(__ENV.P99_MS || '250', 10);
export const P95_MS = parseInt(__ENV.P95_MS || '100', 10);
export const MAX_ERROR_RATE = parseFloat(__ENV.MAX_ERROR_RATE || '0.01');

// One constant-arrival-rate scenario (open loop: latency is not hidden by back-pressure).
export function openLoop(rate, extraThresholds) {
  return {
    scenarios: {
      main: {
        executor: 'constant-arrival-rate',
        rate: rate,
        timeUnit: '1s',
        duration: DURATION,
        preAllocatedVUs: VUS,
        maxVUs: MAX_VUS,
      },
    },
    thresholds: Object.assign(
      {
        http_req_failed: [`rate<${MAX_ERROR_RATE}`],
        http_req_duration: [`p(95)<${P95_MS}`, `p(99)<${P99_MS}`],
        checks: ['rate>0.99'],
      },
      extraThresholds || {}
    ),
  };
}

export function url(path) {
  return BASE_URL.replace(/\/$/, '') + path;
}

export function headers(extra) {
  return Object.assign({ Host: TENANT_HOST }, extra || {});
}

// The gateway's JSON error shape: {"error": {"code", "message", "request_id"}}.
export function isGatewayError(res, code) {
  try {
    const body = res.json();
    return body && body.error && body.error.code === code && !!body.error.request_id;
  } catch (e) {
    return false;
  }
}

export function expectStatus(res, status, name) {
  return check(res, { [`${name}: status ${status}`]: (r) => r.status === status });
}
