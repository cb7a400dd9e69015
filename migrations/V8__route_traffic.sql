-- Traffic management of a route (vantage_model::Traffic): weighted splits, mirroring, the
-- API version it serves and its fallback answer; an origin's affinity cookie
-- (vantage_model::CookieAffinity) and DNS discovery of its targets
-- (vantage_model::Discovery), each NULL when the origin has none. The JSON carries the field only when it is
-- set, as the model serializes it (`skip_serializing_if = Traffic::is_default`). The origins a
-- split or mirror names are checked by the admin's validation of every write (a foreign key
-- cannot reach into the document).

ALTER TABLE routes ADD COLUMN traffic jsonb NOT NULL DEFAULT '{}';
ALTER TABLE origins ADD COLUMN affinity jsonb;
ALTER TABLE origins ADD COLUMN discovery jsonb;

CREATE OR REPLACE FUNCTION vantage_origin_json(o origins) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', o.id::text,
        'tenant_id', o.tenant_id::text,
        'targets', o.targets,
        'lb', o.lb,
        'hash_key', o.hash_key,
        'health_check', o.health_check,
        'timeouts', o.timeouts,
        'retries', o.retries,
        'circuit_breaker', o.circuit_breaker,
        'tls', o.tls,
        'protocol', o.protocol,
        'preserve_host', o.preserve_host,
        'affinity', o.affinity,
        'discovery', o.discovery))
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
        'route_metrics', NULLIF(r.route_metrics, false),
        'traffic', NULLIF(r.traffic, '{}'::jsonb)))
$$;
