"""Corpus + mutation test (issue 12): over real and mutated DICOM files carrying a planted fake
patient name and ID, every result is finite, every skipped file is in a report, and no output
(messages, warnings, CLI stdout/stderr, reports, labels-CSV errors) contains the name or ID.

The mutation set is seeded: pydicom test files of the main transfer syntaxes and a synthetic
CT series, with the fake identifiers planted in the patient tags, then (a) the identifiers
written into the tags the reader does read (Modality, UIDs, spacing, counts, ...), and (b)
byte-level faults (truncation, flipped bytes, a patient element's length overwritten, the
name's bytes spliced elsewhere). The unmutated pydicom corpus is covered by
test_dicom_corpus.py (every file decodes finite or raises a clear ZooError).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from zoo.data.dicom import read_dicom, read_metadata
from zoo.data.synthetic_dicom import FAKE_PHI, write_ct_series
from zoo.errors import ZooError

NAME, PID = FAKE_PHI["PatientName"], FAKE_PHI["PatientID"]
SECRETS = (NAME, PID, NAME.replace("^", " "), "Jane", PID[4:])
SEEDS = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb.dcm",
    "SC_rgb_rle_2frame.dcm",
    "examples_palette.dcm",
    "emri_small.dcm",
    "rtdose_1frame.dcm",
    "JPEG2000.dcm",
    "US1_J2KR.dcm",
]
TAG_MUTATIONS = {  # keyword -> value written (the reader reads all of these)
    "Modality": NAME,
    "PhotometricInterpretation": NAME,
    "RescaleType": PID,
    "SOPClassUID": PID,
    "SeriesInstanceUID": PID,
    "InstanceNumber": PID,
    "WindowCenter": NAME,
    "PixelSpacing": [PID, NAME],
    "NumberOfFrames": PID,
    "RescaleSlope": NAME,
    "ImageOrientationPatient": [NAME] * 6,
    "ImagePositionPatient": [PID, PID, PID],
    "SliceThickness": NAME,
}


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def plant(ds) -> None:
    for key, value in FAKE_PHI.items():
        setattr(ds, key, value)


def write_raw(ds, keyword: str, value) -> None:
    """Store ``value``'s text in ``keyword`` as raw bytes (pydicom refuses a name in a DS)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    data = ("\\".join(value) if isinstance(value, list) else value).encode()
    data += b" " * (len(data) % 2)
    implicit, little = ds.original_encoding
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, implicit, little)


def byte_mutations(data: bytes, rng) -> list[bytes]:
    name_at = data.find(NAME.encode())
    out = [
        data[: int(rng.integers(132, len(data)))],  # truncated anywhere
        data[: len(data) - int(rng.integers(1, 200))],
    ]  # truncated near the end (in the pixel data)
    flipped = bytearray(data)
    for at in rng.integers(132, len(data), 6):
        flipped[at] ^= int(rng.integers(1, 256))
    out.append(bytes(flipped))
    if name_at > 0:  # the patient name element's length overwritten (explicit or implicit VR)
        for length in (0xFFFF, 3):
            for back in (2, 4):
                out.append(
                    data[: name_at - back]
                    + length.to_bytes(2, "little")
                    + data[name_at - back + 2 :]
                )
        chunk = data[name_at - 8 : name_at + len(NAME) + 40]
        at = int(rng.integers(132, len(data) - len(chunk)))
        out.append(data[:at] + chunk + data[at + len(chunk) :])  # the name spliced somewhere else
    return out


