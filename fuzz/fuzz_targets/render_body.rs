//! A JSON or NDJSON body rendered in memory and from a spool file: the same CSV or the same
//! refusal, never a panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::render_body(data);
});
