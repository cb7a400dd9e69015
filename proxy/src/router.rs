//! Route matching: one compiled segment trie per tenant.
//!
//! The rule, also in docs/configuration.md ("Which route wins"):
//! 1. A route is a candidate when its path pattern matches, its `methods` (if any) contain the
//!    request method, and all its header conditions hold.
//! 2. Among candidates the highest `priority` wins.
//! 3. On equal priority the more specific pattern wins: exact (all literal) beats
//!    parametric beats prefix (`/*`); then more literal segments; then more segments.
//! 4. Then the route with more conditions (methods listed + header conditions) wins.
//! 5. Then the one declared first.
//!
//! Lookup walks the trie along the request's path segments, so its cost depends on the
//! path's depth and on the routes that share its prefixes, not on the number of routes.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::collections::HashMap;
use vantage_model::{PathPattern, Segment};

/// What a route requires besides its path.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Allowed methods; empty means any.
    pub methods: Vec<Method>,
    /// Header name and optional exact value.
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// A media-type parameter `Accept` must carry (an API version's): name and value.
    pub accept: Option<(String, String)>,
}

impl Conditions {
    fn hold(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, value)| match value {
                None => headers.contains_key(name),
                Some(v) => headers.get_all(name).iter().any(|h| h == v),
            })
            && self
                .accept
                .as_ref()
                .is_none_or(|(p, v)| crate::versions::accepts(headers, p, v))
    }

    fn count(&self) -> usize {
        usize::from(!self.methods.is_empty())
            + self.headers.len()
            + usize::from(self.accept.is_some())
    }
}

/// Ordering key of a candidate: larger wins.
type Rank = (i32, u8, usize, usize, usize, std::cmp::Reverse<usize>);

struct Entry<T> {
    conditions: Conditions,
    rank: Rank,
    value: T,
}

#[derive(Default)]
struct Node {
    statics: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose pattern ends exactly here.
    exact: Vec<usize>,
    /// Routes whose pattern ends here with `/*`.
    prefix: Vec<usize>,
}

/// A compiled set of routes of one tenant.
pub struct Router<T> {
    root: Node,
    entries: Vec<Entry<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            root: Node::default(),
            entries: Vec::new(),
        }
    }
}

impl<T> Router<T> {
    /// Add a route. Routes added earlier win ties.
    pub fn insert(
        &mut self,
        pattern: &PathPattern,
        priority: i32,
        conditions: Conditions,
        value: T,
    ) {
        let idx = self.entries.len();
        let rank = (
            priority,
            pattern.kind_rank(),
            pattern.literal_count(),
            pattern.segments.len(),
            conditions.count(),
            std::cmp::Reverse(idx),
        );
        let mut node = &mut self.root;
        for seg in &pattern.segments {
            node = match seg {
                Segment::Literal(l) => node.statics.entry(l.as_str().into()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Default::default),
            };
        }
        if pattern.prefix {
            node.prefix.push(idx);
        } else {
            node.exact.push(idx);
        }
        self.entries.push(Entry {
            conditions,
            rank,
            value,
        });
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no route was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The winning route for a request, by the rule in the module docs. `path` may carry a
    /// query string; it is ignored.
    pub fn find(&self, path: &str, method: &Method, headers: &HeaderMap) -> Option<&T> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let segments = path.split('/').filter(|s| !s.is_empty());
        let mut best: Option<usize> = None;
        self.walk(&self.root, segments, method, headers, &mut best);
        best.map(|i| &self.entries[i].value)
    }

    fn consider(
        &self,
        ids: &[usize],
        method: &Method,
        headers: &HeaderMap,
        best: &mut Option<usize>,
    ) {
        for &i in ids {
            let e = &self.entries[i];
            if best.is_some_and(|b| self.entries[b].rank >= e.rank) {
                continue;
            }
            if e.conditions.hold(method, headers) {
                *best = Some(i);
            }
        }
    }

