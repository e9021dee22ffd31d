"""A tiny OpenCLIP model with random weights, built here from a config: the public weights
cannot be downloaded on this machine. Saved to files and loaded as a user's would be (an
architecture config in CBIRQ_CLIP_CONFIGS, the weights a safetensors file), and the reference
the tests rank with: open_clip's own encoders, normalised, cosine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ARCH = "cbirq-tiny-clip"
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_clip(folder: Path, seed: int = 7) -> tuple[Path, Path]:
    """(the config folder for CBIRQ_CLIP_CONFIGS, the weights file) of a fresh random model."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    configs = folder / "clip-configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(configs)
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH, pretrained_text=False)
    weights = folder / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return configs, weights


def reference_model(configs: Path, weights: Path):
    """The saved model loaded by open_clip itself, with its preprocessing and tokenizer."""
    import open_clip

    open_clip.add_model_config(configs)
    model, _, preprocess = open_clip.create_model_and_transforms(
        ARCH, pretrained=str(weights), pretrained_text=False
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(ARCH)


def brute_force(configs: Path, weights: Path, images: list[Path], text: str) -> list[str]:
    """The image paths ranked by open_clip's cosine between the text and each image."""
    import torch
    from PIL import Image

    model, preprocess, tokenizer = reference_model(configs, weights)
    with torch.inference_mode():
        batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        pictures = model.encode_image(batch, normalize=True).numpy()
        words = model.encode_text(tokenizer([text]), normalize=True).numpy()[0]
    scores = pictures @ words
    return [str(images[i]) for i in np.argsort(-scores, kind="stable")]
