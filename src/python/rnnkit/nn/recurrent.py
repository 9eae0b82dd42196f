r"""PyTorch-style recurrent modules: :class:`RNN`, :class:`LSTM`, :class:`GRU` (``torch.nn``'s
arguments, parameter names, ``state_dict`` keys and call conventions).

Thin adapters over the one recurrent op, :mod:`rnnkit._recurrent` (its multi-layer,
bidirectional stack): they translate PyTorch's layouts (``batch_first``, unbatched input,
``hx`` of shape ``[D*num_layers, N, H]``, ``lengths``) and keep what a forward needs for its
backward per thread. There is no autograd: ``backward`` takes the gradients w.r.t. the outputs
of the calling thread's last ``forward`` and **accumulates** into each parameter's ``.grad``.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from rnnkit import _recurrent
from rnnkit._checks import as_mask, check_bool, check_positive_int, shape_str
from rnnkit._threads import PerThread
from rnnkit.nn.module import (DTypeLike, Module, Parameter, SeedLike, accumulate, as_float_dtype, expect_shape,
                              input_array, make_rng, to_numpy)

__all__ = ["RNN", "LSTM", "GRU"]

Array = np.ndarray


class _LastForward(NamedTuple):
    cache: _recurrent.StackCache       # the stack's per-layer, per-direction caches
    batched: bool
    out_shape: Tuple[int, ...]         # shape of the output as returned
    state_shapes: Tuple[Tuple[int, ...], ...]  # shapes of h_n (and c_n) as returned
    T: int
    N: int


class _RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    What a forward keeps for backward is per thread: several threads may share one module and
    each backpropagate its own forward; gradients accumulate under a lock.
    """

    _last = PerThread("what this thread's last forward keeps for backward")

    _gates = 1
    _n_states = 1  # 2 for LSTM (h, c)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, dropout: float, bidirectional: bool, dtype: DTypeLike,
                 seed: SeedLike, proj_size: int = 0, recompute: Any = None) -> None:
        super().__init__()
        _recurrent.segment_length(recompute, 2)  # validates: None, a segment length >= 1 or "sqrt"
        self.recompute = recompute
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.proj_size = check_positive_int("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected an int in [0, hidden_size) = [0, {self.hidden_size}), "
                             f"got {self.proj_size}")
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout: expected a float in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={self.dropout} "
                          f"and num_layers={self.num_layers}", UserWarning, stacklevel=3)
        dt = as_float_dtype("dtype", dtype)
        object.__setattr__(self, "_dtype", dt)
        self._rng = make_rng(seed)
        self._last: Optional[_LastForward] = None
        G, H, P = self._gates, self.hidden_size, self.proj_size
        Hs = P or H  # the width of h (and of each direction's output)
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else D * Hs
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                setattr(self, "weight_ih" + sfx, Parameter(np.zeros((G * H, in_size), dt)))
                setattr(self, "weight_hh" + sfx, Parameter(np.zeros((G * H, Hs), dt)))
                if self.bias:
                    setattr(self, "bias_ih" + sfx, Parameter(np.zeros((G * H,), dt)))
                    setattr(self, "bias_hh" + sfx, Parameter(np.zeros((G * H,), dt)))
                if P:
                    setattr(self, "weight_hr" + sfx, Parameter(np.zeros((P, H), dt)))
        self.reset_parameters()

    # ---- parameters -----------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        """2 when bidirectional, else 1 (``D`` in the shapes)."""
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        r"""Draws every weight and bias from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{H}`
        (PyTorch's initialization), using the module's random generator."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.data[...] = self._rng.uniform(-k, k, p.shape)

    def _param_keys(self, layer: int, direction: int) -> List[Tuple[str, str]]:
        """``(parameter name, rnnkit._recurrent weight key)`` of one layer and direction, in
        PyTorch's order."""
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        keys = [("weight_ih" + sfx, "w_ih"), ("weight_hh" + sfx, "w_hh")]
        if self.bias:
            keys += [("bias_ih" + sfx, "b_ih"), ("bias_hh" + sfx, "b_hh")]
        if self.proj_size:
            keys.append(("weight_hr" + sfx, "w_hr"))
        return keys

    def _param_names(self, layer: int, direction: int) -> List[str]:
        return [n for n, _ in self._param_keys(layer, direction)]

    @property
    def all_weights(self) -> List[List[Parameter]]:
        """``[w_ih, w_hh(, b_ih, b_hh)(, w_hr)]`` per layer and direction, in PyTorch's order."""
        return [[self._parameters[n] for n in self._param_names(layer, d)]
                for layer in range(self.num_layers) for d in range(self.num_directions)]

    def direction_weights(self, layer: int = 0, reverse: bool = False) -> Dict[str, Optional[Array]]:
        """The live weight arrays of one layer and direction in :mod:`rnnkit.functional`'s naming.

        This is the bridge to :mod:`rnnkit.functional`, :mod:`rnnkit.interop` and the streaming
        (step-by-step) runners, which all take ``w_ih, w_hh, b_ih, b_hh``.

        Returns
        -------
        dict
            ``{"w_ih", "w_hh", "b_ih", "b_hh"}`` (and ``"w_hr"`` with ``proj_size``); the biases
            are ``None`` when ``bias=False``. The arrays are the parameters' own (no copy).

        Shapes
        ------
        w_ih: [G*H, C_layer], w_hh: [G*H, H] (``[4H, P]`` with ``proj_size = P``),
        b_ih, b_hh: [G*H], w_hr: [P, H]; ``C_layer`` is ``input_size`` for layer 0 and ``D*H``
        (``D*P``) above.
        """
        layer = check_positive_int("layer", layer, minimum=0)
        if layer >= self.num_layers:
            raise ValueError(f"layer: expected an int in [0, {self.num_layers - 1}] (num_layers={self.num_layers}), got {layer}")
        reverse = check_bool("reverse", reverse)
        if reverse and not self.bidirectional:
            raise ValueError("reverse: this module is not bidirectional, it has no reverse direction")
        w: Dict[str, Optional[Array]] = {"b_ih": None, "b_hh": None}
        for name, key in self._param_keys(layer, 1 if reverse else 0):
            w[key] = self._parameters[name].data
        return w

    def stream(self, batch_size: int = 1, precision: str = "float32") -> Any:
        """A stateful step-by-step runner for real-time inference (see :mod:`rnnkit.streaming`).

        The weights are copied into C++ once, now (a later change of the module's weights needs
        a new stream); the state starts at zero and is carried between calls. ``precision``:
        'float32', 'bfloat16' or 'int8' weights (see :mod:`rnnkit.streaming`).

        Returns
        -------
        LSTMStream, GRUStream or RNNStream for one layer; StackedStream for several.

        Shapes
        ------
        step: x [N, input_size] -> h [N, hidden_size];  run: x [steps, N, input_size] ->
        y [steps, N, hidden_size];  N = batch_size.
        """
        from rnnkit import streaming

        if self.bidirectional:
            raise ValueError("stream: a bidirectional module needs the whole sequence (its reverse "
                             "direction starts at the end); stream a unidirectional one")
        cls = {1: streaming.RNNStream, 4: streaming.LSTMStream, 3: streaming.GRUStream}[self._gates]
        kw = {"nonlinearity": self.nonlinearity} if self._gates == 1 else {}
        layers = [cls(**self.direction_weights(layer), batch_size=batch_size, precision=precision, **kw)
                  for layer in range(self.num_layers)]
        return layers[0] if len(layers) == 1 else streaming.StackedStream(layers)

    def _forget_forward(self) -> None:
        self._last = None

    @property
    def last_caches(self) -> Optional[List[List[Any]]]:
        """The :mod:`rnnkit.functional` caches of the calling thread's last forward,
        ``[layer][direction]`` (``None`` before the first forward or after :meth:`~Module.to`).
        They hold references to the inputs and weights that :meth:`backward` uses."""
        return None if self._last is None else self._last.cache.caches

    # ---- forward --------------------------------------------------------------------------------
    def _time_mask(self, lengths: Any, mask: Any, T: int, N: int, batched: bool) -> Optional[Array]:
        if lengths is not None and mask is not None:
            raise ValueError("lengths, mask: pass at most one of them")
        if lengths is not None:
            arr = np.asarray(to_numpy(lengths))
            if arr.dtype.kind not in "iu":
                raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
            if not batched and arr.shape in ((), (1,)):
                arr = arr.reshape(1)
            elif arr.shape != (N,):
                want = "() or (1,) for unbatched input" if not batched else f"(N,) = ({N},)"
                raise ValueError(f"lengths: expected shape {want}, got {shape_str(arr.shape)}")
            if arr.min() < 0 or arr.max() > T:
                raise ValueError(f"lengths: expected values in [0, T] = [0, {T}], got min {arr.min()}, max {arr.max()}")
            m = np.arange(T)[:, None] < arr[None, :]
        elif mask is not None:
            mask = to_numpy(mask)
            if not batched:
                m = as_mask("mask", mask, (T,))[:, None]
            elif self.batch_first:
                m = as_mask("mask", mask, (N, T)).T
            else:
                m = as_mask("mask", mask, (T, N))
        else:
            return None
        return None if m.all() else np.ascontiguousarray(m)

    def _prepare_states(self, hx: Any, N: int, batched: bool) -> Tuple[Optional[Array], ...]:
        DL = self.num_directions * self.num_layers
        widths = (self.proj_size or self.hidden_size, self.hidden_size)  # h (P with proj_size), c
        names = ("h_0", "c_0")[: self._n_states]
        if hx is None:
            return (None,) * self._n_states
        if self._n_states == 2:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx: expected a tuple (h_0, c_0) for LSTM, got {type(hx).__name__}"
                                + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
            items = tuple(hx)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx: expected an array h_0 for {type(self).__name__}, got a {type(hx).__name__}")
            items = (hx,)
        out = []
        for name, s, H in zip(names, items, widths):
            if s is None:
                out.append(None)
                continue
            s = input_array(name, s, self._dtype)
            what = "proj_size" if (name == "h_0" and self.proj_size) else "hidden_size"
            if batched:
                expect_shape(name, s, (DL, N, H), f"(D*num_layers, N, {what})")
            else:
                expect_shape(name, s, (DL, H), f"(D*num_layers, {what}) for unbatched input")
                s = s[:, None, :]
            out.append(np.ascontiguousarray(s))
        return tuple(out)

    def _forward(self, x: Any, hx: Any, lengths: Any, mask: Any) -> Tuple[Array, Tuple[Array, ...]]:
        x = input_array("x", x, self._dtype)
        if x.ndim not in (2, 3):
            layout = "[N, T, C] (batch_first)" if self.batch_first else "[T, N, C]"
            raise ValueError(f"x: expected 3 dimensions {layout} or 2 dimensions [T, C] (unbatched), "
                             f"got shape {shape_str(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected {self.input_size} features (input_size) in the last dimension, "
                             f"got shape {shape_str(x.shape)}")
        if 0 in x.shape:
            raise ValueError(f"x: every dimension must be at least 1, got shape {shape_str(x.shape)}")
        batched = x.ndim == 3
        if not batched:
            xt = x[:, None, :]
        elif self.batch_first:
            xt = x.transpose(1, 0, 2)
        else:
            xt = x
        T, N = xt.shape[0], xt.shape[1]
        init = self._prepare_states(hx, N, batched)
        tmask = self._time_mask(lengths, mask, T, N, batched)

        L, D = self.num_layers, self.num_directions
        weights = [[self.direction_weights(layer, d == 1) for d in range(D)] for layer in range(L)]
        out, finals, cache = _recurrent.stack_forward(
            self._cell, xt, weights, None if all(s is None for s in init) else list(init), mask=tmask,
            zero_output=True, dropout=self.dropout if self.training else 0.0, rng=self._rng,
            activation=getattr(self, "nonlinearity", "tanh"), recompute=self.recompute if self.training else None)
        if not batched:
            output = np.ascontiguousarray(out[:, 0, :])
            states = tuple(np.ascontiguousarray(s[:, 0, :]) for s in finals)
        elif self.batch_first:
            output = np.ascontiguousarray(out.transpose(1, 0, 2))
            states = tuple(finals)
        else:
            output = out
            states = tuple(finals)
        self._last = _LastForward(cache, batched, output.shape, tuple(st.shape for st in states), T, N)
        return output, states

    # ---- backward -------------------------------------------------------------------------------
    def _to_time_major(self, a: Array, batched: bool) -> Array:
        if not batched:
            return a[:, None, :]
        return a.transpose(1, 0, 2) if self.batch_first else a

    def _backward(self, d_output: Any, d_finals: Tuple[Any, ...]) -> Tuple[Array, Tuple[Array, ...]]:
        last = self._last
        if last is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first "
                               "(nothing to backpropagate through)")
        names = ("d_hn", "d_cn")[: self._n_states]
        if d_output is None and all(g is None for g in d_finals):
            raise ValueError(f"d_output, {', '.join(names)}: pass at least one gradient")
        D, L, dt = self.num_directions, self.num_layers, self._dtype
        Hs = self.proj_size or self.hidden_size
        T, N = last.T, last.N
        if d_output is None:
            dy = np.zeros((T, N, D * Hs), dt)
        else:
            d_output = input_array("d_output", d_output, dt)
            expect_shape("d_output", d_output, last.out_shape, "the output's shape")
            dy = self._to_time_major(d_output, last.batched)
        dfin: List[Optional[Array]] = []
        for name, g, shape in zip(names, d_finals, last.state_shapes):
            if g is None:
                dfin.append(None)
                continue
            g = input_array(name, g, dt)
            expect_shape(name, g, shape, f"the shape of {name[2]}_n")
            dfin.append(g if last.batched else g[:, None, :])
        dy, d_init, grads = _recurrent.stack_backward(last.cache, np.ascontiguousarray(dy), dfin)
        for layer in range(L):
            for d in range(D):
                g = grads[layer][d]
                for n, key in self._param_keys(layer, d):
                    accumulate(self._parameters[n], g.get(key))

        if not last.batched:
            dx_out = np.ascontiguousarray(dy[:, 0, :])
            d_states = tuple(np.ascontiguousarray(s[:, 0, :]) for s in d_init)
        elif self.batch_first:
            dx_out = np.ascontiguousarray(dy.transpose(1, 0, 2))
            d_states = tuple(d_init)
        else:
            dx_out = dy
            d_states = tuple(d_init)
        return dx_out, d_states

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self._dtype != np.float32:
            s += f", dtype={self._dtype}"
        return s


