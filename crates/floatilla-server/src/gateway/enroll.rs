//! `POST /device/v1/enroll`: a router trades an enrollment token for its own credential.

use axum::Json;
use axum::extract::State;
use floatilla_domain::enrollment::{
    EnrollmentRefusal, EnrollmentState, KnownSerial, decide_enrollment,
};
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::model::Credential;
use floatilla_domain::{CredentialId, DeviceId, TenantId, Timestamp};
use floatilla_protocol::{
    DeviceCredential, EnrollRequest, EnrollResponse, EnrollmentTokenString, MAX_FIELD_CHARS,
};
use floatilla_store::Enrollment;
use rand::Rng;

use crate::api::extract::ApiJson;
use crate::error::{Error, Result};
use crate::gateway::credentials;
use crate::metrics;
use crate::state::AppState;

pub async fn enroll(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>> {
    let outcome = enroll_router(&state, request).await;
    metrics::enrollment(match &outcome {
        Ok(_) => "enrolled",
        Err(error) => error.code(),
    });
    outcome.map(Json)
}

async fn enroll_router(state: &AppState, request: EnrollRequest) -> Result<EnrollResponse> {
    let serial = checked_field("serial", &request.serial, true)?;
    let model = checked_field("model", &request.model, false)?;
    let firmware = checked_field("firmware", &request.firmware, false)?;
    let agent_version = checked_field("agent_version", &request.agent_version, false)?;
    let token: EnrollmentTokenString = request
        .token
        .parse()
        .map_err(|_| Error::UnknownEnrollmentToken)?;
    let token = state
        .store
        .enrollment_token_by_hash(&token.secret_hash())
        .await?
        .ok_or(Error::UnknownEnrollmentToken)?;
    let now = state.clock.now();
    if let Some(refusal) = token.refusal(now) {
        return Err(Error::EnrollmentTokenRefused(refusal));
    }

    let tenant = state
        .store
        .tenant(token.tenant_id)
        .await?
        .ok_or(Error::UnknownEnrollmentToken)?;
    if tenant.suspended_at.is_some() {
        return Err(Error::TenantSuspended);
    }
    let existing = state
        .store
        .device_by_serial(token.tenant_id, serial)
        .await?;
    let known = match &existing {
        None => KnownSerial::Unknown,
        Some(device) => {
            let consented = device
                .reenroll_allowed_until
                .is_some_and(|until| now < until);
            let proven = match &request.credential {
                Some(credential) if !consented => {
                    holds_credential(state, device.id, credential).await?
                }
                _ => false,
            };
            KnownSerial::Known {
                state: device.enrollment,
                reenrollment_authorised: consented || proven,
            }
        }
    };
    let admitted = match decide_enrollment(tenant.enrollment_policy, known) {
        Ok(admitted) => admitted,
        Err(EnrollmentRefusal::AlreadyEnrolled) => {
            return Err(Error::SerialAlreadyEnrolled(serial.to_owned()));
        }
        Err(EnrollmentRefusal::Rejected) => return Err(Error::EnrollmentRejected),
        Err(EnrollmentRefusal::NotPreregistered) => {
            // At most one event a minute per tenant, so that a leaked token cannot flood the
            // event log; the metric counts every refusal.
            let message = format!(
                "a router with serial {serial} tried to enroll, but it is not pre-registered"
            );
            let event = Event::new(tenant.id, now, EventKind::EnrollmentRefused, None, message);
            crate::events::record_unless_recent(state, event, chrono::Duration::minutes(1)).await;
            return Err(Error::SerialNotPreregistered(serial.to_owned()));
        }
    };

    let secret: [u8; 32] = rand::rng().random();
    let credential = Credential {
        id: CredentialId::new(),
        device_id: existing.as_ref().map_or_else(DeviceId::new, |d| d.id),
        secret_hash: floatilla_protocol::secrets::secret_hash(&secret),
        created_at: now,
        expires_at: now + state.config.credential_lifetime,
        revoked_at: None,
    };
    let enrollment = Enrollment {
        token_id: token.id,
        tenant_id: token.tenant_id,
        now,
        existing_device: existing.as_ref().map(|d| d.id),
        new_device_id: credential.device_id,
        serial: serial.to_owned(),
        model: model.to_owned(),
        firmware: firmware.to_owned(),
        agent_version: agent_version.to_owned(),
        group_id: token.group_id,
        state: admitted,
        credential: credential.clone(),
        event: enrollment_event(
            token.tenant_id,
            credential.device_id,
            existing.as_ref().map_or(serial, |d| d.name.as_str()),
            serial,
            admitted,
            now,
        ),
    };
    let device = state
        .store
        .enroll(&enrollment)
        .await?
        .map_err(Error::EnrollmentTokenRefused)?;
    if existing.is_some() {
        // Its earlier credentials are revoked: a session still using one must end.
        crate::cluster::credentials_revoked(state, device.id).await;
    }
    tracing::info!(device = %device.id, serial = %device.serial, tenant = %device.tenant_id, state = %admitted, "router enrolled");
    Ok(EnrollResponse {
        device_id: device.id.to_string(),
        credential: DeviceCredential {
            id: credential.id.to_string(),
            secret,
        }
        .to_string(),
        credential_expires_at: credential.expires_at,
        ca_certificate: state.ca.certificate_pem().to_owned(),
        enrollment: admitted.as_str().to_owned(),
    })
}

/// The event an enrollment records, in the same transaction.
fn enrollment_event(
    tenant: TenantId,
    device: DeviceId,
    name: &str,
    serial: &str,
    admitted: EnrollmentState,
    now: Timestamp,
) -> Event {
    let (kind, message) = match admitted {
        EnrollmentState::Pending => (
            EventKind::EnrollmentRequested,
            format!("router {name} ({serial}) enrolled and waits for an admin to accept it"),
        ),
        _ => (
            EventKind::RouterEnrolled,
            format!("router {name} ({serial}) enrolled"),
        ),
    };
    Event::new(tenant, now, kind, Some(device), message)
}

/// Whether `presented` is a currently valid credential of `device`.
async fn holds_credential(state: &AppState, device: DeviceId, presented: &str) -> Result<bool> {
    match credentials::verify(state, presented).await {
        Ok(credential) => Ok(credential.device_id == device),
        Err(Error::Store(error)) => Err(error.into()),
        Err(_) => Ok(false),
    }
}

pub(crate) fn checked_field<'a>(
    name: &'static str,
    value: &'a str,
    required: bool,
) -> Result<&'a str> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(Error::invalid(
            "invalid_field",
            format!("{name} must not be empty"),
        ));
    }
    if value.chars().count() > MAX_FIELD_CHARS || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_field",
            format!("{name} must be at most {MAX_FIELD_CHARS} printable characters"),
        ));
    }
    Ok(value)
}
