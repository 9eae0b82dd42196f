r"""Keras 3's recurrent cells and the generic :class:`RNN` layer: :class:`SimpleRNNCell`,
:class:`LSTMCell`, :class:`GRUCell`, :class:`StackedRNNCells`, :class:`RNN`, and the cell protocol
(:class:`AbstractRNNCell`) for cells of your own.

Two paths
---------
- **Fused** (``RNN(LSTMCell(n))``, ``RNN(GRUCell(n))``, ``RNN(SimpleRNNCell(n))``): the RNN runs
  the whole sequence in the fused kernels, through the very layer that ``LSTM``/``GRU``/
  ``SimpleRNN`` are (:mod:`rnnkit.layers.recurrent`), built from the cell's hyper-parameters and
  the RNN's flags and sharing the cell's weight arrays. Everything those layers do (masks with
  holes, ``initial_state``, ``return_state``, ``go_backwards``, ``stateful``, ``dropout``/
  ``recurrent_dropout``, activations, ``zero_output_for_mask``) is therefore identical, and as
  fast.
- **Step by step** (any other cell: your own :class:`AbstractRNNCell`, a
  :class:`StackedRNNCells`): the RNN loops over the time steps in Python, calling the cell once
  per step, and backpropagates through time by calling the cell's step backward in reverse
  order. Slower (one Python call per step and cell), with the same semantics (below).

Calling a cell directly runs one step, as in Keras 3: ``output, new_states = cell(x_t, states)``
(``states``: a list, e.g. ``[h, c]``, or a bare array for a one-state cell, which then returns a
bare new state; None means zeros). The built-in cells run that step in the same fused kernels
(``T = 1``). ``cell.backward(d_output, d_states)`` backpropagates through the calling thread's
last direct call (or ``ctx=`` any earlier one, from ``cell.apply``) and returns
``(d_x_t, d_prev_states)``, the latter in the structure of the call's ``states``.

The cell protocol
-----------------
A cell of your own subclasses :class:`AbstractRNNCell` (a :class:`~rnnkit.layers.base.Layer`) and
defines:

- ``state_size``: an int (one state) or a list of ints (e.g. ``[units, units]``), set in
  ``__init__``; ``output_size`` (optional, default: the first state's size);
- ``build(input_shape)`` with ``input_shape = (batch, features)``: creates the weights with
  :meth:`~rnnkit.layers.base.Layer.add_weight`;
- ``call(inputs, states, ctx, training=False) -> (output, new_states)``: one step; ``inputs``
  ``[N, C]``, ``states`` a list of ``[N, size]`` arrays (one per ``state_size`` entry), and
  ``ctx`` a fresh :class:`~rnnkit.layers.base.Context` for this step, where the cell keeps what
  its backward needs (as :meth:`Layer.call <rnnkit.layers.base.Layer.call>` does);
- ``backprop(d_output, d_states, ctx) -> (d_inputs, d_prev_states)``: that step's backward, from
  the gradients w.r.t. its output and new states (arrays, zeros where nothing flows) to those
  w.r.t. its inputs (may be None when ``ctx.need_input_grad`` is False) and previous states (a
  list like ``states``); it adds its parameter gradients with
  :meth:`~rnnkit.layers.base.Layer.accumulate_grads`.

Per-step contexts carry ``ctx.training``, ``ctx.need_input_grad`` and ``ctx.sequence``: a dict
shared by every step of one RNN call (None for a direct call), where a cell keeps what is drawn
once per sequence, such as dropout masks (the built-in cells do); ``step_info`` and
``kwarg_grads`` are the framework's too (a cell must not overwrite these five names).
``get_config`` as for any layer (the class registers itself under its name for deserialization).

Semantics of the step-by-step path (those of the fused layers and of Keras 3)
------------------------------------------------------------------------------
- ``mask`` ``[N, T]``: the cell runs on the whole batch at every step; where a sample's step is
  masked, its states are carried unchanged and its output is the carried first state (for
  :class:`StackedRNNCells`: the last cell's first state), as Keras's JAX and NumPy backends do,
  or zero with ``zero_output_for_mask=True``. (A masked output needs ``output_size`` equal to
  that state's size, else ``zero_output_for_mask=True``.) The non-sequence output is the last
  element of the output sequence.
- ``go_backwards``: steps run from the last to the first and the output sequence is in processing
  order (reversed in time).
- ``initial_state``: a list of arrays, one per state (nested lists, as Keras's
  ``StackedRNNCells`` states, are flattened); default: ``cell.get_initial_state(batch)`` (zeros).
  ``return_state`` appends the final states, flattened, after the output.
- ``stateful``: the final states of a call start the next (batch size fixed by the first call;
  ``reset_state()`` zeroes them; gradients stop at the call boundary).

Deviations from Keras 3
-----------------------
- Regularizers and constraints are not accepted (as for the ``LSTM``/``GRU``/``SimpleRNN``
  layers); ``unroll`` is accepted and has no effect.
- A directly called cell draws fresh dropout masks at every call (Keras keeps them until
  ``reset_dropout_mask()``); within an RNN call both draw one mask per sequence.
- ``return_state`` of an ``RNN(StackedRNNCells(...))`` returns the states flattened
  (``[output, h1, c1, h2]``) where Keras nests them per cell.
- A cell cannot be a node of a functional model on its own (wrap it in :class:`RNN`).
- The RNN reads its cell's hyper-parameters (activations, dropout rates) when it is constructed.

Shapes
------
Cells: ``x_t [N, C]``, states ``[N, state_size[i]]`` -> output ``[N, output_size]``, new states
like the states. RNN: ``x [N, T, C]``, ``mask [N, T]`` -> ``[N, T, output_size]`` with
``return_sequences`` else ``[N, output_size]``, plus the final states with ``return_state``.
Built-in cells' weights (``get_weights()``): Keras's ``kernel [C, G*U]``,
``recurrent_kernel [U, G*U]``, ``bias [G*U]`` (GRU ``reset_after``: ``[2, 3U]``);
``params`` keep the kernels' layout as the layers do (``w_ih``, ``w_hh``, ``b_ih``, ``b_hh``).
An RNN's ``params`` are its cell's under ``cell/<key>``.
"""
from __future__ import annotations

