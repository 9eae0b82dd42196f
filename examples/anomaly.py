#!/usr/bin/env python3
"""Anomaly detection in an arterial blood-pressure trace with an LSTM trained on normal data only.

Data (shipped inside the ``aeon`` wheel under ``aeon/datasets/data/KDD-TSAD_135``, nothing
downloaded): ``aeon.datasets.load_kdd_tsad_135`` -- series 135 of the UCR Time Series Anomaly
Archive (KDD Cup 2021, "InternalBleeding16"): 7501 samples of an arterial blood-pressure
waveform, about 40 heartbeats, with one labelled anomaly (12 samples of jitter, steps 4187-4198).
``split="train"`` is its first 1200 samples, which the archive guarantees to be normal; the
model sees nothing else. Values are standardised with the training part's mean and deviation.

Model: an LSTM "gap filler" -- every sample is predicted from the samples before it (an ``LSTM``
reading forwards up to ``t - 1``) and the samples after it (the backward half of a
``Bidirectional`` LSTM reading from the end down to ``t + 1``), never from itself; the two states
are concatenated and a ``TimeDistributed(Dense(1))`` predicts the value. Seeing both sides makes the
onset of the next heartbeat predictable, which a forward-only forecaster cannot know. It is
trained (mean squared error) on overlapping 128-sample windows of the training part, then run
over the whole series in one call. The anomaly score is the absolute prediction error, smoothed
by a moving mean over ``--smooth`` samples (default 4).

Baselines, scored the same way (same smoothing, same threshold rule):

- z-score: ``|x - mean| / std`` of the raw value (the textbook detector);
- naive forecast error: ``|x_t - x_(t-1)|``, the error of "the next value equals this one".

Reported on the test part (after the 1200 training samples): ROC AUC per sample; the *margin*:
the highest score within 50 samples of the labelled anomaly over the highest score anywhere else
(above 1 means a threshold exists that flags the anomaly and nothing else; larger is safer);
and precision, recall and F1 per sample at the threshold "largest score seen on the normal
training part" (no label is used to set it).

Figures (``--out``, default ``examples/figures/``): ``anomaly.png`` (the series with the true
anomaly, the LSTM's score and the z-score with their thresholds, a zoom on the anomaly) and
``anomaly_training.png`` (loss and val_loss per epoch).

Run::

    python examples/anomaly.py            # full: 60 epochs, under a minute on 2 cores
    python examples/anomaly.py --quick    # 20 epochs

It prints ``RESULT test_auc=... baseline=...`` (the z-score's) with both margins.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from rnnkit import optimizers
from rnnkit.layers import LSTM, Bidirectional, Concatenate, Dense, Input, TimeDistributed
from rnnkit.models import Model
from rnnkit.utils import set_random_seed

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 50  # samples around the labelled anomaly that count as "the anomaly" for the margin
EDGE = 16       # samples at both ends of the series without full context: not scored for thresholds


@dataclass
class Scores:
    """One detector's evaluation on the test part."""

    auc: float
    margin: float
    precision: float
    recall: float
    f1: float
    threshold: float


def load() -> Tuple[np.ndarray, np.ndarray, int]:
    """The whole series ``[T]``, its labels ``[T]`` (1 = anomaly) and the length of the normal
    training part."""
    from aeon.datasets import load_kdd_tsad_135  # the data package

    x, y = load_kdd_tsad_135(split="test")  # the whole series; "train" is its normal prefix
    x_train, _ = load_kdd_tsad_135(split="train")
    assert np.array_equal(x[:len(x_train)], x_train)
    return x.astype(np.float64), y.astype(np.int64), len(x_train)


