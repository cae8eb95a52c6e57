"""ONNX export and import (cnnkit.onnx): onnxruntime agrees with cnnkit for
every layer and hyperparameter, exported files pass the ONNX checker and
strict shape inference, models (chains and graphs) round-trip exactly,
PyTorch and Keras-style graphs import, and damaged or unsupported files are
refused by name.

Needs onnx and onnxruntime (the ``onnx`` extra, also in ``test``); the
PyTorch tests need torch.  Without them the tests are skipped, saying why;
with CNNKIT_REQUIRE_EXTRAS=1 (set by CI) their absence is a failure.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import cli
from cnnkit import layers as L
from cnnkit import reference as R

from helpers import require

onnx = require("onnx")
ort = require("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

cnnkit_onnx = cnnkit.onnx


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _session(path_or_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if isinstance(path_or_bytes, onnx.ModelProto):
        path_or_bytes = path_or_bytes.SerializeToString()
    return ort.InferenceSession(path_or_bytes, options,
                                providers=["CPUExecutionProvider"])


def _run(path, x, name="input"):
    return _session(os.fspath(path)).run(None, {name: x})[0]


def _checked(path):
    """The ModelProto at ``path``, after the full checker and strict shape
    inference."""
    proto = onnx.load(os.fspath(path))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True,
                                      strict_mode=True)
    return proto


def _assert_close(actual, expected, rtol=1e-5):
    """float32 agreement: relative 1e-5, absolute 1e-6 of the output's
    scale (different summation orders round differently)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * 0.1 * scale)


def _same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y)


