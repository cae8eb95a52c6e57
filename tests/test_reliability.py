"""Reliability of cnnkit at its edges.

* Sizes: element counts and index products past 32 and 64 bits are refused
  with ValueError / MemoryError before memory is touched; a legal problem
  whose lowered-matrix index product C*R*S*OH*OW exceeds 2**31 computes
  correctly; workspaces stay bounded for small arrays.
* Concurrency: kernels and ``model.predict`` called from several Python
  threads (the GIL is released) give bit-identical results to serial calls,
  also while another thread changes ``cnnkit.set_num_threads``.
* Determinism: every kernel, forward and backward, and a whole seeded
  training run give bit-identical results for 1, 2, 3 and 7 threads.
* Numerics: NaN and Inf propagate as in PyTorch; softmax cross-entropy is
  exact for logits of 1e4 and -1e30; float32 convolutions with long
  reductions stay within a stated tolerance of float64.
* Data safety: an interrupted or killed save leaves the previous file
  intact; truncated, bit-flipped, foreign (npz, pickle), wrong-version and
  adversarial files give a clear ValueError, and a pickle is never executed.
* Resources: memory stays flat over 1,000 training steps and 10,000 calls of
  each kernel; Ctrl-C during ``fit`` returns within a second.

Everything that could crash, hang or allocate without bound runs in a child
interpreter (often with an address-space limit), so a failure is one failed
test.  No test needs more than a few hundred MB of memory.
"""
import gc
import json
import math
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cnnkit
from cnnkit import _format
from cnnkit import functional as F
from cnnkit import layers as L
from cnnkit import reference as R

from helpers import require

GiB = 2**30


@pytest.fixture(autouse=True)
def default_threads():
    cnnkit.set_num_threads(0)
    yield
    cnnkit.set_num_threads(0)


SANITIZER = bool(os.environ.get("CNNKIT_SANITIZER"))
no_rss_under_sanitizer = pytest.mark.skipif(
    SANITIZER or not os.path.exists("/proc/self/statm"),
    reason="needs /proc/self/statm; meaningless under AddressSanitizer, "
           "whose quarantine keeps freed memory resident")


