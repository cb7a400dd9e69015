//! Request and response changes of a route: path rewrite, header transforms and response
//! compression.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use regex::Regex;
use vantage_model::{HeaderTransform, PathRewrite};

/// Remove, set, add: the same calls on Pingora's request and response headers, which share
/// no trait.
macro_rules! apply {
    ($ops:expr, $h:expr) => {{
        for n in &$ops.remove {
            $h.remove_header(n);
        }
        for (n, v) in &$ops.set {
            let _ = $h.insert_header(n.clone(), v.clone());
        }
        for (n, v) in &$ops.add {
            let _ = $h.append_header(n.clone(), v.clone());
        }
    }};
}

/// Compress the response at `level` (a route's `compression`): Pingora's compression
/// module is on for every request at level 0 (off) and reads `Accept-Encoding` again here.
pub fn enable_compression(session: &mut pingora::proxy::Session, level: u32) {
    let req = session.downstream_session.req_header().clone();
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<pingora::modules::http::compression::ResponseCompression>()
    {
        if c.is_header_phase() {
            c.adjust_level(level);
            // The module skipped Accept-Encoding while it was disabled.
            c.request_filter(&req);
        }
    }
}

/// Compiled header transform: remove, then set, then add.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

/// A header transform that failed to compile (validation normally prevents this).
#[derive(Debug, thiserror::Error)]
#[error("header '{0}': invalid name or value")]
pub struct BadHeader(pub String);

impl HeaderOps {
    /// Compile a configured transform.
    pub fn compile(t: &HeaderTransform) -> Result<HeaderOps, BadHeader> {
        let pair = |(n, v): (&String, &String)| {
            Ok((
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| BadHeader(n.clone()))?,
                HeaderValue::from_str(v).map_err(|_| BadHeader(n.clone()))?,
            ))
        };
        Ok(HeaderOps {
            remove: t
                .remove
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|_| BadHeader(n.clone())))
                .collect::<Result<_, _>>()?,
            set: t.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: t.add.iter().map(pair).collect::<Result<_, _>>()?,
        })
    }

    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Apply to a request.
    pub fn apply_request(&self, h: &mut RequestHeader) {
        apply!(self, h);
    }

    /// Apply to a response.
    pub fn apply_response(&self, h: &mut ResponseHeader) {
        apply!(self, h);
    }
}

/// How a route changes the path it forwards.
#[derive(Debug, Clone, Default)]
pub struct PathOps {
    strip_prefix: Option<String>,
    rewrite: Option<(Regex, String)>,
}

impl PathOps {
    /// Compile; the regex was checked by validation, so an error here is unexpected.
    pub fn compile(
        strip_prefix: Option<&str>,
        rewrite: Option<&PathRewrite>,
    ) -> Result<PathOps, regex::Error> {
        Ok(PathOps {
            strip_prefix: strip_prefix.map(|p| p.trim_end_matches('/').to_string()),
            rewrite: match rewrite {
                Some(r) => Some((Regex::new(&r.pattern)?, r.replacement.clone())),
                None => None,
            },
        })
    }

    /// True when the path is forwarded unchanged.
    pub fn is_identity(&self) -> bool {
        self.strip_prefix.is_none() && self.rewrite.is_none()
    }

    /// Set the origin's request target: the rewritten path (see [`PathOps::apply`]), and
    /// always origin form (the host is in `Host`).
    pub fn rewrite(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        let Some(pq) = upstream.uri.path_and_query().map(|p| p.as_str()) else {
            return Ok(());
        };
        let new = match self.apply(pq) {
            Some(new) => new,
            None if upstream.uri.authority().is_some() => pq.to_string(),
            None => return Ok(()),
        };
        let uri = new.parse::<http::Uri>().map_err(|e| {
            pingora::Error::because(
                pingora::ErrorType::InternalError,
                "rewritten path is not a URI",
                e,
            )
        })?;
        upstream.set_uri(uri);
        Ok(())
    }

    /// The new path-and-query for `path_and_query`, or None when unchanged.
    /// `strip_prefix` removes a whole-segment prefix (`/api` strips `/api/x` → `/x` and
    /// `/api` → `/`, but not `/apix`); then `rewrite` replaces the first regex match in the
    /// path. The query string is kept as is.
    pub fn apply(&self, path_and_query: &str) -> Option<String> {
        if self.is_identity() {
            return None;
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut out: std::borrow::Cow<'_, str> = path.into();
        if let Some(prefix) = &self.strip_prefix {
            if let Some(rest) = out.strip_prefix(prefix.as_str()) {
                if rest.is_empty() {
                    out = "/".into();
                } else if rest.starts_with('/') {
                    out = rest.to_string().into();
                }
            }
        }
        if let Some((re, replacement)) = &self.rewrite {
            let replaced = re.replace(&out, replacement.as_str()).into_owned();
            out = replaced.into();
        }
        if !out.starts_with('/') {
            out = format!("/{out}").into();
        }
        Some(match query {
            Some(q) => format!("{out}?{q}"),
            None => out.into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_is_segment_aware_and_keeps_query() {
        let p = PathOps::compile(Some("/api"), None).unwrap();
        assert_eq!(p.apply("/api/users/1?x=1").as_deref(), Some("/users/1?x=1"));
        assert_eq!(p.apply("/api").as_deref(), Some("/"));
        assert_eq!(p.apply("/apix/1").as_deref(), Some("/apix/1"));
        assert_eq!(p.apply("/other").as_deref(), Some("/other"));
    }

    #[test]
    fn regex_rewrite_after_strip() {
        let rw = PathRewrite {
            pattern: "^/users/([^/]+)$".into(),
            replacement: "/v2/users/$1".into(),
        };
        let p = PathOps::compile(Some("/api/"), Some(&rw)).unwrap();
        assert_eq!(
            p.apply("/api/users/42?a=b").as_deref(),
            Some("/v2/users/42?a=b")
        );
        assert_eq!(p.apply("/api/users/42/x").as_deref(), Some("/users/42/x"));
        let rw = PathRewrite {
            pattern: "^/old".into(),
            replacement: "new".into(),
        };
        let p = PathOps::compile(None, Some(&rw)).unwrap();
        assert_eq!(p.apply("/old/a").as_deref(), Some("/new/a"));
        assert_eq!(PathOps::default().apply("/x"), None);
    }

    #[test]
    fn header_ops_order() {
        let mut t = HeaderTransform::default();
        t.remove.push("x-drop".into());
        t.set.insert("x-set".into(), "1".into());
        t.add.insert("x-add".into(), "2".into());
        let ops = HeaderOps::compile(&t).unwrap();
        let mut h = RequestHeader::build("GET", b"/", None).unwrap();
        h.insert_header("x-drop", "a").unwrap();
        h.insert_header("x-set", "old").unwrap();
        h.insert_header("x-add", "1").unwrap();
        ops.apply_request(&mut h);
        assert!(h.headers.get("x-drop").is_none());
        assert_eq!(h.headers.get_all("x-set").iter().count(), 1);
        assert_eq!(h.headers.get("x-set").unwrap(), "1");
        assert_eq!(h.headers.get_all("x-add").iter().count(), 2);
    }
}
