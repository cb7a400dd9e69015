-- Incremental reloads: which tenants each config version changed.
--
-- Every write to a configuration table records (version, tenant) here in the same
-- transaction, so a proxy serving version N asks `vantage_config_delta(N)` for the tenants
-- changed since and recompiles only those. The log is complete for versions after
-- `config_version.changes_from`; a proxy further behind (or after a TRUNCATE, whose rows
-- are unknown) reloads everything.

CREATE TABLE config_changes (
    version   bigint NOT NULL,
    tenant_id uuid   NOT NULL,
    PRIMARY KEY (version, tenant_id)
);

-- Changes after this version are all in config_changes.
ALTER TABLE config_version ADD COLUMN changes_from bigint;
UPDATE config_version SET changes_from = version;
ALTER TABLE config_version ALTER COLUMN changes_from SET NOT NULL;

-- How many versions of the log are kept (older ones are pruned as new ones come).
CREATE FUNCTION vantage_config_changes_kept() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT 10000::bigint $$;

-- Record `tenants` as changed in this transaction's version; prune the log now and then.
CREATE FUNCTION vantage_record_config_changes(tenants uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v bigint := vantage_bump_config_version();
    horizon bigint := v - vantage_config_changes_kept();
BEGIN
    INSERT INTO config_changes (version, tenant_id)
    SELECT DISTINCT v, t FROM unnest(tenants) AS t WHERE t IS NOT NULL
    ON CONFLICT DO NOTHING;
    IF v % 100 = 0 AND horizon > 0 THEN
        DELETE FROM config_changes WHERE version <= horizon;
        UPDATE config_version SET changes_from = greatest(changes_from, horizon) WHERE id;
    END IF;
END $$;

-- Statement triggers with transition tables: one call per statement, whatever its size.
-- The tenant column is `id` for tenants and `tenant_id` for the others (TG_ARGV[0]).
CREATE FUNCTION vantage_config_changes_new() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT %I) FROM new_rows', TG_ARGV[0]) INTO ids;
    PERFORM vantage_record_config_changes(ids);
    RETURN NULL;
END $$;

CREATE FUNCTION vantage_config_changes_old() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT %I) FROM old_rows', TG_ARGV[0]) INTO ids;
    PERFORM vantage_record_config_changes(ids);
    RETURN NULL;
END $$;

CREATE FUNCTION vantage_config_changes_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT t) FROM (SELECT %1$I AS t FROM old_rows
                    UNION SELECT %1$I FROM new_rows) AS c', TG_ARGV[0]) INTO ids;
    PERFORM vantage_record_config_changes(ids);
    RETURN NULL;
END $$;

-- API keys: `last_used_at` bookkeeping is not configuration (as for the version bump).
CREATE FUNCTION vantage_config_changes_api_keys_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    SELECT array_agg(DISTINCT t) INTO ids FROM (
        SELECT o.tenant_id AS t FROM old_rows o JOIN new_rows n USING (id)
         WHERE (o.tenant_id, o.name, o.key_hash, o.prefix, o.scopes, o.expires_at, o.status, o.plan_id)
               IS DISTINCT FROM
               (n.tenant_id, n.name, n.key_hash, n.prefix, n.scopes, n.expires_at, n.status, n.plan_id)
        UNION
        SELECT n.tenant_id FROM old_rows o JOIN new_rows n USING (id)
         WHERE o.tenant_id IS DISTINCT FROM n.tenant_id) AS c;
    IF ids IS NOT NULL THEN
        PERFORM vantage_record_config_changes(ids);
    END IF;
    RETURN NULL;
END $$;

-- A TRUNCATE names no rows: the log is incomplete up to its version.
CREATE FUNCTION vantage_config_changes_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_version SET changes_from = greatest(changes_from, vantage_bump_config_version())
     WHERE id;
    RETURN NULL;
END $$;

