"""``torch.nn.utils`` counterparts: gradient clipping (:func:`clip_grad_norm_`,
:func:`clip_grad_value_`, :func:`get_total_norm`, :func:`clip_grads_with_norm_`) and, in
:mod:`rnnkit.nn.utils.rnn`, padding and packing of variable-length batches."""
from __future__ import annotations

from rnnkit.nn.utils import rnn
from rnnkit.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm", "rnn"]
