-- Per-route metric series, opted into per route or for every route of a tenant (by default
-- a tenant's routes share its series). The JSON carries the field only when it is true, as
-- the model serializes it (`skip_serializing_if = is_false`).

ALTER TABLE tenants ADD COLUMN route_metrics boolean NOT NULL DEFAULT false;
ALTER TABLE routes ADD COLUMN route_metrics boolean NOT NULL DEFAULT false;

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
        'plan_id', t.plan_id::text,
        'route_metrics', NULLIF(t.route_metrics, false)))
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
        'quota', r.quota,
        'route_metrics', NULLIF(r.route_metrics, false)))
$$;
