//! Test support: a fresh Postgres database per test, the real `vantage-admin` binary
//! serving on a free loopback port, admin tokens, an HTTP client and a Redis subscriber.
//!
//! Needs Postgres on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379;
//! `./scripts/test.sh` starts both.

#![allow(dead_code)]

use fred::prelude::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_postgres::NoTls;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const REDIS: &str = "redis://127.0.0.1:6379";
pub const SECRET: &str = "test-notify-secret-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vantage-admin")
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("vantage_test_{}", uuid::Uuid::new_v4().simple());
        let (c, conn) = tokio_postgres::connect(&format!("{PG}/postgres"), NoTls)
            .await
            .expect("Postgres on 127.0.0.1:5432 (run ./scripts/test.sh)");
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            url: format!("{PG}/{name}"),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (c, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) =
                    tokio_postgres::connect(&format!("{PG}/postgres"), NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Run a `vantage-admin` subcommand to completion against `db`; returns stdout.
pub fn run_cli(db: &TestDb, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vantage-admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `vantage-admin serve` with its own database and Redis channel prefix.
pub struct Admin {
    pub db: TestDb,
    pub base: String,
    pub prefix: String,
    pub root: String,
    pub http: reqwest::Client,
    child: Child,
    dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Admin {
    /// Migrate a fresh database and start the server (with a superadmin token in `root`).
    pub async fn start() -> Admin {
        Self::start_with("").await
    }

    /// Like [`Admin::start`], with extra lines for the settings file.
    pub async fn start_with(extra_yaml: &str) -> Admin {
        Self::start_logging(extra_yaml, "warn").await
    }

    /// Like [`Admin::start_with`], logging at `rust_log` into [`Admin::log`].
    pub async fn start_logging(extra_yaml: &str, rust_log: &str) -> Admin {
        let db = TestDb::new().await;
        run_cli(&db, &["migrate"]);
        let prefix = format!("vt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dir = std::env::temp_dir().join(format!("vantage-admin-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("admin.yaml");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:0\nredis_url: {REDIS}\nredis_prefix: {prefix}\nmax_body_bytes: 65536\n{extra_yaml}"
            ),
        )
        .unwrap();
        let mut child = Command::new(bin())
            .args(["--config", conf.to_str().unwrap(), "serve"])
            .env("DATABASE_URL", &db.url)
            .env("VANTAGE_NOTIFY_SECRET", SECRET)
            .env_remove("REDIS_URL")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("admin.log")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("vantage-admin listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("vantage-admin did not start");
        let root = run_cli(
            &db,
            &["create-token", "--role", "superadmin", "--name", "root"],
        )
        .trim()
        .to_string();
        Admin {
            db,
            base,
            prefix,
            root,
            http: reqwest::Client::new(),
            child,
            dir: TempDir(dir),
        }
    }

    /// What the server logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("admin.log")).unwrap_or_default()
    }

    pub fn channel(&self) -> String {
        format!("{}:config", self.prefix)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token_for(&self, tenant: &str) -> String {
        run_cli(
            &self.db,
            &[
                "create-token",
                "--role",
                "tenant_admin",
                "--tenant",
                tenant,
                "--name",
                "t",
            ],
        )
        .trim()
        .to_string()
    }

    /// Send a request as `token` with an optional JSON body.
    pub async fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.unwrap()).await
    }

    /// As the superadmin.
    pub async fn root(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call(&self.root.clone(), method, path, body).await
    }

    /// Create as superadmin, expecting 201; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let r = self.root("POST", path, Some(body)).await;
        assert_eq!(r.status, 201, "POST {path}: {}", r.body);
        r.body
    }

    pub async fn version(&self) -> i64 {
        let c = self.db.client().await;
        c.query_one("SELECT vantage_config_version()", &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub version: Option<i64>,
    pub body: Value,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let version = r
            .headers()
            .get("x-config-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            version,
            body,
        }
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Paths of the `fields` of an error body.
    pub fn fields(&self) -> Vec<String> {
        self.body["error"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["path"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A Redis subscriber on `channel`, already subscribed when this returns.
pub struct Subscriber {
    client: Client,
    rx: tokio::sync::broadcast::Receiver<fred::types::Message>,
}

impl Subscriber {
    pub async fn new(channel: &str) -> Subscriber {
        let client = Builder::from_config(Config::from_url(REDIS).unwrap())
            .build()
            .unwrap();
        client
            .init()
            .await
            .expect("Redis on 127.0.0.1:6379 (run ./scripts/test.sh)");
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

/// Minimal valid bodies.
pub mod bodies {
    use serde_json::{json, Value};

    pub fn tenant(sub: &str) -> Value {
        json!({"name": format!("Tenant {sub}"), "subdomain": sub})
    }

    pub fn origin(tenant: &str, port: u16) -> Value {
        json!({"tenant_id": tenant, "targets": [{"url": format!("http://127.0.0.1:{port}")}]})
    }

    pub fn route(tenant: &str, origin: &str, pattern: &str) -> Value {
        json!({"tenant_id": tenant, "origin_id": origin, "path_pattern": pattern})
    }
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}
