//! Billing records (`billing_records`, written by the workers), their export as CSV or
//! JSON, and billing a period on demand.

use crate::auth::Principal;
use crate::billing::{load_plan, period_name};
use crate::error::{parse, path_id, uuid_param, ApiError, ApiQuery, ErrorBody, JsonObject};
use crate::worker::queue::enqueue;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vantage_model::Calendar;

/// Most records of one answer.
pub const MAX_RECORDS: i64 = 10_000;
/// Most records of one export.
pub const MAX_EXPORT: i64 = 100_000;

/// One billing record: a subject's bill for one period of a plan. Money is in integer
/// minor units of `currency` (cents for EUR).
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingRecord {
    pub id: String,
    pub tenant_id: String,
    /// `key:<api key id>` (a key on the plan), or `tenant` (the tenant on its plan, for all
    /// of its usage).
    pub subject: String,
    pub plan_id: String,
    pub plan_name: String,
    /// The plan's IANA time zone, in which the period begins and ends.
    pub time_zone: String,
    /// `hour`, `day` or `month`.
    pub period: String,
    /// The period's name in the plan's zone. Example: `2026-11`.
    pub period_label: String,
    #[schema(format = DateTime)]
    pub period_start: String,
    /// Exclusive.
    #[schema(format = DateTime)]
    pub period_end: String,
    /// 1 for the original; each correction has the next.
    pub revision: i32,
    /// `original`, or `correction` (late usage changed the figures; `delta_total` is the
    /// difference to the revision before).
    pub kind: String,
    /// ISO 4217. Example: `EUR`.
    pub currency: String,
    pub included_units: i64,
    pub used_units: i64,
    /// `max(0, used_units - included_units)`.
    pub overage_units: i64,
    /// Price of `per_units` overage units, in minor units.
    pub unit_price: i64,
    pub per_units: i64,
    pub base_fee: i64,
    /// `ceil(overage_units * unit_price / per_units)`.
    pub overage_amount: i64,
    /// `base_fee + overage_amount`.
    pub total: i64,
    /// `total` minus the previous revision's total (the whole total for revision 1).
    pub delta_total: i64,
    /// Requests of the subject in the period (including those no quota counted).
    pub requests: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

const COLUMNS: &str = "id::text, tenant_id::text, subject, plan_id::text, plan_name, time_zone, \
    period, period_label, to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
    to_char(period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), revision, kind, \
    currency, included_units, used_units, overage_units, unit_price, per_units, base_fee, \
    overage_amount, total, delta_total, requests, \
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

impl BillingRecord {
    fn from_row(r: &tokio_postgres::Row) -> BillingRecord {
        BillingRecord {
            id: r.get(0),
            tenant_id: r.get(1),
            subject: r.get(2),
            plan_id: r.get(3),
            plan_name: r.get(4),
            time_zone: r.get(5),
            period: r.get(6),
            period_label: r.get(7),
            period_start: r.get(8),
            period_end: r.get(9),
            revision: r.get(10),
            kind: r.get(11),
            currency: r.get(12),
            included_units: r.get(13),
            used_units: r.get(14),
            overage_units: r.get(15),
            unit_price: r.get(16),
            per_units: r.get(17),
            base_fee: r.get(18),
            overage_amount: r.get(19),
            total: r.get(20),
            delta_total: r.get(21),
            requests: r.get(22),
            created_at: r.get(23),
        }
    }
}

/// `?tenant_id=&plan_id=&subject=&period=&latest=&limit=` of the billing lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// Only this tenant's records (a tenant_admin sees only its own; another is 404).
    #[param(value_type = Option<Uuid>)]
    tenant_id: Option<String>,
    /// Only this plan's records.
    #[param(value_type = Option<Uuid>)]
    plan_id: Option<String>,
    /// Only this subject. Example: `key:6f1c...`.
    subject: Option<String>,
    /// Only this period, by its name in the plan's zone. Example: `2026-11`.
    period: Option<String>,
    /// Only the latest revision of each subject's record (default true); false lists
    /// originals and corrections.
    latest: Option<bool>,
    /// Most records (1-10000, default 1000), newest period first.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// `?...&format=csv|json` of the export.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    #[param(value_type = Option<Uuid>)]
    tenant_id: Option<String>,
    #[param(value_type = Option<Uuid>)]
    plan_id: Option<String>,
    /// The period to export, by its name in the plans' zones (required). Example: `2026-11`.
    period: Option<String>,
    /// `csv` (default) or `json`.
    format: Option<String>,
}

