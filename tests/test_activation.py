"""Activations: relu and relu_backward -- cnnkit.functional against
cnnkit.reference (over dtypes, thread counts and memory layouts), finite
differences, the conventions (NaN, infinities, -0.0, ReLU'(0) = 0, dtype
promotion, any number of axes), the documented errors, and fuzzing."""

import numpy as np
import pytest
from hypothesis import strategies as st

from cnnkit import functional as F
from cnnkit import reference as ref

import fuzzing
from fuzzing import broadcast_ones as _bcast, zeros as _z
import helpers
from fuzzing import (Case, arrays, bad_array, design_dtype, f64,
                     assert_result, fuzz_property)
from helpers import (LAYOUTS, OUT_ARRAY_FAULTS, assert_same_specials,
                     check_gradients, check_kernel_out, check_op,
                     each_argument, require, special_values)


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


# ==========================================================================
# against the reference
# ==========================================================================
RELU_SHAPES = [(), (1,), (7,), (3, 4), (2, 3, 5), (2, 3, 4, 5),
               (1, 2, 1, 3, 2), (0,), (0, 3)]


@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
def test_relu_matches_reference(shape):
    check_op("relu", [shape])


def test_relu_in_every_layout():
    check_op("relu", [(3, 2, 5, 4)], layouts=LAYOUTS)
    # x and grad_out in turn in each layout, the other C-contiguous
    check_op("relu", [(3, 2, 5, 4)], layouts=each_argument(LAYOUTS, 2))


def test_relu_parallel_size_matches_reference():
    check_op("relu", [(5, 8, 32, 32)], layouts=["C"])


def test_relu_values_and_special_numbers(dtype):
    x = np.array([-2.0, -0.0, 0.0, 1.5, np.nan, np.inf, -np.inf, 1e-30,
                  -1e-30], dtype=dtype)
    y = F.relu(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.array(
        [0, 0, 0, 1.5, np.nan, np.inf, 0, 1e-30, 0], dtype=dtype))
    assert np.isnan(F.relu(np.array([np.nan], dtype=dtype))[0])
    assert np.isnan(F.relu(dtype.type(np.nan)))


def test_relu_backward_at_zero_nan_and_inf(dtype):
    x = np.array([-1.0, 0.0, -0.0, 2.0, np.nan, -3.0, 1e-30],
                 dtype=dtype)
    g = np.array([5.0, 6.0, 7.0, 8.0, 9.0, np.inf, 4.0], dtype=dtype)
    gx = F.relu_backward(g, x)
    assert gx.dtype == dtype
    # a NaN input passes the gradient, as PyTorch's threshold_backward
    np.testing.assert_array_equal(gx, [0.0, 0.0, 0.0, 8.0, 9.0, 0.0, 4.0])
    g_nan = np.full(x.shape, np.nan, dtype=dtype)
    gx = F.relu_backward(g_nan, x)
    assert np.all(gx[[0, 1, 2, 5]] == 0) and np.all(np.isnan(gx[[3, 4, 6]]))


@pytest.mark.parametrize("x_dt,g_dt,expected", [
    (np.float32, np.float32, np.float32),
    (np.float64, np.float32, np.float64),
    (np.float32, np.float64, np.float64),
    (np.int64, np.int64, np.float64),
    (np.int8, np.float32, np.float64),
    (np.bool_, np.bool_, np.float64),
    (np.float16, np.float16, np.float32),
])
def test_relu_dtype_promotion(rng, assert_close, x_dt, g_dt, expected):
    x = rng.integers(-3, 4, (3, 5)).astype(x_dt)
    g = rng.integers(-3, 4, (3, 5)).astype(g_dt)
    forward_dt = {np.float16: np.float32, np.float32: np.float32}.get(
        x_dt, np.float64)
    assert_close(F.relu(x), ref.relu(*_f64(x)), forward_dt)
    assert_close(F.relu_backward(g, x), ref.relu_backward(*_f64(g, x)),
                 expected)


def test_relu_backward_finite_differences():
    # distinct values 0.01 apart, none within 0.0025 of the kink at 0
    check_gradients("relu", [(2, 3, 4)], values="distinct")


