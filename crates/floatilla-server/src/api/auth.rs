//! Who calls: bearer API tokens (`Authorization: Bearer fat1.<secret>`, stored as SHA-256
//! hashes) on the API, console sessions on the console; both become a [`Caller`].

use axum::extract::FromRequestParts;
use floatilla_domain::accounts::{Actor, User};
use floatilla_domain::model::{ApiToken, Tenant};
use floatilla_domain::{Role, TenantId};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::error::Error;
use crate::state::AppState;

const API_TOKEN_PREFIX: &str = "fat1.";

/// A new API token's secret text and the hash that is stored instead of it.
pub fn new_api_token_secret() -> (String, String) {
    let (secret, hash) = crate::accounts::new_secret();
    (format!("{API_TOKEN_PREFIX}{secret}"), hash)
}

fn hash_of(presented: &str) -> Option<String> {
    crate::accounts::hash_of_secret(presented.strip_prefix(API_TOKEN_PREFIX)?)
}

/// Who is calling an API or console route, with what role, in which tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub role: Role,
    /// `None` for the provider.
    pub tenant_id: Option<TenantId>,
}

impl Caller {
    /// The caller of an API token.
    pub fn of_token(token: &ApiToken) -> Self {
        Caller {
            actor: Actor::Token {
                id: token.id,
                name: token.name.clone(),
            },
            role: token.role,
            tenant_id: token.tenant_id,
        }
    }

    /// The caller of a console session.
    pub fn of_user(user: &User) -> Self {
        Caller {
            actor: Actor::User {
                id: user.id,
                email: user.email.clone(),
            },
            role: user.role,
            tenant_id: user.tenant_id,
        }
    }

    /// How the caller is named in events and messages: a token's name or an e-mail address.
    pub fn name(&self) -> &str {
        self.actor.name()
    }

    /// The caller's tenant; refuses with `403 forbidden` unless the caller's role includes
    /// `needed`, a tenant role (so a provider is refused every tenant's routes).
    pub fn require(&self, needed: Role) -> Result<TenantId, Error> {
        match self.tenant_id {
            Some(tenant) if self.role.allows(needed) => Ok(tenant),
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
        if self.role == Role::Provider {
            Ok(())
        } else {
            Err(Error::Forbidden(Role::Provider))
        }
    }

    /// Refuses a caller whose tenant the provider suspended.
    pub fn check_not_suspended(&self, state: &AppState) -> Result<(), Error> {
        if self
            .tenant_id
            .is_some_and(|tenant| state.tenancy.is_suspended(tenant))
        {
            return Err(Error::TenantSuspended);
        }
        Ok(())
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
        let caller = Caller::of_token(&token);
        crate::audit::identified(parts, &caller);
        caller.check_not_suspended(state)?;
        Ok(caller)
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
