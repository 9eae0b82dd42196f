"""Losses: values and gradients against Keras 3 (torch autograd of the Keras loss) and finite
differences (float64), sample weights, masks, reductions, label smoothing, from_logits, the fused
softmax / sigmoid path, user-defined losses end to end, serialization and input validation."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import numerical_grad, rel_err
from rnnkit import losses as L

SHAPES = [(5, 4), (3, 4, 6)]  # [N, K] and per-time-step [N, T, K]

# Keras's final divide_no_nan runs in float32 on the torch backend even for float64 losses: the
# value and the 1 / n factor of the gradient carry float32 rounding (~6e-8 relative); everything
# else is float64.
KERAS_VALUE_RTOL = 1e-6
KERAS_GRAD_TOL = 2e-7
FD_TOL = 1e-6


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _probs(rng, shape):
    return _softmax(rng.normal(size=shape))


def _onehot(rng, shape):
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    return labels, np.eye(shape[-1])[labels]


def _fd_check(loss, y_true, y_pred, mask=None, sample_weight=None, tol=FD_TOL):
    value, grad = loss.value_and_grad(y_true, y_pred, mask, sample_weight)
    assert grad.shape == y_pred.shape and grad.dtype == y_pred.dtype
    assert value == pytest.approx(loss(y_true, y_pred, mask, sample_weight), rel=1e-12, abs=1e-12)
    num = numerical_grad(lambda: loss(y_true, y_pred, mask, sample_weight), y_pred, eps=1e-6)
    assert rel_err(grad, num) < tol
    return value, grad


# ---- the loss table: rnnkit loss, its Keras counterpart, data ------------------------------------

def _d_cat(rng, shape):
    _, y = _onehot(rng, shape)
    return y, y, _probs(rng, shape)


def _d_cat_logits(rng, shape):
    _, y = _onehot(rng, shape)
    return y, y, rng.normal(size=shape)


def _d_sparse(rng, shape):
    labels, _ = _onehot(rng, shape)
    return labels, labels, _probs(rng, shape)


def _d_sparse_logits(rng, shape):
    labels, _ = _onehot(rng, shape)
    return labels, labels, rng.normal(size=shape)


def _d_sparse_as_onehot(rng, shape):  # Keras 3's sparse loss has no label smoothing: compare to CCE
    labels, y = _onehot(rng, shape)
    return labels, y, _probs(rng, shape)


def _d_sparse_logits_as_onehot(rng, shape):
    labels, y = _onehot(rng, shape)
    return labels, y, rng.normal(size=shape)


def _d_binary(rng, shape):
    y = (rng.random(shape) > 0.5).astype(np.float64)
    return y, y, rng.uniform(0.05, 0.95, size=shape)


def _d_binary_logits(rng, shape):
    y = (rng.random(shape) > 0.5).astype(np.float64)
    return y, y, rng.normal(size=shape)


def _d_regression(rng, shape):  # |p - y| in [0.1, 1.3]: away from the kinks of |.| and Huber(0.7)
    y = rng.normal(size=shape)
    e = rng.choice([rng.uniform(0.1, 0.6), rng.uniform(0.8, 1.3)], size=shape)
    return y, y, y + e * rng.choice([-1.0, 1.0], size=shape)


def _d_positive(rng, shape):
    y = rng.uniform(0.5, 3.0, size=shape)
    return y, y, rng.uniform(0.5, 3.0, size=shape)


def _d_percentage(rng, shape):
    y = rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return y, y, y + rng.uniform(0.1, 0.4, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def _d_dist(rng, shape):
    y = _probs(rng, shape)
    return y, y, _probs(rng, shape)


def _d_normal(rng, shape):
    y = rng.normal(size=shape)
    return y, y, rng.normal(size=shape)


# id: (rnnkit loss, Keras loss class name, Keras kwargs (rnnkit's unless given), data)
CASES = {
    "cce": (lambda: L.CategoricalCrossentropy(), "CategoricalCrossentropy", {}, _d_cat),
    "cce_smooth": (lambda: L.CategoricalCrossentropy(label_smoothing=0.1), "CategoricalCrossentropy",
                   {"label_smoothing": 0.1}, _d_cat),
    "cce_logits_smooth": (lambda: L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
                          "CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.2},
                          _d_cat_logits),
    "scce": (lambda: L.SparseCategoricalCrossentropy(), "SparseCategoricalCrossentropy", {}, _d_sparse),
    "scce_logits": (lambda: L.SparseCategoricalCrossentropy(from_logits=True),
                    "SparseCategoricalCrossentropy", {"from_logits": True}, _d_sparse_logits),
    "scce_smooth": (lambda: L.SparseCategoricalCrossentropy(label_smoothing=0.15),
                    "CategoricalCrossentropy", {"label_smoothing": 0.15}, _d_sparse_as_onehot),
    "scce_logits_smooth": (lambda: L.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.3),
                           "CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.3},
                           _d_sparse_logits_as_onehot),
    "bce": (lambda: L.BinaryCrossentropy(), "BinaryCrossentropy", {}, _d_binary),
    "bce_smooth": (lambda: L.BinaryCrossentropy(label_smoothing=0.3), "BinaryCrossentropy",
                   {"label_smoothing": 0.3}, _d_binary),
    "bce_logits_smooth": (lambda: L.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
                          "BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1},
                          _d_binary_logits),
    "mse": (lambda: L.MeanSquaredError(), "MeanSquaredError", {}, _d_regression),
    "mae": (lambda: L.MeanAbsoluteError(), "MeanAbsoluteError", {}, _d_regression),
    "mape": (lambda: L.MeanAbsolutePercentageError(), "MeanAbsolutePercentageError", {}, _d_percentage),
    "msle": (lambda: L.MeanSquaredLogarithmicError(), "MeanSquaredLogarithmicError", {}, _d_positive),
    "huber": (lambda: L.Huber(delta=0.7), "Huber", {"delta": 0.7}, _d_regression),
    "log_cosh": (lambda: L.LogCosh(), "LogCosh", {}, _d_regression),
    "kld": (lambda: L.KLDivergence(), "KLDivergence", {}, _d_dist),
    "poisson": (lambda: L.Poisson(), "Poisson", {}, _d_positive),
    "cosine": (lambda: L.CosineSimilarity(), "CosineSimilarity", {}, _d_normal),
}


@pytest.fixture(scope="module")
def kt(keras):
    """(keras, torch, set_keras_mask) for the parity tests."""
    torch = pytest.importorskip("torch")
    from keras.src.backend import set_keras_mask

    return keras, torch, set_keras_mask


def _keras_loss(kt, name, kwargs, **extra):
    keras = kt[0]
    return getattr(keras.losses, name)(dtype="float64", **kwargs, **extra)


def _keras_value_grad(kt, kloss, y, p, sample_weight=None, mask=None):
    """Keras 3's loss value and torch's autograd gradient of it w.r.t. ``p``."""
    _, torch, set_keras_mask = kt
    pt = torch.tensor(p, requires_grad=True)
    if mask is not None:
        set_keras_mask(pt, torch.tensor(mask))
    sw = None if sample_weight is None else torch.tensor(sample_weight)
    v = kloss(torch.tensor(y), pt, sample_weight=sw)
    if v.ndim:
        return v.detach().numpy(), None
    v.backward()
    return float(v.detach()), pt.grad.detach().numpy()


# ---- parity with Keras 3 (values and gradients) ---------------------------------------------------

@pytest.mark.keras
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_keras_values_and_gradients(kt, rng, case):
    make, kname, kkw, data = CASES[case]
    loss, kloss = make(), _keras_loss(kt, kname, kkw)
    # [N, K]: unweighted, then a weight per sample
    y, yk, p = data(rng, (6, 5))
    sw = rng.uniform(0.1, 2.0, size=6)
    for weight in (None, sw):
        v, g = loss.value_and_grad(y, p, sample_weight=weight)
        kv, kg = _keras_value_grad(kt, kloss, yk, p, sample_weight=weight)
        assert v == pytest.approx(kv, rel=KERAS_VALUE_RTOL)
        assert rel_err(g, kg) < KERAS_GRAD_TOL
    # [N, T, K]: a weight per step; a mask with a weight per sample (rnnkit aligns [N] from the
    # left; Keras broadcasts from the right and cannot combine [N, 1] with a mask: it gets [N, T])
    y, yk, p = data(rng, (4, 3, 5))
    mask = rng.random((4, 3)) > 0.35
    mask[0, 0] = True
    sw_nt, sw_n = rng.uniform(0.1, 2.0, size=(4, 3)), rng.uniform(0.1, 2.0, size=4)
    for weight, kweight, m in ((sw_nt, sw_nt, None), (sw_n, np.repeat(sw_n[:, None], 3, axis=1), mask),
                               (sw_n, sw_n[:, None], None), (None, None, mask)):
        v, g = loss.value_and_grad(y, p, mask=m, sample_weight=weight)
        kv, kg = _keras_value_grad(kt, kloss, yk, p, sample_weight=kweight, mask=m)
        assert v == pytest.approx(kv, rel=KERAS_VALUE_RTOL)
        assert rel_err(g, kg) < KERAS_GRAD_TOL
        assert loss(y, p, m, weight) == pytest.approx(v, rel=1e-12)
    # the unreduced losses are Keras's per-entry losses
    per_k, _ = _keras_value_grad(kt, _keras_loss(kt, kname, kkw, reduction=None), yk, p)
    np.testing.assert_allclose(loss.call(y, p), per_k, rtol=KERAS_VALUE_RTOL, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences(rng, case):
    make, _, _, data = CASES[case]
    y, _, p = data(rng, (4, 3, 5))
    mask = rng.random((4, 3)) > 0.3
    mask[1, 1] = True
    _fd_check(make(), y, p)
    _fd_check(make(), y, p, mask=mask, sample_weight=rng.uniform(0.1, 2.0, size=(4, 3)))
    _fd_check(make(), y, p, sample_weight=rng.uniform(0.1, 2.0, size=4))


@pytest.mark.keras
@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_with_sample_weight", "sum_over_batch_size"])
def test_reductions_match_keras(kt, rng, reduction):
    mask = rng.random((4, 3)) > 0.35
    mask[0, 0] = True
    sw = rng.uniform(0.1, 2.0, size=(4, 3))
    for case in ("huber", "cce_smooth", "scce"):
        make, kname, kkw, data = CASES[case]
        y, yk, p = data(rng, (4, 3, 5))
        loss = type(make())(**{**make().get_config(), "reduction": reduction})
        kloss = _keras_loss(kt, kname, kkw, reduction=reduction)
        for weight, m in ((sw, mask), (None, mask), (sw, None), (None, None)):
            v, g = loss.value_and_grad(y, p, mask=m, sample_weight=weight)
            kv, kg = _keras_value_grad(kt, kloss, yk, p, sample_weight=weight, mask=m)
            assert v == pytest.approx(kv, rel=KERAS_VALUE_RTOL)
            assert rel_err(g, kg) < KERAS_GRAD_TOL
            num = numerical_grad(lambda: loss(y, p, m, weight), p, eps=1e-6)
            assert rel_err(g, num) < FD_TOL


@pytest.mark.keras
def test_reduction_none_returns_keras_weighted_entries(kt, rng):
    y, _, p = _d_regression(rng, (4, 3, 5))
    sw = rng.uniform(0.1, 2.0, size=(4, 3))
    loss = L.Huber(reduction=None)
    got = loss(y, p, sample_weight=sw)
    want, _ = _keras_value_grad(kt, _keras_loss(kt, "Huber", {}, reduction=None), y, p, sample_weight=sw)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, want, rtol=KERAS_VALUE_RTOL)
    with pytest.raises(ValueError, match="reduction: Huber.value_and_grad needs a scalar loss"):
        loss.value_and_grad(y, p)


@pytest.mark.keras
def test_sparse_ignore_class_matches_keras(kt, rng):
    labels, _ = _onehot(rng, (4, 3, 5))
    labels[0, 1] = labels[2, 0] = labels[3, 2] = -1
    mask = rng.random((4, 3)) > 0.2
    sw = rng.uniform(0.1, 2.0, size=(4, 3))
    for from_logits, p in ((True, rng.normal(size=(4, 3, 5))), (False, _probs(rng, (4, 3, 5)))):
        loss = L.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=-1)
        kloss = _keras_loss(kt, "SparseCategoricalCrossentropy", {"from_logits": from_logits, "ignore_class": -1})
        for weight, m in ((None, None), (sw, mask)):
            v, g = _fd_check(loss, labels, p, mask=m, sample_weight=weight)
            kv, kg = _keras_value_grad(kt, kloss, labels, p, sample_weight=weight, mask=m)
            assert v == pytest.approx(kv, rel=KERAS_VALUE_RTOL)
            assert rel_err(g, kg) < KERAS_GRAD_TOL
            assert not np.any(g[labels == -1])
        # the ignored entries are excluded from the mean, as masked ones are
        valid = labels != -1
        assert loss(labels, p) == pytest.approx(L.SparseCategoricalCrossentropy(from_logits=from_logits)(
            np.where(valid, labels, 0), p, mask=valid), rel=1e-12)
        assert np.all(loss.call(labels, p)[~valid] == 0)


@pytest.mark.keras
def test_class_axis_other_than_last_matches_keras(kt, rng):
    # [N, K, T]: the class/feature axis is 1, the entries are [N, T]
    labels = rng.integers(0, 4, size=(3, 5))
    y = np.ascontiguousarray(np.moveaxis(np.eye(4)[labels], -1, 1))
    p = np.ascontiguousarray(np.moveaxis(_probs(rng, (3, 5, 4)), -1, 1))
    yb = (rng.random((3, 4, 5)) > 0.5).astype(np.float64)
    pb = rng.uniform(0.05, 0.95, size=(3, 4, 5))
    yc, pc = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    sw = rng.uniform(0.1, 2.0, size=(3, 5))
    for loss, kname, kkw, yy, pp in (
            (L.CategoricalCrossentropy(axis=1), "CategoricalCrossentropy", {"axis": 1}, y, p),
            (L.SparseCategoricalCrossentropy(axis=1), "SparseCategoricalCrossentropy", {"axis": 1}, labels, p),
            (L.BinaryCrossentropy(axis=1), "BinaryCrossentropy", {"axis": 1}, yb, pb),
            (L.CosineSimilarity(axis=1), "CosineSimilarity", {"axis": 1}, yc, pc)):
        assert loss.fusable_activation is None
        v, g = _fd_check(loss, yy, pp, sample_weight=sw)
        kv, kg = _keras_value_grad(kt, _keras_loss(kt, kname, kkw), yy, pp, sample_weight=sw)
        assert v == pytest.approx(kv, rel=KERAS_VALUE_RTOL)
        assert rel_err(g, kg) < KERAS_GRAD_TOL
        assert loss.call(yy, pp).shape == (3, 5)
    # label smoothing spreads over the K classes of the class axis (Keras 3 divides by the size of
    # the last axis whatever `axis` is; rnnkit does not copy that)
    smooth = L.CategoricalCrossentropy(axis=1, label_smoothing=0.1)
    v, g = _fd_check(smooth, y, p, sample_weight=sw)
    v_last, g_last = L.CategoricalCrossentropy(label_smoothing=0.1).value_and_grad(
        np.moveaxis(y, 1, -1), np.moveaxis(p, 1, -1), sample_weight=sw)
    assert v == pytest.approx(v_last, rel=1e-12)
    np.testing.assert_allclose(g, np.moveaxis(g_last, -1, 1), rtol=1e-12, atol=1e-15)
    with pytest.raises(TypeError, match=r"CategoricalCrossentropy\(axis=1\) cannot be fused"):
        L.CategoricalCrossentropy(axis=1).logits_value_and_grad(y, p)


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
    # torch's label smoothing is the same formula: y (1 - ls) + ls / K
    assert L.sparse_categorical_crossentropy(labels, z, from_logits=True, label_smoothing=0.2)[0] == \
        pytest.approx(F.cross_entropy(zt, torch.tensor(labels), label_smoothing=0.2).item(), rel=1e-10)
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
    assert L.huber(t, z, delta=0.5)[0] == pytest.approx(
        F.huber_loss(zt, torch.tensor(t), delta=0.5).item(), rel=1e-12)
    # weights: sum(per * w) / n (Keras's "sum_over_batch_size", not torch's weighted mean)
    w = rng.uniform(0.1, 2.0, size=6)
    per = F.cross_entropy(zt, torch.tensor(labels), reduction="none").numpy()
    assert L.sparse_categorical_crossentropy(labels, z, from_logits=True, sample_weight=w)[0] == \
        pytest.approx(float(np.sum(per * w) / 6), rel=1e-12)


def test_keras_clipping_of_probabilities():
    y = np.array([[1.0, 0.0]])
    p = np.array([[0.0, 1.0]])  # log(0) would be -inf; Keras clips at 1e-7
    assert L.categorical_crossentropy(y, p)[0] == pytest.approx(-np.log(L.EPSILON), rel=1e-9)
    v, g = L.binary_crossentropy(np.array([[1.0]]), np.array([[0.0]]))
    assert v == pytest.approx(-np.log(L.EPSILON), rel=1e-6)
    assert np.all(np.isfinite(g))
    # KL divergence clips both sides to [1e-7, 1]; the gradient is 0 where p is clipped
    v, g = L.kl_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert v == pytest.approx(np.log(1.0 / L.EPSILON) + L.EPSILON * np.log(L.EPSILON), rel=1e-9)
    assert g[0, 0] == 0.0


def test_categorical_renormalises_predictions(rng):
    p = _probs(rng, (4, 3))
    _, y = _onehot(rng, (4, 3))
    assert L.categorical_crossentropy(y, 3.0 * p)[0] == pytest.approx(
        L.categorical_crossentropy(y, p)[0], rel=1e-12)


def test_cosine_similarity_zero_vectors_and_float32(rng):
    y = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    p = np.array([[2.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    loss = L.CosineSimilarity(reduction=None)
    np.testing.assert_allclose(loss(y, p), [-1.0, 0.0, 0.0], atol=1e-12)
    v, g = L.cosine_similarity(y, p)
    assert v == pytest.approx(-1.0 / 3.0, rel=1e-12) and np.all(np.isfinite(g))
    # along a parallel prediction the gradient is orthogonal to p (scale invariance)
    assert abs(np.dot(g[0], p[0])) < 1e-12
    v32, g32 = L.cosine_similarity(y.astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32))
    assert g32.dtype == np.float32 and isinstance(v32, float)


# ---- sample weights and masks ---------------------------------------------------------------------

def test_sample_weight_semantics(rng):
    p = _probs(rng, (4, 3, 5))
    labels, y = _onehot(rng, (4, 3, 5))
    loss = L.CategoricalCrossentropy()
    per = loss.call(y, p)
    w_n = rng.uniform(0.1, 2.0, size=4)
    # [N] applies to every step of the sample; [N, 1] and [N, T] spell the same weights
    v, g = loss.value_and_grad(y, p, sample_weight=w_n)
    assert v == pytest.approx(float(np.sum(per * w_n[:, None]) / 12), rel=1e-12)
    for same in (w_n[:, None], np.repeat(w_n[:, None], 3, axis=1), w_n[:, None, None]):
        v2, g2 = loss.value_and_grad(y, p, sample_weight=same)
        assert v2 == pytest.approx(v, rel=1e-12)
        np.testing.assert_allclose(g2, g, rtol=1e-12, atol=0)
    # a scalar weight scales the loss; the weight of a masked entry does not matter
    assert loss(y, p, sample_weight=2.5) == pytest.approx(2.5 * loss(y, p), rel=1e-12)
    mask = rng.random((4, 3)) > 0.4
    mask[0, 0] = True
    w = rng.uniform(0.1, 2.0, size=(4, 3))
    w2 = np.where(mask, w, 1e9)
    v, g = loss.value_and_grad(y, p, mask, w)
    assert v == pytest.approx(float(np.sum(per[mask] * w[mask]) / mask.sum()), rel=1e-12)
    v2, g2 = loss.value_and_grad(y, p, mask, w2)
    assert v2 == pytest.approx(v, rel=1e-12)
    np.testing.assert_array_equal(g2, g)
    assert not np.any(g[~mask])
    # all-zero weights and an all-masked batch give 0 and a zero gradient (Keras's divide_no_nan)
    v0, g0 = loss.value_and_grad(y, p, mask=np.zeros((4, 3), bool))
    assert v0 == 0.0 and not np.any(g0)
    v0, g0 = loss.value_and_grad(y, p, sample_weight=np.zeros(4))
    assert v0 == 0.0 and not np.any(g0)
    v0, g0 = L.Huber(reduction="mean_with_sample_weight").value_and_grad(y, p, sample_weight=np.zeros(4))
    assert v0 == 0.0 and not np.any(g0)


def test_masked_entries_never_reach_the_value(rng):
    labels, y = _onehot(rng, (3, 4, 5))
    p = _probs(rng, (3, 4, 5))
    mask = np.ones((3, 4), bool)
    mask[1, 2:] = False
    p_bad = p.copy()
    p_bad[1, 2:] = np.nan  # e.g. garbage at padded steps
    sw = rng.uniform(0.1, 2.0, size=3)
    for loss, target in ((L.CategoricalCrossentropy(), y), (L.SparseCategoricalCrossentropy(), labels),
                         (L.MeanSquaredError(reduction="sum"), y)):
        for w in (None, sw):
            v, g = loss.value_and_grad(target, p, mask, w)
            assert loss(target, p_bad, mask, w) == pytest.approx(v, rel=1e-12)
            assert not np.any(g[~mask]) and np.all(g[mask] != 0)


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


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
def test_crossentropy_gradients(rng, shape, from_logits):
    labels, y = _onehot(rng, shape)
    y_soft = 0.7 * y + 0.3 / shape[-1]  # soft targets exercise the general formula too
    pred = rng.normal(size=shape) if from_logits else rng.uniform(0.1, 1.0, size=shape)
    _fd_check(L.CategoricalCrossentropy(from_logits=from_logits), y_soft, pred)
    _fd_check(L.SparseCategoricalCrossentropy(from_logits=from_logits), labels, pred)
    _fd_check(L.SparseCategoricalCrossentropy(from_logits=from_logits, label_smoothing=0.2), labels, pred)
    yb = (rng.random(shape) > 0.5).astype(np.float64)
    bpred = rng.normal(size=shape) if from_logits else rng.uniform(0.05, 0.95, size=shape)
    _fd_check(L.BinaryCrossentropy(from_logits=from_logits), yb, bpred)


def test_sparse_smoothing_equals_categorical_smoothing_on_one_hot(rng):
    labels, y = _onehot(rng, (3, 4, 5))
    p = _probs(rng, (3, 4, 5))
    sw = rng.uniform(0.1, 2.0, size=3)
    for from_logits in (False, True):
        pred = rng.normal(size=p.shape) if from_logits else p
        v1, g1 = L.SparseCategoricalCrossentropy(from_logits=from_logits, label_smoothing=0.25
                                                 ).value_and_grad(labels, pred, sample_weight=sw)
        v2, g2 = L.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=0.25
                                           ).value_and_grad(y, pred, sample_weight=sw)
        assert v1 == pytest.approx(v2, rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-15)


# ---- fused softmax / sigmoid ----------------------------------------------------------------------

def _softmax_jacobian_chain(g, p):
    # d/dz of L(softmax(z)) given g = dL/dp: p * (g - sum(g p))
    return p * (g - np.sum(g * p, axis=-1, keepdims=True))


FUSED = [
    (lambda: L.CategoricalCrossentropy(), "dense", "softmax"),
    (lambda: L.CategoricalCrossentropy(label_smoothing=0.2), "dense", "softmax"),
    (lambda: L.SparseCategoricalCrossentropy(), "sparse", "softmax"),
    (lambda: L.SparseCategoricalCrossentropy(label_smoothing=0.1), "sparse", "softmax"),
    (lambda: L.SparseCategoricalCrossentropy(ignore_class=-1), "sparse_ignore", "softmax"),
    (lambda: L.BinaryCrossentropy(), "binary", "sigmoid"),
    (lambda: L.BinaryCrossentropy(label_smoothing=0.3, reduction="sum"), "binary", "sigmoid"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", range(len(FUSED)))
def test_fused_path_equals_unfused_path(rng, shape, k):
    make, kind, act = FUSED[k]
    loss = make()
    assert loss.fusable_activation == act
    z = rng.normal(size=shape)
    labels, y = _onehot(rng, shape)
    if kind == "dense":
        target = y
    elif kind == "binary":
        target = (rng.random(shape) > 0.5).astype(np.float64)
    else:
        target = labels.copy()
        if kind == "sparse_ignore":
            target.reshape(-1)[::3] = -1
    f = _softmax if act == "softmax" else _sigmoid
    p = f(z)
    lead = shape[:-1]
    mask = rng.random(lead) > 0.3
    mask.reshape(-1)[0] = True
    sw = rng.uniform(0.1, 2.0, size=lead)
    for m, w in ((None, None), (mask, sw)):
        v_fused, dz = loss.logits_value_and_grad(target, p, logits=z, mask=m, sample_weight=w)
        v_plain, dp = loss.value_and_grad(target, p, m, w)
        assert v_fused == pytest.approx(v_plain, rel=1e-10)
        chain = _softmax_jacobian_chain(dp, p) if act == "softmax" else dp * p * (1.0 - p)
        np.testing.assert_allclose(dz, chain, rtol=1e-8, atol=1e-12)
        num = numerical_grad(lambda: loss(target, f(z), m, w), z)
        assert rel_err(dz, num) < FD_TOL
        # the value without logits (clipped probabilities) agrees away from the clip
        v_nologits, dz2 = loss.logits_value_and_grad(target, p, mask=m, sample_weight=w)
        assert v_nologits == pytest.approx(v_plain, rel=1e-10)
        np.testing.assert_array_equal(dz2, dz)


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
    v, dz = L.CategoricalCrossentropy(label_smoothing=0.1).logits_value_and_grad(
        np.eye(3)[[0, 1, 2, 0]], p, logits=z, sample_weight=np.ones(4))
    assert dz.dtype == np.float32 and isinstance(v, float)


def test_cannot_fuse():
    with pytest.raises(TypeError, match="already takes logits"):
        L.CategoricalCrossentropy(from_logits=True).logits_value_and_grad(np.eye(2), np.eye(2))
    with pytest.raises(TypeError, match="cannot be fused"):
        L.MeanSquaredError().logits_value_and_grad(np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match=r"logits: expected shape \(2, 2\).*got \(2, 3\)"):
        L.CategoricalCrossentropy().logits_value_and_grad(np.eye(2), np.eye(2) * 0.5 + 0.25,
                                                          logits=np.zeros((2, 3)))


@pytest.mark.parametrize("loss,act", [("categorical_crossentropy", "softmax"),
                                      ("sparse_categorical_crossentropy", "softmax"),
                                      ("binary_crossentropy", "sigmoid")])
def test_fused_training_step_with_smoothing_and_weights_equals_unfused(rng, loss, act):
    # through a model: the training loop's fused step (label smoothing, per-step weights) equals
    # the plain chain rule through the output activation
    from rnnkit import optimizers as O
    from rnnkit.layers import Dense, SimpleRNN
    from rnnkit.models import Sequential

    x = rng.normal(size=(6, 5, 3))
    labels, y = _onehot(rng, (6, 5, 4))
    target = {"sparse_categorical_crossentropy": labels,
              "binary_crossentropy": (rng.random((6, 5, 4)) > 0.5).astype(np.float64)}.get(loss, y)
    sw = rng.uniform(0.2, 2.0, size=(6, 5))
    np.random.seed(3)
    model = Sequential([SimpleRNN(7, return_sequences=True, input_shape=(5, 3), dtype="float64"),
                        Dense(4, activation=act, dtype="float64")])
    lobj = L.get({"class_name": type(L.get(loss)).__name__, "config": {"label_smoothing": 0.2}})
    assert lobj.fusable_activation == act
    model.compile(optimizer=O.SGD(0.5), loss=lobj)
    w0 = model.get_weights()
    out = model.forward(x, training=True)
    _, d = lobj.value_and_grad(target, out, sample_weight=sw)
    model.zero_grad()
    model.backward(d)
    params, grads = model.trainable_variables()
    expected = [p - 0.5 * g for p, g in zip(params, grads)]
    model.set_weights(w0)
    model.train_on_batch(x, target, sample_weight=sw)  # the fused path
    for got, want in zip(model.trainable_variables()[0], expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ---- user-defined losses --------------------------------------------------------------------------

class MeanFourthPower(L.Loss):
    """A custom loss by the documented rule: call -> per-entry losses, gradient -> d/d y_pred."""

    def call(self, y_true, y_pred):
        return np.mean((y_pred - y_true) ** 4, axis=-1)

    def gradient(self, y_true, y_pred):
        return 4.0 * (y_pred - y_true) ** 3 / y_pred.shape[-1]


def _fourth(y_true, y_pred):
    return np.mean((y_pred - y_true) ** 4, axis=-1)


def _fourth_grad(y_true, y_pred):
    return 4.0 * (y_pred - y_true) ** 3 / y_pred.shape[-1]


def test_custom_loss_subclass_gets_weights_masks_and_reduction(rng):
    y, p = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    mask = rng.random((4, 3)) > 0.3
    mask[0, 0] = True
    sw = rng.uniform(0.1, 2.0, size=4)
    loss = MeanFourthPower()
    assert loss.name == "mean_fourth_power" and loss.reduction == "sum_over_batch_size"
    v, _ = _fd_check(loss, y, p, mask=mask, sample_weight=sw)
    per = _fourth(y, p)
    assert v == pytest.approx(float(np.sum((per * sw[:, None])[mask]) / mask.sum()), rel=1e-12)
    _fd_check(MeanFourthPower(reduction="sum"), y, p, sample_weight=sw)
    # loss_function and a callable with a gradient attribute are the same loss
    _fourth.gradient = _fourth_grad
    try:
        for other in (L.loss_function(_fourth, _fourth_grad), L.get(_fourth)):
            v2, g2 = other.value_and_grad(y, p, mask, sw)
            assert v2 == pytest.approx(v, rel=1e-12) and isinstance(other, L.FunctionLoss)
            np.testing.assert_allclose(g2, loss.value_and_grad(y, p, mask, sw)[1], rtol=1e-12)
        assert L.get(_fourth).name == "_fourth"
    finally:
        del _fourth.gradient
    assert isinstance(L.get(MeanFourthPower), MeanFourthPower)  # a class: instantiated like Keras


def test_custom_loss_errors_explain_the_rule(rng):
    y, p = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    with pytest.raises(TypeError, match=r"loss: the callable '_fourth' has no gradient.*subclass "
                                        r"rnnkit.losses.Loss and implement call.*loss_function"):
        L.get(_fourth)

    class NoGradient(L.Loss):
        def call(self, y_true, y_pred):
            return np.sum(y_pred, axis=-1)

    assert NoGradient()(y, p) == pytest.approx(float(np.mean(p.sum(-1))), rel=1e-12)
    with pytest.raises(NotImplementedError, match="NoGradient.gradient is not implemented.*no automatic"):
        NoGradient().value_and_grad(y, p)
    with pytest.raises(NotImplementedError, match="Nothing.call is not implemented"):
        type("Nothing", (L.Loss,), {})()(y, p)

    class WrongShapes(L.Loss):
        def call(self, y_true, y_pred):
            return y_pred

        def gradient(self, y_true, y_pred):
            return y_pred[:, :1]

    with pytest.raises(ValueError, match=r"WrongShapes.call: expected per-entry losses of shape \(3,\).*"
                                         r"got \(3, 2\)"):
        WrongShapes()(y, p)
    bad_grad = L.loss_function(lambda t, q: q.sum(-1), lambda t, q: q[:, :1], name="bad")
    with pytest.raises(ValueError, match=r"FunctionLoss.gradient: expected the gradient of shape \(3, 2\)"):
        bad_grad.value_and_grad(y, p)
    with pytest.raises(TypeError, match="gradient: expected a callable"):
        L.loss_function(_fourth, None)
    # the gradient array is never an alias of the caller's data
    same = L.loss_function(lambda t, q: q.sum(-1), lambda t, q: q)
    p0 = p.copy()
    same.value_and_grad(y, p)
    np.testing.assert_array_equal(p, p0)


def test_custom_loss_trains_end_to_end(rng):
    """compile(loss=MyLoss()).fit(...): the update is -lr * the gradient of the (masked, weighted)
    loss through the model, checked against finite differences (float64)."""
    from rnnkit import optimizers as O
    from rnnkit.layers import Dense, Embedding, SimpleRNN
    from rnnkit.models import Sequential

    n, t, lr = 6, 4, 0.1
    x = rng.integers(1, 6, size=(n, t))
    x[0, 3:] = 0
    x[2, 2:] = 0  # padding: masked steps
    y = rng.normal(size=(n, t, 2))
    sw = rng.uniform(0.5, 2.0, size=n)
    mask = x != 0

    def build():
        np.random.seed(7)
        model = Sequential([Embedding(6, 3, mask_zero=True, input_shape=(t,), dtype="float64"),
                            SimpleRNN(3, return_sequences=True, dtype="float64"),
                            Dense(2, dtype="float64")])
        return model

    def loss_at(model, weights):
        model.set_weights(weights)
        return MeanFourthPower()(y, model.predict(x, batch_size=n), mask, sw)

    for loss in (MeanFourthPower(), L.loss_function(_fourth, _fourth_grad)):
        model = build()
        model.compile(optimizer=O.SGD(lr), loss=loss)
        w0 = [w.copy() for w in model.get_weights()]
        hist = model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0, sample_weight=sw)
        w1 = model.get_weights()
        assert hist.history["loss"][0] == pytest.approx(loss_at(model, w0), rel=1e-10)
        for i, w in enumerate(w0):
            got = (w - w1[i]) / lr
            num = numerical_grad(lambda: loss_at(model, [*w0[:i], w, *w0[i + 1:]]), w, eps=1e-6)
            assert rel_err(got, num) < 1e-6, f"weight {i}"
    with pytest.raises(TypeError, match="has no gradient"):
        build().compile(optimizer="sgd", loss=_fourth)


def test_custom_loss_serialization():
    L.register(MeanFourthPower)
    try:
        cfg = L.serialize(MeanFourthPower(name="m4", reduction="sum"))
        assert cfg == {"class_name": "MeanFourthPower", "config": {"name": "m4", "reduction": "sum"}}
        back = L.deserialize(cfg)
        assert isinstance(back, MeanFourthPower) and back.name == "m4" and back.reduction == "sum"
        assert isinstance(L.get("MeanFourthPower"), MeanFourthPower)
    finally:
        L._CUSTOM_CLASSES.pop("MeanFourthPower")
    with pytest.raises(ValueError, match="unknown loss class 'MeanFourthPower'"):
        L.deserialize(cfg)
    assert isinstance(L.deserialize(cfg, custom_objects={"MeanFourthPower": MeanFourthPower}), MeanFourthPower)
    # a loss from functions: its config names the functions; loading needs them registered
    fl = L.loss_function(_fourth, _fourth_grad)
    cfg = L.serialize(fl)
    with pytest.raises(ValueError, match=r"unknown loss function .*_fourth.* register it"):
        L.deserialize(cfg)
    L.register(_fourth)
    L.register(_fourth_grad, name="fourth_grad")
    try:
        cfg = L.serialize(fl)
        assert cfg["config"]["fn"] == "_fourth" and cfg["config"]["gradient"] == "fourth_grad"
        back = L.deserialize(cfg)
        assert back.fn is _fourth and back.gradient_fn is _fourth_grad
    finally:
        L._CUSTOM_FUNCTIONS.pop("_fourth")
        L._CUSTOM_FUNCTIONS.pop("fourth_grad")
    with pytest.raises(ValueError, match="'huber' is a built-in loss"):
        L.register(MeanFourthPower, name="huber")
    with pytest.raises(TypeError, match="expected a Loss subclass or a function"):
        L.register(int)


# ---- registry, configs and validation -------------------------------------------------------------

def test_names_and_aliases():
    for names, cls in ((("categorical_crossentropy", "CategoricalCrossentropy"), L.CategoricalCrossentropy),
                       (("sparse_categorical_crossentropy",), L.SparseCategoricalCrossentropy),
                       (("binary_crossentropy", "bce", "BCE"), L.BinaryCrossentropy),
                       (("mse", "MSE", "mean_squared_error"), L.MeanSquaredError),
                       (("mae", "MAE", "mean_absolute_error"), L.MeanAbsoluteError),
                       (("mape", "mean_absolute_percentage_error"), L.MeanAbsolutePercentageError),
                       (("msle", "mean_squared_logarithmic_error"), L.MeanSquaredLogarithmicError),
                       (("huber", "Huber"), L.Huber), (("log_cosh", "logcosh", "LogCosh"), L.LogCosh),
                       (("kld", "KLD", "kl_divergence", "kullback_leibler_divergence"), L.KLDivergence),
                       (("poisson",), L.Poisson), (("cosine_similarity",), L.CosineSimilarity)):
        for name in names:
            assert type(L.get(name)) is cls, name
    # Keras's default names
    assert [L.get(n).name for n in ("huber", "logcosh", "kld", "poisson", "cosine_similarity")] == \
        ["huber_loss", "log_cosh", "kl_divergence", "poisson", "cosine_similarity"]
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        L.get("hinge")
    with pytest.raises(TypeError, match="loss: expected a str"):
        L.get(3)


ALL_LOSSES = [
    L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, axis=1, reduction="sum", name="c"),
    L.SparseCategoricalCrossentropy(True, -1, "mean", -1, "s", label_smoothing=0.2),
    L.BinaryCrossentropy(label_smoothing=0.3, reduction="mean_with_sample_weight"),
    L.MeanSquaredError(), L.MeanAbsoluteError(name="m"), L.MeanAbsolutePercentageError(),
    L.MeanSquaredLogarithmicError(), L.Huber(delta=2.5, reduction=None), L.LogCosh(), L.KLDivergence(),
    L.Poisson(reduction="sum"), L.CosineSimilarity(axis=0),
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: type(l).__name__)
def test_config_round_trip(loss):
    import json

    cfg = L.serialize(loss)
    assert json.loads(json.dumps(cfg)) == cfg
    back = L.get(cfg)
    assert type(back) is type(loss) and back.get_config() == loss.get_config()
    assert back.fusable_activation == loss.fusable_activation
    assert repr(back).startswith(type(loss).__name__ + "(")


@pytest.mark.keras
def test_keras_argument_order_and_defaults(keras):
    import inspect

    for ours in (L.CategoricalCrossentropy, L.SparseCategoricalCrossentropy, L.BinaryCrossentropy,
                 L.MeanSquaredError, L.MeanAbsoluteError, L.MeanAbsolutePercentageError,
                 L.MeanSquaredLogarithmicError, L.Huber, L.LogCosh, L.KLDivergence, L.Poisson,
                 L.CosineSimilarity):
        mine = inspect.signature(ours).parameters
        theirs = inspect.signature(getattr(keras.losses, ours.__name__)).parameters
        positional = [k for k, p in mine.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == [k for k in theirs if k != "dtype"][:len(positional)], ours.__name__
        for k in positional:
            assert mine[k].default == theirs[k].default, (ours.__name__, k)


def test_bad_labels_shapes_and_arguments():
    p = np.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match=r"y_true: labels must be in \[0, 4\).*\[0, 4\]"):
        L.sparse_categorical_crossentropy(np.array([[0, 1, 4], [0, 0, 0]]), p)
    with pytest.raises(ValueError, match=r"y_true: labels must be in \[0, 4\) for 4 classes \(or "
                                         r"ignore_class=-1\).*\[0, 7\]"):
        L.SparseCategoricalCrossentropy(ignore_class=-1)(np.array([[0, -1, 7], [0, 0, 0]]), p)
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
    with pytest.raises(ValueError, match=r"sample_weight: expected a shape broadcastable to \(2, 3\).*"
                                         r"got \(3,\)"):
        L.mse(p, p, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"sample_weight: .*got \(2, 3, 4\)"):
        L.mse(p, p, sample_weight=np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="sample_weight: expected a numeric array, got dtype <U1"):
        L.mse(p, p, sample_weight=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"label_smoothing: expected a float in \[0.0, 1.0\], got 1.5"):
        L.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"reduction: expected one of .*'sum_over_batch_size'.*got 'avg'"):
        L.Huber(reduction="avg")
    with pytest.raises(TypeError, match="axis: expected an int, got bool True"):
        L.CosineSimilarity(axis=True)
    with pytest.raises(ValueError, match=r"axis: expected an axis of y_pred's 3 axes .*got 3"):
        L.CosineSimilarity(axis=3)(p, p)
    with pytest.raises(ValueError, match=r"delta: expected a float in \(0.0, inf\], got -1"):
        L.Huber(delta=-1)
    with pytest.raises(TypeError, match="from_logits: expected a bool, got str 'yes'"):
        L.BinaryCrossentropy(from_logits="yes")
    with pytest.raises(TypeError, match="ignore_class: expected None or an int, got float 1.5"):
        L.SparseCategoricalCrossentropy(ignore_class=1.5)
    # a [N] target for a [N, 1] output is read as [N, 1] (Keras's squeeze_or_expand_to_same_rank)
    yb, pb = np.array([1.0, 0.0, 1.0]), np.array([[0.8], [0.3], [0.6]])
    assert L.binary_crossentropy(yb, pb)[0] == pytest.approx(L.binary_crossentropy(yb[:, None], pb)[0], rel=1e-15)
