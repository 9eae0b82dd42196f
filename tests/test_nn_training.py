"""PyTorch-style training without torch: nn.Sequential, nn.Embedding, nn.Dropout, the loss modules,
nn.utils (gradient clipping, padding/packing) and Module.to, checked against torch (outputs and
input gradients from autograd), plus a PyTorch training loop that runs unchanged apart from the
imports and the explicit backward chain."""
from __future__ import annotations

import math
import re
import zlib
from collections import OrderedDict

import numpy as np
import pytest

from rnnkit import nn
from rnnkit.nn.utils import rnn as rnn_utils
from rnnkit.utils import set_random_seed

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

pytestmark = pytest.mark.torch

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
DTYPES = [np.float32, np.float64]


def _t(a: np.ndarray, grad: bool = False):
    return torch.tensor(a, requires_grad=grad)


def _tdtype(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


# ---- Module.to -----------------------------------------------------------------------------------

def test_to_accepts_torch_signatures():
    m = nn.Linear(3, 2, seed=0)
    x = np.ones((1, 3), np.float32)
    m(x)
    assert m.to("cpu") is m and m.dtype == np.float32
    assert m._last_x is not None  # a device-only move to the CPU changes nothing
    assert m.to(device="cpu:0") is m and m.to(torch.device("cpu")) is m
    assert m.to("cpu", np.float64) is m and m.weight.dtype == np.float64 and m.bias.dtype == np.float64
    assert m._last_x is None
    m.to(device="cpu", dtype=torch.float32)
    assert m.dtype == np.float32
    m.to(torch.float64, non_blocking=True)
    assert m.weight.dtype == np.float64
    m.to(np.zeros(2, np.float32))  # the dtype of an array
    assert m.weight.dtype == np.float32
    m.to(torch.zeros(2, dtype=torch.float64))  # dtype (and device) of a tensor
    assert m.weight.dtype == np.float64
    m.to("float32")
    assert m.weight.dtype == np.float32
    assert m.to() is m and m.weight.dtype == np.float32


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", torch.device("meta"), "nonsense", 0])
def test_to_rejects_devices_other_than_cpu(device):
    m = nn.LSTM(3, 2, seed=0)
    shown = str(device) if isinstance(device, int) else repr(str(device))
    with pytest.raises(ValueError, match=re.escape(f"device: rnnkit runs on the CPU only (expected 'cpu'), got {shown}")):
        m.to(device)
    with pytest.raises(ValueError, match="device: rnnkit runs on the CPU only"):
        m.to(device=device, dtype=np.float64)
    assert m.dtype == np.float32  # nothing changed


def test_to_argument_errors():
    m = nn.Linear(2, 2, seed=0)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got int32"):
        m.to("cpu", np.int32)
    with pytest.raises(TypeError, match=r"to\(\): unexpected keyword argument\(s\) 'memory'"):
        m.to(memory="x")
    with pytest.raises(TypeError, match="to\\(\\): dtype given both positionally and as a keyword"):
        m.to(np.float64, dtype=np.float32)
    with pytest.raises(TypeError, match="non_blocking: expected a bool, got str"):
        m.to(np.float64, "yes")
    with pytest.raises(TypeError, match=r"to\(\): expected a dtype, a device or an array/tensor"):
        m.to([1, 2])
    assert m.dtype == np.float32


# ---- Sequential ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_matches_torch(dtype):
    torch.manual_seed(0)
    td = _tdtype(dtype)
    ref = torch.nn.Sequential(torch.nn.Linear(5, 7, dtype=td), torch.nn.Dropout(0.3),
                              torch.nn.Linear(7, 3, dtype=td))
    net = nn.Sequential(nn.Linear(5, 7, dtype=dtype), nn.Dropout(0.3), nn.Linear(7, 3, dtype=dtype))
    assert list(net.state_dict()) == list(ref.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    net.load_state_dict(ref.state_dict())
    ref.eval(), net.eval()
    assert not net[1].training
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 5)).astype(dtype)
    xt = _t(x, True)
    yt = ref(xt)
    y = net(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL[dtype])
    dy = rng.standard_normal(y.shape).astype(dtype)
    (yt * _t(dy)).sum().backward()
    dx = net.backward(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL[dtype])
    for (name, p), tp in zip(net.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **TOL[dtype], err_msg=name)


