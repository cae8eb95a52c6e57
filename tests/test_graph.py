"""Graph models (cnnkit.Model, the functional API): building, shapes and
errors, forward and backward against NumPy, shared layers and tensors,
nested models, fusion, state, saving, loading and training."""
import json
import pickle
import tracemalloc

import numpy as np
import pytest

import cnnkit
from cnnkit import layers as L
from cnnkit import reference as ref
from cnnkit.functional import softmax_cross_entropy


def issue_block(seed=0, dtype="float32", channels=16, size=28):
    """The model of the functional API's documentation, as written."""
    inp = cnnkit.Input((1, size, size))
    x = L.ReLU()(L.Conv2D(channels, 3, padding=1)(inp))
    y = L.Conv2D(channels, 3, padding=1)(
        L.ReLU()(L.Conv2D(channels, 3, padding=1)(x)))
    x = L.ReLU()(L.Add()([x, y]))                        # a residual block
    x = L.Concatenate()([L.MaxPool2D(2)(x), L.AvgPool2D(2)(x)])
    out = L.Dense(10)(L.Flatten()(L.GlobalAvgPool2D()(x)))
    return cnnkit.Model(inp, out, seed=seed, dtype=dtype)


def digits(n=None):
    x, y = cnnkit.datasets.load_digits()
    return (x, y) if n is None else (x[:n], y[:n])


