//! Which database to use: the configured `DATABASE_URL`, or the embedded default cluster under
//! `<state_dir>/postgres`, started on demand (it keeps running for later commands; `sensor-etl
//! db stop` ends it) with its `sensor_etl` database created if missing.

use tokio_postgres::NoTls;
use tracing::info;

use crate::config::Settings;
use crate::embedded_db::{EmbeddedCluster, DATABASE_NAME};
use crate::error::Result;
use crate::store::StoreError;

/// Where the database is.
#[derive(Debug, Clone)]
pub struct DatabaseTarget {
    /// Connection string.
    pub url: String,
    /// The embedded cluster, when that is what is used.
    pub embedded: Option<EmbeddedCluster>,
}

impl DatabaseTarget {
    /// The psql command that reaches this database.
    pub fn psql_command(&self) -> String {
        match &self.embedded {
            Some(cluster) => cluster.psql_command(),
            None => format!("psql '{}'", self.url),
        }
    }
}

/// Resolves (and for the embedded cluster, starts) the database.
///
/// # Errors
/// The embedded cluster cannot be started or its database created.
pub async fn resolve(settings: &Settings) -> Result<DatabaseTarget> {
    if let Some(url) = &settings.database_url {
        return Ok(DatabaseTarget {
            url: url.clone(),
            embedded: None,
        });
    }
    let root = settings.state_dir.join("postgres");
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = EmbeddedCluster::new(&root)?;
        cluster.start()?;
        Ok::<_, crate::error::Error>(cluster)
    })
    .await
    .expect("cluster start does not panic")?;
    create_database(&cluster.url("postgres"), DATABASE_NAME).await?;
    info!(
        message = "Using the embedded PostgreSQL cluster.",
        folder = %cluster.root().display(),
        psql = %cluster.psql_command()
    );
    Ok(DatabaseTarget {
        url: cluster.url(DATABASE_NAME),
        embedded: Some(cluster),
    })
}

/// Creates database `name` through the maintenance database at `admin_url` unless it exists.
///
/// # Errors
/// The server cannot be reached or refuses.
pub async fn create_database(admin_url: &str, name: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(StoreError::from)?;
    let connection = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(StoreError::from)?
        .is_some();
    if !exists {
        let quoted = name.replace('"', "\"\"");
        if let Err(error) = client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
        {
            // Another process may have created it meanwhile.
            if error.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(StoreError::from(error).into());
            }
        }
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}
