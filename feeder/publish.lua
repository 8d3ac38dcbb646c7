-- One atomic step per token (DESIGN.md §2, invariant 1): append each entry to the token's
-- stream and fold it into the token's book hash, then record last_id/seq/epoch/status.
-- KEYS[1] = P:book:{T}   KEYS[2] = P:stream:{T}
-- ARGV[1] = MAXLEN (approximate)   ARGV[2] = token id
-- ARGV[3] = the seq the feeder last wrote for this token, or "" when it does not know
-- ARGV[4] = the writer's feeder id ("" = anonymous: no fence check, e.g. a replay)
-- ARGV[5] = the writer's fence: its partition lease's fencing number ("" = none)
-- ARGV[6] = how many of the stream's last entries to return before writing ("0" = none):
--           a new leader's first write reads where the old one stopped, atomically
-- ARGV[7..] = one argument per entry: its field/value items joined by the unit separator
--            \31, the first pair ("type", t). One argument per entry instead of ~20 keeps
--            the client's command packing (the feeder's hottest cost) small.
-- seq is assigned here, so it is contiguous per token whatever the feeder does.
-- Returns {last_id, seq, code, writer, before}: code 0 = written; 1 = written, but the hash's
-- seq is not the one this feeder last wrote, or another feeder wrote it since (Redis
-- restarted, failed over or was flushed; a partition changed hands): resync the token;
-- 2 = refused, NOTHING written: the hash holds a higher fence of another writer (`writer`
-- took the partition over; this feeder's lease is gone). `before` = the last ARGV[6]
-- entries, newest first.
-- Fencing (docs/ha.md): the book hash records `writer` and `fence`; only the book hash is
-- read, so the step stays single-slot for Redis Cluster.
local book, stream = KEYS[1], KEYS[2]
local maxlen, token = ARGV[1], ARGV[2]
local me, fence = ARGV[4], tonumber(ARGV[5])
local seq = tonumber(redis.call('HGET', book, 'seq')) or 0
local held = redis.call('HMGET', book, 'writer', 'fence')
local writer = held[1]
-- (the same writer with an older fence is its own earlier lease, lapsed and taken again:
-- its queue is still in order, so its batches from before are not refused)
if fence and (tonumber(held[2]) or 0) > fence and writer ~= me then
  return {'', seq, 2, writer or '', {}}
end
local broken = 0
if ARGV[3] ~= '' and (tonumber(ARGV[3]) ~= seq or (writer and writer ~= me)) then
  broken = 1
end
local before = {}
if (tonumber(ARGV[6]) or 0) > 0 then
  before = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', tonumber(ARGV[6]))
end
-- The status rules, kind -> status before -> status after: wire/status_rules.py is the one
-- table; publisher.py renders it in here when it loads the script (never edit it here).
local RULES, UNKNOWN = @STATUS_RULES@, @UNKNOWN_STATUS@
local status = redis.call('HGET', book, 'status') or 'pending'
if not RULES['book'][status] then status = UNKNOWN end  -- someone else wrote it: untrusted
local was_retired = status == 'retired'
local last_id, epoch, retire_ms

local function split(s)
  local out, start = {}, 1
  while true do
    local i = string.find(s, '\31', start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

local function hset_many(items)
  -- unpack() has a C-stack limit: write in chunks
  local n = #items
  local i = 1
  while i <= n do
    local cmd = {'HSET', book}
    local stop = math.min(i + 3999, n)
    for j = i, stop do cmd[#cmd + 1] = items[j] end
    redis.call(unpack(cmd))
    i = stop + 1
  end
end

local function clear_levels()
  local dels = {}
  for _, k in ipairs(redis.call('HKEYS', book)) do
    local p = string.sub(k, 1, 4)
    if p == 'bid:' or p == 'ask:' then dels[#dels + 1] = k end
  end
  local i = 1
  while i <= #dels do
    local cmd = {'HDEL', book}
    local stop = math.min(i + 3999, #dels)
    for j = i, stop do cmd[#cmd + 1] = dels[j] end
    redis.call(unpack(cmd))
    i = stop + 1
  end
end

local function fold_book(f)
  clear_levels()
  local items = {'market', f.market, 'hash', f.hash, 'ts', f.ts}
  local bids, asks = cjson.decode(f.bids), cjson.decode(f.asks)
  for _, l in ipairs(bids) do items[#items + 1] = 'bid:' .. l[1]; items[#items + 1] = l[2] end
  for _, l in ipairs(asks) do items[#items + 1] = 'ask:' .. l[1]; items[#items + 1] = l[2] end
  items[#items + 1] = 'best_bid'; items[#items + 1] = (bids[1] and bids[1][1]) or ''
  items[#items + 1] = 'best_ask'; items[#items + 1] = (asks[1] and asks[1][1]) or ''
  if f.tick_size then items[#items + 1] = 'tick_size'; items[#items + 1] = f.tick_size end
  if f.last_trade_price then
    items[#items + 1] = 'last_trade_price'; items[#items + 1] = f.last_trade_price
  end
  hset_many(items)
end

local fold = {
  book = fold_book,
  price_change = function(f)
    local level = f.side .. ':' .. f.price
    if f.size == '0' then
      redis.call('HDEL', book, level)
    else
      redis.call('HSET', book, level, f.size)
    end
    redis.call('HSET', book, 'best_bid', f.best_bid, 'best_ask', f.best_ask,
               'hash', f.hash, 'ts', f.ts)
  end,
  trade = function(f)
    redis.call('HSET', book, 'last_trade_price', f.price, 'last_trade_size', f.size,
               'last_trade_side', f.side)
  end,
  tick_size_change = function(f)
    redis.call('HSET', book, 'tick_size', f.new)
  end,
  -- best_bid_ask is the exchange's statement, a cross-check only: the hash's top stays the
  -- one folded from the levels (docs/wire.md), so it never disagrees with them
  -- what a status entry does to the book's status is in RULES; retired also expires it
  status = function(f)
    if f.state == 'retired' then retire_ms = tonumber(f.ttl_ms) end
  end,
}

for i = 7, #ARGV do
  local items = split(ARGV[i])
  seq = seq + 1
  local cmd = {'XADD', stream, 'MAXLEN', '~', maxlen, '*',
               items[1], items[2], 'seq', tostring(seq)}
  local f = {}
  for j = 1, #items - 1, 2 do
    f[items[j]] = items[j + 1]
    if j > 1 then cmd[#cmd + 1] = items[j]; cmd[#cmd + 1] = items[j + 1] end
  end
  if me ~= '' and (items[2] == 'book' or items[2] == 'status') then
    cmd[#cmd + 1] = 'writer'; cmd[#cmd + 1] = me  -- who vouches for this snapshot or marker
  end
  last_id = redis.call(unpack(cmd))
  epoch = f.epoch
  local step = fold[f.type]
  if step then step(f) end
  local kind = f.type
  if kind == 'status' then kind = 'status:' .. tostring(f.state) end
  local row = RULES[kind]
  if row then status = row[status] end
end

if last_id then
  redis.call('HSET', book, 'asset_id', token, 'last_id', last_id, 'seq', tostring(seq),
             'epoch', epoch, 'status', status)
  if status == 'retired' then
    if retire_ms and retire_ms > 0 then
      redis.call('PEXPIRE', book, retire_ms)
      redis.call('PEXPIRE', stream, retire_ms)
    end
  elseif was_retired then  -- carried again (its subscribe or snapshot): keep it for good
    redis.call('PERSIST', book)
    redis.call('PERSIST', stream)
  end
  if me ~= '' then
    redis.call('HSET', book, 'writer', me)
    if fence and fence > (tonumber(held[2]) or 0) then  -- a fence never goes down
      redis.call('HSET', book, 'fence', ARGV[5])
    end
  end
end
return {last_id or '', seq, broken, me, before}
