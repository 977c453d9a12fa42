"""Torch -> Keras conversion: torchvision-named modules with random weights give the same logits.

The torch modules below copy torchvision's AlexNet and GoogLeNet layer for layer (module
names included; torchvision itself is not installed). Their random state dicts are saved as
.pth files, described by cards with a sha256 prefix (as torchvision publishes), and loaded
through zoo.load, which converts them and caches the result as .weights.h5.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from conftest import write_card

import zoo
from zoo.errors import OptionalDependencyError, WeightsError
from zoo.hub.convert_torch import converted_path

torch = pytest.importorskip("torch")
nn = torch.nn

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 36, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, r3, kernel_size=1), BasicConv2d(r3, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, r5, kernel_size=1), BasicConv2d(r5, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class GoogLeNet(nn.Module):
    """torchvision's layout; forward returns the auxiliary logits in eval mode too (for the test)."""

    def __init__(self, num_classes=1000, aux_logits=True):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):  # torchvision's transform_input: ImageNet-normalised -> [-1, 1]
        x = torch.cat([x[:, i:i + 1] * (STD[i] / 0.5) + (MEAN[i] - 0.5) / 0.5 for i in range(3)], 1).float()
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(torch.flatten(self.avgpool(x), 1)), aux1, aux2


def randomise(module, seed=0):
    """Random weights and BatchNorm statistics, so every converted tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                values = torch.randn(t.shape, generator=gen) * (1.0 / max(1, t[0].numel()) ** 0.5)
                t.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return module.eval()


def save_card(module, tmp_path, zoo_env, server, arch, *, http=True):
    path = tmp_path / f"{arch}-test.pth"
    torch.save(module.state_dict(), path)
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
    return torch.from_numpy(((x / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype("float32"))


@pytest.mark.slow
def test_alexnet_logits_match_torch(tmp_path, zoo_env, server):
    """160x160 inputs: pool5 is 4x4, so the adaptive 6x6 pooling really resamples."""
    net = randomise(AlexNet())
    name = save_card(net, tmp_path, zoo_env, server, "alexnet", http=False)
    x = pixels(160)
    with torch.no_grad():
        expected = net(torch_input(x)).numpy()
    model = zoo.load(name, input_shape=(160, 160), classifier_activation=None)
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert model.count_params() == sum(p.numel() for p in net.parameters()) == 61_100_840


@pytest.mark.slow
def test_googlenet_logits_match_torch_and_cache_needs_no_torch(tmp_path, zoo_env, server, monkeypatch):
    net = randomise(GoogLeNet(aux_logits=True))
    name = save_card(net, tmp_path, zoo_env, server, "googlenet")
    x = pixels(96)
    with torch.no_grad():
        logits, aux1, aux2 = (t.numpy() for t in net(torch_input(x)))
    model = zoo.load(name, input_shape=(96, 96), classifier_activation=None)
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())

    with_aux = zoo.load(name, input_shape=(96, 96), classifier_activation=None, aux_logits=True)
    for out, ref in zip(with_aux.predict(x, verbose=0), (logits, aux1, aux2)):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

    card = zoo.get_card(name)
    cached = converted_path(card, model)
    assert cached.is_file() and cached.name.endswith(".weights.h5")
    monkeypatch.setitem(sys.modules, "torch", None)  # the second load reads the cache: no torch needed
    again = zoo.load(name, input_shape=(96, 96), classifier_activation=None)
    np.testing.assert_allclose(again.predict(x, verbose=0), got, rtol=1e-6, atol=1e-6)

    grey = zoo.load(name, input_shape=(96, 96), in_chans=1, num_classes=3)  # fresh head on converted weights
    assert grey.output.shape == (None, 3)
    np.testing.assert_array_equal(grey.get_layer("inception5b_branch1_conv").get_weights()[0],
                                  again.get_layer("inception5b_branch1_conv").get_weights()[0])


def test_missing_torch_names_the_extra(tmp_path, zoo_env, server, monkeypatch):
    name = save_card(randomise(GoogLeNet(aux_logits=False)), tmp_path, zoo_env, server, "googlenet")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OptionalDependencyError, match=r'pip install "medzoo\[torch\]"'):
        zoo.load(name, input_shape=(64, 64))


def test_checkpoint_of_another_architecture_is_rejected(tmp_path, zoo_env, server):
    data_path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, data_path)
    data = data_path.read_bytes()
    write_card(zoo_env / "cards", "alexnet", "wrong", str(data_path), data, format="torch-state-dict",
               include_top=True, num_classes=1000, preprocess="torch")
    with pytest.raises(WeightsError, match="features.0.weight has shape"):
        zoo.load("alexnet.wrong", input_shape=(64, 64))


def test_pickled_code_is_not_executed(tmp_path, zoo_env, server):
    """weights_only=True: a checkpoint holding an arbitrary object is refused, not run."""
    evil = tmp_path / "evil.pth"
    torch.save({"x": __import__("collections").OrderedDict(a=print)}, evil)
    data = evil.read_bytes()
    write_card(zoo_env / "cards", "alexnet", "evil", str(evil), data, format="torch-state-dict",
               include_top=True, num_classes=1000, preprocess="torch")
    with pytest.raises(WeightsError, match="not a readable PyTorch state dict"):
        zoo.load("alexnet.evil", input_shape=(64, 64))
