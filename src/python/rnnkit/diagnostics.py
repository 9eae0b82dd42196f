r"""Gradient flow through time: how the gradient of the loss w.r.t. each recurrent layer's state
changes from the last step back to the first.

Backpropagation through time multiplies the gradient by the recurrence's Jacobian at every step
back. For an Elman RNN that product shrinks (or grows) geometrically, the vanishing (exploding)
gradient; an LSTM's additive cell path keeps it near constant. :func:`gradient_flow` measures it
on a batch: for every recurrent layer, :math:`\|\partial L / \partial h_t\|` for each step t
(the mean over the batch of each sample's norm), and the norm of every weight gradient.

The per-step norms come from the backward kernels themselves, an optional output of their reverse
loop (no second pass): the cost is one row norm per step and sample.

>>> flow = gradient_flow(model, x, y)                       # doctest: +SKIP
>>> flow.layers["lstm"].dh_norm                              # [T]            # doctest: +SKIP
>>> plot_gradient_flow(flow, path="flow.png")                # doctest: +SKIP

Shapes
------
``x``, ``y``: one batch as for ``model.train_on_batch``; ``dh_norm``: ``[T]`` per recurrent layer
(time steps in input order); ``dh_norm_per_sample``: ``[T, N]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from rnnkit import training
from rnnkit._recording import recording_gradient_flow

__all__ = ["LayerFlow", "GradientFlow", "gradient_flow", "plot_gradient_flow"]


@dataclass
class LayerFlow:
    """One recurrent layer's gradient flow on a batch.

    Attributes
    ----------
    dh_norm
        ``[T]``: the mean over the batch of ‖dL/dh_t‖ (the gradient reaching the state after step
        t, through the layer's output and the later steps alike), steps in input order.
    dh_norm_per_sample
        ``[T, N]``: the same per sample (summed over the layer's uses when it is shared).
    weight_grad_norms
        The Frobenius norm of each of the layer's parameter gradients, by parameter name.
    """
    dh_norm: np.ndarray
    dh_norm_per_sample: np.ndarray
    weight_grad_norms: Dict[str, float] = field(default_factory=dict)

    def ratio_first_to_last(self) -> float:
        """‖dL/dh_1‖ / ‖dL/dh_T‖: below 1 the gradient vanishes going back in time."""
        return float(self.dh_norm[0] / max(self.dh_norm[-1], 1e-300))


@dataclass
class GradientFlow:
    """:func:`gradient_flow`'s result: the batch's loss and each recurrent layer's flow (by layer
    name, in model order), and the gradient norms of the other layers' weights."""
    loss: float
    layers: Dict[str, LayerFlow]
    other_weight_grad_norms: Dict[str, Dict[str, float]]


def gradient_flow(model: Any, x: Any, y: Any = None, sample_weight: Any = None, *,
                  training_mode: bool = True) -> GradientFlow:
    """Measures ‖dL/dh_t‖ of every recurrent layer, for every step, on one batch, and the norms
    of every weight gradient (a compiled model; no weights change).

    Parameters
    ----------
    model
        A compiled ``Sequential`` or functional ``Model``.
    x, y, sample_weight
        One batch, as for ``model.train_on_batch``.
    training_mode
        Run the forward as in training (dropout on; the default) or as in inference.

    Returns
    -------
    GradientFlow

    Shapes
    ------
    x: [N, T, C] (per input) -> ``layers[name].dh_norm``: [T], ``dh_norm_per_sample``: [T, N]
    """
    with recording_gradient_flow() as rec:
        loss = training.compute_gradients(model, x, y, sample_weight, training=training_mode)
    layers: Dict[str, LayerFlow] = {}
    others: Dict[str, Dict[str, float]] = {}
    for layer in model.all_layers():
        norms = {k: float(np.linalg.norm(g)) for k, g in getattr(layer, "grads", {}).items()}
        if layer.name in rec:
            per_sample = np.sum(rec[layer.name], axis=0)
            layers[layer.name] = LayerFlow(per_sample.mean(axis=1), per_sample, norms)
        elif norms:
            others[layer.name] = norms
    return GradientFlow(loss, layers, others)


def plot_gradient_flow(flows: Any, ax: Any = None, path: Optional[str] = None, title: Optional[str] = None) -> Any:
    """Draws ‖dL/dh_t‖ against t on a log scale, one line per recurrent layer (and per model
    when ``flows`` is a dict ``{label: GradientFlow}``). Needs matplotlib.

    Parameters
    ----------
    flows
        A :class:`GradientFlow`, or a dict of them by label (e.g. ``{"RNN": f1, "LSTM": f2}``).
    ax
        A matplotlib Axes to draw into (default: a new figure).
    path
        If given, the figure is saved there (PNG).

    Returns
    -------
    The Axes.
    """
    try:
        import matplotlib  # noqa: F401  (optional: the examples extra)
    except ImportError as e:
        raise ImportError('plot_gradient_flow needs matplotlib: pip install matplotlib '
                          '(or "rnnkit[examples]")') from e
    if isinstance(flows, GradientFlow):
        flows = {"": flows}
    if not isinstance(flows, dict):
        raise TypeError(f"flows: expected a GradientFlow or a dict of them, got {type(flows).__name__}")
    if ax is None and path is not None:
        # a figure outside pyplot: writing a file never changes the user's backend or open figures
        from matplotlib.figure import Figure

        ax = Figure(figsize=(6.4, 4.0)).subplots()
    elif ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, flow in flows.items():
        for name, lf in flow.layers.items():
            t = np.arange(1, len(lf.dh_norm) + 1)
            ax.semilogy(t, np.maximum(lf.dh_norm, 1e-300), label=f"{label} {name}".strip())
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$ (batch mean)")
    ax.set_title(title or "Gradient flow through time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=110)
    return ax
