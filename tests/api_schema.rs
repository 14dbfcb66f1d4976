//! The API against its own OpenAPI document, by property-based testing: schemathesis (from
//! PyPI; `scripts/test.sh` installs the pinned version) generates requests from
//! `/openapi.json`, valid and invalid, for every operation, and checks that no answer is a
//! 5xx and that every status code, content type, header and body is one the document
//! declares.

use std::process::Command;

use crate::support::fixtures::loaded_server;
use crate::support::{terminate_child, Workspace};

/// The schemathesis command, or `None` outside CI when it is not installed (under CI its
/// absence fails the test).
fn schemathesis() -> Option<Command> {
    let found = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "schemathesis is required under CI (pip install schemathesis; scripts/test.sh does)"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return None;
    }
    Some(Command::new("schemathesis"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_and_answers_the_document_declares() {
    let Some(mut schemathesis) = schemathesis() else {
        return;
    };
    let workspace = Workspace::new();
    let (_url, mut server, addr) = loaded_server(&workspace, &[]).await;
    let report = tempfile::tempdir().unwrap();
    let output = schemathesis
        .current_dir(report.path())
        .args([
            "run",
            &format!("http://{addr}/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            // One worker: CPython 3.11.7's parser is not thread-safe (hypothesis describes
            // its filters with `ast.parse`, and two threads at once can fail inside it).
            "--workers",
            "1",
            "--seed",
            "20261130",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{printed}"
    );
    assert!(
        printed.contains("/v1/series") && printed.contains("/v1/ingest"),
        "every operation was exercised:\n{printed}"
    );
    assert_eq!(terminate_child(&mut server), Some(0));
}
