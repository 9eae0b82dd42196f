"""PyTorch-style :class:`Embedding` (``torch.nn.Embedding``) over NumPy arrays."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rnnkit._checks import check_bool, check_positive_int, shape_str
from rnnkit._threads import PerThread
from rnnkit.nn.module import (DTypeLike, Module, Parameter, SeedLike, accumulate, as_float_dtype,
                              expect_shape, input_array, make_rng, to_numpy)

__all__ = ["Embedding"]

Array = np.ndarray


def _padding_index(padding_idx: Any, num_embeddings: int) -> Optional[int]:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"padding_idx: expected None or an int, got {type(padding_idx).__name__}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"padding_idx: expected an int in [-{num_embeddings}, {num_embeddings}) "
                         f"(num_embeddings={num_embeddings}), got {padding_idx}")
    return int(padding_idx) % num_embeddings


class Embedding(Module):
    r"""A lookup table of ``num_embeddings`` vectors, as ``torch.nn.Embedding``.

    Parameters
    ----------
    num_embeddings
        Size of the vocabulary (indices ``0 .. num_embeddings-1``).
    embedding_dim
        Size of each vector.
    padding_idx
        If given (negative values count from the end), that row starts at zero and receives no
        gradient, so it stays the padding vector during training.
    dtype
        ``np.float32`` (default) or ``np.float64``.
    seed
        ``None``, an int or a ``numpy.random.Generator`` for the initialization.

    Attributes
    ----------
    weight
        ``[num_embeddings, embedding_dim]``, initialized from :math:`\mathcal{N}(0, 1)`
        (PyTorch's default), the ``padding_idx`` row zeroed.

    Shapes
    ------
    - input: integer indices of any shape ``[*]``
    - output: ``[*, embedding_dim]``
    """

    _last_idx = PerThread("the indices of this thread's last forward")

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None, *,
                 dtype: DTypeLike = np.float32, seed: SeedLike = None) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.padding_idx = _padding_index(padding_idx, self.num_embeddings)
        dt = as_float_dtype("dtype", dtype)
        object.__setattr__(self, "_dtype", dt)
        rng = make_rng(seed)
        self.weight = Parameter(rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(dt))
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0
        self._last_idx: Optional[Array] = None

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True,
                        padding_idx: Optional[int] = None) -> Embedding:
        """An Embedding whose weight is a copy of ``embeddings`` (as
        ``torch.nn.Embedding.from_pretrained``; the ``padding_idx`` row is kept as given).

        Parameters
        ----------
        embeddings
            A float32/float64 array or tensor ``[num_embeddings, embedding_dim]``.
        freeze
            If True (default) the weight gets ``requires_grad=False``.
        padding_idx
            As in the constructor (its row gets no gradient).

        Shapes
        ------
        embeddings: [num_embeddings, embedding_dim]
        """
        arr = np.asarray(to_numpy(embeddings))
        if arr.ndim != 2:
            raise ValueError(f"embeddings: expected 2 dimensions [num_embeddings, embedding_dim], "
                             f"got shape {shape_str(arr.shape)}")
        freeze = check_bool("freeze", freeze)
        dt = as_float_dtype("embeddings", arr.dtype)
        m = cls(arr.shape[0], arr.shape[1], padding_idx, dtype=dt, seed=0)
        m.weight.data[...] = arr
        m.weight.requires_grad = not freeze
        return m

    def _forget_forward(self) -> None:
        self._last_idx = None

    def forward(self, input: Any) -> Array:
        """Looks up the rows of ``weight`` at ``input``; keeps the indices for :meth:`backward`.

        Shapes
        ------
        input: [*] integer indices -> [*, embedding_dim]
        """
        idx = np.asarray(to_numpy(input))
        if idx.dtype.kind not in "iu":
            raise TypeError(f"input: expected integer indices, got dtype {idx.dtype}")
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.num_embeddings:
                raise IndexError(f"input: expected indices in [0, {self.num_embeddings}) "
                                 f"(num_embeddings), got values in [{lo}, {hi}]")
        idx = idx.astype(np.intp, copy=False)
        self._last_idx = idx
        return self.weight.data[idx]

    def backward(self, d_output: Any) -> None:
        """Accumulates ``weight.grad`` (rows summed per index; the ``padding_idx`` row gets
        nothing). Returns None: integer indices have no gradient.

        Shapes
        ------
        d_output: [*, embedding_dim] (the output's shape) -> None
        """
        idx = self._last_idx
        if idx is None:
            raise RuntimeError("Embedding.backward: call forward first (nothing to backpropagate through)")
        d = input_array("d_output", d_output, self._dtype)
        expect_shape("d_output", d, idx.shape + (self.embedding_dim,), "the output's shape")
        flat = idx.reshape(-1)
        rows = d.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        grad = np.zeros_like(self.weight.data)
        np.add.at(grad, flat, rows)
        accumulate(self.weight, grad)
        return None

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s + ("" if self._dtype == np.float32 else f", dtype={self._dtype}")
