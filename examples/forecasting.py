#!/usr/bin/env python3
"""Multi-step forecasting of the Mauna Loa CO2 record with a GRU, against naive baselines.

Data (shipped inside the ``statsmodels`` wheel, nothing downloaded):
``statsmodels.datasets.co2`` -- weekly atmospheric CO2 (ppm) at Mauna Loa, March 1958 to December
2001 (2284 weeks, 59 missing). Recipe: monthly means (``resample("MS").mean()``, 526 months), the
5 months without any measurement filled by linear interpolation. The last ``--test-years`` years
(default 6) are the held-out tail: no training window touches them.

Task: from the last ``--window`` months (default 48) forecast the next ``--horizon`` months
(default 24) in one shot (direct multi-output). Every window is expressed relative to its last
observed value and divided by one scale (the training windows' standard deviation), so the
network learns the seasonal shape and the trend, not the level. Inputs per month: the relative
value and the month of the year as ``(sin, cos)``.

Model: ``GRU(64) -> Dense(horizon)``, Adam, mean squared error, ``validation_split`` for the
training curve.

Evaluation: a forecast from every month of the tail that still has ``horizon`` months of truth
after it (rolling origin), RMSE and MAPE over all of them, against

- naive: every future month equals the last observed month;
- seasonal naive: every future month equals the same month of the last observed year.

Figures (``--out``, default ``examples/figures/``): ``forecasting.png`` (the series, the
training window, the last held-out forecast against the truth) and
``forecasting_training.png`` (loss and val_loss per epoch).

Run::

    python examples/forecasting.py            # full: 60 epochs, about a minute on 2 cores
    python examples/forecasting.py --quick    # 20 epochs

It prints ``RESULT test_rmse=... baseline=...`` (the baseline is the better of the two naive
forecasts on the same origins).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from rnnkit import optimizers
from rnnkit.layers import GRU, Dense, Input
from rnnkit.models import Model
from rnnkit.utils import set_random_seed

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Series:
    """A monthly series: ``values [T]`` (ppm) and ``months [T]`` (``numpy.datetime64[M]``)."""

    values: np.ndarray
    months: np.ndarray


def load_co2_monthly() -> Series:
    """Monthly mean CO2 from statsmodels' weekly record, gaps linearly interpolated."""
    import statsmodels.api as sm  # the data package; imported here so --help works without it

    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="linear")
    months = monthly.index.values.astype("datetime64[M]")
    return Series(monthly.to_numpy(dtype=np.float64), months)


def month_features(months: np.ndarray) -> np.ndarray:
    """``[T, 2]``: the month of the year as a point on the unit circle."""
    m = (months.astype(np.int64) % 12).astype(np.float64)
    return np.stack([np.sin(2 * np.pi * m / 12), np.cos(2 * np.pi * m / 12)], axis=1)


