//! Store stage: the PostgreSQL side of the pipeline.
//!
//! `Store::connect` builds a connection pool with explicit timeouts, checks the database once,
//! applies the embedded migrations (under an advisory lock, so concurrent workers do not race)
//! and syncs the measurement dictionary from the sensor-type configuration. The per-file
//! writes (`copy`, `ledger`) all run inside one transaction owned by the caller: dropping it
//! without commit rolls everything back. Only `dictionary` entries (measurement sets and
//! positions the readings point to) commit on their own, before any row uses them. `StoreError::is_transient` separates outages (retried
//! with backoff) from data errors (the file is quarantined, never retried).

pub mod claims;
pub mod copy;
pub mod dictionary;
pub mod encode;
pub mod export;
pub mod known;
pub mod ledger;
pub mod once;
pub mod query;
pub mod receipts;
pub mod rollup;
pub mod state;
pub mod status;
pub mod summarize;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::config::Settings;
use dictionary::Dictionaries;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key held while migrations run.
const MIGRATION_LOCK_KEY: i64 = 0x5345_4E53_4554_4C31;

/// Database failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection string does not parse.
    #[error("invalid database URL")]
    Url(#[source] tokio_postgres::Error),
    /// A statement or the connection failed.
    #[error("PostgreSQL error")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("no database connection available")]
    Pool(#[from] PoolError),
    /// The pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    PoolBuild(String),
    /// A migration failed.
    #[error("database migration failed")]
    Migration(#[from] refinery::Error),
    /// A dictionary lookup came back incomplete.
    #[error("dictionary registration failed: {0}")]
    Dictionary(String),
    /// Ledger ids came back fewer than asked for.
    #[error("allocating ledger ids failed: {0}")]
    Allocation(String),
    /// A block of a tailed file was loaded already (by another worker, or an earlier attempt).
    #[error("tail position moved: {0}")]
    TailMoved(String),
    /// A normalized frame lacks a column or has another type (a bug of the transform stage).
    #[error("normalized readings are not in the expected shape")]
    Frame(#[from] polars::error::PolarsError),
}

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// An outage or a conflict: wait and try again.
    Transient,
    /// A data or programming error: retrying cannot help.
    Permanent,
}

impl StoreError {
    /// The retry directive for this error.
    pub fn retry_directive(&self) -> Retry {
        let transient = match self {
            StoreError::Postgres(error) => postgres_is_transient(error),
            StoreError::Pool(PoolError::Timeout(_)) => true,
            StoreError::Pool(PoolError::Backend(error)) => postgres_is_transient(error),
            _ => false,
        };
        if transient {
            Retry::Transient
        } else {
            Retry::Permanent
        }
    }

    /// Shorthand for `retry_directive() == Retry::Transient`.
    pub fn is_transient(&self) -> bool {
        self.retry_directive() == Retry::Transient
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Postgres(error) | StoreError::Pool(PoolError::Backend(error)) => {
                error.code().map(SqlState::code)
            }
            _ => None,
        }
    }
}

/// Transient: the connection is gone or was never made, or the server says so (classes 08
/// connection, 53 resources, 57P admin shutdown / cannot connect now, 40001 serialization,
/// 40P01 deadlock; a whole-file transaction is idempotent through the ledger).
/// µs since the epoch as a timestamp (the epoch itself for one out of range).
pub(crate) fn time_of_micros(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

/// A `timestamptz` read as µs since the Unix epoch, without a calendar conversion (lookups
/// read millions of them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Micros(pub i64);

/// µs from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl<'a> tokio_postgres::types::FromSql<'a> for Micros {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into()?;
        Ok(Micros(i64::from_be_bytes(bytes) + POSTGRES_EPOCH_MICROS))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::TIMESTAMPTZ
    }
}

fn postgres_is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }
        // No SQLSTATE: an I/O failure talking to the server (refused, reset, timed out).
        None => error.as_db_error().is_none(),
    }
}

/// Connections for dictionary registrations (short, committed at once).
const DICTIONARY_CONNECTIONS: usize = 2;

/// The connection pool plus what the writers need to know about the schema.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Connections of their own for registering dictionary entries while a delivery's
    /// transaction holds a connection of `pool`: however many transactions are open at once,
    /// a registration never waits for one of them to end (it would wait forever when every
    /// connection is held by a transaction waiting on a registration).
    dictionary_pool: Pool,
    /// Database id of each catalogue entry, indexed by `MeasurementSpec::key`.
    measurement_ids: Arc<Vec<i16>>,
    /// Measurement sets and positions the readings point into.
    dictionaries: Dictionaries,
    /// Summarizes the index ranges of new readings in the background.
    summarizer: summarize::RangeSummarizer,
    /// Sensors and locations seen committed, not entered again.
    known: Arc<known::Known>,
}

impl Store {
    /// Connects, checks the database, migrates and syncs the measurement dictionary.
    ///
    /// # Errors
    /// A bad URL, an unreachable database (transient) or a failed migration.
    pub async fn connect(url: &str, settings: &Settings) -> Result<Self, StoreError> {
        Self::from_pool(build_pool(url, 8)?, url, settings).await
    }

    /// Like `connect`, on an existing pool of connections to `url`.
    ///
    /// # Errors
    /// A bad URL, an unreachable database (transient) or a failed migration.
    pub async fn from_pool(pool: Pool, url: &str, settings: &Settings) -> Result<Self, StoreError> {
        migrate(&pool).await?;
        let measurement_ids = sync_measurements(&pool, settings).await?;
        let dictionaries = Dictionaries::load(&pool).await?;
        Ok(Self {
            summarizer: summarize::RangeSummarizer::start(pool.clone()),
            pool,
            dictionary_pool: build_pool(url, DICTIONARY_CONNECTIONS)?,
            measurement_ids: Arc::new(measurement_ids),
            dictionaries,
            known: Arc::default(),
        })
    }

