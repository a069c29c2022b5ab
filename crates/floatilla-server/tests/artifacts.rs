//! Artifacts: uploaded once, stored where every node serves them, downloaded by the routers
//! whose jobs carry them, in ranges, so a transfer cut off on a poor link resumes.

mod common;

use common::*;
use floatilla_agent::ServerAddress;
use floatilla_agent::download::Downloader;
use floatilla_protocol::{DeviceMessage, JobUpdate, JobUpdateState, WireJob};
use floatilla_store::testing::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_backends!(
    artifacts_are_checked_listed_and_kept_while_a_job_carries_them,
    a_job_carries_an_artifact_of_its_kind_for_routers_of_its_models,
    a_router_downloads_its_own_executions_artifact_in_ranges,
    an_interrupted_download_resumes_where_it_broke_off,
    downloads_beyond_the_cap_are_asked_to_come_back,
);

/// Bytes that differ from chunk to chunk, `len` of them.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn uploaded(server: &TestServer, query: &str, bytes: Vec<u8>) -> Value {
    let (status, artifact) = upload_artifact(server, query, bytes).await;
    assert_eq!(status, 201, "{artifact}");
    artifact
}

/// A licensed router with a firmware job for it; answers the router, its credential, the job
/// as sent and the artifact's bytes.
async fn router_with_firmware_job(
    server: &TestServer,
    size: usize,
) -> (TestRouter, String, WireJob, Vec<u8>) {
    add_license(server, json!({"name": "one", "seats": 1})).await;
    let enrolled = server.enrolled("DL-01").await;
    let mut router = server.router(&enrolled.credential, "DL-01").await;
    let bytes = content(size);
    let artifact = uploaded(
        server,
        "kind=firmware&name=mrx&version=5.3.0&models=MRX5",
        bytes.clone(),
    )
    .await;
    let (status, job) = server
        .api(
            Method::POST,
            "/api/v1/jobs",
            Some(
                json!({"kind": "firmware_update", "artifact_id": artifact["id"],
                "target": {"ids": [enrolled.device_id]}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["artifact"]["sha256"], sha256(&bytes));
    let sent = next_job(&mut router).await;
    (router, enrolled.credential, sent, bytes)
}

async fn artifacts_are_checked_listed_and_kept_while_a_job_carries_them(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    // Several chunks and a short last one.
    let bytes = content(3 * 1024 * 1024 + 5);
    let digest = sha256(&bytes);
    let firmware = uploaded(
        &server,
        &format!("kind=firmware&name=mrx&version=5.3.0&models=MRX5,MRX6&sha256={digest}"),
        bytes.clone(),
    )
    .await;
    assert_eq!(
        (&firmware["size"], &firmware["sha256"], &firmware["models"]),
        (
            &json!(bytes.len()),
            &json!(digest),
            &json!(["MRX5", "MRX6"])
        )
    );
    assert_eq!(server.events("artifact_uploaded").await.len(), 1);

    let refusals = [
        (
            "kind=firmware&name=mrx&version=5.3.0",
            content(10),
            409,
            "conflict",
        ),
        (
            "kind=firmware&name=mrx&version=5.4.0&sha256=00ff",
            content(10),
            400,
            "sha256_mismatch",
        ),
        (
            "kind=config&name=empty&version=1",
            Vec::new(),
            400,
            "empty_artifact",
        ),
        (
            "kind=image&name=x&version=1",
            content(10),
            400,
            "invalid_kind",
        ),
        (
            "kind=config&name=x&version=",
            content(10),
            400,
            "invalid_version",
        ),
    ];
    for (query, body, status, code) in refusals {
        let (got, answer) = upload_artifact(&server, query, body).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{query}: {answer}"
        );
    }
    let all = server.get("/api/v1/artifacts").await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "refused uploads leave nothing: {all}"
    );
    assert_eq!(server.get("/api/v1/artifacts?kind=config").await, json!([]));
    let id = firmware["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/api/v1/artifacts/{id}")).await,
        firmware
    );

    let other = other_tenant_admin(&server).await;
    let (status, _) = server
        .api_as(
            &other,
            Method::GET,
            &format!("/api/v1/artifacts/{id}"),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "another tenant's artifact does not exist for it"
    );
    let (status, _) = server
        .api_as(
            &other,
            Method::DELETE,
            &format!("/api/v1/artifacts/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Carried by a job: kept.
    let enrolled = server.enrolled("AR-01").await;
    let _router = server.router(&enrolled.credential, "AR-01").await;
    add_license(&server, json!({"name": "one", "seats": 1})).await;
    let (status, job) = server
        .api(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"kind": "firmware_update", "artifact_id": id,
                "target": {"ids": [enrolled.device_id]}})),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let (status, answer) = server
        .api(Method::DELETE, &format!("/api/v1/artifacts/{id}"), None)
        .await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("conflict")));

    let config = uploaded(&server, "kind=config&name=acl&version=1", content(100)).await;
    let (status, _) = server
        .api(
            Method::DELETE,
            &format!("/api/v1/artifacts/{}", config["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(server.get("/api/v1/artifacts?kind=config").await, json!([]));
}

async fn a_job_carries_an_artifact_of_its_kind_for_routers_of_its_models(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    add_license(&server, json!({"name": "two", "seats": 2})).await;
    let routers = connect_fleet(&server, "AK", 2).await;
    server.create_group(json!({"name": "site"})).await;
    for (id, _) in &routers {
        let (status, _) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/devices/{id}"),
                Some(json!({"group": "site"})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let ids: Vec<&str> = routers.iter().map(|(id, _)| id.as_str()).collect();
    let config = uploaded(&server, "kind=config&name=acl&version=1", content(64)).await;
    let other_model = uploaded(
        &server,
        "kind=firmware&name=rut&version=7&models=RUT955",
        content(64),
    )
    .await;
    let cases = [
        (
            json!({"kind": "reboot", "artifact_id": config["id"], "target": {"ids": ids}}),
            400,
            "artifact_not_expected",
        ),
        (
            json!({"kind": "config_update", "target": {"ids": ids}}),
            400,
            "artifact_required",
        ),
        (
            json!({"kind": "firmware_update", "artifact_id": config["id"], "target": {"ids": ids}}),
            400,
            "artifact_kind_mismatch",
        ),
        (
            json!({"kind": "config_update", "artifact_id": "not-an-id", "target": {"ids": ids}}),
            404,
            "not_found",
        ),
        (
            json!({"kind": "firmware_update", "artifact_id": other_model["id"], "target": {"ids": ids}}),
            400,
            "model_mismatch",
        ),
        (
            json!({"kind": "firmware_update", "artifact_id": other_model["id"], "target": {"group": "site"}}),
            400,
            "empty_target",
        ),
    ];
    for (request, status, code) in cases {
        let (got, answer) = server
            .api(Method::POST, "/api/v1/jobs", Some(request.clone()))
            .await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{request}: {answer}"
        );
    }
    let (status, job) = server
        .api(
            Method::POST,
            "/api/v1/jobs",
            Some(json!({"kind": "config_update", "artifact_id": config["id"],
                "target": {"group": "site"}})),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["artifact"]["name"], "acl");
    assert!(job.get("left_out").is_none(), "nobody left out: {job}");
}

async fn a_router_downloads_its_own_executions_artifact_in_ranges(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let (router, credential, job, bytes) =
        router_with_firmware_job(&server, 2 * 1024 * 1024 + 10).await;
    let artifact = job.artifact.clone().expect("the job names its artifact");
    assert_eq!(
        (
            artifact.size,
            artifact.sha256.as_str(),
            artifact.version.as_str()
        ),
        (bytes.len() as u64, sha256(&bytes).as_str(), "5.3.0")
    );
    let url = format!("{}{}", server.url, artifact.path);
    let get = |credential: Option<&str>, range: Option<&str>| {
        let mut request = server.http.get(&url);
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        request.send()
    };

    let whole = get(Some(&credential), None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(
        whole.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", artifact.sha256)
    );
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // Across a chunk boundary to the end.
    let from = 1024 * 1024 - 3;
    let rest = get(Some(&credential), Some(&format!("bytes={from}-")))
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    assert_eq!(
        rest.headers()["content-range"].to_str().unwrap(),
        format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len())
    );
    assert_eq!(rest.bytes().await.unwrap().as_ref(), &bytes[from..]);
    let middle = get(Some(&credential), Some("bytes=10-19")).await.unwrap();
    assert_eq!(middle.bytes().await.unwrap().as_ref(), &bytes[10..20]);

    let beyond = get(Some(&credential), Some(&format!("bytes={}-", bytes.len())))
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{}", bytes.len())
    );
    assert_eq!(get(None, None).await.unwrap().status(), 401);
    assert_eq!(get(Some("nonsense"), None).await.unwrap().status(), 401);
    let stranger = server.enrolled("DL-02").await;
    let refused = get(Some(&stranger.credential), None).await.unwrap();
    assert_eq!(
        refused.status(),
        404,
        "another router's execution is none of its business"
    );

    // Once the execution ended, its artifact is no longer served to it.
    router.send(DeviceMessage::JobUpdate(JobUpdate {
        execution_id: job.execution_id.clone(),
        attempt: Some(job.attempt),
        state: JobUpdateState::Succeeded,
        message: None,
    }));
    counts_become(&server, &job.job_id, json!({"succeeded": 1})).await;
    let ended = get(Some(&credential), None).await.unwrap();
    assert_eq!(ended.status(), 409);
    let body: Value = ended.json().await.unwrap();
    assert_eq!(body["code"], "execution_not_in_flight");
}

/// Relays TCP to `target`; the first connection is cut after `cut_after` bytes came back from
/// the server. Counts every byte that came back.
async fn cutting_proxy(
    target: std::net::SocketAddr,
    cut_after: u64,
) -> (std::net::SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let returned = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (counted, opened) = (returned.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let first = opened.fetch_add(1, Ordering::SeqCst) == 0;
            let counted = counted.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buffer = vec![0; 16 * 1024];
                let mut sent = 0u64;
                loop {
                    let read = match server_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    let allowed = if first {
                        usize::try_from(cut_after.saturating_sub(sent))
                            .unwrap()
                            .min(read)
                    } else {
                        read
                    };
                    if client_write.write_all(&buffer[..allowed]).await.is_err() {
                        break;
                    }
                    sent += allowed as u64;
                    counted.fetch_add(allowed as u64, Ordering::SeqCst);
                    if allowed < read {
                        break;
                    }
                }
                upstream.abort();
            });
        }
    });
    (address, returned, connections)
}

