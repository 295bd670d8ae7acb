-- Verdict's shared feature store: the commit of entities' new states with
-- what each of their new events read, each only if the entity is still as
-- Verdict presumed it — the version it last wrote or read, or no state at
-- all — and none of those events has a dedup key yet (Redis runs a script
-- with nothing in between). One call commits every entity of a lane's
-- round trip on a single server, or one entity on a cluster (a script's
-- keys share a slot).
--
-- ARGV[1]  the dedup keys' time to live (ms)
-- Then, per entity, in order:
--   KEYS   its state (8 bytes of version, then the states), then the
--          dedup keys of the n events this commit adds
--   ARGV   n; the version Verdict presumes ("" for no state);
--          the new state, with a new version; the state's time to live
--          (ms: its longest window); then what each event read
--
-- Reply, per entity: 1 when committed. Otherwise the entity is not as
-- presumed (another instance or lane committed first, or an event is a
-- redelivery): nothing of it is written, and its item is what it is — the
-- state and the n dedup keys, as MGET answers them — so that Verdict
-- computes once more from that, without another read.

local out = {}
local k, a = 1, 2
local dedup_ttl = ARGV[1]
while k <= #KEYS do
  local n = tonumber(ARGV[a])
  local state = redis.call('GET', KEYS[k])
  local version = state and string.sub(state, 1, 8) or ''
  if version == ARGV[a + 1]
      and (n == 0 or redis.call('EXISTS', unpack(KEYS, k + 1, k + n)) == 0) then
    redis.call('SET', KEYS[k], ARGV[a + 2], 'PX', ARGV[a + 3])
    for i = 1, n do
      redis.call('SET', KEYS[k + i], ARGV[a + 3 + i], 'PX', dedup_ttl)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = redis.call('MGET', unpack(KEYS, k, k + n))
  end
  k = k + 1 + n
  a = a + 4 + n
end
return out