_SHAPES_DOC = r"""
    Shapes
    ------
    With ``D = 2`` if bidirectional else 1, ``H = hidden_size``, ``C = input_size``:

    - input ``x``: ``[T, N, C]``, ``[N, T, C]`` when ``batch_first=True``, or ``[T, C]``
      unbatched (``batch_first`` does not apply to unbatched input)
    - initial state(s): ``[D*num_layers, N, H]`` (``[D*num_layers, H]`` unbatched); omitted = zeros
    - ``output``: ``[T, N, D*H]`` (``[N, T, D*H]`` with ``batch_first``, ``[T, D*H]`` unbatched) —
      the last layer's states for every step, forward direction first
    - final state(s): like the initial ones; entry ``layer*D + direction``
    - ``lengths``: ``[N]`` ints in ``[0, T]`` (``()`` or ``[1]`` unbatched)
    - ``mask``: bool ``[T, N]`` (``[N, T]`` with ``batch_first``, ``[T]`` unbatched)
"""

_VARLEN_DOC = r"""
    Variable-length batches
    -----------------------
    ``lengths`` gives each sample's number of valid leading steps (PyTorch's packed sequences:
    ``pack_padded_sequence`` then ``pad_packed_sequence``): padded steps output zeros, the final
    state is the state after the sample's last valid step, and the reverse direction starts at
    that step. ``mask`` generalizes this to any pattern of valid steps (a masked step carries the
    state and outputs zero).
"""