/// The answer of `GET /billing/records`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordList {
    /// Newest period first, then tenant, plan, subject and revision.
    pub records: Vec<BillingRecord>,
    /// More matched than `limit`.
    pub truncated: bool,
}

/// The JSON export of a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingExport {
    pub period: String,
    /// The latest revision of each subject's record.
    pub records: Vec<BillingRecord>,
    /// Sum of `total` per tenant and currency.
    pub totals: Vec<ExportTotal>,
}

/// What one tenant bills in one currency for the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportTotal {
    pub tenant_id: String,
    pub currency: String,
    pub records: i64,
    /// Minor units.
    pub total: i64,
}

/// A text cell a spreadsheet must not take for a formula: one starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return gets a leading `'`.
fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

async fn select(
    st: &AppState,
    tenant: Option<Uuid>,
    plan: Option<Uuid>,
    subject: Option<&str>,
    period: Option<&str>,
    latest: bool,
    limit: i64,
) -> Result<Vec<BillingRecord>, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM billing_records b
          WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR plan_id = $2)
            AND ($3::text IS NULL OR subject = $3) AND ($4::text IS NULL OR period_label = $4)
            AND (NOT $5 OR revision = (SELECT max(revision) FROM billing_records l
                                         WHERE l.tenant_id = b.tenant_id AND l.subject = b.subject
                                           AND l.plan_id = b.plan_id
                                           AND l.period_start = b.period_start
                                           AND l.period_end = b.period_end))
          ORDER BY period_start DESC, tenant_id, plan_id, subject, revision
          LIMIT $6"
    );
    let c = st.pool.get().await?;
    let rows = c
        .query(&sql, &[&tenant, &plan, &subject, &period, &latest, &limit])
        .await?;
    Ok(rows.iter().map(BillingRecord::from_row).collect())
}

/// `GET /billing/records`.
#[utoipa::path(
    get,
    path = "/api/v1/billing/records",
    tag = "billing",
    operation_id = "list_billing_records",
    summary = "Billing records",
    description = "The records the workers wrote at the end of each billed plan's periods: by \
        default the latest revision of each subject's record (a correction replaces the figures \
        of the revision before it); `latest=false` lists every revision. Money is in integer \
        minor units.",
    params(RecordQuery),
    responses(
        (status = 200, description = "The records", body = RecordList),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 404, description = "`tenant_id` names a tenant the caller may not see", body = ErrorBody),
    )
)]
pub async fn list(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<RecordQuery>,
) -> Result<Json<RecordList>, ApiError> {
    let tenant = p.scope(uuid_param(&q.tenant_id, "tenant_id")?)?;
    let plan = uuid_param(&q.plan_id, "plan_id")?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_RECORDS).contains(&limit) {
        return Err(ApiError::bad_parameter("limit", "must be 1-10000"));
    }
    let mut records = select(
        &st,
        tenant,
        plan,
        q.subject.as_deref(),
        q.period.as_deref(),
        q.latest.unwrap_or(true),
        limit + 1,
    )
    .await?;
    let truncated = records.len() as i64 > limit;
    records.truncate(limit as usize);
    Ok(Json(RecordList { records, truncated }))
}

/// `GET /billing/records/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/billing/records/{id}",
    tag = "billing",
    operation_id = "get_billing_record",
    summary = "One billing record",
    params(("id" = Uuid, Path, description = "The record's id")),
    responses(
        (status = 200, description = "The record", body = BillingRecord),
        (status = 404, description = "No such record, or another tenant's", body = ErrorBody),
    )
)]
pub async fn get(
    State(st): State<Arc<AppState>>,
    p: Principal,
    Path(raw): Path<String>,
) -> Result<Json<BillingRecord>, ApiError> {
    let id = path_id(&raw, "billing record")?;
    let c = st.pool.get().await?;
    let row = c
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM billing_records
                  WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
            ),
            &[&id, &p.tenant],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("billing record"))?;
    Ok(Json(BillingRecord::from_row(&row)))
}

