-- wrk script for the Flaregate benchmark: POST chat completions, print one JSON summary.
--
-- Arguments after `--`: <mode> <run-id> [header lines "Name: value" ...]
--   mode "unique": every request carries a different user message (a cache miss each time;
--                  the run id keeps runs apart, so a repeat never hits an earlier run's entry)
--   mode "fixed":  every request has the same body (a cache hit after the first)
--   mode "stream": unique bodies with "stream": true
-- done() prints latency percentiles in microseconds plus a latency curve for the chart.

local mode, run_id = "unique", "0"
local counter = 0
local thread_no = 0
local threads = {}
local fixed_request = nil

function setup(thread)
  thread_no = thread_no + 1
  thread:set("thread_id", tostring(thread_no))
  table.insert(threads, thread)
end

local function body(n)
  local stream = ""
  if mode == "stream" then stream = ',"stream":true' end
  local text = "Benchmark prompt"
  if mode ~= "fixed" then text = text .. " " .. run_id .. "-" .. (thread_id or "1") .. "-" .. n end
  return '{"model":"bench-model"' .. stream .. ',"messages":[{"role":"user","content":"' .. text .. '"}]}'
end

function init(args)
  mode = args[1] or "unique"
  run_id = args[2] or "0"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for i = 3, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    if name then wrk.headers[name] = value end
  end
  if mode == "fixed" then
    wrk.body = body(0)
    fixed_request = wrk.format()
  end
end

function request()
  if fixed_request then return fixed_request end
  counter = counter + 1
  return wrk.format(nil, nil, nil, body(counter))
end

function done(summary, latency, requests)
  local curve = {}
  for _, q in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 97.5, 99, 99.5, 99.9}) do
    table.insert(curve, string.format('[%s,%d]', q, latency:percentile(q)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"non_2xx":%d,"socket_errors":%d,"timeouts":%d,"curve_us":[%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write, e.timeout,
    table.concat(curve, ",")))
end