class _HiddenStateRNN(_RNNBase):
    """The modules whose only state is ``h`` (RNN, GRU): their ``forward``/``backward``."""

    def forward(self, x: Any, hx: Any = None, *, lengths: Any = None,
                mask: Any = None) -> Tuple[Array, Array]:
        """Runs the layers over ``x``; keeps what :meth:`backward` needs.

        Parameters
        ----------
        x
            Input sequence (see Shapes).
        hx
            Initial hidden state ``h_0``, or None for zeros.
        lengths, mask
            Optional valid-step information (see the class documentation).

        Returns
        -------
        output, h_n

        Shapes
        ------
        x: [T, N, C] / [N, T, C] / [T, C], hx: [D*num_layers, N, H]
        -> output: [T, N, D*H] / [N, T, D*H] / [T, D*H], h_n: [D*num_layers, N, H]
        """
        output, (h_n,) = self._forward(x, hx, lengths, mask)
        return output, h_n

    def backward(self, d_output: Any, d_hn: Any = None) -> Tuple[Array, Array]:
        """Backpropagation through time for the last :meth:`forward`.

        Accumulates (``+=``) every parameter's ``.grad``. May be called more than once for the
        same forward (each call adds its gradients).

        Parameters
        ----------
        d_output
            Gradient of the loss w.r.t. ``output`` (``None`` = zeros).
        d_hn
            Gradient w.r.t. ``h_n`` (``None`` = zeros).

        Returns
        -------
        dx, dh_0
            Gradients w.r.t. the input and the initial hidden state (also when ``hx`` was
            omitted, i.e. w.r.t. the zero state).

        Shapes
        ------
        d_output: like output, d_hn: like h_n -> dx: like x, dh_0: like h_n
        """
        dx, (dh0,) = self._backward(d_output, (d_hn,))
        return dx, dh0


