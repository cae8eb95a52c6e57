"""Data-parallel training over MPI: bit-identical to one process.

The MPI tests launch ``mpiexec -n N python -m mpi4py tests/mpi_worker.py``.
They need mpi4py and an MPI runtime (``pip install ".[test]"`` brings
mpi4py and mpich); with CNNKIT_REQUIRE_EXTRAS=1 (set by CI) their absence is a
failure instead of a skip.
"""
import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cnnkit
from cnnkit.trainer import Trainer
from cnnkit import distributed, layers
from cnnkit.distributed import DataParallel, bounds as _bounds, tree_sum as _tree_sum

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mpi_worker  # noqa: E402
from helpers import extra_missing, num_threads, require  # noqa: E402

TIMEOUT = 180


def _mpiexec():
    require("mpi4py")
    bindir = os.path.dirname(sys.executable)
    exe = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
    if exe is None:
        extra_missing("mpi4py", "no mpiexec found (mpich provides one)")
    return exe


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for var in distributed._LAUNCHER_VARS:
        env.pop(var, None)
    env.update(extra)
    return env


def _launch(n, *args, env=None, timeout=TIMEOUT):
    cmd = [_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py",
           os.path.join(HERE, "mpi_worker.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, env=env or _env())


@pytest.fixture(scope="module")
def reference():
    """One process, plain fit, same seed: the weights every run must
    reproduce."""
    model = mpi_worker.build(seed=0)
    history = mpi_worker.train(model, None)
    return model.flat_params.copy(), history.history


def _run(tmp_path, n, reduction, *mode):
    proc = _launch(n, str(tmp_path), reduction, *mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [np.load(tmp_path / f"rank{r}.npz") for r in range(n)]
    assert all(int(d["size"]) == n for d in runs)
    return runs


def _same_history(run, history):
    for key, values in history.items():
        if key in ("seconds", "images_per_s"):
            continue
        assert np.array_equal(run[key], np.asarray(values)), key


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ordered_reduction_reproduces_one_process_bit_for_bit(
        tmp_path, reference, n):
    params, history = reference
    for d in _run(tmp_path, n, "ordered"):
        assert np.array_equal(d["params"], params)
        _same_history(d, history)
    # only rank 0 ran the checkpoint callback
    assert sorted(p.name for p in tmp_path.glob("ckpt*")) == [
        "ckpt0-1.cnnkit", "ckpt0-2.cnnkit", "ckpt0-3.cnnkit"]
    saved = cnnkit.load_model(tmp_path / "ckpt0-3.cnnkit")
    assert np.array_equal(saved.flat_params, params)


@pytest.mark.parametrize("n", [2, 3])
def test_graph_models_reproduce_one_process_bit_for_bit(tmp_path, n):
    """A residual block, a tensor read by three layers and a layer called
    twice: the shard gradients meet in the same fixed tree."""
    model = mpi_worker.build_graph(seed=0)
    history = mpi_worker.train(model, None).history
    for d in _run(tmp_path, n, "ordered", "graph"):
        assert np.array_equal(d["params"], model.flat_params)
        _same_history(d, history)


@pytest.mark.parametrize("n", [2, 3])
def test_batch_norm_models_reproduce_one_process_bit_for_bit(tmp_path, n):
    """Batch statistics of the global batch: per-shard sums gathered from
    every rank and added in the fixed tree, in the forward (mean, then
    variance) and the backward pass; with 3 ranks the last batch (3
    samples) leaves rank 0 without samples, which takes part in the
    exchanges all the same.  Weights and running statistics are one
    process's bits."""
    model = mpi_worker.build_bn(seed=0)
    history = mpi_worker.train(model, None).history
    for d in _run(tmp_path, n, "ordered", "bn"):
        assert np.array_equal(d["params"], model.flat_params)
        assert np.array_equal(d["buffers"], mpi_worker.buffers(model))
        _same_history(d, history)


def test_batch_norm_with_allreduce_keeps_ranks_identical(tmp_path):
    """With reduction="allreduce" the batch statistics are still gathered
    and added in the fixed tree; only the gradient sum differs."""
    model = mpi_worker.build_bn(seed=0)
    mpi_worker.train(model, None)
    runs = _run(tmp_path, 3, "allreduce", "bn")
    for d in runs[1:]:
        assert np.array_equal(d["params"], runs[0]["params"])
        assert np.array_equal(d["buffers"], runs[0]["buffers"])
    # the gradient sums round differently; three epochs of Adam carry the
    # difference along, so only closeness is asked for
    np.testing.assert_allclose(runs[0]["params"], model.flat_params,
                               rtol=0, atol=2e-2)
    np.testing.assert_allclose(runs[0]["buffers"],
                               mpi_worker.buffers(model), rtol=0, atol=2e-2)


@pytest.mark.parametrize("n", [2, 3])
def test_augmented_training_reproduces_one_process_bit_for_bit(tmp_path, n):
    """Each rank augments its part of the batch with the draws of the
    images' indices: the weights are one process's."""
    model = mpi_worker.build(seed=0)
    history = mpi_worker.train(model, None,
                               augment=mpi_worker.augment()).history
    plain = mpi_worker.build(seed=0)
    mpi_worker.train(plain, None)
    assert not np.array_equal(plain.flat_params, model.flat_params)
    for d in _run(tmp_path, n, "ordered", "augment"):
        assert np.array_equal(d["params"], model.flat_params)
        _same_history(d, history)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_allreduce_agrees_to_float32_rounding(tmp_path, reference, n):
    params, _ = reference
    runs = _run(tmp_path, n, "allreduce")
    for d in runs[1:]:                       # every rank holds the same
        assert np.array_equal(d["params"], runs[0]["params"])
    if n == 2:       # each rank's shards form one half of the fixed tree
        assert np.array_equal(runs[0]["params"], params)
    else:
        np.testing.assert_allclose(runs[0]["params"], params, rtol=1e-5,
                                   atol=1e-6)


def test_an_error_on_one_rank_ends_the_job(tmp_path):
    t0 = time.perf_counter()
    proc = _launch(3, str(tmp_path), "ordered", "fail", timeout=60)
    assert proc.returncode != 0
    assert time.perf_counter() - t0 < 30
    assert "rank 1 fails on purpose" in proc.stderr


def test_ranks_with_different_fit_arguments_are_refused(tmp_path):
    proc = _launch(2, str(tmp_path), "ordered", "mismatch", timeout=60)
    assert proc.returncode != 0
    assert "the ranks' fit arguments" in proc.stderr
    # (epochs, initial_epoch, batch_size, shuffle, label_smoothing)
    assert "rank 0: (1, 0, 27, True, 0.0); rank 1: (1, 0, 28, True, 0.0)" \
        in proc.stderr


SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import cnnkit
    from cnnkit import distributed
    sys.path.insert(0, {here!r})
    import mpi_worker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = distributed.init()
    info["warnings"] = [str(w.message) for w in caught]
    if {train!r}:
        model = mpi_worker.build(seed=0)
        mpi_worker.train(model, "mpi")
        info["params"] = model.flat_params.tolist()
    with open(sys.argv[1] + f"/info{{info['rank']}}.json", "w") as f:
        json.dump(info, f)
""")


def _script(tmp_path, n=None, train=False, env=None):
    path = tmp_path / "script.py"
    path.write_text(SCRIPT.format(here=HERE, train=train))
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    out.mkdir()
    if n is None:
        _mpiexec()
        cmd = [sys.executable, str(path), str(out)]
    else:
        cmd = [_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py",
               str(path), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=TIMEOUT, env=env or _env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(f.read_text()) for f in sorted(out.glob("*.json"))]


def test_without_a_launcher_the_world_is_one_process(tmp_path, reference):
    (info,) = _script(tmp_path, train=True)
    assert (info["rank"], info["size"]) == (0, 1)
    assert info["warnings"] == []
    # fit(distributed="mpi") in a world of one is the plain fit
    assert np.array_equal(np.asarray(info["params"], dtype=np.float32),
                          reference[0])


def test_launcher_and_library_mismatch_warns(tmp_path):
    (info,) = _script(tmp_path, env=_env(OMPI_COMM_WORLD_SIZE="3"))
    assert info["size"] == 1
    assert any("3 ranks" in w and "world of one" in w
               for w in info["warnings"])


def test_threads_per_rank_default_and_override(tmp_path):
    env = _env()
    del env["OMP_NUM_THREADS"]
    infos = _script(tmp_path, n=2, env=env)
    cores = len(os.sched_getaffinity(0))
    assert sorted(i["rank"] for i in infos) == [0, 1]
    for info in infos:
        assert info["size"] == 2 and info["local_size"] == 2
        assert info["threads"] == max(1, cores // 2)
        assert "rank(s) on this node" in info["threads_source"]
        assert info["library"]
    infos = _script(tmp_path, n=2, env=_env(OMP_NUM_THREADS="3"))
    assert all(i["threads"] == 3 and i["threads_source"] == "OMP_NUM_THREADS"
               for i in infos)


# -- pieces that need no MPI ------------------------------------------------
def test_shard_bounds_cover_the_batch_in_order():
    for n in (0, 1, 3, 7, 8, 27, 64):
        for parts in (1, 2, 3, 8):
            e = _bounds(n, parts)
            assert e[0] == 0 and e[-1] == n and len(e) == parts + 1
            assert all(a <= b for a, b in zip(e, e[1:]))
            assert max(np.diff(e)) - min(np.diff(e)) <= 1


def test_tree_sum_adds_adjacent_pairs_first():
    # 1e16 + 1 + 1 depends on the order; the tree is ((a+b)+(c+d)).
    vals = [1e16, 1.0, 1.0, -1e16]
    nodes = [np.array([v]) for v in vals]
    out = np.zeros(1)
    _tree_sum(nodes, out)
    assert out[0] == (1e16 + 1.0) + (1.0 - 1e16)
    nodes = [np.array([1e16]), None, np.array([1.0]), np.array([1.0])]
    _tree_sum(nodes, out)
    assert out[0] == 1e16 + (1.0 + 1.0)
    _tree_sum([None, None], out)
    assert out[0] == 0


def _python_tree(nodes):
    """The tree as the docstring says it: adjacent pairs, level by level."""
    nodes = [None if a is None else a.copy() for a in nodes]
    while len(nodes) > 1:
        nxt = []
        for i in range(0, len(nodes), 2):
            a = nodes[i]
            b = nodes[i + 1] if i + 1 < len(nodes) else None
            nxt.append(b if a is None else a if b is None else a + b)
        nodes = nxt
    return nodes[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_tree_sum_has_the_bits_of_the_pairwise_tree(dtype):
    from cnnkit import _kernels
    rng = np.random.default_rng(5)
    for nrows in list(range(1, 18)) + [33, 100]:
        for n in (1, 7, 255, 256, 257, 1000):
            rows = [(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8,
                                                                   n))
                    .astype(dtype) for _ in range(nrows)]
            for absent in (0.0, 0.3):
                nodes = [None if rng.random() < absent else r for r in rows]
                want = _python_tree(nodes)
                before = [None if a is None else a.copy() for a in nodes]
                for threads in (1, 2, 3):
                    cnnkit.set_num_threads(threads)
                    out = np.full(n, np.nan, dtype)
                    _kernels.tree_sum(nodes, out)
                    if want is None:
                        assert not out.any()
                    else:
                        assert out.tobytes() == want.tobytes()
                cnnkit.set_num_threads(0)
                for a, b in zip(nodes, before):     # rows are not written
                    assert a is None or a.tobytes() == b.tobytes()


def test_compiled_tree_sum_checks_its_arguments():
    from cnnkit import _kernels
    out = np.zeros(4, np.float32)
    row = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"rows\[1\] must be a "
                                         r"C-contiguous float32"):
        _kernels.tree_sum([row, np.ones(4)], out)
    with pytest.raises(ValueError, match=r"rows\[0\] must be"):
        _kernels.tree_sum([np.ones(8, np.float32)[::2]], out)
    with pytest.raises(ValueError, match=r"rows\[0\] overlaps out"):
        _kernels.tree_sum([out], out)
    with pytest.raises(ValueError, match=r"between 1 and 32768 rows, got 0"):
        _kernels.tree_sum([], out)
    with pytest.raises(ValueError, match=r"out must be a writeable"):
        _kernels.tree_sum([row], row[::2])


def test_data_parallel_arguments_are_checked():
    with pytest.raises(ValueError, match="reduction must be 'ordered' or "
                                         "'allreduce', got 'sum'"):
        DataParallel("sum")
    for bad in (0, -1, 2.0, True, 5000):
        with pytest.raises(ValueError, match="shards must be an int"):
            DataParallel(shards=bad)
    model = mpi_worker.build()
    x, y, _, _ = mpi_worker.data()
    with pytest.raises(ValueError, match="distributed must be None, 'mpi'"):
        model.fit(x, y, distributed="nccl", verbose=0)
    with pytest.raises(TypeError, match="got int"):
        model.fit(x, y, distributed=4, verbose=0)
    assert repr(DataParallel()) == \
        "DataParallel(reduction='ordered', shards=8)"


def test_fit_is_the_sharded_tree_of_its_batch():
    """A plain fit's step equals the shard gradients added in the fixed
    tree, computed here one shard at a time."""
    model = mpi_worker.build(dtype="float64")
    x, y, _, _ = mpi_worker.data()
    x, y = x[:27], y[:27]
    shards = []
    e = _bounds(27, 8)
    for s in range(8):
        probe = pickle.loads(pickle.dumps(model))
        probe.layers[3].rate = 0.0                 # no dropout
        logits = probe.forward(probe._prepare_x(x[e[s]:e[s + 1]]), True)
        _, grad = cnnkit.functional.softmax_cross_entropy(
            logits, y[e[s]:e[s + 1]])
        grad *= (e[s + 1] - e[s]) / 27.0            # the batch's mean
        probe.backward(grad)
        shards.append(probe.flat_grads.copy())
    expected = np.zeros_like(shards[0])
    _tree_sum(shards, expected)
    model.layers[3].rate = 0.0
    model.fit(x, y, batch_size=27, optimizer=cnnkit.optim.SGD(1.0),
              shuffle=False, verbose=0)
    np.testing.assert_allclose(model.flat_grads, expected, rtol=1e-12,
                               atol=1e-15)


def test_fit_of_one_sample_is_that_samples_gradient_bit_for_bit():
    """With one sample per step, only one shard holds data, and the step's
    gradient is exactly that sample's (the tree adds nothing to it)."""
    model = mpi_worker.build(dtype="float32")
    x, y, _, _ = mpi_worker.data()
    x, y = x[:1].astype(np.float32), y[:1]
    probe = pickle.loads(pickle.dumps(model))
    probe.layers[3].rate = 0.0                     # no dropout
    logits = probe.forward(probe._prepare_x(x), True)
    _, grad = cnnkit.functional.softmax_cross_entropy(logits, y)
    probe.backward(grad, input_grad=False)
    model.layers[3].rate = 0.0
    model.fit(x, y, batch_size=1, optimizer=cnnkit.optim.SGD(1.0),
              shuffle=False, verbose=0)
    assert np.array_equal(model.flat_grads, probe.flat_grads)


def test_broadcast_parameters_in_a_world_of_one():
    model = mpi_worker.build()
    before = model.flat_params.copy()
    distributed._WORLD, saved = distributed.LOCAL, distributed._WORLD
    try:
        distributed.broadcast_parameters(model)
        assert np.array_equal(model.flat_params, before)
        assert distributed.rank() == 0 and distributed.size() == 1
        assert distributed.is_root()
        distributed.barrier()
        with pytest.raises(ValueError, match=r"root must be a rank in "
                                             r"\[0, 1\), got 1"):
            distributed.broadcast_parameters(model, root=1)
        with pytest.raises(ValueError, match="must be built"):
            distributed.broadcast_parameters(cnnkit.Sequential(
                [layers.Flatten(), layers.Dense(2)]))
    finally:
        distributed._WORLD = saved


# -- pickling: plain NumPy state, so joblib and Dask can ship models -------
def test_models_pickle_as_plain_state_and_keep_training_identically():
    x, y, _, _ = mpi_worker.data()
    a = mpi_worker.build()
    a.fit(x, y, epochs=1, batch_size=32, verbose=0)
    b = pickle.loads(pickle.dumps(a))
    assert np.array_equal(a.flat_params, b.flat_params)
    # the layers' parameters are views into the restored flat buffer
    for layer in b.layers:
        for p in layer.params.values():
            assert np.shares_memory(p, b.flat_params)
    assert type(b.optimizer) is type(a.optimizer)
    a.fit(x, y, epochs=1, batch_size=32, verbose=0)
    b.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.array_equal(a.flat_params, b.flat_params)
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    unbuilt = pickle.loads(pickle.dumps(cnnkit.Sequential(
        [layers.Flatten(), layers.Dense(3)], seed=4)))
    assert not unbuilt.built and unbuilt.seed == 4


def test_command_line_trains_data_parallel_like_one_process(tmp_path):
    exe = _mpiexec()
    one, two = tmp_path / "one.cnnkit", tmp_path / "two.cnnkit"
    args = ["-m", "cnnkit", "train", "--epochs", "2", "--quiet"]
    proc = subprocess.run([sys.executable, *args, "--out", str(one)],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [exe, "-n", "2", sys.executable, "-m", "mpi4py", *args,
         "--distributed", "--out", str(two)],
        capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy:") == 1       # rank 0 reports
    a, b = cnnkit.load_model(one), cnnkit.load_model(two)
    assert np.array_equal(a.flat_params, b.flat_params)


# -- the kernels behind the shards: gradients of runs of samples ------------
def _parts_buffer(nparts, shape, dt, pad=3):
    """Per-part arrays laid out like the training loop's shard rows: one
    row per part, the array at an offset inside each row."""
    size = int(np.prod(shape)) * np.dtype(dt).itemsize
    rowbytes = size + 8 * (pad + 2)
    rows = np.full((nparts, rowbytes), 0xFF, dtype=np.uint8)     # NaNs
    return rows[:, 8 * pad:8 * pad + size].view(dt).reshape(
        (nparts,) + tuple(shape))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("geom", [
    dict(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)),
    dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1)),
    dict(stride=(2, 3), padding=(1, 1, 2, 2), dilation=(1, 2)),
])
def test_conv2d_backward_parts_equal_each_run_alone(dt, geom):
    from cnnkit import _kernels, reference
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3, 9, 8)).astype(dt)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dt)
    st, pad, dil = geom["stride"], geom["padding"], geom["dilation"]
    y = _kernels.conv2d_forward(x, w, None, st, pad, dil)
    gy = rng.standard_normal(y.shape).astype(dt)
    bounds = [0, 0, 2, 3, 7, 7]
    gw = _parts_buffer(5, w.shape, dt)
    gb = _parts_buffer(5, w.shape[:1], dt)
    gx = _kernels.conv2d_backward_parts(gy, x, w, st, pad, dil, bounds, gw,
                                        gb)
    whole = _kernels.conv2d_backward(gy, x, w, st, pad, dil)
    assert np.array_equal(gx, whole[0])
    tol = dict(rtol=1e-4, atol=1e-4) if dt == np.float32 else \
        dict(rtol=1e-10, atol=1e-10)
    for q in range(5):
        lo, hi = bounds[q], bounds[q + 1]
        if hi == lo:                                   # not written
            assert np.isnan(gw[q]).all() and np.isnan(gb[q]).all()
            continue
        ref = reference.conv2d_backward(
            gy[lo:hi].astype(np.float64), x[lo:hi].astype(np.float64),
            w.astype(np.float64), st, (pad[0], pad[2]), dil)
        np.testing.assert_allclose(gw[q], ref[1], **tol)
        np.testing.assert_allclose(gb[q], gy[lo:hi].sum(axis=(0, 2, 3)),
                                   **tol)
        # the same images in another batch give the same bits
        alone_w = _parts_buffer(1, w.shape, dt)
        _kernels.conv2d_backward_parts(gy[lo:hi], x[lo:hi], w, st, pad, dil,
                                       [0, hi - lo], alone_w, None, False)
        assert np.array_equal(alone_w[0], gw[q])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_dense_backward_parts_equal_each_run_alone(dt):
    from cnnkit import _kernels
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 37)).astype(dt)
    w = rng.standard_normal((13, 37)).astype(dt)
    gy = rng.standard_normal((11, 13)).astype(dt)
    bounds = [1, 4, 4, 5, 11]
    gw = _parts_buffer(4, w.shape, dt)
    gb = _parts_buffer(4, (13,), dt)
    gx = _kernels.dense_backward_parts(gy, x, w, bounds, gw, gb)
    assert np.array_equal(gx, _kernels.dense_backward(gy, x, w)[0])
    tol = 1e-4 if dt == np.float32 else 1e-12
    for q in range(4):
        lo, hi = bounds[q], bounds[q + 1]
        if hi == lo:
            assert np.isnan(gw[q]).all()
            continue
        np.testing.assert_allclose(gw[q], gy[lo:hi].T @ x[lo:hi], rtol=tol,
                                   atol=tol)
        np.testing.assert_allclose(gb[q], gy[lo:hi].sum(axis=0), rtol=tol,
                                   atol=tol)
        alone = _parts_buffer(1, w.shape, dt)
        _kernels.dense_backward_parts(gy[lo:hi], x[lo:hi], w, [0, hi - lo],
                                      alone, None, False)
        assert np.array_equal(alone[0], gw[q])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("n, f, o, bounds", [
    (64, 700, 300, [0, 8, 16, 24, 32, 40, 48, 56, 64]),  # tiles over o, f
    (24, 45, 11, [0, 8, 16, 24]),                      # 6 + 4 + 1 rows
    (16, 3072, 17, [0, 8, 16]),                        # rows 12 KiB apart
    (11, 37, 13, [1, 4, 4, 5, 11]),                    # an empty run
    (7, 5, 3, [0, 0, 2, 2, 7, 7]),                     # 5 runs, 3 empty
    (9, 37, 13, [0, 2, 4, 6, 6, 9]),                   # an empty run that
    (8, 37, 13, [0, 1, 2, 3, 4, 5, 6, 7, 7]),          # closes a block
    (1300, 20, 9, [0, 650, 1300]),                     # runs > the slab
    (2000, 20, 9, [0, 600, 600, 1300, 2000]),          # deep runs, a gap
    (3, 600, 1, [0, 3]),                               # one run, 1 output
])
def test_dense_weight_tree_is_the_tree_of_the_parts_bit_for_bit(dt, n, f, o,
                                                               bounds):
    # the weight gradients' tree sum written in place (gw_tree) has the
    # bits of each part written and then tree_sum, for any thread count
    from cnnkit import _kernels
    rng = np.random.default_rng(n + f)
    x = rng.standard_normal((n, f)).astype(dt)
    w = rng.standard_normal((o, f)).astype(dt)
    gy = rng.standard_normal((n, o)).astype(dt)
    runs = len(bounds) - 1
    gw = _parts_buffer(runs, w.shape, dt)
    gb = _parts_buffer(runs, (o,), dt)
    gx = _kernels.dense_backward_parts(gy, x, w, bounds, gw, gb)
    expected = np.empty(o * f, dt)
    _tree_sum([gw[q].ravel() if bounds[q + 1] > bounds[q] else None
               for q in range(runs)], expected)
    for threads in (1, 2, 3):
        with num_threads(threads):
            tree = np.full((o, f), np.nan, dt)
            gb2 = _parts_buffer(runs, (o,), dt)
            gx2 = _kernels.dense_backward_parts(gy, x, w, bounds, None, gb2,
                                                gw_tree=tree)
        assert tree.tobytes() == expected.tobytes()
        assert np.array_equal(gx2, gx)
        assert np.array_equal(gb2, gb, equal_nan=True)


