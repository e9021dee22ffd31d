"""Settings from the environment: the only reader of CBIRQ_* variables, and of the cores this
process may use, which the thread defaults follow (stdlib only)."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_MAX_FILE_MB = 100  # under Redis's 512 MB bulk limit with room; no photo comes near it
# An estimate of the memory decoding one image may take: an 8000 x 8000 RGBA PNG of 265 KB
# needs about 1.2 GB to decode and convert (cbirq.embed.images.decode_cost).
DEFAULT_MAX_DECODE_MB = 768
DEFAULT_INDEX = "default"
# Inference engines for feature extraction; auto: ONNX Runtime on CPU, torch on GPU.
ENGINES = ("auto", "torch", "onnx")
# Redis URLs: the broker's (Celery's Redis transport), and among the store's (cbirq.store).
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _default_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "cbirq"


def with_password(url: str, password: str | None) -> str:
    """Put `password` into a Redis URL that has none, so one variable can hold the secret (a
    store of another kind is left as it is)."""
    parts = urlsplit(url)
    if not password or parts.password or parts.scheme not in REDIS_SCHEMES:
        return url
    user = quote(parts.username or "", safe="")
    # The host as written, port included: `hostname` drops an IPv6 address's brackets.
    host = parts.netloc.rpartition("@")[2] or "localhost"
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def password_in_user_part(url: str) -> str:
    """A Redis URL with its `?password=` (which redis-py reads) moved into the user part, as
    kombu passes query parameters on as keywords beside the user part's password and fails on
    two. A password in the user part wins, as in redis-py."""
    parts = urlsplit(url)
    pairs = [pair.partition("=") for pair in parts.query.split("&") if pair]
    passwords = [unquote(value) for name, _, value in pairs if name == "password"]
    if not passwords or parts.scheme not in REDIS_SCHEMES:
        return url
    query = "&".join("".join(pair) for pair in pairs if pair[0] != "password")
    return with_password(urlunsplit(parts._replace(query=query)), passwords[-1])


SECRET_PARAMETERS = re.compile(r"pass|secret|token|auth|key", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with every credential hidden, for messages: the password in its user part and
    any query parameter that names one (redis-py reads `?password=`)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "&".join(
        f"{name}=***" if SECRET_PARAMETERS.search(name) else f"{name}={value}" if sep else name
        for name, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True)
class Settings:
    broker_url: str | None
    store_url: str | None
    home: Path
    data_dir: Path
    inflight: int
    visibility_timeout: int
    result_timeout: float
    connect_timeout: float
    threads: int | None
    engine: str
    lease_ttl: int
    shared_roots: tuple[Path, ...]
    rank_shards: int
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 2**20  # one image file, client or worker
    max_decode_bytes: int = DEFAULT_MAX_DECODE_MB * 2**20  # estimated memory for one decode
    serve_token: str | None = None  # `cbirq serve` asks every request for it when set
    serve_max_upload: int = 20 * 2**20  # bytes of one upload to `cbirq serve`
    serve_allowed_hosts: tuple[str, ...] = ()  # Host names `cbirq serve` answers besides its own
    serve_body_timeout: int = 60  # seconds for an upload's whole body
    serve_uploads: int = 8  # requests holding an upload at once
    clip_configs: Path | None = None  # a folder of extra open_clip model configs (ARCH.json)

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def sqlite_path(self) -> Path:
        return self.home / "store.sqlite3"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def make_home(home: Path) -> Path:
    """cbirq's home, made 0700, or tightened to it (releases before this one left it 0755): it
    holds the SQLite store (paths, features, jobs, checkpoints), caches and thumbnails of
    private photos, which no other user may reach through it whatever their own modes. A home
    this user does not own (CBIRQ_HOME=/tmp) is left as it is."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        with contextlib.suppress(PermissionError):
            home.chmod(0o700)
    return home


def own_files_only(home: Path) -> None:
    """For a process that writes only cbirq's own files (`cbirq worker`, `cbirq serve`): what it
    creates is 0600 and its folders 0700 (caches, thumbnails), in its children too. The CLI
    keeps the user's umask, for the exports and sheets a user asks for."""
    os.umask(0o077)
    make_home(home)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {raw!r}")
    return value


