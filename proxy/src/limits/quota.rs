//! Calendar quotas: one counter per (tenant, subject, plan, quota, period), charged by the
//! route's cost.
//!
//! All quotas of one plan that count a request are decided together, atomically: in Redis
//! by one script (the counters share a hash tag, so a Redis Cluster keeps them on one slot),
//! or in this process when there is no Redis (or Redis fails and the quota says `local`).
//! When an enforced blocking quota would go past its limit, nothing is counted and the
//! request is refused; otherwise every counter grows by the cost, also past the limit
//! (`overage: allow`, or `mode: shadow`).

use super::plan::{PlanRt, QuotaRt};
use super::redis::{RedisLimitError, RedisLimiter};
use crate::telemetry::metrics::METRICS;
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use vantage_model::{quota_counter_key, OnRedisError, PeriodWindow, QuotaPeriod, QuotaSubject};

/// KEYS: the counters. ARGV[1]: cost; then per key: limit, block (1 or 0), expire-at (Unix s).
/// Returns {admitted (1/0), refusing key index (1-based, 0 when admitted), used per key...}.
const CHARGE: &str = r#"
local cost = tonumber(ARGV[1])
local used = {}
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 3
  if ARGV[base + 2] == '1' and used[i] + cost > tonumber(ARGV[base + 1]) then
    local out = {0, i}
    for j = 1, #KEYS do out[#out + 1] = used[j] end
    return out
  end
end
local out = {1, 0}
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 3
  out[#out + 1] = redis.call('INCRBY', KEYS[i], cost)
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[base + 3]))
end
return out
"#;

/// How long a counter outlives its period (so a report just after the boundary still finds
/// the old one, and clocks that differ a little agree).
const KEEP_AFTER_END_S: i64 = 3600;

/// The outcome of one quota for one request.
#[derive(Debug, Clone)]
pub struct QuotaDecision {
    pub name: Arc<str>,
    pub limit: i64,
    /// Units used in the period, this request included when it was counted.
    pub used: i64,
    pub window: PeriodWindow,
    pub period: QuotaPeriod,
    /// This quota refuses the request (enforced, blocking, and the cost does not fit).
    pub refused: bool,
    /// Past the limit without refusing: overage (`allow`) or a shadow refusal.
    pub over: bool,
    pub shadow: bool,
}

impl QuotaDecision {
    pub fn remaining(&self) -> i64 {
        (self.limit - self.used).max(0)
    }
}

/// What charging a plan's quotas came to.
pub enum Charge {
    /// Counted (`decisions` in the plan's order).
    Counted(Vec<QuotaDecision>),
    /// Refused by `decisions[index]`; nothing was counted.
    Refused(Vec<QuotaDecision>, usize),
    /// Redis failed and a quota says `deny`.
    Unavailable,
    /// Redis failed and every quota says `allow`: nothing was counted.
    Skipped,
}

/// Quota counters: Redis when the proxy has it, else (and as the `local` fallback) this
/// process.
pub struct QuotaCounter {
    redis: Option<Arc<RedisLimiter>>,
    script: Script,
    local: Mutex<LocalCounters>,
}

/// Counters of this process: key → (period end, units), swept of ended periods when the map
/// reaches `sweep_at` (then twice what is left, so a sweep is amortised over many inserts).
struct LocalCounters {
    map: HashMap<String, (i64, i64)>,
    sweep_at: usize,
}

/// Local counters are first swept at this many entries.
const LOCAL_SWEEP_AT: usize = 100_000;

impl QuotaCounter {
    pub fn new(redis: Option<Arc<RedisLimiter>>) -> QuotaCounter {
        QuotaCounter {
            redis,
            script: Script::from_lua(CHARGE),
            local: Mutex::new(LocalCounters {
                map: HashMap::new(),
                sweep_at: LOCAL_SWEEP_AT,
            }),
        }
    }

    fn prefix(&self) -> &str {
        self.redis.as_ref().map_or("vantage", |r| r.prefix())
    }

