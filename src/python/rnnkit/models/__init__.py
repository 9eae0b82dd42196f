"""Models: Keras's functional :class:`Model` and :class:`Sequential` (compile / fit / evaluate /
predict / summary / save), the plain containers :class:`FeedForwardNetwork` and
:class:`RecurrentNetwork`, and :func:`load_model`.

- ``functional.py``: ``Model(inputs, outputs)``: the Keras API over a graph of layer calls;
- ``graph.py``: the graph's forward and backward passes (what every model runs);
- ``sequential.py``: ``Sequential``, a model whose graph is a chain;
- ``containers.py``: ``FeedForwardNetwork`` / ``RecurrentNetwork``.

Inputs are batch-major like Keras: ``[N, T, C]`` for sequences (``[N, T]`` integer indices in
front of an ``Embedding``). Masks produced by ``Embedding(mask_zero=True)`` or ``Masking`` flow
from layer to layer (``layer.compute_mask``) and, when an output keeps the time axis, mask the
loss and the metrics.
"""
from __future__ import annotations

from typing import Any

from rnnkit.models.containers import FeedForwardNetwork, RecurrentNetwork
from rnnkit.models.functional import Model
from rnnkit.models.sequential import Sequential

__all__ = ["Model", "Sequential", "FeedForwardNetwork", "RecurrentNetwork", "load_model"]


def load_model(filepath: str, compile: bool = True, custom_objects: Any = None) -> Model:
    """Loads a model saved with :meth:`Model.save` (no pickle involved), or a Keras 3 ``.keras``
    archive (a name ending in ``.keras``; see :mod:`rnnkit.keras_format`, needs h5py).

    Parameters
    ----------
    filepath
        The file.
    compile
        Restore the compile config and the optimizer state when saved (for a ``.keras``
        archive: the optimizer, loss and metrics where rnnkit has the same names).
    custom_objects
        Extra layer classes by name (for user-defined layers; not for ``.keras`` archives,
        which rnnkit reads only with Keras's built-in layers).

    Shapes
    ------
    The loaded model has the saved input shapes.
    """
    from rnnkit import keras_format, serialization

    classes = {"Sequential": Sequential, "Model": Model}
    if keras_format.is_keras_archive_name(filepath):
        if custom_objects:
            raise ValueError(f"custom_objects: not supported for Keras .keras archives ({filepath!r}); rnnkit "
                             "reads them with Keras's built-in layers only")
        return keras_format.load_model(filepath, classes, compile=compile)
    return serialization.load_model(filepath, classes, compile=compile, custom_objects=custom_objects)
