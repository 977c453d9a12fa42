"""The evaluation protocol: linear probe and k-NN on frozen features, and fine-tuning with a
fraction of the labels, each against random initialisation and over several seeds.

Probes are numpy (deterministic, no training loop to tune); fine-tuning uses ``zoo.load`` with
a fresh head on the pretrained encoder, exactly as a user would, trained on the zoo's engine
(``zoo.train.engine``, the classification task).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, InvalidArgumentError


def encoder_features(encoder, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Global-average-pooled features of a feature-map encoder (as is when already pooled)."""
    f = encoder.predict(images, batch_size=batch_size, verbose=0)
    return f.reshape(len(f), -1, f.shape[-1]).mean(1) if f.ndim > 2 else f


def knn_accuracy(train_f, train_y, test_f, test_y, k: int = 5) -> float:
    """Majority vote of the ``k`` nearest training features by cosine (ties: the smaller label)."""

    def unit(f):
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    k = min(k, len(train_f))
    sims = unit(test_f) @ unit(train_f).T
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = train_y[nearest]
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    pred = np.array([np.bincount(v, minlength=n_cls).argmax() for v in votes])
    return float(np.mean(pred == test_y))


def linear_probe(
    train_f, train_y, test_f, test_y, l2: float = 1e-2, steps: int = 300, lr: float = 0.5
) -> float:
    """Multinomial logistic regression on standardised features, full-batch gradient descent."""
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    a, b = (train_f - mu) / sd, (test_f - mu) / sd
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    w, bias = np.zeros((a.shape[1], n_cls)), np.zeros(n_cls)
    onehot = np.eye(n_cls)[train_y]
    for _ in range(steps):
        logits = a @ w + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(a)
        w -= lr * (a.T @ g + l2 * w)
        bias -= lr * g.sum(0)
    return float(np.mean((b @ w + bias).argmax(1) == test_y))


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the labels (at least one per class)."""
    if not 0 < fraction <= 1:
        raise InvalidArgumentError(
            f"label fraction {fraction}: use 0 < fraction <= 1 (0.01 for 1%)."
        )
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, max(1, int(round(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(picked))


def _load(arch, weights, images, **kwargs):
    from zoo.models.factory import load

    return load(arch, pretrained=weights, in_chans=int(images.shape[-1]),
                input_shape=tuple(images.shape[1:-1]), **kwargs)


def frozen_scores(
    arch: str, weights, train, test, fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), k: int = 5
) -> dict:
    """{"linear": {fraction: [acc per seed]}, "knn": ...} on frozen ``weights`` (None: random)."""
    (x, y), (tx, ty) = train, test
    out = {"linear": {}, "knn": {}}
    feats, test_feats = {}, None
    for seed in seeds:  # a random-init encoder differs per seed; a pretrained one does not
        key = seed if weights is None else 0
        if key not in feats:
            import keras

            keras.utils.set_random_seed(seed)
            enc = _load(arch, weights, x, num_classes=0, pooling="avg")
            feats[key] = (encoder_features(enc, x), encoder_features(enc, tx))
        f, test_feats = feats[key]
        for frac in fractions:
            idx = label_subset(y, frac, seed)
            out["linear"].setdefault(frac, []).append(linear_probe(f[idx], y[idx], test_feats, ty))
            out["knn"].setdefault(frac, []).append(knn_accuracy(f[idx], y[idx], test_feats, ty, k))
    return out


def finetune_scores(arch: str, weights, train, test, fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2),
                    epochs: int = 10, learning_rate: float = 1e-3, batch_size: int = 16,
                    min_steps: int = 30) -> dict:
    """{fraction: [test accuracy per seed]} after fine-tuning the whole network with a fresh head.

    Small label sets get more epochs (at least ``min_steps`` optimizer steps), so 1% is not
    undertrained.
    """
    import keras

    from zoo.train.batches import Batches
    from zoo.train.engine import Engine
    from zoo.train.tasks import Classification

    (x, y), (tx, ty) = train, test
    n_cls = int(y.max()) + 1
    out = {}
    for frac in fractions:
        for seed in seeds:
            idx = label_subset(y, frac, seed)
            keras.utils.set_random_seed(seed)
            model = _load(arch, weights, x, num_classes=n_cls)
            steps = max(1, -(-len(idx) // batch_size))
            n_epochs = max(epochs, -(-min_steps // steps))
            engine = Engine(Classification(model), keras.optimizers.Adam(learning_rate))
            engine.fit(Batches(x[idx], y[idx], batch_size, seed=seed), n_epochs)
            pred = model.predict(tx, batch_size=256, verbose=0).argmax(-1)
            out.setdefault(frac, []).append(float(np.mean(pred == ty)))
    return out


def summarize(scores: dict) -> dict:
    """{fraction: (mean, std)} of a {fraction: [per seed]} mapping."""
    if not scores:
        raise DataError("no scores to summarise.")
    return {f: (float(np.mean(v)), float(np.std(v))) for f, v in scores.items()}
