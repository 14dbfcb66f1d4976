//! Operator endpoints against a running server: /healthz, /metrics after a file, and /readyz
//! flipping to 503 when the database stops and back to 200 when it returns.

use std::sync::Arc;
use std::time::Duration;

use sensor_etl::delivery::{Delivery, Disposition};
use sensor_etl::pipeline::{process, PipelineCtx};
use sensor_etl::store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::{http_get, RestartableCluster, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_report_health_metrics_and_readiness() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let settings = Arc::new(workspace.settings(&url, |_| {}));
    let store = Store::connect(&url, &settings).await.unwrap();
    let ctx = PipelineCtx { settings, store };
    let cancel = CancellationToken::new();
    let state =
        sensor_etl::http::HttpState::new(ctx.store.pool().clone(), Arc::clone(&ctx.settings));
    state.hand_over(ctx.clone());
    let (addr, server) =
        sensor_etl::http::serve("127.0.0.1:0".parse().unwrap(), state, cancel.clone())
            .await
            .unwrap();

    let path = workspace.path("in/2020-01-01_dht22_sensor_1.csv");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n1;2020-01-01T00:01:00;99;50\n").unwrap();
    process(
        &ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();

    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "sensor_etl_files_total{status=\"partially_loaded\"}",
        "sensor_etl_rows_loaded_total",
        "sensor_etl_violations_total{code=\"out_of_range\"}",
        "sensor_etl_file_processing_seconds_bucket",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }

    cluster.stop();
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready"), "{body}");
    assert_eq!(
        http_get(addr, "/healthz").await.0,
        200,
        "the process itself is healthy"
    );

    cluster.restart();
    let mut ready = false;
    for _ in 0..50 {
        if http_get(addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "/readyz did not return to 200 after the database came back"
    );
    cancel.cancel();
    server.await.unwrap();
}
