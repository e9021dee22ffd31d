"""The store on Redis, shared by the CLI and workers on any host.

Keys, all under `cbirq:`:
    indexes                 set of index names
    index:N:meta            JSON {model, weights}, written once (SET NX)
    index:N:id              random hex drawn when the index is made (SET NX): with it, a
                            reader's cursor never repeats for another index of that name, even
                            after Redis lost its data (generations count from 0 again)
    index:N:dim             feature size, written once by the first chunk
    index:N:paths           hash path -> content hash
    index:N:feats           hash content hash -> float16 bytes (float32 in older indexes)
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
from cbirq.store import redis_scripts as scripts
from cbirq.store.base import (
    Cursor,
    Entry,
    IndexInfo,
    artifact_values,
    check_dim,
    check_index_name,
    index_removed,
    joined_artifact,
    log_overgrown,
    new_index_id,
    same_index,
    whitening_key,
)

PREFIX = "cbirq:"


def open_url(url: str, settings: Settings) -> RedisStore:
    """The store at a redis://, rediss:// or unix:// URL (the table in cbirq/store/__init__.py)."""
    return RedisStore.from_url(url, timeout=settings.connect_timeout)


class RedisStore:
    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        self.r = client
        self.url = url
        self.cache_key = f"redis:{redact(url)}"
        self._add = client.register_script(scripts.ADD)
        self._cursor = client.register_script(scripts.CURSOR)
        self._remove = client.register_script(scripts.REMOVE)
        self._drop = client.register_script(scripts.DROP_LOG)

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
        pipe.set(self._key(name, "id"), new_index_id(), nx=True)
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
        self._read_cursor(name, pipe)
        meta, dim, count, sources, (index_id, _, _) = pipe.execute()
        if meta is None:
            raise UnknownIndex(f"no index named '{name}' (see `cbirq indexes`)")
        fields = json.loads(meta)
        found = sorted((float(t), f.decode()) for f, t in sources.items())
        updated = found[-1][0] if found else None
        folders = tuple(f for _, f in found)
        model, weights = fields["model"], fields["weights"]
        return IndexInfo(
            name, model, weights, int(dim or 0), count, folders, updated, index_id.decode()
        )

    def _read_cursor(self, name: str, client: redis.Redis | redis.client.Pipeline) -> list:
        keys = [self._key(name, part) for part in ("meta", "id", "gen", "log")]
        return self._cursor(keys=keys, args=[new_index_id()], client=client)

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

    def add(
        self,
        name: str,
        entries: Sequence[Entry],
        features: dict[str, bytes],
        index_id: str | None = None,
    ) -> list[str]:
        info = same_index(self, name, index_id)
        expected = info.id  # the index this call began with, whatever happens meanwhile
        dim = check_dim(info, features)
        if dim and not info.dim:
            self.r.set(self._key(name, "dim"), dim, nx=True)
            info = self.info(name)
            check_dim(info, features)
        if not (entries or features):
            return []
        args = [expected, len(features), *(x for pair in features.items() for x in pair)]
        args += [x for entry in entries for x in entry]
        done = self._add(keys=self._counted(name, "log", "id"), args=args)
        if done is None:  # removed since `info`
            raise index_removed(name)
        changed, length, count, missing = done
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
        parts = ("meta", "id", "dim", "paths", "feats", "refs", "garbage", "log", "sources")
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
        index_id, gen, length = self._read_cursor(name, self.r)
        cursor = (index_id.decode(), int(gen), int(length))
        if since is None or since[:2] != cursor[:2] or since[2] > cursor[2]:
            return cursor, None
        raw = self.r.lrange(self._key(name, "log"), since[2], cursor[2] - 1)
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
        values, stale = artifact_values(f"{PREFIX}artifact:{key}", data)
        pipe = self.r.pipeline()  # MULTI: a reader sees the old artifact or the new one
        pipe.delete(*stale)
        for name, value in values.items():
            pipe.set(name, value)
        pipe.execute()

    def get_artifact(self, key: str) -> bytes | None:
        return joined_artifact(f"{PREFIX}artifact:{key}", self.r.mget)

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
