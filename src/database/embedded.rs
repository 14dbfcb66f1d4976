//! The embedded default database: a private PostgreSQL cluster under a project-local folder,
//! run from the PostgreSQL server programs installed on the machine.
//!
//! Used when no `DATABASE_URL` is configured, and by the test harness. The cluster listens on
//! 127.0.0.1 only, on a port chosen once and remembered, with trust authentication for the
//! `postgres` role. PostgreSQL refuses to run as root, so when this process is root the server
//! programs run as the `postgres` system user (or `nobody`) and the cluster folder is handed to
//! that user; when that user cannot reach the project folder (one below `/root`, say), the
//! cluster lives in `/var/tmp/sensor-etl-postgres/<hash of the project folder>` instead. Missing server programs are an error that says how to install them.
//! `start` leaves a daemon running for later commands (`stop` ends it); `start_attached` runs
//! a server that dies with this process (tests).

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};

/// Failures to set up or start the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedDbError {
    /// No PostgreSQL server programs were found.
    #[error(
        "PostgreSQL server programs (initdb, pg_ctl, postgres) were not found; install them \
         (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
         macOS: `brew install postgresql`) or set DATABASE_URL to an existing server"
    )]
    ServerNotInstalled,
    /// Running as root and no unprivileged user exists to run the server.
    #[error(
        "running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL"
    )]
    NoUnprivilegedUser,
    /// A server program failed.
    #[error("`{command}` failed: {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The server did not become ready in time.
    #[error("PostgreSQL did not accept connections within {seconds} s; see {}", log.display())]
    NotReady {
        /// Seconds waited.
        seconds: u64,
        /// The server log.
        log: PathBuf,
    },
    /// The cluster is not running, and the command does not start it.
    #[error(
        "the embedded PostgreSQL cluster in {} is not running; start it with `sensor-etl db start`",
        root.display()
    )]
    NotRunning {
        /// The cluster folder.
        root: PathBuf,
    },
    /// A file operation on the cluster folder failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, EmbeddedDbError>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedDbError + '_ {
    move |source| EmbeddedDbError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Name of the database created in the embedded cluster.
pub const DATABASE_NAME: &str = "sensor_etl";

/// A private PostgreSQL cluster in a folder of its own.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(Uid, Gid)>,
    port: u16,
}

impl EmbeddedCluster {
    /// Locates the server programs and prepares (without creating anything) a cluster in
    /// `root`.
    ///
    /// # Errors
    /// The server programs are missing, or no unprivileged user exists when run as root.
    pub fn new(root: &Path) -> Result<Self> {
        let bin_dir = find_server_bin_dir().ok_or(EmbeddedDbError::ServerNotInstalled)?;
        let run_as = if Uid::effective().is_root() {
            let user = ["postgres", "nobody"]
                .iter()
                .find_map(|name| User::from_name(name).ok().flatten())
                .ok_or(EmbeddedDbError::NoUnprivilegedUser)?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let mut root = std::path::absolute(root).map_err(io_error(root))?;
        if let Some((uid, gid)) = run_as {
            if !reachable_by(&root, uid, gid) {
                // The project folder sits below a folder the server's user cannot enter (e.g.
                // /root): keep the cluster in a machine-local folder named after the project's.
                let fallback = fallback_root(&root);
                tracing::info!(
                    message = "Embedded PostgreSQL kept outside the project folder.",
                    folder = %fallback.display(),
                    reason = "the project folder is not reachable by the server's user"
                );
                root = fallback;
            }
        }
        Ok(Self {
            root,
            bin_dir,
            run_as,
            port: 0,
        })
    }

    /// The cluster folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn port_file(&self) -> PathBuf {
        self.root.join("port")
    }

