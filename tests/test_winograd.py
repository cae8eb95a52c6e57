"""Winograd's F(2x2, 3x3) and F(4x4, 3x3) forward convolutions
(src/winograd.c, src/winograd_engine.h), taken only when asked
(``winograd=2`` or ``4``): their error against the float64 direct sum,
their determinism, and the cases they hand to direct sums; and
``Conv2D(winograd=True)``, whose forward pass and input gradient they
compute in training."""
import numpy as np
import pytest

import cnnkit
from cnnkit import _kernels as K
from cnnkit import layers as L
from cnnkit import models, optim
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


TILES = [2, 4]
#: the error bound, in units of eps * (max|x| sum|w_k| + |b_k|): F(4x4)'s
#: transforms have larger coefficients (and G's sixths round)
BOUND = {2: 4, 4: 8}


def _scale(x, w, b):
    """Per filter: max|x| * sum|w_k| + |b_k|, the size of the terms each
    output sums; broadcast over (n, k, oh, ow)."""
    s = np.abs(x).max() * np.abs(w).sum(axis=(1, 2, 3)) + np.abs(b)
    return s[None, :, None, None]


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(40, 3, 6, 6, 4, 1)])
def test_error_bound_against_the_exact_sum(shape, dtype, tile):
    """|y - y_exact| <= B eps (max|x| sum|w_k| + |b_k|), eps of the dtype,
    B 4 for F(2x2, 3x3) and 8 for F(4x4, 3x3); y_exact is the float64
    reference (exact to float64 rounding).  Measured: up to 0.4 and 4.6."""
    x, w, b = _data(shape, dtype)
    pad = shape[-1]
    y = _conv(x, w, b, pad, winograd=tile)
    exact = R.conv2d(x.astype(np.float64), w.astype(np.float64),
                             b.astype(np.float64), 1, pad)
    assert y.dtype == dtype and y.shape == exact.shape
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y - exact) <= BOUND[tile] * eps * _scale(x, w, b))
    assert K._conv_forward_path(x.shape, w.shape, (1, 1), (pad,) * 4,
                                (1, 1), dtype, winograd=tile) == "winograd"


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [19, 32])         # 32: the blocks route
def test_bias_and_relu_in_the_epilogue(k, dtype, tile):
    x, w, b = _data((3, 17, 9, 7, k, 1), dtype)
    y = _conv(x, w, b, 1, winograd=tile)
    assert np.array_equal(_conv(x, w, b, 1, relu=True, winograd=tile),
                          K.relu_forward(y))
    plain = _conv(x, w, None, 1, winograd=tile)
    assert np.array_equal(y, plain + b[None, :, None, None])


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 16, 10, 10, 24, 1),
                                   (7, 24, 11, 9, 32, 1)])  # blocks route
def test_bits_do_not_depend_on_threads_or_the_batch(shape, dtype, tile):
    x, w, b = _data(shape, dtype, seed=3)
    want = _conv(x, w, b, 1, winograd=tile)
    if shape[4] == 32:
        assert _blocks(x, w, (1,) * 4, tile) == _has_blocks(dtype)
    for t in (1, 2, 3):
        with num_threads(t):
            assert np.array_equal(_conv(x, w, b, 1, winograd=tile), want)
            for i in (0, 3, 6):
                assert np.array_equal(
                    _conv(x[i:i + 1], w, b, 1, winograd=tile)[0], want[i])
            assert np.array_equal(_conv(x[2:5], w, b, 1, winograd=tile),
                                  want[2:5])


