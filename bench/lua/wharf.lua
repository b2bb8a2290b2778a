-- One wrk script for every `make bench` scenario (bench/scenarios.py picks the mode):
--   wrk -s bench/lua/wharf.lua URL -- mode=<mode> threads=<n> [data=<file>] [tokens=<file>] [run=<id>]
--                                        [start=<first line of data to use>] [pace_ms=<mean gap>]
--                                        [pages=<file>] [mix=<get>,<list>,<post>]
-- Modes:
--   paths    GET each line of `data` in turn (absolute paths)
--   get      GET /api/users/<id> for each id in `data`
--   post     POST /api/users with a unique email per request (`run` keeps them unique across runs)
--   patch    PATCH /api/users/<id> (ids in `data`, owned by the token's account) with a new name
--   login    POST /auth/login with the JSON body in `data`
--   refresh  POST /auth/refresh, each request with its own refresh token (lines of `data`)
--   mix      what an application's clients do (`make soak`, and make bench's mixed scenario): at random
--            in the percentages of `mix` (80,10,10), GET /api/users/<id> of a random id in `data`, a
--            random list page of `pages` (absolute paths with their cursors), or POST /api/users; each
--            request signed with a random token of `tokens` (many accounts), not one per thread
-- Access tokens (lines of `tokens`) are spread over the threads, one per thread (mode mix: per request).
-- pace_ms: each connection waits a random gap (exponential, this mean) after each answer before its
-- next request, so the load is a steady arrival rate (about connections * 1000 / pace_ms requests/s)
-- rather than as fast as the server answers: a slow answer then shows as latency, not as less load.
-- done() prints one line, `WRK_JSON {...}`, that bench/wrk.py parses.

-- setup() runs in wrk's main Lua state; thread:set() makes `thread_index` a global of the thread's.
local threads_started = 0

function setup(thread)
  thread:set("thread_index", threads_started)
  threads_started = threads_started + 1
end

local function read_lines(path)
  local lines = {}
  local file = assert(io.open(path, "r"), "cannot open " .. path)
  for line in file:lines() do
    if line ~= "" then lines[#lines + 1] = line end
  end
  file:close()
  assert(#lines > 0, path .. " is empty")
  return lines
end

local mode, lines, thread_count, run_id, pages, tokens
local next_index, counter = 0, 0
local mix = {}
local headers = {}

function init(args)
  local options = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    assert(key, "arguments are key=value, got " .. arg)
    options[key] = value
  end
  thread_index = thread_index or 0
  mode = assert(options.mode, "mode= is required")
  thread_count = tonumber(options.threads or "1")
  run_id = options.run or "0"
  if options.data then lines = read_lines(options.data) end
  if options.pages then pages = read_lines(options.pages) end
  if mode == "mix" then
    local get, list = (options.mix or "80,10,10"):match("^(%d+),(%d+),%d+$")
    assert(get, "mix= is <get>,<list>,<post> percentages")
    mix.get, mix.list = tonumber(get), tonumber(get) + tonumber(list)
  end
  if options.tokens then
    tokens = read_lines(options.tokens)
    headers["Authorization"] = "Bearer " .. tokens[(thread_index % #tokens) + 1]
  end
  -- Seeded per thread: each thread walks its own random sequence.
  math.randomseed(thread_index + 1)
  if mode == "post" or mode == "login" or mode == "refresh" or mode == "mix" then
    headers["Content-Type"] = "application/json"
  elseif mode == "patch" then
    headers["Content-Type"] = "application/merge-patch+json"
  end
  if options.pace_ms then
    local mean = tonumber(options.pace_ms)
    -- wrk calls delay() (when the script defines it) before each request and waits that many ms.
    delay = function() return -math.log(1 - math.random()) * mean end
  end
  -- Threads walk disjoint slices of the data: no two requests share a refresh token.
  next_index = tonumber(options.start or "0") + thread_index
end

local function next_line()
  local line = lines[(next_index % #lines) + 1]
  next_index = next_index + thread_count
  return line
end

local function post_user()
  local email = string.format("bench-%s-%d-%d@post.example", run_id, thread_index, counter)
  return wrk.format("POST", "/api/users", headers, '{"name":"Bench post","email":"' .. email .. '"}')
end

local function mixed()
  local authorization = "Bearer " .. tokens[math.random(#tokens)]
  local draw = math.random(100)
  if draw <= mix.get then
    return wrk.format("GET", "/api/users/" .. lines[math.random(#lines)], {Authorization = authorization})
  elseif draw <= mix.list then
    return wrk.format("GET", pages[math.random(#pages)], {Authorization = authorization})
  end
  headers["Authorization"] = authorization  -- with the JSON content type
  return post_user()
end

function request()
  counter = counter + 1
  if mode == "paths" then
    return wrk.format("GET", next_line(), headers)
  elseif mode == "get" then
    return wrk.format("GET", "/api/users/" .. next_line(), headers)
  elseif mode == "post" then
    return post_user()
  elseif mode == "mix" then
    return mixed()
  elseif mode == "patch" then
    local body = string.format('{"name":"Patched %s %d %d"}', run_id, thread_index, counter)
    return wrk.format("PATCH", "/api/users/" .. next_line(), headers, body)
  elseif mode == "login" then
    return wrk.format("POST", "/auth/login", headers, lines[1])
  elseif mode == "refresh" then
    return wrk.format("POST", "/auth/refresh", headers, '{"refresh_token":"' .. next_line() .. '"}')
  end
  error("unknown mode " .. tostring(mode))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