    /// The TCP port (valid after `start` or `start_attached`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection string of database `dbname`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The psql command that connects to the embedded database.
    pub fn psql_command(&self) -> String {
        format!(
            "psql -h 127.0.0.1 -p {} -U postgres {DATABASE_NAME}",
            self.port
        )
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.root).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    fn run(&self, mut command: Command) -> Result<String> {
        let line = format!("{command:?}");
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(&self.bin_dir))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(EmbeddedDbError::CommandFailed {
                command: line,
                output: text.trim().to_owned(),
            })
        }
    }

    /// Creates the cluster if it does not exist yet; returns whether it was created.
    ///
    /// # Errors
    /// The folder cannot be created or `initdb` fails.
    pub fn ensure_initialized(&self) -> Result<bool> {
        if self.data_dir().join("PG_VERSION").exists() {
            return Ok(false);
        }
        fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        self.hand_over(&self.root)?;
        let data = self.data_dir();
        if data.exists() {
            // A previous initdb was interrupted: start over.
            fs::remove_dir_all(&data).map_err(io_error(&data))?;
        }
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ]);
        self.run(initdb)?;
        let conf = data.join("postgresql.conf");
        let mut settings = fs::read_to_string(&conf).map_err(io_error(&conf))?;
        settings.push_str(
            "\n# sensor-etl embedded cluster\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\nmax_connections = 50\nshared_buffers = 128MB\n\
             max_wal_size = 2GB\n",
        );
        fs::write(&conf, settings).map_err(io_error(&conf))?;
        Ok(true)
    }

    /// Gives `path` to the user the server runs as (when this process is root).
    fn hand_over(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            nix::unistd::chown(path, Some(uid), Some(gid)).map_err(|errno| {
                EmbeddedDbError::Io {
                    path: path.to_path_buf(),
                    source: errno.into(),
                }
            })?;
        }
        Ok(())
    }

    /// Attaches to the server when it is running, without starting or creating anything.
    ///
    /// # Errors
    /// `NotRunning` when no server runs on this cluster.
    pub fn attach(&mut self) -> Result<()> {
        match self.running_port() {
            Some(port) => {
                self.port = port;
                Ok(())
            }
            None => Err(EmbeddedDbError::NotRunning {
                root: self.root.clone(),
            }),
        }
    }

    fn running_port(&self) -> Option<u16> {
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("status")
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        let pid_file = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn choose_port(&self) -> Result<u16> {
        let remembered = fs::read_to_string(self.port_file())
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .filter(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok());
        let port = match remembered {
            Some(port) => port,
            None => free_port().map_err(io_error(&self.root))?,
        };
        fs::write(self.port_file(), port.to_string()).map_err(io_error(&self.port_file()))?;
        Ok(port)
    }

    /// Initializes if needed and starts the server as a daemon that outlives this process;
    /// reuses a server that is already running.
    ///
    /// # Errors
    /// `initdb`, `pg_ctl` or the readiness wait failed.
    pub fn start(&mut self) -> Result<()> {
        self.ensure_initialized()?;
        if let Some(port) = self.running_port() {
            self.port = port;
            return Ok(());
        }
        self.port = self.choose_port()?;
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start");
        self.run(pg_ctl)?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// Starts a server that is killed when this process exits (for tests): it runs in the
    /// foreground under a thread that lives as long as the process.
    ///
    /// # Errors
    /// `initdb` or the readiness wait failed.
    pub fn start_attached(&mut self, extra_settings: &[&str]) -> Result<()> {
        self.ensure_initialized()?;
        self.port = free_port().map_err(io_error(&self.root))?;
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string());
        for setting in extra_settings {
            postgres.arg("-c").arg(setting);
        }
        let log = fs::File::create(self.log_path()).map_err(io_error(&self.log_path()))?;
        let log_err = log.try_clone().map_err(io_error(&self.log_path()))?;
        postgres.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // SAFETY: only an async-signal-safe prctl(2) call runs between fork and exec.
        unsafe {
            postgres.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)
                    .map_err(std::io::Error::from)
            });
        }
        let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
        // The parent-death signal fires when the spawning *thread* exits, so the server is
        // spawned by a thread that never does.
        std::thread::Builder::new()
            .name("embedded-postgres".into())
            .spawn(move || match postgres.spawn() {
                Ok(mut child) => {
                    let _ = spawned_tx.send(Ok(()));
                    let _ = child.wait();
                    loop {
                        std::thread::park();
                    }
                }
                Err(error) => {
                    let _ = spawned_tx.send(Err(error));
                }
            })
            .map_err(io_error(&self.root))?;
        spawned_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("server thread ended")))
            .map_err(io_error(&self.bin_dir))?;
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < limit {
            let ready = self
                .command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-q",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(EmbeddedDbError::NotReady {
            seconds: limit.as_secs(),
            log: self.log_path(),
        })
    }

    /// Stops a daemon started by `start` (fast shutdown: sessions are rolled back).
    ///
    /// # Errors
    /// `pg_ctl stop` failed.
    pub fn stop(&self) -> Result<()> {
        if !self.data_dir().join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"]);
        self.run(pg_ctl).map(|_| ())
    }
}

/// Whether `uid`/`gid` may enter every existing folder on the way to `path`.
fn reachable_by(path: &Path, uid: Uid, gid: Gid) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().skip(1).all(|dir| match fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.mode();
            if meta.uid() == uid.as_raw() {
                mode & 0o100 != 0
            } else if meta.gid() == gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        }
        // Folders still to be created are created reachable (mode 0755).
        Err(_) => true,
    })
}

/// `/var/tmp/sensor-etl-postgres/<hash of the project folder>`.
fn fallback_root(root: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    let base = PathBuf::from("/var/tmp/sensor-etl-postgres");
    let _ = fs::create_dir_all(&base);
    base.join(&hex::encode(digest)[..16])
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// `SENSOR_ETL_PG_BIN`, then the folder of `pg_ctl` on `PATH` (when `initdb` and `postgres`
/// are beside it), then the newest `/usr/lib/postgresql/<version>/bin`.
fn find_server_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "pg_isready"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os("SENSOR_ETL_PG_BIN").map(PathBuf::from) {
        return complete(&dir).then_some(dir);
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find_map(|dir| {
            let pg_ctl = fs::canonicalize(dir.join("pg_ctl")).ok()?;
            let real_dir = pg_ctl.parent()?.to_path_buf();
            complete(&real_dir).then_some(real_dir)
        })
    });
    if from_path.is_some() {
        return from_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
