//! Bounded per-tenant metric families and the resolved series of each compiled route.
//!
//! A [`Family`] wraps one labelled Prometheus family whose label values come from the
//! configuration (tenants, routes, origins): it holds at most
//! `server.metrics.max_series_per_family` label sets of its own; once full, a new label
//! set is recorded under `_overflow` in the labels that grow with the configuration
//! (`tenant`, `route`, `origin`; the others, such as the status class, are kept) and
//! counted in `vantage_metrics_overflow_total{family}`. Label sets it already holds keep
//! counting.
//!
//! A routed request does not look its labels up: [`route_series`] gives the
//! [`RouteSeries`] of its compiled route, whose handles are resolved once, on first use
//! (one lookup of the route per request, by the address of its `RouteRt`). A route
//! without `metrics_detail` counts in its tenant's series (`route="_tenant"`).
//!
//! On a reload, [`forget_absent`] drops the label sets of tenants, routes and origins the
//! new configuration no longer has (and of routes whose detail was turned off); cached
//! handles are then resolved again.

use crate::snapshot::{RouteRt, Snapshot};
use parking_lot::RwLock;
use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

/// The value of a growing label (`tenant`, `route`, `origin`) past a family's cap.
pub const OVERFLOW: &str = "_overflow";
/// The `route` of a route without `route_metrics`: its requests count in its tenant's
/// series.
pub const TENANT_ROUTE: &str = "_tenant";
/// The `tenant` or `route` of a request that has none (unknown host, no matching route).
pub const NONE: &str = "-";
/// `status` label values: the class of the status sent, `000` when none was (or it was
/// outside 100–599).
pub const STATUS_CLASSES: [&str; 6] = ["000", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of `status`.
pub fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

/// Most label sets of one family (`server.metrics.max_series_per_family`).
static MAX_SERIES: AtomicUsize = AtomicUsize::new(10_000);
/// Moves when label sets are forgotten: route series resolved before are resolved again.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Set the cap of every family (at start, from `server.metrics`).
pub fn set_max_series_per_family(n: usize) {
    MAX_SERIES.store(n.max(1), Ordering::Relaxed);
}

/// Most labels of a bounded family.
const MAX_LABELS: usize = 3;

/// A labelled Prometheus family, seen through what [`Family`] needs of it.
pub trait LabelledVec: Send + Sync {
    type M: Clone + Send + Sync;
    fn series(&self, labels: &[&str]) -> Self::M;
    fn remove(&self, labels: &[&str]);
}

impl<B: MetricVecBuilder> LabelledVec for MetricVec<B> {
    type M = B::M;
    fn series(&self, labels: &[&str]) -> B::M {
        self.with_label_values(labels)
    }
    fn remove(&self, labels: &[&str]) {
        let _ = self.remove_label_values(labels);
    }
}

struct Held<M> {
    labels: Box<[Box<str>]>,
    metric: M,
    /// Counts against the cap (the `_overflow` label sets do not).
    counted: bool,
}

/// A family bounded to `server.metrics.max_series_per_family` label sets.
pub struct Family<V: LabelledVec> {
    vec: V,
    /// Positions of the labels that become `_overflow` past the cap.
    growing: &'static [usize],
    /// Every label set held, by the hash of its values.
    held: RwLock<HashMap<u64, Vec<Held<V::M>>>>,
    /// Label sets held that count against the cap.
    count: AtomicUsize,
    overflowed: IntCounter,
    /// A cap of its own instead of `server.metrics.max_series_per_family` (tests).
    cap: Option<usize>,
}

/// FNV-1a of the label values, each followed by 0xff (which no UTF-8 string holds).
fn hash(labels: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels {
        for b in l.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn same(held: &[Box<str>], labels: &[&str]) -> bool {
    held.len() == labels.len() && held.iter().zip(labels).all(|(a, b)| **a == **b)
}

impl<V: LabelledVec> Family<V> {
    /// `vec`, registered; `growing` are the positions of its labels that grow with the
    /// configuration; past the cap they count in `overflow{family=name}`.
    pub fn new(
        name: &'static str,
        vec: V,
        growing: &'static [usize],
        overflow: &IntCounterVec,
    ) -> Family<V> {
        Family {
            vec,
            growing,
            held: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            // At 0 from the start, so that an alert on its increase has a series.
            overflowed: overflow.with_label_values(&[name]),
            cap: None,
        }
    }

    fn max(&self) -> usize {
        self.cap
            .unwrap_or_else(|| MAX_SERIES.load(Ordering::Relaxed))
    }

    /// Label sets held that count against the cap.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, h: u64, labels: &[&str]) -> Option<V::M> {
        let held = self.held.read();
        held.get(&h)?
            .iter()
            .find(|s| same(&s.labels, labels))
            .map(|s| s.metric.clone())
    }

    /// The series of `labels`, created when the family has room; `None` when it is full.
    pub fn own(&self, labels: &[&str]) -> Option<V::M> {
        let h = hash(labels);
        if let Some(m) = self.find(h, labels) {
            return Some(m);
        }
        let max = self.max();
        if self.count.load(Ordering::Relaxed) >= max {
            return None;
        }
        let mut held = self.held.write();
        let found = held
            .get(&h)
            .and_then(|same_hash| same_hash.iter().find(|s| same(&s.labels, labels)));
        if let Some(s) = found {
            return Some(s.metric.clone());
        }
        if self.count.load(Ordering::Relaxed) >= max {
            return None;
        }
        let metric = self.vec.series(labels);
        held.entry(h).or_default().push(Held {
            labels: labels.iter().map(|l| Box::from(*l)).collect(),
            metric: metric.clone(),
            counted: true,
        });
        self.count.fetch_add(1, Ordering::Relaxed);
        Some(metric)
    }

    /// The `_overflow` series standing for `labels` (created whatever the cap).
    fn overflow_series(&self, labels: &[&str]) -> V::M {
        let mut buf = [""; MAX_LABELS];
        let n = labels.len().min(MAX_LABELS);
        buf[..n].copy_from_slice(&labels[..n]);
        for &i in self.growing {
            if i < n {
                buf[i] = OVERFLOW;
            }
        }
        let labels = &buf[..n];
        let h = hash(labels);
        if let Some(m) = self.find(h, labels) {
            return m;
        }
        let mut held = self.held.write();
        let same_hash = held.entry(h).or_default();
        if let Some(s) = same_hash.iter().find(|s| same(&s.labels, labels)) {
            return s.metric.clone();
        }
        let metric = self.vec.series(labels);
        same_hash.push(Held {
            labels: labels.iter().map(|l| Box::from(*l)).collect(),
            metric: metric.clone(),
            counted: false,
        });
        metric
    }

    /// Record into the `_overflow` series standing for `labels`, and count it.
    pub fn overflowed(&self, labels: &[&str], record: impl FnOnce(&V::M)) {
        record(&self.overflow_series(labels));
        self.overflowed.inc();
    }

    /// Record into the series of `labels`, or its `_overflow` series when the family is
    /// full and does not hold it.
    pub fn with(&self, labels: &[&str], record: impl FnOnce(&V::M)) {
        match self.own(labels) {
            Some(m) => record(&m),
            None => self.overflowed(labels, record),
        }
    }

    /// Drop the label sets `keep` refuses (never the `_overflow` ones); how many went.
    pub fn retain(&self, keep: impl Fn(&[&str]) -> bool) -> usize {
        let mut held = self.held.write();
        let mut gone = 0;
        held.retain(|_, same_hash| {
            same_hash.retain(|s| {
                if !s.counted {
                    return true;
                }
                let mut buf = [""; MAX_LABELS];
                let n = s.labels.len().min(MAX_LABELS);
                for (b, l) in buf.iter_mut().zip(s.labels.iter()) {
                    *b = l;
                }
                if keep(&buf[..n]) {
                    return true;
                }
                self.vec.remove(&buf[..n]);
                gone += 1;
                false
            });
            !same_hash.is_empty()
        });
        self.count.fetch_sub(gone, Ordering::Relaxed);
        gone
    }
}

impl Family<IntCounterVec> {
    /// Add one to the series of `labels`.
    pub fn inc(&self, labels: &[&str]) {
        self.with(labels, |c| c.inc());
    }
}

impl Family<HistogramVec> {
    /// Observe `took` in the series of `labels`.
    pub fn observe(&self, labels: &[&str], took: Duration) {
        self.with(labels, |h| h.observe(took.as_secs_f64()));
    }
}

/// The series of one slot, resolved on first use. A label set that went to `_overflow` is
/// not kept: the next use tries again (the family may have room by then).
fn record<V: LabelledVec>(
    slot: &OnceLock<V::M>,
    family: &Family<V>,
    labels: &[&str],
    f: impl FnOnce(&V::M),
) {
    if let Some(m) = slot.get() {
        return f(m);
    }
    match family.own(labels) {
        Some(m) => {
            f(&m);
            let _ = slot.set(m);
        }
        None => family.overflowed(labels, f),
    }
}

/// A rate-limit decision's `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateResult {
    Allowed,
    Limited,
}

impl RateResult {
    fn label(self) -> &'static str {
        match self {
            RateResult::Allowed => "allowed",
            RateResult::Limited => "limited",
        }
    }
}

