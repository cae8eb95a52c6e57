"""Pooling: max_pool2d, avg_pool2d (both with ceil_mode), global_avg_pool2d
and global_max_pool2d with their backward passes -- cnnkit.functional
against cnnkit.reference (over dtypes, thread counts and memory layouts),
finite differences, the conventions (ties, NaN, -inf padding, flat int64
indices, the 2-D and 3-D forms, dtype promotion, empty batches), ceil_mode's
output sizes and divisors by hand and against PyTorch, the reference against
brute force, the documented errors, and fuzzing."""
import math
import os

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

from cnnkit import functional as F
from cnnkit import reference as ref

import fuzzing
import helpers
from fuzzing import (LAYOUTS as FUZZ_LAYOUTS, Case, arrays, bad_array,
                     design_dtype, f64, assert_result, fuzz_property,
                     hp_expectation, in_layout, mode_and_cats, pool_out,
                     positive_hp)
from helpers import (LAYOUTS, OUT_ARRAY_FAULTS, assert_same_specials,
                     check_gradients, check_kernel_out, check_op, require,
                     special_values)


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


# ==========================================================================
# max pooling against the reference
# ==========================================================================
# (N, C, H, W, kernel_size, stride, padding)
POOL_CASES = [
    pytest.param(1, 1, 4, 4, 2, None, 0, id="basic"),
    pytest.param(2, 3, 7, 5, 3, None, 1, id="odd-pad"),
    pytest.param(3, 2, 7, 6, 3, 1, 1, id="overlapping"),
    pytest.param(1, 2, 9, 8, (3, 2), (2, 1), (1, 0), id="nonsquare"),
    pytest.param(2, 1, 5, 7, 2, 3, 0, id="stride-gt-kernel"),
    pytest.param(2, 1, 9, 7, (2, 1), (4, 3), 0, id="stride-gt-kernel-ns"),
    pytest.param(1, 1, 6, 6, 4, 2, 2, id="pad-half-kernel"),
    pytest.param(2, 2, 3, 3, 3, 1, 0, id="1x1-output"),
    pytest.param(1, 1, 1, 1, 1, None, 0, id="1x1-input"),
    pytest.param(1, 2, 2, 3, 2, 1, 1, id="tiny-padded"),
    pytest.param(2, 2, 5, 5, 1, 2, 0, id="kernel1-stride2"),
]


def _pool_input(rng, dtype, shape, nan=False):
    # small integers: many ties
    x = rng.integers(-3, 3, size=shape).astype(dtype)
    if nan:
        x[rng.random(shape) < 0.1] = np.nan
    return x


def _ints_with_nan(rng, shape):
    x = rng.integers(-3, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.1] = np.nan
    return x


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_max_pool2d_matches_reference(with_nan, N, C, H, W, k, s, p):
    # small integers: many ties
    check_op("max_pool2d", [(N, C, H, W)],
             values=_ints_with_nan if with_nan else "int",
             kernel_size=k, stride=s, padding=p)


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_max_pool2d_shape_and_indices(rng, dtype, with_nan, N, C, H, W, k, s,
                                      p):
    x = _pool_input(rng, dtype, (N, C, H, W), with_nan)
    y, idx = F.max_pool2d(x, k, s, p)
    assert y.dtype == dtype and idx.dtype == np.int64
    assert y.shape == idx.shape
    assert y.shape[2:] == F.pool2d_output_shape((H, W), k, s, p)
    assert y.shape[2:] == ref.pool2d_output_size((H, W), k, s, p)
    # every index is inside the plane and holds the pooled value
    assert np.all((idx >= 0) & (idx < H * W))
    picked = np.take_along_axis(x.reshape(N, C, -1), idx.reshape(N, C, -1),
                                axis=-1).reshape(y.shape)
    np.testing.assert_array_equal(picked, y)


FORMS = [
    pytest.param([(2, 3, 7, 6)], dict(kernel_size=(3, 2), stride=(2, 1),
                                      padding=(1, 1)), id="4d"),
    pytest.param([(3, 6, 5)], dict(kernel_size=2, stride=1, padding=1),
                 id="3d"),
    pytest.param([(6, 5)], dict(kernel_size=2), id="2d"),
]


@pytest.mark.parametrize("shapes,hyper", FORMS)
def test_max_pool2d_forms_in_every_layout(shapes, hyper):
    check_op("max_pool2d", shapes, values=_ints_with_nan, layouts=LAYOUTS,
             **hyper)


def test_max_pool2d_parallel_size_matches_reference():
    check_op("max_pool2d", [(5, 8, 17, 17)], values="int", layouts=["C"],
             kernel_size=3, stride=1, padding=1)


def test_max_pool2d_layouts(rng, dtype, to_layout, layout, assert_close):
    x = to_layout(_pool_input(rng, dtype, (2, 3, 7, 6), nan=True), layout)
    y, idx = F.max_pool2d(x, (3, 2), (2, 1), (1, 1))
    ey, eidx = ref.max_pool2d(np.array(x), (3, 2), (2, 1), (1, 1))
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, eidx)
    g = to_layout(rng.standard_normal(y.shape).astype(dtype), layout)
    ind = to_layout(idx, layout)
    assert_close(F.max_pool2d_backward(g, ind, x.shape),
                 ref.max_pool2d_backward(*_f64(g), idx, x.shape), dtype,
                 n_terms=6)


@pytest.mark.parametrize("x_dt,expected", [
    (np.int64, np.float64), (np.uint8, np.float64), (np.bool_, np.float64),
    (np.float16, np.float32)])
def test_max_pool2d_dtype_promotion(rng, x_dt, expected):
    x = rng.integers(0, 2, (2, 2, 4, 4)).astype(x_dt)
    y, idx = F.max_pool2d(x, 2)
    ey, eidx = ref.max_pool2d(x.astype(np.float64), 2)
    assert y.dtype == expected and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, eidx)
    gx = F.max_pool2d_backward(np.ones(y.shape, x_dt), idx, x.shape)
    assert gx.dtype == expected
    np.testing.assert_array_equal(
        gx, ref.max_pool2d_backward(np.ones(y.shape), idx, x.shape))


def test_max_pool2d_unbatched_forms(rng, dtype):
    x = rng.standard_normal((1, 3, 6, 5)).astype(dtype)
    y4, i4 = F.max_pool2d(x, 2, 1, 1)
    y3, i3 = F.max_pool2d(x[0], 2, 1, 1)
    y2, i2 = F.max_pool2d(x[0, 1], 2, 1, 1)
    assert y3.shape == y4.shape[1:] and y2.shape == y4.shape[2:]
    np.testing.assert_array_equal(y3, y4[0])
    np.testing.assert_array_equal(i3, i4[0])
    np.testing.assert_array_equal(y2, y4[0, 1])
    np.testing.assert_array_equal(i2, i4[0, 1])
    g = rng.standard_normal(y4.shape).astype(dtype)
    g4 = F.max_pool2d_backward(g, i4, x.shape)
    g3 = F.max_pool2d_backward(g[0], i3, x.shape[1:])
    g2 = F.max_pool2d_backward(g[0, 1], i2, x.shape[2:])
    assert g3.shape == x.shape[1:] and g2.shape == x.shape[2:]
    np.testing.assert_array_equal(g3, g4[0])
    np.testing.assert_array_equal(g2, g4[0, 1])


def test_max_pool2d_ties_go_to_first_in_row_major_order(dtype):
    x = np.full((1, 1, 4, 4), 2.0, dtype=dtype)
    y, idx = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], np.full((2, 2), 2.0))
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    # the tie is between (0, 1) and (1, 0): row-major picks (0, 1)
    x = np.array([[0.0, 1.0], [1.0, 1.0]], dtype=dtype)
    assert F.max_pool2d(x, 2)[1][0, 0] == 1
    # -0.0 and 0.0 are equal: still the first one
    x = np.array([[-1.0, -0.0], [0.0, -1.0]], dtype=dtype)
    assert F.max_pool2d(x, 2)[1][0, 0] == 1
    # overlapping windows with stride 1 and padding: window (i, j) starts
    # at (i - 1, j - 1) and picks its first element inside the input
    x = np.full((3, 3), 7.0, dtype=dtype)
    np.testing.assert_array_equal(F.max_pool2d(x, 2, 1, 1)[1],
                                  [[0, 0, 1, 2], [0, 0, 1, 2],
                                   [3, 3, 4, 5], [6, 6, 7, 8]])


def test_max_pool2d_nan_propagates(dtype):
    x = np.array([[1.0, np.nan, 3.0, 4.0],
                  [5.0, 6.0, 0.0, np.nan]], dtype=dtype)
    y, idx = F.max_pool2d(x, 2)
    assert np.isnan(y[0, 0]) and np.isnan(y[0, 1])
    assert x.flat[idx[0, 0]] != x.flat[idx[0, 0]]  # points at a NaN
    assert x.flat[idx[0, 1]] != x.flat[idx[0, 1]]
    # NaN first in its window still wins over larger values after it
    x = np.array([[np.nan, 5.0], [9.0, 2.0]], dtype=dtype)
    y, idx = F.max_pool2d(x, 2)
    assert np.isnan(y[0, 0]) and idx[0, 0] == 0
    # a window without NaN is unaffected by its NaN neighbours
    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, np.nan, 0.0]],
                 dtype=dtype)
    y, idx = F.max_pool2d(x, 2)
    assert y[0, 0] == 6.0 and idx[0, 0] == 5
    assert np.isnan(y[0, 1]) and idx[0, 1] == 6


