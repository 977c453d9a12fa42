"""The one labels CSV format (path,label[,patient]) and its one reader, used by the DICOM
pipeline and by ``zoo finetune --data`` alike (issue 11, item 6)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.labels import read_labels
from zoo.errors import DataError, LabelsError
from zoo.train.folder_data import load_labelled_folder


def _folder(tmp_path, csv_text: str, files=("a.npy", "b.npy", "c.npy")):
    for k, name in enumerate(files):
        np.save(tmp_path / name, np.full((4, 4), k, np.float32))
    (tmp_path / "labels.csv").write_text(csv_text)
    return tmp_path / "labels.csv"


def test_paths_are_relative_to_the_csv_and_names_are_numbered_in_sorted_order(
    tmp_path, monkeypatch
):
    table = _folder(
        tmp_path, "path,label,patient\na.npy,normal,P1\nb.npy,lesion,P2\nc.npy,normal,P1\n"
    )
    monkeypatch.chdir(tmp_path.parent)  # the working directory does not matter
    labels = read_labels(table)
    assert labels.paths == tuple(tmp_path / n for n in ("a.npy", "b.npy", "c.npy"))
    assert labels.classes == ("lesion", "normal") and labels.labels.tolist() == [1, 0, 1]
    assert labels.patients == ("P1", "P2", "P1") and labels.lines == (2, 3, 4)
    ints = read_labels(_folder(tmp_path, "path,label\na.npy,2\nb.npy,0\n"))
    assert (
        ints.labels.dtype == np.int32 and ints.classes == ("0", "1", "2") and ints.patients is None
    )
    targets = read_labels(_folder(tmp_path, "path,label\na.npy,0.5\nb.npy,2\n"))
    assert targets.classes is None and targets.labels.dtype == np.float32


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("file_name,label\na.npy,0\n", 1, "no 'path' column"),
        ("path,y\na.npy,0\n", 1, "no 'label' column"),
        (
            "path,label\na.npy,0\nmissing.npy,1\n",
            3,
            "missing.npy: listed in the labels CSV but not found",
        ),
        ("path,label\na.npy,0\nb.npy,\n", 3, "the label is empty"),
        ("path,label\na.npy,0\nb.npy,-1\n", 3, "integer >= 0"),
        ("path,label\na.npy,nan\nb.npy,1\n", 2, "not a finite number"),
    ],
)
def test_every_problem_names_the_file_the_line_and_the_fix(tmp_path, text, line, match):
    table = _folder(tmp_path, text)
    with pytest.raises(LabelsError, match=match) as info:
        read_labels(table)
    assert f"labels CSV {table}, line {line}:" in str(info.value)
    assert isinstance(info.value, DataError)


def test_unknown_label_against_the_training_classes(tmp_path):
    table = _folder(tmp_path, "path,label\na.npy,normal\nb.npy,tumour\n")
    with pytest.raises(
        LabelsError,
        match=r"line 3: unknown label 'tumour'; the known classes are \['lesion', 'normal'\]",
    ):
        read_labels(table, classes=["lesion", "normal"])
    assert read_labels(table, classes=["normal", "tumour"]).labels.tolist() == [0, 1]


def test_missing_csv_and_empty_csv(tmp_path):
    with pytest.raises(
        LabelsError, match="not found; give the path of a CSV with the header path,label"
    ):
        read_labels(tmp_path / "nope.csv")
    with pytest.raises(LabelsError, match="no data rows"):
        read_labels(_folder(tmp_path, "path,label\n"))


def test_old_file_header_still_reads_with_a_future_warning(tmp_path):
    """Data folders made for `zoo finetune --data` before the one format keep working, loudly."""
    table = _folder(tmp_path, "file,label\na.npy,0\nb.npy,1\n")
    with pytest.warns(FutureWarning, match="'file' is deprecated; rename it to 'path'"):
        labels = read_labels(table)
    assert labels.labels.tolist() == [0, 1]


def test_finetune_folder_reads_the_same_format(tmp_path):
    _folder(tmp_path, "path,label,patient\na.npy,lesion,P1\nb.npy,normal,P2\n")
    x, y, names = load_labelled_folder(tmp_path)
    assert x.shape == (2, 4, 4, 1) and y.tolist() == [0, 1] and names == ["lesion", "normal"]
    np.testing.assert_array_equal(x[1, ..., 0], np.load(tmp_path / "b.npy"))
    _, y, _ = load_labelled_folder(tmp_path, classes=["normal", "lesion"])
    assert y.tolist() == [1, 0]
    (tmp_path / "labels.csv").write_text("path,label\na.npy,0.5\n")
    with pytest.raises(DataError, match="fractional"):
        load_labelled_folder(tmp_path)
