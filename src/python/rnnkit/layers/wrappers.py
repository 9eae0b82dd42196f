"""The :class:`Bidirectional` wrapper (Keras 3 semantics)."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rnnkit.layers.base import Layer, Shape, deserialize, serialize

__all__ = ["Bidirectional"]

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _removeprefix(s: str, prefix: str) -> str:
    return s[len(prefix):] if s.startswith(prefix) else s


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy of it backwards and merges the outputs.

    As in Keras 3: the forward layer is rebuilt from ``layer``'s config (fresh weights, name
    ``forward_<name>``); unless ``backward_layer`` is given, the backward layer is rebuilt from
    the same config with ``go_backwards=True`` (name ``backward_<name>``). Both get
    ``zero_output_for_mask = return_sequences``. With ``return_sequences`` the backward output is
    flipped back in time before merging, so position ``t`` of both halves belongs to input step
    ``t``. ``initial_state`` is a list whose first half goes to the forward layer and second half
    to the backward layer; the mask and ``training`` go to both.

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

    def __init__(self, layer: Layer, merge_mode: Optional[str] = "concat",
                 backward_layer: Optional[Layer] = None, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnkit Layer, got {type(layer).__name__}")
        if backward_layer is not None and not isinstance(backward_layer, Layer):
            raise TypeError(f"backward_layer: expected an rnnkit Layer, got {type(backward_layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode: expected one of {_MERGE_MODES}, got {merge_mode!r}")
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
            cfg["config"]["go_backwards"] = True
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
        self._cache: Optional[Dict[str, Any]] = None

    # ---- building and parameters -----------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        for sub in (self.forward_layer, self.backward_layer):
            sub._maybe_build(tuple(input_shape))
        self._link()
        self.built = True

    def _link(self) -> None:
        self.params = {}
        self.grads = {}
        for prefix, sub in (("forward/", self.forward_layer), ("backward/", self.backward_layer)):
            for k in sub.params:
                self.params[prefix + k] = sub.params[k]
                self.grads[prefix + k] = sub.grads[k]

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
    def call(self, x: np.ndarray, mask: Optional[np.ndarray] = None, initial_state: Any = None,
             training: bool = False) -> Any:
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)) or len(initial_state) % 2:
                raise ValueError(f"{self.name}: initial_state: expected a list with an even number of "
                                 f"arrays (forward states then backward states), got {initial_state!r:.80}")
            half = len(initial_state) // 2
            fs, bs = list(initial_state[:half]), list(initial_state[half:])
        else:
            fs = bs = None
        y = self.forward_layer(x, mask=mask, initial_state=fs, training=training)
        y_rev = self.backward_layer(x, mask=mask, initial_state=bs, training=training)
        states: List[np.ndarray] = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]
        self._cache = {"y": y, "y_rev": y_rev, "n_fwd_states": (len(states) // 2)}
        if self.merge_mode == "concat":
            out: Any = np.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            out = y + y_rev
        elif self.merge_mode == "ave":
            out = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            out = y * y_rev
        else:
            out = [y, np.ascontiguousarray(y_rev)]
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + states
        return out

    def backward(self, d_out: Any) -> np.ndarray:
        """Gradient w.r.t. the input from the gradient(s) w.r.t. the output(s), in the order the
        call returned them (``None`` entries are zeros); sublayer gradients accumulate."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward called before a forward call")
        y, y_rev, ns = self._cache["y"], self._cache["y_rev"], self._cache["n_fwd_states"]
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
            if d is None:
                dy = dyr = None
            else:
                d = np.asarray(d, dtype=self.dtype)
                want = y.shape[:-1] + (2 * U,) if self.merge_mode == "concat" else y.shape
                if d.shape != want:
                    raise ValueError(f"{self.name}: d_out: expected shape {want}, got {d.shape}")
                if self.merge_mode == "concat":
                    dy, dyr = d[..., :U], d[..., U:]
                elif self.merge_mode == "sum":
                    dy, dyr = d, d
                elif self.merge_mode == "ave":
                    dy = dyr = d / 2
                else:
                    dy, dyr = d * y_rev, d * y
        if dyr is not None and self.return_sequences:
            dyr = np.asarray(dyr)[:, ::-1]
        if self.return_state:
            gf: Any = [dy] + d_states[:ns]
            gb: Any = [dyr] + d_states[ns:]
        else:
            gf = np.zeros_like(y) if dy is None else dy
            gb = np.zeros_like(y_rev) if dyr is None else dyr
        dx = self.forward_layer.backward(gf)
        dx = dx + self.backward_layer.backward(gb)
        return dx

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

    @property
    def d_initial_state(self) -> Optional[List[np.ndarray]]:
        """After :meth:`backward`: gradients w.r.t. the forward then the backward initial states
        (None until both sublayers have them)."""
        f = getattr(self.forward_layer, "d_initial_state", None)
        b = getattr(self.backward_layer, "d_initial_state", None)
        if f is None or b is None:
            return None
        return list(f) + list(b)

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
