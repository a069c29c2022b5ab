//! E-mail through an SMTP relay, when one is configured: notices of capacity drops go to the
//! tenant's contact address. Webhooks are the durable channel; a mail that every attempt fails
//! to hand to the relay is logged and left.

use std::sync::Arc;
use std::time::Duration;

use floatilla_domain::TenantId;
use floatilla_store::Store;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::SmtpSettings;

/// Waits between attempts to hand a mail to the relay.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
];
/// How long one attempt may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why e-mail cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error("the SMTP URL is not usable: {0}")]
    Url(String),
    #[error("the sender {0:?} is not an e-mail address")]
    From(String),
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from).finish()
    }
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailSetupError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.url)
            .map_err(|e| MailSetupError::Url(e.to_string()))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = settings
            .from
            .parse()
            .map_err(|_| MailSetupError::From(settings.from.clone()))?;
        Ok(Self { transport, from })
    }

    /// Sends a plain-text mail, retrying a few times over about a minute when the relay
    /// refuses or cannot be reached.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body.to_owned())
            .map_err(|e| e.to_string())?;
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match self.transport.send(message.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) => match delays.next() {
                    Some(delay) => {
                        tracing::info!(%error, retry_in = ?delay, "the SMTP relay did not take a mail");
                        tokio::time::sleep(*delay).await;
                    }
                    None => return Err(error.to_string()),
                },
            }
        }
    }
}

/// E-mails `subject` and `body` to the tenant's contact address, if it has one, on a task of
/// its own: a slow relay holds up nothing.
pub fn tell_tenant(
    mailer: &Arc<Mailer>,
    store: &Arc<dyn Store>,
    tenant: TenantId,
    subject: String,
    body: String,
) {
    let mailer = mailer.clone();
    let store = store.clone();
    tokio::spawn(async move {
        let address = match store.tenant(tenant).await {
            Ok(Some(tenant)) => tenant.contact_email,
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, %tenant, "cannot read the tenant's contact address");
                None
            }
        };
        let Some(address) = address else { return };
        match mailer.send(&address, &subject, &body).await {
            Ok(()) => tracing::info!(%tenant, %address, %subject, "mail sent"),
            Err(error) => tracing::error!(%error, %tenant, %address, %subject, "cannot send mail"),
        }
    });
}
