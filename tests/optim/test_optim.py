"""Optimizers and schedulers against PyTorch: the same parameters after 20 steps on the same gradients, the
same learning-rate (and momentum) sequences, and state dicts that round-trip and load across frameworks."""
import numpy as np
import pytest

import minitensor as mt
from minitensor import nn, optim
from minitensor.optim import lr_scheduler

from optional_torch import needs_torch, torch


SHAPES = [(3, 4), (5,)]


def make(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [nn.Parameter(mt.tensor(v)) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    return ours, theirs


def gradients(step, dtype):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def run(our_cls, their_cls, kwargs, steps=20, dtype=np.float64, groups=False, start=0, pair=None):
    ours, theirs = pair if pair is not None else make(dtype)
    if groups:
        o_opt = our_cls([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.05}], **kwargs)
        t_opt = their_cls([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.05}], **kwargs)
    else:
        o_opt, t_opt = our_cls(ours, **kwargs), their_cls(theirs, **kwargs)
    for step in range(start, start + steps):
        for p, q, g in zip(ours, theirs, gradients(step, dtype)):
            p.grad = mt.tensor(g)
            q.grad = torch.tensor(g)
        o_opt.step()
        t_opt.step()
    return ours, theirs, o_opt, t_opt


def assert_params_equal(ours, theirs, dtype=np.float64):
    rtol, atol = (1e-11, 1e-13) if dtype == np.float64 else (2e-5, 1e-6)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=rtol, atol=atol)


SGD_OPTIONS = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.1, momentum=0.9, dampening=0.3),
               dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, weight_decay=0.01, momentum=0.5),
               dict(lr=0.1, momentum=0.9, maximize=True)]
ADAM_OPTIONS = [dict(), dict(lr=0.01, betas=(0.8, 0.99)), dict(weight_decay=0.1), dict(amsgrad=True),
                dict(amsgrad=True, weight_decay=0.05, maximize=True), dict(eps=1e-3)]


@needs_torch
@pytest.mark.parametrize("kwargs", SGD_OPTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_matches_pytorch(kwargs, dtype):
    ours, theirs, _, _ = run(optim.SGD, torch.optim.SGD, kwargs, dtype=dtype)
    assert_params_equal(ours, theirs, dtype)


@needs_torch
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("kwargs", ADAM_OPTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_matches_pytorch(name, kwargs, dtype):
    ours, theirs, _, _ = run(getattr(optim, name), getattr(torch.optim, name), kwargs, dtype=dtype)
    assert_params_equal(ours, theirs, dtype)


@needs_torch
@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("AdamW", dict(lr=0.01))])
def test_param_groups_with_their_own_lr(name, kwargs):
    ours, theirs, o_opt, _ = run(getattr(optim, name), getattr(torch.optim, name), kwargs, groups=True)
    assert_params_equal(ours, theirs)
    assert o_opt.param_groups[1]["lr"] == 0.05 and o_opt.param_groups[0]["lr"] == kwargs["lr"]


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(amsgrad=True)),
                                         ("AdamW", dict(lr=0.01))])
@needs_torch
def test_state_dict_round_trip_continues_identically(name, kwargs):
    cls = getattr(optim, name)
    ours, _, o_opt, _ = run(cls, getattr(torch.optim, name), kwargs, steps=10)
    sd = o_opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"] and sd["param_groups"][0]["params"] == [0, 1]
    resumed_params = [nn.Parameter(p.detach().clone()) for p in ours]
    resumed = cls(resumed_params, **kwargs)
    resumed.load_state_dict(sd)
    for step in range(10, 20):
        for p, q, g in zip(ours, resumed_params, gradients(step, np.float64)):
            p.grad = mt.tensor(g)
            q.grad = mt.tensor(g)
        o_opt.step()
        resumed.step()
    for p, q in zip(ours, resumed_params):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


@needs_torch
@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(amsgrad=True))])
def test_loading_a_pytorch_optimizer_state_dict(name, kwargs):
    ours, theirs, _, t_opt = run(getattr(optim, name), getattr(torch.optim, name), kwargs, steps=10)
    fresh = [nn.Parameter(mt.tensor(q.detach().numpy())) for q in theirs]
    o_opt = getattr(optim, name)(fresh, **kwargs)
    o_opt.load_state_dict(t_opt.state_dict())
    for step in range(10, 20):
        for p, q, g in zip(fresh, theirs, gradients(step, np.float64)):
            p.grad = mt.tensor(g)
            q.grad = torch.tensor(g)
        o_opt.step()
        t_opt.step()
    assert_params_equal(fresh, theirs)


