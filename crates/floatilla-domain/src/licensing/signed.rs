//! Signed license files, for installations on premises that cannot ask a licensing service.
//!
//! Trust runs through a chain: the vendor's root key (kept offline) certifies issuing keys, and
//! an issuing key signs licenses. A license file carries its issuer's certificate, so an
//! installation needs only the root's public key to check it. Rotating an issuing key means
//! certifying a new one with the same root; installations change nothing.
//!
//! Every file is ASCII armor around base64 of compact JSON. Parsing is strict: the file must be
//! exactly what this module writes for what it parsed (armor lines, 64-column wrapping, canonical
//! base64, JSON key order and spacing), so a file has one valid spelling and any changed byte is
//! refused. The only leniency is a missing final newline, which copying text often drops.
//!
//! Every signature covers a context string before the signed bytes, so that nothing signed for
//! one purpose (an issuer certificate, say) can pass for another (a license).
//!
//! Pure: keys are made from seed bytes the caller draws, and "now" is an argument.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::TimeDelta;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::{LicenseTerm, Seats};
use crate::Timestamp;

/// What an issuing key signs before a license's claims.
const LICENSE_CONTEXT: &[u8] = b"floatilla license v1\0";
/// What a root key signs before an issuer certificate.
const CERTIFICATE_CONTEXT: &[u8] = b"floatilla issuer certificate v1\0";

/// The version of the license document this module reads and writes.
const LICENSE_FORMAT_VERSION: u32 = 1;

/// How far a license's issue time may lie ahead of our clock: the vendor's and the customer's
/// clocks disagree a little.
pub const ALLOWED_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

const LICENSE_LABEL: &str = "FLOATILLA LICENSE";
const ROOT_SECRET_KEY_LABEL: &str = "FLOATILLA LICENSE ROOT SECRET KEY";
const ROOT_PUBLIC_KEY_LABEL: &str = "FLOATILLA LICENSE ROOT PUBLIC KEY";
const ISSUER_SECRET_KEY_LABEL: &str = "FLOATILLA LICENSE ISSUER SECRET KEY";
const ISSUER_CERTIFICATE_LABEL: &str = "FLOATILLA LICENSE ISSUER CERTIFICATE";

/// Base64 lines in armor are this long, like PEM.
const ARMOR_LINE_LENGTH: usize = 64;

/// What a license grants, and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseClaims {
    /// Unique per license, so that a renewal can name the licenses it supersedes.
    pub serial: String,
    /// The installation it is for; opaque text.
    pub installation_id: String,
    pub customer: String,
    pub seats: Seats,
    pub not_before: Timestamp,
    pub not_after: Option<Timestamp>,
    pub grace_until: Option<Timestamp>,
    pub issued_at: Timestamp,
    /// Serials of licenses this one replaces.
    pub supersedes: Vec<String>,
    /// Named features it unlocks.
    pub entitlements: Vec<String>,
}

impl LicenseClaims {
    /// When it counts and for how many seats, as the pool sees it.
    pub fn term(&self) -> LicenseTerm {
        LicenseTerm {
            seats: self.seats,
            not_before: self.not_before,
            not_after: self.not_after,
            grace_until: self.grace_until,
        }
    }

    /// The checks an issuer makes before signing: a license that fails one would count oddly or
    /// never, so it is better not issued at all.
    pub fn check_consistency(&self) -> Result<(), ClaimsError> {
        if self.serial.is_empty() {
            return Err(ClaimsError::EmptySerial);
        }
        if self.not_after.is_some_and(|end| end <= self.not_before) {
            return Err(ClaimsError::EndsBeforeStart);
        }
        match (self.not_after, self.grace_until) {
            (None, Some(_)) => return Err(ClaimsError::GraceWithoutEnd),
            (Some(end), Some(grace)) if grace < end => return Err(ClaimsError::GraceBeforeEnd),
            _ => {}
        }
        if self.supersedes.contains(&self.serial) {
            return Err(ClaimsError::SupersedesItself);
        }
        Ok(())
    }
}

/// Why claims are not fit to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the serial is empty")]
    EmptySerial,
    #[error("not_after must be later than not_before")]
    EndsBeforeStart,
    #[error("grace_until needs not_after")]
    GraceWithoutEnd,
    #[error("grace_until must not be earlier than not_after")]
    GraceBeforeEnd,
    #[error("a license cannot supersede its own serial")]
    SupersedesItself,
}

impl ClaimsError {
    pub fn code(&self) -> &'static str {
        match self {
            ClaimsError::EmptySerial => "empty_serial",
            ClaimsError::EndsBeforeStart => "ends_before_start",
            ClaimsError::GraceWithoutEnd => "grace_without_end",
            ClaimsError::GraceBeforeEnd => "grace_before_end",
            ClaimsError::SupersedesItself => "supersedes_itself",
        }
    }
}

