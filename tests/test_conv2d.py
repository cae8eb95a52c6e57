"""conv2d and conv2d_backward: cnnkit.functional against cnnkit.reference
(forward and backward over dtypes, thread counts and memory layouts), finite
differences, the conventions (cross-correlation, padding modes, the 2-D and
3-D forms, dtype promotion, empty batches, NaN and Inf), the reference
against brute force, the documented errors, every SIMD path of the GEMM
engine, and fuzzing."""

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

from cnnkit import functional as F
from cnnkit import reference as ref

import fuzzing
from fuzzing import broadcast_ones as _bcast, zeros as _z
import helpers
from fuzzing import (FINITE, HUGE, MAX_SIZE, SMALL, Case, arrays, bad_array,
                     conv_geometry, design_dtype, f64,
                     assert_result, fuzz_property, hp_expectation,
                     mode_and_cats, positive_hp)
from helpers import (GiB, LAYOUTS, OUT_ARRAY_FAULTS, SIMD_PATHS,
                     assert_same_specials, check_gradients, check_kernel_out,
                     check_op, child_json, each_argument, require, run_python,
                     run_simd, special_values)


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


def _inputs(rng, dtype, N, C, H, W, K, R, S):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


# ==========================================================================
# forward and backward against the reference
# ==========================================================================
# (N, C, H, W, K, R, S, stride, padding, dilation)
CONV_CASES = [
    pytest.param(1, 1, 5, 5, 1, 3, 3, 1, 0, 1, id="basic"),
    pytest.param(3, 2, 7, 6, 4, 3, 2, 1, 1, 1, id="odd-nonsquare-kernel"),
    pytest.param(2, 3, 9, 8, 2, 3, 3, 2, (1, 2), 1, id="stride2-pad-pair"),
    pytest.param(2, 2, 6, 7, 3, 2, 3, (1, 2), "valid", 1,
                 id="nonsquare-stride-valid"),
    pytest.param(1, 2, 7, 7, 2, 2, 2, 3, 0, 1, id="stride-gt-kernel"),
    pytest.param(2, 1, 8, 5, 2, 1, 2, (4, 3), (0, 1), 1,
                 id="stride-gt-kernel-nonsquare"),
    pytest.param(2, 1, 6, 5, 2, 3, 3, 1, "same", 1, id="same-odd"),
    pytest.param(1, 2, 6, 6, 2, 2, 4, 1, "same", 1, id="same-even"),
    pytest.param(2, 2, 7, 8, 2, 3, 2, 1, "same", (2, 3),
                 id="same-dilated"),
    pytest.param(1, 1, 5, 6, 1, 2, 2, 1, "SAME", 2, id="same-even-dilated"),
    pytest.param(1, 3, 4, 5, 2, 4, 5, 1, 0, 1, id="1x1-output"),
    pytest.param(2, 1, 3, 3, 2, 2, 2, 5, 0, 1, id="1x1-output-big-stride"),
    pytest.param(2, 2, 9, 9, 3, 3, 3, (2, 3), (2, 1), (2, 2),
                 id="dilation-stride-pad"),
    pytest.param(1, 2, 5, 4, 1, 2, 2, 1, 0, (3, 2), id="dilation-only"),
    pytest.param(2, 4, 5, 6, 3, 1, 1, 1, 0, 1, id="1x1-kernel"),
    pytest.param(2, 3, 5, 5, 2, 1, 1, 2, 0, 1, id="1x1-kernel-stride"),
    pytest.param(1, 2, 3, 4, 2, 1, 1, 1, 1, 1, id="1x1-kernel-pad"),
    pytest.param(2, 8, 18, 17, 3, 3, 3, 1, 1, 1, id="many-pixels-and-rows"),
    pytest.param(10, 1, 4, 4, 2, 2, 2, 1, 0, 1, id="batch-gt-8"),
    pytest.param(1, 1, 1, 1, 1, 1, 1, 1, 0, 1, id="all-ones"),
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("N,C,H,W,K,R,S,stride,padding,dilation", CONV_CASES)
def test_conv2d_matches_reference(with_bias, N, C, H, W, K, R, S, stride,
                                  padding, dilation):
    shapes = [(N, C, H, W), (K, C, R, S)] + ([(K,)] if with_bias else [])
    check_op("conv2d", shapes, stride=stride, padding=padding,
             dilation=dilation)


# the 2-D and 3-D forms, 1x1 kernels and "same" padding, in every layout
FORMS = [
    pytest.param([(2, 3, 6, 6), (4, 3, 3, 3), (4,)], dict(padding="same"),
                 id="same"),
    pytest.param([(2, 3, 6, 6), (4, 3, 1, 1)], {}, id="1x1"),
    pytest.param([(2, 3, 6, 6), (4, 3, 3, 3)], dict(padding=1), id="4d"),
    pytest.param([(3, 6, 6), (4, 3, 3, 3)], dict(padding=1), id="3d"),
    pytest.param([(3, 6, 6), (4, 3, 3, 3), (4,)], dict(stride=2),
                 id="3d-bias"),
    pytest.param([(6, 6), (2, 2)], {}, id="2d"),
    pytest.param([(5, 6), (3, 2)], dict(stride=(1, 2)), id="2d-stride"),
]


@pytest.mark.parametrize("shapes,hyper", FORMS)
def test_conv2d_forms_in_every_layout(shapes, hyper):
    check_op("conv2d", shapes, layouts=LAYOUTS, **hyper)


def test_conv2d_each_argument_in_every_layout():
    # x, weight, bias and grad_out in turn in each layout, the others
    # C-contiguous
    check_op("conv2d", [(3, 2, 6, 7), (4, 2, 3, 2), (4,)],
             layouts=each_argument(LAYOUTS, 4), stride=(1, 2),
             padding=(1, 0), dilation=(2, 1))


# sizes at which the kernels take their parallel paths
@pytest.mark.parametrize("shapes,hyper", [
    pytest.param([(5, 8, 17, 17), (12, 8, 3, 3), (12,)], dict(padding=1),
                 id="pad"),
    pytest.param([(5, 8, 17, 17), (12, 8, 3, 3), (12,)],
                 dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
                 id="strided-dilated"),
    pytest.param([(11, 8, 17, 17), (12, 8, 1, 1)], {}, id="1x1"),
])
def test_conv2d_parallel_sizes_match_reference(shapes, hyper):
    check_op("conv2d", shapes, layouts=["C"], **hyper)


@pytest.mark.parametrize("N,C,H,W,K,R,S,stride,padding,dilation", CONV_CASES)
def test_conv2d_output_shape(N, C, H, W, K, R, S, stride, padding, dilation):
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    shape = F.conv2d_output_shape((H, W), (R, S), **kw)
    assert shape == ref.conv2d_output_size((H, W), (R, S), **kw)
    y = F.conv2d(np.zeros((N, C, H, W)), np.zeros((K, C, R, S)), **kw)
    assert y.shape == (N, K) + shape
    if isinstance(padding, str) and padding.lower() == "same":
        assert shape == (H, W)


def test_conv2d_padding_forms_agree_with_explicit_zero_padding(rng):
    x, w, b = _inputs(rng, np.float64, 2, 2, 5, 6, 3, 3, 2)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (1, 1)))
    expected = F.conv2d(padded, w, b)
    np.testing.assert_array_equal(F.conv2d(x, w, b, padding=(2, 1)), expected)
    np.testing.assert_array_equal(F.conv2d(x, w, b, padding=[2, 1]), expected)
    np.testing.assert_array_equal(
        F.conv2d(x, w, b, padding=np.array([2, 1])), expected)
    np.testing.assert_array_equal(F.conv2d(x, w, b, padding=1),
                                  F.conv2d(x, w, b, padding=(1, 1)))
    np.testing.assert_array_equal(F.conv2d(x, w, b, padding="valid"),
                                  F.conv2d(x, w, b, padding=0))
    # "same" with an even kernel: the extra row/column goes bottom/right
    w_even = rng.standard_normal((3, 2, 2, 4))
    same = np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 2)))
    np.testing.assert_array_equal(F.conv2d(x, w_even, b, padding="same"),
                                  F.conv2d(same, w_even, b))
    # "same" with dilation 2 and a 3x3 kernel pads 2 on every side
    w3 = rng.standard_normal((3, 2, 3, 3))
    np.testing.assert_array_equal(
        F.conv2d(x, w3, b, padding="same", dilation=2),
        F.conv2d(x, w3, b, padding=2, dilation=2))


def test_conv2d_is_cross_correlation():
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    w = np.zeros((1, 1, 2, 3))
    w[0, 0, 1, 2] = 1.0  # one tap at the bottom-right: no kernel flip
    y = F.conv2d(x, w)
    np.testing.assert_array_equal(y[0, 0], x[0, 0, 1:, 2:])


def test_conv2d_bias_is_added_per_filter():
    x = np.zeros((2, 1, 3, 3))
    w = np.ones((3, 1, 2, 2))
    y = F.conv2d(x, w, np.array([1.0, -2.0, 0.5]))
    np.testing.assert_array_equal(y, np.broadcast_to(
        np.array([1.0, -2.0, 0.5])[None, :, None, None], (2, 3, 2, 2)))


@pytest.mark.parametrize("x_dt,w_dt,b_dt,expected", [
    (np.float32, np.float32, np.float32, np.float32),
    (np.float64, np.float64, None, np.float64),
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.int64, None, np.float64),
    (np.int32, np.float32, None, np.float64),
    (np.uint8, np.int16, np.int8, np.float64),
    (np.bool_, np.bool_, None, np.float64),
    (np.float16, np.float16, None, np.float32),
])
def test_conv2d_dtype_promotion(rng, assert_close, x_dt, w_dt, b_dt,
                                expected):
    x = rng.integers(0, 3, (2, 2, 5, 4)).astype(x_dt)
    w = rng.integers(-2, 3, (3, 2, 2, 3)).astype(w_dt)
    b = None if b_dt is None else rng.integers(0, 3, 3).astype(b_dt)
    y = F.conv2d(x, w, b, padding=1)
    assert_close(y, ref.conv2d(*_f64(x, w, b), padding=1), expected,
                 n_terms=13)
    g = rng.integers(-2, 3, y.shape).astype(x_dt)
    gx, gw, gb = F.conv2d_backward(g, x, w, padding=1)
    eg = ref.conv2d_backward(*_f64(g, x, w), padding=1)
    grad_dt = np.result_type(
        *[np.float64 if np.dtype(d).kind in "biu" else d
          for d in (x_dt, w_dt)])
    grad_dt = np.float32 if grad_dt == np.float16 else grad_dt
    for a, e in zip((gx, gw, gb), eg):
        assert_close(a, e, grad_dt, n_terms=40)


def test_conv2d_unbatched_and_2d_forms(rng, dtype, assert_close):
    x, w, b = _inputs(rng, dtype, 1, 2, 5, 6, 3, 3, 2)
    batched = F.conv2d(x, w, b, padding=1)
    one = F.conv2d(x[0], w, b, padding=1)
    assert one.shape == batched.shape[1:]
    np.testing.assert_array_equal(one, batched[0])

    img, ker = x[0, 0], w[0, 0]
    y2 = F.conv2d(img, ker, stride=(1, 2))
    assert y2.ndim == 2 and y2.dtype == dtype
    assert_close(y2, ref.conv2d(*_f64(img, ker), stride=(1, 2)), dtype,
                 n_terms=6)
    np.testing.assert_array_equal(F.conv2d(img, ker, dtype.type(0.5)),
                                  F.conv2d(img, ker) + dtype.type(0.5))

    g = rng.standard_normal(batched.shape).astype(dtype)
    gx1, gw1, gb1 = F.conv2d_backward(g[0], x[0], w, padding=1)
    gx4, gw4, gb4 = F.conv2d_backward(g, x, w, padding=1)
    assert gx1.shape == x.shape[1:] and gw1.shape == w.shape
    np.testing.assert_array_equal(gx1, gx4[0])
    np.testing.assert_array_equal(gw1, gw4)
    np.testing.assert_array_equal(gb1, gb4)

    g2 = rng.standard_normal(y2.shape).astype(dtype)
    gx2, gw2, gb2 = F.conv2d_backward(g2, img, ker, stride=(1, 2))
    assert gx2.shape == img.shape and gw2.shape == ker.shape
    ex, ew, eb = ref.conv2d_backward(*_f64(g2[None, None], img[None, None],
                                           ker[None, None]), stride=(1, 2))
    assert_close(gx2, ex[0, 0], dtype, n_terms=6)
    assert_close(gw2, ew[0, 0], dtype, n_terms=y2.size)
    assert_close(gb2, eb, dtype, n_terms=y2.size)


# ==========================================================================
# backward
# ==========================================================================
def test_conv2d_backward_unused_input_gets_zero_gradient():
    x = np.ones((1, 1, 6, 6))
    w = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    gx, gw, gb = F.conv2d_backward(np.ones((1, 1, 2, 2)), x, w, stride=3)
    expected = np.zeros((6, 6))
    for i in (0, 3):
        for j in (0, 3):
            expected[i:i + 2, j:j + 2] = w[0, 0]
    np.testing.assert_array_equal(gx[0, 0], expected)
    np.testing.assert_array_equal(gw, np.full((1, 1, 2, 2), 4.0))
    np.testing.assert_array_equal(gb, [4.0])


