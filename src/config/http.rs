//! `[http]`: the HTTP API's access configuration, tokens, each with a name and scopes, given as the
//! SHA-256 of the token or as the name of an environment variable holding the token itself;
//! and the request limits. Token values are never kept in plain text here nor printed: only
//! their SHA-256 is held.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ConfigError;

/// `[http]` as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Access tokens; none: loopback clients only.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    /// Largest request body, counted after decompression.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// How long a push waits for its commit before it goes to the push journal (202).
    #[serde(default = "default_db_wait_ms")]
    pub db_wait_ms: u64,
    /// The same in seconds, as earlier versions spelled it; `db_wait_ms` wins when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_wait_secs: Option<u64>,
    /// When a push is answered: `commit` (200 after the commit; the journal only while the
    /// database is away) or `journal` (202 after the journal sync, loaded in batches behind).
    #[serde(default)]
    pub acknowledge: Acknowledge,
    /// Largest size of the push journal on disk; past it, pushes get 503.
    #[serde(default = "default_journal_max_bytes")]
    pub journal_max_bytes: u64,
    /// The longest pause in a request body; after it, the body must arrive at 4 KiB/s on
    /// average, or the request ends with 408 (a slow client holds no room others need).
    #[serde(default = "default_body_idle_secs")]
    pub body_idle_secs: u64,
    /// Request bodies held at once, in bytes; past it, 503 with `Retry-After` (at least
    /// `max_body_bytes`).
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
    /// The share of `max_in_flight_bytes` one client address may hold, in percent (100: no
    /// limit of its own); past it, that client gets 503 while others are still served.
    #[serde(default = "default_client_share_percent")]
    pub client_share_percent: u8,
    /// How long a client may take to send a request's header, from its connection or its
    /// previous request; then the connection is closed.
    #[serde(default = "default_header_read_secs")]
    pub header_read_secs: u64,
    /// Read answers kept until the database changes, in bytes; 0 turns the cache off.
    #[serde(default = "default_answer_cache_bytes")]
    pub answer_cache_bytes: u64,
    /// How long a group commit of request bodies waits for more bodies while other groups are
    /// being written, in microseconds; 0 commits at once.
    #[serde(default = "default_group_wait_micros")]
    pub group_wait_micros: u64,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            db_wait_ms: default_db_wait_ms(),
            database_wait_secs: None,
            acknowledge: Acknowledge::default(),
            journal_max_bytes: default_journal_max_bytes(),
            body_idle_secs: default_body_idle_secs(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            client_share_percent: default_client_share_percent(),
            header_read_secs: default_header_read_secs(),
            answer_cache_bytes: default_answer_cache_bytes(),
            group_wait_micros: default_group_wait_micros(),
        }
    }
}

const fn default_max_body_bytes() -> u64 {
    64 * 1024 * 1024
}
const fn default_db_wait_ms() -> u64 {
    2_000
}
const fn default_body_idle_secs() -> u64 {
    10
}
/// `percent` of `bytes`, rounded down; 100 % is all of it.
fn share_of(bytes: u64, percent: u8) -> u64 {
    u64::try_from(u128::from(bytes) * u128::from(percent) / 100).unwrap_or(bytes)
}

const fn default_client_share_percent() -> u8 {
    25
}
const fn default_header_read_secs() -> u64 {
    10
}
const fn default_journal_max_bytes() -> u64 {
    1024 * 1024 * 1024
}

/// When a push is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acknowledge {
    /// 200 after the delivery's commit; 202 from the push journal while the database is away.
    #[default]
    Commit,
    /// 202 once the body is synced to the push journal; loaded in large batches behind it.
    Journal,
}
const fn default_max_in_flight_bytes() -> u64 {
    256 * 1024 * 1024
}
const fn default_answer_cache_bytes() -> u64 {
    32 * 1024 * 1024
}
const fn default_group_wait_micros() -> u64 {
    2_000
}

/// `[[http.tokens]]` as written: `sha256` or `env`, not both.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Who holds it (logged and recorded as the client of its deliveries).
    pub name: String,
    /// Hex SHA-256 of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Environment variable holding the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// `write` (push readings), `read` (query).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Push readings.
    Write,
    /// Read what was loaded.
    Read,
}

