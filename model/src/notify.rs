//! Signed config-change notices, published by the admin service on the Redis channel
//! `<prefix>:config` after every committed write and checked by every proxy.
//!
//! Wire format (one JSON object per message):
//!
//! ```json
//! {"version":42,"tenant_id":"6f1c...","ts":1767225600000,"sig":"<64 hex>"}
//! ```
//!
//! `tenant_id` is `null` when the change is not about one tenant. `ts` is the sender's clock
//! in Unix milliseconds. `sig` is the lower-case hex HMAC-SHA256, keyed with the shared
//! secret, of the string `"{version}|{tenant_id or empty}|{ts}"`. A notice is only a hint:
//! the receiver reads the truth (`vantage_config()`) from Postgres.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What changed: the config version committed, and the tenant it was about (if one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Value of `vantage_config_version()` right after the write committed.
    pub version: i64,
    /// The tenant whose configuration changed; `None` for changes that are not about one.
    pub tenant_id: Option<String>,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The shared secret is empty: nothing can be signed or trusted.
    #[error("the notify secret is empty")]
    EmptySecret,
    /// Not a notice (bad JSON, missing or mistyped fields, empty tenant id).
    #[error("malformed notice: {0}")]
    Malformed(String),
    /// The signature is missing, not hex, or does not match.
    #[error("bad signature")]
    BadSignature,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    version: i64,
    tenant_id: Option<String>,
    ts: u64,
    #[serde(default)]
    sig: Option<String>,
}

fn mac(secret: &[u8], version: i64, tenant_id: Option<&str>, ts: u64) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(format!("{version}|{}|{ts}", tenant_id.unwrap_or("")).as_bytes());
    m
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The signed message for `notice`, stamped with the current time.
pub fn sign(secret: impl AsRef<[u8]>, notice: &Notice) -> String {
    sign_at(secret, notice, now_ms())
}

/// The signed message for `notice` with an explicit timestamp (Unix milliseconds).
pub fn sign_at(secret: impl AsRef<[u8]>, notice: &Notice, ts: u64) -> String {
    let sig = hex::encode(
        mac(
            secret.as_ref(),
            notice.version,
            notice.tenant_id.as_deref(),
            ts,
        )
        .finalize()
        .into_bytes(),
    );
    let wire = Wire {
        version: notice.version,
        tenant_id: notice.tenant_id.clone(),
        ts,
        sig: Some(sig),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Check a message: well-formed, and signed with `secret` (constant-time comparison).
pub fn verify(secret: impl AsRef<[u8]>, message: &str) -> Result<Notice, NotifyError> {
    verify_with_ts(secret, message).map(|(n, _)| n)
}

/// [`verify`], also returning the sender's timestamp (Unix milliseconds).
pub fn verify_with_ts(
    secret: impl AsRef<[u8]>,
    message: &str,
) -> Result<(Notice, u64), NotifyError> {
    let secret = secret.as_ref();
    if secret.is_empty() {
        return Err(NotifyError::EmptySecret);
    }
    let wire: Wire =
        serde_json::from_str(message).map_err(|e| NotifyError::Malformed(e.to_string()))?;
    if wire.tenant_id.as_deref() == Some("") {
        return Err(NotifyError::Malformed("empty tenant_id".into()));
    }
    let sig = wire.sig.as_deref().ok_or(NotifyError::BadSignature)?;
    let sig = hex::decode(sig).map_err(|_| NotifyError::BadSignature)?;
    mac(secret, wire.version, wire.tenant_id.as_deref(), wire.ts)
        .verify_slice(&sig)
        .map_err(|_| NotifyError::BadSignature)?;
    Ok((
        Notice {
            version: wire.version,
            tenant_id: wire.tenant_id,
        },
        wire.ts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-shared-secret-of-the-fleet";

    fn notice(t: Option<&str>) -> Notice {
        Notice {
            version: 42,
            tenant_id: t.map(String::from),
        }
    }

    #[test]
    fn round_trip() {
        for n in [notice(Some("6f1c2a4e-acme")), notice(None)] {
            let msg = sign(SECRET, &n);
            assert_eq!(verify(SECRET, &msg).unwrap(), n);
        }
    }

    #[test]
    fn wire_format_is_the_documented_one() {
        let msg = sign_at(SECRET, &notice(Some("t1")), 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["version"], 42);
        assert_eq!(v["tenant_id"], "t1");
        assert_eq!(v["ts"], 1_700_000_000_000u64);
        let mut m = HmacSha256::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(b"42|t1|1700000000000");
        assert_eq!(
            v["sig"].as_str().unwrap(),
            hex::encode(m.finalize().into_bytes())
        );
        let none = sign_at(SECRET, &notice(None), 5);
        assert!(none.contains("\"tenant_id\":null"), "{none}");
    }

    #[test]
    fn tampered_messages_are_refused() {
        let msg = sign_at(SECRET, &notice(Some("t1")), 1000);
        for tampered in [
            msg.replace("\"version\":42", "\"version\":43"),
            msg.replace("\"t1\"", "\"t2\""),
            msg.replace("\"t1\"", "null"),
            msg.replace("\"ts\":1000", "\"ts\":1001"),
        ] {
            assert_ne!(tampered, msg);
            assert_eq!(verify(SECRET, &tampered), Err(NotifyError::BadSignature));
        }
    }

    #[test]
    fn wrong_secret_garbage_and_unsigned_are_refused() {
        let msg = sign(SECRET, &notice(Some("t1")));
        assert_eq!(
            verify("another-secret", &msg),
            Err(NotifyError::BadSignature)
        );
        assert_eq!(verify("", &msg), Err(NotifyError::EmptySecret));
        for garbage in ["", "hello", "{}", "[1,2]", "{\"version\":\"x\",\"ts\":1}"] {
            assert!(matches!(
                verify(SECRET, garbage),
                Err(NotifyError::Malformed(_))
            ));
        }
        let unsigned = r#"{"version":42,"tenant_id":"t1","ts":1}"#;
        assert_eq!(verify(SECRET, unsigned), Err(NotifyError::BadSignature));
        let bad_hex = r#"{"version":42,"tenant_id":"t1","ts":1,"sig":"zz"}"#;
        assert_eq!(verify(SECRET, bad_hex), Err(NotifyError::BadSignature));
        let empty_tenant = sign(SECRET, &notice(Some("")));
        assert!(matches!(
            verify(SECRET, &empty_tenant),
            Err(NotifyError::Malformed(_))
        ));
    }
}
