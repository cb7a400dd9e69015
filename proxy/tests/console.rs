//! The operator console in a real browser: headless Chromium (Debian's `chromium`), driven
//! by `playwright-core` from `admin/console/tests/console.test.mjs`, against the real admin
//! over its own database, a real proxy in `source: postgres` mode and a loopback origin.
//! The scenarios (sign in, create a tenant, origin, route and key through the UI, the proxy
//! serving it, the fleet view, a chart with data, field errors, a tenant admin's view) are in
//! the script; this test starts the services, runs it and keeps its screenshots on failure
//! in `target/console-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vantage_testkit::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole script's time limit.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// `admin/console/tests` with its pinned `node_modules` (installed from the lock file when
/// missing).
fn script_dir() -> PathBuf {
    let dir = workspace().join("admin/console/tests");
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .output()
            .expect("npm (scripts/test.sh installs node and npm)");
        assert!(
            out.status.success(),
            "npm ci in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

#[test]
fn the_console_drives_the_gateway_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    let dir = script_dir();
    let db = Database::migrated();
    let redis = Redis::start();
    let admin = AdminSetup::new(&db, &redis.url(), SECRET).start();
    let origin = Origin::start("console-origin");
    let origin_port: u16 = origin
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the origin's port");
    let proxy = Proxy::start_with(
        "",
        &postgres_source(
            &db.url(),
            Some(&redis),
            SECRET,
            "console",
            "request_logs: {enabled: true, flush_interval_ms: 50}, fleet: {heartbeat_ms: 200}",
        ),
    );
    proxy.wait_redis_connected();
    // Another tenant, whose admin must see nothing of what the superadmin creates.
    let globex = admin.create(
        "/api/v1/tenants",
        serde_json::json!({"name": "globex", "subdomain": "globex"}),
    );
    let tenant_token = admin.token_for(&id(&globex));

    let artifacts = workspace().join("target/console-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let log = artifacts.join("console.test.log");
    let mut child = Command::new("node")
        .arg("console.test.mjs")
        .current_dir(&dir)
        .env("CONSOLE_URL", admin.url("/console/"))
        .env("ROOT_TOKEN", &admin.root)
        .env("TENANT_TOKEN", &tenant_token)
        .env("PROXY_PORT", proxy.port.to_string())
        .env("BASE_DOMAIN", "test.local")
        .env("ORIGIN_PORT", origin_port.to_string())
        .env("ARTIFACTS_DIR", &artifacts)
        .env("CHROMIUM_PATH", CHROMIUM)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (scripts/test.sh installs nodejs)");
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("the script") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    println!("{out}");
    let passed = status.is_some_and(|s| s.success());
    assert!(
        passed,
        "the browser scenarios failed ({}; screenshots in {}):\n{out}\nadmin log:\n{}\nproxy log:\n{}",
        status.map_or("timed out".to_string(), |s| s.to_string()),
        artifacts.display(),
        admin.log(),
        proxy.log()
    );
    // Every scenario ran and passed.
    let oks = out.lines().filter(|l| l.starts_with("ok - ")).count();
    assert!(oks >= 12, "only {oks} scenarios passed:\n{out}");
    assert!(!out.contains("not ok"), "{out}");
}
