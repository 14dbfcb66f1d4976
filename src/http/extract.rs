//! What a request brings, each taken by an extractor that answers with an [`ApiError`] of its
//! own when the request is wrong: the query string ([`Params`]), a database connection
//! ([`Db`]), the body's format ([`BodyFormat`], from `Content-Type`), the `Idempotency-Key`
//! ([`IdempotencyKey`]) and the in-flight reservation a body needs before it is read
//! ([`InFlight`]). Access is checked first, by [`crate::http::access`]'s extractors; a handler
//! lists these after it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use crate::http::body::BodyFormat;
use crate::http::error::{ApiError, RETRY_AFTER_SECS};
use crate::http::shares::ClientHold;
use crate::http::spool::MEMORY_BYTES;
use crate::http::HttpState;
use crate::telemetry::InFlightBytes;

/// The query string read as `T`; 400 `invalid_query` when it cannot be.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<HttpState> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let Query(params) =
            Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("the query string cannot be read: {}", rejection.body_text()),
                    )
                })?;
        Ok(Self(params))
    }
}

/// A pooled database connection; 503 while the database is away, or every connection busy.
pub struct Db(pub deadpool_postgres::Object);

impl FromRequestParts<HttpState> for Db {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let client = state
            .pool
            .get()
            .await
            .map_err(|error| ApiError::from_store(&error.into()))?;
        Ok(Self(client))
    }
}

impl FromRequestParts<HttpState> for BodyFormat {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &HttpState) -> Result<Self, ApiError> {
        BodyFormat::of(
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok()),
        )
    }
}

/// Longest `Idempotency-Key` taken.
const MAX_KEY_CHARS: usize = 200;

/// The `Idempotency-Key` header, if given; 400 when it is empty or too long.
#[derive(Debug)]
pub struct IdempotencyKey(pub Option<String>);

impl FromRequestParts<HttpState> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &HttpState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = value.to_str().map(str::trim).unwrap_or_default();
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
            ));
        }
        Ok(Self(Some(key.to_owned())))
    }
}

/// The memory a body may take, reserved before it is read (back-pressure): its declared
/// length up to what is kept in memory, from the server's in-flight bound and from the
/// client's share of it, for as long as this lives. 503 with `Retry-After` when either is
/// reached.
pub struct InFlight {
    _permits: OwnedSemaphorePermit,
    _share: ClientHold,
    _gauge: InFlightBytes,
}

impl FromRequestParts<HttpState> for InFlight {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        let bytes = declared.map_or(MEMORY_BYTES as u64, |n| n.min(MEMORY_BYTES as u64));
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        let share = peer
            .and_then(|ip| state.client_shares.reserve(ip, bytes))
            .ok_or_else(|| {
                ApiError::unavailable(
                    "too_busy",
                    "this client address holds its share of the request bytes being \
                     processed; nothing was stored (finish or end the requests under way)",
                    RETRY_AFTER_SECS,
                )
            })?;
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let permits = Arc::clone(&state.in_flight)
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                ApiError::unavailable(
                    "too_busy",
                    "too many request bytes are being processed; nothing was stored",
                    RETRY_AFTER_SECS,
                )
            })?;
        Ok(Self {
            _permits: permits,
            _share: share,
            _gauge: InFlightBytes::hold(bytes),
        })
    }
}