impl Scope {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "write" => Some(Scope::Write),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// A validated token: its holder, the SHA-256 of its value, its scopes.
#[derive(Clone, PartialEq)]
pub struct AccessToken {
    /// Who holds it.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// What it allows.
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// `[http]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Access tokens; empty: loopback clients only.
    pub tokens: Vec<AccessToken>,
    /// Largest request body, after decompression.
    pub max_body_bytes: u64,
    /// How long a push waits for its commit before it goes to the push journal.
    pub database_wait: std::time::Duration,
    /// When a push is answered.
    pub acknowledge: Acknowledge,
    /// Largest size of the push journal on disk.
    pub journal_max_bytes: u64,
    /// The longest pause in a request body (then 4 KiB/s on average).
    pub body_idle: std::time::Duration,
    /// Request bodies held at once, in bytes.
    pub max_in_flight_bytes: u64,
    /// Request bodies one client address may hold at once, in bytes.
    pub max_client_bytes: u64,
    /// How long a client may take to send a request's header.
    pub header_read: std::time::Duration,
    /// Read answers kept until the database changes, in bytes (0: none).
    pub answer_cache_bytes: u64,
    /// How long a group commit waits for more bodies while others are being written.
    pub group_wait: std::time::Duration,
}

impl HttpSettings {
    /// Validates `[http]`: each token has exactly one of `sha256` (64 hex digits) and `env`
    /// (set and not empty), and known scopes.
    ///
    /// # Errors
    /// A token is malformed, or its environment variable is missing.
    pub fn from_raw(raw: RawHttp) -> Result<Self, ConfigError> {
        let invalid = |name: &str, message: String| ConfigError::Value {
            key: "http.tokens",
            message: format!("token `{name}`: {message}"),
        };
        let mut tokens = Vec::with_capacity(raw.tokens.len());
        for token in raw.tokens {
            let sha256 = match (&token.sha256, &token.env) {
                (Some(hex_digest), None) => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
                        invalid(
                            &token.name,
                            "`sha256` must be 64 hexadecimal digits".to_owned(),
                        )
                    })?;
                    digest
                }
                (None, Some(variable)) => match std::env::var(variable) {
                    Ok(value) if !value.is_empty() => Sha256::digest(value.as_bytes()).into(),
                    _ => {
                        return Err(invalid(
                            &token.name,
                            format!("the environment variable `{variable}` is not set"),
                        ))
                    }
                },
                _ => {
                    return Err(invalid(
                        &token.name,
                        "give exactly one of `sha256` and `env`".to_owned(),
                    ))
                }
            };
            let scopes = token
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        invalid(&token.name, format!("unknown scope `{s}` (write, read)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tokens.push(AccessToken {
                name: token.name,
                sha256,
                scopes,
            });
        }
        if !(1..=100).contains(&raw.client_share_percent) {
            return Err(ConfigError::Value {
                key: "http.client_share_percent",
                message: format!(
                    "{} is not a share: give 1 to 100 (100: a client may take all the room)",
                    raw.client_share_percent
                ),
            });
        }
        Ok(Self {
            tokens,
            max_body_bytes: raw.max_body_bytes,
            database_wait: match raw.database_wait_secs {
                Some(secs) if raw.db_wait_ms == default_db_wait_ms() => {
                    std::time::Duration::from_secs(secs)
                }
                _ => std::time::Duration::from_millis(raw.db_wait_ms),
            },
            acknowledge: raw.acknowledge,
            journal_max_bytes: raw.journal_max_bytes,
            body_idle: std::time::Duration::from_secs(raw.body_idle_secs.max(1)),
            max_in_flight_bytes: raw.max_in_flight_bytes.max(raw.max_body_bytes),
            max_client_bytes: share_of(
                raw.max_in_flight_bytes.max(raw.max_body_bytes),
                raw.client_share_percent,
            ),
            header_read: std::time::Duration::from_secs(raw.header_read_secs.max(1)),
            answer_cache_bytes: raw.answer_cache_bytes,
            group_wait: std::time::Duration::from_micros(raw.group_wait_micros),
        })
    }
}