# ---------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------
def test_the_documented_block_runs_as_written():
    model = issue_block(size=8)
    assert model.input_shape == (1, 8, 8) and model.output_shape == (10,)
    text = model.summary(print_fn=lambda s: None)
    assert "Connected to" in text
    add = next(line for line in text.splitlines() if "(Add)" in line)
    assert "(None, 16, 8, 8)" in add and "relu" in add and "conv2d" in add
    x, y = digits(200)
    history = model.fit(x, y, epochs=2, validation_split=0.1, verbose=0)
    assert len(history.history["val_loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()


def test_calling_layers_infers_shapes_at_once():
    inp = cnnkit.Input((3, 10, 10))
    x = L.Conv2D(5, 3, stride=2)(inp)
    assert x.shape == (5, 4, 4)
    assert L.Concatenate()([x, L.Conv2D(2, 1)(x)]).shape == (7, 4, 4)
    assert L.Concatenate(axis=-1)([x, x]).shape == (5, 4, 8)
    assert L.Flatten()(x).shape == (80,)
    assert cnnkit.Input((8, 8)).shape == (1, 8, 8)


def test_a_mismatch_is_reported_where_it_is_written():
    inp = cnnkit.Input((1, 8, 8))
    a = L.Conv2D(4, 3, padding=1, name="left")(inp)
    b = L.Conv2D(6, 3, padding=1, name="right")(inp)
    with pytest.raises(ValueError) as info:
        L.Add(name="join")([a, b])
    msg = str(info.value)
    assert "Add 'join'" in msg and "'left'" in msg and "'right'" in msg
    assert "(4, 8, 8)" in msg and "(6, 8, 8)" in msg
    with pytest.raises(ValueError, match=r"Dense 'head' cannot take Conv2D "
                                         r"'left' \(shape \(4, 8, 8\)\)"):
        L.Dense(3, name="head")(a)
    with pytest.raises(ValueError, match="differ only along axis 1"):
        L.Concatenate()([a, L.MaxPool2D(2)(b)])
    with pytest.raises(ValueError, match="kernel .* does not fit"):
        L.Conv2D(2, 9)(a)


def test_misuse_of_symbolic_tensors_is_refused():
    inp = cnnkit.Input((1, 8, 8))
    with pytest.raises(TypeError, match="takes a list of two or more"):
        L.Add()(inp)
    with pytest.raises(TypeError, match="takes a list of two or more"):
        L.Add()([inp])
    with pytest.raises(TypeError, match="takes one tensor"):
        L.ReLU()([inp, inp])
    with pytest.raises(TypeError, match="cannot mix"):
        L.Add()([inp, np.zeros((2, 1, 8, 8))])
    other = cnnkit.Input((1, 8, 8), name="other")
    y = L.Add()([inp, other])
    with pytest.raises(ValueError, match="depends on the input 'other'"):
        cnnkit.Model(inp, y)
    with pytest.raises(ValueError, match="does not depend on the model's "
                                         "input"):
        cnnkit.Model(inp, L.ReLU()(other))
    with pytest.raises(ValueError, match="the output is the input"):
        cnnkit.Model(inp, inp)
    with pytest.raises(TypeError, match="inputs must be the tensor of "
                                        "cnnkit.Input"):
        cnnkit.Model(L.ReLU()(inp), L.ReLU()(inp))
    with pytest.raises(TypeError, match="give the input tensor"):
        cnnkit.Model()
    with pytest.raises(TypeError, match="must be a symbolic tensor"):
        cnnkit.Model(inp, np.zeros(3))
    with pytest.raises(ValueError, match="several outputs"):
        cnnkit.Model(inp, [L.ReLU()(inp), L.ReLU()(inp)])
    with pytest.raises(ValueError, match="positive ints"):
        cnnkit.Input((0, 3))
    with pytest.raises(TypeError, match="tuple of ints"):
        cnnkit.Input(3)


def test_layer_names_are_unique_and_checked():
    a, b = L.Conv2D(2, 3), L.Conv2D(2, 3)
    assert a.name != b.name and a.name.startswith("conv2d")
    assert L.MaxPool2D(2).name.startswith("max_pool2d")
    assert L.ReLU().name.startswith("relu")
    assert L.Dense(3, name="head").name == "head"
    for bad in ("", "a.b", 3, " x"):
        with pytest.raises(ValueError, match="name must be a non-empty str"):
            L.Dense(3, name=bad)
    inp = cnnkit.Input((1, 4, 4))
    x = L.ReLU(name="same")(L.Conv2D(2, 1, name="same")(inp))
    with pytest.raises(ValueError, match="two layers are named 'same'"):
        cnnkit.Model(inp, x)


def test_a_layer_used_twice_takes_one_shape():
    inp = cnnkit.Input((1, 8, 8))
    pool = L.MaxPool2D(2)
    x = pool(inp)
    with pytest.raises(ValueError, match="was called on shape"):
        pool(x)


# ---------------------------------------------------------------------------
# forward and backward against NumPy
# ---------------------------------------------------------------------------
def residual_net(dtype="float64"):
    inp = cnnkit.Input((2, 6, 6))
    c1 = L.Conv2D(3, 3, padding=1)
    c2 = L.Conv2D(3, 3, padding=1)
    c3 = L.Conv2D(3, 1)
    x = L.ReLU()(c1(inp))
    y = c2(L.ReLU()(c2(x)))                      # one layer called twice
    z = c3(x)                                    # x is read three times
    s = L.Add()([x, y, z])
    m = L.Multiply()([s, L.ReLU()(z)])
    cat = L.Concatenate()([L.MaxPool2D(2)(m), L.AvgPool2D(2)(s)])
    out = L.Dense(4)(L.Flatten()(cat))
    return cnnkit.Model(inp, out, seed=3, dtype=dtype)


def residual_numpy(model, x, g):
    """The same network in cnnkit.reference, forward and backward."""
    c1, c2, c3 = [lay for lay in model.layers if isinstance(lay, L.Conv2D)]
    dense = model.layers[-1]
    p = {lay: (lay.params["weight"], lay.params["bias"])
         for lay in (c1, c2, c3, dense)}
    a1 = ref.conv2d(x, *p[c1], padding=1)
    x1 = ref.relu(a1)
    a2 = ref.conv2d(x1, *p[c2], padding=1)
    r2 = ref.relu(a2)
    y = ref.conv2d(r2, *p[c2], padding=1)
    z = ref.conv2d(x1, *p[c3])
    s = ref.add([x1, y, z])
    rz = ref.relu(z)
    m = ref.multiply([s, rz])
    mp, idx = ref.max_pool2d(m, 2)
    ap = ref.avg_pool2d(s, 2)
    cat = ref.concatenate([mp, ap])
    flat = cat.reshape(len(x), -1)
    out = ref.dense(flat, *p[dense])
    # backward
    gflat, gwd, gbd = ref.dense_backward(g, flat, p[dense][0])
    gmp, gap = ref.concatenate_backward(gflat.reshape(cat.shape), [3, 3])
    gm = ref.max_pool2d_backward(gmp, idx, m.shape)
    gs = ref.avg_pool2d_backward(gap, s.shape, 2)
    gs_m, grz = ref.multiply_backward(gm, [s, rz])
    gs = gs + gs_m
    gz = ref.relu_backward(grz, z)
    gx1_s, gy, gz_s = ref.add_backward(gs, 3)
    gz = gz + gz_s
    gx1_c3, gw3, gb3 = ref.conv2d_backward(gz, x1, p[c3][0])
    gr2, gw2a, gb2a = ref.conv2d_backward(gy, r2, p[c2][0], padding=1)
    ga2 = ref.relu_backward(gr2, a2)
    gx1_c2, gw2b, gb2b = ref.conv2d_backward(ga2, x1, p[c2][0], padding=1)
    gx1 = gx1_s + gx1_c3 + gx1_c2
    ga1 = ref.relu_backward(gx1, a1)
    gx, gw1, gb1 = ref.conv2d_backward(ga1, x, p[c1][0], padding=1)
    grads = {c1: (gw1, gb1), c2: (gw2a + gw2b, gb2a + gb2b),
             c3: (gw3, gb3), dense: (gwd, gbd)}
    return out, gx, grads


def test_a_residual_network_is_its_numpy_computation():
    model = residual_net()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6))
    g = rng.standard_normal((3, 4))
    want, want_gx, want_grads = residual_numpy(model, x, g)
    np.testing.assert_allclose(model.forward(x), want, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(model.forward(x, training=True), want,
                               rtol=1e-12, atol=1e-12)
    gx = model.backward(g)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-10, atol=1e-12)
    for layer, (gw, gb) in want_grads.items():
        np.testing.assert_allclose(layer.grads["weight"], gw, rtol=1e-10,
                                   atol=1e-12, err_msg=layer.name)
        np.testing.assert_allclose(layer.grads["bias"], gb, rtol=1e-10,
                                   atol=1e-12, err_msg=layer.name)
    assert model.backward(g, input_grad=False) is None


