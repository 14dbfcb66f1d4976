//! Test harness: a private PostgreSQL cluster per test process (the same code that gives
//! `sensor-etl` its embedded default database), one fresh database per test, and helpers to
//! build a pipeline on a temporary folder.
//!
//! `TEST_DATABASE_URL` points the tests at an existing server instead; each test still gets its
//! own database there, and the databases are dropped when the test process exits. A plain
//! `DATABASE_URL` is ignored: it names the user's database, not one for tests.

#![allow(dead_code)]

#[cfg(feature = "failpoints")]
pub mod faulted;
pub mod fixtures;
pub mod http;
pub mod workers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use sensor_etl::config::{RawConfig, Settings};
use sensor_etl::database::create_database;
use sensor_etl::database::embedded::EmbeddedCluster;
use sensor_etl::pipeline::PipelineCtx;
use sensor_etl::store::Store;

static ADMIN_URL: OnceLock<String> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn admin_url() -> &'static str {
    ADMIN_URL.get_or_init(|| {
        if let Some(url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            drop_test_databases_at_exit();
            return url;
        }
        let base = std::env::temp_dir().join("sensor-etl-tests");
        std::fs::create_dir_all(&base).unwrap();
        remove_stale_clusters(&base);
        let root = base.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        set_mode(&base, 0o755);
        set_mode(&root, 0o755);
        let mut cluster = EmbeddedCluster::new(&root.join("pg"))
            .expect("PostgreSQL server programs are installed");
        cluster
            .start_attached(&[
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "max_connections=200",
            ])
            .expect("test cluster starts");
        cluster.url("postgres")
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Removes clusters left by test processes that no longer run.
fn remove_stale_clusters(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Databases this process created on an external server (`TEST_DATABASE_URL`).
static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Registers, once, a handler that drops this process's databases when it exits (the test
/// runner ends with `exit`, which runs the handlers).
fn drop_test_databases_at_exit() {
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> i32;
    }
    extern "C" fn drop_all() {
        let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(admin) = ADMIN_URL.get().cloned() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                for name in names {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
    // SAFETY: `atexit` from the C library, given a function that never unwinds across it.
    unsafe {
        atexit(drop_all);
    }
}

/// A fresh, empty database of its own.
pub async fn fresh_database() -> String {
    let admin = admin_url().to_owned();
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    create_database(&admin, &name)
        .await
        .expect("create test database");
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.clone());
    let mut config: tokio_postgres::Config = admin.parse().unwrap();
    config.dbname(&name);
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    match config.get_password() {
        Some(password) => format!(
            "postgres://{user}:{}@{host}:{port}/{name}",
            String::from_utf8_lossy(password)
        ),
        None => format!("postgres://{user}@{host}:{port}/{name}"),
    }
}

/// A temporary working folder with `data/`, `quarantine/`, `processed/`, `logs/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Settings whose folders live in this workspace, with `edit` applied to the raw config.
    pub fn settings(&self, url: &str, edit: impl FnOnce(&mut RawConfig)) -> Settings {
        let mut raw = RawConfig {
            database_url: Some(url.to_owned()),
            data_dir: self.path("data"),
            quarantine_dir: self.path("quarantine"),
            processed_dir: self.path("processed"),
            logs_dir: self.path("logs"),
            state_dir: self.path(".sensor-etl"),
            settle_ms: 300,
            rescan_interval_ms: 100,
            ..RawConfig::default()
        };
        raw.retry.initial_delay_ms = 50;
        raw.retry.max_delay_ms = 500;
        edit(&mut raw);
        Settings::from_raw(raw).unwrap()
    }
}

/// A database, a workspace and a pipeline on them.
pub struct Harness {
    pub url: String,
    pub workspace: Workspace,
    pub ctx: PipelineCtx,
    pub client: tokio_postgres::Client,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    pub async fn with_config(edit: impl FnOnce(&mut RawConfig)) -> Self {
        let url = fresh_database().await;
        let workspace = Workspace::new();
        let settings = Arc::new(workspace.settings(&url, edit));
        let store = Store::connect(&url, &settings)
            .await
            .expect("store connects and migrates");
        let client = connect(&url).await;
        Self {
            url,
            workspace,
            ctx: PipelineCtx { settings, store },
            client,
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Writes `text` to `path` and loads it where it is (as `ingest` does).
    pub async fn load(&self, path: &Path, text: &str) -> sensor_etl::pipeline::DeliveryReport {
        fixtures::write_file(path, text);
        sensor_etl::pipeline::process(
            &self.ctx,
            &sensor_etl::delivery::Delivery::input_file(
                path,
                sensor_etl::delivery::Disposition::LeaveInPlace,
            ),
        )
        .await
        .unwrap()
    }
}

/// A connection that, like sensor-etl's own, sees its tables (schema `sensor_etl`) beside the
/// public views.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.options(sensor_etl::store::SEARCH_PATH_OPTION);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The repository's `../shared/realdata`, when present.
pub fn realdata_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/realdata");
    dir.is_dir().then_some(dir)
}

/// Fixture path under `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// Non-blank lines after the first: an independent count of a file's data rows.
pub fn data_rows(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split(|b| *b == b'\n')
        .skip(1)
        .filter(|line| line.iter().any(|b| !matches!(b, b'\r')))
        .count() as u64
}

/// Copies `source` into `dir` under `name`, via a temporary name and a rename (as a careful
/// writer delivers files).
pub fn deliver(source: &Path, dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(source, &temp).unwrap();
    let target = dir.join(name);
    std::fs::rename(&temp, &target).unwrap();
    target
}

/// A cluster of its own that a test may stop and start again (database outages). It runs as a
/// daemon, stopped on drop.
pub struct RestartableCluster {
    pub cluster: EmbeddedCluster,
    _dir: tempfile::TempDir,
}

impl RestartableCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let mut cluster = EmbeddedCluster::new(&dir.path().join("pg")).unwrap();
        cluster.start().unwrap();
        Self { cluster, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.cluster.url("postgres")
    }

    pub fn stop(&self) {
        self.cluster.stop().unwrap();
    }

    pub fn restart(&mut self) {
        self.cluster.start().unwrap();
    }
}

impl Drop for RestartableCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}

/// A minimal HTTP/1.1 GET: (status code, body); status 0 and no body when the connection
/// failed or was reset (a server starting or stopping), so that probes try again.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let Ok(response) = exchange.await else {
        return (0, String::new());
    };
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits for a child process to exit, at most `limit`; a child still running then is killed
/// and the test fails (a hang fails the suite instead of stalling it).
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Polls `condition` every 50 ms until it holds, at most `limit`; fails the test with `what`
/// otherwise.
pub async fn wait_until<F, Fut>(what: &str, limit: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Makes a child process die with the test that started it, so that a failed test leaves no
/// worker running (one would hold the test runner's output open).
pub fn die_with_test(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: `prctl` is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        })
    }
}

