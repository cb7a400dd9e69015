-- Plans and calendar quotas (configuration), usage metering and violations (accounting).

-- ── Plans ────────────────────────────────────────────────────────────────────────────
CREATE TABLE plans (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    time_zone   text NOT NULL DEFAULT 'UTC',
    rate_limits jsonb NOT NULL DEFAULT '[]',   -- [vantage_model::RateLimitPolicy]
    quotas      jsonb NOT NULL DEFAULT '[]',   -- [vantage_model::Quota]
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (id, tenant_id)
);
CREATE TRIGGER plans_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON plans
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();

-- What binds to a plan: always a plan of the same tenant; a plan in use cannot be deleted
-- (NO ACTION, checked at the end of the statement, so deleting a tenant still cascades).
ALTER TABLE tenants ADD COLUMN plan_id uuid;
ALTER TABLE tenants ADD FOREIGN KEY (plan_id, id) REFERENCES plans (id, tenant_id) ON DELETE NO ACTION;
ALTER TABLE api_keys ADD COLUMN plan_id uuid;
ALTER TABLE api_keys ADD FOREIGN KEY (plan_id, tenant_id) REFERENCES plans (id, tenant_id) ON DELETE NO ACTION;
CREATE INDEX api_keys_plan ON api_keys (plan_id);
ALTER TABLE jwt_issuers ADD COLUMN plan_claim text;
ALTER TABLE routes ADD COLUMN quota jsonb NOT NULL DEFAULT '{}';  -- vantage_model::RouteQuota

DROP TRIGGER api_keys_bump ON api_keys;
CREATE TRIGGER api_keys_bump
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, tenant_id, name, key_hash, prefix, scopes, expires_at, status, plan_id
    ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();

CREATE FUNCTION vantage_plan_json(p plans) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', p.id::text,
        'tenant_id', p.tenant_id::text,
        'name', p.name,
        'time_zone', p.time_zone,
        'rate_limits', p.rate_limits,
        'quotas', p.quotas))
$$;

CREATE OR REPLACE FUNCTION vantage_tenant_json(t tenants) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', t.id::text,
        'name', t.name,
        'subdomain', t.subdomain,
        'custom_hosts', to_jsonb(t.custom_hosts),
        'access', t.access,
        'rate_limits', t.rate_limits,
        'clerk_org_id', t.clerk_org_id,
        'plan_id', t.plan_id::text))
$$;

CREATE OR REPLACE FUNCTION vantage_route_json(r routes) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', r.id::text,
        'tenant_id', r.tenant_id::text,
        'path_pattern', r.path_pattern,
        'methods', to_jsonb(r.methods),
        'headers', r.headers,
        'priority', r.priority,
        'origin_id', r.origin_id::text,
        'strip_prefix', r.strip_prefix,
        'rewrite', r.rewrite,
        'request_headers', r.request_headers,
        'response_headers', r.response_headers,
        'compression', r.compression,
        'auth', jsonb_build_object(
            'mode', r.auth_mode,
            'scopes', to_jsonb(r.auth_scopes),
            'strip_authorization', r.strip_authorization),
        'rate_limits', r.rate_limits,
        'access', r.access,
        'cache', r.cache,
        'quota', r.quota))
$$;

CREATE OR REPLACE FUNCTION vantage_api_key_json(k api_keys) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', k.id::text,
        'tenant_id', k.tenant_id::text,
        'name', k.name,
        'key_hash', k.key_hash,
        'prefix', k.prefix,
        'scopes', to_jsonb(k.scopes),
        'expires_at', to_char(k.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'status', k.status,
        'plan_id', k.plan_id::text))
$$;

CREATE OR REPLACE FUNCTION vantage_jwt_issuer_json(j jwt_issuers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', j.id::text,
        'tenant_id', j.tenant_id::text,
        'issuer', j.issuer,
        'audiences', to_jsonb(j.audiences),
        'jwks_url', j.jwks_url,
        'public_key_pem', j.public_key_pem,
        'shared_secret', j.shared_secret,
        'algorithms', to_jsonb(j.algorithms),
        'leeway_s', j.leeway_s,
        'cookie', j.cookie,
        'claim_headers', j.claim_headers,
        'jwks_refresh_s', j.jwks_refresh_s,
        'jwks_min_refetch_s', j.jwks_min_refetch_s,
        'plan_claim', j.plan_claim))
$$;

CREATE OR REPLACE FUNCTION vantage_config(p_tenant_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'version', (SELECT version FROM config_version WHERE id),
        'config', jsonb_build_object(
            'tenants', COALESCE((SELECT jsonb_agg(vantage_tenant_json(t) ORDER BY t.created_at, t.id)
                                   FROM tenants t WHERE p_tenant_id IS NULL OR t.id = p_tenant_id), '[]'),
            'origins', COALESCE((SELECT jsonb_agg(vantage_origin_json(o) ORDER BY o.created_at, o.id)
                                   FROM origins o WHERE p_tenant_id IS NULL OR o.tenant_id = p_tenant_id), '[]'),
            'routes', COALESCE((SELECT jsonb_agg(vantage_route_json(r) ORDER BY r.created_at, r.id)
                                  FROM routes r WHERE p_tenant_id IS NULL OR r.tenant_id = p_tenant_id), '[]'),
            'api_keys', COALESCE((SELECT jsonb_agg(vantage_api_key_json(k) ORDER BY k.created_at, k.id)
                                    FROM api_keys k WHERE p_tenant_id IS NULL OR k.tenant_id = p_tenant_id), '[]'),
            'jwt_issuers', COALESCE((SELECT jsonb_agg(vantage_jwt_issuer_json(j) ORDER BY j.created_at, j.id)
                                       FROM jwt_issuers j WHERE p_tenant_id IS NULL OR j.tenant_id = p_tenant_id), '[]'),
            'plans', COALESCE((SELECT jsonb_agg(vantage_plan_json(p) ORDER BY p.created_at, p.id)
                                 FROM plans p WHERE p_tenant_id IS NULL OR p.tenant_id = p_tenant_id), '[]')))
