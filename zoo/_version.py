"""The package version, for the records any layer writes, without importing the ``zoo`` facade.

The literal stays in ``zoo/__init__.py`` (setup.cfg reads it there without importing anything);
Python imports the ``zoo`` package before any of its submodules, so it is always in sys.modules.
"""

from __future__ import annotations

import sys


def zoo_version() -> str:
    """``zoo.__version__``, read without an import of the facade (and of what it imports)."""
    return sys.modules["zoo"].__version__
