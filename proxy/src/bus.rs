//! The fleet's message bus: a Redis pub/sub subscriber (`fred`) for what other processes
//! publish — cache purges from other proxies (`<prefix>:cache:purge`) and, with
//! `source: postgres`, the admin's signed config-change announcements (`<prefix>:config`).
//! It resubscribes after every reconnect and then catches up with state it may have missed
//! (purge generations, retried until read; the config version poll covers missed
//! announcements). On a Redis Cluster the subscription sits on one node and every node
//! delivers what is published on any of them; after a failover the client reconnects to the
//! new master and the subscription is made again.

use crate::cache::purge::{PurgeMessage, Purges};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::METRICS;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use vantage_model::RedisSettings;

/// Config-change announcements: checked with the shared secret, then they wake the
/// reloader (which reads the truth from Postgres).
pub struct ConfigNotices {
    pub secret: String,
    pub wake: Arc<tokio::sync::Notify>,
    pub state: Arc<ArcSwap<Snapshot>>,
    /// Notices stamped further than this from our clock are refused (replays).
    pub window_ms: u64,
}

/// What became of a config notice (the `result` label of `vantage_config_notices_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeResult {
    /// Signed, recent and newer than what is served: a reload is due.
    Accepted,
    /// Not newer than the version served (a late or replayed notice).
    Ignored,
    /// Signed, but stamped outside the window (a replay, or a badly skewed clock).
    Stale,
    /// Bad signature or malformed.
    Rejected,
}

impl NoticeResult {
    pub fn label(self) -> &'static str {
        match self {
            NoticeResult::Accepted => "accepted",
            NoticeResult::Ignored => "ignored",
            NoticeResult::Stale => "stale",
            NoticeResult::Rejected => "rejected",
        }
    }
}

impl ConfigNotices {
    /// Judge a message received at `now_ms` while `served` is the version being served.
    pub fn judge(&self, body: &str, served: u64, now_ms: u64) -> NoticeResult {
        match vantage_model::notify::verify_with_ts(&self.secret, body) {
            Err(e) => {
                tracing::warn!("ignoring config announcement: {e}");
                NoticeResult::Rejected
            }
            Ok((_, ts)) if ts.abs_diff(now_ms) > self.window_ms => {
                tracing::warn!(
                    ts,
                    now_ms,
                    "ignoring a config announcement stamped outside the notice window (replayed?)"
                );
                NoticeResult::Stale
            }
            Ok((notice, _)) if notice.version <= 0 || notice.version as u64 <= served => {
                NoticeResult::Ignored
            }
            Ok((notice, _)) => {
                tracing::info!(
                    version = notice.version,
                    tenant = notice.tenant_id.as_deref().unwrap_or("-"),
                    "config change announced"
                );
                NoticeResult::Accepted
            }
        }
    }
}

/// Subscriber of the fleet's channels.
pub struct Bus {
    client: SubscriberClient,
    prefix: String,
    purges: &'static Purges,
    notices: Option<ConfigNotices>,
}

/// The channel the admin announces config changes on.
pub fn config_channel(prefix: &str) -> String {
    format!("{prefix}:config")
}

impl Bus {
    /// A subscriber for `settings`; it connects when the background service starts.
    pub fn new(
        settings: &RedisSettings,
        purges: &'static Purges,
        notices: Option<ConfigNotices>,
    ) -> Result<Bus, String> {
        let client = crate::redis_conn::builder(settings)?
            .build_subscriber_client()
            .map_err(|e| format!("server.redis: {e}"))?;
        Ok(Bus {
            client,
            prefix: settings.key_prefix.clone(),
            purges,
            notices,
        })
    }

    fn channels(&self) -> Vec<String> {
        let mut c = vec![Purges::channel(&self.prefix)];
        if self.notices.is_some() {
            c.push(config_channel(&self.prefix));
        }
        c
    }

    fn config_notice(&self, n: &ConfigNotices, body: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let result = n.judge(body, n.state.load().version, now);
        METRICS
            .config_notices
            .with_label_values(&[result.label()])
            .inc();
        if result == NoticeResult::Accepted {
            n.wake.notify_one();
        }
    }

    fn handle(&self, msg: Message) {
        let channel = msg.channel.to_string();
        let Some(body) = msg.value.as_string() else {
            return;
        };
        if channel == Purges::channel(&self.prefix) {
            match serde_json::from_str::<PurgeMessage>(&body) {
                Ok(m) => self.purges.apply(&m),
                Err(e) => tracing::warn!("ignoring malformed purge message: {e}"),
            }
        } else if channel == config_channel(&self.prefix) {
            if let Some(n) = &self.notices {
                self.config_notice(n, &body);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Bus {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut messages = self.client.message_rx();
        let mut reconnects = self.client.reconnect_rx();
        let conn = self.client.connect();
        let channels = self.channels();
        let mut subscribed = false;
        // Generations are read (through the limiter's client, which may still be connecting:
        // a cluster takes a few round trips) until that succeeds once per subscription.
        let mut synced = false;
        let mut sync_failures = 0u32;
        loop {
            if !subscribed && self.client.is_connected() {
                match self.client.subscribe(channels.clone()).await {
                    Ok(()) => {
                        subscribed = true;
                        synced = false;
                        // Announcements may have been missed while disconnected.
                        if let Some(n) = &self.notices {
                            n.wake.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!("subscribing to {channels:?}: {e}"),
                }
            }
            if subscribed && !synced {
                match self.purges.sync_generations().await {
                    Ok(()) => {
                        synced = true;
                        sync_failures = 0;
                    }
                    Err(e) => {
                        sync_failures += 1;
                        // Quiet while the limiter's client connects; loud if it lasts.
                        if sync_failures % 50 == 1 {
                            tracing::warn!("cache generations not synced (retrying): {e}");
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                m = messages.recv() => match m {
                    Ok(m) => self.handle(m),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("bus lagged by {n} messages");
                    }
                    Err(_) => break,
                },
                r = reconnects.recv() => {
                    if r.is_ok() {
                        // Subscriptions die with the connection; purges may have been missed.
                        subscribed = false;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)), if !subscribed || !synced => {}
            }
        }
        let _ = self.client.quit().await;
        conn.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_model::notify::{sign_at, Notice};

    const SECRET: &str = "a-shared-secret-of-the-fleet";

    #[tokio::test]
    async fn replayed_and_old_notices_wake_nothing() {
        let cfg = vantage_model::Config::from_yaml("{}").unwrap();
        let snap = Snapshot::build(cfg, 7, None, false).await.unwrap();
        let n = ConfigNotices {
            secret: SECRET.into(),
            wake: Arc::default(),
            state: Arc::new(ArcSwap::from_pointee(snap)),
            window_ms: 60_000,
        };
        let now = 1_800_000_000_000;
        let notice = |version| Notice {
            version,
            tenant_id: None,
        };
        assert_eq!(
            n.judge(&sign_at(SECRET, &notice(8), now - 1000), 7, now),
            NoticeResult::Accepted
        );
        // The same genuine notice, replayed after the version moved on.
        assert_eq!(
            n.judge(&sign_at(SECRET, &notice(8), now - 1000), 8, now),
            NoticeResult::Ignored
        );
        // A genuine notice from an hour ago (or from the future), even of a newer version.
        for ts in [now - 3_600_000, now + 3_600_000] {
            assert_eq!(
                n.judge(&sign_at(SECRET, &notice(99), ts), 8, now),
                NoticeResult::Stale
            );
        }
        assert_eq!(
            n.judge(&sign_at("another-secret", &notice(99), now), 8, now),
            NoticeResult::Rejected
        );
    }
}
