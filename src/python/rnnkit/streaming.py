"""Stateful streaming inference: feed a recurrent cell one step (or one chunk of steps) at a time.

The weights are copied into C++ once, when the stream is made; the state stays in C++ between
calls, so a step from Python is a single call with no per-step validation of the weights and no
allocation besides the returned array. Use it for real-time audio, sensor or token streams at
batch 1, where a framework's per-op overhead dominates the arithmetic.

Example
-------
>>> s = LSTMStream(w_ih, w_hh, b_ih, b_hh)          # weights as in rnnkit.functional
>>> for frame in frames:                              # frame: [1, C]
...     h = s.step(frame)                             # h: [1, H]
>>> y = s.run(chunk)                                  # chunk: [steps, 1, C] -> y: [steps, 1, H]

Shapes
------
w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H] (None = no bias), G = 1 / 4 / 3.
step: x [N, C] -> h [N, H];  run: x [steps, N, C] -> y [steps, N, H];  N = batch_size.

Precision
---------
``precision="bfloat16"`` or ``"int8"`` (float32 weights only) keeps the weights in C++ in that
precision: bfloat16 rounds each weight to 8 significant bits (half the bytes); int8 stores each
output row as ``s * q`` with one scale ``s = max|w| / 127`` per row and ``q`` in [-127, 127]
(a quarter of the bytes), as ``torch.ao.quantization.quantize_dynamic`` does per channel. The
state and the arithmetic stay float32 (weight-only quantization). A step at small batch reads
every weight once and is bound by that read, so it gets faster; the outputs differ from
float32 by the weights' rounding (``bench/quantized_stream.py`` measures both).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from rnnkit import _core
from rnnkit._checks import as_float_array, check_cell_activations, check_fits_memory, check_positive_int
from rnnkit._checks import check_rate
from rnnkit._checks import recurrent_weights

__all__ = ["RNNStream", "LSTMStream", "GRUStream", "StackedStream", "PRECISIONS"]

_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
#: The weights' precisions a stream can keep (see the module's Precision section).
PRECISIONS = ("float32", "bfloat16", "int8")


def check_precision(precision: object, dtype: np.dtype) -> str:
    """``precision`` checked against :data:`PRECISIONS` and the weights' dtype."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision != "float32" and dtype != np.float32:
        raise ValueError(f"precision: {precision!r} needs float32 weights, got {dtype}")
    return precision


class _Stream:
    _kind = ""

    def __init__(self, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_size: int = 1,
                 activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 kind: Optional[str] = None, w_hr=None, zoneout: float = 0.0,
                 zoneout_cell: float = 0.0, ln: Optional[dict] = None, precision: str = "float32") -> None:
        batch_size = check_positive_int("batch_size", batch_size)
        check_cell_activations(activation, recurrent_activation)
        kind = kind or self._kind
        G = _GATES[self._kind]
        w_ih, w_hh, b_ih, b_hh = recurrent_weights(G, self._kind, w_ih, w_hh, b_ih, b_hh, w_hr=w_hr)
        if w_hr is not None:
            w_hr = as_float_array("w_hr", w_hr, w_hh.dtype)
        if kind == "GRU_V1" and b_hh is not None:
            raise ValueError("b_hh: the GRU with reset_after=False has no recurrent bias, expected None")
        dt, H = w_hh.dtype, w_hh.shape[1]
        # the state and one-step workspaces, about N * H * (2G + 4) items, checked before C++
        # allocates anything
        check_fits_memory("batch_size", batch_size,
                          float(batch_size) * H * (2 * G + 4) * dt.itemsize,
                          f"a {self._kind} stream's state (H={H})")
        impl_cls = _core.StreamF32 if dt == np.float32 else _core.StreamF64
        lnp = {}
        if ln is not None:  # the LayerNorm cells' gains and biases, [G*H] and [H]
            for name, size in (("gamma_x", G * H), ("gamma_h", G * H), ("gamma_c", H), ("beta_c", H)):
                if name in ln:
                    a = as_float_array(name, ln[name], dt)
                    if a.shape != (size,):
                        raise ValueError(f"{name}: expected shape ({size},), got {a.shape}")
                    lnp[name] = a
        self._impl = impl_cls(kind, w_ih, w_hh, b_ih, b_hh, batch_size, activation,
                              recurrent_activation, w_hr, check_rate("zoneout", zoneout),
                              check_rate("zoneout_cell", zoneout_cell), **lnp,
                              precision=check_precision(precision, dt))
        self.dtype = dt
        # bound C++ methods, so a call costs no Python frame of ours
        self.step = self._impl.step
        self.run = self._impl.run

    def step(self, x: np.ndarray) -> np.ndarray:  # replaced per instance by the C++ method
        """One step: ``x: [N, C]`` -> new hidden state ``h: [N, H]`` (the state is carried)."""
        return self._impl.step(x)

    def run(self, x: np.ndarray) -> np.ndarray:  # replaced per instance by the C++ method
        """A chunk of steps in one call: ``x: [steps, N, C]`` -> outputs ``y: [steps, N, H]``."""
        return self._impl.run(x)

    def reset(self, h0: Optional[np.ndarray] = None, c0: Optional[np.ndarray] = None) -> None:
        """Sets the carried state (``[N, H]`` each; None = zeros)."""
        if c0 is not None and self._kind != "LSTM":
            raise ValueError(f"c0: only an LSTM stream has a cell state, this is {self._kind}")
        h0 = None if h0 is None else as_float_array("h0", h0, self.dtype)
        c0 = None if c0 is None else as_float_array("c0", c0, self.dtype)
        self._impl.reset(h0, c0)

    @property
    def h(self) -> np.ndarray:
        """A copy of the carried hidden state, ``[N, H]``."""
        return self._impl.h

    @property
    def batch_size(self) -> int:
        return int(self._impl.batch_size)

    @property
    def precision(self) -> str:
        """The weights' precision in C++: 'float32', 'bfloat16' or 'int8'."""
        return str(self._impl.precision)

    @property
    def input_size(self) -> int:
        return int(self._impl.input_size)

    @property
    def hidden_size(self) -> int:
        return int(self._impl.hidden_size)

    @property
    def state_size(self) -> int:
        """The width of ``h`` and of each step's output: ``hidden_size``, or P with a projection."""
        return int(self._impl.state_size)


