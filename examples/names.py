#!/usr/bin/env python3
"""Which language is a surname from? A character-level bidirectional GRU over real name lists.

Data (shipped inside the ``faker`` wheel, nothing downloaded): the surname lists of Faker's
per-locale person providers, ``faker.providers.person.<locale>.Provider.last_names`` (compiled
by Faker's contributors from national statistics and name registers). The locales are grouped
into 13 classes (see ``CLASSES``: e.g. German = de_DE + de_AT + de_CH, Scandinavian = sv_SE +
no_NO + da_DK, Czech/Slovak = cs_CZ + sk_SK). Recipe: lower-case, deduplicate within a class,
drop every surname that appears in two classes (about 2%: "Simon", "Berg", ...), then a seeded
shuffle and a stratified 80/20 train/test split. About 14,000 surnames, 400 to 2,400 per class.

Model: characters -> ``Embedding(mask_zero=True)`` (0 pads, 1 is a character unseen in
training) -> ``Bidirectional(GRU(128, dropout=0.2))`` -> ``Dense(13, softmax)``; the padding is
masked all the way through the bidirectional layer. Adam, sparse categorical cross-entropy,
``ReduceLROnPlateau`` on the val_loss of 10% of the training names.

Baselines on the same test names:

- majority class: the most frequent class of the training split;
- character-bigram naive Bayes: multinomial, add-one smoothing, with start and end markers
  (``^smith$``: ``^s sm mi it th h$``), the class prior from the training split.

Reported: accuracy, balanced accuracy (the mean of the per-class recalls) and per-class recall.
Surnames are short and their origin shows mostly in a few letter pairs (``-ović``, ``-sson``,
``-nen``, ``ó ``), so the bigram naive Bayes is a strong baseline here: the BiGRU about matches
it (both near 0.80; the hardest class, English, is a melting pot), far above the majority class.

Figures (``--out``, default ``examples/figures/``): ``names_confusion.png`` (the test confusion
matrix, rows normalised to recall) and ``names_training.png`` (loss and val_loss per epoch).

Run::

    python examples/names.py            # full: 10 epochs, about two minutes on 2 cores
    python examples/names.py --quick    # 4 epochs on half of the training names

It prints ``RESULT test_accuracy=... baseline=...`` (the majority class) and the naive Bayes
accuracy next to them.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import time
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

from rnnkit import callbacks, optimizers
from rnnkit.layers import GRU, Bidirectional, Dense, Embedding, Input
from rnnkit.models import Model
from rnnkit.utils import pad_sequences, set_random_seed

HERE = os.path.dirname(os.path.abspath(__file__))
MAXLEN = 20  # characters kept per name (longer ones are cut at the end; under 0.5% are longer)

CLASSES: Dict[str, List[str]] = {
    "English": ["en_GB"],
    "Irish": ["ga_IE"],
    "German": ["de_DE", "de_AT", "de_CH"],
    "Dutch": ["nl_NL", "nl_BE"],
    "French": ["fr_FR", "fr_BE", "fr_CH", "fr_CA"],
    "Italian": ["it_IT"],
    "Spanish": ["es_ES"],
    "Czech/Slovak": ["cs_CZ", "sk_SK"],
    "Croatian": ["hr_HR"],
    "Scandinavian": ["sv_SE", "no_NO", "da_DK"],
    "Finnish": ["fi_FI"],
    "Zulu": ["zu_ZA"],
    "Kenyan": ["en_KE"],
}


def load_names(seed: int) -> Tuple[List[str], np.ndarray, List[str]]:
    """Surnames (lower case), their class indices and the class names, shuffled with ``seed``."""
    per_class: Dict[str, set] = {}
    for label, locales in CLASSES.items():
        names: set = set()
        for loc in locales:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
            names |= {str(n).strip().lower() for n in provider.last_names if str(n).strip()}
        per_class[label] = names
    count = Counter(n for names in per_class.values() for n in names)
    items = [(n, k) for k, names in enumerate(per_class.values()) for n in sorted(names) if count[n] == 1]
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i][0] for i in order], np.array([items[i][1] for i in order]), list(CLASSES)


def stratified_split(y: np.ndarray, test_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with ``test_fraction`` of every class in test (``y`` already
    shuffled, so the first ones of each class are as good as random)."""
    test = np.zeros(len(y), bool)
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        test[idx[:int(round(test_fraction * len(idx)))]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


class BigramNaiveBayes:
    """Multinomial naive Bayes over character bigrams with ``^``/``$`` markers, add-one smoothing."""

    def __init__(self, k: int) -> None:
        self.k = k

    @staticmethod
    def bigrams(name: str) -> List[str]:
        s = f"^{name}$"
        return [s[i:i + 2] for i in range(len(s) - 1)]

    def fit(self, names: Sequence[str], y: np.ndarray) -> "BigramNaiveBayes":
        counts = [Counter() for _ in range(self.k)]
        for n, c in zip(names, y):
            counts[c].update(self.bigrams(n))
        vocab = sorted(set().union(*counts))
        self.index = {g: i for i, g in enumerate(vocab)}
        table = np.ones((self.k, len(vocab) + 1))  # +1 column: bigrams never seen in training
        for c, cnt in enumerate(counts):
            for g, v in cnt.items():
                table[c, self.index[g]] += v
        self.log_p = np.log(table / table.sum(axis=1, keepdims=True))
        self.log_prior = np.log(np.bincount(y, minlength=self.k) / len(y))
        return self

    def predict(self, names: Sequence[str]) -> np.ndarray:
        unseen = self.log_p.shape[1] - 1
        out = np.empty(len(names), np.int64)
        for i, n in enumerate(names):
            cols = [self.index.get(g, unseen) for g in self.bigrams(n)]
            out[i] = int(np.argmax(self.log_prior + self.log_p[:, cols].sum(axis=1)))
        return out


def encode(names: Sequence[str], alphabet: Dict[str, int]) -> np.ndarray:
    """``[n, MAXLEN]`` int64: character ids from 2, 1 for an unseen character, 0 padding (end)."""
    seqs = [[alphabet.get(ch, 1) for ch in n] for n in names]
    return pad_sequences(seqs, maxlen=MAXLEN, dtype="int64", padding="post", truncating="post")


def build(vocab: int, classes: int, units: int) -> Model:
    inp = Input(shape=(None,), dtype="int64")
    h = Embedding(vocab, 32, mask_zero=True)(inp)
    h = Bidirectional(GRU(units, dropout=0.2))(h)
    out = Dense(classes, activation="softmax")(h)
    model = Model(inp, out, name="surname_origin")
    model.compile(optimizer=optimizers.Adam(learning_rate=5e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
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
    recall = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if recall[i, j] >= 0.01:
                ax.text(j, i, f"{100 * recall[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if recall[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row: % of the class)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    cm_path = os.path.join(out_dir, "names_confusion.png")
    fig.savefig(cm_path, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title("character BiGRU: training curve")
    ax.legend()
    fig.tight_layout()
    curve_path = os.path.join(out_dir, "names_training.png")
    fig.savefig(curve_path, dpi=80)
    plt.close(fig)
    return [cm_path, curve_path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (fewer epochs, half the names)")
    ap.add_argument("--epochs", type=int, default=None, help="default 10, --quick 4")
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory for the PNGs")
    a = ap.parse_args()
    epochs = a.epochs or (4 if a.quick else 10)
    t0 = time.perf_counter()
    set_random_seed(a.seed)

    names, y, classes = load_names(a.seed)
    k = len(classes)
    tr, te = stratified_split(y, 0.2)
    if a.quick:
        tr = tr[:len(tr) // 2]
    names_tr, names_te = [names[i] for i in tr], [names[i] for i in te]
    y_tr, y_te = y[tr], y[te]
    print(f"{len(names)} surnames in {k} classes from Faker's locale providers; {len(tr)} training, "
          f"{len(te)} test")

    majority = int(np.bincount(y_tr, minlength=k).argmax())
    nb_pred = BigramNaiveBayes(k).fit(names_tr, y_tr).predict(names_te)

    alphabet = {ch: i + 2 for i, ch in enumerate(sorted(set("".join(names_tr))))}
    x_tr, x_te = encode(names_tr, alphabet), encode(names_te, alphabet)
    model = build(len(alphabet) + 2, k, a.units)
    history = model.fit(x_tr, y_tr, epochs=epochs, batch_size=64, validation_split=0.1, verbose=0,
                        callbacks=[callbacks.ReduceLROnPlateau(factor=0.3, patience=1)])
    pred = model.predict(x_te, batch_size=512, verbose=0).argmax(axis=1)

    def scores(p: np.ndarray) -> Tuple[float, float, np.ndarray]:
        cm = confusion(y_te, p, k)
        rec = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
        return float(np.mean(p == y_te)), float(rec.mean()), rec

    acc, bal, rec = scores(pred)
    nb_acc, nb_bal, nb_rec = scores(nb_pred)
    maj_acc, maj_bal, _ = scores(np.full_like(y_te, majority))
    print(f"\n{'classifier':<28}{'accuracy':>10}{'balanced':>10}")
    for name, (u, v) in (("BiGRU (rnnkit)", (acc, bal)), ("char-bigram naive Bayes", (nb_acc, nb_bal)),
                         (f"majority ({classes[majority]})", (maj_acc, maj_bal))):
        print(f"{name:<28}{u:>10.3f}{v:>10.3f}")
    print(f"\n{'recall per class':<16}{'BiGRU':>7}{'NB':>7}")
    for c, r, nr in zip(classes, rec, nb_rec):
        print(f"{c:<16}{r:>7.2f}{nr:>7.2f}")
    paths = plot(confusion(y_te, pred, k), classes,
                 f"Surname origin, test set: BiGRU accuracy {acc:.3f}", history.history, a.out)
    print("figures: " + ", ".join(os.path.relpath(p) for p in paths))
    print(f"RESULT test_accuracy={acc:.3f} baseline={maj_acc:.3f} (majority) naive_bayes={nb_acc:.3f} "
          f"balanced_accuracy={bal:.3f} time={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
