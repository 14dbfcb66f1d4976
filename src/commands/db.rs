//! `sensor-etl db start|stop|url`: the embedded PostgreSQL cluster (or the configured
//! database's connection command).

use crate::cli::{exit, DbAction};
use crate::config::Settings;
use crate::database::{self, embedded};

/// Starts, stops or names the database.
///
/// # Errors
/// The embedded cluster cannot be managed.
pub async fn run(settings: &Settings, action: DbAction) -> anyhow::Result<u8> {
    match action {
        DbAction::Start => {
            let target = database::resolve(settings).await?;
            println!("{}", target.psql_command());
        }
        DbAction::Url => {
            // Read-only: names the database, never starts or creates one.
            let target = database::locate(settings).await?;
            println!("{}", target.psql_command());
        }
        DbAction::Stop => {
            let cluster = embedded::EmbeddedCluster::new(&settings.state_dir.join("postgres"))?;
            cluster.stop()?;
            println!(
                "embedded PostgreSQL in {} stopped",
                cluster.root().display()
            );
        }
    }
    Ok(exit::OK)
}
