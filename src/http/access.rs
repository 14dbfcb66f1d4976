//! Who may call the API: with tokens configured, `Authorization: Bearer <token>`, or HTTP Basic
//! authentication whose password is a token (what the airRohr firmware can send), with the
//! scope the endpoint needs (tokens compared by their SHA-256, in constant time); with none,
//! loopback clients only. Token values are never logged; a client is known by its token's
//! name, or by the Basic user name when one is given.
//!
//! Handlers ask for access by taking [`Reader`] or [`Writer`] as their first argument: the
//! check runs before any other extractor (no body read, no connection taken for a caller
//! without the right).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::prelude::{Engine, BASE64_STANDARD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{HttpSettings, Scope};
use crate::http::error::ApiError;
use crate::http::HttpState;

/// A caller allowed the scope `WRITE` names (`true`: write, `false`: read); `client` is its
/// name, the token's or the loopback address.
#[derive(Debug, Clone)]
pub struct Caller<const WRITE: bool> {
    /// The client's name as the ledger records it.
    pub client: String,
}

/// A caller with the `read` scope.
pub type Reader = Caller<false>;

/// A caller with the `write` scope.
pub type Writer = Caller<true>;

impl<const WRITE: bool> FromRequestParts<HttpState> for Caller<WRITE> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &HttpState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the client's address is unknown",
                )
            })?;
        let scope = if WRITE { Scope::Write } else { Scope::Read };
        let client = authorize(&state.settings.http, &parts.headers, peer, scope)?;
        Ok(Self { client })
    }
}

/// Checks a request's credentials for `scope`; returns the client's name (the token's, or the
/// loopback address).
///
/// # Errors
/// 401 when a token is required and missing or wrong, 403 when it lacks the scope or the
/// client may not call without a token.
fn authorize(
    settings: &HttpSettings,
    headers: &HeaderMap,
    peer: SocketAddr,
    scope: Scope,
) -> Result<String, ApiError> {
    if settings.tokens.is_empty() {
        if peer.ip().is_loopback() {
            return Ok(peer.ip().to_string());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no access token is configured, so only loopback clients may call; add one under \
             [[http.tokens]] in sensor-etl.toml",
        ));
    }
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(Credentials::parse)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "send `Authorization: Bearer <token>`, or Basic authentication with the token \
                 as password",
            )
        })?;
    let digest: [u8; 32] = Sha256::digest(credentials.token.as_bytes()).into();
    // Every token is compared, each in constant time: the answer's timing tells nothing.
    let mut found = None;
    for token in &settings.tokens {
        if bool::from(token.sha256.ct_eq(&digest)) {
            found = Some(token);
        }
    }
    let token = found.ok_or_else(|| ApiError::unauthorized("the token is not valid"))?;
    if !token.scopes.contains(&scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` lacks the `{}` scope",
                token.name,
                scope_name(scope)
            ),
        ));
    }
    Ok(credentials.user.unwrap_or_else(|| token.name.clone()))
}

/// What an `Authorization` header presents.
struct Credentials {
    /// The Basic user name, when given.
    user: Option<String>,
    token: String,
}

impl Credentials {
    fn parse(value: &str) -> Option<Self> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Self {
                user: None,
                token: rest.trim().to_owned(),
            });
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = BASE64_STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let user = user.trim();
        Some(Self {
            user: (!user.is_empty()).then(|| user.chars().take(64).collect()),
            token: password.to_owned(),
        })
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Write => "write",
        Scope::Read => "read",
    }
}
