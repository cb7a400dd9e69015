//! The one place a `fred` client is configured from `server.redis`. The URL's scheme says
//! what the proxy talks to (fred's `Config::from_url`):
//!
//! - `redis://host:port[/db]`: one Redis server;
//! - `redis-cluster://host:port?node=host:port&node=...`: a Redis Cluster, found from any of
//!   the listed nodes (list several: a dead seed is skipped). Commands go to the master of
//!   their key's slot; on `MOVED`/`ASK` (a failover, a resharding) fred refreshes the slot
//!   map and follows. Every multi-key command and script of the proxy keeps its keys in one
//!   hash slot (`{hash tags}`), so a cluster needs no other setting;
//! - `redis-sentinel://host:26379?sentinelServiceName=NAME&node=host:26380`: the primary
//!   that Sentinel names for `NAME`, found again through the Sentinels after a failover.
//!
//! Every client of the proxy (the limiter's, shared by quotas, the cache tier and purges,
//! and the bus's subscriber) is built here, so all of them reach the same deployment alike.

use fred::prelude::*;
use std::time::Duration;
use vantage_model::RedisSettings;

/// Longest wait for a TCP connection to a node, and for the client's own commands (`PING`,
/// `CLUSTER SLOTS`, sentinel queries): a dead node is given up on quickly and the next one
/// tried, so a request never waits on it (requests have their own, smaller budget).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause between reconnection attempts (forever: Redis coming back is always picked up).
const RECONNECT_EVERY_MS: u32 = 100;

/// fred's view of `settings.url` (single node, cluster or sentinel, by scheme).
pub fn config(settings: &RedisSettings) -> Result<Config, String> {
    Config::from_url(&settings.url).map_err(|e| format!("server.redis.url: {e}"))
}

/// A client builder for `settings`: the deployment of the URL, short connection timeouts
/// and reconnection every 100 ms, forever. Each user adds its own command settings.
pub fn builder(settings: &RedisSettings) -> Result<Builder, String> {
    let mut builder = Builder::from_config(config(settings)?);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = CONNECT_TIMEOUT;
        })
        .set_policy(ReconnectPolicy::new_constant(0, RECONNECT_EVERY_MS));
    Ok(builder)
}

/// What kind of deployment a client talks to (for logs): `single`, `cluster`, `sentinel`.
pub fn topology(server: &ServerConfig) -> &'static str {
    match server {
        ServerConfig::Clustered { .. } => "cluster",
        ServerConfig::Sentinel { .. } => "sentinel",
        _ => "single",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            key_prefix: "vantage".into(),
            timeout_ms: 20,
        }
    }

    fn hosts(url: &str) -> Vec<String> {
        let mut h: Vec<String> = config(&settings(url))
            .unwrap()
            .server
            .hosts()
            .into_iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect();
        h.sort();
        h
    }

    #[test]
    fn a_plain_url_is_one_server() {
        let c = config(&settings("redis://127.0.0.1:6380/2")).unwrap();
        assert!(matches!(c.server, ServerConfig::Centralized { .. }));
        assert_eq!(c.database, Some(2));
        assert_eq!(hosts("redis://127.0.0.1:6380"), ["127.0.0.1:6380"]);
        assert_eq!(
            topology(&config(&settings("redis://127.0.0.1:6380")).unwrap().server),
            "single"
        );
    }

    #[test]
    fn a_cluster_url_lists_every_seed_node() {
        let url = "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002";
        let c = config(&settings(url)).unwrap();
        assert!(matches!(c.server, ServerConfig::Clustered { .. }));
        assert_eq!(
            hosts(url),
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert_eq!(topology(&config(&settings(url)).unwrap().server), "cluster");
        // With credentials too.
        let c = config(&settings("redis-cluster://user:pw@10.0.0.1:7000")).unwrap();
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some("pw"));
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_and_the_service() {
        let url =
            "redis-sentinel://127.0.0.1:26379/1?sentinelServiceName=vantage&node=127.0.0.1:26380";
        let c = config(&settings(url)).unwrap();
        match &c.server {
            ServerConfig::Sentinel { service_name, .. } => assert_eq!(service_name, "vantage"),
            other => panic!("not sentinel: {other:?}"),
        }
        assert_eq!(c.database, Some(1));
        assert_eq!(hosts(url), ["127.0.0.1:26379", "127.0.0.1:26380"]);
        assert_eq!(
            topology(&config(&settings(url)).unwrap().server),
            "sentinel"
        );
        // The service name is required.
        assert!(config(&settings("redis-sentinel://127.0.0.1:26379")).is_err());
    }

    #[test]
    fn a_bad_url_names_the_setting() {
        let e = config(&settings("not a url")).unwrap_err();
        assert!(e.starts_with("server.redis.url:"), "{e}");
    }
}
