//! Usage metering and violations: the [`Meter`] sink counts every answered request in memory
//! per UTC minute, tenant, subject (`key:<id>`, `user:<sub>`, or none), route and status
//! class, with request and response body bytes, the route's quota units and overage; and
//! aggregates violations (refusals by a rate limit, quota, auth or IP rule, and shadow-mode
//! would-be refusals) per minute, subject, kind, policy, mode and route.
//!
//! The [`UsageWriter`] cuts what the sink holds into a batch every `flush_interval_ms` and
//! applies batches to Postgres in order (`vantage_apply_usage_batch`). A batch has an id that
//! Postgres records in the same transaction, so a batch sent again after a lost reply (or
//! read back from the spool file) is never counted twice. While Postgres is away batches
//! wait in a bounded spool; at shutdown, after the last request in flight, the writer cuts
//! the last batch, tries once more, and saves what is left to `spool_file` (read back at the
//! next start).

use super::metrics::METRICS;
use super::{FinishSignal, Summary};
use crate::auth::Identity;
use async_trait::async_trait;
use deadpool_postgres::Pool;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_model::{EnforcementMode, UsageSettings};

/// What kind of rule refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    RateLimit,
    Quota,
    Auth,
    Ip,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::RateLimit => "rate_limit",
            ViolationKind::Quota => "quota",
            ViolationKind::Auth => "auth",
            ViolationKind::Ip => "ip",
        }
    }
}

/// One refusal (or shadow would-be refusal) of a request.
#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The policy or quota name; for auth and IP rules, the error code.
    pub policy: Arc<str>,
    /// The error code the client got (or would have got).
    pub code: &'static str,
    pub mode: EnforcementMode,
}

impl Violation {
    pub fn rate_limit(policy: &Arc<str>, mode: EnforcementMode) -> Violation {
        Violation {
            kind: ViolationKind::RateLimit,
            policy: policy.clone(),
            code: "rate_limited",
            mode,
        }
    }

    pub fn quota(quota: &Arc<str>, mode: EnforcementMode) -> Violation {
        Violation {
            kind: ViolationKind::Quota,
            policy: quota.clone(),
            code: "quota_exceeded",
            mode,
        }
    }

    /// A refusal by authentication (`kind` Auth) or an IP rule (`kind` Ip), by its code.
    pub fn refusal(kind: ViolationKind, code: &'static str) -> Violation {
        Violation {
            kind,
            policy: Arc::from(code),
            code,
            mode: EnforcementMode::Enforce,
        }
    }
}

/// What a request's admission adds to its usage row.
#[derive(Debug, Default)]
pub struct Metering {
    /// Quota units charged: the route's cost, when a quota counted the request.
    pub units: i64,
    /// Units past the limit of a quota with `overage: allow`.
    pub overage: i64,
    pub violations: Vec<Violation>,
}

/// Who a usage row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    Key(Arc<str>),
    User(Box<str>),
}

impl Who {
    fn of(identity: Option<&Identity>) -> Who {
        match identity {
            Some(Identity::Key(k)) => Who::Key(k.id.clone()),
            Some(Identity::User(u)) => Who::User(storable(&u.sub).into()),
            None => Who::Anonymous,
        }
    }

