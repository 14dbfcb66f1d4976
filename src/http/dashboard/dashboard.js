// sensor-etl dashboard: reads the read API, draws with uPlot, refreshes itself.
// No framework, no build step, nothing fetched from outside this server.
"use strict";

const REFRESH_MS = 10000;
// Sensors offered in the list at a time; a larger fleet is searched, not downloaded.
const SENSOR_CHOICES = 200;
const BUCKETS = [["1m", 60], ["5m", 300], ["15m", 900], ["1h", 3600], ["6h", 21600], ["1d", 86400]];
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US");
let sensors = [];
let chart = null;
let selectedFile = null;

function token() { return localStorage.getItem("sensor-etl-token"); }

async function api(path) {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { headers });
  if (response.status === 401 || response.status === 403) {
    $("token-form").hidden = false;
  }
  const body = await response.json();
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function showProblem(error) {
  $("problem").hidden = !error;
  $("problem").textContent = error ? String(error.message || error) : "";
}

function cell(row, text, numeric) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : text;
  if (numeric) td.className = "n";
  return td;
}

function fillTable(id, rows, render) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  for (const item of rows) render(body.insertRow(), item);
}

async function refreshSummary() {
  const s = await api("/v1/summary");
  const badge = $("db-state");
  badge.textContent = s.database.up ? "database up" : "database down";
  badge.className = "badge " + (s.database.up ? "up" : "down");
  badge.title = s.database.message || "";
  const byStatus = Object.fromEntries(s.files_by_status.map((x) => [x.status, x]));
  let loaded = 0, rejected = 0;
  for (const status of ["loaded", "partially_loaded", "rejected", "empty"]) {
    const entry = byStatus[status];
    $("files-" + status).textContent = fmt.format(entry ? entry.files : 0);
    if (entry) { loaded += entry.rows_loaded; rejected += entry.rows_rejected; }
  }
  $("rows-loaded").textContent = fmt.format(loaded);
  $("rows-rejected").textContent = fmt.format(rejected);
  $("files-waiting").textContent = fmt.format(s.files_waiting);
  $("readings").textContent = fmt.format(s.reading_count);
  $("throughput").textContent = fmt.format(Math.round(s.throughput.rows_last_hour / 60));
  const journal = s.journal;
  $("journal-tile").hidden = !journal;
  if (journal) {
    $("journal-bodies").textContent = fmt.format(journal.bodies);
    $("journal-detail").textContent = fmt.format(Math.round(journal.bytes / 1024)) + " KiB · oldest " +
      fmt.format(Math.round(journal.oldest_age_seconds)) + " s · " + fmt.format(Math.round(journal.drain_rate)) + "/s loaded";
  }
  fillTable("reasons", s.rejects_by_reason, (row, r) => { cell(row, r.code); cell(row, fmt.format(r.rows), true); });
  $("refreshed").textContent = "updated " + new Date(s.at).toISOString().slice(11, 19) + " UTC";
}

async function refreshFiles() {
  const files = await api("/v1/files?limit=20");
  if (selectedFile === null) {
    const withRejects = files.find((f) => f.rows_rejected > 0);
    if (withRejects) selectedFile = withRejects.file_id;
  }
  fillTable("files", files, (row, f) => {
    row.className = "selectable" + (f.file_id === selectedFile ? " selected" : "");
    row.dataset.fileId = f.file_id;
    cell(row, f.file_id, true); cell(row, f.file_name); cell(row, f.status);
    cell(row, fmt.format(f.rows_read), true); cell(row, fmt.format(f.rows_loaded), true);
    cell(row, fmt.format(f.rows_rejected), true); cell(row, f.finished_at.slice(0, 19).replace("T", " "));
    row.onclick = () => { selectedFile = f.file_id; refreshFiles().catch(showProblem); };
  });
  if (selectedFile !== null) {
    const page = await api(`/v1/files/${selectedFile}/rejects?limit=50`);
    $("rejects-title").textContent = `Rejects of file ${selectedFile}` + (page.next ? " (first 50)" : "");
    fillTable("rejects", page.rejects, (row, r) => {
      cell(row, r.line, true); cell(row, r.column); cell(row, r.value); cell(row, r.code); cell(row, r.message);
    });
  }
}

// datetime-local inputs hold UTC here, without the zone.
const toInput = (iso) => iso.slice(0, 19);
const fromInput = (text) => new Date(text + "Z");

// The list of sensors to choose from: the first page of those the search finds. A new search
// shows its first match; a refresh keeps the sensor on show.
async function loadSensors(searched) {
  const shown = currentSensor();
  const query = new URLSearchParams({ limit: SENSOR_CHOICES + 1 });
  const search = $("sensor-search").value.trim();
  if (search) query.set("q", search);
  const found = await api("/v1/sensors?" + query);
  const more = found.length > SENSOR_CHOICES;
  sensors = found.slice(0, SENSOR_CHOICES);
  const previous = searched && sensors.length ? null : shown;
  if (previous && !sensors.some((s) => s.sensor_id === previous.sensor_id)) sensors.unshift(previous);
  const select = $("sensor");
  select.replaceChildren(...sensors.map((s) => new Option(`${s.sensor_id} · ${s.sensor_type}`, s.sensor_id)));
  $("sensor-note").textContent = more
    ? `first ${SENSOR_CHOICES} ${search ? "matches" : "sensors"} shown: search to find others`
    : (search && found.length === 0 ? "no sensor matches" : "");
  if (previous) select.value = previous.sensor_id;
  else if (sensors.length) pickSensor();
}

