"""Semi-supervised methods against supervised-only training and the SSL-pretrain-then-fine-tune path.

Run: `flock /work/heavy.lock python benchmarks/bench_semi.py` (`--quick`: one seed, tiny budgets,
nothing written to docs; `--seeds 10,11,12 --no-docs`: choosing settings on other seeds than the
reported ones; `--methods supervised,fixmatch`: those rows only; `--moving-bn`: zoo.semi.fit's
recompute_bn=False). Three data sets, each method x 3 seeds (label draw, initialisation,
augmentation draws), test accuracy mean +- std:

- phantoms (zoo.demo.ssl.PHANTOMS, 32 x 32, lesion present/absent): 1% (6) and 10% (60) labels of a
  600-image pool whose images are all the unlabelled set; 500 fresh test phantoms; simple_cnn.
- sklearn's load_digits (1,797 8x8 images, upsampled x4 to 32 x 32 grey values in [0, 255]): 100
  labels of a 1,297-image pool, 600 of whose images (the labelled ones among them) are the
  unlabelled set, 500 held-out test digits; simple_cnn.
- make_clusters (zoo.data.synthetic, 16 x 16, a class = the shifted and mirrored copies of one
  pattern) and make_gap_clusters (16 x 16, a class = a Gaussian blob around one smooth pattern,
  the classes a low-density gap apart along the highest-variance direction, 32 nuisance patterns
  and white noise on top): 2 labels per class, 320 unlabelled, 400 test; a tiny dense network
  (256-32-2), with a 3x3 stride-2 conv layer (16 maps) first for reconstruction and hybridnet,
  which decode a spatial feature map, compared with "supervised, conv net" (the same net); every
  method of zoo.semi (the issue's "beats supervised by > 2 std" check; sdnet segments). m1m2's M1
  is a conv VAE (zoo.generative.vae.fit_vae, latent 16, 40 passes, beta 0.001) trained on the 320
  pool images per seed, not counted in its seconds: with beta 1 its Bernoulli bound on these
  mid-grey images let the KL win (0 active latent units on gap clusters, M1 + M2 0.59 < supervised
  0.77); beta 0.001 (a fixed-variance Gaussian of about 4 grey levels) was the best of 1, 0.1,
  0.01, 0.001 on seeds 10-12 of gap clusters. m1 and m2 read the grey values as [0, 255] with
  their default Gaussian likelihood and alpha; m1 is zoo.semi's joint M1 (the classifier's trunk
  is the VAE's encoder; KL weight 0.01, the best of 1, 0.1, 0.01 on gap clusters' seeds 10-12).
  "m1 + knn" is Kingma et al.'s M1 + a classifier: 1-nearest-neighbour on the means of m1m2's M1
  VAE (its seconds include that VAE), against "knn on pixels", the same 1-NN on the pixels.

Every method gets the same labelled stream and the same number of steps as "supervised" (zoo.semi's
baseline). The SSL path is the same supervised run started from the shipped `simple_cnn.ssl_simclr`
backbone (fine-tuning the whole network on the same labels and steps); zoo.finetune's two-stage
recipe holds out 20% of the labels for validation, which 10 labels cannot spare.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma")
# M1 + M2 needs a trained M1 VAE (m1=): benchmarks/bench_m1m2.py runs it on the same settings
METHODS = ("supervised", "mean_teacher", "fixmatch", "fixmatch + align", "pseudo_label")
OPTIONS = {"mean_teacher": {"ramp_up": 40}, "fixmatch": {"tau": 0.95},
           "pseudo_label": {"reinit": False, "step": 1 / 3}}
UNLABELLED = 0  # unlabelled images: the first ones of the pool (0: all of it)
RECOMPUTE_BN = True  # zoo.semi.fit's closing BatchNorm pass (--moving-bn: off)
EPOCHS = 4
CONV_BASELINE = "supervised, conv net"
LADDER_VIEWS = "ladder, augment=True, lambdas 0, 0, 1"
FIXMATCH_ALIGN = "fixmatch + align"
KNN_PIXELS = "knn on pixels"
M1_KNN = "m1 + knn (Kingma's M1)"
CLUSTER_METHODS = ("supervised", "pi_model", "temporal_ensembling", "mean_teacher", "fixmatch",
                   "pseudo_label", "ladder", LADDER_VIEWS, "m1", "m2", "m1m2", KNN_PIXELS, M1_KNN,
                   CONV_BASELINE, "reconstruction", "hybridnet")
# rows that are a method with options of their own: row name -> (method, options)
VARIANTS = {CONV_BASELINE: ("supervised", {}), FIXMATCH_ALIGN: ("fixmatch", {"align": True}),
            LADDER_VIEWS: ("ladder", {"augment": True, "layer_weights": (0.0, 0.0, 1.0)})}
# the reconstruction methods decode a spatial feature map: on clusters they train a conv net,
# against supervised training of that same net
CONV_METHODS = (CONV_BASELINE, "reconstruction", "hybridnet")
M1_BETA = 0.001  # m1m2's M1 on the cluster toys (module docstring: chosen on seeds 10-12)
M1_JOINT_BETA = 0.01  # m1's KL weight on the cluster toys: of 1, 0.1, 0.01 on gap clusters' seeds 10-12


def digits():
    """load_digits as 32 x 32 grey values in [0, 255]: (pool, labels), (test, labels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.kron(d.images, np.ones((4, 4)))[..., None] * (255.0 / 16.0)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order].astype(np.float32), d.target[order].astype(np.int32)
    return (images[500:], labels[500:]), (images[:500], labels[:500])


