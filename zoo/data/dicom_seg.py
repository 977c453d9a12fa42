"""DICOM-SEG in and out with highdicom: segments onto a reference grid, predictions back out.

Reading: highdicom's ``segread`` parses the file and ``get_volume`` stacks its frames by their
plane positions into a grid with a voxel-to-patient affine; ``zoo.data.geometry`` then places
that grid onto the reference volume exactly (frames are matched by position: a SEG usually holds
only its non-empty frames, so it may cover part of the series). A SEG whose frames do not form a
regular grid falls back to matching frames to the reference slices by SOPInstanceUID.
Fractional segments are binarised at 0.5.

Writing: ``write_dicom_seg`` builds a BINARY segmentation whose frames reference the source
slices (SOPInstanceUID) and whose Common Instance Reference names the source series.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zoo._version import zoo_version
from zoo.data.geometry import (
    Geometry,
    exact_index_map,
    grid_differences,
    place_exact,
    resample_nearest,
)
from zoo.data.references import load_reference, source_headers
from zoo.errors import DataError, InvalidArgumentError
from zoo.outputs import staged

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
TYPE2_DEFAULTS = {"PatientSex": "", "StudyID": "", "StudyTime": "", "StudyDate": "",
                  "AccessionNumber": "", "PatientBirthDate": "", "PatientName": "",
                  "PatientID": "", "ReferringPhysicianName": ""}
"""Type 2 attributes highdicom copies from the source; absent in some exports, filled empty on an
in-memory copy (the source files are never changed)."""


def _where(path) -> str:
    return f"DICOM-SEG file {os.fspath(path)}"


def read_seg(path):
    """The parsed highdicom Segmentation, or DataError naming the file."""
    import highdicom as hd

    try:
        return hd.seg.segread(path)
    except Exception as e:  # highdicom raises bare ValueError/AttributeError/KeyError on bad input
        raise DataError(f"{_where(path)} cannot be read as a DICOM Segmentation "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "check that it is a SEG object and not truncated.") from None


def referenced_series(seg) -> set[str]:
    """SeriesInstanceUIDs the SEG says it was derived from (Common Instance Reference)."""
    found = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])
             if "SeriesInstanceUID" in item}
    for item in seg.get("StudiesContainingOtherReferencedInstancesSequence", []):
        found |= {str(s.SeriesInstanceUID) for s in item.get("ReferencedSeriesSequence", [])}
    return found


def seg_segments(seg, path, reference, *, resample: bool, sop_uids=None):
    """(segment numbers, labels, binary (Z, Y, X, S) uint8 on the reference grid).

    ``sop_uids``: a callable giving the reference slices' SOPInstanceUIDs (or None), called only
    when the frames do not form a regular volume.
    """
    numbers = list(seg.segment_numbers)
    labels = [str(seg.get_segment_description(n).SegmentLabel) for n in numbers]
    try:
        volume = seg.get_volume(combine_segments=False, segment_numbers=numbers)
    except Exception:  # noqa: BLE001 - highdicom fails in many ways on frames without a volume
        volume = None
    if volume is None:
        sop_uids = sop_uids() if sop_uids is not None else None
        if sop_uids is None:
            raise DataError(f"{_where(path)}: its frames do not form a regular volume and the "
                            "reference has no DICOM slices to match them to; give the Volume "
                            "from zoo.load_series of the series it segments.")
        stacked = _by_source_instance(seg, path, sop_uids, numbers)
        return numbers, labels, stacked
    array = _binary(np.asarray(volume.array), seg)
    if array.ndim == 3:
        array = array[..., None]
    grid = Geometry.from_index_to_lps(volume.affine, array.shape[:3])
    return numbers, labels, _onto(array, grid, reference, path, resample)


def _binary(array: np.ndarray, seg) -> np.ndarray:
    if str(seg.SegmentationType) == "FRACTIONAL" or np.issubdtype(array.dtype, np.floating):
        return (array >= 0.5).astype(np.uint8)
    return (array > 0).astype(np.uint8)


def _onto(array, grid, reference, path, resample: bool) -> np.ndarray:
    mapping = exact_index_map(grid, reference)
    if mapping is not None:
        placed, outside = place_exact(array, mapping, reference.shape)
        if outside:
            raise DataError(f"{_where(path)}: {outside} segmented voxels lie outside the "
                            "reference volume; it segments a larger or another volume. Give the "
                            "series it was made on.")
        return placed
    if resample:
        return resample_nearest(array, grid, reference)
    raise DataError(f"{_where(path)}: its frames do not lie on the reference volume's voxel grid ("
                    + "; ".join(grid_differences(grid, reference)) + "). Pass resample=True to "
                    "map it by nearest neighbour, or give the series it was made on.")


def _by_source_instance(seg, path, sop_uids, numbers) -> np.ndarray:
    try:
        pixels = seg.get_pixels_by_source_instance(
            list(sop_uids), segment_numbers=numbers, assert_missing_frames_are_empty=True)
    except Exception as e:  # noqa: BLE001 - as above: any failure means "cannot match"
        raise DataError(f"{_where(path)}: its frames cannot be matched to the reference slices "
                        f"by SOPInstanceUID ({str(e).splitlines()[0]}); give the series it "
                        "segments.") from None
    return _binary(np.asarray(pixels), seg)


def _segment_arrays(mask, segment_labels):
    """(pixel array for highdicom, labels): a label map (Z, Y, X) or stacked (Z, Y, X, K)."""
    array = np.asarray(getattr(mask, "array", mask))
    labels = segment_labels if segment_labels is not None else getattr(mask, "classes", None)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim not in (3, 4) or not (np.issubdtype(array.dtype, np.integer)):
        raise InvalidArgumentError(
            f"mask of shape {array.shape} and dtype {array.dtype}: give an integer label map "
            "(Z, Y, X) or binary channels (Z, Y, X, K); threshold or argmax probabilities first.")
    if array.size and array.min() < 0:
        raise InvalidArgumentError("mask has negative labels; labels are 0 (background) .. K.")
    count = array.shape[3] if array.ndim == 4 else int(array.max(initial=0))
    if array.ndim == 4 and array.size and array.max() > 1:
        raise InvalidArgumentError("a (Z, Y, X, K) mask holds one binary channel per segment; "
                                   f"found the value {int(array.max())}.")
    labels = list(labels) if labels is not None else [
        f"segment {i}" for i in range(1, max(count, 1) + 1)]
    if len(labels) < max(count, 1):
        raise InvalidArgumentError(
            f"segment_labels names {len(labels)} segment(s) but the mask holds label "
            f"{count}; name every segment 1 .. {count}.")
    return array.astype(np.uint8 if len(labels) < 256 else np.uint16), labels


def _descriptions(labels, algorithm: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm, version=zoo_version(), family=codes.cid7162.ArtificialIntelligence)
    return [hd.seg.SegmentDescription(
        segment_number=i, segment_label=str(label)[:64],
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_id) for i, label in enumerate(labels, start=1)]


def _sources_for_highdicom(volume, headers, array):
    """(source datasets, pixel array in their frame order): single-frame slices as sorted, or
    the frames of one multi-frame file in file order."""
    import copy

    unique = list({id(h): h for h in headers}.values())
    sources = []
    for ds in unique:
        ds = copy.copy(ds)
        for key, value in TYPE2_DEFAULTS.items():
            if key not in ds:
                setattr(ds, key, value)
        sources.append(ds)
    if len(unique) == len(headers):
        return sources, array
    frames = [frame for _, frame in volume.sources]
    total = int(unique[0].get("NumberOfFrames", 1))
    if len(unique) != 1 or sorted(frames) != list(range(total)):
        raise DataError("the reference mixes multi-frame files or leaves out frames of one; a "
                        "DICOM-SEG is written for a series of single-frame files or one whole "
                        "multi-frame file.")
    ordered = np.empty_like(array)
    ordered[frames] = array
    return sources, ordered


def write_dicom_seg(mask, reference, path, *, segment_labels=None, algorithm: str = "medzoo",
                    overwrite: bool = False) -> Path:
    """Write a label map as a BINARY DICOM-SEG that references the source series (highdicom).

    By the DICOM standard a SEG carries the patient and study modules of its source images
    (name, ID, birth date, study UID), so the SEG file holds them, as any viewer expects;
    nothing from the source is written anywhere else (errors and the output manifest name
    only paths and sizes).

    Args:
        mask: an integer label map ``(Z, Y, X)`` (0 = background, k = segment k), binary
            channels ``(Z, Y, X, K)`` (segments may overlap), or a ``Mask`` from ``read_mask``;
            on the reference series' own grid.
        reference: the Volume from ``zoo.load_series`` (not resampled), or the series' folder or
            files.
        path: the ``.dcm`` file to write.
        segment_labels: the name of segment 1 .. K (default the Mask's classes, else
            "segment k").
        algorithm: the algorithm name recorded in each segment (AUTOMATIC segmentation).
        overwrite: replace an earlier zoo output at ``path``.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: a mask that is not an integer label map or binary channels, or
            labels without a name. DataError: a mask not on the series' slices (e.g. predicted
            on a resampled volume). OutputError: ``path`` exists and ``overwrite`` is False.
    """
    import highdicom as hd

    volume = load_reference(reference)
    array, labels = _segment_arrays(mask, segment_labels)
    headers = source_headers(volume, array.shape)
    sources, pixels = _sources_for_highdicom(volume, headers, array)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=_descriptions(labels, algorithm),
            series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="medzoo", manufacturer_model_name=algorithm[:64],
            software_versions=zoo_version(), device_serial_number="0",
            omit_empty_frames=bool(pixels.any()), series_description="medzoo segmentation")
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"highdicom refused to build the segmentation for {path} ("
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check "
                        "the mask and the reference series.") from None
    with staged([path], writer="zoo.data.dicom_seg.write_dicom_seg",
                overwrite=overwrite) as (tmp,):
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)
