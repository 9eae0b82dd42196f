"""1-D pooling layers (rnnkit.layers.pooling): finite-difference gradients of every layer and
option (masks, data formats, keepdims, padding, strides), parity with Keras 3 (including how
masks are treated), config round trips, argument errors, and functional models."""
from __future__ import annotations

import json
import warnings
from typing import Any, Optional

import numpy as np
import pytest

import helpers
from rnnkit.layers import base
from rnnkit.layers.core import Dense, Embedding, Masking
from rnnkit.layers.input_layer import Input
from rnnkit.layers.pooling import (AveragePooling1D, AvgPool1D, GlobalAveragePooling1D, GlobalAvgPool1D,
                                   GlobalMaxPool1D, GlobalMaxPooling1D, MaxPool1D, MaxPooling1D)
from rnnkit.models import Model
from rnnkit.optimizers import Adam

F64 = {"dtype": "float64"}
GRAD_TOL = 1e-6      # relative error of analytic vs central-difference gradients (float64)
KERAS_TOL = 1e-5     # rtol and atol against Keras 3 (float32)
FORMATS = ["channels_last", "channels_first"]


def _x(rng: np.random.Generator, N: int, T: int, C: int, data_format: str, dtype: Any = np.float64) -> np.ndarray:
    shape = (N, T, C) if data_format == "channels_last" else (N, C, T)
    return rng.standard_normal(shape).astype(dtype)


def _mask(rng: np.random.Generator, N: int, T: int) -> np.ndarray:
    """Random holes; sample 0 starts masked, sample 1 (when N > 2) is fully masked."""
    m = rng.random((N, T)) < 0.6
    m[0, 0] = False
    m[0, -1] = True
    if N > 2:
        m[1] = False
    return m


def _check_grad(layer: base.Layer, x: np.ndarray, rng: np.random.Generator,
                mask: Optional[np.ndarray] = None) -> None:
    """d(sum(out * W))/dx from ``layer.backward`` against central differences."""
    out, ctx = layer.apply(x, mask=mask)
    W = rng.standard_normal(out.shape)
    dx = layer.backward(W, ctx)
    assert dx.shape == x.shape and dx.dtype == np.float64
    num = helpers.numerical_grad(lambda: float(np.sum(layer(x, mask=mask) * W)), x)
    helpers.assert_close_rel(dx, num, GRAD_TOL, f"{type(layer).__name__} dx")


def _ntc(a: np.ndarray, data_format: str) -> np.ndarray:
    return a if data_format == "channels_last" else a.transpose(0, 2, 1)


# ---------------------------------------------------------------------------------------------
# global pooling
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_values(rng, data_format, keepdims):
    x = _x(rng, 4, 5, 3, data_format)
    m = _mask(rng, 4, 5)
    layer = GlobalAveragePooling1D(data_format=data_format, keepdims=keepdims, **F64)
    xt = _ntc(x, data_format)
    want = xt.mean(axis=1)
    mf = m[:, :, None].astype(float)
    want_m = np.divide((xt * mf).sum(1), mf.sum(1), out=np.zeros_like(want), where=mf.sum(1) > 0)
    for mask, w in ((None, want), (m, want_m)):
        out = layer(x, mask=mask)
        assert out.shape == layer.compute_output_shape(x.shape)
        got = out.reshape(4, 3) if keepdims else out
        np.testing.assert_allclose(got, w, rtol=1e-13, atol=1e-15)
    # a fully masked sample gives 0 (Keras: NaN), and no gradient
    assert np.all(layer(x, mask=m)[1] == 0.0)
    assert layer.compute_mask(x, m) is None


