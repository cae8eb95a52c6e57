"""Compiled inference plans (cnnkit.plan, src/plan.c): held to the
layer-by-layer forward pass within the documented bound, bit-identical for
any thread count and independent of the batch's other images, never stale
after cnnkit writes weights, and refusing bad input as predict does."""
import pickle

import numpy as np
import pytest

import cnnkit
from cnnkit import layers as L
from cnnkit import models, plan
from cnnkit.cli import default_model

from helpers import (LAYOUTS, SIMD_PATHS, num_threads, require, run_simd,
                     to_layout)


def _bound(dtype):
    return plan.RTOL32 if np.dtype(dtype) == np.float32 else plan.RTOL64


def _train_bn_statistics(model, rng, steps=3):
    """Give every batch norm running statistics unlike its initial ones
    (and non-trivial affine weights), as after training."""
    for _ in range(steps):
        x = rng.standard_normal((8,) + model.input_shape).astype(model.dtype)
        model.forward(x, training=True)
    model.clear_caches()
    for layer in model.layers:
        if isinstance(layer, L.BatchNorm2D):
            for v in layer.params.values():
                v[...] = rng.uniform(0.5, 1.5, v.shape)
    model._weights_changed()
    return model


def _concat_model(dtype):
    inp = cnnkit.Input((3, 9, 7))
    a = L.ReLU()(L.Conv2D(4, 3, padding=1)(inp))
    b = L.DepthwiseConv2D(3, padding=1)(inp)
    c = L.Concatenate()([a, b, a])
    d = L.Multiply()([L.Sigmoid()(L.Conv2D(4, 1)(c)), a])
    e = L.LeakyReLU(0.2)(L.Add()([d, a, L.Conv2D(4, 1)(c)]))
    e = L.AvgPool2D(3, stride=2, padding=1, ceil_mode=True)(e)
    e = L.BatchNorm2D()(L.MaxPool2D(2, ceil_mode=True)(L.GELU()(e)))
    f = L.Tanh()(L.Dense(6)(L.Flatten()(e)))
    g = L.SiLU()(L.Dense(5)(L.GlobalMaxPool2D()(c)))
    out = L.Dense(3)(L.Concatenate()([f, g, L.Dropout(0.5)(f)]))
    return cnnkit.Model(inp, out, seed=3, dtype=dtype)


MODELS = {
    "lenet5": lambda dt: models.lenet5(seed=0, dtype=dt),
    "default": lambda dt: cnnkit.Sequential(
        [type(la).from_config(la.get_config())
         for la in default_model((1, 8, 8), 10, 0).layers],
        input_shape=(1, 8, 8), seed=0, dtype=dt),
    "resnet8": lambda dt: models.resnet(8, input_shape=(3, 12, 12), width=4,
                                        seed=0, dtype=dt),
    "mobilenet": lambda dt: models.mobilenet(input_shape=(3, 16, 16),
                                             width=4, seed=0, dtype=dt),
    "graph": _concat_model,
}


def _make(name, dtype):
    rng = np.random.default_rng(1)
    return _train_bn_statistics(MODELS[name](dtype), rng)


