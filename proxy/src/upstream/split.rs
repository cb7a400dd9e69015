//! Weighted splits of a route between origins: match-first rules, then a place in
//! `[0, 1)` for the request — drawn from the sticky key's hash, or at random — that falls in
//! one origin's share. Shares follow the configured order, so a client's place never moves
//! and a weight change moves only the clients whose place changes hands.

use super::{cookie, Pool};
use crate::auth::Identity;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;
use vantage_model::{Split, StickyBy};

/// What places a client.
enum Sticky {
    ApiKey,
    JwtSubject,
    Header(HeaderName),
    Cookie(String),
    ClientIp,
}

/// What a match-first rule looks at.
enum Probe {
    Header(HeaderName),
    Cookie(String),
}

struct Rule {
    probe: Probe,
    value: HeaderValue,
    pool: Arc<Pool>,
}

/// A compiled split.
pub struct SplitRt {
    /// Hash key: the route's id, so two routes split the same client independently.
    key: (u64, u64),
    /// Each origin's upper bound of its share in `[0, total)`, in configured order.
    shares: Vec<(u64, Arc<Pool>)>,
    total: u64,
    sticky: Option<Sticky>,
    rules: Vec<Rule>,
}

/// Why a split could not be compiled (validation prevents each).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SplitError(String);

