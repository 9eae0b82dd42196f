"""Data-parallel training and distributed inference over MPI (mpi4py), on one machine or many.

Every process (*rank*) holds a full copy of the model. Training: each rank runs forward and
backward on its share of every global batch, the gradients are summed across ranks with
``Allreduce`` (packed into a few large contiguous buckets, one reusable buffer per bucket, one
MPI call per bucket), and every rank applies the same averaged gradient, so the copies stay
identical. Inference: each rank scores a contiguous slice of the samples and rank 0 gathers the
results in order (``Gatherv``). All transfers are buffer-based MPI calls on NumPy arrays; nothing
is pickled (the only non-array message, the key list of an optimizer's state, goes as UTF-8 JSON
bytes in a ``uint8`` buffer).

mpi4py is imported on first use; without it, any call raises an ImportError telling to
``pip install "rnnkit[mpi]"``. Launch a script on ``p`` ranks with
``mpiexec -n p python -m mpi4py train.py`` (``-m mpi4py`` aborts every rank when one raises,
instead of leaving the others waiting in a collective); give each rank ``cores / p`` threads
(``OMP_NUM_THREADS``, :func:`rnnkit.set_num_threads`).

Keras style: ``model.fit(x, y, batch_size=b, distributed=True)`` (see
:meth:`rnnkit.models.Model.fit`). The rules:

- ``batch_size`` is **per rank**: a global batch has ``size() * batch_size`` samples. Every rank
  draws the same per-epoch permutation (the shuffling seed is rank 0's) and takes its own
  contiguous slice of each global batch (a short last batch is split as evenly as possible; a
  rank whose slice is empty adds nothing that step). So ``p`` ranks with batch ``b`` see exactly
  the global batches that one process with batch ``p * b`` sees.
- The gradient is the average over the global batch: each rank's gradient is weighted by its
  number of samples, ``sum_k n_k g_k / sum_k n_k``. For losses that average over samples (the
  default reduction, with or without ``sample_weight``/``class_weight``) this is exactly the
  gradient of one process on the whole global batch, up to summation order. With masks
  (padding), ``ignore_class`` or ``reduction="mean_with_sample_weight"`` a rank's loss divides
  by its own count of valid entries, so the average is approximate (as in PyTorch's DDP).
  Dropout masks are per rank; BatchNormalization normalizes with each rank's own statistics,
  and its moving statistics (every non-trainable weight) are rank 0's after each epoch.
- The loss and every metric are summed across ranks (sums of weighted values and of counts,
  :meth:`rnnkit.metrics.Metric.get_state`) at the end of each epoch, so every rank's logs and
  history are those of the whole data; validation data is sharded and reduced the same way.
- Rank 0 broadcasts the weights and the optimizer state at the start (after a
  ``BackupAndRestore`` restored them on rank 0), prints progress and runs the callbacks that
  write files (ModelCheckpoint, BackupAndRestore, CSVLogger, JSONLogger); the other ranks run
  the other callbacks with their printing silenced, on the same reduced logs, so decisions
  (EarlyStopping, ReduceLROnPlateau) agree. ``stop_training`` set on any rank stops all.
- Arrays are sharded automatically. A generator or PyDataset is used as each rank's own data
  (shard it yourself, e.g. with :func:`shard_range`); every rank must then run the same number
  of steps per epoch (``len()`` or ``steps_per_epoch``, checked at the start).

PyTorch style (NumPy modules and :mod:`rnnkit.optim`)::

    from rnnkit import distributed as dist
    dist.broadcast_parameters(model)                  # rank 0's initial weights everywhere
    opt = dist.DistributedOptimizer(optim.Adam(model.parameters(), lr=1e-3))
    for xb, yb in my_shard_batches:
        opt.zero_grad(); ...forward, loss, backward...
        opt.step(weight=len(xb))                      # averages .grad across ranks, then steps

Shapes
------
Gradients have their parameter's shape and dtype (float32 or float64); :func:`predict` takes
``[N, ...]`` per model input on every rank and returns ``[N, *output_shape]`` per output on
rank 0.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
import zlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit import optim as _optim
from rnnkit import optimizers as _optimizers
from rnnkit._data import ArrayData, DataSource
from rnnkit.callbacks import (BackupAndRestore, Callback, CallbackList, CSVLogger, JSONLogger,
                              ModelCheckpoint)

__all__ = ["init", "comm", "rank", "size", "barrier", "is_main", "shard_range",
           "GradientAverager", "DistributedOptimizer", "broadcast_arrays", "broadcast_model",
           "broadcast_parameters", "broadcast_optimizer_state", "predict", "ShardedArrayData",
           "TrainingSync", "stats", "reset_stats", "SAVING_CALLBACKS"]

#: callbacks that write files: only rank 0 runs them in ``fit(distributed=True)``
SAVING_CALLBACKS: Tuple[type, ...] = (ModelCheckpoint, BackupAndRestore, CSVLogger, JSONLogger)

_DEFAULT_BUCKET_MB = 25.0
_COMM: List[Any] = []  # the communicator set by init(), once
_STATS: Dict[str, float] = {"allreduce_calls": 0, "allreduce_bytes": 0, "allreduce_seconds": 0.0,
                            "steps": 0}


# ---- MPI set-up ------------------------------------------------------------------------------------

def _mpi() -> Any:
    """The ``mpi4py.MPI`` module (imported here, on first use)."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("rnnkit.distributed needs mpi4py and an MPI library: "
                          'pip install "rnnkit[mpi]" (mpi4py with the mpich wheel), then launch '
                          "with mpiexec -n <ranks> python -m mpi4py <script>") from e
    return MPI


