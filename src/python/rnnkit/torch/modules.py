r"""``torch.nn.LSTM``, ``GRU`` and ``RNN`` on rnnkit's kernels: :class:`LSTM`, :class:`GRU`,
:class:`RNN`.

Each class **is** its ``torch.nn`` counterpart (a subclass that only replaces ``forward``): the
constructor, its defaults and checks, the parameters (names, shapes, initialization, the
``_flat_weights`` bookkeeping), ``state_dict`` keys, ``repr``, ``flatten_parameters``,
``.to()``/``.double()`` and ``isinstance(m, torch.nn.LSTM)`` are torch's own. The forward takes
and returns what torch's does, and the whole stack (every layer and direction, the inter-layer
dropout) is one autograd node whose forward and backward run rnnkit's C++ kernels
(:mod:`rnnkit.torch._function`).

Limits
------
- CPU tensors of float32 or float64 only (parameters, input and ``hx`` of one dtype);
  anything else raises ``ValueError``/``TypeError`` naming the argument.
- First-order gradients only: differentiating the gradients again (double backward,
  ``create_graph=True``) raises ``RuntimeError``; forward-mode AD (``torch.func.jvp``) and
  ``torch.func.vmap`` are not supported.
- ``torch.compile`` and ``torch.jit.script``/``trace`` are not supported (the kernels are
  opaque to them); use the ``torch.nn`` module there (:func:`rnnkit.torch.revert`).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from rnnkit._checks import shape_str
from rnnkit.torch._function import StackFunction, StackSpec

__all__ = ["LSTM", "GRU", "RNN"]

Tensor = torch.Tensor
_FLOATS = (torch.float32, torch.float64)


def _check_tensor(name: str, t: Any, dtype: Optional[torch.dtype] = None, what: str = "the module's parameters") -> Tensor:
    """Raises TypeError/ValueError naming ``name`` unless ``t`` is a strided CPU tensor of
    float32/float64 (and of ``dtype`` when given)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name}: rnnkit.torch runs on the CPU only, got a tensor on {t.device} "
                         "(move the model and its inputs with .cpu(), or use torch.nn's module: "
                         "rnnkit.torch.revert)")
    if t.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name}: expected dtype torch.float32 or torch.float64, got {t.dtype}"
                        + (" (rnnkit's kernels have no half-precision path)"
                           if t.dtype in (torch.float16, torch.bfloat16) else ""))
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of {what}), got {t.dtype}; "
                        f"convert the input with .to({dtype}) or the module with .to({t.dtype})")
    return t


