//! Publishing signed config notices on `<prefix>:config`.

use crate::metrics::METRICS;
use fred::prelude::*;
use std::time::Duration;
use vantage_model::notify::{sign, Notice};

/// A client of the proxies' Redis at `url`, connecting (and reconnecting) in the background;
/// its commands give up after `command_timeout`. Like the proxies' `server.redis.url`, the
/// scheme says a single server (`redis://`), a Redis Cluster (`redis-cluster://host:port?node=…`)
/// or a primary behind Sentinel (`redis-sentinel://…?sentinelServiceName=…`). On a cluster,
/// a notice published on any node reaches the subscribers on every node.
pub(crate) fn redis_client(url: &str, command_timeout: Duration) -> anyhow::Result<Client> {
    let config = Config::from_url(url)?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()?;
    // The connection task runs (and reconnects) on its own; its handle is not needed.
    drop(client.connect());
    Ok(client)
}

/// A Redis connection that publishes [`Notice`]s. It reconnects by itself; a notice that
/// cannot be handed to Redis within the timeout is dropped (the proxies' version poll
/// catches up).
pub struct Publisher {
    client: Client,
    channel: String,
    secret: String,
    timeout: Duration,
}

impl Publisher {
    /// Connect in the background (never waits for Redis).
    pub fn start(
        url: &str,
        channel: String,
        secret: String,
        timeout: Duration,
    ) -> anyhow::Result<Publisher> {
        let client = redis_client(url, timeout)?;
        Ok(Publisher {
            client,
            channel,
            secret,
            timeout,
        })
    }

    /// Publish `{version, tenant_id}`, signed.
    pub async fn publish(&self, version: i64, tenant_id: Option<String>) {
        let msg = sign(&self.secret, &Notice { version, tenant_id });
        let sent = tokio::time::timeout(
            self.timeout,
            self.client.publish::<i64, _, _>(&self.channel, msg),
        )
        .await;
        match sent {
            Ok(Ok(receivers)) => {
                METRICS.notices.with_label_values(&["published"]).inc();
                tracing::debug!(version, receivers, channel = %self.channel, "config notice published")
            }
            Ok(Err(e)) => {
                METRICS.notices.with_label_values(&["failed"]).inc();
                tracing::warn!(version, "config notice not published: {e}")
            }
            Err(_) => {
                METRICS.notices.with_label_values(&["failed"]).inc();
                tracing::warn!(version, "config notice not published: Redis timed out")
            }
        }
    }
}
