"""cnnkit.functional relu, max pooling, dense, softmax and softmax
cross-entropy against cnnkit.reference, the seed example and the kernel
conventions (ties, NaN, -inf padding, ReLU'(0))."""
import math

import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import reference as ref


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


# --------------------------------------------------------------------------
# the seed notebook's worked example
# --------------------------------------------------------------------------
SEED_IMAGE = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
SEED_KERNEL = np.array([[1, 0], [0, -1]])
SEED_W = np.array([0.5, -0.2, 0.1, 0.4])


def test_seed_example():
    fmap = F.conv2d(SEED_IMAGE, SEED_KERNEL)
    assert fmap.shape == (2, 2) and fmap.dtype == np.float64
    np.testing.assert_array_equal(fmap, [[-4.0, -4.0], [-4.0, -4.0]])

    act = F.relu(fmap)
    assert act.shape == (2, 2)
    np.testing.assert_array_equal(act, np.zeros((2, 2)))

    pooled, idx = F.max_pool2d(act, 2)
    assert pooled.shape == (1, 1) and idx.shape == (1, 1)
    np.testing.assert_array_equal(pooled, [[0.0]])
    pooled_raw, idx_raw = F.max_pool2d(fmap, 2)
    np.testing.assert_array_equal(pooled_raw, [[-4.0]])
    np.testing.assert_array_equal(idx_raw, [[0]])  # tie: first maximum

    flat = act.flatten()
    y = F.dense(flat, SEED_W, 0.1)
    assert y.shape == () and y.dtype == np.float64
    assert float(y) == 0.1
    y = F.dense(flat.reshape(1, -1), SEED_W.reshape(1, 4), np.array([0.1]))
    assert y.shape == (1, 1)
    np.testing.assert_array_equal(y, [[0.1]])
    y = F.dense(flat, SEED_W.reshape(1, 4), np.array([0.1]))
    assert y.shape == (1,)
    np.testing.assert_array_equal(y, [0.1])
    # with a non-zero input the dense layer does what the notebook does
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(F.dense(x, SEED_W, 0.1),
                               np.dot(SEED_W, x) + 0.1, rtol=1e-15)


# --------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------
RELU_SHAPES = [(), (1,), (7,), (3, 4), (2, 3, 5), (2, 3, 4, 5),
               (1, 2, 1, 3, 2), (0,), (0, 3)]


@pytest.mark.parametrize("shape", RELU_SHAPES, ids=str)
def test_relu_matches_reference(rng, dtype, assert_close, shape):
    x = rng.standard_normal(shape).astype(dtype)
    y = F.relu(x)
    assert_close(y, ref.relu(*_f64(x)), dtype)
    g = rng.standard_normal(shape).astype(dtype)
    assert_close(F.relu_backward(g, x), ref.relu_backward(*_f64(g, x)), dtype)


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


def test_relu_layouts(rng, dtype, assert_close, to_layout, layout):
    x = to_layout(rng.standard_normal((3, 2, 5, 4)).astype(dtype), layout)
    g = to_layout(rng.standard_normal((3, 2, 5, 4)).astype(dtype), layout)
    y = F.relu(x)
    assert y.flags.c_contiguous
    assert_close(y, ref.relu(*_f64(x)), dtype)
    assert_close(F.relu_backward(g, x), ref.relu_backward(*_f64(g, x)), dtype)