impl SplitRt {
    /// Compile `spec` for route `route_id` with the tenant's pools (`pool` finds one by id);
    /// `primary` is the route's own origin, which takes every request while weights are 0.
    pub fn compile(
        route_id: &str,
        spec: &Split,
        primary: &Arc<Pool>,
        pool: impl Fn(&str) -> Option<Arc<Pool>>,
    ) -> Result<SplitRt, SplitError> {
        let find =
            |id: &str| pool(id).ok_or_else(|| SplitError(format!("unknown split origin '{id}'")));
        let mut shares = Vec::with_capacity(spec.origins.len());
        let mut total = 0u64;
        for o in &spec.origins {
            total += u64::from(o.weight);
            shares.push((total, find(&o.origin_id)?));
        }
        if total == 0 {
            shares = vec![(1, primary.clone())];
            total = 1;
        }
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|e| SplitError(format!("'{n}': {e}")))
        };
        let sticky = match &spec.sticky {
            None => None,
            Some(StickyBy::ApiKey) => Some(Sticky::ApiKey),
            Some(StickyBy::JwtSubject) => Some(Sticky::JwtSubject),
            Some(StickyBy::Header { name: n }) => Some(Sticky::Header(name(n)?)),
            Some(StickyBy::Cookie { name }) => Some(Sticky::Cookie(name.clone())),
            Some(StickyBy::ClientIp) => Some(Sticky::ClientIp),
        };
        let rules = spec
            .rules
            .iter()
            .map(|r| {
                let probe = match (&r.header, &r.cookie) {
                    (Some(h), _) => Probe::Header(name(h)?),
                    (None, Some(c)) => Probe::Cookie(c.clone()),
                    (None, None) => return Err(SplitError("a rule names nothing".into())),
                };
                let value = HeaderValue::from_str(&r.value)
                    .map_err(|e| SplitError(format!("'{}': {e}", r.value)))?;
                Ok(Rule {
                    probe,
                    value,
                    pool: find(&r.origin_id)?,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut h = SipHasher13::new_with_keys(0x7661_6e74_6167_6531, 0x7370_6c69_7420_2020);
        h.write(route_id.as_bytes());
        let k0 = h.finish();
        h.write_u8(0xff);
        Ok(SplitRt {
            key: (k0, h.finish()),
            shares,
            total,
            sticky,
            rules,
        })
    }

    /// The origin of a request: the first rule it matches, else the share its place falls
    /// in. `client` is the client's address (asked only when the split is sticky by it).
    pub fn choose(
        &self,
        req: &RequestHeader,
        identity: Option<&Identity>,
        client: impl FnOnce() -> Option<IpAddr>,
    ) -> &Arc<Pool> {
        for r in &self.rules {
            let hit = match &r.probe {
                Probe::Header(n) => req.headers.get_all(n).iter().any(|v| *v == r.value),
                Probe::Cookie(n) => cookie(req, n) == Some(r.value.as_bytes()),
            };
            if hit {
                return &r.pool;
            }
        }
        if self.shares.len() == 1 {
            return &self.shares[0].1;
        }
        let draw = match self.sticky_key(req, identity, client) {
            Some(key) => self.place(&key),
            None => fastrand::u64(..),
        };
        self.pool_at(draw)
    }

    /// The origin whose share holds the place `draw` (a uniform 64-bit number).
    fn pool_at(&self, draw: u64) -> &Arc<Pool> {
        // `draw / 2^64` scaled to the total weight.
        let point = ((u128::from(draw) * u128::from(self.total)) >> 64) as u64;
        let i = self.shares.partition_point(|(upper, _)| *upper <= point);
        &self.shares[i.min(self.shares.len() - 1)].1
    }

    /// The place of a sticky key: a keyed hash, the same on every proxy and across restarts.
    fn place(&self, key: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(key);
        h.finish()
    }

    fn sticky_key(
        &self,
        req: &RequestHeader,
        identity: Option<&Identity>,
        client: impl FnOnce() -> Option<IpAddr>,
    ) -> Option<Vec<u8>> {
        let nonempty = |b: &[u8]| (!b.is_empty()).then(|| b.to_vec());
        match self.sticky.as_ref()? {
            Sticky::ApiKey => match identity? {
                Identity::Key(k) => Some(k.id.as_bytes().to_vec()),
                Identity::User(_) => None,
            },
            Sticky::JwtSubject => match identity? {
                Identity::User(u) => nonempty(u.sub.as_bytes()),
                Identity::Key(_) => None,
            },
            Sticky::Header(n) => nonempty(req.headers.get(n)?.as_bytes()),
            Sticky::Cookie(n) => nonempty(cookie(req, n)?),
            Sticky::ClientIp => Some(client()?.to_string().into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_model::Origin;

    async fn pool(id: &str) -> Arc<Pool> {
        let spec: Origin = serde_yaml::from_str(&format!(
            "{{id: {id}, tenant_id: t, targets: [{{url: \"http://127.0.0.1:1\"}}]}}"
        ))
        .unwrap();
        Pool::build(&spec, false).await.unwrap()
    }

    async fn split(yaml: &str) -> SplitRt {
        let (stable, canary) = (pool("stable").await, pool("canary").await);
        let spec: Split = serde_yaml::from_str(yaml).unwrap();
        SplitRt::compile("r1", &spec, &stable, |id| match id {
            "stable" => Some(stable.clone()),
            "canary" => Some(canary.clone()),
            _ => None,
        })
        .unwrap()
    }

    fn req(user: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("x-user", user).unwrap();
        r
    }

    #[tokio::test]
    async fn raising_a_weight_moves_only_the_clients_that_must_move() {
        let five = split("{origins: [{origin_id: stable, weight: 95}, {origin_id: canary, weight: 5}], sticky: {by: header, name: X-User}}").await;
        let ten = split("{origins: [{origin_id: stable, weight: 90}, {origin_id: canary, weight: 10}], sticky: {by: header, name: X-User}}").await;
        let n = 20_000;
        let (mut at5, mut at10, mut moved_back) = (0, 0, 0);
        for i in 0..n {
            let r = req(&format!("user-{i}"));
            let a = &*five.choose(&r, None, || None).id;
            let b = &*ten.choose(&r, None, || None).id;
            at5 += usize::from(a == "canary");
            at10 += usize::from(b == "canary");
            // Nobody on the canary at 5% leaves it at 10%.
            moved_back += usize::from(a == "canary" && b == "stable");
            // The same client, asked again, is placed the same.
            assert_eq!(&*five.choose(&r, None, || None).id, a);
        }
        assert_eq!(moved_back, 0);
        // 5% and 10% of 20,000 within ±1.5 points (about 7 standard deviations).
        assert!((700..=1300).contains(&at5), "{at5}");
        assert!((1700..=2300).contains(&at10), "{at10}");
    }

    #[tokio::test]
    async fn rules_come_first_and_a_request_without_the_key_is_drawn() {
        let s = split("{origins: [{origin_id: stable, weight: 1}, {origin_id: canary, weight: 0}], sticky: {by: cookie, name: sid}, rules: [{header: X-Canary, value: '1', origin_id: canary}]}").await;
        let mut r = req("u");
        assert_eq!(&*s.choose(&r, None, || None).id, "stable");
        r.insert_header("x-canary", "1").unwrap();
        assert_eq!(&*s.choose(&r, None, || None).id, "canary");
        // Weight 0 takes nothing at random either.
        let plain = req("u");
        assert!((0..200).all(|_| &*s.choose(&plain, None, || None).id == "stable"));
        // Every weight 0: the route's own origin.
        let zero =
            split("{origins: [{origin_id: stable, weight: 0}, {origin_id: canary, weight: 0}]}")
                .await;
        assert_eq!(&*zero.choose(&plain, None, || None).id, "stable");
    }
}