@needs_torch
def test_state_dict_structure_matches_pytorch():
    _, _, o_opt, t_opt = run(optim.Adam, torch.optim.Adam, dict(amsgrad=True), steps=3)
    ours, theirs = o_opt.state_dict(), t_opt.state_dict()
    assert ours["param_groups"][0].keys() <= theirs["param_groups"][0].keys()
    assert ours["state"][0].keys() == theirs["state"][0].keys()
    for key in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_allclose(ours["state"][1][key].numpy(), theirs["state"][1][key].numpy(), rtol=1e-12)


def test_zero_grad_and_skipping_parameters_without_grad():
    p, q = nn.Parameter(mt.ones(2)), nn.Parameter(mt.ones(2))
    opt = optim.SGD([p, q], lr=1.0)
    p.grad = mt.ones(2)
    opt.step()
    np.testing.assert_array_equal(p.detach().numpy(), [0, 0])
    np.testing.assert_array_equal(q.detach().numpy(), [1, 1])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0, 0])
    opt.zero_grad()
    assert p.grad is None


def test_bad_hyperparameters_and_params():
    p = nn.Parameter(mt.ones(2))
    for cls, kwargs, match in [(optim.SGD, dict(lr=-1), "Invalid learning rate"),
                               (optim.SGD, dict(lr=0.1, nesterov=True), "Nesterov momentum requires"),
                               (optim.Adam, dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
                               (optim.Adam, dict(eps=-1), "Invalid epsilon"),
                               (optim.AdamW, dict(weight_decay=-0.1), "Invalid weight_decay")]:
        with pytest.raises(ValueError, match=match):
            cls([p], **kwargs)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="optimizer can only optimize Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)


# ---------------------------------------------------------------------------- schedulers
def sequences(make_ours, make_theirs, steps=30, opt="SGD"):
    ours_p, theirs_p = make()
    o_opt = getattr(optim, opt)(ours_p, lr=0.1, **({"momentum": 0.9} if opt == "SGD" else {}))
    t_opt = getattr(torch.optim, opt)(theirs_p, lr=0.1, **({"momentum": 0.9} if opt == "SGD" else {}))
    o_s, t_s = make_ours(o_opt), make_theirs(t_opt)
    ours, theirs = [], []
    for _ in range(steps):
        ours.append((o_s.get_last_lr()[0], o_opt.param_groups[0].get("momentum", o_opt.param_groups[0].get("betas"))))
        theirs.append((t_s.get_last_lr()[0], t_opt.param_groups[0].get("momentum", t_opt.param_groups[0].get("betas"))))
        o_opt.step()
        t_opt.step()
        o_s.step()
        t_s.step()
    for (a, ma), (b, mb) in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
        assert np.allclose(np.asarray(ma, dtype=float), np.asarray(mb, dtype=float), rtol=1e-12)


@needs_torch
def test_step_lr():
    sequences(lambda o: lr_scheduler.StepLR(o, 7, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5))


@needs_torch
def test_lambda_lr():
    fn = lambda epoch: 0.95 ** epoch  # noqa: E731
    sequences(lambda o: lr_scheduler.LambdaLR(o, fn), lambda o: torch.optim.lr_scheduler.LambdaLR(o, fn))


@needs_torch
def test_cosine_annealing_past_t_max():
    sequences(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
              lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001), steps=35)


@needs_torch
def test_linear_warmup():
    sequences(lambda o: lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=8),
              lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=8))


@needs_torch
def test_warmup_then_cosine_with_sequential_lr():
    def ours(o):
        return lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.01, total_iters=5),
                                             lr_scheduler.CosineAnnealingLR(o, T_max=20)], milestones=[5])

    def theirs(o):
        s = torch.optim.lr_scheduler
        return s.SequentialLR(o, [s.LinearLR(o, 0.01, total_iters=5), s.CosineAnnealingLR(o, T_max=20)], milestones=[5])

    sequences(ours, theirs)


@needs_torch
@pytest.mark.parametrize("opt", ["SGD", "Adam"])
@pytest.mark.parametrize("kwargs", [dict(), dict(three_phase=True), dict(anneal_strategy="linear", pct_start=0.25)])
def test_one_cycle_lr_with_momentum_cycling(opt, kwargs):
    sequences(lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=30, **kwargs),
              lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=30, **kwargs), steps=30, opt=opt)


def test_one_cycle_refuses_to_step_past_total_steps():
    p = nn.Parameter(mt.ones(1))
    s = lr_scheduler.OneCycleLR(optim.SGD([p], lr=0.1, momentum=0.9), max_lr=1.0, total_steps=3)
    for _ in range(3):
        s.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        s.step()


def test_scheduler_state_dict_round_trip():
    p = nn.Parameter(mt.ones(1))
    opt = optim.SGD([p], lr=0.1)
    s = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        s.step()
    state = s.state_dict()
    opt2 = optim.SGD([nn.Parameter(mt.ones(1))], lr=0.1)
    s2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    s2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    s.step()
    s2.step()
    assert s.get_last_lr() == s2.get_last_lr()
