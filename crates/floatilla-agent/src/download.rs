//! Downloading a job's artifact: over the router's verified TLS connection, authorized by its
//! credential, into a partial file that a broken-off transfer resumes with a `Range` request;
//! the file is used only once its size and SHA-256 match what the job said.

use std::path::{Path, PathBuf};
use std::time::Duration;

use floatilla_protocol::WireArtifact;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::Connector;

/// How often a download that broke off is resumed before the job fails.
const ATTEMPTS: u32 = 8;
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Fetches artifacts from the router's server.
#[derive(Clone)]
pub struct Downloader {
    connector: Connector,
    credential: String,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

/// Why an artifact could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("the server refused the download ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the download kept breaking off: {0}")]
    Broken(String),
    #[error("the downloaded file's SHA-256 is {actual}, not the {expected} the job names")]
    Digest { expected: String, actual: String },
    #[error("cannot write the download: {0}")]
    Io(#[from] std::io::Error),
}

/// What one request did.
enum Attempt {
    Complete,
    /// Broke off or the server was busy: try again after the wait.
    Again(Duration, String),
    /// The partial file does not fit the server's answer: start over.
    Restart,
}

impl Downloader {
    pub fn new(connector: Connector, credential: String) -> Self {
        Self {
            connector,
            credential,
        }
    }

    /// Downloads `artifact` to `destination` (resuming `destination.part` if an earlier
    /// attempt left one) and checks it; when it fails nothing is left behind.
    pub async fn fetch(
        &self,
        artifact: &WireArtifact,
        destination: &Path,
    ) -> Result<PathBuf, DownloadError> {
        let partial = destination.with_extension("part");
        let fetched = self.fetch_to(artifact, &partial, destination).await;
        if fetched.is_err() {
            tokio::fs::remove_file(&partial).await.ok();
        }
        fetched
    }

    async fn fetch_to(
        &self,
        artifact: &WireArtifact,
        partial: &Path,
        destination: &Path,
    ) -> Result<PathBuf, DownloadError> {
        let mut backoff = Duration::from_millis(500);
        let mut last_failure = String::new();
        for _ in 0..ATTEMPTS {
            let have = tokio::fs::metadata(partial)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if have == artifact.size {
                break;
            }
            if have > artifact.size {
                tokio::fs::remove_file(partial).await.ok();
                continue;
            }
            match self.attempt(artifact, partial, have).await? {
                Attempt::Complete => break,
                Attempt::Restart => {
                    tokio::fs::remove_file(partial).await.ok();
                }
                Attempt::Again(wait, why) => {
                    last_failure = why;
                    tokio::time::sleep(wait.max(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let have = tokio::fs::metadata(partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if have != artifact.size {
            return Err(DownloadError::Broken(format!(
                "{have} of {} bytes after {ATTEMPTS} attempts: {last_failure}",
                artifact.size
            )));
        }
        let actual = sha256_of(partial).await?;
        if !actual.eq_ignore_ascii_case(&artifact.sha256) {
            tokio::fs::remove_file(partial).await.ok();
            return Err(DownloadError::Digest {
                expected: artifact.sha256.clone(),
                actual,
            });
        }
        tokio::fs::rename(partial, destination).await?;
        Ok(destination.to_owned())
    }

    /// One request for what is missing, appended to the partial file as it arrives.
    async fn attempt(
        &self,
        artifact: &WireArtifact,
        partial: &Path,
        have: u64,
    ) -> Result<Attempt, DownloadError> {
        let broke = |e: &dyn std::fmt::Display| Attempt::Again(Duration::ZERO, e.to_string());
        let tls = match self.connector.connect_tls(None).await {
            Ok(tls) => tls,
            Err(error) => return Ok(broke(&error)),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
                Ok(pair) => pair,
                Err(error) => return Ok(broke(&error)),
            };
        let driver = tokio::spawn(connection);
        let mut request = http::Request::get(&artifact.path)
            .header(http::header::HOST, self.connector.authority())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.credential),
            );
        if have > 0 {
            request = request.header(http::header::RANGE, format!("bytes={have}-"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| DownloadError::Broken(e.to_string()))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                driver.abort();
                return Ok(broke(&error));
            }
        };
        let status = response.status();
        let append = match status {
            http::StatusCode::PARTIAL_CONTENT if have > 0 => true,
            http::StatusCode::OK => false,
            http::StatusCode::RANGE_NOT_SATISFIABLE => {
                driver.abort();
                return Ok(Attempt::Restart);
            }
            http::StatusCode::SERVICE_UNAVAILABLE | http::StatusCode::TOO_MANY_REQUESTS => {
                let wait = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_secs(5), Duration::from_secs);
                driver.abort();
                return Ok(Attempt::Again(
                    wait,
                    format!("the server is busy ({status})"),
                ));
            }
            status if status.is_server_error() => {
                driver.abort();
                return Ok(Attempt::Again(
                    Duration::ZERO,
                    format!("the server failed ({status})"),
                ));
            }
            _ => {
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                driver.abort();
                let message = serde_json::from_slice::<floatilla_protocol::ErrorBody>(&body)
                    .map(|e| e.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
                return Err(DownloadError::Refused {
                    status: status.as_u16(),
                    message,
                });
            }
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(partial)
            .await?;
        let mut body = response.into_body();
        let outcome = loop {
            match body.frame().await {
                None => break Attempt::Complete,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        file.write_all(&data).await?;
                    }
                }
                Some(Err(error)) => break broke(&error),
            }
        };
        file.flush().await?;
        file.sync_all().await?;
        driver.abort();
        Ok(outcome)
    }
}

/// The file's SHA-256 in lower-case hex.
pub async fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
