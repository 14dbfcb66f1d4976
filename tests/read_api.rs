//! The read API as a client meets it (a real HTTP client against `sensor-etl serve`), every answer compared
//! with the same question asked of the public views in SQL: sensors, latest values, every page
//! of a paged read (JSON, CSV, NDJSON), each bucket's n/min/max/mean/stddev and the rolling
//! mean, the sensor-type scope, files, aggregates and rejects; the error codes; the `read`
//! scope; the OpenAPI document and `/docs`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::fixtures::{fixture_csv, fixture_ts, loaded_server};
use crate::support::http::{get, get_json, post, serve};
use crate::support::{connect, fresh_database, terminate_child, Workspace};

fn ts_of(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_same_question_asked_of_the_views() {
    let workspace = Workspace::new();
    let (url, mut server, addr) = loaded_server(&workspace, &[]).await;
    let db = connect(&url).await;

    // Sensors: as many as v_sensors, with what they measure.
    let (status, sensors) = get_json(addr, "/v1/sensors");
    assert_eq!(status, 200, "{sensors}");
    let ids: Vec<i64> = sensors
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sensor_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![101, 102]);
    assert_eq!(
        sensors[0]["measurements"],
        serde_json::json!(["pm10", "pm2_5"])
    );
    assert_eq!(sensors[1]["location_id"], 12);
    let (_, at_12) = get_json(addr, "/v1/sensors?location_id=12&sensor_type=sds011");
    assert_eq!(at_12.as_array().unwrap().len(), 1, "{at_12}");

    // Latest: the last reading of each (sensor, measurement) in v_readings.
    let (status, latest) = get_json(addr, "/v1/latest?sensor_type=SDS011");
    assert_eq!(status, 200, "{latest}");
    let expected = db
        .query(
            "SELECT DISTINCT ON (sensor_id, measurement) sensor_id, measurement, ts, value \
             FROM v_readings ORDER BY sensor_id, measurement, ts DESC, file_id, line",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(latest.as_array().unwrap().len(), expected.len());
    for (got, row) in latest.as_array().unwrap().iter().zip(&expected) {
        assert_eq!(got["sensor_id"].as_i64().unwrap(), row.get::<_, i64>(0));
        assert_eq!(
            got["measurement"].as_str().unwrap(),
            row.get::<_, String>(1)
        );
        assert_eq!(ts_of(&got["ts"]), row.get::<_, DateTime<Utc>>(2));
        assert_eq!(got["value"].as_f64().unwrap(), row.get::<_, f64>(3));
    }
    let (_, one) = get_json(addr, "/v1/latest?sensor_id=102&measurement=pm2_5");
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one[0]["unit"], "µg/m³");

    // Readings, 7 a page: every page in order, together exactly the SQL answer.
    let (start, end) = ("2024-03-01T00:00:00Z", "2024-03-01T06:00:00Z");
    let expected = db
        .query(
            "SELECT ts, value, file_id, line FROM v_readings WHERE sensor_id = 101 \
             AND measurement = 'pm10' AND ts >= $1 AND ts < $2 ORDER BY ts, file_id, line",
            &[&fixture_ts(0), &fixture_ts(36)],
        )
        .await
        .unwrap();
    assert_eq!(expected.len(), 37, "36 times and one between two of them");
    let mut path =
        format!("/v1/readings?sensor_id=101&measurement=pm10&start={start}&end={end}&limit=7");
    let mut read = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = get_json(addr, &path);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        read.extend(page["readings"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 6, "37 readings in pages of 7");
    assert_eq!(read.len(), expected.len());
    for (got, row) in read.iter().zip(&expected) {
        assert_eq!(ts_of(&got["ts"]), row.get::<_, DateTime<Utc>>(0));
        assert_eq!(got["value"].as_f64().unwrap(), row.get::<_, f64>(1));
        assert_eq!(got["file_id"].as_i64().unwrap(), row.get::<_, i64>(2));
        assert_eq!(
            got["line"].as_i64().unwrap(),
            i64::from(row.get::<_, i32>(3))
        );
    }

    // The same rows as CSV and NDJSON, the next page in a Link header.
    let base = format!("/v1/readings?sensor_id=101&measurement=pm10&start={start}&end={end}");
    let (status, head, body) = get(addr, &format!("{base}&format=csv&limit=30"), &[]);
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase().contains("content-type: text/csv"),
        "{head}"
    );
    assert!(head.contains("rel=\"next\""), "{head}");
    let text = String::from_utf8(body).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("ts,value,unit,location_id,lat,lon,file_id,line")
    );
    assert_eq!(lines.count(), 30);
    let (_, head, body) = get(addr, &format!("{base}&format=ndjson"), &[]);
    assert!(
        !head.contains("rel=\"next\""),
        "one page holds them all: {head}"
    );
    let objects: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), expected.len());
    assert_eq!(
        objects[0]["value"].as_f64().unwrap(),
        expected[0].get::<_, f64>(1)
    );

    // Series: hourly buckets over a day with a 3-hour trailing mean, bucket by bucket
    // against SQL; the range starts mid-bucket.
    let (s, e) = (fixture_ts(3), fixture_ts(3 + 144));
    let (status, series) = get_json(
        addr,
        &format!(
            "/v1/series?sensor_id=101&measurement=pm10&start={}&end={}&bucket=1h&rolling=3h",
            s.to_rfc3339(),
            e.to_rfc3339()
        ),
    );
    assert_eq!(status, 200, "{series}");
    let mut by_bucket: Vec<(DateTime<Utc>, i64, f64, f64, f64, f64)> = Vec::new();
    let full = db
        .query(
            "SELECT date_bin('1 hour', ts, timestamptz 'epoch') AS b, count(*), min(value), \
                    max(value), avg(value), coalesce(stddev_samp(value), 'NaN') \
             FROM v_readings WHERE sensor_id = 101 AND measurement = 'pm10' \
               AND ts >= $1 AND ts < $2 GROUP BY 1 ORDER BY 1",
            &[&s, &e],
        )
        .await
        .unwrap();
    for row in &full {
        by_bucket.push((
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
        ));
    }
    let buckets = series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), by_bucket.len());
    assert_eq!(
        buckets.len(),
        25,
        "a day from 00:30 spans 25 hourly buckets"
    );
    for (got, want) in buckets.iter().zip(&by_bucket) {
        assert_eq!(ts_of(&got["start"]), want.0);
        assert_eq!(got["n"].as_i64().unwrap(), want.1);
        assert!(close(got["min"].as_f64().unwrap(), want.2));
        assert!(close(got["max"].as_f64().unwrap(), want.3));
        assert!(
            close(got["mean"].as_f64().unwrap(), want.4),
            "{got} vs {want:?}"
        );
        match got["stddev"].as_f64() {
            Some(sd) => assert!(close(sd, want.5), "{got} vs {want:?}"),
            None => assert!(want.5.is_nan()),
        }
        // The trailing 3 hours that end at the bucket's end, readings before `start` included.
        let rolling: f64 = db
            .query_one(
                "SELECT avg(value) FROM v_readings WHERE sensor_id = 101 AND measurement = 'pm10' \
                 AND ts >= $1::timestamptz - interval '2 hours' AND ts < $1::timestamptz + interval '1 hour'",
                &[&want.0],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            close(got["rolling_mean"].as_f64().unwrap(), rolling),
            "{got} vs {rolling}"
        );
    }

    // The sensor-type scope: both sensors in one series, counts as SQL has them.
    let (_, typed) = get_json(
        addr,
        "/v1/series?sensor_type=SDS011&measurement=pm2_5&start=2024-03-01T00:00:00Z&end=2024-03-04T00:00:00Z&bucket=1d",
    );
    let counts: Vec<i64> = typed["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["n"].as_i64().unwrap())
        .collect();
    let sql_counts: Vec<i64> = db
        .query(
            "SELECT count(*) FROM v_readings WHERE sensor_type = 'SDS011' \
             AND measurement = 'pm2_5' GROUP BY date_trunc('day', ts) ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut sql_sorted = sql_counts.clone();
    sql_sorted.sort_unstable();
    let mut got_sorted = counts.clone();
    got_sorted.sort_unstable();
    assert_eq!(got_sorted, sql_sorted);
    assert!(typed["buckets"][0].get("rolling_mean").is_none());
    // The location scope: sensor 102's location only, the mean of each day as SQL has it.
    let (_, at_location) = get_json(
        addr,
        "/v1/series?location_id=12&measurement=pm10&start=2024-03-01T00:00:00Z&end=2024-03-04T00:00:00Z&bucket=1d",
    );
    let sql_days = db
        .query(
            "SELECT count(*), avg(value) FROM v_readings WHERE location_id = 12 \
             AND measurement = 'pm10' GROUP BY date_trunc('day', ts) ORDER BY date_trunc('day', ts)",
            &[],
        )
        .await
        .unwrap();
    let days = at_location["buckets"].as_array().unwrap();
    assert_eq!(days.len(), sql_days.len(), "{at_location}");
    for (got, row) in days.iter().zip(&sql_days) {
        assert_eq!(got["n"].as_i64().unwrap(), row.get::<_, i64>(0));
        assert!(close(got["mean"].as_f64().unwrap(), row.get::<_, f64>(1)));
    }

    // Files: the ledger, one file's aggregates and its rejects page by page.
    let (_, files) = get_json(addr, "/v1/files");
    assert_eq!(files.as_array().unwrap().len(), 2);
    let fixture_id = files[1]["file_id"].as_i64().unwrap();
    assert_eq!(files[1]["status"], "partially_loaded");
    assert_eq!(files[1]["rows_rejected"], 3);
    let (_, loaded) = get_json(addr, "/v1/files?status=loaded");
    assert_eq!(loaded.as_array().unwrap().len(), 1);
    let (status, detail) = get_json(addr, &format!("/v1/files/{fixture_id}"));
    assert_eq!(status, 200);
    let aggregates: i64 = db
        .query_one(
            "SELECT count(*) FROM v_aggregates WHERE file_id = $1",
            &[&fixture_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        detail["aggregates"].as_array().unwrap().len() as i64,
        aggregates
    );
    assert_eq!(detail["deliveries"][0]["origin"], "http:127.0.0.1");
    let (_, first) = get_json(addr, &format!("/v1/files/{fixture_id}/rejects?limit=2"));
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = get_json(addr, &next);
    assert!(second["next"].is_null());
    let mut lines: Vec<i64> = first["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["rejects"].as_array().unwrap())
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    let sql_lines: Vec<i64> = db
        .query(
            "SELECT line FROM v_rejects WHERE file_id = $1 ORDER BY line",
            &[&fixture_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    lines.dedup();
    assert_eq!(lines, sql_lines);
    assert_eq!(second["rejects"][0]["code"], "out_of_range", "{second}");

    // The summary: files, rows and rejects by reason as the ledger has them.
    let (_, summary) = get_json(addr, "/v1/summary");
    assert_eq!(summary["database"]["up"], true);
    assert_eq!(
        summary["reading_count"],
        db.query_one("SELECT sum(reading_count)::int8 FROM v_files", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    );
    let reasons = summary["rejects_by_reason"].as_array().unwrap();
    assert_eq!(reasons[0]["code"], "out_of_range");
    assert_eq!(reasons[0]["rows"], 2);
    assert_eq!(summary["throughput"]["files_last_hour"], 2);

    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_them_and_unknown_things_404() {
    let workspace = Workspace::new();
    let (_url, mut server, addr) = loaded_server(&workspace, &[]).await;
    let range = "start=2024-03-01T00:00:00Z&end=2024-03-02T00:00:00Z";
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/v1/readings?sensor_id=101&measurement=pm10", 400, Some("start")),
        (&format!("/v1/readings?sensor_id=abc&measurement=pm10&{range}"), 400, Some("sensor_id")),
        ("/v1/readings?sensor_id=101&measurement=pm10&start=yesterday&end=2024-03-02T00:00:00Z", 400, Some("start")),
        ("/v1/readings?sensor_id=101&measurement=pm10&start=2024-03-02T00:00:00Z&end=2024-03-01T00:00:00Z", 400, Some("end")),
        (&format!("/v1/readings?sensor_id=101&measurement=humidity&{range}"), 400, Some("measurement")),
        (&format!("/v1/readings?sensor_id=101&measurement=pm10&{range}&limit=0"), 400, Some("limit")),
        (&format!("/v1/readings?sensor_id=101&measurement=pm10&{range}&limit=100001"), 400, Some("limit")),
        (&format!("/v1/readings?sensor_id=101&measurement=pm10&{range}&after=zzz"), 400, Some("after")),
        (&format!("/v1/readings?sensor_id=101&measurement=pm10&{range}&format=xml"), 400, Some("format")),
        (&format!("/v1/readings?sensor_id=999&measurement=pm10&{range}"), 404, None),
        (&format!("/v1/series?measurement=pm10&{range}&bucket=10s"), 400, Some("bucket")),
        (&format!("/v1/series?measurement=pm10&{range}&bucket=1x"), 400, Some("bucket")),
        (&format!("/v1/series?measurement=pm10&{range}&bucket=1h&rolling=90m"), 400, Some("rolling")),
        (&format!("/v1/series?measurement=pm10&{range}&bucket=1h&sensor_id=101&sensor_type=SDS011"), 400, Some("sensor_type")),
        (&format!("/v1/series?measurement=pm10&{range}&bucket=1h&sensor_id=999"), 404, None),
        (&format!("/v1/series?measurement=nothing&{range}&bucket=1h"), 400, Some("measurement")),
        ("/v1/series?measurement=pm10&start=2000-01-01T00:00:00Z&end=2024-01-01T00:00:00Z&bucket=1h", 400, Some("bucket")),
        ("/v1/sensors?sensor_type=NOPE", 400, Some("sensor_type")),
        ("/v1/sensors?location_id=1.5", 400, Some("location_id")),
        ("/v1/latest?sensor_id=999", 404, None),
        ("/v1/files?status=lost", 400, Some("status")),
        ("/v1/files/abc", 400, Some("file_id")),
        ("/v1/files/999", 404, None),
        ("/v1/files/999/rejects", 404, None),
    ];
    for (path, status, parameter) in cases {
        let (got, body) = get_json(addr, path);
        assert_eq!(got, *status, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
        if let Some(parameter) = parameter {
            assert_eq!(body["error"]["parameter"], *parameter, "{path}: {body}");
            assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}");
        } else {
            assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
        }
    }
    // Too many buckets: the message suggests one that fits.
    let (_, body) = get_json(
        addr,
        "/v1/series?measurement=pm10&start=2000-01-01T00:00:00Z&end=2024-01-01T00:00:00Z&bucket=1h",
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1d"),
        "{body}"
    );
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_needs_the_read_scope_and_the_api_describes_itself() {
    use sha2::Digest;
    const WRITER: &str = "writer-only-5e6f";
    const VIEWER: &str = "viewer-7a8b";
    let workspace = Workspace::new();
    std::fs::write(
        workspace.path("sensor-etl.toml"),
        format!(
            "[[http.tokens]]\nname = \"gateway\"\nsha256 = \"{}\"\nscopes = [\"write\"]\n\n\
             [[http.tokens]]\nname = \"viewer\"\nenv = \"VIEWER_TOKEN\"\nscopes = [\"read\"]\n",
            hex::encode(sha2::Sha256::digest(WRITER.as_bytes()))
        ),
    )
    .unwrap();
    let (_url, mut server, addr) = loaded_server(
        &workspace,
        &[("VIEWER_TOKEN", VIEWER), ("WRITER_TOKEN", WRITER)],
    )
    .await;
    let (status, _, _) = get(addr, "/v1/sensors", &[]);
    assert_eq!(status, 401);
    let (status, _, body) = get(
        addr,
        "/v1/sensors",
        &[&format!("Authorization: Bearer {WRITER}")],
    );
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = get(
        addr,
        "/v1/sensors",
        &[&format!("Authorization: Bearer {VIEWER}")],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = get(addr, "/v1/summary", &[]);
    assert_eq!(status, 401, "the summary is data too");

    // The document: OpenAPI 3.1, every endpoint, served without a token; /docs renders it
    // from files in the binary.
    let (status, document) = get_json(addr, "/openapi.json");
    assert_eq!(status, 200);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    for path in [
        "/v1/ingest",
        "/v1/push-sensor-data/",
        "/v1/sensors",
        "/v1/latest",
        "/v1/readings",
        "/v1/series",
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/rejects",
        "/v1/summary",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }
    let (status, _, page) = get(addr, "/docs/", &[]);
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    assert!(
        !page.contains("https://"),
        "/docs loads nothing from elsewhere: {page}"
    );
    let (status, _, script) = get(addr, "/docs/swagger-ui-bundle.js", &[]);
    assert_eq!(status, 200);
    assert!(script.len() > 100_000);
    assert_eq!(terminate_child(&mut server), Some(0));
}

async fn plan_text(db: &tokio_postgres::Client, sensor_id: i64) -> String {
    db.simple_query(&format!(
        "EXPLAIN (ANALYZE, BUFFERS) SELECT ts, value FROM v_readings \
         WHERE sensor_id = {sensor_id} AND measurement = 'temperature'"
    ))
    .await
    .unwrap()
    .iter()
    .filter_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// Pages a one-sensor read of `v_readings` visits, and the pages of the readings; with fresh
/// planner statistics (ANALYZE does not summarize index ranges; VACUUM would).
async fn pages_read_for_one_sensor(db: &tokio_postgres::Client, sensor_id: i64) -> (i64, i64) {
    db.batch_execute("ANALYZE").await.unwrap();
    let explained = db
        .simple_query(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT ts, value FROM v_readings \
             WHERE sensor_id = {sensor_id} AND measurement = 'temperature'"
        ))
        .await
        .unwrap();
    let plan: Value = explained
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap();
    // Every page the read touched, the small dictionaries included.
    let top = &plan[0]["Plan"];
    let read =
        top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap();
    let pages: i64 = db
        .query_one(
            "SELECT sum(pg_relation_size(c.oid) / 8192)::int8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'sensor_etl' AND c.relname LIKE 'readings_y%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (read, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_sensor_read_right_after_a_load_visits_only_that_sensors_pages() {
    // 60,000 rows of 200 interleaved sensors: without the index ranges summarized, the read of
    // one sensor visits every page of the partition.
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let generated = crate::support::sensor_etl_in(&workspace)
        .args([
            "generate", "--out", "gen", "--files", "1", "--rows", "60000",
        ])
        .args(["--sensors", "200", "--kind", "bme280", "--seed", "7"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let file = std::fs::read_dir(workspace.path("gen"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let output = crate::support::sensor_etl_in(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let db = connect(&url).await;
    let sensor: i64 = db
        .query_one("SELECT min(sensor_id) FROM v_sensors", &[])
        .await
        .unwrap()
        .get(0);
    let (read, pages) = pages_read_for_one_sensor(&db, sensor).await;
    assert!(pages > 200, "the load spans {pages} pages");
    assert!(
        read * 5 < pages,
        "`ingest` returned and a one-sensor read visits {read} of {pages} pages: {}",
        plan_text(&db, sensor).await
    );

    // The same through the HTTP API: within seconds of the answer, without anyone else
    // touching the index.
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let body = std::fs::read_to_string(&file)
        .unwrap()
        .replace("2019-", "2021-");
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest?name=again.csv",
        &["Content-Type: text/csv"],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    let started = std::time::Instant::now();
    loop {
        let (read, pages) = pages_read_for_one_sensor(&db, sensor).await;
        if read * 5 < pages {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "10 s after the answer a one-sensor read still visits {read} of {pages} pages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_question_sees_every_commit_of_any_process() {
    let workspace = Workspace::new();
    let (url, mut server, addr) = loaded_server(&workspace, &[]).await;
    let path = "/v1/latest?sensor_id=101&measurement=pm10";
    let (_, first) = get_json(addr, path);
    let (_, again) = get_json(addr, path);
    assert_eq!(first, again);
    assert_ne!(first[0]["value"], 77.5);
    // A newer reading over HTTP: the same question now answers it.
    let newer = "sensor_id;sensor_type;location;lat;lon;timestamp;P1;P2\n\
                 101;SDS011;11;50.11;8.11;2024-03-05T00:00:00;77.5;1.5\n";
    let (status, _, _) = post(
        addr,
        "/v1/ingest?name=newer.csv",
        &["Content-Type: text/csv"],
        newer.as_bytes(),
    );
    assert_eq!(status, 200);
    let (_, after_post) = get_json(addr, path);
    assert_eq!(after_post[0]["value"], 77.5, "{after_post}");
    assert_eq!(after_post[0]["ts"], "2024-03-05T00:00:00Z");
    // A newer one loaded by another process (`sensor-etl ingest`): seen at once too.
    let file = workspace.path("newest.csv");
    std::fs::write(
        &file,
        "sensor_id;sensor_type;location;lat;lon;timestamp;P1;P2\n\
         101;SDS011;11;50.11;8.11;2024-03-06T00:00:00;66.25;1.5\n",
    )
    .unwrap();
    let output = crate::support::sensor_etl_in(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let (_, after_ingest) = get_json(addr, path);
    assert_eq!(after_ingest[0]["value"], 66.25, "{after_ingest}");
    let (_, sensors) = get_json(addr, "/v1/sensors?sensor_type=SDS011");
    assert_eq!(sensors[0]["last_ts"], "2024-03-06T00:00:00Z", "{sensors}");
    assert_eq!(terminate_child(&mut server), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_reads_are_503_and_the_summary_says_so() {
    let mut cluster = crate::support::RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let (status, _, _) = post(
        addr,
        "/v1/ingest?name=fixture.csv",
        &["Content-Type: text/csv"],
        fixture_csv().as_bytes(),
    );
    assert_eq!(status, 200);
    let (_, up) = get_json(addr, "/v1/summary");
    assert_eq!(up["database"]["up"], true);

    cluster.stop();
    let (status, down) = get_json(addr, "/v1/summary");
    assert_eq!(status, 200, "the dashboard's summary answers: {down}");
    assert_eq!(down["database"]["up"], false, "{down}");
    assert!(down["database"]["message"].is_string());
    let (status, head, body) = get(addr, "/v1/latest?sensor_type=SDS011", &[]);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(head.to_lowercase().contains("retry-after:"), "{head}");

    cluster.restart();
    crate::support::wait_until(
        "reads answer again",
        std::time::Duration::from_secs(30),
        || async move { get(addr, "/v1/latest?sensor_type=SDS011", &[]).0 == 200 },
    )
    .await;
    let (_, latest) = get_json(addr, "/v1/latest?sensor_type=SDS011");
    assert_eq!(latest.as_array().unwrap().len(), 4, "{latest}");
    assert_eq!(terminate_child(&mut server), Some(0));
}
