-- post.lua - wrk script for hotserve's benchmarks: POSTs one fixed inference body over keep-alive
-- connections and prints a one-line JSON summary (requests, errors, p50/p99/p99.9 in microseconds).
-- Environment: HS_BENCH_BODY (file with the body), HS_BENCH_HDR_LEN (set for binary bodies: the
-- Inference-Header-Content-Length value). The URL (with the infer path) is wrk's argument.
local body_file = os.getenv("HS_BENCH_BODY")
local hdr_len = os.getenv("HS_BENCH_HDR_LEN")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
if hdr_len and hdr_len ~= "" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = hdr_len
else
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'HSBENCH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max))
end
