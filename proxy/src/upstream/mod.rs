//! Origin pools: target membership, selection, health checks and circuit breakers.
//!
//! Like `pingora-load-balancing`, the pieces are separate: [`breaker`] (passive failure
//! counting per target), [`health`] (the active HTTP probe), and [`Pool`], which joins a
//! Pingora `LoadBalancer` (selection + health state) with per-target runtime state
//! (in-flight count, breaker, peer settings) carried in each `Backend`'s extensions.

pub mod affinity;
pub mod breaker;
pub mod discovery;
pub mod fallback;
mod health;
pub mod mirror;
pub mod split;

use crate::errors::{Blame, Reply};
use crate::telemetry::metrics::METRICS;
use breaker::{now_ms, Breaker};
use http::{HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::lb::discovery::Static;
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vantage_model::{HashKey, LbAlgorithm, Origin, TargetUrl, UpstreamProtocol};

/// A request's attempt on one target: the target, its identity among the pool's, and
/// its in-flight count.
pub struct Attempt {
    pub target: Arc<TargetState>,
    pub id: usize,
    _inflight: InflightGuard,
}

/// A request's attempts on its route's pool: targets tried, the current one, retries
/// left, and how the last one ended.
#[derive(Default)]
pub struct Attempts {
    /// Targets whose connect failed (retries go elsewhere).
    pub tried: Vec<usize>,
    /// The current attempt.
    pub current: Option<Attempt>,
    pub retries_left: u32,
    /// The status the origin answered.
    pub status: Option<u16>,
    /// A failure decided by the gateway (no target), answered by `fail_to_proxy`.
    pub reply: Option<Reply>,
    /// Who the failure `fail_to_proxy` answered is down to.
    pub blame: Option<Blame>,
    /// The request's affinity cookie named the current target.
    pinned_kept: bool,
}

impl Attempts {
    /// A request on `pool`, with the pool's retry budget.
    pub fn start(&mut self, pool: &Pool) {
        self.retries_left = pool.spec.retries;
    }

    /// The peer of the next attempt: a healthy target whose breaker is closed and that
    /// this request has not tried. `Err` is the reply: 503 when no target is available at
    /// all, 502 when every target left was tried.
    /// `pinned` is the request's affinity cookie, when the pool has one: the target it
    /// names is taken while it is available.
    pub fn next(
        &mut self,
        pool: &Pool,
        key: &[u8],
        pinned: Option<&[u8]>,
    ) -> Result<HttpPeer, Reply> {
        // Also called when Pingora retries on its own (a pooled keep-alive connection the
        // origin had closed): that is no failure of the target, so nothing is recorded.
        self.current = None;
        let chosen = pinned
            .and_then(|token| pool.select_pinned(token, &self.tried))
            .map(|t| (t, true))
            .unwrap_or_else(|| (pool.select(key, &self.tried), false));
        self.pinned_kept = chosen.1;
        match chosen.0 {
            Selection::Target(backend, state) => {
                let peer = pool.peer(&backend, &state);
                self.current = Some(Attempt {
                    id: backend_id(&backend),
                    _inflight: Pool::track(&state),
                    target: state,
                });
                Ok(peer)
            }
            Selection::NoneAvailable if self.tried.is_empty() => Err(Reply::new(
                503,
                "no_healthy_upstream",
                format!("no healthy target in origin '{}'", pool.id),
            )),
            Selection::NoneAvailable => Err(Reply::new(
                502,
                "upstream_unreachable",
                format!("no target of origin '{}' could be reached", pool.id),
            )),
        }
    }

    /// The `Host` the origin sees: the host the tenant was found by (`matched`, normal
    /// form) with `preserve_host`, else the target's own.
    pub fn host_header(&self, pool: &Pool, matched: Option<&HeaderValue>) -> Option<HeaderValue> {
        match pool.spec.preserve_host {
            true => matched.cloned(),
            false => self.current.as_ref().map(|a| a.target.host_header.clone()),
        }
    }

    /// The affinity cookie to set on the response: when the pool has affinity and the
    /// request did not already name the target that served.
    pub fn affinity_cookie(&self, pool: &Pool) -> Option<HeaderValue> {
        let affinity = pool.affinity.as_ref()?;
        let attempt = self.current.as_ref()?;
        (!self.pinned_kept).then(|| affinity.set_cookie(&attempt.target.affinity_token))?
    }

    /// The current attempt could not connect: it counts against the target's breaker, and
    /// an idempotent request is retried on another target, at most `retries` times.
    /// Returns whether to retry.
    pub fn connect_failed(&mut self, pool: &Pool, method: &Method) -> bool {
        if let Some(a) = self.current.take() {
            pool.record(&a.target, false);
            self.tried.push(a.id);
        }
        let retry = self.retries_left > 0 && idempotent(method) && self.tried.len() < pool.len();
        if retry {
            self.retries_left -= 1;
            METRICS.retries.with_label_values(&[&pool.id]).inc();
        }
        retry
    }

    /// No target of the pool could take the request (the reply is waiting for
    /// `fail_to_proxy`, or a stored response was served instead).
    pub fn none_available(&self) -> bool {
        self.reply
            .as_ref()
            .is_some_and(|r| r.code == "no_healthy_upstream")
    }

    /// Settle the request's last attempt with its target's breaker: a failure when the
    /// upstream failed or answered 5xx, a success otherwise, and nothing at all when the
    /// client was to blame (a client too slow to send its request says nothing about the
    /// origin).
    pub fn settle(&self, pool: &Pool, error: Option<&pingora::Error>) {
        let Some(attempt) = &self.current else {
            return;
        };
        if self.blame.is_none_or(Blame::counts_against_origin) {
            let failed = error.is_some_and(|e| e.esource() == &pingora::ErrorSource::Upstream)
                || self.status.is_some_and(|s| s >= 500);
            pool.record(&attempt.target, !failed);
        }
    }
}

/// Methods a request may be repeated with on another target after a failed connect.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// What consistent hashing hashes for a request (empty without a hash key).
pub fn hash_input(
    key: Option<&HashKey>,
    req: &RequestHeader,
    peer: impl FnOnce() -> Option<IpAddr>,
) -> Vec<u8> {
    match key {
        None => Vec::new(),
        Some(HashKey::Header { name }) => req
            .headers
            .get(name.as_str())
            .map_or(&b""[..], |v| v.as_bytes())
            .to_vec(),
        Some(HashKey::Cookie { name }) => cookie(req, name).unwrap_or_default().to_vec(),
        Some(HashKey::ClientIp) => peer()
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default(),
        Some(HashKey::Path) => req.uri.path().as_bytes().to_vec(),
    }
}

/// The value of cookie `name`, as bytes.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("origin {origin}: target {url}: {reason}")]
    Target {
        origin: String,
        url: String,
        reason: String,
    },
}

