//! Text forms of the secrets routers hold: enrollment tokens (which also pin the server's CA)
//! and device credentials. Secrets are 32 random bytes, base64url without padding.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

const ENROLLMENT_TOKEN_PREFIX: &str = "fe1";
const CREDENTIAL_PREFIX: &str = "fc1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} is not well formed: {detail}")]
pub struct SecretFormatError {
    kind: &'static str,
    detail: &'static str,
}

fn format_error(kind: &'static str, detail: &'static str) -> SecretFormatError {
    SecretFormatError { kind, detail }
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

/// The SHA-256 hash of a secret, hex encoded: what the server stores instead of the secret.
pub fn secret_hash(secret: &[u8; 32]) -> String {
    hex_lower(&Sha256::digest(secret))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the DER encoding of the server's CA certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaFingerprint(pub [u8; 32]);

impl CaFingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Lower-case hex, as people compare fingerprints.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }
}

impl fmt::Debug for CaFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFingerprint({})", self.to_hex())
    }
}

/// An enrollment token as handed to routers: `fe1.<secret>.<CA fingerprint>`.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentTokenString {
    pub secret: [u8; 32],
    pub ca_fingerprint: CaFingerprint,
}

impl EnrollmentTokenString {
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

impl fmt::Display for EnrollmentTokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENROLLMENT_TOKEN_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.secret),
            URL_SAFE_NO_PAD.encode(self.ca_fingerprint.0)
        )
    }
}

impl fmt::Debug for EnrollmentTokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EnrollmentTokenString(<secret>, {:?})",
            self.ca_fingerprint
        )
    }
}

impl FromStr for EnrollmentTokenString {
    type Err = SecretFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "enrollment token";
        let mut parts = s.trim().split('.');
        if parts.next() != Some(ENROLLMENT_TOKEN_PREFIX) {
            return Err(format_error(KIND, "it must start with `fe1.`"));
        }
        let secret = parts
            .next()
            .and_then(decode_32)
            .ok_or(format_error(KIND, "bad secret"))?;
        let fingerprint = parts
            .next()
            .and_then(decode_32)
            .ok_or(format_error(KIND, "bad CA fingerprint"))?;
        if parts.next().is_some() {
            return Err(format_error(KIND, "trailing data"));
        }
        Ok(Self {
            secret,
            ca_fingerprint: CaFingerprint(fingerprint),
        })
    }
}

/// A router's credential: `fc1.<credential id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    pub id: String,
    pub secret: [u8; 32],
}

impl DeviceCredential {
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

impl fmt::Display for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{CREDENTIAL_PREFIX}.{}.{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

impl fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceCredential({}, <secret>)", self.id)
    }
}

impl FromStr for DeviceCredential {
    type Err = SecretFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const KIND: &str = "credential";
        let mut parts = s.trim().split('.');
        if parts.next() != Some(CREDENTIAL_PREFIX) {
            return Err(format_error(KIND, "it must start with `fc1.`"));
        }
        let id = parts
            .next()
            .filter(|id| !id.is_empty() && id.len() <= 64)
            .ok_or(format_error(KIND, "bad id"))?
            .to_owned();
        let secret = parts
            .next()
            .and_then(decode_32)
            .ok_or(format_error(KIND, "bad secret"))?;
        if parts.next().is_some() {
            return Err(format_error(KIND, "trailing data"));
        }
        Ok(Self { id, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_token_round_trips_and_rejects_tampering() {
        let token = EnrollmentTokenString {
            secret: [7; 32],
            ca_fingerprint: CaFingerprint::of_der(b"ca"),
        };
        let text = token.to_string();
        assert_eq!(text.parse::<EnrollmentTokenString>().unwrap(), token);
        assert!(
            text[..text.len() - 2]
                .parse::<EnrollmentTokenString>()
                .is_err()
        );
        assert!(
            format!("{text}.x")
                .parse::<EnrollmentTokenString>()
                .is_err()
        );
        assert!(
            text.replacen("fe1", "fe2", 1)
                .parse::<EnrollmentTokenString>()
                .is_err()
        );
    }

    #[test]
    fn credential_round_trips() {
        let credential = DeviceCredential {
            id: "0190-abc".into(),
            secret: [9; 32],
        };
        let text = credential.to_string();
        assert!(text.starts_with("fc1.0190-abc."));
        assert_eq!(text.parse::<DeviceCredential>().unwrap(), credential);
        assert!("fc1..AAAA".parse::<DeviceCredential>().is_err());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let credential = DeviceCredential {
            id: "id".into(),
            secret: [1; 32],
        };
        assert!(!format!("{credential:?}").contains(&URL_SAFE_NO_PAD.encode([1u8; 32])));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(secret_hash(&[0; 32]).len(), 64);
        assert_ne!(secret_hash(&[0; 32]), secret_hash(&[1; 32]));
    }
}
