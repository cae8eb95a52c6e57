"""The model zoo, ``cnnkit.models``: shapes, parameter counts, names, the
PyTorch twins of its networks, and the CLI and estimator that take them by
name."""
import re

import numpy as np
import pytest

import cnnkit
from cnnkit import layers as L
from cnnkit import models
from cnnkit.bench import resnet_torch
from cnnkit.datasets import make_synthetic

from helpers import require


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_lenet5_is_the_benchmarked_network():
    net = models.lenet5(seed=0)
    hand = cnnkit.Sequential([
        L.Conv2D(6, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(16, 5), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
        L.Dense(120), L.ReLU(), L.Dense(84), L.ReLU(), L.Dense(10)],
        input_shape=(1, 28, 28), seed=0)
    assert net.count_params() == hand.count_params() == 61706
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    np.testing.assert_array_equal(net.predict_proba(x),
                                  hand.predict_proba(x))
    assert models.lenet5(num_classes=3, input_shape=(3, 32, 32)
                         ).output_shape == (3,)


@pytest.mark.parametrize("depth, params", [(8, 78042), (20, 272474),
                                           (56, 855770)])
def test_resnet_parameter_counts(depth, params):
    # the CIFAR ResNets of He et al. (2016) with projection shortcuts:
    # ResNet-20 is the paper's 0.27M, ResNet-56 its 0.85M
    net = models.resnet(depth, seed=0)
    assert net.count_params() == params
    kinds = _kinds(net)
    n = (depth - 2) // 6
    assert kinds.count("Conv2D") == 6 * n + 1 + 2      # + two projections
    assert kinds.count("BatchNorm2D") == kinds.count("Conv2D")
    assert kinds.count("Add") == 3 * n
    assert kinds[-1] == "Dense" and net.output_shape == (10,)
    assert all(not layer.use_bias for layer in net.layers
               if isinstance(layer, L.Conv2D))


def test_resnet20_summary_says_0_27m_parameters():
    lines = []
    models.resnet(20, seed=0).summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert re.search(r"272,474", text), text


def test_resnet_takes_other_images_and_widths():
    net = models.resnet(8, num_classes=3, input_shape=(1, 28, 28), width=4,
                        seed=0)
    assert net.output_shape == (3,)
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28))
    p = net.predict_proba(x)
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    # odd sizes: the strided stages round up (7 -> 4 -> 2)
    assert models.resnet(8, input_shape=(3, 7, 7), width=2,
                         seed=0).output_shape == (10,)


def test_mobilenet_is_depthwise_separable():
    net = models.mobilenet(seed=0)
    assert net.count_params() == 136778
    kinds = _kinds(net)
    assert kinds.count("DepthwiseConv2D") == 5
    assert kinds.count("BatchNorm2D") == 11
    assert models.mobilenet(num_classes=4, input_shape=(1, 28, 28), width=8,
                            seed=0).output_shape == (4,)


@pytest.mark.parametrize("name, kind", [
    ("lenet5", "Sequential"), ("LeNet-5", "Sequential"),
    ("resnet20", "Model"), ("ResNet_8", "Model"), ("resnet110", "Model"),
    ("mobilenet", "Sequential")])
def test_get_by_name(name, kind):
    net = models.get(name, (1, 28, 28), 10, seed=0)
    assert type(net).__name__ == kind and net.output_shape == (10,)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: models.get("resnet21", (1, 28, 28), 10), ValueError,
     "unknown architecture 'resnet21'"),
    (lambda: models.get("vgg16", (1, 28, 28), 10), ValueError,
     "resnet<6n+2>"),
    (lambda: models.get(20, (1, 28, 28), 10), TypeError,
     "name must be a str, got int"),
    (lambda: models.resnet(21), ValueError, "depth must be 6n + 2"),
    (lambda: models.resnet(2), ValueError, "depth"),
    (lambda: models.resnet(20, width=0), ValueError, "width"),
    (lambda: models.resnet(20, input_shape=(28, 28)), ValueError,
     "input_shape must be (channels, height, width)"),
    (lambda: models.lenet5(input_shape=(1, 8, 8)), ValueError,
     "at least 12x12, got 8x8"),
    (lambda: models.mobilenet(num_classes=0), ValueError, "num_classes"),
])
def test_bad_arguments_are_named(call, exc, words):
    with pytest.raises(exc, match=re.escape(words)):
        call()


