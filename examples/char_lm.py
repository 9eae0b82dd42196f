#!/usr/bin/env python3
"""A character-level language model of Python's own documentation, trained with truncated BPTT.

Data (shipped with CPython, nothing downloaded): ``pydoc_data.topics.topics``, the dict of
documentation topics that ``help()`` shows (statements, operators, the data model, ...: 79
topics, 465,000 characters on Python 3.11; the text differs a little between Python versions).
Recipe: the values in sorted key order, split into paragraphs (at blank lines), every paragraph
kept only at its first occurrence (aggregate topics such as "compound" repeat others verbatim),
joined again with blank lines: 377,000 characters, case kept. The last 5% are the held-out tail,
never trained on. Vocabulary: the printable ASCII characters and the newline that occur at least
``MIN_COUNT`` (20) times in the training part; every other character (curly quotes, dashes, the
rarest ASCII ones) is one "unknown" symbol, shown as U+FFFD. 89 symbols.

Task: predict every next character. The training text is cut into ``--streams`` (64) parallel
streams of consecutive text, 5,590 characters each; ``x`` is a stream without its last
character, ``y`` without its first: ``[N, T_long]`` inputs and per-step targets.

Model: ``Embedding(V, 48) -> LSTM(256, return_sequences=True) -> Dropout(0.25) -> Dense(V)``
(logits), sparse categorical cross-entropy ``from_logits=True``, Adam (8e-3, cosine decay to 5%,
``clipnorm=1``), trained with ``model.fit(x, y, tbptt=32, batch_size=32)``: every batch of 32
streams is processed in windows of 32 steps, one update per window, the LSTM state carried from
window to window without gradient (350 updates per epoch). The state carries context from
further back than the 32 steps the gradient flows through.

Evaluation: bits per character (the mean of ``-log2 p(next character)``) on the held-out tail,
read as one stream by ``model.stream()`` (the state carried over all of it, from zero at its
start), after every epoch. Baselines on the same characters, from the training part's counts
with add-one smoothing: the unigram model (character frequencies), reported as ``baseline``,
and the bigram model (the next character given the current one). Samples: 300 characters at
temperatures 0.5 and 1.0, generated one step at a time with ``model.stream()`` after a prompt,
drawn with a seeded NumPy Generator. The full run reaches about 1.55 bits per character
(unigram 4.58, bigram 3.29); its samples have the layout of the documentation (quoted names,
dunder methods, grammar rules, tables) in mostly made-up words.

Figures (``--out``, default ``examples/figures/``): ``char_lm_training.png`` (training and
held-out bits per character per epoch, with the two baselines) and ``char_lm_surprisal.png`` (a
held-out topic, each character, newlines included, on a cell coloured by the model's surprisal
in bits: a title repeated in the first sentence or an underline of ``*`` costs almost nothing,
the start of a new word or an operator the most).

Run::

    python examples/char_lm.py            # full: LSTM(256), 12 epochs, about 4 minutes on 2 cores
    python examples/char_lm.py --quick    # LSTM(128), 2 epochs, about 20 seconds (2.2 bits/char)

It prints ``RESULT test_bpc=... baseline=...`` (the unigram bits per character) and the bigram
bits per character next to them.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from collections import Counter
from typing import Dict, List, Set, Tuple

import numpy as np

from rnnkit import losses, optimizers, schedules
from rnnkit.layers import LSTM, Dense, Dropout, Embedding
from rnnkit.models import Sequential
from rnnkit.utils import set_random_seed

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_COUNT = 20          # a character rarer than this in the training text becomes "unknown"
TEST_FRACTION = 0.05    # the held-out tail
UNKNOWN = "\ufffd"      # how the unknown symbol (id 0) is shown
PROMPT = "The built-in function "
PASSAGE = "Unary arithmetic and bitwise operations"  # a held-out topic, shown in the surprisal figure
LN2 = math.log(2.0)


class Vocabulary:
    """Characters <-> ids: ``chars[i]`` is the character of id ``i``; id 0 is the unknown symbol."""

    def __init__(self, chars: List[str]) -> None:
        self.chars = [UNKNOWN] + chars
        self.index = {ch: i for i, ch in enumerate(chars, start=1)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index.get(ch, 0) for ch in text], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.chars[i] for i in ids)


def load_corpus() -> Tuple[np.ndarray, np.ndarray, Vocabulary]:
    """The pydoc topics as ids: the training head, the held-out tail and the vocabulary."""
    from pydoc_data.topics import topics

    # Aggregate topics repeat others verbatim ("compound" holds "while", "with", ...); keeping a
    # paragraph only at its first occurrence stops the held-out tail from being trained on.
    seen: Set[str] = set()
    paragraphs: List[str] = []
    for key in sorted(topics):
        for par in topics[key].split("\n\n"):
            if par.strip() and par in seen:
                continue
            seen.add(par)
            paragraphs.append(par)
    text = "\n\n".join(paragraphs)
    cut = int(len(text) * (1.0 - TEST_FRACTION))
    counts = Counter(text[:cut])
    vocab = Vocabulary(sorted(ch for ch, n in counts.items()
                              if n >= MIN_COUNT and (ch == "\n" or " " <= ch <= "~")))
    return vocab.encode(text[:cut]), vocab.encode(text[cut:]), vocab


def streams(ids: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """``x, y: [n, T_long]``: ``ids`` cut into ``n`` consecutive pieces (the remainder dropped),
    ``y`` the next character of every ``x``."""
    length = len(ids) // n
    pieces = ids[:n * length].reshape(n, length)
    return pieces[:, :-1], pieces[:, 1:]


def ngram_bpc(train: np.ndarray, test: np.ndarray, vocab: int) -> Tuple[float, float]:
    """Bits per character of the add-one smoothed unigram and bigram models of ``train`` on
    ``test`` (the bigram's first character scored by the unigram)."""
    uni = np.bincount(train, minlength=vocab) + 1.0
    uni /= uni.sum()
    pairs = np.ones((vocab, vocab))
    np.add.at(pairs, (train[:-1], train[1:]), 1.0)
    pairs /= pairs.sum(axis=1, keepdims=True)
    uni_bits = -np.log2(uni[test])
    bi_bits = np.concatenate([uni_bits[:1], -np.log2(pairs[test[:-1], test[1:]])])
    return float(uni_bits.mean()), float(bi_bits.mean())


def build(vocab: int, units: int, dropout: float, learning_rate: float, total_updates: int) -> Sequential:
    model = Sequential([Embedding(vocab, 48), LSTM(units, return_sequences=True), Dropout(dropout), Dense(vocab)])
    lr = schedules.CosineDecay(learning_rate, decay_steps=total_updates, alpha=0.05)
    model.compile(optimizer=optimizers.Adam(lr, clipnorm=1.0),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def surprisal(model: Sequential, ids: np.ndarray) -> np.ndarray:
    """``-log2 p(ids[t + 1] | ids[:t + 1])`` for every ``t``: the text read as one stream from
    a zero state (``[len(ids) - 1]`` bits)."""
    logits = model.stream(batch_size=1).run(ids[None, :-1])[0]
    return -np.take_along_axis(log_softmax(logits.astype(np.float64)), ids[1:, None], axis=1)[:, 0] / LN2


def sample(model: Sequential, vocab: Vocabulary, prompt: str, length: int, temperature: float,
           rng: np.random.Generator) -> str:
    """``prompt`` and ``length`` characters drawn one at a time from the model's next-character
    distribution sharpened (``temperature < 1``) or flattened (``> 1``)."""
    stream = model.stream(batch_size=1)
    ids = vocab.encode(prompt)
    logits = stream.run(ids[None])[0, -1]  # the prompt read in one call, its last step's output
    out: List[int] = []
    for _ in range(length):
        p = np.exp(log_softmax(logits.astype(np.float64) / temperature))
        nxt = int(rng.choice(len(vocab), p=p))
        out.append(nxt)
        logits = stream.step(np.array([nxt]))[0]
    return prompt + vocab.decode(np.array(out))


def plot(history: Dict[str, List[float]], unigram: float, bigram: float, bits: np.ndarray, text: str,
         out_dir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    epochs = np.arange(1, len(history["train"]) + 1)
    ax.plot(epochs, history["train"], "o-", ms=3, label="training (TBPTT, mean over the epoch)")
    ax.plot(epochs, history["test"], "s-", ms=3, label="held-out tail")
    ax.axhline(unigram, color="grey", ls="--", lw=1, label=f"unigram baseline ({unigram:.2f})")
    ax.axhline(bigram, color="grey", ls=":", lw=1, label=f"bigram baseline ({bigram:.2f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.set_title("character LSTM on the pydoc topics", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    curve_path = os.path.join(out_dir, "char_lm_training.png")
    fig.savefig(curve_path, dpi=100)
    plt.close(fig)

    # a passage of the held-out text laid out line by line, each character on its surprisal
    mean_bits = float(bits.mean())
    start = max(text.find(PASSAGE), 0)  # the start of the tail if this Python's topics lack it
    text, bits = text[start:], bits[start:]
    width, rows = 72, 16
    grid = np.full((rows, width), np.nan)
    chars: List[Tuple[int, int, str]] = []
    r = c = 0
    for ch, b in zip(text, bits):
        if c == width:  # a line too long: wrapped
            r, c = r + 1, 0
        if r == rows:
            break
        grid[r, c] = b  # a newline is a character to predict too: shown as a cell of its own
        chars.append((r, c, "\u21b5" if ch == "\n" else ch))
        r, c = (r + 1, 0) if ch == "\n" else (r, c + 1)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    im = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=8, aspect="auto", interpolation="nearest")
    for r, c, ch in chars:
        ax.text(c, r, ch, ha="center", va="center", fontsize=7, family="monospace",
                color="white" if grid[r, c] > 5 else "black")
    ax.set_axis_off()
    ax.set_title(f"held-out text coloured by the model's surprisal -log2 p(character); mean over the "
                 f"held-out tail {mean_bits:.2f} bits", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.025, label="bits")
    fig.tight_layout()
    text_path = os.path.join(out_dir, "char_lm_surprisal.png")
    fig.savefig(text_path, dpi=100)
    plt.close(fig)
    return [curve_path, text_path]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller LSTM and fewer epochs")
    ap.add_argument("--epochs", type=int, default=None, help="default 12, --quick 2")
    ap.add_argument("--units", type=int, default=None, help="LSTM units: default 256, --quick 128")
    ap.add_argument("--streams", type=int, default=64, help="parallel training streams (N)")
    ap.add_argument("--batch-size", type=int, default=32, help="streams per update")
    ap.add_argument("--tbptt", type=int, default=32, help="window length k of TBPTT(k, k)")
    ap.add_argument("--lr", type=float, default=8e-3, help="initial Adam learning rate")
    ap.add_argument("--dropout", type=float, default=0.25, help="rate of the Dropout before the Dense")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="directory for the PNGs")
    a = ap.parse_args()
    epochs = a.epochs or (2 if a.quick else 12)
    units = a.units or (128 if a.quick else 256)
    t0 = time.perf_counter()
    set_random_seed(a.seed)

    train, test, vocab = load_corpus()
    x, y = streams(train, a.streams)
    unigram, bigram = ngram_bpc(train, test, len(vocab))
    print(f"pydoc topics: {len(train)} training and {len(test)} held-out characters, "
          f"{len(vocab)} symbols; {a.streams} streams of {x.shape[1]} steps, TBPTT({a.tbptt}, {a.tbptt})")
    print(f"baselines on the held-out tail: unigram {unigram:.3f} bits/char, bigram {bigram:.3f}")

    updates_per_epoch = math.ceil(a.streams / a.batch_size) * math.ceil(x.shape[1] / a.tbptt)
    model = build(len(vocab), units, a.dropout, a.lr, epochs * updates_per_epoch)
    history: Dict[str, List[float]] = {"train": [], "test": []}
    for epoch in range(epochs):
        # one epoch per call, so the held-out bits per character can be read between epochs
        h = model.fit(x, y, tbptt=a.tbptt, batch_size=a.batch_size, epochs=1, seed=a.seed + epoch, verbose=0)
        history["train"].append(h.history["loss"][0] / LN2)
        bits = surprisal(model, test)
        history["test"].append(float(bits.mean()))
        print(f"epoch {epoch + 1:2d}/{epochs}: training {history['train'][-1]:.3f} bits/char, "
              f"held-out {history['test'][-1]:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    test_bpc = history["test"][-1]

    rng = np.random.default_rng(a.seed)
    for temperature in (0.5, 1.0):
        print(f"\n--- sample, temperature {temperature} ---")
        print(sample(model, vocab, PROMPT, 300, temperature, rng))
    print()
    paths = plot(history, unigram, bigram, bits, vocab.decode(test[1:]), a.out)
    print("figures: " + ", ".join(os.path.relpath(p) for p in paths))
    print(f"RESULT test_bpc={test_bpc:.3f} baseline={unigram:.3f} (unigram) bigram={bigram:.3f} "
          f"time={time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
