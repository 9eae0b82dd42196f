"""Learning-rate schedules (Keras's ``keras.optimizers.schedules``).

A schedule maps the optimizer's step counter (the number of updates already applied, starting at
0) to a learning rate. Pass one as an optimizer's ``learning_rate``; the optimizer evaluates it
before every update.

Shapes
------
Schedules take a scalar step (``int``) and return a scalar ``float``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Type

from rnnkit._registry import deserialize_object, serialize_object

__all__ = [
    "LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay",
    "InverseTimeDecay", "serialize", "deserialize",
]


def _check_number(name: str, v: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    if positive and f <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {f}")
    if nonneg and f < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {f}")
    return f


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int,)) and not (hasattr(step, "__index__")):
        raise TypeError(f"step: expected an int, got {type(step).__name__}")
    s = int(step)
    if s < 0:
        raise ValueError(f"step: expected an int >= 0, got {s}")
    return s


class LearningRateSchedule:
    """Base class: ``schedule(step) -> learning rate``.

    Shapes
    ------
    ``step``: scalar int >= 0; returns a scalar float.
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "LearningRateSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _init_rate_steps(sched: Any, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                     staircase: bool, name: str, rate_positive: bool) -> None:
    """The arguments shared by ExponentialDecay and InverseTimeDecay, checked and stored."""
    sched.initial_learning_rate = _check_number("initial_learning_rate", initial_learning_rate,
                                                nonneg=True)
    sched.decay_steps = _check_number("decay_steps", decay_steps, positive=True)
    sched.decay_rate = (_check_number("decay_rate", decay_rate, positive=True) if rate_positive
                        else _check_number("decay_rate", decay_rate, nonneg=True))
    sched.staircase = bool(staircase)
    sched.name = name


def _progress(sched: Any, step: int) -> float:
    """step / decay_steps, floored with ``staircase``."""
    p = _check_step(step) / sched.decay_steps
    return math.floor(p) if sched.staircase else p


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    Parameters
    ----------
    initial_learning_rate
        The rate at step 0.
    decay_steps
        Steps over which the rate is multiplied by ``decay_rate`` once (> 0).
    decay_rate
        The factor per ``decay_steps`` (> 0).
    staircase
        When True, ``step / decay_steps`` is floored: the rate changes in discrete jumps.

    Shapes
    ------
    ``step``: scalar int; returns a scalar float.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False, name: str = "ExponentialDecay") -> None:
        _init_rate_steps(self, initial_learning_rate, decay_steps, decay_rate, staircase, name,
                         rate_positive=True)

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.decay_rate ** _progress(self, step)

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """Piecewise-constant rate: ``values[0]`` while ``step <= boundaries[0]``, ``values[1]`` while
    ``boundaries[0] < step <= boundaries[1]``, ..., ``values[-1]`` after ``boundaries[-1]``.

    Parameters
    ----------
    boundaries
        Strictly increasing step boundaries.
    values
        One more value than boundaries.

    Shapes
    ------
    ``step``: scalar int; returns a scalar float.
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float],
                 name: str = "PiecewiseConstantDecay") -> None:
        b = [float(_check_number(f"boundaries[{i}]", v)) for i, v in enumerate(boundaries)]
        vals = [_check_number(f"values[{i}]", v, nonneg=True) for i, v in enumerate(values)]
        if len(vals) != len(b) + 1:
            raise ValueError(f"values: expected len(boundaries) + 1 = {len(b) + 1} values, "
                             f"got {len(vals)}")
        if any(b2 <= b1 for b1, b2 in zip(b, b[1:])):
            raise ValueError(f"boundaries: expected strictly increasing values, got {list(boundaries)}")
        self.boundaries: List[float] = b
        self.values: List[float] = vals
        self.name = name

    def __call__(self, step: int) -> float:
        s = _check_step(step)
        for bound, v in zip(self.boundaries, self.values):
            if s <= bound:
                return v
        return self.values[-1]

    def get_config(self) -> Dict[str, Any]:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay with an optional linear warm-up (Keras 3 semantics).

    Without warm-up: ``lr(step) = initial_learning_rate * ((1 - alpha) * c + alpha)`` with
    ``c = 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps))``. With ``warmup_steps > 0``
    the rate first rises linearly from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps`` steps, then decays from ``warmup_target`` as above (step counted from the end
    of the warm-up).

    Parameters
    ----------
    initial_learning_rate
        Starting rate.
    decay_steps
        Length of the decay (> 0).
    alpha
        The final rate as a fraction of the peak rate.
    warmup_target
        Peak rate after the warm-up (``None``: no warm-up; the peak is ``initial_learning_rate``).
    warmup_steps
        Length of the warm-up (>= 0).

    Shapes
    ------
    ``step``: scalar int; returns a scalar float.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: Optional[float] = None,
                 warmup_steps: int = 0) -> None:
        self.initial_learning_rate = _check_number("initial_learning_rate", initial_learning_rate,
                                                   nonneg=True)
        self.decay_steps = _check_number("decay_steps", decay_steps, positive=True)
        self.alpha = _check_number("alpha", alpha, nonneg=True)
        self.warmup_target = (None if warmup_target is None
                              else _check_number("warmup_target", warmup_target, nonneg=True))
        self.warmup_steps = _check_number("warmup_steps", warmup_steps, nonneg=True)
        self.name = name

    def __call__(self, step: int) -> float:
        s = float(_check_step(step))
        peak = self.initial_learning_rate
        if self.warmup_target is not None and self.warmup_steps > 0:
            if s < self.warmup_steps:
                return self.initial_learning_rate + (self.warmup_target - self.initial_learning_rate) \
                    * s / self.warmup_steps
            peak = self.warmup_target
            s -= self.warmup_steps
        s = min(s, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / self.decay_steps))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (floored ratio when
    ``staircase``).

    Shapes
    ------
    ``step``: scalar int; returns a scalar float.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False, name: str = "InverseTimeDecay") -> None:
        _init_rate_steps(self, initial_learning_rate, decay_steps, decay_rate, staircase, name,
                         rate_positive=False)

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate / (1.0 + self.decay_rate * _progress(self, step))

    def get_config(self) -> Dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


_SCHEDULES: Dict[str, Type[LearningRateSchedule]] = {
    c.__name__: c for c in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay, InverseTimeDecay)
}


def serialize(schedule: LearningRateSchedule) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` (JSON-compatible)."""
    return serialize_object(schedule, LearningRateSchedule, "schedule")


def deserialize(config: Dict[str, Any]) -> LearningRateSchedule:
    """Inverse of :func:`serialize`; only the built-in schedules are known."""
    return deserialize_object(config, _SCHEDULES.get, "learning-rate schedule", _SCHEDULES)
