import os
import subprocess
import sys

from cbirq.client.library import is_image_name, walk_images
from cbirq.store import content_hash

IMAGES = [
    "b.JPG",
    "c.Jpeg",
    "d.PNG",
    "e.tif",
    "f.TIFF",
    "g.webp",
    "h.bmp",
    "i.gif",
    "sub/a.jpg",
    "sub/deeper/z.png",
    "sub2/x.jpeg",
]
NOT_IMAGES = [
    ".hidden.jpg",
    "._b.JPG",
    "notes.txt",
    "photo.jpg.txt",
    "raw.cr2",
    "jpg",
    "archive.jpgx",
    ".thumbs/t.jpg",
    "sub/.cache/c.png",
    "sub/._a.jpg",
]


def make_tree(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def test_walk_finds_images_recursively_in_sorted_order(tmp_path):
    # Created in reverse, so that creation order cannot pass for sorted order.
    make_tree(tmp_path, list(reversed(IMAGES + NOT_IMAGES)))
    found = [p.relative_to(tmp_path).as_posix() for p in walk_images(tmp_path)]
    assert found == IMAGES


def test_walk_is_repeatable(tmp_path):
    make_tree(tmp_path, IMAGES + NOT_IMAGES)
    assert list(walk_images(tmp_path)) == list(walk_images(tmp_path))


def test_walk_yields_paths_under_root(tmp_path):
    make_tree(tmp_path, ["a/b.jpg"])
    (path,) = walk_images(tmp_path)
    assert path == tmp_path / "a" / "b.jpg"
    assert path.is_file()


def test_folder_named_like_an_image_is_not_yielded(tmp_path):
    (tmp_path / "album.jpg").mkdir()
    make_tree(tmp_path, ["album.jpg/inside.png"])
    assert [p.name for p in walk_images(tmp_path)] == ["inside.png"]


def test_walk_of_empty_or_missing_folder(tmp_path):
    assert list(walk_images(tmp_path)) == []
    assert list(walk_images(tmp_path / "missing")) == []


def test_is_image_name_ignores_case_only_in_extension():
    assert is_image_name("IMG_0001.JPG")
    assert is_image_name("scan.TiFf")
    assert not is_image_name("._IMG_0001.JPG")
    assert not is_image_name("IMG_0001.JPG.bak")


def test_content_hash_depends_on_content_only(tmp_path):
    a, b, c = tmp_path / "a.jpg", tmp_path / "copy.png", tmp_path / "c.jpg"
    a.write_bytes(b"\xff\xd8same bytes")
    b.write_bytes(b"\xff\xd8same bytes")
    c.write_bytes(b"\xff\xd8same byteS")
    assert content_hash(a.read_bytes()) == content_hash(b.read_bytes())
    assert content_hash(a.read_bytes()) != content_hash(c.read_bytes())
    assert content_hash(b"") != content_hash(b"\x00")


def test_content_hash_is_short_hex():
    digest = content_hash(b"photo")
    assert len(digest) == 32
    assert set(digest) <= set("0123456789abcdef")


def test_content_hash_is_stable_across_processes():
    # Clients and workers on other hosts must agree, so no per-process salt (as hash() has).
    code = "from cbirq.store import content_hash; print(content_hash(b'photo'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {content_hash(b"photo")}
