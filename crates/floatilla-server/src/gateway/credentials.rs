//! Checking a router's credential, the same way wherever one is presented (HELLO, re-enrollment).

use floatilla_domain::CredentialId;
use floatilla_domain::model::Credential;
use floatilla_protocol::DeviceCredential;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::state::AppState;

/// The stored credential `presented` proves, compared in constant time; refused as invalid,
/// revoked or expired.
pub async fn verify(state: &AppState, presented: &str) -> Result<Credential> {
    let presented: DeviceCredential = presented.parse().map_err(|_| Error::InvalidCredential)?;
    let id: CredentialId = presented.id.parse().map_err(|_| Error::InvalidCredential)?;
    let stored = state
        .store
        .credential(id)
        .await?
        .ok_or(Error::InvalidCredential)?;
    let matches: bool = presented
        .secret_hash()
        .as_bytes()
        .ct_eq(stored.secret_hash.as_bytes())
        .into();
    if !matches {
        return Err(Error::InvalidCredential);
    }
    if stored.revoked_at.is_some() {
        return Err(Error::CredentialRevoked);
    }
    if !stored.is_valid_at(state.clock.now()) {
        return Err(Error::CredentialExpired);
    }
    Ok(stored)
}