def phantoms():
    from zoo.data.synthetic import make_phantoms
    from zoo.demo.ssl import PHANTOMS

    pool, test = make_phantoms(600, seed=21, **PHANTOMS), make_phantoms(500, seed=22, **PHANTOMS)
    return (pool.images, pool.labels), (test.images, test.labels)


def cluster_m1(images, seed):
    """The cluster toys' M1: a conv VAE trained on the pool ``images`` (beta ``M1_BETA``)."""
    from zoo.generative.vae import fit_vae

    return fit_vae(images, latent_dim=16, filters=(32, 64), value_range=(0.0, 255.0), epochs=40,
                   batch_size=32, seed=seed, beta=M1_BETA).model


def knn_run(method, pool, test, idx, seed):
    """Test accuracy and seconds of a 1-nearest-neighbour classifier on the labelled images'
    pixels, or on their M1 features (Kingma et al.'s M1: the VAE trained on the whole pool)."""
    from sklearn.neighbors import KNeighborsClassifier

    from zoo.semi.vae_m1m2 import m1_features

    (x, y), (tx, ty) = pool, test
    t0 = time.time()
    if method == M1_KNN:
        vae = cluster_m1(x, seed)
        x, tx = m1_features(vae, x), m1_features(vae, tx)
    knn = KNeighborsClassifier(1).fit(x[idx].reshape(len(idx), -1), y[idx])
    return float(np.mean(knn.predict(tx.reshape(len(tx), -1)) == ty)), time.time() - t0


def run(method, model, pool, test, idx, seed, epochs, ubatch, lr=1e-3, options=None):
    """Test accuracy and seconds of one run of ``method`` (None when it is not registered)."""
    import zoo.semi

    if method in (KNN_PIXELS, M1_KNN):
        return knn_run(method, pool, test, idx, seed)

    method, extra = VARIANTS.get(method, (method, {}))
    options = {**extra, **(options or {})}
    if method not in zoo.semi.METHODS:
        return None
    (x, y), (tx, ty) = pool, test
    unlabelled = x[: max(UNLABELLED, 0)] if UNLABELLED else x
    t0 = time.time()
    result = zoo.semi.fit(method, model, (x[idx], y[idx]), unlabelled,
                          num_classes=int(y.max()) + 1,
                          epochs=epochs, batch_size=min(16, len(idx)),
                          unlabelled_batch_size=ubatch, learning_rate=lr, seed=seed,
                          recompute_bn=RECOMPUTE_BN, **(options or {}))
    pred = result.classifier.predict(tx, batch_size=256, verbose=0).argmax(-1)
    return float(np.mean(pred == ty)), time.time() - t0


