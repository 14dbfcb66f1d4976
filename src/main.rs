//! Binary edge of sensor-etl: parses the command line, loads the configuration, installs
//! tracing, runs the command (`sensor_etl::commands`) on a runtime and maps the outcome to an
//! exit code. Errors are printed with their whole cause chain.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use sensor_etl::cli::{exit, Cli, Command};
use sensor_etl::{commands, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let _faults = sensor_etl::faults::setup();
    let settings = commands::load_settings(&cli)?;
    // The long-running command narrates on the terminal; the one-shot ones show their own
    // results there, with warnings and errors, and leave the detail to the log file.
    let terminal = match cli.command {
        Command::Run { .. } | Command::Serve { .. } => telemetry::Terminal::Narrate,
        _ => telemetry::Terminal::Problems,
    };
    let _log_guard = telemetry::init(Some(&settings.logs_dir), terminal);
    bound_allocator_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(commands::dispatch(cli.command, settings));
    // Whatever is still running now was given up (a delivery rolled back after the shutdown
    // grace): a blocked reader thread must not hold the exit. An open transaction dies with its
    // connection, so PostgreSQL rolls it back.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    outcome
}

/// Arenas of glibc's allocator the process may make. By default glibc makes up to eight per
/// core, one per thread that meets a locked arena, and keeps their freed memory: a server
/// acknowledging pushes from the journal peaked at 208-217 MB, 165-167 MB with four arenas
/// (and drain batches twice as large), and `ingest` of a 4M-line file at 94-102 MB, 93-96 MB
/// with four (docs/performance.md). Four keep the request threads, the drain, the validator
/// and the polars pool from queueing on one lock.
const ALLOCATOR_ARENAS: i32 = 4;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_allocator_arenas() {
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before the runtime
    // starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ALLOCATOR_ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_allocator_arenas() {}
