//! Helpers of the fault-point tests (`tests/faults`): a child whose stderr is watched for
//! the fault point it reached, a worker holding one file, counts, and `serve` under fault
//! points.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::workers::{deliver, make_files, worker_command};
use super::{connect, fresh_database, wait_exit, wait_until, Workspace};

pub const LIMIT: Duration = Duration::from_secs(60);

/// A child whose stderr is collected as it is written.
pub struct Watched {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Watched {
    pub fn spawn(mut command: Command, failpoints: &str) -> Self {
        let mut child = command
            .env("FAILPOINTS", failpoints)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the binary says it reached `point`.
    pub async fn reached(&self, point: &str) {
        let marker = format!("fault point {point} reached");
        wait_until(&format!("{point} is reached"), LIMIT, || {
            let seen = self.stderr().contains(&marker);
            async move { seen }
        })
        .await;
    }

    /// Waits for the exit; returns the status and everything written to stderr.
    pub fn exit(mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child, LIMIT);
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

impl Drop for Watched {
    /// A test that failed shows what the child said: the reason is usually there.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "stderr of the child {}:\n{}",
                self.child.id(),
                self.stderr()
            );
        }
    }
}

/// A worker that took one delivered file and holds it at its first chunk for `hold_ms`.
pub struct Held {
    pub url: String,
    pub workspace: Workspace,
    pub inbox: std::path::PathBuf,
    /// The held file, in the inbox.
    pub file: std::path::PathBuf,
    pub running: Watched,
}

/// Delivers one file to a worker (with `env` on top of the usual settings) and waits until it
/// holds the file at its first chunk.
pub async fn hold_one_file(hold_ms: u64, env: &[(&str, &str)]) -> Held {
    hold_one_file_at("pipeline::chunk-read", hold_ms, env).await
}

/// [`hold_one_file`], held at the fault point `point` instead.
pub async fn hold_one_file_at(point: &str, hold_ms: u64, env: &[(&str, &str)]) -> Held {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 1);
    let mut command = worker_command(&workspace, &url);
    for (key, value) in env {
        command.env(key, value);
    }
    let running = Watched::spawn(command, &format!("{point}=1*return(sleep:{hold_ms})"));
    deliver(&staged[0], &inbox);
    running.reached(point).await;
    let file = inbox.join(staged[0].file_name().unwrap());
    Held {
        url,
        workspace,
        inbox,
        file,
        running,
    }
}

/// The process died on the spot at `point`, as under `kill -9`.
pub fn assert_crashed_at(status: ExitStatus, stderr: &str, point: &str) {
    assert!(
        stderr.contains(&format!("fault point {point} reached")),
        "{point} was not reached:\n{stderr}"
    );
    assert_eq!(status.signal(), Some(6), "aborted at {point}:\n{stderr}");
}

pub async fn count(url: &str, sql: &str) -> i64 {
    connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until the database holds at least `files` ledger rows.
pub async fn committed_at_least(url: &str, files: i64) {
    let client = connect(url).await;
    wait_until(&format!("{files} files are committed"), LIMIT, || {
        let client = &client;
        async move {
            client
                .query_one("SELECT count(*) FROM v_files", &[])
                .await
                .map(|row| row.get::<_, i64>(0) >= files)
                .unwrap_or(false)
        }
    })
    .await;
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A fresh database and a workspace with its inbox made.
pub async fn with_inbox() -> (String, Workspace, std::path::PathBuf) {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    (url, workspace, inbox)
}

/// Lines of `text` that mention `name` and `what`.
pub fn lines_with(text: &str, name: &str, what: &str) -> usize {
    text.lines()
        .filter(|l| l.contains(name) && l.contains(what))
        .count()
}

/// A CSV POST to `/v1/ingest` that may get no answer: the status, or `None` when the
/// connection ended without one.
pub fn post_maybe(addr: std::net::SocketAddr, body: &[u8]) -> Option<u16> {
    crate::support::http::post_maybe(addr, "/v1/ingest", &["Content-Type: text/csv"], body)
}

/// `sensor-etl serve` in `workspace` with fault points, once it takes requests.
pub async fn serve_watched(
    workspace: &Workspace,
    url: &str,
    failpoints: &str,
) -> (Watched, std::net::SocketAddr) {
    let (mut command, addr) = crate::support::http::serve_command(workspace, url);
    command.env("SENSOR_ETL_CHUNK_ROWS", "5000");
    let server = Watched::spawn(command, failpoints);
    crate::support::http::until_ready(addr, LIMIT).await;
    (server, addr)
}
