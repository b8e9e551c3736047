-- wrk script of `snapshoe bench drop --compare`: the floor. GET /api/orders/-/floor (token
-- check in the gateway and the orders service, nothing else) with the buyers' tokens in turn.
--
-- Env: TOKENS_FILE (as drop.lua), OUT_PREFIX (done() writes <prefix>.floor).
local tokens_file = os.getenv("TOKENS_FILE")
local out_prefix = os.getenv("OUT_PREFIX")
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

reqs, counts = {}, {}
local i = 0

function init(args)
  for line in io.lines(tokens_file) do
    local token = string.match(line, "^%S+ %S+ (%S+)$")
    reqs[#reqs + 1] = wrk.format("GET", "/api/orders/-/floor",
      { ["Authorization"] = "Bearer " .. token })
    if #reqs >= 500 then break end
  end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function response(status, headers, body)
  local k = tostring(status)
  counts[k] = (counts[k] or 0) + 1
end

function done(summary, latency, requests)
  local tally = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do tally[k] = (tally[k] or 0) + v end
  end
  local f = assert(io.open(out_prefix .. ".floor", "w"))
  f:write("duration_us ", summary.duration, "\n")
  f:write("requests ", summary.requests, "\n")
  f:write("latency_p50_us ", latency:percentile(50), "\n")
  f:write("latency_p99_us ", latency:percentile(99), "\n")
  for k, v in pairs(tally) do f:write("status_", k, " ", v, "\n") end
  f:close()
end