def test_branching_gradients_match_finite_differences():
    model = residual_net()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 6, 6))
    y = np.array([1, 3])

    def loss():
        return float(softmax_cross_entropy(model.forward(x), y)[0])

    _, g = softmax_cross_entropy(model.forward(x, training=True), y)
    gx = model.backward(g)
    analytic = model.flat_grads.copy()
    def numeric(values, i):
        old = values[i]
        values[i] = old + 1e-6
        up = loss()
        values[i] = old - 1e-6
        down = loss()
        values[i] = old
        return (up - down) / 2e-6

    flat = model.flat_params
    for i in rng.choice(flat.size, 40, replace=False):
        assert abs(numeric(flat, i) - analytic[i]) < 1e-6, i
    for i in rng.choice(x.size, 10, replace=False):
        assert abs(numeric(x.reshape(-1), i) - gx.reshape(-1)[i]) < 1e-6, i


def _layer_by_layer(model, x):
    """Each call on its own, no fusion: the bits a fused pass must give."""
    values = {}
    g = model._graph
    values[g.input.uid] = x
    for node in g.order:
        args = [values[t.uid] for t in node.inputs]
        values[node.output.uid] = node.layer.forward(
            args[0] if node.layer.num_inputs == 1 else args)
    return values[g.output.uid]


def _fused_and_plain(build):
    """Two models of build() with one set of weights: as built, and with
    every pass run layer by layer (no fusion)."""
    fused, plain = build(), build()
    plain.set_weights(fused.get_weights())
    n = len(plain._graph.order)
    plain._graph.forward_plan = [("plain", None)] * n
    plain._graph.backward_plan = [("plain", None)] * n
    return fused, plain


def _gradient_bits(model, x, y):
    """The bytes of d loss / d x and of the parameter gradients of one
    training pass on (x, y % 3)."""
    _, g = softmax_cross_entropy(model.forward(x, True), y % 3)
    return model.backward(g).tobytes(), model.flat_grads.tobytes()


