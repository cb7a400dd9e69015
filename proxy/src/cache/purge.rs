//! Purges: everything of a tenant (a per-tenant generation that is part of every cache key,
//! so a purge is one counter bump) and one URL of a tenant (a purge time: entries stored
//! before it are refetched, whatever their variant or storage).
//!
//! With Redis configured, generations live in one Redis hash so every proxy of the fleet
//! keys the shared tier alike, and each purge is published on `<prefix>:cache:purge` so the
//! other proxies drop their memory entries too. On a Redis Cluster the hash is one key (on
//! one master) and a publish on any node reaches the subscribers of every node.

use crate::telemetry::metrics::METRICS;
use fred::prelude::*;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// URL purge times kept per tenant; past this a purge of the whole tenant replaces them.
const MAX_URL_PURGES_PER_TENANT: usize = 10_000;

/// A purge as published to the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PurgeMessage {
    /// Everything of the tenant: its new generation.
    Tenant { tenant: String, generation: u64 },
    /// One URL (path, and query if given) of the tenant.
    Url {
        tenant: String,
        path: String,
        query: Option<String>,
    },
}

#[derive(Default)]
struct UrlPurges {
    /// path → (query or any, when).
    by_path: HashMap<String, Vec<(Option<String>, SystemTime)>>,
    count: usize,
}

/// Purge state of this proxy.
#[derive(Default)]
pub struct Purges {
    generations: RwLock<HashMap<String, u64>>,
    urls: RwLock<HashMap<String, UrlPurges>>,
    redis: OnceLock<(Client, String)>,
}

