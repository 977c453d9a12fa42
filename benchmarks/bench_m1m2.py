"""Semi-supervised VAEs on scikit-learn's digits, and VAE samples' Frechet distance on phantoms.

Run: `python benchmarks/bench_m1m2.py` (`--quick`: one seed, a few epochs, docs not written).

(a) `load_digits` (1,797 8x8 images, 0..16): per seed, 497 test images, a pool of 1,300 whose
100 labelled images are 10 per class (the rest of the pool unlabelled, the labelled ones too).
KNN (k=3) on pixels; M1 + KNN (a conv VAE, zoo.generative.vae.fit_vae, trained on the pool,
KNN on its latent means); M1 + MLP (a 1-hidden-layer classifier on the frozen M1 means, labelled
cross-entropy only: the "supervised" method); M1 + M2 (the same classifier with M2 on the M1
means, zoo.semi method "m1m2"). The tutorials' ordering (Kingma et al. 2014 on SVHN: KNN <
M1 + KNN < M1 + M2) is checked in kind, a step counting only where it exceeds the spread.

(b) A VAE on 32x32 phantoms (zoo.demo.ssl.PHANTOMS): Frechet distance on the shipped
`simple_cnn.ssl_simclr` encoder's pooled features (not FID: no InceptionV3) of 500 VAE samples,
500 reconstructions and a pixel-wise Gaussian noise baseline (each pixel's mean and std of the
real images) against 500 fresh real phantoms; real vs real (another 500) is the floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# M1's KL weight: 0.01, the best of 1, 0.1, 0.01 on seeds 10-12 (M1 + KNN 0.846 / 0.874 / 0.887,
# M1 + M2 0.890 / 0.928 / 0.940; KNN on pixels 0.882): beta 1 blurs the digits' latent
FULL = {"m1_epochs": 60, "m2_epochs": 40, "vae_epochs": 20, "phantoms": 1024, "seeds": (0, 1, 2),
        "m1_beta": 0.01}
QUICK = {"m1_epochs": 2, "m2_epochs": 1, "vae_epochs": 1, "phantoms": 128, "seeds": (0,),
         "m1_beta": 1.0}


def digits_split(seed: int, labels_per_class: int = 10, n_test: int = 497):
    """(labelled x, y), pool images, (test x, y) of load_digits as (N, 8, 8, 1) float32."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype(np.float32)[..., None], d.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    test, pool = order[:n_test], order[n_test:]
    chosen = np.concatenate([pool[y[pool] == k][:labels_per_class] for k in range(10)])
    return (x[chosen], y[chosen]), x[pool], (x[test], y[test])


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 3) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    return float(KNeighborsClassifier(k).fit(flat(train_x), train_y).score(flat(test_x), test_y))


def m1_classifier(vae, seed: int):
    """Images -> frozen M1 means -> Dense(128, relu) -> softmax over 10 digits."""
    import keras

    from zoo.models.vae import mean_encoder

    keras.utils.set_random_seed(seed)
    encoder = mean_encoder(vae)
    encoder.trainable = False
    x = keras.Input(shape=encoder.inputs[0].shape[1:], name="image")
    h = keras.layers.Dense(128, activation="relu", name="cls_hidden")(encoder(x))
    return keras.Model(x, keras.layers.Dense(10, activation="softmax", name="head_fc")(h))


def semi_accuracy(method, vae, labelled, pool, test, seed, epochs, **options) -> float:
    import keras
    import numpy as np

    from zoo.semi.data import SemiStream
    from zoo.semi.methods import METHODS
    from zoo.train.engine import Engine

    model = m1_classifier(vae, seed)
    task = METHODS[method].task(model, num_classes=10, unlabelled_weight=1.0, seed=seed, **options)
    stream = SemiStream(labelled, pool, batch_size=32, unlabelled_batch_size=64, seed=seed)
    Engine(task, keras.optimizers.Adam(1e-3)).fit(stream, epochs)
    probs = task.classifier.predict(test[0], batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probs, 1) == test[1]))