def _randomize(model, seed=0):
    """Non-zero biases too, so that every parameter is exercised."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape) * (0.5 if w.ndim > 1
                                                       else 0.2)
                       for w in model.get_weights()])
    return model


def _images(shape, n, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(
        (n,) + tuple(shape)).astype(dtype)


def _load_error(path, *words):
    with pytest.raises(ValueError) as info:
        cnnkit_onnx.load(path)
    message = str(info.value)
    assert os.fspath(path) in message, message
    for w in words:
        assert w in message, (w, message)
    return message


def _save_proto(tmp_path, proto, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString())
    return path


def _graph_model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              initializer=list(inits))
    proto = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# --------------------------------------------------------------------------
# architectures: every layer type and hyperparameter
# --------------------------------------------------------------------------
ARCHS = {
    "lenet": ((1, 16, 16), lambda: [
        L.Conv2D(6, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(16, 5), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
        L.Dense(32), L.ReLU(), L.Dense(10)]),
    "conv_stride_pad_dilation": ((3, 13, 11), lambda: [
        L.Conv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
        L.ReLU(), L.Flatten(), L.Dense(5)]),
    "conv_same_even_kernel_no_bias": ((2, 9, 10), lambda: [
        L.Conv2D(3, (4, 2), padding="same", use_bias=False), L.ReLU(),
        L.Conv2D(2, 3, padding="same", dilation=2), L.Flatten(),
        L.Dense(4, use_bias=False)]),
    "conv_valid": ((1, 7, 7), lambda: [
        L.Conv2D(2, 3, padding="valid", stride=2), L.Flatten(),
        L.Dense(3)]),
    "maxpool_stride_padding": ((2, 11, 9), lambda: [
        L.MaxPool2D((3, 2), stride=(2, 1), padding=(1, 1)), L.Conv2D(3, 1),
        L.MaxPool2D(2, padding=1), L.Flatten(), L.Dense(4)]),
    "avgpool_include_pad": ((2, 10, 9), lambda: [
        L.AvgPool2D(3, stride=2, padding=1), L.ReLU(),
        L.AvgPool2D((2, 3), stride=(1, 2), padding=(1, 0)), L.Flatten(),
        L.Dense(3)]),
    "avgpool_exclude_pad": ((2, 10, 9), lambda: [
        L.AvgPool2D(3, stride=2, padding=1, count_include_pad=False),
        L.AvgPool2D((2, 2), stride=1, padding=1, count_include_pad=False),
        L.Flatten(), L.Dense(3)]),
    "global_avg_pool_dropout": ((3, 8, 8), lambda: [
        L.Conv2D(8, 3, padding=1), L.ReLU(), L.Dropout(0.5),
        L.GlobalAvgPool2D(), L.Dropout(0.25), L.Dense(6), L.ReLU(),
        L.Dense(3)]),
    "global_avg_pool_then_flatten": ((2, 5, 6), lambda: [
        L.Conv2D(4, 3), L.GlobalAvgPool2D(), L.Flatten(), L.Dense(2)]),
    # partial last windows (ONNX's shape inference agrees on these sizes)
    "pool_ceil_mode": ((2, 11, 9), lambda: [
        L.MaxPool2D(2, ceil_mode=True), L.Conv2D(3, 1),
        L.AvgPool2D(3, stride=2, padding=1, ceil_mode=True),
        L.AvgPool2D(2, count_include_pad=False, ceil_mode=True),
        L.Flatten(), L.Dense(4)]),
    "global_max_pool": ((3, 7, 6), lambda: [
        L.Conv2D(5, 3, padding=1), L.ReLU(), L.GlobalMaxPool2D(),
        L.Dense(3)]),
    "global_max_pool_then_flatten": ((2, 5, 6), lambda: [
        L.Conv2D(4, 3), L.GlobalMaxPool2D(), L.Flatten(), L.Dense(2)]),
    "mlp": ((1, 6, 6), lambda: [
        L.Flatten(), L.Dense(16), L.ReLU(), L.Dropout(0.1), L.Dense(10)]),
    "conv_output": ((2, 6, 6), lambda: [L.Conv2D(3, 3), L.ReLU()]),
    "depthwise_and_grouped": ((4, 11, 10), lambda: [
        L.DepthwiseConv2D(3, depth_multiplier=2, stride=2, padding=1),
        L.ReLU(), L.Conv2D(6, 1, groups=2), L.ReLU(),
        L.DepthwiseConv2D((3, 2), padding="same", dilation=(2, 1),
                          use_bias=False), L.Flatten(), L.Dense(3)]),
}


def _arch_model(name, seed=0, dtype="float32"):
    shape, make = ARCHS[name]
    model = cnnkit.Sequential(make(), input_shape=shape, seed=seed,
                              dtype=dtype)
    return _randomize(model, seed)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_export_matches_onnxruntime_and_round_trips(name, tmp_path):
    model = _arch_model(name)
    path = tmp_path / f"{name}.onnx"
    cnnkit_onnx.export(model, path)
    proto = _checked(path)
    assert proto.ir_version == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.producer_name == "cnnkit"
    assert proto.producer_version == cnnkit.__version__
    ops = [n.op_type for n in proto.graph.node]
    assert "Dropout" not in ops and "Softmax" not in ops
    # initializers carry the state_dict names and values
    inits = {t.name: numpy_helper.to_array(t) for t in
             proto.graph.initializer}
    state = model.state_dict()
    assert list(inits) == list(state)
    for key, value in state.items():
        assert np.array_equal(inits[key], value)
    # the batch axis is symbolic
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == list(model.input_shape)
    session = _session(os.fspath(path))
    for n in (1, 5):
        x = _images(model.input_shape, n, seed=n)
        (got,) = session.run(None, {"input": x})
        _assert_close(got, model(x))
    # ONNX -> cnnkit: the same weights and the same logits, bit for bit
    same = cnnkit_onnx.load(path)
    _same_weights(same, model)
    assert same.input_shape == model.input_shape
    assert same.output_shape == model.output_shape
    x = _images(model.input_shape, 5)
    assert np.array_equal(same(x), model(x))
    assert [type(la).__name__ for la in same.layers] == [
        type(la).__name__ for la in model.layers
        if not isinstance(la, L.Dropout)]


def test_load_model_reads_onnx_paths(tmp_path):
    model = _arch_model("lenet")
    path = tmp_path / "model.ONNX"
    cnnkit_onnx.export(model, path)
    same = cnnkit.load_model(path)
    _same_weights(same, model)
    x = _images(model.input_shape, 3)
    assert np.array_equal(same(x), model(x))
    with pytest.raises(FileNotFoundError):
        cnnkit.load_model(tmp_path / "missing.onnx")
    # a cnnkit file that happens to be named *.onnx still loads as one
    model.save(tmp_path / "cnnkit-format.onnx")
    again = cnnkit.load_model(tmp_path / "cnnkit-format.onnx")
    _same_weights(again, model)


def test_probabilities_output(tmp_path):
    model = _arch_model("lenet")
    path = tmp_path / "p.onnx"
    cnnkit_onnx.export(model, path, probabilities=True)
    proto = _checked(path)
    assert proto.graph.node[-1].op_type == "Softmax"
    assert proto.graph.output[0].name == "probabilities"
    x = _images(model.input_shape, 5)
    got = _run(path, x)
    _assert_close(got, model.predict_proba(x))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    # the Softmax is dropped on import: the model returns logits again
    same = cnnkit_onnx.load(path)
    _same_weights(same, model)
    assert np.array_equal(same(x), model(x))
    with pytest.raises(ValueError, match="probabilities=True"):
        cnnkit_onnx.export(_arch_model("conv_output"), tmp_path / "c.onnx",
                           probabilities=True)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets_and_ir_versions(opset, tmp_path):
    model = _arch_model("avgpool_exclude_pad")
    path = tmp_path / "m.onnx"
    cnnkit_onnx.export(model, path, opset=opset, probabilities=True)
    proto = _checked(path)
    assert proto.opset_import[0].version == opset
    assert proto.ir_version == {13: 7, 17: 8, 21: 10}[opset]
    x = _images(model.input_shape, 3)
    _assert_close(_run(path, x), model.predict_proba(x))


def test_float64(tmp_path):
    mlp = _arch_model("mlp", dtype="float64")
    path = tmp_path / "mlp64.onnx"
    cnnkit_onnx.export(mlp, path)
    proto = _checked(path)
    assert proto.graph.input[0].type.tensor_type.elem_type == \
        TensorProto.DOUBLE
    x = _images(mlp.input_shape, 4, dtype=np.float64)
    np.testing.assert_allclose(_run(path, x), mlp(x), rtol=1e-12,
                               atol=1e-13)
    same = cnnkit_onnx.load(path)
    assert same.dtype == np.float64
    _same_weights(same, mlp)
    assert np.array_equal(same(x), mlp(x))

    cnn = _arch_model("lenet", dtype="float64")
    with pytest.raises(ValueError) as info:
        cnnkit_onnx.export(cnn, tmp_path / "cnn64.onnx")
    assert "float64" in str(info.value) and "dtype='float32'" in \
        str(info.value)
    assert not (tmp_path / "cnn64.onnx").exists()
    cnnkit_onnx.export(cnn, tmp_path / "cnn32.onnx", dtype="float32")
    _checked(tmp_path / "cnn32.onnx")
    x = _images(cnn.input_shape, 3, dtype=np.float64)
    _assert_close(_run(tmp_path / "cnn32.onnx", x.astype(np.float32)),
                  cnn(x), rtol=1e-4)
    cnnkit_onnx.export(cnn, tmp_path / "cnn64.onnx", dtype="float64")
    _checked(tmp_path / "cnn64.onnx")
    _same_weights(cnnkit_onnx.load(tmp_path / "cnn64.onnx"), cnn)


def test_export_argument_errors(tmp_path):
    model = _arch_model("mlp")
    with pytest.raises(TypeError, match="cnnkit.Sequential"):
        cnnkit_onnx.export("model", tmp_path / "m.onnx")
    unbuilt = cnnkit.Sequential([L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        cnnkit_onnx.export(unbuilt, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset must be between 13"):
        cnnkit_onnx.export(model, tmp_path / "m.onnx", opset=9)
    with pytest.raises(TypeError, match="opset must be an int"):
        cnnkit_onnx.export(model, tmp_path / "m.onnx", opset="17")
    with pytest.raises(ValueError, match="dtype must be"):
        cnnkit_onnx.export(model, tmp_path / "m.onnx", dtype="int8")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cnnkit_onnx.export(model, tmp_path / "nowhere" / "m.onnx")
    with pytest.raises(IsADirectoryError):
        cnnkit_onnx.export(model, tmp_path)
    assert os.listdir(tmp_path) == []


def test_export_is_atomic(tmp_path, monkeypatch):
    model = _arch_model("mlp")
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        cnnkit_onnx.export(model, path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.onnx"]


# --------------------------------------------------------------------------
# graph models (cnnkit.Model): export, onnxruntime, round trip
# --------------------------------------------------------------------------
def _residual():
    inp = cnnkit.Input((3, 10, 10))
    x = L.ReLU()(L.Conv2D(8, 3, padding=1)(inp))
    y = L.Conv2D(8, 3, padding=1)(L.ReLU()(L.Conv2D(8, 3, padding=1)(x)))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.Concatenate(axis=1)([L.MaxPool2D(2)(x), L.AvgPool2D(2)(x)])
    return inp, L.Dense(5)(L.GlobalAvgPool2D()(x))


def _inception():
    inp = cnnkit.Input((4, 9, 9))
    branches = [L.Conv2D(3, 1)(inp), L.Conv2D(4, 3, padding=1)(inp),
                L.Conv2D(2, (4, 2), padding="same")(inp),
                L.MaxPool2D(3, stride=1, padding=1)(inp)]
    x = L.ReLU()(L.Concatenate(axis=-3)(branches))
    return inp, L.Dense(6)(L.Flatten()(L.MaxPool2D(3)(x)))


def _merges_of_three():
    inp = cnnkit.Input((2, 6, 6))
    a, b, c = (L.Conv2D(3, 3, padding=1)(inp) for _ in range(3))
    s = L.Add()([a, b, c])
    p = L.Multiply()([s, a, L.ReLU()(b)])
    x = L.Concatenate(axis=3)([s, p])            # along the width
    return inp, L.Dense(4)(L.Flatten()(x))


def _shared_layers():
    inp = cnnkit.Input((4, 6, 6))
    conv, dense = L.Conv2D(4, 3, padding=1), L.Dense(8)
    h1 = conv(inp)
    h2 = conv(L.ReLU()(h1))
    v = L.Flatten()(L.Add()([h1, h2]))
    x = L.Add()([dense(v), dense(L.ReLU()(v))])
    return inp, L.Dropout(0.5)(L.Dense(3)(x))    # a Dropout as the output


def _input_read_twice():
    inp = cnnkit.Input((2, 5, 5))
    x = L.Add()([inp, L.Conv2D(2, 3, padding=1)(inp)])
    x = L.Multiply()([x, x])
    return inp, L.Dense(3)(L.Flatten()(x))


def _vectors():
    inp = cnnkit.Input((12,))
    a = L.ReLU()(L.Dense(8)(inp))
    b = L.Dense(8, use_bias=False)(inp)
    x = L.Concatenate(axis=1)([L.Add()([a, b]), L.Multiply()([a, b]), a])
    return inp, L.Dense(4)(L.Dropout(0.2)(x))


GRAPHS = {"residual": _residual, "inception": _inception,
          "merges_of_three": _merges_of_three,
          "shared_layers": _shared_layers,
          "input_read_twice": _input_read_twice, "vectors": _vectors}


def _graph(name, seed=0, dtype="float32"):
    inp, out = GRAPHS[name]()
    return _randomize(cnnkit.Model(inp, out, seed=seed, dtype=dtype), seed)


def _without_dropout(config):
    """A graph model's config with its Dropout calls taken out (export
    leaves them out): the nodes that read one read what it read."""
    drop = {la["name"] for la in config["layers"]
            if la["class_name"] == "Dropout"}
    index, nodes = {}, []

    def ref(r):
        return r if r == "input" else index[r]

    for i, node in enumerate(config["nodes"]):
        if node["layer"] in drop:
            index[i] = ref(node["inputs"][0])
            continue
        index[i] = len(nodes)
        nodes.append(dict(node, inputs=[ref(r) for r in node["inputs"]]))
    return dict(config, nodes=nodes, output=ref(config["output"]),
                layers=[la for la in config["layers"]
                        if la["name"] not in drop])


def _max_relative(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.abs(actual - expected).max() /
                 max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_export_matches_onnxruntime_and_round_trips(name, tmp_path):
    model = _graph(name)
    path = tmp_path / f"{name}.onnx"
    cnnkit_onnx.export(model, path)
    proto = _checked(path)
    assert proto.producer_name == "cnnkit"
    assert proto.graph.name == "cnnkit.Model"
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    nodes = proto.graph.node
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names)
    # each call is a node named after its layer, the first call by the
    # layer's own name
    config = _without_dropout(model.get_config())
    assert {n["layer"] for n in config["nodes"]} <= set(names)
    # a layer's initializers are written once, under its state_dict names
    inits = {t.name: numpy_helper.to_array(t) for t in
             proto.graph.initializer}
    state = model.state_dict()
    assert list(inits) == list(state)
    for key, value in state.items():
        assert np.array_equal(inits[key], value)
    assert {i for n in nodes for i in n.input if i in inits} == set(inits)
    assert [o.name for o in proto.graph.output] == ["logits"]
    session = _session(os.fspath(path))
    for n in (1, 5):
        x = _images(model.input_shape, n, seed=n)
        (got,) = session.run(None, {"input": x})
        _assert_close(got, model(x))
    # ONNX -> cnnkit: the same graph (less Dropout), names, weights and
    # outputs, bit for bit
    same = cnnkit_onnx.load(path)
    assert type(same) is cnnkit.Model
    got = same.get_config()
    for key in ("layers", "nodes", "output", "dtype"):
        assert got[key] == config[key], key
    assert got["input"]["shape"] == config["input"]["shape"]
    assert list(same.state_dict()) == list(state)
    _same_weights(same, model)
    x = _images(model.input_shape, 5)
    assert np.array_equal(same(x), model(x))


def test_graph_export_node_forms(tmp_path):
    """Merges of three: binary Add and Mul nodes in list order (cnnkit's
    order of the sums and products); Concat on the layer's axis; a shared
    layer's calls read one set of initializers; a Dropout output becomes
    an Identity."""
    model = _graph("merges_of_three")
    cnnkit_onnx.export(model, tmp_path / "m.onnx")
    proto = _checked(tmp_path / "m.onnx")
    by_output = {n.output[0]: n for n in proto.graph.node}
    convs = [n.output[0] for n in proto.graph.node if n.op_type == "Conv"]
    adds = [n for n in proto.graph.node if n.op_type == "Add"]
    assert [list(n.input) for n in adds] == [
        convs[:2], [adds[0].output[0], convs[2]]]
    muls = [n for n in proto.graph.node if n.op_type == "Mul"]
    assert len(muls) == 2 and list(muls[0].input)[0] == adds[1].output[0]
    assert list(muls[1].input)[0] == muls[0].output[0]
    assert by_output[muls[1].input[1]].op_type == "Relu"
    (concat,) = [n for n in proto.graph.node if n.op_type == "Concat"]
    assert helper.get_attribute_value(concat.attribute[0]) == 3
    assert list(concat.input) == [adds[1].output[0], muls[1].output[0]]

    model = _graph("shared_layers")
    cnnkit_onnx.export(model, tmp_path / "s.onnx")
    proto = _checked(tmp_path / "s.onnx")
    conv = model.layers[0]
    calls = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert [n.name for n in calls] == [conv.name, f"{conv.name}/call_2"]
    assert [list(n.input)[1:] for n in calls] == \
        [[f"{conv.name}.weight", f"{conv.name}.bias"]] * 2
    assert len(proto.graph.initializer) == len(model.state_dict())
    last = proto.graph.node[-1]           # the Dropout output is left out
    assert (last.op_type, list(last.output)) == ("Gemm", ["logits"])

    cnnkit_onnx.export(model, tmp_path / "p.onnx", probabilities=True)
    proto = _checked(tmp_path / "p.onnx")
    assert proto.graph.node[-1].op_type == "Softmax"
    assert proto.graph.output[0].name == "probabilities"
    x = _images(model.input_shape, 4)
    _assert_close(_run(tmp_path / "p.onnx", x), model.predict_proba(x))
    same = cnnkit_onnx.load(tmp_path / "p.onnx")
    assert np.array_equal(same(x), model(x))

    inp = cnnkit.Input((2, 3, 3))               # nothing but a Dropout
    model = cnnkit.Model(inp, L.Dropout(0.5)(inp), seed=0)
    cnnkit_onnx.export(model, tmp_path / "d.onnx")
    proto = _checked(tmp_path / "d.onnx")
    assert [(n.op_type, list(n.input), list(n.output))
            for n in proto.graph.node] == [("Identity", ["input"],
                                            ["logits"])]
    x = _images((2, 3, 3), 2)
    assert np.array_equal(_run(tmp_path / "d.onnx", x), x)


def test_graph_export_float64(tmp_path):
    model = _graph("vectors", dtype="float64")
    cnnkit_onnx.export(model, tmp_path / "v64.onnx")
    proto = _checked(tmp_path / "v64.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == \
        TensorProto.DOUBLE
    x = _images(model.input_shape, 6, dtype=np.float64)
    np.testing.assert_allclose(_run(tmp_path / "v64.onnx", x), model(x),
                               rtol=1e-12, atol=1e-13)
    same = cnnkit_onnx.load(tmp_path / "v64.onnx")
    assert same.dtype == np.float64
    _same_weights(same, model)
    assert np.array_equal(same(x), model(x))
    # convolutions: onnxruntime has no float64 Conv, so float32 on request
    cnn = _graph("residual", dtype="float64")
    with pytest.raises(ValueError, match="dtype='float32'"):
        cnnkit_onnx.export(cnn, tmp_path / "r64.onnx")
    cnnkit_onnx.export(cnn, tmp_path / "r32.onnx", dtype="float32")
    x = _images(cnn.input_shape, 3, dtype=np.float64)
    _assert_close(_run(tmp_path / "r32.onnx", x.astype(np.float32)), cnn(x),
                  rtol=1e-4)


def test_graph_export_refuses_layers_without_onnx_form(tmp_path):
    class Twice(L.Layer):
        def forward(self, x, training=False):
            return 2 * x

    inp = cnnkit.Input((1, 4, 4))
    out = L.Dense(2)(L.Flatten()(Twice(name="twice")(inp)))
    model = cnnkit.Model(inp, out, seed=0)
    with pytest.raises(TypeError, match="layer 'twice' is a Twice"):
        cnnkit_onnx.export(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_exports_graph_models(tmp_path):
    model = _graph("residual")
    model.save(tmp_path / "g.cnnkit")
    code, _, _ = _cli("export", str(tmp_path / "g.cnnkit"),
                      str(tmp_path / "g.onnx"))
    assert code == 0
    _checked(tmp_path / "g.onnx")
    x = _images(model.input_shape, 3)
    _assert_close(_run(tmp_path / "g.onnx", x), model(x))


# --------------------------------------------------------------------------
# import of graphs written by other exporters
# --------------------------------------------------------------------------
TORCH_WARNINGS = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning",
    "ignore::FutureWarning")


@TORCH_WARNINGS
def test_import_pytorch_sequential(tmp_path):
    torch = require("torch")
    from torch import nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, (4, 2), padding="same", bias=False), nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.Conv2d(8, 6, 3, stride=2, padding=1, dilation=2), nn.ReLU(),
        nn.Dropout(0.3), nn.Flatten(), nn.Linear(6, 16), nn.ReLU(),
        nn.Linear(16, 5))
    net.eval()
    x = _images((3, 12, 12), 5)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), os.fspath(path),
                      dynamo=False, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}})
    model = cnnkit_onnx.load(path)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _assert_close(model(x), expected)
    # the weights are PyTorch's, in the state_dict order
    for w, t in zip(model.get_weights(), net.state_dict().values()):
        assert np.array_equal(w, t.numpy())


@TORCH_WARNINGS
def test_import_pytorch_view_and_softmax(tmp_path):
    """A module flattening with x.view(x.size(0), -1): the exporter computes
    the target shape with Shape, Gather, Unsqueeze and Concat."""
    torch = require("torch")
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.conv2 = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv(x)))
            return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=1)

    torch.manual_seed(1)
    net = Net().eval()
    del net.conv2
    x = _images((1, 9, 9), 4)
    path = tmp_path / "view.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), os.fspath(path),
                      dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=13)
    ops = {n.op_type for n in onnx.load(os.fspath(path)).graph.node}
    assert {"Shape", "Reshape", "GlobalAveragePool", "Softmax"} <= ops
    model = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in model.layers] == [
        "Conv2D", "ReLU", "GlobalAvgPool2D", "Dense"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _assert_close(model.predict_proba(x), expected)


@TORCH_WARNINGS
def test_import_pytorch_dynamo_exporter(tmp_path):
    torch = require("torch")
    require("onnxscript")
    from torch import nn
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    net.eval()
    x = _images((1, 8, 8), 3)
    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(net, (torch.from_numpy(x),), os.fspath(path),
                      dynamo=True)
    model = cnnkit_onnx.load(path)
    with torch.no_grad():
        _assert_close(model(x), net(torch.from_numpy(x)).numpy())


def _torch():
    """torch, or a skip: PyTorch is not in the ``test`` extra (a CPU build
    is installed by hand for comparisons), so its absence is never a
    failure."""
    return pytest.importorskip("torch", reason="PyTorch is not installed "
                               "(pip install torch)")


def _residual_torch_net(torch):
    from torch import nn

    class Net(nn.Module):
        """A residual network: a block with an identity shortcut, one with
        a strided 1x1 projection, max- and average-pooled branches joined
        along the channels, global average pooling, a linear layer."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.a1 = nn.Conv2d(8, 8, 3, padding=1)
            self.a2 = nn.Conv2d(8, 8, 3, padding=1)
            self.b1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
            self.b2 = nn.Conv2d(12, 12, 3, padding=1)
            self.proj = nn.Conv2d(8, 12, 1, stride=2, bias=False)
            self.maxpool = nn.MaxPool2d(2)
            self.avgpool = nn.AvgPool2d(2)
            self.fc = nn.Linear(24, 5)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.a2(torch.relu(self.a1(x))))
            x = torch.relu(self.b2(torch.relu(self.b1(x))) + self.proj(x))
            x = torch.cat([self.maxpool(x), self.avgpool(x)], dim=1)
            x = nn.functional.adaptive_avg_pool2d(x, 1)
            return self.fc(torch.flatten(x, 1))

    return Net


