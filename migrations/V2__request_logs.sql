-- One row per proxied request, written by the proxies in batches (multi-row INSERT or
-- COPY). Partitioned by UTC day on `ts`; the DEFAULT partition takes whatever no daily
-- partition covers, so an insert never fails for want of a partition.
CREATE TABLE request_logs (
    ts           timestamptz      NOT NULL,
    request_id   text             NOT NULL,
    tenant_id    text,
    route_id     text,
    api_key_id   text,
    user_id      text,
    method       text             NOT NULL,
    host         text,
    path         text             NOT NULL,
    status       integer          NOT NULL,
    latency_ms   double precision NOT NULL,
    bytes_sent   bigint           NOT NULL DEFAULT 0,
    client_ip    text,
    cache_status text,
    upstream     text
) PARTITION BY RANGE (ts);

CREATE TABLE request_logs_default PARTITION OF request_logs DEFAULT;
CREATE INDEX request_logs_tenant_ts ON request_logs (tenant_id, ts);
CREATE INDEX request_logs_ts ON request_logs (ts);

-- Create the daily partitions request_logs_YYYYMMDD for first_day..=last_day (UTC days)
-- that do not exist yet, moving any rows of those days out of the default partition.
-- Returns how many were created. Safe to run concurrently (advisory lock).
CREATE FUNCTION vantage_ensure_request_log_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    lo timestamptz;
    hi timestamptz;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('vantage_request_log_partitions'));
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        part := 'request_logs_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            lo := d::timestamp AT TIME ZONE 'UTC';
            hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
            EXECUTE format('CREATE TABLE %I (LIKE request_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
            EXECUTE format('WITH moved AS (DELETE FROM request_logs_default WHERE ts >= %L AND ts < %L RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
            EXECUTE format('ALTER TABLE request_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Drop daily partitions of days before `before_day` (retention). Returns how many.
CREATE FUNCTION vantage_drop_request_log_partitions(before_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('vantage_request_log_partitions'));
    FOR r IN
        SELECT c.relname
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'request_logs' AND c.relname ~ '^request_logs_[0-9]{8}$'
           AND to_date(substr(c.relname, 14), 'YYYYMMDD') < before_day
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;
