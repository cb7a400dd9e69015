//! The immutable, compiled form of a configuration that requests read.
//!
//! A [`Snapshot`] is built off the request path from a validated [`Config`] and swapped in
//! whole. Each request holds an `Arc` of the snapshot it started with.

use crate::access::AccessRt;
use crate::auth::{KeyIndex, TenantAuth};
use crate::errors::Reply;
use crate::hosts::{HostIndex, TenantHosts};
use crate::jwt::IssuerRt;
use crate::limits::plan::{self, TenantPlans};
use crate::router::{Conditions, Router};
use crate::transform::{HeaderOps, PathOps};
use crate::upstream::fallback::FallbackRt;
use crate::upstream::mirror::MirrorRt;
use crate::upstream::split::SplitRt;
use crate::upstream::{Pool, PoolError};
use crate::versions::VersionRt;
use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::sync::Arc;
use vantage_model::{
    parse_cidr, Config, EnforcementMode, LimitAlgorithm, LimitBackend, LimitSubject, OnRedisError,
    PathPattern, RateLimitPolicy, RouteAuth, RouteQuota, ServerSettings,
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
    /// Metric series of its own (`route_metrics` on the route or its tenant); otherwise
    /// the route's requests count in its tenant's series.
    pub metrics_detail: bool,
    /// Splits, mirroring, API version and fallback answer.
    pub traffic: RouteTraffic,
}

/// A route's compiled traffic management (see [`vantage_model::Traffic`]).
#[derive(Default)]
pub struct RouteTraffic {
    pub split: Option<SplitRt>,
    pub mirror: Option<Arc<MirrorRt>>,
    pub version: Option<VersionRt>,
    pub fallback: Option<FallbackRt>,
}

impl RouteTraffic {
    fn compile(
        r: &vantage_model::Route,
        primary: &Arc<Pool>,
        pools: &HashMap<String, Arc<Pool>>,
    ) -> Result<RouteTraffic, String> {
        let t = &r.traffic;
        let pool = |id: &str| pools.get(id).cloned();
        Ok(RouteTraffic {
            split: t
                .split
                .as_ref()
                .map(|s| SplitRt::compile(&r.id, s, primary, pool))
                .transpose()
                .map_err(|e| e.to_string())?,
            mirror: match &t.mirror {
                Some(m) => {
                    let p = pool(&m.origin_id)
                        .ok_or_else(|| format!("unknown mirror origin '{}'", m.origin_id))?;
                    Some(Arc::new(MirrorRt::compile(m, p)))
                }
                None => None,
            },
            version: t.version.as_ref().map(VersionRt::compile).transpose()?,
            fallback: t.fallback.as_ref().map(FallbackRt::compile).transpose()?,
        })
    }
}

/// A compiled tenant: everything of one tenant a request needs. Incremental reloads
/// recompile the tenants that changed and share the others between snapshots.
pub struct TenantRt {
    pub id: Arc<str>,
    /// Some route of the tenant caches responses (so unsafe methods invalidate URLs).
    pub caches: bool,
    pub router: Router<Arc<RouteRt>>,
    /// The tenant's part of the configuration (see [`Config::split_tenants`]).
    pub spec: Config,
    /// Its host names under the base domains it was compiled for.
    pub hosts: TenantHosts,
    /// The tenant's API keys by hash.
    pub keys: KeyIndex,
    /// The tenant's plans.
    pub plans: Arc<TenantPlans>,
    /// Routes by id (for the decision service).
    pub routes: HashMap<String, Arc<RouteRt>>,
    pools: HashMap<String, Arc<Pool>>,
    /// JWT issuers by id (reused across reloads while unchanged: their JWKS cache survives).
    issuers: HashMap<String, Arc<IssuerRt>>,
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
    #[error("{0}")]
    Tenant(String),
}

