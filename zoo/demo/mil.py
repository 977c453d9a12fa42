"""The weak-label step of ``zoo demo``: train a MIL head from image labels only and grade its
maps; shared with benchmarks/bench_mil_localisation.py."""

from __future__ import annotations

from pathlib import Path

# The benchmark's task and backbone: simple_cnn's first three stages (widths 8/16/32), whose
# stride-8 map gives 8 x 8 instances on 64 x 64 phantoms.
TASK = dict(size=64, lesions=(1, 3), lesion_area=(0.01, 0.05), contrast=(0.2, 0.45), noise=0.05)
BACKBONE = dict(in_chans=1, input_shape=(64, 64), features=(8,), widths=(8, 16, 32))
TOLERANCE = 2  # pointing game: pixels from a lesion that still count as a hit


def score(bag_scores, maps, task) -> dict:
    """Bag ROC AUC, pointing game and pixel AUC of (N, H, W) maps against the hidden masks."""
    from zoo.data.localisation import pixel_auc, pointing_game, roc_auc

    return {
        "bag_auc": roc_auc(bag_scores, task.labels),
        "pointing_game": pointing_game(maps, task.masks, TOLERANCE),
        "pixel_auc": pixel_auc(maps, task.masks),
    }


def train_and_score(
    pooling, options, train, test, epochs=5, seed=0, learning_rate=3e-3, priors=None
):
    """(model, scores): a MIL head trained on ``train`` (image labels only), scored on ``test``.

    The loss is the bag cross-entropy plus ``priors`` (``mil_losses`` keywords: sparsity, area).
    """
    import keras

    import zoo
    from zoo.explain.cam import upsample
    from zoo.heads.losses import mil_losses
    from zoo.train.batches import Batches
    from zoo.train.engine import Engine
    from zoo.train.tasks import MIL

    keras.utils.set_random_seed(seed)
    model = zoo.load(
        "simple_cnn",
        **BACKBONE,
        head="mil",
        mil_pooling=pooling,
        num_classes=1,
        head_options=options,
    )
    engine = Engine(MIL(model, mil_losses(**(priors or {}))), keras.optimizers.Adam(learning_rate))
    engine.fit(Batches(train.images, train.labels, 32, seed=seed), epochs)
    out = model.predict(test.images, batch_size=128, verbose=0)
    maps = upsample(out["instance_maps"][..., 0], test.images.shape[1:3])
    return model, {**score(out["bag"][:, 0], maps, test), "maps": maps, "bags": out["bag"][:, 0]}


def chance_pointing(masks, tolerance: int = TOLERANCE) -> float:
    """The pointing game's chance level: the mean fraction of an image within ``tolerance`` pixels
    of a lesion (where a uniformly random peak scores a hit), over the images with lesions."""
    import numpy as np

    masks = np.asarray(masks, bool)
    masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
    near = masks.copy()
    h, w = masks.shape[1:]
    for dy in range(-tolerance, tolerance + 1):
        for dx in range(-tolerance, tolerance + 1):
            if dy * dy + dx * dx <= tolerance * tolerance:
                near[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                    masks[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return float(near.mean())


def demo_step(out_dir=None, seed=0, n_train=256, epochs=5) -> dict:
    """WILDCAT trained from image labels only on phantoms; where does it point? (about a minute on a
    CPU)

    Returns bag AUC, pointing game and pixel AUC on 100 fresh phantoms, the chance pointing
    rate (the fraction of a positive image within the tolerance of a lesion), and the figure
    ``mil_overlay.png`` (image, instance map, lesion outline, bag score) written to ``out_dir``.
    """
    import numpy as np

    from zoo.data.localisation import make_localisation_task
    from zoo.explain.overlay import save_overlay

    train = make_localisation_task(n_train, seed=seed, **TASK)
    test = make_localisation_task(100, seed=seed + 1000, **TASK)
    options = {"k_max": 0.1, "k_min": 0.1, "alpha": 0.7, "maps_per_class": 4}
    _, result = train_and_score("wildcat", options, train, test, epochs, seed)
    maps, bags = result.pop("maps"), result.pop("bags")
    positives = np.flatnonzero(test.labels)
    result["chance_pointing"] = chance_pointing(test.masks[positives])
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        k = positives[0]  # the first positive test image, not a picked success
        p = 1.0 / (1.0 + np.exp(-bags[k]))
        result["overlay"] = str(
            save_overlay(
                Path(out_dir) / "mil_overlay.png",
                test.images[k],
                maps[k],
                mask=test.masks[k],
                title="MIL instance map (WILDCAT, trained on image labels only), lesion "
                f"probability {p:.3f}",
            )
        )
    print(
        "MIL (WILDCAT, image labels only): "
        + ", ".join(f"{k} {v:.3f}" for k, v in result.items() if k != "overlay")
    )
    return result