import contextlib
import copy
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from rnnkit import _recurrent
from rnnkit._checks import as_float_array, check_shape, shape_str
from rnnkit._threads import PerThread
from rnnkit.layers.base import Context, Layer, Shape, check_grad, check_mask, deserialize, serialize
from rnnkit.layers.recurrent import GRU, LSTM, SimpleRNN
from rnnkit.layers.symbolic import flatten, is_symbolic, pack_like

__all__ = ["AbstractRNNCell", "SimpleRNNCell", "LSTMCell", "GRUCell", "StackedRNNCells", "RNN"]

Array = np.ndarray


# ---- state structures -------------------------------------------------------------------------

def _structure(state_size: Any, name: str = "state_size") -> Any:
    """``state_size`` as a structure of leaves (the sizes) with a list at the top: ``4`` ->
    ``[4]``, ``[4, 4]`` -> ``[4, 4]``, ``[4, [3, 3]]`` -> ``[4, [3, 3]]``."""
    def walk(s: Any, top: bool) -> Any:
        if isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)):
            if s < 1:
                raise ValueError(f"{name}: expected positive sizes, got {state_size!r:.80}")
            return [int(s)] if top else int(s)
        if isinstance(s, (list, tuple)) and len(s) > 0:
            return [walk(v, False) for v in s]
        raise TypeError(f"{name}: expected a positive int or a non-empty list of them (nested lists "
                        f"for stacked cells), got {state_size!r:.80}")
    return walk(state_size, True)


def _sizes(cell: "AbstractRNNCell") -> List[int]:
    """The flat list of a cell's state sizes."""
    return flatten(_structure(cell.state_size, f"{cell.name}: state_size"))


def _output_size(cell: "AbstractRNNCell") -> int:
    """``cell.output_size``, default the first state's size."""
    out = getattr(cell, "output_size", None)
    if out is None:
        return _sizes(cell)[0]
    if isinstance(out, (bool, np.bool_)) or not isinstance(out, (int, np.integer)) or out < 1:
        raise TypeError(f"{cell.name}: output_size: expected a positive int, got {out!r:.80}")
    return int(out)


def _output_state(cell: "AbstractRNNCell") -> int:
    """The flat index of the state a masked step outputs: the first, or for stacked cells the
    last cell's first (Keras's JAX backend)."""
    if isinstance(cell, StackedRNNCells):
        before = sum(len(_sizes(c)) for c in cell.cells[:-1])
        return before + _output_state(cell.cells[-1])
    return 0


# ---- the cell protocol ------------------------------------------------------------------------

class _StepInfo:
    """What the framework keeps on a step's context (besides the cell's own attributes)."""
    __slots__ = ("N", "bare")

    def __init__(self, N: int, bare: bool) -> None:
        self.N, self.bare = N, bare


