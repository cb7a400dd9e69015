//! Declarative sync of the proxies' configuration (`vantage-admin config dump|diff|apply`),
//! like Kong's decK: the configuration lives in git as the YAML the proxy reads from a file
//! (without `server:`), and every change is diffed before it is applied.
//!
//! - [`dump`] writes the stored configuration (or one tenant's) as that YAML, every list
//!   sorted by id: two dumps of the same state are byte-identical. JWT issuers' shared
//!   secrets are left out (see below).
//! - [`plan`] resolves a file against the stored configuration: ids that are not UUIDs get
//!   stable ones ([`resolve_ids`]), secrets are filled in, the file is validated on its own
//!   and then merged into the stored configuration and validated for the fleet; the result
//!   says what would be added, changed and (with `--prune`) removed ([`Diff`]).
//! - [`apply`] does the same inside the admin's one write path ([`UnitOfWork::config`]) and
//!   writes the difference in one transaction; a file that changes nothing commits nothing
//!   (the config version stays).
//!
//! Secrets: API keys are stored as SHA-256 hashes, which round-trip as they are. A JWT
//! issuer's `shared_secret` is never dumped. An issuer in the file with none of `jwks_url`,
//! `public_key_pem` and `shared_secret` keeps the secret stored for the issuer with the same
//! id; one that does not exist yet must be given its secret, in plaintext or as
//! `"${env:NAME}"`, read from the environment of `config diff` / `config apply`.

use crate::error::ApiError;
use crate::publish::Publisher;
use crate::store::{load_config_for, Resource};
use crate::write::{Change, UnitOfWork, Validated};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use tokio_postgres::{Client, IsolationLevel, Transaction};
use uuid::Uuid;
use vantage_model::{
    validate_resources, ApiKey, Config, ErrorKind, FieldError, JwtIssuer, KeyStatus, Origin, Plan,
    ResourceContext, Route, ServerSettings, Tenant,
};

/// The tenant a command is limited to (`--tenant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub id: Uuid,
    pub subdomain: String,
}

impl Scope {
    /// The stored tenant whose id or subdomain is `arg`.
    pub async fn find(client: &Client, arg: &str) -> anyhow::Result<Scope> {
        let id = Uuid::parse_str(arg).ok();
        let row = client
            .query_opt(
                "SELECT id, subdomain FROM tenants WHERE id = $1 OR subdomain = $2",
                &[&id, &arg],
            )
            .await?;
        match row {
            Some(r) => Ok(Scope {
                id: r.get(0),
                subdomain: r.get(1),
            }),
            None => anyhow::bail!("--tenant {arg}: no tenant has this id or subdomain"),
        }
    }
}

/// A file or command refused as a whole: every problem, each with the field path it is about
/// (`routes[3].origin_id: ...`). Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub problems: Vec<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "refused, nothing was written ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// An [`ApiError`] of the write path as a command-line error, with every field it names.
pub fn api_error(e: ApiError) -> anyhow::Error {
    let (message, fields) = match e {
        ApiError::Conflict(m, f) | ApiError::Invalid(m, f) => (m, f),
        ApiError::Internal(m) | ApiError::Unavailable(m) => (m, vec![]),
        other => (format!("{other:?}"), vec![]),
    };
    if fields.is_empty() {
        anyhow::anyhow!("{message}")
    } else {
        let mut problems = vec![message];
        problems.extend(
            fields
                .into_iter()
                .map(|f| format!("{}: {}", f.path, f.message)),
        );
        Refused { problems }.into()
    }
}

/// The configuration as the YAML document of a file, without `server:`.
#[derive(Serialize)]
struct Document<'a> {
    tenants: &'a [Tenant],
    origins: &'a [Origin],
    routes: &'a [Route],
    api_keys: &'a [ApiKey],
    jwt_issuers: &'a [JwtIssuer],
    plans: &'a [Plan],
}

/// A file's YAML (`server:` left out), lists as they are.
pub fn to_yaml(cfg: &Config) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(&Document {
        tenants: &cfg.tenants,
        origins: &cfg.origins,
        routes: &cfg.routes,
        api_keys: &cfg.api_keys,
        jwt_issuers: &cfg.jwt_issuers,
        plans: &cfg.plans,
    })?)
}

/// What [`dump`] wrote, and the notes for the operator (one per shared secret left out).
pub struct Dump {
    pub yaml: String,
    pub notes: Vec<String>,
}

/// A read-only snapshot of the database.
async fn snapshot(client: &mut Client) -> Result<Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
}