# (N, C, H, W, K, R, S, stride, padding, dilation): tiny, for differences
FD_CASES = [
    pytest.param(2, 2, 4, 5, 2, 3, 2, 1, 1, 1, id="pad"),
    pytest.param(1, 2, 5, 5, 2, 2, 2, 2, 0, 1, id="stride2"),
    pytest.param(2, 1, 5, 6, 2, 2, 3, 1, "same", (2, 1), id="same-dilated"),
    pytest.param(1, 2, 6, 5, 1, 3, 2, (2, 3), (1, 2), (2, 1), id="mixed"),
]


@pytest.mark.parametrize("N,C,H,W,K,R,S,stride,padding,dilation", FD_CASES)
def test_conv2d_backward_finite_differences(N, C, H, W, K, R, S, stride,
                                            padding, dilation):
    check_gradients("conv2d", [(N, C, H, W), (K, C, R, S), (K,)],
                    seed=N * 1000 + H * 10 + W, stride=stride,
                    padding=padding, dilation=dilation)


def test_conv2d_backward_overwrites_and_is_repeatable(rng):
    x, w, _ = _inputs(rng, np.float32, 2, 3, 6, 6, 4, 3, 3)
    g = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    first = F.conv2d_backward(g, x, w)
    second = F.conv2d_backward(g, x, w)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)


# ==========================================================================
# empty batches and channels
# ==========================================================================
def test_conv2d_zero_size_batch_gives_empty_output(dtype):
    y = F.conv2d(np.zeros((0, 2, 5, 5), dtype), np.ones((3, 2, 3, 3), dtype),
                 np.ones(3, dtype), padding=1)
    assert y.shape == (0, 3, 5, 5) and y.dtype == dtype


def test_conv2d_empty_reductions_give_the_bias(dtype):
    b = np.array([1.5, -2.0, 0.25], dtype)
    y = F.conv2d(np.zeros((2, 0, 5, 5), dtype), np.zeros((3, 0, 3, 3), dtype),
                 b)
    assert y.shape == (2, 3, 3, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None],
                                                     y.shape))
    y = F.conv2d(np.ones((2, 0, 5, 5), dtype), np.ones((3, 0, 3, 3), dtype))
    np.testing.assert_array_equal(y, np.zeros((2, 3, 3, 3)))


def test_conv2d_zero_size_backward_gives_zero_parameter_gradients(dtype):
    x = np.zeros((0, 2, 5, 5), dtype)
    w = np.ones((3, 2, 3, 3), dtype)
    gx, gw, gb = F.conv2d_backward(np.zeros((0, 3, 3, 3), dtype), x, w)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros(w.shape))
    np.testing.assert_array_equal(gb, np.zeros(3))
    assert gw.dtype == gb.dtype == dtype


# ==========================================================================
# the normalisation of the arguments; batches
# ==========================================================================
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_conv2d_plain_arguments_and_normalised_ones_give_the_same_bits(dt):
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


@pytest.mark.parametrize("N", [2, 5, 11])
def test_conv2d_result_does_not_depend_on_batch(rng, dtype, N):
    x = rng.standard_normal((N, 3, 17, 18)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    for kw in (dict(padding=1), dict(stride=2, dilation=(1, 2))):
        y = F.conv2d(x, w, b, **kw)
        for i in sorted({0, N // 2, N - 1}):
            assert np.array_equal(F.conv2d(x[i:i + 1], w, b, **kw),
                                  y[i:i + 1])
            assert np.array_equal(F.conv2d(x[i], w, b, **kw), y[i])
        # and of the samples around it
        assert np.array_equal(F.conv2d(x[1:], w, b, **kw), y[1:])


# ==========================================================================
# cnnkit.reference against brute force
# ==========================================================================
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


def test_conv_output_size():
    assert ref.conv_output_size(3, 2) == 2
    assert ref.conv_output_size(28, 3, stride=2, padding=1) == 14
    assert ref.conv_output_size(9, 3, stride=1, padding=0, dilation=2) == 5
    assert ref.conv_output_size(7, 2, stride=3) == 2
    assert ref.conv_output_size(7, 4, padding="same") == 7
    assert ref.conv_output_size(7, 3, padding="same", dilation=3) == 7
    assert ref.conv_output_size(7, 3, padding="valid") == 5


def test_reference_conv2d_output_size():
    assert ref.conv2d_output_size((9, 8), (3, 2), stride=(2, 3), padding=(1, 0)) == (5, 3)
    assert ref.conv2d_output_size((5, 6), (2, 4), padding="same") == (5, 6)


def test_same_padding_requires_stride_one():
    with pytest.raises(ValueError, match="stride"):
        ref.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), stride=2, padding="same")


# (N, C, H, W, K, R, S, stride, padding, dilation)
REF_CONV_CASES = [
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
@pytest.mark.parametrize("case", REF_CONV_CASES, ids=[str(i) for i in range(len(REF_CONV_CASES))])
def test_reference_conv2d_matches_brute_force(case, dtype):
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


def test_reference_conv2d_dtype_promotion():
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


def test_reference_conv2d_non_contiguous_input():
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


def test_reference_conv2d_same_pads_extra_on_bottom_right():
    # an even kernel with a single tap at (0, 0) picks the top-left of each
    # window; with 'same' the window starts half the padding above/left
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    w = np.zeros((1, 1, 4, 4))
    w[0, 0, 0, 0] = 1.0
    y = ref.conv2d(x, w, padding="same")  # total 3: 1 before, 2 after
    expected = np.zeros((4, 4))
    expected[1:, 1:] = x[0, 0, :3, :3]
    np.testing.assert_array_equal(y[0, 0], expected)


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
def test_reference_conv2d_backward_finite_differences(case):
    N, C, H, W, K, R, S, stride, padding, dilation = case
    check_gradients("conv2d", [(N, C, H, W), (K, C, R, S), (K,)], seed=11,
                    reference=True, eps=1e-4, atol=1e-8, stride=stride,
                    padding=padding, dilation=dilation)


def test_reference_conv2d_backward_unused_input_gets_zero_gradient():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 1, 6, 6))
    w = rng.standard_normal((1, 1, 2, 2))
    g = np.ones((1, 1, 2, 2))
    gx, _, _ = ref.conv2d_backward(g, x, w, stride=3)  # windows cover rows/cols 0,1,3,4
    assert np.all(gx[0, 0, 2, :] == 0) and np.all(gx[0, 0, 5, :] == 0)
    assert np.all(gx[0, 0, :, 2] == 0) and np.all(gx[0, 0, :, 5] == 0)
    assert np.all(gx[0, 0, :2, :2] == w[0, 0])


def test_reference_conv2d_backward_no_bias_and_dtype():
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


def test_reference_conv2d_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 0, 0] = np.nan
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    gy = rng.standard_normal((2, 4, 6, 6))
    arrays = [x, w, b, gy]
    copies = [a.copy() for a in arrays]
    ref.conv2d(x, w, b, padding="same")
    ref.conv2d(x, w, b, stride=2, padding=1, dilation=2)
    ref.conv2d_backward(gy, x, w, padding="same")
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# ==========================================================================
# documented errors
# ==========================================================================
X = np.zeros((2, 3, 5, 5))
W = np.zeros((4, 3, 3, 3))
G = np.zeros((2, 4, 3, 3))  # conv2d(X, W) output shape

# (function, positional arguments, index of the argument made bad, its name)
ARRAY_ARGS = [
    (F.conv2d, (X, W), 0, "x"),
    (F.conv2d, (X, W), 1, "weight"),
    (F.conv2d, (X, W, np.zeros(4)), 2, "bias"),
    (F.conv2d_backward, (G, X, W), 0, "grad_out"),
    (F.conv2d_backward, (G, X, W), 1, "x"),
    (F.conv2d_backward, (G, X, W), 2, "weight"),
]


test_bad_dtype_is_type_error_naming_argument_and_dtype = \
    helpers.bad_dtype_test(ARRAY_ARGS)


def test_weight_not_an_array_is_type_error():
    with pytest.raises(TypeError, match=r"\bweight\b"):
        F.conv2d(X, None)


def _kw_id(kwargs):
    return ",".join(f"{k}={getattr(v, 'shape', v)!r}"
                    for k, v in kwargs.items())


@pytest.mark.parametrize("fn", [F.conv2d, F.conv2d_backward])
@pytest.mark.parametrize("kwargs,exc,pattern", [
    # shapes
    (dict(x=np.zeros((2, 2, 5, 5))), ValueError,
     r"x has 2 channels.*weight expects 3"),
    (dict(x=np.zeros((1, 2, 3, 5, 5))), ValueError,
     r"\bx must be.*\(1, 2, 3, 5, 5\)"),
    (dict(x=np.zeros((5, 5))), ValueError, r"\bx must be.*\(5, 5\)"),
    (dict(x=np.zeros(5)), ValueError, r"\bx must be"),
    (dict(weight=np.zeros((3, 3))), ValueError, r"\bweight must be"),
    (dict(weight=np.zeros((4, 3, 3))), ValueError, r"\bweight must be"),
    (dict(weight=np.zeros((4, 3, 6, 3))), ValueError,
     r"kernel \(6, 3\).*larger than the padded input"),
    (dict(weight=np.zeros((4, 3, 8, 7)), padding=1), ValueError,
     r"kernel \(8, 7\).*padded input \(7, 7\)"),
    (dict(dilation=3), ValueError,
     r"kernel.*dilation.*larger than the padded"),
    (dict(x=np.zeros((2, 3, 0, 5))), ValueError, r"kernel.*padded input"),
    # stride
    (dict(stride=0), ValueError, r"\bstride must be positive"),
    (dict(stride=-1), ValueError, r"\bstride must be positive"),
    (dict(stride=(1, 0)), ValueError, r"\bstride must be positive"),
    (dict(stride=1.5), TypeError, r"\bstride must be an int"),
    (dict(stride=True), TypeError, r"\bstride must be an int"),
    (dict(stride=(1, np.bool_(True))), TypeError, r"\bstride must be an int"),
    (dict(stride="2"), TypeError, r"\bstride must be an int"),
    (dict(stride=(1, 2, 3)), ValueError, r"\bstride must be an int or a pair"),
    # dilation
    (dict(dilation=0), ValueError, r"\bdilation must be positive"),
    (dict(dilation=(-1, 1)), ValueError, r"\bdilation must be positive"),
    (dict(dilation=2.0), TypeError, r"\bdilation must be an int"),
    # padding
    (dict(padding=-1), ValueError, r"\bpadding must be >= 0"),
    (dict(padding=(0, -2)), ValueError, r"\bpadding must be >= 0"),
    (dict(padding="same", stride=2), ValueError,
     r"padding='same' needs stride 1"),
    (dict(padding="same", stride=(1, 2)), ValueError,
     r"padding='same' needs stride 1"),
    (dict(padding="full"), ValueError, r"\bpadding must be .*'full'"),
    (dict(padding=""), ValueError, r"\bpadding must be"),
    (dict(padding=1.0), TypeError, r"\bpadding must be an int"),
    (dict(padding=(1, 1, 1)), ValueError,
     r"\bpadding must be an int or a pair"),
], ids=lambda v: _kw_id(v) if isinstance(v, dict) else None)
def test_conv2d_argument_errors(fn, kwargs, exc, pattern):
    args = dict(x=X, weight=W)
    args.update(kwargs)
    x, w = args.pop("x"), args.pop("weight")
    with pytest.raises(exc, match=pattern):
        if fn is F.conv2d:
            fn(x, w, **args)
        else:
            fn(G, x, w, **args)


@pytest.mark.parametrize("bias", [np.zeros(3), np.zeros(5), np.zeros((4, 1)),
                                  np.zeros(()), np.zeros((1, 4))])
def test_conv2d_bias_of_wrong_shape(bias):
    with pytest.raises(ValueError,
                       match=r"bias must have shape \(4,\).*got"):
        F.conv2d(X, W, bias)


def test_conv2d_two_d_form_bias_must_be_one_value():
    with pytest.raises(ValueError, match=r"bias must have shape \(1,\)"):
        F.conv2d(np.zeros((3, 3)), np.zeros((2, 2)), np.zeros(2))


@pytest.mark.parametrize("g", [np.zeros((2, 4, 2, 2)), np.zeros((2, 3, 3, 3)),
                               np.zeros((1, 4, 3, 3)), np.zeros((4, 3, 3)),
                               np.zeros((2, 4, 3, 3, 1))])
def test_conv2d_backward_grad_out_of_wrong_shape(g):
    with pytest.raises(ValueError, match=r"grad_out must have .*shape"):
        F.conv2d_backward(g, X, W)


@pytest.mark.parametrize("bias", [1, 0, None, "yes", np.array(True)])
def test_conv2d_backward_bias_flag_must_be_bool(bias):
    with pytest.raises(TypeError, match=r"bias must be True or False"):
        F.conv2d_backward(G, X, W, bias=bias)


def test_conv2d_output_shape_errors():
    with pytest.raises(ValueError, match=r"kernel.*does not fit"):
        F.conv2d_output_shape((3, 3), 4)
    with pytest.raises(ValueError, match=r"\bstride must be positive"):
        F.conv2d_output_shape((5, 5), 3, stride=0)
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1"):
        F.conv2d_output_shape((5, 5), 3, stride=2, padding="same")


# The compiled kernels write into arrays the layers keep between training
# steps (``out=``); an unsuitable one is refused before any work.
def _outs():
    from cnnkit import _kernels as K
    x = np.zeros((2, 3, 5, 5), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    g = np.zeros((2, 4, 3, 3), np.float32)
    return [
        ("conv2d", "out", (2, 4, 3, 3),
         lambda o: K.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1),
                                    False, o)),
        ("conv2d_backward", "gx_out", x.shape,
         lambda o: K.conv2d_backward(g, x, w, (1, 1), (0, 0, 0, 0), (1, 1),
                                     True, True, o)),
        ("conv2d_backward", "gw_out", w.shape,
         lambda o: K.conv2d_backward(g, x, w, (1, 1), (0, 0, 0, 0), (1, 1),
                                     True, True, None, o)),
    ]


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("bad", OUT_ARRAY_FAULTS)
def test_kernel_out_arrays_are_checked(case, bad):
    check_kernel_out(*_outs()[case], bad)


