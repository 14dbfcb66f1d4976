//! The push journal (SPEC §10.2) against `sensor-etl serve` and a PostgreSQL that stops:
//! pushes during an outage answered 202 with a receipt and loaded exactly once when the
//! database is back, across `kill -9` while journaled and between a drain's commit and the
//! journal's bookkeeping; the same body or key while journaled gets the same receipt;
//! `http.acknowledge = "journal"`; a full journal answers 503 and acknowledges nothing it did
//! not keep; a second server on the same state folder is refused.

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use crate::support::http::{post, until_ready};
use crate::support::{
    connect, free_local_addr, http_get, wait_exit, wait_until, RestartableCluster, Workspace,
};

/// `sensor-etl serve` on a free address, answering HTTP (the database may be away).
async fn start(workspace: &Workspace, url: &str, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let (mut command, addr) = crate::support::http::serve_command(workspace, url);
    command
        .env("RUST_LOG", "info")
        .env("SENSOR_ETL_HTTP__DB_WAIT_MS", "300")
        .env("SENSOR_ETL_RETRY__INITIAL_DELAY_MS", "100")
        .env("SENSOR_ETL_RETRY__MAX_DELAY_MS", "500");
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    wait_until(
        "the server answers",
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
                && http_get(addr, "/healthz").await.0 == 200
        },
    )
    .await;
    (child, addr)
}

/// Every body acknowledged for `sensors` is loaded, its readings once, and no sensor of the
/// range `between` (`"A AND B"`) has a reading it was not acknowledged for.
async fn assert_stored_once(url: &str, sensors: &[i64], between: &str) {
    let expected = sensors.len() as i64;
    let probe = url.to_owned();
    wait_until(
        "every acknowledged body is loaded",
        Duration::from_secs(30),
        || {
            let url = probe.clone();
            async move { count(&url, "SELECT count(*) FROM journal_receipts").await == expected }
        },
    )
    .await;
    let stored: i64 = connect(url)
        .await
        .query_one(
            "SELECT count(*) FROM v_readings WHERE sensor_id = ANY($1)",
            &[&sensors],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, expected * 4, "every 202 is stored, once");
    let in_range = format!("SELECT count(*) FROM v_readings WHERE sensor_id BETWEEN {between}");
    assert_eq!(
        count(url, &in_range).await,
        expected * 4,
        "nothing refused was stored"
    );
}

fn kill_9(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(child, Duration::from_secs(10));
}

/// A CSV body for `sensor`: three rows, the second with a bad temperature.
fn csv_body(sensor: u32) -> String {
    format!(
        "sensor_id;sensor_type;timestamp;temperature;humidity\n\
         {sensor};DHT22;2021-04-01T00:00:00;20.5;50\n\
         {sensor};DHT22;2021-04-01T00:01:00;abc;50\n\
         {sensor};DHT22;2021-04-01T00:02:00;20.7;51\n"
    )
}

const CSV: &str = "Content-Type: text/csv";

const DEVICE_BODY: &str = r#"{"esp8266id": "777", "software_version": "NRZ-2020-133", "sensordatavalues":[{"value_type":"SDS_P1","value":"5.10"},{"value_type":"SDS_P2","value":"2.30"}]}"#;

