"""Metrics: values against Keras 3 on fixed data, streamed over several update_state calls, with
sample weights and masks; vector results in fit; names, configs and input validation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rnnkit import metrics as M

# Keras accumulates most metric state in float32: agreement to 1e-6.
TOL = dict(rel=1e-6, abs=1e-6)


@pytest.fixture(scope="module")
def kt(keras):
    torch = pytest.importorskip("torch")
    from keras.src.backend import set_keras_mask

    return keras, torch, set_keras_mask


def _probs(rng, shape):
    e = np.exp(2.0 * rng.normal(size=shape))
    return e / e.sum(axis=-1, keepdims=True)


def _k_update(kt, km, y, p, sample_weight=None, mask=None):
    _, torch, set_keras_mask = kt
    pt = torch.tensor(p)
    if mask is not None:
        set_keras_mask(pt, torch.tensor(mask))
    km.update_state(torch.tensor(y), pt, sample_weight=None if sample_weight is None else torch.tensor(sample_weight))


def _k_result(km):
    return km.result().detach().numpy().astype(np.float64)


def _assert_close(got, want):
    if np.ndim(want) == 0:
        assert isinstance(got, float)
        assert got == pytest.approx(float(want), **TOL)
    else:
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=TOL["rel"], atol=TOL["abs"])


# ---- the metric table: rnnkit metric, Keras metric, data -------------------------------------------

def _d_onehot(rng, shape):
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    return np.eye(shape[-1])[labels], _probs(rng, shape)


def _d_labels(rng, shape):
    return rng.integers(0, shape[-1], size=shape[:-1]), _probs(rng, shape)


def _d_sorted_ids(rng, shape):
    labels = rng.integers(0, 6, size=shape[:-1])
    ids = np.argsort(-rng.random(shape[:-1] + (6,)), axis=-1)[..., :shape[-1]].astype(np.float64)
    return labels, ids


def _d_binary(rng, shape):
    return (rng.random(shape) > 0.5).astype(np.float64), rng.random(shape)


def _d_multilabel(rng, shape):  # correlated with the labels, so the metrics are not all ~0.5
    y = (rng.random(shape) > 0.6).astype(np.float64)
    return y, np.clip(0.35 * y + 0.65 * rng.random(shape), 0.0, 1.0)


def _d_regression(rng, shape):
    y = rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return y, y + rng.normal(size=shape)


# id: (rnnkit factory, Keras class, kwargs, data, Keras honours the mask itself)
MEAN_CASES = {
    "categorical_accuracy": (M.CategoricalAccuracy, "CategoricalAccuracy", {}, _d_onehot, True),
    "sparse_categorical_accuracy": (M.SparseCategoricalAccuracy, "SparseCategoricalAccuracy", {}, _d_labels, True),
    "binary_accuracy": (M.BinaryAccuracy, "BinaryAccuracy", {}, _d_binary, True),
    "top_k": (M.TopKCategoricalAccuracy, "TopKCategoricalAccuracy", {"k": 2}, _d_onehot, True),
    "sparse_top_k": (M.SparseTopKCategoricalAccuracy, "SparseTopKCategoricalAccuracy", {"k": 2}, _d_labels, True),
    "sparse_top_k_ids": (M.SparseTopKCategoricalAccuracy, "SparseTopKCategoricalAccuracy",
                         {"k": 2, "from_sorted_ids": True}, _d_sorted_ids, True),
    "mae": (M.MeanAbsoluteError, "MeanAbsoluteError", {}, _d_regression, True),
    "mse": (M.MeanSquaredError, "MeanSquaredError", {}, _d_regression, True),
    "mape": (M.MeanAbsolutePercentageError, "MeanAbsolutePercentageError", {}, _d_regression, True),
    "rmse": (M.RootMeanSquaredError, "RootMeanSquaredError", {}, _d_regression, False),
}

CONFUSION_CASES = {
    "precision": (M.Precision, "Precision", {}, _d_multilabel),
    "precision_thresholds": (M.Precision, "Precision", {"thresholds": [0.7, 0.2, 0.45]}, _d_multilabel),
    "precision_even_thresholds": (M.Precision, "Precision", {"thresholds": [0.0, 0.25, 0.5, 0.75, 1.0]},
                                  _d_multilabel),
    "precision_top_k": (M.Precision, "Precision", {"top_k": 2}, _d_multilabel),
    "precision_class_id": (M.Precision, "Precision", {"class_id": 1, "thresholds": 0.3}, _d_multilabel),
    "recall": (M.Recall, "Recall", {}, _d_multilabel),
    "recall_top_k_class_id": (M.Recall, "Recall", {"top_k": 2, "class_id": 2}, _d_multilabel),
    "recall_thresholds": (M.Recall, "Recall", {"thresholds": [0.1, 0.6]}, _d_multilabel),
    "auc": (M.AUC, "AUC", {}, _d_multilabel),
    "auc_pr": (M.AUC, "AUC", {"curve": "PR"}, _d_multilabel),
    "auc_pr_minoring": (M.AUC, "AUC", {"curve": "PR", "summation_method": "minoring"}, _d_multilabel),
    "auc_roc_majoring": (M.AUC, "AUC", {"summation_method": "majoring", "num_thresholds": 37}, _d_multilabel),
    "auc_prgain": (M.AUC, "AUC", {"curve": "PRGAIN", "num_thresholds": 50}, _d_multilabel),
    "auc_thresholds": (M.AUC, "AUC", {"thresholds": [0.15, 0.4, 0.45, 0.9]}, _d_multilabel),
    "auc_multi_label": (M.AUC, "AUC", {"multi_label": True, "num_labels": 3}, _d_multilabel),
    "auc_multi_label_pr_weights": (M.AUC, "AUC", {"multi_label": True, "curve": "PR",
                                                  "label_weights": [0.2, 1.0, 3.0]}, _d_multilabel),
    "auc_label_weights": (M.AUC, "AUC", {"label_weights": [0.5, 2.0, 1.0]}, _d_multilabel),
    "f1_none": (M.F1Score, "F1Score", {}, _d_multilabel),
    "f1_micro": (M.F1Score, "F1Score", {"average": "micro", "threshold": 0.4}, _d_multilabel),
    "f1_macro": (M.F1Score, "F1Score", {"average": "macro"}, _d_onehot),
    "f1_weighted": (M.F1Score, "F1Score", {"average": "weighted", "threshold": 0.5}, _d_multilabel),
    "fbeta": (M.FBetaScore, "FBetaScore", {"beta": 2.0, "average": "macro", "threshold": 0.45}, _d_multilabel),
}


@pytest.mark.keras
@pytest.mark.parametrize("case", sorted(MEAN_CASES))
def test_mean_metrics_match_keras_streaming_weights_and_masks(kt, rng, case):
    make, kname, kw, data, keras_masks = MEAN_CASES[case]
    keras = kt[0]
    # three [N, K] batches with per-sample weights, compared after every update
    ours, theirs = make(**kw), getattr(keras.metrics, kname)(dtype="float64", **kw)
    for n in (7, 5, 9):
        y, p = data(rng, (n, 3))
        sw = rng.uniform(0.0, 2.0, size=n)
        ours.update_state(y, p, sample_weight=sw)
        _k_update(kt, theirs, y, p, sample_weight=sw)
        _assert_close(ours.result(), _k_result(theirs))
    # [N, T, K] batches: a per-step weight, a per-sample weight with a mask (Keras: mask applied by
    # the wrapper, or folded into an [N, T] weight for the metrics that ignore it)
    ours.reset_state()
    theirs = getattr(keras.metrics, kname)(dtype="float64", **kw)
    y, p = data(rng, (4, 3, 3))
    sw = rng.uniform(0.0, 2.0, size=(4, 3))
    ours.update_state(y, p, sample_weight=sw)
    _k_update(kt, theirs, y, p, sample_weight=sw)
    y, p = data(rng, (5, 2, 3))  # another length T: samples, not steps, weigh across batches
    mask = rng.random((5, 2)) > 0.3
    sw_n = rng.uniform(0.5, 2.0, size=5)
    ours.update_state(y, p, mask=mask, sample_weight=sw_n)
    sw_full = np.repeat(sw_n[:, None], 2, axis=1)
    if keras_masks:
        _k_update(kt, theirs, y, p, sample_weight=sw_full, mask=mask)
    else:
        _k_update(kt, theirs, y, p, sample_weight=sw_full * mask)
    _assert_close(ours.result(), _k_result(theirs))
    y, p = data(rng, (3, 6, 3))  # unweighted, T = 6
    ours.update_state(y, p)
    _k_update(kt, theirs, y, p)
    _assert_close(ours.result(), _k_result(theirs))


@pytest.mark.keras
@pytest.mark.parametrize("case", sorted(CONFUSION_CASES))
def test_confusion_metrics_match_keras_streaming_weights_and_masks(kt, rng, case):
    make, kname, kw, data = CONFUSION_CASES[case]
    keras = kt[0]
    ours, theirs = make(**kw), getattr(keras.metrics, kname)(**kw)
    for n in (40, 25, 33):
        y, p = data(rng, (n, 3))
        sw = rng.uniform(0.0, 2.0, size=n)
        ours.update_state(y, p, sample_weight=sw)
        _k_update(kt, theirs, y, p, sample_weight=sw)
        _assert_close(ours.result(), _k_result(theirs))
    y, p = data(rng, (20, 3))
    ours.update_state(y, p)
    _k_update(kt, theirs, y, p)
    _assert_close(ours.result(), _k_result(theirs))
    # per-step [N, T, K] with a mask and per-sample weights: Keras (2-D only for the F-scores)
    # sees the entries flattened and the mask as zero weights
    y, p = data(rng, (6, 5, 3))
    mask = rng.random((6, 5)) > 0.3
    sw_n = rng.uniform(0.5, 2.0, size=6)
    ours.update_state(y, p, mask, sw_n)
    kweight = (np.repeat(sw_n[:, None], 5, axis=1) * mask).reshape(-1)
    _k_update(kt, theirs, y.reshape(-1, 3), p.reshape(-1, 3), sample_weight=kweight)
    _assert_close(ours.result(), _k_result(theirs))
    # reset_state forgets everything (and equals a fresh metric)
    ours.reset_state()
    fresh = make(**kw)
    ours.update_state(y[0], p[0])
    fresh.update_state(y[0], p[0])
    _assert_close(ours.result(), np.asarray(fresh.result()))


@pytest.mark.keras
def test_binary_predictions_of_one_channel_or_one_axis(kt, rng):
    keras = kt[0]
    y = (rng.random(30) > 0.5).astype(np.float64)
    p = np.clip(0.3 * y + 0.7 * rng.random(30), 0, 1)
    sw = rng.uniform(0.1, 2.0, size=30)
    for make, kname in ((M.Precision, "Precision"), (M.Recall, "Recall"), (M.AUC, "AUC")):
        for yy, pp in ((y, p), (y[:, None], p[:, None]), (y, p[:, None])):
            ours, theirs = make(), getattr(keras.metrics, kname)()
            ours.update_state(yy, pp, sample_weight=sw)
            _k_update(kt, theirs, yy, pp, sample_weight=sw)
            _assert_close(ours.result(), _k_result(theirs))


@pytest.mark.keras
def test_auc_from_logits_and_predictions_outside_unit_interval(kt, rng):
    keras = kt[0]
    y, _ = _d_multilabel(rng, (50, 2))
    z = 3.0 * rng.normal(size=(50, 2)) + 2.0 * y
    for kw in ({"from_logits": True}, {"from_logits": True, "curve": "PR"}, {}):
        ours, theirs = M.AUC(**kw), keras.metrics.AUC(**kw)
        pred = z if kw else np.clip(z, -0.5, 1.5) * 0.8  # raw scores: Keras clips to [0, 1]
        ours.update_state(y, pred)
        _k_update(kt, theirs, y, pred)
        _assert_close(ours.result(), _k_result(theirs))


# ---- semantics without Keras ----------------------------------------------------------------------

def test_mean_metric_weights_and_masks_by_hand(rng):
    y, p = _d_labels(rng, (4, 3, 5))
    correct = (p.argmax(-1) == y).astype(np.float64)
    mask = rng.random((4, 3)) > 0.3
    mask[0, 0] = True
    w = rng.uniform(0.1, 2.0, size=4)
    m = M.SparseCategoricalAccuracy()
    m.update_state(y, p, mask, w)
    ww = w[:, None] * mask
    assert m.result() == pytest.approx(float(np.sum(correct * ww) / np.sum(ww)), rel=1e-12)
    # garbage at masked steps never reaches the result
    p_bad = p.copy()
    p_bad[~mask] = np.nan
    m2 = M.MeanSquaredError()
    m2.update_state(p, p_bad, mask)
    assert m2.result() == 0.0
    # all weights zero: 0.0 (Keras's divide_no_nan); stateless __call__ leaves the state alone
    m3 = M.MeanAbsoluteError()
    m3.update_state(p, p + 1.0, sample_weight=np.zeros(4))
    assert m3.result() == 0.0
    m4 = M.RootMeanSquaredError()
    m4.update_state(p, p + 2.0)
    assert m4(p, p + 4.0) == pytest.approx(4.0, rel=1e-12)
    assert m4.result() == pytest.approx(2.0, rel=1e-12)


def test_top_k_ties_and_k_beyond_the_classes():
    p = np.array([[0.1, 0.5, 0.5, 0.2], [0.4, 0.3, 0.2, 0.1]])
    # a tie at the k-th score counts as in (Keras's in_top_k)
    np.testing.assert_array_equal(M.sparse_top_k_categorical_accuracy(np.array([2, 3]), p, k=1), [1.0, 0.0])
    np.testing.assert_array_equal(M.top_k_categorical_accuracy(np.eye(4)[[0, 3]], p, k=4), [1.0, 1.0])
    np.testing.assert_array_equal(M.top_k_categorical_accuracy(np.eye(4)[[0, 3]], p, k=9), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"y_true: labels must be in \[0, 4\)"):
        M.sparse_top_k_categorical_accuracy(np.array([0, 4]), p)


def test_result_types_and_before_any_update():
    assert M.Precision().result() == 0.0 and isinstance(M.Precision().result(), float)
    assert isinstance(M.Recall(thresholds=[0.2, 0.8]).result(), np.ndarray)
    assert M.AUC().result() == 0.0
    assert M.F1Score(average="macro").result() == 0.0
    assert M.F1Score().result().shape == (0,)
    f1 = M.F1Score()
    f1.update_state(np.eye(3)[[0, 1, 2, 1]], np.eye(3)[[0, 1, 1, 1]] * 0.9)
    r = f1.result()
    assert isinstance(r, np.ndarray) and r.shape == (3,)
    np.testing.assert_allclose(r, [1.0, 0.8, 0.0], atol=1e-6)
    f1.reset_state()
    np.testing.assert_array_equal(f1.result(), [0.0, 0.0, 0.0])  # keeps its classes after a reset
    assert "f1_score" in repr(f1)


def test_vector_results_in_fit_history_and_progress(rng, capsys):
    from rnnkit import optimizers as O
    from rnnkit.layers import Dense
    from rnnkit.models import Sequential

    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, :3] + 0.3 * rng.normal(size=(64, 3)) > 0).astype(np.float32)
    np.random.seed(0)
    model = Sequential([Dense(3, activation="sigmoid", input_shape=(4,))])
    model.compile(optimizer=O.Adam(0.05), loss="binary_crossentropy",
                  metrics=[M.F1Score(threshold=0.5), M.F1Score(average="macro", threshold=0.5, name="f1_macro"),
                           "precision", "auc", M.Recall(thresholds=[0.3, 0.7], name="recalls")])
    hist = model.fit(x, y, batch_size=16, epochs=6, verbose=2, sample_weight=rng.uniform(0.5, 1.5, size=64))
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 6 and "f1_macro: " in out and "precision: " in out and "auc: " in out
    f1 = hist.history["f1_score"]
    assert len(f1) == 6 and all(isinstance(v, np.ndarray) and v.shape == (3,) for v in f1)
    assert all(isinstance(v, float) for v in hist.history["f1_macro"])
    assert hist.history["recalls"][-1].shape == (2,)
    assert float(np.mean(f1[-1])) == pytest.approx(hist.history["f1_macro"][-1], rel=1e-9)
    assert hist.history["auc"][-1] > 0.8
    logs = model.evaluate(x, y, return_dict=True)
    p = model.predict(x)
    ref = M.F1Score(threshold=0.5)
    ref.update_state(y, p)
    np.testing.assert_allclose(logs["f1_score"], ref.result(), rtol=1e-12)


# ---- names, configs, validation -------------------------------------------------------------------

@pytest.mark.keras
def test_names_are_the_ones_keras_accepts(keras):
    for name, make in M._BY_NAME.items():
        metric = M.get(name)
        assert metric.name == name  # compile names a metric after its string, as Keras does
        assert type(keras.metrics.get(name)).__name__ == type(metric).__name__, name
    for cls in M._CLASSES.values():
        if cls is not M.Accuracy:
            assert type(M.get(cls.__name__)) is cls
            assert type(keras.metrics.get(cls.__name__)).__name__ == cls.__name__
    with pytest.raises(ValueError, match=r"unknown metric 'rmse' \(Keras's name is 'root_mean_squared_error'\)"):
        M.get("rmse")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        M.get("f1")
    acc = M.get("Accuracy", loss=__import__("rnnkit").losses.BinaryCrossentropy())
    assert acc.resolve(np.eye(2), np.eye(2)) is M.binary_accuracy
    assert [M.get(c).name for c in ("Precision", "AUC")] == ["Precision", "AUC"]
    assert [c().name for c in (M.Precision, M.Recall, M.AUC, M.F1Score, M.FBetaScore, M.RootMeanSquaredError)] == \
        ["precision", "recall", "auc", "f1_score", "fbeta_score", "root_mean_squared_error"]


ALL_METRICS = [
    M.CategoricalAccuracy(), M.SparseCategoricalAccuracy(name="sca"), M.BinaryAccuracy(threshold=0.3),
    M.TopKCategoricalAccuracy(k=3), M.SparseTopKCategoricalAccuracy(k=2, from_sorted_ids=True),
    M.MeanAbsoluteError(), M.MeanSquaredError(), M.MeanAbsolutePercentageError(), M.RootMeanSquaredError(),
    M.Precision(thresholds=[0.2, 0.6], class_id=1), M.Recall(top_k=2, name="r"),
    M.AUC(num_thresholds=50, curve="PR", summation_method="minoring", name="a", multi_label=True,
          num_labels=3, label_weights=[1.0, 2.0, 0.5], from_logits=True),
    M.AUC(thresholds=[0.3, 0.1]), M.F1Score(average="weighted", threshold=0.4),
    M.FBetaScore(average="micro", beta=0.5),
]


@pytest.mark.parametrize("metric", ALL_METRICS, ids=lambda m: type(m).__name__)
def test_config_round_trip(rng, metric):
    cfg = M.serialize(metric)
    assert json.loads(json.dumps(cfg)) == cfg
    back = M.get(cfg)
    assert type(back) is type(metric) and back.get_config() == metric.get_config()
    assert M.deserialize(cfg).get_config() == metric.get_config()
    # the rebuilt metric computes the same thing
    y, p = _d_multilabel(rng, (12, 3))
    if isinstance(metric, (M.SparseCategoricalAccuracy, M.SparseTopKCategoricalAccuracy)):
        y = rng.integers(0, 3, size=12)
    for m in (metric, back):
        m.reset_state()
        m.update_state(y, p)
    np.testing.assert_allclose(back.result(), metric.result(), rtol=1e-15)


def test_argument_and_input_errors():
    with pytest.raises(ValueError, match=r"thresholds: expected a float or a non-empty list of floats in "
                                         r"\[0, 1\], got \[0.5, 1.5\]"):
        M.Precision(thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="top_k: expected an int >= 1, got 0"):
        M.Recall(top_k=0)
    with pytest.raises(TypeError, match="class_id: expected None or an int >= 0, got float 1.0"):
        M.Precision(class_id=1.0)
    with pytest.raises(ValueError, match=r"class_id: expected a class in \[0, 3\) .*got 3"):
        M.Precision(class_id=3).update_state(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="curve: expected 'ROC', 'PR' or 'PRGAIN', got 'DET'"):
        M.AUC(curve="DET")
    with pytest.raises(ValueError, match="summation_method: expected 'interpolation'.*got 'trapezoid'"):
        M.AUC(summation_method="trapezoid")
    with pytest.raises(ValueError, match="num_thresholds: expected an int >= 2, got 1"):
        M.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match="num_labels: only used with multi_label=True"):
        M.AUC(num_labels=3)
    with pytest.raises(ValueError, match=r"label_weights: expected 3 weights \(y_pred's last axis\), got 2"):
        M.AUC(label_weights=[1.0, 2.0]).update_state(np.eye(3), np.eye(3))
    auc = M.AUC(multi_label=True)
    auc.update_state(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match=r"y_pred: expected 3 labels in the last axis \(multi_label\), got 2"):
        auc.update_state(np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="average: expected one of None, 'micro', 'macro', 'weighted', got 'samples'"):
        M.F1Score(average="samples")
    with pytest.raises(ValueError, match=r"threshold: expected None or a float in \(0, 1\], got 0.0"):
        M.F1Score(threshold=0.0)
    with pytest.raises(ValueError, match="beta: expected a float > 0, got -1.0"):
        M.FBetaScore(beta=-1.0)
    f1 = M.F1Score()
    f1.update_state(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match=r"y_pred: expected 3 classes in the last axis \(as in the first "
                                         r"batch\), got 4"):
        f1.update_state(np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match=r"y_pred: expected \[N, K\]"):
        M.F1Score().update_state(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"k: expected an int >= 1, got 0"):
        M.TopKCategoricalAccuracy(k=0)
    p = np.full((2, 3, 4), 0.25)
    for metric in (M.CategoricalAccuracy(), M.Precision(), M.AUC(), M.F1Score()):
        with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\) \(y_pred's shape without the last "
                                             r"axis\), got \(3, 2\)"):
            metric.update_state(p, p, mask=np.ones((3, 2), bool))
        with pytest.raises(ValueError, match=r"sample_weight: expected a shape broadcastable to \(2, 3\).*got \(3,\)"):
            metric.update_state(p, p, sample_weight=np.ones(3))
        with pytest.raises(ValueError, match=r"y_true: expected shape \(2, 3, 4\) \(the shape of y_pred\), "
                                             r"got \(2, 3, 5\)"):
            metric.update_state(np.zeros((2, 3, 5)), p)
    with pytest.raises(TypeError, match="metric: only the built-in metrics can be serialized"):
        M.serialize(M.MeanMetricWrapper(lambda t, q: np.abs(t - q).sum(-1), name="l1"))
    with pytest.raises(TypeError, match="fn: expected a callable"):
        M.MeanMetricWrapper(3)