def _x(model, n, seed=2):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + model.input_shape).astype(model.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_matches_the_layers_within_the_bound(name, dtype):
    model = _make(name, dtype)
    p = model.compile()
    for n in (1, 5):
        x = _x(model, n)
        ref = model.forward(x)
        got = p.run(x)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        bound = _bound(dtype) * (1 + np.abs(ref).max())
        assert np.abs(got - ref).max() <= bound
        if p.folded == p.winograd == 0:  # neither: the layers' bits
            assert np.array_equal(got, ref)


def test_what_the_plans_fold_and_fuse():
    assert _make("lenet5", "float32").compile().folded == 0
    res = _make("resnet8", "float32")
    bns = sum(isinstance(la, L.BatchNorm2D) for la in res.layers)
    assert res.compile().folded == bns
    # conv+BN+ReLU, conv+BN, add+ReLU: fewer steps than layers
    assert res.compile().num_steps < len(res._graph.order)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bit_identical_for_any_thread_count(name):
    model = _make(name, "float32")
    p = model.compile()
    x = _x(model, 7)
    outs = []
    for t in (1, 2, 3):
        with num_threads(t):
            outs.append(p.run(x))
            outs.append(p.run(x, probabilities=True))
    for a, b in zip(outs[:2], outs[2:4]):
        assert np.array_equal(a, b)
    for a, b in zip(outs[:2], outs[4:]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_image_does_not_depend_on_its_batch(name, dtype):
    model = _make(name, dtype)
    p = model.compile()
    x = _x(model, 9)
    whole = p.run(x)
    for i in (0, 4, 8):
        assert np.array_equal(p.run(x[i:i + 1])[0], whole[i])
    # a smaller batch after a larger one (the arena is reused)
    assert np.array_equal(p.run(x[3:5]), whole[3:5])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_chunks_give_the_whole_batchs_bits(name, dtype):
    """A large batch runs in chunks of images, each through every step on
    one thread: the same bits as the whole batch step after step, for any
    chunk size (a last, shorter chunk included) and thread count."""
    model = _make(name, dtype)
    p = model.compile()
    x = _x(model, 11)
    whole = p._run(x, chunk=0).copy()
    whole_p = p._run(x, probabilities=True, chunk=0).copy()
    for t in (1, 2, 3):
        with num_threads(t):
            for chunk in (1, 2, 4, 10):
                assert np.array_equal(p._run(x, chunk=chunk), whole)
                assert np.array_equal(
                    p._run(x, probabilities=True, chunk=chunk), whole_p)
            assert np.array_equal(p.run(x), whole)


def test_how_a_batch_is_split_into_chunks():
    prog = _make("lenet5", "float32").compile()._program
    per = prog.arena_size * 4
    assert prog.chunk(1, 2) == 0 and prog.chunk(3, 2) == 0   # too few
    assert prog.chunk(4, 2) == 2 and prog.chunk(9, 3) == 3  # one per thread
    assert prog.chunk(256, 2) == 64                          # two per thread
    cap = (2 << 20) // per
    assert prog.chunk(100000, 2) == cap                      # memory bound
    assert prog.chunk(cap, 1) == 0 and prog.chunk(cap + 1, 1) == cap
    # in chunks, each thread's arena lies in the workspace
    assert prog.arena_elements(256, 0) == 256 * prog.arena_size
    assert prog.arena_elements(256, 64) == 0
    assert prog.workspace_size(256, 2, 64) >= 2 * 64 * prog.arena_size
    x = np.zeros((9, 1, 28, 28), np.float32)
    y = np.empty(9 * 10, np.float32)
    work = np.empty(prog.workspace_size(9, 2, 2), np.float32)
    with pytest.raises(ValueError, match="chunk"):
        prog.run(x, y, np.empty(1, np.float32), work, False, 2, -1)
    with pytest.raises(ValueError, match="work"):            # too small
        prog.run(x, y, np.empty(1, np.float32), work[:-1], False, 2, 2)
    with pytest.raises(ValueError, match="overlap"):
        prog.run(x, work[:90], np.empty(1, np.float32), work, False, 2, 2)
    prog.run(x, y, np.empty(1, np.float32), work, False, 2, 2)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_probabilities_are_predict_proba(dtype):
    model = _make("resnet8", dtype)
    x = _x(model, 6)
    p = model.compile()
    proba = p.run(x, probabilities=True)
    assert np.array_equal(proba, cnnkit._ops.softmax(p.run(x)))
    assert np.array_equal(model.predict_proba(x), proba)
    assert np.array_equal(model.predict_proba(x, batch_size=4), proba)
    assert np.array_equal(model.predict(x), p.run(x).argmax(axis=1))
    assert np.array_equal(model(x), p.run(x))
    out = np.empty((6, 10), dtype)
    assert p.run(x, out=out, probabilities=True) is out
    assert np.array_equal(out, proba)


def test_a_plan_in_another_dtype():
    model = _make("mobilenet", "float32")
    x = _x(model, 3)
    p64 = plan.compile(model, dtype="float64")
    assert p64.dtype == np.float64
    ref = model.forward(x).astype(np.float64)
    assert np.abs(p64.run(x) - ref).max() <= 1e-4 * (1 + np.abs(ref).max())


def test_batch_size_reserves_the_arena():
    model = _make("lenet5", "float32")
    p = plan.compile(model, batch_size=32)
    x = _x(model, 32)
    assert np.array_equal(p.run(x), model.forward(x))



@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_scratch_memory_starts_on_a_cache_line(dt):
    # The kernels' vector loads of packed weights and copies never cross
    # two cache lines: the plan's arena and workspace, the training
    # arena's arrays and the kernels' scratch start on 64-byte boundaries
    # (NumPy's large buffers start 16 bytes into one)
    from cnnkit import _context, _ops
    for shape in (0, 1, 7, 4096, 10 ** 6, (3, 5), (np.int64(2), 33), ()):
        a = _ops.aligned_empty(shape, dt)
        want = np.empty(shape, dt)
        assert a.shape == want.shape and a.dtype == want.dtype
        assert a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0 or a.size == 0
    model = _make("lenet5", np.dtype(dt).name)
    p = plan.compile(model)
    for n in (1, 3, 256):
        arena, work = p._reserve(n, 2, p._program.chunk(n, 2))
        assert arena.ctypes.data % 64 == 0 and work.ctypes.data % 64 == 0
    a = _context.Arena().get(model, "y", (100003,), np.dtype(dt))
    assert a.ctypes.data % 64 == 0 and a.shape == (100003,)


# ---------------------------------------------------------------------------
# automatic use and staleness
# ---------------------------------------------------------------------------
def _digits(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > x[:, 0, 4:].sum(axis=(1, 2)))
    return x, y.astype(np.int64)


def _bn_net(seed=0):
    return cnnkit.Sequential([
        L.Conv2D(4, 3, padding=1, use_bias=False), L.BatchNorm2D(), L.ReLU(),
        L.MaxPool2D(2), L.Flatten(), L.Dense(8), L.BatchNorm1D(), L.ReLU(),
        L.Dense(2)], input_shape=(1, 8, 8), seed=seed)


def _layers_proba(model, x):
    return cnnkit._ops.softmax(model.forward(x))


def _close(a, b, dtype=np.float32):
    return np.abs(a - b).max() <= _bound(dtype) * (1 + np.abs(b).max())


def test_predict_uses_a_cached_plan():
    model = _bn_net()
    x, _ = _digits(16)
    model.predict(x)
    first = model._inference_plan()
    assert first is not None and first.folded == 2
    model.predict_proba(x)
    assert model._inference_plan() is first


def test_never_stale_after_fit():
    model = _bn_net()
    x, y = _digits()
    before = model.predict_proba(x)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    after = model.predict_proba(x)
    assert not np.array_equal(before, after)
    assert _close(after, _layers_proba(model, x))
    assert np.array_equal(model.predict(x), after.argmax(axis=1))


def test_never_stale_after_set_weights_and_load_state_dict():
    model, other = _bn_net(0), _bn_net(5)
    _train_bn_statistics(other, np.random.default_rng(3))
    x, _ = _digits(16)
    model.predict_proba(x)
    model.set_weights(other.get_weights())
    assert _close(model.predict_proba(x), _layers_proba(other, x))
    assert _close(model(x), other.forward(x))
    model2 = _bn_net(7)
    model2.predict(x)
    model2.load_state_dict(other.state_dict())
    assert _close(model2.predict_proba(x), _layers_proba(other, x))
    copy = pickle.loads(pickle.dumps(other))
    assert _close(copy.predict_proba(x), _layers_proba(other, x))


def test_compile_refreshes_the_cached_plan_after_direct_edits_of_dense():
    model = models.lenet5(seed=0)
    x = _x(model, 2)
    model.predict(x)
    model.parameters()[-2][...] *= 2.0      # the last dense weight, in place
    model.compile()
    assert np.array_equal(model.predict_proba(x), _layers_proba(model, x))


def test_compile_refreshes_the_cached_plan_after_direct_edits():
    model = _bn_net()
    x, _ = _digits(8)
    model.predict(x)
    model.layers[1].buffers["running_var"][...] *= 4.0   # a folded BN
    model.compile()
    assert _close(model.predict_proba(x), _layers_proba(model, x))


def test_a_shared_block_trained_elsewhere_is_not_stale():
    x, y = _digits(64)
    inp = cnnkit.Input((1, 8, 8))
    base = cnnkit.Model(inp, L.Dense(2)(L.Flatten()(L.BatchNorm2D()(inp))),
                        seed=1)
    base.predict(x)
    inp2 = cnnkit.Input((1, 8, 8))
    outer = cnnkit.Model(inp2, L.Dense(2)(base(inp2)), seed=2)
    outer.fit(x, y, epochs=1, verbose=0)
    assert _close(base.predict_proba(x), _layers_proba(base, x))


def test_structure_change_rebuilds_the_plan():
    model = models.lenet5(seed=0)
    x = _x(model, 2)
    model.predict(x)
    model.layers[-1] = L.Dense(3)
    model.build(model.input_shape)
    assert model.predict_proba(x).shape == (2, 3)
    assert np.array_equal(model.predict_proba(x), _layers_proba(model, x))


class _Custom(L.Layer):
    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, training=False):
        return x * 2


def test_a_model_that_cannot_compile_keeps_the_layer_path():
    model = cnnkit.Sequential([L.Flatten(), _Custom(), L.Dense(3)],
                              input_shape=(1, 4, 4), seed=0)
    with pytest.raises(TypeError, match="_Custom"):
        model.compile()
    x = _x(model, 3)
    assert model._inference_plan() is None
    assert np.array_equal(model.predict_proba(x), _layers_proba(model, x))


def test_softmax_on_a_feature_map_cannot_compile():
    inp = cnnkit.Input((2, 3, 3))
    model = cnnkit.Model(inp, L.Softmax()(L.Flatten()(inp)), seed=0)
    assert model.compile().run(np.ones((1, 2, 3, 3))).shape == (1, 18)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def _one_bad(value):
    """A float32 batch of LeNet-5 images, its last element ``value``."""
    x = np.zeros((3, 1, 28, 28), np.float32)
    x[2, 0, 27, 27] = value
    return x


def test_run_refuses_what_predict_refuses():
    model = models.lenet5(seed=0)
    p = model.compile()
    cases = [
        (np.zeros((2, 3, 28, 28)), ValueError),
        (np.zeros((2, 1, 27, 28)), ValueError),
        (np.zeros((0, 1, 28, 28)), ValueError),
        (np.full((1, 1, 28, 28), np.nan), ValueError),
        (np.full((1, 1, 28, 28), np.inf), ValueError),
        # batches of the plan's dtype, shape and layout, one value bad
        (_one_bad(np.nan), ValueError),
        (_one_bad(-np.inf), ValueError),
        (np.zeros((1, 1, 28, 28), dtype=complex), TypeError),
        (np.array(["a"]), TypeError),
    ]
    for x, err in cases:
        with pytest.raises(err) as plan_err:
            p.run(x)
        with pytest.raises(err) as predict_err:
            model.predict(x)
        assert str(plan_err.value) == str(predict_err.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_finite_check_finds_every_bad_value(dtype):
    # the check behind run, predict and fit: every position of the
    # 8-wide blocks and of the tail, each kind of value that is not finite
    from cnnkit import _ops
    big = np.finfo(dtype).max
    for n in (1, 7, 8, 9, 23, 70000):
        x = np.full(n, big, dtype)
        x[::3] = np.finfo(dtype).smallest_subnormal
        assert _ops.all_finite(x)
        for i in sorted({0, n // 2, n - 1} | set(range(min(n, 17)))):
            for v in (np.nan, np.inf, -np.inf):
                y = x.copy()
                y[i] = v
                assert not _ops.all_finite(y)
    assert _ops.all_finite(np.zeros(0, dtype))
    # unaligned: a view of a byte buffer at an odd offset
    x = to_layout(np.ones(37, dtype), "unaligned")
    assert not x.flags.aligned and _ops.all_finite(x)
    x[36] = np.inf
    assert not _ops.all_finite(x)
    with pytest.raises(TypeError, match="all_finite: x must be"):
        _ops.all_finite(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="all_finite: x must be"):
        _ops.all_finite(np.zeros((3, 4), dtype)[:, ::2])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_run_and_predict_take_every_memory_layout(layout):
    # a batch of the plan's dtype in any layout -- unaligned (a view of a
    # byte buffer at an odd offset), reversed, read-only, broadcast -- gives
    # the values of a C-contiguous copy, through run and predict
    model = models.lenet5(seed=0)
    p = model.compile()
    x = np.random.default_rng(1).standard_normal(
        (3, 1, 28, 28)).astype(np.float32)
    want = p.run(x)
    xl = to_layout(x, layout)
    if layout == "broadcast":
        want = p.run(np.ascontiguousarray(xl))
    assert np.array_equal(p.run(xl), want)
    assert np.array_equal(model.predict(xl), want.argmax(1))
    bad = to_layout(np.where(np.arange(x.size).reshape(x.shape) == 500,
                             np.nan, x).astype(np.float32), layout)
    count = 3 if layout == "broadcast" else 1     # the first image, thrice
    with pytest.raises(ValueError, match=f"{count} NaN or infinite"):
        p.run(bad)


def test_run_converts_like_predict():
    model = models.lenet5(seed=0)
    p = model.compile()
    x = np.random.default_rng(0).random((3, 28, 28))        # float64, 3-D
    ref = model.forward(x[:, None].astype(np.float32))
    assert np.array_equal(p.run(x), ref)
    assert np.array_equal(p.run(x[0][None]), ref[:1])
    xf = np.asfortranarray(x[:, None])
    assert np.array_equal(p.run(xf), ref)


def test_bad_out_and_arguments():
    model = models.lenet5(seed=0)
    p = model.compile()
    x = _x(model, 2)
    for out in (np.empty((2, 9), np.float32), np.empty((2, 10)),
                np.empty((10, 2), np.float32).T, [0.0] * 20):
        with pytest.raises(ValueError, match="out must be"):
            p.run(x, out=out)
    with pytest.raises(TypeError, match="dtype"):
        plan.compile(model, dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        plan.compile(model, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        plan.compile(model, batch_size=2.5)
    with pytest.raises(ValueError, match="not built"):
        plan.compile(cnnkit.Sequential([L.Dense(2)]))


def test_the_program_refuses_steps_outside_its_arena():
    """The checks in C's way: no step may reach outside the arena, the
    input or the output, or write over its own input."""
    w = np.ones((3, 4), np.float32)
    P = cnnkit._ops.PlanProgram
    ok = dict(op="dense", weight=w, bias=None, in0=-1, out=-2)
    P([ok], np.float32, 4, 3, 0)
    bad = [
        dict(ok, out=6),                       # past the arena
        dict(ok, in0=5),                       # reads past the arena
        dict(ok, weight=np.ones((3, 5), np.float32)),  # input size
        dict(ok, weight=w.astype(np.float64)),
        dict(ok, bias=np.ones(2, np.float32)),
        dict(op="act", size=4, in0=0, out=2),  # overlaps its input
        dict(op="act", size=4, in0=-1, out=-1),
        dict(op="copy", rows=2, size=2, stride=2, at=1, total=4, in0=-1,
             out=8),
        dict(op="nope", in0=-1, out=-2),
    ]
    # a conv's residual: never its output, never with a pooling in the pass
    conv = dict(op="conv", x_shape=(1, 2, 2), weight=np.ones((1, 1, 1, 1),
                np.float32), bias=None, stride=(1, 1), padding=(0, 0, 0, 0),
                dilation=(1, 1), groups=1, in0=-1, in1=0, out=4,
                residual=True)
    P([conv], np.float32, 4, 4, 8)
    bad += [dict(conv, in1=4), dict(conv, in1=6), dict(conv, in1=-2),
            dict(conv, weight=np.ones((16, 1, 1, 1), np.float32),
                 pool=True, in1=0, out=8)]
    for spec in bad:
        with pytest.raises(ValueError):
            P([spec], np.float32, 4, 3, 8)
    prog = P([ok], np.float32, 4, 3, 0)
    x = np.ones(8, np.float32)
    with pytest.raises(ValueError):            # arena too small
        prog.run(x, np.empty(6, np.float32), np.empty(0, np.float32),
                 np.empty(0, np.float32))
    with pytest.raises(ValueError):            # y of the wrong size
        prog.run(x, np.empty(5, np.float32), np.empty(1, np.float32),
                 np.empty(10 ** 5, np.float32))
    with pytest.raises(ValueError):            # no room for logits
        prog.run(x, np.empty(6, np.float32), np.empty(1, np.float32),
                 np.empty(10 ** 5, np.float32), True)


def test_threads_share_a_plan():
    from concurrent.futures import ThreadPoolExecutor
    model = _make("resnet8", "float32")
    p = model.compile()
    xs = [_x(model, n, seed=n) for n in (1, 3, 8, 2, 5, 7)]
    want = [p.run(x) for x in xs]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            got = list(pool.map(p.run, xs))
            assert all(np.array_equal(a, b) for a, b in zip(got, want))
            got = list(pool.map(model.predict_proba, xs))
            assert all(np.array_equal(a, cnnkit._ops.softmax(b))
                       for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_plane_convolutions_batched_have_conv2d_bits(dtype):
    """Convolutions with few output pixels that conv2d would run one image
    at a time (its im2col path) run as one product per chunk of images
    (plan.c): the same bits, across chunk boundaries too."""
    inp = cnnkit.Input((64, 8, 8))
    a = L.Conv2D(8, 3, padding=1)(inp)                      # 64 pixels
    b = L.ReLU()(L.Conv2D(8, 3, padding=1, use_bias=False)(inp))
    c = L.Conv2D(8, 3, stride=2, padding=2, dilation=2)(inp)
    d = L.ReLU()(L.Conv2D(8, (1, 3), stride=(1, 2))(inp))
    e = L.Conv2D(8, 1)(inp)                                 # 1x1
    flat = [L.Flatten()(t) for t in (a, b, c, d, e)]
    model = cnnkit.Model(inp, L.Concatenate()(flat), seed=0, dtype=dtype)
    p = model.compile(winograd=False)
    x = _x(model, 20)
    ref = model.forward(x)
    for t in (1, 2, 3):
        with num_threads(t):
            assert np.array_equal(p.run(x), ref)
    for n in (1, 2, 7, 8, 13):
        assert np.array_equal(p.run(x[:n]), ref[:n])
    # 2304 rows of 36 pixels: chunks of 3 images
    inp = cnnkit.Input((256, 6, 6))
    model = cnnkit.Model(inp, L.ReLU()(L.Conv2D(4, 3, padding=1)(inp)),
                         seed=0, dtype=dtype)
    x = _x(model, 8)
    ref = model.forward(x)
    for t in (1, 2, 3):
        with num_threads(t):
            assert np.array_equal(model.compile(winograd=False).run(x), ref)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plan_matches_pytorch_on_a_resnet(dtype):
    torch = require("torch")
    from cnnkit.bench import resnet_torch
    torch.manual_seed(0)
    tnet = resnet_torch(8, 10, 3, 4).double()
    with torch.no_grad():                    # running statistics moved
        tnet.train()
        for _ in range(3):
            tnet(torch.randn(8, 3, 12, 12, dtype=torch.float64) * 2 + 0.5)
    tnet.eval()
    net = models.resnet(8, input_shape=(3, 12, 12), width=4, seed=0,
                        dtype=dtype)
    net.set_weights([v.numpy() for v in tnet.state_dict().values()])
    x = _x(net, 6)
    with torch.no_grad():
        want = tnet(torch.from_numpy(x.astype(np.float64))).numpy()
    got = net.compile().run(x)
    bound = (1e-4 if dtype == "float32" else 1e-10) * (1 + np.abs(want).max())
    assert np.abs(got - want).max() <= bound


def test_a_layer_option_the_plan_does_not_know_is_refused(monkeypatch):
    model = models.lenet5(seed=0)
    conv = model.layers[0]
    config = conv.get_config()
    monkeypatch.setattr(conv, "get_config",
                        lambda: dict(config, padding_mode="reflect"))
    with pytest.raises(TypeError, match="padding_mode"):
        model.compile()
    x = _x(model, 2)
    assert np.array_equal(model.predict(x), model.forward(x).argmax(1))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape, pool", [
    ((3, 8, 8), dict(pool_size=2)),                           # 2x2 fast rows
    ((2, 7, 9), dict(pool_size=2)),                           # odd sizes
    ((2, 7, 9), dict(pool_size=2, ceil_mode=True)),           # a 1-wide edge
    ((2, 9, 9), dict(pool_size=3, stride=2, padding=1)),
    ((1, 5, 6), dict(pool_size=(2, 3), stride=(1, 3))),
    ((2, 4, 4), dict(pool_size=2, stride=3, ceil_mode=True)),  # stride > k
    ((1, 1, 1), dict(pool_size=1)),                           # 1x1 output
])
def test_max_pool_steps_keep_the_layers_bits_without_indices(dt, shape,
                                                             pool):
    # the plan's max pooling keeps no indices: the same windows in the same
    # order, so the same values, ties and -0.0 included
    model = cnnkit.Sequential([L.MaxPool2D(**pool)], input_shape=shape,
                              dtype=dt)
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 3, (5,) + shape).astype(dt)      # many ties
    x[x == 0] = -0.0
    x[0] = rng.standard_normal(shape)
    p = plan.compile(model)
    for threads in (1, 2, 3):
        with num_threads(threads):
            assert p.run(x).tobytes() == model.forward(x).tobytes()


def _pool_chain(dt, shape, conv, pool, relu=True):
    layers = [L.Conv2D(**conv)] + ([L.ReLU()] if relu else []) + \
        [L.MaxPool2D(**pool), L.Flatten(), L.Dense(3)]
    return cnnkit.Sequential(layers, input_shape=shape, dtype=dt, seed=4)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape, conv, relu", [
    # flat planes (rows end to end): LeNet-5's second layer; 4x4 planes
    ((6, 14, 14), dict(filters=16, kernel_size=5), True),
    ((16, 4, 4), dict(filters=32, kernel_size=3, padding=1), True),
    # rows in pairs: odd height and width (the last row and column are
    # dropped), no ReLU (signed zeros and ties), stride 2, 48 filters
    ((8, 15, 21), dict(filters=32, kernel_size=3, padding=1), False),
    ((8, 28, 30), dict(filters=48, kernel_size=3, padding=1, stride=2),
     True),
    ((32, 9, 9), dict(filters=64, kernel_size=3), True),
    # few taps on a flat plane (rows under 4/5 of a vector, in float64
    # too): as the 8x8 network's first layer (9 taps)
    ((1, 6, 6), dict(filters=16, kernel_size=3, padding=1), True),
    ((2, 7, 6), dict(filters=32, kernel_size=3, padding=1), False),
    # rows of 8: whole vectors, but not whole tiles with 16 registers
    # (flat planes on AVX2 too): the 8x8 network's first layer
    ((1, 8, 8), dict(filters=16, kernel_size=3, padding=1), True),
    ((3, 8, 8), dict(filters=32, kernel_size=3, padding=1), False),
    # more taps than a slab (600 > KC on the AVX2 path): tiles of rows
    # summed slab after slab before the pooling
    ((24, 9, 10), dict(filters=32, kernel_size=5, padding=2), True),
    # a flat plane whose pooled values (24 pixels x 176 filters) overflow
    # the task's buffer: each pair of rows stored as it is done (rows of 9
    # leave lanes idle on every SIMD path, so the plane is flat on each)
    ((3, 12, 9), dict(filters=176, kernel_size=3, padding=1), True),
    # small flat planes swept whole before the pooling (16 registers):
    # two filter vectors then one, an odd last row and column dropped
    ((4, 5, 7), dict(filters=24, kernel_size=3, padding=1), True),
    ((5, 9, 7), dict(filters=16, kernel_size=3, padding=1), False),
    # more taps than a slab on such a plane (576 > KC in float32 too)
    ((64, 5, 5), dict(filters=16, kernel_size=3, padding=1), True),
    # a tall flat plane of narrow rows (84 pixels): each pair of rows one
    # tile, pooled in registers, on every SIMD path
    ((2, 14, 6), dict(filters=16, kernel_size=3, padding=1), True),
])
def test_conv_and_max_pool_in_one_pass(dt, shape, conv, relu):
    # A 2x2 max pooling of stride 2 after a convolution whose filters the
    # vector divides runs in the convolution's pass: the layers' bits, for
    # any thread count and any batch
    model = _pool_chain(dt, shape, conv, dict(pool_size=2), relu)
    p = plan.compile(model, winograd=False)
    labels = [lab for lab, _ in p.profile(_x(model, 1), 1)]
    # On the AVX-512 path some of these layers keep the filter tiles,
    # which leave the pooling to a step of its own: 24 filters are not
    # whole vectors of 16 float32; and in float64 (vectors of 8) rows of
    # 7 and 8 fill their vectors, so no plane is swept flat, and a layer
    # of under 64 taps keeps the filter tiles
    avx512 = cnnkit._kernels.build_info()["simd_path"] == "AVX-512"
    if np.dtype(dt) == np.float32:
        fused = not (avx512 and conv["filters"] % 16)
    else:
        fused = not (avx512 and shape[2] in (7, 8) and
                     shape[0] * conv["kernel_size"] ** 2 < 64)
    if fused:
        assert "+ max_pool 2 (" in labels[0]
        assert p.num_steps == 2
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (9,) + shape).astype(dt)      # many ties
    x[x == 0] = -0.0
    x[:4] = rng.standard_normal((4,) + shape)
    want = model.forward(x)
    for threads in (1, 2, 3):
        with num_threads(threads):
            assert p.run(x).tobytes() == want.tobytes()
            assert p.run(x[2:3]).tobytes() == want[2:3].tobytes()
    # infinite weights: windows holding infinities, NaNs (inf * 0) among
    # numbers, or numbers only (the pooled pass's integer maximum, and the
    # rule's comparisons where a window holds a NaN)
    model = cnnkit.Sequential(
        [L.Conv2D(**conv)] + ([L.ReLU()] if relu else []) +
        [L.MaxPool2D(2)], input_shape=shape, dtype=dt, seed=4)
    weights = model.get_weights()
    w = weights[0].reshape(len(weights[0]), -1)
    k = len(w) // 2 + 1
    taps = rng.integers(0, w.shape[1], k)
    w[np.arange(k), taps] = rng.choice(np.array([-np.inf, np.inf], dt), k)
    model.set_weights(weights)
    p = plan.compile(model)
    assert p.num_steps == 1 or not fused
    x = rng.integers(-1, 2, (6,) + shape).astype(dt)
    x[:3] = rng.standard_normal((3,) + shape)
    want = model.forward(x)
    assert np.isnan(want).any() and np.isinf(want).any()
    assert np.isfinite(want).any()
    for threads in (1, 2):
        with num_threads(threads):
            assert p.run(x).tobytes() == want.tobytes()


#: A child's check that a plan has its model's bits on 1 and 2 threads, on
#: a batch with many ties and signed zeros.
PLAN_BITS = r'''
from cnnkit import layers as L, plan


def check_bits(model, shape, dt, tag):
    global LAST
    p = LAST = plan.compile(model, winograd=False)
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, (5,) + shape).astype(dt)
    x[x == 0] = -0.0
    x[:2] = rng.standard_normal((2,) + shape)
    for nt in (1, 2):
        cnnkit.set_num_threads(nt)
        if p.run(x).tobytes() != model.forward(x).tobytes():
            failures.append(f"{np.dtype(dt).name} {tag}: {nt} threads "
                            f"differ from the layers")
    return p.num_steps
'''

POOL_CHECKER = PLAN_BITS + r'''
fused = 0
for dt in (np.float32, np.float64):
    # (the last: stride 2, its rows read whole at the stride)
    for shape, k, st in (((16, 4, 4), 32, 1), ((8, 15, 21), 16, 1),
                         ((6, 14, 14), 16, 1), ((9, 10, 12), 24, 1),
                         ((1, 6, 6), 16, 1), ((5, 17, 23), 32, 2)):
        model = cnnkit.Sequential([L.Conv2D(k, 3, stride=st, padding=1),
                                   L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                                   L.Dense(3)],
                                  input_shape=shape, dtype=dt, seed=2)
        fused += check_bits(model, shape, dt, f"{shape} {k} {st}") == 2
extra["fused"] = fused
'''


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_pooled_conv_on_every_simd_path(path):
    # the pooled pass of each engine (AVX-512: 16 and 8 lanes; AVX2: 8 and
    # 4, so 24 filters pool there in float32 and float64) has the layers'
    # bits; the generic path runs the two steps
    res = run_simd(path, POOL_CHECKER)
    assert res["failures"] == []
    if path == "generic":
        assert res["fused"] == 0
    else:
        assert res["fused"] >= 5


@pytest.mark.parametrize("pool", [dict(pool_size=2, ceil_mode=True),
                                  dict(pool_size=3, stride=2),
                                  dict(pool_size=2, padding=1),
                                  dict(pool_size=2, stride=1)])
def test_other_poolings_stay_steps_of_their_own(pool):
    model = _pool_chain(np.float32, (8, 9, 9),
                        dict(filters=32, kernel_size=3), pool)
    p = plan.compile(model)
    x = _x(model, 3)
    labels = [lab for lab, _ in p.profile(x, 1)]
    assert labels[1].startswith("max_pool")
    assert p.run(x).tobytes() == model.forward(x).tobytes()


def test_a_grouped_conv_before_a_pooling_compiles():
    # grouped filters take no filter-vector tiles: the pooling stays a step
    model = _pool_chain(np.float32, (4, 8, 8),
                        dict(filters=32, kernel_size=3, groups=2),
                        dict(pool_size=2))
    p = plan.compile(model)
    x = _x(model, 3)
    labels = [lab for lab, _ in p.profile(x, 1)]
    assert labels[1].startswith("max_pool")
    assert p.run(x).tobytes() == model.forward(x).tobytes()


def test_a_pooled_conv_output_read_twice_is_not_fused():
    # the convolution's output feeds the pooling and a second branch
    inp = cnnkit.Input((8, 6, 6))
    y = L.Conv2D(32, 3, padding=1)(inp)
    a = L.Flatten()(L.MaxPool2D(2)(y))
    b = L.Flatten()(L.MaxPool2D(2)(L.ReLU()(y)))
    model = cnnkit.Model(inp, L.Dense(3)(L.Concatenate()([a, b])), seed=1)
    p = plan.compile(model)
    x = _x(model, 2)
    assert not any("+ max_pool" in lab for lab, _ in p.profile(x, 1))
    assert p.run(x).tobytes() == model.forward(x).tobytes()


def test_profile_times_each_step():
    model = _make("resnet8", "float32")
    p = model.compile()
    x = _x(model, 3)
    steps = p.profile(x, repeats=3)
    assert len(steps) == p.num_steps
    assert all(isinstance(label, str) and t >= 0 for label, t in steps)
    # the first step is the stem: conv + folded batch norm + ReLU, named
    label = steps[0][0]
    assert label.startswith("conv 3x12x12 -> 4, 3x3 pad 1 + relu (")
    first = [la for la in model.layers][:3]
    assert all(la.name in label for la in first)
    # every layer but Flatten / Dropout / the folded ones appears in a step
    named = " ".join(label for label, _ in steps)
    for la in model.layers:
        if not isinstance(la, (L.Flatten, L.Dropout)):
            assert la.name in named
    # profiling leaves results alone
    assert np.array_equal(p.run(x), model.compile().run(x))
    lenet = models.lenet5(seed=0)
    labels = [lab for lab, _ in lenet.compile().profile(_x(lenet, 1), 1)]
    assert labels[1].startswith("max_pool 2 on 6x28x28")
    assert labels[2].startswith("conv 6x14x14 -> 16, 5x5 + relu + "
                                "max_pool 2 (conv2d_")
    assert labels[3].startswith("dense 400 -> 120 + relu")
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="repeats"):
            p.profile(x, repeats=bad)
    with pytest.raises(ValueError, match="NaN"):
        p.profile(np.full_like(x, np.nan))
    times = np.zeros(p.num_steps, np.float64)      # one element short
    with pytest.raises(ValueError, match="times"):
        p._program.run(x, np.empty((3, 10), np.float32),
                       *p._reserve(3, 1, 0), False, 1, 0, times)


