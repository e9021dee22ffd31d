"""From decoded images to unit feature vectors, whatever runs the network: the preprocessing,
views and normalisation every engine shares, in numpy, so that a query served by ONNX Runtime
never imports torch (1.5-2 s of a fresh `cbirq query`). torch's backbones
(cbirq.embed.backbones) differ only in how they run the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

EPS = 1e-12  # as torch.nn.functional.normalize: a zero vector stays zero


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def combined(plus: Sequence[np.ndarray], minus: Sequence[np.ndarray] = ()) -> np.ndarray:
    """One query from unit vectors in one space: a photo "plus at night, minus people" (as
    rclip): the sum of `plus` less the sum of `minus`, unit again. One vector alone is
    returned as it is: an image query's features stay those of every earlier release."""
    if len(plus) == 1 and not len(minus):
        return np.asarray(plus[0], np.float32)
    total = np.sum(plus, axis=0, dtype=np.float32) - np.sum(minus, axis=0, dtype=np.float32)
    return unit(total[None])[0]


def resized(x: np.ndarray, side: int) -> np.ndarray:
    """(N, 3, H, W) images scaled to `side` x `side`: bilinear with antialiasing, as the
    multi-scale descriptors were defined (torch's, imported only for them)."""
    import torch
    import torch.nn.functional as F

    scaled = F.interpolate(torch.from_numpy(x), size=side, mode="bilinear", antialias=True)
    return scaled.numpy()


@dataclass
class Extractor:
    """A network cut at its penultimate layer, with the preprocessing it was trained with.
    `net` maps an (N, 3, H, W) float32 array to (N, ...) features."""

    name: str
    weights: str
    net: Any
    dim: int
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.net(x), np.float32)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(crop, crop, 3) uint8 arrays -> (N, dim) float32 unit vectors."""
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1) * 255
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1) * 255
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = np.stack(images[i : i + self.batch_size]).transpose(0, 3, 1, 2)
            out.append(unit(self._describe((batch.astype(np.float32) - mean) / std)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _describe(self, x: np.ndarray) -> np.ndarray:
        """The sum of the unit descriptors of `x` at each scale, and mirrored with `flip`."""
        total = np.zeros((len(x), self.dim), np.float32)
        for scale in self.scales:
            scaled = x if scale == 1 else resized(x, round(x.shape[-1] * scale))
            for view in [scaled, scaled[..., ::-1]] if self.flip else [scaled]:
                total += unit(self.run(np.ascontiguousarray(view)).reshape(len(x), -1))
        return total

    def settings(self) -> dict[str, Any]:
        """Every field but the network: what another engine needs to give the same features."""
        return {f.name: getattr(self, f.name) for f in fields(Extractor) if f.name != "net"}
