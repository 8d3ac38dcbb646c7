-- One atomic step per token (DESIGN.md §2, invariant 1): append each entry to the token's
-- stream and fold it into the token's book hash, then record last_id/seq/epoch/status.
-- KEYS[1] = P:book:{T}   KEYS[2] = P:stream:{T}
-- ARGV[1] = MAXLEN (approximate)   ARGV[2] = token id
-- ARGV[3] = the seq the feeder last wrote for this token, or "" when it does not know
-- ARGV[4] = the writer's feeder id ("" = anonymous: no fence check, e.g. a replay)
-- ARGV[5] = the writer's fence: its partition lease's fencing number ("" = none)
-- ARGV[6] = how many of the stream's last entries to return before writing ("0" = none):
--           a new leader's first write reads where the old one stopped, atomically
-- ARGV[7] = the entries, oldest first, as one JSON array of arrays: each entry's flat
--           field/value items, the first pair ("type", t). One string decoded by cjson (C)
--           costs Redis no more than ~20 arguments each, and the feeder far less to pack;
--           splitting a packed string in Lua cost ~3x the XADD itself.
-- ARGV[8..11] = the book's status after these entries, for each status before them in the
--           order pending, synced, suspect, retired (wire/status_rules.compose: the one
--           table of the rules, applied by the feeder; building it here cost every call).
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
local held = redis.call('HMGET', book, 'writer', 'fence', 'seq', 'status')
local seq = tonumber(held[3]) or 0
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
-- status before -> the ARGV index of the status after (publisher.py renders it in from
-- wire/status_rules.py when it loads the script: never edit it here)
local AFTER, UNKNOWN = @STATUS_POSITIONS@, @UNKNOWN_STATUS@
local status = held[4] or 'pending'
if not AFTER[status] then status = UNKNOWN end  -- someone else wrote it: untrusted
local was_retired = status == 'retired'
local last_id, epoch, retire_ms

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

-- Hash writes are coalesced: each field's last value in the step (levels in `lv`, '0' =
-- gone; the rest in `top`) is written once at the end, not once per entry, because per
-- entry they cost more than the XADD. A book snapshot writes what is pending first: its
-- own fields then win.
local lv, top = {}, {}

local function flush()
  -- one HSET of every pending field, one HDEL of the levels gone
  local sets, dels = {}, {}
  for level, size in pairs(lv) do
    if size == '0' then
      dels[#dels + 1] = level
    else
      sets[#sets + 1] = level; sets[#sets + 1] = size
    end
  end
  for k, v in pairs(top) do sets[#sets + 1] = k; sets[#sets + 1] = v end
  if #sets > 0 then hset_many(sets) end
  local i = 1
  while i <= #dels do
    local cmd = {'HDEL', book}
    local stop = math.min(i + 3999, #dels)
    for j = i, stop do cmd[#cmd + 1] = dels[j] end
    redis.call(unpack(cmd))
    i = stop + 1
  end
  lv, top = {}, {}
end

local fold = {
  book = function(f)
    lv = {}  -- the snapshot clears every level anyway
    flush()
    fold_book(f)
  end,
  price_change = function(f)
    lv[f.side .. ':' .. f.price] = f.size
    top.best_bid, top.best_ask, top.hash, top.ts = f.best_bid, f.best_ask, f.hash, f.ts
  end,
  trade = function(f)
    top.last_trade_price, top.last_trade_size, top.last_trade_side = f.price, f.size, f.side
  end,
  tick_size_change = function(f)
    top.tick_size = f.new
  end,
  -- best_bid_ask is the exchange's statement, a cross-check only: the hash's top stays the
  -- one folded from the levels (docs/wire.md), so it never disagrees with them
  -- what a status entry does to the book's status is in ARGV[8..]; retired also expires it
  status = function(f)
    if f.state == 'retired' then retire_ms = tonumber(f.ttl_ms) end
  end,
}

-- One table for every entry's fields, emptied after each (a fresh table per entry would
-- grow and rehash several times).
local f = {}
for _, e in ipairs(cjson.decode(ARGV[7])) do
  local kind = e[2]
  if me ~= '' and (kind == 'book' or kind == 'status') then
    e[#e + 1] = 'writer'; e[#e + 1] = me  -- who vouches for this snapshot or marker
  end
  seq = seq + 1
  last_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                       'type', kind, 'seq', tostring(seq), unpack(e, 3))
  for j = 1, #e, 2 do f[e[j]] = e[j + 1] end
  epoch = f.epoch
  local step = fold[kind]
  if step then step(f) end
  for j = 1, #e, 2 do f[e[j]] = nil end
end

if last_id then
  status = ARGV[AFTER[status]]
  top.asset_id, top.last_id, top.seq, top.epoch, top.status =
    token, last_id, tostring(seq), epoch, status
  if me ~= '' then
    top.writer = me
    if fence and fence > (tonumber(held[2]) or 0) then  -- a fence never goes down
      top.fence = ARGV[5]
    end
  end
  flush()
  if status == 'retired' then
    if retire_ms and retire_ms > 0 then
      redis.call('PEXPIRE', book, retire_ms)
      redis.call('PEXPIRE', stream, retire_ms)
    end
  elseif was_retired then  -- carried again (its subscribe or snapshot): keep it for good
    redis.call('PERSIST', book)
    redis.call('PERSIST', stream)
  end
end
return {last_id or '', seq, broken, me, before}
