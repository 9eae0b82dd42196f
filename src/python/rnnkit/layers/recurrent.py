"""Keras-style recurrent layers: :class:`SimpleRNN`, :class:`LSTM`, :class:`GRU`.

Thin adapters over the one recurrent op, :mod:`rnnkit._recurrent`: they translate Keras's
arguments, batch-major shapes and weight layout, and keep nothing of a call on the layer (a
call's state lives in its :class:`~rnnkit.layers.base.Context`). Arguments, defaults and
semantics follow Keras 3:

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
- ``initial_state``: a list of ``[N, U]`` arrays (``[h]`` or ``[h, c]``); in a functional model,
  KerasTensors (e.g. an encoder's ``return_state`` outputs), and gradients flow back into them.
- ``dropout`` / ``recurrent_dropout``: in training, one inverted-dropout mask per sequence (the
  same at every step), ``[N, C]`` on the inputs and ``[N, U]`` on :math:`h_{t-1}` where it
  enters the recurrent product (the same mask for every gate; GRU's :math:`z h_{t-1}` term uses
  the undropped state). ``seed`` seeds the dropout generator.
- ``stateful=True``: the final states of a call are the initial states of the next one (batch
  size fixed by the first call); ``reset_state()`` zeroes them. Gradients stop at the call
  boundary (truncated backpropagation through time). Calls of one stateful layer from several
  threads run one at a time.
- ``unroll`` is accepted for Keras configs and has no effect (the kernels are fused loops).
- ``recompute`` (rnnkit's addition, keyword only; default None): gradient checkpointing along
  time for long sequences. ``recompute="sqrt"`` (segments of ``ceil(sqrt(T))`` steps) or a
  segment length ``S``: a training call keeps only the states at the segments' starts and the
  backward reruns each segment's forward, so training memory grows as O(T/S + S) instead of
  O(T), for one extra forward. Gradients equal the full cache's up to summation order.

Sequences stay time-major inside: the output sequence is a batch-major *view* of the kernel's
time-major result, so the next recurrent layer reads it without a copy.

Parameters (``layer.params`` / ``layer.grads`` keys) are kept in the kernels' layout (see
:mod:`rnnkit._layouts`) so a call converts nothing:

==========  =====================================================================
SimpleRNN   ``w_ih [U, C]``, ``w_hh [U, U]``, ``b_ih [U]``
LSTM        ``w_ih [4U, C]``, ``w_hh [4U, U]``, ``b_ih [4U]`` (row blocks i, f, g, o)
GRU         ``w_ih [3U, C]``, ``w_hh [3U, U]``, ``b_ih [3U]`` and, with ``reset_after=True``,
            ``b_hh [3U]`` (row blocks r, z, n)
==========  =====================================================================

A call's context also carries ``ctx.final_states`` (the final states, also without
``return_state``), and a caller may set ``ctx.d_final_states`` (gradients w.r.t. them) before
``backward``: how :class:`~rnnkit.models.RecurrentNetwork` threads states through a stack.

After :meth:`~rnnkit.layers.base.Layer.backward`, ``layer.d_initial_state`` holds the calling
thread's gradients w.r.t. the initial states (``[dh0]`` or ``[dh0, dc0]``), and
``layer.last_dropout_masks`` the pair (input mask ``[N, C]``, recurrent mask ``[N, U]``) of its
last call, already scaled by ``1 / (1 - rate)``, each None when not applied.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit import _layouts, _recurrent, activations, initializers
from rnnkit._random import generator
from rnnkit._recording import gradient_flow_recorder
from rnnkit._checks import as_float_array, check_cell_activations, check_positive_int
from rnnkit._checks import check_bool, check_rate, check_seed, check_shape
from rnnkit._threads import PerThread
from rnnkit.layers.base import Context, Layer, Shape, check_grad, check_mask

__all__ = ["SimpleRNN", "LSTM", "GRU"]


class _RNN(Layer):
    """Shared machinery of the recurrent layers (see the module documentation)."""

    supports_masking = True
    _CELL = ""         # layout cell: "rnn", "lstm", "gru"
    _STATES = 1

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", recurrent_initializer: Any = "orthogonal",
                 bias_initializer: Any = "zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, recompute: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        _recurrent.segment_length(recompute, 2)  # validates: None, a segment length >= 1 or "sqrt"
        # gradient checkpointing along time (rnnkit's addition): see _recurrent.forward
        self.recompute = recompute
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.dropout = check_rate("dropout", dropout)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        self.seed = check_seed("seed", seed)
        self.rng = generator(self.seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.input_dim: Optional[int] = None
        self.states: Optional[List[np.ndarray]] = None
        self._states_lock = threading.Lock()

    # ---- what the kernel runs -------------------------------------------------------------------
    @property
    def cell(self) -> str:
        """The :mod:`rnnkit._recurrent` cell this layer runs."""
        return self._CELL + ("_ln" if getattr(self, "layer_norm", False) else "")

    def _ln_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """The LayerNorm weights (``layer_norm=True``) and their shapes, in get_weights order."""
        if not getattr(self, "layer_norm", False):
            return {}
        G, U = _layouts.GATES[self._CELL], self.units
        shapes = {"gamma_x": (G * U,), "gamma_h": (G * U,)}
        if self._CELL == "lstm":
            shapes.update({"gamma_c": (U,), "beta_c": (U,)})
        return shapes

    def _reset_after(self) -> bool:
        return True

    def _zoneout(self, rate: float, training: bool, shape: Tuple[int, ...], dtype: Any) -> Any:
        """A state's zoneout for one call: None without it; in training a fresh per-step mask
        ``[T, N, U]`` (1 = keep the previous value, with probability ``rate``); at inference the
        rate itself (the expectation)."""
        if not rate:
            return None
        if training:
            return (self.rng.random(shape) < rate).astype(dtype)
        return float(rate)

    def _recurrent_activation_name(self) -> str:
        ra = getattr(self, "recurrent_activation", None)
        return "sigmoid" if ra is None else ra.name

    def kernel_weights(self) -> Dict[str, Optional[np.ndarray]]:
        """The live parameter arrays in rnnkit's layout: ``{"w_ih", "w_hh", "b_ih", "b_hh"}``."""
        p = self.params
        w = {"w_ih": p["w_ih"], "w_hh": p["w_hh"], "b_ih": p.get("b_ih"), "b_hh": p.get("b_hh")}
        w.update({k: p[k] for k in self._ln_shapes()})
        return w

    # ---- parameters in Keras layout ------------------------------------------------------------
    def _init_bias(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.bias_initializer(shape, dtype=dtype)

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: input_shape: expected 3 dimensions (batch, timesteps, features), "
                             f"got {input_shape}")
        C = input_shape[-1]
        if C is None:
            raise ValueError(f"{self.name}: input_shape: the feature size must be known, got {input_shape}")
        self.input_dim = check_positive_int("input features", C)
        C, U = self.input_dim, self.units
        shapes = _layouts.keras_weight_shapes(self._CELL, C, U, self.use_bias, self._reset_after())
        internal: Dict[str, Optional[np.ndarray]] = {}

        def init(key: str) -> Any:
            # the Keras-layout initializers run once, on first use, then convert to the kernels'
            # layout (never when the weights are being restored from a file)
            def make(shape: Tuple[int, ...], dtype: Any = None) -> np.ndarray:
                if not internal:
                    kernel = self.kernel_initializer(shapes[0], dtype=self.dtype)
                    recurrent = self.recurrent_initializer(shapes[1], dtype=self.dtype)
                    bias = self._init_bias(shapes[2], self.dtype) if self.use_bias else None
                    internal.update(_layouts.keras_to_internal(self._CELL, kernel, recurrent, bias,
                                                               self._reset_after()))
                return internal[key]
            return make

        G = _layouts.GATES[self._CELL]
        keys = ["w_ih", "w_hh"] + (["b_ih"] if self.use_bias else []) + \
            (["b_hh"] if self.use_bias and len(shapes[2]) == 2 else [])
        own = {"w_ih": (G * U, C), "w_hh": (G * U, U), "b_ih": (G * U,), "b_hh": (G * U,)}
        for k in keys:
            self.add_weight(k, own[k], init(k))
        for k, shp in self._ln_shapes().items():  # LayerNorm gains start at 1, the bias at 0
            self.add_weight(k, shp, "zeros" if k == "beta_c" else "ones")
        self.built = True

    def get_weights(self) -> List[np.ndarray]:
        """``[kernel, recurrent_kernel, bias]`` in Keras's layout and gate order (copies)."""
        if not self.built:
            return []
        w = self.kernel_weights()
        out = _layouts.internal_to_keras(self._CELL, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                                         self._reset_after(), self.use_bias)
        # LayerNorm gains in Keras's gate order, then the cell state's gain and bias
        for k in self._ln_shapes():
            out.append(_layouts.permute_gates(w[k], self._CELL, "rnnkit", "keras")
                       if k in ("gamma_x", "gamma_h") else w[k].copy())
        return out

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Sets the parameters from Keras-layout arrays (see the module documentation)."""
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built; call it on data "
                             "or give input_shape")
        shapes = _layouts.keras_weight_shapes(self._CELL, self.input_dim, self.units, self.use_bias,
                                              self._reset_after())
        names = ["kernel", "recurrent_kernel", "bias"][: len(shapes)]
        ln = self._ln_shapes()
        shapes = list(shapes) + list(ln.values())
        names = names + list(ln)
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
        n_main = len(arrs) - len(ln)
        new = _layouts.keras_to_internal(self._CELL, arrs[0], arrs[1], arrs[2] if self.use_bias else None,
                                         self._reset_after())
        for k, a in zip(ln, arrs[n_main:]):
            new[k] = _layouts.permute_gates(a, self._CELL, "keras", "rnnkit") if k in ("gamma_x", "gamma_h") else a
        for k, p in self.params.items():
            p[...] = new[k]

    # ---- streaming -----------------------------------------------------------------------------
    def stream(self, batch_size: int = 1, precision: str = "float32") -> Any:
        """A stateful step-by-step runner of this layer's cell, with its current weights copied
        into C++ (see :mod:`rnnkit.streaming`): dropout is off, zoneout takes its expectation,
        and a later change of the weights needs a new stream. ``precision``: 'float32',
        'bfloat16' or 'int8' weights (see :mod:`rnnkit.streaming`).

        Shapes
        ------
        ``step``: x [N, C] -> h [N, U];  ``run``: x [steps, N, C] -> [steps, N, U]; N = batch_size
        """
        from rnnkit import streaming

        if not self.built:
            raise ValueError(f"{self.name}: stream: the layer is not built; call it on data or give "
                             "input_shape first")
        if self.go_backwards:
            raise ValueError(f"{self.name}: stream: go_backwards needs the whole sequence (it starts at "
                             "the end); stream a forward layer")
        w = self.kernel_weights()
        base = {"w_ih": w["w_ih"], "w_hh": w["w_hh"], "b_ih": w["b_ih"], "b_hh": w["b_hh"],
                "batch_size": batch_size, "precision": precision}
        ln = {k: w[k] for k in self._ln_shapes()}
        if self._CELL == "rnn":
            return streaming.RNNStream(**base, nonlinearity=self.activation.name)
        acts = {"activation": self.activation.name, "recurrent_activation": self._recurrent_activation_name()}
        if self._CELL == "lstm":
            return streaming.LSTMStream(**base, **acts, zoneout=self.zoneout, zoneout_cell=self.zoneout_cell,
                                        **ln)
        return streaming.GRUStream(**base, **acts, reset_after=self.reset_after, zoneout=self.zoneout, **ln)

    # ---- state ---------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Zeroes the kept states of a stateful layer (no effect before its first call)."""
        with self._states_lock:
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
            out.append(s)
        return out

    # ---- running -------------------------------------------------------------------------------
    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None,
             initial_state: Any = None) -> Any:
        lock = self._states_lock if self.stateful else contextlib.nullcontext()
        with lock:  # a stateful layer's calls are a sequence: each starts from the last one's states
            return self._call(x, ctx, training, mask, initial_state)

    def _call(self, x: np.ndarray, ctx: Context, training: bool, mask: Any, initial_state: Any) -> Any:
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
        states = self._initial_states(initial_state, N)
        dtype = self.dtype
        dp = _recurrent.dropout_mask(self.rng, self.dropout, (N, C), dtype) \
            if training and self.dropout > 0 else None
        rdm = _recurrent.dropout_mask(self.rng, self.recurrent_dropout, (N, self.units), dtype) \
            if training and self.recurrent_dropout > 0 else None
        xt = x.transpose(1, 0, 2)  # time-major: no copy when x is a view of time-major memory
        if dp is not None:
            xt = xt * dp[None]
        zh = self._zoneout(getattr(self, "zoneout", 0.0), training, (T, N, self.units), dtype)
        zc = self._zoneout(getattr(self, "zoneout_cell", 0.0), training, (T, N, self.units), dtype)
        run = _recurrent.forward(self.cell, xt, self.kernel_weights(), states,
                                 mask=None if m is None else np.ascontiguousarray(m.T),
                                 reverse=self.go_backwards, zero_output=self.zero_output_for_mask,
                                 rd=rdm, activation=self.activation.name,
                                 recurrent_activation=self._recurrent_activation_name(),
                                 zoneout_h=zh, zoneout_c=zc, recompute=self.recompute if training else None)
        if self.stateful:
            self.states = [s.copy() for s in run.finals]
        last = 0 if self.go_backwards else T - 1
        if self.return_sequences:
            out = (run.y[::-1] if self.go_backwards else run.y).transpose(1, 0, 2)
        else:
            out = run.y[last].copy()
        ctx.run, ctx.dp, ctx.rdm, ctx.N, ctx.T, ctx.last = run, dp, rdm, N, T, last
        # the final states, also without return_state (what RecurrentNetwork threads through)
        ctx.final_states = run.finals
        ctx.has_initial_state = initial_state is not None
        if self.return_state:
            return [out] + [s.copy() for s in run.finals]
        return out

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        """Gradient w.r.t. the input ``[N, T, C]`` (None when the call's ``need_input_grad`` is
        False) from the gradient w.r.t. the output (a list ``[d_output, d_h(, d_c)]`` with
        ``return_state``; ``None`` entries are zeros); parameter gradients are accumulated into
        :attr:`grads`; the initial-state gradients go to ``ctx.d_initial_state`` (and
        ``ctx.kwarg_grads["initial_state"]`` when the call had an ``initial_state``)."""
        N, T, U, last = ctx.N, ctx.T, self.units, ctx.last
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
            gk = check_grad(self, "d_out", d_main, (N, T, U)).transpose(1, 0, 2)
            # time-major dy: no copy when the gradient arrives as a view of time-major memory
            dy = np.ascontiguousarray(gk[::-1] if self.go_backwards else gk)
        else:
            dy = np.zeros((T, N, U), dtype=self.dtype)
            if d_main is not None:
                dy[last] = check_grad(self, "d_out", d_main, (N, U))
        # gradients w.r.t. the final states may also come through ctx.d_final_states (set by a
        # caller that took the states from ctx.final_states); both add up
        extra = getattr(ctx, "d_final_states", None) or [None] * self._STATES
        d_states = [_sum_grads(None if s is None else check_grad(self, f"d_state[{i}]", s, (N, U)),
                               None if e is None else check_grad(self, f"d_final_states[{i}]", e, (N, U)))
                    for i, (s, e) in enumerate(zip(d_states, extra))]
        d_states = [None if s is None else np.ascontiguousarray(s) for s in d_states]
        recorder = gradient_flow_recorder()
        norms = np.empty((T, N)) if recorder is not None else None  # ‖dL/dh_t‖, diagnostics only
        dx, d_init, grads = _recurrent.backward(self.cell, ctx.run.cache, dy, d_states,
                                                need_dx=ctx.need_input_grad, dh_norms=norms)
        if recorder is not None:
            recorder.setdefault(self.name, []).append(norms)
        self.accumulate_grads({k: g for k, g in grads.items() if k in self.grads})
        ctx.d_initial_state = d_init
        self._last_d_initial_state = d_init
        if ctx.has_initial_state:
            ctx.kwarg_grads["initial_state"] = d_init
        if dx is None:
            return None
        if ctx.dp is not None:
            dx *= ctx.dp[None]
        return dx.transpose(1, 0, 2)

    _last_d_initial_state = PerThread("initial-state gradients of the calling thread's last backward")

    @property
    def d_initial_state(self) -> Optional[List[np.ndarray]]:
        """Gradients w.r.t. the initial states from the calling thread's last backward."""
        return self._last_d_initial_state

    @property
    def last_dropout_masks(self) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(input mask, recurrent mask) of the calling thread's last call."""
        ctx = self._last
        return (None, None) if ctx is None else (ctx.dp, ctx.rdm)

    # ---- shapes, masks, config -----------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Any:
        N, T = input_shape[0], input_shape[1]
        out = (N, T, self.units) if self.return_sequences else (N, self.units)
        if self.return_state:
            return [out] + [(N, self.units)] * self._STATES
        return out

    def compute_mask(self, x: Any, mask: Any) -> Any:
        # as Keras: the input mask, also for go_backwards (whose output sequence is reversed)
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
        if self.recompute is not None:  # rnnkit's own argument: only when used (Keras has none)
            cfg["recompute"] = self.recompute
        return cfg


