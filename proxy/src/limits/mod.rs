//! Local rate limiting: GCRA token buckets and two-window sliding windows, per
//! (tenant, policy, subject), in a sharded in-process store that outlives reloads.
//!
//! Shared limits across a fleet live in Redis ([`redis`]).
//!
//! Memory is bounded: when a shard grows past its soft cap, entries that are idle (a full
//! bucket, or a window with nothing left to count) are dropped.

pub mod enforce;
pub mod plan;
pub mod quota;
pub mod redis;
pub mod report;

use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;
use vantage_model::{LimitAlgorithm, RateLimitHeaders};

const SHARDS: usize = 32;
/// A shard is swept for idle subjects when it reaches this size (then twice what is left).
const SHARD_SOFT_CAP: usize = 16_384;
/// Past this size a shard forgets half of its subjects, idle or not (memory bound).
const SHARD_HARD_CAP: usize = 8 * SHARD_SOFT_CAP;

/// The outcome of one policy for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Burst (token bucket) or requests per window.
    pub limit: u32,
    /// Requests still admitted right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again / the window ends.
    pub reset_s: u64,
    /// When refused: seconds until a request would be admitted (at least 1).
    pub retry_after_s: u64,
    /// Window of the policy in seconds (`RateLimit-Policy: w=`).
    pub window_s: u64,
    /// Requests the policy admits per window when sustained (`RateLimit-Policy: q=`).
    pub quota: u64,
}

/// `RateLimit-Policy` figures of a token bucket: a window long enough to hold the burst (at
/// least 1 s) and what the rate admits in it.
pub fn bucket_policy(rate: f64, burst: u32) -> (u64, u64) {
    let window_s = (f64::from(burst) / rate).ceil().max(1.0) as u64;
    let quota = (rate * window_s as f64).floor().max(1.0) as u64;
    (window_s, quota)
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Theoretical arrival time, ns on the store's clock.
    Gcra { tat: u64 },
    /// `expires`: when the counts no longer matter (end of the next window).
    Window {
        index: u64,
        prev: u32,
        curr: u32,
        expires: u64,
    },
}

struct Shard {
    map: HashMap<String, State>,
    sweep_at: usize,
}

impl Shard {
    fn make_room(&mut self, now: u64) {
        self.map.retain(|_, state| !idle(state, now));
        if self.map.len() >= SHARD_HARD_CAP {
            let mut n = 0usize;
            self.map.retain(|_, _| {
                n += 1;
                n.is_multiple_of(2)
            });
        }
        self.sweep_at = SHARD_SOFT_CAP.max(self.map.len() * 2);
    }
}

/// The process-wide counter store.
pub struct Store {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    start: std::time::Instant,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        sweep_at: SHARD_SOFT_CAP,
                    })
                })
                .collect(),
            hasher: Default::default(),
            start: std::time::Instant::now(),
        }
    }
}

