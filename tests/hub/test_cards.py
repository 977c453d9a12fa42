"""Weight cards: the shipped ones match Keras' own URLs and hashes; bad cards fail clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_card

import zoo
from zoo.errors import CardError, UnknownModelError
from zoo.hub.cards import all_cards, get_card, read_card_file

IMAGENET_ARCHS = ["inception_v3", "resnet50", "resnet101", "resnet152", "densenet121",
                  "densenet169", "densenet201", "vgg16", "vgg19"]


def _keras_reference():
    """(url, md5) pairs exactly as keras.applications builds them."""
    from keras.src.applications import densenet, inception_v3, resnet, vgg16, vgg19

    ref = {
        ("inception_v3", True): inception_v3.WEIGHTS_PATH,
        ("inception_v3", False): inception_v3.WEIGHTS_PATH_NO_TOP,
        ("vgg16", True): vgg16.WEIGHTS_PATH,
        ("vgg16", False): vgg16.WEIGHTS_PATH_NO_TOP,
        ("vgg19", True): vgg19.WEIGHTS_PATH,
        ("vgg19", False): vgg19.WEIGHTS_PATH_NO_TOP,
    }
    for n in ("resnet50", "resnet101", "resnet152"):
        ref[n, True] = f"{resnet.BASE_WEIGHTS_PATH}{n}_weights_tf_dim_ordering_tf_kernels.h5"
        ref[n, False] = f"{resnet.BASE_WEIGHTS_PATH}{n}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    for n in ("densenet121", "densenet169", "densenet201"):
        ref[n, True] = getattr(densenet, f"{n.upper()}_WEIGHT_PATH")
        ref[n, False] = getattr(densenet, f"{n.upper()}_WEIGHT_PATH_NO_TOP")
    return ref, resnet.WEIGHTS_HASHES


@pytest.mark.parametrize("arch", IMAGENET_ARCHS)
def test_imagenet_cards_use_keras_urls_and_hashes(arch):
    import inspect

    import keras

    urls, resnet_hashes = _keras_reference()
    top, notop = get_card(f"{arch}.imagenet"), get_card(f"{arch}.imagenet_notop")
    assert top.include_top and top.num_classes == 1000 and not notop.include_top
    assert top.urls == (urls[arch, True],) and notop.urls == (urls[arch, False],)
    if arch in resnet_hashes:
        assert (top.md5, notop.md5) == resnet_hashes[arch]
    else:  # the md5s are literals inside each keras.applications constructor
        source = inspect.getsource(inspect.getmodule(getattr(keras.applications, {
            "inception_v3": "InceptionV3", "vgg16": "VGG16", "vgg19": "VGG19"}.get(arch, "DenseNet121"))))
        assert f'"{top.md5}"' in source and f'"{notop.md5}"' in source
    assert top.input_size == notop.input_size == ((299, 299, 3) if arch == "inception_v3" else (224, 224, 3))


def test_every_shipped_card_parses_and_names_a_registered_model():
    cards = all_cards()
    assert len(cards) >= 18
    for card in cards.values():
        assert card.arch in zoo.list_models(), card.name
        assert card.license and card.source and (card.sha256 or card.md5 or card.sha256_prefix)


def test_listing_and_info_do_not_import_tensorflow():
    code = ("import sys, zoo; zoo.list_models(); zoo.list_models(pretrained=True); "
            "zoo.model_info('resnet50'); zoo.model_info('vgg16.imagenet'); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_list_models_patterns_and_pretrained():
    assert zoo.list_models("resnet*") == ["resnet101", "resnet152", "resnet50", "resnet50_3d"]
    assert zoo.list_models("resnet1*") == ["resnet101", "resnet152"]
    tagged = zoo.list_models("densenet121*", pretrained=True)
    assert tagged == ["densenet121.imagenet", "densenet121.imagenet_notop", "densenet121_3d.imagenet_inflated"]
    assert "resnet50" not in zoo.list_models(pretrained=False)
    assert zoo.list_weights("vgg*") == ["vgg16.imagenet", "vgg16.imagenet_notop", "vgg16_3d.imagenet_inflated",
                                        "vgg19.imagenet", "vgg19.imagenet_notop"]


def test_model_info_returns_cards():
    info = zoo.model_info("inception_v3")
    assert info["min_size"] == 75 and {w["tag"] for w in info["weights"]} == {"imagenet", "imagenet_notop"}
    assert zoo.model_info("vgg16.imagenet")["weights"][0]["fixed_input_size"] is True


def test_unknown_names_suggest():
    with pytest.raises(UnknownModelError, match="resnet50"):
        zoo.model_info("resnet5")
    with pytest.raises(UnknownModelError, match="imagenet"):
        zoo.get_card("resnet50.imagenett")


def test_bad_cards_fail_with_file_and_field(zoo_env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[resnet50.x]\nurls = ["a.h5"]\nformat = "keras-legacy-h5"\n')
    with pytest.raises(CardError, match="lacks input_size"):
        read_card_file(bad)
    bad.write_text('[resnet50.x]\nurls=["a"]\nformat="keras-legacy-h5"\ninput_size=[1,1,3]\n'
                   'preprocess="tf"\nlicense="x"\nsource="x"\n')
    with pytest.raises(CardError, match="neither sha256 nor md5"):
        read_card_file(bad)
    bad.write_text("not = [toml")
    with pytest.raises(CardError, match="cannot be read"):
        read_card_file(bad)
    write_card(zoo_env / "cards", "resnet50", "imagenet", "x.h5", b"x")
    with pytest.raises(CardError, match="defined in both"):
        all_cards()
