"""load_cifar: torchvision's batches and image trees, the decoded cache, clear errors."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cbirq.errors import CbirqError
from cbirq.training import cifar
from cbirq.training.cifar import CLASSES, Cifar, load_cifar
from tests.conftest import CIFAR_CLASSES, cifar_arrays, write_cifar_batches, write_cifar_tree

SPLITS = ("train_x", "train_y", "test_x", "test_y")


def as_arrays(data: cifar.Cifar) -> dict[str, np.ndarray]:
    return {k: getattr(data, k).numpy() for k in SPLITS}


def test_the_generator_knows_the_class_names():
    assert CIFAR_CLASSES == CLASSES


@pytest.mark.parametrize("layout", ["tree", "batches"])
def test_each_layout_loads_the_images_it_holds(tmp_path, layout):
    arrays = cifar_arrays(3, 2, seed=5)
    write = write_cifar_tree if layout == "tree" else write_cifar_batches
    data = load_cifar(write(tmp_path / "data", arrays))
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    for key, value in as_arrays(data).items():
        np.testing.assert_array_equal(value, arrays[key], err_msg=key)


def test_both_layouts_give_the_same_tensors(tmp_path):
    arrays = cifar_arrays(4, 2, seed=1)
    tree = load_cifar(write_cifar_tree(tmp_path / "tree", arrays))
    batches = load_cifar(write_cifar_batches(tmp_path / "batches", arrays))
    for key in SPLITS:
        assert torch.equal(getattr(tree, key), getattr(batches, key)), key
    assert sorted(set(tree.train_y.tolist())) == list(range(10))


def test_batch_rows_are_the_red_green_and_blue_planes(tmp_path):
    """A pixel's R, G and B sit 1024 bytes apart in a row, as in the real dataset."""
    arrays = cifar_arrays(1, 1)
    write_cifar_batches(tmp_path, arrays)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][0]
    data = load_cifar(tmp_path)
    img = data.train_x[0]
    assert [row[0], row[1024], row[2048]] == img[:, 0, 0].tolist()
    assert [row[31], row[32]] == [img[0, 0, 31].item(), img[0, 1, 0].item()]


def test_the_tree_reads_rgb_from_any_png_mode(tmp_path):
    arrays = cifar_arrays(1, 1)
    root = write_cifar_tree(tmp_path, arrays)
    path = root / "train" / "cat" / "0003.png"
    rgb = Image.open(path).convert("RGB")
    rgb.convert("RGBA").save(path)
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"finder junk")
    data = load_cifar(root)
    np.testing.assert_array_equal(data.train_x.numpy(), arrays["train_x"])


def test_the_cache_is_written_and_reused(tmp_path, cifar_tree, monkeypatch):
    cache = tmp_path / "cache"
    first = load_cifar(cifar_tree, cache)
    files = list(cache.glob("cifar10-*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as saved:
        assert sorted(saved.files) == sorted([*SPLITS, "classes"])  # a tree names its classes

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image despite the cache")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load_cifar(cifar_tree, cache)
    for key in SPLITS:
        assert torch.equal(getattr(first, key), getattr(again, key))
    monkeypatch.undo()
    assert list(cache.glob("*.npz")) == files and not list(cache.glob("*.tmp*"))


def test_a_relative_and_an_absolute_path_share_one_cache(tmp_path, cifar_tree, monkeypatch):
    cache = tmp_path / "cache"
    load_cifar(cifar_tree, cache)
    monkeypatch.chdir(cifar_tree.parent)
    load_cifar(Path(cifar_tree.name), cache)
    assert len(list(cache.glob("cifar10-*.npz"))) == 1


def test_two_loaders_writing_the_cache_at_once_both_succeed(tmp_path, cifar_tree, monkeypatch):
    """A second worker finishes its write while the first is still writing."""
    cache, savez, other = tmp_path / "cache", np.savez, {}

    def savez_while_another_worker_writes(file, **arrays):
        savez(file, **arrays)
        if "data" not in other:
            other["data"] = None  # the other worker's own write goes straight through
            other["data"] = load_cifar(cifar_tree, cache)

    monkeypatch.setattr(np, "savez", savez_while_another_worker_writes)
    first = load_cifar(cifar_tree, cache)
    monkeypatch.undo()
    assert torch.equal(first.train_x, other["data"].train_x)
    assert [p.name for p in cache.iterdir()] == [f.name for f in cache.glob("cifar10-*.npz")]
    assert torch.equal(load_cifar(cifar_tree, cache).test_x, first.test_x)


def test_a_cache_that_cannot_be_written_still_loads_the_data(
    tmp_path, cifar_tree, monkeypatch, caplog
):
    def disk_full(file, **arrays):
        file.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    data = load_cifar(cifar_tree, tmp_path / "cache")
    assert len(data.train_x) == 80
    assert list((tmp_path / "cache").iterdir()) == []
    assert "not cached" in caplog.text and "No space left" in caplog.text


def test_the_batches_cache_is_reused_without_unpickling(tmp_path, cifar_batches, monkeypatch):
    cache = tmp_path / "cache"
    first = load_cifar(cifar_batches, cache)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled a batch despite the cache")

    monkeypatch.setattr(cifar._PlainData, "load", no_unpickling)
    again = load_cifar(cifar_batches, cache)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)


def test_a_changed_file_invalidates_the_cache(tmp_path, cifar_tree):
    cache = tmp_path / "cache"
    before = load_cifar(cifar_tree, cache)
    path = cifar_tree / "test" / "dog" / "0011.png"
    assert path.exists()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = load_cifar(cifar_tree, cache)
    assert len(list(cache.glob("cifar10-*.npz"))) == 2
    index = list(after.test_y).index(CLASSES.index("dog")) + 1  # the second dog
    assert after.test_x[index, :, 0, 0].tolist() == [1, 2, 3]
    assert not torch.equal(before.test_x, after.test_x)
    assert torch.equal(before.train_x, after.train_x)


def test_an_added_file_invalidates_the_cache(tmp_path, cifar_tree):
    cache = tmp_path / "cache"
    assert len(load_cifar(cifar_tree, cache).train_x) == 80
    Image.new("RGB", (32, 32), (9, 9, 9)).save(cifar_tree / "train" / "ship" / "9999.png")
    assert len(load_cifar(cifar_tree, cache).train_x) == 81


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CbirqError, match="no CIFAR-10 data folder at .*nowhere"):
        load_cifar(tmp_path / "nowhere")


