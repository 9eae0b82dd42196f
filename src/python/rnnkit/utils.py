r"""Data utilities with ``keras.utils``'s names and semantics, on NumPy arrays.

- :func:`pad_sequences`: Keras's, argument for argument (integer, float and nested-feature
  sequences, ``'pre'``/``'post'`` padding and truncation, string padding with ``dtype=object``);
- :func:`to_categorical`: one-hot rows (float64, class axis last) as Keras's NumPy path;
- :func:`timeseries_dataset_from_array`: sliding windows over a series. Keras returns a
  ``tf.data.Dataset``; this returns a :class:`TimeseriesDataset`, a re-iterable
  :class:`PyDataset` (``__len__``, ``__getitem__``, ``__iter__``) yielding NumPy
  ``(x_batch, y_batch)`` tuples, so a training loop can take it as a PyDataset-style source;
- :func:`split_dataset`: left/right splits of an array or a tuple of arrays (returned as arrays
  and tuples of arrays, not datasets);
- :func:`set_random_seed`: seeds Python's :mod:`random` and NumPy's global state, which every
  unseeded rnnkit generator draws from (:mod:`rnnkit._random`): initial weights, dropout masks,
  ``fit``'s shuffling, the nn modules;
- :class:`PyDataset` (alias ``Sequence``): Keras 3's base class for batch sources.

Example
-------
>>> import numpy as np
>>> from rnnkit.utils import pad_sequences, to_categorical
>>> pad_sequences([[1], [2, 3], [4, 5, 6]], padding="post")
array([[1, 0, 0],
       [2, 3, 0],
       [4, 5, 6]], dtype=int32)
>>> to_categorical([0, 2], num_classes=3)
array([[1., 0., 0.],
       [0., 0., 1.]])
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from rnnkit._checks import check_bool, check_positive_int, check_seed, shape_str

__all__ = ["pad_sequences", "to_categorical", "timeseries_dataset_from_array", "TimeseriesDataset",
           "split_dataset", "set_random_seed", "PyDataset", "Sequence"]

Array = np.ndarray


# ---------------------------------------------------------------------------------------------
# pad_sequences
# ---------------------------------------------------------------------------------------------

def pad_sequences(sequences: Any, maxlen: Optional[int] = None, dtype: Any = "int32",
                  padding: str = "pre", truncating: str = "pre", value: Any = 0.0) -> Array:
    """Pads (and truncates) sequences to one length, as ``keras.utils.pad_sequences``.

    Parameters
    ----------
    sequences
        A list (anything with a length) of sequences: lists or arrays of ints, floats, strings,
        or of equally shaped feature vectors/arrays. Empty sequences become all padding.
    maxlen
        Length of the result; ``None`` = the longest sequence's length.
    dtype
        dtype of the result (default ``'int32'``: float values are truncated towards zero, as in
        Keras). Use ``object`` (or a string dtype) for string values.
    padding
        ``'pre'`` (default) pads at the start, ``'post'`` at the end.
    truncating
        ``'pre'`` (default) drops the first steps of a longer sequence, ``'post'`` the last.
    value
        The padding value (a str needs ``dtype=object`` or a string dtype).

    Returns
    -------
    numpy.ndarray
        ``[len(sequences), maxlen, *step_shape]`` of ``dtype``.

    Shapes
    ------
    sequences: N sequences of ``[T_i, *step_shape]`` -> ``[N, maxlen, *step_shape]``;
    ``step_shape`` is that of the first non-empty sequence (``()`` for scalars).

    Raises
    ------
    ValueError
        ``sequences`` (or one of them) without a length, a sequence whose steps differ in shape
        from the first non-empty one's, a str ``value`` with a non-string ``dtype``, an unknown
        ``padding``/``truncating``, or ``maxlen=None`` with no sequences.
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError(f"sequences: expected a list of sequences (something with a length), "
                         f"got {type(sequences).__name__}")
    if padding not in ("pre", "post"):
        raise ValueError(f"padding: expected 'pre' or 'post', got {padding!r}")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating: expected 'pre' or 'post', got {truncating!r}")
    if maxlen is not None:
        maxlen = check_positive_int("maxlen", maxlen, minimum=0)
    num_samples = len(sequences)
    lengths: List[int] = []
    sample_shape: Tuple[int, ...] = ()
    found = False
    for i, s in enumerate(sequences):
        try:
            n = len(s)
        except TypeError:
            raise ValueError(f"sequences[{i}]: expected a sequence (list or array), got "
                             f"{type(s).__name__} {s!r}") from None
        lengths.append(n)
        if not found and n:
            sample_shape = np.asarray(s).shape[1:]
            found = True
    if maxlen is None:
        if not lengths:
            raise ValueError("sequences: expected at least one sequence when maxlen is None (the "
                             "length of the longest one is the result's), got none")
        maxlen = int(max(lengths))
    is_dtype_str = np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.bytes_)
    if isinstance(value, str) and dtype is not object and not is_dtype_str:
        raise ValueError(f"value: the str padding value {value!r} needs dtype=object or a string "
                         f"dtype, got dtype {dtype!r}")
    x = np.full((num_samples, maxlen) + sample_shape, value, dtype=dtype)
    if maxlen == 0:
        return x
    for idx, s in enumerate(sequences):
        if not len(s):
            continue
        trunc = np.asarray(s[-maxlen:] if truncating == "pre" else s[:maxlen], dtype=dtype)
        if trunc.shape[1:] != sample_shape:
            raise ValueError(f"sequences[{idx}]: expected steps of shape {shape_str(sample_shape)} "
                             f"(the steps of the first non-empty sequence), got "
                             f"{shape_str(trunc.shape[1:])}")
        if padding == "post":
            x[idx, :len(trunc)] = trunc
        else:
            x[idx, -len(trunc):] = trunc
    return x