@TORCH_WARNINGS
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_import_pytorch_residual_network(dtype, tmp_path):
    torch = _torch()
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    net = _residual_torch_net(torch)().eval().to(tdtype)
    x = _images((3, 12, 12), 6, dtype=np.dtype(dtype))
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), os.fspath(path),
                      dynamo=False, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}})
    ops = [n.op_type for n in onnx.load(os.fspath(path)).graph.node]
    assert ops.count("Add") == 2 and "Concat" in ops
    model = cnnkit_onnx.load(path)
    assert type(model) is cnnkit.Model and model.dtype == np.dtype(dtype)
    kinds = [type(la).__name__ for la in model.layers]
    assert kinds.count("Conv2D") == 6 and kinds.count("Add") == 2
    assert {"Concatenate", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
            "Dense"} <= set(kinds)
    # PyTorch's weights, in its state_dict order
    weights = model.get_weights()
    assert len(weights) == len(net.state_dict())
    for w, t in zip(weights, net.state_dict().values()):
        assert np.array_equal(w, t.numpy())
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    if dtype == "float32":
        _assert_close(model(x), expected)
    else:
        np.testing.assert_allclose(model(x), expected, rtol=1e-12,
                                   atol=1e-13)
    # back to ONNX: onnxruntime (float32) gives PyTorch's outputs, and the
    # file loads as the same model
    again = tmp_path / "again.onnx"
    cnnkit_onnx.export(model, again, dtype="float32")
    _assert_close(_run(again, x.astype(np.float32)), expected,
                  rtol=1e-5 if dtype == "float32" else 1e-4)
    if dtype == "float32":
        same = cnnkit_onnx.load(again)
        assert same.get_config()["nodes"] == model.get_config()["nodes"]
        assert np.array_equal(same(x), model(x))


