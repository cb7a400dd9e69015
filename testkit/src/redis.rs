//! Redis: a private `redis-server` per test (for tests that stop it or watch its keys), a
//! private Redis Cluster (three masters, three replicas) and a private Sentinel-watched
//! primary with failover helpers, and a subscriber on the machine's shared server.

use crate::bins::Served;
use crate::ports::PortHold;
use crate::wait::{temp_dir, wait_for};
use fred::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The machine's shared Redis (`./scripts/test.sh` starts it).
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// A private redis-server on a free loopback port (never the machine's shared one).
pub struct Redis {
    pub port: u16,
    served: Served,
}

impl Redis {
    pub fn start() -> Redis {
        let served = Served::new();
        let mut r = Redis {
            port: served.port,
            served,
        };
        r.restart();
        r
    }

    /// (Re)start on the same port, empty.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        self.served
            .spawn(&mut cmd, "redis-server (scripts/test.sh installs it)");
    }

    pub fn stop(&mut self) {
        self.served.stop();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Run redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&["-p", &self.port.to_string()], args)
    }
}

/// A Redis subscriber on `channel`, already subscribed when this returns.
pub struct Subscriber {
    client: Client,
    rx: tokio::sync::broadcast::Receiver<fred::types::Message>,
}

impl Subscriber {
    /// On the shared Redis ([`REDIS`]).
    pub async fn new(channel: &str) -> Subscriber {
        Self::on(REDIS, channel).await
    }

    /// On the Redis at `url`.
    pub async fn on(url: &str, channel: &str) -> Subscriber {
        let client = Builder::from_config(Config::from_url(url).unwrap())
            .build()
            .unwrap();
        client
            .init()
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} (run ./scripts/test.sh): {e}"));
        let rx = client.message_rx();
        client.subscribe(channel).await.unwrap();
        Subscriber { client, rx }
    }

    /// The next message (waits for it, at most 10 s).
    pub async fn next(&mut self) -> String {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no config notice arrived")
            .unwrap();
        msg.value.convert::<String>().unwrap()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let c = self.client.clone();
        tokio::spawn(async move {
            let _ = c.quit().await;
        });
    }
}

/// How long a cluster node may be unreachable before its peers flag it failed (and its
/// replica takes over): short for tests, long enough that a busy machine never flags a
/// live node.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2000;

/// A private Redis Cluster: three masters with one replica each, six `redis-server
/// --cluster-enabled yes` on fresh loopback ports (their cluster bus ports fresh too),
/// joined by `redis-cli --cluster create`. Every process is killed on drop.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    dir: PathBuf,
}

struct ClusterNode {
    served: Served,
    bus: PortHold,
    alive: bool,
}

