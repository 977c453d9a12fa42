"""`ruff check zoo tests` passes with the pyproject's rules, so CI enforces line length (E501),
complexity (C901 <= 10) and statements per function (PLR0915 <= 50) over zoo/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    """The ruff the test extra installs: the module where it has one, else the executable."""
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError:
        exe = shutil.which("ruff")
        if exe is None:
            pytest.skip("ruff is not installed (it comes with the `test` extra)")
        return [exe]
    return [find_ruff_bin()]


def test_ruff_check_zoo_and_tests_is_clean():
    run = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise",
                          "zoo", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]


def test_the_limits_are_configured():
    """The three rules stay selected with their limits (a dropped rule would pass silently)."""
    import tomllib

    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert {"E", "C901", "PLR0915"} <= set(lint["select"])
    assert "E501" not in lint.get("ignore", [])
    assert lint["mccabe"]["max-complexity"] == 10 and lint["pylint"]["max-statements"] == 50