def test_relu_zero_size(dtype):
    assert F.relu(np.zeros((0, 4), dtype)).shape == (0, 4)
    assert F.relu(np.zeros((2, 0, 3), dtype)).shape == (2, 0, 3)
    gx = F.relu_backward(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert gx.shape == (0, 3) and gx.dtype == dtype


@pytest.mark.parametrize("N", [2, 9])
def test_relu_does_not_depend_on_batch(rng, dtype, N):
    x = rng.standard_normal((N, 8, 33, 32)).astype(dtype)
    r = F.relu(x)
    for i in sorted({0, N // 2, N - 1}):
        assert np.array_equal(F.relu(x[i:i + 1]), r[i:i + 1])


# ==========================================================================
# cnnkit.reference
# ==========================================================================
def test_reference_relu_values_dtype_and_nan():
    x = np.array([-2.0, -0.0, 0.0, 1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    y = ref.relu(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 0, 0, 1.5, np.nan, np.inf, 0])
    assert np.isnan(y[4])
    assert ref.relu(np.array([-1, 3])).dtype == np.float64
    assert ref.relu(np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_reference_relu_backward_values():
    x = np.array([-1.0, 0.0, 2.0, np.nan, -3.0])
    g = np.array([5.0, 6.0, 7.0, 8.0, np.inf])
    gx = ref.relu_backward(g, x)
    # 0 at x <= 0; a NaN input passes the gradient (PyTorch's rule)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 7.0, 8.0, 0.0])
    assert ref.relu_backward(g.astype(np.float32), x.astype(np.float32)).dtype == np.float32


def test_reference_relu_backward_finite_differences():
    check_gradients("relu", [(3, 2, 4, 5)], values="distinct", seed=12,
                    reference=True, eps=1e-4, atol=1e-8)


def test_reference_relu_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 0, 0] = np.nan
    copy = x.copy()
    out = ref.relu(x)
    assert not np.shares_memory(out, x)
    ref.relu_backward(x, x)
    np.testing.assert_array_equal(x, copy)


# ==========================================================================
# documented errors
# ==========================================================================
X = np.zeros((2, 3, 5, 5))

# (function, positional arguments, index of the argument made bad, its name)
ARRAY_ARGS = [
    (F.relu, (X,), 0, "x"),
    (F.relu_backward, (X, X), 0, "grad_out"),
    (F.relu_backward, (X, X), 1, "x"),
]


test_bad_dtype_is_type_error_naming_argument_and_dtype = \
    helpers.bad_dtype_test(ARRAY_ARGS)


def test_relu_of_not_an_array_is_type_error():
    with pytest.raises(TypeError, match=r"\bx\b"):
        F.relu(None)


@pytest.mark.parametrize("g", [np.zeros((3, 2)), np.zeros(6),
                               np.zeros((2, 3, 1)), np.zeros(())])
def test_relu_backward_grad_out_of_wrong_shape(g):
    with pytest.raises(ValueError,
                       match=r"grad_out must have the shape of x \(2, 3\)"):
        F.relu_backward(g, np.zeros((2, 3)))


# The compiled kernels write into arrays the layers keep between training
# steps (``out=``); an unsuitable one is refused before any work.
def _outs():
    from cnnkit import _kernels as K
    x = np.zeros((2, 3, 5, 5), np.float32)
    return [
        ("relu", "out", x.shape, lambda o: K.relu_forward(x, o)),
        ("relu_backward", "out", x.shape,
         lambda o: K.relu_backward(x, x, o)),
    ]


@pytest.mark.parametrize("case", range(2))
@pytest.mark.parametrize("bad", OUT_ARRAY_FAULTS)
def test_kernel_out_arrays_are_checked(case, bad):
    check_kernel_out(*_outs()[case], bad)


# ==========================================================================
# NaN as in PyTorch
# ==========================================================================
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_relu_nan_and_inf_propagate_as_in_pytorch(dt):
    torch = require("torch")
    x = special_values(np.random.default_rng(7), (2, 3, 9, 8), dt)
    assert_same_specials(F.relu(x), torch.relu(torch.from_numpy(x)).numpy(),
                         0, "relu")


def test_relu_backward_at_nan_matches_pytorch():
    """PyTorch's ReLU backward passes grad_out through at a NaN input (its
    mask is computed from the NaN output); at 0, -0 and negatives it is 0."""
    torch = require("torch")
    x = np.array([np.nan, 0.0, -0.0, 1.5, -1.0, np.inf, -np.inf, 1e-30])
    g = np.arange(1.0, 9.0)
    tx = torch.from_numpy(x).requires_grad_()
    torch.relu(tx).backward(torch.from_numpy(g))
    np.testing.assert_array_equal(F.relu_backward(g, x), tx.grad.numpy())


# ==========================================================================
# fuzzing (see fuzzing.py)
# ==========================================================================
@st.composite
def relu_cases(draw, backward=False):
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.integers(0, 4)) for _ in range(ndim))
    x = draw(arrays(shape))
    g = draw(arrays(shape)) if backward else None
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 4 + ["dtype", "none", "shape",
                                                  "ragged"]))
    if mutation == "dtype":
        expect, errors, why = "error", (TypeError,), "bad dtype"
        if backward and draw(st.booleans()):
            g = bad_array(draw, shape)
        else:
            x = bad_array(draw, shape)
    elif mutation == "none":
        expect, errors, why, x = "error", (TypeError,), "None", None
    elif mutation == "ragged":
        expect, errors, why, x = "error", (TypeError,), "ragged", [[1], []]
    elif mutation == "shape" and backward:
        expect, errors, why = "error", (ValueError,), "shape mismatch"
        g = np.zeros(shape + (2,))

    def oracle(result):
        xa = np.asarray(x)
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(ga, xa)
            exp = ref.relu_backward(f64(ga, dt), f64(xa, dt))
        else:
            dt = design_dtype(xa)
            exp = ref.relu(f64(xa, dt))
        assert_result(result, exp, dt, exact=True)

    args = (g, x) if backward else (x,)
    return Case(args, {}, expect, errors, why, oracle)


