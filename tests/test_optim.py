"""Tests for the optimizers and learning-rate schedules in ``cnnkit.optim``.

Every update rule is checked against a straightforward per-step NumPy
implementation of its formula written here (float64), and, when PyTorch is
installed, against ``torch.optim`` itself.
"""
import doctest
import io
import json
import math
import tracemalloc

import numpy as np
import pytest

from cnnkit import optim
from cnnkit import reference as R
from cnnkit.optim import (SGD, Adam, AdamW, CosineAnnealingLR, StepLR,
                          from_config, schedule_from_config)

from helpers import num_threads, require

N = 37          # parameters in the small problems
STEPS = 5


# ---------------------------------------------------------------------------
# independent implementations of the formulas
# ---------------------------------------------------------------------------
def ref_sgd(p, grads, lrs, momentum=0.0, nesterov=False, weight_decay=0.0):
    """SGD as written in PyTorch's documentation; ``lrs`` per step."""
    p = np.array(p, dtype=np.float64)
    b = None
    for g, lr in zip(grads, lrs):
        g = g + weight_decay * p
        if momentum != 0.0:
            b = g.copy() if b is None else momentum * b + g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def ref_adam(p, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             decoupled=False):
    """Adam / AdamW as in the papers, with bias-corrected moments."""
    p = np.array(p, dtype=np.float64)
    b1, b2 = betas
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def problem(seed=0, n=N, steps=STEPS, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]
    return p0, grads


def run(opt, p0, grads):
    params = p0.copy()
    for g in grads:
        opt.step(params, g)
    return params


def assert_f64_close(actual, expected):
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-13)


SGD_CASES = [
    dict(),
    dict(weight_decay=0.05),
    dict(momentum=0.9),
    dict(momentum=0.9, weight_decay=0.05),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.8, nesterov=True, weight_decay=0.05),
]

ADAM_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(betas=(0.5, 0.9), eps=1e-3),
    dict(betas=(0.0, 0.0)),
]

# (factory, reference) pairs covering every optimizer configuration
ALL_CASES = (
    [(lambda kw=kw: SGD(lr=0.1, **kw),
      lambda p, g, lrs, kw=kw: ref_sgd(p, g, lrs, **kw)) for kw in SGD_CASES]
    + [(lambda kw=kw: Adam(lr=0.01, **kw),
        lambda p, g, lrs, kw=kw: ref_adam(p, g, lrs, **kw))
       for kw in ADAM_CASES]
    + [(lambda: AdamW(lr=0.01),
        lambda p, g, lrs: ref_adam(p, g, lrs, weight_decay=0.01,
                                   decoupled=True)),
       (lambda: AdamW(lr=0.01, weight_decay=0.3, betas=[0.8, 0.99]),
        lambda p, g, lrs: ref_adam(p, g, lrs, betas=(0.8, 0.99),
                                   weight_decay=0.3, decoupled=True))]
)
CASE_IDS = ([f"SGD{kw}" for kw in SGD_CASES]
            + [f"Adam{kw}" for kw in ADAM_CASES]
            + ["AdamW", "AdamW(wd=0.3)"])


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
def test_sgd_matches_formula(kw):
    p0, grads = problem()
    actual = run(SGD(lr=0.1, **kw), p0, grads)
    assert_f64_close(actual, ref_sgd(p0, grads, [0.1] * STEPS, **kw))


@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_adam_matches_formula(kw):
    p0, grads = problem(1)
    actual = run(Adam(lr=0.01, **kw), p0, grads)
    assert_f64_close(actual, ref_adam(p0, grads, [0.01] * STEPS, **kw))


@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.0),
                                dict(weight_decay=0.3, betas=(0.8, 0.99))],
                         ids=str)
def test_adamw_matches_formula(kw):
    p0, grads = problem(2)
    actual = run(AdamW(lr=0.01, **kw), p0, grads)
    ref_kw = dict(kw)
    ref_kw.setdefault("weight_decay", 0.01)
    expected = ref_adam(p0, grads, [0.01] * STEPS, decoupled=True, **ref_kw)
    assert_f64_close(actual, expected)


def test_sgd_first_steps_by_hand():
    params = np.array([1.0, -2.0])
    grads = np.array([0.5, 0.25])
    opt = SGD(lr=0.1, momentum=0.9)
    opt.step(params, grads)                      # b = g
    np.testing.assert_array_equal(params, [1.0 - 0.05, -2.0 - 0.025])
    np.testing.assert_array_equal(opt.state_dict()["momentum_buffer"], grads)
    opt.step(params, grads)                      # b = 0.9 g + g
    np.testing.assert_allclose(params, [0.95 - 0.1 * 0.95,
                                        -2.025 - 0.1 * 0.475], rtol=1e-15)


