"""Normalization layers (rnnkit.layers.normalization): Keras 3's LayerNormalization and
BatchNormalization.

- finite-difference gradient checks in float64 (inputs and gamma/beta), LayerNormalization on
  one or several trailing axes, BatchNormalization in training mode (through the batch
  statistics, with and without a mask) and in inference mode, on time-major views;
- the moving statistics: Keras's update rule, masked statistics, never touched by an optimizer,
  saved with the model;
- parity with Keras 3 (the ``keras`` fixture): outputs in training and inference, the moving
  statistics after a training call;
- config round trips and error messages.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import helpers
from rnnkit import initializers
from rnnkit.layers.base import deserialize, serialize
from rnnkit.layers.normalization import KERAS_EPSILON, BatchNormalization, LayerNormalization

GRAD_TOL = 1e-6
KERAS_TOL = 1e-5


def random_init(seed):
    return initializers.RandomUniform(0.5, 1.5, seed=seed)


def time_major_view(x):
    """A batch-major view [N, T, C] of time-major memory (what a recurrent layer hands on)."""
    tm = np.ascontiguousarray(x.transpose(1, 0, 2))
    v = tm.transpose(1, 0, 2)
    assert not v.flags.c_contiguous
    return tm, v


def holes(n, t, seed=0):
    """A [n, t] mask with holes and at least one valid step per feature column."""
    m = np.random.default_rng(seed).random((n, t)) < 0.6
    m[0, 0] = True
    m[-1, -1] = False
    return m


def check_gradients(layer, x, loss_inputs, call_kw, rng, params=None):
    """L = sum(out * W): analytic vs central differences w.r.t. the array ``x`` (perturbed in
    place; ``loss_inputs()`` returns what the layer is called on) and the parameters."""
    out = layer(loss_inputs(), **call_kw)
    W = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(layer(loss_inputs(), **call_kw) * W))

    layer.zero_grad()
    layer(loss_inputs(), **call_kw)
    dx = layer.backward(W)
    grads = {k: g.copy() for k, g in layer.grads.items()}
    assert dx.shape == out.shape and dx.dtype == np.float64
    num_x = helpers.numerical_grad(loss, x)
    if num_x.shape != dx.shape:  # x is the time-major memory behind the view
        num_x = num_x.transpose(1, 0, 2)
    helpers.assert_close_rel(dx, num_x, GRAD_TOL, "dx")
    for k in params if params is not None else layer.params:
        helpers.assert_close_rel(grads[k], helpers.numerical_grad(loss, layer.params[k]), GRAD_TOL, k)
    return dx, grads


# ---------------------------------------------------------------------------------------------
# LayerNormalization
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,kw", [
    ((2, 3, 5), {}),
    ((4, 6), {"epsilon": 1e-5}),
    ((2, 3, 4), {"axis": [-2, -1]}),
    ((2, 3, 4), {"axis": [1, 2], "center": False}),
    ((2, 3, 4), {"scale": False}),
    ((2, 3, 4), {"center": False, "scale": False}),
])
def test_layer_norm_gradients(rng, shape, kw):
    layer = LayerNormalization(dtype="float64", gamma_initializer=random_init(1),
                               beta_initializer=random_init(2), **kw)
    x = rng.standard_normal(shape) * 2.0 + 0.5
    check_gradients(layer, x, lambda: x, {}, rng)


def test_layer_norm_values_and_time_major_view(rng):
    layer = LayerNormalization(dtype="float64", gamma_initializer=random_init(3), beta_initializer=random_init(4))
    x = rng.standard_normal((3, 4, 5)) * 3.0 - 1.0
    y = layer(x)
    g, b = layer.get_weights()
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-3) * g + b, rtol=1e-13, atol=1e-13)
    # several trailing axes: statistics over T * C per sample, gamma [T, C]
    ln2 = LayerNormalization(axis=[-2, -1], dtype="float64")
    y2 = ln2(x)
    assert ln2.params["gamma"].shape == (4, 5)
    mu2, var2 = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(y2, (x - mu2) / np.sqrt(var2 + 1e-3), rtol=1e-13, atol=1e-13)
    # a time-major view goes through in its memory order, with the same values and gradients
    tm, view = time_major_view(x)
    out, ctx = layer.apply(view)
    assert out.transpose(1, 0, 2).flags.c_contiguous  # handed on in the view's memory order
    np.testing.assert_allclose(out, y, rtol=1e-15, atol=1e-15)
    check_gradients(layer, tm, lambda: tm.transpose(1, 0, 2), {}, rng)


def test_layer_norm_mask_passes_through(rng):
    layer = LayerNormalization()
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    m = holes(2, 3)
    np.testing.assert_array_equal(layer(x, mask=m), layer(x))  # Keras ignores the mask
    assert layer.compute_mask(x, m) is m
    assert layer.supports_masking and layer.compute_output_shape((None, 3, 4)) == (None, 3, 4)
    assert layer(x).dtype == np.float32


# ---------------------------------------------------------------------------------------------
# BatchNormalization: gradients
# ---------------------------------------------------------------------------------------------

BN_CASES = {
    "train_3d": ((3, 4, 3), {}, True, False),
    "train_3d_mask": ((3, 4, 3), {}, True, True),
    "train_2d": ((5, 3), {}, True, False),
    "train_2d_mask": ((6, 3), {}, True, True),
    "train_axis1": ((3, 4, 2), {"axis": 1}, True, False),
    "train_axis1_mask": ((3, 4, 2), {"axis": 1}, True, True),
    "train_no_affine": ((3, 4, 3), {"center": False, "scale": False}, True, True),
    "inference_3d_mask": ((3, 4, 3), {}, False, True),
    "inference_2d": ((5, 3), {"center": False}, False, False),
}


@pytest.mark.parametrize("case", sorted(BN_CASES))
def test_batch_norm_gradients(rng, case):
    shape, kw, training, masked = BN_CASES[case]
    layer = BatchNormalization(dtype="float64", momentum=0.9, gamma_initializer=random_init(5),
                               beta_initializer=random_init(6), moving_mean_initializer=random_init(7),
                               moving_variance_initializer=random_init(8), **kw)
    x = rng.standard_normal(shape) * 1.5 + 0.3
    mask = holes(*shape[:-1]) if masked and len(shape) == 3 else (
        (np.arange(shape[0]) % 3 != 1) if masked else None)
    trainable = [k for k in ("gamma", "beta") if k in layer.params]
    _, grads = check_gradients(layer, x, lambda: x, {"training": training, "mask": mask}, rng, params=trainable)
    # the moving statistics never get a gradient
    assert np.all(grads["moving_mean"] == 0) and np.all(grads["moving_variance"] == 0)


def test_batch_norm_time_major_view_training(rng):
    layer = BatchNormalization(dtype="float64", gamma_initializer=random_init(1), beta_initializer=random_init(2))
    x = rng.standard_normal((3, 4, 2))
    m = holes(3, 4)
    ref = BatchNormalization(dtype="float64")
    ref(x)
    layer(x)
    ref.set_weights(layer.get_weights())
    tm, view = time_major_view(x)
    out, _ = layer.apply(view, training=True, mask=m)
    assert out.transpose(1, 0, 2).flags.c_contiguous  # computed in the memory order of the view
    np.testing.assert_allclose(out, ref(x, training=True, mask=m), rtol=1e-14, atol=1e-14)
    for a, b in zip(layer.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    check_gradients(layer, tm, lambda: tm.transpose(1, 0, 2), {"training": True, "mask": m}, rng,
                    params=["gamma", "beta"])


# ---------------------------------------------------------------------------------------------
# BatchNormalization: statistics
# ---------------------------------------------------------------------------------------------

def test_batch_norm_training_inference_and_moving_statistics(rng):
    momentum, eps = 0.8, 1e-3
    layer = BatchNormalization(momentum=momentum, dtype="float64", gamma_initializer=random_init(3),
                               beta_initializer=random_init(4))
    x = rng.standard_normal((4, 5, 3)) * 2.0 + 1.0
    layer(x)  # inference: builds, changes nothing
    g, b, mm, mv = layer.get_weights()
    np.testing.assert_array_equal(mm, 0.0)
    np.testing.assert_array_equal(mv, 1.0)
    y = layer(x, training=True)
    mean, var = x.mean((0, 1)), x.var((0, 1))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + eps) * g + b, rtol=1e-13, atol=1e-13)
    _, _, mm1, mv1 = layer.get_weights()
    np.testing.assert_allclose(mm1, momentum * 0.0 + (1 - momentum) * mean, rtol=1e-14, atol=0)
    np.testing.assert_allclose(mv1, momentum * 1.0 + (1 - momentum) * var, rtol=1e-14, atol=0)
    # inference uses the moving statistics and leaves them alone
    yi = layer(x)
    np.testing.assert_allclose(yi, (x - mm1) / np.sqrt(mv1 + eps) * g + b, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(layer.get_weights()[2], mm1)
    # masked statistics: Keras's sum(m x) / (sum(m) + 1e-7), over the unmasked steps only;
    # every step (masked or not) is normalized
    m = holes(4, 5)
    ym = layer(x, training=True, mask=m)
    cnt = m.sum() + 1e-7  # Keras's backend.epsilon()
    assert KERAS_EPSILON == 1e-7
    mean_m = x[m].sum(0) / cnt
    var_m = ((x[m] - mean_m) ** 2).sum(0) / cnt
    np.testing.assert_allclose(ym, (x - mean_m) / np.sqrt(var_m + eps) * g + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.get_weights()[2], momentum * mm1 + (1 - momentum) * mean_m, rtol=1e-14)
    # masked steps do not change the statistics
    x2 = x.copy()
    x2[~m] = 1e6
    layer2 = BatchNormalization(dtype="float64")
    np.testing.assert_allclose(layer2(x2, training=True, mask=m)[m], layer2(x, training=True, mask=m)[m],
                               rtol=1e-12, atol=1e-12)
    assert layer.compute_mask(x, m) is m


def test_batch_norm_frozen_layer_runs_in_inference_mode(rng):
    """As in Keras: trainable=False means inference mode, even with training=True."""
    layer = BatchNormalization(trainable=False, dtype="float64")
    x = rng.standard_normal((4, 3)) + 2.0
    before = layer(x)
    np.testing.assert_allclose(layer(x, training=True), before, rtol=0, atol=0)
    np.testing.assert_array_equal(layer.get_weights()[2], 0.0)
    np.testing.assert_array_equal(layer.get_weights()[3], 1.0)


def test_batch_norm_weights_and_optimizer_never_moves_the_statistics(rng, tmp_path):
    from rnnkit.layers import Dense
    from rnnkit.models import Sequential, load_model

    layer = BatchNormalization(momentum=0.5, name="bn")
    assert layer.get_config()["momentum"] == 0.5
    dense = Dense(3, input_shape=(4,), name="dense")
    model = Sequential([dense, layer])
    model.compile(optimizer="adam", loss="mse")
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    assert list(layer.params) == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.shape for w in layer.trainable_weights] == [(3,), (3,)]
    assert layer.non_trainable_weights[0] is layer.params["moving_mean"]
    for step in range(3):
        h = dense(x)  # the batch the layer sees in this step, before the update
        mm0, mv0 = layer.get_weights()[2:]
        g0 = layer.get_weights()[0]
        model.train_on_batch(x, y)
        g, b, mm, mv = layer.get_weights()
        # the moving statistics are exactly the training call's update: the optimizer (Adam,
        # whose update would be nonzero for any nonzero gradient) did not touch them
        np.testing.assert_allclose(mm, 0.5 * mm0 + 0.5 * h.mean(0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(mv, 0.5 * mv0 + 0.5 * h.var(0), rtol=1e-6, atol=1e-7)
        assert np.all(layer.grads["moving_mean"] == 0) and np.all(layer.grads["moving_variance"] == 0)
        assert not np.array_equal(g, g0)  # while gamma trains
    # the moving statistics are saved with the model
    path = str(tmp_path / "bn.safetensors")
    model.save(path)
    loaded = load_model(path)
    for a, b in zip(loaded.get_layer("bn").get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# config and errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [
    lambda: LayerNormalization(axis=[-2, -1], epsilon=1e-5, center=False, name="ln"),
    lambda: LayerNormalization(gamma_initializer="glorot_uniform", dtype="float64", input_shape=(3, 4)),
    lambda: BatchNormalization(axis=1, momentum=0.9, epsilon=1e-4, scale=False,
                               moving_variance_initializer="zeros", trainable=False),
    lambda: BatchNormalization(),
])
def test_config_round_trip(factory):
    layer = factory()
    cfg = layer.get_config()
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg
    assert type(layer).from_config(cfg).get_config() == cfg


def test_errors(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="axis: expected an int, got str"):
        LayerNormalization(axis="last")
    with pytest.raises(ValueError, match=r"epsilon: expected a finite number >= 0.0, got -1"):
        LayerNormalization(epsilon=-1)
    with pytest.raises(ValueError, match=r"ln: axis: 3 is out of bounds for inputs of rank 3"):
        LayerNormalization(axis=3, name="ln")(x)
    with pytest.raises(ValueError, match=r"ln: axis: expected the last axis or a list of trailing axes"):
        LayerNormalization(axis=1, name="ln")(x)
    with pytest.raises(ValueError, match=r"ln: axis: expected the last axis or a list of trailing axes"):
        LayerNormalization(axis=[0, 1, 2], name="ln")(x)
    with pytest.raises(ValueError, match=r"axis: repeated entries in \[2, 2\]"):
        LayerNormalization(axis=[2, 2])
    with pytest.raises(ValueError, match=r"ln: axis: \[-1, 2\] names axis 2 twice for inputs of rank 3"):
        LayerNormalization(axis=[-1, 2], name="ln")(x)
    ln = LayerNormalization(name="ln")
    ln(x)
    with pytest.raises(ValueError, match=r"ln: x: expected shape \(\?, \?, 4\), got \(2, 3, 5\)"):
        ln(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"ln: d_out: expected shape \(2, 3, 4\), got \(2, 4, 3\)"):
        ln.backward(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"momentum: expected a finite number in \[0.0, 1.0\], got 1.5"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(TypeError, match="momentum: expected a number, got bool"):
        BatchNormalization(momentum=True)
    with pytest.raises(ValueError, match=r"bn: axis: 0 is not a feature axis of inputs of rank 3"):
        BatchNormalization(axis=0, name="bn")(x)
    with pytest.raises(ValueError, match=r"bn: input_shape: expected at least 2 dimensions"):
        BatchNormalization(name="bn")(np.zeros(3, np.float32))
    bn = BatchNormalization(name="bn")
    bn(x)
    with pytest.raises(ValueError, match=r"bn: mask: expected shape \(2, 3\), got \(2, 4\)"):
        bn(x, training=True, mask=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match=r"bn: mask: expected a boolean array, got dtype float64"):
        bn(x, training=True, mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"bn: x: expected shape \(\?, \?, 4\), got \(2, 3\)"):
        bn(x[:, 0, :3])
    with pytest.raises(ValueError, match=r"bn: expected 4 weight arrays"):
        bn.set_weights(bn.get_weights()[:2])


# ---------------------------------------------------------------------------------------------
# parity with Keras 3
# ---------------------------------------------------------------------------------------------

def to_numpy(t):
    """A Keras tensor or variable as a NumPy array (``keras.ops.convert_to_numpy`` goes through
    torch's ``__array__``, which NumPy 2 warns about, and warnings are errors in this suite)."""
    t = getattr(t, "value", t)
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


@pytest.mark.keras
@pytest.mark.parametrize("kw", [{}, {"axis": [-2, -1]}, {"axis": [1, 2], "center": False}, {"scale": False},
                                {"epsilon": 1e-5}])
def test_keras_parity_layer_norm(keras, rng, kw):
    x = (rng.standard_normal((3, 4, 5)) * 2 + 1).astype(np.float32)
    ours = LayerNormalization(gamma_initializer=random_init(1), beta_initializer=random_init(2), **kw)
    ours(x)
    theirs = keras.layers.LayerNormalization(**kw)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    assert [w.path.split("/")[-1] for w in theirs.weights] == list(ours.params)
    np.testing.assert_allclose(ours(x), to_numpy(theirs(x)), rtol=KERAS_TOL, atol=KERAS_TOL)
    _, view = time_major_view(x)
    np.testing.assert_allclose(ours(view), to_numpy(theirs(x)), rtol=KERAS_TOL, atol=KERAS_TOL)


@pytest.mark.keras
@pytest.mark.parametrize("shape,kw,masked", [
    ((6, 5, 4), {}, False),
    ((6, 5, 4), {}, True),
    ((16, 4), {}, False),
    ((16, 4), {"center": False}, True),
    ((6, 5, 3), {"axis": 1, "scale": False}, True),
])
def test_keras_parity_batch_norm(keras, rng, shape, kw, masked):
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    mask = None
    if masked:
        mask = holes(*shape[:-1]) if len(shape) == 3 else np.arange(shape[0]) % 4 != 1
    ours = BatchNormalization(momentum=0.7, gamma_initializer=random_init(3), beta_initializer=random_init(4),
                              moving_mean_initializer=random_init(5), moving_variance_initializer=random_init(6),
                              **kw)
    ours(x)
    theirs = keras.layers.BatchNormalization(momentum=0.7, **kw)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    assert [w.path.split("/")[-1] for w in theirs.weights] == list(ours.params)
    # inference with the initial moving statistics, then two training calls, then inference
    np.testing.assert_allclose(ours(x, mask=mask), to_numpy(theirs(x, mask=mask)), rtol=KERAS_TOL, atol=KERAS_TOL)
    for x_in in (x, x * 0.5 - 0.2):
        y = ours(x_in, training=True, mask=mask)
        ky = to_numpy(theirs(x_in, training=True, mask=mask))
        np.testing.assert_allclose(y, ky, rtol=KERAS_TOL, atol=KERAS_TOL)
        for k, w, kw_ in zip(ours.params, ours.get_weights(), theirs.weights):
            np.testing.assert_allclose(w, to_numpy(kw_), rtol=KERAS_TOL, atol=KERAS_TOL, err_msg=k)
    np.testing.assert_allclose(ours(x), to_numpy(theirs(x)), rtol=KERAS_TOL, atol=KERAS_TOL)


@pytest.mark.keras
def test_keras_parity_batch_norm_gradients(keras, rng):
    """Our backprop through the masked batch statistics against torch autograd through Keras."""
    import torch

    x = (rng.standard_normal((4, 5, 3)) * 2 + 1).astype(np.float32)
    mask = holes(4, 5)
    ours = BatchNormalization(gamma_initializer=random_init(3), beta_initializer=random_init(4))
    ours(x)
    theirs = keras.layers.BatchNormalization()
    theirs(x)
    theirs.set_weights(ours.get_weights())
    W = rng.standard_normal(x.shape).astype(np.float32)
    ours.zero_grad()
    ours(x, training=True, mask=mask)
    dx = ours.backward(W)
    xt = torch.tensor(x, requires_grad=True)
    (theirs(xt, training=True, mask=mask) * torch.from_numpy(W)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL)
    for var in theirs.trainable_weights:
        k = var.path.split("/")[-1]
        np.testing.assert_allclose(ours.grads[k], var.value.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL,
                                   err_msg=k)
