//! Random identifiers made on the request path: request ids (UUID v4) and W3C trace and
//! span ids. None of them is a secret — they name a request in logs and traces — so they
//! come from a fast non-cryptographic generator (wyrand, via `fastrand`), one per thread,
//! seeded from the operating system's randomness (std's `RandomState` keys) so that two
//! processes or threads never share a sequence.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static RNG: Cell<fastrand::Rng> = Cell::new(fastrand::Rng::with_seed(os_seed()));
}

/// 64 bits from the OS: each `RandomState` is keyed from the OS's randomness (per thread,
/// then advanced), and hashing a fixed value through it yields a uniformly mixed word.
fn os_seed() -> u64 {
    RandomState::new().hash_one(0x5eed_u64)
}

/// Fill `out` with random bytes from this thread's generator.
pub fn fill(out: &mut [u8]) {
    RNG.with(|cell| {
        let mut rng = cell.replace(fastrand::Rng::with_seed(0));
        rng.fill(out);
        cell.set(rng);
    });
}

/// `N` random bytes, of which not all are zero (a W3C id of zeros is invalid).
pub fn nonzero<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    loop {
        fill(&mut out);
        if out.iter().any(|&b| b != 0) {
            return out;
        }
    }
}

/// A new request id: a UUID v4 in its hyphenated lower-case form.
pub fn request_id() -> http::HeaderValue {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    http::HeaderValue::from_str(id).unwrap_or(http::HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn request_ids_are_uuid_v4_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = request_id();
            let u = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(u), "repeated id {u}");
        }
    }

    #[test]
    fn threads_do_not_share_a_sequence() {
        let a = std::thread::spawn(nonzero::<16>).join().unwrap();
        let b = std::thread::spawn(nonzero::<16>).join().unwrap();
        assert_ne!(a, b);
    }
}