/// The stored configuration of the whole fleet, or of the tenant `scope`, as the YAML of a
/// file: every list sorted by id, JWT issuers without their shared secrets.
pub async fn dump(client: &mut Client, scope: Option<&Scope>) -> anyhow::Result<Dump> {
    let tx = snapshot(client).await?;
    let mut cfg = load_config_for(&tx, scope.map(|s| s.id))
        .await
        .map_err(api_error)?;
    tx.commit().await?;
    if let Some(s) = scope {
        let id = s.id.to_string();
        cfg.tenants.retain(|t| t.id == id);
    }
    sort_by_id(&mut cfg);
    let names = subdomains(&cfg, &Config::default());
    let mut notes = Vec::new();
    for (i, j) in cfg.jwt_issuers.iter_mut().enumerate() {
        if j.shared_secret.take().is_some() {
            notes.push(format!(
                "jwt_issuers[{i}] (id {}, tenant {}): shared_secret left out; `config apply` keeps \
                 the stored one, or give it as shared_secret: \"${{env:NAME}}\"",
                j.id,
                tenant_name(&names, &j.tenant_id)
            ));
        }
    }
    Ok(Dump {
        yaml: to_yaml(&cfg)?,
        notes,
    })
}

fn sort_by_id(cfg: &mut Config) {
    cfg.tenants.sort_by(|a, b| a.id.cmp(&b.id));
    cfg.origins.sort_by(|a, b| a.id.cmp(&b.id));
    cfg.routes.sort_by(|a, b| a.id.cmp(&b.id));
    cfg.api_keys.sort_by(|a, b| a.id.cmp(&b.id));
    cfg.jwt_issuers.sort_by(|a, b| a.id.cmp(&b.id));
    cfg.plans.sort_by(|a, b| a.id.cmp(&b.id));
}

/// Parse a file (`name` is what messages call it): YAML syntax errors and unknown fields
/// are refused with their place. Returns the configuration and notes (`server:` ignored).
pub fn parse(text: &str, name: &str) -> anyhow::Result<(Config, Vec<String>)> {
    let cfg: Config = serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut notes = Vec::new();
    if cfg.server != ServerSettings::default() {
        notes.push(format!(
            "{name}: server: is ignored (a proxy's own settings are not stored in Postgres)"
        ));
    }
    Ok((cfg, notes))
}

/// `cfg` with every id that is not a UUID replaced by a stable UUID
/// ([`crate::seed::demo_uuid`] of its kind and id), references following, and every UUID
/// written the way Postgres writes it (lower case, hyphenated). Ids that are UUIDs stay.
pub fn resolve_ids(mut cfg: Config) -> Config {
    let id = |kind: &str, s: &mut String| {
        *s = match Uuid::parse_str(s) {
            Ok(u) => u.to_string(),
            Err(_) => crate::seed::demo_uuid(kind, s).to_string(),
        };
    };
    let plan = |p: &mut Option<String>| {
        if let Some(p) = p {
            id("plan", p);
        }
    };
    for t in &mut cfg.tenants {
        id("tenant", &mut t.id);
        plan(&mut t.plan_id);
    }
    for p in &mut cfg.plans {
        id("plan", &mut p.id);
        id("tenant", &mut p.tenant_id);
    }
    for o in &mut cfg.origins {
        id("origin", &mut o.id);
        id("tenant", &mut o.tenant_id);
    }
    for r in &mut cfg.routes {
        id("route", &mut r.id);
        id("tenant", &mut r.tenant_id);
        for o in r.origin_refs_mut() {
            id("origin", o);
        }
    }
    for k in &mut cfg.api_keys {
        id("api_key", &mut k.id);
        id("tenant", &mut k.tenant_id);
        plan(&mut k.plan_id);
    }
    for j in &mut cfg.jwt_issuers {
        id("jwt_issuer", &mut j.id);
        id("tenant", &mut j.tenant_id);
    }
    cfg
}

/// What a change does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Change,
    Remove,
}

/// One changed field: its path in the resource and its values before and after (JSON;
/// secrets shown as `(secret)`, absent values as `(none)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub path: String,
    pub old: String,
    pub new: String,
}

/// One resource the file adds, changes or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `tenant`, `plan`, `origin`, `route`, `api_key`, `jwt_issuer`.
    pub kind: &'static str,
    pub op: Op,
    pub id: String,
    /// What people recognise it by (`acme: GET /status`).
    pub label: String,
    /// The changed fields ([`Op::Change`] only).
    pub fields: Vec<FieldChange>,
}

/// What applying a file changes, resource by resource in a stable order (kinds in the order
/// they are written, ids sorted within a kind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub entries: Vec<Entry>,
    /// Stored resources (in scope) the file does not list, left alone without `--prune`.
    pub unlisted: usize,
}