def test_global_average_masked_steps_do_not_leak_inf():
    """Masked steps are replaced by 0, as in Keras: an inf there does not turn into NaN."""
    x = np.array([[[1.0], [np.inf], [3.0]]])
    m = np.array([[True, False, True]])
    np.testing.assert_array_equal(GlobalAveragePooling1D(**F64)(x, mask=m), [[2.0]])


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_global_average_gradients(rng, data_format, keepdims, masked):
    x = _x(rng, 3, 5, 2, data_format)
    layer = GlobalAveragePooling1D(data_format=data_format, keepdims=keepdims, **F64)
    _check_grad(layer, x, rng, _mask(rng, 3, 5) if masked else None)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_max_values_and_gradients(rng, data_format, keepdims):
    x = _x(rng, 3, 5, 2, data_format)
    layer = GlobalMaxPooling1D(data_format=data_format, keepdims=keepdims, **F64)
    out = layer(x)
    assert out.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_array_equal(out.reshape(3, 2), _ntc(x, data_format).max(axis=1))
    _check_grad(layer, x, rng)


# Keras's warning when a layer that does not support masking is handed a mask (rnnkit's base
# layer gives it once per layer, as Keras does in a model)
NO_MASKING = "does not support masking"


def test_global_max_takes_the_valid_steps_only(rng):
    """Unlike Keras 3 (which drops the mask), the maximum is over the valid steps; an all-masked
    sample gives 0 with zero gradient."""
    x = rng.standard_normal((3, 5, 2))
    m = _mask(rng, 3, 5)
    m[2] = False
    x[0, ~m[0]] = 10.0  # would win if masked steps took part
    layer = GlobalMaxPooling1D(**F64)
    assert layer.supports_masking
    out = layer(x, mask=m)
    want = np.stack([x[i, m[i]].max(axis=0) if m[i].any() else np.zeros(2) for i in range(3)])
    np.testing.assert_array_equal(out, want)
    assert layer.compute_mask(x, m) is None
    W = rng.standard_normal(out.shape)
    layer(x, mask=m)
    dx = layer.backward(W)
    assert np.all(dx[~m] == 0)
    _check_grad(layer, x, rng, mask=m)


def test_global_max_gradient_goes_to_first_maximum():
    x = np.array([[[1.0], [3.0], [3.0], [2.0]]])
    layer = GlobalMaxPooling1D(**F64)
    out, ctx = layer.apply(x)
    np.testing.assert_array_equal(layer.backward(np.array([[5.0]]), ctx)[0, :, 0], [0.0, 5.0, 0.0, 0.0])


# ---------------------------------------------------------------------------------------------
# windowed pooling
# ---------------------------------------------------------------------------------------------

def _ref_pool(x: np.ndarray, pool: int, stride: int, padding: str, mode: str) -> np.ndarray:
    """Loop reference on [N, T, C]: TensorFlow's 'same' rule (left = total // 2), padded
    positions left out of both the mean and the max."""
    T = x.shape[1]
    if padding == "valid":
        L, left = (T - pool) // stride + 1, 0
    else:
        L = -(-T // stride)
        left = max(0, (L - 1) * stride + pool - T) // 2
    out = np.empty((x.shape[0], L, x.shape[2]))
    for j in range(L):
        lo, hi = max(0, j * stride - left), min(T, j * stride - left + pool)
        win = x[:, lo:hi, :]
        out[:, j, :] = win.mean(axis=1) if mode == "avg" else win.max(axis=1)
    return out


POOL_CASES = [  # (T, pool_size, strides, padding)
    (7, 2, None, "valid"), (8, 3, 2, "valid"), (6, 4, 1, "valid"), (5, 5, 1, "valid"),
    (7, 3, 1, "same"), (8, 3, 2, "same"), (5, 3, 3, "same"), (7, 2, 1, "same"), (5, 2, 3, "same"),
    (6, 4, 1, "same"), (4, 5, 2, "same"),
]


@pytest.mark.parametrize("cls,mode", [(AveragePooling1D, "avg"), (MaxPooling1D, "max")], ids=["avg", "max"])
@pytest.mark.parametrize("T,pool,strides,padding", POOL_CASES)
def test_windowed_pooling_values_and_gradients(rng, cls, mode, T, pool, strides, padding):
    x = rng.standard_normal((2, T, 3))
    layer = cls(pool_size=pool, strides=strides, padding=padding, **F64)
    out = layer(x)
    want = _ref_pool(x, pool, strides or pool, padding, mode)
    assert out.shape == want.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-15)
    _check_grad(layer, x, rng)