def test_fused_passes_in_a_graph_have_the_bits_of_the_layers():
    def build():
        inp = cnnkit.Input((1, 8, 8))
        x = L.ReLU()(L.Conv2D(4, 3, padding=1)(inp))       # fused forward
        y = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(4, 3, padding=1)(x)))
        z = L.MaxPool2D(2)(x)               # x is read twice: not fused
        out = L.Dense(3)(L.Flatten()(L.Add()([y, z])))
        return cnnkit.Model(inp, out, seed=0)

    fused, plain = _fused_and_plain(build)
    steps = [s for s, _ in fused._graph.forward_plan]
    assert steps.count("fused") == 2 and steps.count("absorbed") == 2
    assert [p[0] for p in fused._graph.backward_plan].count("fused") == 1
    x, y = digits(16)
    x = x.astype(np.float32)
    x[0, 0, :2] = 0.0                                   # ties at zero
    for training in (False, True):
        assert fused.forward(x, training).tobytes() == \
            plain.forward(x, training).tobytes()
    assert _gradient_bits(fused, x, y) == _gradient_bits(plain, x, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_and_add_take_the_relu_after_them(dtype):
    # a residual block: batch norm -> ReLU and add -> ReLU run in one pass
    # each (forward, training and evaluation); the bits of the layers
    def build():
        inp = cnnkit.Input((1, 8, 8))
        a = L.ReLU()(L.BatchNorm2D()(L.Conv2D(4, 3, padding=1)(inp)))
        b = L.BatchNorm2D()(L.Conv2D(4, 3, padding=1)(a))
        c = L.ReLU()(L.Add()([a, b]))
        d = L.ReLU()(L.Add()([c, b, a]))      # three inputs
        out = L.Dense(3)(L.Flatten()(L.Add()([d, c])))
        return cnnkit.Model(inp, out, seed=0, dtype=dtype)

    fused, plain = _fused_and_plain(build)
    kinds = [(type(node.layer).__name__, step) for node, (step, _) in
             zip(fused._graph.order, fused._graph.forward_plan)]
    assert kinds.count(("BatchNorm2D", "fused")) == 1
    assert kinds.count(("Add", "fused")) == 2
    assert kinds.count(("ReLU", "absorbed")) == 3
    # backward: the batch norm goes back through its ReLU, from the
    # ReLU's output gradient (the Adds' ReLUs run their own backward)
    back = [(type(node.layer).__name__, plan[0]) for node, plan in
            zip(fused._graph.order, fused._graph.backward_plan)]
    assert back.count(("BatchNorm2D", "through")) == 1
    assert back.count(("ReLU", "absorbed")) == 1
    x, y = digits(12)
    x = x.astype(dtype)
    x[:, 0, :3] = 0.0                                   # ties at zero
    for threads in (1, 2):
        cnnkit.set_num_threads(threads)
        try:
            for training in (True, False):
                got = fused.forward(x, training)
                assert got.tobytes() == plain.forward(x, training).tobytes()
            assert _gradient_bits(fused, x, y) == \
                _gradient_bits(plain, x, y)
        finally:
            cnnkit.set_num_threads(0)
    # and in a fit: the same weights after the same steps
    fused.fit(x, y % 3, epochs=2, batch_size=4, verbose=0)
    plain.fit(x, y % 3, epochs=2, batch_size=4, verbose=0)
    assert fused.flat_params.tobytes() == plain.flat_params.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_1d_goes_back_through_its_relu(dtype):
    # Dense -> BatchNorm1D -> ReLU: the normalisation applies the ReLU
    # and runs its backward; the bits of the layers, one step and a fit
    def build():
        inp = cnnkit.Input((12,))
        h = L.ReLU()(L.BatchNorm1D()(L.Dense(9)(inp)))
        return cnnkit.Model(inp, L.Dense(3)(h), seed=0, dtype=dtype)

    fused, plain = _fused_and_plain(build)
    assert [p[0] for p in fused._graph.backward_plan] == \
        ["plain", "through", "absorbed", "plain"]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 12)).astype(dtype)
    y = rng.integers(0, 3, 10)
    assert _gradient_bits(fused, x, y) == _gradient_bits(plain, x, y)
    fused.fit(x, y % 3, epochs=3, batch_size=5, verbose=0)
    plain.fit(x, y % 3, epochs=3, batch_size=5, verbose=0)
    assert fused.flat_params.tobytes() == plain.flat_params.tobytes()


def test_thread_count_and_batch_do_not_change_the_bits():
    x, y = digits(64)
    runs = []
    for threads in (1, 2, 3):
        cnnkit.set_num_threads(threads)
        try:
            model = issue_block(size=8)
            model.fit(x, y, epochs=1, batch_size=16, verbose=0)
            runs.append((model.flat_params.tobytes(),
                         model.predict_proba(x).tobytes(),
                         model.predict_proba(x[5:6]).tobytes()))
        finally:
            cnnkit.set_num_threads(0)
    assert runs[0] == runs[1] == runs[2]
    proba = np.frombuffer(runs[0][1], np.float32).reshape(64, 10)
    assert proba[5].tobytes() == runs[0][2]


