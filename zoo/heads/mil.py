"""Multiple-instance pooling: instance scores (or embeddings) -> one bag score per class.

Every layer takes a spatial map (B, H, W, C), whose H*W positions are the instances, or
a bag (B, N, C), and returns (B, C). The pooling decides what a bag label teaches each
instance, hence whether a lesion of a few percent of the image is found:

- ``GlobalMaxMIL`` (Oquab 2015): only the best instance gets gradient.
- ``GlobalAverageMIL`` (GAP, the CAM of Zhou 2016): every instance gets the same gradient.
- ``LSEPooling``: (1/r) log mean exp(r s), mean as r -> 0 and max as r -> infinity;
  r fixed or learnable (kept positive as exp(log r)).
- ``WildcatPooling``: WELDON / WILDCAT (Durand 2016, 2017): mean of the k_max highest plus
  alpha times the mean of the k_min lowest scores, after class-wise averaging of
  ``maps_per_class`` maps. k = 1, alpha = 1 is MANTRA's max + min. The zoo does **not**
  divide by 2 (the WILDCAT reference code does; pass ``halve=True`` for that convention).
- ``TwoSidedLSE``: Durand's generalised log-sum-exp, LSE_{beta+}(s) - LSE_{beta-}(-s): a soft
  max plus a soft min, max + min as beta -> infinity and 2 x mean as beta -> 0.
- ``AttentionMIL`` (Ilse 2018, plain or gated): softmax attention over instance embeddings and
  their weighted **sum**, so the bag embedding does not depend on instance order.

All in ``keras.ops`` and serializable; bad settings raise a ``ZooError`` at build time.
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from zoo.errors import InputShapeError, InvalidArgumentError, ZooError
from zoo.registry import Registry


def _check_rank(layer, input_shape, ranks=(3, 4)) -> None:
    if len(input_shape) not in ranks:
        kinds = {3: "a bag (B, N, C)", 4: "a spatial map (B, H, W, C)"}
        want = " or ".join(kinds[r] for r in ranks)
        raise InputShapeError(
            f"{type(layer).__name__} {layer.name!r} got an input of shape {tuple(input_shape)} "
            f"(rank {len(input_shape)}); it pools {want}. Reshape the scores to that layout first."
        )


def num_instances(input_shape) -> int | None:
    """N = H*W of a map or N of a bag, or None when a size is not known until run time."""
    sizes = input_shape[1:-1]
    return None if any(s is None for s in sizes) else math.prod(sizes)


def as_bag(x):
    """(B, H, W, C) or (B, N, C) -> (B, N, C)."""
    if len(x.shape) == 3:
        return x
    return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1]))


def class_wise_average(x, maps_per_class: int):
    """WILDCAT's class-wise pooling: average each class's ``maps_per_class`` adjacent channels."""
    if maps_per_class == 1:
        return x
    channels = x.shape[-1]
    shape = (*ops.shape(x)[:-1], channels // maps_per_class, maps_per_class)
    return ops.mean(ops.reshape(x, shape), axis=-1)


def check_maps_per_class(maps_per_class, channels=None) -> int:
    if (
        isinstance(maps_per_class, bool)
        or not isinstance(maps_per_class, numbers.Integral)
        or maps_per_class < 1
    ):
        raise InvalidArgumentError(
            f"maps_per_class={maps_per_class!r}: must be a positive integer."
        )
    if channels is not None and channels % maps_per_class:
        raise InputShapeError(
            f"maps_per_class={maps_per_class} does not divide the {channels} input channels; give "
            f"num_classes * maps_per_class channels (class c owns channels c*M .. c*M+M-1)."
        )
    return int(maps_per_class)


def lse(s, r, axis=1):
    """(1/r) log mean exp(r s) along ``axis``, stable for tiny and huge r.

    Written as max + log1p(mean(expm1(r (s - max)))) / r: exp never overflows, and for
    r -> 0 no 1 + tiny rounding loses the mean.
    """
    m = ops.max(s, axis=axis, keepdims=True)
    inner = ops.mean(ops.expm1(r * (s - ops.stop_gradient(m))), axis=axis)
    return ops.squeeze(ops.stop_gradient(m), axis) + ops.log1p(inner) / r


class _Pooling(keras.layers.Layer):
    """Base: validate the rank, flatten a map to a bag, pool the instance axis."""

    def build(self, input_shape):
        _check_rank(self, input_shape)
        self.validate(input_shape)

    def validate(self, input_shape):
        pass

    def call(self, x):
        return self.pool(ops.cast(as_bag(x), self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="zoo")
class GlobalMaxMIL(_Pooling):
    """Bag score = the highest instance score (Oquab et al. 2015)."""

    def pool(self, s):
        return ops.max(s, axis=1)


@keras.saving.register_keras_serializable(package="zoo")
class GlobalAverageMIL(_Pooling):
    """Bag score = the mean instance score (global average pooling, CAM; Zhou et al. 2016)."""

    def pool(self, s):
        return ops.mean(s, axis=1)


def _check_r(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
        or not math.isfinite(value)
    ):
        raise InvalidArgumentError(
            f"{name}={value!r}: the log-sum-exp sharpness must be a finite number > 0 "
            "(small: close to the mean, large: close to the max)."
        )
    return float(value)


@keras.saving.register_keras_serializable(package="zoo")
class LSEPooling(_Pooling):
    """Log-sum-exp pooling (1/r) log mean exp(r s); ``learnable`` trains r (> 0 as exp(log r))."""

    def __init__(self, r=5.0, learnable=False, **kwargs):
        super().__init__(**kwargs)
        self.r = _check_r("r", r)
        self.learnable = bool(learnable)

    def build(self, input_shape):
        super().build(input_shape)
        if self.learnable:
            self.log_r = self.add_weight(name="log_r", shape=(),
                                         initializer=keras.initializers.Constant(math.log(self.r)))

    def sharpness(self):
        return ops.exp(ops.cast(self.log_r, self.compute_dtype)) if self.learnable else self.r

    def pool(self, s):
        return lse(s, self.sharpness())

    def get_config(self):
        return {**super().get_config(), "r": self.r, "learnable": self.learnable}


@keras.saving.register_keras_serializable(package="zoo")
class TwoSidedLSE(_Pooling):
    """Generalised LSE (Durand et al.): LSE_{beta_pos}(s) - LSE_{beta_neg}(-s).

    A soft max for the positive evidence plus a soft min for the negative evidence:
    max + min as both betas grow, 2 x mean as both shrink to 0.
    """

    def __init__(self, beta_pos=5.0, beta_neg=5.0, **kwargs):
        super().__init__(**kwargs)
        self.beta_pos = _check_r("beta_pos", beta_pos)
        self.beta_neg = _check_r("beta_neg", beta_neg)

    def pool(self, s):
        return lse(s, self.beta_pos) - lse(-s, self.beta_neg)

    def get_config(self):
        return {**super().get_config(), "beta_pos": self.beta_pos, "beta_neg": self.beta_neg}


def _check_k(name, k, allow_zero):
    ok_count = (
        isinstance(k, numbers.Integral)
        and not isinstance(k, bool)
        and (k >= 1 or (allow_zero and k == 0))
    )
    ok_fraction = (
        isinstance(k, numbers.Real) and not isinstance(k, numbers.Integral) and 0.0 < k <= 1.0
    )
    if not (ok_count or ok_fraction):
        raise InvalidArgumentError(
            f"{name}={k!r}: give a count of instances (int >= {0 if allow_zero else 1}) or a "
            "fraction of them (float in (0, 1])."
        )
    return int(k) if ok_count else float(k)


def _k_of(k, n):
    """A count, or a fraction of ``n`` instances rounded to at least 1 (n may be a tensor)."""
    if isinstance(k, int):
        return k
    if isinstance(n, int):
        return max(1, round(k * n))
    return ops.maximum(1, ops.cast(ops.round(k * ops.cast(n, "float32")), "int32"))


@keras.saving.register_keras_serializable(package="zoo")
class WildcatPooling(_Pooling):
    """WELDON / WILDCAT: mean of the k_max top + alpha x mean of the k_min bottom instance scores.

    ``k_max``, ``k_min``: counts (int) or fractions of the instances (float in (0, 1]); k_min = 0
    keeps the top-k only. ``maps_per_class`` > 1: the input has num_classes * M channels, which
    are first averaged class-wise (WILDCAT's multi-map transfer). ``halve=True`` divides the
    two-sided score by 2 as the WILDCAT reference code does; the zoo's default does not, so
    k = 1, alpha = 1 is exactly max + min (MANTRA).
    """

    def __init__(self, k_max=1, k_min=1, alpha=1.0, maps_per_class=1, halve=False, **kwargs):
        super().__init__(**kwargs)
        self.k_max = _check_k("k_max", k_max, allow_zero=False)
        self.k_min = _check_k("k_min", k_min, allow_zero=True)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not math.isfinite(alpha)
            or alpha < 0
        ):
            raise InvalidArgumentError(
                f"alpha={alpha!r}: the weight of the negative evidence must be >= 0."
            )
        self.alpha = float(alpha)
        self.maps_per_class = check_maps_per_class(maps_per_class)
        self.halve = bool(halve)

    def validate(self, input_shape):
        check_maps_per_class(self.maps_per_class, input_shape[-1])
        n = num_instances(input_shape)
        if n is None:
            return
        for name in ("k_max", "k_min"):
            k = getattr(self, name)
            if isinstance(k, int) and k > n:
                raise InvalidArgumentError(
                    f"{name}={k} is larger than the {n} instances of the input "
                    f"{tuple(input_shape)}; use at most {n}, or a fraction such as {name}=0.1."
                )

    def pool(self, s):
        s = class_wise_average(s, self.maps_per_class)
        n = s.shape[1] if s.shape[1] is not None else ops.shape(s)[1]
        ranked = ops.sort(ops.transpose(s, (0, 2, 1)), axis=-1)  # (B, C, N), ascending
        position = ops.arange(n)
        k_max = _k_of(self.k_max, n)
        top = ops.cast(position >= n - k_max, s.dtype)
        out = ops.sum(ranked * top, axis=-1) / ops.cast(k_max, s.dtype)
        if self.k_min and self.alpha:
            k_min = _k_of(self.k_min, n)
            bottom = ops.cast(position < k_min, s.dtype)
            out = out + self.alpha * ops.sum(ranked * bottom, axis=-1) / ops.cast(k_min, s.dtype)
            if self.halve:
                out = out / 2.0
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] // self.maps_per_class)

    def get_config(self):
        return {
            **super().get_config(),
            "k_max": self.k_max,
            "k_min": self.k_min,
            "alpha": self.alpha,
            "maps_per_class": self.maps_per_class,
            "halve": self.halve,
        }


@keras.saving.register_keras_serializable(package="zoo")
class ClassWisePooling(keras.layers.Layer):
    """Average each class's ``maps_per_class`` adjacent channels (any rank, last axis)."""

    def __init__(self, maps_per_class=1, **kwargs):
        super().__init__(**kwargs)
        self.maps_per_class = check_maps_per_class(maps_per_class)

    def build(self, input_shape):
        check_maps_per_class(self.maps_per_class, input_shape[-1])

    def call(self, x):
        return class_wise_average(x, self.maps_per_class)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.maps_per_class)

    def get_config(self):
        return {**super().get_config(), "maps_per_class": self.maps_per_class}


