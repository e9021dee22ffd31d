"""Which inference engine runs a backbone's network: torch, or ONNX Runtime on the CPU.

Both give the same features (checked when the ONNX graph is exported), so an index records
the model and weights but not the engine, and workers with different engines can fill one
index. ONNX Runtime is an optional extra (`cbirq[onnx]`): this module imports none of it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cbirq.embed.extractor import Extractor
from cbirq.errors import BackboneError
from cbirq.settings import ENGINES

if TYPE_CHECKING:  # torch: only where a network is built
    from cbirq.embed.backbones import Backbone

log = logging.getLogger(__name__)


def torch_installed() -> bool:
    """Whether torch can be imported here (not imported: that takes 1.5-2 s). The CPU image
    has no torch: it runs graphs that torch exported and checked in its build."""
    return importlib.util.find_spec("torch") is not None


def onnx_installed() -> bool:
    """ONNX Runtime runs the graph; where torch can export one, its exporter writes with the
    `onnx` package too."""
    needed = ("onnxruntime", "onnx") if torch_installed() else ("onnxruntime",)
    return all(importlib.util.find_spec(name) is not None for name in needed)


def resolve(requested: str, cuda: bool) -> str:
    """The engine to use: `auto` is ONNX Runtime on a CPU where it is installed, else torch."""
    if requested not in ENGINES:
        raise BackboneError(f"unknown engine '{requested}': use one of {', '.join(ENGINES)}")
    if requested == "auto":
        return "onnx" if not cuda and onnx_installed() else "torch"
    if requested == "onnx" and not onnx_installed():
        raise BackboneError(
            "--engine onnx needs ONNX Runtime: pip install 'cbirq[onnx]' (or use --engine torch)"
        )
    return requested


# A GPU driver's device files (NVIDIA's, ROCm's): without them torch cannot see a GPU.
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd")


def cuda_available() -> bool:
    """Whether torch sees a GPU; on a machine without a GPU driver, or without torch, known
    without importing torch (1.5-2 s of a fresh `cbirq query`)."""
    if not any(Path(device).exists() for device in GPU_DEVICES) or not torch_installed():
        return False
    import torch

    return torch.cuda.is_available()


def with_engine(backbone: Backbone, engine: str, cache_dir: Path, threads: int) -> Extractor:
    """`backbone` with its network run by `engine`; the same preprocessing and normalisation
    either way. An ONNX graph that cannot be made or disagrees with torch is refused: the
    backbone stays on torch and the reason is logged."""
    if engine == "torch":
        return backbone
    from cbirq.embed import onnx_engine, onnx_runner  # onnxruntime: only where it is used

    try:
        extractor = onnx_engine.session_net(backbone, cache_dir, threads)
    except onnx_engine.ExportRefused as exc:
        log.warning("%s; using torch", exc)
        return backbone
    onnx_runner.announce(extractor, threads)
    return extractor
