//! The cache lock (request coalescing), with the gap between lookup and lock closed.
//!
//! pingora-cache looks a key up in storage and, on a miss, takes the cache lock in a second
//! step. A request whose lookup missed just before another request's fill was stored, and
//! whose lock comes just after that fill released its lock, finds no lock and becomes a
//! second writer: the origin is asked twice for what is already in the cache. On a busy
//! machine (a thread preempted between the two steps) that happens.
//!
//! [`CoalescingLock`] wraps pingora's [`CacheLock`] and remembers, for a few seconds, which
//! keys had a fill completed and when (recorded before the fill releases its lock).
//! [`note_lookup`] (called by the storage as every lookup returns) records on the thread which
//! key was looked up and when the lookup started; pingora takes the lock on the same thread,
//! with no await in between. A request that would become the writer checks, once it holds
//! the lock, whether a fill of its key completed after its lookup started. If so its lookup
//! is out of date: it gives the lock back as done and gets a lock already released as done,
//! so pingora looks the key up again and finds the fresh entry, exactly as a request that had
//! waited on the fill would.
//!
//! Whatever the thread-local finds, the worst a wrong guess costs is one more lookup: a
//! request whose second lookup still misses looked up after the fill and takes the lock
//! normally.

use http::Extensions;
use parking_lot::Mutex;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::lock::{CacheKeyLock, CacheLock, LockStatus, LockStub, Locked, WritePermit};
use pingora::cache::CacheKey;
use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a completed fill is remembered. A request's lookup and lock are microseconds
/// apart; a thread preempted for longer than this falls back to pingora's behaviour.
const REMEMBER: Duration = Duration::from_secs(2);

const SHARDS: usize = 16;

thread_local! {
    /// The key this thread last looked up in the cache storage, and when. Keys are compared by
    /// their primary part: the fill of a response with `Vary` is released under its variant's
    /// key, which the request that looked up the primary slot did not know yet.
    static LAST_LOOKUP: Cell<Option<(HashBinary, Instant)>> = const { Cell::new(None) };
}

/// Record, on the current thread, that a lookup of `key` started at `started`. The storage
/// calls this as its lookup returns, on the thread that goes on to take the lock.
pub fn note_lookup(key: &CacheKey, started: Instant) {
    LAST_LOOKUP.with(|c| c.set(Some((key.primary_bin(), started))));
}

fn lookup_started(key: &HashBinary) -> Option<Instant> {
    LAST_LOOKUP
        .with(|c| c.get())
        .filter(|(k, _)| k == key)
        .map(|(_, at)| at)
}

/// Fills completed recently in one shard: two generations, swapped every [`REMEMBER`], so an
/// entry lives between one and two periods and the maps hold only the recent fills.
struct Recent {
    since: Instant,
    current: HashMap<HashBinary, (Instant, LockStub)>,
    previous: HashMap<HashBinary, (Instant, LockStub)>,
}

impl Recent {
    fn rotate(&mut self, now: Instant) {
        if now.duration_since(self.since) >= REMEMBER {
            self.previous = std::mem::take(&mut self.current);
            self.since = now;
        }
    }

    fn find(&self, key: &HashBinary) -> Option<&(Instant, LockStub)> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }
}

/// pingora's cache lock plus the memory of recently completed fills (see the module docs).
pub struct CoalescingLock {
    inner: CacheLock,
    age_timeout: Duration,
    recent: [Mutex<Recent>; SHARDS],
}

impl CoalescingLock {
    /// A lock whose writers are trusted for at most `age_timeout`.
    pub fn new(age_timeout: Duration) -> CoalescingLock {
        let now = Instant::now();
        CoalescingLock {
            inner: CacheLock::new(age_timeout),
            age_timeout,
            recent: std::array::from_fn(|_| {
                Mutex::new(Recent {
                    since: now,
                    current: HashMap::new(),
                    previous: HashMap::new(),
                })
            }),
        }
    }

    fn shard(&self, key: &HashBinary) -> &Mutex<Recent> {
        &self.recent[key[0] as usize % SHARDS]
    }

    /// A lock already released as done, when a fill of `key` completed after `since`.
    fn filled_after(&self, key: &HashBinary, since: Instant) -> Option<Locked> {
        let recent = self.shard(key).lock();
        let (done_at, stub) = recent.find(key)?;
        (*done_at >= since).then(|| Locked::Read(stub.read_lock()))
    }

    fn remember_fill(&self, key: HashBinary) {
        let (mut permit, stub) = WritePermit::new(self.age_timeout, false, Extensions::new());
        permit.unlock(LockStatus::Done);
        let now = Instant::now();
        let mut recent = self.shard(&key).lock();
        recent.rotate(now);
        recent.current.insert(key, (now, stub));
    }
}

