//! What real devices and hostile clients send to the push edge, each case as it was found:
//! compressed bodies of several members or spelled `x-gzip`, an airRohr with a GPS module but
//! no fix, the firmware's unset clock, a failed read of one value, names that cannot be file
//! names, and a body whose every row conflicts with stored readings.

use std::io::Write;

use crate::support::http::{post, serve};
use crate::support::{connect, fresh_database, terminate_child, Workspace};

const CSV: &str = "Content-Type: text/csv";
const JSON: &str = "Content-Type: application/json";

/// Ten DHT22 rows of `sensor`, starting at minute `first`.
fn rows(sensor: u32, first: u32, header: bool) -> String {
    let mut text = String::new();
    if header {
        text.push_str("sensor_id;sensor_type;timestamp;temperature;humidity\n");
    }
    for minute in first..first + 10 {
        text.push_str(&format!(
            "{sensor};DHT22;2021-05-01T00:{minute:02}:00;20.5;50\n"
        ));
    }
    text
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn readings_of(url: &str, sensor: i64) -> i64 {
    connect(url)
        .await
        .query_one(
            "SELECT count(*) FROM v_readings WHERE sensor_id = $1",
            &[&sensor],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_gzip_body_loads_and_encodings_are_named_in_any_case() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;

    // Two gzip members, as `cat a.gz b.gz` makes them: 20 rows, not 10.
    let mut two = gzip(rows(61, 0, true).as_bytes());
    two.extend(gzip(rows(61, 10, false).as_bytes()));
    let (status, _, receipt) = post(addr, "/v1/ingest", &[CSV, "Content-Encoding: gzip"], &two);
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        (
            receipt["rows_read"].as_u64(),
            receipt["rows_loaded"].as_u64()
        ),
        (Some(20), Some(20))
    );
    assert_eq!(readings_of(&url, 61).await, 40);

    // `x-gzip` and `GZIP` are gzip.
    for (sensor, name) in [(62, "x-gzip"), (63, "GZIP")] {
        let body = gzip(rows(sensor, 0, true).as_bytes());
        let encoding = format!("Content-Encoding: {name}");
        let (status, _, receipt) = post(addr, "/v1/ingest", &[CSV, &encoding], &body);
        assert_eq!(
            (status, receipt["rows_loaded"].as_u64()),
            (200, Some(10)),
            "{name}: {receipt}"
        );
    }
    // An encoding not taken: 415 with a JSON error body.
    let (status, _, body) = post(addr, "/v1/ingest", &[CSV, "Content-Encoding: br"], b"x");
    assert_eq!(status, 415);
    assert_eq!(body["error"]["code"], "unsupported_encoding", "{body}");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_gps_fix_a_failed_read_or_an_unset_clock_loses_only_what_it_lacks() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let device = "X-Sensor: esp8266-4242";
    let cycle = |p1: &str, minute: u32| {
        format!(
            r#"{{"esp8266id": "4242", "software_version": "NRZ-2020-133", "sensordatavalues":[
                {{"value_type":"SDS_P1","value":"{p1}"}},{{"value_type":"SDS_P2","value":"2.30"}},
                {{"value_type":"GPS_lat","value":"-200.000000"}},{{"value_type":"GPS_lon","value":"-200.000000"}},
                {{"value_type":"GPS_height","value":"-1000.00"}},
                {{"value_type":"GPS_timestamp","value":"1970-01-01T00:00:{minute:02}.000"}}]}}"#
        )
    };
    // No GPS fix and an unset clock: both readings load, at the receive time, with no position.
    let (status, _, first) = post(
        addr,
        "/v1/ingest",
        &[JSON, device],
        cycle("5.10", 0).as_bytes(),
    );
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "loaded", "{first}");
    assert_eq!(first["rows_loaded"], 1);
    let notes = first["notes"].to_string();
    assert!(
        notes.contains("GPS_lat") && notes.contains("GPS_timestamp"),
        "{notes}"
    );
    let sensor = first["sensors"][0]["sensor_id"].as_i64().unwrap();
    assert_eq!(readings_of(&url, sensor).await, 2, "P1 and P2");
    // The next cycle (its clock still unset) is a new reading, not a conflict with the first.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, second) = post(
        addr,
        "/v1/ingest",
        &[JSON, device],
        cycle("nan", 1).as_bytes(),
    );
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["status"], "loaded",
        "a failed read of P1 keeps P2: {second}"
    );
    assert!(second["notes"].to_string().contains("SDS_P1"), "{second}");
    assert_eq!(
        readings_of(&url, sensor).await,
        3,
        "P2 of the second cycle added"
    );
    let positions: i64 = connect(&url)
        .await
        .query_one(
            "SELECT count(*) FROM v_readings WHERE sensor_id = $1 AND (lat IS NOT NULL OR lon IS NOT NULL)",
            &[&sensor],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(positions, 0, "no fix, no position");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_too_long_for_a_file_system_or_with_nul_still_load_with_their_rejects() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    // An inbox file whose name is 230 characters, with one bad row: loaded, its rejects
    // quarantined under a name that fits the file system.
    let long = format!("{}_dht22.csv", "x".repeat(224));
    let dir = workspace.path("incoming");
    std::fs::create_dir_all(&dir).unwrap();
    let mut body = rows(71, 0, true);
    body.push_str("71;DHT22;2021-05-01T01:00:00;abc;50\n");
    std::fs::write(dir.join(&long), &body).unwrap();
    let output = crate::support::sensor_etl_in(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "rows rejected, nothing failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(readings_of(&url, 71).await, 20);
    let quarantined: Vec<String> = std::fs::read_dir(workspace.path("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantined.iter().any(|n| n.ends_with(".rejected.csv")),
        "{quarantined:?}"
    );
    assert!(quarantined.iter().all(|n| n.len() < 200), "{quarantined:?}");

    // `?name=` of 300 characters, or with a NUL: loaded, never a 500.
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let mut body = rows(72, 0, true);
    body.push_str("72;DHT22;2021-05-01T01:00:00;abc;50\n");
    for (sensor, name) in [
        (72, "y".repeat(300) + ".csv"),
        (73, "a%00b_dht22.csv".to_owned()),
    ] {
        let text = body.replace("72;", &format!("{sensor};"));
        let path = format!("/v1/ingest?name={name}");
        let (status, _, receipt) = post(addr, &path, &[CSV], text.as_bytes());
        assert_eq!(status, 200, "{receipt}");
        assert_eq!(receipt["status"], "partially_loaded", "{receipt}");
        assert_eq!(readings_of(&url, sensor).await, 20);
    }
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_every_row_conflicts_with_stored_readings_is_422() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let first = rows(81, 0, true);
    let (status, _, receipt) = post(addr, "/v1/ingest", &[CSV], first.as_bytes());
    assert_eq!(status, 200, "{receipt}");
    // The same sensor and times with other values: nothing loadable.
    let other = first.replace(";20.5;", ";21.5;");
    let (status, _, receipt) = post(addr, "/v1/ingest", &[CSV], other.as_bytes());
    assert_eq!(status, 422, "{receipt}");
    assert_eq!(receipt["error"]["code"], "no_valid_rows", "{receipt}");
    assert_eq!(
        (
            receipt["rows_loaded"].as_u64(),
            receipt["rows_rejected"].as_u64()
        ),
        (Some(0), Some(10))
    );
    assert_eq!(receipt["rejects"][0]["code"], "conflicting_reading");
    assert_eq!(readings_of(&url, 81).await, 20, "the first values stay");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_rejects_partition_them_and_reasons_count_rows() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    // 20 rows with two violations each among 40 good ones.
    let mut body = rows(91, 0, true);
    for first in [10, 20, 30] {
        body.push_str(&rows(91, first, false));
    }
    for minute in 0..20 {
        body.push_str(&format!("91;DHT22;2021-05-01T01:{minute:02}:00;abc;xyz\n"));
    }
    let (status, _, receipt) = post(addr, "/v1/ingest", &[CSV], body.as_bytes());
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rows_rejected"], 20, "{receipt}");
    let file_id = receipt["file_id"].as_i64().unwrap();
    for limit in [1, 3, 5, 1000] {
        let mut seen = Vec::new();
        let mut path = format!("/v1/files/{file_id}/rejects?limit={limit}");
        loop {
            let (status, text) = crate::support::http_get(addr, &path).await;
            assert_eq!(status, 200, "{text}");
            let page: serde_json::Value = serde_json::from_str(&text).unwrap();
            for entry in page["rejects"].as_array().unwrap() {
                seen.push((
                    entry["line"].as_i64().unwrap(),
                    entry["code"].to_string(),
                    entry["column"].to_string(),
                ));
            }
            match page["next"].as_str() {
                Some(next) => path = next.to_owned(),
                None => break,
            }
        }
        let total = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(
            (total, seen.len()),
            (40, 40),
            "limit={limit}: every violation once"
        );
    }
    let (_, summary) = crate::support::http_get(addr, "/v1/summary").await;
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let reasons = summary["rejects_by_reason"].as_array().unwrap();
    let not_a_number = reasons
        .iter()
        .find(|r| r["code"] == "not_a_number")
        .unwrap();
    assert_eq!(not_a_number["rows"], 20, "rows, not violations: {summary}");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_retry_under_its_key_is_the_same_delivery_and_json_edges_say_what_they_are() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let device = "X-Sensor: esp8266-5151";
    let keyed = "Idempotency-Key: esp8266-5151-cycle-77";
    let body = r#"{"esp8266id": "5151", "sensordatavalues":[{"value_type":"SDS_P1","value":"5.10"},{"value_type":"SDS_P2","value":"2.30"}]}"#;
    let (status, _, first) = post(addr, "/v1/ingest", &[JSON, device, keyed], body.as_bytes());
    assert_eq!(
        (status, first["status"].as_str()),
        (200, Some("loaded")),
        "{first}"
    );
    // The firmware's retry two seconds later: its rendering differs only by the receive time.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let (status, _, again) = post(addr, "/v1/ingest", &[JSON, device, keyed], body.as_bytes());
    assert_eq!(
        (status, again["status"].as_str(), &again["file_id"]),
        (200, Some("duplicate"), &first["file_id"]),
        "{again}"
    );
    let sensor = first["sensors"][0]["sensor_id"].as_i64().unwrap();
    assert_eq!(
        readings_of(&url, sensor).await,
        2,
        "the cycle is stored once"
    );

    // A JSON body with a byte order mark loads.
    let with_bom = format!(
        "\u{feff}{}",
        r#"[{"sensor_id": 95, "sensor_type": "DHT22", "timestamp": "2021-05-01T00:00:00", "temperature": 20.5, "humidity": 50}]"#
    );
    let (status, _, receipt) = post(addr, "/v1/ingest", &[JSON], with_bom.as_bytes());
    assert_eq!(
        (status, receipt["rows_loaded"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
    // A key with a line break is an unknown column, not the end of the header.
    let odd_key = r#"[{"sensor_id": 96, "sensor_type": "DHT22", "timestamp": "2021-05-01T00:00:00", "temperature": 20.5, "humidity": 50, "no\nte": "x"}]"#;
    let (status, _, receipt) = post(addr, "/v1/ingest", &[JSON], odd_key.as_bytes());
    assert_eq!(
        (status, receipt["rows_loaded"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
    // A repeated key, two names of one column: refused, saying which.
    let twice = r#"{"sensor_id": 97, "sensor_type": "SDS011", "timestamp": "2021-05-01T00:00:00", "P1": 1, "P1": 999}"#;
    let (status, _, receipt) = post(addr, "/v1/ingest", &[JSON], twice.as_bytes());
    assert_eq!(
        (status, receipt["error"]["code"].as_str()),
        (400, Some("duplicate_column")),
        "{receipt}"
    );
    let aliases = r#"{"sensor_id": 98, "sensor_type": "SDS011", "timestamp": "2021-05-01T00:00:00", "time": "2021-05-02T00:00:00", "P1": 1}"#;
    let (status, _, receipt) = post(addr, "/v1/ingest", &[JSON], aliases.as_bytes());
    assert_eq!(
        (status, receipt["error"]["code"].as_str()),
        (400, Some("duplicate_column")),
        "{receipt}"
    );
    // Nothing in the body: said in its own terms.
    let (status, _, receipt) = post(addr, "/v1/ingest", &[JSON], b"[]");
    assert_eq!(
        (status, receipt["error"]["code"].as_str()),
        (422, Some("no_objects")),
        "{receipt}"
    );
    let empty = r#"{"esp8266id": "5151", "sensordatavalues": []}"#;
    let (status, _, receipt) = post(addr, "/v1/ingest", &[JSON, device], empty.as_bytes());
    assert_eq!(
        (status, receipt["error"]["code"].as_str()),
        (422, Some("no_values")),
        "{receipt}"
    );
    assert_eq!(readings_of(&url, 97).await + readings_of(&url, 98).await, 0);
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_their_bodies_slowly_are_cut_off_and_free_their_room() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[
            ("SENSOR_ETL_HTTP__BODY_IDLE_SECS", "2"),
            ("SENSOR_ETL_HTTP__MAX_BODY_BYTES", "1048576"),
            ("SENSOR_ETL_HTTP__MAX_IN_FLIGHT_BYTES", "2097152"),
            // One address here: the bound of all clients is what this test fills.
            ("SENSOR_ETL_HTTP__CLIENT_SHARE_PERCENT", "100"),
        ],
    )
    .await;
    // Two clients declare 1 MiB each, send a few bytes and stall: all the room is held.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 1048576\r\n\r\nsensor_id;",
            )
            .await
            .unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, _, body) = post(addr, "/v1/ingest", &[CSV], rows(99, 0, true).as_bytes());
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("too_busy")),
        "{body}"
    );
    // After the idle period they are answered 408 and their room is free again.
    for mut stream in stalled {
        let mut answer = String::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_string(&mut answer),
        )
        .await;
        assert!(read.is_ok(), "a stalled body is cut off");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_too_slow"), "{answer}");
    }
    let (status, _, body) = post(addr, "/v1/ingest", &[CSV], rows(99, 0, true).as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_refused_for_its_content_is_a_rejected_delivery_in_the_ledger() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let malformed = b"{\"sensor_id\": 7, \"P1\": ";
    let (status, _, first) = post(addr, "/v1/ingest?name=cut.json", &[JSON], malformed);
    assert_eq!(
        (
            status,
            first["error"]["code"].as_str(),
            first["status"].as_str()
        ),
        (400, Some("malformed_body"), Some("rejected")),
        "{first}"
    );
    let file_id = first["file_id"].as_i64().expect("a ledger row");
    let row = connect(&url)
        .await
        .query_one(
            "SELECT file_name, status, error, rows_read FROM v_files WHERE file_id = $1",
            &[&file_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "cut.json");
    assert_eq!(row.get::<_, String>(1), "rejected");
    assert!(row.get::<_, String>(2).starts_with("malformed_body: "));
    assert_eq!(row.get::<_, i64>(3), 0);
    // The body is kept in quarantine as it came, with the reason beside it.
    let kept: Vec<Vec<u8>> = std::fs::read_dir(workspace.path("quarantine"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("cut"))
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert!(kept.iter().any(|bytes| bytes == malformed), "{kept:?}");

    // The same bytes again: the same answer, as a duplicate of that delivery.
    let (status, _, again) = post(addr, "/v1/ingest?name=cut.json", &[JSON], malformed);
    assert_eq!(
        (status, again["status"].as_str(), &again["file_id"]),
        (400, Some("duplicate"), &first["file_id"]),
        "{again}"
    );
    // Well-formed with nothing to load: 422, recorded too.
    let (status, _, empty) = post(addr, "/v1/ingest", &[JSON], b"[]");
    assert_eq!(
        (status, empty["error"]["code"].as_str()),
        (422, Some("no_objects")),
        "{empty}"
    );
    assert!(empty["file_id"].as_i64().is_some(), "{empty}");
    let rejected: i64 = connect(&url)
        .await
        .query_one(
            "SELECT count(*) FROM v_files WHERE status = 'rejected'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 2);
    assert_eq!(terminate_child(&mut server), Some(0));
}

/// Sends `request` from local address `from` and reads the answer to its end.
async fn raw_request_from(from: &str, addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_the_room_of_others_and_a_header_must_come_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = serve(
        &workspace,
        &url,
        &[
            ("SENSOR_ETL_HTTP__MAX_BODY_BYTES", "1048576"),
            ("SENSOR_ETL_HTTP__MAX_IN_FLIGHT_BYTES", "4194304"),
            ("SENSOR_ETL_HTTP__CLIENT_SHARE_PERCENT", "25"),
            ("SENSOR_ETL_HTTP__HEADER_READ_SECS", "1"),
        ],
    )
    .await;
    // Slow uploads from one address: the first holds that address's share, the next are
    // refused at once, and the room of everyone else stays free.
    let stalled_head = b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 1048576\r\n\r\nsensor_id;";
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first.write_all(stalled_head).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused = raw_request_from("127.0.0.1", addr, stalled_head).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("share"), "{refused}");
    let body = rows(71, 0, true);
    let request = format!(
        "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let served = raw_request_from("127.0.0.2", addr, request.as_bytes()).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert_eq!(readings_of(&url, 71).await, 20);

    // A header that does not come: the connection is closed after `header_read_secs`.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    silent
        .write_all(b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(6),
        silent.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a connection without a whole header is closed"
    );
    drop(first);
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_takes_the_time_its_load_takes_once_the_database_answered() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    // The database must answer within 50 ms; loading the body takes longer than that.
    let (mut server, addr) =
        serve(&workspace, &url, &[("SENSOR_ETL_HTTP__DB_WAIT_MS", "50")]).await;
    let body = crate::support::fixtures::body_of(81, 3_000_000);
    let rows = body.iter().filter(|&&b| b == b'\n').count() as u64 - 1;
    let started = std::time::Instant::now();
    let (status, _, receipt) = post(addr, "/v1/ingest?name=big.csv", &[CSV], &body);
    let took = started.elapsed();
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rows_loaded"].as_u64(), Some(rows), "{receipt}");
    assert!(
        took > std::time::Duration::from_millis(50),
        "the load took {took:?}: no longer than the wait, so this case shows nothing"
    );
    assert_eq!(readings_of(&url, 81).await, 2 * rows as i64);
    assert_eq!(terminate_child(&mut server), Some(0));
}