/// Everything a request needs to know, immutable.
pub struct Snapshot {
    /// Increases with every successful load.
    pub version: u64,
    /// When this snapshot was built (the proxy's fleet heartbeat reports it as applied then).
    pub built_at: std::time::SystemTime,
    /// The proxy's own settings it was compiled with.
    pub server: ServerSettings,
    /// In configuration order (the order decides nothing a validated configuration can see).
    tenants: Vec<Arc<TenantRt>>,
    by_id: foldhash::HashMap<Arc<str>, usize>,
    hosts: HostIndex,
    /// Which tenant an API key hash belongs to, for questions that name no tenant (the
    /// decision service). Persistent, so a reload changes only the keys of changed tenants.
    key_owners: imbl::GenericHashMap<
        [u8; 32],
        Arc<str>,
        crate::auth::DigestState,
        imbl::shared_ptr::DefaultSharedPtr,
    >,
    /// Balancers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A tenant's part of a configuration change: its new part, or None when it is gone.
pub type TenantChange = (String, Option<Config>);

/// What of the server settings a tenant compiles with: the networks JWKS endpoints may be
/// fetched from and the base domains (a change of either recompiles every tenant).
#[derive(Clone)]
pub struct Shared {
    jwks_allowed: Arc<Vec<ipnet::IpNet>>,
    base_domains: Arc<Vec<String>>,
}

impl Shared {
    fn of(server: &ServerSettings) -> Shared {
        Shared {
            jwks_allowed: Arc::new(
                server
                    .jwks_allowed_networks
                    .iter()
                    .filter_map(|n| parse_cidr(n))
                    .collect(),
            ),
            base_domains: Arc::new(server.base_domains.clone()),
        }
    }

