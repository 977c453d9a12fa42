"""The Colab notebook runs headless, offline, with only its install setting changed, and its
Grad-CAM section explains a case the model gets right."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.explain.figure_checks import assert_readable

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "finetune_colab.ipynb"
SETTING = re.compile(r'^MEDZOO_SOURCE = "[^"\n]*"$', re.M)


def _with_install_setting(nb, value: str):
    """The notebook with MEDZOO_SOURCE set to ``value``: the one line a user edits."""
    hits = [c for c in nb.cells if c.cell_type == "code" and SETTING.search(c.source)]
    assert len(hits) == 1 and len(SETTING.findall(hits[0].source)) == 1, "one clearly marked install setting"
    assert nb.cells.index(hits[0]) == 1, "the setting is the first code cell"
    hits[0].source = SETTING.sub(f"MEDZOO_SOURCE = {value!r}".replace("'", '"'), hits[0].source)
    return nb


def test_notebook_installs_from_its_one_setting_and_picks_the_runtime_strategy():
    import nbformat

    nb = _with_install_setting(nbformat.read(NOTEBOOK, as_version=4), "/content/medzoo-0.1.0-py3-none-any.whl")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "%pip install" not in code  # the old hard-coded `%pip install medzoo`
    assert code.count("MEDZOO_SOURCE = ") == 1 and '"-m", "pip", "install", "-q", MEDZOO_SOURCE' in code
    assert "Restart session" in code  # says what to do when pip replaced an imported TensorFlow
    assert 'zoo.train.strategy("auto")' in code and "strategy=STRATEGY" in code


@pytest.mark.slow
def test_finetune_notebook_executes(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    out = tmp_path / "out"
    monkeypatch.setenv("ZOO_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("ZOO_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOK.parents[1]), os.environ.get("PYTHONPATH", "")]))
    nb = _with_install_setting(nbformat.read(NOTEBOOK, as_version=4), "")  # "" = already installed
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "runtime: CPU" in text and "test accuracy" in text and "agrees with the Keras model" in text
    assert (out / "saved_model" / "saved_model.pb").is_file() and (out / "run.json").is_file()
    assert (out / "curves.png").is_file()

    # the explained case: a lesion image that the exported model, loaded afresh, classifies correctly
    import tensorflow as tf

    from zoo.data.synthetic import make_phantoms
    from zoo.demo import TARGET_TASK

    case = json.loads((out / "cam.json").read_text())
    test = make_phantoms(200, seed=2, **TARGET_TASK)  # the notebook's test set
    i = case["index"]
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    p = next(iter(served(image=tf.constant(test.images[i:i + 1])).values())).numpy()[0]
    assert test.labels[i] == case["label"] == 1 and p.argmax() == 1
    assert np.isclose(p[1], case["p_lesion"], atol=1e-4)
    assert f"p(lesion) = {p[1]:.3f}" in text and "correct" in text
    assert_readable(out / "cam.png", test.images[i])
