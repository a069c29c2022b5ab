//! Forms of operation and who may do what.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How an installation is operated; fixed when its database is first initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One organisation on its own premises: exactly one tenant.
    #[default]
    OnPrem,
    /// A provider serving many tenants.
    Cloud,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OnPrem => "on-prem",
            Mode::Cloud => "cloud",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on-prem" => Ok(Mode::OnPrem),
            "cloud" => Ok(Mode::Cloud),
            other => Err(format!(
                "unknown mode `{other}` (expected on-prem or cloud)"
            )),
        }
    }
}

/// What an API token or user may do. The tenant roles (viewer, operator, admin) act inside one
/// tenant, each including the ones before it; the provider of a cloud service belongs to no
/// tenant and does only what a provider does (tenants, activation codes, usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in the tenant.
    Viewer,
    /// Also manages routers and groups.
    Operator,
    /// Also manages tokens, enrollment and settings.
    Admin,
    /// Runs a cloud service: creates, suspends and deletes tenants, issues activation codes.
    Provider,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Provider => "provider",
        }
    }

    /// Whether this role includes everything `needed` may do.
    pub fn allows(self, needed: Role) -> bool {
        match (self.tenant_rank(), needed.tenant_rank()) {
            (Some(mine), Some(theirs)) => mine >= theirs,
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether the role acts inside one tenant (every role but the provider's).
    pub fn is_tenant_role(self) -> bool {
        self.tenant_rank().is_some()
    }

    fn tenant_rank(self) -> Option<u8> {
        match self {
            Role::Viewer => Some(0),
            Role::Operator => Some(1),
            Role::Admin => Some(2),
            Role::Provider => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            "provider" => Ok(Role::Provider),
            other => Err(format!(
                "unknown role `{other}` (expected viewer, operator, admin or provider)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below_them() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
    }

    #[test]
    fn the_provider_is_no_tenant_role_and_no_tenant_role_is_the_provider() {
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert!(role.is_tenant_role());
            assert!(!Role::Provider.allows(role));
            assert!(!role.allows(Role::Provider));
        }
        assert!(Role::Provider.allows(Role::Provider));
        assert!(!Role::Provider.is_tenant_role());
    }

    #[test]
    fn names_round_trip() {
        for role in [Role::Viewer, Role::Operator, Role::Admin, Role::Provider] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        for mode in [Mode::OnPrem, Mode::Cloud] {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
