"""GANs on the synthetic phantoms: pix2pix and CycleGAN MR -> CT (MAE in HU), DCGAN (Frechet).

Run: `python benchmarks/bench_generative.py` (`--quick`: one seed, a few steps, no report).
pix2pix learns MR -> CT on paired 32 x 32 phantoms (zoo.data.modalities); CycleGAN on the unpaired
version (the CT images show other phantoms). Both are scored on held-out MR images by the MAE in HU
against the known mapping of their noise-free phantoms (``truth``), against baselines: identity
(the MR range mapped linearly onto the CT range, what an untrained translator starts from), a
per-pixel linear regression fitted on the paired training images, and (unpaired) histogram
matching of MR to the CT images' distribution. DCGAN: the Frechet distance of the
simple_cnn.ssl_simclr encoder's pooled features (not the FID) between held-out real phantoms and
generated ones, against uniform noise images and a second real set (the floor). Mean +- std over
seeds; the VAE rows and the domain-adaptation section come from their own benchmarks.
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

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
FULL = {"seeds": 3, "n_train": 384, "n_test": 256, "pix2pix_epochs": 12, "cyclegan_epochs": 6,
        "dcgan_n": 768, "dcgan_epochs": 20, "dcgan_samples": 512}
LR = 1e-3  # Adam, beta_1 0.5: the runs are short (a few hundred steps)
QUICK = {"seeds": 1, "n_train": 32, "n_test": 16, "pix2pix_epochs": 1, "cyclegan_epochs": 1,
         "dcgan_n": 64, "dcgan_epochs": 1, "dcgan_samples": 32}


def linear_baseline(mr_train, ct_train, mr_test):
    """Least-squares CT = a * MR + b per pixel, fitted on the paired training images."""
    a, b = np.polyfit(mr_train.ravel(), ct_train.ravel(), 1)
    return a * mr_test + b


def histogram_match(mr_test, ct_train):
    """Each MR value -> the CT value at the same quantile (monotone; needs no pairs)."""
    ranks = np.argsort(np.argsort(mr_test.ravel())) / max(mr_test.size - 1, 1)
    return np.quantile(ct_train.ravel(), ranks).reshape(mr_test.shape)


def translation(cfg, seed):
    from zoo.data.modalities import CT_RANGE, MR_RANGE, make_modalities
    from zoo.generative.base import from_unit, to_unit
    from zoo.generative.cyclegan import train_cyclegan
    from zoo.generative.pix2pix import train_pix2pix, translate
    from zoo.metrics.image import mae

    paired = make_modalities(cfg["n_train"], seed=seed)
    unpaired = make_modalities(cfg["n_train"], seed=seed + 100, paired=False)
    test = make_modalities(cfg["n_test"], seed=10_000 + seed)
    rows = {"identity (MR range -> CT range)":
            mae(from_unit(to_unit(test.mr, MR_RANGE), CT_RANGE), test.truth),
            "linear regression (paired)": mae(linear_baseline(paired.mr, paired.ct, test.mr),
                                              test.truth),
            "histogram matching (unpaired)": mae(histogram_match(test.mr, unpaired.ct),
                                                 test.truth)}
    t = time.time()
    p2p = train_pix2pix(paired, source_range=MR_RANGE, target_range=CT_RANGE,
                        epochs=cfg["pix2pix_epochs"], batch_size=16, seed=seed, depth=3,
                        base_filters=16, disc_filters=16, learning_rate=LR)
    rows["pix2pix (paired)"] = mae(translate(p2p.models["generator"], test.mr,
                                             source_range=MR_RANGE, target_range=CT_RANGE),
                                   test.truth)
    rows["_pix2pix_s"] = time.time() - t
    t = time.time()
    cyc = train_cyclegan(unpaired.mr, unpaired.ct, range_a=MR_RANGE, range_b=CT_RANGE,
                         epochs=cfg["cyclegan_epochs"], batch_size=8, seed=seed, base_filters=16,
                         n_blocks=3, disc_filters=16, learning_rate=LR)
    rows["CycleGAN (unpaired)"] = mae(translate(cyc.models["g_ab"], test.mr, source_range=MR_RANGE,
                                                target_range=CT_RANGE), test.truth)
    rows["_cyclegan_s"] = time.time() - t
    return rows


def generation(cfg, seed):
    from zoo.data.synthetic import make_phantoms
    from zoo.generative.dcgan import sample, train_dcgan
    from zoo.generative.quality import features
    from zoo.metrics.image import frechet_distance

    train = make_phantoms(cfg["dcgan_n"], size=32, seed=seed).images
    real = make_phantoms(cfg["dcgan_samples"], size=32, seed=20_000 + seed).images
    other = make_phantoms(cfg["dcgan_samples"], size=32, seed=30_000 + seed).images
    t = time.time()
    r = train_dcgan(train, epochs=cfg["dcgan_epochs"], batch_size=32, seed=seed, depth=3,
                    base_filters=32, latent_dim=64)
    seconds = time.time() - t
    fake = np.clip(sample(r.models["generator"], cfg["dcgan_samples"], seed=seed,
                          value_range=(0.0, 255.0)), 0, 255)
    noise = np.random.default_rng(seed).uniform(0, 255, real.shape).astype(np.float32)
    f_real = features(real)
    return {"DCGAN samples": frechet_distance(f_real, features(fake)),
            "uniform noise": frechet_distance(f_real, features(noise)),
            "second real set (floor)": frechet_distance(f_real, features(other)),
            "_dcgan_s": seconds}


def summary(runs: list[dict]) -> dict:
    return {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
            for k in runs[0]}


def table(stats: dict, unit: str, best_of: list[str], ours: list[str], lower=True) -> str:
    lines = [f"| method | {unit} (mean ± std) |", "|---|---|"]
    for name, (mean, std) in stats.items():
        if name.startswith("_"):
            continue
        mark = ""
        if name in ours:
            rivals = [stats[b] for b in best_of if b != name]
            if rivals and all(mean + std < m - s if lower else mean - std > m + s
                              for m, s in rivals):
                mark = " **"
        lines.append(f"| {name}{mark} | {mean:.1f} ± {std:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, tiny sets, no report")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    t0, c0 = time.time(), time.process_time()
    trans = summary([translation(cfg, s) for s in range(cfg["seeds"])])
    print(trans, flush=True)
    gen = summary([generation(cfg, s) for s in range(cfg["seeds"])])
    print(gen, flush=True)
    baselines = ["identity (MR range -> CT range)", "linear regression (paired)",
                 "histogram matching (unpaired)"]
    from zoo.train.precision import cpu_flags

    flags = [f for f in FLAGS if f in cpu_flags()]
    body = (
        f"MR -> CT on 32 x 32 synthetic phantoms (zoo.data.modalities): {cfg['n_train']} training "
        f"images (paired for pix2pix, unpaired for CycleGAN), {cfg['n_test']} held-out MR images "
        "scored by MAE in HU against the known mapping of their noise-free phantoms. pix2pix: "
        f"U-Net depth 3 (16 filters, instance norm) + PatchGAN, L1 weight 100, {cfg['pix2pix_epochs']} epochs, "
        f"batch 16 ({trans['_pix2pix_s'][0]:.0f} s per seed). CycleGAN: ResNet generators (16 "
        f"filters, 3 blocks) + PatchGANs, LSGAN, cycle 10, identity 0.5, pool 50, "
        f"{cfg['cyclegan_epochs']} epochs, batch 8 ({trans['_cyclegan_s'][0]:.0f} s per seed). "
        f"Adam {LR:g}, beta_1 0.5; {cfg['seeds']} seeds (data and initialisation). ** = below "
        "every baseline by more than both spreads.\n\n"
        + table(trans, "MAE in HU", baselines, ["pix2pix (paired)", "CycleGAN (unpaired)"])
        + "\n\nDCGAN on 32 x 32 phantoms (" + f"{cfg['dcgan_n']} images, {cfg['dcgan_epochs']} "
        f"epochs, batch 32, latent 64, Adam 2e-4, {gen['_dcgan_s'][0]:.0f} s per seed): Frechet distance of "
        "the simple_cnn.ssl_simclr encoder's pooled features (zoo.generative.quality; not the "
        f"FID) between {cfg['dcgan_samples']} held-out real phantoms and as many generated "
        "images, uniform noise, or a second real set (the floor). ** = below the noise baseline "
        "by more than both spreads.\n\n"
        + table(gen, "Frechet distance", ["uniform noise"], ["DCGAN samples"])
        + f"\n\nCPU flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; "
        f"{os.cpu_count()} logical CPUs; CPU {(time.process_time() - c0) / 60:.1f} min, wall "
        f"{(time.time() - t0) / 60:.1f} min on a machine shared with other jobs. VAE rows and "
        "domain adaptation: their own sections.")
    print(body)
    if not args.quick:
        from benchmarks._report import write_section

        write_section("bench_generative", "Generative models: MR -> CT translation and DCGAN",
                      body)
    return {"translation": trans, "generation": gen}


if __name__ == "__main__":
    main()
