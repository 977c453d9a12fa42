"""``zoo predict`` with a segmentation model (issue 16 item 4): a mask per DICOM series and NIfTI
volume, written as NIfTI and DICOM-SEG on the source grid, volumes in mL, no identifiers outside
the DICOM-SEG, skips reported, nothing overwritten without --overwrite.

The models are 1x1 convolutions followed by a softmax, so each voxel's class is a known function
of its value: through the CT window (abdomen soft tissue, [0, 255]) class 1 is HU in (-60, 140)
and class 2 HU above 140. Every expected mask is that threshold of the synthetic volume's own HU
values (not what the reader decoded); largest components come from scipy.ndimage.label; the
grids come from nibabel and the synthetic series' known spacing.
"""

from __future__ import annotations

import csv
import gzip
import json

import keras
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import zoo
from zoo.cli import main
from zoo.data.synthetic_dicom import FAKE_PHI, phantom_volume, write_ct_series
from zoo.errors import InvalidArgumentError
from zoo.infer.cli import predict_folder
from zoo.infer.predict_segmentation import SegmentOptions

UID = "1.2.826.0.1.3680043.8.498.16"
SPACING = (2.5, 0.7, 0.7)  # write_ct_series: slice spacing, pixel spacing (z, y, x) mm
AFFINE = np.array([[-0.8, 0, 0, 20.0], [0, 0.9, 0, -30.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])


def _expected(hu: np.ndarray) -> np.ndarray:
    return ((hu > -60).astype(np.uint8) + (hu > 140)).astype(np.uint8)


def _threshold_model(shape) -> keras.Model:
    """Softmax over logits (0, s(x - 64), s(2x - 255)) of the windowed value x in [0, 255]."""
    inp = keras.Input(shape)
    conv_class = keras.layers.Conv3D if len(shape) == 4 else keras.layers.Conv2D
    conv = conv_class(3, 1, name="head")
    model = keras.Model(inp, keras.layers.Softmax()(conv(inp)))
    s = 0.2
    kernel = np.array([0.0, s, 2 * s], np.float32).reshape((1,) * (len(shape) - 1) + (1, 3))
    conv.set_weights([kernel, np.array([0.0, -64 * s, -255 * s], np.float32)])
    return model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "seg.keras"
    _threshold_model((None, None, None, 1)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """in/ct: an 8-slice CT series; in/nii/Doe_Jane.nii.gz: a HU volume with its own affine."""
    root = tmp_path_factory.mktemp("seg") / "in"
    series = write_ct_series(root / "ct", n_slices=8, size=32, series_uid=UID)
    hu = phantom_volume(6, 24)
    (root / "nii").mkdir()
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0).astype(np.int16), AFFINE),
             root / "nii" / "Doe_Jane.nii.gz")
    return root, series.volume, hu


def _rows(out) -> list[dict]:
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


def _skipped(out) -> dict:
    with open(out / "skipped.csv") as f:
        return {r["id"]: r["reason"] for r in csv.DictReader(f)}


