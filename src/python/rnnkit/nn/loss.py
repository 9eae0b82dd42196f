r"""PyTorch-style loss modules: :class:`MSELoss`, :class:`CrossEntropyLoss`,
:class:`BCEWithLogitsLoss` (``torch.nn``'s arguments, reductions and shapes).

``forward(input, target)`` returns the loss: a 0-d NumPy array of the input's dtype for
``reduction='mean'``/``'sum'`` (``.item()``, ``float()`` and format specs work as on a torch
scalar), the unreduced array for ``'none'``. ``backward()`` returns the gradient w.r.t. the
``input`` of the calling thread's last forward (what ``loss.backward()`` would leave in
``input.grad``); for ``'none'`` it takes the gradient w.r.t. the loss array, like
``loss.backward(gradient)``.

The per-element math is :mod:`rnnkit.losses`' (the Keras-style losses): softmax cross-entropy
is ``CategoricalCrossentropy(from_logits=True)`` / ``SparseCategoricalCrossentropy(
from_logits=True)``, the logistic loss ``BinaryCrossentropy(from_logits=True)``, the squared
error ``MeanSquaredError``. What is PyTorch's alone is done here: class weights,
``ignore_index``, ``label_smoothing``, ``pos_weight``, the class axis at position 1 and the
``'sum'``/``'none'`` reductions.

Loss modules have no parameters and take float32 or float64 inputs alike (the computation is in
the input's dtype); ``weight``/``pos_weight`` are cast to it.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from rnnkit import losses as _losses
from rnnkit._checks import shape_str
from rnnkit._threads import PerThread
from rnnkit.nn.module import Module, to_numpy

__all__ = ["MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss"]

Array = np.ndarray

_REDUCTIONS = ("mean", "sum", "none")


def _float_input(name: str, a: Any) -> Array:
    arr = np.asarray(to_numpy(a))
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _optional_weight(name: str, w: Any) -> Optional[Array]:
    if w is None:
        return None
    arr = np.asarray(to_numpy(w))
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a float array, got dtype {arr.dtype}")
    return np.array(arr, dtype=np.float64)


def _per_entry_grad(loss: _losses.Loss, y_true: Array, y_pred: Array) -> Array:
    """The gradient of every entry's own loss w.r.t. ``y_pred``: Keras's mean-reduced gradient
    times the number of entries (the reduction is linear, so this undoes it exactly)."""
    _, g = loss.value_and_grad(y_true=y_true, y_pred=y_pred)
    count = int(np.prod(y_pred.shape[:-1]))
    if count > 1:
        g *= count
    return g


class _Loss(Module):
    """Shared machinery: the reduction and what a forward keeps for :meth:`backward`."""

    _last = PerThread("(gradient of the reduced loss w.r.t. the input, loss shape, class axis) "
                      "of this thread's last forward")

    def __init__(self, reduction: str) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction
        self._last: Any = None

    def _forget_forward(self) -> None:
        self._last = None

    def _finish(self, per: Array, dper: Array, denom: float, dtype: np.dtype,
                class_axis: Optional[int]) -> Array:
        """Reduces the per-entry losses ``per`` (their input gradients ``dper``), keeps the
        gradient for :meth:`backward` and returns the loss. ``denom`` divides for 'mean'."""
        if self.reduction == "none":
            self._last = (dper, per.shape, class_axis)
            return per.astype(dtype, copy=False)
        total = float(np.sum(per, dtype=np.float64))
        if self.reduction == "sum":
            self._last = (dper, (), class_axis)
            return np.asarray(total, dtype=dtype)
        if denom == 0:
            # torch's 0/0: an empty batch, or every target ignored / of weight zero; entries that
            # contribute nothing keep a zero gradient, as in torch
            self._last = (np.where(dper == 0, 0, np.nan).astype(dper.dtype), (), class_axis)
            return np.asarray(np.nan, dtype=dtype)
        dper *= np.asarray(1.0 / denom, dtype=dper.dtype)
        self._last = (dper, (), class_axis)
        return np.asarray(total / denom, dtype=dtype)

    def backward(self, grad_output: Any = None) -> Array:
        """The gradient of the loss of the last :meth:`forward` w.r.t. its ``input``.

        Parameters
        ----------
        grad_output
            The gradient w.r.t. the loss: for ``'mean'``/``'sum'`` an optional scalar
            (default 1); for ``'none'`` required, shaped like the returned loss array.

        Returns
        -------
        numpy.ndarray
            Shaped like ``input``, of its dtype.

        Shapes
        ------
        grad_output: () or the loss's shape -> the input's shape
        """
        last = self._last
        if last is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first "
                               "(nothing to backpropagate through)")
        dper, loss_shape, class_axis = last
        if self.reduction != "none":
            if grad_output is None:
                return dper.copy()
            g = np.asarray(to_numpy(grad_output))
            if g.size != 1 or g.dtype.kind not in "fiu":
                raise ValueError(f"grad_output: expected a scalar (the loss is a scalar with "
                                 f"reduction={self.reduction!r}), got shape {shape_str(g.shape)}")
            return dper * np.asarray(g.reshape(()), dtype=dper.dtype)
        if grad_output is None:
            raise ValueError(f"grad_output: expected an array of shape {shape_str(loss_shape)} (the "
                             f"loss's shape) with reduction='none', got None")
        g = _float_input("grad_output", grad_output)
        if g.shape != loss_shape:
            raise ValueError(f"grad_output: expected shape {shape_str(loss_shape)} (the loss's "
                             f"shape), got {shape_str(g.shape)}")
        g = g.astype(dper.dtype, copy=False)
        if class_axis is not None:
            g = np.expand_dims(g, class_axis)
        return dper * g

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    r"""Squared error :math:`(x - y)^2` per element, as ``torch.nn.MSELoss``.

    Parameters
    ----------
    reduction
        ``'mean'`` (default: over all elements), ``'sum'`` or ``'none'``.

    Shapes
    ------
    - input: any shape ``[*]``; target: the same shape (torch would broadcast with a warning;
      here a different shape is an error)
    - output: a 0-d array (``'mean'``, ``'sum'``) or ``[*]`` (``'none'``)
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def forward(self, input: Any, target: Any) -> Array:
        """The loss; keeps its gradient for :meth:`backward`.

        Shapes
        ------
        input: [*], target: [*] -> () or [*]
        """
        x = _float_input("input", input)
        y = np.asarray(to_numpy(target))
        if y.dtype.kind not in "fiub":
            raise TypeError(f"target: expected a numeric array, got dtype {y.dtype}")
        if y.shape != x.shape:
            raise ValueError(f"target: expected shape {shape_str(x.shape)} (the input's shape), "
                             f"got {shape_str(y.shape)}")
        # one entry per element: a trailing feature axis of 1 makes Keras's mean over the last
        # axis the identity
        x1 = x.reshape(x.shape + (1,))
        y1 = y.astype(x.dtype, copy=False).reshape(x1.shape)
        mse = _losses.MeanSquaredError()
        per = mse.per_sample(y_true=y1, y_pred=x1)
        dper = _per_entry_grad(mse, y1, x1).reshape(x.shape)
        return self._finish(per, dper, float(x.size), x.dtype, None)


