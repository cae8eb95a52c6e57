"""Winograd's F(2x2, 3x3) forward convolution (src/winograd.c), taken only
when asked (``winograd=True``): its error against the float64 direct sum,
its determinism, and the cases it hands to direct sums."""
import numpy as np
import pytest

from cnnkit import _kernels as K
from cnnkit import reference as R

from helpers import num_threads

SHAPES = [  # (n, c, h, w, k, pad)
    (1, 1, 3, 3, 1, 0),          # one tile, one output
    (1, 3, 1, 1, 5, 1),          # 1x1 output from padding alone
    (2, 16, 8, 8, 16, 1),
    (3, 17, 9, 7, 19, 1),        # odd planes: a partial last tile
    (2, 5, 6, 11, 3, 0),
    (2, 4, 7, 7, 6, 2),          # padding 2: a 9x9 output
    (1, 16, 32, 32, 16, 1),
    (4, 64, 8, 8, 64, 1),
    (1, 8, 13, 2, 4, 1),         # narrower than a tile
]


def _data(shape, dtype, seed=0):
    n, c, h, w, k, _ = shape
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c, h, w)).astype(dtype),
            rng.standard_normal((k, c, 3, 3)).astype(dtype),
            rng.standard_normal(k).astype(dtype))


def _conv(x, w, b, pad, **kw):
    return K.conv2d_forward(x, w, b, (1, 1), (pad,) * 4, (1, 1), **kw)


def _scale(x, w, b):
    """Per filter: max|x| * sum|w_k| + |b_k|, the size of the terms each
    output sums; broadcast over (n, k, oh, ow)."""
    s = np.abs(x).max() * np.abs(w).sum(axis=(1, 2, 3)) + np.abs(b)
    return s[None, :, None, None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_error_bound_against_the_exact_sum(shape, dtype):
    """|y - y_exact| <= 4 eps (max|x| sum|w_k| + |b_k|), eps of the dtype;
    y_exact is the float64 reference (exact to float64 rounding)."""
    x, w, b = _data(shape, dtype)
    pad = shape[-1]
    y = _conv(x, w, b, pad, winograd=True)
    exact = R.conv2d(x.astype(np.float64), w.astype(np.float64),
                             b.astype(np.float64), 1, pad)
    assert y.dtype == dtype and y.shape == exact.shape
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y - exact) <= 4 * eps * _scale(x, w, b))
    # not the direct path's bits: the path was taken
    assert K._conv_forward_path(x.shape, w.shape, (1, 1), (pad,) * 4,
                                (1, 1), dtype, winograd=True) == "winograd"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_and_relu_in_the_epilogue(dtype):
    x, w, b = _data((3, 17, 9, 7, 19, 1), dtype)
    y = _conv(x, w, b, 1, winograd=True)
    assert np.array_equal(_conv(x, w, b, 1, relu=True, winograd=True),
                          K.relu_forward(y))
    plain = _conv(x, w, None, 1, winograd=True)
    assert np.array_equal(y, plain + b[None, :, None, None])


def test_bits_do_not_depend_on_threads_or_the_batch():
    x, w, b = _data((7, 16, 10, 10, 24, 1), np.float32, seed=3)
    want = _conv(x, w, b, 1, winograd=True)
    for t in (1, 2, 3):
        with num_threads(t):
            assert np.array_equal(_conv(x, w, b, 1, winograd=True), want)
            for i in (0, 3, 6):
                assert np.array_equal(
                    _conv(x[i:i + 1], w, b, 1, winograd=True)[0], want[i])
            assert np.array_equal(_conv(x[2:5], w, b, 1, winograd=True),
                                  want[2:5])


def test_inputs_that_are_not_finite_are_summed_directly():
    """A patch with an infinity or NaN would spread NaN through the
    transforms: its tile row is summed directly, with the direct path's
    infinities and NaNs; the other tile rows keep Winograd's results."""
    x, w, b = _data((2, 6, 9, 9, 4, 1), np.float64)
    x[0, 2, 4, 4] = np.inf
    x[1, 0, 0, 8] = np.nan
    x[1, 3, 7, 1] = 1e300                        # finite, beyond the limit
    y = _conv(x, w, b, 1, winograd=True)
    direct = _conv(x, w, b, 1, winograd=False)
    assert np.array_equal(np.isnan(y), np.isnan(direct))
    assert np.array_equal(np.isinf(y), np.isinf(direct))
    fin = np.isfinite(direct)
    assert np.allclose(y[fin], direct[fin], rtol=1e-12, atol=1e-12)
    # the untouched image 0 rows far from the infinity are Winograd's
    clean = x.copy()
    clean[0, 2, 4, 4] = 0
    assert np.array_equal(y[0, :, :2], _conv(clean, w, b, 1,
                                             winograd=True)[0, :, :2])


def test_filters_it_cannot_take_go_to_the_direct_path():
    x, w, b = _data((2, 4, 6, 6, 3, 1), np.float32)
    w[1, 2, 0, 0] = np.inf
    got = _conv(x, w, b, 1, winograd=True)
    assert np.isinf(got).any()
    assert np.array_equal(got, _conv(x, w, b, 1, winograd=False),
                          equal_nan=True)


@pytest.mark.parametrize("kw", [dict(stride=(2, 2)), dict(dilation=(2, 2)),
                                dict(groups=2), dict(ks=5), dict(ks=1)])
def test_only_3x3_stride_1_convolutions(kw):
    ks = kw.pop("ks", 3)
    groups = kw.get("groups", 1)
    path = K._conv_forward_path((2, 4, 12, 12), (6, 4 // groups, ks, ks),
                                kw.get("stride", (1, 1)), (1, 1, 1, 1),
                                kw.get("dilation", (1, 1)), np.float32,
                                groups=groups, winograd=True)
    assert path in ("direct", "im2col")


def test_not_taken_unless_asked():
    for shape in SHAPES:
        n, c, h, w, k, pad = shape
        assert K._conv_forward_path((n, c, h, w), (k, c, 3, 3), (1, 1),
                                    (pad,) * 4, (1, 1),
                                    np.float32) != "winograd"