@pytest.mark.parametrize("tile", TILES)
def test_inputs_that_are_not_finite_are_summed_directly(tile):
    """A patch with an infinity or NaN would spread NaN through the
    transforms: its tile row is summed directly, with the direct path's
    infinities and NaNs; the other tile rows keep Winograd's results."""
    x, w, b = _data((2, 6, 9, 9, 4, 1), np.float64)
    x[0, 2, 8, 4] = np.inf
    x[1, 0, 0, 8] = np.nan
    x[1, 3, 7, 1] = 1e300                        # finite, beyond the limit
    y = _conv(x, w, b, 1, winograd=tile)
    direct = _conv(x, w, b, 1, winograd=False)
    assert np.array_equal(np.isnan(y), np.isnan(direct))
    assert np.array_equal(np.isinf(y), np.isinf(direct))
    fin = np.isfinite(direct)
    assert np.allclose(y[fin], direct[fin], rtol=1e-12, atol=1e-12)
    # image 0's first tile row, far from the infinity, is Winograd's
    clean = x.copy()
    clean[0, 2, 8, 4] = 0
    assert np.array_equal(y[0, :, :tile],
                          _conv(clean, w, b, 1, winograd=tile)[0, :, :tile])


def test_a_bad_row_past_a_blocks_31st_is_found():
    """A block of many tile rows (1-channel 4x4 planes: 42 rows of F(2x2)
    tiles, 21 images, per block) marks its rows from the 32nd on together
    and checks each again: only the row whose patches hold the infinity
    (image 16's second tile row, the block's 34th) is summed directly."""
    x, w, b = _data((24, 1, 4, 4, 2, 1), np.float64, seed=5)
    x[16, 0, 3, 1] = np.inf
    y = _conv(x, w, b, 1, winograd=2)
    clean = x.copy()
    clean[16, 0, 3, 1] = 0
    want = _conv(clean, w, b, 1, winograd=2)
    others = np.arange(24) != 16
    assert np.array_equal(y[others], want[others])
    assert np.array_equal(y[16, :, :2], want[16, :, :2])
    direct = _conv(x[16:17], w, b, 1, winograd=False)[0]
    assert np.array_equal(y[16, :, 2:], direct[:, 2:], equal_nan=True)


@pytest.mark.parametrize("tile", TILES)
def test_filters_it_cannot_take_go_to_the_direct_path(tile):
    x, w, b = _data((2, 4, 6, 6, 3, 1), np.float32)
    w[1, 2, 0, 0] = np.inf
    got = _conv(x, w, b, 1, winograd=tile)
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


# ---- the route through channel blocks (winograd_engine.h) -----------------
# Filters a whole number of vectors take it on the SIMD paths; the output's
# sides are rounded up to whole tiles, so odd planes and asymmetric padding
# read the blocked input's wider border.
BLOCK_SHAPES = [  # (n, c, h, w, k, (top, bottom, left, right))
    (2, 16, 8, 8, 16, (1, 1, 1, 1)),
    (3, 17, 9, 7, 32, (1, 1, 1, 1)),        # partial tiles, a partial block
    (2, 5, 6, 11, 16, (0, 0, 0, 0)),
    (2, 4, 7, 7, 16, (2, 2, 2, 2)),         # a 9x9 output
    (1, 8, 13, 2, 16, (1, 1, 1, 1)),        # narrower than a tile
    (1, 3, 1, 1, 16, (1, 1, 1, 1)),         # a 1x1 output
    (2, 20, 7, 7, 48, (1, 0, 2, 1)),        # asymmetric padding
    (3, 33, 5, 9, 16, (0, 2, 1, 0)),
    (2, 64, 14, 14, 64, (1, 1, 1, 1)),
    (1, 24, 19, 23, 32, (1, 1, 1, 1)),      # rows past a transposed block
]


def _blocks(x, w, pad, tile):
    return K._winograd_blocks(x.shape, w.shape, pad, x.dtype, tile)