def test_dense_weight_tree_of_runs_without_rows_is_zero():
    from cnnkit import _kernels
    x, w, gy = np.ones((4, 5)), np.ones((3, 5)), np.ones((4, 3))
    tree = np.full((3, 5), np.nan)
    _kernels.dense_backward_parts(gy, x, w, [2, 2, 2], None, None, False,
                                  gw_tree=tree)
    assert np.array_equal(tree, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="gw_parts must be None with "
                                         "gw_tree"):
        _kernels.dense_backward_parts(gy, x, w, [0, 4], np.zeros((1, 3, 5)),
                                      None, gw_tree=tree)
    for bad in (np.zeros((5, 3)), np.zeros((3, 5), np.float32),
                np.zeros((5, 3)).T):
        with pytest.raises(ValueError, match="gw_tree"):
            _kernels.dense_backward_parts(gy, x, w, [0, 4], None, None,
                                          gw_tree=bad)


def _shared_dense_model():
    inp = cnnkit.Input((1, 6, 6))
    h = layers.Flatten()(inp)
    h = layers.Dense(12)(h)
    h = layers.ReLU()(h)
    shared = layers.Dense(12)
    h = shared(layers.ReLU()(shared(h)))
    return cnnkit.Model(inp, layers.Dense(3)(h), seed=3, dtype="float64")


