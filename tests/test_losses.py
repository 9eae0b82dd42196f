"""Losses: values against NumPy/PyTorch references, gradients against finite differences (float64),
the fused softmax / sigmoid path, masking and input validation."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import numerical_grad, rel_err
from rnnkit import losses as L

SHAPES = [(5, 4), (3, 4, 6)]  # [N, K] and per-time-step [N, T, K]


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _probs(rng, shape):
    return _softmax(rng.normal(size=shape))


def _onehot(rng, shape):
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    return labels, np.eye(shape[-1])[labels]


def _fd_check(loss, y_true, y_pred, mask=None, tol=1e-6):
    value, grad = loss.value_and_grad(y_true, y_pred, mask)
    assert grad.shape == y_pred.shape and grad.dtype == y_pred.dtype
    assert value == pytest.approx(loss(y_true, y_pred, mask), rel=1e-12, abs=1e-12)
    num = numerical_grad(lambda: loss(y_true, y_pred, mask), y_pred, eps=1e-6)
    assert rel_err(grad, num) < tol


# ---- values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_categorical_crossentropy_value_matches_numpy(rng, shape):
    p = _probs(rng, shape)
    _, y = _onehot(rng, shape)
    value, _ = L.categorical_crossentropy(y, p)
    ref = np.mean(-np.sum(y * np.log(p), axis=-1))
    assert value == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_sparse_equals_categorical_with_one_hot(rng, shape):
    p = _probs(rng, shape)
    labels, y = _onehot(rng, shape)
    v1, g1 = L.categorical_crossentropy(y, p)
    v2, g2 = L.sparse_categorical_crossentropy(labels, p)
    v3, _ = L.sparse_categorical_crossentropy(labels[..., None], p)  # trailing axis of 1
    assert v1 == pytest.approx(v2, rel=1e-12) and v2 == pytest.approx(v3, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-14)


def test_values_match_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z = rng.normal(size=(6, 5))
    labels, y = _onehot(rng, (6, 5))
    zt = torch.tensor(z)
    assert L.categorical_crossentropy(y, z, from_logits=True)[0] == pytest.approx(
        F.cross_entropy(zt, torch.tensor(y)).item(), rel=1e-10)
    assert L.sparse_categorical_crossentropy(labels, z, from_logits=True)[0] == pytest.approx(
        F.cross_entropy(zt, torch.tensor(labels)).item(), rel=1e-10)
    # per-time-step targets: torch wants the class axis second
    z3 = rng.normal(size=(3, 4, 5))
    lab3, _ = _onehot(rng, (3, 4, 5))
    ref = F.cross_entropy(torch.tensor(z3).permute(0, 2, 1), torch.tensor(lab3)).item()
    assert L.sparse_categorical_crossentropy(lab3, z3, from_logits=True)[0] == pytest.approx(ref, rel=1e-10)
    yb = (rng.random((6, 3)) > 0.5).astype(np.float64)
    pb = rng.uniform(0.05, 0.95, size=(6, 3))
    assert L.binary_crossentropy(yb, pb)[0] == pytest.approx(
        F.binary_cross_entropy(torch.tensor(pb), torch.tensor(yb)).item(), rel=1e-10)
    assert L.binary_crossentropy(yb, z[:, :3], from_logits=True)[0] == pytest.approx(
        F.binary_cross_entropy_with_logits(torch.tensor(z[:, :3]), torch.tensor(yb)).item(), rel=1e-10)
    t = rng.normal(size=(6, 5))
    assert L.mse(t, z)[0] == pytest.approx(F.mse_loss(zt, torch.tensor(t)).item(), rel=1e-12)
    assert L.mae(t, z)[0] == pytest.approx(F.l1_loss(zt, torch.tensor(t)).item(), rel=1e-12)


def test_keras_clipping_of_probabilities():
    y = np.array([[1.0, 0.0]])
    p = np.array([[0.0, 1.0]])  # log(0) would be -inf; Keras clips at 1e-7
    assert L.categorical_crossentropy(y, p)[0] == pytest.approx(-np.log(L.EPSILON), rel=1e-9)
    v, g = L.binary_crossentropy(np.array([[1.0]]), np.array([[0.0]]))
    assert v == pytest.approx(-np.log(L.EPSILON), rel=1e-6)
    assert np.all(np.isfinite(g))


def test_categorical_renormalises_predictions(rng):
    p = _probs(rng, (4, 3))
    _, y = _onehot(rng, (4, 3))
    assert L.categorical_crossentropy(y, 3.0 * p)[0] == pytest.approx(
        L.categorical_crossentropy(y, p)[0], rel=1e-12)


# ---- gradients by finite differences --------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
def test_crossentropy_gradients(rng, shape, from_logits):
    labels, y = _onehot(rng, shape)
    # soft targets exercise the general formula too
    y_soft = 0.7 * y + 0.3 / shape[-1]
    pred = rng.normal(size=shape) if from_logits else rng.uniform(0.1, 1.0, size=shape)
    _fd_check(L.CategoricalCrossentropy(from_logits=from_logits), y_soft, pred)
    _fd_check(L.SparseCategoricalCrossentropy(from_logits=from_logits), labels, pred)
    yb = (rng.random(shape) > 0.5).astype(np.float64)
    bpred = rng.normal(size=shape) if from_logits else rng.uniform(0.05, 0.95, size=shape)
    _fd_check(L.BinaryCrossentropy(from_logits=from_logits), yb, bpred)


@pytest.mark.parametrize("shape", SHAPES)
def test_regression_gradients(rng, shape):
    y = rng.normal(size=shape)
    p = y + rng.uniform(0.1, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)  # away from |0|
    _fd_check(L.MeanSquaredError(), y, p)
    _fd_check(L.MeanAbsoluteError(), y, p)


def test_masked_gradients_and_mean_over_valid_entries(rng):
    shape = (3, 5, 4)
    labels, y = _onehot(rng, shape)
    p = _probs(rng, shape)
    mask = rng.random(shape[:2]) > 0.4
    mask[0, 0] = True
    loss = L.CategoricalCrossentropy()
    _fd_check(loss, y, p, mask)
    value, grad = loss.value_and_grad(y, p, mask)
    per = -np.sum(y * np.log(p), axis=-1)
    assert value == pytest.approx(per[mask].mean(), rel=1e-12)
    assert np.all(grad[~mask] == 0)
    _fd_check(L.MeanSquaredError(), y, p, mask)
    # every entry masked: value 0, zero gradient
    v0, g0 = loss.value_and_grad(y, p, np.zeros(shape[:2], bool))
    assert v0 == 0.0 and not np.any(g0)


# ---- fused softmax / sigmoid ----------------------------------------------------------------------

def _softmax_jacobian_chain(g, p):
    # d/dz of L(softmax(z)) given g = dL/dp: p * (g - sum(g p))
    return p * (g - np.sum(g * p, axis=-1, keepdims=True))


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_softmax_matches_unfused_chain_rule(rng, shape):
    z = rng.normal(size=shape)
    p = _softmax(z)
    labels, y = _onehot(rng, shape)
    for loss, target in ((L.CategoricalCrossentropy(), y), (L.SparseCategoricalCrossentropy(), labels)):
        v_fused, dz = loss.logits_value_and_grad(target, p, logits=z)
        v_plain, dp = loss.value_and_grad(target, p)
        assert v_fused == pytest.approx(v_plain, rel=1e-10)
        np.testing.assert_allclose(dz, _softmax_jacobian_chain(dp, p), rtol=1e-8, atol=1e-12)
        # and against finite differences through the softmax
        num = numerical_grad(lambda: loss(target, _softmax(z)), z)
        assert rel_err(dz, num) < 1e-6
        # the value without logits (clipped probabilities) agrees away from the clip
        assert loss.logits_value_and_grad(target, p)[0] == pytest.approx(v_plain, rel=1e-10)


def test_fused_sigmoid_binary_crossentropy(rng):
    z = rng.normal(size=(4, 3, 2))
    p = 1.0 / (1.0 + np.exp(-z))
    y = (rng.random(z.shape) > 0.5).astype(np.float64)
    loss = L.BinaryCrossentropy()
    v, dz = loss.logits_value_and_grad(y, p, logits=z)
    num = numerical_grad(lambda: loss(y, 1.0 / (1.0 + np.exp(-z))), z)
    assert rel_err(dz, num) < 1e-6
    assert v == pytest.approx(L.binary_crossentropy(y, z, from_logits=True)[0], rel=1e-12)


def test_fused_softmax_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 3000.0]])
    p = _softmax(z)
    labels = np.array([1, 0])
    loss = L.SparseCategoricalCrossentropy()
    v, dz = loss.logits_value_and_grad(labels, p, logits=z)
    assert np.isfinite(v) and v == pytest.approx((1000.0 + 3000.0) / 2, rel=1e-12)
    np.testing.assert_allclose(dz, (p - np.eye(3)[labels]) / 2, rtol=0, atol=1e-15)
    # the unfused path saturates: gradient zero where the clip is active (Keras's behaviour)
    assert np.isfinite(loss.value_and_grad(labels, p)[1]).all()


def test_fused_float32_dtype(rng):
    z = rng.normal(size=(4, 3)).astype(np.float32)
    p = _softmax(z).astype(np.float32)
    v, dz = L.CategoricalCrossentropy().logits_value_and_grad(np.eye(3)[[0, 1, 2, 0]], p, logits=z)
    assert dz.dtype == np.float32 and isinstance(v, float)


def test_from_logits_loss_cannot_be_fused():
    with pytest.raises(TypeError, match="already takes logits"):
        L.CategoricalCrossentropy(from_logits=True).logits_value_and_grad(np.eye(2), np.eye(2))
    with pytest.raises(TypeError, match="cannot be fused"):
        L.MeanSquaredError().logits_value_and_grad(np.eye(2), np.eye(2))


# ---- validation and registry ----------------------------------------------------------------------

def test_bad_labels_and_shapes():
    p = np.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match=r"y_true: labels must be in \[0, 4\).*\[0, 4\]"):
        L.sparse_categorical_crossentropy(np.array([[0, 1, 4], [0, 0, 0]]), p)
    with pytest.raises(ValueError, match=r"y_true: labels must be in \[0, 4\).*\[-1, 0\]"):
        L.sparse_categorical_crossentropy(np.array([[0, 0, 0], [0, -1, 0]]), p)
    with pytest.raises(ValueError, match=r"y_true: expected integer labels of shape \(2, 3\).*got \(3, 2\)"):
        L.sparse_categorical_crossentropy(np.zeros((3, 2), int), p)
    with pytest.raises(ValueError, match="non-integral"):
        L.sparse_categorical_crossentropy(np.full((2, 3), 0.5), p)
    with pytest.raises(ValueError, match=r"y_true: expected shape \(2, 3, 4\).*got \(2, 3, 5\)"):
        L.categorical_crossentropy(np.zeros((2, 3, 5)), p)
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\)"):
        L.mse(p, p, mask=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match="y_pred: expected a float array"):
        L.mse(np.zeros((2, 2)), np.zeros((2, 2), int))


def test_get_and_serialize():
    for name, cls in (("categorical_crossentropy", L.CategoricalCrossentropy), ("mse", L.MeanSquaredError),
                      ("mae", L.MeanAbsoluteError), ("SparseCategoricalCrossentropy",
                                                     L.SparseCategoricalCrossentropy),
                      ("binary_crossentropy", L.BinaryCrossentropy)):
        assert isinstance(L.get(name), cls)
    loss = L.CategoricalCrossentropy(from_logits=True)
    back = L.deserialize(L.serialize(loss))
    assert isinstance(back, L.CategoricalCrossentropy) and back.from_logits
    assert L.get(loss) is loss
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        L.get("hinge")
    with pytest.raises(TypeError, match="loss: expected a str"):
        L.get(3)
