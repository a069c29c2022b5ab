//! The server's own certificate authority and the leaf certificate the device channel presents.
//!
//! The CA is made once, kept in the database (so every node of an installation shares it) and lives
//! for a century. Leaves are made by each node at start and rotated before they expire. Everything
//! is valid from 2000-01-01, long before any agent build, so a router whose clock is wrong (it
//! verifies as of its own build date at the earliest) still accepts them.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use floatilla_domain::Timestamp;
use floatilla_protocol::CaFingerprint;
use floatilla_store::Store;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const CA_SETTING: &str = "tls.certificate_authority";

/// How long a leaf certificate is valid, counted from when it is made.
pub const LEAF_LIFETIME_DAYS: i64 = 365;
/// A leaf is replaced once less than this remains.
pub const LEAF_RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot read {what}: {detail}")]
    Read { what: String, detail: String },
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Error::Store(floatilla_store::StoreError::Corrupt(e.to_string()))
    }
}

/// The installation's certificate authority.
pub struct CertificateAuthority {
    certificate: CertificateDer<'static>,
    certificate_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

#[derive(Serialize, Deserialize)]
struct StoredAuthority {
    certificate_pem: String,
    private_key_pem: String,
}

fn backdated_not_before() -> time::OffsetDateTime {
    rcgen::date_time_ymd(2000, 1, 1)
}

fn to_offset(at: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl CertificateAuthority {
    /// Loads the installation's CA, creating it on first start. When several nodes start at once
    /// the first stored CA wins and every node uses that one.
    pub async fn load_or_create(store: &dyn Store) -> Result<Self> {
        if let Some(stored) = store.setting(CA_SETTING).await? {
            return Ok(Self::from_stored(&stored)?);
        }
        let fresh = Self::generate()?;
        let stored = store.init_setting(CA_SETTING, &fresh).await?;
        Ok(Self::from_stored(&stored)?)
    }

    fn generate() -> Result<String, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Floatilla");
        name.push(DnType::CommonName, "Floatilla installation CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = backdated_not_before();
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let certificate = params.self_signed(&key)?;
        Ok(serde_json::to_string(&StoredAuthority {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        })
        .expect("serializable"))
    }

    fn from_stored(stored: &str) -> Result<Self, TlsError> {
        let read = |detail: String| TlsError::Read {
            what: "the stored certificate authority".into(),
            detail,
        };
        let stored: StoredAuthority =
            serde_json::from_str(stored).map_err(|e| read(e.to_string()))?;
        let key = KeyPair::from_pem(&stored.private_key_pem)?;
        let certificate = CertificateDer::from_pem_slice(stored.certificate_pem.as_bytes())
            .map_err(|e| read(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&certificate, key)?;
        Ok(Self {
            certificate,
            certificate_pem: stored.certificate_pem,
            issuer,
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn fingerprint(&self) -> CaFingerprint {
        CaFingerprint::of_der(&self.certificate)
    }

    /// Issues a server leaf for `names` (DNS names and IP addresses), valid from 2000-01-01 for
    /// [`LEAF_LIFETIME_DAYS`] after `now`.
    pub fn issue_leaf(&self, names: &[String], now: Timestamp) -> Result<Leaf, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Floatilla server");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = backdated_not_before();
        let expires_at = now + chrono::Duration::days(LEAF_LIFETIME_DAYS);
        params.not_after = to_offset(expires_at);
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![certificate.der().clone(), self.certificate.clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError::Read {
                what: "generated key".into(),
                detail: e.to_string(),
            })?,
            expires_at,
        })
    }
}

/// A leaf certificate with its chain (leaf, then CA) and key.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub expires_at: Timestamp,
}

/// Hands rustls the current leaf; [`LeafResolver::replace`] swaps it without a restart.
#[derive(Debug)]
pub struct LeafResolver {
    current: ArcSwap<CertifiedKey>,
    expires_at: ArcSwap<Timestamp>,
}

impl LeafResolver {
    pub fn new(leaf: Leaf) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(certified(&leaf)?),
            expires_at: ArcSwap::from_pointee(leaf.expires_at),
        })
    }

    pub fn replace(&self, leaf: Leaf) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified(&leaf)?));
        self.expires_at.store(Arc::new(leaf.expires_at));
        Ok(())
    }

    pub fn expires_at(&self) -> Timestamp {
        **self.expires_at.load()
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified(leaf: &Leaf) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey::from_der(
        leaf.chain.clone(),
        leaf.key.clone_key(),
        &provider(),
    )?)
}

pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The TLS settings of the device listener.
pub fn server_config(resolver: Arc<LeafResolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS settings of a listener that presents an operator's own certificate (PEM files).
pub fn config_from_files(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |what: &std::path::Path, detail: String| TlsError::Read {
        what: what.display().to_string(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| read(cert_path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(cert_path, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| read(key_path, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The names a leaf covers: the listen address (every local address when it is unspecified),
/// `localhost`, the loopback addresses and every configured host name.
pub fn leaf_names(listen_ip: IpAddr, hostnames: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if listen_ip.is_unspecified() {
        if let Ok(interfaces) = if_addrs::get_if_addrs() {
            names.extend(interfaces.into_iter().map(|i| i.ip().to_string()));
        }
    } else {
        names.push(listen_ip.to_string());
    }
    names.extend(hostnames.iter().cloned());
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_address_covers_loopback_and_hostnames() {
        let names = leaf_names("0.0.0.0".parse().unwrap(), &["fleet.example.com".into()]);
        for expected in ["localhost", "127.0.0.1", "::1", "fleet.example.com"] {
            assert!(names.contains(&expected.to_owned()), "{names:?}");
        }
    }

    #[test]
    fn a_generated_authority_reloads_and_issues_leaves() {
        let stored = CertificateAuthority::generate().unwrap();
        let ca = CertificateAuthority::from_stored(&stored).unwrap();
        let again = CertificateAuthority::from_stored(&stored).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        let now = chrono::Utc::now();
        let leaf = ca
            .issue_leaf(&["localhost".into(), "127.0.0.1".into()], now)
            .unwrap();
        assert_eq!(leaf.chain.len(), 2);
        assert_eq!(leaf.chain[1], ca.certificate);
        assert_eq!(
            leaf.expires_at,
            now + chrono::Duration::days(LEAF_LIFETIME_DAYS)
        );
    }
}
