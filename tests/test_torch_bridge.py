"""rnnkit.torch: torch.nn.LSTM/GRU/RNN on rnnkit's kernels, with autograd.

Checked against torch.nn on the same weights (outputs, final states and every gradient, float32
to 1e-5 and float64 to 1e-10), against finite differences (torch.autograd.gradcheck, float64),
and for torch's conventions: packed sequences, dropout drawn from torch's generator, state_dict,
convert/revert, errors.
"""
from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from typing import Any, Dict, List, Optional, Tuple

import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("rnnkit.torch")
if not hasattr(rt, "convert"):  # pragma: no cover - an environment problem, not a test
    pytest.fail("rnnkit.torch imported as an empty namespace package: the editable install was made "
                "before src/python/rnnkit/torch/__init__.py existed; reinstall it", pytrace=False)

from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    # torch.nn.LSTM(proj_size) in float32 warns that oneDNN has no projection path
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning"),
]

C, H, P, T, N = 4, 5, 3, 5, 3
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
KINDS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "lstm": ("LSTM", {}),
    "lstmp": ("LSTM", {"proj_size": P}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}
MODES = ("batched", "hx", "unbatched", "packed_sorted", "packed_unsorted")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _pair(kind: str, dtype, seed: int = 0, **cfg):
    """A torch.nn module and the rnnkit.torch module with the same weights."""
    cls, extra = KINDS[kind]
    torch.manual_seed(seed)
    tm = getattr(torch.nn, cls)(C, H, dtype=dtype, **extra, **cfg)
    rm = getattr(rt, cls)(C, H, dtype=dtype, **extra, **cfg)
    rm.load_state_dict(tm.state_dict())
    return tm, rm


def _widths(m) -> Tuple[int, int, int]:
    D = 2 if m.bidirectional else 1
    return D * m.num_layers, (m.proj_size or m.hidden_size), D


def _inputs(m, mode: str, dtype, seed: int = 1) -> Dict[str, Any]:
    """Leaf tensors for one call: x (padded or unbatched), hx (or None), packed lengths."""
    g = torch.Generator().manual_seed(seed)
    DL, Hs, _ = _widths(m)
    lstm = isinstance(m, torch.nn.LSTM)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    if mode == "unbatched":
        x = r(T, C)
        hx = (r(DL, Hs), r(DL, H)) if lstm else r(DL, H)
        return dict(x=x, hx=hx, lengths=None, sorted=True)
    x = r(N, T, C) if m.batch_first else r(T, N, C)
    hx = None
    if mode != "batched" and mode != "packed_sorted":
        hx = (r(DL, N, Hs), r(DL, N, H)) if lstm else r(DL, N, H)
    lengths = {"packed_sorted": [5, 3, 2], "packed_unsorted": [2, 5, 3], "packed_equal": [5, 5, 5]}.get(mode)
    return dict(x=x, hx=hx, lengths=lengths, sorted=mode == "packed_sorted")


def _run(m, inp: Dict[str, Any], weights_seed: int = 2) -> List[Optional[Any]]:
    """Forward and backward of a fixed weighted sum of every output; returns the outputs, the
    final states, and the gradients of the input, the initial states and every parameter."""
    x, hx = inp["x"], inp["hx"]
    for t in [x, *(hx if isinstance(hx, tuple) else [hx])]:
        if t is not None:
            t.grad = None
    m.zero_grad()
    arg = x
    if inp["lengths"] is not None:
        arg = pack_padded_sequence(x, torch.tensor(inp["lengths"]), batch_first=m.batch_first,
                                   enforce_sorted=inp["sorted"])
    out, h = m(arg, hx)
    states = list(h) if isinstance(h, tuple) else [h]
    y = out.data if isinstance(out, PackedSequence) else out
    g = torch.Generator().manual_seed(weights_seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [y, *states])
    loss.backward()
    grads = [x.grad] + [s.grad for s in (hx if isinstance(hx, tuple) else [hx]) if s is not None]
    res = [y, *states, *grads, *(p.grad for p in m.parameters())]
    if isinstance(out, PackedSequence):
        res += [out.batch_sizes, out.sorted_indices, out.unsorted_indices]
    return res