    /// Tenants compiled under `a` need no recompiling under `b`.
    fn same(a: &ServerSettings, b: &ServerSettings) -> bool {
        a.jwks_allowed_networks == b.jwks_allowed_networks && a.base_domains == b.base_domains
    }
}

impl TenantRt {
    /// Compile one tenant's part of a configuration (already validated). Pools and issuers
    /// whose configuration did not change are taken over from `previous` (the tenant's last
    /// compiled form) with their health, breaker and JWKS state; new pools are probed before
    /// they take traffic when `probe_new` is set.
    pub async fn build(
        spec: Config,
        server: Shared,
        previous: Option<&TenantRt>,
        probe_new: bool,
    ) -> Result<TenantRt, BuildError> {
        let jwks_allowed = server.jwks_allowed.clone();
        let Some(tenant) = spec.sole_tenant() else {
            return Err(BuildError::Tenant(
                "a tenant's part names exactly one tenant".into(),
            ));
        };
        let mut pools = HashMap::with_capacity(spec.origins.len());
        for o in &spec.origins {
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
        let mut issuers = HashMap::with_capacity(spec.jwt_issuers.len());
        let mut building = tokio::task::JoinSet::new();
        for j in &spec.jwt_issuers {
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
        let tenant_auth = Arc::new(TenantAuth {
            issuers: spec
                .jwt_issuers
                .iter()
                .filter_map(|j| issuers.get(&j.id).cloned())
                .collect(),
            clerk_org_id: tenant.clerk_org_id.clone(),
            claim_header_names: spec
                .jwt_issuers
                .iter()
                .flat_map(|j| j.claim_headers.values())
                // Validated names (a name that is not one could not be sent either).
                .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
        });

        let plans = plan::compile(&spec);
        let tenant_plans = Arc::new(TenantPlans::of(tenant, &spec, &plans));
        let id: Arc<str> = tenant.id.as_str().into();
        let mut caches = false;
        let mut router = Router::default();
        let mut routes = HashMap::with_capacity(spec.routes.len());
        let cookies = tenant_auth.credential_cookies();
        for r in &spec.routes {
            let err = |reason: String| BuildError::Route {
                route: r.id.clone(),
                reason,
            };
            let Some(pool) = pools.get(&r.origin_id).filter(|_| r.tenant_id == tenant.id) else {
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
                accept: r
                    .traffic
                    .version
                    .as_ref()
                    .and_then(|v| v.accept.as_ref())
                    .map(|a| (a.param.clone(), a.value.clone())),
            };
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
                cache: crate::cache::CacheRt::compile(&r.cache, &cookies),
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
                tenant_auth: tenant_auth.clone(),
                limits,
                access: AccessRt::compile(&tenant.access, &r.access),
                quota: r.quota.clone(),
                plans: tenant_plans.clone(),
                metrics_detail: r.route_metrics || tenant.route_metrics,
                traffic: RouteTraffic::compile(r, pool, &pools).map_err(err)?,
            };
            caches |= r.cache.enabled;
            let rt = Arc::new(rt);
            routes.insert(r.id.clone(), rt.clone());
            router.insert(&pattern, r.priority, conditions, rt);
        }
        let keys = KeyIndex::build(&spec.api_keys, &plans, &id).map_err(BuildError::Keys)?;
        Ok(TenantRt {
            hosts: TenantHosts::of(tenant, &server.base_domains),
            id,
            caches,
            router,
            keys,
            plans: tenant_plans,
            routes,
            pools,
            issuers,
            spec,
        })
    }

    /// The tenant's pools.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }
}

impl Snapshot {
    /// Compile `config` (already validated). Tenants whose part did not change are taken
    /// over from `previous` whole; in the others, pools whose origin configuration did not
    /// change keep their health and breaker state. New pools are probed before they take
    /// traffic when `probe_new` is set.
    pub async fn build(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        probe_new: bool,
    ) -> Result<Snapshot, BuildError> {
        let (server, parts) = config.split_tenants();
        crate::upstream::discovery::configure(&server.dns);
        let allowed = Shared::of(&server);
        // Issuers depend on the JWKS allow-list, hosts on the base domains: a change of
        // either recompiles every tenant.
        let previous_same_server = previous.filter(|p| Shared::same(&p.server, &server));
        let mut tenants = Vec::with_capacity(parts.len());
        let mut building = Vec::new();
        for spec in parts {
            let id = spec.tenants[0].id.clone();
            let prev = previous.and_then(|p| p.tenant(&id));
            match prev.filter(|p| previous_same_server.is_some() && p.spec == spec) {
                Some(p) => tenants.push(Some(p.clone())),
                None => {
                    building.push((tenants.len(), spec, prev.cloned()));
                    tenants.push(None);
                }
            }
        }
        let built = Self::build_parts(building, &allowed, probe_new).await?;
        for (i, t) in built {
            tenants[i] = Some(t);
        }
        let tenants = tenants.into_iter().flatten().collect();
        Self::assemble(server, version, tenants, previous)
    }

    /// Compile the parts: concurrently (a dead JWKS endpoint costs one timeout, not one
    /// each), and in as many tasks as there are cores when there are many (a runtime with
    /// several workers compiles a large fleet in parallel).
    async fn build_parts(
        building: Vec<(usize, Config, Option<Arc<TenantRt>>)>,
        allowed: &Shared,
        probe_new: bool,
    ) -> Result<Vec<(usize, Arc<TenantRt>)>, BuildError> {
        async fn chunk(
            parts: Vec<(usize, Config, Option<Arc<TenantRt>>)>,
            allowed: Shared,
            probe_new: bool,
        ) -> Result<Vec<(usize, Arc<TenantRt>)>, BuildError> {
            let jobs = parts.into_iter().map(|(i, spec, prev)| {
                let allowed = allowed.clone();
                async move {
                    let t = TenantRt::build(spec, allowed, prev.as_deref(), probe_new).await?;
                    Ok::<_, BuildError>((i, Arc::new(t)))
                }
            });
            futures_util::future::try_join_all(jobs).await
        }
        const MANY: usize = 256;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if building.len() < MANY || cores == 1 {
            return chunk(building, allowed.clone(), probe_new).await;
        }
        let per = building.len().div_ceil(cores);
        let mut tasks = tokio::task::JoinSet::new();
        let mut rest = building;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(per));
            tasks.spawn(chunk(rest, allowed.clone(), probe_new));
            rest = tail;
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.extend(done.map_err(|e| BuildError::Tenant(e.to_string()))??);
        }
        Ok(out)
    }