prop_relu = fuzz_property(F.relu, relu_cases())


prop_relu_backward = fuzz_property(F.relu_backward, relu_cases(backward=True))


# (name, call, allowed outcomes); outcomes: "ok" or exception class names

EXTREME = [
    ("relu 0-d", lambda: F.relu(np.float32(-1)), {"ok"}),
    ("relu empty 5-d", lambda: F.relu(_z(0, 0, 0, 0, 0)), {"ok"}),
    ("relu broadcast 2**60 elements", lambda: F.relu(
        _bcast((2**30, 2**30))), {"ValueError", "MemoryError"}),
    ("relu float64 extremes", lambda: F.relu(np.array(
        [np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324])),
     {"ok"}),
]



# ==========================================================================
# leaky ReLU, sigmoid, tanh, SiLU, GELU and log-softmax
# ==========================================================================
from helpers import Op  # noqa: E402

# (name, extra keyword arguments of forward and backward)
ACTIVATIONS = [
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu", {"negative_slope": -1.5}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("silu", {}),
    ("gelu", {}),
    ("gelu", {"approximate": "tanh"}),
]
ACT_IDS = [f"{n}-{'-'.join(f'{v}' for v in kw.values()) or 'default'}"
           for n, kw in ACTIVATIONS]


def _act_op(name):
    fwd, bwd = getattr(F, name), getattr(F, name + "_backward")
    rfwd, rbwd = getattr(ref, name), getattr(ref, name + "_backward")
    return Op(fwd, rfwd,
              lambda g, ins, outs, **hp: (bwd(g, ins[0], **hp),),
              lambda g, ins, outs, **hp: (rbwd(g, ins[0], **hp),),
              )


ROWS_OPS = {
    "log_softmax": Op(F.log_softmax, ref.log_softmax,
                      lambda g, ins, outs: (F.log_softmax_backward(
                          g, ins[0]),),
                      lambda g, ins, outs: (ref.log_softmax_backward(
                          g, ins[0]),),
                      lambda shapes, out, hp: ((shapes[0][-1],),
                                               (shapes[0][-1],))),
    "softmax": Op(F.softmax, ref.softmax,
                  lambda g, ins, outs: (F.softmax_backward(g, ins[0]),),
                  lambda g, ins, outs: (ref.softmax_backward(g, ins[0]),),
                  lambda shapes, out, hp: ((shapes[0][-1],),
                                           (shapes[0][-1],))),
}


def _wide(rng, shape):
    """Normal values scaled by 4: both tails of every activation."""
    return 4 * rng.standard_normal(shape)


@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_matches_reference(name, kw, shape):
    check_op(_act_op(name), [shape], values=_wide, **kw)


@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_in_every_layout(name, kw):
    check_op(_act_op(name), [(3, 2, 5, 4)], values=_wide, layouts=LAYOUTS,
             **kw)
    check_op(_act_op(name), [(3, 2, 5, 4)], values=_wide,
             layouts=each_argument(LAYOUTS, 2), **kw)


@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_parallel_size_matches_reference(name, kw):
    # large enough for every thread count to wake its threads
    check_op(_act_op(name), [(4, 8, 48, 48)], values=_wide, layouts=["C"],
             **kw)


@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_finite_differences(name, kw):
    # distinct values 0.01 apart, none within 0.0025 of leaky ReLU's kink
    check_gradients(_act_op(name), [(2, 3, 4)], values="distinct", **kw)
    check_gradients(_act_op(name), [(2, 3, 4)], values=_wide, seed=3, **kw)


@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_reference_activation_finite_differences(name, kw):
    check_gradients(_act_op(name), [(3, 7)], values=_wide, seed=5,
                    reference=True, **kw)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (3, 10),
                                   (0, 4), (4,), (2, 300)], ids=str)
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_rows_match_reference(name, shape):
    check_op(ROWS_OPS[name], [shape], values=_wide)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_rows_in_every_layout_and_parallel_size(name):
    check_op(ROWS_OPS[name], [(6, 5)], layouts=LAYOUTS)
    check_op(ROWS_OPS[name], [(6, 5)], layouts=each_argument(LAYOUTS, 2))
    check_op(ROWS_OPS[name], [(3000, 40)], layouts=["C"])


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("reference", [False, True])
def test_rows_finite_differences(name, reference):
    check_gradients(ROWS_OPS[name], [(3, 5)], values=_wide,
                    reference=reference)


