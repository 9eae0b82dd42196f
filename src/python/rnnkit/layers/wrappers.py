"""Layer wrappers: :class:`Bidirectional` and :class:`TimeDistributed` (Keras 3 semantics)."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rnnkit import _recurrent
from rnnkit._threads import PerThread
from rnnkit.layers.base import Context, Layer, Shape, check_grad, deserialize, serialize, shape_of

__all__ = ["Bidirectional", "TimeDistributed"]


def _removeprefix(s: str, prefix: str) -> str:
    return s[len(prefix):] if s.startswith(prefix) else s


class _Wrapper(Layer):
    """A layer whose parameters are those of the layers it wraps (shared by reference, under
    ``<prefix>/<key>``)."""

    def _link(self, pairs: Sequence[tuple]) -> None:
        self.params = {}
        self.grads = {}
        for prefix, sub in pairs:
            for k in sub.params:
                self.params[prefix + k] = sub.params[k]
                self.grads[prefix + k] = sub.grads[k]


class Bidirectional(_Wrapper):
    """Runs a recurrent layer forwards and a copy of it backwards and merges the outputs.

    As in Keras 3: the forward layer is rebuilt from ``layer``'s config (fresh weights, name
    ``forward_<name>``); unless ``backward_layer`` is given, the backward layer is rebuilt from
    the same config with ``go_backwards=True`` (name ``backward_<name>``). Both get
    ``zero_output_for_mask = return_sequences``. With ``return_sequences`` the backward output is
    flipped back in time before merging, so position ``t`` of both halves belongs to input step
    ``t``. ``initial_state`` is a list whose first half goes to the forward layer and second half
    to the backward layer; the mask and ``training`` go to both. The merge is
    :func:`rnnkit._recurrent.merge`, the same as ``nn``'s bidirectional modules use.

    Parameters
    ----------
    layer
        A recurrent layer (``SimpleRNN``, ``LSTM``, ``GRU``) or any layer with ``go_backwards``,
        ``return_sequences``, ``return_state`` and ``stateful`` attributes.
    merge_mode
        ``'concat'`` (default), ``'sum'``, ``'mul'``, ``'ave'`` or None (return ``[fwd, bwd]``).
    backward_layer
        Optional layer for the backward direction; it must differ from ``layer`` in
        ``go_backwards`` and agree in ``stateful``, ``return_sequences`` and ``return_state``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, C] -> with ``return_sequences`` [N, T, 2U] (concat) or [N, T, U] (sum, mul, ave),
    else [N, 2U] / [N, U]; merge None gives ``[fwd, bwd]``. With ``return_state`` the merged
    output (or the pair) is followed by the forward states then the backward states.
    ``params`` keys are ``forward/<key>`` then ``backward/<key>`` (shared with the sublayers);
    ``get_weights()`` is the forward layer's weights then the backward layer's.
    """

    supports_masking = True

    def __init__(self, layer: Layer, merge_mode: Optional[str] = "concat",
                 backward_layer: Optional[Layer] = None, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnkit Layer, got {type(layer).__name__}")
        if backward_layer is not None and not isinstance(backward_layer, Layer):
            raise TypeError(f"backward_layer: expected an rnnkit Layer, got {type(backward_layer).__name__}")
        if merge_mode not in _recurrent.MERGE_MODES:
            raise ValueError(f"merge_mode: expected one of {_recurrent.MERGE_MODES}, got {merge_mode!r}")
        for a in ("go_backwards", "return_sequences", "return_state", "stateful"):
            if not hasattr(layer, a):
                raise TypeError(f"layer: expected a recurrent layer with attribute {a!r}, got "
                                f"{type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype.name)
        super().__init__(**kwargs)
        cfg = serialize(layer)
        cfg["config"]["name"] = "forward_" + _removeprefix(layer.name, "forward_")
        self.forward_layer = deserialize(copy.deepcopy(cfg))
        if backward_layer is None:
            cfg = serialize(layer)
            cfg["config"]["go_backwards"] = not layer.go_backwards
            cfg["config"]["name"] = "backward_" + _removeprefix(layer.name, "backward_")
            self.backward_layer = deserialize(cfg)
        else:
            self.backward_layer = backward_layer
        f, b = self.forward_layer, self.backward_layer
        if f.go_backwards == b.go_backwards:
            raise ValueError(f"backward_layer: expected go_backwards different from the forward layer's, got "
                             f"{f.go_backwards} for both")
        for a in ("stateful", "return_sequences", "return_state"):
            if getattr(f, a) != getattr(b, a):
                raise ValueError(f"backward_layer: expected {a}={getattr(f, a)} like the forward layer, got "
                                 f"{getattr(b, a)}")
        for sub in (f, b):
            if hasattr(sub, "zero_output_for_mask"):
                sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.stateful = f.stateful
        self.return_sequences = f.return_sequences
        self.return_state = f.return_state

    # ---- building and parameters -----------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        for sub in (self.forward_layer, self.backward_layer):
            sub.maybe_build(tuple(input_shape))
        self._link([("forward/", self.forward_layer), ("backward/", self.backward_layer)])
        self.built = True

    def sublayers(self) -> List[Layer]:
        return [self.forward_layer, self.backward_layer]

    def get_weights(self) -> List[np.ndarray]:
        """Forward layer's ``get_weights()`` followed by the backward layer's."""
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """First half to the forward layer, second half to the backward layer (Keras layout)."""
        if not self.built:
            raise ValueError(f"{self.name}: set_weights before the layer is built; call it on data "
                             "or give input_shape")
        nf = len(self.forward_layer.get_weights())
        nb = len(self.backward_layer.get_weights())
        if len(weights) != nf + nb:
            raise ValueError(f"{self.name}: expected {nf + nb} weight arrays ({nf} forward, {nb} backward), "
                             f"got {len(weights)}")
        self.forward_layer.set_weights(list(weights[:nf]))
        self.backward_layer.set_weights(list(weights[nf:]))

    def reset_state(self) -> None:
        """Zeroes both layers' kept states (stateful layers only)."""
        if not self.stateful:
            raise AttributeError(f"{self.name}: reset_state needs a stateful layer")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self) -> None:
        """Alias of :meth:`reset_state`."""
        self.reset_state()

    # ---- running ------------------------------------------------------------------------------
    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None,
             initial_state: Any = None) -> Any:
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)) or len(initial_state) % 2:
                raise ValueError(f"{self.name}: initial_state: expected a list with an even number of "
                                 f"arrays (forward states then backward states), got {initial_state!r:.80}")
            half = len(initial_state) // 2
            fs, bs = list(initial_state[:half]), list(initial_state[half:])
        else:
            fs = bs = None
        kw = dict(training=training, mask=mask, need_input_grad=ctx.need_input_grad)
        y, cf = self.forward_layer.apply(x, initial_state=fs, **kw)
        y_rev, cb = self.backward_layer.apply(x, initial_state=bs, **kw)
        states: List[np.ndarray] = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]
        ctx.cf, ctx.cb, ctx.y, ctx.y_rev = cf, cb, y, y_rev
        ctx.final_states = list(cf.final_states) + list(cb.final_states)
        ctx.n_fwd_states = len(states) // 2
        ctx.has_initial_state = initial_state is not None
        out = _recurrent.merge(self.merge_mode, y, y_rev)
        if self.merge_mode is None:
            out = [y, np.ascontiguousarray(y_rev)]
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + states
        return out

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        """Gradient w.r.t. the input from the gradient(s) w.r.t. the output(s), in the order the
        call returned them (``None`` entries are zeros); sublayer gradients accumulate."""
        y, y_rev, ns = ctx.y, ctx.y_rev, ctx.n_fwd_states
        n_main = 2 if self.merge_mode is None else 1
        expected = n_main + 2 * ns
        if self.return_state or self.merge_mode is None:
            if not isinstance(d_out, (list, tuple)) or len(d_out) != expected:
                got = len(d_out) if isinstance(d_out, (list, tuple)) else type(d_out).__name__
                raise ValueError(f"{self.name}: d_out: expected a list of {expected} gradients, got {got}")
            d_main, d_states = list(d_out[:n_main]), list(d_out[n_main:])
        else:
            if isinstance(d_out, (list, tuple)):
                raise ValueError(f"{self.name}: d_out: expected one array, got a list of {len(d_out)}")
            d_main, d_states = [d_out], []
        U = y.shape[-1]
        if self.merge_mode is None:
            dy, dyr = d_main
        else:
            d = d_main[0]
            if d is not None:
                want = y.shape[:-1] + (2 * U,) if self.merge_mode == "concat" else y.shape
                d = check_grad(self, "d_out", d, want)
            dy, dyr = _recurrent.merge_backward(self.merge_mode, d, y, y_rev)
        if dyr is not None and self.return_sequences:
            dyr = np.asarray(dyr)[:, ::-1]
        gf: Any = [dy] + d_states[:ns] if self.return_state else dy
        gb: Any = [dyr] + d_states[ns:] if self.return_state else dyr
        extra = getattr(ctx, "d_final_states", None)
        if extra is not None:  # gradients w.r.t. ctx.final_states: forward half, backward half
            half = len(extra) // 2
            ctx.cf.d_final_states, ctx.cb.d_final_states = list(extra[:half]), list(extra[half:])
        dx = self.forward_layer.backward(gf, ctx.cf)
        dxb = self.backward_layer.backward(gb, ctx.cb)
        ctx.d_initial_state = list(ctx.cf.d_initial_state) + list(ctx.cb.d_initial_state)
        self._last_d_initial_state = ctx.d_initial_state
        if ctx.has_initial_state:
            ctx.kwarg_grads["initial_state"] = ctx.d_initial_state
        if dx is None:
            return None
        return dx + dxb

    # ---- shapes, masks, config ----------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Any:
        shp = self.forward_layer.compute_output_shape(input_shape)
        states: List[Any] = []
        if self.return_state:
            shp, states = shp[0], list(shp[1:])
        if self.merge_mode == "concat":
            out: Any = tuple(shp[:-1]) + (None if shp[-1] is None else 2 * shp[-1],)
        elif self.merge_mode is None:
            out = [tuple(shp), tuple(shp)]
        else:
            out = tuple(shp)
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + states + states
        return out

    def compute_mask(self, x: Any, mask: Any) -> Any:
        if isinstance(mask, list):
            mask = mask[0]
        if self.return_sequences:
            out: Any = [mask, mask] if self.merge_mode is None else mask
        else:
            out = [None, None] if self.merge_mode is None else None
        if self.return_state:
            n = len(self.forward_layer.compute_output_shape((None, None, 1))) - 1
            return (out if isinstance(out, list) else [out]) + [None] * (2 * n)
        return out

    @property
    def states(self) -> Optional[List[np.ndarray]]:
        """Forward then backward kept states of a stateful layer (None before the first call)."""
        f = getattr(self.forward_layer, "states", None)
        b = getattr(self.backward_layer, "states", None)
        if f and b:
            return list(f) + list(b)
        return None

    _last_d_initial_state = PerThread("initial-state gradients of the calling thread's last backward")

    @property
    def d_initial_state(self) -> Optional[List[np.ndarray]]:
        """After :meth:`backward`: the calling thread's gradients w.r.t. the forward then the
        backward initial states."""
        return self._last_d_initial_state

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["merge_mode"] = self.merge_mode
        cfg["layer"] = serialize(self.forward_layer)
        cfg["backward_layer"] = serialize(self.backward_layer)
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Bidirectional":
        config = copy.deepcopy(config)
        config["layer"] = deserialize(config["layer"])
        if config.get("backward_layer") is not None:
            config["backward_layer"] = deserialize(config["backward_layer"])
        return cls(**config)