def test_adam_first_step_moves_by_lr():
    # m_hat = g and v_hat = g^2 at t = 1, so the step is lr * g / (|g| + eps)
    params = np.array([1.0, -2.0, 3.0])
    grads = np.array([1e-3, -50.0, 2.0])
    Adam(lr=0.1, eps=1e-12).step(params, grads)
    expected = [1.0, -2.0, 3.0] - 0.1 * grads / (np.abs(grads) + 1e-12)
    np.testing.assert_allclose(params, expected, rtol=1e-14)
    np.testing.assert_allclose(params, [0.9, -1.9, 2.9], rtol=1e-9)


def test_adamw_decays_before_the_update():
    params = np.array([2.0])
    AdamW(lr=0.1, weight_decay=0.5, eps=1e-300).step(params, np.array([3.0]))
    np.testing.assert_allclose(params, [2.0 * (1 - 0.05) - 0.1], rtol=1e-15)


def test_zero_gradient_adam_is_still():
    params = np.linspace(-1, 1, 5)
    before = params.copy()
    opt = Adam()
    for _ in range(3):
        opt.step(params, np.zeros(5))
    np.testing.assert_array_equal(params, before)


@pytest.mark.parametrize("make, ref", ALL_CASES, ids=CASE_IDS)
def test_float32_keeps_float32(make, ref):
    p0, grads = problem(3, dtype=np.float32)
    opt = make()
    actual = run(opt, p0, grads)
    assert actual.dtype == np.float32
    for name, buf in opt.state_dict().items():
        if name not in ("iterations", "epoch"):
            assert buf.dtype == np.float32, name
    expected = ref(p0.astype(np.float64), [g.astype(np.float64)
                                           for g in grads],
                   [opt.lr] * STEPS)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, ref", ALL_CASES, ids=CASE_IDS)
def test_step_in_place_grads_untouched(make, ref):
    p0, grads = problem(4)
    params = p0.copy()
    address = params.__array_interface__["data"][0]
    weight = params[:6].reshape(2, 3)            # a layer's view
    opt = make()
    for g in grads:
        g_before = g.copy()
        g.flags.writeable = False                # any write would raise
        assert opt.step(params, g) is None
        np.testing.assert_array_equal(g, g_before)
    assert params.__array_interface__["data"][0] == address
    assert np.shares_memory(weight, params)
    np.testing.assert_array_equal(weight.ravel(), params[:6])
    assert not np.array_equal(params, p0)
    assert opt.iterations == STEPS