    fn walk<'a, I>(
        &self,
        node: &Node,
        mut segments: I,
        method: &Method,
        headers: &HeaderMap,
        best: &mut Option<usize>,
    ) where
        I: Iterator<Item = &'a str> + Clone,
    {
        self.consider(&node.prefix, method, headers, best);
        match segments.next() {
            None => self.consider(&node.exact, method, headers, best),
            Some(seg) => {
                if let Some(child) = node.statics.get(seg) {
                    self.walk(child, segments.clone(), method, headers, best);
                }
                if let Some(child) = &node.param {
                    self.walk(child, segments, method, headers, best);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Spec<'a> = (
        &'a str,
        i32,
        &'a [&'a str],
        &'a [(&'a str, Option<&'a str>)],
    );

    fn router(routes: &[Spec<'_>]) -> Router<usize> {
        let mut r = Router::default();
        for (i, (pat, prio, methods, headers)) in routes.iter().enumerate() {
            let conditions = Conditions {
                methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
                headers: headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            HeaderName::from_bytes(n.as_bytes()).unwrap(),
                            v.map(|v| HeaderValue::from_str(v).unwrap()),
                        )
                    })
                    .collect(),
                accept: None,
            };
            r.insert(&PathPattern::parse(pat).unwrap(), *prio, conditions, i);
        }
        r
    }

    fn find(
        r: &Router<usize>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<usize> {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        r.find(path, &method.parse().unwrap(), &h).copied()
    }

    #[test]
    fn exact_param_prefix_specificity() {
        let r = router(&[
            ("/*", 0, &[], &[]),
            ("/api/users/*", 0, &[], &[]),
            ("/api/users/:id", 0, &[], &[]),
            ("/api/users/me", 0, &[], &[]),
            ("/status", 0, &[], &[]),
        ]);
        assert_eq!(find(&r, "GET", "/api/users/me", &[]), Some(3));
        assert_eq!(find(&r, "GET", "/api/users/42", &[]), Some(2));
        assert_eq!(find(&r, "GET", "/api/users/42/posts", &[]), Some(1));
        assert_eq!(find(&r, "GET", "/api/users", &[]), Some(1));
        assert_eq!(find(&r, "GET", "/api/users/", &[]), Some(1));
        assert_eq!(find(&r, "GET", "/status?x=1", &[]), Some(4));
        assert_eq!(find(&r, "GET", "/status/", &[]), Some(4));
        assert_eq!(find(&r, "GET", "/other", &[]), Some(0));
        assert_eq!(find(&r, "GET", "/", &[]), Some(0));
    }

    #[test]
    fn priority_beats_specificity() {
        let r = router(&[("/api/users/:id", 0, &[], &[]), ("/api/*", 5, &[], &[])]);
        assert_eq!(find(&r, "GET", "/api/users/1", &[]), Some(1));
    }

    #[test]
    fn longer_prefix_wins_and_declaration_order_breaks_ties() {
        let r = router(&[
            ("/a/*", 0, &[], &[]),
            ("/a/b/*", 0, &[], &[]),
            ("/x/:p", 0, &[], &[]),
            ("/x/:q", 0, &[], &[]),
        ]);
        assert_eq!(find(&r, "GET", "/a/b/c", &[]), Some(1));
        assert_eq!(find(&r, "GET", "/a/c", &[]), Some(0));
        assert_eq!(find(&r, "GET", "/x/1", &[]), Some(2));
    }

    #[test]
    fn methods_and_headers() {
        let r = router(&[
            ("/items", 0, &["GET"], &[]),
            ("/items", 0, &["POST"], &[]),
            ("/items", 0, &["GET"], &[("x-api-version", Some("2"))]),
            ("/beta", 0, &[], &[("x-beta", None)]),
        ]);
        assert_eq!(find(&r, "GET", "/items", &[]), Some(0));
        assert_eq!(find(&r, "POST", "/items", &[]), Some(1));
        assert_eq!(
            find(&r, "GET", "/items", &[("X-Api-Version", "2")]),
            Some(2)
        );
        assert_eq!(
            find(&r, "GET", "/items", &[("X-Api-Version", "3")]),
            Some(0)
        );
        assert_eq!(find(&r, "DELETE", "/items", &[]), None);
        assert_eq!(find(&r, "GET", "/beta", &[]), None);
        assert_eq!(find(&r, "GET", "/beta", &[("x-beta", "")]), Some(3));
    }

    #[test]
    fn params_do_not_match_empty_or_extra_segments() {
        let r = router(&[
            ("/users/:id", 0, &[], &[]),
            ("/users/:id/posts/:p", 0, &[], &[]),
        ]);
        assert_eq!(find(&r, "GET", "/users", &[]), None);
        assert_eq!(find(&r, "GET", "/users/1/posts", &[]), None);
        assert_eq!(find(&r, "GET", "/users/1/posts/2", &[]), Some(1));
    }

    #[test]
    fn many_routes_still_resolve() {
        let mut r = Router::default();
        for i in 0..10_000 {
            let p = PathPattern::parse(&format!("/svc{i}/items/:id")).unwrap();
            r.insert(&p, 0, Conditions::default(), i);
        }
        assert_eq!(r.len(), 10_000);
        let h = HeaderMap::new();
        assert_eq!(r.find("/svc9876/items/5", &Method::GET, &h), Some(&9876));
        assert_eq!(r.find("/svc9876/other/5", &Method::GET, &h), None);
    }
}