@pytest.fixture(scope="module")
def mutated(tmp_path_factory):
    """A folder of ~180 planted and mutated files, and a planted series with mutated slices."""
    root = tmp_path_factory.mktemp("phi")
    folder = root / "files"
    folder.mkdir()
    rng = np.random.default_rng(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in SEEDS:
            ds = pydicom.dcmread(get_testdata_file(seed))
            plant(ds)
            planted = folder / f"{Path(seed).stem}.dcm"
            ds.save_as(planted, enforce_file_format=False)
            for keyword in rng.choice(sorted(TAG_MUTATIONS), 6, replace=False):
                ds = pydicom.dcmread(planted)
                write_raw(ds, keyword, TAG_MUTATIONS[keyword])
                ds.save_as(
                    folder / f"{Path(seed).stem}_tag_{keyword}.dcm", enforce_file_format=False
                )
            for k, data in enumerate(byte_mutations(planted.read_bytes(), rng)):
                (folder / f"{Path(seed).stem}_bytes_{k}.dcm").write_bytes(data)
        series = write_ct_series(root / "series", n_slices=8, size=16, seed=3)
        for path, keyword in zip(
            series.paths[:3], ("InstanceNumber", "PixelSpacing", "ImageOrientationPatient")
        ):
            ds = pydicom.dcmread(path)
            write_raw(ds, keyword, TAG_MUTATIONS[keyword])
            ds.save_as(path)
        last = series.paths[-1]
        last.write_bytes(last.read_bytes()[:-50])
    return folder, root / "series"


def test_every_file_reads_finite_or_fails_clearly_without_phi(mutated):
    folder, _ = mutated
    files = sorted(folder.iterdir())
    assert len(files) >= 150
    outcomes = {"decoded": 0, "error": 0}
    for path in files:
        for reader in (read_metadata, read_dicom):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = reader(path)
                except ZooError as e:
                    assert not leaks(str(e)), (path.name, str(e))
                    outcomes["error"] += 1
                else:
                    meta = result if reader is read_metadata else result.meta
                    assert not leaks(repr(meta.to_dict())), (path.name, meta)
                    if reader is read_dicom:
                        assert np.isfinite(result.pixels).all(), path.name
                        outcomes["decoded"] += 1
            for w in caught:
                assert not leaks(str(w.message)), (path.name, str(w.message))
    assert outcomes["decoded"] >= 30 and outcomes["error"] >= 50, outcomes  # the set exercises both


def test_cli_output_has_no_phi_and_lists_every_file_not_converted(mutated, tmp_path):
    folder, _ = mutated
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    files = sorted(folder.iterdir())
    info = subprocess.run(
        [sys.executable, "-m", "zoo", "dicom", "info", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    convert = subprocess.run(
        [sys.executable, "-m", "zoo", "dicom", "convert", str(folder), str(tmp_path / "png")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    for run in (info, convert):
        assert not leaks(run.stdout + run.stderr), leaks(run.stdout + run.stderr)
        assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert info.returncode == 0 and convert.returncode == 1  # 1: some images could not be converted
    import json

    summary = json.loads(info.stdout)
    read = sum(s["files"] for s in summary["series"].values())
    assert read + len(summary["not_read_files"]) == len(files)
    written = {p.name.split(".")[0].rsplit("_f", 1)[0] for p in (tmp_path / "png").iterdir()}
    listed = {line.strip().split(":")[0] for line in convert.stdout.splitlines()[1:]}
    for path in files:
        assert path.stem in written or str(path) in listed, path.name


def test_series_and_dataset_report_every_skipped_file_without_phi(mutated, tmp_path):
    from zoo.data.pipeline import dicom_dataset
    from zoo.data.series import load_series

    _, series = mutated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = load_series(series)
    assert np.isfinite(volume.array).all()
    report = volume.report
    assert report.files == report.slices + len(report.skipped) + len(report.duplicates) == 8
    assert (
        len(report.skipped) == 4
    )  # bad InstanceNumber, spacing and orientation; the truncated slice
    texts = [str(w.message) for w in caught] + [why for _, why in report.skipped] + report.problems
    assert not any(leaks(t) for t in texts), [t for t in texts if leaks(t)]

    folder, _ = mutated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dicom_dataset(
            folder,
            input_shape=(32, 32, 1),
            batch_size=64,
            shuffle=False,
            cache_dir=tmp_path,
            workers=1,
            on_error="skip",
        )
        x = np.concatenate([b.numpy() for b in ds])
    info = ds.dicom
    assert np.isfinite(x).all() and x.shape[0] == len(info)
    assert len(info.items) + len(info.report) == len(list(folder.iterdir()))
    assert not leaks(str(info.report)) and not any(leaks(str(w.message)) for w in caught)


def test_labels_csv_errors_never_print_the_patient_column(tmp_path):
    from zoo.data.labels import read_labels

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "a.dcm")
    for text in (
        f"path,label,patient\na.dcm,0,{PID}\nb.dcm,1,{NAME}\n",
        f"path,label,patient\na.dcm,,{PID}\n",
        f"path,patient\na.dcm,{PID}\n",
    ):
        (tmp_path / "labels.csv").write_text(text)
        with pytest.raises(ZooError) as info:
            read_labels(tmp_path / "labels.csv")
        assert not leaks(str(info.value)), str(info.value)
