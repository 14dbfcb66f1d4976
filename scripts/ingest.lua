-- wrk script for POST /v1/ingest: unique 100-row BME280 CSV bodies (10 sensors a body, a
-- fleet of 1,000 sensors whose time moves on), so no body is a duplicate of another.
--   wrk -t2 -c32 -d30s -s scripts/ingest.lua http://127.0.0.1:9898/v1/ingest
-- With `-- keyed` after the URL, each body also carries a unique `Idempotency-Key`.
local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  keyed = args[1] == "keyed"
  header = "sensor_id;sensor_type;location;lat;lon;timestamp;pressure;temperature;humidity\n"
end

request = function()
  counter = counter + 1
  -- Body number n: sensor group n % 100, rounds of 10 readings a sensor after that.
  local n = counter * 64 + thread_id
  local group = n % 100
  local round = math.floor(n / 100)
  local rows = {}
  for row = 0, 99 do
    local sensor = 1000 + group * 10 + (row % 10)
    local ts = 1546300800 + (round * 10 + math.floor(row / 10)) * 150
    rows[#rows + 1] = string.format("%d;BME280;%d;48.5;9.1;%s;%.2f;%.2f;%.2f",
      sensor, sensor + 50000, os.date("!%Y-%m-%dT%H:%M:%S", ts),
      95000 + (n * 7 + row) % 8000, 10 + (row % 20), 40 + (row % 50))
  end
  local headers = {["Content-Type"] = "text/csv"}
  if keyed then
    headers["Idempotency-Key"] = string.format("wrk-%d-%d", thread_id, counter)
  end
  return wrk.format("POST", nil, headers, header .. table.concat(rows, "\n") .. "\n")
end

done = function(summary, latency, requests)
  local statuses = {}
  io.write(string.format("requests: %d in %.1f s = %.0f requests/s\n", summary.requests,
    summary.duration / 1e6, summary.requests / (summary.duration / 1e6)))
  io.write(string.format("latency ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
  io.write(string.format("non-2xx or 3xx: %d, socket errors: %d\n", summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
