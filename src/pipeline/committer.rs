//! Group commit for deliveries that arrive one by one and concurrently (request bodies): each
//! caller hands its delivery over and waits; a collector takes every delivery waiting at that
//! moment (up to [`GROUP_MAX_DELIVERIES`] and [`GROUP_MAX_BYTES`]) into one
//! [`process_group`] transaction, with up to `writers` groups under way at once. A busy
//! server so pays one transaction per group instead of one per request; an idle one commits a
//! lone delivery at once. While another group is under way, a new group first waits a moment
//! (`http.group_wait_micros`) for more deliveries, like PostgreSQL's `commit_delay` with
//! `commit_siblings`: under load, groups grow and each delivery costs less CPU time.
//!
//! Guarantees are the group commit's: each delivery keeps its own ledger row and outcome, and
//! nothing of a group commits unless all of it does. A group that fails for a reason of its
//! data is split until the delivery at fault goes alone ([`process_in_groups`]). When an outage
//! stops a group, each caller not yet served is told [`Committed::Alone`] and processes its
//! delivery on its own, with the retries and the deadline it chose; nothing was committed for
//! it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::delivery::Delivery;
use crate::error::Result;
use crate::pipeline::{process_in_groups, DeliveryReport, PipelineCtx};

/// Deliveries in one group at most.
pub const GROUP_MAX_DELIVERIES: usize = 256;

/// Bytes of the deliveries of one group at most.
pub const GROUP_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Deliveries up to this size go in groups; larger ones get a transaction of their own.
pub const GROUP_MAX_DELIVERY_BYTES: u64 = 1024 * 1024;

/// The group policy every source follows: a delivery goes in a group commit when it is small
/// and has not failed before (a retry goes alone, so a fault of its own cannot stop others).
pub fn goes_in_group(size: u64, tried_before: bool) -> bool {
    !tried_before && size <= GROUP_MAX_DELIVERY_BYTES
}

/// What became of a delivery handed to the committer.
#[derive(Debug)]
pub enum Committed {
    /// Its group committed (or the delivery alone failed for a reason of its own).
    Report(Box<Result<DeliveryReport>>),
    /// Its group failed as a whole; nothing was committed for it: process it alone.
    Alone,
}

struct Pending {
    delivery: Delivery,
    size: u64,
    reply: oneshot::Sender<Committed>,
}

/// Hands deliveries to the group-commit collector (cheap to clone).
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Starts the collector with up to `writers` groups under way at once, a group waiting up
    /// to `wait` for more deliveries while another is under way; it ends when every
    /// `Committer` is dropped.
    pub fn start(ctx: PipelineCtx, writers: usize, wait: Duration) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(collect(ctx, waiting, writers.max(1), wait));
        Self { queue }
    }

    /// Commits `delivery` in the next group (`size`: its bytes, for the group bound) and waits
    /// for the outcome. The queue holds only deliveries whose callers wait for them, so it is
    /// bounded by what the callers bound (the server's in-flight bytes).
    pub async fn commit(&self, delivery: Delivery, size: u64) -> Committed {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            delivery,
            size,
            reply,
        };
        if self.queue.send(pending).is_err() {
            return Committed::Alone;
        }
        outcome.await.unwrap_or(Committed::Alone)
    }
}

async fn collect(
    ctx: PipelineCtx,
    mut waiting: mpsc::UnboundedReceiver<Pending>,
    writers: usize,
    wait: Duration,
) {
    let total = writers;
    let writers = Arc::new(Semaphore::new(writers));
    loop {
        let Ok(permit) = Arc::clone(&writers).acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut bytes = first.size;
        let mut group = vec![first];
        while group.len() < GROUP_MAX_DELIVERIES && bytes < GROUP_MAX_BYTES {
            match waiting.try_recv() {
                Ok(next) => {
                    bytes += next.size;
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // Another group under way: the server is busy, and a moment more makes this group
        // bigger (fewer transactions, statements and commits for the same bodies).
        if !wait.is_zero() && writers.available_permits() + 1 < total {
            let deadline = tokio::time::Instant::now() + wait;
            while group.len() < GROUP_MAX_DELIVERIES && bytes < GROUP_MAX_BYTES {
                match tokio::time::timeout_at(deadline, waiting.recv()).await {
                    Ok(Some(next)) => {
                        bytes += next.size;
                        group.push(next);
                    }
                    _ => break,
                }
            }
        }
        // A caller that stopped waiting (its deadline passed) was answered already.
        group.retain(|pending| !pending.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            commit_group(&ctx, group).await;
        });
    }
}

async fn commit_group(ctx: &PipelineCtx, group: Vec<Pending>) {
    let deliveries: Vec<Delivery> = group.iter().map(|p| p.delivery.clone()).collect();
    crate::telemetry::record_group_size(deliveries.len());
    let outcomes = process_in_groups(ctx, &deliveries).await;
    for (pending, (_, outcome)) in group.into_iter().zip(outcomes) {
        let answer = match outcome {
            Some(outcome) => Committed::Report(Box::new(outcome)),
            // An outage stopped the group first: the caller goes alone, with its own deadline.
            None => Committed::Alone,
        };
        let _ = pending.reply.send(answer);
    }
}
