#!/usr/bin/env python3
"""The seed model (``examples/seed_keras.py``) trained on 2 MPI ranks reaches the accuracy of the
single-process fit with the same global batch.

Run::

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py bench/distributed_accuracy.py

Rank 0 first trains alone (``fit(batch_size=32)``, the other rank waits at a barrier), then both
ranks train from the same initial weights with ``fit(batch_size=16, distributed=True)``: the same
global batch of 32 and the same shuffled order. Printed: the final training loss and accuracy of
both, evaluated on all 1000 samples, and the largest weight difference (float32: the two differ
only by summation order, which grows over 320 Adam steps).

Shapes
------
x [1000, 20, 8] float32, y [1000, 20, 8] one-hot.
"""
from __future__ import annotations

import numpy as np

from rnnkit import distributed as dist
from rnnkit.layers import LSTM, Dense
from rnnkit.models import Sequential

SAMPLES, T, C, K, DELAY, EPOCHS, GLOBAL_BATCH = 1000, 20, 8, 8, 1, 10, 32


def data() -> tuple[np.ndarray, np.ndarray]:
    """The seed script's task: at every step, which feature was largest ``DELAY`` steps earlier."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, T, C)).astype(np.float32)
    source = np.maximum(np.arange(T) - DELAY, 0)
    return x, np.eye(K, dtype=np.float32)[np.argmax(x[:, source, :], axis=-1)]


def build() -> Sequential:
    np.random.seed(0)  # the same initial weights on every rank and in both runs
    model = Sequential([LSTM(64, return_sequences=True, input_shape=(T, C)), LSTM(32, return_sequences=True),
                        Dense(K, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def main() -> None:
    x, y = data()
    size = dist.size()
    single = None
    if dist.is_main():
        single = build()
        single.fit(x, y, epochs=EPOCHS, batch_size=GLOBAL_BATCH, seed=0, verbose=0)
    dist.barrier()
    model = build()
    model.fit(x, y, epochs=EPOCHS, batch_size=GLOBAL_BATCH // size, seed=0, verbose=0, distributed=True)
    if dist.is_main():
        assert single is not None
        loss1, acc1 = single.evaluate(x, y, verbose=0)
        loss2, acc2 = model.evaluate(x, y, verbose=0)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), model.get_weights()))
        print(f"1 process,  batch {GLOBAL_BATCH}:        loss {loss1:.4f}  accuracy {acc1:.4f}")
        print(f"{size} ranks x batch {GLOBAL_BATCH // size} (distributed): loss {loss2:.4f}  accuracy {acc2:.4f}")
        print(f"largest weight difference after {EPOCHS} epochs (float32): {diff:.2e}")


if __name__ == "__main__":
    main()
