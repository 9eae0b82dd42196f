"""rnnkit.optim (PyTorch-style optimizers over rnnkit.nn Parameters) and
rnnkit.optim.lr_scheduler: update-for-update parity with torch.optim (float64 at 1e-6, float32
at 1e-5; the observed differences are ~1e-16 and ~5e-7), parameter groups, skipped parameters,
state dicts (also torch's), errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rnnkit import nn, optim
from rnnkit.optim import lr_scheduler as L

torch = pytest.importorskip("torch")

_TOL = {np.float64: 1e-6, np.float32: 1e-5}
_SHAPES = [(5, 3), (4,), (2, 2)]

# name -> (ours, torch's), both called with (params, **kwargs)
_CASES = {
    "sgd": (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
    "sgd_momentum_dampening_wd_maximize": (
        optim.SGD, torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05, "maximize": True}),
    "sgd_nesterov": (optim.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    "adam": (optim.Adam, torch.optim.Adam, {}),
    "adam_amsgrad_l2": (optim.Adam, torch.optim.Adam,
                        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1,
                         "amsgrad": True}),
    "adam_maximize": (optim.Adam, torch.optim.Adam, {"lr": 0.01, "maximize": True}),
    "adamw": (optim.AdamW, torch.optim.AdamW, {"lr": 0.01}),
    "adamw_amsgrad": (optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    "rmsprop": (optim.RMSprop, torch.optim.RMSprop, {}),
    "rmsprop_centered_momentum_wd": (
        optim.RMSprop, torch.optim.RMSprop,
        {"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1, "momentum": 0.5, "centered": True}),
}


def _setup(rng, dtype, steps=12):
    w0 = [rng.normal(size=s).astype(dtype) for s in _SHAPES]
    grads = [[rng.normal(size=s).astype(dtype) for s in _SHAPES] for _ in range(steps)]
    return w0, grads


def _run_both(ours_cls, torch_cls, kwargs, w0, grads, skip=lambda step, i: False):
    ps = [nn.Parameter(w.copy()) for w in w0]
    ts = [torch.tensor(w.copy(), requires_grad=True) for w in w0]
    ours, theirs = ours_cls(ps, **kwargs), torch_cls(ts, **kwargs)
    for step, g in enumerate(grads):
        for i, (p, t, gi) in enumerate(zip(ps, ts, g)):
            if skip(step, i):
                p.grad, t.grad = None, None
            else:
                p.grad, t.grad = gi.copy(), torch.tensor(gi)
        ours.step()
        theirs.step()
    return ps, ts, ours, theirs


def _assert_same(ps, ts, tol):
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=0, atol=tol)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_matches_torch_optim(rng, case, dtype):
    ours_cls, torch_cls, kwargs = _CASES[case]
    w0, grads = _setup(rng, dtype)
    ps, ts, ours, theirs = _run_both(ours_cls, torch_cls, kwargs, w0, grads)
    _assert_same(ps, ts, _TOL[dtype])
    assert all(p.data.dtype == dtype for p in ps)
    assert not np.allclose(ps[0].data, w0[0], atol=1e-3)
    # the same state entries as torch, with the same values
    theirs_sd = theirs.state_dict()["state"]
    ours_sd = ours.state_dict()["state"]
    assert set(ours_sd) == set(theirs_sd)
    for k, st in theirs_sd.items():
        assert set(ours_sd[k]) == set(st)
        for key, v in st.items():
            np.testing.assert_allclose(np.asarray(ours_sd[k][key]), v.detach().numpy(),
                                       rtol=_TOL[dtype], atol=_TOL[dtype])


@pytest.mark.torch
@pytest.mark.parametrize("case", ["sgd_momentum_dampening_wd_maximize", "adam_amsgrad_l2", "adamw",
                                  "rmsprop_centered_momentum_wd"])
def test_parameters_without_grad_are_skipped_as_in_torch(rng, case):
    """A parameter whose .grad is None is not updated and its state (Adam's per-parameter step
    count too) does not advance."""
    ours_cls, torch_cls, kwargs = _CASES[case]
    w0, grads = _setup(rng, np.float64)
    never = lambda step, i: i == 2 or (step + i) % 3 == 0  # noqa: E731
    ps, ts, ours, _ = _run_both(ours_cls, torch_cls, kwargs, w0, grads, skip=never)
    _assert_same(ps, ts, 1e-6)
    np.testing.assert_array_equal(ps[2].data, w0[2])
    assert ps[2] not in ours.state
    if "step" in ours.state[ps[0]]:
        assert ours.state[ps[0]]["step"] == sum(not never(s, 0) for s in range(len(grads)))


@pytest.mark.torch
def test_param_groups_with_their_own_hyper_parameters(rng):
    w0, grads = _setup(rng, np.float64)

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.1, "betas": (0.5, 0.9)}]

    ps = [nn.Parameter(w.copy()) for w in w0]
    ts = [torch.tensor(w.copy(), requires_grad=True) for w in w0]
    ours = optim.Adam(groups(ps), lr=0.01, amsgrad=True)
    theirs = torch.optim.Adam(groups(ts), lr=0.01, amsgrad=True)
    for g in grads:
        for p, t, gi in zip(ps, ts, g):
            p.grad, t.grad = gi.copy(), torch.tensor(gi)
        ours.step()
        theirs.step()
    _assert_same(ps, ts, 1e-6)
    assert [len(g["params"]) for g in ours.param_groups] == [2, 1]
    assert ours.param_groups[1]["lr"] == 0.1 and ours.param_groups[0]["lr"] == 0.01
    assert ours.param_groups[1]["betas"] == (0.5, 0.9) and ours.param_groups[1]["amsgrad"] is True
    # the same group keys as torch, but torch's device flags (foreach, fused, ...)
    torch_only = {"foreach", "capturable", "differentiable", "fused"}
    for og, tg in zip(ours.param_groups, theirs.param_groups):
        assert set(og) == set(tg) - torch_only
        assert {k: og[k] for k in og if k != "params"} == {k: tg[k] for k in og if k != "params"}


@pytest.mark.torch
@pytest.mark.parametrize("cls,torch_cls", [(optim.SGD, torch.optim.SGD), (optim.Adam, torch.optim.Adam),
                                           (optim.AdamW, torch.optim.AdamW),
                                           (optim.RMSprop, torch.optim.RMSprop)])
def test_defaults_are_torchs(cls, torch_cls):
    ours = cls([nn.Parameter(np.zeros(2))]).defaults
    theirs = torch_cls([torch.zeros(2, requires_grad=True)]).defaults
    assert ours == {k: theirs[k] for k in ours}


def test_zero_grad_and_closure(rng):
    lin = nn.Linear(3, 2, seed=0, dtype=np.float64)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    x = rng.normal(size=(4, 3))

    def closure():
        opt.zero_grad()
        y = lin(x)
        lin.backward(y)  # d(0.5 * sum(y^2)) / dy = y
        return 0.5 * float(np.sum(y * y))

    losses = [opt.step(closure) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]
    assert opt.step() is None
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in lin.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in lin.parameters())


@pytest.mark.torch
def test_trains_an_nn_module_like_torch(rng):
    """nn.Linear + optim.Adam against torch.nn.Linear + torch.optim.Adam on the same data."""
    lin = nn.Linear(4, 3, seed=1, dtype=np.float64)
    tlin = torch.nn.Linear(4, 3, dtype=torch.float64)
    tlin.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    opt = optim.Adam(lin.parameters(), lr=0.05)
    topt = torch.optim.Adam(tlin.parameters(), lr=0.05)
    x, target = rng.normal(size=(8, 4)), rng.normal(size=(8, 3))
    for _ in range(10):
        opt.zero_grad()
        y = lin(x)
        lin.backward(2.0 * (y - target) / y.size)  # mean squared error
        opt.step()
        topt.zero_grad()
        torch.nn.functional.mse_loss(tlin(torch.tensor(x)), torch.tensor(target)).backward()
        topt.step()
    for k, v in tlin.state_dict().items():
        np.testing.assert_allclose(lin.state_dict()[k], v.detach().numpy(), rtol=0, atol=1e-6)


def test_named_parameters_give_param_names():
    lin = nn.Linear(2, 2, seed=0)
    opt = optim.RMSprop(lin.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert all(isinstance(p, nn.Parameter) for p in opt.param_groups[0]["params"])
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]


# ---- state dicts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
                                  lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda ps: optim.RMSprop(ps, momentum=0.3, centered=True),
                                  lambda ps: optim.AdamW(ps, lr=0.01)],
                         ids=["adam", "sgd", "rmsprop", "adamw"])
def test_state_dict_round_trip_continues_identically(rng, make):
    w0, grads = _setup(rng, np.float32)
    a_ps = [nn.Parameter(w.copy()) for w in w0]
    a = make(a_ps)
    for g in grads[:5]:
        for p, gi in zip(a_ps, g):
            p.grad = gi
        a.step()
    sd = a.state_dict()
    b_ps = [nn.Parameter(p.data.copy()) for p in a_ps]
    b = make(b_ps)
    b.load_state_dict(sd)
    for p in b_ps:  # copies, in the parameter's dtype
        for v in b.state[p].values():
            if isinstance(v, np.ndarray):
                assert v.dtype == np.float32 and v.flags.c_contiguous
    for g in grads[5:]:
        for p, q, gi in zip(a_ps, b_ps, g):
            p.grad, q.grad = gi, gi.copy()
        a.step()
        b.step()
    for p, q in zip(a_ps, b_ps):
        np.testing.assert_array_equal(p.data, q.data)
    # the saved dict is a copy: later steps did not change it
    first = next(iter(sd["state"].values()))
    assert any(isinstance(v, np.ndarray) and not np.array_equal(v, a.state[a_ps[0]][k])
               for k, v in first.items())


@pytest.mark.torch
def test_loads_a_torch_state_dict(rng):
    """torch.optim.Adam's state_dict (tensors) loads into optim.Adam, which then continues as
    torch does; the saved hyper-parameters (here lr) come with it."""
    w0, grads = _setup(rng, np.float64)
    ts = [torch.tensor(w.copy(), requires_grad=True) for w in w0]
    theirs = torch.optim.Adam(ts, lr=0.02, amsgrad=True)
    for g in grads[:4]:
        for t, gi in zip(ts, g):
            t.grad = torch.tensor(gi)
        theirs.step()
    ps = [nn.Parameter(t.detach().numpy().copy()) for t in ts]
    ours = optim.Adam(ps, lr=0.5, amsgrad=True)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["lr"] == 0.02 and ours.state[ps[0]]["step"] == 4.0
    for g in grads[4:]:
        for p, t, gi in zip(ps, ts, g):
            p.grad, t.grad = gi.copy(), torch.tensor(gi)
        ours.step()
        theirs.step()
    _assert_same(ps, ts, 1e-6)


def test_load_state_dict_mismatches_are_named():
    ps = [nn.Parameter(np.zeros((2, 2))), nn.Parameter(np.zeros(3))]
    opt = optim.Adam(ps)
    for p in ps:
        p.grad = np.ones_like(p.data)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match=r"state_dict\['param_groups'\]: expected 2 parameter groups"):
        optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"state_dict\['param_groups'\]\[0\]\['params'\]: expected 1 "):
        optim.Adam(ps[:1]).load_state_dict(sd)
    swapped = [nn.Parameter(np.zeros(3)), nn.Parameter(np.zeros((2, 2)))]
    with pytest.raises(ValueError, match=r"state_dict\['state'\]\[0\]\['exp_avg'\]: expected shape \(3,\)"):
        optim.Adam(swapped).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"expected the entries \['step', 'exp_avg', 'exp_avg_sq', "
                                         r"'max_exp_avg_sq'\] of Adam, missing \['max_exp_avg_sq'\]"):
        optim.Adam(ps, amsgrad=True).load_state_dict({**sd, "param_groups": [
            {**sd["param_groups"][0], "amsgrad": True}]})
    with pytest.raises(ValueError, match="state_dict: expected a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_argument_errors_name_the_argument():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="lr: expected a number >= 0.0, got -0.1"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a number in \[0, 1\), got 1.0"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov: Nesterov momentum needs momentum > 0 and "
                                         "dampening == 0, got momentum=0.0"):
        optim.SGD([p], nesterov=True)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lr'\]: expected a number >= 0.0, got -1.0"):
        optim.Adam([{"params": [p]}, {"params": [nn.Parameter(np.zeros(1))], "lr": -1.0}])
    with pytest.raises(ValueError, match="params: expected at least one parameter, got an empty list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="params: expected an iterable of Parameters.*got Parameter"):
        optim.Adam(p)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\]: expected a "
                                        r"rnnkit.nn.Parameter, got ndarray"):
        optim.Adam([np.zeros(2)])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="amsgrad: expected a bool, got int"):
        optim.Adam([p], amsgrad=1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([p, p], lr=0.1)
    opt = optim.Adam([p])
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].grad: expected a float "
                                         r"array of shape \(2,\) \(the parameter's\), got shape \(3,\)"):
        opt.step()


# ---- learning-rate schedulers -----------------------------------------------------------------------

def _two_groups(module_lr=0.5):
    ps = [nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))]
    ts = [torch.zeros(2, dtype=torch.float64, requires_grad=True),
          torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    ours = optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.2}], lr=module_lr, momentum=0.9)
    theirs = torch.optim.SGD([{"params": ts[:1]}, {"params": ts[1:], "lr": 0.2}], lr=module_lr,
                             momentum=0.9)
    return ps, ts, ours, theirs


_METRICS = [1.0, 0.9, 0.85, 0.85, 0.86, 0.849, 0.8499, 0.9, 0.7, 0.7, 0.71, 0.72, 0.73, 0.7, 0.69,
            0.69, 0.69, 0.69, 0.5, 0.5, 0.5, 0.5, 0.5, 0.49999, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45]

_SCHEDULERS = {
    "step": (lambda o: L.StepLR(o, step_size=4, gamma=0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)),
    "step_default_gamma": (lambda o: L.StepLR(o, 7), lambda o: torch.optim.lr_scheduler.StepLR(o, 7)),
    "cosine": (lambda o: L.CosineAnnealingLR(o, T_max=10),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)),
    "cosine_eta_min_past_t_max": (lambda o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
                                  lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    "plateau": (lambda o: L.ReduceLROnPlateau(o, patience=2),
                lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=2)),
    "plateau_abs_cooldown_min_lr": (
        lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=0.01, threshold_mode="abs",
                                      cooldown=2, min_lr=[0.05, 0.01]),
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=0.01,
                                                             threshold_mode="abs", cooldown=2,
                                                             min_lr=[0.05, 0.01])),
    "plateau_max": (lambda o: L.ReduceLROnPlateau(o, mode="max", patience=0, factor=0.3),
                    lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", patience=0,
                                                                         factor=0.3)),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(_SCHEDULERS))
def test_schedulers_match_torch_over_30_steps(name):
    """The rates of both groups after each of 30 epochs, and the parameters they drove."""
    ps, ts, ours_opt, theirs_opt = _two_groups()
    make_ours, make_theirs = _SCHEDULERS[name]
    ours, theirs = make_ours(ours_opt), make_theirs(theirs_opt)
    assert ours.get_last_lr() == theirs.get_last_lr()
    seen = set()
    for epoch in range(30):
        for p, t in zip(ps, ts):
            p.grad, t.grad = np.ones(p.data.shape), torch.ones(t.shape, dtype=torch.float64)
        ours_opt.step()
        theirs_opt.step()
        if name.startswith("plateau"):
            ours.step(_METRICS[epoch])
            theirs.step(_METRICS[epoch])
        else:
            ours.step()
            theirs.step()
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12, atol=0)
        assert [g["lr"] for g in ours_opt.param_groups] == ours.get_last_lr()
        seen.add(tuple(ours.get_last_lr()))
    assert len(seen) > 2  # the schedule did change the rates
    _assert_same(ps, ts, 1e-9)


def test_scheduler_state_dict_resumes():
    ps, _, opt, _ = _two_groups()
    sched = L.CosineAnnealingLR(opt, T_max=6, eta_min=0.05)
    for _ in range(4):
        sched.step()
    sd, opt_sd = sched.state_dict(), opt.state_dict()
    assert "optimizer" not in sd and sd["last_epoch"] == 4 and sd["base_lrs"] == [0.5, 0.2]
    ps2, _, opt2, _ = _two_groups()
    opt2.load_state_dict(opt_sd)
    sched2 = L.CosineAnnealingLR(opt2, T_max=6, eta_min=0.05, last_epoch=sd["last_epoch"] - 1)
    sched2.load_state_dict(sd)
    for _ in range(5):
        sched.step()
        sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
    plateau = L.ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)
    other = L.ReduceLROnPlateau(opt2, patience=0)
    other.load_state_dict(plateau.state_dict())
    assert other.num_bad_epochs == plateau.num_bad_epochs and other.best == 1.0
    with pytest.raises(ValueError, match=r"state_dict: unexpected keys \['best'"):
        sched2.load_state_dict(plateau.state_dict())


def test_scheduler_argument_errors():
    _, _, opt, _ = _two_groups()
    with pytest.raises(TypeError, match="optimizer: expected a rnnkit.optim.Optimizer, got SGD"):
        L.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), 2)
    with pytest.raises(ValueError, match="step_size: expected an int >= 1, got 0"):
        L.StepLR(opt, 0)
    with pytest.raises(ValueError, match="factor: expected a number < 1.0, got 1.0"):
        L.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match=r"min_lr: expected 2 values \(one per parameter group\), got 3"):
        L.ReduceLROnPlateau(opt, min_lr=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="mode: expected 'min' or 'max', got 'up'"):
        L.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(KeyError, match="expected an 'initial_lr' entry to resume with last_epoch=3"):
        L.CosineAnnealingLR(opt, T_max=5, last_epoch=3)
    with pytest.raises(TypeError, match="metrics: expected a scalar, got list"):
        L.ReduceLROnPlateau(opt).step([1.0, 2.0])


def test_cosine_closed_form_within_the_first_half_period():
    """Over the first T_max epochs the recursive update equals the closed form."""
    _, _, opt, _ = _two_groups()
    sched = L.CosineAnnealingLR(opt, T_max=8, eta_min=0.1)
    for t in range(1, 9):
        sched.step()
        want = 0.1 + (0.5 - 0.1) * (1 + math.cos(math.pi * t / 8)) / 2
        assert sched.get_last_lr()[0] == pytest.approx(want, rel=1e-12)