def test_relu_backward_finite_differences(rng, numerical_gradient,
                                          assert_grad_close):
    x = rng.standard_normal((2, 3, 4))
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # away from the kink
    g = rng.standard_normal(x.shape)
    num = numerical_gradient(lambda a: np.sum(F.relu(a) * g), x)
    assert_grad_close(num, F.relu_backward(g, x))


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
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


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_max_pool2d_matches_reference(rng, dtype, with_nan, N, C, H, W, k, s,
                                      p):
    x = _pool_input(rng, dtype, (N, C, H, W), with_nan)
    y, idx = F.max_pool2d(x, k, s, p)
    ey, eidx = ref.max_pool2d(x, k, s, p)
    assert y.dtype == dtype and idx.dtype == np.int64
    assert y.shape == idx.shape == ey.shape
    assert y.shape[2:] == F.pool2d_output_shape((H, W), k, s, p)
    assert y.shape[2:] == ref.pool2d_output_size((H, W), k, s, p)
    np.testing.assert_array_equal(y, ey)  # NaN == NaN here
    np.testing.assert_array_equal(idx, eidx)
    # every index is inside the plane and holds the pooled value
    assert np.all((idx >= 0) & (idx < H * W))
    picked = np.take_along_axis(x.reshape(N, C, -1), idx.reshape(N, C, -1),
                                axis=-1).reshape(y.shape)
    np.testing.assert_array_equal(picked, y)


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_max_pool2d_backward_matches_reference(rng, dtype, assert_close, N, C,
                                               H, W, k, s, p):
    x = _pool_input(rng, dtype, (N, C, H, W))
    y, idx = F.max_pool2d(x, k, s, p)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.max_pool2d_backward(g, idx, x.shape)
    kh, kw = (k, k) if np.ndim(k) == 0 else k
    assert_close(gx, ref.max_pool2d_backward(*_f64(g), idx, x.shape), dtype,
                 n_terms=kh * kw)


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
def test_max_pool2d_backward_finite_differences(rng, numerical_gradient,
                                                assert_grad_close, k, s, p):
    shape = (2, 2, 5, 6)
    n = int(np.prod(shape))
    x = (rng.permutation(n) * 0.01 - n * 0.005).reshape(shape)  # distinct
    y, idx = F.max_pool2d(x, k, s, p)
    g = rng.standard_normal(y.shape)
    num = numerical_gradient(
        lambda a: np.sum(F.max_pool2d(a, k, s, p)[0] * g), x)
    assert_grad_close(num, F.max_pool2d_backward(g, idx, x.shape))


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


# --------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------
# (N, F, O)
DENSE_CASES = [(1, 1, 1), (1, 4, 1), (5, 7, 3), (2, 1, 6), (17, 13, 100),
               (3, 300, 2), (40, 33, 17)]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("N,Fin,O", DENSE_CASES)
def test_dense_matches_reference(rng, dtype, assert_close, with_bias, N, Fin,
                                 O):
    x = rng.standard_normal((N, Fin)).astype(dtype)
    w = rng.standard_normal((O, Fin)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if with_bias else None
    assert_close(F.dense(x, w, b), ref.dense(*_f64(x, w, b)), dtype,
                 n_terms=Fin + 1)
    g = rng.standard_normal((N, O)).astype(dtype)
    gx, gw, gb = F.dense_backward(g, x, w, bias=with_bias)
    ex, ew, eb = ref.dense_backward(*_f64(g, x, w))
    assert_close(gx, ex, dtype, n_terms=O)
    assert_close(gw, ew, dtype, n_terms=N)
    if with_bias:
        assert_close(gb, eb, dtype, n_terms=N)
    else:
        assert gb is None


@pytest.mark.parametrize("part", ["x", "weight", "bias", "grad_out"])
def test_dense_layouts(rng, dtype, assert_close, to_layout, layout, part):
    args = dict(x=rng.standard_normal((6, 9)), weight=rng.standard_normal(
        (4, 9)), bias=rng.standard_normal(4),
        grad_out=rng.standard_normal((6, 4)))
    args = {k: v.astype(dtype) for k, v in args.items()}
    args[part] = to_layout(args[part], layout)
    x, w, b, g = args["x"], args["weight"], args["bias"], args["grad_out"]
    assert_close(F.dense(x, w, b), ref.dense(*_f64(x, w, b)), dtype,
                 n_terms=10)
    got = F.dense_backward(g, x, w)
    for a, e in zip(got, ref.dense_backward(*_f64(g, x, w))):
        assert_close(a, e, dtype, n_terms=9)


@pytest.mark.parametrize("x_dt,w_dt,b_dt,expected", [
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.int32, np.int8, np.float64),
    (np.bool_, np.float32, None, np.float64),
    (np.float16, np.float16, np.float16, np.float32),
])
def test_dense_dtype_promotion(rng, assert_close, x_dt, w_dt, b_dt, expected):
    x = rng.integers(-2, 3, (4, 5)).astype(x_dt)
    w = rng.integers(-2, 3, (3, 5)).astype(w_dt)
    b = None if b_dt is None else rng.integers(-2, 3, 3).astype(b_dt)
    assert_close(F.dense(x, w, b), ref.dense(*_f64(x, w, b)), expected,
                 n_terms=6)
    g = rng.integers(-2, 3, (4, 3)).astype(np.float64)
    for a, e in zip(F.dense_backward(g, x, w),
                    ref.dense_backward(*_f64(g, x, w))):
        assert_close(a, e, np.float64, n_terms=5)