def test_sequential_training_mode_chains_the_dropout_mask():
    net = nn.Sequential(nn.Linear(6, 6, dtype=np.float64, seed=0), nn.Dropout(0.5, seed=1),
                        nn.Linear(6, 2, dtype=np.float64, seed=2))
    x = np.random.default_rng(3).standard_normal((5, 6))
    y = net(x)
    h = net[0](x)
    kept = net[1]._mask  # the mask of the forward through the container (then re-run layer 0 only)
    np.testing.assert_allclose(y, (h * kept) @ net[2].weight.data.T + net[2].bias.data, rtol=1e-12, atol=1e-12)
    net.zero_grad()
    net(x)
    dx = net.backward(np.ones((5, 2)))
    kept = net[1]._mask
    expected = ((np.ones((5, 2)) @ net[2].weight.data) * kept) @ net[0].weight.data
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


def test_sequential_container_protocol():
    a, b, c = nn.Linear(2, 3, seed=0), nn.Dropout(0.1), nn.Linear(3, 1, seed=1)
    named = nn.Sequential(OrderedDict([("enc", a), ("drop", b), ("head", c)]))
    assert [n for n, _ in named.named_children()] == ["enc", "drop", "head"]
    assert named.enc is a and named[-1] is c and len(named) == 3
    assert list(named.state_dict()) == ["enc.weight", "enc.bias", "head.weight", "head.bias"]
    sub = named[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c] and [n for n, _ in sub.named_children()] == ["drop", "head"]
    seq = nn.Sequential(a, c)
    seq.insert(1, b)
    assert list(seq) == [a, b, c] and [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    del seq[0]
    assert list(seq) == [b, c] and [n for n, _ in seq.named_children()] == ["0", "1"]
    seq.append(nn.Linear(1, 1, seed=2))
    seq[0] = a
    assert seq[0] is a and len(seq) == 3
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(seq)
    seq.to(np.float64)
    assert seq.dtype == np.float64 and all(p.dtype == np.float64 for p in seq.parameters())
    with pytest.raises(TypeError, match="args\\[1\\]: expected a rnnkit.nn Module, got int"):
        nn.Sequential(a, 3)
    with pytest.raises(IndexError, match=r"idx: expected an int in \[-3, 3\) \(3 modules\), got 3"):
        seq[3]
    with pytest.raises(TypeError, match="idx: expected an int or a slice, got str"):
        seq["0"]


def test_sequential_with_embedding_first_returns_none_and_fills_grads():
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Embedding(10, 4, padding_idx=0), torch.nn.Linear(4, 3))
    net = nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.Linear(4, 3))
    net.load_state_dict(ref.state_dict())
    idx = np.array([[1, 2, 0], [2, 2, 9]])
    yt = ref(torch.tensor(idx))
    y = net(idx)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL[np.float32])
    dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    (yt * _t(dy)).sum().backward()
    assert net.backward(dy) is None
    for p, tp in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **TOL[np.float32])


# ---- Embedding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_torch(dtype, padding_idx):
    torch.manual_seed(0)
    ref = torch.nn.Embedding(6, 3, padding_idx=padding_idx, dtype=_tdtype(dtype))
    m = nn.Embedding(6, 3, padding_idx=padding_idx, dtype=dtype, seed=0)
    assert m.padding_idx == ref.padding_idx
    if padding_idx is not None:
        assert np.all(m.weight.data[m.padding_idx] == 0)
    m.load_state_dict(ref.state_dict())
    idx = np.array([[0, 2, 5, 2], [5, 5, 1, 2]])  # repeated indices accumulate
    yt = ref(torch.tensor(idx))
    y = m(idx)
    assert y.shape == (2, 4, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y, yt.detach().numpy())
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    (yt * _t(dy)).sum().backward()
    assert m.backward(dy) is None
    np.testing.assert_allclose(m.weight.grad, ref.weight.grad.numpy(), **TOL[dtype])
    if padding_idx is not None:
        assert np.all(m.weight.grad[m.padding_idx] == 0)
    m.backward(dy)  # a second backward accumulates
    np.testing.assert_allclose(m.weight.grad, 2 * ref.weight.grad.numpy(), **TOL[dtype])


