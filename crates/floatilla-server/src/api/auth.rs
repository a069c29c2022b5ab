//! Bearer API tokens: `Authorization: Bearer fat1.<secret>`, stored as SHA-256 hashes.

use axum::extract::FromRequestParts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use floatilla_domain::model::{ApiToken, Tenant};
use floatilla_domain::{Role, TenantId};
use http::header::AUTHORIZATION;
use http::request::Parts;
use rand::Rng;

use crate::error::Error;
use crate::state::AppState;

const API_TOKEN_PREFIX: &str = "fat1.";

/// A new API token's secret text and the hash that is stored instead of it.
pub fn new_api_token_secret() -> (String, String) {
    let secret: [u8; 32] = rand::rng().random();
    let text = format!("{API_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = floatilla_protocol::secrets::secret_hash(&secret);
    (text, hash)
}

fn hash_of(presented: &str) -> Option<String> {
    let encoded = presented.strip_prefix(API_TOKEN_PREFIX)?;
    let secret: [u8; 32] = URL_SAFE_NO_PAD.decode(encoded).ok()?.try_into().ok()?;
    Some(floatilla_protocol::secrets::secret_hash(&secret))
}

/// The authenticated caller of an API route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: ApiToken,
}

impl Caller {
    /// The caller's tenant; refuses with `403 forbidden` unless the caller's role includes
    /// `needed`, a tenant role (so a provider token is refused every tenant's routes).
    pub fn require(&self, needed: Role) -> Result<TenantId, Error> {
        match self.token.tenant_id {
            Some(tenant) if self.token.role.allows(needed) => Ok(tenant),
            _ => Err(Error::Forbidden(needed)),
        }
    }

    /// The caller's tenant as stored, if the caller's role includes `needed`.
    pub async fn tenant_record(&self, state: &AppState, needed: Role) -> Result<Tenant, Error> {
        let tenant = self.require(needed)?;
        state
            .store
            .tenant(tenant)
            .await?
            .ok_or(Error::NotFound("tenant"))
    }

    /// Refuses with `403 forbidden` unless the caller is the provider.
    pub fn require_provider(&self) -> Result<(), Error> {
        if self.token.role == Role::Provider {
            Ok(())
        } else {
            Err(Error::Forbidden(Role::Provider))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(Error::Unauthenticated)?;
        let hash = hash_of(presented.trim()).ok_or(Error::Unauthenticated)?;
        let token = state
            .store
            .api_token_by_hash(&hash)
            .await?
            .filter(|token| token.revoked_at.is_none())
            .ok_or(Error::Unauthenticated)?;
        if token
            .tenant_id
            .is_some_and(|tenant| state.tenancy.is_suspended(tenant))
        {
            return Err(Error::TenantSuspended);
        }
        Ok(Caller { token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hashes_to_what_was_stored() {
        let (text, hash) = new_api_token_secret();
        assert_eq!(hash_of(&text), Some(hash));
        assert_eq!(hash_of("fat1.short"), None);
        assert_eq!(hash_of(&text.replace("fat1.", "fat2.")), None);
    }
}