def test_dense_one_dimensional_forms(rng, dtype):
    x = rng.standard_normal((3, 5)).astype(dtype)
    w = rng.standard_normal((2, 5)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype)
    full = F.dense(x, w, b)
    np.testing.assert_array_equal(F.dense(x[1], w, b), full[1])
    np.testing.assert_array_equal(F.dense(x, w[1], b[1]), full[:, 1])
    np.testing.assert_array_equal(F.dense(x, w[1], b[1:]), full[:, 1])
    scalar = F.dense(x[2], w[0], b[0])
    assert scalar.shape == () and scalar.dtype == dtype
    assert scalar == full[2, 0]
    g = rng.standard_normal((3, 2)).astype(dtype)
    gx, gw, gb = F.dense_backward(g, x, w)
    gx1, gw1, gb1 = F.dense_backward(g[1], x[1], w)
    assert gx1.shape == (5,) and gw1.shape == (2, 5) and gb1.shape == (2,)
    np.testing.assert_array_equal(gx1, F.dense_backward(g[1:2], x[1:2],
                                                        w)[0][0])
    gx2, gw2, gb2 = F.dense_backward(g[:, 0], x, w[0])
    assert gx2.shape == (3, 5) and gw2.shape == (5,) and gb2.shape == ()
    np.testing.assert_array_equal(gw2, F.dense_backward(g[:, :1], x,
                                                        w[:1])[1][0])
    assert gb2 == F.dense_backward(g[:, :1], x, w[:1])[2][0]


def test_dense_backward_finite_differences(rng, numerical_gradient,
                                           assert_grad_close):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    g = rng.standard_normal((4, 3))
    gx, gw, gb = F.dense_backward(g, x, w)
    assert_grad_close(numerical_gradient(
        lambda a: np.sum(F.dense(a, w, b) * g), x), gx)
    assert_grad_close(numerical_gradient(
        lambda a: np.sum(F.dense(x, a, b) * g), w), gw)
    assert_grad_close(numerical_gradient(
        lambda a: np.sum(F.dense(x, w, a) * g), b), gb)


# --------------------------------------------------------------------------
# softmax and cross-entropy
# --------------------------------------------------------------------------
SOFTMAX_SHAPES = [(1, 1), (1, 5), (4, 3), (7, 10), (3, 257), (6,)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_matches_reference(rng, dtype, assert_close, shape):
    z = (rng.standard_normal(shape) * 5).astype(dtype)
    p = F.softmax(z)
    assert_close(p, ref.softmax(*_f64(z)), dtype, n_terms=shape[-1])
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=-1), 1.0,
                               rtol=0, atol=10 * np.finfo(dtype).eps)
    assert np.all(p >= 0)


