"""Bad input to every public functional entry point raises TypeError/ValueError naming the
argument (never a crash), plus the copy/layout contract of good input: correctly typed
C-contiguous arrays are used in place, anything else float is copied once and gives the same
results.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnnkit import functional as F

from helpers import make_params, run_backward

T, N, C, H = 3, 2, 4, 5
KINDS = ("rnn", "lstm", "gru")
CELL_OF = {"rnn": "rnn_tanh", "lstm": "lstm", "gru": "gru"}
FORWARD = {"rnn": F.rnn_forward, "lstm": F.lstm_forward, "gru": F.gru_forward}
BACKWARD = {"rnn": F.rnn_backward, "lstm": F.lstm_backward, "gru": F.gru_backward}


def _valid(kind, dtype=np.float64):
    """Keyword arguments of a valid forward call."""
    rng = np.random.default_rng(0)
    cell = CELL_OF[kind]
    p = make_params(rng, cell, C, H, dtype=dtype)
    a = dict(x=rng.standard_normal((T, N, C)).astype(dtype),
             h0=rng.standard_normal((N, H)).astype(dtype), **p)
    if kind == "lstm":
        a["c0"] = rng.standard_normal((N, H)).astype(dtype)
    a["mask"] = np.ones((T, N), bool)
    return a


def _forward(kind, a):
    a = dict(a)
    x, h0, w_ih, w_hh = a.pop("x"), a.pop("h0"), a.pop("w_ih"), a.pop("w_hh")
    b_ih, b_hh = a.pop("b_ih"), a.pop("b_hh")
    if kind == "lstm":
        return F.lstm_forward(x, h0, a.pop("c0"), w_ih, w_hh, b_ih, b_hh, **a)
    return FORWARD[kind](x, h0, w_ih, w_hh, b_ih, b_hh, **a)


def _shape(shape_fn):
    """A modifier replacing the argument with an array of ones of a new shape (same dtype)."""
    def mod(v):
        return np.ones(shape_fn(v.shape), dtype=v.dtype)
    return mod


# (argument, modifier, exception, applies to) -- the message must start with "<argument>:"
FORWARD_CASES = [
    # ranks
    ("x", lambda v: v[0], ValueError, KINDS),
    ("x", lambda v: v[None], ValueError, KINDS),
    ("x", lambda v: v.reshape(-1), ValueError, KINDS),
    ("w_ih", lambda v: v.reshape(-1), ValueError, KINDS),
    ("w_ih", lambda v: v[None], ValueError, KINDS),
    ("w_hh", lambda v: v.reshape(-1), ValueError, KINDS),
    ("w_hh", lambda v: v[None], ValueError, KINDS),
    ("b_ih", lambda v: v[None], ValueError, KINDS),
    ("b_hh", lambda v: v[:, None], ValueError, KINDS),
    ("h0", lambda v: v[None], ValueError, KINDS),          # torch's [layers, N, H] is refused
    ("c0", lambda v: v[None], ValueError, ("lstm",)),
    ("mask", lambda v: v[None], ValueError, KINDS),
    ("mask", lambda v: v[0], ValueError, KINDS),
    # mismatched sizes
    ("w_ih", _shape(lambda s: (s[0], s[1] + 1)), ValueError, KINDS),   # C differs from x
    ("w_ih", _shape(lambda s: (s[0] + 1, s[1])), ValueError, KINDS),   # rows != G*H
    ("w_ih", _shape(lambda s: (H, s[1])), ValueError, ("lstm", "gru")),   # [H, C]: G=1
    ("w_hh", _shape(lambda s: (s[0], s[1] + 1)), ValueError, KINDS),   # not [G*H, H]
    ("w_hh", _shape(lambda s: (s[0] + 1, s[1])), ValueError, KINDS),
    ("w_hh", _shape(lambda s: (s[1], s[1])), ValueError, ("lstm", "gru")),   # [H, H]: G=1
    ("w_hh", _shape(lambda s: (0, 0)), ValueError, KINDS),
    ("b_ih", _shape(lambda s: (s[0] + 1,)), ValueError, KINDS),
    ("b_ih", _shape(lambda s: (s[0] - 1,)), ValueError, KINDS),
    ("b_hh", _shape(lambda s: (s[0] // 2,)), ValueError, KINDS),
    ("h0", _shape(lambda s: (s[0] + 1, s[1])), ValueError, KINDS),
    ("h0", _shape(lambda s: (s[0], s[1] + 1)), ValueError, KINDS),
    ("h0", _shape(lambda s: (s[1], s[0])), ValueError, KINDS),
    ("c0", _shape(lambda s: (s[0], s[1] - 1)), ValueError, ("lstm",)),
    ("mask", _shape(lambda s: (s[0], s[1] + 1)), ValueError, KINDS),
    ("mask", _shape(lambda s: (s[1], s[0])), ValueError, KINDS),
    ("recurrent_dropout_mask", lambda v: np.ones((N, H + 1)), ValueError, KINDS),
    ("recurrent_dropout_mask", lambda v: np.ones((H,)), ValueError, KINDS),
    # empty sizes
    ("x", lambda v: v[:0], ValueError, KINDS),           # T = 0
    ("x", lambda v: v[:, :0], ValueError, KINDS),        # N = 0
    # mixed dtypes (x is float64)
    ("w_ih", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("w_hh", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("b_ih", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("b_hh", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("h0", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("c0", lambda v: v.astype(np.float32), TypeError, ("lstm",)),
    ("recurrent_dropout_mask", lambda v: np.ones((N, H), np.float32), TypeError, KINDS),
    # unsupported dtypes
    ("x", lambda v: v.astype(np.int64), TypeError, KINDS),
    ("x", lambda v: v.astype(np.int32), TypeError, KINDS),
    ("x", lambda v: v > 0, TypeError, KINDS),
    ("x", lambda v: v.astype(object), TypeError, KINDS),
    ("x", lambda v: v.astype(np.complex128), TypeError, KINDS),
    ("x", lambda v: v.astype(np.float16), TypeError, KINDS),
    ("x", lambda v: v.astype(np.longdouble), TypeError, KINDS),
    ("x", lambda v: None, TypeError, KINDS),
    ("x", lambda v: "abc", TypeError, KINDS),
    ("w_ih", lambda v: v.astype(np.int64), TypeError, KINDS),
    ("w_hh", lambda v: v.astype(np.complex128), TypeError, KINDS),
    ("w_hh", lambda v: v.astype(np.float16), TypeError, KINDS),
    ("b_ih", lambda v: v.astype(object), TypeError, KINDS),
    ("b_hh", lambda v: v > 0, TypeError, KINDS),
    ("h0", lambda v: v.astype(np.complex64), TypeError, KINDS),
    ("h0", lambda v: v.astype(np.int8), TypeError, KINDS),
    ("c0", lambda v: v.astype(np.float16), TypeError, ("lstm",)),
    ("mask", lambda v: v.astype(np.float64), TypeError, KINDS),
    ("mask", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("mask", lambda v: v.astype(object), TypeError, KINDS),
    ("mask", lambda v: v.astype(np.complex64), TypeError, KINDS),
]


def _expand(cases):
    """(kind, argument, modifier, exception) for every kind a case applies to, with ids."""
    return [pytest.param(kind, name, mod, exc, id=f"{kind}-{name}-{i}")
            for i, (name, mod, exc, kinds) in enumerate(cases) for kind in kinds]


@pytest.mark.parametrize("kind,name,mod,exc", _expand(FORWARD_CASES))
def test_forward_bad_input(kind, name, mod, exc):
    a = _valid(kind)
    a[name] = mod(a[name] if name in a else None)
    with pytest.raises(exc, match=rf"^{name}\b"):
        _forward(kind, a)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_c0_zero_and_x_float32_mixed(kind):
    """C = 0 is refused (naming x) and float32 x with float64 weights is refused naming the
    weight."""
    a = _valid(kind)
    a["x"] = a["x"][:, :, :0]
    a["w_ih"] = a["w_ih"][:, :0]
    with pytest.raises(ValueError, match=r"^x\b"):
        _forward(kind, a)
    a = _valid(kind, np.float32)
    a["w_ih"] = a["w_ih"].astype(np.float64)
    with pytest.raises(TypeError, match=r"^w_ih\b"):
        _forward(kind, a)


@pytest.mark.parametrize("bad", ["sigmoid", "TANH", "", None, 1])
def test_rnn_bad_nonlinearity(bad):
    a = _valid("rnn")
    with pytest.raises(ValueError, match=r"^nonlinearity\b"):
        _forward("rnn", dict(a, nonlinearity=bad))


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------

def _cache(kind, dtype=np.float64):
    return _forward(kind, _valid(kind, dtype)).cache


def _good_grads(kind, dtype=np.float64):
    g = dict(dy=np.ones((T, N, H), dtype), dh_n=np.ones((N, H), dtype))
    if kind == "lstm":
        g["dc_n"] = np.ones((N, H), dtype)
    return g


BACKWARD_CASES = [
    ("dy", lambda v: np.ones((T, N, H + 1)), ValueError, KINDS),
    ("dy", lambda v: np.ones((T + 1, N, H)), ValueError, KINDS),
    ("dy", lambda v: np.ones((T, N)), ValueError, KINDS),
    ("dy", lambda v: np.ones((1, T, N, H)), ValueError, KINDS),
    ("dy", lambda v: None, ValueError, KINDS),
    ("dy", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("dy", lambda v: v.astype(np.int64), TypeError, KINDS),
    ("dy", lambda v: v.astype(np.float16), TypeError, KINDS),
    ("dy", lambda v: v.astype(np.complex128), TypeError, KINDS),
    ("dy", lambda v: v > 0, TypeError, KINDS),
    ("dh_n", lambda v: np.ones((N + 1, H)), ValueError, KINDS),
    ("dh_n", lambda v: np.ones((1, N, H)), ValueError, KINDS),
    ("dh_n", lambda v: v.astype(np.float32), TypeError, KINDS),
    ("dh_n", lambda v: v.astype(object), TypeError, KINDS),
    ("dc_n", lambda v: np.ones((N, H - 1)), ValueError, ("lstm",)),
    ("dc_n", lambda v: v.astype(np.float32), TypeError, ("lstm",)),
    ("dc_n", lambda v: v.astype(np.int32), TypeError, ("lstm",)),
]


@pytest.mark.parametrize("kind,name,mod,exc", _expand(BACKWARD_CASES))
def test_backward_bad_input(kind, name, mod, exc):
    cache = _cache(kind)
    g = _good_grads(kind)
    g[name] = mod(g[name])
    with pytest.raises(exc, match=rf"^{name}\b"):
        BACKWARD[kind](cache, **g)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_float32_cache_refuses_float64_grads(kind):
    cache = _cache(kind, np.float32)
    g = _good_grads(kind, np.float32)
    g["dy"] = g["dy"].astype(np.float64)
    with pytest.raises(TypeError, match=r"^dy\b"):
        BACKWARD[kind](cache, **g)


@pytest.mark.parametrize("kind,source", [(k, s) for k in KINDS
                                         for s in KINDS + ("none", "tuple", "dict") if s != k])
def test_backward_wrong_cache_type(kind, source):
    if source == "none":
        cache = None
    elif source == "tuple":
        cache = _forward(kind, _valid(kind))   # the whole output instead of .cache
    elif source == "dict":
        cache = vars(_cache(kind))
    else:
        cache = _cache(source)
    with pytest.raises(TypeError, match=r"^cache\b"):
        BACKWARD[kind](cache, **_good_grads(kind))


# ---------------------------------------------------------------------------------------------
# never crash: run a battery of bad and odd inputs in a child process, so a segfault or abort
# fails this test instead of killing pytest
# ---------------------------------------------------------------------------------------------

_CRASH_SCRIPT = textwrap.dedent(r'''
    import dataclasses, itertools
    import numpy as np
    from rnnkit import functional as F

    rng = np.random.default_rng(0)
    T, N, C, H = 3, 2, 4, 5
    G = {"rnn": 1, "lstm": 4, "gru": 3}
    outcomes = {"ok": 0, "raised": 0}

    def attempt(fn, *a, **k):
        """Public misuse must raise TypeError or ValueError (anything else propagates)."""
        try:
            fn(*a, **k)
            outcomes["ok"] += 1
        except (TypeError, ValueError):
            outcomes["raised"] += 1

    def attempt_tampered(fn, *a, **k):
        """A hand-edited cache may raise anything from Python; it just must not crash."""
        try:
            fn(*a, **k)
            outcomes["ok"] += 1
        except Exception:
            outcomes["raised"] += 1

    def fwd(kind, x, s, w_ih, w_hh, b_ih, b_hh, **kw):
        if kind == "lstm":
            return F.lstm_forward(x, s, s, w_ih, w_hh, b_ih, b_hh, **kw)
        return getattr(F, kind + "_forward")(x, s, w_ih, w_hh, b_ih, b_hh, **kw)

    shapes = [(), (0,), (1,), (3,), (2, 2), (0, 5), (5, 0), (3, 2, 4), (3, 2, 0), (0, 2, 4),
              (1, 1, 1, 1), (20, 5), (4, 5), (12, 5), (15, 5), (20, 4), (12, 4), (2, 5)]
    dtypes = [np.float32, np.float64, np.int64, np.bool_, np.float16, np.complex64, object]
    for kind in ("rnn", "lstm", "gru"):
        # random combinations of shapes for every array argument
        for _ in range(300):
            args = []
            for _a in range(6):
                shp = shapes[rng.integers(len(shapes))]
                args.append(rng.standard_normal(shp))
            if rng.random() < 0.3:
                args[4] = None
                args[5] = None
            attempt(fwd, kind, *args)
        # correct shapes, random dtypes / None / scalars / lists
        good = [rng.standard_normal((T, N, C)), rng.standard_normal((N, H)),
                rng.standard_normal((G[kind] * H, C)), rng.standard_normal((G[kind] * H, H)),
                rng.standard_normal(G[kind] * H), rng.standard_normal(G[kind] * H)]
        for i, dt in itertools.product(range(6), dtypes):
            args = list(good)
            args[i] = args[i].astype(dt)
            attempt(fwd, kind, *args)
        for i, bad in itertools.product(range(6), [None, 1.5, [1.0, 2.0], "x", np.float64(2.0)]):
            args = list(good)
            args[i] = bad
            attempt(fwd, kind, *args)
        for m in [np.ones((T, N)), np.ones((T, N), np.int8), np.ones((T, N + 1), bool),
                  np.ones((T,), bool), np.ones((N, T), bool), "m", 3, [[True] * N] * T]:
            attempt(fwd, kind, *good, mask=m)
        for rd in [np.ones((N, H)), np.ones((N, H + 1)), np.ones(H), np.ones((N, H), np.float32),
                   np.ones((N, H), int), "r"]:
            attempt(fwd, kind, *good, recurrent_dropout_mask=rd)
        # tampered caches: inconsistent arrays must be refused by the binding, not crash
        out = fwd(kind, *good, mask=np.ones((T, N), bool))
        cache = out.cache
        bwd = getattr(F, kind + "_backward")
        dy = np.ones((T, N, H))
        fields = [f.name for f in dataclasses.fields(cache)]
        for name in fields:
            val = getattr(cache, name)
            variants = []
            if isinstance(val, np.ndarray):
                variants = [val[:-1] if val.ndim else val, val[..., :-1] if val.ndim else val,
                            np.ones(val.shape + (1,), val.dtype), val.astype(np.float32),
                            np.asfortranarray(val) if val.ndim > 1 else val[::-1],
                            val.reshape(-1), np.zeros((0,) * max(val.ndim, 1), val.dtype)]
            variants += [None, 0, "s"]
            for v in variants:
                try:
                    bad_cache = dataclasses.replace(cache, **{name: v})
                except Exception:
                    continue
                attempt_tampered(bwd, bad_cache, dy)
        for dyv in [np.ones((T, N, H + 1)), np.ones((0, N, H)), np.ones((T, N, H), np.float32),
                    np.ones(3), 1.0, "d", [[1.0]]]:
            attempt(bwd, cache, dyv)
    print("DONE", outcomes["ok"], outcomes["raised"])
''')


def test_bad_inputs_never_crash():
    """Hundreds of bad/odd argument combinations (and tampered caches) in a child process: each
    call must return or raise TypeError/ValueError; the process must exit normally."""
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}")
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "DONE"
    assert int(last[2]) > 500, "the battery should mostly raise"


# ---------------------------------------------------------------------------------------------
# copies and layouts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_no_copy_of_contiguous_inputs(kind, dtype):
    a = _valid(kind, dtype)
    cache = _forward(kind, a).cache
    assert np.shares_memory(cache.x, a["x"])
    assert np.shares_memory(cache.w_ih, a["w_ih"])
    assert np.shares_memory(cache.w_hh, a["w_hh"])
    assert np.shares_memory(cache.mask, a["mask"])


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_do_not_alias_the_cache(kind):
    """h_n / c_n are independent arrays: modifying them must not corrupt the cache."""
    out = _forward(kind, _valid(kind))
    for arr in out[1:-1]:
        for v in vars(out.cache).values():
            if isinstance(v, np.ndarray):
                assert not np.shares_memory(arr, v)
        assert not np.shares_memory(arr, out.y)


def _all_results(kind, a):
    out = _forward(kind, a)
    cell = CELL_OF[kind]
    g = run_backward(cell, out.cache, np.linspace(-1, 1, T * N * H).reshape(T, N, H),
                     np.full((N, H), 0.3), np.full((N, H), -0.2) if kind == "lstm" else None)
    res = {"y": out.y, "h_n": out.h_n}
    if kind == "lstm":
        res["c_n"] = out.c_n
    res.update({k: v for k, v in g.items() if v is not None})
    return res


def _assert_same(r1, r2):
    assert r1.keys() == r2.keys()
    for k in r1:
        np.testing.assert_allclose(r1[k], r2[k], rtol=1e-13, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_and_foreign_layouts_give_same_results(kind):
    a = _valid(kind)
    ref = _all_results(kind, a)
    # x as a strided view: every other sample of a wider batch
    wide = np.zeros((T, 2 * N, C))
    wide[:, ::2] = a["x"]
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    b = dict(a, x=view)
    out = _forward(kind, b)
    assert out.cache.x.flags.c_contiguous and not np.shares_memory(out.cache.x, wide)
    _assert_same(_all_results(kind, b), ref)
    # Fortran-ordered weights and states, transposed views, non-native byte order, int mask
    b = dict(a, w_ih=np.asfortranarray(a["w_ih"]), w_hh=np.asfortranarray(a["w_hh"]),
             h0=np.ascontiguousarray(a["h0"].T).T, b_ih=a["b_ih"].astype(">f8"),
             mask=a["mask"].astype(np.int8))
    if kind == "lstm":
        b["c0"] = np.asfortranarray(a["c0"])
    _assert_same(_all_results(kind, b), ref)
    b = dict(a, x=a["x"].astype(">f8"), w_hh=a["w_hh"].astype(">f8"))
    _assert_same(_all_results(kind, b), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous_grads_give_same_results(kind):
    a = _valid(kind)
    cache = _forward(kind, a).cache
    dy = np.linspace(-1, 1, T * N * H).reshape(T, N, H)
    dh = np.full((N, H), 0.3)
    g1 = BACKWARD[kind](cache, dy, dh)
    g2 = BACKWARD[kind](cache, np.asfortranarray(dy), np.ascontiguousarray(dh.T).T)
    for u, v in zip(g1, g2):
        if u is None:  # a gradient that does not exist (dw_hr without a projection)
            assert v is None
            continue
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_not_modified(kind):
    a = _valid(kind)
    snap = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.items()}
    _all_results(kind, a)
    for k, v in snap.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(a[k], v, err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_nested_lists_are_accepted_as_float64(kind):
    a = _valid(kind)
    ref = _forward(kind, a)
    out = _forward(kind, dict(a, x=a["x"].tolist(), w_ih=a["w_ih"].tolist()))
    assert out.y.dtype == np.float64
    np.testing.assert_allclose(out.y, ref.y, rtol=1e-13, atol=1e-15)
