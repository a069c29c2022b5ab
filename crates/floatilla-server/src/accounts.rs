//! Console accounts: argon2 password hashes, generated passwords, login sessions and
//! invitation links. Hashing is slow on purpose, so it runs on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use floatilla_domain::accounts::{User, UserStatus, check_password, normalized_email};
use floatilla_domain::{Role, TenantId, Timestamp, UserId};
use floatilla_store::{ConsoleSession, Store};
use rand::Rng;

use crate::error::{Error, Result};

/// A random secret as it is handed out (URL-safe text) and the SHA-256 that is stored instead.
pub fn new_secret() -> (String, String) {
    let secret: [u8; 32] = rand::rng().random();
    (
        URL_SAFE_NO_PAD.encode(secret),
        floatilla_protocol::secrets::secret_hash(&secret),
    )
}

/// The stored hash of a secret handed out by [`new_secret`], if `text` can be one.
pub fn hash_of_secret(text: &str) -> Option<String> {
    let secret: [u8; 32] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    Some(floatilla_protocol::secrets::secret_hash(&secret))
}

/// A password for a new account, to be changed or kept: 24 characters, 144 bits.
pub fn generated_password() -> String {
    let bytes: [u8; 18] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The argon2id hash of `password` (with a fresh salt), after checking it may be chosen.
pub async fn hash_password(password: String) -> Result<String> {
    check_password(&password).map_err(|message| Error::invalid("weak_password", message))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::rng().random::<[u8; 16]>())
            .map_err(|e| Error::Internal(format!("password salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::Internal(format!("password hash: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("password hash: {e}")))?
}

/// Whether `password` matches `stored`. Without a stored hash a stand-in is checked, so an
/// unknown account takes as long to refuse as a wrong password.
pub async fn password_matches(stored: Option<String>, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let stand_in;
        let hash = match &stored {
            Some(hash) => hash.as_str(),
            None => {
                stand_in = stand_in_hash();
                stand_in.as_str()
            }
        };
        let matches = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        matches && stored.is_some()
    })
    .await
    .unwrap_or(false)
}

fn stand_in_hash() -> String {
    static STAND_IN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STAND_IN
        .get_or_init(|| {
            let salt = SaltString::encode_b64(&[7; 16]).expect("a 16-byte salt");
            Argon2::default()
                .hash_password(b"no account has this password", &salt)
                .expect("argon2 with default parameters")
                .to_string()
        })
        .clone()
}

/// Creates an active account with `password` (hashed here).
pub async fn create_user(
    store: &dyn Store,
    now: Timestamp,
    email: &str,
    role: Role,
    tenant: Option<TenantId>,
    password: String,
) -> Result<User> {
    let email =
        normalized_email(email).map_err(|message| Error::invalid("invalid_email", message))?;
    check_role_and_tenant(role, tenant)?;
    let user = User {
        id: UserId::new(),
        tenant_id: tenant,
        email,
        role,
        status: UserStatus::Active,
        password_hash: Some(hash_password(password).await?),
        invitation: None,
        created_at: now,
        last_login_at: None,
    };
    store.create_user(&user).await?;
    Ok(user)
}

/// A provider belongs to no tenant; everyone else to one.
pub fn check_role_and_tenant(role: Role, tenant: Option<TenantId>) -> Result<()> {
    match (role.is_tenant_role(), tenant) {
        (true, Some(_)) | (false, None) => Ok(()),
        (true, None) => Err(Error::invalid(
            "tenant_required",
            "a viewer, operator or admin belongs to a tenant",
        )),
        (false, Some(_)) => Err(Error::invalid(
            "invalid_role",
            "the provider's accounts belong to no tenant",
        )),
    }
}

/// Starts a console session for `user`; answers the cookie's secret and the session.
pub async fn start_session(
    store: &dyn Store,
    user: &User,
    now: Timestamp,
) -> Result<(String, ConsoleSession)> {
    let (secret, secret_hash) = new_secret();
    let session = ConsoleSession {
        secret_hash,
        user_id: user.id,
        csrf_token: new_secret().0,
        created_at: now,
        last_used_at: now,
    };
    store.create_console_session(&session).await?;
    Ok((secret, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_matches_only_its_own_hash() {
        let hash = hash_password("correct horse battery".to_owned())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches(Some(hash.clone()), "correct horse battery".to_owned()).await);
        assert!(!password_matches(Some(hash), "correct horse battery!".to_owned()).await);
        assert!(!password_matches(None, "no account has this password".to_owned()).await);
        assert!(matches!(
            hash_password("short".to_owned()).await,
            Err(Error::Invalid {
                code: "weak_password",
                ..
            })
        ));
    }

    #[test]
    fn secrets_hash_to_what_is_stored() {
        let (text, hash) = new_secret();
        assert_eq!(hash_of_secret(&text), Some(hash));
        assert_eq!(hash_of_secret("not-a-secret"), None);
        assert_eq!(generated_password().len(), 24);
    }
}