def test_max_pool2d_pads_with_minus_inf(rng, dtype):
    x = (-1.0 - rng.random((2, 2, 5, 6))).astype(dtype)
    y, idx = F.max_pool2d(x, 3, stride=1, padding=1)
    assert y.shape == (2, 2, 5, 6)
    assert np.all(y < 0)  # a zero padding would give 0 at the borders
    assert np.all((idx >= 0) & (idx < 5 * 6))
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()
    y, idx = F.max_pool2d(x, (2, 4), stride=(2, 3), padding=(1, 2))
    assert np.all(y < 0)
    assert np.all((idx >= 0) & (idx < 5 * 6))
    flat = x.reshape(2, 2, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, idx.reshape(2, 2, -1), -1).reshape(y.shape),
        y)


def test_max_pool2d_all_minus_inf_picks_first_input_element(dtype):
    x = np.full((1, 1, 3, 3), -np.inf, dtype=dtype)
    y, idx = F.max_pool2d(x, 2, stride=2, padding=1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_max_pool2d_indices_are_flat_positions_in_the_plane():
    x = np.zeros((2, 3, 4, 5))
    x[1, 2, 3, 4] = 1.0
    x[0, 1, 2, 1] = 1.0
    y, idx = F.max_pool2d(x, (2, 5), stride=(2, 5))
    assert idx.shape == (2, 3, 2, 1) and idx.dtype == np.int64
    assert idx[1, 2, 1, 0] == 3 * 5 + 4
    assert idx[0, 1, 1, 0] == 2 * 5 + 1
    assert idx[0, 0, 1, 0] == 2 * 5  # all zeros: the window's first


def test_max_pool2d_backward_accumulates_overlaps(dtype):
    x = np.zeros((1, 1, 3, 3), dtype=dtype)
    x[0, 0, 1, 1] = 9.0
    y, idx = F.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(idx, np.full((1, 1, 2, 2), 4))
    g = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=dtype)[None, None]
    gx = F.max_pool2d_backward(g, idx, x.shape)
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 10.0
    assert gx.dtype == dtype
    np.testing.assert_array_equal(gx, expected)


@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 1, 1),
                                   ((3, 2), (2, 1), (1, 0))])
def test_max_pool2d_backward_finite_differences(k, s, p):
    # distinct values: the maximum of every window is unique
    check_gradients("max_pool2d", [(2, 2, 5, 6)], values="distinct",
                    kernel_size=k, stride=s, padding=p)


def test_max_pool2d_backward_int_indices_of_any_width(rng):
    x = rng.standard_normal((2, 2, 4, 4))
    y, idx = F.max_pool2d(x, 2)
    g = rng.standard_normal(y.shape)
    expected = F.max_pool2d_backward(g, idx, x.shape)
    for dt in (np.int32, np.uint8, np.int16, np.uint64):
        np.testing.assert_array_equal(
            F.max_pool2d_backward(g, idx.astype(dt), x.shape), expected)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(g, idx, list(x.shape)), expected)


@pytest.mark.parametrize("kernel, stride, padding", [
    (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (1, 1, 0),
    ((2, 3), (1, 2), (1, 1))])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_max_pool_backward_through_relu_has_the_bits_of_both(kernel, stride,
                                                            padding, dt):
    # The pass Sequential uses for ReLU -> MaxPool2D: the pool's scatter
    # skips windows whose maximum is <= 0, which is what the ReLU's
    # backward would zero.  Overlapping windows, ties at 0, -0, NaN.
    from cnnkit import _kernels as K
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 3, 9, 8)).astype(dt)
    z[0, 0, :4] = 0.0
    z[0, 1, 2, 2] = -0.0
    z[1, 2, 5, 5] = np.nan
    x = K.relu_forward(z)
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    p = padding if isinstance(padding, tuple) else (padding, padding)
    y, idx = K.max_pool2d_forward(x, k, s, p)
    g = rng.standard_normal(y.shape).astype(dt)
    g[0, 0, 0, 0] = np.nan
    want = K.relu_backward(K.max_pool2d_backward(g, idx, x.shape), z)
    got = K.max_pool2d_backward(g, idx, x.shape, None, y)
    assert got.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="relu_pooled must be a "
                                         "C-contiguous"):
        K.max_pool2d_backward(g, idx, x.shape, None, y[..., :-1])


@pytest.mark.parametrize("hw", [(6, 8), (7, 9)])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_max_pool_2x2_has_the_bits_of_a_scatter(hw, dt):
    # The 2x2 stride-2 forward pass (its own loop) and the backward pass:
    # the bits of adding each gradient into zeros (-0 -> +0, NaN kept),
    # zeros in a leftover row and column, and the ReLU gate; also for an
    # index outside its window, and for the indices of 3x3 windows.
    from cnnkit import _kernels as K
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3) + hw).astype(dt)
    x[0, 0, :2, :2] = 1.0                          # a tie: the first wins
    y, idx = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    g = rng.standard_normal(y.shape).astype(dt)
    g[0, 0, 0, 1] = -0.0
    g[1, 1, 1, 1] = np.nan
    idx2 = idx.copy()
    idx2[1, 2, 0, 0] = 2 * hw[1] + 2              # outside its block
    y[0, 2, 1, 1] = -1.0                           # the ReLU blocks it
    for ind, pooled in ((idx, None), (idx2, None), (idx, y)):
        want = np.zeros(x.shape, dtype=dt)
        flat = want.reshape(6, -1)
        for p, (gp, ip) in enumerate(zip(g.reshape(6, -1),
                                         ind.reshape(6, -1))):
            keep = (np.ones(gp.shape, bool) if pooled is None
                    else ~(pooled.reshape(6, -1)[p] <= 0))
            np.add.at(flat[p], ip[keep], gp[keep])
        got = K.max_pool2d_backward(g, ind, x.shape, None, pooled)
        assert got.tobytes() == want.tobytes()
    assert not np.signbit(got[0, 0, 0, 2:4]).any()
    y3, idx3 = K.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))
    g3 = rng.standard_normal(y3.shape).astype(dt)
    want = np.zeros(x.shape, dtype=dt).reshape(6, -1)
    for p in range(6):
        np.add.at(want[p], idx3.reshape(6, -1)[p], g3.reshape(6, -1)[p])
    assert K.max_pool2d_backward(g3, idx3, x.shape).tobytes() == \
        want.tobytes()


# ==========================================================================
# average pooling against the reference
# ==========================================================================
@pytest.mark.parametrize("count_include_pad", [True, False],
                         ids=["count-pad", "skip-pad"])
@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_avg_pool2d_matches_reference(count_include_pad, N, C, H, W, k, s,
                                      p):
    check_op("avg_pool2d", [(N, C, H, W)], kernel_size=k, stride=s,
             padding=p, count_include_pad=count_include_pad)


@pytest.mark.parametrize("shapes,hyper", FORMS)
def test_avg_pool2d_forms_in_every_layout(shapes, hyper):
    check_op("avg_pool2d", shapes, layouts=LAYOUTS, count_include_pad=False,
             **hyper)


def test_avg_pool2d_parallel_size_matches_reference():
    check_op("avg_pool2d", [(13, 8, 15, 15)], layouts=["C"], kernel_size=3,
             stride=2, padding=1, count_include_pad=False)


@pytest.mark.parametrize("count_include_pad", [True, False],
                         ids=["count-pad", "skip-pad"])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 1, 1),
                                   ((3, 2), (2, 1), (1, 0))])
def test_avg_pool2d_backward_finite_differences(k, s, p, count_include_pad):
    check_gradients("avg_pool2d", [(2, 2, 5, 6)], kernel_size=k, stride=s,
                    padding=p, count_include_pad=count_include_pad)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 2, 1, 6),
                                   (1, 4, 9, 9)], ids=str)
def test_global_avg_pool2d_matches_reference(shape):
    check_op("global_avg_pool2d", [shape], layouts=LAYOUTS)


def test_global_avg_pool2d_parallel_size_matches_reference():
    check_op("global_avg_pool2d", [(13, 8, 15, 15)], layouts=["C"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hyper", [
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=True),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(9, 10))])
def test_avg_pool2d_bits_do_not_depend_on_the_other_planes(dtype, hyper):
    # planes are summed eight at a time, each in its own chain: a plane's
    # bits are those of the plane alone, on any thread count, and each
    # window's sum is the double sum in row-major order, rounded once
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((2, 11, 9, 10)) * 1e3).astype(dtype)
    x[0, 3, :2, :2] = [[np.inf, 1.0], [np.nan, -0.0]]
    with np.errstate(invalid="ignore"):
        for threads in (1, 2, 3):
            with helpers.num_threads(threads):
                y = F.avg_pool2d(x, **hyper)
                for n in range(2):
                    for c in range(11):
                        alone = F.avg_pool2d(x[n:n + 1, c:c + 1], **hyper)
                        assert alone.tobytes() == y[n:n + 1, c:c + 1].tobytes()
    if hyper["kernel_size"] == (9, 10):
        s = 0.0
        for v in x[1, 9].reshape(-1):
            s += float(v)
        assert y[1, 9, 0, 0] == dtype(s / 90.0)


def test_global_avg_pool2d_backward_finite_differences():
    check_gradients("global_avg_pool2d", [(2, 3, 4, 5)])


