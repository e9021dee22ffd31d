"""Robust image decoding: any file a photo folder holds -> a centre-cropped RGB uint8 array.

Every failure becomes an ImageError with a short reason, so one bad file is reported and the
rest of a chunk is still indexed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cbirq.errors import ImageError
from cbirq.settings import DEFAULT_MAX_DECODE_MB

# Far above any camera (~100 MP) yet small enough that a bomb cannot exhaust a worker's memory.
MAX_PIXELS = 150_000_000

MAX_DECODE_BYTES = DEFAULT_MAX_DECODE_MB * 2**20
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "RGB": 3, "YCbCr": 3}

# Our own limit is checked first; Pillow's (which warns, then raises) must not fire earlier.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2


def _open(source: bytes | str | Path) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image, or an unsupported format") from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses sizes over twice its limit in open(), before our own check runs.
        raise ImageError(f"image too large: {exc}") from None
    except Exception as exc:  # a crafted header can raise anything from a plugin
        raise ImageError(f"cannot open image: {type(exc).__name__}: {exc}") from None


def image_size(source: bytes | str | Path) -> tuple[int, int]:
    """(width, height) as shown (EXIF orientation applied), from the header alone."""
    img = _open(source)
    width, height = img.size
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)  # rotated a quarter turn
    except Exception:  # a broken EXIF block says nothing about the size
        turned = False
    return (height, width) if turned else (width, height)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        img = img.convert("I")
    if img.mode == "I":
        # 16-bit data: keep the top 8 bits instead of clipping everything above 255 to white.
        img = img.point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == "F":
        img = img.convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas show as white, as image viewers do, not as the hidden RGB values.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_cost(mode: str, width: int, height: int) -> int:
    """Bytes that decoding an image of this mode and size and converting it to RGB may hold at
    once: the decoded pixels, and for alpha the RGBA copy, white backdrop and composite."""
    decoded = _BYTES_PER_PIXEL.get(mode, 4)
    converting = 12 if "A" in mode or mode == "P" else 4 if mode in ("I", "I;16", "F") else 0
    return width * height * (decoded + converting + 3)


def load_rgb(
    source: bytes | str | Path, min_side: int = 0, max_bytes: int = MAX_DECODE_BYTES
) -> Image.Image:
    """Decode, apply EXIF orientation, convert any mode to RGB.

    `min_side` lets JPEG decode at a reduced scale (draft mode) while keeping both sides at
    least that long: a 12 MP photo decodes several times faster when the model wants 256 px.
    `max_bytes` bounds the memory decoding may take (a tiny PNG can unpack to gigabytes).
    """
    img = _open(source)
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"image too large ({width}x{height} pixels; possible decompression bomb)")
    try:
        if min_side and img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.draft(img.mode, (min_side, min_side))
        cost = decode_cost(img.mode, *img.size)
        if cost > max_bytes:
            raise ImageError(
                f"image too large to decode: {img.size[0]}x{img.size[1]} {img.mode} needs about "
                f"{cost / 2**20:.0f} MB (limit {max_bytes / 2**20:g} MB, CBIRQ_MAX_DECODE_MB)"
            )
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    except Exception as exc:  # fuzzed files make plugins raise IndexError, struct.error...
        raise ImageError(f"corrupt image: {type(exc).__name__}: {exc}") from None


def center_crop(img: Image.Image, resize: int, crop: int) -> np.ndarray:
    """Resize the short side to `resize`, centre-crop `crop` x `crop` (as torchvision's
    Resize + CenterCrop), in one resampling step."""
    width, height = img.size
    scale = resize / min(width, height)
    side = crop / scale  # never longer than the short side, since crop <= resize
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    out = img.resize((crop, crop), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out, dtype=np.uint8)


def load_array(
    source: bytes | str | Path, resize: int, crop: int, max_bytes: int = MAX_DECODE_BYTES
) -> np.ndarray:
    """A model-ready (crop, crop, 3) uint8 array from a file path or its bytes."""
    return center_crop(load_rgb(source, min_side=resize, max_bytes=max_bytes), resize, crop)