/// `GET /billing/export`.
#[utoipa::path(
    get,
    path = "/api/v1/billing/export",
    tag = "billing",
    operation_id = "export_billing",
    summary = "Export a period's billing records",
    description = "The latest revision of every subject's record of one period (`period`, by \
        its name in the plans' time zones, e.g. `2026-11`), as CSV (one record per line, a \
        header line first) or JSON (with totals per tenant and currency).",
    params(ExportQuery),
    responses(
        (status = 200, description = "CSV", body = String, content_type = "text/csv"),
        (status = 200, description = "JSON", body = BillingExport),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
pub async fn export(
    State(st): State<Arc<AppState>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let tenant = p.scope(uuid_param(&q.tenant_id, "tenant_id")?)?;
    let plan = uuid_param(&q.plan_id, "plan_id")?;
    let period = q
        .period
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_parameter("period", "is required, e.g. 2026-11"))?;
    let records = select(&st, tenant, plan, None, Some(period), true, MAX_EXPORT + 1).await?;
    if records.len() as i64 > MAX_EXPORT {
        return Err(ApiError::bad_parameter(
            "period",
            "has more than 100000 records: export it per tenant_id or plan_id",
        ));
    }
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let head = [
                "id",
                "tenant_id",
                "subject",
                "plan_id",
                "plan_name",
                "time_zone",
                "period",
                "period_label",
                "period_start",
                "period_end",
                "revision",
                "kind",
                "currency",
                "included_units",
                "used_units",
                "overage_units",
                "unit_price",
                "per_units",
                "base_fee",
                "overage_amount",
                "total",
                "delta_total",
                "requests",
            ];
            let csv_err = |e: csv::Error| ApiError::Internal(format!("csv: {e}"));
            w.write_record(head).map_err(csv_err)?;
            for r in &records {
                w.write_record([
                    r.id.clone(),
                    r.tenant_id.clone(),
                    cell(&r.subject),
                    r.plan_id.clone(),
                    cell(&r.plan_name),
                    r.time_zone.clone(),
                    r.period.clone(),
                    r.period_label.clone(),
                    r.period_start.clone(),
                    r.period_end.clone(),
                    r.revision.to_string(),
                    r.kind.clone(),
                    r.currency.clone(),
                    r.included_units.to_string(),
                    r.used_units.to_string(),
                    r.overage_units.to_string(),
                    r.unit_price.to_string(),
                    r.per_units.to_string(),
                    r.base_fee.to_string(),
                    r.overage_amount.to_string(),
                    r.total.to_string(),
                    r.delta_total.to_string(),
                    r.requests.to_string(),
                ])
                .map_err(csv_err)?;
            }
            let body = w
                .into_inner()
                .map_err(|e| ApiError::Internal(format!("csv: {e}")))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!(
                            "attachment; filename=\"billing-{}.csv\"",
                            period.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
                        ),
                    ),
                ],
                body,
            )
                .into_response())
        }
        "json" => {
            let mut totals: std::collections::BTreeMap<(String, String), (i64, i64)> =
                Default::default();
            for r in &records {
                let t = totals
                    .entry((r.tenant_id.clone(), r.currency.clone()))
                    .or_default();
                t.0 += 1;
                t.1 = t.1.saturating_add(r.total);
            }
            Ok(Json(BillingExport {
                period: period.to_string(),
                records,
                totals: totals
                    .into_iter()
                    .map(|((tenant_id, currency), (records, total))| ExportTotal {
                        tenant_id,
                        currency,
                        records,
                        total,
                    })
                    .collect(),
            })
            .into_response())
        }
        _ => Err(ApiError::bad_parameter("format", "must be csv or json")),
    }
}

/// The body of `POST /billing/runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBillingRun {
    /// The billed plan.
    #[schema(value_type = Uuid)]
    pub plan_id: String,
    /// The ended period to bill, by its name in the plan's zone: `2026-11` (month),
    /// `2026-11-28` (day), `2026-11-28T13` (hour).
    pub period: String,
}

