//! `sensor-etl generate`: realistic test files for load tests, renamed into place one by one,
//! or (`--http URL`) the same bodies posted to the ingest endpoint, with a report of the load.

use anyhow::Context;

use crate::cli::exit;
use crate::generate::GenerateSpec;

/// Writes the files `spec` asks for.
///
/// # Errors
/// A file cannot be written.
pub async fn run(spec: GenerateSpec) -> anyhow::Result<u8> {
    if let Some(url) = spec.http.clone() {
        println!("{}", crate::generate::http::describe(&spec));
        let report = crate::generate::http::run(&spec, &url).await?;
        println!("{report}");
        return Ok(exit::OK);
    }
    let written = tokio::task::spawn_blocking(move || crate::generate::generate(&spec))
        .await?
        .context("cannot write the generated files")?;
    println!("{} file(s) written", written.len());
    Ok(exit::OK)
}
