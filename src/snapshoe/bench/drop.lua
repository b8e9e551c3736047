-- wrk script of `snapshoe bench drop`: the stampede. Every buyer sends one POST /api/orders.
--
-- Env: TOKENS_FILE  lines "<idempotency key> <item id> <access token>", one per buyer
--      OUT_PREFIX   where done() and the threads write their results (<prefix>.*)
--      RELEASE_US   the release moment (CLOCK_REALTIME, microseconds): requests wait for it
--      THREADS      wrk's -t (each thread takes every THREADS-th line: disjoint slices)
--
-- Each connection connects first, then waits in delay() until the release moment, so the
-- stampede starts at once. delay() hands out one slot of the thread's slice per request;
-- when the slice is gone the connection idles, and when every request of the slice has an
-- answer the thread writes <prefix>.done.<tid> and stops (the bench then stops wrk).
-- (A connection can get a second delay() slot, e.g. when it is re-established while its
-- timer is pending: slots only pace the requests; request() hands out the slice's entries.)
--
-- Times come from clock_gettime (LuaJIT ffi): the send time of every request by its
-- Idempotency-Key, the receive time of every 201 by its order id. The bench pairs the two
-- through the orders database (order id -> idempotency key) for the latency of successes;
-- wrk's own histogram covers all attempts. Every answer is also counted in a bin of
-- TIMELINE_US by its receive time since the release (<prefix>.timeline): the report's
-- throughput, refusals and errors over time.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } snapshoe_timespec;
int clock_gettime(int clk_id, snapshoe_timespec *tp);
]]
local ts = ffi.new("snapshoe_timespec")
local function now_us()
  ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME: comparable with the bench's clock
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local tokens_file = os.getenv("TOKENS_FILE")
local out_prefix = os.getenv("OUT_PREFIX")
local release_us = tonumber(os.getenv("RELEASE_US") or "0")
local nthreads = tonumber(os.getenv("THREADS") or "1")
local threads = {}
local TIMELINE_US = 250000

function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

-- Per-thread state; globals so that done() can read them with thread:get().
mine = {}
claimed, sent_n, answered, ok_n, extra, n408 = 0, 0, 0, 0, 0, 0
sent_log, ok_log, counts, timeline = {}, {}, {}, {}
first_us, last_us = 0, 0
local floor_req = nil

