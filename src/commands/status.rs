//! `sensor-etl status [--json]`: the ledger in brief: files by status, rows, duplicates,
//! readings stored, files waiting in the inbox, recent problems.

use anyhow::Context;

use crate::cli::exit;
use crate::config::Settings;
use crate::ingest::inbox_inputs;
use crate::{database, store};

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
    let summary = if store::ledger::exists(&client).await? {
        store::ledger::summary(&client, 10).await?
    } else {
        store::ledger::LedgerSummary::default()
    };
    let waiting = inbox_inputs(&settings.data_dir);
    if json {
        let value = serde_json::json!({
            "database": target.psql_command(),
            "files_by_status": summary.by_status,
            "duplicate_deliveries": summary.duplicate_deliveries,
            "reading_count": summary.reading_count,
            "files_waiting": waiting.len(),
            "recent_problems": summary.recent_problems,
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