/// One line of `CLUSTER NODES`, as one node sees another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// Flagged `fail` or `fail?`.
    pub failing: bool,
    /// The master's id (replicas).
    pub master_id: Option<String>,
    /// Slot ranges served (masters).
    pub slots: Vec<(u16, u16)>,
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(ClusterNodeInfo {
                id: f[0].to_string(),
                port,
                master: flags.contains(&"master"),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

impl RedisCluster {
    /// Start six nodes, create the cluster, and wait until every node sees the same three
    /// masters covering all slots, each with a replica in sync.
    pub fn start() -> RedisCluster {
        let mut c = RedisCluster {
            nodes: (0..6)
                .map(|_| ClusterNode {
                    served: Served::new(),
                    bus: PortHold::new(),
                    alive: false,
                })
                .collect(),
            dir: temp_dir("redis-cluster"),
        };
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for p in c.ports() {
            cmd.arg(format!("127.0.0.1:{p}"));
        }
        let out = cmd
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c.wait_healthy();
        c
    }

    fn spawn(&mut self, i: usize) {
        let dir = self.dir.display().to_string();
        let node = &mut self.nodes[i];
        let port = node.served.port.to_string();
        let bus = node.bus.port.to_string();
        let conf = format!("nodes-{port}.conf");
        let log = format!("{dir}/node-{port}.log");
        // A replica stores its master's snapshot in the cluster's directory, one file each.
        let rdb = format!("dump-{port}.rdb");
        let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--dbfilename",
            &rdb,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            // The bus port explicitly: port + 10000 may not be free.
            "--cluster-port",
            &bus,
            "--cluster-node-timeout",
            &timeout,
            // A replica may always take over, however long ago it last heard its master.
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            &log,
        ]);
        node.bus.release();
        node.served
            .spawn(&mut cmd, "redis-server (scripts/test.sh installs it)");
        node.alive = true;
    }

    /// The six nodes' ports (dead ones too).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.served.port).collect()
    }

    /// The ports of the nodes that run.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.served.port)
            .collect()
    }

    /// `redis-cluster://` with every node as a seed (fred's cluster URL).
    pub fn url(&self) -> String {
        let ports = self.ports();
        let nodes: Vec<String> = ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://127.0.0.1:{}?{}", ports[0], nodes.join("&"))
    }

    /// Run redis-cli against the node on `port` (no redirections followed).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(&["-p", &port.to_string()], args)
    }

    /// Run redis-cli in cluster mode (`-c`: follows redirections) on a live node.
    pub fn cli_any(&self, args: &[&str]) -> String {
        let port = self.live_ports()[0];
        redis_cli(&["-c", "-p", &port.to_string()], args)
    }

    /// The cluster as the node on `port` sees it.
    pub fn view(&self, port: u16) -> Vec<ClusterNodeInfo> {
        parse_cluster_nodes(&self.cli(port, &["CLUSTER", "NODES"]))
    }

    /// The live masters that serve slots, as the first live node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let live = self.live_ports();
        let mut m: Vec<u16> = self
            .view(live[0])
            .into_iter()
            .filter(|n| n.master && !n.slots.is_empty() && live.contains(&n.port))
            .map(|n| n.port)
            .collect();
        m.sort_unstable();
        m
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        self.cli(self.live_ports()[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key:?}"))
    }

    /// The port of the master serving `slot`, as the first live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.view(self.live_ports()[0])
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .port
    }

    /// The port of the master holding `key`.
    pub fn master_of(&self, key: &str) -> u16 {
        self.master_of_slot(self.keyslot(key))
    }

    /// The port of the (live) replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let live = self.live_ports();
        let view = self.view(live[0]);
        let id = &view
            .iter()
            .find(|n| n.port == master)
            .unwrap_or_else(|| panic!("no node on {master}"))
            .id;
        view.iter()
            .find(|n| n.master_id.as_ref() == Some(id) && live.contains(&n.port))
            .unwrap_or_else(|| panic!("no live replica of {master}"))
            .port
    }

    /// The keys matching `pattern` held by the node on `port` (`SCAN`).
    pub fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        let out = self.cli(port, &["--scan", "--pattern", pattern]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The keys matching `pattern` of each live master: (port, keys).
    pub fn keys_by_master(&self, pattern: &str) -> Vec<(u16, Vec<String>)> {
        self.masters()
            .into_iter()
            .map(|m| (m, self.keys_on(m, pattern)))
            .collect()
    }

    /// How many clients subscribe to `channel`, summed over the live nodes (a cluster's
    /// subscribers each sit on one node; a publish reaches all of them).
    pub fn subscribers(&self, channel: &str) -> usize {
        self.live_ports()
            .into_iter()
            .map(|p| {
                self.cli(p, &["PUBSUB", "NUMSUB", channel])
                    .lines()
                    .nth(1)
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Whether every live node says `cluster_state:ok`, agrees on the masters serving the
    /// 16384 slots, sees every live node up as such a master or a replica of one, and every
    /// live replica's link is up.
    fn healthy(&self) -> bool {
        let live = self.live_ports();
        let mut reference: Option<Vec<u16>> = None;
        for &p in &live {
            let info = self.cli(p, &["CLUSTER", "INFO"]);
            if info_field(&info, "cluster_state").as_deref() != Some("ok") {
                return false;
            }
            let view = self.view(p);
            let mut masters: Vec<u16> = view
                .iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .map(|n| n.port)
                .collect();
            masters.sort_unstable();
            let slots: u32 = view
                .iter()
                .filter(|n| n.master)
                .flat_map(|n| &n.slots)
                .map(|(a, b)| u32::from(b - a) + 1)
                .sum();
            // Every live node seen up, as a master serving slots or a replica of one.
            let serving = |id: &String| {
                view.iter()
                    .any(|m| &m.id == id && m.master && !m.slots.is_empty())
            };
            let live_seen_ok = live.iter().all(|l| {
                view.iter().any(|n| {
                    n.port == *l
                        && !n.failing
                        && if n.master {
                            !n.slots.is_empty()
                        } else {
                            n.master_id.as_ref().is_some_and(serving)
                        }
                })
            });
            if slots != 16384
                || !live_seen_ok
                || masters.iter().any(|m| !live.contains(m))
                || reference.get_or_insert_with(|| masters.clone()) != &masters
            {
                return false;
            }
            let me = view.iter().find(|n| n.port == p);
            if me.is_some_and(|n| !n.master) {
                let repl = self.cli(p, &["INFO", "replication"]);
                if info_field(&repl, "master_link_status").as_deref() != Some("up") {
                    return false;
                }
            }
        }
        true
    }

    /// Wait until the cluster is healthy: every live node agrees on the masters, all slots
    /// served, replicas in sync.
    pub fn wait_healthy(&self) {
        wait_for("the redis cluster to be healthy", 60, || {
            self.healthy().then_some(())
        });
    }

    /// A manual failover: `CLUSTER FAILOVER` on the replica on `replica` (its master hands
    /// over once the replica has caught up: nothing acknowledged is lost). Returns when
    /// every node sees it as master and the cluster is healthy again.
    pub fn failover(&self, replica: u16) {
        // A manual failover that does not complete in time (Redis gives it 5 s) is
        // abandoned by Redis: ask again.
        let mut attempts = 0;
        wait_for(&format!("{replica} to take over"), 60, || {
            let role = self.cli(replica, &["ROLE"]);
            if role.lines().next() == Some("master") {
                return Some(());
            }
            if attempts == 0 || attempts % 100 == 0 {
                let ok = self.cli(replica, &["CLUSTER", "FAILOVER"]);
                assert_eq!(ok.trim(), "OK", "CLUSTER FAILOVER on {replica}");
            }
            attempts += 1;
            None
        });
        self.wait_master(replica);
    }

    /// The last lines of the log of the node on `port` (for failure messages).
    pub fn log_tail(&self, port: u16, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("node-{port}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Wait until the node on `port` is a master serving slots in every live node's view
    /// and the cluster is healthy.
    pub fn wait_master(&self, port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let everywhere = self.live_ports().into_iter().all(|p| {
                self.view(p)
                    .iter()
                    .any(|n| n.port == port && n.master && !n.slots.is_empty())
            });
            if everywhere && self.healthy() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let views: Vec<String> = self
                    .live_ports()
                    .into_iter()
                    .map(|p| {
                        format!(
                            "--- {p}:\n{}{}\nlog:\n{}",
                            self.cli(p, &["CLUSTER", "INFO"])
                                .lines()
                                .next()
                                .unwrap_or(""),
                            self.cli(p, &["CLUSTER", "NODES"]),
                            self.log_tail(p, 15)
                        )
                    })
                    .collect();
                panic!("{port} is not master everywhere:\n{}", views.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the replica on `replica` has applied everything its master acknowledged
    /// (equal replication offsets), so a crash of the master loses no write.
    pub fn wait_replicated(&self, replica: u16) {
        let master = self
            .view(replica)
            .into_iter()
            .find(|n| n.port == replica)
            .and_then(|n| n.master_id)
            .and_then(|id| self.view(replica).into_iter().find(|n| n.id == id))
            .unwrap_or_else(|| panic!("{replica} is not a replica"))
            .port;
        wait_for(&format!("{replica} in sync with {master}"), 30, || {
            let m = info_field(
                &self.cli(master, &["INFO", "replication"]),
                "master_repl_offset",
            );
            let r = info_field(
                &self.cli(replica, &["INFO", "replication"]),
                "slave_repl_offset",
            );
            (m.is_some() && m == r).then_some(())
        });
    }

    /// Kill the node on `port` (SIGKILL) and wait until it refuses connections.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.served.port == port)
            .unwrap_or_else(|| panic!("no node on {port}"));
        node.served.stop();
        node.bus.hold();
        node.alive = false;
    }

    /// Kill the master on `master` once its replica is in sync; returns the replica, which
    /// takes over when the other masters flag the dead one (after
    /// [`CLUSTER_NODE_TIMEOUT_MS`]): wait for that with [`RedisCluster::wait_master`].
    pub fn kill_master(&mut self, master: u16) -> u16 {
        let replica = self.replica_of(master);
        self.wait_replicated(replica);
        self.kill(master);
        replica
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // Served's own drop kills the process.
            n.alive = false;
        }
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name the Sentinel of [`RedisSentinel`] knows its primary by.
pub const SENTINEL_SERVICE: &str = "vantage";

/// A private primary with one replica, watched by one Sentinel (quorum 1: it alone decides
/// a failover), each on fresh loopback ports; every process is killed on drop.
pub struct RedisSentinel {
    data: Vec<(Served, bool)>,
    sentinel: Served,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Start the primary, its replica (in sync), and the Sentinel (knowing both).
    pub fn start() -> RedisSentinel {
        let dir = temp_dir("redis-sentinel");
        let mut s = RedisSentinel {
            data: vec![(Served::new(), false), (Served::new(), false)],
            sentinel: Served::new(),
            dir,
        };
        let primary = s.data[0].0.port;
        s.spawn_data(0, None);
        s.spawn_data(1, Some(primary));
        let replica = s.data[1].0.port;
        wait_for("the replica in sync", 30, || {
            let repl = s.cli(replica, &["INFO", "replication"]);
            (info_field(&repl, "master_link_status").as_deref() == Some("up")).then_some(())
        });
        let conf = s.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 2000\n",
                port = s.sentinel.port,
                dir = s.dir.display(),
            ),
        )
        .expect("sentinel.conf");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        s.sentinel.spawn(
            &mut cmd,
            "redis-server --sentinel (scripts/test.sh installs it)",
        );
        s.wait_replica_known(replica);
        s
    }

    fn spawn_data(&mut self, i: usize, replica_of: Option<u16>) {
        let port = self.data[i].0.port.to_string();
        let dir = self.dir.join(format!("node-{port}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let dir = dir.display().to_string();
        let log = format!("{dir}/node.log");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            // A replica stores the primary's snapshot in its own directory, never the
            // test's working directory (where a later server would load it).
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            &log,
        ]);
        if let Some(p) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
        }
        self.data[i]
            .0
            .spawn(&mut cmd, "redis-server (scripts/test.sh installs it)");
        self.data[i].1 = true;
    }

    /// `redis-sentinel://` naming the Sentinel and the service (fred's sentinel URL).
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinel.port
        )
    }

    /// Run redis-cli against `port` (a data node or the Sentinel).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(&["-p", &port.to_string()], args)
    }

    /// Run redis-cli against the Sentinel.
    pub fn sentinel_cli(&self, args: &[&str]) -> String {
        self.cli(self.sentinel.port, args)
    }

    /// The primary's port, as the Sentinel names it.
    pub fn primary(&self) -> u16 {
        let out = self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE]);
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the Sentinel names no primary: {out}"))
    }

    /// The live data node that is not the primary.
    pub fn replica(&self) -> u16 {
        let primary = self.primary();
        self.data
            .iter()
            .find(|(s, alive)| *alive && s.port != primary)
            .map(|(s, _)| s.port)
            .expect("a live replica")
    }

    /// Wait until the Sentinel knows the replica on `port` as a healthy replica of its
    /// primary, with its link up and in sync (a failover can pick it, losing nothing).
    fn wait_replica_known(&self, port: u16) {
        wait_for(&format!("the Sentinel to know replica {port}"), 60, || {
            let out = self.sentinel_cli(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE]);
            // Flat key/value lines per replica: find the block of `port`.
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            let known = lines
                .windows(2)
                .any(|w| w[0] == "port" && w[1] == port.to_string())
                && lines.windows(2).any(|w| w[0] == "flags" && w[1] == "slave")
                && lines
                    .windows(2)
                    .any(|w| w[0] == "master-link-status" && w[1] == "ok");
            let primary = self.primary();
            let m = info_field(
                &self.cli(primary, &["INFO", "replication"]),
                "master_repl_offset",
            );
            let r = info_field(
                &self.cli(port, &["INFO", "replication"]),
                "slave_repl_offset",
            );
            (known && m.is_some() && m == r).then_some(())
        });
    }

    /// Wait until the data node on `port` is the primary: the Sentinel names it and it
    /// says so itself.
    pub fn wait_primary(&self, port: u16) {
        wait_for(&format!("{port} to be the primary"), 60, || {
            let named = self.primary() == port;
            let role = self.cli(port, &["ROLE"]);
            (named && role.lines().next() == Some("master")).then_some(())
        });
    }

    /// `SENTINEL FAILOVER`: the replica is promoted and the old primary, once the Sentinel
    /// has made it a replica of the new one (disconnecting its clients), catches up. Returns
    /// the new primary.
    pub fn failover(&self) -> u16 {
        let old = self.primary();
        let new = self.replica();
        self.wait_replica_known(new);
        let ok = self.sentinel_cli(&["SENTINEL", "FAILOVER", SENTINEL_SERVICE]);
        assert_eq!(ok.trim(), "OK", "SENTINEL FAILOVER");
        self.wait_primary(new);
        self.wait_replica_known(old);
        new
    }

    /// Kill the primary once the replica is in sync; returns the replica, which the
    /// Sentinel promotes after `down-after-milliseconds` (1 s): wait for that with
    /// [`RedisSentinel::wait_primary`].
    pub fn kill_primary(&mut self) -> u16 {
        let primary = self.primary();
        let replica = self.replica();
        self.wait_replica_known(replica);
        let node = self
            .data
            .iter_mut()
            .find(|(s, _)| s.port == primary)
            .expect("the primary");
        node.0.stop();
        node.1 = false;
        replica
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        // Served's drop kills each process.
        self.data.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli <options> <args>`: its standard output.
fn redis_cli(options: &[&str], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(options)
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