class RNN(_HiddenStateRNN):
    __doc__ = r"""Multi-layer Elman RNN, as ``torch.nn.RNN``.

    For each layer and each time step

    .. math::
        h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    (:math:`\mathrm{ReLU}` instead of :math:`\tanh` with ``nonlinearity='relu'``). The input of
    layer ``l > 0`` is the output of layer ``l - 1`` (both directions concatenated), multiplied
    by dropout in training mode when ``dropout > 0``.

    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the hidden state ``h``.
    num_layers
        Number of stacked recurrent layers.
    nonlinearity
        ``'tanh'`` or ``'relu'``.
    bias
        If False, the layers have no ``b_ih``/``b_hh``.
    batch_first
        If True, batched input and output are ``[N, T, *]`` instead of ``[T, N, *]``.
    dropout
        Probability in ``[0, 1)`` of zeroing each output of every layer but the last, in
        training mode only (:meth:`~Module.eval` turns it off).
    bidirectional
        If True, every layer also runs from ``t = T-1`` down to 0 (``*_reverse`` parameters).
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization and of
        the dropout masks.
    recompute
        rnnkit's addition: None (default), a segment length or ``"sqrt"``: gradient
        checkpointing along time in training mode (only the segments' starting states are kept;
        the backward reruns each segment's forward), memory O(T/S + S) instead of O(T) for one
        extra forward.

    Attributes
    ----------
    weight_ih_l[k]
        ``[H, C]`` for ``k = 0``, else ``[H, D*H]``.
    weight_hh_l[k]
        ``[H, H]``.
    bias_ih_l[k], bias_hh_l[k]
        ``[H]``.

    Every parameter starts from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H`;
    reverse-direction parameters carry the ``_reverse`` suffix.
    {_SHAPES_DOC}{_VARLEN_DOC}"""

    _gates = 1
    _n_states = 1
    _cell = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 recompute: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, recompute=recompute)
        self.nonlinearity = nonlinearity



