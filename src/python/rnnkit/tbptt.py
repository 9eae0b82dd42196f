r"""Truncated backpropagation through time, for sequences too long to backpropagate whole.

A batch of long sequences ``[N, T_long, C]`` is trained in windows along time. The recurrent
layers' states are carried from window to window without gradient: the forward through window w
starts from the state the previous windows left, the backward stops at the window's start.

TBPTT(k1, k2) (Williams & Peng 1990): every ``k1`` steps the weights are updated, from a
backward through the last ``k2`` steps (``k2 >= k1``; the loss of the newest ``k1`` steps only).
With ``k1 == k2 == k`` the windows are consecutive and disjoint. With ``k >= T_long`` there is one
window per batch and the result is exactly full backpropagation through time (tested).
``k2`` must be a multiple of ``k1`` (each window then starts where an earlier one ended, at a
state the forward has already computed).

- :func:`train` works on any :class:`~rnnkit.models.RecurrentNetwork` (layers in order, states
  threaded) with a loss and an optimizer.
- ``model.fit(x, y, tbptt=k)`` or ``tbptt=(k1, k2)`` does it for a compiled ``Sequential`` whose
  recurrent layers return sequences, with per-step targets ``y: [N, T_long, ...]``.

Masks: a per-step ``mask: [N, T_long]`` (or the model's Masking / Embedding(mask_zero)) is cut into
the windows with the data; masked steps carry the state and add no loss.

Shapes
------
x: [N, T_long, C]; y: [N, T_long, ...] (the output of every step); mask: [N, T_long] bool;
sample_weight: [N] or [N, T_long].
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit import losses as _losses
from rnnkit._checks import check_positive_int
from rnnkit._random import generator

__all__ = ["train", "fit_model", "windows", "check_k"]


def check_k(tbptt: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(k1, k2)`` from ``k`` or ``(k1, k2)``, checked: k2 >= k1 >= 1 and k2 a multiple of k1."""
    if isinstance(tbptt, (tuple, list)):
        if len(tbptt) != 2:
            raise ValueError(f"tbptt: expected k or (k1, k2), got a sequence of {len(tbptt)}")
        k1 = check_positive_int("tbptt k1", tbptt[0])
        k2 = check_positive_int("tbptt k2", tbptt[1])
    else:
        k1 = k2 = check_positive_int("tbptt", tbptt)
    if k2 < k1 or k2 % k1:
        raise ValueError(f"tbptt: expected k2 >= k1 with k2 a multiple of k1, got (k1, k2) = ({k1}, {k2})")
    return k1, k2


