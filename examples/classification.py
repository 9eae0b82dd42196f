#!/usr/bin/env python3
"""Multivariate, variable-length sequence classification on a UEA dataset: Japanese Vowels.

Data (shipped inside the ``aeon`` wheel under ``aeon/datasets/data/``, nothing downloaded):
``aeon.datasets.load_classification("JapaneseVowels", split=...)`` -- nine Japanese speakers
uttering the vowels /ae/; each recording is 7 to 29 frames of 12 LPC cepstrum coefficients
(M. Kudo, J. Toyama, M. Shimbo, 1999, via the UEA multivariate archive). 270 training recordings
(30 per speaker), 370 test recordings (24 to 88 per speaker); the task is to name the speaker.
The recordings keep their own lengths: they are standardised per channel (training mean and
standard deviation), zero-padded at the end with ``rnnkit.utils.pad_sequences`` and the padding
is masked. ``--dataset BasicMotions`` runs the same pipeline on aeon's other shipped
multivariate set (6 accelerometer/gyroscope channels, 100 steps, 4 activities, 40 + 40 cases).

Model: ``Masking(0.0) -> Bidirectional(LSTM(64)) -> Dense(classes, softmax)``, Adam,
sparse categorical cross-entropy, a fixed number of epochs on the whole training split.

Baselines, on the same test split:

- majority class: the most frequent class of the training split;
- 1-NN: nearest neighbour (Euclidean) on the raw standardised series, each linearly resampled to
  the longest length so that recordings of different lengths can be compared.

Figures (``--out``, default ``examples/figures/``): ``classification_confusion.png`` (the test
confusion matrix) and ``classification_training.png`` (loss per epoch, with the test split's loss
drawn for monitoring only: it chooses nothing).

Run::

    python examples/classification.py            # full: 30 epochs, about half a minute
    python examples/classification.py --quick    # 8 epochs

It prints ``RESULT test_accuracy=... baseline=...`` (the baseline is 1-NN; majority also shown).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from rnnkit import optimizers
from rnnkit.layers import LSTM, Bidirectional, Dense, Input, Masking
from rnnkit.models import Model
from rnnkit.utils import pad_sequences, set_random_seed

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name: str) -> Tuple[List[np.ndarray], np.ndarray, List[np.ndarray], np.ndarray, List[str]]:
    """Train and test recordings as lists of ``[steps, channels]`` arrays, integer labels, and
    the class names, from the files inside aeon's wheel."""
    from aeon.datasets import load_classification  # the data package

    x_tr, y_tr = load_classification(name, split="train")
    x_te, y_te = load_classification(name, split="test")
    classes = sorted(set(y_tr) | set(y_te))
    index = {c: i for i, c in enumerate(classes)}
    to_steps = lambda xs: [np.asarray(x, np.float64).T for x in xs]  # aeon: [channels, steps]
    return (to_steps(x_tr), np.array([index[c] for c in y_tr]), to_steps(x_te),
            np.array([index[c] for c in y_te]), [str(c) for c in classes])


def standardise(train: Sequence[np.ndarray], *others: Sequence[np.ndarray]
                ) -> List[List[np.ndarray]]:
    """Every series minus the training mean, over the training standard deviation, per channel."""
    allx = np.concatenate(list(train), axis=0)
    mu, sd = allx.mean(axis=0), allx.std(axis=0) + 1e-8
    return [[(x - mu) / sd for x in xs] for xs in (train, *others)]


def resample(x: np.ndarray, steps: int) -> np.ndarray:
    """``[T, C] -> [steps, C]`` by linear interpolation in time."""
    t = np.linspace(0, len(x) - 1, steps)
    return np.stack([np.interp(t, np.arange(len(x)), c) for c in x.T], axis=1)


def one_nn(train: Sequence[np.ndarray], y_train: np.ndarray, test: Sequence[np.ndarray],
           steps: int) -> np.ndarray:
    """Labels of the Euclidean nearest training series (all resampled to ``steps``)."""
    a = np.stack([resample(x, steps).ravel() for x in train])
    b = np.stack([resample(x, steps).ravel() for x in test])
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None, :]
    return y_train[d.argmin(axis=1)]


def build(channels: int, classes: int, units: int) -> Model:
    inp = Input(shape=(None, channels))
    h = Masking(mask_value=0.0)(inp)
    h = Bidirectional(LSTM(units))(h)
    out = Dense(classes, activation="softmax")(h)
    model = Model(inp, out, name="speaker_classifier")
    model.compile(optimizer=optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """``[k, k]``: row = true class, column = predicted class."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def plot(cm: np.ndarray, classes: List[str], title: str, history: Dict[str, List[float]],
         out_dir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), classes, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    cm_path = os.path.join(out_dir, "classification_confusion.png")
    fig.savefig(cm_path, dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="training loss")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], label="test loss (monitoring only)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title("BiLSTM classifier: training curve")
    ax.legend()
    fig.tight_layout()
    curve_path = os.path.join(out_dir, "classification_training.png")
    fig.savefig(curve_path, dpi=80)
    plt.close(fig)
    return [cm_path, curve_path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (fewer epochs)")
    ap.add_argument("--dataset", default="JapaneseVowels", choices=["JapaneseVowels", "BasicMotions"],
                    help="a multivariate set shipped in aeon's wheel")
    ap.add_argument("--epochs", type=int, default=None, help="default 30, --quick 8")
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory for the PNGs")
    a = ap.parse_args()
    epochs = a.epochs or (8 if a.quick else 30)
    t0 = time.perf_counter()
    set_random_seed(a.seed)

    x_tr, y_tr, x_te, y_te, classes = load(a.dataset)
    x_tr, x_te = standardise(x_tr, x_te)
    longest = max(len(x) for x in x_tr + x_te)
    channels, k = x_tr[0].shape[1], len(classes)
    print(f"{a.dataset}: {len(x_tr)} training and {len(x_te)} test series, {channels} channels, "
          f"{min(len(x) for x in x_tr + x_te)}-{longest} steps, {k} classes")

    majority = int(np.bincount(y_tr, minlength=k).argmax())
    acc_majority = float(np.mean(y_te == majority))
    acc_1nn = float(np.mean(one_nn(x_tr, y_tr, x_te, longest) == y_te))

    pad = lambda xs: pad_sequences([x.astype(np.float32) for x in xs], maxlen=longest, dtype="float32",
                                   padding="post", value=0.0)
    p_tr, p_te = pad(x_tr), pad(x_te)
    model = build(channels, k, a.units)
    history = model.fit(p_tr, y_tr, epochs=epochs, batch_size=16, verbose=0, validation_data=(p_te, y_te))
    pred = model.predict(p_te, verbose=0).argmax(axis=1)
    acc = float(np.mean(pred == y_te))
    cm = confusion(y_te, pred, k)
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)

    print(f"\n{'classifier':<26}{'test accuracy':>14}")
    for name, v in (("BiLSTM (rnnkit)", acc), ("1-NN, resampled raw", acc_1nn),
                    (f"majority class ({classes[majority]})", acc_majority)):
        print(f"{name:<26}{v:>14.3f}")
    print("per-class recall: " + ", ".join(f"{c}={r:.2f}" for c, r in zip(classes, recall)))
    paths = plot(cm, classes, f"{a.dataset} test set: BiLSTM, accuracy {acc:.3f}", history.history, a.out)
    print("figures: " + ", ".join(os.path.relpath(p) for p in paths))
    print(f"RESULT test_accuracy={acc:.3f} baseline={acc_1nn:.3f} (1-NN) majority={acc_majority:.3f} "
          f"time={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
