//! Connections, migrations, and the maintenance of the proxies' tables: daily partitions of
//! request_logs and usage_minute, and the retention of usage, violations and usage batches.

use anyhow::Context;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// A connection pool on `url`.
pub fn pool(url: &str, size: usize) -> anyhow::Result<deadpool_postgres::Pool> {
    let pg: tokio_postgres::Config = url.parse().context("bad database_url")?;
    let mgr = deadpool_postgres::Manager::from_config(
        pg,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .context("cannot build the database pool")
}

/// One connection (its driver runs on a task).
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!("postgres connection: {e}");
        }
    });
    Ok(client)
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Create the database of `url` when it does not exist yet (connecting to `postgres`).
async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let pg: tokio_postgres::Config = url.parse().context("bad database_url")?;
    let Some(db) = pg.get_dbname().map(String::from) else {
        return Ok(());
    };
    match tokio_postgres::connect(url, NoTls).await {
        Ok(_) => return Ok(()),
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "3D000") => {}
        Err(_) => return Ok(()), // the real error is reported by the caller's connect
    }
    let mut admin = pg.clone();
    admin.dbname("postgres");
    let (client, conn) = admin
        .connect(NoTls)
        .await
        .context("cannot connect to the postgres database")?;
    tokio::spawn(conn);
    let quoted = format!("\"{}\"", db.replace('"', "\"\""));
    client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
        .with_context(|| format!("cannot create database {db}"))?;
    eprintln!("created database {db}");
    Ok(())
}

/// Apply the migrations that are not applied yet (idempotent; concurrent runs wait for each
/// other), then create the request_logs and usage_minute partitions around today.
pub async fn migrate(url: &str, days_ahead: u32) -> anyhow::Result<()> {
    ensure_database(url).await?;
    let mut client = connect(url).await?;
    client
        .batch_execute("SELECT pg_advisory_lock(hashtext('vantage_migrate'))")
        .await?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .context("migration failed")?;
    client
        .batch_execute("SELECT pg_advisory_unlock(hashtext('vantage_migrate'))")
        .await?;
    for m in report.applied_migrations() {
        eprintln!("applied {m}");
    }
    let done = maintain(&client, &Retention::keep_all(days_ahead)).await?;
    eprintln!(
        "schema is up to date ({} migrations applied now, {} request_logs and {} usage_minute partitions created)",
        report.applied_migrations().len(),
        done.request_log_partitions,
        done.usage_minute_partitions
    );
    Ok(())
}

/// How long the proxies' rows live. Every `*_days` of 0 keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Daily partitions (request_logs, usage_minute) are created this many days ahead.
    pub days_ahead: u32,
    /// request_logs partitions of days before this many days ago are dropped.
    pub request_log_days: u32,
    /// usage_minute partitions of days before this many days ago are dropped.
    pub usage_minute_days: u32,
    /// usage_hour rows older than this many days are deleted.
    pub usage_hour_days: u32,
    /// violations older than this many days are deleted.
    pub violation_days: u32,
    /// usage_quarter rows older than this many days are deleted.
    pub usage_quarter_days: u32,
    /// usage_batches (the ids of applied batches, so that a retried batch is not counted
    /// twice) older than this many days are deleted.
    pub usage_batch_days: u32,
    /// Fleet rows (`proxies`) of proxies silent for this many days are deleted (the fleet
    /// view shows them as gone until then).
    pub gone_proxy_days: u32,
}

/// Longer retentions are taken as this many days.
const MAX_RETENTION_DAYS: u32 = 100_000;

/// How long the ids of applied usage batches are kept: far longer than any proxy retries.
pub const USAGE_BATCH_RETENTION_DAYS: u32 = 30;

/// How long the fleet view keeps showing a proxy that stopped reporting without leaving.
pub const GONE_PROXY_RETENTION_DAYS: u32 = 7;

impl Retention {
    /// What `serve` keeps, from its settings.
    pub fn of(cfg: &crate::AdminConfig) -> Retention {
        Retention {
            days_ahead: cfg.partition_days_ahead,
            request_log_days: cfg.request_log_retention_days,
            usage_minute_days: cfg.usage_minute_retention_days,
            usage_hour_days: cfg.usage_hour_retention_days,
            violation_days: cfg.violation_retention_days,
            usage_quarter_days: cfg.usage_quarter_retention_days,
            usage_batch_days: USAGE_BATCH_RETENTION_DAYS,
            gone_proxy_days: GONE_PROXY_RETENTION_DAYS,
        }
    }

    /// Create partitions `days_ahead`, remove nothing (what `migrate` does).
    pub fn keep_all(days_ahead: u32) -> Retention {
        Retention {
            days_ahead,
            request_log_days: 0,
            usage_minute_days: 0,
            usage_hour_days: 0,
            violation_days: 0,
            usage_quarter_days: 0,
            usage_batch_days: 0,
            gone_proxy_days: 0,
        }
    }
}