# ==========================================================================
# ceil_mode: the output size rounds up, PyTorch's rule
# ==========================================================================
# (N, C, H, W, kernel_size, stride, padding): each has a partial last window
CEIL_CASES = [
    pytest.param(1, 1, 5, 5, 2, None, 0, id="odd-2x2"),
    pytest.param(2, 3, 7, 6, 3, 2, 1, id="odd-pad"),
    pytest.param(1, 2, 9, 8, (3, 2), (2, 3), (1, 0), id="nonsquare"),
    pytest.param(2, 1, 5, 7, 2, 3, 0, id="stride-gt-kernel"),
    pytest.param(1, 1, 4, 4, 2, 3, 1, id="last-window-dropped"),
    pytest.param(2, 2, 2, 2, 3, 3, 0, id="kernel-gt-input-1x1"),
    pytest.param(1, 1, 1, 1, 2, 2, 0, id="1x1-input-kernel2"),
    pytest.param(1, 2, 1, 6, (3, 2), 2, (1, 1), id="one-row"),
    pytest.param(3, 2, 8, 8, 2, None, 0, id="even-no-change"),
]


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("N,C,H,W,k,s,p", CEIL_CASES)
def test_max_pool2d_ceil_mode_matches_reference(with_nan, N, C, H, W, k, s,
                                                p):
    check_op("max_pool2d", [(N, C, H, W)],
             values=_ints_with_nan if with_nan else "int",
             kernel_size=k, stride=s, padding=p, ceil_mode=True)


@pytest.mark.parametrize("count_include_pad", [True, False],
                         ids=["count-pad", "skip-pad"])
@pytest.mark.parametrize("N,C,H,W,k,s,p", CEIL_CASES)
def test_avg_pool2d_ceil_mode_matches_reference(count_include_pad, N, C, H, W,
                                                k, s, p):
    check_op("avg_pool2d", [(N, C, H, W)], kernel_size=k, stride=s,
             padding=p, count_include_pad=count_include_pad, ceil_mode=True)


@pytest.mark.parametrize("shapes,hyper", FORMS)
def test_ceil_mode_forms_in_every_layout(shapes, hyper):
    check_op("max_pool2d", shapes, values=_ints_with_nan, layouts=LAYOUTS,
             ceil_mode=True, **hyper)
    check_op("avg_pool2d", shapes, layouts=LAYOUTS, ceil_mode=True, **hyper)


def test_ceil_mode_parallel_size_matches_reference():
    # 2x2 / stride 2 over odd widths: the fast path and its last window
    check_op("max_pool2d", [(5, 8, 17, 17)], values="int", layouts=["C"],
             kernel_size=2, ceil_mode=True)
    check_op("avg_pool2d", [(5, 8, 17, 15)], layouts=["C"], kernel_size=3,
             stride=2, padding=1, ceil_mode=True)


@pytest.mark.parametrize("count_include_pad", [True, False],
                         ids=["count-pad", "skip-pad"])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), (2, 3, 1),
                                   ((3, 2), (2, 3), (1, 0))])
def test_ceil_mode_backward_finite_differences(k, s, p, count_include_pad):
    check_gradients("avg_pool2d", [(2, 2, 5, 6)], kernel_size=k, stride=s,
                    padding=p, count_include_pad=count_include_pad,
                    ceil_mode=True)
    check_gradients("max_pool2d", [(2, 2, 5, 6)], values="distinct",
                    kernel_size=k, stride=s, padding=p, ceil_mode=True)


