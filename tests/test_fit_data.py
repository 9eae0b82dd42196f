"""fit / evaluate / predict inputs as Keras 3 takes them: sample and class weights, generators,
PyDataset-style sources, steps_per_epoch, validation_freq / validation_batch_size, ``y`` of
shape ``(N,)`` for a one-unit output, ragged inputs, and the *_on_batch methods."""
from __future__ import annotations

import numpy as np
import pytest

from rnnkit.layers import GRU, Dense, Input
from rnnkit.models import Model, Sequential
from rnnkit.optimizers import SGD


def _data(rng, n=64, t=6, c=3, k=3):
    x = rng.standard_normal((n, t, c))
    labels = (x[:, :, 0] > 0).astype(np.int64) + (x[:, :, 1] > 1).astype(np.int64)
    return x, labels, np.eye(k)[labels]


def _model(seq=True, k=3, dtype="float64", seed=0):
    np.random.seed(seed)
    return Sequential([GRU(5, return_sequences=seq, input_shape=(6, 3), dtype=dtype),
                       Dense(k, activation="softmax", dtype=dtype)])


def _weights(m):
    return [w.copy() for w in m.get_weights()]


# ---- sample and class weights --------------------------------------------------------------------

def test_sample_weight_per_sample_and_per_step_scale_the_loss(rng):
    x, labels, y = _data(rng)
    m = _model()
    m.compile(optimizer=SGD(0.0), loss="categorical_crossentropy")
    p = m.predict(x)
    per = -np.sum(y * np.log(np.clip(p, 1e-7, 1 - 1e-7)), axis=-1)  # [N, T]
    w = rng.random(64)
    np.testing.assert_allclose(m.evaluate(x, y, sample_weight=w, batch_size=64, verbose=0),
                               np.sum(per * w[:, None]) / per.size, rtol=1e-10)
    w2 = rng.random((64, 6))
    np.testing.assert_allclose(m.evaluate(x, y, sample_weight=w2, batch_size=64, verbose=0),
                               np.sum(per * w2) / per.size, rtol=1e-10)


def test_class_weight_equals_the_matching_sample_weight(rng):
    x, labels, y = _data(rng)
    cw = {0: 0.5, 1: 2.0, 2: 4.0}
    a, b = _model(), _model()
    for m in (a, b):
        m.compile(optimizer=SGD(0.1), loss="categorical_crossentropy")
    a.fit(x, y, batch_size=16, epochs=2, class_weight=cw, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=16, epochs=2, sample_weight=np.vectorize(cw.get)(labels).astype(float),
          shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-14)
    # sparse labels give the same as one-hot targets
    c = _model()
    c.compile(optimizer=SGD(0.1), loss="sparse_categorical_crossentropy")
    c.fit(x, labels, batch_size=16, epochs=2, class_weight=cw, shuffle=False, verbose=0)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(wa, wc, rtol=1e-10, atol=1e-12)


def test_weight_errors_name_the_argument(rng):
    x, labels, y = _data(rng)
    m = _model()
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"sample_weight: expected 64 weights"):
        m.fit(x, y, sample_weight=np.ones(63), verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight: expected shape \(64,\) \(per sample\) or \(64, 6\)"):
        m.fit(x, y, sample_weight=np.ones((64, 5)), verbose=0)
    with pytest.raises(ValueError, match="sample_weight: expected finite, non-negative"):
        m.fit(x, y, sample_weight=-np.ones(64), verbose=0)
    with pytest.raises(TypeError, match="class_weight: expected a dict"):
        m.fit(x, y, class_weight=[1.0, 2.0], verbose=0)
    with pytest.raises(ValueError, match="class_weight: expected non-negative int class indices"):
        m.fit(x, y, class_weight={"a": 1.0}, verbose=0)


@pytest.mark.keras
def test_weighted_evaluate_matches_keras(keras, rng):
    import torch

    x, labels, y = _data(rng, n=32)
    y = y[:, -1]  # one target per sample (Keras's torch backend cannot broadcast [N] weights over steps)
    m = _model(seq=False, dtype="float32")
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    km = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(5),
                           keras.layers.Dense(3, activation="softmax")])
    km.set_weights(m.get_weights())
    km.compile(optimizer="sgd", loss="categorical_crossentropy")
    w = rng.random(32).astype(np.float32)
    got = m.evaluate(x.astype(np.float32), y.astype(np.float32), sample_weight=w, batch_size=32, verbose=0)
    want = km.evaluate(x.astype(np.float32), y.astype(np.float32), sample_weight=w, batch_size=32, verbose=0)
    assert got == pytest.approx(float(want), rel=1e-5)
    del torch


