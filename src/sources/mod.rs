//! Where deliveries come from. Each source takes its own bytes, hands them to the
//! [`pipeline`](crate::pipeline) as a [`Delivery`](crate::delivery::Delivery), and acts on the
//! report it gets back: the source, not the pipeline, moves or deletes its files.
//!
//! - [`watch`]: the inbox `data/` (`sensor-etl run`): notify events as hints, periodic scans as
//!   the truth, claims against other workers, a tail mode for files that grow; committed files
//!   leave the inbox ([`dispose`]).
//! - [`files`]: files and folders given to `sensor-etl ingest`, left in place or, with
//!   `--consume`, disposed of as the inbox's are.
//! - [`journal`]: pushes kept on local disk while the database is away, drained behind the
//!   answer.
//! - [`inbox`]: which folder entries are inputs, shared by `watch` and `files`.

pub mod dispose;
pub mod files;
pub mod inbox;
pub mod journal;
pub mod watch;
