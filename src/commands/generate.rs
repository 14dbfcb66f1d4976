//! `sensor-etl generate`: realistic test files for load tests, renamed into place one by one.

use anyhow::Context;

use crate::cli::exit;
use crate::generate::GenerateSpec;

/// Writes the files `spec` asks for.
///
/// # Errors
/// A file cannot be written.
pub async fn run(spec: GenerateSpec) -> anyhow::Result<u8> {
    let written = tokio::task::spawn_blocking(move || crate::generate::generate(&spec))
        .await?
        .context("cannot write the generated files")?;
    println!("{} file(s) written", written.len());
    Ok(exit::OK)
}
