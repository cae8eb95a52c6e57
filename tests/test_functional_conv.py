"""cnnkit.functional.conv2d and conv2d_backward against cnnkit.reference."""
import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import reference as ref

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


def _inputs(rng, dtype, N, C, H, W, K, R, S):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("N,C,H,W,K,R,S,stride,padding,dilation", CONV_CASES)
def test_conv2d_matches_reference(rng, dtype, assert_close, with_bias,
                                  N, C, H, W, K, R, S, stride, padding,
                                  dilation):
    x, w, b = _inputs(rng, dtype, N, C, H, W, K, R, S)
    b = b if with_bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    y = F.conv2d(x, w, b, **kw)
    expected = ref.conv2d(*_f64(x, w, b), **kw)
    assert expected.shape[:2] == (N, K)
    assert_close(y, expected, dtype, n_terms=C * R * S + 1)
    assert y.flags.c_contiguous


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


@pytest.mark.parametrize("part", ["x", "weight", "bias", "grad_out"])
def test_conv2d_layouts(rng, dtype, assert_close, to_layout, layout, part):
    x, w, b = _inputs(rng, dtype, 3, 2, 6, 7, 4, 3, 2)
    kw = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))
    g = rng.standard_normal((3, 4, 4, 3)).astype(dtype)
    args = dict(x=x, weight=w, bias=b, grad_out=g)
    args[part] = to_layout(args[part], layout)
    x, w, b, g = args["x"], args["weight"], args["bias"], args["grad_out"]
    ex, ew, eb, eg = _f64(x, w, b, g)
    assert_close(F.conv2d(x, w, b, **kw), ref.conv2d(ex, ew, eb, **kw),
                 dtype, n_terms=13)
    got = F.conv2d_backward(g, x, w, **kw)
    want = ref.conv2d_backward(eg, ex, ew, **kw)
    for a, e, n in zip(got, want, (24, 36, 36)):
        assert_close(a, e, dtype, n_terms=n)


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


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("N,C,H,W,K,R,S,stride,padding,dilation", CONV_CASES)
def test_conv2d_backward_matches_reference(rng, dtype, assert_close,
                                           with_bias, N, C, H, W, K, R, S,
                                           stride, padding, dilation):
    x, w, _ = _inputs(rng, dtype, N, C, H, W, K, R, S)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    g = rng.standard_normal(ref.conv2d(x, w, **kw).shape).astype(dtype)
    gx, gw, gb = F.conv2d_backward(g, x, w, bias=with_bias, **kw)
    ex, ew, eb = ref.conv2d_backward(*_f64(g, x, w), **kw)
    pixels = g.shape[2] * g.shape[3]
    assert_close(gx, ex, dtype, n_terms=K * R * S)
    assert_close(gw, ew, dtype, n_terms=N * pixels)
    if with_bias:
        assert_close(gb, eb, dtype, n_terms=N * pixels)
    else:
        assert gb is None


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
def test_conv2d_backward_finite_differences(rng, numerical_gradient,
                                            assert_grad_close, N, C, H, W, K,
                                            R, S, stride, padding, dilation):
    x, w, b = _inputs(rng, np.float64, N, C, H, W, K, R, S)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    g = rng.standard_normal(F.conv2d(x, w, b, **kw).shape)
    gx, gw, gb = F.conv2d_backward(g, x, w, **kw)

    def loss(xx, ww, bb):
        return np.sum(F.conv2d(xx, ww, bb, **kw) * g)

    assert_grad_close(numerical_gradient(lambda a: loss(a, w, b), x), gx)
    assert_grad_close(numerical_gradient(lambda a: loss(x, a, b), w), gw)
    assert_grad_close(numerical_gradient(lambda a: loss(x, w, a), b), gb)


def test_conv2d_backward_overwrites_and_is_repeatable(rng):
    x, w, _ = _inputs(rng, np.float32, 2, 3, 6, 6, 4, 3, 3)
    g = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    first = F.conv2d_backward(g, x, w)
    second = F.conv2d_backward(g, x, w)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
