//! Command-line interface: subcommands, global flags and the documented exit codes.
//!
//! Flags override the environment, which overrides `sensor-etl.toml`, which overrides the
//! built-in defaults (see `config`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes, as documented in `--help`.
pub mod exit {
    /// Success: every file loaded (or was a duplicate or empty).
    pub const OK: u8 = 0;
    /// Failure: bad configuration, database unreachable, or a file failed.
    pub const FAILURE: u8 = 1;
    /// Usage error (bad flags or arguments).
    pub const USAGE: u8 = 2;
    /// Completed, but rows or whole files were rejected (see quarantine/ and the error log).
    pub const REJECTS: u8 = 3;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success: every file loaded, or was a duplicate or empty
  1  failure: bad configuration, database unreachable, or a file could not be processed
  2  usage error
  3  done, but rows or whole files were rejected (see quarantine/ and logs/errors.log)

Configuration: built-in defaults < sensor-etl.toml < SENSOR_ETL_* environment < flags.
DATABASE_URL names the database; without it an embedded PostgreSQL cluster is started
under .sensor-etl/postgres (PostgreSQL server programs must be installed).";

/// File-watching ETL for sensor.community CSV files into PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "sensor-etl", version, about, after_long_help = EXIT_CODES_HELP, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Configuration file (default: ./sensor-etl.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (default: $DATABASE_URL, else the embedded cluster).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Inbox folder watched by `run`.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Quarantine folder.
    #[arg(long, global = true, value_name = "DIR")]
    pub quarantine_dir: Option<PathBuf>,
    /// Folder for committed files (`run`).
    #[arg(long, global = true, value_name = "DIR")]
    pub processed_dir: Option<PathBuf>,
    /// Logs folder (structured logs and errors.log).
    #[arg(long, global = true, value_name = "DIR")]
    pub logs_dir: Option<PathBuf>,
    /// Local state folder (embedded database).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the inbox forever and serve the HTTP API; SIGINT/SIGTERM finish the current file
    /// and exit 0.
    Run {
        /// Address of the HTTP API: ingest, /metrics, /healthz, /readyz (default
        /// 127.0.0.1:9898; "" disables).
        #[arg(long, value_name = "ADDR")]
        http_addr: Option<String>,
    },
    /// Serve the HTTP API alone (POST /v1/ingest, /metrics, /healthz, /readyz), watching no
    /// inbox; SIGINT/SIGTERM finish the requests in hand and exit 0.
    Serve {
        /// Address to listen on (default 127.0.0.1:9898).
        #[arg(long, value_name = "ADDR")]
        http_addr: Option<String>,
    },
    /// Load files or folders (recursively) once; inputs stay where they are.
    Ingest {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Move each committed file to the processed folder (rejected ones to quarantine).
        #[arg(long)]
        consume: bool,
        /// Follow symbolic links inside the given folders (by default they are skipped).
        #[arg(long)]
        follow_symlinks: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dry run without any database: what would load and what would be rejected, and why.
    Validate {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Follow symbolic links inside the given folders (by default they are skipped).
        #[arg(long)]
        follow_symlinks: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The ledger in brief: files by status, rows, recent problems, files waiting.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add what was loaded since the previous export to the Delta Lake tables under a folder.
    Export {
        /// The lake folder (tables `readings`, `files`, `aggregates`); default: `lake_dir`.
        #[arg(long, value_name = "DIR")]
        to: Option<std::path::PathBuf>,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Write realistic test files (load tests, benchmarks), renamed into place one by one.
    Generate(crate::generate::GenerateSpec),
    /// Manage the embedded PostgreSQL cluster.
    Db {
        /// start, stop or url.
        #[command(subcommand)]
        action: DbAction,
    },
}

/// Embedded cluster actions.
#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Start the embedded cluster (created on first use).
    Start,
    /// Stop the embedded cluster.
    Stop,
    /// Print how to connect to the database in use.
    Url,
}
