-- VantageEdge configuration schema: the contract between vantage-admin (writes) and
-- vantage-proxy (reads, through vantage_config() and vantage_config_version() only).
--
-- Relational facts (ids, owning tenant, unique names, references) are real columns;
-- nested policies are JSONB holding exactly the serde form of the vantage-model types.

-- One row. `version` grows by one in the same transaction as every committed write to
-- the configuration (the admin bumps it first thing, which also serializes writers; the
-- triggers below bump it for writes made by hand). The proxy polls it.
CREATE TABLE config_version (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    version    bigint      NOT NULL,
    txid       bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO config_version (id, version) VALUES (true, 1);

-- The config version; cheap (one-row table).
CREATE FUNCTION vantage_config_version() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT version FROM config_version WHERE id $$;

-- Bump the version once per transaction (later calls in the same transaction return the
-- same number) and lock the row until commit, so config writers run one at a time.
CREATE FUNCTION vantage_bump_config_version() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    UPDATE config_version
       SET version = version + 1, txid = txid_current(), updated_at = now()
     WHERE id AND txid IS DISTINCT FROM txid_current()
    RETURNING version INTO v;
    IF v IS NULL THEN
        SELECT version INTO v FROM config_version WHERE id;
    END IF;
    RETURN v;
END $$;

CREATE FUNCTION vantage_bump_config_version_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM vantage_bump_config_version();
    RETURN NULL;
END $$;

CREATE TABLE tenants (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text   NOT NULL,
    subdomain    text   NOT NULL UNIQUE,
    clerk_org_id text   UNIQUE,
    custom_hosts text[] NOT NULL DEFAULT '{}',
    access       jsonb  NOT NULL DEFAULT '{}',      -- vantage_model::Access
    rate_limits  jsonb  NOT NULL DEFAULT '[]',      -- [vantage_model::RateLimitPolicy]
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- People of a tenant (e.g. from Clerk). Not part of the proxy's configuration.
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    clerk_user_id text UNIQUE,
    email         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, lower(email));

CREATE TABLE origins (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    targets         jsonb   NOT NULL,                 -- [vantage_model::Target]
    lb              text    NOT NULL DEFAULT 'round_robin',
    hash_key        jsonb,                            -- vantage_model::HashKey
    health_check    jsonb,                            -- vantage_model::HealthCheck
    timeouts        jsonb   NOT NULL,                 -- vantage_model::Timeouts
    retries         integer NOT NULL DEFAULT 1,
    circuit_breaker jsonb   NOT NULL,                 -- vantage_model::CircuitBreaker
    tls             jsonb   NOT NULL,                 -- vantage_model::UpstreamTls
    protocol        text    NOT NULL DEFAULT 'http1',
    preserve_host   boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id)
);
CREATE INDEX origins_tenant ON origins (tenant_id);