fn ceil_s(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

impl Store {
    /// Nanoseconds on the store's monotonic clock.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        match shard.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// What [`Store::check`] would decide, without counting the request.
    pub fn peek(&self, key: &str, algorithm: &LimitAlgorithm, now: u64) -> Decision {
        let state = self.shard(key).map.get(key).copied();
        decide(state, algorithm, now).0
    }

    /// Count one request of `key` under `algorithm` at `now` (ns, from [`Store::now`]).
    pub fn check(&self, key: &str, algorithm: &LimitAlgorithm, now: u64) -> Decision {
        let mut shard = self.shard(key);
        let state = shard.map.get(key).copied();
        let (decision, next) = decide(state, algorithm, now);
        if let Some(next) = next {
            match shard.map.get_mut(key) {
                Some(s) => *s = next,
                None => {
                    if shard.map.len() >= shard.sweep_at {
                        shard.make_room(now);
                    }
                    shard.map.insert(key.to_string(), next);
                }
            }
        }
        decision
    }

    /// Number of tracked subjects (tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.map.len()))
            .sum()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Nothing left to remember: a full bucket, or windows that no longer count.
fn idle(state: &State, now: u64) -> bool {
    match state {
        State::Gcra { tat } => *tat <= now,
        State::Window { expires, .. } => *expires <= now,
    }
}

/// The pure decision function: the new state is None when the request was refused.
fn decide(state: Option<State>, algorithm: &LimitAlgorithm, now: u64) -> (Decision, Option<State>) {
    match *algorithm {
        LimitAlgorithm::TokenBucket { rate, burst } => {
            let interval = (1e9 / rate).max(1.0) as u64;
            let capacity = interval.saturating_mul(u64::from(burst));
            let (window_s, quota) = bucket_policy(rate, burst);
            let tat = match state {
                Some(State::Gcra { tat }) => tat.max(now),
                _ => now,
            };
            let new_tat = tat.saturating_add(interval);
            if new_tat - now <= capacity {
                let remaining = ((capacity - (new_tat - now)) / interval) as u32;
                (
                    Decision {
                        allowed: true,
                        limit: burst,
                        remaining,
                        reset_s: ceil_s(new_tat - now),
                        retry_after_s: 0,
                        window_s,
                        quota,
                    },
                    Some(State::Gcra { tat: new_tat }),
                )
            } else {
                (
                    Decision {
                        allowed: false,
                        limit: burst,
                        remaining: 0,
                        reset_s: ceil_s(tat - now),
                        retry_after_s: ceil_s(new_tat - now - capacity).max(1),
                        window_s,
                        quota,
                    },
                    None,
                )
            }
        }
        LimitAlgorithm::SlidingWindow { limit, period_s } => {
            let period = u64::from(period_s) * 1_000_000_000;
            let index = now / period;
            let (prev, curr) = match state {
                Some(State::Window {
                    index: i,
                    prev,
                    curr,
                    ..
                }) if i == index => (prev, curr),
                Some(State::Window { index: i, curr, .. }) if i + 1 == index => (curr, 0),
                _ => (0, 0),
            };
            let elapsed = now % period;
            let weight = 1.0 - elapsed as f64 / period as f64;
            let estimate = f64::from(prev) * weight + f64::from(curr);
            let reset_s = ceil_s(period - elapsed).max(1);
            if estimate + 1.0 <= f64::from(limit) {
                let remaining = (f64::from(limit) - estimate - 1.0).floor().max(0.0) as u32;
                (
                    Decision {
                        allowed: true,
                        limit,
                        remaining,
                        reset_s,
                        retry_after_s: 0,
                        window_s: u64::from(period_s),
                        quota: u64::from(limit),
                    },
                    Some(State::Window {
                        index,
                        prev,
                        curr: curr + 1,
                        expires: (index + 2) * period,
                    }),
                )
            } else {
                // The previous window's weight decays linearly; find when one more fits.
                let retry_ns = if prev > 0 {
                    let excess = estimate + 1.0 - f64::from(limit);
                    ((excess / f64::from(prev)) * period as f64) as u64
                } else {
                    period - elapsed
                };
                (
                    Decision {
                        allowed: false,
                        limit,
                        remaining: 0,
                        reset_s,
                        retry_after_s: ceil_s(retry_ns.min(period - elapsed)).max(1),
                        window_s: u64::from(period_s),
                        quota: u64::from(limit),
                    },
                    None,
                )
            }
        }
    }
}

/// Fields with their names as [`HeaderName`]s (for a [`crate::errors::Reply`]).
pub fn named(fields: Vec<(&'static str, HeaderValue)>) -> Vec<(HeaderName, HeaderValue)> {
    fields
        .into_iter()
        .map(|(n, v)| (HeaderName::from_static(n), v))
        .collect()
}

/// The policy closest to refusing a request (or the one that refused it), as the
/// decision service reports it and `X-RateLimit-*` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub policy: String,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again, the window or the quota's period ends.
    pub reset_s: u64,
    /// When refused: seconds until a request may be admitted.
    pub retry_after_s: Option<u64>,
    /// The window of `limit` in seconds (a quota's: its period's length).
    pub window_s: u64,
    /// A quota's calendar period.
    pub period: Option<vantage_model::QuotaPeriod>,
}

/// The strictest of a request's rate limit (`rate`) and enforced quotas: the rate limit
/// when there is one, else the quota with the least left. `retry_after` marks a refusal.
pub fn verdict(
    rate: Option<(&str, &Decision)>,
    quotas: &[quota::QuotaDecision],
    now: i64,
    retry_after: Option<u64>,
) -> Option<Verdict> {
    let tightest = quotas.iter().min_by_key(|q| q.remaining());
    let retry_after = retry_after.or(rate
        .filter(|(_, d)| !d.allowed)
        .map(|(_, d)| d.retry_after_s));
    match (rate, tightest) {
        (Some((name, d)), _) => Some(Verdict {
            policy: name.to_string(),
            limit: u64::from(d.limit),
            remaining: u64::from(d.remaining),
            reset_s: d.reset_s,
            retry_after_s: retry_after,
            window_s: d.window_s,
            period: None,
        }),
        (None, Some(q)) => Some(Verdict {
            policy: q.name.to_string(),
            limit: q.limit.max(0) as u64,
            remaining: q.remaining() as u64,
            reset_s: q.window.seconds_left(now),
            retry_after_s: retry_after,
            window_s: q.window.length(),
            period: Some(q.period),
        }),
        (None, None) => None,
    }
}

/// The response fields of a request's limits: the strictest rate limit (`rate`) and every
/// enforced quota that counted it (`now` in Unix seconds). `RateLimit-Policy` and
/// `RateLimit` list one item per policy — a quota's window `w` is its calendar period's
/// length in seconds and `t` the seconds to the period's end; `X-RateLimit-*` give the
/// [`verdict`]. `Retry-After` comes with a refusal: `retry_after` seconds.
pub fn fields(
    which: RateLimitHeaders,
    rate: Option<(&str, &Decision)>,
    quotas: &[quota::QuotaDecision],
    now: i64,
    retry_after: Option<u64>,
) -> Vec<(&'static str, HeaderValue)> {
    let Some(v) = verdict(rate, quotas, now, retry_after) else {
        return Vec::new();
    };
    // Names as static text: Pingora keeps that as the wire spelling without copying it.
    let mut h = Vec::with_capacity(6);
    if let Some(s) = v.retry_after_s {
        h.push(("retry-after", HeaderValue::from(s)));
    }
    if which == RateLimitHeaders::None {
        return h;
    }
    if which == RateLimitHeaders::All {
        h.push(("x-ratelimit-limit", HeaderValue::from(v.limit)));
        h.push(("x-ratelimit-remaining", HeaderValue::from(v.remaining)));
        h.push(("x-ratelimit-reset", HeaderValue::from(v.reset_s)));
    }
    // Policy and quota names are validated ids, so these are valid header values. Written
    // with itoa into one buffer per field: this runs for every limited request.
    let mut policy = String::with_capacity(48 * (1 + quotas.len()));
    let mut state = String::with_capacity(48 * (1 + quotas.len()));
    if let Some((name, d)) = rate {
        list_item(&mut policy, name, (";q=", d.quota), (";w=", d.window_s));
        list_item(
            &mut state,
            name,
            (";r=", u64::from(d.remaining)),
            (";t=", d.reset_s),
        );
    }
    for q in quotas {
        let limit = q.limit.max(0) as u64;
        list_item(
            &mut policy,
            &q.name,
            (";q=", limit),
            (";w=", q.window.length()),
        );
        let left = (";t=", q.window.seconds_left(now));
        list_item(&mut state, &q.name, (";r=", q.remaining() as u64), left);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(policy)) {
        h.push(("ratelimit-policy", v));
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(state)) {
        h.push(("ratelimit", v));
    }
    h
}

/// Append `"name";k1=v1;k2=v2` to a structured-field list.
fn list_item(out: &mut String, name: &str, (k1, v1): (&str, u64), (k2, v2): (&str, u64)) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    out.push('"');
    out.push_str(name);
    out.push('"');
    out.push_str(k1);
    out.push_str(itoa::Buffer::new().format(v1));
    out.push_str(k2);
    out.push_str(itoa::Buffer::new().format(v2));
}

/// Duration helper for tests and callers.
pub fn secs(s: f64) -> u64 {
    Duration::from_secs_f64(s).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUCKET: LimitAlgorithm = LimitAlgorithm::TokenBucket {
        rate: 100.0,
        burst: 20,
    };

    #[test]
    fn token_bucket_admits_the_burst_then_the_rate() {
        let s = Store::default();
        let t0 = secs(10.0);
        let admitted = (0..100)
            .filter(|_| s.check("k", &BUCKET, t0).allowed)
            .count();
        assert_eq!(admitted, 20, "an instant burst admits exactly `burst`");
        let d = s.check("k", &BUCKET, t0);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_s), (0, 1));
        // 100 ms later, 10 more tokens.
        let later = t0 + secs(0.1);
        let admitted = (0..100)
            .filter(|_| s.check("k", &BUCKET, later).allowed)
            .count();
        assert_eq!(admitted, 10);
        // Other subjects are independent.
        assert!(s.check("other", &BUCKET, later).allowed);
    }

    #[test]
    fn peek_does_not_count() {
        let s = Store::default();
        for _ in 0..100 {
            assert!(s.peek("k", &BUCKET, secs(1.0)).allowed);
        }
        assert_eq!(s.check("k", &BUCKET, secs(1.0)).remaining, 19);
    }

    #[test]
    fn token_bucket_headers_count_down() {
        let s = Store::default();
        let d = s.check("k", &BUCKET, secs(1.0));
        assert_eq!((d.limit, d.remaining, d.reset_s), (20, 19, 1));
        let h = fields(RateLimitHeaders::All, Some(("per-key", &d)), &[], 0, None);
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            get("ratelimit-policy").as_deref(),
            Some("\"per-key\";q=100;w=1")
        );
        assert_eq!(get("ratelimit").as_deref(), Some("\"per-key\";r=19;t=1"));
        assert_eq!(get("x-ratelimit-remaining").as_deref(), Some("19"));
        assert!(get("retry-after").is_none());
    }

    #[test]
    fn the_setting_chooses_the_fields_and_a_refusal_keeps_retry_after() {
        let s = Store::default();
        let d = s.check("k", &BUCKET, secs(1.0));
        let names = |which, retry| -> Vec<&'static str> {
            fields(which, Some(("per-key", &d)), &[], 0, retry)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(
            names(RateLimitHeaders::All, None),
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "ratelimit-policy",
                "ratelimit"
            ]
        );
        assert_eq!(
            names(RateLimitHeaders::Draft, None),
            ["ratelimit-policy", "ratelimit"]
        );
        assert!(names(RateLimitHeaders::None, None).is_empty());
        assert_eq!(names(RateLimitHeaders::None, Some(3)), ["retry-after"]);
        assert_eq!(names(RateLimitHeaders::Draft, Some(3))[0], "retry-after");
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        let s = Store::default();
        let w = LimitAlgorithm::SlidingWindow {
            limit: 10,
            period_s: 60,
        };
        let t0 = secs(600.0); // start of a window
        assert_eq!((0..15).filter(|_| s.check("k", &w, t0).allowed).count(), 10);
        let refused = s.check("k", &w, t0 + secs(1.0));
        assert!(!refused.allowed);
        assert_eq!(refused.reset_s, 59);
        // Half-way through the next window, half of the previous one still counts: 5 more.
        let mid = t0 + secs(90.0);
        assert_eq!((0..15).filter(|_| s.check("k", &w, mid).allowed).count(), 5);
        // Two windows later everything is forgotten.
        let late = t0 + secs(200.0);
        assert_eq!(
            (0..15).filter(|_| s.check("k", &w, late).allowed).count(),
            10
        );
    }

    #[test]
    fn bucket_policy_figures() {
        assert_eq!(bucket_policy(100.0, 20), (1, 100));
        assert_eq!(bucket_policy(0.5, 10), (20, 10));
        assert_eq!(bucket_policy(0.01, 30), (3000, 30));
    }

    #[test]
    fn idle_subjects_are_dropped_when_a_shard_fills() {
        let s = Store::default();
        let t0 = secs(1.0);
        for i in 0..(SHARDS * SHARD_SOFT_CAP + 1000) {
            s.check(&format!("k{i}"), &BUCKET, t0);
        }
        let before = s.len();
        assert!(
            before >= SHARDS * SHARD_SOFT_CAP,
            "nothing was idle yet: {before}"
        );
        // Long after, every bucket is full again: new subjects sweep the idle ones.
        let later = t0 + secs(60.0);
        for i in 0..(SHARDS * SHARD_SOFT_CAP) {
            s.check(&format!("new{i}"), &BUCKET, later);
        }
        // Without the sweep there would be about 2 × before.
        assert!(s.len() < before * 3 / 2, "{before} → {}", s.len());
    }
}
