//! One test kit for the VantageEdge crates (a dev-dependency of vantage-proxy and
//! vantage-admin). It runs the real binaries and real servers, never the crates as
//! libraries:
//!
//! - [`ports`]: loopback ports handed out once per test process, held while unused;
//! - [`wait`]: polling on a condition ([`wait_for`]) and fresh temp dirs;
//! - [`bins`]: where the `vantage-proxy` / `vantage-admin` binaries are (built when missing);
//! - [`http`]: a raw HTTP/1.1 client over TCP and its [`Response`];
//! - [`origin`]: demo origins (`vantage-proxy demo-origin`) and an upgrade-echo origin;
//! - [`proxy`]: a `vantage-proxy` process over a generated config file;
//! - [`redis`]: a private `redis-server`, a private Redis Cluster and a Sentinel-watched
//!   primary (failovers, killed masters), and a subscriber on the shared one;
//! - [`postgres`]: databases of a test's own, and private Postgres clusters;
//! - [`admin`]: a `vantage-admin serve` process and its JSON API;
//! - [`collector`]: an OTLP/HTTP collector stand-in;
//! - [`calendar`]: time zones far from a quota period's boundary;
//! - [`usage`]: usage batches applied as the proxies apply them;
//! - [`worker`]: `vantage-admin worker` processes (SIGKILL and restart them);
//! - [`receiver`]: a webhook receiver that records requests and answers as scripted.
//!
//! `use vantage_testkit::*;` brings all of it in.

pub mod admin;
pub mod bins;
pub mod calendar;
pub mod collector;
pub mod dns;
pub mod http;
pub mod origin;
pub mod ports;
pub mod postgres;
pub mod proxy;
pub mod receiver;
pub mod redis;
pub mod usage;
pub mod wait;
pub mod worker;

pub use admin::{admin_cli, bodies, id, Admin, AdminSetup, ApiResponse, SECRET};
pub use bins::{admin_bin, check_config, hash_key, proxy_bin};
pub use calendar::{steady_zone, unix_now};
pub use collector::{contains, Collector};
pub use dns::{Dns, Record as DnsRecord};
pub use http::{
    exchange_while_sending, parse_response, raw_exchange, request, tally, try_request, Load,
    Response,
};
pub use origin::{upgrade, Origin, UpgradeOrigin};
pub use ports::{connect_from, free_port, listener, port_open, PortHold};
pub use postgres::{psql, Database, PgCluster, PG_PORT};
pub use proxy::{postgres_source, server_section, validate_decision, Proxy};
pub use receiver::{Received, Receiver, Reply};
pub use redis::{
    ClusterNodeInfo, Redis, RedisCluster, RedisSentinel, Subscriber, CLUSTER_NODE_TIMEOUT_MS,
    REDIS, SENTINEL_SERVICE,
};
pub use usage::{apply_batch, apply_usage_batch, UsageRow, ViolationRow};
pub use wait::{temp_dir, wait_for};
pub use worker::{Worker, TEST_WORKER_SETTINGS};