@pytest.mark.parametrize("size,k,s,p,floor,ceil", [
    (5, 2, 2, 0, 2, 3),        # a last window of one row
    (6, 2, 2, 0, 3, 3),        # exact: no change
    (4, 2, 3, 1, 2, 2),        # the third window would start in the padding
    (5, 2, 3, 1, 2, 2),        # ... here too (it would start at 5)
    (6, 3, 2, 1, 3, 4),        # here it starts on the last row: kept
    (1, 2, 2, 0, None, 1),     # kernel larger than the input, one window
    (2, 3, 3, 0, None, 1),
    (1, 3, 2, 1, 1, 1),
    (7, 3, 2, 1, 4, 4),
    (8, 3, 2, 1, 4, 5),
])
def test_ceil_mode_output_size_by_hand(size, k, s, p, floor, ceil):
    for shape_of in (ref.pool2d_output_shape, F.pool2d_output_shape):
        assert shape_of((size, size), k, s, p, ceil_mode=True) == (ceil,
                                                                    ceil)
        if floor is not None:
            assert shape_of((size, size), k, s, p) == (floor, floor)
            assert shape_of((size, size), k, s, p, ceil_mode=False) == \
                (floor, floor)
    with pytest.raises(ValueError, match="larger than the padded input") \
            if floor is None else _no_error():
        F.pool2d_output_shape((size, size), k, s, p)


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_ceil_mode_by_hand_in_reference_and_kernels():
    """Values computed by hand, for the twin and the kernels alike."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    for mod in (ref, F):
        y, idx = mod.max_pool2d(x, 2, ceil_mode=True)
        np.testing.assert_array_equal(y[0, 0], [[4, 5], [7, 8]])
        np.testing.assert_array_equal(idx[0, 0], [[4, 5], [7, 8]])
        # the last windows hold 2 and 1 elements of the input; no padding
        np.testing.assert_array_equal(mod.avg_pool2d(x, 2, ceil_mode=True)
                                      [0, 0], [[2, 3.5], [6.5, 8]])
        # PyTorch's divisor: the window clipped to the padded input (here
        # the padded input is the input), not kh * kw
        np.testing.assert_array_equal(
            mod.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
            [0, 0], [[2, 3.5], [6.5, 8]])
        # x = 1..16 (4x4), kernel 2, stride 3, padding 1: two windows a
        # side (a third would start in the padding); windows at -1 and 2
        x16 = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
        np.testing.assert_array_equal(
            mod.avg_pool2d(x16, 2, 3, 1, ceil_mode=True)[0, 0],
            [[1 / 4, (3 + 4) / 4], [(9 + 13) / 4, (11 + 12 + 15 + 16) / 4]])
        np.testing.assert_array_equal(
            mod.avg_pool2d(x16, 2, 3, 1, ceil_mode=True,
                           count_include_pad=False)[0, 0],
            [[1, (3 + 4) / 2], [(9 + 13) / 2, (11 + 12 + 15 + 16) / 4]])
        # a 1x1 input, kernel 3, padding 1, stride 2: one window of 3x3
        one = np.ones((1, 1, 1, 1))
        np.testing.assert_array_equal(
            mod.avg_pool2d(one, 3, 2, 1, ceil_mode=True), [[[[1 / 9]]]])
        # a 2x2 input, kernel 3 (larger than it), stride 3: the window
        # clipped to the (unpadded) input, divisor 4
        x4 = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
        np.testing.assert_array_equal(
            mod.avg_pool2d(x4, 3, 3, ceil_mode=True), [[[[2.5]]]])
        assert mod.max_pool2d(x4, 3, 3, ceil_mode=True)[0][0, 0, 0, 0] == 4
    # gradients by hand: the last window of 1 element takes all of it
    g = F.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 3, 3), 2,
                              ceil_mode=True)
    np.testing.assert_array_equal(g[0, 0], [[.25, .25, .5], [.25, .25, .5],
                                            [.5, .5, 1]])
    np.testing.assert_array_equal(
        ref.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 3, 3), 2,
                                ceil_mode=True), g)


def test_ceil_mode_false_is_the_default(rng, dtype):
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    for k, s, p in [(2, None, 0), (3, 2, 1)]:
        a = F.max_pool2d(x, k, s, p)
        b = F.max_pool2d(x, k, s, p, ceil_mode=False)
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
        np.testing.assert_array_equal(
            F.avg_pool2d(x, k, s, p),
            F.avg_pool2d(x, k, s, p, ceil_mode=np.bool_(False)))


def _torch_grid():
    for h in (1, 2, 3, 4, 5, 7, 8):
        for w in (1, 3, 6):
            for k in ((1, 1), (2, 2), (3, 3), (2, 3), (4, 4)):
                for s in ((1, 1), (2, 2), (3, 3), (2, 1), (5, 5)):
                    for p in ((0, 0), (1, 1), (1, 0), (2, 2)):
                        if 2 * p[0] <= k[0] and 2 * p[1] <= k[1]:
                            yield h, w, k, s, p


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_ceil_mode_matches_torch_over_a_grid(dt):
    """Every corner: output sizes (and which shapes are refused), values,
    indices and gradients of max and average pooling, with and without
    ceil_mode and count_include_pad, against PyTorch."""
    torch = require("torch")
    tF = torch.nn.functional
    rng = np.random.default_rng(0)
    rtol = 1e-5 if dt == np.float32 else 1e-12
    checked = 0
    for h, w, k, s, p in _torch_grid():
        x = rng.integers(-4, 4, (2, 2, h, w)).astype(dt)
        tx = torch.from_numpy(x)
        for ceil in (False, True):
            if min(ref.pool2d_output_shape((h, w), k, s, p, ceil)) < 1:
                # no window: refused here and by torch (whose C++
                # exception is not asked for under the sanitizers' build)
                with pytest.raises(ValueError):
                    F.max_pool2d(x, k, s, p, ceil_mode=ceil)
                with pytest.raises(ValueError):
                    F.pool2d_output_shape((h, w), k, s, p, ceil_mode=ceil)
                if not os.environ.get("CNNKIT_SANITIZER"):
                    with pytest.raises(RuntimeError):
                        tF.max_pool2d(tx, k, s, p, ceil_mode=ceil)
                continue
            ty, ti = tF.max_pool2d(tx, k, s, p, ceil_mode=ceil,
                                   return_indices=True)
            what = f"{(h, w)} k{k} s{s} p{p} ceil={ceil}"
            y, idx = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
            np.testing.assert_array_equal(y, ty.numpy(), err_msg=what)
            np.testing.assert_array_equal(idx, ti.numpy(), err_msg=what)
            assert F.pool2d_output_shape((h, w), k, s, p, ceil_mode=ceil) \
                == y.shape[2:] == ref.pool2d_output_shape((h, w), k, s, p,
                                                          ceil)
            g = rng.standard_normal(y.shape).astype(dt)
            np.testing.assert_array_equal(
                F.max_pool2d_backward(g, idx, x.shape),
                _torch_grad(torch, lambda t: tF.max_pool2d(
                    t, k, s, p, ceil_mode=ceil), x, g), err_msg=what)
            for cip in (True, False):
                ta = tF.avg_pool2d(tx, k, s, p, ceil_mode=ceil,
                                   count_include_pad=cip).numpy()
                a = F.avg_pool2d(x, k, s, p, count_include_pad=cip,
                                 ceil_mode=ceil)
                np.testing.assert_allclose(a, ta, rtol=rtol, atol=rtol,
                                           err_msg=f"{what} cip={cip}")
                np.testing.assert_allclose(
                    F.avg_pool2d_backward(g, x.shape, k, s, p, cip, ceil),
                    _torch_grad(torch, lambda t: tF.avg_pool2d(
                        t, k, s, p, ceil_mode=ceil, count_include_pad=cip),
                        x, g), rtol=rtol, atol=rtol,
                    err_msg=f"{what} cip={cip}")
                np.testing.assert_allclose(
                    ref.avg_pool2d(x.astype(np.float64), k, s, p, cip, ceil),
                    ta, rtol=rtol, atol=rtol)
            checked += 1
    assert checked > 500


def _torch_grad(torch, fn, x, g):
    t = torch.from_numpy(x).requires_grad_(True)
    fn(t).backward(torch.from_numpy(g))
    return t.grad.numpy()


@pytest.mark.parametrize("call", [
    lambda c: F.max_pool2d(X, 2, ceil_mode=c),
    lambda c: F.avg_pool2d(X, 2, ceil_mode=c),
    lambda c: F.avg_pool2d_backward(np.zeros((2, 3, 2, 2)), X.shape, 2,
                                    ceil_mode=c),
    lambda c: F.pool2d_output_shape((5, 5), 2, ceil_mode=c),
    lambda c: cnnkit_layers().MaxPool2D(2, ceil_mode=c),
    lambda c: cnnkit_layers().AvgPool2D(2, ceil_mode=c),
], ids=["max", "avg", "avg_backward", "output_shape", "MaxPool2D",
        "AvgPool2D"])
@pytest.mark.parametrize("bad", [1, 0, None, "yes", 1.0, [True]])
def test_ceil_mode_must_be_a_bool(call, bad):
    with pytest.raises(TypeError, match=r"ceil_mode must be a bool, got "):
        call(bad)


def cnnkit_layers():
    from cnnkit import layers
    return layers


def test_ceil_mode_kernel_that_leaves_no_window():
    # floor: the kernel must fit the padded input; ceil: within stride - 1
    with pytest.raises(ValueError, match=r"kernel_size \(4, 4\) is larger"):
        F.max_pool2d(np.zeros((1, 1, 3, 3)), 4, 2)
    assert F.max_pool2d(np.zeros((1, 1, 3, 3)), 4, 2,
                        ceil_mode=True)[0].shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"kernel_size \(5, 5\) leaves no "
                                         r"window .*ceil_mode"):
        F.max_pool2d(np.zeros((1, 1, 3, 3)), 5, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"kernel_size \(5, 5\) leaves no "
                                         r"window"):
        F.avg_pool2d_backward(np.zeros((1, 1, 1, 1)), (1, 1, 3, 3), 5, 2,
                              ceil_mode=True)
    with pytest.raises(ValueError, match=r"plus stride - 1 \(ceil_mode\)"):
        F.pool2d_output_shape((3, 3), 5, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"grad_out must have the output "
                                         r"shape \(1, 1, 2, 2\)"):
        # the floor-mode size for a ceil-mode gradient
        F.avg_pool2d_backward(np.zeros((1, 1, 1, 1)), (1, 1, 3, 3), 2,
                              ceil_mode=True)


# ==========================================================================
# global max pooling
# ==========================================================================
def _gmp_backward(g, ins, outs, **hp):
    return (F.global_max_pool2d_backward(g, outs[1], ins[0].shape),)


def _gmp_ref_backward(g, ins, outs, **hp):
    return (ref.global_max_pool2d_backward(g, outs[1], ins[0].shape),)


GLOBAL_MAX = helpers.Op(F.global_max_pool2d, ref.global_max_pool2d,
                        _gmp_backward, _gmp_ref_backward, exact=True,
                        exact_backward=True)


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 2, 1, 6),
                                   (1, 4, 9, 9), (2, 1, 6, 1)], ids=str)
def test_global_max_pool2d_matches_reference(shape, with_nan):
    check_op(GLOBAL_MAX, [shape], layouts=LAYOUTS,
             values=_ints_with_nan if with_nan else "int")


def test_global_max_pool2d_parallel_size_matches_reference():
    check_op(GLOBAL_MAX, [(13, 8, 15, 15)], values=_ints_with_nan,
             layouts=["C"])


def test_global_max_pool2d_backward_finite_differences():
    check_gradients(GLOBAL_MAX, [(2, 3, 4, 5)], values="distinct")
    check_gradients(GLOBAL_MAX, [(2, 3, 4, 5)], values="distinct",
                    reference=True)


def test_global_max_pool2d_conventions(dtype):
    # ties: the first maximum in row-major order; NaN wins (the last NaN)
    x = np.array([[[[1, 3], [3, 0]], [[np.nan, 5], [np.nan, 9]],
                   [[-np.inf, -np.inf], [-np.inf, -np.inf]]]], dtype=dtype)
    for mod in (F, ref):
        y, idx = mod.global_max_pool2d(x)
        assert y.dtype == dtype and idx.dtype == np.int64
        assert y[0, 0] == 3 and idx[0, 0] == 1
        assert np.isnan(y[0, 1]) and idx[0, 1] == 2
        assert y[0, 2] == -np.inf and idx[0, 2] == 0
        gx = mod.global_max_pool2d_backward(np.array([[1.0, 2.0, 3.0]]),
                                            idx, x.shape)
        np.testing.assert_array_equal(
            gx, [[[[0, 1], [0, 0]], [[0, 0], [2, 0]], [[3, 0], [0, 0]]]])
    # the same as max_pool2d with one window per plane
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 2, (3, 4, 5, 6)).astype(dtype)
    y, idx = F.global_max_pool2d(x)
    py, pidx = F.max_pool2d(x, (5, 6))
    np.testing.assert_array_equal(y, py[..., 0, 0])
    np.testing.assert_array_equal(idx, pidx[..., 0, 0])


def test_global_max_pool2d_zero_size_batch(dtype):
    y, idx = F.global_max_pool2d(np.zeros((0, 3, 4, 4), dtype))
    assert y.shape == idx.shape == (0, 3) and y.dtype == dtype
    gx = F.global_max_pool2d_backward(np.zeros((0, 3), dtype), idx,
                                      (0, 3, 4, 4))
    assert gx.shape == (0, 3, 4, 4) and gx.dtype == dtype


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_global_max_pool2d_matches_torch(dt):
    """adaptive_max_pool2d(x, 1): values, indices (NaN and ties included)
    and the gradient."""
    torch = require("torch")
    tF = torch.nn.functional
    rng = np.random.default_rng(3)
    for shape in [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 1, 7)]:
        for x in (special_values(rng, shape, dt),
                  rng.integers(-2, 2, shape).astype(dt)):
            ty, ti = tF.adaptive_max_pool2d(torch.from_numpy(x), 1,
                                            return_indices=True)
            y, idx = F.global_max_pool2d(x)
            assert_same_specials(y, ty.numpy()[..., 0, 0], 0, str(shape))
            np.testing.assert_array_equal(idx, ti.numpy()[..., 0, 0])
            g = rng.standard_normal(y.shape).astype(dt)
            np.testing.assert_array_equal(
                F.global_max_pool2d_backward(g, idx, x.shape),
                _torch_grad(torch, lambda t: tF.adaptive_max_pool2d(t, 1)
                            .reshape(y.shape), x, g))


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: F.global_max_pool2d(np.zeros((2, 3, 4))), ValueError,
     r"global_max_pool2d: x must be \(N, C, H, W\); got shape \(2, 3, 4\)"),
    (lambda: F.global_max_pool2d(np.zeros((2, 3, 0, 4))), ValueError,
     r"empty spatial plane"),
    (lambda: F.global_max_pool2d(np.zeros((1, 1, 2, 2), complex)),
     TypeError, r"x must have a real .*complex128"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 4)),
                                          np.zeros((2, 4), np.int64),
                                          (2, 3, 4, 4)), ValueError,
     r"grad_out must have shape \(N, C\) of input_shape"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 3)),
                                          np.zeros((2, 3, 1), np.int64),
                                          (2, 3, 4, 4)), ValueError,
     r"indices shape \(2, 3, 1\) must equal grad_out shape \(2, 3\)"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 3)),
                                          np.zeros((2, 3)), (2, 3, 4, 4)),
     TypeError, r"indices must be an integer array, got dtype float64"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 3)),
                                          np.full((2, 3), 16),
                                          (2, 3, 4, 4)), ValueError,
     r"indices must lie in \[0, 16\) for input planes of 4x4"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 3)),
                                          np.full((2, 3), -1),
                                          (2, 3, 4, 4)), ValueError,
     r"indices must lie in \[0, 16\)"),
    (lambda: F.global_max_pool2d_backward(np.zeros((1, 1)),
                                          np.zeros((1, 1), np.int64),
                                          (1, 1, 0, 3)), ValueError,
     r"indices point into an empty input plane"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 3)),
                                          np.zeros((2, 3), np.int64), 5),
     TypeError, r"input_shape must be a tuple of ints"),
    (lambda: F.global_max_pool2d_backward(np.zeros((2, 3)),
                                          np.zeros((2, 3), np.int64),
                                          (2, 3, 2**40, 2**40)), ValueError,
     r"more than cnnkit supports"),
], ids=["ndim", "empty-plane", "dtype", "grad-shape", "index-shape",
        "index-dtype", "index-high", "index-low", "empty-input",
        "input-shape-type", "huge"])
def test_global_max_pool2d_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ==========================================================================
# empty batches, the normalisation of the arguments, batches
# ==========================================================================
def test_max_pool2d_zero_size_batch(dtype):
    y, idx = F.max_pool2d(np.zeros((0, 3, 4, 4), dtype), 2)
    assert y.shape == idx.shape == (0, 3, 2, 2)
    assert y.dtype == dtype and idx.dtype == np.int64
    gx = F.max_pool2d_backward(np.zeros((0, 3, 2, 2), dtype),
                               np.zeros((0, 3, 2, 2), np.int64), (0, 3, 4, 4))
    assert gx.shape == (0, 3, 4, 4) and gx.dtype == dtype


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_max_pool2d_plain_arguments_and_normalised_ones_give_the_same_bits(
        dt):
    # Batched arrays of one float dtype with int hyperparameters go straight
    # to the kernels; pairs and other array-likes (here memoryviews of the
    # same data) are normalised first.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dt)
    for k, s, p in [(2, None, 0), (3, 2, 1), (2, 1, 1)]:
        fast = F.max_pool2d(x, k, s, p)
        slow = F.max_pool2d(memoryview(x), (k, k),
                            None if s is None else (s, s), (p, p))
        assert all(a.tobytes() == c.tobytes() for a, c in zip(fast, slow))


@pytest.mark.parametrize("N", [2, 9])
def test_max_pool2d_does_not_depend_on_batch(rng, dtype, N):
    x = rng.standard_normal((N, 8, 33, 32)).astype(dtype)
    p, pi = F.max_pool2d(x, 3, 2, 1)
    for i in sorted({0, N // 2, N - 1}):
        yi, ii = F.max_pool2d(x[i:i + 1], 3, 2, 1)
        assert np.array_equal(yi, p[i:i + 1])
        assert np.array_equal(ii, pi[i:i + 1])


# ==========================================================================
# cnnkit.reference against brute force
# ==========================================================================
def _pair(v):
    return (v, v) if np.ndim(v) == 0 else (v[0], v[1])


def brute_max_pool2d(x, kernel_size, stride, padding):
    """Scalar scan of each window, skipping positions in the padding."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, C, OH, OW))
    idx = np.zeros((N, C, OH, OW), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best, best_idx = -math.inf, None
                    for a in range(kh):
                        for bb in range(kw):
                            h = i * sh - ph + a
                            v = j * sw - pw + bb
                            if not (0 <= h < H and 0 <= v < W):
                                continue
                            if best_idx is None:
                                best_idx = h * W + v
                            val = x[n, c, h, v]
                            if val > best or math.isnan(val):
                                best, best_idx = val, h * W + v
                    y[n, c, i, j] = best
                    idx[n, c, i, j] = best_idx
    return y, idx


def test_reference_pool2d_output_size():
    assert ref.pool2d_output_size((7, 6), 2) == (3, 3)
    assert ref.pool2d_output_size((7, 6), 3, stride=1, padding=1) == (7, 6)
    assert ref.pool2d_output_size((7, 6), (3, 2), stride=(2, 1), padding=(1, 0)) == (4, 5)


def test_reference_max_pool_known_values_and_indices():
    x = np.array(
        [[1, 3, 2, 0],
         [5, 4, 1, 7],
         [0, 2, 9, 8],
         [6, 1, 3, 9]],
        dtype=np.float64,
    )
    y, idx = ref.max_pool2d(x[None, None], 2)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [6, 9]])
    # bottom-right window holds 9 twice: the first one (row-major) wins
    np.testing.assert_array_equal(idx[0, 0], [[4, 7], [12, 10]])
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(x.ravel()[idx[0, 0]], y[0, 0])