def test_the_arithmetic_a_plan_counts():
    """A plan counts its floating-point operations per image (two per
    multiply-add, one per pooled element), to run small batches on one
    thread."""
    p = models.lenet5(seed=0).compile()
    conv = 2 * (6 * 1 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10)
    pool = 6 * 28 * 28 + 16 * 10 * 10         # the second in conv2's pass
    dense = 2 * (400 * 120 + 120 * 84 + 84 * 10)
    assert p._flops == conv + pool + dense
    assert plan._SERIAL_FLOPS > p._flops / 2


def _residual_block(dt, shape, conv, shortcut, relu=True):
    """conv (+ReLU) -> conv -> add a shortcut (-> ReLU) -> dense: the
    shortcut the input, the first conv's output, or a 1x1 conv of the
    input (stride and filters of the second conv's output)."""
    inp = cnnkit.Input(shape)
    a = L.ReLU()(L.Conv2D(**conv)(inp))
    b = L.Conv2D(**dict(conv, stride=1, padding="same"))(a)
    if shortcut == "input":
        other = inp
    elif shortcut == "first":
        other = a
    else:
        other = L.Conv2D(conv["filters"], 1, stride=conv.get("stride", 1))(
            inp)
    y = L.Add()([b, other] if shortcut != "conv" else [other, b])
    if relu:
        y = L.ReLU()(y)
    out = L.Dense(3)(L.Flatten()(y))
    return cnnkit.Model(inp, out, dtype=dt, seed=6)


