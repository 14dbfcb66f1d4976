//! `sensor-etl export [--to DIR]`: adds what was loaded since the previous export to the Delta
//! Lake tables under `DIR`, by default the configured `lake_dir` (see `lake`). Reads the
//! database only; never migrates.

use std::path::Path;

use anyhow::Context;

use crate::cli::exit;
use crate::config::Settings;
use crate::{database, lake, store};

/// Runs one export and prints what it added to each table.
///
/// # Errors
/// The database or the lake failed; each table is then at its previous export or this one.
pub async fn run(settings: &Settings, to: Option<&Path>) -> anyhow::Result<u8> {
    let Some(to) = to.or(settings.lake_dir.as_deref()) else {
        anyhow::bail!("no lake folder: give --to DIR or set lake_dir in the configuration");
    };
    let target = database::locate(settings).await?;
    let pool = store::build_pool(&target.url, 3)?;
    let report = lake::export(&pool, to)
        .await
        .with_context(|| format!("cannot export to {}", to.display()))?;
    for table in &report.tables {
        if table.after == report.horizon {
            println!(
                "{}: up to date (deliveries up to {})",
                table.table, report.horizon
            );
        } else {
            println!(
                "{}: {} rows added (deliveries {} to {})",
                table.table,
                table.added,
                table.after + 1,
                report.horizon
            );
        }
    }
    Ok(exit::OK)
}