def test_embedding_init_is_standard_normal_and_reproducible():
    m = nn.Embedding(400, 50, padding_idx=3, seed=0)
    w = np.delete(m.weight.data, 3, axis=0)
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1.0) < 0.01  # 19950 draws: 5-sigma bounds ~0.035/0.025
    set_random_seed(7)
    a = nn.Embedding(20, 4).weight.data.copy()
    set_random_seed(7)
    np.testing.assert_array_equal(a, nn.Embedding(20, 4).weight.data)


def test_embedding_unbatched_and_scalar_indices():
    m = nn.Embedding(5, 2, dtype=np.float64, seed=0)
    np.testing.assert_array_equal(m(np.int64(3)), m.weight.data[3])
    m.backward(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(m.weight.grad[3], [1.0, 2.0])
    assert np.count_nonzero(m.weight.grad) == 2


def test_embedding_from_pretrained_and_errors():
    w = np.arange(12, dtype=np.float64).reshape(4, 3)
    ref = torch.nn.Embedding.from_pretrained(torch.tensor(w), freeze=True, padding_idx=1)
    m = nn.Embedding.from_pretrained(w, padding_idx=1)
    np.testing.assert_array_equal(m.weight.data, ref.weight.detach().numpy())
    assert m.weight.requires_grad is False and m.dtype == np.float64
    m(np.array([0, 1]))
    m.backward(np.ones((2, 3)))
    assert m.weight.grad is None  # frozen
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad
    e = nn.Embedding(4, 2, seed=0)
    with pytest.raises(TypeError, match="input: expected integer indices, got dtype float32"):
        e(np.zeros(3, np.float32))
    with pytest.raises(IndexError, match=r"input: expected indices in \[0, 4\) \(num_embeddings\), got values in \[0, 4\]"):
        e(np.array([0, 4]))
    with pytest.raises(ValueError, match=r"padding_idx: expected an int in \[-4, 4\) \(num_embeddings=4\), got 4"):
        nn.Embedding(4, 2, padding_idx=4)
    with pytest.raises(RuntimeError, match="Embedding.backward: call forward first"):
        nn.Embedding(4, 2).backward(np.zeros((1, 2), np.float32))
    e(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"d_output: expected shape \(2, 2\) = the output's shape, got \(2, 3\)"):
        e.backward(np.zeros((2, 3), np.float32))


# ---- Dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_training_zeroes_and_scales(dtype):
    p = 0.3
    d = nn.Dropout(p, seed=0)
    x = np.random.default_rng(0).uniform(1.0, 2.0, (200, 100)).astype(dtype)  # no zeros in x
    y = d(x)
    assert y.dtype == dtype and y.shape == x.shape
    dropped = y == 0
    # 20000 Bernoulli(0.3) draws: the fraction is within 0.3 +- 0.016 (5 sigma)
    assert abs(dropped.mean() - p) < 0.016
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), **TOL[dtype])
    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    dx = d.backward(g)
    np.testing.assert_allclose(dx, g * (y / x), **TOL[dtype])  # the same mask, the same scale
    # torch autograd of the same masked scaling gives the same gradient
    xt = _t(x, True)
    (xt * _t((~dropped).astype(dtype)) / (1 - p) * _t(g)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL[dtype])


def test_dropout_eval_p0_p1_inplace_and_reproducibility():
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    d = nn.Dropout(0.5, seed=0).eval()
    assert d(x) is x and d.backward(x) is x  # identity, as torch in eval mode
    assert nn.Dropout(0.0)(x) is x
    one = nn.Dropout(1.0)
    np.testing.assert_array_equal(one(x), np.zeros_like(x))
    np.testing.assert_array_equal(one.backward(np.ones_like(x)), np.zeros_like(x))
    xi = x.copy()
    out = nn.Dropout(0.5, inplace=True, seed=3)(xi)
    assert out is xi and np.all((xi == 0) | np.isclose(xi, 2 * x))
    set_random_seed(11)
    a = nn.Dropout(0.5)(x)
    set_random_seed(11)
    np.testing.assert_array_equal(a, nn.Dropout(0.5)(x))
    with pytest.raises(ValueError, match=r"p: expected a float in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match="input: expected a float32 or float64 array, got dtype int64"):
        nn.Dropout(0.5)(np.arange(3))
    with pytest.raises(RuntimeError, match="Dropout.backward: call forward first"):
        nn.Dropout(0.5).backward(x)
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


# ---- losses --------------------------------------------------------------------------------------

def _check_loss(ours, ref, x: np.ndarray, target: np.ndarray, dtype, target_tensor=None) -> None:
    """Value and input gradient of ``ours`` vs torch autograd of ``ref``; for reduction='none'
    the backward takes a random upstream gradient."""
    xt = _t(x, True)
    tt = torch.tensor(target) if target_tensor is None else target_tensor
    lt = ref(xt, tt)
    value = ours(x, target)
    assert value.shape == tuple(lt.shape) and value.dtype == dtype
    np.testing.assert_allclose(value, lt.detach().numpy(), **TOL[dtype])
    if ours.reduction == "none":
        g = np.random.default_rng(5).standard_normal(value.shape).astype(dtype)
        lt.backward(_t(g))
        dx = ours.backward(g)
    else:
        lt.backward()
        dx = ours.backward()
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6,), (4, 3), (2, 3, 4)])
def test_mse_loss_matches_torch(dtype, reduction, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    _check_loss(nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction), x, y, dtype)