/// Why an armored file (key, certificate or license) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a {label} file: it must start with \"-----BEGIN {label}-----\"")]
    NotArmored { label: &'static str },
    #[error("the {label} file has been altered: it is not in its one canonical form")]
    NotCanonical { label: &'static str },
    #[error("the {label} file holds invalid content: {reason}")]
    InvalidContent { label: &'static str, reason: String },
}

impl FormatError {
    pub fn code(&self) -> &'static str {
        match self {
            FormatError::NotArmored { .. } => "not_armored",
            FormatError::NotCanonical { .. } => "not_canonical",
            FormatError::InvalidContent { .. } => "invalid_content",
        }
    }
}

/// The first 8 bytes of the SHA-256 of a public key, in hex: short enough to read out, long
/// enough to tell a vendor's few keys apart.
fn key_id_of(public_key: &VerifyingKey) -> String {
    Sha256::digest(public_key.as_bytes())[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The vendor's trust anchor, kept offline; it only certifies issuing keys.
pub struct RootKey(SigningKey);

/// What an installation trusts: the public half of a [`RootKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct RootPublicKey(VerifyingKey);

/// A key that signs licenses, once a root has certified it.
pub struct IssuerKey(SigningKey);

/// The public half of an [`IssuerKey`], as its certificate carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerPublicKey(VerifyingKey);

/// Secret keys show only their key id, so that they never end up in a log.
impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKey")
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("key_id", &self.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RootPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RootPublicKey")
            .field(&self.key_id())
            .finish()
    }
}

impl fmt::Debug for IssuerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IssuerPublicKey")
            .field(&self.key_id())
            .finish()
    }
}

impl RootKey {
    /// A root key from 32 random bytes the caller draws from a secure source.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        RootKey(SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> RootPublicKey {
        RootPublicKey(self.0.verifying_key())
    }

    /// Certifies an issuing key for licenses issued from `not_before` to `not_after`.
    pub fn certify(
        &self,
        issuer: &IssuerPublicKey,
        not_before: Timestamp,
        not_after: Timestamp,
        issued_at: Timestamp,
    ) -> SignedIssuerCertificate {
        let certificate = IssuerCertificate {
            key_id: issuer.key_id(),
            public_key: issuer.clone(),
            root_key_id: self.public_key().key_id(),
            not_before,
            not_after,
            issued_at,
        };
        let root_signature =
            SignatureBytes(sign(&self.0, CERTIFICATE_CONTEXT, &to_json(&certificate)));
        SignedIssuerCertificate {
            certificate,
            root_signature,
        }
    }

    pub fn to_armored(&self) -> String {
        armor(ROOT_SECRET_KEY_LABEL, self.0.as_bytes())
    }

    pub fn from_armored(text: &str) -> Result<Self, FormatError> {
        let seed = dearmor_array(ROOT_SECRET_KEY_LABEL, text)?;
        Ok(RootKey::from_seed(seed))
    }
}

impl RootPublicKey {
    pub fn key_id(&self) -> String {
        key_id_of(&self.0)
    }

    pub fn to_armored(&self) -> String {
        armor(ROOT_PUBLIC_KEY_LABEL, self.0.as_bytes())
    }

    pub fn from_armored(text: &str) -> Result<Self, FormatError> {
        let bytes = dearmor_array(ROOT_PUBLIC_KEY_LABEL, text)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| FormatError::InvalidContent {
            label: ROOT_PUBLIC_KEY_LABEL,
            reason: "not an Ed25519 public key".to_owned(),
        })?;
        Ok(RootPublicKey(key))
    }
}

impl IssuerKey {
    /// An issuing key from 32 random bytes the caller draws from a secure source.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        IssuerKey(SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> IssuerPublicKey {
        IssuerPublicKey(self.0.verifying_key())
    }

    pub fn to_armored(&self) -> String {
        armor(ISSUER_SECRET_KEY_LABEL, self.0.as_bytes())
    }

    pub fn from_armored(text: &str) -> Result<Self, FormatError> {
        let seed = dearmor_array(ISSUER_SECRET_KEY_LABEL, text)?;
        Ok(IssuerKey::from_seed(seed))
    }
}

impl IssuerPublicKey {
    pub fn key_id(&self) -> String {
        key_id_of(&self.0)
    }
}

/// In JSON: the 32 key bytes in base64.
impl Serialize for IssuerPublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(self.0.as_bytes()))
    }
}

impl<'de> Deserialize<'de> for IssuerPublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: [u8; 32] = decode_base64_array(&String::deserialize(deserializer)?)
            .ok_or_else(|| serde::de::Error::custom("a public key is 32 bytes in base64"))?;
        VerifyingKey::from_bytes(&bytes)
            .map(IssuerPublicKey)
            .map_err(|_| serde::de::Error::custom("not an Ed25519 public key"))
    }
}

/// An Ed25519 signature; in JSON, its 64 bytes in base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SignatureBytes([u8; 64]);

