//! Reading an HTTP/1 request head under a deadline, and judging it before Pingora sees it.
//!
//! Pingora reads a head with a timeout per read (a client trickling a byte at a time keeps a
//! connection forever) and answers a head it cannot accept with an empty `400` carrying
//! `Server: Pingora`. Here the whole head must arrive by a deadline, and a head is judged
//! with Pingora's own parser and checks (run over the buffered bytes), so that every refusal
//! is the gateway's JSON error while everything Pingora accepts still goes through.

use crate::errors::Reply;
use bytes::BytesMut;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::Stream;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Pingora's limit on header fields (and httparse's array here).
pub const MAX_HEADERS: usize = 256;

/// Sizes a head may have.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request target.
    pub max_uri_bytes: usize,
    /// Longest whole head.
    pub max_head_bytes: usize,
}

/// The outcome of reading one request head.
#[derive(Debug)]
pub enum Head {
    /// A complete head Pingora will accept; the bytes read so far (head and any body bytes
    /// that came with it).
    Ready(BytesMut),
    /// Refuse with this reply (the connection then closes). `head_only`: the request was a
    /// HEAD (the reply has no body).
    Refuse { reply: Reply, head_only: bool },
    /// Nothing to answer: the client went away, or sent nothing before the deadline or the
    /// idle timeout.
    Closed,
}

/// Why reading stopped early.
enum Stop {
    Timeout,
    Eof,
    Error,
}

async fn read_some(stream: &mut Stream, buf: &mut BytesMut, until: Instant) -> Result<(), Stop> {
    // tokio's timer: measured cheaper here than Pingora's fast timeout (whose lazy start
    // does not help, since a kept-alive connection's next head is never there yet).
    match tokio::time::timeout_at(until, stream.read_buf(buf)).await {
        Err(_) => Err(Stop::Timeout),
        Ok(Ok(0)) => Err(Stop::Eof),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Stop::Error),
    }
}

/// Read one request head. The first byte must come within `first_byte` (the header deadline
/// on a new connection, the keep-alive idle timeout on a reused one); the whole head within
/// `header_timeout` of that (of the connection's start on a new connection).
pub async fn read(
    stream: &mut Stream,
    first_byte: Duration,
    header_timeout: Duration,
    new_connection: bool,
    limits: HeadLimits,
) -> Head {
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(4096);
    if let Err(stop) = read_some(stream, &mut buf, started + first_byte).await {
        if matches!(stop, Stop::Timeout) && new_connection {
            crate::telemetry::metrics::METRICS
                .client_timeouts
                .with_label_values(&["header"])
                .inc();
        }
        return Head::Closed;
    }
    let deadline = if new_connection {
        started + header_timeout
    } else {
        Instant::now() + header_timeout
    };
    // A head only completes, or goes wrong, at a line end: bytes without one are not parsed
    // again (a client sending a byte at a time costs one scan per byte, not one parse).
    let mut parsed_to = 0;
    loop {
        let fresh = &buf[parsed_to..];
        if fresh.contains(&b'\n') || !may_be_request(&buf) {
            if let Some(verdict) = parse(&buf, limits) {
                return verdict.into_head(buf, limits).await;
            }
        }
        parsed_to = buf.len();
        if let Some(reply) = too_large(&buf, limits) {
            return Head::Refuse {
                reply,
                head_only: false,
            };
        }
        match read_some(stream, &mut buf, deadline).await {
            Ok(()) => {}
            Err(Stop::Timeout) => {
                crate::telemetry::metrics::METRICS
                    .client_timeouts
                    .with_label_values(&["header"])
                    .inc();
                return Head::Refuse {
                    reply: Reply::new(
                        408,
                        "request_timeout",
                        "the request head did not arrive in time",
                    )
                    .closing(),
                    head_only: false,
                };
            }
            Err(Stop::Eof | Stop::Error) => return Head::Closed,
        }
    }
}

/// A partial head that is already too long.
fn too_large(buf: &[u8], limits: HeadLimits) -> Option<Reply> {
    let line_end = buf.iter().position(|b| *b == b'\n');
    if line_end.is_none_or(|n| n > limits.max_uri_bytes + 32)
        && buf.len() > limits.max_uri_bytes + 32
    {
        return Some(uri_too_long(limits));
    }
    (buf.len() > limits.max_head_bytes).then(|| {
        Reply::new(
            431,
            "headers_too_large",
            format!(
                "the request head is larger than {} bytes",
                limits.max_head_bytes
            ),
        )
        .closing()
    })
}

fn uri_too_long(limits: HeadLimits) -> Reply {
    Reply::new(
        414,
        "uri_too_long",
        format!(
            "the request target is longer than {} bytes",
            limits.max_uri_bytes
        ),
    )
    .closing()
}

