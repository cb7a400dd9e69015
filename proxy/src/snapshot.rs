//! The immutable, compiled form of a configuration that requests read.
//!
//! A [`Snapshot`] is built off the request path from a validated [`Config`] and swapped in
//! whole. Each request holds an `Arc` of the snapshot it started with.

use crate::access::AccessRt;
use crate::auth::{KeyIndex, TenantAuth};
use crate::errors::Reply;
use crate::hosts::HostIndex;
use crate::jwt::IssuerRt;
use crate::limits::plan::{self, PlanRt, TenantPlans};
use crate::router::{Conditions, Router};
use crate::transform::{HeaderOps, PathOps};
use crate::upstream::{Pool, PoolError};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::sync::Arc;
use vantage_model::{
    parse_cidr, Config, EnforcementMode, LimitAlgorithm, LimitBackend, LimitSubject, OnRedisError,
    PathPattern, RateLimitPolicy, RouteAuth, RouteQuota,
};

/// A compiled rate-limit policy.
pub struct PolicyRt {
    pub name: Arc<str>,
    /// `tenant \x1f scope \x1f name \x1f`: the subject is appended.
    pub key_prefix: String,
    pub algorithm: LimitAlgorithm,
    pub subject: LimitSubject,
    pub backend: LimitBackend,
    pub on_redis_error: OnRedisError,
    pub mode: EnforcementMode,
}

impl PolicyRt {
    /// `scope` is the route's id, `""` for the tenant's ceilings, `plan:<id>` for a plan's.
    pub fn compile(tenant: &str, scope: &str, p: &RateLimitPolicy) -> PolicyRt {
        PolicyRt {
            name: p.name.as_str().into(),
            key_prefix: format!("{tenant}\x1f{scope}\x1f{}\x1f", p.name),
            algorithm: p.algorithm.clone(),
            subject: p.subject.clone(),
            backend: p.backend,
            on_redis_error: p.on_redis_error,
            mode: p.mode,
        }
    }
}

/// A compiled route.
pub struct RouteRt {
    pub id: Arc<str>,
    pub pool: Arc<Pool>,
    pub path: PathOps,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Compression level when enabled.
    pub compression: Option<u32>,
    pub auth: RouteAuth,
    /// `TRACE` is listed in the route's methods (otherwise it is refused).
    pub trace: bool,
    /// The tenant's JWT issuers and Clerk organisation.
    pub tenant_auth: Arc<TenantAuth>,
    /// The route's policies, then the tenant's ceilings.
    pub limits: Vec<PolicyRt>,
    pub access: AccessRt,
    /// Response caching, when the route caches.
    pub cache: Option<crate::cache::CacheRt>,
    /// Cost, quota group and opt-out of the plans.
    pub quota: RouteQuota,
    /// The tenant's plans.
    pub plans: Arc<TenantPlans>,
}

/// A compiled tenant.
pub struct TenantRt {
    pub id: Arc<str>,
    /// Some route of the tenant caches responses (so unsafe methods invalidate URLs).
    pub caches: bool,
    pub router: Router<Arc<RouteRt>>,
}

/// Where a request goes within its tenant.
pub struct Routed<'a> {
    pub route: &'a Arc<RouteRt>,
    /// A CORS preflight, asking about this method.
    pub preflight: Option<Method>,
}

impl TenantRt {
    /// The route of a request. A CORS preflight is answered for the route the real request
    /// would take, when that route has a CORS policy; otherwise OPTIONS is routed like any
    /// method. `Err` is the 404 (no route matches).
    pub fn find_route(&self, req: &RequestHeader) -> Result<Routed<'_>, Reply> {
        if let Some(method) = crate::access::preflight_method(&req.method, &req.headers) {
            if let Some(route) = self
                .router
                .find(req.uri.path(), &method, &req.headers)
                .filter(|r| r.access.cors.is_some())
            {
                return Ok(Routed {
                    route,
                    preflight: Some(method),
                });
            }
        }
        let route = self
            .router
            .find(req.uri.path(), &req.method, &req.headers)
            .ok_or_else(|| {
                Reply::new(
                    404,
                    "no_route",
                    format!("no route matches {} {}", req.method, req.uri.path()),
                )
            })?;
        Ok(Routed {
            route,
            preflight: None,
        })
    }
}

