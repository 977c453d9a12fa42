"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

An explanation that explains the model must change when the model's weights do. The check
re-initialises the weights layer by layer, from the output down to the input (cascading: each
step keeps the layers randomised before it), and after each reported step measures, per method,
the Spearman rank correlation between the map of the randomised model and the original map
(of absolute values, as in the paper's main figures, so a sign flip is not counted as a change;
a map that became constant has no ranks and counts as 0). A method whose map still correlates
at ``threshold`` or more once every layer is random does not pass: it shows the input, not the
model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from zoo.errors import InvalidArgumentError


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps (flattened); 0 when either is constant."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def kernel_layers(model) -> list:
    """Layers with a ``kernel`` (convolutions, Dense), in graph order, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(kernel_layers(layer))
        elif getattr(layer, "kernel", None) is not None and layer.weights:
            found.append(layer)
    return found


def _randomise(layer, rng) -> None:
    """He-normal kernel (std sqrt(2 / fan_in)), zero bias: a freshly initialised layer."""
    shape = tuple(layer.kernel.shape)
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
    layer.kernel.assign(rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape).astype("float32"))
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(np.zeros(tuple(layer.bias.shape), "float32"))


@dataclass
class RandomisationReport:
    """Per method, the mean rank correlation with the original map after each reported step."""

    layers: list[str]  # the layer randomised last at each reported step (top down)
    correlations: dict[str, list[float]]
    threshold: float
    insensitive: list[str] = field(default_factory=list)  # methods that do not pass

    def summary(self) -> str:
        lines = [
            f"model-randomisation check over {len(self.layers)} steps "
            f"(top down to {self.layers[-1]}); "
            f"a method passes when its rank correlation with the original map falls below "
            f"{self.threshold} once every layer is random:"
        ]
        for name, values in self.correlations.items():
            trace = " -> ".join(f"{v:.2f}" for v in values)
            verdict = (
                "does NOT change with the weights: it fails the sanity check"
                if name in self.insensitive
                else "changes with the weights: passes"
            )
            lines.append(f"  {name}: {trace}; {verdict}")
        return "\n".join(lines)


def randomisation_check(
    model,
    images,
    methods: Sequence = ("gradcam", "saliency", "smoothgrad", "integrated_gradients", "occlusion"),
    class_index=None,
    options: dict | None = None,
    report_after: int | None = None,
    threshold: float = 0.5,
    seed: int = 0,
) -> RandomisationReport:
    """Cascading randomisation of a copy of ``model`` (the model itself is untouched).

    methods: names of ``zoo.explain.METHODS`` or (name, function(model, images, class_index))
        pairs, e.g. a baseline that ignores the model.
    options: per method name, keyword arguments for ``explain_batch``
        (e.g. {"smoothgrad": {"samples": 4}}).
    report_after: measure after this many evenly spaced steps (the last always fully random);
        default after every layer.
    class_index: the class explained; default each image's top class under the original model,
        kept for every randomised copy.
    """
    from zoo.explain.api import explain_batch
    from zoo.explain.attribution import Scorer
    from zoo.explain.inputs import check_images

    x = check_images(model, images, "randomisation_check")
    options = dict(options or {})
    functions: dict[str, Callable] = {}
    for m in methods:
        if isinstance(m, str):
            functions[m] = (
                lambda name: (
                    lambda mdl, imgs, cls: explain_batch(
                        mdl, imgs, name, class_index=cls, **options.get(name, {})
                    )
                )
            )(m)
        elif isinstance(m, tuple) and len(m) == 2 and callable(m[1]):
            functions[m[0]] = m[1]
        else:
            raise InvalidArgumentError(
                f"methods: {m!r} is neither a method name (zoo.explain.METHODS) nor a "
                "(name, function(model, images, class_index)) pair."
            )
    index = Scorer(model).classes(x, class_index)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    cascade = list(reversed(kernel_layers(copy)))
    if not cascade:
        raise InvalidArgumentError(
            f"model {model.name!r} has no layer with weights to randomise; the check "
            "needs a model with convolution or Dense layers."
        )
    n = len(cascade) if report_after is None else min(max(1, int(report_after)), len(cascade))
    stops = sorted({int(round(k * len(cascade) / n)) - 1 for k in range(1, n + 1)})
    original = {name: np.asarray(f(model, x, index)) for name, f in functions.items()}
    rng = np.random.default_rng(seed)
    correlations = {name: [] for name in functions}
    reported = []
    for step, layer in enumerate(cascade):
        _randomise(layer, rng)
        if step not in stops:
            continue
        reported.append(layer.name)
        for name, f in functions.items():
            maps = np.asarray(f(copy, x, index))
            rho = [spearman(np.abs(a), np.abs(b)) for a, b in zip(original[name], maps)]
            correlations[name].append(float(np.mean(rho)))
    insensitive = [name for name, values in correlations.items() if values[-1] >= threshold]
    return RandomisationReport(reported, correlations, threshold, insensitive)
