//! `sensor-etl status [--json]`: the ledger in brief: files by status, rows, duplicates,
//! readings stored, files waiting in the inbox, bodies waiting in the push journal, recent
//! problems.

use anyhow::Context;

use crate::cli::exit;
use crate::config::Settings;
use crate::sources::inbox::inbox_inputs;
use crate::sources::journal::{self, JournalStats};
use crate::{database, store};

/// The push journal of `state_dir` as the database sees it: records whose receipts it does not
/// hold yet are waiting.
async fn journal_depth(
    settings: &Settings,
    client: &deadpool_postgres::Client,
    migrated: bool,
) -> anyhow::Result<JournalStats> {
    let dir = journal::journal_dir(&settings.state_dir);
    let found = tokio::task::spawn_blocking(move || journal::inspect(&dir)).await??;
    let mut loaded = std::collections::HashSet::new();
    if migrated && !found.is_empty() {
        for part in found.chunks(10_000) {
            let ids: Vec<&str> = part.iter().map(|f| f.receipt_id.as_str()).collect();
            loaded.extend(
                store::receipts::recorded(client, &ids)
                    .await
                    .unwrap_or_default(),
            );
        }
    }
    let waiting: Vec<_> = found
        .iter()
        .filter(|f| !loaded.contains(&f.receipt_id))
        .collect();
    let oldest = waiting.iter().map(|f| f.received_at).min();
    Ok(JournalStats {
        bodies: waiting.len() as u64,
        bytes: waiting.iter().map(|f| f.bytes).sum(),
        oldest_age_seconds: oldest.map_or(0.0, |at| {
            (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
        }),
        drain_rate: if migrated {
            store::receipts::drain_rate(client).await.unwrap_or(0.0)
        } else {
            0.0
        },
    })
}

/// Prints the ledger in brief (text or JSON).
///
/// # Errors
/// The database cannot be used.
pub async fn run(settings: Settings, json: bool) -> anyhow::Result<u8> {
    // Read-only: never starts a database, never migrates one (a read-only role works).
    let target = database::locate(&settings).await?;
    let pool = store::build_pool(&target.url, 1)?;
    let client = pool
        .get()
        .await
        .with_context(|| format!("cannot connect to the database ({})", target.psql_command()))?;
    let summary_exists = store::status::exists(&client).await?;
    let summary = if summary_exists {
        store::status::summary(&client, 10).await?
    } else {
        store::status::LedgerSummary::default()
    };
    let waiting = inbox_inputs(&settings.data_dir);
    let journal = journal_depth(&settings, &client, summary_exists).await?;
    if json {
        let value = serde_json::json!({
            "database": target.psql_command(),
            "files_by_status": summary.by_status,
            "duplicate_deliveries": summary.duplicate_deliveries,
            "reading_count": summary.reading_count,
            "files_waiting": waiting.len(),
            "recent_problems": summary.recent_problems,
            "journal": journal,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(exit::OK);
    }
    println!("database: {}", target.psql_command());
    println!(
        "{:<17} {:>7} {:>12} {:>12} {:>12} {:>15}",
        "status", "files", "rows read", "loaded", "rejected", "already stored"
    );
    for s in &summary.by_status {
        println!(
            "{:<17} {:>7} {:>12} {:>12} {:>12} {:>15}",
            s.status, s.files, s.rows_read, s.rows_loaded, s.rows_rejected, s.rows_duplicate
        );
    }
    println!("duplicate deliveries: {}", summary.duplicate_deliveries);
    println!("readings stored: {}", summary.reading_count);
    println!(
        "files waiting in {}: {}",
        settings.data_dir.display(),
        waiting.len()
    );
    println!(
        "push journal: {} bodies waiting ({} bytes), oldest {:.0} s, {:.1} bodies/s loaded",
        journal.bodies, journal.bytes, journal.oldest_age_seconds, journal.drain_rate
    );
    if !summary.recent_problems.is_empty() {
        println!("recent problems:");
        for p in &summary.recent_problems {
            println!(
                "  #{} {} {} ({} rows rejected){}",
                p.file_id,
                p.file_name,
                p.status,
                p.rows_rejected,
                p.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(exit::OK)
}
