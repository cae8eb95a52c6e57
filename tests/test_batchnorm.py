"""Batch normalisation: batch_norm and batch_norm_backward --
cnnkit.functional against cnnkit.reference (over dtypes, thread counts and
memory layouts), finite differences, the running-statistics rule, the
per-run sums the shard reduction adds, PyTorch's results, and the
documented errors."""

import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import reference as R

from helpers import (LAYOUTS, SANITIZER, Op, check_gradients, check_op,
                     each_argument, num_threads, require)


def _count(shape):
    return int(np.prod(shape)) // shape[1]


def _train_terms(shapes, out, hp):
    m = _count(shapes[0])
    return (m,), (m, m, m)


def _train_op(affine):
    if affine:
        def fwd(x, w, b, **hp):
            return F.batch_norm(x, None, None, w, b, training=True, **hp)

        def ref(x, w, b, **hp):
            return R.batch_norm(x, None, None, w, b, training=True, **hp)

        def bwd(g, ins, outs, **hp):
            return F.batch_norm_backward(g, ins[0], ins[1], **hp)

        def ref_bwd(g, ins, outs, **hp):
            return R.batch_norm_backward(g, ins[0], ins[1], **hp)
    else:
        def fwd(x, **hp):
            return F.batch_norm(x, None, None, training=True, **hp)

        def ref(x, **hp):
            return R.batch_norm(x, None, None, training=True, **hp)

        def bwd(g, ins, outs, **hp):
            return F.batch_norm_backward(g, ins[0], **hp)[:1]

        def ref_bwd(g, ins, outs, **hp):
            return R.batch_norm_backward(g, ins[0], **hp)[:1]
    fwd.__name__ = "batch_norm"
    return Op(fwd, ref, bwd, ref_bwd, _train_terms)


def _eval_fwd(x, rm, rv, w, b, **hp):
    return F.batch_norm(x, rm, rv, w, b, **hp)


def _eval_ref(x, rm, rv, w, b, **hp):
    return R.batch_norm(x, rm, rv, w, b, **hp)


def _eval_bwd(g, ins, outs, **hp):
    x, rm, rv, w, _ = ins
    gx, gw, gb = F.batch_norm_backward(g, x, w, rm, rv, training=False, **hp)
    return gx, None, None, gw, gb


def _eval_ref_bwd(g, ins, outs, **hp):
    x, rm, rv, w, _ = ins
    gx, gw, gb = R.batch_norm_backward(g, x, w, rm, rv, training=False, **hp)
    return gx, None, None, gw, gb


TRAIN = _train_op(True)
TRAIN_PLAIN = _train_op(False)
EVAL = Op(_eval_fwd, _eval_ref, _eval_bwd, _eval_ref_bwd,
          lambda shapes, out, hp: ((1,), (1, 1, 1, _count(shapes[0]),
                                          _count(shapes[0]))))

SHAPES = [(2, 3, 4, 5), (1, 2, 3, 3), (4, 1, 1, 1), (5, 4), (3, 7),
          (1, 3, 7, 1), (4, 5, 9, 11), (2, 16, 1, 1), (7, 3, 2, 1)]


def _channels(shape):
    return (shape[1],)


# ==========================================================================
# against the reference
# ==========================================================================
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_training_matches_reference(shape):
    check_op(TRAIN, [shape, _channels(shape), _channels(shape)])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 4)], ids=str)
def test_training_without_affine_matches_reference(shape):
    check_op(TRAIN_PLAIN, [shape])


def test_training_in_every_layout():
    shape = (3, 4, 5, 2)
    check_op(TRAIN, [shape, (4,), (4,)], layouts=LAYOUTS, dtypes=["float64"])
    check_op(TRAIN, [shape, (4,), (4,)],
             layouts=each_argument(("F", "strided", "reversed"), 4))


def test_parallel_size_matches_reference():
    check_op(TRAIN, [(8, 24, 16, 16), (24,), (24,)], layouts=["C"],
             eps=1e-3)


def _eval_inputs(rng, shape):
    c = shape[1]
    return [rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c),
            rng.random(c) + 0.25, rng.standard_normal(c),
            rng.standard_normal(c)]


@pytest.mark.parametrize("shape", SHAPES[:6], ids=str)
def test_evaluation_matches_reference(shape):
    check_op(EVAL, inputs=_eval_inputs(np.random.default_rng(1), shape))


def test_evaluation_in_every_layout():
    check_op(EVAL, inputs=_eval_inputs(np.random.default_rng(2),
                                       (3, 4, 2, 5)), layouts=LAYOUTS,
             dtypes=["float64"])


