"""Truncated BPTT (rnnkit.tbptt and fit(tbptt=...)).

- With k >= T it is full BPTT: the weights after training equal an ordinary fit's (float64, 1e-10).
- The windows of TBPTT(k1, k2) are right; invalid k's are refused.
- It learns a dependency shorter than k on sequences 100x longer than k: recall of x_{t-3} with
  k = 10 on T = 1000.
- Masks and per-step weights are cut into the windows.
"""
from __future__ import annotations

import numpy as np
import pytest

from rnnkit import optimizers, tbptt
from rnnkit.layers import GRU, LSTM, Dense
from rnnkit.models import RecurrentNetwork, Sequential


def _layers(seed, dtype="float64"):
    return [LSTM(6, return_sequences=True, dtype=dtype, seed=seed), GRU(5, return_sequences=True, dtype=dtype, seed=seed),
            Dense(2, dtype=dtype)]


def test_windows():
    assert tbptt.windows(10, 4, 4) == [(0, 0, 4), (4, 4, 8), (8, 8, 10)]
    assert tbptt.windows(10, 2, 6) == [(0, 0, 2), (0, 2, 4), (0, 4, 6), (2, 6, 8), (4, 8, 10)]
    assert tbptt.windows(5, 8, 8) == [(0, 0, 5)]
    with pytest.raises(ValueError, match=r"tbptt: expected k2 >= k1 with k2 a multiple of k1, got \(k1, k2\) = \(4, 6\)"):
        tbptt.check_k((4, 6))
    with pytest.raises(ValueError, match="tbptt: expected an int >= 1, got 0"):
        tbptt.check_k(0)


def test_k_at_least_T_is_full_bptt():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 7, 3))
    y = rng.standard_normal((8, 7, 2))
    ref = Sequential(_layers(1))
    ref.build((None, 7, 3))
    init = ref.get_weights()
    ref.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    ref.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0)
    net = RecurrentNetwork(_layers(2))
    net.forward(x[:1])
    for layer, w in zip(net.layers, [init[:3], init[3:6], init[6:]]):
        layer.set_weights(w)
    tbptt.train(net, x, y, "mse", optimizers.SGD(0.1), 7, epochs=3, batch_size=4, shuffle=False)
    got = [w for layer in net.layers for w in layer.get_weights()]
    for a, b in zip(got, ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_learns_a_short_dependency_on_a_100x_longer_sequence():
    rng = np.random.default_rng(3)
    k, T, delay = 10, 1000, 3
    bits = rng.integers(0, 2, (16, T + 1))
    x = bits[:, 1:, None].astype(np.float32)
    y = np.zeros((16, T, 1), np.float32)
    y[:, delay:, 0] = bits[:, 1:T + 1 - delay]      # y_t = x_{t-delay}
    model = Sequential([LSTM(16, return_sequences=True, input_shape=(None, 1)), Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizers.Adam(0.02), loss="binary_crossentropy")
    hist = model.fit(x, y, epochs=3, batch_size=16, tbptt=k, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    test_bits = rng.integers(0, 2, (4, T + 1))
    xt = test_bits[:, 1:, None].astype(np.float32)
    pred = model.predict(xt, verbose=0)[:, delay:, 0] > 0.5
    acc = np.mean(pred == test_bits[:, 1:T + 1 - delay].astype(bool))
    assert acc > 0.95, acc


def test_masks_and_weights_are_cut_into_windows():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 12, 3))
    y = rng.standard_normal((6, 12, 2))
    mask = rng.random((6, 12)) > 0.3
    w = rng.random((6, 12))
    net = RecurrentNetwork(_layers(5))
    hist = tbptt.train(net, x, y, "mse", "adam", (2, 4), epochs=2, batch_size=3, mask=mask, sample_weight=w)
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    with pytest.raises(ValueError, match=r"mask: expected shape \(6, 12\)"):
        tbptt.train(net, x, y, "mse", "adam", 4, mask=mask[:, :5])
