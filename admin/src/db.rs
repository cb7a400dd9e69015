//! Connections, migrations and request_logs partition maintenance.

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
/// other), then create the request_logs partitions around today.
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
    let created = maintain_partitions(&client, days_ahead, 0).await?;
    eprintln!(
        "schema is up to date ({} migrations applied now, {created} request_logs partitions created)",
        report.applied_migrations().len()
    );
    Ok(())
}

/// Daily request_logs partitions from yesterday to `days_ahead` days ahead; drop those older
/// than `retention_days` (0 keeps all). Returns how many were created.
pub async fn maintain_partitions(
    c: &impl tokio_postgres::GenericClient,
    days_ahead: u32,
    retention_days: u32,
) -> Result<i32, tokio_postgres::Error> {
    let ahead = i32::try_from(days_ahead).unwrap_or(7);
    let today = "(now() AT TIME ZONE 'UTC')::date";
    let created: i32 = c
        .query_one(
            &format!(
                "SELECT vantage_ensure_request_log_partitions({today} - 1, {today} + $1::int)"
            ),
            &[&ahead],
        )
        .await?
        .get(0);
    if retention_days > 0 {
        let keep = i32::try_from(retention_days).unwrap_or(i32::MAX);
        let dropped: i32 = c
            .query_one(
                &format!("SELECT vantage_drop_request_log_partitions({today} - $1::int)"),
                &[&keep],
            )
            .await?
            .get(0);
        if dropped > 0 {
            tracing::info!(dropped, "dropped old request_logs partitions");
        }
    }
    Ok(created)
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
