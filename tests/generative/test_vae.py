"""VAE / beta-VAE training on the engine: the loss is the negative ELBO with its beta, the PNG
grids are written at their computed size with the tiles the model gives, and bad input fails
before anything is trained or written."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.errors import DataError, InputShapeError, InvalidArgumentError
from zoo.generative.vae import FIGURES, VAETask, fit_vae, grids
from zoo.models.vae import parts


@pytest.fixture(scope="module")
def phantoms():
    return make_phantoms(24, size=16, seed=0).images


def _grid_size(rows, cols, h, w):
    """image_grid's layout: tiles one pixel per pixel, 1-pixel gaps between them."""
    return rows * (h + 1) - 1, cols * (w + 1) - 1


def test_fit_vae_2d_writes_three_grids_of_the_computed_size(tmp_path, phantoms):
    hi = float(phantoms.max())
    result = fit_vae(phantoms, latent_dim=3, filters=(4, 8), epochs=2, batch_size=8,
                     value_range=(0.0, hi), out=tmp_path / "vae")
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["loss"])
    row = result.history[-1]
    assert row["loss"] == pytest.approx(row["reconstruction"] + row["kl"], rel=1e-4)
    rows = {"reconstructions.png": 2, "samples.png": 2, "traversals.png": 3}
    for name in FIGURES:
        assert result.figures[name] == tmp_path / "vae" / name
        assert imread(result.figures[name]).shape[:2] == _grid_size(rows[name], 8, 16, 16)
    # the first reconstruction (row 1, column 0) is the model's deterministic output, in grey
    png = imread(tmp_path / "vae" / "reconstructions.png")[..., 0]
    recon = np.asarray(result.model(phantoms[:1], training=False))[0, ..., 0] / hi
    # (8-bit PNG through a 256-entry grey colour map: within two grey levels)
    np.testing.assert_allclose(png[17:33, 0:16], np.clip(recon, 0, 1), atol=2 / 255)
    np.testing.assert_allclose(png[0:16, 0:16], np.clip(phantoms[0, ..., 0] / hi, 0, 1),
                               atol=2 / 255)
    assert np.all(png[16, :] == 1.0)  # the white gap between the rows


def test_traversals_vary_one_latent_axis_per_row_and_3d_shows_middle_slices():
    volumes = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 8, 1)).astype("float32")
    model = zoo.load("vae3d", input_shape=(8, 8, 8, 1), latent_dim=2, filters=(4,),
                     value_range=(0, 1))
    g = grids(model, volumes, n=5)
    assert g["reconstructions"].shape == (2, 4, 8, 8, 1)
    assert g["traversals"].shape == (2, 5, 8, 8, 1)
    full = np.asarray(model(volumes, training=False))
    np.testing.assert_array_equal(g["reconstructions"][1], full[:, 4])


@pytest.mark.parametrize("beta", [0.0, 4.0])
def test_the_step_loss_is_nll_plus_beta_kl(beta, phantoms):
    model = zoo.load("vae", input_shape=(16, 16, 1), latent_dim=2, filters=(4,),
                     value_range=(0, 255))
    x = np.clip(phantoms[:4], 0, 255)
    out = VAETask(model, beta).step((x, np.zeros(4), np.ones(4, "float32")), training=False)
    nll, kl = (np.asarray(t) for t in parts(model).terms(x, training=False))
    np.testing.assert_allclose(out.losses["main"], nll + beta * kl, rtol=1e-5)
    assert float(out.metrics["kl"][0]) == pytest.approx(kl.sum(), rel=1e-5)


@pytest.mark.parametrize("images, options, error, words", [
    (np.full((4, 16, 16), np.nan), {}, DataError, "NaN"),
    (np.zeros((1, 16, 16)), {}, DataError, "at least 2 images"),
    (np.zeros((4, 16)), {}, DataError, "at least 2 images"),
    (np.full((4, 16, 16), 300.0), {"value_range": (0, 255)}, DataError, "outside value_range"),
    (np.zeros((4, 16, 16)), {"value_range": None}, InvalidArgumentError, "give value_range"),
    (np.zeros((4, 16, 16)), {"beta": -1.0}, InvalidArgumentError, "beta=-1.0"),
    (np.zeros((4, 16, 16)), {"latent_dim": 0}, InvalidArgumentError, "latent_dim=0"),
    (np.zeros((4, 16, 16)), {"epochs": 0}, InvalidArgumentError, "epochs=0"),
    (np.zeros((4, 12, 12)), {"filters": (4, 4, 4)}, InputShapeError, "multiples of 8"),
])
def test_bad_input_fails_before_training_or_writing(tmp_path, images, options, error, words):
    options = {"value_range": (0, 255), **options}
    with pytest.raises(error, match=words):
        fit_vae(images, out=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()

