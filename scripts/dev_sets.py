"""Build the development sets that ranking defaults are chosen on, offline and seeded.

Each set has a `validation` split (options are chosen on it) and a `heldout` split (only
reported), one folder per label, for `cbirq eval SPLIT` (each image queries the rest):

- `category`: CIFAR-10 test images from the JPEG tarball (--cifar), 100 per class per split,
  disjoint (validation: numbers 0000-0099, held out: 0500-0599). Relevant: the same class.
- `instance`: UKBench-style, 4 views per object. An object is a region of a public photo (up to
  4 regions per photo that overlap little, as in scripts/dupes_set.py, so the other regions of
  a photo are hard negatives); its 4 views are random crops, rotations, perspective, colour,
  scale and JPEG changes of it. The photos are scikit-image's (public domain or CC0) and the
  photographs among the MATE desktop backgrounds (Debian's `mate-backgrounds`, GPL; fetched with
  `apt-get download`, --debs). Split by source photo, so no photo gives objects to both splits.
  Score: N-S, the relevant views in the top 4 (the query first), best 4.

- `photos`: real photos in 10 classes, from Tux Paint's photo stamps (Debian's
  `tuxpaint-stamps-default`, GPL): objects cut out on white, in the package's own folders
  (birds, fruit, flowers, vegetables, mammals, fish, tools, clothes, planets, household;
  cartoon drawings left out). Each stamp is also an `instance` object (its 4 views made as
  above), in the same split in both sets.

The desktop backgrounds are too few and too mixed to make honest classes; they serve the
instance set only.

    apt-get download mate-backgrounds tuxpaint-stamps-default    # into data/debs (ignored)
    .venv/bin/python scripts/dev_sets.py data/dev --cifar CIFAR.tar.gz --debs data/debs
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from dupes_set import PHOTOS, views
from make_examples import random_crop
from PIL import Image, ImageEnhance

SPLITS = {"validation": range(0, 100), "heldout": range(500, 600)}  # CIFAR-10 image numbers
VIEWS = 4  # UKBench: 4 photos per object
# The photographs among mate-backgrounds' files (the rest are drawings and gradients).
MATE_PHOTOS = (
    "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
    "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg",
)  # fmt: skip
LONG_SIDE = 768  # sources are scaled down to this first: wallpapers are 2-5k pixels wide
STAMP_CLASSES = {  # class: Tux Paint's stamp folder (cartoon subfolders left out)
    "birds": "animals/birds", "fruit": "food/fruit", "flowers": "plants/flowers",
    "vegetables": "food/vegetables", "mammals": "animals/mammals", "fish": "animals/fish",
    "tools": "household/tools", "clothes": "clothes", "planets": "space/planets",
    "household": "household",
}  # fmt: skip
STAMP_SIDE = 384


def category(tarball: Path, out: Path) -> dict[str, int]:
    """CIFAR-10 test images into out/category/SPLIT/CLASS/NNNN.jpg."""
    wanted = {f"{n:04d}.jpg": split for split, numbers in SPLITS.items() for n in numbers}
    counts = dict.fromkeys(SPLITS, 0)
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or parts[0] != "test" or parts[2] not in wanted:
                continue
            split = wanted[parts[2]]
            target = out / "category" / split / parts[1] / parts[2]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            counts[split] += 1
    return counts


def unpacked(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def stamps(debs: Path | None, rng: random.Random) -> dict[str, list[tuple[str, Image.Image]]]:
    """Split -> (class, RGB photo on white) of Tux Paint's photo stamps; each class's stamps
    shuffled and dealt to the splits in turn."""
    dealt: dict[str, list[tuple[str, Image.Image]]] = {split: [] for split in SPLITS}
    for deb in sorted(debs.glob("tuxpaint-stamps-default_*.deb")) if debs else []:
        with tempfile.TemporaryDirectory() as tmp:
            root = unpacked(deb, Path(tmp)) / "usr/share/tuxpaint/stamps"
            for label, folder in STAMP_CLASSES.items():
                files = sorted(
                    p for p in (root / folder).rglob("*.png") if "cartoon" not in p.parts
                )
                for n, file in enumerate(rng.sample(files, len(files))):
                    image = Image.open(file).convert("RGBA")
                    image.thumbnail((STAMP_SIDE, STAMP_SIDE), Image.Resampling.LANCZOS)
                    white = Image.new("RGBA", image.size, "white")
                    white.alpha_composite(image)
                    split = list(SPLITS)[n % 2]
                    dealt[split].append((f"{label}_{file.stem}", white.convert("RGB")))
    return dealt


def photos(dealt: dict[str, list[tuple[str, Image.Image]]], out: Path) -> dict[str, int]:
    """out/photos/SPLIT/CLASS/NAME.jpg."""
    for split, found in dealt.items():
        for name, image in found:
            label, stem = name.split("_", 1)
            (out / "photos" / split / label).mkdir(parents=True, exist_ok=True)
            image.save(out / "photos" / split / label / f"{stem}.jpg", quality=92)
    return {split: len(found) for split, found in dealt.items()}


def sources(debs: Path | None) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of every source photo, in a fixed order."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    found = [(Path(n).stem, Image.open(data / n)) for n in PHOTOS]
    for deb in sorted(debs.glob("mate-backgrounds_*.deb")) if debs else []:
        with tempfile.TemporaryDirectory() as tmp:
            root = unpacked(deb, Path(tmp))
            for name in MATE_PHOTOS:
                [path] = root.rglob(name)
                image = Image.open(path)
                image.draft("RGB", (LONG_SIDE, LONG_SIDE))
                found.append((Path(name).stem.lower(), image.convert("RGB")))
    out = []
    for name, image in found:
        image = image.convert("RGB")
        image.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        out.append((name, image))
    return out


def perspective(img: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """The image seen from a little aside: each corner moved by up to `strength` of the side,
    then cut so that no empty corner is left."""
    w, h = img.size
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(x + rng.uniform(-1, 1) * strength * w, y + rng.uniform(-1, 1) * strength * h)
             for x, y in corners]  # fmt: skip
    # PIL maps each output pixel (x, y) to the input one: solve for its 8 coefficients.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(corners, moved):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    coeffs = np.linalg.solve(np.array(rows, float), np.array(rhs, float))
    seen = img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.BICUBIC)
    dx, dy = int(strength * w) + 1, int(strength * h) + 1  # no empty corner left
    return seen.crop((dx, dy, w - dx, h - dy))


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Rotated, then cut to the largest centred box of the same shape with no empty corner."""
    w, h = img.size
    turned = img.rotate(degrees, Image.Resampling.BICUBIC)
    a = np.radians(abs(degrees))
    keep = 1 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    cw, ch = int(w * keep), int(h * keep)
    return turned.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))