# (N, C, H, W, kernel_size, stride, padding)
REF_POOL_CASES = [
    (1, 1, 4, 4, 2, None, 0),
    (2, 3, 7, 5, 3, None, 1),
    (3, 2, 7, 6, 3, 1, 1),             # overlapping windows
    (1, 2, 9, 8, (3, 2), (2, 1), (1, 0)),
    (2, 1, 5, 7, 2, 3, 0),             # stride > kernel
    (1, 1, 6, 6, 4, 2, 2),             # padding = kernel / 2
    (2, 2, 3, 3, 3, 1, 0),             # 1x1 output
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", REF_POOL_CASES, ids=[str(i) for i in range(len(REF_POOL_CASES))])
def test_reference_max_pool2d_matches_brute_force(case, dtype):
    N, C, H, W, k, s, p = case
    rng = np.random.default_rng(7)
    # small integers: many ties
    x = rng.integers(-3, 3, size=(N, C, H, W)).astype(dtype)
    nan_mask = rng.random(x.shape) < 0.08
    for data in (x, np.where(nan_mask, np.nan, x).astype(dtype)):
        y, idx = ref.max_pool2d(data, k, s, p)
        ey, eidx = brute_max_pool2d(data, k, s, p)
        assert y.dtype == dtype
        assert idx.dtype == np.int64
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(idx, eidx)
        # every index points at an input element holding the pooled value
        planes = data.reshape(N, C, -1)
        picked = np.take_along_axis(planes, idx.reshape(N, C, -1), axis=-1)
        np.testing.assert_array_equal(picked.reshape(y.shape), y)


def test_reference_max_pool2d_nan_propagates():
    x = np.array([[1.0, np.nan], [np.nan, 5.0]])[None, None]
    y, idx = ref.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0])
    assert idx[0, 0, 0, 0] == 2  # the last NaN in row-major order

    x = np.array([[np.nan, 5.0], [1.0, 2.0]])[None, None]
    y, idx = ref.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0])
    assert idx[0, 0, 0, 0] == 0

    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, np.nan, 0.0]], dtype=np.float32)[None, None]
    y, idx = ref.max_pool2d(x, 2)
    assert y[0, 0, 0, 0] == 6.0 and idx[0, 0, 0, 0] == 5
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 6


def test_reference_max_pool2d_pads_with_minus_inf():
    rng = np.random.default_rng(3)
    x = -1.0 - rng.random((2, 2, 5, 6))
    y, idx = ref.max_pool2d(x, 3, stride=1, padding=1)
    assert y.shape == (2, 2, 5, 6)
    assert np.all(y < 0)
    assert np.all((idx >= 0) & (idx < 5 * 6))
    ey, eidx = brute_max_pool2d(x, 3, 1, 1)
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, eidx)
    # the corner window sees only x[0:2, 0:2]
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max()


def test_reference_max_pool2d_all_minus_inf_picks_first_input_element():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = ref.max_pool2d(x, 2, stride=2, padding=1)
    assert np.all(y == -np.inf)
    # windows start at (-1,-1), (-1,1), (1,-1), (1,1): first in-input element
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_reference_max_pool2d_ties_go_to_first():
    x = np.full((1, 1, 4, 4), 2.0)
    y, idx = ref.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], np.full((2, 2), 2.0))
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    x = np.array([[0.0, 1.0], [1.0, 1.0]])[None, None]
    assert ref.max_pool2d(x, 2)[1][0, 0, 0, 0] == 1
    # -0.0 and 0.0 compare equal: still the first one
    x = np.array([[-0.0, 0.0], [0.0, -1.0]])[None, None]
    assert ref.max_pool2d(x, 2)[1][0, 0, 0, 0] == 0


def test_reference_max_pool2d_backward_accumulates_overlaps():
    x = np.array([[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]])[None, None]
    x = x + np.arange(9).reshape(1, 1, 3, 3) * 1e-3
    y, idx = ref.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(idx, np.full((1, 1, 2, 2), 4))
    g = np.array([[1.0, 2.0], [3.0, 4.0]])[None, None]
    gx = ref.max_pool2d_backward(g, idx, x.shape)
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 10.0
    np.testing.assert_array_equal(gx, expected)
    assert gx.dtype == np.float64
    assert ref.max_pool2d_backward(g.astype(np.float32), idx, x.shape).dtype == np.float32


@pytest.mark.parametrize(
    "shape, k, s, p",
    [((2, 2, 6, 6), 2, None, 0), ((1, 2, 7, 6), 3, 1, 1), ((2, 1, 7, 7), (3, 2), (2, 1), (1, 0))],
)
def test_reference_max_pool2d_backward_finite_differences(shape, k, s, p):
    check_gradients("max_pool2d", [shape], values="distinct", seed=13,
                    reference=True, eps=1e-4, atol=1e-8, kernel_size=k,
                    stride=s, padding=p)


def test_reference_max_pool2d_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 0, 0] = np.nan
    x_copy = x.copy()
    y, idx = ref.max_pool2d(x, 2, 1, 1)
    idx_copy, y_copy = idx.copy(), y.copy()
    ref.max_pool2d_backward(y, idx, x.shape)
    np.testing.assert_array_equal(idx, idx_copy)
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(x, x_copy)


# ==========================================================================
# documented errors
# ==========================================================================
X = np.zeros((2, 3, 5, 5))
P = np.zeros((2, 3, 2, 2))  # max_pool2d(X, 2) output shape
PI = np.zeros((2, 3, 2, 2), dtype=np.int64)

# (function, positional arguments, index of the argument made bad, its name)
ARRAY_ARGS = [
    (F.max_pool2d, (X, 2), 0, "x"),
    (F.max_pool2d_backward, (P, PI, X.shape), 0, "grad_out"),
]


test_bad_dtype_is_type_error_naming_argument_and_dtype = \
    helpers.bad_dtype_test(ARRAY_ARGS)