# ==========================================================================
# numerics at the edges
# ==========================================================================
def test_index_product_above_2_31_computes_correctly():
    """x (1, 2048, 1, 1) with a 4x4 kernel and padding 130: the lowered
    matrix has C*R*S*OH*OW = 32768 * 258**2 = 2.18e9 > 2**31 entries while
    every array is below 300 KB.  Only the kernel taps that meet the single
    input pixel contribute, which gives exact expected values:
    y[p-r, p-s] = sum_c x[c] w[c, r, s], gw[c, r, s] = x[c] g[p-r, p-s],
    gx[c] = sum_rs w[c, r, s] g[p-r, p-s], gb = sum g (float64 sums of
    float32 inputs; float32 tolerance 1e-6 relative to the sum of |terms|).
    """
    C, K, p = 2048, 4, 130
    oh = 1 + 2 * p - K + 1
    assert C * K * K * oh * oh > 2**31
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, C, 1, 1)).astype(np.float32)
    w = rng.standard_normal((1, C, K, K)).astype(np.float32)
    g = rng.standard_normal((1, 1, oh, oh)).astype(np.float32)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))

    y = F.conv2d(x, w, padding=p)
    assert y.shape == (1, 1, oh, oh) and y.dtype == np.float32
    taps = np.einsum("c,crs->rs", x64[0, :, 0, 0], w64[0])
    bound = np.einsum("c,crs->rs", abs(x64[0, :, 0, 0]), abs(w64[0]))
    expected = np.zeros((oh, oh))
    expected[p - K + 1:p + 1, p - K + 1:p + 1] = taps[::-1, ::-1]
    window = y[0, 0, p - K + 1:p + 1, p - K + 1:p + 1][::-1, ::-1]
    assert np.all(np.abs(window - taps) <= 1e-6 * bound)
    outside = y[0, 0].copy()
    outside[p - K + 1:p + 1, p - K + 1:p + 1] = 0
    assert not outside.any()

    gx, gw, gb = F.conv2d_backward(g, x, w, padding=p)
    gsub = g64[0, 0, p - K + 1:p + 1, p - K + 1:p + 1][::-1, ::-1]  # [r, s]
    np.testing.assert_allclose(gw[0], x64[0, :, 0, 0, None, None] * gsub,
                               rtol=1e-6)
    exp_gx = np.einsum("crs,rs->c", w64[0], gsub)
    bnd_gx = np.einsum("crs,rs->c", abs(w64[0]), abs(gsub))
    assert np.all(np.abs(gx[0, :, 0, 0] - exp_gx) <= 1e-6 * bnd_gx)
    assert abs(gb[0] - g64.sum()) <= 1e-6 * np.abs(g64).sum()


def test_conv2d_backward_workspace_is_bounded_for_small_arrays():
    """conv2d_backward of x (1, 1, 1, 1) and a 128x128 kernel with padding
    127 (every array below 200 KB) must run within a 1.5 GiB address space
    and give the exact gradients; the C*R*S*OH*OW = 2.7e8 lowered matrix is
    a workspace cnnkit may tile, not one it may allocate per thread."""
    code = """
    import json
    import numpy as np
    from cnnkit import functional as F
    K = 128; p = K - 1
    rng = np.random.default_rng(0)
    x = np.full((1, 1, 1, 1), 2.0)
    w = rng.standard_normal((1, 1, K, K))
    g = rng.standard_normal((1, 1, K, K))
    try:
        gx, gw, gb = F.conv2d_backward(g, x, w, padding=p)
    except MemoryError as exc:
        print("RESULT " + json.dumps(["MemoryError", str(exc)]))
    else:
        flipped = g[0, 0, ::-1, ::-1]
        ok = (np.allclose(gw[0, 0], 2.0 * flipped, rtol=1e-12)
              and np.isclose(gx[0, 0, 0, 0], (w[0, 0] * flipped).sum(),
                             rtol=1e-10)
              and np.isclose(gb[0], g.sum(), rtol=1e-10))
        print("RESULT " + json.dumps(["ok" if ok else "wrong values", ""]))
    """
    kind, msg = child_json(run_python(code, timeout=120,
                                      memory_limit=1.5 * GiB))
    assert kind == "ok", f"{kind}: {msg}"


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_conv2d_nan_and_inf_propagate_as_in_pytorch(dt):
    """Convolution with NaN/Inf inputs (finite weights): NaN and +-inf land
    where PyTorch puts them."""
    torch = require("torch")
    tF = torch.nn.functional
    rtol = 1e-4 if dt == np.float32 else 1e-10
    rng = np.random.default_rng(7)
    x = special_values(rng, (2, 3, 9, 8), dt)
    tx = torch.from_numpy(x)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dt)
    for s, p, d in [(1, 0, 1), (1, 1, 1), (2, 2, 1), (1, 2, 2)]:
        assert_same_specials(
            F.conv2d(x, w, stride=s, padding=p, dilation=d),
            tF.conv2d(tx, torch.from_numpy(w), stride=s, padding=p,
                      dilation=d).numpy(), rtol, f"conv2d s={s} p={p} d={d}")


def test_inf_weights_meet_zero_padding_as_in_pytorch_float64():
    """An infinite weight times an implicit zero of the padding is NaN, as
    in PyTorch's float64 path and cnnkit.reference (PyTorch's float32 oneDNN
    path skips padding taps and is not the reference here)."""
    torch = require("torch")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 1, 2, 3], x[1, 0, 0, 0] = np.inf, -np.inf
    w = rng.standard_normal((4, 3, 3, 3))
    w[2, 0, 0, 0], w[1, 1, 1, 1] = np.inf, 0.0
    for s, p in [(1, 0), (1, 1), (2, 1), (1, 2)]:
        ours = F.conv2d(x, w, stride=s, padding=p)
        theirs = torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(w), stride=s,
            padding=p).numpy()
        assert_same_specials(ours, theirs, 1e-10, f"s={s} p={p}")
        with np.errstate(invalid="ignore"):
            want = ref.conv2d(x, w, stride=s, padding=p)
        assert_same_specials(ours, want, 1e-10, f"reference s={s} p={p}")
    g = rng.standard_normal((2, 4, 6, 6))
    gx, gw, gb = F.conv2d_backward(g, x, w, padding=1)
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, padding=1).backward(torch.from_numpy(g))
    assert_same_specials(gx, tx.grad.numpy(), 1e-10, "grad_x")
    assert_same_specials(gw, tw.grad.numpy(), 1e-10, "grad_weight")


def test_conv2d_inf_reaches_only_its_receptive_field():
    """An infinite input pixel changes only the outputs whose window covers
    it; every other output is bit-identical to the result without it."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 11, 10))
    w = np.abs(rng.standard_normal((5, 4, 3, 3))) + 0.1      # all positive
    clean = F.conv2d(x, w, padding=1, stride=2)
    x[1, 2, 4, 7] = np.inf
    dirty = F.conv2d(x, w, padding=1, stride=2)
    covered = np.zeros(clean.shape, bool)
    for i in range(clean.shape[2]):
        for j in range(clean.shape[3]):
            covered[1, :, i, j] = (0 <= 4 - (2 * i - 1) < 3 and
                                   0 <= 7 - (2 * j - 1) < 3)
    assert np.all(np.isposinf(dirty[covered]))
    assert covered.any()
    assert dirty[~covered].tobytes() == clean[~covered].tobytes()


def test_float32_long_reductions_stay_within_tolerance():
    """float32 conv2d with C*R*S = 4608 (C=512, 3x3) and its gradients,
    against float64 on the same float32 inputs.  Tolerance: max error at
    most 1e-5 of the result's largest magnitude and, element by element, at
    most 2e-6 of the sum of |terms| behind it (measured on this seed: about
    3e-7 and 3e-8)."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 512, 8, 8)).astype(np.float32)
    w = (rng.standard_normal((16, 512, 3, 3)) / 68).astype(np.float32)
    g = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    y = F.conv2d(x, w, padding=1)
    y64 = F.conv2d(x64, w64, padding=1)
    bound = F.conv2d(abs(x64), abs(w64), padding=1)
    err = np.abs(y - y64)
    assert err.max() <= 1e-5 * np.abs(y64).max()
    assert np.all(err <= 2e-6 * bound)
    got = F.conv2d_backward(g, x, w, padding=1)
    exp = F.conv2d_backward(g64, x64, w64, padding=1)
    bnd = F.conv2d_backward(abs(g64), abs(x64), abs(w64), padding=1)
    for name, a, e, b in zip(("grad_x", "grad_weight", "grad_bias"), got,
                             exp, bnd):
        err = np.abs(a - e)
        assert err.max() <= 1e-5 * np.abs(e).max(), name
        assert np.all(err <= 2e-6 * b), name