class LSTM(_RNNBase):
    __doc__ = r"""Multi-layer long short-term memory, as ``torch.nn.LSTM``.

    For each layer and each time step (gate order in the weights: **i, f, g, o**)

    .. math::
        \begin{array}{ll}
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    The input of layer ``l > 0`` is the output of layer ``l - 1`` (both directions
    concatenated), multiplied by dropout in training mode when ``dropout > 0``.

    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the states ``h`` and ``c``.
    num_layers
        Number of stacked recurrent layers.
    bias
        If False, the layers have no ``b_ih``/``b_hh``.
    batch_first
        If True, batched input and output are ``[N, T, *]`` instead of ``[T, N, *]``.
    dropout
        Probability in ``[0, 1)`` of zeroing each output of every layer but the last, in
        training mode only.
    bidirectional
        If True, every layer also runs from ``t = T-1`` down to 0 (``*_reverse`` parameters).
    proj_size
        If > 0, an LSTM with projections of that size (LSTMP, see ``weight_hr_l[k]``); must be
        smaller than ``hidden_size``.
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization and of
        the dropout masks.
    recompute
        rnnkit's addition: None (default), a segment length or ``"sqrt"``: gradient
        checkpointing along time in training mode (only the segments' starting states are kept;
        the backward reruns each segment's forward), memory O(T/S + S) instead of O(T) for one
        extra forward.

    Attributes
    ----------
    weight_ih_l[k]
        ``(W_ii|W_if|W_ig|W_io)``: ``[4H, C]`` for ``k = 0``, else ``[4H, D*H]``.
    weight_hh_l[k]
        ``(W_hi|W_hf|W_hg|W_ho)``: ``[4H, H]``.
    bias_ih_l[k], bias_hh_l[k]
        ``[4H]``.
    weight_hr_l[k]
        ``[P, H]``, with ``proj_size = P > 0`` (LSTMP): then :math:`h_t = W_{hr} (o_t \odot
        \tanh(c_t))` is P wide, ``weight_hh_l[k]`` is ``[4H, P]``, ``h_0``/``h_n`` are
        ``[D*num_layers, N, P]`` and the output ``[T, N, D*P]`` (``c`` stays H wide).

    Every parameter starts from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H`;
    reverse-direction parameters carry the ``_reverse`` suffix.
    {_SHAPES_DOC}{_VARLEN_DOC}"""

    _gates = 4
    _n_states = 2
    _cell = "lstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, *, dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 recompute: Any = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, proj_size, recompute)

    def forward(self, x: Any, hx: Any = None, *, lengths: Any = None,
                mask: Any = None) -> Tuple[Array, Tuple[Array, Array]]:
        """Runs the LSTM over ``x``; keeps what :meth:`backward` needs.

        Parameters
        ----------
        x
            Input sequence (see Shapes).
        hx
            ``(h_0, c_0)``, or None for zeros (either element may also be None).
        lengths, mask
            Optional valid-step information (see the class documentation).

        Returns
        -------
        output, (h_n, c_n)

        Shapes
        ------
        x: [T, N, C] / [N, T, C] / [T, C], h_0, c_0: [D*num_layers, N, H]
        -> output: [T, N, D*H] / [N, T, D*H] / [T, D*H], h_n, c_n: [D*num_layers, N, H]
        """
        output, (h_n, c_n) = self._forward(x, hx, lengths, mask)
        return output, (h_n, c_n)

    def backward(self, d_output: Any, d_hn: Any = None,
                 d_cn: Any = None) -> Tuple[Array, Tuple[Array, Array]]:
        """Backpropagation through time for the last :meth:`forward`.

        Accumulates (``+=``) every parameter's ``.grad``. May be called more than once for the
        same forward (each call adds its gradients).

        Parameters
        ----------
        d_output
            Gradient of the loss w.r.t. ``output`` (``None`` = zeros).
        d_hn, d_cn
            Gradients w.r.t. ``h_n`` and ``c_n`` (``None`` = zeros).

        Returns
        -------
        dx, (dh_0, dc_0)

        Shapes
        ------
        d_output: like output, d_hn, d_cn: like h_n -> dx: like x, dh_0, dc_0: like h_n
        """
        dx, (dh0, dc0) = self._backward(d_output, (d_hn, d_cn))
        return dx, (dh0, dc0)