    /// The snapshot after `changes` (each tenant's new part, validated, or None for a tenant
    /// that is gone) at `version`: only the changed tenants are compiled; every other tenant
    /// is shared with this snapshot. Refused when a changed tenant claims another's host.
    pub async fn apply(
        &self,
        changes: Vec<TenantChange>,
        version: u64,
        probe_new: bool,
    ) -> Result<Snapshot, BuildError> {
        let allowed = Shared::of(&self.server);
        let mut tenants: Vec<Option<Arc<TenantRt>>> =
            self.tenants.iter().cloned().map(Some).collect();
        let mut building = Vec::new();
        let mut changed = std::collections::HashSet::new();
        for (id, spec) in changes {
            if spec
                .as_ref()
                .and_then(|s| s.sole_tenant())
                .is_some_and(|t| t.id != id)
            {
                return Err(BuildError::Tenant(format!(
                    "the part of tenant {id} names another tenant"
                )));
            }
            let at = self.by_id.get(id.as_str()).copied();
            match (at, spec) {
                (Some(i), None) => tenants[i] = None,
                (None, None) => {}
                (at, Some(spec)) => {
                    let i = at.unwrap_or_else(|| {
                        tenants.push(None);
                        tenants.len() - 1
                    });
                    changed.insert(i);
                    let prev = self.tenants.get(i).filter(|_| at.is_some()).cloned();
                    building.push((i, spec, prev));
                }
            }
        }
        for (i, t) in Self::build_parts(building, &allowed, probe_new).await? {
            tenants[i] = Some(t);
        }
        // Indexes move when tenants go: check hosts by tenant id.
        let changed_ids: std::collections::HashSet<Arc<str>> = changed
            .iter()
            .filter_map(|i| tenants[*i].as_ref().map(|t| t.id.clone()))
            .collect();
        let tenants: Vec<Arc<TenantRt>> = tenants.into_iter().flatten().collect();
        let next = Self::assemble(self.server.clone(), version, tenants, Some(self))?;
        if let Some((a, b, host)) = next.hosts.claimed_twice().iter().find(|(a, b, _)| {
            changed_ids.contains(&next.tenants[*a].id) || changed_ids.contains(&next.tenants[*b].id)
        }) {
            return Err(BuildError::Tenant(format!(
                "tenants {} and {} both claim '{host}'",
                next.tenants[*a].id, next.tenants[*b].id
            )));
        }
        Ok(next)
    }

    /// The snapshot of compiled `tenants`: the host index, and the key owners updated from
    /// `previous` for the tenants that are not shared with it.
    fn assemble(
        server: ServerSettings,
        version: u64,
        tenants: Vec<Arc<TenantRt>>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        let by_id: foldhash::HashMap<Arc<str>, usize> = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let hosts = HostIndex::build(tenants.iter().map(|t| &t.hosts), &server.base_domains);
        let mut key_owners = previous.map(|p| p.key_owners.clone()).unwrap_or_default();
        if let Some(prev) = previous {
            for old in &prev.tenants {
                let kept = by_id
                    .get(&old.id)
                    .is_some_and(|&i| Arc::ptr_eq(&tenants[i], old));
                if !kept {
                    for hash in old.keys.hashes() {
                        if key_owners.get(hash).is_some_and(|o| *o == old.id) {
                            key_owners.remove(hash);
                        }
                    }
                }
            }
        }
        for t in &tenants {
            let shared = previous
                .and_then(|p| p.tenant(&t.id))
                .is_some_and(|old| Arc::ptr_eq(old, t));
            if !shared {
                for hash in t.keys.hashes() {
                    key_owners.insert(*hash, t.id.clone());
                }
            }
        }
        let trusted_proxies = server
            .trusted_proxies
            .iter()
            .filter_map(|s| parse_cidr(s))
            .collect();
        Ok(Snapshot {
            version,
            built_at: std::time::SystemTime::now(),
            server,
            tenants,
            by_id,
            hosts,
            key_owners,
            trusted_proxies,
        })
    }