class AbstractRNNCell(Layer):
    """Base of every recurrent cell: one time step, forward and backward (see the module
    documentation for the protocol a subclass implements).

    Parameters
    ----------
    **kwargs
        ``name``, ``input_shape`` (one step's ``(features,)``), ``dtype``, ``trainable`` (see
        :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    inputs: [N, C], states: [N, state_size[i]] each -> output: [N, output_size], new states like
    the states.
    """

    #: an int or a list of ints (set it in ``__init__``)
    state_size: Any = None
    #: an int, or None for the first state's size
    output_size: Optional[int] = None

    # ---- what a subclass implements --------------------------------------------------------------
    def call(self, inputs: Array, states: List[Any], ctx: Context,  # type: ignore[override]
             training: bool = False) -> Tuple[Array, Any]:
        """One step: ``(output, new_states)``; keeps what :meth:`backprop` needs on ``ctx``.

        Shapes
        ------
        inputs: [N, C], states: list of [N, state_size[i]] -> output: [N, output_size],
        new_states: like states
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement call")

    def backprop(self, d_output: Array, d_states: List[Any],  # type: ignore[override]
                 ctx: Context) -> Tuple[Optional[Array], Any]:
        """One step's backward: ``(d_inputs, d_prev_states)`` from the gradients w.r.t. the
        step's output and new states (arrays, zeros where nothing flows); adds the parameter
        gradients with :meth:`accumulate_grads`.

        Shapes
        ------
        d_output: [N, output_size], d_states: like the states -> d_inputs: [N, C] (or None when
        ``ctx.need_input_grad`` is False), d_prev_states: like the states
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backprop")

    # ---- states ------------------------------------------------------------------------------------
    def get_initial_state(self, batch_size: int) -> List[Any]:
        """Zero states for ``batch_size`` samples, in the structure of ``state_size`` (a list at
        the top: ``[h]``, ``[h, c]``; nested for stacked cells).

        Shapes
        ------
        -> [N, state_size[i]] each
        """
        structure = _structure(self.state_size, f"{self.name}: state_size")
        return pack_like(structure, [np.zeros((batch_size, s), self.dtype) for s in flatten(structure)])

    # ---- running one step ------------------------------------------------------------------------------
    def apply(self, inputs: Any, states: Any = None, *, training: bool = False,  # type: ignore[override]
              need_input_grad: bool = True, sequence: Optional[Dict[Any, Any]] = None,
              mask: Any = None) -> Tuple[Tuple[Array, Any], Context]:
        """Runs one step: ``((output, new_states), ctx)``; pass ``ctx`` to :meth:`backward`.

        ``states`` is a list (nested for stacked cells), a bare array for a one-state cell, or
        None for :meth:`get_initial_state`; ``new_states`` has the same structure (bare in,
        bare out). ``sequence`` is the dict shared by the steps of one RNN call (see the module
        documentation). ``mask`` is not supported here (an RNN applies it around the step).

        Shapes
        ------
        inputs: [N, C], states: [N, state_size[i]] each -> output: [N, output_size], new_states
        like states
        """
        if mask is not None:
            raise ValueError(f"{self.name}: mask: a cell runs one step and takes no mask; wrap it in RNN")
        x = self.check_inputs(inputs)
        if x.ndim != 2:
            raise ValueError(f"{self.name}: inputs: expected 2 dimensions (batch, features) for one "
                             f"step, got shape {shape_str(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{self.name}: inputs: the batch must hold at least one sample, got shape "
                             f"{shape_str(x.shape)}")
        self.maybe_build(x.shape)
        N = x.shape[0]
        structure = _structure(self.state_size, f"{self.name}: state_size")
        sizes = flatten(structure)
        bare = states is not None and not isinstance(states, (list, tuple))
        if states is None:
            states = self.get_initial_state(N)
        flat = self._check_states("states", states, N, sizes)
        ctx = Context(bool(training), bool(need_input_grad))
        ctx.sequence = sequence
        ctx.step_info = _StepInfo(N, bare)
        out, new = self.call(x, pack_like(structure, flat), ctx, training=bool(training))
        out = self._check_array("the output of call", out, (N, _output_size(self)))
        new_flat = self._check_states("the new states of call", new, N, sizes)
        return (out, new_flat[0] if bare else pack_like(structure, new_flat)), ctx

    def _check_array(self, what: str, a: Any, shape: Tuple[int, ...]) -> Array:
        arr = as_float_array(f"{self.name}: {what}", a, contiguous=False)
        if arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        check_shape(f"{self.name}: {what}", arr, shape)
        return arr

    def _check_states(self, what: str, states: Any, N: int, sizes: Sequence[int]) -> List[Array]:
        leaves = flatten(states) if isinstance(states, (list, tuple)) else [states]
        if len(leaves) != len(sizes):
            raise ValueError(f"{self.name}: {what}: expected {len(sizes)} array(s) of shapes "
                             f"{[(N, s) for s in sizes]} (state_size {self.state_size!r}), got {len(leaves)}")
        return [self._check_array(f"{what}[{i}]", s, (N, size)) for i, (s, size) in enumerate(zip(leaves, sizes))]

    def backward(self, d_output: Any = None, d_states: Any = None,  # type: ignore[override]
                 ctx: Optional[Context] = None) -> Tuple[Optional[Array], Any]:
        """Backpropagates one step (default: the calling thread's last direct call of this cell)
        and returns ``(d_inputs, d_prev_states)``, the latter in the structure of that call's
        ``states``; parameter gradients accumulate into :attr:`grads`.

        Parameters
        ----------
        d_output
            Gradient w.r.t. the step's output (None = zeros).
        d_states
            Gradients w.r.t. the new states, in their structure (None, or None entries = zeros).
        ctx
            The context from :meth:`apply` (default: the last direct call in this thread).

        Shapes
        ------
        d_output: [N, output_size], d_states: like the states -> d_inputs: [N, C],
        d_prev_states: like the states
        """
        if ctx is None:
            ctx = self._last
            if ctx is None:
                raise RuntimeError(f"{self.name}: backward called before a forward call in this thread")
        info = getattr(ctx, "step_info", None)
        if not isinstance(info, _StepInfo):
            raise TypeError(f"{self.name}: ctx: expected the Context of a step of this cell (from apply), "
                            f"got {type(ctx).__name__}")
        N = info.N
        structure = _structure(self.state_size, f"{self.name}: state_size")
        sizes = flatten(structure)
        dt = self.dtype
        d_out = np.zeros((N, _output_size(self)), dt) if d_output is None else \
            check_grad(self, "d_output", d_output, (N, _output_size(self)))
        if d_states is None:
            leaves: List[Any] = [None] * len(sizes)
        else:
            leaves = flatten(d_states) if isinstance(d_states, (list, tuple)) else [d_states]
            if len(leaves) != len(sizes):
                raise ValueError(f"{self.name}: d_states: expected {len(sizes)} gradient(s) (one per state), "
                                 f"got {len(leaves)}")
        d_flat = [np.zeros((N, s), dt) if g is None else check_grad(self, f"d_states[{i}]", g, (N, s))
                  for i, (g, s) in enumerate(zip(leaves, sizes))]
        dx, d_prev = self.backprop(d_out, pack_like(structure, d_flat), ctx)
        prev = flatten(d_prev) if isinstance(d_prev, (list, tuple)) else [d_prev]
        if len(prev) != len(sizes):
            raise ValueError(f"{self.name}: backprop returned {len(prev)} state gradient(s), expected "
                             f"{len(sizes)} (one per state)")
        prev = [np.zeros((N, s), dt) if g is None else
                self._check_array(f"d_prev_states[{i}] of backprop", g, (N, s))
                for i, (g, s) in enumerate(zip(prev, sizes))]
        return dx, (prev[0] if info.bare else pack_like(structure, prev))

    def __call__(self, inputs: Any, states: Any = None, training: bool = False,  # type: ignore[override]
                 **kwargs: Any) -> Tuple[Array, Any]:
        """One step, as Keras 3: ``output, new_states = cell(x_t, states)`` (the step's context
        is kept for :meth:`backward`)."""
        if kwargs:
            raise TypeError(f"{self.name}: unexpected argument(s) {sorted(kwargs)}; a cell takes "
                            "(inputs, states, training)")
        if is_symbolic(inputs, states):
            raise TypeError(f"{self.name}: a cell is not a node of a model on its own; wrap it in "
                            "RNN(cell)")
        (out, new), ctx = self.apply(inputs, states, training=training)
        self._last = ctx
        # fresh C-contiguous arrays for the user, as Layer.__call__ returns
        fresh = [np.array(a, order="C") for a in [out] + flatten(new)]
        return fresh[0], (fresh[1] if isinstance(new, np.ndarray) else pack_like(new, fresh[1:]))

    def forward(self, inputs: Any, states: Any = None, training: bool = False,  # type: ignore[override]
                **kwargs: Any) -> Tuple[Array, Any]:
        """Alias of calling the cell."""
        return self(inputs, states, training=training, **kwargs)