def _sum_grads(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is None:
        return b
    return a if b is None else a + b


def _kernel_activations(activation: Any, recurrent_activation: Any = None) -> None:
    """Raises ValueError unless the fused kernels compute these activations (any Keras
    identifier that names one of them: a string, the function, None for linear)."""
    check_cell_activations(activations.get(activation).name,
                           None if recurrent_activation is None else activations.get(recurrent_activation).name)


class SimpleRNN(_RNN):
    r"""Fully-connected Elman RNN, Keras's ``SimpleRNN``:
    :math:`h_t = \phi(x_t K + b + h_{t-1} R)`.

    Parameters
    ----------
    units
        Size of the state and output.
    activation
        ``'tanh'`` (default), ``'relu'`` or ``'linear'`` (None), all in the fused kernel; other
        activations raise ValueError.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed, return_sequences, return_state, go_backwards, stateful, unroll,
    zero_output_for_mask, recompute
        As in Keras 3 (see the module documentation).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C], mask: [N, T], initial_state: [[N, U]]
    -> [N, T, U] with ``return_sequences`` else [N, U]; plus ``h: [N, U]`` with ``return_state``.
    Keras weights: kernel [C, U], recurrent_kernel [U, U], bias [U].
    """

    _CELL, _STATES = "rnn", 1

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", recurrent_initializer: Any = "orthogonal",
                 bias_initializer: Any = "zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        _kernel_activations(activation)
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, dropout, recurrent_dropout, seed, return_sequences,
                         return_state, go_backwards, stateful, unroll, zero_output_for_mask, **kwargs)