# ==========================================================================
# every SIMD path of the GEMM engine (each in a child with CNNKIT_SIMD set;
# only the paths this machine supports)
# ==========================================================================
CONV_CHECKER = r'''

# conv2d (n, c, h, w, k, r, s, stride, pad, dil)
CONV = [(1, 3, 9, 9, 5, 3, 3, 1, 1, 1),        # batch 1
        (2, 29, 8, 7, 13, 3, 3, 1, 1, 1),      # C*R*S = 261 > KC, K = MR + 1
        (3, 4, 11, 10, 7, 1, 1, 1, 0, 1),      # 1x1, read in place
        (2, 5, 13, 12, 17, 3, 2, 2, 1, 1),     # stride 2, 3x2 kernel
        (2, 3, 15, 14, 6, 3, 3, 1, 2, 2),      # dilation 2, padding 2
        (1, 2, 40, 40, 33, 3, 3, 1, 1, 1),     # 1600 pixels > a block
        (2, 8, 17, 17, 121, 1, 1, 2, 0, 1),    # K = 121 > MC, 1x1 stride 2
        (1, 2, 6, 6, 260, 3, 3, 1, 1, 1)]      # K = 260 > KC (grad-x)

extra["cases"] = len(CONV)

for dt in (np.float32, np.float64):

    for n, c, h, wd, k, r, s, st, pad, dil in CONV:
        x = rng.standard_normal((n, c, h, wd)).astype(dt)
        w = rng.standard_normal((k, c, r, s)).astype(dt)
        b = rng.standard_normal(k).astype(dt)
        kw = dict(stride=st, padding=pad, dilation=dil)
        y = F.conv2d(x, w, b, **kw)
        g = rng.standard_normal(y.shape).astype(dt)
        x64, w64, b64, g64 = (a.astype(np.float64) for a in (x, w, b, g))
        tag = f"conv {np.dtype(dt).name} {(n, c, h, wd, k, r, s, st, pad, dil)}"
        close(tag + " fwd", y, R.conv2d(x64, w64, b64, **kw), dt, c * r * s)
        gx, gw, gb = F.conv2d_backward(g, x, w, **kw)
        rx, rw, rb = R.conv2d_backward(g64, x64, w64, **kw)
        p = y.shape[2] * y.shape[3]
        close(tag + " gx", gx, rx, dt, k * r * s)
        close(tag + " gw", gw, rw, dt, n * p)
        close(tag + " gb", gb, rb, dt, n * p)
        # every element written: new gradients are not zeroed first, and a
        # kept one holding NaN from before ends with the same bits
        kept = [np.full(a.shape, np.nan, dt) for a in (gx, gw, gb)]
        cnnkit._kernels.conv2d_backward(
            g, x, w, (st, st), (pad,) * 4, (dil, dil), True, True, *kept)
        for name, a, b in zip(("gx", "gw", "gb"), (gx, gw, gb), kept):
            if a.tobytes() != b.tobytes():
                variant.append(f"{tag} {name} into a kept array holding NaN "
                               f"differs")

# bit-identical for 1, 2 and 3 threads; a sample's result does not depend
# on its batch
for dt in (np.float32, np.float64):
    xc = rng.standard_normal((7, 9, 19, 18)).astype(dt)
    wc = rng.standard_normal((14, 9, 3, 3)).astype(dt)
    gc = rng.standard_normal((7, 14, 19, 18)).astype(dt)
    runs = []
    for nt in (1, 2, 3):
        cnnkit.set_num_threads(nt)
        runs.append([F.conv2d(xc, wc, padding=1),
                     *F.conv2d_backward(gc, xc, wc, padding=1)[:2]])
    for i, ref in enumerate(runs[0]):
        for nt, other in zip((2, 3), runs[1:]):
            if ref.tobytes() != other[i].tobytes():
                variant.append(f"{np.dtype(dt).name} result {i}: "
                               f"{nt} threads differ from 1")
    cnnkit.set_num_threads(2)

    yc = F.conv2d(xc, wc, padding=1)
    if F.conv2d(xc[3:4], wc, padding=1).tobytes() != yc[3:4].tobytes():
        variant.append(f"{np.dtype(dt).name} conv image 3 depends on the "
                       f"batch")

# The direct convolution forward (SIMD paths) against the im2col path: the
# same bits, on shapes at its edges -- C*R*S at and past the slab depth KC
# (several slabs), outputs half a vector wide or filling too few lanes,
# filters and columns off the tile, stride and dilation in both
# directions, asymmetric and oversized padding, inf and nan inputs -- and
# the same bits for 1, 2 and 3 threads; the gradients against the
# reference and the same bits for 1, 2 and 3 threads.
K = cnnkit._kernels
DIRECT = [  # (n, c, h, w, k, r, s, stride, (top, bottom, left, right), dil)
    (2, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),   # LeNet conv 1
    (3, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1)),  # LeNet conv 2
    (1, 3, 9, 17, 13, 3, 3, (2, 1), (1, 1, 1, 1), (1, 1)),
    (2, 2, 10, 40, 25, 3, 2, (1, 1), (0, 1, 2, 0), (2, 3)),
    (1, 4, 7, 8, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (5, 1, 5, 33, 7, 5, 1, (3, 1), (2, 2, 0, 0), (1, 1)),
    (2, 3, 12, 12, 30, 1, 7, (1, 1), (0, 0, 3, 3), (1, 1)),
    (1, 2, 4, 70, 12, 2, 3, (1, 1), (4, 3, 5, 6), (1, 2)),   # pad > kernel
    (1, 32, 5, 16, 3, 4, 4, (1, 1), (1, 2, 1, 2), (1, 1)),   # CRS = 512
    (1, 16, 5, 16, 3, 4, 4, (1, 1), (1, 2, 1, 2), (1, 1)),   # CRS = 256
    (1, 17, 5, 16, 3, 4, 4, (1, 1), (1, 2, 1, 2), (1, 1)),   # CRS = 272
    (2, 64, 6, 20, 13, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # 576: 2+ slabs
    (1, 130, 4, 9, 5, 2, 2, (1, 1), (0, 1, 0, 1), (1, 1)),   # 520: 3 in f64
    (1, 2, 6, 8, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # OW = 8
    (1, 2, 6, 7, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # OW = 7
    (1, 2, 6, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # OW = 3
    (4, 2, 3, 9, 14, 3, 1, (2, 1), (0, 0, 0, 0), (1, 1)),    # OH = 1
    # outputs 11 and 8 wide: the weight gradient sweeps each image's output
    # plane as one row over column-shifted copies of the input
    (2, 3, 11, 12, 7, 3, 3, (1, 1), (2, 1, 0, 3), (2, 2)),
    (1, 2, 9, 13, 4, 2, 4, (1, 1), (1, 0, 2, 2), (1, 3)),
    # ... with padding past the row: a shifted plane of only zeros; ten
    # images, so that a weight-gradient group holds several
    (10, 1, 1, 9, 2, 1, 3, (1, 1), (0, 0, 64, 64), (1, 64)),
    # small planes: the forward sweeps each image's 4x4 / 5x3 output plane
    # as one flat row (cnnkit train's default network's second conv)
    (3, 16, 4, 4, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 3, 5, 3, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    # ... as wide as the input: each shifted plane the input's plane at an
    # offset, masked (dilation, asymmetric padding, vectors wholly in the
    # padding, planes of 7 and of 1 column)
    (2, 4, 6, 6, 32, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),
    (1, 5, 5, 5, 16, 3, 3, (1, 1), (0, 2, 2, 0), (1, 1)),
    (2, 3, 2, 7, 8, 3, 3, (1, 1), (5, 5, 1, 1), (1, 1)),
    (1, 6, 9, 1, 4, 3, 1, (1, 1), (1, 1, 0, 0), (1, 1)),
    # column stride 2: the copy splits each padded row into its even and
    # odd columns (ResNet's downsampling layer; odd widths, dilation, pad)
    (1, 16, 32, 32, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (2, 3, 11, 37, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 5, 9, 40, 7, 3, 2, (1, 2), (0, 1, 2, 0), (2, 3)),
    (1, 2, 6, 35, 5, 1, 4, (3, 2), (0, 0, 3, 2), (1, 1)),
    # filters a multiple of the vector: the weight gradient puts filters on
    # the vector axis (two vectors, or one and several 3x3 channels; kernel
    # rows in tiles; strides; asymmetric padding; the input read in place)
    (3, 5, 9, 10, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 4, 12, 11, 16, 5, 5, (1, 2), (2, 1, 2, 0), (1, 1)),
    (2, 3, 13, 13, 48, 7, 7, (2, 1), (3, 3, 3, 3), (1, 1)),
    (1, 7, 8, 8, 16, 4, 3, (1, 1), (0, 0, 0, 0), (1, 1)),
    (1, 2, 9, 9, 64, 6, 5, (1, 1), (0, 1, 0, 1), (1, 1)),
    (2, 3, 7, 7, 16, 3, 3, (3, 3), (0, 2, 1, 0), (1, 1)),
    # rows that are not whole tiles of two filter vectors (6 pixels with
    # 16 registers) swept as flat planes: padded ("same", the copy keeps
    # the input's width) and unpadded (rows gathered), odd sizes
    (2, 64, 8, 8, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (1, 16, 7, 7, 48, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 8, 10, 10, 16, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1)),
    # ... and copies past the row layout's bound (14-wide rows, 40
    # channels), 5x5 on 13-wide rows
    (1, 40, 14, 14, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 12, 14, 13, 32, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),
]
# column stride 2 with filters a multiple of two vectors: the forward
# broadcasts the phases' pixels against vectors of filters, rows of any
# width (ResNet's 32 -> 64 downsampling: 8 wide; 5 and 3 wide; dilation;
# padding past the row; three vectors of filters at 5x5)
KVEC_S2 = [
    (2, 32, 16, 16, 64, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (1, 8, 9, 9, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1)),
    (2, 8, 8, 15, 32, 3, 3, (1, 2), (0, 1, 2, 0), (1, 2)),
    (1, 8, 5, 6, 32, 3, 3, (2, 2), (3, 2, 4, 3), (1, 1)),
    (1, 4, 11, 13, 48, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1)),
]
DIRECT += KVEC_S2
direct_seen = 0
extra["kvec_s2_paths"] = []
for dt in (np.float32, np.float64):
    for n, c, h, wd, k, r, s, st, pad, dil in DIRECT:
        x = rng.standard_normal((n, c, h, wd)).astype(dt)
        x[0, 0, 0, 0] = np.inf
        x[-1, -1, -1, -1] = np.nan
        w = rng.standard_normal((k, c, r, s)).astype(dt)
        b = rng.standard_normal(k).astype(dt)
        tag = (f"direct {np.dtype(dt).name} "
               f"{(n, c, h, wd, k, r, s, st, pad, dil)}")
        path = K._conv_forward_path(x.shape, w.shape, st, pad, dil, dt)
        direct_seen += path == "direct"
        if (n, c, h, wd, k, r, s, st, pad, dil) in KVEC_S2:
            extra["kvec_s2_paths"].append(path)
        if K._conv_forward_path(x.shape, w.shape, st, pad, dil, dt,
                                direct=False) != "im2col":
            variant.append(f"{tag}: direct=False does not report im2col")
        want = {bias is not None: K.conv2d_forward(x, w, bias, st, pad, dil,
                                                   direct=False)
                for bias in (b, None)}
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            for bias in (b, None):
                out = K.conv2d_forward(x, w, bias, st, pad, dil)
                if out.tobytes() != want[bias is not None].tobytes():
                    variant.append(f"{tag} ({path}, {nt} threads, bias "
                                   f"{bias is not None}) differs from im2col")
                # the ReLU in the epilogue: the bits of relu(conv), on both
                # paths, NaN kept and -0 made +0 as relu_forward does
                relu_want = K.relu_forward(want[bias is not None])
                for direct in (True, False):
                    fused = K.conv2d_forward(x, w, bias, st, pad, dil, True,
                                             direct=direct)
                    if fused.tobytes() != relu_want.tobytes():
                        variant.append(f"{tag} ({nt} threads, bias "
                                       f"{bias is not None}, direct "
                                       f"{direct}) conv+relu differs from "
                                       f"relu(conv)")
        cnnkit.set_num_threads(2)
        x64 = np.nan_to_num(x, nan=0.0, posinf=0.0).astype(np.float64)
        x[0, 0, 0, 0] = x[-1, -1, -1, -1] = 0
        x64 = np.pad(x64, ((0, 0), (0, 0), pad[:2], pad[2:]))
        w64 = w.astype(np.float64)
        close(tag, K.conv2d_forward(x, w, b, st, pad, dil),
              R.conv2d(x64, w64, b.astype(np.float64), stride=st,
                       dilation=dil), dt, c * r * s)
        # backward: the input gradient (a direct convolution of gy with
        # unit strides) and the weight gradient (direct with unit column
        # stride) against the reference, and the same bits for 1, 2 and 3
        # threads
        gy = rng.standard_normal(want[True].shape).astype(dt)
        runs = []
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            runs.append(K.conv2d_backward(gy, x, w, st, pad, dil))
        cnnkit.set_num_threads(2)
        for i, name in enumerate(("gx", "gw", "gb")):
            if any(run[i].tobytes() != runs[0][i].tobytes()
                   for run in runs[1:]):
                variant.append(f"{tag} {name} depends on the threads")
        rx, rw, rb = R.conv2d_backward(gy.astype(np.float64), x64, w64,
                                       stride=st, dilation=dil)
        rx = rx[:, :, pad[0]:pad[0] + h, pad[2]:pad[2] + wd]
        p = gy.shape[2] * gy.shape[3]
        close(tag + " gx", runs[0][0], rx, dt, k * r * s)
        close(tag + " gw", runs[0][1], rw, dt, n * p)
        close(tag + " gb", runs[0][2], rb, dt, n * p)
        # an infinite weight: NaN only where the im2col path has it
        w[0, 0, 0, 0] = np.inf
        gx_ref = K.conv2d_backward(gy, x, w, st, pad, dil, True, False,
                                   direct=False)[0]
        gx_inf = K.conv2d_backward(gy, x, w, st, pad, dil, True, False)[0]
        if not np.array_equal(np.isnan(gx_inf), np.isnan(gx_ref)):
            variant.append(f"{tag} gx NaN positions with an inf weight")
extra["cases"] += len(DIRECT)
extra["direct_seen"] = direct_seen
'''


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_simd_path_conv2d_matches_reference(path):
    res = run_simd(path, CONV_CHECKER)
    assert res["checked"] == 2 * 4 * res["cases"] > 100
    assert res["failures"] == []


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_simd_path_conv2d_bits_do_not_depend_on_threads_or_batch(path):
    assert run_simd(path, CONV_CHECKER)["variant"] == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c,hw,k,stride", [(16, 32, 32, 2), (32, 16, 64, 2),
                                           (8, 10, 24, 1), (24, 33, 8, 2)])