def _nhwc_branching_graph(rng):
    """tf2onnx's form of a Keras graph with branches: an NHWC input
    transposed once, a residual Add of two convolutions, a Transpose back
    to NHWC, a Concat along the channels (axis -1 of NHWC), and a global
    mean, MatMul + Add."""
    k1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    k2 = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    dense = rng.standard_normal((8, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    inits = [numpy_helper.from_array(k1, "k1"),
             numpy_helper.from_array(k2, "k2"),
             numpy_helper.from_array(dense, "dense"),
             numpy_helper.from_array(bias, "bias")]
    nodes = [
        helper.make_node("Transpose", ["x"], ["t0"], name="to_nchw",
                         perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t0", "k1"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "k2"], ["c2"], name="conv2",
                         kernel_shape=[1, 1]),
        helper.make_node("Add", ["r1", "c2"], ["s"], name="residual"),
        helper.make_node("Transpose", ["s"], ["t1"], name="to_nhwc",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["t1"], ["r2"], name="relu2"),
        helper.make_node("Concat", ["r2", "t1"], ["cat"], name="cat",
                         axis=-1),
        helper.make_node("ReduceMean", ["cat"], ["m"], name="mean",
                         axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["m", "dense"], ["d"], name="matmul"),
        helper.make_node("Add", ["d", "bias"], ["y"], name="bias_add"),
    ]
    return _graph_model(nodes, [_f32("x", ["N", 6, 6, 3])],
                        [_f32("y", ["N", 3])], inits, opset=13)


def test_import_branching_graphs_built_by_hand(tmp_path):
    # NHWC (tf2onnx) with branches
    proto = _nhwc_branching_graph(np.random.default_rng(8))
    onnx.checker.check_model(proto, full_check=True)
    path = _save_proto(tmp_path, proto, "nhwc.onnx")
    model = cnnkit_onnx.load(path)
    assert type(model) is cnnkit.Model and model.input_shape == (3, 6, 6)
    assert [la.name for la in model.layers] == [
        "conv1", "relu1", "conv2", "residual", "relu2", "cat", "mean",
        "matmul"]
    assert model.layers[5].axis == 1            # NHWC's -1: the channels
    x_nhwc = _images((6, 6, 3), 4)
    _assert_close(model(x_nhwc.transpose(0, 3, 1, 2)),
                  _run(path, x_nhwc, "x"))

    # a value read twice by one node, a pooled value read twice, and two
    # Conv nodes on one weight: one layer called twice
    rng = np.random.default_rng(9)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w"], ["c2"], name="conv_again",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "c2"], ["s"], name="double"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f1"], name="flat1"),
        helper.make_node("Flatten", ["g"], ["f2"], name="flat2"),
        helper.make_node("Mul", ["f1", "f2"], ["p"], name="square"),
        helper.make_node("Concat", ["p", "f1"], ["v"], name="cat", axis=1),
        helper.make_node("Gemm", ["v", "fc"], ["y"], name="fc", transB=1),
    ]
    proto = _graph_model(nodes, [_f32("x", ["N", 2, 5, 5])],
                         [_f32("y", ["N", 3])],
                         [numpy_helper.from_array(w, "w"),
                          numpy_helper.from_array(fc, "fc")])
    onnx.checker.check_model(proto, full_check=True)
    path = _save_proto(tmp_path, proto, "shared.onnx")
    model = cnnkit_onnx.load(path)
    config = model.get_config()
    assert [n["layer"] for n in config["nodes"]] == [
        "conv", "relu", "conv", "double", "gap", "flat1", "flat2", "square",
        "cat", "fc"]
    assert config["nodes"][3]["inputs"] == [2, 2]
    assert list(model.state_dict()) == ["conv.weight", "fc.weight"]
    # the pooled value has two readers: AvgPool2D over the plane, kept
    assert type(model.layers[3]).__name__ == "AvgPool2D"
    x = _images((2, 5, 5), 3)
    _assert_close(model(x), _run(path, x, "x"))

    # nodes named so that they cannot name cnnkit layers: <type>_<index>
    for node in proto.graph.node:
        node.name = f"a.{node.name}"
    model = cnnkit_onnx.load(_save_proto(tmp_path, proto, "dots.onnx"))
    assert [la.name for la in model.layers][:4] == [
        "conv2d_0", "relu_1", "add_2", "avgpool2d_3"]
    _assert_close(model(x), _run(path, x, "x"))


def _branching_graph(merge, inputs=("p", "q"), **attrs):
    """x (N, 2, 8, 8) -> Conv -> c (N, 4, 6, 6) -> MaxPool -> p (N, 4, 3, 3),
    c -> AveragePool -> q (N, 4, 3, 3); then ``merge`` of ``inputs``."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"),
             helper.make_node("MaxPool", ["c"], ["p"], name="max0",
                              kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["c"], ["q"], name="avg0",
                              kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node(merge, list(inputs), ["z"], name="merge",
                              **attrs)]
    return _graph_model(nodes, [_f32("x", ["N", 2, 8, 8])],
                        [_f32("z", None)],
                        [numpy_helper.from_array(w, "w"),
                         numpy_helper.from_array(np.ones(4, np.float32),
                                                 "ones")])


@pytest.mark.parametrize("proto, words", [
    (_branching_graph("Add", ["c", "p"]),
     ["'merge'", "[4, 6, 6] and [4, 3, 3]", "no broadcasting"]),
    (_branching_graph("Mul", ["p", "ones"]),
     ["'merge'", "'ones'", "merges computed values only"]),
    (_branching_graph("Concat", ["p", "q"], axis=0),
     ["'merge'", "axis=0", "batch"]),
    (_branching_graph("Concat", ["p", "q"], axis=4),
     ["'merge'", "axis=4", "out of range"]),
    (_branching_graph("Concat", ["c", "p"], axis=1),
     ["'merge'", "Concatenate", "(4, 6, 6) and (4, 3, 3)"]),
    (_branching_graph("Sub", ["p", "q"]),
     ["'merge'", "operator Sub is not supported"]),
    (_branching_graph("MatMul", ["p", "q"]),
     ["'merge'", "2 inputs computed from the graph input"]),
], ids=["broadcast", "mul-constant", "concat-batch", "concat-range",
        "concat-shapes", "sub", "matmul-of-values"])
def test_unsupported_merges_are_refused_by_name(proto, words, tmp_path):
    _load_error(_save_proto(tmp_path, proto), *words)


def test_unexpressible_branching_is_refused_by_name(tmp_path):
    rng = np.random.default_rng(10)
    w = numpy_helper.from_array(
        rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.ones(3, np.float32), "b")
    base = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
            helper.make_node("MatMul", ["f", "w"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "b"], ["y"], name="bias")]

    def load(nodes, inputs=None, outputs=None):
        proto = _graph_model(nodes, inputs or [_f32("x", ["N", 1, 2, 2])],
                             outputs or [_f32("z", None)], [w, b])
        return _save_proto(tmp_path, proto)

    # several outputs, several inputs: named
    _load_error(load(base + [helper.make_node("Relu", ["y"], ["z"],
                                              name="r")],
                     outputs=[_f32("z", None), _f32("m", None)]),
                "2 outputs", "('z', 'm')")
    _load_error(load(base + [helper.make_node("Add", ["y", "x2"], ["z"],
                                              name="r")],
                     inputs=[_f32("x", ["N", 1, 2, 2]), _f32("x2", ["N", 3])]),
                "2 data inputs", "('x', 'x2')")
    # a branch the output does not read
    _load_error(load(base + [
        helper.make_node("Relu", ["y"], ["z"], name="r"),
        helper.make_node("Relu", ["f"], ["unused"], name="side")]),
        "node 'side' (Relu)", "'unused'", "does not lead to the graph output")
    # a MatMul whose output is read besides its bias Add
    _load_error(load(base + [
        helper.make_node("Relu", ["m"], ["r"], name="r"),
        helper.make_node("Add", ["r", "y"], ["z"], name="sum")]),
        "node 'bias' (Add)", "bias of a MatMul", "nothing else reads")
    # merges of values in different layouts
    _load_error(load([
        helper.make_node("Transpose", ["x"], ["t"], name="t",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["x", "t"], ["z"], name="sum")],
        outputs=[_f32("z", None)]), "node 'sum' (Add)",
        "different layouts")


def test_import_matmul_add_reshape_identity(tmp_path):
    """The form older exporters write: weights through Identity and
    Constant nodes, Reshape with a constant shape, MatMul + Add."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((36, 5)).astype(np.float32)     # (in, out)
    b2 = rng.standard_normal(5).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "conv.w"),
             numpy_helper.from_array(b1, "conv.b"),
             numpy_helper.from_array(w2, "fc.w")]
    nodes = [
        helper.make_node("Identity", ["conv.w"], ["w1"], name="id_w1"),
        helper.make_node("Identity", ["conv.b"], ["b1"], name="id_b1"),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Constant", [], ["shape"], name="shape",
                         value=numpy_helper.from_array(
                             np.array([-1, 36], np.int64))),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
        helper.make_node("Identity", ["fc.w"], ["w2"], name="id_w2"),
        helper.make_node("Constant", [], ["b2"], name="bias",
                         value=numpy_helper.from_array(b2)),
        helper.make_node("MatMul", ["f", "w2"], ["m"], name="matmul"),
        helper.make_node("Add", ["b2", "m"], ["y"], name="add"),
    ]
    proto = _graph_model(nodes, [_f32("x", ["N", 2, 6, 6])],
                         [_f32("y", ["N", 5])], inits)
    onnx.checker.check_model(proto, full_check=True)
    path = _save_proto(tmp_path, proto)
    model = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in model.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense"]
    x = _images((2, 6, 6), 3).astype(np.float64)
    h = R.relu(R.conv2d(x, w1, b1, padding=1))
    h, _ = R.max_pool2d(h, 2)
    expected = R.dense(h.reshape(3, -1), w2.T, b2)
    _assert_close(model(x.astype(np.float32)), expected)
    _assert_close(_run(path, x.astype(np.float32), "x"), expected)


