//! Alert rules and their evaluation by the workers (`alerts.evaluate`, every
//! `worker.alert_interval_s`, scheduled once per fleet).
//!
//! A rule of a tenant has a kind — one file of this module each: [`quota`] (a quota used past
//! a percentage), [`violations`] (refusals per minute of a key or route), [`error_rate`]
//! (the share of 5xx answers), [`pool`] (an origin pool with no healthy target, as the
//! proxies report it) and [`key_expiring`] (an API key about to expire). Evaluating a rule
//! gives its current **breaches**, each with a de-duplication key (`dedupe`: the subject,
//! and for quotas the quota, its period and the threshold). The evaluation then reconciles
//! the `alerts` table with them:
//!
//! - a breach with no firing alert of its (rule, dedupe) fires one, unless an alert of that
//!   (rule, dedupe) was resolved less than the rule's `cooldown_s` ago;
//! - a firing alert whose breach is gone (or whose rule was disabled) is resolved;
//! - a firing alert whose breach is still there keeps firing (its value is brought up to date).
//!
//! A rule is evaluated and reconciled in one transaction, with the events of its alert
//! changes ([`crate::events::emit`]: `alert.fired` — and `quota.threshold`, `key.expiring`
//! or `pool.unhealthy` by kind — or `alert.resolved`), so an alert is never announced
//! without being recorded nor recorded without being announced. At most one alert per
//! (rule, dedupe) fires at a time: the partial unique index `alerts_one_firing` makes a
//! second insert (a job run twice, two workers at once, a re-run after a crash) do nothing,
//! and a resolution only resolves an alert that is still firing. Overlapping evaluations of
//! one rule take turns ([`lock_rule`]), each reading what the one before committed, so a
//! stale evaluation cannot resolve what a newer one fired. The evaluation is idempotent.
//!
//! One evaluation runs at a time in the fleet ([`EVALUATION_LOCK`]): a job whose slot comes
//! while the previous evaluation still runs skips its slot instead of queueing behind it.
//! A rule whose evaluation fails does not hold back the others: it is logged and the rest
//! are evaluated; the job is then tried again. A tenant has at most
//! [`MAX_RULES_PER_TENANT`] rules.

pub mod error_rate;
pub mod key_expiring;
pub mod pool;
pub mod quota;
pub mod violations;

use crate::error::Field;
use crate::events;
use crate::metrics::METRICS;
use crate::worker::{queue::Job, JobContext, JobError};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::HashMap;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

/// The kinds of rule (`alert_rules.kind`).
pub const KINDS: [&str; 5] = [
    quota::KIND,
    violations::KIND,
    error_rate::KIND,
    pool::KIND,
    key_expiring::KIND,
];

/// Most alert rules of one tenant: each is evaluated every `worker.alert_interval_s`.
pub const MAX_RULES_PER_TENANT: i64 = 100;

/// Longest `cooldown_s` of a rule: 30 days.
pub const MAX_COOLDOWN_S: i64 = 30 * 86_400;

/// The parameters of a rule, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleParams {
    QuotaUsed(quota::QuotaUsedParams),
    Violations(violations::ViolationsParams),
    ErrorRate(error_rate::ErrorRateParams),
    PoolUnhealthy(pool::PoolUnhealthyParams),
    KeyExpiring(key_expiring::KeyExpiringParams),
}

/// What the parameters of one kind of rule have in common.
trait Params: DeserializeOwned + Serialize {
    /// Every parameter.
    const FIELDS: &'static [&'static str];
    /// The parameters without a default.
    const REQUIRED: &'static [&'static str] = &[];
    /// Problems of the values, with paths relative to `params`.
    fn check(&self, fields: &mut Vec<Field>);
}

/// A problem of `path`.
pub(crate) fn field(path: impl Into<String>, message: impl Into<String>) -> Field {
    Field {
        path: path.into(),
        message: message.into(),
    }
}