@pytest.mark.parametrize("x,kwargs,exc,pattern", [
    (np.zeros(5), {}, ValueError, r"\bx must be .*\(5,\)"),
    (np.zeros((1, 2, 3, 5, 5)), {}, ValueError, r"\bx must be"),
    (X, dict(kernel_size=0), ValueError, r"\bkernel_size must be positive"),
    (X, dict(kernel_size=(2, -1)), ValueError,
     r"\bkernel_size must be positive"),
    (X, dict(kernel_size=2.0), TypeError, r"\bkernel_size must be an int"),
    (X, dict(kernel_size=True), TypeError, r"\bkernel_size must be an int"),
    (X, dict(stride=0), ValueError, r"\bstride must be positive"),
    (X, dict(stride=-2), ValueError, r"\bstride must be positive"),
    (X, dict(stride=1.5), TypeError, r"\bstride must be an int"),
    (X, dict(stride=False), TypeError, r"\bstride must be an int"),
    (X, dict(padding=-1), ValueError, r"\bpadding must be >= 0"),
    (X, dict(padding=2), ValueError,
     r"\bpadding \(2, 2\) must be at most half"),
    (X, dict(kernel_size=3, padding=2), ValueError,
     r"\bpadding \(2, 2\) must be at most half"),
    (X, dict(kernel_size=(4, 2), padding=(1, 2)), ValueError,
     r"\bpadding \(1, 2\) must be at most half"),
    (X, dict(padding="same"), TypeError, r"\bpadding must be an int"),
    (X, dict(kernel_size=6), ValueError,
     r"kernel_size \(6, 6\) is larger than the padded input \(5, 5\)"),
    (X, dict(kernel_size=(2, 8), padding=1), ValueError,
     r"kernel_size \(2, 8\) is larger than the padded input \(7, 7\)"),
])
def test_max_pool2d_argument_errors(x, kwargs, exc, pattern):
    args = dict(kernel_size=2)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        F.max_pool2d(x, **args)


@pytest.mark.parametrize("bad", [25, 100, -1, 2 ** 40])
def test_max_pool2d_backward_indices_out_of_range(bad):
    ind = PI.copy()
    ind[1, 2, 0, 1] = bad
    with pytest.raises(ValueError,
                       match=r"indices must lie in \[0, 25\).*5x5"):
        F.max_pool2d_backward(P, ind, X.shape)


@pytest.mark.parametrize("g,ind,shape,exc,pattern", [
    (P, PI.astype(np.float64), X.shape, TypeError,
     r"indices must be an integer array, got dtype float64"),
    (P, PI.astype(bool), X.shape, TypeError, r"indices must be an integer"),
    (P, np.zeros((2, 3, 2, 3), np.int64), X.shape, ValueError,
     r"indices shape \(2, 3, 2, 3\) must equal grad_out shape \(2, 3, 2, 2\)"),
    (P, PI, (2, 3, 5), ValueError,
     r"input_shape \(2, 3, 5\) and grad_out shape .* same number of axes"),
    (P, PI, (2, 4, 5, 5), ValueError, r"input_shape .*differ in \(N, C\)"),
    (P, PI, (3, 3, 5, 5), ValueError, r"input_shape .*differ in \(N, C\)"),
    (P, PI, (2, 3, -5, 5), ValueError, r"input_shape must be 4 sizes >= 0"),
    (P, PI, 5, TypeError, r"input_shape must be a tuple of ints"),
    (P, PI, (2, 3, 5.0, 5), TypeError, r"\binput_shape must be"),
    (np.zeros((2, 2)).ravel(), PI.ravel()[:4], (4,), ValueError,
     r"grad_out must be"),
])
def test_max_pool2d_backward_argument_errors(g, ind, shape, exc, pattern):
    with pytest.raises(exc, match=pattern):
        F.max_pool2d_backward(g, ind, shape)


def test_max_pool2d_backward_indices_into_empty_plane():
    with pytest.raises(ValueError, match=r"indices point into an empty"):
        F.max_pool2d_backward(np.zeros((1, 1, 1, 1)),
                              np.zeros((1, 1, 1, 1), np.int64), (1, 1, 0, 0))


# The compiled kernels write into arrays the layers keep between training
# steps (``out=``); an unsuitable one is refused before any work.
@pytest.mark.parametrize("bad", OUT_ARRAY_FAULTS)
def test_kernel_out_arrays_are_checked(bad):
    from cnnkit import _kernels as K
    x = np.zeros((2, 3, 5, 5), np.float32)
    pool = ((2, 2), (2, 2), (0, 0))
    check_kernel_out("max_pool2d", "out", (2, 3, 2, 2),
                     lambda o: K.max_pool2d_forward(x, *pool, o), bad)


# ==========================================================================
# NaN and Inf as in PyTorch
# ==========================================================================
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_pooling_nan_and_inf_propagate_as_in_pytorch(dt):
    """Max pooling (values and indices, with -inf padding) and average
    pooling: NaN and +-inf land where PyTorch puts them."""
    torch = require("torch")
    tF = torch.nn.functional
    rtol = 1e-4 if dt == np.float32 else 1e-10
    rng = np.random.default_rng(7)
    x = special_values(rng, (2, 3, 9, 8), dt)
    tx = torch.from_numpy(x)
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), 1, (1, 1))]:
        y, idx = F.max_pool2d(x, k, stride=s, padding=p)
        ty, tidx = tF.max_pool2d(tx, k, s, p, return_indices=True)
        assert_same_specials(y, ty.numpy(), 0, f"max_pool2d {k} {s} {p}")
        np.testing.assert_array_equal(idx, tidx.numpy())
        assert_same_specials(F.avg_pool2d(x, k, stride=s, padding=p),
                             tF.avg_pool2d(tx, k, s, p).numpy(), rtol,
                             f"avg_pool2d {k} {s} {p}")