impl Serialize for SignatureBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        decode_base64_array(&String::deserialize(deserializer)?)
            .map(SignatureBytes)
            .ok_or_else(|| serde::de::Error::custom("a signature is 64 bytes in base64"))
    }
}

fn decode_base64_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// What a root says about an issuing key: which licenses it may sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerCertificate {
    /// The id of `public_key`, to tell issuing keys apart in messages and logs.
    pub key_id: String,
    pub public_key: IssuerPublicKey,
    /// The id of the root that signed this certificate.
    pub root_key_id: String,
    /// Licenses issued from here to `not_after` (inclusive) are valid; licenses outlive it.
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub issued_at: Timestamp,
}

impl IssuerCertificate {
    /// Whether a license issued at `at` falls within the certificate's window.
    pub fn covers(&self, at: Timestamp) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// An issuer certificate with the root's signature; what `issuer.cert` holds, and what every
/// license carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIssuerCertificate {
    certificate: IssuerCertificate,
    root_signature: SignatureBytes,
}

impl SignedIssuerCertificate {
    pub fn certificate(&self) -> &IssuerCertificate {
        &self.certificate
    }

    /// Whether this certificate is the one for `key`; licenses signed by another key with it
    /// would never verify.
    pub fn is_for(&self, key: &IssuerPublicKey) -> bool {
        self.certificate.public_key == *key
    }

    /// The trusted root that signed it, if any.
    fn certifying_root<'a>(&self, trusted_roots: &'a [RootPublicKey]) -> Option<&'a RootPublicKey> {
        let body = to_json(&self.certificate);
        trusted_roots.iter().find(|root| {
            root.key_id() == self.certificate.root_key_id
                && verify_signature(&root.0, CERTIFICATE_CONTEXT, &body, &self.root_signature)
        })
    }

    pub fn to_armored(&self) -> String {
        armor(ISSUER_CERTIFICATE_LABEL, &to_json(self))
    }

    pub fn from_armored(text: &str) -> Result<Self, FormatError> {
        let bytes = dearmor(ISSUER_CERTIFICATE_LABEL, text)?;
        let signed: SignedIssuerCertificate =
            from_canonical_json(ISSUER_CERTIFICATE_LABEL, &bytes)?;
        signed.check_key_id(ISSUER_CERTIFICATE_LABEL)?;
        Ok(signed)
    }

    /// The key id is derived, so one that does not match its key is a forgery or a mistake.
    fn check_key_id(&self, label: &'static str) -> Result<(), FormatError> {
        if self.certificate.key_id == self.certificate.public_key.key_id() {
            Ok(())
        } else {
            Err(FormatError::InvalidContent {
                label,
                reason: "the issuer key id does not match its public key".to_owned(),
            })
        }
    }
}

/// What a license file holds, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LicenseDocument {
    version: u32,
    issuer: SignedIssuerCertificate,
    claims: LicenseClaims,
    signature: SignatureBytes,
}

impl LicenseDocument {
    fn parse(text: &str) -> Result<Self, FormatError> {
        let bytes = dearmor(LICENSE_LABEL, text)?;
        let document: LicenseDocument = from_canonical_json(LICENSE_LABEL, &bytes)?;
        if document.version != LICENSE_FORMAT_VERSION {
            return Err(FormatError::InvalidContent {
                label: LICENSE_LABEL,
                reason: format!(
                    "format version {} is not supported (this build reads version {LICENSE_FORMAT_VERSION})",
                    document.version
                ),
            });
        }
        document.issuer.check_key_id(LICENSE_LABEL)?;
        Ok(document)
    }
}

/// Signs `claims` with `issuer_key`, giving the text of a license file: the armor
/// `FLOATILLA LICENSE` around the issuer's certificate, the claims and their signature.
///
/// The caller makes sure that `certificate.is_for(&issuer_key.public_key())`, that
/// `claims.check_consistency()` passes and that the certificate covers `claims.issued_at`;
/// otherwise the license will not verify, or count oddly.
pub fn issue(
    issuer_key: &IssuerKey,
    certificate: &SignedIssuerCertificate,
    claims: &LicenseClaims,
) -> String {
    let signature = SignatureBytes(sign(&issuer_key.0, LICENSE_CONTEXT, &to_json(claims)));
    let document = LicenseDocument {
        version: LICENSE_FORMAT_VERSION,
        issuer: certificate.clone(),
        claims: claims.clone(),
        signature,
    };
    armor(LICENSE_LABEL, &to_json(&document))
}

/// Reads a license file without trusting it: for showing what it claims, never for acting on it.
pub fn inspect(text: &str) -> Result<(LicenseClaims, IssuerCertificate), LicenseRejection> {
    let document = LicenseDocument::parse(text)?;
    Ok((document.claims, document.issuer.certificate))
}

