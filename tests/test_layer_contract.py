"""The contract every layer in ``cnnkit.layers.LAYERS`` keeps (a layer
added there is covered as soon as CASES below gives its arguments; until
then its tests fail and say so).

The contract, in float64 inside a one-layer ``cnnkit.Sequential``:
``build(shape)`` returns ``compute_output_shape(shape)``; ``forward(x,
training=True)`` has that shape, and ``backward(grad)`` gives the input and
parameter gradients of central finite differences of the forward; the
weights, the config, a saved file and a pickle each reproduce the model's
outputs bit for bit.
"""
import pickle

import numpy as np
import pytest

import cnnkit
from cnnkit import layers as L

from helpers import assert_grad_close, distinct_values, numerical_gradient

# class name -> (constructor arguments, input shape of one sample)
CASES = {
    "Conv2D": (dict(filters=3, kernel_size=(3, 2), stride=(2, 1), padding=1,
                    dilation=(1, 2)), (2, 7, 6)),
    "ReLU": ({}, (2, 5, 4)),
    "MaxPool2D": (dict(pool_size=(3, 2), stride=(2, 1), padding=1),
                  (2, 7, 6)),
    "AvgPool2D": (dict(pool_size=3, stride=2, padding=1,
                       count_include_pad=False), (2, 7, 6)),
    "GlobalAvgPool2D": ({}, (3, 5, 4)),
    "Flatten": ({}, (2, 3, 4)),
    "Dense": (dict(units=4), (7,)),
    "Dropout": (dict(rate=0.25), (2, 3, 4)),
}

N = 2           # samples per batch


def _case(name):
    if name not in CASES:
        pytest.fail(f"layer {name} has no entry in CASES of "
                    f"tests/test_layer_contract.py: add its constructor "
                    f"arguments and an input shape there", pytrace=False)
    kwargs, shape = CASES[name]
    return L.LAYERS[name], kwargs, shape


def _model(name, seed=0):
    cls, kwargs, shape = _case(name)
    return cnnkit.Sequential([cls(**kwargs)], input_shape=shape, seed=seed,
                             dtype="float64")


def _x(model, seed=1):
    # distinct values, none near 0: max pooling and ReLU are differentiable
    # at every input
    return distinct_values(np.random.default_rng(seed),
                           (N,) + model.input_shape)


@pytest.mark.parametrize("name", sorted(L.LAYERS))
def test_build_returns_compute_output_shape(name):
    cls, kwargs, shape = _case(name)
    layer = cls(**kwargs)
    out = layer.build(shape)
    assert out == layer.compute_output_shape(shape)
    assert layer.built
    assert layer.input_shape == tuple(shape) and layer.output_shape == out


@pytest.mark.parametrize("name", sorted(L.LAYERS))
def test_backward_matches_finite_differences(name):
    """forward(x, training=True) and backward(grad) of the model's layer:
    the input gradient and every parameter gradient equal central finite
    differences of sum(forward * grad).  The model's generator is rewound
    before each forward, so random layers draw the same values each time."""
    model = _model(name)
    layer = model.layers[0]
    x = _x(model)
    state = model.rng.bit_generator.state

    def forward(a):
        model.rng.bit_generator.state = state
        return layer.forward(a, training=True)

    y = forward(x)
    assert y.shape == (N,) + layer.output_shape
    assert y.dtype == np.float64
    g = np.random.default_rng(2).standard_normal(y.shape)
    forward(x)
    gx = layer.backward(g)
    assert gx.shape == x.shape
    num = numerical_gradient(lambda a: np.sum(forward(a) * g), x)
    assert_grad_close(num, gx)
    for pname, p in layer.params.items():
        analytic = layer.grads[pname].copy()

        def loss(a, p=p):
            saved = p.copy()
            p[...] = a
            try:
                return np.sum(forward(x) * g)
            finally:
                p[...] = saved

        assert_grad_close(numerical_gradient(loss, p), analytic)
    assert set(layer.grads) == set(layer.params)
    assert {k: v.shape for k, v in layer.params.items()} == \
        layer.param_shapes(layer.input_shape)


@pytest.mark.parametrize("name", sorted(L.LAYERS))
def test_weights_round_trip(name):
    model = _model(name)
    x = _x(model)
    y = model(x)
    weights = model.get_weights()
    model.set_weights(weights)
    assert model(x).tobytes() == y.tobytes()
    rng = np.random.default_rng(3)
    new = [rng.standard_normal(w.shape) for w in weights]
    model.set_weights(new)
    assert all(a.tobytes() == b.tobytes()
               for a, b in zip(model.get_weights(), new))


@pytest.mark.parametrize("name", sorted(L.LAYERS))
def test_config_round_trip(name):
    model = _model(name, seed=4)
    layer = model.layers[0]
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert type(again) is type(layer)
    clone = cnnkit.Sequential.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    x = _x(model)
    assert clone(x).tobytes() == model(x).tobytes()


@pytest.mark.parametrize("name", sorted(L.LAYERS))
def test_save_and_load_give_identical_outputs(name, tmp_path):
    model = _model(name, seed=5)
    path = tmp_path / "m.cnnkit"
    model.save(path)
    loaded = cnnkit.load_model(path)
    assert loaded.get_config() == model.get_config()
    x = _x(model)
    assert loaded(x).tobytes() == model(x).tobytes()


@pytest.mark.parametrize("name", sorted(L.LAYERS))
def test_pickle_gives_identical_outputs(name):
    model = _model(name, seed=6)
    copy = pickle.loads(pickle.dumps(model))
    x = _x(model)
    assert copy(x).tobytes() == model(x).tobytes()
    assert copy.get_config() == model.get_config()
    layer = pickle.loads(pickle.dumps(model.layers[0]))
    assert layer.get_config() == model.layers[0].get_config()