def view(img: Image.Image, rng: random.Random) -> Image.Image:
    """One photo of the object: part of it, maybe turned or seen at an angle, in other light,
    at another size, recompressed."""
    img = random_crop(img, rng, 0.65, 0.9)
    if rng.random() < 0.5:
        img = rotate(img, rng.uniform(-25, 25))
    if rng.random() < 0.5:
        img = perspective(img, rng, 0.12)
    for enhance, low, high in (
        (ImageEnhance.Brightness, 0.7, 1.3),
        (ImageEnhance.Contrast, 0.7, 1.3),
        (ImageEnhance.Color, 0.6, 1.4),
    ):
        img = enhance(img).enhance(rng.uniform(low, high))
    scale = rng.uniform(0.45, 1.0)
    img = img.resize((max(96, int(img.width * scale)), max(96, int(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(60, 92))
    return Image.open(io.BytesIO(buf.getvalue()))


def instance(
    out: Path, debs: Path | None, dealt: dict[str, list[tuple[str, Image.Image]]], seed: int
) -> dict[str, int]:
    """out/instance/SPLIT/OBJECT/view_N.jpg: regions of the source photos (which alternate
    between the splits) and the stamps `dealt` to each split."""
    rng = random.Random(seed)
    objects: dict[str, list[tuple[str, Image.Image]]] = {split: [] for split in SPLITS}
    found = sources(debs)
    for rank, i in enumerate(rng.sample(range(len(found)), len(found))):
        name, photo = found[i]
        regions = views(photo, rng)
        objects[list(SPLITS)[rank % 2]] += [(f"{name}_{r}", x) for r, x in enumerate(regions)]
    for split, stamped in dealt.items():
        objects[split] += [(f"stamp_{name}", image) for name, image in stamped]
    for split, made in objects.items():
        for name, image in made:
            folder = out / "instance" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for v in range(VIEWS):
                view(image, rng).save(folder / f"view_{v}.jpg", quality=95)
    return {split: len(made) for split, made in objects.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cifar", type=Path, help="the CIFAR-10 JPEG tarball")
    parser.add_argument("--debs", type=Path, help="folder with mate-backgrounds_*.deb")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dealt = stamps(args.debs, random.Random(args.seed))
    made = {
        "instance objects": instance(args.out, args.debs, dealt, args.seed),
        "photos images": photos(dealt, args.out),
    }
    if args.cifar:
        made["category images"] = category(args.cifar, args.out)
    (args.out / "made.json").write_text(json.dumps({**made, "seed": args.seed}, indent=1))
    print(json.dumps(made))


if __name__ == "__main__":
    main()
