"""Near-duplicate search: candidates without an n x n matrix, the pixel check, grouping, and
the API and `cbirq dupes` on real files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageOps

from cbirq.embed import dupes
from tests.conftest import make_photo


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("block", [7, 2048])
def test_candidates_are_exactly_the_pairs_over_the_floor(block):
    rows = unit_rows(300, 96)
    rows[150:160] = rows[:10] + 0.3 * unit_rows(10, 96, seed=1)  # ten close pairs
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    found = dupes.candidates(rows, floor=0.5, block=block)
    sims = rows @ rows.T
    want = {(i, j) for i in range(300) for j in range(i + 1, 300) if sims[i, j] >= 0.5}
    assert {(p.first, p.second) for p in found} == want and len(want) >= 10
    assert all(abs(p.cosine - sims[p.first, p.second]) < 1e-5 for p in found)


def test_candidates_with_the_projection_bound_miss_nothing(monkeypatch):
    monkeypatch.setattr(dupes, "PROJECTED", 8)  # the bound on what 8 of 64 dims leave out
    rows = unit_rows(400, 64, seed=2)
    rows[200:230] = rows[:30] + 0.4 * unit_rows(30, 64, seed=3)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    found = dupes.candidates(rows, floor=0.6, block=50)
    sims = np.triu(rows @ rows.T, 1)
    assert {(p.first, p.second) for p in found} == set(zip(*np.nonzero(sims >= 0.6)))


def test_the_projection_is_the_main_axes():
    rows = unit_rows(500, 32, seed=4) * np.geomspace(4, 0.1, 32).astype(np.float32)
    axes = dupes._projection(rows, 4)
    _, _, main = np.linalg.svd(rows.astype(np.float64))
    assert np.allclose(np.abs(axes.T @ main[:4].T), np.eye(4), atol=1e-3)


def as_sketch(img: Image.Image) -> dupes.Sketch:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return dupes.sketch(buf.getvalue())


def test_the_pixel_check_tells_copies_from_other_pictures():
    photo = make_photo(1, (240, 180))
    w, h = photo.size
    copies = [
        photo.resize((w // 2, h // 2)),
        photo.crop((18, 9, w - 9, h - 18)).resize((w, h)),
        ImageEnhance.Brightness(photo).enhance(1.3),
        ImageOps.expand(photo, border=20, fill="white"),
    ]
    original = as_sketch(photo)
    for copy in copies:
        assert dupes.local_match(original, as_sketch(copy)) > 0.9
    for seed in (2, 3, 4):
        assert dupes.local_match(original, as_sketch(make_photo(seed, (240, 180)))) < 0.7
    mirrored = as_sketch(ImageOps.mirror(photo))
    assert dupes.local_match(original, mirrored) < dupes.THRESHOLD


def test_without_pixels_a_pair_scores_its_cosine_only_when_nearly_identical():
    rows = np.array([[1.0, 0.0], [0.99, 0.141], [0.9, 0.436]], dtype=np.float32)
    scores = dupes.PairScores(rows, lambda i: None)
    pairs = [dupes.Pair(0, 1, 0.99), dupes.Pair(0, 2, 0.9)]
    kept = dupes.confirm(pairs, scores)
    assert [(p.first, p.second, round(p.score, 2)) for p in kept] == [(0, 1, 0.99)]
    assert scores(0, 2) == 0.0 and scores.unreadable() == [0, 1, 2]


def table(known: dict[tuple[int, int], float]):
    """Pair scores from a table, the pairs it does not name scoring 0; and its duplicates."""
    pairs = [dupes.Pair(a, b, 0.9, s) for (a, b), s in known.items() if s >= dupes.THRESHOLD]
    return pairs, lambda i, j: known.get((min(i, j), max(i, j)), 0.0)


def test_one_false_pair_does_not_pull_another_picture_into_a_group():
    # A photo and its copy (0, 1); another picture of the subject (2) passes with the copy by
    # accident but not with the photo: it stays out, as a lone false link used to let it in.
    pairs, scores = table({(0, 1): 0.97, (1, 2): 0.87, (0, 2): 0.62})
    assert dupes.groups(pairs, scores) == [{0: 0.97, 1: 0.97}]


def test_a_copy_joins_on_its_stronger_pairs():
    # The pair of two edited copies (1, 2) falls a little short; each one's mean does not.
    pairs, scores = table({(0, 1): 0.98, (0, 2): 0.95, (1, 2): 0.8})
    [group] = dupes.groups(pairs, scores)
    assert group == pytest.approx({0: 0.965, 1: 0.89, 2: 0.875})
    assert min(group.values()) >= dupes.THRESHOLD


def test_one_false_pair_does_not_chain_two_groups():
    triangle = [(0, 1), (1, 2), (0, 2)]
    known = {(a + k, b + k): 1.0 for k in (0, 3) for a, b in triangle}
    pairs, scores = table(known | {(2, 3): 0.9})  # a false pair, weaker than the copies' own
    assert [sorted(g) for g in dupes.groups(pairs, scores)] == [[0, 1, 2], [3, 4, 5]]
    # Every pair between the two a duplicate: one group after all.
    pairs, scores = table(known | {(a, b): 0.9 for a in (0, 1, 2) for b in (3, 4, 5)})
    assert [sorted(g) for g in dupes.groups(pairs, scores)] == [[0, 1, 2, 3, 4, 5]]


def test_the_score_weighs_the_features():
    # Smooth pictures that correlate by accident but whose features differ score lower...
    assert dupes.score(0.68, 0.87) < dupes.THRESHOLD <= dupes.score(0.85, 0.87)
    # ...and features that agree well carry a brightened copy's weaker pixel match.
    assert dupes.score(0.95, 0.6) >= dupes.THRESHOLD > dupes.score(0.9, 0.6)


@pytest.fixture
def shots(tmp_path):
    """Three pictures, two with edited copies: two groups to find."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for seed in (1, 2, 3):
        make_photo(seed, (240, 180)).save(folder / f"p{seed}.png")
    one = make_photo(1, (240, 180))
    one.resize((120, 90)).save(folder / "p1-small.jpg", quality=90)
    ImageEnhance.Brightness(one).enhance(1.3).save(folder / "p1-bright.jpg", quality=60)
    ImageOps.expand(make_photo(2, (240, 180)), border=16, fill="white").save(folder / "p2-b.png")
    return folder