def _has_blocks(dtype):
    return K._blocked_lanes(dtype) > 0


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BLOCK_SHAPES)
def test_blocks_route_error_bound(shape, dtype, tile):
    """The same bound as the other route's, against the float64 sum over
    the explicitly padded input."""
    n, c, h, w_, k, pad = shape
    x, w, b = _data((n, c, h, w_, k, 0), dtype)
    y = K.conv2d_forward(x, w, b, (1, 1), pad, (1, 1), winograd=tile)
    xp = np.pad(x.astype(np.float64),
                ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    exact = R.conv2d(xp, w.astype(np.float64), b.astype(np.float64), 1, 0)
    assert y.dtype == dtype and y.shape == exact.shape
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y - exact) <= BOUND[tile] * eps * _scale(x, w, b))
    assert _blocks(x, w, pad, tile) == _has_blocks(dtype)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_route_sums_tile_rows_that_are_not_finite_directly(dtype,
                                                                  tile):
    """Rows holding an infinity, a NaN or a value beyond 1e30 send the tile
    rows whose patches read them to direct sums, those alone: the other
    rows keep the bits of the same images without them."""
    x, w, b = _data((3, 20, 13, 10, 16, 1), dtype, seed=7)
    clean = x.copy()
    x[0, 2, 12, 4] = np.inf          # the last row: the last tile row
    x[1, 19, 0, 9] = np.nan          # the last channel of a partial block
    x[2, 3, 6, 1] = -1e31 if dtype == np.float32 else -1e300
    assert _blocks(x, w, (1,) * 4, tile) == _has_blocks(dtype)
    y = _conv(x, w, b, 1, winograd=tile)
    want = _conv(clean, w, b, 1, winograd=tile)
    direct = _conv(x, w, b, 1, winograd=False)
    assert np.array_equal(np.isnan(y), np.isnan(direct))
    assert np.array_equal(np.isinf(y), np.isinf(direct))
    fin = np.isfinite(direct)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert np.allclose(y[fin], direct[fin], rtol=tol, atol=tol)
    # output rows whose tile rows read none of the marked input rows
    for img, row in ((0, 12), (1, 0), (2, 6)):
        far = [i for i in range(13)
               if not any(tile * (i // tile) - 1 <= r
                          <= tile * (i // tile) + tile
                          for r in (row,))]
        assert far
        assert np.array_equal(y[img][:, far], want[img][:, far])


# ---- Conv2D(winograd=True) ------------------------------------------------

def _twins(dtype, shape=(16, 9, 10), filters=32, padding=1, use_bias=True):
    """The same one-layer model with and without winograd."""
    return [cnnkit.Sequential(
        [L.Conv2D(filters, 3, padding=padding, use_bias=use_bias,
                  winograd=wino)], input_shape=shape, seed=1, dtype=dtype)
        for wino in (True, False)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding", [1, 0, 2, (1, 2)])
def test_layer_forward_and_input_gradient_within_the_bound(dtype, padding):
    """Forward and input gradient within 8 eps of their scale of the
    float64 reference; the weight and bias gradients are the direct
    layer's bits."""
    wino, direct = _twins(dtype, padding=padding)
    conv = wino.layers[0]
    shape = (16, 9, 10)
    want = (4, 4, 0) if _has_blocks(dtype) else (0, 0, 0)
    assert conv._op.winograd_tiles(shape, (32, 16, 3, 3), dtype) == want
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3,) + shape).astype(dtype)
    y = wino.forward(x, training=True)
    assert np.array_equal(direct.forward(x, training=True).shape, y.shape)
    w = conv.params["weight"].astype(np.float64)
    b = conv.params["bias"].astype(np.float64)
    pad = padding if isinstance(padding, tuple) else (padding, padding)
    exact = R.conv2d(x.astype(np.float64), w, b, 1, pad)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y - exact) <= 8 * eps * _scale(x, w, b))
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = wino.backward(g)
    gx_direct = direct.backward(g)
    ex, egw, egb = R.conv2d_backward(g.astype(np.float64),
                                     x.astype(np.float64), w, 1, pad)
    # each input gradient sums g over filters and taps: its scale
    gscale = (np.abs(g).max() * np.abs(w).sum(axis=(0, 2, 3))
              )[None, :, None, None]
    assert gx.dtype == np.dtype(dtype)
    assert np.all(np.abs(gx - ex) <= 8 * eps * gscale)
    if want[1]:
        assert not np.array_equal(gx, gx_direct)
    for k in ("weight", "bias"):
        assert np.array_equal(conv.grads[k], direct.layers[0].grads[k])


