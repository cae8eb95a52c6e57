"""cnnkit.sklearn.CNNClassifier: scikit-learn's estimator checks, and the
estimator on images, flat rows, strings, pipelines, pickles and warm starts."""
import doctest
import functools
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from helpers import require

sklearn = require("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_blobs  # noqa: E402
from sklearn.exceptions import (ConvergenceWarning,  # noqa: E402
                                NotFittedError)
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    parametrize_with_checks)

import cnnkit  # noqa: E402
import cnnkit.sklearn as cnnkit_sklearn  # noqa: E402
from cnnkit import layers  # noqa: E402
from cnnkit.sklearn import CNNClassifier  # noqa: E402
from cnnkit.transforms import (Compose, RandomCrop,  # noqa: E402
                               RandomHorizontalFlip)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The networks here are tiny: one OpenMP thread runs them fastest, and
    keeps the run time independent of the machine's load."""
    threadpoolctl = require("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        yield


def residual(input_shape, n_classes, width=8):
    """A small residual network for ``CNNClassifier(architecture=...)``:
    a convolution, one residual block, then the output layer.  Module
    level, so it pickles."""
    inp = cnnkit.Input(input_shape)
    x = layers.ReLU()(layers.Conv2D(width, 3, padding="same")(inp))
    y = layers.ReLU()(layers.Conv2D(width, 3, padding="same")(x))
    y = layers.Conv2D(width, 3, padding="same")(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    out = layers.Dense(n_classes)(layers.Flatten()(x))
    return cnnkit.Model(inp, out)


def chain(input_shape, n_classes):
    """The same kind of function returning a Sequential."""
    return cnnkit.Sequential(
        [layers.Conv2D(4, 3, padding="same"), layers.ReLU(),
         layers.Flatten(), layers.Dense(n_classes)], input_shape=input_shape)


# The augmented estimator runs the transforms' kernels and clones a
# transform parameter; its draws leave the checks' data (flat feature rows,
# which no real augmentation keeps meaningful) as they are.
@parametrize_with_checks([CNNClassifier(random_state=0),
                          CNNClassifier(architecture=residual,
                                        random_state=0),
                          CNNClassifier(augment=Compose(
                              [RandomCrop(padding=0),
                               RandomHorizontalFlip(0.0)]), random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _blobs(n=300, n_features=2, centers=3, seed=0):
    X, y = make_blobs(n_samples=n, n_features=n_features, centers=centers,
                      random_state=seed)
    return StandardScaler().fit_transform(X), y


def _bars(n=120, size=8, seed=0):
    """Images (n, 1, size, size) with a bright vertical bar whose position
    (one of 4) is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = rng.normal(0, 0.3, (n, 1, size, size))
    w = size // 4
    for i, c in enumerate(y):
        X[i, 0, :, w * c:w * (c + 1)] += 1.0
    return X, y


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_import_cnnkit_does_not_import_sklearn():
    code = ("import sys, cnnkit; "
            "assert not any(m == 'sklearn' or m.startswith('sklearn.') "
            "for m in sys.modules), 'sklearn imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples():
    result = doctest.testmod(cnnkit_sklearn, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_default_parameters():
    params = CNNClassifier().get_params()
    assert params == {
        "layers": None, "image_shape": None, "max_iter": 200,
        "batch_size": "auto", "optimizer": "adam", "learning_rate": 1e-3,
        "tol": 1e-4, "n_iter_no_change": 10, "shuffle": True,
        "random_state": None, "verbose": 0, "warm_start": False,
        "architecture": None, "label_smoothing": 0.0, "augment": None}


def test_label_smoothing_is_forwarded_to_fit():
    # with eps = 1 the target is uniform: the loss is at least its entropy,
    # log(n_classes); without smoothing the blobs are learnt below it
    X, y = _blobs()
    n = len(np.unique(y))
    plain = CNNClassifier(max_iter=30, learning_rate=1e-2,
                          random_state=0).fit(X, y)
    assert min(plain.loss_curve_) < np.log(n) - 0.1
    uniform = CNNClassifier(max_iter=5, learning_rate=1e-2, random_state=0,
                            label_smoothing=1.0).fit(X, y)
    assert min(uniform.loss_curve_) >= np.log(n) - 1e-6
    half = clone(uniform).set_params(label_smoothing=0.5)
    half.partial_fit(X, y, classes=np.unique(y))
    assert half.loss_ >= 0.5 * np.log(n) - 1e-6
    for bad in (-0.1, 1.5, "0.1", None, True, np.nan):
        with pytest.raises(ValueError, match="label_smoothing must be"):
            CNNClassifier(label_smoothing=bad, max_iter=1).fit(X, y)


def test_digits_flat_rows_with_image_shape():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    clf = CNNClassifier(image_shape=(1, 8, 8), max_iter=12,
                        learning_rate=1e-2, batch_size=64, random_state=0)
    clf.fit(X_train, y_train)
    assert clf.image_shape_ == (1, 8, 8)
    assert clf.n_features_in_ == 64
    assert clf.model_.input_shape == (1, 8, 8)
    assert clf.score(X_test, y_test) > 0.95


def test_two_feature_blobs():
    X, y = _blobs()
    clf = CNNClassifier(random_state=0).fit(X, y)
    assert clf.image_shape_ == (1, 1, 2)
    assert clf.score(X, y) > 0.83
    X, y = _blobs(n_features=1, centers=2, seed=1)
    clf = CNNClassifier(random_state=0).fit(X, y)
    assert clf.image_shape_ == (1, 1, 1)
    assert clf.score(X, y) > 0.83


def test_string_labels():
    X, y = _blobs(centers=3)
    names = np.array(["cat", "dog", "emu"])[y]
    clf = CNNClassifier(random_state=0, learning_rate=1e-2).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    pred = clf.predict(X)
    assert pred.dtype == names.dtype
    assert set(pred) <= {"cat", "dog", "emu"}
    assert np.mean(pred == names) > 0.83
    assert clf.predict_proba(X).shape == (300, 3)


@pytest.mark.parametrize("channels_axis", [True, False])
def test_image_inputs(channels_axis):
    X, y = _bars()
    if not channels_axis:
        X = X[:, 0]
    clf = CNNClassifier(max_iter=30, learning_rate=1e-2, random_state=0)
    clf.fit(X[:100], y[:100])
    assert clf.image_shape_ == (1, 8, 8)
    assert clf.n_features_in_ == 64
    assert clf.score(X[100:], y[100:]) > 0.9
    # every layout of the same images gives the same answer
    X3 = X.reshape(len(X), 8, 8)
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(proba, clf.predict_proba(X3))
    np.testing.assert_array_equal(proba, clf.predict_proba(X3[:, None]))
    np.testing.assert_array_equal(proba, clf.predict_proba(
        X3.reshape(len(X), 64)))


def test_multichannel_images_and_custom_layers():
    X, y = _bars(n=80)
    X = np.concatenate([X, -X], axis=1)                # (n, 2, 8, 8)
    spec = [layers.Conv2D(4, 3, padding=1),
            ("ReLU", {}),
            {"class_name": "MaxPool2D", "config": {"pool_size": 2}},
            "Flatten",
            ("Dense", {"units": 16}),
            "relu"]
    clf = CNNClassifier(layers=spec, max_iter=20, learning_rate=1e-2,
                        random_state=0)
    clf.fit(X, y)
    assert clf.image_shape_ == (2, 8, 8)
    types = [type(layer).__name__ for layer in clf.model_.layers]
    assert types == ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense",
                     "ReLU", "Dense"]
    assert clf.model_.output_shape == (4,)
    assert clf.model_.layers[0] is not spec[0]
    assert not spec[0].built                            # never mutated
    assert clf.score(X, y) > 0.9
    # a body without Flatten gets one before the output layer
    clf = CNNClassifier(layers=[layers.Conv2D(2, 3)], max_iter=2,
                        random_state=0).fit(X, y)
    assert [type(la).__name__ for la in clf.model_.layers] == [
        "Conv2D", "Flatten", "Dense"]


def test_bad_layers():
    X, y = _blobs(n=30)
    with pytest.raises(ValueError, match="unknown layer type 'Conv3D'"):
        CNNClassifier(layers=[("Conv3D", {})]).fit(X, y)
    with pytest.raises(TypeError, match=r"layers\[0\]"):
        CNNClassifier(layers=[3]).fit(X, y)
    with pytest.raises(ValueError, match="cannot take images of shape"):
        CNNClassifier(layers=[layers.Conv2D(2, 5)]).fit(X, y)


def test_pipeline_and_grid_search():
    X, y = _blobs(n=120)
    X = X * 10 + 3
    pipe = make_pipeline(StandardScaler(),
                         CNNClassifier(max_iter=20, random_state=0))
    search = GridSearchCV(pipe, {"cnnclassifier__learning_rate": [1e-4, 1e-2]},
                          cv=2)
    search.fit(X, y)
    assert search.best_params_ == {"cnnclassifier__learning_rate": 1e-2}
    assert search.score(X, y) > 0.83


def test_pipeline_reshapes_scaled_rows_to_images():
    X, y = _bars(n=60)
    flat = X.reshape(len(X), -1) * 5 + 2
    pipe = make_pipeline(StandardScaler(), CNNClassifier(
        image_shape=(8, 8), max_iter=20, learning_rate=1e-2, random_state=0))
    pipe.fit(flat, y)
    assert pipe[-1].image_shape_ == (1, 8, 8)
    assert pipe.score(flat, y) > 0.9


def test_pickle_round_trip():
    X, y = _blobs(n=60)
    clf = CNNClassifier(max_iter=5, random_state=0).fit(X, y)
    state = clf.__getstate__()
    assert "model_" not in state
    assert not any(isinstance(v, cnnkit.Sequential) for v in state.values())
    clone_ = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf.predict_proba(X),
                                  clone_.predict_proba(X))
    # the optimizer state and the generator travel too: training continues
    # identically on both
    clf.partial_fit(X, y)
    clone_.partial_fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X),
                                  clone_.predict_proba(X))
    # an unfitted estimator pickles as its parameters
    fresh = pickle.loads(pickle.dumps(CNNClassifier(max_iter=3)))
    assert fresh.get_params() == CNNClassifier(max_iter=3).get_params()


def test_warm_start_continues_training():
    X, y = _blobs(n=100)
    clf = CNNClassifier(max_iter=5, warm_start=True, random_state=0)
    clf.fit(X, y)
    first = clf.model_
    loss = clf.loss_
    clf.fit(X, y)
    assert clf.model_ is first
    assert clf.n_iter_ == 10
    assert len(clf.loss_curve_) == 10
    assert clf.loss_ < loss
    # without warm_start, fit starts anew and matches the first fit
    cold = CNNClassifier(max_iter=5, random_state=0).fit(X, y)
    cold_again = clone(cold).fit(X, y)
    np.testing.assert_array_equal(cold.predict_proba(X),
                                  cold_again.predict_proba(X))
    assert cold.n_iter_ == 5
    with pytest.raises(ValueError, match="not in classes_"):
        clf.fit(X, y + 10)


def test_partial_fit_continues_training():
    X, y = _blobs(n=100)
    clf = CNNClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=[0, 1, 2])
    assert clf.n_iter_ == 1
    for _ in range(4):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 5
    assert len(clf.loss_curve_) == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    # five epochs of partial_fit are five epochs of fit on the same data
    # (the first on a half, so compare two models trained the same way)
    a = CNNClassifier(random_state=0, shuffle=False)
    b = CNNClassifier(random_state=0, shuffle=False, max_iter=3)
    for _ in range(3):
        a.partial_fit(X, y, classes=np.unique(y))
    b.fit(X, y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X),
                               rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X, y + 3)
    with pytest.raises(ValueError, match="differs from classes_"):
        clf.partial_fit(X, y, classes=[0, 1])


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_schedule_goes_on_across_calls(how):
    X, y = _blobs(n=60)
    opt = cnnkit.optim.SGD(0.1, schedule=cnnkit.optim.StepLR(1, gamma=0.5))
    clf = CNNClassifier(optimizer=opt, learning_rate=None, max_iter=1,
                        warm_start=True, random_state=0)
    for _ in range(3):
        if how == "partial_fit":
            clf.partial_fit(X, y, classes=[0, 1, 2])
        else:
            clf.fit(X, y)
    assert clf.n_iter_ == 3
    assert clf.model_.optimizer.epoch == 2
    assert clf.model_.optimizer.current_lr() == 0.025
    # three epochs in one call follow the same schedule
    one = CNNClassifier(optimizer=opt, learning_rate=None, max_iter=3,
                        shuffle=False, random_state=0).fit(X, y)
    three = CNNClassifier(optimizer=opt, learning_rate=None, max_iter=1,
                          shuffle=False, warm_start=True, random_state=0)
    for _ in range(3):
        three.fit(X, y)
    np.testing.assert_array_equal(one.predict_proba(X),
                                  three.predict_proba(X))


def test_random_state_determinism():
    X, y = _blobs(n=100)
    p = [CNNClassifier(max_iter=10, random_state=s).fit(X, y).predict_proba(X)
         for s in (7, 7, 8)]
    np.testing.assert_array_equal(p[0], p[1])
    assert not np.array_equal(p[0], p[2])
    rs = np.random.RandomState(3)
    a = CNNClassifier(max_iter=10, random_state=rs).fit(X, y)
    b = CNNClassifier(max_iter=10, random_state=np.random.RandomState(3))
    np.testing.assert_array_equal(a.predict_proba(X),
                                  b.fit(X, y).predict_proba(X))


def test_dtypes_follow_the_input():
    X, y = _blobs(n=60)
    clf = CNNClassifier(max_iter=3, random_state=0)
    assert clf.fit(X, y).model_.dtype == np.float64
    assert clf.predict_proba(X).dtype == np.float64
    assert clf.fit(X.astype(np.float32), y).model_.dtype == np.float32
    assert clf.predict_proba(X).dtype == np.float32
    assert clf.fit((X * 10).astype(int), y).model_.dtype == np.float64


def test_convergence_warning_says_what_the_loss_did():
    X, y = _blobs(n=100)
    clf = CNNClassifier(max_iter=3, learning_rate=1e-2, random_state=0)
    with pytest.warns(ConvergenceWarning) as caught:
        clf.fit(X, y)
    message = str(caught[0].message)
    c = clf.loss_curve_
    assert c[-1] < min(c[:-1]) - clf.tol          # still falling
    assert "max_iter=3 epochs ran out while the training loss was still " \
        "falling" in message
    assert ", ".join(f"{v:.4g}" for v in c) in message
    assert f"improved it by {min(c[:-1]) - c[-1]:.2g}, more than " \
        f"tol=0.0001" in message
    assert "(no improvement" not in message
    # a loss that stalls for fewer epochs than stop training
    clf = CNNClassifier(max_iter=6, tol=10.0, n_iter_no_change=10,
                        random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"max_iter=6 epochs ran "
                      r"out while the training loss had not improved by "
                      r"tol=10\.0 for 5 epochs \(last 3 epochs: .*\), fewer "
                      r"than the 11 in a row \(n_iter_no_change=10\)"):
        clf.fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"max_iter=1 epoch ran out "
                      r"while the training loss was [0-9.]+ after its first "
                      r"epoch"):
        CNNClassifier(max_iter=1, random_state=0).fit(X, y)


def test_the_readme_example_runs_without_warnings(capsys):
    from helpers import readme_python_block
    code = readme_python_block("## scikit-learn")
    assert "CNNClassifier" in code and "cross_val_score" in code
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(code, "README.md", "exec"), {})
    score = float(capsys.readouterr().out)
    assert score == pytest.approx(0.95, abs=0.015)    # "about 0.95"


def test_convergence():
    X, y = _blobs(n=100)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        CNNClassifier(max_iter=3, random_state=0).fit(X, y)
    clf = CNNClassifier(max_iter=500, tol=10.0, n_iter_no_change=2,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)
    # epoch 1 sets the best loss; epochs 2, 3 and 4 do not improve on it by
    # 10, and 3 such epochs are more than n_iter_no_change=2
    assert clf.n_iter_ == 4
    assert len(clf.loss_curve_) == 4
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_sample_weight_changes_training():
    X, y = _blobs(n=100, centers=2)
    w = np.where(y == 0, 1.0, 0.0)
    clf = CNNClassifier(max_iter=50, learning_rate=1e-2, random_state=0)
    assert (clf.fit(X, y, sample_weight=w).predict(X) == 0).all()
    with pytest.raises(ValueError, match="zero"):
        clf.fit(X, y, sample_weight=np.zeros(100))
    with pytest.raises(ValueError, match="non-negative"):
        clf.fit(X, y, sample_weight=-np.ones(100))
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        clf.fit(X, y, sample_weight=np.ones(99))


def test_single_class():
    X, y = _blobs(n=20)
    clf = CNNClassifier().fit(X, np.full(20, "only"))
    assert list(clf.predict(X)) == ["only"] * 20
    np.testing.assert_array_equal(clf.predict_proba(X), np.ones((20, 1)))


def test_image_shape_errors():
    X, y = _blobs(n=20)
    flat = np.zeros((20, 65))
    with pytest.raises(ValueError, match=r"image_shape=\(1, 8, 8\) holds 64 "
                       r"values per sample .* X has 65 features"):
        CNNClassifier(image_shape=(1, 8, 8)).fit(flat, y)
    with pytest.raises(ValueError, match=r"image_shape=\(8, 8\) does not "
                       r"match the images in X: expected samples of shape "
                       r"\(1, 8, 8\) or \(8, 8\), got X of shape \(n,\) \+ "
                       r"\(3, 8, 8\)"):
        CNNClassifier(image_shape=(8, 8)).fit(np.zeros((20, 3, 8, 8)), y)
    with pytest.raises(ValueError, match=r"image_shape must be None, \(H, W\)"
                       r" or \(C, H, W\)"):
        CNNClassifier(image_shape=(0, 8)).fit(np.zeros((20, 64)), y)
    with pytest.raises(ValueError, match="image_shape must be"):
        CNNClassifier(image_shape=8).fit(np.zeros((20, 64)), y)
    clf = CNNClassifier(max_iter=1).fit(np.zeros((20, 2, 4, 4)), y)
    with pytest.raises(ValueError, match=r"images of shape \(4, 4, 2\), but "
                       r"CNNClassifier was fitted on images of shape "
                       r"\(2, 4, 4\)"):
        clf.predict(np.zeros((3, 4, 4, 2)))
    with pytest.raises(ValueError, match="X has 31 features, but "
                       "CNNClassifier is expecting 32 features"):
        clf.predict(np.zeros((3, 31)))
    with pytest.raises(ValueError, match="5 axes"):
        clf.predict(np.zeros((3, 1, 2, 4, 4)))


def test_bad_hyperparameters():
    X, y = _blobs(n=20)
    for params, match in [({"max_iter": 0}, "max_iter"),
                          ({"batch_size": "big"}, "batch_size"),
                          ({"batch_size": 0}, "batch_size"),
                          ({"tol": -1.0}, "tol"),
                          ({"learning_rate": 0.0}, "learning_rate"),
                          ({"optimizer": "lbfgs"}, "optimizer"),
                          ({"shuffle": "yes"}, "shuffle"),
                          ({"layers": "Conv2D"}, "layers")]:
        with pytest.raises(ValueError, match=match):
            CNNClassifier(**params).fit(X, y)


def test_optimizer_instance_is_not_mutated():
    X, y = _blobs(n=60)
    opt = cnnkit.optim.SGD(0.05, momentum=0.9)
    clf = CNNClassifier(optimizer=opt, learning_rate=None, max_iter=3,
                        random_state=0).fit(X, y)
    assert opt.iterations == 0
    assert clf.model_.optimizer is not opt
    assert clf.model_.optimizer.lr == 0.05
    assert clf.model_.optimizer.iterations > 0
    clf = CNNClassifier(optimizer="sgd", learning_rate=0.2, max_iter=1,
                        random_state=0).fit(X, y)
    assert clf.model_.optimizer.lr == 0.2


def test_augment_trains_with_a_copy_and_clones():
    X, y = _bars()
    aug = Compose([RandomCrop(padding=1), RandomHorizontalFlip()])
    clf = CNNClassifier(augment=aug, max_iter=4, random_state=0).fit(X, y)
    assert clf.get_params()["augment"] is aug
    assert "_cache" not in vars(aug)                 # never run itself
    twin = clone(clf)
    assert twin.augment == aug and twin.augment is not aug
    assert np.array_equal(twin.fit(X, y).predict_proba(X),
                          clf.predict_proba(X))
    by_spec = CNNClassifier(augment="crop:1,flip", max_iter=4,
                            random_state=0).fit(X, y)
    assert np.array_equal(by_spec.predict_proba(X), clf.predict_proba(X))
    plain = CNNClassifier(max_iter=4, random_state=0).fit(X, y)
    assert not np.array_equal(plain.predict_proba(X), clf.predict_proba(X))
    assert pickle.loads(pickle.dumps(clf)).augment == aug


def test_bad_augment():
    X, y = _bars(n=20)
    for aug, exc, match in [
            ("blur", ValueError, "augment: augment step 'blur'"),
            (3, ValueError, "augment must be None, a cnnkit.transforms"),
            (RandomCrop(4), ValueError, "augment must keep the image shape"),
    ]:
        with pytest.raises(exc, match=match):
            CNNClassifier(augment=aug, max_iter=1).fit(X, y)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        CNNClassifier().predict(np.zeros((2, 3)))


# ----------------------------------------------------------------------
# architecture: a function that makes the whole network
# ----------------------------------------------------------------------
def test_architecture_trains_a_graph_model():
    X, y = _bars(n=120)
    clf = CNNClassifier(architecture=residual, max_iter=30,
                        learning_rate=1e-2, random_state=0)
    clf.fit(X[:100], y[:100])
    model = clf.model_
    assert type(model) is cnnkit.Model
    assert model.input_shape == clf.image_shape_ == (1, 8, 8)
    assert model.output_shape == (4,)
    assert "Add" in [type(layer).__name__ for layer in model.layers]
    assert clf.score(X[100:], y[100:]) > 0.9
    assert clf.predict_proba(X).shape == (120, 4)
    # flat rows with image_shape reach the function as (C, H, W)
    seen = []

    def recording(input_shape, n_classes):
        seen.append((input_shape, n_classes))
        return residual(input_shape, n_classes)

    CNNClassifier(architecture=recording, image_shape=(8, 8), max_iter=1,
                  random_state=0).fit(X.reshape(120, 64), y)
    assert seen == [((1, 8, 8), 4)]


def test_architecture_may_return_a_sequential():
    X, y = _bars(n=60)
    clf = CNNClassifier(architecture=chain, max_iter=5, random_state=0)
    clf.fit(X, y)
    assert type(clf.model_) is cnnkit.Sequential
    assert clf.model_.output_shape == (4,)
    again = pickle.loads(pickle.dumps(clf))
    assert type(again.model_) is cnnkit.Sequential
    np.testing.assert_array_equal(again.predict_proba(X),
                                  clf.predict_proba(X))


def test_architecture_is_seeded_by_random_state():
    X, y = _blobs(n=100)
    p = [CNNClassifier(architecture=residual, max_iter=5, random_state=s)
         .fit(X, y).predict_proba(X) for s in (7, 7, 8)]
    np.testing.assert_array_equal(p[0], p[1])
    assert not np.array_equal(p[0], p[2])
    # the seed the estimator draws is the model's, as with layers=
    a = CNNClassifier(architecture=residual, max_iter=1, random_state=7)
    b = CNNClassifier(layers=[], max_iter=1, random_state=7)
    assert a.fit(X, y).model_.seed == b.fit(X, y).model_.seed
    # the seed and weights the function gave its model are not used

    def seeded(input_shape, n_classes):
        model = residual(input_shape, n_classes)
        model.seed = 123
        model.set_weights([w + 1 for w in model.get_weights()])
        return model

    got = CNNClassifier(architecture=seeded, max_iter=5,
                        random_state=7).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(got, p[0])
    # a RandomState instance draws the same seed as its int
    rs = CNNClassifier(architecture=residual, max_iter=5,
                       random_state=np.random.RandomState(7))
    q = CNNClassifier(architecture=residual, max_iter=5,
                      random_state=np.random.RandomState(7))
    np.testing.assert_array_equal(rs.fit(X, y).predict_proba(X),
                                  q.fit(X, y).predict_proba(X))


def test_architecture_dtypes_follow_the_input():
    X, y = _blobs(n=60)

    def float32_model(input_shape, n_classes):
        inp = cnnkit.Input(input_shape)
        out = layers.Dense(n_classes)(layers.Flatten()(inp))
        return cnnkit.Model(inp, out, dtype="float32")

    for arch in (residual, float32_model):
        clf = CNNClassifier(architecture=arch, max_iter=2, random_state=0)
        assert clf.fit(X, y).model_.dtype == np.float64
        assert clf.predict_proba(X).dtype == np.float64
        assert clf.fit(X.astype(np.float32), y).model_.dtype == np.float32
        assert clf.predict_proba(X).dtype == np.float32
        assert clf.fit((X * 10).astype(int), y).model_.dtype == np.float64


def test_architecture_warm_start_and_partial_fit():
    X, y = _blobs(n=100)
    calls = []

    def counted(input_shape, n_classes):
        calls.append(1)
        return residual(input_shape, n_classes)

    clf = CNNClassifier(architecture=counted, max_iter=3, warm_start=True,
                        random_state=0)
    clf.fit(X, y)
    first = clf.model_
    clf.fit(X, y)
    assert clf.model_ is first and clf.n_iter_ == 6 and len(calls) == 1
    a = CNNClassifier(architecture=residual, shuffle=False, random_state=0)
    b = CNNClassifier(architecture=residual, shuffle=False, max_iter=3,
                      random_state=0)
    for _ in range(3):
        a.partial_fit(X, y, classes=np.unique(y))
    b.fit(X, y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X),
                               rtol=1e-12, atol=1e-15)
    # one class: the function is asked for one output
    one = CNNClassifier(architecture=residual).fit(X, np.zeros(100))
    assert one.model_.output_shape == (1,)
    np.testing.assert_array_equal(one.predict_proba(X), np.ones((100, 1)))


def test_architecture_params_clone_and_grid_search():
    wide = functools.partial(residual, width=12)
    clf = CNNClassifier(architecture=residual, max_iter=2)
    assert clf.get_params()["architecture"] is residual
    clf.set_params(architecture=wide)
    assert clf.architecture is wide
    copy = clone(clf)                 # a function is kept, a partial copied
    assert copy.architecture.func is residual
    assert copy.architecture.keywords == {"width": 12}
    assert clone(CNNClassifier(architecture=residual)).architecture is \
        residual
    X, y = _blobs(n=90)
    search = GridSearchCV(
        CNNClassifier(max_iter=10, learning_rate=1e-2, random_state=0),
        {"architecture": [residual, wide, chain]}, cv=2)
    search.fit(X, y)
    best = search.best_params_["architecture"]
    assert best in (residual, wide, chain)
    assert type(search.best_estimator_.architecture) is type(best)
    assert search.score(X, y) > 0.83


def test_architecture_pickles():
    X, y = _blobs(n=60)
    for arch in (residual, functools.partial(residual, width=4)):
        clf = CNNClassifier(architecture=arch, max_iter=3, random_state=0)
        clf.fit(X, y)
        state = clf.__getstate__()
        assert not any(isinstance(v, cnnkit.Model) for v in state.values())
        again = pickle.loads(pickle.dumps(clf))
        assert type(again.model_) is cnnkit.Model
        np.testing.assert_array_equal(clf.predict_proba(X),
                                      again.predict_proba(X))
        # the generator and the optimizer state travel: training goes on
        # identically
        clf.partial_fit(X, y)
        again.partial_fit(X, y)
        np.testing.assert_array_equal(clf.predict_proba(X),
                                      again.predict_proba(X))
        # the parameter comes back, so the copy refits to the same network
        np.testing.assert_array_equal(
            clone(again).fit(X, y).predict_proba(X),
            clone(clf).fit(X, y).predict_proba(X))
    # a lambda fits and clones, but pickle cannot store it
    lam = CNNClassifier(architecture=lambda s, n: residual(s, n),
                        max_iter=1).fit(X, y)
    clone(lam)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(lam)


def test_architecture_joblib_processes_equal_one_process(
        functions_by_value):
    X, y = _blobs(n=90)
    est = CNNClassifier(architecture=residual, max_iter=4, random_state=0)
    grid = {"learning_rate": [1e-3, 1e-2]}
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(X, y)
    parallel = GridSearchCV(est, grid, cv=2, n_jobs=2).fit(X, y)
    for key in ("split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(parallel.cv_results_[key],
                                      local.cv_results_[key])
    np.testing.assert_array_equal(parallel.predict_proba(X),
                                  local.predict_proba(X))


def test_architecture_errors():
    X, y = _blobs(n=30)
    with pytest.raises(ValueError, match=r"give layers or architecture, not "
                       r"both: architecture=residual"):
        CNNClassifier(layers=[], architecture=residual).fit(X, y)
    with pytest.raises(ValueError, match=r"architecture 'resnet' is not an "
                       r"architecture of cnnkit.models; expected one of "
                       r"lenet5, resnet20, .*, or a function"):
        CNNClassifier(architecture="resnet").fit(X, y)
    with pytest.raises(ValueError, match=r"architecture must be None, a name "
                       r"of cnnkit.models .* or a function .* got 5"):
        CNNClassifier(architecture=5).fit(X, y)
    shape = r"\(input_shape=\(1, 1, 2\), n_classes=3\)"
    with pytest.raises(ValueError, match=r"architecture \S*<lambda>" + shape +
                       r" returned NoneType None, not a cnnkit.Model"):
        CNNClassifier(architecture=lambda s, n: None).fit(X, y)
    with pytest.raises(ValueError, match=r"returned list \[\], not a "
                       r"cnnkit.Model"):
        CNNClassifier(architecture=lambda s, n: []).fit(X, y)
    with pytest.raises(ValueError, match=r"returned a Model whose input shape "
                       r"is \(1, 8, 8\), but the images are \(1, 1, 2\)"):
        CNNClassifier(architecture=lambda s, n: residual((1, 8, 8), n)).fit(
            X, y)
    with pytest.raises(ValueError, match=r"architecture _three_outputs\("
                       r"input_shape=\(1, 1, 2\), n_classes=2\) returned "
                       r"a Model whose output shape is \(3,\); it must "
                       r"output one logit per class, shape \(2,\)"):
        CNNClassifier(architecture=_three_outputs).fit(X, y % 2)
    with pytest.raises(ValueError, match="returned a Sequential without an "
                       "input shape"):
        CNNClassifier(architecture=lambda s, n: cnnkit.Sequential(
            [layers.Flatten(), layers.Dense(n)])).fit(X, y)
    # the network is rebuilt from its config: only cnnkit's layer types

    class Doubled(layers.ReLU):
        pass

    def custom(input_shape, n_classes):
        inp = cnnkit.Input(input_shape)
        out = layers.Dense(n_classes)(layers.Flatten()(Doubled()(inp)))
        return cnnkit.Model(inp, out)

    with pytest.raises(ValueError, match=r"returned a Model that cannot be "
                       r"rebuilt from its get_config\(\) .*unknown type "
                       r"'Doubled'"):
        CNNClassifier(architecture=custom).fit(X, y)


def _three_outputs(input_shape, n_classes):
    return residual(input_shape, 3)
