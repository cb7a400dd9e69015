-- The worker side of the control plane: a durable job queue, billing records, alert rules
-- and alerts, events and their signed webhook deliveries, and the proxies' pool health.

-- ── Plans are priced ─────────────────────────────────────────────────────────────────
ALTER TABLE plans ADD COLUMN billing jsonb;   -- vantage_model::PlanBilling; NULL: not billed
-- When the plan became billed: periods that begin earlier are never billed (a plan made
-- billed today does not bill last month), later ones are all billed, however late. Set when
-- `billing` is set; an operator may move it back to bill earlier periods on demand.
ALTER TABLE plans ADD COLUMN billing_since timestamptz;

CREATE FUNCTION vantage_plans_billing_since() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.billing IS NULL THEN
        NEW.billing_since := NULL;
    ELSIF TG_OP = 'INSERT' THEN
        NEW.billing_since := COALESCE(NEW.billing_since, now());
    ELSIF OLD.billing IS NULL THEN
        NEW.billing_since := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER plans_billing_since BEFORE INSERT OR UPDATE ON plans
    FOR EACH ROW EXECUTE FUNCTION vantage_plans_billing_since();

CREATE OR REPLACE FUNCTION vantage_plan_json(p plans) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', p.id::text,
        'tenant_id', p.tenant_id::text,
        'name', p.name,
        'time_zone', p.time_zone,
        'rate_limits', p.rate_limits,
        'quotas', p.quotas,
        'billing', p.billing))
$$;

