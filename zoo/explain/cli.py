"""``zoo explain MODEL IMAGE``: a heat map of one image, written as a PNG overlay.

MODEL is a saved ``.keras`` file or a zoo name (``arch`` or ``arch.tag``); IMAGE a ``.npy``
array (H, W) or (H, W, C) or a ``.png``, or for a 3D model a ``.npy`` volume (D, H, W) or
(D, H, W, C). The input is fitted to the model's (channels broadcast or averaged, size
resized) and fed in its own value range. A volume's figure shows the slice through the
map's peak. ``--method`` takes every name of ``zoo.explain.METHODS``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zoo._keras_compat import producing_layer
from zoo.errors import DataError, RandomWeightsError
from zoo.explain.api import METHODS as _METHODS
from zoo.explain.inputs import fit_to_model
from zoo.outputs import check_target, staged

METHODS = tuple(_METHODS)  # zoo.explain.api's registry: gradcam, cam, saliency, smoothgrad, ...


def load_image(path) -> np.ndarray:
    """(H, W, C) float32 from a .npy or .png file.

    Args:
        path: a ``.npy`` array (H, W[, C]) or a ``.png`` image.

    Returns:
        The image as float32 (H, W, C).
    """
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


def _is_volume(array) -> bool:
    """A .npy volume: (D, H, W, C), or (D, H, W) whose last axis is too long to be channels."""
    return array.ndim == 4 or (array.ndim == 3 and array.shape[-1] > 4)


def load_input(path) -> np.ndarray:
    """(H, W, C) image or (D, H, W, C) volume, float32, from a .npy or .png file.

    Args:
        path: a ``.npy`` array (an image or a volume) or a ``.png`` image.

    Returns:
        float32 (H, W, C) or (D, H, W, C).
    """
    path = Path(path)
    if path.suffix == ".npy" and path.is_file():
        array = np.load(path, allow_pickle=False)
        if _is_volume(array):
            array = np.asarray(array, np.float32)
            return array[..., None] if array.ndim == 3 else array
    return load_image(path)


def _load_model(spec: str, pretrained: str | None, in_chans: int, allow_random: bool = False,
                num_classes: int | None = None):
    """A saved .keras model, or the zoo model ``spec`` (``arch.tag``, or ``arch`` with
    ``pretrained``).

    ``arch`` alone builds random weights, whose maps explain noise: refused unless ``allow_random``.
    """
    from zoo.models.factory import load
    from zoo.saving import load_model

    if spec.endswith(".keras"):
        if not Path(spec).is_file():
            raise DataError(f"model {spec!r}: no such file.")
        return load_model(spec)
    if "." not in spec and pretrained is None and not allow_random:
        raise RandomWeightsError(
            f"model {spec!r} was given as an architecture name without --pretrained, so its "
            "weights would be random and the map would explain an untrained network. Give a "
            f"checkpoint (e.g. `zoo explain {spec}.TAG ...` or `--pretrained TAG`; `zoo list "
            "--pretrained` lists them) or a .keras file, or pass --allow-random to explain random "
            "weights on purpose."
        )
    return load(spec, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes)


def _score_kind(model, output) -> str:
    """'probability' when the explained output ends in a softmax or sigmoid, else 'logit'."""
    from zoo.explain.targets import select_output

    layer = producing_layer(select_output(model, output))
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return "probability" if name in ("softmax", "sigmoid") else "logit"


def explain(model_spec, image_path, out, method="gradcam", layer=None, class_index=None,
            pretrained=None, alpha=0.5, allow_random=False, mask=None, *, num_classes=None,
            overwrite=False) -> dict:
    """Explain ``image_path`` with ``model_spec``; write the figure (original, map, colour bar) to
    ``out``.

    Args:
        model_spec: a zoo name (``arch`` or ``arch.tag``) or a ``.keras`` file.
        image_path: a ``.npy`` or ``.png`` image (a ``.npy`` volume for 3D models).
        out: the PNG to write; replaced only with ``overwrite=True`` and only if the zoo wrote
            it (zoo.outputs).
        method: a name from ``zoo.explain.METHODS`` (gradcam, cam, saliency, smoothgrad,
            integrated_gradients, occlusion, perturbation).
        layer: the conv layer for Grad-CAM (default the last one with a spatial map).
        class_index: the class explained (default the predicted one).
        pretrained: weights for a model built from a name (tag or file).
        alpha: the map's opacity in the overlay.
        allow_random: explain a model built from a name without weights (refused otherwise).
        mask: optional (H, W) lesion mask at the model's input size, outlined on the map.
        num_classes: the class count of a ``pretrained`` weights file with a classifier.
        overwrite: replace an earlier figure the zoo wrote.

    Returns:
        What was explained: the layer, the class and its score, and the figure's panel boxes.

    Raises:
        RandomWeightsError: a model from a name without weights and no ``allow_random``.
        InvalidArgumentError / UnknownNameError: unreadable image, unknown method or layer.
        OutputError: ``out`` exists and is not the zoo's (or no ``overwrite``).
    """
    import keras

    from zoo.explain.api import explain_batch
    from zoo.explain.cam import gap_classifier
    from zoo.explain.gradcam import find_conv_layer
    from zoo.explain.inputs import is_volume_model
    from zoo.explain.targets import output_names, pick_class, select_output
    from zoo.figures import explanation_figure

    _METHODS.check(method)
    check_target(out, overwrite=overwrite)
    image = load_input(image_path)
    model = _load_model(
        str(model_spec), pretrained, min(image.shape[-1], 3), allow_random, num_classes
    )
    volume_model = is_volume_model(model)
    if (image.ndim == 4) != volume_model:
        given = (f"a volume of shape {image.shape[:3]}" if image.ndim == 4
                 else f"a 2D image {image.shape[:2]}")
        fix = ("give a .npy volume (D, H, W) or (D, H, W, C)" if volume_model else
               "save one slice (np.save(path, volume[d])) or use a 3D model such as simple_cnn3d")
        raise DataError(f"image {str(image_path)!r} is {given}, and model {model.name!r} takes "
                        f"{'3D volumes' if volume_model else '2D images'}; {fix}.")
    x = fit_to_model(image, model, image_path)
    scores = keras.Model(model.inputs, select_output(model))([x], training=False)
    score, index = pick_class(scores, class_index)
    cls, score = int(index[0]), float(keras.ops.convert_to_numpy(score)[0])
    options = {}
    if method == "cam":
        explained = ("instance_maps" if "instance_maps" in output_names(model)
                     else producing_layer(gap_classifier(model)[0]).name)
    elif method == "gradcam":
        explained = find_conv_layer(model, layer).name
        options["layer_name"] = explained
    else:
        explained = _METHODS[method].explains
    heat = explain_batch(model, x, method, class_index=cls, **options)
    label = _METHODS[method].label
    spec = str(model_spec)
    name = (
        model.name if spec.endswith(".keras") else spec + (f".{pretrained}" if pretrained else "")
    )
    kind = _score_kind(model, None)
    shown, shown_heat, where, extra = x[0], heat[0], "", {}
    if volume_model:  # the slice through the map's peak
        depth = int(np.unravel_index(int(np.argmax(heat[0])), heat[0].shape)[0])
        shown, shown_heat, where = x[0, depth], heat[0, depth], f", slice {depth}/{x.shape[1]}"
        extra = {"slice": depth}
    with staged([out], writer="zoo explain", overwrite=overwrite) as (tmp,):
        figure = explanation_figure(
            tmp, shown, shown_heat, mask=mask, alpha=alpha,
            title=f"{name}: {label} of {explained}{where}, class {cls}, {kind} {score:.3f}")
    return {
        "overlay": str(out),
        "model": name,
        "method": method,
        "layer": explained,
        "class_index": cls,
        "score": score,
        "score_kind": kind,
        "input_shape": list(x.shape[1:]),
        "heat_max": float(heat[0].max()),
        "size": [figure.width, figure.height],
        "boxes": {k: list(v) for k, v in figure.boxes.items()},
        **extra,
    }


def _run(args) -> int:
    report = explain(args.model, args.image, args.out, args.method, args.layer, args.class_index,
                     args.pretrained, args.alpha, args.allow_random, num_classes=args.num_classes,
                     overwrite=args.overwrite)
    print(
        f"explained class {report['class_index']} ({report['score_kind']} {report['score']:.3f}) "
        f"of {report['model']} with {report['method']} at layer {report['layer']}; figure "
        f"{report['overlay']}"
    )
    print(json.dumps(report))
    return 0


def add_explain_parser(subparsers) -> None:
    """Register ``zoo explain`` on the CLI's subparsers.

    Args:
        subparsers: the ``zoo`` parser's sub-parsers action.
    """
    p = subparsers.add_parser("explain",
                              help="heat map (Grad-CAM, CAM, saliency, SmoothGrad, integrated "
                                   "gradients, occlusion or a perturbation mask) of an image as a "
                                   "PNG figure",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "model", help="a .keras file or a zoo checkpoint (arch.tag, or arch with --pretrained)"
    )
    p.add_argument("image", help="a .npy array (H, W[, C]) or a .png; for a 3D model a .npy volume "
                                 "(D, H, W[, C])")
    p.add_argument("--out", default="overlay.png")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument(
        "--layer",
        default=None,
        help="Grad-CAM layer (default: the deepest layer with a map of at least 7 x 7 positions)",
    )
    p.add_argument(
        "--class",
        dest="class_index",
        type=int,
        default=None,
        help="class index (default: the top class)",
    )
    p.add_argument(
        "--pretrained", default=None, help="weights tag when MODEL is an architecture name"
    )
    p.add_argument("--num-classes", type=int, default=None,
                   help="class count of a --pretrained weights file that has a classifier")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a figure zoo explain wrote before at --out (never a file the zoo did not "
        "write)",
    )
    p.add_argument(
        "--allow-random",
        action="store_true",
        help="explain an architecture name without --pretrained (random weights) on purpose",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="heat-map opacity in [0, 1]")
    p.set_defaults(func=_run)
