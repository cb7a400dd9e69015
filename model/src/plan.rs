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
    /// What a subject on the plan pays per period; absent: the plan is not billed.
    /// Example: `{currency: EUR, period: month, base_fee: 4900, included_units: 100000,
    /// unit_price: 50, per_units: 1000}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<PlanBilling>,
}

/// The price of a plan. Money is in integer minor units of `currency` (cents for EUR, yen
/// for JPY), never fractions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanBilling {
    /// ISO 4217 code. Example: `EUR`.
    pub currency: String,
    /// The billing period, in the plan's time zone. Example: `month`.
    #[serde(default = "month")]
    pub period: QuotaPeriod,
    /// Charged per subject and period, in minor units. Example: `4900` (49.00 EUR).
    #[serde(default)]
    pub base_fee: i64,
    /// Units of the period that the base fee covers. Example: `100000`.
    #[serde(default)]
    pub included_units: i64,
    /// Price of `per_units` overage units, in minor units. Example: `50`.
    #[serde(default)]
    pub unit_price: i64,
    /// How many overage units `unit_price` buys. Example: `1000` (0.50 EUR per 1000 units).
    #[serde(default = "one")]
    pub per_units: i64,
}

fn month() -> QuotaPeriod {
    QuotaPeriod::Month
}

fn one() -> i64 {
    1
}

/// The arithmetic of one billing record: every amount in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub included_units: i64,
    pub used_units: i64,
    /// `used_units - included_units`, at least 0.
    pub overage_units: i64,
    /// `ceil(overage_units * unit_price / per_units)`: a started block of `per_units` is
    /// charged in proportion, rounded up to the next minor unit.
    pub overage_amount: i64,
    pub base_fee: i64,
    /// `base_fee + overage_amount`.
    pub total: i64,
}

impl PlanBilling {
    /// What `used_units` cost in one period (saturating far beyond any real bill).
    pub fn charge(&self, used_units: i64) -> Charge {
        let used = used_units.max(0);
        let overage = (used - self.included_units.max(0)).max(0);
        let per = i128::from(self.per_units.max(1));
        let amount = (i128::from(overage) * i128::from(self.unit_price.max(0)) + per - 1) / per;
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        Charge {
            included_units: self.included_units,
            used_units: used,
            overage_units: overage,
            overage_amount: amount,
            base_fee: self.base_fee,
            total: self.base_fee.saturating_add(amount),
        }
    }
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

impl Calendar {
    /// The name of the period that starts at `start`, in the calendar's zone: `2026-11` for
    /// a month, `2026-11-28` for a day, `2026-11-28T13` for an hour.
    pub fn label(&self, period: QuotaPeriod, start: i64) -> String {
        let Ok(ts) = jiff::Timestamp::from_second(start) else {
            return start.to_string();
        };
        let local = ts.to_zoned(self.tz.clone());
        match period {
            QuotaPeriod::Month => local.strftime("%Y-%m").to_string(),
            QuotaPeriod::Day => local.strftime("%Y-%m-%d").to_string(),
            QuotaPeriod::Hour => local.strftime("%Y-%m-%dT%H").to_string(),
        }
    }

    /// The period before the one that contains `now`.
    pub fn previous_window(&self, period: QuotaPeriod, now: i64) -> PeriodWindow {
        let current = self.window(period, now);
        self.window(period, current.start - 1)
    }

    /// The period whose label is `label` (as [`Calendar::label`] writes it).
    pub fn parse_label(&self, period: QuotaPeriod, label: &str) -> Option<PeriodWindow> {
        let text = match period {
            QuotaPeriod::Month => format!("{label}-01T00:00:00"),
            QuotaPeriod::Day => format!("{label}T00:00:00"),
            QuotaPeriod::Hour => format!("{label}:00:00"),
        };
        let civil: jiff::civil::DateTime = text.parse().ok()?;
        let at = civil.to_zoned(self.tz.clone()).ok()?;
        // Mid-period, so a daylight-saving gap at the start cannot move it to the one before.
        let probe = at.timestamp().as_second() + 1800;
        let w = self.window(period, probe);
        (self.label(period, w.start) == label).then_some(w)
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
    fn billing_rounds_up_to_the_minor_unit_and_never_uses_floats() {
        let b = PlanBilling {
            currency: "EUR".into(),
            period: QuotaPeriod::Month,
            base_fee: 4900,
            included_units: 1000,
            unit_price: 50,
            per_units: 1000,
        };
        // Within the included units: the base fee only.
        assert_eq!(b.charge(1000).total, 4900);
        assert_eq!(b.charge(1000).overage_units, 0);
        // 1 unit over: 50/1000 of a cent, rounded up to 1 cent.
        let c = b.charge(1001);
        assert_eq!((c.overage_units, c.overage_amount, c.total), (1, 1, 4901));
        // 2500 over: 2.5 blocks of 50 = 125.
        assert_eq!(b.charge(3500).overage_amount, 125);
        // Huge usage saturates instead of wrapping.
        let big = PlanBilling {
            unit_price: i64::MAX,
            per_units: 1,
            ..b.clone()
        };
        assert_eq!(big.charge(i64::MAX).total, i64::MAX);
    }

    #[test]
    fn periods_have_names_in_their_zone() {
        let berlin = Calendar::new("Europe/Berlin").unwrap();
        let w = berlin.window(QuotaPeriod::Month, unix("2027-01-31T23:30:00Z"));
        assert_eq!(berlin.label(QuotaPeriod::Month, w.start), "2027-02");
        assert_eq!(berlin.parse_label(QuotaPeriod::Month, "2027-02"), Some(w));
        let prev = berlin.previous_window(QuotaPeriod::Month, unix("2027-02-10T00:00:00Z"));
        assert_eq!(berlin.label(QuotaPeriod::Month, prev.start), "2027-01");
        let kolkata = Calendar::new("Asia/Kolkata").unwrap();
        let h = kolkata
            .parse_label(QuotaPeriod::Hour, "2026-06-01T16")
            .unwrap();
        assert_eq!(h.start, unix("2026-06-01T10:30:00Z"));
        assert_eq!(kolkata.parse_label(QuotaPeriod::Day, "2026-13-01"), None);
        assert_eq!(kolkata.parse_label(QuotaPeriod::Day, "2026-06"), None);
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(Calendar::new("Mars/Olympus").is_err());
        assert!(Calendar::new("").is_err());
    }
}
