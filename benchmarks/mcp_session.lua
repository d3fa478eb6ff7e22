-- wrk script for `make bench` and `make bench-peers`: MCP Streamable HTTP sessions, then timed
-- `tools/call`s, against any MCP server or gateway.
--
--   BENCH_TOKEN=<jwt> wrk -t1 -c16 -d5s -s benchmarks/mcp_session.lua http://127.0.0.1:PORT/mcp -- 16
--
-- The argument after `--` is the number of connections per thread: each thread first
-- opens that many MCP sessions (`initialize`, then `notifications/initialized` with the
-- `Mcp-Session-Id` it got back), then sends `tools/call` of `echo` (of `$BENCH_TOOL` when set:
-- ContextForge prefixes a federated tool's name with its gateway's slug) round-robin over its
-- sessions with `Authorization: Bearer $BENCH_TOKEN` (omitted when unset) and the session
-- header. A server that answers `initialize` without `Mcp-Session-Id` (stateless Streamable
-- HTTP) gets no session header. An answer sent as Server-Sent Events (`Content-Type:
-- text/event-stream`, FastMCP's default) is read from the `data` of its JSON-RPC response event.
-- With `BENCH_ARG_BYTES=N` (N > 0) the `message` argument of every call is N bytes
-- of prose (a sentence repeated, cut at N) instead of `hello from wrk <id>`; the echo
-- upstream sends it back, so the answer is as large. Every request carries a unique
-- JSON-RPC id; the script times each `tools/call` itself (CLOCK_MONOTONIC through the
-- LuaJIT FFI, from the moment wrk asks for the request to the moment the whole response
-- is parsed) and matches the response to its request by that id, so the latency is exact
-- at any concurrency. wrk's own latency statistics are not used: wrk corrects them for
-- coordinated omission, which distorts them.
--
-- A call counts as OK when the status is 200 and the body is a JSON-RPC result (not an
-- error, not `isError: true`). done() prints one line `MCPBENCH {json}` with the counts,
-- errors and latency percentiles (microseconds); any error makes the run invalid.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local PROTOCOL = "2025-11-25"
local threads = {}
local thread_count = 0

-- main state: called once per thread before it starts
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

-- per-thread state (globals are read back by done() through thread:get)
calls = 0          -- tools/call answered with a result
errors = 0         -- anything else (bad status, JSON-RPC error, isError, unmatched id, handshake failure)
handshakes = 0     -- sessions opened
first_error = ""
lat = {}           -- tools/call latencies in microseconds

local token = os.getenv("BENCH_TOKEN")
local tool = os.getenv("BENCH_TOOL") or ""
if tool == "" then
  tool = "echo"
end
local STATELESS = "" -- the session of a server that gave no Mcp-Session-Id: no session header is sent
local arg_bytes = tonumber(os.getenv("BENCH_ARG_BYTES") or "") or 0
local padding = nil -- the N-byte message when BENCH_ARG_BYTES is set (built once)
if arg_bytes > 0 then
  local sentence = "The quick brown fox jumps over the lazy dog; report 42 is due 2024-05-01. "
  padding = string.sub(string.rep(sentence, math.ceil(arg_bytes / #sentence)), 1, arg_bytes)
end
local wanted = 1
local opened = 0
local fresh = {}    -- sessions that still need notifications/initialized
local ready = {}    -- sessions ready for calls
local rr = 0
local next_id = 0
local inflight = {} -- id -> {start_us, kind}

function init(args)
  wanted = tonumber(args[1]) or 1
end

local function headers(session)
  local h = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
  }
  if token and token ~= "" then
    h["Authorization"] = "Bearer " .. token
  end
  if session then
    if session ~= STATELESS then
      h["Mcp-Session-Id"] = session
    end
    h["MCP-Protocol-Version"] = PROTOCOL
  end
  return h
end

local function header(hdrs, wanted)
  for name, value in pairs(hdrs) do
    if string.lower(name) == wanted then
      return value
    end
  end
  return nil
end

-- The JSON-RPC message of an SSE body: the `data` of its first event that has an `id`.
local function sse_message(body)
  for line in string.gmatch(body, "[^\r\n]+") do
    local data = string.match(line, "^data: ?(.*)$")
    if data and string.find(data, '"id"', 1, true) then
      return data
    end
  end
  return body
end

local function note_error(what)
  errors = errors + 1
  if first_error == "" then
    first_error = what
  end
end

function request()
  next_id = next_id + 1
  local id = next_id
  if opened < wanted then
    opened = opened + 1
    inflight[id] = { now_us(), "initialize" }
    local body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"initialize","params":{"protocolVersion":"'
      .. PROTOCOL .. '","capabilities":{},"clientInfo":{"name":"wrk-bench","version":"1.0"}}}'
    return wrk.format("POST", nil, headers(nil), body)
  end
  local session = table.remove(fresh)
  if session then
    table.insert(ready, session)
    inflight[id] = { now_us(), "notification" }
    -- a notification has no id; the 202 is matched by kind below
    return wrk.format("POST", nil, headers(session), '{"jsonrpc":"2.0","method":"notifications/initialized"}')
  end
  if #ready == 0 then
    -- a handshake failed: try again (counted as an error)
    opened = opened - 1
    return request()
  end
  rr = rr % #ready + 1
  local message = padding or ("hello from wrk " .. id)
  local body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"' .. tool .. '",'
    .. '"arguments":{"message":"' .. message .. '"}}}'
  inflight[id] = { now_us(), "call" }
  return wrk.format("POST", nil, headers(ready[rr]), body)
end

function response(status, hdrs, body)
  local stop = now_us()
  if body and string.find(header(hdrs, "content-type") or "", "text/event-stream", 1, true) then
    body = sse_message(body)
  end
  local id = body and tonumber(string.match(body, '^%s*{[^{]-"id"%s*:%s*(%d+)'))
  if not id then
    if status == 202 then
      return -- notifications/initialized accepted
    end
    note_error("status " .. status .. " without a matching id: " .. string.sub(body or "", 1, 200))
    return
  end
  local entry = inflight[id]
  inflight[id] = nil
  if not entry then
    note_error("response for unknown id " .. id)
    return
  end
  local kind = entry[2]
  if kind == "initialize" then
    if status ~= 200 or not string.find(body, '"result"', 1, true) then
      note_error("initialize answered " .. status .. ": " .. string.sub(body or "", 1, 200))
      opened = opened - 1
      return
    end
    handshakes = handshakes + 1
    table.insert(fresh, header(hdrs, "mcp-session-id") or STATELESS)
    return
  end
  if status == 200 and string.find(body, '"result"', 1, true) and not string.find(body, '"error"', 1, true)
      and not string.find(body, '"isError":true', 1, true) then
    calls = calls + 1
    lat[calls] = stop - entry[1]
  else
    note_error("tools/call answered " .. status .. ": " .. string.sub(body or "", 1, 200))
  end
end

local function percentile(sorted, p)
  local n = #sorted
  if n == 0 then
    return 0
  end
  local rank = math.ceil(p / 100 * n)
  if rank < 1 then
    rank = 1
  end
  return sorted[rank]
end

-- main state: once, after every thread stopped
function done(summary, latency, requests)
  local all = {}
  local total_calls, total_errors, total_handshakes = 0, 0, 0
  local first = ""
  for _, thread in ipairs(threads) do
    total_calls = total_calls + (thread:get("calls") or 0)
    total_errors = total_errors + (thread:get("errors") or 0)
    total_handshakes = total_handshakes + (thread:get("handshakes") or 0)
    local fe = thread:get("first_error") or ""
    if first == "" then
      first = fe
    end
    local samples = thread:get("lat") or {}
    for i = 1, #samples do
      all[#all + 1] = samples[i]
    end
  end
  table.sort(all)
  local sum = 0
  for i = 1, #all do
    sum = sum + all[i]
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local function num(x)
    return string.format("%.3f", x)
  end
  local fields = {
    '"calls":' .. total_calls,
    '"errors":' .. total_errors,
    '"socket_errors":' .. socket_errors,
    '"status_errors":' .. e.status,
    '"handshakes":' .. total_handshakes,
    '"requests":' .. summary.requests,
    '"duration_s":' .. num(summary.duration / 1e6),
    '"mean_us":' .. num(#all > 0 and sum / #all or 0),
    '"p50_us":' .. num(percentile(all, 50)),
    '"p90_us":' .. num(percentile(all, 90)),
    '"p99_us":' .. num(percentile(all, 99)),
    '"max_us":' .. num(all[#all] or 0),
    '"first_error":"' .. string.gsub(first, '[%c"\\]', " ") .. '"',
  }
  io.write("MCPBENCH {" .. table.concat(fields, ",") .. "}\n")
end
