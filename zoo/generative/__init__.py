"""Generative models trained on the zoo's engine (GANs, image translation, VAEs)."""