def _compare(a: List[Any], b: List[Any], dtype) -> float:
    assert len(a) == len(b)
    worst = 0.0
    for i, (u, v) in enumerate(zip(a, b)):
        if v is None:
            assert u is None, i
            continue
        assert u is not None, i
        assert u.shape == v.shape and u.dtype == v.dtype, (i, u.shape, v.shape, u.dtype, v.dtype)
        if u.is_floating_point():
            torch.testing.assert_close(u, v, **TOL[dtype], msg=lambda s: f"item {i}: {s}")
            worst = max(worst, float((u - v).detach().abs().max()))
        else:
            assert torch.equal(u, v), i
    return worst


def parity(kind: str, dtype, mode: str, **cfg) -> float:
    """Max abs difference between torch.nn and rnnkit.torch (asserting the tolerances)."""
    tm, rm = _pair(kind, dtype, **cfg)
    ref = _run(tm, _inputs(tm, mode, dtype))
    got = _run(rm, _inputs(rm, mode, dtype))
    return _compare(got, ref, dtype)


# ---- the modules are torch's -------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_same_module_as_torch(kind):
    cls, extra = KINDS[kind]
    cfg = dict(num_layers=2, bidirectional=True, bias=False, batch_first=True, dropout=0.25, **extra)
    torch.manual_seed(3)
    tm = getattr(torch.nn, cls)(C, H, **cfg)
    torch.manual_seed(3)
    rm = getattr(rt, cls)(C, H, **cfg)
    assert isinstance(rm, getattr(torch.nn, cls)) and type(rm) is not type(tm)
    assert repr(rm) == repr(tm)
    tsd, rsd = tm.state_dict(), rm.state_dict()
    assert list(tsd) == list(rsd)
    assert all(torch.equal(tsd[k], rsd[k]) for k in tsd)      # same init from the same seed
    assert [n for n, _ in rm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [[p.shape for p in ws] for ws in rm.all_weights] == [[p.shape for p in ws] for ws in tm.all_weights]
    assert len(rm._flat_weights) == len(tm._flat_weights)
    rm.flatten_parameters()
    rm.double()
    assert all(p.dtype == torch.float64 for p in rm.parameters())
    out, _ = rm.eval()(torch.randn(2, 3, C, dtype=torch.float64))
    assert out.dtype == torch.float64


# ---- parity with torch.nn ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers_dirs", [(1, False), (1, True), (2, False), (2, True)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_with_torch(kind, dtype, layers_dirs, mode):
    L, bidir = layers_dirs
    # batch_first and bias alternate over the grid so each value meets every other argument
    k = list(KINDS).index(kind) + MODES.index(mode) + L + bidir
    parity(kind, dtype, mode, num_layers=L, bidirectional=bidir, batch_first=k % 2 == 0, bias=k % 3 != 0)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_batch_first_and_bias(kind, batch_first, bias):
    for mode in ("hx", "packed_unsorted", "packed_equal"):  # packed_equal: no mask, a view of the data
        parity(kind, torch.float64, mode, num_layers=2, bidirectional=True, batch_first=batch_first, bias=bias)


def test_parity_no_grad_and_inference_mode():
    tm, rm = _pair("lstmp", torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, N, C)
    with torch.no_grad():
        ref = tm(x)
        got = rm(x)
    torch.testing.assert_close(got[0], ref[0], **TOL[torch.float32])
    with torch.inference_mode():
        got2 = rm(x)
    torch.testing.assert_close(got2[1][1], ref[1][1], **TOL[torch.float32])


def test_input_not_requiring_grad_skips_dx():
    tm, rm = _pair("gru", torch.float64, num_layers=2, bidirectional=True)
    ref, got = [], []
    for m, res in ((tm, ref), (rm, got)):
        x = torch.randn(T, N, C, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        h0 = torch.zeros(4, N, H, dtype=torch.float64, requires_grad=True)
        out, h = m(x, h0)
        (out.sum() + h.pow(2).sum()).backward()
        res += [x.grad, h0.grad, *(p.grad for p in m.parameters())]
    assert got[0] is None
    _compare(got, ref, torch.float64)


def test_functional_call_and_retain_graph():
    tm, rm = _pair("lstm", torch.float64, num_layers=2)
    params = {n: p.detach().clone().requires_grad_() for n, p in rm.named_parameters()}
    x = torch.randn(T, N, C, dtype=torch.float64)
    out, _ = torch.func.functional_call(rm, params, (x,))
    ref, _ = tm(x)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    out.sum().backward(retain_graph=True)
    once = params["weight_hh_l1"].grad.clone()
    out.sum().backward()
    torch.testing.assert_close(params["weight_hh_l1"].grad, 2 * once)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()


# ---- finite differences --------------------------------------------------------------------------

def _gradcheck(m, T_: int = 4, N_: int = 2, packed: Optional[List[int]] = None, hx: bool = True) -> None:
    m = m.double()
    names = [n for n, _ in m.named_parameters()]
    DL, Hs, _ = _widths(m)
    lstm = isinstance(m, torch.nn.LSTM)
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return (0.5 * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    x = r(T_, N_, C)
    states = ([r(DL, N_, Hs), r(DL, N_, H)] if lstm else [r(DL, N_, H)]) if hx else []
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    ns = len(states)

    def f(x, *rest):
        st, ps = rest[:ns], rest[ns:]
        h = None if not st else (tuple(st) if lstm else st[0])
        arg = x if packed is None else pack_padded_sequence(x, torch.tensor(packed), enforce_sorted=False)
        out, hn = torch.func.functional_call(m, dict(zip(names, ps)), (arg, h))
        y = out.data if isinstance(out, PackedSequence) else out
        return (y, *(hn if lstm else (hn,)))

    # nondet_tol: the kernels' float64 results move by ~1 ulp with the buffers' address alignment
    assert torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-6, rtol=1e-5, nondet_tol=1e-12)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck(kind):
    cls, extra = KINDS[kind]
    _gradcheck(getattr(rt, cls)(C, H, num_layers=2, bidirectional=True, **extra))


@pytest.mark.parametrize("kind", ["lstmp", "gru", "rnn_tanh"])
def test_gradcheck_packed(kind):
    cls, extra = KINDS[kind]
    _gradcheck(getattr(rt, cls)(C, H, num_layers=2, bidirectional=True, **extra), T_=4, N_=3, packed=[2, 4, 3])


def test_gradcheck_no_bias_no_hx():
    _gradcheck(rt.GRU(C, H, bias=False, bidirectional=True), hx=False)


# ---- dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "lstmp", "gru", "rnn_relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["hx", "packed_unsorted"])
def test_dropout_masks_are_torchs(kind, dtype, mode):
    """Same seed, same masks: train-mode outputs and gradients equal torch.nn's."""
    tm, rm = _pair(kind, dtype, num_layers=3, bidirectional=True, dropout=0.4)
    res = []
    for m in (tm, rm):
        torch.manual_seed(7)
        res.append(_run(m, _inputs(m, mode, dtype)))
        torch.manual_seed(8)
        res[-1] += _run(m, _inputs(m, mode, dtype))[:1]
    _compare(res[1], res[0], dtype)
    assert not torch.equal(res[1][0], res[1][-1])  # another seed, other masks


def test_dropout_manual_reference_and_eval():
    """Train mode = the layers run one by one with the masks torch.nn's dropout draws; eval = none."""
    torch.manual_seed(0)
    m = rt.GRU(C, H, num_layers=2, dropout=0.5, dtype=torch.float64)
    l0, l1 = rt.GRU(C, H, dtype=torch.float64), rt.GRU(H, H, dtype=torch.float64)
    sd = m.state_dict()
    l0.load_state_dict({k: v for k, v in sd.items() if k.endswith("_l0")})
    l1.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if k.endswith("_l1")})
    x = torch.randn(T, N, C, dtype=torch.float64)
    torch.manual_seed(5)
    y, h = m(x)
    torch.manual_seed(5)
    y0, h0 = l0(x)
    mask = torch.empty_like(y0).bernoulli_(0.5)
    assert 0 < int(mask.sum()) < mask.numel()
    y1, h1 = l1(y0 * mask / 0.5)
    torch.testing.assert_close(y, y1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, torch.cat([h0, h1]), rtol=1e-12, atol=1e-12)
    m.eval()
    ye, _ = m(x)
    torch.testing.assert_close(ye, l1(l0(x)[0])[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m(x)[0], ye, rtol=1e-15, atol=1e-15)  # no randomness in eval


# ---- no copies, torch's bookkeeping ----------------------------------------------------------------

def test_input_and_weights_are_shared_not_copied():
    m = rt.LSTM(C, H, num_layers=2)
    x = torch.randn(T, N, C, requires_grad=True)
    ptrs: List[int] = []

    def pack(t):
        ptrs.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = m(x)
    # each is saved as an input and again as the kernels' cache's view of the same memory
    assert ptrs.count(x.data_ptr()) == 2
    assert ptrs.count(m.weight_hh_l1.data_ptr()) == 2
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_inplace_change_before_backward_is_caught():
    m = rt.GRU(C, H)
    x = torch.randn(T, N, C, requires_grad=True)
    xx = x * 1.0
    out, _ = m(xx)
    xx.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


# ---- convert / revert ----------------------------------------------------------------------------

class Tagger(torch.nn.Module):
    """embedding -> 2-layer bidirectional GRU -> linear, per-step logits."""

    def __init__(self, vocab: int = 50, emb: int = 8, hidden: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, emb)
        self.gru = torch.nn.GRU(emb, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * hidden, classes)

    def forward(self, tokens):
        out, _ = self.gru(self.emb(tokens))
        return self.head(out)


def test_convert_same_outputs_gradients_state_dict():
    torch.manual_seed(0)
    model = Tagger().eval()
    fast = rt.convert(model)
    assert type(model.gru) is torch.nn.GRU                     # the original is untouched
    assert type(fast.gru) is rt.GRU and not fast.gru.training and fast.head is not model.head
    sd, fsd = model.state_dict(), fast.state_dict()
    assert list(sd) == list(fsd) and all(torch.equal(sd[k], fsd[k]) for k in sd)
    tokens = torch.randint(0, 50, (6, 7), generator=torch.Generator().manual_seed(1))
    labels = tokens % 5
    res = []
    for m in (model, fast):
        m.zero_grad()
        logits = m(tokens)
        torch.nn.functional.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1)).backward()
        res.append([logits, *(p.grad for p in m.parameters())])
    _compare(res[1], res[0], torch.float32)
    back = rt.revert(fast)
    assert type(back.gru) is torch.nn.GRU and type(fast.gru) is rt.GRU
    torch.testing.assert_close(back(tokens), res[0][0], **TOL[torch.float32])