def _ce_cases():
    cases = []
    for shape in [(5,), (6, 4), (3, 4, 2, 3)]:
        for kind in ["index", "ignored", "probs"]:
            for weighted in [False, True]:
                for ls in [0.0, 0.2]:
                    for reduction in ["mean", "sum", "none"]:
                        if shape == (5,) and kind == "ignored":
                            continue
                        cases.append((shape, kind, weighted, ls, reduction))
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kind,weighted,ls,reduction", _ce_cases())
def test_cross_entropy_loss_matches_torch(dtype, shape, kind, weighted, ls, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind, weighted, ls, reduction)).encode()))
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    cax = 0 if len(shape) == 1 else 1
    K = shape[cax]
    lead = shape[:cax] + shape[cax + 1:]
    ignore_index = -100
    if kind == "probs":
        target = rng.dirichlet(np.ones(K), size=lead).astype(dtype)
        target = np.moveaxis(target, -1, cax)
    else:
        target = rng.integers(0, K, size=lead)
        if kind == "ignored":
            ignore_index = 1  # a real class, ignored; plus some entries set to it
            target.flat[::3] = ignore_index
    weight = rng.uniform(0.2, 2.0, K).astype(dtype) if weighted else None
    ours = nn.CrossEntropyLoss(weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=ls)
    ref = torch.nn.CrossEntropyLoss(None if weight is None else _t(weight), ignore_index=ignore_index,
                                    reduction=reduction, label_smoothing=ls)
    _check_loss(ours, ref, x, target, dtype)


def test_cross_entropy_default_ignore_index_and_all_ignored():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    t = np.array([0, -100, 2, -100, 1])
    _check_loss(nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), x, t, np.float64)
    # every target ignored: torch's 0/0 = NaN and a zero gradient
    ours = nn.CrossEntropyLoss()
    value = ours(x, np.full(5, -100))
    assert np.isnan(value)
    np.testing.assert_array_equal(ours.backward(), np.zeros_like(x))
    xt = _t(x, True)
    lt = torch.nn.CrossEntropyLoss()(xt, torch.full((5,), -100))
    lt.backward()
    assert math.isnan(lt.item())
    np.testing.assert_array_equal(xt.grad.numpy(), np.zeros_like(x))


def test_cross_entropy_plain_case_is_keras_sparse_crossentropy():
    from rnnkit import losses

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    t = rng.integers(0, 5, 8)
    ours = nn.CrossEntropyLoss()
    value = ours(x, t)
    kv, kg = losses.SparseCategoricalCrossentropy(from_logits=True).value_and_grad(t, x)
    assert value == np.float32(kv)
    np.testing.assert_array_equal(ours.backward(), kg)
    np.testing.assert_allclose(ours.backward(np.float32(2.5)), 2.5 * kg, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,pos", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 4, 3)])
def test_bce_with_logits_matches_torch(dtype, reduction, weighted, pos, shape):
    rng = np.random.default_rng(1)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    y = rng.uniform(0, 1, shape).astype(dtype)
    y.flat[::2] = np.round(y.flat[::2])  # hard and soft targets
    weight = rng.uniform(0.5, 2.0, shape[-1:]).astype(dtype) if weighted else None
    pos_weight = rng.uniform(0.5, 4.0, shape[-1:]).astype(dtype) if pos else None
    ours = nn.BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pos_weight)
    ref = torch.nn.BCEWithLogitsLoss(None if weight is None else _t(weight), reduction=reduction,
                                     pos_weight=None if pos_weight is None else _t(pos_weight))
    _check_loss(ours, ref, x, y, dtype)


