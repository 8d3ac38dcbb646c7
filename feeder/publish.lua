-- One atomic step per token (DESIGN.md §2, invariant 1): append each entry to the token's
-- stream and fold it into the token's book hash, then record last_id/seq/epoch/status.
-- One call carries the steps of one or more tokens (on Redis Cluster one: a call's keys must
-- share a slot; on one server many, because each call costs Redis and the feeder far more
-- than one more token in it). Each step is whole; the call as a whole is atomic too.
-- KEYS[2i-1] = P:book:{T}, KEYS[2i] = P:stream:{T} of step i
-- ARGV[1] = MAXLEN (approximate)
-- ARGV[2] = the writer's feeder id ("" = anonymous: no fence check, e.g. a replay)
-- ARGV[3] = the steps as one JSON array (decoded by cjson, in C: splitting strings in Lua
--           cost ~3x the XADDs), step i = [token, expected, fence, peek, entries, after]:
--   expected = the seq the feeder last wrote for this token, or "" when it does not know
--   fence    = the writer's fence: its partition lease's fencing number ("" = none)
--   peek     = how many of the stream's last entries to return before writing (0 = none):
--              a new leader's first write reads where the old one stopped, atomically
--   entries  = the entries, oldest first, each its flat field/value items, the first pair
--              ("type", t); a price change as its values alone, in wire/codec.py's
--              PRICE_CHANGE_NAMES order (its first value "price_change", never "type")
--   after    = the book's status after these entries, for each status before them in the
--              order pending, synced, suspect, retired (wire/status_rules.compose: the one
--              table of the rules, applied by the feeder)
-- seq is assigned here, so it is contiguous per token whatever the feeder does.
-- Returns, per step, {last_id, seq, code, writer, before}: code 0 = written; 1 = written,
-- but the hash's seq is not the one this feeder last wrote, or another feeder wrote it since
-- (Redis restarted, failed over or was flushed; a partition changed hands): resync the
-- token; 2 = refused, NOTHING written: the hash holds a higher fence of another writer
-- (`writer` took the partition over; this feeder's lease is gone). `before` = the last
-- `peek` entries, newest first.
-- Fencing (docs/ha.md): the book hash records `writer` and `fence`; only the book hash is
-- read, so a step stays single-slot for Redis Cluster.
local maxlen, me = ARGV[1], ARGV[2]
-- status before -> its index in a step's `after` (publisher.py renders it in from
-- wire/status_rules.py when it loads the script: never edit it here)
local AFTER, UNKNOWN = @STATUS_POSITIONS@, @UNKNOWN_STATUS@
-- a price change sent as its values alone: name -> position (rendered from wire/codec.py)
local PC = @PC_POSITIONS@