/// A quota decision's `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaResult {
    Counted,
    Overage,
    Exceeded,
}

impl QuotaResult {
    fn label(self) -> &'static str {
        match self {
            QuotaResult::Counted => "counted",
            QuotaResult::Overage => "overage",
            QuotaResult::Exceeded => "exceeded",
        }
    }
}

/// The series a compiled route's requests count in, resolved once each.
pub struct RouteSeries {
    generation: u64,
    tenant: Arc<str>,
    /// The route's id with `metrics_detail`, else [`TENANT_ROUTE`].
    route: Arc<str>,
    origin: Arc<str>,
    requests: [OnceLock<IntCounter>; STATUS_CLASSES.len()],
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    ratelimit: [OnceLock<IntCounter>; 2],
    quota: [OnceLock<IntCounter>; 3],
}

static TENANT_ROUTE_LABEL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(TENANT_ROUTE));

impl RouteSeries {
    fn new(generation: u64, tenant: &Arc<str>, route: &RouteRt) -> RouteSeries {
        RouteSeries {
            generation,
            tenant: tenant.clone(),
            route: if route.metrics_detail {
                route.id.clone()
            } else {
                TENANT_ROUTE_LABEL.clone()
            },
            origin: route.pool.id.clone(),
            requests: Default::default(),
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
            ratelimit: Default::default(),
            quota: Default::default(),
        }
    }

