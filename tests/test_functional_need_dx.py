"""need_dx=False skips the input gradient and changes nothing else; the training loop uses it for
a model's first layer without changing what is learned."""
import numpy as np
import pytest

from rnnkit import functional as F


@pytest.mark.parametrize("cell,G", [("rnn", 1), ("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_need_dx_false_returns_none_and_the_same_other_gradients(cell, G, dtype):
    rng = np.random.default_rng(0)
    T, N, C, H = 6, 3, 5, 7
    x = rng.standard_normal((T, N, C)).astype(dtype)
    w = [(rng.standard_normal(s) * 0.3).astype(dtype) for s in ((G * H, C), (G * H, H), (G * H,), (G * H,))]
    dy = rng.standard_normal((T, N, H)).astype(dtype)
    if cell == "lstm":
        o = F.lstm_forward(x, None, None, *w)
        full, part = F.lstm_backward(o.cache, dy), F.lstm_backward(o.cache, dy, need_dx=False)
    else:
        fwd, bwd = (F.rnn_forward, F.rnn_backward) if cell == "rnn" else (F.gru_forward, F.gru_backward)
        o = fwd(x, None, *w)
        full, part = bwd(o.cache, dy), bwd(o.cache, dy, need_dx=False)
    assert part.dx is None and full.dx is not None
    for f in full._fields[1:]:
        np.testing.assert_array_equal(getattr(part, f), getattr(full, f), err_msg=f)


def test_fit_with_first_layer_skipping_dx_learns_the_same_weights():
    from rnnkit.layers import LSTM, Dense
    from rnnkit.models import Sequential

    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 7, 4)).astype(np.float64)
    Y = np.eye(3)[rng.integers(0, 3, (64, 7))]

    def build():
        m = Sequential()
        m.add(LSTM(6, return_sequences=True, input_shape=(7, 4), dtype="float64",
                   kernel_initializer="glorot_uniform"))
        m.add(Dense(3, activation="softmax", dtype="float64"))
        m.compile(loss="categorical_crossentropy", optimizer="sgd")
        return m

    a, b = build(), build()
    b.set_weights(a.get_weights())
    a.fit(X, Y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    # b: the same training by hand, with the input gradient computed by the first layer
    for _ in range(2):
        for i in range(0, 64, 16):
            trace = b.run(b.prepare_inputs(X[i:i + 16]), training=True, input_grads=True)
            assert b.fusable_activation(0) == b.loss.fusable_activation == "softmax"
            _, d = b.loss.logits_value_and_grad(Y[i:i + 16], trace.outputs[0], mask=None)
            b.zero_grad()
            (dx,) = b.backprop(trace, [d], logits=[True])
            assert dx is not None and dx.shape == (16, 7, 4)
            params, grads = b.trainable_variables()
            b.optimizer.apply(grads, params)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-12)
