"""Near-duplicate images: candidate pairs from the stored CNN features, confirmed by a local
check on the pixels, grouped.

A global CNN cosine alone does not separate the hard cases: two different crops of one gravel
texture score 0.97, while a heavily recompressed copy of a blurred photo scores 0.5. So the
features only nominate pairs (cosine at least a generous floor) and each nominee is confirmed
by aligning small grey thumbnails of the two images: the centre of one is searched in the
other over a range of scales and shifts (copies that were cropped, bordered or rescaled), by
normalised cross-correlation (blind to brightness and contrast changes). A copy matches almost
perfectly; another picture of the same subject does not.

A pair's score is that correlation, moved by WEIGHT per unit of cosine away from PIVOT, plus
BOOST when the features agree well (cosine >= AGREE): a strongly brightened copy loses some
pixel agreement but keeps its features, while two smooth, low-texture pictures (sky, blurred
photos) can correlate by accident but their features tell them apart.

Groups do not chain through one link: every member's mean score with the other members of its
group must reach the threshold too (copies of one picture are copies of each other), so one
false pair cannot pull a different picture into a group of copies.

Candidates never need the n x n matrix: rows are compared in blocks, and a low-dimensional
projection with an exact bound on what it leaves out discards most pairs before the full
vectors are compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbirq.embed.images import load_rgb
from cbirq.errors import ImageError

# Chosen on a test set built with scripts/dupes_set.py --seed 0 and measured on another
# (--seed 1, docs/dupes.md), so that the figures there are not fitted to the set they report.
FLOOR = 0.65  # plain cosine a pair needs to be checked at all
THRESHOLD = 0.86  # a pair's score (below) that makes it a duplicate: mid of seed 0's safe range
AGREE, BOOST = 0.94, 0.25  # features that agree this well need less pixel evidence
PIVOT, WEIGHT = 0.8, 0.5  # and the cosine's distance from PIVOT moves the score a little
SURE = 0.97  # without pixels (a file gone or unreadable): the cosine alone must reach this
BLOCK = 2048  # rows compared at once
COLUMNS = 16_384  # columns of a block of bounds: BLOCK x COLUMNS scores in memory
PAIRS = 16_384  # pairs whose full vectors are compared at once
PROJECTED = 256  # dimensions of the projection whose bound discards most pairs
SKETCH = 64  # long side of the grey thumbnail, pixels
CENTRE = 0.6  # share of each side of the searched centre patch
# Relative scales tried (crops of up to ~20% a side); steps of 3.8%: at 64 pixels a coarser
# step misaligns fine textures (brick, text) enough to lose copies.
SCALES = np.geomspace(0.8, 1.25, 13)


@dataclass(frozen=True)
class Pair:
    first: int
    second: int
    cosine: float
    score: float | None = None  # see PairScores; None until checked


def _projection(matrix: np.ndarray, dims: int) -> np.ndarray:
    """The top principal axes (uncentred) of a sample of rows: where most of the energy is.
    Through the dim x dim second-moment matrix: an SVD of the sample itself took seconds."""
    sample = matrix[:: max(1, len(matrix) // 20_000)]
    _, axes = np.linalg.eigh((sample.T @ sample).astype(np.float64))  # ascending eigenvalues
    return np.ascontiguousarray(axes[:, ::-1][:, :dims], dtype=np.float32)


def _bounding(matrix: np.ndarray, block: int) -> np.ndarray:
    """Rows whose dot products bound the cosines from above, in few dimensions: with P the
    projection and r a row's residual, x.y = Px.Py + rx.ry and rx.ry <= |rx||ry|, so each row
    is Px with |rx| as one more coordinate (one matmul gives the bound, no temporaries)."""
    n, dim = matrix.shape
    if dim <= PROJECTED + 1 or n <= block:
        return matrix
    low = matrix @ _projection(matrix, PROJECTED)
    slack = np.sqrt(np.maximum(0.0, 1.0 - np.einsum("ij,ij->i", low, low)))
    return np.hstack([low, slack[:, None]]).astype(np.float32)


def _exact(matrix: np.ndarray, i: np.ndarray, j: np.ndarray, floor: float) -> list[Pair]:
    """The pairs (i[k], j[k]) whose full cosine is >= floor, PAIRS at a time (bounded memory
    however little the bound pruned)."""
    found = []
    for at in range(0, len(i), PAIRS):
        a, b = i[at : at + PAIRS], j[at : at + PAIRS]
        exact = np.einsum("ij,ij->i", matrix[a], matrix[b])
        sure = exact >= floor
        found += [Pair(int(x), int(y), float(c)) for x, y, c in zip(a[sure], b[sure], exact[sure])]
    return found


def candidates(matrix: np.ndarray, floor: float = FLOOR, block: int = BLOCK) -> list[Pair]:
    """Every pair (i < j) of unit rows with cosine >= floor, exactly, without an n x n matrix:
    blocks of rows x COLUMNS of the bound (_bounding), the full vectors only where it passes."""
    n = len(matrix)
    if n < 2:
        return []
    low = _bounding(matrix, block)
    found: list[Pair] = []
    for start in range(0, n, block):
        rows = low[start : start + block]
        for col in range(start, n, COLUMNS):  # only j >= i: the upper triangle
            i, j = np.nonzero(rows @ low[col : col + COLUMNS].T >= floor - 1e-4)
            i, j = i + start, j + col
            keep = j > i  # each pair once, never a row with itself
            found += _exact(matrix, i[keep], j[keep], floor)
    return found


def _trimmed(img):
    """The image without uniform margins (a border someone added), unless that is all."""
    from PIL import ImageChops

    corner = img.getpixel((0, 0))
    diff = ImageChops.difference(img, img.point(lambda _: corner)).point(lambda v: v > 12 and 255)
    box = diff.getbbox()
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) < 0.5 * img.width * img.height:
        return img
    return img.crop(box)


def sketch(source: str | Path | bytes) -> Sketch:
    """A grey thumbnail of the image without added margins, its long side SKETCH pixels."""
    img = _trimmed(load_rgb(source).convert("L"))
    scale = SKETCH / max(img.size)
    size = (max(8, round(img.width * scale)), max(8, round(img.height * scale)))
    return Sketch(np.asarray(img.resize(size, resample=_BOX), dtype=np.float32))


class Sketch:
    """A grey thumbnail with its centre patch and its copies at every relative scale, made
    once per image however many pairs it is in."""

    def __init__(self, image: np.ndarray) -> None:
        from PIL import Image

        h, w = image.shape
        dh, dw = round(h * (1 - CENTRE) / 2), round(w * (1 - CENTRE) / 2)
        self.centre = image[dh : h - dh, dw : w - dw]
        pil = Image.fromarray(image)
        self.scaled = [
            np.asarray(pil.resize((max(4, round(w / s)), max(4, round(h / s))), _BOX), np.float32)
            for s in SCALES
        ]


def _window_sums(image: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """The sum of every ph x pw window of `image` (an integral image)."""
    c = np.pad(image.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[ph:, pw:] - c[:-ph, pw:] - c[ph:, :-pw] + c[:-ph, :-pw]


def _ncc(patch: np.ndarray, image: np.ndarray) -> float:
    """The best normalised cross-correlation of `patch` at any position inside `image`
    (through the FFT: the correlation at every shift at once)."""
    ph, pw = patch.shape
    h, w = image.shape
    p = patch - patch.mean()
    p_norm = float(np.linalg.norm(p))
    # A flat patch says nothing: it would match any other flat region.
    if h < ph or w < pw or p_norm < 1e-3 * ph * pw:
        return -1.0
    spectrum = np.fft.rfft2(image) * np.conj(np.fft.rfft2(p, s=(h, w)))
    dots = np.fft.irfft2(spectrum, s=(h, w))[: h - ph + 1, : w - pw + 1]
    sums = _window_sums(image.astype(np.float64), ph, pw)
    energy = _window_sums(image.astype(np.float64) ** 2, ph, pw) - sums**2 / (ph * pw)
    scores = dots / np.maximum(np.sqrt(np.maximum(energy, 0.0)) * p_norm, 1e-3 * p_norm)
    return float(scores.max())


def local_match(a: Sketch, b: Sketch) -> float:
    """How well the centre of each sketch is found in the other, at the best scale and shift
    (the worse of both directions): near 1 for copies, far lower for other pictures. Part of
    one picture may be found in another that overlaps it, but only a copy holds the other's
    centre as well."""
    return min(
        max(_ncc(one.centre, scaled) for scaled in other.scaled) for one, other in ((a, b), (b, a))
    )


def score(cosine: float, match: float) -> float:
    """A checked pair's score: the local check, moved by the features' agreement."""
    return match + WEIGHT * (cosine - PIVOT) + (BOOST if cosine >= AGREE else 0.0)


class PairScores:
    """Any pair's score, computed once (sketches too, however many pairs an image is in).
    `load(i)`: row i's sketch, None when its file cannot be read; a pair without both sketches
    scores its cosine when that reaches `sure` (features nearly identical), else 0."""

    def __init__(
        self, matrix: np.ndarray, load: Callable[[int], Sketch | None], sure: float = SURE
    ) -> None:
        self.matrix, self.load, self.sure = matrix, load, sure
        self.sketches: dict[int, Sketch | None] = {}
        self.known: dict[tuple[int, int], float] = {}

    def sketch(self, i: int) -> Sketch | None:
        if i not in self.sketches:
            self.sketches[i] = self.load(i)
        return self.sketches[i]

    def unreadable(self) -> list[int]:
        """The rows whose files could not be read for the check, so far."""
        return sorted(i for i, found in self.sketches.items() if found is None)

    def __call__(self, i: int, j: int) -> float:
        key = (min(i, j), max(i, j))
        if key not in self.known:
            cosine = float(self.matrix[i] @ self.matrix[j])
            a, b = self.sketch(i), self.sketch(j)
            if a is None or b is None:
                self.known[key] = cosine if cosine >= self.sure else 0.0
            else:
                self.known[key] = score(cosine, local_match(a, b))
        return self.known[key]


def confirm(
    pairs: Sequence[Pair], scores: Callable[[int, int], float], threshold: float = THRESHOLD
) -> list[Pair]:
    """The pairs that are duplicates (score >= `threshold`), with their score."""
    scored = (Pair(p.first, p.second, p.cosine, scores(p.first, p.second)) for p in pairs)
    return [pair for pair in scored if (pair.score or 0.0) >= threshold]


def file_sketches(
    paths: Sequence[str], read: Callable[[str], bytes]
) -> Callable[[int], Sketch | None]:
    """`load` for `PairScores`: the sketch of paths[i] as `read` gives its bytes (a regular
    file, size-capped: a path that became a FIFO must not hang the check), None when the file
    is gone or unreadable."""

    def load(i: int) -> Sketch | None:
        try:
            return sketch(read(paths[i]))
        except (OSError, ImageError):
            return None

    return load


def groups(
    pairs: Sequence[Pair], scores: Callable[[int, int], float], threshold: float = THRESHOLD
) -> list[dict[int, float]]:
    """Groups joined by the duplicate pairs, each {row: its mean score with the other members},
    largest first. Strongest pairs first, two groups merge only when every member of the merged
    group keeps a mean score of at least `threshold` with the others: one false pair cannot pull
    an image into a group (nor chain two groups), while a copy whose pair with another copy
    falls a little short still joins on its stronger pairs."""
    owner: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    sums: dict[int, float] = {}  # a member's summed score with the other members
    for pair in sorted(pairs, key=lambda p: -(p.score or 0.0)):
        a, b = owner.get(pair.first, pair.first), owner.get(pair.second, pair.second)
        if a == b:
            continue
        left, right = members.get(a, [a]), members.get(b, [b])
        cross = np.array([[scores(x, y) for y in right] for x in left])
        merged = dict(zip(left, cross.sum(1))) | dict(zip(right, cross.sum(0)))
        merged = {m: sums.get(m, 0.0) + float(add) for m, add in merged.items()}
        if min(merged.values()) < threshold * (len(merged) - 1):
            continue
        sums |= merged
        owner |= dict.fromkeys(right, a) | {a: a}
        members[a] = left + right
        members.pop(b, None)
    found = [{m: sums[m] / (len(g) - 1) for m in sorted(g)} for g in members.values()]
    return sorted(found, key=lambda g: (-len(g), min(g)))


def _box():
    from PIL import Image

    return Image.Resampling.BOX


_BOX = _box()
