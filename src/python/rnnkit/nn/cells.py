r"""PyTorch-style recurrent cells: :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell` — one
time step, ``torch.nn``'s arguments, parameter names, ``state_dict`` keys and call conventions.

A step runs the same fused C++ kernel as the whole-sequence modules (:mod:`rnnkit.functional`
with ``T = 1``). There is no autograd: ``backward`` takes the gradient(s) w.r.t. the new state(s)
of a forward step, returns the gradients w.r.t. that step's input and previous state(s), and
**accumulates** (``+=``) into each parameter's ``.grad``.

Which forward a backward goes through
-------------------------------------
By default the calling thread's last :meth:`forward` (what the other ``nn`` modules do; several
threads may share one cell). Backpropagation through time over a Python loop of cells needs
every step: keep :attr:`last_step` after each forward and hand it back with ``step=``, in
reverse order (each record keeps what its backward needs, nothing is kept on the cell)::

    steps = []
    for t in range(T):
        h, c = cell(x[t], (h, c))
        steps.append(cell.last_step)
    dh, dc = d_h_T, d_c_T                                   # gradients w.r.t. the last state
    for t in reversed(range(T)):
        dx[t], (dh, dc) = cell.backward(dh + dy[t], dc, step=steps[t])

Shapes
------
``H = hidden_size``, ``C = input_size``: input ``[N, C]`` or ``[C]`` (unbatched); states
``[N, H]`` (``[H]`` unbatched). ``backward`` returns gradients shaped like the forward's input
and state argument(s) (also when the state was omitted, i.e. w.r.t. the zero state).
"""
from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from rnnkit import functional as F
from rnnkit._checks import check_bool, check_positive_int, shape_str
from rnnkit._threads import PerThread
from rnnkit.nn.module import (DTypeLike, Module, Parameter, SeedLike, accumulate, as_float_dtype, expect_shape,
                              input_array, make_rng)

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "CellStep"]

Array = np.ndarray


class CellStep(NamedTuple):
    """What one forward step keeps for its backward (see the module documentation).

    ``cache`` is the :mod:`rnnkit.functional` cache of the step (``T = 1``; it references the
    input and the weights of that step), ``batched`` whether the input was 2-D, ``N`` the batch
    size (1 unbatched).
    """
    cache: Any
    batched: bool
    N: int


