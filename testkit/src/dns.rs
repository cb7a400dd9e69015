//! An authoritative DNS server on loopback for discovery tests: Debian's `dnsmasq` on a
//! port of its own, answering only the records the test gives it (no upstream servers, no
//! hosts file), with a TTL of one second. [`Dns::answer`] changes the answers mid-test by
//! restarting it on the same port.

use crate::bins::kill;
use crate::ports::PortHold;
use crate::wait::{temp_dir, wait_for};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A record the server answers with.
#[derive(Debug, Clone)]
pub enum Record {
    /// `name` has address `ip` (A or AAAA).
    Address { name: String, ip: String },
    /// SRV `name` points at `target:port` with this priority and weight.
    Srv {
        name: String,
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
}

/// A running dnsmasq; killed when dropped.
pub struct Dns {
    pub port: u16,
    hold: PortHold,
    dir: PathBuf,
    child: Option<Child>,
}

impl Dns {
    /// Serve `records` on a free loopback port.
    pub fn start(records: &[Record]) -> Dns {
        let hold = PortHold::new();
        let mut dns = Dns {
            port: hold.port,
            hold,
            dir: temp_dir("dns"),
            child: None,
        };
        dns.answer(records);
        dns
    }

    /// `ip:port` for `server.dns.nameservers`.
    pub fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Answer with `records` from now on (the server restarts on the same port).
    pub fn answer(&mut self, records: &[Record]) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        self.hold.release();
        let mut cmd = Command::new(dnsmasq());
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local-ttl=1",
            "--pid-file=",
            "--user=root",
        ])
        .arg(format!("--port={}", self.port))
        .arg(format!(
            "--log-facility={}",
            self.dir.join("dnsmasq.log").display()
        ));
        for r in records {
            match r {
                Record::Address { name, ip } => cmd.arg(format!("--host-record={name},{ip}")),
                Record::Srv {
                    name,
                    target,
                    port,
                    priority,
                    weight,
                } => cmd.arg(format!(
                    "--srv-host={name},{target},{port},{priority},{weight}"
                )),
            };
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dnsmasq (apt-get install dnsmasq-base): {e}"));
        self.child = Some(child);
        let port = self.port;
        wait_for(&format!("dnsmasq on {port}"), 20, || {
            answers(port).then_some(())
        });
    }
}

impl Dns {
    /// Stop answering (lookups then time out).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        self.hold.hold();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

/// dnsmasq lives in /usr/sbin, which a user's PATH may lack.
fn dnsmasq() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/dnsmasq");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("dnsmasq")
    }
}

/// The server answers a query (any answer: it is up).
fn answers(port: u16) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    // A query for `ready.` type A, id 0x1234, recursion desired.
    let query = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 5, b'r', b'e',
        b'a', b'd', b'y', 0, 0x00, 0x01, 0x00, 0x01,
    ];
    if s.send_to(&query, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x12, 0x34])
}
