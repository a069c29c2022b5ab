//! Enrollment over HTTPS and the control-channel WebSocket, both verified with [`ServerTrust`].

use std::net::SocketAddr;
use std::sync::Arc;

use floatilla_protocol::{
    CONNECT_PATH, DeviceMessage, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody, Hello,
    MAX_MESSAGE_BYTES, ServerMessage, Welcome, encode,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::clock::RouterClock;
use crate::tls::{ServerTrust, TrustError};

/// The WebSocket a router holds, over TLS.
pub type ChannelStream = WebSocketStream<TlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("bad server URL `{0}`: expected https://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach the server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("WebSocket failed: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server refused: {0}")]
    Refused(ErrorBody),
    #[error("the server is busy ({code}); retry in {retry_after_secs} s")]
    Busy { code: String, retry_after_secs: u32 },
    #[error("the server closed the connection: {reason}: {message}")]
    Disconnected {
        reason: String,
        message: String,
        reconnect_after_secs: Option<u32>,
    },
    #[error("the server sent something unexpected: {0}")]
    Unexpected(String),
}

/// A server's address as `serve` prints it: `https://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    pub fn parse(url: &str) -> Result<Self, ChannelError> {
        let bad = || ChannelError::BadUrl(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(443),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn server_name(&self) -> Result<ServerName<'static>, ChannelError> {
        ServerName::try_from(self.host.clone()).map_err(|_| ChannelError::BadUrl(self.host.clone()))
    }
}

/// Opens verified connections to one server. Made once and shared: the TLS configuration is the
/// expensive part.
#[derive(Clone)]
pub struct Connector {
    server: ServerAddress,
    tls: TlsConnector,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server", &self.server)
            .finish()
    }
}

impl Connector {
    pub fn new(
        server: ServerAddress,
        trust: &ServerTrust,
        clock: Arc<RouterClock>,
    ) -> Result<Self, ChannelError> {
        Ok(Self {
            server,
            tls: TlsConnector::from(trust.client_config(clock)?),
        })
    }

    /// The server's `HOST:PORT`, for `Host` headers.
    pub fn authority(&self) -> String {
        self.server.authority()
    }

    /// Opens TCP, optionally from a chosen local address, then TLS.
    pub async fn connect_tls(
        &self,
        local_addr: Option<SocketAddr>,
    ) -> Result<TlsStream<TcpStream>, ChannelError> {
        let authority = self.server.authority();
        let tcp = match local_addr {
            None => TcpStream::connect(&authority).await?,
            Some(local) => {
                let remote = tokio::net::lookup_host(&authority)
                    .await?
                    .find(|addr| addr.is_ipv4() == local.is_ipv4())
                    .ok_or_else(|| ChannelError::BadUrl(authority.clone()))?;
                let socket = if local.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(local)?;
                socket.connect(remote).await?
            }
        };
        tcp.set_nodelay(true)?;
        Ok(self.tls.connect(self.server.server_name()?, tcp).await?)
    }

    /// Enrolls a router: trades an enrollment token for the router's own credential.
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, ChannelError> {
        let tls = self.connect_tls(None).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ChannelError::Http(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let http_request = http::Request::post(ENROLL_PATH)
            .header(http::header::HOST, self.server.authority())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(encode(request))))
            .map_err(|e| ChannelError::Http(e.to_string()))?;
        let response = sender
            .send_request(http_request)
            .await
            .map_err(|e| ChannelError::Http(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ChannelError::Http(e.to_string()))?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| ChannelError::Unexpected(e.to_string()))
        } else {
            Err(ChannelError::Refused(
                serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
                    code: format!("http_{}", status.as_u16()),
                    message: String::from_utf8_lossy(&body).into_owned(),
                }),
            ))
        }
    }

    /// Opens the WebSocket without saying HELLO: for callers that speak the protocol themselves.
    pub async fn open_websocket(
        &self,
        local_addr: Option<SocketAddr>,
    ) -> Result<ChannelStream, ChannelError> {
        let tls = self.connect_tls(local_addr).await?;
        let request =
            format!("wss://{}{CONNECT_PATH}", self.server.authority()).into_client_request()?;
        match tokio_tungstenite::client_async_with_config(request, tls, Some(websocket_config()))
            .await
        {
            Ok((stream, _response)) => Ok(stream),
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == http::StatusCode::SERVICE_UNAVAILABLE =>
            {
                Err(busy(&response))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Opens the control channel: TLS, WebSocket upgrade, HELLO, and waits for WELCOME.
    pub async fn open_channel(
        &self,
        hello: Hello,
        local_addr: Option<SocketAddr>,
    ) -> Result<ControlChannel, ChannelError> {
        let mut stream = self.open_websocket(local_addr).await?;
        send_message(&mut stream, &DeviceMessage::Hello(hello)).await?;
        match recv_message(&mut stream).await? {
            Some(ServerMessage::Welcome(welcome)) => Ok(ControlChannel { stream, welcome }),
            Some(ServerMessage::Error(error)) => Err(ChannelError::Refused(error)),
            Some(ServerMessage::Disconnect {
                reason,
                message,
                reconnect_after_secs,
            }) => Err(ChannelError::Disconnected {
                reason,
                message,
                reconnect_after_secs,
            }),
            Some(other) => Err(ChannelError::Unexpected(format!(
                "{other:?} before WELCOME"
            ))),
            None => Err(ChannelError::Unexpected(
                "connection closed before WELCOME".into(),
            )),
        }
    }
}

/// Reads a `503` answer: its error code and `Retry-After` (1 s when absent or unreadable).
fn busy(response: &http::Response<Option<Vec<u8>>>) -> ChannelError {
    let retry_after_secs = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    let code = response
        .body()
        .as_deref()
        .and_then(|body| serde_json::from_slice::<ErrorBody>(body).ok())
        .map_or_else(|| "service_unavailable".to_owned(), |error| error.code);
    ChannelError::Busy {
        code,
        retry_after_secs,
    }
}

/// The WebSocket settings both ends use: messages capped, small buffers for many idle routers.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .read_buffer_size(512)
        .write_buffer_size(0)
}

/// An open, welcomed control channel.
#[derive(Debug)]
pub struct ControlChannel {
    pub stream: ChannelStream,
    pub welcome: Welcome,
}

pub async fn send_message(
    stream: &mut ChannelStream,
    message: &DeviceMessage,
) -> Result<(), ChannelError> {
    stream.send(Message::text(encode(message))).await?;
    Ok(())
}

/// The next server message; WebSocket pings are answered while waiting. `Ok(None)` means the
/// server closed the connection without saying why.
pub async fn recv_message(
    stream: &mut ChannelStream,
) -> Result<Option<ServerMessage>, ChannelError> {
    while let Some(frame) = stream.next().await {
        match frame? {
            Message::Text(text) => {
                return ServerMessage::decode(&text)
                    .map(Some)
                    .map_err(|e| ChannelError::Unexpected(e.to_string()));
            }
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}
