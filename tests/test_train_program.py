"""The compiled training step (cnnkit._kernels.TrainProgram): a chain of
Conv2D, Dense, ReLU, MaxPool2D and Flatten layers trains in one call per
batch into C, with the bits of the layer-by-layer step."""
import numpy as np
import pytest

import cnnkit
from cnnkit import layers as L
from cnnkit import optim
from cnnkit import trainer as T
from cnnkit.distributed import DataParallel


def _data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    return x, rng.integers(0, classes, n)


def _fit(make, compiled, monkeypatch, x, y, **kw):
    """The flat parameters and history after fitting make()'s model, with
    the compiled step or through the layers."""
    with monkeypatch.context() as mp:
        if not compiled:
            mp.setattr(T, "_compilable", lambda model: False)
        seen = []
        real = T.Trainer._program

        def spy(self, *args):
            entry = real(self, *args)
            seen.append(entry is not None)
            return entry
        mp.setattr(T.Trainer, "_program", spy)
        model = make()
        opt = kw.pop("optimizer", lambda: optim.SGD(0.05, momentum=0.9))()
        hist = model.fit(x, y, optimizer=opt, verbose=0, **kw)
    assert seen == ([True] * len(seen) if compiled else [])
    hist = {k: v for k, v in hist.history.items()
            if k not in ("seconds", "images_per_s")}
    return model.flat_params.copy(), hist


def _same(make, monkeypatch, x, y, **kw):
    a, ha = _fit(make, True, monkeypatch, x, y, **dict(kw))
    b, hb = _fit(make, False, monkeypatch, x, y, **dict(kw))
    assert a.tobytes() == b.tobytes()
    assert ha == hb