# ---- sources of batches --------------------------------------------------------------------------

class _Batches:
    """A PyDataset-like source: __len__, __getitem__, on_epoch_end."""

    def __init__(self, x, y, bs):
        self.x, self.y, self.bs, self.ends = x, y, bs, 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        s = slice(i * self.bs, (i + 1) * self.bs)
        return self.x[s], self.y[s]

    def on_epoch_end(self):
        self.ends += 1


def test_generators_lists_and_datasets_train_like_arrays(rng):
    x, labels, y = _data(rng)
    ref = _model()
    ref.compile(optimizer=SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    h_ref = ref.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]

    class Reiterable:  # any iterable that can be iterated again: one pass per epoch
        def __iter__(self):
            return iter(batches)

    for source in (Reiterable(), _Batches(x, y, 16)):
        m = _model()
        m.compile(optimizer=SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
        h = m.fit(source, epochs=2, verbose=0)
        np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-12)
        for a, b in zip(m.get_weights(), ref.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert source.ends == 2  # on_epoch_end after every epoch
    # an endless generator with steps_per_epoch
    def endless():
        while True:
            for b in batches:
                yield b
    m = _model()
    m.compile(optimizer=SGD(0.1), loss="categorical_crossentropy")
    h = m.fit(endless(), steps_per_epoch=4, epochs=2, verbose=0)
    np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-12)
    # generators for evaluate and predict, with (x, y, w) batches
    wb = ((bx, by, np.ones(len(bx))) for bx, by in batches)
    assert m.evaluate(wb, verbose=0) == pytest.approx(m.evaluate(x, y, batch_size=16, verbose=0), rel=1e-12)
    np.testing.assert_allclose(m.predict(iter(batches), verbose=0), m.predict(x, verbose=0), rtol=1e-12)
    np.testing.assert_allclose(m.predict(_Batches(x, y, 16), verbose=0), m.predict(x, verbose=0), rtol=1e-12)


def test_generator_errors(rng):
    x, labels, y = _data(rng)
    m = _model()
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    once = ((x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16))
    with pytest.raises(ValueError, match="the generator ran out after its first epoch; give steps_per_epoch"):
        m.fit(once, epochs=2, verbose=0)
    short = ((x[i:i + 16], y[i:i + 16]) for i in range(0, 32, 16))
    with pytest.raises(ValueError, match=r"the data ran out after 2 batch\(es\) of an epoch of steps_per_epoch=4"):
        m.fit(short, steps_per_epoch=4, verbose=0)
    with pytest.raises(ValueError, match="y: a list_iterator yields its own targets"):
        m.fit(iter([(x, y)]), y, verbose=0)
    with pytest.raises(ValueError, match=r"y \(batch 0\): expected shape \(16, 6, 3\)"):
        m.fit(iter([(x[:16], y[:16, :, :2])]), verbose=0)
    with pytest.raises(ValueError, match="validation_split: only for array inputs"):
        m.fit(iter([(x, y)]), validation_split=0.5, verbose=0)


def test_steps_per_epoch_on_arrays_continues_through_the_data(rng):
    x, labels, y = _data(rng)
    m = _model()
    m.compile(optimizer=SGD(0.1), loss="categorical_crossentropy")
    seen = []

    from rnnkit.callbacks import LambdaCallback
    cb = LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    m.fit(x, y, batch_size=16, steps_per_epoch=3, epochs=3, verbose=0, callbacks=[cb])
    assert seen == [0, 1, 2] * 3