def _broker_url(env: Mapping[str, str]) -> str | None:
    """CBIRQ_BROKER_URL, refusing what Celery would fail on later with a traceback. The store's
    URL is checked where its backends are listed (cbirq.store.open_store)."""
    raw = env.get("CBIRQ_BROKER_URL") or None
    if raw is not None and urlsplit(raw).scheme not in REDIS_SCHEMES:
        raise ValueError(
            "CBIRQ_BROKER_URL must be a Redis URL such as redis://HOST:6379/0 (or rediss://, "
            f"unix://), not {redact(raw)!r}"
        )
    return raw


def _engine(env: Mapping[str, str]) -> str:
    raw = env.get("CBIRQ_ENGINE") or "auto"
    if raw not in ENGINES:
        raise ValueError(f"CBIRQ_ENGINE must be one of {', '.join(ENGINES)}, not {raw!r}")
    return raw


def _paths(raw: str) -> tuple[Path, ...]:
    return tuple(Path(p).resolve() for p in raw.split(os.pathsep) if p)


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    password = env.get("CBIRQ_REDIS_PASSWORD") or None
    broker = _broker_url(env)
    store = env.get("CBIRQ_STORE_URL") or broker
    broker, store = (password_in_user_part(url) if url else None for url in (broker, store))
    threads = _int(env, "CBIRQ_THREADS", 0)
    home = Path(env.get("CBIRQ_HOME") or _default_home(env))
    return Settings(
        broker_url=with_password(broker, password) if broker else None,
        store_url=with_password(store, password) if store else None,
        home=home,
        data_dir=Path(env.get("CBIRQ_DATA_DIR") or home / "data"),
        # Chunks queued at once by one `cbirq index`: bounds the image bytes held in Redis.
        inflight=max(1, _int(env, "CBIRQ_INFLIGHT", 4)),
        # Redis redelivers an unacked task after this many seconds (Celery docs, "Redis:
        # visibility timeout"): how long a dead worker's chunk waits. Longer than any chunk or
        # query, so those never run twice; training runs for hours and guards itself with a
        # lease instead (cbirq/training/lease.py).
        visibility_timeout=max(1, _int(env, "CBIRQ_VISIBILITY_TIMEOUT", 600)),
        result_timeout=float(_int(env, "CBIRQ_RESULT_TIMEOUT", 600)),
        connect_timeout=float(_int(env, "CBIRQ_CONNECT_TIMEOUT", 3)),
        threads=threads or None,
        engine=_engine(env),
        # A training job's lease lapses this long after its worker's last heartbeat.
        lease_ttl=max(1, _int(env, "CBIRQ_LEASE_TTL", 60)),
        shared_roots=_paths(env.get("CBIRQ_SHARED_ROOTS", "")),
        # `cbirq query` ranks in this many shards, on workers started with --shard I/N.
        rank_shards=max(1, _int(env, "CBIRQ_RANK_SHARDS", 1)),
        max_file_bytes=max(1, _int(env, "CBIRQ_MAX_FILE_MB", DEFAULT_MAX_FILE_MB)) * 2**20,
        max_decode_bytes=max(1, _int(env, "CBIRQ_MAX_DECODE_MB", DEFAULT_MAX_DECODE_MB)) * 2**20,
        serve_token=env.get("CBIRQ_SERVE_TOKEN") or None,
        serve_max_upload=max(1, _int(env, "CBIRQ_SERVE_MAX_UPLOAD_MB", 20)) * 2**20,
        serve_allowed_hosts=tuple(
            h.strip() for h in env.get("CBIRQ_SERVE_ALLOWED_HOSTS", "").split(",") if h.strip()
        ),
        serve_body_timeout=_int(env, "CBIRQ_SERVE_BODY_TIMEOUT", 60, minimum=1),
        serve_uploads=_int(env, "CBIRQ_SERVE_UPLOADS", 8, minimum=1),
        clip_configs=Path(env["CBIRQ_CLIP_CONFIGS"]) if env.get("CBIRQ_CLIP_CONFIGS") else None,
    )


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: the CPUs it may run on, capped by its container's CPU
    quota (`docker run --cpus`, compose's `cpus:`), which os.cpu_count() does not see. N
    containers on one host would otherwise each start a thread per host core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs' worth of quota: cgroup v2's cpu.max (`QUOTA PERIOD` or `max PERIOD`), else v1's."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
