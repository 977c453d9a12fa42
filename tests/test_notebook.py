"""The Colab notebook runs headless, end to end, with tiny settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "finetune_colab.ipynb"


@pytest.mark.slow
def test_finetune_notebook_executes(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    out = tmp_path / "out"
    monkeypatch.setenv("ZOO_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("ZOO_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "test accuracy" in text and "agrees with the Keras model" in text
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "cam.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "run.json").is_file()
