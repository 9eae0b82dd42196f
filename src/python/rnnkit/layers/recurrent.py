"""Keras-style recurrent layers: :class:`SimpleRNN`, :class:`LSTM`, :class:`GRU`.

Inputs are batch-major ``[batch, timesteps, features]`` as in Keras; the layers transpose to the
kernels' time-major layout and back. Arguments, defaults and semantics follow Keras 3:

- ``return_sequences`` / ``return_state``: the output is ``[N, T, U]`` or ``[N, U]``; with
  ``return_state`` the call returns ``[output, h]`` (``[output, h, c]`` for LSTM).
- ``go_backwards``: the sequence is processed from the last step to the first and the returned
  sequence is in processing order, i.e. reversed in time (``output[:, 0]`` belongs to the last
  input step); without ``return_sequences`` the output is the state after input step 0.
- ``mask`` ``[N, T]`` bool (holes allowed): a masked step carries the state unchanged; its output
  is the carried state (before any valid step: the initial state, as Keras's JAX and NumPy
  backends do) or zero with ``zero_output_for_mask=True``. The non-sequence output is the last
  element of the output sequence, as in Keras (so with ``zero_output_for_mask=True`` and a
  masked last step it is zero); the returned states are always the carried states.
- ``dropout`` / ``recurrent_dropout``: in training, one inverted-dropout mask per sequence (the
  same at every step), ``[N, C]`` on the inputs and ``[N, U]`` on :math:`h_{t-1}` where it
  enters the recurrent product (the same mask for every gate; GRU's :math:`z h_{t-1}` term uses
  the undropped state). ``seed`` seeds the dropout generator.
- ``stateful=True``: the final states of a call are the initial states of the next one (batch
  size fixed by the first call); ``reset_state()`` zeroes them. Gradients stop at the call
  boundary (truncated backpropagation through time).
- ``unroll`` is accepted for Keras configs and has no effect (the kernels are fused loops).

Parameters (``layer.params`` / ``layer.grads`` keys) are kept in the kernels' PyTorch layout so a
call converts nothing:

==========  =====================================================================
SimpleRNN   ``w_ih [U, C]``, ``w_hh [U, U]``, ``b_ih [U]``
LSTM        ``w_ih [4U, C]``, ``w_hh [4U, U]``, ``b_ih [4U]`` (row blocks i, f, g, o)
GRU         ``w_ih [3U, C]``, ``w_hh [3U, U]``, ``b_ih [3U]`` and, with ``reset_after=True``,
            ``b_hh [3U]`` (row blocks r, z, n)
==========  =====================================================================

(no bias keys with ``use_bias=False``). :meth:`get_weights` / :meth:`set_weights` use Keras's
layout and order: ``[kernel [C, G*U], recurrent_kernel [U, G*U], bias]`` with column blocks
i, f, c, o (LSTM) or z, r, h (GRU) and a GRU bias of shape ``(2, 3U)`` when ``reset_after``
(row 0 input, row 1 recurrent) else ``(3U,)``. Initializers are applied in Keras's layout
(glorot over ``[C, G*U]``, orthogonal over ``[U, G*U]``) and then converted.

After :meth:`backward`, ``layer.d_initial_state`` holds the gradients w.r.t. the initial states
(``[dh0]`` or ``[dh0, dc0]``). ``layer.last_dropout_masks`` is the pair (input mask ``[N, C]``,
recurrent mask ``[N, U]``) of the last call, already scaled by ``1 / (1 - rate)``, each None when
not applied.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit import activations, initializers
from rnnkit import functional as F
from rnnkit._checks import as_float_array, check_positive_int, check_shape
from rnnkit.layers._gru_v1 import gru_v1_backward, gru_v1_forward
from rnnkit._threads import PerThread
from rnnkit.layers.base import Layer, Shape, check_mask

__all__ = ["SimpleRNN", "LSTM", "GRU"]


def _rate(name: str, v: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(v).__name__}")
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {v}")
    return v


def _swap_zr(a: np.ndarray, units: int) -> np.ndarray:
    """Swaps the first two blocks of ``units`` along the last axis (Keras z, r, h <-> r, z, h)."""
    U = units
    return np.concatenate([a[..., U:2 * U], a[..., :U], a[..., 2 * U:]], axis=-1)


class _RNN(Layer):
    """Shared machinery of the recurrent layers (see the module documentation)."""

    d_initial_state = PerThread("gradients w.r.t. the initial states from this thread's last backward")
    last_dropout_masks = PerThread("(input mask, recurrent mask) of this thread's last call")

    _CELL = ""
    _GATES = 1
    _STATES = 1

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", recurrent_initializer: Any = "orthogonal",
                 bias_initializer: Any = "zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.dropout = _rate("dropout", dropout)
        self.recurrent_dropout = _rate("recurrent_dropout", recurrent_dropout)
        if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected None or an int, got {type(seed).__name__}")
        self.seed = None if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.input_dim: Optional[int] = None
        self.states: Optional[List[np.ndarray]] = None
        self._states_lock = threading.Lock()

    # ---- parameters in Keras layout ------------------------------------------------------------
    def _bias_shape(self) -> Tuple[int, ...]:
        return (self._GATES * self.units,)

    def _init_bias(self) -> np.ndarray:
        return self.bias_initializer(self._bias_shape(), dtype=self.dtype)

    def _keras_shapes(self) -> List[Tuple[int, ...]]:
        C, U, G = self.input_dim, self.units, self._GATES
        shapes = [(C, G * U), (U, G * U)]
        if self.use_bias:
            shapes.append(self._bias_shape())
        return shapes

    def _to_internal(self, kernel: np.ndarray, recurrent: np.ndarray,
                     bias: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        out = {"w_ih": kernel.T, "w_hh": recurrent.T}
        if bias is not None:
            out["b_ih"] = bias
        return out

    def _to_keras(self) -> List[np.ndarray]:
        p = self.params
        out = [p["w_ih"].T.copy(), p["w_hh"].T.copy()]
        if self.use_bias:
            out.append(p["b_ih"].copy())
        return out

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: input_shape: expected 3 dimensions (batch, timesteps, features), "
                             f"got {input_shape}")
        C = input_shape[-1]
        if C is None:
            raise ValueError(f"{self.name}: input_shape: the feature size must be known, got {input_shape}")
        self.input_dim = check_positive_int("input features", C)
        C, U, G = self.input_dim, self.units, self._GATES
        internal: Dict[str, np.ndarray] = {}

        def init(key: str) -> Any:
            # the Keras-layout initializers run once, on first use, then convert to the kernels'
            # layout (never when the weights are being restored from a file)
            def make(shape: Tuple[int, ...], dtype: Any = None) -> np.ndarray:
                if not internal:
                    kernel = np.asarray(self.kernel_initializer((C, G * U), dtype=self.dtype), dtype=self.dtype)
                    recurrent = np.asarray(self.recurrent_initializer((U, G * U), dtype=self.dtype),
                                           dtype=self.dtype)
                    bias = np.asarray(self._init_bias(), dtype=self.dtype) if self.use_bias else None
                    internal.update(self._to_internal(kernel, recurrent, bias))
                return internal[key]
            return make

        shapes = {"w_ih": (G * U, C), "w_hh": (G * U, U)}
        if self.use_bias:
            shapes["b_ih"] = (G * U,)
            if self._bias_shape() == (2, G * U):
                shapes["b_hh"] = (G * U,)
        for k, shape in shapes.items():
            self.add_weight(k, shape, init(k))
        self.built = True

    def get_weights(self) -> List[np.ndarray]:
        """``[kernel, recurrent_kernel, bias]`` in Keras's layout and gate order (copies)."""
        if not self.built:
            return []
        return self._to_keras()

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets the parameters from Keras-layout arrays (see the module documentation)."""
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built; call it on data "
                             "or give input_shape")
        shapes = self._keras_shapes()
        names = ["kernel", "recurrent_kernel", "bias"][: len(shapes)]
        if len(weights) != len(shapes):
            raise ValueError(f"{self.name}: expected {len(shapes)} weight arrays {names} with shapes "
                             f"{shapes}, got {len(weights)}")
        arrs = []
        for nm, shp, w in zip(names, shapes, weights):
            w = np.asarray(w)
            if w.dtype.kind not in "fiu":
                raise TypeError(f"{self.name}: weight {nm!r} expected a numeric array, got dtype {w.dtype}")
            if w.shape != shp:
                raise ValueError(f"{self.name}: weight {nm!r} expected shape {shp}, got {w.shape}")
            arrs.append(w.astype(self.dtype))
        new = self._to_internal(arrs[0], arrs[1], arrs[2] if self.use_bias else None)
        for k, v in new.items():
            self.params[k][...] = v

    # ---- state ---------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Zeroes the kept states of a stateful layer (no effect before its first call)."""
        if self.states is not None:
            for s in self.states:
                s.fill(0)

    def reset_states(self) -> None:
        """Alias of :meth:`reset_state` (Keras compatibility)."""
        self.reset_state()

    def _initial_states(self, initial_state: Any, N: int) -> List[Optional[np.ndarray]]:
        if initial_state is None:
            if self.stateful:
                if self.states is None:
                    self.states = [np.zeros((N, self.units), dtype=self.dtype) for _ in range(self._STATES)]
                elif self.states[0].shape[0] != N:
                    raise ValueError(f"{self.name}: a stateful layer keeps its batch size: expected "
                                     f"{self.states[0].shape[0]} samples, got {N}")
                return list(self.states)
            return [None] * self._STATES
        if isinstance(initial_state, np.ndarray) and self._STATES == 1:
            initial_state = [initial_state]
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != self._STATES:
            got = len(initial_state) if isinstance(initial_state, (list, tuple)) else type(initial_state).__name__
            raise ValueError(f"{self.name}: initial_state: expected a list of {self._STATES} array(s) "
                             f"of shape ({N}, {self.units}), got {got}")
        out: List[Optional[np.ndarray]] = []
        for i, s in enumerate(initial_state):
            nm = f"{self.name}: initial_state[{i}]"
            s = np.asarray(as_float_array(nm, s), dtype=self.dtype)
            check_shape(nm, s, (N, self.units), "= (batch, units)")
            out.append(np.ascontiguousarray(s))
        return out

    # ---- running -------------------------------------------------------------------------------
    def _dropout_mask(self, rate: float, shape: Tuple[int, int]) -> np.ndarray:
        keep = self._rng.random(shape) >= rate
        return (keep / (1.0 - rate)).astype(self.dtype)

    def _run(self, xt: np.ndarray, states: List[Optional[np.ndarray]], mask: Optional[np.ndarray],
             rdm: Optional[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray], Any]:
        raise NotImplementedError(f"{type(self).__name__} does not implement _run")

    def _run_backward(self, cache: Any, dy: np.ndarray,
                      d_states: List[Optional[np.ndarray]]) -> Tuple[np.ndarray, List[np.ndarray], Dict[str, np.ndarray]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement _run_backward")

    def _kernel_kwargs(self, mask: Optional[np.ndarray], rdm: Optional[np.ndarray]) -> Dict[str, Any]:
        kw: Dict[str, Any] = {"mask": mask, "reverse": self.go_backwards,
                              "zero_output_for_mask": self.zero_output_for_mask}
        if rdm is not None:
            kw["recurrent_dropout_mask"] = rdm
        return kw

    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> Any:
        if not self.stateful:
            return self._call(x, mask, initial_state, training)
        # a stateful layer's calls are a sequence: each starts from the last one's final states
        with self._states_lock:
            return self._call(x, mask, initial_state, training)

    def _call(self, x: np.ndarray, mask: Optional[np.ndarray], initial_state: Any,
              training: bool) -> Any:
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x: expected 3 dimensions (batch, timesteps, features), "
                             f"got shape {x.shape}")
        N, T, C = x.shape
        if C != self.input_dim:
            raise ValueError(f"{self.name}: x: expected {self.input_dim} features (the built size), "
                             f"got shape {x.shape}")
        if N == 0 or T == 0:
            raise ValueError(f"{self.name}: x: batch and timesteps must be at least 1, got shape {x.shape}")
        m = check_mask(f"{self.name}: mask", mask, N, T)
        mT = None if m is None else np.ascontiguousarray(m.T)
        states = self._initial_states(initial_state, N)
        dp = self._dropout_mask(self.dropout, (N, C)) if training and self.dropout > 0 else None
        rdm = (self._dropout_mask(self.recurrent_dropout, (N, self.units))
               if training and self.recurrent_dropout > 0 else None)
        self.last_dropout_masks = (dp, rdm)
        xt = x.transpose(1, 0, 2)
        xt = np.ascontiguousarray(xt if dp is None else xt * dp[None])
        y, finals, cache = self._run(xt, states, mT, rdm)
        if self.stateful:
            self.states = [s.copy() for s in finals]
        last = 0 if self.go_backwards else T - 1
        if self.return_sequences:
            seq = y[::-1] if self.go_backwards else y
            out = np.ascontiguousarray(seq.transpose(1, 0, 2))
        else:
            out = y[last].copy()
        self._cache = (cache, dp, N, T, last)
        if self.return_state:
            return [out] + [s.copy() for s in finals]
        return out

    def backward(self, d_out: Any) -> Optional[np.ndarray]:
        """Gradient w.r.t. the input ``[N, T, C]`` (None when :attr:`needs_input_grad` is False) from the gradient w.r.t. the output (a list
        ``[d_output, d_h(, d_c)]`` with ``return_state``; ``None`` entries are zeros); parameter
        gradients are accumulated into :attr:`grads`."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward called before a forward call")
        cache, dp, N, T, last = self._cache
        U = self.units
        n_out = 1 + self._STATES
        if self.return_state:
            if not isinstance(d_out, (list, tuple)) or len(d_out) != n_out:
                got = len(d_out) if isinstance(d_out, (list, tuple)) else type(d_out).__name__
                raise ValueError(f"{self.name}: d_out: expected a list of {n_out} gradients "
                                 f"(output and states), got {got}")
            d_main, d_states = d_out[0], list(d_out[1:])
        else:
            if isinstance(d_out, (list, tuple)):
                raise ValueError(f"{self.name}: d_out: expected one array (return_state=False), "
                                 f"got a list of {len(d_out)}")
            d_main, d_states = d_out, [None] * self._STATES
        if d_main is not None and self.return_sequences:
            g = self._grad_array("d_out", d_main, (N, T, U))
            gk = g.transpose(1, 0, 2)
            # time-major dy: no copy when the gradient arrives as a view of time-major memory
            dy = np.ascontiguousarray(gk[::-1] if self.go_backwards else gk)
        else:
            dy = np.zeros((T, N, U), dtype=self.dtype)
            if d_main is not None:
                dy[last] = self._grad_array("d_out", d_main, (N, U))
        d_states = [None if s is None else self._grad_array(f"d_state[{i}]", s, (N, U))
                    for i, s in enumerate(d_states)]
        dx, d_init, pgrads = self._run_backward(cache, dy, d_states)
        self.accumulate_grads(pgrads)
        self.d_initial_state = d_init
        if dx is None:  # needs_input_grad is False: the caller wants no input gradient
            return None
        if dp is not None:
            dx *= dp[None]
        return np.ascontiguousarray(dx.transpose(1, 0, 2))

    def _grad_array(self, name: str, a: Any, shape: Tuple[int, ...]) -> np.ndarray:
        a = np.asarray(as_float_array(f"{self.name}: {name}", a, contiguous=False), dtype=self.dtype)
        check_shape(f"{self.name}: {name}", a, shape)
        return a

    # ---- shapes, masks, config -----------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Any:
        N, T = input_shape[0], input_shape[1]
        out = (N, T, self.units) if self.return_sequences else (N, self.units)
        if self.return_state:
            return [out] + [(N, self.units)] * self._STATES
        return out

    def compute_mask(self, x: Any, mask: Optional[np.ndarray]) -> Any:
        out = mask if self.return_sequences else None
        if self.return_state:
            return [out] + [None] * self._STATES
        return out

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
        })
        return cfg


def _only(name: str, value: Any, allowed: str, cell: str) -> None:
    if activations.get(value).name != allowed:
        raise ValueError(f"{name}: {cell}'s fused kernel supports only {allowed!r}, got "
                         f"{activations.get(value).name!r}")


class SimpleRNN(_RNN):
    r"""Fully-connected Elman RNN, Keras's ``SimpleRNN``:
    :math:`h_t = \mathrm{act}(x_t K + b + h_{t-1} R)`.

    Parameters
    ----------
    units
        Size of the state and output.
    activation
        ``'tanh'`` (default) or ``'relu'``.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed, return_sequences, return_state, go_backwards, stateful, unroll,
    zero_output_for_mask
        As in Keras 3 (see the module documentation).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C], mask: [N, T], initial_state: [[N, U]]
    -> [N, T, U] with ``return_sequences`` else [N, U]; plus ``h: [N, U]`` with ``return_state``.
    Keras weights: kernel [C, U], recurrent_kernel [U, U], bias [U].
    """

    _CELL, _GATES, _STATES = "SimpleRNN", 1, 1

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", recurrent_initializer: Any = "orthogonal",
                 bias_initializer: Any = "zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        name = activations.get(activation).name
        if name not in ("tanh", "relu"):
            raise ValueError(f"activation: SimpleRNN's fused kernel supports 'tanh' or 'relu', got {name!r}")
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, dropout, recurrent_dropout, seed, return_sequences,
                         return_state, go_backwards, stateful, unroll, zero_output_for_mask, **kwargs)

    def _run(self, xt, states, mask, rdm):
        p = self.params
        o = F.rnn_forward(xt, states[0], p["w_ih"], p["w_hh"], p.get("b_ih"), None,
                          nonlinearity=self.activation.name, **self._kernel_kwargs(mask, rdm))
        return o.y, [o.h_n], o.cache

    def _run_backward(self, cache, dy, d_states):
        g = F.rnn_backward(cache, dy, d_states[0], need_dx=self.needs_input_grad)
        pg = {"w_ih": g.dw_ih, "w_hh": g.dw_hh}
        if self.use_bias:
            pg["b_ih"] = g.db_ih
        return g.dx, [g.dh0], pg


class LSTM(_RNN):
    r"""Long short-term memory, Keras's ``LSTM`` (gates i, f, c, o; ``h = o tanh(c)``).

    Parameters
    ----------
    units
        Size of the states and output.
    activation, recurrent_activation
        Only ``'tanh'`` and ``'sigmoid'`` (what the fused kernel computes); others raise ValueError.
    unit_forget_bias
        Initialise the forget-gate block of the bias to one (Keras default True).
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed, return_sequences, return_state, go_backwards, stateful, unroll,
    zero_output_for_mask
        As in Keras 3 (see the module documentation).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C], mask: [N, T], initial_state: [h [N, U], c [N, U]]
    -> [N, T, U] with ``return_sequences`` else [N, U]; plus ``h, c: [N, U]`` with ``return_state``.
    Keras weights: kernel [C, 4U], recurrent_kernel [U, 4U], bias [4U].
    """

    _CELL, _GATES, _STATES = "LSTM", 4, 2

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        _only("activation", activation, "tanh", "LSTM")
        _only("recurrent_activation", recurrent_activation, "sigmoid", "LSTM")
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, dropout, recurrent_dropout, seed, return_sequences,
                         return_state, go_backwards, stateful, unroll, zero_output_for_mask, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _init_bias(self) -> np.ndarray:
        U = self.units
        if not self.unit_forget_bias:
            return self.bias_initializer((4 * U,), dtype=self.dtype)
        return np.concatenate([
            np.asarray(self.bias_initializer((U,), dtype=self.dtype)),
            np.ones((U,), dtype=self.dtype),
            np.asarray(self.bias_initializer((2 * U,), dtype=self.dtype)),
        ])

    def _run(self, xt, states, mask, rdm):
        p = self.params
        o = F.lstm_forward(xt, states[0], states[1], p["w_ih"], p["w_hh"], p.get("b_ih"), None,
                           **self._kernel_kwargs(mask, rdm))
        return o.y, [o.h_n, o.c_n], o.cache

    def _run_backward(self, cache, dy, d_states):
        g = F.lstm_backward(cache, dy, d_states[0], d_states[1],
                            need_dx=self.needs_input_grad)
        pg = {"w_ih": g.dw_ih, "w_hh": g.dw_hh}
        if self.use_bias:
            pg["b_ih"] = g.db_ih
        return g.dx, [g.dh0, g.dc0], pg

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        cfg["unit_forget_bias"] = self.unit_forget_bias
        return cfg


class GRU(_RNN):
    r"""Gated recurrent unit, Keras's ``GRU`` (gates z, r, h; ``h_t = z h_{t-1} + (1 - z) hh``).

    Parameters
    ----------
    units
        Size of the state and output.
    activation, recurrent_activation
        Only ``'tanh'`` and ``'sigmoid'``; others raise ValueError.
    reset_after
        True (default, Keras 3 and PyTorch's form, run by the compiled kernel): the reset gate
        multiplies ``h R_h + b_rec``; False (the original form, run in vectorised NumPy): it
        multiplies ``h`` before the product, and there is no recurrent bias.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed, return_sequences, return_state, go_backwards, stateful, unroll,
    zero_output_for_mask
        As in Keras 3 (see the module documentation).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C], mask: [N, T], initial_state: [[N, U]]
    -> [N, T, U] with ``return_sequences`` else [N, U]; plus ``h: [N, U]`` with ``return_state``.
    Keras weights: kernel [C, 3U], recurrent_kernel [U, 3U], bias [2, 3U] (``reset_after``) or
    [3U].
    """

    _CELL, _GATES, _STATES = "GRU", 3, 1

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, seed: Optional[int] = None,
                 return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, reset_after: bool = True,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        _only("activation", activation, "tanh", "GRU")
        _only("recurrent_activation", recurrent_activation, "sigmoid", "GRU")
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, dropout, recurrent_dropout, seed, return_sequences,
                         return_state, go_backwards, stateful, unroll, zero_output_for_mask, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.reset_after = bool(reset_after)

    def _bias_shape(self) -> Tuple[int, ...]:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _to_internal(self, kernel, recurrent, bias):
        U = self.units
        out = {"w_ih": _swap_zr(kernel, U).T, "w_hh": _swap_zr(recurrent, U).T}
        if bias is not None:
            if self.reset_after:
                out["b_ih"] = _swap_zr(bias[0], U)
                out["b_hh"] = _swap_zr(bias[1], U)
            else:
                out["b_ih"] = _swap_zr(bias, U)
        return out

    def _to_keras(self) -> List[np.ndarray]:
        U = self.units
        p = self.params
        out = [_swap_zr(p["w_ih"].T, U), _swap_zr(p["w_hh"].T, U)]
        if self.use_bias:
            if self.reset_after:
                out.append(np.stack([_swap_zr(p["b_ih"], U), _swap_zr(p["b_hh"], U)]))
            else:
                out.append(_swap_zr(p["b_ih"], U))
        return out

    def _run(self, xt, states, mask, rdm):
        p = self.params
        kw = self._kernel_kwargs(mask, rdm)
        if self.reset_after:
            o = F.gru_forward(xt, states[0], p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh"), **kw)
        else:
            o = gru_v1_forward(xt, states[0], p["w_ih"], p["w_hh"], p.get("b_ih"), **kw)
        return o.y, [o.h_n], o.cache

    def _run_backward(self, cache, dy, d_states):
        pg = {}
        if self.reset_after:
            g = F.gru_backward(cache, dy, d_states[0], need_dx=self.needs_input_grad)
            if self.use_bias:
                pg["b_ih"], pg["b_hh"] = g.db_ih, g.db_hh
        else:
            g = gru_v1_backward(cache, dy, d_states[0])
            if self.use_bias:
                pg["b_ih"] = g.db_ih
        pg["w_ih"], pg["w_hh"] = g.dw_ih, g.dw_hh
        return g.dx, [g.dh0], pg

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        cfg["reset_after"] = self.reset_after
        return cfg