/// Bytes of an origin-form target that every URI parser takes as they are.
fn plain_target(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// What to do with a complete head.
enum Verdict {
    /// Plainly valid: hand it to Pingora.
    Plain,
    /// Unusual: Pingora's parser and checks decide.
    Probe {
        head_only: bool,
    },
    Refuse {
        reply: Reply,
        head_only: bool,
    },
}

impl Verdict {
    async fn into_head(self, buf: BytesMut, limits: HeadLimits) -> Head {
        match self {
            Verdict::Plain => Head::Ready(buf),
            Verdict::Probe { head_only } => probe(buf, head_only, limits).await,
            Verdict::Refuse { reply, head_only } => Head::Refuse { reply, head_only },
        }
    }
}

/// Header fields the quick parse takes; a head with more is parsed again with Pingora's
/// limit ([`MAX_HEADERS`]). Small, since the array is initialised on every parse.
const QUICK_HEADERS: usize = 64;

/// Parse what was read so far; `None` while the head is incomplete.
fn parse(buf: &[u8], limits: HeadLimits) -> Option<Verdict> {
    let mut headers = [httparse::EMPTY_HEADER; QUICK_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Some(judge(&req, limits)),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(_)) => Some(judge(&req, limits)),
                Ok(httparse::Status::Partial) => None,
                Err(_) => Some(Verdict::Probe { head_only: false }),
            }
        }
        // Pingora retries some of these (it escapes illegal bytes in the target), so its
        // parser decides, on the whole head: read on while the head may still be fine.
        Err(_) if !has_end(buf) && may_be_request(buf) => None,
        Err(_) => Some(Verdict::Probe {
            head_only: buf.starts_with(b"HEAD "),
        }),
    }
}

/// The blank line that ends a head (httparse also takes bare LFs).
fn has_end(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// Could `buf` still become a request head Pingora accepts: a token method, and once the
/// request line is complete, an HTTP/1 version at its end?
fn may_be_request(buf: &[u8]) -> bool {
    let line = match buf.iter().position(|b| *b == b'\n') {
        Some(end) => &buf[..end],
        None => buf,
    };
    let method = line.split(|b| *b == b' ').next().unwrap_or(b"");
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !method.iter().all(token) {
        return false;
    }
    match buf.iter().position(|b| *b == b'\n') {
        Some(_) => {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
        }
        None => true,
    }
}

/// A complete head: the common, plainly valid shape is accepted here; anything unusual is
/// put to Pingora's own parser.
fn judge(req: &httparse::Request<'_, '_>, limits: HeadLimits) -> Verdict {
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    let head_only = method == "HEAD";
    if path.len() > limits.max_uri_bytes {
        return Verdict::Refuse {
            reply: uri_too_long(limits),
            head_only,
        };
    }
    if method == "CONNECT" {
        return Verdict::Refuse {
            reply: Reply::new(405, "method_not_allowed", "CONNECT is not supported").closing(),
            head_only,
        };
    }
    let mut hosts = 0;
    let mut lengths = 0;
    let mut plain = matches!(
        method,
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
    ) && plain_target(path);
    for h in req.headers.iter() {
        if !plain {
            break;
        }
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            plain = !h.value.contains(&b'@');
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            plain = !h.value.is_empty()
                && h.value.len() <= 18
                && h.value.iter().all(u8::is_ascii_digit);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            plain = false;
        }
    }
    if plain && hosts == 1 && lengths <= 1 {
        Verdict::Plain
    } else {
        Verdict::Probe { head_only }
    }
}

/// Pingora's verdict on a head: its parser and request checks run over a copy of the bytes.
async fn probe(buf: BytesMut, head_only: bool, limits: HeadLimits) -> Head {
    let mut session = HttpSession::new(Box::new(std::io::Cursor::new(buf.to_vec())));
    match session.read_request().await {
        // What Pingora accepts still meets the gateway's own limits.
        Ok(Some(_)) if session.req_header().raw_path().len() > limits.max_uri_bytes => {
            Head::Refuse {
                reply: uri_too_long(limits),
                head_only,
            }
        }
        Ok(Some(_)) if session.req_header().method == http::Method::CONNECT => Head::Refuse {
            reply: Reply::new(405, "method_not_allowed", "CONNECT is not supported").closing(),
            head_only,
        },
        Ok(Some(_)) => Head::Ready(buf),
        Ok(None) => Head::Refuse {
            reply: Reply::new(400, "bad_request", "the request head is incomplete").closing(),
            head_only,
        },
        Err(e) => Head::Refuse {
            reply: refusal(&e),
            head_only,
        },
    }
}