# ---- the built-in cells: one fused kernel step -----------------------------------------------

class _FromLayer:
    """A read-only attribute of a cell that is its fused layer's attribute of the same name."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return getattr(obj._layer, self.name)


class _FusedCell(AbstractRNNCell):
    """A built-in cell: its weights and hyper-parameters are those of a whole-sequence layer of
    :mod:`rnnkit.layers.recurrent` (``_LAYER``), which builds, initialises and converts them; a
    step runs :func:`rnnkit._recurrent.forward` with ``T = 1``."""

    _LAYER: Type[Layer] = Layer
    _KEYS: Tuple[str, ...] = ()   # the config keys of the cell (Keras's, minus regularizers/constraints)

    units = _FromLayer("Size of the states and of the output.")
    activation = _FromLayer("The cell's activation (an rnnkit activation).")
    use_bias = _FromLayer("Whether the cell has a bias.")
    kernel_initializer = _FromLayer("Initializer of ``kernel``.")
    recurrent_initializer = _FromLayer("Initializer of ``recurrent_kernel``.")
    bias_initializer = _FromLayer("Initializer of ``bias``.")
    dropout = _FromLayer("Dropout rate on the inputs (training only).")
    recurrent_dropout = _FromLayer("Dropout rate on the recurrent state (training only).")
    seed = _FromLayer("Seed of the dropout masks.")

    def __init__(self, layer_kwargs: Dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # validates every argument (activations the kernels compute, rates, seed, initializers)
        self._layer = self._LAYER(**layer_kwargs, name=self.name, dtype=self.dtype.name)

    @property
    def output_size(self) -> int:  # type: ignore[override]
        return self.units

    @property
    def input_dim(self) -> Optional[int]:
        """The feature size the cell was built for (None before)."""
        return self._layer.input_dim

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: input_shape: expected 2 dimensions (batch, features), "
                             f"got {input_shape}")
        self._layer.maybe_build((input_shape[0], None, input_shape[1]))
        self.params = self._layer.params
        self.grads = self._layer.grads
        self.built = True

    def get_weights(self) -> List[Array]:
        """``[kernel, recurrent_kernel(, bias)]`` in Keras's layout and gate order (copies)."""
        return self._layer.get_weights()

    def set_weights(self, weights: Sequence[Array]) -> None:
        """Sets the weights from Keras-layout arrays ``[kernel, recurrent_kernel(, bias)]``."""
        self._layer.set_weights(weights)

    def sequence_layer(self, **flags: Any) -> Layer:
        """A new whole-sequence layer (``SimpleRNN``/``LSTM``/``GRU``) with this cell's
        hyper-parameters and ``flags`` (``return_sequences``, ``name``, ...). It has no weights:
        :class:`RNN` gives it this cell's (``_share_weights``) once the cell is built."""
        cfg = self._layer.get_config()
        cfg.update(flags)
        return type(self._layer).from_config(cfg)

    def _recurrent_activation_name(self) -> str:
        ra = getattr(self._layer, "recurrent_activation", None)
        return "sigmoid" if ra is None else ra.name

    def _dropout_masks(self, ctx: Context, N: int, C: int,
                       training: bool) -> Tuple[Optional[Array], Optional[Array]]:
        """The input and recurrent dropout masks of this step: drawn once per sequence (kept in
        ``ctx.sequence``) or per direct call."""
        if not training or (self.dropout == 0 and self.recurrent_dropout == 0):
            return None, None
        seq = ctx.sequence
        key = ("dropout", id(self))
        if seq is not None and key in seq:
            return seq[key]
        rng, dt = self._layer.rng, self.dtype
        dp = _recurrent.dropout_mask(rng, self.dropout, (N, C), dt) if self.dropout > 0 else None
        rdm = _recurrent.dropout_mask(rng, self.recurrent_dropout, (N, self.units), dt) \
            if self.recurrent_dropout > 0 else None
        if seq is not None:
            seq[key] = (dp, rdm)
        return dp, rdm

    def call(self, inputs: Array, states: List[Any], ctx: Context,  # type: ignore[override]
             training: bool = False) -> Tuple[Array, List[Array]]:
        N, C = inputs.shape
        if C != self.input_dim:
            raise ValueError(f"{self.name}: inputs: expected {self.input_dim} features (the built size), "
                             f"got shape {shape_str(inputs.shape)}")
        dp, rdm = self._dropout_masks(ctx, N, C, training)
        xt = inputs[None] if dp is None else (inputs * dp)[None]
        run = _recurrent.forward(self._layer.cell, xt, self._layer.kernel_weights(), list(states), rd=rdm,
                                 activation=self.activation.name,
                                 recurrent_activation=self._recurrent_activation_name())
        ctx.run, ctx.dp = run, dp
        return run.y[0], list(run.finals)

    def backprop(self, d_output: Array, d_states: List[Any],  # type: ignore[override]
                 ctx: Context) -> Tuple[Optional[Array], List[Array]]:
        dy = np.ascontiguousarray(d_output)[None]
        dx, d_init, grads = _recurrent.backward(self._layer.cell, ctx.run.cache, dy,
                                                [np.ascontiguousarray(d) for d in d_states],
                                                need_dx=ctx.need_input_grad)
        self.accumulate_grads({k: g for k, g in grads.items() if k in self.grads})
        if dx is None:
            return None, d_init
        d_in = dx[0]
        if ctx.dp is not None:
            d_in = d_in * ctx.dp
        return d_in, d_init

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        inner = self._layer.get_config()
        cfg.update({k: inner[k] for k in self._KEYS})
        return cfg


_RNN_KEYS = ("units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
             "bias_initializer", "dropout", "recurrent_dropout", "seed")


