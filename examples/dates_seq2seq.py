#!/usr/bin/env python3
"""Dates as people write them, in 22 languages, translated into ISO 8601 by an encoder-decoder
with attention.

Data (generated from the CLDR tables shipped inside the ``babel`` wheel, nothing downloaded):
``babel.dates.format_date(day, format=style, locale=loc)`` for a random day between 1950-01-01
and 2049-12-31, a random locale of the 23 in ``LOCALES`` (English US and GB, German, French, Spanish, Italian,
Dutch, Portuguese, Swedish, Finnish, Polish, Czech, Turkish, Hungarian, Romanian, Indonesian,
Danish, Croatian, Russian, Greek, Ukrainian, Vietnamese, Swahili) and a random CLDR style of
``full``, ``long`` and ``medium`` -- e.g. ``Donnerstag, 12. März 1987``, ``12 de mar. de 1987``,
``1987. márc. 12.``, ``четверг, 12 марта 1987 г.`` -- each paired with its ISO date
``1987-03-12``. CLDR's ``short`` style is left out: ``3/12/87`` is a different day in en_US and
en_GB and the model is not told the locale. A tenth of all days are held out: no test date is
ever seen in training, in any language. A string that would map to two different ISO dates
is dropped (none does with these styles; the check stays).

Model (Keras's functional API, as in ``tests/test_seq2seq.py``): characters ->
``Embedding(mask_zero=True)`` -> ``Bidirectional(LSTM(64, return_sequences=True,
return_state=True))``; the decoder ``LSTM(128)`` starts from the encoder's concatenated final
states and reads the ISO string so far (teacher forcing in training); ``Attention`` over the
encoder's outputs (masked by the padding); ``Concatenate`` -> ``TimeDistributed(Dense(softmax))``
over the 11 output symbols. Decoding is greedy, 10 symbols.

Baselines on the same test strings:

- ``dateutil.parser.parse(s, dayfirst=True)`` (python-dateutil, a dependency of pandas): a
  hand-written rule-based parser that knows numeric forms and English month and day names;
- the most frequent ISO date of the training set.

Reported: exact match of the whole ISO date (and per character), overall and by language.

Figures (``--out``, default ``examples/figures/``): ``dates_attention.png`` (the attention
weights of the decoder's 10 steps over the characters of one held-out date) and
``dates_training.png`` (loss and val_loss per epoch).

Run::

    python examples/dates_seq2seq.py            # full: 20000 pairs, 12 epochs, a few minutes
    python examples/dates_seq2seq.py --quick    # 6000 pairs, 6 epochs

It prints ``RESULT exact_match=... baseline=...`` (the dateutil parser).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit import optimizers
from rnnkit.layers import (LSTM, Attention, Bidirectional, Concatenate, Dense, Embedding, Input,
                           TimeDistributed)
from rnnkit.models import Model
from rnnkit.utils import PyDataset, pad_sequences, set_random_seed

HERE = os.path.dirname(os.path.abspath(__file__))
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "sv_SE", "fi_FI",
           "pl_PL", "cs_CZ", "tr_TR", "hu_HU", "ro_RO", "id_ID", "da_DK", "hr_HR", "ru_RU", "el_GR",
           "uk_UA", "vi_VN", "sw_KE"]
STYLES = ["full", "long", "medium"]
FIRST, LAST = dt.date(1950, 1, 1), dt.date(2049, 12, 31)
OUT_SYMBOLS = "0123456789-"      # decoder ids: 0 padding, 1 start, 2.. these
OUT_LEN = 10                      # YYYY-MM-DD
START = 1


def make_pairs(n: int, days: np.ndarray, rng: np.random.Generator
               ) -> Tuple[List[str], List[str], List[str]]:
    """``n`` (human-written date, ISO date, locale) triples on days drawn from ``days``."""
    from babel.dates import format_date  # the data package

    src, iso, loc = [], [], []
    for d, li, si in zip(rng.choice(days, n), rng.integers(0, len(LOCALES), n),
                         rng.integers(0, len(STYLES), n)):
        day = FIRST + dt.timedelta(days=int(d))
        src.append(format_date(day, format=STYLES[si], locale=LOCALES[li]))
        iso.append(day.isoformat())
        loc.append(LOCALES[li])
    return src, iso, loc


def drop_ambiguous(*sets: Tuple[List[str], List[str], List[str]]
                   ) -> List[Tuple[List[str], List[str], List[str]]]:
    """Removes every string that is paired with two different ISO dates anywhere."""
    seen: Dict[str, set] = defaultdict(set)
    for src, iso, _ in sets:
        for s, i in zip(src, iso):
            seen[s].add(i)
    bad = {s for s, v in seen.items() if len(v) > 1}
    out = []
    for src, iso, loc in sets:
        keep = [j for j, s in enumerate(src) if s not in bad]
        out.append(([src[j] for j in keep], [iso[j] for j in keep], [loc[j] for j in keep]))
    return out


def char_ids(strings: Sequence[str], alphabet: Dict[str, int]) -> List[List[int]]:
    """Character ids from 2; 1 for a character unseen in training (0 is the padding)."""
    return [[alphabet.get(c, 1) for c in s] for s in strings]


def encode_src(strings: Sequence[str], alphabet: Dict[str, int], maxlen: int) -> np.ndarray:
    """``[n, maxlen]`` int64 character ids, zero-padded at the end."""
    return pad_sequences(char_ids(strings, alphabet), maxlen=maxlen, dtype="int64", padding="post",
                         truncating="post")


def encode_iso(iso: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Decoder input (start symbol then the first 9 symbols) and target, both ``[n, 10]``."""
    tgt = np.array([[OUT_SYMBOLS.index(c) + 2 for c in s] for s in iso], np.int64)
    dec_in = np.concatenate([np.full((len(iso), 1), START, np.int64), tgt[:, :-1]], axis=1)
    return dec_in, tgt