def init(communicator: Any = None) -> Any:
    """Initialises MPI (importing mpi4py) and sets the communicator every function of this module
    uses by default: ``communicator``, else ``MPI.COMM_WORLD``. Calling it again with another
    communicator replaces it; without one it returns the current one.

    Returns
    -------
    The communicator (an ``mpi4py.MPI.Comm``).

    Shapes
    ------
    No arrays.
    """
    MPI = _mpi()
    if communicator is not None:
        if not isinstance(communicator, MPI.Comm):
            raise TypeError(f"communicator: expected an mpi4py.MPI.Comm, got {type(communicator).__name__}")
        _COMM[:] = [communicator]
    elif not _COMM:
        _COMM.append(MPI.COMM_WORLD)
    return _COMM[0]


def comm() -> Any:
    """The communicator in use (:func:`init` is called when needed)."""
    return _COMM[0] if _COMM else init()


def _resolve(communicator: Any) -> Any:
    return comm() if communicator is None else communicator


def rank() -> int:
    """This process's rank in the communicator (0 .. size() - 1)."""
    return int(comm().Get_rank())


def size() -> int:
    """The number of ranks."""
    return int(comm().Get_size())


def is_main() -> bool:
    """Whether this is rank 0 (the one that prints and writes files)."""
    return rank() == 0


def barrier() -> None:
    """Waits until every rank has called it."""
    comm().Barrier()


def stats() -> Dict[str, float]:
    """This process's counters of gradient all-reduces since the start or :func:`reset_stats`:
    ``allreduce_calls``, ``allreduce_bytes`` (bytes this rank contributed), ``allreduce_seconds``
    (time inside ``Allreduce``) and ``steps`` (averaging calls).

    Shapes
    ------
    Scalars.
    """
    return dict(_STATS)


def reset_stats() -> None:
    """Sets the counters of :func:`stats` to zero."""
    _STATS.update(allreduce_calls=0, allreduce_bytes=0, allreduce_seconds=0.0, steps=0)


