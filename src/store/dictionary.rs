//! Dictionaries the readings table points into: measurement sets (the ids of a line's
//! values, in order) and positions (location id, latitude, longitude).
//!
//! Part of the store stage. Each reading row carries two small integer ids instead of an id
//! array and three position columns, which keeps the rows narrow. The writer resolves a
//! chunk's distinct sets and positions in one batch before its COPY: ids already known come
//! from the in-process cache, the rest are registered on a connection of their own and
//! committed at once (dictionary entries are valid whatever becomes of the file that first
//! used them), so a file's transaction never waits on another's. Concurrent registrations of
//! one entry agree through its unique index; entries are never deleted.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Pool;

use crate::store::StoreError;

/// Where a line was measured. Coordinates are compared by their bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Location id.
    pub location_id: Option<i64>,
    lat_bits: Option<u64>,
    lon_bits: Option<u64>,
}

impl Position {
    /// A position from its parts; `-0.0` counts as `0.0`.
    pub fn new(location_id: Option<i64>, lat: Option<f64>, lon: Option<f64>) -> Self {
        let bits = |value: Option<f64>| value.map(|v| (v + 0.0).to_bits());
        Self {
            location_id,
            lat_bits: bits(lat),
            lon_bits: bits(lon),
        }
    }

    /// Latitude.
    pub fn lat(&self) -> Option<f64> {
        self.lat_bits.map(f64::from_bits)
    }

    /// Longitude.
    pub fn lon(&self) -> Option<f64> {
        self.lon_bits.map(f64::from_bits)
    }
}

/// Most entries a cache holds.
const MAX_CACHED: usize = 100_000;

/// The in-process caches of both dictionaries.
#[derive(Clone, Default)]
pub struct Dictionaries {
    sets: Arc<Mutex<HashMap<Vec<i16>, i32>>>,
    positions: Arc<Mutex<HashMap<Position, i32>>>,
}

/// Upserts missing measurement sets (as `smallint[]` literals) and returns every input's id.
const REGISTER_SETS: &str = "INSERT INTO measurement_sets (measurement_ids) \
     SELECT literal::smallint[] FROM unnest($1::text[]) AS i(literal) \
     ON CONFLICT (measurement_ids) DO NOTHING";
const LOOKUP_SETS: &str = "SELECT i.ord::int4, s.set_id \
     FROM unnest($1::text[]) WITH ORDINALITY AS i(literal, ord) \
     JOIN measurement_sets s ON s.measurement_ids = i.literal::smallint[]";

/// Positions are unique on their parts with nulls made comparable (no real location id is
/// the smallest bigint, and no stored coordinate is NaN).
const REGISTER_POSITIONS: &str = "INSERT INTO positions (location_id, lat, lon) \
     SELECT * FROM unnest($1::int8[], $2::float8[], $3::float8[]) \
     ON CONFLICT ((coalesce(location_id, -9223372036854775808)), \
                  (coalesce(lat, 'NaN')), (coalesce(lon, 'NaN'))) DO NOTHING";
const LOOKUP_POSITIONS: &str = "SELECT i.ord::int4, p.position_id \
     FROM unnest($1::int8[], $2::float8[], $3::float8[]) WITH ORDINALITY AS i(location_id, lat, lon, ord) \
     JOIN positions p \
       ON coalesce(p.location_id, -9223372036854775808) = coalesce(i.location_id, -9223372036854775808) \
      AND coalesce(p.lat, 'NaN') = coalesce(i.lat, 'NaN') \
      AND coalesce(p.lon, 'NaN') = coalesce(i.lon, 'NaN')";

impl Dictionaries {
    /// Loads both dictionaries (their newest `MAX_CACHED` entries).
    ///
    /// # Errors
    /// The database failed.
    pub async fn load(pool: &Pool) -> Result<Self, StoreError> {
        let client = pool.get().await?;
        let sets = client
            .query(
                "SELECT measurement_ids, set_id FROM measurement_sets ORDER BY set_id DESC LIMIT $1",
                &[&(MAX_CACHED as i64)],
            )
            .await?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let positions = client
            .query(
                "SELECT location_id, lat, lon, position_id FROM positions",
                &[],
            )
            .await?
            .into_iter()
            .map(|row| {
                (
                    Position::new(row.get(0), row.get(1), row.get(2)),
                    row.get(3),
                )
            })
            .collect();
        Ok(Self {
            sets: Arc::new(Mutex::new(sets)),
            positions: Arc::new(Mutex::new(positions)),
        })
    }

    /// The id of each measurement set, registering those not seen before.
    ///
    /// # Errors
    /// The database failed.
    pub async fn set_ids(&self, pool: &Pool, sets: &[Vec<i16>]) -> Result<Vec<i32>, StoreError> {
        resolve(&self.sets, sets, |missing| async move {
            let literals: Vec<String> = missing
                .iter()
                .map(|ids| {
                    let items: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    format!("{{{}}}", items.join(","))
                })
                .collect();
            let client = pool.get().await?;
            client.execute(REGISTER_SETS, &[&literals]).await?;
            Ok(client.query(LOOKUP_SETS, &[&literals]).await?)
        })
        .await
    }

    /// The id of each position, registering those not seen before.
    ///
    /// # Errors
    /// The database failed.
    pub async fn position_ids(
        &self,
        pool: &Pool,
        positions: &[Position],
    ) -> Result<Vec<i32>, StoreError> {
        resolve(&self.positions, positions, |missing| async move {
            let location_ids: Vec<Option<i64>> = missing.iter().map(|p| p.location_id).collect();
            let lats: Vec<Option<f64>> = missing.iter().map(Position::lat).collect();
            let lons: Vec<Option<f64>> = missing.iter().map(Position::lon).collect();
            let client = pool.get().await?;
            client
                .execute(REGISTER_POSITIONS, &[&location_ids, &lats, &lons])
                .await?;
            Ok(client
                .query(LOOKUP_POSITIONS, &[&location_ids, &lats, &lons])
                .await?)
        })
        .await
    }
}

/// Ids of `keys` from `cache`; the missing ones are registered by `register`, which returns
/// rows of (1-based ordinal among the missing, id).
async fn resolve<K, F, Fut>(
    cache: &Mutex<HashMap<K, i32>>,
    keys: &[K],
    register: F,
) -> Result<Vec<i32>, StoreError>
where
    K: Clone + Eq + Hash,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<tokio_postgres::Row>, StoreError>>,
{
    let lookup = |keys: &[K]| -> (Vec<Option<i32>>, Vec<K>) {
        let cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<Option<i32>> = keys.iter().map(|k| cache.get(k).copied()).collect();
        let missing = keys
            .iter()
            .zip(&ids)
            .filter(|(_, id)| id.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        (ids, missing)
    };
    let (ids, missing) = lookup(keys);
    if !missing.is_empty() {
        let rows = register(missing.clone()).await?;
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() + missing.len() > MAX_CACHED {
            // Bounded memory: forget everything; entries come back from the database.
            cache.clear();
        }
        for row in rows {
            let ordinal: i32 = row.get(0);
            let id: i32 = row.get(1);
            if let Some(key) = usize::try_from(ordinal - 1)
                .ok()
                .and_then(|i| missing.get(i))
            {
                cache.insert(key.clone(), id);
            }
        }
    }
    let cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    keys.iter()
        .zip(ids)
        .map(|(key, id)| {
            id.or_else(|| cache.get(key).copied())
                .ok_or_else(|| StoreError::Dictionary("an entry was not registered".into()))
        })
        .collect()
}