def test_validation_freq_and_batch_size(rng):
    x, labels, y = _data(rng)
    m = _model()
    m.compile(optimizer=SGD(0.1), loss="categorical_crossentropy")
    h = m.fit(x, y, batch_size=16, epochs=4, validation_data=(x[:20], y[:20]), validation_freq=2,
              validation_batch_size=7, verbose=0)
    assert len(h.history["loss"]) == 4 and len(h.history["val_loss"]) == 2
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(x[:20], y[:20], batch_size=20, verbose=0),
                                                      rel=1e-12)


# ---- shapes and small methods --------------------------------------------------------------------

def test_targets_of_shape_n_for_a_one_unit_output(rng):
    x = rng.standard_normal((40, 6, 3))
    t = x[:, :, 0].sum(axis=1)
    np.random.seed(1)
    m = Sequential([GRU(8, input_shape=(6, 3), dtype="float64"), Dense(1, dtype="float64")])
    m.compile(optimizer="adam", loss="mse")
    h = m.fit(x, t, epochs=3, batch_size=8, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert m.evaluate(x, t, verbose=0) == pytest.approx(m.evaluate(x, t[:, None], verbose=0), rel=1e-12)


def test_ragged_input_points_to_pad_sequences():
    np.random.seed(0)
    m = Sequential([Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match=r"x: the samples have different lengths .* rnnkit.utils.pad_sequences"):
        m.predict([[1.0, 2.0, 3.0], [1.0, 2.0]])


def test_on_batch_methods(rng):
    x, labels, y = _data(rng, n=16)
    m = _model()
    m.compile(optimizer=SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    before = m.test_on_batch(x, y, return_dict=True)
    assert set(before) == {"loss", "accuracy"}
    assert before["loss"] == pytest.approx(m.evaluate(x, y, batch_size=16, verbose=0)[0], rel=1e-12)
    w0 = _weights(m)
    out = m.train_on_batch(x, y)
    assert isinstance(out, list) and len(out) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(w0, m.get_weights()))
    np.testing.assert_allclose(m.predict_on_batch(x), m.predict(x, verbose=0), rtol=1e-12)


def test_multi_output_weights_by_name(rng):
    x = rng.standard_normal((32, 4))
    inp = Input((4,), dtype="float64")
    a = Dense(2, activation="softmax", name="a", dtype="float64")(inp)
    b = Dense(1, name="b", dtype="float64")(inp)
    m = Model(inp, [a, b])
    m.compile(optimizer=SGD(0.0), loss={"a": "categorical_crossentropy", "b": "mse"}, loss_weights=[1.0, 0.5])
    ya = np.eye(2)[rng.integers(0, 2, 32)]
    yb = rng.standard_normal((32, 1))
    w = rng.random(32)
    total = m.evaluate(x, {"a": ya, "b": yb}, sample_weight={"a": w}, batch_size=32, verbose=0)
    pa, pb = m.predict(x, verbose=0)
    la = np.sum(-np.sum(ya * np.log(np.clip(pa, 1e-7, 1 - 1e-7)), axis=-1) * w) / 32
    lb = np.mean((pb - yb) ** 2)
    assert total == pytest.approx(la + 0.5 * lb, rel=1e-10)
    with pytest.raises(ValueError, match="class_weight: only for models with one output"):
        m.fit(x, [ya, yb], class_weight={0: 1.0}, verbose=0)


def test_keras_file_names_are_refused(tmp_path):
    # legacy HDF5 names are refused (.keras archives: tests/test_keras_files.py)
    np.random.seed(0)
    m = Sequential([Dense(2, input_shape=(3,))])
    for name in ("m.h5", "m.hdf5"):
        with pytest.raises(ValueError, match=r"filepath: .* names a legacy Keras HDF5 .* \.keras"):
            m.save(str(tmp_path / name))
    with pytest.raises(ValueError, match=r"filepath: .* names a Keras \.keras archive"):
        m.save_weights(str(tmp_path / "w.keras"))
