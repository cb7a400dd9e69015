//! Connection caps: how many client connections the process holds, and how many one client
//! address holds. The per-address count is `pingora-limits`' `Inflight` (a count-min
//! sketch): its memory is fixed however many addresses arrive, and a collision can only
//! over-count, never let a client past its cap.

use crate::telemetry::metrics::METRICS;
use pingora_limits::inflight::{Guard, Inflight};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds `max_connections`.
    Process,
    /// The client address holds `max_connections_per_ip`.
    Address,
}

impl Refusal {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Process => "max_connections",
            Refusal::Address => "max_connections_per_ip",
        }
    }
}

/// Open connections, overall and per client address.
pub struct Admission {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Inflight,
}

/// The key one client is counted by: an IPv4 address, or the /64 of an IPv6 address (a
/// single IPv6 client can pick any address of its /64 for each connection).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

/// Holds a connection's place until dropped.
pub struct Ticket<'a> {
    admission: &'a Admission,
    _per_ip: Option<Guard>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        METRICS.connections_open.dec();
    }
}

impl Admission {
    pub fn new(max: usize, max_per_ip: usize) -> Admission {
        Admission {
            max,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Inflight::new(),
        }
    }

    /// Take a place for a connection from `ip` (`None`: not counted per address, e.g. a
    /// trusted balancer or a Unix socket).
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Ticket<'_>, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Process);
        }
        METRICS.connections_open.inc();
        let mut ticket = Ticket {
            admission: self,
            _per_ip: None,
        };
        if let Some(ip) = ip {
            let (guard, n) = self.per_ip.incr(ip, 1);
            ticket._per_ip = Some(guard);
            if n > self.max_per_ip as isize {
                // Dropping the ticket gives both places back.
                return Err(Refusal::Address);
            }
        }
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_overall() {
        let a = Admission::new(5, 2);
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = a.admit(Some(ip1)).unwrap();
        let _t2 = a.admit(Some(ip1)).unwrap();
        assert_eq!(a.admit(Some(ip1)).err(), Some(Refusal::Address));
        let _t3 = a.admit(Some(ip2)).unwrap();
        drop(t1);
        let _t4 = a.admit(Some(ip1)).unwrap();
        let _t5 = a.admit(None).unwrap();
        let _t6 = a.admit(None).unwrap();
        assert_eq!(a.admit(None).err(), Some(Refusal::Process));
        assert_eq!(a.admit(Some(ip2)).err(), Some(Refusal::Process));
        // Refusals gave their places back.
        assert_eq!(a.open.load(Ordering::Acquire), 5);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a = Admission::new(100, 2);
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.1"), "192.0.2.1".parse::<IpAddr>().unwrap());
        let _t1 = a.admit(Some(key("2001:db8:1:2::1"))).unwrap();
        let _t2 = a.admit(Some(key("2001:db8:1:2::2"))).unwrap();
        assert_eq!(
            a.admit(Some(key("2001:db8:1:2::3"))).err(),
            Some(Refusal::Address)
        );
    }
}