function currentSensor() { return sensors.find((s) => String(s.sensor_id) === $("sensor").value); }

function pickSensor() {
  const s = currentSensor();
  if (!s) return;
  $("measurement").replaceChildren(...s.measurements.map((m) => new Option(m, m)));
  if (s.first_ts && s.last_ts) {
    $("start").value = toInput(s.first_ts);
    $("end").value = toInput(new Date(Date.parse(s.last_ts) + 1000).toISOString());
  }
}

function chooseBucket(start, end) {
  if ($("bucket").value !== "auto") return $("bucket").value;
  const span = (end - start) / 1000;
  const fit = BUCKETS.find(([, secs]) => span / secs <= 300);
  return fit ? fit[0] : "1d";
}

async function drawChart() {
  const s = currentSensor();
  const measurement = $("measurement").value;
  if (!s || !measurement || !$("start").value || !$("end").value) return;
  const start = fromInput($("start").value), end = fromInput($("end").value);
  const bucket = chooseBucket(start, end);
  const query = new URLSearchParams({
    sensor_id: s.sensor_id, measurement, start: start.toISOString(), end: end.toISOString(), bucket,
  });
  const { buckets } = await api("/v1/series?" + query);
  const data = [
    buckets.map((b) => Date.parse(b.start) / 1000),
    buckets.map((b) => b.min),
    buckets.map((b) => b.mean),
    buckets.map((b) => b.max),
  ];
  const unit = (await unitOf(s.sensor_id, measurement)) || "";
  const box = $("chart");
  const options = {
    width: Math.max(box.clientWidth, 300), height: 300,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    series: [
      {},
      { label: "min", stroke: "rgba(40,100,200,0.35)" },
      { label: `mean ${unit}`, stroke: "rgb(20,70,170)", width: 2 },
      { label: "max", stroke: "rgba(40,100,200,0.35)" },
    ],
    bands: [{ series: [3, 1], fill: "rgba(40,100,200,0.22)" }],
    axes: [{}, { label: unit }],
    // Counted once uPlot has drawn, not on a later frame: a page dumped right after the
    // drawing (headless, under load) still carries the count.
    hooks: { draw: [() => { box.dataset.drawnPixels = drawnPixels(box); }] },
  };
  if (chart) chart.destroy();
  chart = new uPlot(options, data, box);
  box.dataset.buckets = buckets.length;
  box.dataset.bucket = bucket;
  $("chart-note").textContent = `${buckets.length} buckets of ${bucket}, ` +
    `${fmt.format(buckets.reduce((n, b) => n + b.n, 0))} readings`;
}

const units = new Map();
async function unitOf(sensorId, measurement) {
  const key = sensorId + "/" + measurement;
  if (!units.has(key)) {
    const latest = await api(`/v1/latest?sensor_id=${sensorId}&measurement=${encodeURIComponent(measurement)}`);
    units.set(key, latest.length ? latest[0].unit : "");
  }
  return units.get(key);
}

// Pixels the chart painted: what a person would see as a drawn line and band.
function drawnPixels(box) {
  const canvas = box.querySelector("canvas");
  if (!canvas) return 0;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return painted;
}

async function refresh() {
  try {
    await refreshSummary();
    await refreshFiles();
    showProblem(null);
  } catch (error) { showProblem(error); }
}

async function start() {
  $("token-form").onsubmit = (event) => {
    event.preventDefault();
    localStorage.setItem("sensor-etl-token", $("token").value);
    $("token-form").hidden = true;
    start();
  };
  $("sensor").onchange = () => { pickSensor(); drawChart().catch(showProblem); };
  // `/?q=…` opens the page on a search (a link to a sensor: `/?q=<sensor id>`).
  const asked = new URLSearchParams(location.search).get("q");
  if (asked) $("sensor-search").value = asked;
  let searching = null;
  $("sensor-search").oninput = () => {
    clearTimeout(searching);
    searching = setTimeout(() => loadSensors(true).then(drawChart).catch(showProblem), 300);
  };
  for (const id of ["measurement", "start", "end", "bucket"]) $(id).onchange = () => drawChart().catch(showProblem);
  await refresh();
  try {
    await loadSensors();
    await drawChart();
  } catch (error) { showProblem(error); }
}

start();
setInterval(async () => {
  await refresh();
  try { await loadSensors(); await drawChart(); } catch (error) { showProblem(error); }
}, REFRESH_MS);
