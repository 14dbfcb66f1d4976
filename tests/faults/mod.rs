//! The hardest guarantees, each driven to its situation by a named fault point (feature
//! `failpoints`, see `src/faults.rs`) instead of a lucky moment: a crash between the commit and
//! the move, a worker killed while it holds claims (two others take over), a crash inside a
//! COPY after earlier files committed, SIGTERM or SIGINT with a delivery in hand (finished; or
//! rolled back after the grace period), a delivery held longer than its lease, a stage that
//! panics, database outages (mid-stream, and before the watcher starts), and an HTTP request
//! in flight when the server is killed (never acknowledged; whole or nothing). Each test first
//! asserts that the binary reported reaching its point, then asserts the outcome.

mod changing_files;
mod crashes;
mod disks;
mod outages;
mod pushes;
