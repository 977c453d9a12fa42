"""Fetching against a loopback server: success, faults, resume, races, mirrors, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import served_card, write_card

from zoo.errors import ChecksumError, FetchError, OfflineError
from zoo.hub import fetch as hub
from zoo.hub.cards import get_card
from zoo.weights.verify import verify_cache

DATA = np.random.default_rng(0).bytes(300_000)


def _card(zoo_env, server, name="w.h5", data=DATA, **fields):
    return served_card(zoo_env, server, name, data, **fields)


def _no_debris(card):
    folder = hub.cache_path(card).parent
    return [p.name for p in folder.glob("*") if p.suffix in (".part",) or p.name.endswith(".h5") and p.read_bytes() != DATA]


def test_download_verifies_caches_and_is_not_repeated(zoo_env, server):
    card = _card(zoo_env, server)
    path = hub.fetch(card, retries=0)
    assert path == hub.cache_path(card) and path.read_bytes() == DATA
    assert hub.fetch(card) == path
    assert server.gets("w.h5") == 1


def test_truncated_body_is_resumed_with_range(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("truncate", 1)
    path = hub.fetch(card, backoff=0.01)
    assert path.read_bytes() == DATA
    assert server.gets("w.h5", ranged=True) == 1
    assert not _no_debris(card)


def test_wrong_bytes_raise_and_leave_nothing(zoo_env, server):
    url = server.add("bad.h5", DATA[:-1] + b"x")
    card = get_card(write_card(zoo_env / "cards", "resnet50", "bad", url, DATA))
    with pytest.raises(ChecksumError, match="discarded"):
        hub.fetch(card, backoff=0.01)
    folder = hub.cache_path(card).parent
    assert not [p for p in folder.glob("*") if not p.name.endswith(".lock")]


def test_server_error_then_success(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("status", 500, 2)
    assert hub.fetch(card, backoff=0.01).read_bytes() == DATA
    assert server.gets("w.h5") == 3


def test_persistent_server_error_names_the_fix(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("status", 503, 99)
    with pytest.raises(FetchError, match="ZOO_MIRROR"):
        hub.fetch(card, retries=1, backoff=0.01)
    assert not hub.cache_path(card).exists()


def test_not_found_is_not_retried(zoo_env, server):
    card = _card(zoo_env, server)
    del server.files["/w.h5"]
    with pytest.raises(FetchError, match="404"):
        hub.fetch(card, backoff=0.01)
    assert server.gets("w.h5") == 1


def test_stalled_connection_times_out_and_resumes(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("stall", 1, 3.0)
    t = time.monotonic()
    assert hub.fetch(card, timeout=0.5, backoff=0.01).read_bytes() == DATA
    assert time.monotonic() - t < 3.0
    assert server.gets("w.h5", ranged=True) == 1


def test_cached_file_that_changed_is_fetched_again(zoo_env, server):
    card = _card(zoo_env, server)
    path = hub.fetch(card)
    path.write_bytes(b"rotten" + DATA[6:])
    assert hub.fetch(card).read_bytes() == DATA
    assert server.gets("w.h5") == 2
    assert verify_cache() == [(path, True)]
    path.write_bytes(b"rotten")
    assert verify_cache() == [(path, False)] and not path.exists()


def test_offline_never_touches_network_and_says_where(zoo_env, server, monkeypatch):
    card = _card(zoo_env, server)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(OfflineError) as e:
        hub.fetch(card)
    assert str(hub.cache_path(card)) in str(e.value) and card.sha256 in str(e.value)
    assert server.gets("w.h5") == 0


def test_tampered_local_copy_offline_is_a_checksum_error_not_missing(zoo_env, server, tmp_path, monkeypatch):
    card = _card(zoo_env, server)
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "w.h5").write_bytes(DATA[:-1] + b"x")
    monkeypatch.setenv("ZOO_MIRROR", str(folder))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(ChecksumError) as e:
        hub.fetch(card)
    assert str(folder / "w.h5") in str(e.value) and card.sha256 in str(e.value)
    assert server.gets("w.h5") == 0 and not hub.cache_path(card).exists()


def test_mirror_folder_and_mirror_server_come_first(zoo_env, server, tmp_path, monkeypatch):
    card = _card(zoo_env, server)
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "w.h5").write_bytes(DATA)
    monkeypatch.setenv("ZOO_MIRROR", str(folder))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert hub.fetch(card) == folder / "w.h5"
    monkeypatch.delenv("ZOO_OFFLINE")
    other = type(server)()
    try:
        other.add("w.h5", DATA)
        monkeypatch.setenv("ZOO_MIRROR", other.base + "/")
        assert hub.fetch(card).read_bytes() == DATA
        assert other.gets("w.h5") == 1 and server.gets("w.h5") == 0
    finally:
        other.close()


def test_file_url_and_relative_path(zoo_env, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "w.h5").write_bytes(DATA)
    card = get_card(write_card(zoo_env / "cards", "resnet50", "file", (folder / "w.h5").as_uri(), DATA))
    assert hub.fetch(card) == folder / "w.h5"
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "w.h5").write_bytes(DATA)
    write_card(cards, "resnet50", "rel", "w.h5", DATA)
    os.environ["ZOO_CARDS"] = str(cards)
    try:
        assert hub.fetch(get_card("resnet50.rel")) == cards / "w.h5"
    finally:
        del os.environ["ZOO_CARDS"]


FETCH_SCRIPT = textwrap.dedent("""
    import sys
    from zoo.hub.cards import get_card
    from zoo.hub.fetch import fetch
    print(fetch(get_card(sys.argv[1]), timeout=10, backoff=0.01), flush=True)
""")


def _spawn(name, zoo_env):
    env = {**os.environ, "ZOO_HOME": str(zoo_env), "PYTHONPATH": os.getcwd()}
    return subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_download_is_resumed(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("slow", 100_000)
    proc = _spawn(card.name, zoo_env)
    part = hub.cache_path(card).with_name("w.h5.part")
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size > 50_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part.exists() and 0 < part.stat().st_size < len(DATA)
    del server.faults["/w.h5"]
    assert hub.fetch(card).read_bytes() == DATA
    assert server.gets("w.h5", ranged=True) == 1


@pytest.mark.slow
def test_two_processes_race_for_one_file(zoo_env, server):
    card = _card(zoo_env, server)
    server.faults["/w.h5"] = ("slow", 600_000)
    procs = [_spawn(card.name, zoo_env) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert paths == {str(hub.cache_path(card))}
    assert hub.cache_path(card).read_bytes() == DATA
    assert server.gets("w.h5") == 1


def test_fetch_takes_a_card_or_its_name(zoo_env, server):
    """One public fetch: zoo.fetch and zoo.hub.fetch.fetch take a WeightCard or ``arch.tag``."""
    import zoo

    card = _card(zoo_env, server)
    path = zoo.fetch(card, retries=0)
    assert hub.fetch(card.name) == zoo.fetch(card.name) == path and server.gets("w.h5") == 1