CREATE TABLE routes (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    origin_id           uuid    NOT NULL,
    path_pattern        text    NOT NULL,
    methods             text[]  NOT NULL DEFAULT '{}',
    headers             jsonb   NOT NULL DEFAULT '[]',  -- [vantage_model::HeaderMatch]
    priority            integer NOT NULL DEFAULT 0,
    strip_prefix        text,
    rewrite             jsonb,                          -- vantage_model::PathRewrite
    request_headers     jsonb   NOT NULL DEFAULT '{}',  -- vantage_model::HeaderTransform
    response_headers    jsonb   NOT NULL DEFAULT '{}',  -- vantage_model::HeaderTransform
    compression         jsonb   NOT NULL DEFAULT '{}',  -- vantage_model::Compression
    auth_mode           text    NOT NULL DEFAULT 'public',
    auth_scopes         text[]  NOT NULL DEFAULT '{}',
    strip_authorization boolean NOT NULL DEFAULT false,
    rate_limits         jsonb   NOT NULL DEFAULT '[]',  -- [vantage_model::RateLimitPolicy]
    access              jsonb   NOT NULL DEFAULT '{}',  -- vantage_model::Access
    cache               jsonb   NOT NULL DEFAULT '{}',  -- vantage_model::CachePolicy
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- A route forwards to an origin of its own tenant; an origin in use cannot be deleted
    -- (NO ACTION, checked at the end of the statement, so deleting a tenant still cascades).
    FOREIGN KEY (origin_id, tenant_id) REFERENCES origins (id, tenant_id) ON DELETE NO ACTION
);
CREATE INDEX routes_tenant ON routes (tenant_id);
CREATE INDEX routes_origin ON routes (origin_id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),  -- SHA-256, never the key
    prefix       text NOT NULL DEFAULT '',
    scopes       text[] NOT NULL DEFAULT '{}',
    expires_at   timestamptz,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    last_used_at timestamptz,
    rotated_from uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE jwt_issuers (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    issuer             text   NOT NULL,
    audiences          text[] NOT NULL DEFAULT '{}',
    jwks_url           text,
    public_key_pem     text,
    shared_secret      text,
    algorithms         text[] NOT NULL DEFAULT '{RS256}',
    leeway_s           bigint NOT NULL DEFAULT 30 CHECK (leeway_s >= 0),
    cookie             text,
    claim_headers      jsonb  NOT NULL DEFAULT '{}',
    jwks_refresh_s     bigint NOT NULL DEFAULT 300 CHECK (jwks_refresh_s >= 0),
    jwks_min_refetch_s bigint NOT NULL DEFAULT 10 CHECK (jwks_min_refetch_s >= 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jwt_issuers_tenant ON jwt_issuers (tenant_id);

-- Credentials of the admin API itself (only SHA-256 hashes).
CREATE TABLE admin_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('superadmin', 'tenant_admin')),
    tenant_id  uuid REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK ((role = 'tenant_admin') = (tenant_id IS NOT NULL))
);

-- Any write to the configuration bumps the version (at most once per transaction).
CREATE TRIGGER tenants_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();
CREATE TRIGGER users_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();
CREATE TRIGGER origins_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON origins
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();
CREATE TRIGGER routes_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON routes
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();
-- last_used_at bookkeeping does not change the configuration.
CREATE TRIGGER api_keys_bump
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, tenant_id, name, key_hash, prefix, scopes, expires_at, status
    ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();
CREATE TRIGGER jwt_issuers_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON jwt_issuers
    FOR EACH STATEMENT EXECUTE FUNCTION vantage_bump_config_version_trigger();

-- One row of each table in the serde form of its vantage-model type (null fields left out).
CREATE FUNCTION vantage_tenant_json(t tenants) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', t.id::text,
        'name', t.name,
        'subdomain', t.subdomain,
        'custom_hosts', to_jsonb(t.custom_hosts),
        'access', t.access,
        'rate_limits', t.rate_limits,
        'clerk_org_id', t.clerk_org_id))
$$;

CREATE FUNCTION vantage_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', u.id::text,
        'tenant_id', u.tenant_id::text,
        'email', u.email,
        'role', u.role,
        'clerk_user_id', u.clerk_user_id))
$$;

CREATE FUNCTION vantage_origin_json(o origins) RETURNS jsonb
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
        'preserve_host', o.preserve_host))
$$;

CREATE FUNCTION vantage_route_json(r routes) RETURNS jsonb
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
        'cache', r.cache))
$$;

CREATE FUNCTION vantage_api_key_json(k api_keys) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', k.id::text,
        'tenant_id', k.tenant_id::text,
        'name', k.name,
        'key_hash', k.key_hash,
        'prefix', k.prefix,
        'scopes', to_jsonb(k.scopes),
        'expires_at', to_char(k.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'status', k.status))
$$;

CREATE FUNCTION vantage_jwt_issuer_json(j jwt_issuers) RETURNS jsonb
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
        'jwks_min_refetch_s', j.jwks_min_refetch_s))
$$;

-- The whole configuration and its version, from one statement (one snapshot):
-- {"version": N, "config": {"tenants": [...], "origins": [...], "routes": [...],
--  "api_keys": [...], "jwt_issuers": [...]}}. `config` deserializes into
-- vantage_model::Config (no `server` key). Pass a tenant id to get only that tenant's part.
CREATE FUNCTION vantage_config(p_tenant_id uuid DEFAULT NULL) RETURNS jsonb
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
                                       FROM jwt_issuers j WHERE p_tenant_id IS NULL OR j.tenant_id = p_tenant_id), '[]')))
$$;