/// The answer of `POST /billing/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingRun {
    /// The job that bills the period (see `GET /jobs/{id}`).
    pub job_id: i64,
    pub plan_id: String,
    pub period: String,
    #[schema(format = DateTime)]
    pub period_start: String,
    #[schema(format = DateTime)]
    pub period_end: String,
}

/// `POST /billing/runs`: bill an ended period now.
#[utoipa::path(
    post,
    path = "/api/v1/billing/runs",
    tag = "billing",
    operation_id = "run_billing",
    summary = "Bill a period on demand",
    description = "Queues a job that bills one ended period of a billed plan, as the workers do \
        at each period's end. Billing is idempotent: a period billed before gets no new record \
        unless its usage changed since, which gives a correction record.",
    request_body = NewBillingRun,
    responses(
        (status = 202, description = "Queued", body = BillingRun),
        (status = 404, description = "No such plan, or another tenant's", body = ErrorBody),
        (status = 422, description = "Not billed, an unknown period, or one that has not ended", body = ErrorBody),
    )
)]
pub async fn run(
    State(st): State<Arc<AppState>>,
    p: Principal,
    JsonObject(obj): JsonObject,
) -> Result<Response, ApiError> {
    let body: NewBillingRun = parse(serde_json::Value::Object(obj))?;
    let plan_id = Uuid::parse_str(&body.plan_id)
        .map_err(|_| ApiError::invalid_field("plan_id", "must be an id (UUID)"))?;
    let c = st.pool.get().await?;
    let owner: Option<Uuid> = c
        .query_opt("SELECT tenant_id FROM plans WHERE id = $1", &[&plan_id])
        .await?
        .map(|r| r.get(0));
    let Some(owner) = owner.filter(|t| p.sees(&t.to_string())) else {
        return Err(ApiError::not_found("plan"));
    };
    let plan = load_plan(&**c, plan_id).await?.ok_or_else(|| {
        ApiError::invalid_field("plan_id", "the plan is not billed (it has no `billing`)")
    })?;
    let cal = Calendar::new(&plan.time_zone)
        .map_err(|e| ApiError::Internal(format!("stored plan time zone: {e}")))?;
    let w = cal
        .parse_label(plan.billing.period, &body.period)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "period",
                format!(
                    "must name a {} of the plan's zone like {}",
                    period_name(plan.billing.period),
                    match plan.billing.period {
                        vantage_model::QuotaPeriod::Month => "2026-11",
                        vantage_model::QuotaPeriod::Day => "2026-11-28",
                        vantage_model::QuotaPeriod::Hour => "2026-11-28T13",
                    }
                ),
            )
        })?;
    if w.end > crate::worker::unix_now() {
        return Err(ApiError::invalid_field(
            "period",
            "has not ended yet; a period is billed once it is over",
        ));
    }
    if w.start < plan.billing_since {
        return Err(ApiError::invalid_field(
            "period",
            format!(
                "began before the plan was billed (billed since {}); only later periods are",
                crate::billing::rfc3339(plan.billing_since)
            ),
        ));
    }
    // A job of its own each time (billing is idempotent; an operator may ask again).
    let job = crate::worker::schedule::close_job(plan.id, owner, w.start).dedupe(format!(
        "{}:{}:{}:run:{}",
        crate::worker::kinds::BILLING_CLOSE,
        plan.id,
        w.start,
        Uuid::new_v4()
    ));
    let job_id = enqueue(&**c, &job)
        .await?
        .ok_or_else(|| ApiError::Internal("the job was not created".into()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BillingRun {
            job_id,
            plan_id: plan.id.to_string(),
            period: body.period,
            period_start: crate::billing::rfc3339(w.start),
            period_end: crate::billing::rfc3339(w.end),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_are_never_formulas() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("-pro"), "'-pro");
        assert_eq!(cell("@sum"), "'@sum");
        assert_eq!(cell("pro"), "pro");
        assert_eq!(cell("key:1"), "key:1");
    }
}
