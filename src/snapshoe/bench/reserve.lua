-- wrk script: POST /internal/reservations with a unique reservation id and buyer per request.
-- Env: ITEMS (comma-separated item ids), TOKEN (internal token), QTY (default 1).
local items = {}
for id in string.gmatch(os.getenv("ITEMS") or "", "[^,]+") do items[#items + 1] = id end
local token = os.getenv("TOKEN") or "snapshoe-dev-internal-token"
local qty = tonumber(os.getenv("QTY") or "1")
local counter = 0
local prefix = ""
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(os.time() + tid * 7919)
  prefix = string.format("b%d-%d-%06d", os.time(), tid, math.random(0, 999999))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Internal-Token"] = token
end

function request()
  counter = counter + 1
  local id = string.format("%s-%d", prefix, counter)
  local item = items[(counter % #items) + 1]
  local body = string.format(
    '{"reservation_id":"r%s","buyer_id":"%s","lines":[{"item_id":"%s","quantity":%d}],' ..
    '"reserved_until":"2099-01-01T00:00:00Z"}', id, id, item, qty)
  return wrk.format(nil, "/internal/reservations", nil, body)
end

-- Per-thread counters are globals so done() can read them with thread:get().
ok, refused, other = 0, 0, 0

function response(status, headers, body)
  if status == 201 then ok = ok + 1
  elseif status == 409 then refused = refused + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local a, r, o = 0, 0, 0
  for _, t in ipairs(threads) do
    a, r, o = a + t:get("ok"), r + t:get("refused"), o + t:get("other")
  end
  local secs = summary.duration / 1e6
  io.write(string.format("ADMITTED %d %.1f/s\n", a, a / secs))
  io.write(string.format("REFUSED %d %.1f/s\n", r, r / secs))
  io.write(string.format("OTHER %d\n", o))
  io.write(string.format("LATENCY p50=%.2fms p99=%.2fms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