function init(args)
  local n = 0
  for line in io.lines(tokens_file) do
    if n % nthreads == tid then
      local key, item, token = string.match(line, "^(%S+) (%S+) (%S+)$")
      mine[#mine + 1] = { key, item, token }
    end
    n = n + 1
  end
  if #mine > 0 then
    floor_req = wrk.format("GET", "/api/orders/-/floor",
      { ["Authorization"] = "Bearer " .. mine[1][3] })
  end
end

function delay()
  if claimed < #mine then
    claimed = claimed + 1
    local wait_ms = (release_us - now_us()) / 1000
    if wait_ms > 0 then return wait_ms end
    return 0
  end
  return 3600000 -- slice done: idle until the thread stops
end

function request()
  if claimed == 0 then
    -- wrk calls request() once on thread 0 right after init(), to check what the script
    -- builds (script_verify_request); nothing is sent. Every real request comes after a
    -- delay() slot. Answered without spending a buyer or starting the clock: this call used
    -- to set first_us a whole lead time before the release, and that buyer never sent.
    return floor_req or wrk.format("GET", "/api/orders/-/floor")
  end
  sent_n = sent_n + 1
  local e = mine[sent_n]
  if e == nil then
    -- Only after a socket error (wrk re-sends with a fresh request()): a cheap GET, counted
    -- apart (status 200), so no buyer ever sends a second order.
    return floor_req
  end
  local t = now_us()
  if first_us == 0 then first_us = t end
  sent_log[#sent_log + 1] = e[1] .. " " .. string.format("%.0f", t)
  return wrk.format("POST", "/api/orders", {
    ["Authorization"] = "Bearer " .. e[3],
    ["Idempotency-Key"] = e[1],
    ["Content-Type"] = "application/json",
  }, '{"lines":[{"item_id":"' .. e[2] .. '","quantity":1}]}')
end

function response(status, headers, body)
  local t = now_us()
  answered = answered + 1
  if status ~= 200 and status ~= 408 then
    -- The stampede ends with the last answer to an order attempt; a 408 from an idle
    -- connection seconds later is not part of it.
    last_us = t
  end
  local k
  if status == 201 then
    local loc = headers["location"] or headers["Location"] or ""
    local id = string.match(loc, "([^/]+)$") or string.match(body, '"id":"([^"]+)"') or "?"
    ok_n = ok_n + 1
    ok_log[ok_n] = id .. " " .. string.format("%.0f", t)
    k = "201"
  elseif status == 200 or status == 408 then
    -- 200: the rare extra GET (request()); 408: HAProxy closing a connection that idled past
    -- `timeout http-request` after its thread's slots were gone. Neither is an order attempt.
    extra = extra + 1
    k = tostring(status)
  else
    k = status .. ":" .. (string.match(body or "", '"code":"([^"]+)"') or "")
  end
  counts[k] = (counts[k] or 0) + 1
  local bin = math.floor((t - release_us) / TIMELINE_US) .. "|" .. k
  timeline[bin] = (timeline[bin] or 0) + 1
  if status == 408 then n408 = n408 + 1 end
  if sent_n >= #mine then
    -- The tail: tell the bench how far this thread is (a few hundred writes at most). A
    -- request written just as HAProxy closed an idle connection with a 408 is lost without an
    -- answer; the bench then ends the thread's wait after a quiet period.
    local f = io.open(out_prefix .. ".tail." .. tid, "w")
    if f then f:write(answered - extra, " ", n408, " ", #mine, "\n"); f:close() end
  end
  -- Done when every order request of the slice was sent and answered (a rare extra GET,
  -- see request(), is not an order and does not count).
  if sent_n >= #mine and answered - extra >= #mine then
    local f = io.open(out_prefix .. ".done." .. tid, "w")
    if f then f:write(answered, "\n"); f:close() end
    wrk.thread:stop()
  end
end

local function write_lines(path, lines)
  local f = assert(io.open(path, "w"))
  for _, l in ipairs(lines) do f:write(l, "\n") end
  f:close()
end

function done(summary, latency, requests)
  local sent, ok, tally, bins = {}, {}, {}, {}
  local first, last = 0, 0
  for _, t in ipairs(threads) do
    for _, l in ipairs(t:get("sent_log")) do sent[#sent + 1] = l end
    for _, l in ipairs(t:get("ok_log")) do ok[#ok + 1] = l end
    for k, v in pairs(t:get("counts")) do tally[k] = (tally[k] or 0) + v end
    for k, v in pairs(t:get("timeline")) do bins[k] = (bins[k] or 0) + v end
    local f, l = t:get("first_us"), t:get("last_us")
    if f > 0 and (first == 0 or f < first) then first = f end
    if l > last then last = l end
  end
  write_lines(out_prefix .. ".sent", sent)
  write_lines(out_prefix .. ".ok", ok)
  local c = {}
  for k, v in pairs(tally) do c[#c + 1] = k .. " " .. v end
  write_lines(out_prefix .. ".counts", c)
  local b = { "bin_us " .. TIMELINE_US }
  for k, v in pairs(bins) do b[#b + 1] = k .. " " .. v end
  write_lines(out_prefix .. ".timeline", b)
  local e = summary.errors
  local s = {
    "duration_us " .. summary.duration,
    "requests " .. summary.requests,
    "errors_connect " .. e.connect,
    "errors_read " .. e.read,
    "errors_write " .. e.write,
    "errors_status " .. e.status,
    "errors_timeout " .. e.timeout,
    "first_send_us " .. string.format("%.0f", first),
    "last_answer_us " .. string.format("%.0f", last),
    "latency_min_us " .. latency.min,
    "latency_max_us " .. latency.max,
    "latency_mean_us " .. latency.mean,
  }
  for _, p in ipairs({ 50, 75, 90, 95, 99, 99.9 }) do
    s[#s + 1] = "latency_p" .. p .. "_us " .. latency:percentile(p)
  end
  write_lines(out_prefix .. ".summary", s)
  -- The latency distribution of all attempts as quantiles (0.5% steps, then the tail); the
  -- report draws the histogram from them.
  local h = {}
  local p = 0.5
  while p <= 100 do
    h[#h + 1] = p .. " " .. latency:percentile(p)
    p = p + 0.5
  end
  for _, q in ipairs({ 99.75, 99.9, 99.99 }) do h[#h + 1] = q .. " " .. latency:percentile(q) end
  write_lines(out_prefix .. ".hist", h)
end
