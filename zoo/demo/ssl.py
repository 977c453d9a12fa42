"""The self-supervision step of ``zoo demo``: the shipped SimCLR checkpoint against random init
with a handful of labels.

Seconds, not minutes: frozen features of both encoders, a linear probe trained on 20 labelled
phantoms, tested on 300. The pretraining data and this task share ``PHANTOMS``.
"""

from __future__ import annotations

import time

PHANTOMS = dict(size=32, contrast=(0.1, 0.3), noise=0.05, lesion_area=(0.02, 0.06))
CHECKPOINT = "simple_cnn.ssl_simclr"


def demo_step(n_labelled: int = 20, n_test: int = 300, seeds=(0, 1, 2)) -> dict:
    """Few-label linear-probe accuracy, shipped SSL encoder vs random init (mean over seeds)."""
    import numpy as np

    import zoo
    from zoo.data.synthetic import make_phantoms
    from zoo.ssl.evaluate import frozen_scores

    t0 = time.time()
    pool = make_phantoms(n_labelled * 10, seed=31, **PHANTOMS)
    test = make_phantoms(n_test, seed=32, **PHANTOMS)
    card = zoo.get_card(CHECKPOINT)
    train, held = (pool.images, pool.labels), (test.images, test.labels)
    ssl = frozen_scores(card.arch, card.tag, train, held, fractions=(0.1,), seeds=seeds)["linear"][
        0.1
    ]
    rand = frozen_scores(card.arch, None, train, held, fractions=(0.1,), seeds=seeds)["linear"][0.1]
    return {"checkpoint": CHECKPOINT, "labelled_images": n_labelled, "test_images": n_test,
            "ssl_accuracy": float(np.mean(ssl)), "random_init_accuracy": float(np.mean(rand)),
            "seconds": round(time.time() - t0, 1)}
