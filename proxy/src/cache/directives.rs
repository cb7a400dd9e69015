//! The response directives this cache obeys.
//!
//! RFC 9213 targeted fields come first: `Vantage-Cache-Control` (for this gateway only),
//! then `CDN-Cache-Control`. The first one that is present, non-empty and valid (an RFC 8941
//! dictionary whose known directives have the right types) replaces `Cache-Control` and
//! `Expires` for this cache's decisions; otherwise `Cache-Control` applies. The targeted
//! fields never change what clients are told: `CDN-Cache-Control` is passed on, and
//! `Vantage-Cache-Control` (addressed to this gateway) is removed from responses.

use pingora::cache::cache_control::CacheControl;
use pingora::http::ResponseHeader;
use sfv::{BareItem, ListEntry, Parser};

/// The targeted fields, most specific first.
pub const TARGETED: [&str; 2] = ["vantage-cache-control", "cdn-cache-control"];

/// Our own targeted field, removed from what clients receive.
pub const OWN_FIELD: &str = "vantage-cache-control";
static OWN_FIELD_NAME: http::HeaderName = http::HeaderName::from_static(OWN_FIELD);

/// Directives of one response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub max_age: Option<u32>,
    pub s_maxage: Option<u32>,
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
    /// They came from a targeted field: `Expires` does not count either.
    pub targeted: bool,
}

impl Directives {
    /// The directives of `resp`; `cc` is its parsed `Cache-Control`.
    pub fn of(resp: &ResponseHeader, cc: Option<&CacheControl>) -> Directives {
        TARGETED
            .iter()
            .find_map(|name| targeted(resp, name))
            .unwrap_or_else(|| from_cache_control(cc))
    }
}

fn from_cache_control(cc: Option<&CacheControl>) -> Directives {
    let Some(c) = cc else {
        return Directives::default();
    };
    Directives {
        no_store: c.no_store(),
        no_cache: c.no_cache(),
        private: c.private(),
        public: c.public(),
        must_revalidate: c.must_revalidate(),
        proxy_revalidate: c.proxy_revalidate(),
        must_understand: c.has_key("must-understand"),
        max_age: c.max_age().ok().flatten(),
        s_maxage: c.s_maxage().ok().flatten(),
        stale_while_revalidate: c.stale_while_revalidate().ok().flatten(),
        stale_if_error: c.stale_if_error().ok().flatten(),
        targeted: false,
    }
}

/// The directives of targeted field `name`, when it is present, non-empty and valid.
fn targeted(resp: &ResponseHeader, name: &str) -> Option<Directives> {
    let lines: Vec<&[u8]> = resp
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let value = lines.join(&b", "[..]);
    if value.trim_ascii().is_empty() {
        return None;
    }
    let dict = Parser::parse_dictionary(&value).ok()?;
    let mut d = Directives {
        targeted: true,
        ..Directives::default()
    };
    for (key, entry) in dict {
        let flag = match key.as_str() {
            "no-store" => Some(&mut d.no_store),
            "no-cache" => Some(&mut d.no_cache),
            "private" => Some(&mut d.private),
            "public" => Some(&mut d.public),
            "must-revalidate" => Some(&mut d.must_revalidate),
            "proxy-revalidate" => Some(&mut d.proxy_revalidate),
            "must-understand" => Some(&mut d.must_understand),
            _ => None,
        };
        let seconds = match key.as_str() {
            "max-age" => Some(&mut d.max_age),
            "s-maxage" => Some(&mut d.s_maxage),
            "stale-while-revalidate" => Some(&mut d.stale_while_revalidate),
            "stale-if-error" => Some(&mut d.stale_if_error),
            _ => None,
        };
        if flag.is_none() && seconds.is_none() {
            // Extensions this cache does not know are ignored.
            continue;
        }
        // A known directive with a value of the wrong type makes the field invalid.
        let ListEntry::Item(item) = entry else {
            return None;
        };
        if let Some(flag) = flag {
            match item.bare_item {
                BareItem::Boolean(b) => *flag = b,
                // `no-cache="field"` / `private="field"`: treated as unqualified, which is
                // the stricter reading.
                BareItem::String(_) if matches!(key.as_str(), "no-cache" | "private") => {
                    *flag = true
                }
                _ => return None,
            }
        } else if let Some(seconds) = seconds {
            let v = item.bare_item.as_int().filter(|v| *v >= 0)?;
            *seconds = Some(u32::try_from(v).unwrap_or(u32::MAX));
        }
    }
    Some(d)
}

/// Remove this gateway's own targeted field from a response to a client.
pub fn strip_own(resp: &mut ResponseHeader) {
    if resp.headers.contains_key(&OWN_FIELD_NAME) {
        resp.remove_header(&OWN_FIELD_NAME);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn of(headers: &[(&str, &str)]) -> Directives {
        let r = resp(headers);
        let cc = CacheControl::from_resp_headers(&r);
        Directives::of(&r, cc.as_ref())
    }

    #[test]
    fn a_valid_targeted_field_replaces_cache_control() {
        let d = of(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        assert!(d.targeted && !d.no_store);
        assert_eq!(d.max_age, Some(600));
        let d = of(&[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "private"),
        ]);
        assert!(d.private);
        assert_eq!(d.max_age, None);
        // The gateway's own field wins over the CDN's.
        let d = of(&[
            ("cdn-cache-control", "max-age=600"),
            ("vantage-cache-control", "max-age=5, stale-if-error=30"),
        ]);
        assert_eq!((d.max_age, d.stale_if_error), (Some(5), Some(30)));
        // Unknown extensions are ignored; values are capped.
        let d = of(&[("cdn-cache-control", "foobar, max-age=99999999999")]);
        assert_eq!(d.max_age, Some(u32::MAX));
    }

    #[test]
    fn an_invalid_targeted_field_is_ignored() {
        for bad in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "MaX-aGe=10000",
            "max-age =10000",
            "max-age= 10000",
            "max-age=-1",
            "no-store=1",
            "",
        ] {
            let d = of(&[("cache-control", "no-store"), ("cdn-cache-control", bad)]);
            assert!(!d.targeted && d.no_store, "{bad:?}: {d:?}");
        }
    }
}
