"""dense and dense_backward: cnnkit.functional against cnnkit.reference
(over dtypes, thread counts and memory layouts), finite differences, the
conventions (the 1-D forms, dtype promotion, empty batches and features,
NaN and Inf), the documented errors, every SIMD path of the GEMM engine,
and fuzzing."""

import numpy as np
import pytest
from hypothesis import strategies as st

from cnnkit import functional as F
from cnnkit import reference as ref

import fuzzing
from fuzzing import broadcast_ones as _bcast, zeros as _z
import helpers
from fuzzing import (FINITE, Case, arrays, bad_array, design_dtype, f64,
                     assert_result, fuzz_property)
from helpers import (LAYOUTS, OUT_ARRAY_FAULTS, SIMD_PATHS,
                     assert_same_specials, check_gradients, check_kernel_out,
                     check_op, each_argument, require, run_simd,
                     special_values)


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


# ==========================================================================
# against the reference
# ==========================================================================
# (N, F, O)
DENSE_CASES = [(1, 1, 1), (1, 4, 1), (5, 7, 3), (2, 1, 6), (17, 13, 100),
               (3, 300, 2), (40, 33, 17)]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("N,Fin,O", DENSE_CASES)
def test_dense_matches_reference(with_bias, N, Fin, O):
    shapes = [(N, Fin), (O, Fin)] + ([(O,)] if with_bias else [])
    check_op("dense", shapes)


# the 1-D forms of x and weight, in every layout
FORMS = [
    pytest.param([(3, 5), (2, 5), (2,)], id="2d"),
    pytest.param([(5,), (2, 5), (2,)], id="x-1d"),
    pytest.param([(3, 5), (5,), (1,)], id="weight-1d"),
    pytest.param([(3, 5), (5,), ()], id="weight-1d-scalar-bias"),
    pytest.param([(5,), (5,), ()], id="both-1d"),
    pytest.param([(5,), (5,), (1,)], id="both-1d-bias1"),
    pytest.param([(5,), (5,)], id="both-1d-nobias"),
]


@pytest.mark.parametrize("shapes", FORMS)
def test_dense_forms_in_every_layout(shapes):
    check_op("dense", shapes, layouts=LAYOUTS)


def test_dense_each_argument_in_every_layout():
    # x, weight, bias and grad_out in turn in each layout, the others
    # C-contiguous
    check_op("dense", [(6, 9), (4, 9), (4,)],
             layouts=each_argument(LAYOUTS, 4))


# sizes at which the kernels take their parallel paths
@pytest.mark.parametrize("shapes", [
    pytest.param([(300, 500), (70, 500), (70,)], id="batch"),
    pytest.param([(7, 300), (5000, 300)], id="wide"),
])
def test_dense_parallel_sizes_match_reference(shapes):
    check_op("dense", shapes, layouts=["C"])


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


def test_dense_backward_finite_differences():
    check_gradients("dense", [(4, 5), (3, 5), (3,)])


# ==========================================================================
# empty batches and features, the normalisation of the arguments, batches
# ==========================================================================
def test_dense_zero_size_batch_gives_empty_output(dtype):
    y = F.dense(np.zeros((0, 5), dtype), np.ones((2, 5), dtype),
                np.ones(2, dtype))
    assert y.shape == (0, 2) and y.dtype == dtype


def test_dense_empty_reductions_give_the_bias(dtype):
    b = np.array([1.5, -2.0, 0.25], dtype)
    y = F.dense(np.zeros((4, 0), dtype), np.zeros((3, 0), dtype), b)
    assert y.shape == (4, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.broadcast_to(b, (4, 3)))


def test_dense_zero_size_backward_gives_zero_parameter_gradients(dtype):
    gx, gw, gb = F.dense_backward(np.zeros((0, 2), dtype),
                                  np.zeros((0, 5), dtype),
                                  np.ones((2, 5), dtype))
    assert gx.shape == (0, 5)
    np.testing.assert_array_equal(gw, np.zeros((2, 5)))
    np.testing.assert_array_equal(gb, np.zeros(2))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_dense_plain_arguments_and_normalised_ones_give_the_same_bits(dt):
    # Batched arrays of one float dtype go straight to the kernels; other
    # array-likes (here memoryviews of the same data) are normalised first.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dt)
    xd, wd = x.reshape(2, -1), rng.standard_normal((5, 216)).astype(dt)
    bd = rng.standard_normal(5).astype(dt)
    assert F.dense(xd, wd, bd).tobytes() == \
        F.dense(memoryview(xd), wd, memoryview(bd)).tobytes()


