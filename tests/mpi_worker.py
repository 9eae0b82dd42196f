"""Runs under ``mpiexec -n 2 python -m mpi4py tests/mpi_worker.py OUTDIR`` for
``tests/test_distributed.py``; the test imports the same builders to compute the one-process
references.

Every rank trains the same float64 models from the same initial weights (rank 1 first perturbs
its weights and optimizer state, which the broadcast at the start must undo) with
``fit(distributed=True)`` on a per-rank batch ``B``, the PyTorch-style NumPy loop with
``DistributedOptimizer``, and scores an array with ``distributed.predict``. Rank ``r`` writes
``OUTDIR/<case>_rank<r>.npz``.

Shapes
------
Keras case: ``x`` ``[N, T, C]`` float64, one-hot ``y`` ``[N, K]``; PyTorch case: ``x``
``[N, T, C]``, ``y`` ``[N, K]`` regression targets.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

T, C, H, K = 5, 3, 6, 3
B = 4  # per-rank batch
EPOCHS = 3
SEED = 7
# (optimizer, train samples): 37 = 4 full global batches of 8 and one of 5 (split 3/2);
# 33 leaves a last global batch of 1 sample (rank 1's share is empty)
KERAS_CASES = (("sgd", 37), ("adam", 33))


def keras_data(n: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, C))
    labels = (x[:, :, 0].sum(axis=1) > 0).astype(int) + (x[:, -1, 1] > 0.5).astype(int)
    return x, np.eye(K)[labels]


def keras_model(opt: str) -> Any:
    from rnnkit import metrics, optimizers
    from rnnkit.layers import LSTM, Dense
    from rnnkit.models import Sequential

    np.random.seed(3)
    model = Sequential([LSTM(H, input_shape=(T, C), dtype="float64"),
                        Dense(K, activation="softmax", dtype="float64")])
    optimizer = (optimizers.SGD(learning_rate=0.1, momentum=0.9) if opt == "sgd"
                 else optimizers.Adam(learning_rate=0.01))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy",
                  metrics=["accuracy", metrics.AUC(), metrics.F1Score(average="macro")])
    return model


def keras_fit(opt: str, n: int, batch_size: int, distributed: bool, csv_path: Optional[str] = None,
              perturb: bool = False) -> Tuple[Any, Dict[str, List[float]]]:
    from rnnkit import callbacks

    model = keras_model(opt)
    x, y = keras_data(n)
    xv, yv = keras_data(11, seed=1)
    if perturb:  # another rank's different start: weights and optimizer state
        params, _ = model.trainable_variables()
        rng = np.random.default_rng(99)
        model.optimizer.apply([rng.standard_normal(p.shape) for p in params], params)
    cbs: List[Any] = []
    if csv_path:
        cbs.append(callbacks.CSVLogger(csv_path))
        if opt == "adam":  # batch hooks on a callback that only rank 0 runs
            cbs.append(callbacks.JSONLogger(csv_path[:-4] + ".jsonl", log_batches=True))
    hist = model.fit(x, y, batch_size=batch_size, epochs=EPOCHS, seed=SEED, verbose=0,
                     validation_data=(xv, yv), callbacks=cbs, distributed=distributed)
    return model, hist.history


def float32_fit(batch_size: int, distributed: bool) -> Tuple[Any, Dict[str, List[float]]]:
    """A float32 model through steps_per_epoch (epochs running on through the reshuffled data)
    and validation_split."""
    from rnnkit.layers import GRU, Dense
    from rnnkit.models import Sequential

    np.random.seed(4)
    model = Sequential([GRU(H, input_shape=(T, C)), Dense(K, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = keras_data(45)
    hist = model.fit(x.astype(np.float32), y, batch_size=batch_size, epochs=EPOCHS, steps_per_epoch=3,
                     validation_split=0.25, seed=SEED, verbose=0, distributed=distributed)
    return model, hist.history


def torch_data(n: int = 29) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, T, C))
    return x, np.stack([x[:, :, 0].mean(axis=1), x[:, -1, 2]], axis=1)


def torch_train(rank: int, size: int, batch: int, steps: int = 12,
                perturb: bool = False) -> List[np.ndarray]:
    """The NumPy PyTorch-style loop: global batches of ``size * batch`` from a fixed
    permutation, this rank's slice of each, Adam; with ``size > 1`` through
    ``DistributedOptimizer`` after broadcasting the parameters and optimizer state."""
    from rnnkit import nn, optim

    x, y = torch_data()
    lstm = nn.LSTM(C, 8, batch_first=True, dtype=np.float64, seed=1)
    head = nn.Linear(8, 2, dtype=np.float64, seed=2)
    params = list(lstm.parameters()) + list(head.parameters())
    inner = optim.Adam(params, lr=0.02)
    opt: Any = inner
    if size > 1:
        from rnnkit import distributed as dist

        if perturb:
            rng = np.random.default_rng(rank)
            for p in params:
                p.data += rng.standard_normal(p.shape)
                p.grad = rng.standard_normal(p.shape)
            inner.step()
            inner.zero_grad()
        dist.broadcast_parameters(params)
        dist.broadcast_optimizer_state(inner)
        opt = dist.DistributedOptimizer(inner)
    loss_fn = nn.MSELoss()
    order = np.random.default_rng(4).permutation(len(x))
    g = size * batch
    s = 0
    for _ in range(steps):
        if s >= len(x):
            s = 0
        glob = order[s:s + g]
        s += g
        q, r = divmod(len(glob), size)
        lo = rank * q + min(rank, r)
        idx = glob[lo:lo + q + (1 if rank < r else 0)]
        opt.zero_grad()
        if len(idx):
            out, _ = lstm(x[idx])
            loss_fn(head(out[:, -1]), y[idx])
            d_last = head.backward(loss_fn.backward())
            d_out = np.zeros_like(out)
            d_out[:, -1] = d_last
            lstm.backward(d_out)
        if size > 1:
            opt.step(weight=len(idx))
        else:
            opt.step()
    return [p.data.copy() for p in params]


def predict_model() -> Any:
    from rnnkit.layers import GRU, Dense
    from rnnkit.models import Sequential

    np.random.seed(8)
    return Sequential([GRU(5, return_sequences=True, input_shape=(T, C)), Dense(2)])


def predict_data(n: int = 53) -> np.ndarray:
    return np.random.default_rng(6).standard_normal((n, T, C)).astype(np.float32)


class _Batches:
    """A PyDataset-like source with ``rank + 1`` batches: the ranks disagree on the steps."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        x, y = keras_data(4)
        return x, y