class SimpleRNNCell(_FusedCell):
    r"""Keras's ``SimpleRNNCell``: one step of :math:`h' = \phi(x K + b + h R)`.

    Parameters
    ----------
    units
        Size of the state and output.
    activation
        ``'tanh'`` (default), ``'relu'`` or ``'linear'`` (None); other activations raise
        ValueError.
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed
        As in Keras 3 (and :class:`~rnnkit.layers.SimpleRNN`).
    **kwargs
        ``name``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x_t: [N, C], states: [h [N, U]] (or h) -> output h': [N, U], new states [h'] (or h').
    ``state_size = units``; weights: kernel [C, U], recurrent_kernel [U, U], bias [U].
    """

    _LAYER, _KEYS = SimpleRNN, _RNN_KEYS

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", recurrent_initializer: Any = "orthogonal",
                 bias_initializer: Any = "zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(dict(units=units, activation=activation, use_bias=use_bias,
                              kernel_initializer=kernel_initializer,
                              recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                              dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed), **kwargs)

    @property
    def state_size(self) -> int:  # type: ignore[override]
        return self.units


class LSTMCell(_FusedCell):
    """Keras's ``LSTMCell``: one step of the LSTM (gates i, f, c, o; ``h' = o φ(c')``).

    Parameters
    ----------
    units
        Size of the states and output.
    activation
        φ: ``'tanh'`` (default), ``'relu'`` or ``'linear'``.
    recurrent_activation
        σ of the gates: ``'sigmoid'`` (default) or ``'hard_sigmoid'``.
    unit_forget_bias
        Initialise the forget-gate block of the bias to one (default True).
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed
        As in Keras 3 (and :class:`~rnnkit.layers.LSTM`).
    **kwargs
        ``name``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x_t: [N, C], states: [h, c] each [N, U] -> output h': [N, U], new states [h', c'].
    ``state_size = [units, units]``; weights: kernel [C, 4U], recurrent_kernel [U, 4U],
    bias [4U].
    """

    _LAYER = LSTM
    _KEYS = _RNN_KEYS[:2] + ("recurrent_activation",) + _RNN_KEYS[2:6] + ("unit_forget_bias",) + _RNN_KEYS[6:]

    recurrent_activation = _FromLayer("σ of the gates (an rnnkit activation).")
    unit_forget_bias = _FromLayer("Whether the forget-gate bias starts at one.")

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(dict(units=units, activation=activation, recurrent_activation=recurrent_activation,
                              use_bias=use_bias, kernel_initializer=kernel_initializer,
                              recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                              unit_forget_bias=unit_forget_bias, dropout=dropout,
                              recurrent_dropout=recurrent_dropout, seed=seed), **kwargs)

    @property
    def state_size(self) -> List[int]:  # type: ignore[override]
        return [self.units, self.units]


class GRUCell(_FusedCell):
    """Keras's ``GRUCell``: one step of the GRU (gates z, r, h; ``h' = z h + (1 - z) hh``).

    Parameters
    ----------
    units
        Size of the state and output.
    activation
        φ of the candidate: ``'tanh'`` (default), ``'relu'`` or ``'linear'``.
    recurrent_activation
        σ of the gates: ``'sigmoid'`` (default) or ``'hard_sigmoid'``.
    reset_after
        True (default): the reset gate multiplies ``h R_h + b_rec`` (fused kernel); False: it
        multiplies ``h`` before the product and there is no recurrent bias (vectorised NumPy).
    use_bias, kernel_initializer, recurrent_initializer, bias_initializer, dropout,
    recurrent_dropout, seed
        As in Keras 3 (and :class:`~rnnkit.layers.GRU`).
    **kwargs
        ``name``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x_t: [N, C], states: [h [N, U]] (or h) -> output h': [N, U], new states [h'] (or h').
    ``state_size = units``; weights: kernel [C, 3U], recurrent_kernel [U, 3U], bias [2, 3U]
    (``reset_after``) or [3U].
    """

    _LAYER = GRU
    _KEYS = _RNN_KEYS[:2] + ("recurrent_activation",) + _RNN_KEYS[2:] + ("reset_after",)

    recurrent_activation = _FromLayer("σ of the gates (an rnnkit activation).")
    reset_after = _FromLayer("Whether the reset gate applies after the recurrent product.")

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, reset_after: bool = True,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(dict(units=units, activation=activation, recurrent_activation=recurrent_activation,
                              use_bias=use_bias, kernel_initializer=kernel_initializer,
                              recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                              dropout=dropout, recurrent_dropout=recurrent_dropout, reset_after=reset_after,
                              seed=seed), **kwargs)

    @property
    def state_size(self) -> int:  # type: ignore[override]
        return self.units


def _share_weights(layer: Layer, cell: AbstractRNNCell) -> None:
    """Makes a whole-sequence layer from :meth:`_FusedCell.sequence_layer` use ``cell``'s weight
    and gradient arrays (the same dicts: an update through either is seen by both) and marks it
    built for the cell's input size. The cell must be built."""
    layer.params = cell.params
    layer.grads = cell.grads
    layer.non_trainable_keys = cell.non_trainable_keys
    layer.input_dim = cell.input_dim
    layer.built = True


# ---- stacks of cells -----------------------------------------------------------------------------