    fn label(&self) -> String {
        match self {
            Who::Anonymous => String::new(),
            Who::Key(id) => format!("key:{id}"),
            Who::User(sub) => format!("user:{sub}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UsageKey {
    minute: i64,
    tenant: Arc<str>,
    who: Who,
    route: Option<Arc<str>>,
    class: i16,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: i64,
    request_bytes: i64,
    response_bytes: i64,
    units: i64,
    overage: i64,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ViolationKey {
    minute: i64,
    tenant: Arc<str>,
    subject: String,
    kind: ViolationKind,
    policy: Arc<str>,
    mode: EnforcementMode,
    route: Option<Arc<str>>,
}

#[derive(Debug)]
struct ViolationAgg {
    code: &'static str,
    count: i64,
    first: SystemTime,
    last: SystemTime,
    sample: String,
}

#[derive(Default)]
struct Pending {
    usage: HashMap<UsageKey, Counts>,
    violations: HashMap<ViolationKey, ViolationAgg>,
}

const SHARDS: usize = 8;

/// The in-memory aggregation, shared by the sink and the writer.
struct Aggregate {
    shards: Vec<Mutex<Pending>>,
    /// Set before the last cut at shutdown: what is recorded later is counted as lost.
    closed: std::sync::atomic::AtomicBool,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

impl Aggregate {
    fn new() -> Aggregate {
        Aggregate {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Pending::default()))
                .collect(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// This thread's shard (threads are spread over the shards as they first record).
    fn shard(&self) -> std::sync::MutexGuard<'_, Pending> {
        let i = SHARD.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            s.get()
        });
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Everything held, as one batch; the aggregation starts again empty.
    fn cut(&self, proxy: &str) -> Option<Batch> {
        let mut usage: HashMap<UsageKey, Counts> = HashMap::new();
        let mut violations: HashMap<ViolationKey, ViolationAgg> = HashMap::new();
        for shard in &self.shards {
            let taken = {
                let mut g = match shard.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                std::mem::take(&mut *g)
            };
            for (k, c) in taken.usage {
                let e = usage.entry(k).or_default();
                e.requests += c.requests;
                e.request_bytes += c.request_bytes;
                e.response_bytes += c.response_bytes;
                e.units += c.units;
                e.overage += c.overage;
            }
            for (k, v) in taken.violations {
                match violations.get_mut(&k) {
                    Some(e) => {
                        e.count += v.count;
                        e.first = e.first.min(v.first);
                        e.last = e.last.max(v.last);
                    }
                    None => {
                        violations.insert(k, v);
                    }
                }
            }
        }
        if usage.is_empty() && violations.is_empty() {
            return None;
        }
        Some(Batch {
            id: uuid::Uuid::new_v4(),
            proxy: proxy.to_string(),
            usage: usage
                .into_iter()
                .map(|(k, c)| UsageRow {
                    ts: k.minute,
                    tenant: k.tenant.to_string(),
                    subject: k.who.label(),
                    route: k.route.as_deref().unwrap_or_default().to_string(),
                    class: k.class,
                    requests: c.requests,
                    request_bytes: c.request_bytes,
                    response_bytes: c.response_bytes,
                    units: c.units,
                    overage: c.overage,
                })
                .collect(),
            violations: violations
                .into_iter()
                .map(|(k, v)| ViolationRow {
                    ts: k.minute,
                    tenant: k.tenant.to_string(),
                    subject: k.subject,
                    kind: k.kind.as_str().to_string(),
                    policy: k.policy.to_string(),
                    mode: k.mode.as_str().to_string(),
                    route: k.route.as_deref().unwrap_or_default().to_string(),
                    code: v.code.to_string(),
                    count: v.count,
                    first: unix_ms(v.first),
                    last: unix_ms(v.last),
                    sample: v.sample,
                })
                .collect(),
        })
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A token's `sub` as Postgres `text` can hold it: without NUL, at most 256 bytes (a batch
/// Postgres refused would hold back every later one).
fn storable(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| *c != '\0').collect();
    if out.len() > 256 {
        let mut end = 256;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The sink: counts each finished request of a tenant.
#[derive(Clone)]
pub struct Meter {
    agg: Arc<Aggregate>,
}

impl super::Sink for Meter {
    fn record(&self, s: &Summary<'_>) {
        // A cache's background revalidation answers no client: not usage.
        if s.session.subrequest_ctx.is_some() {
            return;
        }
        if self.agg.closed.load(Ordering::Relaxed) {
            // Finished after the last batch was cut (the grace period ran out).
            METRICS.usage_dropped.with_label_values(&["shutdown"]).inc();
            return;
        }
        let Some(tenant) = s.tenant_id else {
            METRICS
                .usage_dropped
                .with_label_values(&["unattributed"])
                .inc();
            return;
        };
        let now = SystemTime::now();
        let minute = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64 / 60 * 60);
        let m = s.metering;
        let mut shard = self.agg.shard();
        let counts = shard
            .usage
            .entry(UsageKey {
                minute,
                tenant: tenant.clone(),
                who: Who::of(s.identity),
                route: s.route_id.cloned(),
                class: (s.status / 100) as i16,
            })
            .or_default();
        counts.requests += 1;
        counts.request_bytes += s.session.body_bytes_read() as i64;
        counts.response_bytes += s.bytes_sent() as i64;
        counts.units += m.units;
        counts.overage += m.overage;
        if m.violations.is_empty() {
            return;
        }
        let subject = violation_subject(s.identity, s.client.or_else(|| s.peer()));
        let route = s.route_id.cloned();
        add_violations(
            &mut shard,
            minute,
            now,
            tenant,
            &subject,
            &route,
            &m.violations,
            s.request_id,
        );
    }
}

impl Meter {
    /// Record refusals that no proxied request carries (the decision service's):
    /// `subject` as in violations rows, `sample` an id for the decision.
    pub fn record_violations(
        &self,
        tenant: &Arc<str>,
        subject: &str,
        route: Option<Arc<str>>,
        violations: &[Violation],
        sample: &str,
    ) {
        if violations.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let minute = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64 / 60 * 60);
        let mut shard = self.agg.shard();
        add_violations(
            &mut shard, minute, now, tenant, subject, &route, violations, sample,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn add_violations(
    shard: &mut Pending,
    minute: i64,
    now: SystemTime,
    tenant: &Arc<str>,
    subject: &str,
    route: &Option<Arc<str>>,
    violations: &[Violation],
    sample: &str,
) {
    for v in violations {
        let agg = shard
            .violations
            .entry(ViolationKey {
                minute,
                tenant: tenant.clone(),
                subject: subject.to_string(),
                kind: v.kind,
                policy: v.policy.clone(),
                mode: v.mode,
                route: route.clone(),
            })
            .or_insert_with(|| ViolationAgg {
                code: v.code,
                count: 0,
                first: now,
                last: now,
                sample: sample.to_string(),
            });
        agg.count += 1;
        agg.last = now;
    }
}

/// The subject of a violation: the key or token, else the client address.
fn violation_subject(identity: Option<&Identity>, client: Option<IpAddr>) -> String {
    match (Who::of(identity), client) {
        (Who::Anonymous, Some(ip)) => format!("ip:{ip}"),
        (Who::Anonymous, None) => String::new(),
        (who, _) => who.label(),
    }
}

/// One batch of usage rows and violations, applied to Postgres exactly once (by its id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub id: uuid::Uuid,
    pub proxy: String,
    pub usage: Vec<UsageRow>,
    pub violations: Vec<ViolationRow>,
}

impl Batch {
    /// Requests counted in the batch.
    pub fn requests(&self) -> u64 {
        self.usage.iter().map(|r| r.requests.max(0) as u64).sum()
    }
}

/// A `usage_minute` row's worth (`ts`: Unix seconds of the minute).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRow {
    pub ts: i64,
    pub tenant: String,
    pub subject: String,
    pub route: String,
    pub class: i16,
    pub requests: i64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub units: i64,
    pub overage: i64,
}

/// A `violations` row's worth (`first`/`last`: Unix milliseconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViolationRow {
    pub ts: i64,
    pub tenant: String,
    pub subject: String,
    pub kind: String,
    pub policy: String,
    pub mode: String,
    pub route: String,
    pub code: String,
    pub count: i64,
    pub first: i64,
    pub last: i64,
    pub sample: String,
}

const APPLY: &str = "SELECT vantage_apply_usage_batch($1, $2, $3::timestamptz[], $4::text[], \
     $5::text[], $6::text[], $7::int2[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], \
     $12::int8[], $13::timestamptz[], $14::text[], $15::text[], $16::text[], $17::text[], \
     $18::text[], $19::text[], $20::text[], $21::int8[], $22::timestamptz[], \
     $23::timestamptz[], $24::text[])";

/// The background writer: cuts batches, spools them, applies them in order.
pub struct UsageWriter {
    agg: Arc<Aggregate>,
    pool: Pool,
    proxy: String,
    interval: Duration,
    timeout: Duration,
    spool_max: usize,
    spool_file: Option<std::path::PathBuf>,
    spool: tokio::sync::Mutex<VecDeque<Batch>>,
    finish: FinishSignal,
}

/// The sink, its writer over `pool`, and the handle that finishes the writer.
pub fn channel(
    settings: &UsageSettings,
    pool: Pool,
    timeout: Duration,
) -> (Meter, UsageWriter, super::Finish) {
    let agg = Arc::new(Aggregate::new());
    let (finish, signal) = super::finish_pair();
    // Exported at 0 from the start: an alert on a loss must not wait for its first sample.
    for reason in ["spool_full", "shutdown", "rejected", "unattributed"] {
        METRICS.usage_dropped.with_label_values(&[reason]);
    }
    let writer = UsageWriter {
        agg: agg.clone(),
        pool,
        proxy: super::proxy_name(),
        interval: Duration::from_millis(settings.flush_interval_ms),
        timeout,
        spool_max: settings.spool_batches,
        spool_file: (!settings.spool_file.is_empty())
            .then(|| std::path::PathBuf::from(&settings.spool_file)),
        spool: tokio::sync::Mutex::new(VecDeque::new()),
        finish: signal,
    };
    (Meter { agg }, writer, finish)
}

impl UsageWriter {
    /// The proxy's name in usage batches (`<hostname>:<pid>`), also used by other reports of
    /// this process.
    pub fn proxy(&self) -> &str {
        &self.proxy
    }

    /// Apply one batch; `Ok` also when Postgres had it already. `Err((message, permanent))`:
    /// `permanent` when Postgres refused the data itself (it would refuse it again).
    async fn apply(&self, b: &Batch) -> Result<(), (String, bool)> {
        let u = &b.usage;
        let v = &b.violations;
        let u_ts: Vec<SystemTime> = u.iter().map(|r| from_unix_ms(r.ts * 1000)).collect();
        let u_tenant: Vec<&str> = u.iter().map(|r| r.tenant.as_str()).collect();
        let u_subject: Vec<&str> = u.iter().map(|r| r.subject.as_str()).collect();
        let u_route: Vec<&str> = u.iter().map(|r| r.route.as_str()).collect();
        let u_class: Vec<i16> = u.iter().map(|r| r.class).collect();
        let u_requests: Vec<i64> = u.iter().map(|r| r.requests).collect();
        let u_req_bytes: Vec<i64> = u.iter().map(|r| r.request_bytes).collect();
        let u_resp_bytes: Vec<i64> = u.iter().map(|r| r.response_bytes).collect();
        let u_units: Vec<i64> = u.iter().map(|r| r.units).collect();
        let u_overage: Vec<i64> = u.iter().map(|r| r.overage).collect();
        let v_ts: Vec<SystemTime> = v.iter().map(|r| from_unix_ms(r.ts * 1000)).collect();
        let v_tenant: Vec<&str> = v.iter().map(|r| r.tenant.as_str()).collect();
        let v_subject: Vec<&str> = v.iter().map(|r| r.subject.as_str()).collect();
        let v_kind: Vec<&str> = v.iter().map(|r| r.kind.as_str()).collect();
        let v_policy: Vec<&str> = v.iter().map(|r| r.policy.as_str()).collect();
        let v_mode: Vec<&str> = v.iter().map(|r| r.mode.as_str()).collect();
        let v_route: Vec<&str> = v.iter().map(|r| r.route.as_str()).collect();
        let v_code: Vec<&str> = v.iter().map(|r| r.code.as_str()).collect();
        let v_count: Vec<i64> = v.iter().map(|r| r.count).collect();
        let v_first: Vec<SystemTime> = v.iter().map(|r| from_unix_ms(r.first)).collect();
        let v_last: Vec<SystemTime> = v.iter().map(|r| from_unix_ms(r.last)).collect();
        let v_sample: Vec<&str> = v.iter().map(|r| r.sample.as_str()).collect();
        let run = async {
            let client = self.pool.get().await.map_err(|e| (e.to_string(), false))?;
            client
                .query_one(
                    APPLY,
                    &[
                        &b.id,
                        &b.proxy,
                        &u_ts,
                        &u_tenant,
                        &u_subject,
                        &u_route,
                        &u_class,
                        &u_requests,
                        &u_req_bytes,
                        &u_resp_bytes,
                        &u_units,
                        &u_overage,
                        &v_ts,
                        &v_tenant,
                        &v_subject,
                        &v_kind,
                        &v_policy,
                        &v_mode,
                        &v_route,
                        &v_code,
                        &v_count,
                        &v_first,
                        &v_last,
                        &v_sample,
                    ],
                )
                .await
                .map_err(|e| {
                    // Data exceptions (22) and integrity violations (23) are the batch's own.
                    let permanent = e
                        .code()
                        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
                    (e.to_string(), permanent)
                })?;
            Ok::<(), (String, bool)>(())
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err((format!("no answer within {:?}", self.timeout), false)),
        }
    }

    /// Cut what the sink holds into the spool (dropping the oldest batch when it is full).
    async fn cut(&self) {
        let Some(batch) = self.agg.cut(&self.proxy) else {
            return;
        };
        let mut spool = self.spool.lock().await;
        spool.push_back(batch);
        while spool.len() > self.spool_max {
            if let Some(old) = spool.pop_front() {
                tracing::warn!(
                    requests = old.requests(),
                    "usage spool full: oldest batch dropped"
                );
                METRICS
                    .usage_dropped
                    .with_label_values(&["spool_full"])
                    .inc_by(old.requests());
            }
        }
        METRICS.usage_spool.set(spool.len() as i64);
    }

    /// Apply spooled batches in order until one fails; true when the spool is empty.
    async fn drain(&self) -> bool {
        let mut spool = self.spool.lock().await;
        while let Some(batch) = spool.front() {
            match self.apply(batch).await {
                Ok(()) => {
                    METRICS.usage_written.inc_by(batch.requests());
                    spool.pop_front();
                    METRICS.usage_spool.set(spool.len() as i64);
                }
                Err((e, true)) => {
                    // Postgres refuses this batch's data: keep the others flowing.
                    METRICS.usage_flush_errors.inc();
                    tracing::error!(
                        requests = batch.requests(),
                        "usage batch refused by Postgres, dropped: {e}"
                    );
                    METRICS
                        .usage_dropped
                        .with_label_values(&["rejected"])
                        .inc_by(batch.requests());
                    spool.pop_front();
                    METRICS.usage_spool.set(spool.len() as i64);
                }
                Err((e, false)) => {
                    METRICS.usage_flush_errors.inc();
                    tracing::warn!(waiting = spool.len(), "usage batch not written yet: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// The spool files: `spool_file` itself (older builds) and `<spool_file>.<uuid>` (one per
    /// save).
    fn spool_files(&self) -> Vec<std::path::PathBuf> {
        let Some(path) = &self.spool_file else {
            return Vec::new();
        };
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Vec::new();
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let ours = format!("{name}.");
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|f| {
                    let f = f.to_string_lossy();
                    f == name || (f.starts_with(&ours) && !f.ends_with(".tmp"))
                })
            })
            .collect()
    }

    /// Batches saved by earlier runs (or by another process on the same path), put in front
    /// of the spool. The files stay until their batches are written ([`Self::forget`]), so
    /// a crash in between sends them again, and their ids keep them from counting twice.
    async fn load_spool_files(&self, loaded: &mut Vec<std::path::PathBuf>) {
        for path in self.spool_files() {
            if loaded.contains(&path) {
                continue;
            }
            let batches = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Vec<Batch>>(&t).map_err(|e| e.to_string()));
            match batches {
                Ok(batches) => {
                    tracing::info!(batches = batches.len(), path = %path.display(), "usage batches read back from a spool file");
                    let mut spool = self.spool.lock().await;
                    for b in batches.into_iter().rev() {
                        spool.push_front(b);
                    }
                    METRICS.usage_spool.set(spool.len() as i64);
                    loaded.push(path);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "usage spool file unreadable, left in place: {e}")
                }
            }
        }
    }

    /// Every batch of these files is written: remove them.
    fn forget(files: &mut Vec<std::path::PathBuf>) {
        for path in files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Save what is still spooled to a new file of this process's own (never over another's).
    /// `Ok(None)` when nothing was left.
    async fn save_spool(&self) -> Result<Option<std::path::PathBuf>, ()> {
        let spool = self.spool.lock().await;
        if spool.is_empty() {
            return Ok(None);
        }
        let Some(base) = &self.spool_file else {
            return Err(());
        };
        let name = base.file_name().map_or_else(
            || "usage-spool".into(),
            |f| f.to_string_lossy().into_owned(),
        );
        let path = base.with_file_name(format!("{name}.{}", uuid::Uuid::new_v4()));
        let batches: Vec<&Batch> = spool.iter().collect();
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            let body = serde_json::to_vec(&batches).map_err(std::io::Error::other)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            std::io::Write::write_all(&mut f, &body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => {
                tracing::warn!(batches = spool.len(), path = %path.display(), "usage batches saved for the next start");
                Ok(Some(path))
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "usage spool not saved: {e}");
                Err(())
            }
        }
    }

    /// What is still spooled at exit is lost: count it.
    async fn count_lost(&self) {
        let spool = self.spool.lock().await;
        let lost: u64 = spool.iter().map(Batch::requests).sum();
        if lost > 0 {
            tracing::error!(
                requests = lost,
                "usage not written to Postgres at shutdown: lost"
            );
            METRICS
                .usage_dropped
                .with_label_values(&["shutdown"])
                .inc_by(lost);
        }
    }
}

#[async_trait]
impl BackgroundService for UsageWriter {
    /// Runs until the server's shutdown sequence finishes it (after the last request in
    /// flight was counted).
    async fn start(&self, _shutdown: ShutdownWatch) {
        let mut loaded = Vec::new();
        self.load_spool_files(&mut loaded).await;
        let mut stop = self.finish.stop.clone();
        let mut backoff = Duration::ZERO;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(self.interval + backoff) => {}
            }
            self.cut().await;
            backoff = if self.drain().await {
                // Everything read back is written; files another process left since are
                // picked up now.
                Self::forget(&mut loaded);
                self.load_spool_files(&mut loaded).await;
                Duration::ZERO
            } else {
                (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
            };
        }
        // After the last request in flight: close, cut, then write or keep what is left.
        self.agg.closed.store(true, Ordering::Relaxed);
        self.cut().await;
        if self.spool_file.is_some() {
            // Saved first, so a Postgres that does not answer in time loses nothing; removed
            // again (with the files read back) when the last try writes everything.
            let saved = self.save_spool().await;
            if self.drain().await {
                Self::forget(&mut loaded);
                if let Ok(Some(own)) = saved {
                    Self::forget(&mut vec![own]);
                }
            } else if saved.is_err() {
                self.count_lost().await;
            }
        } else if !self.drain().await {
            self.count_lost().await;
        }
        self.finish.done();
    }
}