/// Parse and check the parameters of a rule of one kind; problems are named `params.<path>`.
fn parse_as<P: Params>(obj: &Map<String, Value>) -> Result<P, Vec<Field>> {
    let mut fields = Vec::new();
    for k in obj.keys() {
        if !P::FIELDS.contains(&k.as_str()) {
            fields.push(field(
                format!("params.{k}"),
                format!(
                    "unknown parameter; this kind of rule takes {}",
                    P::FIELDS.join(", ")
                ),
            ));
        }
    }
    for k in P::REQUIRED {
        if obj.get(*k).is_none_or(Value::is_null) {
            fields.push(field(format!("params.{k}"), "is required"));
        }
    }
    if !fields.is_empty() {
        return Err(fields);
    }
    let p: P = serde_path_to_error::deserialize(Value::Object(obj.clone())).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "params".to_string()
        } else {
            format!("params.{path}")
        };
        vec![field(path, e.into_inner().to_string())]
    })?;
    p.check(&mut fields);
    if fields.is_empty() {
        Ok(p)
    } else {
        Err(fields
            .into_iter()
            .map(|f| field(format!("params.{}", f.path), f.message))
            .collect())
    }
}

impl RuleParams {
    /// The parameters of a rule of `kind`, checked (defaults filled in). Problems name their
    /// field: `kind`, `params`, `params.thresholds[1]` ...
    pub fn parse(kind: &str, params: &Value) -> Result<RuleParams, Vec<Field>> {
        if !KINDS.contains(&kind) {
            return Err(vec![field(
                "kind",
                format!("must be one of {}", KINDS.join(", ")),
            )]);
        }
        let empty = Map::new();
        let obj = match params {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => return Err(vec![field("params", "must be an object")]),
        };
        Ok(match kind {
            quota::KIND => RuleParams::QuotaUsed(parse_as(obj)?),
            violations::KIND => RuleParams::Violations(parse_as(obj)?),
            error_rate::KIND => RuleParams::ErrorRate(parse_as(obj)?),
            pool::KIND => RuleParams::PoolUnhealthy(parse_as(obj)?),
            _ => RuleParams::KeyExpiring(parse_as(obj)?),
        })
    }

    /// The kind of rule.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleParams::QuotaUsed(_) => quota::KIND,
            RuleParams::Violations(_) => violations::KIND,
            RuleParams::ErrorRate(_) => error_rate::KIND,
            RuleParams::PoolUnhealthy(_) => pool::KIND,
            RuleParams::KeyExpiring(_) => key_expiring::KIND,
        }
    }

    /// As stored (every default written out).
    pub fn to_json(&self) -> Value {
        let v = match self {
            RuleParams::QuotaUsed(p) => serde_json::to_value(p),
            RuleParams::Violations(p) => serde_json::to_value(p),
            RuleParams::ErrorRate(p) => serde_json::to_value(p),
            RuleParams::PoolUnhealthy(p) => serde_json::to_value(p),
            RuleParams::KeyExpiring(p) => serde_json::to_value(p),
        };
        v.unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// Problems with what the parameters name in the database: a route or origin that is
    /// not the tenant's.
    pub async fn check_references(
        &self,
        c: &impl GenericClient,
        tenant: Uuid,
    ) -> Result<Vec<Field>, tokio_postgres::Error> {
        let mut fields = Vec::new();
        match self {
            RuleParams::ErrorRate(p) => {
                if let Some(r) = &p.route_id {
                    let found = c
                        .query_opt(
                            "SELECT 1 FROM routes WHERE id::text = $1 AND tenant_id = $2",
                            &[r, &tenant],
                        )
                        .await?;
                    if found.is_none() {
                        fields.push(field("params.route_id", format!("no route has id '{r}'")));
                    }
                }
            }
            RuleParams::PoolUnhealthy(p) => {
                if let Some(o) = &p.origin_id {
                    let found = c
                        .query_opt(
                            "SELECT 1 FROM origins WHERE id::text = $1 AND tenant_id = $2",
                            &[o, &tenant],
                        )
                        .await?;
                    if found.is_none() {
                        fields.push(field("params.origin_id", format!("no origin has id '{o}'")));
                    }
                }
            }
            _ => {}
        }
        Ok(fields)
    }

    /// The rule's breaches now.
    async fn breaches(
        &self,
        c: &impl GenericClient,
        rule: &Rule,
        env: &Env,
    ) -> Result<Vec<Breach>, EvalError> {
        match self {
            RuleParams::QuotaUsed(p) => quota::evaluate(c, rule, p, env).await,
            RuleParams::Violations(p) => violations::evaluate(c, rule, p).await,
            RuleParams::ErrorRate(p) => error_rate::evaluate(c, rule, p).await,
            RuleParams::PoolUnhealthy(p) => pool::evaluate(c, rule, p, env).await,
            RuleParams::KeyExpiring(p) => key_expiring::evaluate(c, rule, p).await,
        }
    }
}