def test_one_image_split_over_the_threads_keeps_the_bits(dtype, c, hw, k,
                                                        stride):
    # a 1x1 layer on the im2col path with fewer pixel blocks than threads
    # splits an image's pixels over them: the bits of one thread, and of
    # the image inside a batch
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, c, hw, hw)).astype(dtype)
    w = rng.standard_normal((k, c, 1, 1)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    with helpers.num_threads(1):
        want = F.conv2d(x[:1], w, b, stride=stride)
    for threads in (2, 3, 4):
        with helpers.num_threads(threads):
            assert F.conv2d(x[:1], w, b, stride=stride).tobytes() == \
                want.tobytes()
            assert F.conv2d(x, w, b, stride=stride)[:1].tobytes() == \
                want.tobytes()


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_direct_convolution_where_it_applies(path):
    # The SIMD paths compute most of DIRECT's shapes directly (not the ones
    # with C*R*S above the slab depth or outputs under half a vector wide);
    # the generic path always lowers onto the GEMM.  Either way the bits
    # equal the im2col path's (test_simd_path_conv2d_bits_do_not_depend_...).
    res = run_simd(path, CONV_CHECKER)
    seen = res["direct_seen"]
    if path == "generic":
        assert seen == 0
    else:
        assert seen >= 25
        # stride 2 with vectors of filters: direct whatever the row width
        assert res["kvec_s2_paths"] == ["direct"] * 10


# ==========================================================================
# fuzzing (see fuzzing.py)
# ==========================================================================
@st.composite
def conv_padding_hp(draw, cats=("ok", "ok", "mode")):
    """(value, (top, bottom, left, right) or a mode string, category)."""
    cat = draw(st.sampled_from(cats))
    if cat == "ok":
        a, b = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        v = draw(st.sampled_from([a, (a, b), [a, b], np.int64(a)]))
        pair = (a, a) if np.ndim(v) == 0 else (a, b)
        return v, (pair[0], pair[0], pair[1], pair[1]), cat
    if cat == "mode":
        v = draw(st.sampled_from(["same", "valid", "SAME", "Valid"]))
        return v, v.lower(), "ok"
    if cat == "big":
        v = draw(st.sampled_from([2**40, (0, 2**40), (2**40, 1)]))
        pair = (v, v) if np.ndim(v) == 0 else v
        return v, (pair[0], pair[0], pair[1], pair[1]), cat
    if cat == "too_big":
        v = draw(st.sampled_from([2**62, 2**63, 10**30, (0, 2**62 + 1)]))
        pair = (v, v) if np.ndim(v) == 0 else v
        return v, (pair[0], pair[0], pair[1], pair[1]), cat
    if cat == "bad_value":
        return draw(st.sampled_from([-1, (0, -1), "full", "", (1, 2, 3),
                                     -2**70])), None, cat
    return draw(st.sampled_from([1.5, None, True, (1.5, 0), b"same",
                                 {"a": 1}])), None, cat


def _taps(x, w, stride, pads, dil, out_hw):
    """Every (output pixel, input pixel, kernel tap) a convolution pairs,
    computed without materialising the padding (for padding of 10**9):
    yields (i, j, ih, iw, r, s)."""
    h, wd = x.shape[2:]
    r_, s_ = w.shape[2:]
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            for r in range(r_):
                ih = i * stride[0] - pads[0] + r * dil[0]
                if not 0 <= ih < h:
                    continue
                for s in range(s_):
                    iw = j * stride[1] - pads[2] + s * dil[1]
                    if 0 <= iw < wd:
                        yield i, j, ih, iw, r, s


def _conv_direct(x, w, stride, pads, dil, out_hw):
    """conv2d that never materialises the padding."""
    y = np.zeros((x.shape[0], w.shape[0]) + out_hw)
    for i, j, ih, iw, r, s in _taps(x, w, stride, pads, dil, out_hw):
        y[:, :, i, j] += x[:, :, ih, iw] @ w[:, :, r, s].T
    return y


def _conv_direct_backward(g, x, w, stride, pads, dil):
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    for i, j, ih, iw, r, s in _taps(x, w, stride, pads, dil, g.shape[2:]):
        gx[:, :, ih, iw] += g[:, :, i, j] @ w[:, :, r, s]
        gw[:, :, r, s] += g[:, :, i, j].T @ x[:, :, ih, iw]
    return gx, gw, g.sum(axis=(0, 2, 3))


@st.composite
def conv_cases(draw, backward=False):
    form = draw(st.sampled_from(["4d", "4d", "4d", "3d", "2d"]))
    if form == "2d":
        n = c = k = 1
    else:
        n, c, k = (draw(st.integers(0, 3)) for _ in range(3))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    mode, hp_cats = draw(mode_and_cats(["stride", "dilation", "padding"]))
    stride, stride_p, stride_cat = draw(positive_hp(hp_cats["stride"]))
    dil, dil_p, dil_cat = draw(positive_hp(hp_cats["dilation"]))
    pcats = hp_cats["padding"]
    pad, pad_p, pad_cat = draw(conv_padding_hp(
        ("ok", "ok", "mode") if pcats == ("ok",) else pcats))
    if pad_p in ("same",) and mode == "valid":
        stride, stride_p = 1, (1, 1)
    cats = {stride_cat, dil_cat, pad_cat}
    expect, errors, why = hp_expectation(cats)

    # input size: fitting the kernel, except in invalid mode now and then
    h = w = 0
    if expect != "error":
        if isinstance(pad_p, str):
            pads = (0,) * 4 if pad_p == "valid" else \
                (dil_p[0] * (r - 1), 0, dil_p[1] * (s - 1), 0)
        else:
            pads = pad_p
        need_h = max(0, dil_p[0] * (r - 1) + 1 - pads[0] - pads[1])
        need_w = max(0, dil_p[1] * (s - 1) + 1 - pads[2] - pads[3])
        short = mode == "invalid" and draw(st.integers(0, 2)) == 0
        # (a kernel dilated past 64 rows gets a small input: no fit)
        h = draw(st.integers(max(0, need_h - 2), need_h - 1)) \
            if short and need_h > 0 else \
            draw(st.integers(need_h if need_h < 64 else 0,
                             need_h + 5 if need_h < 64 else 5))
        w = draw(st.integers(need_w if need_w < 64 else 0,
                             need_w + 5 if need_w < 64 else 5))
    geometry = None
    if expect != "error":
        try:
            geometry = conv_geometry(h, w, r, s, stride_p, pad_p, dil_p)
        except ValueError as exc:
            expect, why, errors = "error", str(exc), (ValueError,)
    if geometry is not None:
        pads, extent, padded, (oh, ow) = geometry
        out = n * k * oh * ow
        lowered = c * r * s * oh * ow
        # an empty result of astronomical extent: unspecified (cnnkit may
        # still size a workspace by OH*OW), not drawn
        assume(out > 0 or max(lowered, padded) < HUGE)
        if max(out, lowered) >= HUGE:
            expect, why = "huge", f"{out} output elements"
        elif max(padded, extent, max(stride_p), max(dil_p)) > MAX_SIZE \
                or "too_big" in cats:
            expect, why = "either", "a size above 2**62"
        assume(expect == "huge" or out <= SMALL)

    xshape = {"4d": (n, c, h, w), "3d": (c, h, w), "2d": (h, w)}[form]
    wshape = (r, s) if form == "2d" else (k, c, r, s)
    x = draw(arrays(xshape, kinds=FINITE))
    wt = draw(arrays(wshape, kinds=FINITE))
    with_bias = draw(st.booleans())
    bias = None
    if not backward and with_bias:
        bias = draw(arrays(draw(st.sampled_from([(), (1,)])) if form == "2d"
                           else (k,)))
    g = None
    if backward:
        if expect in ("ok", "either"):
            gshape = {"4d": (n, k) + geometry[3], "3d": (k,) + geometry[3],
                      "2d": geometry[3]}[form]
            g = draw(arrays(gshape, kinds=FINITE))
        else:
            g = np.zeros({"4d": (n, k, 1, 1), "3d": (k, 1, 1),
                          "2d": (1, 1)}[form])
    bias_flag = draw(st.sampled_from([True, False, np.bool_(True)]))

    # in invalid mode, one mutation that makes the valid case invalid
    mutation = None
    if mode == "invalid" and expect != "error":
        mutation = draw(st.sampled_from([
            "x_dtype", "w_dtype", "x_ndim", "w_ndim", "channels", "other",
            "x_none", "ragged", "same_stride"]))
    if mutation == "channels" and form == "2d":
        mutation = None                     # no channels to mismatch
    if expect in ("ok", "either") and mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "x_dtype":
            x, errors = bad_array(draw, np.shape(x)), (TypeError,)
        elif mutation == "w_dtype":
            wt, errors = bad_array(draw, np.shape(wt)), (TypeError,)
        elif mutation == "x_ndim":
            x = np.zeros(draw(st.sampled_from([(3,), (1, 1, 1, 3, 3)])))
        elif mutation == "w_ndim":
            wt = np.zeros((1, 1, 2) if form != "2d" else (1, 1, 2, 2, 2))
        elif mutation == "channels" and form != "2d":
            wt = np.zeros((k, c + 1, r, s))
        elif mutation == "x_none":
            x, errors = None, (TypeError,)
        elif mutation == "ragged":
            x, errors = [[1.0, 2.0], [3.0]], (TypeError,)
        elif mutation == "same_stride":
            pad, stride = "same", (1, 2)
        elif backward:      # "other": bias flag or grad_out shape
            if draw(st.booleans()):
                bias_flag, errors = draw(st.sampled_from(
                    [1, None, "yes", np.array(True)])), (TypeError,)
            else:
                g = np.zeros(np.shape(g)[:-1] + (np.shape(g)[-1] + 1,))
        elif form != "2d" and not draw(st.booleans()):
            bias = np.zeros(draw(st.sampled_from([(k + 1,), (k, 1)])))
        else:
            bias, errors = bad_array(draw, (k,)), (TypeError,)
    kwargs = {"stride": stride, "padding": pad, "dilation": dil}
    if backward:
        kwargs["bias"] = bias_flag
        args = (g, x, wt)
    else:
        args = (x, wt, bias)

    def to4(a, lead):
        return None if a is None else a.reshape((1,) * lead + a.shape)

    def oracle(result):
        lead = {"4d": 0, "3d": 1, "2d": 2}[form]
        xa, wa = np.asarray(x), np.asarray(wt)
        pads, _, padded, out_hw = geometry
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(xa, wa, ga)
            g4, x4, w4 = to4(f64(ga, dt), lead), to4(f64(xa, dt), lead), \
                w_form(f64(wa, dt))
            if padded > 64:
                exp = _conv_direct_backward(g4, x4, w4, stride_p, pads, dil_p)
                bnd = _conv_direct_backward(abs(g4), abs(x4), abs(w4),
                                            stride_p, pads, dil_p)
            else:
                args_ = (stride_p, pad_p if isinstance(pad_p, str)
                         else (pads[0], pads[2]), dil_p)
                exp = ref.conv2d_backward(g4, x4, w4, *args_)
                bnd = ref.conv2d_backward(abs(g4), abs(x4), abs(w4), *args_)
            gx, gw, gb = result
            assert_result(gx, exp[0].reshape(xa.shape), dt,
                          bnd[0].reshape(xa.shape), k * r * s)
            assert_result(gw, exp[1].reshape(wa.shape), dt,
                          bnd[1].reshape(wa.shape), n * out_hw[0] * out_hw[1])
            if bias_flag:
                assert_result(gb, exp[2], dt, bnd[2],
                              n * out_hw[0] * out_hw[1])
            else:
                assert gb is None
            return
        ba = None if bias is None else np.asarray(bias)
        dt = design_dtype(xa, wa, ba)
        x4, w4 = to4(f64(xa, dt), lead), w_form(f64(wa, dt))
        b4 = None if ba is None else f64(ba, dt).reshape(-1)
        if padded > 64:
            exp = _conv_direct(x4, w4, stride_p, pads, dil_p, out_hw)
            bnd = _conv_direct(abs(x4), abs(w4), stride_p, pads, dil_p,
                               out_hw)
            if b4 is not None:
                exp, bnd = exp + b4[:, None, None], bnd + abs(b4)[:, None,
                                                                  None]
        else:
            args_ = (stride_p, pad_p if isinstance(pad_p, str)
                     else (pads[0], pads[2]), dil_p)
            exp = ref.conv2d(x4, w4, b4, *args_)
            bnd = ref.conv2d(abs(x4), abs(w4), None if b4 is None
                             else abs(b4), *args_)
        shape = exp.shape[lead:]
        assert_result(result, exp.reshape(shape), dt, bnd.reshape(shape),
                      c * r * s + 1)

    def w_form(a):
        return a.reshape(1, 1, *a.shape) if form == "2d" else a

    return Case(args, kwargs, expect, errors, why, oracle)


prop_conv2d = fuzz_property(F.conv2d, conv_cases())


prop_conv2d_backward = fuzz_property(F.conv2d_backward,
                                     conv_cases(backward=True))


# (name, call, allowed outcomes); outcomes: "ok" or exception class names

EXTREME = [
    ("conv 1x1 input, 1x1 kernel", lambda: F.conv2d(_z(1, 1, 1, 1),
                                                    _z(1, 1, 1, 1)), {"ok"}),
    ("conv kernel equal to the input", lambda: F.conv2d(
        np.ones((2, 3, 5, 4)), np.ones((2, 3, 5, 4))), {"ok"}),
    ("conv kernel one larger than the input", lambda: F.conv2d(
        _z(1, 1, 5, 4), _z(1, 1, 6, 4)), {"ValueError"}),
    ("conv empty batch", lambda: F.conv2d(_z(0, 3, 4, 4), _z(2, 3, 3, 3)),
     {"ok"}),
    ("conv zero channels", lambda: F.conv2d(_z(2, 0, 4, 4), _z(2, 0, 3, 3),
                                            np.ones(2)), {"ok"}),
    ("conv zero filters", lambda: F.conv2d(_z(2, 3, 4, 4), _z(0, 3, 3, 3)),
     {"ok"}),
    ("conv zero-size kernel", lambda: F.conv2d(_z(1, 1, 4, 4),
                                               _z(1, 1, 0, 3)),
     {"ValueError"}),
    ("conv empty image, padding", lambda: F.conv2d(_z(1, 1, 0, 0),
                                                   _z(1, 1, 1, 1),
                                                   padding=1), {"ok"}),
    ("conv stride 10**9", lambda: F.conv2d(_z(1, 2, 9, 9), _z(3, 2, 3, 3),
                                           stride=10**9), {"ok"}),
    ("conv stride 2**62", lambda: F.conv2d(_z(1, 2, 9, 9), _z(3, 2, 3, 3),
                                           stride=2**62), {"ok"}),
    ("conv stride 2**63", lambda: F.conv2d(_z(1, 2, 9, 9), _z(3, 2, 3, 3),
                                           stride=2**63), {"ValueError"}),
    ("conv stride -2**63", lambda: F.conv2d(_z(1, 1, 3, 3), _z(1, 1, 1, 1),
                                            stride=-2**63), {"ValueError"}),
    ("conv dilation 2**62", lambda: F.conv2d(_z(1, 1, 3, 3), _z(1, 1, 2, 2),
                                             dilation=2**62),
     {"ValueError"}),
    ("conv same padding, dilation 10**9", lambda: F.conv2d(
        np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), padding="same",
        dilation=10**9), {"ok"}),
    ("conv padding 2**31 (output > 2**62)", lambda: F.conv2d(
        _z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=2**31), {"ValueError"}),
    ("conv padding 2**62", lambda: F.conv2d(_z(1, 1, 1, 1), _z(1, 1, 1, 1),
                                            padding=2**62), {"ValueError"}),
    ("conv padding 10**30", lambda: F.conv2d(_z(1, 1, 1, 1), _z(1, 1, 1, 1),
                                             padding=10**30),
     {"ValueError"}),
    ("conv padding (0, 2**40)", lambda: F.conv2d(
        _z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=(0, 2**40)),
     {"ValueError", "MemoryError"}),
    ("conv backward padding 2**31", lambda: F.conv2d_backward(
        _z(1, 1, 1, 1), _z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=2**31),
     {"ValueError"}),
    ("conv broadcast input of 2**32 elements", lambda: F.conv2d(
        _bcast((1, 1, 2**16, 2**16)), _z(1, 1, 1, 1, dtype=np.float32)),
     {"ValueError", "MemoryError"}),
    ("conv empty array", lambda: F.conv2d(np.array([]), np.array([])),
     {"ValueError"}),
    ("conv scalars", lambda: F.conv2d(1.0, 2.0), {"ValueError"}),
]


