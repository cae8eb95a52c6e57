"""The contract every layer in ``cnnkit.layers.LAYERS`` keeps (a layer
added there is covered as soon as CASES below gives its arguments; until
then its tests fail and say so), and a fuzz of random stacks of layers in
a ``Sequential`` model.

The contract, in float64 inside a one-layer ``cnnkit.Sequential``:
``build(shape)`` returns ``compute_output_shape(shape)``; ``forward(x,
training=True)`` has that shape, and ``backward(grad)`` gives the input and
parameter gradients of central finite differences of the forward; the
weights, the config, a saved file and a pickle each reproduce the model's
outputs bit for bit.
"""
import math
import pickle

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

import cnnkit
from cnnkit import layers as L
from cnnkit import reference as ref

import fuzzing
from fuzzing import FUZZ, HUGE, conv_geometry, pool_out
from helpers import assert_grad_close, distinct_values, numerical_gradient

# class name -> (constructor arguments, input shape of one sample)
CASES = {
    "Conv2D": (dict(filters=3, kernel_size=(3, 2), stride=(2, 1), padding=1,
                    dilation=(1, 2)), (2, 7, 6)),
    "ReLU": ({}, (2, 5, 4)),
    # ceil_mode: 8 rows give 5 windows (4 without), the last one partial
    "MaxPool2D": (dict(pool_size=(3, 2), stride=(2, 1), padding=1,
                       ceil_mode=True), (2, 8, 6)),
    # ceil_mode: 6 columns give 4 windows (3 without)
    "AvgPool2D": (dict(pool_size=3, stride=2, padding=1,
                       count_include_pad=False, ceil_mode=True), (2, 7, 6)),
    "GlobalAvgPool2D": ({}, (3, 5, 4)),
    "GlobalMaxPool2D": ({}, (3, 5, 4)),
    "Flatten": ({}, (2, 3, 4)),
    "Dense": (dict(units=4), (7,)),
    "Dropout": (dict(rate=0.25), (2, 3, 4)),
    # merge layers: a list of input shapes
    "Add": ({}, [(2, 3, 4), (2, 3, 4), (2, 3, 4)]),
    "Multiply": ({}, [(2, 3, 4), (2, 3, 4)]),
    "Concatenate": (dict(axis=1), [(2, 3, 4), (3, 3, 4)]),
    "BatchNorm2D": (dict(momentum=0.2, eps=1e-3), (3, 4, 5)),
    "BatchNorm1D": (dict(momentum=None), (5,)),
    "DepthwiseConv2D": (dict(kernel_size=3, depth_multiplier=2, stride=(2, 1),
                             padding=1, dilation=(1, 2)), (3, 7, 8)),
    # more cases of a class: "<class>/<what>"
    "Conv2D/groups": (dict(filters=6, kernel_size=(3, 2), stride=(1, 2),
                           padding=1, groups=2), (4, 6, 7)),
    # F(4x4, 3x3) forward and input gradient (16 channels, 16 filters)
    "Conv2D/winograd": (dict(filters=16, kernel_size=3, padding=(1, 2),
                             winograd=True), (16, 5, 6)),
    # activations
    "LeakyReLU": (dict(negative_slope=0.2), (2, 5, 4)),
    "Sigmoid": ({}, (2, 5, 4)),
    "Tanh": ({}, (3, 4)),
    "SiLU": ({}, (2, 5, 4)),
    "GELU": (dict(approximate="tanh"), (2, 5, 4)),
    "Softmax": ({}, (6,)),
    "LogSoftmax": ({}, (6,)),
}
NAMES = sorted(set(L.LAYERS) | set(CASES))

N = 2           # samples per batch


def _case(name):
    if name not in CASES:
        pytest.fail(f"layer {name} has no entry in CASES of "
                    f"tests/test_layer_contract.py: add its constructor "
                    f"arguments and an input shape there", pytrace=False)
    kwargs, shape = CASES[name]
    return L.LAYERS[name.split("/")[0]], kwargs, shape


def _model(name, seed=0):
    """A float64 model of the layer alone: a one-layer Sequential, or for a
    merge layer a graph whose input reaches it through one 1x1 convolution
    per branch."""
    cls, kwargs, shape = _case(name)
    if cls.num_inputs == 1:
        return cnnkit.Sequential([cls(**kwargs)], input_shape=shape,
                                 seed=seed, dtype="float64")
    inp = cnnkit.Input((1,) + shape[0][1:])
    branches = [L.Conv2D(s[0], 1)(inp) for s in shape]
    merged = cls(**kwargs)(branches)
    return cnnkit.Model(inp, merged, seed=seed, dtype="float64")


