"""`zoo dicom info` and `zoo dicom convert`: PHI-free summaries, PNGs that decode back, .npy in HU."""

from __future__ import annotations

import argparse
import json
import struct
import zlib

import numpy as np
import pytest

from zoo.cli import main
from zoo.data.dicom import read_dicom
from zoo.data.dicom_cli import add_dicom_parser, write_png
from zoo.data.synthetic_dicom import FAKE_PHI, write_ct_series
from zoo.data.windows import window
from zoo.errors import InvalidArgumentError


def read_png(path) -> np.ndarray:
    """A minimal PNG reader for 8-bit grey/RGB, filter 0 (what write_png writes), as an independent check."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour = header[0], header[1], header[2], header[3]
    chans = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * chans)
    assert depth == 8 and (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, chans)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_ct_series(tmp_path_factory.mktemp("cli") / "ct", n_slices=3, size=32)


def test_parser_registers_as_a_zoo_subcommand():
    parser = argparse.ArgumentParser(prog="zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dicom_parser(sub)
    args = parser.parse_args(["dicom", "convert", "in.dcm", "out", "--window", "40,400", "--window", "lung"])
    assert args.command == "dicom" and args.window == [(40.0, 400.0), "lung"] and callable(args.func)


def test_info_on_a_file_and_a_folder_without_phi(series, capsys, tmp_path):
    assert main(["dicom", "info", str(series.paths[0])]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["modality"] == "CT" and info["rows"] == 32 and info["units"] == "HU"
    (series.paths[0].parent / "notes.txt").write_text("x")
    assert main(["dicom", "info", str(series.paths[0].parent)]) == 0
    folder_out = capsys.readouterr().out
    summary = json.loads(folder_out)
    assert summary["files"] == 4 and summary["not_read"] == {"NotDicomError": 1}
    assert [s["files"] for s in summary["series"].values()] == [3]
    (series.paths[0].parent / "notes.txt").unlink()
    for value in FAKE_PHI.values():
        assert value not in out and value not in folder_out


def test_convert_png_is_the_window_of_the_hu(series, tmp_path):
    assert main(["dicom", "convert", str(series.paths[0]), str(tmp_path / "png"), "--window", "bone"]) == 0
    png = read_png(tmp_path / "png" / f"{series.paths[0].stem}.png")
    hu = read_dicom(series.paths[0]).pixels[0]
    np.testing.assert_array_equal(png, np.round(window(hu, "bone") * 255).astype(np.uint8))
    assert main(["dicom", "convert", str(series.paths[0]), str(tmp_path / "rgb"),
                 "--window", "brain", "--window", "lung", "--window", "1000,3000"]) == 0
    assert read_png(tmp_path / "rgb" / f"{series.paths[0].stem}.png").shape == (32, 32, 3)


def test_convert_npy_and_volume(series, tmp_path):
    assert main(["dicom", "convert", str(series.paths[0].parent), str(tmp_path / "n"), "--format", "npy"]) == 0
    for path in series.paths:
        np.testing.assert_array_equal(np.load(tmp_path / "n" / f"{path.stem}.npy"), read_dicom(path).pixels)
    assert main(["dicom", "convert", str(series.paths[0].parent), str(tmp_path / "v"), "--volume"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "v" / "volume.npy"), series.volume)
    meta = json.loads((tmp_path / "v" / "volume.json").read_text())
    assert meta["spacing_zyx_mm"] == pytest.approx([2.5, 0.7, 0.7], abs=1e-3)


def test_convert_multiframe_colour(tmp_path):
    from pydicom.data import get_testdata_file

    assert main(["dicom", "convert", get_testdata_file("SC_rgb_rle_2frame.dcm"), str(tmp_path / "mf")]) == 0
    frames = [read_png(tmp_path / "mf" / f"SC_rgb_rle_2frame_f{k:03d}.png") for k in range(2)]
    np.testing.assert_array_equal(frames[0], read_dicom(get_testdata_file("SC_rgb_rle_2frame.dcm")).pixels[0])


def test_convert_never_writes_over_a_users_files(series, tmp_path, capsys):
    """Issue 12 item 7: a folder with the user's files is refused; --overwrite replaces only a zoo output."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.docx").write_text("mine")
    assert main(["dicom", "convert", str(series.paths[0]), str(out), "--overwrite"]) == 2
    assert "report.docx" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["report.docx"]
    (out / "report.docx").unlink()
    assert main(["dicom", "convert", str(series.paths[0]), str(out)]) == 0
    assert main(["dicom", "convert", str(series.paths[0]), str(out)]) == 2  # exists, no --overwrite
    assert main(["dicom", "convert", str(series.paths[0]), str(out), "--window", "bone", "--overwrite"]) == 0
    assert (out / f"{series.paths[0].stem}.png").exists()


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("not dicom")
    assert main(["dicom", "convert", str(tmp_path / "x.txt"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo dicom: ") and "x.txt is not a DICOM file" in err
    with pytest.raises(InvalidArgumentError):
        write_png(tmp_path / "bad.png", np.zeros((4, 4), np.float32))


def test_demo_step(tmp_path):
    from zoo.demo.dicom import demo_step

    result = demo_step(tmp_path)
    assert result["files"] == 11 and result["volume_shape"] == [11, 64, 64] and result["gaps"] == [(5, 1)]
    assert result["batch_shape"] == [8, 64, 64, 1] and 0 <= result["batch_range"][0] <= result["batch_range"][1] <= 255
    assert result["hu_range"] == [-1000.0, 700.0]
