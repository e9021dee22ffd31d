"""Regenerate examples/: a 60-image demo library and two query images not in it.

Sources: public-domain / CC0 photos shipped with scikit-image (`pip download scikit-image`,
unzip skimage/data/). Each library image is a random crop, flip and colour change of one
photo, so a query (another view of a photo) has clear right answers.

    python scripts/make_examples.py PATH/TO/skimage/data
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

# name -> licence note from skimage's data docstrings
SOURCES = {
    "chelsea.png": "cat; CC0, Stefan van der Walt",
    "coffee.png": "coffee cup; CC0, Rachel Michetti",
    "astronaut.png": "Eileen Collins; public domain, NASA",
    "rocket.jpg": "Falcon 9 launch; public domain, SpaceX",
    "camera.png": "cameraman; CC0, Lav Varshney",
    "brick.png": "brick wall; CC0 Textures",
    "grass.png": "grass; CC0 Textures",
    "gravel.png": "gravel; CC0 Textures",
    "hubble_deep_field.jpg": "Hubble deep field; public domain, NASA",
    "retina.jpg": "retina; CC0",
}
VIEWS = 6
OUT = Path(__file__).resolve().parent.parent / "examples"


def random_crop(photo: Image.Image, rng: random.Random, low: float, high: float) -> Image.Image:
    """A crop of a random `low` to `high` share of each side, placed at random."""
    w, h = photo.size
    scale = rng.uniform(low, high)
    cw, ch = int(w * scale), int(h * scale)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return photo.crop((left, top, left + cw, top + ch))


def view(photo: Image.Image, rng: random.Random, size: int = 256) -> Image.Image:
    img = random_crop(photo, rng, 0.55, 0.9)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
    img.thumbnail((size, size))
    return img


def main(data_dir: Path) -> None:
    rng = random.Random(5)
    library = OUT / "library"
    library.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        photo = Image.open(data_dir / name).convert("RGB")
        stem = Path(name).stem
        for i in range(VIEWS):
            view(photo, rng).save(library / f"{stem}_{i}.jpg", quality=85)
        if stem in ("chelsea", "rocket"):
            view(photo, rng).save(OUT / f"query_{stem}.jpg", quality=85)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