# ---------------------------------------------------------------------------
# shared layers, nested models, Sequential as a Model
# ---------------------------------------------------------------------------
def test_a_shared_layer_sums_the_gradients_of_its_calls():
    inp = cnnkit.Input((6,))
    dense = L.Dense(6)
    out = L.Dense(3)(dense(L.ReLU()(dense(inp))))
    model = cnnkit.Model(inp, out, seed=0, dtype="float64")
    assert len(model.layers) == 3 and model.count_params() == 42 + 21
    w, b = dense.params["weight"], dense.params["bias"]
    x = np.random.default_rng(0).standard_normal((4, 6))
    g = np.random.default_rng(1).standard_normal((4, 3))
    model.forward(x, training=True)
    model.backward(g)
    h1 = x @ w.T + b
    r = np.maximum(h1, 0)
    h2 = r @ w.T + b
    head = model.layers[-1]
    gh2 = g @ head.params["weight"]
    gr = gh2 @ w
    gh1 = gr * (h1 > 0)
    np.testing.assert_allclose(dense.grads["weight"],
                               gh2.T @ r + gh1.T @ x, rtol=1e-12)
    np.testing.assert_allclose(dense.grads["bias"],
                               gh2.sum(0) + gh1.sum(0), rtol=1e-12)
    np.testing.assert_allclose(model.forward(x), h2 @ head.params[
        "weight"].T + head.params["bias"], rtol=1e-12)


def test_models_compose_as_blocks():
    block = cnnkit.Sequential([L.Conv2D(4, 3, padding=1), L.ReLU()],
                              input_shape=(4, 8, 8), seed=1)
    inp = cnnkit.Input((1, 8, 8))
    x = L.Conv2D(4, 1)(inp)
    y = block(block(x))                              # the same weights twice
    sub_in = cnnkit.Input((4, 8, 8))
    sub = cnnkit.Model(sub_in, L.Add()([sub_in, L.ReLU()(sub_in)]))
    out = L.Dense(10)(L.Flatten()(L.GlobalAvgPool2D()(sub(y))))
    model = cnnkit.Model(inp, out, seed=0)
    conv = block.layers[0]
    assert conv in model.layers
    names = [n for n, _ in model.named_parameters()]
    assert f"{conv.name}.weight" in names and len(names) == 6
    # the block's layers hold the model's weights now
    assert np.shares_memory(conv.params["weight"], model.flat_params)
    xs = digits(8)[0].astype(np.float32)
    first = model.layers[0]
    z = first.forward(xs)
    for _ in range(2):
        z = block.layers[1].forward(block.layers[0].forward(z))
    z = z + np.maximum(z, 0)
    want = model.layers[-1].forward(z.mean(axis=(2, 3)))
    np.testing.assert_allclose(model.predict_proba(xs),
                               cnnkit.functional.softmax(want), rtol=1e-5)


def test_sequential_is_a_model():
    seq = cnnkit.Sequential([L.Flatten(), L.Dense(3)], input_shape=(1, 4, 4))
    assert isinstance(seq, cnnkit.Model)
    inp = cnnkit.Input((1, 4, 4))
    assert seq(inp).shape == (3,)


# ---------------------------------------------------------------------------
# weights, state, saving
# ---------------------------------------------------------------------------
def test_weights_follow_the_first_call_order_and_names():
    model = issue_block(size=8)
    convs = [n for n in model._graph.order if isinstance(n.layer, L.Conv2D)]
    # the middle conv was created second but called second-to-last
    assert [lay for lay in model.layers if isinstance(lay, L.Conv2D)] == \
        [n.layer for n in convs]
    keys = list(model.state_dict())
    assert keys == [f"{n.layer.name}.{p}" for n in convs
                    for p in ("weight", "bias")] + \
        [f"{model.layers[-1].name}.weight", f"{model.layers[-1].name}.bias"]
    weights = model.get_weights()
    other = issue_block(seed=5, size=8)
    other.set_weights(weights)
    x = digits(10)[0]
    assert np.array_equal(other.predict_proba(x), model.predict_proba(x))
    renamed = dict(zip(other.state_dict(), model.state_dict().values()))
    other.load_state_dict(renamed)