def bench_digits(cfg) -> dict:
    from zoo.generative.vae import fit_vae
    from zoo.semi.vae_m1m2 import m1_features

    scores = {"KNN on pixels": [], "M1 + KNN": [], "M1 + MLP (supervised)": [], "M1 + M2": []}
    for seed in cfg["seeds"]:
        labelled, pool, test = digits_split(seed)
        scores["KNN on pixels"].append(knn_accuracy(*labelled, *test))
        vae = fit_vae(pool, latent_dim=16, filters=(32, 64), value_range=(0, 16),
                      epochs=cfg["m1_epochs"], batch_size=64, seed=seed,
                      beta=cfg["m1_beta"]).model
        f_lab, f_test = m1_features(vae, labelled[0]), m1_features(vae, test[0])
        scores["M1 + KNN"].append(knn_accuracy(f_lab, labelled[1], f_test, test[1]))
        scores["M1 + MLP (supervised)"].append(
            semi_accuracy("supervised", vae, labelled, pool, test, seed, cfg["m2_epochs"]))
        scores["M1 + M2"].append(
            semi_accuracy("m1m2", vae, labelled, pool, test, seed, cfg["m2_epochs"], m1=vae,
                          latent_dim=8, hidden=(128,)))
        print(f"digits seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()),
              flush=True)
    return scores


def simclr_features(images):
    import numpy as np

    import zoo

    encoder = zoo.load("simple_cnn.ssl_simclr", input_shape=(32, 32, 1), num_classes=0,
                       pooling="avg")
    return np.asarray(encoder.predict(images, batch_size=256, verbose=0), np.float64)


def bench_frechet(cfg) -> dict:
    import numpy as np

    from zoo.data.synthetic import make_phantoms
    from zoo.demo.ssl import PHANTOMS
    from zoo.generative.vae import fit_vae
    from zoo.metrics.image import frechet_distance
    from zoo.models.vae import generator

    real = make_phantoms(500, seed=31, **PHANTOMS).images
    other = make_phantoms(500, seed=32, **PHANTOMS).images
    f_real = simclr_features(real)
    rows = {"real vs real (floor)": [], "VAE reconstructions": [], "VAE samples": [],
            "pixel-wise Gaussian noise": []}
    for seed in cfg["seeds"]:
        train = make_phantoms(cfg["phantoms"], seed=40 + seed, **PHANTOMS).images
        vae = fit_vae(train, latent_dim=32, filters=(32, 64), value_range=(0, 255),
                      epochs=cfg["vae_epochs"], batch_size=64, seed=seed).model
        z = np.random.default_rng(seed).standard_normal((500, 32)).astype(np.float32)
        samples = generator(vae).predict(z, batch_size=256, verbose=0)
        recon = vae.predict(other, batch_size=256, verbose=0)
        rng = np.random.default_rng(100 + seed)
        noise = np.clip(train.mean(0) + train.std(0) * rng.standard_normal((500, *train.shape[1:])),
                        0, 255).astype(np.float32)
        for name, images in (("real vs real (floor)", other), ("VAE reconstructions", recon),
                             ("VAE samples", samples), ("pixel-wise Gaussian noise", noise)):
            rows[name].append(frechet_distance(simclr_features(images), f_real))
        print(f"frechet seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()),
              flush=True)
    return rows


def _ms(values) -> tuple[float, float]:
    import numpy as np

    return float(np.mean(values)), float(np.std(values))


def compare(scores, a: str, b: str) -> str:
    """``a < b``: holds (beyond the larger spread), within the spread, or reversed."""
    (ma, sa), (mb, sb) = _ms(scores[a]), _ms(scores[b])
    if mb - ma > max(sa, sb):
        verdict = "holds"
    elif abs(mb - ma) <= max(sa, sb):
        verdict = "within the spread"
    else:
        verdict = "reversed"
    return f"{a} < {b}: {verdict} ({ma:.3f} -> {mb:.3f}, larger std {max(sa, sb):.3f})"


