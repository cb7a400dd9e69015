//! `key_expiring`: an active API key of the tenant expires within `days` days.
//!
//! One alert per key; it resolves when the key no longer expires within the window (it was
//! extended, revoked or deleted) or has expired. A key that was rotated (another key names
//! it `rotated_from`) is expected to expire: it never fires, and its alert resolves.

use super::{field, show, Breach, EvalError, Params, Rule};
use crate::error::Field;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::GenericClient;
use utoipa::ToSchema;

pub const KIND: &str = "key_expiring";

/// Parameters of a `key_expiring` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyExpiringParams {
    /// Fires for keys that expire within this many days (1-365). Default `7`.
    #[serde(default = "default_days")]
    pub days: i64,
}

fn default_days() -> i64 {
    7
}

impl Params for KeyExpiringParams {
    const FIELDS: &'static [&'static str] = &["days"];

    fn check(&self, fields: &mut Vec<Field>) {
        if !(1..=365).contains(&self.days) {
            fields.push(field("days", "must be from 1 to 365"));
        }
    }
}

pub(super) async fn evaluate(
    c: &impl GenericClient,
    rule: &Rule,
    p: &KeyExpiringParams,
) -> Result<Vec<Breach>, EvalError> {
    let rows = c
        .query(
            "SELECT id::text, name,
                    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    EXTRACT(EPOCH FROM expires_at - now())::float8 / 86400
               FROM api_keys k
              WHERE tenant_id = $1 AND status = 'active'
                AND expires_at > now() AND expires_at <= now() + $2::bigint * interval '1 day'
                AND NOT EXISTS (SELECT 1 FROM api_keys n WHERE n.rotated_from = k.id)
              ORDER BY id",
            &[&rule.tenant, &p.days],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            let name: String = r.get(1);
            let expires_at: String = r.get(2);
            let days_left: f64 = r.get(3);
            let subject = format!("key:{id}");
            Breach {
                dedupe: subject.clone(),
                subject,
                value: days_left,
                threshold: p.days as f64,
                message: format!(
                    "API key '{name}' expires in {} days ({expires_at})",
                    show(days_left)
                ),
                details: json!({
                    "key_id": id,
                    "key_name": name,
                    "expires_at": expires_at,
                    "days_left": days_left,
                }),
            }
        })
        .collect())
}