$$;

-- ── Usage metering ───────────────────────────────────────────────────────────────────
-- Proxies aggregate requests in memory and flush batches. Each batch has an id, recorded
-- here in the transaction that adds its counts: a batch retried after a lost reply (or
-- re-sent from a proxy's spool) is recognised and not counted twice.
CREATE TABLE usage_batches (
    id         uuid PRIMARY KEY,
    proxy      text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_batches_applied ON usage_batches (applied_at);

-- Per UTC minute, tenant, subject (`key:<id>`, `user:<sub>`, '' for anonymous), route ('' when
-- none matched) and status class (2 for 2xx ...; 0 when no response was written).
-- `units` are the quota units charged (the route's cost, when a quota counted the request);
-- `overage` the units past the limit of a quota with `overage: allow`.
CREATE TABLE usage_minute (
    ts             timestamptz NOT NULL,
    tenant_id      text     NOT NULL,
    subject        text     NOT NULL,
    route_id       text     NOT NULL,
    status_class   smallint NOT NULL,
    requests       bigint   NOT NULL,
    request_bytes  bigint   NOT NULL,
    response_bytes bigint   NOT NULL,
    units          bigint   NOT NULL,
    overage        bigint   NOT NULL,
    PRIMARY KEY (ts, tenant_id, subject, route_id, status_class)
) PARTITION BY RANGE (ts);
CREATE TABLE usage_minute_default PARTITION OF usage_minute DEFAULT;
CREATE INDEX usage_minute_tenant_ts ON usage_minute (tenant_id, ts);

-- The same, rolled up per UTC hour and per UTC day (in the same transaction as the minutes).
CREATE TABLE usage_hour (LIKE usage_minute INCLUDING DEFAULTS);
ALTER TABLE usage_hour ADD PRIMARY KEY (ts, tenant_id, subject, route_id, status_class);
CREATE INDEX usage_hour_tenant_ts ON usage_hour (tenant_id, ts);
CREATE TABLE usage_day (LIKE usage_minute INCLUDING DEFAULTS);
ALTER TABLE usage_day ADD PRIMARY KEY (ts, tenant_id, subject, route_id, status_class);
CREATE INDEX usage_day_tenant_ts ON usage_day (tenant_id, ts);

-- Violations: every refusal by a limit, quota, auth or IP rule, and every would-be refusal
-- of a shadow-mode policy, per UTC minute, tenant, subject, kind, policy, mode and route.
CREATE TABLE violations (
    ts                timestamptz NOT NULL,
    tenant_id         text   NOT NULL,
    subject           text   NOT NULL,
    kind              text   NOT NULL CHECK (kind IN ('rate_limit', 'quota', 'auth', 'ip')),
    policy            text   NOT NULL,
    mode              text   NOT NULL CHECK (mode IN ('enforce', 'shadow')),
    route_id          text   NOT NULL,
    code              text   NOT NULL,
    count             bigint NOT NULL,
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    sample_request_id text   NOT NULL,
    PRIMARY KEY (ts, tenant_id, subject, kind, policy, mode, route_id)
);
CREATE INDEX violations_tenant_ts ON violations (tenant_id, ts);

-- Apply one batch of a proxy: its usage rows (minute, rolled up into hour and day) and its
-- violations. Returns false, changing nothing, when the batch was applied before. Rows are
-- upserted in key order, so batches of several proxies never wait on each other in a cycle.
CREATE FUNCTION vantage_apply_usage_batch(
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
BEGIN
    INSERT INTO usage_batches (id, proxy) VALUES (p_batch, p_proxy) ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOREACH g IN ARRAY ARRAY['minute', 'hour', 'day'] LOOP
        EXECUTE format(
            'INSERT INTO %I AS u (ts, tenant_id, subject, route_id, status_class, requests,
                                  request_bytes, response_bytes, units, overage)
             SELECT date_trunc(%L, ts, ''UTC''), tenant, subject, route, class, sum(requests),
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
            'usage_' || g, g)
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

-- Daily partitions of a table partitioned by UTC day on `ts` (request_logs, usage_minute):
-- create <table>_YYYYMMDD for first_day..=last_day, moving rows out of the default partition.
CREATE FUNCTION vantage_ensure_daily_partitions(parent text, first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    lo timestamptz;
    hi timestamptz;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('vantage_partitions_' || parent));
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        part := parent || '_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            lo := d::timestamp AT TIME ZONE 'UTC';
            hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
            EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, part);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Drop the daily partitions of `parent` for days before `before_day`. Returns how many.
CREATE FUNCTION vantage_drop_daily_partitions(parent text, before_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('vantage_partitions_' || parent));
    FOR r IN
        SELECT c.relname
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = parent AND c.relname ~ ('^' || parent || '_[0-9]{8}$')
           AND to_date(right(c.relname, 8), 'YYYYMMDD') < before_day
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;