/// A license that passed [`verify`]: only that function makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLicense {
    claims: LicenseClaims,
    issuer_key_id: String,
    text: String,
}

impl VerifiedLicense {
    pub fn claims(&self) -> &LicenseClaims {
        &self.claims
    }

    /// The issuing key that signed it.
    pub fn issuer_key_id(&self) -> &str {
        &self.issuer_key_id
    }

    /// The file in its canonical form (with its final newline), fit to store and verify again.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_claims(self) -> LicenseClaims {
        self.claims
    }
}

/// Why a license file is refused, in the order [`verify`] checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseRejection {
    #[error(transparent)]
    Malformed(#[from] FormatError),
    #[error(
        "the license's issuer {issuer_key_id} is certified by root {root_key_id}, which is not a trusted root (or the certificate was altered)"
    )]
    UnknownIssuer {
        issuer_key_id: String,
        root_key_id: String,
    },
    #[error(
        "the license was issued at {issued_at}, outside its issuer certificate's validity ({not_before} to {not_after})"
    )]
    IssuerNotValidAtIssue {
        issued_at: Timestamp,
        not_before: Timestamp,
        not_after: Timestamp,
    },
    #[error("the license's signature does not match its contents: it was altered")]
    InvalidSignature,
    #[error("the license is for installation \"{licensed}\", not this one (\"{installation}\")")]
    WrongInstallation {
        licensed: String,
        installation: String,
    },
    #[error("the license was issued at {issued_at}, in the future: check the clock")]
    IssuedInFuture { issued_at: Timestamp },
    #[error("license {serial} has been superseded by an installed license")]
    Superseded { serial: String },
    #[error("the license ended at {ended_at}")]
    Expired { ended_at: Timestamp },
}

impl LicenseRejection {
    pub fn code(&self) -> &'static str {
        match self {
            LicenseRejection::Malformed(_) => "malformed",
            LicenseRejection::UnknownIssuer { .. } => "unknown_issuer",
            LicenseRejection::IssuerNotValidAtIssue { .. } => "issuer_not_valid_at_issue",
            LicenseRejection::InvalidSignature => "invalid_signature",
            LicenseRejection::WrongInstallation { .. } => "wrong_installation",
            LicenseRejection::IssuedInFuture { .. } => "issued_in_future",
            LicenseRejection::Superseded { .. } => "superseded",
            LicenseRejection::Expired { .. } => "expired",
        }
    }
}

/// Checks a license file against the roots this installation trusts, at `now`.
///
/// `installation_id`, when given, must be the one licensed. `is_superseded(serial)` says whether
/// an installed license already supersedes this one. The first failing check decides the
/// rejection: malformed, unknown issuer, issuer not valid at issue, invalid signature, wrong
/// installation, issued in the future, superseded, expired. A license not yet started is
/// accepted: renewals are installed ahead of time.
pub fn verify(
    text: &str,
    trusted_roots: &[RootPublicKey],
    installation_id: Option<&str>,
    now: Timestamp,
    is_superseded: impl Fn(&str) -> bool,
) -> Result<VerifiedLicense, LicenseRejection> {
    let document = LicenseDocument::parse(text)?;
    let certificate = &document.issuer.certificate;
    if document.issuer.certifying_root(trusted_roots).is_none() {
        return Err(LicenseRejection::UnknownIssuer {
            issuer_key_id: certificate.key_id.clone(),
            root_key_id: certificate.root_key_id.clone(),
        });
    }
    let claims = &document.claims;
    if !certificate.covers(claims.issued_at) {
        return Err(LicenseRejection::IssuerNotValidAtIssue {
            issued_at: claims.issued_at,
            not_before: certificate.not_before,
            not_after: certificate.not_after,
        });
    }
    if !verify_signature(
        &certificate.public_key.0,
        LICENSE_CONTEXT,
        &to_json(claims),
        &document.signature,
    ) {
        return Err(LicenseRejection::InvalidSignature);
    }
    if let Some(installation) = installation_id
        && installation != claims.installation_id
    {
        return Err(LicenseRejection::WrongInstallation {
            licensed: claims.installation_id.clone(),
            installation: installation.to_owned(),
        });
    }
    if claims.issued_at > now + ALLOWED_CLOCK_SKEW {
        return Err(LicenseRejection::IssuedInFuture {
            issued_at: claims.issued_at,
        });
    }
    if is_superseded(&claims.serial) {
        return Err(LicenseRejection::Superseded {
            serial: claims.serial.clone(),
        });
    }
    if let Some(ended_at) = claims.term().effective_end()
        && ended_at <= now
    {
        return Err(LicenseRejection::Expired { ended_at });
    }
    let text = armor(LICENSE_LABEL, &to_json(&document));
    Ok(VerifiedLicense {
        issuer_key_id: certificate.key_id.clone(),
        claims: document.claims,
        text,
    })
}

