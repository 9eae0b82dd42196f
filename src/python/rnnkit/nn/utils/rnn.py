r"""Variable-length batches, as ``torch.nn.utils.rnn``: :func:`pad_sequence`,
:func:`pack_padded_sequence` / :func:`pad_packed_sequence`, :func:`pack_sequence`,
:func:`unpad_sequence`, :func:`unpack_sequence` and the :class:`PackedSequence` tuple.

rnnkit's :class:`~rnnkit.nn.LSTM`, :class:`~rnnkit.nn.GRU` and :class:`~rnnkit.nn.RNN` do not
take a :class:`PackedSequence`: they take the padded batch and the lengths (``lengths=``),
which gives what PyTorch gives for the packed batch (zeros at padded steps, final states after
each sample's last valid step, the reverse direction starting there). Where PyTorch code runs a
module on a packed batch, unpack it first; the two lines

.. code-block:: python

    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    output, (h_n, c_n) = lstm(padded, lengths=lengths)      # torch: lstm(packed)

replace ``output, (h_n, c_n) = lstm(packed)`` followed by ``pad_packed_sequence(output)``
(with ``batch_first`` as the module's). Both ``output`` and the final states are in the
batch's original order, as PyTorch returns them.

Arrays of any dtype are accepted (float data, integer token ids); torch tensors are converted
with ``np.asarray(t.detach().cpu())``.
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np

from rnnkit._checks import check_bool, check_positive_int, shape_str
from rnnkit.nn.module import to_numpy

__all__ = ["PackedSequence", "pad_sequence", "pack_padded_sequence", "pad_packed_sequence",
           "pack_sequence", "unpad_sequence", "unpack_sequence", "invert_permutation"]

Array = np.ndarray


class PackedSequence(NamedTuple):
    """A batch of sequences packed time step by time step, as
    ``torch.nn.utils.rnn.PackedSequence``.

    Attributes
    ----------
    data
        The valid steps of every sequence, step 0 of all sequences first, then step 1 of the
        sequences that have one, and so on (sequences in decreasing order of length).
    batch_sizes
        int64 ``[T_max]``: how many sequences have a step ``t``.
    sorted_indices
        int64 ``[B]``: the batch positions in the packing order (None when the batch was
        already sorted, ``enforce_sorted=True``).
    unsorted_indices
        int64 ``[B]``: the inverse permutation (None with ``sorted_indices``).

    Shapes
    ------
    data: [sum(lengths), *], batch_sizes: [T_max], sorted_indices, unsorted_indices: [B]
    """

    data: Array
    batch_sizes: Array
    sorted_indices: Optional[Array] = None
    unsorted_indices: Optional[Array] = None


def invert_permutation(permutation: Optional[Any]) -> Optional[Array]:
    """The inverse of a permutation of ``0..n-1`` (None stays None).

    Shapes
    ------
    [n] -> [n]
    """
    if permutation is None:
        return None
    perm = np.asarray(to_numpy(permutation), dtype=np.int64)
    out = np.empty_like(perm)
    out[perm] = np.arange(perm.size, dtype=np.int64)
    return out


def _sequences(name: str, sequences: Any) -> List[Array]:
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__iter__"):
        raise TypeError(f"{name}: expected a list of arrays, got {type(sequences).__name__}")
    seqs = [np.asarray(to_numpy(s)) for s in sequences]
    if not seqs:
        raise ValueError(f"{name}: expected at least one sequence, got none")
    trailing = seqs[0].shape[1:]
    for i, s in enumerate(seqs):
        if s.ndim == 0:
            raise ValueError(f"{name}[{i}]: expected an array with time on axis 0, got a scalar")
        if s.shape[1:] != trailing:
            raise ValueError(f"{name}[{i}]: expected shape {shape_str(('L',) + trailing)} (the "
                             f"trailing shape of {name}[0]), got {shape_str(s.shape)}")
    return seqs


def pad_sequence(sequences: Any, batch_first: bool = False, padding_value: float = 0.0,
                 padding_side: str = "right") -> Array:
    """Stacks sequences of different lengths into one padded array, as
    ``torch.nn.utils.rnn.pad_sequence``.

    Parameters
    ----------
    sequences
        Arrays ``[L_i, *]`` with the same trailing shape (an array ``[B, L, *]`` is read as
        ``B`` sequences). The result has the first sequence's dtype.
    batch_first
        Return ``[B, T, *]`` instead of ``[T, B, *]``.
    padding_value
        Value of the padded steps.
    padding_side
        ``'right'`` (default: padding after each sequence) or ``'left'``.

    Returns
    -------
    numpy.ndarray
        ``T = max(L_i)``.

    Shapes
    ------
    B arrays [L_i, *] -> [T, B, *] (or [B, T, *] with batch_first)
    """
    batch_first = check_bool("batch_first", batch_first)
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side: expected 'right' or 'left', got {padding_side!r}")
    seqs = _sequences("sequences", sequences)
    T = max(len(s) for s in seqs)
    out = np.full((len(seqs), T) + seqs[0].shape[1:], padding_value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if len(s):
            if padding_side == "right":
                out[i, :len(s)] = s
            else:
                out[i, T - len(s):] = s
    return out if batch_first else np.ascontiguousarray(np.swapaxes(out, 0, 1))


def _lengths(lengths: Any, B: int, T: int) -> Array:
    arr = np.asarray(to_numpy(lengths))
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one length per sequence of the batch), "
                         f"got {shape_str(arr.shape)}")
    arr = arr.astype(np.int64)
    if B and (arr.min() <= 0 or arr.max() > T):
        raise ValueError(f"lengths: expected values in [1, {T}] (every sample at least one step, at "
                         f"most the input's {T}), got min {arr.min()}, max {arr.max()}")
    return arr


def pack_padded_sequence(input: Any, lengths: Any, batch_first: bool = False,
                         enforce_sorted: bool = True) -> PackedSequence:
    """Packs a padded batch, as ``torch.nn.utils.rnn.pack_padded_sequence``.

    rnnkit's recurrent modules take the padded batch with ``lengths=`` instead of a packed one
    (see the module documentation for the two-line recipe); packing serves code that passes
    :class:`PackedSequence` objects around, and :func:`pad_packed_sequence` undoes it.

    Parameters
    ----------
    input
        The padded batch.
    lengths
        Valid steps per sequence (ints in ``[1, T]``).
    batch_first
        ``input`` is ``[B, T, *]`` instead of ``[T, B, *]``.
    enforce_sorted
        Require ``lengths`` in decreasing order (then ``sorted_indices`` is None); when False
        the batch is sorted by decreasing length first (a stable sort: equal lengths keep their
        order).

    Returns
    -------
    PackedSequence

    Shapes
    ------
    input: [T, B, *] (or [B, T, *]), lengths: [B] -> data: [sum(lengths), *], batch_sizes:
    [max(lengths)]
    """
    batch_first = check_bool("batch_first", batch_first)
    enforce_sorted = check_bool("enforce_sorted", enforce_sorted)
    x = np.asarray(to_numpy(input))
    if x.ndim < 2:
        raise ValueError(f"input: expected at least 2 dimensions ({'[B, T, *]' if batch_first else '[T, B, *]'}), "
                         f"got shape {shape_str(x.shape)}")
    xt = np.swapaxes(x, 0, 1) if batch_first else x  # [T, B, *]
    T, B = xt.shape[0], xt.shape[1]
    lens = _lengths(lengths, B, T)
    if enforce_sorted:
        if np.any(np.diff(lens) > 0):
            raise ValueError(f"lengths: expected decreasing values with enforce_sorted=True, got "
                             f"{lens.tolist()}; pass enforce_sorted=False to have the batch sorted")
        sorted_indices = None
    else:
        sorted_indices = np.argsort(-lens, kind="stable").astype(np.int64)
        lens = lens[sorted_indices]
        xt = xt[:, sorted_indices]
    Tm = int(lens[0]) if B else 0
    valid = np.arange(Tm)[:, None] < lens[None, :]  # [Tm, B]
    data = np.ascontiguousarray(xt[:Tm][valid])
    batch_sizes = valid.sum(axis=1).astype(np.int64)
    return PackedSequence(data, batch_sizes, sorted_indices, invert_permutation(sorted_indices))


def _packed(sequence: Any) -> PackedSequence:
    if not isinstance(sequence, tuple) or len(sequence) != 4:
        raise TypeError(f"sequence: expected a PackedSequence, got {type(sequence).__name__}")
    data, batch_sizes, sorted_indices, unsorted_indices = (
        None if a is None else np.asarray(to_numpy(a)) for a in sequence)
    if batch_sizes is None or batch_sizes.ndim != 1 or batch_sizes.dtype.kind not in "iu":
        raise ValueError("sequence.batch_sizes: expected a 1-D integer array")
    if data is None or data.ndim < 1 or data.shape[0] != int(batch_sizes.sum()):
        raise ValueError(f"sequence.data: expected {int(batch_sizes.sum())} rows (the sum of "
                         f"batch_sizes), got shape {shape_str(getattr(data, 'shape', ()))}")
    return PackedSequence(data, batch_sizes.astype(np.int64), sorted_indices, unsorted_indices)


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False,
                        padding_value: float = 0.0,
                        total_length: Optional[int] = None) -> Tuple[Array, Array]:
    """Unpacks a :class:`PackedSequence` into ``(padded, lengths)``, as
    ``torch.nn.utils.rnn.pad_packed_sequence``: the inverse of :func:`pack_padded_sequence`,
    with the batch back in its original order.

    Parameters
    ----------
    sequence
        A :class:`PackedSequence`.
    batch_first
        Return ``[B, T, *]`` instead of ``[T, B, *]``.
    padding_value
        Value of the padded steps.
    total_length
        Pad to this many steps (at least the longest sequence) instead of the longest length.

    Returns
    -------
    padded, lengths
        ``lengths`` is int64 ``[B]``; ``(padded, lengths)`` is what rnnkit's recurrent modules
        take as ``module(padded, lengths=lengths)``.

    Shapes
    ------
    data: [sum(lengths), *] -> padded: [T, B, *] (or [B, T, *]), lengths: [B]
    """
    batch_first = check_bool("batch_first", batch_first)
    packed = _packed(sequence)
    bs = packed.batch_sizes
    Tm = len(bs)
    T = Tm
    if total_length is not None:
        total_length = check_positive_int("total_length", total_length, minimum=0)
        if total_length < Tm:
            raise ValueError(f"total_length: expected an int >= {Tm} (the longest sequence), got "
                             f"{total_length}")
        T = total_length
    B = int(bs[0]) if Tm else 0
    data = packed.data
    out = np.full((T, B) + data.shape[1:], padding_value, dtype=data.dtype)
    valid = np.arange(B)[None, :] < bs[:, None]  # [Tm, B]
    out[:Tm][valid] = data
    lengths = valid.sum(axis=0).astype(np.int64)
    if packed.unsorted_indices is not None:
        idx = packed.unsorted_indices.astype(np.int64)
        out = out[:, idx]
        lengths = lengths[idx]
    out = np.swapaxes(out, 0, 1) if batch_first else out
    return np.ascontiguousarray(out), lengths


def pack_sequence(sequences: Any, enforce_sorted: bool = True) -> PackedSequence:
    """Packs a list of sequences of different lengths, as ``torch.nn.utils.rnn.pack_sequence``
    (:func:`pad_sequence` then :func:`pack_padded_sequence`).

    Shapes
    ------
    B arrays [L_i, *] -> data: [sum(L_i), *]
    """
    seqs = _sequences("sequences", sequences)
    return pack_padded_sequence(pad_sequence(seqs), [len(s) for s in seqs],
                                enforce_sorted=enforce_sorted)


def unpad_sequence(padded_sequences: Any, lengths: Any, batch_first: bool = False) -> List[Array]:
    """Splits a padded batch into its sequences, as ``torch.nn.utils.rnn.unpad_sequence``.

    Shapes
    ------
    [T, B, *] (or [B, T, *]), lengths: [B] -> B arrays [lengths[i], *]
    """
    batch_first = check_bool("batch_first", batch_first)
    x = np.asarray(to_numpy(padded_sequences))
    if x.ndim < 2:
        raise ValueError(f"padded_sequences: expected at least 2 dimensions, got shape {shape_str(x.shape)}")
    xb = x if batch_first else np.swapaxes(x, 0, 1)  # [B, T, *]
    lens = _lengths(lengths, xb.shape[0], xb.shape[1])
    return [np.ascontiguousarray(xb[i, :n]) for i, n in enumerate(lens)]


def unpack_sequence(packed_sequences: PackedSequence) -> List[Array]:
    """Splits a :class:`PackedSequence` into its sequences (original order), as
    ``torch.nn.utils.rnn.unpack_sequence``.

    Shapes
    ------
    data: [sum(L_i), *] -> B arrays [L_i, *]
    """
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return [np.ascontiguousarray(padded[i, :n]) for i, n in enumerate(lengths)]