/// The JSON refusal for Pingora's parse or check error (the client's bytes are never echoed).
pub fn refusal(e: &pingora::Error) -> Reply {
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or("");
    let (status, code, message) = match e.root_cause().downcast_ref::<httparse::Error>() {
        Some(httparse::Error::TooManyHeaders) => (
            431,
            "too_many_headers",
            format!("more than {MAX_HEADERS} request header fields"),
        ),
        Some(httparse::Error::HeaderName) => (
            400,
            "bad_request",
            "a header line has no valid name and colon".to_string(),
        ),
        Some(httparse::Error::HeaderValue) => (
            400,
            "bad_request",
            "a header value holds a control character or is folded across lines".to_string(),
        ),
        Some(httparse::Error::NewLine) => (
            400,
            "bad_request",
            "the request head has a malformed line ending".to_string(),
        ),
        Some(httparse::Error::Token | httparse::Error::Version | httparse::Error::Status) => (
            400,
            "bad_request",
            "the request line is malformed".to_string(),
        ),
        _ if context.starts_with("Request header larger than") => (
            431,
            "headers_too_large",
            "the request head is too large".to_string(),
        ),
        _ if context.contains("Host")
            || context.contains("authority")
            || context.contains("userinfo")
            || context.contains("request target") =>
        {
            (
                400,
                "bad_request",
                "the request's host is missing, repeated or ambiguous".to_string(),
            )
        }
        _ if context.contains("Transfer-Encoding") => (
            400,
            "bad_request",
            "the request's Transfer-Encoding is not acceptable".to_string(),
        ),
        _ if context.to_ascii_lowercase().contains("content-length") => (
            400,
            "bad_request",
            "the request's Content-Length is invalid".to_string(),
        ),
        _ => (
            400,
            "bad_request",
            "the request head is malformed".to_string(),
        ),
    };
    Reply::new(status, code, message).closing()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_uri_bytes: 1024,
        max_head_bytes: 8192,
    };

    async fn verdict(raw: &[u8]) -> Result<(), (u16, &'static str)> {
        let buf = BytesMut::from(raw);
        let head = parse(&buf, LIMITS)
            .expect("complete")
            .into_head(buf, LIMITS)
            .await;
        match head {
            Head::Ready(_) => Ok(()),
            Head::Refuse { reply, .. } => {
                assert!(reply.close);
                Err((reply.status, reply.code))
            }
            Head::Closed => panic!("closed"),
        }
    }

    #[tokio::test]
    async fn plain_and_unusual_heads_that_pingora_accepts_pass() {
        for raw in [
            &b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PURGE /a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a|b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ] {
            assert_eq!(verdict(raw).await, Ok(()), "{}", raw.escape_ascii());
        }
    }

    #[tokio::test]
    async fn malformed_heads_get_json_refusals() {
        for (raw, want) in [
            (
                &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"[..],
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
            (b"GET http://y/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 400),
            (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
            (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405),
        ] {
            assert_eq!(
                verdict(raw).await.map_err(|e| e.0),
                Err(want),
                "{}",
                raw.escape_ascii()
            );
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..300 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(verdict(&many).await, Err((431, "too_many_headers")));
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
        assert_eq!(verdict(long.as_bytes()).await, Err((414, "uri_too_long")));
        // Also when the target is one Pingora must escape first.
        let long = format!("GET /{}|b HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
        assert_eq!(verdict(long.as_bytes()).await, Err((414, "uri_too_long")));
        let odd = b"CONNECT /a|b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(verdict(odd).await, Err((405, "method_not_allowed")));
    }

    #[test]
    fn a_head_that_comes_in_pieces_is_judged_whole() {
        // An escapable target, or many header fields, split across reads: wait for the rest.
        for partial in [
            &b"GET /a|b HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /a|b HTT",
            b"GE",
        ] {
            assert!(
                parse(partial, LIMITS).is_none(),
                "{}",
                partial.escape_ascii()
            );
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        assert!(parse(&many, LIMITS).is_none());
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many, LIMITS), Some(Verdict::Plain)));
        // Garbage is refused at once, without waiting for a blank line that never comes.
        for garbage in [&b"\x16\x03\x01\x02\x00"[..], b"GET / XTTP/1.1\r\nHo"] {
            assert!(
                matches!(parse(garbage, LIMITS), Some(Verdict::Probe { .. })),
                "{}",
                garbage.escape_ascii()
            );
        }
    }

    #[test]
    fn partial_heads_that_are_already_too_long() {
        let line = vec![b'a'; 2000];
        assert_eq!(too_large(&line, LIMITS).map(|r| r.status), Some(414));
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'x', 9000));
        assert_eq!(too_large(&head, LIMITS).map(|r| r.status), Some(431));
        assert_eq!(too_large(b"GET / HTTP/1.1\r\nHo", LIMITS), None);
    }
}