def test_softmax_layouts_and_promotion(rng, dtype, to_layout, layout,
                                       assert_close):
    z = to_layout((rng.standard_normal((5, 4)) * 3).astype(dtype), layout)
    assert_close(F.softmax(z), ref.softmax(*_f64(z)), dtype, n_terms=4)
    zi = rng.integers(-3, 4, (3, 4))
    assert_close(F.softmax(zi), ref.softmax(*_f64(zi)), np.float64)
    assert_close(F.softmax(zi.astype(np.float16)), ref.softmax(*_f64(zi)),
                 np.float32, n_terms=100)


def test_softmax_large_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]],
                 dtype=dtype)
    p = F.softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1:], 1 / 3, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("N,C", [(1, 1), (1, 4), (5, 3), (8, 10), (3, 300)])
def test_softmax_cross_entropy_matches_reference(rng, dtype, assert_close, N,
                                                 C):
    z = (rng.standard_normal((N, C)) * 4).astype(dtype)
    labels = rng.integers(0, C, N)
    loss, grad = F.softmax_cross_entropy(z, labels)
    eloss, egrad = ref.softmax_cross_entropy(*_f64(z), labels)
    assert type(loss) is dtype.type
    assert_close(np.asarray(loss)[None], [eloss], dtype, n_terms=C)
    assert_close(grad, egrad, dtype, n_terms=C)
    # (softmax - onehot) / N, rows sum to 0
    onehot = np.eye(C)[labels]
    assert_close(grad, (ref.softmax(z.astype(np.float64)) - onehot) / N,
                 dtype, n_terms=C)


def test_softmax_cross_entropy_layouts_and_label_dtypes(rng, dtype, to_layout,
                                                        layout, assert_close):
    z = to_layout((rng.standard_normal((6, 4)) * 2).astype(dtype), layout)
    labels = to_layout(rng.integers(0, 4, 6), layout)
    eloss, egrad = ref.softmax_cross_entropy(*_f64(z), np.array(labels))
    for lab in (labels, np.array(labels, dtype=np.uint8),
                np.array(labels, dtype=np.int32), list(np.array(labels))):
        loss, grad = F.softmax_cross_entropy(z, lab)
        assert type(loss) is dtype.type
        assert_close(np.asarray(loss)[None], [eloss], dtype, n_terms=4)
        assert_close(grad, egrad, dtype, n_terms=4)


def test_softmax_cross_entropy_integer_logits_give_float64():
    z = np.array([[2, 1, 0], [0, 3, -1]])
    loss, grad = F.softmax_cross_entropy(z, [0, 2])
    assert type(loss) is np.float64 and grad.dtype == np.float64
    eloss, egrad = ref.softmax_cross_entropy(z.astype(np.float64), [0, 2])
    np.testing.assert_allclose(loss, eloss, rtol=1e-14)
    np.testing.assert_allclose(grad, egrad, rtol=1e-13, atol=1e-16)


def test_softmax_cross_entropy_extreme_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0],
                  [1e4, -1e4, 0.0],
                  [-1e4, -1e4, -1e4],
                  [-1e4, -1e4 + 1.0, -1e4 - 1.0]], dtype=dtype)
    labels = np.array([0, 1, 2, 1])
    loss, grad = F.softmax_cross_entropy(z, labels)
    assert type(loss) is dtype.type and grad.dtype == dtype
    assert np.isfinite(loss) and np.all(np.isfinite(grad))

    def lse(row):  # by hand, around the row maximum
        m = max(row)
        return m + math.log(sum(math.exp(v - m) for v in row))

    rows = [[float(v) for v in r] for r in z]
    expected = sum(lse(r) - r[y] for r, y in zip(rows, labels)) / 4
    assert expected == pytest.approx((0.0 + 2e4 + math.log(3.0) + math.log(
        1.0 + math.exp(-1.0) + math.exp(-2.0))) / 4, rel=1e-15)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(float(loss), expected, rtol=rtol)

    # softmax(z) - onehot, with each softmax formed from z - max(z), which
    # is exact here; float64 allows a few hundred ulps at most
    rtol = 1e-6 if dtype == np.float32 else 1e-13

    e = np.exp([-1.0, 0.0, -2.0])
    expected_grad = np.array([[0.0, 0.0, 0.0],
                              [1.0, -1.0, 0.0],
                              [1 / 3, 1 / 3, -2 / 3],
                              e / e.sum() - [0.0, 1.0, 0.0]]) / 4
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol,
                               atol=rtol * 1e-2)


