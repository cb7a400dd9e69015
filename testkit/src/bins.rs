//! The binaries under test, and child processes serving on one port.

use crate::ports::{port_open, PortHold};
use crate::wait::{temp_dir, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The directory cargo puts the workspace's binaries in (`target/debug`): the test
/// executable runs from its `deps/` folder.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable's folder");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The workspace binary `name` (of the package of the same name). Cargo builds a package's
/// binaries before running its integration tests, so a test of that package finds it fresh;
/// a test of another package builds it here when a narrower run did not (once per process).
fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<()>> = OnceLock::new();
    let dir = bin_dir();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let _once = BUILT.get_or_init(Default::default).lock().unwrap();
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", name]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let ok = cmd
            .status()
            .unwrap_or_else(|e| panic!("cargo build -p {name}: {e}"))
            .success();
        assert!(ok && path.exists(), "{name} not built at {path:?}");
    }
    path
}

/// The `vantage-proxy` binary (also the demo origin: `vantage-proxy demo-origin`).
pub fn proxy_bin() -> PathBuf {
    workspace_bin("vantage-proxy")
}

/// The `vantage-admin` binary.
pub fn admin_bin() -> PathBuf {
    workspace_bin("vantage-admin")
}

/// The stored form of an API key (`vantage-proxy hash-key KEY`).
pub fn hash_key(key: &str) -> String {
    let out = Command::new(proxy_bin())
        .args(["hash-key", key])
        .output()
        .expect("hash-key");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Run `vantage-proxy --check` on `yaml`: (valid, stderr).
pub fn check_config(yaml: &str) -> (bool, String) {
    let dir = temp_dir("check");
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(proxy_bin())
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .expect("vantage-proxy --check");
    let _ = std::fs::remove_dir_all(dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Open `path` for appending (a child's log).
pub(crate) fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("log file {path:?}: {e}"))
}

/// A child process serving on one loopback port; killed when dropped. While it is not
/// running, the port is held (connections are refused, and no other test gets the port).
pub(crate) struct Served {
    pub(crate) port: u16,
    hold: PortHold,
    child: Option<Child>,
}

impl Served {
    pub(crate) fn new() -> Served {
        let hold = PortHold::new();
        Served {
            port: hold.port,
            hold,
            child: None,
        }
    }

    /// Spawn `cmd` (output discarded) and wait until the port accepts connections.
    pub(crate) fn spawn(&mut self, cmd: &mut Command, what: &str) {
        assert!(self.child.is_none(), "{what} already running");
        self.hold.release();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_for(&format!("{what} on {port}"), 20, || {
            port_open(port).then_some(())
        });
    }

    /// Kill it and wait until connections to its port are refused.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        let port = self.port;
        wait_for("port to close", 10, || (!port_open(port)).then_some(()));
        self.hold.hold();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}