def test_convert_nested_shared_inplace_and_optimizer():
    shared = torch.nn.LSTM(C, H)
    model = torch.nn.Sequential(
        torch.nn.ModuleList([shared, torch.nn.RNN(C, H, nonlinearity="relu")]),
        torch.nn.ModuleDict({"a": torch.nn.GRU(C, H, dtype=torch.float64), "b": shared}),
    ).train()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    out = rt.convert(model, inplace=True)
    assert out is model and list(model.parameters()) == params and all(a is b for a, b in zip(model.parameters(), params))
    assert model[0][0] is model[1]["b"] and type(model[1]["b"]) is rt.LSTM
    assert type(model[0][1]) is rt.RNN and model[0][1].nonlinearity == "relu"
    assert type(model[1]["a"]) is rt.GRU and model[1]["a"].weight_ih_l0.dtype == torch.float64
    assert model[1]["a"].training
    before = model[1]["a"].weight_hh_l0.detach().clone()
    model[1]["a"](torch.randn(T, N, C, dtype=torch.float64))[0].sum().backward()
    opt.step()                                   # the optimizer still holds the module's parameters
    assert not torch.equal(before, model[1]["a"].weight_hh_l0)
    assert type(rt.convert(torch.nn.LSTM(C, H))) is rt.LSTM      # a bare module
    assert rt.revert(model, inplace=True) is model and type(model[1]["b"]) is torch.nn.LSTM


