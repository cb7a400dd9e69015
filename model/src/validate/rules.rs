//! Small shared rules: identifiers, tokens, host names, CIDR ranges, names and scopes.

use super::Collector;
use crate::bounds as b;

/// Identifiers: 1..=64 of `[A-Za-z0-9._-]` (UUIDs qualify).
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Resource ids: [`valid_id`], not starting with `_` and not `-` (metric labels use
/// `_tenant`, `_overflow` and `-` for what is no one resource).
pub(super) fn valid_resource_id(id: &str) -> bool {
    valid_id(id) && !id.starts_with('_') && id != "-"
}

/// RFC 9110 token (header names, methods).
pub(super) fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= b::TOKEN_BYTES
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// A header value: no control characters but tab.
pub(super) fn valid_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A lower-case DNS label (a-z, 0-9, '-', at most 63, no '-' at either end).
pub(super) fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A lower-case DNS name of valid labels.
pub(crate) fn valid_host(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(valid_label)
}

/// `a.b.c.d`, `a.b.c.d/n`, or the IPv6 forms.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Display names: 1–200 characters, no control characters.
pub(super) fn check_name(c: &mut Collector, path: &str, name: &str) {
    if name.trim().is_empty() {
        c.err(path, "must not be empty");
    } else if name.chars().count() > b::NAME_CHARS {
        c.err(
            path,
            format!("must be at most {} characters", b::NAME_CHARS),
        );
    } else if name.chars().any(char::is_control) {
        c.err(path, "must not contain control characters");
    }
}

/// A path sent on the wire (health checks): visible ASCII without `#`.
pub(super) fn valid_uri_path(p: &str) -> bool {
    p.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// Scopes: 1–128 visible ASCII characters, no spaces or commas. Example: `orders:read`.
pub(super) fn valid_scope(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}