-- ── Usage per quarter hour ───────────────────────────────────────────────────────────
-- Billing periods and quota windows begin at local midnight of the plan's zone, which is a
-- quarter hour of UTC in every zone (Asia/Kolkata +5:30, Asia/Kathmandu +5:45): this
-- rollup sums any of them exactly, for as long as billing needs (usage_minute is dropped
-- after days, usage_hour cannot split an hour).
CREATE TABLE usage_quarter (LIKE usage_minute INCLUDING DEFAULTS);
ALTER TABLE usage_quarter ADD PRIMARY KEY (ts, tenant_id, subject, route_id, status_class);
CREATE INDEX usage_quarter_subject_ts ON usage_quarter (tenant_id, subject, ts);
-- Filled from the minutes still kept, and before them from the hours (a quarter hour gets
-- its hour's usage: exact for zones on whole hours, which all billing begins after anyway).
INSERT INTO usage_quarter
SELECT date_bin('15 minutes', ts, timestamptz '2000-01-01 00:00:00+00'), tenant_id, subject,
       route_id, status_class, sum(requests), sum(request_bytes), sum(response_bytes),
       sum(units), sum(overage)
  FROM usage_minute GROUP BY 1, 2, 3, 4, 5;
INSERT INTO usage_quarter
SELECT ts, tenant_id, subject, route_id, status_class, requests, request_bytes,
       response_bytes, units, overage
  FROM usage_hour
 WHERE ts < COALESCE((SELECT date_trunc('hour', min(ts), 'UTC') FROM usage_minute), 'infinity');

-- When the rows of each table were last changed by a batch (billing finds late usage of a
-- closed period through it).
ALTER TABLE usage_batches ADD COLUMN first_ts timestamptz;
ALTER TABLE usage_batches ADD COLUMN last_ts timestamptz;
ALTER TABLE usage_batches ADD COLUMN tenants text[];

CREATE OR REPLACE FUNCTION vantage_apply_usage_batch(
    p_batch uuid, p_proxy text,
    u_ts timestamptz[], u_tenant text[], u_subject text[], u_route text[], u_class int2[],
    u_requests int8[], u_req_bytes int8[], u_resp_bytes int8[], u_units int8[], u_overage int8[],
    v_ts timestamptz[], v_tenant text[], v_subject text[], v_kind text[], v_policy text[],
    v_mode text[], v_route text[], v_code text[], v_count int8[], v_first timestamptz[],
    v_last timestamptz[], v_sample text[]
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    g text;
    bucket text;
BEGIN
    INSERT INTO usage_batches (id, proxy, first_ts, last_ts, tenants)
    SELECT p_batch, p_proxy, min(t), max(t), array_agg(DISTINCT tenant)
      FROM UNNEST(u_ts, u_tenant) AS b (t, tenant)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOREACH g IN ARRAY ARRAY['minute', 'quarter', 'hour', 'day'] LOOP
        bucket := CASE g
            WHEN 'quarter' THEN 'date_bin(''15 minutes'', ts, timestamptz ''2000-01-01 00:00:00+00'')'
            ELSE format('date_trunc(%L, ts, ''UTC'')', g) END;
        EXECUTE format(
            'INSERT INTO %I AS u (ts, tenant_id, subject, route_id, status_class, requests,
                                  request_bytes, response_bytes, units, overage)
             SELECT %s, tenant, subject, route, class, sum(requests),
                    sum(req_bytes), sum(resp_bytes), sum(units), sum(overage)
               FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                    AS b (ts, tenant, subject, route, class, requests, req_bytes, resp_bytes, units, overage)
              GROUP BY 1, 2, 3, 4, 5
              ORDER BY 1, 2, 3, 4, 5
             ON CONFLICT (ts, tenant_id, subject, route_id, status_class) DO UPDATE SET
                requests = u.requests + EXCLUDED.requests,
                request_bytes = u.request_bytes + EXCLUDED.request_bytes,
                response_bytes = u.response_bytes + EXCLUDED.response_bytes,
                units = u.units + EXCLUDED.units,
                overage = u.overage + EXCLUDED.overage',
            'usage_' || g, bucket)
        USING u_ts, u_tenant, u_subject, u_route, u_class, u_requests, u_req_bytes,
              u_resp_bytes, u_units, u_overage;
    END LOOP;
    INSERT INTO violations AS v (ts, tenant_id, subject, kind, policy, mode, route_id, code,
                                 count, first_seen, last_seen, sample_request_id)
    SELECT date_trunc('minute', ts, 'UTC'), tenant, subject, kind, policy, mode, route,
           min(code), sum(cnt), min(first), max(last), min(sample)
      FROM UNNEST(v_ts, v_tenant, v_subject, v_kind, v_policy, v_mode, v_route, v_code, v_count,
                  v_first, v_last, v_sample)
           AS b (ts, tenant, subject, kind, policy, mode, route, code, cnt, first, last, sample)
     GROUP BY 1, 2, 3, 4, 5, 6, 7
     ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (ts, tenant_id, subject, kind, policy, mode, route_id) DO UPDATE SET
        count = v.count + EXCLUDED.count,
        first_seen = least(v.first_seen, EXCLUDED.first_seen),
        last_seen = greatest(v.last_seen, EXCLUDED.last_seen);
    RETURN true;
END $$;

-- ── Jobs ─────────────────────────────────────────────────────────────────────────────
-- The durable queue of the workers. A worker claims ready jobs with FOR UPDATE SKIP LOCKED
-- and holds each for a lease; a job whose worker died (lease over) is claimed again.
-- `dedupe_key`: a job with a key is created once, however many workers or requests ask
-- (scheduled jobs are keyed by their slot, so a fleet of workers schedules each once).
CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    dedupe_key   text UNIQUE,
    tenant_id    uuid,                 -- the tenant the job works for; NULL: the fleet's
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 10,
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_queued ON jobs (run_at) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (state, updated_at) WHERE state IN ('done', 'dead');

-- ── Billing ──────────────────────────────────────────────────────────────────────────
-- One record per tenant, subject (`key:<id>`, `user:<sub>`, `tenant`), plan and period.
-- Revision 1 is the original; a later revision (kind `correction`) is written when late
-- usage changed the figures, and carries the difference in `delta_total`. Money is in
-- integer minor units of `currency`.
CREATE TABLE billing_records (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject         text NOT NULL,
    plan_id         uuid NOT NULL,
    plan_name       text NOT NULL,
    time_zone       text NOT NULL,
    period          text NOT NULL CHECK (period IN ('hour', 'day', 'month')),
    period_label    text NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    revision        integer NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('original', 'correction')),
    currency        text NOT NULL,
    included_units  bigint NOT NULL,
    used_units      bigint NOT NULL,
    overage_units   bigint NOT NULL,
    unit_price      bigint NOT NULL,
    per_units       bigint NOT NULL,
    base_fee        bigint NOT NULL,
    overage_amount  bigint NOT NULL,
    total           bigint NOT NULL,
    delta_total     bigint NOT NULL,
    requests        bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, subject, plan_id, period_start, period_end, revision)
);
CREATE INDEX billing_records_tenant_period ON billing_records (tenant_id, period_start);