    /// The `route` label of its series.
    pub fn route_label(&self) -> &str {
        &self.route
    }

    /// A request answered with `status` after `took`.
    pub fn request(&self, status: u16, took: Duration) {
        let m = &*super::metrics::METRICS;
        let class = status_class(status);
        let (tenant, route) = (&*self.tenant, &*self.route);
        record(
            &self.requests[class],
            &m.requests,
            &[tenant, route, STATUS_CLASSES[class]],
            |c| c.inc(),
        );
        record(&self.duration, &m.request_duration, &[tenant, route], |h| {
            h.observe(took.as_secs_f64())
        });
    }

    /// Time spent on `origin` (the route's, or another its split chose).
    pub fn upstream(&self, origin: &str, took: Duration) {
        let m = &*super::metrics::METRICS;
        if origin != &*self.origin {
            m.upstream_duration.observe(&[origin], took);
            return;
        }
        record(&self.upstream, &m.upstream_duration, &[&self.origin], |h| {
            h.observe(took.as_secs_f64())
        });
    }

    fn ratelimit(&self, result: RateResult) {
        let m = &*super::metrics::METRICS;
        let slot = &self.ratelimit[result as usize];
        let labels = [&*self.tenant, &*self.route, result.label()];
        record(slot, &m.ratelimit, &labels, |c| c.inc());
    }