def windows(T: int, k1: int, k2: int) -> List[Tuple[int, int, int]]:
    """The windows of TBPTT(k1, k2) over T steps: ``(start, loss_start, end)`` for each update,
    where the forward and backward run over ``[start, end)`` and the loss covers
    ``[loss_start, end)`` (the newest k1 steps, fewer at the end)."""
    out = []
    for end in range(k1, T + k1, k1):
        end = min(end, T)
        loss_start = ((end - 1) // k1) * k1
        out.append((max(0, loss_start + k1 - k2), loss_start, end))
    return out


def train(network: Any, x: Any, y: Any, loss: Any, optimizer: Any, tbptt: Union[int, Sequence[int]], *,
          epochs: int = 1, batch_size: Optional[int] = 32, mask: Any = None, sample_weight: Any = None,
          shuffle: bool = True, seed: Optional[int] = None, verbose: int = 0) -> Dict[str, List[float]]:
    """Trains ``network`` (a RecurrentNetwork) with TBPTT(k1, k2) on long sequences.

    Parameters
    ----------
    network
        A :class:`~rnnkit.models.RecurrentNetwork` whose last layer gives one output per step.
    x, y
        Inputs ``[N, T_long, C]`` and per-step targets ``[N, T_long, ...]``.
    loss, optimizer
        A loss (name or :class:`rnnkit.losses.Loss`) and a Keras-style optimizer (name or
        instance).
    tbptt
        ``k`` or ``(k1, k2)`` (see the module documentation).
    epochs, batch_size, shuffle, seed
        As in ``fit``; ``batch_size=None`` takes all N sequences at once.
    mask, sample_weight
        Optional ``[N, T_long]`` step mask and ``[N]`` / ``[N, T_long]`` weights.
    verbose
        1: one line per epoch.

    Returns
    -------
    dict
        ``{"loss": [mean window loss of each epoch]}``.

    Shapes
    ------
    See the module documentation.
    """
    from rnnkit import optimizers as _optimizers

    k1, k2 = check_k(tbptt)
    loss_fn = _losses.get(loss)
    opt = _optimizers.get(optimizer)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or y.ndim < 2 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x, y: expected [N, T_long, ...] with the same N and T_long, got {x.shape} and {y.shape}")
    N, T = x.shape[:2]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (N, T):
            raise ValueError(f"mask: expected shape ({N}, {T}), got {mask.shape}")
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape not in ((N,), (N, T)):
            raise ValueError(f"sample_weight: expected shape ({N},) or ({N}, {T}), got {sample_weight.shape}")
    bs = N if batch_size is None else check_positive_int("batch_size", batch_size)
    rng = generator(seed)
    plan = windows(T, k1, k2)
    history: Dict[str, List[float]] = {"loss": []}
    params: Optional[List[np.ndarray]] = None
    grads: Optional[List[np.ndarray]] = None
    for epoch in range(check_positive_int("epochs", epochs)):
        order = rng.permutation(N) if shuffle else np.arange(N)
        total, count = 0.0, 0
        for b0 in range(0, N, bs):
            idx = order[b0:b0 + bs]
            xb, yb = x[idx], y[idx]
            mb = None if mask is None else mask[idx]
            wb = None if sample_weight is None else sample_weight[idx]
            # the state at each window boundary, carried without gradient
            states: Dict[int, Any] = {0: None}
            for start, loss_start, end in plan:
                out, new_state = network.forward(xb[:, start:end], states[start],
                                                 mask=None if mb is None else mb[:, start:end], training=True)
                states[end] = [None if s is None else [a.copy() for a in s] for s in new_state]
                if params is None:  # the layers are built by the first forward
                    params, grads = network.trainable_variables()
                tail = slice(loss_start - start, end - start)
                kw = {}
                if wb is not None:
                    kw["sample_weight"] = wb if wb.ndim == 1 else wb[:, loss_start:end]
                # the loss mask: the given one, else the model's own (Masking, Embedding(mask_zero))
                om = network.output_mask
                lmask = mb[:, loss_start:end] if mb is not None else (None if om is None else om[:, tail])
                value, d_tail = loss_fn.value_and_grad(yb[:, loss_start:end], out[:, tail], lmask, **kw)
                d = np.zeros_like(out)
                d[:, tail] = d_tail
                network.zero_grad()
                network.backward(d)
                opt.apply(grads, params)
                total += float(value) * len(idx)
                count += len(idx)
        history["loss"].append(total / max(count, 1))
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs} - loss: {history['loss'][-1]:.4f} "
                  f"({len(plan)} windows of TBPTT({k1}, {k2}) per batch)", flush=True)
    return history


def fit_model(model: Any, x: Any, y: Any, tbptt: Union[int, Sequence[int]], *, epochs: int = 1,
              batch_size: Optional[int] = 32, sample_weight: Any = None, shuffle: bool = True,
              seed: Optional[int] = None, verbose: Any = 0) -> Any:
    """``model.fit(x, y, tbptt=...)``: :func:`train` on a compiled ``Sequential`` (its layers
    threaded as a RecurrentNetwork, its loss and optimizer). Returns a ``History``.

    Shapes
    ------
    x: [N, T_long, C]; y: [N, T_long, ...]
    """
    from rnnkit.callbacks import History
    from rnnkit.models.containers import RecurrentNetwork

    model.require_compiled("fit")
    if type(model).__name__ != "Sequential" or len(model.output_losses) != 1:
        raise ValueError("tbptt: expected a Sequential with one output (a chain of layers whose recurrent "
                         "layers return sequences); for other models use rnnkit.tbptt.train on a "
                         "RecurrentNetwork")
    for layer in model.layers:
        if hasattr(layer, "return_sequences") and not layer.return_sequences:
            raise ValueError(f"tbptt: layer {layer.name!r} must have return_sequences=True (TBPTT trains on "
                             "the output of every step)")
    net = RecurrentNetwork(model.layers)
    h = train(net, x, y, model.output_losses[0], model.optimizer, tbptt, epochs=epochs, batch_size=batch_size,
              sample_weight=sample_weight, shuffle=shuffle, seed=seed,
              verbose=1 if verbose in (1, 2, "auto") else 0)
    history = History()
    for e, v in enumerate(h["loss"]):
        history.on_epoch_end(e, {"loss": v})
    model.history = history
    return history
