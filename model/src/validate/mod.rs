//! Field-precise validation of a [`Config`], in two parts:
//!
//! - [`validate_server`] checks the proxy's own [`ServerSettings`] (listeners, limits,
//!   Postgres, Redis, ...), which only a proxy has;
//! - [`validate_resources`] checks what a proxy serves — tenants, origins, routes, API keys
//!   and JWT issuers — against a small [`ResourceContext`]: the few facts about the fleet
//!   the resources depend on. The admin service validates candidate configurations with it
//!   without pretending to be a proxy.
//!
//! Every problem is a [`FieldError`] with the path of its field
//! (`routes[3].path_pattern`), a message, and an [`ErrorKind`] that says whether the value
//! is wrong in itself, taken by something else, or points at something missing.

mod api_keys;
mod jwt_issuers;
mod origins;
mod plans;
mod policies;
mod routes;
mod rules;
mod server;
mod tenants;
#[cfg(test)]
mod tests;
mod traffic;

pub use rules::parse_cidr;
pub(crate) use rules::valid_host;

use crate::{Config, ServerSettings};
use std::fmt;

/// What kind of problem a [`FieldError`] is. An API maps each to its own answer (the admin
/// service: `Invalid` → 422, `Conflict` → 409, `Reference` → 422, or 409 "still in use"
/// when a delete caused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The value is wrong in itself or for the fleet it is meant for (a bad pattern, a
    /// number out of range, Redis storage on a fleet without Redis).
    Invalid,
    /// The value is fine on its own but something else already holds it (an id, a
    /// subdomain, a host, an API key, a listen address). An API must not say who holds it.
    Conflict,
    /// The value names an object that does not exist, or that belongs to another tenant (a
    /// route's origin, a resource's tenant, the JWT issuer a JWT route needs). Caused by a
    /// delete, it means the deleted object is still in use.
    Reference,
}

/// One problem, with the path of the field it is about (`routes[3].path_pattern`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldError {
    /// Where the problem is: `tenants[1].custom_hosts[0]`, `server.listen[0]`.
    pub path: String,
    /// What is wrong, for people.
    pub message: String,
    /// What kind of problem it is.
    pub kind: ErrorKind,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration, in a stable order (server settings first, then
/// tenants, hosts, origins, routes, JWT issuers, API keys and plans).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

impl ValidationErrors {
    /// `Ok(())` when nothing was found.
    fn into_result(errors: Vec<FieldError>) -> Result<(), ValidationErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// What validating resources needs to know about the proxies that will serve them. A proxy
/// takes it from its own settings ([`ResourceContext::of`]); the admin service from the
/// fleet's settings it is configured with ([`ResourceContext::new`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceContext {
    /// Base domains under which tenants are found by subdomain: names at or under them
    /// belong to subdomains and may not be claimed as custom hosts.
    pub base_domains: Vec<String>,
    /// Networks a JWKS URL may point into besides public addresses.
    pub jwks_allowed_networks: Vec<ipnet::IpNet>,
    /// The proxies have `server.redis`, so Redis-backed rate limits and cache storage work.
    pub has_redis: bool,
}

impl ResourceContext {
    /// The context of a proxy with these settings. Entries of `jwks_allowed_networks` that
    /// do not parse are left out ([`validate_server`] reports them).
    pub fn of(server: &ServerSettings) -> ResourceContext {
        ResourceContext {
            base_domains: server.base_domains.clone(),
            jwks_allowed_networks: server
                .jwks_allowed_networks
                .iter()
                .filter_map(|v| parse_cidr(v))
                .collect(),
            has_redis: server.redis.is_some(),
        }
    }

    /// The context of a fleet whose proxies have these `server.base_domains` and
    /// `server.jwks_allowed_networks`, checked with the proxies' own rules (paths
    /// `base_domains[i]` and `jwks_allowed_networks[i]`), and `server.redis` when
    /// `has_redis`.
    pub fn new(
        base_domains: &[String],
        jwks_allowed_networks: &[String],
        has_redis: bool,
    ) -> Result<ResourceContext, ValidationErrors> {
        let mut c = Collector::default();
        server::check_base_domains(&mut c, "base_domains", base_domains);
        server::check_jwks_networks(&mut c, "jwks_allowed_networks", jwks_allowed_networks);
        ValidationErrors::into_result(c.0)?;
        Ok(ResourceContext {
            base_domains: base_domains.to_vec(),
            jwks_allowed_networks: jwks_allowed_networks
                .iter()
                .filter_map(|v| parse_cidr(v))
                .collect(),
            has_redis,
        })
    }
}

/// Check a proxy's own settings (paths start with `server.`).
pub fn validate_server(server: &ServerSettings) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    server::check(&mut c, server);
    ValidationErrors::into_result(c.0)
}