def shard_range(n: int, rank_: Optional[int] = None, size_: Optional[int] = None) -> Tuple[int, int]:
    """The contiguous slice ``[lo, hi)`` of ``n`` items that a rank owns: the items split as
    evenly as possible, the first ``n % size`` ranks one more.

    Parameters
    ----------
    n
        Number of items (>= 0).
    rank_, size_
        Default: this process's rank and the number of ranks.

    Shapes
    ------
    Returns two ints.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    p = size() if size_ is None else int(size_)
    r = rank() if rank_ is None else int(rank_)
    if p < 1 or not 0 <= r < p:
        raise ValueError(f"rank_: expected 0 <= rank_ < size_ (size_ >= 1), got rank_={r}, size_={p}")
    q, rem = divmod(int(n), p)
    lo = r * q + min(r, rem)
    return lo, lo + q + (1 if r < rem else 0)


def _signature_check(communicator: Any, what: str, signature: Sequence[Any]) -> None:
    """Raises the same ValueError on every rank unless all ranks pass the same ``signature``
    (shapes and dtypes of what they are about to exchange): one tiny Allreduce."""
    MPI = _mpi()
    crc = zlib.crc32(repr(list(signature)).encode())
    mine = np.array([crc, len(signature), -crc, -len(signature)], dtype=np.int64)
    out = np.empty_like(mine)
    communicator.Allreduce(mine, out, op=MPI.MAX)
    if out[0] != -out[2] or out[1] != -out[3]:
        raise ValueError(f"{what}: the ranks hold arrays of different shapes or dtypes (this rank: "
                         f"{len(signature)} arrays {list(signature)[:4]}...); every rank must build the "
                         "same model and optimizer")


# ---- buckets -----------------------------------------------------------------------------------------

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _Plan:
    """Where each array of a list lives in a few flat per-dtype buffers of at most ``cap`` bytes
    (an array larger than ``cap`` gets a buffer of its own), plus ``trailer`` scalars at the end
    of the last buffer of the widest dtype (a float64 buffer of their own when there is none)."""

    def __init__(self, like: Sequence[Tuple[Tuple[int, ...], np.dtype]], cap: int, trailer: int,
                 what: str) -> None:
        self.key = (tuple((tuple(s), d.str) for s, d in like), trailer)
        groups: Dict[np.dtype, List[int]] = {}
        for i, (shape, dt) in enumerate(like):
            if dt not in _FLOATS:
                raise TypeError(f"{what}[{i}]: expected a float32 or float64 array, got dtype {dt}")
            groups.setdefault(dt, []).append(i)
        layout: List[Tuple[np.dtype, List[int]]] = []  # (dtype, members) per buffer
        for dt, members in groups.items():
            cur: List[int] = []
            used = 0
            for i in members:
                nbytes = int(np.prod(like[i][0], dtype=np.int64)) * dt.itemsize
                if cur and used + nbytes > cap:
                    layout.append((dt, cur))
                    cur, used = [], 0
                cur.append(i)
                used += nbytes
            if cur:
                layout.append((dt, cur))
        # the scalars ride at the end of the last bucket of the widest dtype present (float32 for
        # a float32 model: exact for sample counts below 2**24, the loss to float32 precision),
        # so that a step is one Allreduce per bucket and nothing more
        widest = [k for k, (dt, _) in enumerate(layout) if dt == np.float64] or list(range(len(layout)))
        if trailer and not widest:
            layout.append((np.dtype(np.float64), []))
            widest = [len(layout) - 1]
        self.trailer_bucket = widest[-1] if trailer else -1
        self.buffers: List[np.ndarray] = []
        self.payload: List[int] = []  # elements of each buffer that are array data
        self.views: List[np.ndarray] = [np.empty(0)] * len(like)
        for k, (dt, members) in enumerate(layout):
            n = sum(int(np.prod(like[i][0], dtype=np.int64)) for i in members)
            buf = np.zeros(n + (trailer if k == self.trailer_bucket else 0), dtype=dt)
            off = 0
            for i in members:
                size_i = int(np.prod(like[i][0], dtype=np.int64))
                self.views[i] = buf[off:off + size_i].reshape(like[i][0])
                off += size_i
            self.buffers.append(buf)
            self.payload.append(n)
        self.trailer: Optional[np.ndarray] = (
            self.buffers[self.trailer_bucket][self.payload[self.trailer_bucket]:] if trailer else None)

    @property
    def nbytes(self) -> int:
        return int(sum(b.nbytes for b in self.buffers))


class GradientAverager:
    """Averages lists of gradient arrays across ranks: packs them (times this rank's weight) into
    a few contiguous per-dtype buckets of at most ``bucket_mb`` MB, one ``Allreduce`` (sum, in
    place) per bucket, then divides by the sum of the weights. The buckets are allocated once per
    layout and reused every step.

    Parameters
    ----------
    communicator
        An ``mpi4py.MPI.Comm`` (default: :func:`comm`).
    bucket_mb
        Largest bucket in MB (default 25); an array larger than that gets a bucket of its own.

    Shapes
    ------
    ``average(grads)``: any float32/float64 arrays; returns arrays of the same shapes and dtypes.
    """

    def __init__(self, communicator: Any = None, bucket_mb: float = _DEFAULT_BUCKET_MB) -> None:
        if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb > 0:
            raise ValueError(f"bucket_mb: expected a number > 0, got {bucket_mb!r}")
        self.comm = _resolve(communicator)
        self.cap = max(int(bucket_mb * 2**20), 1)
        self._plan: Optional[_Plan] = None

    @property
    def bucket_count(self) -> int:
        """Buckets of the current layout (0 before the first call)."""
        return 0 if self._plan is None else len(self._plan.buffers)

    @property
    def bucket_bytes(self) -> int:
        """Bytes all-reduced per call with the current layout (gradients and scalars)."""
        return 0 if self._plan is None else self._plan.nbytes

    def _layout(self, like: Sequence[Tuple[Tuple[int, ...], np.dtype]], trailer: int, what: str) -> _Plan:
        key = (tuple((tuple(s), d.str) for s, d in like), trailer)
        if self._plan is None or self._plan.key != key:
            plan = _Plan(like, self.cap, trailer, what)
            _signature_check(self.comm, what, list(key[0]) + [("scalars", trailer)])
            self._plan = plan
        return self._plan

    def average(self, grads: Sequence[Optional[np.ndarray]], weight: float = 1.0,
                scalars: Sequence[float] = (),
                like: Optional[Sequence[np.ndarray]] = None) -> Tuple[List[np.ndarray], np.ndarray]:
        """``sum_k w_k g_k / sum_k w_k`` over the ranks ``k``, for every array of ``grads``.

        Parameters
        ----------
        grads
            This rank's gradients (not modified); ``None`` counts as zeros (give ``like``).
        weight
            This rank's weight ``w_k`` >= 0, e.g. its number of samples in the step (equal
            weights: the plain mean). The weights of all ranks must not sum to 0.
        scalars
            Extra values summed across ranks in the same call (free riders at the end of a
            bucket: float64 when a gradient is, else float32).
        like
            Arrays giving the shape and dtype of each entry (default: ``grads``).

        Returns
        -------
        The averaged arrays (views into the reused buckets: read them before the next call) and
        a float64 array ``[sum of weights, *sums of scalars]``.

        Shapes
        ------
        Each result has the shape and dtype of its gradient.
        """
        MPI = _mpi()
        ref = grads if like is None else like
        if len(ref) != len(grads):
            raise ValueError(f"like: expected one array per gradient ({len(grads)}), got {len(ref)}")
        w = float(weight)
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"weight: expected a finite number >= 0, got {weight!r}")
        spec = []
        for i, a in enumerate(ref):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"grads[{i}]: expected a NumPy array (or None with like=), got "
                                f"{type(a).__name__}")
            spec.append((a.shape, a.dtype))
        plan = self._layout(spec, 1 + len(scalars), "grads")
        for i, (g, view) in enumerate(zip(grads, plan.views)):
            if g is None:
                view.fill(0)
                continue
            if not isinstance(g, np.ndarray) or g.shape != view.shape:
                got = g.shape if isinstance(g, np.ndarray) else type(g).__name__
                raise ValueError(f"grads[{i}]: expected shape {view.shape}, got {got}")
            if w == 1.0:
                np.copyto(view, g, casting="same_kind")
            else:
                np.multiply(g, view.dtype.type(w), out=view, casting="same_kind")
        assert plan.trailer is not None
        plan.trailer[0] = w
        plan.trailer[1:] = [float(s) for s in scalars]
        t0 = time.perf_counter()
        for buf in plan.buffers:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        _STATS["allreduce_seconds"] += time.perf_counter() - t0
        _STATS["allreduce_calls"] += len(plan.buffers)
        _STATS["allreduce_bytes"] += plan.nbytes
        _STATS["steps"] += 1
        total = float(plan.trailer[0])
        if not total > 0:
            raise ValueError("weight: the weights of all ranks sum to 0; at least one rank must "
                             "contribute a gradient")
        for buf, n in zip(plan.buffers, plan.payload):
            if n:
                np.divide(buf[:n], buf.dtype.type(total), out=buf[:n])
        return list(plan.views), np.array(plan.trailer, dtype=np.float64)


# ---- broadcasting --------------------------------------------------------------------------------------

def broadcast_arrays(arrays: Sequence[np.ndarray], root: int = 0, communicator: Any = None,
                     bucket_mb: float = _DEFAULT_BUCKET_MB) -> None:
    """Overwrites ``arrays`` on every rank, in place, with the root's: packed into per-dtype
    buckets of at most ``bucket_mb`` MB, one ``Bcast`` per bucket.

    Shapes
    ------
    Every rank passes arrays of the same shapes and dtypes (float32/float64), writable.
    """
    _broadcast(list(arrays), root, _resolve(communicator), bucket_mb, "arrays")


def _broadcast(arrays: List[np.ndarray], root: int, c: Any, bucket_mb: float, what: str) -> None:
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}[{i}]: expected a NumPy array, got {type(a).__name__}")
    p = int(c.Get_size())
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < p:
        raise ValueError(f"root: expected a rank in [0, {p}), got {root!r}")
    spec = [(a.shape, a.dtype) for a in arrays]
    _signature_check(c, what, [(tuple(s), d.str) for s, d in spec])
    if not arrays:
        return
    cap = max(int(float(bucket_mb) * 2**20), 1)
    plan = _Plan(spec, cap, 0, what)
    me = int(c.Get_rank())
    if me == root:
        for a, view in zip(arrays, plan.views):
            np.copyto(view, a)
    for buf in plan.buffers:
        c.Bcast(buf, root=root)
    if me != root:
        for i, (a, view) in enumerate(zip(arrays, plan.views)):
            if not a.flags.writeable:
                raise ValueError(f"{what}[{i}]: expected a writable array")
            np.copyto(a, view)


def broadcast_model(model: Any, root: int = 0, communicator: Any = None) -> None:
    """Gives every rank the root's weights (every layer parameter, trainable or not), in place.

    Shapes
    ------
    The model's weights; every rank must have built the same architecture.
    """
    if not getattr(model, "built", True):
        raise ValueError("model: build it before broadcasting its weights (give the first layer an "
                         "input_shape, call build(), or fit/predict once)")
    weights = getattr(model, "weights", None)
    if weights is None:
        raise TypeError(f"model: expected an rnnkit Model (with .weights), got {type(model).__name__}")
    _broadcast(list(weights), root, _resolve(communicator), _DEFAULT_BUCKET_MB, "model")


def _parameter_arrays(params: Any, what: str) -> List[np.ndarray]:
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    out = []
    for i, p in enumerate(params):
        a = p if isinstance(p, np.ndarray) else getattr(p, "data", None)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}[{i}]: expected an rnnkit.nn.Parameter or a NumPy array, got "
                            f"{type(p).__name__}")
        out.append(a)
    return out


def broadcast_parameters(params: Any, root: int = 0, communicator: Any = None) -> None:
    """Gives every rank the root's parameter values, in place (``p.data`` keeps its memory):
    ``params`` is an :class:`rnnkit.nn.Module`, ``module.parameters()``, or a list of Parameters
    or arrays.

    Shapes
    ------
    Every rank passes parameters of the same shapes and dtypes.
    """
    _broadcast(_parameter_arrays(params, "params"), root, _resolve(communicator), _DEFAULT_BUCKET_MB,
               "params")


def _bcast_bytes(c: Any, payload: Optional[bytes], root: int) -> bytes:
    """Bytes from the root (its length first, in a fixed-size int64 array)."""
    me = int(c.Get_rank())
    n = np.array([len(payload) if me == root and payload is not None else 0], dtype=np.int64)
    c.Bcast(n, root=root)
    buf = (np.frombuffer(payload, dtype=np.uint8).copy() if me == root and payload is not None
           else np.empty(int(n[0]), dtype=np.uint8))
    c.Bcast(buf, root=root)
    return buf.tobytes()


def _bcast_values(c: Any, arrays: Optional[List[np.ndarray]], total: int, root: int) -> np.ndarray:
    """The root's arrays concatenated as one float64 vector of ``total`` entries (float32
    values convert exactly both ways)."""
    vec = np.empty(total, dtype=np.float64)
    if int(c.Get_rank()) == root and arrays:
        np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays], out=vec)
    c.Bcast(vec, root=root)
    return vec


def broadcast_optimizer_state(optimizer: Any, variables: Optional[Sequence[np.ndarray]] = None,
                              root: int = 0, communicator: Any = None) -> None:
    """Gives every rank the root's optimizer state: slots (moments, momentum, ...), the step
    count and a float learning rate.

    Parameters
    ----------
    optimizer
        A Keras-style :class:`rnnkit.optimizers.Optimizer` (then ``variables`` are the arrays it
        updates, e.g. ``model.trainable_weights``), a PyTorch-style
        :class:`rnnkit.optim.Optimizer` (its ``state`` and each group's ``lr``; the groups
        themselves must be built alike on every rank), or a :class:`DistributedOptimizer`.
    variables
        Keras style only.

    Shapes
    ------
    State arrays have their variable's (parameter's) shape.
    """
    if isinstance(optimizer, DistributedOptimizer):
        optimizer = optimizer.optimizer
    c = _resolve(communicator)
    me = int(c.Get_rank())
    if isinstance(optimizer, _optimizers.Optimizer):
        if variables is None:
            raise ValueError("variables: a Keras-style optimizer's state belongs to its variables; pass "
                             "them (e.g. model.trainable_weights)")
        variables = list(variables)
        _signature_check(c, "variables", [(tuple(v.shape), v.dtype.str) for v in variables])
        payload = None
        arrays: Optional[List[np.ndarray]] = None
        if me == root:
            state = optimizer.get_state(variables)
            keys = sorted(k for k in state if k != "iterations")
            lr = optimizer.get_config().get("learning_rate")
            lr = float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None
            payload = json.dumps({"keys": keys, "iterations": int(state["iterations"]),
                                  "lr": lr}).encode()
            arrays = [state[k] for k in keys]
        meta = json.loads(_bcast_bytes(c, payload, root).decode())

        def shape_of(key: str) -> Tuple[int, ...]:
            head = key.split("/", 1)[0]
            return tuple(variables[int(head)].shape) if "/" in key and head.isdigit() else ()

        shapes = [shape_of(k) for k in meta["keys"]]
        vec = _bcast_values(c, arrays, int(sum(int(np.prod(s, dtype=np.int64)) for s in shapes)), root)
        if me != root:
            new: Dict[str, np.ndarray] = {"iterations": np.asarray(meta["iterations"], dtype=np.int64)}
            off = 0
            for k, s in zip(meta["keys"], shapes):
                n = int(np.prod(s, dtype=np.int64))
                new[k] = vec[off:off + n].reshape(s).copy()
                off += n
            optimizer.set_state(variables, new)
            if meta["lr"] is not None:
                optimizer.learning_rate = meta["lr"]
        return
    if isinstance(optimizer, _optim.Optimizer):
        sd = optimizer.state_dict()
        payload = None
        arrays = None
        if me == root:
            entries: Dict[str, Dict[str, Any]] = {}
            arrays = []
            off = 0
            for idx, st in sd["state"].items():
                e: Dict[str, Any] = {}
                for k, v in st.items():
                    if isinstance(v, np.ndarray):
                        e[k] = ["a", off, list(v.shape)]
                        arrays.append(v)
                        off += int(v.size)
                    elif v is None:
                        e[k] = ["n"]
                    elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                        e[k] = ["s", float(v)]
                    else:
                        raise TypeError(f"optimizer.state[{idx}][{k!r}]: expected an array, a number or "
                                        f"None, got {type(v).__name__}")
                entries[str(idx)] = e
            payload = json.dumps({"state": entries, "total": off,
                                  "lr": [float(g["lr"]) for g in sd["param_groups"]]}).encode()
        meta = json.loads(_bcast_bytes(c, payload, root).decode())
        vec = _bcast_values(c, arrays, int(meta["total"]), root)
        if me != root:
            if len(meta["lr"]) != len(sd["param_groups"]):
                raise ValueError(f"optimizer: rank {root} has {len(meta['lr'])} parameter groups, this "
                                 f"rank {len(sd['param_groups'])}")
            state: Dict[int, Dict[str, Any]] = {}
            for idx, e in meta["state"].items():
                st: Dict[str, Any] = {}
                for k, spec in e.items():
                    if spec[0] == "a":
                        n = int(np.prod(spec[2], dtype=np.int64))
                        st[k] = vec[spec[1]:spec[1] + n].reshape(spec[2]).copy()
                    elif spec[0] == "n":
                        st[k] = None
                    else:
                        st[k] = spec[1]
                state[int(idx)] = st
            sd["state"] = state
            for g, lr in zip(sd["param_groups"], meta["lr"]):
                g["lr"] = lr
            optimizer.load_state_dict(sd)
        return
    raise TypeError(f"optimizer: expected an rnnkit.optimizers.Optimizer, an rnnkit.optim.Optimizer or a "
                    f"DistributedOptimizer, got {type(optimizer).__name__}")


# ---- the optimizer wrapper ----------------------------------------------------------------------------

class DistributedOptimizer:
    """Wraps an optimizer so that every update uses the gradient averaged across ranks.

    - Keras style (:class:`rnnkit.optimizers.Optimizer`): :meth:`apply` / :meth:`apply_gradients`
      average the given gradients (:class:`GradientAverager`), then apply them.
    - PyTorch style (:class:`rnnkit.optim.Optimizer`): :meth:`step` averages the ``.grad`` of
      every parameter of its groups (a ``None`` gradient counts as zeros; a parameter with a
      gradient on any rank gets the average on all), writes the averages into ``.grad``, then
      steps. Call :meth:`synchronize` first when something must see the averaged gradients
      before the step (``nn.utils.clip_grad_norm_``); ``step`` then does not average again.

    ``weight=`` (this rank's number of samples in the step) makes the average exact when the
    ranks' batches differ in size: ``sum_k n_k g_k / sum_k n_k``; the default weighs ranks
    equally. Other attributes (``learning_rate``, ``iterations``, ``param_groups``,
    ``state_dict``, ...) are the wrapped optimizer's; give learning-rate schedulers the wrapped
    one (:attr:`optimizer`). Start every rank from the same weights and state:
    :func:`broadcast_model` / :func:`broadcast_parameters` and
    :func:`broadcast_optimizer_state`.

    Parameters
    ----------
    optimizer
        The optimizer to wrap.
    communicator
        An ``mpi4py.MPI.Comm`` (default: :func:`comm`).
    bucket_mb
        Largest all-reduce bucket in MB (default 25).

    Shapes
    ------
    Gradients have their parameter's shape and dtype.
    """

    def __init__(self, optimizer: Any, communicator: Any = None,
                 bucket_mb: float = _DEFAULT_BUCKET_MB) -> None:
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("optimizer: already a DistributedOptimizer (wrap the plain optimizer once)")
        if not isinstance(optimizer, (_optimizers.Optimizer, _optim.Optimizer)):
            raise TypeError(f"optimizer: expected an rnnkit.optimizers.Optimizer (Keras style) or an "
                            f"rnnkit.optim.Optimizer (PyTorch style), got {type(optimizer).__name__}")
        object.__setattr__(self, "_inner", optimizer)
        object.__setattr__(self, "averager", GradientAverager(communicator, bucket_mb))
        object.__setattr__(self, "_synced", False)

    @property
    def optimizer(self) -> Any:
        """The wrapped optimizer."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # learning_rate, iterations, param_groups...: the wrapped optimizer's
        setattr(self._inner, name, value)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self._inner!r})"

    # ---- Keras style -----------------------------------------------------------------------------
    def _require(self, kind: type, what: str) -> None:
        if not isinstance(self._inner, kind):
            style, name = (("Keras-style apply()/apply_gradients()", "rnnkit.optimizers.Optimizer")
                           if kind is _optimizers.Optimizer else
                           ("PyTorch-style step()/synchronize()/zero_grad()", "rnnkit.optim.Optimizer"))
            raise TypeError(f"{what}: {style} needs a wrapped {name}, this one wraps a "
                            f"{type(self._inner).__name__}")

    def apply(self, grads: Sequence[np.ndarray], variables: Sequence[np.ndarray], *,
              weight: float = 1.0) -> None:
        """Averages ``grads`` across ranks (weighted by ``weight``), then applies them to
        ``variables`` in place (the wrapped optimizer's ``apply``). ``grads`` are not modified.

        Shapes
        ------
        ``grads[i].shape == variables[i].shape``.
        """
        self._require(_optimizers.Optimizer, "apply")
        if len(grads) != len(variables):
            raise ValueError(f"grads: expected one gradient per variable ({len(variables)}), "
                             f"got {len(grads)}")
        averaged, _ = self.averager.average(list(grads), weight)
        self._inner.apply(averaged, variables)

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[np.ndarray, np.ndarray]], *,
                        weight: float = 1.0) -> None:
        """:meth:`apply` on ``(gradient, variable)`` pairs.

        Shapes
        ------
        Each gradient has its variable's shape.
        """
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs], weight=weight)

    # ---- PyTorch style ---------------------------------------------------------------------------
    def _params(self) -> List[Any]:
        return [p for g in self._inner.param_groups for p in g["params"]]

    def synchronize(self, *, weight: float = 1.0) -> None:
        """Averages every parameter's ``.grad`` across ranks now (weighted by ``weight``), in
        place; the next :meth:`step` then steps without averaging again.

        Shapes
        ------
        ``p.grad`` keeps ``p``'s shape.
        """
        self._require(_optim.Optimizer, "synchronize")
        params = self._params()
        present = [0.0 if p.grad is None else 1.0 for p in params]
        grads = [p.grad for p in params]
        averaged, sums = self.averager.average(grads, weight, present, like=[p.data for p in params])
        for p, avg, seen in zip(params, averaged, sums[1:]):
            if seen <= 0:
                continue  # no rank has a gradient for it: it stays None, as torch's optimizers skip it
            if p.grad is None or p.grad.shape != avg.shape or p.grad.dtype != avg.dtype:
                p.grad = np.array(avg, copy=True)
            else:
                np.copyto(p.grad, avg)
        object.__setattr__(self, "_synced", True)

    def step(self, closure: Optional[Callable[[], Any]] = None, *, weight: float = 1.0) -> Any:
        """Averages the gradients (unless :meth:`synchronize` already did since the last step),
        then steps the wrapped optimizer. ``closure`` runs first, as in torch.

        Shapes
        ------
        ``p.grad.shape == p.data.shape``.
        """
        self._require(_optim.Optimizer, "step")
        loss = closure() if closure is not None else None
        if not self._synced:
            self.synchronize(weight=weight)
        object.__setattr__(self, "_synced", False)
        self._inner.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self._require(_optim.Optimizer, "zero_grad")
        self._inner.zero_grad(set_to_none)


