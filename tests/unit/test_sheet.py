"""Contact sheets: size, where each tile goes, aspect kept, placeholders, marks."""

from functools import partial

import numpy as np
from PIL import Image

from cbirq.cluster.shared_fs import read_file
from cbirq.embed.sheet import (
    CAPTION,
    GAP,
    MARKS,
    PAD,
    THUMB,
    TITLE,
    Tile,
    contact_sheet,
    query_sheet,
    sheet_size,
    short_names,
    tile_origin,
)

READ = partial(read_file, max_bytes=2**20)
RED, BLUE = (220, 20, 20), (20, 20, 220)


def solid(path, color, size):
    Image.new("RGB", size, color).save(path)
    return str(path)


def pixel(sheet, x, y):
    return tuple(int(v) for v in np.asarray(sheet)[int(y), int(x)])


def test_size_grows_by_rows_of_results():
    one_row = (PAD + 6 * (THUMB + PAD) + GAP, TITLE + THUMB + CAPTION + 2 * PAD)
    assert sheet_size(5) == one_row
    assert sheet_size(10) == (one_row[0], one_row[1] + THUMB + CAPTION + PAD)
    assert sheet_size(2) == (PAD + 3 * (THUMB + PAD) + GAP, one_row[1])
    assert sheet_size(0)[1] == one_row[1]


def test_tiles_sit_where_the_layout_says(tmp_path):
    query = Tile(solid(tmp_path / "q.png", BLUE, (64, 64)), "query")
    hits = [Tile(solid(tmp_path / f"{i}.png", RED, (64, 64)), f"#{i}") for i in range(7)]
    sheet = contact_sheet(query, hits, "title", READ, columns=5)
    assert sheet.size == sheet_size(7, 5)
    qx, qy = tile_origin(0)
    assert pixel(sheet, qx + THUMB / 2, qy + THUMB / 2) == BLUE
    for slot in (1, 5, 6, 7):  # first and last of row one, both of row two
        x, y = tile_origin(slot)
        assert pixel(sheet, x + THUMB / 2, y + THUMB / 2) == RED
    x, y = tile_origin(6)
    assert (x, y) == (tile_origin(1)[0], tile_origin(1)[1] + THUMB + CAPTION + PAD)
    caption = np.asarray(sheet)[y + THUMB : y + THUMB + CAPTION, x : x + THUMB]
    assert (caption < 100).any()  # text was drawn under the tile


def test_aspect_is_kept_inside_the_square(tmp_path):
    wide = Tile(solid(tmp_path / "wide.png", RED, (200, 50)), "#1")
    sheet = contact_sheet(Tile(None, "query"), [wide], "t", READ)
    x, y = tile_origin(1)
    column = np.asarray(sheet)[y : y + THUMB, x + THUMB // 2]
    red_rows = np.flatnonzero((column == RED).all(axis=1))
    assert len(red_rows) == THUMB // 4  # 200x50 fitted into 160 px: 160x40, centred
    assert red_rows[0] == (THUMB - THUMB // 4) // 2


def test_missing_or_broken_files_get_a_placeholder(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    hits = [
        Tile(str(tmp_path / "gone.jpg"), "#1"),
        Tile(str(tmp_path / "broken.jpg"), "#2"),
    ]
    sheet = contact_sheet(Tile(None, "query"), hits, "t", READ)
    for slot in (1, 2):
        x, y = tile_origin(slot)
        assert pixel(sheet, x + 3, y + 3) == (236, 236, 236)
        assert (np.asarray(sheet)[y : y + THUMB, x : x + THUMB] < 150).any()  # the reason


def test_marks_are_coloured_borders(tmp_path):
    path = solid(tmp_path / "w.png", (255, 255, 255), (64, 64))
    hits = [Tile(path, "#1", "relevant"), Tile(path, "#2", "irrelevant")]
    sheet = contact_sheet(Tile(path, "query", "query"), hits, "t", READ)
    for slot, mark in enumerate(["query", "relevant", "irrelevant"]):
        x, y = tile_origin(slot)
        assert pixel(sheet, x + 1, y + THUMB / 2) == MARKS[mark]


def test_query_sheet_from_a_query_answer(tmp_path):
    answer = {
        "query": solid(tmp_path / "q.png", BLUE, (40, 30)),
        "index": "default",
        "model": "resnet20",
        "metric": "cosine",
        "ranking": "plain",
        "results": [
            {"rank": r, "path": solid(tmp_path / f"{r}.png", RED, (30, 40)), "score": 1 / r}
            for r in (1, 2, 3)
        ],
    }
    sheet = query_sheet(answer, READ)
    assert sheet.size == sheet_size(3)
    x, y = tile_origin(3)
    assert pixel(sheet, x + THUMB / 2, y + THUMB / 2) == RED


def test_names_show_as_much_of_the_path_as_tells_files_apart():
    paths = ["/p/2019/a/IMG_1.jpg", "/p/2020/a/IMG_1.jpg", "/p/b/IMG_1.jpg", "/p/b/IMG_2.jpg"]
    assert short_names(paths + [paths[3], ""]) == [
        "2019/a/IMG_1.jpg",
        "2020/a/IMG_1.jpg",
        "b/IMG_1.jpg",
        "IMG_2.jpg",
        "IMG_2.jpg",  # the same file twice (a query that is in the library) is one name
        "",
    ]
