"""Optimizers with Keras's names, defaults and update rules: SGD, Adam, RMSprop, Adagrad.

Parameters are NumPy arrays updated **in place**; every slot (momentum, moments, accumulators) and
one scratch buffer per variable are allocated on the first update of that variable, so a step
allocates nothing proportional to the parameter sizes.

Use ``optimizer.apply(grads, variables)`` (Keras 3) or
``optimizer.apply_gradients(zip(grads, variables))``; ``rnnkit.models.Sequential`` does this per
batch.

Gradient clipping (at most one of them, as in Keras): ``clipnorm`` rescales each gradient whose
L2 norm exceeds it, ``global_clipnorm`` rescales all gradients together so their joint L2 norm is
at most it, ``clipvalue`` clips every element to ``[-clipvalue, clipvalue]``.

Shapes
------
Each gradient has exactly the shape and dtype of its variable.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from rnnkit import _core
from rnnkit import schedules as _schedules
from rnnkit._registry import deserialize_object, serialize_object

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "Adagrad", "get", "serialize", "deserialize"]

LearningRate = Union[float, _schedules.LearningRateSchedule]


def _fused_ok(var: np.ndarray, *arrays: Optional[np.ndarray]) -> bool:
    """Whether a compiled update rule can run in place on these arrays: every one (``None``
    entries aside) a C-contiguous, aligned float32/float64 ndarray of var's dtype and shape, var
    writeable."""
    if type(var) is not np.ndarray or var.dtype.type not in (np.float32, np.float64):
        return False
    if not (var.flags.c_contiguous and var.flags.writeable and var.flags.aligned):
        return False
    return all(a is None or (type(a) is np.ndarray and a.dtype == var.dtype and a.shape == var.shape
                             and a.flags.c_contiguous and a.flags.aligned) for a in arrays)


def _opt_float(name: str, v: Any, *, positive: bool = False, lo: Optional[float] = None,
               hi: Optional[float] = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    if positive and f <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {f}")
    if lo is not None and f < lo:
        raise ValueError(f"{name}: expected a number >= {lo}, got {f}")
    if hi is not None and f > hi:
        raise ValueError(f"{name}: expected a number <= {hi}, got {f}")
    return f


class _VarState:
    """Per-variable state: the variable itself (kept alive so its id stays unique), named slots
    and two scratch buffers (one for the clipped gradient, one for the update)."""

    __slots__ = ("var", "slots", "tmp", "gbuf")

    def __init__(self, var: np.ndarray, slots: Dict[str, np.ndarray]) -> None:
        self.var = var
        self.slots = slots
        self.tmp = np.empty_like(var)
        self.gbuf: Optional[np.ndarray] = None


class Optimizer:
    """Base class of the optimizers.

    Parameters
    ----------
    learning_rate
        A float >= 0 or a :class:`rnnkit.schedules.LearningRateSchedule` evaluated at
        :attr:`iterations` before each update.
    clipnorm, clipvalue, global_clipnorm
        Gradient clipping, at most one (see the module docstring).
    name
        The optimizer's name.

    Shapes
    ------
    ``apply(grads, variables)``: ``grads[i].shape == variables[i].shape``, same dtype.
    """

    _slot_names: Tuple[str, ...] = ()

    def __init__(self, learning_rate: LearningRate, name: str, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None) -> None:
        self.name = name
        self._lr: LearningRate = self._check_lr(learning_rate)
        self.clipnorm = None if clipnorm is None else _opt_float("clipnorm", clipnorm, positive=True)
        self.clipvalue = None if clipvalue is None else _opt_float("clipvalue", clipvalue, positive=True)
        self.global_clipnorm = (None if global_clipnorm is None
                                else _opt_float("global_clipnorm", global_clipnorm, positive=True))
        n_clip = sum(v is not None for v in (self.clipnorm, self.clipvalue, self.global_clipnorm))
        if n_clip > 1:
            raise ValueError("clipnorm, clipvalue, global_clipnorm: at most one can be set, got "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, "
                             f"global_clipnorm={global_clipnorm}")
        self.iterations = 0
        self._state: Dict[int, _VarState] = {}
        self._last: Optional[List[_VarState]] = None

    # ---- learning rate ------------------------------------------------------------------------
    @staticmethod
    def _check_lr(lr: Any) -> LearningRate:
        if isinstance(lr, _schedules.LearningRateSchedule):
            return lr
        return _opt_float("learning_rate", lr, lo=0.0)

    @property
    def learning_rate(self) -> float:
        """The rate the next update uses (a schedule is evaluated at :attr:`iterations`)."""
        if isinstance(self._lr, _schedules.LearningRateSchedule):
            return float(self._lr(self.iterations))
        return float(self._lr)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if isinstance(self._lr, _schedules.LearningRateSchedule):
            raise TypeError("learning_rate: this optimizer was created with a LearningRateSchedule, "
                            "so its learning rate cannot be set; got a new value "
                            f"{value!r}")
        if isinstance(value, _schedules.LearningRateSchedule):
            raise TypeError("learning_rate: a schedule can only be given to the constructor")
        self._lr = _opt_float("learning_rate", value, lo=0.0)

    # ---- updating -----------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars: Iterable[Tuple[np.ndarray, np.ndarray]]) -> None:
        """Applies one update; ``grads_and_vars`` yields ``(gradient, variable)`` pairs."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads: Sequence[np.ndarray], variables: Sequence[np.ndarray]) -> None:
        """Applies one update to ``variables`` in place and increments :attr:`iterations`.

        Parameters
        ----------
        grads
            One gradient per variable (same shape and dtype); not modified.
        variables
            Writable float arrays, updated in place.
        """
        if len(grads) != len(variables):
            raise ValueError(f"grads: expected one gradient per variable ({len(variables)}), "
                             f"got {len(grads)}")
        cached = self._last
        if (cached is not None and len(cached) == len(variables)
                and all(st.var is v for st, v in zip(cached, variables))
                and all(isinstance(g, np.ndarray) and g.shape == st.var.shape
                        for g, st in zip(grads, cached))):
            states = cached  # the same variables as the previous step: already validated
        else:
            states = self._lookup(grads, variables)
            self._last = states
        grads = self._clip(list(grads), states)
        lr = self.learning_rate
        for g, st in zip(grads, states):
            self._update(st.var, g, st.slots, st.tmp, lr)
        self.iterations += 1

    def _lookup(self, grads: Sequence[np.ndarray], variables: Sequence[np.ndarray]) -> List[_VarState]:
        states: List[_VarState] = []
        for i, (g, v) in enumerate(zip(grads, variables)):
            if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
                raise TypeError(f"variables[{i}]: expected a float ndarray, got "
                                f"{type(v).__name__}{'' if not isinstance(v, np.ndarray) else ' ' + str(v.dtype)}")
            if not isinstance(g, np.ndarray) or g.shape != v.shape:
                gs = g.shape if isinstance(g, np.ndarray) else type(g).__name__
                raise ValueError(f"grads[{i}]: expected shape {v.shape} (the variable's), got {gs}")
            st = self._state.get(id(v))
            if st is None or st.var is not v:
                st = _VarState(v, {k: self._init_slot(k, v) for k in self._slot_names})
                self._state[id(v)] = st
            states.append(st)
        return states

    def _clip(self, grads: List[np.ndarray], states: List[_VarState]) -> List[np.ndarray]:
        if self.clipnorm is None and self.clipvalue is None and self.global_clipnorm is None:
            return grads
        out = []
        if self.global_clipnorm is not None:
            total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
            scale = self.global_clipnorm / max(total, self.global_clipnorm)
        for g, st in zip(grads, states):
            if st.gbuf is None:
                st.gbuf = np.empty_like(st.var)
            if self.clipvalue is not None:
                np.clip(g, -self.clipvalue, self.clipvalue, out=st.gbuf)
            else:
                if self.clipnorm is not None:
                    norm = math.sqrt(float(np.vdot(g, g)))
                    scale = self.clipnorm / max(norm, self.clipnorm)
                np.multiply(g, scale, out=st.gbuf)
            out.append(st.gbuf)
        return out

    def _init_slot(self, name: str, var: np.ndarray) -> np.ndarray:
        return np.zeros_like(var)

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: Dict[str, np.ndarray],
                tmp: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    # ---- state --------------------------------------------------------------------------------
    def get_slots(self, variable: np.ndarray) -> Dict[str, np.ndarray]:
        """The slot arrays of ``variable`` (empty before its first update)."""
        st = self._state.get(id(variable))
        return dict(st.slots) if st is not None and st.var is variable else {}

    def get_state(self, variables: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
        """Copies of the slots of ``variables`` as ``{"<i>/<slot>": array}`` plus
        ``"iterations"`` (an int64 scalar array), for saving; ``i`` is the index in ``variables``."""
        out: Dict[str, np.ndarray] = {"iterations": np.asarray(self.iterations, dtype=np.int64)}
        for i, v in enumerate(variables):
            for k, s in self.get_slots(v).items():
                out[f"{i}/{k}"] = s.copy()
        return out

    def set_state(self, variables: Sequence[np.ndarray], state: Dict[str, np.ndarray]) -> None:
        """Restores what :meth:`get_state` returned for the same variables (same order)."""
        if "iterations" not in state:
            raise ValueError("state: missing 'iterations'")
        new: Dict[int, _VarState] = {}
        for i, v in enumerate(variables):
            keys = [f"{i}/{k}" for k in self._slot_names]
            present = [k in state for k in keys]
            if not any(present):
                continue
            if not all(present):
                raise ValueError(f"state: variable {i} has only some of the slots {list(self._slot_names)}")
            slots = {}
            for k, key in zip(self._slot_names, keys):
                a = np.asarray(state[key])
                if a.shape != v.shape:
                    raise ValueError(f"state[{key!r}]: expected shape {v.shape} (the variable's), "
                                     f"got {a.shape}")
                slots[k] = np.array(a, dtype=v.dtype, copy=True)
            new[id(v)] = _VarState(v, slots)
        extra = set(state) - {"iterations"} - {f"{i}/{k}" for i in range(len(variables))
                                               for k in self._slot_names}
        if extra:
            raise ValueError(f"state: unexpected entries {sorted(extra)[:5]} for "
                             f"{len(variables)} variables of {type(self).__name__}")
        self._state = new
        self._last = None
        self.iterations = int(np.asarray(state["iterations"]))

    def reset(self) -> None:
        """Forgets all slots and sets :attr:`iterations` to 0."""
        self._state.clear()
        self._last = None
        self.iterations = 0

    # ---- config -------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        lr: Any = (_schedules.serialize(self._lr)
                   if isinstance(self._lr, _schedules.LearningRateSchedule) else self._lr)
        return {"name": self.name, "learning_rate": lr, "clipnorm": self.clipnorm,
                "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Optimizer":
        cfg = dict(config)
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            cfg["learning_rate"] = _schedules.deserialize(lr)
        return cls(**cfg)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} iterations={self.iterations}>"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum (Keras's rule).

    ``m = momentum * m - lr * g``; ``var += m`` (or ``var += momentum * m - lr * g`` with
    Nesterov); plain ``var -= lr * g`` when ``momentum == 0``. Equivalent to ``torch.optim.SGD``
    with the same ``momentum``/``nesterov`` and a constant rate.

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.01).
    momentum
        In [0, 1].
    nesterov
        Nesterov momentum.

    Shapes
    ------
    Gradients match their variables.
    """

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, name: str = "SGD", **kwargs: Any) -> None:
        super().__init__(learning_rate, name, **kwargs)
        self.momentum = _opt_float("momentum", momentum, lo=0.0, hi=1.0)
        self.nesterov = bool(nesterov)
        self._slot_names = ("momentum",) if self.momentum > 0 else ()

    def _update(self, var, grad, slots, tmp, lr):
        if self.momentum == 0:
            np.multiply(grad, lr, out=tmp)
            var -= tmp
            return
        m = slots["momentum"]
        m *= self.momentum
        np.multiply(grad, lr, out=tmp)
        m -= tmp
        if self.nesterov:
            # var += momentum * m - lr * g
            var -= tmp
            np.multiply(m, self.momentum, out=tmp)
            var += tmp
        else:
            var += m

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Keras's rule, ``epsilon`` outside the bias-corrected square root).

    ``m += (1 - beta_1) (g - m)``, ``v += (1 - beta_2) (g^2 - v)``,
    ``var -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`` with
    ``t = iterations + 1``; with ``amsgrad`` the running maximum of ``v`` replaces ``v``.
    Equal to ``torch.optim.Adam`` up to the placement of ``epsilon``
    (torch: ``sqrt(v / (1 - beta_2^t)) + eps``).

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    beta_1, beta_2
        Decay rates of the first and second moments, in [0, 1).
    epsilon
        Added to the denominator (> 0; default 1e-7 as in Keras).
    amsgrad
        Use the AMSGrad variant.

    Shapes
    ------
    Gradients match their variables.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 name: str = "adam", **kwargs: Any) -> None:
        super().__init__(learning_rate, name, **kwargs)
        self.beta_1 = _opt_float("beta_1", beta_1, lo=0.0, hi=1.0)
        self.beta_2 = _opt_float("beta_2", beta_2, lo=0.0, hi=1.0)
        if self.beta_1 >= 1.0:
            raise ValueError(f"beta_1: expected a number in [0, 1), got {self.beta_1}")
        if self.beta_2 >= 1.0:
            raise ValueError(f"beta_2: expected a number in [0, 1), got {self.beta_2}")
        self.epsilon = _opt_float("epsilon", epsilon, positive=True)
        self.amsgrad = bool(amsgrad)
        self._slot_names = ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    def _update(self, var, grad, slots, tmp, lr):
        t = self.iterations + 1
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        m, v = slots["m"], slots["v"]
        v_hat = slots["v_hat"] if self.amsgrad else None
        if _fused_ok(var, grad, m, v, v_hat):
            # the same rule in one pass (C++)
            _core.adam_update(var, grad, m, v, v_hat, alpha, self.beta_1, self.beta_2,
                              self.epsilon)
            return
        np.subtract(grad, m, out=tmp)
        tmp *= 1.0 - self.beta_1
        m += tmp
        np.multiply(grad, grad, out=tmp)
        tmp -= v
        tmp *= 1.0 - self.beta_2
        v += tmp
        if self.amsgrad:
            v_hat = slots["v_hat"]
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        np.sqrt(v, out=tmp)
        tmp += self.epsilon
        np.divide(m, tmp, out=tmp)
        tmp *= alpha
        var -= tmp

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class RMSprop(Optimizer):
    """RMSprop (Keras's rule).

    ``v = rho v + (1 - rho) g^2``; centered: ``a = rho a + (1 - rho) g``, ``d = v - a^2 + eps``,
    else ``d = v + eps``; ``inc = lr g / sqrt(d)``; with momentum ``m = momentum m + inc``,
    ``var -= m``, else ``var -= inc``. (torch's ``RMSprop`` adds ``eps`` after the square root
    and calls ``rho`` ``alpha``.)

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    rho
        Decay of the squared-gradient average, in [0, 1].
    momentum
        In [0, 1].
    epsilon
        > 0 (default 1e-7).
    centered
        Normalise by the gradient's estimated variance instead of its second moment.

    Shapes
    ------
    Gradients match their variables.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, name: str = "rmsprop",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, name, **kwargs)
        self.rho = _opt_float("rho", rho, lo=0.0, hi=1.0)
        self.momentum = _opt_float("momentum", momentum, lo=0.0, hi=1.0)
        self.epsilon = _opt_float("epsilon", epsilon, positive=True)
        self.centered = bool(centered)
        names = ["velocity"]
        if self.momentum > 0:
            names.append("momentum")
        if self.centered:
            names.append("average_gradient")
        self._slot_names = tuple(names)

    def _update(self, var, grad, slots, tmp, lr):
        vel = slots["velocity"]
        vel *= self.rho
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.rho
        vel += tmp
        if self.centered:
            ag = slots["average_gradient"]
            ag *= self.rho
            np.multiply(grad, 1.0 - self.rho, out=tmp)
            ag += tmp
            np.multiply(ag, ag, out=tmp)
            np.subtract(vel, tmp, out=tmp)
            tmp += self.epsilon
        else:
            np.add(vel, self.epsilon, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(grad, tmp, out=tmp)
        tmp *= lr
        if self.momentum > 0:
            mom = slots["momentum"]
            mom *= self.momentum
            mom += tmp
            var -= mom
        else:
            var -= tmp

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    """Adagrad (Keras's rule): ``acc += g^2``; ``var -= lr g / sqrt(acc + epsilon)``, with the
    accumulator starting at ``initial_accumulator_value``.

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    initial_accumulator_value
        Starting value of the accumulator (>= 0, default 0.1).
    epsilon
        > 0 (default 1e-7).

    Shapes
    ------
    Gradients match their variables.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, name: str = "adagrad", **kwargs: Any) -> None:
        super().__init__(learning_rate, name, **kwargs)
        self.initial_accumulator_value = _opt_float("initial_accumulator_value",
                                                    initial_accumulator_value, lo=0.0)
        self.epsilon = _opt_float("epsilon", epsilon, positive=True)
        self._slot_names = ("accumulator",)

    def _init_slot(self, name: str, var: np.ndarray) -> np.ndarray:
        return np.full_like(var, self.initial_accumulator_value)

    def _update(self, var, grad, slots, tmp, lr):
        acc = slots["accumulator"]
        np.multiply(grad, grad, out=tmp)
        acc += tmp
        np.add(acc, self.epsilon, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(grad, tmp, out=tmp)
        tmp *= lr
        var -= tmp

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


_OPTIMIZERS: Dict[str, Type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "rmsprop": RMSprop, "adagrad": Adagrad,
}


def get(identifier: Union[str, Optimizer, Dict[str, Any]]) -> Optimizer:
    """An optimizer from a name (``'adam'``, ``'sgd'``, ``'rmsprop'``, ``'adagrad'``, any case, with
    Keras's defaults), a serialized dict, or an :class:`Optimizer` (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _OPTIMIZERS.get(identifier.lower())
        if cls is None:
            raise ValueError(f"optimizer: unknown optimizer {identifier!r}; expected one of "
                             f"{sorted(_OPTIMIZERS)} or an Optimizer instance")
        return cls()
    raise TypeError(f"optimizer: expected a str, dict or Optimizer, got {type(identifier).__name__}")


def serialize(optimizer: Optimizer) -> Dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` (JSON-compatible)."""
    return serialize_object(optimizer, Optimizer, "optimizer")


def deserialize(config: Dict[str, Any]) -> Optimizer:
    """Inverse of :func:`serialize`."""
    return deserialize_object(config, lambda name: _OPTIMIZERS.get(name.lower()), "optimizer class",
                              (c.__name__ for c in _OPTIMIZERS.values()))