@pytest.mark.parametrize("cls", [AveragePooling1D, MaxPooling1D])
def test_windowed_pooling_channels_first(rng, cls):
    x = rng.standard_normal((2, 3, 7))  # [N, C, T]
    layer = cls(3, 2, "same", data_format="channels_first", **F64)
    ref = cls(3, 2, "same", **F64)(np.ascontiguousarray(x.transpose(0, 2, 1)))
    out = layer(x)
    assert out.shape == (2, 3, 4) and layer.compute_output_shape((None, 3, 7)) == (None, 3, 4)
    np.testing.assert_allclose(out, ref.transpose(0, 2, 1), rtol=1e-13, atol=1e-15)
    _check_grad(layer, x, rng)


def test_windowed_pooling_ignores_the_mask(rng):
    x = rng.standard_normal((2, 6, 3))
    m = _mask(rng, 2, 6)
    for layer in (AveragePooling1D(2, **F64), MaxPooling1D(3, 1, "same", **F64)):
        assert not layer.supports_masking
        with pytest.warns(UserWarning, match=NO_MASKING):
            out = layer(x, mask=m)
        np.testing.assert_array_equal(out, layer(x))
        assert layer.compute_mask(x, m) is None


def test_max_pooling_gradient_goes_to_first_maximum_of_each_window():
    x = np.array([[[4.0], [4.0], [1.0], [1.0]]])
    layer = MaxPooling1D(2, 1, **F64)  # windows [0,1] [1,2] [2,3]
    out, ctx = layer.apply(x)
    np.testing.assert_array_equal(out[0, :, 0], [4.0, 4.0, 1.0])
    np.testing.assert_array_equal(layer.backward(np.array([[[1.0], [10.0], [100.0]]]), ctx)[0, :, 0],
                                  [1.0, 10.0, 100.0, 0.0])


def test_pooling_time_major_view(rng):
    """A batch-major view of time-major memory (what recurrent layers hand on) pools the same."""
    x_view = rng.standard_normal((6, 2, 3)).transpose(1, 0, 2)
    x = np.ascontiguousarray(x_view)
    m = _mask(rng, 2, 6)
    gap = GlobalAveragePooling1D(**F64)
    np.testing.assert_allclose(gap(x_view, mask=m), gap(x, mask=m), rtol=1e-14, atol=1e-15)
    for layer in (gap, GlobalMaxPooling1D(**F64), AveragePooling1D(2, **F64), MaxPooling1D(3, 2, "same", **F64)):
        np.testing.assert_allclose(layer(x_view), layer(x), rtol=1e-14, atol=1e-15)


def test_unknown_steps_in_output_shape():
    assert GlobalAveragePooling1D().compute_output_shape((None, None, 4)) == (None, 4)
    assert GlobalMaxPooling1D(keepdims=True).compute_output_shape((None, None, 4)) == (None, 1, 4)
    assert GlobalAveragePooling1D(data_format="channels_first", keepdims=True).compute_output_shape(
        (None, 4, None)) == (None, 4, 1)
    assert MaxPooling1D(3, 2, "same").compute_output_shape((None, None, 4)) == (None, None, 4)
    assert AveragePooling1D(2, data_format="channels_first").compute_output_shape((None, 4, 9)) == (None, 4, 4)


def test_float32(rng):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    for layer in (GlobalAveragePooling1D(), GlobalMaxPooling1D(), AveragePooling1D(), MaxPooling1D()):
        out, ctx = layer.apply(x, mask=np.ones((2, 5), bool) if layer.supports_masking else None)
        assert out.dtype == np.float32
        assert layer.backward(np.ones_like(out), ctx).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# parity with Keras 3