/// Serialize a number without a fraction as an integer (`80`, not `80.0`).
fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

fn ser_num<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    num(*x).serialize(s)
}

fn ser_nums<S: Serializer>(xs: &[f64], s: S) -> Result<S::Ok, S::Error> {
    xs.iter().map(|x| num(*x)).collect::<Vec<_>>().serialize(s)
}

/// A number for people: no fraction when whole, else one decimal.
pub(crate) fn show(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

/// A `window_s` parameter: whole minutes, 1 minute to 1 day.
fn check_window(window_s: i64, fields: &mut Vec<Field>) {
    if !(60..=86_400).contains(&window_s) || window_s % 60 != 0 {
        fields.push(field(
            "window_s",
            "must be whole minutes (a multiple of 60) from 60 to 86400",
        ));
    }
}

/// A rule as the evaluation reads it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Uuid,
    pub tenant: Uuid,
    pub name: String,
    pub kind: String,
    pub cooldown_s: i32,
    pub enabled: bool,
    params: Value,
}

/// What every evaluation of one job shares.
pub(crate) struct Env {
    /// Unix seconds (quota periods are taken at this instant).
    pub now: i64,
    /// `worker.pool_health_stale_s`.
    pub pool_health_stale_s: i64,
}

/// One current breach of a rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breach {
    /// What makes two breaches the same alert.
    pub dedupe: String,
    /// Who or what: `key:<id>`, `tenant`, `route:<id>`, `origin:<id>`.
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub details: Value,
}

/// Why a rule could not be evaluated.
#[derive(Debug)]
pub(crate) enum EvalError {
    /// The database failed: the job is tried again.
    Db(tokio_postgres::Error),
    /// The rule (or what it reads) cannot be evaluated; other rules still are.
    Rule(String),
}

impl From<tokio_postgres::Error> for EvalError {
    fn from(e: tokio_postgres::Error) -> Self {
        EvalError::Db(e)
    }
}

/// The event sent with `alert.fired` for a rule of `kind`, if any.
fn kind_event(kind: &str) -> Option<&'static str> {
    match kind {
        quota::KIND => Some(events::QUOTA_THRESHOLD),
        key_expiring::KIND => Some(events::KEY_EXPIRING),
        pool::KIND => Some(events::POOL_UNHEALTHY),
        _ => None,
    }
}

/// An alert as the API shows it and as events carry it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    #[schema(value_type = Uuid)]
    pub id: String,
    #[schema(value_type = Uuid)]
    pub rule_id: String,
    /// The rule's name. Example: `quota-warnings`.
    pub rule_name: String,
    #[schema(value_type = Uuid)]
    pub tenant_id: String,
    /// The rule's kind. Example: `quota_used`.
    pub kind: String,
    /// Who or what: `key:<api key id>`, `tenant`, `route:<route id>` or `origin:<origin id>`.
    pub subject: String,
    /// What makes two breaches the same alert (one fires at a time per rule and dedupe).
    /// Example: `key:6f1c…|monthly|1764547200|80`.
    pub dedupe: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The measured value when it fired (kept up to date while it fires). Example: `85`
    /// (percent of the quota).
    pub value: f64,
    /// The rule's threshold it crossed. Example: `80`.
    pub threshold: f64,
    /// For people. Example: `API key 'ci' used 85% of quota 'monthly' (85 of 100 units in
    /// 2026-11)`.
    pub message: String,
    /// The figures behind it, by kind (quota, period, limit, used ...).
    #[schema(value_type = Object)]
    pub details: Value,
    #[schema(format = DateTime)]
    pub fired_at: String,
    /// When it was resolved; absent while firing.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub resolved_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The columns of [`AlertView`] in its order, from `alerts a JOIN alert_rules r`.
