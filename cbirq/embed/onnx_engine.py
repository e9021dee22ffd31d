"""A backbone's network run by ONNX Runtime on the CPU.

The graph is exported once from the very torch module the backbone holds, checked against
torch on a sample batch, and cached under CBIRQ_HOME keyed by everything that shapes it: model
name, weights (by content, so every checkpoint gets its own graph), the module's structure and
the torch, onnx and onnxruntime versions. A graph that fails the check is never cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from cbirq.embed import onnx_runner
from cbirq.embed.backbones import Backbone
from cbirq.embed.extractor import Extractor

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the export settings change: graphs cached before stop matching
OPSET = 17
TOLERANCE = 1e-3  # the largest 1 - cosine between torch's and ONNX Runtime's features
# Images per run. On 1 thread, EfficientNet-Lite0: 27 img/s at 1, 42 at 4, 44 at 8 to 32;
# ResNet50: 11.6 at 4, 12.2 at 8, 11.1 at 16. Bigger batches gain nothing and make a chunk's
# first batch wait longer for its decoding.
BATCH = 8


class ExportRefused(Exception):
    """No trustworthy ONNX graph for this backbone: torch runs it instead."""


def graph_key(backbone: Backbone) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        backbone.name,
        backbone.weights,
        repr(backbone.net),
        torch.__version__,
        onnx.__version__,
        ort.__version__,
        OPSET,
        EXPORT_FORMAT,
    ):
        digest.update(f"{part}\0".encode())
    for name, tensor in backbone.net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_path(backbone: Backbone, cache_dir: Path) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{backbone.name}-{backbone.weights}")
    return cache_dir / "onnx" / f"{stem}-{graph_key(backbone)}.onnx"


def _export(backbone: Backbone, path: Path) -> None:
    # The TorchScript exporter: seconds where the torch.export one takes a minute or more
    # (EfficientNet-Lite0), and it needs only `onnx`, not onnxscript.
    dummy = torch.zeros(2, 3, backbone.crop, backbone.crop, device=backbone.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice and constant-folding chatter
        torch.onnx.export(
            backbone.net,
            (dummy,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "n", 2: "height", 3: "width"}, "features": {0: "n"}},
            opset_version=OPSET,
        )


def sample_images(side: int, count: int = 4) -> list[np.ndarray]:
    """Noise and blocky colour fields, (side, side, 3) uint8: the check batch."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (count // 2, side, side, 3), dtype=np.uint8)
    blocks = rng.integers(0, 256, (count - count // 2, side // 16 + 1, side // 16 + 1, 3))
    blocky = blocks.astype(np.uint8).repeat(16, 1).repeat(16, 2)[:, :side, :side]
    return [*noise, *blocky]


def on_onnx(backbone: Backbone, graph: Path, model: Path | bytes, threads: int) -> Extractor:
    """The backbone with its network run by the graph `model` (its path, or its bytes)."""
    net = onnx_runner.OrtNet(onnx_runner.session(model, threads), graph)
    return Extractor(net=net, **dict(backbone.settings(), batch_size=BATCH))


def check(backbone: Backbone, candidate: Extractor) -> None:
    sample = sample_images(backbone.crop)
    expected = backbone.embed(sample)
    got = candidate.embed(sample)
    worst = float(np.max(1.0 - np.sum(expected * got, axis=1)))
    if not worst <= TOLERANCE:  # NaN fails too
        raise ExportRefused(
            f"the ONNX graph of {backbone.name} ({backbone.weights}) disagrees with torch: "
            f"1 - cosine = {worst:.2g} > {TOLERANCE:g}"
        )


def _export_checked(backbone: Backbone, path: Path, threads: int) -> Extractor:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers exporting at once each write their own file; the rename makes one of them the
    # cached graph, whole.
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    log.info("exporting %s (%s) to ONNX: %s", backbone.name, backbone.weights, path)
    try:
        try:
            _export(backbone, partial)
            extractor = on_onnx(backbone, path, partial, threads)
        except Exception as exc:  # any exporter failure: the model stays on torch
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise ExportRefused(
                f"cannot export {backbone.name} to ONNX ({type(exc).__name__}: {reason})"
            ) from None
        check(backbone, extractor)
        # The digest first: a graph in place is always one whose digest is recorded.
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        onnx_runner.digest_path(path).write_text(digest + "\n")
        os.replace(partial, path)
        return extractor
    finally:
        partial.unlink(missing_ok=True)


def _cached_or_exported(backbone: Backbone, path: Path, threads: int) -> Extractor:
    if path.exists():
        try:
            return on_onnx(backbone, path, onnx_runner.verified_bytes(path), threads)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            log.warning("cached ONNX graph %s refused (%s); exporting it again", path, exc)
    return _export_checked(backbone, path, threads)


def session_net(backbone: Backbone, cache_dir: Path, threads: int) -> Extractor:
    """The backbone with its network run by ONNX Runtime on `threads` intra-op threads: the
    graph from the cache, or exported and checked now; noted for processes without torch."""
    path = cache_path(backbone, cache_dir)
    extractor = _cached_or_exported(backbone, path, threads)
    onnx_runner.remember(extractor, path, cache_dir)
    return extractor
