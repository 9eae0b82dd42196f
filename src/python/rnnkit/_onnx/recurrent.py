"""The ONNX ``RNN``/``LSTM``/``GRU`` operators, and Keras's semantics around them.

:func:`rnn_node` emits one operator (one layer, one or two directions) from weights in rnnkit's
layout, converted by :func:`rnnkit._layouts.stack_onnx` (gate orders: LSTM i, o, f, c; GRU z, r,
h). :func:`keras_direction` turns one direction's ``Y``/``Y_h``/``Y_c`` into what a Keras layer
returns:

- a right-padded mask becomes the operator's ``sequence_lens`` (the count of valid steps);
  the padded steps output the carried state (``Y_h`` forwards, the initial state backwards) or
  zero with ``zero_output_for_mask``, as rnnkit does;
- ``go_backwards`` is ``direction="reverse"``; the returned sequence is then in processing order
  (flipped in time), as in Keras;
- ``return_sequences=False`` is ``Y_h`` (or, with ``zero_output_for_mask``, ``Y_h`` where the last
  step is valid and zero elsewhere);
- the final states are ``Y_h``/``Y_c``, with the initial state kept for a sample with no valid
  step (ONNX Runtime returns zeros there).

Shapes
------
``Y [T, D, N, H]``, ``Y_h``/``Y_c [D, N, H]``; Keras sequences ``[N, T, H]`` (kept time-major
inside), masks ``[N, T]``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit import _layouts
from rnnkit._onnx.graph import Builder, Value, unsupported

__all__ = ["RecurrentSpec", "DirectionOutputs", "rnn_node", "split_directions", "keras_direction", "sequence",
           "mask_lengths", "compatible"]

_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "gru_v1": "GRU"}
_DEFAULT_ACTS = {"rnn": ("Tanh",), "lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh")}
# name -> (ONNX activation, alpha, beta); alpha/beta None: the function takes none
_ACTS = {"tanh": ("Tanh", None, None), "relu": ("Relu", None, None), "linear": ("Affine", 1.0, 0.0)}
_GATE_ACTS = {"sigmoid": ("Sigmoid", None, None), "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5)}


class RecurrentSpec:
    """What the exporter needs of one recurrent layer (one direction).

    Parameters
    ----------
    owner
        The layer (or module) named in errors.
    cell
        ``"rnn"``, ``"lstm"``, ``"gru"`` (reset after, PyTorch's form) or ``"gru_v1"`` (Keras's
        ``reset_after=False``).
    units
        Hidden size ``H``.
    weights
        ``{"w_ih", "w_hh", "b_ih", "b_hh"}`` in rnnkit's layout (biases may be None).
    activation, recurrent_activation
        rnnkit activation names.
    go_backwards, return_sequences, return_state, zero_output_for_mask
        Keras's flags.

    Shapes
    ------
    weights: w_ih [G*H, C], w_hh [G*H, H], b_ih, b_hh [G*H]
    """

    def __init__(self, owner: Any, cell: str, units: int, weights: Dict[str, Optional[np.ndarray]],
                 activation: str = "tanh", recurrent_activation: str = "sigmoid", go_backwards: bool = False,
                 return_sequences: bool = False, return_state: bool = False,
                 zero_output_for_mask: bool = False) -> None:
        self.owner = owner
        self.cell = cell
        self.units = int(units)
        self.weights = weights
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self.go_backwards = bool(go_backwards)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.zero_output_for_mask = bool(zero_output_for_mask)

    @property
    def n_states(self) -> int:
        return 2 if self.cell == "lstm" else 1


def compatible(a: RecurrentSpec, b: RecurrentSpec) -> bool:
    """Whether two directions can share one ``direction="bidirectional"`` operator."""
    return (a.cell == b.cell and a.units == b.units and a.activation == b.activation
            and a.recurrent_activation == b.recurrent_activation
            and a.weights["w_ih"].shape == b.weights["w_ih"].shape)


def _activation_attrs(spec: RecurrentSpec, D: int) -> Dict[str, Any]:
    """The ``activations`` (and ``activation_alpha``/``_beta``) attributes, when not ONNX's
    defaults. ONNX Runtime consumes alpha/beta only for the functions that take them."""
    layout = "gru" if spec.cell == "gru_v1" else spec.cell
    if spec.activation not in _ACTS:
        raise unsupported(spec.owner, "activation", f"{spec.activation!r} has no ONNX recurrent form "
                                                    f"(expected one of {sorted(_ACTS)})")
    act = _ACTS[spec.activation]
    if layout == "rnn":
        funcs = [act]
    else:
        if spec.recurrent_activation not in _GATE_ACTS:
            raise unsupported(spec.owner, "recurrent_activation",
                              f"{spec.recurrent_activation!r} has no ONNX recurrent form (expected one of "
                              f"{sorted(_GATE_ACTS)})")
        gate = _GATE_ACTS[spec.recurrent_activation]
        funcs = [gate, act, act] if layout == "lstm" else [gate, act]
    names = tuple(f[0] for f in funcs)
    if names == _DEFAULT_ACTS[layout]:
        return {}
    alphas = [f[1] for f in funcs if f[1] is not None]
    betas = [f[2] for f in funcs if f[2] is not None]
    return {"activations": list(names) * D,
            "activation_alpha": alphas * D if alphas else None,
            "activation_beta": betas * D if betas else None}


def mask_lengths(b: Builder, mask: Value) -> str:
    """The number of valid steps of each sample, int32 ``[N]`` (cached on the mask).

    Shapes
    ------
    mask: [N, T] bool -> [N] int32
    """
    if mask.lengths is None:
        m = mask.get(mask.layout)
        axis = 1 if mask.layout == "bm" else 0
        mask.lengths = b.reduce("ReduceSum", b.op("Cast", [m], "lengths", to=6), [axis], False, "lengths")
    return mask.lengths


def rnn_node(b: Builder, specs: Sequence[RecurrentSpec], x_tm: str, lengths: Optional[str],
             init: Optional[Sequence[Optional[str]]], hint: str) -> Tuple[str, str, Optional[str]]:
    """One ONNX recurrent operator over ``x_tm``: forward, reverse (``specs[0].go_backwards``)
    or, for two specs, bidirectional (forward then reverse).

    Parameters
    ----------
    specs
        One or two directions of the same cell, size and activations.
    lengths
        ``sequence_lens`` (int32 ``[N]``) or None.
    init
        ``[initial_h, initial_c]`` names (``[D, N, H]``, None entries for zeros), or None.

    Returns
    -------
    Y, Y_h, Y_c (None for RNN/GRU)

    Shapes
    ------
    x_tm: [T, N, C] -> Y [T, D, N, H], Y_h, Y_c [D, N, H]
    """
    s0 = specs[0]
    D = len(specs)
    layout = "gru" if s0.cell == "gru_v1" else s0.cell
    dirs = []
    for s in specs:
        w = s.weights
        dirs.append({k: None if w.get(k) is None else np.asarray(w[k], np.float32)
                     for k in ("w_ih", "w_hh", "b_ih", "b_hh")})
    onx = _layouts.stack_onnx(layout, dirs)
    key = tuple(id(s.weights["w_ih"]) for s in specs)  # a layer called twice shares its initializers
    W = b.const(onx["W"], f"{hint}/W", key=key + ("W",))
    R = b.const(onx["R"], f"{hint}/R", key=key + ("R",))
    B = None if onx["B"] is None else b.const(onx["B"], f"{hint}/B", key=key + ("B",))
    direction = "bidirectional" if D == 2 else ("reverse" if s0.go_backwards else "forward")
    ins: List[Optional[str]] = [x_tm, W, R, B, lengths]
    if init is not None:
        ins += list(init)[: s0.n_states]
    attrs = dict(hidden_size=s0.units, direction=direction, **_activation_attrs(s0, D))
    if layout == "gru":
        attrs["linear_before_reset"] = 1 if s0.cell == "gru" else 0
    n_out = 3 if layout == "lstm" else 2
    outs = b.op(_OP[s0.cell], ins, hint, outputs=n_out, **attrs)
    return outs[0], outs[1], (outs[2] if n_out == 3 else None)


def split_directions(b: Builder, Y: str, Yh: str, Yc: Optional[str], D: int, hint: str
                     ) -> List[Tuple[str, str, Optional[str]]]:
    """Per direction ``(Y_d [T, N, H], h_d [N, H], c_d [N, H] or None)``.

    Shapes
    ------
    Y [T, D, N, H], Y_h, Y_c [D, N, H] -> D triples
    """
    out = []
    for d in range(D):
        if D == 1:
            y = b.squeeze(Y, [1], f"{hint}/y")
            h = b.squeeze(Yh, [0], f"{hint}/h")
            c = None if Yc is None else b.squeeze(Yc, [0], f"{hint}/c")
        else:
            y = b.squeeze(b.slice(Y, [d], [d + 1], [1]), [1], f"{hint}/y{d}")
            h = b.squeeze(b.slice(Yh, [d], [d + 1], [0]), [0], f"{hint}/h{d}")
            c = None if Yc is None else b.squeeze(b.slice(Yc, [d], [d + 1], [0]), [0], f"{hint}/c{d}")
        out.append((y, h, c))
    return out


class DirectionOutputs:
    """One direction's Keras outputs: ``y_in`` (the output at each *input* step, time-major),
    ``last`` (the non-sequence output) and ``finals`` (the carried final states)."""

    def __init__(self, y_in: str, last: str, finals: List[str]) -> None:
        self.y_in = y_in
        self.last = last
        self.finals = finals


def keras_direction(b: Builder, spec: RecurrentSpec, y: str, h: str, c: Optional[str],
                    mask: Optional[Value], init: Optional[Sequence[Optional[str]]], hint: str
                    ) -> DirectionOutputs:
    """Keras's outputs of one direction (see the module documentation).

    Parameters
    ----------
    y, h, c
        The direction's ``Y [T, N, H]``, ``Y_h``, ``Y_c [N, H]``.
    mask
        The input mask or None.
    init
        The initial states ``[N, H]`` given to the layer (``[h0]`` or ``[h0, c0]``), or None.

    Shapes
    ------
    -> y_in [T, N, H] (time-major, indexed by input step), last [N, H], finals [N, H] each
    """
    if mask is None:
        return DirectionOutputs(y, h, [h] + ([c] if c is not None else []))
    lengths = mask_lengths(b, mask)
    finals = [h] + ([c] if c is not None else [])
    if init is not None and any(s is not None for s in init):
        # a sample with no valid step keeps its initial state (ONNX Runtime gives zeros)
        some = b.unsqueeze(b.op("Greater", [lengths, b.const(np.zeros((), np.int32), "zero_i32")]), [1])
        finals = [f if s is None else b.op("Where", [some, f, s], f"{hint}/final")
                  for f, s in zip(finals, init)]
    h = finals[0]
    m_tm = b.unsqueeze(mask.tm, [2], f"{hint}/mask")
    if spec.zero_output_for_mask:
        fill = b.zero()
    elif not spec.go_backwards:
        fill = h
    else:
        fill = init[0] if init is not None and init[0] is not None else b.zero()
    y_in = b.op("Where", [m_tm, y, fill], f"{hint}/y_masked")
    last = h
    if spec.zero_output_for_mask:
        idx = 0 if spec.go_backwards else -1
        m_last = b.slice(mask.bm, [idx], [idx + 1 if idx >= 0 else 2 ** 63 - 1], [1])
        last = b.op("Where", [m_last, h, b.zero()], f"{hint}/last")
    return DirectionOutputs(y_in, last, finals)


def sequence(b: Builder, spec: RecurrentSpec, out: DirectionOutputs) -> str:
    """The returned sequence (time-major): ``y_in``, flipped in time for ``go_backwards``.

    Shapes
    ------
    -> [T, N, H]
    """
    return b.flip0(out.y_in) if spec.go_backwards else out.y_in