@keras.saving.register_keras_serializable(package="zoo")
class AttentionMIL(keras.layers.Layer):
    """Attention MIL pooling (Ilse et al. 2018) of instance embeddings h_n (B, N, D) or (B, H, W,
    D).

    a_n = softmax_n(w^T tanh(V h_n)) (gated: w^T (tanh(V h_n) * sigmoid(U h_n))), bag
    embedding z = sum_n a_n h_n: a weighted **sum**, invariant to instance order.
    ``return_attention`` also returns a with the input's instance layout, (B, N) or (B, H, W).
    """

    def __init__(self, units=64, gated=False, return_attention=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise InvalidArgumentError(
                f"units={units!r}: the attention hidden size must be a positive integer."
            )
        self.units = int(units)
        self.gated = bool(gated)
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        _check_rank(self, input_shape)
        dim = input_shape[-1]
        self.V = self.add_weight(name="V", shape=(dim, self.units), initializer="glorot_uniform")
        if self.gated:
            self.U = self.add_weight(
                name="U", shape=(dim, self.units), initializer="glorot_uniform"
            )
        self.w = self.add_weight(name="w", shape=(self.units, 1), initializer="glorot_uniform")

    def attention(self, h):
        """Softmax weights (B, N) over the instances of the bag ``h`` (B, N, D)."""
        hidden = ops.tanh(ops.matmul(h, self.V))
        if self.gated:
            hidden = hidden * ops.sigmoid(ops.matmul(h, self.U))
        return ops.softmax(ops.squeeze(ops.matmul(hidden, self.w), -1), axis=-1)

    def call(self, x):
        h = ops.cast(as_bag(x), self.compute_dtype)
        a = self.attention(h)
        z = ops.sum(a[..., None] * h, axis=1)
        if not self.return_attention:
            return z
        return z, ops.reshape(a, ops.shape(x)[:-1])

    def compute_output_shape(self, input_shape):
        z = (input_shape[0], input_shape[-1])
        return (z, tuple(input_shape[:-1])) if self.return_attention else z

    def get_config(self):
        return {**super().get_config(), "units": self.units, "gated": self.gated,
                "return_attention": self.return_attention}


POOLINGS = Registry("MIL pooling", {
    "max": (GlobalMaxMIL, {}),
    "avg": (GlobalAverageMIL, {}),
    "lse": (LSEPooling, {}),
    "weldon": (WildcatPooling, {"alpha": 1.0}),
    "wildcat": (WildcatPooling, {"k_max": 0.1, "k_min": 0.1, "alpha": 0.7}),
    "two_sided_lse": (TwoSidedLSE, {}),
    "attention": (AttentionMIL, {}),
    "gated_attention": (AttentionMIL, {"gated": True}),
}, argument="pooling")


def make_pooling(pooling: str, name: str = "mil_pool", **options):
    """The pooling layer called ``pooling`` (a key of ``POOLINGS``) with its options."""
    # UnknownNameError (an InvalidArgumentError) with suggestions
    cls, defaults = POOLINGS.get(pooling)
    try:
        return cls(**{**defaults, **options}, name=name)
    except ZooError:
        raise
    except (TypeError, ValueError) as e:  # an option the layer does not take
        raise InvalidArgumentError(
            f"pooling={pooling!r}: bad option ({e}); see {cls.__name__}'s docstring."
        ) from None