@pytest.mark.parametrize("make, ref", ALL_CASES, ids=CASE_IDS)
def test_no_parameter_sized_allocation_after_first_step(make, ref):
    n = 250_000                                  # 2 MB of float64
    p0, grads = problem(5, n=n, steps=4)
    params = p0.copy()
    opt = make()
    opt.step(params, grads[0])
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for g in grads[1:]:
            opt.step(params, g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < params.nbytes // 10


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------
def test_step_lr_values():
    s = StepLR(step_size=3, gamma=0.5)
    assert [s(0.8, e) for e in range(8)] == [
        0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2]
    assert StepLR(1)(1.0, 2) == pytest.approx(0.01, rel=1e-15)
    assert isinstance(s(1, 0), float)


def test_cosine_values():
    s = CosineAnnealingLR(t_max=10, eta_min=0.001)
    base = 0.1
    expected = {0: 0.1, 5: 0.0505, 10: 0.001, 15: 0.0505, 20: 0.1,
                1: 0.001 + 0.099 * (1 + math.cos(math.pi / 10)) / 2}
    for epoch, lr in expected.items():
        assert s(base, epoch) == pytest.approx(lr, rel=1e-14, abs=1e-17)
    lrs = [s(base, e) for e in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert CosineAnnealingLR(4)(2.0, 2) == pytest.approx(1.0, rel=1e-15)


def test_current_lr_follows_set_epoch():
    opt = SGD(lr=0.2, schedule=StepLR(2, gamma=0.1))
    assert opt.current_lr() == 0.2
    opt.set_epoch(1)
    assert opt.current_lr() == 0.2
    opt.set_epoch(4)
    assert opt.epoch == 4
    assert opt.current_lr() == pytest.approx(0.002, rel=1e-15)
    assert SGD(lr=0.3).current_lr() == 0.3


@pytest.mark.parametrize("opt_cls", [SGD, Adam, AdamW])
def test_step_uses_the_scheduled_lr(opt_cls):
    schedule = CosineAnnealingLR(t_max=3, eta_min=0.001)
    opt = opt_cls(lr=0.05, schedule=schedule)
    p0, grads = problem(6, steps=6)
    params = p0.copy()
    epochs = [0, 0, 1, 1, 2, 3]
    for epoch, g in zip(epochs, grads):
        opt.set_epoch(epoch)
        opt.step(params, g)
    lrs = [schedule(0.05, e) for e in epochs]
    if opt_cls is SGD:
        expected = ref_sgd(p0, grads, lrs)
    else:
        expected = ref_adam(p0, grads, lrs, decoupled=opt_cls is AdamW,
                            weight_decay=0.0 if opt_cls is Adam else 0.01)
    assert_f64_close(params, expected)


def test_schedule_config_round_trip():
    for s in (StepLR(4, gamma=0.3), CosineAnnealingLR(7, eta_min=1e-4)):
        cfg = json.loads(json.dumps(s.get_config()))
        again = schedule_from_config(cfg)
        assert type(again) is type(s)
        assert again.get_config() == s.get_config()
        assert again == s
        assert [again(0.1, e) for e in range(12)] == [
            s(0.1, e) for e in range(12)]
    assert StepLR(3).get_config() == {"class_name": "StepLR", "step_size": 3,
                                      "gamma": 0.1}
    assert schedule_from_config(None) is None


@pytest.mark.parametrize("make, exc, match", [
    (lambda: StepLR(0), ValueError, r"step_size must be an int >= 1, got 0"),
    (lambda: StepLR(2.0), TypeError, r"step_size must be an int"),
    (lambda: StepLR(True), TypeError, r"step_size must be an int"),
    (lambda: StepLR(2, gamma=0), ValueError, r"gamma must be .*> 0, got 0"),
    (lambda: StepLR(2, gamma="x"), TypeError, r"gamma must be"),
    (lambda: StepLR(2, gamma=float("nan")), ValueError, r"gamma must be"),
    (lambda: CosineAnnealingLR(0), ValueError, r"t_max must be an int >= 1"),
    (lambda: CosineAnnealingLR(None), TypeError, r"t_max must be an int"),
    (lambda: CosineAnnealingLR(5, eta_min=-1e-3), ValueError,
     r"eta_min must be a finite float >= 0, got -0.001"),
    (lambda: StepLR(2)(0.1, -1), ValueError, r"epoch must be an int >= 0"),
    (lambda: StepLR(2)(0.1, 1.5), TypeError, r"epoch must be an int"),
    (lambda: StepLR(2)(0.0, 1), ValueError, r"base_lr must be .*> 0"),
    (lambda: schedule_from_config([1]), TypeError, r"must be a dict"),
    (lambda: schedule_from_config({"step_size": 1}), ValueError,
     r"no 'class_name'"),
    (lambda: schedule_from_config({"class_name": "ExponentialLR"}),
     ValueError, r"unknown schedule class_name 'ExponentialLR'.*StepLR"),
    (lambda: schedule_from_config({"class_name": "StepLR", "step_size": 1,
                                   "gama": 0.1}),
     ValueError, r"unknown argument\(s\) \['gama'\] for StepLR"),
])
def test_schedule_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# ---------------------------------------------------------------------------
# configs and state
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("make, ref", ALL_CASES, ids=CASE_IDS)
def test_config_round_trip_continues_identically(make, ref):
    opt = make()
    opt.schedule = StepLR(2, gamma=0.5)
    cfg = opt.get_config()
    text = json.dumps(cfg)
    clone = from_config(json.loads(text))
    assert type(clone) is type(opt)
    assert clone.get_config() == cfg
    assert json.dumps(clone.get_config()) == text
    assert repr(clone) == repr(opt)

    p0, grads = problem(7, steps=6)
    epochs = [0, 0, 1, 2, 2, 3]
    # from the start: the clone makes the original's steps
    a, b = p0.copy(), p0.copy()
    for epoch, g in zip(epochs, grads):
        for o, p in ((opt, a), (clone, b)):
            o.set_epoch(epoch)
            o.step(p, g)
    np.testing.assert_array_equal(a, b)
    # mid-training: a clone given the original's state carries on the same
    clone = from_config(cfg)
    clone.load_state_dict(opt.state_dict())
    b = a.copy()
    for epoch, g in zip([4, 4, 5], grads):
        for o, p in ((opt, a), (clone, b)):
            o.set_epoch(epoch)
            o.step(p, g)
    np.testing.assert_array_equal(a, b)


def test_get_config_contents():
    assert SGD().get_config() == {
        "class_name": "SGD", "lr": 0.01, "momentum": 0.0, "nesterov": False,
        "weight_decay": 0.0, "schedule": None}
    assert Adam().get_config() == {
        "class_name": "Adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
        "weight_decay": 0.0, "schedule": None}
    cfg = AdamW(schedule=CosineAnnealingLR(5)).get_config()
    assert cfg["class_name"] == "AdamW"
    assert cfg["weight_decay"] == 0.01
    assert cfg["schedule"] == {"class_name": "CosineAnnealingLR", "t_max": 5,
                               "eta_min": 0.0}
    # numpy scalars come back as plain Python numbers
    cfg = SGD(lr=np.float32(0.5), momentum=np.float64(0.5)).get_config()
    assert type(cfg["lr"]) is float and type(cfg["momentum"]) is float
    json.dumps(cfg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, ref", ALL_CASES, ids=CASE_IDS)
def test_state_dict_round_trip_is_bit_identical(make, ref, dtype):
    p0, grads = problem(8, steps=6, dtype=dtype)
    straight = run(make(), p0, grads)

    first = make()
    params = run(first, p0, grads[:3])
    state = first.state_dict()
    # through an .npz file, as a checkpoint would store it (no pickle)
    f = io.BytesIO()
    np.savez(f, **state)
    f.seek(0)
    with np.load(f, allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    second = make()
    second.load_state_dict(loaded)
    assert second.iterations == 3
    for g in grads[3:]:
        second.step(params, g)
    np.testing.assert_array_equal(params, straight)
    assert params.dtype == dtype


def test_state_dict_contents():
    p0, grads = problem(9)
    opt = SGD(momentum=0.9)
    assert set(opt.state_dict()) == {"iterations", "epoch"}
    run(opt, p0, grads[:2])
    opt.set_epoch(3)
    state = opt.state_dict()
    assert set(state) == {"iterations", "epoch", "momentum_buffer"}
    for key, value in (("iterations", 2), ("epoch", 3)):
        assert state[key].shape == () and state[key].dtype == np.int64
        assert int(state[key]) == value
    assert state["momentum_buffer"].shape == (N,)
    saved = state["momentum_buffer"].copy()
    opt.step(p0.copy(), grads[2])                # the state is a copy
    np.testing.assert_array_equal(state["momentum_buffer"], saved)
    assert set(SGD().state_dict()) == {"iterations", "epoch"}
    assert set(run_state(SGD(), p0, grads)) == {"iterations", "epoch"}
    assert set(run_state(Adam(), p0, grads)) == {
        "iterations", "epoch", "exp_avg", "exp_avg_sq"}


def run_state(opt, p0, grads):
    run(opt, p0, grads)
    return opt.state_dict()


def test_load_copies_and_restores_epoch():
    p0, grads = problem(10)
    opt = Adam()
    run(opt, p0, grads[:2])
    opt.set_epoch(7)
    state = opt.state_dict()
    other = Adam()
    other.load_state_dict(state)
    assert other.epoch == 7 and other.iterations == 2
    state["exp_avg"][:] = 123.0                  # not aliased
    assert not np.any(other.state_dict()["exp_avg"] == 123.0)


def test_fresh_state_loads_anywhere():
    p0, grads = problem(11)
    opt = SGD(momentum=0.9)
    opt.load_state_dict(SGD(momentum=0.9).state_dict())
    np.testing.assert_array_equal(run(opt, p0, grads),
                                  run(SGD(momentum=0.9), p0, grads))
    assert opt.iterations == STEPS
    # a stateless SGD's counters load into a bound one
    plain = SGD()
    run(plain, p0, grads)
    plain.load_state_dict({"iterations": np.array(2), "epoch": 0})
    assert plain.iterations == 2


def test_reset():
    p0, grads = problem(12)
    opt = Adam(schedule=StepLR(1))
    run(opt, p0, grads)
    opt.set_epoch(2)
    opt.reset()
    assert opt.iterations == 0 and opt.epoch == 0
    assert set(opt.state_dict()) == {"iterations", "epoch"}
    np.testing.assert_array_equal(run(opt, p0, grads),
                                  run(Adam(schedule=StepLR(1)), p0, grads))
    # after reset it may step parameters of another size and dtype
    opt.reset()
    p32, g32 = problem(13, n=5, dtype=np.float32)
    run(opt, p32, g32)
    assert opt.state_dict()["exp_avg"].dtype == np.float32


def test_lr_attribute():
    opt = SGD(lr=0.5)
    assert opt.lr == 0.5 and isinstance(opt.lr, float)
    opt.lr = 0.25
    assert opt.current_lr() == 0.25
    with pytest.raises(ValueError, match=r"SGD: lr must be a finite float > 0,"
                                         r" got -1"):
        opt.lr = -1
    assert opt.lr == 0.25


# ---------------------------------------------------------------------------
# get / from_config
# ---------------------------------------------------------------------------
def test_get():
    assert type(optim.get("sgd")) is SGD
    assert type(optim.get("ADAM")) is Adam
    assert type(optim.get("AdamW")) is AdamW
    assert optim.get("adam").get_config() == Adam().get_config()
    opt = SGD(lr=0.3)
    assert optim.get(opt) is opt
    assert optim.get("sgd") is not optim.get("sgd")


@pytest.mark.parametrize("bad", ["rmsprop", "", None, 3, SGD,
                                 {"class_name": "SGD"}])
def test_get_rejects(bad):
    valid = r"\['adam', 'adamw', 'sgd'\]"
    with pytest.raises(ValueError, match=r"unknown optimizer .*" + valid):
        optim.get(bad)


@pytest.mark.parametrize("cfg, exc, match", [
    ("SGD", TypeError, r"from_config: the config must be a dict"),
    ({"lr": 0.1}, ValueError, r"no 'class_name' key"),
    ({"class_name": "sgd"}, ValueError,
     r"unknown optimizer class_name 'sgd'; expected one of "
     r"\['Adam', 'AdamW', 'SGD'\]"),
    ({"class_name": "os.system"}, ValueError, r"unknown optimizer class_name"),
    ({"class_name": "SGD", "lr": 0.1, "betas": [0.9, 0.99]}, ValueError,
     r"unknown argument\(s\) \['betas'\] for SGD"),
    ({"class_name": "Adam", "lr": -1.0}, ValueError, r"Adam: lr must be"),
    ({"class_name": "SGD", "schedule": {"class_name": "Nope"}}, ValueError,
     r"unknown schedule class_name 'Nope'"),
])
def test_from_config_rejects(cfg, exc, match):
    with pytest.raises(exc, match=match):
        from_config(cfg)


def test_registries():
    assert optim.OPTIMIZERS == {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}
    assert optim.SCHEDULES == {"StepLR": StepLR,
                               "CosineAnnealingLR": CosineAnnealingLR}


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("make, exc, match", [
    (lambda: SGD(lr=0), ValueError, r"SGD: lr must be a finite float > 0, "
                                    r"got 0"),
    (lambda: SGD(lr=-0.1), ValueError, r"lr must be .*got -0.1"),
    (lambda: SGD(lr=float("inf")), ValueError, r"lr must be .*got inf"),
    (lambda: SGD(lr="0.1"), TypeError, r"lr must be .*got '0.1' of type str"),
    (lambda: SGD(lr=None), TypeError, r"lr must be .*NoneType"),
    (lambda: SGD(lr=True), TypeError, r"lr must be .*bool"),
    (lambda: SGD(momentum=-0.5), ValueError,
     r"SGD: momentum must be a finite float >= 0, got -0.5"),
    (lambda: SGD(momentum=[0.9]), TypeError, r"momentum must be"),
    (lambda: SGD(nesterov=True), ValueError,
     r"nesterov=True requires momentum > 0, got momentum=0.0"),
    (lambda: SGD(momentum=0.9, nesterov=1), TypeError,
     r"nesterov must be a bool, got 1"),
    (lambda: SGD(weight_decay=-1e-4), ValueError,
     r"SGD: weight_decay must be a finite float >= 0, got -0.0001"),
    (lambda: SGD(schedule=lambda lr, e: lr), TypeError,
     r"SGD: schedule must be a Schedule .* or None"),
    (lambda: Adam(lr=0), ValueError, r"Adam: lr must be"),
    (lambda: Adam(betas=0.9), TypeError, r"betas must be a pair of floats"),
    (lambda: Adam(betas=(0.9,)), TypeError, r"betas must be a pair"),
    (lambda: Adam(betas="ab"), TypeError, r"betas must be a pair"),
    (lambda: Adam(betas=(1.0, 0.999)), ValueError,
     r"Adam: betas\[0\] must be a float in \[0, 1\), got 1.0"),
    (lambda: Adam(betas=(0.9, -0.1)), ValueError,
     r"betas\[1\] must be a float in \[0, 1\), got -0.1"),
    (lambda: Adam(betas=(0.9, None)), TypeError, r"betas\[1\] must be"),
    (lambda: Adam(eps=0.0), ValueError,
     r"Adam: eps must be a finite float > 0, got 0.0"),
    (lambda: Adam(weight_decay=-1), ValueError, r"Adam: weight_decay must be"),
    (lambda: AdamW(weight_decay=-0.01), ValueError,
     r"AdamW: weight_decay must be a finite float >= 0, got -0.01"),
    (lambda: AdamW(betas=(0.9, 1.5)), ValueError, r"AdamW: betas\[1\]"),
    (lambda: AdamW(eps=-1), ValueError, r"AdamW: eps must be"),
    (lambda: SGD().set_epoch(-1), ValueError,
     r"SGD.set_epoch: epoch must be an int >= 0, got -1"),
    (lambda: SGD().set_epoch(1.0), TypeError, r"epoch must be an int"),
])
def test_hyperparameter_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def _arrays(kind):
    p = np.arange(6, dtype=np.float64)
    g = np.ones(6)
    if kind == "list":
        return list(p), g
    if kind == "int":
        return p.astype(np.int64), g.astype(np.int64)
    if kind == "f16":
        return p.astype(np.float16), g.astype(np.float16)
    if kind == "2d":
        return p.reshape(2, 3), g.reshape(2, 3)
    if kind == "shape":
        return p, g[:5]
    if kind == "dtype":
        return p, g.astype(np.float32)
    if kind == "strided":
        return np.zeros(12)[::2], g
    if kind == "grads_strided":
        return p, np.zeros(12)[::2]
    if kind == "readonly":
        p.flags.writeable = False
        return p, g
    if kind == "alias":
        return p, p
    if kind == "overlap":
        buf = np.zeros(8)
        return buf[:6], buf[2:]
    raise AssertionError(kind)


@pytest.mark.parametrize("opt_cls", [SGD, Adam])
@pytest.mark.parametrize("kind, exc, match", [
    ("list", TypeError, r"params must be a numpy array, got list"),
    ("int", TypeError, r"params must have dtype float32 or float64, got "
                       r"int64"),
    ("f16", TypeError, r"params must have dtype float32 or float64, got "
                       r"float16"),
    ("2d", ValueError, r"params must be a flat 1-D array, got shape \(2, 3\)"),
    ("shape", ValueError, r"grads must have the params' shape \(6,\), got "
                          r"\(5,\)"),
    ("dtype", TypeError, r"grads must have the params' dtype float64, got "
                         r"float32"),
    ("strided", ValueError, r"params must be contiguous"),
    ("grads_strided", ValueError, r"grads must be contiguous"),
    ("readonly", ValueError, r"params must be writable"),
    ("alias", ValueError, r"params and grads share memory"),
    ("overlap", ValueError, r"params and grads share memory"),
])
def test_step_validation(opt_cls, kind, exc, match):
    params, grads = _arrays(kind)
    opt = opt_cls()
    with pytest.raises(exc, match=rf"{opt_cls.__name__}\.step: {match}"):
        opt.step(params, grads)
    assert opt.iterations == 0
    assert set(opt.state_dict()) == {"iterations", "epoch"}


@pytest.mark.parametrize("opt_cls", [SGD, Adam, AdamW])
def test_step_rejects_other_parameters_until_reset(opt_cls):
    opt = opt_cls()
    opt.step(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match=r"params are a 5-element float64 "
                                         r"array .* 4-element float64 .*"
                                         r"reset\(\)"):
        opt.step(np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match=r"4-element float32 array"):
        opt.step(np.zeros(4, np.float32), np.ones(4, np.float32))
    assert opt.iterations == 1
    opt.reset()
    opt.step(np.zeros(5), np.ones(5))


def test_loaded_state_checked_at_first_step():
    src = Adam()
    src.step(np.zeros(4, np.float32), np.ones(4, np.float32))
    opt = Adam()
    opt.load_state_dict(src.state_dict())        # size known only from state
    with pytest.raises(ValueError, match=r"params are a 5-element float32 "
                                         r"array but the optimizer's state "
                                         r"\(\['exp_avg', 'exp_avg_sq'\]\) "
                                         r"is for 4-element float32"):
        opt.step(np.zeros(5, np.float32), np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"4-element float64 array .* "
                                         r"4-element float32"):
        opt.step(np.zeros(4), np.ones(4))
    opt.step(np.zeros(4, np.float32), np.ones(4, np.float32))
    assert opt.iterations == 2


def _adam_state(n=4, dtype=np.float64, iterations=1):
    return {"iterations": np.array(iterations, dtype=np.int64),
            "epoch": np.array(0, dtype=np.int64),
            "exp_avg": np.zeros(n, dtype), "exp_avg_sq": np.zeros(n, dtype)}


def _edit(**changes):
    state = _adam_state()
    for k, v in changes.items():
        if v is None:
            del state[k]
        else:
            state[k] = v
    return state


@pytest.mark.parametrize("state, match", [
    (_edit(momentum_buffer=np.zeros(4)),
     r"unexpected key\(s\) \['momentum_buffer'\]"),
    (_edit(iterations=None), r"state has no 'iterations' counter"),
    (_edit(epoch=None), r"state has no 'epoch' counter"),
    (_edit(iterations=np.array(1.0)),
     r"'iterations' must be a 0-d integer array, got a float64 array"),
    (_edit(iterations=np.array([1])),
     r"'iterations' must be a 0-d integer array, got a int64 array of shape "
     r"\(1,\)"),
    (_edit(epoch=np.array(-2)), r"'epoch' must be >= 0, got -2"),
    (_edit(iterations=2.0), r"'iterations' must be a 0-d integer array, got "
                            r"2.0 of type float"),
    (_edit(exp_avg_sq=None),
     r"state has \['exp_avg'\] but not \['exp_avg_sq'\]"),
    (_edit(exp_avg=None, exp_avg_sq=None),
     r"state has iterations=1 but no \['exp_avg', 'exp_avg_sq'\]"),
    (_edit(exp_avg=[0.0] * 4), r"'exp_avg' must be a numpy array, got list"),
    (_edit(exp_avg=np.zeros(4, np.int32)),
     r"'exp_avg' must have dtype float32 or float64, got int32"),
    (_edit(exp_avg_sq=np.zeros((2, 2))),
     r"'exp_avg_sq' must be 1-D, got shape \(2, 2\)"),
    (_edit(exp_avg_sq=np.zeros(5)),
     r"'exp_avg_sq' is a 5-element float64 array but 'exp_avg' is a "
     r"4-element float64 array"),
    (_edit(exp_avg_sq=np.zeros(4, np.float32)),
     r"'exp_avg_sq' is a 4-element float32 array"),
])
def test_load_state_dict_validation(state, match):
    opt = Adam()
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: " + match):
        opt.load_state_dict(state)
    assert opt.iterations == 0                   # nothing changed
    assert set(opt.state_dict()) == {"iterations", "epoch"}


def test_load_state_dict_checks_bound_parameters():
    opt = Adam()
    params = np.zeros(4)
    opt.step(params, np.ones(4))
    before = opt.state_dict()
    for bad in (_adam_state(n=5), _adam_state(dtype=np.float32)):
        with pytest.raises(ValueError, match=r"this optimizer steps 4-element"
                                             r" float64 parameters; call "
                                             r"reset\(\)"):
            opt.load_state_dict(bad)
    after = opt.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    opt.load_state_dict(_adam_state(n=4, iterations=9))
    assert opt.iterations == 9
    with pytest.raises(TypeError, match=r"state must be a dict of arrays, "
                                        r"got list"):
        opt.load_state_dict([("iterations", 0)])
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['exp_avg'"):
        SGD(momentum=0.9).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match=r"unexpected key\(s\) "
                                         r"\['momentum_buffer'\]"):
        SGD().load_state_dict({"iterations": 0, "epoch": 0,
                               "momentum_buffer": np.zeros(4)})


# ---------------------------------------------------------------------------
# documentation and PyTorch
# ---------------------------------------------------------------------------
def test_docstring_examples_run():
    result = doctest.testmod(optim)
    assert result.attempted >= 10
    assert result.failed == 0


def test_repr():
    assert repr(SGD(0.1, momentum=0.9, schedule=StepLR(3))) == (
        "SGD(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, "
        "schedule=StepLR(step_size=3, gamma=0.1))")


def test_matches_torch():
    torch = require("torch")
    p0, grads = problem(14, steps=6)
    cases = [
        (SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1, foreach=False)),
        (SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01,
                                   foreach=False)),
        (SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                   weight_decay=0.01, foreach=False)),
        (Adam(lr=0.01, weight_decay=0.1),
         lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1,
                                    foreach=False)),
        (Adam(lr=0.01, betas=(0.5, 0.9), eps=1e-3),
         lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.5, 0.9), eps=1e-3,
                                    foreach=False)),
        (AdamW(lr=0.01, weight_decay=0.3),
         lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3,
                                     foreach=False)),
    ]
    for ours, make_torch in cases:
        for dtype, rtol in ((np.float64, 1e-12), (np.float32, 2e-6)):
            ours.reset()
            params = p0.astype(dtype)
            tp = torch.nn.Parameter(torch.tensor(p0.astype(dtype)))
            topt = make_torch([tp])
            for g in grads:
                ours.step(params, g.astype(dtype))
                tp.grad = torch.tensor(g.astype(dtype))
                topt.step()
            expected = tp.detach().numpy()
            assert params.dtype == expected.dtype
            np.testing.assert_allclose(params, expected, rtol=rtol,
                                       atol=rtol, err_msg=repr(ours))