def test_a_torch_module_registered_in_the_same_order_loads_by_position():
    # PyTorch is not in the test extra: without it this is a skip
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.c = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.a(x))
            y = self.c(torch.relu(self.b(x)))
            x = torch.relu(x + y)
            x = torch.cat([nn.functional.max_pool2d(x, 2),
                           nn.functional.avg_pool2d(x, 2)], dim=1)
            return self.head(x.mean(dim=(2, 3)))

    net = Net().double()
    model = issue_block(dtype="float64", size=8)
    model.set_weights([t.detach().numpy() for t in net.state_dict().values()])
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    want = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model.forward(x), want, rtol=1e-10,
                               atol=1e-12)


def test_save_load_and_pickle_give_the_same_model(tmp_path):
    model = residual_net(dtype="float32")
    x, y = np.random.default_rng(0).standard_normal((32, 2, 6, 6)), \
        np.arange(32) % 4
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "res.cnnkit"
    model.save(path)
    back = cnnkit.load_model(path)
    assert type(back) is cnnkit.Model
    assert [lay.name for lay in back.layers] == \
        [lay.name for lay in model.layers]
    assert np.array_equal(back.predict_proba(x), model.predict_proba(x))
    assert back.get_config() == model.get_config()
    copy = pickle.loads(pickle.dumps(model))
    assert np.array_equal(copy.predict_proba(x), model.predict_proba(x))
    # both continue training identically
    for m in (model, back, copy):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    assert np.array_equal(back.flat_params, model.flat_params)
    assert np.array_equal(copy.flat_params, model.flat_params)
    # a reader that knows only chains refuses it by version
    from cnnkit import _format
    _, meta = _format.load_file(path)
    assert meta["format_version"] == "2"


def _saved(tmp_path, model, change):
    """The model's file with its architecture changed by ``change``."""
    from cnnkit import _format
    config = model.get_config()
    change(config)
    meta = _format.pack_metadata("model", config, version=2)
    path = tmp_path / "changed.cnnkit"
    _format.save_file(path, model.state_dict(), meta)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda c: c["layers"][0].update(class_name="Mish"),
     "unknown type 'Mish'"),
    (lambda c: c["nodes"][3]["inputs"].__setitem__(0, 40),
     "neither 'input' nor an earlier node"),
    (lambda c: c["nodes"][2]["inputs"].__setitem__(0, 5),
     "a forward reference or a cycle"),
    (lambda c: c["nodes"].append({"layer": c["layers"][1]["name"],
                                  "inputs": [0]}),
     "does not lead to the output"),
    (lambda c: c.update(output=99), "'output' must be the index"),
    (lambda c: c["nodes"][0]["inputs"].__setitem__(0, "x"),
     "neither 'input' nor an earlier node"),
    (lambda c: c["input"].update(shape=[3, 6, 6]), "weights do not match"),
    (lambda c: c["layers"][0]["config"].update(filters=5),
     "was called on shape"),
    (lambda c: next(lay for lay in c["layers"]
                    if lay["class_name"] == "MaxPool2D")["config"].update(
                        pool_size=[3, 3], stride=[3, 3]),
     "Concatenate .* cannot take"),
    (lambda c: c["layers"].append(dict(c["layers"][0], name="spare")),
     "never called"),
    (lambda c: c["layers"][1].update(name=c["layers"][0]["name"]),
     "two layers are named"),
])
def test_loading_checks_the_graph_before_allocating(tmp_path, change,
                                                    message):
    model = residual_net(dtype="float32")
    path = _saved(tmp_path, model, change)
    with pytest.raises(ValueError, match=message):
        cnnkit.load_model(path)


def test_a_small_file_cannot_ask_for_a_huge_graph(tmp_path):
    model = residual_net(dtype="float32")
    path = _saved(tmp_path, model, lambda c: c["layers"][-1]["config"].update(
        units=10 ** 12))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="weights do not match"):
            cnnkit.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2 ** 20


