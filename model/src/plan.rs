//! Plans: rate-limit policies and calendar quotas that API keys, JWT subjects and tenants
//! are bound to, and the calendar arithmetic of a quota's period.
//!
//! A quota counts requests (or a route's `cost` per request) over a calendar period — an
//! hour, a day or a month in the plan's IANA time zone — and starts again at the period's
//! boundary. Both the proxy (which counts) and the admin service (which reports) derive the
//! period and the counter's key here, so they always agree.

use crate::RateLimitPolicy;
use serde::{Deserialize, Serialize};

/// A plan of a tenant (e.g. free, pro, enterprise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Example: `acme-pro`.
    #[cfg_attr(feature = "openapi", schema(read_only))]
    pub id: String,
    /// Owning tenant. Example: `acme`.
    pub tenant_id: String,
    /// Unique within the tenant; a JWT's plan claim names a plan by it. Example: `pro`.
    pub name: String,
    /// IANA time zone in which the quotas' hours, days and months begin.
    /// Example: `Europe/Berlin`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Rate limits of every subject on the plan (on top of the route's and the tenant's).
    /// Example: `[{name: pro-burst, algorithm: {type: token_bucket, rate: 50, burst: 100},
    /// subject: {by: api_key}}]`.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitPolicy>,
    /// Calendar quotas. Example: `[{name: monthly, limit: 100000, period: month}]`.
    #[serde(default)]
    pub quotas: Vec<Quota>,
}

fn utc() -> String {
    "UTC".into()
}

/// A calendar quota of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Name shown in `RateLimit-Policy` and in usage reports. Example: `monthly`.
    pub name: String,
    /// Units (requests, or the routes' `quota.cost`) per period. Example: `100000`.
    pub limit: i64,
    /// The calendar period, required. Example: `month`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<QuotaPeriod>,
    /// Only the routes of this group count (`routes[].quota.group`); absent: every route of
    /// the tenant that does not opt out. Example: `search`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Past the limit: `block` (429 `quota_exceeded`) or `allow` (served, counted as
    /// overage). Example: `allow`.
    #[serde(default)]
    pub overage: Overage,
    /// `shadow` computes, counts and records the decision but serves the request.
    /// Example: `shadow`.
    #[serde(default)]
    pub mode: EnforcementMode,
    /// When Redis cannot answer: `allow`, `deny` (503) or `local` (count in this proxy).
    /// Example: `deny`.
    #[serde(default)]
    pub on_redis_error: crate::OnRedisError,
}

/// A quota's calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
}

/// What happens past a quota's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overage {
    /// Refuse with 429 `quota_exceeded` until the period ends.
    #[default]
    Block,
    /// Serve, and count the units past the limit as overage (for billing).
    Allow,
}

/// Whether a policy's refusals are real.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EnforcementMode {
    /// Refusals are sent.
    #[default]
    Enforce,
    /// Decisions are computed, counted and recorded as violations, and the request is
    /// served as if it passed.
    Shadow,
}

impl EnforcementMode {
    /// `enforce` / `shadow`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Enforce => "enforce",
            EnforcementMode::Shadow => "shadow",
        }
    }
}

/// How a route takes part in its tenant's plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RouteQuota {
    /// Units one request uses of every quota that counts this route. Example: `5`.
    pub cost: i64,
    /// The quota group of the route (quotas with this `group` count it). Example: `search`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The plans' rate limits and quotas do not apply to this route (its own and the
    /// tenant's rate limits still do). Example: `true` for a health endpoint.
    pub exempt: bool,
}

impl Default for RouteQuota {
    fn default() -> Self {
        RouteQuota {
            cost: 1,
            group: None,
            exempt: false,
        }
    }
}

impl RouteQuota {
    /// Nothing differs from the default.
    pub fn is_default(&self) -> bool {
        *self == RouteQuota::default()
    }
}

/// One period of a quota: `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodWindow {
    pub start: i64,
    pub end: i64,
}

impl PeriodWindow {
    /// Seconds from `now` to the period's end (at least 1).
    pub fn seconds_left(&self, now: i64) -> u64 {
        (self.end - now).max(1) as u64
    }

    /// Length of the period in seconds (a month is 28 to 31 days; a day 23 to 25 hours
    /// across a daylight-saving change).
    pub fn length(&self) -> u64 {
        (self.end - self.start).max(1) as u64
    }
}

/// A quota's time zone, resolved once (from the tz database built into the binary, so every
/// machine agrees).
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: jiff::tz::TimeZone,
}

impl Calendar {
    /// The calendar of an IANA zone name (`UTC`, `Europe/Berlin`).
    pub fn new(zone: &str) -> Result<Calendar, String> {
        jiff::tz::TimeZone::get(zone)
            .map(|tz| Calendar { tz })
            .map_err(|_| format!("'{zone}' is not an IANA time zone (e.g. Europe/Berlin)"))
    }

