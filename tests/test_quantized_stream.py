"""Streams with bfloat16 or int8 weights (``precision=``).

A reduced-precision stream must compute exactly what a float32 stream computes with the weights
rounded to the precision's grid (bfloat16: round to nearest even; int8: one scale per output row,
``s = max|w| / 127``, ``q = round(w / s)``): the same products in another order, so float32
rounding apart (1e-5). Against the unrounded float32 weights the error is the weights' rounding;
it is bounded and stated here for random and trained models.
"""
from __future__ import annotations

import numpy as np
import pytest

from rnnkit import _core, streaming
from rnnkit.layers import GRU, LSTM, Dense, SimpleRNN
from rnnkit.models import Sequential

GRID_ATOL = 2e-5  # the rounded-weights float32 stream against the reduced-precision one


def round_bf16(w: np.ndarray) -> np.ndarray:
    """Round to nearest even bfloat16, as float32."""
    u = np.ascontiguousarray(w, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def round_int8(w: np.ndarray) -> np.ndarray:
    """One scale per row (output unit): s = max|w| / 127, w ≈ s * round(w / s)."""
    w = np.asarray(w, np.float32)
    s = np.abs(w).max(axis=1, keepdims=True) / np.float32(127)
    s[s == 0] = 1
    return (s * np.clip(np.rint(w / s), -127, 127)).astype(np.float32)


ROUND = {"bfloat16": round_bf16, "int8": round_int8}
# "vnni": int8 streams also quantize each step's input and state per row (dynamic quantization,
# like torch's quantize_dynamic), so they match the rounded weights only to that rounding;
# "widen": the int8 weights are widened to float and the products equal the rounded weights'
INT8_KERNEL = _core.build_info()["int8_kernel"]


def grid_atol(precision: str) -> float:
    return 0.06 if precision == "int8" and INT8_KERNEL == "vnni" else GRID_ATOL
KINDS = {
    "rnn": (streaming.RNNStream, 1, {}),
    "lstm": (streaming.LSTMStream, 4, {}),
    "gru": (streaming.GRUStream, 3, {}),
    "gru_v1": (streaming.GRUStream, 3, {"reset_after": False}),
}


def _weights(rng, G, C, H, bias_hh=True):
    # recurrent weights of spectral radius below 1 (as trained models have): a chaotic random
    # recurrence would amplify any perturbation, the rounding's included
    a = 1.0 / np.sqrt(H)
    w = {"w_ih": rng.uniform(-0.4, 0.4, (G * H, C)).astype(np.float32),
         "w_hh": rng.uniform(-a, a, (G * H, H)).astype(np.float32),
         "b_ih": rng.uniform(-0.2, 0.2, G * H).astype(np.float32),
         "b_hh": rng.uniform(-0.2, 0.2, G * H).astype(np.float32) if bias_hh else None}
    return w


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("N,C,H", [(1, 64, 128), (3, 7, 19), (16, 33, 40)])
def test_equals_float32_on_the_rounded_weights(precision, kind, N, C, H):
    cls, G, extra = KINDS[kind]
    rng = np.random.default_rng(0)
    w = _weights(rng, G, C, H, bias_hh=kind != "gru_v1")
    x = rng.standard_normal((30, N, C)).astype(np.float32)
    q = cls(**w, batch_size=N, precision=precision, **extra)
    assert q.precision == precision
    grid = dict(w, w_ih=ROUND[precision](w["w_ih"]), w_hh=ROUND[precision](w["w_hh"]))
    ref = cls(**grid, batch_size=N, **extra)
    y_run = q.run(x)
    np.testing.assert_allclose(y_run, ref.run(x), atol=grid_atol(precision), rtol=0)
    q.reset()
    steps = np.stack([q.step(x[t]) for t in range(x.shape[0])])  # step and run agree
    np.testing.assert_allclose(steps, y_run, atol=1e-6, rtol=0)
    # and against the unrounded weights: the rounding's effect, bounded
    full = cls(**w, batch_size=N, **extra).run(x)
    err = np.abs(y_run - full).max()
    assert err < (0.06 if precision == "int8" else 0.02), err


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_lstm_projection(precision):
    rng = np.random.default_rng(1)
    C, H, P = 12, 24, 8
    w = _weights(rng, 4, C, P)
    w["w_ih"] = rng.uniform(-0.4, 0.4, (4 * H, C)).astype(np.float32)
    w["w_hh"] = rng.uniform(-0.4, 0.4, (4 * H, P)).astype(np.float32)
    w["b_ih"] = w["b_hh"] = np.zeros(4 * H, np.float32)
    w_hr = rng.uniform(-0.4, 0.4, (P, H)).astype(np.float32)
    x = rng.standard_normal((20, 2, C)).astype(np.float32)
    y = streaming.LSTMStream(**w, w_hr=w_hr, batch_size=2, precision=precision).run(x)
    r = ROUND[precision]
    ref = streaming.LSTMStream(**dict(w, w_ih=r(w["w_ih"]), w_hh=r(w["w_hh"])), w_hr=r(w_hr),
                               batch_size=2).run(x)
    np.testing.assert_allclose(y, ref, atol=grid_atol(precision), rtol=0)


def _quantized_product(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a: [N, K] float32 times w^T, w: [cols, K] as the VNNI kernel computes it: w = s_j q per
    row of w, each row of a = s_a (u - 128) with s_a = max|a| / 127, integer sums exact."""
    w = np.asarray(w, np.float32)
    s = np.abs(w).max(axis=1) / np.float32(127)
    s[s == 0] = 1
    q = np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int64)
    m = np.abs(a).max(axis=1)
    sa = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / sa).astype(np.float32)
    qa = np.rint(np.clip((a * inv[:, None]).astype(np.float32), -127, 127)).astype(np.int64)
    acc = (qa @ q.T).astype(np.float32)                   # [N, cols], exact integers
    return (acc * s[None, :]) * sa[:, None]


@pytest.mark.skipif(INT8_KERNEL != "vnni", reason="the int8 kernel widens the weights here")
def test_vnni_product_equals_the_integer_reference():
    """A linear RNN from h = 0: step 1 is the input product alone, step 2 adds the recurrent
    product of the quantized h_1; both equal the integer reference (float rounding apart)."""
    rng = np.random.default_rng(5)
    N, C, H = 5, 37, 70  # K not a multiple of 4, columns not of 32
    w_ih = rng.uniform(-1, 1, (H, C)).astype(np.float32)
    w_hh = rng.uniform(-0.1, 0.1, (H, H)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, H).astype(np.float32)
    x = rng.standard_normal((2, N, C)).astype(np.float32)
    x[1, 2] = 0  # an all-zero row
    s = streaming.RNNStream(w_ih, w_hh, b, None, batch_size=N, nonlinearity="linear", precision="int8")
    h1 = s.step(x[0])
    np.testing.assert_allclose(h1, _quantized_product(x[0], w_ih) + b, rtol=1e-5, atol=1e-5)
    h2 = s.step(x[1])
    want = _quantized_product(x[1], w_ih) + b + _quantized_product(h1, w_hh)
    np.testing.assert_allclose(h2, want, rtol=1e-5, atol=1e-5)


def test_model_stream_int8_keeps_the_trained_models_accuracy():
    """A trained classifier: int8 and bfloat16 streams give the float32 stream's predicted class
    on (nearly) every step, and their probabilities differ by little."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((256, 20, 8)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[np.argmax(x[:, :, :4], axis=-1)]
    np.random.seed(0)
    model = Sequential([LSTM(32, return_sequences=True, input_shape=(20, 8)), GRU(16, return_sequences=True),
                        Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    xs = x[:64].transpose(1, 0, 2)  # [T, N, C]
    outs = {}
    for p in ("float32", "bfloat16", "int8"):
        s = model.stream(batch_size=64, precision=p)
        outs[p] = np.stack([s.step(xs[t]) for t in range(xs.shape[0])])
    np.testing.assert_allclose(outs["float32"], model.predict(x[:64], verbose=0).transpose(1, 0, 2), atol=1e-5)
    for p in ("bfloat16", "int8"):
        assert np.abs(outs[p] - outs["float32"]).max() < 0.05
        agree = (outs[p].argmax(-1) == outs["float32"].argmax(-1)).mean()
        assert agree > 0.97, (p, agree)


def test_layer_and_nn_streams_take_precision():
    from rnnkit import nn

    layer = SimpleRNN(5, input_shape=(None, 3))
    layer.build((None, None, 3))
    assert layer.stream(precision="int8").precision == "int8"
    assert nn.GRU(3, 4).stream(precision="bfloat16").precision == "bfloat16"


@pytest.mark.parametrize("bad", ["fp16", "INT8", None, 8])
def test_bad_precision(bad):
    w = _weights(np.random.default_rng(3), 3, 2, 4)
    with pytest.raises(ValueError, match="precision"):
        streaming.GRUStream(**w, precision=bad)


def test_float64_weights_stay_float64():
    w = {k: v.astype(np.float64) for k, v in _weights(np.random.default_rng(4), 4, 2, 4).items()}
    with pytest.raises(ValueError, match="precision.*float32"):
        streaming.LSTMStream(**w, precision="int8")


@pytest.mark.parametrize("layer_cls", [LSTM, GRU])
@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_layernorm_and_zoneout_streams(layer_cls, precision):
    """The LayerNorm cells and zoneout's inference form run their products through the same
    packed weights: close to their float32 streams."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 2, 5)).astype(np.float32)
    for kw in ({"layer_norm": True}, {"zoneout": 0.3}):
        np.random.seed(4)
        layer = layer_cls(16, input_shape=(None, 5), **kw)
        layer.build((None, None, 5))
        ref = layer.stream(batch_size=2).run(x)
        got = layer.stream(batch_size=2, precision=precision).run(x)
        assert np.abs(got - ref).max() < 0.06, (kw, np.abs(got - ref).max())
