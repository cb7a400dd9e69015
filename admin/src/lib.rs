//! VantageEdge admin service: the REST API over the configuration in Postgres, the
//! migrations runner, the demo seed, and the signed config notices on Redis.

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod otel;
pub mod publish;
pub mod seed;
pub mod store;

pub use config::AdminConfig;

/// Shared state of the API handlers.
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub cfg: AdminConfig,
    pub publisher: Option<publish::Publisher>,
}

impl AppState {
    /// Announce a committed write (best effort: a notice is only a hint).
    pub async fn announce(&self, version: i64, tenant: Option<String>) {
        if let Some(p) = &self.publisher {
            p.publish(version, tenant).await;
        }
    }
}
