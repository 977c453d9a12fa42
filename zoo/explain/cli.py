"""``zoo explain MODEL IMAGE``: a heat map of one image, written as a PNG overlay.

MODEL is a saved ``.keras`` file or a zoo name (``arch`` or ``arch.tag``); IMAGE a ``.npy``
array (H, W) or (H, W, C) or a ``.png``. The image is fitted to the model's input (channels
broadcast or averaged, size resized) and fed in its own value range.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zoo.errors import DataError, InvalidArgumentError

METHODS = ("gradcam", "cam", "saliency")


def load_image(path) -> np.ndarray:
    """(H, W, C) float32 from a .npy or .png file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {str(path)!r}: no such file.")
    if path.suffix == ".npy":
        image = np.load(path, allow_pickle=False)
    elif path.suffix == ".png":
        import tensorflow as tf

        image = tf.io.decode_png(path.read_bytes()).numpy()
    else:
        raise DataError(f"image {str(path)!r}: give a .npy array or a .png file.")
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise DataError(f"image {str(path)!r} has shape {image.shape}; give (H, W) or (H, W, C).")
    return image


def fit_to_model(image, model) -> np.ndarray:
    """The image with the model's channel count and (fixed) spatial size, batch of one."""
    from keras import ops

    h, w, chans = model.inputs[0].shape[1:]
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] != chans:
        if image.shape[-1] == 1:
            image = np.repeat(image, chans, axis=-1)
        elif chans == 1:
            image = image.mean(axis=-1, keepdims=True)
        else:
            raise DataError(f"the image has {image.shape[-1]} channels and the model takes {chans}.")
    size = (h or image.shape[0], w or image.shape[1])
    if image.shape[:2] != size:
        image = ops.convert_to_numpy(ops.image.resize(image, size, interpolation="bilinear"))
    return image[None].astype(np.float32)


def _load_model(spec: str, pretrained: str | None, in_chans: int):
    """A saved .keras model, or the zoo architecture ``spec`` built for the image's channel count."""
    import zoo

    if spec.endswith(".keras"):
        if not Path(spec).is_file():
            raise DataError(f"model {spec!r}: no such file.")
        return zoo.load_model(spec)
    return zoo.load(spec, pretrained=pretrained, in_chans=in_chans)


def explain(model_spec, image_path, out, method="gradcam", layer=None, class_index=None,
            pretrained=None, alpha=0.45) -> dict:
    """Explain ``image_path`` with ``model_spec`` and write the overlay PNG to ``out``."""
    from zoo.explain.cam import class_activation_maps
    from zoo.explain.gradcam import grad_cam
    from zoo.explain.overlay import save_overlay
    from zoo.explain.saliency import saliency

    if method not in METHODS:
        raise InvalidArgumentError(f"method={method!r}: use one of {', '.join(METHODS)}.")
    image = load_image(image_path)
    model = _load_model(str(model_spec), pretrained, min(image.shape[-1], 3))
    x = fit_to_model(image, model)
    if method == "cam":
        heat = class_activation_maps(model, x, class_index)
    elif method == "gradcam":
        heat = grad_cam(model, x, layer, class_index)
    else:
        heat = saliency(model, x, class_index)
    path = save_overlay(out, x[0], heat[0], alpha)
    return {"overlay": str(path), "model": model.name, "method": method, "layer": layer,
            "input_shape": list(x.shape[1:]), "heat_max": float(heat[0].max())}


def _run(args) -> int:
    print(json.dumps(explain(args.model, args.image, args.out, args.method, args.layer, args.class_index,
                             args.pretrained, args.alpha)))
    return 0


def add_explain_parser(subparsers) -> None:
    """Register ``zoo explain`` on the CLI's subparsers."""
    p = subparsers.add_parser("explain", help="heat map (Grad-CAM, CAM or saliency) of an image as a PNG overlay")
    p.add_argument("model", help="a .keras file or a zoo name (arch or arch.tag)")
    p.add_argument("image", help="a .npy array (H, W[, C]) or a .png")
    p.add_argument("--out", default="overlay.png")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last spatial layer)")
    p.add_argument("--class", dest="class_index", type=int, default=None, help="class index (default: the top class)")
    p.add_argument("--pretrained", default=None, help="weights tag when MODEL is an architecture name")
    p.add_argument("--alpha", type=float, default=0.45, help="heat-map opacity in [0, 1]")
    p.set_defaults(func=_run)
