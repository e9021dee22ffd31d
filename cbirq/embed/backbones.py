"""Feature extractors: a CNN cut at its penultimate layer, with the preprocessing it was trained
with, producing L2-normalised vectors.

Names: the model families of cbirq.embed.families, or any torchvision classification model
(`vgg16`, ...; weights from the torch hub cache). A name may carry `+gem`, `+flip` and `+ms`
(see cbirq.embed.specs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cbirq.embed import builders
from cbirq.embed.extractor import Extractor
from cbirq.embed.families import Preprocessing, family
from cbirq.embed.specs import FeatureSpec
from cbirq.errors import BackboneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_CHOICES = ("imagenet", "none")
# Multi-scale descriptors as Radenovic et al. (2018) compute them: the image at 1, 1/sqrt(2)
# and 1/2 of its size, downscaled only, so no detail is invented.
MULTISCALE = (1.0, 2**-0.5, 0.5)
GEM_P = 3.0  # the fixed GeM exponent of Radenovic et al. without fine-tuning


class GeM(nn.Module):
    """Generalised-mean pooling: p = 1 is average pooling, larger p leans towards the maximum,
    so strong local activations count more than a large uniform background."""

    def __init__(self, p: float = GEM_P, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean((-2, -1), keepdim=True).pow(1 / self.p)


@dataclass
class Backbone(Extractor):
    """A torch module as the network, on `device`."""

    device: torch.device = torch.device("cpu")

    @torch.inference_mode()
    def run(self, x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
        return self.net(batch).flatten(1).float().cpu().numpy()


def strip_classifier(net: nn.Module, name: str) -> nn.Module:
    """Replace the last Linear layer with Identity, so the net returns its penultimate
    activations (ResNet50: the 2048-d average-pool output, as in the course)."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BackboneError(f"{name} has no final Linear layer to cut its features from")
    return _replace(net, linears[-1][0], nn.Identity())


def _replace(net: nn.Module, name: str, module: nn.Module) -> nn.Module:
    path = name.split(".")
    parent = net.get_submodule(".".join(path[:-1])) if len(path) > 1 else net
    setattr(parent, path[-1], module)
    return net


def use_gem(net: nn.Module, name: str) -> nn.Module:
    """Replace the global average pooling before the classifier with GeM."""
    pools = [
        n
        for n, m in net.named_modules()
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))
    ]
    if not pools:
        raise BackboneError(f"{name} has no global average pooling to replace with GeM")
    return _replace(net, pools[-1], GeM())


def build_classifier(
    name: str, weights: str = "imagenet", checkpoint: bytes | None = None
) -> tuple[nn.Module, Preprocessing]:
    """The whole network (classifier included) and its preprocessing."""
    chosen = family(name)
    if not chosen.checkpoint and weights not in WEIGHT_CHOICES:
        raise BackboneError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}")
    net = getattr(builders, chosen.builder)(name, weights, checkpoint)
    if chosen.preprocessing is not None:
        return net, chosen.preprocessing
    if chosen.text:  # open_clip's own, read from the model just built
        from cbirq.embed import clip

        return net, clip.preset(name, weights, checkpoint)
    return net, builders.torchvision_preset(name)


def load_backbone(
    name: str, weights: str = "imagenet", device: str = "cpu", checkpoint: bytes | None = None
) -> Backbone:
    """`name` is a feature spec (MODEL[+gem][+ms]); `checkpoint` holds the bytes of a
    `ckpt-*` weights name."""
    spec = FeatureSpec.parse(name)
    net, prep = build_classifier(spec.model, weights, checkpoint)
    if family(spec.model).classifier:
        net = strip_classifier(net, spec.model)
    if spec.pool == "gem":
        net = use_gem(net, spec.model)
    target = torch.device(device)
    net = net.eval().to(target, memory_format=torch.channels_last)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, prep.crop, prep.crop, device=target)
        dim = net(probe).flatten(1).shape[1]
    return Backbone(
        name=str(spec),
        weights=weights,
        net=net,
        dim=dim,
        resize=prep.resize,
        crop=prep.crop,
        mean=prep.mean,
        std=prep.std,
        batch_size=family(spec.model).batch,
        scales=MULTISCALE if spec.multiscale else (1.0,),
        flip=spec.flip,
        device=target,
    )
