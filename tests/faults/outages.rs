//! Database outages: one in the middle of a stream of files, and a watcher started while its
//! database is down; nothing is lost and nothing is loaded twice.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::faulted::{committed_at_least, Watched, LIMIT};
use crate::support::workers::{
    assert_exactly_once, csv_files_in, deliver, make_files, wait_until_empty, worker_command,
};
use crate::support::{wait_until, RestartableCluster, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_stream_loses_nothing() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 25);
    // Every chunk takes 100 ms, so a burst takes seconds to read: the outage comes after the
    // first burst committed and while the second is being read.
    let running = Watched::spawn(
        worker_command(&workspace, &url),
        "pipeline::chunk-read=return(sleep:100)",
    );
    let marker = "fault point pipeline::chunk-read reached";
    for path in &staged[..5] {
        deliver(path, &inbox);
    }
    committed_at_least(&url, 5).await;
    let chunks_before = running.stderr().matches(marker).count();
    for path in &staged[5..20] {
        deliver(path, &inbox);
    }
    wait_until("the second burst is being read", LIMIT, || {
        let reading = running.stderr().matches(marker).count() > chunks_before;
        async move { reading }
    })
    .await;
    cluster.stop();
    assert!(csv_files_in(&inbox) > 0, "the outage came mid-stream");
    for path in &staged[20..] {
        deliver(path, &inbox);
    }
    wait_until("the worker reports the outage", LIMIT, || {
        let text = running.stderr();
        async move { text.contains("Database unavailable") || text.contains("Waiting for the database") }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        csv_files_in(&inbox) >= 5,
        "files wait in the inbox while the database is down"
    );
    cluster.restart();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(
        status.code(),
        Some(0),
        "the worker survived the outage:\n{stderr}"
    );
    assert_exactly_once(&url, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_started_while_its_database_is_down_loads_everything_once_it_returns() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    cluster.stop();
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    for path in make_files(&workspace.path("staging"), 5) {
        deliver(&path, &inbox);
    }
    let running = Watched::spawn(worker_command(&workspace, &url), "");
    wait_until("the worker says it waits for the database", LIMIT, || {
        let text = running.stderr();
        async move { text.contains("Waiting for the database") }
    })
    .await;
    assert_eq!(csv_files_in(&inbox), 5);
    cluster.restart();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_exactly_once(&url, 5).await;
}