def test_a_small_resnet_learns_and_round_trips(tmp_path):
    x, y = make_synthetic(96, (1, 12, 12), 3, seed=0)
    net = models.resnet(8, num_classes=3, input_shape=(1, 12, 12), width=4,
                        seed=0)
    hist = net.fit(x, y, epochs=6, batch_size=16, verbose=0,
                   optimizer=cnnkit.optim.Adam(1e-2))
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    path = tmp_path / "r8.cnnkit"
    net.save(path)
    back = cnnkit.load_model(path)
    np.testing.assert_array_equal(back.predict_proba(x), net.predict_proba(x))


def test_resnet20_loads_pytorch_weights_in_train_and_eval_mode():
    torch = require("torch")
    torch.manual_seed(0)
    tnet = resnet_torch(20, 10, 3, 16).double()
    # running statistics away from (0, 1), so eval mode is really tested
    with torch.no_grad():
        tnet.train()
        for _ in range(3):
            tnet(torch.randn(8, 3, 32, 32, dtype=torch.float64) * 2 + 0.5)
    state = tnet.state_dict()
    net = models.resnet(20, seed=0, dtype="float64")
    assert net.count_params() == sum(p.numel() for p in tnet.parameters())
    ours = net.state_dict()
    assert [tuple(v.shape) for v in ours.values()] == \
        [tuple(v.shape) for v in state.values()]
    net.set_weights([v.numpy() for v in state.values()])
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32))
    tnet.eval()
    with torch.no_grad():
        want = tnet(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), want, rtol=1e-9,
                               atol=1e-9)
    # training mode: batch statistics, and the running ones move the same
    tnet.train()
    with torch.no_grad():
        want = tnet(torch.from_numpy(x)).numpy()
    got = net.forward(x, training=True)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    after = list(tnet.state_dict().values())
    for mine, theirs in zip(net.get_weights(), after):
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_cli_trains_a_zoo_model(tmp_path, capsys):
    from cnnkit import cli
    out_file = tmp_path / "r.cnnkit"
    code = cli.main(["train", "--model", "resnet8", "--epochs", "1",
                     "--quiet", "--schedule", "cosine", "--weight-decay",
                     "1e-4", "--threads", "1", "--out", str(out_file)])
    out = capsys.readouterr().out
    assert code == 0
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) > 0.3
    model = cnnkit.load_model(out_file)
    assert type(model).__name__ == "Model"
    assert _kinds(model).count("BatchNorm2D") == 9
    record = model.metadata["training"]
    assert record["model"] == "resnet8" and record["schedule"] == "cosine"


def test_cli_refuses_an_unknown_model(capsys):
    from cnnkit import cli
    code = cli.main(["train", "--model", "resnet7", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--model" in err and "resnet7" in err


def test_estimator_takes_an_architecture_by_name():
    require("sklearn")
    from cnnkit.sklearn import CNNClassifier
    x, y = make_synthetic(60, (1, 12, 12), 3, seed=0)
    clf = CNNClassifier(architecture="resnet8", max_iter=2,
                        random_state=0, image_shape=(12, 12))
    clf.fit(x.reshape(60, -1), y)
    assert _kinds(clf.model_).count("BatchNorm2D") == 9
    assert clf.predict(x.reshape(60, -1)).shape == (60,)
    with pytest.raises(ValueError, match="architecture 'nope' is not an "
                       "architecture of cnnkit.models"):
        CNNClassifier(architecture="nope").fit(x.reshape(60, -1), y)


@pytest.mark.parametrize("make", [
    lambda: models.resnet(8, num_classes=5, input_shape=(2, 9, 9), width=4,
                          seed=0),
    lambda: models.mobilenet(num_classes=5, input_shape=(2, 9, 9), width=4,
                             seed=0)], ids=["resnet8", "mobilenet"])
def test_zoo_models_export_to_onnx_and_back(make, tmp_path):
    require("onnx")
    ort = require("onnxruntime")
    x, y = make_synthetic(32, (2, 9, 9), 5, seed=0)
    net = make()
    net.fit(x, y, epochs=2, batch_size=8, verbose=0)     # moved statistics
    path = tmp_path / "zoo.onnx"
    cnnkit.onnx.export(net, path)
    session = ort.InferenceSession(str(path),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = net.forward(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    back = cnnkit.onnx.load(path)
    np.testing.assert_allclose(back.forward(x), want, rtol=1e-5, atol=1e-6)