class StackedRNNCells(AbstractRNNCell):
    """Keras's ``StackedRNNCells``: several cells as one, each cell's output the next one's input.

    ``RNN(StackedRNNCells(cells))`` runs step by step (the cells' steps run in their own fused
    kernels); a stack of fused layers (``LSTM(return_sequences=True)`` twice) is faster.

    Parameters
    ----------
    cells
        The cells, bottom first (:class:`AbstractRNNCell` instances of one dtype).
    **kwargs
        ``name``, ``dtype``, ``trainable`` (see :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x_t: [N, C], states: one entry per cell (its states, a list or a bare array) -> the last
    cell's output [N, output_size], new states like the states. ``state_size`` is the list of the
    cells' ``state_size``; ``params`` keys are ``cell_<i>/<key>``; ``get_weights()`` the cells'
    weights in order.
    """

    def __init__(self, cells: Sequence[AbstractRNNCell], **kwargs: Any) -> None:
        if not isinstance(cells, (list, tuple)) or not cells:
            raise TypeError(f"cells: expected a non-empty list of cells, got {cells!r:.80}")
        for i, c in enumerate(cells):
            if not isinstance(c, AbstractRNNCell):
                raise TypeError(f"cells[{i}]: expected an RNN cell (an AbstractRNNCell), got {type(c).__name__}")
        kwargs.setdefault("dtype", cells[0].dtype.name)
        super().__init__(**kwargs)
        for i, c in enumerate(cells):
            if c.dtype != self.dtype:
                raise ValueError(f"cells[{i}]: expected dtype {self.dtype} like the stack, got {c.dtype}")
        self.cells: List[AbstractRNNCell] = list(cells)

    @property
    def state_size(self) -> List[Any]:  # type: ignore[override]
        return [c.state_size for c in self.cells]

    @property
    def output_size(self) -> int:  # type: ignore[override]
        return _output_size(self.cells[-1])

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: input_shape: expected 2 dimensions (batch, features), "
                             f"got {input_shape}")
        N, C = input_shape
        for c in self.cells:
            c.maybe_build((N, C))
            C = _output_size(c)
        self.params = {f"cell_{i}/{k}": v for i, c in enumerate(self.cells) for k, v in c.params.items()}
        self.grads = {f"cell_{i}/{k}": v for i, c in enumerate(self.cells) for k, v in c.grads.items()}
        self.non_trainable_keys = {f"cell_{i}/{k}" for i, c in enumerate(self.cells) for k in c.non_trainable_keys}
        self.built = True

    def sublayers(self) -> List[Layer]:
        return list(self.cells)

    def trainable_keys(self) -> List[str]:
        if not self.trainable:
            return []
        return [f"cell_{i}/{k}" for i, c in enumerate(self.cells) for k in c.trainable_keys()]

    def call(self, inputs: Array, states: List[Any], ctx: Context,  # type: ignore[override]
             training: bool = False) -> Tuple[Array, List[Any]]:
        x = inputs
        subs, new = [], []
        for i, (c, s) in enumerate(zip(self.cells, states)):
            (x, ns), sub = c.apply(x, s, training=training, need_input_grad=ctx.need_input_grad or i > 0,
                                   sequence=ctx.sequence)
            subs.append(sub)
            new.append(ns)
        ctx.subs = subs
        return x, new

    def backprop(self, d_output: Array, d_states: List[Any],  # type: ignore[override]
                 ctx: Context) -> Tuple[Optional[Array], List[Any]]:
        d: Optional[Array] = d_output
        d_prev: List[Any] = [None] * len(self.cells)
        for i in reversed(range(len(self.cells))):
            d, d_prev[i] = self.cells[i].backward(d, d_states[i], ctx.subs[i])
        return d, d_prev

    def get_weights(self) -> List[Array]:
        return [w for c in self.cells for w in c.get_weights()]

    def set_weights(self, weights: Sequence[Array]) -> None:
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the cells are built; call it on data first")
        counts = [len(c.get_weights()) for c in self.cells]
        if len(weights) != sum(counts):
            raise ValueError(f"{self.name}: expected {sum(counts)} weight arrays ({counts} per cell), "
                             f"got {len(weights)}")
        i = 0
        for c, n in zip(self.cells, counts):
            c.set_weights(list(weights[i:i + n]))
            i += n

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["cells"] = [serialize(c) for c in self.cells]
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "StackedRNNCells":
        config = copy.deepcopy(config)
        config["cells"] = [deserialize(c) for c in config["cells"]]
        return cls(**config)


# ---- the RNN layer --------------------------------------------------------------------------------

_FLAGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask")


def _flag(name: str, doc: str) -> property:
    def get(self: "RNN") -> bool:
        return self._flags[name]

    def set_(self: "RNN", value: Any) -> None:
        self._flags[name] = bool(value)
        if self._fused is not None:
            setattr(self._fused, name, bool(value))

    return property(get, set_, doc=doc)


