"""zoo.outputs: the one overwrite rule (H1 and issue 12 item 7), without TensorFlow."""

from __future__ import annotations

import errno
import os

import pytest

from zoo.errors import OutputError
from zoo.outputs import MANIFEST, check_target, claim_dir, finish_dir, staged


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_export(target, overwrite=False, payload=b"v1"):
    with staged([target], writer="test", overwrite=overwrite) as (tmp,):
        (tmp / "variables").mkdir(parents=True)
        (tmp / "saved_model.pb").write_bytes(payload)
        (tmp / "variables" / "v.data").write_bytes(payload * 3)


def test_a_folder_output_is_replaced_only_while_its_manifest_accounts_for_every_file(tmp_path):
    target = tmp_path / "sm"
    _write_export(target)
    assert (target / MANIFEST).exists()
    with pytest.raises(OutputError, match="exists; pass overwrite=True"):
        _write_export(target)
    _write_export(target, overwrite=True, payload=b"v2")
    assert (target / "saved_model.pb").read_bytes() == b"v2"
    (target / "thesis.docx").write_text("mine")
    with pytest.raises(OutputError, match="thesis.docx"):
        _write_export(target, overwrite=True)
    (target / "thesis.docx").unlink()
    (target / "saved_model.pb").write_bytes(b"edited by hand")  # changed since the zoo wrote it
    with pytest.raises(OutputError, match="saved_model.pb"):
        _write_export(target, overwrite=True)
    assert (target / "saved_model.pb").read_bytes() == b"edited by hand"


def test_a_folder_without_a_manifest_is_never_replaced_but_an_empty_one_is_used(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("a")
    with pytest.raises(OutputError, match="did not write"):
        _write_export(mine, overwrite=True)
    assert _tree(mine) == {"a.txt": b"a"}
    empty = tmp_path / "empty"
    empty.mkdir()
    _write_export(empty)
    assert (empty / "saved_model.pb").read_bytes() == b"v1"


def test_a_failure_midway_leaves_the_target_and_its_neighbours_as_they_were(tmp_path):
    target = tmp_path / "sm"
    _write_export(target)
    (tmp_path / "neighbour.txt").write_text("n")
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError), staged([target], writer="test", overwrite=True) as (tmp,):
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("writer died")
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbour.txt", "sm"]  # no temporary left


def test_a_full_disk_during_the_swap_restores_the_old_output(tmp_path, monkeypatch):
    target = tmp_path / "model.bin"
    with staged([target], writer="test") as (tmp,):
        tmp.write_bytes(b"old")
    real, calls = os.replace, []

    def full(src, dst):  # the new file cannot be moved in; moving the old one back still works
        if str(dst) == str(target) and not calls:
            calls.append(src)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="No space left.*free space"), \
            staged([target], writer="test", overwrite=True) as (tmp,):
        tmp.write_bytes(b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize("where", [".", "..", "~", "/"])
def test_dangerous_targets_are_refused(where, tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(OutputError, match="working directory.*home folder.*root"):
        check_target(where, overwrite=True)


def test_a_target_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_target(tmp_path / "file" / "out", overwrite=False)


def test_claimed_run_folder_is_the_zoos_even_when_the_run_died(tmp_path):
    run = claim_dir(tmp_path / "run", writer="test", names=["best.keras", "run.json"])
    (run / "best.keras").write_bytes(b"half written")
    # died before finish_dir: the planned names are still the zoo's, a user's file is not
    (run / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="mine.txt"):
        claim_dir(run, writer="test", overwrite=True)
    (run / "mine.txt").unlink()
    run = claim_dir(run, writer="test", overwrite=True, names=["best.keras", "run.json"])
    assert list(run.iterdir()) == [run / MANIFEST]
    (run / "run.json").write_text("{}")
    finish_dir(run, writer="test")
    with pytest.raises(OutputError, match="exists"):
        claim_dir(run, writer="test")