class LSTM(_RNN):
    r"""Long short-term memory, Keras's ``LSTM`` (gates i, f, c, o; ``h = o φ(c)``).

    Parameters
    ----------
    units
        Size of the states and output.
    activation
        φ of the candidate and the output: ``'tanh'`` (default), ``'relu'`` or ``'linear'``.
    recurrent_activation
        σ of the gates: ``'sigmoid'`` (default) or ``'hard_sigmoid'`` (Keras 3's,
        ``clip(x/6 + 1/2, 0, 1)``). Every pair runs in the fused kernels at the same speed;
        other activations raise ValueError.
    layer_norm
        If True, the layer-normalized LSTM (haste's ``LayerNormLSTM``; see
        :func:`rnnkit.functional.layernorm_lstm_forward`), with the extra weights ``gamma_x``,
        ``gamma_h`` ([4U], Keras gate order in ``get_weights``), ``gamma_c``, ``beta_c`` ([U]).
        An rnnkit extension (keyword only), in the fused kernels.
    zoneout, zoneout_cell
        Zoneout rates of ``h`` and of ``c`` in [0, 1) (Krueger et al. 2016, who suggest 0.05 and
        0.5; haste's ``zoneout`` is the first): in training each unit keeps its previous value
        with that probability at every step, at inference the state moves by ``1 - rate`` of the
        way. rnnkit extensions (keyword only), in the fused kernels.
    unit_forget_bias
        Initialise the forget-gate block of the bias to one (Keras default True).
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed, return_sequences, return_state, go_backwards, stateful, unroll,
    zero_output_for_mask, recompute
        As in Keras 3 (see the module documentation).
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C], mask: [N, T], initial_state: [h [N, U], c [N, U]]
    -> [N, T, U] with ``return_sequences`` else [N, U]; plus ``h, c: [N, U]`` with ``return_state``.
    Keras weights: kernel [C, 4U], recurrent_kernel [U, 4U], bias [4U].
    """

    _CELL, _STATES = "lstm", 2

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, *, zoneout: float = 0.0,
                 zoneout_cell: float = 0.0, layer_norm: bool = False, **kwargs: Any) -> None:
        _kernel_activations(activation, recurrent_activation)
        self.layer_norm = check_bool("layer_norm", layer_norm)
        if self.layer_norm and (zoneout or zoneout_cell):
            raise ValueError("zoneout, zoneout_cell: the LayerNorm LSTM has no zoneout; use one or the other")
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, dropout, recurrent_dropout, seed, return_sequences,
                         return_state, go_backwards, stateful, unroll, zero_output_for_mask, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.zoneout = check_rate("zoneout", zoneout)
        self.zoneout_cell = check_rate("zoneout_cell", zoneout_cell)

    def _init_bias(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        U = self.units
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype=dtype)
        return np.concatenate([
            np.asarray(self.bias_initializer((U,), dtype=dtype)),
            np.ones((U,), dtype=dtype),
            np.asarray(self.bias_initializer((2 * U,), dtype=dtype)),
        ])

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        cfg["unit_forget_bias"] = self.unit_forget_bias
        cfg["zoneout"] = self.zoneout
        cfg["zoneout_cell"] = self.zoneout_cell
        cfg["layer_norm"] = self.layer_norm
        return cfg