def test_large_offset_keeps_precision():
    """Two passes: a mean far from zero does not wipe out the variance (as
    E[x^2] - E[x]^2 would)."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((16, 3, 8, 8))).astype(np.float32)
    y = F.batch_norm(x, None, None, training=True)
    expected = R.batch_norm(x.astype(np.float64), None, None, training=True)
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-3)


# ==========================================================================
# finite differences
# ==========================================================================
@pytest.mark.parametrize("shape", [(3, 2, 2, 3), (4, 3), (2, 1, 1, 3)],
                         ids=str)
def test_training_gradients_finite_differences(shape):
    check_gradients(TRAIN, [shape, _channels(shape), _channels(shape)])
    check_gradients(TRAIN, [shape, _channels(shape), _channels(shape)],
                    reference=True)


def test_training_gradients_without_affine():
    check_gradients(TRAIN_PLAIN, [(3, 2, 2, 2)])


def test_evaluation_gradients_finite_differences():
    op = Op(lambda x, w, b: F.batch_norm(x, RM, RV, w, b),
            None, lambda g, ins, outs: F.batch_norm_backward(
                g, ins[0], ins[1], RM, RV, training=False))
    check_gradients(op, [(2, 3, 2, 2), (3,), (3,)])


RM = np.array([0.5, -1.0, 2.0])
RV = np.array([0.7, 1.5, 0.2])


# ==========================================================================
# the running statistics, the dtypes, the per-run sums
# ==========================================================================
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
def test_running_statistics_update(dtype, momentum):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 4, 2)).astype(dtype)
    rm = rng.standard_normal(3).astype(dtype)
    rv = (rng.random(3) + 0.5).astype(dtype)
    rm_ref, rv_ref = rm.astype(np.float64), rv.astype(np.float64)
    F.batch_norm(x, rm, rv, training=True, momentum=momentum)
    R.batch_norm(x, rm_ref, rv_ref, training=True, momentum=momentum)
    tol = 1e-6 if dtype == "float32" else 1e-14
    assert rm.dtype == dtype and rv.dtype == dtype
    np.testing.assert_allclose(rm, rm_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(rv, rv_ref, rtol=tol, atol=tol)


def test_evaluation_does_not_write_running_statistics():
    rm, rv = RM.copy(), RV.copy()
    for a in (rm, rv):
        a.flags.writeable = False
    F.batch_norm(np.ones((2, 3)), rm, rv)
    np.testing.assert_array_equal(rm, RM)


def test_dtype_promotion():
    x = np.arange(12, dtype=np.int64).reshape(4, 3)
    assert F.batch_norm(x, None, None, training=True).dtype == np.float64
    x32 = x.astype(np.float32)
    assert F.batch_norm(x32, RM, RV).dtype == np.float32
    assert F.batch_norm(x32, RM, RV, np.ones(3)).dtype == np.float64
    assert F.batch_norm(x32.astype(np.float16), RM, RV).dtype == np.float32


def test_other_ranks_match_pytorch_layouts():
    """(N, C, L) and (N, C, D, H, W) are normalised over every axis but C."""
    rng = np.random.default_rng(5)
    for shape in [(3, 2, 5), (2, 3, 2, 3, 2)]:
        x = rng.standard_normal(shape)
        y = F.batch_norm(x, None, None, training=True)
        assert y.shape == shape
        np.testing.assert_allclose(
            y, R.batch_norm(x, None, None, training=True), atol=1e-12)


def test_sums_per_run_are_the_runs_own():
    """The sums of a run of images depend only on its images: the
    per-shard statistics data-parallel training adds."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((9, 4, 3, 5))
    bounds = [0, 2, 2, 5, 9]
    from cnnkit import _kernels
    parts = _kernels.batch_norm_sums(x, None, bounds)
    assert parts.shape == (4, 4)
    for q in range(4):
        alone = _kernels.batch_norm_sums(x[bounds[q]:bounds[q + 1]])[0] \
            if bounds[q + 1] > bounds[q] else np.zeros(4)
        np.testing.assert_array_equal(parts[q], alone)
    mean = x.mean(axis=(0, 2, 3))
    sq = _kernels.batch_norm_sums(x, mean, bounds)
    np.testing.assert_allclose(
        sq.sum(axis=0), ((x - mean[:, None, None]) ** 2).sum(axis=(0, 2, 3)))
    g = rng.standard_normal(x.shape)
    invstd = np.ones(4)
    bparts = _kernels.batch_norm_backward_sums(g, x, mean, invstd, bounds)
    for q in (0, 2, 3):
        alone = _kernels.batch_norm_backward_sums(
            g[bounds[q]:bounds[q + 1]], x[bounds[q]:bounds[q + 1]], mean,
            invstd)[0]
        np.testing.assert_array_equal(bparts[q], alone)
    np.testing.assert_array_equal(bparts[1], 0)


def _lane_sum(v, lanes):
    """sum of v in float64 in the kernels' order: element j into lane
    j % lanes, each lane in order, the lanes added pairwise."""
    acc = [0.0] * lanes
    for j, e in enumerate(v.tolist()):
        acc[j % lanes] += e
    while len(acc) > 1:
        acc = [acc[i] + acc[i + 1] for i in range(0, len(acc), 2)]
    return acc[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 3, 5, 7), (6, 2, 1, 3), (5, 2, 2, 2)],
                         ids=str)
def test_sums_follow_the_documented_order(dtype, shape):
    """The per-run sums are, bit for bit, the documented fixed order: per
    plane four lanes (two for the backward sums) in float64, the planes of
    a run added in image order (whichever code path forms them)."""
    from cnnkit import _kernels
    rng = np.random.default_rng(17)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    bounds = [0, 1, shape[0] - 1, shape[0]]
    n, c = shape[:2]
    planes = x.reshape(n, c, -1).astype(np.float64)
    mean = planes.mean(axis=(0, 2))
    invstd = (1.0 / np.sqrt(planes.var(axis=(0, 2)) + 1e-5)).astype(dtype)
    sums = _kernels.batch_norm_sums(x, None, bounds)
    sq = _kernels.batch_norm_sums(x, mean, bounds)
    bsums = _kernels.batch_norm_backward_sums(g, x, mean.astype(dtype),
                                              invstd, bounds)
    gp = g.reshape(n, c, -1).astype(np.float64)
    for q in range(3):
        for ch in range(c):
            want = np.zeros(4)
            for i in range(bounds[q], bounds[q + 1]):
                xh = ((x.reshape(n, c, -1)[i, ch] - dtype(mean[ch])) *
                      invstd[ch]).astype(np.float64)
                want += [_lane_sum(planes[i, ch], 4),
                         _lane_sum((planes[i, ch] - mean[ch]) ** 2, 4),
                         _lane_sum(gp[i, ch], 2),
                         _lane_sum(gp[i, ch] * xh, 2)]
            got = [sums[q, ch], sq[q, ch], bsums[q, 0, ch], bsums[q, 1, ch]]
            assert np.array_equal(got, want), (q, ch, got, want)


