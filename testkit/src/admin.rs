//! A `vantage-admin serve` process and its JSON API (through the kit's HTTP client).

use crate::bins::{admin_bin, kill, log_file};
use crate::http::{exchange_while_sending, parse_response, Response};
use crate::ports::{mark_taken, port_open};
use crate::postgres::Database;
use crate::redis::REDIS;
use crate::wait::{temp_dir, wait_for};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command};

/// The notice secret of [`AdminSetup::fresh`] admins (at least 16 bytes).
pub const SECRET: &str = "test-notify-secret-0123456789";

/// Run a `vantage-admin` subcommand to completion against `db` (logging at warn); returns
/// its stdout. Panics when it fails.
pub fn admin_cli(db: &Database, args: &[&str]) -> String {
    let out = Command::new(admin_bin())
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("vantage-admin {args:?}: {e}"));
    assert!(
        out.status.success(),
        "vantage-admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How to start a `vantage-admin serve`: [`AdminSetup::new`] over a database and Redis of
/// the test's choosing, or [`AdminSetup::fresh`] with its own; then [`AdminSetup::start`].
pub struct AdminSetup {
    db: Option<Database>,
    redis_url: String,
    redis_prefix: Option<String>,
    secret: String,
    settings: String,
    rust_log: Option<String>,
}

impl AdminSetup {
    /// Serve over `db` (already migrated), announcing on `redis_url` (on the default
    /// channel, the one proxies listen to) with `secret`; logging as `RUST_LOG` says.
    pub fn new(db: &Database, redis_url: &str, secret: &str) -> AdminSetup {
        AdminSetup {
            db: Some(db.clone()),
            redis_url: redis_url.to_string(),
            redis_prefix: None,
            secret: secret.to_string(),
            settings: String::new(),
            rust_log: None,
        }
    }

    /// A freshly migrated database of its own, the shared Redis ([`REDIS`]) under a channel
    /// prefix of its own, [`SECRET`], bodies up to 64 KiB, logging at warn.
    pub fn fresh() -> AdminSetup {
        AdminSetup {
            db: None,
            redis_url: REDIS.to_string(),
            redis_prefix: Some(format!(
                "vt{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )),
            secret: SECRET.to_string(),
            settings: "max_body_bytes: 65536\n".to_string(),
            rust_log: Some("warn".to_string()),
        }
    }

    /// Serve over `db` (already migrated) instead of a fresh database, e.g. one the test
    /// filled before the server's first partition maintenance.
    pub fn database(mut self, db: &Database) -> AdminSetup {
        self.db = Some(db.clone());
        self
    }

    /// Announce on (and read quota counters from) the Redis at `url`, e.g. a private
    /// [`crate::Redis`] the test stops.
    pub fn redis(mut self, url: &str) -> AdminSetup {
        self.redis_url = url.to_string();
        self
    }

    /// Without Redis (`redis_url: ""`): no notices, no quota counters.
    pub fn without_redis(mut self) -> AdminSetup {
        // Written into the YAML settings as is: the empty string.
        self.redis_url = "\"\"".to_string();
        self
    }

    /// Extra lines for the settings file (`conf/admin.yaml` keys).
    pub fn settings(mut self, yaml: &str) -> AdminSetup {
        self.settings.push_str(yaml);
        if !self.settings.ends_with('\n') {
            self.settings.push('\n');
        }
        self
    }

    /// Log with this `RUST_LOG` filter (see [`Admin::log`]).
    pub fn rust_log(mut self, filter: &str) -> AdminSetup {
        self.rust_log = Some(filter.to_string());
        self
    }

    /// Start the server and wait until it listens; mints a superadmin token.
    pub fn start(self) -> Admin {
        let db = self.db.unwrap_or_else(Database::migrated);
        let dir = temp_dir("admin");
        let conf = dir.join("admin.yaml");
        let mut yaml = format!("listen: 127.0.0.1:0\nredis_url: {}\n", self.redis_url);
        if let Some(p) = &self.redis_prefix {
            yaml.push_str(&format!("redis_prefix: {p}\n"));
        }
        yaml.push_str(&self.settings);
        std::fs::write(&conf, yaml).expect("admin settings");
        let stdout = dir.join("stdout.log");
        let mut cmd = Command::new(admin_bin());
        cmd.arg("--config")
            .arg(&conf)
            .arg("serve")
            .env("DATABASE_URL", db.url())
            .env("VANTAGE_NOTIFY_SECRET", &self.secret)
            // The settings file says which Redis.
            .env_remove("REDIS_URL")
            .stdout(log_file(&stdout))
            .stderr(log_file(&dir.join("admin.log")));
        if let Some(filter) = &self.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd.spawn().expect("spawn vantage-admin");
        // Port 0: the admin binds a free port itself and prints its address.
        let base = wait_for("vantage-admin to print its address", 30, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "vantage-admin exited ({status}):\n{}",
                    std::fs::read_to_string(dir.join("admin.log")).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&stdout)
                .ok()?
                .lines()
                .find_map(|l| {
                    Some(
                        l.strip_prefix("vantage-admin listening on ")?
                            .trim()
                            .to_string(),
                    )
                })
        });
        let port: u16 = base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a port in {base:?}"));
        mark_taken(port);
        wait_for("vantage-admin", 30, || port_open(port).then_some(()));
        let root = admin_cli(
            &db,
            &["create-token", "--role", "superadmin", "--name", "root"],
        )
        .trim()
        .to_string();
        Admin {
            port,
            base,
            root,
            prefix: self.redis_prefix.unwrap_or_else(|| "vantage".to_string()),
            db,
            child,
            dir,
        }
    }
}

/// A running `vantage-admin serve`; killed when dropped.
pub struct Admin {
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A superadmin token.
    pub root: String,
    /// The Redis channel prefix (notices go to [`Admin::channel`]).
    pub prefix: String,
    /// The database it serves over.
    pub db: Database,
    child: Child,
    dir: PathBuf,
}

impl Admin {
    /// Serve over `db` (already migrated), announcing on `redis_url` with `secret`
    /// ([`AdminSetup::new`]).
    pub fn start(db: &Database, redis_url: &str, secret: &str) -> Admin {
        AdminSetup::new(db, redis_url, secret).start()
    }

    /// With a database and channel of its own ([`AdminSetup::fresh`]).
    pub fn fresh() -> Admin {
        AdminSetup::fresh().start()
    }

    /// What the server logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.log")).unwrap_or_default()
    }

    /// The channel of its config notices.
    pub fn channel(&self) -> String {
        format!("{}:config", self.prefix)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new tenant_admin token for `tenant` (id or subdomain).
    pub fn token_for(&self, tenant: &str) -> String {
        admin_cli(
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

    /// Send a request as `token` with an optional JSON body. The body is sent while the
    /// answer is read, so an answer before the whole body (a 413) is heard.
    pub fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> ApiResponse {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n",
            self.port
        );
        let body = body.map(|b| b.to_string().into_bytes());
        if let Some(b) = &body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        } else if matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body.as_deref().unwrap_or_default());
        let bytes = exchange_while_sending(self.port, &raw);
        let response = parse_response(&bytes, method == "HEAD").unwrap_or_else(|| {
            panic!(
                "{method} {path}: unparsable response: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        ApiResponse::from(response)
    }

    /// As the superadmin.
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> ApiResponse {
        self.call(&self.root, method, path, body)
    }

    /// Create as superadmin, expecting 201; returns the body.
    pub fn create(&self, path: &str, body: Value) -> Value {
        let r = self.root("POST", path, Some(body));
        assert_eq!(r.status, 201, "POST {path}: {}", r.body);
        r.body
    }

    /// The configuration version in the database (`vantage_config_version()`).
    pub fn version(&self) -> i64 {
        let v = self.db.sql("SELECT vantage_config_version()");
        v.parse()
            .unwrap_or_else(|e| panic!("config version {v:?}: {e}"))
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An admin API response: the [`Response`] (it derefs to it), its body as JSON (`Null` when
/// empty, a string when not JSON) and its `X-Config-Version`.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub version: Option<i64>,
    pub body: Value,
    pub response: Response,
}

impl From<Response> for ApiResponse {
    fn from(response: Response) -> ApiResponse {
        let version = response
            .header("x-config-version")
            .and_then(|v| v.parse().ok());
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body)
                .unwrap_or_else(|_| Value::String(response.text()))
        };
        ApiResponse {
            status: response.status,
            version,
            body,
            response,
        }
    }
}

impl std::ops::Deref for ApiResponse {
    type Target = Response;
    fn deref(&self) -> &Response {
        &self.response
    }
}

impl ApiResponse {
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

/// Minimal valid bodies of admin resources.
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

/// The `id` of a created resource.
pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}
