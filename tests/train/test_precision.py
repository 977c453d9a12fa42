"""Precision policies: the support rule, a clear error where unsupported, float32 outputs, loss scaling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from numerics_util import BF16_EPS, assert_deep_close, depth_of

import zoo
from zoo.errors import InvalidArgumentError, PrecisionError
from zoo.train import precision as P
from zoo.train.batches import Batches
from zoo.train.distribute import strategy
from zoo.train.engine import Engine
from zoo.train.tasks import Classification


@pytest.fixture
def cpu_only(monkeypatch):
    import tensorflow as tf

    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [] if kind == "GPU" else real(kind))
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])


@pytest.fixture
def bf16_compute():
    """Skip where bfloat16 ops cannot run at all: ONEDNN_MAX_CPU_ISA below bf16 on a bf16 CPU (the
    numerics check simulates an AVX2 machine so); a real AVX2 machine runs them emulated."""
    if P.onednn_caps_out_bf16():
        pytest.skip("ONEDNN_MAX_CPU_ISA caps oneDNN below bfloat16; TensorFlow still routes bf16 to it")


def _flags(monkeypatch, *flags):
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"sse4_2", "avx2", *flags}))


def test_unknown_precision_names_the_choices():
    with pytest.raises(InvalidArgumentError, match=r"precision='bf61'.*'fp32', 'bf16' or 'fp16'"):
        P.check_precision("bf61")


def test_bf16_rule_on_a_cpu(cpu_only, monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)  # the rule depends on it: start from the default
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    _flags(monkeypatch)
    assert P.device_support("bf16") == (False, "CPU (no avx512_bf16/amx_bf16)")
    with pytest.raises(PrecisionError, match="precision='bf16' is not supported natively on this CPU"):
        with P.policy("bf16"):
            pass
    assert keras.config.dtype_policy().name == "float32"
    _flags(monkeypatch, "avx512f", "avx512_bf16")
    assert P.device_support("bf16") == (True, "CPU (with avx512_bf16)")
    _flags(monkeypatch, "amx_bf16")
    assert P.device_support("bf16")[0]
    assert not P.device_support("fp16")[0] and P.device_support("fp32")[0]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below bf16: no kernel, a clear refusal
    assert P.device_support("bf16") == (False, "CPU (ONEDNN_MAX_CPU_ISA caps oneDNN below avx512_bf16)")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # without oneDNN the cap does not matter
    assert P.device_support("bf16")[0]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    assert P.device_support("bf16")[0]


def test_gpu_rule_reads_compute_capability(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"] if kind == "GPU" else [])
    for cc, bf16, fp16 in [((7, 5), False, True), ((8, 0), True, True), ((6, 1), False, False)]:
        monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda d, cc=cc: {"compute_capability": cc})
        assert (P.device_support("bf16")[0], P.device_support("fp16")[0]) == (bf16, fp16)


def test_cpu_flags_of_this_machine_are_read():
    flags = P.cpu_flags()
    assert isinstance(flags, frozenset)
    if open("/proc/cpuinfo").read().count("flags"):
        assert flags  # Linux reports at least sse/avx flags


def test_policy_is_restored_after_the_block():
    with P.policy("bf16", check=False) as name:
        assert name == "mixed_bfloat16" and keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(0)
    return zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 8))


@pytest.mark.numerics
def test_bf16_rebuild_keeps_weights_and_a_float32_output(small_model, bf16_compute):
    low = P.rebuild(small_model, "bf16", check=False)
    assert low.get_layer("stage1_conv1").compute_dtype == "bfloat16"
    assert low.get_layer("stage1_conv1").variable_dtype == "float32"
    assert low.get_layer("head_fc").compute_dtype == "float32" and low.outputs[0].dtype == "float32"
    assert P.rebuild(low, "fp16", check=False).get_layer("head_fc").compute_dtype == "float32"  # outputs pinned
    back = P.rebuild(low, "fp32")
    assert {layer.compute_dtype for layer in back.layers} == {"float32"}
    ones = np.ones((1, 32, 32, 1), "float32") * 100
    np.testing.assert_array_equal(back(ones, training=False), small_model(ones, training=False))
    for a, b in zip(small_model.get_weights(), low.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 1)).astype("float32")
    ref, out = small_model(x, training=False).numpy(), low(x, training=False).numpy()
    assert out.dtype == np.float32
    assert_deep_close(out, ref, depth_of("simple_cnn"), eps=BF16_EPS, what="bf16 vs float32 ")
    assert not np.array_equal(out, ref)  # it really computed in bfloat16


def test_fp16_training_uses_loss_scaling(small_model):
    model = P.rebuild(small_model, "fp16", check=False)
    assert model.get_layer("stage2_conv1").compute_dtype == "float16"
    optimizer = P.wrap_optimizer(keras.optimizers.SGD(0.01), "fp16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert P.wrap_optimizer(keras.optimizers.SGD(0.01), "bf16").__class__ is keras.optimizers.SGD
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 255, (8, 32, 32, 1)).astype("float32"), rng.integers(0, 2, 8)
    before = model.get_layer("head_fc").get_weights()[0].copy()
    engine = Engine(Classification(model), optimizer, strategy("cpu"))
    initial_scale = float(optimizer.dynamic_scale.numpy())
    metrics = engine.fit(Batches(x, y, 8), epochs=4)
    assert all(np.isfinite(m["loss"]) for m in metrics)
    # fp16 gradients overflow at the initial scale 2**15: those steps are skipped and the scale halved
    assert float(optimizer.dynamic_scale.numpy()) < initial_scale == 2.0**15
    after = model.get_layer("head_fc").get_weights()[0]
    assert after.dtype == np.float32 and np.all(np.isfinite(after)) and not np.array_equal(before, after)


def test_finetune_refuses_unsupported_bf16_before_training(cpu_only, monkeypatch, tmp_path):
    from zoo.train.finetune import finetune

    _flags(monkeypatch)
    data = (np.zeros((8, 32, 32, 1), np.float32), np.array([0, 1] * 4))
    with pytest.raises(PrecisionError, match="precision='bf16' is not supported natively"):
        finetune("simple_cnn", data, data, precision="bf16", out_dir=tmp_path, strategy="cpu", verbose=0)
    assert not (tmp_path / "run.json").exists()


@pytest.mark.slow
def test_finetune_in_bf16_where_supported(monkeypatch, tmp_path, bf16_compute):
    from zoo.data.synthetic import make_phantoms
    from zoo.train.finetune import finetune

    monkeypatch.setattr(P, "device_support", lambda precision: (True, "test"))
    train = make_phantoms(16, size=32, seed=3)
    keras.utils.set_random_seed(0)
    model = zoo.load("simple_cnn", in_chans=1, num_classes=2, input_shape=(32, 32), widths=(8, 8, 8, 8, 8))
    result = finetune(model, train, train, epochs=(1, 1), batch_size=8, precision="bf16", out_dir=tmp_path,
                      strategy="cpu", verbose=0, augment=False)
    assert result.model.get_layer("stage5_conv2").compute_dtype == "bfloat16"
    assert result.model.outputs[0].dtype == "float32" and keras.config.dtype_policy().name == "float32"
    assert all(np.isfinite(row["loss"]) for row in result.history)
    assert result.model.get_layer("stage5_conv2").kernel.dtype == "float32"