def test_loss_module_errors():
    ce = nn.CrossEntropyLoss()
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"target: expected class indices of shape \(4,\) \(the input's shape "
                       r"without the class axis\) or probabilities of the input's shape, got \(4, 1\)"):
        ce(x, np.zeros((4, 1), np.int64))
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 3\) or ignore_index=-100, "
                       r"got values in \[0, 3\]"):
        ce(x, np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="target: a target of the input's shape .* must be float, got dtype int64"):
        ce(x, np.zeros((4, 3), np.int64))
    with pytest.raises(TypeError, match="target: expected integer class indices"):
        ce(x, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"weight: expected shape \(3,\) \(one weight per class of input\), got \(2,\)"):
        nn.CrossEntropyLoss(np.ones(2))(x, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"reduction: expected one of \['mean', 'sum', 'none'\], got 'avg'"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing: expected a float in \[0, 1\], got 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"target: expected shape \(4, 3\) \(the input's shape\), got \(4,\)"):
        nn.MSELoss()(x, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"pos_weight: expected a shape that broadcasts to the input's \(4, 3\), got \(2,\)"):
        nn.BCEWithLogitsLoss(pos_weight=np.ones(2))(x, x)
    with pytest.raises(TypeError, match="input: expected a float32 or float64 array, got dtype int64"):
        nn.MSELoss()(np.zeros(3, np.int64), np.zeros(3))
    with pytest.raises(RuntimeError, match="MSELoss.backward: call forward first"):
        nn.MSELoss().backward()
    none = nn.MSELoss(reduction="none")
    none(x, x)
    with pytest.raises(ValueError, match=r"grad_output: expected an array of shape \(4, 3\) \(the loss's shape\) "
                       r"with reduction='none', got None"):
        none.backward()
    mean = nn.MSELoss()
    mean(x, x)
    with pytest.raises(ValueError, match=r"grad_output: expected a scalar .* got shape \(2,\)"):
        mean.backward(np.ones(2))


def test_loss_values_behave_like_torch_scalars():
    loss = nn.CrossEntropyLoss()(np.zeros((2, 4), np.float32), np.array([0, 3]))
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float32
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)
    assert f"{loss:.4f}" == "1.3863" and float(loss) == loss.item()


# ---- gradient clipping ---------------------------------------------------------------------------

def _grad_pair(dtype, seed=0, scale=3.0):
    """Parameters with gradients (one without) and torch tensors holding the same gradients."""
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    ours, ref = [], []
    for i, s in enumerate(shapes):
        p = nn.Parameter(np.zeros(s, dtype))
        t = torch.zeros(s, dtype=_tdtype(dtype), requires_grad=True)
        if i != 1:
            g = (scale * rng.standard_normal(s)).astype(dtype)
            p.grad = g.copy()
            t.grad = _t(g.copy())
        ours.append(p)
        ref.append(t)
    return ours, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5, math.inf, "inf", 0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    ours, ref = _grad_pair(dtype)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type=norm_type)
    assert total.shape == () and total.dtype == dtype
    np.testing.assert_allclose(total, t_total.numpy(), **TOL[dtype])
    for p, t in zip(ours, ref):
        if t.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), **TOL[dtype])