def test_masks_read_back_on_the_source_grid_with_volumes_in_ml(model_file, data, tmp_path):
    root, ct_hu, nii_hu = data
    summary = predict_folder(model_file, root, tmp_path / "out",
                             segmentation=SegmentOptions(nifti_hu=True))
    assert (summary["task"], summary["predicted"], summary["skipped"]) == ("segmentation", 2, 0)
    rows = {r["id"]: r for r in _rows(tmp_path / "out")}
    assert set(rows) == {UID, "nii/Doe_Jane.nii.gz"}
    ct, nii = rows[UID], rows["nii/Doe_Jane.nii.gz"]
    assert (ct["nifti"], ct["seg"]) == (f"masks/{UID}.nii.gz", f"masks/{UID}.seg.dcm")
    assert (nii["nifti"], nii["seg"]) == ("masks/nii/Doe_Jane.nii.gz", "")  # no DICOM-SEG
    expected = _expected(ct_hu)
    assert len(np.unique(expected)) == 3
    got = zoo.read_nifti(tmp_path / "out" / ct["nifti"])
    np.testing.assert_array_equal(got.array, expected)
    series = zoo.load_series(root / "ct")
    np.testing.assert_allclose(got.spacing, SPACING, atol=1e-5)
    np.testing.assert_allclose(got.origin, series.origin, atol=1e-4)
    np.testing.assert_allclose(got.direction, series.direction, atol=1e-5)
    seg = zoo.read_mask(tmp_path / "out" / ct["seg"], reference=series)
    np.testing.assert_array_equal(seg.array, expected)
    assert seg.classes == ("class_1", "class_2")
    for k in (1, 2):  # mL = voxels * voxel volume / 1000
        count = int((expected == k).sum())
        assert int(ct[f"voxels_class_{k}"]) == count
        assert float(ct[f"ml_class_{k}"]) == pytest.approx(count * np.prod(SPACING) / 1000,
                                                           rel=1e-7)
    mask = nib.load(tmp_path / "out" / nii["nifti"])  # nibabel: the source's affine and voxels
    np.testing.assert_allclose(mask.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask.dataobj).transpose(2, 1, 0), _expected(nii_hu))
    count = int((_expected(nii_hu) == 2).sum())
    assert float(nii["ml_class_2"]) == pytest.approx(count * 0.8 * 0.9 * 3.0 / 1000, rel=1e-6)


def _text_outside_seg(out, mapping) -> bytes:
    """Every byte under ``out`` but the DICOM-SEG files, NIfTI decompressed."""
    blob = b""
    for p in sorted(out.rglob("*")):
        if p.is_file() and not p.name.endswith(".dcm"):
            blob += gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
    assert mapping.is_file() and not mapping.is_relative_to(out)
    return blob


def test_pseudonymise_keeps_identifiers_in_the_seg_only(model_file, data, tmp_path):
    root, *_ = data
    out, mapping = tmp_path / "out", tmp_path / "out.pseudonyms.csv"
    predict_folder(model_file, root, out, pseudonymise=True)
    rows = _rows(out)
    assert all(r["id"].startswith("anon-") for r in rows)
    ct = next(r for r in rows if r["seg"])
    assert ct["seg"] == f"masks/{ct['id']}.seg.dcm"
    with open(mapping) as f:
        assert {(r["pseudonym"], r["original"]) for r in csv.DictReader(f)} >= {(ct["id"], UID)}
    blob = _text_outside_seg(out, mapping)
    for secret in (*FAKE_PHI.values(), UID, "Doe_Jane"):
        assert secret.encode() not in blob, secret
    seg_bytes = (out / ct["seg"]).read_bytes()  # DICOM requires the patient module in the SEG
    assert FAKE_PHI["PatientID"].encode() in seg_bytes and UID.encode() in seg_bytes

    predict_folder(model_file, root, tmp_path / "nifti", pseudonymise=True,
                   mapping=tmp_path / "m2.csv", segmentation=SegmentOptions(formats="nifti"))
    assert not list((tmp_path / "nifti").rglob("*.dcm"))
    blob = _text_outside_seg(tmp_path / "nifti", tmp_path / "m2.csv")
    assert not [s for s in (*FAKE_PHI.values(), UID, "Doe_Jane") if s.encode() in blob]