def test_reference_log_softmax_keeps_its_behaviour():
    z = np.array([[1.0, 2.0, 3.0], [1e4, 0.0, -1e4]])
    expected = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(
        1, keepdims=True)) - z.max(1, keepdims=True)
    np.testing.assert_allclose(ref.log_softmax(z), expected, rtol=1e-15)
    assert ref.log_softmax(z.astype(np.float32)).dtype == np.float32
    assert ref.log_softmax(np.array([[1, 2]])).dtype == np.float64
    # any number of axes, over the last one
    z3 = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(np.exp(ref.log_softmax(z3)).sum(-1), 1)


# --------------------------------------------------------------------------
# values, conventions and extremes
# --------------------------------------------------------------------------
def test_activation_values(dtype):
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=dtype)
    t = dtype.type
    np.testing.assert_array_equal(F.leaky_relu(x),
                                  np.where(x > 0, x, x * t(0.01)))
    np.testing.assert_array_equal(F.leaky_relu(x, 0.5),
                                  [-1.0, -0.25, 0.0, 0.5, 2.0])
    sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    phi = np.array([0.022750131948179195, 0.3085375387259869, 0.5,
                    0.6914624612740131, 0.9772498680518208])
    expect = {
        "sigmoid": sig, "tanh": np.tanh(x.astype(np.float64)),
        "silu": x * sig, "gelu": x * phi,
    }
    for name, e in expect.items():
        y = getattr(F, name)(x)
        assert y.dtype == dtype
        np.testing.assert_allclose(y, e, rtol=helpers.RTOL[dtype],
                                   atol=helpers.RTOL[dtype], err_msg=name)


def test_leaky_relu_gradient_at_zero_and_nan_is_the_slope(dtype):
    x = np.array([-1.0, 0.0, -0.0, 2.0, np.nan], dtype=dtype)
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=dtype)
    a = dtype.type(0.3)
    np.testing.assert_array_equal(F.leaky_relu_backward(g, x, 0.3),
                                  [a, 2 * a, 3 * a, 4, 5 * a])


def test_leaky_relu_slope_is_rounded_to_the_dtype():
    x = np.array([-3.0], np.float32)
    assert F.leaky_relu(x, 0.1)[0] == np.float32(-3) * np.float32(0.1)
    assert F.leaky_relu(x.astype(np.float64), 0.1)[0] == -3 * 0.1


# Limits at the extremes: (name, kw, forward at +big, forward at -big,
# gradient at +big, gradient at -big), big the value given
EXTREME_LIMITS = [
    ("sigmoid", {}, lambda b: 1.0, lambda b: 0.0, 0.0, 0.0),
    ("tanh", {}, lambda b: 1.0, lambda b: -1.0, 0.0, 0.0),
    ("silu", {}, lambda b: b, lambda b: 0.0, 1.0, 0.0),
    ("gelu", {}, lambda b: b, lambda b: 0.0, 1.0, 0.0),
    ("gelu", {"approximate": "tanh"}, lambda b: b, lambda b: 0.0, 1.0, 0.0),
    ("leaky_relu", {}, lambda b: b, lambda b: -b * 0.01, 1.0, 0.01),
]


@pytest.mark.parametrize("big", [100.0, 1e3, 1e4])
@pytest.mark.parametrize("name,kw,fpos,fneg,gpos,gneg", EXTREME_LIMITS,
                         ids=[f"{e[0]}-{e[1].get('approximate', '')}"
                              for e in EXTREME_LIMITS])
