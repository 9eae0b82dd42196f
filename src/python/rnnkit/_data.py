"""Where ``fit``/``evaluate``/``predict`` get their batches from (Keras's data adapters).

Sources, as Keras 3 accepts them:

- arrays: ``x`` (one per model input: an array, a list or a dict by input name), ``y`` (likewise
  per output) and an optional ``sample_weight``, batched ``batch_size`` samples at a time and
  shuffled every epoch; ``class_weight`` becomes per-entry weights from the labels;
- a PyDataset-like object (``__len__`` and ``__getitem__(i) -> (x, y[, sample_weight])``, and
  ``on_epoch_end()`` when present): one epoch is its batches in order;
- any other iterable of ``(x, y[, sample_weight])`` batches (a generator, a list of batches, an
  object with ``__iter__``): an epoch is one pass (``iter()`` again for the next epoch), or
  ``steps_per_epoch`` batches drawn from one running iterator (a generator that never ends
  needs it).

Every batch is checked against the model as it arrives (``model.prepare_inputs``, the targets
against the loss and output shapes), so a bad batch names what is wrong; arrays are checked
once, not per batch.

Shapes
------
``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; ``sample_weight``: ``[N]`` (per
sample) or ``[N, T]`` (per time step of a sequence output), per output or one for all.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from rnnkit._checks import as_float_array, shape_str

__all__ = ["Batch", "DataSource", "ArrayData", "SequenceData", "IterableData", "make_source",
           "class_weights_to_sample_weights", "check_sample_weight", "is_sequence_source", "is_iterable_source"]

# (inputs per model input, targets per output (None without a loss), weights per output or None)
Batch = Tuple[List[np.ndarray], List[Optional[np.ndarray]], Optional[List[Optional[np.ndarray]]]]


def is_sequence_source(x: Any) -> bool:
    """A PyDataset-like source: ``__len__`` and ``__getitem__``, not an array or a list."""
    return (hasattr(x, "__len__") and hasattr(x, "__getitem__") and not isinstance(x, (np.ndarray, list, tuple, dict))
            and not hasattr(x, "shape"))


def is_iterable_source(x: Any) -> bool:
    """A generator or another iterable of batches (not an array, list of arrays or dict)."""
    if isinstance(x, (np.ndarray, dict, str, bytes)) or hasattr(x, "shape"):
        return False
    if isinstance(x, (list, tuple)):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def class_weights_to_sample_weights(class_weight: Dict[Any, float], y: np.ndarray, sparse: bool,
                                    dtype: np.dtype) -> np.ndarray:
    """Keras's ``class_weight``: each entry's weight is its class's (missing classes weigh 1).
    Labels are the integers of ``y`` (``sparse``) or the argmax of its last axis (one-hot or
    probabilities; a single sigmoid output counts ``y > 0.5`` as class 1).

    Shapes
    ------
    y: [N, ...] labels or [N, ..., K] -> weights [N, ...]
    """
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight: expected a dict {{class: weight}}, got {type(class_weight).__name__}")
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"class_weight: expected non-negative int class indices, got key {k!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ValueError(f"class_weight: expected finite float weights, got {v!r} for class {k}")
    if sparse:
        labels = y.reshape(y.shape[:-1]) if y.ndim >= 2 and y.shape[-1] == 1 else y
    elif y.shape[-1] == 1:
        labels = (y[..., 0] > 0.5).astype(np.int64)
    else:
        labels = np.argmax(y, axis=-1)
    top = int(max(class_weight)) + 1
    table = np.ones(max(top, int(labels.max()) + 1 if labels.size else 1), dtype=dtype)
    for k, v in class_weight.items():
        table[int(k)] = v
    return table[labels.astype(np.int64)]


def check_sample_weight(name: str, w: Any, n: int, lead: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A sample weight as a float array ``[N]`` or ``[N, T]`` matching the entries' leading
    shape ``lead`` (``[N]`` or ``[N, T]`` of a sequence output)."""
    a = as_float_array(name, np.asarray(w, dtype=np.float64) if not isinstance(w, np.ndarray) or w.dtype.kind != "f" else w)
    if a.ndim == 0 or a.shape[0] != n:
        raise ValueError(f"{name}: expected {n} weights (one per sample), got shape {shape_str(a.shape)}")
    if a.ndim > len(lead) or tuple(a.shape) != tuple(lead[:a.ndim]):
        raise ValueError(f"{name}: expected shape {shape_str(lead[:1])} (per sample) or {shape_str(lead)} "
                         f"(per entry of the output), got {shape_str(a.shape)}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name}: expected finite, non-negative weights")
    return a.astype(dtype, copy=False)


class DataSource:
    """An epoch's worth of checked batches at a time."""

    #: batches per epoch (None: unknown until the source ends)
    steps: Optional[int] = None

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        raise NotImplementedError