# ---- fit(distributed=True) -----------------------------------------------------------------------------

class ShardedArrayData(DataSource):
    """This rank's share of an :class:`~rnnkit._data.ArrayData`: each epoch draws the source's
    permutation from the shared generator (every rank draws the same), cuts it into global
    batches of ``size * batch_size`` samples and yields this rank's contiguous slice of each
    (:func:`shard_range` of the batch; empty for some ranks when a short last batch has fewer
    samples than ranks).

    Shapes
    ------
    Batches ``[n_k, ...]`` with ``sum_k n_k`` the global batch.
    """

    def __init__(self, source: ArrayData, rank_: int, size_: int) -> None:
        self.source, self.rank, self.size = source, int(rank_), int(size_)
        self.n = source.n
        self.batch_size = source.batch_size
        self.global_batch = source.batch_size * self.size
        self.steps = -(-self.n // self.global_batch)

    def epoch(self, rng: np.random.Generator) -> Iterator[Any]:
        order = rng.permutation(self.n) if self.source.shuffle else None
        for s in range(0, self.n, self.global_batch):
            lo, hi = shard_range(min(self.global_batch, self.n - s), self.rank, self.size)
            idx = slice(s + lo, s + hi) if order is None else order[s + lo:s + hi]
            yield self.source.batch(idx)


class _QuietCallbackList(CallbackList):
    """The callbacks of a rank other than 0: the same hooks with ``print`` output discarded."""

    def _quiet(self) -> Any:
        return contextlib.redirect_stdout(io.StringIO())

    def on_train_begin(self, logs: Any = None) -> None:
        with self._quiet():
            super().on_train_begin(logs)

    def on_train_end(self, logs: Any = None) -> None:
        with self._quiet():
            super().on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        with self._quiet():
            super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        with self._quiet():
            super().on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        with self._quiet():
            super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        with self._quiet():
            super().on_train_batch_end(batch, logs)


class TrainingSync:
    """What ``fit(distributed=True)`` does across ranks (see the module docstring); the training
    loop calls these methods at fixed points, in the same order on every rank.

    Parameters
    ----------
    communicator
        An ``mpi4py.MPI.Comm`` (default: :func:`comm`).

    Shapes
    ------
    Gradients as :class:`GradientAverager`; logs are scalars.
    """

    def __init__(self, communicator: Any = None) -> None:
        self.comm = _resolve(communicator)
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self.is_main = self.rank == 0
        self.averager = GradientAverager(self.comm)
        #: whether any callback (on any rank, as given) has batch hooks: then a batch hook that
        #: sets ``stop_training`` is agreed on after every batch (one tiny Allreduce)
        self.batch_hooks = False

    @property
    def layer_seed_salt(self) -> Optional[int]:
        """Mixed into the layers' dropout seeds so that ranks draw different masks (None on one
        rank)."""
        return self.rank if self.size > 1 else None

    def shard(self, source: DataSource, what: str = "x") -> DataSource:
        """Arrays: this rank's :class:`ShardedArrayData`. Another source is this rank's own
        data; its number of steps per epoch must be known and equal on every rank (checked)."""
        if isinstance(source, ArrayData):
            return ShardedArrayData(source, self.rank, self.size)
        steps = source.steps
        got = self.min_max(-1.0 if steps is None else float(steps))  # decided alike on every rank
        if got[0] < 0:
            raise ValueError(f"{what}: with distributed=True a generator needs steps_per_epoch (every rank "
                             "must run the same number of steps per epoch)")
        if got[0] != got[1]:
            raise ValueError(f"{what}: with distributed=True every rank must run the same number of steps "
                             f"per epoch; the ranks have between {int(got[0])} and {int(got[1])} "
                             "(give steps_per_epoch)")
        return source

    def callback_list(self, callbacks: Sequence[Callback], model: Any,
                      params: Dict[str, Any]) -> CallbackList:
        """Rank 0: all callbacks. Other ranks: all but the ones that write files
        (:data:`SAVING_CALLBACKS`), their printing silenced. Sets :attr:`batch_hooks` from the
        whole list, the same on every rank."""
        full = CallbackList(callbacks, model, params)
        self.batch_hooks = full.has_batch_hooks
        if self.is_main:
            return full
        return _QuietCallbackList([cb for cb in callbacks if not isinstance(cb, SAVING_CALLBACKS)],
                                  model, params)

    def start(self, model: Any, params: Sequence[np.ndarray], initial_epoch: int,
              base: int) -> Tuple[int, int]:
        """Rank 0's weights, optimizer state, first epoch and shuffling seed, on every rank."""
        broadcast_model(model, 0, self.comm)
        broadcast_optimizer_state(model.optimizer, params, 0, self.comm)
        ints = np.array([initial_epoch, base], dtype=np.int64)
        self.comm.Bcast(ints, root=0)
        return int(ints[0]), int(ints[1])

    def average_gradients(self, grads: Sequence[np.ndarray], n_local: int, value: float
                          ) -> Tuple[List[np.ndarray], float, int]:
        """The gradients averaged over the global batch (each rank's weighted by its samples),
        the global batch's loss and its number of samples."""
        averaged, sums = self.averager.average(grads, float(n_local), (value * n_local,))
        return averaged, float(sums[1]) / float(sums[0]), int(round(float(sums[0])))

    def min_max(self, value: float) -> Tuple[float, float]:
        """The smallest and largest of ``value`` over the ranks."""
        MPI = _mpi()
        mine = np.array([-float(value), float(value)])
        out = np.empty_like(mine)
        self.comm.Allreduce(mine, out, op=MPI.MAX)
        return -float(out[0]), float(out[1])

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        return self.min_max(1.0 if flag else 0.0)[1] > 0

    def reduce(self, metrics: Sequence[Any], *sums: float) -> Tuple[float, ...]:
        """Sums every metric's state (:meth:`~rnnkit.metrics.Metric.get_state`) over the ranks,
        in place, and the given floats; returns the summed floats. Metrics whose state has a
        shape only known after a batch (AUC ``multi_label``, F-scores) take it from the ranks
        that saw data."""
        MPI = _mpi()
        states = [m.get_state() for m in metrics]
        flat = [(k, a) for st in states for k, a in sorted(st.items())]
        ndims = [a.ndim for _, a in flat]
        if any(d > 0 for d in ndims):
            shapes = np.zeros(sum(ndims), dtype=np.int64)
            off = 0
            for _, a in flat:
                shapes[off:off + a.ndim] = a.shape
                off += a.ndim
            full = np.empty_like(shapes)
            self.comm.Allreduce(shapes, full, op=MPI.MAX)
            off = 0
            for st in states:
                for k in sorted(st):
                    a = st[k]
                    want = tuple(int(v) for v in full[off:off + a.ndim])
                    off += a.ndim
                    if a.shape != want:
                        if a.size:
                            raise ValueError(f"metrics: the ranks' {k!r} states have different shapes "
                                             f"({a.shape} here, {want} elsewhere)")
                        st[k] = np.zeros(want)
        sizes = [int(st[k].size) for st in states for k in sorted(st)]
        vec = np.empty(sum(sizes) + len(sums), dtype=np.float64)
        off = 0
        for st in states:
            for k in sorted(st):
                n = int(st[k].size)
                vec[off:off + n] = st[k].ravel()
                off += n
        vec[off:] = sums
        self.comm.Allreduce(MPI.IN_PLACE, vec, op=MPI.SUM)
        off = 0
        for m, st in zip(metrics, states):
            new = {}
            for k in sorted(st):
                n = int(st[k].size)
                new[k] = vec[off:off + n].reshape(st[k].shape)
                off += n
            m.set_state(new)
        return tuple(float(v) for v in vec[off:])

    def end_epoch(self, model: Any) -> None:
        """Rank 0's non-trainable weights (BatchNormalization's moving statistics) on every rank,
        so that the copies stay identical (PyTorch DDP's ``broadcast_buffers``)."""
        frozen = list(getattr(model, "non_trainable_weights", []) or [])
        if frozen:
            _broadcast(frozen, 0, self.comm, _DEFAULT_BUCKET_MB, "model.non_trainable_weights")


# ---- distributed inference ----------------------------------------------------------------------------

def _rows(a: Any) -> int:
    return int(a.shape[0]) if hasattr(a, "shape") else len(a)


def _slice_inputs(x: Any, lo: int, hi: int) -> Tuple[Any, int]:
    """``x[lo:hi]`` for an array (or array-like with ``shape`` and slicing), a list/tuple of them
    or a dict of them; and the number of samples."""
    if isinstance(x, dict):
        vals = list(x.values())
        if not vals:
            raise ValueError("x: expected at least one input array, got an empty dict")
        return {k: v[lo:hi] for k, v in x.items()}, _rows(vals[0])
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("x: expected at least one input array, got an empty list")
        return [v[lo:hi] for v in x], _rows(x[0])
    if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
        raise TypeError(f"x: expected an array, a list of arrays or a dict of arrays, got {type(x).__name__}")
    return x[lo:hi], _rows(x)


_MAXDIM = 8


def predict(model: Any, x: Any, batch_size: Optional[int] = None, root: int = 0,
            communicator: Any = None) -> Any:
    """Scores ``x`` across ranks: each rank predicts its contiguous slice (:func:`shard_range`)
    with ``model.predict`` and the root gathers every output in the original order
    (``Gatherv`` of whole rows, no pickling).

    Parameters
    ----------
    model
        The same model on every rank (:func:`broadcast_model` first if unsure).
    x
        The same inputs on every rank: an array, a list or a dict of arrays per model input. A
        rank reads only its slice, so a memory-mapped array (``np.load(path, mmap_mode="r")``)
        keeps each rank's memory to its share.
    batch_size
        Per-rank batch size of ``model.predict`` (default 32).
    root
        The rank that receives the results.

    Returns
    -------
    On the root, what ``model.predict(x)`` returns (an array, or a list per output); ``None`` on
    the other ranks.

    Shapes
    ------
    ``x``: ``[N, ...]`` per input -> ``[N, *output_shape]`` per output.
    """
    MPI = _mpi()
    from mpi4py.util.dtlib import from_numpy_dtype

    c = _resolve(communicator)
    me, p = int(c.Get_rank()), int(c.Get_size())
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < p:
        raise ValueError(f"root: expected a rank in [0, {p}), got {root!r}")
    _, n = _slice_inputs(x, 0, 0)
    lo_hi = np.array([-n, n], dtype=np.int64)
    c.Allreduce(MPI.IN_PLACE, lo_hi, op=MPI.MAX)
    if -lo_hi[0] != lo_hi[1]:
        raise ValueError(f"x: every rank must pass the same number of samples; they pass between "
                         f"{-int(lo_hi[0])} and {int(lo_hi[1])}")
    lo, hi = shard_range(n, me, p)
    n_out = len(model.outputs)
    local: List[Optional[np.ndarray]] = [None] * n_out
    if hi > lo:
        part, _ = _slice_inputs(x, lo, hi)
        res = model.predict(part, batch_size=batch_size, verbose=0)
        local = [np.ascontiguousarray(r) for r in (res if isinstance(res, list) else [res])]
    # every output's row shape and dtype, from the ranks that have rows (fixed-size int arrays)
    spec = np.zeros((n_out, _MAXDIM + 2), dtype=np.int64)
    for k, a in enumerate(local):
        if a is not None:
            if a.ndim - 1 > _MAXDIM:
                raise ValueError(f"model: output {k} has {a.ndim} dimensions, at most {_MAXDIM + 1} "
                                 "supported")
            spec[k, 0] = a.ndim - 1
            spec[k, 1] = _FLOATS.index(a.dtype) + 1 if a.dtype in _FLOATS else 0
            spec[k, 2:2 + a.ndim - 1] = a.shape[1:]
            if spec[k, 1] == 0:
                raise TypeError(f"model: output {k} has dtype {a.dtype}; expected float32 or float64")
    c.Allreduce(MPI.IN_PLACE, spec, op=MPI.MAX)
    bounds = [shard_range(n, r, p) for r in range(p)]
    counts = [b - a for a, b in bounds]
    displs = [a for a, _ in bounds]
    results: List[np.ndarray] = []
    for k in range(n_out):
        ndim, code = int(spec[k, 0]), int(spec[k, 1])
        row = tuple(int(v) for v in spec[k, 2:2 + ndim])
        dt = _FLOATS[code - 1]
        send = local[k] if local[k] is not None else np.empty((0,) + row, dtype=dt)
        if send.shape[1:] != row or send.dtype != dt:
            raise ValueError(f"model: output {k} has row shape {send.shape[1:]} {send.dtype} here, "
                             f"{row} {dt} on other ranks")
        out = np.empty((n,) + row, dtype=dt) if me == root else None
        row_elems = int(np.prod(row, dtype=np.int64))
        if row_elems == 0:
            if out is not None:
                results.append(out)
            continue
        rowtype = from_numpy_dtype(dt).Create_contiguous(row_elems).Commit()
        try:
            c.Gatherv([send, send.shape[0], rowtype],
                      [out, counts, displs, rowtype] if me == root else None, root=root)
        finally:
            rowtype.Free()
        if out is not None:
            results.append(out)
    if me != root:
        return None
    return results[0] if len(results) == 1 else results