    /// The counter keys and periods of `quotas` for `subject` at `now` (Unix seconds).
    fn keys(
        &self,
        tenant: &str,
        plan: &PlanRt,
        subject: &QuotaSubject,
        quotas: &[&QuotaRt],
        now: i64,
    ) -> (Vec<String>, Vec<PeriodWindow>) {
        let label = subject.label();
        quotas
            .iter()
            .map(|q| {
                let w = plan.calendar.window(q.period, now);
                (
                    quota_counter_key(self.prefix(), tenant, &plan.id, &q.name, &label, w.start),
                    w,
                )
            })
            .unzip()
    }

    /// Charge `cost` units of `quotas` (of `plan`) to `subject` at `now` (Unix seconds; the
    /// caller's clock, injectable for tests).
    pub async fn charge(
        &self,
        tenant: &str,
        plan: &PlanRt,
        subject: &QuotaSubject,
        quotas: &[&QuotaRt],
        cost: i64,
        now: i64,
    ) -> Charge {
        let (keys, windows) = self.keys(tenant, plan, subject, quotas, now);
        let used = match &self.redis {
            Some(redis) => match self
                .charge_redis(redis, &keys, &windows, quotas, cost)
                .await
            {
                Ok(r) => Ok(r),
                Err(e) => {
                    let deny = quotas
                        .iter()
                        .any(|q| q.on_redis_error == OnRedisError::Deny);
                    let local = quotas
                        .iter()
                        .any(|q| q.on_redis_error == OnRedisError::Local);
                    let mode = if deny {
                        "deny"
                    } else if local {
                        "local"
                    } else {
                        "allow"
                    };
                    METRICS.ratelimit_fallbacks.with_label_values(&[mode]).inc();
                    tracing::warn!(tenant, plan = %plan.id, mode, "quota without Redis: {e}");
                    if deny {
                        return Charge::Unavailable;
                    }
                    if !local {
                        return Charge::Skipped;
                    }
                    Err(())
                }
            },
            None => Err(()),
        };
        let (admitted, refusing, used) = match used {
            Ok(r) => r,
            Err(()) => self.charge_local(&keys, &windows, quotas, cost),
        };
        let decisions: Vec<QuotaDecision> = quotas
            .iter()
            .zip(windows)
            .zip(used)
            .enumerate()
            .map(|(i, ((q, window), used))| {
                let refused = !admitted && refusing == i;
                QuotaDecision {
                    name: q.name.clone(),
                    limit: q.limit,
                    used,
                    window,
                    period: q.period,
                    refused,
                    over: admitted && used > q.limit,
                    shadow: q.mode == vantage_model::EnforcementMode::Shadow,
                }
            })
            .collect();
        if admitted {
            Charge::Counted(decisions)
        } else {
            Charge::Refused(decisions, refusing)
        }
    }

    async fn charge_redis(
        &self,
        redis: &RedisLimiter,
        keys: &[String],
        windows: &[PeriodWindow],
        quotas: &[&QuotaRt],
        cost: i64,
    ) -> Result<(bool, usize, Vec<i64>), RedisLimitError> {
        // A Redis Cluster runs a script only when all its keys are in one slot (else
        // CROSSSLOT): the counters of one subject share the hash tag `{tenant\x1fsubject}`.
        debug_assert!(
            keys.windows(2).all(|k| same_slot(&k[0], &k[1])),
            "one script's keys share a slot: {keys:?}"
        );
        let mut args: Vec<i64> = Vec::with_capacity(1 + 3 * keys.len());
        args.push(cost);
        for (q, w) in quotas.iter().zip(windows) {
            args.push(q.limit);
            args.push(i64::from(q.blocks()));
            args.push(w.end + KEEP_AFTER_END_S);
        }
        let call =
            self.script
                .evalsha_with_reload::<Vec<i64>, _, _>(redis.client(), keys.to_vec(), args);
        let r = match tokio::time::timeout(redis.timeout(), call).await {
            Ok(r) => r.map_err(RedisLimitError::from),
            Err(_) => Err(RedisLimitError::Timeout(redis.timeout())),
        };
        let r = r.inspect_err(|_| {
            METRICS.redis_errors.with_label_values(&["quota"]).inc();
        })?;
        if r.len() != 2 + keys.len() || r[1] < 0 || r[1] as usize > keys.len() {
            return Err(RedisLimitError::Reply);
        }
        Ok((r[0] == 1, (r[1].max(1) - 1) as usize, r[2..].to_vec()))
    }

