"""Tests for the pure-NumPy reference kernels in ``cnnkit.reference``.

The reference module is the oracle for the compiled kernels, so it is checked
here against the seed notebook's worked example, against independent
brute-force loops, and (for every backward pass) against central finite
differences.
"""

import math

import numpy as np
import pytest

from cnnkit import reference as ref


# ---------------------------------------------------------------------------
# Independent brute-force implementations
# ---------------------------------------------------------------------------


def _pair(v):
    return (v, v) if np.ndim(v) == 0 else (v[0], v[1])


def brute_conv2d(x, w, b, stride, padding, dilation):
    """Seven nested loops over (n, k, i, j, c, r, s), in float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    if padding == "same":
        th, tw = dh * (R - 1), dw * (S - 1)
        top, bottom, left, right = th // 2, th - th // 2, tw // 2, tw - tw // 2
    elif padding == "valid":
        top = bottom = left = right = 0
    else:
        ph, pw = _pair(padding)
        top = bottom = ph
        left = right = pw
    OH = (H + top + bottom - dh * (R - 1) - 1) // sh + 1
    OW = (W + left + right - dw * (S - 1) - 1) // sw + 1
    y = np.zeros((N, K, OH, OW))
    for n in range(N):
        for k in range(K):
            for i in range(OH):
                for j in range(OW):
                    acc = 0.0 if b is None else float(b[k])
                    for c in range(C):
                        for r in range(R):
                            for s in range(S):
                                h = i * sh + r * dh - top
                                v = j * sw + s * dw - left
                                if 0 <= h < H and 0 <= v < W:
                                    acc += x[n, c, h, v] * w[k, c, r, s]
                    y[n, k, i, j] = acc
    return y


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


def numerical_gradient(f, a, eps):
    """Central differences of the scalar function ``f`` at ``a``."""
    a = np.array(a, dtype=np.float64)
    grad = np.zeros_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        plus = f(a)
        a.flat[i] = old - eps
        minus = f(a)
        a.flat[i] = old
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_grad_close(numeric, analytic):
    analytic = np.asarray(analytic)
    assert numeric.shape == analytic.shape
    scale = max(1.0, float(np.abs(numeric).max()))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8 * scale)


# ---------------------------------------------------------------------------
# The seed notebook, step by step
# ---------------------------------------------------------------------------

SEED_IMAGE = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
SEED_KERNEL = np.array([[1, 0], [0, -1]])


def test_seed_convolution_2d():
    out = ref.conv2d(SEED_IMAGE, SEED_KERNEL)
    assert out.shape == (2, 2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[-4.0, -4.0], [-4.0, -4.0]])


def test_seed_convolution_2d_lists():
    out = ref.conv2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, -1]])
    np.testing.assert_array_equal(out, [[-4.0, -4.0], [-4.0, -4.0]])


def test_seed_convolution_matches_notebook_loop():
    output = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            region = SEED_IMAGE[i:i + 2, j:j + 2]
            output[i, j] = np.sum(region * SEED_KERNEL)
    np.testing.assert_array_equal(ref.conv2d(SEED_IMAGE, SEED_KERNEL), output)


def test_seed_convolution_4d():
    out = ref.conv2d(SEED_IMAGE[None, None], SEED_KERNEL[None, None])
    assert out.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[-4.0, -4.0], [-4.0, -4.0]])


def test_seed_convolution_is_not_flipped():
    # a true convolution (flipped kernel) would give +4 everywhere
    flipped = ref.conv2d(SEED_IMAGE, SEED_KERNEL[::-1, ::-1])
    np.testing.assert_array_equal(flipped, [[4.0, 4.0], [4.0, 4.0]])
    assert not np.array_equal(flipped, ref.conv2d(SEED_IMAGE, SEED_KERNEL))


def test_seed_convolution_with_bias():
    out = ref.conv2d(SEED_IMAGE[None, None], SEED_KERNEL[None, None], bias=[0.5])
    np.testing.assert_array_equal(out[0, 0], np.full((2, 2), -3.5))


def test_seed_relu():
    feature_map = ref.conv2d(SEED_IMAGE, SEED_KERNEL)
    out = ref.relu(feature_map)
    np.testing.assert_array_equal(out, np.zeros((2, 2)))
    np.testing.assert_array_equal(ref.relu([-4.0, 0.0, 2.5]), [0.0, 0.0, 2.5])


def test_seed_max_pool_of_relu_output():
    relu_output = ref.relu(ref.conv2d(SEED_IMAGE, SEED_KERNEL))
    y, idx = ref.max_pool2d(relu_output[None, None], 2)
    assert y.shape == (1, 1, 1, 1)
    assert y[0, 0, 0, 0] == 0.0
    assert idx[0, 0, 0, 0] == 0


def test_max_pool_known_values_and_indices():
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


def test_seed_dense():
    relu_output = ref.relu(ref.conv2d(SEED_IMAGE, SEED_KERNEL))
    x = relu_output.flatten()[None, :]
    W = np.array([[0.5, -0.2, 0.1, 0.4]])
    b = np.array([0.1])
    y = ref.dense(x, W, b)
    assert y.shape == (1, 1)
    np.testing.assert_allclose(y, [[0.1]], rtol=0, atol=1e-15)


def test_seed_dense_nontrivial_input():
    y = ref.dense([[1.0, 2.0, 3.0, 4.0]], [[0.5, -0.2, 0.1, 0.4]], [0.1])
    # 0.5 - 0.4 + 0.3 + 1.6 + 0.1
    np.testing.assert_allclose(y, [[2.1]], rtol=1e-14)
    np.testing.assert_allclose(
        ref.dense([[1.0, 2.0, 3.0, 4.0]], [[0.5, -0.2, 0.1, 0.4]]), [[2.0]], rtol=1e-14
    )


def test_seed_pipeline_end_to_end():
    fm = ref.conv2d(SEED_IMAGE[None, None], SEED_KERNEL[None, None])
    a = ref.relu(fm)
    p, _ = ref.max_pool2d(a, 1)
    logits = ref.dense(p.reshape(1, -1), np.array([[0.5, -0.2, 0.1, 0.4], [0.0, 0.0, 0.0, 1.0]]),
                       np.array([0.1, -0.1]))
    np.testing.assert_allclose(logits, [[0.1, -0.1]], atol=1e-15)
    loss, grad = ref.softmax_cross_entropy(logits, [0])
    expected = -0.1 + math.log(math.exp(0.1) + math.exp(-0.1))
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    np.testing.assert_allclose(grad.sum(), 0.0, atol=1e-15)


# ---------------------------------------------------------------------------
# Output sizes
# ---------------------------------------------------------------------------


def test_conv_output_size():
    assert ref.conv_output_size(3, 2) == 2
    assert ref.conv_output_size(28, 3, stride=2, padding=1) == 14
    assert ref.conv_output_size(9, 3, stride=1, padding=0, dilation=2) == 5
    assert ref.conv_output_size(7, 2, stride=3) == 2
    assert ref.conv_output_size(7, 4, padding="same") == 7
    assert ref.conv_output_size(7, 3, padding="same", dilation=3) == 7
    assert ref.conv_output_size(7, 3, padding="valid") == 5


def test_conv2d_and_pool2d_output_size():
    assert ref.conv2d_output_size((9, 8), (3, 2), stride=(2, 3), padding=(1, 0)) == (5, 3)
    assert ref.conv2d_output_size((5, 6), (2, 4), padding="same") == (5, 6)
    assert ref.pool2d_output_size((7, 6), 2) == (3, 3)
    assert ref.pool2d_output_size((7, 6), 3, stride=1, padding=1) == (7, 6)
    assert ref.pool2d_output_size((7, 6), (3, 2), stride=(2, 1), padding=(1, 0)) == (4, 5)


def test_same_padding_requires_stride_one():
    with pytest.raises(ValueError, match="stride"):
        ref.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), stride=2, padding="same")


# ---------------------------------------------------------------------------
# conv2d against brute force
# ---------------------------------------------------------------------------

# (N, C, H, W, K, R, S, stride, padding, dilation)
CONV_CASES = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0, 1),
    (3, 2, 7, 5, 4, 3, 2, 1, 0, 1),            # batch 3, odd sizes, non-square kernel
    (2, 3, 9, 8, 2, 2, 2, 3, 0, 1),            # stride > kernel
    (1, 2, 6, 7, 3, 3, 3, (2, 1), (1, 2), 1),  # pairs
    (3, 2, 9, 9, 2, 3, 3, 1, 2, 2),            # dilation with padding
    (1, 2, 7, 6, 2, 3, 2, 2, 1, (2, 3)),       # pair dilation, stride 2
    (2, 2, 3, 4, 3, 3, 4, 1, 0, 1),            # 1x1 output
    (1, 1, 2, 3, 2, 4, 5, 1, (1, 1), 1),       # 1x1 output from padding
    (2, 3, 5, 4, 2, 1, 1, 2, 0, 1),            # 1x1 kernel
    (2, 2, 5, 6, 3, 3, 3, 1, "same", 1),       # same, odd kernel
    (1, 2, 5, 6, 2, 2, 4, 1, "same", 1),       # same, even kernels
    (2, 1, 7, 7, 2, 2, 3, 1, "same", (2, 3)),  # same, dilated
    (3, 2, 6, 5, 2, 3, 2, 1, "valid", 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_matches_brute_force(case, dtype):
    N, C, H, W, K, R, S, stride, padding, dilation = case
    rng = np.random.default_rng([N, C, H, W, K, R, S])
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    for bias in (None, b):
        y = ref.conv2d(x, w, bias, stride=stride, padding=padding, dilation=dilation)
        expected = brute_conv2d(x, w, bias, stride, padding, dilation)
        assert y.dtype == dtype
        assert y.shape == expected.shape
        if padding == "same":
            assert y.shape[2:] == (H, W)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, expected, rtol=tol, atol=tol * C * R * S)


def test_conv2d_dtype_promotion():
    x = np.arange(16).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2), dtype=np.int32)
    y = ref.conv2d(x, w)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y[0, 0, 0], [10, 14, 18])
    y32 = ref.conv2d(x.astype(np.float32), w.astype(np.float32))
    assert y32.dtype == np.float32
    assert ref.conv2d(x.astype(np.float32), w.astype(np.float64)).dtype == np.float64
    assert ref.conv2d(x.astype(np.float32), w.astype(np.float32),
                      np.zeros(1, np.float64)).dtype == np.float64


def test_conv2d_non_contiguous_input():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 6, 3, 14))
    x = base.transpose(0, 2, 1, 3)[:, :, :, ::2]  # (2, 3, 6, 7), strided
    w = rng.standard_normal((4, 3, 2, 3))
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(
        ref.conv2d(x, w, stride=(1, 2), padding=1),
        ref.conv2d(np.ascontiguousarray(x), w, stride=(1, 2), padding=1),
        rtol=1e-15,
    )


def test_conv2d_same_pads_extra_on_bottom_right():
    # an even kernel with a single tap at (0, 0) picks the top-left of each
    # window; with 'same' the window starts half the padding above/left
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    w = np.zeros((1, 1, 4, 4))
    w[0, 0, 0, 0] = 1.0
    y = ref.conv2d(x, w, padding="same")  # total 3: 1 before, 2 after
    expected = np.zeros((4, 4))
    expected[1:, 1:] = x[0, 0, :3, :3]
    np.testing.assert_array_equal(y[0, 0], expected)


# ---------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------


def test_relu_values_dtype_and_nan():
    x = np.array([-2.0, -0.0, 0.0, 1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    y = ref.relu(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 0, 0, 1.5, np.nan, np.inf, 0])
    assert np.isnan(y[4])
    assert ref.relu(np.array([-1, 3])).dtype == np.float64
    assert ref.relu(np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_relu_backward_values():
    x = np.array([-1.0, 0.0, 2.0, np.nan, -3.0])
    g = np.array([5.0, 6.0, 7.0, 8.0, np.inf])
    gx = ref.relu_backward(g, x)
    # 0 at x <= 0; a NaN input passes the gradient (PyTorch's rule)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 7.0, 8.0, 0.0])
    assert ref.relu_backward(g.astype(np.float32), x.astype(np.float32)).dtype == np.float32


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------

# (N, C, H, W, kernel_size, stride, padding)
POOL_CASES = [
    (1, 1, 4, 4, 2, None, 0),
    (2, 3, 7, 5, 3, None, 1),
    (3, 2, 7, 6, 3, 1, 1),             # overlapping windows
    (1, 2, 9, 8, (3, 2), (2, 1), (1, 0)),
    (2, 1, 5, 7, 2, 3, 0),             # stride > kernel
    (1, 1, 6, 6, 4, 2, 2),             # padding = kernel / 2
    (2, 2, 3, 3, 3, 1, 0),             # 1x1 output
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_max_pool2d_matches_brute_force(case, dtype):
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


def test_max_pool2d_nan_propagates():
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


def test_max_pool2d_pads_with_minus_inf():
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


def test_max_pool2d_all_minus_inf_picks_first_input_element():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = ref.max_pool2d(x, 2, stride=2, padding=1)
    assert np.all(y == -np.inf)
    # windows start at (-1,-1), (-1,1), (1,-1), (1,1): first in-input element
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_max_pool2d_ties_go_to_first():
    x = np.full((1, 1, 4, 4), 2.0)
    y, idx = ref.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], np.full((2, 2), 2.0))
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    x = np.array([[0.0, 1.0], [1.0, 1.0]])[None, None]
    assert ref.max_pool2d(x, 2)[1][0, 0, 0, 0] == 1
    # -0.0 and 0.0 compare equal: still the first one
    x = np.array([[-0.0, 0.0], [0.0, -1.0]])[None, None]
    assert ref.max_pool2d(x, 2)[1][0, 0, 0, 0] == 0


def test_max_pool2d_backward_accumulates_overlaps():
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


# ---------------------------------------------------------------------------
# Backward passes by central finite differences (float64)
# ---------------------------------------------------------------------------

# (N, C, H, W, K, R, S, stride, padding, dilation)
CONV_GRAD_CASES = [
    (2, 2, 5, 5, 3, 3, 3, 1, 0, 1),
    (1, 2, 6, 7, 2, 2, 3, 2, 1, 1),              # stride 2 leaves the last column unused
    (2, 1, 7, 6, 2, 3, 2, (2, 1), (1, 2), (2, 1)),
    (1, 2, 5, 6, 2, 2, 4, 1, "same", 1),         # same, even kernel
    (2, 1, 6, 6, 1, 3, 2, 1, "same", 2),         # same, dilated
    (1, 1, 4, 4, 2, 4, 4, 1, 0, 1),              # 1x1 output
]


@pytest.mark.parametrize(
    "case", CONV_GRAD_CASES, ids=[str(i) for i in range(len(CONV_GRAD_CASES))]
)
def test_conv2d_backward_finite_differences(case):
    N, C, H, W, K, R, S, stride, padding, dilation = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C, R, S))
    b = rng.standard_normal(K)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    g = rng.standard_normal(ref.conv2d(x, w, b, **kw).shape)

    gx, gw, gb = ref.conv2d_backward(g, x, w, **kw)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape

    def loss(xx, ww, bb):
        return np.sum(ref.conv2d(xx, ww, bb, **kw) * g)

    eps = 1e-4
    assert_grad_close(numerical_gradient(lambda a: loss(a, w, b), x, eps), gx)
    assert_grad_close(numerical_gradient(lambda a: loss(x, a, b), w, eps), gw)
    assert_grad_close(numerical_gradient(lambda a: loss(x, w, a), b, eps), gb)


def test_conv2d_backward_unused_input_gets_zero_gradient():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 6, 6))
    w = rng.standard_normal((1, 1, 2, 2))
    g = np.ones((1, 1, 2, 2))
    gx, _, _ = ref.conv2d_backward(g, x, w, stride=3)  # windows cover rows/cols 0,1,3,4
    assert np.all(gx[0, 0, 2, :] == 0) and np.all(gx[0, 0, 5, :] == 0)
    assert np.all(gx[0, 0, :, 2] == 0) and np.all(gx[0, 0, :, 5] == 0)
    assert np.all(gx[0, 0, :2, :2] == w[0, 0])


def test_conv2d_backward_no_bias_and_dtype():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    gx, gw, gb = ref.conv2d_backward(g, x, w, padding="same", bias=False)
    assert gb is None
    assert gx.dtype == gw.dtype == np.float32
    gx64, gw64, gb64 = ref.conv2d_backward(g.astype(np.float64), x.astype(np.float64),
                                           w.astype(np.float64), padding=1)
    np.testing.assert_allclose(gx, gx64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, gw64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb64, g.sum(axis=(0, 2, 3)), rtol=1e-6)


def test_relu_backward_finite_differences():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 2, 4, 5))
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # away from the kink
    g = rng.standard_normal(x.shape)
    num = numerical_gradient(lambda a: np.sum(ref.relu(a) * g), x, 1e-4)
    assert_grad_close(num, ref.relu_backward(g, x))


@pytest.mark.parametrize(
    "shape, k, s, p",
    [((2, 2, 6, 6), 2, None, 0), ((1, 2, 7, 6), 3, 1, 1), ((2, 1, 7, 7), (3, 2), (2, 1), (1, 0))],
)
def test_max_pool2d_backward_finite_differences(shape, k, s, p):
    rng = np.random.default_rng(13)
    n = int(np.prod(shape))
    x = (rng.permutation(n) * 0.01 - n * 0.005).reshape(shape)  # distinct, gaps of 0.01
    y, idx = ref.max_pool2d(x, k, s, p)
    g = rng.standard_normal(y.shape)
    num = numerical_gradient(lambda a: np.sum(ref.max_pool2d(a, k, s, p)[0] * g), x, 1e-4)
    assert_grad_close(num, ref.max_pool2d_backward(g, idx, x.shape))


def test_dense_backward_finite_differences():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    g = rng.standard_normal((4, 3))
    gx, gw, gb = ref.dense_backward(g, x, w)
    eps = 1e-4
    assert_grad_close(numerical_gradient(lambda a: np.sum(ref.dense(a, w, b) * g), x, eps), gx)
    assert_grad_close(numerical_gradient(lambda a: np.sum(ref.dense(x, a, b) * g), w, eps), gw)
    assert_grad_close(numerical_gradient(lambda a: np.sum(ref.dense(x, w, a) * g), b, eps), gb)
    assert ref.dense_backward(g, x, w, bias=False)[2] is None


def test_softmax_cross_entropy_gradient_finite_differences():
    rng = np.random.default_rng(15)
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, size=5)
    loss, grad = ref.softmax_cross_entropy(z, labels)
    num = numerical_gradient(lambda a: float(ref.softmax_cross_entropy(a, labels)[0]), z, 1e-5)
    assert_grad_close(num, grad)


# ---------------------------------------------------------------------------
# Softmax and cross-entropy
# ---------------------------------------------------------------------------


def test_softmax_rows_sum_to_one():
    rng = np.random.default_rng(16)
    z = rng.standard_normal((6, 5)) * 10
    p = ref.softmax(z)
    assert p.shape == z.shape
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(ref.log_softmax(z), np.log(p), rtol=1e-12, atol=1e-12)
    p32 = ref.softmax(z.astype(np.float32))
    assert p32.dtype == np.float32
    np.testing.assert_allclose(p32.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_large_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    p = ref.softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_extreme_logits(dtype):
    z = np.array(
        [[1e4, -1e4, 0.0],
         [1e4, -1e4, 0.0],
         [-1e4, -1e4, -1e4],
         [-1e4, -1e4 + 1.0, -1e4 - 1.0]],
        dtype=dtype,
    )
    labels = np.array([0, 1, 2, 1])
    loss, grad = ref.softmax_cross_entropy(z, labels)
    assert isinstance(loss, dtype)
    assert grad.dtype == dtype
    assert np.isfinite(loss) and np.all(np.isfinite(grad))

    # hand formula per row: logsumexp(z) - z[y]
    row0 = 0.0
    row1 = 2e4
    row2 = math.log(3.0)
    row3 = math.log(math.exp(-1.0) + 1.0 + math.exp(-2.0))
    expected = (row0 + row1 + row2 + row3) / 4
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(loss, expected, rtol=rtol)

    expected_grad = np.zeros((4, 3))
    expected_grad[0] = [0.0, 0.0, 0.0]
    expected_grad[1] = [1.0, -1.0, 0.0]
    expected_grad[2] = [1 / 3, 1 / 3, -2 / 3]
    e = np.exp([-1.0, 0.0, -2.0])
    expected_grad[3] = e / e.sum() - [0.0, 1.0, 0.0]
    np.testing.assert_allclose(grad, expected_grad / 4, rtol=rtol, atol=rtol * 1e-2)


def test_softmax_cross_entropy_values():
    z = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    labels = [0, 2]
    loss, grad = ref.softmax_cross_entropy(z, labels)
    lse = np.log(np.exp(z).sum(axis=1))
    expected = np.mean(lse - z[[0, 1], labels])
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    p = np.exp(z - lse[:, None])
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(grad, (p - onehot) / 2, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)
    assert ref.softmax_cross_entropy(z.astype(np.int64), labels)[0].dtype == np.float64


# ---------------------------------------------------------------------------
# Inputs are never modified
# ---------------------------------------------------------------------------


def test_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 0, 0] = np.nan
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    gy = rng.standard_normal((2, 4, 6, 6))
    fx = rng.standard_normal((3, 5))
    fw = rng.standard_normal((2, 5))
    fb = rng.standard_normal(2)
    fg = rng.standard_normal((3, 2))
    labels = np.array([1, 0, 1])
    arrays = [x, w, b, gy, fx, fw, fb, fg, labels]
    copies = [a.copy() for a in arrays]

    ref.conv2d(x, w, b, padding="same")
    ref.conv2d(x, w, b, stride=2, padding=1, dilation=2)
    ref.conv2d_backward(gy, x, w, padding="same")
    out = ref.relu(x)
    assert not np.shares_memory(out, x)
    ref.relu_backward(x, x)
    y, idx = ref.max_pool2d(x, 2, 1, 1)
    idx_copy, y_copy = idx.copy(), y.copy()
    ref.max_pool2d_backward(y, idx, x.shape)
    np.testing.assert_array_equal(idx, idx_copy)
    np.testing.assert_array_equal(y, y_copy)
    out = ref.dense(fx, fw, fb)
    assert not np.shares_memory(out, fx)
    ref.dense_backward(fg, fx, fw)
    ref.softmax(fx)
    ref.log_softmax(fx)
    ref.softmax_cross_entropy(fg, labels)

    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