def _class_axis(x: Array) -> int:
    return 0 if x.ndim == 1 else 1


class CrossEntropyLoss(_Loss):
    r"""Softmax cross-entropy of logits, as ``torch.nn.CrossEntropyLoss``.

    With class indices :math:`y_n`, class weights :math:`w` and smoothing :math:`\epsilon`
    over :math:`K` classes, the loss of entry :math:`n` is

    .. math::
        \ell_n = (1-\epsilon)\, w_{y_n} (-\log p_{n,y_n})
                 + \frac{\epsilon}{K} \sum_k w_k (-\log p_{n,k}),
        \qquad p_n = \mathrm{softmax}(x_n),

    zero where :math:`y_n` = ``ignore_index``; ``'mean'`` divides the sum by
    :math:`\sum_n w_{y_n}` over the entries not ignored (so a batch whose targets are all
    ignored gives NaN, as in torch). With class probabilities :math:`q_n` (a float target of the
    input's shape) the loss is :math:`-\sum_k w_k \tilde q_{n,k} \log p_{n,k}`,
    :math:`\tilde q = (1-\epsilon) q + \epsilon/K`, and ``'mean'`` divides by the number of
    entries; ``ignore_index`` does not apply.

    Parameters
    ----------
    weight
        Optional class weights ``[K]``.
    ignore_index
        A class index whose entries contribute nothing (default -100).
    reduction
        ``'mean'`` (default), ``'sum'`` or ``'none'``.
    label_smoothing
        :math:`\epsilon` in ``[0, 1]``.

    Shapes
    ------
    - input (logits): ``[K]``, ``[N, K]`` or ``[N, K, d1, ..., dk]`` (class axis 1)
    - target: class indices ``[]``, ``[N]`` or ``[N, d1, ..., dk]`` (integers in ``[0, K)`` or
      ``ignore_index``), or probabilities of the input's shape
    - output: a 0-d array, or with ``'none'`` the target's shape without the class axis
    """

    def __init__(self, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.weight = _optional_weight("weight", weight)
        if self.weight is not None and self.weight.ndim != 1:
            raise ValueError(f"weight: expected 1 dimension [K] (one weight per class), got shape "
                             f"{shape_str(self.weight.shape)}")
        if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
        self.ignore_index = int(ignore_index)
        if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, (int, float, np.integer, np.floating)):
            raise TypeError(f"label_smoothing: expected a float in [0, 1], got {type(label_smoothing).__name__}")
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing: expected a float in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def _class_weights(self, K: int, dtype: np.dtype) -> Optional[Array]:
        if self.weight is None:
            return None
        if self.weight.shape != (K,):
            raise ValueError(f"weight: expected shape ({K},) (one weight per class of input), got "
                             f"{shape_str(self.weight.shape)}")
        return self.weight.astype(dtype)

    def _labels(self, t: Array, lead: Tuple[int, ...], K: int) -> Array:
        if t.dtype.kind not in "iu":
            raise TypeError(f"target: expected integer class indices of shape {shape_str(lead)} or "
                            f"float probabilities of the input's shape, got dtype {t.dtype} and shape "
                            f"{shape_str(t.shape)}")
        if t.shape != lead:
            raise ValueError(f"target: expected class indices of shape {shape_str(lead)} (the input's "
                             f"shape without the class axis) or probabilities of the input's shape, "
                             f"got {shape_str(t.shape)}")
        valid = t != self.ignore_index
        if np.any(valid):
            v = t[valid]
            lo, hi = int(v.min()), int(v.max())
            if lo < 0 or hi >= K:
                raise ValueError(f"target: expected class indices in [0, {K}) or ignore_index="
                                 f"{self.ignore_index}, got values in [{lo}, {hi}]")
        return t.astype(np.intp, copy=False)

    def forward(self, input: Any, target: Any) -> Array:
        """The loss; keeps its gradient for :meth:`backward`.

        Shapes
        ------
        input: [K] / [N, K] / [N, K, d1, ...], target: [] / [N] / [N, d1, ...] indices or the
        input's shape (probabilities) -> () or, with 'none', [] / [N] / [N, d1, ...]
        """
        x = _float_input("input", input)
        if x.ndim == 0:
            raise ValueError("input: expected logits of shape (K,), (N, K) or (N, K, d1, ...), got shape ()")
        cax = _class_axis(x)
        K = x.shape[cax]
        if K == 0:
            raise ValueError(f"input: expected at least one class on axis {cax}, got shape {shape_str(x.shape)}")
        z = np.moveaxis(x, cax, -1)  # [*lead, K]
        lead = z.shape[:-1]
        t = np.asarray(to_numpy(target))
        w = self._class_weights(K, x.dtype)
        eps = self.label_smoothing
        dtype = x.dtype

        if t.shape == x.shape:  # class probabilities
            if t.dtype.kind != "f":
                raise TypeError(f"target: a target of the input's shape {shape_str(x.shape)} holds "
                                f"class probabilities and must be float, got dtype {t.dtype}")
            y = np.moveaxis(t.astype(dtype, copy=False), cax, -1)
            if eps > 0:
                y = y * (1.0 - eps) + eps / K
            if w is not None:
                y = y * w
            denom = float(np.prod(lead))
        else:
            labels = self._labels(t, lead, K)
            valid = labels != self.ignore_index
            if (w is None and eps == 0.0 and self.reduction == "mean" and bool(np.all(valid))
                    and labels.size):
                # the plain case is Keras's sparse categorical cross-entropy, reduction included
                value, grad = _losses.SparseCategoricalCrossentropy(from_logits=True).value_and_grad(
                    y_true=labels, y_pred=z)
                self._last = (np.ascontiguousarray(np.moveaxis(grad, -1, cax)), (), cax)
                return np.asarray(value, dtype=dtype)
            safe = np.where(valid, labels, 0)
            wy = (w[safe] if w is not None else np.ones(lead, dtype)) * valid
            y = np.zeros(z.shape, dtype)
            np.put_along_axis(y, safe[..., None], ((1.0 - eps) * wy)[..., None].astype(dtype), axis=-1)
            if eps > 0:
                y += (eps / K) * (w if w is not None else np.ones(K, dtype)) * valid[..., None]
            denom = float(np.sum(wy, dtype=np.float64))

        cce = _losses.CategoricalCrossentropy(from_logits=True)
        per = cce.per_sample(y_true=y, y_pred=z)
        dper = np.ascontiguousarray(np.moveaxis(_per_entry_grad(cce, y, z), -1, cax))
        return self._finish(per, dper, denom, dtype, cax)

    def extra_repr(self) -> str:
        s = f"reduction={self.reduction!r}"
        if self.weight is not None:
            s = f"weight=[{self.weight.shape[0]}], " + s
        if self.ignore_index != -100:
            s += f", ignore_index={self.ignore_index}"
        if self.label_smoothing:
            s += f", label_smoothing={self.label_smoothing}"
        return s


