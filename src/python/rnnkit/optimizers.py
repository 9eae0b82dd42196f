"""Optimizers with Keras 3's names, defaults and update rules: SGD, Adam (with AMSGrad), AdamW,
Nadam, Adamax, Lion, RMSprop, Adagrad.

Parameters are NumPy arrays updated **in place**; every slot (momentum, moments, accumulators) and
one scratch buffer per variable are allocated on the first update of that variable, so a step
allocates nothing proportional to the parameter sizes.

Use ``optimizer.apply(grads, variables)`` (Keras 3) or
``optimizer.apply_gradients(zip(grads, variables))``; ``rnnkit.models.Sequential`` does this per
batch.

Gradient clipping (at most one of them, as in Keras): ``clipnorm`` rescales each gradient whose
L2 norm exceeds it, ``global_clipnorm`` rescales all gradients together so their joint L2 norm is
at most it, ``clipvalue`` clips every element to ``[-clipvalue, clipvalue]``.

Every optimizer also takes Keras 3's ``weight_decay`` (decoupled: ``var -= var * weight_decay *
lr`` before the update) and ``use_ema`` / ``ema_momentum`` / ``ema_overwrite_frequency`` (a moving
average of the variables, written into them by ``finalize_variable_values``).

The update rules that :mod:`rnnkit.optim` (PyTorch's optimizers) shares are module-level
functions here: :func:`adam_step`, :func:`update_moments`, :func:`moving_average`,
:func:`decoupled_weight_decay`.

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

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Nadam", "Adamax", "Lion", "RMSprop", "Adagrad",
           "get", "serialize", "deserialize", "adam_step", "update_moments", "moving_average",
           "decoupled_weight_decay"]

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


# ---- update rules shared with rnnkit.optim (one implementation per rule) ----------------------

def moving_average(avg: np.ndarray, x: np.ndarray, decay: float, tmp: np.ndarray,
                   square: bool = False) -> None:
    """``avg = decay * avg + (1 - decay) * x`` (``x ** 2`` with ``square``), in place.

    The exponential moving average behind RMSprop's squared-gradient average (Keras's ``rho``,
    torch's ``alpha``), the centred gradient average, Lion's momentum and the weights' EMA.

    Shapes
    ------
    ``avg``, ``x``, ``tmp``: one shape; ``tmp`` is scratch (overwritten).
    """
    if square:
        np.multiply(x, x, out=tmp)
        tmp *= 1.0 - decay
    else:
        np.multiply(x, 1.0 - decay, out=tmp)
    avg *= decay
    avg += tmp


def update_moments(grad: np.ndarray, m: np.ndarray, v: Optional[np.ndarray], beta_1: float,
                   beta_2: float, tmp: np.ndarray) -> None:
    """Adam's moment updates in place: ``m += (1 - beta_1) (g - m)`` and, unless ``v`` is None,
    ``v += (1 - beta_2) (g^2 - v)`` (Adam, AdamW, Nadam; Adamax uses only ``m``).

    Shapes
    ------
    ``grad``, ``m``, ``v``, ``tmp``: one shape; ``tmp`` is scratch.
    """
    np.subtract(grad, m, out=tmp)
    tmp *= 1.0 - beta_1
    m += tmp
    if v is not None:
        np.multiply(grad, grad, out=tmp)
        tmp -= v
        tmp *= 1.0 - beta_2
        v += tmp


def adam_step(var: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray,
              v_hat: Optional[np.ndarray], alpha: float, beta_1: float, beta_2: float,
              epsilon: float, tmp: np.ndarray) -> None:
    """One Adam update in place: the moments (:func:`update_moments`), AMSGrad's running maximum
    ``v_hat = max(v_hat, v)`` when ``v_hat`` is given, then
    ``var -= alpha * m / (sqrt(v_hat or v) + epsilon)``.

    Keras's Adam passes ``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``; torch's Adam, whose
    ``eps`` is added after the bias correction of ``v``, is the same rule with
    ``epsilon = eps sqrt(1 - beta_2^t)``. C-contiguous float32/float64 arrays of one dtype take
    the compiled one-pass kernel (``_core.adam_update``), anything else NumPy.

    Shapes
    ------
    ``var``, ``grad``, ``m``, ``v``, ``v_hat``, ``tmp``: one shape; ``tmp`` is scratch.
    """
    if _fused_ok(var, grad, m, v, v_hat):
        _core.adam_update(var, grad, m, v, v_hat, alpha, beta_1, beta_2, epsilon)
        return
    update_moments(grad, m, v, beta_1, beta_2, tmp)
    if v_hat is not None:
        np.maximum(v_hat, v, out=v_hat)
        v = v_hat
    np.sqrt(v, out=tmp)
    tmp += epsilon
    np.divide(m, tmp, out=tmp)
    tmp *= alpha
    var -= tmp


def decoupled_weight_decay(var: np.ndarray, learning_rate: float, weight_decay: float) -> None:
    """Decoupled weight decay in place, ``var *= 1 - learning_rate * weight_decay`` (Keras 3's
    ``weight_decay`` on every optimizer, torch's AdamW), applied before the gradient update.

    Shapes
    ------
    ``var``: any shape.
    """
    var *= 1.0 - learning_rate * weight_decay


class _VarState:
    """Per-variable state: the variable itself (kept alive so its id stays unique), named slots
    and scratch buffers (``tmp`` for the update, ``gbuf`` for the clipped gradient and ``tmp2``
    for rules that need a second one), allocated once."""

    __slots__ = ("var", "slots", "tmp", "gbuf", "_tmp2")

    def __init__(self, var: np.ndarray, slots: Dict[str, np.ndarray]) -> None:
        self.var = var
        self.slots = slots
        self.tmp = np.empty_like(var)
        self.gbuf: Optional[np.ndarray] = None
        self._tmp2: Optional[np.ndarray] = None

    @property
    def tmp2(self) -> np.ndarray:
        if self._tmp2 is None:
            self._tmp2 = np.empty_like(self.var)
        return self._tmp2


class Optimizer:
    """Base class of the optimizers (Keras 3's ``BaseOptimizer`` arguments).

    One :meth:`apply` does, in Keras's order: gradient clipping, decoupled weight decay
    (``var -= var * weight_decay * lr``), the optimizer's update rule, the moving average of the
    variables (``use_ema``), and increments :attr:`iterations`.

    Parameters
    ----------
    learning_rate
        A float >= 0 or a :class:`rnnkit.schedules.LearningRateSchedule` evaluated at
        :attr:`iterations` before each update.
    name
        The optimizer's name.
    clipnorm, clipvalue, global_clipnorm
        Gradient clipping, at most one (see the module docstring).
    weight_decay
        None or a float >= 0: every variable is multiplied by ``1 - weight_decay * lr`` before
        the update.
    use_ema
        Keep an exponential moving average of every variable, updated after each step:
        ``average = ema_momentum * average + (1 - ema_momentum) * var`` (the first step copies
        the variable). :meth:`finalize_variable_values` writes the averages into the variables.
    ema_momentum
        In [0, 1] (default 0.99).
    ema_overwrite_frequency
        None or an int >= 1: with ``use_ema``, every that many steps the variables are
        overwritten with their averages.

    Shapes
    ------
    ``apply(grads, variables)``: ``grads[i].shape == variables[i].shape``, same dtype.
    """

    _slot_names: Tuple[str, ...] = ()

    def __init__(self, learning_rate: LearningRate, name: str, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 weight_decay: Optional[float] = None, use_ema: bool = False,
                 ema_momentum: float = 0.99, ema_overwrite_frequency: Optional[int] = None) -> None:
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
        self.weight_decay = (None if weight_decay is None
                             else _opt_float("weight_decay", weight_decay, lo=0.0))
        if not isinstance(use_ema, (bool, np.bool_)):
            raise TypeError(f"use_ema: expected a bool, got {type(use_ema).__name__}")
        self.use_ema = bool(use_ema)
        self.ema_momentum = _opt_float("ema_momentum", ema_momentum, lo=0.0, hi=1.0)
        if ema_overwrite_frequency is not None and (
                isinstance(ema_overwrite_frequency, bool)
                or not isinstance(ema_overwrite_frequency, (int, np.integer))
                or ema_overwrite_frequency < 1):
            raise ValueError("ema_overwrite_frequency: expected None or an int >= 1, got "
                             f"{ema_overwrite_frequency!r}")
        self.ema_overwrite_frequency = (None if ema_overwrite_frequency is None
                                        else int(ema_overwrite_frequency))
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

        Shapes
        ------
        ``grads[i].shape == variables[i].shape``.
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
        if self.weight_decay:
            for st in states:
                decoupled_weight_decay(st.var, lr, self.weight_decay)
        self._begin_step()
        self._update_all(states, grads, lr)
        if self.use_ema:
            self._update_averages(states)
        self.iterations += 1

    def _update_all(self, states: List[_VarState], grads: Sequence[np.ndarray], lr: float) -> None:
        """Every variable's update of one step (a rule may do them all in one compiled call)."""
        for g, st in zip(grads, states):
            self._update(st, g, lr)

    def _all_slot_names(self) -> Tuple[str, ...]:
        return self._slot_names + (("average",) if self.use_ema else ())

    def _lookup(self, grads: Sequence[np.ndarray], variables: Sequence[np.ndarray]) -> List[_VarState]:
        states: List[_VarState] = []
        names = self._all_slot_names()
        for i, (g, v) in enumerate(zip(grads, variables)):
            if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
                raise TypeError(f"variables[{i}]: expected a float ndarray, got "
                                f"{type(v).__name__}{'' if not isinstance(v, np.ndarray) else ' ' + str(v.dtype)}")
            if not isinstance(g, np.ndarray) or g.shape != v.shape:
                gs = g.shape if isinstance(g, np.ndarray) else type(g).__name__
                raise ValueError(f"grads[{i}]: expected shape {v.shape} (the variable's), got {gs}")
            st = self._state.get(id(v))
            if st is None or st.var is not v:
                st = _VarState(v, {k: self._init_slot(k, v) for k in names})
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

    def _update_averages(self, states: List[_VarState]) -> None:
        # Keras: the first step (iterations == 0) copies the variables
        momentum = self.ema_momentum if self.iterations != 0 else 0.0
        for st in states:
            moving_average(st.slots["average"], st.var, momentum, st.tmp)
        freq = self.ema_overwrite_frequency
        if freq is not None and (self.iterations + 1) % freq == 0:
            for st in states:
                np.copyto(st.var, st.slots["average"])

    def _init_slot(self, name: str, var: np.ndarray) -> np.ndarray:
        if name == "average":
            # a variable first updated after step 0 starts its average at its current value
            return var.copy()
        return np.zeros_like(var)

    def _begin_step(self) -> None:
        """Called once per :meth:`apply`, before the per-variable updates (Nadam's schedule)."""

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError(f"{type(self).__name__}: an Optimizer subclass implements _update")

    def finalize_variable_values(self, var_list: Sequence[np.ndarray]) -> None:
        """Sets the final values of the variables at the end of training: with ``use_ema``,
        copies each variable's moving average into it (Keras calls this at the end of ``fit``);
        otherwise does nothing. Variables this optimizer never updated are left alone.

        Shapes
        ------
        ``var_list``: the arrays given to :meth:`apply`.
        """
        if not self.use_ema:
            return
        for v in var_list:
            avg = self.get_slots(v).get("average")
            if avg is not None:
                np.copyto(v, avg)

    # ---- state --------------------------------------------------------------------------------
    def _global_state(self) -> Dict[str, np.ndarray]:
        """State that belongs to no single variable (saved beside ``iterations``)."""
        return {}

    def _set_global_state(self, state: Dict[str, np.ndarray]) -> None:
        pass

    def get_slots(self, variable: np.ndarray) -> Dict[str, np.ndarray]:
        """The slot arrays of ``variable`` (empty before its first update).

        Shapes
        ------
        Every slot has the variable's shape.
        """
        st = self._state.get(id(variable))
        return dict(st.slots) if st is not None and st.var is variable else {}

    def get_state(self, variables: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
        """Copies of the slots of ``variables`` as ``{"<i>/<slot>": array}`` plus
        ``"iterations"`` (an int64 scalar array) and any optimizer-wide scalars (Nadam's
        ``"u_product"``), for saving; ``i`` is the index in ``variables``. The slots include the
        moving averages (``"<i>/average"``) with ``use_ema``.

        Shapes
        ------
        ``"<i>/<slot>"`` has the shape of ``variables[i]``; the others are scalars.
        """
        out: Dict[str, np.ndarray] = {"iterations": np.asarray(self.iterations, dtype=np.int64)}
        out.update({k: np.array(v, copy=True) for k, v in self._global_state().items()})
        for i, v in enumerate(variables):
            for k, s in self.get_slots(v).items():
                out[f"{i}/{k}"] = s.copy()
        return out

    def set_state(self, variables: Sequence[np.ndarray], state: Dict[str, np.ndarray]) -> None:
        """Restores what :meth:`get_state` returned for the same variables (same order).

        Shapes
        ------
        As :meth:`get_state`.
        """
        if "iterations" not in state:
            raise ValueError("state: missing 'iterations'")
        names = self._all_slot_names()
        glob = set(self._global_state())
        new: Dict[int, _VarState] = {}
        for i, v in enumerate(variables):
            keys = [f"{i}/{k}" for k in names]
            present = [k in state for k in keys]
            if not any(present):
                continue
            if not all(present):
                have = sorted(k.split("/", 1)[1] for k in state if k.startswith(f"{i}/"))
                raise ValueError(f"state: variable {i}: expected the slots {list(names)} of "
                                 f"{type(self).__name__}{' with use_ema' if self.use_ema else ''}, "
                                 f"got {have}")
            slots = {}
            for k, key in zip(names, keys):
                a = np.asarray(state[key])
                if a.shape != v.shape:
                    raise ValueError(f"state[{key!r}]: expected shape {v.shape} (the variable's), "
                                     f"got {a.shape}")
                slots[k] = np.array(a, dtype=v.dtype, copy=True)
            new[id(v)] = _VarState(v, slots)
        extra = set(state) - {"iterations"} - glob - {f"{i}/{k}" for i in range(len(variables))
                                                      for k in names}
        if extra:
            raise ValueError(f"state: unexpected entries {sorted(extra)[:5]} for "
                             f"{len(variables)} variables of {type(self).__name__}")
        missing = glob - set(state)
        if missing and int(np.asarray(state["iterations"])) > 0:
            raise ValueError(f"state: missing {sorted(missing)}, which {type(self).__name__} "
                             "saves after its first step")
        for k in glob & set(state):
            if np.asarray(state[k]).shape != ():
                raise ValueError(f"state[{k!r}]: expected a scalar, got shape "
                                 f"{np.asarray(state[k]).shape}")
        self._set_global_state({k: state[k] for k in glob & set(state)})
        self._state = new
        self._last = None
        self.iterations = int(np.asarray(state["iterations"]))

    def reset(self) -> None:
        """Forgets all slots and optimizer-wide state and sets :attr:`iterations` to 0."""
        self._state.clear()
        self._last = None
        self.iterations = 0
        self._set_global_state({})

    # ---- config -------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments (JSON-compatible; a schedule is serialized)."""
        lr: Any = (_schedules.serialize(self._lr)
                   if isinstance(self._lr, _schedules.LearningRateSchedule) else self._lr)
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "clipvalue": self.clipvalue, "use_ema": self.use_ema,
                "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Optimizer":
        """Inverse of :meth:`get_config`."""
        cfg = dict(config)
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            cfg["learning_rate"] = _schedules.deserialize(lr)
        return cls(**cfg)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} iterations={self.iterations}>"


def _check_betas(beta_1: float, beta_2: float) -> Tuple[float, float]:
    """beta_1, beta_2 in [0, 1)."""
    out = []
    for name, b in (("beta_1", beta_1), ("beta_2", beta_2)):
        f = _opt_float(name, b, lo=0.0, hi=1.0)
        if f >= 1.0:
            raise ValueError(f"{name}: expected a number in [0, 1), got {f}")
        out.append(f)
    return out[0], out[1]


class _AdamFamily(Optimizer):
    """The arguments Adam, Nadam and Adamax share: ``beta_1``, ``beta_2`` in [0, 1) and
    ``epsilon`` > 0, checked and in the config."""

    def __init__(self, learning_rate: LearningRate, beta_1: float, beta_2: float, epsilon: float,
                 name: str, **kwargs: Any) -> None:
        super().__init__(learning_rate, name, **kwargs)
        self.beta_1, self.beta_2 = _check_betas(beta_1, beta_2)
        self.epsilon = _opt_float("epsilon", epsilon, positive=True)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum (Keras's rule).

    ``m = momentum * m - lr * g``; ``var += m`` (or ``var += momentum * m - lr * g`` with
    Nesterov); plain ``var -= lr * g`` when ``momentum == 0``. Equivalent to ``torch.optim.SGD``
    with the same ``momentum``/``nesterov`` and a constant rate (:class:`rnnkit.optim.SGD` is
    torch's rule).

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.01).
    momentum
        In [0, 1].
    nesterov
        Nesterov momentum.
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

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

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        var, tmp = st.var, st.tmp
        if self.momentum == 0:
            np.multiply(grad, lr, out=tmp)
            var -= tmp
            return
        m = st.slots["momentum"]
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


class Adam(_AdamFamily):
    """Adam (Keras's rule, ``epsilon`` outside the bias-corrected square root).

    ``m += (1 - beta_1) (g - m)``, ``v += (1 - beta_2) (g^2 - v)``,
    ``var -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`` with
    ``t = iterations + 1``; with ``amsgrad`` the running maximum of ``v`` replaces ``v`` (as in
    Keras 3, whose AMSGrad keeps the bias correction). Equal to ``torch.optim.Adam`` up to the
    placement of ``epsilon`` (torch: ``sqrt(v / (1 - beta_2^t)) + eps``; see
    :class:`rnnkit.optim.Adam`).

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
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

    Shapes
    ------
    Gradients match their variables.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 name: str = "adam", **kwargs: Any) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name, **kwargs)
        self.amsgrad = bool(amsgrad)
        self._slot_names = ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    def _alpha(self, lr: float) -> float:
        t = self.iterations + 1
        return lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        adam_step(st.var, grad, st.slots["m"], st.slots["v"], st.slots.get("v_hat"), self._alpha(lr),
                  self.beta_1, self.beta_2, self.epsilon, st.tmp)

    def _update_all(self, states: List[_VarState], grads: Sequence[np.ndarray], lr: float) -> None:
        # one compiled pass per variable, all in one call (a small model's 8-10 variables cost
        # more in per-call overhead than in arithmetic); anything unusual: variable by variable
        v_hat = [st.slots["v_hat"] for st in states] if self.amsgrad else None
        if not _core.adam_update_many([st.var for st in states], list(grads), [st.slots["m"] for st in states],
                                      [st.slots["v"] for st in states], v_hat, self._alpha(lr), self.beta_1,
                                      self.beta_2, self.epsilon):
            super()._update_all(states, grads, lr)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras 3's ``AdamW``): :class:`Adam` whose
    ``weight_decay`` defaults to 0.004 and must be set; each step first does
    ``var -= var * weight_decay * lr``, then Adam's update.

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    weight_decay
        A float >= 0 (default 0.004, Keras's).
    beta_1, beta_2, epsilon, amsgrad
        As :class:`Adam`.
    **kwargs
        Clipping, EMA, name: see :class:`Optimizer`.

    Shapes
    ------
    Gradients match their variables.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, name: str = "adamw", **kwargs: Any) -> None:
        if weight_decay is None:
            raise ValueError("weight_decay: expected a float >= 0 (AdamW needs one), got None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, name=name,
                         weight_decay=weight_decay, **kwargs)


class Nadam(_AdamFamily):
    """Nadam, Adam with Nesterov momentum (Keras 3's rule, with its momentum schedule).

    With ``t = iterations + 1``, ``u_t = beta_1 (1 - 0.5 * 0.96^t)`` and the running product
    ``P_t = u_1 ... u_t`` (one scalar for the optimizer): the moments as Adam, then
    ``m_hat = u_{t+1} m / (1 - P_t u_{t+1}) + (1 - u_t) g / (1 - P_t)``,
    ``v_hat = v / (1 - beta_2^t)``, ``var -= lr m_hat / (sqrt(v_hat) + epsilon)``.

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    beta_1
        Base decay of the first moment, in [0, 1) (default 0.9); scheduled as ``u_t``.
    beta_2
        Decay of the second moment, in [0, 1) (default 0.999).
    epsilon
        > 0 (default 1e-7).
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

    Shapes
    ------
    Gradients match their variables; the slots ``m``, ``v`` too.
    """

    _slot_names = ("m", "v")

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, name: str = "nadam",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name, **kwargs)
        self._u_product = 1.0

    def _u(self, t: int) -> float:
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** t)

    def _begin_step(self) -> None:
        self._u_product *= self._u(self.iterations + 1)

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        t = self.iterations + 1
        u_t, u_next = self._u(t), self._u(t + 1)
        m, v, tmp, num = st.slots["m"], st.slots["v"], st.tmp, st.tmp2
        update_moments(grad, m, v, self.beta_1, self.beta_2, tmp)
        np.multiply(grad, (1.0 - u_t) / (1.0 - self._u_product), out=tmp)
        np.multiply(m, u_next / (1.0 - self._u_product * u_next), out=num)
        num += tmp
        np.multiply(v, 1.0 / (1.0 - self.beta_2 ** t), out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += self.epsilon
        num *= lr
        num /= tmp
        st.var -= num

    def _global_state(self) -> Dict[str, np.ndarray]:
        return {"u_product": np.asarray(self._u_product, dtype=np.float64)}

    def _set_global_state(self, state: Dict[str, np.ndarray]) -> None:
        self._u_product = float(np.asarray(state.get("u_product", 1.0)))


class Adamax(_AdamFamily):
    """Adamax, Adam with the infinity norm (Keras 3's rule).

    ``m += (1 - beta_1) (g - m)``, ``u = max(beta_2 u, |g|)``,
    ``var -= lr m / ((1 - beta_1^t) (u + epsilon))`` with ``t = iterations + 1``.

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    beta_1
        Decay of the first moment ``m``, in [0, 1) (default 0.9).
    beta_2
        Decay of the infinity norm ``u``, in [0, 1) (default 0.999).
    epsilon
        > 0, added to ``u`` (default 1e-7).
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

    Shapes
    ------
    Gradients match their variables; the slots ``m``, ``u`` too.
    """

    _slot_names = ("m", "u")

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, name: str = "adamax",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name, **kwargs)

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        t = self.iterations + 1
        m, u, tmp = st.slots["m"], st.slots["u"], st.tmp
        update_moments(grad, m, None, self.beta_1, self.beta_2, tmp)
        u *= self.beta_2
        np.abs(grad, out=tmp)
        np.maximum(u, tmp, out=u)
        np.add(u, self.epsilon, out=tmp)
        tmp *= 1.0 - self.beta_1 ** t
        np.divide(m, tmp, out=tmp)
        tmp *= lr
        st.var -= tmp


class Lion(Optimizer):
    """Lion, sign momentum (Keras 3's rule).

    ``var -= lr sign(beta_1 m + (1 - beta_1) g)``, then ``m = beta_2 m + (1 - beta_2) g``.

    Parameters
    ----------
    learning_rate
        Float or schedule (default 0.001).
    beta_1
        In (0, 1] (default 0.9): the interpolation inside the sign.
    beta_2
        In [0, 1] (default 0.99): the momentum's decay.
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

    Shapes
    ------
    Gradients match their variables.
    """

    _slot_names = ("m",)

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.99, name: str = "lion", **kwargs: Any) -> None:
        super().__init__(learning_rate, name, **kwargs)
        self.beta_1 = _opt_float("beta_1", beta_1, lo=0.0, hi=1.0)
        if self.beta_1 <= 0.0:
            raise ValueError(f"beta_1: expected a number in (0, 1] (0 makes Lion SignSGD), "
                             f"got {self.beta_1}")
        self.beta_2 = _opt_float("beta_2", beta_2, lo=0.0, hi=1.0)

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        m, tmp = st.slots["m"], st.tmp
        np.subtract(grad, m, out=tmp)  # m + (1 - beta_1)(g - m) = beta_1 m + (1 - beta_1) g
        tmp *= 1.0 - self.beta_1
        tmp += m
        np.sign(tmp, out=tmp)
        tmp *= lr
        st.var -= tmp
        moving_average(m, grad, self.beta_2, tmp)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


class RMSprop(Optimizer):
    """RMSprop (Keras's rule).

    ``v = rho v + (1 - rho) g^2``; centered: ``a = rho a + (1 - rho) g``, ``d = v - a^2 + eps``,
    else ``d = v + eps``; ``inc = lr g / sqrt(d)``; with momentum ``m = momentum m + inc``,
    ``var -= m``, else ``var -= inc``. (torch's ``RMSprop`` adds ``eps`` after the square root
    and calls ``rho`` ``alpha``: :class:`rnnkit.optim.RMSprop`.)

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
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

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

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        vel, tmp = st.slots["velocity"], st.tmp
        moving_average(vel, grad, self.rho, tmp, square=True)
        if self.centered:
            ag = st.slots["average_gradient"]
            moving_average(ag, grad, self.rho, tmp)
            np.multiply(ag, ag, out=tmp)
            np.subtract(vel, tmp, out=tmp)
            tmp += self.epsilon
        else:
            np.add(vel, self.epsilon, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(grad, tmp, out=tmp)
        tmp *= lr
        if self.momentum > 0:
            mom = st.slots["momentum"]
            mom *= self.momentum
            mom += tmp
            st.var -= mom
        else:
            st.var -= tmp

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
    **kwargs
        ``weight_decay``, clipping, EMA: see :class:`Optimizer`.

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
        if name == "accumulator":
            return np.full_like(var, self.initial_accumulator_value)
        return super()._init_slot(name, var)

    def _update(self, st: _VarState, grad: np.ndarray, lr: float) -> None:
        acc, tmp = st.slots["accumulator"], st.tmp
        np.multiply(grad, grad, out=tmp)
        acc += tmp
        np.add(acc, self.epsilon, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(grad, tmp, out=tmp)
        tmp *= lr
        st.var -= tmp

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


_OPTIMIZERS: Dict[str, Type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "adamax": Adamax, "lion": Lion,
    "rmsprop": RMSprop, "adagrad": Adagrad,
}


def get(identifier: Union[str, Optimizer, Dict[str, Any]]) -> Optimizer:
    """An optimizer from a name (``'sgd'``, ``'adam'``, ``'adamw'``, ``'nadam'``, ``'adamax'``,
    ``'lion'``, ``'rmsprop'``, ``'adagrad'``, any case, with Keras's defaults), a serialized dict,
    or an :class:`Optimizer` (returned as is)."""
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
