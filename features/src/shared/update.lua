-- Verdict's shared feature store: one entity's read-then-update for one
-- event, atomically (Redis runs a script with nothing in between).
--
-- KEYS[1]  the entity's state hash (one field per feature)
-- KEYS[2]  the dedup key of this event on this entity
-- ARGV     t, add (1/0), state ttl ms, dedup ttl ms, then per feature
--          six values: kind, window ms, bucket width ms, bucket index of t,
--          applies (1/0), value
--
-- Kinds: c count, s sum, a avg, n min, x max, d distinct, l last,
-- e secs since last. The hash holds field "<f>" per feature; a distinct
-- count past its exact list also holds its sketch, 12 rows of 64
-- registers, in "<f>r", and the merge of those 12 rows in "<f>m" (kept as
-- registers are set, rebuilt when rows are cleared), so that an event in
-- the newest bucket reads the sketch without merging it. A distinct value
-- is "hash,register,rank" (hash in hex, computed by Verdict); a last value
-- is its typed text ("n…", "s…", …).
--
-- The reply is what the event reads, before its own update, one item per
-- feature: "m" (missing) or a tag, the payload's length, ':' and the
-- payload; tags: n number, v typed last value, h sketch (exact count, ',',
-- 64 merged registers). It is kept at KEYS[2], so that a redelivery of the
-- event (on any instance) answers the same and adds nothing: its first
-- byte is "F" for a first delivery, "D" for a redelivery.
--
-- The arithmetic follows the local store's (features/src/entity.rs) step
-- for step, in the same order, so both answer the same numbers.

local seen = redis.call('GET', KEYS[2])
if seen then
  return 'D' .. string.sub(seen, 2)
end

local B = 12
local NONE = -9.0e18
local t = tonumber(ARGV[1])
local add = ARGV[2] == '1'
local nf = (#ARGV - 4) / 6

local function slot(i) return i % B end
local function in_window(j, i) return j <= i and j > i - B end
local function item(tag, payload) return tag .. #payload .. ':' .. payload end
local function num(x) return item('n', string.format('%.17g', x)) end

-- Moves a ring's head to i, calling clear on each bucket passed over;
-- false when i is older than the ring's span.
local function advance(st, i, clear)
  local head = st[1]
  if head == NONE then
    for b = 0, B - 1 do clear(b) end
    st[1] = i
    return true
  end
  if i > head then
    local n = math.min(i - head, B)
    for k = 1, n do clear(slot(head + k)) end
    st[1] = i
    return true
  end
  return i > head - B
end

local function zeros(n) return string.rep('\0', n) end

-- Raises register reg of row to rank; the registers, and whether they
-- changed.
local function hll_set(regs, row, reg, rank)
  local p = row * 64 + reg + 1
  if string.byte(regs, p) < rank then
    return string.sub(regs, 1, p - 1) .. string.char(rank) .. string.sub(regs, p + 1), true
  end
  return regs, false
end

local ZERO_ROW = zeros(64)

-- Clears one row; the registers, and whether they changed.
local function clear_row(regs, row)
  local p = row * 64
  if string.sub(regs, p + 1, p + 64) == ZERO_ROW then
    return regs, false
  end
  return string.sub(regs, 1, p) .. ZERO_ROW .. string.sub(regs, p + 65), true
end

-- The merge (register by register, the largest) of the rows j with
-- lo < j <= hi, as 64 bytes.
local function merge_rows(regs, lo, hi)
  local merged = {}
  for r = 1, 64 do merged[r] = 0 end
  for j = hi, lo + 1, -1 do
    local row = slot(j) * 64
    for r = 1, 64 do
      local v = string.byte(regs, row + r)
      if v > merged[r] then merged[r] = v end
    end
  end
  return string.char(unpack(merged))
end

local out = {}
local writes = {}
-- Every field of the entity this event reads, in one HMGET: "<f>" per
-- feature, and "<f>r", "<f>m" per distinct count (at at[f] + 1, + 2).
local fields = {}
local at = {}
for f = 1, nf do
  local name = tostring(f)
  table.insert(fields, name)
  at[f] = #fields
  if ARGV[4 + (f - 1) * 6 + 1] == 'd' then
    table.insert(fields, name .. 'r')
    table.insert(fields, name .. 'm')
  end
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))

