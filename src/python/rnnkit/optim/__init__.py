"""PyTorch-style optimizers (``torch.optim``) over :class:`rnnkit.nn.Parameter`.

- :mod:`rnnkit.optim.optimizer`: :class:`Optimizer`, :class:`SGD`, :class:`Adam`,
  :class:`AdamW`, :class:`RMSprop`;
- :mod:`rnnkit.optim.lr_scheduler`: :class:`~rnnkit.optim.lr_scheduler.StepLR`,
  :class:`~rnnkit.optim.lr_scheduler.CosineAnnealingLR`,
  :class:`~rnnkit.optim.lr_scheduler.ReduceLROnPlateau`.

Shapes
------
Each parameter's gradient and state arrays have the parameter's shape.
"""
from __future__ import annotations

from rnnkit.optim import lr_scheduler
from rnnkit.optim.optimizer import SGD, Adam, AdamW, Optimizer, RMSprop, required

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "required", "lr_scheduler"]