@pytest.mark.parametrize("make", [
    lambda: mpi_worker.build(dtype="float32"),
    lambda: mpi_worker.build(dtype="float64"),
    _shared_dense_model,
])
def test_training_with_in_kernel_tree_sums_keeps_every_bit(make,
                                                           monkeypatch):
    # one process, fixed shards: the dense layers add their shards' weight
    # gradients in the tree themselves (a layer called twice does not); the
    # weights after training equal those of the copy-per-shard reduction
    rng = np.random.default_rng(5)
    model = make()
    x = rng.standard_normal((45,) + model.input_shape)
    y = rng.integers(0, model.output_shape[0], 45)
    runs, trees = {}, []
    parts = cnnkit._ops.DenseOp.backward_parts

    def spy(self, *args, gw_tree=None, **kwargs):
        trees.append(gw_tree is not None)
        return parts(self, *args, gw_tree=gw_tree, **kwargs)
    monkeypatch.setattr(cnnkit._ops.DenseOp, "backward_parts", spy)
    for tree in (True, False):
        if not tree:
            monkeypatch.setattr(layers.Dense, "tree_sum_grads", ())
        m = make()
        m.fit(x, y, batch_size=20, epochs=2, optimizer=cnnkit.optim.Adam(
            1e-2), verbose=0, distributed=DataParallel(shards=8))
        runs[tree] = m.flat_params.copy()
        # every dense layer called once sums its own tree; none otherwise
        assert any(trees) == tree and (not all(trees) or tree)
        trees.clear()
    assert runs[True].tobytes() == runs[False].tobytes()