DO $$
DECLARE
    tbl text;
    col text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['tenants', 'origins', 'routes', 'api_keys', 'jwt_issuers', 'plans'] LOOP
        col := CASE WHEN tbl = 'tenants' THEN 'id' ELSE 'tenant_id' END;
        EXECUTE format('CREATE TRIGGER %1$s_changes_insert AFTER INSERT ON %1$I
                        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
                        EXECUTE FUNCTION vantage_config_changes_new(%2$L)', tbl, col);
        EXECUTE format('CREATE TRIGGER %1$s_changes_delete AFTER DELETE ON %1$I
                        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                        EXECUTE FUNCTION vantage_config_changes_old(%2$L)', tbl, col);
        IF tbl = 'api_keys' THEN
            EXECUTE 'CREATE TRIGGER api_keys_changes_update AFTER UPDATE ON api_keys
                     REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
                     EXECUTE FUNCTION vantage_config_changes_api_keys_update()';
        ELSE
            EXECUTE format('CREATE TRIGGER %1$s_changes_update AFTER UPDATE ON %1$I
                            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
                            EXECUTE FUNCTION vantage_config_changes_update(%2$L)', tbl, col);
        END IF;
        EXECUTE format('CREATE TRIGGER %1$s_changes_truncate AFTER TRUNCATE ON %1$I
                        FOR EACH STATEMENT EXECUTE FUNCTION vantage_config_changes_truncate()', tbl);
    END LOOP;
END $$;

-- One tenant's part of the configuration (the `config` of `vantage_config(T)`), read through
-- the tenant_id indexes: its cost grows with the tenant, not with the fleet.
CREATE FUNCTION vantage_tenant_config(p_tenant_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'tenants', COALESCE((SELECT jsonb_agg(vantage_tenant_json(t))
                               FROM tenants t WHERE t.id = p_tenant_id), '[]'),
        'origins', COALESCE((SELECT jsonb_agg(vantage_origin_json(o) ORDER BY o.created_at, o.id)
                               FROM origins o WHERE o.tenant_id = p_tenant_id), '[]'),
        'routes', COALESCE((SELECT jsonb_agg(vantage_route_json(r) ORDER BY r.created_at, r.id)
                              FROM routes r WHERE r.tenant_id = p_tenant_id), '[]'),
        'api_keys', COALESCE((SELECT jsonb_agg(vantage_api_key_json(k) ORDER BY k.created_at, k.id)
                                FROM api_keys k WHERE k.tenant_id = p_tenant_id), '[]'),
        'jwt_issuers', COALESCE((SELECT jsonb_agg(vantage_jwt_issuer_json(j) ORDER BY j.created_at, j.id)
                                   FROM jwt_issuers j WHERE j.tenant_id = p_tenant_id), '[]'),
        'plans', COALESCE((SELECT jsonb_agg(vantage_plan_json(p) ORDER BY p.created_at, p.id)
                             FROM plans p WHERE p.tenant_id = p_tenant_id), '[]'))
$$;

-- What changed since version `p_since`, in one statement (one snapshot of the database):
-- {"version": V, "complete": bool, "tenants": [{"id": T, "config": {...} | null}]}, where
-- `config` is the tenant's part (`vantage_tenant_config(T)`), null for a deleted tenant.
-- Not `complete`: the log does not reach back to p_since; read everything instead.
CREATE FUNCTION vantage_config_delta(p_since bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cv config_version;
    parts jsonb;
BEGIN
    -- plpgsql: its plans are kept per connection (a proxy asks on every change).
    SELECT * INTO cv FROM config_version WHERE id;
    IF p_since < cv.changes_from THEN
        RETURN jsonb_build_object('version', cv.version, 'complete', false, 'tenants', '[]'::jsonb);
    END IF;
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'id', c.tenant_id::text,
               'config', CASE WHEN EXISTS (SELECT 1 FROM tenants t WHERE t.id = c.tenant_id)
                              THEN vantage_tenant_config(c.tenant_id) END)
               ORDER BY c.tenant_id), '[]')
      INTO parts
      FROM (SELECT DISTINCT tenant_id FROM config_changes
             WHERE version > p_since AND version <= cv.version) AS c;
    RETURN jsonb_build_object('version', cv.version, 'complete', true, 'tenants', parts);
END $$;
