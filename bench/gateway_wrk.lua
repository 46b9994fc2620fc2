-- wrk script for bench/gateway.py: real signed WeChat text messages to /wechat, plain mode.
--
--   wrk -t1 -c50 -d5s --latency -s bench/gateway_wrk.lua http://127.0.0.1:PORT/wechat -- \
--       PATH_AND_QUERY TAG MSGID_PREFIX SENDERS TEXT1 EXPECT1 [TEXT2 EXPECT2 ...]
--
-- PATH_AND_QUERY is /wechat?timestamp=..&nonce=..&signature=.., signed once by Python for the whole run.
-- Each sender is one openid that sends TEXT1, TEXT2, ... in turn, one message at a time: wrk gives a script
-- no connection handle, so a sender is taken from an idle queue when a connection asks for its next request
-- and goes back to the queue when its reply comes back (the reply's ToUserName names it). With as many
-- senders as connections, every connection carries one sender's conversation at a time, never two messages of
-- one sender at once, and each sender's texts strictly alternate, so the conversation state is real.
-- Every MsgId is unique (prefix, thread id, per-thread counter), so no request is a retry.
-- A reply that lacks EXPECTn (a snippet of what the Python check got back for TEXTn) counts as a mismatch.
-- done() prints "steward-bench: mismatches M unrouted U extra_senders X" for bench/gateway.py to read.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local path, tag, prefix, senders
local texts, expects = {}, {}
local state = {}            -- openid -> { step = next text index, expect = snippet for the reply in flight }
local queue, head, tail = {}, 1, 0
local counter = 0
local headers = { ["Content-Type"] = "text/xml; charset=utf-8" }

mismatches = 0   -- replies without the expected text (or not 200)
unrouted = 0     -- replies that name no sender of ours (the sender is dropped; a fresh one takes its place)
extra = 0        -- fresh senders created because the idle queue was empty

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
  path, tag, prefix, senders = args[1], args[2], args[3], tonumber(args[4])
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
      return wrk.format("POST", path, headers, "<xml></xml>")
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
  local m, u, x = 0, 0, 0
  for _, thread in ipairs(threads) do
    m = m + thread:get("mismatches")
    u = u + thread:get("unrouted")
    x = x + thread:get("extra")
  end
  io.write(string.format("steward-bench: mismatches %d unrouted %d extra_senders %d\n", m, u, x))
end
