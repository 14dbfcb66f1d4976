//! `POST /v1/ingest` as a client meets it, with a real HTTP client against `sensor-etl serve`: each body
//! type and encoding, the receipt and its line numbers, duplicates, every status code, a
//! compression bomb, tokens (none, wrong, lacking the scope, right; never logged), the
//! loopback rule, a database that is down, and durability of an acknowledged body.

use std::io::Write;
use std::time::Duration;

use crate::support::fixtures::body_of;
use crate::support::http::{post, serve};
use crate::support::{connect, fresh_database, terminate_child, Workspace};

const CSV: &str = "sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n\
                   21;DHT22;210;50.0;8.0;2021-03-01T00:00:00;20.5;50\n\
                   21;DHT22;210;50.0;8.0;2021-03-01T00:01:00;abc;50\n\
                   21;DHT22;210;50.0;8.0;2021-03-01T00:02:00;20.7;50\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_each_type_and_encoding_load_with_a_receipt_after_the_commit() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let csv = &["Content-Type: text/csv"];

    let (status, _, receipt) = post(addr, "/v1/ingest?name=gw_dht22.csv", csv, CSV.as_bytes());
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["status"], "partially_loaded");
    assert_eq!(
        (
            receipt["rows_read"].as_u64(),
            receipt["rows_loaded"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(receipt["rejects"][0]["line"], 3);
    assert_eq!(receipt["rejects"][0]["code"], "not_a_number");
    assert_eq!(receipt["rejects_truncated"], false);
    // Durable before the answer: the rows are there.
    let client = connect(&url).await;
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM v_readings WHERE sensor_id = 21", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded, 4);
    let origin: String = client
        .query_one(
            "SELECT origin FROM file_deliveries ORDER BY delivery_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(origin, "http:127.0.0.1");

    // The same body again: a duplicate, nothing stored twice.
    let (status, _, receipt) = post(addr, "/v1/ingest", csv, CSV.as_bytes());
    assert_eq!(
        (status, receipt["status"].as_str()),
        (200, Some("duplicate"))
    );

    // JSON: lines are array positions; numbers as numbers or strings.
    let json = r#"[{"sensor_id": 22, "sensor_type": "DHT22", "timestamp": "2021-03-01T00:00:00", "temperature": 19.5, "humidity": "40"},
                   {"sensor_id": 22, "sensor_type": "DHT22", "timestamp": "2021-03-01T00:01:00", "temperature": 99, "humidity": 40}]"#;
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: application/json"],
        json.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rejects"][0]["line"], 2, "{receipt}");
    assert_eq!(receipt["rejects"][0]["code"], "out_of_range");
    let line: i64 = client
        .query_one(
            "SELECT line::int8 FROM v_readings WHERE sensor_id = 22 ORDER BY line LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(line, 1, "the first element is line 1");

    // NDJSON with a blank line: physical lines.
    let ndjson = "{\"sensor_id\": 23, \"sensor_type\": \"DHT22\", \"timestamp\": \"2021-03-01T00:00:00\", \"temperature\": 1, \"humidity\": 2}\n\n\
                  {\"sensor_id\": 23, \"sensor_type\": \"DHT22\", \"timestamp\": \"bad\", \"temperature\": 1, \"humidity\": 2}\n";
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: application/x-ndjson"],
        ndjson.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rejects"][0]["line"], 3, "{receipt}");

    // gzip and zstd bodies.
    let other = CSV.replace(";21;", ";24;").replace("21;DHT22", "24;DHT22");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(other.as_bytes()).unwrap();
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: text/csv", "Content-Encoding: gzip"],
        &gzip.finish().unwrap(),
    );
    assert_eq!(
        (status, receipt["rows_loaded"].as_u64()),
        (200, Some(2)),
        "{receipt}"
    );
    let third = CSV.replace("21;DHT22", "25;DHT22");
    let zstd = zstd::encode_all(third.as_bytes(), 3).unwrap();
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: text/csv", "Content-Encoding: zstd"],
        &zstd,
    );
    assert_eq!(
        (status, receipt["rows_loaded"].as_u64()),
        (200, Some(2)),
        "{receipt}"
    );
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_code_and_a_json_reason() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[("SENSOR_ETL_HTTP__MAX_BODY_BYTES", "1048576")],
    )
    .await;
    let csv = &["Content-Type: text/csv"];
    let expect =
        |(status, head, body): (u16, String, serde_json::Value), code: u16, error: &str| {
            assert_eq!(status, code, "{head}{body}");
            assert_eq!(body["error"]["code"], error, "{body}");
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        };
    // 400: a header that matches no sensor type; malformed JSON.
    expect(
        post(addr, "/v1/ingest", csv, b"what;ever\n1;2\n"),
        400,
        "missing_column",
    );
    // The same body again answers the same, as a duplicate.
    let (status, _, receipt) = post(addr, "/v1/ingest", csv, b"what;ever\n1;2\n");
    assert_eq!(status, 400);
    assert_eq!(receipt["status"], "duplicate");
    assert_eq!(receipt["error"]["code"], "missing_column");
    expect(
        post(
            addr,
            "/v1/ingest",
            &["Content-Type: application/json"],
            b"{\"a\": ",
        ),
        400,
        "malformed_body",
    );
    // 415: type and encoding.
    expect(
        post(
            addr,
            "/v1/ingest",
            &["Content-Type: application/xml"],
            b"<a/>",
        ),
        415,
        "unsupported_media_type",
    );
    expect(
        post(
            addr,
            "/v1/ingest",
            &["Content-Type: text/csv", "Content-Encoding: br"],
            b"x",
        ),
        415,
        "unsupported_encoding",
    );
    // 413: a compression bomb, 64 MiB of zeros in about 64 KiB, cut at 1 MiB.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'0'; 1024 * 1024];
    for _ in 0..64 {
        gzip.write_all(&zeros).unwrap();
    }
    let bomb = gzip.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024);
    expect(
        post(
            addr,
            "/v1/ingest",
            &["Content-Type: text/csv", "Content-Encoding: gzip"],
            &bomb,
        ),
        413,
        "body_too_large",
    );
    // 422: nothing loadable, with the receipt.
    let bad = "sensor_id;sensor_type;timestamp;temperature;humidity\n31;DHT22;2021-03-01T00:00:00;abc;50\n";
    let (status, _, receipt) = post(addr, "/v1/ingest", csv, bad.as_bytes());
    assert_eq!(status, 422, "{receipt}");
    assert_eq!(receipt["status"], "rejected");
    assert_eq!(receipt["rejects"][0]["code"], "not_a_number", "{receipt}");
    assert_eq!(receipt["error"]["code"], "no_valid_rows", "{receipt}");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_write_and_are_never_logged() {
    use sha2::Digest;
    const WRITER: &str = "writer-token-7f3a9c";
    const READER: &str = "reader-token-1b2c3d";
    let url = fresh_database().await;
    let workspace = Workspace::new();
    std::fs::write(
        workspace.path("sensor-etl.toml"),
        format!(
            "[[http.tokens]]\nname = \"gateway-1\"\nsha256 = \"{}\"\nscopes = [\"write\", \"read\"]\n\n\
             [[http.tokens]]\nname = \"dashboard\"\nenv = \"READER_TOKEN\"\nscopes = [\"read\"]\n",
            hex::encode(sha2::Sha256::digest(WRITER.as_bytes()))
        ),
    )
    .unwrap();
    let (mut server, addr) = serve(&workspace, &url, &[("READER_TOKEN", READER)]).await;
    let csv = "Content-Type: text/csv";
    let (status, head, body) = post(addr, "/v1/ingest", &[csv], CSV.as_bytes());
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, body) = post(
        addr,
        "/v1/ingest",
        &[csv, "Authorization: Bearer wrong"],
        CSV.as_bytes(),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let reader = format!("Authorization: Bearer {READER}");
    let (status, _, body) = post(addr, "/v1/ingest", &[csv, &reader], CSV.as_bytes());
    assert_eq!(status, 403, "a read token may not write: {body}");
    let writer = format!("Authorization: Bearer {WRITER}");
    let (status, _, body) = post(addr, "/v1/ingest", &[csv, &writer], CSV.as_bytes());
    assert_eq!(status, 200, "{body}");
    let client = connect(&url).await;
    let origin: String = client
        .query_one("SELECT origin FROM file_deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origin, "http:gateway-1", "the client is the token's name");
    assert_eq!(terminate_child(&mut server), Some(0));
    // Neither token appears in any log.
    for entry in walkdir::WalkDir::new(workspace.path("logs"))
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_file() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            assert!(
                !text.contains(WRITER) && !text.contains(READER),
                "{:?}",
                entry.path()
            );
        }
    }
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused() {
    let workspace = Workspace::new();
    let output = crate::support::sensor_etl_in(&workspace)
        .args([
            "serve",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "--http-addr",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[[http.tokens]]"),
        "says how to add a token: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_an_acknowledged_body_survives_kill_9() {
    let mut cluster = crate::support::RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[
            ("SENSOR_ETL_HTTP__DB_WAIT_MS", "2000"),
            ("SENSOR_ETL_RETRY__INITIAL_DELAY_MS", "100"),
        ],
    )
    .await;
    let csv = &["Content-Type: text/csv"];
    let (status, _, body) = post(addr, "/v1/ingest", csv, CSV.as_bytes());
    assert_eq!(status, 200, "{body}");
    // kill -9 right after the answer: the rows are there.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    crate::support::wait_exit(&mut server, Duration::from_secs(10));
    let loaded: i64 = connect(&url)
        .await
        .query_one("SELECT count(*) FROM v_readings WHERE sensor_id = 21", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded, 4, "acknowledged means durable");
    // The database goes away: a request waits its bounded time, then 503 with Retry-After.
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[
            ("SENSOR_ETL_HTTP__DB_WAIT_MS", "2000"),
            ("SENSOR_ETL_RETRY__INITIAL_DELAY_MS", "100"),
        ],
    )
    .await;
    cluster.stop();
    // Small bodies go to the push journal (tests/journal.rs); one over 1 MiB is not kept there.
    let mut other = String::from("sensor_id;sensor_type;timestamp;temperature;humidity\n");
    let mut minute = 0u32;
    while other.len() < 2 * 1024 * 1024 {
        other.push_str(&format!(
            "26;DHT22;2021-03-{:02}T{:02}:{:02}:00;20.5;50\n",
            1 + minute / 1440,
            minute / 60 % 24,
            minute % 60
        ));
        minute += 1;
    }
    let started = std::time::Instant::now();
    let (status, head, body) = post(addr, "/v1/ingest", csv, other.as_bytes());
    assert_eq!(status, 503, "{body}");
    assert!(head.to_lowercase().contains("retry-after:"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a bounded wait"
    );
    cluster.restart();
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_bound_requests_get_503_and_memory_stays_bounded() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[
            ("SENSOR_ETL_HTTP__MAX_BODY_BYTES", "1048576"),
            ("SENSOR_ETL_HTTP__MAX_IN_FLIGHT_BYTES", "1572864"),
            // Longer than the hold below: the held body is answered after its commit, not
            // from the push journal.
            ("SENSOR_ETL_HTTP__DB_WAIT_MS", "10000"),
            // The first body is held 3 s inside the pipeline.
            ("FAILPOINTS", "pipeline::chunk-read=1*return(sleep:3000)"),
        ],
    )
    .await;
    let held = std::thread::spawn(move || {
        post(
            addr,
            "/v1/ingest?name=a_dht22.csv",
            &["Content-Type: text/csv"],
            &body_of(41, 700_000),
        )
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, head, body) = post(
        addr,
        "/v1/ingest?name=b_dht22.csv",
        &["Content-Type: text/csv"],
        &body_of(42, 900_000),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "too_busy");
    assert!(head.to_lowercase().contains("retry-after:"), "{head}");
    let (status, _, body) = held.join().unwrap();
    assert_eq!(status, 200, "{body}");
    // Once the first is done, the second goes through.
    let (status, _, body) = post(
        addr,
        "/v1/ingest?name=b_dht22.csv",
        &["Content-Type: text/csv"],
        &body_of(42, 900_000),
    );
    assert_eq!(status, 200, "{body}");
    let metrics = crate::support::http_get(addr, "/metrics").await.1;
    assert!(
        metrics.contains("sensor_etl_http_requests_total{status=\"503\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sensor_etl_http_in_flight_bytes 0"),
        "{metrics}"
    );
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_deliveries_than_connections_all_commit() {
    // Keyed bodies are each their own transaction; every one brings positions the store has
    // not seen, so each registers dictionary entries while its transaction holds a connection.
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[("SENSOR_ETL_HTTP__DATABASE_WAIT_SECS", "8")],
    )
    .await;
    let clients: Vec<_> = (0..24u32)
        .map(|n| {
            std::thread::spawn(move || {
                let mut body = String::from("sensor_id;sensor_type;lat;lon;timestamp;P1;P2\n");
                for row in 0..50u32 {
                    body.push_str(&format!(
                        "{};SDS011;{}.5;8.{n:03};2021-05-01T00:{:02}:{:02};5.0;2.0\n",
                        700 + n,
                        40 + n,
                        row / 60,
                        row % 60
                    ));
                }
                post(
                    addr,
                    "/v1/ingest",
                    &[
                        "Content-Type: text/csv",
                        &format!("Idempotency-Key: body-{n}"),
                    ],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    for client in clients {
        let (status, _, body) = client.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let stored: i64 = connect(&url)
        .await
        .query_one("SELECT count(*) FROM v_readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 24 * 50 * 2);
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_json_and_ndjson_bodies_stream_with_their_own_line_numbers() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let object = |sensor: u32, n: u32, temperature: &str| {
        format!(
            r#"{{"sensor_id": {sensor}, "sensor_type": "DHT22", "timestamp": "2021-02-{:02}T{:02}:{:02}:{:02}", "temperature": {temperature}, "humidity": 50}}"#,
            1 + n / 86_400,
            (n / 3600) % 24,
            (n / 60) % 60,
            n % 60
        )
    };
    // Over 1 MiB each: spooled, then rendered from the spool file.
    let rows = 15_000u32;
    let mut ndjson = String::new();
    for n in 0..rows {
        let temperature = if n == 9_999 { "\"warm\"" } else { "20.5" };
        ndjson.push_str(&object(61, n, temperature));
        ndjson.push('\n');
        if n == 5_000 {
            ndjson.push('\n');
        }
    }
    assert!(ndjson.len() > 1_100_000);
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: application/x-ndjson"],
        ndjson.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rows_read"], rows);
    assert_eq!(receipt["rows_rejected"], 1);
    // Line 10,000 of the objects, after one blank line: physical line 10,001.
    assert_eq!(receipt["rejects"][0]["line"], 10_001, "{receipt}");

    let elements: Vec<String> = (0..rows)
        .map(|n| object(62, n, if n == 12_344 { "999" } else { "21.5" }))
        .collect();
    let json = format!("[{}]", elements.join(",\n"));
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: application/json"],
        json.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rows_rejected"], 1);
    assert_eq!(
        receipt["rejects"][0]["line"], 12_345,
        "position in the array: {receipt}"
    );
    let stored: i64 = connect(&url)
        .await
        .query_one(
            "SELECT count(*) FROM v_readings WHERE sensor_id IN (61, 62)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, i64::from(rows - 1) * 2 * 2);
    // A body that is not JSON after its first megabyte is still a 400.
    let broken = format!("{}{{broken", &ndjson[..1_200_000]);
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: application/x-ndjson"],
        broken.as_bytes(),
    );
    assert_eq!(status, 400, "{receipt}");
    assert_eq!(terminate_child(&mut server), Some(0));
    let left = crate::support::spool_files(&workspace);
    assert_eq!(
        left, 0,
        "spool and rendering files are removed after the answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_gets_the_same_answer_whatever_its_size() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let json = &["Content-Type: application/json"];
    let ndjson = &["Content-Type: application/x-ndjson"];
    let object = |sensor: u32, n: u32| {
        format!(
            r#"{{"sensor_id": {sensor}, "sensor_type": "DHT22", "timestamp": "2021-04-{:02}T{:02}:{:02}:{:02}", "temperature": 20.5, "humidity": 50}}"#,
            1 + n / 86_400,
            (n / 3600) % 24,
            (n / 60) % 60,
            n % 60
        )
    };
    let bom = "\u{feff}";
    // Small (held in memory) and over 1 MiB (spooled and rendered from disk), each opened by a
    // byte order mark as some exporters write it: both load.
    for (sensor, rows) in [(71u32, 3u32), (72, 15_000)] {
        let elements: Vec<String> = (0..rows).map(|n| object(sensor, n)).collect();
        let body = format!("{bom}[{}]", elements.join(",\n"));
        let (status, _, receipt) = post(addr, "/v1/ingest", json, body.as_bytes());
        assert_eq!(status, 200, "{rows} objects: {receipt}");
        assert_eq!(receipt["rows_loaded"], rows, "{receipt}");
        let lines: Vec<String> = (0..rows).map(|n| object(sensor + 10, n)).collect();
        let body = format!("{bom}{}\n", lines.join("\n"));
        let (status, _, receipt) = post(addr, "/v1/ingest", ndjson, body.as_bytes());
        assert_eq!(status, 200, "{rows} lines: {receipt}");
        assert_eq!(receipt["rows_loaded"], rows, "{receipt}");
    }
    let stored: i64 = connect(&url)
        .await
        .query_one(
            "SELECT count(*) FROM v_readings WHERE sensor_id IN (71, 72, 81, 82)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, (3 + 15_000) * 2 * 2);

    // Bodies without objects, and JSON that is not objects: the same status and reason small
    // or large.
    let padding = " ".repeat(1_200_000);
    // Objects that each name a key of their own: refused at the 1,001st distinct key, not
    // rendered into a table as wide as the body is long.
    let scattered = |objects: usize| {
        let objects: Vec<String> = (0..objects)
            .map(|i| {
                format!(r#"{{"sensor_id": 1, "timestamp": "2021-04-01T00:00:00", "k{i}": 1}}"#)
            })
            .collect();
        format!("[{}]", objects.join(","))
    };
    for (headers, small, large) in [
        (json, scattered(1_000), scattered(20_000)),
        (json, "[]".to_owned(), format!("[{padding}]")),
        (
            ndjson,
            format!("{bom}{bom}\n\n"),
            format!("{bom}{bom}\n{padding}\n"),
        ),
        (ndjson, "\n\n".to_owned(), format!("{padding}\n\n")),
        (json, "5".to_owned(), format!("{padding}5")),
        (json, "[5]".to_owned(), format!("[{padding}5]")),
    ] {
        let (small_status, _, small_answer) = post(addr, "/v1/ingest", headers, small.as_bytes());
        let (large_status, _, large_answer) = post(addr, "/v1/ingest", headers, large.as_bytes());
        let case = &small[..small.len().min(60)];
        assert!(small_status >= 400, "{case:?}: {}", small_answer["error"]);
        assert_eq!(
            (large_status, &large_answer["error"]),
            (small_status, &small_answer["error"]),
            "{case:?}"
        );
    }
    // Objects that leave most of the body's keys out (one naming 1,000 keys, then 400,000
    // empty ones, 1.2 MB): refused before their rendering outgrows the body.
    let keys: Vec<String> = (0..1_000).map(|i| format!(r#""k{i}": 1"#)).collect();
    let sparse = format!("[{{{}}}{}]", keys.join(","), ",{}".repeat(400_000));
    let (status, _, answer) = post(addr, "/v1/ingest", json, sparse.as_bytes());
    assert_eq!(status, 400, "{}", answer["error"]);
    assert_eq!(answer["error"]["code"], "malformed_body");
    assert_eq!(terminate_child(&mut server), Some(0));
    assert_eq!(crate::support::spool_files(&workspace), 0);
}
