//! Exactly-once under `kill -9` at random moments and restarts, with the real binary: a soak
//! test (its harness is `support::workers`). The situations a random kill may
//! miss (between commit and move, claims held, inside a COPY) are reached on purpose in
//! `faults`, as are outages and a worker killed while two others share its inbox. Each test checks that the inbox ends
//! empty, every file is in the ledger once, and every row is present exactly once by (file, line).

use std::time::Duration;

use crate::support::workers::{
    assert_exactly_once, csv_files_in, deliver, kill_hard, make_files, pseudo_random, terminate,
    wait_until_empty, worker,
};
use crate::support::{fresh_database, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_moments_then_restart_loads_every_file_once() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 30);
    let mut next = 0;
    for _trial in 0..5 {
        let child = worker(&workspace, &url);
        for path in staged.iter().skip(next).take(6) {
            deliver(path, &inbox);
        }
        next += 6;
        tokio::time::sleep(Duration::from_millis(150 + pseudo_random(700))).await;
        kill_hard(child);
    }
    let child = worker(&workspace, &url);
    wait_until_empty(&inbox, Duration::from_secs(120)).await;
    terminate(child);
    assert_eq!(csv_files_in(&workspace.path("processed")), 30);
    assert_exactly_once(&url, 30).await;
}