fn sign(key: &SigningKey, context: &[u8], body: &[u8]) -> [u8; 64] {
    key.sign(&[context, body].concat()).to_bytes()
}

/// Strict verification: also refuses the malleable signatures and weak keys plain Ed25519
/// verification lets through.
fn verify_signature(
    key: &VerifyingKey,
    context: &[u8],
    body: &[u8],
    signature: &SignatureBytes,
) -> bool {
    key.verify_strict(
        &[context, body].concat(),
        &Signature::from_bytes(&signature.0),
    )
    .is_ok()
}

/// Compact JSON, fields in declaration order: the one spelling that is signed and written.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("licensing documents always serialize to JSON")
}

/// Parses JSON that must be exactly what [`to_json`] writes for the value it holds.
fn from_canonical_json<T: Serialize + DeserializeOwned>(
    label: &'static str,
    bytes: &[u8],
) -> Result<T, FormatError> {
    let value: T = serde_json::from_slice(bytes).map_err(|error| FormatError::InvalidContent {
        label,
        reason: error.to_string(),
    })?;
    if to_json(&value) != bytes {
        return Err(FormatError::NotCanonical { label });
    }
    Ok(value)
}

/// `-----BEGIN {label}-----`, the payload in base64 in lines of 64 columns, `-----END {label}-----`,
/// each line ending in a newline.
fn armor(label: &str, payload: &[u8]) -> String {
    let encoded = BASE64.encode(payload);
    let mut text = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every chunk is whole characters.
    for line in encoded.as_bytes().chunks(ARMOR_LINE_LENGTH) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// The payload of armored `text`, which must be exactly what [`armor`] writes for it, less at
/// most its final newline.
fn dearmor(label: &'static str, text: &str) -> Result<Vec<u8>, FormatError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    if !text.starts_with(&begin) {
        return Err(FormatError::NotArmored { label });
    }
    let not_canonical = FormatError::NotCanonical { label };
    let Some(body) = text[begin.len()..].strip_prefix('\n') else {
        return Err(not_canonical);
    };
    let body = body.strip_suffix('\n').unwrap_or(body);
    let Some(encoded) = body.strip_suffix(&end) else {
        return Err(not_canonical);
    };
    let encoded: String = encoded.split('\n').collect();
    let payload = BASE64.decode(encoded).map_err(|_| not_canonical.clone())?;
    let canonical = armor(label, &payload);
    if text == canonical || Some(text) == canonical.strip_suffix('\n') {
        Ok(payload)
    } else {
        Err(not_canonical)
    }
}