def test_configs_round_trip_without_files():
    model = issue_block(size=8)
    config = json.loads(json.dumps(model.get_config()))
    again = cnnkit.Model.from_config(config)
    again.set_weights(model.get_weights())
    x = digits(6)[0]
    assert np.array_equal(again.predict(x), model.predict(x))
    unbuilt = cnnkit.Model.from_config(config, build=False)
    assert not unbuilt.built
    assert unbuilt.parameter_shapes() == {
        k: v.shape for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------
# execution and training
# ---------------------------------------------------------------------------
def test_inference_keeps_activations_only_while_they_are_read():
    inp = cnnkit.Input((8, 32, 32))
    x = inp
    for _ in range(10):
        x = L.Conv2D(8, 3, padding=1)(x)
    model = cnnkit.Model(inp, L.Dense(2)(L.Flatten()(
        L.GlobalAvgPool2D()(x))), seed=0)
    batch = np.zeros((32, 8, 32, 32), np.float32)
    one = batch.nbytes                                  # 1 MiB per layer
    model.forward(batch)
    tracemalloc.start()
    try:
        model.forward(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * one, peak / one


def test_a_residual_network_learns_the_digits_as_well_as_the_cli_network():
    """The gallery's residual network, trained as `cnnkit train` trains its
    default network (same split, epochs, batch, optimizer, seed)."""
    from cnnkit.cli import default_model
    x, y = digits()
    xtr, xte, ytr, yte = cnnkit.datasets.train_test_split(
        x, y, test_size=0.2, seed=0)
    inp = cnnkit.Input((1, 8, 8))
    h = L.ReLU()(L.Conv2D(16, 3, padding=1)(inp))
    branch = L.Conv2D(16, 3, padding=1)
    h = L.MaxPool2D(2)(L.ReLU()(L.Add()([h, branch(h)])))
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(32, 3, padding=1)(h)))
    out = L.Dense(10)(L.ReLU()(L.Dense(64)(L.Flatten()(h))))
    residual = cnnkit.Model(inp, out, seed=0)
    branch.params["weight"][...] = 0.0          # the block starts as identity
    scores = []
    for model in (residual, default_model((1, 8, 8), 10, 0)):
        model.fit(xtr, ytr, epochs=30, batch_size=32,
                  optimizer=cnnkit.optim.Adam(2e-3), verbose=0)
        scores.append(model.evaluate(xte, yte)["accuracy"])
    assert scores[0] >= scores[1] >= 0.97, scores


def test_layers_of_a_block_built_into_a_model_do_not_train_alone():
    block = cnnkit.Sequential([L.Flatten(), L.Dense(10)],
                              input_shape=(1, 8, 8))
    inp = cnnkit.Input((1, 8, 8))
    cnnkit.Model(inp, block(inp))
    x, y = digits(32)
    with pytest.raises(ValueError, match="built into another model"):
        block.fit(x, y, verbose=0)
    assert block.predict(x).shape == (32,)


def test_the_readme_graph_example_runs(capsys):
    from helpers import readme_python_block
    code = readme_python_block("## Graph models: the functional API")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Connected to" in out and "'accuracy'" in out


# ---------------------------------------------------------------------------
# blocks, shared layers and the model's state
# ---------------------------------------------------------------------------
def _flat_model(seed, classes=3):
    inp = cnnkit.Input((1, 8, 8))
    return cnnkit.Model(inp, L.Dense(classes)(L.Flatten()(inp)), seed=seed)


def test_a_trained_block_keeps_its_weights_inside_a_bigger_model():
    x, y = digits(64)
    base = _flat_model(seed=1, classes=10)
    base.fit(x, y, epochs=2, verbose=0)
    weights, proba = base.get_weights(), base.predict_proba(x)
    inp = cnnkit.Input((1, 8, 8))
    outer = cnnkit.Model(inp, L.Dense(2)(base(inp)), seed=2)
    assert all(np.array_equal(a, b)
               for a, b in zip(base.get_weights(), weights))
    assert np.array_equal(base.predict_proba(x), proba)
    assert np.array_equal(outer.get_weights()[0], weights[0])
    # the outer model trains the block's layers; the block sees it
    outer.fit(x, y % 2, epochs=1, verbose=0)
    assert not np.array_equal(base.get_weights()[0], weights[0])
    # a pickle of the block holds the weights it predicts with
    copy = pickle.loads(pickle.dumps(base))
    assert np.array_equal(copy.predict_proba(x), base.predict_proba(x))