class LengthBuckets(PyDataset):
    """Training batches of similar-length strings, each padded only to its own longest string.

    The strings are 7 to 38 characters long, 17 on average: padding every batch to the longest
    of all would make the encoder run twice the steps it needs. Every epoch the pairs are
    shuffled, cut into chunks of ``20 * batch_size``, each chunk is sorted by length and cut into
    batches, and the batches are shuffled (the usual "bucketing" of sequence-to-sequence training).
    """

    def __init__(self, src: Sequence[List[int]], dec_in: np.ndarray, target: np.ndarray,
                 batch_size: int, seed: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.src, self.dec_in, self.target = list(src), dec_in, target
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.lengths = np.array([len(s) for s in self.src])
        self.on_epoch_begin()

    def __len__(self) -> int:
        return -(-len(self.src) // self.batch_size)

    def on_epoch_begin(self) -> None:
        order = self.rng.permutation(len(self.src))
        chunk = 20 * self.batch_size
        batches = []
        for c in range(0, len(order), chunk):
            part = order[c:c + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[b:b + self.batch_size] for b in range(0, len(part), self.batch_size)]
        self.batches = [batches[i] for i in self.rng.permutation(len(batches))]

    def __getitem__(self, index: int) -> Tuple[List[np.ndarray], np.ndarray]:
        idx = self.batches[index]
        x = pad_sequences([self.src[i] for i in idx], dtype="int64", padding="post")
        return [x, self.dec_in[idx]], self.target[idx]


def decode_iso(ids: np.ndarray) -> List[str]:
    return ["".join(OUT_SYMBOLS[i - 2] if i >= 2 else "?" for i in row) for row in ids]


def build(vocab: int, units: int) -> Tuple[Model, Model]:
    """The training model ``[src, dec_in] -> probabilities [N, T_out, 13]`` and, sharing its
    layers, an inspection model that also returns the attention weights ``[N, T_out, T_in]``."""
    enc_in = Input(shape=(None,), dtype="int64", name="text")
    e = Embedding(vocab, 32, mask_zero=True, name="char_embedding")(enc_in)
    enc_seq, h_f, c_f, h_b, c_b = Bidirectional(
        LSTM(units, return_sequences=True, return_state=True), name="encoder")(e)
    h = Concatenate(name="h0")([h_f, h_b])
    c = Concatenate(name="c0")([c_f, c_b])
    dec_in = Input(shape=(None,), dtype="int64", name="iso_so_far")
    d = Embedding(len(OUT_SYMBOLS) + 2, 16, name="iso_embedding")(dec_in)
    dec_seq = LSTM(2 * units, return_sequences=True, name="decoder")(d, initial_state=[h, c])
    context, weights = Attention(name="attention")([dec_seq, enc_seq], return_attention_scores=True)
    out = TimeDistributed(Dense(len(OUT_SYMBOLS) + 2, activation="softmax"), name="next_symbol")(
        Concatenate(name="decoder_and_context")([dec_seq, context]))
    model = Model([enc_in, dec_in], out, name="dates_seq2seq")
    model.compile(optimizer=optimizers.Adam(learning_rate=5e-3, clipnorm=1.0),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, Model([enc_in, dec_in], [out, weights], name="dates_seq2seq_attention")


def greedy(model: Model, src: np.ndarray) -> np.ndarray:
    """``[n, 10]`` decoder ids, one symbol at a time, each step fed back in."""
    dec = np.full((len(src), 1), START, np.int64)
    for _ in range(OUT_LEN):
        nxt = model.predict([src, dec], batch_size=1024, verbose=0)[:, -1].argmax(axis=-1)
        dec = np.concatenate([dec, nxt[:, None]], axis=1)
    return dec[:, 1:]


def dateutil_baseline(strings: Sequence[str]) -> List[Optional[str]]:
    from dateutil import parser

    out: List[Optional[str]] = []
    for s in strings:
        try:
            out.append(parser.parse(s, dayfirst=True).date().isoformat())
        except (ValueError, OverflowError):
            out.append(None)
    return out


def plot(text: str, iso: str, weights: np.ndarray, history: Dict[str, List[float]], out_dir: str
         ) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * len(text) + 1.5), 3.6))
    ax.imshow(weights[:, :len(text)], cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(len(text)), [c if c != " " else "␣" for c in text], fontsize=9)
    ax.set_yticks(range(len(iso)), list(iso), fontsize=9)
    ax.set_xlabel("input characters")
    ax.set_ylabel("output, step by step")
    ax.set_title(f"attention: “{text}” → {iso}", fontsize=10)
    fig.tight_layout()
    att_path = os.path.join(out_dir, "dates_attention.png")
    fig.savefig(att_path, dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy per symbol")
    ax.set_title("seq2seq with attention: training curve")
    ax.legend()
    fig.tight_layout()
    curve_path = os.path.join(out_dir, "dates_training.png")
    fig.savefig(curve_path, dpi=80)
    plt.close(fig)
    return [att_path, curve_path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (fewer pairs and epochs)")
    ap.add_argument("--n-train", type=int, default=None, help="training pairs (default 20000, --quick 6000)")
    ap.add_argument("--n-test", type=int, default=2000, help="test pairs")
    ap.add_argument("--epochs", type=int, default=None, help="default 12, --quick 6")
    ap.add_argument("--units", type=int, default=64, help="encoder units per direction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", default="el_GR", help="locale of the example in the attention figure")
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory for the PNGs")
    a = ap.parse_args()
    n_train = a.n_train or (6000 if a.quick else 20000)
    epochs = a.epochs or (6 if a.quick else 12)
    t0 = time.perf_counter()
    set_random_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    all_days = rng.permutation((LAST - FIRST).days + 1)
    n_held = len(all_days) // 10
    test_days, train_days = all_days[:n_held], all_days[n_held:]
    (s_tr, i_tr, _), (s_te, i_te, l_te) = drop_ambiguous(make_pairs(n_train, train_days, rng),
                                                         make_pairs(a.n_test, test_days, rng))
    alphabet = {c: i + 2 for i, c in enumerate(sorted(set("".join(s_tr))))}
    maxlen = max(len(s) for s in s_tr)
    print(f"{len(s_tr)} training and {len(s_te)} test pairs, {len(LOCALES)} locales x {len(STYLES)} "
          f"styles, {len(alphabet)} distinct characters, up to {maxlen} characters; test days never "
          f"seen in training\n  e.g. " + "; ".join(f"{s!r} -> {i}" for s, i in list(zip(s_tr, i_tr))[:3]))

    n_val = len(s_tr) // 20  # 5% of the training pairs for val_loss
    dec_tr, y_tr = encode_iso(i_tr)
    train = LengthBuckets(char_ids(s_tr[n_val:], alphabet), dec_tr[n_val:], y_tr[n_val:], batch_size=64,
                          seed=a.seed)
    val = ([encode_src(s_tr[:n_val], alphabet, maxlen), dec_tr[:n_val]], y_tr[:n_val])
    x_te = encode_src(s_te, alphabet, maxlen)
    model, inspect = build(len(alphabet) + 2, a.units)
    history = model.fit(train, epochs=epochs, validation_data=val, verbose=0)
    pred_ids = greedy(model, x_te)
    pred = decode_iso(pred_ids)
    exact = np.array([p == t for p, t in zip(pred, i_te)])
    per_char = float(np.mean([a_ == b_ for p, t in zip(pred, i_te) for a_, b_ in zip(p, t)]))

    base = dateutil_baseline(s_te)
    base_exact = np.array([p == t for p, t in zip(base, i_te)])
    most_common = max(set(i_tr), key=i_tr.count)
    const_exact = float(np.mean([t == most_common for t in i_te]))

    print(f"\n{'translator':<34}{'exact match':>12}")
    for name, v in (("seq2seq + attention (rnnkit)", float(exact.mean())),
                    ("dateutil.parser (rules)", float(base_exact.mean())),
                    (f"most frequent date ({most_common})", const_exact)):
        print(f"{name:<34}{v:>12.3f}")
    print(f"per-symbol accuracy of the seq2seq: {per_char:.4f}")
    by_loc = defaultdict(list)
    for ok, bok, loc in zip(exact, base_exact, l_te):
        by_loc[loc].append((ok, bok))
    print("exact match by locale (seq2seq / dateutil): " + ", ".join(
        f"{loc} {np.mean([o for o, _ in v]):.2f}/{np.mean([b for _, b in v]):.2f}" for loc, v in by_loc.items()))
    wrong = [(s, p, t) for s, p, t in zip(s_te, pred, i_te) if p != t][:5]
    if wrong:
        print("some errors: " + "; ".join(f"{s!r} -> {p} (true {t})" for s, p, t in wrong))

    # the attention map of one held-out example in the chosen locale (the first one, else any)
    j = next((k for k, loc in enumerate(l_te) if loc == a.show), 0)
    dec_in = np.concatenate([[START], pred_ids[j, :-1]])[None, :]
    _, weights = inspect.predict([x_te[j:j + 1], dec_in], verbose=0)
    paths = plot(s_te[j], pred[j], weights[0], history.history, a.out)
    print("figures: " + ", ".join(os.path.relpath(p) for p in paths))
    print(f"RESULT exact_match={exact.mean():.3f} baseline={base_exact.mean():.3f} (dateutil) "
          f"most_frequent={const_exact:.3f} time={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
