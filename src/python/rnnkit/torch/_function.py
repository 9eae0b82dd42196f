r"""The autograd Function of :mod:`rnnkit.torch`: a whole multi-layer (bidirectional) recurrent
stack, forward and backward on rnnkit's kernels, one node in torch's autograd graph.

Tensors cross to NumPy and back **without copies**: a CPU tensor's ``.detach().numpy()`` is a
view of its memory, and ``torch.from_numpy`` wraps a kernel's output array (the tensor keeps the
array, and so the buffer, alive). The one copy the kernels make is of a non-contiguous input
(``batch_first`` input is a transposed view: it is made time-major once, as ``.contiguous()``).

What the backward needs (the kernels' caches: the states and gates of every layer and direction)
is handed to ``ctx.save_for_backward`` as tensors wrapping the cache arrays, so torch owns its
lifetime: it is freed as soon as the backward has run (unless ``retain_graph=True``), a second
backward raises torch's own "backward through the graph a second time" error, and in-place
changes of the saved inputs (``x``, ``h_0``, the weights) between forward and backward raise
torch's version-counter error.

Shapes
------
Time-major throughout: ``x: [T, N, C]``, ``h0: [L*D, N, Hs]``, ``c0: [L*D, N, H]`` (``Hs = P``
with an LSTM projection, else ``H``), per-layer dropout scales ``[T, N, D*Hs]``, ``mask: [T, N]``
-> ``y: [T, N, D*Hs]``, ``h_n`` like ``h0``, ``c_n`` like ``c0``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from rnnkit import _recurrent

Array = np.ndarray


class StackSpec(NamedTuple):
    """What a call of :class:`StackFunction` runs (everything that is not a tensor).

    ``keys`` are the rnnkit weight keys of one layer-direction in PyTorch's parameter order
    (``w_ih, w_hh[, b_ih, b_hh][, w_hr]``).
    """
    kind: str                  # "LSTM", "GRU", "RNN" (messages)
    cell: str                  # "lstm", "gru", "rnn"
    activation: str            # "tanh" or "relu" (RNN)
    num_layers: int
    num_directions: int
    keys: Tuple[str, ...]
    mask: Optional[Array]      # [T, N] bool (packed input), or None = every step valid
    n_drops: int               # dropout scales passed (num_layers - 1 in training, else 0)


def _np(t: Optional[torch.Tensor]) -> Optional[Array]:
    """A view of a CPU tensor's memory as a NumPy array (no copy; detached)."""
    return None if t is None else t.detach().numpy()


# ---- the caches as saved tensors ---------------------------------------------------------------

class _Slot(NamedTuple):
    index: int


_LEAVES = (type(None), bool, int, float, str)
_FIELDS: Dict[type, Tuple[str, ...]] = {}


def _init_fields(tp: type) -> Tuple[str, ...]:
    """The constructor fields of a dataclass type (``()`` for anything else), cached per type."""
    names = _FIELDS.get(tp)
    if names is None:
        names = _FIELDS[tp] = tuple(f.name for f in dataclasses.fields(tp) if f.init) \
            if dataclasses.is_dataclass(tp) else ()
    return names


def _stash(obj: Any, arrays: List[Array], seen: Dict[int, int]) -> Any:
    """``obj`` (a cache: dataclasses, named tuples, lists and tuples of arrays) with every array
    replaced by a :class:`_Slot` into ``arrays`` (each array once)."""
    tp = type(obj)
    if tp is np.ndarray:
        i = seen.get(id(obj))
        if i is None:
            i = seen[id(obj)] = len(arrays)
            arrays.append(obj)
        return _Slot(i)
    if tp in _LEAVES:
        return obj
    if tp is list or tp is tuple:
        return tp(_stash(v, arrays, seen) for v in obj)
    names = _init_fields(tp)
    if names:
        return tp(**{n: _stash(getattr(obj, n), arrays, seen) for n in names})
    if isinstance(obj, tuple) and hasattr(tp, "_fields"):  # a named tuple
        return tp(*(_stash(v, arrays, seen) for v in obj))
    if isinstance(obj, np.ndarray):  # pragma: no cover - caches hold plain arrays
        raise TypeError(f"cannot keep an array subclass {tp.__name__} for the backward")
    return obj


def _unstash(obj: Any, arrays: Sequence[Array]) -> Any:
    """The inverse of :func:`_stash`."""
    tp = type(obj)
    if tp is _Slot:
        return arrays[obj.index]
    if tp in _LEAVES:
        return obj
    if tp is list or tp is tuple:
        return tp(_unstash(v, arrays) for v in obj)
    names = _init_fields(tp)
    if names:
        return tp(**{n: _unstash(getattr(obj, n), arrays) for n in names})
    if isinstance(obj, tuple) and hasattr(tp, "_fields"):
        return tp(*(_unstash(v, arrays) for v in obj))
    return obj


def _as_tensor(a: Array) -> torch.Tensor:
    if not a.flags.writeable:  # from_numpy warns on read-only arrays; nobody writes to these
        a = a.copy()
    return torch.from_numpy(a)


# ---- double backward ------------------------------------------------------------------------------