def _ties(shape, n, dt, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (n,) + shape).astype(dt)      # many ties, -0
    x[x == 0] = -0.0
    x[:3] = rng.standard_normal((3,) + shape)
    return x


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape, conv, shortcut", [
    # the input as shortcut: filter tiles (8 filters, 15-wide rows) and
    # filter-vector rows (32 filters)
    ((8, 9, 15), dict(filters=8, kernel_size=3, padding=1), "input"),
    ((32, 7, 17), dict(filters=32, kernel_size=3, padding=1), "input"),
    # flat planes (4x4, 7x7), the first conv's output as shortcut
    ((16, 4, 4), dict(filters=32, kernel_size=3, padding=1), "first"),
    ((6, 7, 7), dict(filters=16, kernel_size=3, padding=1), "first"),
    # the add fused into the 1x1 shortcut conv (the im2col path, the
    # residual added by each of its tasks), stride 2
    ((16, 10, 10), dict(filters=32, kernel_size=3, padding=1, stride=2),
     "conv"),
    ((4, 9, 9), dict(filters=6, kernel_size=3, padding=1), "conv"),
])
def test_residual_add_in_the_convs_pass(dt, shape, conv, shortcut):
    # The add of a residual block (and the ReLU after it) runs in the pass
    # of the convolution before it: the layers' bits, for any thread count
    # and any batch
    model = _residual_block(dt, shape, conv, shortcut)
    p = plan.compile(model, winograd=False)
    labels = [lab for lab, _ in p.profile(_x(model, 1), 1)]
    fused = [lab for lab in labels if "+ add + relu (" in lab]
    assert len(fused) == 1 and not any(lab.startswith("add") for lab in labels)
    assert fused[0].startswith("conv " + ("%dx" % shape[0] if shortcut ==
                                          "conv" else ""))
    x = _ties(shape, 9, dt)
    want = model.forward(x)
    for threads in (1, 2, 3):
        with num_threads(threads):
            assert p.run(x).tobytes() == want.tobytes()
            assert p.run(x[4:5]).tobytes() == want[4:5].tobytes()


