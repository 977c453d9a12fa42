"""``zoo demo``: the whole path offline, on embedded synthetic data.

Loads the zoo's own phantom checkpoint through the registry (verified by sha256), fine-
tunes it on a few labelled images of a harder target task with the transfer helpers,
compares with the same network trained from scratch, and writes a SavedModel.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# The pretraining task of the shipped checkpoint (tools/train_demo_checkpoint.py) and the
# demo's target task: fainter lesions, more noise, and only a few labels.
SOURCE_TASK = dict(n=3000, seed=100, contrast=(0.12, 0.4), noise=0.05)
TARGET_TASK = dict(contrast=(0.08, 0.25), noise=0.06, lesion_area=(0.01, 0.04))
CHECKPOINT = "simple_cnn.phantom"


def _accuracy(model, images, labels) -> float:
    import numpy as np

    return float(np.mean(model.predict(images, verbose=0, batch_size=128).argmax(-1) == labels))


def run(out_dir: str | os.PathLike = "demo_out", n_labelled: int = 80, epochs: int = 12, seed: int = 0) -> dict:
    import keras

    import zoo
    from zoo.data.synthetic import make_phantoms
    from zoo.train.transfer import freeze, trainable_summary, unfreeze

    t0 = time.time()
    keras.utils.set_random_seed(seed)
    train = make_phantoms(n_labelled, seed=seed + 1, **TARGET_TASK)
    test = make_phantoms(600, seed=seed + 2, **TARGET_TASK)
    print(f"target task: {n_labelled} labelled 64x64 phantoms (lesion contrast {TARGET_TASK['contrast']}, noise {TARGET_TASK['noise']}), "
          f"{len(test.labels)} test images")

    def fit(model, lr, n_epochs):
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        model.fit(train.images, train.labels, batch_size=16, epochs=n_epochs, verbose=0)

    card = zoo.get_card(CHECKPOINT)
    print(f"loading {card.name} ({card.description}; sha256 {card.sha256[:12]}...)")
    pretrained = zoo.load(CHECKPOINT, in_chans=1)
    before = _accuracy(pretrained, test.images, test.labels)
    freeze(pretrained)  # stage 1: the head only, BatchNorm in inference mode
    print(f"stage 1, head only: {trainable_summary(pretrained)['trainable_params']} trainable parameters")
    fit(pretrained, 1e-3, epochs // 2)
    unfreeze(pretrained, "stage4_conv1")  # stage 2: the last two stages (BatchNorm stays frozen), lower learning rate
    print(f"stage 2, from stage4: {trainable_summary(pretrained)['trainable_params']} trainable parameters")
    fit(pretrained, 2e-4, epochs - epochs // 2)
    finetuned = _accuracy(pretrained, test.images, test.labels)

    keras.utils.set_random_seed(seed)
    scratch = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(64, 64))
    fit(scratch, 1e-3, epochs)
    from_scratch = _accuracy(scratch, test.images, test.labels)

    print(f"test accuracy  checkpoint as is: {before:.3f}   fine-tuned: {finetuned:.3f}   "
          f"from scratch: {from_scratch:.3f}   (chance {max(test.labels.mean(), 1 - test.labels.mean()):.3f})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "saved_model"
    pretrained.export(str(saved), verbose=False)
    print(f"SavedModel written to {saved} (preprocessing inside; input: grey values in [0, 255])")
    print(f"done in {time.time() - t0:.0f} s")
    return {"checkpoint_as_is": before, "finetuned": finetuned, "from_scratch": from_scratch, "saved_model": str(saved)}