def test_cli_skips_unreadable_series_and_never_overwrites(model_file, data, tmp_path, capsys):
    """--roi smaller than the volume, --tta and --largest-component through the CLI; a series of
    truncated files, one with a gap (no regular grid for NIfTI), a .npy and a text file are
    skipped with reasons; a second run needs --overwrite."""
    root, ct_hu, _ = data
    src = tmp_path / "in"
    write_ct_series(src / "ct", n_slices=8, size=32, series_uid=UID)
    broken = write_ct_series(src / "broken", n_slices=2, size=16, seed=3)
    for path in broken.paths:
        path.write_bytes(path.read_bytes()[:400])
    write_ct_series(src / "gap", n_slices=8, size=16, missing=(3,), seed=4)
    np.save(src / "vol.npy", np.zeros((4, 8, 8), np.float32))
    (src / "notes.txt").write_text("not an image")
    args = ["predict", model_file, str(src), "--out", str(tmp_path / "out"), "--roi", "4", "16",
            "16", "--overlap", "0.25", "--tta", "--largest-component"]
    assert main(args) == 0
    assert "1 series/volume(s) predicted" in capsys.readouterr().out
    expected = _expected(ct_hu)
    components, _ = ndimage.label(expected == 2, np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())[1:]
    assert len(sizes) == 2  # the bone disk and the slice-index marker
    expected[(components > 0) & (components != np.argmax(sizes) + 1)] = 0
    (row,) = _rows(tmp_path / "out")
    np.testing.assert_array_equal(zoo.read_nifti(tmp_path / "out" / row["nifti"]).array, expected)
    skipped = _skipped(tmp_path / "out")
    assert set(skipped) == {"broken/slice_0000.dcm", "broken/slice_0001.dcm", "vol.npy",
                            "notes.txt", *(f"gap/slice_{i:04d}.dcm" for i in range(7))}
    assert "no voxel geometry" in skipped["vol.npy"]
    assert "--format seg" in skipped["gap/slice_0000.dcm"]
    assert str(tmp_path) not in "".join(skipped.values())
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_fixed_windows_and_2d_models(data, tmp_path):
    """A 3D model fixing a 16^3 window pads the 8-slice series and crops back; a 2D model runs
    slice by slice; a --roi the model cannot take is refused before anything is written."""
    root, ct_hu, _ = data
    expected = _expected(ct_hu)
    fixed = _threshold_model((16, 16, 16, 1))
    options = SegmentOptions(formats="nifti", tta_flips=True)
    for name, model in (("fixed", fixed), ("2d", _threshold_model((None, None, 1)))):
        summary = predict_folder(model, root / "ct", tmp_path / name, segmentation=options)
        (row,) = _rows(tmp_path / name)
        assert summary["window"] == ([16, 16, 16] if name == "fixed" else [256, 256])
        np.testing.assert_array_equal(zoo.read_nifti(tmp_path / name / row["nifti"]).array,
                                      expected)
    with pytest.raises(InvalidArgumentError, match="takes windows of"):
        predict_folder(fixed, root / "ct", tmp_path / "bad", segmentation=SegmentOptions(roi=8))
    assert not (tmp_path / "bad").exists()


def test_classifiers_refuse_segmentation_options_and_exports_are_refused(tmp_path):
    inp = keras.Input((8, 8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling3D()(keras.layers.Conv3D(2, 1)(inp))
    classifier = keras.Model(inp, keras.layers.Softmax()(pooled))
    (tmp_path / "in").mkdir()
    with pytest.raises(InvalidArgumentError, match="tta_flips.*classifier"):
        predict_folder(classifier, tmp_path / "in", tmp_path / "out",
                       segmentation=SegmentOptions(tta_flips=True))
    with pytest.raises(InvalidArgumentError, match="comma-separated"):
        SegmentOptions(formats="nifti,rtstruct")
    (tmp_path / "m.onnx").write_bytes(b"")  # an exported segmenter: refused from its sidecar
    (tmp_path / "m.onnx.json").write_text(json.dumps({
        "inputs": {"image": {"shape": [None, None, None, None, 1]}},
        "outputs": {"probabilities": {"shape": [None, None, None, None, 3]}}}))
    with pytest.raises(InvalidArgumentError, match="exported segmentation model"):
        predict_folder(str(tmp_path / "m.onnx"), tmp_path / "in", tmp_path / "out")
