"""What `pip install .` delivers: the wheel holds every shipped card and checkpoint, and they load.

The wheel is built from a copy of the tree in a temporary folder, so the source tree never gets
a ``build/`` or ``*.egg-info`` from the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LEFTOVERS = ("build", "dist", "medzoo.egg-info")


def _copy_tree(dst: Path) -> None:
    """The files git would commit (tracked plus untracked, not ignored), else the tree minus outputs."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS, "*.egg-info", "__pycache__",
                                                                   ".git", ".venv", "demo_out", "out"))
        return
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    before = {p for p in BUILD_LEFTOVERS if (ROOT / p).exists()}
    work = tmp_path_factory.mktemp("wheel")
    _copy_tree(work / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work / "dist"), str(work / "src")], check=True, timeout=300)
    assert {p for p in BUILD_LEFTOVERS if (ROOT / p).exists()} == before, "the build wrote into the source tree"
    return next((work / "dist").glob("medzoo-*.whl"))


def shipped_checkpoints() -> dict[str, str]:
    """``arch.tag`` -> file name for every card whose weights file ships in weights/."""
    found = {}
    for card_file in sorted((ROOT / "weights").glob("*.toml")):
        for arch, tags in tomllib.loads(card_file.read_text()).items():
            for tag, card in tags.items():
                url = card["urls"][0]
                if "/" not in url and (ROOT / "weights" / url).is_file():
                    found[f"{arch}.{tag}"] = url
    return found


def test_shipped_checkpoints_are_found():
    """The list the wheel test checks is not empty (guards the parser above)."""
    files = set(shipped_checkpoints().values())
    assert files == {p.name for p in (ROOT / "weights").glob("*.weights.h5")}


def test_wheel_holds_every_card_and_checkpoint(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.name for p in (ROOT / "weights").iterdir() if p.name.endswith((".toml", ".weights.h5"))]
    assert shipped
    missing = [n for n in shipped if f"zoo/_weights/{n}" not in names]
    assert not missing, f"not in {wheel.name}: {missing}"


@pytest.mark.slow
def test_shipped_checkpoints_load_from_the_installed_wheel(wheel, tmp_path):
    """Each shipped checkpoint loads offline (sha256-verified) through zoo.load from the unpacked wheel."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    names = sorted(shipped_checkpoints())
    code = (
        "import json, sys, zoo\n"
        "from zoo.hub.cards import builtin_card_dir\n"
        f"assert zoo.__file__.startswith({str(site)!r}), zoo.__file__\n"
        f"assert str(builtin_card_dir()).startswith({str(site)!r}), builtin_card_dir()\n"
        "out = {}\n"
        f"for name in {names!r}:\n"
        "    arch, tag = name.split('.', 1)\n"
        "    model = zoo.load(arch, pretrained=tag)\n"
        "    out[name] = model.count_params()\n"
        "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env.update(PYTHONPATH=str(site), ZOO_OFFLINE="1", ZOO_HOME=str(tmp_path / "home"), HOME=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(loaded) == names and all(count > 0 for count in loaded.values()), loaded
