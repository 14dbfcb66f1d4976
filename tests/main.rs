//! Integration tests, one binary with a module per area. Each test that needs PostgreSQL gets
//! its own database on a private cluster that the harness starts (see `support`).

mod api_schema;
mod cli;
mod crash;
mod dashboard;
mod device_push;
mod exactly_once;
#[cfg(feature = "failpoints")]
mod faults;
mod fuzz_replay;
mod golden;
mod hostile;
mod http;
mod ingest_http;
mod journal;
mod lake;
mod promises;
mod push_edges;
mod read_api;
mod realdata;
mod schema;
mod support;
mod transactions;
mod watch;
