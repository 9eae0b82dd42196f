"""PyTorch-style optimizers over :class:`rnnkit.nn.Parameter`: :class:`SGD`, :class:`Adam`,
:class:`AdamW`, :class:`RMSprop` with ``torch.optim``'s names, argument order, defaults, update
rules, ``param_groups``, ``state`` and ``state_dict`` format.

``step()`` updates every parameter whose ``.grad`` is not None, in place (``p.data`` keeps its
memory), from the current ``.grad``; ``zero_grad()`` clears the gradients. The rules Keras's
optimizers share live in :mod:`rnnkit.optimizers` (:func:`~rnnkit.optimizers.adam_step`,
:func:`~rnnkit.optimizers.moving_average`, :func:`~rnnkit.optimizers.decoupled_weight_decay`)
and are used from there.

Example
-------
>>> import numpy as np
>>> from rnnkit import nn, optim
>>> lin = nn.Linear(3, 2, seed=0)
>>> opt = optim.Adam(lin.parameters(), lr=1e-2)
>>> y = lin(np.ones((4, 3), dtype=np.float32))
>>> _ = lin.backward(np.ones_like(y))
>>> opt.step(); opt.zero_grad()

Shapes
------
Every ``p.grad`` has the shape of ``p.data``; every per-parameter state array (``exp_avg``,
``momentum_buffer``, ...) too.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from itertools import chain
from typing import (Any, Callable, DefaultDict, Dict, Iterable, List, Optional, Tuple, TypeVar,
                    Union)

import numpy as np

from rnnkit.nn.module import Parameter, to_numpy
from rnnkit.optimizers import (_opt_float, adam_step, decoupled_weight_decay, moving_average)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "required"]

ParamsT = Union[Iterable[Parameter], Iterable[Tuple[str, Parameter]], Iterable[Dict[str, Any]]]
Label = Callable[[str], str]
T = TypeVar("T")


class _RequiredParameter:
    """Marks a hyper-parameter every parameter group must give (torch's ``optim.required``)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def _bool(label: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{label}: expected a bool, got {type(v).__name__} {v!r}")
    return bool(v)


class Optimizer:
    """Base class: parameter groups, state, ``zero_grad``, ``step``, ``state_dict``.

    Parameters
    ----------
    params
        ``module.parameters()`` (an iterable of :class:`~rnnkit.nn.Parameter`),
        ``module.named_parameters()`` (``(name, Parameter)`` pairs) or a list of parameter-group
        dicts ``{"params": [...], "lr": ..., ...}`` whose entries override ``defaults``.
    defaults
        The hyper-parameters of groups that do not give their own.

    Attributes
    ----------
    param_groups
        One dict per group: ``"params"`` (a list of Parameters) and every hyper-parameter.
    state
        ``{Parameter: {"step": float, "<buffer>": ndarray, ...}}`` (filled by ``step``).

    Shapes
    ------
    State arrays have the shape and dtype of their parameter.
    """

    def __init__(self, params: ParamsT, defaults: Dict[str, Any]) -> None:
        self.defaults: Dict[str, Any] = dict(defaults)
        self._check_hyper(self.defaults, lambda k: k)
        self.state: DefaultDict[Parameter, Dict[str, Any]] = defaultdict(dict)
        self.param_groups: List[Dict[str, Any]] = []
        self._scratch: Dict[Parameter, Tuple[np.ndarray, np.ndarray]] = {}
        if isinstance(params, (Parameter, np.ndarray, dict)) or not isinstance(params, Iterable):
            raise TypeError("params: expected an iterable of Parameters, of (name, Parameter) "
                            f"pairs or of parameter-group dicts, got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError("params: expected at least one parameter, got an empty list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # ---- parameter groups ---------------------------------------------------------------------
    def _check_hyper(self, group: Dict[str, Any], label: Label) -> None:
        """Validates (and normalises in place) the hyper-parameters of ``group``; ``label(key)``
        names a key in error messages."""
        raise NotImplementedError(f"{type(self).__name__}: an Optimizer subclass implements "
                                  "_check_hyper")

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a group: ``{"params": Parameters or (name, Parameter) pairs, <hyper>: value}``;
        missing hyper-parameters take :attr:`defaults`.

        Shapes
        ------
        Any parameter shapes.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"param_group: expected a 'params' entry, got keys {sorted(param_group)}")
        i = len(self.param_groups)
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"param_groups[{i}]['params']: expected an ordered collection (a list), "
                            "got a set, whose order changes between runs")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError(f"param_groups[{i}]['params']: expected all parameters with names "
                                 f"or all without, got {len(names)} names for {len(params)} parameters")
            group["param_names"] = names
        for j, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"param_groups[{i}]['params'][{j}]: expected a rnnkit.nn.Parameter, "
                                f"got {type(p).__name__}")
        group["params"] = params
        for k, default in self.defaults.items():
            if k not in group:
                if default is required:
                    raise ValueError(f"param_groups[{i}]: expected a value for the required "
                                     f"hyper-parameter {k!r}")
                group[k] = default
        self._check_hyper(group, lambda k: f"param_groups[{i}][{k!r}]")
        if len(set(map(id, params))) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "they are updated once per step", UserWarning, stacklevel=2)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"param_groups[{i}]['params']: some parameters appear in more than one "
                             "parameter group")
        if self.param_groups and (("param_names" in group) != ("param_names" in self.param_groups[0])):
            raise ValueError(f"param_groups[{i}]: expected all groups with parameter names or all "
                             "without")
        self.param_groups.append(group)

    # ---- stepping -----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears every parameter's gradient: ``p.grad = None`` (default) or zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.fill(0)

    def _buffers(self, p: Parameter) -> Tuple[np.ndarray, np.ndarray]:
        """Two scratch arrays shaped like ``p.data`` (not state: never saved)."""
        b = self._scratch.get(p)
        if b is None or b[0].shape != p.data.shape or b[0].dtype != p.data.dtype:
            b = (np.empty_like(p.data), np.empty_like(p.data))
            self._scratch[p] = b
        return b

    @staticmethod
    def _grad(p: Parameter, where: str) -> np.ndarray:
        g = p.grad
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f" or g.shape != p.data.shape:
            got = (f"shape {g.shape}, dtype {g.dtype}" if isinstance(g, np.ndarray)
                   else type(g).__name__)
            raise ValueError(f"{where}.grad: expected a float array of shape {p.data.shape} (the "
                             f"parameter's), got {got}")
        return g

    def step(self, closure: Optional[Callable[[], T]] = None) -> Optional[T]:
        """One update of every parameter with a gradient (``p.grad is not None``).

        Parameters
        ----------
        closure
            Optional; called first (re-evaluating the loss and gradients), its result returned.

        Shapes
        ------
        ``p.grad.shape == p.data.shape``.
        """
        loss = closure() if closure is not None else None
        for i, group in enumerate(self.param_groups):
            maximize = bool(group.get("maximize", False))
            l2 = self._l2(group)
            for j, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                g = self._grad(p, f"param_groups[{i}]['params'][{j}]")
                gbuf, tmp = self._buffers(p)
                if maximize:
                    np.negative(g, out=gbuf)
                    g = gbuf
                if l2:
                    np.multiply(p.data, l2, out=tmp)
                    np.add(g, tmp, out=gbuf)
                    g = gbuf
                self._update(p, g, group, self.state[p], gbuf, tmp)
        return loss

    def _l2(self, group: Dict[str, Any]) -> float:
        """The L2 penalty added to the gradient (``weight_decay`` unless it is decoupled)."""
        return float(group.get("weight_decay", 0.0))

    def _update(self, p: Parameter, grad: np.ndarray, group: Dict[str, Any], state: Dict[str, Any],
                gbuf: np.ndarray, tmp: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__}: an Optimizer subclass implements _update")

    def _state_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        """The state entries a parameter of ``group`` has after its first step."""
        raise NotImplementedError(f"{type(self).__name__}: an Optimizer subclass implements "
                                  "_state_keys")

    # ---- state dicts --------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` as in
        torch: parameters are numbered in group order; state arrays are copies.

        Shapes
        ------
        State arrays have their parameter's shape.
        """
        index: Dict[int, int] = {}
        groups = []
        start = 0
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            for n, p in enumerate(g["params"], start):
                index.setdefault(id(p), n)
            packed["params"] = [index[id(p)] for p in g["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {index[id(p)]: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads :meth:`state_dict`'s output (also a ``torch.optim`` state dict of the same
        optimizer: tensors are converted): the groups' hyper-parameters and every parameter's
        state, matched by position; arrays are copied into the parameters' dtypes.

        Shapes
        ------
        Each state array must have its parameter's shape.
        """
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict: expected a dict with 'state' and 'param_groups', got "
                             f"{type(state_dict).__name__}"
                             f"{' with keys ' + str(sorted(state_dict)) if isinstance(state_dict, dict) else ''}")
        saved = state_dict["param_groups"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.param_groups):
            n = len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__
            raise ValueError(f"state_dict['param_groups']: expected {len(self.param_groups)} "
                             f"parameter groups (the optimizer's), got {n}")
        new_groups = []
        for i, (sg, g) in enumerate(zip(saved, self.param_groups)):
            if not isinstance(sg, dict) or not isinstance(sg.get("params"), (list, tuple)):
                raise ValueError(f"state_dict['param_groups'][{i}]: expected a dict with a 'params' list")
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"state_dict['param_groups'][{i}]['params']: expected "
                                 f"{len(g['params'])} parameters (the optimizer's group {i}), got "
                                 f"{len(sg['params'])}")
            ng = {k: v for k, v in sg.items() if k != "params"}
            ng["params"] = g["params"]
            if "param_names" in g and "param_names" not in ng:
                ng["param_names"] = g["param_names"]
            self._check_hyper(ng, lambda k: f"state_dict['param_groups'][{i}][{k!r}]")
            new_groups.append(ng)
        targets = [(p, ng) for ng in new_groups for p in ng["params"]]
        id_map = dict(zip(chain.from_iterable(sg["params"] for sg in saved), targets))
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError(f"state_dict['state']: expected a dict, got {type(saved_state).__name__}")
        new_state: DefaultDict[Parameter, Dict[str, Any]] = defaultdict(dict)
        for k, v in saved_state.items():
            where = f"state_dict['state'][{k!r}]"
            if k not in id_map:
                raise ValueError(f"{where}: expected a parameter index in {sorted(id_map)[:10]}, got {k!r}")
            p, group = id_map[k]
            if not isinstance(v, dict):
                raise ValueError(f"{where}: expected a dict, got {type(v).__name__}")
            new_state[p] = self._cast_state(p, v, group, where)
        self.param_groups = new_groups
        self.state = new_state

    def _cast_state(self, p: Parameter, state: Dict[str, Any], group: Dict[str, Any],
                    where: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, value in state.items():
            value = to_numpy(value)
            if key == "step":
                out[key] = float(np.asarray(value))
            elif value is None:
                out[key] = None
            else:
                a = np.asarray(value)
                if a.shape != p.data.shape:
                    raise ValueError(f"{where}[{key!r}]: expected shape {p.data.shape} (the "
                                     f"parameter's), got {a.shape}")
                out[key] = np.array(a, dtype=p.data.dtype, copy=True, order="C")
        if out:
            missing = [k for k in self._state_keys(group) if k not in out]
            if missing:
                raise ValueError(f"{where}: expected the entries {list(self._state_keys(group))} "
                                 f"of {type(self).__name__}, missing {missing}")
        return out

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k not in ("params", "param_names"):
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _check_common(group: Dict[str, Any], label: Label, floats: Tuple[str, ...],
                  bools: Tuple[str, ...]) -> None:
    """lr and the non-negative floats; the bools."""
    for k in floats:
        group[k] = _opt_float(label(k), group[k], lo=0.0)
    for k in bools:
        group[k] = _bool(label(k), group[k])


class SGD(Optimizer):
    """Stochastic gradient descent, torch's rule (``torch.optim.SGD``).

    ``g = grad + weight_decay * p`` (negated first with ``maximize``); with momentum
    ``buf = momentum * buf + (1 - dampening) * g`` (the first step sets ``buf = g``) and
    ``g = g + momentum * buf`` (Nesterov) or ``g = buf``; ``p -= lr * g``.

    Parameters
    ----------
    params
        Parameters or parameter groups (see :class:`Optimizer`).
    lr
        Learning rate >= 0 (default 1e-3, torch's).
    momentum
        >= 0 (default 0).
    dampening
        Dampening of the momentum (default 0).
    weight_decay
        L2 penalty >= 0 (default 0).
    nesterov
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize
        Maximise the objective instead.

    Shapes
    ------
    ``state[p]["momentum_buffer"]`` has ``p``'s shape.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov,
                                  "maximize": maximize})

    def _check_hyper(self, group: Dict[str, Any], label: Label) -> None:
        _check_common(group, label, ("lr", "momentum", "weight_decay"), ("nesterov", "maximize"))
        group["dampening"] = _opt_float(label("dampening"), group["dampening"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{label('nesterov')}: Nesterov momentum needs momentum > 0 and "
                             f"dampening == 0, got momentum={group['momentum']}, "
                             f"dampening={group['dampening']}")

    def _state_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _update(self, p: Parameter, grad: np.ndarray, group: Dict[str, Any], state: Dict[str, Any],
                gbuf: np.ndarray, tmp: np.ndarray) -> None:
        mu = group["momentum"]
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                state["momentum_buffer"] = buf = np.array(grad, dtype=p.data.dtype, copy=True)
            else:
                buf *= mu
                np.multiply(grad, 1.0 - group["dampening"], out=tmp)
                buf += tmp
            if group["nesterov"]:
                np.multiply(buf, mu, out=tmp)
                np.add(grad, tmp, out=gbuf)
                grad = gbuf
            else:
                grad = buf
        np.multiply(grad, group["lr"], out=tmp)
        data = p.data
        data -= tmp


def _check_adam(group: Dict[str, Any], label: Label) -> None:
    _check_common(group, label, ("lr", "eps", "weight_decay"),
                  ("amsgrad", "maximize", "decoupled_weight_decay"))
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{label('betas')}: expected a pair (beta1, beta2), got {betas!r}")
    b = tuple(_opt_float(f"{label('betas')}[{n}]", x, lo=0.0, hi=1.0) for n, x in enumerate(betas))
    for n, x in enumerate(b):
        if x >= 1.0:
            raise ValueError(f"{label('betas')}[{n}]: expected a number in [0, 1), got {x}")
    group["betas"] = b


class Adam(Optimizer):
    """Adam, torch's rule (``torch.optim.Adam``), through the same
    :func:`rnnkit.optimizers.adam_step` as Keras's Adam.

    Per parameter, with ``t`` its own step count: ``g = grad + weight_decay * p`` (L2; with
    ``decoupled_weight_decay`` instead ``p *= 1 - lr * weight_decay``),
    ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 - beta2) g^2`` (AMSGrad: the running
    maximum of ``v``), ``p -= lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)``.

    Parameters
    ----------
    params
        Parameters or parameter groups (see :class:`Optimizer`).
    lr
        Learning rate >= 0 (default 1e-3).
    betas
        ``(beta1, beta2)`` in [0, 1) (default ``(0.9, 0.999)``).
    eps
        >= 0, added to the denominator (default 1e-8).
    weight_decay
        >= 0 (default 0).
    amsgrad
        Use the AMSGrad variant.
    maximize
        Maximise the objective instead.
    decoupled_weight_decay
        Decay the weights directly (AdamW) instead of adding an L2 gradient.

    Shapes
    ------
    ``state[p]``: ``step`` (float), ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``) shaped
    like ``p``.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False, decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad,
                                  "maximize": maximize,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    def _check_hyper(self, group: Dict[str, Any], label: Label) -> None:
        _check_adam(group, label)

    def _l2(self, group: Dict[str, Any]) -> float:
        return 0.0 if group["decoupled_weight_decay"] else group["weight_decay"]

    def _state_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        base = ("step", "exp_avg", "exp_avg_sq")
        return base + ("max_exp_avg_sq",) if group["amsgrad"] else base

    def _update(self, p: Parameter, grad: np.ndarray, group: Dict[str, Any], state: Dict[str, Any],
                gbuf: np.ndarray, tmp: np.ndarray) -> None:
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        v_max = state.setdefault("max_exp_avg_sq", np.zeros_like(p.data)) if group["amsgrad"] else None
        state["step"] += 1.0
        t = state["step"]
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        if group["decoupled_weight_decay"] and group["weight_decay"]:
            decoupled_weight_decay(p.data, lr, group["weight_decay"])
        bc1, bc2_sqrt = 1.0 - beta1 ** t, math.sqrt(1.0 - beta2 ** t)
        # torch's eps (added after dividing sqrt(v) by bc2_sqrt) is adam_step's eps * bc2_sqrt
        adam_step(p.data, grad, state["exp_avg"], state["exp_avg_sq"], v_max,
                  lr * bc2_sqrt / bc1, beta1, beta2, group["eps"] * bc2_sqrt, tmp)


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): :class:`Adam` with decoupled weight decay,
    ``p *= 1 - lr * weight_decay`` before each update, default ``weight_decay=1e-2``.

    Parameters
    ----------
    params, lr, betas, eps, amsgrad, maximize
        As :class:`Adam`.
    weight_decay
        >= 0 (default 1e-2).

    Shapes
    ------
    As :class:`Adam`.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def _check_hyper(self, group: Dict[str, Any], label: Label) -> None:
        group["decoupled_weight_decay"] = True  # as torch: AdamW's groups always decouple
        _check_adam(group, label)


