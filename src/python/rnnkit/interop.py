r"""Weight conversions between rnnkit (PyTorch's layout), PyTorch, Keras and ONNX — all in one place.

rnnkit stores recurrent weights as PyTorch does: ``w_ih [G*H, C]``, ``w_hh [G*H, H]``,
``b_ih``/``b_hh [G*H]`` with the gate blocks stacked along the rows (``G = 1`` RNN,
``4`` LSTM **i, f, g, o**, ``3`` GRU **r, z, n**). The other layouts:

============  ==========================================  =====================================
framework     arrays                                       gate blocks
============  ==========================================  =====================================
Keras 3       ``kernel [C, G*U]``, ``recurrent_kernel      LSTM i, f, c, o; GRU **z, r, h**
              [U, G*U]`` (transposes), ``bias``
              (SimpleRNN/LSTM ``[G*U]`` = ``b_ih + b_hh``;
              GRU ``reset_after=True`` ``[2, 3U]`` = input
              bias row, recurrent bias row)
ONNX          ``W [D, G*H, C]``, ``R [D, G*H, H]``,         LSTM **i, o, f, c**; GRU **z, r, h**
              ``B [D, 2*G*H]`` (input biases then         (``linear_before_reset=1``)
              recurrent biases)
============  ==========================================  =====================================

Conversions are exact (pure permutations and transposes) except Keras's single LSTM/SimpleRNN
bias: PyTorch -> Keras stores ``b_ih + b_hh``; Keras -> PyTorch puts it in ``b_ih`` and makes
``b_hh`` zeros, which computes the same function. Keras's ``reset_after=False`` GRU and ONNX's
``linear_before_reset=0`` GRU apply the reset gate before the recurrent matrix and have no
PyTorch equivalent; they raise ``ValueError``. Every function returns fresh C-contiguous arrays
of the input dtype (float32 or float64); all arrays of one call must share that dtype.

The per-direction dictionaries used throughout have the keys ``w_ih, w_hh, b_ih, b_hh`` (the
biases may be ``None``): what :func:`keras_to_torch` and :func:`from_onnx_weights` return and
what :meth:`rnnkit.nn.LSTM.direction_weights` gives.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit import _layouts, nn
from rnnkit._checks import FLOAT_DTYPES, check_bool, recurrent_weights, shape_str
from rnnkit.nn.module import SeedLike, to_numpy

__all__ = [
    "state_dict_from_torch", "state_dict_to_torch", "from_torch_module", "to_torch_module",
    "keras_to_torch", "torch_to_keras", "module_to_keras", "load_keras_weights",
    "to_onnx_weights", "from_onnx_weights", "module_to_onnx_weights", "load_onnx_weights",
]

Array = np.ndarray
Weights = Dict[str, Optional[Array]]

_GATES = _layouts.GATES
_CELL_ALIASES = {"rnn": "rnn", "simplernn": "rnn", "simple_rnn": "rnn", "elman": "rnn",
                 "lstm": "lstm", "gru": "gru"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _cell(cell: Any) -> str:
    if not isinstance(cell, str):
        raise TypeError(f"cell: expected one of 'rnn' ('simplernn'), 'lstm', 'gru', got {type(cell).__name__}")
    key = _CELL_ALIASES.get(cell.lower())
    if key is None:
        raise ValueError(f"cell: expected one of 'rnn' ('simplernn'), 'lstm', 'gru', got {cell!r}")
    return key


def _float_array(name: str, a: Any, dtype: Optional[np.dtype] = None) -> Array:
    a = to_numpy(a)
    arr = np.asarray(a)
    if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of the first array), got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _expect(name: str, a: Array, shape: Tuple[int, ...], what: str) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {shape_str(shape)} = {what}, got {shape_str(a.shape)}")


def _check_direction(cell: str, name: str, w: Any, dtype: Optional[np.dtype] = None
                     ) -> Tuple[Array, Array, Optional[Array], Optional[Array]]:
    """Validates one direction's ``w_ih, w_hh, b_ih, b_hh`` (PyTorch layout)."""
    if not isinstance(w, Mapping):
        raise TypeError(f"{name}: expected a mapping with keys w_ih, w_hh, b_ih, b_hh, got {type(w).__name__}")
    extra = sorted(set(w) - {"w_ih", "w_hh", "b_ih", "b_hh"})
    if extra or "w_ih" not in w or "w_hh" not in w:
        raise ValueError(f"{name}: expected keys w_ih, w_hh (required), b_ih, b_hh, got {sorted(w)}")
    return _check_torch_arrays(cell, w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"), name + ".", dtype)


def _check_torch_arrays(cell: str, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, prefix: str = "",
                        dtype: Optional[np.dtype] = None
                        ) -> Tuple[Array, Array, Optional[Array], Optional[Array]]:
    conv = [to_numpy(a) for a in (w_ih, w_hh, b_ih, b_hh)]
    return recurrent_weights(_GATES[cell], cell.upper(), *conv, dtype=dtype, prefix=prefix)


def _module_cell(module: Any) -> str:
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    if isinstance(module, nn.RNN):
        return "rnn"
    raise TypeError(f"module: expected an rnnkit.nn.RNN, LSTM or GRU, got {type(module).__name__}")


def _load_direction(module: Any, layer: int, reverse: bool, w_ih: Array, w_hh: Array,
                    b_ih: Optional[Array], b_hh: Optional[Array]) -> None:
    """Copies one direction's arrays into ``module`` (checked shapes, cast to its dtype)."""
    module.direction_weights(layer, reverse)  # validates layer / reverse
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    sd: Dict[str, Array] = {"weight_ih" + sfx: w_ih, "weight_hh" + sfx: w_hh}
    if module.bias:
        zeros = np.zeros(w_hh.shape[0], w_hh.dtype)
        sd["bias_ih" + sfx] = zeros if b_ih is None else b_ih
        sd["bias_hh" + sfx] = zeros if b_hh is None else b_hh
    else:
        for nm, b in (("b_ih", b_ih), ("b_hh", b_hh)):
            if b is not None and np.any(b != 0):
                raise ValueError(f"{nm}: the module has bias=False but the weights have a nonzero bias")
    module.load_state_dict(sd, strict=False)


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------

def state_dict_from_torch(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Array]":
    """A PyTorch state dict as NumPy arrays (copies), keys unchanged.

    rnnkit.nn uses PyTorch's keys and layouts, so the result loads with
    :meth:`rnnkit.nn.Module.load_state_dict` (which also accepts tensors directly).

    Shapes
    ------
    Every value keeps its shape.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}")
    return OrderedDict((k, np.array(to_numpy(v), copy=True)) for k, v in state_dict.items())


def state_dict_to_torch(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """An rnnkit state dict as CPU ``torch.Tensor`` values (copies), for ``torch.nn.Module.load_state_dict``.

    Requires torch (imported here only).

    Shapes
    ------
    Every value keeps its shape.
    """
    import torch

    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    return OrderedDict((k, torch.from_numpy(np.array(to_numpy(v), copy=True)))
                       for k, v in state_dict.items())


def from_torch_module(module: Any, *, seed: SeedLike = None) -> Union[nn.RNN, nn.LSTM, nn.GRU]:
    """Builds the rnnkit.nn module equivalent to a ``torch.nn.RNN``/``LSTM``/``GRU`` (same
    configuration, dtype and weights; training/eval mode copied).

    ``proj_size`` LSTMs become LSTMPs (``weight_hr_l[k]``); non-float32/float64 modules raise
    ``ValueError``. torch is not imported: the module is read through its attributes and
    ``state_dict()``.

    Shapes
    ------
    Parameters keep PyTorch's shapes and names (``weight_ih_l0: [G*H, C]``, ...).
    """
    kind = type(module).__name__
    if kind in ("RNNCell", "LSTMCell", "GRUCell") and callable(getattr(module, "state_dict", None)):
        return _cell_from_torch(module, kind, seed)
    if kind not in ("RNN", "LSTM", "GRU") or not callable(getattr(module, "state_dict", None)):
        raise TypeError(f"module: expected a torch.nn.RNN, LSTM, GRU or one of their cells, got "
                        f"{type(module).__name__}")
    sd = module.state_dict()
    first = np.asarray(to_numpy(next(iter(sd.values()))))
    if first.dtype not in FLOAT_DTYPES:
        raise ValueError(f"module: expected float32 or float64 parameters, got {first.dtype}")
    kw: Dict[str, Any] = dict(num_layers=int(module.num_layers), bias=bool(module.bias),
                              batch_first=bool(module.batch_first), dropout=float(module.dropout),
                              bidirectional=bool(module.bidirectional), dtype=first.dtype, seed=seed)
    if kind == "RNN":
        out: Any = nn.RNN(int(module.input_size), int(module.hidden_size),
                          nonlinearity=str(module.nonlinearity), **kw)
    elif kind == "LSTM":
        out = nn.LSTM(int(module.input_size), int(module.hidden_size),
                      proj_size=int(getattr(module, "proj_size", 0)), **kw)
    else:
        out = nn.GRU(int(module.input_size), int(module.hidden_size), **kw)
    out.load_state_dict(sd)
    out.train(bool(module.training))
    return out


def _cell_from_torch(module: Any, kind: str, seed: SeedLike) -> Any:
    """The rnnkit.nn cell equivalent to a torch.nn RNNCell/LSTMCell/GRUCell (same weights)."""
    sd = module.state_dict()
    first = np.asarray(to_numpy(next(iter(sd.values()))))
    if first.dtype not in FLOAT_DTYPES:
        raise ValueError(f"module: expected float32 or float64 parameters, got {first.dtype}")
    kw: Dict[str, Any] = dict(bias=bool(module.bias), dtype=first.dtype, seed=seed)
    if kind == "RNNCell":
        kw["nonlinearity"] = str(module.nonlinearity)
    out = getattr(nn, kind)(int(module.input_size), int(module.hidden_size), **kw)
    out.load_state_dict(sd)
    out.train(bool(module.training))
    return out


def to_torch_module(module: Union[nn.RNN, nn.LSTM, nn.GRU]) -> Any:
    """Builds the ``torch.nn.RNN``/``LSTM``/``GRU`` equivalent to an rnnkit.nn module (same
    configuration, dtype and weights; training/eval mode copied). Requires torch.

    Shapes
    ------
    Parameters keep their shapes and names (``weight_ih_l0: [G*H, C]``, ...).
    """
    import torch

    tdtype = torch.float64 if module.dtype == np.float64 else torch.float32
    if isinstance(module, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
        kind = type(module).__name__
        ckw: Dict[str, Any] = dict(bias=module.bias, dtype=tdtype)
        if kind == "RNNCell":
            ckw["nonlinearity"] = module.nonlinearity
        cell_out = getattr(torch.nn, kind)(module.input_size, module.hidden_size, **ckw)
        cell_out.load_state_dict(state_dict_to_torch(module.state_dict()))
        cell_out.train(module.training)
        return cell_out
    cell = _module_cell(module)
    kw: Dict[str, Any] = dict(num_layers=module.num_layers, bias=module.bias,
                              batch_first=module.batch_first, dropout=module.dropout,
                              bidirectional=module.bidirectional, dtype=tdtype)
    if cell == "rnn":
        out = torch.nn.RNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, **kw)
    elif cell == "lstm":
        out = torch.nn.LSTM(module.input_size, module.hidden_size, proj_size=module.proj_size, **kw)
    else:
        out = torch.nn.GRU(module.input_size, module.hidden_size, **kw)
    out.load_state_dict(state_dict_to_torch(module.state_dict()))
    out.train(module.training)
    return out


# ---------------------------------------------------------------------------------------------
# Keras
# ---------------------------------------------------------------------------------------------

def keras_to_torch(cell: str, weights: Sequence[Any], reset_after: bool = True) -> Weights:
    """Keras ``SimpleRNN``/``LSTM``/``GRU`` weights (``layer.get_weights()``) -> PyTorch layout.

    Parameters
    ----------
    cell
        ``'rnn'`` (or ``'simplernn'``), ``'lstm'`` or ``'gru'``.
    weights
        ``[kernel, recurrent_kernel, bias]``, or ``[kernel, recurrent_kernel]`` for a layer
        built with ``use_bias=False``.
    reset_after
        The Keras GRU's ``reset_after``; only ``True`` (Keras's default, PyTorch's form) can be
        converted.

    Returns
    -------
    dict
        ``{"w_ih", "w_hh", "b_ih", "b_hh"}`` (biases ``None`` without a Keras bias). For
        SimpleRNN and LSTM the Keras bias goes to ``b_ih`` and ``b_hh`` is zeros.

    Shapes
    ------
    kernel: [C, G*U], recurrent_kernel: [U, G*U], bias: [G*U] (GRU: [2, 3U])
    -> w_ih: [G*U, C], w_hh: [G*U, U], b_ih, b_hh: [G*U]
    """
    cell = _cell(cell)
    G = _GATES[cell]
    if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights: expected a list [kernel, recurrent_kernel(, bias)], got {type(weights).__name__}")
    if len(weights) not in (2, 3):
        raise ValueError(f"weights: expected 2 or 3 arrays [kernel, recurrent_kernel(, bias)], got {len(weights)}")
    if cell == "gru" and not check_bool("reset_after", reset_after):
        raise ValueError("reset_after: a Keras GRU with reset_after=False applies the reset gate before the "
                         "recurrent kernel and has no PyTorch equivalent; only reset_after=True converts")
    kernel = _float_array("kernel", weights[0])
    dt = kernel.dtype
    rk = _float_array("recurrent_kernel", weights[1], dt)
    if rk.ndim != 2 or rk.shape[0] == 0 or rk.shape[1] != G * rk.shape[0]:
        raise ValueError(f"recurrent_kernel: expected shape (U, {G}*U) for {cell.upper()}, got {shape_str(rk.shape)}")
    U = rk.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != G * U:
        raise ValueError(f"kernel: expected shape (C, {G * U}) = (C, {G}*U) with U={U} from recurrent_kernel, "
                         f"got {shape_str(kernel.shape)}")
    bias = None
    if len(weights) == 3:
        bias = _float_array("bias", weights[2], dt)
        if cell == "gru":
            _expect("bias", bias, (2, G * U), f"(2, {G}*U) (input bias row, recurrent bias row) with U={U}")
        else:
            _expect("bias", bias, (G * U,), f"({G}*U,) with U={U}")
    w = _layouts.keras_to_internal(cell, kernel, rk, bias, reset_after=True)
    w_ih, w_hh, b_ih, b_hh = w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"]
    if bias is not None and cell != "gru":
        b_hh = np.zeros_like(bias)
    return {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}


def torch_to_keras(cell: str, w_ih: Any, w_hh: Any, b_ih: Any = None, b_hh: Any = None) -> List[Array]:
    """PyTorch-layout weights -> Keras ``set_weights`` list.

    Parameters
    ----------
    cell
        ``'rnn'`` (or ``'simplernn'``), ``'lstm'`` or ``'gru'``.
    w_ih, w_hh, b_ih, b_hh
        One direction in PyTorch's layout; a missing bias counts as zeros.

    Returns
    -------
    list
        ``[kernel, recurrent_kernel, bias]``, or ``[kernel, recurrent_kernel]`` when both biases
        are ``None`` (a Keras layer with ``use_bias=False``). SimpleRNN/LSTM bias is
        ``b_ih + b_hh``; the GRU bias is ``[2, 3U]`` for a Keras GRU with ``reset_after=True``.

    Shapes
    ------
    w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H]
    -> kernel: [C, G*H], recurrent_kernel: [H, G*H], bias: [G*H] (GRU: [2, 3H])
    """
    cell = _cell(cell)
    w_ih, w_hh, b_ih, b_hh = _check_torch_arrays(cell, w_ih, w_hh, b_ih, b_hh)
    return _layouts.internal_to_keras(cell, w_ih, w_hh, b_ih, b_hh, reset_after=True)


def module_to_keras(module: Union[nn.RNN, nn.LSTM, nn.GRU], layer: int = 0, reverse: bool = False) -> List[Array]:
    """One layer and direction of an rnnkit.nn module as a Keras ``set_weights`` list (see
    :func:`torch_to_keras`); ``reverse=True`` is the backward layer of a Keras ``Bidirectional``.

    Shapes
    ------
    -> kernel: [C_layer, G*H], recurrent_kernel: [H, G*H], bias: [G*H] (GRU: [2, 3H]);
    ``C_layer`` is ``input_size`` for layer 0 and ``D*H`` above.
    """
    cell = _module_cell(module)
    return torch_to_keras(cell, **module.direction_weights(layer, reverse))


def load_keras_weights(module: Union[nn.RNN, nn.LSTM, nn.GRU], weights: Sequence[Any], *, layer: int = 0,
                       reverse: bool = False, reset_after: bool = True) -> None:
    """Loads Keras weights (see :func:`keras_to_torch`) into one layer and direction of an
    rnnkit.nn module, in place. A module without bias accepts only a zero Keras bias; a module
    with bias gets ``b_hh = 0`` from a SimpleRNN/LSTM bias and zero biases from ``use_bias=False``.

    Shapes
    ------
    kernel: [C_layer, G*H], recurrent_kernel: [H, G*H], bias: [G*H] (GRU: [2, 3H]), with the
    module's ``H`` and ``C_layer`` (``input_size`` for layer 0, ``D*H`` above).
    """
    cell = _module_cell(module)
    w = keras_to_torch(cell, weights, reset_after=reset_after)
    _load_direction(module, layer, reverse, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------

def to_onnx_weights(cell: str, directions: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]
                    ) -> Dict[str, Optional[Array]]:
    """PyTorch-layout weights of one or two directions -> the ``W``, ``R``, ``B`` inputs of the
    ONNX ``RNN``/``LSTM``/``GRU`` operator.

    Parameters
    ----------
    cell
        ``'rnn'``, ``'lstm'`` or ``'gru'``.
    directions
        One mapping ``{"w_ih", "w_hh", "b_ih", "b_hh"}`` (ONNX ``direction="forward"``) or a
        sequence of one or two: forward then reverse (``direction="bidirectional"``).

    Returns
    -------
    dict
        ``{"W", "R", "B"}``; ``B`` is ``None`` (omit the input) when no direction has a bias, a
        missing bias otherwise counts as zeros. A GRU needs ``linear_before_reset=1`` on the ONNX
        node; a ReLU RNN needs ``activations=["Relu"]``.

    Shapes
    ------
    w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H] per direction
    -> W: [D, G*H, C], R: [D, G*H, H], B: [D, 2*G*H]
    """
    cell = _cell(cell)
    if isinstance(directions, Mapping):
        directions = [directions]
    if isinstance(directions, (str, bytes)) or not isinstance(directions, Sequence):
        raise TypeError(f"directions: expected a mapping or a sequence of 1 or 2 mappings, got {type(directions).__name__}")
    if len(directions) not in (1, 2):
        raise ValueError(f"directions: expected 1 or 2 directions, got {len(directions)}")
    checked = []
    dt = None
    for i, w in enumerate(directions):
        arrs = _check_direction(cell, f"directions[{i}]", w, dt)
        dt = arrs[0].dtype
        checked.append(arrs)
    if len(checked) == 2 and (checked[0][0].shape != checked[1][0].shape or checked[0][1].shape != checked[1][1].shape):
        raise ValueError(f"directions: forward and reverse weights differ in shape: w_ih {checked[0][0].shape} vs "
                         f"{checked[1][0].shape}, w_hh {checked[0][1].shape} vs {checked[1][1].shape}")
    return _layouts.stack_onnx(cell, [dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), c)) for c in checked])


def from_onnx_weights(cell: str, W: Any, R: Any, B: Any = None, *, linear_before_reset: int = 1) -> List[Weights]:
    """The ``W``, ``R``, ``B`` inputs of an ONNX ``RNN``/``LSTM``/``GRU`` -> PyTorch layout per
    direction.

    Parameters
    ----------
    cell
        ``'rnn'``, ``'lstm'`` or ``'gru'``.
    W, R, B
        The operator's weight inputs; ``B`` may be ``None`` (ONNX's default: zero biases, returned
        as ``None``). LSTM peepholes (``P``) have no PyTorch equivalent and are not taken.
    linear_before_reset
        The GRU node's attribute; only ``1`` (PyTorch's form) converts.

    Returns
    -------
    list of dict
        One ``{"w_ih", "w_hh", "b_ih", "b_hh"}`` per direction: ``[forward]`` or
        ``[forward, reverse]`` (for ``direction="reverse"`` the single entry is the reverse one).

    Shapes
    ------
    W: [D, G*H, C], R: [D, G*H, H], B: [D, 2*G*H]
    -> per direction w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H]
    """
    cell = _cell(cell)
    G = _GATES[cell]
    if cell == "gru":
        if isinstance(linear_before_reset, (bool, np.bool_)) or linear_before_reset not in (0, 1):
            raise ValueError(f"linear_before_reset: expected 0 or 1, got {linear_before_reset!r}")
        if linear_before_reset != 1:
            raise ValueError("linear_before_reset: an ONNX GRU with linear_before_reset=0 applies the reset gate "
                             "before R and has no PyTorch equivalent; only linear_before_reset=1 converts")
    W = _float_array("W", W)
    dt = W.dtype
    R = _float_array("R", R, dt)
    if R.ndim != 3 or R.shape[0] not in (1, 2) or R.shape[2] == 0 or R.shape[1] != G * R.shape[2]:
        raise ValueError(f"R: expected shape (D, {G}*H, H) with D in (1, 2) for {cell.upper()}, got {shape_str(R.shape)}")
    D, GH, H = R.shape
    if W.ndim != 3 or W.shape[:2] != (D, GH):
        raise ValueError(f"W: expected shape ({D}, {GH}, C) = (D, {G}*H, C) with D, H from R, got {shape_str(W.shape)}")
    if B is not None:
        B = _float_array("B", B, dt)
        _expect("B", B, (D, 2 * GH), f"(D, 2*{G}*H) with D, H from R")
    return _layouts.unstack_onnx(cell, W, R, B)


def module_to_onnx_weights(module: Union[nn.RNN, nn.LSTM, nn.GRU], layer: int = 0) -> Dict[str, Optional[Array]]:
    """``W``, ``R``, ``B`` of one layer of an rnnkit.nn module (both directions when
    bidirectional; see :func:`to_onnx_weights`). A multi-layer module exports as one ONNX node
    per layer.

    Shapes
    ------
    -> W: [D, G*H, C_layer], R: [D, G*H, H], B: [D, 2*G*H] (``None`` when ``bias=False``)
    """
    cell = _module_cell(module)
    dirs = [module.direction_weights(layer, False)]
    if module.bidirectional:
        dirs.append(module.direction_weights(layer, True))
    return to_onnx_weights(cell, dirs)


def load_onnx_weights(module: Union[nn.RNN, nn.LSTM, nn.GRU], W: Any, R: Any, B: Any = None, *,
                      layer: int = 0, linear_before_reset: int = 1) -> None:
    """Loads ONNX ``W``, ``R``, ``B`` into one layer of an rnnkit.nn module, in place. ``D`` must
    match the module (2 when bidirectional).

    Shapes
    ------
    W: [D, G*H, C_layer], R: [D, G*H, H], B: [D, 2*G*H] or None, with the module's ``D``, ``H``
    and ``C_layer``.
    """
    cell = _module_cell(module)
    dirs = from_onnx_weights(cell, W, R, B, linear_before_reset=linear_before_reset)
    if len(dirs) != module.num_directions:
        raise ValueError(f"W: expected D={module.num_directions} direction(s) for this module "
                         f"(bidirectional={module.bidirectional}), got {len(dirs)}")
    for d, w in enumerate(dirs):
        _load_direction(module, layer, d == 1, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
