//! Loopback ports: each handed out once per test process, and held (bound, not listening)
//! while no server uses them, so connections are refused and no one else takes them.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};

/// Ports handed out in this test process: never handed out twice, so two tests running at
/// once never share one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// Record `port` as taken (a server chose it itself); false when it was handed out before.
pub(crate) fn mark_taken(port: u16) -> bool {
    handed_out().lock().unwrap().insert(port)
}

/// A loopback port held by a bound socket that does not listen: connections to it are
/// refused, and the kernel hands it to no one else until it is released.
pub struct PortHold {
    pub port: u16,
    socket: Option<socket2::Socket>,
}

fn bind_quiet(port: u16) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // Binding again after a server on this port stopped must not fail on its TIME_WAITs.
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s)
}

impl PortHold {
    /// A new port, never handed out before in this process.
    pub fn new() -> PortHold {
        for _ in 0..100 {
            let s = bind_quiet(0).expect("bind a loopback port");
            let port = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.port())
                .expect("bound port");
            if mark_taken(port) {
                return PortHold {
                    port,
                    socket: Some(s),
                };
            }
        }
        panic!("no fresh loopback port");
    }

    /// Let a server bind the port (call right before starting it).
    pub fn release(&mut self) {
        self.socket = None;
    }

    /// Hold the port again after its server stopped (best effort: a TIME_WAIT-free port
    /// always binds).
    pub fn hold(&mut self) {
        if self.socket.is_none() {
            self.socket = bind_quiet(self.port).ok();
        }
    }
}

impl Default for PortHold {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback port for a server about to start (never handed out before in this process).
pub fn free_port() -> u16 {
    PortHold::new().port
}

/// A listening socket on a fresh loopback port, for servers the test runs in-process.
pub fn listener() -> TcpListener {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let port = l.local_addr().expect("local addr").port();
        if mark_taken(port) {
            return l;
        }
    }
    panic!("no fresh loopback port to listen on");
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A connection to `port` from the loopback address `from` (every 127.0.0.0/8 address is
/// this machine: tests play distinct clients with them).
pub fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s.into())
}