def test_layer_keeps_direct_sums_where_winograd_does_not_pay():
    """Fewer than 16 input channels forward, or fewer than 16 filters
    backward: the direct sums, bit for bit."""
    for shape, filters in (((8, 9, 10), 32), ((16, 9, 10), 8)):
        wino, direct = _twins("float32", shape=shape, filters=filters)
        tiles = wino.layers[0]._op.winograd_tiles(
            shape, (filters, shape[0], 3, 3), "float32")
        assert tiles[0] == 0 if shape[0] < 16 else tiles[1] == 0
        assert tiles[2] == 0
        x = np.random.default_rng(0).standard_normal((2,) + shape)
        x = x.astype(np.float32)
        y = wino.forward(x, training=True)
        yd = direct.forward(x, training=True)
        if tiles[0] == 0:
            assert np.array_equal(y, yd)
        g = np.ones_like(y)
        gx, gxd = wino.backward(g), direct.backward(g)
        if tiles[1] == 0:
            assert np.array_equal(gx, gxd)


def _weight_scale(g, x):
    """Per (filter, channel): max|x| * sum|g_k|, the size of the terms each
    weight gradient sums; broadcast over (k, c, 3, 3)."""
    return (np.abs(x).max() * np.abs(g).sum(axis=(0, 2, 3)))[
        :, None, None, None]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding", [1, 0, 2, (1, 2)])
def test_layer_weight_gradient_within_the_bound(dtype, padding):
    """32 channels and filters: the weight gradient by F(4x4, 3x3) too,
    within 8 eps (max|x| sum|g_k|) of the float64 reference (measured: up
    to 1.8); the bias gradient, each run's float64 sum rounded once, then
    the runs added, within 4 eps sum|g_k|."""
    shape = (32, 17, 19)
    wino, direct = _twins(dtype, shape=shape, padding=padding)
    conv = wino.layers[0]
    want = (4, 4, 4) if _has_blocks(dtype) else (0, 0, 0)
    assert conv._op.winograd_tiles(shape, (32, 32, 3, 3), dtype) == want
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8,) + shape).astype(dtype)
    y = wino.forward(x, training=True)
    direct.forward(x, training=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    wino.backward(g)
    direct.backward(g)
    w = conv.params["weight"].astype(np.float64)
    pad = padding if isinstance(padding, tuple) else (padding, padding)
    _, egw, egb = R.conv2d_backward(g.astype(np.float64),
                                    x.astype(np.float64), w, 1, pad)
    gw = conv.grads["weight"]
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(gw - egw) <= 8 * eps * _weight_scale(g, x))
    if want[2]:
        assert not np.array_equal(gw, direct.layers[0].grads["weight"])
    # the batch's runs each rounded once, then added
    assert np.all(np.abs(conv.grads["bias"] - egb) <=
                  4 * eps * np.abs(g).sum(axis=(0, 2, 3)))