# ==========================================================================
# fuzzing (see fuzzing.py)
# ==========================================================================
@st.composite
def pool_hps(draw, mode, cats):
    """kernel, stride, padding values; their pairs; expectation."""
    kernel, kernel_p, kcat = draw(positive_hp(cats["kernel"],
                                              small=(1, 2, 3, 4)))
    if cats["stride"] == ("ok",) and draw(st.booleans()):
        stride, stride_p, scat = None, kernel_p, kcat
    else:
        stride, stride_p, scat = draw(positive_hp(cats["stride"]))
        if stride is None:                  # the default: stride = kernel
            stride_p, scat = kernel_p, kcat
    pcat = draw(st.sampled_from(cats["padding"]))
    if pcat == "ok":
        half = (1, 1) if kernel_p is None else (kernel_p[0] // 2,
                                                kernel_p[1] // 2)
        if mode == "invalid" and draw(st.integers(0, 3)) == 0:
            half = (half[0] + 2, half[1] + 2)   # padding above kernel / 2
        a = draw(st.integers(0, min(half[0], 3)))
        b = draw(st.integers(0, min(half[1], 3)))
        padding = draw(st.sampled_from([a, (a, b), [a, b]]))
        pad_p = (a, a) if np.ndim(padding) == 0 else (a, b)
    elif pcat == "bad_value":
        padding, pad_p = draw(st.sampled_from([-1, (0, -1), (1, 2, 3)])), None
    elif pcat == "bad_type":
        padding, pad_p = draw(st.sampled_from([0.5, None, "same", True])), \
            None
    else:           # big / too_big
        padding, pad_p = draw(st.sampled_from([2**40, 2**62, 2**63,
                                               10**30])), None
        pcat = "too_big"
    expect, errors, why = hp_expectation({kcat, scat, pcat})
    if expect == "error":
        pass
    elif pcat == "too_big":
        expect, errors, why = "error", (ValueError,), "padding too large"
    elif 2 * pad_p[0] > kernel_p[0] or 2 * pad_p[1] > kernel_p[1]:
        expect, errors, why = "error", (ValueError,), "padding > kernel / 2"
    elif "too_big" in {kcat, scat}:
        expect, why = "either", "size above 2**62"
    return (kernel, stride, padding), (kernel_p, stride_p, pad_p), \
        (expect, errors, why)


@st.composite
def pool_cases(draw, op):
    ndim = draw(st.sampled_from([4, 4, 3, 2]))
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    mode, cats = draw(mode_and_cats(["kernel", "stride", "padding"]))
    (kernel, stride, padding), (kernel_p, stride_p, pad_p), \
        (expect, errors, why) = draw(pool_hps(mode, cats))
    if expect == "error":
        h, w = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    else:
        need = [max(0, kernel_p[i] - 2 * pad_p[i]) for i in (0, 1)]
        h, w = (draw(st.integers(need[i], need[i] + 5)) if need[i] < 64
                else 0 for i in (0, 1))
        if mode == "invalid" and need[0] > 0 and draw(st.booleans()):
            h = need[0] - 1                       # kernel does not fit
    shape = (n, c, h, w)[4 - ndim:]
    shape4 = (1,) * (4 - ndim) + shape
    ceil = draw(st.sampled_from([False, True, np.bool_(True)]))
    out_hw = None
    if expect in ("ok", "either"):
        try:
            out_hw = pool_out(h, w, kernel_p, stride_p, pad_p, bool(ceil))
        except ValueError as exc:
            expect, errors, why = "error", (ValueError,), str(exc)
    cip = draw(st.sampled_from([True, False, 1, 0]))
    if out_hw is not None and h * w == 0 and op == "avg_backward":
        expect, why = "either", "gradient of an empty plane"
    elif out_hw is not None and h * w == 0:
        # Windows of a kernel twice the padding over an empty plane hold
        # padding only: no input position for max pooling to return, an
        # empty average unless the padding counts.
        if math.prod(shape4[:2]) and (op == "max" or not cip):
            expect, errors, why = "error", (ValueError,), \
                "windows of padding only"
        else:
            expect, why = "either", "windows of zero padding only"
    x = draw(arrays(shape))
    g = None
    if op == "avg_backward":
        g = draw(arrays(shape[:-2] + out_hw)) if out_hw else np.zeros(
            shape[:-2] + (1, 1))
    mutation = None
    if mode == "invalid" and expect != "error":
        mutation = draw(st.sampled_from(["dtype", "ndim", "none", "shape"]))
    input_shape = shape
    prior = expect, errors, why
    if expect in ("ok", "either") and mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "dtype":
            errors = (TypeError,)
            if op == "avg_backward":
                g = bad_array(draw, np.shape(g))
            else:
                x = bad_array(draw, shape)
        elif mutation == "ndim":
            bad = draw(st.sampled_from([(5,), (1, 1, 1, 4, 4)]))
            if op == "avg_backward":
                g, input_shape = np.zeros(bad), bad
            else:
                x = np.zeros(bad)
        elif mutation == "none":
            errors = (TypeError,)
            if op == "avg_backward":
                input_shape = draw(st.sampled_from([None, (1.5,) * ndim,
                                                    "abcd"[:ndim]]))
            else:
                x = None
        elif op == "avg_backward":          # "shape"
            g = np.zeros(np.shape(g)[:-1] + (np.shape(g)[-1] + 1,))
        else:
            expect, errors, why = prior
    if mode == "invalid" and expect in ("ok", "either") and \
            draw(st.integers(0, 3)) == 0:
        ceil = draw(st.sampled_from([1, 0, None, "yes", 1.0]))
        expect, errors, why = "error", (TypeError,), "ceil_mode not a bool"
    kwargs = {"stride": stride, "padding": padding, "ceil_mode": ceil}
    if op == "max":
        args = (x, kernel)
    elif op == "avg":
        args = (x, kernel)
        kwargs["count_include_pad"] = cip
    else:
        args = (g, input_shape, kernel)
        kwargs["count_include_pad"] = cip

    def oracle(result):
        hyper = (kernel_p, stride_p, pad_p)
        cm = bool(ceil)
        if op == "max":
            xa = np.asarray(x)
            dt = design_dtype(xa)
            if shape4[0] * shape4[1] == 0:   # the reference needs a plane
                ey = np.zeros(shape4[:2] + out_hw)
                ei = ey.astype(np.int64)
            else:
                ey, ei = ref.max_pool2d(f64(xa, dt).reshape(shape4), *hyper,
                                        ceil_mode=cm)
            y, idx = result
            assert_result(y, ey.reshape(shape[:-2] + ey.shape[2:]), dt,
                          exact=True)
            assert idx.dtype == np.int64
            np.testing.assert_array_equal(idx, ei.reshape(y.shape))
        elif op == "avg":
            xa = np.asarray(x)
            dt = design_dtype(xa)
            x4 = f64(xa, dt).reshape(shape4)
            if x4.size == 0:
                ey = eb = np.zeros(shape4[:2] + out_hw)
            else:
                ey = ref.avg_pool2d(x4, *hyper, bool(cip), cm)
                eb = ref.avg_pool2d(abs(x4), *hyper, bool(cip), cm)
            oshape = shape[:-2] + ey.shape[2:]
            assert_result(result, ey.reshape(oshape), dt, eb.reshape(oshape),
                          kernel_p[0] * kernel_p[1])
        else:
            ga = np.asarray(g)
            dt = design_dtype(ga)
            g4 = f64(ga, dt).reshape(shape4[:2] + ga.shape[-2:])
            ex = ref.avg_pool2d_backward(g4, shape4, *hyper, bool(cip), cm)
            eb = ref.avg_pool2d_backward(abs(g4), shape4, *hyper, bool(cip),
                                         cm)
            assert_result(result, ex.reshape(shape), dt, eb.reshape(shape),
                          g4.shape[2] * g4.shape[3])

    return Case(args, kwargs, expect, errors, why, oracle)


prop_max_pool2d = fuzz_property(F.max_pool2d, pool_cases("max"))


prop_avg_pool2d = fuzz_property(F.avg_pool2d, pool_cases("avg"))


prop_avg_pool2d_backward = fuzz_property(
    F.avg_pool2d_backward, pool_cases("avg_backward"))


@st.composite
def max_pool_backward_cases(draw):
    ndim = draw(st.sampled_from([4, 4, 3, 2]))
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    oh, ow = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    shape = (n, c, h, w)[4 - ndim:]
    gshape = (n, c, oh, ow)[4 - ndim:]
    g = draw(arrays(gshape))
    seed = draw(st.integers(0, 2**32 - 1))
    ind = np.random.default_rng(seed).integers(0, h * w, gshape)
    ind = in_layout(ind.astype(draw(st.sampled_from(
        ["int64", "int32", "int16", "uint8", "uint64"]))), draw(
        st.sampled_from(FUZZ_LAYOUTS)))
    assume(h * w <= 255 or np.asarray(ind).dtype != np.uint8)
    input_shape = draw(st.sampled_from([shape, list(shape),
                                        tuple(np.int64(d) for d in shape)]))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 4 + [
        "index_low", "index_high", "index_dtype", "index_shape", "rank",
        "nc", "negative", "float_shape", "huge_shape", "grad_dtype"]))
    if mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        size = int(np.prod(gshape))
        if mutation == "index_low" and size:
            ind = np.array(ind, dtype=np.int64)
            ind.flat[draw(st.integers(0, size - 1))] = draw(
                st.sampled_from([-1, -2**63]))
        elif mutation == "index_high" and size:
            ind = np.array(ind, dtype=draw(st.sampled_from(["int64",
                                                            "uint64"])))
            ind.flat[draw(st.integers(0, size - 1))] = draw(
                st.sampled_from([h * w, 2**63 - 1]))
        elif mutation == "index_dtype":
            ind, errors = np.asarray(ind).astype(draw(st.sampled_from(
                ["float64", "bool", "complex128", "object"]))), (TypeError,)
        elif mutation == "index_shape":
            ind = np.zeros(gshape + (1,), dtype=np.int64)
        elif mutation == "rank":
            input_shape = tuple(shape) + (1,)
        elif mutation == "nc" and ndim >= 3:
            input_shape = (shape[0] + 1,) + tuple(shape[1:])
        elif mutation == "negative":
            input_shape = tuple(shape[:-1]) + (-1,)
        elif mutation == "float_shape":
            input_shape, errors = tuple(shape[:-1]) + (float(w),), \
                (TypeError,)
        elif mutation == "huge_shape" and math.prod(shape[:-2]) > 0:
            expect = "huge"
            input_shape = tuple(shape[:-2]) + draw(st.sampled_from(
                [(2**31, 2**31), (2**62, 2), (2**70, 1), (2**20, 2**20)]))
        elif mutation == "grad_dtype":
            g, errors = bad_array(draw, gshape), (TypeError,)
        else:
            expect, errors, why = "ok", (), ""

    def oracle(result):
        ga = np.asarray(g)
        dt = design_dtype(ga)
        shape4 = (1,) * (4 - ndim) + tuple(shape)
        g4 = f64(ga, dt).reshape(shape4[:2] + (oh, ow))
        i4 = np.asarray(ind).astype(np.int64).reshape(g4.shape)
        if shape4[0] * shape4[1] == 0:      # the reference needs a plane
            ex = eb = np.zeros(shape4)
        else:
            ex = ref.max_pool2d_backward(g4, i4, shape4)
            eb = ref.max_pool2d_backward(abs(g4), i4, shape4)
        assert_result(result, ex.reshape(shape), dt, eb.reshape(shape),
                      oh * ow)

    return Case((g, ind, input_shape), {}, expect, errors, why, oracle)


prop_max_pool2d_backward = fuzz_property(
    F.max_pool2d_backward, max_pool_backward_cases())


@st.composite
def global_pool_cases(draw, backward=False):
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    x = draw(arrays((n, c, h, w)))
    g = draw(arrays((n, c)))
    input_shape = (n, c, h, w)
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 3 + ["empty_plane", "ndim",
                                                  "dtype", "mismatch"]))
    if mutation == "empty_plane":
        expect, errors, why = "error", (ValueError,), mutation
        input_shape = (n, c, 0, w)
        x = np.zeros(input_shape)
    elif mutation == "ndim":
        expect, errors, why = "error", (ValueError,), mutation
        x, g = np.zeros((c, h, w)), np.zeros((n, c, 1))
    elif mutation == "dtype":
        expect, errors, why = "error", (TypeError,), mutation
        x, g = bad_array(draw, (n, c, h, w)), bad_array(draw, (n, c))
    elif mutation == "mismatch" and backward:
        expect, errors, why = "error", (ValueError,), mutation
        g = np.zeros((n, c + 1))

    def oracle(result):
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(ga)
            ex = ref.global_avg_pool2d_backward(f64(ga, dt), input_shape)
            eb = ref.global_avg_pool2d_backward(abs(f64(ga, dt)), input_shape)
            assert_result(result, ex, dt, eb, 1)
        else:
            xa = np.asarray(x)
            dt = design_dtype(xa)
            ex = ref.global_avg_pool2d(f64(xa, dt))
            eb = ref.global_avg_pool2d(abs(f64(xa, dt)))
            assert_result(result, ex, dt, eb, h * w)

    args = (g, input_shape) if backward else (x,)
    return Case(args, {}, expect, errors, why, oracle)


prop_global_avg_pool2d = fuzz_property(F.global_avg_pool2d,
                                       global_pool_cases())


prop_global_avg_pool2d_backward = fuzz_property(
    F.global_avg_pool2d_backward, global_pool_cases(backward=True))