def _layer(model, name):
    name = name.split("/")[0]
    return next(lay for lay in model.layers if type(lay).__name__ == name)


def _x(model, seed=1):
    # distinct values, none near 0: max pooling and ReLU are differentiable
    # at every input
    return distinct_values(np.random.default_rng(seed),
                           (N,) + model.input_shape)


@pytest.mark.parametrize("name", NAMES)
def test_build_returns_compute_output_shape(name):
    cls, kwargs, shape = _case(name)
    layer = cls(**kwargs)
    out = layer.build(shape)
    assert out == layer.compute_output_shape(shape)
    assert layer.built
    want = tuple(shape) if cls.num_inputs == 1 else [tuple(s) for s in shape]
    assert layer.input_shape == want and layer.output_shape == out


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(name):
    """forward(x, training=True) and backward(grad) of the model's layer:
    the input gradient and every parameter gradient equal central finite
    differences of sum(forward * grad).  The model's generator is rewound
    before each forward, so random layers draw the same values each time."""
    model = _model(name)
    layer = _layer(model, name)
    merge = layer.num_inputs != 1
    rng = np.random.default_rng(1)
    shapes = _case(name)[2] if merge else [model.input_shape]
    xs = [distinct_values(rng, (N,) + tuple(s)) for s in shapes]
    state = model.rng.bit_generator.state

    def forward(args):
        model.rng.bit_generator.state = state
        return layer.forward(args if merge else args[0], training=True)

    y = forward(xs)
    assert y.shape == (N,) + layer.output_shape
    assert y.dtype == np.float64
    g = np.random.default_rng(2).standard_normal(y.shape)
    forward(xs)
    gxs = layer.backward(g)
    gxs = gxs if merge else [gxs]
    assert len(gxs) == len(xs)
    for i, (x, gx) in enumerate(zip(xs, gxs)):
        assert gx.shape == x.shape

        def loss_of_input(a, i=i):
            args = list(xs)
            args[i] = a
            return np.sum(forward(args) * g)

        assert_grad_close(numerical_gradient(loss_of_input, x), gx)
    for pname, p in layer.params.items():
        analytic = layer.grads[pname].copy()

        def loss(a, p=p):
            saved = p.copy()
            p[...] = a
            try:
                return np.sum(forward(xs) * g)
            finally:
                p[...] = saved

        assert_grad_close(numerical_gradient(loss, p), analytic)
    assert set(layer.grads) == set(layer.params)
    assert {k: v.shape for k, v in layer.params.items()} == \
        layer.param_shapes(layer.input_shape)


@pytest.mark.parametrize("name", NAMES)
def test_weights_round_trip(name):
    model = _model(name)
    x = _x(model)
    y = model(x)
    weights = model.get_weights()
    model.set_weights(weights)
    assert model(x).tobytes() == y.tobytes()
    rng = np.random.default_rng(3)
    new = [rng.standard_normal(w.shape).astype(w.dtype) for w in weights]
    model.set_weights(new)
    assert all(a.tobytes() == b.tobytes()
               for a, b in zip(model.get_weights(), new))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    model = _model(name, seed=4)
    layer = _layer(model, name)
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert type(again) is type(layer)
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    x = _x(model)
    assert clone(x).tobytes() == model(x).tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_identical_outputs(name, tmp_path):
    model = _model(name, seed=5)
    path = tmp_path / "m.cnnkit"
    model.save(path)
    loaded = cnnkit.load_model(path)
    assert loaded.get_config() == model.get_config()
    x = _x(model)
    assert loaded(x).tobytes() == model(x).tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_pickle_gives_identical_outputs(name):
    model = _model(name, seed=6)
    copy = pickle.loads(pickle.dumps(model))
    x = _x(model)
    assert copy(x).tobytes() == model(x).tobytes()
    assert copy.get_config() == model.get_config()
    layer = pickle.loads(pickle.dumps(_layer(model, name)))
    assert layer.get_config() == _layer(model, name).get_config()


