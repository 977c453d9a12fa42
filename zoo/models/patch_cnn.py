"""Patch CNNs for voxel classification: one, several scales, or three orthogonal planes.

``patch_cnn29`` is the classic small 29x29 patch ConvNet with PReLU used for brain-region
labelling (de Brebisson & Montana 2015, 135 classes): conv5-20, pool, conv5-50, pool, dense.
``multiscale_patch_cnn`` takes one large patch and cuts the central patch of each scale,
down-sampled to the same size (Moeskops et al. 2016); ``triplanar_cnn`` takes a cube and its
three central orthogonal planes (Prasoon et al. 2013). Pathways have their own weights and
are merged before the dense layers, where optional scalar features (e.g. distances to
structure centroids) join through a second input named ``scalars``.
"""

from __future__ import annotations

from zoo._lazy import keras
from zoo.errors import InvalidArgumentError
from zoo.models import _blocks
from zoo.models.registry import register_model


def pathway(x, name, widths=(20, 50), kernel=5):
    """conv(k) + PReLU + 2x2 max pool per width, flattened: the 29x29 pathway (29->25->12->8->4)."""
    for i, width in enumerate(widths, start=1):
        x = _blocks.conv_norm_act(
            x, width, kernel, f"{name}_{i}", norm="none", padding="valid", activation="prelu"
        )
        x = keras.layers.MaxPooling2D(2, name=f"{name}_{i}_pool")(x)
    return keras.layers.Flatten(name=f"{name}_flatten")(x)


def merge(paths, name_scalars, n_scalars, dense, dropout, include_top, num_classes, activation):
    """Concatenate the flattened pathways (and the scalars), then the dense layers."""
    flat = list(paths)
    inputs = []
    if n_scalars:
        scalars = keras.Input(shape=(n_scalars,), name=name_scalars)
        inputs.append(scalars)
        flat.append(scalars)
    x = flat[0] if len(flat) == 1 else keras.layers.Concatenate(name="merge")(flat)
    for i, units in enumerate(dense, start=1):
        x = keras.layers.Dense(units, name=f"fc{i}")(x)
        x = keras.layers.PReLU(name=f"fc{i}_prelu")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    if include_top:
        x = keras.layers.Dense(num_classes, activation=activation, name="head_fc", dtype="float32")(
            x
        )
    return {"outputs": x, "inputs": inputs} if inputs else x


def _check_scalars(n_scalars):
    if isinstance(n_scalars, bool) or not isinstance(n_scalars, int) or n_scalars < 0:
        raise InvalidArgumentError(
            f"n_scalars={n_scalars!r}: the number of extra scalar features must be an int >= 0."
        )


def _first_pathway(model):
    names = {layer.name for layer in model.layers}
    first = next(n.split("_")[0] for n in ("path1_1_pool", "axial_1_pool") if n in names)
    return {2: f"{first}_1_pool", 4: f"{first}_2_pool"}


_COMMON = dict(family="zoo", preprocess="none", feature_layers=_first_pathway, min_size=16)


@register_model(
    "patch_cnn29",
    default_size=(29, 29),
    description="29x29 patch ConvNet with PReLU (brain-region labelling)",
    paper="de Brebisson & Montana 2015, arXiv:1502.02445",
    **_COMMON,
)
def build_patch_cnn29(
    x, *, include_top, num_classes, classifier_activation, n_scalars=0, dense=(1000,), dropout=0.2
):
    _check_scalars(n_scalars)
    return merge(
        [pathway(x, "path1")],
        "scalars",
        n_scalars,
        dense,
        dropout,
        include_top,
        num_classes,
        classifier_activation,
    )


@register_model(
    "multiscale_patch_cnn",
    default_size=(87, 87),
    description="patches of several scales cut from one patch, separate pathways, merged before "
    "dense layers",
    paper="Moeskops et al. 2016, doi:10.1109/TMI.2016.2548501",
    **_COMMON,
)
def build_multiscale_patch_cnn(
    x,
    *,
    include_top,
    num_classes,
    classifier_activation,
    patch=29,
    scales=(1, 3),
    n_scalars=0,
    dense=(256,),
    dropout=0.2,
):
    """Scale s: the central (patch * s) window, average-pooled by s to patch x patch."""
    from zoo.layers.resample import CentralCrop

    _check_scalars(n_scalars)
    if not isinstance(patch, int) or patch < 16:
        raise InvalidArgumentError(
            f"patch={patch!r}: the pathway patch size must be an int >= 16 (29 in the paper)."
        )
    size = x.shape[1]
    if (
        not scales
        or any(not isinstance(s, int) or s < 1 for s in scales)
        or (size and patch * max(scales) > size)
    ):
        raise InvalidArgumentError(
            f"scales={scales!r} with patch={patch}: give integer factors >= 1 whose windows (patch "
            f"* scale = {[patch * s for s in scales]}) fit the input ({size})."
        )
    paths = []
    for i, s in enumerate(scales, start=1):
        p = CentralCrop(patch * s, name=f"path{i}_crop")(x)
        if s > 1:
            p = keras.layers.AveragePooling2D(s, name=f"path{i}_downsample")(p)
        paths.append(pathway(p, f"path{i}"))
    return merge(
        paths, "scalars", n_scalars, dense, dropout, include_top, num_classes, classifier_activation
    )


@register_model(
    "triplanar_cnn",
    default_size=(29, 29, 29),
    spatial_dims=3,
    description="2.5D: the three central orthogonal planes of a cube through separate pathways",
    paper="Prasoon et al. 2013, doi:10.1007/978-3-642-40763-5_31",
    **_COMMON,
)
def build_triplanar_cnn(
    x, *, include_top, num_classes, classifier_activation, n_scalars=0, dense=(256,), dropout=0.2
):
    from zoo.layers.resample import CentralSlice

    _check_scalars(n_scalars)
    paths = [pathway(CentralSlice(axis, name=f"{plane}_plane")(x), plane)
             for axis, plane in enumerate(("axial", "coronal", "sagittal"))]
    return merge(
        paths, "scalars", n_scalars, dense, dropout, include_top, num_classes, classifier_activation
    )