def test_the_api_finds_the_groups(shots):
    from cbirq import Client

    cb = Client()
    summary = cb.index(shots)
    assert summary["indexed"] == 6
    found = cb.dupes()
    names = [sorted(p.rsplit("/", 1)[1] for p in g["paths"]) for g in found["groups"]]
    assert names == [["p1-bright.jpg", "p1-small.jpg", "p1.png"], ["p2-b.png", "p2.png"]]
    assert all(g["scores"][0] == pytest.approx(1.0) for g in found["groups"])
    paths, matrix = cb.features()
    assert len(paths) == 6 and matrix.shape == (6, 1280) and matrix.dtype == np.float32
    answer = cb.query(shots / "p3.png", top=2)
    assert answer["results"][0]["path"] == str(shots / "p3.png")


def test_cbirq_dupes_as_a_user_runs_it(shots, tmp_path):
    from cbirq.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["index", str(shots)]).exit_code == 0
    done = runner.invoke(main, ["dupes", "--json", "--sheet", str(tmp_path / "sheets")])
    assert done.exit_code == 0, done.output
    found = json.loads(done.output)
    assert [len(g["paths"]) for g in found["groups"]] == [3, 2] and found["images"] == 6
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
        "group-001.png",
        "group-002.png",
    ]
    strict = json.loads(runner.invoke(main, ["dupes", "-t", "2", "--json"]).output)
    assert strict["groups"] == []
    text = runner.invoke(main, ["dupes"]).output
    assert text.startswith("group 1 (3 images)")