/// Why a purge did not reach the fleet.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis did not answer in time")]
    Timeout,
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Purges {
    /// Share purges with the fleet through this client and key prefix.
    pub fn attach_redis(&self, client: Client, prefix: &str) {
        let _ = self.redis.set((client, prefix.to_string()));
    }

    /// The channel purges are published on.
    pub fn channel(prefix: &str) -> String {
        format!("{prefix}:cache:purge")
    }

    fn generations_key(prefix: &str) -> String {
        format!("{prefix}:cache:generation")
    }

    /// The tenant's current generation (part of every cache key).
    pub fn generation(&self, tenant: &str) -> u64 {
        self.generations.read().get(tenant).copied().unwrap_or(0)
    }

    /// Was (tenant, path, query) purged after `created`?
    pub fn purged_after(
        &self,
        tenant: &str,
        path: &str,
        query: Option<&str>,
        created: SystemTime,
    ) -> bool {
        let urls = self.urls.read();
        let Some(t) = urls.get(tenant) else {
            return false;
        };
        t.by_path.get(path).is_some_and(|records| {
            records
                .iter()
                .any(|(q, at)| *at >= created && (q.is_none() || q.as_deref() == query))
        })
    }

    fn set_generation(&self, tenant: &str, generation: u64) -> bool {
        let mut g = self.generations.write();
        let cur = g.entry(tenant.to_string()).or_insert(0);
        if generation > *cur {
            *cur = generation;
            drop(g);
            // Older URL purges are covered by the new generation.
            self.urls.write().remove(tenant);
            true
        } else {
            false
        }
    }

    fn bump_local(&self, tenant: &str) -> u64 {
        let next = self.generation(tenant) + 1;
        self.set_generation(tenant, next);
        next
    }

    fn record_url(&self, tenant: &str, path: &str, query: Option<&str>) {
        let mut urls = self.urls.write();
        let t = urls.entry(tenant.to_string()).or_default();
        if t.count >= MAX_URL_PURGES_PER_TENANT {
            drop(urls);
            self.bump_local(tenant);
            return;
        }
        t.count += 1;
        t.by_path
            .entry(path.to_string())
            .or_default()
            .push((query.map(str::to_string), SystemTime::now()));
    }

    /// Apply a purge received from the fleet.
    pub fn apply(&self, msg: &PurgeMessage) {
        match msg {
            PurgeMessage::Tenant { tenant, generation } => {
                self.set_generation(tenant, *generation);
            }
            PurgeMessage::Url {
                tenant,
                path,
                query,
            } => self.record_url(tenant, path, query.as_deref()),
        }
    }

    /// The path (and query) of an invalidated URL: local only, as RFC 9111 §4.4 asks of a
    /// cache after an unsafe method succeeds.
    pub fn invalidate_local(&self, tenant: &str, path: &str, query: Option<&str>) {
        self.record_url(tenant, path, query);
    }

    /// Purge one URL of a tenant here and on every proxy of the fleet. Without a query, every
    /// query of the path is purged.
    pub async fn purge_url(
        &self,
        tenant: &str,
        path: &str,
        query: Option<&str>,
    ) -> Result<bool, PurgeError> {
        self.record_url(tenant, path, query);
        METRICS.cache_purges.with_label_values(&["url"]).inc();
        self.publish(&PurgeMessage::Url {
            tenant: tenant.to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
        })
        .await
    }

    /// Purge everything of a tenant here and on every proxy. Returns the new generation and
    /// whether the fleet was told.
    pub async fn purge_tenant(&self, tenant: &str) -> Result<(u64, bool), PurgeError> {
        METRICS.cache_purges.with_label_values(&["tenant"]).inc();
        let Some((client, prefix)) = self.redis.get() else {
            return Ok((self.bump_local(tenant), false));
        };
        let shared: Result<i64, _> = match tokio::time::timeout(
            REDIS_TIMEOUT,
            client.hincrby(Self::generations_key(prefix), tenant, 1),
        )
        .await
        {
            Ok(r) => r.map_err(PurgeError::from),
            Err(_) => Err(PurgeError::Timeout),
        };
        match shared {
            Ok(g) => {
                let generation = (g.max(0) as u64).max(self.generation(tenant) + 1);
                self.set_generation(tenant, generation);
                let told = self
                    .publish(&PurgeMessage::Tenant {
                        tenant: tenant.to_string(),
                        generation,
                    })
                    .await?;
                Ok((generation, told))
            }
            Err(e) => {
                // Purged here at least; the fleet is not reachable.
                self.bump_local(tenant);
                Err(e)
            }
        }
    }

    async fn publish(&self, msg: &PurgeMessage) -> Result<bool, PurgeError> {
        let Some((client, prefix)) = self.redis.get() else {
            return Ok(false);
        };
        let body = serde_json::to_string(msg).unwrap_or_default();
        match tokio::time::timeout(
            REDIS_TIMEOUT,
            client.publish::<i64, _, _>(Self::channel(prefix), body),
        )
        .await
        {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PurgeError::Timeout),
        }
    }

    /// Catch up with the fleet's generations (after connecting to Redis).
    pub async fn sync_generations(&self) -> Result<(), PurgeError> {
        let Some((client, prefix)) = self.redis.get() else {
            return Ok(());
        };
        let all: HashMap<String, i64> = match tokio::time::timeout(
            REDIS_TIMEOUT,
            client.hgetall(Self::generations_key(prefix)),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(PurgeError::Timeout),
        };
        for (tenant, g) in all {
            self.set_generation(&tenant, g.max(0) as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_purge_covers_older_entries_only() {
        let p = Purges::default();
        let before = SystemTime::now() - Duration::from_secs(1);
        p.invalidate_local("acme", "/a", Some("x=1"));
        assert!(p.purged_after("acme", "/a", Some("x=1"), before));
        assert!(!p.purged_after("acme", "/a", Some("x=2"), before));
        assert!(!p.purged_after("globex", "/a", Some("x=1"), before));
        let after = SystemTime::now() + Duration::from_secs(1);
        assert!(!p.purged_after("acme", "/a", Some("x=1"), after));
        // Without a query, every query of the path.
        p.invalidate_local("acme", "/b", None);
        assert!(p.purged_after("acme", "/b", Some("q"), before));
        assert!(p.purged_after("acme", "/b", None, before));
    }

    #[test]
    fn generations_only_move_forward_and_clear_url_purges() {
        let p = Purges::default();
        assert_eq!(p.generation("acme"), 0);
        p.apply(&PurgeMessage::Tenant {
            tenant: "acme".into(),
            generation: 3,
        });
        assert_eq!(p.generation("acme"), 3);
        p.apply(&PurgeMessage::Tenant {
            tenant: "acme".into(),
            generation: 2,
        });
        assert_eq!(p.generation("acme"), 3);
        p.invalidate_local("acme", "/a", None);
        assert_eq!(p.bump_local("acme"), 4);
        assert!(!p.purged_after("acme", "/a", None, SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn too_many_url_purges_become_a_tenant_purge() {
        let p = Purges::default();
        for i in 0..=MAX_URL_PURGES_PER_TENANT {
            p.invalidate_local("acme", &format!("/{i}"), None);
        }
        assert_eq!(p.generation("acme"), 1);
    }

    #[test]
    fn messages_round_trip() {
        let m = PurgeMessage::Url {
            tenant: "acme".into(),
            path: "/a".into(),
            query: None,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<PurgeMessage>(&s).unwrap(), m);
    }
}