def test_clip_grad_norm_result_and_edge_cases():
    ours, _ = _grad_pair(np.float64)
    before = np.sqrt(sum(np.sum(p.grad ** 2) for p in ours if p.grad is not None))
    total = nn.utils.clip_grad_norm_(iter(ours), 1.0)
    assert total == pytest.approx(before, rel=1e-12)
    after = np.sqrt(sum(np.sum(p.grad ** 2) for p in ours if p.grad is not None))
    assert after == pytest.approx(1.0 / (1.0 + 1e-6 / before), rel=1e-12)  # max_norm * norm/(norm+1e-6)
    single = nn.Parameter(np.zeros(3))
    single.grad = np.array([3.0, 4.0, 0.0])
    assert nn.utils.clip_grad_norm_(single, 10.0) == pytest.approx(5.0, rel=1e-12)
    np.testing.assert_allclose(single.grad, [3.0, 4.0, 0.0], rtol=1e-12, atol=0)
    nothing = nn.utils.clip_grad_norm_([nn.Parameter(np.zeros(2))], 1.0)
    assert nothing == 0.0 and nothing.dtype == np.float32  # torch.tensor(0.)
    with pytest.warns(UserWarning, match="`parameters` is an empty generator, no gradient clipping will occur"):
        nn.utils.clip_grad_norm_((p for p in []), 1.0)
    bad = nn.Parameter(np.zeros(2))
    bad.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="The total norm of order 2.0 for gradients from `parameters` is non-finite"):
        nn.utils.clip_grad_norm_([bad], 1.0, error_if_nonfinite=True)
    t = torch.zeros(2, requires_grad=True)
    t.grad = torch.tensor([math.inf, 1.0])
    t_total = torch.nn.utils.clip_grad_norm_([t], 1.0)
    total = nn.utils.clip_grad_norm_([bad], 1.0)  # scaled by the non-finite norm, as torch
    assert math.isinf(total) and math.isinf(t_total.item())
    np.testing.assert_array_equal(np.isnan(bad.grad), np.isnan(t.grad.numpy()))
    with pytest.raises(TypeError, match=r"parameters\[0\]: expected a rnnkit.nn.Parameter, got ndarray"):
        nn.utils.clip_grad_norm_([np.zeros(2)], 1.0)
    with pytest.raises(ValueError, match="max_norm: expected a number >= 0, got -1.0"):
        nn.utils.clip_grad_norm_(ours, -1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_value_matches_torch(dtype):
    ours, ref = _grad_pair(dtype)
    assert nn.utils.clip_grad_value_(ours, 1.5) is None
    torch.nn.utils.clip_grad_value_(ref, 1.5)
    for p, t in zip(ours, ref):
        if t.grad is not None:
            np.testing.assert_array_equal(p.grad, t.grad.numpy())
            assert np.abs(p.grad).max() <= 1.5
    with pytest.raises(ValueError, match="clip_value: expected a number >= 0, got -0.1"):
        nn.utils.clip_grad_value_(ours, -0.1)


def test_get_total_norm_and_clip_grads_with_norm_match_torch():
    ours, ref = _grad_pair(np.float64, seed=3)
    grads = [p.grad for p in ours if p.grad is not None]
    total = nn.utils.get_total_norm(grads, 3.0)
    t_total = torch.nn.utils.get_total_norm([t.grad for t in ref if t.grad is not None], 3.0)
    np.testing.assert_allclose(total, t_total.numpy(), rtol=1e-12, atol=0)
    nn.utils.clip_grads_with_norm_(ours, 2.0, total)
    torch.nn.utils.clip_grads_with_norm_(ref, 2.0, t_total)
    for p, t in zip(ours, ref):
        if t.grad is not None:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---- padding and packing -------------------------------------------------------------------------

def _seqs(rng, lengths, feat=(3,), dtype=np.float32):
    return [rng.standard_normal((n,) + feat).astype(dtype) for n in lengths]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("feat", [(), (3,), (2, 2)])
def test_pad_sequence_matches_torch(batch_first, padding_side, feat):
    rng = np.random.default_rng(0)
    seqs = _seqs(rng, [3, 5, 1, 5], feat)
    got = rnn_utils.pad_sequence(seqs, batch_first=batch_first, padding_value=-1.5, padding_side=padding_side)
    want = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=batch_first,
                                           padding_value=-1.5, padding_side=padding_side)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want.numpy())


