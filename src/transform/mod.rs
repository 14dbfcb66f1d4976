//! Transform stage: polars normalization of each validated chunk and per-file aggregates.
//!
//! Receives a chunk's `ReadingColumns` (values in the file's units) and returns a
//! `NormalizedBatch`: a DataFrame in canonical units plus the chunk's partial aggregates, which
//! `aggregate::FileAggregates` merges exactly across chunks (count, mean, M2 by Chan's
//! formula, min, max, first and last time), and its hourly statistics per sensor. Pure CPU work with no I/O: callers run it on a
//! blocking thread. A polars error fails the file (it is a bug, not bad input).

pub mod aggregate;
pub mod normalize;

use std::collections::HashMap;

use polars::prelude::PolarsResult;

use crate::config::Settings;
use crate::validate::ReadingColumns;
use aggregate::PartialAggregates;
use normalize::NormalizedFrame;

/// One chunk after normalization.
#[derive(Debug, Clone)]
pub struct NormalizedBatch {
    /// One row per line, one value column per key (canonical units).
    pub frame: NormalizedFrame,
    /// This chunk's aggregates at both scopes, to merge into the file's.
    pub partials: PartialAggregates,
    /// This chunk's hourly statistics per sensor.
    pub hours: Vec<aggregate::HourCell>,
}

/// Normalizes a chunk and computes its partial aggregates.
///
/// # Errors
/// A polars failure.
pub fn transform_chunk(
    readings: ReadingColumns,
    settings: &Settings,
) -> PolarsResult<NormalizedBatch> {
    let frame = normalize::normalize(readings, settings)?;
    let partials = aggregate::partial_aggregates(&frame)?;
    let hours = aggregate::hourly_cells(&frame)?;
    Ok(NormalizedBatch {
        frame,
        partials,
        hours,
    })
}

/// Normalizes the readings of a group of files (told apart by `ReadingColumns::part`) in one
/// frame, and computes each file's aggregates: one polars pass for the whole group.
///
/// # Errors
/// A polars failure.
pub fn transform_group(
    readings: ReadingColumns,
    settings: &Settings,
) -> PolarsResult<(NormalizedFrame, HashMap<u32, PartialAggregates>)> {
    on_this_thread(|| {
        let frame = normalize::normalize(readings, settings)?;
        let partials = aggregate::partial_aggregates_by_part(&frame)?;
        Ok((frame, partials))
    })
}

/// Runs `work` with polars kept on the calling thread.
///
/// A group's frame is small (a few hundred lines) and several groups are transformed at once,
/// so handing each polars operation to the polars thread pool costs more than it gains: every
/// hand-off wakes a worker, which then spins before it sleeps again (measured as a fifth of the
/// server's CPU time under concurrent pushes). Large files keep the pool for their chunks.
pub fn on_this_thread<R>(work: impl FnOnce() -> R) -> R {
    use polars_async::executor::ALLOW_RAYON_THREADS;
    /// Gives the thread its setting back however `work` ends.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALLOW_RAYON_THREADS.set(self.0);
        }
    }
    let _restore = Restore(ALLOW_RAYON_THREADS.replace(false));
    work()
}
