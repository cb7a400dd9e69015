//! API keys: ids, owning tenant, the key's hash, name, prefix, scopes and expiry.

use super::rules::{check_name, valid_resource_id, valid_scope};
use super::{Collector, TenantIds};
use crate::bounds as b;
use crate::ApiKey;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

/// Every API key. A second key with the same id, or the same key (hash) under another id,
/// is a conflict; a tenant that does not exist is a dangling reference. Only a SHA-256 is
/// accepted, never a key.
pub(super) fn check(c: &mut Collector, keys: &[ApiKey], tenant_ids: &TenantIds<'_>) {
    let mut key_ids = HashSet::with_capacity(keys.len());
    let mut hashes: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if clean(k, tenant_ids) {
            if !key_ids.insert(k.id.as_str()) {
                c.conflict(
                    format!("api_keys[{i}].id"),
                    format!("'{}' is listed twice", k.id),
                );
            }
            if let Some(j) = hashes.insert(&k.key_hash, i) {
                c.conflict(
                    format!("api_keys[{i}].key_hash"),
                    format!("the same key is already api_keys[{j}]"),
                );
            }
            continue;
        }
        let p = format!("api_keys[{i}]");
        if c.id(format!("{p}.id"), &k.id) && !key_ids.insert(k.id.as_str()) {
            c.conflict(format!("{p}.id"), format!("'{}' is listed twice", k.id));
        }
        c.tenant_ref(format!("{p}.tenant_id"), &k.tenant_id, tenant_ids);
        if !lower_hex_sha256(&k.key_hash) {
            c.err(
                format!("{p}.key_hash"),
                "must be the lower-case hex SHA-256 of the key (64 characters), never the key",
            );
        } else if let Some(j) = hashes.insert(&k.key_hash, i) {
            c.conflict(
                format!("{p}.key_hash"),
                format!("the same key is already api_keys[{j}]"),
            );
        }
        check_name(c, &format!("{p}.name"), &k.name);
        if k.prefix.len() > b::SHORT_TEXT_BYTES || !k.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            c.err(
                format!("{p}.prefix"),
                format!(
                    "must be at most {} visible ASCII characters",
                    b::SHORT_TEXT_BYTES
                ),
            );
        }
        c.max_items(format!("{p}.scopes"), k.scopes.len(), b::SCOPES);
        for (s_i, scope) in k.scopes.iter().enumerate() {
            if !valid_scope(scope) {
                c.err(
                    format!("{p}.scopes[{s_i}]"),
                    format!("'{scope}' is not a valid scope"),
                );
            }
        }
        if let Some(t) = &k.expires_at {
            if humantime::parse_rfc3339_weak(t).is_err() {
                c.err(
                    format!("{p}.expires_at"),
                    format!("'{t}' is not an RFC 3339 time like 2027-01-01T00:00:00Z"),
                );
            }
        }
    }
}

fn lower_hex_sha256(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A key with nothing wrong in itself, found without building one message or path (a
/// fleet may hold millions of keys): the rules of the full check below, as one answer.
fn clean(k: &ApiKey, tenant_ids: &TenantIds<'_>) -> bool {
    let mut name = Collector::default();
    check_name(&mut name, "", &k.name);
    name.0.is_empty()
        && valid_resource_id(&k.id)
        && tenant_ids.contains_key(k.tenant_id.as_str())
        && lower_hex_sha256(&k.key_hash)
        && k.prefix.len() <= b::SHORT_TEXT_BYTES
        && k.prefix.bytes().all(|b| b.is_ascii_graphic())
        && k.scopes.len() <= b::SCOPES
        && k.scopes.iter().all(|s| valid_scope(s))
        && k.expires_at
            .as_ref()
            .is_none_or(|t| humantime::parse_rfc3339_weak(t).is_ok())
}
