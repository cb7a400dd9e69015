//! W3C Trace Context (`traceparent`): the gateway joins the client's trace when it sends a
//! valid `traceparent` (else starts one), forwards `traceparent` with its own span id as the
//! parent to the origin (`tracestate` passes through), and logs the trace and span ids.
//!
//! Ids are kept as bytes and written as hex only where they are sent or logged.

use http::HeaderValue;

/// This hop of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The gateway's span.
    pub span_id: [u8; 8],
    /// The caller's span, when the client sent one.
    pub parent_id: Option<[u8; 8]>,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// An id in lower-case hex, on the stack (`N` digits).
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Hex<N> {
        let mut out = [0u8; N];
        // Lengths are fixed by the callers (N = 2 × bytes).
        let _ = hex::encode_to_slice(bytes, &mut out);
        Hex(out)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

fn is_hex(s: &[u8], len: usize) -> bool {
    s.len() == len
        && s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Parse a `traceparent` value (version 00, or a later version read as 00, per the spec):
/// the trace id, the caller's span id and the flags.
pub fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let value = value.trim_ascii();
    let mut parts = value.split(|&b| b == b'-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if !is_hex(version, 2) || version == b"ff" || (version == b"00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace, 32) || trace.iter().all(|&b| b == b'0') {
        return None;
    }
    if !is_hex(parent, 16) || parent.iter().all(|&b| b == b'0') || !is_hex(flags, 2) {
        return None;
    }
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    let mut f = [0u8; 1];
    hex::decode_to_slice(trace, &mut t).ok()?;
    hex::decode_to_slice(parent, &mut p).ok()?;
    hex::decode_to_slice(flags, &mut f).ok()?;
    Some((t, p, f[0]))
}

impl TraceContext {
    /// Join the client's trace, or start a new (sampled) one.
    pub fn from_request(traceparent: Option<&HeaderValue>) -> TraceContext {
        match traceparent.and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id: crate::ids::nonzero(),
                parent_id: Some(parent),
                flags,
            },
            None => TraceContext {
                trace_id: crate::ids::nonzero(),
                span_id: crate::ids::nonzero(),
                parent_id: None,
                flags: 1,
            },
        }
    }

    pub fn trace_id_hex(&self) -> Hex<32> {
        Hex::of(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> Hex<16> {
        Hex::of(&self.span_id)
    }

    /// The `traceparent` for the origin: this hop's span is its parent.
    pub fn header(&self) -> HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        buf[3..35].copy_from_slice(&self.trace_id_hex().0);
        buf[35] = b'-';
        buf[36..52].copy_from_slice(&self.span_id_hex().0);
        buf[52] = b'-';
        buf[53..55].copy_from_slice(&Hex::<2>::of(&[self.flags]).0);
        HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_a_valid_trace_and_refuses_bad_ones() {
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = TraceContext::from_request(Some(&v));
        assert_eq!(
            t.trace_id_hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(t.parent_id, Some(hex_bytes("00f067aa0ba902b7")));
        assert_ne!(t.span_id_hex().as_str(), "00f067aa0ba902b7");
        let h = t.header();
        let h = h.to_str().unwrap();
        assert!(h.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{h}");
        assert!(h.ends_with("-01"), "{h}");
        assert_eq!(&h[36..52], t.span_id_hex().as_str());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
        // A future version with more fields is read as version 00.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
        // Flags other than sampled pass through.
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(TraceContext::from_request(Some(&v))
            .header()
            .to_str()
            .unwrap()
            .ends_with("-00"));
    }

    fn hex_bytes<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    #[test]
    fn starts_a_trace_when_absent() {
        let t = TraceContext::from_request(None);
        assert!(is_hex(t.trace_id_hex().as_str().as_bytes(), 32));
        assert!(is_hex(t.span_id_hex().as_str().as_bytes(), 16));
        assert_eq!(t.parent_id, None);
        let h = t.header();
        assert_eq!(parse(h.as_bytes()).unwrap().0, t.trace_id);
        assert_ne!(TraceContext::from_request(None).trace_id, t.trace_id);
    }
}
