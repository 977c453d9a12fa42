"""Torch -> Keras conversion: torchvision-named modules with random weights give the same logits.

The torch modules (torchvision_modules.py) copy torchvision's AlexNet and GoogLeNet layer for
layer (module names included; torchvision itself is not installed). Their random state dicts are saved as
.pth files, described by cards with a sha256 prefix (as torchvision publishes), and loaded
through zoo.load, which converts them and caches the result as .weights.h5. Only the tests that
build or read real torch tensors need torch; the refusal tests run without it.
"""

from __future__ import annotations

import hashlib
import pickle
import sys

import numpy as np
import pytest
from conftest import write_card
from numerics_util import assert_deep_close, depth_of

import zoo
from zoo.errors import OptionalDependencyError, WeightsError
from zoo.weights.convert_torch import converted_path


@pytest.fixture
def torch():
    """torch itself, for the tests that make or read real tensors; they skip without it."""
    return pytest.importorskip("torch")


def save_card(module, tmp_path, zoo_env, server, arch, *, http=True, data=None):
    """A torch-state-dict card for ``module``'s state dict (or for raw ``data`` bytes)."""
    path = tmp_path / f"{arch}-test.pth"
    if data is None:
        import torch

        torch.save(module.state_dict(), path)
    else:
        path.write_bytes(data)
    data = path.read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    url = server.add(path.name, data) if http else str(path)
    write_card(zoo_env / "cards", arch, "test", url, data, format="torch-state-dict", include_top=True,
               num_classes=1000, preprocess="torch" if arch == "alexnet" else "tf", input_size=[224, 224, 3])
    card_file = zoo_env / "cards" / f"{arch}.test.toml"  # as torchvision publishes: a sha256 prefix only
    lines = [ln for ln in card_file.read_text().splitlines() if not ln.startswith(("sha256 =", "size ="))]
    card_file.write_text("\n".join([*lines, f'sha256_prefix = "{prefix}"', ""]))
    return f"{arch}.test"


def pixels(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def torch_input(x):
    import torch
    from torchvision_modules import MEAN, STD

    return torch.from_numpy(((x / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype("float32"))


@pytest.mark.slow
@pytest.mark.numerics
def test_alexnet_logits_match_torch(torch, tmp_path, zoo_env, server):
    """160x160 inputs: pool5 is 4x4, so the adaptive 6x6 pooling really resamples."""
    from torchvision_modules import AlexNet, randomise

    net = randomise(AlexNet())
    name = save_card(net, tmp_path, zoo_env, server, "alexnet", http=False)
    x = pixels(160)
    with torch.no_grad():
        expected = net(torch_input(x)).numpy()
    model = zoo.load(name, input_shape=(160, 160), classifier_activation=None)
    got = model(x, training=False).numpy()
    assert_deep_close(got, expected, depth_of("alexnet"), what="alexnet logits ")
    assert model.count_params() == sum(p.numel() for p in net.parameters()) == 61_100_840


@pytest.mark.slow
@pytest.mark.numerics
def test_googlenet_logits_match_torch_and_cache_needs_no_torch(torch, tmp_path, zoo_env, server, monkeypatch):
    from torchvision_modules import GoogLeNet, randomise

    net = randomise(GoogLeNet(aux_logits=True))
    name = save_card(net, tmp_path, zoo_env, server, "googlenet")
    x = pixels(96)
    with torch.no_grad():
        logits, aux1, aux2 = (t.numpy() for t in net(torch_input(x)))
    model = zoo.load(name, input_shape=(96, 96), classifier_activation=None)
    got = model(x, training=False).numpy()
    assert_deep_close(got, logits, depth_of("googlenet"), what="googlenet logits ")

    with_aux = zoo.load(name, input_shape=(96, 96), classifier_activation=None, aux_logits=True)
    outs = [o.numpy() for o in with_aux(x, training=False)]
    assert_deep_close(outs, [logits, aux1, aux2], depth_of("googlenet"), what="googlenet with aux ")

    card = zoo.get_card(name)
    cached = converted_path(card, model)
    assert cached.is_file() and cached.name.endswith(".weights.h5")
    monkeypatch.setitem(sys.modules, "torch", None)  # the second load reads the cache: no torch needed
    again = zoo.load(name, input_shape=(96, 96), classifier_activation=None)
    assert_deep_close(again(x, training=False).numpy(), got, depth_of("googlenet"), what="cached conversion ")

    grey = zoo.load(name, input_shape=(96, 96), in_chans=1, num_classes=3)  # fresh head on converted weights
    assert grey.output.shape == (None, 3)
    np.testing.assert_array_equal(grey.get_layer("inception5b_branch1_conv").get_weights()[0],
                                  again.get_layer("inception5b_branch1_conv").get_weights()[0])


def test_missing_torch_names_the_extra(tmp_path, zoo_env, server, monkeypatch):
    """Runs without torch: the file is verified, then converting it needs torch, named with its extra."""
    name = save_card(None, tmp_path, zoo_env, server, "googlenet", data=b"PK\x03\x04 a torch checkpoint")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OptionalDependencyError, match=r'pip install "medzoo\[torch\]"'):
        zoo.load(name, input_shape=(64, 64))


def test_checkpoint_of_another_architecture_is_rejected(torch, tmp_path, zoo_env, server):
    data_path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, data_path)
    data = data_path.read_bytes()
    write_card(zoo_env / "cards", "alexnet", "wrong", str(data_path), data, format="torch-state-dict",
               include_top=True, num_classes=1000, preprocess="torch")
    with pytest.raises(WeightsError, match="features.0.weight has shape"):
        zoo.load("alexnet.wrong", input_shape=(64, 64))


class _Payload:
    """Unpickling this creates ``marker``: the proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_code_is_not_executed(tmp_path, zoo_env, server):
    """weights_only=True: a checkpoint holding code is refused, not run (made with pickle, no torch needed).

    With torch installed the refusal is torch.load's; without it zoo stops earlier, naming the extra.
    """
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"features.0.weight": _Payload(marker)}))
    data = evil.read_bytes()
    write_card(zoo_env / "cards", "alexnet", "evil", str(evil), data, format="torch-state-dict",
               include_top=True, num_classes=1000, preprocess="torch")
    try:
        import torch  # noqa: F401
    except ImportError:
        expected, match = OptionalDependencyError, "needs torch"
    else:
        expected, match = WeightsError, "not a readable PyTorch state dict"
    with pytest.raises(expected, match=match):
        zoo.load("alexnet.evil", input_shape=(64, 64))
    assert not marker.exists()
