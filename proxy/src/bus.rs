//! The fleet's message bus: a Redis pub/sub subscriber (`fred`) that applies what other
//! proxies publish — today cache purges (`<prefix>:cache:purge`). It resubscribes after
//! every reconnect and then catches up with state it may have missed.

use crate::cache::purge::{PurgeMessage, Purges};
use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;
use vantage_model::RedisSettings;

/// Subscriber of the fleet's channels.
pub struct Bus {
    client: SubscriberClient,
    prefix: String,
    purges: &'static Purges,
}

impl Bus {
    /// A subscriber for `settings`; it connects when the background service starts.
    pub fn new(settings: &RedisSettings, purges: &'static Purges) -> Result<Bus, String> {
        let config =
            Config::from_url(&settings.url).map_err(|e| format!("server.redis.url: {e}"))?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(500);
            })
            .set_policy(ReconnectPolicy::new_constant(0, 100))
            .build_subscriber_client()
            .map_err(|e| format!("server.redis: {e}"))?;
        Ok(Bus {
            client,
            prefix: settings.key_prefix.clone(),
            purges,
        })
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
        }
    }
}

#[async_trait]
impl BackgroundService for Bus {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut messages = self.client.message_rx();
        let mut reconnects = self.client.reconnect_rx();
        let conn = self.client.connect();
        let channel = Purges::channel(&self.prefix);
        let mut subscribed = false;
        loop {
            if !subscribed && self.client.is_connected() {
                match self.client.subscribe(channel.as_str()).await {
                    Ok(()) => {
                        subscribed = true;
                        if let Err(e) = self.purges.sync_generations().await {
                            tracing::warn!("cache generations not synced: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("subscribing to {channel}: {e}"),
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
                _ = tokio::time::sleep(Duration::from_millis(100)), if !subscribed => {}
            }
        }
        let _ = self.client.quit().await;
        conn.abort();
    }
}
