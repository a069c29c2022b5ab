//! Who calls: bearer API tokens (`Authorization: Bearer fat1.<secret>`, stored as SHA-256
//! hashes) on the API, console sessions on the console; both become a [`Caller`].

use axum::extract::{FromRequestParts, MatchedPath};
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

/// Who may call a route, as its handler checks it.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// A tenant's role that includes this one.
    Tenant(Role),
    Provider,
    /// A tenant's admin or the provider, each for what is its own.
    AdminOrProvider,
}

impl Access {
    fn check(self, caller: &Caller) -> Result<(), Error> {
        match self {
            Access::Tenant(role) => caller.require(role).map(drop),
            Access::Provider => caller.require_provider(),
            Access::AdminOrProvider if caller.role == Role::Provider => Ok(()),
            Access::AdminOrProvider => caller.require(Role::Admin).map(drop),
        }
    }
}

/// The API routes whose body or query is read before their handler checks the caller's role,
/// with that role: checked here as well, once the caller is known, so that a caller whose role
/// may not is answered `403` whatever it sent, not `400` for a body that does not parse. The
/// handlers still check (the console calls them directly); the access matrix test holds both
/// to the same rule.
const CHECKED_BEFORE_PARSING: &[(&str, &str, Access)] = &[
    ("GET", "/api/v1/devices", Access::Tenant(Role::Viewer)),
    (
        "PATCH",
        "/api/v1/devices/{id}",
        Access::Tenant(Role::Operator),
    ),
    (
        "POST",
        "/api/v1/devices/{id}/allow-reenrollment",
        Access::Tenant(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/devices/import",
        Access::Tenant(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/devices/bulk",
        Access::Tenant(Role::Operator),
    ),
    (
        "POST",
        "/api/v1/devices/tags",
        Access::Tenant(Role::Operator),
    ),
    ("POST", "/api/v1/groups", Access::Tenant(Role::Operator)),
    (
        "PATCH",
        "/api/v1/groups/{id}",
        Access::Tenant(Role::Operator),
    ),
    (
        "PUT",
        "/api/v1/enrollment-policy",
        Access::Tenant(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/enrollment-tokens",
        Access::Tenant(Role::Admin),
    ),
    ("POST", "/api/v1/api-tokens", Access::Tenant(Role::Admin)),
    ("GET", "/api/v1/events", Access::Tenant(Role::Viewer)),
    ("GET", "/api/v1/artifacts", Access::Tenant(Role::Viewer)),
    ("POST", "/api/v1/artifacts", Access::Tenant(Role::Operator)),
    ("GET", "/api/v1/jobs", Access::Tenant(Role::Viewer)),
    ("POST", "/api/v1/jobs", Access::Tenant(Role::Operator)),
    ("POST", "/api/v1/jobs/status", Access::Tenant(Role::Viewer)),
    (
        "GET",
        "/api/v1/jobs/{id}/executions",
        Access::Tenant(Role::Viewer),
    ),
    ("GET", "/api/v1/rollouts", Access::Tenant(Role::Viewer)),
    ("POST", "/api/v1/rollouts", Access::Tenant(Role::Operator)),
    ("POST", "/api/v1/licenses", Access::Tenant(Role::Admin)),
    (
        "DELETE",
        "/api/v1/licenses/{id}",
        Access::Tenant(Role::Admin),
    ),
    ("GET", "/api/v1/license-usage", Access::Tenant(Role::Viewer)),
    (
        "POST",
        "/api/v1/activation-codes/redeem",
        Access::Tenant(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/activation-codes/import",
        Access::Tenant(Role::Admin),
    ),
    ("PATCH", "/api/v1/tenant", Access::Tenant(Role::Admin)),
    ("POST", "/api/v1/webhooks", Access::Tenant(Role::Admin)),
    ("POST", "/api/v1/provider/tenants", Access::Provider),
    ("PATCH", "/api/v1/provider/tenants/{id}", Access::Provider),
    (
        "GET",
        "/api/v1/provider/tenants/{id}/license-usage",
        Access::Provider,
    ),
    ("GET", "/api/v1/provider/activation-codes", Access::Provider),
    (
        "POST",
        "/api/v1/provider/activation-codes",
        Access::Provider,
    ),
    ("POST", "/api/v1/users", Access::AdminOrProvider),
    ("PATCH", "/api/v1/users/{id}", Access::AdminOrProvider),
    ("GET", "/api/v1/audit", Access::AdminOrProvider),
];

/// The role the matched route requires, if its request is read before its handler checks it.
fn access_before_parsing(parts: &Parts) -> Option<Access> {
    let route = parts.extensions.get::<MatchedPath>()?.as_str();
    let method = parts.method.as_str();
    CHECKED_BEFORE_PARSING
        .iter()
        .find(|(m, path, _)| *m == method && *path == route)
        .map(|(_, _, access)| *access)
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
        if let Some(access) = access_before_parsing(parts) {
            access.check(&caller)?;
        }
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
