"""Merge layers (rnnkit.layers.merge): finite-difference gradients of every layer and option
(broadcasting, masks), parity with Keras 3 (values, output shapes, masks), config round trips,
argument errors, and functional models built with them (graph backward vs finite differences,
training)."""
from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence

import numpy as np
import pytest

import helpers
from rnnkit.layers import base
from rnnkit.layers.core import Dense, Embedding
from rnnkit.layers.input_layer import Input
from rnnkit.layers.merge import Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract
from rnnkit.models import Model

F64 = {"dtype": "float64"}
GRAD_TOL = 1e-6      # relative error of analytic vs central-difference gradients (float64)
KERAS_TOL = 1e-5     # rtol and atol against Keras 3 (float32)

ELEMENTWISE = {"Add": Add, "Subtract": Subtract, "Multiply": Multiply, "Average": Average,
               "Maximum": Maximum, "Minimum": Minimum}


def _inputs(rng: np.random.Generator, shapes: Sequence[Sequence[int]], dtype: Any = np.float64) -> List[np.ndarray]:
    return [rng.standard_normal(tuple(s)).astype(dtype) for s in shapes]


def _check_grads(layer: base.Layer, xs: List[np.ndarray], rng: np.random.Generator,
                 mask: Optional[List[Optional[np.ndarray]]] = None, eps: Sequence[float] = ()) -> None:
    """d(sum(out * W))/d inputs[i] from ``layer.backward`` against central differences."""
    out, ctx = layer.apply(xs, mask=mask)
    W = rng.standard_normal(out.shape)
    d = layer.backward(W, ctx)
    assert isinstance(d, list) and len(d) == len(xs)

    def loss() -> float:
        return float(np.sum(layer(xs, mask=mask) * W))

    for i, x in enumerate(xs):
        assert d[i].shape == x.shape and d[i].dtype == np.float64, (i, d[i].shape, d[i].dtype)
        num = helpers.numerical_grad(loss, x, eps=eps[i] if eps else 1e-6)
        helpers.assert_close_rel(d[i], num, GRAD_TOL, f"{type(layer).__name__} d inputs[{i}]")


def _masks(rng: np.random.Generator, N: int, T: int, which: Sequence[bool]) -> List[Optional[np.ndarray]]:
    out: List[Optional[np.ndarray]] = []
    for k, on in enumerate(which):
        if not on:
            out.append(None)
            continue
        m = rng.random((N, T)) < 0.5
        m[0, 0] = k % 2 == 0  # both values occur, and the masks differ between inputs
        m[0, 1] = k % 2 == 1
        m[1] = False if k == 0 else m[1]  # sample 1 of the first input is fully masked
        out.append(m)
    return out


MASK_CASES = [(False, False, False), (True, True, True), (True, False, True), (False, True, True)]


# ---------------------------------------------------------------------------------------------
# values and gradients
# ---------------------------------------------------------------------------------------------