class RMSprop(Optimizer):
    """RMSprop, torch's rule (``torch.optim.RMSprop``; Keras's differs in where ``eps`` goes).

    ``g = grad + weight_decay * p``; ``v = alpha v + (1 - alpha) g^2``; centered:
    ``a = alpha a + (1 - alpha) g`` and ``d = sqrt(v - a^2) + eps``, else ``d = sqrt(v) + eps``;
    with momentum ``buf = momentum buf + g / d``, ``p -= lr buf``, else ``p -= lr g / d``.

    Parameters
    ----------
    params
        Parameters or parameter groups (see :class:`Optimizer`).
    lr
        Learning rate >= 0 (default 1e-2).
    alpha
        Smoothing constant >= 0 (default 0.99).
    eps
        >= 0 (default 1e-8).
    weight_decay
        L2 penalty >= 0 (default 0).
    momentum
        >= 0 (default 0).
    centered
        Normalise by the estimated variance of the gradient.
    maximize
        Maximise the objective instead.

    Shapes
    ------
    ``state[p]``: ``step`` (float), ``square_avg`` (and ``momentum_buffer``, ``grad_avg``)
    shaped like ``p``.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered, "maximize": maximize})

    def _check_hyper(self, group: Dict[str, Any], label: Label) -> None:
        _check_common(group, label, ("lr", "alpha", "eps", "weight_decay", "momentum"),
                      ("centered", "maximize"))

    def _state_keys(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        keys = ("step", "square_avg")
        if group["momentum"] > 0:
            keys += ("momentum_buffer",)
        return keys + ("grad_avg",) if group["centered"] else keys

    def _update(self, p: Parameter, grad: np.ndarray, group: Dict[str, Any], state: Dict[str, Any],
                gbuf: np.ndarray, tmp: np.ndarray) -> None:
        if not state:
            state["step"] = 0.0
            state["square_avg"] = np.zeros_like(p.data)
        state["step"] += 1.0
        alpha = group["alpha"]
        sq = state["square_avg"]
        moving_average(sq, grad, alpha, tmp, square=True)
        if group["centered"]:
            avg = state.setdefault("grad_avg", np.zeros_like(p.data))
            moving_average(avg, grad, alpha, tmp)
            np.multiply(avg, avg, out=tmp)
            np.subtract(sq, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(sq, out=tmp)
        tmp += group["eps"]
        np.divide(grad, tmp, out=tmp)  # g / d
        if group["momentum"] > 0:
            buf = state.setdefault("momentum_buffer", np.zeros_like(p.data))
            buf *= group["momentum"]
            buf += tmp
            np.multiply(buf, group["lr"], out=tmp)
        else:
            tmp *= group["lr"]
        data = p.data
        data -= tmp
