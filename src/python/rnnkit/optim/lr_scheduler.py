"""Learning-rate schedulers for :mod:`rnnkit.optim` with ``torch.optim.lr_scheduler``'s names,
arguments and (chainable) semantics: :class:`StepLR`, :class:`CosineAnnealingLR`,
:class:`ReduceLROnPlateau`.

A scheduler rewrites ``group["lr"]`` of every parameter group of its optimizer when its
``step()`` is called (once per epoch, after ``optimizer.step()``); constructing one records each
group's ``initial_lr`` and performs the first step (epoch 0).

Shapes
------
Learning rates are Python floats, one per parameter group.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, SupportsFloat, Union

from rnnkit.optim.optimizer import Optimizer
from rnnkit.optimizers import _opt_float

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    i = int(v)
    if i < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {i}")
    return i


def _check_optimizer(optimizer: Any) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected a rnnkit.optim.Optimizer, got {type(optimizer).__name__}")
    return optimizer


class LRScheduler:
    """Base class (torch's ``LRScheduler``): subclasses compute the next rates in
    :meth:`get_lr` from the current ones (chainable form).

    Parameters
    ----------
    optimizer
        A :class:`rnnkit.optim.Optimizer`.
    last_epoch
        The index of the last epoch; -1 (default) starts afresh. Another value resumes and needs
        ``"initial_lr"`` in every group (restored with the optimizer's ``state_dict``).

    Attributes
    ----------
    base_lrs
        Each group's ``initial_lr``.
    last_epoch
        Steps taken so far (0 after construction).

    Shapes
    ------
    One rate per parameter group.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.optimizer = _check_optimizer(optimizer)
        last_epoch = _int("last_epoch", last_epoch, -1)
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"optimizer.param_groups[{i}]: expected an 'initial_lr' entry to "
                               f"resume with last_epoch={last_epoch}; load the optimizer's "
                               "state_dict first")
        self.base_lrs: List[float] = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        self.step()
        self._is_initial = False

    def get_lr(self) -> List[float]:
        """The rates for epoch :attr:`last_epoch` (called by :meth:`step`)."""
        raise NotImplementedError(f"{type(self).__name__}: an LRScheduler subclass implements get_lr")

    def _current(self) -> List[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def step(self) -> None:
        """Advances one epoch and writes the new rates into the optimizer's groups."""
        self._step_count += 1
        self.last_epoch += 1
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = self._current()

    def get_last_lr(self) -> List[float]:
        """The rates the last :meth:`step` set, one per group."""
        return list(self._last_lr)

    def state_dict(self) -> Dict[str, Any]:
        """Every attribute but the optimizer (as torch)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
                if k != "optimizer"}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores :meth:`state_dict`'s output."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        unknown = sorted(set(state_dict) - set(self.state_dict()))
        if unknown:
            raise ValueError(f"state_dict: unexpected keys {unknown} for {type(self).__name__} "
                             f"(expected {sorted(self.state_dict())})")
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v)
                              for k, v in state_dict.items()})


class StepLR(LRScheduler):
    """Multiplies every group's rate by ``gamma`` every ``step_size`` epochs
    (``torch.optim.lr_scheduler.StepLR``).

    Parameters
    ----------
    optimizer
        A :class:`rnnkit.optim.Optimizer`.
    step_size
        Period of the decay in epochs (>= 1).
    gamma
        Multiplicative factor (default 0.1).
    last_epoch
        See :class:`LRScheduler`.

    Shapes
    ------
    One rate per parameter group.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _opt_float("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current()
        return [lr * self.gamma for lr in self._current()]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from each ``initial_lr`` to ``eta_min`` over ``T_max`` epochs, then back
    up (no restarts), with torch's recursive update
    ``lr_t = eta_min + (lr_{t-1} - eta_min) (1 + cos(pi t / T_max)) / (1 + cos(pi (t - 1) / T_max))``
    (``torch.optim.lr_scheduler.CosineAnnealingLR``).

    Parameters
    ----------
    optimizer
        A :class:`rnnkit.optim.Optimizer`.
    T_max
        Half period in epochs (>= 1).
    eta_min
        Minimum rate (default 0).
    last_epoch
        See :class:`LRScheduler`.

    Shapes
    ------
    One rate per parameter group.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_max = _int("T_max", T_max, 1)
        self.eta_min = _opt_float("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        cur = self._current()
        t, T = self.last_epoch, self.T_max
        if self._is_initial:
            return cur
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - self.eta_min) * (1.0 - math.cos(math.pi / T)) / 2.0
                    for lr, base in zip(cur, self.base_lrs)]
        ratio = (1.0 + math.cos(math.pi * t / T)) / (1.0 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - self.eta_min) + self.eta_min for lr in cur]


class ReduceLROnPlateau(LRScheduler):
    """Multiplies the rates by ``factor`` when a metric has not improved for more than
    ``patience`` epochs (``torch.optim.lr_scheduler.ReduceLROnPlateau``).

    ``step(metric)`` once per epoch: an improvement is ``metric < best * (1 - threshold)``
    (``'min'``, ``'rel'``), ``metric < best - threshold`` (``'abs'``), or the mirror images for
    ``'max'``; after ``patience + 1`` epochs without one every rate becomes
    ``max(lr * factor, min_lr)`` (unless that changes it by ``eps`` or less) and ``cooldown``
    epochs follow in which bad epochs are not counted.

    Parameters
    ----------
    optimizer
        A :class:`rnnkit.optim.Optimizer`.
    mode
        ``'min'`` or ``'max'``.
    factor
        In [0, 1) (default 0.1).
    patience
        Bad epochs tolerated (default 10).
    threshold
        Significance of an improvement (default 1e-4).
    threshold_mode
        ``'rel'`` or ``'abs'``.
    cooldown
        Epochs to wait after a reduction (default 0).
    min_lr
        Lower bound: a float, or one per group.
    eps
        Smallest change of a rate that is applied (default 1e-8).

    Shapes
    ------
    ``metric``: a scalar; one rate per parameter group.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: Union[float, Sequence[float]] = 0.0,
                 eps: float = 1e-8) -> None:
        self.optimizer = _check_optimizer(optimizer)
        self.factor = _opt_float("factor", factor, lo=0.0)
        if self.factor >= 1.0:
            raise ValueError(f"factor: expected a number < 1.0, got {self.factor}")
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"min_lr: expected {n} values (one per parameter group), got "
                                 f"{len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = [_opt_float(f"min_lr[{i}]", v, lo=0.0) for i, v in enumerate(min_lr)]
        else:
            self.default_min_lr = _opt_float("min_lr", min_lr, lo=0.0)
            self.min_lrs = [self.default_min_lr] * n
        self.patience = _int("patience", patience, 0)
        self.cooldown = _int("cooldown", cooldown, 0)
        self.eps = _opt_float("eps", eps, lo=0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        self.mode = mode
        self.threshold = _opt_float("threshold", threshold)
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.last_epoch = 0
        self._last_lr = self._current()
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                        else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel"
                    else best + self.threshold)

    @property
    def in_cooldown(self) -> bool:
        """Whether the scheduler is waiting after a reduction."""
        return self.cooldown_counter > 0

    def step(self, metrics: SupportsFloat) -> None:  # type: ignore[override]
        """Records one epoch's ``metrics`` (a scalar; 0-d arrays and tensors too) and reduces the
        rates when it has stalled."""
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"metrics: expected a scalar, got {type(metrics).__name__}") from None
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current()

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"min_lr: the optimizer has {len(groups)} parameter groups, "
                                   f"{len(self.min_lrs)} when this scheduler was made; set "
                                   "min_lrs to one value per group")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, lo in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, lo)
            if old - new > self.eps:
                group["lr"] = new

    def get_lr(self) -> List[float]:
        return self._current()