def test_residual_add_without_relu_and_what_stays_separate():
    x = _ties((8, 6, 6), 4, np.float32)
    conv = dict(filters=8, kernel_size=3, padding=1)
    model = _residual_block(np.float32, (8, 6, 6), conv, "input", relu=False)
    p = plan.compile(model, winograd=False)
    labels = [lab for lab, _ in p.profile(x, 1)]
    assert any(lab.startswith("conv") and "pad 1 + add (" in lab
               for lab in labels)
    assert p.run(x).tobytes() == model.forward(x).tobytes()
    # the conv's output read twice, an add of three, and a conv whose add
    # waits for a tensor computed after it: separate steps (the last fused
    # into the later conv)
    inp = cnnkit.Input((8, 6, 6))
    a = L.Conv2D(8, 3, padding=1)(inp)
    twice = L.Add()([a, inp])
    three = L.Add()([L.Conv2D(8, 1)(inp), inp, twice])
    c = L.Conv2D(8, 3, padding=1)(three)
    d = L.Conv2D(8, 1)(three)
    y = L.Concatenate()([a, L.Add()([c, d])])
    model = cnnkit.Model(inp, L.Dense(2)(L.Flatten()(y)), seed=1)
    p = plan.compile(model, winograd=False)
    labels = [lab for lab, _ in p.profile(x, 1)]
    assert sum("+ add" in lab for lab in labels) == 1
    assert any(lab.startswith("conv 8x6x6 -> 8, 1x1 + add") for lab in labels)
    assert sum(lab.startswith("add") for lab in labels) == 3
    for threads in (1, 2):
        with num_threads(threads):
            assert p.run(x).tobytes() == model.forward(x).tobytes()


RESIDUAL_CHECKER = PLAN_BITS + r'''
fused = blocked = expect = 0
for dt in (np.float32, np.float64):
    for shape, k in (((8, 9, 15), 8), ((32, 7, 17), 32), ((16, 4, 4), 16),
                     ((24, 5, 11), 24)):
        inp = cnnkit.Input(shape)
        a = L.Conv2D(k, 3, padding=1)(inp)
        y = L.ReLU()(L.Add()([L.Conv2D(shape[0], 3, padding=1)(
            L.ReLU()(a)), inp]))
        model = cnnkit.Model(inp, L.Dense(3)(L.Flatten()(y)), dtype=dt,
                             seed=2)
        # in planes: two convolutions (the add in the second) and the dense
        plan._USE_BLOCKS = False
        fused += check_bits(model, shape, dt, f"{shape} {k}") == 3
        # on channel blocks where the engine computes both convolutions
        # (whole vectors of filters): the input into blocks, the two
        # convolutions, back into planes, the dense
        plan._USE_BLOCKS = True
        steps = check_bits(model, shape, dt, f"{shape} {k} blocked")
        on = all(cnnkit._ops.conv_blocked(s, w, (1, 1), (1, 1, 1, 1),
                                          (1, 1), dt, 1, 1)
                 for s, w in ((shape, (k,) + shape[:1] + (3, 3)),
                              ((k,) + shape[1:], shape[:1] + (k, 3, 3))))
        expect += on
        blocked += (steps == 5 and "channel blocks" in LAST._labels[0]) \
            if on else steps == 3
extra["fused"] = fused
extra["blocked"] = blocked
extra["expect"] = expect
'''


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_residual_add_on_every_simd_path(path):
    # each engine's direct tiles with the residual added per task (masked
    # tails of 15, 17, 4x4 and 11 pixels), and the generic path's add
    # after the pass: the layers' bits
    res = run_simd(path, RESIDUAL_CHECKER)
    assert res["failures"] == []
    assert res["fused"] == 8
    # every case as expected: on blocks where the engine computes its
    # convolutions (all 8 on AVX2, float32's 16 and 32 filters on
    # AVX-512), in planes elsewhere
    assert res["blocked"] == 8
    assert res["expect"] == 0 if path == "generic" else res["expect"] >= 4


def test_a_batch_whose_arena_would_overflow_is_refused():
    """The arena a batch needs (images x elements per image) is checked
    before any size is computed from it in C."""
    w = np.ones((3, 4), np.float32)
    P = cnnkit._ops.PlanProgram
    big = 2 ** 61 + 1              # over 2**62 elements at 2 images
    prog = P([dict(op="dense", weight=w, bias=None, in0=-1, out=-2)],
             np.float32, 4, 3, big)
    x = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="plan arena"):
        prog.run(x, np.empty(6, np.float32), np.empty(1, np.float32),
                 np.empty(1, np.float32))


def _chain(case, dtype):
    """Chains of convolutions that run on channel-blocked tensors."""
    if case == "stem_stride_1x1":
        # 3 input channels into blocks, stride 2, a 1x1 of stride 2 reading
        # a bordered tensor, the residual add of a downsampling block
        inp = cnnkit.Input((3, 11, 13))
        a = L.ReLU()(L.Conv2D(16, 3, padding=1)(inp))
        b = L.ReLU()(L.Conv2D(32, 3, stride=2, padding=1)(a))
        b = L.Conv2D(32, 3, padding=1)(b)
        y = L.ReLU()(L.Add()([b, L.Conv2D(32, 1, stride=2)(a)]))
        out = L.Dense(3)(L.Flatten()(y))
    elif case == "borders":
        # a dilated 3x3 (border 2), "same" padding of an even kernel (0 on
        # top and left), a 5x5, and a stride larger than the kernel
        inp = cnnkit.Input((8, 10, 9))
        a = L.Conv2D(16, 3, padding=2, dilation=2)(inp)
        a = L.ReLU()(L.Conv2D(16, 2, padding="same")(a))
        a = L.Conv2D(24, 5, padding=2)(a)
        out = L.Dense(4)(L.Flatten()(L.Conv2D(8, 1, stride=3)(a)))
    elif case == "deep":
        # more taps than a slab (576 and 720), 1x1 and 1xN planes, and a
        # network whose output is a convolution's
        inp = cnnkit.Input((64, 1, 7))
        a = L.ReLU()(L.Conv2D(16, 3, padding=1)(inp))
        out = L.Conv2D(16, (3, 5), padding=(1, 2))(
            L.Conv2D(80, 3, padding=1)(a))
    else:                                   # "wide": one filter vector
        inp = cnnkit.Input((8, 3, 29))
        a = L.Conv2D(8, 3, padding=1)(inp)
        out = L.Conv2D(8, 3, padding=1)(L.ReLU()(a))
    return cnnkit.Model(inp, out, seed=4, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["stem_stride_1x1", "borders", "deep",
                                  "wide"])
