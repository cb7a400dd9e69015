//! Cookie affinity: the gateway's own cookie names the target that served a client (by a
//! token derived from the origin and the target, never its address), so that the client's
//! next requests go there while it is available.

use http::HeaderValue;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use vantage_model::{CookieAffinity, SameSite};

/// A compiled affinity cookie.
pub struct AffinityRt {
    pub cookie: String,
    /// `; Path=/; Max-Age=N; Secure; HttpOnly; SameSite=Lax`.
    attributes: String,
}

impl AffinityRt {
    pub fn compile(spec: &CookieAffinity) -> AffinityRt {
        let mut attributes = format!("; Path={}", spec.path);
        if spec.ttl_seconds > 0 {
            attributes += &format!("; Max-Age={}", spec.ttl_seconds);
        }
        if spec.secure {
            attributes += "; Secure";
        }
        if spec.http_only {
            attributes += "; HttpOnly";
        }
        attributes += match spec.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        };
        AffinityRt {
            cookie: spec.cookie.clone(),
            attributes,
        }
    }

    /// The `Set-Cookie` value naming a target by its token.
    pub fn set_cookie(&self, token: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{}={token}{}", self.cookie, self.attributes)).ok()
    }
}

/// The token of target `authority` of origin `origin`: 16 hex digits of a keyed hash, the
/// same on every proxy and across restarts, saying nothing of the address.
pub fn token(origin: &str, authority: &str) -> String {
    let mut h = SipHasher13::new_with_keys(0x6166_6669_6e69_7479, 0x7661_6e74_6167_6520);
    h.write(origin.as_bytes());
    h.write_u8(0xff);
    h.write(authority.as_bytes());
    format!("{:016x}", h.finish())
}
