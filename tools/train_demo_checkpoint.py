"""Train the zoo's own demo checkpoint (simple_cnn.phantom) and write its card.

`python tools/train_demo_checkpoint.py` reproduces weights/simple_cnn_phantom.weights.h5 and
weights/zoo.toml (seeded; bitwise identity across machines is not promised).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.demo import SOURCE_TASK
from zoo.hub.cards import WeightCard
from zoo.hub.fetch import file_hash

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
FILE = "simple_cnn_phantom.weights.h5"


def main(epochs: int = 5):
    keras.utils.set_random_seed(0)
    data = make_phantoms(**SOURCE_TASK)
    val = make_phantoms(500, seed=SOURCE_TASK["seed"] + 1,
                        **{k: v for k, v in SOURCE_TASK.items() if k not in ("n", "seed")})
    model = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(64, 64))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.images, data.labels, batch_size=32, epochs=epochs, verbose=2)
    acc = float(np.mean(model.predict(val.images, verbose=0).argmax(-1) == val.labels))
    path = WEIGHTS / FILE
    model.save_weights(path)
    card = WeightCard(
        arch="simple_cnn", tag="phantom", urls=(FILE,), sha256=file_hash(path, "sha256"),
        size=path.stat().st_size, format="keras-weights-h5", include_top=True, input_size=(64, 64, 1),
        min_size=32, preprocess="tf", num_classes=2, labels="no-lesion, lesion", license="Apache-2.0",
        source="medzoo tools/train_demo_checkpoint.py",
        modality="synthetic grey-scale phantoms (zoo.data.synthetic)",
        units="arbitrary grey values in [0, 255]",
        description=f"simple_cnn trained {epochs} epochs on {SOURCE_TASK['n']} phantoms, lesion contrast "
                    f"in {SOURCE_TASK['contrast']}",
        extra={"validation_accuracy": round(acc, 4), "recipe": f"Adam 1e-3, batch 32, {epochs} epochs, seed 0",
               "keras_version": keras.__version__})
    card = "# The zoo's own checkpoints, trained by tools/ scripts in this repository.\n\n" + card.to_toml()
    (WEIGHTS / "zoo.toml").write_text(card)
    print(f"validation accuracy {acc:.3f}; wrote {path} ({path.stat().st_size} bytes) and weights/zoo.toml")


if __name__ == "__main__":
    main()