def test_conv_chains_on_channel_blocks(case, dtype):
    """Convolutions chained on the blocked layout (their input's border as
    padding, each pixel's filters side by side) give the layers' bits, for
    any thread count, batch and chunk; off, the plan runs in planes."""
    model = _chain(case, dtype)
    p = model.compile(winograd=False)
    # the step counts where the engine computes every convolution (whole
    # vectors of filters: 8 and 24 are not on AVX-512 in float32)
    convs = [la for la in model.layers if type(la) is L.Conv2D]
    lanes = cnnkit._ops.blocked_lanes(dtype) and all(
        cnnkit._ops.conv_blocked((8, 3, 29), (la.filters, 8, 3, 3), (1, 1),
                                 (1, 1, 1, 1), (1, 1), dtype, border=1)
        for la in convs)
    convs = len(convs)
    blocked = ["channel blocks" in s for s in p._labels]
    if lanes:
        # into blocks once -- by a step of its own, or by the first
        # convolution where the input's channels fill less than a block --
        # and back once
        plain = model.input_shape[0] < cnnkit._ops.blocked_lanes(dtype)
        assert sum(blocked) == 2, p._labels
        assert sum(" into channel blocks" in s for s in p._labels) == plain
        assert sum("from channel blocks" in s for s in p._labels) == 1
        assert p.num_steps == \
            convs + 2 - plain + (case not in ("deep", "wide"))
    elif not cnnkit._ops.blocked_lanes(dtype):
        assert not any(blocked)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7,) + model.input_shape).astype(dtype)
    x[3] = rng.integers(-2, 3, x[3].shape)
    want = model.forward(x)
    for t in (1, 2):
        with num_threads(t):
            assert p.run(x).tobytes() == want.tobytes()
            assert p.run(x[4:5]).tobytes() == want[4:5].tobytes()
            assert p._run(x, chunk=3).tobytes() == want.tobytes()
    plan._USE_BLOCKS = False
    try:
        planes = model.compile(winograd=False)
    finally:
        plan._USE_BLOCKS = True
    assert not any("channel blocks" in s for s in planes._labels)
    assert planes.run(x).tobytes() == want.tobytes()


def test_a_blocked_conv_step_is_checked():
    """The program refuses a blocked convolution its kernel would not
    compute (an input border narrower than the padding) or whose tensors
    lie outside the arena."""
    lanes = cnnkit._ops.blocked_lanes("float32")
    if not lanes:
        pytest.skip("this SIMD path has no blocked convolution")
    P = cnnkit._ops.PlanProgram
    w = np.ones((16, 16, 3, 3), np.float32)
    size = cnnkit._ops.blocked_size(16, 6, 6, 1, lanes)
    step = dict(op="conv_blocked", x_shape=(16, 6, 6), weight=w, bias=None,
                stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1),
                groups=1, border_in=1, border_out=1, in0=0, out=size)
    P([step], np.float32, 1, 1, 2 * size)                # fits
    with pytest.raises(ValueError, match="does not compute"):
        P([dict(step, border_in=0)], np.float32, 1, 1, 2 * size)
    with pytest.raises(ValueError, match="outside the arena"):
        P([step], np.float32, 1, 1, 2 * size - 1)
    with pytest.raises(ValueError, match="bad to_blocked"):
        P([dict(op="to_blocked", shape=(16, 6, 6), border=-1, in0=-1,
                out=0)], np.float32, 16 * 36, 1, size)


#: First convolutions that read the plan's plain input and write channel
#: blocks: (channels, sides, filters, kernel, stride, padding, dilation,
#: 2x2 max pooling, ReLU, bias).  One channel and 3x3 keeps a filter
#: vector's nine weights in registers (column stride and dilation 1, or
#: not); the others take the tiles of the blocked pass.  The pooling joins
#: the pass where the layer path's would (conv2d's pooled pass applies:
#: not at stride 2, nor on some odd sides in float64).
PLAIN_FIRST = [
    (1, (8, 8), 16, 3, 1, 1, 1, True, True, True),     # the 8x8 network
    (1, (9, 11), 32, 3, 1, 1, 1, True, True, True),    # odd sides: floor
    (1, (12, 12), 16, 3, 1, 2, 2, True, True, False),  # dilated, no bias
    (1, (13, 10), 16, 3, 2, 2, 1, False, True, True),  # stride 2
    (1, (12, 12), 48, 3, 1, 2, 2, False, True, True),  # dilated, 3 vectors
    (1, (7, 9), 16, 3, 1, 0, 1, False, False, True),   # no ReLU, no padding
    (1, (10, 10), 16, 3, 1, 1, 1, True, False, True),  # pooled, no ReLU
    (3, (11, 13), 16, 3, 1, 1, 1, True, True, True),   # a stem, pooled
    (2, (9, 9), 32, 5, 1, 2, 1, True, True, True),
    (3, (9, 10), 16, 1, 2, 0, 1, False, True, True),   # 1x1, stride 2
    (4, (11, 11), 16, 3, 4, 1, 1, False, True, True),  # stride > kernel
    (7, (10, 10), 16, 7, 1, 3, 1, True, True, True),   # taps past a slab
]


def _plain_first_model(dtype, case, dense=True):
    c, hw, k, r, st, pad, dil, pool, relu, bias = case
    layers = [L.Conv2D(k, r, stride=st, padding=pad, dilation=dil,
                       use_bias=bias)]
    layers += [L.ReLU()] if relu else []
    layers += [L.MaxPool2D(2)] if pool else []
    # a chain after it: two convolutions on blocks
    layers += [L.Conv2D(16, 3, padding=1), L.ReLU(),
               L.Conv2D(16, 3, padding=1), L.Flatten()]
    layers += [L.Dense(3)] if dense else []
    return cnnkit.Sequential(layers, input_shape=(c,) + hw, seed=8,
                             dtype=dtype)


def _into_blocks(model, dtype, case):
    """Whether the engine computes the case's first convolution from its
    plain input into blocks."""
    c, hw, k, r, st, pad, dil, pool, relu, bias = case
    lanes = cnnkit._ops.blocked_lanes(dtype)
    args = ((c,) + hw, (k, c, r, r), (st, st), (pad,) * 4, (dil, dil),
            dtype)
    return bool(lanes) and c < lanes and \
        cnnkit._ops.conv_blocked(*args, border=-1, pool=pool) and \
        (not pool or cnnkit._ops.conv_pools(*args))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", PLAIN_FIRST)
def test_a_first_conv_reads_planes_and_writes_blocks(case, dtype):
    """A chain's first convolution reads the plain input and writes the
    blocked layout (with its ReLU and 2x2 max pooling), so no step of its
    own converts: the layers' bits, for any thread count, batch and
    chunk, and the same as the plan that converts."""
    model = _plain_first_model(dtype, case)
    p = model.compile(winograd=False)
    if _into_blocks(model, dtype, case):
        assert " into channel blocks" in p._labels[0], p._labels
        assert not any(" to channel blocks" in s for s in p._labels)
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (7,) + model.input_shape).astype(dtype)
    x[x == 0] = -0.0
    x[:3] = rng.standard_normal((3,) + model.input_shape)
    want = model.forward(x)
    for t in (1, 2, 3):
        with num_threads(t):
            assert p.run(x).tobytes() == want.tobytes()
            assert p.run(x[5:6]).tobytes() == want[5:6].tobytes()
            assert p._run(x, chunk=2).tobytes() == want.tobytes()
    plan._PLAIN_FIRST = False
    try:
        off = model.compile(winograd=False)
    finally:
        plan._PLAIN_FIRST = True
    assert not any(" into channel blocks" in s for s in off._labels)
    assert off.run(x).tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("relu", [True, False])
def test_a_pooled_pass_from_planes_keeps_the_layers_nans(channels, relu,
                                                          dtype):
    """The pass from a plain input with its ReLU and 2x2 max pooling, run
    as a program of its own (into blocks, then back): infinite weights
    make sums of +-inf, and NaN where they meet a zero (an input's, or the
    padding's), so that windows hold NaN, infinities and numbers side by
    side.  Where no sum is NaN the pass takes the maximum of the sums
    before the bias and the ReLU; elsewhere the rule's comparisons: the
    bits of conv2d, the ReLU and the pooling as layers, NaNs' included."""
    lanes = cnnkit._ops.blocked_lanes(dtype)
    shape, k = (channels, 9, 10), 16
    if not lanes or not cnnkit._ops.conv_blocked(
            shape, (k, channels, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), dtype,
            border=-1, pool=True):
        pytest.skip("this SIMD path has no pass from a plain input")
    layers = cnnkit.Sequential(
        [L.Conv2D(k, 3, padding=1)] + ([L.ReLU()] if relu else []) +
        [L.MaxPool2D(2)], input_shape=shape, seed=2, dtype=dtype)
    w = layers.layers[0].params["weight"]
    w[0, 0, 1, 1] = np.inf                   # filter 0's centre tap
    w[1, -1, 0, 0] = -np.inf                 # filter 1's corner
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3,) + shape).astype(dtype)
    x[0, 0, 2, 3] = 0.0
    x[1, 0, 5, 5:7] = -0.0
    x[2, -1, 0, :4] = 0.0
    want = layers.forward(x)
    assert np.isnan(want[:, :2]).any() and np.isinf(want[:, :2]).any()
    assert np.isfinite(want[:, 2:]).all()
    oh, ow = shape[1] // 2, shape[2] // 2
    size = cnnkit._ops.blocked_size(k, oh, ow, 1, lanes)
    conv = dict(op="conv_blocked", x_shape=shape, weight=w,
                bias=layers.layers[0].params["bias"], stride=(1, 1),
                padding=(1, 1, 1, 1), dilation=(1, 1), groups=1,
                border_in=-1, border_out=1, act="relu" if relu else None,
                pool=True, in0=-1, out=0)
    back = dict(op="from_blocked", shape=(k, oh, ow), border=1, in0=0,
                out=-2)
    prog = cnnkit._ops.PlanProgram([conv, back], np.dtype(dtype),
                                   int(np.prod(shape)), k * oh * ow, size)
    for t in (1, 2):
        y = np.empty((3, k * oh * ow), dtype)
        arena = cnnkit._ops.aligned_empty(prog.arena_elements(3, 0), dtype)
        work = cnnkit._ops.aligned_empty(prog.workspace_size(3, t, 0), dtype)
        prog.run(x.reshape(3, -1), y, arena, work, nthreads=t, chunk=0)
        assert y.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_residual_into_a_conv_that_reads_planes(dtype):
    """A convolution that reads the plain input (its padding wider than
    the chains' border) and writes blocks for a chain, with a residual
    from another chain added in its pass: that residual keeps the border
    its reader's output has, so the layers' bits."""
    inp = cnnkit.Input((8, 12, 12))
    a = L.Conv2D(16, 3, padding=1)(inp)
    b = L.Conv2D(16, 3, padding=1)(L.ReLU()(a))
    c = L.ReLU()(L.Add()([b, L.Conv2D(16, 11, padding=5)(inp)]))
    d = L.Conv2D(16, 3, padding=1)(c)
    e = L.Conv2D(16, 3, padding=1)(L.ReLU()(d))
    model = cnnkit.Model(inp, L.Dense(3)(L.Flatten()(e)), seed=7,
                         dtype=dtype)
    p = model.compile(winograd=False)
    lanes = cnnkit._ops.blocked_lanes(dtype)
    if lanes > 8:
        # both convolutions of the input read it in planes, no conversion
        # into blocks
        assert sum(" into channel blocks" in s for s in p._labels) == 2, \
            p._labels
        assert not any(" to channel blocks" in s for s in p._labels)
    x = np.random.default_rng(9).standard_normal((5,) + model.input_shape)
    x = x.astype(dtype)
    want = model.forward(x)
    for t in (1, 2):
        with num_threads(t):
            assert p.run(x).tobytes() == want.tobytes()
            assert p._run(x, chunk=2).tobytes() == want.tobytes()


