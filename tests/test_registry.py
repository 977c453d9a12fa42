"""zoo.registry: one Registry helper and one UnknownNameError for every named collection."""

from __future__ import annotations

import pytest

from zoo.errors import InvalidArgumentError, UnknownModelError, ZooError
from zoo.registry import Registry, UnknownNameError


def _model(name):
    from zoo.models.registry import get_entry

    return get_entry(name)


def _card(name):
    from zoo.hub.cards import get_card

    return get_card(name)


def _tag(tag):
    from zoo.models.factory import resolve_card

    return resolve_card(_model("resnet50"), tag, want_top=True)


def _pooling(name):
    from zoo.heads.mil import make_pooling

    return make_pooling(name)


def _head(name):
    from zoo.heads.builder import attach_head

    return attach_head(None, name)


def _task(name):
    from zoo.ssl.tasks import get_task

    return get_task(name)


def _sampler(name):
    from zoo.data.pipeline import DicomDataset

    return DicomDataset([], sampler=name)


def _window(name):
    from zoo.data.windows import resolve_window

    return resolve_window(name)


def _export_format(name, tmp_path):
    from zoo.export import export

    return export(None, tmp_path / "out", format=name)


def _explain_method(name, tmp_path):
    from zoo.explain.cli import explain

    return explain("simple_cnn", tmp_path / "image.png", tmp_path / "out.png", method=name)


def _precision(name):
    from zoo.train.precision import check_precision

    return check_precision(name)


def _strategy(name):
    from zoo.train.distribute import strategy

    return strategy(name)


def _engine(name):
    from zoo.infer.engines import ENGINES

    return ENGINES.get(name)


def _blend(name):
    from zoo.infer.sliding import BLENDS

    return BLENDS.check(name)


def _activation(name):
    import numpy as np

    from zoo.infer.segment import segment

    return segment(lambda w: w, np.zeros((4, 4, 1), "float32"), 4, activation=name)


def _weights_format(name):
    from zoo.weights import get_format

    return get_format(name)


def _seg_sampler(name):
    from zoo.data.seg_sampling import make_sampler

    return make_sampler(name)


def _seg_transform(name):
    from zoo.data.seg_augment import SegAugment

    return SegAugment([name])


def _seg_loss(name):
    from zoo.train.seg_losses import segmentation_loss

    return segmentation_loss(name)


def _seg_output_format(name):
    from zoo.infer.predict_segmentation import SegmentOptions

    return SegmentOptions(formats=name)


def _gan_loss(name):
    from zoo.generative.losses import gan_loss

    return gan_loss(name)


def _layer_kind(name):
    from zoo.layers.dims import layer

    return layer(name, 2)


def _semi_method(name):
    from zoo.semi import METHODS

    return METHODS.get(name)


def _feature_layer(name):
    from zoo.domain.discriminator import attach_discriminator
    from zoo.models.factory import load

    return attach_discriminator(load("simple_cnn", input_shape=(32, 32, 1), num_classes=2), name)


def _adaptation_task(name):
    from zoo.domain.adversarial import fit_adversarial

    return fit_adversarial(None, [], [], [], [], task=name)


def _harmonisation(name):
    import numpy as np

    from zoo.domain.harmonise import harmonise

    return harmonise(np.ones((1, 4, 4, 1)), name)


# (lookup, kind, a near miss, the suggestion); one row per registry of the zoo.
CASES = [
    (_model, "model", "resnet5", "resnet50"),
    (_card, "weight card", "resnet50.imagenett", "resnet50.imagenet"),
    (_tag, "weights tag of resnet50", "imagenett", "imagenet"),
    (_pooling, "MIL pooling", "wildcar", "wildcat"),
    (_head, "head", "mill", "mil"),
    (_task, "pretext task", "simclrr", "simclr"),
    (_sampler, "sampler", "slcie", "slice"),
    (_window, "CT window preset", "brian", "brain"),
    (_export_format, "export format", "tf_lite", "tflite"),
    (_explain_method, "explanation method", "grad_cam", "gradcam"),
    (_precision, "precision", "fp61", "fp16"),
    (_strategy, "strategy", "mirored", "mirrored"),
    (_layer_kind, "2D/3D layer", "max_pol", "max_pool"),
    (_weights_format, "weights format", "torch-state-dic", "torch-state-dict"),
    (_engine, "inference engine", "openvno", "openvino"),
    (_blend, "blend", "gausian", "gaussian"),
    (_seg_sampler, "segmentation sampler", "center", "centre"),
    (_seg_transform, "augmentation transform", "elastc", "elastic"),
    (_activation, "output activation", "sofmax", "softmax"),
    (_seg_loss, "segmentation loss", "dice_cee", "dice_ce"),
    (_gan_loss, "GAN loss", "hinje", "hinge"),
    (_seg_output_format, "segmentation output format", "nfiti", "nifti"),
    (_semi_method, "semi-supervised method", "mean_teachr", "mean_teacher"),


    (_feature_layer, "feature layer", "stage2_relu", "stage2_relu2"),
    (_adaptation_task, "adaptation task", "segmentaton", "segmentation"),
    (_harmonisation, "harmonisation method", "zscor", "zscore"),
]


