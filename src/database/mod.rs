//! Which database to use: the configured `DATABASE_URL`, or the embedded default cluster under
//! `<state_dir>/postgres`, started on demand (it keeps running for later commands; `sensor-etl
//! db stop` ends it) with its `sensor_etl` database created if missing ([`embedded`] runs
//! that cluster).

pub mod embedded;

use tokio_postgres::NoTls;
use tracing::info;

use crate::config::Settings;
use crate::store::StoreError;

/// Why the database could not be found, started or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The embedded cluster failed.
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedDbError),
    /// The database refused a statement or a connection.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = DatabaseError> = std::result::Result<T, E>;
use embedded::{EmbeddedCluster, DATABASE_NAME};

/// Where the database is.
#[derive(Debug, Clone)]
pub struct DatabaseTarget {
    /// Connection string.
    pub url: String,
    /// The embedded cluster, when that is what is used.
    pub embedded: Option<EmbeddedCluster>,
}

impl DatabaseTarget {
    /// The psql command that reaches this database, without its password (psql then asks, or
    /// takes `PGPASSWORD` or `~/.pgpass`): safe to print and to log.
    pub fn psql_command(&self) -> String {
        match &self.embedded {
            Some(cluster) => cluster.psql_command(),
            None => format!("psql '{}'", without_password(&self.url)),
        }
    }
}

/// A connection string with its password removed, in either form PostgreSQL takes: a URL
/// (`postgres://user:secret@host/db` becomes `postgres://user@host/db`) or key/value pairs
/// (`password=secret` becomes `password=***`).
pub fn without_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        return match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                let path = redact_query_password(path);
                format!("{scheme}://{user}@{host}{path}")
            }
            None => format!("{scheme}://{authority}{}", redact_query_password(path)),
        };
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `?password=…` in a URL's query.
fn redact_query_password(path: &str) -> String {
    let Some((before, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{before}?{query}")
}

/// Resolves (and for the embedded cluster, starts) the database.
///
/// # Errors
/// The embedded cluster cannot be started or its database created.
pub async fn resolve(settings: &Settings) -> Result<DatabaseTarget> {
    let target = find(settings, Embedded::Start).await?;
    if let Some(cluster) = &target.embedded {
        create_database(&cluster.url("postgres"), DATABASE_NAME).await?;
        info!(
            message = "Using the embedded PostgreSQL cluster.",
            folder = %cluster.root().display(),
            psql = %cluster.psql_command()
        );
    }
    Ok(target)
}

/// Finds the database without starting, creating or changing anything: for read-only
/// commands (`status`, `db url`).
///
/// # Errors
/// The embedded cluster is not running (or its server programs are missing).
pub async fn locate(settings: &Settings) -> Result<DatabaseTarget> {
    find(settings, Embedded::Attach).await
}

/// What to do with the embedded cluster when no database is configured.
#[derive(Clone, Copy)]
enum Embedded {
    /// Start it (create it first when needed).
    Start,
    /// Use it only when it already runs.
    Attach,
}

async fn find(settings: &Settings, embedded: Embedded) -> Result<DatabaseTarget> {
    if let Some(url) = &settings.database_url {
        return Ok(DatabaseTarget {
            url: url.clone(),
            embedded: None,
        });
    }
    let root = settings.state_dir.join("postgres");
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = EmbeddedCluster::new(&root)?;
        match embedded {
            Embedded::Start => cluster.start()?,
            Embedded::Attach => cluster.attach()?,
        }
        Ok::<_, DatabaseError>(cluster)
    })
    .await
    .expect("the cluster task does not panic")?;
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

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_never_reach_a_printed_connection_string() {
        for (url, shown) in [
            (
                "postgres://etl:s3cret@db.example:5432/sensors",
                "postgres://etl@db.example:5432/sensors",
            ),
            (
                "postgresql://etl:p%40ss:w@rd@10.0.0.1/x?sslmode=require&password=s3cret",
                "postgresql://etl@10.0.0.1/x?sslmode=require&password=***",
            ),
            ("postgres://etl@host/db", "postgres://etl@host/db"),
            ("postgres://host/db", "postgres://host/db"),
            (
                "host=db user=etl password=s3cret dbname=x",
                "host=db user=etl password=*** dbname=x",
            ),
        ] {
            assert_eq!(without_password(url), shown);
            assert!(!without_password(url).contains("s3cret"));
        }
    }
}