# ==========================================================================
# random stacks of layers in a Sequential model (see fuzzing.py)
# ==========================================================================
@st.composite
def layer_specs(draw):
    """(class name, kwargs, hyperparameters valid?)."""
    kind = draw(st.sampled_from(["Conv2D", "Conv2D", "ReLU", "MaxPool2D",
                                 "AvgPool2D", "GlobalAvgPool2D", "Flatten",
                                 "Dense", "Dense", "Dropout",
                                 "GlobalMaxPool2D"]))
    bad = draw(st.integers(0, 9)) == 0
    if kind == "Conv2D":
        kw = {"filters": draw(st.integers(1, 3)),
              "kernel_size": draw(st.sampled_from([1, 2, 3, (1, 3)])),
              "stride": draw(st.sampled_from([1, 1, 2, (1, 2), 10**9])),
              "padding": draw(st.sampled_from([0, 1, (0, 1), "same",
                                               "valid"])),
              "dilation": draw(st.sampled_from([1, 1, 2, 10**9])),
              "use_bias": draw(st.booleans())}
        if kw["padding"] == "same":
            # stride 1 only; the NumPy reference materialises the padding
            kw["stride"], kw["dilation"] = 1, min(kw["dilation"], 2)
        if bad:
            key = draw(st.sampled_from(["filters", "kernel_size", "stride",
                                        "dilation", "padding"]))
            kw[key] = draw(st.sampled_from([0, -1, 1.5, True, None, "x",
                                            (1, 2, 3)] if key != "padding"
                                           else [-1, "full", 1.5, None]))
    elif kind in ("MaxPool2D", "AvgPool2D"):
        size = draw(st.sampled_from([1, 2, 3, (2, 1)]))
        kw = {"pool_size": size,
              "stride": draw(st.sampled_from([None, 1, 2, 10**9])),
              "padding": draw(st.sampled_from([0, 0, 1]))}
        if kw["padding"] and (np.min(size) < 2):
            kw["padding"] = 0
        if kind == "AvgPool2D":
            kw["count_include_pad"] = draw(st.booleans())
        if draw(st.booleans()):
            kw["ceil_mode"] = draw(st.booleans())
        if bad:
            key = draw(st.sampled_from(["pool_size", "stride", "padding",
                                        "ceil_mode"]))
            kw[key] = draw(st.sampled_from([0, -1, 2.5, False, "2",
                                            (1, 2, 3)]))
            if key == "padding":
                kw[key] = draw(st.sampled_from([-1, 5, 0.5]))
            elif key == "ceil_mode":
                kw[key] = draw(st.sampled_from([1, None, "yes"]))
    elif kind == "Dense":
        kw = {"units": draw(st.integers(1, 4)),
              "use_bias": draw(st.booleans())}
        if bad:
            kw["units"] = draw(st.sampled_from([0, -3, 2.0, True, None]))
    elif kind == "Dropout":
        kw = {"rate": draw(st.sampled_from([0.0, 0.25, 0.5]))}
        if bad:
            kw["rate"] = draw(st.sampled_from([1.0, -0.1, math.nan, "0.5",
                                               None, True]))
    else:
        kw, bad = {}, False
    return kind, kw, not bad


