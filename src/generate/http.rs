//! The load generator of the HTTP API (`sensor-etl generate --http URL`): posts generated CSV
//! bodies to `POST /v1/ingest` from `concurrency` connections for `duration` seconds, paced by
//! the scenario (burst: as fast as answers come; steady: `rate` requests a second; variable: a
//! rate swinging between 0.2 and 1.8 times `rate`), and reports requests/s, rows/s, latency
//! percentiles and the count of each status code. Every body holds readings of its own (a
//! fixed fleet of sensors whose time moves on), so none is a duplicate of another.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{file_name, file_text, pause, GenerateSpec, Placement, Rng, Scenario};

/// Groups of sensors that take turns in a run (`groups` x `--sensors` sensors in all).
const SENSOR_GROUPS: usize = 100;

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Requests answered (any status).
    pub requests: u64,
    /// Rows the server reported loaded (200 receipts).
    pub rows_loaded: u64,
    /// Rows the server reported rejected (receipts).
    pub rows_rejected: u64,
    /// Rows of bodies acknowledged from the push journal (202 receipts), to be loaded behind
    /// the answer.
    pub rows_journaled: u64,
    /// Requests by status code; `0` for a request that got no answer (connection error).
    pub statuses: BTreeMap<u16, u64>,
    /// Latency in microseconds, of answered requests.
    pub latency_us: Histogram<u64>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        writeln!(
            f,
            "requests: {} in {:.1} s = {:.0} requests/s",
            self.requests,
            seconds,
            self.requests as f64 / seconds
        )?;
        writeln!(
            f,
            "rows loaded: {} = {:.0} rows/s; rows rejected: {}",
            self.rows_loaded,
            self.rows_loaded as f64 / seconds,
            self.rows_rejected
        )?;
        let journaled = self.statuses.get(&202).copied().unwrap_or(0);
        writeln!(
            f,
            "journaled (202): {} requests, {} rows to be loaded behind the answer",
            journaled, self.rows_journaled
        )?;
        writeln!(
            f,
            "latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| match status {
                0 => format!("no answer: {count}"),
                status => format!("{status}: {count}"),
            })
            .collect();
        write!(f, "status codes: {}", statuses.join("  "))
    }
}

/// The part of a receipt the generator counts.
#[derive(Debug, Deserialize)]
struct Receipt {
    #[serde(default)]
    rows_read: u64,
    #[serde(default)]
    rows_loaded: u64,
    #[serde(default)]
    rows_rejected: u64,
}

/// Runs the load per `spec` against `url`.
///
/// # Errors
/// The HTTP client cannot be built.
pub async fn run(spec: &GenerateSpec, url: &str) -> anyhow::Result<LoadReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.concurrency.max(1))
        .timeout(Duration::from_secs(120))
        .build()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(spec.duration.max(0.0));
    // The pacer hands out request numbers at the scenario's rate; the workers send them.
    let (ticks, next) = tokio::sync::mpsc::channel::<usize>(spec.concurrency.max(1));
    let pacer = {
        let spec = spec.clone();
        tokio::spawn(async move {
            // Request i is due at the sum of the pauses before it (an absolute schedule: the
            // timer's granularity does not slow the rate down).
            let mut index = 0;
            let mut due = tokio::time::Instant::now();
            while Instant::now() < deadline {
                tokio::time::sleep_until(due).await;
                if ticks.send(index).await.is_err() {
                    return;
                }
                if let Some(pause) = pause(&spec, index) {
                    due += pause;
                }
                index += 1;
            }
        })
    };
    let next = Arc::new(Mutex::new(next));
    let mut workers = Vec::new();
    for worker in 0..spec.concurrency.max(1) {
        let (client, next, spec, url) = (
            client.clone(),
            Arc::clone(&next),
            spec.clone(),
            url.to_owned(),
        );
        workers.push(tokio::spawn(async move {
            let mut part = LoadReport::empty();
            let mut rng = Rng(spec.seed.wrapping_add(worker as u64));
            loop {
                let Some(index) = next.lock().await.recv().await else {
                    break;
                };
                let body = file_text(
                    &spec,
                    Placement::of_body(&spec, index, SENSOR_GROUPS),
                    &mut rng,
                );
                let mut request = client
                    .post(&url)
                    .query(&[("name", file_name(&spec, index))])
                    .header(reqwest::header::CONTENT_TYPE, "text/csv")
                    .body(body);
                if spec.idempotency_keys {
                    let key = format!("generate-{}-{index}", spec.seed);
                    request = request.header("idempotency-key", key);
                }
                if let Some(token) = &spec.token {
                    request = request.bearer_auth(token);
                }
                let begun = Instant::now();
                let answer = request.send().await;
                part.requests += 1;
                match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let bytes = response.bytes().await.unwrap_or_default();
                        let elapsed = begun.elapsed().as_micros() as u64;
                        let _ = part.latency_us.record(elapsed.max(1));
                        *part.statuses.entry(status).or_default() += 1;
                        if let Ok(receipt) = serde_json::from_slice::<Receipt>(&bytes) {
                            match status {
                                200 => part.rows_loaded += receipt.rows_loaded,
                                202 => {
                                    part.rows_journaled +=
                                        receipt.rows_read.saturating_sub(receipt.rows_rejected);
                                }
                                _ => {}
                            }
                            part.rows_rejected += receipt.rows_rejected;
                        }
                    }
                    Err(_) => *part.statuses.entry(0).or_default() += 1,
                }
            }
            part
        }));
    }
    let _ = pacer.await;
    let mut report = LoadReport::empty();
    for worker in workers {
        report.merge(worker.await?);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

impl LoadReport {
    fn empty() -> Self {
        Self {
            elapsed: Duration::ZERO,
            requests: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            rows_journaled: 0,
            statuses: BTreeMap::new(),
            latency_us: Histogram::new(3).expect("3 significant figures are supported"),
        }
    }

    fn merge(&mut self, other: LoadReport) {
        self.requests += other.requests;
        self.rows_loaded += other.rows_loaded;
        self.rows_rejected += other.rows_rejected;
        self.rows_journaled += other.rows_journaled;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        let _ = self.latency_us.add(&other.latency_us);
    }
}

/// The scenario's name, for the report header.
pub fn describe(spec: &GenerateSpec) -> String {
    match spec.scenario {
        Scenario::Burst => format!(
            "burst: as fast as answered, {} connections, {} rows a body, {:.0} s",
            spec.concurrency, spec.rows, spec.duration
        ),
        Scenario::Steady => format!(
            "steady: {} requests/s, {} connections, {} rows a body, {:.0} s",
            spec.rate, spec.concurrency, spec.rows, spec.duration
        ),
        Scenario::Variable => format!(
            "variable: 0.2 to 1.8 x {} requests/s, {} connections, {} rows a body, {:.0} s",
            spec.rate, spec.concurrency, spec.rows, spec.duration
        ),
    }
}
