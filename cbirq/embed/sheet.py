"""Contact sheets: a query and its ranked results in one PNG, drawn with Pillow.

The query stands in the first column; the results fill a grid beside it, row by row. Every
tile is the same square with the image fitted inside (aspect kept) and two caption lines
under it: rank and score, then as much of the file's path as tells it from the sheet's other
files. A file that cannot be read gets a grey placeholder saying why, so a moved library still
gives a sheet.

Every command writes its sheets the same way: into a folder, never over a file without --force.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from cbirq.embed.images import load_rgb
from cbirq.errors import CbirqError, ImageError, refuse_overwrite

THUMB = 160  # px, the side of every image square
PAD = 12  # px around and between tiles
CAPTION = 40  # px under each square: two lines of text
TITLE = 32  # px above the grid
GAP = 16  # px more between the query column and the results
COLUMNS = 5
# A library file's bytes (cbirq.client.Client.read_file: regular files, size-capped), or an
# ImageError that the tile shows.
Reader = Callable[[str], bytes]
MARKS = {"query": (31, 119, 180), "relevant": (44, 160, 44), "irrelevant": (214, 39, 40)}
BORDER = 4


@dataclass
class Tile:
    path: str | None  # the image file; None: a placeholder
    caption: str  # above the file's name: rank and score, or "query"
    mark: str | None = None  # a coloured border: one of MARKS


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def sheet_size(hits: int, columns: int = COLUMNS, thumb: int = THUMB) -> tuple[int, int]:
    """(width, height) of the sheet for `hits` results."""
    columns = max(1, min(columns, hits))
    rows = max(1, -(-hits // columns))
    width = PAD + (thumb + PAD) * (columns + 1) + GAP
    return width, TITLE + rows * (thumb + CAPTION + PAD) + PAD


def tile_origin(slot: int, columns: int = COLUMNS, thumb: int = THUMB) -> tuple[int, int]:
    """Top-left corner of a tile's square: slot 0 is the query, slots 1.. the results."""
    if slot == 0:
        return PAD, TITLE
    row, column = divmod(slot - 1, columns)
    return PAD + (thumb + PAD) * (column + 1) + GAP, TITLE + row * (thumb + CAPTION + PAD)


def _thumbnail(path: str | None, thumb: int, read: Reader) -> Image.Image:
    square = Image.new("RGB", (thumb, thumb), (236, 236, 236))
    try:
        if path is None:
            raise ImageError("no file")
        img = ImageOps.contain(load_rgb(read(path), min_side=thumb), (thumb, thumb))
    except ImageError as exc:
        draw = ImageDraw.Draw(square)
        draw.text(
            (thumb / 2, thumb / 2),
            _fit(str(exc), thumb - 8, 13),
            fill=(90, 90, 90),
            anchor="mm",
            font=_font(13),
        )
        return square
    square.paste(img, ((thumb - img.width) // 2, (thumb - img.height) // 2))
    return square


def _fit(text: str, width: int, size: int) -> str:
    """`text`, cut with an ellipsis in the middle so that it fits in `width` px."""
    font = _font(size)
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while (
        keep > 1 and font.getlength(text[: keep // 2] + "…" + text[-(keep - keep // 2) :]) > width
    ):
        keep -= 1
    return text[: keep // 2] + "…" + text[-(keep - keep // 2) :]


def contact_sheet(
    query: Tile,
    hits: Sequence[Tile],
    title: str,
    read: Reader,
    columns: int = COLUMNS,
    thumb: int = THUMB,
) -> Image.Image:
    columns = max(1, min(columns, len(hits)))
    sheet = Image.new("RGB", sheet_size(len(hits), columns, thumb), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (PAD, TITLE / 2),
        _fit(title, sheet.width - 2 * PAD, 16),
        fill="black",
        anchor="lm",
        font=_font(16),
    )
    tiles = [query, *hits]
    names = short_names([tile.path or "" for tile in tiles])
    for slot, (tile, name) in enumerate(zip(tiles, names)):
        x, y = tile_origin(slot, columns, thumb)
        sheet.paste(_thumbnail(tile.path, thumb, read), (x, y))
        if tile.mark:
            draw.rectangle(
                [x, y, x + thumb - 1, y + thumb - 1], outline=MARKS[tile.mark], width=BORDER
            )
        for i, line in enumerate((tile.caption, name)):
            draw.text(
                (x + thumb / 2, y + thumb + 4 + 18 * i),
                _fit(line, thumb, 14),
                fill="black",
                anchor="mt",
                font=_font(14),
            )
    return sheet


def save(sheet: Image.Image, out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out, format="PNG")
    except OSError as exc:
        raise CbirqError(f"cannot write the contact sheet {out}: {exc.strerror or exc}") from None


def short_names(paths: Sequence[str]) -> list[str]:
    """Each path's shortest tail that no other path here ends with: `a/IMG_1.jpg` and
    `b/IMG_1.jpg` where two folders reuse a name, `IMG_1.jpg` alone otherwise."""
    parts = [Path(p).parts for p in paths]
    names = []
    for mine in parts:
        others = [other for other in parts if other != mine]
        n = 1
        while n < len(mine) and any(other[-n:] == mine[-n:] for other in others):
            n += 1
        names.append(os.path.join(*mine[-n:]) if mine else "")
    return names


def sheet_name(*words: str) -> str:
    """A sheet's file name from its words, safe in any folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(words)) + ".png"


def write_sheets(sheets: Sequence[tuple[Path, Callable[[], Image.Image]]], force: bool) -> None:
    """Draw and save each (file, drawing); none at all when one would replace a file and not
    `force`."""
    refuse_overwrite(force, *(out for out, _ in sheets))
    for out, draw in sheets:
        save(draw(), out)


def hit_tile(rank: int, path: str, score: float, mark: str | None = None) -> Tile:
    return Tile(path, f"#{rank}   {score:.4f}", mark)


def query_sheet(answer: dict, read: Reader, columns: int = COLUMNS) -> Image.Image:
    """The sheet of a `cbirq query --json` answer; library files are read where the index
    says they are."""
    query = Tile(answer["query"], "query", "query")
    hits = [hit_tile(h["rank"], h["path"], h["score"]) for h in answer["results"]]
    title = f"index '{answer['index']}' ({answer['model']}), {answer['metric']}"
    if answer.get("ranking"):
        title += f", {answer['ranking']}"
    return contact_sheet(query, hits, title, read, columns)
