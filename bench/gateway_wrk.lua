-- wrk script for bench/gateway.py: real signed WeChat text messages to /wechat, plain mode.
--
--   wrk -t1 -c50 -d5s --latency -s bench/gateway_wrk.lua http://127.0.0.1:PORT/wechat -- \
--       POOL_FILE TAG MSGID_PREFIX SENDERS TEXT1 EXPECT1 [TEXT2 EXPECT2 ...]
--
-- POOL_FILE holds one /wechat?timestamp=..&nonce=..&signature=.. per line, each with its own nonce, signed by
-- Python just before the run (wrk's LuaJIT has no SHA1). Every request takes the next line and no line is ever
-- used twice: the bot ties a (timestamp, nonce, signature) to the first body it came with and refuses it with
-- any other, as a replayed signed URL. Run with one thread (-t1): each thread reads the whole file. A run that
-- outlasts the pool sends unsigned requests (403, counted by wrk as non-2xx) and done() reports it.
-- Each sender is one openid that sends TEXT1, TEXT2, ... in turn, one message at a time: wrk gives a script
-- no connection handle, so a sender is taken from an idle queue when a connection asks for its next request
-- and goes back to the queue when its reply comes back (the reply's ToUserName names it). With as many
-- senders as connections, every connection carries one sender's conversation at a time, never two messages of
-- one sender at once, and each sender's texts strictly alternate, so the conversation state is real.
-- Every MsgId is unique (prefix, thread id, per-thread counter), so no request is a retry.
-- A reply that lacks EXPECTn (a snippet of what the Python check got back for TEXTn) counts as a mismatch.
-- done() prints "steward-bench: mismatches M unrouted U extra_senders X exhausted E" for bench/gateway.py.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local tag, prefix, senders
local pool, used = {}, 0    -- signed path-and-query strings; how many were taken
local texts, expects = {}, {}
local state = {}            -- openid -> { step = next text index, expect = snippet for the reply in flight }
local queue, head, tail = {}, 1, 0
local counter = 0
local headers = { ["Content-Type"] = "text/xml; charset=utf-8" }

mismatches = 0   -- replies without the expected text (or not 200)
unrouted = 0     -- replies that name no sender of ours (the sender is dropped; a fresh one takes its place)
extra = 0        -- fresh senders created because the idle queue was empty
exhausted = 0    -- requests sent after the pool ran out (unsigned, refused)

local function cdata(value)
  return "<![CDATA[" .. value:gsub("%]%]>", "]]]]><![CDATA[>") .. "]]>"
end

local function push(openid)
  tail = tail + 1
  queue[tail] = openid
end

local function pop()
  if head > tail then return nil end
  local openid = queue[head]
  queue[head] = nil
  head = head + 1
  return openid
end

local function new_sender(i)
  local openid = string.format("o_wrk_%s_%d_%03d", tag, tid, i)
  state[openid] = { step = 1, expect = "" }
  return openid
end

function init(args)
  tag, prefix, senders = args[2], args[3], tonumber(args[4])
  if tid ~= 1 then
    error("gateway_wrk.lua runs on one thread (-t1): a second thread would reuse the pool's signatures")
  end
  for line in io.lines(args[1]) do
    pool[#pool + 1] = line
  end
  for i = 5, #args - 1, 2 do
    texts[#texts + 1] = args[i]
    expects[#expects + 1] = args[i + 1]
  end
  for i = 1, senders do
    push(new_sender(i))
  end
end

local verified = false

function request()
  if not verified then
    verified = true
    if tid == 1 then
      -- wrk calls request() once on the first thread to check the request before any connection sends it:
      -- answer with a throwaway sender so that no real sender's turn is lost.
      return wrk.format("POST", "/wechat", headers, "<xml></xml>")
    end
  end
  local openid = pop()
  if openid == nil then
    extra = extra + 1
    openid = new_sender(senders + extra)
  end
  local s = state[openid]
  local k = s.step
  s.step = k % #texts + 1
  s.expect = expects[k]
  counter = counter + 1
  used = used + 1
  local path = pool[used]
  if path == nil then
    exhausted = exhausted + 1
    path = "/wechat"
  end
  local body = "<xml><ToUserName><![CDATA[gh_steward_demo]]></ToUserName><FromUserName>" .. cdata(openid)
    .. "</FromUserName><CreateTime>" .. os.time() .. "</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>"
    .. cdata(texts[k]) .. "</Content><MsgId>" .. string.format("%s%02d%09d", prefix, tid, counter)
    .. "</MsgId></xml>"
  return wrk.format("POST", path, headers, body)
end

function response(status, _headers, body)
  local openid = body and body:match("<ToUserName><!%[CDATA%[(.-)%]%]></ToUserName>")
  local s = openid and state[openid]
  if s == nil then
    unrouted = unrouted + 1
    return
  end
  if status ~= 200 or not body:find(s.expect, 1, true) then
    mismatches = mismatches + 1
  end
  push(openid)
end

function done(_summary, _latency, _requests)
  local m, u, x, e = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    m = m + thread:get("mismatches")
    u = u + thread:get("unrouted")
    x = x + thread:get("extra")
    e = e + thread:get("exhausted")
  end
  io.write(string.format("steward-bench: mismatches %d unrouted %d extra_senders %d exhausted %d\n", m, u, x, e))
end
