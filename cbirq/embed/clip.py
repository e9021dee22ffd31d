"""CLIP-family models (OpenCLIP): one network embedding images and words in one space.

The index's model is `clip-ARCH` (an open_clip architecture such as ViT-B-32, or one whose
config JSON is in the folder CBIRQ_CLIP_CONFIGS names); its weights are an open_clip
pretrained tag (from open_clip's cache, which is Hugging Face's), a checkpoint file the client
put in the store (`ckpt-HASH`, as resnet20's), or `none` (random, seeded). The image tower is
a backbone like any other; the text tower answers text queries.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cbirq.embed.builders import RANDOM_SEED
from cbirq.embed.families import CLIP_PREFIX, Preprocessing
from cbirq.embed.specs import is_checkpoint
from cbirq.errors import BackboneError


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise BackboneError("CLIP models need open_clip: pip install 'cbirq[clip]'") from None
    return open_clip


def architecture(name: str) -> str:
    return name.removeprefix(CLIP_PREFIX)


def use_configs(folder: Path | None) -> None:
    """Let open_clip build the architectures whose config JSON files (ARCH.json) are in
    `folder`, besides its own."""
    if folder is not None and folder.is_dir():
        _open_clip().add_model_config(folder)


def _refused(arch: str, tag: str) -> BackboneError:
    """Why the weights of a tag cannot be had: an unknown tag, or not cached and no hub."""
    from huggingface_hub import constants

    tags = _open_clip().list_pretrained_tags_by_model(arch)
    if tag not in tags:
        known = ", ".join(tags) or "none: give a FILE"
        return BackboneError(f"CLIP {arch} has no weights tagged '{tag}' (open_clip's: {known})")
    return BackboneError(
        f"CLIP weights {arch}:{tag} are not in open_clip's cache ({constants.HF_HUB_CACHE}) "
        "and could not be downloaded: copy that cache from a machine that has them (HF_HOME "
        f"sets the place), or pass --model clip:{arch}:FILE"
    )


def _state_dict(data: bytes) -> dict:
    """An open_clip checkpoint's tensors: safetensors, or a torch file read weights-only."""
    if data[8:9] == b"{":  # safetensors: an 8-byte header length, then its JSON
        from safetensors.torch import load

        state = load(data)
    else:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return {k.removeprefix("module."): v for k, v in state.items()}


@contextmanager
def _quiet() -> Iterator[None]:
    """open_clip logs on the root logger that a model without a tag is random (ours is not,
    once its checkpoint is loaded) and a failed download, which the error we raise says."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _create(arch: str, weights: str, checkpoint: bytes | None) -> nn.Module:
    open_clip = _open_clip()
    if arch not in open_clip.list_models():
        raise BackboneError(
            f"unknown CLIP architecture '{arch}': use one of open_clip's "
            "(python -c 'import open_clip; print(open_clip.list_models())'), or put ARCH.json "
            "into the folder CBIRQ_CLIP_CONFIGS names"
        )
    tag = None if weights == "none" or is_checkpoint(weights) else weights
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(RANDOM_SEED)
        try:
            model = open_clip.create_model(arch, pretrained=tag, pretrained_text=False)
        except (RuntimeError, OSError, ValueError):
            raise _refused(arch, weights) from None
    if is_checkpoint(weights):
        if checkpoint is None:
            raise BackboneError(f"checkpoint {weights} is not in the store: index with it again")
        try:
            model.load_state_dict(_state_dict(checkpoint))
        except Exception as exc:  # a file of another architecture, or no checkpoint at all
            detail = (str(exc).strip().splitlines() or ["?"])[0]
            raise BackboneError(f"weights {weights} do not fit CLIP {arch}: {detail}") from None
    return model.eval()


@lru_cache(maxsize=2)
def _model(arch: str, weights: str, checkpoint: bytes | None) -> nn.Module:
    """One model for both towers: a worker answering text and image queries loads it once."""
    return _create(arch, weights, checkpoint)


def model(name: str, weights: str, checkpoint: bytes | None = None) -> nn.Module:
    return _model(architecture(name), weights, checkpoint)


class ImageTower(nn.Module):
    """The image encoder: images -> embeddings (not normalised: the extractor does it)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.visual = clip.visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def preset(name: str, weights: str, checkpoint: bytes | None = None) -> Preprocessing:
    """The preprocessing open_clip gives the model: its size, mean and std. cbirq resizes the
    shorter side and centre-crops, as open_clip's default `shortest` mode does, but resamples
    bilinearly where open_clip uses bicubic (cbirq.embed.images serves every model)."""
    cfg = model(name, weights, checkpoint).visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    return Preprocessing(int(size), int(size), tuple(cfg["mean"]), tuple(cfg["std"]))


@dataclass
class TextTower:
    """Words -> unit vectors in the image tower's space, with the model's own tokenizer."""

    clip: nn.Module
    tokenizer: object

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts))
        device = next(self.clip.parameters()).device
        found = self.clip.encode_text(tokens.to(device), normalize=True)
        return found.float().cpu().numpy()


def text_tower(name: str, weights: str, checkpoint: bytes | None, device: str) -> TextTower:
    arch = architecture(name)
    clip = model(name, weights, checkpoint).to(device)
    return TextTower(clip, _open_clip().get_tokenizer(arch))
