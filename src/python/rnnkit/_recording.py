"""What a backward is asked to record on the side, for :mod:`rnnkit.diagnostics`.

The request lives in a :mod:`contextvars` variable, so it belongs to the call that made it (each
thread and each asynchronous task sees its own), never to a shared layer or model. Layers read it
with :func:`gradient_flow_recorder` and, when it is set, ask their kernels for the norms of the
state gradients (an optional output of the backward's reverse loop: no second pass).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Dict, Iterator, List, Optional

import numpy as np

__all__ = ["recording_gradient_flow", "gradient_flow_recorder"]

# layer name -> one [T, N] array of ‖dL/dh_t‖ per backward of that layer in the recorded call
Recorder = Dict[str, List[np.ndarray]]

_GRADIENT_FLOW: contextvars.ContextVar[Optional[Recorder]] = contextvars.ContextVar(
    "rnnkit_gradient_flow", default=None)


@contextlib.contextmanager
def recording_gradient_flow() -> Iterator[Recorder]:
    """Within the block, every recurrent layer's backward records ‖dL/dh_t‖ ``[T, N]`` of each
    step and sample into the yielded dict, under the layer's name."""
    rec: Recorder = {}
    token = _GRADIENT_FLOW.set(rec)
    try:
        yield rec
    finally:
        _GRADIENT_FLOW.reset(token)


def gradient_flow_recorder() -> Optional[Recorder]:
    """The current call's recorder, or None when nothing is being recorded."""
    return _GRADIENT_FLOW.get()
