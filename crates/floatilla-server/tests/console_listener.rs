//! The optional second listener presents the operator's own certificate for the API, while the
//! device channel keeps presenting the installation CA's leaf.

mod common;

use common::*;
use floatilla_server::ConsoleListener;
use floatilla_store::testing::TestDb;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn the_console_listener_serves_the_api_with_the_operators_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (
        dir.path().join("console.pem"),
        dir.path().join("console.key"),
    );
    std::fs::write(&cert_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let mut config = test_config();
    config.console = Some(ConsoleListener {
        listen: "127.0.0.1:0".parse().unwrap(),
        certificate: cert_path,
        private_key: key_path,
    });
    let server = TestServer::start_with(TestDb::sqlite(), config).await;
    let console = server
        .running()
        .console_addr
        .expect("console listener bound");

    let operator_trust = floatilla_agent::ServerTrust::CaCertificate(
        CertificateDer::from_pem_slice(certificate.pem().as_bytes()).unwrap(),
    );
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(std::sync::Arc::unwrap_or_clone(
            operator_trust.client_config(Default::default()).unwrap(),
        ))
        .resolve("localhost", console)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", console.port());
    let devices = client
        .get(format!("{base}/api/v1/devices"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);
    let enroll = client
        .post(format!("{base}/device/v1/enroll"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(enroll.status(), 404, "routers use the device listener only");

    // The device listener still presents the CA-signed leaf.
    server.enrolled("CON-1").await;
}