/// Check the tenants, origins, routes, JWT issuers and API keys of `cfg` for a fleet
/// described by `ctx`: every field, every uniqueness rule and every reference between them.
/// `cfg.server` is not looked at; `ctx` stands for it.
pub fn validate_resources(cfg: &Config, ctx: &ResourceContext) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    check_resources(&mut c, cfg, ctx);
    ValidationErrors::into_result(c.0)
}

/// [`validate_server`] and [`validate_resources`] with the context of `cfg.server`, every
/// problem in one list: what a proxy checks before it serves a configuration.
pub(crate) fn validate(cfg: &Config) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    server::check(&mut c, &cfg.server);
    check_resources(&mut c, cfg, &ResourceContext::of(&cfg.server));
    ValidationErrors::into_result(c.0)
}

fn check_resources(c: &mut Collector, cfg: &Config, ctx: &ResourceContext) {
    let tenant_ids = tenants::check(c, &cfg.tenants, ctx);
    tenants::check_hosts(c, &cfg.tenants, &ctx.base_domains);
    let origin_owners = origins::check(c, &cfg.origins, &tenant_ids);
    routes::check(c, &cfg.routes, &tenant_ids, &origin_owners, ctx);
    jwt_issuers::check(c, &cfg.jwt_issuers, &tenant_ids, ctx);
    routes::check_issuers(c, &cfg.routes, &cfg.jwt_issuers);
    api_keys::check(c, &cfg.api_keys, &tenant_ids);
    let plan_owners = plans::check(c, &cfg.plans, &tenant_ids, ctx);
    plans::check_bindings(c, cfg, &plan_owners);
}

/// Ids of the tenants with a valid id → their position.
type TenantIds<'a> = foldhash::HashMap<&'a str, usize>;

/// Gathers the problems of one validation run.
#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn push(&mut self, kind: ErrorKind, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
            kind,
        });
    }

    /// An [`ErrorKind::Invalid`] value.
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ErrorKind::Invalid, path, message);
    }

    /// An [`ErrorKind::Conflict`]: the value is taken.
    fn conflict(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ErrorKind::Conflict, path, message);
    }

    /// An [`ErrorKind::Reference`] to something missing or foreign.
    fn reference(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ErrorKind::Reference, path, message);
    }

    /// `s` has at most `max` bytes.
    fn max_len(&mut self, path: impl Into<String>, s: &str, max: usize) -> bool {
        if s.len() > max {
            self.err(path, format!("is {} bytes long; at most {max}", s.len()));
            return false;
        }
        true
    }

    /// A list has at most `max` entries.
    fn max_items(&mut self, path: impl Into<String>, n: usize, max: usize) -> bool {
        if n > max {
            self.err(path, format!("has {n} entries; at most {max}"));
            return false;
        }
        true
    }

    /// `v` lies in `lo..=hi`.
    fn range<T: PartialOrd + fmt::Display>(&mut self, path: impl Into<String>, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.err(path, format!("must be between {lo} and {hi}"));
        }
    }

    /// `id` is a valid identifier; says so at `path` when it is not.
    /// A resource id ([`rules::valid_resource_id`]).
    fn id(&mut self, path: String, id: &str) -> bool {
        if rules::valid_resource_id(id) {
            return true;
        }
        self.err(
            path,
            "must be 1-64 characters of A-Z a-z 0-9 . _ -, not starting with _ and not '-'",
        );
        false
    }

    /// `tenant_id` names a tenant of `tenants`.
    fn tenant_ref(&mut self, path: String, tenant_id: &str, tenants: &TenantIds<'_>) {
        if !tenants.contains_key(tenant_id) {
            self.reference(path, format!("no tenant has id '{tenant_id}'"));
        }
    }
}