/// Runtime state of one target, shared by every clone of its `Backend`.
#[derive(Debug)]
pub struct TargetState {
    /// `host:port` as configured (for logs and metrics).
    pub label: String,
    /// Host name the target was configured with (SNI / Host default).
    pub host: String,
    /// `https://`.
    pub tls: bool,
    /// Host header for this target: `host`, or `host:port` for a non-default port.
    pub host_header: http::HeaderValue,
    /// Requests in flight to this target.
    pub inflight: AtomicUsize,
    /// Passive failure counting.
    pub breaker: Breaker,
    /// Result of the last active probe.
    pub last_probe_ok: AtomicBool,
    /// The idle time the target last announced (`Keep-Alive: timeout=N`), in milliseconds
    /// (`u64::MAX`: none announced).
    announced_idle_ms: AtomicU64,
    /// What the pool's affinity cookie says to name this target (empty without affinity).
    pub affinity_token: Box<str>,
}

impl TargetState {
    /// Take note of a response's `Keep-Alive: timeout=N`: pooled connections to this target
    /// are then dropped a margin before the target would close them.
    pub fn note_keep_alive(&self, value: &[u8]) {
        let timeout = std::str::from_utf8(value).ok().and_then(|v| {
            v.split(',').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("timeout")
                    .then(|| v.trim().parse::<u64>().ok())
                    .flatten()
            })
        });
        if let Some(secs) = timeout {
            // A quarter of the announced time (at least) is kept as a margin for clocks,
            // scheduling and a request sent just as the origin closes.
            let ms = secs.saturating_mul(750);
            self.announced_idle_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// How long a pooled connection to this target may stay idle.
    pub fn idle_timeout(&self, configured: Duration) -> Duration {
        let announced = self.announced_idle_ms.load(Ordering::Relaxed);
        configured.min(Duration::from_millis(announced))
    }
}