class RNNStream(_Stream):
    """Streaming Elman RNN (``nonlinearity`` 'tanh', 'relu' or 'linear', PyTorch's name for the
    activation). See the module documentation."""
    _kind = "RNN"

    def __init__(self, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_size: int = 1,
                 nonlinearity: str = "tanh", precision: str = "float32") -> None:
        check_cell_activations(nonlinearity, None, names=("nonlinearity", ""))
        super().__init__(w_ih, w_hh, b_ih, b_hh, batch_size=batch_size, activation=nonlinearity,
                         precision=precision)


class LSTMStream(_Stream):
    """Streaming LSTM (gate order i, f, g, o), with a projection ``w_hr: [P, H]`` (LSTMP: the
    state and each step's output are P wide) when given, the inference form of zoneout
    (``zoneout``, ``zoneout_cell``: each step moves h, c by ``1 - rate`` of the way), and the
    LayerNorm LSTM when its gains are given (``gamma_x``, ``gamma_h``: [4H], ``gamma_c``,
    ``beta_c``: [H]). See the module documentation."""
    _kind = "LSTM"

    def __init__(self, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, *, batch_size: int = 1,
                 activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 zoneout: float = 0.0, zoneout_cell: float = 0.0, gamma_x=None, gamma_h=None,
                 gamma_c=None, beta_c=None, precision: str = "float32") -> None:
        ln = None
        if any(a is not None for a in (gamma_x, gamma_h, gamma_c, beta_c)):
            if any(a is None for a in (gamma_x, gamma_h, gamma_c, beta_c)):
                raise ValueError("gamma_x, gamma_h, gamma_c, beta_c: a LayerNorm LSTM stream needs all four")
            ln = {"gamma_x": gamma_x, "gamma_h": gamma_h, "gamma_c": gamma_c, "beta_c": beta_c}
        super().__init__(w_ih, w_hh, b_ih, b_hh, batch_size=batch_size, activation=activation,
                         recurrent_activation=recurrent_activation, w_hr=w_hr, zoneout=zoneout,
                         zoneout_cell=zoneout_cell, kind="LSTM_LN" if ln else "LSTM", ln=ln,
                         precision=precision)

    @property
    def c(self) -> np.ndarray:
        """A copy of the carried cell state, ``[N, H]``."""
        return self._impl.c


class GRUStream(_Stream):
    """Streaming GRU, gate order r, z, n: PyTorch's form (``reset_after=True``), or with the reset
    gate before the recurrent product and no ``b_hh`` (``reset_after=False``, Keras 2's form).
    See the module documentation."""
    _kind = "GRU"

    def __init__(self, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_size: int = 1,
                 activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 reset_after: bool = True, zoneout: float = 0.0, gamma_x=None, gamma_h=None,
                 precision: str = "float32") -> None:
        ln = None
        if gamma_x is not None or gamma_h is not None:
            if gamma_x is None or gamma_h is None:
                raise ValueError("gamma_x, gamma_h: a LayerNorm GRU stream needs both")
            if not reset_after:
                raise ValueError("reset_after: the LayerNorm GRU has PyTorch's form only (True)")
            ln = {"gamma_x": gamma_x, "gamma_h": gamma_h}
        super().__init__(w_ih, w_hh, b_ih, b_hh, batch_size=batch_size, activation=activation,
                         recurrent_activation=recurrent_activation,
                         kind="GRU_LN" if ln else ("GRU" if reset_after else "GRU_V1"), zoneout=zoneout, ln=ln,
                         precision=precision)


class StackedStream:
    """Several streams run one after another at every call: a multi-layer recurrent network
    (e.g. from :meth:`rnnkit.nn.LSTM.stream` with ``num_layers > 1``). Each layer's output
    feeds the next; every layer carries its own state in C++.

    Shapes
    ------
    step: x [N, C] -> h [N, H_last];  run: x [steps, N, C] -> y [steps, N, H_last];
    h: [num_layers, N, H] (and c for LSTM layers).
    """

    def __init__(self, streams) -> None:
        self.streams = list(streams)
        if not self.streams:
            raise ValueError("streams: expected at least one stream, got none")

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step through every layer: ``x: [N, C]`` -> ``h: [N, H]`` of the last layer."""
        for s in self.streams:
            x = s.step(x)
        return x

    def run(self, x: np.ndarray) -> np.ndarray:
        """A chunk of steps through every layer: ``x: [steps, N, C]`` -> ``y: [steps, N, H]``."""
        for s in self.streams:
            x = s.run(x)
        return x

    def reset(self) -> None:
        """Zeroes every layer's state."""
        for s in self.streams:
            s.reset()

    @property
    def h(self) -> np.ndarray:
        """The carried hidden states of all layers, ``[num_layers, N, H]``."""
        return np.stack([s.h for s in self.streams])

    @property
    def c(self) -> np.ndarray:
        """The carried cell states of all (LSTM) layers, ``[num_layers, N, H]``."""
        return np.stack([s.c for s in self.streams])