def test_pad_sequence_integer_tokens_and_errors():
    seqs = [np.array([4, 5, 6]), np.array([7])]
    got = rnn_utils.pad_sequence(seqs, batch_first=True)
    np.testing.assert_array_equal(got, [[4, 5, 6], [7, 0, 0]])
    assert got.dtype == seqs[0].dtype
    np.testing.assert_array_equal(got, torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(s) for s in seqs], batch_first=True).numpy())
    with pytest.raises(ValueError, match=r"sequences\[1\]: expected shape \(L, 3\) \(the trailing shape of "
                       r"sequences\[0\]\), got \(2, 4\)"):
        rnn_utils.pad_sequence([np.zeros((1, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="sequences: expected at least one sequence, got none"):
        rnn_utils.pad_sequence([])
    with pytest.raises(ValueError, match="padding_side: expected 'right' or 'left', got 'top'"):
        rnn_utils.pad_sequence(seqs, padding_side="top")


def _assert_packed_equal(ours, ref):
    np.testing.assert_array_equal(ours.data, ref.data.numpy())
    np.testing.assert_array_equal(ours.batch_sizes, ref.batch_sizes.numpy())
    for a, b in ((ours.sorted_indices, ref.sorted_indices), (ours.unsorted_indices, ref.unsorted_indices)):
        if b is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths,enforce_sorted", [([5, 4, 4, 2, 1], True), ([2, 5, 1, 4, 4], False),
                                                    ([3, 3, 3, 3, 3], True), ([1, 3, 3, 2, 3], False)])
def test_pack_and_pad_packed_round_trip_match_torch(batch_first, lengths, enforce_sorted):
    rng = np.random.default_rng(2)
    T = 6  # longer than every length: trailing padding is dropped
    x = rng.standard_normal((5, T, 3) if batch_first else (T, 5, 3))
    packed = rnn_utils.pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    t_packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=batch_first,
                                                       enforce_sorted=enforce_sorted)
    assert isinstance(packed, rnn_utils.PackedSequence) and packed._fields == t_packed._fields
    _assert_packed_equal(packed, t_packed)
    for total_length in (None, 7):
        padded, lens = rnn_utils.pad_packed_sequence(packed, batch_first=batch_first, padding_value=9.0,
                                                     total_length=total_length)
        t_padded, t_lens = torch.nn.utils.rnn.pad_packed_sequence(t_packed, batch_first=batch_first,
                                                                  padding_value=9.0, total_length=total_length)
        np.testing.assert_array_equal(padded, t_padded.numpy())
        np.testing.assert_array_equal(lens, t_lens.numpy())
        assert lens.dtype == np.int64
    # the round trip restores every valid step
    xb = x if batch_first else x.transpose(1, 0, 2)
    padded, lens = rnn_utils.pad_packed_sequence(packed, batch_first=True)
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(padded[i, :n], xb[i, :n])
        assert np.all(padded[i, n:] == 0)


def test_pack_sequence_unpad_and_unpack_match_torch():
    rng = np.random.default_rng(4)
    seqs = _seqs(rng, [2, 4, 3], (2,), np.float64)
    t_seqs = [torch.tensor(s) for s in seqs]
    packed = rnn_utils.pack_sequence(seqs, enforce_sorted=False)
    _assert_packed_equal(packed, torch.nn.utils.rnn.pack_sequence(t_seqs, enforce_sorted=False))
    for a, b in zip(rnn_utils.unpack_sequence(packed), seqs):
        np.testing.assert_array_equal(a, b)
    padded = rnn_utils.pad_sequence(seqs)
    got = rnn_utils.unpad_sequence(padded, np.array([2, 4, 3]))
    want = torch.nn.utils.rnn.unpad_sequence(torch.tensor(padded), torch.tensor([2, 4, 3]))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b.numpy())


