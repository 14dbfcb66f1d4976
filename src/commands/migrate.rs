//! `sensor-etl migrate`: applies the migrations carried in the binary and says how many.

use anyhow::Context;

use crate::cli::exit;
use crate::config::Settings;
use crate::{database, store};

/// Applies the migrations.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn run(settings: &Settings) -> anyhow::Result<u8> {
    let target = database::resolve(settings).await?;
    let pool = store::build_pool(&target.url, 1)?;
    let report = store::migrate(&pool).await.context("migration failed")?;
    println!(
        "{} migration(s) applied; database: {}",
        report.applied_migrations().len(),
        target.psql_command()
    );
    Ok(exit::OK)
}