    /// The tenant with id `id`.
    pub fn tenant(&self, id: &str) -> Option<&Arc<TenantRt>> {
        self.tenants.get(*self.by_id.get(id)?)
    }

    /// Every tenant, in configuration order.
    pub fn tenants(&self) -> &[Arc<TenantRt>] {
        &self.tenants
    }

    /// The tenant whose API key `key` is (whatever its state).
    pub fn key_owner(&self, key: &[u8]) -> Option<&Arc<TenantRt>> {
        let owner = self.key_owners.get(&crate::auth::key_hash(key))?;
        self.tenant(owner)
    }

    /// The tenant a Host header (or `:authority`) belongs to, and the host in normal form
    /// (see [`crate::hosts`]).
    pub fn tenant_for_host(&self, host: &str) -> Option<(&Arc<TenantRt>, &HeaderValue)> {
        let (i, which) = self.hosts.find(host)?;
        let tenant = self.tenants.get(i)?;
        Some((tenant, which.value(&tenant.hosts)?))
    }

    /// The tenant a request is for, by its absolute-form authority or `Host`, and the host
    /// in normal form. `Err` is the 400 (no host) or 404 (no tenant serves it).
    pub fn find_tenant(
        &self,
        req: &RequestHeader,
    ) -> Result<(&Arc<TenantRt>, &HeaderValue), Reply> {
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

    /// Every pool.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.tenants.iter().flat_map(|t| t.pools.values())
    }