def test_pack_padded_sequence_errors():
    x = np.zeros((4, 3, 2))
    with pytest.raises(ValueError, match=r"lengths: expected decreasing values with enforce_sorted=True, got \[1, 3, 2\]"):
        rnn_utils.pack_padded_sequence(x, [1, 3, 2])
    with pytest.raises(ValueError, match=r"lengths: expected values in \[1, 4\] .* got min 0, max 3"):
        rnn_utils.pack_padded_sequence(x, [3, 2, 0])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\) \(one length per sequence of the batch\), got \(2,\)"):
        rnn_utils.pack_padded_sequence(x, [3, 2])
    with pytest.raises(TypeError, match="lengths: expected integers, got dtype float64"):
        rnn_utils.pack_padded_sequence(x, np.array([3.0, 2.0, 1.0]))
    packed = rnn_utils.pack_padded_sequence(x, [4, 2, 1])
    with pytest.raises(ValueError, match=r"total_length: expected an int >= 4 \(the longest sequence\), got 3"):
        rnn_utils.pad_packed_sequence(packed, total_length=3)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_recipe_gives_torch_packed_lstm_results(bidirectional):
    """PyTorch runs the LSTM on the packed batch; rnnkit unpacks and passes lengths=."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=bidirectional, dtype=torch.float64)
    lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=bidirectional, dtype=np.float64)
    lstm.load_state_dict(ref.state_dict())
    rng = np.random.default_rng(0)
    seqs = _seqs(rng, [3, 5, 2, 4], (3,), np.float64)
    packed = rnn_utils.pack_sequence(seqs, enforce_sorted=False)
    t_out, (t_h, t_c) = ref(torch.nn.utils.rnn.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False))
    t_padded, t_lens = torch.nn.utils.rnn.pad_packed_sequence(t_out, batch_first=True)

    padded, lengths = rnn_utils.pad_packed_sequence(packed, batch_first=True)
    output, (h_n, c_n) = lstm(padded, lengths=lengths)

    np.testing.assert_array_equal(lengths, t_lens.numpy())
    np.testing.assert_allclose(output, t_padded.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(h_n, t_h.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(c_n, t_c.detach().numpy(), rtol=1e-10, atol=1e-10)


# ---- a PyTorch training loop ---------------------------------------------------------------------

def _first_token_task(n=64, t=6, vocab=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, t))
    return x, x[:, 0] % classes  # the label is decided by the first token: the LSTM must remember it


def test_pytorch_training_loop_runs_unchanged_apart_from_the_backward_chain():
    from rnnkit import optim

    x, y = _first_token_task()
    set_random_seed(0)
    emb, lstm, head = nn.Embedding(8, 8), nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 4)
    params = [p for m in (emb, lstm, head) for p in m.parameters()]
    opt, loss_fn = optim.Adam(params, lr=0.02), nn.CrossEntropyLoss()
    losses = []
    for step in range(100):
        opt.zero_grad()
        out, _ = lstm(emb(x))
        logits = head(out[:, -1])
        loss = loss_fn(logits, y)
        d = loss_fn.backward(); d = head.backward(d)        # loss.backward(), as an explicit chain
        d_out = np.zeros_like(out); d_out[:, -1] = d
        d, _ = lstm.backward(d_out); emb.backward(d)
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(4), abs=0.15)  # chance level at the start
    assert np.mean(losses[-10:]) < 0.5 * losses[0]
    lstm.eval()
    out, _ = lstm(emb(x))
    accuracy = np.mean(np.argmax(head(out[:, -1]), axis=-1) == y)
    assert accuracy > 0.9  # chance is 0.25


def test_the_same_loop_matches_torch_step_for_step():
    """Three SGD steps of the loop above in rnnkit and in torch from the same weights: the
    losses and the weights after the steps agree (float64)."""
    x, y = _first_token_task(n=16, seed=1)
    torch.manual_seed(0)
    t_emb, t_lstm, t_head = (torch.nn.Embedding(8, 8, dtype=torch.float64),
                             torch.nn.LSTM(8, 16, batch_first=True, dtype=torch.float64),
                             torch.nn.Linear(16, 4, dtype=torch.float64))
    emb, lstm, head = (nn.Embedding(8, 8, dtype=np.float64), nn.LSTM(8, 16, batch_first=True, dtype=np.float64),
                       nn.Linear(16, 4, dtype=np.float64))
    for m, tm in ((emb, t_emb), (lstm, t_lstm), (head, t_head)):
        m.load_state_dict(tm.state_dict())
    params = [p for m in (emb, lstm, head) for p in m.parameters()]
    t_params = [p for m in (t_emb, t_lstm, t_head) for p in m.parameters()]
    loss_fn, t_loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1), torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for step in range(3):
        for p in t_params: p.grad = None
        t_out, _ = t_lstm(t_emb(xt))
        t_loss = t_loss_fn(t_head(t_out[:, -1]), yt)
        t_loss.backward()
        torch.nn.utils.clip_grad_norm_(t_params, 1.0)
        with torch.no_grad():
            for p in t_params: p -= 0.5 * p.grad

        for p in params: p.grad = None
        out, _ = lstm(emb(x))
        loss = loss_fn(head(out[:, -1]), y)
        d = head.backward(loss_fn.backward())
        d_out = np.zeros_like(out); d_out[:, -1] = d
        emb.backward(lstm.backward(d_out)[0])
        nn.utils.clip_grad_norm_(params, 1.0)
        for p in params: p.data -= 0.5 * p.grad
        assert loss.item() == pytest.approx(t_loss.item(), rel=1e-10)
    for p, tp in zip(params, t_params):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-9, atol=1e-9)
