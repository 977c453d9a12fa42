"""The project's own shipped checkpoint, loaded through the registry as a user would."""

from __future__ import annotations

import numpy as np

import zoo
from zoo.data.synthetic import make_phantoms
from zoo.demo import SOURCE_TASK
from zoo.hub.cards import builtin_card_dir


def test_phantom_checkpoint_defaults_to_its_card_and_still_classifies(zoo_env):
    shipped = set(builtin_card_dir().iterdir())
    model = zoo.load("simple_cnn.phantom")  # channels and size come from the card
    assert tuple(model.inputs[0].shape[1:]) == (64, 64, 1)
    assert zoo.input_contract(model)["in_chans"] == 1 and model.zoo_weights == "simple_cnn.phantom"
    held_out = make_phantoms(300, seed=SOURCE_TASK["seed"] + 7,
                             **{k: v for k, v in SOURCE_TASK.items() if k not in ("n", "seed")})
    accuracy = np.mean(np.argmax(model.predict(held_out.images, verbose=0), -1) == held_out.labels)
    assert accuracy > 0.85  # the card records 0.922 on its validation split
    # verifying the shipped file leaves the installed package untouched
    assert set(builtin_card_dir().iterdir()) == shipped
    assert not (zoo_env / "stamps").exists()  # no stamp files: every process hashes on first use
