//! JWT issuers: ids, owning tenant, the key source (JWKS URL, PEM key or shared secret),
//! algorithms and claim headers.

use super::rules::valid_token;
use super::{Collector, ResourceContext, TenantIds};
use crate::bounds as b;
use crate::JwtIssuer;
use std::collections::HashSet;

/// Every JWT issuer. A second issuer with the same id is a conflict, a tenant that does not
/// exist a dangling reference; JWKS URLs must stay out of special-purpose networks other
/// than `ctx.jwks_allowed_networks`.
pub(super) fn check(
    c: &mut Collector,
    issuers: &[JwtIssuer],
    tenant_ids: &TenantIds<'_>,
    ctx: &ResourceContext,
) {
    let mut issuer_ids = HashSet::new();
    for (i, j) in issuers.iter().enumerate() {
        let p = format!("jwt_issuers[{i}]");
        if c.id(format!("{p}.id"), &j.id) && !issuer_ids.insert(j.id.as_str()) {
            c.conflict(format!("{p}.id"), format!("'{}' is listed twice", j.id));
        }
        c.tenant_ref(format!("{p}.tenant_id"), &j.tenant_id, tenant_ids);
        if j.issuer.is_empty() {
            c.err(format!("{p}.issuer"), "must not be empty");
        }
        c.max_len(format!("{p}.issuer"), &j.issuer, b::ISSUER_BYTES);
        c.max_items(format!("{p}.audiences"), j.audiences.len(), b::AUDIENCES);
        for (k, a) in j.audiences.iter().enumerate() {
            c.max_len(format!("{p}.audiences[{k}]"), a, b::ISSUER_BYTES);
        }
        c.max_items(format!("{p}.algorithms"), j.algorithms.len(), b::AUDIENCES);
        c.max_items(
            format!("{p}.claim_headers"),
            j.claim_headers.len(),
            b::CLAIM_HEADERS,
        );
        if let Some(pem) = &j.public_key_pem {
            c.max_len(format!("{p}.public_key_pem"), pem, b::PEM_BYTES);
        }
        c.range(format!("{p}.leeway_s"), j.leeway_s, 0, b::LEEWAY_S);
        c.range(
            format!("{p}.jwks_refresh_s"),
            j.jwks_refresh_s,
            1,
            b::JWKS_REFRESH_S,
        );
        let sources = [
            j.jwks_url.is_some(),
            j.public_key_pem.is_some(),
            j.shared_secret.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            c.err(
                format!("{p}.jwks_url"),
                "exactly one of jwks_url, public_key_pem and shared_secret is needed",
            );
        }
        if let Some(u) = &j.jwks_url {
            if c.max_len(format!("{p}.jwks_url"), u, b::URL_BYTES) {
                if let Err(e) = crate::netrules::check_fetch_url(u, &ctx.jwks_allowed_networks) {
                    c.err(format!("{p}.jwks_url"), e);
                }
            }
        }
        if let Some(secret) = &j.shared_secret {
            c.range(
                format!("{p}.shared_secret"),
                secret.len(),
                32,
                b::SECRET_BYTES,
            );
        }
        if j.algorithms.is_empty() {
            c.err(
                format!("{p}.algorithms"),
                "at least one algorithm is needed",
            );
        }
        let mut algorithms = HashSet::new();
        for (k, a) in j.algorithms.iter().enumerate() {
            if !algorithms.insert(a.as_str()) {
                c.err(
                    format!("{p}.algorithms[{k}]"),
                    format!("'{a}' is listed twice"),
                );
            }
            let family = match a.as_str() {
                "HS256" | "HS384" | "HS512" => "hmac",
                "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "rsa",
                "ES256" | "ES384" => "ec",
                "EdDSA" => "ed",
                _ => {
                    c.err(
                        format!("{p}.algorithms[{k}]"),
                        format!("'{a}' is not a supported algorithm (never 'none')"),
                    );
                    continue;
                }
            };
            if (family == "hmac") != j.shared_secret.is_some() {
                c.err(
                    format!("{p}.algorithms[{k}]"),
                    format!("'{a}' does not fit the key: HS* needs shared_secret, and a shared secret only HS*"),
                );
            }
        }
        if let Some(cookie) = &j.cookie {
            if !valid_token(cookie) {
                c.err(format!("{p}.cookie"), "not a valid cookie name");
            }
        }
        for (claim, header) in &j.claim_headers {
            if claim.is_empty() || claim.len() > b::TOKEN_BYTES {
                c.err(
                    format!("{p}.claim_headers"),
                    format!("claim names must be 1-{} bytes", b::TOKEN_BYTES),
                );
            }
            if !valid_token(header) {
                c.err(
                    format!("{p}.claim_headers.{claim}"),
                    "not a valid header name",
                );
            }
        }
        c.range(
            format!("{p}.jwks_min_refetch_s"),
            j.jwks_min_refetch_s,
            1,
            b::JWKS_REFRESH_S,
        );
    }
}