def test_the_pass_from_planes_is_asked_with_border_minus_1():
    """_ops.conv_blocked with border -1: the pass from a plain input,
    which takes a 2x2 max pooling without Winograd; a blocked input does
    not."""
    if not cnnkit._ops.blocked_lanes("float32"):
        pytest.skip("this SIMD path has no blocked convolution")
    args = ((1, 8, 8), (16, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1),
            "float32")
    assert cnnkit._ops.conv_blocked(*args, border=-1, pool=True)
    assert cnnkit._ops.conv_blocked(*args, border=-1)
    assert not cnnkit._ops.conv_blocked(*args, border=1, pool=True)
    assert not cnnkit._ops.conv_blocked(*args, border=-2)
    # a pooled output of no pixel, Winograd, 10 filters
    assert not cnnkit._ops.conv_blocked((1, 1, 8), (16, 1, 1, 1), (1, 1),
                                        (0,) * 4, (1, 1), "float32",
                                        border=-1, pool=True)
    assert not cnnkit._ops.conv_blocked(*args, border=-1, winograd=True)
    assert not cnnkit._ops.conv_blocked((1, 8, 8), (10, 1, 3, 3), (1, 1),
                                        (1, 1, 1, 1), (1, 1), "float32",
                                        border=-1)


def _wino_model(dtype, c=16, hw=(8, 6)):
    """3x3 convolutions of stride 1 chained on blocks: Winograd's (a
    residual, no bias, 24 filters: a vector and a half in float32 on AVX2)
    and, between them, one that keeps the direct sums (a stride)."""
    inp = cnnkit.Input((c,) + hw)
    a = L.ReLU()(L.Conv2D(c, 3, padding=1)(inp))
    b = L.Conv2D(c, 3, padding=1, use_bias=False)(a)
    b = L.ReLU()(L.Add()([b, inp]))
    d = L.ReLU()(L.Conv2D(24, 3, padding=1)(b))
    e = L.Conv2D(32, 3, stride=2, padding=1)(d)
    f = L.Conv2D(32, 3, padding=1)(L.ReLU()(e))
    return cnnkit.Model(inp, L.Dense(5)(L.Flatten()(f)), seed=6,
                        dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_winograd_on_channel_blocks_within_the_bound(dtype):
    """The 3x3 stride-1 convolutions of a chain run by F(2x2, 3x3) where
    they have 16 input channels or more and even output sides; the result
    stays within the plans' bound of the float64 layers, and is
    bit-identical for any thread count, batch and chunk."""
    model64 = _wino_model("float64")
    model = _wino_model(dtype)
    model.set_weights(model64.get_weights())
    p = model.compile()
    wino = [s for s in p._labels if " winograd" in s]
    if cnnkit._ops.blocked_lanes(dtype):
        # 16 -> 16 twice and 16 -> 24 (where 24 filters are whole
        # vectors); the stride-2 layer and the 3x3 on a 4x3 output (odd)
        # keep the direct sums
        k24 = cnnkit._ops.conv_blocked((16, 8, 6), (24, 16, 3, 3), (1, 1),
                                       (1, 1, 1, 1), (1, 1), dtype,
                                       border=1)
        assert len(wino) == 2 + k24, p._labels
        assert all("3x3 pad 1 winograd" in s for s in wino)
    else:
        assert wino == []
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6,) + model.input_shape)
    want = model64.forward(x)
    got = p.run(x.astype(dtype))
    bound = _bound(dtype) * (1 + np.abs(want).max())
    assert np.abs(got - want).max() <= bound
    if wino:
        # and it is not the direct sums' result
        direct = model.compile(winograd=False).run(x.astype(dtype))
        assert direct.tobytes() != got.tobytes()
        assert np.abs(direct - want).max() <= bound
    for t in (1, 2, 3):
        with num_threads(t):
            assert p.run(x.astype(dtype)).tobytes() == got.tobytes()
            assert p.run(x[2:3].astype(dtype)).tobytes() == \
                got[2:3].tobytes()
            assert p._run(x.astype(dtype), chunk=4).tobytes() == \
                got.tobytes()


def test_winograd_keeps_the_direct_sums_where_it_does_not_pay_or_apply():
    """Under 16 input channels (the stem of a ResNet), a dilation, odd
    output sides, or winograd=False: the direct sums, the layers' bits."""
    inp = cnnkit.Input((3, 8, 8))
    a = L.ReLU()(L.Conv2D(16, 3, padding=1)(inp))          # 3 channels
    a = L.Conv2D(16, 3, padding=2, dilation=2)(a)            # dilated
    a = L.Conv2D(16, 3)(a)                                   # 6x6
    a = L.Conv2D(16, 3, padding=(1, 0))(a)                   # 6x4
    even = cnnkit.Model(inp, L.Flatten()(a), seed=8)
    inp = cnnkit.Input((16, 7, 7))
    a = L.Conv2D(16, 3, padding=1)(inp)
    odd = cnnkit.Model(inp, L.Conv2D(16, 3, padding=1)(a), seed=8)
    for model, n in ((even, 2), (odd, 0)):
        p = model.compile()
        wino = [s for s in p._labels if " winograd" in s]
        if cnnkit._ops.blocked_lanes("float32"):
            assert len(wino) == n, p._labels
            assert any("channel blocks" in s for s in p._labels)
        off = model.compile(winograd=False)
        assert not any(" winograd" in s for s in off._labels)
        x = np.random.default_rng(9).standard_normal(
            (3,) + model.input_shape).astype(np.float32)
        assert off.run(x).tobytes() == model.forward(x).tobytes()
        if n == 0:
            assert p.run(x).tobytes() == model.forward(x).tobytes()
    # a layer whose weights are not all finite keeps the direct sums
    conv = [la for la in even.layers if type(la) is L.Conv2D][2]
    conv.params["weight"][0, 0, 0, 0] = np.inf
    labels = even.compile()._labels
    assert sum(" winograd" in s for s in labels) == \
        (1 if cnnkit._ops.blocked_lanes("float32") else 0)
    assert not any("16x8x8 -> 16, 3x3 winograd" in s for s in labels)
    with pytest.raises(TypeError, match="winograd must be a bool"):
        odd.compile(winograd="yes")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relu", [True, False])
