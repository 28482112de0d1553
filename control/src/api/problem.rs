//! Errors as `application/problem+json` (RFC 9457), one stable `type` per
//! kind of error, and a JSON body extractor whose rejections use it too.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of error, `urn:tidecast:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
}

macro_rules! kinds {
    ($($fn:ident => $status:ident, $kind:literal, $title:literal;)*) => {
        impl ApiError {
            $(
                #[doc = concat!("`", $kind, "`: ", $title, ".")]
                pub fn $fn(detail: impl Into<String>) -> ApiError {
                    ApiError { status: StatusCode::$status, kind: $kind, title: $title, detail: detail.into() }
                }
            )*
        }
    };
}

kinds! {
    bad_request => BAD_REQUEST, "bad-request", "The request is malformed or invalid";
    unauthorized => UNAUTHORIZED, "unauthorized", "Missing or unknown API key";
    forbidden => FORBIDDEN, "forbidden", "The key may not do this";
    not_found => NOT_FOUND, "not-found", "No such resource";
    conflict => CONFLICT, "conflict", "The resource already exists or is in use";
    refused => CONFLICT, "refused-by-trigger", "A trigger handler refused the change";
    too_many => TOO_MANY_REQUESTS, "rate-limited", "Too many failed attempts";
    unavailable => SERVICE_UNAVAILABLE, "store-unavailable", "The state store is unavailable";
    internal => INTERNAL_SERVER_ERROR, "internal", "Internal error";
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error in the admin API");
        ApiError::unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("urn:tidecast:problem:{}", self.kind),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let mut r = (self.status, serde_json::to_string(&body).unwrap_or_default()).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // The limiter's window: an upper bound on the wait.
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(crate::plane::AUTH_WINDOW.as_secs()));
        }
        r
    }
}

/// A JSON request body; a bad one is a `bad-request` problem.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::bad_request(rejection_text(&e))),
        }
    }
}

fn rejection_text(e: &JsonRejection) -> String {
    e.body_text()
}

/// Query parameters; bad ones are a `bad-request` problem.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// Path parameters; bad ones are a `bad-request` problem.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}