def test_activation_extremes_are_finite_limits(dtype, name, kw, fpos, fneg,
                                               gpos, gneg, big):
    x = np.array([big, -big], dtype=dtype)
    g = np.ones_like(x)
    with np.errstate(all="raise"):           # no overflow inside NumPy
        y = getattr(F, name)(x, **kw)
        gx = getattr(F, name + "_backward")(g, x, **kw)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gx)), (y, gx)
    rtol = helpers.RTOL[dtype]
    np.testing.assert_allclose(y, [fpos(big), fneg(big)], rtol=rtol,
                               atol=rtol)
    np.testing.assert_allclose(gx, [gpos, gneg], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name,kw", ACTIVATIONS[3:], ids=ACT_IDS[3:])
def test_activation_infinities_give_the_limits(dtype, name, kw):
    lim = {e[0] + e[1].get("approximate", ""): e for e in EXTREME_LIMITS}[
        name + kw.get("approximate", "")]
    x = np.array([np.inf, -np.inf], dtype=dtype)
    y = getattr(F, name)(x, **kw)
    gx = getattr(F, name + "_backward")(np.ones_like(x), x, **kw)
    np.testing.assert_array_equal(y, [lim[2](np.inf), lim[3](np.inf)])
    np.testing.assert_array_equal(gx, [lim[4], lim[5]])


def test_activation_tails_keep_their_digits():
    """Where the results are tiny they are still right to the dtype's
    precision: no 1 - s or 1 + erf cancellation."""
    for dt in (np.float32, np.float64):
        for v in (20.0, 50.0, 80.0):
            x = np.array([v, -v], dt)
            tail = np.exp(-v)                      # sigma(-v) ~ e^-v
            s = F.sigmoid(x)
            np.testing.assert_allclose(s[1], tail / (1 + tail), rtol=1e-5)
            gs = F.sigmoid_backward(np.ones_like(x), x)
            np.testing.assert_allclose(gs, tail / (1 + tail) ** 2,
                                       rtol=1e-5)
        x = np.array([-5.0, -10.0], dt)
        phi = np.array([2.866515718791939e-07, 7.61985302416047e-24])
        np.testing.assert_allclose(F.gelu(x), x.astype(float) * phi,
                                   rtol=1e-5)


def test_log_softmax_extreme_logits(dtype):
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [5.0, 5.0, 5.0]],
                 dtype=dtype)
    with np.errstate(all="raise"):
        y = F.log_softmax(z)
        g = F.log_softmax_backward(np.ones_like(z), z)
        gs = F.softmax_backward(np.ones_like(z), z)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(y[0], [0.0, -1e4, -2e4])
    np.testing.assert_allclose(y[1:], -np.log(3), rtol=1e-6)
    # sum_c g = 3: gx = 1 - 3 p
    np.testing.assert_allclose(g[0], [-2.0, 1.0, 1.0])
    np.testing.assert_allclose(g[1], 0.0, atol=1e-6)
    np.testing.assert_array_equal(gs[0], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_nan_propagates(dtype, name, kw):
    x = np.array([np.nan, 1.0, -1.0], dtype=dtype)
    g = np.array([1.0, np.nan, 1.0], dtype=dtype)
    y = getattr(F, name)(x, **kw)
    gx = getattr(F, name + "_backward")(g, x, **kw)
    assert np.isnan(y[0]) and np.all(np.isfinite(y[1:]))
    # leaky ReLU's gradient at a NaN input is the slope's, as in PyTorch
    assert np.isnan(gx[0]) == (name != "leaky_relu")
    assert np.isnan(gx[1]) and np.isfinite(gx[2])


def test_log_softmax_nan_makes_its_row_nan(dtype):
    z = np.array([[np.nan, 1.0], [0.0, 1.0]], dtype=dtype)
    for y in (F.log_softmax(z), F.log_softmax_backward(np.ones_like(z), z),
              F.softmax_backward(np.ones_like(z), z)):
        assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1]))


@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_dtype_promotion(name, kw):
    x = np.array([[-2, 0, 3]], np.int64)
    assert getattr(F, name)(x, **kw).dtype == np.float64
    assert getattr(F, name)(x.astype(np.float16), **kw).dtype == np.float32
    g = getattr(F, name + "_backward")(np.ones((1, 3), np.float32),
                                       x.astype(np.float32), **kw)
    assert g.dtype == np.float32
    g = getattr(F, name + "_backward")(np.ones((1, 3), np.float64),
                                       x.astype(np.float32), **kw)
    assert g.dtype == np.float64
    assert getattr(F, name)(np.float32(0.5), **kw).shape == ()


# --------------------------------------------------------------------------
# documented errors
# --------------------------------------------------------------------------
Z = np.zeros((4, 3))
ACT_ARRAY_ARGS = []
for _name in ("leaky_relu", "sigmoid", "tanh", "silu", "gelu"):
    ACT_ARRAY_ARGS += [
        (getattr(F, _name), (X,), 0, "x"),
        (getattr(F, _name + "_backward"), (X, X), 0, "grad_out"),
        (getattr(F, _name + "_backward"), (X, X), 1, "x"),
    ]
ACT_ARRAY_ARGS += [
    (F.log_softmax, (Z,), 0, "logits"),
    (F.log_softmax_backward, (Z, Z), 0, "grad_out"),
    (F.log_softmax_backward, (Z, Z), 1, "logits"),
    (F.softmax_backward, (Z, Z), 0, "grad_out"),
    (F.softmax_backward, (Z, Z), 1, "logits"),
]

test_activation_bad_dtype_is_type_error = \
    helpers.bad_dtype_test(ACT_ARRAY_ARGS)


@pytest.mark.parametrize("slope,err", [
    ("0.1", TypeError), (None, TypeError), (True, TypeError),
    ([0.1], TypeError), (1j, TypeError), (np.nan, ValueError),
    (np.inf, ValueError), (-np.inf, ValueError)])
def test_leaky_relu_bad_negative_slope(slope, err):
    for call in (lambda: F.leaky_relu(X, slope),
                 lambda: F.leaky_relu_backward(X, X, slope),
                 lambda: F.leaky_relu(X, negative_slope=slope)):
        with pytest.raises(err, match=r"leaky_relu(_backward)?: "
                                      r"negative_slope must be"):
            call()


