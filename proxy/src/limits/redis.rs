//! Rate limits shared by a fleet through Redis (`fred`).
//!
//! One round trip per decision: an atomic Lua script that reads Redis `TIME` (so the proxies'
//! clocks do not matter), decides and updates the counter. Keys are built only from tenant,
//! policy and subject, wrapped in a `{hash tag}` so a Redis Cluster keeps each key's data on
//! one slot, and expire when idle. Each call has a small time budget; the client (single
//! node, cluster or sentinel: [`crate::redis_conn`]) reconnects by itself, and while Redis,
//! or the master of a key's slot, is away every call ends within its budget and the policy's
//! `on_redis_error` decides. After a cluster failover the first call to a moved slot is
//! redirected (`MOVED`) and the script reloaded on the new master when it lacks it.

use super::Decision;
use crate::telemetry::metrics::METRICS;
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;
use vantage_model::{LimitAlgorithm, RedisSettings};

/// GCRA in microseconds. ARGV: interval, capacity (interval × burst).
/// Returns {allowed, remaining, reset_us, retry_us}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now <= capacity then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  return {1, math.floor((capacity - (new_tat - now)) / interval), new_tat - now, 0}
end
return {0, 0, tat - now, new_tat - now - capacity}
"#;

/// Two-window sliding estimate in milliseconds, in one hash (fields i, p, c).
/// ARGV: limit, period_ms. Returns {allowed, remaining, reset_ms, retry_ms}.
const WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local idx = math.floor(now / period)
local h = redis.call('HMGET', KEYS[1], 'i', 'p', 'c')
local i = tonumber(h[1])
local p = tonumber(h[2]) or 0
local c = tonumber(h[3]) or 0
if i == nil then p = 0; c = 0
elseif i == idx - 1 then p = c; c = 0
elseif i ~= idx then p = 0; c = 0 end
local elapsed = now % period
local est = p * (1 - elapsed / period) + c
local reset = period - elapsed
if est + 1 <= limit then
  redis.call('HSET', KEYS[1], 'i', idx, 'p', p, 'c', c + 1)
  redis.call('PEXPIRE', KEYS[1], period * 2)
  return {1, math.floor(limit - est - 1), reset, 0}
end
local retry = reset
if p > 0 then retry = math.min(reset, math.floor((est + 1 - limit) / p * period)) end
return {0, 0, reset, retry}
"#;

/// The shared limiter.
pub struct RedisLimiter {
    client: Client,
    prefix: String,
    timeout: Duration,
    gcra: Script,
    window: Script,
}

/// Why Redis gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected script reply")]
    Reply,
    #[error("not connected to redis")]
    Disconnected,
}

fn ceil_div(a: i64, b: i64) -> u64 {
    (a.max(0) as u64).div_ceil(b as u64)
}

impl RedisLimiter {
    /// A client for `settings`; it connects when the background service starts.
    pub fn new(settings: &RedisSettings) -> Result<RedisLimiter, String> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let client = crate::redis_conn::builder(settings)?
            // Commands issued while (re)connecting wait in the client's queue until their
            // budget runs out: a reconnection within the budget costs no decision.
            .with_config(|c| c.fail_fast = false)
            .with_connection_config(|c| {
                // Each write of a command is an attempt, and following a cluster's `MOVED`
                // (after a failover: the client's slot map may be stale twice) writes it
                // again. A command is never written once its budget has run out, so the
                // retries stay within the budget too.
                c.max_command_attempts = 3;
                c.max_command_buffer_len = 10_000;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .build()
            .map_err(|e| format!("server.redis: {e}"))?;
        Ok(RedisLimiter {
            client,
            prefix: settings.key_prefix.clone(),
            timeout,
            gcra: Script::from_lua(GCRA),
            window: Script::from_lua(WINDOW),
        })
    }

    /// The Redis key for a local limiter key (tenant, policy, subject): hash-tagged whole.
    pub fn key(&self, local_key: &str) -> String {
        format!("{}:rl:{{{}}}", self.prefix, local_key)
    }

    /// One decision, within the time budget.
    pub async fn check(
        &self,
        local_key: &str,
        algorithm: &LimitAlgorithm,
    ) -> Result<Decision, RedisLimitError> {
        let key = self.key(local_key);
        let call = async {
            match *algorithm {
                LimitAlgorithm::TokenBucket { rate, burst } => {
                    let interval = ((1e6 / rate).max(1.0)) as i64;
                    let capacity = interval * i64::from(burst);
                    let r: Vec<i64> = self
                        .gcra
                        .evalsha_with_reload(&self.client, vec![key], vec![interval, capacity])
                        .await?;
                    let [allowed, remaining, reset, retry] = r[..] else {
                        return Err(RedisLimitError::Reply);
                    };
                    Ok(Decision {
                        allowed: allowed == 1,
                        limit: burst,
                        remaining: remaining.max(0) as u32,
                        reset_s: ceil_div(reset, 1_000_000),
                        retry_after_s: if allowed == 1 {
                            0
                        } else {
                            ceil_div(retry, 1_000_000).max(1)
                        },
                        window_s: super::bucket_policy(rate, burst).0,
                        quota: super::bucket_policy(rate, burst).1,
                    })
                }
                LimitAlgorithm::SlidingWindow { limit, period_s } => {
                    let period_ms = i64::from(period_s) * 1000;
                    let r: Vec<i64> = self
                        .window
                        .evalsha_with_reload(
                            &self.client,
                            vec![key],
                            vec![i64::from(limit), period_ms],
                        )
                        .await?;
                    let [allowed, remaining, reset, retry] = r[..] else {
                        return Err(RedisLimitError::Reply);
                    };
                    Ok(Decision {
                        allowed: allowed == 1,
                        limit,
                        remaining: remaining.max(0) as u32,
                        reset_s: ceil_div(reset, 1000).max(1),
                        retry_after_s: if allowed == 1 {
                            0
                        } else {
                            ceil_div(retry, 1000).max(1)
                        },
                        window_s: u64::from(period_s),
                        quota: u64::from(limit),
                    })
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(RedisLimitError::Timeout(self.timeout)),
        };
        if result.is_err() {
            METRICS.redis_errors.with_label_values(&["ratelimit"]).inc();
        }
        result
    }

    /// The shared client (the cache's Redis tier and purges use it too).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Key prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Time budget of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Is the connection up?
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
}

#[async_trait]
impl BackgroundService for RedisLimiter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tracing::info!(
            topology = crate::redis_conn::topology(&self.client.client_config().server),
            "connecting to redis"
        );
        let handle = self.client.connect();
        let _ = shutdown.changed().await;
        let _ = self.client.quit().await;
        handle.abort();
    }
}
