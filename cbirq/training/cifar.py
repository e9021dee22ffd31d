"""CIFAR-10 (or any tree of class folders) as uint8 tensors: loading (torchvision batches or an
image-folder tree), a decoded cache, and augmentation done on whole batches on the training
device (as airbench does)."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cbirq.errors import CbirqError
from cbirq.training.config import BATCHES_DIR, MEAN, STD, data_layout, tree_classes

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

log = logging.getLogger(__name__)


@dataclass
class Cifar:
    """Images as (N, 3, 32, 32) uint8, labels as int64 indexes into `classes`; the test split
    is only evaluated."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = CLASSES

    def to(self, device: torch.device) -> Cifar:
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y)
        return Cifar(*(t.to(device) for t in tensors), self.classes)

    def held_out(self, size: int, seed: int = 1234) -> Cifar:
        """Training images split in two, `size` of them in place of the test split: choosing a
        recipe on those leaves the test images unconsulted."""
        if not 0 < size < len(self.train_x):
            raise CbirqError(f"cannot hold out {size} of {len(self.train_x)} training images")
        order = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(seed))
        train, val = order[size:], order[:size]
        x, y = self.train_x, self.train_y
        return Cifar(x[train], y[train], x[val], y[val], self.classes)


class _Dtype:
    """A pickled numpy dtype, recorded and never built: numpy would let a crafted one (say an
    object field over raw bytes) dereference forged pointers when the array is converted."""

    def __init__(self, code: object, align: object = False, copy: object = False) -> None:
        self.code, self.state = code, None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _Array:
    """A pickled numpy array, recorded as (shape, dtype, raw bytes) and never built."""

    def __init__(self, *_: object) -> None:
        self.shape: object = None
        self.dtype: object = None
        self.raw: object = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("not an array's state")
        self.shape, self.dtype, _, self.raw = state[-4:]


def _reconstruct(cls: object, shape: object, code: object) -> _Array:
    return _Array()


def _encode(text: object, encoding: object = "utf-8") -> bytes:
    """`_codecs.encode`, as protocol 2 stores bytes written by Python 3: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode in a CIFAR batch")
    return text.encode("latin-1")


class _PlainData(pickle.Unpickler):
    """CIFAR's batches are pickles by the dataset's own design: a dict of strings, a list of
    labels and one uint8 array. Only containers, strings, bytes and numbers are unpickled;
    numpy's names resolve to the recorders above, so no code runs and no numpy object is made
    from the file: the array is rebuilt by `_uint8_rows` with np.frombuffer and exact sizes."""

    STAND_INS = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _Array,
        ("numpy", "dtype"): _Dtype,
        ("_codecs", "encode"): _encode,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.STAND_INS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} has no place in a CIFAR batch") from None


def _uint8_rows(value: object) -> np.ndarray:
    """The batch's `data`: N x 3072 uint8 from the recorded array, or a refusal."""
    if not isinstance(value, _Array) or not isinstance(value.dtype, _Dtype):
        raise ValueError("'data' is not a numpy array")
    dtype, shape, raw = value.dtype, value.shape, value.raw
    plain = dtype.state is None or (
        isinstance(dtype.state, tuple) and dtype.state[2:5] == (None,) * 3
    )
    if dtype.code not in ("u1", "|u1", "uint8") or not plain:
        raise ValueError(f"'data' must be uint8, not {dtype.code!r}")
    if not (isinstance(shape, tuple) and len(shape) == 2 and shape[1] == 3072):
        raise ValueError(f"'data' must be N x 3072, not {shape!r}")
    if not all(isinstance(n, int) and 0 <= n <= 1_000_000 for n in shape):
        raise ValueError(f"'data' has an impossible shape {shape!r}")
    raw = raw.encode("latin-1") if isinstance(raw, str) else raw
    if not isinstance(raw, bytes) or len(raw) != shape[0] * 3072:
        raise ValueError("'data' does not hold N x 3072 bytes")
    return np.frombuffer(raw, np.uint8).reshape(shape[0], 3, 32, 32)


