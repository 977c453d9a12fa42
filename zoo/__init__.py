"""medzoo: a Keras 3 model zoo for medical image analysis.

``import zoo`` is light: listing models and reading weight cards never imports
TensorFlow; ``zoo.load`` does, on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from zoo import export  # the module, callable: zoo.export(model, path) exports (zoo/export.py)
from zoo._lazy import submodule_access
from zoo.errors import ZooError
from zoo.hub.cards import get_card, list_weights
from zoo.models import adapt as _adapt
from zoo.models import receptive_field
from zoo.models.registry import list_models
from zoo.ssl import pretrain


def model_info(name: str) -> dict:
    """What the zoo knows of ``arch`` or ``arch.tag``: the architecture and its weight cards.

    Args:
        name: a registered architecture, or ``arch.tag`` for one checkpoint's card.

    Returns:
        A dict: name, family, task, default_size, min_size, spatial_dims, preprocess,
        description, paper and ``weights`` (each card as a dict). Imports no TensorFlow.

    Raises:
        UnknownNameError: an unknown architecture or card (with did-you-mean suggestions).
    """
    from zoo.hub.cards import cards_for
    from zoo.models.registry import get_entry

    entry = get_entry(name)
    cards = [get_card(name)] if "." in name else cards_for(entry.name)
    return {
        "name": entry.name,
        "family": entry.family,
        "task": entry.task,
        "default_size": list(entry.default_size),
        "min_size": entry.min_size,
        "spatial_dims": entry.spatial_dims,
        "preprocess": entry.preprocess,
        "description": entry.description,
        "paper": entry.paper,
        "weights": [c.to_dict() for c in cards],
    }


def load(
    name: str,
    pretrained=None,
    *,
    in_chans: int | None = None,
    num_classes: int | None = None,
    input_shape=None,
    pooling: str | None = _adapt.POOLING,
    dropout: float = 0.0,
    classifier_activation: str | None = _adapt.ACTIVATION,
    features=False,
    head: str | None = None,
    head_options: dict | None = None,
    include_top: bool | None = None,
    mil_pooling: str = "lse",
    **options,
):
    """Build ``name`` (``"arch"`` or ``"arch.tag"``) as a ready Functional ``keras.Model``.

    Imports TensorFlow on first call. Example:
    ``zoo.load("inception_v3", pretrained="imagenet", in_chans=1, num_classes=2)``.

    Args:
        name: a registered architecture (``zoo.list_models()``), or ``arch.tag`` for a checkpoint.
        pretrained: ``None`` builds random weights (explicitly); a card tag such as
            ``"imagenet"`` (``zoo.list_weights()``); or a path to a ``.h5`` / ``.weights.h5``
            file. A missing, corrupt or mismatched file raises a ``ZooError``, never a silent
            random init.
        in_chans: input channels; default the channels of a given ``(H, W, C)`` ``input_shape``,
            else the checkpoint's (3 without one). ``1`` on an RGB
            checkpoint broadcasts the grey channel inside the preprocessing (exact); other
            counts adapt the first convolution by timm's repeat-and-scale rule.
        num_classes: ``None`` keeps the checkpoint's classifier if it has one; ``0`` gives the
            backbone; any other number adds a fresh head (``head_pool``, ``head_fc``).
        input_shape: ``(H, W)`` or ``(H, W, C)`` (3D models: ``(D, H, W)``); default the card's
            or the architecture's size. Below the architecture's minimum: ``InputShapeError``.
        pooling: ``"avg"``, ``"max"`` or ``None`` (the feature map): the global pooling of the
            backbone or of a new classifier (with ``head="mil"`` use ``mil_pooling``).
        dropout: dropout rate before a new classifier (or the MIL head).
        classifier_activation: activation of a new classifier (``"softmax"``, ``"sigmoid"``,
            ``None`` for logits); with ``head="mil"``, of the bag score (default: logits, as
            ``zoo.heads.losses.mil_losses`` expects).
        features: ``True`` (or a tuple of strides) returns the multi-scale feature maps
            (outputs ``features_stride4`` ... ``features_stride32``) instead.
        head: ``"mil"`` puts a multiple-instance head on the deepest feature map.
        head_options: the MIL head's settings (``r``, ``k_max``, ...).
        include_top: ``True`` builds the architecture's own original classifier (ImageNet's
            1000 classes, or ``num_classes``) without weights, or keeps a card's; ``False`` the
            backbone; ``None`` (default) decides by ``num_classes``.
        mil_pooling: the MIL pooling of ``head="mil"`` (``"lse"``, ``"wildcat"``,
            ``"attention"``, ... from ``zoo.heads.mil.POOLINGS``).
        **options: architecture-specific options (e.g. ``encoder=`` and ``freeze_encoder=`` for
            ``unet``, ``norm=`` for ``unet3d``, ``n_scalars=`` for ``patch_cnn29``).

    Returns:
        A Functional ``keras.Model`` whose first layer is the checkpoint's preprocessing; its
        input contract is ``zoo.input_contract(model)``.

    Raises:
        UnknownNameError: unknown architecture, weights tag or MIL pooling (with suggestions).
        InvalidArgumentError: arguments that do not fit together or the architecture (named
            with the fix). InputShapeError: a shape below the architecture's minimum.
        WeightsError / FetchError / OfflineError: a weights file that is missing, corrupt, does
            not fit the architecture, or cannot be fetched: never a silent random init.
    """
    from zoo.models.factory import load as _load

    return _load(
        name,
        pretrained,
        in_chans=in_chans,
        num_classes=num_classes,
        input_shape=input_shape,
        pooling=pooling,
        dropout=dropout,
        classifier_activation=classifier_activation,
        features=features,
        head=head,
        head_options=head_options,
        include_top=include_top,
        mil_pooling=mil_pooling,
        **options,
    )


def weights_origin(model) -> dict | None:
    """Where a zoo model's weights came from, or None for random weights.

    Args:
        model: a model from ``zoo.load`` (or saved from one and reloaded, or with a new head).

    Returns:
        ``{"card": "arch.tag", "sha256": ...}`` or ``{"file": path, "sha256": ...}``: kept in
        the model's config (its ``preprocess`` layer), so it survives ``.keras`` files.

    Raises:
        InvalidArgumentError: ``model`` was not built by ``zoo.load`` (no ``preprocess`` layer).
    """
    from zoo.models.factory import weights_origin as _origin

    return _origin(model)


def input_contract(model) -> dict:
    """What a zoo model expects as input, read from the model itself (its ``preprocess`` layer).

    Args:
        model: a model from ``zoo.load`` or ``zoo.load_model``.

    Returns:
        ``{"mode", "input_range", "in_chans", "input_shape"}``: feed raw values in
        ``input_range`` (ImageNet cards: [0, 255]); the normalisation is inside the model.

    Raises:
        InvalidArgumentError: the model has no ``preprocess`` layer (not built by ``zoo.load``).
    """
    from zoo.layers.preprocess import input_contract as _contract

    return _contract(model)


def load_model(path, **kwargs):
    """Load a saved ``.keras`` zoo model (safe mode), registering every zoo layer first.

    Args:
        path: a ``.keras`` file written by ``model.save`` (e.g. ``finetune_out/best.keras``).
        **kwargs: passed to ``keras.models.load_model`` (``safe_mode`` defaults to True).

    Returns:
        The ``keras.Model``, with its input contract and weights origin.

    Raises:
        InvalidArgumentError: no such file, not a ``.keras`` archive, or a layer Keras cannot load.
    """
    from zoo.saving import load_model as _load_model

    return _load_model(path, **kwargs)


def fetch(name, **kwargs):
    """Download (or find in the cache) and verify the weights file of a card.

    Mirrors (``ZOO_MIRROR``) come first, downloads resume, and a file is used only when its hash
    matches the card; ``ZOO_OFFLINE=1`` never touches the network.

    Args:
        name: the card's name ``arch.tag``, or the ``WeightCard`` itself.
        **kwargs: ``progress``, ``timeout`` (seconds a read may wait), ``retries``, ``backoff``,
            ``min_rate`` (bytes/s a download must keep up); see ``zoo.hub.fetch.fetch``.

    Returns:
        The ``Path`` of the verified file inside ``ZOO_HOME``.

    Raises:
        UnknownNameError: no such card. FetchError / OfflineError: no source delivered a file
        with the right hash. CacheWriteError: the cache cannot be written.
    """
    from zoo.hub.fetch import fetch as _fetch

    return _fetch(name, **kwargs)


def finetune(model_or_name, train_data, val_data=None, **kwargs):
    """Fine-tune in two stages (frozen backbone, then unfrozen) on the zoo's one training engine.

    Args:
        model_or_name: a zoo name (``"simple_cnn.phantom"``, ``"resnet50"`` with
            ``pretrained=``) or a Functional model with ``head_*`` layers.
        train_data: ``(images, labels)`` in the model's input range, an object with
            ``.images`` and ``.labels``, or a batched ``tf.data.Dataset`` (streamed, e.g.
            ``zoo.dicom_dataset``).
        val_data: the same; default a seeded ``validation_split`` of ``train_data``, whole
            patients at a time when ``groups=`` (one patient id per image) is given.
        **kwargs: ``task`` ("classification", "multilabel", "regression", "segmentation"),
            ``epochs`` / ``learning_rate`` (one value or a stage pair), ``unfreeze_from``,
            ``augment``, ``class_weight``, ``groups``, ``out_dir``, ``overwrite``, ``resume``,
            ``checkpoint_every``, ``strategy``, ``precision``, ``seed``; see
            ``zoo.train.finetune.finetune``.

    Returns:
        A ``FinetuneResult``: the model, the history per stage, whether stage 2 was kept, the
        validation metrics (with bootstrap CIs, per patient with groups) and the run record path.

    Raises:
        DataError / InvalidArgumentError: data or labels that do not fit the task, checked before
            any training. OutputError: ``out_dir`` holds files that are not an earlier run.
        ResumeError: ``resume=True`` on a run folder of another model or without a checkpoint.
    """
    from zoo.train.finetune import finetune as _finetune

    return _finetune(model_or_name, train_data, val_data, **kwargs)


def read_dicom(path, **kwargs):
    """Decode a DICOM file: float32 (frames, H, W, C) in physical units plus PHI-free metadata.

    Args:
        path: a DICOM file (any transfer syntax pydicom and the installed decoders read).
        **kwargs: ``frames`` (0-based frames of a multi-frame file to decode) and
            ``invert_monochrome1`` (default True: bright always means dense).

    Returns:
        ``DicomImage(pixels, meta)``: CT in HU, MONOCHROME1 inverted, colour as RGB; ``meta`` has
        geometry and acquisition fields, never patient identifiers.

    Raises:
        DicomError: not DICOM, truncated, no pixel data, or a compressed syntax without its
            decoder (the message names the extra to install).
    """
    from zoo.data.dicom import read_dicom as _read

    return _read(path, **kwargs)


def load_series(source, **kwargs):
    """Stack a DICOM series (folder or file list) into a Volume ordered by its geometry.

    Args:
        source: a folder, a list of files, or one multi-frame file.
        **kwargs: ``series`` (which series when there are several), ``on_problem`` ("warn",
            "raise", "ignore" for gaps, duplicates, irregular spacing), ``target_spacing`` (mm,
            resample), tolerances; see ``zoo.data.series.load_series``.

    Returns:
        A ``Volume``: voxels (D, H, W, C) in physical units, spacing, orientation and a
        ``SeriesReport`` of what was wrong with the series.

    Raises:
        SeriesError: no images, several series without ``series=``, mixed sizes, or a problem
            with ``on_problem="raise"``. DicomError: a file that cannot be decoded.
    """
    from zoo.data.series import load_series as _load

    return _load(source, **kwargs)


def read_nifti(path, *, frame: int | None = None):
    """Read a NIfTI-1/-2 image as a Volume on the same conventions as ``load_series``.

    NIfTI's ``[i, j, k]`` array becomes ``(Z, Y, X)`` (transposed, never flipped) and its RAS
    affine becomes spacing ``(z, y, x)`` mm, origin and direction rows in patient LPS, so a
    NIfTI volume and a DICOM series compare directly (``zoo.data.nifti``).

    Args:
        path: a ``.nii``, ``.nii.gz`` or ``.hdr``/``.img`` file.
        frame: which volume of a 4D file (None for a 3D file).

    Returns:
        A ``Volume``: float32 voxels (Z, Y, X), spacing, origin, direction; ``sources`` empty.

    Raises:
        DataError: not NIfTI, a broken header, truncated data, a sheared or non-finite affine
            (the message names the file). InvalidArgumentError: a 4D file without ``frame``.
    """
    from zoo.data.nifti import read_nifti as _read

    return _read(path, frame=frame)


def read_mask(path, reference, **kwargs):
    """Read a NIfTI label map, DICOM-SEG or RTSTRUCT onto the voxel grid of its image.

    Args:
        path: the mask file (``.nii``/``.nii.gz``, a DICOM-SEG or an RTSTRUCT).
        reference: the image's Volume (``zoo.load_series`` or ``zoo.read_nifti``) or a
            ``zoo.data.geometry.Geometry``.
        **kwargs: ``classes`` (a count K or class names; labels outside raise), ``multilabel``
            (``(Z, Y, X, K)`` channels, for overlapping segments), ``resample`` (nearest
            neighbour from another grid instead of refusing); see ``zoo.data.masks.read_mask``.

    Returns:
        A ``Mask``: ``array`` (Z, Y, X) integer labels (0 = background) on the reference grid,
        ``classes`` (names of labels 1 .. K), ``geometry``, ``source`` and ``kind``.

    Raises:
        DataError: a mask whose grid (shape, spacing, origin, orientation) does not match the
            image, a SEG/RTSTRUCT of another series, labels outside ``classes``, overlapping
            segments without ``multilabel``, an unreadable file.
    """
    from zoo.data.masks import read_mask as _read

    return _read(path, reference, **kwargs)


def write_nifti(array, geometry, path, *, overwrite: bool = False):
    """Write voxels (an image, a label map, a prediction) as NIfTI on an image's grid.

    Args:
        array: ``(Z, Y, X)`` or ``(Z, Y, X, C)`` values on ``geometry``'s grid.
        geometry: the Volume it belongs to (``zoo.load_series``, ``zoo.read_nifti``) or a
            ``Geometry``.
        path: a ``.nii`` or ``.nii.gz`` file.
        overwrite: replace an earlier zoo output there.

    Returns:
        The path written; the header is built fresh (no patient data) with the grid's affine.

    Raises:
        InvalidArgumentError: a wrong suffix or an array not on the grid. OutputError: ``path``
            exists and ``overwrite`` is False, or holds a file the zoo did not write.
    """
    from zoo.data.nifti import write_nifti as _write

    return _write(array, geometry, path, overwrite=overwrite)


def write_dicom_seg(mask, reference, path, **kwargs):
    """Write a label map as a DICOM-SEG that references its source series (highdicom).

    The SEG carries the series' patient and study modules, as the DICOM standard requires;
    nothing from the source is written anywhere else.

    Args:
        mask: integer labels ``(Z, Y, X)``, binary channels ``(Z, Y, X, K)`` or a ``Mask``, on
            the series' own grid.
        reference: the Volume from ``zoo.load_series`` (not resampled) or the series' folder.
        path: the ``.dcm`` file to write.
        **kwargs: ``segment_labels`` (names of segments 1 .. K), ``algorithm``, ``overwrite``;
            see ``zoo.data.dicom_seg.write_dicom_seg``.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: a mask that is not labels or binary channels. DataError: a mask
            not on the series' slices. OutputError: ``path`` exists without ``overwrite``.
    """
    from zoo.data.dicom_seg import write_dicom_seg as _write

    return _write(mask, reference, path, **kwargs)


def dicom_dataset(source, labels=None, **kwargs):
    """A tf.data pipeline over DICOM files or series that matches a model's input contract.

    Args:
        source: a folder, a list of files (or series folders), or a labels CSV
            ``path,label[,patient]``.
        labels: a list, a ``{path: label}`` mapping or a labels CSV (None: unlabelled).
        **kwargs: ``model`` or its contract, ``window``, ``batch_size``, ``shuffle``, cache and
            worker settings; see ``zoo.data.pipeline.DicomDataset``.

    Returns:
        A ``tf.data.Dataset`` of model-ready batches; its ``.dicom`` attribute holds the skip
        report and the kept items.

    Raises:
        DicomError / LabelsError / InvalidArgumentError: bad source, labels or options, before
            any decoding starts.
    """
    from zoo.data.pipeline import dicom_dataset as _ds

    return _ds(source, labels, **kwargs)


def compile_for_inference(model, engine: str = "auto", precision: str = "auto", batch: int = 8,
                          calibration_data=None, streams: int = 1, fp32_ends: bool | None = None):
    """``model`` on the fastest inference engine that agrees with its Keras fp32 outputs.

    Args:
        model: a Keras model, a ``.keras`` path or a zoo name such as ``"simple_cnn.phantom"``.
        engine: ``"auto"`` (measured once per machine, cached under ZOO_HOME), ``"tensorflow"``,
            ``"onnxruntime"`` or ``"openvino"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"int8"`` (reduced precisions need
            ``calibration_data``).
        batch: the batch size the engine is compiled for.
        calibration_data: images the engine is checked (and int8 calibrated) on.
        streams: parallel lanes a batch is split into on OpenVINO (its CPU streams); ``auto``
            measures 1 and one per core itself.
        fp32_ends: bf16 keeps the stem and head fp32 (True, the default for a named engine) or
            runs one whole bf16 graph (False); ``auto`` tries both and keeps the fastest that
            agrees.

    Returns:
        A predictor: ``predict(images)`` takes what the Keras model takes and returns the same
        outputs; ``.engine``, ``.precision``, ``.agreement`` and ``.note`` say what it chose.

    Raises:
        AgreementError: the engine/precision misses the agreement targets (numbers in the
            message). OptionalDependencyError: the engine's extra is not installed.
    """
    from zoo.infer.predictor import compile_for_inference as _compile

    return _compile(
        model, engine=engine, precision=precision, batch=batch, calibration_data=calibration_data,
        streams=streams, fp32_ends=fp32_ends,
    )


__all__ = [
    "ZooError",
    "load",
    "load_model",
    "input_contract",
    "weights_origin",
    "fetch",
    "list_models",
    "list_weights",
    "model_info",
    "get_card",
    "read_dicom",
    "load_series",
    "read_nifti",
    "read_mask",
    "write_nifti",
    "write_dicom_seg",
    "dicom_dataset",
    "finetune",
    "export",
    "pretrain",
    "receptive_field",
    "compile_for_inference",
]

__getattr__, __dir__ = submodule_access(__name__)  # zoo.data.dicom etc. import on first use