pub const VIEW_COLUMNS: &str = "a.id::text, a.rule_id::text, r.name, a.tenant_id::text, a.kind, \
    a.subject, a.dedupe, a.state, a.value, a.threshold, a.message, a.details, \
    to_char(a.fired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    to_char(a.resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    to_char(a.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

impl AlertView {
    pub fn from_row(r: &tokio_postgres::Row) -> AlertView {
        AlertView {
            id: r.get(0),
            rule_id: r.get(1),
            rule_name: r.get(2),
            tenant_id: r.get(3),
            kind: r.get(4),
            subject: r.get(5),
            dedupe: r.get(6),
            state: r.get(7),
            value: r.get(8),
            threshold: r.get(9),
            message: r.get(10),
            details: r.get(11),
            fired_at: r.get(12),
            resolved_at: r.get(13),
            updated_at: r.get(14),
        }
    }

    /// The alert `id`.
    async fn load(c: &impl GenericClient, id: Uuid) -> Result<AlertView, tokio_postgres::Error> {
        let row = c
            .query_one(
                &format!(
                    "SELECT {VIEW_COLUMNS} FROM alerts a JOIN alert_rules r ON r.id = a.rule_id
                      WHERE a.id = $1"
                ),
                &[&id],
            )
            .await?;
        Ok(AlertView::from_row(&row))
    }

    fn event_data(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// In the caller's transaction: wait until no other transaction evaluates (or deletes)
/// `rule`, and keep others waiting until this one ends. Evaluations that overlap (a slow
/// job and the next interval's, a retry) thus take turns per rule, each computing its
/// breaches from what the one before committed: a stale evaluation never undoes a newer one.
pub async fn lock_rule(c: &impl GenericClient, rule: Uuid) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtext('vantage_alerts'), hashtext($1::text))",
        &[&rule.to_string()],
    )
    .await?;
    Ok(())
}

/// What one rule's evaluation changed.
#[derive(Debug, Default)]
struct Changes {
    fired: u64,
    resolved: u64,
}

/// The advisory lock an evaluation holds for its whole run, as
/// `pg_try_advisory_xact_lock(hashtext(EVALUATION_LOCK), 0)`: one evaluation at a time in
/// the whole fleet.
pub const EVALUATION_LOCK: &str = "vantage_alerts_evaluation";

/// `alerts.evaluate`: evaluate every enabled rule of every tenant and reconcile the alerts.
///
/// One evaluation runs at a time: a job that finds another evaluation running (one slower
/// than `worker.alert_interval_s`) is done at once, its slot skipped — the running one
/// covers it — rather than waiting for its turn in a worker slot that billing and webhook
/// deliveries need. The lock is a transaction's ([`EVALUATION_LOCK`]) on a connection of
/// its own, open for the whole evaluation: it ends with the evaluation, however that ends
/// (a dropped transaction rolls back; a dead worker's connection closes), never staying
/// with a connection that goes back to the pool.
pub async fn evaluate_job(ctx: &JobContext, job: &Job) -> Result<(), JobError> {
    let mut holder = ctx.pool.get().await?;
    let holder: &mut tokio_postgres::Client = &mut holder;
    let lock = holder.transaction().await?;
    let mine: bool = lock
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtext($1), 0)",
            &[&EVALUATION_LOCK],
        )
        .await?
        .get(0);
    if !mine {
        tracing::warn!(
            job = job.id,
            "alert evaluation skipped: the previous one is still running (an evaluation \
             takes longer than worker.alert_interval_s)"
        );
        return Ok(());
    }
    let outcome = evaluate_all(ctx).await;
    // Releases the lock (were this not reached, dropping the transaction would).
    if let Err(e) = lock.rollback().await {
        tracing::warn!(job = job.id, "releasing the alert evaluation lock: {e}");
    }
    match outcome {
        // A rule that fails every time must not leave a dead letter per interval: the last
        // attempt gives up quietly (logged above); the next interval evaluates it again.
        Err(JobError::Retry { message, .. }) if job.is_last_attempt() => {
            tracing::warn!(
                job = job.id,
                "alert evaluation gives up this interval: {message}"
            );
            Ok(())
        }
        other => other,
    }
}