async fn an_interrupted_download_resumes_where_it_broke_off(db: TestDb) {
    let server = TestServer::start_with(db, licensing_config()).await;
    let size = 3 * 1024 * 1024;
    let (_router, credential, job, bytes) = router_with_firmware_job(&server, size).await;
    let artifact = job.artifact.clone().unwrap();
    let cut_after = 2 * 1024 * 1024;
    let (proxy, returned, connections) = cutting_proxy(
        format!("{}:{}", server.address.host, server.address.port)
            .parse()
            .unwrap(),
        cut_after,
    )
    .await;
    let through_proxy = ServerAddress {
        host: "127.0.0.1".into(),
        port: proxy.port(),
    };
    let connector =
        floatilla_agent::Connector::new(through_proxy, &server.trust(), Arc::default()).unwrap();
    let downloads = Downloader::new(connector, credential.clone());
    let dir = tempfile::tempdir().unwrap();
    let destination = dir.path().join("firmware.bin");
    let path = downloads.fetch(&artifact, &destination).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "the first transfer was cut and another made"
    );
    let came_back = returned.load(Ordering::SeqCst);
    assert!(
        came_back < (size as u64) + cut_after / 2,
        "the second transfer resumed rather than starting over: {came_back} bytes came back"
    );
    assert!(!destination.with_extension("part").exists());

    // A file that does not match the job's digest is refused and not kept.
    let mut wrong = artifact.clone();
    wrong.sha256 = sha256(b"something else");
    let direct =
        floatilla_agent::Connector::new(server.address.clone(), &server.trust(), Arc::default())
            .unwrap();
    let checked = Downloader::new(direct, credential);
    let refused = checked.fetch(&wrong, &dir.path().join("wrong.bin")).await;
    assert!(refused.is_err());
    assert!(!dir.path().join("wrong.bin").exists());
    assert!(!dir.path().join("wrong.part").exists());
}

async fn downloads_beyond_the_cap_are_asked_to_come_back(db: TestDb) {
    let config = floatilla_server::ServerConfig {
        max_downloads: 1,
        ..licensing_config()
    };
    let server = TestServer::start_with(db, config).await;
    let (_router, credential, job, bytes) =
        router_with_firmware_job(&server, 4 * 1024 * 1024).await;
    let url = format!("{}{}", server.url, job.artifact.unwrap().path);
    // The first download holds the only permit while its body is not read to the end.
    let mut first = server
        .http
        .get(&url)
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let busy = server
        .http
        .get(&url)
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "5");
    let body: Value = busy.json().await.unwrap();
    assert_eq!(body["code"], "too_many_downloads");

    let mut received = 0;
    while let Some(piece) = first.chunk().await.unwrap() {
        received += piece.len();
    }
    assert_eq!(received, bytes.len());
    // The permit comes back once the first body is done.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let again = server
            .http
            .get(&url)
            .bearer_auth(&credential)
            .header("Range", "bytes=0-0")
            .send()
            .await
            .unwrap();
        if again.status() == 206 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the permit never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