def _keras_style_graph(rng, ending="flatten"):
    """A Keras Sequential CNN in tf2onnx's form: NHWC input, Transpose to
    NCHW around the convolutions, Transpose back before the flattening,
    Reshape, MatMul + Add, Softmax."""
    h = w = 8
    k1 = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)   # OIHW
    b1 = rng.standard_normal(6).astype(np.float32)
    k2 = rng.standard_normal((4, 6, 2, 2)).astype(np.float32)
    feats = 4 * 4 * 4
    dense = rng.standard_normal((feats if ending == "flatten" else 4,
                                 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    inits = [numpy_helper.from_array(k1, "sequential/conv2d/Conv2D"),
             numpy_helper.from_array(b1, "sequential/conv2d/BiasAdd"),
             numpy_helper.from_array(k2, "sequential/conv2d_1/Conv2D"),
             numpy_helper.from_array(dense, "sequential/dense/MatMul"),
             numpy_helper.from_array(bias, "sequential/dense/BiasAdd"),
             numpy_helper.from_array(np.array([-1, feats], np.int64),
                                     "const_fold_opt__8")]
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["t0"],
                         name="sequential/conv2d/Conv2D__6",
                         perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t0", "sequential/conv2d/Conv2D",
                                  "sequential/conv2d/BiasAdd"], ["c1"],
                         name="sequential/conv2d/BiasAdd",
                         auto_pad="SAME_UPPER", kernel_shape=[3, 3],
                         strides=[1, 1], dilations=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"],
                         name="sequential/conv2d/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"],
                         name="sequential/max_pooling2d/MaxPool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "sequential/conv2d_1/Conv2D"],
                         ["c2"], name="sequential/conv2d_1/Conv2D",
                         auto_pad="SAME_UPPER", kernel_shape=[2, 2]),
        helper.make_node("Transpose", ["c2"], ["t1"],
                         name="sequential/conv2d_1/Conv2D__12",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Relu", ["t1"], ["r2"],
                         name="sequential/conv2d_1/Relu"),
    ]
    if ending == "flatten":
        nodes.append(helper.make_node(
            "Reshape", ["r2", "const_fold_opt__8"], ["f"],
            name="sequential/flatten/Reshape"))
    else:
        nodes.append(helper.make_node(
            "ReduceMean", ["r2"], ["f"], axes=[1, 2], keepdims=0,
            name="sequential/global_average_pooling2d/Mean"))
    nodes += [
        helper.make_node("MatMul", ["f", "sequential/dense/MatMul"], ["m"],
                         name="sequential/dense/MatMul"),
        helper.make_node("Add", ["m", "sequential/dense/BiasAdd"], ["a"],
                         name="sequential/dense/BiasAdd"),
        helper.make_node("Softmax", ["a"], ["dense"],
                         name="sequential/dense/Softmax", axis=-1),
    ]
    return _graph_model(nodes, [_f32("input_1", ["unk__16", h, w, 3])],
                        [_f32("dense", ["unk__17", 5])], inits, opset=13)


@pytest.mark.parametrize("ending", ["flatten", "global_mean"])
def test_import_keras_nhwc_graph(ending, tmp_path):
    proto = _keras_style_graph(np.random.default_rng(4), ending)
    onnx.checker.check_model(proto, full_check=True)
    path = _save_proto(tmp_path, proto)
    model = cnnkit_onnx.load(path)
    assert model.input_shape == (3, 8, 8)
    x_nhwc = _images((8, 8, 3), 5)
    expected = _run(path, x_nhwc, "input_1")          # probabilities
    x = x_nhwc.transpose(0, 3, 1, 2)
    _assert_close(model.predict_proba(x), expected)
    # the transposes are folded: no layer stands for them
    names = [type(la).__name__ for la in model.layers]
    assert names == ["Conv2D", "ReLU", "MaxPool2D", "Conv2D", "ReLU",
                     "Flatten" if ending == "flatten" else "GlobalAvgPool2D",
                     "Dense"]
    assert model.layers[0].padding == (1, 1)
    assert model.layers[3].padding == "same"