def test_winograd_with_the_max_pooling_in_its_pass(dtype, relu):
    """A 3x3 convolution with a 2x2 max pooling after it runs by Winograd
    on blocks: F(4x4, 3x3) on a 4x4 output (the 8x8 network of cnnkit
    train) and an 8x8 one, each 4x4 tile four windows, or F(2x2, 3x3) on
    a 6x6 output, each 2x2 tile one window; groups of tiles span images on
    small planes.  Within the bound of the float64 layers, the same bits
    for any thread count, batch and chunk."""
    def build(dt):
        layers = [L.Conv2D(16, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                  L.Conv2D(24, 3, padding=1)] + \
            ([L.ReLU()] if relu else []) + \
            [L.MaxPool2D(2), L.Flatten(), L.Dense(7)]
        return cnnkit.Sequential(layers, input_shape=(2, 8, 10), seed=3,
                                 dtype=dt)
    model64 = build("float64")
    model = build(dtype)
    model.set_weights(model64.get_weights())
    p = model.compile()
    # 16 -> 24 on 4x5: an odd side, the direct sums
    assert not any("winograd" in s for s in p._labels)
    x = np.random.default_rng(11).standard_normal((9, 2, 8, 10))
    want = model64.forward(x)
    got = p.run(x.astype(dtype))
    assert np.abs(got - want).max() <= _bound(dtype) * (1 + np.abs(want).max())
    # even planes: 16 -> 24 on 4x4 (one 4x4 tile per image), on 8x8 (four)
    # and on 6x6 (nine 2x2 tiles)
    for side, tile in ((8, " winograd 4x4 "), (16, " winograd 4x4 "),
                       (12, " winograd + ")):
        model64 = cnnkit.Sequential(
            [L.Conv2D(16, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
             L.Conv2D(24, 3, padding=1)] + ([L.ReLU()] if relu else []) +
            [L.MaxPool2D(2), L.Flatten(), L.Dense(7)],
            input_shape=(2, side, side), seed=3, dtype="float64")
        model = cnnkit.Sequential(
            [type(la).from_config(la.get_config()) for la in model64.layers],
            input_shape=(2, side, side), seed=3, dtype=dtype)
        model.set_weights(model64.get_weights())
        p = model.compile()
        pooled = [s for s in p._labels if "winograd" in s]
        h = side // 2
        if cnnkit._ops.conv_blocked((16, h, h), (24, 16, 3, 3), (1, 1),
                                    (1, 1, 1, 1), (1, 1), dtype, border=1,
                                    winograd=True, pool=True):
            assert len(pooled) == 1 and "+ max_pool 2" in pooled[0] and \
                tile in pooled[0], p._labels
        x = np.random.default_rng(12).standard_normal((9, 2, side, side))
        want = model64.forward(x)
        got = p.run(x.astype(dtype))
        assert np.abs(got - want).max() <= \
            _bound(dtype) * (1 + np.abs(want).max())
        for t in (1, 2, 3):
            with num_threads(t):
                assert p.run(x.astype(dtype)).tobytes() == got.tobytes()
                for i in (0, 4, 8):
                    assert p.run(x[i:i + 1].astype(dtype)).tobytes() == \
                        got[i:i + 1].tobytes()
                assert p._run(x.astype(dtype), chunk=2).tobytes() == \
                    got.tobytes()
    off = model.compile(winograd=False)
    assert off.run(x.astype(dtype)).tobytes() == \
        model.forward(x.astype(dtype)).tobytes()


def _wino4_model(dtype, c=16, hw=(8, 12)):
    """3x3 stride-1 convolutions on an 8x12 output (sides multiples of
    4): a residual, no bias, 24 filters (a vector and a half in float32
    on AVX2), 24 input channels (a block and a half), 40 filters; after a
    stride, outputs of 4x6 and 6x8 (even, not multiples of 4)."""
    inp = cnnkit.Input((c,) + hw)
    a = L.ReLU()(L.Conv2D(c, 3, padding=1)(inp))
    b = L.Conv2D(c, 3, padding=1, use_bias=False)(a)
    b = L.ReLU()(L.Add()([b, inp]))
    d = L.ReLU()(L.Conv2D(24, 3, padding=1)(b))
    e = L.ReLU()(L.Conv2D(40, 3, padding=1)(d))
    f = L.Conv2D(32, 3, stride=2, padding=1)(e)
    g = L.ReLU()(L.Conv2D(32, 3, padding=1)(L.ReLU()(f)))
    h = L.Conv2D(16, 3, padding=2)(g)
    out = L.Conv2D(16, 3, padding=1)(L.ReLU()(h))
    return cnnkit.Model(inp, L.Dense(5)(L.Flatten()(out)), seed=9,
                        dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_winograd_4x4_tiles_where_the_sides_are_multiples_of_4(
        dtype, monkeypatch):
    """F(4x4, 3x3) (36 products per channel and filter for 16 outputs)
    where a Winograd step's output sides are multiples of 4, F(2x2, 3x3)
    where they are only even: within the plans' bound of the float64
    layers, other bits than F(2x2, 3x3) everywhere, and bit-identical for
    any thread count, batch and chunk."""
    model64 = _wino4_model("float64")
    model = _wino4_model(dtype)
    model.set_weights(model64.get_weights())
    p = model.compile()
    wino = [s for s in p._labels if " winograd" in s]
    four = [s for s in wino if " winograd 4x4" in s]
    def fits(c, hw, k, tile, pad=1):
        return cnnkit._ops.conv_blocked((c,) + hw, (k, c, 3, 3), (1, 1),
                                        (pad,) * 4, (1, 1), dtype,
                                        border=pad, winograd=tile)

    # 16 -> 16 twice, 16 -> 24 and 24 -> 40 on 8x12 by 4x4 tiles; 32 ->
    # 32 and 32 -> 16 on 4x6 and 6x8 outputs by 2x2 tiles (where the
    # engine takes whole vectors of filters: 24 and 40 are not on AVX-512
    # in float32)
    big = [(16, 16), (16, 16), (16, 24), (24, 40)]
    assert len(four) == sum(fits(c, (8, 12), k, 4) for c, k in big), \
        p._labels
    assert len(wino) - len(four) == \
        fits(32, (4, 6), 32, 2) + fits(32, (4, 6), 16, 2, pad=2) + \
        fits(16, (6, 8), 16, 2), p._labels
    assert any("conv 24x8x12 -> 40" in s for s in four) == \
        fits(24, (8, 12), 40, 4)
    if cnnkit._ops.blocked_lanes(dtype):
        assert len(four) >= 2 and len(wino) >= 5, p._labels
        assert not fits(16, (6, 8), 16, 4) and fits(16, (6, 8), 16, 2)
    else:
        assert wino == []
    rng = np.random.default_rng(17)
    x = rng.standard_normal((5,) + model.input_shape)
    want = model64.forward(x)
    got = p.run(x.astype(dtype))
    bound = _bound(dtype) * (1 + np.abs(want).max())
    assert np.abs(got - want).max() <= bound
    if four:
        monkeypatch.setattr(plan, "_WINOGRAD4", False)
        p2 = model.compile()
        assert not any(" winograd 4x4" in s for s in p2._labels)
        two = p2.run(x.astype(dtype))
        assert np.abs(two - want).max() <= bound
        assert two.tobytes() != got.tobytes()
        monkeypatch.undo()
    for t in (1, 2, 3):
        with num_threads(t):
            assert p.run(x.astype(dtype)).tobytes() == got.tobytes()
            assert p.run(x[3:4].astype(dtype)).tobytes() == \
                got[3:4].tobytes()
            assert p._run(x.astype(dtype), chunk=2).tobytes() == \
                got.tobytes()


def test_winograd_4x4_tiles_transform_exactly_in_float64():
    """One 4x4 tile of F(4x4, 3x3) in float64 against the direct sums, on
    integer inputs and weights (every transform exact but G's sixths):
    each output within a few ulps of the exact integer."""
    inp = cnnkit.Input((16, 4, 4))
    model = cnnkit.Model(inp, L.Conv2D(16, 3, padding=1,
                                       use_bias=False)(inp),
                         seed=1, dtype="float64")
    rng = np.random.default_rng(3)
    model.set_weights([rng.integers(-3, 4, (16, 16, 3, 3)).astype(float)])
    p = model.compile()
    if cnnkit._ops.blocked_lanes("float64"):
        assert p.winograd == 1 and " winograd 4x4" in p._labels[1], \
            p._labels
    x = rng.integers(-4, 5, (2, 16, 4, 4)).astype(float)
    want = model.forward(x)
    got = p.run(x)
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_winograd_on_one_tile_splits_the_filters_over_threads(dtype):
    """A 2x2 output is one tile: on several threads its Winograd step
    splits the filters instead (48 filters: three blocks of two vectors
    on AVX2 in float32); the bits do not depend on it."""
    inp = cnnkit.Input((16, 2, 2))
    a = L.ReLU()(L.Conv2D(48, 3, padding=1)(inp))
    model = cnnkit.Model(inp, L.Conv2D(16, 3, padding=1)(a), seed=10,
                         dtype=dtype)
    p = model.compile()
    if cnnkit._ops.blocked_lanes(dtype):
        assert p.winograd == 2, p._labels
    x = np.random.default_rng(13).standard_normal((3, 16, 2, 2)).astype(
        dtype)
    want = model.forward(x)
    with num_threads(1):
        got = p.run(x)
        one = p.run(x[1:2])
    assert np.abs(got - want).max() <= _bound(dtype) * (1 + np.abs(want).max())
    assert one.tobytes() == got[1:2].tobytes()
    for t in (2, 3, 4):
        with num_threads(t):
            assert p.run(x[1:2]).tobytes() == one.tobytes()
            assert p.run(x).tobytes() == got.tobytes()


def test_calling_a_winograd_model_on_infinities_takes_the_layers():
    """model(x) does not refuse non-finite input, and Winograd's
    transforms may turn an infinity into NaN: such input takes the layer
    path, so model(x) keeps the layers' infinities."""
    inp = cnnkit.Input((16, 4, 4))
    model = cnnkit.Model(inp, L.Conv2D(16, 3, padding=1)(inp), seed=14)
    for layer in model.layers:
        if type(layer) is L.Conv2D:
            layer.params["weight"][...] = 1.0
    model.compile()                     # marks the model's plan stale
    x = np.zeros((1, 16, 4, 4), np.float32)
    x[0, 0, 2, 2] = np.inf
    want = model.forward(x)
    assert np.isposinf(want).any() and not np.isnan(want).any()
    assert model(x).tobytes() == want.tobytes()
    assert model(np.zeros_like(x)).tobytes() == \
        model.forward(np.zeros_like(x)).tobytes()