async fn count(url: &str, sql: &str) -> i64 {
    connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

fn receipt_of(head: &str, body: &serde_json::Value) -> String {
    let id = body["receipt_id"]
        .as_str()
        .expect("a receipt id")
        .to_owned();
    assert!(
        head.to_lowercase()
            .contains(&format!("location: /v1/receipts/{id}").to_lowercase()),
        "{head}"
    );
    id
}

async fn receipt(addr: SocketAddr, id: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, &format!("/v1/receipts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_during_an_outage_are_loaded_exactly_once_across_kill_9() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let (mut server, addr) = start(&workspace, &url, &[]).await;
    until_ready(addr, Duration::from_secs(30)).await;
    cluster.stop();

    // The database is away: validated, journaled, 202 with a receipt.
    let body = csv_body(31);
    let (status, head, first) = post(addr, "/v1/ingest", &[CSV], body.as_bytes());
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "journaled");
    assert_eq!(
        (first["rows_read"].as_u64(), first["rows_rejected"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(first["rejects"][0]["line"], 3);
    assert_eq!(first["rejects"][0]["code"], "not_a_number");
    let csv_receipt = receipt_of(&head, &first);
    // The same body while journaled: the same receipt, kept once.
    let (status, _, again) = post(addr, "/v1/ingest", &[CSV], body.as_bytes());
    assert_eq!(
        (status, again["receipt_id"].as_str()),
        (202, Some(csv_receipt.as_str()))
    );
    // A device's own-API body (its reading time is the receive time).
    let (status, head, device) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: application/json", "X-Sensor: esp8266-777"],
        DEVICE_BODY.as_bytes(),
    );
    assert_eq!(status, 202, "{device}");
    let device_receipt = receipt_of(&head, &device);
    // Rejected whole: answered at once, as with the database up.
    let (status, _, rejected) = post(addr, "/v1/ingest", &[CSV], b"no;header;here\n1;2;3\n");
    assert_eq!(status, 400, "{rejected}");
    assert_eq!(receipt(addr, &csv_receipt).await["status"], "journaled");
    let (_, ready) = http_get(addr, "/readyz").await;
    assert!(
        ready.starts_with("ready: ") && ready.contains("push journal"),
        "{ready}"
    );
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(metrics.contains("sensor_etl_journal_bodies 3"), "{metrics}");

    // kill -9 while journaled; the next server starts while the database is still away.
    kill_9(&mut server);
    let (mut server, addr) = start(&workspace, &url, &[]).await;
    assert_eq!(receipt(addr, &csv_receipt).await["status"], "journaled");
    let (status, head, later) = post(addr, "/v1/ingest", &[CSV], csv_body(32).as_bytes());
    assert_eq!(status, 202, "{later}");
    let later_receipt = receipt_of(&head, &later);
    kill_9(&mut server);

    // The database returns; the drain dies right after its first commit, before the journal's
    // own bookkeeping.
    cluster.restart();
    let (mut server, _) = start(
        &workspace,
        &url,
        &[("FAILPOINTS", "pipeline::after-commit=return(abort)")],
    )
    .await;
    let status = wait_exit(&mut server, Duration::from_secs(60));
    assert!(!status.success(), "the fault point ended the server");
    assert!(count(&url, "SELECT count(*) FROM journal_receipts").await > 0);

    // Without the fault: everything loads, nothing twice.
    let (mut server, addr) = start(&workspace, &url, &[]).await;
    let probe = url.clone();
    wait_until(
        "every journaled body is loaded",
        Duration::from_secs(30),
        || {
            let url = probe.clone();
            async move { count(&url, "SELECT count(*) FROM journal_receipts").await == 4 }
        },
    )
    .await;
    for sensor in [31, 32] {
        let stored = count(
            &url,
            &format!("SELECT count(*) FROM v_readings WHERE sensor_id = {sensor}"),
        )
        .await;
        assert_eq!(
            stored, 4,
            "two good rows of two measurements, once, for sensor {sensor}"
        );
    }
    let device_readings = count(
        &url,
        "SELECT count(*) FROM v_readings r JOIN v_sensors s USING (sensor_id) \
         WHERE s.device = 'esp8266-777'",
    )
    .await;
    assert_eq!(device_readings, 2, "SDS_P1 and SDS_P2, once");
    let deliveries = count(&url, "SELECT count(*) FROM file_deliveries").await;
    let files = count(&url, "SELECT count(*) FROM files").await;
    assert_eq!(
        (files, deliveries),
        (4, 4),
        "one ledger row and one delivery per body"
    );
    let loaded = receipt(addr, &csv_receipt).await;
    assert_eq!(loaded["status"], "partially_loaded", "{loaded}");
    assert_eq!(
        (
            loaded["rows_loaded"].as_u64(),
            loaded["rows_rejected"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(loaded["file_id"].as_i64().is_some(), "{loaded}");
    assert_eq!(receipt(addr, &device_receipt).await["status"], "loaded");
    assert_eq!(
        receipt(addr, &later_receipt).await["status"],
        "partially_loaded"
    );
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(metrics.contains("sensor_etl_journal_bodies 0"), "{metrics}");
    // After the load, the same body is a duplicate like any other.
    let (status, _, duplicate) = post(addr, "/v1/ingest", &[CSV], csv_body(31).as_bytes());
    assert_eq!(
        (status, duplicate["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(http_get(addr, "/v1/receipts/0-1").await.0, 404);
    assert_eq!(crate::support::terminate_child(&mut server), Some(0));
}

/// Several batches wait when the database returns: each is read and prepared while the one
/// before it is written. They still load in the order received where order matters, every
/// body once: a body that conflicts with an earlier one (a later batch's) gets its line
/// rejected, not the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_several_batches_loads_in_order_once_with_a_conflict_in_a_later_batch() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let (mut server, addr) = start(&workspace, &url, &[]).await;
    until_ready(addr, Duration::from_secs(30)).await;
    cluster.stop();
    const BODIES: u32 = 700;
    let mut receipts = Vec::new();
    for sensor in 1000..1000 + BODIES {
        let (status, head, body) = post(addr, "/v1/ingest", &[CSV], csv_body(sensor).as_bytes());
        assert_eq!(status, 202, "{body}");
        receipts.push(receipt_of(&head, &body));
    }
    // Sensor 1000's first reading again with another value, in the third batch.
    let conflicting = "sensor_id;sensor_type;timestamp;temperature;humidity\n\
                       1000;DHT22;2021-04-01T00:00:00;30.5;50\n\
                       1000;DHT22;2021-04-01T00:05:00;20.9;52\n";
    let (status, head, body) = post(addr, "/v1/ingest", &[CSV], conflicting.as_bytes());
    assert_eq!(status, 202, "{body}");
    let conflict_receipt = receipt_of(&head, &body);

    cluster.restart();
    let probe = url.clone();
    wait_until(
        "every journaled body is loaded",
        Duration::from_secs(120),
        || {
            let url = probe.clone();
            let expected = i64::from(BODIES) + 1;
            async move { count(&url, "SELECT count(*) FROM journal_receipts").await == expected }
        },
    )
    .await;
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM v_readings WHERE sensor_id BETWEEN 1000 AND 1699"
        )
        .await,
        i64::from(BODIES) * 4 + 2,
        "every body once, and the conflicting body's other line"
    );
    let done = receipt(addr, &conflict_receipt).await;
    assert_eq!(done["status"], "partially_loaded", "{done}");
    assert_eq!(done["rows_loaded"], 1, "{done}");
    // Every body has its own ledger row. Bodies of other sensors may load side by side (in
    // lanes), so only the bodies of one sensor are ordered: the conflicting body after the
    // first body of sensor 1000.
    let client = connect(&url).await;
    let ids: Vec<i64> = client
        .query(
            "SELECT file_id FROM journal_receipts WHERE receipt_id = ANY($1) \
             ORDER BY array_position($1, receipt_id)",
            &[&receipts],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids.len(), receipts.len());
    let distinct: std::collections::HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a ledger row each: {ids:?}");
    let last: i64 = client
        .query_one(
            "SELECT file_id FROM journal_receipts WHERE receipt_id = $1",
            &[&conflict_receipt],
        )
        .await
        .unwrap()
        .get(0);
    assert!(last > ids[0], "sensor 1000's bodies in journal order");
    assert_eq!(crate::support::terminate_child(&mut server), Some(0));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_mode_acknowledges_after_the_sync_and_loads_every_body_once() {
    let cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let (mut server, addr) = start(
        &workspace,
        &url,
        &[("SENSOR_ETL_HTTP__ACKNOWLEDGE", "journal")],
    )
    .await;
    until_ready(addr, Duration::from_secs(30)).await;
    let mut receipts = Vec::new();
    for sensor in 100..130 {
        let (status, head, body) = post(addr, "/v1/ingest", &[CSV], csv_body(sensor).as_bytes());
        assert_eq!(status, 202, "{body}");
        receipts.push(receipt_of(&head, &body));
    }
    // The key names the delivery: the same key again while journaled is the same receipt,
    // even with other bytes (a device body differs only by its receive time).
    let keyed = ["Content-Type: text/csv", "Idempotency-Key: cycle-1"];
    let (status, head, body) = post(addr, "/v1/ingest", &keyed, csv_body(200).as_bytes());
    assert_eq!(status, 202, "{body}");
    let keyed_receipt = receipt_of(&head, &body);
    // Every row bad: 422 at once, and recorded in the ledger as a rejected delivery.
    let bad = "sensor_id;sensor_type;timestamp;temperature;humidity\n300;DHT22;2021-04-01T00:00:00;abc;50\n";
    let (status, _, body) = post(addr, "/v1/ingest", &[CSV], bad.as_bytes());
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "no_valid_rows");
    let probe = url.clone();
    wait_until("every body is loaded", Duration::from_secs(30), || {
        let url = probe.clone();
        async move { count(&url, "SELECT count(*) FROM journal_receipts").await == 32 }
    })
    .await;
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM v_readings WHERE sensor_id BETWEEN 100 AND 129"
        )
        .await,
        30 * 4
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM v_files WHERE status = 'rejected'"
        )
        .await,
        1
    );
    for id in &receipts {
        let done = receipt(addr, id).await;
        assert_eq!(done["status"], "partially_loaded", "{done}");
        assert_eq!(done["rows_loaded"], 2);
    }
    assert_eq!(
        receipt(addr, &keyed_receipt).await["status"],
        "partially_loaded"
    );
    // The load generator counts what was acknowledged from the journal.
    let output = crate::support::sensor_etl_in(&workspace)
        .args(["generate", "--http", &format!("http://{addr}/v1/ingest")])
        .args([
            "--scenario",
            "burst",
            "--duration",
            "2",
            "--concurrency",
            "4",
        ])
        .args(["--rows", "10"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let journaled: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("journaled (202): "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(journaled > 0, "{report}");
    assert!(report.contains(&format!("202: {journaled}")), "{report}");
    assert_eq!(crate::support::terminate_child(&mut server), Some(0));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_answers_503_and_everything_acknowledged_is_loaded() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let env = [("SENSOR_ETL_HTTP__JOURNAL_MAX_BYTES", "4000")];
    let (mut server, addr) = start(&workspace, &url, &env).await;
    until_ready(addr, Duration::from_secs(30)).await;
    cluster.stop();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for sensor in 400..440 {
        let (status, head, body) = post(addr, "/v1/ingest", &[CSV], csv_body(sensor).as_bytes());
        match status {
            202 => acknowledged.push(sensor),
            503 => {
                assert_eq!(body["error"]["code"], "journal_full", "{body}");
                assert!(head.to_lowercase().contains("retry-after:"), "{head}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        !acknowledged.is_empty() && refused > 0,
        "{acknowledged:?}, {refused} refused"
    );
    let (ready, _) = http_get(addr, "/readyz").await;
    assert_eq!(ready, 503, "a full journal takes no pushes: not ready");

    // A second server on the same state folder is refused, saying why.
    let output = crate::support::sensor_etl_in(&workspace)
        .args(["serve", "--database-url", &url, "--http-addr"])
        .arg(free_local_addr().to_string())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains(&format!(
            "in use by another sensor-etl process (pid {})",
            server.id()
        )),
        "{said}"
    );

    // With no server running, `status` reads the journal's depth beside the ledger.
    kill_9(&mut server);
    cluster.restart();
    let output = crate::support::sensor_etl_in(&workspace)
        .args(["status", "--json", "--database-url", &url])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(
        status["journal"]["bodies"].as_u64(),
        Some(acknowledged.len() as u64),
        "{status}"
    );
    let (mut server, _) = start(&workspace, &url, &env).await;
    let sensors: Vec<i64> = acknowledged.iter().map(|s| i64::from(*s)).collect();
    assert_stored_once(&url, &sensors, "400 AND 439").await;
    assert_eq!(crate::support::terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_journal_answers_503_and_never_a_202_for_a_body_not_on_disk() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let disk = crate::support::SmallDisk::mount(&workspace.path(".sensor-etl/journal"), 32 * 1024);
    let (mut server, addr) = start(&workspace, &url, &[]).await;
    until_ready(addr, Duration::from_secs(30)).await;
    cluster.stop();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for sensor in 500..560 {
        let (status, _, body) = post(addr, "/v1/ingest", &[CSV], csv_body(sensor).as_bytes());
        match status {
            202 => acknowledged.push(i64::from(sensor)),
            503 => {
                assert_eq!(body["error"]["code"], "journal_unavailable", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        !acknowledged.is_empty() && refused > 0,
        "{acknowledged:?}, {refused} refused"
    );
    // Killed with a full disk: what was acknowledged is on disk and loads after a restart.
    kill_9(&mut server);
    cluster.restart();
    let (mut server, _) = start(&workspace, &url, &[]).await;
    assert_stored_once(&url, &acknowledged, "500 AND 559").await;
    assert_eq!(crate::support::terminate_child(&mut server), Some(0));
    disk.unmount();
}

/// A batch is written in lanes whose bodies share no sensor: a lane held before its commit
/// does not hold back the bodies of other sensors, which load meanwhile; both load once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_held_before_its_commit_does_not_hold_back_the_bodies_of_other_sensors() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let held = [(
        "FAILPOINTS",
        "pipeline::before-commit=1*return(sleep:10000)",
    )];
    let (mut server, addr) = start(&workspace, &url, &held).await;
    until_ready(addr, Duration::from_secs(30)).await;
    cluster.stop();
    let mut receipts = Vec::new();
    for sensor in [2001, 2002] {
        let (status, head, body) = post(addr, "/v1/ingest", &[CSV], csv_body(sensor).as_bytes());
        assert_eq!(status, 202, "{body}");
        receipts.push(receipt_of(&head, &body));
    }
    cluster.restart();
    let statuses = || {
        let receipts = receipts.clone();
        async move {
            let mut statuses = Vec::new();
            for id in &receipts {
                statuses.push(
                    receipt(addr, id).await["status"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            statuses
        }
    };
    // Both wait in one batch; the first lane to end its statements is held ten seconds.
    wait_until(
        "one body is loaded while the other is held",
        Duration::from_secs(8),
        || async {
            let statuses = statuses().await;
            statuses.iter().filter(|s| *s == "journaled").count() == 1
        },
    )
    .await;
    wait_until("both are loaded", Duration::from_secs(30), || async {
        statuses().await.iter().all(|s| s == "partially_loaded")
    })
    .await;
    assert_stored_once(&url, &[2001, 2002], "2001 AND 2002").await;
    assert_eq!(crate::support::terminate_child(&mut server), Some(0));
    drop(cluster);
}
