"""The small frictions of a new user's first hour (issue 11, item 6), each pinned by a test."""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
# absl/TensorFlow log lines, TF's Python logger, absl's Python logger and Python warnings
TF_NOISE = re.compile(r"^[IWEF]\d{4} |^\d{4}-\d\d-\d\d .*: [IWEF] |tensorflow|keras|absl|oneDNN|cuInit|cuda|"
                      r"Warning:|rebuild TensorFlow", re.IGNORECASE)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the conftest quietens TF
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def test_import_zoo_is_light_and_reaches_submodules():
    """``zoo.data.dicom.read_dicom`` works after a plain ``import zoo``, which imports no TensorFlow."""
    code = (
        "import sys, zoo\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib', 'pydicom', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(zoo.data.dicom.read_dicom) and callable(zoo.data.series.load_series)\n"
        "assert callable(zoo.data.synthetic.make_phantoms) and callable(zoo.hub.fetch.fetch)\n"
        "assert 'dicom' in dir(zoo.data) and 'data' in dir(zoo)\n"
        "import zoo.export as m\n"
        "assert m is sys.modules['zoo.export'] is zoo.export and callable(m)  # module, callable\n"
        "try:\n"
        "    zoo.data.no_such_module\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_module' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
        "assert 'tensorflow' not in sys.modules, 'the light submodules imported TensorFlow'\n")
    run = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_load_shows_its_real_signature_and_arguments():
    """help(zoo.load) lists the arguments of zoo.models.factory.load, each explained under Args."""
    from zoo.models.factory import load as factory_load

    ours, theirs = inspect.signature(zoo.load), inspect.signature(factory_load)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
           [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
    doc = inspect.getdoc(zoo.load)
    assert "Args:" in doc and "Returns:" in doc
    for name in ours.parameters:
        assert re.search(rf"^\s+\**{name}:", doc, re.M), f"{name} is not documented in zoo.load"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"zoo {zoo.__version__} (medzoo)"


def _parsers(parser, path=("zoo",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


def test_every_help_shows_the_defaults():
    """Each option (or optional positional) with a real default shows it in its --help."""
    checked = 0
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            default = action.default
            if default in (None, False, argparse.SUPPRESS) or isinstance(action, argparse._SubParsersAction) or (
                    not action.option_strings and action.nargs not in ("?", "*")):
                continue
            if action.help and "default" in action.help.lower():  # the help text itself says it
                continue
            if action.help == argparse.SUPPRESS:  # a hidden option (e.g. the tests' demo size)
                continue
            shown = " ".join(str(default).split())
            assert f"(default: {shown})" in text, f"{' '.join(path)} --help hides {action.dest}={default!r}"
            checked += 1
    assert checked >= 5


def test_stderr_filter_drops_tensorflow_lines_only(capfd):
    """C-level TF log lines on fd 2 are dropped; other lines pass, in order; fd 2 is restored."""
    from zoo._quiet import StderrFilter

    keep = b"zoo: a real message\nno newline at the end"
    tf_lines = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                b"I0000 00:00:1796220813.081110   17953 port.cc:153] oneDNN custom operations are on.\n"
                b"E0000 00:00:1796220694.308388   13818 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
                b"2026-01-01 10:00:00.123456: W tensorflow/core/framework/op.cc:12] a warning\n"
                b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
                b"the appropriate compiler flags.\n")
    quiet = StderrFilter()
    os.write(2, tf_lines + keep[:20] + tf_lines + keep[20:])
    print("python stderr", file=sys.stderr)
    quiet.close()
    err = capfd.readouterr().err
    assert err.replace("python stderr\n", "") == keep.decode()
    assert "python stderr" in err
    os.write(2, tf_lines)  # restored: nothing is filtered any more
    assert capfd.readouterr().err == tf_lines.decode()


def test_quiet_shows_the_zoos_warnings_only_and_restores():
    import logging

    from zoo._quiet import QuietTensorFlow, _zoo_warnings_only
    from zoo.data.series import SeriesWarning

    shown = []
    show = _zoo_warnings_only(lambda message, category, *rest: shown.append(category))
    show("from keras", UserWarning, "/site-packages/keras/src/x.py", 1)
    show("a gap in the series", SeriesWarning, "/elsewhere/script.py", 1)
    assert shown == [SeriesWarning]
    before, level = warnings.showwarning, logging.getLogger("tensorflow").level
    quiet = QuietTensorFlow()  # under pytest's capture: no fd filter, the rest applies
    assert warnings.showwarning is not before and logging.getLogger("tensorflow").level == logging.ERROR
    quiet.close()
    assert warnings.showwarning is before and logging.getLogger("tensorflow").level == level


@pytest.mark.slow
def test_cli_prints_no_tensorflow_logs(tmp_path):
    """A subcommand that imports TensorFlow and runs it writes nothing from TF/Keras to stderr."""
    run = subprocess.run([sys.executable, "-m", "zoo", "export", "simple_cnn", str(tmp_path / "sm")],
                         env=_env(ZOO_HOME=str(tmp_path / "home")), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    noise = [line for line in run.stderr.splitlines() if TF_NOISE.search(line)]
    assert not noise, "\n".join(noise)


def test_verbose_flag_parses_before_the_subcommand():
    args = build_parser().parse_args(["--verbose", "list"])
    assert args.verbose and args.command == "list"
    assert not build_parser().parse_args(["list"]).verbose


@pytest.mark.parametrize("options", [dict(num_classes=2), dict(num_classes=0), dict(features=True)],
                         ids=["head", "backbone", "features"])
def test_calling_a_model_emits_no_structure_warning(options):
    """Keras warned "The structure of `inputs` doesn't match" on every call of a zoo model."""
    model = zoo.load("simple_cnn", in_chans=1, input_shape=(32, 32), **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(np.zeros((1, 32, 32, 1), "float32"))
    assert not [str(w.message) for w in caught]


def test_local_outputs_are_ignored_by_git():
    """The README's commands write demo_out/, finetune_out/, deploy/; none of it shows in git status."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["demo_out/mil_overlay.png", "finetune_out/best.keras", "deploy/sm/saved_model.pb",
             "build/lib/zoo/cli.py", "medzoo.egg-info/PKG-INFO"]
    run = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert sorted(run.stdout.split()) == sorted(paths), run.stdout + run.stderr


@pytest.mark.parametrize("content", [None, b"not a zip"], ids=["missing", "not-keras"])
def test_export_of_a_bad_keras_file_is_one_line(tmp_path, capsys, content):
    """`zoo export missing.keras out` ended in Keras' ValueError traceback."""
    source = tmp_path / "model.keras"
    if content is not None:
        source.write_bytes(content)
    assert main(["export", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("zoo export: ") and str(source) in err, err


def test_demo_takes_a_seed_and_passes_it_on(monkeypatch):
    import zoo.demo
    from zoo.cli import main

    calls = []
    monkeypatch.setattr(zoo.demo, "run", lambda out, **kw: calls.append((out, kw)))
    assert main(["demo", "--out", "d", "--seed", "7"]) == 0
    assert calls == [("d", {"n_labelled": 80, "epochs": 12, "seed": 7})]