impl Diff {
    /// Nothing to add, change or remove.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many resources are added, changed, removed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |op| self.entries.iter().filter(|e| e.op == op).count();
        (n(Op::Add), n(Op::Change), n(Op::Remove))
    }

    fn ids(&self, kind: &str, ops: &[Op]) -> HashSet<&str> {
        self.entries
            .iter()
            .filter(|e| e.kind == kind && ops.contains(&e.op))
            .map(|e| e.id.as_str())
            .collect()
    }

    /// The diff for people: [`Diff::changes`], then [`Diff::summary`].
    pub fn render(&self) -> String {
        format!("{}{}\n", self.changes(), self.summary())
    }

    /// One line per resource (`+` added, `~` changed with one indented line per field, `-`
    /// removed), then how many stored resources the file leaves alone, if any.
    pub fn changes(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let sign = match e.op {
                Op::Add => '+',
                Op::Change => '~',
                Op::Remove => '-',
            };
            out.push_str(&format!("{sign} {} {} ({})\n", e.kind, e.id, e.label));
            for f in &e.fields {
                out.push_str(&format!("    {}: {} → {}\n", f.path, f.old, f.new));
            }
            if e.op == Op::Remove && e.kind == Tenant::SINGULAR {
                out.push_str(
                    "    with everything else of the tenant: its users, admin tokens, billing \
                     records, events, webhooks and alerts\n",
                );
            }
        }
        if self.unlisted > 0 {
            let one = self.unlisted == 1;
            out.push_str(&format!(
                "{} stored resource{} not in the file {} left alone (--prune would remove {})\n",
                self.unlisted,
                if one { "" } else { "s" },
                if one { "is" } else { "are" },
                if one { "it" } else { "them" },
            ));
        }
        out
    }

    /// `2 to add, 1 to change, 0 to remove`, or `no changes`.
    pub fn summary(&self) -> String {
        let (a, c, r) = self.counts();
        if self.is_empty() {
            "no changes".to_string()
        } else {
            format!("{a} to add, {c} to change, {r} to remove")
        }
    }
}

/// A file resolved against the stored configuration.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The file: ids resolved, secrets filled in, expiry times as Postgres writes them.
    pub desired: Config,
    /// The stored configuration (what [`UnitOfWork::config`] loads) with the file merged in
    /// and, with `--prune`, what the file does not list (in scope) removed.
    pub candidate: Config,
    pub diff: Diff,
    /// For the operator (secrets kept from the database, `server:` ignored).
    pub notes: Vec<String>,
}

/// A kind of resource, for diffing and labels.
trait Kind: Resource {
    /// Singular, as the diff names it.
    const SINGULAR: &'static str;
    fn list(cfg: &Config) -> &[Self];
    /// What people recognise it by, besides its tenant.
    fn what(&self) -> String;
}

impl Kind for Tenant {
    const SINGULAR: &'static str = "tenant";
    fn list(cfg: &Config) -> &[Self] {
        &cfg.tenants
    }
    fn what(&self) -> String {
        format!("subdomain {}", self.subdomain)
    }
}

impl Kind for Plan {
    const SINGULAR: &'static str = "plan";
    fn list(cfg: &Config) -> &[Self] {
        &cfg.plans
    }
    fn what(&self) -> String {
        self.name.clone()
    }
}

impl Kind for Origin {
    const SINGULAR: &'static str = "origin";
    fn list(cfg: &Config) -> &[Self] {
        &cfg.origins
    }
    fn what(&self) -> String {
        match self.targets.split_first() {
            Some((t, [])) => t.url.clone(),
            Some((t, rest)) => format!("{} (+{})", t.url, rest.len()),
            None => "DNS discovery".into(),
        }
    }
}

impl Kind for Route {
    const SINGULAR: &'static str = "route";
    fn list(cfg: &Config) -> &[Self] {
        &cfg.routes
    }
    fn what(&self) -> String {
        if self.methods.is_empty() {
            self.path_pattern.clone()
        } else {
            format!("{} {}", self.methods.join(","), self.path_pattern)
        }
    }
}

impl Kind for ApiKey {
    const SINGULAR: &'static str = "api_key";
    fn list(cfg: &Config) -> &[Self] {
        &cfg.api_keys
    }
    fn what(&self) -> String {
        self.name.clone()
    }
}

impl Kind for JwtIssuer {
    const SINGULAR: &'static str = "jwt_issuer";
    fn list(cfg: &Config) -> &[Self] {
        &cfg.jwt_issuers
    }
    fn what(&self) -> String {
        self.issuer.clone()
    }
}

/// Tenant id → subdomain, from both configurations.
fn subdomains(a: &Config, b: &Config) -> HashMap<String, String> {
    a.tenants
        .iter()
        .chain(&b.tenants)
        .map(|t| (t.id.clone(), t.subdomain.clone()))
        .collect()
}

fn tenant_name<'a>(names: &'a HashMap<String, String>, id: &'a str) -> &'a str {
    names.get(id).map(String::as_str).unwrap_or(id)
}

fn label<R: Kind>(x: &R, names: &HashMap<String, String>) -> String {
    if R::KIND == "tenants" {
        x.what()
    } else {
        format!("{}: {}", tenant_name(names, x.tenant_id()), x.what())
    }
}

