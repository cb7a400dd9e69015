//! Fleet convergence: which proxies serve which config version, read from the heartbeats
//! the proxies write to the `proxies` table (`vantage_fleet()` in `migrations/V9`).
//!
//! [`read`] gives the fleet view (`GET /api/v1/fleet`, the lag metrics); [`wait_layer`]
//! lets a configuration write wait, with `?wait=5s`, until the live proxies serve the
//! version it committed, and says in its answer which did in time.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// Answer header: `applied/live` proxies that served the write's version in time.
pub const APPLIED_HEADER: &str = "x-config-applied";
/// Answer header (superadmins): the proxies that applied the version in time.
pub const APPLIED_BY_HEADER: &str = "x-config-applied-by";
/// Answer header (superadmins): the live proxies that had not applied it when the wait ended.
pub const LAGGING_HEADER: &str = "x-config-lagging";

/// How often a waiting write looks at the heartbeats.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// One proxy of the fleet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FleetProxy {
    /// `<hostname>:<pid>`. Example: `edge-1:4242`.
    pub id: String,
    pub hostname: String,
    /// The config version it serves.
    pub config_version: i64,
    /// When it started serving that version.
    #[schema(format = DateTime)]
    pub applied_at: String,
    /// Serving (a configuration is loaded).
    pub ready: bool,
    /// The proxy's build (`vantage-proxy --version`). Example: `0.1.0`.
    pub build_version: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    /// Its last heartbeat.
    #[schema(format = DateTime)]
    pub last_seen: String,
    /// `live`, or `gone` when it has not reported for `fleet.gone_after_ms`.
    pub state: ProxyState,
    /// Versions behind the latest (0 when up to date).
    pub lag_versions: i64,
    /// Seconds since the first version it lacks was committed (0 when up to date).
    pub lag_seconds: f64,
}

/// Whether a proxy still reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProxyState {
    Live,
    Gone,
}

/// The answer of `GET /api/v1/fleet`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Fleet {
    /// The config version committed last.
    pub latest_version: i64,
    /// Every live proxy serves `latest_version`.
    pub converged: bool,
    /// Live and gone proxies, by id.
    pub proxies: Vec<FleetProxy>,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The fleet now; proxies silent for `gone_after` are gone.
pub async fn read(
    c: &impl tokio_postgres::GenericClient,
    gone_after: Duration,
) -> Result<Fleet, ApiError> {
    let latest: i64 = c
        .query_one("SELECT vantage_config_version()", &[])
        .await?
        .get(0);
    let rows = c
        .query(
            "SELECT id, hostname, config_version, applied_at, ready, build_version, started_at,
                    last_seen, gone, lag_versions, lag_seconds
               FROM vantage_fleet(make_interval(secs => $1::float8))",
            &[&gone_after.as_secs_f64()],
        )
        .await?;
    let proxies: Vec<FleetProxy> = rows
        .iter()
        .map(|r| FleetProxy {
            id: r.get(0),
            hostname: r.get(1),
            config_version: r.get(2),
            applied_at: rfc3339(r.get(3)),
            ready: r.get(4),
            build_version: r.get(5),
            started_at: rfc3339(r.get(6)),
            last_seen: rfc3339(r.get(7)),
            state: if r.get(8) {
                ProxyState::Gone
            } else {
                ProxyState::Live
            },
            lag_versions: r.get(9),
            lag_seconds: r.get(10),
        })
        .collect();
    let converged = proxies
        .iter()
        .filter(|p| p.state == ProxyState::Live)
        .all(|p| p.config_version >= latest);
    Ok(Fleet {
        latest_version: latest,
        converged,
        proxies,
    })
}

/// Set the fleet gauges (`vantage_fleet_*`) from the heartbeats, at a scrape; per-proxy
/// series exist for live proxies only (a gone proxy's series ends). Left as they were when
/// the database does not answer within two seconds.
pub async fn export_metrics(st: &AppState) {
    use crate::metrics::METRICS;
    let fleet = tokio::time::timeout(Duration::from_secs(2), async {
        let c = st.pool.get().await.ok()?;
        read(&**c, st.cfg.fleet.gone_after()).await.ok()
    })
    .await
    .ok()
    .flatten();
    let Some(fleet) = fleet else { return };
    METRICS.fleet_lag_versions.reset();
    METRICS.fleet_lag_seconds.reset();
    let (mut live, mut gone) = (0, 0);
    for p in &fleet.proxies {
        if p.state == ProxyState::Gone {
            gone += 1;
            continue;
        }
        live += 1;
        METRICS
            .fleet_lag_versions
            .with_label_values(&[p.id.as_str()])
            .set(p.lag_versions);
        METRICS
            .fleet_lag_seconds
            .with_label_values(&[p.id.as_str()])
            .set(p.lag_seconds);
    }
    METRICS.fleet_proxies.with_label_values(&["live"]).set(live);
    METRICS.fleet_proxies.with_label_values(&["gone"]).set(gone);
}