# ---------------------------------------------------------------------------------------------
# to_categorical
# ---------------------------------------------------------------------------------------------

def to_categorical(x: Any, num_classes: Optional[int] = None) -> Array:
    """One-hot encodes class indices, as ``keras.utils.to_categorical``.

    Parameters
    ----------
    x
        Integer class indices (array-like of any shape; float values are cast to int64 as Keras
        does). A trailing axis of size 1 is dropped first (``[N, 1]`` -> ``[N]``).
    num_classes
        Number of classes ``K``; ``None`` (or 0, as in Keras) = ``max(x) + 1``.

    Returns
    -------
    numpy.ndarray
        float64 one-hot array with the class axis last.

    Shapes
    ------
    x: ``[*]`` (or ``[*, 1]``) -> ``[*, K]``

    Raises
    ------
    ValueError
        An index outside ``[0, K)`` (Keras's NumPy path would wrap a negative index around or
        fail with a bare ``IndexError``), a non-finite value, or an empty ``x`` without
        ``num_classes``.
    TypeError
        ``x`` not numeric.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"x: expected integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("x: expected integer class indices, got NaN or infinite values")
    labels = np.array(arr, dtype=np.int64)
    input_shape = labels.shape
    if input_shape and input_shape[-1] == 1 and len(input_shape) > 1:
        input_shape = input_shape[:-1]
    flat = labels.reshape(-1)
    if num_classes is not None:
        num_classes = check_positive_int("num_classes", num_classes, minimum=0)
    if not num_classes:
        if flat.size == 0:
            raise ValueError("num_classes: cannot be inferred from an empty x; pass num_classes")
        num_classes = int(flat.max()) + 1
    if flat.size:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"x: expected class indices in [0, {num_classes}) for num_classes="
                             f"{num_classes}, got values in [{lo}, {hi}]")
    categorical = np.zeros((flat.shape[0], num_classes))
    categorical[np.arange(flat.shape[0]), flat] = 1
    return categorical.reshape(input_shape + (num_classes,))


# ---------------------------------------------------------------------------------------------
# random seeds
# ---------------------------------------------------------------------------------------------

def set_random_seed(seed: int) -> None:
    """Seeds Python's :mod:`random` and NumPy's global random state, as
    ``keras.utils.set_random_seed`` (which also seeds the backend; rnnkit has none).

    Every rnnkit generator made without an explicit seed draws its seed from NumPy's global
    state (:mod:`rnnkit._random`), so after ``set_random_seed(k)`` a run is reproducible: the
    initial weights of layers and :mod:`rnnkit.nn` modules, dropout masks, ``fit``'s shuffling,
    :func:`timeseries_dataset_from_array`'s and :func:`split_dataset`'s shuffling without a seed.

    Parameters
    ----------
    seed
        An int in ``[0, 2**32)`` (NumPy's range for its global seed).
    """
    if seed is None:
        raise TypeError("seed: expected an int, got NoneType")
    seed = check_seed("seed", seed)
    assert seed is not None
    if seed >= 2**32:
        raise ValueError(f"seed: expected an int in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------------------------------------
# PyDataset
# ---------------------------------------------------------------------------------------------

class PyDataset:
    """Base class of batch sources, as Keras 3's ``keras.utils.PyDataset``.

    Subclasses implement ``__len__`` (the number of batches) and ``__getitem__(idx)`` (the
    batch at position ``idx``: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``), and may override
    :meth:`on_epoch_begin` / :meth:`on_epoch_end` (e.g. to reshuffle). Iterating yields the
    batches in order.

    Parameters
    ----------
    workers, use_multiprocessing, max_queue_size
        Keras's parallel-loading settings. They are validated and kept (subclasses and loops
        can read them) but ignored: batches are loaded in the calling thread. The kernels already
        use every core (``rnnkit.set_num_threads``); a loading pool would only pay off for slow
        ``__getitem__`` (file I/O), and none is implemented until one is measured to help.

    Shapes
    ------
    Whatever ``__getitem__`` returns; usually ``x [B, ...]``, ``y [B, ...]``, ``sample_weight
    [B]`` with ``B`` the batch size (the last batch may be smaller).

    Example
    -------
    >>> class Batches(PyDataset):
    ...     def __init__(self, x, y, batch_size, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.x, self.y, self.batch_size = x, y, batch_size
    ...     def __len__(self):
    ...         return -(-len(self.x) // self.batch_size)
    ...     def __getitem__(self, idx):
    ...         s = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
    ...         return self.x[s], self.y[s]
    >>> [xb.shape for xb, yb in Batches(np.zeros((5, 2)), np.zeros(5), 2)]
    [(2, 2), (2, 2), (1, 2)]
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10) -> None:
        self._workers = check_positive_int("workers", workers)
        self._use_multiprocessing = check_bool("use_multiprocessing", use_multiprocessing)
        self._max_queue_size = check_positive_int("max_queue_size", max_queue_size)

    def _warn_if_super_not_called(self) -> None:
        missing = [n for n in ("_workers", "_use_multiprocessing", "_max_queue_size")
                   if not hasattr(self, n)]
        if missing:
            self._workers = getattr(self, "_workers", 1)
            self._use_multiprocessing = getattr(self, "_use_multiprocessing", False)
            self._max_queue_size = getattr(self, "_max_queue_size", 10)
            warnings.warn("Your `PyDataset` class should call `super().__init__(**kwargs)` in its "
                          "constructor. `**kwargs` can include `workers`, `use_multiprocessing`, "
                          "`max_queue_size`.", UserWarning, stacklevel=3)

    @property
    def workers(self) -> int:
        """Keras's number of loading workers (kept, not used: see the class documentation)."""
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value: int) -> None:
        self._workers = check_positive_int("workers", value)

    @property
    def use_multiprocessing(self) -> bool:
        """Keras's process-pool switch (kept, not used)."""
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        self._use_multiprocessing = check_bool("use_multiprocessing", value)

    @property
    def max_queue_size(self) -> int:
        """Keras's prefetch queue length (kept, not used)."""
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value: int) -> None:
        self._max_queue_size = check_positive_int("max_queue_size", value)

    def __getitem__(self, index: int) -> Any:
        """The batch at position ``index``."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index)")

    @property
    def num_batches(self) -> Optional[int]:
        """``len(self)``; ``None`` means an infinite source (Keras's convention)."""
        if hasattr(self, "__len__"):
            return len(self)  # type: ignore[arg-type]
        raise NotImplementedError(f"{type(self).__name__} must implement __len__ or num_batches")

    def __iter__(self) -> Iterator[Any]:
        index_range: Any = None
        try:
            num_batches = self.num_batches
            if num_batches is not None:
                index_range = range(num_batches)
        except NotImplementedError:
            pass
        if index_range is None:
            index_range = _count()
        for index in index_range:
            yield self[index]

    def on_epoch_begin(self) -> None:
        """Called at the start of every epoch (does nothing unless overridden)."""

    def on_epoch_end(self) -> None:
        """Called at the end of every epoch (does nothing unless overridden)."""


def _count() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1


Sequence = PyDataset
"""Keras's older name for :class:`PyDataset`."""


# ---------------------------------------------------------------------------------------------
# timeseries_dataset_from_array
# ---------------------------------------------------------------------------------------------

def _optional_index(name: str, v: Any) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected None or an int, got {type(v).__name__}")
    return int(v)


class TimeseriesDataset(PyDataset):
    """The windows :func:`timeseries_dataset_from_array` makes: a re-iterable
    :class:`PyDataset` of NumPy batches.

    ``ds[i]`` is batch ``i``: ``(x, y)`` with targets, else ``x`` alone; ``len(ds)`` is the
    number of batches; ``ds.start_positions`` the window starts (relative to ``start_index``)
    in the order they are served. Iterating again gives the same batches in the same order.

    Shapes
    ------
    ``x``: ``[B, sequence_length, *data.shape[1:]]``, ``y``: ``[B, *targets.shape[1:]]``;
    without batching (``batch_size=None``) the leading ``B`` axis is absent.
    """

    def __init__(self, data: Array, targets: Optional[Array], start_positions: Array,
                 sequence_length: int, sampling_rate: int, batch_size: Optional[int]) -> None:
        super().__init__()
        self.data = data
        self.targets = targets
        self.start_positions = start_positions
        self.sequence_length = sequence_length
        self.sampling_rate = sampling_rate
        self.batch_size = batch_size
        self._offsets = np.arange(sequence_length, dtype=np.int64) * sampling_rate

    def __len__(self) -> int:
        n = len(self.start_positions)
        return n if self.batch_size is None else -(-n // self.batch_size)

    def __getitem__(self, index: int) -> Union[Array, Tuple[Array, Array]]:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index: expected an int in [-{n}, {n}) ({n} batches), got {index}")
        if self.batch_size is None:
            starts = self.start_positions[i]
        else:
            starts = self.start_positions[i * self.batch_size:(i + 1) * self.batch_size]
        starts = np.asarray(starts, dtype=np.int64)
        x = self.data[starts[..., None] + self._offsets]
        if self.targets is None:
            return x
        return x, self.targets[starts]

    def __repr__(self) -> str:
        return (f"TimeseriesDataset({len(self.start_positions)} windows of {self.sequence_length} "
                f"steps, batch_size={self.batch_size}, {len(self)} batches)")


def timeseries_dataset_from_array(data: Any, targets: Any, sequence_length: int,
                                  sequence_stride: int = 1, sampling_rate: int = 1,
                                  batch_size: Optional[int] = 128, shuffle: bool = False,
                                  seed: Optional[int] = None, start_index: Optional[int] = None,
                                  end_index: Optional[int] = None) -> TimeseriesDataset:
    """Sliding windows over a time series, as ``keras.utils.timeseries_dataset_from_array``.

    Window ``j`` starts at step ``start_index + j * sequence_stride`` and takes
    ``sequence_length`` steps ``sampling_rate`` apart; its target is
    ``targets[start_index + j * sequence_stride]`` (the target of the window's *first* step, as
    in Keras: pass ``targets = data[sequence_length:]`` to predict the next step).

    Keras returns a ``tf.data.Dataset``; this returns a :class:`TimeseriesDataset`: an object
    with ``__len__`` (batches), ``__getitem__`` and ``__iter__`` that yields NumPy
    ``(x_batch, y_batch)`` tuples (``x_batch`` alone when ``targets`` is None), can be iterated
    any number of times and can be given to a training loop as a :class:`PyDataset`.

    Parameters
    ----------
    data
        Array of consecutive steps, time on axis 0.
    targets
        Array with one target per step (``targets[i]`` belongs to the window starting at ``i``),
        or None.
    sequence_length
        Steps per window.
    sequence_stride
        Steps between the starts of consecutive windows.
    sampling_rate
        Steps between consecutive samples within a window.
    batch_size
        Windows per batch (the last batch may be smaller); None = one window per item.
    shuffle
        Serve the windows in random order. The order is the permutation of the window starts
        that Keras draws first (``np.random.RandomState(seed).shuffle``); Keras's ``tf.data``
        pipeline then also shuffles within a buffer on every pass, which is not reproduced: the
        order here is fixed for the object's lifetime.
    seed
        Seed of the shuffle; None = drawn from NumPy's global state (so
        :func:`set_random_seed` makes it reproducible).
    start_index, end_index
        Use only steps ``[start_index, end_index)`` of ``data`` (as Keras: ``end_index`` must be
        below ``len(data)``).

    Returns
    -------
    TimeseriesDataset

    Shapes
    ------
    data: ``[T, *features]``, targets: ``[T, *target_shape]`` -> batches
    ``x [B, sequence_length, *features]``, ``y [B, *target_shape]``.

    Raises
    ------
    ValueError
        Any of Keras's range checks (``start_index``, ``end_index``, ``sampling_rate``,
        ``sequence_stride``), or targets too short for the windows.
    TypeError
        Non-integer sizes or indices.
    """
    data_arr = np.asarray(data)
    if data_arr.ndim == 0:
        raise ValueError("data: expected an array with time on axis 0, got a scalar")
    n = len(data_arr)
    sequence_length = check_positive_int("sequence_length", sequence_length)
    sequence_stride = check_positive_int("sequence_stride", sequence_stride)
    sampling_rate = check_positive_int("sampling_rate", sampling_rate)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    shuffle = check_bool("shuffle", shuffle)
    seed = check_seed("seed", seed)
    start = _optional_index("start_index", start_index)
    end = _optional_index("end_index", end_index)
    if start is not None:
        if start < 0:
            raise ValueError(f"start_index: expected an int >= 0, got {start}")
        if start >= n:
            raise ValueError(f"start_index: expected an int below len(data) = {n}, got {start}")
    if end is not None:
        if end <= 0:
            raise ValueError(f"end_index: expected an int > 0, got {end}")
        if start is not None and end <= start:
            raise ValueError(f"end_index: expected an int above start_index = {start}, got {end}")
        if end >= n:
            raise ValueError(f"end_index: expected an int below len(data) = {n} (Keras's bound), "
                             f"got {end}")
    if sampling_rate >= n:
        raise ValueError(f"sampling_rate: expected an int below len(data) = {n}, got {sampling_rate}")
    if sequence_stride >= n:
        raise ValueError(f"sequence_stride: expected an int below len(data) = {n}, got {sequence_stride}")
    start = 0 if start is None else start
    end = n if end is None else end

    target_arr: Optional[Array] = None
    num_seqs = end - start - (sequence_length - 1) * sampling_rate
    if targets is not None:
        target_arr = np.asarray(targets)
        if target_arr.ndim == 0:
            raise ValueError("targets: expected an array with one target per step on axis 0, got a scalar")
        num_seqs = min(num_seqs, len(target_arr))
    index_dtype = np.int32 if num_seqs < 2147483647 else np.int64
    start_positions = np.arange(0, max(num_seqs, 0), sequence_stride, dtype=index_dtype)
    if shuffle:
        if seed is None:
            seed = int(np.random.randint(1e6))
        np.random.RandomState(seed).shuffle(start_positions)

    data_view = data_arr[start:end]
    target_view: Optional[Array] = None
    if target_arr is not None:
        target_view = target_arr[start:end]
        if len(start_positions) and int(start_positions.max()) >= len(target_view):
            raise ValueError(f"targets: expected at least {start + int(start_positions.max()) + 1} "
                             f"entries (one per window start), got {len(target_arr)}")
    return TimeseriesDataset(data_view, target_view, start_positions, sequence_length,
                             sampling_rate, batch_size)


# ---------------------------------------------------------------------------------------------
# split_dataset
# ---------------------------------------------------------------------------------------------

def _split_size(name: str, v: Any) -> Union[None, int, float]:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int, a float or None, got bool")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    raise TypeError(f"{name}: expected an int, a float or None, got {type(v).__name__}")


def _split_sizes(left_size: Any, right_size: Any, total: int) -> Tuple[int, int]:
    """Keras's ``_rescale_dataset_split_sizes``: the sizes of the two splits."""
    if left_size is None and right_size is None:
        raise ValueError("left_size, right_size: expected at least one of them, got both None")
    sizes = {"left_size": _split_size("left_size", left_size),
             "right_size": _split_size("right_size", right_size)}
    if sizes["left_size"] == 0 and sizes["right_size"] == 0:
        raise ValueError("left_size, right_size: expected at least one non-zero size, got both 0")
    for name, v in sizes.items():
        if isinstance(v, int) and not 0 < v < total:
            raise ValueError(f"{name}: expected an int in [1, {total - 1}] (fewer than the {total} "
                             f"samples) or a float in (0, 1), got {v}")
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError(f"{name}: expected a float in (0, 1) or an int in [1, {total - 1}], got {v}")
    lf, rf = sizes["left_size"], sizes["right_size"]
    if isinstance(lf, float) and isinstance(rf, float) and lf + rf > 1:
        raise ValueError(f"left_size, right_size: expected fractions adding up to at most 1, got "
                         f"{lf} + {rf} = {lf + rf}")
    left = round(lf * total) if isinstance(lf, float) else lf
    right = round(rf * total) if isinstance(rf, float) else rf
    if left is None:
        left = total - right
    elif right is None:
        right = total - left
    if left + right > total:
        raise ValueError(f"left_size, right_size: expected sizes adding up to at most the {total} "
                         f"samples, got {left} + {right} = {left + right}")
    for side, size in (("left", left), ("right", right)):
        if size == 0:
            raise ValueError(f"left_size, right_size: with {total} samples, left_size={left_size} "
                             f"and right_size={right_size} leave the {side} split empty")
    return int(left), int(right)


def split_dataset(dataset: Any, left_size: Union[None, int, float] = None,
                  right_size: Union[None, int, float] = None, shuffle: bool = False,
                  seed: Optional[int] = None) -> Tuple[Any, Any]:
    """Splits samples into a left and a right part, as ``keras.utils.split_dataset``.

    The sizes follow Keras exactly: an int is a number of samples (in ``[1, N-1]``), a float a
    fraction in ``(0, 1)`` rounded with Python's ``round``; a size left None is the complement of
    the other. The left split takes the first ``left`` samples and the right split the *last*
    ``right`` ones (samples in between, when both sizes are given and add up to fewer than
    ``N``, are in neither). With ``shuffle`` the samples are permuted first, with the
    permutation Keras's ``random.seed(seed); random.shuffle(...)`` gives (drawn from a private
    ``random.Random(seed)``, so Python's global state is left alone).

    Keras returns ``tf.data``/``torch`` datasets; this returns NumPy arrays.

    Parameters
    ----------
    dataset
        An array (samples on axis 0) or a tuple/list of arrays with the same number of samples.
    left_size, right_size
        Sizes of the splits (see above); at least one.
    shuffle
        Permute the samples before splitting.
    seed
        Seed of the permutation; None = drawn from Python's global :mod:`random` state (so
        :func:`set_random_seed` makes it reproducible).

    Returns
    -------
    (left, right)
        Two arrays for an array input; two tuples of arrays for a tuple/list input.

    Shapes
    ------
    dataset: ``[N, ...]`` (or a tuple of ``[N, ...]`` arrays) -> ``[left, ...]``, ``[right, ...]``.
    """
    shuffle = check_bool("shuffle", shuffle)
    seed = check_seed("seed", seed)
    if isinstance(dataset, (tuple, list)):
        if len(dataset) == 0:
            raise ValueError("dataset: expected a non-empty tuple/list of arrays, got an empty one")
        arrays = []
        for i, a in enumerate(dataset):
            arr = np.asarray(a)
            if arr.ndim == 0:
                raise ValueError(f"dataset[{i}]: expected an array with samples on axis 0, got a scalar")
            if arrays and len(arr) != len(arrays[0]):
                raise ValueError(f"dataset[{i}]: expected {len(arrays[0])} samples (as dataset[0]), "
                                 f"got shape {shape_str(arr.shape)}")
            arrays.append(arr)
        single = False
    else:
        arr = np.asarray(dataset)
        if arr.ndim == 0:
            raise ValueError("dataset: expected an array or a tuple of arrays with samples on axis 0, "
                             f"got {type(dataset).__name__}")
        arrays, single = [arr], True
    total = len(arrays[0])
    left, right = _split_sizes(left_size, right_size, total)
    order = np.arange(total)
    if shuffle:
        if seed is None:
            seed = random.randint(0, int(1e6))
        perm = list(range(total))
        random.Random(seed).shuffle(perm)
        order = np.asarray(perm, dtype=np.intp)
    li, ri = order[:left], order[total - right:]
    if single:
        return arrays[0][li], arrays[0][ri]
    return tuple(a[li] for a in arrays), tuple(a[ri] for a in arrays)
