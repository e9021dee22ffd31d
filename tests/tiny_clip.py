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


def brute_force(
    configs: Path, weights: Path, images: list[Path], text: str
) -> list[tuple[str, float]]:
    """(path, cosine) of every image, ranked by open_clip's cosine between `text` and it."""
    import torch
    from PIL import Image

    model, preprocess, tokenizer = reference_model(configs, weights)
    with torch.inference_mode():
        batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        pictures = model.encode_image(batch, normalize=True).numpy()
        words = model.encode_text(tokenizer([text]), normalize=True).numpy()[0]
    scores = pictures @ words
    return [(str(images[i]), float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def text_vectors(configs: Path, weights: Path, texts: list[str]) -> np.ndarray:
    """open_clip's unit text embeddings of `texts`."""
    import torch

    model, _, tokenizer = reference_model(configs, weights)
    with torch.inference_mode():
        return model.encode_text(tokenizer(texts), normalize=True).numpy()


def clip_library(root: Path, count: int = 10) -> tuple[dict, str, list[Path]]:
    """A folder of `count` generated 32x32 photos (the tiny model's own size: no resampling
    on either side) and the tiny model saved under `root`: (the environment that finds its
    architecture, its `--model`, the photos)."""
    from tests.conftest import make_photo

    configs, weights = write_tiny_clip(root)
    (root / "lib").mkdir()
    images = []
    for seed in range(count):
        images.append(root / "lib" / f"img{seed:03d}.png")
        make_photo(seed, (32, 32)).save(images[-1])
    return {"CBIRQ_CLIP_CONFIGS": str(configs)}, f"clip:{ARCH}:{weights}", images