# ---------------------------------------------------------------------------------------------

def _to_numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


@pytest.mark.keras
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_keras_parity(keras, rng, data_format, keepdims):
    x = _x(rng, 4, 6, 3, data_format, np.float32)
    m = _mask(rng, 4, 6)
    k_layer = keras.layers.GlobalAveragePooling1D(data_format=data_format, keepdims=keepdims)
    layer = GlobalAveragePooling1D(data_format=data_format, keepdims=keepdims)
    np.testing.assert_allclose(layer(x), _to_numpy(k_layer(x)), rtol=KERAS_TOL, atol=KERAS_TOL)
    k_masked = _to_numpy(k_layer(x, mask=m))
    out = layer(x, mask=m)
    ok = m.any(axis=1)  # Keras gives NaN for the fully masked sample, rnnkit 0
    np.testing.assert_allclose(out[ok], k_masked[ok], rtol=KERAS_TOL, atol=KERAS_TOL)
    assert np.all(np.isnan(k_masked[~ok])) and np.all(out[~ok] == 0.0)
    assert layer.compute_output_shape((None, 6, 3)) == tuple(k_layer.compute_output_shape((None, 6, 3)))
    assert k_layer.compute_mask(x, m) is None and layer.compute_mask(x, m) is None


@pytest.mark.keras
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_max_keras_parity(keras, rng, data_format, keepdims):
    x = _x(rng, 3, 6, 4, data_format, np.float32)
    k_layer = keras.layers.GlobalMaxPooling1D(data_format=data_format, keepdims=keepdims)
    layer = GlobalMaxPooling1D(data_format=data_format, keepdims=keepdims)
    np.testing.assert_allclose(layer(x), _to_numpy(k_layer(x)), rtol=KERAS_TOL, atol=KERAS_TOL)
    assert layer.compute_output_shape((None, 6, 4)) == tuple(k_layer.compute_output_shape((None, 6, 4)))


