"""Encoder-decoder with attention built with Input/Model, as in Keras's documentation examples:
encoder ``LSTM(return_state=True)``; decoder ``LSTM(return_sequences=True)`` started from the
encoder's states (``initial_state``); ``Attention`` over the encoder outputs (masked by the
encoder's ``Embedding(mask_zero=True)``); ``Concatenate``; ``TimeDistributed(Dense(softmax))``.

- It learns a toy translation (reversing digit strings of 3-8 digits) to >= 95% exact match on
  held-out strings, trained with ``fit`` (teacher forcing) and decoded greedily.
- It gives Keras 3's outputs and gradients (every weight) on the same weights, float32, 1e-5.
- Its graph gradients match finite differences in float64.
"""
from __future__ import annotations

import numpy as np
import pytest

import helpers
from rnnkit import _layouts
from rnnkit.layers import (LSTM, Attention, Concatenate, Dense, Embedding, Input, TimeDistributed)
from rnnkit.layers.recurrent import _RNN
from rnnkit.models import Model, load_model
from rnnkit.optimizers import Adam

V, L = 13, 8  # tokens: 0 pad, 1 start, 2 end, 3..12 the digits 0..9


def _data(rng, n):
    lens = rng.integers(3, L + 1, n)
    src = np.zeros((n, L), np.int64)
    dec_in = np.zeros((n, L + 1), np.int64)
    dec_out = np.zeros((n, L + 1), np.int64)
    for i, k in enumerate(lens):
        d = rng.integers(0, 10, k) + 3
        src[i, :k] = d
        dec_in[i, 0] = 1
        dec_in[i, 1:k + 1] = d[::-1]
        dec_out[i, :k] = d[::-1]
        dec_out[i, k] = 2
    return src, dec_in, dec_out, lens


def _build(layers_api, units=32, emb=16, dtype="float32"):
    """The same graph in rnnkit (``layers_api`` None) or Keras (``keras.layers``)."""
    if layers_api is None:
        Inp, Emb, Lstm, Att, Cat, TD, Den = Input, Embedding, LSTM, Attention, Concatenate, TimeDistributed, Dense
        dt = {"dtype": dtype}
    else:
        k = layers_api
        Inp, Emb, Lstm, Att, Cat, TD, Den = (k.Input, k.Embedding, k.LSTM, k.Attention, k.Concatenate,
                                            k.TimeDistributed, k.Dense)
        dt = {}
    enc_in = Inp((None,), dtype="int64", name="enc_in")
    e = Emb(V, emb, mask_zero=True, name="enc_emb", **dt)(enc_in)
    enc_seq, h, c = Lstm(units, return_sequences=True, return_state=True, name="encoder", **dt)(e)
    dec_in = Inp((None,), dtype="int64", name="dec_in")
    d = Emb(V, emb, name="dec_emb", **dt)(dec_in)
    dec_seq = Lstm(units, return_sequences=True, name="decoder", **dt)(d, initial_state=[h, c])
    ctx = Att(name="attention", **dt)([dec_seq, enc_seq])
    cat = Cat(name="concat", **dt)([dec_seq, ctx])
    out = TD(Den(V, activation="softmax", **dt), name="out", **dt)(cat)
    return enc_in, dec_in, out


def _rnnkit_model(dtype="float32", units=32):
    enc_in, dec_in, out = _build(None, units=units, dtype=dtype)
    return Model([enc_in, dec_in], out, name="seq2seq")


def _greedy(model, src, steps):
    dec = np.ones((src.shape[0], 1), np.int64)
    for _ in range(steps):
        nxt = model.predict([src, dec], batch_size=512)[:, -1].argmax(-1)
        dec = np.concatenate([dec, nxt[:, None]], axis=1)
    return dec[:, 1:]


def test_seq2seq_with_attention_learns_to_reverse_digit_strings():
    rng = np.random.default_rng(0)
    src, dec_in, dec_out, _ = _data(rng, 4000)
    vsrc, _, vout, vlens = _data(rng, 500)
    np.random.seed(0)
    model = _rnnkit_model(units=64)
    model.compile(optimizer=Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit([src, dec_in], dec_out, epochs=5, batch_size=64, verbose=0, seed=0)
    pred = _greedy(model, vsrc, L + 1)
    exact = np.mean([np.array_equal(pred[i, :k + 1], vout[i, :k + 1]) for i, k in enumerate(vlens)])
    assert exact >= 0.95, f"held-out exact match {exact:.3f}"


def test_summary_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    model = _rnnkit_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    src, dec_in, dec_out, _ = _data(rng, 64)
    model.fit([src, dec_in], dec_out, epochs=1, batch_size=32, verbose=0)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "attention (Attention)" in text and "decoder (LSTM)" in text
    path = str(tmp_path / "s2s.rnnkit")
    model.save(path)
    back = load_model(path)
    np.testing.assert_array_equal(back.predict([src, dec_in]), model.predict([src, dec_in]))
    assert [l.name for l in back.layers] == [l.name for l in model.layers]
    back.fit([src, dec_in], dec_out, epochs=1, batch_size=32, verbose=0)  # optimizer state restored


def _keras_layout_grads(layer):
    """The layer's accumulated gradients in Keras's get_weights() order and layout."""
    if isinstance(layer, _RNN):
        g = layer.grads
        return _layouts.internal_to_keras(layer._CELL, g["w_ih"], g["w_hh"], g.get("b_ih"), g.get("b_hh"),
                                          True, layer.use_bias)
    return [g.copy() for g in layer.grads.values()]


@pytest.mark.keras
def test_outputs_and_gradients_match_keras(keras):
    import torch

    rng = np.random.default_rng(2)
    src, dec_in, _, _ = _data(rng, 6)
    model = _rnnkit_model()
    k_enc, k_dec, k_out = _build(keras.layers)
    kmodel = keras.Model([k_enc, k_dec], k_out)
    for layer in model.layers:
        kmodel.get_layer(layer.name).set_weights(layer.get_weights())
    want = kmodel([torch.tensor(src), torch.tensor(dec_in)])
    got = model([src, dec_in])
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)
    W = rng.standard_normal(got.shape).astype(np.float32)
    (want * torch.tensor(W)).sum().backward()
    model.zero_grad()
    model.backward(W)
    for layer in model.layers:
        kl = kmodel.get_layer(layer.name)
        k_grads = [v.value.grad.detach().numpy() for v in kl.trainable_weights]
        mine = _keras_layout_grads(layer)
        assert len(mine) == len(k_grads), layer.name
        for a, b in zip(mine, k_grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=layer.name)


def test_graph_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    src, dec_in, _, _ = _data(rng, 3)
    model = _rnnkit_model(dtype="float64", units=4)
    out = model([src, dec_in])
    W = rng.standard_normal(out.shape)
    model.zero_grad()
    model([src, dec_in])
    model.backward(W)
    for layer in model.layers:
        for k, p in layer.params.items():
            num = helpers.numerical_grad(lambda: float(np.sum(model([src, dec_in]) * W)), p)
            helpers.assert_close_rel(layer.grads[k], num, 1e-6, f"{layer.name}/{k}")
