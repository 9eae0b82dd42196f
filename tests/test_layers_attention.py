"""Attention layers (rnnkit.layers.attention): Keras 3's Attention (Luong; dot and concat
scores) and AdditiveAttention (Bahdanau).

- finite-difference gradient checks in float64 (queries, values, keys and parameters) for every
  score mode and option: masks, causal masks, return_attention_scores, use_scale, dropout;
- parity with Keras 3 (the ``keras`` fixture) on the same weights and inputs: outputs, attention
  scores, output masks and, through torch autograd, the gradients;
- functional models, config round trips and error messages.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import helpers
from rnnkit.layers.attention import MASK_BIAS, AdditiveAttention, Attention
from rnnkit.layers.base import deserialize, get, serialize

GRAD_TOL = 1e-6
KERAS_TOL = 1e-5

N, TQ, TV, D, DV = 2, 3, 4, 4, 3

# (layer class, constructor kwargs, key given, call kwargs, masks: None | "q" | "v" | "qv")
CASES = {
    "dot": (Attention, {}, False, {}, None),
    "dot_scale_key_masks": (Attention, {"use_scale": True}, True, {}, "qv"),
    "dot_causal_scores": (Attention, {}, False, {"use_causal_mask": True, "return_attention_scores": True}, "v"),
    "concat": (Attention, {"score_mode": "concat"}, True, {"return_attention_scores": True}, None),
    "concat_scale_causal_masks": (Attention, {"score_mode": "concat", "use_scale": True}, True,
                                  {"use_causal_mask": True, "return_attention_scores": True}, "qv"),
    "concat_scale_value_is_key": (Attention, {"score_mode": "concat", "use_scale": True}, False, {}, "q"),
    "additive": (AdditiveAttention, {}, True, {}, None),
    "additive_masks_scores": (AdditiveAttention, {}, True, {"return_attention_scores": True}, "qv"),
    "additive_noscale_causal": (AdditiveAttention, {"use_scale": False}, False, {"use_causal_mask": True}, "v"),
}


def make_inputs(rng, dtype=np.float64, key=True, d=D, dv=DV, tq=TQ, tv=TV, n=N):
    q = rng.standard_normal((n, tq, d)).astype(dtype)
    v = rng.standard_normal((n, tv, dv)).astype(dtype)
    out = [q, v]
    if key:
        out.append(rng.standard_normal((n, tv, d)).astype(dtype))
    elif d != dv:
        raise ValueError("without a key the value must have the query's features")
    return out


def make_masks(which, n=N, tq=TQ, tv=TV):
    """Query / value masks with holes; value step 0 is always valid so that no query row is
    entirely masked (a fully masked row is tested separately: its finite differences are
    swamped by the rounding of score - 1e9)."""
    if which is None:
        return None
    qm = np.ones((n, tq), bool)
    vm = np.ones((n, tv), bool)
    if "q" in which:
        qm[0, 1] = False
        qm[1, tq - 1] = False
    if "v" in which:
        vm[0, 2] = False
        vm[1, 1:3] = False
    return [qm if "q" in which else None, vm if "v" in which else None]


def set_nondefault_weights(layer, rng):
    """Moves the parameters away from their initial values (ones, glorot) so that the checks
    see them."""
    ws = [np.asarray(w + rng.uniform(0.2, 0.6, size=np.shape(w)), dtype=w.dtype) for w in layer.get_weights()]
    layer.set_weights(ws)
    return ws


def check_gradients(layer, inputs, call_kw, mask, rng, reseed=None):
    """L = sum(out * W) [+ sum(scores * W2)]: analytic vs central differences for every input and
    parameter."""
    scores = call_kw.get("return_attention_scores", False)

    def run():
        if reseed is not None:
            layer.rng = np.random.default_rng(reseed)
        return layer(inputs, mask=mask, **call_kw)

    out = run()
    W = rng.standard_normal(out[0].shape if scores else out.shape)
    W2 = rng.standard_normal(out[1].shape) if scores else None

    def loss():
        o = run()
        return float(np.sum(o[0] * W) + np.sum(o[1] * W2)) if scores else float(np.sum(o * W))

    layer.zero_grad()
    run()
    d_in = layer.backward([W, W2] if scores else W)
    assert isinstance(d_in, list) and len(d_in) == len(inputs)
    pgrads = {k: g.copy() for k, g in layer.grads.items()}
    for i, (x, dx) in enumerate(zip(inputs, d_in)):
        assert dx.shape == x.shape and dx.dtype == np.float64
        helpers.assert_close_rel(dx, helpers.numerical_grad(loss, x), GRAD_TOL, f"inputs[{i}]")
    for k, p in layer.params.items():
        helpers.assert_close_rel(pgrads[k], helpers.numerical_grad(loss, p), GRAD_TOL, k)
    return d_in


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients(rng, case):
    cls, kw, key, call_kw, masks = CASES[case]
    layer = cls(dtype="float64", **kw)
    inputs = make_inputs(rng, key=key, dv=DV if key else D)
    mask = make_masks(masks)
    layer(inputs, mask=mask, **call_kw)
    set_nondefault_weights(layer, rng)
    d_in = check_gradients(layer, inputs, call_kw, mask, rng)
    if mask is not None and mask[1] is not None:
        # a masked value step receives no gradient through the output
        vm = mask[1]
        assert np.all(d_in[1][~vm] == 0.0)


@pytest.mark.parametrize("cls,kw", [(Attention, {"use_scale": True}),
                                    (Attention, {"score_mode": "concat"}),
                                    (AdditiveAttention, {})])
def test_gradients_with_dropout_in_training(rng, cls, kw):
    layer = cls(dropout=0.4, seed=3, dtype="float64", **kw)
    inputs = make_inputs(rng)
    call_kw = {"training": True, "return_attention_scores": True}
    layer(inputs, **call_kw)
    set_nondefault_weights(layer, rng)
    check_gradients(layer, inputs, call_kw, make_masks("qv"), rng, reseed=11)


def test_dropout_semantics(rng):
    """Inverted dropout on the distribution; the returned scores are the dropped-out weights
    (Keras's), and the output is their product with the value; inference is untouched."""
    rate = 0.5
    layer = Attention(dropout=rate, seed=0, dtype="float64")
    q, v = make_inputs(rng, key=False, dv=D, tq=20, tv=30)
    ref, p = layer([q, v], return_attention_scores=True)
    out, a = layer([q, v], return_attention_scores=True, training=True)
    kept = a != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(a[kept], p[kept] / (1 - rate), rtol=1e-14, atol=0)
    np.testing.assert_allclose(out, a @ v, rtol=1e-13, atol=1e-13)
    out2, a2 = layer([q, v], return_attention_scores=True, training=True)
    assert not np.array_equal(a2 != 0, kept)  # successive calls draw new masks
    np.testing.assert_array_equal(layer([q, v], training=False), ref)
    # same seed, same masks
    a_1 = Attention(dropout=rate, seed=5)([q, v], return_attention_scores=True, training=True)[1]
    a_2 = Attention(dropout=rate, seed=5)([q, v], return_attention_scores=True, training=True)[1]
    np.testing.assert_array_equal(a_1, a_2)


# ---------------------------------------------------------------------------------------------
# semantics without Keras
# ---------------------------------------------------------------------------------------------

def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_reference_values(rng):
    """Dot, concat and additive scores, value mask, causal mask and query mask against a direct
    NumPy transcription of Keras's equations."""
    q, v, k = make_inputs(rng)
    qm, vm = make_masks("qv")
    allowed = vm[:, None, :] & np.tril(np.ones((TQ, TV), bool))[None]

    def finish(scores):
        w = softmax(np.where(allowed, scores, scores - MASK_BIAS))
        return np.where(qm[..., None], w @ v, 0.0), w

    dot = Attention(use_scale=True, dtype="float64")
    dot([q, v, k])
    dot.set_weights([np.float64(0.7)])
    exp_o, exp_w = finish(0.7 * q @ k.transpose(0, 2, 1))
    o, w = dot([q, v, k], mask=[qm, vm], use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(o, exp_o, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(w, exp_w, rtol=1e-13, atol=1e-14)
    assert np.all(w[~np.broadcast_to(allowed, w.shape)] == 0.0)
    assert np.all(o[~qm] == 0.0)

    cat = Attention(use_scale=True, score_mode="concat", dtype="float64")
    cat([q, v, k])
    cat.set_weights([np.float64(0.6), np.float64(1.4)])
    s = 1.4 * np.tanh(0.6 * (q[:, :, None, :] + k[:, None, :, :])).sum(-1)
    o = cat([q, v, k], mask=[qm, vm], use_causal_mask=True)
    np.testing.assert_allclose(o, finish(s)[0], rtol=1e-13, atol=1e-14)

    add = AdditiveAttention(dtype="float64")
    add([q, v, k])
    sc = rng.standard_normal(D)
    add.set_weights([sc])
    s = (sc * np.tanh(q[:, :, None, :] + k[:, None, :, :])).sum(-1)
    o = add([q, v, k], mask=[qm, vm], use_causal_mask=True)
    np.testing.assert_allclose(o, finish(s)[0], rtol=1e-13, atol=1e-14)


def test_value_defaults_to_key_and_fully_masked_row(rng):
    q, v = make_inputs(rng, key=False, dv=D)
    layer = Attention()
    np.testing.assert_array_equal(layer([q, v]), layer([q, v, v]))
    # every value step of sample 1 masked: all its scores drop by the same 1e9 (Keras's rule),
    # which in float32 leaves a uniform distribution
    vm = np.ones((N, TV), bool)
    vm[1] = False
    o, w = Attention()([q.astype(np.float32), v.astype(np.float32)], mask=[None, vm],
                       return_attention_scores=True)
    np.testing.assert_allclose(w[1], np.full((TQ, TV), 1.0 / TV), rtol=1e-6, atol=0)
    assert np.all(np.isfinite(o))


def test_layer_parameters_and_weights_layout(rng):
    inputs = make_inputs(rng)
    a = Attention(use_scale=True, score_mode="concat")
    a(inputs)
    assert list(a.params) == ["scale", "concat_score_weight"]
    assert [w.shape for w in a.get_weights()] == [(), ()]
    assert [float(w) for w in a.get_weights()] == [1.0, 1.0]  # Keras's "ones"
    a.set_weights([np.float32(2.0), np.array(3.0, np.float32)])
    assert a.params["scale"].shape == () and float(a.params["scale"]) == 2.0
    assert float(a.params["concat_score_weight"]) == 3.0
    with pytest.raises(ValueError, match=r"weight 'scale' expected shape \(\), got \(2,\)"):
        a.set_weights([np.zeros(2), np.float32(1.0)])
    assert Attention()(inputs).shape == (N, TQ, DV) and not Attention().params
    add = AdditiveAttention()
    add(inputs)
    (sc,) = add.get_weights()
    assert sc.shape == (D,) and np.max(np.abs(sc)) <= np.sqrt(6.0 / (2 * D))  # glorot on [D]
    assert AdditiveAttention(use_scale=False).count_params() == 0


def test_need_input_grad_false_still_accumulates_parameters(rng):
    layer = AdditiveAttention(dtype="float64")
    inputs = make_inputs(rng)
    out, ctx = layer.apply(inputs, need_input_grad=False, return_attention_scores=True)
    layer.zero_grad()
    assert layer.backward([np.ones_like(out[0]), None], ctx) == [None, None, None]
    ref = AdditiveAttention(dtype="float64")
    ref(inputs)
    ref.set_weights(layer.get_weights())
    o, ctx2 = ref.apply(inputs, return_attention_scores=True)
    ref.zero_grad()
    ref.backward([np.ones_like(o[0]), None], ctx2)
    np.testing.assert_allclose(layer.grads["scale"], ref.grads["scale"], rtol=1e-14, atol=0)
    assert np.any(layer.grads["scale"] != 0)


def test_scores_gradient_only_and_compute_mask(rng):
    layer = Attention(dtype="float64")
    q, v = make_inputs(rng, key=False, dv=D)
    qm, vm = make_masks("qv")
    out, w = layer([q, v], mask=[qm, vm], return_attention_scores=True)
    dq, dv = layer.backward([None, np.ones_like(w)])
    # the rows of the weights sum to one: a constant gradient on them gives nothing
    np.testing.assert_allclose(dq, 0.0, atol=1e-12)
    np.testing.assert_allclose(dv, 0.0, atol=1e-12)
    np.testing.assert_array_equal(layer.compute_mask([q, v], [qm, vm]), qm)
    assert layer.compute_mask([q, v], [None, vm]) is None
    assert layer.compute_mask([q, v], None) is None
    assert layer.compute_output_shape([(None, 5, 4), (None, 7, 6)]) == (None, 5, 6)


# ---------------------------------------------------------------------------------------------
# functional models
# ---------------------------------------------------------------------------------------------

def test_functional_model_with_scores_and_embedding_masks(rng):
    from rnnkit.layers import Embedding, Input
    from rnnkit.models import Model

    qi, vi = Input(shape=(TQ,), dtype="int64"), Input(shape=(TV,), dtype="int64")
    emb = Embedding(9, D, mask_zero=True, dtype="float64")
    att = Attention(use_scale=True, score_mode="concat", dtype="float64")
    out, scores = att([emb(qi), emb(vi)], return_attention_scores=True, use_causal_mask=True)
    assert out.shape == (None, TQ, D) and scores.shape == (None, TQ, TV)
    model = Model([qi, vi], [out, scores])
    qx = np.array([[1, 0, 3], [4, 5, 0]])
    vx = np.array([[1, 2, 0, 3], [5, 0, 0, 1]])
    o, s = model([qx, vx])
    e = emb.get_weights()[0]
    ref_o, ref_s = att([e[qx], e[vx]], mask=[qx != 0, vx != 0], return_attention_scores=True,
                       use_causal_mask=True)
    np.testing.assert_allclose(o, ref_o, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(s, ref_s, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(model.output_mask[0], qx != 0)
    # gradients reach the embedding through both branches
    model.zero_grad()
    model([qx, vx])
    model.backward([rng.standard_normal(o.shape), rng.standard_normal(s.shape)])
    assert np.any(emb.grads["embeddings"] != 0) and np.any(att.grads["scale"] != 0)
    # the model (and the node's return_attention_scores) survives a config round trip
    clone = Model.from_config(json.loads(json.dumps(model.get_config())))
    clone.set_weights(model.get_weights())
    for a, b in zip(clone([qx, vx]), (o, s)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# config and errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [
    lambda: Attention(use_scale=True, score_mode="concat", dropout=0.25, seed=4, name="att"),
    lambda: Attention(dtype="float64", trainable=False),
    lambda: AdditiveAttention(use_scale=False, dropout=0.1, seed=2),
    lambda: AdditiveAttention(),
])
def test_config_round_trip(factory):
    layer = factory()
    cfg = layer.get_config()
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg
    assert type(layer).from_config(cfg).get_config() == cfg
    if isinstance(layer, AdditiveAttention):
        assert "score_mode" not in cfg  # as in Keras
    assert get(type(layer).__name__) is type(layer)


def test_errors(rng):
    q, v, k = make_inputs(rng, dtype=np.float32)
    with pytest.raises(ValueError, match="score_mode: expected one of 'dot', 'concat', got 'add'"):
        Attention(score_mode="add")
    with pytest.raises(ValueError, match=r"dropout: expected a float in \[0, 1\), got 1.0"):
        AdditiveAttention(dropout=1.0)
    with pytest.raises(TypeError, match="seed: expected None or an int"):
        Attention(seed="x")
    layer = Attention(name="att")
    with pytest.raises(TypeError, match=r"att: inputs: expected a list \[query, value\] or \[query, value, key\], "
                                        r"got ndarray"):
        layer(q)
    with pytest.raises(ValueError, match=r"att: inputs: .* \(length 2 to 3\), got length 1"):
        layer([q])
    with pytest.raises(TypeError, match=r"att: inputs\[1\] \(value\): expected a float32 or float64 array, "
                                        r"got dtype int64"):
        layer([q, np.zeros((N, TV, DV), np.int64)])
    with pytest.raises(ValueError, match=r"att: inputs\[0\] \(query\): expected shape \(batch, steps, features\), "
                                         r"got \(2, 4\)"):
        layer([q[:, 0], v])
    with pytest.raises(ValueError, match=r"att: inputs\[2\] \(key\): expected the query's 4 features, got shape "
                                         r"\(2, 4, 3\)"):
        layer([q, v, v])
    with pytest.raises(ValueError, match=r"att: inputs\[1\] \(value, also the key\): expected the query's 4 "
                                         r"features"):
        layer([q, v])
    with pytest.raises(ValueError, match=r"att: inputs\[2\] \(key\): expected the value's 4 steps"):
        layer([q, v, k[:, :3]])
    with pytest.raises(ValueError, match=r"att: inputs\[1\] \(value\): batch size 1 differs from the query's 2"):
        layer([q, v[:1], k[:1]])
    with pytest.raises(TypeError, match=r"att: mask: expected a list \[query_mask, value_mask\], got ndarray"):
        layer([q, v, k], mask=np.ones((N, TQ), bool))
    with pytest.raises(ValueError, match=r"att: mask\[1\] \(value_mask\): expected shape \(2, 4\), got \(2, 3\)"):
        layer([q, v, k], mask=[None, np.ones((N, TQ), bool)])
    with pytest.raises(TypeError, match=r"att: mask\[0\] \(query_mask\): expected a boolean array, got dtype "
                                        r"float64"):
        layer([q, v, k], mask=[np.ones((N, TQ)), None])
    layer([q, v, k], return_attention_scores=True)
    with pytest.raises(ValueError, match=r"att: d_outputs: expected \[d_output, d_attention_scores\]"):
        layer.backward(np.zeros((N, TQ, DV), np.float32))
    with pytest.raises(ValueError, match=r"att: d_attention_scores: expected shape \(2, 3, 4\), got \(2, 4, 3\)"):
        layer.backward([None, np.zeros((N, TV, TQ), np.float32)])
    add = AdditiveAttention(name="add")
    add([q, v, k])
    with pytest.raises(ValueError, match=r"add: inputs\[0\] \(query\): expected 4 features \(the size of scale\)"):
        add([q[..., :3], v, k[..., :3]])
    with pytest.raises(TypeError, match=r"score_mode: AdditiveAttention has no score_mode"):
        AdditiveAttention(score_mode="concat")


# ---------------------------------------------------------------------------------------------
# parity with Keras 3
# ---------------------------------------------------------------------------------------------

def to_numpy(t):
    """A Keras output as a NumPy array (``keras.ops.convert_to_numpy`` goes through torch's
    ``__array__``, which NumPy 2 warns about, and warnings are errors in this suite)."""
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def keras_pair(keras, case, rng, inputs):
    cls, kw, _, _, _ = CASES[case]
    ours = cls(**kw)
    ours(inputs)
    ws = set_nondefault_weights(ours, rng)
    theirs = getattr(keras.layers, cls.__name__)(**kw)
    theirs(inputs)
    theirs.set_weights(ours.get_weights())
    assert [tuple(w.shape) for w in theirs.weights] == [w.shape for w in ws]
    assert [w.path.split("/")[-1] for w in theirs.weights] == list(ours.params)
    return ours, theirs


@pytest.mark.keras
@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_parity_outputs_scores_masks(keras, rng, case):
    _, _, key, call_kw, masks = CASES[case]
    inputs = make_inputs(rng, dtype=np.float32, key=key, dv=DV if key else D)
    ours, theirs = keras_pair(keras, case, rng, inputs)
    mask = make_masks(masks)
    if mask is not None and mask[1] is not None:
        mask[1][1] = False  # one sample with every value step masked
    kw = dict(call_kw, return_attention_scores=True)
    o, s = ours(inputs, mask=mask, **kw)
    ko, ks = theirs(inputs, mask=mask, **kw)
    ko, ks = to_numpy(ko), to_numpy(ks)
    assert o.dtype == np.float32 and o.shape == ko.shape and s.shape == ks.shape
    np.testing.assert_allclose(o, ko, rtol=KERAS_TOL, atol=KERAS_TOL)
    np.testing.assert_allclose(s, ks, rtol=KERAS_TOL, atol=KERAS_TOL)
    single = ours(inputs, mask=mask, **call_kw)
    np.testing.assert_allclose(single[0] if isinstance(single, list) else single, o, rtol=0, atol=0)
    km = theirs.compute_mask(inputs, mask)
    om = ours.compute_mask(inputs, mask)
    if km is None:
        assert om is None
    else:
        np.testing.assert_array_equal(om, to_numpy(km))
    # get_config carries the same arguments
    kcfg = theirs.get_config()
    for k, v in ours.get_config().items():
        if k not in ("name", "dtype", "trainable"):
            assert kcfg[k] == v, k


@pytest.mark.keras
@pytest.mark.parametrize("case", ["dot_scale_key_masks", "concat_scale_causal_masks", "additive_masks_scores",
                                  "concat_scale_value_is_key"])
def test_keras_parity_gradients(keras, rng, case):
    """Our backprop against torch autograd through the Keras layer (float32)."""
    import torch

    _, _, key, call_kw, masks = CASES[case]
    inputs = make_inputs(rng, dtype=np.float32, key=key, dv=DV if key else D)
    ours, theirs = keras_pair(keras, case, rng, inputs)
    mask = make_masks(masks)
    kw = dict(call_kw, return_attention_scores=True)
    o, s = ours(inputs, mask=mask, **kw)
    W, W2 = rng.standard_normal(o.shape).astype(np.float32), rng.standard_normal(s.shape).astype(np.float32)
    ours.zero_grad()
    d_in = ours.backward([W, W2])
    tin = [torch.tensor(x, requires_grad=True) for x in inputs]
    ko, ks = theirs(tin, mask=mask, **kw)
    ((ko * torch.from_numpy(W)).sum() + (ks * torch.from_numpy(W2)).sum()).backward()
    for i, (a, t) in enumerate(zip(d_in, tin)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=KERAS_TOL, atol=KERAS_TOL, err_msg=f"inputs[{i}]")
    for var, k in zip(theirs.weights, ours.params):
        g = var.value.grad.detach().numpy().reshape(ours.grads[k].shape)
        np.testing.assert_allclose(ours.grads[k], g, rtol=KERAS_TOL, atol=KERAS_TOL, err_msg=k)