impl RouteRt {
    /// Methods the route refuses although it matched: TRACE echoes the request
    /// (credentials included) back, so only routes that list it take it.
    pub fn check_method(&self, method: &Method) -> Result<(), Reply> {
        if method == Method::TRACE && !self.trace {
            return Err(Reply::new(
                405,
                "method_not_allowed",
                "TRACE is not allowed on this route",
            ));
        }
        Ok(())
    }
}

/// The host a request names: its absolute-form authority, else its `Host` field.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Why a configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("route {route}: {reason}")]
    Route { route: String, reason: String },
    #[error("{0}")]
    Keys(String),
    #[error("{0}")]
    Issuer(String),
}

/// Everything a request needs to know, immutable.
pub struct Snapshot {
    /// Increases with every successful load.
    pub version: u64,
    /// The configuration it was compiled from.
    pub config: Config,
    tenants: Vec<TenantRt>,
    hosts: HostIndex,
    pools: HashMap<String, Arc<Pool>>,
    /// API keys by hash.
    pub keys: KeyIndex,
    /// Plans by id.
    pub plans: HashMap<String, Arc<PlanRt>>,
    /// Each tenant's plans, by tenant id.
    pub tenant_plans: HashMap<String, Arc<TenantPlans>>,
    /// Routes by id (for the decision service).
    pub routes: HashMap<String, (Arc<str>, Arc<RouteRt>)>,
    /// JWT issuers by id (reused across reloads while unchanged: their JWKS cache survives).
    issuers: HashMap<String, Arc<IssuerRt>>,
    /// Balancers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Snapshot {
    /// Compile `config` (already validated). Pools whose origin configuration did not change
    /// are taken over from `previous` with their health and breaker state; new pools are
    /// probed before they take traffic when `probe_new` is set.
    pub async fn build(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        probe_new: bool,
    ) -> Result<Snapshot, BuildError> {
        let mut pools = HashMap::new();
        for o in &config.origins {
            let reused = previous
                .and_then(|p| p.pools.get(&o.id))
                .filter(|p| p.spec == *o)
                .cloned();
            let pool = match reused {
                Some(p) => p,
                None => Pool::build(o, probe_new).await?,
            };
            pools.insert(o.id.clone(), pool);
        }

        // New issuers fetch their JWKS concurrently, so one dead endpoint costs one timeout.
        let jwks_allowed: Arc<Vec<ipnet::IpNet>> = Arc::new(
            config
                .server
                .jwks_allowed_networks
                .iter()
                .filter_map(|n| parse_cidr(n))
                .collect(),
        );
        let mut issuers = HashMap::new();
        let mut building = tokio::task::JoinSet::new();
        for j in &config.jwt_issuers {
            let reused = previous
                .and_then(|p| p.issuers.get(&j.id))
                .filter(|i| i.spec == *j)
                .cloned();
            match reused {
                Some(i) => {
                    issuers.insert(j.id.clone(), i);
                }
                None => {
                    let spec = j.clone();
                    let allowed = jwks_allowed.clone();
                    building.spawn(async move { IssuerRt::build(&spec, allowed).await });
                }
            }
        }
        while let Some(built) = building.join_next().await {
            let issuer = built
                .map_err(|e| BuildError::Issuer(e.to_string()))?
                .map_err(BuildError::Issuer)?;
            issuers.insert(issuer.spec.id.clone(), issuer);
        }
        let tenant_auth: Vec<Arc<TenantAuth>> = config
            .tenants
            .iter()
            .map(|t| {
                Arc::new(TenantAuth {
                    issuers: config
                        .jwt_issuers
                        .iter()
                        .filter(|j| j.tenant_id == t.id)
                        .filter_map(|j| issuers.get(&j.id).cloned())
                        .collect(),
                    clerk_org_id: t.clerk_org_id.clone(),
                    claim_header_names: config
                        .jwt_issuers
                        .iter()
                        .filter(|j| j.tenant_id == t.id)
                        .flat_map(|j| j.claim_headers.values())
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                })
            })
            .collect();

        let plans = plan::compile(&config);
        let tenant_plans: Vec<Arc<TenantPlans>> = config
            .tenants
            .iter()
            .map(|t| Arc::new(TenantPlans::of(t, &config, &plans)))
            .collect();
        let mut tenants = Vec::with_capacity(config.tenants.len());
        let hosts = HostIndex::build(&config.tenants, &config.server.base_domains);
        let mut index = HashMap::new();
        for (i, t) in config.tenants.iter().enumerate() {
            tenants.push(TenantRt {
                id: t.id.as_str().into(),
                caches: false,
                router: Router::default(),
            });
            index.insert(t.id.as_str(), i);
        }
        let mut routes = HashMap::with_capacity(config.routes.len());

        for r in &config.routes {
            let err = |reason: String| BuildError::Route {
                route: r.id.clone(),
                reason,
            };
            let (Some(&ti), Some(pool)) =
                (index.get(r.tenant_id.as_str()), pools.get(&r.origin_id))
            else {
                return Err(err("unknown tenant or origin".into()));
            };
            let pattern = PathPattern::parse(&r.path_pattern).map_err(|e| err(e.to_string()))?;
            let conditions = Conditions {
                methods: r
                    .methods
                    .iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| err(e.to_string())))
                    .collect::<Result<_, _>>()?,
                headers: r
                    .headers
                    .iter()
                    .map(|h| {
                        let name = HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|e| err(e.to_string()))?;
                        let value = match &h.value {
                            Some(v) => {
                                Some(HeaderValue::from_str(v).map_err(|e| err(e.to_string()))?)
                            }
                            None => None,
                        };
                        Ok((name, value))
                    })
                    .collect::<Result<_, BuildError>>()?,
            };
            let tenant = &config.tenants[ti];
            let limits = r
                .rate_limits
                .iter()
                .map(|p| PolicyRt::compile(&tenant.id, &r.id, p))
                .chain(
                    tenant
                        .rate_limits
                        .iter()
                        .map(|p| PolicyRt::compile(&tenant.id, "", p)),
                )
                .collect();
            let rt = RouteRt {
                cache: crate::cache::CacheRt::compile(
                    &r.cache,
                    &tenant_auth[ti].credential_cookies(),
                ),
                id: r.id.as_str().into(),
                pool: pool.clone(),
                path: PathOps::compile(r.strip_prefix.as_deref(), r.rewrite.as_ref())
                    .map_err(|e| err(e.to_string()))?,
                request_headers: HeaderOps::compile(&r.request_headers)
                    .map_err(|e| err(e.to_string()))?,
                response_headers: HeaderOps::compile(&r.response_headers)
                    .map_err(|e| err(e.to_string()))?,
                compression: r
                    .compression
                    .enabled
                    .then(|| r.compression.level.unwrap_or(6)),
                auth: r.auth.clone(),
                trace: r.methods.iter().any(|m| m == "TRACE"),
                tenant_auth: tenant_auth[ti].clone(),
                limits,
                access: AccessRt::compile(&tenant.access, &r.access),
                quota: r.quota.clone(),
                plans: tenant_plans[ti].clone(),
            };
            tenants[ti].caches |= r.cache.enabled;
            let rt = Arc::new(rt);
            routes.insert(r.id.clone(), (tenants[ti].id.clone(), rt.clone()));
            tenants[ti]
                .router
                .insert(&pattern, r.priority, conditions, rt);
        }

        let keys = KeyIndex::build(&config.api_keys, &plans).map_err(BuildError::Keys)?;
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|s| parse_cidr(s))
            .collect();
        let tenant_plans = config
            .tenants
            .iter()
            .zip(tenant_plans)
            .map(|(t, p)| (t.id.clone(), p))
            .collect();
        Ok(Snapshot {
            keys,
            plans,
            tenant_plans,
            routes,
            issuers,
            trusted_proxies,
            version,
            config,
            tenants,
            hosts,
            pools,
        })
    }

    /// The tenant a Host header (or `:authority`) belongs to, and the host in normal form
    /// (see [`crate::hosts`]).
    pub fn tenant_for_host(&self, host: &str) -> Option<(&TenantRt, &HeaderValue)> {
        let (i, host) = self.hosts.find(host)?;
        Some((self.tenants.get(i)?, host))
    }

    /// The tenant a request is for, by its absolute-form authority or `Host`, and the host
    /// in normal form. `Err` is the 400 (no host) or 404 (no tenant serves it).
    pub fn find_tenant(&self, req: &RequestHeader) -> Result<(&TenantRt, &HeaderValue), Reply> {
        let host = request_host(req)
            .ok_or_else(|| Reply::new(400, "bad_request", "the request has no Host header"))?;
        self.tenant_for_host(host).ok_or_else(|| {
            Reply::new(
                404,
                "unknown_tenant",
                format!("no tenant serves host '{host}'"),
            )
        })
    }

    /// Every pool, to start health checks after a swap.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// After `next` replaced this snapshot: stop the health checks of pools `next` did not
    /// take over, and drop the metric series of targets that no longer exist.
    pub fn retire_pools(&self, next: &Snapshot) {
        let live: std::collections::HashSet<(&str, &str)> = next
            .pools
            .values()
            .flat_map(|p| p.target_labels().map(move |t| (&*p.id, t)))
            .collect();
        for (id, pool) in &self.pools {
            if next.pools.get(id).is_some_and(|p| Arc::ptr_eq(p, pool)) {
                continue;
            }
            pool.stop_health_checks();
            for target in pool.target_labels() {
                if !live.contains(&(&*pool.id, target)) {
                    crate::telemetry::metrics::forget_target(&pool.id, target);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
server: {base_domains: [vantage.localhost, edge.test]}
tenants:
  - {id: acme, name: Acme, subdomain: acme, custom_hosts: [api.acme.test]}
  - {id: globex, name: Globex, subdomain: globex}
origins:
  - {id: o1, tenant_id: acme, targets: [{url: "http://127.0.0.1:1"}]}
  - {id: o2, tenant_id: globex, targets: [{url: "http://127.0.0.1:2"}]}
routes:
  - {id: r1, tenant_id: acme, path_pattern: "/*", origin_id: o1}
  - {id: r2, tenant_id: globex, path_pattern: "/*", origin_id: o2}
"#;

    #[tokio::test]
    async fn finds_tenants_by_subdomain_and_custom_host() {
        let cfg = Config::from_yaml_validated(CFG).unwrap();
        let s = Snapshot::build(cfg, 1, None, true).await.unwrap();
        let id = |h: &str| s.tenant_for_host(h).map(|(t, _)| t.id.to_string());
        assert_eq!(id("acme.vantage.localhost").as_deref(), Some("acme"));
        assert_eq!(id("ACME.vantage.localhost:8080").as_deref(), Some("acme"));
        assert_eq!(id("globex.edge.test.").as_deref(), Some("globex"));
        assert_eq!(id("api.acme.test").as_deref(), Some("acme"));
        assert_eq!(id("x.acme.vantage.localhost"), None);
        assert_eq!(id("vantage.localhost"), None);
        assert_eq!(id("nobody.vantage.localhost"), None);
        assert_eq!(id("acme.other.test"), None);
    }

    #[tokio::test]
    async fn unchanged_origins_keep_their_pool() {
        let cfg = Config::from_yaml_validated(CFG).unwrap();
        let a = Snapshot::build(cfg.clone(), 1, None, true).await.unwrap();
        let mut changed = cfg.clone();
        changed.origins[1].targets[0].url = "http://127.0.0.1:3".into();
        let b = Snapshot::build(changed, 2, Some(&a), true).await.unwrap();
        assert!(Arc::ptr_eq(&a.pools["o1"], &b.pools["o1"]));
        assert!(!Arc::ptr_eq(&a.pools["o2"], &b.pools["o2"]));
    }
}
