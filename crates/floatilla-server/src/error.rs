//! The server's one error type. Every failure has a stable snake_case code; this module is the
//! single place that maps errors to HTTP statuses and to protocol error frames.

use axum::Json;
use axum::response::{IntoResponse, Response};
use floatilla_domain::Role;
use floatilla_domain::licensing::PoolError;
use floatilla_domain::model::TokenRefusal;
use floatilla_protocol::ErrorBody;
use floatilla_store::StoreError;
use http::StatusCode;

use crate::api::views::RouterRef;
use crate::licensing::PoolFailure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a valid API token is required (Authorization: Bearer ...)")]
    Unauthenticated,
    #[error("this needs the {0} role")]
    Forbidden(Role),
    #[error("the provider suspended this tenant")]
    TenantSuspended,
    /// Too many attempts: the answer says when to try again.
    #[error("too many attempts; try again in {retry_after_secs} seconds")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0} not found")]
    NotFound(&'static str),
    /// This server does not do that, whoever asks.
    #[error("{message}")]
    NotAllowed {
        code: &'static str,
        message: &'static str,
    },
    /// The request is well formed but its content is not acceptable.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    /// The request conflicts with the current state of something (a router is offline...).
    #[error("{message}")]
    InvalidState { code: &'static str, message: String },
    #[error("the router did not answer in time")]
    CallTimeout,
    #[error("the enrollment token is not valid")]
    UnknownEnrollmentToken,
    #[error("the enrollment token {}", match .0 {
        TokenRefusal::Revoked => "was revoked",
        TokenRefusal::Expired => "has expired",
        TokenRefusal::UsedUp => "has been used up",
    })]
    EnrollmentTokenRefused(TokenRefusal),
    #[error(
        "a router with serial {0} is already enrolled: re-enroll with its credential, or have an admin allow re-enrollment"
    )]
    SerialAlreadyEnrolled(String),
    #[error("serial {0} is not pre-registered: this tenant admits only imported serials")]
    SerialNotPreregistered(String),
    #[error("an admin rejected this router")]
    EnrollmentRejected,
    #[error("this router waits for an admin to accept it")]
    EnrollmentPending,
    #[error(
        "this credential is already in use by a router at another address: the router image appears to be cloned"
    )]
    CredentialInUse,
    #[error("the router credential is not valid")]
    InvalidCredential,
    #[error("the router credential has expired")]
    CredentialExpired,
    #[error("the router credential was revoked")]
    CredentialRevoked,
    #[error("protocol version {0} is not supported (this server speaks 1)")]
    UnsupportedProtocolVersion(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pool(#[from] PoolFailure),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A change of licenses would leave fewer seats than routers licensed now.
    #[error(
        "the capacity would fall from {from} to {to} seats: {} licensed routers would become excess; repeat with ?acknowledge_downgrade=true to proceed", routers.len()
    )]
    DowngradeRequiresAcknowledgement {
        from: String,
        to: String,
        routers: Vec<RouterRef>,
    },
    /// A job names routers that may not receive it now.
    #[error(
        "{} of the routers named are excess or unmanaged and receive no management tasks: renew or add licenses, or unmanage other routers to free seats, then create the job again (or leave these routers out)", routers.len()
    )]
    DeviceNotLicensed { routers: Vec<RouterRef> },
    #[error("an artifact holds at most {limit} bytes")]
    ArtifactTooLarge { limit: u64 },
    /// A download's `Range` asks for bytes the file does not have.
    #[error("the range asks for bytes this file of {size} bytes does not have")]
    RangeNotSatisfiable { size: u64 },
    /// As many downloads as this node serves at once are under way.
    #[error(
        "this server is serving as many downloads as it may; try again in {retry_after_secs} seconds"
    )]
    TooManyDownloads { retry_after_secs: u64 },
    /// Something on this server failed that the client cannot mend.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The error code of a failed answer, for those who record answers (the audit log).
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_state(code: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidState {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::TenantSuspended => "tenant_suspended",
            Error::RateLimited { .. } => "rate_limited",
            Error::NotFound(_) => "not_found",
            Error::NotAllowed { code, .. } => code,
            Error::Invalid { code, .. } => code,
            Error::Conflict(_) => "conflict",
            Error::InvalidState { code, .. } => code,
            Error::CallTimeout => "call_timeout",
            Error::UnknownEnrollmentToken => "invalid_enrollment_token",
            Error::EnrollmentTokenRefused(TokenRefusal::Revoked) => "enrollment_token_revoked",
            Error::EnrollmentTokenRefused(TokenRefusal::Expired) => "enrollment_token_expired",
            Error::EnrollmentTokenRefused(TokenRefusal::UsedUp) => "enrollment_token_used_up",
            Error::SerialAlreadyEnrolled(_) => "serial_already_enrolled",
            Error::SerialNotPreregistered(_) => "serial_not_preregistered",
            Error::EnrollmentRejected => "enrollment_rejected",
            Error::EnrollmentPending => "enrollment_pending",
            Error::CredentialInUse => "credential_in_use",
            Error::InvalidCredential => "invalid_credential",
            Error::CredentialExpired => "credential_expired",
            Error::CredentialRevoked => "credential_revoked",
            Error::UnsupportedProtocolVersion(_) => "unsupported_protocol_version",
            Error::Store(StoreError::NotFound(_)) => "not_found",
            Error::Store(StoreError::Conflict(_)) => "conflict",
            Error::Store(_) => "internal_error",
            Error::Pool(PoolFailure::Refused(PoolError::PinsExceedCapacity { .. })) => {
                "pins_exceed_capacity"
            }
            Error::Pool(PoolFailure::Refused(PoolError::UnknownRouter)) => "not_found",
            Error::Pool(PoolFailure::Store(_)) => "internal_error",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::DowngradeRequiresAcknowledgement { .. } => "downgrade_requires_acknowledgement",
            Error::DeviceNotLicensed { .. } => "device_not_licensed",
            Error::ArtifactTooLarge { .. } => "artifact_too_large",
            Error::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Error::TooManyDownloads { .. } => "too_many_downloads",
            Error::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated
            | Error::UnknownEnrollmentToken
            | Error::InvalidCredential
            | Error::CredentialExpired
            | Error::CredentialRevoked => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_)
            | Error::TenantSuspended
            | Error::NotAllowed { .. }
            | Error::EnrollmentTokenRefused(_)
            | Error::SerialNotPreregistered(_)
            | Error::EnrollmentRejected
            | Error::EnrollmentPending => StatusCode::FORBIDDEN,
            Error::NotFound(_)
            | Error::Store(StoreError::NotFound(_))
            | Error::Pool(PoolFailure::Refused(PoolError::UnknownRouter)) => StatusCode::NOT_FOUND,
            Error::Invalid { .. } | Error::UnsupportedProtocolVersion(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_)
            | Error::InvalidState { .. }
            | Error::SerialAlreadyEnrolled(_)
            | Error::CredentialInUse
            | Error::Store(StoreError::Conflict(_))
            | Error::DowngradeRequiresAcknowledgement { .. }
            | Error::DeviceNotLicensed { .. }
            | Error::Pool(PoolFailure::Refused(PoolError::PinsExceedCapacity { .. })) => {
                StatusCode::CONFLICT
            }
            Error::CallTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::ArtifactTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::TooManyDownloads { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store(_) | Error::Pool(PoolFailure::Store(_)) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// What the client is told. Internal failures are logged in full but described vaguely.
    pub fn body(&self) -> ErrorBody {
        let message = if self.status().is_server_error() {
            "internal error; the server log has the details".to_owned()
        } else {
            self.to_string()
        };
        ErrorBody {
            code: self.code().to_owned(),
            message,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = ErrorCode(self.code());
        let mut response = self.response();
        response.extensions_mut().insert(code);
        response
    }
}

impl Error {
    fn response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        if let Error::DowngradeRequiresAcknowledgement { routers, .. }
        | Error::DeviceNotLicensed { routers } = &self
        {
            let body = self.body();
            let answer = serde_json::json!({
                "code": body.code,
                "message": body.message,
                "routers": routers,
            });
            return (self.status(), Json(answer)).into_response();
        }
        if let Error::RangeNotSatisfiable { size } = &self {
            return (
                self.status(),
                [(http::header::CONTENT_RANGE, format!("bytes */{size}"))],
                Json(self.body()),
            )
                .into_response();
        }
        if let Error::RateLimited { retry_after_secs }
        | Error::TooManyDownloads { retry_after_secs } = &self
        {
            let body = self.body();
            let answer = serde_json::json!({
                "code": body.code,
                "message": body.message,
                "retry_after_secs": retry_after_secs,
            });
            return (
                self.status(),
                [(http::header::RETRY_AFTER, retry_after_secs.to_string())],
                Json(answer),
            )
                .into_response();
        }
        (self.status(), Json(self.body())).into_response()
    }
}

/// A name as given (tenant, group, router, token), trimmed: 1 to `max_chars` printable characters,
/// else `invalid_name`.
pub fn checked_name(what: &str, name: &str, max_chars: usize) -> Result<String> {
    let name = name.trim();
    let length = name.chars().count();
    if length == 0 || length > max_chars || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_name",
            format!("a {what} name has 1 to {max_chars} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

/// A count or duration as given, if it is 1 to `max` (`invalid_field` otherwise).
pub fn checked_range(value: u32, max: u32, field: &str) -> Result<u32> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "invalid_field",
            format!("{field} must be 1 to {max}, not {value}"),
        ))
    }
}

/// A JSON error answer for failures found before a handler runs (bad JSON, bad query).
pub fn rejection(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.to_owned(),
            message,
        }),
    )
        .into_response()
}
