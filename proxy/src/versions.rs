//! API versions: the `Accept` media-type parameter that selects a versioned route, the
//! `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link: rel="successor-version"` fields
//! of its responses, and the 410 after its sunset.

use crate::errors::Reply;
use crate::telemetry::metrics::METRICS;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use vantage_model::traffic::parse_instant;
use vantage_model::ApiVersion;

pub static DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
pub static SUNSET: HeaderName = HeaderName::from_static("sunset");

/// A compiled API version.
pub struct VersionRt {
    pub name: Arc<str>,
    deprecated_at: Option<SystemTime>,
    sunset_at: Option<SystemTime>,
    serve_after_sunset: bool,
    /// The response fields, built once.
    fields: Vec<(&'static HeaderName, HeaderValue)>,
}

/// Where a version stands at a moment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Current,
    Deprecated,
    Sunset,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Deprecated => "deprecated",
            State::Sunset => "sunset",
        }
    }
}

impl VersionRt {
    /// Compile a validated version.
    pub fn compile(spec: &ApiVersion) -> Result<VersionRt, String> {
        let deprecated_at = spec
            .deprecated_at
            .as_deref()
            .map(parse_instant)
            .transpose()?;
        let sunset_at = spec.sunset_at.as_deref().map(parse_instant).transpose()?;
        let mut fields = Vec::new();
        let value = |s: String| HeaderValue::from_str(&s).map_err(|e| e.to_string());
        if let Some(at) = deprecated_at {
            // An RFC 9651 Date: `@` and the seconds since the epoch.
            let secs = match at.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            };
            fields.push((&DEPRECATION, value(format!("@{secs}"))?));
        }
        if let Some(at) = sunset_at {
            fields.push((&SUNSET, value(httpdate::fmt_http_date(at))?));
        }
        if let Some(s) = &spec.successor {
            let link = format!("<{s}>; rel=\"successor-version\"");
            fields.push((&http::header::LINK, value(link)?));
        }
        Ok(VersionRt {
            name: spec.name.as_str().into(),
            deprecated_at,
            sunset_at,
            serve_after_sunset: spec.serve_after_sunset,
            fields,
        })
    }

    /// Where the version stands at `now`.
    pub fn state(&self, now: SystemTime) -> State {
        if self.sunset_at.is_some_and(|s| now >= s) {
            State::Sunset
        } else if self.deprecated_at.is_some_and(|d| now >= d) {
            State::Deprecated
        } else {
            State::Current
        }
    }

    /// Count the request in its version's series and refuse it with 410 once the version is
    /// past its sunset (unless it keeps serving).
    pub fn admit(&self, tenant: &str, now: SystemTime) -> Result<(), Reply> {
        let state = self.state(now);
        METRICS
            .api_versions
            .inc(&[tenant, &self.name, state.label()]);
        if state == State::Sunset && !self.serve_after_sunset {
            let mut reply = Reply::new(
                410,
                "api_version_sunset",
                format!("API version '{}' is no longer served", self.name),
            );
            reply.headers.extend(self.headers());
            return Err(reply);
        }
        Ok(())
    }

    fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        self.fields.iter().map(|(n, v)| ((*n).clone(), v.clone()))
    }

    /// Add the version's fields to a response.
    pub fn apply(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        for (n, v) in &self.fields {
            resp.insert_header(n.as_str(), v.clone())?;
        }
        Ok(())
    }
}

/// The request's `Accept` names a media type with parameter `param` (any case) equal to
/// `value` (quoted or not).
pub fn accepts(headers: &HeaderMap, param: &str, value: &str) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            range.split(';').skip(1).any(|p| {
                let Some((k, v)) = p.split_once('=') else {
                    return false;
                };
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                k.trim().eq_ignore_ascii_case(param) && v == value
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_accept_parameter_selects_a_version() {
        assert!(accepts(
            &accept("application/json; version=2"),
            "version",
            "2"
        ));
        assert!(accepts(
            &accept("text/html, application/json;Version=\"2\";q=0.9"),
            "version",
            "2"
        ));
        assert!(!accepts(
            &accept("application/json; version=20"),
            "version",
            "2"
        ));
        assert!(!accepts(&accept("application/json; v=2"), "version", "2"));
        assert!(!accepts(&accept("application/json"), "version", "2"));
        assert!(!accepts(&HeaderMap::new(), "version", "2"));
        // `version` in the media type itself is no parameter.
        assert!(!accepts(&accept("application/version=2"), "version", "2"));
    }

    #[test]
    fn fields_and_states_follow_the_dates() {
        let spec: ApiVersion = serde_yaml::from_str(
            "{name: v1, deprecated_at: '2026-01-01T00:00:00Z', sunset_at: '2027-01-01T00:00:00Z', successor: /v2/}",
        )
        .unwrap();
        let v = VersionRt::compile(&spec).unwrap();
        let fields: Vec<_> = v
            .headers()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                "deprecation: @1767225600",
                "sunset: Fri, 01 Jan 2027 00:00:00 GMT",
                "link: </v2/>; rel=\"successor-version\""
            ]
        );
        let jan26 = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        assert_eq!(v.state(jan26 - Duration::from_secs(1)), State::Current);
        assert_eq!(v.state(jan26), State::Deprecated);
        let jan27 = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
        assert_eq!(v.state(jan27 - Duration::from_secs(1)), State::Deprecated);
        assert_eq!(v.state(jan27), State::Sunset);
        let refused = v.admit("t", jan27).unwrap_err();
        assert_eq!((refused.status, refused.code), (410, "api_version_sunset"));
        assert_eq!(refused.headers.len(), 3);
        assert!(v.admit("t", jan26).is_ok());
    }
}
