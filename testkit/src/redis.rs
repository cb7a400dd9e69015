//! Redis: a private `redis-server` per test (for tests that stop it or watch its keys), and
//! a subscriber on the machine's shared server.

use crate::bins::Served;
use fred::prelude::*;
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
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
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
