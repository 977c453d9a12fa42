"""Generative models on the zoo's engine: GANs, image-to-image translation, VAEs, image quality.

``train_pix2pix`` (paired translation, e.g. MR -> CT), ``train_cyclegan`` (unpaired),
``train_dcgan`` (+ conditional), ``train_pggan`` (progressive growing), ``fit_vae`` (VAE /
beta-VAE, 2D and 3D, with PNG grids); ``quality`` (SSIM, PSNR,
MAE/MSE in physical units, the Frechet distance on a zoo backbone's features); ``gan_features``
(a trained discriminator as a few-label encoder, generators as weight cards). Every network is a
registered zoo model (``zoo.list_models("*gan*")``), every method a two-optimizer engine Task.
Importing this package is light: TensorFlow is imported when a submodule is used.
"""

from __future__ import annotations

from zoo._lazy import submodule_access

EXPORTS = {
    "train_pix2pix": "pix2pix",
    "translate": "pix2pix",
    "train_cyclegan": "cyclegan",
    "train_dcgan": "dcgan",
    "sample": "dcgan",
    "train_pggan": "pggan",
    "fit_vae": "vae",
    "ssim": "quality",
    "psnr": "quality",
    "frechet": "quality",
    "publish_discriminator": "gan_features",
    "publish_generator": "gan_features",
}

__all__ = sorted(EXPORTS)

__getattr__, __dir__ = submodule_access(__name__, EXPORTS)