def _op_parts(x, g, w, bounds, wino):
    from cnnkit._ops import Conv2DOp
    op = Conv2DOp((1, 1), (1, 1, 1, 1), (1, 1), 1, winograd=wino)
    gw = np.full((len(bounds) - 1,) + w.shape, 7.0, w.dtype)
    gb = np.full((len(bounds) - 1, w.shape[0]), 7.0, w.dtype)
    gx = op.backward_parts(g, x, w, bounds, gw, gb)
    return gx, gw, gb


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_runs_too_small_or_not_finite_take_direct_sums(
        dtype):
    """Runs of fewer than 64 tiles, and runs whose x or gradient holds a
    value not finite or beyond 1e30, get the direct sums' bits; empty runs
    are not written; the others take F(4x4, 3x3), and every run's bias
    gradient is the direct path's."""
    from cnnkit._ops import WINOGRAD_WEIGHT_MIN_TILES
    assert WINOGRAD_WEIGHT_MIN_TILES == 64
    rng = np.random.default_rng(5)
    x = rng.standard_normal((21, 32, 16, 16)).astype(dtype)   # 16 tiles
    w = rng.standard_normal((32, 32, 3, 3)).astype(dtype)
    g = rng.standard_normal((21, 32, 16, 16)).astype(dtype)
    x[20, 3, 5, 5] = np.inf                       # the last run
    bounds = [0, 3, 7, 7, 15, 21]                 # 48, 64, 0, 128, 96 tiles
    gx, gw, gb = _op_parts(x, g, w, bounds, True)
    dgx, dgw, dgb = _op_parts(x, g, w, bounds, False)
    assert np.array_equal(gw[2], np.full(w.shape, 7.0)), "empty: not written"
    assert np.array_equal(gb[2], np.full(w.shape[0], 7.0))
    with pytest.raises(ValueError, match="gb_parts must be"):
        K._conv_winograd_weight_parts(
            g, x, w, (1, 1, 1, 1), bounds, gw, 1, gb[:, :-1])
    direct_runs = [0, 4] if _has_blocks(dtype) else [0, 1, 3, 4]
    for q in direct_runs:
        assert np.array_equal(gw[q], dgw[q], equal_nan=True)
        assert np.array_equal(gb[q], dgb[q])
    eps = np.finfo(dtype).eps
    for q in (1, 3):
        a, b = bounds[q], bounds[q + 1]
        exact = R.conv2d_backward(g[a:b].astype(np.float64),
                                  x[a:b].astype(np.float64),
                                  w.astype(np.float64), 1, 1)
        assert np.all(np.abs(gw[q] - exact[1]) <=
                      8 * eps * _weight_scale(g[a:b], x[a:b]))
        if _has_blocks(dtype):
            assert not np.array_equal(gw[q], dgw[q])
        assert np.array_equal(gb[q], dgb[q])   # the direct path's sums
    assert np.all(np.isfinite(gx[:20])) and gx.shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_input_gradient_beside_winograd_weight_gradient(dtype):
    """Padding 3 leaves the input gradient to the direct sums (its padding
    2 - p would be negative) while the weight gradient takes F(4x4, 3x3):
    the input gradient is then the direct path's, bit for bit, from
    backward and backward_parts alike."""
    from cnnkit._ops import Conv2DOp
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 32, 12, 12)).astype(dtype)
    w = rng.standard_normal((32, 32, 3, 3)).astype(dtype)
    g = rng.standard_normal((8, 32, 16, 16)).astype(dtype)
    op = Conv2DOp((1, 1), (3,) * 4, (1, 1), 1, winograd=True)
    direct = Conv2DOp((1, 1), (3,) * 4, (1, 1), 1)
    if _has_blocks(dtype):
        assert op.winograd_tiles(x.shape[1:], w.shape, dtype) == (4, 0, 4)
    gx, gw, gb = op.backward(g, x, w)
    dgx, dgw, dgb = direct.backward(g, x, w)
    assert np.array_equal(gx, dgx)
    _, egw, egb = R.conv2d_backward(g.astype(np.float64),
                                    x.astype(np.float64),
                                    w.astype(np.float64), 1, 3)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(gw - egw) <= 8 * eps * _weight_scale(g, x))
    # the runs' bias sums, added
    assert np.all(np.abs(gb - egb) <= 4 * eps * np.abs(g).sum(axis=(0, 2, 3)))
    parts = np.empty((2,) + w.shape, dtype)
    gx_out = np.full(x.shape, 7.0, dtype)
    assert op.backward_parts(g, x, w, [0, 4, 8], parts, None,
                             gx=gx_out) is gx_out
    assert np.array_equal(gx_out, dgx)
    # the kernel behind it: conv2d_backward's input gradient alone
    alone = K._conv2d_input_grad(g, x, w, (1, 1), (3,) * 4, (1, 1))
    assert np.array_equal(alone, dgx)