def test_thread_count_does_not_change_sums():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 40, 33, 17)).astype(np.float32)
    runs = []
    for n in (1, 2, 3, 4):
        with num_threads(n):
            runs.append(F.batch_norm(x, None, None, training=True).tobytes())
    assert all(r == runs[0] for r in runs)


# ==========================================================================
# PyTorch
# ==========================================================================
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (8, 5), (2, 4, 1, 1)],
                         ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_pytorch(shape, dtype):
    torch = require("torch")
    rng = np.random.default_rng(8)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), \
        rng.standard_normal(c).astype(dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    tm, tv = torch.zeros(c, dtype=getattr(torch, dtype)), \
        torch.ones(c, dtype=getattr(torch, dtype))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else \
        dict(rtol=1e-10, atol=1e-10)
    for momentum in (0.1, 0.3):
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum)
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        yt = torch.nn.functional.batch_norm(xt, tm, tv, wt, bt, True,
                                            momentum)
        np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
        np.testing.assert_allclose(rm, tm.numpy(), **tol)
        np.testing.assert_allclose(rv, tv.numpy(), **tol)
        g = rng.standard_normal(shape).astype(dtype)
        yt.backward(torch.tensor(g))
        gx, gw, gb = F.batch_norm_backward(g, x, w)
        np.testing.assert_allclose(gx, xt.grad.numpy(), **tol)
        np.testing.assert_allclose(gw, wt.grad.numpy(), **tol)
        np.testing.assert_allclose(gb, bt.grad.numpy(), **tol)
    y = F.batch_norm(x, rm, rv, w, b)
    yt = torch.nn.functional.batch_norm(torch.tensor(x), tm, tv,
                                        torch.tensor(w), torch.tensor(b))
    np.testing.assert_allclose(y, yt.numpy(), **tol)


