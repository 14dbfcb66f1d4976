//! The suite's one HTTP client and its one way to start `sensor-etl serve`. Requests go through
//! reqwest (a real client over real sockets), each on a thread of its own with its own
//! runtime, so that synchronous test code and async tests call it alike. Redirects are not
//! followed; a request with a body and no `Content-Type` says
//! `application/x-www-form-urlencoded`, as common clients do.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use super::{free_local_addr, http_get, sensor_etl_in, wait_until, Workspace};

/// An answer: status, the head as `HTTP/1.1 <status>` and one `name: value` line per header
/// (names in lower case), and the body.
pub type Answer = (u16, String, Vec<u8>);

/// Sends one request; `Err` when no answer came (the connection failed or was closed).
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let url = format!("http://{addr}{path}");
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header is `Name: value`");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    if body.is_some()
        && !pairs
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        pairs.push((
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ));
    }
    let body = body.map(<[u8]>::to_vec);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let mut builder = client.request(method, &url);
            for (name, value) in &pairs {
                builder = builder.header(name, value);
            }
            if let Some(body) = body {
                builder = builder.body(body);
            }
            let response = builder.send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = response.status().as_u16();
            let mut head = format!("HTTP/1.1 {status}\r\n");
            for (name, value) in response.headers() {
                head.push_str(&format!(
                    "{name}: {}\r\n",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            let bytes = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            Ok((status, head, bytes.to_vec()))
        })
    })
    .join()
    .expect("the request thread does not panic")
}

/// A POST: (status, head, body as JSON, or null when it is not JSON).
pub fn post(addr: SocketAddr, path: &str, headers: &[&str], body: &[u8]) -> (u16, String, Value) {
    let (status, head, bytes) = request("POST", addr, path, headers, Some(body))
        .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"));
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, head, json)
}

/// A POST that may get no answer: its status, or `None` when the connection ended without one.
pub fn post_maybe(addr: SocketAddr, path: &str, headers: &[&str], body: &[u8]) -> Option<u16> {
    request("POST", addr, path, headers, Some(body))
        .ok()
        .map(|(status, _, _)| status)
}

/// A GET: (status, head, body).
pub fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> Answer {
    request("GET", addr, path, headers, None)
        .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"))
}

/// A GET whose answer is JSON: (status, body).
pub fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = get(addr, path, &[]);
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// `sensor-etl serve` in `workspace` against `url` on a free address, not started yet.
pub fn serve_command(workspace: &Workspace, url: &str) -> (Command, SocketAddr) {
    let addr = free_local_addr();
    let mut command = sensor_etl_in(workspace);
    command.args([
        "serve",
        "--database-url",
        url,
        "--http-addr",
        &addr.to_string(),
    ]);
    (command, addr)
}

/// Waits at most `limit` until the server at `addr` is ready: the database answered and
/// deliveries are taken.
pub async fn until_ready(addr: SocketAddr, limit: Duration) {
    wait_until("the server is ready", limit, || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/readyz").await.1 == "ready\n"
    })
    .await;
}

/// `sensor-etl serve` on a free address with `env` set; waits until it is ready.
pub async fn serve(workspace: &Workspace, url: &str, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let (mut command, addr) = serve_command(workspace, url);
    command.env("RUST_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    until_ready(addr, Duration::from_secs(30)).await;
    (child, addr)
}