def ordering(scores) -> str:
    """Whether KNN < M1 + KNN < M1 + M2 holds, each step beyond the larger spread."""
    chain = ["KNN on pixels", "M1 + KNN", "M1 + M2"]
    return "; ".join(compare(scores, a, b) for a, b in zip(chain, chain[1:], strict=False))


def report(digits, frechet, cfg, seconds) -> str:
    import tensorflow as tf

    from zoo.train.precision import cpu_flags

    flags = [f for f in FLAGS if f in cpu_flags()]
    lines = [f"| {k} | {m:.3f} ± {s:.3f} |" for k, (m, s) in
             ((k, _ms(v)) for k, v in digits.items())]
    fd = [f"| {k} | {m:.2f} ± {s:.2f} |" for k, (m, s) in ((k, _ms(v)) for k, v in frechet.items())]
    return (
        f"CPU flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; {os.cpu_count()} logical "
        f"CPUs; TensorFlow {tf.__version__}; seeds {list(cfg['seeds'])}; {seconds / 60:.1f} min "
        "wall on a machine shared with other jobs.\n\n"
        "### (a) load_digits, 100 labels (10 per class), 497 test images\n\n"
        f"M1: conv VAE (latent 16, filters 32/64, {cfg['m1_epochs']} epochs on the 1,300-image "
        f"pool, Bernoulli likelihood on pixels / 16, KL weight beta {cfg['m1_beta']:g}: the best of "
        "1, 0.1, 0.01 on seeds 10-12 for M1 + KNN and M1 + M2, `--digits-only --seeds 10,11,12 "
        "--beta B`). M1 + MLP and M1 + M2: Dense(128) + softmax on "
        f"the frozen M1 means, Adam 1e-3, {cfg['m2_epochs']} passes over the pool (labelled batch "
        "32, unlabelled 64); M2: latent 8, hidden 128, alpha = 16 (M1's latent size), "
        "unlabelled weight 1. Accuracy mean ± std over seeds (test split, labelled draw, "
        "initialisation).\n\n| method | accuracy |\n|---|---|\n" + "\n".join(lines)
        + f"\n\nTutorials' ordering in kind: {ordering(digits)}. The unlabelled images through "
        f"M2, same classifier: {compare(digits, 'M1 + MLP (supervised)', 'M1 + M2')}. (Kingma et al.'s SVHN numbers "
        "are 22.07% / 34.37% / 63.98% with 1,000 labels; digits are far easier, so only the "
        "order is comparable.)\n\n"
        "### (b) VAE samples on 32x32 phantoms: Frechet distance on simple_cnn.ssl_simclr "
        "features\n\n"
        f"VAE: latent 32, filters 32/64, {cfg['vae_epochs']} epochs on {cfg['phantoms']} phantoms; "
        "500 images per row against 500 real phantoms; lower is closer; mean ± std over "
        "seeds.\n\n| images | Frechet distance |\n|---|---|\n" + "\n".join(fd) + "\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="one seed, 1-2 epochs: a check of every path; docs not written")
    parser.add_argument("--seeds", help="comma-separated seeds (choose settings on 10,11,12, "
                        "report on 0,1,2, the default)")
    parser.add_argument("--beta", type=float, help="M1's KL weight (default 1: the VAE)")
    parser.add_argument("--digits-only", action="store_true",
                        help="(a) only, printed, docs not written: for choosing settings")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds:
        cfg["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.beta is not None:
        cfg["m1_beta"] = args.beta
    start = time.time()
    digits = bench_digits(cfg)
    if args.digits_only:
        print(f"beta {cfg['m1_beta']:g}, seeds {cfg['seeds']}: " + ", ".join(
            f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in ((k, _ms(v)) for k, v in digits.items())))
        return 0
    frechet = bench_frechet(cfg)
    body = report(digits, frechet, cfg, time.time() - start)
    print(body)
    if args.quick:
        print("--quick: docs/benchmarks.md is not written.")
        return 0
    from benchmarks._report import write_section

    print(f"wrote {write_section('bench_m1m2', 'Semi-supervised VAEs (M1, M2) and VAE samples', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