def _spec_shapes(input_shape, specs):
    """Per-layer output shapes in Python ints (no overflow), or raise
    ValueError where a layer cannot take its input."""
    shape = tuple(input_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    shapes = []
    for kind, kw, _ in specs:
        if kind == "Conv2D":
            if len(shape) != 3:
                raise ValueError("Conv2D needs (C, H, W)")
            pair = lambda v: (v, v) if np.ndim(v) == 0 else tuple(v)
            ks, st_, dl = pair(kw["kernel_size"]), pair(kw["stride"]), \
                pair(kw["dilation"])
            pad = kw["padding"]
            pad = pad if isinstance(pad, str) else (pair(pad)[0],) * 2 + \
                (pair(pad)[1],) * 2
            _, _, _, out = conv_geometry(shape[1], shape[2], ks[0], ks[1],
                                         st_, pad, dl)
            shape = (kw["filters"],) + out
        elif kind in ("MaxPool2D", "AvgPool2D"):
            if len(shape) != 3:
                raise ValueError("pooling needs (C, H, W)")
            pair = lambda v: (v, v) if np.ndim(v) == 0 else tuple(v)
            k = pair(kw["pool_size"])
            s = k if kw["stride"] is None else pair(kw["stride"])
            shape = (shape[0],) + pool_out(shape[1], shape[2], k, s,
                                           pair(kw["padding"]),
                                           kw.get("ceil_mode", False))
        elif kind in ("GlobalAvgPool2D", "GlobalMaxPool2D"):
            if len(shape) != 3:
                raise ValueError(f"{kind} needs (C, H, W)")
            shape = shape[:1]
        elif kind == "Flatten":
            shape = (math.prod(shape),)
        elif kind == "Dense":
            if len(shape) != 1:
                raise ValueError("Dense needs (F,)")
            shape = (kw["units"],)
        shapes.append(shape)
    return shapes


def _ref_forward(model, x, training_masks=None):
    """The model's forward pass with cnnkit.reference, in float64, keeping
    what the backward pass needs."""
    a, caches = x.astype(np.float64), []
    for layer in model.layers:
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        caches.append(a)
        if isinstance(layer, L.Conv2D):
            a = ref.conv2d(a, p["weight"], p.get("bias"), layer.stride,
                           layer.padding, layer.dilation)
        elif isinstance(layer, L.ReLU):
            a = ref.relu(a)
        elif isinstance(layer, L.AvgPool2D):
            a = ref.avg_pool2d(a, layer.pool_size, layer.stride, layer.padding,
                               layer.count_include_pad, layer.ceil_mode)
        elif isinstance(layer, L.MaxPool2D):
            a, idx = ref.max_pool2d(a, layer.pool_size, layer.stride,
                                    layer.padding, layer.ceil_mode)
            caches[-1] = (caches[-1], idx)
        elif isinstance(layer, L.GlobalAvgPool2D):
            a = ref.global_avg_pool2d(a)
        elif isinstance(layer, L.GlobalMaxPool2D):
            a, idx = ref.global_max_pool2d(a)
            caches[-1] = (caches[-1], idx)
        elif isinstance(layer, L.Flatten):
            a = a.reshape(a.shape[0], -1)
        elif isinstance(layer, L.Dense):
            a = ref.dense(a, p["weight"], p.get("bias"))
        elif isinstance(layer, L.Dropout):
            if training_masks is not None and layer._mask is not None:
                a = a * layer._mask.astype(np.float64)
    return a, caches


def _ref_backward(model, g, caches):
    grads = {}
    for i in reversed(range(len(model.layers))):
        layer, a = model.layers[i], caches[i]
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        if isinstance(layer, L.Conv2D):
            g, gw, gb = ref.conv2d_backward(g, a, p["weight"], layer.stride,
                                            layer.padding, layer.dilation,
                                            bias=layer.use_bias)
            grads[(i, "weight")], grads[(i, "bias")] = gw, gb
        elif isinstance(layer, L.ReLU):
            g = ref.relu_backward(g, a)
        elif isinstance(layer, L.AvgPool2D):
            g = ref.avg_pool2d_backward(g, a.shape, layer.pool_size,
                                        layer.stride, layer.padding,
                                        layer.count_include_pad,
                                        layer.ceil_mode)
        elif isinstance(layer, L.MaxPool2D):
            a, idx = a
            g = ref.max_pool2d_backward(g, idx, a.shape)
        elif isinstance(layer, L.GlobalAvgPool2D):
            g = ref.global_avg_pool2d_backward(g, a.shape)
        elif isinstance(layer, L.GlobalMaxPool2D):
            a, idx = a
            g = ref.global_max_pool2d_backward(g, idx, a.shape)
        elif isinstance(layer, L.Flatten):
            g = g.reshape(a.shape)
        elif isinstance(layer, L.Dense):
            g, gw, gb = ref.dense_backward(g, a, p["weight"],
                                           bias=layer.use_bias)
            grads[(i, "weight")], grads[(i, "bias")] = gw, gb
        elif isinstance(layer, L.Dropout) and layer._mask is not None:
            g = g * layer._mask.astype(np.float64)
    return g, grads


def _close(actual, expected, dtype, what):
    assert actual.shape == expected.shape, (what, actual.shape,
                                            expected.shape)
    scale = 1.0 + float(np.max(np.abs(expected), initial=0.0))
    rtol = 1e-9 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(actual.astype(np.float64), expected,
                               rtol=rtol, atol=rtol * scale, err_msg=what)


@st.composite
def model_cases(draw):
    specs = draw(st.lists(layer_specs(), min_size=1, max_size=5))
    shape_cat = draw(st.sampled_from(["ok"] * 8 + ["2d", "bad", "huge"]))
    if shape_cat == "ok":
        input_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 7)),
                       draw(st.integers(1, 7)))
    elif shape_cat == "2d":
        input_shape = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    elif shape_cat == "bad":
        input_shape = draw(st.sampled_from([(0, 4, 4), (1, -1, 4),
                                            (True, 4, 4), (1, 4.0, 4), ()]))
    else:
        input_shape = draw(st.sampled_from([(1, 2**32, 2**32),
                                            (2**31, 2**31, 4),
                                            (1, 2**62, 2**62)]))
    dtype = draw(st.sampled_from(["float64", "float64", "float32"]))
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    return specs, input_shape, shape_cat, dtype, n, seed


