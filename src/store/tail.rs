//! How far each file read in tail mode has been loaded (`tail_positions`), by the file's
//! fingerprint. The position a block reaches is written inside the block's own transaction, and
//! only if the stored position is where the block starts: two workers tailing the same file
//! cannot both load a block, and a crash between a commit and anything after it repeats nothing.

use deadpool_postgres::{GenericClient, Transaction};

use super::StoreError;
use crate::delivery::TailMark;

/// Where loading a file stands: the byte just past the last loaded line, and the lines up to it
/// (the header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Byte offset.
    pub byte: u64,
    /// Lines up to it.
    pub line: u64,
    /// The last bytes before it, as `<length>:<sha-256>` (see `TailMark::check`).
    pub check: String,
}

/// The stored position of the file with `fingerprint`, if any block of it was loaded.
///
/// # Errors
/// The query failed.
pub async fn position(
    client: &impl GenericClient,
    fingerprint: &str,
) -> Result<Option<Position>, StoreError> {
    let row = client
        .query_opt(
            "SELECT byte_offset, line_offset, tail_check FROM tail_positions \
             WHERE fingerprint = $1",
            &[&fingerprint],
        )
        .await?;
    Ok(row.map(|row| Position {
        byte: row.get::<_, i64>(0) as u64,
        line: row.get::<_, i64>(1) as u64,
        check: row.get(2),
    }))
}

/// Moves the file's position from the block's start to its end, inside the block's
/// transaction.
///
/// # Errors
/// The stored position is not where the block starts (another worker, or an earlier attempt
/// that committed, loaded it): the transaction must roll back. Or the statement failed.
pub async fn advance(tx: &Transaction<'_>, mark: &TailMark) -> Result<(), StoreError> {
    let from = mark.from_byte as i64;
    let moved = tx
        .execute(
            &tx.prepare_cached(
                "INSERT INTO tail_positions \
                     (fingerprint, path, byte_offset, line_offset, tail_check) \
                 VALUES ($1, $2, $3, $4, $6) \
                 ON CONFLICT (fingerprint) DO UPDATE \
                 SET byte_offset = EXCLUDED.byte_offset, line_offset = EXCLUDED.line_offset, \
                     tail_check = EXCLUDED.tail_check, path = EXCLUDED.path, updated_at = now() \
                 WHERE tail_positions.byte_offset = $5",
            )
            .await?,
            &[
                &mark.fingerprint,
                &mark.path.to_string_lossy().as_ref(),
                &(mark.to_byte as i64),
                &(mark.to_line as i64),
                &from,
                &mark.check,
            ],
        )
        .await?;
    if moved == 0 {
        return Err(StoreError::TailMoved(format!(
            "{} was loaded past byte {from} already",
            mark.path.display()
        )));
    }
    Ok(())
}
