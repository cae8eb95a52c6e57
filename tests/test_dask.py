"""Models travel to Dask workers as plain state: grid search under joblib's
Dask backend and block-wise prediction give the local results.

Needs dask[distributed] and scikit-learn (in the ``test`` extra); with
CNNKIT_REQUIRE_EXTRAS=1 (set by CI) their absence is a failure instead of a
skip.
"""
import numpy as np
import pytest

import cnnkit
from cnnkit import layers

from helpers import require

require("sklearn")
from cnnkit.sklearn import CNNClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    require("dask")
    distributed = require("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        host="127.0.0.1", dashboard_address=None,
        worker_dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def digits():
    x, y = cnnkit.datasets.load_digits()
    return x[:240], y[:240]


def test_grid_search_on_dask_equals_one_process(client, digits):
    import joblib
    from sklearn.model_selection import GridSearchCV

    x, y = digits
    est = CNNClassifier(
        layers=[layers.Conv2D(4, 3, padding=1), layers.ReLU(),
                layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)],
        max_iter=3, random_state=0)
    grid = {"learning_rate": [1e-3, 1e-2], "batch_size": [16, 32]}
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(x, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(x, y)
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        assert np.array_equal(remote.cv_results_[key],
                              local.cv_results_[key]), key
    assert remote.best_params_ == local.best_params_
    # the refitted best model was trained on a worker and came back whole
    assert np.array_equal(remote.predict_proba(x), local.predict_proba(x))


def residual(input_shape, n_classes):
    """A residual network for ``CNNClassifier(architecture=...)``."""
    inp = cnnkit.Input(input_shape)
    x = layers.ReLU()(layers.Conv2D(4, 3, padding=1)(inp))
    y = layers.Conv2D(4, 3, padding=1)(
        layers.ReLU()(layers.Conv2D(4, 3, padding=1)(x)))
    x = layers.MaxPool2D(2)(layers.ReLU()(layers.Add()([x, y])))
    return cnnkit.Model(inp, layers.Dense(n_classes)(layers.Flatten()(x)))


def test_architecture_grid_search_on_dask_equals_one_process(
        client, digits, functions_by_value):
    import joblib
    from sklearn.model_selection import GridSearchCV

    x, y = digits
    est = CNNClassifier(architecture=residual, max_iter=3, random_state=0)
    grid = {"learning_rate": [1e-3, 1e-2], "random_state": [0, 1]}
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(x, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(x, y)
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        assert np.array_equal(remote.cv_results_[key],
                              local.cv_results_[key]), key
    # different seeds train different networks
    scores = local.cv_results_["split0_test_score"]
    assert scores[0] != scores[1] or scores[2] != scores[3]
    assert remote.best_params_ == local.best_params_
    assert type(remote.best_estimator_.model_) is cnnkit.Model
    assert np.array_equal(remote.predict_proba(x), local.predict_proba(x))


def test_map_blocks_prediction_equals_local(client, digits):
    import dask.array as da

    x, y = digits
    model = cnnkit.Sequential(
        [layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.Flatten(),
         layers.Dense(10)], input_shape=(1, 8, 8), seed=0)
    model.fit(x, y, epochs=2, verbose=0)
    xd = da.from_array(x, chunks=(50, 1, 8, 8))
    proba = da.map_blocks(model.predict_proba, xd, drop_axis=[2, 3],
                          chunks=(xd.chunks[0], (10,)), dtype=np.float32)
    got = client.compute(proba).result()
    assert np.array_equal(got, model.predict_proba(x))
