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


test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())
