"""Conv1D: output lengths and padding, forward against a loop reference, float64 finite-difference
gradients (every padding, stride, dilation, groups, with/without bias and activation), Keras 3
parity (outputs, shapes, gradients, masks), config round trip, argument and input errors, and a
Conv1D -> LSTM -> Dense model that learns."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import helpers
from rnnkit import optimizers as O
from rnnkit.layers import LSTM, Dense, Input, Masking
from rnnkit.layers.base import deserialize, get, serialize
from rnnkit.layers.conv import Conv1D
from rnnkit.models import Model, Sequential

GRAD_TOL = 1e-6  # relative error of analytic vs central-difference gradients (float64)
KERAS_TOL = 1e-5  # rtol and atol against Keras 3 (float32)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _seeded_initializers():
    """Unseeded initializers draw their seed from NumPy's global generator: seed it per test so
    that every test sees the same weights on every run."""
    state = np.random.get_state()
    np.random.seed(12345)
    yield
    np.random.set_state(state)


def ref_conv1d(x, kernel, bias, strides, dilation, padding, groups):
    """Loop reference of Keras's Conv1D (channels_last, no activation), float64: pads with the
    documented rule and sums tap by tap, filter by filter."""
    x = np.asarray(x, np.float64)
    N, T, C = x.shape
    K, Cg, F = kernel.shape
    Fg = F // groups
    span = dilation * (K - 1) + 1
    if padding == "valid":
        left = right = 0
        t_out = (T - span) // strides + 1
    else:
        t_out = -(-T // strides)
        if padding == "causal":
            left, right = span - 1, 0
        else:
            total = max((t_out - 1) * strides + span - T, 0)
            left, right = total // 2, total - total // 2
    xp = np.pad(x, ((0, 0), (left, right), (0, 0)))
    y = np.zeros((N, t_out, F))
    for t in range(t_out):
        for f in range(F):
            g = f // Fg
            for k in range(K):
                y[:, t, f] += xp[:, t * strides + k * dilation, g * Cg:(g + 1) * Cg] @ kernel[k, :, f]
    if bias is not None:
        y += bias
    return y


def _layer(*args, **kwargs):
    """A float64 Conv1D with a random (non-zero) bias, so that the bias matters in every check."""
    kwargs.setdefault("dtype", "float64")
    kwargs.setdefault("bias_initializer", "uniform")
    return Conv1D(*args, **kwargs)


def _gradcheck(layer, x, rng, what, zero=()):
    """Checks dx and every parameter gradient of L = sum(out * W) against central differences;
    the gradients named in ``zero`` must vanish (both analytic and numerical)."""
    y, ctx = layer.apply(x)
    w_out = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(w_out, ctx)
    assert dx.shape == x.shape

    def loss():
        return float(np.sum(layer.apply(x)[0] * w_out))

    helpers.assert_close_rel(dx, helpers.numerical_grad(loss, x), GRAD_TOL, f"{what} dx")
    assert set(layer.grads) == ({"kernel", "bias"} if layer.use_bias else {"kernel"})
    for k, p in layer.params.items():
        num = helpers.numerical_grad(loss, p)
        if k in zero:
            assert np.max(np.abs(layer.grads[k])) < 1e-12 and np.max(np.abs(num)) < 1e-8, f"{what} d{k}"
        else:
            helpers.assert_close_rel(layer.grads[k], num, GRAD_TOL, f"{what} d{k}")


def _pre_activation_margin(layer, x):
    """Smallest |pre-activation| of the layer's output (distance to ReLU's kink)."""
    lin = Conv1D.from_config({**layer.get_config(), "activation": None, "name": None})
    lin.maybe_build(x.shape)
    lin.set_weights(layer.get_weights())
    return float(np.min(np.abs(lin(x))))


# ---------------------------------------------------------------------------------------------
# shapes, padding and forward values
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding,strides,dilation,kernel_size,t_out", [
    ("valid", 1, 1, 3, 8), ("valid", 2, 1, 3, 4), ("valid", 3, 1, 3, 3), ("valid", 1, 2, 3, 6),
    ("valid", 1, 1, 10, 1), ("same", 1, 1, 3, 10), ("same", 2, 1, 4, 5), ("same", 3, 1, 3, 4),
    ("same", 1, 3, 3, 10), ("causal", 1, 1, 3, 10), ("causal", 3, 1, 5, 4), ("causal", 1, 4, 2, 10),
])
def test_output_length_matches_keras_formula(rng, padding, strides, dilation, kernel_size, t_out):
    layer = Conv1D(5, kernel_size, strides=strides, padding=padding, dilation_rate=dilation)
    y = layer(rng.standard_normal((2, 10, 3)).astype(np.float32))
    assert y.shape == (2, t_out, 5) and y.dtype == np.float32 and y.flags.c_contiguous
    assert layer.compute_output_shape((None, 10, 3)) == (None, t_out, 5)
    assert layer.compute_output_shape((None, None, 3)) == (None, None, 5)


def test_hand_computed_padding_values():
    x = np.arange(1.0, 6.0).reshape(1, 5, 1)  # 1 2 3 4 5
    ones = dict(kernel_initializer="ones", use_bias=False, dtype="float64")
    # causal, kernel 2: y[t] = x[t-1] + x[t] with x[-1] = 0
    np.testing.assert_array_equal(Conv1D(1, 2, padding="causal", **ones)(x)[0, :, 0], [1, 3, 5, 7, 9])
    # same, kernel 3: y[t] = x[t-1] + x[t] + x[t+1]
    np.testing.assert_array_equal(Conv1D(1, 3, padding="same", **ones)(x)[0, :, 0], [3, 6, 9, 12, 9])
    # same, even kernel 2: the one zero of padding goes on the right: y[t] = x[t] + x[t+1]
    np.testing.assert_array_equal(Conv1D(1, 2, padding="same", **ones)(x)[0, :, 0], [3, 5, 7, 9, 5])
    # valid, dilation 2: y[t] = x[t] + x[t+2]
    np.testing.assert_array_equal(Conv1D(1, 2, dilation_rate=2, **ones)(x)[0, :, 0], [4, 6, 8])
    # causal, dilation 2, kernel 2: y[t] = x[t-2] + x[t]
    np.testing.assert_array_equal(Conv1D(1, 2, padding="causal", dilation_rate=2, **ones)(x)[0, :, 0],
                                  [1, 2, 4, 6, 8])
    # same, stride 2: T_out 3, total padding (3-1)*2 + 3 - 5 = 2, one zero on each side
    np.testing.assert_array_equal(Conv1D(1, 3, strides=2, padding="same", **ones)(x)[0, :, 0], [3, 9, 9])
    # the kernel is not flipped (cross-correlation, as in Keras): taps (1, 10) weight x[t], x[t+1]
    layer = Conv1D(1, 2, use_bias=False, dtype="float64", input_shape=(5, 1))
    layer.maybe_build((None, 5, 1))
    layer.set_weights([np.array([[[1.0]], [[10.0]]])])
    np.testing.assert_array_equal(layer(x)[0, :, 0], [21, 32, 43, 54])


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (3, 1), (1, 2)])
@pytest.mark.parametrize("groups", [1, 3])
def test_forward_matches_loop_reference(rng, padding, strides, dilation, groups):
    x = rng.standard_normal((3, 13, 6))
    layer = _layer(9, 4, strides=strides, padding=padding, dilation_rate=dilation, groups=groups)
    y = layer(x)
    assert layer.params["kernel"].shape == (4, 6 // groups, 9)
    ref = ref_conv1d(x, layer.params["kernel"], layer.params["bias"], strides, dilation, padding, groups)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_channels_first_is_the_transposed_channels_last(rng):
    x = rng.standard_normal((2, 9, 4))
    last = _layer(6, 3, padding="same", strides=2, groups=2, activation="tanh")
    first = _layer(6, 3, padding="same", strides=2, groups=2, activation="tanh", data_format="channels_first")
    y_last = last(x)
    first.maybe_build((None, 4, 9))
    first.set_weights(last.get_weights())
    y_first = first(np.ascontiguousarray(x.transpose(0, 2, 1)))
    assert y_first.shape == (2, 6, 5)
    np.testing.assert_allclose(y_first, y_last.transpose(0, 2, 1), rtol=1e-14, atol=1e-14)
    assert first.compute_output_shape((None, 4, 9)) == (None, 6, 5)


def test_non_contiguous_and_time_major_inputs(rng):
    layer = _layer(5, 3, padding="causal")
    x = rng.standard_normal((4, 10, 3))
    want = layer(x)
    time_major = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)  # what an RNN hands on
    assert not time_major.flags.c_contiguous
    np.testing.assert_array_equal(layer(time_major), want)
    np.testing.assert_array_equal(layer(np.asfortranarray(x)), want)
    # float32 layer, float64 input: computed in the layer's dtype
    l32 = Conv1D(5, 3, padding="causal")
    l32.maybe_build(x.shape)
    l32.set_weights(layer.get_weights())
    y32 = l32(x)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, want, rtol=1e-5, atol=1e-5)


def test_variable_length_and_independent_contexts(rng):
    layer = _layer(4, 3, padding="valid", dilation_rate=2)
    x1, x2 = rng.standard_normal((2, 9, 3)), rng.standard_normal((3, 14, 3))
    y1, ctx1 = layer.apply(x1)
    y2, ctx2 = layer.apply(x2)  # another length after the build
    assert y1.shape == (2, 5, 4) and y2.shape == (3, 10, 4)
    d1, d2 = rng.standard_normal(y1.shape), rng.standard_normal(y2.shape)
    layer.zero_grad()
    dx1 = layer.backward(d1, ctx1)  # the first call's context, after the second call
    g1 = layer.grads["kernel"].copy()
    layer.zero_grad()
    dx2 = layer.backward(d2, ctx2)
    g2 = layer.grads["kernel"].copy()
    layer.zero_grad()
    layer.backward(d1, ctx1)
    layer.backward(d2, ctx2)
    np.testing.assert_allclose(layer.grads["kernel"], g1 + g2, rtol=1e-13, atol=1e-13)  # accumulates
    ref = _layer(4, 3, padding="valid", dilation_rate=2)
    ref.maybe_build(x1.shape)
    ref.set_weights(layer.get_weights())
    _, ref_ctx = ref.apply(x1)
    np.testing.assert_array_equal(ref.backward(d1, ref_ctx), dx1)
    assert dx2.shape == x2.shape


# ---------------------------------------------------------------------------------------------
# gradients (float64 central differences)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (3, 1), (1, 2), (1, 3)])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("use_bias,activation", [(True, None), (False, "tanh")])
def test_gradients_match_finite_differences(rng, padding, strides, dilation, groups, use_bias, activation):
    x = rng.standard_normal((2, 8, 4))
    layer = _layer(4, 3, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
                   use_bias=use_bias, activation=activation)
    _gradcheck(layer, x, rng, f"{padding} s={strides} d={dilation} g={groups}")


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", [None, "tanh"])
@pytest.mark.parametrize("kernel_size,padding,strides", [(2, "same", 1), (4, "same", 2), (4, "causal", 2),
                                                         (1, "valid", 2), (8, "valid", 1)])
def test_gradients_kernel_sizes_bias_and_activation(rng, use_bias, activation, kernel_size, padding, strides):
    x = rng.standard_normal((2, 8, 3))
    layer = _layer(5, kernel_size, strides=strides, padding=padding, use_bias=use_bias, activation=activation)
    _gradcheck(layer, x, rng, f"k={kernel_size} {padding} s={strides} bias={use_bias} act={activation}")


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "softmax", "linear"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradients_activations_and_channels_first(rng, activation, data_format):
    shape = (2, 7, 4) if data_format == "channels_last" else (2, 4, 7)
    x = rng.standard_normal(shape)
    layer = _layer(6, 3, padding="causal", groups=2, strides=2, activation=activation, data_format=data_format)
    layer.maybe_build(x.shape)
    if activation == "relu":
        assert _pre_activation_margin(layer, x) > 1e-4  # finite differences stay off the kink
    # a softmax over time (channels_first) does not see a per-filter bias: its gradient is zero
    zero = ("bias",) if (activation, data_format) == ("softmax", "channels_first") else ()
    _gradcheck(layer, x, rng, f"{activation} {data_format}", zero=zero)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_backprop_logits_is_the_gradient_before_the_activation(rng, data_format):
    shape = (3, 6, 4) if data_format == "channels_last" else (3, 4, 6)
    x = rng.standard_normal(shape)
    layer = _layer(5, 3, padding="same", activation="softmax", data_format=data_format)
    lin = _layer(5, 3, padding="same", data_format=data_format)
    y, ctx = layer.apply(x)
    lin.maybe_build(x.shape)
    lin.set_weights(layer.get_weights())
    z, lin_ctx = lin.apply(x)
    # softmax along the last axis of the output (filters, or time for channels_first), as in Keras
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=-1, keepdims=True), rtol=1e-13, atol=1e-15)
    assert layer.output_activation == "softmax" and lin.output_activation == "linear"
    d = rng.standard_normal(y.shape)
    layer.zero_grad()
    lin.zero_grad()
    dx = layer.backprop_logits(d, ctx)
    np.testing.assert_allclose(dx, lin.backward(d, lin_ctx), rtol=1e-13, atol=1e-13)
    for k in layer.grads:
        np.testing.assert_allclose(layer.grads[k], lin.grads[k], rtol=1e-13, atol=1e-13)


def test_need_input_grad_false_skips_dx_but_keeps_parameter_grads(rng):
    x = rng.standard_normal((2, 9, 4))
    layer = _layer(3, 3, padding="causal", groups=1)
    y, ctx = layer.apply(x)
    d = rng.standard_normal(y.shape)
    layer.zero_grad()
    layer.backward(d, ctx)
    want = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grad()
    _, ctx2 = layer.apply(x, need_input_grad=False)
    assert layer.backward(d, ctx2) is None
    for k in want:
        np.testing.assert_array_equal(layer.grads[k], want[k])


# ---------------------------------------------------------------------------------------------
# masks (Keras 3: Conv1D does not support masking; it warns and drops the mask)
# ---------------------------------------------------------------------------------------------

def test_mask_warns_is_ignored_and_not_passed_on(rng):
    x = rng.standard_normal((2, 6, 3))
    layer = _layer(4, 3, padding="causal")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without a mask
        want = layer(x)
    mask = np.ones((2, 6), bool)
    mask[0, 4:] = False
    with pytest.warns(UserWarning, match=r"Layer .conv1d_\d+. \(of type Conv1D\) was passed an input with a mask"):
        got = layer(x, mask=mask)
    np.testing.assert_array_equal(got, want)
    assert layer.compute_mask(x, mask) is None and not layer.supports_masking


def test_mask_is_dropped_inside_a_model(rng):
    x = rng.standard_normal((3, 6, 2)).astype(np.float32)
    x[0, 4:] = 0.0  # padding Masking marks
    model = Sequential([Masking(0.0, input_shape=(6, 2)), Conv1D(3, 2, padding="causal"),
                        LSTM(4, return_sequences=True)])
    with pytest.warns(UserWarning, match="does not support masking"):
        y = model.predict(x)
    assert y.shape == (3, 6, 4)
    # the LSTM got no mask: its outputs move on over the padded steps (a masked LSTM would repeat
    # the state of step 3 there)
    assert np.max(np.abs(y[0, 5] - y[0, 3])) > 1e-4


# ---------------------------------------------------------------------------------------------
# Keras 3 parity
# ---------------------------------------------------------------------------------------------

def _numpy(t):
    """A backend tensor as a NumPy array (for torch without keras.ops.convert_to_numpy, which
    trips NumPy 2's __array__(copy=...) DeprecationWarning in Keras 3.15)."""
    if hasattr(t, "detach"):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def _keras_pair(keras, rng, shape, **kwargs):
    """An rnnkit Conv1D with random weights (bias too) and the Keras layer with the same arguments
    and weights; returns (ours, theirs)."""
    ours = Conv1D(bias_initializer="uniform", **kwargs)
    ours.maybe_build(shape)
    theirs = keras.layers.Conv1D(**kwargs)
    theirs.build(shape)
    theirs.set_weights(ours.get_weights())
    return ours, theirs


KERAS_CASES = [dict(padding=p, strides=s, dilation_rate=d, groups=g)
               for p, (s, d), g in itertools.product(["valid", "same", "causal"], [(1, 1), (2, 1), (3, 1), (1, 2)],
                                                    [1, 2])]
KERAS_CASES += [
    dict(padding="same", kernel_size=4, strides=2, activation="relu"),
    dict(padding="same", kernel_size=2, use_bias=False),
    dict(padding="causal", dilation_rate=3, activation="sigmoid", data_format="channels_first"),
    dict(padding="valid", strides=2, groups=2, activation="softmax", data_format="channels_first"),
    dict(padding="same", activation="softmax", data_format="channels_last", kernel_size=5, groups=4),
    dict(padding="CAUSAL", activation="tanh", kernel_size=(3,), strides=(1,), dilation_rate=[2]),
]


@pytest.mark.keras
@pytest.mark.parametrize("case", KERAS_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_keras_parity_outputs_and_shapes(keras, rng, case):
    kw = dict(filters=8, kernel_size=3, **{k: v for k, v in case.items() if k != "kernel_size"})
    kw["kernel_size"] = case.get("kernel_size", 3)
    first = kw.get("data_format") == "channels_first"
    shape = (3, 4, 11) if first else (3, 11, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    ours, theirs = _keras_pair(keras, rng, shape, **kw)
    assert [tuple(v.shape) for v in theirs.weights] == [w.shape for w in ours.get_weights()]
    want = _numpy(theirs(x))
    got = ours(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=KERAS_TOL, atol=KERAS_TOL)
    unknown_t = (None, 4, None) if first else (None, None, 4)
    for s in (shape, unknown_t):
        assert ours.compute_output_shape(s) == tuple(theirs.compute_output_shape(s))


@pytest.mark.keras
@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_keras_parity_gradients(keras, rng, padding):
    """dx, dkernel and dbias against the autograd of Keras's torch backend (float32)."""
    torch = pytest.importorskip("torch")
    if keras.backend.backend() != "torch":
        pytest.skip(f"needs Keras's torch backend, found {keras.backend.backend()}")
    shape = (3, 10, 4)
    ours, theirs = _keras_pair(keras, rng, shape, filters=6, kernel_size=3, padding=padding, strides=2,
                               groups=2, activation="tanh")
    x = rng.standard_normal(shape).astype(np.float32)
    y, ctx = ours.apply(x)
    w_out = rng.standard_normal(y.shape).astype(np.float32)
    ours.zero_grad()
    dx = ours.backward(w_out, ctx)
    xt = torch.tensor(x, requires_grad=True)
    (theirs(xt) * torch.from_numpy(w_out)).sum().backward()
    np.testing.assert_allclose(dx, _numpy(xt.grad), rtol=KERAS_TOL, atol=KERAS_TOL)
    np.testing.assert_allclose(ours.grads["kernel"], _numpy(theirs.kernel.value.grad), rtol=KERAS_TOL,
                               atol=KERAS_TOL)
    np.testing.assert_allclose(ours.grads["bias"], _numpy(theirs.bias.value.grad), rtol=KERAS_TOL,
                               atol=KERAS_TOL)


@pytest.mark.keras
def test_keras_also_warns_and_drops_the_mask(keras, rng):
    """The behaviour the mask handling mirrors: Keras 3 warns and the output carries no mask."""
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    x[0, 4:] = 0.0
    masked = keras.layers.Masking(0.0)(x)
    conv = keras.layers.Conv1D(4, 3, padding="causal")
    with pytest.warns(UserWarning, match="does not support masking"):
        out = conv(masked)
    assert getattr(masked, "_keras_mask", None) is not None
    assert getattr(out, "_keras_mask", None) is None


# ---------------------------------------------------------------------------------------------
# initialisation, config and registry
# ---------------------------------------------------------------------------------------------

def test_default_initialisation_follows_keras():
    layer = Conv1D(32, 5, groups=2, input_shape=(None, 8))
    layer.maybe_build((None, None, 8))
    k = layer.params["kernel"]
    assert k.shape == (5, 4, 32) and k.dtype == np.float32
    limit = np.sqrt(6.0 / (5 * 4 + 5 * 32))  # glorot_uniform with Keras's conv fans
    assert np.max(np.abs(k)) <= limit and np.max(np.abs(k)) > 0.95 * limit
    np.testing.assert_array_equal(layer.params["bias"], np.zeros(32, np.float32))
    assert layer.count_params() == 5 * 4 * 32 + 32
    assert [w.shape for w in layer.get_weights()] == [(5, 4, 32), (32,)]


CONFIG_FACTORIES = [
    lambda: Conv1D(8, 3),
    lambda: Conv1D(6, (5,), strides=(2,), padding="Same", activation="relu", use_bias=False, name="conv_a",
                   input_shape=(None, 4)),
    lambda: Conv1D(4, 2, padding="causal", dilation_rate=4, groups=2, data_format="channels_first",
                   kernel_initializer="he_normal", bias_initializer="ones", dtype="float64", trainable=False),
]


@pytest.mark.parametrize("factory", CONFIG_FACTORIES)
def test_config_round_trip_json(factory):
    layer = factory()
    cfg = layer.get_config()
    blob = json.dumps(serialize(layer))
    clone = deserialize(json.loads(blob))
    assert type(clone) is Conv1D
    assert clone.get_config() == cfg
    assert Conv1D.from_config(cfg).get_config() == cfg
    assert get("Conv1D") is Conv1D
    for key in ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups",
                "use_bias"):
        assert getattr(clone, key) == getattr(layer, key), key
    assert clone.activation is layer.activation


def test_config_values_are_normalised():
    cfg = Conv1D(6, (5,), strides=[2], padding="SAME", data_format=None).get_config()
    assert (cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"]) == (5, 2, 1)
    assert cfg["padding"] == "same" and cfg["data_format"] == "channels_last"
    assert cfg["activation"] == "linear" and cfg["groups"] == 1
    assert cfg["name"].startswith("conv1d_")  # Keras's default name
    assert Conv1D(2, 3, name="my_conv").name == "my_conv"


def test_deserialize_finds_the_module_without_importing_it():
    """base.deserialize imports rnnkit.layers.conv on demand (the registry's module list)."""
    code = ("import sys; from rnnkit.layers.base import deserialize; "
            "l = deserialize({'class_name': 'Conv1D', 'config': {'filters': 2, 'kernel_size': 3}}); "
            "print(type(l).__module__, l.filters, l.kernel_size)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rnnkit.layers.conv", "2", "3"]


def test_weights_set_and_get_round_trip(rng):
    layer = Conv1D(4, 3, groups=2, dtype="float64")
    layer.maybe_build((None, 7, 6))
    w = [rng.standard_normal((3, 3, 4)), rng.standard_normal(4)]
    layer.set_weights(w)
    for got, want in zip(layer.get_weights(), w):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"weight 'kernel' expected shape \(3, 3, 4\)"):
        layer.set_weights([np.zeros((3, 6, 4)), np.zeros(4)])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(filters=0, kernel_size=3), ValueError, r"filters: expected an int >= 1, got 0"),
    (dict(filters="8", kernel_size=3), TypeError, r"filters: expected an int, got str"),
    (dict(filters=True, kernel_size=3), TypeError, r"filters: expected an int, got bool"),
    (dict(filters=4, kernel_size=0), ValueError, r"kernel_size: expected an int >= 1, got 0"),
    (dict(filters=4, kernel_size=2.5), TypeError, r"kernel_size: expected an int, got float"),
    (dict(filters=4, kernel_size=(3, 3)), ValueError, r"kernel_size: expected an int or a tuple of 1 int"),
    (dict(filters=4, kernel_size=3, strides=0), ValueError, r"strides: expected an int >= 1, got 0"),
    (dict(filters=4, kernel_size=3, dilation_rate=-1), ValueError, r"dilation_rate: expected an int >= 1"),
    (dict(filters=4, kernel_size=3, strides=2, dilation_rate=2), ValueError,
     r"strides, dilation_rate: strides > 1 is not supported together with dilation_rate > 1"),
    (dict(filters=4, kernel_size=3, padding="full"), ValueError,
     r"padding: expected one of \['valid', 'same', 'causal'\], got 'full'"),
    (dict(filters=4, kernel_size=3, padding=None), TypeError, r"padding: expected one of"),
    (dict(filters=4, kernel_size=3, data_format="NWC"), ValueError, r"data_format: expected one of"),
    (dict(filters=4, kernel_size=3, groups=0), ValueError, r"groups: expected an int >= 1, got 0"),
    (dict(filters=6, kernel_size=3, groups=4), ValueError,
     r"groups: filters must be divisible by groups, got filters=6 and groups=4"),
    (dict(filters=4, kernel_size=3, activation="gelux"), ValueError, r"activation: unknown name 'gelux'"),
    (dict(filters=4, kernel_size=3, activation=np.tanh), TypeError, r"activation: expected a name"),
    (dict(filters=4, kernel_size=3, kernel_initializer="nope"), ValueError, r"nope"),
    (dict(filters=4, kernel_size=3, padding_mode="zeros"), TypeError,
     r"Conv1D: unexpected argument\(s\) \['padding_mode'\]"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Conv1D(**kwargs)


def test_bad_inputs_name_the_argument(rng):
    layer = Conv1D(4, 3, groups=2, name="conv_e")
    with pytest.raises(ValueError, match=r"conv_e: x: expected 3 dimensions \(batch, steps, channels\), got "
                                         r"shape \(2, 6\)"):
        layer(rng.standard_normal((2, 6)))
    with pytest.raises(ValueError, match=r"conv_e: groups: the input channels must be divisible by groups, "
                                         r"got 3 channels"):
        layer(rng.standard_normal((2, 6, 3)))
    layer(rng.standard_normal((2, 6, 4)))  # builds for 4 channels
    with pytest.raises(ValueError, match=r"conv_e: x: expected shape \(\?, \?, 4\) \(batch, steps, channels\), "
                                         r"got \(2, 6, 5\)"):
        layer(rng.standard_normal((2, 6, 5)))
    with pytest.raises(ValueError, match=r"conv_e: x: 2 time step\(s\) are too few for kernel_size=3 with "
                                         r"dilation_rate=1 and padding='valid' \(need at least 3\)"):
        layer(rng.standard_normal((2, 2, 4)))
    with pytest.raises(ValueError, match=r"conv_e: x: expected at least 1 time step"):
        Conv1D(2, 3, padding="causal", name="conv_e")(np.zeros((2, 0, 4)))
    with pytest.raises(ValueError, match=r"conv_e: input_shape: expected at least 1 time step, got 0"):
        Conv1D(2, 3, padding="same", name="conv_e").build((None, 0, 4))
    with pytest.raises(TypeError, match=r"conv_e: x: expected a float32 or float64 array, got dtype int64"):
        layer(np.zeros((2, 6, 4), dtype=np.int64))
    first = Conv1D(4, 3, data_format="channels_first", name="conv_f")
    with pytest.raises(ValueError, match=r"conv_f: input_shape: expected 3 dimensions \(batch, channels, "
                                         r"steps\), got \(\?, 4\)"):
        first.build((None, 4))
    with pytest.raises(ValueError, match=r"conv_f: input_shape: the channel axis must be known"):
        first.build((None, None, 7))
    with pytest.raises(ValueError, match=r"conv_f: input_shape: 2 time step\(s\) are too few for "
                                         r"kernel_size=3"):
        Conv1D(4, 3, name="conv_f", input_shape=(2, 5)).build((None, 2, 5))


def test_bad_gradients_name_the_argument(rng):
    layer = _layer(4, 3, padding="same", name="conv_g", activation="softmax")
    y, ctx = layer.apply(rng.standard_normal((2, 6, 3)))
    with pytest.raises(ValueError, match=r"conv_g: d_out: expected shape \(2, 6, 4\), got \(2, 5, 4\)"):
        layer.backward(np.zeros((2, 5, 4)), ctx)
    with pytest.raises(ValueError, match=r"conv_g: d_logits: expected shape \(2, 6, 4\), got \(2, 6\)"):
        layer.backprop_logits(np.zeros((2, 6)), ctx)
    with pytest.raises(TypeError, match=r"conv_g: d_out: expected a float32 or float64 array"):
        layer.backward(np.zeros((2, 6, 4), dtype=bool), ctx)


def test_symbolic_model_shapes(rng):
    inp = Input(shape=(None, 4))
    h = Conv1D(6, 3, padding="causal", name="c1")(inp)
    out = Conv1D(2, 3, strides=2, padding="valid", name="c2")(h)
    assert h.shape == (None, None, 6) and out.shape == (None, None, 2)
    model = Model(inp, out)
    y = model.predict(rng.standard_normal((3, 11, 4)).astype(np.float32))
    assert y.shape == (3, 5, 2)
    with pytest.raises(ValueError, match=r"c3: input_shape: 2 time step\(s\) are too few"):
        Conv1D(2, 5, name="c3")(Input(shape=(2, 4)))


# ---------------------------------------------------------------------------------------------
# a CNN + RNN model
# ---------------------------------------------------------------------------------------------

def _burst_task(rng, n=384, t=20, c=3):
    """Class = the channel with the largest sum over any 3 consecutive steps (chance 1/c): a
    causal convolution of width 3 sees the windows, the LSTM keeps the running maximum."""
    x = rng.normal(size=(n, t, c)).astype(np.float32)
    win = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    labels = np.argmax(win.max(axis=1), axis=-1)
    return x, labels


@pytest.mark.threads
@pytest.mark.usefixtures("one_thread")
def test_conv_lstm_dense_model_learns(rng):
    x, labels = _burst_task(rng)
    np.random.seed(0)
    model = Sequential([Conv1D(16, 3, padding="causal", activation="relu", input_shape=(20, 3)),
                        LSTM(16), Dense(3, activation="softmax")])
    model.compile(optimizer=O.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.layers[0].params["kernel"].shape == (3, 3, 16)
    before, acc_before = model.evaluate(x, labels)
    hist = model.fit(x, labels, epochs=12, batch_size=32, verbose=0, seed=0)
    after, acc_after = model.evaluate(x, labels)
    # chance: loss ln 3 = 1.10, accuracy 1/3; with this seed ~0.36 and ~0.89 (other seeds of the
    # data: loss <= 0.62, accuracy >= 0.74)
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0]
    assert after < 0.6 * before
    assert acc_before < 0.45 and acc_after > 0.7
    # the convolution itself was trained
    assert np.max(np.abs(model.layers[0].grads["kernel"])) > 0


@pytest.mark.threads
@pytest.mark.usefixtures("one_thread")
def test_fused_softmax_through_conv_equals_unfused(rng):
    """A Conv1D(softmax) output layer: the training loop's fused path (backprop_logits) gives the
    same SGD step as the plain softmax backward."""
    x = rng.normal(size=(5, 9, 3))
    y = rng.integers(0, 4, size=(5, 9))
    np.random.seed(1)
    model = Sequential([Conv1D(6, 3, padding="causal", activation="tanh", input_shape=(9, 3), dtype="float64"),
                        Conv1D(4, 2, padding="same", activation="softmax", dtype="float64")])
    model.compile(optimizer=O.SGD(0.5), loss="sparse_categorical_crossentropy")
    w0 = model.get_weights()
    out = model.forward(x, training=True)
    _, d = model.loss.value_and_grad(y, out, model.output_mask)
    model.zero_grad()
    model.backward(d)
    params, grads = model.trainable_variables()
    expected = [p - 0.5 * g for p, g in zip(params, grads)]
    model.set_weights(w0)
    model.train_on_batch(x, y)
    for got, want in zip(model.trainable_variables()[0], expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert not np.allclose(model.get_weights()[0], w0[0])
