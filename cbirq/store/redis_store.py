"""The store on Redis, shared by the CLI and workers on any host.

Keys, all under `cbirq:`:
    indexes                 set of index names
    index:N:meta            JSON {model, weights}, written once (SET NX)
    index:N:dim             feature size, written once by the first chunk
    index:N:paths           hash path -> content hash
    index:N:feats           hash content hash -> float32 bytes
    index:N:log             list of JSON [path, hash]: what query workers have not seen yet
    index:N:gen             bumped when entries are removed (readers reload everything); kept
                            when the index is dropped, so a new one of that name moves it on
    index:N:refs            hash content hash -> how many paths point at it
    index:N:garbage         set of hashes no path points at, deleted at the next generation
    index:N:sources         hash folder -> Unix time it was last indexed
    blob:KEY                image bytes on their way to a worker, with a TTL
    job:ID                  JSON record of a training job
    jobs                    sorted set of job ids by creation time
    workers                 hash: worker name -> JSON of its queues and when its beat lapses
    artifact:KEY            checkpoints and other binary results
    lease:KEY               the owner's name, expiring unless renewed
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from cbirq.errors import Unavailable, UnknownIndex, UnknownJob
from cbirq.settings import Settings, redact
from cbirq.store.base import (
    Cursor,
    Entry,
    IndexInfo,
    check_dim,
    check_index_name,
    log_overgrown,
    whitening_key,
)

PREFIX = "cbirq:"

# Entries and the features they point at change together, in scripts Redis runs atomically,
# with a count of the paths pointing at each hash. A path is only pointed at features that
# exist, so a prune beside an indexer never leaves an entry without its vector (the indexer
# hears which paths to do again). Features no path points at any more are deleted when the
# generation is bumped (a removal, a dropped log): until then a query worker replaying the log
# may still need a re-pointed path's old vector, to take it off its exact row sum.
# KEYS: paths, feats, refs, garbage, then the script's own.
_REFERENCES = """
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