/// What one [`maintain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintained {
    pub request_log_partitions: i32,
    pub usage_minute_partitions: i32,
    pub dropped_partitions: i32,
    /// usage_hour, violations and usage_batches rows deleted.
    pub deleted_rows: u64,
}

/// Daily request_logs and usage_minute partitions from yesterday to `days_ahead` days ahead
/// (yesterday too, so rows of just before midnight UTC never land in the default
/// partition); then drop and delete what is older than `keep` says.
pub async fn maintain(
    c: &impl tokio_postgres::GenericClient,
    keep: &Retention,
) -> Result<Maintained, tokio_postgres::Error> {
    let ahead = i32::try_from(keep.days_ahead).unwrap_or(7);
    // Retentions past a few centuries keep everything anyway; beyond that, date arithmetic
    // would leave Postgres' range.
    let days = |d: u32| i32::try_from(d.min(MAX_RETENTION_DAYS)).unwrap_or(i32::MAX);
    let today = "(now() AT TIME ZONE 'UTC')::date";
    let mut done = Maintained {
        request_log_partitions: c
            .query_one(
                &format!(
                    "SELECT vantage_ensure_request_log_partitions({today} - 1, {today} + $1::int)"
                ),
                &[&ahead],
            )
            .await?
            .get(0),
        usage_minute_partitions: c
            .query_one(
                &format!(
                    "SELECT vantage_ensure_daily_partitions('usage_minute', {today} - 1, {today} + $1::int)"
                ),
                &[&ahead],
            )
            .await?
            .get(0),
        ..Maintained::default()
    };
    if keep.request_log_days > 0 {
        let dropped: i32 = c
            .query_one(
                &format!("SELECT vantage_drop_request_log_partitions({today} - $1::int)"),
                &[&days(keep.request_log_days)],
            )
            .await?
            .get(0);
        done.dropped_partitions += dropped;
    }
    if keep.usage_minute_days > 0 {
        let dropped: i32 = c
            .query_one(
                &format!("SELECT vantage_drop_daily_partitions('usage_minute', {today} - $1::int)"),
                &[&days(keep.usage_minute_days)],
            )
            .await?
            .get(0);
        done.dropped_partitions += dropped;
    }
    for (days_kept, sql) in [
        (
            keep.usage_hour_days,
            "DELETE FROM usage_hour WHERE ts < now() - $1::int * interval '1 day'",
        ),
        (
            keep.usage_quarter_days,
            "DELETE FROM usage_quarter WHERE ts < now() - $1::int * interval '1 day'",
        ),
        (
            keep.violation_days,
            "DELETE FROM violations WHERE ts < now() - $1::int * interval '1 day'",
        ),
        (
            keep.usage_batch_days,
            "DELETE FROM usage_batches WHERE applied_at < now() - $1::int * interval '1 day'",
        ),
        (
            keep.gone_proxy_days,
            "DELETE FROM proxies WHERE last_seen < now() - $1::int * interval '1 day'",
        ),
    ] {
        if days_kept > 0 {
            done.deleted_rows += c.execute(sql, &[&days(days_kept)]).await?;
        }
    }
    if done.dropped_partitions > 0 || done.deleted_rows > 0 {
        tracing::info!(
            dropped_partitions = done.dropped_partitions,
            deleted_rows = done.deleted_rows,
            "removed old request logs, usage and violations"
        );
    }
    Ok(done)
}

/// Store a new admin token and return it (the plaintext exists only in the return value).
/// `tenant` is a tenant id or subdomain (required for `tenant_admin`, refused otherwise).
pub async fn create_token(
    url: &str,
    role: &str,
    tenant: Option<&str>,
    name: &str,
) -> anyhow::Result<String> {
    let client = connect(url).await?;
    let tenant_id: Option<uuid::Uuid> = match (role, tenant) {
        ("superadmin", None) => None,
        ("superadmin", Some(_)) => anyhow::bail!("a superadmin token is not bound to a tenant"),
        ("tenant_admin", None) => anyhow::bail!("a tenant_admin token needs --tenant"),
        ("tenant_admin", Some(t)) => {
            let row = client
                .query_opt(
                    "SELECT id FROM tenants WHERE id::text = $1 OR subdomain = $1",
                    &[&t],
                )
                .await?;
            Some(
                row.with_context(|| format!("no tenant has id or subdomain '{t}'"))?
                    .get(0),
            )
        }
        _ => anyhow::bail!("role must be superadmin or tenant_admin"),
    };
    if name.trim().is_empty() {
        anyhow::bail!("--name must not be empty");
    }
    let token = crate::auth::generate_admin_token();
    client
        .execute(
            "INSERT INTO admin_tokens (name, role, tenant_id, token_hash) VALUES ($1, $2, $3, $4)",
            &[&name, &role, &tenant_id, &crate::auth::sha256_hex(&token)],
        )
        .await?;
    Ok(token)
}