def test_an_unbuilt_sequential_block_is_built_where_it_is_called():
    stem = cnnkit.Sequential([L.Conv2D(4, 3, padding=1), L.ReLU()], seed=3)
    inp = cnnkit.Input((1, 8, 8))
    net = cnnkit.Model(inp, L.Dense(3)(L.Flatten()(stem(inp))), seed=1)
    assert stem.built and stem.input_shape == (1, 8, 8)
    x, y = digits(32)
    net.fit(x, y % 3, epochs=1, verbose=0)
    before = net.predict_proba(x)
    stem(x[:1])                           # no longer rebuilds the block
    assert np.array_equal(net.predict_proba(x), before)
    with pytest.raises(ValueError, match=r"built for input shape"):
        stem(cnnkit.Input((1, 6, 6)))


def test_a_model_whose_layers_another_model_holds_refuses_to_train():
    d1, d2 = L.Dense(5), L.Dense(3)
    inp = cnnkit.Input((1, 8, 8))
    a = cnnkit.Model(inp, d2(d1(L.Flatten()(inp))), seed=0)
    inp2 = cnnkit.Input((5,))
    cnnkit.Model(inp2, L.Dense(2)(d2(inp2)), seed=0)
    x, y = digits(16)
    with pytest.raises(ValueError, match="built into another model"):
        a.fit(x, y % 3, verbose=0)


def test_skipped_batches_advance_a_shared_dropout_once_per_call():
    drop = L.Dropout(0.5)
    inp = cnnkit.Input((6,))
    out = L.Dense(2)(drop(L.Dense(6)(drop(inp))))
    model = cnnkit.Model(inp, out, seed=0)
    state = model.rng.bit_generator.state
    model.forward(np.ones((3, 6)), training=True)
    after_pass = model.rng.bit_generator.state
    model.rng.bit_generator.state = state
    model.skip_batch(3)
    assert model.rng.bit_generator.state == after_pass


def test_a_failed_fit_keeps_the_optimizer():
    x, y = digits(32)
    model = _flat_model(seed=0, classes=10)
    model.fit(x, y, epochs=1, verbose=0, optimizer="adam")
    adam = model.optimizer
    with pytest.raises(TypeError, match="callbacks"):
        model.fit(x, y, optimizer="sgd", callbacks=[lambda *a: None])
    assert model.optimizer is adam


def test_merge_layers_refuse_one_input():
    with pytest.raises(ValueError, match="takes a list of two or more"):
        cnnkit.Sequential([L.Conv2D(2, 3), L.Add()], input_shape=(1, 4, 4))
    with pytest.raises(TypeError, match="takes a list of two or more"):
        L.Add()(np.arange(6.0).reshape(2, 3))


def test_configs_with_unhashable_names_are_value_errors():
    config = residual_net().get_config()
    config["layers"][0]["class_name"] = ["Conv2D"]
    with pytest.raises(ValueError, match="unknown type"):
        cnnkit.Model.from_config(config)
    config = residual_net().get_config()
    config["nodes"][0]["layer"] = ["x"]
    with pytest.raises(ValueError, match="must name a layer"):
        cnnkit.Model.from_config(config)


def test_a_block_may_end_anywhere_but_fit_needs_logits():
    inp = cnnkit.Input((1, 4, 4))
    block = cnnkit.Model(inp, L.Conv2D(3, 3, padding=1)(inp))
    x, y = np.zeros((2, 1, 4, 4)), np.zeros(2, np.int64)
    with pytest.raises(ValueError, match=r"output has shape \(3, 4, 4\)"):
        block.fit(x, y, verbose=0)
    with pytest.raises(TypeError, match="not the output of Conv2D"):
        cnnkit.Model(L.Conv2D(1, 1)(inp), L.Flatten()(inp))


def test_an_inference_pass_leaves_what_backward_needs():
    model = residual_net()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6))
    g = rng.standard_normal((3, 4))
    model.forward(x, training=True)
    want = model.backward(g).copy(), model.flat_grads.copy()
    model.forward(x, training=True)
    model.predict(x[:1])                     # another batch, inference
    assert np.array_equal(model.backward(g), want[0])
    assert np.array_equal(model.flat_grads, want[1])
    fresh = residual_net()
    with pytest.raises(ValueError, match=r"needs a forward\(x, "
                                         r"training=True\) first"):
        fresh.backward(g)


def test_parameter_shapes_of_a_built_model_keep_its_shape():
    model = cnnkit.Sequential([L.Conv2D(2, 3, padding=1), L.Flatten(),
                               L.Dense(3)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="built for input shape"):
        model.parameter_shapes((1, 16, 16))
    assert model.layers[0].output_shape == (2, 8, 8)
