"""M1: a changed cache is never loaded; converted caches carry their own digest; zoo verify repairs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import write_card

import zoo
from zoo.cli import main
from zoo.errors import ChecksumError, OptionalDependencyError
from zoo.hub import fetch as hub
from zoo.hub.cards import get_card
from zoo.weights.verify import verify_cache

DATA = np.random.default_rng(3).bytes(200_000)


def _card(zoo_env, server, name="w.h5", data=DATA, **fields):
    url = server.add(name, data)
    return get_card(write_card(zoo_env / "cards", "resnet50", name.split(".")[0], url, data, **fields))


def _tamper_keeping_size_and_mtime(path):
    st = path.stat()
    path.write_bytes(b"rotten" + path.read_bytes()[6:])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    # what the old size+mtime stamp looked like: it must not spare the hash
    algorithm, digest = ("sha256", hashlib.sha256(DATA).hexdigest())
    path.with_name(path.name + ".verified").write_text(f"{algorithm}:{digest}:{st.st_size}:{st.st_mtime_ns}")


def test_M1_same_size_same_mtime_change_is_refetched_in_this_process(zoo_env, server):
    card = _card(zoo_env, server)
    path = hub.fetch(card)
    _tamper_keeping_size_and_mtime(path)
    assert hub.fetch(card).read_bytes() == DATA
    assert server.gets("w.h5") == 2


def test_M1_a_new_process_hashes_on_first_use(zoo_env, server):
    card = _card(zoo_env, server)
    path = hub.fetch(card)
    _tamper_keeping_size_and_mtime(path)
    code = textwrap.dedent(f"""
        from zoo.hub.cards import get_card
        from zoo.hub.fetch import fetch
        fetch(get_card({card.name!r}))
    """)
    env = {**os.environ, "ZOO_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "ChecksumError" in run.stderr and "changed or corrupt" in run.stderr
    assert server.gets("w.h5") == 1


def test_M1_zoo_verify_repairs_a_corrupted_cache(zoo_env, server, capsys):
    """Issue 11 item 7: corrupt file deleted, fetched again from the loopback server, verified."""
    card = _card(zoo_env, server)
    path = hub.fetch(card)
    path.write_bytes(DATA[:1000])
    assert main(["verify"]) == 1
    assert f"DELETED {path}" in capsys.readouterr().out and not path.exists()
    assert hub.fetch(card).read_bytes() == DATA and server.gets("w.h5") == 2

    _tamper_keeping_size_and_mtime(path)
    assert main(["verify", "--refetch"]) == 1
    assert "fetched again and verified" in capsys.readouterr().out
    assert path.read_bytes() == DATA and server.gets("w.h5") == 3
    assert main(["verify"]) == 0 and verify_cache() == [(path, True)]


def _prefix_card(zoo_env, server, data=DATA):
    url = server.add("googlenet-abc.pth", data)
    (zoo_env / "cards" / "p.toml").write_text(
        f'[googlenet.pfx]\nurls = ["{url}"]\nsha256_prefix = "{hashlib.sha256(data).hexdigest()[:8]}"\n'
        'format = "torch-state-dict"\ninput_size = [224, 224, 3]\npreprocess = "tf"\nlicense = "x"\n'
        'source = "tests"\n')
    return get_card("googlenet.pfx")


def test_M1_prefix_only_card_records_the_full_sha256_and_says_so(zoo_env, server, capsys):
    card = _prefix_card(zoo_env, server)
    info = zoo.model_info("googlenet.pfx")["weights"][0]
    assert "only the first 8 hex digits" in info["integrity"]
    path = hub.fetch(card)
    assert hub.recorded_sha256(card) == hashlib.sha256(DATA).hexdigest()
    assert hub.expected_hash(card) == ("sha256", hashlib.sha256(DATA).hexdigest(), True)
    assert main(["verify"]) == 0
    assert "only the sha256 prefix" in capsys.readouterr().out

    # from then on the recorded hash, not the prefix, decides: a record that differs past the
    # prefix (standing in for a file that only shares the prefix) rejects the served bytes
    other = card.sha256_prefix + ("0" if hashlib.sha256(DATA).hexdigest()[8] != "0" else "1") * 56
    hub.recorded_hash_path(card).write_text(other + "\n")
    assert not hub.is_verified(path, card, rehash=True)
    with pytest.raises(ChecksumError, match="recorded for googlenet.pfx"):
        hub.fetch(card, backoff=0.01)


def test_shipped_torchvision_cards_say_when_they_are_prefix_only():
    assert "full sha256 is recorded" in zoo.model_info("googlenet.imagenet")["weights"][0]["integrity"]
    alexnet = zoo.get_card("alexnet.imagenet")  # its full sha256 and size are known: no note
    assert alexnet.sha256.startswith(alexnet.sha256_prefix) and alexnet.size == 244408911
    assert "integrity" not in zoo.model_info("alexnet.imagenet")["weights"][0]


# --- converted torch caches -----------------------------------------------------------------


def _tiny(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))


@pytest.fixture
def torch_cache(zoo_env, server, tmp_path):
    """A tiny torch checkpoint served over loopback, fetched, and its converted cache."""
    torch = pytest.importorskip("torch")
    import keras

    from zoo.weights.convert_torch import load_torch_checkpoint

    g = torch.Generator().manual_seed(0)
    state = {"conv1.weight": torch.randn(4, 3, 3, 3, generator=g), "conv1.bias": torch.randn(4, generator=g),
             "fc.weight": torch.randn(2, 144, generator=g), "fc.bias": torch.randn(2, generator=g)}
    torch.save(state, tmp_path / "tiny.pth")
    data = (tmp_path / "tiny.pth").read_bytes()
    url = server.add("tiny.pth", data)
    card = get_card(write_card(zoo_env / "cards", "googlenet", "tiny", url, data, format="torch-state-dict"))
    source = hub.fetch(card)
    model = _tiny(keras)
    cached = load_torch_checkpoint(model, source, card)
    return card, source, cached, model, lambda: load_torch_checkpoint(_fresh := _tiny(keras), source, card) and _fresh


def test_M1_converted_cache_carries_its_digest(torch_cache):
    card, _, cached, model, _ = torch_cache
    record = json.loads(cached.with_name(cached.name + ".json").read_text())
    assert record["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert record["size"] == cached.stat().st_size and record["source"] == ":".join(card.hash)
    assert [r for r in verify_cache() if r.path == cached] == [(cached, True)]


def test_M1_truncated_converted_cache_is_converted_again(torch_cache):
    _, _, cached, model, reload = torch_cache
    cached.write_bytes(cached.read_bytes()[:500])
    with pytest.warns(UserWarning, match="truncated or altered.*converting"):
        again = reload()
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r for r in verify_cache() if r.path == cached] == [(cached, True)]


def test_M1_truncated_converted_cache_without_torch_is_a_clear_error(torch_cache, monkeypatch):
    _, _, cached, _, reload = torch_cache
    cached.write_bytes(cached.read_bytes()[:500])
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.warns(UserWarning), pytest.raises(OptionalDependencyError, match="truncated.*medzoo\\[torch\\]"):
        reload()


def test_M1_altered_converted_cache_is_not_loaded_and_verify_deletes_it(torch_cache):
    _, _, cached, model, reload = torch_cache
    raw = bytearray(cached.read_bytes())
    raw[-100] ^= 0xFF
    cached.write_bytes(bytes(raw))
    results = [r for r in verify_cache() if r.path == cached]
    assert results == [(cached, False)] and "sha256 recorded at conversion" in results[0].note
    assert not cached.exists()
    again = reload()  # converted again
    np.testing.assert_array_equal(again.get_layer("fc").get_weights()[0], model.get_layer("fc").get_weights()[0])
    assert cached.is_file()