class TimeDistributed(_Wrapper):
    """Applies a layer to every time step of a sequence (Keras's ``TimeDistributed``).

    The time axis is folded into the batch axis (in the order the input lies in memory, so a
    time-major view from a recurrent layer is not copied), the wrapped layer runs once on all
    ``N * T`` steps, and the result is unfolded. Loss fusion passes through: with
    ``TimeDistributed(Dense(k, activation='softmax'))`` the cross-entropy gradient is taken
    w.r.t. the logits.

    Parameters
    ----------
    layer
        Any layer taking ``[batch, *features]``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    x: [N, T, *features] -> [N, T, *layer_output_features]. The mask ``[N, T]`` passes through.
    ``params`` keys are ``layer/<key>`` (shared with the wrapped layer).
    """

    supports_masking = True

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnkit Layer, got {type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype.name)
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(f"{self.name}: input_shape: expected at least 3 dimensions "
                             f"(batch, timesteps, features), got {input_shape}")
        self.layer.maybe_build((None,) + input_shape[2:])
        self._link([("layer/", self.layer)])
        self.built = True

    def sublayers(self) -> List[Layer]:
        return [self.layer]

    def get_weights(self) -> List[np.ndarray]:
        return self.layer.get_weights()

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        self.layer.set_weights(weights)

    @staticmethod
    def _fold(x: np.ndarray) -> tuple:
        """x [N, T, ...] as [N*T, ...] in memory order, and whether that order is time-major."""
        tm = not x.flags.c_contiguous and x.transpose(1, 0, *range(2, x.ndim)).flags.c_contiguous
        m = x.transpose(1, 0, *range(2, x.ndim)) if tm else np.ascontiguousarray(x)
        return m.reshape((-1,) + x.shape[2:]), tm

    @staticmethod
    def _unfold(y: np.ndarray, N: int, T: int, tm: bool) -> np.ndarray:
        if tm:
            return y.reshape((T, N) + y.shape[1:]).transpose(1, 0, *range(2, y.ndim + 1))
        return y.reshape((N, T) + y.shape[1:])

    def check_inputs(self, inputs: Any) -> Any:
        return self.layer.check_inputs(inputs)

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim < 3:
            raise ValueError(f"{self.name}: x: expected at least 3 dimensions (batch, timesteps, ...), "
                             f"got shape {x.shape}")
        N, T = x.shape[0], x.shape[1]
        xf, tm = self._fold(x)
        y, ctx.inner = self.layer.apply(xf, training=training, need_input_grad=ctx.need_input_grad)
        ctx.N, ctx.T, ctx.tm, ctx.out_shape = N, T, tm, (N, T) + y.shape[1:]
        return self._unfold(y, N, T, tm)

    def _fold_grad(self, d: Any, ctx: Context, name: str) -> np.ndarray:
        g = check_grad(self, name, d, ctx.out_shape)
        if ctx.tm:
            g = g.transpose(1, 0, *range(2, g.ndim))
        return np.ascontiguousarray(g).reshape((-1,) + g.shape[2:])

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        dx = self.layer.backward(self._fold_grad(d_out, ctx, "d_out"), ctx.inner)
        return None if dx is None else self._unfold(dx, ctx.N, ctx.T, ctx.tm)

    @property
    def output_activation(self) -> Optional[str]:
        return self.layer.output_activation

    def backprop_logits(self, d_logits: Any, ctx: Context) -> Optional[np.ndarray]:
        dx = self.layer.backprop_logits(self._fold_grad(d_logits, ctx, "d_logits"), ctx.inner)
        return None if dx is None else self._unfold(dx, ctx.N, ctx.T, ctx.tm)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg["layer"] = serialize(self.layer)
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "TimeDistributed":
        config = copy.deepcopy(config)
        config["layer"] = deserialize(config["layer"])
        return cls(**config)