    /// Sensors and locations this process has seen committed.
    pub fn known(&self) -> &Arc<known::Known> {
        &self.known
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A transaction copied readings (committed or not yet): their index ranges are
    /// summarized soon, in the background (see `summarize`).
    pub fn readings_copied(&self) {
        self.summarizer.readings_copied();
    }

    /// Summarizes the index ranges of every reading committed so far, now.
    ///
    /// # Errors
    /// The database failed, or the index stayed locked by another summarizer.
    pub async fn summarize_readings_index(&self) -> Result<i64, StoreError> {
        let mut client = self.pool.get().await?;
        summarize::summarize_new_ranges(&mut client).await
    }

    /// The pool for dictionary registrations (see `Store::dictionary_pool`).
    pub fn dictionary_pool(&self) -> &Pool {
        &self.dictionary_pool
    }

    /// Database id of a catalogue key.
    pub fn measurement_id(&self, key: u32) -> i16 {
        self.measurement_ids[key as usize]
    }

    /// The measurement-set and position dictionaries.
    pub fn dictionaries(&self) -> &Dictionaries {
        &self.dictionaries
    }
}

/// The search path of sensor-etl's connections: its tables first, then the public views.
pub const SEARCH_PATH_OPTION: &str = "-c search_path=sensor_etl,public";

/// Builds a pool with explicit timeouts.
///
/// # Errors
/// The URL does not parse.
pub fn build_pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    pool_waiting(url, max_size, Duration::from_secs(10))
}

/// A pool whose callers wait at most `wait` for a free connection.
fn pool_waiting(url: &str, max_size: usize, wait: Duration) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(StoreError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("sensor-etl");
    // The tables live in the schema `sensor_etl`, the public views in `public`.
    let options = match config.get_options() {
        Some(given) => format!("{given} {SEARCH_PATH_OPTION}"),
        None => SEARCH_PATH_OPTION.to_owned(),
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::PoolBuild(e.to_string()))
}

/// Connections of the read API's pool.
const READ_CONNECTIONS: usize = 8;

/// The read API's own pool: [`READ_CONNECTIONS`] connections, and a request waits at most
/// 2 s for one of them (then it is told to come back: back-pressure, not an outage).
///
/// # Errors
/// The URL does not parse, or the pool cannot be built.
pub fn build_read_pool(url: &str) -> Result<Pool, StoreError> {
    pool_waiting(url, READ_CONNECTIONS, Duration::from_secs(2))
}

/// A read-only REPEATABLE READ transaction: every statement in it sees one snapshot, taken by
/// its first statement.
///
/// # Errors
/// The transaction could not be started.
pub async fn snapshot_transaction(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Applies the migrations carried in the binary.
///
/// # Errors
/// No connection, or a migration failed.
pub async fn migrate(pool: &Pool) -> Result<refinery::Report, StoreError> {
    run_migrations(pool, refinery::Target::Latest).await
}

/// Applies the migrations carried in the binary up to `version` only: a staged upgrade, as
/// the tests use to load data into an older schema and check that a later migration keeps it.
///
/// # Errors
/// No connection, or a migration failed.
pub async fn migrate_to(pool: &Pool, version: i32) -> Result<refinery::Report, StoreError> {
    run_migrations(pool, refinery::Target::Version(version)).await
}

async fn run_migrations(
    pool: &Pool,
    target: refinery::Target,
) -> Result<refinery::Report, StoreError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let client_ref: &mut tokio_postgres::Client = &mut client;
    let report = embedded::migrations::runner()
        .set_target(target)
        .run_async(client_ref)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    Ok(report?)
}

/// Whether every migration carried in the binary is applied (readiness).
///
/// # Errors
/// No connection.
pub async fn migrations_applied(pool: &Pool) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let latest = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0);
    let applied = client
        .query_opt(
            "SELECT max(version)::int8 FROM refinery_schema_history",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.get::<_, Option<i64>>(0))
        .unwrap_or(0);
    Ok(applied >= latest)
}

async fn sync_measurements(pool: &Pool, settings: &Settings) -> Result<Vec<i16>, StoreError> {
    let client = pool.get().await?;
    let types: Vec<&str> = settings
        .catalogue
        .iter()
        .map(|m| m.sensor_type.as_str())
        .collect();
    let names: Vec<&str> = settings.catalogue.iter().map(|m| m.name.as_str()).collect();
    let units: Vec<&str> = settings.catalogue.iter().map(|m| m.unit.as_str()).collect();
    client
        .execute(
            "INSERT INTO measurements (sensor_type, name, unit) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (sensor_type, name, unit) DO NOTHING",
            &[&types, &names, &units],
        )
        .await?;
    let rows = client
        .query(
            "SELECT m.measurement_id, c.ord::int4 FROM unnest($1::text[], $2::text[], $3::text[]) \
             WITH ORDINALITY AS c(sensor_type, name, unit, ord) \
             JOIN measurements m USING (sensor_type, name, unit)",
            &[&types, &names, &units],
        )
        .await?;
    let mut ids = vec![0i16; settings.catalogue.len()];
    for row in rows {
        let ordinal: i32 = row.get(1);
        ids[(ordinal - 1) as usize] = row.get(0);
    }
    Ok(ids)
}
