//! Console accounts: people who log in, how an invitation becomes an account, when a login
//! session ends, how failed logins are throttled, and what the audit log records.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::Duration;

use crate::{AuditEntryId, Mode, Role, TenantId, Timestamp, UserId};

/// Where an account stands. An invited person sets a password through a one-time link; in a
/// cloud service a tenant admin then approves the account before it may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserStatus {
    Invited,
    NeedsApproval,
    Active,
    /// Turned off by an admin: cannot log in, keeps its history.
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::NeedsApproval => "needs_approval",
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    /// The status once an invited person has set a password: in a cloud service an admin of
    /// the tenant must approve the account first.
    pub fn after_accepting_invitation(mode: Mode) -> Self {
        match mode {
            Mode::OnPrem => UserStatus::Active,
            Mode::Cloud => UserStatus::NeedsApproval,
        }
    }
}

impl fmt::Display for UserStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UserStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "invited" => Ok(UserStatus::Invited),
            "needs_approval" => Ok(UserStatus::NeedsApproval),
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(format!("unknown user status `{other}`")),
        }
    }
}

/// A person with a console account. The provider's people belong to no tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: Option<TenantId>,
    /// Lower case; unique over the installation, so a login needs no tenant.
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    /// The argon2 PHC string; `None` until the person has set a password.
    pub password_hash: Option<String>,
    /// While invited: the SHA-256 of the one-time link's secret, and when the link lapses.
    pub invitation: Option<(String, Timestamp)>,
    pub created_at: Timestamp,
    pub last_login_at: Option<Timestamp>,
}

/// An e-mail address in the form accounts are stored and looked up by, or why it is not one.
pub fn normalized_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err("an e-mail address has an @");
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err("an e-mail address is name@domain");
    }
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an e-mail address has no spaces and at most 254 characters");
    }
    Ok(email)
}

/// Shortest password a person may choose (generated ones are longer).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Whether `password` may be chosen, or why not.
pub fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if chars > 1024 {
        return Err("a password has at most 1024 characters".to_owned());
    }
    Ok(())
}

/// How long a console login lasts: it ends after `idle` without a request, and at the latest
/// `absolute` after it began, whatever happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for SessionLifetime {
    fn default() -> Self {
        SessionLifetime {
            idle: Duration::hours(2),
            absolute: Duration::hours(12),
        }
    }
}

impl SessionLifetime {
    /// Whether a session begun at `created_at` and last used at `last_used_at` is still live.
    pub fn is_live(&self, created_at: Timestamp, last_used_at: Timestamp, now: Timestamp) -> bool {
        now < created_at + self.absolute && now < last_used_at + self.idle
    }

    /// When a session begun at `created_at` ends at the latest.
    pub fn ends_by(&self, created_at: Timestamp) -> Timestamp {
        created_at + self.absolute
    }
}

/// Failed logins allowed per key (an address, an account) within [`LoginThrottle::WINDOW`].
const FAILURES_ALLOWED: u32 = 5;

/// Slows down password guessing: after [`FAILURES_ALLOWED`] failed logins for one key within
/// the window, further attempts for that key are refused until the window since the first of
/// them has passed. Keys are both the client's address and the account's e-mail address, so
/// neither one address trying many accounts nor many addresses trying one account gets far.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    /// Per key: when its window began and how many failures it holds.
    failures: HashMap<String, (Timestamp, u32)>,
}

impl LoginThrottle {
    pub const WINDOW: Duration = Duration::minutes(15);

    /// When the next attempt for any of `keys` may be made, if one may not be made at `now`.
    pub fn refused_until(&self, keys: &[&str], now: Timestamp) -> Option<Timestamp> {
        keys.iter()
            .filter_map(|key| self.failures.get(*key))
            .filter(|(since, count)| *count >= FAILURES_ALLOWED && now < *since + Self::WINDOW)
            .map(|(since, _)| *since + Self::WINDOW)
            .max()
    }