def gap_windows(z: np.ndarray, length: int, stride: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training triples from windows ``w = z[s:s + length]``: the past ``w[:-2]``, the future
    ``w[2:]`` and the targets ``w[1:-1]``, each ``[n, length - 2, 1]``. Step ``i`` of the past
    ends at the sample before target ``i``; step ``i`` of the future starts just after it."""
    starts = np.arange(0, len(z) - length + 1, stride)
    w = np.stack([z[s:s + length] for s in starts])[..., None].astype(np.float32)
    return w[:, :-2], w[:, 2:], w[:, 1:-1]


def build(units: int, lr: float) -> Model:
    past = Input(shape=(None, 1), name="past")
    future = Input(shape=(None, 1), name="future")
    fwd = LSTM(units, return_sequences=True, name="forward")(past)
    # Bidirectional aligns its backward outputs with the input steps; only that half is used
    _, bwd = Bidirectional(LSTM(units, return_sequences=True), merge_mode=None, name="backward")(future)
    out = TimeDistributed(Dense(1), name="value")(Concatenate()([fwd, bwd]))
    model = Model([past, future], out, name="gap_filler")
    model.compile(optimizer=optimizers.Adam(learning_rate=lr), loss="mse")
    return model


def smooth(s: np.ndarray, width: int) -> np.ndarray:
    return np.convolve(s, np.ones(width) / width, mode="same") if width > 1 else s


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(score: np.ndarray, y: np.ndarray, n_train: int) -> Scores:
    """Metrics on the test part ``[n_train, T)``; the threshold is the largest score on the
    training part (its ends excluded)."""
    threshold = float(score[EDGE:n_train - EDGE].max())
    s, lab = score[n_train:-EDGE], y[n_train:-EDGE]
    idx = np.flatnonzero(lab)
    near = np.zeros(len(lab), bool)
    near[max(idx[0] - TOLERANCE, 0):idx[-1] + TOLERANCE + 1] = True
    flagged = s > threshold
    tp = int(np.sum(flagged & (lab == 1)))
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / int(lab.sum())
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return Scores(roc_auc(lab, s), float(s[near].max() / s[~near].max()), precision, recall, f1, threshold)


def plot(x: np.ndarray, y: np.ndarray, n_train: int, scores: Dict[str, np.ndarray],
         results: Dict[str, Scores], history: Dict[str, List[float]], out_dir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    idx = np.flatnonzero(y)
    t = np.arange(len(x))
    fig = plt.figure(figsize=(11, 6))
    grid = fig.add_gridspec(3, 2, width_ratios=[3, 1])
    ax_x = fig.add_subplot(grid[0, 0])
    ax_s = fig.add_subplot(grid[1, 0], sharex=ax_x)
    ax_z = fig.add_subplot(grid[2, 0], sharex=ax_x)
    ax_zoom = fig.add_subplot(grid[:, 1])
    ax_x.plot(t, x, color="0.25", lw=0.6)
    ax_x.axvspan(0, n_train, color="tab:blue", alpha=0.08, label="normal training part")
    ax_x.set_ylabel("pressure")
    ax_x.set_title("UCR anomaly archive #135 (aeon): arterial blood pressure", fontsize=10)
    for ax, key, color in ((ax_s, "LSTM gap filler", "tab:red"), (ax_z, "z-score", "tab:gray")):
        r = results[key]
        ax.plot(t, scores[key], color=color, lw=0.7)
        ax.axhline(r.threshold, color="black", ls="--", lw=0.8, label="threshold (max on training part)")
        ax.set_ylabel("score")
        ax.set_title(f"{key}: ROC AUC {r.auc:.4f}, margin {r.margin:.2f}, F1 {r.f1:.2f}", fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    for ax in (ax_x, ax_s, ax_z):
        ax.axvspan(idx[0], idx[-1] + 1, color="tab:red", alpha=0.3, lw=0,
                   label="true anomaly" if ax is ax_x else None)
    ax_x.legend(loc="upper left", fontsize=7)
    ax_z.set_xlabel("sample")
    lo, hi = idx[0] - 150, idx[-1] + 150
    zoom = slice(lo, hi)
    ax_zoom.plot(t[zoom], x[zoom], color="0.25", lw=1)
    ax_zoom.axvspan(idx[0], idx[-1] + 1, color="tab:red", alpha=0.3, lw=0)
    ax2 = ax_zoom.twinx()
    ax2.plot(t[zoom], scores["LSTM gap filler"][zoom], color="tab:red", lw=1)
    ax2.axhline(results["LSTM gap filler"].threshold, color="black", ls="--", lw=0.8)
    ax2.set_ylabel("LSTM score", color="tab:red")
    ax_zoom.set_title("zoom: the labelled anomaly", fontsize=10)
    ax_zoom.set_xlabel("sample")
    fig.tight_layout()
    main_path = os.path.join(out_dir, "anomaly.png")
    fig.savefig(main_path, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised)")
    ax.set_title("LSTM gap filler: training curve")
    ax.legend()
    fig.tight_layout()
    curve_path = os.path.join(out_dir, "anomaly_training.png")
    fig.savefig(curve_path, dpi=80)
    plt.close(fig)
    return [main_path, curve_path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (fewer epochs)")
    ap.add_argument("--epochs", type=int, default=None, help="default 60, --quick 20")
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--window", type=int, default=128, help="training window, samples")
    ap.add_argument("--smooth", type=int, default=4, help="moving-mean width of every score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory for the PNGs")
    a = ap.parse_args()
    epochs = a.epochs or (20 if a.quick else 60)
    t0 = time.perf_counter()
    set_random_seed(a.seed)

    x, y, n_train = load()
    mu, sd = x[:n_train].mean(), x[:n_train].std()
    z = (x - mu) / sd
    idx = np.flatnonzero(y)
    print(f"KDD-TSAD 135: {len(x)} samples, normal training part {n_train}, labelled anomaly at "
          f"{idx[0]}-{idx[-1]} ({len(idx)} samples)")

    past, future, target = gap_windows(z[:n_train], a.window, stride=8)
    model = build(a.units, lr=5e-3)
    history = model.fit([past, future], target, epochs=epochs, batch_size=16, validation_split=0.2,
                        verbose=0)
    zf = z.astype(np.float32)[None, :, None]
    pred = model.predict([zf[:, :-2], zf[:, 2:]], verbose=0)[0, :, 0]
    error = np.zeros(len(x))
    error[1:-1] = np.abs(pred - z[1:-1])

    raw = {"LSTM gap filler": error, "z-score": np.abs(z), "naive forecast error": np.r_[0.0, np.abs(np.diff(z))]}
    scores = {k: smooth(v, a.smooth) for k, v in raw.items()}
    results = {k: evaluate(v, y, n_train) for k, v in scores.items()}
    print(f"\n{'detector':<22}{'ROC AUC':>9}{'margin':>8}{'precision':>11}{'recall':>8}{'F1':>6}")
    for k, r in results.items():
        print(f"{k:<22}{r.auc:>9.4f}{r.margin:>8.2f}{r.precision:>11.2f}{r.recall:>8.2f}{r.f1:>6.2f}")
    paths = plot(x, y, n_train, scores, results, history.history, a.out)
    print("figures: " + ", ".join(os.path.relpath(p) for p in paths))
    m, zs, nv = results["LSTM gap filler"], results["z-score"], results["naive forecast error"]
    print(f"RESULT test_auc={m.auc:.4f} baseline={zs.auc:.4f} (z-score) margin={m.margin:.2f} "
          f"baseline_margin={zs.margin:.2f} naive_forecast_margin={nv.margin:.2f} f1={m.f1:.2f} "
          f"baseline_f1={zs.f1:.2f} time={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