/// Holds a target's in-flight count up while alive.
#[derive(Debug)]
pub struct InflightGuard(Arc<TargetState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pool's targets and their runtime state (replaced whole when discovery changes them).
pub type Targets = Arc<arc_swap::ArcSwap<Vec<(Backend, Arc<TargetState>)>>>;

enum Selector {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

/// The outcome of [`Pool::select`].
pub enum Selection {
    /// A target to send the request to.
    Target(Backend, Arc<TargetState>),
    /// Every target is down (health check or open breaker) or was already tried.
    NoneAvailable,
}

/// A compiled origin.
pub struct Pool {
    /// The configuration it was built from; a reload reuses the pool when this is equal.
    pub spec: Origin,
    /// Origin id (metrics label).
    pub id: Arc<str>,
    selector: Selector,
    targets: Targets,
    /// Milliseconds until DNS discovery asks again (discovered pools only).
    rediscover_ms: Option<Arc<AtomicU64>>,
    least_connections: bool,
    cursor: AtomicUsize,
    health_started: AtomicBool,
    stop: watch::Sender<bool>,
    /// The affinity cookie, when the origin has one.
    pub affinity: Option<affinity::AffinityRt>,
}

impl Pool {
    /// Build a pool from its configuration: resolve targets (blocking DNS for host names),
    /// set up the selector and health check, and — when a health check is configured — probe
    /// every target until its state is known, so a new pool never sends traffic to a target
    /// that is already down.
    pub async fn build(spec: &Origin, probe_first: bool) -> Result<Arc<Pool>, PoolError> {
        let weighted = matches!(
            spec.lb,
            LbAlgorithm::Weighted | LbAlgorithm::Random | LbAlgorithm::LeastConnections
        );
        let mut set = BTreeSet::new();
        let mut targets = Vec::new();
        for t in &spec.targets {
            let err = |reason: String| PoolError::Target {
                origin: spec.id.clone(),
                url: t.url.clone(),
                reason,
            };
            let url = TargetUrl::parse(&t.url).map_err(err)?;
            // IP literals need no resolver call (which costs ~1 ms each on a large reload).
            let addr = match url.host.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, url.port),
                Err(_) => (url.host.as_str(), url.port)
                    .to_socket_addrs()
                    .map_err(|e| err(format!("cannot resolve: {e}")))?
                    .next()
                    .ok_or_else(|| err("resolves to no address".into()))?,
            };
            let weight = if weighted { t.weight as usize } else { 1 };
            let mut backend = Backend::new_with_weight(&addr.to_string(), weight)
                .map_err(|e| err(e.to_string()))?;
            let state = target_state(spec, &url).map_err(err)?;
            backend.ext.insert(state.clone());
            set.insert(backend.clone());
            targets.push((backend, state));
        }
        let targets: Targets = Arc::new(arc_swap::ArcSwap::from_pointee(targets));

        let (host, tls) = match &spec.discovery {
            Some(d) => (
                d.name.clone().or_else(|| d.srv.clone()).unwrap_or_default(),
                d.tls,
            ),
            None => targets
                .load()
                .first()
                .map(|(_, s)| (s.host.clone(), s.tls))
                .unwrap_or_default(),
        };
        let probe = || {
            spec.health_check
                .as_ref()
                .map(|hc| health::probe(&spec.id, hc, &spec.tls, &host, tls))
        };
        let mut rediscover_ms = None;
        let backends = match &spec.discovery {
            None => Backends::new(Static::new(set)),
            Some(d) => {
                let origin = spec.clone();
                let make_state =
                    Box::new(move |addr: std::net::SocketAddr| discovered_state(&origin, addr));
                let found =
                    discovery::DnsDiscovery::new(&spec.id, d, make_state, targets.clone(), probe());
                rediscover_ms = Some(found.next_ms.clone());
                Backends::new(Box::new(found))
            }
        };
        let selector = match spec.lb {
            LbAlgorithm::RoundRobin | LbAlgorithm::Weighted | LbAlgorithm::LeastConnections => {
                Selector::RoundRobin(Arc::new(make_lb(backends, probe()).await))
            }
            LbAlgorithm::Random => Selector::Random(Arc::new(make_lb(backends, probe()).await)),
            LbAlgorithm::ConsistentHash => {
                Selector::Consistent(Arc::new(make_lb(backends, probe()).await))
            }
        };
        let (stop, _) = watch::channel(false);
        let pool = Arc::new(Pool {
            spec: spec.clone(),
            id: spec.id.as_str().into(),
            selector,
            targets,
            rediscover_ms,
            least_connections: spec.lb == LbAlgorithm::LeastConnections,
            cursor: AtomicUsize::new(0),
            health_started: AtomicBool::new(false),
            stop,
            affinity: spec.affinity.as_ref().map(affinity::AffinityRt::compile),
        });
        for (_, s) in pool.targets.load().iter() {
            METRICS
                .target_healthy
                .with_label_values(&[&spec.id, &s.label])
                .set(1);
            METRICS
                .breaker_open
                .with_label_values(&[&spec.id, &s.label])
                .set(0.0);
        }
        if let Some(hc) = spec.health_check.as_ref().filter(|_| probe_first) {
            // Pingora starts every backend healthy; probe until each target either passed
            // its last probe or has been marked down.
            for _ in 0..hc.unhealthy_threshold.max(1) {
                pool.run_health_check().await;
                let undecided = pool.targets.load().iter().any(|(b, s)| {
                    !s.last_probe_ok.load(Ordering::Acquire) && pool.backends().ready(b)
                });
                if !undecided {
                    break;
                }
            }
        }
        Ok(pool)
    }

    /// Ask DNS again (discovered pools): the targets follow the answer.
    async fn rediscover(&self) {
        let _ = match &self.selector {
            Selector::RoundRobin(lb) => lb.update().await,
            Selector::Random(lb) => lb.update().await,
            Selector::Consistent(lb) => lb.update().await,
        };
    }

    fn backends(&self) -> &Backends {
        match &self.selector {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::Random(lb) => lb.backends(),
            Selector::Consistent(lb) => lb.backends(),
        }
    }

    async fn run_health_check(&self) {
        self.backends().run_health_check(true).await
    }

    /// Start the periodic health check (once; a no-op without a health check). Must be
    /// called inside a tokio runtime. The loop ends when the pool is dropped.
    pub fn start_health_checks(self: &Arc<Self>) {
        if self.health_started.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(next_ms) = self.rediscover_ms.clone() {
            let mut stop = self.stop.subscribe();
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    let wait = Duration::from_millis(next_ms.load(Ordering::Relaxed));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    let Some(pool) = weak.upgrade() else { return };
                    pool.rediscover().await;
                }
            });
        }
        let Some(hc) = &self.spec.health_check else {
            return;
        };
        let interval = Duration::from_millis(hc.interval_ms);
        let mut stop = self.stop.subscribe();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
                let Some(pool) = weak.upgrade() else { return };
                pool.run_health_check().await;
            }
        });
    }

    /// Stop the periodic health check (the pool was replaced by a reload).
    pub fn stop_health_checks(&self) {
        let _ = self.stop.send(true);
    }

    /// `host:port` of every target (metric labels).
    pub fn target_labels(&self) -> Vec<String> {
        self.targets
            .load()
            .iter()
            .map(|(_, s)| s.label.clone())
            .collect()
    }

    /// Is the target up as far as the active health check knows?
    pub fn is_healthy(&self, backend: &Backend) -> bool {
        self.backends().ready(backend)
    }

    /// Targets the active health check holds healthy (all of them without a health check),
    /// and the number of targets.
    pub fn health_counts(&self) -> (usize, usize) {
        let targets = self.targets.load();
        let healthy = targets.iter().filter(|(b, _)| self.is_healthy(b)).count();
        (healthy, targets.len())
    }

    /// Pick a target: healthy, breaker allows, not in `tried`.
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Selection {
        let now = now_ms();
        let accept = |b: &Backend, healthy: bool| -> bool {
            healthy
                && !tried.contains(&backend_id(b))
                && b.ext
                    .get::<Arc<TargetState>>()
                    .is_some_and(|s| s.breaker.allow(now))
        };
        let max = 16 + 4 * self.len();
        let chosen = if self.least_connections {
            self.least_loaded(&accept)
        } else {
            match &self.selector {
                Selector::RoundRobin(lb) => lb.select_with(key, max, accept),
                Selector::Random(lb) => lb.select_with(key, max, accept),
                Selector::Consistent(lb) => lb.select_with(key, max, accept),
            }
        };
        match chosen {
            Some(b) => match b.ext.get::<Arc<TargetState>>() {
                Some(s) => {
                    let s = s.clone();
                    Selection::Target(b, s)
                }
                None => Selection::NoneAvailable,
            },
            None => Selection::NoneAvailable,
        }
    }

    /// The target an affinity token names, when it is healthy, its breaker allows and this
    /// request has not tried it.
    pub fn select_pinned(&self, token: &[u8], tried: &[usize]) -> Option<Selection> {
        let targets = self.targets.load();
        let (b, s) = targets
            .iter()
            .find(|(_, s)| !s.affinity_token.is_empty() && s.affinity_token.as_bytes() == token)?;
        let ok = self.is_healthy(b) && !tried.contains(&backend_id(b)) && s.breaker.allow(now_ms());
        ok.then(|| Selection::Target(b.clone(), s.clone()))
    }

    fn least_loaded(&self, accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend> {
        let targets = self.targets.load();
        let n = targets.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n.max(1);
        // Fewest in flight per unit of weight first; a rotating start spreads ties.
        let mut order: Vec<(u128, usize, usize)> = targets
            .iter()
            .enumerate()
            .map(|(i, (b, s))| {
                let load = s.inflight.load(Ordering::Acquire) as u128 * 1000 / b.weight as u128;
                (load, (i + n - start) % n, i)
            })
            .collect();
        order.sort_unstable();
        order.into_iter().find_map(|(_, _, i)| {
            let b = &targets[i].0;
            accept(b, self.is_healthy(b)).then(|| b.clone())
        })
    }

    /// The Pingora peer for a selected target, with this origin's timeouts and TLS.
    pub fn peer(&self, backend: &Backend, state: &TargetState) -> HttpPeer {
        let sni = if state.tls {
            self.spec
                .tls
                .sni
                .clone()
                .unwrap_or_else(|| state.host.clone())
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(backend, state.tls, sni);
        let t = &self.spec.timeouts;
        let o = &mut peer.options;
        o.connection_timeout = Some(Duration::from_millis(t.connect_ms));
        o.total_connection_timeout = Some(Duration::from_millis(t.total_connect_ms));
        o.read_timeout = Some(Duration::from_millis(t.read_ms));
        o.write_timeout = Some(Duration::from_millis(t.write_ms));
        o.idle_timeout = Some(state.idle_timeout(Duration::from_millis(t.idle_ms)));
        o.verify_cert = self.spec.tls.verify;
        o.verify_hostname = self.spec.tls.verify;
        o.alpn = match self.spec.protocol {
            UpstreamProtocol::Http1 => ALPN::H1,
            UpstreamProtocol::Http2 => ALPN::H2,
            UpstreamProtocol::Auto if state.tls => ALPN::H2H1,
            UpstreamProtocol::Auto => ALPN::H1,
        };
        peer
    }

    /// Count one request in flight on a target until the guard drops.
    pub fn track(state: &Arc<TargetState>) -> InflightGuard {
        state.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(state.clone())
    }

    /// Passive accounting of a finished attempt.
    pub fn record(&self, state: &TargetState, ok: bool) {
        if ok {
            if state.breaker.on_success() {
                tracing::warn!(origin = %self.id, target = %state.label, "circuit breaker closed");
                METRICS
                    .breaker_open
                    .with_label_values(&[&*self.id, state.label.as_str()])
                    .set(0.0);
            }
        } else if state.breaker.on_failure(now_ms()) {
            tracing::warn!(origin = %self.id, target = %state.label, "circuit breaker opened");
            METRICS
                .breaker_open
                .with_label_values(&[&*self.id, state.label.as_str()])
                .set(1.0);
        }
    }

    /// Which hash key this pool wants (consistent hashing only).
    pub fn hash_key(&self) -> Option<&HashKey> {
        self.spec.hash_key.as_ref()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.load().len()
    }

    /// True when the pool has no target (a discovered pool whose name has no address).
    pub fn is_empty(&self) -> bool {
        self.targets.load().is_empty()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Stable identity of a backend within a pool (for the "already tried" list).
pub fn backend_id(b: &Backend) -> usize {
    b.ext
        .get::<Arc<TargetState>>()
        .map_or(0, |s| Arc::as_ptr(s) as usize)
}

async fn make_lb<S>(backends: Backends, probe: Option<Box<health::Probe>>) -> LoadBalancer<S>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut lb = LoadBalancer::<S>::from_backends(backends);
    if let Some(p) = probe {
        lb.set_health_check(p);
    }
    // Static discovery cannot fail; a failed first DNS lookup leaves the pool empty until
    // the next one.
    let _ = lb.update().await;
    lb
}

/// The runtime state of a configured target.
fn target_state(spec: &Origin, url: &TargetUrl) -> Result<Arc<TargetState>, String> {
    let host_header = match (
        url.port == if url.tls { 443 } else { 80 },
        url.host.contains(':'),
    ) {
        (true, false) => url.host.clone(),
        (true, true) => format!("[{}]", url.host),
        (false, _) => url.authority(),
    };
    let host_header = HeaderValue::from_str(&host_header).map_err(|e| e.to_string())?;
    Ok(new_target(spec, url, url.host.clone(), host_header))
}

/// The runtime state of an address DNS discovery found: named by its address, with the
/// discovered name as its host (SNI and Host).
fn discovered_state(spec: &Origin, addr: std::net::SocketAddr) -> Arc<TargetState> {
    let d = spec.discovery.as_ref();
    let name = d
        .and_then(|d| d.name.clone().or_else(|| d.srv.clone()))
        .unwrap_or_default();
    let url = TargetUrl {
        tls: d.is_some_and(|d| d.tls),
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    let host_header = HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static(""));
    new_target(spec, &url, name, host_header)
}

/// A target's state, fresh: closed breaker, nothing in flight.
fn new_target(
    spec: &Origin,
    url: &TargetUrl,
    host: String,
    host_header: HeaderValue,
) -> Arc<TargetState> {
    let label = url.authority();
    Arc::new(TargetState {
        affinity_token: match &spec.affinity {
            Some(_) => affinity::token(&spec.id, &label).into(),
            None => "".into(),
        },
        label,
        host,
        tls: url.tls,
        host_header,
        inflight: AtomicUsize::new(0),
        breaker: Breaker::new(
            spec.circuit_breaker.enabled,
            spec.circuit_breaker.failure_threshold,
            Duration::from_millis(spec.circuit_breaker.open_ms),
        ),
        last_probe_ok: AtomicBool::new(true),
        announced_idle_ms: AtomicU64::new(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pooled_connections_idle_less_than_the_origin_allows() {
        let spec: Origin = serde_yaml::from_str(
            "{id: o, tenant_id: t, targets: [{url: \"http://127.0.0.1:1\"}], timeouts: {idle_ms: 4000}}",
        )
        .unwrap();
        let pool = Pool::build(&spec, false).await.unwrap();
        let targets = pool.targets.load();
        let (backend, state) = &targets[0];
        let idle = |p: &Pool| p.peer(backend, state).options.idle_timeout;
        assert_eq!(idle(&pool), Some(Duration::from_millis(4000)));
        state.note_keep_alive(b"timeout=2, max=100");
        assert_eq!(idle(&pool), Some(Duration::from_millis(1500)));
        state.note_keep_alive(b"max=5");
        assert_eq!(idle(&pool), Some(Duration::from_millis(1500)));
        state.note_keep_alive(b"timeout=60");
        assert_eq!(idle(&pool), Some(Duration::from_millis(4000)));
    }
}