@pytest.mark.parametrize("N", [2, 7, 300])
def test_dense_result_does_not_depend_on_batch(rng, dtype, N):
    x = rng.standard_normal((N, 500)).astype(dtype)
    w = rng.standard_normal((70, 500)).astype(dtype)
    b = rng.standard_normal(70).astype(dtype)
    y = F.dense(x, w, b)
    for i in sorted({0, N // 2, N - 1}):
        assert np.array_equal(F.dense(x[i:i + 1], w, b), y[i:i + 1])
        assert np.array_equal(F.dense(x[i], w, b), y[i])
    assert np.array_equal(F.dense(x[1:], w, b), y[1:])


# ==========================================================================
# cnnkit.reference
# ==========================================================================
def test_reference_dense_backward_finite_differences():
    check_gradients("dense", [(4, 5), (3, 5), (3,)], seed=14,
                    reference=True, eps=1e-4, atol=1e-8)
    rng = np.random.default_rng(14)
    x, w = rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    g = rng.standard_normal((4, 3))
    assert ref.dense_backward(g, x, w, bias=False)[2] is None


def test_reference_dense_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    fx = rng.standard_normal((3, 5))
    fw = rng.standard_normal((2, 5))
    fb = rng.standard_normal(2)
    fg = rng.standard_normal((3, 2))
    arrays = [fx, fw, fb, fg]
    copies = [a.copy() for a in arrays]
    out = ref.dense(fx, fw, fb)
    assert not np.shares_memory(out, fx)
    ref.dense_backward(fg, fx, fw)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# ==========================================================================
# documented errors
# ==========================================================================
FX = np.zeros((2, 3))
FW = np.zeros((4, 3))
FG = np.zeros((2, 4))

# (function, positional arguments, index of the argument made bad, its name)
ARRAY_ARGS = [
    (F.dense, (FX, FW), 0, "x"),
    (F.dense, (FX, FW), 1, "weight"),
    (F.dense, (FX, FW, np.zeros(4)), 2, "bias"),
    (F.dense_backward, (FG, FX, FW), 0, "grad_out"),
    (F.dense_backward, (FG, FX, FW), 1, "x"),
    (F.dense_backward, (FG, FX, FW), 2, "weight"),
]


test_bad_dtype_is_type_error_naming_argument_and_dtype = \
    helpers.bad_dtype_test(ARRAY_ARGS)


def test_ragged_x_is_type_error():
    with pytest.raises(TypeError, match=r"\bx\b"):
        F.dense([[1, 2], [3]], FW)


@pytest.mark.parametrize("fn", [F.dense, F.dense_backward])
@pytest.mark.parametrize("x,w,pattern", [
    (np.zeros((2, 5)), FW,
     r"x has 5 features \(shape \(2, 5\)\) but weight expects 3"),
    (np.zeros(5), FW, r"x has 5 features .*weight expects 3"),
    (FX, np.zeros(5), r"x has 3 features .*weight expects 5"),
    (np.zeros((2, 3, 1)), FW, r"\bx must be \(N, F\).*\(2, 3, 1\)"),
    (np.zeros(()), FW, r"\bx must be \(N, F\)"),
    (FX, np.zeros((4, 3, 1)), r"\bweight must be .*\(4, 3, 1\)"),
])
def test_dense_shape_errors(fn, x, w, pattern):
    with pytest.raises(ValueError, match=pattern):
        if fn is F.dense:
            fn(x, w)
        else:
            fn(FG, x, w)


@pytest.mark.parametrize("w,bias", [(FW, np.zeros(3)), (FW, np.zeros((4, 1))),
                                    (FW, np.zeros(())), (np.zeros(3),
                                                         np.zeros(2))])
def test_dense_bias_of_wrong_shape(w, bias):
    with pytest.raises(ValueError, match=r"bias must have shape \(\d,\)"):
        F.dense(FX, w, bias)


@pytest.mark.parametrize("g", [np.zeros((2, 3)), np.zeros((4, 2)),
                               np.zeros(4), np.zeros((2, 4, 1))])
def test_dense_backward_grad_out_of_wrong_shape(g):
    with pytest.raises(ValueError,
                       match=r"grad_out must have shape \(2, 4\)"):
        F.dense_backward(g, FX, FW)


@pytest.mark.parametrize("bias", [1, None, "no", np.array(False)])
def test_dense_backward_bias_flag_must_be_bool(bias):
    with pytest.raises(TypeError, match=r"bias must be True or False"):
        F.dense_backward(FG, FX, FW, bias=bias)


# The compiled kernels write into arrays the layers keep between training
# steps (``out=``); an unsuitable one is refused before any work.
@pytest.mark.parametrize("bad", OUT_ARRAY_FAULTS)
def test_kernel_out_arrays_are_checked(bad):
    from cnnkit import _kernels as K
    x = np.zeros((2, 3, 5, 5), np.float32)
    check_kernel_out("dense", "out", (2, 4),
                     lambda o: K.dense_forward(x.reshape(2, 75),
                                               np.zeros((4, 75), np.float32),
                                               None, o), bad)


# ==========================================================================
# NaN and Inf
# ==========================================================================
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_dense_nan_and_inf_propagate_as_in_pytorch(dt):
    torch = require("torch")
    rtol = 1e-4 if dt == np.float32 else 1e-10
    rng = np.random.default_rng(7)
    a = special_values(rng, (6, 20), dt)
    b = rng.standard_normal((5, 20)).astype(dt)
    assert_same_specials(F.dense(a, b), torch.nn.functional.linear(
        torch.from_numpy(a), torch.from_numpy(b)).numpy(), rtol, "dense")


def test_dense_inf_stays_in_its_row():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((6, 30))
    b = np.abs(rng.standard_normal((9, 30)))
    clean = F.dense(a, b)
    a[4, 3] = np.inf
    dirty = F.dense(a, b)
    assert np.all(np.isposinf(dirty[4]))
    assert np.delete(dirty, 4, 0).tobytes() == np.delete(clean, 4, 0).tobytes()


# ==========================================================================
# every SIMD path of the GEMM engine (each in a child with CNNKIT_SIMD set;
# only the paths this machine supports)
# ==========================================================================
DENSE_CHECKER = r'''

# dense (n, f, o): row tiles MR 6 / 12 and blocks MC 96 / 120, column
# strips NR 8 / 16 / 32 and panels NC 1024, slabs KC 256 / 512 (forward's inner
# size is f, grad-x's is o, grad-w's is n), batch 1
DENSE = [(1, 1, 1), (5, 7, 11), (13, 257, 33), (7, 300, 17), (121, 40, 9),
         (97, 513, 1025), (1, 1030, 3), (259, 20, 35), (11, 31, 63)]
extra["cases"] = len(DENSE)

for dt in (np.float32, np.float64):

    for n, f, o in DENSE:
        x = rng.standard_normal((n, f)).astype(dt)
        w = rng.standard_normal((o, f)).astype(dt)
        b = rng.standard_normal(o).astype(dt)
        g = rng.standard_normal((n, o)).astype(dt)
        x64, w64, b64, g64 = (a.astype(np.float64) for a in (x, w, b, g))
        tag = f"dense {np.dtype(dt).name} {(n, f, o)}"
        close(tag + " fwd", F.dense(x, w, b), R.dense(x64, w64, b64), dt, f)
        gx, gw, gb = F.dense_backward(g, x, w)
        rx, rw, rb = R.dense_backward(g64, x64, w64)
        close(tag + " gx", gx, rx, dt, o)
        close(tag + " gw", gw, rw, dt, n)
        close(tag + " gb", gb, rb, dt, n)
        # every element written: new gradients are not zeroed first, and a
        # kept one holding NaN from before ends with the same bits
        kept = [np.full(a.shape, np.nan, dt) for a in (gx, gw, gb)]
        cnnkit._kernels.dense_backward(g, x, w, True, True, *kept)
        for name, a, b in zip(("gx", "gw", "gb"), (gx, gw, gb), kept):
            if a.tobytes() != b.tobytes():
                variant.append(f"{tag} {name} into a kept array holding NaN "
                               f"differs")

# bit-identical for 1, 2 and 3 threads; a sample's result does not depend
# on its batch
for dt in (np.float32, np.float64):
    x = rng.standard_normal((203, 301)).astype(dt)
    w = rng.standard_normal((157, 301)).astype(dt)
    g = rng.standard_normal((203, 157)).astype(dt)
    runs = []
    for nt in (1, 2, 3):
        cnnkit.set_num_threads(nt)
        runs.append([F.dense(x, w), *F.dense_backward(g, x, w)])
    for i, ref in enumerate(runs[0]):
        for nt, other in zip((2, 3), runs[1:]):
            if ref.tobytes() != other[i].tobytes():
                variant.append(f"{np.dtype(dt).name} result {i}: "
                               f"{nt} threads differ from 1")
    for lo, hi in ((5, 18), (60, 188)):
        few = [None] * 3
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            few[nt - 1] = F.dense(x[lo:hi], w).tobytes()
        if few[1] != few[0] or few[2] != few[0]:
            variant.append(f"{np.dtype(dt).name} dense rows {lo}:{hi}: "
                           f"the threads change the bits")
    cnnkit.set_num_threads(2)
    full = F.dense(x, w)
    for lo, hi in ((0, 1), (5, 18), (100, 203), (60, 188)):
        if F.dense(x[lo:hi], w).tobytes() != full[lo:hi].tobytes():
            variant.append(f"{np.dtype(dt).name} dense rows {lo}:{hi} "
                           f"depend on the batch")
    # the input gradient of rows of a batch against the batch's, on 1-3
    # threads: one sample (its own path: rows of W scaled and added in
    # place; 3 slabs of KC, runs of columns past 1024 with a ragged end),
    # and 37 and 128 samples of a batch of 200 (600 > KC)
    for n, f, o, ranges in ((9, 1030, 1100, ((0, 1), (4, 5), (8, 9))),
                            (200, 600, 1000, ((3, 40), (50, 178)))):
        xs = rng.standard_normal((n, f)).astype(dt)
        ws = rng.standard_normal((o, f)).astype(dt)
        gs = rng.standard_normal((n, o)).astype(dt)
        gx_full = F.dense_backward(gs, xs, ws)[0]
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            for lo, hi in ranges:
                part = F.dense_backward(gs[lo:hi], xs[lo:hi], ws)[0]
                if part.tobytes() != gx_full[lo:hi].tobytes():
                    variant.append(f"{np.dtype(dt).name} dense grad-x rows "
                                   f"{lo}:{hi} of {(n, f, o)} ({nt} "
                                   f"threads) differ from their batch")
    cnnkit.set_num_threads(2)
    # the weight gradients of runs of samples added in the fixed tree
    # inside the kernel (gw_tree): the bits of each run's gradient and then
    # tree_sum; whole register tiles and the edges, an empty run, a run
    # deeper than a slab (1100 > KC)
    from cnnkit import _kernels as K
    for n, f, o, bounds in ((64, 70, 30, [0, 8, 16, 24, 32, 40, 48, 56, 64]),
                            (13, 37, 13, [1, 4, 4, 5, 13]),
                            (1200, 33, 9, [0, 100, 1200])):
        x5 = rng.standard_normal((n, f)).astype(dt)
        w5 = rng.standard_normal((o, f)).astype(dt)
        g5 = rng.standard_normal((n, o)).astype(dt)
        runs = len(bounds) - 1
        parts = np.zeros((runs, o, f), dt)
        K.dense_backward_parts(g5, x5, w5, bounds, parts, None, False)
        want = np.empty(o * f, dt)
        K.tree_sum([parts[q].ravel() if bounds[q + 1] > bounds[q] else None
                    for q in range(runs)], want)
        for nt in (1, 2):
            cnnkit.set_num_threads(nt)
            tree = np.full((o, f), np.nan, dt)
            K.dense_backward_parts(g5, x5, w5, bounds, None, None, False,
                                   None, tree)
            if tree.tobytes() != want.tobytes():
                variant.append(f"{np.dtype(dt).name} weight tree {(n, f, o)}"
                               f" on {nt} threads is not the parts' tree")
        cnnkit.set_num_threads(2)
    # one row's forward takes several strips at once (micro_row) from a
    # transposed panel packed in blocks: the bits of a row of a larger
    # batch, over several slabs and with a last strip and block that are
    # partial (inner 1100 > KC; 1 + 77 outputs)
    # batches of 8-128 rows take the weights' rows in place (gemm_arows):
    # 17 and 128 rows, their last block of weight rows partial, against
    # the packed path's 200
    x4 = rng.standard_normal((200, 1100)).astype(dt)
    w4 = rng.standard_normal((78, 1100)).astype(dt)
    b4 = rng.standard_normal(78).astype(dt)
    full4 = F.dense(x4, w4, b4)
    for lo, hi in ((0, 1), (1, 2), (7, 9), (29, 30), (3, 20), (40, 168)):
        if F.dense(x4[lo:hi], w4, b4).tobytes() != full4[lo:hi].tobytes():
            variant.append(f"{np.dtype(dt).name} dense rows {lo}:{hi} "
                           f"(inner 1100) depend on the batch")
    # one sample's weight gradient is an outer product (an inner size of
    # 1): each element the one rounding of its product, a zero +0 (the
    # micro-kernel's multiply-add onto +0), infinities and NaN where the
    # product has them; rows and columns off the tiles, on 1 and 2 threads
    for o, f in ((1, 1), (7, 5), (13, 37), (120, 400)):
        g1 = rng.standard_normal((1, o)).astype(dt)
        x1 = rng.standard_normal((1, f)).astype(dt)
        g1[0, ::3] = -0.0
        x1[0, 1::4] = 0.0
        if o > 5 and f > 5:
            g1[0, 5] = np.inf
            x1[0, 2] = np.nan
        w1 = np.zeros((o, f), dt)
        with np.errstate(invalid="ignore"):
            want1 = np.outer(g1[0], x1[0]) + dt(0)
        for nt in (1, 2):
            cnnkit.set_num_threads(nt)
            gw1 = F.dense_backward(g1, x1, w1)[1]
            if gw1.tobytes() != want1.tobytes():
                variant.append(f"{np.dtype(dt).name} weight gradient of "
                               f"one sample {(o, f)} on {nt} threads is "
                               f"not the outer product")
        cnnkit.set_num_threads(2)
    # products of few rows read B in place (no packed panel; up to 16
    # rows, and up to 64 where B is small): the input gradient of a few
    # samples and the weight gradient of a few outputs have the bits of
    # the same rows of a larger, packed product (100 rows), over one or
    # several slabs (inner size 300 and 600 > KC in float64, 1100 > KC in
    # float32), with B under and over the in-place bound at 64 rows, and
    # columns off the strip width
    for inner in (300, 600, 1100):
        # grad-x (n, 77) = g (n, inner) @ w (inner, 77)
        g2 = rng.standard_normal((100, inner)).astype(dt)
        w2 = rng.standard_normal((inner, 77)).astype(dt)
        x2 = rng.standard_normal((100, 77)).astype(dt)
        gx_all = F.dense_backward(g2, x2, w2)[0]
        # grad-w (o, 77) = g^T (o, inner samples) @ x (inner, 77)
        g3 = rng.standard_normal((inner, 100)).astype(dt)
        x3 = rng.standard_normal((inner, 77)).astype(dt)
        w3 = rng.standard_normal((100, 77)).astype(dt)
        gw_all = F.dense_backward(g3, x3, w3)[1]
        for lo, hi in ((0, 1), (3, 8), (28, 40), (30, 46), (30, 94),
                       (1, 66)):
            gx = F.dense_backward(g2[lo:hi], x2[lo:hi], w2)[0]
            if gx.tobytes() != gx_all[lo:hi].tobytes():
                variant.append(f"{np.dtype(dt).name} grad-x rows {lo}:{hi}"
                               f" (inner {inner}) depend on the batch")
            gw = F.dense_backward(g3[:, lo:hi], x3, w3[lo:hi])[1]
            if gw.tobytes() != gw_all[lo:hi].tobytes():
                variant.append(f"{np.dtype(dt).name} grad-w rows {lo}:{hi}"
                               f" (inner {inner}) depend on the outputs")
    # up to 128 rows of a B past 2 MiB as it lies (FEW_PACKED_BYTES: the
    # input gradient of a wide dense layer) run as groups of columns over
    # the threads, each group packing its own panel row by row: the bits
    # of the same rows of a 200-row product (one shared panel per slab),
    # on 1-3 threads, over two slabs and a last, narrower strip
    g4 = rng.standard_normal((200, 1100)).astype(dt)
    w4 = rng.standard_normal((1100, 610)).astype(dt)
    x4 = rng.standard_normal((200, 610)).astype(dt)
    gx_all = F.dense_backward(g4, x4, w4)[0]
    for lo, hi in ((0, 1), (3, 8), (30, 94), (5, 37), (1, 129), (0, 128)):
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            gx = F.dense_backward(g4[lo:hi], x4[lo:hi], w4)[0]
            if gx.tobytes() != gx_all[lo:hi].tobytes():
                variant.append(f"{np.dtype(dt).name} grad-x rows {lo}:{hi}"
                               f" of a B past 2 MiB on {nt} threads depend"
                               f" on the batch")
    cnnkit.set_num_threads(2)
    # a weight gradient of more than 8 MiB written once (an inner size
    # of at most KC, a fresh output on a 64-byte line, rows whole lines
    # apart) goes out with streaming stores (gemm_stream): the bits of its
    # rows computed as a smaller product, and of the same product into an
    # output off a line
    g5 = rng.standard_normal((40, 1100)).astype(dt)
    x5 = rng.standard_normal((40, 2112)).astype(dt)
    w5 = np.zeros((1100, 2112), dt)
    gw5 = F.dense_backward(g5, x5, w5)[1]
    off = np.empty(gw5.size + 1, dt)[1:].reshape(gw5.shape)
    from cnnkit import _kernels
    _kernels.dense_backward(g5, x5, w5, gw_out=off)
    if off.tobytes() != gw5.tobytes():
        variant.append(f"{np.dtype(dt).name} a streamed weight gradient "
                       f"differs from the stored one")
    for lo, hi in ((0, 12), (13, 300), (1090, 1100)):
        part = F.dense_backward(g5[:, lo:hi], x5, w5[lo:hi])[1]
        if part.tobytes() != gw5[lo:hi].tobytes():
            variant.append(f"{np.dtype(dt).name} streamed weight gradient"
                           f" rows {lo}:{hi} differ")
'''


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_simd_path_dense_matches_reference(path):
    res = run_simd(path, DENSE_CHECKER)
    assert res["checked"] == 2 * 4 * res["cases"] > 50
    assert res["failures"] == []


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_simd_path_dense_bits_do_not_depend_on_threads_or_batch(path):
    assert run_simd(path, DENSE_CHECKER)["variant"] == []


# ==========================================================================
# fuzzing (see fuzzing.py)
# ==========================================================================
@st.composite
def dense_cases(draw, backward=False):
    x_nd, w_nd = draw(st.sampled_from([2, 2, 1])), draw(st.sampled_from(
        [2, 2, 1]))
    n, f, o = (draw(st.integers(0, 5)) for _ in range(3))
    if x_nd == 1:
        n = 1
    if w_nd == 1:
        o = 1
    xshape = (n, f) if x_nd == 2 else (f,)
    wshape = (o, f) if w_nd == 2 else (f,)
    out_shape = ((n,) if x_nd == 2 else ()) + ((o,) if w_nd == 2 else ())
    x = draw(arrays(xshape, kinds=FINITE))
    wt = draw(arrays(wshape, kinds=FINITE))
    bias = None
    if not backward and draw(st.booleans()):
        bias = draw(arrays((o,) if w_nd == 2 else
                           draw(st.sampled_from([(), (1,)]))))
    g = draw(arrays(out_shape, kinds=FINITE)) if backward else None
    bias_flag = draw(st.sampled_from([True, False, np.bool_(False)]))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 5 + [
        "features", "ndim", "dtype", "bias", "grad_shape", "flag", "none"]))
    if mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "features":
            wt = np.zeros(wshape[:-1] + (f + 1,))
        elif mutation == "ndim":
            x = np.zeros((1,) + xshape + (1,))
        elif mutation == "dtype":
            errors = (TypeError,)
            which = draw(st.integers(0, 2))
            if which == 0:
                x = bad_array(draw, xshape)
            elif which == 1:
                wt = bad_array(draw, wshape)
            elif backward:
                g = bad_array(draw, out_shape)
            else:
                bias = bad_array(draw, (o,))
        elif mutation == "bias" and not backward:
            bias = np.zeros((o + 1,))
        elif mutation == "grad_shape" and backward:
            g = np.zeros(out_shape + (1,))
        elif mutation == "flag" and backward:
            bias_flag, errors = draw(st.sampled_from([1, None, "no"])), \
                (TypeError,)
        elif mutation == "none":
            x, errors = None, (TypeError,)
        else:
            expect, errors, why = "ok", (), ""

    def oracle(result):
        xa, wa = np.asarray(x), np.asarray(wt)
        x2, w2 = xa.reshape(n, f), wa.reshape(o, f)
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(xa, wa, ga)
            g2 = f64(ga, dt).reshape(n, o)
            ex = ref.dense_backward(g2, f64(x2, dt), f64(w2, dt))
            eb = ref.dense_backward(abs(g2), abs(f64(x2, dt)), abs(f64(w2, dt)))
            gx, gw, gb = result
            assert_result(gx, ex[0].reshape(xa.shape), dt,
                          eb[0].reshape(xa.shape), o)
            assert_result(gw, ex[1].reshape(wa.shape), dt,
                          eb[1].reshape(wa.shape), n)
            if bias_flag:
                bshape = (o,) if w_nd == 2 else ()
                assert_result(gb, ex[2].reshape(bshape), dt,
                              eb[2].reshape(bshape), n)
            else:
                assert gb is None
            return
        ba = None if bias is None else np.asarray(bias)
        dt = design_dtype(xa, wa, ba)
        b1 = None if ba is None else f64(ba, dt).reshape(o)
        ey = ref.dense(f64(x2, dt), f64(w2, dt), b1)
        eb = ref.dense(abs(f64(x2, dt)), abs(f64(w2, dt)),
                       None if b1 is None else abs(b1))
        assert_result(result, ey.reshape(out_shape), dt,
                      eb.reshape(out_shape), f + 1)

    args = (g, x, wt) if backward else (x, wt, bias)
    kwargs = {"bias": bias_flag} if backward else {}
    return Case(args, kwargs, expect, errors, why, oracle)


prop_dense = fuzz_property(F.dense, dense_cases())


prop_dense_backward = fuzz_property(F.dense_backward,
                                    dense_cases(backward=True))


# (name, call, allowed outcomes); outcomes: "ok" or exception class names

EXTREME = [
    ("dense no features", lambda: F.dense(_z(3, 0), _z(2, 0), np.ones(2)),
     {"ok"}),
    ("dense no outputs", lambda: F.dense(_z(3, 4), _z(0, 4)), {"ok"}),
    ("dense backward no features, bias", lambda: F.dense_backward(
        _z(3, 2), _z(3, 0), _z(2, 0)), {"ok"}),
    ("dense backward empty batch", lambda: F.dense_backward(
        _z(0, 2), _z(0, 3), np.ones((2, 3))), {"ok"}),
    ("dense broadcast 2**31 rows", lambda: F.dense(
        _bcast((2**31, 2)), _z(3, 2, dtype=np.float32)),
     {"ValueError", "MemoryError"}),
]


test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())
