"""Every keras_applications card carries Keras' own md5 for exactly its own file.

The reference is read from the installed keras.applications sources (their ``get_file`` calls,
where the file name and its hash sit side by side, and resnet's WEIGHTS_HASHES table with the
file-name template next to it), by parsing, not importing: Keras' hash for a file is the one in
the same call or branch as that file's name, so a top/notop or densenet169/201 swap is caught.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from zoo.hub.cards import builtin_card_dir, read_card_file

MODULES = ("inception_v3", "resnet", "densenet", "vgg16", "vgg19")


def _keras_source(module: str) -> str:
    spec = importlib.util.find_spec("keras")  # the top-level package is located, not imported
    root = Path(next(iter(spec.submodule_search_locations)))
    return (root / "src" / "applications" / f"{module}.py").read_text()


def _render(node: ast.JoinedStr, names: dict) -> str:
    return "".join(
        str(names[v.value.id]) if isinstance(v, ast.FormattedValue) else v.value
        for v in node.values
    )


def _module_hashes(module: str) -> dict[str, str]:
    """file name -> md5, paired as this keras.applications module pairs them."""
    tree = ast.parse(_keras_source(module))
    pairs = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "get_file"
        ):
            hash_kw = next(k.value for k in node.keywords if k.arg == "file_hash")
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(hash_kw, ast.Constant):
                pairs[name.value] = (
                    hash_kw.value
                )  # densenet, inception_v3, vgg: one call, both literals
            else:  # resnet: get_file(file_name, ..., file_hash=file_hash), both set just above
                assert (ast.unparse(name), ast.unparse(hash_kw)) == ("file_name", "file_hash"), (
                    f"keras.applications.{module} names its files another way; update this reader"
                )
    table = {}
    for node in tree.body:  # module-level WEIGHTS_HASHES = {...}
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "WEIGHTS_HASHES":
            table = ast.literal_eval(node.value)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.If) and ast.unparse(node.test) == "include_top"):
            continue
        for branch in (node.body, node.orelse):
            assigned = {
                ast.unparse(s.targets[0]): s.value for s in branch if isinstance(s, ast.Assign)
            }
            if {"file_name", "file_hash"} <= set(assigned):
                # file_hash = WEIGHTS_HASHES[weights_name][k]; file_name = f"{weights_name}_..."
                index = assigned["file_hash"].slice.value
                assert ast.unparse(assigned["file_hash"].value) == "WEIGHTS_HASHES[weights_name]"
                for arch, hashes in table.items():
                    pairs[_render(assigned["file_name"], {"weights_name": arch})] = hashes[index]
    return pairs


def keras_hashes() -> dict[str, str]:
    pairs = {}
    for module in MODULES:
        found = _module_hashes(module)
        assert len(found) >= 2, f"no file/hash pairs read from keras.applications.{module}"
        pairs.update(found)
    return pairs


def mismatches(cards, reference: dict[str, str]) -> list[str]:
    """Cards whose md5 is not Keras' hash for the file their URL names."""
    bad = []
    for card in cards:
        file_name = card.urls[0].rsplit("/", 1)[-1]
        if reference.get(file_name) != card.md5:
            bad.append(
                f"{card.name}: {file_name} has md5 {card.md5}, Keras: {reference.get(file_name)}"
            )
    return bad


@pytest.fixture(scope="module")
def cards():
    return read_card_file(builtin_card_dir() / "keras_applications.toml")


def test_every_card_has_keras_md5_for_its_own_file(cards):
    reference = keras_hashes()
    assert len(cards) == 18  # 9 architectures, top and notop
    assert mismatches(cards, reference) == []
    assert len({c.urls[0].rsplit("/", 1)[-1] for c in cards}) == 18  # one card per Keras file
    for card in cards:  # the file name itself says which card it is
        assert card.arch in card.urls[0].rsplit("/", 1)[-1]
        assert card.urls[0].endswith("_notop.h5") is (not card.include_top), card.name


def test_swapped_hashes_are_caught(cards):
    """The check fails on a top/notop swap, or densenet169's and densenet201's hashes swapped."""
    reference = keras_hashes()
    by_name = {c.name: c for c in cards}

    def swapped(a, b):
        out = dict(by_name)
        out[a] = dataclasses.replace(by_name[a], md5=by_name[b].md5)
        out[b] = dataclasses.replace(by_name[b], md5=by_name[a].md5)
        return list(out.values())

    for a, b in [
        ("resnet50.imagenet", "resnet50.imagenet_notop"),
        ("vgg16.imagenet", "vgg16.imagenet_notop"),
        ("densenet169.imagenet", "densenet201.imagenet"),
        ("densenet169.imagenet_notop", "densenet201.imagenet_notop"),
        ("inception_v3.imagenet", "inception_v3.imagenet_notop"),
    ]:
        bad = mismatches(swapped(a, b), reference)
        assert len(bad) == 2 and bad[0].startswith((a, b)) and bad[1].startswith((a, b)), bad
