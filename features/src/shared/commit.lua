-- Verdict's shared feature store: the commit of one entity's new state
-- with what each of its new events read, if nobody changed the entity
-- since Verdict read it (Redis runs a script with nothing in between).
--
-- KEYS[1]     the entity's state: 8 bytes of version, then the states
-- KEYS[2..n]  the dedup keys of the events this commit adds
-- ARGV[1]     the version Verdict read ("" when the entity had no state)
-- ARGV[2]     the new state, with a new version
-- ARGV[3]     the state's time to live (ms): its longest window
-- ARGV[4]     the dedup keys' time to live (ms)
-- ARGV[5..]   what each event read, in KEYS' order
--
-- Reply: 1 when committed. Otherwise the entity changed (another instance
-- or lane committed first): nothing is written, and the reply is what
-- Verdict would read again — the state and every dedup key, as MGET
-- answers them — so that it computes once more without another round trip.

local state = redis.call('GET', KEYS[1])
local version = state and string.sub(state, 1, 8) or ''
if version ~= ARGV[1] then
  return redis.call('MGET', unpack(KEYS))
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 3], 'PX', ARGV[4])
end
return 1