@pytest.mark.keras
def test_global_max_mask_departs_from_keras_only_on_masked_steps(keras, rng):
    """Keras 3's GlobalMaxPooling1D drops the mask (padded steps Masking zeroed take part in the
    max); rnnkit takes the max over the valid steps. On samples whose padding cannot win the max
    both agree; where it wins, rnnkit gives the max of the valid steps."""
    x = rng.standard_normal((4, 6, 3)).astype(np.float32) - 3.0  # mostly negative: zeros win the max
    x[:, 4:] = 0.0  # padding
    inp = keras.Input((6, 3))
    with pytest.warns(UserWarning, match="does not support masking"):
        k_out = keras.layers.GlobalMaxPooling1D()(keras.layers.Masking()(inp))
    k_model = keras.Model(inp, k_out)
    r_in = Input((6, 3))
    r_model = Model(r_in, GlobalMaxPooling1D()(Masking()(r_in)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras repeats the masking warning when called
        want = _to_numpy(k_model(x))
    got = r_model(x)
    assert np.all(want >= 0.0)  # Keras: the zeroed padding won
    np.testing.assert_allclose(got, x[:, :4].max(axis=1), rtol=KERAS_TOL, atol=KERAS_TOL)
    y = rng.standard_normal((4, 6, 3)).astype(np.float32) + 5.0  # no padding: the two agree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_allclose(r_model(y), _to_numpy(k_model(y)), rtol=KERAS_TOL, atol=KERAS_TOL)


# Keras's torch backend agrees with its TensorFlow/JAX/NumPy backends except for average pooling
# with asymmetric 'same' padding (it pads by replicating the edge step there); those cases are
# compared with the NumPy backend's pooling below.
KERAS_CASES = [(7, 2, None, "valid"), (8, 3, 2, "valid"), (6, 4, 1, "valid"), (7, 3, 1, "same"),
               (7, 2, 1, "same"), (5, 2, 3, "same"), (9, 5, 1, "same"), (6, 3, 2, "same"), (8, 3, 2, "same")]


def _symmetric_same(T: int, pool: int, strides: Optional[int]) -> bool:
    s = strides or pool
    return max(0, (-(-T // s) - 1) * s + pool - T) % 2 == 0


KERAS_TORCH_CASES = [("MaxPooling1D",) + c for c in KERAS_CASES] + \
    [("AveragePooling1D",) + c for c in KERAS_CASES if c[3] == "valid" or _symmetric_same(*c[:3])]


@pytest.mark.keras
@pytest.mark.parametrize("name,T,pool,strides,padding", KERAS_TORCH_CASES)
@pytest.mark.parametrize("data_format", FORMATS)
def test_windowed_pooling_keras_parity(keras, rng, name, T, pool, strides, padding, data_format):
    x = _x(rng, 2, T, 3, data_format, np.float32)
    k_layer = getattr(keras.layers, name)(pool_size=pool, strides=strides, padding=padding, data_format=data_format)
    layer = {"AveragePooling1D": AveragePooling1D, "MaxPooling1D": MaxPooling1D}[name](
        pool_size=pool, strides=strides, padding=padding, data_format=data_format)
    np.testing.assert_allclose(layer(x), _to_numpy(k_layer(x)), rtol=KERAS_TOL, atol=KERAS_TOL)
    shape = (None,) + x.shape[1:]
    assert layer.compute_output_shape(shape) == tuple(k_layer.compute_output_shape(shape))


def test_asymmetric_same_padding_follows_tensorflow(rng):
    """Asymmetric 'same' padding: TensorFlow's rule (which Keras's TensorFlow, JAX and NumPy
    backends follow; its torch backend replicates the edge step instead): the extra zero goes
    right and padded positions are left out of the mean and the max. (Importing Keras's NumPy
    backend modules in the same process as its torch backend breaks the latter, so the loop
    reference stands in for it here.)"""
    for T, pool, strides in [(8, 3, 2), (5, 3, 3), (6, 4, 1), (7, 2, 1), (4, 5, 2)]:
        x = rng.standard_normal((2, T, 3))
        for data_format in FORMATS:
            xx = x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 2, 1))
            for cls, mode in ((AveragePooling1D, "avg"), (MaxPooling1D, "max")):
                want = _ntc(_ref_pool(x, pool, strides, "same", mode), data_format)
                got = cls(pool, strides, "same", data_format=data_format, dtype="float64")(xx)
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.keras
def test_keras_configs_use_the_same_arguments(keras):
    pairs = [(keras.layers.GlobalAveragePooling1D(data_format="channels_first", keepdims=True),
              GlobalAveragePooling1D(data_format="channels_first", keepdims=True)),
             (keras.layers.GlobalMaxPooling1D(), GlobalMaxPooling1D()),
             (keras.layers.MaxPooling1D(3, 2, "same"), MaxPooling1D(3, 2, "same")),
             (keras.layers.AveragePooling1D(4), AveragePooling1D(4))]
    for k_layer, layer in pairs:
        k_cfg, cfg = k_layer.get_config(), layer.get_config()
        extra = set(cfg) - {"name", "dtype", "trainable", "input_shape"}
        assert extra and extra <= set(k_cfg)
        for key in extra:
            want = k_cfg[key]
            # Keras stores pool_size and strides as 1-tuples
            if isinstance(want, (tuple, list)):
                assert (cfg[key],) == tuple(want), key
            else:
                assert cfg[key] == want, key


# ---------------------------------------------------------------------------------------------
# config and errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    GlobalAveragePooling1D(), GlobalAveragePooling1D(data_format="channels_first", keepdims=True, dtype="float64"),
    GlobalMaxPooling1D(keepdims=True, name="gmp"), AveragePooling1D(3, 2, "same"),
    MaxPooling1D(pool_size=(2,), strides=(1,), data_format="channels_first", trainable=False),
], ids=lambda l: type(l).__name__)
def test_config_round_trip(rng, layer):
    cfg = json.loads(json.dumps(base.serialize(layer)))
    assert cfg["class_name"] == type(layer).__name__
    clone = base.deserialize(cfg)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    x = rng.standard_normal((2, 5, 5)).astype(layer.dtype)
    np.testing.assert_array_equal(clone(x), layer(x))
    assert base.get(type(layer).__name__) is type(layer)


def test_keras_aliases():
    assert GlobalAvgPool1D is GlobalAveragePooling1D and GlobalMaxPool1D is GlobalMaxPooling1D
    assert AvgPool1D is AveragePooling1D and MaxPool1D is MaxPooling1D
    assert GlobalAveragePooling1D(data_format=None).data_format == "channels_last"
    assert MaxPooling1D(padding="SAME").padding == "same"


def _raises(exc: type, fn: Any, *words: str) -> None:
    with pytest.raises(exc) as info:
        fn()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_errors(rng):
    x = rng.standard_normal((2, 5, 3))
    gap = GlobalAveragePooling1D(name="gap")
    _raises(ValueError, lambda: gap(x[:, :, 0]), "gap: x", "3 dimensions", "(2, 5)")
    _raises(ValueError, lambda: gap(x[:, :0]), "gap: x", "at least 1 time step")
    _raises(ValueError, lambda: gap(x, mask=np.ones((2, 4), bool)), "gap: mask", "(2, 5)", "(2, 4)")
    _raises(TypeError, lambda: gap(x, mask=np.ones((2, 5), np.float32)), "gap: mask", "float32")
    _raises(TypeError, lambda: gap(x.astype(np.int64)), "gap: x", "int64")
    _raises(TypeError, lambda: gap([x, x]), "inputs")
    _raises(ValueError, lambda: GlobalAveragePooling1D(data_format="channels_middle"), "data_format")
    _raises(ValueError, lambda: GlobalMaxPooling1D().compute_output_shape((None, 4)), "input_shape", "3 dimensions")
    _raises(ValueError, lambda: MaxPooling1D(pool_size=0), "pool_size", ">= 1")
    _raises(TypeError, lambda: MaxPooling1D(pool_size=2.5), "pool_size")
    _raises(ValueError, lambda: MaxPooling1D(pool_size=(2, 2)), "pool_size", "1 int")
    _raises(ValueError, lambda: AveragePooling1D(strides=0), "strides")
    _raises(ValueError, lambda: AveragePooling1D(padding="causal"), "padding")
    mp = MaxPooling1D(4, name="mp")
    _raises(ValueError, lambda: mp(x[:, :3]), "mp: x", "fewer than pool_size=4")
    _raises(ValueError, lambda: mp.compute_output_shape((None, 3, 2)), "input_shape", "fewer than pool_size=4")
    out, ctx = mp.apply(x)
    _raises(ValueError, lambda: mp.backward(np.ones((2, 2, 3)), ctx), "mp: d_out", "(2, 1, 3)")
    out, ctx = gap.apply(x)
    _raises(ValueError, lambda: gap.backward(np.ones((2, 1, 3)), ctx), "gap: d_out", "(2, 3)")
    _raises(ValueError, lambda: GlobalMaxPooling1D(name="g")(Input((5,))), "g: input_shape", "3 dimensions")


# ---------------------------------------------------------------------------------------------
# functional models
# ---------------------------------------------------------------------------------------------

def test_masked_sequence_model_gradients_and_training(rng, one_thread):
    """Embedding(mask_zero) -> Dense -> GlobalAveragePooling1D (the mask ends here) -> Dense,
    side by side with MaxPooling1D -> GlobalMaxPooling1D: the model's output, its backward
    against finite differences, and training."""
    from rnnkit.layers.merge import Concatenate

    tok = Input((6,), dtype="int64")
    e = Embedding(9, 4, mask_zero=True, name="emb", **F64)(tok)
    h = Dense(4, activation="tanh", name="proj", **F64)(e)
    avg = GlobalAveragePooling1D(name="gap", **F64)(h)
    mx = GlobalMaxPooling1D(**F64)(MaxPooling1D(2, 1, "same", **F64)(h))
    out = Dense(1, name="head", **F64)(Concatenate(**F64)([avg, mx]))
    model = Model(tok, out)
    t = np.array([[1, 2, 3, 0, 0, 0], [4, 0, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0], [8, 7, 1, 1, 2, 0]])
    with pytest.warns(UserWarning, match="MaxPooling1D.*" + NO_MASKING):  # the mask stops there
        y = model(t)
    assert y.shape == (4, 1) and model.output_mask is None
    # the average is over the valid tokens only (0 for the all-padding sample); the max pooling
    # ignores the mask, and stride-1 'same' windows followed by a global max is the global max
    proj, head = model.get_layer("proj"), model.get_layer("head")
    hv = np.tanh(model.get_layer("emb").params["embeddings"][t] @ proj.params["kernel"] + proj.params["bias"])
    m = (t != 0)[:, :, None]
    want_avg = np.divide((hv * m).sum(1), m.sum(1), out=np.zeros((4, 4)), where=m.sum(1) > 0)
    want = np.concatenate([want_avg, hv.max(axis=1)], axis=1) @ head.params["kernel"] + head.params["bias"]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-14)
    W = rng.standard_normal(y.shape)
    model.zero_grad()
    model.backward(W)

    def loss() -> float:
        return float(np.sum(model(t) * W))

    for layer in model.layers:
        for k, p in layer.params.items():
            helpers.assert_close_rel(layer.grads[k], helpers.numerical_grad(loss, p), GRAD_TOL, f"{layer.name}.{k}")

    tokens = rng.integers(0, 9, size=(64, 6))
    target = ((tokens == 3).sum(1, keepdims=True) > 0).astype(np.float64)
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse")
    before = model.evaluate(tokens, target)
    model.fit(tokens, target, epochs=20, batch_size=16, verbose=0, seed=0)
    assert model.evaluate(tokens, target) < 0.5 * before


