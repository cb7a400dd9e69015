//! DNS discovery of an origin's targets, through Pingora's `ServiceDiscovery`: the addresses
//! of an A/AAAA name on one port, or the targets of an SRV name (lowest priority, its
//! weights). The pool re-resolves when the answer's TTL runs out, within `server.dns`'s
//! bounds. A new address joins only once it passed a health check (when the origin has
//! one); a removed one leaves the selection and drains (requests on it finish). A failed
//! lookup keeps the targets of the last answer.

use super::health::Probe;
use super::{TargetState, Targets};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use vantage_model::{Discovery, DnsSettings};

/// The resolver and its bounds (`server.dns`), replaced when the settings change.
struct Dns {
    settings: DnsSettings,
    resolver: Option<TokioResolver>,
}

static DNS: LazyLock<ArcSwap<Dns>> = LazyLock::new(|| {
    ArcSwap::from_pointee(Dns {
        settings: DnsSettings::default(),
        resolver: None,
    })
});

/// Use `settings` for every later lookup (a no-op when they did not change).
pub fn configure(settings: &DnsSettings) {
    if DNS.load().settings == *settings && DNS.load().resolver.is_some() {
        return;
    }
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(settings.timeout_ms);
    opts.attempts = 2;
    // Answers are kept by the pools for their TTL; the resolver asks afresh each time.
    opts.cache_size = 0;
    let provider = TokioRuntimeProvider::default();
    let builder = if settings.nameservers.is_empty() {
        TokioResolver::builder_tokio()
    } else {
        let servers = settings
            .nameservers
            .iter()
            .filter_map(|n| n.parse::<SocketAddr>().ok())
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        let config = ResolverConfig::from_parts(None, vec![], servers);
        Ok(TokioResolver::builder_with_config(config, provider))
    };
    let resolver = match builder.and_then(|b| b.with_options(opts).build()) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!("DNS resolver not available: {e}");
            None
        }
    };
    DNS.store(Arc::new(Dns {
        settings: settings.clone(),
        resolver,
    }));
}

/// An origin's discovery. Shares the pool's target list (kept in step with the backends
/// it returns) and tells the pool when to ask again.
pub struct DnsDiscovery {
    origin: String,
    spec: Discovery,
    /// Builds the runtime state of a new address.
    make_state: Box<dyn Fn(SocketAddr) -> Arc<TargetState> + Send + Sync>,
    /// The pool's targets.
    targets: Targets,
    /// Checks a new address before it joins (the origin's health check).
    probe: Option<Box<Probe>>,
    /// Milliseconds until the next lookup.
    pub next_ms: Arc<AtomicU64>,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LookupError(String);

impl DnsDiscovery {
    pub fn new(
        origin: &str,
        spec: &Discovery,
        make_state: Box<dyn Fn(SocketAddr) -> Arc<TargetState> + Send + Sync>,
        targets: Targets,
        probe: Option<Box<Probe>>,
    ) -> DnsDiscovery {
        DnsDiscovery {
            origin: origin.to_string(),
            spec: spec.clone(),
            make_state,
            targets,
            probe,
            next_ms: Arc::new(AtomicU64::new(1000)),
        }
    }