/// Compare the stored `R`s in scope with the file's, record the entries, and merge the
/// file into `candidate` (removing, with `prune`, what the file does not list).
fn diff_kind<R: Kind>(
    base: &Config,
    desired: &Config,
    scope: Option<&str>,
    prune: bool,
    names: &HashMap<String, String>,
    candidate: &mut Config,
    diff: &mut Diff,
) {
    let in_scope = |x: &R| scope.is_none_or(|s| x.tenant_id() == s);
    let stored: BTreeMap<&str, &R> = R::list(base)
        .iter()
        .filter(|x| in_scope(x))
        .map(|x| (x.id(), x))
        .collect();
    let wanted: BTreeMap<&str, &R> = R::list(desired).iter().map(|x| (x.id(), x)).collect();
    let mut entries = Vec::new();
    let entry = |op, x: &R, fields| Entry {
        kind: R::SINGULAR,
        op,
        id: x.id().to_string(),
        label: label(x, names),
        fields,
    };
    for (id, w) in &wanted {
        match stored.get(id) {
            None => entries.push(entry(Op::Add, w, vec![])),
            Some(s) => {
                let mut fields = Vec::new();
                value_diff("", &to_value(*s), &to_value(*w), &mut fields);
                if !fields.is_empty() {
                    entries.push(entry(Op::Change, w, fields));
                }
            }
        }
    }
    for (id, s) in &stored {
        if !wanted.contains_key(id) {
            if prune {
                entries.push(entry(Op::Remove, s, vec![]));
            } else {
                diff.unlisted += 1;
            }
        }
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    diff.entries.extend(entries);
    let items = R::items(candidate);
    for w in wanted.values() {
        match items.iter().position(|x| x.id() == w.id()) {
            Some(i) => items[i] = (*w).clone(),
            None => items.push((*w).clone()),
        }
    }
    if prune {
        items.retain(|x| !in_scope(x) || wanted.contains_key(x.id()));
    }
}

fn to_value<T: Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

/// Every leaf where `old` and `new` differ, with its path (`targets[0].url`), in a stable
/// order (an object's keys sorted, then those only `new` has). Lists of different lengths
/// count as one change of the whole list.
fn value_diff(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => value_diff(&join(k), x, y, out),
                    (x, y) => push_change(join(k), x, y, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                value_diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => push_change(path.to_string(), Some(a), Some(b), out),
        _ => {}
    }
}

fn push_change(path: String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    let secret = path == "shared_secret" || path.ends_with(".shared_secret");
    let show = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "(none)".to_string(),
        Some(_) if secret => "(secret)".to_string(),
        Some(v) => v.to_string(),
    };
    out.push(FieldChange {
        old: show(old),
        new: show(new),
        path,
    });
}

/// What a missing secret is validated as (the file is refused for it anyway).
const STAND_IN: &str = "a stand-in for a secret that is missing";

/// `NAME` of a value `${env:NAME}`.
fn env_ref(v: &str) -> Option<&str> {
    v.strip_prefix("${env:")?.strip_suffix('}')
}

/// Problems found so far, at most one per path (the first says it best).
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.0.iter().any(|(p, _)| *p == path) {
            self.0.push((path, message.into()));
        }
    }

    fn check(&mut self) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(Refused {
            problems: std::mem::take(&mut self.0)
                .into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect(),
        }
        .into())
    }
}