def draw(labels, count, seed):
    """``count`` stratified labelled indices (at least one per class), among the unlabelled
    images (the labelled images are in the unlabelled pool too, as in every SSL benchmark)."""
    rng = np.random.default_rng(1000 + seed)
    labels = labels[:UNLABELLED] if UNLABELLED else labels
    classes = np.unique(labels)
    per = max(1, count // len(classes))
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False)
                                   for c in classes]))


def cluster_model(seed, method=None):
    """The dense network of the clusters setting; a conv layer first for ``CONV_METHODS``."""
    import keras

    keras.utils.set_random_seed(seed)
    conv = ([keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")]
            if method in CONV_METHODS else [])
    return keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
                             *conv, keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(2, activation="softmax")])


def cluster_options(method, images, seed) -> dict:
    """Clusters: the consistency ramp-up over 40 of the 120 steps; the pixel range for m1 and m2;
    M1 + M2: a conv VAE trained on the pool ``images`` as M1; every other option default."""
    if method in ("pi_model", "temporal_ensembling", "mean_teacher"):
        return {"ramp_up": 40}
    if method == "m1":
        return {"value_range": (0.0, 255.0), "beta": M1_JOINT_BETA}
    if method == "m2":
        return {"value_range": (0.0, 255.0)}
    if method == "m1m2":
        return {"m1": cluster_m1(images, seed), "latent_dim": 8, "hidden": (128,)}
    return {}


def setting_rows(name, pool, test, count, seeds, epochs, methods, model_fn, ubatch, lr):
    """{row name: [accuracy per seed]} and seconds for one data setting."""
    scores, seconds = {}, {}
    for method in methods:
        for seed in seeds:
            idx = draw(pool[1], count, seed)
            options = (cluster_options(method, pool[0], seed) if "clusters" in name
                       else OPTIONS.get(method))
            got = run(method, model_fn(seed, method), pool, test, idx, seed, epochs, ubatch, lr,
                      options)
            if got is None:
                break
            scores.setdefault(method, []).append(got[0])
            seconds[method] = seconds.get(method, 0.0) + got[1]
            print(f"{name} {method} seed {seed}: {got[0]:.3f} ({got[1]:.0f} s)", flush=True)
    if model_fn("ssl", None) is not None:
        for seed in seeds:
            idx = draw(pool[1], count, seed)
            got = run("supervised", "simple_cnn.ssl_simclr", pool, test, idx, seed, epochs,
                      ubatch, lr)
            scores.setdefault("SSL simclr + fine-tune", []).append(got[0])
            seconds["SSL simclr + fine-tune"] = seconds.get("SSL simclr + fine-tune", 0) + got[1]
            print(f"{name} ssl seed {seed}: {got[0]:.3f}", flush=True)
    return scores, seconds


def verdict(scores: dict) -> dict:
    """Per row: mean, std, and whether it beats its supervised baseline (the same network) by
    more than 2 pooled stds."""
    out = {}
    for name, values in scores.items():
        base_name = CONV_BASELINE if name in CONV_METHODS[1:] else "supervised"
        base = np.array(scores.get(base_name, [np.nan, np.nan]))
        v = np.array(values)
        pooled = np.sqrt((v.var(ddof=1) + base.var(ddof=1)) / 2) if len(v) > 1 else np.nan
        out[name] = (v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0,
                     name not in ("supervised", CONV_BASELINE)
                     and v.mean() - base.mean() > 2 * pooled)
    return out


