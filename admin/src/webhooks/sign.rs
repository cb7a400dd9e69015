//! Signing secrets and signatures of the Standard Webhooks specification: a secret is
//! `whsec_` + base64 of 32 random bytes; the signature of a delivery is
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")) where the key
//! is the base64-decoded part of the secret after `whsec_`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` + base64 of 32 random bytes from the operating system.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        // No OS randomness (never seen on Linux): v4 UUIDs come from an OS-seeded generator.
        let mut h = Sha256::new();
        for _ in 0..3 {
            h.update(uuid::Uuid::new_v4().as_bytes());
        }
        key.copy_from_slice(&h.finalize());
    }
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The HMAC key of `secret` (`None` when it is not `whsec_<base64>`).
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    (!key.is_empty()).then_some(key)
}

/// The `webhook-signature` header value of one attempt: `v1,<base64 HMAC-SHA256>` over
/// `{id}.{timestamp}.{body}`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC-SHA256 accepts every key length")
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector() {
        // Published with the Standard Webhooks reference libraries: a receiver using any of
        // them verifies what we send.
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_32_random_bytes() {
        let a = generate_secret();
        assert!(a.starts_with("whsec_"), "{a}");
        assert_eq!(key_of(&a).unwrap().len(), 32);
        assert_ne!(a, generate_secret());
        assert_eq!(key_of("whsec_"), None);
        assert_eq!(key_of("whsec_not base64!"), None);
        assert_eq!(key_of("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), None);
    }
}
