//! How a router decides it talks to its own server, never to an impostor.
//!
//! Before enrollment a router knows only the SHA-256 fingerprint of the server's CA (carried in the
//! enrollment token) or the CA certificate itself (`--ca-cert`). The server presents its leaf
//! certificate followed by that CA; the router accepts the connection only if the CA matches what it
//! knows and the leaf is validly signed by it, at the time the router's clock trusts
//! ([`RouterClock`]: never earlier than the agent's build date).

use std::sync::Arc;

use floatilla_protocol::CaFingerprint;

use crate::clock::RouterClock;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What a router trusts the server by.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The SHA-256 fingerprint of the CA certificate, from an enrollment token.
    CaFingerprint(CaFingerprint),
    /// The CA certificate itself (DER), as enrollment returns it or `--ca-cert` gives it.
    CaCertificate(CertificateDer<'static>),
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read CA certificate: {0}")]
    BadCaCertificate(String),
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl ServerTrust {
    /// Reads a CA certificate in PEM form.
    pub fn from_ca_pem(pem: &str) -> Result<Self, TrustError> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map(Self::CaCertificate)
            .map_err(|e| TrustError::BadCaCertificate(e.to_string()))
    }

    /// A TLS client configuration that verifies the server against this trust, at the time the
    /// router's clock trusts (see [`RouterClock`]).
    pub fn client_config(&self, clock: Arc<RouterClock>) -> Result<Arc<ClientConfig>, TrustError> {
        let provider = provider();
        let verifier = Arc::new(PinnedCaVerifier {
            trust: self.clone(),
            provider: provider.clone(),
        });
        let config = ClientConfig::builder_with_details(provider, clock)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies the server chain against one pinned CA, at a time no earlier than the build date.
#[derive(Debug)]
struct PinnedCaVerifier {
    trust: ServerTrust,
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    fn webpki_for(
        &self,
        ca: CertificateDer<'static>,
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca)?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn pinned_ca(
        &self,
        presented: &[CertificateDer<'_>],
    ) -> Result<CertificateDer<'static>, rustls::Error> {
        match &self.trust {
            ServerTrust::CaCertificate(ca) => Ok(ca.clone()),
            ServerTrust::CaFingerprint(fingerprint) => presented
                .iter()
                .find(|cert| CaFingerprint::of_der(cert) == *fingerprint)
                .map(|cert| cert.clone().into_owned())
                .ok_or_else(|| {
                    rustls::Error::General(format!(
                        "the server's CA does not match the fingerprint {} this router trusts",
                        fingerprint.to_hex()
                    ))
                }),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = self.pinned_ca(intermediates)?;
        self.webpki_for(ca)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