@st.composite
def global_max_cases(draw, backward=False):
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    x = draw(arrays((n, c, h, w)))
    g = draw(arrays((n, c)))
    seed = draw(st.integers(0, 2**32 - 1))
    ind = np.random.default_rng(seed).integers(0, h * w, (n, c))
    input_shape = (n, c, h, w)
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 3 + [
        "empty_plane", "ndim", "dtype", "mismatch", "index"]))
    if mutation == "empty_plane":
        expect, errors, why = "error", (ValueError,), mutation
        input_shape = (n, c, 0, w)
        x = np.zeros(input_shape)
        if n * c == 0 and backward:
            expect = "either"
    elif mutation == "ndim":
        expect, errors, why = "error", (ValueError,), mutation
        x, g = np.zeros((c, h, w)), np.zeros((n, c, 1))
    elif mutation == "dtype":
        expect, errors, why = "error", (TypeError,), mutation
        x, g = bad_array(draw, (n, c, h, w)), bad_array(draw, (n, c))
    elif mutation == "mismatch" and backward:
        expect, errors, why = "error", (ValueError,), mutation
        g = np.zeros((n, c + 1))
    elif mutation == "index" and backward and n * c:
        expect, errors, why = "error", (ValueError,), mutation
        ind = ind.copy()
        ind.flat[0] = draw(st.sampled_from([-1, h * w, 2**62]))

    def oracle(result):
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(ga)
            if n * c == 0:              # the reference needs a plane
                ex = np.zeros(input_shape)
            else:
                ex = ref.global_max_pool2d_backward(f64(ga, dt), ind,
                                                    input_shape)
            assert_result(result, ex, dt, exact=True)
        else:
            xa = np.asarray(x)
            dt = design_dtype(xa)
            if n * c == 0:
                ey, ei = np.zeros((n, c)), np.zeros((n, c), np.int64)
            else:
                ey, ei = ref.global_max_pool2d(f64(xa, dt))
            y, idx = result
            assert_result(y, ey, dt, exact=True)
            np.testing.assert_array_equal(idx, ei)

    args = (g, ind, input_shape) if backward else (x,)
    return Case(args, {}, expect, errors, why, oracle)


prop_global_max_pool2d = fuzz_property(F.global_max_pool2d,
                                       global_max_cases())


prop_global_max_pool2d_backward = fuzz_property(
    F.global_max_pool2d_backward, global_max_cases(backward=True))


def _z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


# (name, call, allowed outcomes); outcomes: "ok" or exception class names

EXTREME = [
    ("max pool kernel 10**9", lambda: F.max_pool2d(_z(1, 1, 4, 4), 10**9),
     {"ValueError"}),
    ("max pool kernel 2**63", lambda: F.max_pool2d(_z(1, 1, 4, 4), 2**63),
     {"ValueError"}),
    ("max pool stride 10**9", lambda: F.max_pool2d(_z(1, 1, 4, 4), 2,
                                                   stride=10**9), {"ok"}),
    ("max pool kernel equal to the input", lambda: F.max_pool2d(
        _z(2, 2, 3, 5), (3, 5)), {"ok"}),
    ("max pool 1x1", lambda: F.max_pool2d(_z(1, 1, 1, 1), 1), {"ok"}),
    ("max pool of empty planes, kernel = 2 x padding", lambda: F.max_pool2d(
        _z(2, 3, 0, 0), 4, padding=2), {"ValueError"}),
    ("max pool of an empty row, kernel = 2 x padding", lambda: F.max_pool2d(
        _z(1, 1, 0, 5), (2, 1), padding=(1, 0)), {"ValueError"}),
    ("avg pool of empty planes, padding not counted", lambda: F.avg_pool2d(
        _z(2, 3, 0, 0), 4, padding=2, count_include_pad=False),
     {"ValueError"}),
    ("max pool padding 2**62", lambda: F.max_pool2d(_z(1, 1, 4, 4), 2,
                                                    padding=2**62),
     {"ValueError"}),
    ("max pool backward index -2**63", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.full((1, 1, 1, 1), -2**63), (1, 1, 2, 2)),
     {"ValueError"}),
    ("max pool backward index 2**64-1", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.full((1, 1, 1, 1), 2**64 - 1, np.uint64),
        (1, 1, 2, 2)), {"ValueError"}),
    ("max pool backward input 2**31 x 2**31", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
        (1, 1, 2**31, 2**31)), {"ValueError", "MemoryError"}),
    ("max pool backward input 2**40 x 2**40", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
        (1, 1, 2**40, 2**40)), {"ValueError"}),
    ("max pool backward input dim 2**70", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
        (1, 1, 2**70, 1)), {"ValueError"}),
    ("avg pool backward input 2**62 x 2", lambda: F.avg_pool2d_backward(
        _z(1, 1, 1, 1), (1, 1, 2**62, 2), 2, stride=2**62),
     {"ValueError", "MemoryError"}),
    ("avg pool backward input 2**20 x 2**20", lambda: F.avg_pool2d_backward(
        _z(1, 1, 1, 1), (1, 1, 2**20, 2**20), 2**20),
     {"ValueError", "MemoryError"}),
    ("global avg pool 1x1", lambda: F.global_avg_pool2d(_z(3, 2, 1, 1)),
     {"ok"}),
    ("global max pool 1x1", lambda: F.global_max_pool2d(_z(3, 2, 1, 1)),
     {"ok"}),
    ("global max pool backward input 2**31 x 2**31",
     lambda: F.global_max_pool2d_backward(
         _z(1, 1), np.zeros((1, 1), np.int64), (1, 1, 2**31, 2**31)),
     {"ValueError", "MemoryError"}),
    ("global max pool backward index 2**64-1",
     lambda: F.global_max_pool2d_backward(
         _z(1, 1), np.full((1, 1), 2**64 - 1, np.uint64), (1, 1, 2, 2)),
     {"ValueError"}),
    ("max pool ceil_mode stride 2**62", lambda: F.max_pool2d(
        _z(1, 1, 4, 4), 5, stride=2**62, ceil_mode=True), {"ok"}),
    ("avg pool ceil_mode kernel and stride 2**62", lambda: F.avg_pool2d(
        _z(1, 1, 4, 4), 2**62, stride=2**62, ceil_mode=True), {"ok"}),
    ("avg pool ceil_mode kernel 2**62", lambda: F.avg_pool2d(
        _z(1, 1, 4, 4), 2**62, stride=1, ceil_mode=True), {"ValueError"}),
]


test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())


MAX2X2_CHECKER = r"""
from cnnkit import _kernels as K
from cnnkit import layers as L, plan
# 2x2 stride-2 max pooling on every SIMD path (the AVX-512 engine has
# vectors of its own): the values and indices of the scalar rule -- the
# four elements in row-major order, one replacing the maximum when
# greater or NaN (a tie keeps the first, the last NaN wins) -- bit for
# bit, NaN payloads included; and the inference plan's values (no
# indices, finite inputs) the same.  Rows of 1-70 windows (masked vectors
# at the end), a leftover row and column, 1 and 2 threads.


def rule(x):
    n, c, h, w = x.shape
    oh, ow = h // 2, w // 2
    win = x[:, :, :2 * oh, :2 * ow].reshape(n, c, oh, 2, ow, 2)
    taps = [win[:, :, :, 0, :, 0], win[:, :, :, 0, :, 1],
            win[:, :, :, 1, :, 0], win[:, :, :, 1, :, 1]]
    m, k = taps[0].copy(), np.zeros(taps[0].shape, np.int64)
    for t in (1, 2, 3):
        take = (taps[t] > m) | np.isnan(taps[t])
        m = np.where(take, taps[t], m)
        k = np.where(take, t, k)
    rows = 2 * np.arange(oh)[:, None] + k // 2
    cols = 2 * np.arange(ow)[None, :] + k % 2
    return m, rows * w + cols


rng = np.random.default_rng(8)
cases = 0
for dt in (np.float32, np.float64):
    uint = np.uint32 if dt == np.float32 else np.uint64
    for h, w_ in ((2, 2), (3, 5), (4, 14), (6, 15), (2, 16), (3, 17),
                  (4, 31), (2, 32), (5, 33), (4, 64), (3, 141)):
        xf = rng.integers(-2, 3, (3, 2, h, w_)).astype(dt)   # many ties
        xf[xf == 0] = -0.0
        xf[0] = rng.standard_normal((2, h, w_))
        x = xf.copy()
        flat = x.reshape(-1)
        pos = rng.choice(flat.size, max(1, flat.size // 7), replace=False)
        flat[pos] = np.nan
        bits = flat.view(uint)                  # NaNs told apart
        bits[pos] |= np.arange(1, pos.size + 1, dtype=uint)
        flat[rng.choice(flat.size, max(1, flat.size // 11))] = np.inf
        want, want_idx = rule(x)
        model = cnnkit.Sequential([L.MaxPool2D(2)], input_shape=(2, h, w_),
                                  dtype=dt)
        p = plan.compile(model)
        for nt in (1, 2):
            cnnkit.set_num_threads(nt)
            y, idx = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
            cases += 1
            if y.tobytes() != want.tobytes() or \
                    idx.tobytes() != want_idx.tobytes() or \
                    p.run(xf).tobytes() != rule(xf)[0].tobytes():
                variant.append(f"{np.dtype(dt).name} {h}x{w_} on {nt} "
                               f"threads")
extra["cases"] = cases
"""


@pytest.mark.parametrize("path", helpers.SIMD_PATHS)
def test_max_pool_2x2_vectors_keep_the_scalar_rule(path):
    res = helpers.run_simd(path, MAX2X2_CHECKER)
    assert res["cases"] == 44
    assert res["variant"] == []