def test_elementwise_values(rng):
    a, b, c = _inputs(rng, [(2, 3, 4)] * 3)
    np.testing.assert_allclose(Add(**F64)([a, b, c]), a + b + c, rtol=1e-15, atol=0)
    np.testing.assert_allclose(Subtract(**F64)([a, b]), a - b, rtol=0, atol=0)
    np.testing.assert_allclose(Multiply(**F64)([a, b, c]), a * b * c, rtol=1e-15, atol=0)
    np.testing.assert_allclose(Average(**F64)([a, b, c]), (a + b + c) / 3, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(Maximum(**F64)([a, b, c]), np.maximum(np.maximum(a, b), c), rtol=0, atol=0)
    np.testing.assert_allclose(Minimum(**F64)([a, b, c]), np.minimum(np.minimum(a, b), c), rtol=0, atol=0)
    # one input is allowed (Keras 3) and passes through
    np.testing.assert_allclose(Add(**F64)([a]), a, rtol=0, atol=0)
    np.testing.assert_allclose(Maximum(**F64)([a]), a, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("which", MASK_CASES, ids=lambda w: "".join("m" if v else "-" for v in w))
def test_elementwise_gradients(rng, name, which):
    n = 2 if name == "Subtract" else 3
    xs = _inputs(rng, [(3, 4, 2)] * n)
    masks = _masks(rng, 3, 4, which[:n])
    _check_grads(ELEMENTWISE[name](**F64), xs, rng, mask=None if not any(which[:n]) else masks)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_broadcasting_gradients(rng, name):
    # lower rank (size-1 axes inserted after the batch axis) and size-1 axes, as Keras allows
    shapes = [(3, 4, 2), (3, 2), (3, 1, 2)] if name != "Subtract" else [(3, 4, 2), (3, 4, 1)]
    xs = _inputs(rng, shapes)
    layer = ELEMENTWISE[name](**F64)
    out = layer(xs)
    assert out.shape == (3, 4, 2)
    assert layer.compute_output_shape([(None,) + s[1:] for s in shapes]) == (None, 4, 2)
    _check_grads(layer, xs, rng)


def test_broadcasting_with_masks_of_equal_rank(rng):
    # [N, 1, C] with a [N, 1] mask against [N, T, C] with a [N, T] mask
    xs = _inputs(rng, [(3, 4, 2), (3, 1, 2)])
    masks = [rng.random((3, 4)) < 0.5, np.array([[True], [False], [True]])]
    for cls in (Maximum, Multiply, Minimum):
        _check_grads(cls(**F64), xs, rng, mask=masks)
    np.testing.assert_array_equal(Add(**F64).compute_mask(xs, masks), masks[0] | masks[1])


def test_masks_are_ignored_for_inputs_of_different_ranks(rng):
    """Keras reshapes inputs of different ranks, which drops their masks from the values."""
    a, b = _inputs(rng, [(2, 3, 4), (2, 4)])
    m = rng.random((2, 3)) < 0.5
    np.testing.assert_array_equal(Maximum(**F64)([a, b], mask=[m, None]), np.maximum(a, b[:, None, :]))
    np.testing.assert_array_equal(Multiply(**F64)([a, b], mask=[m, None]), a * b[:, None, :])
    assert Maximum(**F64).compute_mask([a, b], [m, None]) is None


def test_maximum_minimum_masked_semantics():
    """Masked entries take no part; an entry masked in every input is the first input's."""
    a = np.array([[[1.0], [5.0], [2.0], [7.0]]])
    b = np.array([[[3.0], [4.0], [9.0], [8.0]]])
    ma = np.array([[True, True, False, False]])
    mb = np.array([[True, False, True, False]])
    np.testing.assert_array_equal(Maximum(**F64)([a, b], mask=[ma, mb])[0, :, 0], [3.0, 5.0, 9.0, 7.0])
    np.testing.assert_array_equal(Minimum(**F64)([a, b], mask=[ma, mb])[0, :, 0], [1.0, 5.0, 9.0, 7.0])
    # only b masked: where b is masked, a alone
    np.testing.assert_array_equal(Maximum(**F64)([a, b], mask=[None, mb])[0, :, 0], [3.0, 5.0, 9.0, 7.0])
    np.testing.assert_array_equal(Minimum(**F64)([a, b], mask=[None, mb])[0, :, 0], [1.0, 5.0, 2.0, 7.0])
    # the gradient goes to the selected input only
    layer = Maximum(**F64)
    out, ctx = layer.apply([a, b], mask=[ma, mb])
    da, db = layer.backward(np.ones_like(out), ctx)
    np.testing.assert_array_equal(da[0, :, 0], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(db[0, :, 0], [1.0, 0.0, 1.0, 0.0])


def test_extremum_ties_send_the_gradient_to_the_earliest_input():
    a = np.array([[1.0, 2.0, 3.0]])
    for cls in (Maximum, Minimum):
        layer = cls(**F64)
        out, ctx = layer.apply([a, a.copy(), a.copy()])
        d = layer.backward(np.ones_like(out), ctx)
        np.testing.assert_array_equal(np.stack(d), [np.ones_like(a), np.zeros_like(a), np.zeros_like(a)])


def test_multiply_masked_semantics():
    a = np.array([[[2.0], [3.0], [5.0], [7.0]]])
    b = np.array([[[10.0], [20.0], [30.0], [40.0]]])
    ma = np.array([[True, True, False, False]])
    mb = np.array([[True, False, True, False]])
    # masked entries count as 1; entries masked in every input are 0
    np.testing.assert_array_equal(Multiply(**F64)([a, b], mask=[ma, mb])[0, :, 0], [20.0, 3.0, 30.0, 0.0])
    # with one mask missing there is no output mask, so nothing is zeroed
    np.testing.assert_array_equal(Multiply(**F64)([a, b], mask=[ma, None])[0, :, 0], [20.0, 60.0, 30.0, 40.0])


def test_multiply_gradient_with_zeros(rng):
    """The product of the other inputs, not a division: exact zeros are fine."""
    xs = _inputs(rng, [(2, 3, 2)] * 3)
    xs[0][0, 0, 0] = 0.0
    xs[1][0, 0, 0] = 0.0
    xs[2][1, 2, 1] = 0.0
    _check_grads(Multiply(**F64), xs, rng)


@pytest.mark.parametrize("axis,shapes", [
    (-1, [(2, 3, 2), (2, 3, 4), (2, 3, 1)]),
    (1, [(2, 3, 2), (2, 1, 2), (2, 4, 2)]),
    (0, [(2, 3, 2), (1, 3, 2)]),
    (1, [(3, 2), (3, 5)]),
])
def test_concatenate_values_and_gradients(rng, axis, shapes):
    xs = _inputs(rng, shapes)
    layer = Concatenate(axis=axis, **F64)
    np.testing.assert_array_equal(layer(xs), np.concatenate(xs, axis=axis))
    _check_grads(layer, xs, rng)


def test_concatenate_masks():
    x = [np.zeros((2, 3, 2)), np.zeros((2, 2, 2))]
    m0 = np.array([[True, False, True], [False, False, True]])
    m1 = np.array([[False, True], [True, True]])
    time = Concatenate(axis=1, **F64)
    np.testing.assert_array_equal(time.compute_mask(x, [m0, m1]), np.concatenate([m0, m1], axis=1))
    np.testing.assert_array_equal(time.compute_mask(x, [None, m1]),
                                  np.concatenate([np.ones((2, 3), bool), m1], axis=1))
    assert time.compute_mask(x, None) is None and time.compute_mask(x, [None, None]) is None
    y = [np.zeros((2, 3, 2)), np.zeros((2, 3, 4))]
    m2 = np.array([[False, True, False], [True, False, False]])
    feat = Concatenate(**F64)
    np.testing.assert_array_equal(feat.compute_mask(y, [m0, m2]), m0 | m2)
    # Keras 3 ORs along the concatenated features: an unmasked input makes every step valid
    np.testing.assert_array_equal(feat.compute_mask(y, [m0, None]), np.ones((2, 3), bool))


@pytest.mark.parametrize("shapes,axes", [
    ([(3, 4), (3, 4)], 1),
    ([(3, 4), (3, 4)], -1),
    ([(2, 3, 4), (2, 5, 4)], 2),
    ([(2, 3, 4), (2, 3, 5)], (1, 1)),
    ([(2, 3, 4), (2, 4, 5)], (2, 1)),
    ([(2, 4), (2, 5, 4)], (1, 2)),
    ([(2, 3, 4), (2, 4)], (-1, -1)),
    ([(2, 2, 3, 4), (2, 4, 3)], (3, 1)),
])
@pytest.mark.parametrize("normalize", [False, True])
def test_dot_values_and_gradients(rng, shapes, axes, normalize):
    x, y = _inputs(rng, shapes)
    layer = Dot(axes=axes, normalize=normalize, **F64)
    out = layer([x, y])
    a1, a2 = (axes, axes) if isinstance(axes, int) else axes
    a1, a2 = a1 % x.ndim, a2 % y.ndim
    xn = x / np.linalg.norm(x, axis=a1, keepdims=True) if normalize else x
    yn = y / np.linalg.norm(y, axis=a2, keepdims=True) if normalize else y
    # reference: one tensordot per sample
    ref = np.stack([np.tensordot(xn[n], yn[n], axes=(a1 - 1, a2 - 1)) for n in range(x.shape[0])])
    ref = ref.reshape(x.shape[0], -1) if ref.ndim == 1 else ref
    assert out.shape == layer.compute_output_shape([x.shape, y.shape]) == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    _check_grads(layer, [x, y], rng)


def test_dot_normalize_clamps_tiny_norms(rng):
    """Below the norm 1e-7, ``v / max(|v|, 1e-7)`` is linear in v; gradients follow that branch."""
    x = 1e-9 * rng.standard_normal((3, 4))
    y = rng.standard_normal((3, 4))
    layer = Dot(axes=1, normalize=True, **F64)
    y_unit = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(layer([x, y])[:, 0], np.sum(x / 1e-7 * y_unit, axis=1), rtol=1e-12, atol=0)
    _check_grads(layer, [x, y], rng, eps=(1e-13, 1e-6))


def test_float32_layers_keep_float32(rng):
    xs = _inputs(rng, [(2, 3, 4)] * 2, np.float32)
    for layer in [Add(), Multiply(), Maximum(), Concatenate(axis=1), Dot(axes=2, normalize=True)]:
        out, ctx = layer.apply(xs)
        assert out.dtype == np.float32, type(layer).__name__
        assert all(g.dtype == np.float32 for g in layer.backward(np.ones_like(out), ctx))
    # float64 data into a float32 layer is converted, float32 into a float64 layer too
    assert Add()(_inputs(rng, [(2, 3)] * 2)).dtype == np.float32
    assert Add(**F64)(xs).dtype == np.float64


def test_inputs_in_any_memory_layout(rng):
    """Non-contiguous inputs (a batch-major view of time-major memory) are used as they lie."""
    a_view = rng.standard_normal((3, 2, 4)).transpose(1, 0, 2)  # [2, 3, 4], not C-contiguous
    a = np.ascontiguousarray(a_view)
    b = rng.standard_normal((2, 3, 4))
    for cls in (Add, Maximum, Multiply, Subtract):
        layer = cls(**F64)
        np.testing.assert_array_equal(layer([a_view, b]), cls(**F64)([a, b]))
        out, ctx = layer.apply([a_view, b])
        d_view = layer.backward(np.ones_like(out), ctx)
        out, ctx = layer.apply([a, b])
        for g_view, g in zip(d_view, layer.backward(np.ones_like(out), ctx)):
            np.testing.assert_array_equal(g_view, g)
    np.testing.assert_array_equal(Concatenate(**F64)([a_view, b]), np.concatenate([a, b], -1))


def test_no_input_grad_returns_nones(rng):
    xs = _inputs(rng, [(2, 3)] * 2)
    for layer in (Add(**F64), Concatenate(**F64), Dot(1, **F64)):
        out, ctx = layer.apply(xs, need_input_grad=False)
        assert layer.backward(np.ones_like(out), ctx) == [None, None]


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------

def test_compute_output_shape_with_unknown_sizes():
    assert Add().compute_output_shape([(None, None, 4), (None, 4)]) == (None, None, 4)
    assert Add().compute_output_shape([(None, 5, 4), (8, 1, 4)]) == (8, 5, 4)
    assert Subtract().compute_output_shape([(None, 3), (None, 1)]) == (None, 3)
    assert Concatenate(axis=1).compute_output_shape([(None, None, 4), (None, 3, 4)]) == (None, None, 4)
    assert Concatenate().compute_output_shape([(None, 7, 4), (None, None, 2)]) == (None, 7, 6)
    assert Dot(axes=2).compute_output_shape([(None, 3, 4), (None, None, 4)]) == (None, 3, None)
    assert Dot(axes=1).compute_output_shape([(None, 4), (None, 4)]) == (None, 1)


# ---------------------------------------------------------------------------------------------
# parity with Keras 3
# ---------------------------------------------------------------------------------------------

def _to_numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _keras_tensors(xs: Sequence[np.ndarray], masks: Optional[Sequence[Optional[np.ndarray]]]) -> List[Any]:
    """Keras 3's merge layers read masks from the tensors (``_keras_mask``, what a Keras model
    sets); their ``call`` has no ``mask`` argument, so ``mask=`` cannot be passed to them."""
    import torch
    from keras.src.backend import set_keras_mask

    out = []
    for i, x in enumerate(xs):
        t = torch.tensor(x)
        if masks is not None and masks[i] is not None:
            set_keras_mask(t, torch.tensor(masks[i]))
        out.append(t)
    return out


def _keras_mask_of(t: Any) -> Optional[np.ndarray]:
    from keras.src.backend import get_keras_mask

    m = get_keras_mask(t)
    return None if m is None else _to_numpy(m)


def _assert_same_mask(got: Optional[np.ndarray], want: Optional[np.ndarray]) -> None:
    assert (got is None) == (want is None), (got, want)
    if want is not None:
        np.testing.assert_array_equal(got, want)


@pytest.mark.keras
def test_merge_layers_refuse_mask_argument_in_keras(keras, rng):
    """Why the parity tests attach masks to the tensors instead of passing ``mask=``."""
    xs = _inputs(rng, [(2, 3, 4)] * 2, np.float32)
    with pytest.raises(TypeError, match="mask"):
        keras.layers.Add()(xs, mask=[None, None])


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("which", MASK_CASES, ids=lambda w: "".join("m" if v else "-" for v in w))
def test_elementwise_keras_parity(keras, rng, name, which):
    n = 2 if name == "Subtract" else 3
    xs = _inputs(rng, [(3, 4, 5)] * n, np.float32)
    masks = _masks(rng, 3, 4, which[:n]) if any(which[:n]) else None
    k_out = getattr(keras.layers, name)()(_keras_tensors(xs, masks))
    layer = ELEMENTWISE[name]()
    out = layer(xs, mask=masks)
    np.testing.assert_allclose(out, _to_numpy(k_out), rtol=KERAS_TOL, atol=KERAS_TOL)
    _assert_same_mask(layer.compute_mask(xs, masks), _keras_mask_of(k_out))


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_broadcasting_keras_parity(keras, rng, name):
    shapes = [(3, 4, 2), (3, 2), (3, 1, 2)] if name != "Subtract" else [(3, 4, 2), (3, 1)]
    xs = _inputs(rng, shapes, np.float32)
    k_layer = getattr(keras.layers, name)()
    np.testing.assert_allclose(ELEMENTWISE[name]()(xs), _to_numpy(k_layer(xs)), rtol=KERAS_TOL, atol=KERAS_TOL)
    sym = [(None,) + s[1:] for s in shapes]
    assert ELEMENTWISE[name]().compute_output_shape(sym) == tuple(k_layer.compute_output_shape(sym))


@pytest.mark.keras
@pytest.mark.parametrize("axis,shapes", [
    (-1, [(2, 3, 2), (2, 3, 4)]),
    (2, [(2, 3, 2), (2, 3, 4)]),
    (1, [(2, 3, 2), (2, 1, 2), (2, 4, 2)]),
    (-2, [(2, 3, 2), (2, 2, 2)]),
])
@pytest.mark.parametrize("which", [(False, True, False), (True, True, True), (True, False, False)],
                         ids=lambda w: "".join("m" if v else "-" for v in w))
def test_concatenate_keras_parity(keras, rng, axis, shapes, which):
    xs = _inputs(rng, shapes, np.float32)
    masks = [rng.random(s[:-1]) < 0.5 if on else None for s, on in zip(shapes, which)]
    k_layer = keras.layers.Concatenate(axis=axis)
    k_out = k_layer(_keras_tensors(xs, masks))
    layer = Concatenate(axis=axis)
    np.testing.assert_allclose(layer(xs, mask=masks), _to_numpy(k_out), rtol=KERAS_TOL, atol=KERAS_TOL)
    _assert_same_mask(layer.compute_mask(xs, masks), _keras_mask_of(k_out))
    sym = [(None,) + s[1:] for s in shapes]
    assert layer.compute_output_shape(sym) == tuple(k_layer.compute_output_shape(sym))


@pytest.mark.keras
@pytest.mark.parametrize("shapes,axes", [
    ([(3, 4), (3, 4)], 1),
    ([(2, 3, 4), (2, 5, 4)], 2),
    ([(2, 3, 4), (2, 5, 4)], -1),
    ([(2, 3, 4), (2, 3, 5)], (1, 1)),
    ([(2, 4), (2, 5, 4)], (1, 2)),
    ([(2, 3, 4), (2, 4)], (2, 1)),
    ([(2, 2, 3, 4), (2, 4, 3)], (3, 1)),
])
@pytest.mark.parametrize("normalize", [False, True])
def test_dot_keras_parity(keras, rng, shapes, axes, normalize):
    xs = _inputs(rng, shapes, np.float32)
    k_layer = keras.layers.Dot(axes=axes, normalize=normalize)
    k_out = k_layer(xs)
    layer = Dot(axes=axes, normalize=normalize)
    np.testing.assert_allclose(layer(xs), _to_numpy(k_out), rtol=KERAS_TOL, atol=KERAS_TOL)
    assert layer.compute_output_shape(shapes) == tuple(k_layer.compute_output_shape(shapes))


@pytest.mark.keras
def test_dot_drops_masks_like_keras(keras, rng):
    xs = _inputs(rng, [(2, 3, 4), (2, 5, 4)], np.float32)
    masks = [rng.random((2, 3)) < 0.5, rng.random((2, 5)) < 0.5]
    k_out = keras.layers.Dot(axes=2)(_keras_tensors(xs, masks))
    layer = Dot(axes=2)
    np.testing.assert_allclose(layer(xs, mask=masks), _to_numpy(k_out), rtol=KERAS_TOL, atol=KERAS_TOL)
    assert _keras_mask_of(k_out) is None and layer.compute_mask(xs, masks) is None


@pytest.mark.keras
def test_keras_configs_use_the_same_arguments(keras):
    """The arguments rnnkit's configs hold are Keras's, under Keras's names."""
    for k_layer, layer in [(keras.layers.Concatenate(axis=1), Concatenate(axis=1)),
                           (keras.layers.Dot(axes=(1, 2), normalize=True), Dot(axes=(1, 2), normalize=True))]:
        k_cfg, cfg = k_layer.get_config(), layer.get_config()
        extra = set(cfg) - {"name", "dtype", "trainable", "input_shape"}
        assert extra and extra <= set(k_cfg)
        for key in extra:
            want = k_cfg[key]
            assert cfg[key] == (list(want) if isinstance(want, tuple) else want), key


# ---------------------------------------------------------------------------------------------
# config and errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    Add(), Subtract(dtype="float64"), Multiply(name="mul"), Average(), Maximum(), Minimum(trainable=False),
    Concatenate(axis=1), Concatenate(), Dot(axes=2), Dot(axes=(1, 2), normalize=True, dtype="float64"),
], ids=lambda l: type(l).__name__)
def test_config_round_trip(rng, layer):
    cfg = json.loads(json.dumps(base.serialize(layer)))
    assert cfg["class_name"] == type(layer).__name__
    clone = base.deserialize(cfg)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    shapes = [(2, 3, 4), (2, 4, 3)] if isinstance(getattr(layer, "axes", None), tuple) else [(2, 3, 4)] * 2
    xs = _inputs(rng, shapes, layer.dtype)
    np.testing.assert_array_equal(clone(xs), layer(xs))
    assert base.get(type(layer).__name__) is type(layer)


def _raises(exc: type, fn: Any, *words: str) -> str:
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


def test_input_errors(rng):
    a, b = _inputs(rng, [(2, 3, 4), (2, 3, 4)])
    add = Add(name="add")
    _raises(TypeError, lambda: add(a), "add: inputs", "list")
    _raises(ValueError, lambda: add([]), "inputs", "at least 1")
    _raises(ValueError, lambda: Subtract()([a, b, a]), "inputs", "2 arrays", "got 3")
    _raises(ValueError, lambda: Dot(axes=2)([a]), "inputs", "2 arrays", "got 1")
    _raises(TypeError, lambda: add([a, np.ones((2, 3, 4), dtype=np.int64)]), "inputs[1]", "int64")
    _raises(TypeError, lambda: add([a, np.ones((2, 3, 4), dtype=np.float16)]), "inputs[1]")
    _raises(ValueError, lambda: add([a, np.ones((2, 2, 4))]), "inputs[1]", "(2, 2, 4)", "broadcast")
    _raises(ValueError, lambda: add([a, np.ones((3, 3, 4))]), "inputs[1]", "batch size 2")
    _raises(ValueError, lambda: add([a, np.float64(1.0)]), "inputs[1]", "scalar")
    cat = Concatenate(axis=1, name="cat")
    _raises(ValueError, lambda: cat([a, np.ones((2, 3))]), "cat: inputs[1]", "3 dimensions")
    _raises(ValueError, lambda: cat([a, np.ones((2, 3, 5))]), "inputs[1]", "(2, 3, 5)", "axis 1")
    _raises(ValueError, lambda: Concatenate(axis=3)([a, b]), "axis 3", "out of range")
    _raises(TypeError, lambda: Concatenate(axis=1.0), "axis")
    dot = Dot(axes=2, name="dot")
    _raises(ValueError, lambda: dot([a, np.ones((2, 3, 5))]), "dot: inputs", "axis 2 has 4", "axis 2 has 5")
    _raises(ValueError, lambda: Dot(axes=3)([a, b]), "axes", "non-batch axis")
    _raises(ValueError, lambda: Dot(axes=-3)([a, b]), "axes")
    _raises(ValueError, lambda: Dot(axes=2)([np.ones(2), b]), "inputs[0]", "at least 2 dimensions")
    _raises(ValueError, lambda: Dot(axes=0), "axes", "batch axis 0")
    _raises(ValueError, lambda: Dot(axes=(1, 2, 1)), "axes", "pair")
    _raises(TypeError, lambda: Dot(axes="1"), "axes")
    _raises(TypeError, lambda: Dot(axes=(1, 2.0)), "axes")


def test_mask_and_gradient_errors(rng):
    a, b = _inputs(rng, [(2, 3, 4), (2, 3, 4)])
    m = np.ones((2, 3), bool)
    mx = Maximum(name="mx")
    _raises(TypeError, lambda: mx([a, b], mask=m), "mx: mask", "list")
    _raises(ValueError, lambda: mx([a, b], mask=[m]), "mask", "2 entries")
    _raises(ValueError, lambda: mx([a, b], mask=[m, np.ones((2, 4), bool)]), "mask[1]", "(2, 3)", "(2, 4)")
    _raises(TypeError, lambda: mx([a, b], mask=[m, np.ones((2, 3), np.float32)]), "mask[1]", "float32")
    _raises(ValueError, lambda: mx([a[:, 0, 0], b[:, 0, 0]], mask=[m[:, 0], None]), "mask[0]", "2 dimensions")
    _raises(ValueError, lambda: Add().compute_mask([a, b[:, 0]], [m, m[:, 0]]), "mask", "different ranks")
    out, ctx = mx.apply([a, b])
    _raises(ValueError, lambda: mx.backward(np.ones((2, 3, 5)), ctx), "mx: d_out", "(2, 3, 4)")
    cat = Concatenate(name="cat")
    out, ctx = cat.apply([a, b])
    _raises(ValueError, lambda: cat.backward(np.ones((2, 3, 4)), ctx), "cat: d_out", "(2, 3, 8)")


def test_symbolic_shape_errors():
    x = Input((3, 4))
    y = Input((5, 4))
    _raises(ValueError, lambda: Add(name="add")([x, y]), "add: input_shape[1]", "broadcast")
    _raises(ValueError, lambda: Concatenate(axis=-1)([x, y]), "input_shape[1]")
    _raises(ValueError, lambda: Dot(axes=1)([x, y]), "input_shape", "3", "5")
    _raises(ValueError, lambda: Subtract()([x]), "input_shape", "2 arrays")
    assert Concatenate(axis=1)([x, y]).shape == (None, 8, 4)
    assert Dot(axes=2)([x, y]).shape == (None, 3, 5)


# ---------------------------------------------------------------------------------------------
# functional models
# ---------------------------------------------------------------------------------------------

def _merge_model(rng: np.random.Generator) -> Model:
    """Two inputs -> Dense each -> every merge layer -> Concatenate -> Dense, with weights drawn
    from ``rng``."""
    in1, in2 = Input((4,), dtype="float64"), Input((3,), dtype="float64")
    h1 = Dense(5, activation="tanh", **F64)(in1)
    h2 = Dense(5, activation="tanh", **F64)(in2)
    parts = [Concatenate(**F64)([h1, h2]), Add(**F64)([h1, h2]), Subtract(**F64)([h1, h2]),
             Multiply(**F64)([h1, h2, h1]), Average(**F64)([h1, h2]), Maximum(**F64)([h1, h2]),
             Minimum(**F64)([h1, h2]), Dot(axes=1, **F64)([h1, h2]), Dot(axes=1, normalize=True, **F64)([h1, h2])]
    out = Dense(2, **F64)(Concatenate(**F64)(parts))
    model = Model([in1, in2], out)
    model.set_weights([rng.uniform(-0.7, 0.7, size=w.shape) for w in model.get_weights()])
    return model


def test_functional_model_gradients_match_finite_differences(rng, one_thread):
    model = _merge_model(rng)
    x = [rng.standard_normal((3, 4)), rng.standard_normal((3, 3))]
    out = model(x)
    assert out.shape == (3, 2)
    W = rng.standard_normal(out.shape)
    model.zero_grad()
    dx = model.backward(W)

    def loss() -> float:
        return float(np.sum(model(x) * W))

    for i in range(2):
        helpers.assert_close_rel(dx[i], helpers.numerical_grad(loss, x[i]), GRAD_TOL, f"d x[{i}]")
    for layer in model.layers:
        for k, p in layer.params.items():
            helpers.assert_close_rel(layer.grads[k], helpers.numerical_grad(loss, p), GRAD_TOL, f"{layer.name}.{k}")


def test_functional_model_trains(rng, one_thread):
    model = _merge_model(rng)
    x = [rng.standard_normal((64, 4)), rng.standard_normal((64, 3))]
    y = np.stack([np.tanh(x[0][:, 0] * x[1][:, 1]), x[0][:, 1] - x[1][:, 2]], axis=1)
    model.compile(optimizer="adam", loss="mse")
    before = model.evaluate(x, y)
    hist = model.fit(x, y, epochs=30, batch_size=16, verbose=0, seed=0)
    after = model.evaluate(x, y)
    assert len(hist.history["loss"]) == 30
    assert after < 0.5 * before, (before, after)
    # the saved architecture rebuilds with the merge layers in place
    clone = Model.from_config(json.loads(json.dumps(model.get_config())))
    assert [type(l).__name__ for l in clone.layers] == [type(l).__name__ for l in model.layers]
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x), model.predict(x), rtol=1e-12, atol=1e-12)