class _RowsDense(layers.Dense):
    """A subclass whose backward never takes its shards' tree (it hides it
    from Dense.backward): its per-shard rows must still be added."""

    def backward(self, grad, ctx=None):
        if getattr(ctx, "shards", None) is not None:
            ctx = copy.copy(ctx)
            ctx.shards = ctx.shards[:2]
        return super().backward(grad, ctx)


def test_a_dense_subclass_that_writes_rows_still_gets_them_added():
    def build(dense):
        return cnnkit.Sequential([
            layers.Flatten(), dense(16), layers.ReLU(), dense(5)],
            input_shape=(1, 6, 6), seed=2, dtype="float64")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 1, 6, 6))
    y = rng.integers(0, 5, 40)
    runs = []
    for dense in (layers.Dense, _RowsDense):
        m = build(dense)
        m.fit(x, y, batch_size=16, epochs=2, verbose=0,
              optimizer=cnnkit.optim.SGD(0.1),
              distributed=DataParallel(shards=8))
        runs.append(m.flat_params.copy())
    assert runs[0].tobytes() == runs[1].tobytes()
    assert np.isfinite(runs[1]).all()


def test_parts_kernels_check_their_arguments():
    from cnnkit import _kernels
    x = np.ones((4, 5))
    w = np.ones((3, 5))
    gy = np.ones((4, 3))
    gw = np.zeros((2, 3, 5))
    with pytest.raises(ValueError, match="gw_parts"):
        _kernels.dense_backward_parts(gy, x, w, [0, 2, 4], None,
                                      np.zeros((2, 3)))
    with pytest.raises(ValueError, match="gw_parts"):
        _kernels.conv2d_backward_parts(
            np.ones((2, 1, 2, 2)), np.ones((2, 1, 3, 3)),
            np.ones((1, 1, 2, 2)), (1, 1), (0, 0, 0, 0), (1, 1), [0, 2],
            None, None, False)

    class Sub(np.ndarray):
        pass
    with pytest.raises(ValueError, match="gw_parts"):
        _kernels.dense_backward_parts(gy, x, w, [0, 2, 4], gw.view(Sub),
                                      None)
    for bounds, msg in (([0, 3, 2], "non-decreasing"), ([0, 2, 5], "within"),
                        ([-1, 2, 4], "within"), ([0], "at least 2")):
        with pytest.raises(ValueError, match=msg):
            _kernels.dense_backward_parts(gy, x, w, bounds, gw, None)
    for bad in (np.zeros((3, 3, 5)), np.zeros((2, 3, 5), np.float32),
                np.zeros((2, 5, 3)).transpose(0, 2, 1), np.zeros((2, 15))):
        with pytest.raises(ValueError, match="gw_parts"):
            _kernels.dense_backward_parts(gy, x, w, [0, 2, 4], bad, None)
    ro = np.zeros((2, 3, 5))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _kernels.dense_backward_parts(gy, x, w, [0, 2, 4], ro, None)
    overlapping = np.lib.stride_tricks.as_strided(
        np.zeros(40), (2, 3, 5), (8, 40, 8))
    with pytest.raises(ValueError, match="not overlapping"):
        _kernels.dense_backward_parts(gy, x, w, [0, 2, 4], overlapping, None)
    with pytest.raises(ValueError, match="gb_parts"):
        _kernels.dense_backward_parts(gy, x, w, [0, 2, 4], gw,
                                      np.zeros((2, 4)))