impl CacheKeyLock for CoalescingLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        let locked = self.inner.lock(key, stale_writer);
        let Locked::Write(permit) = locked else {
            return locked; // a fill is under way: wait for it as usual
        };
        // No fill holds the lock now. One that completed after this request's lookup started
        // was remembered before it released the lock, so it is seen here.
        let hash = key.primary_bin();
        if let Some(done) = lookup_started(&hash).and_then(|since| self.filled_after(&hash, since))
        {
            // Give the lock back as done: anyone who queued on it in the meantime looks up
            // again too, and finds the same fresh entry.
            self.inner.release(key, permit, LockStatus::Done);
            return done;
        }
        Locked::Write(permit)
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        // Remembered before the lock is released, so that whoever takes the lock next sees it.
        if reason == LockStatus::Done {
            self.remember_fill(key.primary_bin());
        }
        self.inner.release(key, permit, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> CacheKey {
        CacheKey::new(format!("tenant{path}"), "")
    }

    fn fill(lock: &CoalescingLock, k: &CacheKey) {
        match lock.lock(k, false) {
            Locked::Write(permit) => lock.release(k, permit, LockStatus::Done),
            Locked::Read(_) => panic!("the first request is the writer"),
        }
    }

    fn write_then_release(lock: &CoalescingLock, k: &CacheKey) {
        let Locked::Write(permit) = lock.lock(k, false) else {
            panic!("this request should be the writer");
        };
        lock.release(k, permit, LockStatus::Done);
    }

    #[test]
    fn a_lookup_that_missed_just_before_a_fill_completed_reads_the_fill() {
        let lock = CoalescingLock::new(Duration::from_secs(30));
        let k = key("/a");
        // This request looks up (miss) ...
        note_lookup(&k, Instant::now());
        // ... another request's fill is stored and its lock released ...
        std::thread::scope(|s| {
            s.spawn(|| fill(&lock, &k));
        });
        // ... and only then does this request take the lock: it must look up again, not
        // fetch a second time.
        match lock.lock(&k, false) {
            Locked::Read(r) => assert_eq!(r.lock_status(), LockStatus::Done),
            Locked::Write(_) => panic!("a second writer for a key already filled"),
        }
    }

    #[test]
    fn a_lookup_after_the_fill_takes_the_lock_as_usual() {
        let lock = CoalescingLock::new(Duration::from_secs(30));
        let k = key("/b");
        fill(&lock, &k);
        // The entry was evicted (or never admitted): this lookup missed after the fill, so
        // this request is the new writer.
        note_lookup(&k, Instant::now());
        let Locked::Write(permit) = lock.lock(&k, false) else {
            panic!("a lookup after the fill must be able to refill");
        };
        // Others now wait on it.
        note_lookup(&k, Instant::now());
        assert!(!lock.lock(&k, false).is_write());
        lock.release(&k, permit, LockStatus::Done);
    }

    #[test]
    fn another_keys_fill_or_lookup_changes_nothing() {
        let lock = CoalescingLock::new(Duration::from_secs(30));
        let (a, b) = (key("/c"), key("/d"));
        note_lookup(&a, Instant::now());
        fill(&lock, &b);
        // A fill of another key: still the writer.
        let Locked::Write(permit) = lock.lock(&a, false) else {
            panic!("another key's fill must not coalesce");
        };
        lock.release(&a, permit, LockStatus::Done);
        // The last lookup on this thread was of /c: a lock on /d is pingora's own.
        write_then_release(&lock, &b);
    }

    #[test]
    fn a_failed_or_uncacheable_fill_is_not_remembered() {
        let lock = CoalescingLock::new(Duration::from_secs(30));
        let k = key("/e");
        note_lookup(&k, Instant::now());
        for status in [LockStatus::TransientError, LockStatus::GiveUp] {
            let Locked::Write(permit) = lock.lock(&k, false) else {
                panic!("writer expected");
            };
            lock.release(&k, permit, status);
        }
        write_then_release(&lock, &k);
    }

    #[test]
    fn fills_are_forgotten_after_two_periods() {
        let lock = CoalescingLock::new(Duration::from_secs(30));
        let k = key("/f");
        fill(&lock, &k);
        let shard = lock.shard(&k.primary_bin());
        let later = Instant::now() + REMEMBER;
        shard.lock().rotate(later);
        assert!(shard.lock().find(&k.primary_bin()).is_some(), "one period");
        shard.lock().rotate(later + REMEMBER);
        assert!(shard.lock().find(&k.primary_bin()).is_none(), "two periods");
    }
}
