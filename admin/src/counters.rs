//! Reading the proxies' quota counters from Redis: the integers the proxies `INCRBY` at
//! [`vantage_model::quota_counter_key`], for the quota status of an API key.

use crate::error::ApiError;
use fred::prelude::{Client, ErrorKind, KeysInterface};
use std::time::Duration;

/// Longest wait for Redis to answer the reads of one request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis connection that reads quota counters. It connects (and reconnects) by itself;
/// reads that Redis does not answer within [`READ_TIMEOUT`] are refused with 503.
pub struct Counters {
    client: Client,
    prefix: String,
}

impl Counters {
    /// Connect in the background (never waits for Redis) to the proxies' Redis at `url`,
    /// whose keys start with `prefix` (their `server.redis.key_prefix`).
    pub fn start(url: &str, prefix: String) -> anyhow::Result<Counters> {
        let client = crate::publish::redis_client(url, READ_TIMEOUT)?;
        Ok(Counters { client, prefix })
    }

    /// The proxies' key prefix, the first argument of [`vantage_model::quota_counter_key`].
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The value of each counter of `keys`, in their order (0 for a missing key). One `GET`
    /// per key, never a multi-key command: `keys` may be of several subjects, whose counters
    /// live on different Redis Cluster slots.
    pub async fn read(&self, keys: &[String]) -> Result<Vec<i64>, ApiError> {
        let reads = async {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let v: Option<i64> = self.client.get(key.as_str()).await?;
                values.push(v.unwrap_or(0));
            }
            Ok::<_, fred::error::Error>(values)
        };
        match tokio::time::timeout(READ_TIMEOUT, reads).await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) if *e.kind() == ErrorKind::Parse => Err(ApiError::Internal(format!(
                "a quota counter in Redis is not an integer: {e}"
            ))),
            Ok(Err(e)) => {
                tracing::warn!("quota counters: {e}");
                Err(ApiError::Unavailable("Redis is unavailable".into()))
            }
            Err(_) => {
                tracing::warn!("quota counters: Redis timed out");
                Err(ApiError::Unavailable("Redis is unavailable".into()))
            }
        }
    }
}
