//! Admin tokens: `Authorization: Bearer vat_...`, stored as SHA-256 hashes, each with a role
//! (`superadmin`, or `tenant_admin` bound to one tenant).

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: Uuid,
    /// `None` for a superadmin; the tenant of a tenant_admin.
    pub tenant: Option<Uuid>,
}

impl Principal {
    pub fn is_superadmin(&self) -> bool {
        self.tenant.is_none()
    }

    /// Refuse unless a superadmin.
    pub fn require_superadmin(&self) -> Result<(), ApiError> {
        if self.is_superadmin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs a superadmin token".to_string(),
            ))
        }
    }

    /// The tenant filter to apply: the caller's own tenant for a tenant_admin (asking for
    /// another one is 404), or what was asked for by a superadmin.
    pub fn scope(&self, asked: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
        match (self.tenant, asked) {
            (None, a) => Ok(a),
            (Some(own), None) => Ok(Some(own)),
            (Some(own), Some(a)) if a == own => Ok(Some(own)),
            (Some(_), Some(_)) => Err(ApiError::not_found("tenant")),
        }
    }

    /// May the caller see things of `tenant`?
    pub fn sees(&self, tenant: &str) -> bool {
        match self.tenant {
            None => true,
            Some(own) => own.to_string() == tenant,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("credentials are required".into()))
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `prefix` followed by 32 random characters of `[A-Za-z0-9]` (the same scheme as
/// `vantage-proxy gen-key`).
pub fn random_token(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; 32];
    random[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    random[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    let body: String = random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{prefix}{body}")
}

/// A new API key for the proxy: `vk_live_` + 32 characters.
pub fn generate_api_key() -> String {
    random_token("vk_live_")
}

/// A new admin token: `vat_` + 32 characters.
pub fn generate_admin_token() -> String {
    random_token("vat_")
}

/// Middleware: resolve the bearer token into a [`Principal`] or answer 401.
pub async fn require_token(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim())
                .filter(|t| !t.is_empty())
        })
        .ok_or_else(|| ApiError::Unauthorized("an admin bearer token is required".into()))?;
    let hash = sha256_hex(token);
    let client = st.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id, tenant_id FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            &[&hash],
        )
        .await?;
    drop(client);
    let row = row.ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
    req.extensions_mut().insert(Principal {
        token_id: row.get(0),
        tenant: row.get(1),
    });
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_right() {
        let k = generate_api_key();
        assert!(k.starts_with("vk_live_") && k.len() == 40, "{k}");
        assert!(k[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(k, generate_api_key());
        assert!(generate_admin_token().starts_with("vat_"));
        assert_eq!(
            sha256_hex("vk_live_demo_acme_key_do_not_use_in_prod"),
            "0fb79b89f74e806c22e22ca7869e9fe613e70929793c7fcd947fcf23396e3d55"
        );
    }
}