class _CellBase(Module):
    """Shared machinery of the three cells: parameters, checks, the fused step, backward."""

    _last = PerThread("what this thread's last forward keeps for backward")

    _gates = 1
    _n_states = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool, dtype: DTypeLike,
                 seed: SeedLike) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.bias = check_bool("bias", bias)
        # dtype=None is PyTorch's "the default dtype": float32
        dt = as_float_dtype("dtype", np.float32 if dtype is None else dtype)
        object.__setattr__(self, "_dtype", dt)
        self._rng = make_rng(seed)
        self._last: Optional[CellStep] = None
        G, H, C = self._gates, self.hidden_size, self.input_size
        self.weight_ih = Parameter(np.zeros((G * H, C), dt))
        self.weight_hh = Parameter(np.zeros((G * H, H), dt))
        if self.bias:
            self.bias_ih = Parameter(np.zeros((G * H,), dt))
            self.bias_hh = Parameter(np.zeros((G * H,), dt))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    # ---- parameters -----------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        r"""Draws every weight and bias from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{H}`
        (PyTorch's initialization), in the order ``weight_ih, weight_hh, bias_ih, bias_hh``, from
        the cell's random generator."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.data[...] = self._rng.uniform(-k, k, p.shape)

    def cell_weights(self) -> Dict[str, Optional[Array]]:
        """The live parameter arrays in :mod:`rnnkit.functional`'s naming: ``{"w_ih", "w_hh",
        "b_ih", "b_hh"}`` (biases None when ``bias=False``; no copies).

        Shapes
        ------
        w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H] (G = 1, 4, 3 for RNN, LSTM, GRU)
        """
        return {"w_ih": self.weight_ih.data, "w_hh": self.weight_hh.data,
                "b_ih": None if self.bias_ih is None else self.bias_ih.data,
                "b_hh": None if self.bias_hh is None else self.bias_hh.data}

    def _forget_forward(self) -> None:
        self._last = None

    @property
    def last_step(self) -> Optional[CellStep]:
        """What the calling thread's last :meth:`forward` keeps for its backward (None before the
        first forward or after :meth:`~Module.to`); pass it to ``backward(..., step=...)``."""
        return self._last

    # ---- checks ---------------------------------------------------------------------------------
    def _input(self, input: Any) -> Tuple[Array, bool]:
        x = input_array("input", input, self._dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"input: expected 1 dimension [input_size] (unbatched) or 2 dimensions "
                             f"[N, input_size], got shape {shape_str(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected {self.input_size} features (input_size) in the last "
                             f"dimension, got shape {shape_str(x.shape)}")
        if 0 in x.shape:
            raise ValueError(f"input: every dimension must be at least 1, got shape {shape_str(x.shape)}")
        return x, x.ndim == 2

    def _state(self, name: str, s: Any, N: int, batched: bool) -> Optional[Array]:
        """A state or state gradient as ``[N, H]`` (None passes through)."""
        if s is None:
            return None
        s = input_array(name, s, self._dtype)
        if batched:
            expect_shape(name, s, (N, self.hidden_size), "(N, hidden_size)")
            return s
        expect_shape(name, s, (self.hidden_size,), "(hidden_size,) for unbatched input")
        return s[None]

    def _out(self, a: Array, batched: bool) -> Array:
        return a if batched else a[0]

    # ---- the step -------------------------------------------------------------------------------
    def _step(self, input: Any, states: Tuple[Any, ...]) -> Tuple[Tuple[Array, ...], bool]:
        """Runs one step of the fused kernel (``T = 1``); keeps the record for backward."""
        x, batched = self._input(input)
        N = x.shape[0] if batched else 1
        names = ("h_0", "c_0") if self._n_states == 2 else ("hx",)
        init = [self._state(n, s, N, batched) for n, s in zip(names, states)]
        xt = x[None] if batched else x[None, None]
        w = self.cell_weights()
        if self._gates == 4:
            o = F.lstm_forward(xt, init[0], init[1], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
            new = (o.h_n, o.c_n)
        elif self._gates == 3:
            o = F.gru_forward(xt, init[0], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
            new = (o.h_n,)
        else:
            o = F.rnn_forward(xt, init[0], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                              nonlinearity=self.nonlinearity)
            new = (o.h_n,)
        self._last = CellStep(o.cache, batched, N)
        return tuple(self._out(s, batched) for s in new), batched

    def _backward(self, d_h: Any, d_c: Any, step: Optional[CellStep]) -> Tuple[Array, Tuple[Array, ...]]:
        rec = self._last if step is None else step
        if rec is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first (nothing to "
                               "backpropagate through)")
        if not isinstance(rec, CellStep):
            raise TypeError(f"step: expected the CellStep of a forward (cell.last_step), got "
                            f"{type(rec).__name__}")
        if d_h is None and d_c is None:
            names = "d_h, d_c" if self._n_states == 2 else "d_h"
            raise ValueError(f"{names}: pass at least one gradient")
        H, dt, N = self.hidden_size, self._dtype, rec.N
        dh = self._state("d_h", d_h, N, rec.batched)
        dc = self._state("d_c", d_c, N, rec.batched)
        dy = np.zeros((1, N, H), dt) if dh is None else dh[None]
        if self._gates == 4:
            g = F.lstm_backward(rec.cache, dy, None, dc)
            d_prev: Tuple[Array, ...] = (g.dh0, g.dc0)
        elif self._gates == 3:
            g = F.gru_backward(rec.cache, dy)
            d_prev = (g.dh0,)
        else:
            g = F.rnn_backward(rec.cache, dy)
            d_prev = (g.dh0,)
        for p, grad in ((self.weight_ih, g.dw_ih), (self.weight_hh, g.dw_hh), (self.bias_ih, g.db_ih),
                        (self.bias_hh, g.db_hh)):
            if p is not None:
                accumulate(p, grad)
        dx = g.dx[0]
        return self._out(dx, rec.batched), tuple(self._out(s, rec.batched) for s in d_prev)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        if self._dtype != np.float32:
            s += f", dtype={self._dtype}"
        return s


_PARAMS_DOC = r"""
    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the hidden state ``h``.
    bias
        If False, the cell has no ``bias_ih``/``bias_hh`` (both registered as None).
    dtype
        ``np.float32`` (default; None means it, as PyTorch's default dtype) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization."""

_STEP_DOC = r"""
    :attr:`last_step` is what the calling thread's last forward keeps for its backward;
    ``backward(..., step=record)`` goes through another (earlier) step, for backpropagation
    through time over a loop of cells (see :mod:`rnnkit.nn.cells`)."""


class _OneStateCell(_CellBase):
    """forward/backward of the cells with one state, h (RNNCell, GRUCell)."""

    def forward(self, input: Any, hx: Any = None) -> Array:
        """One step: the new hidden state; keeps what :meth:`backward` needs.

        Parameters
        ----------
        input
            ``x`` of this step.
        hx
            The previous hidden state, or None for zeros.

        Shapes
        ------
        input: [N, C] / [C], hx: [N, H] / [H] -> h': [N, H] / [H]
        """
        (h,), _ = self._step(input, (hx,))
        return h

    def backward(self, d_h: Any, *, step: Optional[CellStep] = None) -> Tuple[Array, Array]:
        """Backpropagates one step; accumulates (``+=``) every parameter's ``.grad``.

        Parameters
        ----------
        d_h
            Gradient of the loss w.r.t. the step's output ``h'``.
        step
            The :class:`CellStep` to go through (default: the calling thread's last forward).

        Returns
        -------
        dx, dhx
            Gradients w.r.t. the step's input and previous hidden state (the forward's ``hx``,
            also when it was omitted).

        Shapes
        ------
        d_h: [N, H] / [H] -> dx: [N, C] / [C], dhx: [N, H] / [H]
        """
        dx, (dhx,) = self._backward(d_h, None, step)
        return dx, dhx


class RNNCell(_OneStateCell):
    __doc__ = r"""An Elman RNN cell, as ``torch.nn.RNNCell``:

    .. math::
        h' = \tanh(x W_{ih}^T + b_{ih} + h W_{hh}^T + b_{hh})

    (:math:`\mathrm{ReLU}` instead of :math:`\tanh` with ``nonlinearity='relu'``).
    {_PARAMS_DOC}
    nonlinearity
        ``'tanh'`` (default) or ``'relu'``.

    Attributes
    ----------
    weight_ih
        ``[H, C]``.
    weight_hh
        ``[H, H]``.
    bias_ih, bias_hh
        ``[H]``.

    Every parameter starts from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{H}`.
    {_STEP_DOC}

    Shapes
    ------
    input: [N, C] or [C], hx: [N, H] or [H] (None = zeros) -> h': [N, H] or [H];
    backward(d_h: like h') -> (dx: like input, dhx: like h')
    """

    _gates, _n_states = 1, 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, seed)


class LSTMCell(_CellBase):
    __doc__ = r"""A long short-term memory cell, as ``torch.nn.LSTMCell`` (gate order in the
    weights: **i, f, g, o**):

    .. math::
        \begin{array}{ll}
        i = \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) \\
        f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
        g = \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) \\
        o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
        c' = f \odot c + i \odot g \\
        h' = o \odot \tanh(c')
        \end{array}
    {_PARAMS_DOC}

    Attributes
    ----------
    weight_ih
        ``(W_ii|W_if|W_ig|W_io)``: ``[4H, C]``.
    weight_hh
        ``(W_hi|W_hf|W_hg|W_ho)``: ``[4H, H]``.
    bias_ih, bias_hh
        ``[4H]``.

    Every parameter starts from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{H}`.
    {_STEP_DOC}

    Shapes
    ------
    input: [N, C] or [C], hx = (h, c): each [N, H] or [H] (None, or either element None = zeros)
    -> (h', c'): each [N, H] or [H];
    backward(d_h, d_c: like h', c') -> (dx: like input, (dh, dc): like h, c)
    """

    _gates, _n_states = 4, 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        super().__init__(input_size, hidden_size, bias, dtype, seed)

    def forward(self, input: Any, hx: Any = None) -> Tuple[Array, Array]:
        """One step: ``(h', c')``; keeps what :meth:`backward` needs.

        Parameters
        ----------
        input
            ``x`` of this step.
        hx
            ``(h, c)``, the previous states, or None for zeros (either element may be None).

        Shapes
        ------
        input: [N, C] / [C], h, c: [N, H] / [H] -> h', c': [N, H] / [H]
        """
        if hx is None:
            hx = (None, None)
        elif not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx: expected a tuple (h, c) for LSTMCell, got {type(hx).__name__}"
                            + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
        (h, c), _ = self._step(input, tuple(hx))
        return h, c

    def backward(self, d_h: Any = None, d_c: Any = None, *,
                 step: Optional[CellStep] = None) -> Tuple[Array, Tuple[Array, Array]]:
        """Backpropagates one step; accumulates (``+=``) every parameter's ``.grad``.

        Parameters
        ----------
        d_h, d_c
            Gradients of the loss w.r.t. the step's ``h'`` and ``c'`` (None = zeros; at least
            one of them).
        step
            The :class:`CellStep` to go through (default: the calling thread's last forward).

        Returns
        -------
        dx, (dh, dc)
            Gradients w.r.t. the step's input and previous states (the structure of the
            forward's ``hx``, also when it was omitted).

        Shapes
        ------
        d_h, d_c: [N, H] / [H] -> dx: [N, C] / [C], dh, dc: [N, H] / [H]
        """
        dx, (dh, dc) = self._backward(d_h, d_c, step)
        return dx, (dh, dc)


class GRUCell(_OneStateCell):
    __doc__ = r"""A gated recurrent unit cell, as ``torch.nn.GRUCell`` (gate order in the
    weights: **r, z, n**):

    .. math::
        \begin{array}{ll}
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' = (1 - z) \odot n + z \odot h
        \end{array}
    {_PARAMS_DOC}

    Attributes
    ----------
    weight_ih
        ``(W_ir|W_iz|W_in)``: ``[3H, C]``.
    weight_hh
        ``(W_hr|W_hz|W_hn)``: ``[3H, H]``.
    bias_ih, bias_hh
        ``[3H]``.

    Every parameter starts from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{H}`.
    {_STEP_DOC}

    Shapes
    ------
    input: [N, C] or [C], hx: [N, H] or [H] (None = zeros) -> h': [N, H] or [H];
    backward(d_h: like h') -> (dx: like input, dhx: like h')
    """

    _gates, _n_states = 3, 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        super().__init__(input_size, hidden_size, bias, dtype, seed)


for _cls in (RNNCell, LSTMCell, GRUCell):
    _cls.__doc__ = _cls.__doc__.replace("{_PARAMS_DOC}", _PARAMS_DOC).replace("{_STEP_DOC}", _STEP_DOC)
del _cls
