-- wrk script for bench/gateway.py: POST one small non-streaming chat completion per request.
-- Usage: wrk ... -s bench/chat.lua URL -- BEARER_KEY
-- done() prints one line "BENCHJSON {...}" with counts and latency percentiles in microseconds.

wrk.method = "POST"
wrk.body = '{"model":"sim-large","messages":[{"role":"user","content":"hello there"}],"max_tokens":8}'
wrk.headers["Content-Type"] = "application/json"

function init(args)
   if args[1] ~= nil and args[1] ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. args[1]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,"connect_errors":%d,'
         .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
         .. '"mean_us":%.1f,"max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