@FUZZ
@given(model_cases())
def prop_sequential(case):
    """Building fails with ValueError/TypeError exactly when a layer's
    hyperparameters or the input shape are invalid or a layer cannot take
    its input; a built model has the layer shapes of the spec (computed in
    Python ints), forward and backward passes equal to cnnkit.reference's
    chained through the layers, and can take a training step."""
    specs, input_shape, shape_cat, dtype, n, seed = case
    note(f"specs={specs} input_shape={input_shape} dtype={dtype}")
    hp_ok = all(ok for _, _, ok in specs)
    layers = []
    try:
        for kind, kw, _ in specs:
            layers.append(getattr(L, kind)(**kw))
    except (ValueError, TypeError):
        assert not hp_ok, "valid layer hyperparameters were refused"
        return
    assert hp_ok, f"invalid hyperparameters accepted: {specs}"
    event("layers built")
    try:
        expected = _spec_shapes(input_shape, specs) \
            if shape_cat != "bad" else None
    except ValueError:
        expected = None
    try:
        model = cnnkit.Sequential(layers, input_shape=input_shape, seed=seed,
                                  dtype=dtype)
    except (ValueError, TypeError, MemoryError) as exc:
        assert str(exc)
        if isinstance(exc, MemoryError) or expected is not None:
            params = _spec_params(expected, specs, input_shape) \
                if expected is not None else 0
            assert params >= HUGE // 8 or shape_cat == "huge", (
                f"valid model refused: {type(exc).__name__}: {exc}")
        return
    assert expected is not None, (
        f"model with impossible shapes built: "
        f"{[lay.output_shape for lay in model.layers]}")
    assert [tuple(lay.output_shape) for lay in model.layers] == \
        [tuple(s) for s in expected]
    assert model.output_shape == tuple(expected[-1])
    if shape_cat == "huge" or math.prod(model.input_shape) > 10**4:
        return
    event("forward compared" + (" + backward" if dtype == "float64" else ""))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + model.input_shape).astype(dtype)
    y = model(x)
    assert y.dtype == np.dtype(dtype) and y.shape == (n,) + model.output_shape
    ey, _ = _ref_forward(model, x)
    _close(y, ey, model.dtype, "forward")
    if dtype == "float64":
        yt = model.forward(x, training=True)
        eyt, caches = _ref_forward(model, x, training_masks=True)
        _close(yt, eyt, model.dtype, "training forward")
        g = rng.standard_normal(yt.shape)
        gx = model.backward(g)
        egx, egrads = _ref_backward(model, g, caches)
        _close(gx, egx, model.dtype, "input gradient")
        for i, layer in enumerate(model.layers):
            for name, grad in layer.grads.items():
                _close(grad, egrads[(i, name)], model.dtype,
                       f"layer {i} {name} gradient")
    labels = rng.integers(0, model.output_shape[-1], n)
    if len(model.output_shape) == 1:
        hist = model.fit(x, labels, epochs=1, batch_size=n, verbose=0)
        assert hist.epoch == [0]
        assert model.predict(x).shape == (n,)
    else:
        try:
            model.fit(x, labels, epochs=1, batch_size=n, verbose=0)
        except (ValueError, TypeError) as exc:
            assert str(exc)
        else:
            raise AssertionError("fit accepted a model whose output is not "
                                 "(classes,)")
    for bad, exc in [(x.astype(np.complex128), TypeError),
                     (x[..., :0], ValueError),
                     (np.full_like(x, np.nan), ValueError)]:
        with pytest.raises(exc):
            model.predict(bad)


def _spec_params(shapes, specs, input_shape):
    shape = tuple(input_shape) if len(input_shape) == 3 else \
        (1,) + tuple(input_shape)
    total = 0
    for (kind, kw, _), out in zip(specs, shapes):
        if kind == "Conv2D":
            k = kw["kernel_size"]
            k = (k, k) if np.ndim(k) == 0 else k
            total += kw["filters"] * shape[0] * k[0] * k[1]
        elif kind == "Dense":
            total += kw["units"] * shape[0]
        shape = out
    return total


test_property = fuzzing.family_tests(globals())[0]