-- Each billed period of a plan: its subjects are fixed when it is first billed (a key moved
-- to another plan later is not billed twice), and `checked_at` is when its usage was last
-- read, so that only usage batches applied since make the workers look again.
CREATE TABLE billing_periods (
    plan_id      uuid NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    period_label text NOT NULL,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    checked_at   timestamptz NOT NULL,
    PRIMARY KEY (plan_id, period_start, period_end)
);
CREATE INDEX billing_periods_end ON billing_periods (period_end);

-- ── Events and webhooks ──────────────────────────────────────────────────────────────
-- Something a tenant may be told about. Its id is the `webhook-id` of every delivery.
CREATE TABLE events (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_created ON events (tenant_id, created_at);

CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         text NOT NULL,
    description text NOT NULL DEFAULT '',
    events      text[] NOT NULL DEFAULT '{}',   -- event types; empty: every type
    format      text NOT NULL DEFAULT 'standard' CHECK (format IN ('standard', 'slack')),
    secret      text NOT NULL,                  -- whsec_<base64>; returned once, at creation
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

-- One event to one endpoint. `state`: pending (attempts to come), delivered, failed (the
-- retries ran out: a dead letter, replayable).
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    last_latency_ms integer,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,           -- the receiver's HTTP status; NULL: no answer
    latency_ms  integer NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);

-- ── Alerts ───────────────────────────────────────────────────────────────────────────
CREATE TABLE alert_rules (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL
                CHECK (kind IN ('quota_used', 'violations', 'error_rate', 'pool_unhealthy', 'key_expiring')),
    params      jsonb NOT NULL DEFAULT '{}',
    cooldown_s  integer NOT NULL DEFAULT 3600,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- `dedupe`: what makes two breaches the same alert (the subject, the quota's period and
-- threshold ...). At most one alert per rule and dedupe key is firing at a time.
CREATE TABLE alerts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id     uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    subject     text NOT NULL,
    dedupe      text NOT NULL,
    state       text NOT NULL CHECK (state IN ('firing', 'resolved')),
    value       double precision NOT NULL,
    threshold   double precision NOT NULL,
    message     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    fired_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alerts_one_firing ON alerts (rule_id, dedupe) WHERE state = 'firing';
CREATE INDEX alerts_rule_dedupe ON alerts (rule_id, dedupe, fired_at);
CREATE INDEX alerts_tenant_fired ON alerts (tenant_id, fired_at);

-- ── Pool health reported by the proxies ──────────────────────────────────────────────
-- Each proxy upserts what its health checks see of each origin pool.
CREATE TABLE pool_health (
    proxy        text NOT NULL,
    origin_id    text NOT NULL,
    tenant_id    text NOT NULL,
    healthy      integer NOT NULL,
    total        integer NOT NULL,
    reported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (proxy, origin_id)
);
CREATE INDEX pool_health_tenant ON pool_health (tenant_id);