@pytest.mark.parametrize("approximate,err", [
    ("exact", ValueError), ("Tanh", ValueError), ("", ValueError),
    (None, TypeError), (True, TypeError), (1, TypeError)])
def test_gelu_bad_approximate(approximate, err):
    for call in (lambda: F.gelu(X, approximate),
                 lambda: F.gelu_backward(X, X, approximate=approximate)):
        with pytest.raises(err, match=r"gelu(_backward)?: approximate must "
                                      r"be 'none' or 'tanh'"):
            call()


@pytest.mark.parametrize("name", ["leaky_relu", "sigmoid", "tanh", "silu",
                                  "gelu"])
def test_activation_backward_grad_out_of_wrong_shape(name):
    with pytest.raises(ValueError, match=rf"{name}_backward: grad_out must "
                                         rf"have the shape of x \(2, 3\)"):
        getattr(F, name + "_backward")(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"\bx\b"):
        getattr(F, name)(None)


@pytest.mark.parametrize("z", [np.zeros(()), np.zeros((2, 3, 4))])
def test_log_softmax_wrong_ndim(z):
    with pytest.raises(ValueError, match=r"log_softmax: logits must be "
                                         r"\(N, C\)"):
        F.log_softmax(z)
    with pytest.raises(ValueError, match=r"log_softmax_backward: logits"):
        F.log_softmax_backward(z, z)
    with pytest.raises(ValueError, match=r"softmax_backward: logits"):
        F.softmax_backward(z, z)


def test_log_softmax_needs_a_class_and_matching_grad():
    with pytest.raises(ValueError, match="at least one class"):
        F.log_softmax(np.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"grad_out must have the shape of "
                                         r"logits \(2, 3\)"):
        F.log_softmax_backward(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="grad_out"):
        F.softmax_backward(None, np.zeros((2, 3)))


def _act_outs():
    from cnnkit import _kernels as K
    x = np.zeros((2, 3, 5, 5), np.float32)
    z = np.zeros((4, 3), np.float32)
    return [
        ("leaky_relu", "out", x.shape,
         lambda o: K.leaky_relu_forward(x, 0.1, o)),
        ("sigmoid_backward", "out", x.shape,
         lambda o: K.sigmoid_backward(x, x, o)),
        ("gelu", "out", x.shape, lambda o: K.gelu_forward(x, True, o)),
        ("log_softmax", "out", z.shape, lambda o: K.log_softmax(z, o)),
        ("softmax_backward", "out", z.shape,
         lambda o: K.softmax_backward(z, z, o)),
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("bad", OUT_ARRAY_FAULTS)
def test_activation_kernel_out_arrays_are_checked(case, bad):
    check_kernel_out(*_act_outs()[case], bad)


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------
def _torch_fn(torch, name, kw):
    tf = torch.nn.functional
    return {
        "leaky_relu": lambda t: tf.leaky_relu(
            t, kw.get("negative_slope", 0.01)),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": tf.silu,
        "gelu": lambda t: tf.gelu(t, approximate=kw.get("approximate",
                                                        "none")),
    }[name]


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", ACTIVATIONS, ids=ACT_IDS)
def test_activation_matches_pytorch(dt, name, kw):
    torch = require("torch")
    rng = np.random.default_rng(11)
    x = np.concatenate([4 * rng.standard_normal(500),
                        [0.0, -0.0, 1e-30, -1e-30, 8.0, -8.0, 30.0, -30.0,
                         1e4, -1e4, np.nan]]).astype(dt)
    g = rng.standard_normal(x.shape).astype(dt)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = _torch_fn(torch, name, kw)(tx)
    ty.backward(torch.from_numpy(g))
    tol = 10 * np.finfo(dt).eps
    y, gx = getattr(F, name)(x, **kw), getattr(F, name + "_backward")(
        g, x, **kw)
    for ours, theirs, what in ((y, ty.detach().numpy(), "forward"),
                               (gx, tx.grad.numpy(), "backward")):
        assert ours.dtype == dt
        scale = np.maximum(1.0, np.abs(x.astype(np.float64)))
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        ok = ~np.isnan(theirs)
        np.testing.assert_allclose(ours[ok] / scale[ok],
                                   theirs[ok] / scale[ok], rtol=tol,
                                   atol=tol, err_msg=f"{name} {what}")


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_log_softmax_and_softmax_backward_match_pytorch(dt):
    torch = require("torch")
    rng = np.random.default_rng(12)
    z = (5 * rng.standard_normal((9, 7))).astype(dt)
    z[0, 0], z[1] = 1e4, [-1e4, 0, 1e4, 3, -3, 0.5, 2]
    g = rng.standard_normal(z.shape).astype(dt)
    for ours, bwd, tfn in (
            (F.log_softmax, F.log_softmax_backward,
             lambda t: torch.log_softmax(t, 1)),
            (F.softmax, F.softmax_backward, lambda t: torch.softmax(t, 1))):
        tz = torch.from_numpy(z.copy()).requires_grad_()
        ty = tfn(tz)
        ty.backward(torch.from_numpy(g))
        tol = 10 * np.finfo(dt).eps
        np.testing.assert_allclose(ours(z), ty.detach().numpy(),
                                   rtol=tol, atol=tol)
        np.testing.assert_allclose(bwd(g, z), tz.grad.numpy(), rtol=tol,
                                   atol=tol * 10)


# --------------------------------------------------------------------------
# fuzzing
# --------------------------------------------------------------------------
@st.composite
def activation_cases(draw, name, backward=False):
    """relu_cases for the other activations: the oracle is the reference
    within a few ulps (values computed with exp, tanh and erfc)."""
    case = draw(relu_cases(backward))
    kw = {}
    if name == "leaky_relu":
        kw["negative_slope"] = draw(st.sampled_from([0.01, 0.2, -1.0, 3]))
    if name == "gelu":
        kw["approximate"] = draw(st.sampled_from(["none", "tanh"]))
    fn = getattr(ref, name + ("_backward" if backward else ""))

    def oracle(result):
        args = [np.asarray(a) for a in case.args]
        dt = design_dtype(*args)
        vals = [f64(a, dt) for a in args]
        exp = fn(*vals, **kw)
        # an element's rounding scale: 1 (and |g|) per unit of |x|
        scale = np.maximum(1, np.abs(vals[-1]))
        if backward:
            scale = scale * np.abs(vals[0])
        with np.errstate(invalid="ignore"):
            bound = np.maximum(np.abs(exp), np.nan_to_num(scale))
        assert_result(result, exp, dt, bound=bound, n_terms=16)

    return Case(case.args, kw, case.expect, case.errors, case.why, oracle)


for _name in ("leaky_relu", "sigmoid", "tanh", "silu", "gelu"):
    globals()[f"prop_{_name}"] = fuzz_property(
        getattr(F, _name), activation_cases(_name))
    globals()[f"prop_{_name}_backward"] = fuzz_property(
        getattr(F, _name + "_backward"), activation_cases(_name, True))

EXTREME += [
    ("sigmoid float64 extremes", lambda: F.sigmoid(np.array(
        [np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324])),
     {"ok"}),
    ("gelu_backward float32 extremes", lambda: F.gelu_backward(
        np.ones(3, np.float32), np.array(
            [np.finfo(np.float32).max, -np.finfo(np.float32).max, 1e-45],
            np.float32), "tanh"), {"ok"}),
    ("log_softmax broadcast 2**60 elements", lambda: F.log_softmax(
        _bcast((2**30, 2**30))), {"ValueError", "MemoryError"}),
]

test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())