# ==========================================================================
# errors
# ==========================================================================
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_in_the_pass_has_the_bits_of_a_relu_after(dtype):
    # the pass a BatchNorm2D layer runs when a ReLU alone reads it
    from cnnkit import _ops
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4, 37)).astype(dtype)
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    mean = rng.standard_normal(5).astype(dtype)
    invstd = rng.uniform(0.5, 2.0, 5).astype(dtype)
    var = rng.uniform(0.5, 2.0, 5).astype(dtype)
    w = rng.standard_normal(5).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    w[1], b[1] = 0.0, -0.0          # +0 and -0 outputs: the ReLU gives +0
    for threads in (1, 2):
        with num_threads(threads):
            y = _ops.batch_norm_forward(x, mean, invstd, w, b)
            got = _ops.batch_norm_forward(x, mean, invstd, w, b, relu=True)
            assert got.tobytes() == _ops.relu_forward(y).tobytes()
            assert np.isnan(got[0, 0, 0, 0]) and (got >= 0).sum() == \
                got.size - 1
            y, s = _ops.batch_norm_inference(x, mean, var, w, b, 1e-5)
            got, s2 = _ops.batch_norm_inference(x, mean, var, w, b, 1e-5,
                                                relu=True)
            assert got.tobytes() == _ops.relu_forward(y).tobytes()
            assert s.tobytes() == s2.tobytes()
            # without affine parameters
            got = _ops.batch_norm_forward(x, mean, invstd, None, None,
                                          relu=True)
            want = _ops.relu_forward(
                _ops.batch_norm_forward(x, mean, invstd, None, None))
            assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_through_the_relu_has_the_bits_of_its_backward(dtype):
    # a BatchNorm2D layer whose forward applied the ReLU after it takes
    # that ReLU's output gradient: the sums and the input gradient are
    # those of relu_backward followed by the plain backward, over runs of
    # 4 planes and fewer (the float sums' vector and scalar loops), odd
    # planes, values exactly at the edge (v = 0 is not passed), NaN
    # (passed), +0 and -0 outputs, and with no affine parameters
    from cnnkit import _ops
    rng = np.random.default_rng(5)
    for shape in ((9, 5, 4, 37), (4, 3, 1, 1), (6, 2, 7, 7)):
        n, c = shape[:2]
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        mean = rng.standard_normal(c).astype(dtype)
        invstd = rng.uniform(0.5, 2.0, c).astype(dtype)
        w = rng.standard_normal(c).astype(dtype)
        b = rng.standard_normal(c).astype(dtype)
        w[1], b[1] = 0.0, -0.0         # every output of channel 1 is 0
        x[0, 0].flat[:2] = [np.nan, mean[0]]
        # an output of exactly 0 on a non-zero weight: x at the edge
        x[n - 1, c - 1].flat[-1] = mean[c - 1]
        b[c - 1] = 0.0
        x[1, 0].flat[0] = mean[0]
        count = float(x.size // c)
        bounds = np.array([0, 1, n // 2, n], np.int64)
        for affine in (True, False):
            wa, ba = (w, b) if affine else (None, None)
            y = _ops.batch_norm_forward(x, mean, invstd, wa, ba, relu=True)
            assert (y == 0).any() and np.isnan(y).any()
            gr = _ops.relu_backward(g, y)
            for threads in (1, 2):
                with num_threads(threads):
                    for runs in (None, bounds):
                        want = _ops.batch_norm_backward_sums(
                            gr, x, mean, invstd, runs)
                        got = _ops.batch_norm_backward_sums(
                            g, x, mean, invstd, runs, wa, ba, True)
                        assert got.tobytes() == want.tobytes()
                    total = want.sum(0)
                    for sums in (total, None):
                        want = _ops.batch_norm_backward(
                            gr, x, mean, invstd, wa, sums, count)
                        got = _ops.batch_norm_backward(
                            g, x, mean, invstd, wa, sums, count, None, ba,
                            True)
                        assert got.tobytes() == want.tobytes()


def test_errors_name_the_argument():
    x = np.zeros((2, 3, 4, 4))
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        F.batch_norm(x, rm, rv, eps=-1e-5)
    with pytest.raises(ValueError, match="momentum must be"):
        F.batch_norm(x, rm, rv, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="momentum must be"):
        F.batch_norm(x, rm, rv, training=True, momentum=-0.1)
    with pytest.raises(TypeError, match="momentum must be a real number"):
        F.batch_norm(x, rm, rv, momentum="0.1")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.batch_norm(x, rm, rv, np.ones(4))
    with pytest.raises(ValueError, match=r"running_var must have shape"):
        F.batch_norm(x, rm, np.ones(2))
    with pytest.raises(ValueError, match="x must be"):
        F.batch_norm(np.zeros(3), rm, rv)
    with pytest.raises(ValueError, match="needed when training is False"):
        F.batch_norm(x, None, None)
    with pytest.raises(ValueError, match="both running_mean and"):
        F.batch_norm(x, rm, None, training=True)
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(np.zeros((1, 3)), None, None, training=True)
    with pytest.raises(TypeError, match="dtype"):
        F.batch_norm(x.astype(complex), rm, rv)
    with pytest.raises(ValueError, match="grad_out must have the shape"):
        F.batch_norm_backward(np.zeros((2, 3)), x)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        F.batch_norm_backward(x, x, eps=-1.0)
    with pytest.raises(ValueError, match="needed when training is False"):
        F.batch_norm_backward(x, x, training=False)


@pytest.mark.parametrize("bad", [
    np.zeros(3, dtype=np.int64), [0.0, 0.0, 0.0], "read-only"])
def test_training_running_tensors_must_be_writeable_floats(bad):
    x = np.ones((4, 3))
    if isinstance(bad, str):
        bad = np.zeros(3)
        bad.flags.writeable = False
    with pytest.raises(TypeError, match="running_mean is updated in place"):
        F.batch_norm(x, bad, np.ones(3), training=True)
    F.batch_norm(x, bad, np.ones(3), training=False)


def test_hostile_sizes_do_not_crash():
    from cnnkit import _kernels
    x = np.zeros((3, 2, 2, 2))
    with pytest.raises(ValueError, match="bounds"):
        _kernels.batch_norm_sums(x, None, [0, 5])
    with pytest.raises(ValueError, match="bounds"):
        _kernels.batch_norm_sums(x, None, [2, 1, 3])
    with pytest.raises(ValueError, match="mean"):
        _kernels.batch_norm_sums(x, np.zeros(3))
    with pytest.raises(ValueError, match="sums"):
        _kernels.batch_norm_backward(x, x, np.zeros(2), np.ones(2), None,
                                     np.zeros((3, 2)), 4.0)
    with pytest.raises(ValueError, match="count"):
        _kernels.batch_norm_backward(x, x, np.zeros(2), np.ones(2), None,
                                     np.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError, match="out"):
        _kernels.batch_norm_forward(x, np.zeros(2), np.ones(2), None, None,
                                    np.zeros((3, 2, 2, 2), np.float32))
    y = F.batch_norm(np.zeros((0, 3, 2, 2)), np.zeros(3), np.ones(3))
    assert y.shape == (0, 3, 2, 2)


# ==========================================================================
# the layers, their buffers and training
# ==========================================================================
import pickle  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit import layers as L  # noqa: E402


def _bn_net(seed=0, dtype="float32"):
    return cnnkit.Sequential([
        L.Conv2D(4, 3, padding=1), L.BatchNorm2D(), L.ReLU(),
        L.MaxPool2D(2), L.Flatten(), L.Dense(12), L.BatchNorm1D(),
        L.ReLU(), L.Dense(10)], input_shape=(1, 8, 8), seed=seed,
        dtype=dtype)


def _digits(n=120):
    x, y = cnnkit.datasets.load_digits()
    return x[:n], y[:n]


def _state(model):
    return [a.tobytes() for a in model.get_weights()]


def _fit(model, x, y, batch_size, shards=None):
    """One epoch of SGD without shuffling; ``shards`` virtual shards per
    batch (fit's default without it), in this process (no MPI world)."""
    if shards is None:
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0,
                  optimizer="sgd", shuffle=False)
        return
    from cnnkit import optim, trainer
    model.optimizer = optim.SGD(0.01)
    trainer.Trainer(model, shards=shards).fit(
        np.ascontiguousarray(x, dtype=model.dtype), y.astype(np.int64), None,
        None, None, 0, 1, batch_size, False, [], 0)


def test_state_dict_order_and_buffers():
    model = _bn_net()
    assert list(model.state_dict())[:7] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
        "1.running_var", "1.num_batches_tracked"]
    nbt = model.state_dict()["1.num_batches_tracked"]
    assert nbt.dtype == np.int64 and nbt.shape == ()
    assert [n for n, _ in model.named_parameters()][2:4] == [
        "1.weight", "1.bias"]
    # the buffers are not parameters: the optimizer's buffer excludes them
    assert model.count_params() == sum(p.size for p in model.parameters())
    assert model.count_buffers() == 2 * 4 + 2 * 12
    text = model.summary(print_fn=lambda s: None)
    assert "Non-trainable params: 32" in text
    np.testing.assert_array_equal(model.layers[1].params["weight"], 1)
    np.testing.assert_array_equal(model.layers[1].buffers["running_var"], 1)


def test_training_updates_buffers_once_per_step_and_inference_never():
    model = _bn_net()
    x, y = _digits()
    before = [b.copy() for b in model.buffers()]
    model.predict(x)
    model.evaluate(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before,
                                                    model.buffers()))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert int(model.layers[1].buffers["num_batches_tracked"]) == 8
    assert not np.array_equal(model.layers[1].buffers["running_mean"],
                              before[0])
    # the optimizer's state covers the parameters alone
    after = [b.copy() for b in model.buffers()]
    model.predict(x)
    assert all(np.array_equal(a, b) for a, b in zip(after, model.buffers()))