fn dearmor_array(label: &'static str, text: &str) -> Result<[u8; 32], FormatError> {
    dearmor(label, text)?
        .try_into()
        .map_err(|_| FormatError::InvalidContent {
            label,
            reason: "a key is 32 bytes".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(text: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A root, an issuer certified for 2025, and a license it issued in March 2025 for a year.
    struct Vendor {
        root: RootKey,
        issuer: IssuerKey,
        certificate: SignedIssuerCertificate,
    }

    impl Vendor {
        fn new(root_seed: u8, issuer_seed: u8) -> Self {
            let root = RootKey::from_seed([root_seed; 32]);
            let issuer = IssuerKey::from_seed([issuer_seed; 32]);
            let certificate = root.certify(
                &issuer.public_key(),
                at("2025-01-01T00:00:00Z"),
                at("2026-01-01T00:00:00Z"),
                at("2024-12-15T00:00:00Z"),
            );
            Vendor {
                root,
                issuer,
                certificate,
            }
        }

        fn roots(&self) -> Vec<RootPublicKey> {
            vec![self.root.public_key()]
        }

        fn issue(&self, claims: &LicenseClaims) -> String {
            issue(&self.issuer, &self.certificate, claims)
        }
    }

    fn claims() -> LicenseClaims {
        LicenseClaims {
            serial: "L-0001".to_owned(),
            installation_id: "plant-7".to_owned(),
            customer: "Acme Wärme GmbH".to_owned(),
            seats: Seats::Count(250),
            not_before: at("2025-03-01T00:00:00Z"),
            not_after: Some(at("2026-03-01T00:00:00Z")),
            grace_until: Some(at("2026-03-15T00:00:00Z")),
            issued_at: at("2025-03-01T12:30:00Z"),
            supersedes: vec!["L-0000".to_owned()],
            entitlements: vec!["reports".to_owned()],
        }
    }

    fn now() -> Timestamp {
        at("2025-06-01T00:00:00Z")
    }

    fn verify_now(vendor: &Vendor, text: &str) -> Result<VerifiedLicense, LicenseRejection> {
        verify(text, &vendor.roots(), Some("plant-7"), now(), |_| false)
    }

    fn code_of(result: Result<VerifiedLicense, LicenseRejection>) -> &'static str {
        result.expect_err("should be rejected").code()
    }

    #[test]
    fn a_license_verifies_and_keeps_its_claims() {
        let vendor = Vendor::new(1, 2);
        let text = vendor.issue(&claims());
        assert!(text.starts_with("-----BEGIN FLOATILLA LICENSE-----\n"));
        assert!(text.ends_with("\n-----END FLOATILLA LICENSE-----\n"));
        assert!(text.lines().all(|line| line.len() <= 64));
        let verified = verify_now(&vendor, &text).unwrap();
        assert_eq!(verified.claims(), &claims());
        assert_eq!(
            verified.issuer_key_id(),
            vendor.issuer.public_key().key_id()
        );
        assert_eq!(verified.text(), text);
        assert_eq!(
            verified.claims().term().effective_end(),
            claims().grace_until
        );
        // No installation to match: any installation's license passes that check.
        assert!(verify(&text, &vendor.roots(), None, now(), |_| false).is_ok());
    }

    #[test]
    fn a_missing_final_newline_is_tolerated_and_restored() {
        let vendor = Vendor::new(1, 2);
        let text = vendor.issue(&claims());
        let verified = verify_now(&vendor, text.trim_end_matches('\n')).unwrap();
        assert_eq!(verified.text(), text);
        assert_eq!(
            code_of(verify_now(&vendor, &format!("{text}\n"))),
            "malformed"
        );
        assert_eq!(
            LicenseDocument::parse(&text.replace('\n', "\r\n")),
            Err(FormatError::NotCanonical {
                label: LICENSE_LABEL
            })
        );
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let vendor = Vendor::new(1, 2);
        let text = vendor.issue(&claims());
        assert!(text.is_ascii());
        for position in 0..text.len() {
            for replace in [|b: u8| b ^ 0x01, |b: u8| b ^ 0x20, |_| b'A', |_| b'\n'] {
                let mut bytes = text.clone().into_bytes();
                let changed = replace(bytes[position]);
                if changed == bytes[position] || !changed.is_ascii() {
                    continue;
                }
                bytes[position] = changed;
                let altered = String::from_utf8(bytes).unwrap();
                assert!(
                    verify_now(&vendor, &altered).is_err(),
                    "accepted with byte {position} changed to {changed:#04x}"
                );
            }
        }
    }

    #[test]
    fn non_canonical_content_is_malformed() {
        let vendor = Vendor::new(1, 2);
        let document = LicenseDocument::parse(&vendor.issue(&claims())).unwrap();
        let json = String::from_utf8(to_json(&document)).unwrap();
        // The same document with a space, or re-wrapped lines: the signatures still match,
        // the spelling does not.
        let spaced = json.replacen(':', ": ", 1);
        assert_eq!(
            LicenseDocument::parse(&armor(LICENSE_LABEL, spaced.as_bytes())),
            Err(FormatError::NotCanonical {
                label: LICENSE_LABEL
            })
        );
        let encoded = BASE64.encode(json.as_bytes());
        let rewrapped = format!(
            "-----BEGIN FLOATILLA LICENSE-----\n{}\n{}\n-----END FLOATILLA LICENSE-----\n",
            &encoded[..60],
            &encoded[60..]
        );
        assert_eq!(code_of(verify_now(&vendor, &rewrapped)), "malformed");
        let other_version = json.replacen("\"version\":1", "\"version\":2", 1);
        assert!(matches!(
            LicenseDocument::parse(&armor(LICENSE_LABEL, other_version.as_bytes())),
            Err(FormatError::InvalidContent { .. })
        ));
        assert_eq!(
            code_of(verify_now(&vendor, &vendor.certificate.to_armored())),
            "malformed"
        );
    }

    #[test]
    fn each_check_has_its_own_code_in_order() {
        let vendor = Vendor::new(1, 2);
        let valid = vendor.issue(&claims());

        assert_eq!(code_of(verify_now(&vendor, "hello")), "malformed");

        let stranger = Vendor::new(3, 4);
        assert_eq!(
            code_of(verify(&valid, &stranger.roots(), None, now(), |_| false)),
            "unknown_issuer"
        );
        assert_eq!(
            code_of(verify(&valid, &[], None, now(), |_| false)),
            "unknown_issuer"
        );

        let issued_before_certificate = LicenseClaims {
            issued_at: at("2024-12-31T23:59:59Z"),
            ..claims()
        };
        assert_eq!(
            code_of(verify_now(
                &vendor,
                &vendor.issue(&issued_before_certificate)
            )),
            "issuer_not_valid_at_issue"
        );

        // Claims signed by another issuer's key, under this issuer's certificate.
        let forged = issue(&stranger.issuer, &vendor.certificate, &claims());
        assert_eq!(code_of(verify_now(&vendor, &forged)), "invalid_signature");

        assert_eq!(
            code_of(verify(
                &valid,
                &vendor.roots(),
                Some("plant-8"),
                now(),
                |_| false
            )),
            "wrong_installation"
        );

        let from_the_future = LicenseClaims {
            issued_at: now() + ALLOWED_CLOCK_SKEW + TimeDelta::seconds(1),
            ..claims()
        };
        let text = vendor.issue(&from_the_future);
        assert_eq!(code_of(verify_now(&vendor, &text)), "issued_in_future");
        let slightly_ahead = LicenseClaims {
            issued_at: now() + ALLOWED_CLOCK_SKEW,
            ..claims()
        };
        assert!(verify_now(&vendor, &vendor.issue(&slightly_ahead)).is_ok());

        assert_eq!(
            code_of(verify(
                &valid,
                &vendor.roots(),
                None,
                now(),
                |serial| serial == "L-0001"
            )),
            "superseded"
        );

        let grace_end = claims().grace_until.unwrap();
        assert_eq!(
            code_of(verify_now_at(&vendor, &valid, grace_end)),
            "expired"
        );
        assert!(verify_now_at(&vendor, &valid, grace_end - TimeDelta::seconds(1)).is_ok());
        let without_grace = LicenseClaims {
            grace_until: None,
            ..claims()
        };
        let text = vendor.issue(&without_grace);
        assert_eq!(
            verify_now_at(&vendor, &text, without_grace.not_after.unwrap()),
            Err(LicenseRejection::Expired {
                ended_at: without_grace.not_after.unwrap()
            })
        );
        let permanent = LicenseClaims {
            not_after: None,
            grace_until: None,
            ..claims()
        };
        let far_future = at("2999-01-01T00:00:00Z");
        assert!(verify_now_at(&vendor, &vendor.issue(&permanent), far_future).is_ok());

        // The order: a license both for another installation and expired is the wrong
        // installation's; one both superseded and expired is superseded.
        assert_eq!(
            code_of(verify(
                &valid,
                &vendor.roots(),
                Some("plant-8"),
                far_future,
                |_| true
            )),
            "wrong_installation"
        );
        assert_eq!(
            code_of(verify(&valid, &vendor.roots(), None, far_future, |_| true)),
            "superseded"
        );
    }

    fn verify_now_at(
        vendor: &Vendor,
        text: &str,
        now: Timestamp,
    ) -> Result<VerifiedLicense, LicenseRejection> {
        verify(text, &vendor.roots(), Some("plant-7"), now, |_| false)
    }

    #[test]
    fn a_license_not_yet_started_is_accepted() {
        let vendor = Vendor::new(1, 2);
        let renewal = LicenseClaims {
            not_before: at("2026-03-01T00:00:00Z"),
            not_after: Some(at("2027-03-01T00:00:00Z")),
            grace_until: None,
            ..claims()
        };
        assert!(verify_now(&vendor, &vendor.issue(&renewal)).is_ok());
    }

    #[test]
    fn a_second_issuer_of_the_same_root_is_accepted() {
        let vendor = Vendor::new(1, 2);
        let second_issuer = IssuerKey::from_seed([5; 32]);
        let second_certificate = vendor.root.certify(
            &second_issuer.public_key(),
            at("2025-02-01T00:00:00Z"),
            at("2027-01-01T00:00:00Z"),
            at("2025-01-20T00:00:00Z"),
        );
        let text = issue(&second_issuer, &second_certificate, &claims());
        let verified = verify_now(&vendor, &text).unwrap();
        assert_eq!(
            verified.issuer_key_id(),
            second_issuer.public_key().key_id()
        );
        assert_ne!(
            verified.issuer_key_id(),
            vendor.issuer.public_key().key_id()
        );
        // Trusting several roots: the one that certified the issuer is found.
        let stranger = Vendor::new(3, 4);
        let roots = [stranger.root.public_key(), vendor.root.public_key()];
        assert!(verify(&text, &roots, None, now(), |_| false).is_ok());
    }

    #[test]
    fn a_license_outlives_its_issuer_certificate_but_not_its_window() {
        let vendor = Vendor::new(1, 2);
        let after_certificate = at("2026-06-01T00:00:00Z");
        assert!(vendor.certificate.certificate().not_after < after_certificate);
        let long = LicenseClaims {
            not_after: Some(at("2028-01-01T00:00:00Z")),
            grace_until: None,
            ..claims()
        };
        assert!(verify_now_at(&vendor, &vendor.issue(&long), after_certificate).is_ok());

        let issued_after_certificate = LicenseClaims {
            issued_at: at("2026-01-01T00:00:01Z"),
            ..long.clone()
        };
        assert_eq!(
            code_of(verify_now_at(
                &vendor,
                &vendor.issue(&issued_after_certificate),
                after_certificate
            )),
            "issuer_not_valid_at_issue"
        );
        // The window's ends are inclusive.
        for issued_at in [at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")] {
            let claims = LicenseClaims {
                issued_at,
                ..long.clone()
            };
            assert!(verify_now_at(&vendor, &vendor.issue(&claims), after_certificate).is_ok());
        }
    }

    #[test]
    fn a_signature_made_for_another_purpose_does_not_verify_as_a_license() {
        let vendor = Vendor::new(1, 2);
        let claims = claims();
        let mut document = LicenseDocument::parse(&vendor.issue(&claims)).unwrap();
        document.signature = SignatureBytes(sign(
            &vendor.issuer.0,
            CERTIFICATE_CONTEXT,
            &to_json(&claims),
        ));
        let text = armor(LICENSE_LABEL, &to_json(&document));
        assert_eq!(code_of(verify_now(&vendor, &text)), "invalid_signature");
        // And without any context at all.
        document.signature = SignatureBytes(vendor.issuer.0.sign(&to_json(&claims)).to_bytes());
        let text = armor(LICENSE_LABEL, &to_json(&document));
        assert_eq!(code_of(verify_now(&vendor, &text)), "invalid_signature");
    }

    #[test]
    fn a_certificate_signed_for_another_purpose_is_from_an_unknown_issuer() {
        let vendor = Vendor::new(1, 2);
        let mut document = LicenseDocument::parse(&vendor.issue(&claims())).unwrap();
        document.issuer.root_signature = SignatureBytes(sign(
            &vendor.root.0,
            LICENSE_CONTEXT,
            &to_json(&document.issuer.certificate),
        ));
        let text = armor(LICENSE_LABEL, &to_json(&document));
        assert_eq!(code_of(verify_now(&vendor, &text)), "unknown_issuer");
    }

    #[test]
    fn keys_and_certificates_survive_their_armor() {
        let vendor = Vendor::new(1, 2);
        let root_text = vendor.root.to_armored();
        assert!(root_text.starts_with("-----BEGIN FLOATILLA LICENSE ROOT SECRET KEY-----\n"));
        let root = RootKey::from_armored(&root_text).unwrap();
        assert_eq!(root.public_key(), vendor.root.public_key());

        let public_text = vendor.root.public_key().to_armored();
        assert!(public_text.starts_with("-----BEGIN FLOATILLA LICENSE ROOT PUBLIC KEY-----\n"));
        assert_eq!(
            RootPublicKey::from_armored(&public_text).unwrap(),
            vendor.root.public_key()
        );

        let issuer = IssuerKey::from_armored(&vendor.issuer.to_armored()).unwrap();
        assert_eq!(issuer.public_key(), vendor.issuer.public_key());

        let certificate_text = vendor.certificate.to_armored();
        let certificate = SignedIssuerCertificate::from_armored(&certificate_text).unwrap();
        assert_eq!(certificate, vendor.certificate);
        assert!(certificate.is_for(&vendor.issuer.public_key()));
        assert!(!certificate.is_for(&IssuerKey::from_seed([9; 32]).public_key()));
        assert_eq!(certificate.certificate().key_id.len(), 16);
        assert_eq!(
            certificate.certificate().root_key_id,
            vendor.root.public_key().key_id()
        );

        // One kind of file is not another.
        assert_eq!(
            RootKey::from_armored(&public_text).unwrap_err().code(),
            "not_armored"
        );
        assert_eq!(
            IssuerKey::from_armored(&root_text).unwrap_err().code(),
            "not_armored"
        );
        // Secret keys never show in debug output.
        let debug = format!("{:?}", vendor.root);
        assert!(!debug.contains(&BASE64.encode([1u8; 32])));
        assert!(debug.contains(&vendor.root.public_key().key_id()));
    }

    #[test]
    fn inspect_reads_without_trusting() {
        let stranger = Vendor::new(3, 4);
        let text = stranger.issue(&claims());
        let (claims_read, certificate) = inspect(&text).unwrap();
        assert_eq!(claims_read, claims());
        assert_eq!(certificate, *stranger.certificate.certificate());
        assert_eq!(inspect("nonsense").unwrap_err().code(), "malformed");
    }

    #[test]
    fn claims_are_checked_before_signing() {
        assert_eq!(claims().check_consistency(), Ok(()));
        let check = |claims: LicenseClaims| claims.check_consistency().map_err(|e| e.code());
        assert_eq!(
            check(LicenseClaims {
                serial: String::new(),
                ..claims()
            }),
            Err("empty_serial")
        );
        assert_eq!(
            check(LicenseClaims {
                not_after: Some(claims().not_before),
                grace_until: None,
                ..claims()
            }),
            Err("ends_before_start")
        );
        assert_eq!(
            check(LicenseClaims {
                not_after: None,
                ..claims()
            }),
            Err("grace_without_end")
        );
        assert_eq!(
            check(LicenseClaims {
                grace_until: Some(at("2026-02-01T00:00:00Z")),
                ..claims()
            }),
            Err("grace_before_end")
        );
        assert_eq!(
            check(LicenseClaims {
                supersedes: vec!["L-0001".to_owned()],
                ..claims()
            }),
            Err("supersedes_itself")
        );
    }
}
