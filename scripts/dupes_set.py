"""Build a near-duplicate test set with known pairs from scikit-image's public photos.

Each photo gives up to four "originals": crops that overlap little (intersection over union
under 0.3), so that they are different pictures of the same subject, the hard negatives. Each
original gets edited copies (resized, recompressed, slightly cropped and rescaled, brightened,
bordered, and combinations); an original and its copies form one group of near-duplicates.
Writes DIR/images/*.jpg|png and DIR/truth.json ({"groups": [[file, ...], ...]}).

    .venv-bench/bin/python scripts/dupes_set.py bench-out/dupes-set
"""

from __future__ import annotations

import argparse
import io
import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
    "clock_motion.png",
)  # fmt: skip  (the photos in skimage/data/, all public domain or CC0)
VIEWS = 4
Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def views(photo: Image.Image, rng: random.Random) -> list[Image.Image]:
    """Up to VIEWS crops of 45-70% of the photo's sides that overlap little."""
    w, h = photo.size
    boxes: list[Box] = []
    for _ in range(400):
        s = rng.uniform(0.45, 0.7)
        cw, ch = int(w * s), int(h * s)
        left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
        box = (left, top, left + cw, top + ch)
        if all(iou(box, other) < 0.3 for other in boxes):
            boxes.append(box)
        if len(boxes) == VIEWS:
            break
    # Enlarged so that the halved copies stay over 100 pixels.
    return [photo.crop(b).resize((3 * (b[2] - b[0]) // 2, 3 * (b[3] - b[1]) // 2)) for b in boxes]


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def crop(img: Image.Image, share: float) -> Image.Image:
    """Cut `share` of each side off (unevenly), then scale back to the original size."""
    w, h = img.size
    dx, dy = int(w * share), int(h * share)
    return img.crop((dx, dy // 2, w - dx // 2, h - dy)).resize((w, h), Image.Resampling.BICUBIC)


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "resized": lambda im, r: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "recompressed": lambda im, r: jpeg(im, r.randint(25, 45)),
    "cropped": lambda im, r: crop(im, r.uniform(0.05, 0.1)),
    "brightened": lambda im, r: ImageEnhance.Brightness(im).enhance(r.uniform(1.25, 1.45)),
    "bordered": lambda im, r: ImageOps.expand(im, border=int(0.08 * im.width), fill="white"),
    "crop+jpeg": lambda im, r: jpeg(crop(im, r.uniform(0.04, 0.08)), 40),
    "small+bright": lambda im, r: ImageEnhance.Brightness(
        im.resize((im.width * 2 // 3, im.height * 2 // 3))
    ).enhance(0.8),
}


def build(out: Path, seed: int = 0) -> dict:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    rng = random.Random(seed)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    groups = []
    for name in PHOTOS:
        photo = Image.open(data / name).convert("RGB")
        for v, original in enumerate(views(photo, rng)):
            stem = f"{Path(name).stem}_{v}"
            original.save(folder / f"{stem}.png")
            group = [f"{stem}.png"]
            for edit in rng.sample(sorted(EDITS), 2):
                file = f"{stem}-{edit}.jpg"
                EDITS[edit](original, rng).save(folder / file, quality=90)
                group.append(file)
            groups.append(group)
    truth = {"groups": groups, "edits": sorted(EDITS)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = build(args.out, args.seed)
    files = sum(len(g) for g in truth["groups"])
    print(f"{len(truth['groups'])} originals, {files} images")


if __name__ == "__main__":
    main()
