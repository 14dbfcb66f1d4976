//! Errors of the HTTP API: a status code and `{"error": {"code", "message"}}` (plus
//! `parameter` when one query parameter is at fault), with `Retry-After` on 503. A client
//! retries only on 429 and 5xx.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::validate::rejection::RejectionCode;

/// Seconds a client is told to wait when the service cannot take its request now.
pub const RETRY_AFTER_SECS: u64 = 5;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
    www_authenticate: bool,
    parameter: Option<&'static str>,
    rejection: Option<RejectionCode>,
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_parameter`, `not_found`, `unauthorized`.
    pub code: String,
    /// For people: what happened and what to do.
    pub message: String,
    /// The query parameter at fault, for `invalid_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ApiError {
    /// An error with its status, stable code and a sentence.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            www_authenticate: false,
            parameter: None,
            rejection: None,
        }
    }

    /// A body refused for its content, as a delivery rejected as a whole is: 422 when it holds
    /// nothing loadable, else 400 (see [`RejectionCode::nothing_loadable`]).
    pub fn refused(code: RejectionCode, message: impl Into<String>) -> Self {
        let status = if code.nothing_loadable() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            rejection: Some(code),
            ..Self::new(status, code.as_str(), message)
        }
    }

    /// The rejection code of a body refused for its content ([`ApiError::refused`]).
    pub fn rejection(&self) -> Option<RejectionCode> {
        self.rejection
    }

    /// 400: query parameter `name` is missing or wrong; `message` says how to write it.
    pub fn bad_parameter(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            parameter: Some(name),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
        }
    }

    /// 404: `what` does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The answer when the store failed a read: 503 for an outage (the client may retry),
    /// 500 otherwise (logged with its cause; the answer gives no internals).
    pub fn from_store(error: &crate::store::StoreError) -> Self {
        use deadpool_postgres::{PoolError, TimeoutType};
        // Every connection busy answering others: back-pressure, not an outage.
        if matches!(
            error,
            crate::store::StoreError::Pool(PoolError::Timeout(TimeoutType::Wait))
        ) {
            return Self::unavailable(
                "too_busy",
                "every database connection for reads is busy answering other requests; try \
                 again shortly",
                1,
            );
        }
        if error.is_transient() {
            return Self::unavailable(
                "database_unavailable",
                "the database is unavailable; try again shortly",
                5,
            );
        }
        tracing::error!(message = "A read failed.", error = %crate::telemetry::chain(error));
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the read failed; the server log says why",
        )
    }

    /// 503: try again after `seconds`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, seconds: u64) -> Self {
        Self {
            retry_after_secs: Some(seconds.max(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 401: a token is required and missing or wrong.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The sentence for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What went wrong, as an answer's body carries it.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_owned(),
            message: self.message.clone(),
            parameter: self.parameter.map(str::to_owned),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::from_store(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sensor-etl\", Basic realm=\"sensor-etl\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_connections_are_back_pressure_and_an_outage_is_an_outage() {
        use deadpool_postgres::{PoolError, TimeoutType};
        let busy = ApiError::from_store(&crate::store::StoreError::Pool(PoolError::Timeout(
            TimeoutType::Wait,
        )));
        assert_eq!(
            (busy.status(), busy.code),
            (StatusCode::SERVICE_UNAVAILABLE, "too_busy")
        );
        let down = ApiError::from_store(&crate::store::StoreError::Pool(PoolError::Timeout(
            TimeoutType::Create,
        )));
        assert_eq!(down.code, "database_unavailable");
    }
}
