"""Labels for `cbirq eval`: the parent folder's name, or a CSV of `path,label` rows."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from cbirq.errors import CbirqError


def read_csv(file: Path) -> dict[str, str]:
    """Absolute path -> label; relative paths are relative to the CSV's folder. A first row
    `path,label` is a header."""
    try:
        with open(file, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except OSError as exc:
        raise CbirqError(f"cannot read labels {file}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CbirqError(f"labels {file} is not a UTF-8 CSV file: {exc}") from None
    if rows and [c.strip().lower() for c in rows[0]] == ["path", "label"]:
        rows = rows[1:]
    bad = next((n for n, row in enumerate(rows, start=1) if len(row) != 2), None)
    if bad is not None:
        raise CbirqError(f"labels {file}: row {bad} is not `path,label`")
    folder = file.resolve().parent
    return {os.path.abspath(folder / path.strip()): label.strip() for path, label in rows}


def labels_for(paths: Sequence[str], table: dict[str, str] | None) -> list[str]:
    """Each path's label: from `table` when given, else the name of its folder."""
    if table is None:
        return [Path(p).parent.name for p in paths]
    missing = [p for p in paths if p not in table]
    if missing:
        raise CbirqError(
            f"images without a label in the CSV: {len(missing)}, for example {missing[0]}"
        )
    return [table[p] for p in paths]