def test_a_folder_of_neither_layout_is_a_clear_error(tmp_path):
    (tmp_path / "train").mkdir()  # no test/ beside it
    (tmp_path / "photo.png").write_bytes(b"")
    with pytest.raises(CbirqError, match="holds neither cifar-10-batches-py/ nor train/"):
        load_cifar(tmp_path)


def test_a_class_folder_in_one_split_only_is_named(tmp_path, cifar_tree):
    shutil.rmtree(cifar_tree / "test" / "cat")
    with pytest.raises(CbirqError, match=r"same class folders; in one only: cat$"):
        load_cifar(cifar_tree)


def test_any_set_of_class_folders_is_a_data_set(tmp_path):
    """Three classes of their own names, in photos of any size: labels follow the sorted
    folder names, and every image is its centre square at 32x32."""
    colours = {"zebra": "white", "apple": "red", "moss": "green"}
    for split, count in (("train", 3), ("test", 2)):
        for name, colour in colours.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                size = (32, 32) if i == 0 else (90 + 10 * i, 40)  # wide photos: cropped
                Image.new("RGB", size, colour).save(tmp_path / split / name / f"{i}.jpg")
    data = load_cifar(tmp_path, tmp_path / "cache")
    assert data.classes == ("apple", "moss", "zebra")
    assert data.train_x.shape == (9, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    zebra = data.train_x[data.train_y == 2].float()
    assert zebra.min() > 240  # white, unstretched by padding
    assert load_cifar(tmp_path, tmp_path / "cache").classes == data.classes  # from the cache


def test_a_tree_of_one_class_is_refused(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
    with pytest.raises(CbirqError, match="at least two class folders, found 1"):
        load_cifar(tmp_path)


def test_an_empty_split_is_a_clear_error(tmp_path, cifar_tree):
    for name in CLASSES:
        for path in (cifar_tree / "test" / name).iterdir():
            path.unlink()
    with pytest.raises(CbirqError, match="no images under"):
        load_cifar(cifar_tree)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not an image at all", "cannot read CIFAR image .*0002.png"),
        (b"", "cannot read CIFAR image .*0002.png"),
        ("truncated", "cannot read CIFAR image .*0002.png"),
    ],
)
def test_a_bad_image_is_named(tmp_path, cifar_tree, content, message):
    path = cifar_tree / "train" / "airplane" / "0002.png"
    if content == "truncated":
        content = path.read_bytes()[:-40]
    path.write_bytes(content)
    with pytest.raises(CbirqError, match=message) as err:
        load_cifar(cifar_tree, tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def _batch(root, name):
    return root / "cifar-10-batches-py" / name


@pytest.mark.parametrize(
    "damage",
    ["truncated", "empty", "missing", "not-a-pickle", "no-labels", "short-row"],
)
def test_a_damaged_batch_is_a_clear_error(tmp_path, cifar_batches, damage):
    path = _batch(cifar_batches, "data_batch_3")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    elif damage == "not-a-pickle":
        path.write_text("data_batch_3 was here")
    else:
        batch = pickle.loads(raw, encoding="latin1")
        if damage == "no-labels":
            del batch["labels"]
        else:
            batch["data"] = batch["data"][:, :3000]
        path.write_bytes(pickle.dumps(batch))
    match = "malformed CIFAR-10 data in .*cifar-10-batches-py: (cannot read )?data_batch_3"
    with pytest.raises(CbirqError, match=match) as err:
        load_cifar(cifar_batches, tmp_path / "cache")
    assert "\n" not in str(err.value)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_batch_that_would_run_code_is_refused(tmp_path, cifar_batches):
    marker = tmp_path / "code-ran"
    path = _batch(cifar_batches, "test_batch")
    path.write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": [0]}, protocol=2))
    with pytest.raises(CbirqError, match="posix.mkdir has no place in a CIFAR batch"):
        load_cifar(cifar_batches, tmp_path / "cache")
    assert not marker.exists()


def test_held_out_images_come_from_the_training_split_and_leave_the_test_split_alone():
    data = Cifar(
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1),
        torch.arange(10),
        torch.full((3, 1, 1, 1), 99, dtype=torch.uint8),
        torch.zeros(3, dtype=torch.long),
    )
    split = data.held_out(4)
    assert (len(split.train_x), len(split.test_x)) == (6, 4)
    train, val = split.train_y.tolist(), split.test_y.tolist()
    assert sorted(train + val) == list(range(10))  # disjoint, and nothing from the test split
    assert split.train_x.flatten().tolist() == train  # images stay with their labels
    assert data.held_out(4).test_y.tolist() == val  # the same split every time
    assert data.held_out(4, seed=1).test_y.tolist() != val


@pytest.mark.parametrize("size", [0, 10])
def test_holding_out_none_or_all_is_refused(size):
    data = Cifar(*(torch.zeros(10, dtype=torch.uint8) for _ in range(4)))
    with pytest.raises(CbirqError, match=f"cannot hold out {size} of 10"):
        data.held_out(size)