@pytest.mark.parametrize(
    ("lookup", "kind", "near_miss", "suggestion"), CASES, ids=[c[1] for c in CASES]
)
def test_unknown_name_of_every_kind(lookup, kind, near_miss, suggestion, tmp_path):
    args = (near_miss, tmp_path) if lookup in (_export_format, _explain_method) else (near_miss,)
    with pytest.raises(UnknownNameError) as info:
        lookup(*args)
    e = info.value
    assert (e.kind, e.name) == (kind, near_miss)
    assert f"Did you mean {suggestion!r}" in str(e) and suggestion in e.choices
    assert not str(e).startswith(("'", '"')), "KeyError's quoting must not wrap the message"
    # the types these lookups raised before still catch it
    assert isinstance(
        e, UnknownModelError | InvalidArgumentError | KeyError | ValueError | ZooError
    )
    assert isinstance(e, UnknownModelError) and isinstance(e, InvalidArgumentError)


def _registry_kinds_in_source() -> dict[str, str]:
    """kind -> file of every ``Registry("kind", ...)`` written in zoo/ (module level or not)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "zoo"
    kinds = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Registry"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                kinds[node.args[0].value] = path.relative_to(root.parent).as_posix()
    return kinds


def test_every_registry_of_the_zoo_has_a_row_above():
    """A new Registry(...) in zoo/ fails here until CASES checks its unknown-name error."""
    kinds = _registry_kinds_in_source()
    assert len(kinds) >= 10, kinds  # the scan itself works
    missing = {k: f for k, f in kinds.items() if k not in {c[1] for c in CASES}}
    assert not missing, f"registries without a row in CASES: {missing}"


def test_register_get_names():
    reg = Registry("colour", argument="colour")
    reg.register("red", 1)

    @reg.register("green")
    def green():
        return 2

    assert reg.names() == ["red", "green"] and reg.get("green") is green and reg["red"] == 1
    assert "red" in reg and "blue" not in reg and ["x"] not in reg and len(reg) == 2
    assert reg.get("blue", None) is None and reg.check("red") == "red"
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("red", 3)
    with pytest.raises(
        UnknownNameError, match=r"colour='gren': unknown colour\. Did you mean 'green'"
    ):
        reg.get("gren")
    with pytest.raises(UnknownNameError, match="Use one of red, green"):
        reg.get(["not", "hashable"])


def test_names_of_a_plain_list_and_lazy_population():
    calls = []
    reg = Registry(
        "thing",
        ("a", "b"),
        populate=lambda: calls.append(1) or reg.register("c", "c"),
        show_choices=False,
        hint="See list_things().",
    )
    assert calls == []
    assert reg.names() == ["a", "b", "c"] and reg.names() == ["a", "b", "c"] and calls == [1]
    message = str(reg.unknown("d"))
    assert message == "Unknown thing 'd'. See list_things()."


def test_build_refuses_an_option_the_class_does_not_take():
    """Registry.build: options through every base class's constructor; an unknown one names the
    accepted ones (a TypeError from the constructor would not)."""
    from zoo.registry import Registry

    class Base:
        def __init__(self, *, shared=1):
            self.shared = shared

    class Child(Base):
        def __init__(self, own=2, **common):
            super().__init__(**common)
            self.own = own

    things = Registry("thing", {"child": Child}, argument="thing")
    built = things.build("child", {"own": 3, "shared": 4})
    assert (built.own, built.shared) == (3, 4)
    with pytest.raises(InvalidArgumentError, match=r"thing='child' takes no option 'owm'; its options are own, shared"):
        things.build("child", {"owm": 3})