/// Resolve `file` against `base`, the stored configuration as [`UnitOfWork::config`]
/// loads it for `scope` (read in `tx`): resolve ids, fill in secrets, validate the file on
/// its own (paths are the file's), refuse what would cross tenants or change what the
/// database keeps fixed, merge it and validate the result for the fleet `ctx`. Refused as
/// a whole ([`Refused`]) with every problem found.
pub async fn plan(
    tx: &Transaction<'_>,
    base: &Config,
    file: Config,
    ctx: &ResourceContext,
    scope: Option<&Scope>,
    prune: bool,
) -> anyhow::Result<Planned> {
    let mut problems = Problems::default();
    let mut notes = Vec::new();
    let mut raw = file;
    // Secrets from the environment.
    for (i, j) in raw.jwt_issuers.iter_mut().enumerate() {
        let Some(name) = j.shared_secret.as_deref().and_then(env_ref) else {
            continue;
        };
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => j.shared_secret = Some(v),
            _ => {
                problems.push(
                    format!("jwt_issuers[{i}].shared_secret"),
                    format!("environment variable {name} is not set"),
                );
                // Validated as if it were there: the problem is said once.
                j.shared_secret = Some(STAND_IN.to_string());
            }
        }
    }
    let mut desired = resolve_ids(raw.clone());
    if prune && scope.is_none() && desired.tenants.is_empty() {
        problems.push(
            "tenants",
            "the file lists no tenant: with --prune that would remove every tenant",
        );
    }
    // A tenant's file holds that tenant and its resources only.
    if let Some(s) = scope {
        scope_problems(&desired, s, &mut problems);
    }
    // Shared secrets the file leaves out are kept from the database.
    let names = subdomains(base, &desired);
    for (i, j) in raw.jwt_issuers.iter_mut().enumerate() {
        if j.jwks_url.is_some() || j.public_key_pem.is_some() || j.shared_secret.is_some() {
            continue;
        }
        let d = &mut desired.jwt_issuers[i];
        let stored = base
            .jwt_issuers
            .iter()
            .find(|s| s.id == d.id && s.tenant_id == d.tenant_id)
            .and_then(|s| s.shared_secret.clone());
        match stored {
            Some(secret) => {
                notes.push(format!(
                    "jwt_issuers[{i}] (id {}, tenant {}): no shared_secret in the file: the stored one is kept",
                    d.id,
                    tenant_name(&names, &d.tenant_id)
                ));
                j.shared_secret = Some(secret.clone());
                d.shared_secret = Some(secret);
            }
            None => {
                j.shared_secret = Some(STAND_IN.to_string());
                problems.push(
                    format!("jwt_issuers[{i}].shared_secret"),
                    "is not in the file and no stored issuer with this id has one: give it \
                     (e.g. shared_secret: \"${env:NAME}\"), or a jwks_url or public_key_pem",
                );
            }
        }
    }
    // The file on its own, with its own ids in the messages.
    if let Err(e) = validate_resources(&raw, ctx) {
        for fe in e.0 {
            problems.push(fe.path, fe.message);
        }
    }
    stored_problems(tx, base, &desired, scope, &mut problems).await?;
    normalize_expiry(&mut desired);

    let mut candidate = base.clone();
    let mut diff = Diff::default();
    let sid = scope.map(|s| s.id.to_string());
    let sc = sid.as_deref();
    let c = &mut candidate;
    diff_kind::<Tenant>(base, &desired, sc, prune, &names, c, &mut diff);
    diff_kind::<Plan>(base, &desired, sc, prune, &names, c, &mut diff);
    diff_kind::<Origin>(base, &desired, sc, prune, &names, c, &mut diff);
    diff_kind::<Route>(base, &desired, sc, prune, &names, c, &mut diff);
    diff_kind::<ApiKey>(base, &desired, sc, prune, &names, c, &mut diff);
    diff_kind::<JwtIssuer>(base, &desired, sc, prune, &names, c, &mut diff);

    // The merged configuration for the fleet (even when the file has problems already: the
    // operator hears of all of them at once): only problems the file brings count, as the
    // write path judges it, named by the file's paths.
    if let Err(errors) = validate_resources(&candidate, ctx) {
        let old: HashSet<FieldError> = validate_resources(base, ctx)
            .err()
            .map(|e| e.0.into_iter().collect())
            .unwrap_or_default();
        for e in errors.0.into_iter().filter(|e| !old.contains(e)) {
            match file_path(&e.path, &candidate, &desired) {
                Some(p) => problems.push(p, message_of(&e)),
                // The other side of a conflict is not the file's business.
                None if e.kind == ErrorKind::Conflict => {}
                None => problems.push(stored_path(&e.path, &candidate), message_of(&e)),
            }
        }
    }
    problems.check()?;
    Ok(Planned {
        desired,
        candidate,
        diff,
        notes,
    })
}

fn message_of(e: &FieldError) -> String {
    match e.kind {
        // Never say who holds the value.
        ErrorKind::Conflict => "is already in use".to_string(),
        ErrorKind::Invalid | ErrorKind::Reference => e.message.clone(),
    }
}

fn scope_problems(desired: &Config, s: &Scope, problems: &mut Problems) {
    let sid = s.id.to_string();
    let sub = &s.subdomain;
    if !desired.tenants.iter().any(|t| t.id == sid) {
        problems.push(
            "tenants",
            format!(
                "the file does not list tenant {sub} (--tenant): a tenant's file holds the tenant \
                 itself (see `config dump --tenant {sub}`)"
            ),
        );
    }
    for (i, t) in desired.tenants.iter().enumerate() {
        if t.id != sid {
            problems.push(
                format!("tenants[{i}].id"),
                format!("is not tenant {sub} (--tenant): a tenant's file holds that tenant only"),
            );
        }
    }
    let mut check = |kind: &str, owners: Vec<&str>| {
        for (i, owner) in owners.into_iter().enumerate() {
            if owner != sid {
                problems.push(
                    format!("{kind}[{i}].tenant_id"),
                    format!("must be tenant {sub} ({sid}), the one of --tenant"),
                );
            }
        }
    };
    check(
        "origins",
        desired
            .origins
            .iter()
            .map(|x| x.tenant_id.as_str())
            .collect(),
    );
    check(
        "routes",
        desired
            .routes
            .iter()
            .map(|x| x.tenant_id.as_str())
            .collect(),
    );
    check(
        "api_keys",
        desired
            .api_keys
            .iter()
            .map(|x| x.tenant_id.as_str())
            .collect(),
    );
    check(
        "jwt_issuers",
        desired
            .jwt_issuers
            .iter()
            .map(|x| x.tenant_id.as_str())
            .collect(),
    );
    check(
        "plans",
        desired.plans.iter().map(|x| x.tenant_id.as_str()).collect(),
    );
}

