//! Request checks that keep the gateway safe from request smuggling and oversized headers.
//!
//! Pingora refuses duplicate or invalid Content-Length but accepts a request carrying both
//! Content-Length and Transfer-Encoding (it ignores Content-Length). A front proxy that lets
//! such a request through can disagree with the origin about where it ends, so the gateway
//! refuses it, like nginx does, and closes the connection.

use crate::errors::Reply;
use http::{header, Version};
use pingora::http::RequestHeader;

/// Limits from the server settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most header fields (each value counts).
    pub max_headers: usize,
    /// Largest total of names and values in bytes.
    pub max_header_bytes: usize,
}

/// Check a request head; `Err` is the reply to send.
pub fn check(req: &RequestHeader, limits: Limits) -> Result<(), Reply> {
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
    if req.headers.contains_key(header::CONTENT_LENGTH) {
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

    const LIMITS: Limits = Limits {
        max_headers: 10,
        max_header_bytes: 200,
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
        check(r, LIMITS).err().map(|e| e.status)
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
                LIMITS
            )
            .unwrap_err()
            .close
        );
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