@pytest.mark.parametrize("shards", [1, 8])
def test_training_is_bit_identical_for_any_thread_count(shards):
    x, y = _digits()
    runs = []
    for n in (1, 2, 3):
        with num_threads(n):
            model = _bn_net(seed=3)
            _fit(model, x, y, 40, shards)
            runs.append(_state(model))
    assert runs[0] == runs[1] == runs[2]


def test_sharded_statistics_agree_with_one_shard():
    """Eight shards form the same statistics and gradients as one, up to
    rounding (float64)."""
    x, y = _digits(64)
    a, b = _bn_net(seed=1, dtype="float64"), _bn_net(seed=1, dtype="float64")
    _fit(a, x, y, 64, shards=1)
    _fit(b, x, y, 64)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-13)


def test_layer_gradient_matches_functional():
    rng = np.random.default_rng(9)
    model = cnnkit.Sequential([L.BatchNorm2D()], input_shape=(3, 4, 4),
                              dtype="float64")
    bn = model.layers[0]
    bn.params["weight"][...] = rng.standard_normal(3)
    x = rng.standard_normal((5, 3, 4, 4))
    g = rng.standard_normal(x.shape)
    y = bn.forward(x, training=True)
    np.testing.assert_array_equal(
        y, F.batch_norm(x, None, None, bn.params["weight"],
                        bn.params["bias"], training=True))
    gx = bn.backward(g)
    fx, fw, fb = F.batch_norm_backward(g, x, bn.params["weight"])
    np.testing.assert_array_equal(gx, fx)
    np.testing.assert_array_equal(bn.grads["weight"], fw)
    np.testing.assert_array_equal(bn.grads["bias"], fb)


def test_layer_errors():
    with pytest.raises(ValueError, match="momentum"):
        L.BatchNorm2D(momentum=2)
    with pytest.raises(ValueError, match="eps"):
        L.BatchNorm2D(eps=-1)
    with pytest.raises(TypeError, match="momentum"):
        L.BatchNorm1D(momentum="x")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        cnnkit.Sequential([L.BatchNorm2D()], input_shape=(5,))
    with pytest.raises(ValueError, match=r"\(C,\)"):
        cnnkit.Sequential([L.Flatten(), L.BatchNorm1D()],
                          input_shape=(2, 3, 3)).layers[1].forward(
                              np.zeros((2, 2, 3, 3)))
    model = cnnkit.Sequential([L.Flatten(), L.BatchNorm1D()],
                              input_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="more than one value"):
        model.forward(np.zeros((1, 1, 2, 2), np.float32), training=True)


def test_graph_model_with_batch_norm(tmp_path):
    inp = cnnkit.Input((1, 8, 8))
    h = L.ReLU()(L.BatchNorm2D(name="bn")(L.Conv2D(4, 3, padding=1)(inp)))
    h = L.Add()([h, L.BatchNorm2D(affine=False)(
        L.Conv2D(4, 3, padding=1)(h))])
    out = L.Dense(10)(L.Flatten()(L.GlobalAvgPool2D()(h)))
    model = cnnkit.Model(inp, out, seed=0)
    assert "bn.running_var" in model.state_dict()
    x, y = _digits()
    model.fit(x, y, epochs=1, batch_size=30, verbose=0)
    assert int(model.state_dict()["bn.num_batches_tracked"]) == 4
    path = tmp_path / "g.cnnkit"
    model.save(path)
    for other in (cnnkit.load_model(path),
                  pickle.loads(pickle.dumps(model))):
        assert _state(other) == _state(model)
        np.testing.assert_array_equal(other.predict_proba(x),
                                      model.predict_proba(x))
    clone = cnnkit.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.predict_proba(x),
                                  model.predict_proba(x))


def test_save_refuses_damaged_buffers(tmp_path):
    model = _bn_net()
    path = tmp_path / "m.cnnkit"
    state = model.state_dict()
    state["1.num_batches_tracked"] = np.zeros((), np.float32)
    from cnnkit import _format
    _format.save_file(path, state, _format.pack_metadata(
        "model", model.get_config(), {}))
    with pytest.raises(ValueError, match="num_batches_tracked"):
        cnnkit.load_model(path)


# ==========================================================================
# PyTorch's modules and nets
# ==========================================================================
def _torch_state(module):
    return [t.detach().numpy().copy() for t in module.state_dict().values()]