/// Ids held by another tenant in the database (a resource never moves: its row would keep
/// its tenant), and API key fields the database keeps fixed.
async fn stored_problems(
    tx: &Transaction<'_>,
    base: &Config,
    desired: &Config,
    scope: Option<&Scope>,
    problems: &mut Problems,
) -> anyhow::Result<()> {
    owners::<Origin>(tx, desired, scope, problems).await?;
    owners::<Route>(tx, desired, scope, problems).await?;
    owners::<ApiKey>(tx, desired, scope, problems).await?;
    owners::<JwtIssuer>(tx, desired, scope, problems).await?;
    owners::<Plan>(tx, desired, scope, problems).await?;
    let stored: HashMap<&str, &ApiKey> = base.api_keys.iter().map(|k| (k.id.as_str(), k)).collect();
    for (i, k) in desired.api_keys.iter().enumerate() {
        let Some(s) = stored.get(k.id.as_str()) else {
            continue;
        };
        if s.key_hash != k.key_hash {
            problems.push(
                format!("api_keys[{i}].key_hash"),
                "cannot change: a key is rotated (POST /api/v1/api-keys/{id}/rotate) or added under a new id",
            );
        }
        if s.prefix != k.prefix {
            problems.push(format!("api_keys[{i}].prefix"), "cannot change");
        }
        if s.status == KeyStatus::Revoked && k.status != KeyStatus::Revoked {
            problems.push(
                format!("api_keys[{i}].status"),
                "a revoked key stays revoked",
            );
        }
    }
    Ok(())
}

async fn owners<R: Kind>(
    tx: &Transaction<'_>,
    desired: &Config,
    scope: Option<&Scope>,
    problems: &mut Problems,
) -> anyhow::Result<()> {
    let items = R::list(desired);
    let ids: Vec<Uuid> = items
        .iter()
        .filter_map(|x| Uuid::parse_str(x.id()).ok())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows = tx
        .query(
            &format!(
                "SELECT x.id, x.tenant_id, t.subdomain FROM {} x JOIN tenants t ON t.id = x.tenant_id
                  WHERE x.id = ANY($1)",
                R::KIND
            ),
            &[&ids],
        )
        .await?;
    let held: HashMap<String, (String, String)> = rows
        .iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            let tenant: Uuid = r.get(1);
            (id.to_string(), (tenant.to_string(), r.get(2)))
        })
        .collect();
    for (i, x) in items.iter().enumerate() {
        let Some((tenant, sub)) = held.get(x.id()) else {
            continue;
        };
        if *tenant == x.tenant_id() {
            continue;
        }
        match scope {
            // Another tenant's: say only that the id is taken.
            Some(_) => problems.push(format!("{}[{i}].id", R::KIND), "is already in use"),
            None => problems.push(
                format!("{}[{i}].tenant_id", R::KIND),
                format!(
                    "cannot change: this {} belongs to tenant {sub} (a resource never moves to \
                     another tenant; give the new one another id)",
                    R::NAME
                ),
            ),
        }
    }
    Ok(())
}

/// API keys' `expires_at` as Postgres writes it back (UTC, whole seconds), so that an
/// unchanged key compares equal. (Validation has refused times that do not parse.)
fn normalize_expiry(desired: &mut Config) {
    for k in &mut desired.api_keys {
        if let Some(t) = k
            .expires_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        {
            k.expires_at = Some(humantime::format_rfc3339_seconds(t).to_string());
        }
    }
}

/// `kind` and index of a path `kind[i]...`, and the rest after `]`.
fn split_path(path: &str) -> Option<(&str, usize, &str)> {
    let open = path.find('[')?;
    let close = open + path[open..].find(']')?;
    let i = path[open + 1..close].parse().ok()?;
    Some((&path[..open], i, &path[close + 1..]))
}

fn id_at<'a>(cfg: &'a Config, kind: &str, i: usize) -> Option<&'a str> {
    match kind {
        "tenants" => cfg.tenants.get(i).map(|x| x.id.as_str()),
        "origins" => cfg.origins.get(i).map(|x| x.id.as_str()),
        "routes" => cfg.routes.get(i).map(|x| x.id.as_str()),
        "api_keys" => cfg.api_keys.get(i).map(|x| x.id.as_str()),
        "jwt_issuers" => cfg.jwt_issuers.get(i).map(|x| x.id.as_str()),
        "plans" => cfg.plans.get(i).map(|x| x.id.as_str()),
        _ => None,
    }
}