    fn quota(&self, result: QuotaResult) {
        let m = &*super::metrics::METRICS;
        let slot = &self.quota[result as usize];
        let labels = [&*self.tenant, &*self.route, result.label()];
        record(slot, &m.quota, &labels, |c| c.inc());
    }
}

/// Where a rate-limit or quota decision is counted.
#[derive(Clone, Copy)]
pub enum DecisionSeries<'a> {
    /// A routed request: its route's series.
    Route(&'a RouteSeries),
    /// A question to the decision service: the tenant's series (`route="_tenant"`).
    Tenant(&'a str),
}

impl DecisionSeries<'_> {
    pub fn ratelimit(self, result: RateResult) {
        match self {
            DecisionSeries::Route(r) => r.ratelimit(result),
            DecisionSeries::Tenant(t) => {
                let labels = [t, TENANT_ROUTE, result.label()];
                super::metrics::METRICS.ratelimit.inc(&labels);
            }
        }
    }

    pub fn quota(self, result: QuotaResult) {
        match self {
            DecisionSeries::Route(r) => r.quota(result),
            DecisionSeries::Tenant(t) => {
                let labels = [t, TENANT_ROUTE, result.label()];
                super::metrics::METRICS.quota.inc(&labels);
            }
        }
    }
}

// ── The routes' series, by the address of their compiled route ─────────────────────────

const SHARDS: usize = 32;

struct Cached {
    /// Keeps the route's allocation, so its address is not reused while the entry lives.
    route: Weak<RouteRt>,
    series: Arc<RouteSeries>,
}

#[derive(Default)]
struct Shard {
    routes: HashMap<usize, Cached>,
    /// Entries of dropped routes are cleared when the shard reaches this size.
    prune_at: usize,
}

impl Shard {
    fn prune(&mut self) {
        self.routes.retain(|_, c| c.route.strong_count() > 0);
        self.prune_at = (self.routes.len() * 2).max(64);
    }
}

static ROUTES: LazyLock<[RwLock<Shard>; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| RwLock::new(Shard::default())));

fn shard_of(key: usize) -> usize {
    // Fibonacci hashing of the address (allocations are aligned: the low bits say little).
    ((key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) as usize % SHARDS
}

/// The series of `route` (a route of `tenant`), resolved once per compiled route.
pub fn route_series(tenant: &Arc<str>, route: &Arc<RouteRt>) -> Arc<RouteSeries> {
    let key = Arc::as_ptr(route) as usize;
    let generation = GENERATION.load(Ordering::Acquire);
    let shard = &ROUTES[shard_of(key)];
    if let Some(c) = shard.read().routes.get(&key) {
        if c.series.generation == generation {
            return c.series.clone();
        }
    }
    let series = Arc::new(RouteSeries::new(generation, tenant, route));
    let mut s = shard.write();
    if s.routes.len() >= s.prune_at {
        s.prune();
    }
    s.routes.insert(
        key,
        Cached {
            route: Arc::downgrade(route),
            series: series.clone(),
        },
    );
    series
}

// ── Forgetting what a reload removed ────────────────────────────────────────────────────

/// The highest configuration version whose leftovers were looked for.
static FOLLOWED: AtomicU64 = AtomicU64::new(0);

/// Called with the snapshot of every request (one atomic load): the first request that
/// sees a newer configuration version has the label sets it no longer produces forgotten,
/// off the request path.
pub fn follow(snapshot: &Arc<Snapshot>) {
    let v = snapshot.version;
    if FOLLOWED.load(Ordering::Relaxed) >= v {
        return;
    }
    let before = FOLLOWED.fetch_max(v, Ordering::Relaxed);
    if before >= v || before == 0 {
        // Another request got there first, or this is the first configuration.
        return;
    }
    let snapshot = snapshot.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || forget_absent(&snapshot));
        }
        Err(_) => {
            forget_absent(&snapshot);
        }
    }
}