test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())


# ==========================================================================
# grouped and depthwise convolution
# ==========================================================================
# (N, C, H, W, K, groups, R, S, stride, padding, dilation); groups == C is
# the depthwise convolution (K = C: multiplier 1; K = 2C: multiplier 2)
GROUP_CASES = [
    pytest.param(2, 4, 7, 6, 6, 2, 3, 3, 1, 1, 1, id="g2"),
    pytest.param(1, 6, 9, 8, 9, 3, 3, 2, 2, (1, 0), 1, id="g3-stride2-batch1"),
    pytest.param(2, 4, 8, 8, 4, 4, 3, 3, 1, 1, 1, id="depthwise"),
    pytest.param(3, 3, 9, 7, 6, 3, 3, 3, 1, 1, 1, id="depthwise-m2"),
    pytest.param(2, 5, 11, 13, 5, 5, 3, 3, 2, 1, 1, id="depthwise-stride2-odd"),
    pytest.param(2, 4, 9, 9, 8, 4, 3, 3, 2, 0, 1,
                 id="depthwise-m2-stride2-nopad"),
    pytest.param(1, 3, 10, 9, 3, 3, 3, 3, 1, 2, 2, id="depthwise-dilated"),
    pytest.param(2, 4, 7, 8, 4, 4, 3, 3, 1, "same", 1, id="depthwise-same"),
    pytest.param(2, 2, 6, 7, 4, 2, 5, 5, 1, 2, 1, id="depthwise-m2-5x5"),
    pytest.param(2, 6, 5, 6, 4, 2, 1, 1, 1, 0, 1, id="g2-1x1"),
    pytest.param(2, 4, 5, 5, 4, 4, 1, 1, 2, 0, 1, id="depthwise-1x1-stride"),
    pytest.param(2, 4, 4, 5, 6, 2, 4, 5, 1, 0, 1, id="g2-1x1-output"),
    pytest.param(1, 2, 7, 7, 4, 2, 2, 2, 3, 0, 1, id="depthwise-stride-gt-kernel"),
    pytest.param(2, 6, 9, 9, 6, 3, 3, 3, (2, 3), (2, 1), (2, 2),
                 id="g3-dilation-stride-pad"),
    pytest.param(2, 16, 18, 17, 32, 16, 3, 3, 1, 1, 1, id="depthwise-m2-wide"),
    pytest.param(3, 8, 20, 35, 8, 8, 3, 3, 1, 1, 1, id="depthwise-long-rows"),
    pytest.param(2, 8, 21, 40, 8, 8, 3, 3, 2, 1, 1,
                 id="depthwise-long-rows-stride2"),
    pytest.param(10, 4, 6, 6, 4, 4, 3, 3, 1, 1, 1, id="depthwise-batch-gt-8"),
    # stride 2, 3x3, padding 1 (read in place on AVX-512 up to 4 vectors
    # of output columns): one pixel, one and four vectors, two filters
    # per channel, and rows past 4 vectors
    pytest.param(2, 3, 1, 1, 3, 3, 3, 3, 2, 1, 1, id="depthwise-s2-1x1"),
    pytest.param(2, 5, 28, 28, 5, 5, 3, 3, 2, 1, 1, id="depthwise-s2-28"),
    pytest.param(1, 3, 33, 31, 6, 3, 3, 3, 2, 1, 1, id="depthwise-s2-m2"),
    pytest.param(1, 2, 5, 128, 2, 2, 3, 3, 2, 1, 1, id="depthwise-s2-64"),
    pytest.param(1, 2, 4, 131, 2, 2, 3, 3, 2, 1, 1, id="depthwise-s2-66"),
    # the vector paths: rows over several vectors, stride 2 and 3, mixed
    # strides, padding beyond the kernel
    pytest.param(2, 3, 23, 41, 6, 3, 3, 3, 3, 2, 2,
                 id="depthwise-m2-stride3-dilated-wide"),
    pytest.param(2, 4, 13, 37, 4, 4, 3, 5, (2, 1), (1, 2), 1,
                 id="depthwise-3x5-stride21"),
    pytest.param(1, 2, 19, 50, 2, 2, 5, 5, 2, 2, 1,
                 id="depthwise-5x5-stride2-wide"),
    pytest.param(2, 2, 6, 6, 2, 2, 3, 3, 1, 3, 1,
                 id="depthwise-pad-gt-kernel"),
    pytest.param(1, 3, 9, 33, 3, 3, 3, 3, (1, 2), (0, 1), (2, 1),
                 id="depthwise-stride12-dilated"),
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("N,C,H,W,K,groups,R,S,stride,padding,dilation",
                         GROUP_CASES)
def test_grouped_conv2d_matches_reference(with_bias, N, C, H, W, K, groups,
                                          R, S, stride, padding, dilation):
    shapes = [(N, C, H, W), (K, C // groups, R, S)] + \
        ([(K,)] if with_bias else [])
    check_op("conv2d", shapes, stride=stride, padding=padding,
             dilation=dilation, groups=groups)


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("N,C,H,W,K,groups,R,S,stride,padding,dilation",
                         [pytest.param(*c.values[:5], 1, *c.values[5:],
                                       id=c.id) for c in CONV_CASES] +
                         GROUP_CASES)
def test_conv2d_backward_writes_every_gradient_element(
        dt, N, C, H, W, K, groups, R, S, stride, padding, dilation):
    """New gradients are not zeroed before the kernels write them, and the
    layers' kept ones hold the step before's: both need every element
    written.  Into arrays holding NaN, the same bits as new ones."""
    from cnnkit import _kernels
    rng = np.random.default_rng(N * 100 + C * 10 + K)
    x = rng.standard_normal((N, C, H, W)).astype(dt)
    w = rng.standard_normal((K, C // groups, R, S)).astype(dt)
    _, _, st, pad4, dil, groups, _ = F._conv_args(
        "conv2d_backward", x, w, stride, padding, dilation, groups)
    oh, ow = F.conv2d_output_shape((H, W), (R, S), stride, padding, dilation)
    g = rng.standard_normal((N, K, oh, ow)).astype(dt)
    new = _kernels.conv2d_backward(g, x, w, st, pad4, dil, groups=groups)
    kept = [np.full(a.shape, np.nan, dt) for a in new]
    got = _kernels.conv2d_backward(g, x, w, st, pad4, dil, True, True,
                                   *kept, groups=groups)
    for a, b, c in zip(new, kept, got):
        assert c is b
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_depthwise_infinite_weight_nan_positions(stride, padding):
    """An infinite weight puts NaN into the input gradient exactly where
    the grouped GEMM path (which multiplies only existing terms) does."""
    from cnnkit import _kernels as K
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 21)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    w[1, 0, 0, 2] = np.inf
    y = F.conv2d(x, np.nan_to_num(w, posinf=1.0), stride=stride,
                 padding=padding, groups=3)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    st, pad, dil = (stride, stride), (padding,) * 4, (1, 1)
    fast = K.conv2d_backward(gy, x, w, st, pad, dil, True, False,
                             groups=3)[0]
    slow = K.conv2d_backward(gy, x, w, st, pad, dil, True, False,
                             direct=False, groups=3)[0]
    assert not np.isfinite(slow).all()
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_array_equal(np.isposinf(fast), np.isposinf(slow))
    np.testing.assert_array_equal(np.isneginf(fast), np.isneginf(slow))


DEPTHWISE_S2_CHECKER = r'''
from cnnkit import _kernels as K
# A depthwise layer at stride 2 sums each output as the same layer at
# stride 1 sums the output at twice its place (taps in (r, s) order from
# zero, then the bias, then the ReLU), whichever way each reads its
# input: the bits of the stride-1 output subsampled.  Planes of 1 to 130
# columns (masked loads at both edges, rows of 1-5 vectors), paddings 0
# and 1 on each axis, up to 4 on the rows and 2 on the right, 1-7 taps a
# side, 1 and 2 filters per channel, a NaN, an infinite weight and -0, 1
# and 2 threads.
rng = np.random.default_rng(3)
cases = 0
for dt in (np.float32, np.float64):
    for h, w_ in ((1, 1), (2, 3), (5, 7), (14, 14), (27, 28), (33, 31),
                  (20, 64), (9, 65), (6, 130)):
        # padding (top, bottom, left, right): symmetric, the "same"
        # padding of stride 2 (0, 1, 0, 1), and rows wholly in the padding
        for r, s, pad in ((3, 3, (1, 1, 1, 1)), (3, 3, (0, 0, 0, 0)),
                          (3, 3, (1, 1, 0, 0)), (3, 3, (0, 0, 1, 1)),
                          (3, 3, (2, 2, 1, 1)), (3, 3, (0, 1, 0, 1)),
                          (3, 3, (4, 3, 1, 2)), (5, 5, (1, 1, 1, 1)),
                          (1, 1, (0, 0, 0, 0)), (2, 2, (1, 1, 1, 1)),
                          (7, 7, (1, 1, 1, 1)), (1, 3, (0, 0, 1, 1))):
            if h + pad[0] + pad[1] < r or w_ + pad[2] + pad[3] < s:
                continue
            for mult in (1, 2):
                c = 3
                x = rng.standard_normal((2, c, h, w_)).astype(dt)
                x[0, 0, 0, 0] = np.nan
                x[1, 1, -1, -1] = -0.0
                w = rng.standard_normal((c * mult, 1, r, s)).astype(dt)
                w[-1, 0, r - 1, 0] = np.inf
                b = rng.standard_normal(c * mult).astype(dt)
                for relu in (False, True):
                    for nt in (1, 2):
                        cnnkit.set_num_threads(nt)
                        y2 = K.conv2d_forward(x, w, b, (2, 2), pad, (1, 1),
                                              relu, groups=c)
                        y1 = K.conv2d_forward(x, w, b, (1, 1), pad, (1, 1),
                                              relu, groups=c)
                        cases += 1
                        want = np.ascontiguousarray(y1[:, :, ::2, ::2])
                        if y2.shape != want.shape or \
                                y2.tobytes() != want.tobytes():
                            variant.append(
                                f"{np.dtype(dt).name} {h}x{w_} {r}x{s} "
                                f"pad {pad} x{mult} relu {relu} on "
                                f"{nt} threads")
extra["cases"] = cases
'''


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_depthwise_stride2_is_stride1_subsampled(path):
    res = run_simd(path, DEPTHWISE_S2_CHECKER)
    assert res["cases"] > 1000
    assert res["variant"] == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [6, 14, 28, 30, 29])
def test_depthwise_stride2_weight_gradient_nan_positions(dtype, width):
    """An infinite input in the last column reaches the weight gradient
    only through the taps that read it: the lanes past the last output
    column of a vector add nothing (as in the grouped GEMM path)."""
    from cnnkit import _kernels as K
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 7, width)).astype(dtype)
    x[:, 1, :, -1] = np.inf
    x[1, 2, 3, -1] = np.nan
    w = rng.standard_normal((3, 1, 3, 3)).astype(dtype)
    y = F.conv2d(np.nan_to_num(x, nan=0.0, posinf=1.0), w, stride=2,
                 padding=1, groups=3)
    gy = rng.standard_normal(y.shape).astype(dtype)
    st, pad, dil = (2, 2), (1,) * 4, (1, 1)
    fast = K.conv2d_backward(gy, x, w, st, pad, dil, False, False,
                             groups=3)[1]
    slow = K.conv2d_backward(gy, x, w, st, pad, dil, False, False,
                             direct=False, groups=3)[1]
    assert np.isfinite(slow[0]).all() and not np.isfinite(slow[1]).all()
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_array_equal(np.isposinf(fast), np.isposinf(slow))
    np.testing.assert_array_equal(np.isneginf(fast), np.isneginf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite],
                               rtol=1e-4 if dtype == np.float32 else 1e-12)


GROUP_FD_CASES = [
    pytest.param(2, 4, 5, 5, 6, 2, 3, 2, 1, 1, 1, id="g2"),
    pytest.param(1, 3, 6, 5, 3, 3, 3, 3, 2, 1, 1, id="depthwise-stride2"),
    pytest.param(2, 2, 5, 6, 4, 2, 2, 3, 1, "same", (2, 1),
                 id="depthwise-m2-same-dilated"),
]


@pytest.mark.parametrize("N,C,H,W,K,groups,R,S,stride,padding,dilation",
                         GROUP_FD_CASES)