fn index_of(cfg: &Config, kind: &str, id: &str) -> Option<usize> {
    let ids: Vec<&str> = match kind {
        "tenants" => cfg.tenants.iter().map(|x| x.id.as_str()).collect(),
        "origins" => cfg.origins.iter().map(|x| x.id.as_str()).collect(),
        "routes" => cfg.routes.iter().map(|x| x.id.as_str()).collect(),
        "api_keys" => cfg.api_keys.iter().map(|x| x.id.as_str()).collect(),
        "jwt_issuers" => cfg.jwt_issuers.iter().map(|x| x.id.as_str()).collect(),
        "plans" => cfg.plans.iter().map(|x| x.id.as_str()).collect(),
        _ => vec![],
    };
    ids.iter().position(|x| *x == id)
}

/// The file's path for a problem of the merged configuration, when it is about something
/// of the file.
fn file_path(path: &str, candidate: &Config, desired: &Config) -> Option<String> {
    let (kind, i, rest) = split_path(path)?;
    let id = id_at(candidate, kind, i)?;
    let j = index_of(desired, kind, id)?;
    Some(format!("{kind}[{j}]{rest}"))
}

/// A problem about a stored resource the file does not list: named by its id.
fn stored_path(path: &str, candidate: &Config) -> String {
    match split_path(path) {
        Some((kind, i, rest)) => match id_at(candidate, kind, i) {
            Some(id) => format!("(stored) {kind}[id={id}]{rest}"),
            None => path.to_string(),
        },
        None => path.to_string(),
    }
}

/// What [`diff`] found.
pub struct Diffed {
    pub planned: Planned,
    /// The config version the diff was made against.
    pub version: i64,
}

/// What applying `file` would change, read in one snapshot (nothing is written).
pub async fn diff(
    client: &mut Client,
    file: Config,
    ctx: &ResourceContext,
    scope: Option<&Scope>,
    prune: bool,
) -> anyhow::Result<Diffed> {
    let tx = snapshot(client).await?;
    let version: i64 = tx
        .query_one("SELECT vantage_config_version()", &[])
        .await?
        .get(0);
    let base = load_config_for(&tx, scope.map(|s| s.id))
        .await
        .map_err(api_error)?;
    let planned = plan(&tx, &base, file, ctx, scope, prune).await?;
    tx.commit().await?;
    Ok(Diffed { planned, version })
}

/// How to apply a file.
pub struct ApplyOptions<'a> {
    /// The fleet the configuration is validated for.
    pub context: &'a ResourceContext,
    /// Announces the committed version (none: the proxies' version poll picks it up).
    pub publisher: Option<&'a Publisher>,
    /// Only this tenant: the file must hold it and nothing of another tenant.
    pub scope: Option<&'a Scope>,
    /// Remove stored resources (in scope) the file does not list.
    pub prune: bool,
    /// Write and roll back: checks everything the database checks, keeps nothing.
    pub dry_run: bool,
}

/// What [`apply`] did.
pub struct Applied {
    pub planned: Planned,
    /// The committed version, or the current one when nothing was committed.
    pub version: i64,
    /// Whether a transaction was committed (not when nothing changed or on a dry run).
    pub committed: bool,
}

/// Apply `file` in one transaction through the write path: load (for `scope`), plan, put
/// the merged candidate, validate it as an import, write the rows in an order the
/// references allow, commit and announce. A file that changes nothing commits nothing.
pub async fn apply(
    client: &mut Client,
    file: Config,
    o: &ApplyOptions<'_>,
) -> anyhow::Result<Applied> {
    let mut w = UnitOfWork::config(client, o.context, o.publisher, o.scope.map(|s| s.id))
        .await
        .map_err(api_error)?;
    let base = w.candidate().clone();
    let planned = plan(w.tx(), &base, file, o.context, o.scope, o.prune).await?;
    if planned.diff.is_empty() {
        // Rolled back: the version bump with it.
        drop(w);
        let version = current_version(client).await?;
        return Ok(Applied {
            planned,
            version,
            committed: false,
        });
    }
    *w.candidate_mut() = planned.candidate.clone();
    let w = w.validate(Change::Import).map_err(api_error)?;
    write(&w, &planned).await.map_err(api_error)?;
    if o.dry_run {
        drop(w);
        let version = current_version(client).await?;
        return Ok(Applied {
            planned,
            version,
            committed: false,
        });
    }
    let version = w
        .commit(o.scope.map(|s| s.id.to_string()))
        .await
        .map_err(api_error)?;
    Ok(Applied {
        planned,
        version,
        committed: true,
    })
}

async fn current_version(client: &Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT vantage_config_version()", &[])
        .await?
        .get(0))
}

fn uuid(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::Internal(format!("'{id}' is not a UUID")))
}

