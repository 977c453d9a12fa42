"""The one 2D/3D layer choice of the zoo (MONAI's layer factories, ``Conv[Conv.CONV, dims]``).

Every builder that works in 2D and 3D asks here for its layer class: ``conv(dims)``,
``pool("max", dims)``, ``global_pool("avg", dims)``, ``layer("crop", dims)`` ..., so the
2D/3D pairs are written once. Keras is imported on the first lookup, not on import.
"""

from __future__ import annotations

from zoo.errors import InvalidArgumentError
from zoo.registry import Registry

# kind -> (2D class name, 3D class name) in keras.layers, or a callable taking the dims
KINDS: Registry = Registry("2D/3D layer", {
    "conv": ("Conv2D", "Conv3D"),
    "conv_transpose": ("Conv2DTranspose", "Conv3DTranspose"),
    "max_pool": ("MaxPooling2D", "MaxPooling3D"),
    "avg_pool": ("AveragePooling2D", "AveragePooling3D"),
    "global_avg_pool": ("GlobalAveragePooling2D", "GlobalAveragePooling3D"),
    "global_max_pool": ("GlobalMaxPooling2D", "GlobalMaxPooling3D"),
    "crop": ("Cropping2D", "Cropping3D"),
    "zero_pad": ("ZeroPadding2D", "ZeroPadding3D"),
    "upsample": ("UpSampling2D", "UpSampling3D"),  # nearest (Keras' 3D one has no other mode)
}, argument="kind")


def check_dims(spatial_dims) -> int:
    """``spatial_dims`` as an int when it is 2 or 3; InvalidArgumentError otherwise."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise InvalidArgumentError(f"spatial dims {spatial_dims!r}: only 2D and 3D networks are "
                                   "built; give an image (N, H, W, C) or a volume (N, D, H, W, C).")
    return int(spatial_dims)


def spatial_dims_of(x) -> int:
    """2 or 3: the spatial dimensions of a channels-last batch tensor (rank 4 or 5)."""
    return check_dims(len(x.shape) - 2)


def layer(kind: str, spatial_dims: int):
    """The Keras layer class of ``kind`` (``KINDS``) for ``spatial_dims`` 2 or 3."""
    import keras

    names = KINDS.get(kind)
    return getattr(keras.layers, names[check_dims(spatial_dims) - 2])


def conv(spatial_dims: int):
    """Conv2D or Conv3D."""
    return layer("conv", spatial_dims)


def conv_transpose(spatial_dims: int):
    """Conv2DTranspose or Conv3DTranspose."""
    return layer("conv_transpose", spatial_dims)


def pool(kind: str, spatial_dims: int):
    """``kind`` "max" or "avg": MaxPooling2D/3D or AveragePooling2D/3D."""
    return layer(f"{kind}_pool", spatial_dims)


def global_pool(kind: str, spatial_dims: int):
    """``kind`` "avg" or "max": GlobalAveragePooling2D/3D or GlobalMaxPooling2D/3D."""
    return layer(f"global_{kind}_pool", spatial_dims)


def linear_upsample(spatial_dims: int, **kwargs):
    """A x2 linear up-sampling layer: Keras' bilinear in 2D (same values, faster), the zoo's
    LinearUpsampling in 3D (Keras' UpSampling3D is nearest only)."""
    import keras

    if check_dims(spatial_dims) == 2:
        return keras.layers.UpSampling2D(2, interpolation="bilinear", **kwargs)
    from zoo.layers.resample import LinearUpsampling

    return LinearUpsampling(**kwargs)