def test_grouped_conv2d_backward_finite_differences(N, C, H, W, K, groups, R,
                                                    S, stride, padding,
                                                    dilation):
    check_gradients("conv2d", [(N, C, H, W), (K, C // groups, R, S), (K,)],
                    seed=N * 1000 + H * 10 + W, stride=stride,
                    padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("N,C,H,W,K,groups,R,S,stride,padding,dilation",
                         GROUP_CASES)
def test_grouped_conv2d_matches_pytorch(dt, N, C, H, W, K, groups, R, S,
                                        stride, padding, dilation):
    torch = require("torch")
    rng = np.random.default_rng(N * 100 + C * 10 + K)
    x = rng.standard_normal((N, C, H, W)).astype(dt)
    w = rng.standard_normal((K, C // groups, R, S)).astype(dt)
    b = rng.standard_normal(K).astype(dt)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride,
                                    padding=padding, dilation=dilation,
                                    groups=groups)
    gy = rng.standard_normal(tuple(ty.shape)).astype(dt)
    ty.backward(torch.from_numpy(gy))
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    gx, gw, gb = F.conv2d_backward(gy, x, w, stride, padding, dilation,
                                   groups=groups)
    tol = dict(rtol=1e-4, atol=1e-4) if dt == np.float32 else \
        dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(gw, tw.grad.numpy(), **tol)
    np.testing.assert_allclose(gb, tb.grad.numpy(), **tol)


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("groups,K", [(2, 4), (4, 4), (4, 8)])
def test_grouped_conv2d_is_each_group_on_its_own(rng, dt, groups, K):
    # filter run q of a grouped convolution is the plain convolution of
    # channel run q with those filters
    x = rng.standard_normal((3, 4, 12, 20)).astype(dt)
    w = rng.standard_normal((K, 4 // groups, 3, 3)).astype(dt)
    b = rng.standard_normal(K).astype(dt)
    gy = rng.standard_normal((3, K, 6, 10)).astype(dt)
    y = F.conv2d(x, w, b, stride=2, padding=1, groups=groups)
    gx, gw, gb = F.conv2d_backward(gy, x, w, stride=2, padding=1,
                                   groups=groups)
    cg, kg = 4 // groups, K // groups
    tol = 1e-5 if dt == np.float32 else 1e-12
    for q in range(groups):
        cs, ks = slice(q * cg, (q + 1) * cg), slice(q * kg, (q + 1) * kg)
        yq = F.conv2d(x[:, cs], w[ks], b[ks], stride=2, padding=1)
        gxq, gwq, gbq = F.conv2d_backward(gy[:, ks], x[:, cs], w[ks],
                                          stride=2, padding=1)
        np.testing.assert_allclose(y[:, ks], yq, rtol=tol, atol=tol)
        np.testing.assert_allclose(gx[:, cs], gxq, rtol=tol, atol=tol)
        np.testing.assert_allclose(gw[ks], gwq, rtol=tol, atol=tol)
        np.testing.assert_allclose(gb[ks], gbq, rtol=tol, atol=tol)


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_groups_one_gives_the_bits_of_the_plain_convolution(rng, dt):
    x = rng.standard_normal((2, 3, 9, 9)).astype(dt)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dt)
    gy = rng.standard_normal((2, 4, 9, 9)).astype(dt)
    assert F.conv2d(x, w, padding=1, groups=1).tobytes() == \
        F.conv2d(x, w, padding=1).tobytes()
    for a, b in zip(F.conv2d_backward(gy, x, w, padding=1, groups=1),
                    F.conv2d_backward(gy, x, w, padding=1)):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("C,K,groups,stride", [(4, 6, 2, 1), (6, 6, 6, 1),
                                                (6, 12, 6, 2),
                                                (16, 16, 16, 1)])
def test_grouped_conv2d_backward_parts_equal_each_run_alone(rng, dt, C, K,
                                                            groups, stride):
    from cnnkit import _ops
    op = _ops.Conv2DOp((stride, stride), (1, 1, 1, 1), (1, 1), groups)
    x = rng.standard_normal((7, C, 19, 18)).astype(dt)
    w = rng.standard_normal((K, C // groups, 3, 3)).astype(dt)
    y = op.forward(x, w, None)
    gy = rng.standard_normal(y.shape).astype(dt)
    bounds = [0, 2, 2, 7]
    gw = np.full((3,) + w.shape, 7.0, dt)
    gb = np.full((3, K), 7.0, dt)
    gx = op.backward_parts(gy, x, w, bounds, gw, gb)
    np.testing.assert_array_equal(gx, op.backward(gy, x, w)[0])
    assert (gw[1] == 7).all() and (gb[1] == 7).all()    # an empty run
    for q in (0, 2):
        lo, hi = bounds[q], bounds[q + 1]
        one_w = np.empty((1,) + w.shape, dt)
        one_b = np.empty((1, K), dt)
        op.backward_parts(gy[lo:hi], x[lo:hi], w, [0, hi - lo], one_w, one_b,
                          False)
        assert gw[q].tobytes() == one_w[0].tobytes()
        assert gb[q].tobytes() == one_b[0].tobytes()
        ref_gw = ref.conv2d_backward(gy[lo:hi].astype(np.float64),
                                     x[lo:hi].astype(np.float64),
                                     w.astype(np.float64), stride, 1,
                                     groups=groups)[1]
        tol = 1e-4 if dt == np.float32 else 1e-11
        np.testing.assert_allclose(gw[q], ref_gw, rtol=tol, atol=tol)


@pytest.mark.parametrize("fn", [F.conv2d, F.conv2d_backward])
@pytest.mark.parametrize("x_shape,w_shape,groups,exc,pattern", [
    ((2, 4, 5, 5), (4, 2, 3, 3), 0, ValueError,
     r"\bgroups must be a positive int, got 0"),
    ((2, 4, 5, 5), (4, 2, 3, 3), -2, ValueError,
     r"\bgroups must be a positive int, got -2"),
    ((2, 4, 5, 5), (4, 2, 3, 3), 2.0, TypeError,
     r"\bgroups must be an int, got float 2\.0"),
    ((2, 4, 5, 5), (4, 2, 3, 3), True, TypeError,
     r"\bgroups must be an int, got bool"),
    ((2, 4, 5, 5), (4, 2, 3, 3), "2", TypeError,
     r"\bgroups must be an int, got str"),
    ((2, 4, 5, 5), (4, 2, 3, 3), None, TypeError,
     r"\bgroups must be an int, got NoneType"),
    ((2, 6, 5, 5), (4, 2, 3, 3), 4, ValueError,
     r"groups=4 must divide the 6 channels of x \(shape \(2, 6, 5, 5\)\)"),
    ((2, 4, 5, 5), (6, 1, 3, 3), 4, ValueError,
     r"groups=4 must divide the 6 filters of weight \(shape \(6, 1, 3, 3\)\)"),
    ((2, 4, 5, 5), (4, 4, 3, 3), 2, ValueError,
     r"with groups=2, weight must have 2 channels per filter .*"
     r"got weight shape \(4, 4, 3, 3\)"),
    ((2, 4, 5, 5), (4, 2, 3, 3), 4, ValueError,
     r"with groups=4, weight must have 1 channels per filter"),
])
def test_grouped_conv2d_errors(fn, x_shape, w_shape, groups, exc, pattern):
    x, w = np.zeros(x_shape), np.zeros(w_shape)
    with pytest.raises(exc, match=pattern):
        if fn is F.conv2d:
            fn(x, w, groups=groups)
        else:
            fn(np.zeros((2, w_shape[0], 3, 3)), x, w, groups=groups)


@pytest.mark.parametrize("groups,exc", [(0, ValueError), (3, ValueError),
                                        (2.5, TypeError), (True, TypeError)])
def test_kernel_binding_checks_groups(groups, exc):
    from cnnkit import _kernels
    x, w = np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3))
    with pytest.raises(exc, match=r"\bgroups\b"):
        _kernels.conv2d_forward(x, w, None, (1, 1), (0,) * 4, (1, 1),
                                groups=groups)
    with pytest.raises(exc, match=r"\bgroups\b"):
        _kernels.conv2d_backward(np.zeros((1, 4, 3, 3)), x, w, (1, 1),
                                 (0,) * 4, (1, 1), groups=groups)


# -- the layers: Conv2D(groups=...) and DepthwiseConv2D ----------------------
def _torch_grouped_model(torch, c):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, groups=c), nn.ReLU(),
        nn.Conv2d(2 * c, 6, 1, groups=2), nn.ReLU(),
        nn.Conv2d(6, 6, (3, 2), padding=1, dilation=(2, 1), groups=6,
                  bias=False)).double()


def _cnnkit_grouped_model(c):
    import cnnkit
    from cnnkit import layers as L
    return cnnkit.Sequential([
        L.DepthwiseConv2D(3, depth_multiplier=2, stride=2, padding=1),
        L.ReLU(), L.Conv2D(6, 1, groups=2), L.ReLU(),
        L.DepthwiseConv2D((3, 2), padding=1, dilation=(2, 1),
                          use_bias=False)],
        input_shape=(c, 11, 10), seed=0, dtype="float64")


def test_grouped_layers_take_pytorch_state_dict_and_give_its_outputs(rng):
    torch = require("torch")
    torch.manual_seed(0)
    theirs = _torch_grouped_model(torch, 4)
    ours = _cnnkit_grouped_model(4)
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours_state = ours.state_dict()
    assert [v.shape for v in ours_state.values()] == \
        [v.shape for v in state.values()]
    ours.set_weights(list(state.values()))
    x = rng.standard_normal((3, 4, 11, 10))
    np.testing.assert_allclose(ours(x),
                               theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


def test_grouped_layers_parameter_counts_and_summary():
    model = _cnnkit_grouped_model(4)
    counts = [layer.count_params for layer in model.layers]
    # depthwise 8 filters of 1x3x3 + 8 biases; 6 filters of 4x1x1 + 6;
    # depthwise 6 filters of 1x3x2, no bias
    assert counts == [8 * 9 + 8, 0, 6 * 4 + 6, 0, 6 * 6]
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "DepthwiseConv2D" in text and str(sum(counts)) in \
        text.replace(",", "")


def test_depthwise_conv2d_is_conv2d_with_groups_c():
    import cnnkit
    from cnnkit import layers as L
    a = cnnkit.Sequential([L.DepthwiseConv2D(3, 2, padding=1), L.ReLU()],
                          input_shape=(5, 9, 9), seed=3)
    b = cnnkit.Sequential([L.Conv2D(10, 3, padding=1, groups=5), L.ReLU()],
                          input_shape=(5, 9, 9), seed=3)
    b.set_weights(a.get_weights())
    x = np.random.default_rng(0).standard_normal((2, 5, 9, 9))
    assert a(x).tobytes() == b(x).tobytes()
    layer = a.layers[0]
    assert (layer.filters, layer.groups) == (10, 5)
    assert layer.get_config() == {
        "kernel_size": [3, 3], "depth_multiplier": 2, "stride": [1, 1],
        "padding": [1, 1], "dilation": [1, 1], "use_bias": True}
    assert b.layers[0].get_config()["groups"] == 5


@pytest.mark.parametrize("kwargs,shape,exc,pattern", [
    (dict(filters=6, kernel_size=3, groups=4), None, ValueError,
     r"groups=4 must divide filters=6"),
    (dict(filters=6, kernel_size=3, groups=0), None, ValueError,
     r"\bgroups\b"),
    (dict(filters=6, kernel_size=3, groups=1.5), None, TypeError,
     r"\bgroups\b"),
    (dict(filters=6, kernel_size=3, groups=3), (4, 8, 8), ValueError,
     r"groups=3 must divide the input channels.*\(4, 8, 8\)"),
])
def test_grouped_conv2d_layer_errors(kwargs, shape, exc, pattern):
    from cnnkit import layers as L
    with pytest.raises(exc, match=pattern):
        L.Conv2D(**kwargs).build(shape or (6, 8, 8))


@pytest.mark.parametrize("kwargs,exc", [
    (dict(kernel_size=3, depth_multiplier=0), ValueError),
    (dict(kernel_size=3, depth_multiplier=1.0), TypeError),
    (dict(kernel_size=0), ValueError),
])
def test_depthwise_conv2d_layer_errors(kwargs, exc):
    from cnnkit import layers as L
    with pytest.raises(exc):
        L.DepthwiseConv2D(**kwargs)
    with pytest.raises(ValueError, match=r"DepthwiseConv2D expects input"):
        L.DepthwiseConv2D(3).build((8, 8))


def test_depthwise_model_trains_the_same_for_any_thread_count():
    import cnnkit
    from cnnkit import layers as L
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    runs = []
    for nt in (1, 3):
        with helpers.num_threads(nt):
            model = cnnkit.Sequential([
                L.DepthwiseConv2D(3, 2, padding=1), L.ReLU(),
                L.Conv2D(8, 1, groups=2), L.ReLU(), L.GlobalAvgPool2D(),
                L.Flatten(), L.Dense(3)], input_shape=(3, 12, 12), seed=1)
            model.fit(x, y, epochs=2, batch_size=8, verbose=0)
            runs.append(model.flat_params.tobytes())
    assert runs[0] == runs[1]


# -- fuzzing the groups --------------------------------------------------
from hypothesis import given, settings  # noqa: E402


@st.composite
def grouped_cases(draw):
    groups = draw(st.integers(1, 4))
    cg = draw(st.sampled_from([1, 1, 2, 3]))        # channels per group
    kg = draw(st.integers(1, 3))                    # filters per group
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, dil[0] * (r - 1) + 1 - 2 * pad[0]), 9))
    w = draw(st.integers(max(1, dil[1] * (s - 1) + 1 - 2 * pad[1]), 9))
    n = draw(st.integers(1, 3))
    dt = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2 ** 16))
    return groups, cg, kg, (n, r, s, h, w), stride, pad, dil, dt, seed


@settings(max_examples=60, deadline=None)
@given(grouped_cases(), st.sampled_from(["ok", "ok", "ok", "bad_groups",
                                         "bad_weight"]))
