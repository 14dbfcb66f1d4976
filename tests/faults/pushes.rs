//! HTTP pushes in flight when the server is killed: never acknowledged, committed whole or not
//! at all, and no device mapping left behind.

use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;

use crate::support::faulted::{count, post_maybe, serve_watched};
use crate::support::{connect, fresh_database, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_in_flight_when_killed_is_never_acknowledged_and_commits_whole_or_not_at_all(
) {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    // A large body streams through a spool file; a small one goes through a group commit.
    let large = crate::support::fixtures::body_of(51, 3_000_000);
    let small = crate::support::fixtures::body_of(52, 20_000);
    let lines = |body: &[u8]| body.iter().filter(|&&b| b == b'\n').count() as i64 - 1;
    let readings = |sensor: i64| {
        let url = url.clone();
        async move {
            count(
                &url,
                &format!("SELECT count(*) FROM v_readings WHERE sensor_id = {sensor}"),
            )
            .await
        }
    };
    // (where the server is killed, the body's sensor, whether its transaction had committed)
    let cases = [
        ("pipeline::copy-chunk", 51, false),
        ("pipeline::chunk-read", 52, false),
        ("pipeline::after-commit", 52, true),
    ];
    for (point, sensor, committed) in cases {
        let (server, addr) =
            serve_watched(&workspace, &url, &format!("{point}=1*return(sleep:60000)")).await;
        let body = if sensor == 51 {
            large.clone()
        } else {
            small.clone()
        };
        let rows = lines(&body);
        let client = std::thread::spawn(move || post_maybe(addr, &body));
        server.reached(point).await;
        if point == "pipeline::copy-chunk" {
            let spooled = crate::support::spool_files(&workspace);
            assert_eq!(spooled, 1, "the large body streams through a spool file");
        }
        server.signal(Signal::SIGKILL);
        let _ = server.exit();
        assert_eq!(
            client.join().unwrap(),
            None,
            "{point}: no answer, so no 2xx"
        );
        // Two readings (temperature, humidity) a line.
        let expected = if committed { rows * 2 } else { 0 };
        assert_eq!(
            readings(sensor).await,
            expected,
            "{point}: whole or nothing"
        );
    }
    // Sent again, each body is stored whole, once (the committed one is a duplicate).
    let (server, addr) = serve_watched(&workspace, &url, "").await;
    assert_eq!(post_maybe(addr, &large), Some(200));
    assert_eq!(post_maybe(addr, &small), Some(200));
    assert_eq!(readings(51).await, lines(&large) * 2);
    assert_eq!(readings(52).await, lines(&small) * 2);
    let left = crate::support::spool_files(&workspace);
    assert_eq!(
        left, 0,
        "spool files of a killed server are swept, answered ones removed"
    );
    server.signal(Signal::SIGTERM);
    let (status, _) = server.exit();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_push_killed_before_its_commit_leaves_no_device_behind() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (server, addr) =
        serve_watched(&workspace, &url, "pipeline::chunk-read=1*return(abort)").await;
    let body = r#"{"esp8266id": "777", "sensordatavalues":[{"value_type":"SDS_P1","value":"5.10"},{"value_type":"SDS_P2","value":"2.30"},{"value_type":"BME280_temperature","value":"21.5"}]}"#;
    let answered = std::thread::spawn(move || {
        crate::support::http::post_maybe(
            addr,
            "/v1/ingest",
            &["Content-Type: application/json", "X-Sensor: esp8266-777"],
            body.as_bytes(),
        )
    });
    server.reached("pipeline::chunk-read").await;
    let (status, _) = server.exit();
    assert_eq!(status.signal(), Some(6), "killed at the point");
    assert_eq!(answered.join().unwrap(), None, "never acknowledged");
    // Nothing of the delivery is stored: not its readings, not its device's sensors.
    let client = connect(&url).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM v_readings").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM sensor_etl.device_sensors").await,
        0,
        "the device of a push that never committed is not recorded"
    );
}
