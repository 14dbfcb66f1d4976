//! The middle of every delivery transaction, on both paths: a frame of readings (a chunk of a
//! streamed delivery, or the whole of a group) sifted against what is stored, added to the
//! kept statistics, and copied into `readings`. [`ReadingsWriter`] holds what a transaction
//! keeps between frames: its open COPY (`store::copy::DeliveryTx`), its sensor claims and
//! conflict policy (`sift`), and its pending statistics (`statistics`).
//!
//! Guarantees: a line whose reading is stored already is never copied again (a duplicate, a
//! conflict, or a replacement, by `on_conflict`); the statistics count exactly the lines
//! copied; in a group, a conflict fails the transaction before any line is copied, so the
//! group is split and the delivery at fault goes alone, where its line is rejected with its
//! reason.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::error::{Error, Result};
use crate::store::copy::DeliveryTx;
use crate::transform::aggregate::{hourly_cells, HourCell, PartialAggregates};
use crate::transform::normalize::NormalizedFrame;
use crate::transform::on_this_thread;

use super::commit::Ending;
use super::sift::{readings_in, Sifted, Sifter};
use super::statistics::PendingStatistics;
use super::PipelineCtx;

/// A frame of readings to write: one part per delivery (`part` column), its partial
/// aggregates by part, and its hourly statistics when they were computed already.
pub(super) struct Frame {
    /// The normalized lines.
    pub frame: NormalizedFrame,
    /// Partial aggregates by part.
    pub partials: HashMap<u32, PartialAggregates>,
    /// Hourly statistics of every line, computed beside the transform (a streamed chunk);
    /// `None` to compute them here, on this thread (a group's small frame).
    pub hours: Option<Vec<HourCell>>,
}

/// What became of a frame's lines.
pub(super) struct Written {
    /// What sifting found: duplicates, conflicts (rejected, on the streamed path) and
    /// replaced lines, per part.
    pub sifted: Sifted,
    /// Partial aggregates by part of the lines written.
    pub partials: HashMap<u32, PartialAggregates>,
    /// Whether lines were sifted out (then the partials count only the lines written).
    sifted_out: bool,
    /// Readings written.
    pub readings: u64,
}

impl Written {
    /// Readings of `part` written, when lines of the frame were sifted out.
    pub fn readings_of(&self, part: u32) -> Option<u64> {
        self.sifted_out
            .then(|| readings_in(self.partials.get(&part)))
    }
}

/// What a conflict does to the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnConflictLine {
    /// The line is rejected with its reason; the rest of the frame is written.
    Reject,
    /// The transaction fails (a group: it is split until the delivery at fault goes alone).
    FailGroup,
}

/// A transaction's readings side (see the module header).
pub(super) struct ReadingsWriter<'a, 't> {
    tx: DeliveryTx<'a, 't>,
    sifter: Sifter,
    statistics: PendingStatistics,
}

impl<'a, 't> ReadingsWriter<'a, 't> {
    /// The readings side of `tx`, nothing written yet.
    pub fn new(tx: &'a Transaction<'t>, ctx: &PipelineCtx) -> Self {
        Self {
            tx: DeliveryTx::new(tx),
            sifter: Sifter::new(&ctx.settings, &ctx.store),
            statistics: PendingStatistics::new(),
        }
    }

    /// Sifts `frame` (part `p` is the delivery `file_ids[p]`, named `names[p]`; lines of a
    /// part with no id are not written), adds what stays to the statistics and copies it.
    ///
    /// # Errors
    /// A statement or the COPY failed, the transform failed, or (`FailGroup`) a line
    /// conflicts with a stored reading.
    pub async fn write(
        &mut self,
        ctx: &PipelineCtx,
        frame: Frame,
        file_ids: &[Option<i64>],
        names: &[&str],
        on_conflict: OnConflictLine,
    ) -> Result<Written> {
        let mut sifted = self
            .sifter
            .sift(&mut self.tx, &ctx.store, &frame.frame, file_ids, names)
            .await?;
        if on_conflict == OnConflictLine::FailGroup {
            if let Some((_, _, message)) = sifted.conflicts.first() {
                return Err(Error::GroupConflict(message.clone()));
            }
        }
        let Frame {
            frame,
            partials,
            hours,
        } = frame;
        let (normalized, partials, sifted_out) = match sifted.kept.take() {
            Some((kept, kept_partials)) => (kept, kept_partials, true),
            None => (frame, partials, false),
        };
        let hours = match hours {
            Some(hours) if !sifted_out => hours,
            // A streamed chunk's lines are many: its hours again on the polars pool.
            Some(_) => hourly_cells(&normalized).map_err(Error::Transform)?,
            None => on_this_thread(|| hourly_cells(&normalized)).map_err(Error::Transform)?,
        };
        self.statistics.add(&hours, file_ids, &ctx.store);
        self.statistics.replaced(&sifted.replaced);
        let readings = self
            .tx
            .copy_readings(&ctx.store, &normalized, file_ids)
            .await?;
        if readings > 0 {
            // Their index ranges are summarized while the transaction goes on
            // (`store::summarize`).
            ctx.store.readings_copied();
        }
        if self.statistics.is_full() {
            let tx = self.tx.statement().await?;
            self.statistics.flush(tx, self.sifter.claims()).await?;
        }
        Ok(Written {
            sifted,
            partials,
            sifted_out,
            readings,
        })
    }

    /// The transaction, for a statement (the open COPY is closed first).
    ///
    /// # Errors
    /// Closing the COPY failed.
    pub async fn statement(&mut self) -> Result<&'a Transaction<'t>> {
        Ok(self.tx.statement().await?)
    }

    /// Writes the pending statistics and computes again those of replaced lines; returns
    /// what the end of the transaction needs: the sensors whose stored lines were replaced
    /// and the placeholder spans the sift created.
    ///
    /// # Errors
    /// A statement failed.
    pub async fn finish(mut self) -> Result<Finished> {
        let tx = self.tx.statement().await?;
        self.statistics.finish(tx, self.sifter.claims()).await?;
        Ok(Finished {
            replaced_sensors: self.statistics.replaced_sensors(),
            placeholders: self.sifter.placeholders().to_vec(),
        })
    }
}

/// What the readings side leaves for the end of the transaction.
pub(super) struct Finished {
    /// Sensors whose stored lines were replaced.
    replaced_sensors: Vec<i64>,
    /// Placeholder sensor spans the sift created.
    placeholders: Vec<i64>,
}

impl Finished {
    /// The end of a transaction whose deliveries were received at `received_at`.
    pub fn ending(&self, received_at: DateTime<Utc>) -> Ending<'_> {
        Ending {
            received_at,
            replaced_sensors: &self.replaced_sensors,
            placeholders: &self.placeholders,
        }
    }
}
