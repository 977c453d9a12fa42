"""M2 and M7: downloads are bounded, and a cache that cannot be written is a ZooError with the fix.

Read-only folders and full disks are simulated by making the writer raise EROFS/ENOSPC
(CI may run as root, where chmod does not stop writes).
"""

from __future__ import annotations

import errno
import pathlib
import time

import numpy as np
import pytest
from conftest import served_card

from zoo.errors import CacheWriteError, FetchError, InvalidArgumentError
from zoo.hub import fetch as hub
from zoo.weights.verify import verify_cache

DATA = np.random.default_rng(2).bytes(300_000)


def _card(zoo_env, server, name="w.h5", data=DATA, **fields):
    return served_card(zoo_env, server, name, data, **fields)


def _leftovers(card):
    folder = hub.cache_path(card).parent
    return sorted(p.name for p in folder.glob("*") if not p.name.endswith(".lock")) if folder.is_dir() else []


def test_M2_endless_body_stops_one_byte_past_the_card_size(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("endless",)
    t = time.monotonic()
    with pytest.raises(FetchError, match="more than the card's size of 300,000 bytes"):
        hub.fetch(card, backoff=0.01)
    assert time.monotonic() - t < 10 and _leftovers(card) == []
    assert server.gets("w.h5") == 1  # another file at the URL is not retried


def test_M2_content_length_that_disagrees_with_the_card_is_refused(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("oversize", 10)
    with pytest.raises(FetchError, match=r"announces 3,000,000 bytes \(Content-Length\).*size = 300,000"):
        hub.fetch(card, backoff=0.01)
    assert _leftovers(card) == [] and server.gets("w.h5") == 1


def test_M2_trickle_ends_with_a_fetch_error(zoo_env, server, monkeypatch):
    """A byte every 50 ms never trips the per-read timeout; the minimum rate ends it."""
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("trickle", 0.05)
    monkeypatch.setenv("ZOO_TIMEOUT", "0.5")
    monkeypatch.setenv("ZOO_MIN_RATE", "1000")
    t = time.monotonic()
    with pytest.raises(FetchError, match="slower than 1000 bytes/s"):
        hub.fetch(card, retries=1, backoff=0.01)
    assert time.monotonic() - t < 5


def test_M2_bad_content_range_on_resume_restarts_and_is_named(zoo_env, server):
    card = _card(zoo_env, server)
    part = hub.cache_path(card).with_name("w.h5.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:1000])  # an interrupted earlier download
    server.faults["/w.h5"] = ("badrange",)
    assert hub.fetch(card, backoff=0.01).read_bytes() == DATA
    assert server.gets("w.h5", ranged=True) == 1 and server.gets("w.h5", ranged=False) == 1
    # when every answer is bad, the error names the Content-Range, not the mirror's bytes
    assert hub._content_range_problem("bytes 0-299999/300000", 1000, 300000, 300000).startswith(
        "Content-Range 'bytes 0-299999/300000' starts at byte 0, not 1000")


def test_M2_M7_full_disk_midway_is_a_cache_write_error_and_leaves_no_part(zoo_env, server, monkeypatch):
    card = _card(zoo_env, server)
    calls = []

    def full(f, block):
        calls.append(len(block))
        if len(calls) > 1:  # the first block fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(block)

    monkeypatch.setattr(hub, "_write_block", full)
    server.faults["/w.h5"] = ("slow", 3_000_000)  # several blocks
    with pytest.raises(CacheWriteError) as e:
        hub.fetch(card, backoff=0.01)
    folder = str(hub.cache_path(card).parent)
    assert "no space left" in str(e.value) and folder in str(e.value) and "ZOO_HOME" in str(e.value)
    assert _leftovers(card) == [] and len(calls) == 2


def test_M2_M7_read_only_cache_is_a_cache_write_error(zoo_env, server, monkeypatch):
    card = _card(zoo_env, server)

    def read_only(path, mode):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(hub, "_open_part", read_only)
    with pytest.raises(CacheWriteError, match="read-only") as e:
        hub.fetch(card, backoff=0.01)
    assert str(hub.cache_path(card).parent) in str(e.value) and "ZOO_HOME" in str(e.value)
    assert "ZOO_MIRROR" in str(e.value) and _leftovers(card) == []


def test_M7_read_only_zoo_home_cannot_even_lock(zoo_env, server, monkeypatch):
    card = _card(zoo_env, server)
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(zoo_env / "weights")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    with pytest.raises(CacheWriteError, match="read-only"):
        hub.fetch(card, backoff=0.01)


def test_M7_zoo_home_that_is_a_file(zoo_env, server, tmp_path, monkeypatch):
    card = _card(zoo_env, server)
    not_a_folder = tmp_path / "home_file"
    not_a_folder.write_text("I am a file")
    monkeypatch.setenv("ZOO_HOME", str(not_a_folder))
    with pytest.raises(CacheWriteError, match="is a file, not a folder") as e:
        hub.fetch(card, backoff=0.01)
    assert str(not_a_folder) in str(e.value) and "ZOO_HOME" in str(e.value)
    assert not_a_folder.read_text() == "I am a file"


def test_M7_symlinked_arch_folder_keeps_working(zoo_env, server, tmp_path):
    """A user's weights/<arch> on another disk: fetch and verify work, nothing goes to stamps/."""
    card = _card(zoo_env, server)
    elsewhere = tmp_path / "big_disk"
    elsewhere.mkdir()
    (zoo_env / "weights").mkdir()
    (zoo_env / "weights" / "resnet50").symlink_to(elsewhere, target_is_directory=True)
    path = hub.fetch(card, backoff=0.01)
    assert path == hub.cache_path(card) and (elsewhere / "w" / "w.h5").read_bytes() == DATA
    assert verify_cache() == [(path, True)]
    assert not (zoo_env / "stamps").exists()


def test_M7_verify_on_a_read_only_cache_names_the_folder(zoo_env, server, monkeypatch):
    card = _card(zoo_env, server)
    path = hub.fetch(card)
    path.write_bytes(b"rotten" + DATA[6:])

    def refuse(p):
        raise OSError(errno.EROFS, "Read-only file system", str(p))

    monkeypatch.setattr(hub, "_unlink", refuse)
    with pytest.raises(CacheWriteError) as e:
        verify_cache()
    assert str(path) in str(e.value) and "read-only" in str(e.value) and "by hand" in str(e.value)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan"])
def test_invalid_zoo_timeout_is_a_clear_error(zoo_env, server, monkeypatch, value):
    card = _card(zoo_env, server)
    monkeypatch.setenv("ZOO_TIMEOUT", value)
    with pytest.raises(InvalidArgumentError, match=f"ZOO_TIMEOUT='{value}' is not a positive number of seconds"):
        hub.fetch(card)
    assert server.gets("w.h5") == 0


def test_mirror_folder_with_a_space_and_a_list(zoo_env, server, tmp_path, monkeypatch):
    card = _card(zoo_env, server)
    folder = tmp_path / "site mirror"
    folder.mkdir()
    (folder / "w.h5").write_bytes(DATA)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_MIRROR", str(folder))
    assert hub.fetch(card) == folder / "w.h5"
    monkeypatch.setenv("ZOO_MIRROR", f"{tmp_path / 'empty'}, {folder}")
    assert hub.fetch(card) == folder / "w.h5"


def test_online_error_with_a_mirror_set_names_that_mirror(zoo_env, server, monkeypatch):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("status", 503, 99)
    other = type(server)()
    try:
        monkeypatch.setenv("ZOO_MIRROR", other.base)  # the mirror does not hold the file: 404
        with pytest.raises(FetchError) as e:
            hub.fetch(card, retries=0, backoff=0.01)
    finally:
        other.close()
    message = str(e.value)
    assert f"the mirror(s) in ZOO_MIRROR ({other.base}) hold w.h5" in message
    assert "set ZOO_MIRROR" not in message