def test_functional_model_masks_flow_through_merges(rng, one_thread):
    """Embedding(mask_zero) masks reach Maximum (values) and Concatenate(axis=1) (output mask);
    the graph's backward through masked merges matches finite differences."""
    in1, in2 = Input((4,), dtype="int64"), Input((4,), dtype="int64")
    e1 = Embedding(6, 3, mask_zero=True, name="e1", **F64)(in1)
    e2 = Embedding(6, 3, mask_zero=True, name="e2", **F64)(in2)
    mx = Maximum(**F64)([e1, e2])
    cat = Concatenate(axis=1, **F64)([mx, e2])
    out = Dense(2, name="head", **F64)(cat)
    model = Model([in1, in2], out)
    t1 = np.array([[1, 2, 0, 0], [3, 0, 4, 5]])
    t2 = np.array([[2, 0, 1, 0], [0, 0, 5, 1]])
    y = model([t1, t2])
    m1, m2 = t1 != 0, t2 != 0
    np.testing.assert_array_equal(model.output_mask, np.concatenate([m1 | m2, m2], axis=1))
    a = model.get_layer("e1").params["embeddings"][t1]
    b = model.get_layer("e2").params["embeddings"][t2]
    want_max = np.where(m1[..., None] & m2[..., None], np.maximum(a, b), np.where(m2[..., None], b, a))
    dense = model.get_layer("head")
    np.testing.assert_allclose(y[:, :4], want_max @ dense.params["kernel"] + dense.params["bias"], rtol=1e-12)
    W = rng.standard_normal(y.shape)
    model.zero_grad()
    model.backward(W)

    def loss() -> float:
        return float(np.sum(model([t1, t2]) * W))

    for layer in (model.get_layer("e1"), model.get_layer("e2")):
        emb = layer.params["embeddings"]
        helpers.assert_close_rel(layer.grads["embeddings"], helpers.numerical_grad(loss, emb), GRAD_TOL, layer.name)


def test_same_tensor_merged_with_itself(rng, one_thread):
    """A tensor read twice by one merge node gets both gradients."""
    inp = Input((3,), dtype="float64")
    h = Dense(3, **F64)(inp)
    model = Model(inp, Multiply(**F64)([h, h]))
    x = rng.standard_normal((2, 3))
    W = rng.standard_normal((2, 3))
    model(x)
    dx = model.backward(W)
    helpers.assert_close_rel(dx, helpers.numerical_grad(lambda: float(np.sum(model(x) * W)), x), GRAD_TOL, "dx")