@pytest.mark.parametrize("shift", [0.0, 1e4, -1e4])
@pytest.mark.parametrize("label", [0, 1, 2])
def test_softmax_cross_entropy_exact_for_shifted_logits(dtype, shift, label):
    # logits of magnitude 1e4 whose differences are small integers (exactly
    # representable): loss and gradient are those of the unshifted logits
    base = [0.0, -1.0, -2.0]
    z = (np.array([base]) + shift).astype(dtype)
    assert np.array_equal(z.astype(np.float64) - shift, [base])
    lse = math.log(1.0 + math.exp(-1.0) + math.exp(-2.0))  # by hand
    expected = lse - base[label]
    loss, grad = F.softmax_cross_entropy(z, [label])
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    assert type(loss) is dtype.type
    np.testing.assert_allclose(float(loss), expected, rtol=rtol)
    p = np.exp(np.array(base) - lse)
    np.testing.assert_allclose(grad[0], p - np.eye(3)[label], rtol=rtol)
    np.testing.assert_allclose(F.softmax(z)[0], p, rtol=rtol)


def test_softmax_cross_entropy_perfect_prediction_is_zero(dtype):
    z = np.array([[50.0, -50.0], [-50.0, 50.0]], dtype=dtype)
    loss, grad = F.softmax_cross_entropy(z, [0, 1])
    assert loss == 0 or abs(loss) < 1e-30
    assert np.all(np.abs(grad) < 1e-30)


def test_softmax_cross_entropy_finite_differences(rng, numerical_gradient,
                                                  assert_grad_close):
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    _, grad = F.softmax_cross_entropy(z, labels)
    num = numerical_gradient(
        lambda a: F.softmax_cross_entropy(a, labels)[0], z, 1e-5)
    assert_grad_close(num, grad)


# --------------------------------------------------------------------------
# empty batches
# --------------------------------------------------------------------------
def test_zero_size_inputs_give_empty_outputs(dtype):
    y = F.conv2d(np.zeros((0, 2, 5, 5), dtype), np.ones((3, 2, 3, 3), dtype),
                 np.ones(3, dtype), padding=1)
    assert y.shape == (0, 3, 5, 5) and y.dtype == dtype
    assert F.relu(np.zeros((0, 4), dtype)).shape == (0, 4)
    assert F.relu(np.zeros((2, 0, 3), dtype)).shape == (2, 0, 3)
    y, idx = F.max_pool2d(np.zeros((0, 3, 4, 4), dtype), 2)
    assert y.shape == idx.shape == (0, 3, 2, 2)
    assert y.dtype == dtype and idx.dtype == np.int64
    y = F.dense(np.zeros((0, 5), dtype), np.ones((2, 5), dtype),
                np.ones(2, dtype))
    assert y.shape == (0, 2) and y.dtype == dtype
    assert F.softmax(np.zeros((0, 3), dtype)).shape == (0, 3)


def test_empty_reductions_give_the_bias(dtype):
    b = np.array([1.5, -2.0, 0.25], dtype)
    y = F.conv2d(np.zeros((2, 0, 5, 5), dtype), np.zeros((3, 0, 3, 3), dtype),
                 b)
    assert y.shape == (2, 3, 3, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None],
                                                     y.shape))
    y = F.dense(np.zeros((4, 0), dtype), np.zeros((3, 0), dtype), b)
    assert y.shape == (4, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.broadcast_to(b, (4, 3)))
    y = F.conv2d(np.ones((2, 0, 5, 5), dtype), np.ones((3, 0, 3, 3), dtype))
    np.testing.assert_array_equal(y, np.zeros((2, 3, 3, 3)))