def _reference_step(opt, params, grads, state, step):
    """cnnkit.reference's step for optimizer ``opt`` (new params; updates
    the dict ``state`` of buffers)."""
    lr = opt.current_lr()
    if isinstance(opt, SGD):
        params, buf = R.sgd_step(params, grads, state.get("momentum_buffer"),
                                 lr, opt.momentum, opt.nesterov,
                                 opt.weight_decay)
        if buf is not None:
            state["momentum_buffer"] = buf
        return params
    m = state.get("exp_avg", np.zeros_like(params))
    v = state.get("exp_avg_sq", np.zeros_like(params))
    params, state["exp_avg"], state["exp_avg_sq"] = R.adam_step(
        params, grads, m, v, step, lr, opt.betas, opt.eps, opt.weight_decay,
        decoupled=isinstance(opt, AdamW))
    return params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda: optim.SGD(0.1),
    lambda: optim.SGD(0.05, momentum=0.9),
    lambda: optim.SGD(0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    lambda: optim.SGD(0.05, weight_decay=0.3),
    lambda: optim.Adam(1e-2),
    lambda: optim.Adam(3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    lambda: optim.AdamW(1e-2, weight_decay=0.05),
    lambda: optim.AdamW(1e-2, weight_decay=0.0),
])
def test_compiled_steps_equal_the_reference_bit_for_bit(make, dtype):
    rng = np.random.default_rng(5)
    n = 1037                                  # odd: every thread's tail
    params = rng.standard_normal(n).astype(dtype)
    expected, state = params.copy(), {}
    opt = make()
    for step in range(1, 6):
        g = rng.standard_normal(n).astype(dtype) * 10.0 ** (step - 3)
        opt.step(params, g)
        expected = _reference_step(opt, expected, g, state, step)
        assert expected.dtype == dtype
        assert np.array_equal(params, expected), step
    state_dict = opt.state_dict()
    assert set(opt._buffer_names()) == set(state)
    for name in state:
        assert np.array_equal(state_dict[name], state[name])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda: optim.SGD(0.05, momentum=0.9),
    lambda: optim.SGD(0.05, momentum=0.5, nesterov=True),
    lambda: optim.Adam(1e-2, betas=(0.5, 0.5)),
    lambda: optim.AdamW(1e-2, weight_decay=0.05),
])
def test_buffers_flush_subnormals_as_the_reference(make, dtype, monkeypatch):
    """Buffer values that would be subnormal are stored as +0, by the
    compiled step and cnnkit.reference alike (the same bits); a unit whose
    gradient stays 0 loses its momentum instead of keeping a subnormal."""
    tiny = np.finfo(dtype).tiny
    flushed = []
    real_flush = R.flush_subnormal

    def counting(a):
        flushed.append(int(np.sum((a != 0) & (np.abs(a) < tiny))))
        return real_flush(a)
    monkeypatch.setattr(R, "flush_subnormal", counting)
    rng = np.random.default_rng(8)
    n = 1037
    params = rng.standard_normal(n).astype(dtype)
    scales = np.array([0, tiny / 4, tiny, 3 * tiny, 40 * tiny, 1.0], dtype)
    first = (scales[rng.integers(0, 6, n)] *
             rng.choice([-1, 1], n)).astype(dtype)
    expected, state = params.copy(), {}
    opt = make()
    for step in range(1, 9):
        g = first if step == 1 else np.where(np.arange(n) % 3 == 0, 0,
                                             first).astype(dtype)
        opt.step(params, g)
        expected = _reference_step(opt, expected, g, state, step)
        assert np.array_equal(params, expected), step
    assert sum(flushed) > 0, "the case never reached the subnormal range"
    saved = opt.state_dict()
    for name in opt._buffer_names():
        assert np.array_equal(saved[name], state[name]), name
        assert not np.any((saved[name] != 0) &
                          (np.abs(saved[name]) < tiny)), name