# KEYS[5]: log. ARGV: feature count, hash, vector, ..., then path, hash, ...
# Returns {paths re-pointed, log length, path count, {paths whose features are gone}}.
_ADD = (
    _REFERENCES
    + """
local log = KEYS[5]
local written, i = {}, 2
for _ = 1, tonumber(ARGV[1]) do
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
_REMOVE = (
    _REFERENCES
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

# KEYS[5]: gen, KEYS[6]: log. Readers reload everything, so garbage goes too.
_DROP_LOG = (
    _REFERENCES
    + """
redis.call('DEL', KEYS[6])
sweep(KEYS[5])
return 0
"""
)


def open_url(url: str, settings: Settings) -> RedisStore:
    """The store at a redis://, rediss:// or unix:// URL (the table in cbirq/store/__init__.py)."""
    return RedisStore.from_url(url, timeout=settings.connect_timeout)


class RedisStore:
    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        self.r = client
        self.url = url
        # Generations count from 0: after a flush, an index made again can repeat a cursor.
        self.cache_key = None
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._drop = client.register_script(_DROP_LOG)

    @classmethod
    def from_url(cls, url: str, timeout: float = 3.0) -> RedisStore:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=60,
            # Retries for about 5 s ride out a Redis restart (AOF reload included).
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 8),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        return cls(client, url)

    def _key(self, name: str, part: str) -> str:
        return f"{PREFIX}index:{name}:{part}"

    def ping(self) -> None:
        """Check the connection at once: a server that is not there is reported in the
        connect timeout, not after the retries that ride out a restart."""
        patient = self.r.get_retry()
        self.r.set_retry(Retry(ExponentialBackoff(), 0))
        try:
            self.r.ping()
            self._refuse_eviction()
        except redis.AuthenticationError as exc:
            raise Unavailable(f"Redis at {redact(self.url)} refused the password: {exc}") from None
        except redis.RedisError as exc:
            raise Unavailable(f"cannot reach Redis at {redact(self.url)}: {exc}") from None
        finally:
            self.r.set_retry(patient)

    def _refuse_eviction(self) -> None:
        """An evicting Redis drops whole indexes and queued chunks without a word under memory
        pressure: refuse it (compose runs Redis with noeviction)."""
        try:
            config = self.r.config_get("maxmemory*")
        except redis.ResponseError:  # CONFIG renamed or not allowed to this user: trust it
            return
        policy = config.get("maxmemory-policy", b"noeviction")
        policy = policy.decode() if isinstance(policy, bytes) else policy
        if int(config.get("maxmemory", 0) or 0) and policy != "noeviction":
            raise Unavailable(
                f"Redis at {redact(self.url)} evicts keys when full (maxmemory-policy {policy}): "
                "indexes and queued chunks would vanish; set maxmemory-policy noeviction"
            )

    def open_index(self, name: str, model: str, weights: str) -> IndexInfo:
        check_index_name(name)
        meta = json.dumps({"model": model, "weights": weights})
        pipe = self.r.pipeline()
        pipe.set(self._key(name, "meta"), meta, nx=True)
        pipe.sadd(f"{PREFIX}indexes", name)
        pipe.execute()
        info = self.info(name)
        info.check_model(model, weights)
        return info

    def info(self, name: str) -> IndexInfo:
        check_index_name(name)
        pipe = self.r.pipeline()
        pipe.get(self._key(name, "meta"))
        pipe.get(self._key(name, "dim"))
        pipe.hlen(self._key(name, "paths"))
        pipe.hgetall(self._key(name, "sources"))
        meta, dim, count, sources = pipe.execute()
        if meta is None:
            raise UnknownIndex(f"no index named '{name}' (see `cbirq indexes`)")
        fields = json.loads(meta)
        found = sorted((float(t), f.decode()) for f, t in sources.items())
        updated = found[-1][0] if found else None
        folders = tuple(f for _, f in found)
        return IndexInfo(
            name, fields["model"], fields["weights"], int(dim or 0), count, folders, updated
        )

    def indexes(self) -> list[IndexInfo]:
        names = sorted(n.decode() for n in self.r.smembers(f"{PREFIX}indexes"))
        return [self.info(n) for n in names]

    def entries(self, name: str) -> dict[str, str]:
        # Scanned in pages: HGETALL of a million paths is one reply of ~100 MB.
        pages = self.r.hscan_iter(self._key(name, "paths"), count=10_000)
        return {p.decode(): h.decode() for p, h in pages}

    def known_hashes(self, name: str, hashes: Iterable[str]) -> set[str]:
        hashes = list(dict.fromkeys(hashes))
        if not hashes:
            return set()
        pipe = self.r.pipeline(transaction=False)
        for h in hashes:
            pipe.hexists(self._key(name, "feats"), h)
        return {h for h, known in zip(hashes, pipe.execute()) if known}

    def _counted(self, name: str, *parts: str) -> list[str]:
        return [self._key(name, p) for p in ("paths", "feats", "refs", "garbage", *parts)]

    def add(self, name: str, entries: Sequence[Entry], features: dict[str, bytes]) -> list[str]:
        info = self.info(name)
        dim = check_dim(info, features)
        if dim and not info.dim:
            self.r.set(self._key(name, "dim"), dim, nx=True)
            info = self.info(name)
            check_dim(info, features)
        if not (entries or features):
            return []
        args = [len(features), *(x for pair in features.items() for x in pair)]
        args += [x for entry in entries for x in entry]
        changed, length, count, missing = self._add(keys=self._counted(name, "log"), args=args)
        if changed and log_overgrown(length, count):
            self._drop_log(name)
        return [p.decode() for p in missing]

    def _drop_log(self, name: str) -> None:
        self._drop(keys=self._counted(name, "gen", "log"))

    def remove(self, name: str, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        return int(self._remove(keys=self._counted(name, "gen"), args=paths))

    def note_source(self, name: str, folder: str, when: float) -> None:
        self.r.hset(self._key(name, "sources"), folder, repr(when))

    def drop_index(self, name: str) -> None:
        self.info(name)
        pipe = self.r.pipeline()
        parts = ("meta", "dim", "paths", "feats", "refs", "garbage", "log", "sources")
        pipe.delete(*(self._key(name, part) for part in parts))
        pipe.incr(self._key(name, "gen"))
        pipe.srem(f"{PREFIX}indexes", name)
        pipe.delete(f"{PREFIX}artifact:{whitening_key(name)}")
        pipe.execute()

    def features(self, name: str, hashes: Sequence[str]) -> list[bytes | None]:
        if not hashes:
            return []
        return self.r.hmget(self._key(name, "feats"), list(hashes))

    def changes(self, name: str, since: Cursor | None) -> tuple[Cursor, list[Entry] | None]:
        pipe = self.r.pipeline()
        pipe.get(self._key(name, "gen"))
        pipe.llen(self._key(name, "log"))
        gen, length = pipe.execute()
        cursor = (int(gen or 0), int(length))
        if since is None or since[0] != cursor[0] or since[1] > cursor[1]:
            return cursor, None
        raw = self.r.lrange(self._key(name, "log"), since[1], cursor[1] - 1)
        return cursor, [tuple(json.loads(e)) for e in raw]

    # Image bytes on their way to workers that cannot see the client's files.

    def put_blobs(self, blobs: dict[str, bytes], ttl: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for key, data in blobs.items():
            pipe.set(f"{PREFIX}blob:{key}", data, ex=ttl)
        pipe.execute()

    def get_blob(self, key: str) -> bytes | None:
        return self.r.get(f"{PREFIX}blob:{key}")

    def delete_blobs(self, keys: Iterable[str]) -> None:
        keys = [f"{PREFIX}blob:{k}" for k in keys]
        if keys:
            self.r.delete(*keys)

    def put_job(self, job: dict) -> None:
        pipe = self.r.pipeline()
        pipe.set(f"{PREFIX}job:{job['id']}", json.dumps(job))
        pipe.zadd(f"{PREFIX}jobs", {job["id"]: job["created"]}, nx=True)
        pipe.execute()

    def get_job(self, job_id: str) -> dict:
        raw = self.r.get(f"{PREFIX}job:{job_id}")
        if raw is None:
            raise UnknownJob(f"no job with id '{job_id}' (see `cbirq jobs`)")
        return json.loads(raw)

    def jobs(self, limit: int = 20) -> list[dict]:
        ids = [i.decode() for i in self.r.zrevrange(f"{PREFIX}jobs", 0, limit - 1)]
        raw = self.r.mget([f"{PREFIX}job:{i}" for i in ids]) if ids else []
        return [json.loads(r) for r in raw if r is not None]

    def job_ids(self, prefix: str, limit: int = 2) -> list[str]:
        pattern = _glob_escape(prefix) + "*"
        found = []
        for member, _ in self.r.zscan_iter(f"{PREFIX}jobs", match=pattern, count=500):
            found.append(member.decode())
            if len(found) >= limit:
                break
        return found

    def beat(self, worker: str, info: dict, ttl: float) -> None:
        record = json.dumps({**info, "until": time.time() + ttl})
        self.r.hset(f"{PREFIX}workers", worker, record)

    def workers(self) -> dict[str, dict]:
        now, live, lapsed = time.time(), {}, []
        for name, raw in self.r.hgetall(f"{PREFIX}workers").items():
            info = json.loads(raw)
            if info.pop("until") > now:
                live[name.decode()] = info
            else:
                lapsed.append(name)
        if lapsed:  # a worker that died says nothing more: its last beat goes here
            self.r.hdel(f"{PREFIX}workers", *lapsed)
        return live

    def put_artifact(self, key: str, data: bytes) -> None:
        self.r.set(f"{PREFIX}artifact:{key}", data)

    def get_artifact(self, key: str) -> bytes | None:
        return self.r.get(f"{PREFIX}artifact:{key}")

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        name = f"{PREFIX}lease:{key}"

        def attempt(pipe: redis.client.Pipeline) -> bool:
            holder = pipe.get(name)  # WATCHed: a rival's claim in between aborts and retries
            if holder is not None and holder.decode() != owner:
                return False
            pipe.multi()
            pipe.set(name, owner, px=max(1, int(ttl * 1000)))
            return True

        return self.r.transaction(attempt, name, value_from_callable=True)

    def release(self, key: str, owner: str) -> None:
        name = f"{PREFIX}lease:{key}"

        def attempt(pipe: redis.client.Pipeline) -> None:
            if pipe.get(name) == owner.encode():
                pipe.multi()
                pipe.delete(name)

        self.r.transaction(attempt, name)

    def memory_used(self) -> int:
        return int(self.r.info("memory")["used_memory"])


def _glob_escape(text: str) -> str:
    """`text` matched literally by a Redis glob pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