/// Evaluate every rule, each in a transaction of its own. A rule whose evaluation fails
/// (the database refused a query) is logged and skipped; the others are still evaluated,
/// and the job is then tried again.
async fn evaluate_all(ctx: &JobContext) -> Result<(), JobError> {
    let mut client = ctx.pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    let env = Env {
        now: ctx.now(),
        pool_health_stale_s: i64::try_from(ctx.settings().pool_health_stale_s)
            .unwrap_or(i64::MAX)
            .max(1),
    };
    // Enabled rules, and disabled ones that still have firing alerts (to resolve them).
    let ids: Vec<Uuid> = client
        .query(
            "SELECT r.id FROM alert_rules r
              WHERE r.enabled
                 OR EXISTS (SELECT 1 FROM alerts a WHERE a.rule_id = r.id AND a.state = 'firing')
              ORDER BY r.tenant_id, r.id",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let total = ids.len();
    let mut failed = 0usize;
    let mut first: Option<String> = None;
    for id in ids {
        let Err(e) = evaluate_rule(client, id, &env).await else {
            continue;
        };
        let e = describe(&e);
        failed += 1;
        tracing::warn!(rule = %id, "cannot evaluate alert rule: {e}");
        first.get_or_insert_with(|| format!("rule {id}: {e}"));
        if client.is_closed() {
            return Err(JobError::retry(format!(
                "the database connection was lost evaluating the alert rules ({failed} \
                 failed of {total}; {})",
                first.unwrap_or_default()
            )));
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(JobError::retry(format!(
            "{failed} of {total} alert rules could not be evaluated (the others were); \
             first: {first}"
        ))),
    }
}

/// A database error with the server's message (`db error` alone says little).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// Evaluate the rule `id` and reconcile its alerts, in one transaction: its evaluation, its
/// alerts and their events. A database error rolls all of it back.
async fn evaluate_rule(
    client: &mut tokio_postgres::Client,
    id: Uuid,
    env: &Env,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    lock_rule(&tx, id).await?;
    let Some(row) = tx
        .query_opt(
            "SELECT id, tenant_id, name, kind, params, cooldown_s, enabled
               FROM alert_rules WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(()); // deleted meanwhile
    };
    let rule = Rule {
        id: row.get(0),
        tenant: row.get(1),
        name: row.get(2),
        kind: row.get(3),
        params: row.get(4),
        cooldown_s: row.get(5),
        enabled: row.get(6),
    };
    let breaches = if rule.enabled {
        let params = match RuleParams::parse(&rule.kind, &rule.params) {
            Ok(p) => p,
            Err(problems) => {
                tracing::warn!(rule = %rule.id, ?problems, "alert rule has bad parameters");
                return Ok(());
            }
        };
        match params.breaches(&tx, &rule, env).await {
            Ok(b) => b,
            Err(EvalError::Db(e)) => return Err(e),
            Err(EvalError::Rule(message)) => {
                tracing::warn!(rule = %rule.id, "cannot evaluate alert rule: {message}");
                return Ok(());
            }
        }
    } else {
        Vec::new()
    };
    let changes = reconcile(&tx, &rule, breaches).await?;
    tx.commit().await?;
    let counter = |state: &str, n: u64| {
        if n > 0 {
            METRICS
                .alerts
                .with_label_values(&[&rule.kind, state])
                .inc_by(n);
        }
    };
    counter("fired", changes.fired);
    counter("resolved", changes.resolved);
    Ok(())
}

/// In the caller's transaction (holding [`lock_rule`]): bring the alerts of `rule` in line
/// with its current `breaches`.
async fn reconcile(
    c: &impl GenericClient,
    rule: &Rule,
    breaches: Vec<Breach>,
) -> Result<Changes, tokio_postgres::Error> {
    let mut firing: HashMap<String, (Uuid, f64)> = c
        .query(
            "SELECT dedupe, id, value FROM alerts WHERE rule_id = $1 AND state = 'firing'",
            &[&rule.id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut changes = Changes::default();
    let mut seen = std::collections::HashSet::new();
    for b in breaches {
        if !seen.insert(b.dedupe.clone()) {
            continue;
        }
        match firing.remove(&b.dedupe) {
            Some((id, value)) => {
                if value != b.value {
                    c.execute(
                        "UPDATE alerts SET value = $2, message = $3, details = $4,
                                updated_at = now()
                          WHERE id = $1 AND state = 'firing'",
                        &[&id, &b.value, &b.message, &b.details],
                    )
                    .await?;
                }
            }
            None => {
                if fire(c, rule, &b).await? {
                    changes.fired += 1;
                }
            }
        }
    }
    for (_, (id, _)) in firing {
        if resolve_in(c, id).await? {
            tracing::info!(rule = %rule.id, alert = %id, "alert resolved");
            changes.resolved += 1;
        }
    }
    Ok(changes)
}

/// In the caller's transaction: fire an alert for `b` with its events, unless one fires
/// already or one was resolved within the cooldown. Whether it fired.
async fn fire(
    c: &impl GenericClient,
    rule: &Rule,
    b: &Breach,
) -> Result<bool, tokio_postgres::Error> {
    let cooldown = i64::from(rule.cooldown_s);
    let row = c
        .query_opt(
            "INSERT INTO alerts (rule_id, tenant_id, kind, subject, dedupe, state, value,
                                 threshold, message, details)
             SELECT r.id, r.tenant_id, r.kind, $2, $3, 'firing', $4, $5, $6, $7
               FROM alert_rules r
              WHERE r.id = $1 AND r.enabled
                AND NOT EXISTS (
                    SELECT 1 FROM alerts p
                     WHERE p.rule_id = $1 AND p.dedupe = $3 AND p.state = 'resolved'
                       AND p.resolved_at > now() - $8::bigint * interval '1 second')
             ON CONFLICT (rule_id, dedupe) WHERE state = 'firing' DO NOTHING
             RETURNING id",
            &[
                &rule.id,
                &b.subject,
                &b.dedupe,
                &b.value,
                &b.threshold,
                &b.message,
                &b.details,
                &cooldown,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let view = AlertView::load(c, row.get(0)).await?;
    let data = view.event_data();
    events::emit(c, rule.tenant, events::ALERT_FIRED, data.clone()).await?;
    if let Some(extra) = kind_event(&rule.kind) {
        events::emit(c, rule.tenant, extra, data).await?;
    }
    tracing::info!(rule = %rule.id, alert = %view.id, dedupe = %b.dedupe, "alert fired: {}", b.message);
    Ok(true)
}

/// In the caller's transaction: resolve the alert `id` if it still fires and emit
/// `alert.resolved`. Whether it did.
async fn resolve_in(c: &impl GenericClient, id: Uuid) -> Result<bool, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), updated_at = now()
              WHERE id = $1 AND state = 'firing'
             RETURNING tenant_id",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let tenant: Uuid = row.get(0);
    let view = AlertView::load(c, id).await?;
    events::emit(c, tenant, events::ALERT_RESOLVED, view.event_data()).await?;
    Ok(true)
}

/// In the caller's transaction: resolve every firing alert of `rule` (it is being deleted),
/// each with its `alert.resolved` event. How many.
pub async fn resolve_rule(
    c: &impl GenericClient,
    rule: Uuid,
    kind: &str,
) -> Result<usize, tokio_postgres::Error> {
    lock_rule(c, rule).await?;
    let ids: Vec<Uuid> = c
        .query(
            "SELECT id FROM alerts WHERE rule_id = $1 AND state = 'firing' ORDER BY id",
            &[&rule],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut n = 0;
    for id in ids {
        if resolve_in(c, id).await? {
            n += 1;
        }
    }
    // Counted once committed would be exact; a rolled-back delete is rare enough.
    if n > 0 {
        METRICS
            .alerts
            .with_label_values(&[kind, "resolved"])
            .inc_by(n as u64);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(r: Result<RuleParams, Vec<Field>>) -> Vec<String> {
        r.err().unwrap().into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn defaults_are_filled_in_and_numbers_stay_whole() {
        let p = RuleParams::parse("quota_used", &json!({})).unwrap();
        assert_eq!(p.to_json(), json!({"thresholds": [50, 80, 100]}));
        let p = RuleParams::parse("violations", &json!({"per_minute": 2.5})).unwrap();
        assert_eq!(
            p.to_json(),
            json!({"per_minute": 2.5, "by": "key", "mode": "enforce", "window_s": 60})
        );
        let p = RuleParams::parse("key_expiring", &Value::Null).unwrap();
        assert_eq!(p.to_json(), json!({"days": 7}));
        // What is stored parses back to itself.
        for (kind, params) in [
            ("error_rate", json!({"percent": 5})),
            ("pool_unhealthy", json!({"origin_id": "o1"})),
            (
                "quota_used",
                json!({"thresholds": [90.5], "quota": "monthly"}),
            ),
        ] {
            let p = RuleParams::parse(kind, &params).unwrap();
            assert_eq!(RuleParams::parse(kind, &p.to_json()).unwrap(), p);
        }
    }

    #[test]
    fn problems_are_named_by_their_path() {
        assert_eq!(paths(RuleParams::parse("nope", &json!({}))), ["kind"]);
        assert_eq!(
            paths(RuleParams::parse("quota_used", &json!([1]))),
            ["params"]
        );
        assert_eq!(
            paths(RuleParams::parse(
                "quota_used",
                &json!({"thresholds": [50, -1, 50]})
            )),
            ["params.thresholds[1]", "params.thresholds[2]"]
        );
        assert_eq!(
            paths(RuleParams::parse(
                "quota_used",
                &json!({"thresholds": [50, "x"]})
            )),
            ["params.thresholds[1]"]
        );
        assert_eq!(
            paths(RuleParams::parse("violations", &json!({"by": "key"}))),
            ["params.per_minute"]
        );
        assert_eq!(
            paths(RuleParams::parse(
                "violations",
                &json!({"per_minute": 1, "by": "user", "window_s": 90, "kind": "x"})
            )),
            ["params.by", "params.kind", "params.window_s"]
        );
        assert_eq!(
            paths(RuleParams::parse(
                "violations",
                &json!({"per_minute": 1, "window_s": 90, "kind": "x", "mode": "y"})
            )),
            ["params.kind", "params.mode", "params.window_s"]
        );
        assert_eq!(
            paths(RuleParams::parse(
                "error_rate",
                &json!({"percent": 101, "min_requests": 0})
            )),
            ["params.percent", "params.min_requests"]
        );
        assert_eq!(
            paths(RuleParams::parse(
                "key_expiring",
                &json!({"days": 0, "x": 1})
            )),
            ["params.x"]
        );
        assert_eq!(
            paths(RuleParams::parse("key_expiring", &json!({"days": 400}))),
            ["params.days"]
        );
    }

    #[test]
    fn numbers_are_shown_briefly() {
        assert_eq!(show(85.0), "85");
        assert_eq!(show(22.2222), "22.2");
        assert_eq!(num(80.0), json!(80));
        assert_eq!(num(80.5), json!(80.5));
    }
}
