import pytest

from cbirq.cluster.shared_fs import confine
from cbirq.errors import ImageError


@pytest.fixture
def roots(tmp_path):
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "shared2").mkdir()
    (tmp_path / "shared2" / "b.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("x")
    return tmp_path, (shared.resolve(),)


def test_files_under_a_root_are_readable(roots):
    tmp, allowed = roots
    path = tmp / "shared" / "sub" / "a.jpg"
    assert confine(str(path), allowed) == str(path.resolve())
    assert confine(str(tmp / "shared" / "sub" / ".." / "sub" / "a.jpg"), allowed).endswith("a.jpg")


def test_a_symlink_inside_the_root_to_inside_is_fine(roots):
    tmp, allowed = roots
    link = tmp / "shared" / "link.jpg"
    link.symlink_to(tmp / "shared" / "sub" / "a.jpg")
    assert confine(str(link), allowed) == str((tmp / "shared" / "sub" / "a.jpg").resolve())


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
        confine(str(tmp / escape), allowed)


def test_a_symlink_out_of_the_root_is_refused(roots):
    tmp, allowed = roots
    (tmp / "shared" / "out.jpg").symlink_to(tmp / "secret.txt")
    (tmp / "shared" / "outdir").symlink_to(tmp)
    for path in ("shared/out.jpg", "shared/outdir/secret.txt"):
        with pytest.raises(ImageError, match="outside"):
            confine(str(tmp / path), allowed)


def test_without_roots_nothing_is_readable(roots):
    tmp, _ = roots
    with pytest.raises(ImageError, match="start it with --shared-root DIR"):
        confine(str(tmp / "shared" / "sub" / "a.jpg"), ())
