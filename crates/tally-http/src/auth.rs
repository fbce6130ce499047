//! API keys: how they look, how they are checked, and what each role may do.
//!
//! A key is `tally_` followed by 64 hex digits (32 random bytes); only its SHA-256 is stored. Keys are
//! resolved by that hash through the key cache ([`crate::traffic::cache`]): a revocation through this
//! process takes effect at once; one made elsewhere (`tally keys revoke`, another gateway) within the
//! cache's TTL, 1 s by default.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tally_core::model::{Principal, Role};

use crate::AppState;
use crate::error::ApiError;
use crate::traffic::Resolved;

/// A fresh key: its secret (shown once) and the hash to store.
pub struct NewKey {
    pub key_id: String,
    pub secret: String,
    pub hash: [u8; 32],
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn generate_key() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    let secret = format!("tally_{}", hex::encode(bytes));
    NewKey {
        key_id: format!("key_{}", hex::encode(id)),
        hash: hash_secret(&secret),
        secret,
    }
}

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The traffic middleware has usually resolved the key already.
        match parts.extensions.get::<Resolved>() {
            Some(Resolved::Key(entry)) => return Ok(Auth(entry.principal.clone())),
            Some(Resolved::BadKey) => return Err(ApiError::BadKey),
            None => {}
        }
        let secret = bearer(&parts.headers)?;
        let entry = state
            .traffic
            .resolve(hash_secret(secret), state.backend.keys.as_ref())
            .await?
            .ok_or(ApiError::BadKey)?;
        Ok(Auth(entry.principal.clone()))
    }
}

/// The secret of `Authorization: Bearer <key>`; `Unauthenticated` when the header is missing or
/// malformed.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthenticated)?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or(ApiError::Unauthenticated)
}

impl Auth {
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Allows the listed roles; everyone else gets 403.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} key may not do this",
                self.0.role.as_str()
            )))
        }
    }

    /// Admins may act for any store; a store key only for its own.
    pub fn for_store(&self, store_id: &str) -> Result<(), ApiError> {
        self.scoped(Role::Store, store_id, &[Role::Admin])
    }

    /// Admins may act for any supplier; a supplier key only for its own.
    pub fn for_supplier(&self, supplier_id: &str) -> Result<(), ApiError> {
        self.scoped(Role::Supplier, supplier_id, &[Role::Admin])
    }

    /// Reading a store: admins and analysts, or that store's key.
    pub fn reads_store(&self, store_id: &str) -> Result<(), ApiError> {
        self.scoped(Role::Store, store_id, &[Role::Admin, Role::Analyst])
    }

    /// Reading a supplier: admins and analysts, or that supplier's key.
    pub fn reads_supplier(&self, supplier_id: &str) -> Result<(), ApiError> {
        self.scoped(Role::Supplier, supplier_id, &[Role::Admin, Role::Analyst])
    }

    fn scoped(&self, role: Role, id: &str, unscoped: &[Role]) -> Result<(), ApiError> {
        let p = &self.0;
        if unscoped.contains(&p.role) || (p.role == role && p.scope.as_deref() == Some(id)) {
            return Ok(());
        }
        Err(ApiError::Forbidden(match (&p.role, &p.scope) {
            (r, Some(scope)) if *r == role => format!("this key is scoped to {scope}, not {id}"),
            (r, _) => format!("a {} key may not do this", r.as_str()),
        }))
    }
}
