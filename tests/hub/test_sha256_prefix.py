"""Cards that carry only a sha256 prefix (torchvision's file names): verified by the prefix."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from zoo.errors import CardError, ChecksumError, OfflineError
from zoo.hub import fetch as hub
from zoo.hub.cards import get_card, read_card_file

DATA = np.random.default_rng(1).bytes(100_000)


def prefix_card(folder, url, prefix, tag="pfx"):
    path = folder / f"googlenet.{tag}.toml"
    path.write_text(f'[googlenet.{tag}]\nurls = ["{url}"]\nsha256_prefix = "{prefix}"\nformat = "torch-state-dict"\n'
                    'input_size = [224, 224, 3]\npreprocess = "tf"\nlicense = "x"\nsource = "tests"\n')
    return path


def test_prefix_verifies_download(zoo_env, server):
    url = server.add("googlenet-abc.pth", DATA)
    prefix_card(zoo_env / "cards", url, hashlib.sha256(DATA).hexdigest()[:8])
    card = get_card("googlenet.pfx")
    assert card.hash == ("sha256", hashlib.sha256(DATA).hexdigest()[:8])
    path = hub.fetch(card, retries=0)
    assert path.read_bytes() == DATA and hub.is_verified(path, card, rehash=True)


def test_wrong_prefix_is_a_checksum_error(zoo_env, server):
    url = server.add("googlenet-abc.pth", DATA)
    bad = "0" * 8 if not hashlib.sha256(DATA).hexdigest().startswith("0" * 8) else "1" * 8
    prefix_card(zoo_env / "cards", url, bad)
    with pytest.raises(ChecksumError, match=bad):
        hub.fetch(get_card("googlenet.pfx"), retries=0)
    assert not hub.cache_path(get_card("googlenet.pfx")).exists()


def test_offline_message_shows_the_prefix(zoo_env, server, monkeypatch):
    prefix_card(zoo_env / "cards", "https://example.invalid/googlenet-1378be20.pth", "1378be20")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(OfflineError, match="sha256 starting 1378be20"):
        hub.fetch(get_card("googlenet.pfx"))


@pytest.mark.parametrize("field, value", [("sha256_prefix", "1378"), ("sha256_prefix", "xyzxyzxy"),
                                          ("md5", "abc"), ("sha256", "ab" * 16)])
def test_hash_fields_must_be_hex_of_the_right_length(tmp_path, field, value):
    path = tmp_path / "c.toml"
    path.write_text(f'[googlenet.x]\nurls = ["a.pth"]\n{field} = "{value}"\nformat = "torch-state-dict"\n'
                    'input_size = [224, 224, 3]\npreprocess = "tf"\nlicense = "x"\nsource = "tests"\n')
    with pytest.raises(CardError, match=field):
        read_card_file(path)


def test_shipped_torchvision_cards():
    for arch, prefix in (("alexnet", "7be5be79"), ("googlenet", "1378be20")):
        card = get_card(f"{arch}.imagenet")
        assert card.sha256_prefix == prefix and card.file_name.endswith(f"-{prefix}.pth")
        assert card.format == "torch-state-dict" and card.include_top and card.num_classes == 1000
