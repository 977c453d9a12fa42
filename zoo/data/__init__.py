"""Data: DICOM files and series, NIfTI, masks (DICOM-SEG, RTSTRUCT) on a shared voxel geometry,
tf.data pipelines, windows, synthetic phantoms."""

from zoo._lazy import submodule_access

__getattr__, __dir__ = submodule_access(__name__)  # zoo.data.<submodule> imports on use