class RNN(Layer):
    """Keras's ``RNN``: runs a cell over a sequence (see the module documentation).

    ``RNN(LSTMCell(n))``, ``RNN(GRUCell(n))`` and ``RNN(SimpleRNNCell(n))`` run the fused
    whole-sequence kernels exactly as ``LSTM``/``GRU``/``SimpleRNN`` do; any other cell (your
    own :class:`AbstractRNNCell`, a :class:`StackedRNNCells`) runs step by step in Python.

    Parameters
    ----------
    cell
        An :class:`AbstractRNNCell`, or a list of them (a :class:`StackedRNNCells`).
    return_sequences, return_state, go_backwards, stateful, unroll, zero_output_for_mask
        As in Keras 3 (``unroll`` has no effect).
    **kwargs
        ``name``, ``input_shape``, ``dtype`` (the cell's), ``trainable`` (see
        :class:`~rnnkit.layers.base.Layer`).

    Shapes
    ------
    x: [N, T, C], mask: [N, T], initial_state: a list of [N, state_size[i]]
    -> [N, T, output_size] with ``return_sequences`` else [N, output_size]; with
    ``return_state`` followed by the final states (flattened). ``params``: the cell's, under
    ``cell/<key>``; ``get_weights()``: the cell's (Keras's layout).
    """

    supports_masking = True

    return_sequences = _flag("return_sequences", "Return the whole output sequence.")
    return_state = _flag("return_state", "Also return the final states.")
    go_backwards = _flag("go_backwards", "Process the sequence from the last step to the first.")
    stateful = _flag("stateful", "Carry the final states of a call into the next.")
    unroll = _flag("unroll", "Accepted for Keras configs; no effect.")
    zero_output_for_mask = _flag("zero_output_for_mask", "Masked steps output zeros.")

    def __init__(self, cell: Any, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(list(cell))
        if not isinstance(cell, AbstractRNNCell):
            raise TypeError(f"cell: expected an RNN cell (an rnnkit AbstractRNNCell, e.g. LSTMCell) or a list "
                            f"of them, got {type(cell).__name__}")
        _sizes(cell)  # a valid state_size, now rather than at the first call
        kwargs.setdefault("dtype", cell.dtype.name)
        super().__init__(**kwargs)
        if self.dtype != cell.dtype:
            raise ValueError(f"dtype: expected the cell's dtype {cell.dtype.name!r}, got {self.dtype.name!r}")
        self.cell = cell
        self._flags = {n: bool(v) for n, v in zip(_FLAGS, (return_sequences, return_state, go_backwards,
                                                            stateful, unroll, zero_output_for_mask))}
        # the fused path: a whole-sequence layer of the cell's class that gets the cell's weights
        self._fused: Optional[Layer] = cell.sequence_layer(name=self.name, **self._flags) \
            if isinstance(cell, _FusedCell) else None
        self._states: Optional[List[Array]] = None
        self._states_lock = threading.Lock()

    @property
    def fused(self) -> bool:
        """Whether calls run the fused whole-sequence kernels (else step by step in Python)."""
        return self._fused is not None

    # ---- building and parameters -----------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: input_shape: expected 3 dimensions (batch, timesteps, features), "
                             f"got {input_shape}")
        if input_shape[-1] is None:
            raise ValueError(f"{self.name}: input_shape: the feature size must be known, got {input_shape}")
        self.cell.maybe_build((input_shape[0], input_shape[2]))
        if self._fused is not None:
            _share_weights(self._fused, self.cell)
        self.params = {"cell/" + k: v for k, v in self.cell.params.items()}
        self.grads = {"cell/" + k: v for k, v in self.cell.grads.items()}
        self.non_trainable_keys = {"cell/" + k for k in self.cell.non_trainable_keys}
        self.built = True

    def sublayers(self) -> List[Layer]:
        return [self.cell]

    def trainable_keys(self) -> List[str]:
        if not self.trainable or not self.cell.trainable:
            return []
        return ["cell/" + k for k in self.cell.trainable_keys()]

    @property
    def trainable_weights(self) -> List[Array]:
        return [self.params[k] for k in self.trainable_keys()]

    @property
    def non_trainable_weights(self) -> List[Array]:
        keep = set(self.trainable_keys())
        return [p for k, p in self.params.items() if k not in keep]

    def get_weights(self) -> List[Array]:
        """The cell's ``get_weights()`` (Keras's layout)."""
        return self.cell.get_weights() if self.built else []

    def set_weights(self, weights: Sequence[Array]) -> None:
        """Sets the cell's weights (Keras's layout)."""
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built; call it on data "
                             "or give input_shape")
        self.cell.set_weights(weights)

    # ---- state --------------------------------------------------------------------------------------
    @property
    def states(self) -> Optional[List[Array]]:
        """The kept states of a stateful RNN (None before its first call)."""
        return self._fused.states if self._fused is not None else self._states

    def reset_state(self) -> None:
        """Zeroes the kept states of a stateful RNN (no effect before its first call)."""
        if self._fused is not None:
            self._fused.reset_state()
            return
        with self._states_lock:
            if self._states is not None:
                for s in self._states:
                    s.fill(0)

    def reset_states(self) -> None:
        """Alias of :meth:`reset_state` (Keras compatibility)."""
        self.reset_state()

    _last_d_initial_state = PerThread("initial-state gradients of the calling thread's last backward")

    @property
    def d_initial_state(self) -> Optional[List[Array]]:
        """Gradients w.r.t. the initial states (flattened) from the calling thread's last backward."""
        return self._last_d_initial_state

    # ---- running ---------------------------------------------------------------------------------------
    def call(self, x: Array, ctx: Context, training: bool = False, mask: Any = None,
             initial_state: Any = None) -> Any:
        ctx.has_initial_state = initial_state is not None
        if self._fused is not None:
            out, inner = self._fused.apply(x, training=training, mask=mask, need_input_grad=ctx.need_input_grad,
                                           initial_state=initial_state)
            ctx.inner = inner
            ctx.final_states = inner.final_states
            return out
        lock = self._states_lock if self.stateful else contextlib.nullcontext()
        with lock:  # a stateful RNN's calls are a sequence: each starts from the last one's states
            return self._loop(x, ctx, training, mask, initial_state)

    def _initial_states(self, initial_state: Any, N: int, sizes: List[int]) -> List[Array]:
        dt = self.dtype
        if initial_state is None:
            if self.stateful:
                if self._states is None:
                    self._states = [np.zeros((N, s), dt) for s in sizes]
                elif self._states[0].shape[0] != N:
                    raise ValueError(f"{self.name}: a stateful layer keeps its batch size: expected "
                                     f"{self._states[0].shape[0]} samples, got {N}")
                return list(self._states)
            leaves = flatten(self.cell.get_initial_state(N))
            what = "cell.get_initial_state"
        else:
            leaves = flatten(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            what = "initial_state"
            if len(leaves) != len(sizes):
                raise ValueError(f"{self.name}: initial_state: expected a list of {len(sizes)} array(s) of "
                                 f"shapes {[(N, s) for s in sizes]}, got {len(leaves)}")
        out = []
        for i, (s, size) in enumerate(zip(leaves, sizes)):
            nm = f"{self.name}: {what}[{i}]"
            a = as_float_array(nm, s, contiguous=False)
            check_shape(nm, a, (N, size), "= (batch, state size)")
            out.append(a.astype(dt, copy=False))
        return out

    def _loop(self, x: Array, ctx: Context, training: bool, mask: Any, initial_state: Any) -> Any:
        """The step-by-step path: the cell once per step, masks applied around it."""
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x: expected 3 dimensions (batch, timesteps, features), "
                             f"got shape {shape_str(x.shape)}")
        N, T, _ = x.shape
        if N == 0 or T == 0:
            raise ValueError(f"{self.name}: x: batch and timesteps must be at least 1, got shape {x.shape}")
        cell = self.cell
        m = check_mask(f"{self.name}: mask", mask, N, T)
        sizes = _sizes(cell)
        O, first = _output_size(cell), _output_state(cell)
        if m is not None and not self.zero_output_for_mask and sizes[first] != O:
            raise ValueError(f"{self.name}: zero_output_for_mask: a masked step outputs the carried state "
                             f"{first} of size {sizes[first]}, but the cell's output_size is {O}; expected "
                             "zero_output_for_mask=True for this cell")
        states = self._initial_states(initial_state, N, sizes)
        structure = _structure(cell.state_size)
        order = range(T - 1, -1, -1) if self.go_backwards else range(T)
        sequence: Dict[Any, Any] = {}
        ys = np.empty((T, N, O), self.dtype) if self.return_sequences else None
        steps: List[Tuple[Context, Optional[Array]]] = []
        out = None
        for k, t in enumerate(order):
            (out, new), sctx = cell.apply(x[:, t], pack_like(structure, states), training=training,
                                          need_input_grad=ctx.need_input_grad, sequence=sequence)
            new = flatten(new)
            mt = None if m is None or m[:, t].all() else m[:, t, None]
            if mt is not None:
                new = [np.where(mt, a, b) for a, b in zip(new, states)]
                out = np.where(mt, out, 0 if self.zero_output_for_mask else states[first])
            if ys is not None:
                ys[k] = out
            steps.append((sctx, mt))
            states = new
        if self.stateful:
            self._states = [s.copy() for s in states]
        ctx.steps, ctx.order, ctx.N, ctx.T, ctx.C = steps, list(order), N, T, x.shape[2]
        ctx.final_states = states
        result = ys.transpose(1, 0, 2) if ys is not None else out
        if self.return_state:
            return [result] + [s.copy() for s in states]
        return result

    def backprop(self, d_out: Any, ctx: Context) -> Optional[Array]:
        """Gradient w.r.t. the input ``[N, T, C]`` (None when the call's ``need_input_grad`` is
        False) from the gradient w.r.t. the output(s) (a list ``[d_output, *d_states]`` with
        ``return_state``; ``None`` entries are zeros); the cell's parameter gradients accumulate
        and the initial-state gradients go to ``ctx.d_initial_state`` (and
        ``ctx.kwarg_grads["initial_state"]`` when the call had an ``initial_state``)."""
        if self._fused is not None:
            inner = ctx.inner
            extra = getattr(ctx, "d_final_states", None)
            if extra is not None:
                inner.d_final_states = extra
            dx = self._fused.backward(d_out, inner)
            d_init = inner.d_initial_state
        else:
            dx, d_init = self._loop_backward(d_out, ctx)
        ctx.d_initial_state = d_init
        self._last_d_initial_state = d_init
        if ctx.has_initial_state:
            ctx.kwarg_grads["initial_state"] = d_init
        return dx

    def _loop_backward(self, d_out: Any, ctx: Context) -> Tuple[Optional[Array], List[Array]]:
        """Backpropagation through time of :meth:`_loop`: the cell's step backward in reverse."""
        N, T, C, cell = ctx.N, ctx.T, ctx.C, self.cell
        sizes = _sizes(cell)
        O, first = _output_size(cell), _output_state(cell)
        n_out = 1 + len(sizes)
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
            d_main, d_states = d_out, [None] * len(sizes)
        dys = None
        d_last = None
        if d_main is not None:
            if self.return_sequences:
                dys = check_grad(self, "d_out", d_main, (N, T, O))
            else:
                d_last = check_grad(self, "d_out", d_main, (N, O))
        extra = getattr(ctx, "d_final_states", None) or [None] * len(sizes)
        dt = self.dtype
        ds = []
        for i, (a, b, s) in enumerate(zip(d_states, extra, sizes)):
            g = np.zeros((N, s), dt)
            if a is not None:
                g = g + check_grad(self, f"d_state[{i}]", a, (N, s))
            if b is not None:
                g = g + check_grad(self, f"d_final_states[{i}]", b, (N, s))
            ds.append(g)
        structure = _structure(cell.state_size)
        dx = np.zeros((N, T, C), dt) if ctx.need_input_grad else None
        zeros_out = np.zeros((N, O), dt)
        for k in range(T - 1, -1, -1):
            sctx, mt = ctx.steps[k]
            dy = dys[:, k] if dys is not None else (d_last if k == T - 1 and d_last is not None else zeros_out)
            if mt is None:
                d_cell_out, d_new, carry = dy, ds, None
            else:
                d_cell_out = np.where(mt, dy, 0)
                d_new = [np.where(mt, g, 0) for g in ds]
                carry = [np.where(mt, 0, g) for g in ds]
                if not self.zero_output_for_mask:
                    carry[first] = carry[first] + np.where(mt, 0, dy)
            dx_t, d_prev = cell.backward(d_cell_out, pack_like(structure, d_new), sctx)
            prev = flatten(d_prev)
            ds = prev if carry is None else [a + b for a, b in zip(prev, carry)]
            if dx is not None and dx_t is not None:
                dx[:, ctx.order[k]] = dx_t
        return dx, ds

    # ---- shapes, masks, config --------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Any:
        N, T = input_shape[0], input_shape[1]
        O = _output_size(self.cell)
        out = (N, T, O) if self.return_sequences else (N, O)
        if self.return_state:
            return [out] + [(N, s) for s in _sizes(self.cell)]
        return out

    def compute_mask(self, x: Any, mask: Any) -> Any:
        out = mask if self.return_sequences else None
        if self.return_state:
            return [out] + [None] * len(_sizes(self.cell))
        return out

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({n: self._flags[n] for n in _FLAGS})
        cfg["cell"] = serialize(self.cell)
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "RNN":
        config = copy.deepcopy(config)
        config["cell"] = deserialize(config["cell"])
        return cls(**config)
