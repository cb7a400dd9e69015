//! W3C Trace Context (`traceparent`): the gateway joins the client's trace when it sends a
//! valid `traceparent` (else starts one), forwards `traceparent` with its own span id as the
//! parent to the origin (`tracestate` passes through), and logs the trace and span ids.

use http::HeaderValue;

/// This hop of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// The gateway's span: 16 lower-case hex digits.
    pub span_id: String,
    /// The caller's span, when the client sent one.
    pub parent_id: Option<String>,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

/// Parse a `traceparent` value (version 00, or a later version read as 00, per the spec).
pub fn parse(value: &str) -> Option<(String, String, u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
        return None;
    }
    if !is_hex(parent, 16) || parent.bytes().all(|b| b == b'0') || !is_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace.to_string(), parent.to_string(), flags))
}

impl TraceContext {
    /// Join the client's trace, or start a new (sampled) one.
    pub fn from_request(traceparent: Option<&HeaderValue>) -> TraceContext {
        match traceparent.and_then(|v| v.to_str().ok()).and_then(parse) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id: random_hex(8),
                parent_id: Some(parent),
                flags,
            },
            None => TraceContext {
                trace_id: random_hex(16),
                span_id: random_hex(8),
                parent_id: None,
                flags: 1,
            },
        }
    }

    /// The `traceparent` for the origin: this hop's span is its parent.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_a_valid_trace_and_refuses_bad_ones() {
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = TraceContext::from_request(Some(&v));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(t
            .header()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(t.header().ends_with("-01"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        // A future version with more fields is read as version 00.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
    }

    #[test]
    fn starts_a_trace_when_absent() {
        let t = TraceContext::from_request(None);
        assert!(is_hex(&t.trace_id, 32) && is_hex(&t.span_id, 16));
        assert_eq!(t.parent_id, None);
        assert_eq!(parse(&t.header()).unwrap().0, t.trace_id);
    }
}
