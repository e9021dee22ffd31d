import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from torchvision import transforms

from cbirq.embed import images
from cbirq.errors import ImageError


def encode(img, fmt, **options):
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def gradient(width, height):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [x * 255 / (width - 1), y * 255 / (height - 1), (x + y) * 255 / (width + height - 2)],
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def noise(size=(128, 96)):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def first_half(data):
    return data[: len(data) // 2]


def png_header_only(width, height):
    """A PNG that declares `width` x `height` RGB but carries almost no pixel data."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def rgb_at(img, x, y):
    return np.asarray(img)[y, x].astype(int)


def assert_short_message(exc_info):
    message = str(exc_info.value)
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    assert len(message) < 160


LOADERS = {
    "load_rgb": lambda source: images.load_rgb(source),
    "load_array": lambda source: images.load_array(source, 256, 224),
}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("corrupt.jpg", lambda: np.random.default_rng(0).bytes(4096)),
        ("truncated.jpg", lambda: first_half(encode(noise(), "JPEG", quality=95))),
        ("truncated.png", lambda: first_half(encode(noise(), "PNG"))),
        ("empty.jpg", lambda: b""),
        ("notes.jpg", lambda: b"shopping list: milk, eggs\n" * 20),
        # A valid JPEG header followed by garbage: Pillow opens it, then decoding fails.
        ("garbage_body.jpg", lambda: encode(noise(), "JPEG")[:600] + b"\x00" * 2000),
    ],
)
def test_bad_files_raise_short_image_error(tmp_path, loader, name, make):
    path = write(tmp_path, name, make())
    with pytest.raises(ImageError) as exc_info:
        loader(path)
    assert_short_message(exc_info)
    with pytest.raises(ImageError):
        loader(path.read_bytes())


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError) as exc_info:
        images.load_rgb(tmp_path / "nope.jpg")
    assert_short_message(exc_info)


def test_image_over_max_pixels_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 20 * 20 - 1)
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    with pytest.raises(ImageError, match="too large") as exc_info:
        images.load_rgb(data)
    assert_short_message(exc_info)
    monkeypatch.setattr(images, "MAX_PIXELS", 20 * 20)
    assert images.load_rgb(data).size == (20, 20)


@pytest.mark.parametrize(
    "size",
    [
        (20_000, 10_000),  # over our limit, under Pillow's
        (30_000, 30_000),  # over Pillow's hard limit too, which raises inside Image.open
    ],
)
def test_declared_huge_size_is_refused_without_decoding(monkeypatch, tmp_path, size):
    def no_decoding(self):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    data = png_header_only(*size)
    for source in (data, write(tmp_path, "bomb.png", data)):
        with pytest.raises(ImageError, match="too large") as exc_info:
            images.load_rgb(source)
        assert_short_message(exc_info)


def test_path_str_and_bytes_inputs_agree(tmp_path):
    data = encode(gradient(160, 120), "JPEG", quality=90)
    path = write(tmp_path, "g.jpg", data)
    from_path = images.load_array(path, 128, 112)
    assert np.array_equal(from_path, images.load_array(str(path), 128, 112))
    assert np.array_equal(from_path, images.load_array(data, 128, 112))


@pytest.mark.parametrize(
    ("size", "resize", "crop"),
    [((160, 120), 256, 224), ((120, 160), 256, 224), ((50, 400), 64, 32), ((224, 224), 224, 224)],
)
def test_load_array_shape_and_dtype(size, resize, crop):
    out = images.load_array(encode(gradient(*size), "PNG"), resize, crop)
    assert out.shape == (crop, crop, 3)
    assert out.dtype == np.uint8


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = images.load_rgb(data)
    assert img.mode == "RGB"
    assert np.abs(rgb_at(img, 8, 8) - [255, 0, 0]).max() <= 8


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (32768, 128), (25600, 100), (65535, 255)])
def test_16bit_grayscale_png_keeps_top_byte(value, expected):
    data = encode(Image.fromarray(np.full((8, 8), value, np.uint16)), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    img = images.load_rgb(data)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img).astype(int) - expected).max() <= 1


def test_16bit_gradient_is_not_clipped_to_white():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))
    out = np.asarray(images.load_rgb(encode(Image.fromarray(ramp), "PNG")))[0, :, 0]
    assert out[0] == 0 and out[-1] == 255
    assert np.all(np.diff(out.astype(int)) >= 0)
    assert 100 < out[32] < 160


def palette_image(transparent_index=None):
    img = Image.new("P", (4, 2), 0)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putpixel((3, 1), 1)
    options = {} if transparent_index is None else {"transparency": transparent_index}
    return encode(img, "PNG", **options)


def test_palette_png_uses_palette_colours():
    img = images.load_rgb(palette_image())
    assert img.mode == "RGB"
    assert rgb_at(img, 0, 0).tolist() == [10, 20, 30]
    assert rgb_at(img, 3, 1).tolist() == [200, 100, 50]


def test_palette_transparency_shows_white():
    data = palette_image(transparent_index=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    img = images.load_rgb(data)
    assert rgb_at(img, 0, 0).tolist() == [255, 255, 255]
    assert rgb_at(img, 3, 1).tolist() == [200, 100, 50]


def test_rgba_transparent_pixels_become_white():
    rgba = np.zeros((2, 3, 4), np.uint8)  # hidden colour black, fully transparent
    rgba[:, 1] = [10, 20, 30, 255]
    rgba[:, 2] = [0, 0, 0, 128]
    img = images.load_rgb(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert img.mode == "RGB"
    assert rgb_at(img, 0, 0).tolist() == [255, 255, 255]
    assert rgb_at(img, 1, 0).tolist() == [10, 20, 30]
    assert np.abs(rgb_at(img, 2, 0) - 127).max() <= 1


def test_la_transparent_pixels_become_white():
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (50, 255))
    img = images.load_rgb(encode(la, "PNG"))
    assert rgb_at(img, 0, 0).tolist() == [255, 255, 255]
    assert rgb_at(img, 1, 0).tolist() == [50, 50, 50]


def test_grayscale_becomes_equal_channels():
    img = images.load_rgb(encode(Image.new("L", (3, 3), 77), "PNG"))
    assert img.mode == "RGB"
    assert np.all(np.asarray(img) == 77)


def test_one_bit_image_is_black_and_white():
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    img = images.load_rgb(encode(bits, "PNG"))
    assert rgb_at(img, 0, 0).tolist() == [0, 0, 0]
    assert rgb_at(img, 1, 0).tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (64, 32), (255, 0, 0))
    wide.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the left half ends on top
    data = encode(wide, "JPEG", exif=exif, quality=95)
    # Also through JPEG draft mode, which decodes this one at half size.
    for img in (images.load_rgb(data), images.load_rgb(data, min_side=16)):
        width, height = img.size
        assert height == 2 * width
        assert np.abs(rgb_at(img, width // 2, height // 8) - [255, 0, 0]).max() <= 12
        assert np.abs(rgb_at(img, width // 2, height * 7 // 8) - [0, 0, 255]).max() <= 12
    assert images.load_array(data, 32, 32).shape == (32, 32, 3)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    img = images.load_rgb(data)
    assert img.mode == "RGB"
    assert rgb_at(img, 4, 4).tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    ("fmt", "options", "name"),
    [
        ("TIFF", {}, "x.tif"),
        ("WEBP", {"lossless": True}, "x.webp"),
        ("BMP", {}, "x.bmp"),
        ("PNG", {}, "x.png"),
        ("JPEG", {"quality": 95}, "x.jpeg"),
    ],
)
def test_common_formats_decode(tmp_path, fmt, options, name):
    path = write(tmp_path, name, encode(Image.new("RGB", (12, 8), (200, 60, 20)), fmt, **options))
    img = images.load_rgb(path)
    assert img.size == (12, 8)
    assert np.abs(rgb_at(img, 6, 4) - [200, 60, 20]).max() <= 4


@pytest.mark.parametrize(
    "size", [(300, 200), (200, 300), (640, 480), (1000, 257), (100, 80), (256, 256)]
)
def test_center_crop_matches_torchvision(size):
    img = gradient(*size)
    expected = np.asarray(
        transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(img)
    )
    out = images.center_crop(img, 256, 224)
    assert out.shape == expected.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2


def test_center_crop_takes_the_centre():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 255, 0), (100, 0, 200, 100))
    out = images.center_crop(img, 100, 100)
    assert np.abs(out.astype(int) - [0, 255, 0]).max() <= 1


def test_jpeg_draft_keeps_short_side_at_least_min_side():
    data = encode(gradient(2000, 1200), "JPEG", quality=90)
    drafted = images.load_rgb(data, min_side=256)
    assert 256 <= min(drafted.size) < 1200
    full = images.center_crop(images.load_rgb(data), 256, 224)
    assert np.abs(images.load_array(data, 256, 224).astype(int) - full.astype(int)).max() <= 6