def test_convert_leaves_subclasses_alone():
    class MyLSTM(torch.nn.LSTM):
        pass

    model = torch.nn.Sequential(MyLSTM(C, H))
    assert type(rt.convert(model)[0]) is MyLSTM


def test_adam_trains_converted_model():
    torch.manual_seed(0)
    model = rt.convert(Tagger())
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 50, (16, 8), generator=g)
    labels = torch.roll(tokens, 1, dims=1) % 5                 # needs the previous token
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 5), labels.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], losses[::8]


# ---- errors ----------------------------------------------------------------------------------------

def test_errors_input():
    m = rt.LSTM(C, H)
    with pytest.raises(TypeError, match=r"input: expected dtype torch.float32 or torch.float64, got torch.float16"):
        m(torch.randn(T, N, C).half())
    with pytest.raises(TypeError, match=r"input: expected dtype torch.float32 or torch.float64, got torch.int64"):
        m(torch.ones(T, N, C, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"input: expected dtype torch.float32 \(the dtype of"):
        m(torch.randn(T, N, C, dtype=torch.float64))
    with pytest.raises(TypeError, match="input: expected a torch.Tensor, got ndarray"):
        m(torch.randn(T, N, C).numpy())
    with pytest.raises(ValueError, match="input: rnnkit.torch runs on the CPU only, got a tensor on meta"):
        m(torch.empty(T, N, C, device="meta"))
    with pytest.raises(ValueError, match=r"input: expected 4 features \(input_size\).*got shape \(5, 3, 7\)"):
        m(torch.randn(T, N, 7))
    with pytest.raises(ValueError, match=r"input: expected 3 dimensions"):
        m(torch.randn(1, T, N, C))
    with pytest.raises(ValueError, match=r"input: every dimension must be at least 1"):
        m(torch.randn(0, N, C))


def test_errors_states_and_parameters():
    m = rt.LSTM(C, H, num_layers=2, proj_size=P)
    x = torch.randn(T, N, C)
    with pytest.raises(TypeError, match=r"hx: expected a tuple \(h_0, c_0\) of tensors for LSTM, got Tensor"):
        m(x, torch.zeros(2, N, H))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h_0\): expected shape \(2, 3, 3\) = \(D\*num_layers, N, proj_size\), got \(2, 3, 5\)"):
        m(x, (torch.zeros(2, N, H), torch.zeros(2, N, H)))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c_0\): expected shape \(2, 5\) .* for unbatched input, got \(2, 1, 5\)"):
        m(torch.randn(T, C), (torch.zeros(2, P), torch.zeros(2, 1, H)))
    with pytest.raises(TypeError, match=r"hx: expected a tensor h_0 for GRU, got tuple"):
        rt.GRU(C, H)(x, (torch.zeros(1, N, H),))
    with pytest.raises(TypeError, match=r"hx: expected dtype torch.float32"):
        rt.GRU(C, H)(x, torch.zeros(1, N, H, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"weight_ih_l0: expected dtype torch.float32 or torch.float64, got torch.bfloat16"):
        rt.GRU(C, H).bfloat16()(x.bfloat16())
    g = rt.GRU(C, H)
    g.weight_hh_l0.data = g.weight_hh_l0.data.double()
    with pytest.raises(TypeError, match=r"weight_hh_l0: expected dtype torch.float32 \(the dtype of weight_ih_l0\)"):
        g(x)


def test_error_double_backward():
    m = rt.GRU(C, H, dtype=torch.float64)
    x = torch.randn(T, N, C, dtype=torch.float64, requires_grad=True)
    out, _ = m(x)
    gx, = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    ref = torch.nn.GRU(C, H, dtype=torch.float64)
    ref.load_state_dict(m.state_dict())
    gref, = torch.autograd.grad(ref(x)[0].pow(2).sum(), x)
    torch.testing.assert_close(gx, gref, **TOL[torch.float64])   # first order still right
    with pytest.raises(RuntimeError, match="rnnkit.torch.GRU: double backward is not supported"):
        gx.sum().backward()


def test_errors_convert():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module, got str"):
        rt.convert("model")
    with pytest.raises(TypeError, match="inplace: expected a bool, got int"):
        rt.convert(torch.nn.GRU(C, H), inplace=1)
    half = torch.nn.Sequential(torch.nn.Linear(C, C), torch.nn.GRU(C, H)).half()
    with pytest.raises(TypeError, match=r"1.weight_ih_l0: expected dtype torch.float32 or torch.float64, got torch.float16"):
        rt.convert(half, inplace=True)
    assert type(half[1]) is torch.nn.GRU                      # nothing changed


# ---- import --------------------------------------------------------------------------------------

def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_import_rnnkit_does_not_import_torch_and_clear_error_without_torch():
    r = _python("""
        import sys
        import rnnkit, rnnkit.nn, rnnkit.functional, rnnkit.layers, rnnkit.models, rnnkit.interop
        assert "torch" not in sys.modules, "import rnnkit imported torch"
        sys.modules["torch"] = None          # as if torch were not installed
        try:
            import rnnkit.torch
        except ImportError as e:
            print("ImportError:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "ImportError: rnnkit.torch needs PyTorch" in r.stdout and "pip install" in r.stdout