def lenet(dtype="float32"):
    return cnnkit.models.lenet5(seed=3, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size", [1, 5, 16, 64])
def test_lenet_trains_with_the_bits_of_the_layers(monkeypatch, dtype,
                                                  batch_size):
    # batch 1: the whole batch's gradients; 5: shards, three of them
    # empty; 16 and 64: eight shards (70 samples: a last, short batch)
    x, y = _data(70, (1, 28, 28), 10)
    _same(lambda: lenet(dtype), monkeypatch, x, y, epochs=2,
          batch_size=batch_size)


def test_sample_weights_label_smoothing_and_adam(monkeypatch):
    x, y = _data(50, (1, 28, 28), 10, seed=1)
    w = np.linspace(0.2, 3.0, 50)
    _same(lenet, monkeypatch, x, y, epochs=2, batch_size=12,
          sample_weight=w, label_smoothing=0.2,
          optimizer=lambda: optim.Adam(1e-3, weight_decay=1e-4))


def test_one_shard_trains_whole_batches(monkeypatch):
    x, y = _data(40, (1, 28, 28), 10, seed=2)
    _same(lenet, monkeypatch, x, y, epochs=1, batch_size=16,
          distributed=DataParallel(shards=1))


def _chain(layers, shape, seed=0, dtype="float32"):
    def make():
        return cnnkit.Sequential([f() for f in layers], input_shape=shape,
                                 seed=seed, dtype=dtype)
    return make


# each a list of layer factories and the input shape
CHAINS = {
    # conv -> relu -> conv: the ReLU's backward on its own (no pool after)
    "relu-between-convs": ([lambda: L.Conv2D(4, 3, padding=1), L.ReLU,
                            lambda: L.Conv2D(5, 3, stride=2), L.ReLU,
                            L.Flatten, lambda: L.Dense(3)], (2, 9, 9)),
    # pooling without a ReLU before it, padding, ceil mode, a pool first
    "pools": ([lambda: L.MaxPool2D(2, stride=1, padding=1),
               lambda: L.Conv2D(3, 2, padding="same", dilation=2),
               lambda: L.MaxPool2D(3, stride=2, ceil_mode=True),
               L.Flatten, lambda: L.Dense(6), L.ReLU, lambda: L.Dense(4)],
              (1, 11, 10)),
    # grouped convolution, no bias, a ReLU and Flatten first
    "groups-no-bias": ([L.ReLU, lambda: L.Conv2D(6, 3, groups=2,
                                                 use_bias=False),
                        L.ReLU, lambda: L.MaxPool2D(2), L.Flatten,
                        lambda: L.Dense(5, use_bias=False)], (4, 8, 8)),
    # 2x2 pools (the winners' places kept as bytes): through a ReLU and
    # not, a leftover row and column, rows of 20 windows
    "pools-2x2": ([lambda: L.Conv2D(3, 3, padding=1), L.ReLU,
                   lambda: L.MaxPool2D(2), lambda: L.Conv2D(4, 3),
                   lambda: L.MaxPool2D(2), L.Flatten, lambda: L.Dense(4)],
                  (1, 13, 41)),
    # dense layers only
    "mlp": ([L.Flatten, lambda: L.Dense(7), L.ReLU, lambda: L.Dense(7),
             L.ReLU, lambda: L.Dense(3)], (2, 3, 3)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chains_train_with_the_bits_of_the_layers(monkeypatch, name, dtype):
    layers, shape = CHAINS[name]
    classes = 4 if name != "mlp" else 3
    if name == "relu-between-convs":
        classes = 3
    if name == "groups-no-bias":
        classes = 5
    x, y = _data(37, shape, classes, seed=4)
    make = _chain(layers, shape, dtype=dtype)
    kw = {}
    if name == "pools-2x2":     # 0.05 diverges on its 41-wide rows
        kw["optimizer"] = lambda: optim.SGD(0.005, momentum=0.9)
    for bs in (1, 9):
        _same(make, monkeypatch, x, y, epochs=2, batch_size=bs, **kw)


def test_layers_it_does_not_compile_train_through_the_layers():
    make = _chain([lambda: L.Conv2D(4, 3), L.ReLU, lambda: L.Dropout(0.5),
                   L.Flatten, lambda: L.Dense(3)], (1, 6, 6))
    assert not T._compilable(make())
    assert T._compilable(_chain([L.Flatten, lambda: L.Dense(2)],
                                (1, 2, 2))())
    # no parameters: nothing to compile
    assert not T._compilable(_chain([L.Flatten, L.ReLU], (1, 2, 2))())
    # Winograd's forward and input gradient: the step runs direct sums
    assert not T._compilable(_chain(
        [lambda: L.Conv2D(16, 3, padding=1, winograd=True), L.Flatten,
         lambda: L.Dense(2)], (16, 4, 4))())
    assert T._compilable(_chain(
        [lambda: L.Conv2D(16, 3, padding=1), L.Flatten,
         lambda: L.Dense(2)], (16, 4, 4))())
    # a subclass may do anything in its passes
    class MyDense(L.Dense):
        pass
    assert not T._compilable(_chain([L.Flatten, lambda: MyDense(2)],
                                    (1, 2, 2))())
    # a graph with a branch
    inp = cnnkit.Input((1, 4, 4))
    f = L.Flatten()(inp)
    out = L.Add()([L.Dense(3)(f), L.Dense(3)(f)])
    assert not T._compilable(cnnkit.Model(inp, out))


def test_rebound_parameters_go_back_to_the_layers(monkeypatch):
    # a layer's parameter array swapped for another (by a callback, say): the
    # compiled step is dropped, and training goes on through the layers
    x, y = _data(24, (1, 6, 6), 3)
    make = _chain([lambda: L.Conv2D(2, 3), L.ReLU, L.Flatten,
                   lambda: L.Dense(3)], (1, 6, 6))
    model = make()
    tr = T.Trainer(model)
    assert tr.compiled
    bounds = tr._shard_bounds(cnnkit.distributed.bounds(8, tr.shards), 8)
    assert tr._program(8, 8, False, bounds) is not None
    layer = model.layers[-1]
    layer.params["bias"] = layer.params["bias"].copy()
    assert tr._program(8, 8, False, bounds) is None
    assert not tr.compiled


def test_program_checks_its_input():
    make = _chain([L.Flatten, lambda: L.Dense(3)], (1, 2, 2))
    model = make()
    program = T._compile_step(model, 4, None)[0]
    x = np.zeros((4, 1, 2, 2), np.float32)
    y = np.zeros(4, np.int64)
    program.run(x, y, None, 4.0, 0.0)
    with pytest.raises(ValueError, match="C-contiguous float32 array of 4"):
        program.run(np.zeros((3, 1, 2, 2), np.float32), y, None, 4.0, 0.0)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        program.run(x.astype(np.float64), y, None, 4.0, 0.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        program.run(x, np.full(4, 3), None, 4.0, 0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        program.run(x, y, None, 4.0, 1.5)
    with pytest.raises(ValueError, match="sample_weight"):
        program.run(x, y, np.ones(3), 4.0, 0.0)


def test_hits_follow_argmax_ties_and_nan():
    # the first of equal logits; a NaN counts as the largest (np.argmax)
    model = _chain([lambda: L.Dense(3, use_bias=False)], (2,))()
    model.layers[0].params["weight"][...] = 0.0
    program = T._compile_step(model, 3, None)[0]
    x = np.zeros((3, 2), np.float32)
    program.run(x, np.array([0, 1, 2]), None, 3.0, 0.0)
    assert program.hit.tolist() == [True, False, False]
    assert program.logits.shape == (3, 3)
    model.layers[0].params["weight"][...] = [[0, 0], [np.nan, 0], [1, 0]]
    x[:, 0] = 1.0
    program.run(x, np.array([1, 2, 1]), None, 3.0, 0.0)
    assert program.hit.tolist() == [True, False, True]


def test_program_checks_what_it_is_made_of():
    from cnnkit import _kernels as K
    model = _chain([L.Flatten, lambda: L.Dense(3)], (1, 2, 2))()
    layer = model.layers[1]
    logits, grad = np.empty((4, 3), np.float32), np.empty((4, 3), np.float32)

    def spec(**kw):
        d = dict(op="dense", fwd=True, bwd=True, in_shape=(4,), x=None,
                 y=logits, gy=grad, gx=None, weight=layer.params["weight"],
                 bias=layer.params["bias"], grads="whole",
                 gw=layer.grads["weight"], gb=layer.grads["bias"])
        d.update(kw)
        return d
    K.TrainProgram([spec()], np.float32, (1, 2, 2), 4, logits, grad)
    # a first step reading more of the input than a sample holds
    with pytest.raises(ValueError, match="cannot read the step's input"):
        K.TrainProgram([spec()], np.float32, (1, 1, 2), 4, logits, grad)
    # the last step must write the logits the loss reads
    with pytest.raises(ValueError, match="last step must write logits"):
        K.TrainProgram([spec(y=np.empty((4, 3), np.float32))], np.float32,
                       (1, 2, 2), 4, logits, grad)
    # the shard bounds are the program's own copy
    bounds = np.array([0, 2, 4], np.int64)
    gwp = np.zeros((2, 3, 4), np.float32)
    gbp = np.zeros((2, 3), np.float32)
    p = K.TrainProgram([spec(grads="parts", gw=gwp, gb=gbp)], np.float32,
                       (1, 2, 2), 4, logits, grad, bounds)
    bounds[:] = [0, 100, 200]
    x = np.ones((4, 1, 2, 2), np.float32)
    p.run(x, np.zeros(4, np.int64), None, 4.0, 0.0)
    assert np.isfinite(gwp).all()
    # a program whose setting up failed does not run
    with pytest.raises(ValueError):
        p.__init__([spec(y=np.empty((4, 3), np.float32))], np.float32,
                   (1, 2, 2), 4, logits, grad)
    with pytest.raises(ValueError, match="not set up"):
        p.run(x, np.zeros(4, np.int64), None, 4.0, 0.0)


def test_a_rebuilt_parameter_dict_goes_back_to_the_layers():
    make = _chain([L.Flatten, lambda: L.Dense(3)], (1, 6, 6))
    model = make()
    tr = T.Trainer(model)
    bounds = tr._shard_bounds(cnnkit.distributed.bounds(8, tr.shards), 8)
    assert tr._program(8, 8, False, bounds) is not None
    layer = model.layers[-1]
    layer.params = {k: v.copy() for k, v in layer.params.items()}
    assert tr._program(8, 8, False, bounds) is None


def test_program_times_each_step():
    model = _chain([lambda: L.Conv2D(2, 3), L.ReLU, L.Flatten,
                    lambda: L.Dense(3)], (1, 6, 6))()
    program = T._compile_step(model, 4, None)[0]
    x = np.ones((4, 1, 6, 6), np.float32)
    y = np.zeros(4, np.int64)
    times = np.zeros(2 * program.nsteps + 1)
    program.run(x, y, None, 4.0, 0.0, times)
    # conv (with the ReLU absorbed: no forward step of its own), dense;
    # the loss; the ReLU's backward, the conv's, the dense's
    assert program.nsteps == 3
    assert (times >= 0).all() and times[0] > 0 and times[3] > 0
    assert times[1] == 0                       # the absorbed ReLU's forward
    with pytest.raises(ValueError, match="7 elements"):
        program.run(x, y, None, 4.0, 0.0, np.zeros(5))


def test_program_threads_keep_the_bits():
    # nthreads=1 (what the trainer asks for steps under a MFLOP), 2 and
    # the default count: the same logits, losses and gradients
    model = lenet()
    x, y = _data(3, (1, 28, 28), 10, seed=5)
    program = T._compile_step(model, 3, None)[0]
    runs = []
    for nt in (1, 2, 0):
        model.flat_grads[...] = np.nan
        program.run(x, y, None, 3.0, 0.0, nthreads=nt)
        runs.append((program.logits.tobytes(), program.losses.tobytes(),
                     model.flat_grads.tobytes()))
    assert runs[0] == runs[1] == runs[2]
    with pytest.raises(ValueError, match="nthreads must be >= 0, got -1"):
        program.run(x, y, None, 3.0, 0.0, nthreads=-1)


def _shard_program(model, b, shards=8):
    """A trainer of model and its compiled step for batches of b samples
    in its shards."""
    tr = T.Trainer(model, shards=shards)
    bounds = tr._shard_bounds(cnnkit.distributed.bounds(b, tr.shards), b)
    return tr, tr._program(b, b, False, bounds)[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_runs_one_thread_each_keep_the_bits(dtype):
    # on 2 threads, a program of small parameters whose runs of samples
    # all hold samples runs each run on one thread, its kernels on the
    # run alone: the logits, loss gradient, losses, hits and every run's
    # parameter gradients (and the dense trees) of the batch's kernels on
    # one thread; 8 runs of 8, runs of 1 and 2 samples, and 10 and 16
    # runs (tasks of 2 and 4 runs, a last, shorter one); sample weights
    # and label smoothing
    for b, shards in ((64, 8), (13, 8), (70, 10), (64, 16)):
        model = lenet(dtype)
        tr, program = _shard_program(model, b, shards)
        x, y = _data(b, (1, 28, 28), 10, seed=b)
        x = x.astype(dtype)
        sw = np.random.default_rng(b).uniform(0.5, 2.0, b)
        outs = [a for d in list(tr.parts.values()) + list(tr.trees.values())
                for a in d.values()]
        assert outs
        runs = []
        for nt in (1, 2, 0):
            for a in outs + [program.logits, program.grad]:
                a[...] = np.nan
            program.run(x, y, sw, float(sw.sum()), 0.1, nthreads=nt)
            assert program.sharded == (nt != 1)
            runs.append([a.tobytes() for a in outs + [
                program.logits, program.grad, program.losses, program.hit]])
        assert runs[0] == runs[1] == runs[2]
        assert not np.isnan(program.grad).any()


def test_program_gathers_the_rows_it_is_given():
    # run(source, ..., rows=idx) has the bits of run(source[idx], ...),
    # on one thread (the batch's kernels) and on two (each task gathering
    # its runs); the indices are checked
    model = lenet()
    tr, program = _shard_program(model, 16)
    src, labels = _data(40, (1, 28, 28), 10, seed=7)
    idx = np.random.default_rng(7).permutation(40)[:16]
    outs = [a for d in tr.parts.values() for a in d.values()]
    for nt in (1, 2):
        runs = []
        for gather in (False, True):
            for a in outs:
                a[...] = np.nan
            if gather:
                program.run(src, labels[idx], None, 16.0, 0.0, nthreads=nt,
                            rows=idx)
            else:
                program.run(src[idx], labels[idx], None, 16.0, 0.0,
                            nthreads=nt)
            assert program.sharded == (nt == 2)
            runs.append([a.tobytes() for a in outs + [program.logits,
                                                      program.losses]])
        assert runs[0] == runs[1]
    bad = idx.copy()
    bad[3] = 40
    with pytest.raises(ValueError, match=r"rows\[3\] = 40 is not an index "
                                         r"of 40 samples"):
        program.run(src, labels[idx], None, 16.0, 0.0, rows=bad)
    bad[3] = -1
    with pytest.raises(ValueError, match="rows"):
        program.run(src, labels[idx], None, 16.0, 0.0, rows=bad)
    with pytest.raises(ValueError, match="rows must be 16 indices"):
        program.run(src, labels[idx], None, 16.0, 0.0, rows=idx[:5])
    with pytest.raises(ValueError, match="samples of 784 elements"):
        program.run(src[:, :, :5], labels[idx], None, 16.0, 0.0, rows=idx)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        program.run(src.astype(np.float64), labels[idx], None, 16.0, 0.0,
                    rows=idx)


def test_runs_share_the_threads_only_where_they_pay(monkeypatch):
    # not one thread per run: a run without samples (5 samples in 8 runs),
    # parameters past SHARD_PARAM_BYTES, a normalizer of 0, one thread
    from cnnkit import _kernels
    x, y = _data(8, (1, 28, 28), 10)
    _, program = _shard_program(lenet(), 5)
    program.run(x[:5], y[:5], None, 5.0, 0.0)
    assert not program.sharded
    _, program = _shard_program(lenet(), 8)
    program.run(x, y, None, 8.0, 0.0)
    assert program.sharded
    program.run(x, y, np.zeros(8), 0.0, 0.0)
    assert not program.sharded
    program.run(x, y, None, 8.0, 0.0, nthreads=1)
    assert not program.sharded
    monkeypatch.setattr(_kernels, "SHARD_PARAM_BYTES", 61706 * 4 - 1)
    _, program = _shard_program(lenet(), 8)
    program.run(x, y, None, 8.0, 0.0)
    assert not program.sharded


def test_small_steps_run_on_one_thread(monkeypatch):
    # LeNet-5 at batch 1 is under the one-thread limit, at batch 2 over it
    x, y = _data(4, (1, 28, 28), 10)
    flops = {}
    real = T._compile_step

    def spy(model, m, shards):
        entry = real(model, m, shards)
        flops[m] = entry[3]
        return entry
    monkeypatch.setattr(T, "_compile_step", spy)
    # the optimizer's update follows the step: one thread at batch 1 (the
    # idle thread is not woken), the default count at batch 2
    updates = []
    for name in ("sgd_step", "adam_step"):
        def counting(*args, _real=getattr(cnnkit._ops, name)):
            updates.append(args[-1])
            _real(*args)
        monkeypatch.setattr(cnnkit._ops, name, counting)
    for opt in (optim.SGD(0.01, momentum=0.9), optim.Adam()):
        for bs in (1, 2):
            lenet().fit(x, y, batch_size=bs, optimizer=opt, verbose=0)
            opt.reset()
    assert updates == [1] * 4 + [0] * 2 + [1] * 4 + [0] * 2
    # conv 6@5x5 on 28x28, conv 16@5x5 on 10x10, dense 400-120-84-10
    per_sample = 2 * (6 * 25 * 784 + 16 * 150 * 100 + 400 * 120 +
                      120 * 84 + 84 * 10)
    assert flops == {1: per_sample, 2: 2 * per_sample}
    assert per_sample < T._SERIAL_FLOPS < 2 * per_sample


def test_strided_rows_and_custom_optimizer_steps(monkeypatch):
    # batch 1 takes a view of one row of a C-contiguous x and gathers
    # otherwise (a Fortran-ordered x: the same weights); an Optimizer
    # subclass with its own step() is called at every batch
    x, y = _data(6, (1, 28, 28), 10, seed=2)
    calls = []

    class Counting(optim.SGD):
        def step(self, params, grads):
            calls.append(1)
            super().step(params, grads)

    out = []
    for xs in (x, np.asfortranarray(x)):
        model = lenet()
        model.fit(xs, y, batch_size=1, optimizer=Counting(0.05), verbose=0)
        out.append(model.flat_params.tobytes())
    assert out[0] == out[1]
    assert len(calls) == 12