def test_fuzz_grouped_conv2d(case, mutation):
    groups, cg, kg, (n, r, s, h, w), stride, pad, dil, dt, seed = case
    c, k = groups * cg, groups * kg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dt)
    wt = rng.standard_normal((k, cg, r, s)).astype(dt)
    b = rng.standard_normal(k).astype(dt)
    hp = dict(stride=stride, padding=pad, dilation=dil)
    if mutation == "bad_groups":
        bad = rng.choice([0, -1, c + 1, 1.5, "2", None])
        with pytest.raises((ValueError, TypeError), match=r"\bgroups\b"):
            F.conv2d(x, wt, b, groups=bad, **hp)
        return
    if mutation == "bad_weight":
        wt = np.zeros((k, cg + 1, r, s), dt)
        with pytest.raises(ValueError, match=r"channels"):
            F.conv2d(x, wt, b, groups=groups, **hp)
        return
    y = F.conv2d(x, wt, b, groups=groups, **hp)
    gy = rng.standard_normal(y.shape).astype(dt)
    gx, gw, gb = F.conv2d_backward(gy, x, wt, groups=groups, **hp)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, wt, gy))
    ey = ref.conv2d(x64, w64, b.astype(np.float64), groups=groups, **hp)
    ex, ew, eb = ref.conv2d_backward(g64, x64, w64, groups=groups, **hp)
    tol = 2e-4 if dt == np.float32 else 1e-11
    for got, want in ((y, ey), (gx, ex), (gw, ew), (gb, eb)):
        assert got.dtype == dt
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("n, c, hw, k, groups, stride", [
    (37, 4, (5, 5), 6, 1, 1),     # more images than the fixed groups
    (19, 4, (4, 4), 6, 2, 1),     # two groups
    (9, 3, (9, 7), 5, 1, 2),      # strided
    (3, 2, (12, 11), 4, 1, 1),
])
def test_im2col_weight_gradient_of_small_planes(dt, n, c, hw, k, groups,
                                                stride):
    # the im2col weight gradient on small planes, many images, groups and
    # strides: the reference's values, the same bits for 1, 2 and 3
    # threads, and a run of images gives the bits it gives alone
    from cnnkit import _kernels as K
    rng = np.random.default_rng(n * c)
    x = rng.standard_normal((n, c) + hw).astype(dt)
    w = rng.standard_normal((k, c // groups, 3, 3)).astype(dt)
    oh = (hw[0] + 2 - 3) // stride + 1
    ow = (hw[1] + 2 - 3) // stride + 1
    gy = rng.standard_normal((n, k, oh, ow)).astype(dt)
    args = ((stride, stride), (1, 1, 1, 1), (1, 1))
    runs = []
    for threads in (1, 2, 3):
        with helpers.num_threads(threads):
            runs.append(K.conv2d_backward(gy, x, w, *args, direct=False,
                                          groups=groups)[1])
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()
    expected = ref.conv2d_backward(gy.astype(np.float64),
                                   x.astype(np.float64),
                                   w.astype(np.float64), stride=stride,
                                   padding=1, groups=groups)[1]
    tol = 1e-3 if dt == np.float32 else 1e-10
    np.testing.assert_allclose(runs[0], expected, rtol=tol, atol=tol)
    bounds = [0, n // 3, n]
    parts = np.empty((2,) + w.shape, dt)
    K.conv2d_backward_parts(gy, x, w, *args, bounds, parts, None, False,
                            direct=False, groups=groups)
    for q in range(2):
        lo, hi = bounds[q], bounds[q + 1]
        alone = np.empty((1,) + w.shape, dt)
        K.conv2d_backward_parts(gy[lo:hi], x[lo:hi], w, *args,
                                [0, hi - lo], alone, None, False,
                                direct=False, groups=groups)
        assert alone[0].tobytes() == parts[q].tobytes()


def _check_weight_runs(gy, x, w, stride, pad, bounds, tol):
    """Each run of images [bounds[q], bounds[q + 1]) of the per-run weight
    gradient: the bits of any thread count and of that run alone, its
    value against the reference, and empty runs left unwritten."""
    from cnnkit import _kernels as K
    dt = x.dtype
    args = ((stride, stride), (pad,) * 4, (1, 1))
    nparts = len(bounds) - 1
    runs = []
    for nt in (1, 2, 3):
        parts = np.full((nparts,) + w.shape, np.nan, dt)
        with helpers.num_threads(nt):
            K.conv2d_backward_parts(gy, x, w, *args, bounds, parts, None,
                                    False)
        runs.append(parts)
    assert runs[1].tobytes() == runs[0].tobytes() == runs[2].tobytes()
    for q in range(nparts):
        lo, hi = bounds[q], bounds[q + 1]
        if hi == lo:
            assert np.isnan(runs[0][q]).all()
            continue
        alone = np.empty((1,) + w.shape, dt)
        K.conv2d_backward_parts(gy[lo:hi], x[lo:hi], w, *args, [0, hi - lo],
                                alone, None, False)
        assert alone.tobytes() == runs[0][q].tobytes()
        want = ref.conv2d_backward(gy[lo:hi].astype(np.float64),
                                   x[lo:hi].astype(np.float64),
                                   w.astype(np.float64), stride, pad, 1)[1]
        np.testing.assert_allclose(runs[0][q], want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_direct_weight_gradient_of_flat_planes_per_run(dt):
    # 10-wide output rows take the direct weight gradient's flat sweep
    # (15 filters: not a multiple of any vector), which fills the planes
    # of up to four images and sweeps them per tile: each run of images
    # (1, 6 and 5 images, two empty runs) has the bits of that run alone
    # and of any thread count, and its value
    rng = np.random.default_rng(11)
    x = rng.standard_normal((12, 6, 14, 14)).astype(dt)
    w = rng.standard_normal((15, 6, 5, 5)).astype(dt)
    gy = rng.standard_normal((12, 15, 10, 10)).astype(dt)
    _check_weight_runs(gy, x, w, 1, 0, [0, 1, 1, 7, 12, 12],
                       1e-4 if dt == np.float32 else 1e-10)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [
    # (n, c, h, w, k, r, s, stride, padding): 64 filters of 32x32 planes
    # fill a chunk of the transposed gradient with 3 images, so runs
    # cross chunks; 3x3 with one vector and channel tiles; 5x5 read in
    # place; 7x7 stride 2
    (7, 4, 32, 32, 64, 3, 3, 1, 1),
    (7, 5, 16, 15, 16, 3, 3, 1, 1),
    (7, 6, 14, 14, 16, 5, 5, 1, 0),
    (7, 3, 15, 16, 32, 7, 7, 2, 3)])
def test_weight_gradient_with_filters_on_the_vector_axis(dt, shape):
    # Filters a multiple of the vector (on AVX-512 and AVX2) take the
    # weight gradient that broadcasts the padded input against vectors of
    # filters: each run of images (1, 3 and 3 images, two empty runs; then
    # all 7 as one run) has the bits of that run alone and of any thread
    # count (threads taking whole runs, or sharing them), and its value;
    # and the whole batch's value
    from cnnkit import _kernels as K
    n, c, h, wd, k, r, s, st, pad = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, c, h, wd)).astype(dt)
    w = rng.standard_normal((k, c, r, s)).astype(dt)
    oh = (h + 2 * pad - r) // st + 1
    ow = (wd + 2 * pad - s) // st + 1
    gy = rng.standard_normal((n, k, oh, ow)).astype(dt)
    tol = 1e-3 if dt == np.float32 else 1e-10
    _check_weight_runs(gy, x, w, st, pad, [0, 1, 1, 4, 7, 7], tol)
    # one run of all the images: on one thread it takes several chunks
    _check_weight_runs(gy, x, w, st, pad, [0, n], tol)
    whole = K.conv2d_backward(gy, x, w, (st, st), (pad,) * 4, (1, 1), False,
                              False)[1]
    want = ref.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                               w.astype(np.float64), st, pad, 1)[1]
    np.testing.assert_allclose(whole, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("k", [13, 16, 20, 40])
def test_direct_filter_strips_of_equal_size(dt, k):
    # Filters split into strips of equal size (13: 7 + 6, 16: 8 + 8, 40:
    # four of 10) on rows wider than a vector and on flat planes, at batch
    # 1 (filter blocks per thread) and 3: the bits of the im2col path,
    # bias and ReLU included, on 1 and 2 threads
    from cnnkit import _kernels as K
    rng = np.random.default_rng(k)
    args = ((1, 1), (1, 1, 1, 1), (1, 1))
    for shape in ((3, 4, 9, 37), (1, 4, 9, 37), (3, 6, 5, 5)):
        x = rng.standard_normal(shape).astype(dt)
        w = rng.standard_normal((k, shape[1], 3, 3)).astype(dt)
        b = rng.standard_normal(k).astype(dt)
        assert K._conv_forward_path(x.shape, w.shape, *args, dt) == "direct"
        lowered = K.conv2d_forward(x, w, b, *args, True, direct=False)
        for threads in (1, 2):
            with helpers.num_threads(threads):
                direct = K.conv2d_forward(x, w, b, *args, True)
            assert direct.tobytes() == lowered.tobytes()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    # (channels, in rows, out columns, filters, kernel, stride, padding
    # (top, bottom, left, right), dilation): LeNet-5's second layer's input
    # gradient as a forward (10x10 padded by 4); rows wholly in the
    # padding; dilated and strided rows; 1-6 filters; slabs that split a
    # channel's taps (C*R*S 600 over the slab depth)
    (16, 10, 14, (6,), (5, 5), (1, 1), (4, 4, 2, 2), (1, 1)),
    (3, 9, 14, (4,), (3, 3), (1, 1), (4, 3, 1, 1), (1, 1)),
    (5, 12, 16, (1, 5), (3, 3), (1, 1), (3, 3, 1, 1), (2, 1)),
    (4, 15, 14, (6,), (5, 3), (2, 1), (3, 2, 1, 1), (1, 1)),
    (24, 9, 14, (5,), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    # filters on the vector axis (rows of 3x3 and 5x5 layers; strided;
    # slabs that split a channel)
    (8, 14, 14, (32,), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (4, 11, 14, (32, 48), (5, 5), (1, 1), (3, 2, 2, 2), (1, 1)),
    (8, 15, 14, (32,), (3, 3), (2, 2), (2, 1, 1, 1), (1, 1)),
    (32, 10, 14, (32,), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
])
def test_direct_tiles_skip_padding_rows_with_the_same_bits(dt, case):
    # Rows of tiles leave out the taps whose kernel rows read only the
    # zero padding: the bits of the im2col path (which adds their zero
    # products), NaN, inf and -0 inputs included; an infinite weight keeps
    # every tap (its products with the padding are NaN)
    from cnnkit import _kernels as K
    c, h, ow, ks, (r, s), st, pad, dil = case
    if dt == np.float64:
        ow //= 2                        # rows of at most a vector
    wd = (ow - 1) * st[1] + (s - 1) * dil[1] + 1 - pad[2] - pad[3]
    rng = np.random.default_rng(c + h)
    x = rng.standard_normal((2, c, h, wd)).astype(dt)
    x[0, 0, 0, :3] = (np.nan, np.inf, -0.0)
    x[1, -1, -1, -2:] = (-np.inf, -0.0)
    x[1, 1] = -0.0
    for k in ks:
        w = rng.standard_normal((k, c, r, s)).astype(dt)
        b = rng.standard_normal(k).astype(dt)
        args = (st, pad, dil)
        assert K._conv_forward_path(x.shape, w.shape, *args, dt) == "direct"
        for inf_weight in (False, True):
            if inf_weight:
                w[-1, c // 2, r - 1, 0] = np.inf
            lowered = K.conv2d_forward(x, w, b, *args, True, direct=False)
            for threads in (1, 2):
                with helpers.num_threads(threads):
                    direct = K.conv2d_forward(x, w, b, *args, True)
                assert direct.tobytes() == lowered.tobytes()
        # products that underflow to -0 (no bias, or a -0 one, no ReLU):
        # a padding zero times a weight with its sign bit clear turns a
        # -0 sum into +0, and the skipped taps must do the same
        tiny = np.float32(1e-30) if dt == np.float32 else 1e-200
        xt = np.full(x.shape, tiny, dt)
        zeros = 0
        for pattern in range(3):
            wt = np.where(rng.random((k, c, r, s)) < 0.5, -tiny, tiny)
            if pattern == 1:        # negative but for the last kernel row
                wt[:] = -tiny
                wt[:, :, -1] = 1.0
            elif pattern == 2:      # negative but for the first
                wt[:] = -tiny
                wt[:, :, 0] = 1.0
            wt = wt.astype(dt)
            for bias in (None, np.full(k, -0.0, dt)):
                lowered = K.conv2d_forward(xt, wt, bias, *args,
                                           direct=False)
                direct = K.conv2d_forward(xt, wt, bias, *args)
                zeros += np.count_nonzero(lowered == 0)
                assert direct.tobytes() == lowered.tobytes()
        assert zeros > 0


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("k", [3, 6, 16])
@pytest.mark.parametrize("h", [16, 15])
def test_direct_rows_narrower_than_a_vector_two_per_tile(dt, k, h):
    # Output rows of at most a vector (14 wide; 7 in float64) with at most
    # half a tile of filters (3, 6, and 16 = 12 + 4) take two rows per
    # tile: the bits of the im2col path, bias and ReLU included, for an
    # even and an odd number of rows
    from cnnkit import _kernels as K
    rng = np.random.default_rng(k + h)
    w_in = 16 if dt == np.float32 else 9
    x = rng.standard_normal((3, 5, h, w_in)).astype(dt)
    w = rng.standard_normal((k, 5, 3, 3)).astype(dt)
    b = rng.standard_normal(k).astype(dt)
    args = ((1, 1), (0, 0, 0, 0), (1, 1))
    for relu in (False, True):
        direct = K.conv2d_forward(x, w, b, *args, relu)
        lowered = K.conv2d_forward(x, w, b, *args, relu, direct=False)
        assert direct.tobytes() == lowered.tobytes()
    assert K._conv_forward_path(x.shape, w.shape, *args, dt) == "direct"
