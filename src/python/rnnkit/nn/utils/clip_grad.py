r"""Gradient clipping with ``torch.nn.utils``' semantics: :func:`clip_grad_norm_`,
:func:`clip_grad_value_`, and the two halves of the former, :func:`get_total_norm` and
:func:`clip_grads_with_norm_`.

The gradients are the ``.grad`` arrays of :class:`rnnkit.nn.Parameter` objects, changed in
place; parameters whose ``grad`` is None are skipped. ``foreach`` is accepted for signature
compatibility and has no effect (NumPy has no fused multi-tensor kernels to choose).
"""
from __future__ import annotations

import math
import numbers
import types
import warnings
from typing import Any, Iterable, List, Optional, Union

import numpy as np

from rnnkit.nn.module import Parameter, to_numpy

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]

Array = np.ndarray
ParametersLike = Union[Parameter, Iterable[Parameter]]


def _parameter_list(parameters: Any) -> List[Parameter]:
    if isinstance(parameters, Parameter):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    try:
        params = list(parameters)
    except TypeError:
        raise TypeError(f"parameters: expected a Parameter or an iterable of Parameters, got "
                        f"{type(parameters).__name__}") from None
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"parameters[{i}]: expected a rnnkit.nn.Parameter, got {type(p).__name__}")
    if is_generator and not params:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                      UserWarning, stacklevel=3)
    return params


def _norm_type(norm_type: Any) -> float:
    if isinstance(norm_type, str):
        try:
            return float(norm_type)
        except ValueError:
            raise ValueError(f"norm_type: expected a number or 'inf', got {norm_type!r}") from None
    if isinstance(norm_type, (bool, np.bool_)) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type: expected a number or 'inf', got {type(norm_type).__name__}")
    return float(norm_type)


def _nonnegative(name: str, v: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {type(v).__name__}")
    v = float(v)
    if not v >= 0.0:
        raise ValueError(f"{name}: expected a number >= 0, got {v}")
    return v


def _vector_norm(a: Array, ord: float) -> float:
    """``torch.linalg.vector_norm(a, ord)`` of the flattened array, in float64."""
    x = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    if ord == math.inf:
        return float(x.max()) if x.size else 0.0
    if ord == -math.inf:
        return float(x.min()) if x.size else math.inf
    if ord == 0:
        return float(np.count_nonzero(x))
    if ord == 1:
        return float(x.sum())
    if ord == 2:
        return float(np.sqrt(np.dot(x, x)))
    with np.errstate(divide="ignore", over="ignore"):
        return float(np.sum(x ** ord) ** (1.0 / ord))


def get_total_norm(tensors: Union[Any, Iterable[Any]], norm_type: Union[float, str] = 2.0,
                   error_if_nonfinite: bool = False, foreach: Optional[bool] = None) -> Array:
    r"""The norm of several arrays taken together, as ``torch.nn.utils.get_total_norm``: the
    ``norm_type``-norm of the vector of their individual norms (the same as the norm of all
    their elements concatenated for p-norms).

    Parameters
    ----------
    tensors
        An array (or tensor), or an iterable of them (typically ``[p.grad for p in params]``).
    norm_type
        ``p`` of the p-norm; ``float('inf')`` / ``'inf'`` for the largest absolute value.
    error_if_nonfinite
        Raise ``RuntimeError`` when the norm is NaN or infinite.
    foreach
        Ignored (see the module documentation).

    Returns
    -------
    numpy.ndarray
        A 0-d array of the first array's dtype (float32 ``0.0`` for no arrays).

    Shapes
    ------
    tensors: arrays of any shapes -> ()
    """
    p = _norm_type(norm_type)
    arrays = [tensors] if isinstance(tensors, np.ndarray) or hasattr(tensors, "detach") else list(tensors)
    arrays = [np.asarray(to_numpy(a)) for a in arrays]
    if not arrays:
        return np.asarray(0.0, dtype=np.float32)
    total = _vector_norm(np.array([_vector_norm(a, p) for a in arrays]), p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {p} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and scale "
                           "the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    dtype = arrays[0].dtype if arrays[0].dtype.kind == "f" else np.dtype(np.float64)
    with np.errstate(over="ignore"):
        return np.asarray(total, dtype=dtype)


def clip_grads_with_norm_(parameters: ParametersLike, max_norm: float, total_norm: Any,
                          foreach: Optional[bool] = None) -> None:
    r"""Scales every gradient by :math:`\min(\text{max\_norm} / (\text{total\_norm} + 10^{-6}),
    1)` in place, as ``torch.nn.utils.clip_grads_with_norm_``.

    Shapes
    ------
    total_norm: () ; every ``p.grad`` keeps its shape
    """
    params = _parameter_list(parameters)
    max_norm = _nonnegative("max_norm", max_norm)
    total = float(np.asarray(to_numpy(total_norm)))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
        for g in grads:
            g *= np.asarray(coef, dtype=g.dtype)


def clip_grad_norm_(parameters: ParametersLike, max_norm: float, norm_type: Union[float, str] = 2.0,
                    error_if_nonfinite: bool = False, foreach: Optional[bool] = None) -> Array:
    r"""Rescales the gradients so that their total norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_``.

    The total norm is that of all gradients concatenated; every gradient is multiplied (in
    place) by :math:`\min(\text{max\_norm} / (\text{total} + 10^{-6}), 1)`.

    Parameters
    ----------
    parameters
        A :class:`~rnnkit.nn.Parameter` or an iterable of them (``model.parameters()``);
        parameters without a gradient are skipped.
    max_norm
        The largest total norm allowed (>= 0).
    norm_type
        ``p`` of the p-norm (default 2); ``float('inf')`` or ``'inf'`` for the max-norm.
    error_if_nonfinite
        Raise ``RuntimeError`` instead of clipping when the total norm is NaN or infinite
        (otherwise the gradients are scaled by the non-finite norm, as torch does).
    foreach
        Ignored (see the module documentation).

    Returns
    -------
    numpy.ndarray
        The total norm *before* clipping, a 0-d array of the gradients' dtype.

    Shapes
    ------
    every ``p.grad`` keeps its shape; returns ()
    """
    params = _parameter_list(parameters)
    max_norm = _nonnegative("max_norm", max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters: ParametersLike, clip_value: float,
                     foreach: Optional[bool] = None) -> None:
    """Clamps every gradient to ``[-clip_value, clip_value]`` in place, as
    ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    parameters
        A :class:`~rnnkit.nn.Parameter` or an iterable of them; those without a gradient are
        skipped.
    clip_value
        The largest absolute value allowed (>= 0).
    foreach
        Ignored (see the module documentation).

    Shapes
    ------
    every ``p.grad`` keeps its shape
    """
    params = _parameter_list(parameters)
    c = _nonnegative("clip_value", clip_value)
    for p in params:
        if p.grad is not None:
            np.clip(p.grad, -c, c, out=p.grad)