def table(settings: dict) -> str:
    names = []
    for scores, _ in settings.values():
        names += [n for n in scores if n not in names]
    head = "| method | " + " | ".join(settings) + " |\n|---|" + "---|" * len(settings)
    rows = []
    for name in names:
        cells = []
        for scores, seconds in settings.values():
            if name not in scores:
                cells.append("–")
                continue
            mean, std, win = verdict(scores)[name]
            cells.append(f"{mean:.3f} ± {std:.3f}{' **' if win else ''} "
                         f"({seconds[name] / len(scores[name]):.0f} s)")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one seed, tiny budgets, no docs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", choices=("phantoms", "digits", "clusters"),
                        help="one data setting (its rows only, written to docs all the same)")
    parser.add_argument("--methods", help="comma-separated rows to run (default: every row)")
    parser.add_argument("--moving-bn", action="store_true",
                        help="keep the moving BatchNorm statistics (zoo.semi.fit recompute_bn=False)")
    parser.add_argument("--no-docs", action="store_true",
                        help="print the table only (e.g. choosing settings on other seeds)")
    args = parser.parse_args(argv)
    global UNLABELLED, RECOMPUTE_BN
    RECOMPUTE_BN = not args.moving_bn
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    epochs = 1 if args.quick else EPOCHS
    os.environ.setdefault("ZOO_HOME", str(Path(__file__).resolve().parents[1] / ".zoo_bench"))

    from zoo.data.synthetic import make_clusters, make_gap_clusters

    wanted = set(args.methods.split(",")) if args.methods else None

    def rows(methods):
        return [m for m in methods if wanted is None or m in wanted]

    def cnn(seed, method=None):
        return None if seed == "ssl" and wanted is not None and "ssl" not in wanted \
            else "simple_cnn"

    t0, c0 = time.time(), time.process_time()
    settings = {}
    earlier = earlier_full_run(args.only)

    def write_all():
        write(settings, seeds, t0, c0, args.quick or args.no_docs, earlier, args.only)

    pool, test = phantoms()
    for frac in (0.01, 0.1) if args.only in (None, "phantoms") else ():
        settings[f"phantoms {frac:.0%} labels"] = setting_rows(
            "phantoms", pool, test, int(frac * len(pool[1])), seeds, epochs,
            rows(METHODS[:2] if args.quick else METHODS), cnn, 32, 1e-3)
        write_all()
        if args.quick:
            break
    if not args.quick and args.only in (None, "digits"):
        dpool, dtest = digits()
        UNLABELLED = 600
        settings["digits, 100 labels"] = setting_rows(
            "digits", dpool, dtest, 100, seeds, epochs, rows(METHODS), cnn, 32, 1e-3)
        UNLABELLED = 0
        write_all()
    toys = {"clusters, 2 labels/class": make_clusters,
            "gap clusters, 2 labels/class": make_gap_clusters}
    for column, make in toys.items() if args.only in (None, "clusters") else ():
        train, ctest = make(320, seed=0), make(400, seed=100)
        settings[column] = setting_rows(
            column.split(",")[0], (train.images, train.labels), (ctest.images, ctest.labels), 4,
            seeds, 2 if args.quick else 24,
            rows(CLUSTER_METHODS[:2] if args.quick else CLUSTER_METHODS),
            lambda s, m: None if s == "ssl" else cluster_model(s, m), 64, 3e-3)
        write_all()
    return settings


def earlier_full_run(only) -> str:
    """For an ``--only`` run: the section's last full run (every setting), kept below it."""
    if not only:
        return ""
    from benchmarks._report import REPORT

    text = REPORT.read_text() if REPORT.exists() else ""
    start, end = "<!-- bench:bench_semi -->", "<!-- /bench:bench_semi -->"
    if start not in text or end not in text:
        return ""
    old = text.split(start, 1)[1].split(end, 1)[0]
    note = "Measured with the code of that date"
    old = old.split("\n### The last run of every setting\n", 1)[-1]
    # an earlier --only run's copy: keep it once (no second note, no "an earlier run of" twice)
    lines = [line.replace("_Written by an earlier run of", "_Written by")
             for line in old.strip().splitlines()
             if not line.startswith(("## Semi", note))]
    return ("\n\n### The last run of every setting\n\n"
            f"{note}: rows of a method changed since may differ "
            "(rerun without `--only`).\n\n"
            + "\n".join(lines).strip().replace("_Written by", "_Written by an earlier run of"))