local function chunked(name, key, items)
  -- unpack() has a C-stack limit: HSET/HDEL in chunks
  local n, i = #items, 1
  while i <= n do
    local cmd = {name, key}
    local stop = math.min(i + 3999, n)
    for j = i, stop do cmd[#cmd + 1] = items[j] end
    redis.call(unpack(cmd))
    i = stop + 1
  end
end

local function clear_levels(book)
  local dels = {}
  for _, k in ipairs(redis.call('HKEYS', book)) do
    local p = string.sub(k, 1, 4)
    if p == 'bid:' or p == 'ask:' then dels[#dels + 1] = k end
  end
  chunked('HDEL', book, dels)
end

local function fold_book(book, f)
  clear_levels(book)
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
  chunked('HSET', book, items)
end

-- Hash writes are coalesced: each field's last value in the step (levels in `lv`, '0' =
-- gone; the rest in `top`) is written once at the end, not once per entry, because per
-- entry they cost more than the XADD. A book snapshot writes what is pending first: its
-- own fields then win.
local function flush(book, lv, top)
  local sets, dels = {}, {}
  for level, size in pairs(lv) do
    if size == '0' then
      dels[#dels + 1] = level
    else
      sets[#sets + 1] = level; sets[#sets + 1] = size
    end
  end
  for k, v in pairs(top) do sets[#sets + 1] = k; sets[#sets + 1] = v end
  chunked('HSET', book, sets)
  chunked('HDEL', book, dels)
end

-- One table for every entry's fields, emptied after each (a fresh table per entry would
-- grow and rehash several times).
local f = {}

local function step(book, stream, s)
  local token, expected, fence, peek, entries, after = s[1], s[2], tonumber(s[3]), s[4], s[5], s[6]
  local held = redis.call('HMGET', book, 'writer', 'fence', 'seq', 'status')
  local seq = tonumber(held[3]) or 0
  local writer = held[1]
  -- (the same writer with an older fence is its own earlier lease, lapsed and taken again:
  -- its queue is still in order, so its batches from before are not refused)
  if fence and (tonumber(held[2]) or 0) > fence and writer ~= me then
    return {'', seq, 2, writer or '', {}}
  end
  local broken = 0
  if expected ~= '' and (tonumber(expected) ~= seq or (writer and writer ~= me)) then
    broken = 1
  end
  local before = {}
  if peek > 0 then
    before = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', peek)
  end
  local status = held[4] or 'pending'
  if not AFTER[status] then status = UNKNOWN end  -- someone else wrote it: untrusted
  local was_retired = status == 'retired'
  local last_id, epoch, retire_ms
  local lv, top = {}, {}
  for _, e in ipairs(entries) do
    seq = seq + 1
    if e[1] ~= 'type' then  -- a price change's values alone (publisher.py _compact)
      last_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                           'type', 'price_change', 'seq', tostring(seq), @PC_FIELDS@)
      epoch = e[PC.epoch]
      lv[e[PC.side] .. ':' .. e[PC.price]] = e[PC.size]
      top.best_bid, top.best_ask, top.hash, top.ts =
        e[PC.best_bid], e[PC.best_ask], e[PC.hash], e[PC.ts]
    else
      local kind = e[2]
      if me ~= '' and (kind == 'book' or kind == 'status') then
        e[#e + 1] = 'writer'; e[#e + 1] = me  -- who vouches for this snapshot or marker
      end
      last_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
                           'type', kind, 'seq', tostring(seq), unpack(e, 3))
      for j = 1, #e, 2 do f[e[j]] = e[j + 1] end
      epoch = f.epoch
      if kind == 'price_change' then
        lv[f.side .. ':' .. f.price] = f.size
        top.best_bid, top.best_ask, top.hash, top.ts = f.best_bid, f.best_ask, f.hash, f.ts
      elseif kind == 'book' then
        flush(book, {}, top)  -- the snapshot clears every level anyway
        lv, top = {}, {}
        fold_book(book, f)
      elseif kind == 'trade' then
        top.last_trade_price, top.last_trade_size, top.last_trade_side = f.price, f.size, f.side
      elseif kind == 'tick_size_change' then
        top.tick_size = f.new
      elseif kind == 'status' and f.state == 'retired' then  -- retired also expires the keys
        retire_ms = tonumber(f.ttl_ms)
      end
      -- best_bid_ask is the exchange's statement, a cross-check only: the hash's top stays
      -- the one folded from the levels (docs/wire.md), so it never disagrees with them
      for j = 1, #e, 2 do f[e[j]] = nil end
    end
  end
  if last_id then
    status = after[AFTER[status]]
    top.asset_id, top.last_id, top.seq, top.epoch, top.status =
      token, last_id, tostring(seq), epoch, status
    if me ~= '' then
      top.writer = me
      if fence and fence > (tonumber(held[2]) or 0) then  -- a fence never goes down
        top.fence = s[3]
      end
    end
    flush(book, lv, top)
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
end

local out = {}
for i, s in ipairs(cjson.decode(ARGV[3])) do
  out[i] = step(KEYS[2 * i - 1], KEYS[2 * i], s)
end
return out