def _labels(value: object, count: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != count:
        raise ValueError(f"'labels' must be a list of {count} classes")
    if not all(type(label) is int and 0 <= label < len(CLASSES) for label in value):
        raise ValueError("'labels' must be whole numbers 0-9")
    return np.asarray(value, np.int64)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _PlainData(f, encoding="latin1").load()
        if not isinstance(batch, dict):
            raise ValueError("not a dict")
        batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
        images = _uint8_rows(batch.get("data"))
        return images, _labels(batch.get("labels"), len(images))
    except OSError as exc:
        detail = f"cannot read {path.name}: {exc.strerror or exc}"
        raise CbirqError(f"malformed CIFAR-10 data in {path.parent}: {detail}") from None
    except Exception as exc:  # whatever a crafted file makes the unpickler raise: one line
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CbirqError(
            f"malformed CIFAR-10 data in {path.parent}: {path.name}: {detail}"
        ) from None


def _read_batches(folder: Path) -> dict[str, np.ndarray]:
    """torchvision's cifar-10-batches-py."""

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(_read_batch(folder / name) for name in names))
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = read([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = read(["test_batch"])
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _read_split(folder: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.name.startswith("."):
                continue
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB")
            except (OSError, ValueError) as exc:
                raise CbirqError(f"cannot read CIFAR image {path}: {exc}") from None
            if rgb.size != (32, 32):  # ResNet20's input: the centre square, scaled
                rgb = ImageOps.fit(rgb, (32, 32), Image.Resampling.BICUBIC)
            images.append(np.asarray(rgb, np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise CbirqError(f"no images under {folder}")
    return np.stack(images), np.asarray(labels, np.int64)


def _read_tree(root: Path) -> dict[str, np.ndarray]:
    classes = tree_classes(root)
    train_x, train_y = _read_split(root / "train", classes)
    test_x, test_y = _read_split(root / "test", classes)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    return {**arrays, "classes": np.array(classes)}


def _cache_key(root: Path) -> str:
    """Changes when files are added, removed or rewritten; not with how `root` was spelled
    (relative or absolute), so every worker on a machine shares one cache file."""
    digest = hashlib.sha256(str(root.resolve()).encode())
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            name = path.relative_to(root).as_posix()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Written under a name of its own, then renamed: two workers decoding at once must not
    rename each other's half-written file (a shared name made the slower one crash). A cache
    that cannot be written (full disk, read-only mount) costs the next job a decode, not this
    job its run."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.stem, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        log.warning("CIFAR-10 decoded but not cached in %s: %s", cache.parent, exc)


def load_cifar(root: Path, cache_dir: Path | None = None) -> Cifar:
    """CIFAR-10 from `root/cifar-10-batches-py/`, or any classes from `root/{train,test}/<class>/*`
    (images of other sizes cropped to their centre square and scaled to 32x32), decoded once
    into an .npz cache (read without pickle) under `cache_dir`."""
    if data_layout(root) == "batches":
        read, source = _read_batches, root / BATCHES_DIR
    else:
        read, source = _read_tree, root
    cache = cache_dir / f"cifar10-{_cache_key(source)}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
    else:
        try:
            arrays = read(source)
        except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise CbirqError(f"malformed CIFAR-10 data in {source}: {exc}") from None
        if cache:
            _write_cache(cache, arrays)
    tensors = (torch.from_numpy(arrays[k]) for k in ("train_x", "train_y", "test_x", "test_y"))
    return Cifar(*tensors, tuple(str(c) for c in arrays.get("classes", CLASSES)))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, standardised per channel, channels_last."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1) * 255
    return ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip for every image of a uint8 batch,
    as tensor indexing instead of per-image PIL transforms."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dev = x.device
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").to(dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").to(dev)
    flip = torch.rand(b, generator=generator, device="cpu").to(dev) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=dev)).view(b, 1, h, 1)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols.view(b, 1, 1, w)]