# ==========================================================================
# layers
# ==========================================================================
import cnnkit  # noqa: E402
from cnnkit import layers as L  # noqa: E402

LAYER_FUNCS = [
    (L.LeakyReLU(0.2), lambda x: F.leaky_relu(x, 0.2),
     lambda g, x: F.leaky_relu_backward(g, x, 0.2)),
    (L.Sigmoid(), F.sigmoid, F.sigmoid_backward),
    (L.Tanh(), F.tanh, F.tanh_backward),
    (L.SiLU(), F.silu, F.silu_backward),
    (L.GELU(), F.gelu, F.gelu_backward),
    (L.GELU("tanh"), lambda x: F.gelu(x, "tanh"),
     lambda g, x: F.gelu_backward(g, x, "tanh")),
    (L.Softmax(), F.softmax, F.softmax_backward),
    (L.LogSoftmax(), F.log_softmax, F.log_softmax_backward),
]


@pytest.mark.parametrize("layer,fwd,bwd", LAYER_FUNCS,
                         ids=[repr(c[0]) for c in LAYER_FUNCS])
def test_activation_layer_is_its_function(rng, dtype, layer, fwd, bwd):
    shape = (4, 7) if isinstance(layer, L.Softmax) else (3, 2, 5, 4)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    model = cnnkit.Sequential([layer], input_shape=shape[1:], dtype=dtype)
    assert np.array_equal(model.forward(x), fwd(x))
    layer.forward(x, training=True)
    assert np.array_equal(layer.backward(g), bwd(g, x))


def test_activation_layers_train_in_a_model():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 6, 6)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    model = cnnkit.Sequential([
        L.Conv2D(4, 3), L.GELU(), L.Conv2D(4, 3), L.SiLU(), L.Flatten(),
        L.Dense(8), L.Tanh(), L.Dense(8), L.LeakyReLU(), L.Dense(8),
        L.Sigmoid(), L.Dense(2)], input_shape=(1, 6, 6), seed=0)
    before = model.evaluate(x, y)["loss"]
    model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert model.evaluate(x, y)["loss"] < before
    text = model.summary(print_fn=lambda s: None)
    for name in ("GELU", "SiLU", "Tanh", "LeakyReLU", "Sigmoid"):
        assert name in text