/// Forget the label sets of tenants, routes and origins `snapshot` does not have, and of
/// routes whose series it folds into their tenant's; then route series resolved before
/// are resolved again. The work grows with the label sets held (bounded by the cap), not
/// with the configuration. Returns how many label sets went.
pub fn forget_absent(snapshot: &Snapshot) -> usize {
    let tenant_ok = |t: &str| t == NONE || snapshot.tenant(t).is_some();
    let route_ok = |l: &[&str]| match snapshot.tenant(l[0]) {
        None => l[0] == NONE,
        Some(t) => {
            l[1] == NONE
                || l[1] == TENANT_ROUTE
                || t.routes.get(l[1]).is_some_and(|r| r.metrics_detail)
        }
    };
    let m = &*super::metrics::METRICS;
    let mut gone = m.requests.retain(route_ok)
        + m.request_duration.retain(route_ok)
        + m.ratelimit.retain(route_ok)
        + m.quota.retain(route_ok)
        + m.auth_failures.retain(|l| tenant_ok(l[0]));
    if !m.upstream_duration.is_empty() {
        let origins: HashSet<&str> = snapshot.pools().map(|p| &*p.id).collect();
        gone += m.upstream_duration.retain(|l| origins.contains(l[0]));
    }
    if gone > 0 {
        // Handles resolved before now may be of label sets just dropped.
        GENERATION.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            series = gone,
            "metric series of removed tenants, routes and origins forgotten"
        );
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(
        name: &'static str,
        labels: &[&str],
        growing: &'static [usize],
    ) -> Family<IntCounterVec> {
        let vec = IntCounterVec::new(prometheus::Opts::new(name, "test"), labels).unwrap();
        let overflow =
            IntCounterVec::new(prometheus::Opts::new("overflow", "test"), &["family"]).unwrap();
        Family::new(name, vec, growing, &overflow)
    }

    fn value(f: &Family<IntCounterVec>, labels: &[&str]) -> u64 {
        f.vec.get_metric_with_label_values(labels).unwrap().get()
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(304)], "3xx");
        assert_eq!(STATUS_CLASSES[status_class(429)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(0)], "000");
        assert_eq!(STATUS_CLASSES[status_class(600)], "000");
    }

    #[test]
    fn hashes_tell_label_boundaries_apart() {
        assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
        assert_eq!(hash(&["a", "b"]), hash(&["a", "b"]));
    }

    #[test]
    fn past_the_cap_new_label_sets_overflow_and_old_ones_keep_counting() {
        let mut f = family("capped_total", &["tenant", "route", "status"], &[0, 1]);
        f.cap = Some(3);
        for t in ["a", "b", "c"] {
            f.inc(&[t, "_tenant", "2xx"]);
        }
        assert_eq!(f.len(), 3);
        f.inc(&["d", "_tenant", "2xx"]);
        f.inc(&["e", "_tenant", "5xx"]);
        f.inc(&["e", "_tenant", "5xx"]);
        f.inc(&["a", "_tenant", "2xx"]);
        assert_eq!(f.len(), 3, "overflow label sets do not count");
        assert_eq!(value(&f, &["a", "_tenant", "2xx"]), 2);
        assert_eq!(value(&f, &["_overflow", "_overflow", "2xx"]), 1);
        assert_eq!(value(&f, &["_overflow", "_overflow", "5xx"]), 2);
        assert_eq!(f.overflowed.get(), 3);
        // Forgetting makes room; the overflow series stay.
        assert_eq!(f.retain(|l| l[0] != "b"), 1);
        assert_eq!(f.len(), 2);
        f.inc(&["d", "_tenant", "2xx"]);
        assert_eq!(value(&f, &["d", "_tenant", "2xx"]), 1);
        assert_eq!(f.len(), 3);
        let held = prometheus::core::Collector::collect(&f.vec)[0]
            .get_metric()
            .len();
        assert_eq!(held, 5, "a, c, d and the two overflow series");
    }
}
