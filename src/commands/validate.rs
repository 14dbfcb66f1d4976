//! `sensor-etl validate PATH…`: the validator alone, with no database: what would load, what
//! would be rejected, and why (text or JSON), with the documented exit codes.

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::exit;
use crate::config::Settings;
use crate::sources::files::collect_inputs;
use crate::validate;

/// Validates `paths` and prints what would load and what not, and why.
///
/// # Errors
/// A file cannot be read.
pub fn run(
    paths: &[PathBuf],
    json: bool,
    follow_symlinks: bool,
    settings: &Settings,
) -> anyhow::Result<u8> {
    let (files, missing) = collect_inputs(paths, follow_symlinks);
    for path in &missing {
        eprintln!("error: {} does not exist", path.display());
    }
    let mut any_rejects = false;
    let mut out = Vec::new();
    for path in &files {
        let run = validate::dry_run(path, settings)
            .with_context(|| format!("cannot read {}", path.display()))?;
        any_rejects |= run.file_rejection.is_some() || !run.rejects.is_empty();
        if json {
            out.push(serde_json::json!({
                "file": path,
                "rows_read": run.rows_read,
                "rows_would_load": if run.file_rejection.is_some() { 0 } else { run.rows_accepted },
                "readings_would_load": if run.file_rejection.is_some() { 0 } else { run.reading_count },
                "rows_rejected": run.rejects.len(),
                "file_rejection": run.file_rejection.as_ref().map(|r| serde_json::json!({"code": r.code.as_str(), "message": r.message})),
                "rejects": run.rejects.iter().flat_map(|r| r.violations.iter().map(move |v| serde_json::json!({
                    "line": r.position.line, "column": v.column, "value": v.value, "code": v.reason.code(), "message": v.message,
                }))).collect::<Vec<_>>(),
            }));
            continue;
        }
        match &run.file_rejection {
            Some(rejection) => println!(
                "{}: would be REJECTED whole ({}): {} [{} rows read, {} with violations]",
                path.display(),
                rejection.code,
                rejection.message,
                run.rows_read,
                run.rejects.len()
            ),
            None => println!(
                "{}: {} rows read, {} would load ({} readings), {} would be rejected",
                path.display(),
                run.rows_read,
                run.rows_accepted,
                run.reading_count,
                run.rejects.len()
            ),
        }
        for reject in &run.rejects {
            for violation in &reject.violations {
                println!(
                    "  line {}: {} column={} value={:?}: {}",
                    reject.position.line,
                    violation.reason.code(),
                    violation.column.as_deref().unwrap_or("-"),
                    violation.value.as_deref().unwrap_or(""),
                    violation.message
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if !missing.is_empty() {
        exit::FAILURE
    } else if any_rejects {
        exit::REJECTS
    } else {
        exit::OK
    })
}