class _Scale(layers.Layer):
    """A layer from outside cnnkit with a parameter: y = a * x."""

    def param_shapes(self, input_shape):
        return {"weight": (1,)}

    def initialize(self, rng, before_relu=False):
        self.params["weight"][...] = 1.5

    def forward(self, x, training=False):
        self._x = x
        return x * self.params["weight"][0]

    def backward(self, grad):
        self.grads["weight"][...] = (grad * self._x).sum()
        return grad * self.params["weight"][0]


def test_layers_without_per_shard_gradients_train_in_one_process():
    x, y, _, _ = mpi_worker.data()
    model = cnnkit.Sequential([layers.Flatten(), _Scale(), layers.Dense(10)],
                              input_shape=(1, 8, 8), seed=0)
    before = model.layers[1].params["weight"].copy()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert model.layers[1].params["weight"][0] != before[0]
    assert np.isfinite(model.flat_params).all()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, distributed=False)
    # such models pickle too (their layers travel as objects)
    copy = pickle.loads(pickle.dumps(model))
    assert isinstance(copy.layers[1], _Scale)
    assert np.shares_memory(copy.layers[1].params["weight"],
                            copy.flat_params)
    assert np.array_equal(copy.predict_proba(x), model.predict_proba(x))
    model.fit(x, y, epochs=1, verbose=0)
    copy.fit(x, y, epochs=1, verbose=0)
    assert np.array_equal(copy.flat_params, model.flat_params)
    with pytest.raises(TypeError, match="_Scale has parameters but cannot "
                                        "compute them per shard"):
        Trainer(model, distributed.LOCAL, 2, "ordered")