    fn charge_local(
        &self,
        keys: &[String],
        windows: &[PeriodWindow],
        quotas: &[&QuotaRt],
        cost: i64,
    ) -> (bool, usize, Vec<i64>) {
        let mut local = match self.local.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let used: Vec<i64> = keys
            .iter()
            .map(|k| local.map.get(k).map_or(0, |(_, used)| *used))
            .collect();
        if let Some(i) = quotas
            .iter()
            .zip(&used)
            .position(|(q, used)| q.blocks() && used + cost > q.limit)
        {
            return (false, i, used);
        }
        if local.map.len() >= local.sweep_at {
            let oldest_live = windows.iter().map(|w| w.start).min().unwrap_or(0);
            local.map.retain(|_, (end, _)| *end > oldest_live);
            local.sweep_at = LOCAL_SWEEP_AT.max(local.map.len() * 2);
        }
        let used = keys
            .iter()
            .zip(windows)
            .map(|(k, w)| {
                let entry = local.map.entry(k.clone()).or_insert((w.end, 0));
                entry.1 += cost;
                entry.1
            })
            .collect();
        (true, 0, used)
    }

    /// The units `subject` used of each quota of `plan` in the period at `now`, without
    /// counting anything (for the key holder's usage report). `None` where unknown (Redis
    /// failed).
    pub async fn read(
        &self,
        tenant: &str,
        plan: &PlanRt,
        subject: &QuotaSubject,
        now: i64,
    ) -> Vec<(PeriodWindow, Option<i64>)> {
        let quotas: Vec<&QuotaRt> = plan.quotas.iter().collect();
        let (keys, windows) = self.keys(tenant, plan, subject, &quotas, now);
        if keys.is_empty() {
            return Vec::new();
        }
        let used: Vec<Option<i64>> = match &self.redis {
            Some(redis) => {
                use fred::interfaces::KeysInterface;
                let call = redis.client().mget::<Vec<Option<i64>>, _>(keys.clone());
                match tokio::time::timeout(redis.timeout(), call).await {
                    Ok(Ok(v)) if v.len() == keys.len() => {
                        v.into_iter().map(|u| Some(u.unwrap_or(0))).collect()
                    }
                    _ => {
                        METRICS.redis_errors.with_label_values(&["quota"]).inc();
                        vec![None; keys.len()]
                    }
                }
            }
            None => {
                let local = match self.local.lock() {
                    Ok(m) => m,
                    Err(poisoned) => poisoned.into_inner(),
                };
                keys.iter()
                    .map(|k| Some(local.map.get(k).map_or(0, |(_, used)| *used)))
                    .collect()
            }
        };
        windows.into_iter().zip(used).collect()
    }
}

/// Whether two keys hash to the same Redis Cluster slot.
fn same_slot(a: &str, b: &str) -> bool {
    fred::util::redis_keyslot(a.as_bytes()) == fred::util::redis_keyslot(b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_of_one_subject_share_a_cluster_slot() {
        // Every period and quota of a plan, for subjects whose text holds braces too (a JWT
        // `sub` is any string): one slot per (tenant, subject), so one script decides them.
        for subject in [
            QuotaSubject::Key("ka".into()),
            QuotaSubject::User("a}b{c".into()),
            QuotaSubject::User("}".into()),
            QuotaSubject::Tenant,
        ] {
            let label = subject.label();
            let keys: Vec<String> = [
                ("p", "monthly", 1_800_000_000),
                ("p", "daily", 1_800_086_400),
            ]
            .iter()
            .chain(&[("p2", "hourly", 1_800_003_600)])
            .map(|(plan, quota, start)| {
                quota_counter_key("vantage", "acme", plan, quota, &label, *start)
            })
            .collect();
            assert!(keys.windows(2).all(|k| same_slot(&k[0], &k[1])), "{keys:?}");
        }
        // ... while other tenants' counters spread over the cluster.
        let slots: std::collections::HashSet<u16> = (0..20)
            .map(|i| {
                let k = quota_counter_key("vantage", &format!("t{i}"), "p", "q", "tenant", 0);
                fred::util::redis_keyslot(k.as_bytes())
            })
            .collect();
        assert!(slots.len() > 10, "{slots:?}");
    }
}