    /// The period of `period` that contains `now` (Unix seconds).
    pub fn window(&self, period: QuotaPeriod, now: i64) -> PeriodWindow {
        use jiff::ToSpan;
        let compute = || -> Result<PeriodWindow, jiff::Error> {
            let local = jiff::Timestamp::from_second(now)?.to_zoned(self.tz.clone());
            let (start, end) = match period {
                QuotaPeriod::Hour => {
                    let start = local
                        .with()
                        .minute(0)
                        .second(0)
                        .subsec_nanosecond(0)
                        .build()?;
                    let end = start.checked_add(1.hour())?;
                    (start, end)
                }
                QuotaPeriod::Day => {
                    let start = local.start_of_day()?;
                    let end = start.tomorrow()?.start_of_day()?;
                    (start, end)
                }
                QuotaPeriod::Month => {
                    let start = local.first_of_month()?.start_of_day()?;
                    let end = start.checked_add(1.month())?.start_of_day()?;
                    (start, end)
                }
            };
            Ok(PeriodWindow {
                start: start.timestamp().as_second(),
                end: end.timestamp().as_second(),
            })
        };
        // Only out-of-range instants fail (years beyond 9999): fall back to fixed lengths.
        compute().unwrap_or_else(|_| {
            let len = match period {
                QuotaPeriod::Hour => 3600,
                QuotaPeriod::Day => 86_400,
                QuotaPeriod::Month => 30 * 86_400,
            };
            PeriodWindow {
                start: now - now.rem_euclid(len),
                end: now - now.rem_euclid(len) + len,
            }
        })
    }
}

/// Who a plan's quota counts: the API key, the JWT subject, or the whole tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QuotaSubject {
    Key(String),
    User(String),
    Tenant,
}

impl QuotaSubject {
    /// `key:<id>`, `user:<sub>` or `tenant`: the subject part of counter keys and usage rows.
    pub fn label(&self) -> String {
        match self {
            QuotaSubject::Key(id) => format!("key:{id}"),
            QuotaSubject::User(sub) => format!("user:{sub}"),
            QuotaSubject::Tenant => "tenant".into(),
        }
    }
}

/// The Redis key of a quota counter for one subject and period:
/// `<prefix>:q:{<tenant>\x1f<subject>}:<plan>\x1f<quota>:<period start>`. The hash tag keeps
/// all of a subject's counters on one Redis Cluster slot, so one script decides them all.
pub fn quota_counter_key(
    redis_prefix: &str,
    tenant: &str,
    plan_id: &str,
    quota: &str,
    subject: &str,
    period_start: i64,
) -> String {
    format!("{redis_prefix}:q:{{{tenant}\x1f{subject}}}:{plan_id}\x1f{quota}:{period_start}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn a_month_in_berlin_begins_at_local_midnight() {
        let berlin = Calendar::new("Europe/Berlin").unwrap();
        // 31 Jan 22:59:59 UTC is 23:59:59 in Berlin: still January.
        let w = berlin.window(QuotaPeriod::Month, unix("2027-01-31T22:59:59Z"));
        assert_eq!(w.start, unix("2026-12-31T23:00:00Z"));
        assert_eq!(w.end, unix("2027-01-31T23:00:00Z"));
        assert_eq!(w.seconds_left(unix("2027-01-31T22:59:59Z")), 1);
        // One second later it is February in Berlin (and still January in UTC).
        let feb = berlin.window(QuotaPeriod::Month, unix("2027-01-31T23:00:00Z"));
        assert_eq!(feb.start, w.end);
        assert_eq!(feb.end, unix("2027-02-28T23:00:00Z"));
        // March has a daylight-saving change: it ends at 22:00 UTC.
        let mar = berlin.window(QuotaPeriod::Month, unix("2027-03-15T12:00:00Z"));
        assert_eq!(mar.end, unix("2027-03-31T22:00:00Z"));
    }

    #[test]
    fn a_key_created_on_the_17th_has_until_the_1st() {
        let utc = Calendar::new("UTC").unwrap();
        let now = unix("2026-11-17T10:00:00Z");
        let w = utc.window(QuotaPeriod::Month, now);
        assert_eq!(w.end, unix("2026-12-01T00:00:00Z"));
        assert_eq!(w.seconds_left(now), 13 * 86_400 + 14 * 3600);
    }

    #[test]
    fn days_and_hours_follow_the_zone() {
        let kolkata = Calendar::new("Asia/Kolkata").unwrap(); // UTC+5:30
        let w = kolkata.window(QuotaPeriod::Hour, unix("2026-06-01T10:45:00Z"));
        assert_eq!(w.start, unix("2026-06-01T10:30:00Z"));
        assert_eq!(w.length(), 3600);
        let ny = Calendar::new("America/New_York").unwrap();
        // The day of the autumn change has 25 hours.
        let d = ny.window(QuotaPeriod::Day, unix("2026-11-01T12:00:00Z"));
        assert_eq!(d.start, unix("2026-11-01T04:00:00Z"));
        assert_eq!(d.length(), 25 * 3600);
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(Calendar::new("Mars/Olympus").is_err());
        assert!(Calendar::new("").is_err());
    }
}
