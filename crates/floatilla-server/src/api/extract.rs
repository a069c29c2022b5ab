//! Request extractors whose failures answer in the API's error format.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::rejection;

/// The most items one page of a listing holds.
pub const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

/// A listing's page size as requested: 1 to [`MAX_PAGE`], 100 when not given.
pub fn page_limit(requested: Option<u32>) -> crate::error::Result<u32> {
    let limit = requested.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(crate::error::Error::invalid(
            "invalid_limit",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// A listing's cursor as given (`before` or `after`): an id of what is listed, else
/// `invalid_cursor` with `message`.
pub fn cursor<T: std::str::FromStr>(
    given: Option<&str>,
    message: &'static str,
) -> crate::error::Result<Option<T>> {
    given
        .map(|id| {
            id.parse()
                .map_err(|_| crate::error::Error::invalid("invalid_cursor", message))
        })
        .transpose()
}

/// The cursor of the page after `page`: the id of its last item when the page is full.
pub fn next_cursor<T>(page: &[T], limit: u32, id: impl Fn(&T) -> String) -> Option<String> {
    if page.len() == limit as usize {
        page.last().map(id)
    } else {
        None
    }
}

/// A JSON body; a bad one is answered `400 invalid_json` (`413 body_too_large` when too big).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(rejection(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    e.body_text(),
                ))
            }
            Err(e) => Err(rejection(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                e.body_text(),
            )),
        }
    }
}

/// Query parameters; bad ones are answered `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e: QueryRejection| {
                rejection(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
            })
    }
}