def _wide_fit(threads, winograd):
    from helpers import num_threads
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 32, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    with num_threads(threads):
        net = cnnkit.Sequential(
            [L.Conv2D(32, 3, padding=1, winograd=winograd), L.ReLU(),
             L.Conv2D(32, 3, padding=1, winograd=winograd), L.ReLU(),
             L.GlobalAvgPool2D(), L.Flatten(), L.Dense(3)],
            input_shape=(32, 12, 12), seed=2)
        net.fit(x, y, epochs=1, batch_size=64, optimizer=optim.SGD(0.01),
                verbose=0, shuffle=False)
    return net.flat_params.copy()


def test_training_with_winograd_weight_gradients_keeps_its_bits():
    """Shards of 8 images of 9 tiles each take the weight gradient by
    F(4x4, 3x3) where the shard has 64 tiles or more; 1, 2 and 3 threads
    give the same bits."""
    want = _wide_fit(1, True)
    for t in (2, 3):
        assert want.tobytes() == _wide_fit(t, True).tobytes()
    direct = _wide_fit(1, False)
    if _has_blocks(np.float32):
        assert want.tobytes() != direct.tobytes()
    assert np.allclose(want, direct, rtol=1e-3, atol=1e-4)


def test_layer_arguments():
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="winograd must be a bool"):
            L.Conv2D(16, 3, winograd=bad)
    for kw in (dict(kernel_size=5), dict(kernel_size=3, stride=2),
               dict(kernel_size=3, dilation=2),
               dict(kernel_size=3, groups=2), dict(kernel_size=(3, 1))):
        with pytest.raises(ValueError, match="winograd=True needs a 3x3"):
            L.Conv2D(16, winograd=True, **kw)
    assert L.Conv2D(16, 3, winograd=np.bool_(True)).winograd is True
    assert "winograd" not in L.Conv2D(16, 3).get_config()
    assert L.Conv2D(16, 3, winograd=True).get_config()["winograd"] is True


def _resnet_fit(threads, winograd, batch_size=32):
    from helpers import num_threads
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    with num_threads(threads):
        net = models.resnet(8, 4, (3, 8, 8), seed=0, winograd=winograd)
        net.fit(x, y, epochs=2, batch_size=batch_size,
                optimizer=optim.Adam(1e-3), verbose=0, shuffle=False)
    return net.flat_params.copy()


def test_training_bits_do_not_depend_on_the_threads():
    want = _resnet_fit(1, True)
    for t in (2, 3):
        assert want.tobytes() == _resnet_fit(t, True).tobytes()
    # Winograd's rounding: close to the direct sums' training, not equal
    direct = _resnet_fit(1, False)
    assert (want.tobytes() != direct.tobytes()) == _has_blocks(np.float32)
    assert np.allclose(want, direct, rtol=1e-2, atol=1e-3)


def test_resnet_takes_winograd_on_its_3x3_convolutions_of_stride_1():
    net = models.resnet(8, 4, (3, 16, 16), seed=0, winograd=True)
    convs = [lay for lay in net.layers if type(lay) is L.Conv2D]
    for conv in convs:
        assert conv.winograd == (conv.kernel_size == (3, 3) and
                                 conv.stride == (1, 1))
    assert sum(c.winograd for c in convs) == 5      # stem, 2 + 1 + 1
    with pytest.raises(TypeError, match="winograd must be a bool"):
        models.resnet(8, winograd="yes")
