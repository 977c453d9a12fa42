"""Train the zoo's shipped self-supervised checkpoints and write weights/ssl.toml.

`python tools/train_ssl_checkpoints.py` pretrains simple_cnn with SimCLR and with rotation
prediction on unlabelled synthetic phantoms (no labels are used for training), through
zoo.ssl.pretrain itself, then moves each encoder file into weights/ and rewrites its card
with a relative URL. Seeded; bitwise identity across machines is not promised.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.demo.ssl import PHANTOMS  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
CHECKPOINTS = {  # tag: (task, unlabelled images, epochs, options)
    "ssl_simclr": ("simclr", 2048, 6, {"temperature": 0.2}),
    "ssl_rotation": ("rotation", 1024, 4, {}),
}


def main():
    os.environ["ZOO_HOME"] = tempfile.mkdtemp()
    import zoo.ssl
    from zoo.data.synthetic import make_phantoms
    from zoo.hub.cards import card_from_table

    text = ["# The zoo's own self-supervised checkpoints (tools/train_ssl_checkpoints.py): encoders only,",
            "# pretrained without labels on synthetic phantoms; the [evaluation] scores use labels.", ""]
    evaluation = make_phantoms(600, seed=21, **PHANTOMS)
    for tag, (task, n, epochs, options) in CHECKPOINTS.items():
        unlabelled = make_phantoms(n, seed=20, **PHANTOMS)
        result = zoo.ssl.pretrain(task, "simple_cnn", unlabelled, epochs=epochs, batch_size=64, tag=tag,
                                  eval_data=evaluation, license="Apache-2.0", verbose=2,
                                  data_description=f"{n} unlabelled 32x32 phantoms, make_phantoms(seed=20, {PHANTOMS})",
                                  **options)
        card = result.card
        src = Path(card.resolved_urls()[0])
        shutil.copyfile(src, WEIGHTS / src.name)
        with open(card.card_path, "rb") as f:
            fields = tomllib.load(f)["simple_cnn"][tag]
        fields.update(urls=[src.name], source="medzoo tools/train_ssl_checkpoints.py")
        text.append(card_from_table("simple_cnn", tag, fields, WEIGHTS / "ssl.toml").to_toml())
        print(f"{tag}: {src.name} {src.stat().st_size} bytes, evaluation {result.evaluation}, {result.seconds:.0f} s")
    (WEIGHTS / "ssl.toml").write_text("\n".join(text))
    print(f"wrote {WEIGHTS / 'ssl.toml'}")


if __name__ == "__main__":
    main()