class GRU(_HiddenStateRNN):
    __doc__ = r"""Multi-layer gated recurrent unit, as ``torch.nn.GRU``.

    For each layer and each time step (gate order in the weights: **r, z, n**)

    .. math::
        \begin{array}{ll}
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{array}

    (Keras's ``reset_after=True`` form.) The input of layer ``l > 0`` is the output of layer
    ``l - 1`` (both directions concatenated), multiplied by dropout in training mode when
    ``dropout > 0``.

    Parameters
    ----------
    input_size
        Features of the input ``x``.
    hidden_size
        Features of the hidden state ``h``.
    num_layers
        Number of stacked recurrent layers.
    bias
        If False, the layers have no ``b_ih``/``b_hh``.
    batch_first
        If True, batched input and output are ``[N, T, *]`` instead of ``[T, N, *]``.
    dropout
        Probability in ``[0, 1)`` of zeroing each output of every layer but the last, in
        training mode only.
    bidirectional
        If True, every layer also runs from ``t = T-1`` down to 0 (``*_reverse`` parameters).
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator``: source of the initialization and of
        the dropout masks.
    recompute
        rnnkit's addition: None (default), a segment length or ``"sqrt"``: gradient
        checkpointing along time in training mode (only the segments' starting states are kept;
        the backward reruns each segment's forward), memory O(T/S + S) instead of O(T) for one
        extra forward.

    Attributes
    ----------
    weight_ih_l[k]
        ``(W_ir|W_iz|W_in)``: ``[3H, C]`` for ``k = 0``, else ``[3H, D*H]``.
    weight_hh_l[k]
        ``(W_hr|W_hz|W_hn)``: ``[3H, H]``.
    bias_ih_l[k], bias_hh_l[k]
        ``[3H]``.

    Every parameter starts from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = 1/H`;
    reverse-direction parameters carry the ``_reverse`` suffix.
    {_SHAPES_DOC}{_VARLEN_DOC}"""

    _gates = 3
    _n_states = 1
    _cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None,
                 recompute: Any = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, recompute=recompute)



for _cls in (RNN, LSTM, GRU):
    _cls.__doc__ = _cls.__doc__.replace("{_SHAPES_DOC}", _SHAPES_DOC).replace("{_VARLEN_DOC}", _VARLEN_DOC)
del _cls