class ArrayData(DataSource):
    """In-memory arrays, checked once, sliced per batch (shuffled per epoch when asked).

    Shapes
    ------
    xs: [N, ...] per input; ys: [N, ...] per output; ws: [N] or [N, T] per output.
    """

    def __init__(self, xs: List[np.ndarray], ys: List[Optional[np.ndarray]],
                 ws: Optional[List[Optional[np.ndarray]]], batch_size: int, shuffle: bool) -> None:
        self.xs, self.ys, self.ws = xs, ys, ws
        self.n = xs[0].shape[0]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.steps = -(-self.n // batch_size)

    def batch(self, idx: Any) -> Batch:
        return ([x[idx] for x in self.xs], [None if y is None else y[idx] for y in self.ys],
                None if self.ws is None else [None if w is None else w[idx] for w in self.ws])

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        order = rng.permutation(self.n) if self.shuffle else None
        for s in range(0, self.n, self.batch_size):
            idx = slice(s, min(s + self.batch_size, self.n)) if order is None else order[s:s + self.batch_size]
            yield self.batch(idx)

    def split(self, at: int) -> Tuple["ArrayData", "ArrayData"]:
        """The first ``at`` samples and the rest (Keras's ``validation_split``: from the end,
        before any shuffling)."""
        def cut(arrs: Optional[List[Optional[np.ndarray]]], lo: Any) -> Optional[List[Optional[np.ndarray]]]:
            return None if arrs is None else [None if a is None else a[lo] for a in arrs]
        a, b = slice(None, at), slice(at, None)
        return (ArrayData([x[a] for x in self.xs], cut(self.ys, a), cut(self.ws, a), self.batch_size, self.shuffle),
                ArrayData([x[b] for x in self.xs], cut(self.ys, b), cut(self.ws, b), self.batch_size, False))


def _unpack(batch: Any, where: str) -> Tuple[Any, Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2, 3) and not isinstance(batch, np.ndarray):
        if len(batch) == 1:
            return batch[0], None, None
        if len(batch) == 2:
            return batch[0], batch[1], None
        return batch[0], batch[1], batch[2]
    return batch, None, None


class _Checked(DataSource):
    """Shared by the batch-producing sources: each raw ``(x, y[, w])`` is checked on arrival."""

    def __init__(self, check: Callable[[Any, Any, Any, str], Batch]) -> None:
        self.check = check


class SequenceData(_Checked):
    """A PyDataset-like source: batch ``i`` is ``source[i]``; ``on_epoch_end()`` after each
    epoch. Its batches keep their order (Keras ignores ``shuffle`` here as well)."""

    def __init__(self, source: Any, check: Callable[[Any, Any, Any, str], Batch],
                 steps: Optional[int] = None) -> None:
        super().__init__(check)
        self.source = source
        n = len(source)
        if steps is not None and steps > n:
            raise ValueError(f"steps_per_epoch: the dataset has {n} batches, got {steps}")
        self.steps = n if steps is None else steps

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        for i in range(self.steps or 0):
            x, y, w = _unpack(self.source[i], f"batch {i}")
            yield self.check(x, y, w, f"batch {i}")
        end = getattr(self.source, "on_epoch_end", None)
        if callable(end):
            end()


class IterableData(_Checked):
    """A generator or iterable of batches. Without ``steps`` an epoch is one full pass (the
    iterable is iterated afresh each epoch; a one-shot generator then gives one epoch only and
    a clear error after). With ``steps`` one running iterator feeds every epoch."""

    def __init__(self, source: Any, check: Callable[[Any, Any, Any, str], Batch],
                 steps: Optional[int] = None) -> None:
        super().__init__(check)
        self.source = source
        self.steps = steps
        self._it: Optional[Iterator[Any]] = None
        self._used = False

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        if self.steps is None:
            if self._used and iter(self.source) is self.source:
                raise ValueError("x: the generator ran out after its first epoch; give steps_per_epoch "
                                 "(and a generator that does not end) or an iterable that can be "
                                 "iterated again (a list of batches, a PyDataset)")
            self._used = True
            for i, b in enumerate(self.source):
                x, y, w = _unpack(b, f"batch {i}")
                yield self.check(x, y, w, f"batch {i}")
            return
        if self._it is None:
            self._it = iter(self.source)
        for i in range(self.steps):
            try:
                b = next(self._it)
            except StopIteration:
                raise ValueError(f"x: the data ran out after {i} batch(es) of an epoch of steps_per_epoch="
                                 f"{self.steps}; make the generator repeat or lower steps_per_epoch") from None
            x, y, w = _unpack(b, f"batch {i}")
            yield self.check(x, y, w, f"batch {i}")


def make_source(x: Any, y: Any, sample_weight: Any, batch_size: int, shuffle: bool,
                steps: Optional[int], check_arrays: Callable[[Any, Any, Any], ArrayData],
                check_batch: Callable[[Any, Any, Any, str], Batch], what: str = "x") -> DataSource:
    """The source for ``x`` (with ``y`` and ``sample_weight`` for arrays; a generator or dataset
    carries its own and then ``y``/``sample_weight`` must be None)."""
    if is_sequence_source(x) or is_iterable_source(x):
        if y is not None or sample_weight is not None:
            raise ValueError(f"y: a {type(x).__name__} yields its own targets (and weights): pass y=None "
                             "and sample_weight=None")
        if is_sequence_source(x):
            return SequenceData(x, check_batch, steps)
        return IterableData(x, check_batch, steps)
    return check_arrays(x, y, sample_weight)
