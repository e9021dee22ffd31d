import os

import pytest

from cbirq.errors import CbirqError
from cbirq.evaluation.labels import labels_for, read_csv


def test_folder_names_are_the_default_labels():
    assert labels_for(["/lib/cat/1.jpg", "/lib/dog/2.jpg"], None) == ["cat", "dog"]


def test_csv_with_header_and_relative_paths(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\nimgs/a.jpg, cat\n/abs/b.jpg,dog\n\n")
    table = read_csv(tmp_path / "labels.csv")
    assert table == {os.path.join(str(tmp_path), "imgs", "a.jpg"): "cat", "/abs/b.jpg": "dog"}
    assert labels_for(["/abs/b.jpg"], table) == ["dog"]


def test_missing_labels_and_bad_rows_are_user_errors(tmp_path):
    (tmp_path / "l.csv").write_text("a.jpg,cat\nb.jpg\n")
    with pytest.raises(CbirqError, match="row 2"):
        read_csv(tmp_path / "l.csv")
    with pytest.raises(CbirqError, match="without a label in the CSV: 1"):
        labels_for(["/x.jpg"], {"/y.jpg": "cat"})
    with pytest.raises(CbirqError, match="cannot read labels"):
        read_csv(tmp_path / "missing.csv")