@pytest.mark.parametrize("call,err,msg", [
    (lambda: L.LeakyReLU("a"), TypeError, "negative_slope must be a real"),
    (lambda: L.LeakyReLU(True), TypeError, "negative_slope must be a real"),
    (lambda: L.LeakyReLU(np.nan), ValueError, "negative_slope must be fin"),
    (lambda: L.GELU("erf"), ValueError, "approximate must be 'none' or"),
    (lambda: L.GELU(None), TypeError, "approximate must be 'none' or"),
    (lambda: L.Softmax().build((3, 4)), ValueError,
     r"Softmax expects input of shape \(classes,\)"),
    (lambda: L.LogSoftmax().build((0,)), ValueError,
     r"LogSoftmax expects input of shape \(classes,\)"),
])
def test_activation_layer_errors(call, err, msg):
    with pytest.raises(err, match=msg):
        call()


def test_activation_layer_names_and_config():
    for cls, prefix in ((L.LeakyReLU, "leaky_relu"), (L.SiLU, "silu"),
                        (L.GELU, "gelu"), (L.LogSoftmax, "log_softmax"),
                        (L.Softmax, "softmax"), (L.Sigmoid, "sigmoid"),
                        (L.Tanh, "tanh")):
        assert cls().name.startswith(prefix)
    assert L.LeakyReLU(0.3).get_config() == {"negative_slope": 0.3}
    assert L.GELU("tanh").get_config() == {"approximate": "tanh"}
    assert repr(L.GELU()) == "GELU(approximate='none')"


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_and_multiply_pass_with_relu(dtype):
    # the pass of the Add and Multiply layers (and of the gradient sums of
    # a tensor read twice): NumPy's sum or product, then relu_forward's
    # selects, on any thread count
    from cnnkit import _ops
    rng = np.random.default_rng(5)
    a = rng.standard_normal((7, 3, 5, 11)).astype(dtype)
    b = rng.standard_normal(a.shape).astype(dtype)
    a.reshape(-1)[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0]
    b.reshape(-1)[:6] = [1.0, -np.inf, 2.0, -0.0, -0.0, -1.0]
    for threads in (1, 2):
        with helpers.num_threads(threads):
            for mul, op in ((False, np.add), (True, np.multiply)):
                want = op(a, b)
                got = _ops.eltwise(a, b, mul)
                assert got.tobytes() == want.tobytes()
                got = _ops.eltwise(a, b, mul, True)
                assert got.tobytes() == _ops.relu_forward(want).tobytes()
                out = np.empty_like(a)
                assert _ops.eltwise(a, b, mul, True, out) is out
                c = a.copy()            # out may be an input itself
                _ops.eltwise(c, b, mul, False, c)
                assert c.tobytes() == want.tobytes()
    # strided views are read as their values
    got = _ops.eltwise(a[:, :, ::2], b[:, :, ::2])
    assert got.tobytes() == np.add(a[:, :, ::2], b[:, :, ::2]).tobytes()
    assert _ops.eltwise(a[:0], b[:0]).shape == (0, 3, 5, 11)
    with pytest.raises(ValueError, match=r"add: a and b must have one "
                                         r"shape; got \(7, 3, 5, 11\) and"):
        _ops.eltwise(a, b[:, :2])
    with pytest.raises(TypeError, match="add: b has dtype"):
        _ops.eltwise(a, b.astype(np.float32 if dtype == np.float64
                                 else np.float64))
    with pytest.raises(ValueError, match="multiply: out must be"):
        _ops.eltwise(a, b, True, False, np.empty(a.shape, np.int32))


def test_add_and_multiply_layers_take_any_layout():
    # the layers' two-input pass reads contiguous pairs in C; strided and
    # broadcasting pairs take NumPy's ufuncs: the same values either way
    from cnnkit import _ops
    from cnnkit import layers as L
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 3, 6, 10)).astype(np.float32)
    b = rng.standard_normal((4, 3, 6, 10)).astype(np.float32)
    pairs = [(a, b), (a[..., ::2], b[..., ::2]), (a, b[:1]),
             (np.asfortranarray(a), b)]
    assert _ops.eltwise_in_place(a, b)
    assert not any(_ops.eltwise_in_place(x, y) for x, y in pairs[1:])
    for x, y in pairs:
        assert L.Add()([x, y]).tobytes() == np.add(x, y).tobytes()
        assert L.Multiply()([x, y]).tobytes() == \
            np.multiply(x, y).tobytes()
        got = L.Add().forward([x, y], epilogue="relu")
        assert got.tobytes() == _ops.relu_forward(np.add(x, y)).tobytes()
