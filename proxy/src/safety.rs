//! Request checks that keep the gateway safe from request smuggling and oversized headers.
//!
//! Pingora refuses duplicate or invalid Content-Length but accepts a request carrying both
//! Content-Length and Transfer-Encoding (it ignores Content-Length). A front proxy that lets
//! such a request through can disagree with the origin about where it ends, so the gateway
//! refuses it, like nginx does, and closes the connection.

use crate::errors::Reply;
use crate::telemetry::metrics::METRICS;
use http::{header, Version};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// Request-head limits from the server settings (not rate limits: see [`crate::limits`]).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Most header fields (each value counts).
    pub max_headers: usize,
    /// Largest total of names and values in bytes.
    pub max_header_bytes: usize,
    /// Longest request target (also over HTTP/2, where no head is read by the gateway).
    pub max_uri_bytes: usize,
}

/// Does a raw HTTP/1 request head contain a Content-Length field? Pingora drops the field
/// from the parsed header when Transfer-Encoding is present, so the raw bytes are the only
/// witness.
pub fn raw_has_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// Is `segment` `.` or `..`, also percent-encoded (`%2e`, `.%2E`, ...)?
fn is_dot_segment(segment: &[u8]) -> bool {
    let mut dots = 0;
    let mut i = 0;
    while i < segment.len() {
        if segment[i] == b'.' {
            i += 1;
        } else if segment[i] == b'%'
            && segment.get(i + 1) == Some(&b'2')
            && matches!(segment.get(i + 2), Some(b'e' | b'E'))
        {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
    }
    (1..=2).contains(&dots)
}

/// Refuse paths with `.` or `..` segments: routes match the raw path, and an origin that
/// normalises `/public/../admin` would serve a path no route allowed.
pub fn check_path(path: &str) -> Result<(), Reply> {
    if path.split('/').any(|s| is_dot_segment(s.as_bytes())) {
        return Err(Reply::new(
            400,
            "bad_request",
            "the path must not contain '.' or '..' segments",
        ));
    }
    Ok(())
}

/// Check the request head of a session; a refusal is counted by its reason
/// (`vantage_refused_requests_total`).
pub fn check_session(session: &Session, limits: HeadLimits) -> Result<(), Reply> {
    let req = session.req_header();
    let raw_content_length = req.headers.contains_key(header::TRANSFER_ENCODING)
        && session
            .as_http1()
            .is_some_and(|h1| raw_has_content_length(&h1.get_headers_raw_bytes()));
    check(req, raw_content_length, limits).inspect_err(|r| {
        METRICS.refused.with_label_values(&[r.code]).inc();
    })
}

/// Check a request head; `Err` is the reply to send. `raw_content_length` tells whether
/// the raw head carried Content-Length (see [`raw_has_content_length`]).
pub fn check(
    req: &RequestHeader,
    raw_content_length: bool,
    limits: HeadLimits,
) -> Result<(), Reply> {
    if req.raw_path().len() > limits.max_uri_bytes {
        return Err(Reply::new(
            414,
            "uri_too_long",
            format!(
                "the request target is longer than {} bytes",
                limits.max_uri_bytes
            ),
        )
        .closing());
    }
    check_path(req.uri.path())?;
    if req.headers.len() > limits.max_headers {
        return Err(Reply::new(
            431,
            "too_many_headers",
            format!("more than {} request header fields", limits.max_headers),
        )
        .closing());
    }
    let bytes: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(Reply::new(
            431,
            "headers_too_large",
            format!("request headers exceed {} bytes", limits.max_header_bytes),
        )
        .closing());
    }

    let mut te = req
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .peekable();
    if te.peek().is_none() {
        return Ok(());
    }
    if req.version == Version::HTTP_10 {
        return Err(Reply::new(
            400,
            "bad_request",
            "Transfer-Encoding is not allowed in HTTP/1.0",
        )
        .closing());
    }
    if raw_content_length || req.headers.contains_key(header::CONTENT_LENGTH) {
        return Err(Reply::new(
            400,
            "bad_request",
            "a request must not carry both Content-Length and Transfer-Encoding",
        )
        .closing());
    }
    let mut codings = te.flat_map(|v| v.as_bytes().split(|b| *b == b','));
    let only_chunked = codings
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none();
    if !only_chunked {
        return Err(Reply::new(
            501,
            "unsupported_transfer_encoding",
            "only Transfer-Encoding: chunked is supported",
        )
        .closing());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_headers: 10,
        max_header_bytes: 200,
        max_uri_bytes: 64,
    };

    fn req(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        r.set_version(version);
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn status(r: &RequestHeader) -> Option<u16> {
        check(r, false, LIMITS).err().map(|e| e.status)
    }

    #[test]
    fn content_length_seen_in_raw_head() {
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 4\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\n\r\n"
        ));
        let te = req(Version::HTTP_11, &[("transfer-encoding", "chunked")]);
        assert_eq!(check(&te, true, LIMITS).unwrap_err().status, 400);
    }

    #[test]
    fn transfer_encoding_rules() {
        assert_eq!(
            status(&req(Version::HTTP_11, &[("transfer-encoding", "chunked")])),
            None
        );
        assert_eq!(
            status(&req(
                Version::HTTP_11,
                &[("transfer-encoding", " Chunked ")]
            )),
            None
        );
        assert_eq!(
            status(&req(
                Version::HTTP_11,
                &[("transfer-encoding", "chunked"), ("content-length", "5")]
            )),
            Some(400)
        );
        assert_eq!(
            status(&req(Version::HTTP_10, &[("transfer-encoding", "chunked")])),
            Some(400)
        );
        assert_eq!(
            status(&req(
                Version::HTTP_11,
                &[("transfer-encoding", "gzip, chunked")]
            )),
            Some(501)
        );
        assert_eq!(
            status(&req(
                Version::HTTP_11,
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ]
            )),
            Some(501)
        );
        assert_eq!(
            status(&req(Version::HTTP_11, &[("transfer-encoding", "identity")])),
            Some(501)
        );
        assert_eq!(
            status(&req(Version::HTTP_11, &[("content-length", "5")])),
            None
        );
        assert!(
            check(
                &req(Version::HTTP_10, &[("transfer-encoding", "chunked")]),
                false,
                LIMITS
            )
            .unwrap_err()
            .close
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in [
            "/a/../b",
            "/..",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/%2E/x",
        ] {
            assert_eq!(check_path(bad).unwrap_err().status, 400, "{bad}");
        }
        for good in [
            "/a/b",
            "/a/.well-known/x",
            "/a/...",
            "/v1.2/x",
            "/a/%2e%2e%2e",
            "/",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn uri_limit() {
        let mut r = req(Version::HTTP_11, &[]);
        r.set_uri(format!("/{}", "a".repeat(100)).parse().unwrap());
        assert_eq!(status(&r), Some(414));
    }

    #[test]
    fn header_limits() {
        let many: Vec<(String, String)> =
            (0..11).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(status(&req(Version::HTTP_11, &many)), Some(431));
        let big = "v".repeat(300);
        assert_eq!(
            status(&req(Version::HTTP_11, &[("x-big", &big)])),
            Some(431)
        );
    }
}