def run_python(code, timeout=120, memory_limit=None):
    """Run ``code`` in a fresh interpreter (optionally with an address-space
    limit in bytes); fail on a crash or a hang; return the finished process.
    Under AddressSanitizer (CNNKIT_SANITIZER set by tools/sanitize.sh) the
    limit caps single allocations (max_allocation_size_mb) instead, since
    ASan cannot run with an address-space limit."""
    prelude = "import faulthandler; faulthandler.enable()\n"
    env = dict(os.environ)
    if memory_limit and SANITIZER:
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            env.get("ASAN_OPTIONS", ""), "allocator_may_return_null=1",
            f"max_allocation_size_mb={int(memory_limit) >> 20}"]))
    elif memory_limit:
        prelude += ("import resource; resource.setrlimit(resource.RLIMIT_AS, "
                    f"({int(memory_limit)}, {int(memory_limit)}))\n")
    try:
        proc = subprocess.run([sys.executable, "-c",
                               prelude + textwrap.dedent(code)],
                              capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        out, err = (v.decode(errors="replace") if isinstance(v, bytes)
                    else v or "" for v in (exc.stdout, exc.stderr))
        pytest.fail(f"child did not finish in {timeout} s:\n{out}\n{err}")
    out = proc.stdout + proc.stderr
    assert "Fatal Python error" not in out, out[-6000:]
    assert proc.returncode >= 0, (
        f"child killed by signal {-proc.returncode}:\n{out[-6000:]}")
    return proc


def child_json(proc):
    """The last line of the child's stdout that starts with RESULT, as
    JSON."""
    lines = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
    assert lines and proc.returncode == 0, (
        f"child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def small_model(seed=0, dtype="float32"):
    return cnnkit.Sequential([
        L.Conv2D(4, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(6, 3, padding="same"), L.ReLU(), L.AvgPool2D(2),
        L.Flatten(), L.Dropout(0.25), L.Dense(5)],
        input_shape=(1, 8, 8), seed=seed, dtype=dtype)


def make_data(n, seed=0, classes=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0.0, 0.5, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, c % 4 * 2:c % 4 * 2 + 2, :] += 1.0 + c // 4
    return x, y


def bits(arrays):
    return [np.ascontiguousarray(a).tobytes() if a is not None else None
            for a in arrays]


# ==========================================================================
# sizes
# ==========================================================================
# (name, expression, allowed outcomes); evaluated in a child with a 1.5 GiB
# address-space limit.  "ValueError!" means ValueError whose message names
# the size limit (cnnkit's own check, made before any allocation).
HUGE_CASES = [
    ("conv2d output above 2**62 (2**20 filters, padding 2**20)",
     "F.conv2d(z(1, 1, 1, 1), bc((2**20, 1, 1, 1)), padding=2**20)",
     {"ValueError!"}),
    ("conv2d OH*OW above 2**62 (padding 2**31)",
     "F.conv2d(z(1, 1, 1, 1), z(1, 1, 1, 1), padding=2**31)",
     {"ValueError!"}),
    ("conv2d lowered matrix C*R*S*OH*OW above 2**62",
     "F.conv2d(bc((1, 2**22, 1, 1)), bc((1, 2**22, 1, 1)), padding=2**20)",
     {"ValueError!"}),
    ("conv2d padded input above 2**62",
     "F.conv2d(z(1, 1, 1, 1), z(1, 1, 1, 1), padding=2**62)",
     {"ValueError!"}),
    ("conv2d stride 2**63", "F.conv2d(z(1, 1, 4, 4), z(1, 1, 1, 1), "
     "stride=2**63)", {"ValueError!"}),
    ("conv2d dilation 2**62", "F.conv2d(z(1, 1, 4, 4), z(1, 1, 2, 2), "
     "dilation=2**62)", {"ValueError!"}),
    ("conv2d_backward output above 2**62",
     "F.conv2d_backward(z(1, 1, 1, 1), z(1, 1, 1, 1), z(1, 1, 1, 1), "
     "padding=2**31)", {"ValueError!"}),
    ("max_pool2d_backward plane of 2**80 elements",
     "F.max_pool2d_backward(z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), int), "
     "(1, 1, 2**40, 2**40))", {"ValueError!"}),
    ("avg_pool2d_backward input of 2**63 elements",
     "F.avg_pool2d_backward(z(1, 1, 1, 1), (1, 1, 2**62, 2), 2, "
     "stride=2**62)", {"ValueError!"}),
    ("max_pool2d kernel above 2**62",
     "F.max_pool2d(z(1, 1, 4, 4), 2**62 + 1)", {"ValueError!"}),
    ("max_pool2d_backward plane of 2**62 elements (2**65 bytes)",
     "F.max_pool2d_backward(z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), int), "
     "(1, 1, 2**31, 2**31))", {"ValueError", "MemoryError"}),
    ("conv2d output of 2**41 elements",
     "F.conv2d(z(1, 1, 1, 1), z(1, 1, 1, 1), padding=(0, 2**40))",
     {"ValueError", "MemoryError"}),
    ("relu of a broadcast array of 2**60 elements",
     "F.relu(bc((2**30, 2**30)))", {"ValueError", "MemoryError"}),
    ("relu of a broadcast array of 2**32 elements",
     "F.relu(bc((2**16, 2**16)))", {"ValueError", "MemoryError"}),
    ("conv2d of a broadcast input of 2**33 elements",
     "F.conv2d(bc((2, 1, 2**16, 2**16)), bc((1, 1, 1, 1)))",
     {"ValueError", "MemoryError"}),
    ("dense of a broadcast input of 2**32 elements",
     "F.dense(bc((2**31, 2)), bc((3, 2)))", {"ValueError", "MemoryError"}),
    ("dense output of 2**63 elements",
     "F.dense(bc((2**31, 1)), bc((2**32, 1)))",
     {"ValueError", "MemoryError"}),
    ("softmax_cross_entropy of 2**31 rows",
     "F.softmax_cross_entropy(bc((2**31, 2)), "
     "np.broadcast_to(np.int8(0), (2**31,)))",
     {"ValueError", "MemoryError"}),
    ("Sequential.predict of 2**32 broadcast samples",
     "model.predict(bc((2**32, 1, 8, 8)))", {"ValueError", "MemoryError"}),
]


def test_huge_sizes_are_refused_before_memory_is_touched():
    """Sizes past 2**31 and 2**62 elements raise ValueError (cnnkit's own
    check, message naming the limit) or MemoryError (an allocation that the
    system refuses at once), in under 2 s each, while the child's peak
    resident memory grows by less than 64 MB."""
    code = f"""
    import json, resource, time
    import numpy as np
    import cnnkit
    from cnnkit import functional as F, layers as L
    z = lambda *s: np.zeros(s, np.float32)
    bc = lambda s: np.broadcast_to(np.float32(1), s)
    model = cnnkit.Sequential([L.Flatten(), L.Dense(2)], input_shape=(1, 8, 8))
    out = {{}}
    for name, expr, _ in {[(n, e, None) for n, e, _ in HUGE_CASES]!r}:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            eval(expr)
            kind, msg = "returned", ""
        except MemoryError as exc:
            kind, msg = "MemoryError", str(exc)
        except Exception as exc:
            kind, msg = type(exc).__name__, str(exc)
        dt = time.perf_counter() - t0
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        out[name] = [kind, msg[:300], dt, grown]
    print("RESULT " + json.dumps(out))
    """
    res = child_json(run_python(code, timeout=300, memory_limit=1.5 * GiB))
    problems = []
    for name, _, allowed in HUGE_CASES:
        kind, msg, seconds, grown_kb = res[name]
        ok = kind in allowed or (
            kind == "ValueError" and "ValueError!" in allowed and
            any(w in msg for w in ("2**62", "too large", "larger than")))
        if not ok or not msg or seconds > 2.0 or grown_kb > 64 * 1024:
            problems.append((name, kind, msg, round(seconds, 2), grown_kb))
    assert not problems, "\n".join(map(str, problems))


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


@pytest.mark.parametrize("n", [2**31 - 1, 2**31, 2**40])
def test_absurd_thread_counts_are_refused_or_harmless(n):
    """set_num_threads(n) for a count no machine has either raises
    ValueError, or leaves every kernel working with bit-identical results
    (and get_num_threads working)."""
    code = f"""
    import json
    import numpy as np
    import cnnkit
    from cnnkit import functional as F
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    a = rng.standard_normal((40, 30)); b = rng.standard_normal((20, 30))
    def run():
        return [F.conv2d(x, w, padding=1), F.dense(a, b),
                F.softmax(a), F.relu(a)]
    cnnkit.set_num_threads(1)
    ref = [r.tobytes() for r in run()]
    try:
        cnnkit.set_num_threads({n})
    except ValueError as exc:
        print("RESULT " + json.dumps(["refused", str(exc)]))
        raise SystemExit
    try:
        cnnkit.get_num_threads()
        same = [r.tobytes() for r in run()] == ref
        print("RESULT " + json.dumps(["ok" if same else "different", ""]))
    except Exception as exc:
        print("RESULT " + json.dumps([type(exc).__name__, str(exc)]))
    """
    kind, msg = child_json(run_python(code, timeout=120,
                                      memory_limit=2 * GiB))
    assert kind in ("refused", "ok"), f"after set_num_threads({n}): {kind}: " \
                                      f"{msg}"


# ==========================================================================
# concurrency and determinism
# ==========================================================================
def _kernel_ops(rng, dt, scale=1):
    """name -> zero-argument callable returning a list of arrays; sizes big
    enough that every kernel takes its parallel path."""
    n = 13 * scale
    x = rng.standard_normal((n, 8, 15, 15)).astype(dt)
    w = rng.standard_normal((12, 8, 3, 3)).astype(dt)
    b = rng.standard_normal(12).astype(dt)
    gy = rng.standard_normal((n, 12, 15, 15)).astype(dt)
    gs = rng.standard_normal((n, 12, 7, 7)).astype(dt)
    w1 = rng.standard_normal((16, 8, 1, 1)).astype(dt)
    g1 = rng.standard_normal((n, 16, 15, 15)).astype(dt)
    xp = rng.integers(-4, 4, (n, 8, 15, 15)).astype(dt)   # ties
    gp = rng.standard_normal((n, 8, 8, 8)).astype(dt)
    ga = rng.standard_normal((n, 8, 8, 8)).astype(dt)
    gg = rng.standard_normal((n, 8)).astype(dt)
    fx = rng.standard_normal((37, 300)).astype(dt)
    fw = rng.standard_normal((4100, 300)).astype(dt)
    fb = rng.standard_normal(4100).astype(dt)
    fg = rng.standard_normal((37, 4100)).astype(dt)
    z = (rng.standard_normal((300, 70)) * 4).astype(dt)
    lab = rng.integers(0, 70, 300)
    sw = rng.random(300)
    r = rng.standard_normal((5, 8, 32, 32)).astype(dt)
    rg = rng.standard_normal(r.shape).astype(dt)

    def maxpool():
        y, idx = F.max_pool2d(xp, 3, stride=2, padding=1)
        return [y, idx, F.max_pool2d_backward(gp, idx, xp.shape)]

    return {
        "conv2d": lambda: [F.conv2d(x, w, b, padding=1)],
        "conv2d_strided_dilated": lambda: [F.conv2d(
            x, w, b, stride=(2, 2), padding=(0, 1), dilation=(1, 2))],
        "conv2d_backward": lambda: list(F.conv2d_backward(gy, x, w,
                                                          padding="same")),
        "conv2d_backward_strided": lambda: list(F.conv2d_backward(
            gs, x, w, stride=(2, 2), padding=(0, 1), dilation=(1, 2))),
        "conv2d_1x1": lambda: [F.conv2d(x, w1)] + list(
            F.conv2d_backward(g1, x, w1)),
        "relu": lambda: [F.relu(r), F.relu_backward(rg, r)],
        "max_pool2d": maxpool,
        "avg_pool2d": lambda: [
            F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
            F.avg_pool2d_backward(ga, x.shape, 3, stride=2, padding=1,
                                  count_include_pad=False)],
        "global_avg_pool2d": lambda: [
            F.global_avg_pool2d(x), F.global_avg_pool2d_backward(gg, x.shape)],
        "dense": lambda: [F.dense(fx, fw, fb)] + list(
            F.dense_backward(fg, fx, fw)),
        "softmax": lambda: [F.softmax(z)],
        "softmax_cross_entropy": lambda: [np.asarray(v) for v in (
            *F.softmax_cross_entropy(z, lab),
            *F.softmax_cross_entropy(z, lab, sample_weight=sw))],
    }


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_kernel_is_bit_identical_for_1_2_3_7_threads(dt):
    ops = _kernel_ops(np.random.default_rng(1), dt)
    cnnkit.set_num_threads(1)
    ref = {name: bits(op()) for name, op in ops.items()}
    for n in (2, 3, 7):
        cnnkit.set_num_threads(n)
        for name, op in ops.items():
            assert bits(op()) == ref[name], f"{name} differs with {n} threads"


def test_training_is_bit_identical_for_1_2_3_threads():
    x, y = make_data(96)
    runs = []
    for n in (1, 2, 3):
        cnnkit.set_num_threads(n)
        model = small_model(seed=11)
        hist = model.fit(x, y, epochs=3, batch_size=16,
                         optimizer=cnnkit.optim.Adam(1e-2),
                         validation_split=0.25, verbose=0)
        runs.append((model._flat_params.tobytes(), hist.history["loss"],
                     hist.history["val_loss"]))
    assert runs[0][1][-1] < runs[0][1][0]          # it did train
    for run in runs[1:]:
        assert run == runs[0]


def test_kernels_from_threads_are_bit_identical_to_serial_calls():
    ops = _kernel_ops(np.random.default_rng(2), np.float32)
    serial = {name: bits(op()) for name, op in ops.items()}
    jobs = [name for name in ops for _ in range(3)]
    random.Random(0).shuffle(jobs)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: (name, bits(ops[name]())), jobs))
    for name, got in results:
        assert got == serial[name], f"{name} differs when run in threads"


def test_kernels_release_the_gil():
    """While a long kernel runs in a worker thread, the main thread keeps
    running Python code: the longest pause it sees is far below the
    kernel's duration."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64, 32, 32)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    g = rng.standard_normal((16, 64, 32, 32)).astype(np.float32)
    a = rng.standard_normal((1000, 1000)).astype(np.float32)
    b = rng.standard_normal((1000, 1000)).astype(np.float32)
    cnnkit.set_num_threads(1)
    calls = {
        "conv2d": lambda: F.conv2d(x, w, padding=1),
        "conv2d_backward": lambda: F.conv2d_backward(g, x, w, padding=1),
        "dense": lambda: F.dense(a, b),
    }
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        duration = time.perf_counter() - t0
        reps = max(1, math.ceil(0.4 / duration))
        done = threading.Event()

        def work():
            for _ in range(reps):
                call()
            done.set()

        worker = threading.Thread(target=work)
        last = time.perf_counter()
        worker.start()
        longest, loops = 0.0, 0
        while not done.is_set():
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now
            loops += 1
        worker.join()
        assert longest < 0.5 * duration * reps and loops > 1000, (
            f"{name}: main thread stalled {longest:.3f} s during "
            f"{reps} x {duration:.3f} s of kernel")


def test_predict_from_threads_is_bit_identical_to_serial():
    model = small_model(seed=3)
    x, y = make_data(64, seed=5)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    probs, labels = model.predict_proba(x).tobytes(), model.predict(x)

    def job(i):
        return model.predict_proba(x).tobytes(), model.predict(x)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for p, lab in pool.map(job, range(12)):
            assert p == probs
            assert np.array_equal(lab, labels)


def test_kernels_work_in_children_forked_after_parallel_work():
    """A process that ran parallel kernels forks workers (multiprocessing's
    "fork" start method, as joblib and DataLoader-style code do); each
    child's kernels finish -- no OpenMP deadlock -- with bit-identical
    results."""
    code = """
    import json, multiprocessing as mp
    import numpy as np
    import cnnkit
    from cnnkit import functional as F
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 16, 16))
    w = rng.standard_normal((8, 8, 3, 3))
    def run(_):
        return (F.conv2d(x, w, padding=1).tobytes() +
                F.dense(x.reshape(8, -1), x.reshape(8, -1)).tobytes())
    cnnkit.set_num_threads(2)
    parent = run(0)                     # the parallel region exists now
    with mp.get_context("fork").Pool(2) as pool:
        children = pool.map(run, range(4))
    print("RESULT " + json.dumps([c == parent for c in children]))
    """
    assert child_json(run_python(code, timeout=120)) == [True] * 4


def test_set_num_threads_toggled_while_other_threads_compute():
    ops = _kernel_ops(np.random.default_rng(4), np.float64)
    names = ["conv2d", "conv2d_backward", "dense", "softmax_cross_entropy",
             "max_pool2d", "avg_pool2d"]
    cnnkit.set_num_threads(1)
    serial = {name: bits(ops[name]()) for name in names}
    stop = threading.Event()
    seen = []

    def toggler():
        rng = random.Random(1)
        while not stop.is_set():
            cnnkit.set_num_threads(rng.choice([0, 1, 2, 3, 4, 7]))
            seen.append(cnnkit.get_num_threads())
            time.sleep(0.001)

    def worker(k):
        out = []
        for i in range(6):
            name = names[(k + i) % len(names)]
            out.append((name, bits(ops[name]())))
        return out

    t = threading.Thread(target=toggler)
    t.start()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = [r for rs in pool.map(worker, range(3)) for r in rs]
    finally:
        stop.set()
        t.join()
    assert len(set(seen)) > 2 and all(n >= 1 for n in seen)
    for name, got in results:
        assert got == serial[name], f"{name} changed while threads toggled"


# ==========================================================================
# numerics
# ==========================================================================
def _special(rng, shape, dt, frac=0.1):
    a = rng.standard_normal(shape)
    mask = rng.random(shape) < frac
    a[mask] = rng.choice([np.nan, np.inf, -np.inf], int(mask.sum()))
    return a.astype(dt)


def _same_specials(ours, theirs, rtol, what):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs,
                                                            np.float64)
    assert ours.shape == theirs.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs),
                                  err_msg=f"{what}: NaN positions")
    inf = np.isinf(theirs)
    np.testing.assert_array_equal(np.isinf(ours), inf,
                                  err_msg=f"{what}: inf positions")
    np.testing.assert_array_equal(ours[inf], theirs[inf],
                                  err_msg=f"{what}: inf signs")
    fin = np.isfinite(theirs)
    np.testing.assert_allclose(ours[fin], theirs[fin], rtol=rtol,
                               atol=rtol, err_msg=what)


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_and_inf_propagate_as_in_pytorch(dt):
    """Max pooling (values and indices, with -inf padding), ReLU, average
    pooling, convolution with NaN/Inf inputs (finite weights), dense and
    softmax: NaN and +-inf land where PyTorch puts them."""
    torch = require("torch")
    tF = torch.nn.functional
    rtol = 1e-4 if dt == np.float32 else 1e-10
    rng = np.random.default_rng(7)
    x = _special(rng, (2, 3, 9, 8), dt)
    tx = torch.from_numpy(x)
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), 1, (1, 1))]:
        y, idx = F.max_pool2d(x, k, stride=s, padding=p)
        ty, tidx = tF.max_pool2d(tx, k, s, p, return_indices=True)
        _same_specials(y, ty.numpy(), 0, f"max_pool2d {k} {s} {p}")
        np.testing.assert_array_equal(idx, tidx.numpy())
        _same_specials(F.avg_pool2d(x, k, stride=s, padding=p),
                       tF.avg_pool2d(tx, k, s, p).numpy(), rtol,
                       f"avg_pool2d {k} {s} {p}")
    _same_specials(F.relu(x), torch.relu(tx).numpy(), 0, "relu")
    w = rng.standard_normal((4, 3, 3, 2)).astype(dt)
    for s, p, d in [(1, 0, 1), (1, 1, 1), (2, 2, 1), (1, 2, 2)]:
        _same_specials(F.conv2d(x, w, stride=s, padding=p, dilation=d),
                       tF.conv2d(tx, torch.from_numpy(w), stride=s, padding=p,
                                 dilation=d).numpy(), rtol,
                       f"conv2d s={s} p={p} d={d}")
    a = _special(rng, (6, 20), dt)
    b = rng.standard_normal((5, 20)).astype(dt)
    _same_specials(F.dense(a, b), tF.linear(torch.from_numpy(a),
                                            torch.from_numpy(b)).numpy(),
                   rtol, "dense")
    z = _special(rng, (12, 4), dt, frac=0.2)
    _same_specials(F.softmax(z), torch.softmax(torch.from_numpy(z),
                                               1).numpy(), rtol, "softmax")


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
        _same_specials(ours, theirs, 1e-10, f"s={s} p={p}")
        with np.errstate(invalid="ignore"):
            ref = R.conv2d(x, w, stride=s, padding=p)
        _same_specials(ours, ref, 1e-10, f"reference s={s} p={p}")
    g = rng.standard_normal((2, 4, 6, 6))
    gx, gw, gb = F.conv2d_backward(g, x, w, padding=1)
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, padding=1).backward(torch.from_numpy(g))
    _same_specials(gx, tx.grad.numpy(), 1e-10, "grad_x")
    _same_specials(gw, tw.grad.numpy(), 1e-10, "grad_weight")


def test_relu_backward_at_nan_matches_pytorch():
    """PyTorch's ReLU backward passes grad_out through at a NaN input (its
    mask is computed from the NaN output); at 0, -0 and negatives it is 0."""
    torch = require("torch")
    x = np.array([np.nan, 0.0, -0.0, 1.5, -1.0, np.inf, -np.inf, 1e-30])
    g = np.arange(1.0, 9.0)
    tx = torch.from_numpy(x).requires_grad_()
    torch.relu(tx).backward(torch.from_numpy(g))
    np.testing.assert_array_equal(F.relu_backward(g, x), tx.grad.numpy())


def test_inf_reaches_only_its_receptive_field():
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
    # dense: one row's inf stays in its row
    a = rng.standard_normal((6, 30))
    b = np.abs(rng.standard_normal((9, 30)))
    clean = F.dense(a, b)
    a[4, 3] = np.inf
    dirty = F.dense(a, b)
    assert np.all(np.isposinf(dirty[4]))
    assert np.delete(dirty, 4, 0).tobytes() == np.delete(clean, 4, 0).tobytes()


def test_softmax_cross_entropy_exact_for_extreme_logits():
    """float64: loss and gradient are exact for logits of 1e4, -1e4 and
    -1e30 (log-sum-exp around the row maximum), and match PyTorch."""
    z = np.array([[0.0, -1e30], [1e4, 0.0], [-1e30, -1e30],
                  [-1e4, -1e4], [1e4, -1e4]])
    labels = np.array([1, 1, 0, 1, 0])
    loss, grad = F.softmax_cross_entropy(z, labels)
    per_row = [1e30, 1e4, math.log(2.0), math.log(2.0), 0.0]
    assert loss == pytest.approx(sum(per_row) / 5, rel=2**-52)
    expected = np.array([[1.0, -1.0], [1.0, -1.0], [-0.5, 0.5],
                         [0.5, -0.5], [0.0, 0.0]]) / 5
    np.testing.assert_array_equal(grad, expected)
    for row, lab, value in zip(z, labels, per_row):
        l1, g1 = F.softmax_cross_entropy(row[None], [lab])
        assert l1 == value
    l32, g32 = F.softmax_cross_entropy(np.float32([[0.0, -1e30]]), [1])
    assert l32 == np.float32(-1e30) * -1 and g32.tolist() == [[1.0, -1.0]]
    try:
        import torch
    except ImportError:
        return
    tl = torch.nn.functional.cross_entropy(torch.from_numpy(z),
                                           torch.from_numpy(labels))
    assert float(tl) == pytest.approx(float(loss), rel=1e-15)


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
# data safety: saving
# ==========================================================================
def trained_model(seed=0):
    model = small_model(seed=seed)
    x, y = make_data(32, seed=seed)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)   # optimizer state
    return model


class _FailingFile:
    """A file whose ``fail_at``-th write writes half its bytes and raises."""

    def __init__(self, f, fail_at, exc):
        self._f, self.fail_at, self.exc, self.writes = f, fail_at, exc, 0

    def write(self, data):
        self.writes += 1
        if self.writes == self.fail_at:
            view = memoryview(data).cast("B")
            self._f.write(view[:len(view) // 2])
            self._f.flush()
            raise self.exc
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def test_save_interrupted_at_every_point_keeps_the_old_file(tmp_path,
                                                            monkeypatch):
    """A failure at each write (OSError and KeyboardInterrupt, half the
    bytes written), at fsync and at the rename leaves the previous file
    byte-identical and loadable, and no temporary file behind."""
    path = tmp_path / "m.cnnkit"
    old = trained_model(seed=1)
    old.save(path)
    old_bytes = path.read_bytes()
    new = trained_model(seed=2)
    real_open = _format._open_temp
    files = []

    def counting_open(directory, base):
        f, tmp = real_open(directory, base)
        files.append(_FailingFile(f, None, None))
        return files[-1], tmp

    monkeypatch.setattr(_format, "_open_temp", counting_open)
    new.save(tmp_path / "count.cnnkit")
    nwrites = files[-1].writes
    assert nwrites >= 5
    (tmp_path / "count.cnnkit").unlink()

    failures = [("write", k, OSError(28, "No space left on device"))
                for k in range(1, nwrites + 1)]
    failures += [("write", nwrites // 2, KeyboardInterrupt()),
                 ("fsync", 0, OSError(5, "I/O error")),
                 ("replace", 0, OSError(18, "cross-device link"))]
    for where, k, exc in failures:
        monkeypatch.undo()
        if where == "write":
            def failing_open(directory, base, k=k, exc=exc):
                f, tmp = real_open(directory, base)
                return _FailingFile(f, k, exc), tmp
            monkeypatch.setattr(_format, "_open_temp", failing_open)
        else:
            def boom(*args, exc=exc):
                raise exc
            monkeypatch.setattr(_format.os, where, boom)
        with pytest.raises(type(exc)):
            new.save(path)
        monkeypatch.undo()
        assert path.read_bytes() == old_bytes, (where, k)
        assert sorted(os.listdir(tmp_path)) == ["m.cnnkit"], (where, k)
    loaded = cnnkit.load_model(path)
    for a, b in zip(loaded.get_weights(), old.get_weights()):
        assert a.tobytes() == b.tobytes()


def test_save_killed_midway_leaves_old_or_new_file(tmp_path):
    """A process killed (SIGKILL) while it saves two models alternately to
    one path leaves a file that loads as exactly one of the two."""
    path = tmp_path / "m.cnnkit"
    code = f"""
    import cnnkit, sys
    from cnnkit import layers as L
    models = [cnnkit.Sequential([L.Flatten(), L.Dense(1500), L.Dense(3)],
                                input_shape=(1, 32, 32), seed=s)
              for s in (1, 2)]
    models[0].save({str(path)!r})
    print("READY", flush=True)
    i = 0
    while True:
        models[i % 2].save({str(path)!r})
        i += 1
    """
    expected = [cnnkit.Sequential([L.Flatten(), L.Dense(1500), L.Dense(3)],
                                  input_shape=(1, 32, 32), seed=s)
                .get_weights() for s in (1, 2)]
    for delay in (0.05, 0.21, 0.43):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "READY"
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        weights = cnnkit.load_model(path).get_weights()
        assert any(all(a.tobytes() == b.tobytes()
                       for a, b in zip(weights, exp)) for exp in expected)


# ==========================================================================
# data safety: loading damaged, foreign and adversarial files
# ==========================================================================
def test_truncated_model_files_are_refused(tmp_path):
    src = tmp_path / "m.cnnkit"
    trained_model().save(src)
    data = src.read_bytes()
    cut = tmp_path / "cut.cnnkit"
    sizes = sorted(set(range(0, 80)) | set(range(80, len(data), 37)) |
                   set(range(len(data) - 40, len(data))))
    for size in sizes:
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match="cut.cnnkit"):
            cnnkit.load_model(cut)


def test_bit_flipped_model_files_never_crash():
    """400 copies of a real model file (with optimizer state) with 1-3
    random bytes replaced, loaded in a child with a 2 GiB address-space
    limit: each load raises ValueError, or gives a model that passes its own
    checks (shapes of every parameter, predict, save and reload)."""
    code = """
    import json, os, tempfile
    import numpy as np
    import cnnkit
    from cnnkit import layers as L
    d = tempfile.mkdtemp()
    model = cnnkit.Sequential([L.Conv2D(3, 3, padding=1), L.ReLU(),
                               L.MaxPool2D(2), L.Flatten(), L.Dense(4)],
                              input_shape=(1, 6, 6), seed=0)
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((16, 1, 6, 6)), rng.integers(0, 4, 16),
              epochs=1, batch_size=8, verbose=0)
    src = os.path.join(d, "m.cnnkit")
    model.save(src)
    data = open(src, "rb").read()
    path = os.path.join(d, "flip.cnnkit")
    counts = {"ValueError": 0, "loaded": 0}
    bad = []
    for trial in range(400):
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        open(path, "wb").write(bytes(raw))
        try:
            m = cnnkit.load_model(path)
        except ValueError as exc:
            counts["ValueError"] += 1
            if not str(exc):
                bad.append((trial, "empty message"))
            continue
        except BaseException as exc:
            bad.append((trial, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        try:
            shape = m.input_shape
            for layer in m.layers:
                want = layer.param_shapes(layer.input_shape)
                got = {k: v.shape for k, v in layer.params.items()}
                assert got == want, (got, want)
            p = m.predict(np.zeros((2,) + shape))
            assert p.shape == (2,)
            m.save(os.path.join(d, "again.cnnkit"))
            cnnkit.load_model(os.path.join(d, "again.cnnkit"))
            counts["loaded"] += 1
        except BaseException as exc:
            bad.append((trial, f"loaded but broken: {type(exc).__name__}: "
                               f"{exc}"[:300]))
    print("RESULT " + json.dumps({"counts": counts, "bad": bad[:20]}))
    """
    res = child_json(run_python(code, timeout=300, memory_limit=2 * GiB))
    assert not res["bad"], res
    assert res["counts"]["ValueError"] > 50 and res["counts"]["loaded"] > 5


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickles_are_refused_and_never_executed(tmp_path, protocol):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps({"weights": Evil()}, protocol=protocol)
    # the payload works: unpickling it does create the marker
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    for name in ("model.cnnkit", "model.pkl", "model.joblib"):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ValueError, match=name):
            cnnkit.load_model(path)
        assert not marker.exists(), "loading executed the pickle"


def test_foreign_array_files_are_refused(tmp_path):
    model = trained_model()
    state = model.state_dict()
    np.savez(tmp_path / "weights.npz", **state)
    np.save(tmp_path / "weights.npy", state["0.weight"])
    (tmp_path / "random.cnnkit").write_bytes(
        np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    for name in ("weights.npz", "weights.npy", "random.cnnkit"):
        with pytest.raises(ValueError, match=name) as info:
            cnnkit.load_model(tmp_path / name)
        assert "cnnkit" in str(info.value)


def _config_and_state():
    model = small_model(seed=0)
    return model.get_config(), model.state_dict()


def _write(path, tensors, config, extra=None, meta=None):
    meta = meta if meta is not None else _format.pack_metadata(
        "model", config, extra)
    _format.save_file(path, tensors, meta)
    return path


def _raw_file(path, header_text, data=b""):
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _adversarial_files(tmp_path):
    """name -> path of a crafted file that load_model must refuse."""
    cfg, state = _config_and_state()
    files = {}

    def variant(name, change_cfg=None, change_state=None, **kw):
        c = json.loads(json.dumps(cfg))
        s = dict(state)
        if change_cfg:
            change_cfg(c)
        if change_state:
            change_state(s)
        files[name] = _write(tmp_path / f"{name}.cnnkit", s, c, **kw)

    variant("weight of the wrong shape", change_state=lambda s: s.update(
        {"0.weight": np.zeros((4, 1, 3, 2), np.float32)}))
    variant("bias of the wrong shape", change_state=lambda s: s.update(
        {"0.bias": np.zeros(5, np.float32)}))
    variant("weight of the wrong dtype", change_state=lambda s: s.update(
        {"8.weight": s["8.weight"].astype(np.float64)}))
    variant("missing tensor", change_state=lambda s: s.pop("3.bias"))
    variant("extra tensor", change_state=lambda s: s.update(
        {"9.weight": np.zeros(3, np.float32)}))
    variant("unknown layer type", change_cfg=lambda c: c["layers"][1].update(
        {"class_name": "Lambda", "config": {"function": "os.system"}}))
    variant("dunder layer type", change_cfg=lambda c: c["layers"][1].update(
        {"class_name": "__class__"}))
    variant("layer config with an unknown argument",
            change_cfg=lambda c: c["layers"][0]["config"].update(
                {"activation": "eval"}))
    variant("negative filters", change_cfg=lambda c: c["layers"][0][
        "config"].update({"filters": -4}))
    variant("zero input size", change_cfg=lambda c: c.update(
        {"input_shape": [1, 0, 8]}))
    variant("input size above 2**64", change_cfg=lambda c: c.update(
        {"input_shape": [1, 2**70, 8]}))
    flat = cnnkit.Sequential([L.Flatten(), L.Dense(5)], input_shape=(1, 2, 2))
    wrap_cfg = flat.get_config()
    wrap_cfg["input_shape"] = [1, 2**32, 2**32]      # 2**64 features -> 0
    files["input shape whose product wraps around 2**64"] = _write(
        tmp_path / "wrap.cnnkit", {"1.weight": np.zeros((5, 0), np.float32),
                                   "1.bias": np.zeros(5, np.float32)},
        wrap_cfg)
    variant("float16 model dtype", change_cfg=lambda c: c.update(
        {"dtype": "float16"}))
    variant("layers not a list", change_cfg=lambda c: c.update(
        {"layers": {"0": "Conv2D"}}))
    variant("unknown optimizer", extra={"optimizer": json.dumps(
        {"class_name": "pickle.loads", "lr": 1})})
    files["newer format version"] = _write(
        tmp_path / "newer.cnnkit", state, cfg,
        meta=dict(_format.pack_metadata("model", cfg), format_version="2"))
    files["format version 0"] = _write(
        tmp_path / "v0.cnnkit", state, cfg,
        meta=dict(_format.pack_metadata("model", cfg), format_version="0"))
    files["another kind"] = _write(tmp_path / "kind.cnnkit", state, cfg,
                                   meta=_format.pack_metadata("optimizer",
                                                              cfg))
    files["config not JSON"] = _write(
        tmp_path / "cfg.cnnkit", state, cfg,
        meta=dict(_format.pack_metadata("model", cfg), config="{'a': 1}"))
    meta = json.dumps(_format.pack_metadata("model", cfg))
    entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    files["duplicate tensor names"] = _raw_file(
        tmp_path / "dup.cnnkit",
        f'{{"__metadata__":{meta},"0.bias":{entry},"0.bias":{entry}}}',
        b"\0" * 4)
    files["absurd tensor size in the header"] = _raw_file(
        tmp_path / "absurd.cnnkit",
        f'{{"__metadata__":{meta},"0.bias":{{"dtype":"F32","shape":'
        f'[{2**40},{2**40}],"data_offsets":[0,4]}}}}', b"\0" * 4)
    files["header length of 2**63"] = tmp_path / "len.cnnkit"
    files["header length of 2**63"].write_bytes(struct.pack("<Q", 2**63) +
                                                b"{}      ")
    return files


ADVERSARIAL = [
    "weight of the wrong shape", "bias of the wrong shape",
    "weight of the wrong dtype", "missing tensor", "extra tensor",
    "unknown layer type", "dunder layer type",
    "layer config with an unknown argument", "negative filters",
    "zero input size", "input size above 2**64",
    "input shape whose product wraps around 2**64", "float16 model dtype",
    "layers not a list", "unknown optimizer", "newer format version",
    "format version 0", "another kind", "config not JSON",
    "duplicate tensor names", "absurd tensor size in the header",
    "header length of 2**63",
]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_model_files_give_a_clear_error(tmp_path, name):
    path = _adversarial_files(tmp_path)[name]
    with pytest.raises(ValueError) as info:
        cnnkit.load_model(path)
    message = str(info.value)
    assert path.name in message, message
    if name == "newer format version":
        assert "upgrade" in message


def test_header_driven_allocation_is_bounded_by_the_file():
    """A file of a few KB whose architecture asks for 2**30 parameters
    (Dense(2**26) on 16 features) and holds none of them is refused with
    ValueError inside a 1.5 GiB address space: loading must compare the
    architecture with the tensors in the file before allocating the
    model."""
    code = """
    import json, os, tempfile
    import numpy as np
    import cnnkit
    from cnnkit import _format, layers as L
    cfg = cnnkit.Sequential([L.Dense(3)], input_shape=(16,)).get_config()
    cfg["layers"][0]["config"]["units"] = 2**26
    path = os.path.join(tempfile.mkdtemp(), "dos.cnnkit")
    _format.save_file(path, {"0.weight": np.zeros((3, 16), np.float32),
                             "0.bias": np.zeros(3, np.float32)},
                      _format.pack_metadata("model", cfg))
    try:
        cnnkit.load_model(path)
        r = ["loaded", ""]
    except Exception as exc:
        r = [type(exc).__name__ if not isinstance(exc, MemoryError)
             else "MemoryError", str(exc)[:300]]
    print("RESULT " + json.dumps([os.path.getsize(path)] + r))
    """
    size, kind, msg = child_json(run_python(code, timeout=120,
                                            memory_limit=1.5 * GiB))
    assert size < 4096
    assert kind == "ValueError", f"{kind}: {msg}"


# ==========================================================================
# resources
# ==========================================================================
def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@no_rss_under_sanitizer
def test_training_memory_is_flat_over_1000_steps():
    model = small_model(seed=4)
    x, y = make_data(8000, seed=4)
    model.fit(x[:800], y[:800], epochs=1, batch_size=8, verbose=0)  # warm-up
    gc.collect()
    before = rss_bytes()
    hist = model.fit(x, y, epochs=1, batch_size=8, verbose=0)     # 1000 steps
    gc.collect()
    grown = rss_bytes() - before
    assert hist.epoch == [0]
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB"


@no_rss_under_sanitizer
def test_repeated_kernel_calls_do_not_grow_memory():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 8, 8))
    gp = rng.standard_normal((2, 3, 4, 4))
    a, b = rng.standard_normal((4, 10)), rng.standard_normal((3, 10))
    ga, lab = rng.standard_normal((4, 3)), np.array([0, 1, 2, 0])
    _, idx = F.max_pool2d(x, 2)
    calls = {
        "conv2d": lambda: F.conv2d(x, w, padding=1),
        "conv2d_backward": lambda: F.conv2d_backward(g, x, w, padding=1),
        "relu": lambda: F.relu(x),
        "relu_backward": lambda: F.relu_backward(x, x),
        "max_pool2d": lambda: F.max_pool2d(x, 2),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(gp, idx,
                                                             x.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, 2),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(gp, x.shape, 2),
        "global_avg_pool2d": lambda: F.global_avg_pool2d(x),
        "dense": lambda: F.dense(a, b),
        "dense_backward": lambda: F.dense_backward(ga, a, b),
        "softmax": lambda: F.softmax(a),
        "softmax_cross_entropy": lambda: F.softmax_cross_entropy(ga, lab),
        "error path": lambda: _swallow(F.conv2d, x, w[:, :2]),
    }
    for name, call in calls.items():
        for _ in range(300):
            call()
        gc.collect()
        before = rss_bytes()
        for _ in range(10_000):
            call()
        gc.collect()
        grown = rss_bytes() - before
        assert grown < 4 * 2**20, f"{name}: RSS grew {grown / 2**20:.1f} MB"


def _swallow(fn, *args):
    try:
        fn(*args)
    except ValueError:
        pass


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals need the main thread")
def test_ctrl_c_during_fit_returns_within_a_second():
    """SIGINT from a timer thread while fit runs (steps of about 50 ms):
    fit returns within 1 s with history.interrupted, the model still
    predicts, and the previous SIGINT handler is back."""
    model = cnnkit.Sequential([L.Conv2D(16, 3, padding=1), L.ReLU(),
                               L.Conv2D(16, 3, padding=1), L.ReLU(),
                               L.MaxPool2D(2), L.Flatten(), L.Dense(5)],
                              input_shape=(1, 32, 32), seed=0)
    x = np.random.default_rng(0).standard_normal((512, 1, 32, 32))
    y = np.random.default_rng(1).integers(0, 5, 512)
    handler = signal.getsignal(signal.SIGINT)
    sent = []

    def interrupt():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.7, interrupt)
    t0 = time.perf_counter()
    timer.start()
    try:
        hist = model.fit(x, y, epochs=200, batch_size=64, verbose=0)
    finally:
        timer.cancel()
    returned = time.perf_counter()
    assert sent, "fit finished before the interrupt was sent"
    assert hist.interrupted
    assert returned - sent[0] < 1.0, f"took {returned - sent[0]:.2f} s"
    assert returned - t0 < 30
    assert signal.getsignal(signal.SIGINT) is handler
    assert model.predict(x[:4]).shape == (4,)
