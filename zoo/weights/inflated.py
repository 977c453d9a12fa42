"""A 3D network whose weights are a 2D Keras file, inflated (Carreira & Zisserman's I3D).

The 2D file (a legacy ``.h5``, read by Keras' own legacy rule, or a Keras 3 ``.weights.h5``
such as the zoo's own checkpoints) is read into the 2D network the card names
(``inflate_from``), without a classifier top, then every layer of the 3D network takes the
same-named 2D layer's weights: a k x k kernel becomes k x k x k, repeated along depth and
divided by k.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import CardError
from zoo.weights import register_format
from zoo.weights.base import FileFacts, WeightsFormat
from zoo.weights.keras_h5 import legacy_first_chans, load_with_keras, sniff


def inflate_kernel(w: np.ndarray) -> np.ndarray:
    """(kh, kw, cin, cout) -> (kh, kh, kw, cin, cout) / kh; other arrays unchanged."""
    if w.ndim == 4:
        w = np.repeat(w[None], w.shape[0], axis=0) / np.float32(w.shape[0])
    return w.astype("float32")


def inflate_weights(two_d, three_d) -> None:
    """Copy ``two_d``'s weights into the same-named layers of ``three_d``, inflating kernels."""
    for layer in three_d.layers:
        if layer.weights:
            layer.set_weights(
                [inflate_kernel(w) for w in two_d.get_layer(layer.name).get_weights()]
            )


@register_format("inflated-2d")
class Inflated2D(WeightsFormat):
    """A 2D Keras file for a 3D network; the card's ``inflate_from`` names the 2D architecture."""

    converted = True

    def inspect(self, path):
        return FileFacts(self.name, in_chans=legacy_first_chans(path))

    def load_into(self, model, path, card=None, *, build=None):
        if card is None or not card.inflate_from:
            raise CardError(
                f"{path}: an inflated-2d checkpoint needs a card naming its 2D architecture "
                '(inflate_from = "resnet50", say); load it through its card.'
            )
        two_d = build(card.inflate_from, card.in_chans)  # the file's own channels
        load_with_keras(two_d, path, sniff(path))  # a file's classifier top is not read
        inflate_weights(two_d, model)
