#!/usr/bin/env python3
"""The theory rnnkit implements, shown: vanishing and exploding gradients, and why gates help.

1. The adding problem (Hochreiter & Schmidhuber 1997). Each sequence has T steps of two
   channels: a random value in [0, 1) and a marker that is 1 at exactly two steps (one in each
   half) and 0 elsewhere; the target is the sum of the two marked values. Predicting the mean
   (1.0) gives MSE 1/6 ~ 0.167; solving it needs a memory across up to T steps. An Elman RNN,
   an LSTM and a GRU (same width, Adam 1e-2 with clipnorm 1) are trained at T = 50, 100 and 200.
   Figure: learning curves (validation MSE per epoch).
2. Gradient flow (rnnkit.diagnostics): ||dL/dh_t|| for t = 1..T of the trained RNN and LSTM at
   T = 100 on a validation batch (log scale). The Elman RNN's gradient decays geometrically going
   back in time; the LSTM's additive cell path keeps it. Printed: ||dL/dh_1|| / ||dL/dh_T||.
3. Exploding gradients: an Elman RNN whose recurrent kernel is scaled so that its spectral
   radius is 3, trained with and without ``clipnorm=1.0``; figure: the training loss per batch.

Data: generated (the recipe above, ``make_adding``), nothing downloaded.

Run::

    python examples/adding_problem.py [--quick] [--out examples/figures]

``--quick`` runs T = 50 only (about a minute on 2 cores); the full run T = 50, 100, 200 and
the gradient flow at T = 100.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Dict, List, Tuple

import numpy as np

import rnnkit
from rnnkit import callbacks, diagnostics, optimizers
from rnnkit.layers import GRU, LSTM, Dense, SimpleRNN
from rnnkit.models import Sequential
from rnnkit.utils import set_random_seed


def make_adding(n: int, T: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``x: [n, T, 2]`` (values, markers) and ``y: [n, 1]`` (the sum of the two marked values)."""
    rng = np.random.default_rng(seed)
    values = rng.random((n, T))
    markers = np.zeros((n, T))
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[np.arange(n), first] + values[np.arange(n), second])[:, None].astype(np.float32)
    return x, y


def build(cell: str, T: int, units: int, seed: int, clipnorm: float = 0.0) -> Sequential:
    set_random_seed(seed)
    layer = {"rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}[cell](units, input_shape=(T, 2))
    model = Sequential([layer, Dense(1)])
    opt = optimizers.Adam(1e-2, clipnorm=clipnorm) if clipnorm else optimizers.Adam(1e-2)
    model.compile(optimizer=opt, loss="mse")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="T = 50 and 100, fewer samples and epochs")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "figures"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(a.out, exist_ok=True)
    Ts = [50] if a.quick else [50, 100, 200]
    T_flow = Ts[0] if a.quick else 100
    n_train, epochs, units = (3000, 6, 32) if a.quick else (6000, 12, 32)
    baseline = 1.0 / 6.0
    curves: Dict[Tuple[str, int], List[float]] = {}
    models: Dict[Tuple[str, int], Sequential] = {}
    t0 = time.perf_counter()
    for T in Ts:
        x, y = make_adding(n_train, T, a.seed)
        xv, yv = make_adding(500, T, a.seed + 1)
        for cell in ("rnn", "lstm", "gru"):
            m = build(cell, T, units, a.seed, clipnorm=1.0)
            h = m.fit(x, y, epochs=epochs, batch_size=50, validation_data=(xv, yv), verbose=0,
                      callbacks=[callbacks.EarlyStopping(monitor="val_loss", patience=epochs)])
            curves[(cell, T)] = h.history["val_loss"]
            models[(cell, T)] = m
            print(f"adding T={T:3d} {cell:4s}: val MSE {min(h.history['val_loss']):.4f} "
                  f"(baseline {baseline:.4f})", flush=True)

    # ---- figure 1: learning curves ---------------------------------------------------------------
    fig, axes = plt.subplots(1, len(Ts), figsize=(4.2 * len(Ts), 3.4), sharey=True)
    for ax, T in zip(np.atleast_1d(axes), Ts):
        for cell, style in (("rnn", "-"), ("lstm", "--"), ("gru", ":")):
            ax.plot(np.arange(1, epochs + 1), curves[(cell, T)], style, label=cell.upper())
        ax.axhline(baseline, color="grey", lw=0.8, label="predict 1.0")
        ax.set_yscale("log")
        ax.set_title(f"adding problem, T = {T}")
        ax.set_xlabel("epoch")
    np.atleast_1d(axes)[0].set_ylabel("validation MSE")
    np.atleast_1d(axes)[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "adding_curves.png"), dpi=90)

    # ---- figure 2: gradient flow of the trained RNN and LSTM ---------------------------------------
    xv, yv = make_adding(256, T_flow, a.seed + 2)
    flows = {cell.upper(): diagnostics.gradient_flow(models[(cell, T_flow)], xv, yv, training_mode=False)
             for cell in ("rnn", "lstm")}
    ratios = {k: next(iter(f.layers.values())).ratio_first_to_last() for k, f in flows.items()}
    diagnostics.plot_gradient_flow(flows, path=os.path.join(a.out, "adding_gradient_flow.png"),
                                   title=f"||dL/dh_t|| through time, adding problem T = {T_flow}")
    for k, r in ratios.items():
        print(f"gradient flow T={T_flow} {k:4s}: ||dL/dh_1|| / ||dL/dh_T|| = {r:.2e}")

    # ---- figure 3: exploding gradients and clipnorm ----------------------------------------------
    x, y = make_adding(1000, 50, a.seed + 3)
    losses: Dict[str, List[float]] = {}
    for label, clip in (("no clipping", 0.0), ("clipnorm=1.0", 1.0)):
        m = build("rnn", 50, 32, a.seed, clipnorm=clip)
        layer = m.layers[0]
        w = layer.get_weights()
        w[1] = w[1] * (3.0 / max(np.max(np.abs(np.linalg.eigvals(w[1]))), 1e-9))  # spectral radius 3
        layer.set_weights(w)
        log = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs, store=losses.setdefault(label, []):
                                       store.append(float(logs["loss"])))
        m.fit(x, y, epochs=3 if a.quick else 6, batch_size=50, verbose=0, callbacks=[log])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, v in losses.items():
        ax.semilogy(np.arange(1, len(v) + 1), v, label=label)
    ax.set_xlabel("batch")
    ax.set_ylabel("running training MSE")
    ax.set_title("Elman RNN, recurrent spectral radius 3")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "exploding_gradients.png"), dpi=90)
    print(f"exploding: final running loss without clipping {losses['no clipping'][-1]:.3f}, "
          f"with clipnorm {losses['clipnorm=1.0'][-1]:.3f}")

    best_lstm = min(curves[("lstm", T_flow)])
    print(f"RESULT lstm_val_mse_T{T_flow}={best_lstm:.4f} baseline={baseline:.4f} "
          f"rnn_grad_ratio_T{T_flow}={ratios['RNN']:.2e} lstm_grad_ratio_T{T_flow}={ratios['LSTM']:.2e} "
          f"seconds={time.perf_counter() - t0:.0f} threads={rnnkit.get_num_threads()}")


if __name__ == "__main__":
    main()