/// A free loopback address for a child's HTTP server.
pub fn free_local_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// SIGTERM to a child, then its exit code (within 30 s).
pub fn terminate_child(child: &mut std::process::Child) -> Option<i32> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_exit(child, std::time::Duration::from_secs(30)).code()
}

/// The binary in `workspace`, with no database, fault points or inbox from the environment;
/// it dies with the test.
pub fn sensor_etl_in(workspace: &Workspace) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sensor-etl"));
    die_with_test(&mut command)
        .current_dir(workspace.dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("FAILPOINTS")
        .env_remove("SENSOR_ETL_DATA_DIR");
    command
}

/// Everything written under a logs folder (every file, concatenated).
pub fn log_text(dir: &Path) -> String {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect()
}

/// Files in the HTTP spool of a workspace's server (request bodies being received or loaded).
pub fn spool_files(workspace: &Workspace) -> usize {
    walkdir::WalkDir::new(workspace.path(".sensor-etl/spool"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .count()
}

/// A file system of `bytes` mounted on `dir` (a tmpfs), unmounted on drop: a disk that fills up.
pub struct SmallDisk {
    dir: std::path::PathBuf,
    mounted: std::cell::Cell<bool>,
}

impl SmallDisk {
    pub fn mount(dir: &std::path::Path, bytes: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0777"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a small tmpfs needs root");
        Self {
            dir: dir.to_path_buf(),
            mounted: std::cell::Cell::new(true),
        }
    }

    pub fn unmount(&self) {
        if self.mounted.replace(false) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.unmount();
    }
}
