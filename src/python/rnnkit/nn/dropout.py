"""PyTorch-style :class:`Dropout` (``torch.nn.Dropout``) over NumPy arrays."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from rnnkit._checks import check_bool, shape_str
from rnnkit._recurrent import dropout_mask
from rnnkit._threads import PerThread
from rnnkit.nn.module import Module, SeedLike, make_rng, to_numpy

__all__ = ["Dropout"]

Array = np.ndarray

_IDENTITY = "identity"


def _float_input(name: str, a: Any) -> Array:
    """A float32/float64 array of its own dtype (parameter-free modules take either)."""
    arr = np.asarray(to_numpy(a))
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    return arr


class Dropout(Module):
    r"""Inverted dropout, as ``torch.nn.Dropout``: in training mode each element is zeroed with
    probability ``p`` and the others are scaled by :math:`1/(1-p)`; in evaluation mode
    (:meth:`~Module.eval`) the input passes unchanged.

    Parameters
    ----------
    p
        Probability of zeroing an element, in ``[0, 1]`` (``p = 1`` zeroes everything).
    inplace
        If True, a training-mode forward writes the result into the input array (which must
        be a writable float array) and returns it.
    seed
        ``None`` (a seed drawn from NumPy's global state, so ``rnnkit.utils.set_random_seed``
        reproduces the masks), an int or a ``numpy.random.Generator``.

    Shapes
    ------
    input: any shape ``[*]`` (float32 or float64) -> output: the same shape and dtype
    """

    _mask = PerThread("the scaled keep mask of this thread's last forward ('identity' in eval mode)")

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: SeedLike = None) -> None:
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"p: expected a float in [0, 1], got {type(p).__name__}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p: expected a float in [0, 1], got {p}")
        self.p = float(p)
        self.inplace = check_bool("inplace", inplace)
        self._rng = make_rng(seed)
        self._mask: Any = None

    def _forget_forward(self) -> None:
        self._mask = None

    def forward(self, input: Any) -> Array:
        """Applies dropout (training mode) or returns ``input`` unchanged (evaluation mode, or
        ``p = 0``); keeps the mask for :meth:`backward`.

        Shapes
        ------
        input: [*] -> [*]
        """
        x = _float_input("input", input)
        if not self.training or self.p == 0.0:
            self._mask = _IDENTITY
            return x
        if self.p == 1.0:
            mask = np.zeros(x.shape, x.dtype)
        else:
            mask = dropout_mask(self._rng, self.p, x.shape, x.dtype)
        self._mask = mask
        if self.inplace:
            if not x.flags.writeable:
                raise ValueError("input: inplace=True needs a writable array, got a read-only one")
            np.multiply(x, mask, out=x)
            return x
        return x * mask

    def backward(self, d_output: Any) -> Array:
        """The gradient w.r.t. the input of the last forward: ``d_output`` times the same mask
        (unchanged in evaluation mode).

        Shapes
        ------
        d_output: the output's shape -> the input's shape
        """
        mask = self._mask
        if mask is None:
            raise RuntimeError("Dropout.backward: call forward first (nothing to backpropagate through)")
        d = _float_input("d_output", d_output)
        if isinstance(mask, str):
            return d
        if d.shape != mask.shape:
            raise ValueError(f"d_output: expected shape {shape_str(mask.shape)} = the output's shape, "
                             f"got {shape_str(d.shape)}")
        return d * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