def test_import_pytorch_form_built_by_hand_gemm_variants(tmp_path):
    """Gemm with transB=0 and a (1, out) bias, Flatten, fixed batch size."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((12, 4)).astype(np.float32)
    b = rng.standard_normal((1, 4)).astype(np.float32)
    proto = _graph_model(
        [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc")],
        [_f32("x", [2, 3, 2, 2])], [_f32("y", [2, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = _save_proto(tmp_path, proto)
    model = cnnkit_onnx.load(path)
    x = _images((3, 2, 2), 2)
    _assert_close(model(x), _run(path, x, "x"))
    assert np.array_equal(model.get_weights()[0], w.T)
    # the fixed batch size of the graph does not bind the cnnkit model
    x = _images((3, 2, 2), 5)
    _assert_close(model(x), R.dense(x.reshape(5, -1).astype(np.float64),
                                    w.T, b[0]))


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------
def test_damaged_files_are_refused(tmp_path):
    model = _arch_model("lenet")
    good = tmp_path / "good.onnx"
    cnnkit_onnx.export(model, good)
    raw = good.read_bytes()
    for cut in (1, 7, len(raw) // 3, len(raw) // 2, len(raw) - 5,
                len(raw) - 1):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(raw[:cut])
        _load_error(bad)
    bad = tmp_path / "cut_half.onnx"
    bad.write_bytes(raw[:len(raw) // 2])
    _load_error(bad, "truncated")
    rng = np.random.default_rng(0)
    for i in range(5):
        junk = tmp_path / f"junk{i}.onnx"
        junk.write_bytes(rng.integers(0, 256, 200 + 97 * i,
                                      dtype=np.uint8).tobytes())
        _load_error(junk)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _load_error(empty, "empty")
    text = tmp_path / "text.onnx"
    text.write_bytes(b"this is not a model\n")
    _load_error(text, "not an ONNX model")
    with pytest.raises(FileNotFoundError):
        cnnkit_onnx.load(tmp_path / "missing.onnx")
    with pytest.raises(IsADirectoryError):
        cnnkit_onnx.load(tmp_path)


def test_damaged_bytes_give_value_errors_only(tmp_path):
    """Random byte changes in a valid file load or raise ValueError; no
    other exception escapes."""
    model = _arch_model("global_avg_pool_dropout")
    cnnkit_onnx.export(model, tmp_path / "good.onnx", probabilities=True)
    raw = (tmp_path / "good.onnx").read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / "bad.onnx"
    for _ in range(300):
        data = bytearray(raw)
        for i in rng.integers(0, len(data), rng.integers(1, 4)):
            data[i] = rng.integers(0, 256)
        path.write_bytes(bytes(data))
        try:
            cnnkit_onnx.load(path)
        except ValueError as exc:
            assert str(path) in str(exc)


def _small_conv_graph(conv_attrs=None, extra_nodes=(), conv_inputs=None,
                      inits=None, pool_attrs=None):
    """x (N, 2, 8, 8) -> Conv -> MaxPool -> Flatten -> ... """
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", conv_inputs or ["x", "w"], ["c"],
                              name="conv0", **(conv_attrs or {})),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool0",
                              **(pool_attrs or {"kernel_shape": [2, 2],
                                                "strides": [2, 2]})),
             helper.make_node("Flatten", ["p"], ["y"], name="flat0")]
    nodes += list(extra_nodes)
    out = nodes[-1].output[0]
    return _graph_model(nodes, [_f32("x", ["N", 2, 8, 8])],
                        [_f32(out, None)],
                        inits or [numpy_helper.from_array(w, "w")])


def test_small_conv_graph_loads(tmp_path):
    path = _save_proto(tmp_path, _small_conv_graph())
    model = cnnkit_onnx.load(path)
    x = _images((2, 8, 8), 2)
    _assert_close(model(x), _run(path, x, "x"))


@pytest.mark.parametrize("op,cip", [("MaxPool", None),
                                    ("AveragePool", 1), ("AveragePool", 0)])
@pytest.mark.parametrize("size,k,stride,pad", [
    (8, 3, 2, 0), (8, 2, 3, 1), (7, 3, 2, 1), (5, 4, 4, 2), (2, 3, 3, 0)])
def test_ceil_mode_pools_load_and_match_onnxruntime(op, cip, size, k, stride,
                                                     pad, tmp_path):
    """ceil_mode=1 graphs (PyTorch's export of ceil_mode=True) load as
    ceil_mode layers, give onnxruntime's outputs (a last window starting
    in the padding dropped, the count_include_pad divisor clipped to the
    padded input) and export back to the same attributes."""
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride],
             "pads": [pad] * 4, "ceil_mode": 1}
    if cip is not None:
        attrs["count_include_pad"] = cip
    nodes = [helper.make_node(op, ["x"], ["p"], name="pool0", **attrs),
             helper.make_node("Flatten", ["p"], ["y"], name="flat0")]
    path = _save_proto(tmp_path, _graph_model(
        nodes, [_f32("x", ["N", 2, size, size])], [_f32("y", None)], []))
    model = cnnkit_onnx.load(path)
    pool = model.layers[0]
    assert pool.ceil_mode is True
    assert isinstance(pool, L.AvgPool2D) == (op == "AveragePool")
    x = _images((2, size, size), 3)
    _assert_close(model(x), _run(path, x, "x"))
    out = tmp_path / "again.onnx"
    cnnkit_onnx.export(model, out)
    node = onnx.load(os.fspath(out)).graph.node[0]
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert got["ceil_mode"] == 1 and got["pads"] == [pad] * 4
    _assert_close(_run(out, x, "input"), _run(path, x, "x"))


def test_floor_mode_pools_export_without_ceil_mode(tmp_path):
    model = cnnkit.Sequential([L.MaxPool2D(2), L.AvgPool2D(2), L.Flatten()],
                              input_shape=(1, 9, 9), seed=0)
    cnnkit_onnx.export(model, tmp_path / "m.onnx")
    for node in onnx.load(os.fspath(tmp_path / "m.onnx")).graph.node[:2]:
        assert "ceil_mode" not in {a.name for a in node.attribute}


def test_global_max_pool_loads_and_refuses_float64_export(tmp_path):
    nodes = [helper.make_node("GlobalMaxPool", ["x"], ["p"], name="gmp"),
             helper.make_node("Flatten", ["p"], ["y"], name="flat0")]
    path = _save_proto(tmp_path, _graph_model(
        nodes, [_f32("x", ["N", 3, 5, 4])], [_f32("y", None)], []))
    model = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in model.layers] == ["GlobalMaxPool2D"]
    x = _images((3, 5, 4), 4)
    assert np.array_equal(model(x), _run(path, x, "x"))
    # GlobalMaxPool without Flatten keeps its (C, 1, 1) output
    nodes = [helper.make_node("GlobalMaxPool", ["x"], ["y"], name="gmp")]
    path = _save_proto(tmp_path, _graph_model(
        nodes, [_f32("x", ["N", 3, 5, 4])], [_f32("y", None)], []))
    model = cnnkit_onnx.load(path)
    assert model.output_shape == (3, 1, 1)
    assert np.array_equal(model(x), _run(path, x, "x"))
    m64 = cnnkit.Sequential([L.GlobalMaxPool2D(), L.Dense(2)],
                            input_shape=(3, 5, 4), seed=0, dtype="float64")
    assert cnnkit_onnx.no_float64_layers(m64) == ["GlobalMaxPool2D"]
    with pytest.raises(ValueError, match="GlobalMaxPool"):
        cnnkit_onnx.export(m64, tmp_path / "m64.onnx")


def test_import_pytorch_ceil_mode_and_global_max_pool(tmp_path):
    torch = require("torch")
    from torch import nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    net.eval()
    x = _images((2, 12, 11), 5)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), os.fspath(path),
                      dynamo=False, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}})
    model = cnnkit_onnx.load(path)
    # PyTorch writes AdaptiveMaxPool2d(1) as a MaxPool over the plane
    assert [type(la).__name__ for la in model.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "AvgPool2D", "MaxPool2D", "Flatten",
        "Dense"]
    assert model.layers[2].ceil_mode and model.layers[3].ceil_mode
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _assert_close(model(x), expected)


@pytest.mark.parametrize("proto, words", [
    (_small_conv_graph(
        extra_nodes=[helper.make_node("BatchNormalization",
                                      ["y", "s", "s", "s", "s"], ["z"],
                                      name="bn", training_mode=1)]),
     ["'bn'", "BatchNormalization", "training_mode=1", "not supported"]),
    (_small_conv_graph(
        extra_nodes=[helper.make_node("LSTM", ["y", "w"], ["z"],
                                      name="rnn")]),
     ["'rnn'", "LSTM", "not supported"]),
    (_small_conv_graph(conv_attrs={"group": 2}),
     ["'conv0'", "Conv", "group=2"]),
    (_small_conv_graph(conv_attrs={"pads": [0, 0, 1, 1], "strides": [2, 2]}),
     ["'conv0'", "pads", "[0, 0, 1, 1]", "asymmetric"]),
    (_small_conv_graph(conv_attrs={"auto_pad": "SAME_LOWER",
                                   "kernel_shape": [2, 2]}),
     ["'conv0'", "kernel_shape=[2, 2]", "weight"]),
    (_small_conv_graph(conv_attrs={"auto_pad": "FULL"}),
     ["'conv0'", "auto_pad='FULL'"]),
    (_small_conv_graph(conv_attrs={"frobnicate": 3}),
     ["'conv0'", "attribute 'frobnicate'"]),
    (_small_conv_graph(pool_attrs={"kernel_shape": [3, 3], "strides": [2, 2],
                                   "ceil_mode": 2}),
     ["'pool0'", "MaxPool", "ceil_mode=2", "not 0 or 1"]),
    (_small_conv_graph(pool_attrs={"kernel_shape": [2, 2],
                                   "dilations": [2, 2]}),
     ["'pool0'", "dilations=[2, 2]"]),
    (_small_conv_graph(pool_attrs={"kernel_shape": [2, 2],
                                   "pads": [2, 2, 2, 2]}),
     ["'pool0'", "half the kernel"]),
    (_small_conv_graph(conv_inputs=["x", "missing"]),
     ["'conv0'", "'missing'", "not defined"]),
    (_small_conv_graph(extra_nodes=[
        helper.make_node("Relu", ["c"], ["z"], name="branch")]),
     ["'pool0'", "'p'", "does not lead to the graph output 'z'"]),
    (_small_conv_graph(extra_nodes=[
        helper.make_node("MatMul", ["y", "y"], ["z"], name="twice")]),
     ["'twice'", "2 inputs computed from the graph input"]),
    (_small_conv_graph(extra_nodes=[
        helper.make_node("Softmax", ["y"], ["s"], name="sm", axis=0),
        helper.make_node("Relu", ["s"], ["z"], name="after")]),
     ["'sm'", "axis=0"]),
    (_small_conv_graph(extra_nodes=[
        helper.make_node("Gemm", ["y", "w"], ["z"], name="g", alpha=2.0)]),
     ["'g'", "alpha=2.0"]),
    (_small_conv_graph(extra_nodes=[
        helper.make_node("Add", ["y", "w"], ["z"], name="add")]),
     ["'add'", "bias of a MatMul"]),
    (_small_conv_graph(extra_nodes=[
        helper.make_node("Relu", ["y"], ["z"], name="r", domain="com.x")]),
     ["'r'", "com.x.Relu"]),
    (_small_conv_graph(inits=[numpy_helper.from_array(
        np.ones((4, 2, 3, 3), np.int8), "w")]),
     ["'w'", "INT8"]),
    (_small_conv_graph(inits=[numpy_helper.from_array(
        np.ones((4, 2, 3, 3), np.float64), "w")]),
     ["'conv0'", "float64", "float32"]),
    (_small_conv_graph(inits=[numpy_helper.from_array(
        np.ones((4, 3, 3, 3), np.float32), "w")]),
     ["'conv0'", "3 input channels", "has 2"]),
], ids=["batchnorm", "lstm", "group", "asymmetric-pads", "kernel-shape",
        "auto-pad", "unknown-attribute", "ceil-mode", "pool-dilation",
        "pool-pads", "undefined-input", "dead-branch", "two-data-inputs",
        "softmax-over-the-batch", "gemm-alpha", "add-without-matmul",
        "foreign-domain", "int8-weights", "mixed-dtypes", "channels"])
def test_unsupported_graphs_are_refused_by_name(proto, words, tmp_path):
    path = _save_proto(tmp_path, proto)
    _load_error(path, *words)


def test_oversize_and_inconsistent_tensors_are_refused(tmp_path):
    def with_weight(tensor):
        return _save_proto(tmp_path, _small_conv_graph(inits=[tensor]))

    # dims claim 10^10 floats but 288 bytes are stored
    t = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    del t.dims[:]
    t.dims.extend([100000, 100000])
    _load_error(with_weight(t), "'w'", "[100000, 100000]", "40000000000",
                "288 bytes")
    # an absurd declaration is refused before anything is allocated
    del t.dims[:]
    t.dims.extend([2 ** 40, 2 ** 40, 2 ** 40])
    _load_error(with_weight(t), "'w'", "bytes")
    # typed storage with the wrong count
    t = TensorProto(name="w", data_type=TensorProto.FLOAT,
                    dims=[4, 2, 3, 3], float_data=[1.0] * 10)
    _load_error(with_weight(t), "'w'", "holds 40 bytes")
    # negative dims
    t = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    t.dims[0] = -4
    _load_error(with_weight(t), "'w'", "invalid dims")
    # data in an external file is never read
    t = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    _load_error(with_weight(t), "'w'", "external")
    # a Constant node's tensor is checked the same way
    value = numpy_helper.from_array(np.ones(3, np.float32))
    value.dims[0] = 1000
    proto = _small_conv_graph(extra_nodes=[
        helper.make_node("Constant", [], ["k"], name="k", value=value)])
    _load_error(_save_proto(tmp_path, proto, "k.onnx"), "'k'", "[1000]")


def test_unsupported_inputs_and_outputs_are_refused(tmp_path):
    def graph(inputs, outputs=None, nodes=None):
        nodes = nodes or [helper.make_node("Relu", ["x"], ["y"], name="r"),
                          helper.make_node("Flatten", ["y"], ["z"],
                                           name="f")]
        return _save_proto(tmp_path, _graph_model(
            nodes, inputs, outputs or [_f32("z", None)]))

    _load_error(graph([_f32("x", ["N", 1, "H", 8])]), "'H'", "axis 2")
    _load_error(graph([_f32("x", ["N", 1, 8])]), "3 axes")
    _load_error(graph([helper.make_tensor_value_info(
        "x", TensorProto.INT64, ["N", 1, 8, 8])]), "INT64")
    _load_error(graph([_f32("x", ["N", 1, 4, 4]), _f32("x2", [1])]),
                "2 data inputs", "('x', 'x2')")
    _load_error(graph([_f32("x", ["N", 1, 4, 4])],
                      [_f32("z", None), _f32("y", None)]), "2 outputs",
                "('z', 'y')")
    _load_error(graph([_f32("x", ["N", 1, 4, 4])], [_f32("other", None)]),
                "'other'")
    _load_error(graph([_f32("x", ["N", 1, 4, 4])], nodes=[
        helper.make_node("Transpose", ["x"], ["y"], name="t",
                         perm=[0, 1, 3, 2]),
        helper.make_node("Flatten", ["y"], ["z"], name="f")]),
        "'t'", "perm=[0, 1, 3, 2]")
    _load_error(graph([_f32("x", ["N", 1, 4, 4])], nodes=[
        helper.make_node("Transpose", ["x"], ["y"], name="t",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Flatten", ["y"], ["z"], name="f")]),
        "transposed layout")
    _load_error(graph([_f32("x", ["N", 1, 4, 4])], nodes=[
        helper.make_node("Identity", ["x"], ["z"], name="i")]),
        "no layers")
    proto = _graph_model(
        [helper.make_node("Relu", ["x"], ["z"], name="r")],
        [_f32("x", ["N", 1, 4, 4])], [_f32("z", None)], opset=5)
    _load_error(_save_proto(tmp_path, proto, "old.onnx"), "opset 5")
    proto.ir_version = 99
    _load_error(_save_proto(tmp_path, proto, "new.onnx"), "IR version 99")


# --------------------------------------------------------------------------
# packaging: optional dependency, lazy import
# --------------------------------------------------------------------------
def test_import_cnnkit_does_not_import_onnx():
    code = ("import sys, cnnkit; "
            "assert 'onnx' not in sys.modules, 'onnx'; "
            "assert 'cnnkit.onnx' not in sys.modules, 'cnnkit.onnx'; "
            "m = cnnkit.onnx; "
            "assert 'onnx' not in sys.modules, 'onnx after cnnkit.onnx'; "
            "print(m.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cnnkit.onnx"


def test_missing_onnx_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = _arch_model("mlp")
    with pytest.raises(ImportError, match="pip install onnx onnxruntime"):
        cnnkit_onnx.export(model, tmp_path / "m.onnx")
    with pytest.raises(ImportError, match="pip install onnx onnxruntime"):
        cnnkit_onnx.load(tmp_path / "m.onnx")
    code, _, err = _cli("export", "m.cnnkit", "m.onnx")
    assert code == 2 and "pip install onnx onnxruntime" in err


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def _cli(*argv):
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_cli_export(tmp_path):
    model = _arch_model("lenet")
    model.save(tmp_path / "m.cnnkit")
    out = tmp_path / "m.onnx"
    code, stdout, _ = _cli("export", str(tmp_path / "m.cnnkit"),
                           str(out))
    assert code == 0 and "m.onnx" in stdout
    _checked(out)
    x = _images(model.input_shape, 3)
    _assert_close(_run(out, x), model(x))
    code, _, _ = _cli("export", str(tmp_path / "m.cnnkit"),
                      str(tmp_path / "p.onnx"), "--opset", "13",
                      "--probabilities")
    assert code == 0
    proto = _checked(tmp_path / "p.onnx")
    assert proto.opset_import[0].version == 13
    _assert_close(_run(tmp_path / "p.onnx", x), model.predict_proba(x))
    code, stdout, _ = _cli("export", "--help")
    assert code == 0 and "usage: cnnkit export" in stdout


def test_cli_export_mistakes_are_one_line_and_exit_2(
        tmp_path, assert_user_error):
    model = _arch_model("mlp")
    model.save(tmp_path / "m.cnnkit")
    assert_user_error(*_cli("export", str(tmp_path / "nope.cnnkit"),
                             str(tmp_path / "x.onnx"))[::2], "nope.cnnkit")
    assert_user_error(*_cli("export", str(tmp_path / "m.cnnkit"),
                             str(tmp_path / "no" / "x.onnx"))[::2],
                       "x.onnx", "does not exist")
    assert_user_error(*_cli("export", str(tmp_path / "m.cnnkit"),
                             str(tmp_path / "x.onnx"), "--opset",
                             "9")[::2], "opset")
    assert_user_error(*_cli("export", str(tmp_path / "m.cnnkit"),
                             str(tmp_path / "x.onnx"), "--opset",
                             "new")[::2], "--opset")
    assert_user_error(*_cli("export", str(tmp_path / "m.cnnkit"))[::2],
                       "OUT.onnx")
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------
# grouped and depthwise convolutions
# --------------------------------------------------------------------------
def test_grouped_conv_of_one_group_per_channel_imports_as_depthwise(
        tmp_path):
    # Conv2D(groups=C) is written as Conv with group=C, which reads back as
    # DepthwiseConv2D; all three give onnxruntime's outputs
    model = _randomize(cnnkit.Sequential(
        [L.Conv2D(8, 3, padding=1, groups=4), L.ReLU(), L.Flatten(),
         L.Dense(3)], input_shape=(4, 7, 6), seed=0))
    path = tmp_path / "g.onnx"
    cnnkit_onnx.export(model, path)
    conv = _checked(path).graph.node[0]
    assert conv.op_type == "Conv"
    assert helper.get_attribute_value(
        next(a for a in conv.attribute if a.name == "group")) == 4
    same = cnnkit_onnx.load(path)
    assert type(same.layers[0]).__name__ == "DepthwiseConv2D"
    assert same.layers[0].depth_multiplier == 2
    _same_weights(same, model)
    x = _images((4, 7, 6), 3)
    expected = _run(path, x)
    _assert_close(model(x), expected)
    _assert_close(same(x), expected)
    assert np.array_equal(same(x), model(x))


@pytest.mark.parametrize("group,k", [(2, 4), (4, 4), (4, 8), (1, 4)])
def test_hand_built_grouped_conv_loads(group, k, tmp_path):
    rng = np.random.default_rng(group * 10 + k)
    w = rng.standard_normal((k, 4 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0",
                              group=group, pads=[1, 1, 1, 1],
                              strides=[2, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu0")]
    proto = _graph_model(nodes, [_f32("x", ["N", 4, 9, 8])],
                         [_f32("y", None)],
                         [numpy_helper.from_array(w, "w"),
                          numpy_helper.from_array(b, "b")])
    path = _save_proto(tmp_path, proto)
    model = cnnkit_onnx.load(path)
    kind = "DepthwiseConv2D" if group == 4 else "Conv2D"
    assert type(model.layers[0]).__name__ == kind
    x = _images((4, 9, 8), 3)
    _assert_close(model(x), _run(path, x, "x"))


@pytest.mark.parametrize("group,w_shape,words", [
    (3, (4, 1, 3, 3), ["'conv0'", "group=3", "4 channels"]),
    (0, (4, 4, 3, 3), ["'conv0'", "group=0"]),
    (2, (4, 1, 3, 3), ["'conv0'", "group=2 expects 2 input channels"]),
])
def test_bad_conv_groups_are_refused_by_name(group, w_shape, words,
                                             tmp_path):
    w = np.ones(w_shape, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv0",
                              group=group)]
    proto = _graph_model(nodes, [_f32("x", ["N", 4, 8, 8])],
                         [_f32("y", None)], [numpy_helper.from_array(w, "w")])
    _load_error(_save_proto(tmp_path, proto), *words)


@TORCH_WARNINGS
def test_import_pytorch_grouped_and_depthwise(tmp_path):
    torch = require("torch")
    from torch import nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(8, 8, 1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    net.eval()
    x = _images((4, 12, 12), 5)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), os.fspath(path),
                      dynamo=False, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}})
    model = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in model.layers[:6]] == [
        "DepthwiseConv2D", "ReLU", "Conv2D", "ReLU", "DepthwiseConv2D",
        "ReLU"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _assert_close(model(x), expected)
    _assert_close(model(x), _run(path, x))
    for w, t in zip(model.get_weights(), net.state_dict().values()):
        assert np.array_equal(w, t.numpy())


# --------------------------------------------------------------------------
# activations: LeakyRelu, Sigmoid, Tanh, SiLU, GELU, Softmax, LogSoftmax
# --------------------------------------------------------------------------
def _activation_stack(approximate="none"):
    return [L.Conv2D(4, 3, padding=1), L.GELU(approximate),
            L.Conv2D(4, 3), L.SiLU(), L.Flatten(), L.Dense(6),
            L.LeakyReLU(0.2), L.Dense(5), L.Tanh(), L.Sigmoid(),
            L.Dense(4), L.LogSoftmax(), L.Dense(3), L.Softmax()]


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_activations_export_and_round_trip(opset, approximate, tmp_path):
    model = _randomize(cnnkit.Sequential(
        _activation_stack(approximate), input_shape=(2, 6, 6), seed=0))
    path = tmp_path / "act.onnx"
    cnnkit_onnx.export(model, path, opset=opset)
    proto = _checked(path)
    ops = [n.op_type for n in proto.graph.node]
    assert ("Gelu" in ops) == (opset >= 20)
    assert ("Erf" in ops) == (opset < 20 and approximate == "none")
    assert {"LeakyRelu", "Sigmoid", "Tanh", "Mul", "LogSoftmax",
            "Softmax"} <= set(ops)
    leaky = next(n for n in proto.graph.node if n.op_type == "LeakyRelu")
    assert helper.get_attribute_value(leaky.attribute[0]) == \
        pytest.approx(0.2)
    x = 2 * _images(model.input_shape, 5)
    _assert_close(_run(path, x), model(x))
    same = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in same.layers] == [
        type(la).__name__ for la in model.layers]
    assert same.layers[1].approximate == approximate
    assert same.layers[6].negative_slope == 0.2
    _same_weights(same, model)
    assert np.array_equal(same(x), model(x))


def test_activations_in_a_graph_model_round_trip(tmp_path):
    inp = cnnkit.Input((6,))
    h = L.Dense(5)(inp)
    a = L.SiLU()(h)
    b = L.GELU()(h)
    out = L.Softmax()(L.Dense(3)(L.Add()([a, b])))
    model = _randomize(cnnkit.Model(inp, out, seed=0))
    x = _images((6,), 4)
    for opset in (17, 20):
        path = tmp_path / f"g{opset}.onnx"
        cnnkit_onnx.export(model, path, opset=opset)
        _checked(path)
        _assert_close(_run(path, x), model(x))
        same = cnnkit_onnx.load(path)
        assert sorted(type(la).__name__ for la in same.layers) == sorted(
            type(la).__name__ for la in model.layers)
        assert np.array_equal(same(x), model(x))
        # probabilities=True adds no second Softmax
        cnnkit_onnx.export(model, path, opset=opset, probabilities=True)
        proto = _checked(path)
        assert [n.op_type for n in proto.graph.node].count("Softmax") == 1
        assert proto.graph.output[0].name == "probabilities"
        _assert_close(_run(path, x), model(x))


def test_model_ending_in_softmax_exports_one_softmax(tmp_path):
    model = _randomize(cnnkit.Sequential(
        [L.Dense(5), L.Tanh(), L.Dense(3), L.Softmax()], input_shape=(4,),
        seed=0))
    path = tmp_path / "p.onnx"
    cnnkit_onnx.export(model, path, probabilities=True)
    proto = _checked(path)
    assert [n.op_type for n in proto.graph.node].count("Softmax") == 1
    x = _images((4,), 6)
    got = _run(path, x)
    _assert_close(got, model(x))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    # exported as logits, the final Softmax is a layer on the way back
    cnnkit_onnx.export(model, path)
    same = cnnkit_onnx.load(path)
    assert type(same.layers[-1]) is L.Softmax
    assert np.array_equal(same(x), model(x))


def test_final_softmax_of_other_producers_is_still_dropped(tmp_path):
    w = numpy_helper.from_array(np.eye(3, 4, dtype=np.float32), "w")
    proto = _graph_model(
        [helper.make_node("Gemm", ["x", "w"], ["z"], transB=1),
         helper.make_node("Sigmoid", ["z"], ["s"]),
         helper.make_node("Softmax", ["s"], ["y"], axis=1)],
        [_f32("x", ["n", 4])], [_f32("y", ["n", 3])], [w])
    model = cnnkit_onnx.load(_save_proto(tmp_path, proto))
    assert [type(la).__name__ for la in model.layers] == ["Dense",
                                                          "Sigmoid"]


@TORCH_WARNINGS
@pytest.mark.parametrize("opset", [17, 20])
def test_import_pytorch_activations(opset, tmp_path):
    torch = require("torch")
    from torch import nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3), nn.SiLU(),
        nn.Flatten(), nn.Linear(16, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8),
        nn.GELU(approximate="tanh"), nn.Linear(8, 6), nn.Tanh(),
        nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4),
        nn.LogSoftmax(dim=1), nn.Linear(4, 3))
    net.eval()
    x = 2 * _images((2, 6, 6), 5)
    path = tmp_path / "torch_act.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), os.fspath(path),
                      dynamo=False, input_names=["input"],
                      output_names=["logits"], opset_version=opset,
                      dynamic_axes={"input": {0: "batch"}})
    model = cnnkit_onnx.load(path)
    assert [type(la).__name__ for la in model.layers] == [
        "Conv2D", "GELU", "Conv2D", "SiLU", "Flatten", "Dense", "LeakyReLU",
        "Dense", "GELU", "Dense", "Tanh", "Dense", "Sigmoid", "Dense",
        "LogSoftmax", "Dense"]
    assert model.layers[6].negative_slope == 0.1
    assert model.layers[8].approximate == "tanh"
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _assert_close(model(x), expected)


def test_silu_pattern_needs_the_same_input(tmp_path):
    """x * Sigmoid(y) is not a SiLU: a Multiply of two computed values."""
    proto = _graph_model(
        [helper.make_node("Tanh", ["x"], ["t"]),
         helper.make_node("Sigmoid", ["t"], ["s"]),
         helper.make_node("Mul", ["x", "s"], ["y"])],
        [_f32("x", ["n", 4])], [_f32("y", ["n", 4])])
    model = cnnkit_onnx.load(_save_proto(tmp_path, proto))
    assert sorted(type(la).__name__ for la in model.layers) == [
        "Multiply", "Sigmoid", "Tanh"]
    x = _images((4,), 3)
    _assert_close(model(x), x * (1 / (1 + np.exp(-np.tanh(x)))))
