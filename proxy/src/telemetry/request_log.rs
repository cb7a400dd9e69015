//! Request logs into Postgres: one record per request, queued without waiting and written
//! in batches (one multi-row `INSERT ... SELECT FROM UNNEST(...)` per batch) by a background
//! task. When Postgres is slow or away the queue fills and new records are dropped and
//! counted (`vantage_request_logs_dropped_total`); the request path never waits.
//!
//! The writer runs until the server's shutdown sequence tells it to finish (after the last
//! request in flight was logged): it then writes what is queued and reports back through
//! [`Finish`](super::Finish), so the process exits with every answered request's row written.

use super::Finish;
use crate::telemetry::metrics::METRICS;
use async_trait::async_trait;
use deadpool_postgres::Pool;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use vantage_model::RequestLogSettings;

/// One row of `request_logs`.
#[derive(Debug, Clone)]
pub struct Record {
    pub ts: SystemTime,
    pub request_id: String,
    pub tenant_id: Option<String>,
    pub route_id: Option<String>,
    pub api_key_id: Option<String>,
    pub user_id: Option<String>,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub status: i32,
    pub latency_ms: f64,
    pub bytes_sent: i64,
    pub client_ip: Option<String>,
    pub cache_status: Option<String>,
    pub upstream: Option<String>,
}

/// The request path's side: a bounded queue.
#[derive(Clone)]
pub struct RequestLogger {
    tx: mpsc::Sender<Record>,
}

impl RequestLogger {
    /// Queue a record; when the queue is full it is dropped and counted.
    pub fn log(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                METRICS
                    .request_logs_dropped
                    .with_label_values(&["queue_full"])
                    .inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                METRICS
                    .request_logs_dropped
                    .with_label_values(&["closed"])
                    .inc();
            }
        }
    }
}

/// The request-log sink: one row per request.
impl super::Sink for RequestLogger {
    fn record(&self, s: &super::Summary<'_>) {
        self.log(Record {
            ts: SystemTime::now(),
            request_id: s.request_id.to_string(),
            tenant_id: s.tenant.map(str::to_string),
            route_id: s.route.map(str::to_string),
            api_key_id: s.api_key_id.map(str::to_string),
            user_id: s.user_id.map(str::to_string),
            method: s.req().method.as_str().to_string(),
            host: s.host().map(str::to_string),
            path: s.req().uri.path().to_string(),
            status: i32::from(s.status),
            latency_ms: s.duration.as_secs_f64() * 1000.0,
            bytes_sent: s.bytes_sent() as i64,
            client_ip: s.client.map(|ip| ip.to_string()),
            cache_status: s.cache.map(str::to_string),
            upstream: s.upstream.map(str::to_string),
        });
    }
}

/// The background writer.
pub struct LogWriter {
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
    stop: super::FinishSignal,
    pool: Pool,
    batch: usize,
    flush: Duration,
    timeout: Duration,
}

/// A logger, its writer over `pool`, and the handle that finishes the writer.
pub fn channel(
    settings: &RequestLogSettings,
    pool: Pool,
    timeout: Duration,
) -> (RequestLogger, LogWriter, Finish) {
    let (tx, rx) = mpsc::channel(settings.queue_size);
    let (finish, stop) = super::finish_pair();
    (
        RequestLogger { tx },
        LogWriter {
            rx: Mutex::new(Some(rx)),
            stop,
            pool,
            batch: settings.batch_size,
            flush: Duration::from_millis(settings.flush_interval_ms),
            timeout,
        },
        finish,
    )
}

const INSERT: &str = "INSERT INTO request_logs (ts, request_id, tenant_id, route_id, api_key_id, \
     user_id, method, host, path, status, latency_ms, bytes_sent, client_ip, cache_status, upstream) \
     SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::float8[], $12::int8[], \
     $13::text[], $14::text[], $15::text[])";

impl LogWriter {
    async fn write(&self, batch: &[Record]) -> Result<(), String> {
        let col = |f: fn(&Record) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
        let ts: Vec<SystemTime> = batch.iter().map(|r| r.ts).collect();
        let request_id: Vec<String> = batch.iter().map(|r| r.request_id.clone()).collect();
        let tenant = col(|r| r.tenant_id.clone());
        let route = col(|r| r.route_id.clone());
        let key = col(|r| r.api_key_id.clone());
        let user = col(|r| r.user_id.clone());
        let method: Vec<String> = batch.iter().map(|r| r.method.clone()).collect();
        let host = col(|r| r.host.clone());
        let path: Vec<String> = batch.iter().map(|r| r.path.clone()).collect();
        let status: Vec<i32> = batch.iter().map(|r| r.status).collect();
        let latency: Vec<f64> = batch.iter().map(|r| r.latency_ms).collect();
        let bytes: Vec<i64> = batch.iter().map(|r| r.bytes_sent).collect();
        let client = col(|r| r.client_ip.clone());
        let cache = col(|r| r.cache_status.clone());
        let upstream = col(|r| r.upstream.clone());
        let run = async {
            let client_conn = self.pool.get().await.map_err(|e| e.to_string())?;
            client_conn
                .execute(
                    INSERT,
                    &[
                        &ts,
                        &request_id,
                        &tenant,
                        &route,
                        &key,
                        &user,
                        &method,
                        &host,
                        &path,
                        &status,
                        &latency,
                        &bytes,
                        &client,
                        &cache,
                        &upstream,
                    ],
                )
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn flush_batch(&self, batch: &mut Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        match self.write(batch).await {
            Ok(()) => METRICS.request_logs_written.inc_by(batch.len() as u64),
            Err(e) => {
                tracing::warn!(rows = batch.len(), "request logs dropped: {e}");
                METRICS
                    .request_logs_dropped
                    .with_label_values(&["write_error"])
                    .inc_by(batch.len() as u64);
            }
        }
        batch.clear();
    }
}

#[async_trait]
impl BackgroundService for LogWriter {
    /// Pingora's shutdown signal is not the writer's: requests still in flight then are
    /// logged after it. The server's shutdown sequence stops the writer through
    /// [`Finish`] once they are done.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        let mut stop = self.stop.stop.clone();
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            // Wait for the first record of a batch, then fill it for at most `flush`.
            let first = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                r = rx.recv() => r,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.flush;
            while batch.len() < self.batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                }
            }
            self.flush_batch(&mut batch).await;
        }
        // Write what is queued before the process exits.
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
            if batch.len() >= self.batch {
                self.flush_batch(&mut batch).await;
            }
        }
        self.flush_batch(&mut batch).await;
        self.stop.done();
    }
}
