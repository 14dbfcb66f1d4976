//! What a delivery's transaction records besides its rows, on both paths (streamed and group):
//! the receipt of a body drained from the push journal, the position a block of a tailed file
//! reaches, and the device a pushed body's sensors belong to. Each is written in the same
//! transaction as the delivery, so it holds exactly when the delivery committed.

use deadpool_postgres::Transaction;

use crate::delivery::Delivery;
use crate::error::Result;
use crate::store::{ledger, receipts, tail};

/// One delivery of a transaction: the delivery, the ledger row it is (its own, or the one it
/// duplicates) and whether it is a duplicate.
pub(super) type Marked<'a> = (&'a Delivery, i64, bool);

/// Records the marks of `deliveries`, in `tx`.
///
/// # Errors
/// A statement failed.
pub(super) async fn record(tx: &Transaction<'_>, deliveries: &[Marked<'_>]) -> Result<()> {
    let receipts: Vec<receipts::ReceiptRow<'_>> = deliveries
        .iter()
        .filter_map(|(delivery, file_id, duplicate)| {
            let mark = delivery.journaled.as_ref()?;
            Some(receipts::ReceiptRow {
                receipt_id: &mark.receipt_id,
                file_id: *file_id,
                duplicate: *duplicate,
            })
        })
        .collect();
    receipts::record(tx, &receipts).await?;
    for mark in deliveries.iter().filter_map(|(d, _, _)| d.tail.as_ref()) {
        tail::advance(tx, mark).await?;
    }
    let devices: Vec<_> = deliveries
        .iter()
        .filter_map(|(d, _, _)| d.device.as_ref())
        .collect();
    ledger::record_device_sensors(tx, &devices).await?;
    Ok(())
}
