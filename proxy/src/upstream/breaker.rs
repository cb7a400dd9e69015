//! Per-target circuit breaker fed by passive failure counting.
//!
//! closed → (N consecutive failures) → open for `open_ms` → half-open: exactly one probe
//! request is let through → success closes it, failure opens it again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds on a process-wide monotonic clock (never 0).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Observable state, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// A lock-free breaker.
#[derive(Debug)]
pub struct Breaker {
    enabled: bool,
    threshold: u32,
    open_for: u64,
    failures: AtomicU32,
    /// 0 = closed; otherwise the clock value until which it is open.
    open_until: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    /// `threshold` consecutive failures open it for `open_for`.
    pub fn new(enabled: bool, threshold: u32, open_for: Duration) -> Self {
        Breaker {
            enabled,
            threshold: threshold.max(1),
            open_for: open_for.as_millis() as u64,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Current state at `now` (ms from [`now_ms`]).
    pub fn state(&self, now: u64) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if now < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// May a request go to this target now? In half-open state only the first caller gets
    /// `true` (it becomes the probe).
    pub fn allow(&self, now: u64) -> bool {
        if !self.enabled {
            return true;
        }
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    /// A request to this target succeeded. Returns true when this closed the breaker: only
    /// the half-open probe closes it; a late success of a request sent before the breaker
    /// opened does not.
    pub fn on_success(&self) -> bool {
        if self.probing.swap(false, Ordering::AcqRel) {
            self.failures.store(0, Ordering::Release);
            return self.open_until.swap(0, Ordering::AcqRel) != 0;
        }
        if self.open_until.load(Ordering::Acquire) == 0 {
            self.failures.store(0, Ordering::Release);
        }
        false
    }

    /// A request to this target failed. Returns true when this opened the breaker.
    pub fn on_failure(&self, now: u64) -> bool {
        if !self.enabled {
            return false;
        }
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probing = self.probing.swap(false, Ordering::AcqRel);
        let state = self.state(now);
        if was_probing || (state == BreakerState::Closed && failures >= self.threshold) {
            self.open_until
                .store(now + self.open_for.max(1), Ordering::Release);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_through_one_probe() {
        let b = Breaker::new(true, 3, Duration::from_millis(100));
        let t = 1000;
        assert!(b.allow(t));
        assert!(!b.on_failure(t));
        assert!(!b.on_failure(t));
        assert!(b.on_failure(t), "third failure opens");
        assert_eq!(b.state(t + 50), BreakerState::Open);
        assert!(!b.allow(t + 50));
        // Half-open: one probe only.
        assert!(b.allow(t + 100));
        assert!(!b.allow(t + 101));
        // Probe fails: open again for the full period.
        assert!(b.on_failure(t + 110));
        assert!(!b.allow(t + 150));
        assert!(b.allow(t + 211));
        assert!(b.on_success(), "probe success closes it");
        assert_eq!(b.state(t + 212), BreakerState::Closed);
        assert!(b.allow(t + 212) && b.allow(t + 212));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = Breaker::new(true, 2, Duration::from_millis(100));
        b.on_failure(1);
        b.on_success();
        assert!(!b.on_failure(2));
        assert_eq!(b.state(3), BreakerState::Closed);
    }

    #[test]
    fn a_late_success_does_not_close_an_open_breaker() {
        let b = Breaker::new(true, 1, Duration::from_millis(100));
        assert!(b.on_failure(10));
        assert!(
            !b.on_success(),
            "success of a request sent before it opened"
        );
        assert_eq!(b.state(20), BreakerState::Open);
        assert!(b.allow(110), "probe");
        assert!(b.on_success());
        assert_eq!(b.state(111), BreakerState::Closed);
    }

    #[test]
    fn disabled_breaker_always_allows() {
        let b = Breaker::new(false, 1, Duration::from_millis(100));
        assert!(!b.on_failure(1));
        assert!(b.allow(2));
    }
}
