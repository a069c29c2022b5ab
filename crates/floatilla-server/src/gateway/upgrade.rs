//! The WebSocket upgrade of `/device/v1/connect`, done with hyper and tungstenite directly so the
//! session owns the socket's settings (message cap, buffers) and its error types.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::error::rejection;
use crate::gateway::admission::NotAdmitted;
use crate::gateway::session;
use crate::server::RemoteAddr;
use crate::state::AppState;

pub async fn connect(State(state): State<AppState>, mut request: Request) -> Response {
    let headers = request.headers();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return not_websocket();
    };
    if !is_upgrade || !version_ok {
        return not_websocket();
    }
    let remote = request
        .extensions()
        .get::<RemoteAddr>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |r| r.0);
    let admitted = match state.admission.admit() {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(refusal, remote),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let tracker = state.session_tasks.clone();
    tracker.spawn(async move {
        // The place is held until the session ends.
        let _admitted = admitted;
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(websocket_config()),
                )
                .await;
                session::run(state, socket, remote).await;
            }
            Err(error) => tracing::debug!(%error, %remote, "WebSocket upgrade failed"),
        }
    });
    let accept = derive_accept_key(key.as_bytes());
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    response
}

/// `503` with `Retry-After`: the router backs off for that long.
fn refused(refusal: NotAdmitted, remote: SocketAddr) -> Response {
    tracing::debug!(%remote, code = refusal.code(), "router not admitted");
    crate::metrics::refusal(refusal.code());
    let message = match refusal {
        NotAdmitted::Full { .. } => {
            "this server holds as many routers as it takes; try again later"
        }
        NotAdmitted::Flooded { .. } => "too many routers are connecting at once; try again shortly",
    };
    let mut response = rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        refusal.code(),
        message.to_owned(),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after_secs()),
    );
    response
}

fn not_websocket() -> Response {
    rejection(
        StatusCode::BAD_REQUEST,
        "websocket_required",
        "this endpoint speaks WebSocket (version 13) only".into(),
    )
}

/// Messages are capped; buffers are small because most routers are idle most of the time.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(floatilla_protocol::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(floatilla_protocol::MAX_MESSAGE_BYTES))
        .read_buffer_size(512)
        .write_buffer_size(0)
}