class BCEWithLogitsLoss(_Loss):
    r"""Sigmoid + binary cross-entropy in one stable step, as ``torch.nn.BCEWithLogitsLoss``.

    Per element, with logit :math:`x`, target :math:`y`, weight :math:`w` and positive-class
    weight :math:`p` (broadcast along the last axis):

    .. math::
        \ell = -w\,[\,p\,y \log\sigma(x) + (1 - y) \log(1 - \sigma(x))\,].

    Parameters
    ----------
    weight
        Optional rescaling weight, broadcastable to the input's shape.
    reduction
        ``'mean'`` (default: over all elements), ``'sum'`` or ``'none'``.
    pos_weight
        Optional weight of the positive examples per class, broadcastable to the input's shape
        (usually ``[C]`` against ``[N, C]``).

    Shapes
    ------
    - input (logits): any shape ``[*]``; target: the same shape (floats, usually in [0, 1])
    - output: a 0-d array, or ``[*]`` with ``'none'``
    """

    def __init__(self, weight: Any = None, *, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.weight = _optional_weight("weight", weight)
        self.pos_weight = _optional_weight("pos_weight", pos_weight)

    def _broadcast(self, name: str, w: Optional[Array], shape: Tuple[int, ...], dtype: np.dtype) -> Optional[Array]:
        if w is None:
            return None
        try:
            ok = np.broadcast_shapes(w.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: expected a shape that broadcasts to the input's "
                             f"{shape_str(shape)}, got {shape_str(w.shape)}")
        return w.astype(dtype)

    def forward(self, input: Any, target: Any) -> Array:
        """The loss; keeps its gradient for :meth:`backward`.

        Shapes
        ------
        input: [*], target: [*] -> () or [*]
        """
        x = _float_input("input", input)
        y = np.asarray(to_numpy(target))
        if y.dtype.kind not in "fiub":
            raise TypeError(f"target: expected a float array, got dtype {y.dtype}")
        if y.shape != x.shape:
            raise ValueError(f"target: expected shape {shape_str(x.shape)} (the input's shape), got "
                             f"{shape_str(y.shape)}")
        dtype = x.dtype
        y = y.astype(dtype, copy=False)
        w = self._broadcast("weight", self.weight, x.shape, dtype)
        pw = self._broadcast("pos_weight", self.pos_weight, x.shape, dtype)
        # a trailing class axis of 1: Keras's mean over the last axis becomes per-element
        x1 = x.reshape(x.shape + (1,))
        bce = _losses.BinaryCrossentropy(from_logits=True)
        if pw is None:
            y1 = y.reshape(x1.shape)
            per = bce.per_sample(y_true=y1, y_pred=x1)
            dper = _per_entry_grad(bce, y1, x1).reshape(x.shape)
        else:
            # p*y*softplus(-x) + (1-y)*softplus(x) = s*softplus(x) - p*y*x with s = p*y + 1 - y;
            # softplus(x) and its derivative sigmoid(x) are the target-0 logistic loss
            zero = np.zeros(x1.shape, dtype)
            softplus = bce.per_sample(y_true=zero, y_pred=x1)
            sig = _per_entry_grad(bce, zero, x1).reshape(x.shape)
            py = pw * y
            s = py + (1.0 - y)
            per = s * softplus - py * x
            dper = s * sig - py
        if w is not None:
            per = per * w
            dper = dper * w
        return self._finish(per, np.ascontiguousarray(dper, dtype=dtype), float(x.size), dtype, None)

    def extra_repr(self) -> str:
        s = f"reduction={self.reduction!r}"
        if self.weight is not None:
            s = f"weight={shape_str(self.weight.shape)}, " + s
        if self.pos_weight is not None:
            s += f", pos_weight={shape_str(self.pos_weight.shape)}"
        return s