class _NoDoubleBackward(torch.autograd.Function):
    """Wraps gradients computed by the kernels when the backward itself is being recorded
    (``create_graph=True``): differentiating them raises a clear error (as
    ``torch.autograd.function.once_differentiable``, with a message naming the module)."""

    @staticmethod
    def forward(ctx: Any, what: str, n: int, *args: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
        ctx.what = what
        return tuple(None if g is None else g.clone() for g in args[:n])

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(
            f"{ctx.what}: double backward is not supported: the gradients w.r.t. the input, the "
            "initial states and the parameters come from rnnkit's backward kernels and cannot be "
            "differentiated again (create_graph=True, then a backward through them). Use the "
            "torch.nn module (rnnkit.torch.revert) for higher-order gradients.")


# ---- the stack ----------------------------------------------------------------------------------

class StackFunction(torch.autograd.Function):
    """``apply(spec, x, h0, c0, *drops, *weights) -> (y, h_n[, c_n])`` (see the module
    documentation); ``h0``/``c0`` may be None (zeros); ``weights`` in PyTorch's flat order."""

    @staticmethod
    def forward(ctx: Any, spec: StackSpec, x: torch.Tensor, h0: Optional[torch.Tensor],
                c0: Optional[torch.Tensor], *rest: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)
        L, D, nk = spec.num_layers, spec.num_directions, len(spec.keys)
        drops = [_np(t) for t in rest[:spec.n_drops]]
        flat = rest[spec.n_drops:]
        weights = [[dict(zip(spec.keys, (_np(t) for t in flat[(l * D + d) * nk:(l * D + d + 1) * nk])))
                    for d in range(D)] for l in range(L)]
        ns = _recurrent.n_states(spec.cell)
        init = [_np(s) for s in (h0, c0)[:ns]]
        inp = _np(x)
        caches = []
        finals: List[List[Array]] = [[] for _ in range(ns)]
        for l in range(L):
            init_l = None if all(s is None for s in init) else \
                [None if s is None else s[l * D:(l + 1) * D] for s in init]
            out, fin, cache = _recurrent.stack_forward(
                spec.cell, inp, [weights[l]], init_l, mask=spec.mask, zero_output=True,
                activation=spec.activation)
            caches.append(cache)
            for store, f in zip(finals, fin):
                store.append(f)
            if l < L - 1 and drops:
                out = out * drops[l]
            inp = out
        ctx.y_shape, ctx.y_dtype = inp.shape, inp.dtype
        outs = [torch.from_numpy(inp)]
        outs += [torch.from_numpy(f[0] if L == 1 else np.concatenate(f, axis=0)) for f in finals]

        ctx.spec = spec
        if any(ctx.needs_input_grad):
            arrays: List[Array] = []
            ctx.skeleton = _stash(caches, arrays, {})
            ctx.n_inputs = 3 + len(rest)
            ctx.save_for_backward(x, h0, c0, *rest, *(_as_tensor(a) for a in arrays))
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, dy: Optional[torch.Tensor], dh_n: Optional[torch.Tensor],
                 dc_n: Optional[torch.Tensor] = None) -> Tuple[Optional[torch.Tensor], ...]:
        spec: StackSpec = ctx.spec
        L, D, nk = spec.num_layers, spec.num_directions, len(spec.keys)
        saved = ctx.saved_tensors  # raises torch's errors: a second backward, in-place changes
        n_in = ctx.n_inputs
        drops = [_np(t) for t in saved[3:3 + spec.n_drops]]
        caches = _unstash(ctx.skeleton, [t.numpy() for t in saved[n_in:]])
        ns = _recurrent.n_states(spec.cell)
        needs = ctx.needs_input_grad  # (spec, x, h0, c0, *drops, *weights)

        d = np.zeros(ctx.y_shape, ctx.y_dtype) if dy is None else _np(dy)
        dfin = [_np(g) for g in (dh_n, dc_n)[:ns]]
        dfin_any = any(g is not None for g in dfin)
        d_init: List[List[Array]] = [[] for _ in range(ns)]
        wgrads: List[Optional[Array]] = [None] * (L * D * nk)
        for l in reversed(range(L)):
            dfin_l = None if not dfin_any else \
                [None if g is None else g[l * D:(l + 1) * D] for g in dfin]
            dx, dini, grads = _recurrent.stack_backward(caches[l], d, dfin_l,
                                                        need_dx=l > 0 or needs[1])
            for store, v in zip(d_init, dini):
                store.append(v)
            for di in range(D):
                g = grads[0][di]
                base = (l * D + di) * nk
                for j, key in enumerate(spec.keys):
                    wgrads[base + j] = g.get(key)
            if l > 0 and drops:
                dx = dx * drops[l - 1]
            d = dx
        out: List[Optional[torch.Tensor]] = [None]
        out.append(torch.from_numpy(d) if needs[1] and d is not None else None)
        for i in range(2):
            if i < ns and needs[2 + i]:
                parts = d_init[i][::-1]
                out.append(torch.from_numpy(parts[0] if L == 1 else np.concatenate(parts, axis=0)))
            else:
                out.append(None)
        out += [None] * spec.n_drops
        off = 4 + spec.n_drops
        out += [torch.from_numpy(g) if g is not None and needs[off + i] else None
                for i, g in enumerate(wgrads)]
        if torch.is_grad_enabled():
            # create_graph=True: the gradients depend on the inputs and the output gradients, but
            # the kernels' backward is not recorded; make differentiating them an error
            deps = [t for t in (dy, dh_n, dc_n, *saved[:n_in]) if t is not None and t.requires_grad]
            if deps:
                wrapped = _NoDoubleBackward.apply(f"rnnkit.torch.{spec.kind}", len(out) - 1, *out[1:], *deps)
                out = [None, *wrapped]
        return tuple(out)