def test_flush_subnormal():
    for dtype in (np.float32, np.float64):
        tiny = np.finfo(dtype).tiny
        a = np.array([tiny, -tiny, tiny / 2, -tiny / 2, 0.0, -0.0, np.inf,
                      np.nan, 1.0], dtype)
        out = R.flush_subnormal(a)
        assert out.dtype == dtype
        np.testing.assert_array_equal(
            out, np.array([tiny, -tiny, 0, 0, 0, 0, np.inf, np.nan, 1.0],
                          dtype))
        assert not np.signbit(out[3]) and not np.signbit(out[5])


def test_compiled_steps_check_their_buffers():
    from cnnkit import _kernels
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="momentum buffer must be"):
        _kernels.sgd_step(p, p.copy(), np.zeros(3, np.float32), 0.1, 0.0,
                          0.9, False, False)
    with pytest.raises(ValueError, match="momentum needs a buffer"):
        _kernels.sgd_step(p, p.copy(), None, 0.1, 0.0, 0.9, False, False)
    with pytest.raises(ValueError, match="exp_avg_sq must be"):
        _kernels.adam_step(p, p.copy(), p.copy(), np.zeros(4), 0.9, 0.99,
                           1e-8, 0.0, False, 1.0, 1.0, 1.0)
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="params must be a writeable"):
        _kernels.sgd_step(ro, p, None, 0.1, 0.0, 0.0, False, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda: optim.SGD(0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    lambda: optim.Adam(3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    lambda: optim.AdamW(1e-2, weight_decay=0.05),
], ids=["SGD", "Adam", "AdamW"])
def test_compiled_steps_are_bit_identical_for_1_2_3_threads(make, dtype):
    # above the size at which a step runs on more than one thread
    rng = np.random.default_rng(6)
    n = 200_003
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    runs = []
    for threads in (1, 2, 3):
        opt, params = make(), p0.copy()
        with num_threads(threads):
            for g in grads:
                before = g.tobytes()
                opt.step(params, g)
                assert g.tobytes() == before
        runs.append(params.tobytes())
    assert runs[1] == runs[0] and runs[2] == runs[0]
    # the trainer's one-thread update of a small step, among 2 threads
    opt, params = make(), p0.copy()
    with num_threads(2):
        for g in grads:
            opt._step_unchecked(params, g, 1)
            assert opt._threads == 0
    assert params.tobytes() == runs[0]
    opt, expected, state = make(), p0.copy(), {}
    for step, g in enumerate(grads, start=1):
        expected = _reference_step(opt, expected, g, state, step)
    assert expected.tobytes() == runs[0]
