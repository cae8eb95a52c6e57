"""Reliability of cnnkit at its edges.

* Sizes: element counts and index products past 32 and 64 bits are refused
  with ValueError / MemoryError before memory is touched, by every kernel;
  absurd thread counts are refused or harmless.
* Concurrency: kernels and ``model.predict`` called from several Python
  threads (the GIL is released) give bit-identical results to serial calls,
  also while another thread changes ``cnnkit.set_num_threads``.
* Determinism: every kernel, forward and backward, and a whole seeded
  training run give bit-identical results for 1, 2, 3 and 7 threads.
* Data safety: an interrupted or killed save leaves the previous file
  intact; truncated, bit-flipped, foreign (npz, pickle), wrong-version and
  adversarial files give a clear ValueError, and a pickle is never executed.
* Resources: memory stays flat over 1,000 training steps and 10,000 calls of
  each kernel; Ctrl-C during ``fit`` returns within a second.

Everything that could crash, hang or allocate without bound runs in a child
interpreter (often with an address-space limit), so a failure is one failed
test.  No test needs more than a few hundred MB of memory.

(The numerics of each op at its edges -- NaN and Inf as in PyTorch, index
products above 2**31, long float32 reductions, extreme logits -- are in
that op family's test file.)
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

from helpers import GiB, SANITIZER, child_json, run_python


@pytest.fixture(autouse=True)
def default_threads():
    cnnkit.set_num_threads(0)
    yield
    cnnkit.set_num_threads(0)


no_rss_under_sanitizer = pytest.mark.skipif(
    SANITIZER or not os.path.exists("/proc/self/statm"),
    reason="needs /proc/self/statm; meaningless under AddressSanitizer, "
           "whose quarantine keeps freed memory resident")


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
        runs.append((model.flat_params.tobytes(), hist.history["loss"],
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
        meta=dict(_format.pack_metadata("model", cfg), format_version="3"))
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
