//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) loads `/` from a
//! server with real data and the test reads what a person would see: the counts of the
//! ledger, a reject reason, a chart with pixels drawn, and no request leaving the machine
//! (Chromium's network log lists every URL it asked for).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::fixtures::loaded_server;
use crate::support::http::post;
use crate::support::{connect, terminate_child, Workspace};

/// Chromium, or `None` outside CI when it is not installed (CI installs it; there its absence
/// fails the test).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "Chromium is required under CI (scripts/test.sh installs Debian's chromium)"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium)");
    }
    found
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=…`), its
/// network log in `net_log`; returns what it printed.
fn headless(chromium: &Path, profile: &Path, net_log: &Path, action: &str, url: &str) -> String {
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--window-size=1280,1400",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(action)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `id` (no nested elements), from a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].trim()
}

/// The value of attribute `name` on the element with `id`.
fn attribute_of<'a>(dom: &'a str, id: &str, name: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap();
    let tag_start = dom[..at].rfind('<').unwrap();
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
    let key = format!("{name}=\"");
    let value = &tag[tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} on #{id}: {tag}"))
        + key.len()..];
    &value[..value.find('"').unwrap()]
}

/// Every request the page made (its initiator is an origin; the browser's own, such as its
/// clock and account checks, have none), as (initiator, URL), from Chromium's network log.
fn page_requests(net_log: &Path) -> Vec<(String, String)> {
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net_log).expect("a network log"))
            .expect("the network log is JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == start_job)
        .filter_map(|event| {
            let initiator = event["params"]["initiator"].as_str()?;
            let url = event["params"]["url"].as_str()?;
            initiator
                .contains("://")
                .then(|| (initiator.to_owned(), url.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_ledger_a_reject_reason_and_a_drawn_chart() {
    let Some(chromium) = chromium() else { return };
    let workspace = Workspace::new();
    let (url, mut server, addr) = loaded_server(&workspace, &[]).await;
    // And a body rejected whole, so every kind of count is there to see.
    let bad = "sensor_id;sensor_type;location;lat;lon;timestamp;P1;P2\n7;SDS011;1;50;8;nope;1;1\n";
    let (status, _, _) = post(
        addr,
        "/v1/ingest?name=bad.csv",
        &["Content-Type: text/csv"],
        bad.as_bytes(),
    );
    assert_eq!(status, 422);
    let db = connect(&url).await;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let rows_loaded = count("SELECT sum(rows_loaded)::int8 FROM v_files").await;
    let rows_rejected = count("SELECT sum(rows_rejected)::int8 FROM v_files").await;
    let readings = count("SELECT sum(reading_count)::int8 FROM v_files").await;
    let with = |n: i64| {
        // en-US grouping, as the page writes numbers.
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };

    let scratch = tempfile::tempdir().unwrap();
    let net_log = scratch.path().join("net.json");
    let page = format!("http://{addr}/");
    let dom = headless(
        &chromium,
        &scratch.path().join("profile"),
        &net_log,
        "--dump-dom",
        &page,
    );

    assert_eq!(text_of(&dom, "db-state"), "database up");
    assert_eq!(text_of(&dom, "files-loaded"), "1");
    assert_eq!(text_of(&dom, "files-partially_loaded"), "1");
    assert_eq!(text_of(&dom, "files-rejected"), "1");
    assert_eq!(text_of(&dom, "rows-loaded"), with(rows_loaded));
    assert_eq!(text_of(&dom, "rows-rejected"), with(rows_rejected));
    assert_eq!(text_of(&dom, "readings"), with(readings));
    assert_eq!(text_of(&dom, "files-waiting"), "0");
    assert_eq!(
        text_of(&dom, "journal-bodies"),
        "0",
        "the push journal is empty"
    );
    // Rejects by reason, and the rejects of the latest file with any: a reason a person reads.
    assert!(
        dom.contains("<td>out_of_range</td>"),
        "a reject reason is shown"
    );
    assert!(
        dom.contains("is not an ISO 8601 timestamp"),
        "a reject's message is shown"
    );
    // The chart: buckets from /v1/series, drawn on a canvas.
    let buckets: usize = attribute_of(&dom, "chart", "data-buckets").parse().unwrap();
    assert!(buckets > 10, "{buckets} buckets");
    let drawn: usize = attribute_of(&dom, "chart", "data-drawn-pixels")
        .parse()
        .unwrap();
    assert!(drawn > 2_000, "the chart painted {drawn} pixels");
    assert!(dom.contains("class=\"uplot"), "uPlot drew it");
    assert!(text_of(&dom, "problem").is_empty(), "no error shown");

    // Nothing left the machine: every request the page made went to this server.
    let requests = page_requests(&net_log);
    let local = format!("http://{addr}/");
    assert!(
        requests.iter().any(|(_, url)| url.contains("/v1/series?")),
        "the page's requests are in the log: {requests:?}"
    );
    let outside: Vec<&String> = requests
        .iter()
        .map(|(_, url)| url)
        .filter(|url| !url.starts_with(&local))
        .collect();
    assert!(outside.is_empty(), "requests left the machine: {outside:?}");

    // A screenshot of what was checked (docs/dashboard.png is one).
    let shot = scratch.path().join("dashboard.png");
    headless(
        &chromium,
        &scratch.path().join("profile"),
        &scratch.path().join("net2.json"),
        &format!("--screenshot={}", shot.display()),
        &page,
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_thousands_of_sensors_is_listed_by_pages_and_found_by_search() {
    let url = crate::support::fresh_database().await;
    let workspace = Workspace::new();
    let (mut server, addr) = crate::support::http::serve(&workspace, &url, &[]).await;
    let fleet = 2_500;
    let mut csv = String::from("sensor_id;sensor_type;timestamp;temperature;humidity\n");
    for sensor in 1..=fleet {
        csv.push_str(&format!("{sensor};DHT22;2021-05-01T00:00:00;20.5;50\n"));
    }
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &["Content-Type: text/csv"],
        csv.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");

    // Pages of 1,000 by id, each pointing at the next: together every sensor once.
    let get = |path: &str| {
        let (status, head, body) = crate::support::http::get(addr, path, &[]);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        (status, head, json)
    };
    let mut seen = Vec::new();
    let mut next = Some("/v1/sensors".to_owned());
    while let Some(path) = next.take() {
        let (status, head, page) = get(&path);
        assert_eq!(status, 200, "{head}{page}");
        let page = page.as_array().unwrap();
        assert!(page.len() <= 1000, "{} sensors on one page", page.len());
        seen.extend(page.iter().map(|s| s["sensor_id"].as_i64().unwrap()));
        next = head
            .lines()
            .find_map(|line| {
                line.strip_prefix("link: <")
                    .or(line.strip_prefix("Link: <"))
            })
            .map(|rest| rest[..rest.find('>').unwrap()].to_owned());
    }
    assert_eq!(seen, (1..=fleet).collect::<Vec<i64>>());
    // A search: ids starting with it, types starting with it.
    let (status, _, found) = get("/v1/sensors?q=241");
    assert_eq!(status, 200);
    let ids: Vec<i64> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sensor_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [241].into_iter().chain(2410..=2419).collect::<Vec<_>>()
    );
    let (_, _, by_type) = get("/v1/sensors?q=dht&limit=5");
    assert_eq!(by_type.as_array().unwrap().len(), 5);
    let (status, _, _) = get("/v1/sensors?limit=0");
    assert_eq!(status, 400);

    // The dashboard offers a page of them, and finds one by search.
    if let Some(chromium) = chromium() {
        let scratch = tempfile::tempdir().unwrap();
        let open = |page: &str, name: &str| {
            headless(
                &chromium,
                &scratch.path().join(name),
                &scratch.path().join(format!("{name}.json")),
                "--dump-dom",
                &format!("http://{addr}{page}"),
            )
        };
        let dom = open("/", "all");
        let options = dom.matches("<option value=\"").count();
        assert!(
            (200..=220).contains(&options),
            "{options} options: a page of sensors plus the other lists"
        );
        assert!(text_of(&dom, "sensor-note").starts_with("first 200 sensors shown"));
        let dom = open("/?q=2417", "search");
        let list = &dom[dom.find("id=\"sensor\"").unwrap()..];
        let list = &list[..list.find("</select>").unwrap()];
        assert_eq!(
            list.matches("<option").count(),
            1,
            "the one match is offered: {list}"
        );
        assert!(list.contains("2417 · DHT22"), "{list}");
        assert!(
            text_of(&dom, "chart-note").contains("1 readings"),
            "its chart is drawn"
        );
        assert!(text_of(&dom, "problem").is_empty(), "no error shown");
    }
    assert_eq!(terminate_child(&mut server), Some(0));
}
