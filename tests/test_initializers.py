"""rnnkit.initializers: Keras 3 names, defaults, fans, seeds, lookup and config."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rnnkit import initializers as I

RANDOM = [I.RandomUniform, I.RandomNormal, I.TruncatedNormal, I.VarianceScaling, I.GlorotUniform,
          I.GlorotNormal, I.HeUniform, I.HeNormal, I.LecunUniform, I.LecunNormal, I.Orthogonal]


def test_constant_zeros_ones():
    np.testing.assert_array_equal(I.Zeros()((2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.Ones()((4,), dtype="float64"), np.ones(4))
    assert I.Zeros()((2,)).dtype == np.float32  # Keras floatx default
    c = I.Constant(0.25)((3, 2), dtype=np.float64)
    assert c.dtype == np.float64
    np.testing.assert_array_equal(c, 0.25)
    np.testing.assert_array_equal(I.Constant([1.0, 2.0])((3, 2)), [[1, 2]] * 3)
    np.testing.assert_array_equal(I.Constant()((1,)), [0.0])
    with pytest.raises(ValueError, match=r"value: shape \(3,\) does not broadcast to the requested shape \(2, 2\)"):
        I.Constant([1.0, 2.0, 3.0])((2, 2))
    with pytest.raises(TypeError, match="value: expected a number"):
        I.Constant("a")


@pytest.mark.parametrize("cls", RANDOM)
def test_shape_dtype_and_int_seed_repeats(cls):
    init = cls(seed=5)
    a = init((6, 4))
    assert a.shape == (6, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(init((6, 4)), a)  # an int seed repeats (Keras 3)
    np.testing.assert_array_equal(cls(seed=5)((6, 4)), a)
    assert not np.array_equal(cls(seed=6)((6, 4)), a)
    b = init((6, 4), dtype="float64")
    assert b.dtype == np.float64
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="dtype: expected a floating dtype"):
        init((2, 2), dtype="int32")


@pytest.mark.parametrize("cls", RANDOM)
def test_generator_seed_draws_fresh_and_none_seed_uses_numpy_global(cls):
    gen = cls(seed=np.random.default_rng(0))
    assert not np.array_equal(gen((4, 4)), gen((4, 4)))
    assert gen.get_config()["seed"] is None
    np.random.seed(123)
    a = cls()((4, 4))
    np.random.seed(123)
    np.testing.assert_array_equal(cls()((4, 4)), a)
    unseeded = cls()
    np.testing.assert_array_equal(unseeded((3, 3)), unseeded((3, 3)))


def test_compute_fans():
    assert I.compute_fans(()) == (1.0, 1.0)
    assert I.compute_fans((7,)) == (7.0, 7.0)
    assert I.compute_fans((3, 5)) == (3.0, 5.0)
    assert I.compute_fans((2, 3, 4, 5)) == (24.0, 30.0)


def test_glorot_he_lecun_bounds_and_std():
    shape = (300, 500)
    g = I.GlorotUniform(seed=1)(shape, dtype="float64")
    lim = math.sqrt(6 / (300 + 500))
    assert np.max(np.abs(g)) <= lim and np.max(np.abs(g)) > 0.99 * lim
    np.testing.assert_allclose(g.std(), lim / math.sqrt(3), rtol=0.01)
    h = I.HeUniform(seed=1)(shape, dtype="float64")
    np.testing.assert_allclose(np.max(np.abs(h)), math.sqrt(6 / 300), rtol=0.01)
    lu = I.LecunUniform(seed=1)(shape, dtype="float64")
    np.testing.assert_allclose(np.max(np.abs(lu)), math.sqrt(3 / 300), rtol=0.01)
    # truncated normals: stddev sqrt(scale/n) after the truncation correction; cut at 2 sigma'
    for cls, n, scale in ((I.GlorotNormal, 400.0, 1.0), (I.HeNormal, 300.0, 2.0), (I.LecunNormal, 300.0, 1.0)):
        a = cls(seed=2)(shape, dtype="float64")
        target = math.sqrt(scale / n)
        np.testing.assert_allclose(a.std(), target, rtol=0.02)
        assert np.max(np.abs(a)) <= 2 * target / 0.87962566103423978 + 1e-12
    # rank-3 kernel: fans use the receptive field
    k = I.GlorotUniform(seed=3)((3, 4, 5), dtype="float64")
    assert np.max(np.abs(k)) <= math.sqrt(6 / (12 + 15))


def test_variance_scaling_modes_and_errors():
    a = I.VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform", seed=0)((100, 400), dtype="float64")
    np.testing.assert_allclose(np.max(np.abs(a)), math.sqrt(3 * 2.0 / 400), rtol=0.01)
    u = I.VarianceScaling(scale=1.0, mode="fan_in", distribution="untruncated_normal", seed=0)((400, 300),
                                                                                             dtype="float64")
    np.testing.assert_allclose(u.std(), math.sqrt(1 / 400), rtol=0.02)
    with pytest.raises(ValueError, match="mode: expected one of"):
        I.VarianceScaling(mode="fan_max")
    with pytest.raises(ValueError, match="distribution: expected one of"):
        I.VarianceScaling(distribution="cauchy")
    with pytest.raises(ValueError, match="scale: expected a positive float, got 0"):
        I.VarianceScaling(scale=0)


def test_random_uniform_normal_truncated_defaults():
    u = I.RandomUniform(seed=0)((20000,), dtype="float64")
    assert u.min() >= -0.05 and u.max() < 0.05 and abs(u.mean()) < 2e-3
    n = I.RandomNormal(seed=0)((20000,), dtype="float64")
    np.testing.assert_allclose([n.mean(), n.std()], [0.0, 0.05], atol=2e-3)
    n2 = I.RandomNormal(mean=1.0, stddev=2.0, seed=0)((20000,), dtype="float64")
    np.testing.assert_allclose([n2.mean(), n2.std()], [1.0, 2.0], atol=0.05)
    t = I.TruncatedNormal(mean=0.5, stddev=0.1, seed=0)((20000,), dtype="float64")
    assert t.min() >= 0.3 and t.max() <= 0.7
    u2 = I.RandomUniform(minval=2, maxval=3, seed=1)((1000,))
    assert u2.min() >= 2 and u2.max() < 3
    with pytest.raises(ValueError, match="minval, maxval: expected minval < maxval, got 1 and 1"):
        I.RandomUniform(1, 1)
    with pytest.raises(ValueError, match="stddev: expected >= 0"):
        I.RandomNormal(stddev=-1)


@pytest.mark.parametrize("shape", [(4, 4), (3, 12), (12, 3), (2, 3, 4)])
def test_orthogonal(shape):
    q = I.Orthogonal(gain=1.5, seed=0)(shape, dtype="float64")
    assert q.shape == shape
    m = q.reshape(-1, shape[-1])
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    np.testing.assert_allclose(gram, 2.25 * np.eye(min(rows, cols)), atol=1e-12)
    with pytest.raises(ValueError, match="orthogonal initializer needs at least 2 dimensions, got \\(3,\\)"):
        I.Orthogonal()((3,))


def test_shape_errors():
    with pytest.raises(TypeError, match="shape: expected a tuple of ints"):
        I.Zeros()((2.5, 3))
    with pytest.raises(ValueError, match="shape: expected non-negative sizes"):
        I.Ones()((-1, 3))
    assert I.Zeros()(3).shape == (3,)
    with pytest.raises(TypeError, match="seed: expected None, an int or a numpy Generator, got str"):
        I.GlorotUniform(seed="x")


@pytest.mark.parametrize("name,cls", [
    ("glorot_uniform", I.GlorotUniform), ("GlorotUniform", I.GlorotUniform), ("orthogonal", I.Orthogonal),
    ("zeros", I.Zeros), ("ones", I.Ones), ("constant", I.Constant), ("uniform", I.RandomUniform),
    ("random_uniform", I.RandomUniform), ("normal", I.RandomNormal), ("random_normal", I.RandomNormal),
    ("truncated_normal", I.TruncatedNormal), ("he_normal", I.HeNormal), ("lecun_uniform", I.LecunUniform),
    ("variance_scaling", I.VarianceScaling), ("glorot_normal", I.GlorotNormal),
])
def test_get_by_name(name, cls):
    a = I.get(name)
    assert type(a) is cls
    assert I.get(name) is not a  # a fresh instance per lookup


def test_get_instances_callables_dicts_and_errors():
    inst = I.Orthogonal(gain=2.0)
    assert I.get(inst) is inst

    def custom(shape, dtype=None):
        return np.full(shape, 3.0, dtype=dtype)

    assert I.get(custom) is custom
    assert I.serialize(custom) is custom
    d = I.get({"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 0.5, "seed": 3}})
    assert isinstance(d, I.RandomNormal) and d.mean == 1.0 and d.stddev == 0.5 and d.seed == 3
    with pytest.raises(ValueError, match="initializer: unknown name 'xavier'"):
        I.get("xavier")
    with pytest.raises(TypeError, match="initializer: expected a name, a config dict, an Initializer or a callable"):
        I.get(3)
    with pytest.raises(ValueError, match="config: expected a dict with 'class_name'"):
        I.deserialize({"config": {}})


@pytest.mark.parametrize("init", [
    I.Constant(0.3), I.Constant(np.array([1.0, 2.0])), I.Zeros(), I.Ones(), I.RandomUniform(-1, 2, seed=4),
    I.RandomNormal(0.1, 0.2, seed=5), I.TruncatedNormal(stddev=0.3), I.VarianceScaling(2.0, "fan_avg", "uniform", 7),
    I.GlorotUniform(seed=1), I.GlorotNormal(), I.HeUniform(seed=2), I.HeNormal(), I.LecunUniform(),
    I.LecunNormal(seed=9), I.Orthogonal(gain=0.5, seed=3),
], ids=lambda i: type(i).__name__)
def test_config_round_trip(init):
    blob = json.dumps(I.serialize(init))
    clone = I.deserialize(json.loads(blob))
    assert type(clone) is type(init) and clone.get_config() == init.get_config()
    assert type(init).from_config(init.get_config()).get_config() == init.get_config()
    if init.get_config().get("seed") is not None or not hasattr(init, "seed"):
        np.testing.assert_array_equal(clone((3, 2)), init((3, 2)))
    assert repr(init).startswith(type(init).__name__ + "(")
