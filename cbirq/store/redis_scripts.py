"""The Lua scripts the Redis store runs: each one atomic on the server (cbirq.store.redis_store
names the keys)."""

# Entries and the features they point at change together, in scripts Redis runs atomically,
# with a count of the paths pointing at each hash. A path is only pointed at features that
# exist, so a prune beside an indexer never leaves an entry without its vector (the indexer
# hears which paths to do again). Features no path points at any more are deleted when the
# generation is bumped (a removal, a dropped log): until then a query worker replaying the log
# may still need a re-pointed path's old vector, to take it off its exact row sum.
# KEYS: paths, feats, refs, garbage, then the script's own.
REFERENCES = """
local paths, feats, refs, garbage = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', refs) == 0 then  -- counted once for an index from before the counts
  for _, h in ipairs(redis.call('HVALS', paths)) do redis.call('HINCRBY', refs, h, 1) end
end
local function release(h)
  if redis.call('HINCRBY', refs, h, -1) <= 0 then
    redis.call('HDEL', refs, h)
    redis.call('SADD', garbage, h)
  end
end
local function sweep(gen)
  for _, h in ipairs(redis.call('SMEMBERS', garbage)) do
    if not redis.call('HGET', refs, h) then redis.call('HDEL', feats, h) end
  end
  redis.call('DEL', garbage)
  redis.call('INCR', gen)
end
"""

# KEYS[5]: log, KEYS[6]: id. ARGV: the index's id, feature count, hash, vector, ..., then path,
# hash, ... Returns {paths re-pointed, log length, path count, {paths whose features are gone}},
# or false, writing nothing, if the index is not the one with that id (removed meanwhile).
ADD = (
    REFERENCES
    + """
local log = KEYS[5]
if redis.call('GET', KEYS[6]) ~= ARGV[1] then return false end
local written, i = {}, 3
for _ = 1, tonumber(ARGV[2]) do
  redis.call('HSET', feats, ARGV[i], ARGV[i + 1])
  table.insert(written, ARGV[i])
  i = i + 2
end
local missing, changed = {}, 0
while i <= #ARGV do
  local p, h = ARGV[i], ARGV[i + 1]
  i = i + 2
  local old = redis.call('HGET', paths, p)
  if old ~= h then
    if redis.call('HEXISTS', feats, h) == 0 then
      table.insert(missing, p)
    else
      redis.call('HSET', paths, p, h)
      redis.call('HINCRBY', refs, h, 1)
      if old then release(old) end
      redis.call('RPUSH', log, cjson.encode({p, h}))
      changed = changed + 1
    end
  end
end
for _, h in ipairs(written) do  -- features whose every path was refused: no reader saw them
  if not redis.call('HGET', refs, h) then redis.call('HDEL', feats, h) end
end
return {changed, redis.call('LLEN', log), redis.call('HLEN', paths), missing}
"""
)

# KEYS[5]: gen. ARGV: paths. Returns how many were there.
REMOVE = (
    REFERENCES
    + """
local removed = 0
for _, p in ipairs(ARGV) do
  local old = redis.call('HGET', paths, p)
  if old then
    redis.call('HDEL', paths, p)
    release(old)
    removed = removed + 1
  end
end
sweep(KEYS[5])
return removed
"""
)

# KEYS: meta, id, gen, log; ARGV: an id for an index from before ids. Returns the index's
# {id or "", generation, log length}: its id is made here, once, if it has none.
CURSOR = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[2], ARGV[1], 'NX') end
local id, gen = redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or '0'
return {id, gen, redis.call('LLEN', KEYS[4])}
"""

# KEYS[5]: gen, KEYS[6]: log. Readers reload everything, so garbage goes too.
DROP_LOG = (
    REFERENCES
    + """
redis.call('DEL', KEYS[6])
sweep(KEYS[5])
return 0
"""
)