    /// The tenants of this snapshot that `previous` did not have as they are: those whose
    /// pools need their health checks started after a swap.
    pub fn new_since<'a>(
        &'a self,
        previous: &'a Snapshot,
    ) -> impl Iterator<Item = &'a Arc<TenantRt>> {
        self.tenants.iter().filter(move |t| {
            !previous
                .tenant(&t.id)
                .is_some_and(|old| Arc::ptr_eq(old, t))
        })
    }

    /// After `next` replaced this snapshot: stop the health checks of pools `next` did not
    /// take over, and drop the metric series of targets that no longer exist. Tenants
    /// shared with `next` are skipped whole.
    pub fn retire_pools(&self, next: &Snapshot) {
        for old in &self.tenants {
            let successor = next.tenant(&old.id);
            if successor.is_some_and(|t| Arc::ptr_eq(t, old)) {
                continue;
            }
            for (id, pool) in &old.pools {
                let taken_over = successor
                    .and_then(|t| t.pools.get(id))
                    .is_some_and(|p| Arc::ptr_eq(p, pool));
                if taken_over {
                    continue;
                }
                pool.stop_health_checks();
                let live: std::collections::HashSet<String> = successor
                    .and_then(|t| t.pools.get(id))
                    .map(|p| p.target_labels().into_iter().collect())
                    .unwrap_or_default();
                for target in pool.target_labels() {
                    if !live.contains(&target) {
                        crate::telemetry::metrics::forget_target(&pool.id, &target);
                    }
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
        let pool = |s: &Snapshot, t: &str, o: &str| s.tenant(t).unwrap().pools[o].clone();
        assert!(Arc::ptr_eq(
            &pool(&a, "acme", "o1"),
            &pool(&b, "acme", "o1")
        ));
        assert!(!Arc::ptr_eq(
            &pool(&a, "globex", "o2"),
            &pool(&b, "globex", "o2")
        ));
        // The unchanged tenant is shared whole; the changed one is recompiled.
        assert!(Arc::ptr_eq(
            a.tenant("acme").unwrap(),
            b.tenant("acme").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            a.tenant("globex").unwrap(),
            b.tenant("globex").unwrap()
        ));
    }

    /// One tenant's part of `cfg`.
    fn part(cfg: &Config, id: &str) -> Config {
        let (_, parts) = cfg.clone().split_tenants();
        parts.into_iter().find(|p| p.tenants[0].id == id).unwrap()
    }

    #[tokio::test]
    async fn a_tenant_change_recompiles_that_tenant_only() {
        let cfg = Config::from_yaml_validated(&format!(
            "{CFG}\napi_keys:\n  - {{id: k1, tenant_id: globex, name: ci, key_hash: \"{}\"}}\n",
            crate::auth::hash_key("globex-key")
        ))
        .unwrap();
        let a = Snapshot::build(cfg.clone(), 1, None, true).await.unwrap();
        assert_eq!(&*a.key_owner(b"globex-key").unwrap().id, "globex");

        // acme gains a route and a host: only acme is compiled again.
        let mut acme = part(&cfg, "acme");
        acme.tenants[0].custom_hosts.push("www.acme.test".into());
        let mut r = acme.routes[0].clone();
        r.id = "r3".into();
        r.path_pattern = "/new".into();
        acme.routes.push(r);
        let b = a
            .apply(vec![("acme".into(), Some(acme))], 2, true)
            .await
            .unwrap();
        assert_eq!(b.version, 2);
        assert!(Arc::ptr_eq(
            a.tenant("globex").unwrap(),
            b.tenant("globex").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            a.tenant("acme").unwrap(),
            b.tenant("acme").unwrap()
        ));
        let pool = |s: &Snapshot, t: &str, o: &str| s.tenant(t).unwrap().pools[o].clone();
        assert!(Arc::ptr_eq(
            &pool(&a, "acme", "o1"),
            &pool(&b, "acme", "o1")
        ));
        assert_eq!(b.tenant("acme").unwrap().routes.len(), 2);
        let host = |s: &Snapshot, h: &str| s.tenant_for_host(h).map(|(t, _)| t.id.to_string());
        assert_eq!(host(&b, "www.acme.test").as_deref(), Some("acme"));
        assert_eq!(host(&b, "globex.edge.test").as_deref(), Some("globex"));
        assert_eq!(&*b.key_owner(b"globex-key").unwrap().id, "globex");

        // acme claiming globex's subdomain is refused; the running snapshot is unaffected.
        let mut thief = part(&cfg, "acme");
        thief.tenants[0].subdomain = "globex".into();
        let e = b.apply(vec![("acme".into(), Some(thief))], 3, true).await;
        assert!(matches!(e, Err(BuildError::Tenant(_))), "{:?}", e.err());

        // A part naming another tenant than the change says is refused.
        let e = b
            .apply(vec![("acme".into(), Some(part(&cfg, "globex")))], 3, true)
            .await;
        assert!(matches!(e, Err(BuildError::Tenant(_))));

        // globex is deleted: its hosts and keys are gone, acme is shared.
        let c = b
            .apply(vec![("globex".into(), None)], 3, true)
            .await
            .unwrap();
        assert!(c.tenant("globex").is_none());
        assert_eq!(host(&c, "globex.edge.test"), None);
        assert!(c.key_owner(b"globex-key").is_none());
        assert!(Arc::ptr_eq(
            b.tenant("acme").unwrap(),
            c.tenant("acme").unwrap()
        ));
        assert_eq!(host(&c, "api.acme.test").as_deref(), Some("acme"));

        // And comes back as a new tenant.
        let d = c
            .apply(vec![("globex".into(), Some(part(&cfg, "globex")))], 4, true)
            .await
            .unwrap();
        assert_eq!(host(&d, "globex.edge.test").as_deref(), Some("globex"));
        assert_eq!(&*d.key_owner(b"globex-key").unwrap().id, "globex");
        assert_eq!(d.tenants().len(), 2);
    }
}
