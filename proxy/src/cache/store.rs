//! Storage behind pingora-cache: a byte-bounded in-memory tier (TinyUFO: TinyLFU admission,
//! S3-FIFO eviction) and a Redis tier shared by the fleet. One [`Store`] implements
//! pingora's `Storage` over either tier or both (memory in front of Redis).
//!
//! Entries are written whole when the origin's body is complete (no streaming partial
//! writes): concurrent misses wait on pingora's cache lock instead. A Redis failure is a miss
//! on lookup and a skipped write on store, never an error to the client.

use crate::telemetry::metrics::METRICS;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use fred::prelude::*;
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tinyufo::TinyUfo;

/// TinyUFO weighs entries in u16 units; one unit is this many bytes (so an entry of up to
/// 64 MiB fits, and small entries are charged at least 1 KiB for their overhead).
const WEIGHT_UNIT: usize = 1024;

/// One stored response: serialized `CacheMeta` and the whole body.
#[derive(Clone)]
pub struct Entry {
    key: HashBinary,
    meta: (Bytes, Bytes),
    body: Bytes,
}

impl Entry {
    fn size(&self) -> usize {
        self.meta.0.len() + self.meta.1.len() + self.body.len()
    }
}

/// The in-memory tier.
pub struct MemoryTier {
    map: TinyUfo<HashBinary, Arc<Entry>>,
    bytes: AtomicI64,
}

impl MemoryTier {
    /// A tier that holds at most `limit_bytes` (entry sizes rounded up to 1 KiB).
    pub fn new(limit_bytes: usize) -> MemoryTier {
        let units = (limit_bytes / WEIGHT_UNIT).max(1);
        // TinyUFO sizes its frequency sketch by the expected item count.
        let estimated_items = (units / 4).clamp(1024, 4 << 20);
        MemoryTier {
            map: TinyUfo::new(units, estimated_items),
            bytes: AtomicI64::new(0),
        }
    }

    fn get(&self, key: &HashBinary) -> Option<Arc<Entry>> {
        self.map.get(key).filter(|e| e.key == *key)
    }

    fn put(&self, entry: Arc<Entry>) {
        let size = entry.size();
        let Ok(weight) = u16::try_from(size.div_ceil(WEIGHT_UNIT).max(1)) else {
            return; // over 64 MiB: not kept in memory
        };
        if let Some(old) = self.map.get(&entry.key) {
            self.account(-(old.size() as i64));
        }
        self.account(size as i64);
        let key = entry.key;
        for evicted in self.map.force_put(key, entry, weight) {
            self.account(-(evicted.data.size() as i64));
            // The entry just written can be the one chosen; that is a non-admission.
            if evicted.data.key != key {
                METRICS.cache_evictions.inc();
            }
        }
    }

    fn remove(&self, key: &HashBinary) -> bool {
        match self.map.remove(key) {
            Some(old) => {
                self.account(-(old.size() as i64));
                true
            }
            None => false,
        }
    }

    fn account(&self, delta: i64) {
        let now = self.bytes.fetch_add(delta, Ordering::Relaxed) + delta;
        METRICS
            .cache_bytes
            .with_label_values(&["memory"])
            .set(now.max(0));
    }
}

/// The Redis tier: one hash per entry (`m0`, `m1`: meta; `b`: body), expiring a while after
/// the entry can no longer be served even stale. Every command (and pipeline) touches that
/// one key, so on a Redis Cluster the entries spread over the masters by their key hash.
pub struct RedisTier {
    client: Client,
    prefix: String,
    timeout: Duration,
}

/// How long an entry stays in Redis after its last stale window closes, so it can still be
/// revalidated with a conditional request.
const REDIS_GRACE: Duration = Duration::from_secs(600);

impl RedisTier {
    /// A tier over an existing (shared) client.
    pub fn new(client: Client, prefix: &str, timeout: Duration) -> RedisTier {
        RedisTier {
            client,
            prefix: prefix.to_string(),
            timeout,
        }
    }

    fn key(&self, key: &HashBinary) -> String {
        format!("{}:cache:{}", self.prefix, hex::encode(key))
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, fred::error::Error>>,
    ) -> Option<T> {
        if !self.client.is_connected() {
            METRICS.redis_errors.with_label_values(&["cache"]).inc();
            return None;
        }
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::debug!("redis cache: {e}");
                METRICS.redis_errors.with_label_values(&["cache"]).inc();
                None
            }
            Err(_) => {
                METRICS.redis_errors.with_label_values(&["cache"]).inc();
                None
            }
        }
    }

    async fn get(&self, key: &HashBinary) -> Option<Entry> {
        let rkey = self.key(key);
        let fields: Vec<Option<Bytes>> = self
            .timed(self.client.hmget(rkey, vec!["m0", "m1", "b"]))
            .await?;
        match <[Option<Bytes>; 3]>::try_from(fields) {
            Ok([Some(m0), Some(m1), Some(b)]) => Some(Entry {
                key: *key,
                meta: (m0, m1),
                body: b,
            }),
            _ => None,
        }
    }

    fn ttl(meta: &CacheMeta) -> Duration {
        let stale = meta
            .stale_while_revalidate_sec()
            .max(meta.stale_if_error_sec());
        let until = meta.fresh_until() + Duration::from_secs(u64::from(stale)) + REDIS_GRACE;
        until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1))
    }

    async fn put(&self, entry: &Entry, ttl: Duration) {
        let rkey = self.key(&entry.key);
        let pipe = self.client.pipeline();
        let write = async {
            let _: () = pipe
                .hset(
                    &rkey,
                    vec![
                        ("m0", entry.meta.0.clone()),
                        ("m1", entry.meta.1.clone()),
                        ("b", entry.body.clone()),
                    ],
                )
                .await?;
            let _: () = pipe.pexpire(&rkey, ttl.as_millis() as i64, None).await?;
            pipe.all::<()>().await
        };
        self.timed(write).await;
    }

    async fn update_meta(&self, key: &HashBinary, meta: (Bytes, Bytes), ttl: Duration) -> bool {
        let rkey = self.key(key);
        let pipe = self.client.pipeline();
        let write = async {
            let _: () = pipe
                .hset(&rkey, vec![("m0", meta.0), ("m1", meta.1)])
                .await?;
            let _: () = pipe.pexpire(&rkey, ttl.as_millis() as i64, None).await?;
            pipe.all::<()>().await
        };
        self.timed(write).await.is_some()
    }

    async fn remove(&self, key: &HashBinary) -> bool {
        let n: Option<i64> = self.timed(self.client.del(self.key(key))).await;
        n.unwrap_or(0) > 0
    }
}