    /// Counts a failed login against each of `keys`.
    pub fn failed(&mut self, keys: &[&str], now: Timestamp) {
        for key in keys {
            let entry = self.failures.entry((*key).to_owned()).or_insert((now, 0));
            if now >= entry.0 + Self::WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
        self.failures
            .retain(|_, (since, _)| now < *since + Self::WINDOW);
    }

    /// Forgets the failures of `keys` after a successful login.
    pub fn succeeded(&mut self, keys: &[&str]) {
        for key in keys {
            self.failures.remove(*key);
        }
    }
}

/// Who did something recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User {
        id: UserId,
        email: String,
    },
    Token {
        id: crate::ApiTokenId,
        name: String,
    },
    /// Someone not (yet) authenticated: a failed login, an invitation being accepted.
    Anonymous {
        claimed: String,
    },
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User { .. } => "user",
            Actor::Token { .. } => "token",
            Actor::Anonymous { .. } => "anonymous",
        }
    }

    /// How the actor is named in listings and messages.
    pub fn name(&self) -> &str {
        match self {
            Actor::User { email, .. } => email,
            Actor::Token { name, .. } => name,
            Actor::Anonymous { claimed } => claimed,
        }
    }

    pub fn id(&self) -> Option<String> {
        match self {
            Actor::User { id, .. } => Some(id.to_string()),
            Actor::Token { id, .. } => Some(id.to_string()),
            Actor::Anonymous { .. } => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// One management action as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: AuditEntryId,
    /// The tenant acted in; `None` for the provider's own actions and logins of no tenant.
    pub tenant_id: Option<TenantId>,
    pub at: Timestamp,
    pub actor: Actor,
    /// What was done, as the route it was done through: `POST /api/v1/devices/bulk`.
    pub action: String,
    /// The object acted on, where the action names one (the id in its path).
    pub target: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    /// The answer's HTTP status: 2xx done, anything else refused or failed.
    pub status: u16,
    /// The error code when refused or failed.
    pub error: Option<String>,
}

impl AuditEntry {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: i64) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    }

    #[test]
    fn emails_are_stored_lower_case_and_checked() {
        assert_eq!(
            normalized_email("  Alice@Example.COM ").as_deref(),
            Ok("alice@example.com")
        );
        for bad in ["", "alice", "@example.com", "alice@", "a b@c.d", "a@b@c"] {
            assert!(normalized_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_need_twelve_characters() {
        assert!(check_password("short").is_err());
        assert!(check_password("elevenchars").is_err());
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn an_invitation_needs_approval_only_in_the_cloud() {
        assert_eq!(
            UserStatus::after_accepting_invitation(Mode::OnPrem),
            UserStatus::Active
        );
        assert_eq!(
            UserStatus::after_accepting_invitation(Mode::Cloud),
            UserStatus::NeedsApproval
        );
        for status in [
            UserStatus::Invited,
            UserStatus::NeedsApproval,
            UserStatus::Active,
            UserStatus::Disabled,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
    }

    #[test]
    fn a_session_ends_when_idle_or_too_old() {
        let lifetime = SessionLifetime {
            idle: Duration::minutes(30),
            absolute: Duration::minutes(120),
        };
        assert!(lifetime.is_live(at(0), at(0), at(29)));
        assert!(!lifetime.is_live(at(0), at(0), at(30)));
        assert!(lifetime.is_live(at(0), at(100), at(119)));
        assert!(!lifetime.is_live(at(0), at(119), at(120)));
        assert_eq!(lifetime.ends_by(at(0)), at(120));
    }

    #[test]
    fn five_failures_lock_a_key_for_the_rest_of_the_window() {
        let mut throttle = LoginThrottle::default();
        for minute in 0..4 {
            throttle.failed(&["10.0.0.1", "alice@example.com"], at(minute));
            assert_eq!(throttle.refused_until(&["10.0.0.1"], at(minute)), None);
        }
        throttle.failed(&["10.0.0.1", "alice@example.com"], at(4));
        assert_eq!(throttle.refused_until(&["10.0.0.1"], at(5)), Some(at(15)));
        // The same account from elsewhere is refused too; another account from elsewhere is not.
        assert_eq!(
            throttle.refused_until(&["10.0.0.2", "alice@example.com"], at(5)),
            Some(at(15))
        );
        assert_eq!(
            throttle.refused_until(&["10.0.0.2", "bob@example.com"], at(5)),
            None
        );
        assert_eq!(throttle.refused_until(&["10.0.0.1"], at(15)), None);
        // A new failure after the window starts a new count.
        throttle.failed(&["10.0.0.1"], at(16));
        assert_eq!(throttle.refused_until(&["10.0.0.1"], at(16)), None);
    }

    #[test]
    fn a_success_forgets_the_failures() {
        let mut throttle = LoginThrottle::default();
        for minute in 0..5 {
            throttle.failed(&["alice@example.com"], at(minute));
        }
        assert!(
            throttle
                .refused_until(&["alice@example.com"], at(5))
                .is_some()
        );
        throttle.succeeded(&["alice@example.com"]);
        assert_eq!(throttle.refused_until(&["alice@example.com"], at(5)), None);
    }
}