class _Bridge:
    """The forward shared by :class:`LSTM`, :class:`GRU` and :class:`RNN` (a mixin placed before
    the torch class)."""

    _rnnkit_cell = ""
    _rnnkit_kind = ""

    # attributes of torch.nn.RNNBase, for the type checker
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    proj_size: int
    training: bool

    def _rnnkit_layout(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(rnnkit weight keys of one layer-direction, every parameter name) in PyTorch's order."""
        keys = ("w_ih", "w_hh") + (("b_ih", "b_hh") if self.bias else ()) + \
            (("w_hr",) if self.proj_size else ())
        stems = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
                 "w_hr": "weight_hr"}
        D = 2 if self.bidirectional else 1
        names = tuple(f"{stems[k]}_l{layer}{'_reverse' if d else ''}"
                      for layer in range(self.num_layers) for d in range(D) for k in keys)
        return keys, names

    def _rnnkit_weights(self, names: Sequence[str]) -> Tuple[List[Tensor], torch.dtype]:
        weights = [getattr(self, n) for n in names]
        dtype = _check_tensor(names[0], weights[0]).dtype
        for n, w in zip(names[1:], weights[1:]):
            _check_tensor(n, w, dtype, f"{names[0]}")
        return weights, dtype

    def _rnnkit_states(self, hx: Any, N: int, batched: bool, dtype: torch.dtype,
                permutation: Optional[Tensor]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``hx`` checked and made ``[L*D, N, *]`` (time-major batch axis; permuted into the
        packed batch's sorted order), or Nones."""
        if hx is None:
            return None, None
        lstm = self._rnnkit_cell == "lstm"
        DL = self.num_layers * (2 if self.bidirectional else 1)
        if lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                got = type(hx).__name__ + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
                raise TypeError(f"hx: expected a tuple (h_0, c_0) of tensors for LSTM, got {got}")
            items = [("hx[0] (h_0)", hx[0], self.proj_size or self.hidden_size,
                      "proj_size" if self.proj_size else "hidden_size"),
                     ("hx[1] (c_0)", hx[1], self.hidden_size, "hidden_size")]
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"hx: expected a tensor h_0 for {self._rnnkit_kind}, got {type(hx).__name__}")
            items = [("hx", hx, self.hidden_size, "hidden_size")]
        out: List[Optional[Tensor]] = []
        for name, s, W, what in items:
            _check_tensor(name, s, dtype)
            want = (DL, N, W) if batched else (DL, W)
            if tuple(s.shape) != want:
                lead = "(D*num_layers, N, " if batched else "(D*num_layers, "
                extra = "" if batched else " for unbatched input"
                raise ValueError(f"{name}: expected shape {shape_str(want)} = {lead}{what}){extra}, "
                                 f"got {shape_str(tuple(s.shape))}")
            if not batched:
                s = s.unsqueeze(1)
            elif permutation is not None:
                s = s.index_select(1, permutation)
            out.append(s)
        return out[0], (out[1] if lstm else None)

    def _rnnkit_dropout_scales(self, shape: Tuple[int, ...], mask: Optional[Tensor],
                        dtype: torch.dtype) -> List[Tensor]:
        """The inter-layer dropout scales, drawn from torch's generator exactly as torch.nn's
        modules draw them (``empty_like(out).bernoulli_(1 - p).div_(1 - p)`` on each layer's
        output but the last; on the packed data when the input is packed), so that
        ``torch.manual_seed`` gives the same masks as ``torch.nn``. ``[T, N, D*Hs]`` each."""
        p = float(self.dropout)
        if not self.training or p == 0.0 or self.num_layers == 1:
            return []
        scales = []
        for _ in range(self.num_layers - 1):
            if p == 1.0:
                scales.append(torch.zeros(shape, dtype=dtype))
                continue
            if mask is None:
                scales.append(torch.empty(shape, dtype=dtype).bernoulli_(1.0 - p).div_(1.0 - p))
            else:
                noise = torch.empty((int(mask.sum()), shape[-1]), dtype=dtype).bernoulli_(1.0 - p).div_(1.0 - p)
                full = torch.zeros(shape, dtype=dtype)
                full[mask] = noise
                scales.append(full)
        return scales

    def _rnnkit_run(self, input: Any, hx: Any) -> Tuple[Any, Tuple[Tensor, ...]]:
        keys, names = self._rnnkit_layout()
        weights, dtype = self._rnnkit_weights(names)
        D = 2 if self.bidirectional else 1
        Hs = self.proj_size or self.hidden_size
        mask_np: Optional[np.ndarray] = None
        mask: Optional[Tensor] = None
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_tensor("input.data", data, dtype)
            if data.dim() != 2 or data.shape[-1] != self.input_size or data.shape[0] == 0:
                raise ValueError(f"input.data: expected a packed sequence's data of shape (sum of lengths, "
                                 f"input_size) = (*, {self.input_size}), got {shape_str(tuple(data.shape))}")
            bs = batch_sizes.numpy()
            T, N = len(bs), int(bs[0])
            if (bs == N).all():
                x = data.reshape(T, N, self.input_size)  # a view of contiguous data
            else:
                mask_np = np.arange(N)[None, :] < bs[:, None]
                mask = torch.from_numpy(mask_np)
                x = data.new_zeros((T, N, self.input_size)).index_put_((mask,), data)
            batched = True
            h0, c0 = self._rnnkit_states(hx, N, True, dtype, sorted_indices)
        else:
            _check_tensor("input", input, dtype)
            if input.dim() not in (2, 3):
                layout = "(N, T, input_size) (batch_first)" if self.batch_first else "(T, N, input_size)"
                raise ValueError(f"input: expected 3 dimensions {layout} or 2 dimensions (T, input_size) "
                                 f"(unbatched), got shape {shape_str(tuple(input.shape))}")
            if input.shape[-1] != self.input_size:
                raise ValueError(f"input: expected {self.input_size} features (input_size) in the last "
                                 f"dimension, got shape {shape_str(tuple(input.shape))}")
            if 0 in input.shape:
                raise ValueError(f"input: every dimension must be at least 1, got shape "
                                 f"{shape_str(tuple(input.shape))}")
            batched = input.dim() == 3
            if not batched:
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input
            T, N = x.shape[0], x.shape[1]
            h0, c0 = self._rnnkit_states(hx, N, batched, dtype, None)
        drops = self._rnnkit_dropout_scales((T, N, D * Hs), mask, dtype)
        spec = StackSpec(self._rnnkit_kind, self._rnnkit_cell, getattr(self, "nonlinearity", "tanh"),
                         self.num_layers, D, keys, mask_np, len(drops))
        y, *finals = StackFunction.apply(spec, x, h0, c0, *drops, *weights)
        if packed:
            out_data = y.view(T * N, D * Hs) if mask is None else y[mask]
            output: Any = PackedSequence(out_data, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                finals = [f.index_select(1, unsorted_indices) for f in finals]
            return output, tuple(finals)
        if not batched:
            return y.squeeze(1), tuple(f.squeeze(1) for f in finals)
        return (y.transpose(0, 1) if self.batch_first else y), tuple(finals)


_COMMON_DOC = r"""
    Shapes
    ------
    With ``D = 2`` if ``bidirectional`` else 1, ``H = hidden_size``, ``Hs`` the width of ``h``
    (``proj_size`` for an LSTM with projections, else ``H``), ``C = input_size``:

    - ``input``: ``[T, N, C]``, ``[N, T, C]`` with ``batch_first=True``, ``[T, C]`` unbatched, or
      a :class:`~torch.nn.utils.rnn.PackedSequence` (data ``[sum of lengths, C]``)
    - initial states: ``[D*num_layers, N, Hs]`` (LSTM's ``c_0``: ``[D*num_layers, N, H]``),
      ``[D*num_layers, Hs]`` unbatched; omitted = zeros
    - ``output``: ``[T, N, D*Hs]`` (``[N, T, D*Hs]`` with ``batch_first``, ``[T, D*Hs]``
      unbatched, or a ``PackedSequence`` like the input's), the last layer's ``h`` at every
      step, forward direction first
    - final states: like the initial ones, entry ``layer*D + direction``; for a packed input the
      state after each sample's last valid step (the reverse direction ends at step 0)

    Packed sequences
    ----------------
    The packed batch becomes a padded time-major batch in the packed (sorted) order plus a per-step
    mask ``[T, N]`` (step ``t`` valid for the first ``batch_sizes[t]`` samples): the kernels carry a
    sample's state through its padded steps and output zeros there, so the reverse direction
    starts at each sample's last valid step, as torch's. The output is the valid steps gathered back
    into a ``PackedSequence`` with the input's ``batch_sizes``, ``sorted_indices`` and
    ``unsorted_indices``; ``hx`` and the final states are permuted as torch does.

    Dropout
    -------
    In training mode with ``dropout > 0`` each layer's output but the last is multiplied by a
    Bernoulli mask scaled by ``1/(1 - dropout)``, drawn from torch's default generator as
    ``torch.nn`` draws it: after ``torch.manual_seed(s)`` the masks, and so the outputs, are
    those of the ``torch.nn`` module. The gradient flows through the mask.

    Differences from ``torch.nn``
    -----------------------------
    CPU tensors of float32/float64 only; the parameters, ``input`` and ``hx`` must share a dtype.
    Bad arguments raise ``ValueError``/``TypeError`` naming the argument (torch raises
    ``RuntimeError`` for some). First-order gradients only (double backward raises
    ``RuntimeError``). ``torch.compile``, ``torch.jit.script``/``trace``, forward-mode AD and
    ``vmap`` are not supported: use the ``torch.nn`` module there (:func:`rnnkit.torch.revert`;
    the ``state_dict`` is the same).
"""


class LSTM(_Bridge, torch.nn.LSTM):
    __doc__ = r"""``torch.nn.LSTM`` whose forward and backward run on rnnkit's kernels.

    A subclass of :class:`torch.nn.LSTM` with the same constructor, parameters (names, shapes,
    initialization), ``state_dict``, forward signature and return values; only the computation
    differs (one autograd node over the whole stack, see :mod:`rnnkit.torch`).

    Parameters
    ----------
    input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None
        As :class:`torch.nn.LSTM` (gate order i, f, g, o; ``proj_size > 0``: an LSTM with
        projections, ``weight_hr_l[k]: [proj_size, hidden_size]``).

    Examples
    --------
    >>> import torch, rnnkit.torch
    >>> lstm = rnnkit.torch.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
    >>> out, (h_n, c_n) = lstm(torch.randn(4, 10, 16))
    >>> out.shape, h_n.shape
    (torch.Size([4, 10, 64]), torch.Size([4, 4, 32]))
    {_COMMON_DOC}"""

    _rnnkit_cell = "lstm"
    _rnnkit_kind = "LSTM"

    def forward(self, input: Union[Tensor, PackedSequence],  # type: ignore[override]
                hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Union[Tensor, PackedSequence], Tuple[Tensor, Tensor]]:
        """Runs the LSTM over ``input``.

        Parameters
        ----------
        input
            A tensor or a ``PackedSequence`` (see Shapes).
        hx
            ``(h_0, c_0)`` or None (zeros).

        Returns
        -------
        output, (h_n, c_n)

        Shapes
        ------
        input: [T, N, C] / [N, T, C] (batch_first) / [T, C] / PackedSequence,
        h_0: [D*num_layers, N, Hs], c_0: [D*num_layers, N, H]
        -> output: [T, N, D*Hs] / [N, T, D*Hs] / [T, D*Hs] / PackedSequence, h_n, c_n: like h_0, c_0
        """
        output, (h_n, c_n) = self._rnnkit_run(input, hx)
        return output, (h_n, c_n)


class _OneState(_Bridge):
    """The forward of the cells with one state (GRU, RNN): ``output, h_n``."""

    def forward(self, input: Union[Tensor, PackedSequence],  # type: ignore[override]
                hx: Optional[Tensor] = None) -> Tuple[Union[Tensor, PackedSequence], Tensor]:
        """Runs the network (GRU or RNN: one state, h) over ``input``.

        Parameters
        ----------
        input
            A tensor or a ``PackedSequence`` (see Shapes).
        hx
            ``h_0`` or None (zeros).

        Returns
        -------
        output, h_n

        Shapes
        ------
        input: [T, N, C] / [N, T, C] (batch_first) / [T, C] / PackedSequence, h_0: [D*num_layers, N, H]
        -> output: [T, N, D*H] / [N, T, D*H] / [T, D*H] / PackedSequence, h_n: like h_0
        """
        output, (h_n,) = self._rnnkit_run(input, hx)
        return output, h_n


class GRU(_OneState, torch.nn.GRU):
    __doc__ = r"""``torch.nn.GRU`` whose forward and backward run on rnnkit's kernels.

    A subclass of :class:`torch.nn.GRU` with the same constructor, parameters, ``state_dict``,
    forward signature and return values; only the computation differs.

    Parameters
    ----------
    input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None
        As :class:`torch.nn.GRU` (gate order r, z, n; the reset gate multiplies
        ``W_hn h + b_hn``).

    Examples
    --------
    >>> import torch, rnnkit.torch
    >>> gru = rnnkit.torch.GRU(16, 32, num_layers=2, bidirectional=True)
    >>> out, h_n = gru(torch.randn(10, 4, 16))
    >>> out.shape, h_n.shape
    (torch.Size([10, 4, 64]), torch.Size([4, 4, 32]))
    {_COMMON_DOC}"""

    _rnnkit_cell = "gru"
    _rnnkit_kind = "GRU"


class RNN(_OneState, torch.nn.RNN):
    __doc__ = r"""``torch.nn.RNN`` (Elman, ``tanh`` or ``relu``) whose forward and backward run on
    rnnkit's kernels.

    A subclass of :class:`torch.nn.RNN` with the same constructor, parameters, ``state_dict``,
    forward signature and return values; only the computation differs.

    Parameters
    ----------
    input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None
        As :class:`torch.nn.RNN`.

    Examples
    --------
    >>> import torch, rnnkit.torch
    >>> rnn = rnnkit.torch.RNN(16, 32, nonlinearity="relu")
    >>> out, h_n = rnn(torch.randn(10, 16))      # unbatched
    >>> out.shape, h_n.shape
    (torch.Size([10, 32]), torch.Size([1, 32]))
    {_COMMON_DOC}"""

    _rnnkit_cell = "rnn"
    _rnnkit_kind = "RNN"


for _cls in (LSTM, GRU, RNN):
    _cls.__doc__ = _cls.__doc__.replace("{_COMMON_DOC}", _COMMON_DOC)
del _cls