/// Write what `p` changes. Order: first what goes away and nothing kept can need (tenants
/// with everything of theirs, JWT issuers, API keys, routes); then tenants (without a plan
/// that is new), plans, tenants on a new plan, origins, routes, API keys, JWT issuers; last
/// the origins and plans that go away (whatever used them now points elsewhere).
async fn write(w: &UnitOfWork<'_, Validated<'_>>, p: &Planned) -> Result<(), ApiError> {
    let d = &p.desired;
    let diff = &p.diff;
    let saved = |kind| diff.ids(kind, &[Op::Add, Op::Change]);
    let removed = |kind| diff.ids(kind, &[Op::Remove]);
    let mut gone: Vec<(&str, &str)> = Vec::new();
    for kind in ["tenant", "jwt_issuer", "api_key", "route"] {
        let mut ids: Vec<&str> = removed(kind).into_iter().collect();
        ids.sort();
        gone.extend(ids.into_iter().map(|id| (kind, id)));
    }
    for (kind, id) in gone {
        let id = uuid(id)?;
        match kind {
            "tenant" => w.remove::<Tenant>(id).await?,
            "jwt_issuer" => w.remove::<JwtIssuer>(id).await?,
            "api_key" => w.remove::<ApiKey>(id).await?,
            _ => w.remove::<Route>(id).await?,
        }
    }
    let new_plans = diff.ids("plan", &[Op::Add]);
    let tenants = saved("tenant");
    let on_new_plan = |t: &Tenant| t.plan_id.as_deref().is_some_and(|p| new_plans.contains(p));
    for t in d.tenants.iter().filter(|t| tenants.contains(t.id.as_str())) {
        if on_new_plan(t) {
            w.save(&Tenant {
                plan_id: None,
                ..t.clone()
            })
            .await?;
        } else {
            w.save(t).await?;
        }
    }
    save_all(w, &d.plans, &saved("plan")).await?;
    for t in d.tenants.iter().filter(|t| tenants.contains(t.id.as_str())) {
        if on_new_plan(t) {
            w.save(t).await?;
        }
    }
    save_all(w, &d.origins, &saved("origin")).await?;
    save_all(w, &d.routes, &saved("route")).await?;
    save_all(w, &d.api_keys, &saved("api_key")).await?;
    save_all(w, &d.jwt_issuers, &saved("jwt_issuer")).await?;
    let mut origins: Vec<&str> = removed("origin").into_iter().collect();
    origins.sort();
    for id in origins {
        w.remove::<Origin>(uuid(id)?).await?;
    }
    let mut plans: Vec<&str> = removed("plan").into_iter().collect();
    plans.sort();
    for id in plans {
        w.remove::<Plan>(uuid(id)?).await?;
    }
    Ok(())
}

async fn save_all<R: Resource>(
    w: &UnitOfWork<'_, Validated<'_>>,
    items: &[R],
    ids: &HashSet<&str>,
) -> Result<(), ApiError> {
    for x in items.iter().filter(|x| ids.contains(x.id())) {
        w.save(x).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_that_are_uuids_stay_and_others_get_stable_ones() {
        let u = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        let cfg = Config::from_yaml(&format!(
            "tenants: [{{id: acme, name: A, subdomain: acme}}, {{id: {u}, name: B, subdomain: b}}]
origins: [{{id: api, tenant_id: {u}, targets: [{{url: 'http://127.0.0.1:1'}}]}}]
routes: [{{id: r, tenant_id: acme, path_pattern: /x, origin_id: api}}]"
        ))
        .unwrap();
        let r = resolve_ids(cfg.clone());
        assert_eq!(r, resolve_ids(cfg));
        assert_eq!(
            r.tenants[0].id,
            crate::seed::demo_uuid("tenant", "acme").to_string()
        );
        // A UUID stays, written as Postgres writes it.
        assert_eq!(r.tenants[1].id, u.to_lowercase());
        assert_eq!(r.origins[0].tenant_id, u.to_lowercase());
        assert_eq!(r.routes[0].origin_id, r.origins[0].id);
        assert_eq!(r.routes[0].tenant_id, r.tenants[0].id);
    }

    #[test]
    fn value_diff_names_each_changed_leaf_and_hides_secrets() {
        let mut out = Vec::new();
        value_diff(
            "",
            &json!({"targets": [{"url": "a"}], "retries": 1, "shared_secret": "x", "gone": true}),
            &json!({"targets": [{"url": "b"}], "retries": 1, "shared_secret": "y", "new": [1]}),
            &mut out,
        );
        let lines: Vec<String> = out
            .iter()
            .map(|f| format!("{}: {} → {}", f.path, f.old, f.new))
            .collect();
        assert_eq!(
            lines,
            [
                "gone: true → (none)",
                "shared_secret: (secret) → (secret)",
                "targets[0].url: \"a\" → \"b\"",
                "new: (none) → [1]",
            ]
        );
    }

    #[test]
    fn paths_of_the_merged_configuration_are_the_files() {
        assert_eq!(
            split_path("routes[12].origin_id"),
            Some(("routes", 12, ".origin_id"))
        );
        assert_eq!(split_path("tenants[0]"), Some(("tenants", 0, "")));
        assert_eq!(split_path("tenants"), None);
        assert_eq!(env_ref("${env:ACME_SECRET}"), Some("ACME_SECRET"));
        assert_eq!(env_ref("plain"), None);
    }
}