class GRU(_RNN):
    """Gated recurrent unit, Keras's ``GRU`` (gates z, r, h; ``h_t = z h_{t-1} + (1 - z) hh``).

    Parameters
    ----------
    units
        Size of the state and output.
    activation
        φ of the candidate: ``'tanh'`` (default), ``'relu'`` or ``'linear'``.
    recurrent_activation
        σ of the gates: ``'sigmoid'`` (default) or ``'hard_sigmoid'``. All in the fused kernels;
        other activations raise ValueError.
    layer_norm
        If True, the layer-normalized GRU (haste's ``LayerNormGRU``; see
        :func:`rnnkit.functional.layernorm_gru_forward`; ``reset_after=True`` only), with the
        extra weights ``gamma_x``, ``gamma_h`` ([3U], Keras gate order in ``get_weights``). An
        rnnkit extension (keyword only).
    zoneout
        Zoneout rate of ``h`` in [0, 1) (Krueger et al. 2016; haste's ``zoneout``): in training
        each unit keeps its previous value with that probability at every step, at inference the
        state moves by ``1 - zoneout`` of the way. An rnnkit extension (keyword only).
    reset_after
        True (default, Keras 3 and PyTorch's form, run by the compiled kernel): the reset gate
        multiplies ``h R_h + b_rec``; False (the original form, run in vectorised NumPy): it
        multiplies ``h`` before the product, and there is no recurrent bias.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed, return_sequences, return_state, go_backwards, stateful, unroll,
    zero_output_for_mask, recompute
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

    _CELL, _STATES = "gru", 1

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, seed: Optional[int] = None,
                 return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, reset_after: bool = True,
                 zero_output_for_mask: bool = False, *, zoneout: float = 0.0, layer_norm: bool = False,
                 **kwargs: Any) -> None:
        _kernel_activations(activation, recurrent_activation)
        self.layer_norm = check_bool("layer_norm", layer_norm)
        if self.layer_norm and not reset_after:
            raise ValueError("layer_norm: the LayerNorm GRU has PyTorch's form only, it needs reset_after=True")
        if self.layer_norm and zoneout:
            raise ValueError("zoneout: the LayerNorm GRU has no zoneout; use one or the other")
        super().__init__(units, activation, use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, dropout, recurrent_dropout, seed, return_sequences,
                         return_state, go_backwards, stateful, unroll, zero_output_for_mask, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.reset_after = bool(reset_after)
        self.zoneout = check_rate("zoneout", zoneout)

    @property
    def cell(self) -> str:
        if self.layer_norm:
            return "gru_ln"
        return "gru" if self.reset_after else "gru_v1"

    def _reset_after(self) -> bool:
        return self.reset_after

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        cfg["reset_after"] = self.reset_after
        cfg["zoneout"] = self.zoneout
        cfg["layer_norm"] = self.layer_norm
        return cfg
