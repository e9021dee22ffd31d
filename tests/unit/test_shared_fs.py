import contextlib
import os
import threading
import time

import pytest

from cbirq.cluster.shared_fs import read_file
from cbirq.errors import ImageError

MB = 2**20


@pytest.fixture
def roots(tmp_path):
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "sub" / "a.jpg").write_bytes(b"inside")
    (tmp_path / "shared2").mkdir()
    (tmp_path / "shared2" / "b.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    return tmp_path, (shared.resolve(),)


def test_files_under_a_root_are_readable(roots):
    tmp, allowed = roots
    assert read_file(str(tmp / "shared" / "sub" / "a.jpg"), MB, allowed) == b"inside"
    dotted = tmp / "shared" / "sub" / ".." / "sub" / "a.jpg"
    assert read_file(str(dotted), MB, allowed) == b"inside"


def test_a_symlink_inside_the_root_to_inside_is_fine(roots):
    tmp, allowed = roots
    link = tmp / "shared" / "link.jpg"
    link.symlink_to(tmp / "shared" / "sub" / "a.jpg")
    assert read_file(str(link), MB, allowed) == b"inside"


@pytest.mark.parametrize(
    "escape",
    [
        "shared/../secret.txt",  # dot-dot out of the root
        "shared/sub/../../secret.txt",
        "shared2/b.jpg",  # a sibling whose name starts like the root's
        "secret.txt",
    ],
)
def test_paths_out_of_the_roots_are_refused(roots, escape):
    tmp, allowed = roots
    with pytest.raises(ImageError, match="outside this worker's shared roots"):
        read_file(str(tmp / escape), MB, allowed)


def test_a_symlink_out_of_the_root_is_refused(roots):
    tmp, allowed = roots
    (tmp / "shared" / "out.jpg").symlink_to(tmp / "secret.txt")
    (tmp / "shared" / "outdir").symlink_to(tmp)
    for path in ("shared/out.jpg", "shared/outdir/secret.txt"):
        with pytest.raises(ImageError, match="outside"):
            read_file(str(tmp / path), MB, allowed)


def test_without_roots_nothing_is_readable(roots):
    tmp, _ = roots
    with pytest.raises(ImageError, match="start it with --shared-root DIR"):
        read_file(str(tmp / "shared" / "sub" / "a.jpg"), MB, ())


def test_special_files_are_refused_at_once(roots):
    tmp, allowed = roots
    fifo = tmp / "shared" / "fifo.jpg"
    os.mkfifo(fifo)  # a blocking open would hang until a writer came
    (tmp / "shared" / "zero.jpg").symlink_to("/dev/zero")
    loop = tmp / "shared" / "loop.jpg"
    loop.symlink_to(loop)
    began = time.monotonic()
    with pytest.raises(ImageError, match=r"not a regular file \(a FIFO\)"):
        read_file(str(fifo), MB, allowed)
    with pytest.raises(ImageError, match="not a regular file"):
        read_file(str(tmp / "shared" / "zero.jpg"), MB)  # client side: no roots
    with pytest.raises(ImageError, match="cannot open: Too many levels of symbolic links"):
        read_file(str(loop), MB, allowed)
    with pytest.raises(ImageError, match=r"not a regular file \(a folder\)"):
        read_file(str(tmp / "shared"), MB)
    assert time.monotonic() - began < 2


def test_files_over_the_cap_are_refused(roots):
    tmp, allowed = roots
    big = tmp / "shared" / "big.jpg"
    big.write_bytes(b"\0" * (MB + 1))
    with pytest.raises(ImageError, match=r"file too large \(1.0 MB; the limit is 1 MB"):
        read_file(str(big), MB, allowed)
    assert len(read_file(str(big), 2 * MB, allowed)) == MB + 1


def test_a_directory_swapped_for_a_symlink_never_leads_out(roots):
    """The race of a check before the open: a folder inside the root is replaced again and
    again by a symlink to outside while a reader reads through it."""
    tmp, allowed = roots
    (tmp / "outside").mkdir()
    (tmp / "outside" / "a.jpg").write_bytes(b"secret")
    real, spare = tmp / "shared" / "sub", tmp / "shared" / "sub.real"
    link = tmp / "shared" / "sub.link"
    link.symlink_to(tmp / "outside")
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            real.rename(spare)
            link.rename(real)
            real.rename(link)
            spare.rename(real)

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen = set()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            with contextlib.suppress(ImageError):
                seen.add(read_file(str(real / "a.jpg"), MB, allowed))
    finally:
        stop.set()
        swapper.join()
    assert b"secret" not in seen