def bucket_arrays(rank: int) -> List[np.ndarray]:
    """Mixed float64/float32 gradients, larger than the 1 KB buckets of the bucket test."""
    shapes = [((30,), np.float64), ((500,), np.float32), ((300,), np.float64), ((7, 3), np.float32),
              ((2, 2), np.float64)]
    rng = np.random.default_rng(rank)
    return [rng.standard_normal(s).astype(d) for s, d in shapes]


def buckets(outdir: str, rank: int, size: int) -> None:
    """GradientAverager with 1 KB buckets: several per dtype, weights rank + 1, scalars."""
    from rnnkit import distributed as dist

    avg = dist.GradientAverager(bucket_mb=1 / 1024)
    out, sums = avg.average(bucket_arrays(rank), weight=rank + 1, scalars=[10.0 * rank, 1.0])
    np.savez(os.path.join(outdir, f"buckets_rank{rank}.npz"), sums=sums, count=avg.bucket_count,
             **{f"g{i}": g for i, g in enumerate(out)})


def errors(outdir: str, rank: int) -> None:
    """Mistakes that must raise the same clear error on every rank (never hang in a collective)."""
    import json

    from rnnkit import distributed as dist
    from rnnkit import optimizers
    from rnnkit.layers import Dense
    from rnnkit.models import Sequential

    got: Dict[str, str] = {}

    def catch(name: str, fn: Any, exc: Any) -> None:
        try:
            fn()
        except exc as e:
            got[name] = f"{type(e).__name__}: {e}"
        else:
            got[name] = "no error"

    catch("wrap", lambda: dist.DistributedOptimizer(object()), TypeError)
    keras_style = dist.DistributedOptimizer(optimizers.SGD())
    catch("style", lambda: keras_style.step(), TypeError)
    np.random.seed(0)
    different = Sequential([Dense(3 if rank == 0 else 4, input_shape=(2,))])
    catch("mismatch", lambda: dist.broadcast_model(different), ValueError)
    model = keras_model("sgd")
    catch("unequal_steps", lambda: model.fit(_Batches(rank + 1), epochs=1, verbose=0, distributed=True),
          ValueError)
    catch("generator_without_steps",
          lambda: model.fit((keras_data(4) for _ in range(2)), epochs=1, verbose=0, distributed=True),
          ValueError)
    with open(os.path.join(outdir, f"errors_rank{rank}.json"), "w") as f:
        json.dump(got, f)


def main(outdir: str) -> None:
    from rnnkit import distributed as dist

    dist.init()
    rank, size = dist.rank(), dist.size()
    for opt, n in KERAS_CASES:
        csv_path = os.path.join(outdir, f"keras_{opt}.csv")
        model, hist = keras_fit(opt, n, B, True, csv_path, perturb=rank == 1)
        arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"h_{k}": np.asarray(v, dtype=np.float64) for k, v in hist.items()})
        np.savez(os.path.join(outdir, f"keras_{opt}_rank{rank}.npz"), **arrays)
    model, hist = float32_fit(B, True)
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"h_{k}": np.asarray(v, dtype=np.float64) for k, v in hist.items()})
    assert all(type(v) is float for v in hist["loss"] + hist["val_loss"]), "logs: Python floats"
    np.savez(os.path.join(outdir, f"float32_rank{rank}.npz"), **arrays)
    ws = torch_train(rank, size, B, perturb=rank == 1)
    np.savez(os.path.join(outdir, f"torch_rank{rank}.npz"), **{f"w{i}": w for i, w in enumerate(ws)})
    model = predict_model()
    if rank == 1:  # a different model on rank 1: broadcast_model must fix it
        model.set_weights([w + 1.0 for w in model.get_weights()])
    dist.broadcast_model(model)
    res = dist.predict(model, predict_data(), batch_size=8)
    if rank == 0:
        np.savez(os.path.join(outdir, "predict_rank0.npz"), y=res,
                 weights=np.concatenate([w.ravel() for w in model.get_weights()]))
    else:
        assert res is None, "distributed.predict: only the root gets the results"
    stats = dist.stats()  # before the small-bucket test
    np.savez(os.path.join(outdir, f"stats_rank{rank}.npz"),
             **{k: np.asarray(v) for k, v in stats.items()})
    errors(outdir, rank)
    buckets(outdir, rank, size)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