def test_zero_size_backward_gives_zero_parameter_gradients(dtype):
    x = np.zeros((0, 2, 5, 5), dtype)
    w = np.ones((3, 2, 3, 3), dtype)
    gx, gw, gb = F.conv2d_backward(np.zeros((0, 3, 3, 3), dtype), x, w)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros(w.shape))
    np.testing.assert_array_equal(gb, np.zeros(3))
    assert gw.dtype == gb.dtype == dtype
    gx, gw, gb = F.dense_backward(np.zeros((0, 2), dtype),
                                  np.zeros((0, 5), dtype),
                                  np.ones((2, 5), dtype))
    assert gx.shape == (0, 5)
    np.testing.assert_array_equal(gw, np.zeros((2, 5)))
    np.testing.assert_array_equal(gb, np.zeros(2))
    gx = F.relu_backward(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert gx.shape == (0, 3) and gx.dtype == dtype
    gx = F.max_pool2d_backward(np.zeros((0, 3, 2, 2), dtype),
                               np.zeros((0, 3, 2, 2), np.int64), (0, 3, 4, 4))
    assert gx.shape == (0, 3, 4, 4) and gx.dtype == dtype


def test_softmax_cross_entropy_sample_weight_matches_reference(rng):
    z = rng.standard_normal((9, 5))
    y = rng.integers(0, 5, 9)
    w = rng.random(9) * 3
    w[2] = 0.0
    loss, grad = F.softmax_cross_entropy(z, y, w)
    ref_loss, ref_grad = ref.softmax_cross_entropy(z, y, w)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)
    assert not grad[2].any()
    # weights as repetitions
    reps = np.array([1, 2, 0, 1, 3, 1, 1, 2, 1])
    rl, _ = F.softmax_cross_entropy(np.repeat(z, reps, 0), np.repeat(y, reps))
    assert F.softmax_cross_entropy(z, y, reps)[0] == pytest.approx(rl, rel=1e-14)
    # all-zero weights give zero loss and gradient
    loss0, grad0 = F.softmax_cross_entropy(z, y, np.zeros(9))
    assert loss0 == 0 and not grad0.any()
    with pytest.raises(ValueError, match="sample_weight"):
        F.softmax_cross_entropy(z, y, -w)
    with pytest.raises(ValueError, match="sample_weight"):
        F.softmax_cross_entropy(z, y, w[:-1])


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


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_plain_arguments_and_normalised_ones_give_the_same_bits(dt):
    # Batched arrays of one float dtype with int hyperparameters go straight
    # to the kernels; pairs and other array-likes (here memoryviews of the
    # same data) are normalised first.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dt)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dt)
    b = rng.standard_normal(4).astype(dt)
    for s, p, d in [(1, 0, 1), (2, 1, 1), (1, 2, 2), (3, 1, 2)]:
        fast = F.conv2d(x, w, b, s, p, d)
        slow = F.conv2d(x, w, memoryview(b), (s, s), (p, p), [d, d])
        assert fast.tobytes() == slow.tobytes()
    for k, s, p in [(2, None, 0), (3, 2, 1), (2, 1, 1)]:
        fast = F.max_pool2d(x, k, s, p)
        slow = F.max_pool2d(memoryview(x), (k, k),
                            None if s is None else (s, s), (p, p))
        assert all(a.tobytes() == c.tobytes() for a, c in zip(fast, slow))
    xd, wd = x.reshape(2, -1), rng.standard_normal((5, 216)).astype(dt)
    bd = rng.standard_normal(5).astype(dt)
    assert F.dense(xd, wd, bd).tobytes() == \
        F.dense(memoryview(xd), wd, memoryview(bd)).tobytes()
