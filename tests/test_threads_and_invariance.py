"""Thread control, bit-identical results for any thread count, results that do
not depend on the batch a sample is in, inputs that are never written to and
outputs that are always new arrays."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import functional as F

from helpers import require


@pytest.fixture(autouse=True)
def default_threads():
    cnnkit.set_num_threads(0)
    yield
    cnnkit.set_num_threads(0)


# --------------------------------------------------------------------------
# thread control
# --------------------------------------------------------------------------
def test_get_num_threads_reflects_set_num_threads():
    default = cnnkit.get_num_threads()
    assert isinstance(default, int) and default >= 1
    for n in (1, 3, 2, 7):
        cnnkit.set_num_threads(n)
        assert cnnkit.get_num_threads() == n
    cnnkit.set_num_threads(np.int64(5))
    assert cnnkit.get_num_threads() == 5
    cnnkit.set_num_threads(0)
    assert cnnkit.get_num_threads() == default


@pytest.mark.parametrize("n", [-1, -8, np.int32(-2)])
def test_set_num_threads_rejects_negative(n):
    cnnkit.set_num_threads(3)
    with pytest.raises(ValueError, match=r"\bn must be in \[0, 4096\]"):
        cnnkit.set_num_threads(n)
    assert cnnkit.get_num_threads() == 3


@pytest.mark.parametrize("n", [1.5, 2.0, "2", None, True, False,
                               np.float64(2)])
def test_set_num_threads_rejects_non_int(n):
    cnnkit.set_num_threads(3)
    with pytest.raises(TypeError, match=r"\bn must be an int"):
        cnnkit.set_num_threads(n)
    assert cnnkit.get_num_threads() == 3


def test_threadpoolctl_limits_the_default():
    threadpoolctl = require("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cnnkit.get_num_threads() == 1
        cnnkit.set_num_threads(2)  # an explicit count wins over the limit
        assert cnnkit.get_num_threads() == 2
        cnnkit.set_num_threads(0)
        assert cnnkit.get_num_threads() == 1


@pytest.mark.parametrize("n", ["1", "3"])
def test_omp_num_threads_sets_the_default(n):
    env = dict(os.environ, OMP_NUM_THREADS=n)
    out = subprocess.run(
        [sys.executable, "-c",
         "import cnnkit; print(cnnkit.get_num_threads())"],
        env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == n


# --------------------------------------------------------------------------
# bit-identical results for any thread count
# --------------------------------------------------------------------------
def _conv_problem(rng, dt):
    x = rng.standard_normal((5, 8, 17, 17)).astype(dt)
    w = rng.standard_normal((12, 8, 3, 3)).astype(dt)
    b = rng.standard_normal(12).astype(dt)
    g = rng.standard_normal((5, 12, 17, 17)).astype(dt)
    return x, w, b, g


def _op_conv2d(rng, dt):
    x, w, b, _ = _conv_problem(rng, dt)
    return lambda: [F.conv2d(x, w, b, padding=1)]


def _op_conv2d_strided(rng, dt):
    x, w, b, _ = _conv_problem(rng, dt)
    return lambda: [F.conv2d(x, w, b, stride=(2, 1), padding=(0, 2),
                             dilation=(1, 2))]


def _op_conv2d_backward(rng, dt):
    x, w, _, g = _conv_problem(rng, dt)
    return lambda: list(F.conv2d_backward(g, x, w, padding=1))


def _op_conv2d_backward_1x1(rng, dt):
    x = rng.standard_normal((11, 8, 17, 17)).astype(dt)
    w = rng.standard_normal((12, 8, 1, 1)).astype(dt)
    g = rng.standard_normal((11, 12, 17, 17)).astype(dt)
    return lambda: [F.conv2d(x, w)] + list(F.conv2d_backward(g, x, w))


def _op_relu(rng, dt):
    x = rng.standard_normal((5, 8, 32, 32)).astype(dt)
    g = rng.standard_normal(x.shape).astype(dt)
    return lambda: [F.relu(x), F.relu_backward(g, x)]


def _op_max_pool2d(rng, dt):
    x = rng.integers(-5, 5, (5, 8, 17, 17)).astype(dt)
    g = rng.standard_normal((5, 8, 17, 17)).astype(dt)

    def run():
        y, idx = F.max_pool2d(x, 3, stride=1, padding=1)
        return [y, idx, F.max_pool2d_backward(g, idx, x.shape)]
    return run


def _op_dense(rng, dt):
    x = rng.standard_normal((300, 500)).astype(dt)
    w = rng.standard_normal((70, 500)).astype(dt)
    b = rng.standard_normal(70).astype(dt)
    g = rng.standard_normal((300, 70)).astype(dt)
    return lambda: [F.dense(x, w, b)] + list(F.dense_backward(g, x, w))


def _op_dense_wide(rng, dt):
    x = rng.standard_normal((7, 300)).astype(dt)
    w = rng.standard_normal((5000, 300)).astype(dt)
    g = rng.standard_normal((7, 5000)).astype(dt)
    return lambda: [F.dense(x, w)] + list(F.dense_backward(g, x, w))


def _op_softmax(rng, dt):
    z = (rng.standard_normal((300, 70)) * 5).astype(dt)
    labels = rng.integers(0, 70, 300)

    def run():
        loss, grad = F.softmax_cross_entropy(z, labels)
        return [F.softmax(z), np.asarray(loss), grad]
    return run


THREAD_OPS = [_op_conv2d, _op_conv2d_strided, _op_conv2d_backward,
              _op_conv2d_backward_1x1, _op_relu, _op_max_pool2d, _op_dense,
              _op_dense_wide, _op_softmax]


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("make_op", THREAD_OPS,
                         ids=[f.__name__[4:] for f in THREAD_OPS])
def test_results_are_bit_identical_for_any_thread_count(rng, dtype, make_op,
                                                        nthreads):
    op = make_op(rng, dtype)
    cnnkit.set_num_threads(1)
    serial = op()
    cnnkit.set_num_threads(nthreads)
    parallel = op()
    assert len(serial) == len(parallel)
    for a, b in zip(serial, parallel):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b), np.max(np.abs(a - b))


# --------------------------------------------------------------------------
# a sample's result does not depend on its batch
# --------------------------------------------------------------------------
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


@pytest.mark.parametrize("N", [2, 9])
def test_elementwise_pool_and_softmax_do_not_depend_on_batch(rng, dtype, N):
    x = rng.standard_normal((N, 8, 33, 32)).astype(dtype)
    z = (rng.standard_normal((N * 300, 70)) * 4).astype(dtype)
    r = F.relu(x)
    p, pi = F.max_pool2d(x, 3, 2, 1)
    s = F.softmax(z)
    for i in sorted({0, N // 2, N - 1}):
        assert np.array_equal(F.relu(x[i:i + 1]), r[i:i + 1])
        yi, ii = F.max_pool2d(x[i:i + 1], 3, 2, 1)
        assert np.array_equal(yi, p[i:i + 1])
        assert np.array_equal(ii, pi[i:i + 1])
        j = i * 300
        assert np.array_equal(F.softmax(z[j:j + 1]), s[j:j + 1])
        assert np.array_equal(F.softmax(z[j]), s[j])


# --------------------------------------------------------------------------
# inputs are never written to; outputs are new arrays
# --------------------------------------------------------------------------
def _calls(rng, dt):
    """(name, function, inputs) for every kernel, with C-contiguous inputs of
    dtype dt, so that no conversion copy is made before the kernel."""
    x = rng.standard_normal((2, 3, 6, 6)).astype(dt)
    x[0, 0, 0, 0] = -0.0
    w = rng.standard_normal((4, 3, 3, 3)).astype(dt)
    b = rng.standard_normal(4).astype(dt)
    gy = rng.standard_normal((2, 4, 6, 6)).astype(dt)
    y, idx = F.max_pool2d(x, 2, 1, 1)
    gp = rng.standard_normal(y.shape).astype(dt)
    fx = rng.standard_normal((3, 5)).astype(dt)
    fw = rng.standard_normal((2, 5)).astype(dt)
    fb = rng.standard_normal(2).astype(dt)
    fg = rng.standard_normal((3, 2)).astype(dt)
    labels = np.array([1, 0, 1])
    img, ker = x[0, 0].copy(), w[0, 0, :2, :2].copy()
    return [
        ("conv2d", lambda *a: F.conv2d(*a, padding="same"), (x, w, b)),
        ("conv2d_1x1", F.conv2d, (x, w[:, :, :1, :1].copy())),
        ("conv2d_2d", F.conv2d, (img, ker)),
        ("conv2d_3d", lambda *a: F.conv2d(*a, padding=1), (x[0].copy(), w)),
        ("conv2d_backward", lambda *a: F.conv2d_backward(*a, padding=1),
         (gy, x, w)),
        ("conv2d_backward_2d", F.conv2d_backward,
         (np.ones((5, 5), dt), img, ker)),
        ("relu", F.relu, (x,)),
        ("relu_backward", F.relu_backward, (x, x)),
        ("max_pool2d", lambda a: F.max_pool2d(a, 2, 1, 1), (x,)),
        ("max_pool2d_2d", lambda a: F.max_pool2d(a, 2), (img,)),
        ("max_pool2d_backward", lambda g, i: F.max_pool2d_backward(
            g, i, x.shape), (gp, idx)),
        ("dense", F.dense, (fx, fw, fb)),
        ("dense_1d", F.dense, (fx[0].copy(), fw[0].copy(), fb[:1].copy())),
        ("dense_backward", F.dense_backward, (fg, fx, fw)),
        ("softmax", F.softmax, (fx,)),
        ("softmax_1d", F.softmax, (fx[0].copy(),)),
        ("softmax_cross_entropy", F.softmax_cross_entropy, (fg, labels)),
    ]


def _outputs(result):
    items = result if isinstance(result, tuple) else (result,)
    return [o for o in items if isinstance(o, np.ndarray)]


CALL_NAMES = [name for name, _, _ in _calls(np.random.default_rng(0),
                                             np.float64)]


@pytest.mark.parametrize("name", CALL_NAMES)
def test_inputs_are_not_modified_and_outputs_are_new(rng, dtype, name):
    fn, inputs = {n: (f, i) for n, f, i in _calls(rng, dtype)}[name]
    copies = [a.copy() for a in inputs]
    outs = _outputs(fn(*inputs))
    assert outs, name
    for a, c in zip(inputs, copies):
        assert a.dtype == c.dtype
        np.testing.assert_array_equal(a, c)
        assert np.array_equal(np.signbit(a), np.signbit(c))
    for o in outs:
        for a in inputs:
            assert not np.shares_memory(o, a), name
    # a second call gives fresh arrays too, not the first call's buffers
    again = _outputs(fn(*inputs))
    for o1, o2 in zip(outs, again):
        np.testing.assert_array_equal(o1, o2)
        assert not np.shares_memory(o1, o2), name
    for o in outs:
        o[...] = 0  # writable, and writing it touches no input
    for a, c in zip(inputs, copies):
        np.testing.assert_array_equal(a, c)


def test_read_only_inputs_are_accepted(rng, dtype):
    calls = _calls(rng, dtype)
    for name, fn, inputs in calls:
        expected = _outputs(fn(*inputs))
        frozen = []
        for a in inputs:
            a = a.copy()
            a.flags.writeable = False
            frozen.append(a)
        got = _outputs(fn(*frozen))
        for e, g in zip(expected, got):
            assert np.array_equal(e, g), name
            assert g.flags.writeable


FORK_SCRIPT = """
import multiprocessing as mp
import numpy as np
import cnnkit
from cnnkit import functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((16, 8, 32, 32)).astype(np.float32)
w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
expected = F.conv2d(x, w, padding=1)       # the parent runs a parallel region

def work(i):
    return cnnkit.get_num_threads(), F.conv2d(x, w, padding=1)

if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(work, range(4))
    for threads, y in results:
        assert threads == 1, threads
        assert np.array_equal(y, expected)
    assert cnnkit.get_num_threads() >= 1
    print("fork ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_children_run_single_threaded_and_do_not_hang(tmp_path):
    script = tmp_path / "fork_children.py"
    script.write_text(FORK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fork ok" in proc.stdout
