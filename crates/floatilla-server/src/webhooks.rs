//! Delivering the tenants' events to their webhooks. Every node runs [`run`]: it queues a
//! delivery for each new event a webhook wants, claims the due ones (so no other node sends
//! them meanwhile), POSTs each signed with the webhook's secret, and records the attempt. A
//! failed attempt is retried after a growing delay; after the last one the delivery has failed.
//! Due times are read on the server's clock; only the polling runs on real time.

use std::sync::Arc;
use std::time::Duration;

use floatilla_domain::events::Event;
use floatilla_store::{AttemptRecord, ClaimedDelivery, DeliveryNext, WebhookAttempt};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::views::EventView;
use crate::state::AppState;

/// How often a node looks for new events and due deliveries.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a receiver has to answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery stays this node's: well beyond [`SEND_TIMEOUT`], so it lapses
/// (and another node retries it) only when this node stopped mid-attempt.
const CLAIM_SECONDS: i64 = 60;
/// Events considered per webhook in one transaction.
const QUEUE_BATCH: u32 = 100;
/// Deliveries claimed, and sent concurrently, at once.
const CLAIM_BATCH: u32 = 20;
/// The wait before each retry, in seconds: 10 s, 1 min, 5 min, 30 min, 2 h. A delivery whose
/// every retry failed too has failed.
const RETRY_DELAYS_SECONDS: [i64; 5] = [10, 60, 5 * 60, 30 * 60, 2 * 60 * 60];

pub const EVENT_HEADER: &str = "X-Floatilla-Event";
pub const DELIVERY_HEADER: &str = "X-Floatilla-Delivery";
pub const TIMESTAMP_HEADER: &str = "X-Floatilla-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Floatilla-Signature";

#[derive(Debug, thiserror::Error)]
pub enum WebhookClientError {
    #[error("cannot set up TLS for webhooks: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot set up the HTTP client for webhooks: {0}")]
    Http(#[from] reqwest::Error),
}

/// The HTTP client for webhooks: HTTPS targets are verified against the operating system's
/// trusted roots; redirects are not followed, so a delivery goes only where it was configured.
pub fn client() -> Result<reqwest::Client, WebhookClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Floatilla-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// `sha256=<hex>`: the HMAC-SHA256, keyed with the webhook's secret, of `<timestamp>.<body>`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Works the webhook queue until the node shuts down.
pub async fn run(state: AppState) {
    let client = match client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhooks are not delivered by this node");
            return;
        }
    };
    loop {
        queue_new_events(&state).await;
        send_due(&state, &client).await;
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}

async fn queue_new_events(state: &AppState) {
    loop {
        match state
            .store
            .queue_webhook_deliveries(state.clock.now(), QUEUE_BATCH)
            .await
        {
            Ok(true) => continue,
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot queue webhook deliveries; will retry");
                return;
            }
        }
    }
}

async fn send_due(state: &AppState, client: &reqwest::Client) {
    loop {
        let now = state.clock.now();
        let claim_until = now + chrono::Duration::seconds(CLAIM_SECONDS);
        let claimed = match state
            .store
            .claim_webhook_deliveries(now, claim_until, CLAIM_BATCH)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim webhook deliveries; will retry");
                return;
            }
        };
        let more = claimed.len() >= CLAIM_BATCH as usize;
        futures_util::future::join_all(
            claimed
                .into_iter()
                .map(|delivery| deliver(state, client, delivery)),
        )
        .await;
        if !more {
            return;
        }
    }
}

/// The JSON body of an event's delivery: the event as the API's `/events` shows it.
fn payload(event: &Event) -> String {
    serde_json::to_string(&EventView::from(event)).expect("an event serializes to JSON")
}

/// Makes one attempt and records it with what follows from it.
async fn deliver(state: &AppState, client: &reqwest::Client, delivery: ClaimedDelivery) {
    let body = payload(&delivery.event);
    let timestamp = state.clock.now().timestamp();
    let sent = client
        .post(&delivery.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, delivery.event.kind.as_str())
        .header(DELIVERY_HEADER, delivery.id.to_string())
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            signature(&delivery.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    let (http_status, error) = match sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("the receiver answered {}", response.status())),
        ),
        Err(error) => (None, Some(error_chain(&error))),
    };
    let at = state.clock.now();
    let next = match (&error, retry_delay(delivery.attempt)) {
        (None, _) => DeliveryNext::Delivered,
        (Some(_), Some(delay)) => DeliveryNext::RetryAt(at + delay),
        (Some(_), None) => DeliveryNext::Failed,
    };
    if let Some(error) = &error {
        tracing::debug!(delivery = %delivery.id, attempt = delivery.attempt, %error, "webhook delivery attempt failed");
    }
    let record = AttemptRecord {
        delivery: delivery.id,
        attempt: WebhookAttempt {
            attempt: delivery.attempt,
            at,
            http_status,
            error,
        },
        next,
    };
    if let Err(error) = state.store.record_webhook_attempt(&record).await {
        tracing::warn!(%error, delivery = %delivery.id, "cannot record a webhook delivery attempt");
    }
}

/// The wait after failed attempt number `attempt` (from 1), or `None` after the last.
fn retry_delay(attempt: u32) -> Option<chrono::Duration> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    RETRY_DELAYS_SECONDS
        .get(index)
        .map(|&seconds| chrono::Duration::seconds(seconds))
}

/// An error with its causes, which reqwest keeps apart ("error sending request" alone says
/// little about a refused connection or a bad certificate).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_give_up() {
        assert_eq!(retry_delay(1), Some(chrono::Duration::seconds(10)));
        assert_eq!(retry_delay(2), Some(chrono::Duration::minutes(1)));
        assert_eq!(retry_delay(5), Some(chrono::Duration::hours(2)));
        assert_eq!(retry_delay(6), None);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // As computed independently (Python's hmac module).
        assert_eq!(
            signature(
                "0123456789abcdef",
                1_700_000_000,
                r#"{"kind":"router_enrolled"}"#
            ),
            "sha256=1012f1d602f386cf49798d637598335e81b42c3edeec3ca439d13f417415fde4"
        );
    }
}