for f = 1, nf do
  local a = 4 + (f - 1) * 6
  local kind = ARGV[a + 1]
  local w = tonumber(ARGV[a + 2])
  local width = tonumber(ARGV[a + 3])
  local i = tonumber(ARGV[a + 4])
  local applies = add and ARGV[a + 5] == '1'
  local value = ARGV[a + 6]
  local st = stored[at[f]] and cmsgpack.unpack(stored[at[f]]) or nil
  local changed = false

  if kind == 'c' or kind == 's' or kind == 'a' or kind == 'n' or kind == 'x' then
    -- st: head, then 12 counts (c, a) and/or 12 numbers (s, a, n, x);
    -- an empty extreme is false.
    local nb = (kind == 'a') and 2 * B or B
    if not st then
      st = { NONE }
      for b = 1, nb do st[b + 1] = (kind == 'n' or kind == 'x') and false or 0 end
    end
    local cnt, sum = 0, 0.0
    local ext = false
    local head = st[1]
    if head ~= NONE then
      for k = 0, B - 1 do
        local j = head - k
        if in_window(j, i) then
          local b = slot(j)
          if kind == 'c' then cnt = cnt + st[2 + b]
          elseif kind == 's' then sum = sum + st[2 + b]
          elseif kind == 'a' then
            cnt = cnt + st[2 + b]
            sum = sum + st[2 + B + b]
          else
            local e = st[2 + b]
            if e and (not ext or (kind == 'n' and e < ext) or (kind == 'x' and e > ext)) then
              ext = e
            end
          end
        end
      end
    end
    if kind == 'c' then out[f] = num(cnt)
    elseif kind == 's' then out[f] = num(sum)
    elseif kind == 'a' then out[f] = cnt > 0 and num(sum / cnt) or 'm'
    else out[f] = ext and num(ext) or 'm' end

    local x = tonumber(value)
    if applies and (kind == 'c' or x) then
      local ok = advance(st, i, function(b)
        if kind == 'c' then st[2 + b] = 0
        elseif kind == 's' then st[2 + b] = 0.0
        elseif kind == 'a' then st[2 + b] = 0; st[2 + B + b] = 0.0
        else st[2 + b] = false end
      end)
      if ok then
        local b = slot(i)
        if kind == 'c' then st[2 + b] = st[2 + b] + 1
        elseif kind == 's' then st[2 + b] = st[2 + b] + x
        elseif kind == 'a' then
          st[2 + b] = st[2 + b] + 1
          st[2 + B + b] = st[2 + B + b] + x
        else
          local e = st[2 + b]
          if (not e) or (kind == 'n' and x < e) or (kind == 'x' and x > e) then
            st[2 + b] = x
          end
        end
      end
      changed = true
    end

  elseif kind == 'd' then
    -- st: head, inexact until, then the exact list as hash, last seen,
    -- register, rank per entry.
    if not st then st = { NONE, NONE } end
    local rfield, mfield = fields[at[f] + 1], fields[at[f] + 2]
    local regs = stored[at[f] + 1] or nil
    local merge = stored[at[f] + 2] or nil
    -- Whether merge must be rebuilt from regs before it is kept.
    local stale = regs ~= nil and merge == nil
    local n = (#st - 2) / 4
    local exact = 0
    for e = 0, n - 1 do
      if st[3 + 4 * e + 1] > t - w then exact = exact + 1 end
    end
    if t >= st[2] then
      out[f] = num(exact)
    else
      local head = st[1]
      local merged
      if not regs or head == NONE then
        merged = ZERO_ROW
      elseif i == head and not stale then
        -- The window is every row: the kept merge.
        merged = merge
      else
        merged = merge_rows(regs, math.max(i, head) - B, math.min(i, head))
      end
      out[f] = item('h', exact .. ',' .. merged)
    end

    if applies and value ~= '' then
      local h, reg, rank = string.match(value, '^(%x+),(%d+),(%d+)$')
      reg = tonumber(reg)
      rank = tonumber(rank)
      local regs_changed = false
      local ok = advance(st, i, function(b)
        if regs then
          local cleared
          regs, cleared = clear_row(regs, b)
          if cleared then regs_changed = true; stale = true end
        end
      end)
      if ok and h then
        local found = nil
        for e = 0, n - 1 do
          if st[3 + 4 * e] == h then found = e; break end
        end
        if found then
          local p = 3 + 4 * found + 1
          if t > st[p] then st[p] = t end
        elseif n < 32 then
          local p = 3 + 4 * n
          st[p] = h; st[p + 1] = t; st[p + 2] = reg; st[p + 3] = rank
        else
          if not regs then
            -- First overflow: the sketch starts from every value the
            -- exact list holds, in the bucket it was last seen in.
            regs = zeros(B * 64)
            for e = 0, n - 1 do
              local p = 3 + 4 * e
              local j = math.floor(st[p + 1] / width)
              if in_window(j, st[1]) then
                regs = hll_set(regs, slot(j), st[p + 2], st[p + 3])
              end
            end
            regs_changed = true
            stale = true
          end
          local oldest, oldest_t = 0, nil
          for e = 0, n - 1 do
            local et = st[3 + 4 * e + 1]
            if oldest_t == nil or et < oldest_t then oldest = e; oldest_t = et end
          end
          if oldest_t > t - w then
            st[2] = math.max(st[2], oldest_t + w)
          end
          local p = 3 + 4 * oldest
          st[p] = h; st[p + 1] = t; st[p + 2] = reg; st[p + 3] = rank
        end
        if regs then
          local set
          regs, set = hll_set(regs, slot(i), reg, rank)
          if set then
            regs_changed = true
            if not stale then
              -- Every row is in the merge: raise it as the row was.
              merge = hll_set(merge, 0, reg, rank)
              table.insert(writes, mfield)
              table.insert(writes, merge)
            end
          end
        end
      end
      if regs_changed then table.insert(writes, rfield); table.insert(writes, regs) end
      changed = true
    end
    if stale then
      table.insert(writes, mfield)
      table.insert(writes, merge_rows(regs, st[1] - B, st[1]))
    end

  elseif kind == 'l' then
    -- st: when, the typed value ("" while none)
    if not st then st = { NONE, '' } end
    out[f] = st[2] ~= '' and item('v', st[2]) or 'm'
    if applies and value ~= '' and t >= st[1] then
      st[1] = t
      st[2] = value
      changed = true
    end

  elseif kind == 'e' then
    if not st then st = { NONE } end
    out[f] = st[1] ~= NONE and num(math.max(t - st[1], 0) / 1000) or 'm'
    if applies then
      st[1] = math.max(st[1], t)
      changed = true
    end
  else
    return redis.error_reply('verdict: unknown feature kind ' .. tostring(kind))
  end

  if changed then
    table.insert(writes, fields[at[f]])
    table.insert(writes, cmsgpack.pack(st))
  end
end

if #writes > 0 then
  redis.call('HSET', KEYS[1], unpack(writes))
end
if add then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local reply = 'F' .. table.concat(out)
redis.call('SET', KEYS[2], reply, 'PX', ARGV[4])
return reply
