//! Named fault points for the test suite, compiled in only with the `failpoints` feature
//! (`scripts/test.sh` turns it on; a normal build has none of this).
//!
//! A test starts the binary with `FAILPOINTS="<point>=return(<action>)"` (the `fail` crate's
//! syntax, so `2*off->return(abort)` acts on the third pass). Actions:
//!
//! - `abort`: the process dies on the spot, as under `kill -9` (no unwinding, no cleanup);
//! - `sleep:<ms>`: the delivery in hand is held that long, then goes on (the other work of its
//!   thread goes on meanwhile);
//! - `panic`: the stage crashes (a bug on some input).
//!
//! Every point that acts first prints `fault point <name> reached` on stderr, so a test can
//! assert that it got to the situation it is named after. The points:
//!
//! | point | where |
//! | --- | --- |
//! | `watch::claimed` | the watcher holds its claims, nothing processed yet |
//! | `pipeline::taken` | a delivery's file is open and stamped, nothing of it read yet |
//! | `pipeline::chunk-read` | the producer read a chunk of a delivery (holds it in processing) |
//! | `pipeline::copy-chunk` | a chunk's readings went into the open COPY, before the commit |
//! | `pipeline::before-commit` | every statement of a delivery transaction is done, its commit not yet sent |
//! | `pipeline::after-commit` | the delivery committed, its source not yet disposed of |
//! | `lake::before-commit` | an export wrote a table's Parquet files, its Delta commit not yet made |

/// Acts when `name` is configured; does nothing otherwise (and nothing at all in a normal
/// build).
pub fn point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::eval(name, |action| {
        act(name, action.as_deref().unwrap_or("abort"))
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(feature = "failpoints")]
fn act(name: &str, action: &str) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "fault point {name} reached");
    let _ = stderr.flush();
    drop(stderr);
    match action.split_once(':') {
        Some(("sleep", ms)) => {
            let hold =
                || std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(1000)));
            // Held on a runtime worker, the tasks queued on it would be held too (the one it
            // woke last cannot be taken by another worker): they move to another thread first.
            let on_current_thread_runtime = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
            if on_current_thread_runtime {
                hold();
            } else {
                tokio::task::block_in_place(hold);
            }
        }
        _ if action == "panic" => panic!("fault point {name}: injected panic"),
        _ => std::process::abort(),
    }
}

/// Keeps the configured fault points for as long as it lives.
#[must_use = "the fault points are cleared when the guard is dropped"]
pub struct FaultsGuard {
    #[cfg(feature = "failpoints")]
    _scenario: fail::FailScenario<'static>,
}

/// Reads the `FAILPOINTS` environment variable (with the feature); keep the guard for the life
/// of the process.
pub fn setup() -> FaultsGuard {
    FaultsGuard {
        #[cfg(feature = "failpoints")]
        _scenario: fail::FailScenario::setup(),
    }
}
