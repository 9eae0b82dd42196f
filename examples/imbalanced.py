#!/usr/bin/env python3
"""Rare-event detection on sensor sequences, with and without ``class_weight``.

Data (generated, nothing downloaded): ``make_data(n, seed)`` below is the whole recipe.
Every sample is 64 steps of 3 noisy sensor channels (a slow random-phase sine per channel plus
Gaussian noise, sd 0.5). About 4% of the samples (class 1, the "fault") also carry a 10-step burst
of a faster oscillation, amplitude 0.6, on one random channel at a random position: about as
large as the noise, so it must be found in time, not by amplitude alone.

The same GRU classifier is trained twice from the same initial weights and the same batch order:
once plainly, once with ``class_weight`` from :func:`balanced_weights` (Keras's and
scikit-learn's "balanced" rule, ``n / (k * count)``). Reported: recall of each class on a held-out
set (threshold 0.5), and the balanced accuracy (their mean).

Run::

    python examples/imbalanced.py [--epochs 8] [--n 6000]
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, Tuple

import numpy as np

import rnnkit
from rnnkit.layers import GRU, Dense, Input
from rnnkit.models import Model
from rnnkit.utils import set_random_seed, split_dataset


def make_data(n: int, seed: int, fault_rate: float = 0.04, T: int = 48
              ) -> Tuple[np.ndarray, np.ndarray]:
    """``x: [n, T, 3]`` float32 and ``y: [n]`` int64 (1 = fault), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    freq = rng.uniform(0.03, 0.08, (n, 1, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 3))
    x = 0.5 * np.sin(2 * np.pi * freq * t[None, :, None] + phase) + rng.normal(0, 0.3, (n, T, 3))
    y = (rng.random(n) < fault_rate).astype(np.int64)
    for i in np.flatnonzero(y):
        start = rng.integers(0, T - 10)
        ch = rng.integers(0, 3)
        x[i, start:start + 10, ch] += 0.8  # a stuck-high episode of one sensor
    return x.astype(np.float32), y


def balanced_weights(y: np.ndarray) -> Dict[int, float]:
    """``{class: n / (k * count)}``: every class carries the same total weight."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): float(len(y) / (len(classes) * k)) for c, k in zip(classes, counts)}


def build(seed: int) -> Model:
    set_random_seed(seed)  # same initial weights and batch order for both runs
    inp = Input(shape=(None, 3))
    h = GRU(32)(inp)
    out = Dense(1, activation="sigmoid")(h)
    model = Model(inp, out)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def recalls(model: Model, x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    pred = (model.predict(x, batch_size=256, verbose=0)[:, 0] > 0.5).astype(np.int64)
    return tuple(float(np.mean(pred[y == c] == c)) for c in (0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6000, help="samples (train + test)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    x, y = make_data(a.n, a.seed)
    (x_tr, y_tr), (x_te, y_te) = split_dataset((x, y), left_size=0.75, shuffle=True, seed=a.seed)
    cw = balanced_weights(y_tr)
    print(f"{len(y_tr)} training samples ({int(y_tr.sum())} faults), {len(y_te)} test samples "
          f"({int(y_te.sum())} faults); class_weight = "
          + ", ".join(f"{k}: {v:.2f}" for k, v in cw.items()))
    print(f"rnnkit {rnnkit.__version__}, {rnnkit.get_num_threads()} threads\n")
    print(f"{'run':<22}{'recall normal':>15}{'recall fault':>14}{'balanced acc':>14}{'s/epoch':>9}")
    for label, weights in (("plain", None), ("class_weight", cw)):
        model = build(a.seed)
        t0 = time.perf_counter()
        model.fit(x_tr, y_tr, epochs=a.epochs, batch_size=64, class_weight=weights, verbose=0)
        per_epoch = (time.perf_counter() - t0) / a.epochs
        r0, r1 = recalls(model, x_te, y_te)
        print(f"{label:<22}{r0:>15.3f}{r1:>14.3f}{(r0 + r1) / 2:>14.3f}{per_epoch:>9.2f}")


if __name__ == "__main__":
    main()