@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_pytorch_batch_norm_module_loads(kind):
    torch = require("torch")
    torch.manual_seed(0)
    c = 5
    if kind == "2d":
        tm, layer, shape = torch.nn.BatchNorm2d(c, momentum=0.2), \
            L.BatchNorm2D(momentum=0.2), (c, 4, 3)
    else:
        tm, layer, shape = torch.nn.BatchNorm1d(c, momentum=0.2), \
            L.BatchNorm1D(momentum=0.2), (c,)
    with torch.no_grad():
        tm.weight.uniform_(0.5, 1.5)
        tm.bias.uniform_(-1, 1)
    rng = np.random.default_rng(10)
    for _ in range(3):
        tm(torch.tensor(rng.standard_normal((6,) + shape) * 2 + 1,
                        dtype=torch.float32))
    model = cnnkit.Sequential([layer], input_shape=shape)
    model.set_weights(_torch_state(tm))
    assert int(model.layers[0].buffers["num_batches_tracked"]) == 3
    x = (rng.standard_normal((7,) + shape) * 2 + 1).astype(np.float32)
    tm.eval()
    np.testing.assert_allclose(model(x), tm(torch.tensor(x)).detach(),
                               rtol=1e-5, atol=1e-5)
    tm.train()
    y_t = tm(torch.tensor(x)).detach().numpy()
    y = model.forward(x, training=True)
    np.testing.assert_allclose(y, y_t, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(model.get_weights(), _torch_state(tm)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_pytorch_conv_bn_relu_net_loads():
    torch = require("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(6 * 4 * 4, 8), torch.nn.BatchNorm1d(8),
        torch.nn.ReLU(), torch.nn.Linear(8, 3))
    rng = np.random.default_rng(11)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        out = net(torch.tensor(rng.standard_normal((10, 2, 8, 8)),
                               dtype=torch.float32))
        out.square().mean().backward()
        opt.step()
    model = cnnkit.Sequential([
        L.Conv2D(6, 3, padding=1), L.BatchNorm2D(), L.ReLU(),
        L.MaxPool2D(2), L.Flatten(), L.Dense(8), L.BatchNorm1D(), L.ReLU(),
        L.Dense(3)], input_shape=(2, 8, 8))
    model.load_state_dict({k: v.detach().numpy()
                           for k, v in net.state_dict().items()})
    x = rng.standard_normal((5, 2, 8, 8)).astype(np.float32)
    net.eval()
    np.testing.assert_allclose(model(x), net(torch.tensor(x)).detach(),
                               rtol=1e-4, atol=1e-5)
    net.train()
    np.testing.assert_allclose(model(x, training=True),
                               net(torch.tensor(x)).detach(), rtol=1e-4,
                               atol=1e-4)


# ==========================================================================
# folding and ONNX
# ==========================================================================
def _trained_bn_net(dtype="float32"):
    model = _bn_net(seed=5, dtype=dtype)
    x, y = _digits()
    model.fit(x, y, epochs=1, batch_size=30, verbose=0)
    for layer in model.layers:          # statistics far from 0 and 1
        if isinstance(layer, L.BatchNorm2D):
            rng = np.random.default_rng(12)
            c = layer.buffers["running_mean"].shape
            layer.buffers["running_mean"][...] = rng.standard_normal(c)
            layer.buffers["running_var"][...] = rng.random(c) + 0.3
            layer.params["weight"][...] = rng.standard_normal(c)
    return model, x


def test_fold_batch_norm_function_matches_unfolded():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 2, 6, 6))
    w, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.2
    g, beta = rng.standard_normal(4), rng.standard_normal(4)
    y = F.batch_norm(F.conv2d(x, w, b, padding=1), rm, rv, g, beta)
    fw, fb = F.fold_batch_norm(w, b, rm, rv, g, beta)
    np.testing.assert_allclose(F.conv2d(x, fw, fb, padding=1), y,
                               rtol=1e-12, atol=1e-12)
    fw, fb = F.fold_batch_norm(w, None, rm, rv)
    np.testing.assert_allclose(F.conv2d(x, fw, fb, padding=1),
                               F.batch_norm(F.conv2d(x, w, padding=1), rm,
                                            rv), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="gamma must have shape"):
        F.fold_batch_norm(w, b, rm, rv, np.ones(3))
    with pytest.raises(ValueError, match="eps"):
        F.fold_batch_norm(w, b, rm, rv, eps=-1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fold_batch_norm_model_matches_unfolded(dtype):
    model, x = _trained_bn_net(dtype)
    folded = model.fold_batch_norm()
    assert [type(la).__name__ for la in folded.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "ReLU", "Dense"]
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(folded(x), model(x), rtol=tol, atol=tol)
    # a batch norm after something else stays
    other = cnnkit.Sequential([L.BatchNorm2D(), L.Conv2D(2, 3)],
                              input_shape=(1, 5, 5))
    assert len(other.fold_batch_norm().layers) == 2


def _fit_briefly(model, seed):
    """A few steps of training (running statistics away from 0 and 1),
    and a batch to compare on."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((48,) + model.input_shape) * 2 + 0.5).astype(
        model.dtype)
    y = rng.integers(0, 10, 48)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, optimizer="sgd")
    return x[:10]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fold_batch_norm_resnet_graph(dtype):
    """ResNet-8 (a graph with residual additions): every BatchNorm2D
    folds into the convolution before it; same outputs within rounding."""
    model = cnnkit.models.resnet(8, input_shape=(1, 12, 12), seed=3,
                                 dtype=dtype)
    x = _fit_briefly(model, 3)
    before = model.get_weights()
    folded = model.fold_batch_norm()
    assert type(folded) is cnnkit.Model
    assert not any(isinstance(la, L.BatchNorm2D) for la in folded.layers)
    n_bn = sum(isinstance(la, L.BatchNorm2D) for la in model.layers)
    assert n_bn > 0 and len(folded.layers) == len(model.layers) - n_bn
    assert [la.name for la in folded.layers] == [
        la.name for la in model.layers if not isinstance(la, L.BatchNorm2D)]
    tol = 2e-5 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(folded(x), model(x), rtol=tol, atol=tol)
    for a, b in zip(before, model.get_weights()):       # unchanged
        np.testing.assert_array_equal(a, b)
    again = cnnkit.Model.from_config(folded.get_config())
    again.set_weights(folded.get_weights())
    np.testing.assert_array_equal(again(x), folded(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fold_batch_norm_mobilenet(dtype):
    """MobileNet: batch norms after depthwise and pointwise convolutions
    fold alike."""
    model = cnnkit.models.mobilenet(input_shape=(3, 12, 12), width=8,
                                    seed=4, dtype=dtype)
    x = _fit_briefly(model, 4)
    folded = model.fold_batch_norm()
    assert not any(isinstance(la, L.BatchNorm2D) for la in folded.layers)
    assert sum(isinstance(la, L.DepthwiseConv2D) for la in folded.layers) \
        == sum(isinstance(la, L.DepthwiseConv2D) for la in model.layers) > 0
    tol = 2e-5 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(folded(x), model(x), rtol=tol, atol=tol)


def test_fold_batch_norm_graph_keeps_what_cannot_fold():
    """A batch norm stays when its input is read elsewhere too, when it or
    the layer before is called twice, when it reads the model input or a
    layer it cannot fold into; Conv2D + BatchNorm2D and Dense +
    BatchNorm1D pairs fold."""
    inp = cnnkit.Input((2, 6, 6))
    a = L.Conv2D(3, 3, padding=1, name="a")(inp)
    bn_a = L.BatchNorm2D(name="bn_a")(a)        # a also read by the Add
    shared = L.Conv2D(3, 1, name="shared")
    b = L.BatchNorm2D(name="bn_b")(shared(bn_a))
    c = L.BatchNorm2D(name="bn_c")(shared(b))   # shared conv: stays
    bn_twice = L.BatchNorm2D(name="bn_twice")
    d = bn_twice(L.Conv2D(3, 1, name="d")(c))
    e = bn_twice(L.Conv2D(3, 1, name="e")(d))   # shared batch norm: stays
    first = L.BatchNorm2D(name="bn_in")(inp)    # reads the input: stays
    f = L.BatchNorm2D(name="bn_relu")(L.ReLU(name="relu")(a))
    g = L.BatchNorm2D(name="bn_g")(L.Conv2D(3, 1, name="g")(first))
    x = L.Add(name="add")([a, e, f, g])
    h = L.BatchNorm1D(name="bn_dense")(L.Dense(5, name="dense")(
        L.Flatten(name="flat")(x)))
    model = cnnkit.Model(inp, L.Dense(4, name="out")(h), seed=0)
    rng = np.random.default_rng(8)
    xs = rng.standard_normal((24, 2, 6, 6)).astype(np.float32)
    model.fit(xs, rng.integers(0, 4, 24), epochs=1, batch_size=8,
              verbose=0, optimizer="sgd")
    folded = model.fold_batch_norm()
    kept = {la.name for la in folded.layers
            if isinstance(la, L.BatchNorm2D)}
    assert kept == {"bn_a", "bn_b", "bn_c", "bn_twice", "bn_in", "bn_relu"}
    np.testing.assert_allclose(folded(xs[:6]), model(xs[:6]), rtol=2e-5,
                               atol=2e-5)


def test_fold_batch_norm_graph_requires_a_built_model():
    inp = cnnkit.Input((1, 4, 4))
    model = cnnkit.Model(inp, L.BatchNorm2D()(L.Conv2D(2, 3)(inp)))
    assert [type(la).__name__ for la in model.fold_batch_norm().layers] == \
        ["Conv2D"]


def test_onnx_export_and_import(tmp_path):
    require("onnx")
    ort = require("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    model, x = _trained_bn_net()
    path = tmp_path / "bn.onnx"
    cnnkit_onnx.export(model, path)
    import onnx
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node].count(
        "BatchNormalization") == 2
    session = ort.InferenceSession(str(path),
                                   providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    np.testing.assert_allclose(got, model(x), rtol=1e-4, atol=1e-4)
    same = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in same.layers] == [
        type(la).__name__ for la in model.layers]
    assert same.layers[1].eps == model.layers[1].eps
    assert same.layers[1].momentum == model.layers[1].momentum
    for a, b in zip(same.get_weights(), model.get_weights()):
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(same(x), model(x))


def test_onnx_graph_model_with_batch_norm(tmp_path):
    require("onnx")
    ort = require("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    inp = cnnkit.Input((1, 8, 8))
    h = L.ReLU()(L.BatchNorm2D(affine=False)(L.Conv2D(3, 3)(inp)))
    h = L.Add()([h, L.BatchNorm2D()(L.Conv2D(3, 3, padding=1)(h))])
    model = cnnkit.Model(inp, L.Dense(4)(L.Flatten()(h)), seed=0)
    x, y = _digits(60)
    model.fit(x, y[:60] % 4, epochs=1, batch_size=20, verbose=0)
    path = tmp_path / "g.onnx"
    cnnkit_onnx.export(model, path)
    session = ort.InferenceSession(str(path),
                                   providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    np.testing.assert_allclose(got, model(x), rtol=1e-4, atol=1e-4)
    same = cnnkit_onnx.load(path)
    np.testing.assert_allclose(same(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(SANITIZER, reason="PyTorch's ONNX exporter aborts "
                    "under AddressSanitizer (tools/sanitize.sh)")
@pytest.mark.filterwarnings("ignore::DeprecationWarning",
                            "ignore::UserWarning", "ignore::FutureWarning")
def test_onnx_import_of_pytorch_conv_bn(tmp_path):
    torch = require("torch")
    ort = require("onnxruntime")
    from cnnkit import onnx as cnnkit_onnx
    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 5, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(5), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(5 * 6 * 6, 7), torch.nn.BatchNorm1d(7),
        torch.nn.Linear(7, 3))
    rng = np.random.default_rng(14)
    for _ in range(3):
        net(torch.tensor(rng.standard_normal((8, 2, 6, 6)) + 1,
                         dtype=torch.float32))
    net.eval()
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    path = tmp_path / "torch_bn.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(path),
                      dynamo=False, input_names=["input"],
                      output_names=["logits"],
                      training=torch.onnx.TrainingMode.PRESERVE,
                      dynamic_axes={"input": {0: "batch"}})
    model = cnnkit_onnx.load(path)
    names = [type(la).__name__ for la in model.layers]
    assert "BatchNorm2D" in names and "BatchNorm1D" in names
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)
    session = ort.InferenceSession(str(path),
                                   providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x})
    np.testing.assert_allclose(model(x), got, rtol=1e-4, atol=1e-5)


# ==========================================================================
# fuzzing: batch_norm on random shapes, dtypes, layouts and arguments
# ==========================================================================
import fuzzing  # noqa: E402
from fuzzing import (Case, arrays, assert_result, bad_array,  # noqa: E402
                     design_dtype, f64, fuzz_property)
from hypothesis import strategies as st  # noqa: E402

_BN_KINDS = ("normal", "int", "large")


@st.composite
def batch_norm_cases(draw):
    """batch_norm(x, running_mean, running_var, weight, bias, training,
    momentum, eps): valid calls against the reference, or one mutation that
    must raise.  Training passes no running tensors (they are written by
    design); evaluation passes them (read only)."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(1, 4))
                    for _ in range(draw(st.integers(0, 2))))
    shape = (n, c) + spatial
    x = draw(arrays(shape, kinds=_BN_KINDS))
    training = draw(st.booleans())
    affine = draw(st.booleans())
    weight = draw(arrays((c,), kinds=_BN_KINDS)) if affine else None
    bias = draw(arrays((c,), kinds=_BN_KINDS)) if affine else None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rm = rv = None
    if not training:
        rm = rng.standard_normal(c)
        rv = rng.uniform(0.25, 4.0, c)
    momentum = draw(st.sampled_from([0.1, 0.0, 1.0, 0.5]))
    eps = draw(st.sampled_from([1e-5, 1e-3, 1.0, 0.0]))
    expect, errors, why = "ok", (), ""
    if training and n * int(np.prod(spatial)) == 1:
        expect, errors, why = "error", (ValueError,), "one value a channel"
    mutation = draw(st.sampled_from([None] * 5 + [
        "eps", "momentum", "channels", "ndim", "dtype", "none"]))
    if mutation == "eps":
        eps = draw(st.sampled_from([-1e-5, -1.0, float("nan")]))
        expect, errors, why = "error", (ValueError,), "bad eps"
    elif mutation == "momentum":
        momentum = draw(st.sampled_from([-0.1, 1.5, float("nan")]))
        expect, errors, why = "error", (ValueError,), "bad momentum"
    elif mutation == "channels":
        weight = np.ones(c + 1)
        expect, errors, why = "error", (ValueError,), "weight of C+1"
    elif mutation == "ndim":
        x = np.ones(n)
        expect, errors, why = "error", (ValueError,), "1-D x"
    elif mutation == "dtype":
        x = bad_array(draw, shape)
        expect, errors, why = "error", (TypeError,), "bad dtype"
    elif mutation == "none":
        x = None
        expect, errors, why = "error", (TypeError, ValueError), "x None"

    def oracle(result):
        xa = np.asarray(x)
        parts = [xa] + [np.asarray(a) for a in (weight, bias)
                        if a is not None]
        dt = design_dtype(*parts)
        xf = f64(xa, dt)
        w = None if weight is None else f64(np.asarray(weight), dt)
        b = None if bias is None else f64(np.asarray(bias), dt)
        axes = (0,) + tuple(range(2, xf.ndim))
        bshape = (1, c) + (1,) * len(spatial)
        if training:
            mean = xf.mean(axis=axes)
            var = xf.var(axis=axes)
        else:
            mean, var = rm, rv
        exp = R.batch_norm(xf, None if training else rm.copy(),
                           None if training else rv.copy(), w, b,
                           training=training, momentum=momentum, eps=eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.sqrt(var + eps)
            scale = ((np.abs(xf) + np.abs(mean).reshape(bshape))
                     * inv.reshape(bshape)
                     * (1.0 if w is None else 1.0 + np.abs(w).reshape(bshape))
                     + (0.0 if b is None else np.abs(b).reshape(bshape)))
        assert_result(result, exp, dt, bound=np.nan_to_num(scale),
                      n_terms=8)

    kwargs = dict(weight=weight, bias=bias, training=training,
                  momentum=momentum, eps=eps)
    return Case((x, rm, rv), kwargs, expect, errors, why, oracle)


prop_batch_norm = fuzz_property(F.batch_norm, batch_norm_cases())

EXTREME = [
    ("batch_norm 2**61 broadcast elements", lambda: F.batch_norm(
        np.broadcast_to(np.float32(1), (2**31, 2, 2**30)), None, None,
        training=True), {"ValueError", "MemoryError"}),
    ("batch_norm eps 1e308", lambda: F.batch_norm(
        np.ones((2, 3, 4), np.float32), np.zeros(3, np.float32),
        np.ones(3, np.float32), eps=1e308), {"ok"}),
]

test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())
