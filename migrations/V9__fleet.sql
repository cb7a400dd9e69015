-- Fleet convergence: every proxy in `source: postgres` mode reports itself on a short
-- heartbeat, and the control plane compares what each serves with the latest version.

-- One row per running proxy process (`<hostname>:<pid>`), upserted on every heartbeat and
-- at once after each reload; deleted at graceful shutdown. A row whose `last_seen` is older
-- than the admin's `fleet.gone_after_ms` is a proxy that stopped reporting ("gone").
CREATE TABLE proxies (
    id             text        PRIMARY KEY,
    hostname       text        NOT NULL,
    config_version bigint      NOT NULL,
    applied_at     timestamptz NOT NULL,
    ready          boolean     NOT NULL,
    build_version  text        NOT NULL,
    started_at     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proxies_last_seen ON proxies (last_seen);

-- When each config version was committed, so a proxy's lag can be told in seconds: a proxy
-- serving N is behind since version N + 1 was committed. Pruned with the change log's
-- horizon (versions older than that are long applied or the proxy is very far behind).
CREATE TABLE config_version_times (
    version      bigint      PRIMARY KEY,
    committed_at timestamptz NOT NULL
);
INSERT INTO config_version_times (version, committed_at)
SELECT version, updated_at FROM config_version WHERE id;

CREATE FUNCTION vantage_config_version_time() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version IS DISTINCT FROM OLD.version THEN
        INSERT INTO config_version_times (version, committed_at)
        VALUES (NEW.version, now())
        ON CONFLICT (version) DO UPDATE SET committed_at = EXCLUDED.committed_at;
        IF NEW.version % 100 = 0 THEN
            DELETE FROM config_version_times
             WHERE version <= NEW.version - vantage_config_changes_kept();
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER config_version_times AFTER UPDATE ON config_version
FOR EACH ROW EXECUTE FUNCTION vantage_config_version_time();

-- The fleet as the control plane shows it: every reporting proxy with its lag behind the
-- latest version (in versions, and in seconds since the first version it lacks was
-- committed), and whether it is still reporting (`gone_after` without a heartbeat: gone).
CREATE FUNCTION vantage_fleet(gone_after interval)
RETURNS TABLE (id text, hostname text, config_version bigint, applied_at timestamptz,
               ready boolean, build_version text, started_at timestamptz,
               last_seen timestamptz, gone boolean, lag_versions bigint,
               lag_seconds double precision, latest bigint)
LANGUAGE sql STABLE AS $$
    SELECT p.id, p.hostname, p.config_version, p.applied_at, p.ready, p.build_version,
           p.started_at, p.last_seen, p.last_seen < now() - gone_after,
           greatest(v.version - p.config_version, 0),
           CASE WHEN p.config_version >= v.version THEN 0
                ELSE extract(epoch FROM now() - COALESCE(
                         (SELECT t.committed_at FROM config_version_times t
                           WHERE t.version = p.config_version + 1),
                         p.applied_at))::double precision
           END,
           v.version
      FROM proxies p CROSS JOIN config_version v
     WHERE v.id
     ORDER BY p.id
$$;