def make_windows(s: Series, window: int, horizon: int, origins: np.ndarray, scale: float
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Inputs ``[n, window, 3]`` and targets ``[n, horizon]`` for forecast origins ``origins``.

    Origin ``t`` means the last observed month is ``t - 1``: the input is months
    ``[t - window, t)``, the target months ``[t, t + horizon)``, both minus the value at
    ``t - 1`` and divided by ``scale``.
    """
    feats = month_features(s.months)
    x = np.empty((len(origins), window, 3), np.float32)
    y = np.empty((len(origins), horizon), np.float32)
    for i, t in enumerate(origins):
        last = s.values[t - 1]
        x[i, :, 0] = (s.values[t - window:t] - last) / scale
        x[i, :, 1:] = feats[t - window:t]
        y[i] = (s.values[t:t + horizon] - last) / scale
    return x, y


def naive(s: Series, origins: np.ndarray, horizon: int) -> np.ndarray:
    """``[n, horizon]``: the last observed value repeated."""
    return np.repeat(s.values[origins - 1][:, None], horizon, axis=1)


def seasonal_naive(s: Series, origins: np.ndarray, horizon: int, period: int = 12) -> np.ndarray:
    """``[n, horizon]``: month ``t + h`` gets the value of the same month in the last observed
    year, ``t + h - period * ceil((h + 1) / period)``."""
    h = np.arange(horizon)
    lag = period * ((h // period) + 1)
    return s.values[origins[:, None] + h[None, :] - lag[None, :]]


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def mape(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute percentage error, in percent."""
    return float(100 * np.mean(np.abs(pred - truth) / np.abs(truth)))


def build(window: int, horizon: int, units: int, lr: float) -> Model:
    inp = Input(shape=(window, 3))
    h = GRU(units)(inp)
    out = Dense(horizon)(h)
    model = Model(inp, out, name="co2_forecaster")
    model.compile(optimizer=optimizers.Adam(learning_rate=lr), loss="mse")
    return model


def plot(s: Series, train_end: int, origin: int, forecast: np.ndarray, baselines: Dict[str, np.ndarray],
         window: int, history: Dict[str, List[float]], out_dir: str) -> List[str]:
    """Writes the forecast figure and the training curves; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    horizon = len(forecast)
    t = s.months.astype("datetime64[D]")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.2, 1]})
    ax0.plot(t, s.values, color="0.3", lw=0.8, label="monthly CO2")
    ax0.axvspan(t[0], t[train_end - 1], color="tab:blue", alpha=0.08, label="training months")
    ax0.axvspan(t[train_end], t[-1], color="tab:orange", alpha=0.12, label="held-out tail")
    ax0.set_ylabel("CO2 (ppm)")
    ax0.set_title("Mauna Loa CO2, 1958-2001 (statsmodels)")
    ax0.legend(loc="upper left", fontsize=8)
    lo = origin - window
    ax1.plot(t[lo:origin], s.values[lo:origin], color="0.3", lw=1.2, label=f"input window ({window} months)")
    ax1.plot(t[origin:origin + horizon], s.values[origin:origin + horizon], color="black", lw=1.6,
             label="truth")
    ax1.plot(t[origin:origin + horizon], forecast, color="tab:red", lw=1.6, marker="o", ms=2.5,
             label="GRU forecast")
    styles = {"naive": ":", "seasonal naive": "--"}
    for name, pred in baselines.items():
        ax1.plot(t[origin:origin + horizon], pred, color="tab:gray", ls=styles.get(name, "-."), lw=1.2,
                 label=name)
    ax1.axvline(t[origin], color="0.6", lw=0.8)
    ax1.set_title(f"{horizon}-month forecast from {str(s.months[origin - 1])}")
    ax1.legend(loc="upper left", fontsize=8)
    for ax in (ax0, ax1):
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    main_path = os.path.join(out_dir, "forecasting.png")
    fig.savefig(main_path, dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled)")
    ax.set_title("GRU forecaster: training curve")
    ax.legend()
    fig.tight_layout()
    curve_path = os.path.join(out_dir, "forecasting_training.png")
    fig.savefig(curve_path, dpi=80)
    plt.close(fig)
    return [main_path, curve_path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (fewer epochs)")
    ap.add_argument("--epochs", type=int, default=None, help="default 60, --quick 20")
    ap.add_argument("--window", type=int, default=48, help="input months")
    ap.add_argument("--horizon", type=int, default=24, help="months forecast")
    ap.add_argument("--test-years", type=int, default=6, help="held-out tail, years")
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory for the PNGs")
    a = ap.parse_args()
    epochs = a.epochs or (20 if a.quick else 60)
    t0 = time.perf_counter()
    set_random_seed(a.seed)

    s = load_co2_monthly()
    T, W, H = len(s.values), a.window, a.horizon
    train_end = T - 12 * a.test_years  # first held-out month
    train_origins = np.arange(W, train_end - H + 1)  # targets end before the tail
    test_origins = np.arange(train_end, T - H + 1)
    # one scale for inputs and targets: the spread of (value - last value) over training windows
    x_raw, y_raw = make_windows(s, W, H, train_origins, 1.0)
    scale = float(np.std(np.concatenate([x_raw[:, :, 0].ravel(), y_raw.ravel()])))
    x_tr, y_tr = make_windows(s, W, H, train_origins, scale)
    x_te, _ = make_windows(s, W, H, test_origins, scale)
    truth = np.stack([s.values[t:t + H] for t in test_origins])
    print(f"CO2 monthly {s.months[0]}..{s.months[-1]} ({T} months); {len(train_origins)} training "
          f"windows up to {s.months[train_end - 1]}, {len(test_origins)} forecast origins in the "
          f"held-out tail; window {W}, horizon {H}")

    model = build(W, H, a.units, lr=3e-3)
    history = model.fit(x_tr, y_tr, epochs=epochs, batch_size=32, validation_split=0.15, verbose=0)
    pred = model.predict(x_te, verbose=0).astype(np.float64) * scale + s.values[test_origins - 1][:, None]

    base = {"naive": naive(s, test_origins, H), "seasonal naive": seasonal_naive(s, test_origins, H)}
    print(f"\n{'forecast':<18}{'RMSE (ppm)':>12}{'MAPE (%)':>10}")
    for name, p in [("GRU", pred)] + list(base.items()):
        print(f"{name:<18}{rmse(p, truth):>12.3f}{mape(p, truth):>10.3f}")
    best = min(base, key=lambda k: rmse(base[k], truth))

    last = len(test_origins) - 1  # the forecast of the last 24 months, for the picture
    paths = plot(s, train_end, int(test_origins[last]), pred[last],
                 {k: v[last] for k, v in base.items()}, W, history.history, a.out)
    print("figures: " + ", ".join(os.path.relpath(p) for p in paths))
    print(f"RESULT test_rmse={rmse(pred, truth):.3f} baseline={rmse(base[best], truth):.3f} "
          f"({best}) test_mape={mape(pred, truth):.3f} baseline_mape={mape(base[best], truth):.3f} "
          f"time={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