    /// The addresses and weights the name stands for now, and how long the answer holds.
    async fn resolve(&self) -> Result<(Vec<(SocketAddr, usize)>, Duration), LookupError> {
        let dns = DNS.load_full();
        let Some(resolver) = &dns.resolver else {
            return Err(LookupError("no DNS resolver".into()));
        };
        let err = |name: &str, e: &dyn std::fmt::Display| LookupError(format!("{name}: {e}"));
        let now = Instant::now();
        if let Some(name) = &self.spec.name {
            let fqdn = format!("{}.", name.trim_end_matches('.'));
            let found = resolver
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| err(name, &e))?;
            let port = self
                .spec
                .port
                .unwrap_or(if self.spec.tls { 443 } else { 80 });
            let addrs = found
                .iter()
                .map(|ip| (SocketAddr::new(ip, port), 1))
                .collect();
            return Ok((addrs, found.valid_until().saturating_duration_since(now)));
        }
        let srv = self.spec.srv.as_deref().unwrap_or_default();
        let fqdn = format!("{}.", srv.trim_end_matches('.'));
        let found = resolver
            .srv_lookup(fqdn.as_str())
            .await
            .map_err(|e| err(srv, &e))?;
        let mut ttl = found.valid_until().saturating_duration_since(now);
        let records: Vec<_> = found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let Some(best) = records.iter().map(|s| s.priority).min() else {
            return Ok((Vec::new(), ttl));
        };
        let mut addrs = Vec::new();
        for s in records.iter().filter(|s| s.priority == best) {
            let ips = resolver
                .lookup_ip(s.target.clone())
                .await
                .map_err(|e| err(&s.target.to_string(), &e))?;
            ttl = ttl.min(ips.valid_until().saturating_duration_since(now));
            // Weight 0 keeps a very small share (RFC 2782); the pool's weights are 1 and up.
            let weight = usize::from(s.weight).max(1);
            addrs.extend(ips.iter().map(|ip| (SocketAddr::new(ip, s.port), weight)));
        }
        Ok((addrs, ttl))
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let bounds = {
            let s = &DNS.load().settings;
            (s.min_ttl_ms, s.max_ttl_ms)
        };
        let found = self.resolve().await;
        let (addrs, ttl) = match found {
            Ok(a) => a,
            Err(e) => {
                // Try again soon; the targets of the last answer stay.
                self.next_ms.store(bounds.0, Ordering::Relaxed);
                tracing::warn!(origin = %self.origin, "DNS discovery failed; keeping the last targets: {e}");
                return Err(pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    e.to_string(),
                ));
            }
        };
        let ms = (ttl.as_millis() as u64).clamp(bounds.0, bounds.1);
        self.next_ms.store(ms, Ordering::Relaxed);

        let current = self.targets.load_full();
        let known: HashMap<SocketAddr, &(Backend, Arc<TargetState>)> = current
            .iter()
            .filter_map(|t| t.0.addr.as_inet().map(|a| (*a, t)))
            .collect();
        let mut next = Vec::with_capacity(addrs.len());
        let mut set = BTreeSet::new();
        for (addr, weight) in addrs {
            let (backend, state) = match known.get(&addr) {
                Some((b, s)) if b.weight == weight => ((*b).clone(), s.clone()),
                Some((_, s)) => (backend(addr, weight, s)?, s.clone()),
                None => {
                    let state = (self.make_state)(addr);
                    let b = backend(addr, weight, &state)?;
                    // A new address joins once it answers its health check.
                    if let Some(p) = &self.probe {
                        if let Err(e) = p.check(&b).await {
                            tracing::info!(origin = %self.origin, target = %state.label, "discovered target not joining yet: {e}");
                            continue;
                        }
                    }
                    tracing::info!(origin = %self.origin, target = %state.label, "discovered target joins");
                    (b, state)
                }
            };
            if set.insert(backend.clone()) {
                next.push((backend, state));
            }
        }
        for (b, s) in current.iter() {
            if !set.contains(b) {
                tracing::info!(origin = %self.origin, target = %s.label, "target no longer in DNS; draining");
                crate::telemetry::metrics::forget_target(&self.origin, &s.label);
            }
        }
        for (_, s) in &next {
            crate::telemetry::metrics::METRICS
                .target_healthy
                .with_label_values(&[&self.origin, &s.label])
                .set(1);
        }
        self.targets.store(Arc::new(next));
        Ok((set, HashMap::new()))
    }
}

fn backend(addr: SocketAddr, weight: usize, state: &Arc<TargetState>) -> pingora::Result<Backend> {
    let mut b = Backend::new_with_weight(&addr.to_string(), weight)?;
    b.ext.insert(state.clone());
    Ok(b)
}
