//! VantageEdge admin service: the REST API over the configuration in Postgres (and over the
//! proxies' usage, violations and quota counters, billing records, alerts and webhooks), the
//! migrations runner, the demo seed, the signed config notices on Redis, and the workers
//! that run the durable job queue.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod billing;
pub mod config;
pub mod console;
pub mod counters;
pub mod db;
pub mod error;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod openapi;
pub mod otel;
pub mod publish;
pub mod seed;
pub mod store;
pub mod sync;
pub mod webhooks;
pub mod worker;
pub mod write;

pub use config::AdminConfig;

/// Shared state of the API handlers.
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub cfg: AdminConfig,
    /// Announces committed configuration writes; `None` when `redis_url` is empty.
    pub publisher: Option<publish::Publisher>,
    /// Reads the proxies' quota counters; `None` when `redis_url` is empty.
    pub counters: Option<counters::Counters>,
    /// What candidate configurations are validated against (from `cfg`).
    pub context: vantage_model::ResourceContext,
}

impl AppState {
    /// The state for `cfg`; fails when the fleet settings break the proxies' rules.
    pub fn new(
        pool: deadpool_postgres::Pool,
        cfg: AdminConfig,
        publisher: Option<publish::Publisher>,
        counters: Option<counters::Counters>,
    ) -> anyhow::Result<AppState> {
        let context = cfg
            .resource_context()
            .map_err(|e| anyhow::anyhow!("base_domains / jwks_allowed_networks: {e}"))?;
        Ok(AppState {
            pool,
            cfg,
            publisher,
            counters,
            context,
        })
    }

    /// Start a write of the proxies' configuration concerning tenant `scope` (see
    /// [`write::UnitOfWork::config`]).
    pub async fn config_write<'c>(
        &self,
        client: &'c mut tokio_postgres::Client,
        scope: uuid::Uuid,
    ) -> Result<write::UnitOfWork<'c, write::Candidate<'_>>, error::ApiError> {
        write::UnitOfWork::config(client, &self.context, self.publisher.as_ref(), Some(scope)).await
    }
}