def write(settings, seeds, t0, c0, quick, earlier="", only=None) -> None:
    """The section so far (rewritten after each data setting, so a cut run keeps its rows)."""
    import tensorflow as tf

    from zoo.train.precision import cpu_flags

    flags = [f for f in FLAGS if f in cpu_flags()]
    body = (
        f"CPU flags: {', '.join(flags) or 'none'}; {os.cpu_count()} logical CPUs; TensorFlow "
        f"{tf.__version__}; wall {(time.time() - t0) / 60:.1f} min, CPU "
        f"{(time.process_time() - c0) / 60:.1f} min on a machine shared with other jobs"
        + (f"; this run: `--only {only}`, the other settings' last run below" if only else "")
        + ".\n\n"
        f"Test accuracy, mean ± std over seeds {seeds} (label draw, initialisation, augmentation); "
        "(s) = seconds per run. ** = beats supervised training of the same network by more than 2 "
        "pooled standard deviations; "
        f"a gain without ** is within the spread. "
        + ("BatchNorm moving statistics recomputed at the end on the labelled + unlabelled images "
           "(zoo.semi.fit recompute_bn=True, every row, the baseline too). " if RECOMPUTE_BN else
           "BatchNorm moving statistics as training left them (--moving-bn). ")
        + f"simple_cnn, Adam 1e-3, {EPOCHS} passes over the "
        "unlabelled pool (32 unlabelled + up to 16 labelled images per step) for every row; "
        "clusters: 64 unlabelled + 4 labelled per step, a dense "
        "network, 24 passes, Adam 3e-3. Options: consistency ramp-up 40 steps; mean teacher decay "
        "and temporal ensembling alpha: the papers' horizons scaled to the run, at least one pass "
        "(zoo.semi.consistency: decay 0.947 on phantoms/digits, 0.8 and alpha 0 on clusters), the "
        "teacher's targets with the batch's BatchNorm statistics; "
        "FixMatch tau 0.95, no left-right flip (flip=False, its default), RandAugment (2 "
        "grey-scale ops) + cutout, EMA of the weights evaluated (decay 0.999 as the paper's 0.1% of the run: 0 here, "
        "the last weights); fixmatch + align: FixMatch with ReMixMatch's distribution alignment of "
        "the pseudo-labels (align=True); ladder, reconstruction and "
        "HybridNet: their defaults (ladder: the paper's lambdas 1000, 10, 0.1, noise 0.3; the "
        "ladder's augment=True row: weak views on the corrupted path and the top-level cost only "
        "(the paper's Gamma-model), chosen on make_clusters' seeds 0-2 among lambdas 1000/10/0.1, "
        "0/0/1, 1/1/1, 0/1/10; "
        "reconstruction: lambda_c = lambda_r = 1, the decoder on the head's code, L_r over the "
        "batch's pixel variance; HybridNet: "
        "stability on two weakly augmented views); pseudo-labels: 4 stages of one pass admitting 0, 1/3, 2/3, all, continuing "
        "(reinit=False: re-initialising would leave the last stage a fraction of the steps).\n\n"
        + table(settings) + "\n\n" + (__doc__.split("\n\n", 2)[2]) + earlier
    )
    print(body, flush=True)
    if not quick:
        from benchmarks._report import write_section

        write_section("bench_semi", "Semi-supervised learning: few labels + unlabelled images",
                      body)


if __name__ == "__main__":
    main()