def test_continuous_input_model_gradients(rng, one_thread):
    """Dense -> AveragePooling1D ('same') -> Permute -> MaxPooling1D (channels_first) ->
    GlobalAveragePooling1D (channels_first, keepdims) -> GlobalMaxPooling1D (channels_first) ->
    Dense: input and parameter gradients through the graph against finite differences."""
    from rnnkit.layers.reshaping import Permute

    inp = Input((7, 3), dtype="float64")
    h = Dense(4, activation="tanh", **F64)(inp)
    p = AveragePooling1D(3, 2, "same", **F64)(h)                                        # [N, 4, 4]
    q = MaxPooling1D(2, 1, "valid", data_format="channels_first", **F64)(Permute((2, 1), **F64)(p))  # [N, 4, 3]
    g = GlobalAveragePooling1D(data_format="channels_first", keepdims=True, **F64)(q)   # [N, 4, 1]
    out = Dense(2, **F64)(GlobalMaxPooling1D(data_format="channels_first", **F64)(g))   # [N, 2]
    model = Model(inp, out)
    x = rng.standard_normal((3, 7, 3))
    y = model(x)
    assert y.shape == (3, 2)
    W = rng.standard_normal(y.shape)
    model.zero_grad()
    dx = model.backward(W)

    def loss() -> float:
        return float(np.sum(model(x) * W))

    helpers.assert_close_rel(dx, helpers.numerical_grad(loss, x), GRAD_TOL, "dx")
    for layer in model.layers:
        for k, prm in layer.params.items():
            num = helpers.numerical_grad(loss, prm)
            helpers.assert_close_rel(layer.grads[k], num, GRAD_TOL, f"{layer.name}.{k}")