/// A cache storage over the memory tier, the Redis tier, or both.
pub struct Store {
    memory: Option<&'static MemoryTier>,
    redis: Option<&'static RedisTier>,
    /// Upper bound of a stored body, whatever the route says.
    max_body: usize,
}

impl Store {
    /// A store over the given tiers (at least one).
    pub fn new(
        memory: Option<&'static MemoryTier>,
        redis: Option<&'static RedisTier>,
        max_body: usize,
    ) -> Store {
        Store {
            memory,
            redis,
            max_body,
        }
    }

    fn label(&self) -> &'static str {
        match (self.memory.is_some(), self.redis.is_some()) {
            (true, true) => "memory+redis",
            (false, true) => "redis",
            _ => "memory",
        }
    }
}

fn meta_bytes(meta: &CacheMeta) -> Result<(Bytes, Bytes)> {
    let (a, b) = meta.serialize()?;
    Ok((Bytes::from(a), Bytes::from(b)))
}

fn target_key(target: PurgeTarget<'_>) -> HashBinary {
    let key: &CompactCacheKey = target.key();
    key.combined_bin()
}

impl Store {
    /// The entry under `hash`: the memory tier, then Redis (a Redis hit is kept in memory).
    async fn find(&self, hash: HashBinary) -> Result<Option<(CacheMeta, HitHandler)>> {
        let mut found = self.memory.and_then(|m| m.get(&hash));
        if found.is_none() {
            if let Some(redis) = self.redis {
                if let Some(entry) = redis.get(&hash).await {
                    let entry = Arc::new(entry);
                    if let Some(m) = self.memory {
                        m.put(entry.clone());
                    }
                    found = Some(entry);
                }
            }
        }
        let Some(entry) = found else {
            return Ok(None);
        };
        let meta = match CacheMeta::deserialize(&entry.meta.0, &entry.meta.1) {
            Ok(m) => m,
            Err(e) => {
                // An entry from an older format: drop it and treat it as a miss.
                tracing::debug!("unreadable cache entry: {e}");
                if let Some(m) = self.memory {
                    m.remove(&hash);
                }
                return Ok(None);
            }
        };
        let len = entry.body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                body: entry.body.clone(),
                start: 0,
                end: len,
                done: false,
            }),
        )))
    }
}

#[async_trait]
impl Storage for Store {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let started = std::time::Instant::now();
        let found = self.find(hash).await;
        // Noted on the thread that goes on to take the cache lock (after the awaits above).
        super::lock::note_lookup(key, started);
        found
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Miss {
            store: self,
            key: key.combined_bin(),
            meta: meta_bytes(meta)?,
            ttl: RedisTier::ttl(meta),
            body: BytesMut::new(),
            too_large: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target_key(target);
        let mut removed = self.memory.is_some_and(|m| m.remove(&hash));
        if let Some(r) = self.redis {
            removed |= r.remove(&hash).await;
        }
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let bytes = meta_bytes(meta)?;
        let mut updated = false;
        if let Some(m) = self.memory {
            if let Some(old) = m.get(&hash) {
                m.put(Arc::new(Entry {
                    key: hash,
                    meta: bytes.clone(),
                    body: old.body.clone(),
                }));
                updated = true;
            }
        }
        if let Some(r) = self.redis {
            updated |= r.update_meta(&hash, bytes, RedisTier::ttl(meta)).await;
        }
        Ok(updated)
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Reads a whole stored body, or the range pingora seeks to.
struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} beyond body of {}", self.body.len()),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Buffers the origin's body and stores the entry when it is complete.
struct Miss {
    store: &'static Store,
    key: HashBinary,
    meta: (Bytes, Bytes),
    ttl: Duration,
    body: BytesMut,
    too_large: bool,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_large {
            return Ok(());
        }
        if self.body.len() + data.len() > self.store.max_body {
            self.too_large = true;
            self.body = BytesMut::new();
            return Ok(());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        if self.too_large {
            return Ok(MissFinishType::Created(0));
        }
        let entry = Entry {
            key: self.key,
            meta: self.meta,
            body: self.body.freeze(),
        };
        let size = entry.size();
        if let Some(r) = self.store.redis {
            r.put(&entry, self.ttl).await;
        }
        if let Some(m) = self.store.memory {
            m.put(Arc::new(entry));
        }
        METRICS
            .cache_stores
            .with_label_values(&[self.store.label()])
            .inc();
        Ok(MissFinishType::Created(size))
    }
}