/// Which live proxies serve `version` (or newer) and which do not yet.
async fn split_by_version(
    st: &AppState,
    version: i64,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let c = st.pool.get().await?;
    let rows = c
        .query(
            "SELECT id, config_version >= $1 FROM proxies
              WHERE last_seen >= now() - make_interval(secs => $2::float8) ORDER BY id",
            &[&version, &st.cfg.fleet.gone_after().as_secs_f64()],
        )
        .await?;
    let (mut applied, mut lagging) = (Vec::new(), Vec::new());
    for r in rows {
        if r.get(1) {
            applied.push(r.get(0));
        } else {
            lagging.push(r.get(0));
        }
    }
    Ok((applied, lagging))
}

/// Wait up to `wait` until every live proxy serves `version`.
pub async fn wait_for(
    st: &AppState,
    version: i64,
    wait: Duration,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let deadline = Instant::now() + wait;
    loop {
        let (applied, lagging) = split_by_version(st, version).await?;
        if lagging.is_empty() || Instant::now() >= deadline {
            return Ok((applied, lagging));
        }
        tokio::time::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// `wait`'s value (`5s`, `500ms`, `1m`), bounded by `max`.
pub fn parse_wait(raw: &str, max: Duration) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(raw.trim())
        .map_err(|_| ApiError::bad_parameter("wait", "must be a duration like 5s or 500ms"))?;
    if d > max {
        return Err(ApiError::bad_parameter(
            "wait",
            format!("must be at most {}", humantime::format_duration(max)),
        ));
    }
    Ok(d)
}

/// `query` without its `wait` parameters, and the last `wait` value.
fn take_wait(query: &str) -> (String, Option<String>) {
    let mut wait = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "wait" {
                wait = Some(v.replace("%20", " "));
                false
            } else {
                !pair.is_empty()
            }
        })
        .collect();
    (rest.join("&"), wait)
}

/// Middleware of `/api/v1`: a request with `?wait=DURATION` is a write that waits, after it
/// committed version N (its `X-Config-Version`), until every live proxy serves N or the
/// time is up. The answer is the write's, plus `X-Config-Applied: applied/live` and, for
/// superadmins (proxy names are the operator's business), `X-Config-Applied-By` and
/// `X-Config-Lagging`. A bad `wait` is refused before the write runs.
pub async fn wait_layer(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(query) = req.uri().query() else {
        return Ok(next.run(req).await);
    };
    let (rest, Some(raw)) = take_wait(query) else {
        return Ok(next.run(req).await);
    };
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::bad_parameter(
            "wait",
            "only configuration writes (POST, PUT, PATCH, DELETE) can wait",
        ));
    }
    let wait = parse_wait(&raw, st.cfg.fleet.max_wait())?;
    let superadmin = req
        .extensions()
        .get::<Principal>()
        .is_some_and(Principal::is_superadmin);
    // The handler sees the query without `wait` (its own parameters are strict).
    let mut parts = req.uri().clone().into_parts();
    let path = req.uri().path();
    let pq = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))?,
    );
    *req.uri_mut() = axum::http::Uri::from_parts(parts)
        .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
    let mut resp = next.run(req).await;
    let Some(version) = resp
        .headers()
        .get(crate::api::VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return Ok(resp);
    };
    let (applied, lagging) = match wait_for(&st, version, wait).await {
        Ok(r) => r,
        // The write committed: say so, and that the fleet could not be read.
        Err(e) => {
            tracing::warn!(version, "fleet not read after a waiting write: {e:?}");
            return Ok(resp);
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}/{}",
        applied.len(),
        applied.len() + lagging.len()
    )) {
        h.insert(APPLIED_HEADER, v);
    }
    if superadmin {
        for (name, list) in [(APPLIED_BY_HEADER, &applied), (LAGGING_HEADER, &lagging)] {
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                h.insert(name, v);
            }
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_taken_out_of_the_query() {
        assert_eq!(take_wait("wait=5s"), (String::new(), Some("5s".into())));
        assert_eq!(
            take_wait("a=1&wait=500ms&b=2"),
            ("a=1&b=2".into(), Some("500ms".into()))
        );
        assert_eq!(take_wait("a=1&waiting=2"), ("a=1&waiting=2".into(), None));
    }

    #[test]
    fn wait_values() {
        let max = Duration::from_secs(30);
        assert_eq!(parse_wait("5s", max).unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_wait("250ms", max).unwrap(),
            Duration::from_millis(250)
        );
        for bad in ["", "5", "soon", "-1s", "31s"] {
            assert!(parse_wait(bad, max).is_err(), "{bad}");
        }
    }
}
