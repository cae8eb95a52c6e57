"""A scikit-learn classifier over cnnkit's models.

:class:`CNNClassifier` trains a small convolutional network with cnnkit's
kernels and behaves as a scikit-learn estimator: ``fit``/``predict``/
``predict_proba``/``score``, ``get_params``/``set_params``, ``classes_`` of
any labels, ``partial_fit`` and ``warm_start``, pickling, ``Pipeline`` and
``GridSearchCV``.  It passes scikit-learn's own estimator checks
(:func:`sklearn.utils.estimator_checks.parametrize_with_checks`).

scikit-learn is an optional dependency of cnnkit: it is imported by this
module only, never by ``import cnnkit``.
"""
import copy
import numbers
import warnings

import numpy as np

try:
    import sklearn  # noqa: F401
except ImportError as exc:                      # pragma: no cover
    raise ImportError(
        f"cnnkit.sklearn needs scikit-learn, which is not installed: "
        f"pip install scikit-learn ({exc})") from exc
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils.multiclass import (check_classification_targets,
                                      unique_labels)
from sklearn.utils.validation import check_is_fitted

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6
    def _validate_data(estimator, X="no_validation", y="no_validation",
                       **kwargs):
        return estimator._validate_data(X, y, **kwargs)

from . import models, optim, transforms
from ._checks import is_int
from .callbacks import Callback
from .layers import LAYERS, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU
from .model import Model, Sequential

__all__ = ["CNNClassifier"]

_FLOATS = (np.float64, np.float32)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(
        value, (bool, np.bool_))


def _ndim(X):
    """The number of axes of X without converting it, or None when unknown
    (then scikit-learn's validation reports what is wrong)."""
    ndim = getattr(X, "ndim", None)
    if ndim is not None:
        return int(ndim)
    if isinstance(X, (list, tuple)):
        try:
            return int(np.ndim(X))
        except (TypeError, ValueError):
            return None
    return None


def _check_image_shape(image_shape):
    """``image_shape`` as a (C, H, W) tuple of ints, or None."""
    if image_shape is None:
        return None
    msg = (f"image_shape must be None, (H, W) or (C, H, W) with positive "
           f"ints; got {image_shape!r}")
    if isinstance(image_shape, (str, bytes)):
        raise ValueError(msg)
    try:
        shape = tuple(image_shape)
    except TypeError:
        raise ValueError(msg) from None
    if len(shape) not in (2, 3) or not all(
            is_int(d) and d >= 1 for d in shape):
        raise ValueError(msg)
    shape = tuple(int(d) for d in shape)
    return (1,) + shape if len(shape) == 2 else shape


def _default_layers(image_shape):
    """The default network body for images of shape (C, H, W).

    Two blocks of 'same' convolution (3 wide along an axis longer than 1,
    else 1), ReLU and 2 x 2 max pooling along the axes that are at least 2
    long, so no axis shrinks below 1: a (1, 1, d) input becomes a 1-D
    convolutional network, a (1, 1, 1) input a two-layer perceptron.
    """
    _, h, w = image_shape
    body = []
    for filters in (16, 32):
        kernel = (3 if h > 1 else 1, 3 if w > 1 else 1)
        body += [Conv2D(filters, kernel, padding="same"), ReLU()]
        pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
        if pool != (1, 1):
            body.append(MaxPool2D(pool))
            h, w = h // pool[0], w // pool[1]
    return body


def _layer_from_spec(spec, index):
    """A new, unbuilt layer from one entry of the ``layers`` parameter."""
    where = f"layers[{index}]"
    if isinstance(spec, Layer):
        try:
            return type(spec).from_config(spec.get_config())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: cannot copy {spec!r}: {exc}") \
                from None
    if isinstance(spec, str):
        name, config = spec, {}
    elif isinstance(spec, dict):
        name, config = spec.get("class_name"), spec.get("config", {})
    elif isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 2 and \
            isinstance(spec[0], str):
        name = spec[0]
        config = spec[1] if len(spec) == 2 else {}
    else:
        raise TypeError(
            f"{where} must be a cnnkit layer, a layer name, a (name, config) "
            f"pair or a {{'class_name': ..., 'config': ...}} dict; got "
            f"{spec!r}")
    if name not in LAYERS:
        known = {k.lower(): k for k in LAYERS}
        if isinstance(name, str) and name.lower() in known:
            name = known[name.lower()]
        else:
            raise ValueError(f"{where}: unknown layer type {name!r}; known: "
                             f"{sorted(LAYERS)}")
    if not isinstance(config, dict):
        raise TypeError(f"{where}: the config of {name} must be a dict, got "
                        f"{config!r}")
    try:
        return LAYERS[name].from_config(dict(config))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({name}): {exc}") from None


def _model_from_config(config):
    """A new model from ``get_config()`` output: a :class:`~cnnkit.Model`
    for a graph's config, else a :class:`~cnnkit.Sequential`."""
    cls = Model if config.get("class_name") == "Model" else Sequential
    return cls.from_config(config)


def _function_name(fn):
    """How messages name the ``architecture`` function."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else repr(fn)


def _count(n, noun):
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


class _Plateau(Callback):
    """Stops training when the epoch's training loss has not improved by
    ``tol`` for more than ``patience`` epochs in a row (MLPClassifier's
    rule); records the losses.

    It also numbers the epochs from ``first_epoch`` for the optimizer's
    learning-rate schedule, so that a schedule goes on across calls to
    ``partial_fit`` and warm-started ``fit`` (``Sequential.fit`` counts
    every call's epochs from 0).
    """

    def __init__(self, tol, patience, first_epoch=0):
        super().__init__()
        self.tol = tol
        self.patience = patience
        self.first_epoch = first_epoch
        self.best = np.inf
        self.count = 0
        self.losses = []
        self.converged = False

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if self.first_epoch and hasattr(opt, "set_epoch"):
            opt.set_epoch(self.first_epoch + epoch)

    def on_epoch_end(self, epoch, logs=None):
        loss = float(logs["loss"])
        self.losses.append(loss)
        if loss > self.best - self.tol:
            self.count += 1
        else:
            self.count = 0
        if loss < self.best:
            self.best = loss
        if self.count > self.patience:
            self.converged = True
            self.model.stop_training = True


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Convolutional-network classifier on cnnkit's CPU kernels.

    The network is the body given by ``layers`` (by default two blocks of
    convolution, ReLU and max pooling sized to the images), then a
    :class:`~cnnkit.layers.Flatten` layer when the body's output is not a
    vector, then a :class:`~cnnkit.layers.Dense` output layer with one unit
    per class; or the whole network, made by the ``architecture`` function
    (any graph of the functional API, such as a residual network).  It is
    trained with softmax cross-entropy (the weighted mean with
    ``sample_weight``) by mini-batch gradient descent.

    Inputs ``X`` may be images ``(n, C, H, W)``, one-channel images
    ``(n, H, W)``, or flat rows ``(n, d)`` that ``image_shape`` reshapes to
    images; flat rows without ``image_shape`` are 1 x d one-channel images,
    i.e. shape ``(1, 1, d)``.  float32 input is computed in float32, all
    other input in float64.

    Parameters
    ----------
    layers : sequence or None, default=None
        The network body, input first; the output layer is added.  Each
        entry is a cnnkit layer (copied through its config, never built or
        changed), a layer name such as ``"ReLU"``, a pair such as
        ``("Conv2D", {"filters": 8, "kernel_size": 3})``, or a dict in
        ``get_config`` form, ``{"class_name": "Conv2D", "config": {...}}``.
        None: the default body (see above); it never shrinks an axis below
        1, so any image shape works.  Give ``layers`` or ``architecture``,
        not both (a ValueError).
    architecture : str, callable or None, default=None
        The name of an architecture of :mod:`cnnkit.models` (``"lenet5"``,
        ``"resnet20"``, ``"mobilenet"``, ...), made for the images' shape
        and the classes; or a function ``architecture(input_shape, n_classes)`` that returns
        the whole network as a :class:`cnnkit.Model` (or
        :class:`cnnkit.Sequential`) built on ``cnnkit.Input(input_shape)``,
        ``input_shape`` being the ``(C, H, W)`` of one image, with
        ``n_classes`` outputs, the logits (no softmax).  It is called on
        every new network (each :meth:`fit` without warm start, the first
        :meth:`partial_fit`), and the network is rebuilt from the returned
        model's ``get_config()`` with the seed drawn from ``random_state``
        and the dtype of ``X``: the seed, dtype and weights the function
        gave its model are not used, so its layers must be types of
        :data:`cnnkit.layers.LAYERS`.  A model of any other input or output
        shape is a ValueError that names it.  A module-level function (or a
        :func:`functools.partial` of one) pickles with the estimator; a
        lambda or a function defined inside another does not pickle with
        :mod:`pickle`, though joblib's and Dask's workers, which use
        cloudpickle, take it.
    image_shape : tuple of int or None, default=None
        Shape ``(C, H, W)`` or ``(H, W)`` of one image, used to reshape flat
        ``(n, C*H*W)`` input (a scaler in a :class:`~sklearn.pipeline.Pipeline`
        passes flat rows).  Image-shaped input must match it.  None: the
        shape of the input, ``(1, 1, d)`` for flat rows.
    max_iter : int, default=200
        Maximum number of epochs (passes over the training data) per call to
        :meth:`fit`.
    batch_size : int or "auto", default="auto"
        Mini-batch size; "auto" is ``min(200, n_samples)``.  Larger values
        are clipped to the number of samples.
    optimizer : {"adam", "adamw", "sgd"} or cnnkit.optim.Optimizer, \
default="adam"
        The optimizer; an instance is copied through its config, never
        changed.
    learning_rate : float or None, default=0.001
        The optimizer's learning rate.  None keeps the optimizer's own:
        that of an instance, or the default of a named optimizer.
    tol : float, default=1e-4
        Training stops when the training loss has not improved by at least
        ``tol`` for more than ``n_iter_no_change`` consecutive epochs.
    n_iter_no_change : int, default=10
        Number of epochs without ``tol`` improvement tolerated.
    shuffle : bool, default=True
        Whether to reshuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the network: its initial weights, the shuffling and dropout.
        An int gives identical results on every run.
    verbose : int, default=0
        0 is silent; otherwise one line per epoch is printed.
    warm_start : bool, default=False
        When True, :meth:`fit` continues training the network of the
        previous call instead of starting anew.
    label_smoothing : float, default=0.0
        Train on the label-smoothed cross-entropy, targets ``(1 - eps)``
        one-hot ``+ eps / n_classes`` (PyTorch's ``label_smoothing``, see
        :meth:`cnnkit.Model.fit`); ``loss_``, ``loss_curve_`` and the
        ``tol`` rule then see that loss.  In ``[0, 1]``.
    augment : cnnkit.transforms.Transform, str or None, default=None
        Data augmentation of the training batches (never of the data
        :meth:`predict` or :meth:`score` see): a transform that keeps the
        image shape (a copy is used; the transform is never changed), or a
        spec in the command line's syntax (:func:`cnnkit.transforms.parse`),
        such as ``"crop:1,flip"``.  The draws follow ``random_state``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_features_in_ : int
        Number of values per sample, ``C * H * W``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names, when ``X`` was a DataFrame with string column names.
    image_shape_ : tuple of int
        The ``(C, H, W)`` shape of one image as the network sees it.
    model_ : cnnkit.Model
        The trained network; its outputs are the logits of ``classes_``.
        A :class:`cnnkit.Sequential` unless ``architecture`` returned a
        graph model.
    n_iter_ : int
        Number of epochs run, summed over the calls to :meth:`fit` (with
        ``warm_start``) and :meth:`partial_fit` since the network was made.
    loss_ : float
        The training loss of the last epoch.
    best_loss_ : float
        The lowest training loss of the last call to :meth:`fit`.
    loss_curve_ : list of float
        The training loss of every epoch run.

    See Also
    --------
    cnnkit.Model : the model being trained (a graph of layers).
    cnnkit.Sequential : a chain of layers, the model of ``layers``.
    sklearn.neural_network.MLPClassifier : the fully connected counterpart.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from cnnkit.sklearn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X[:300] / 16.0
    >>> y = y[:300]
    >>> clf = CNNClassifier(image_shape=(8, 8), max_iter=10,
    ...                     learning_rate=1e-2, random_state=0)
    >>> clf.fit(X, y).image_shape_
    (1, 8, 8)
    >>> clf.predict(X[:3])
    array([0, 1, 2])
    >>> clf.predict_proba(X[:1]).shape
    (1, 10)

    Any graph of the functional API, here with a skip connection:

    >>> import cnnkit
    >>> from cnnkit import layers
    >>> def residual(input_shape, n_classes):
    ...     inp = cnnkit.Input(input_shape)
    ...     x = layers.ReLU()(layers.Conv2D(8, 3, padding="same")(inp))
    ...     y = layers.Conv2D(8, 3, padding="same")(x)
    ...     x = layers.ReLU()(layers.Add()([x, y]))
    ...     return cnnkit.Model(inp, layers.Dense(n_classes)(
    ...         layers.Flatten()(x)))
    >>> res = CNNClassifier(architecture=residual, image_shape=(8, 8),
    ...                     max_iter=10, learning_rate=1e-2, random_state=0)
    >>> res.fit(X, y).model_.output_shape
    (10,)
    >>> res.score(X, y) > 0.9
    True
    """

    def __init__(self, layers=None, image_shape=None, max_iter=200,
                 batch_size="auto", optimizer="adam", learning_rate=1e-3,
                 tol=1e-4, n_iter_no_change=10, shuffle=True,
                 random_state=None, verbose=0, warm_start=False,
                 architecture=None, label_smoothing=0.0, augment=None):
        self.layers = layers
        self.augment = augment
        self.architecture = architecture
        self.image_shape = image_shape
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.label_smoothing = label_smoothing

    # ------------------------------------------------------------------
    # tags
    # ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.poor_score = False
        tags.non_deterministic = False
        return tags

    def _more_tags(self):
        return {"3darray": True, "poor_score": False,
                "non_deterministic": False}

    # ------------------------------------------------------------------
    # hyperparameters
    # ------------------------------------------------------------------
    def _check_params(self):
        name = type(self).__name__
        if not is_int(self.max_iter) or self.max_iter < 1:
            raise ValueError(f"{name}: max_iter must be an int >= 1, got "
                             f"{self.max_iter!r}")
        if not (self.batch_size == "auto" if isinstance(self.batch_size, str)
                else is_int(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"{name}: batch_size must be 'auto' or an int "
                             f">= 1, got {self.batch_size!r}")
        if not _is_real(self.tol) or not self.tol >= 0:
            raise ValueError(f"{name}: tol must be a float >= 0, got "
                             f"{self.tol!r}")
        if not is_int(self.n_iter_no_change) or self.n_iter_no_change < 1:
            raise ValueError(f"{name}: n_iter_no_change must be an int >= 1, "
                             f"got {self.n_iter_no_change!r}")
        if not _is_real(self.label_smoothing) or \
                not 0 <= self.label_smoothing <= 1:
            raise ValueError(f"{name}: label_smoothing must be a float in "
                             f"[0, 1], got {self.label_smoothing!r}")
        if self.learning_rate is not None and (
                not _is_real(self.learning_rate)
                or not 0 < self.learning_rate < np.inf):
            raise ValueError(f"{name}: learning_rate must be a float > 0 or "
                             f"None, got {self.learning_rate!r}")
        for flag in ("shuffle", "warm_start"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"{name}: {flag} must be True or False, got "
                                 f"{getattr(self, flag)!r}")
        if not (isinstance(self.verbose, (bool, np.bool_)) or
                is_int(self.verbose) and self.verbose >= 0):
            raise ValueError(f"{name}: verbose must be an int >= 0, got "
                             f"{self.verbose!r}")
        if self.layers is not None and not isinstance(self.layers,
                                                      (list, tuple)):
            raise ValueError(f"{name}: layers must be None or a list of "
                             f"layer specs, got {self.layers!r}")
        if isinstance(self.architecture, str):
            try:
                models.resolve(self.architecture)
            except ValueError:
                raise ValueError(
                    f"{name}: architecture {self.architecture!r} is not an "
                    f"architecture of cnnkit.models; expected one of "
                    f"{', '.join(models.MODELS)}, resnet<6n+2>, or a "
                    f"function (input_shape, n_classes) -> "
                    f"cnnkit.Model") from None
        elif self.architecture is not None:
            if not callable(self.architecture):
                raise ValueError(
                    f"{name}: architecture must be None, a name of "
                    f"cnnkit.models (e.g. 'resnet20') or a function "
                    f"(input_shape, n_classes) -> cnnkit.Model, got "
                    f"{self.architecture!r}")
            if self.layers is not None:
                raise ValueError(
                    f"{name}: give layers or architecture, not both: "
                    f"architecture={_function_name(self.architecture)} "
                    f"makes the whole network, layers its body; set the "
                    f"other to None")
        self._make_optimizer()
        self._make_augment()
        _check_image_shape(self.image_shape)

    def _make_optimizer(self):
        opt = self.optimizer
        if isinstance(opt, optim.Optimizer):
            opt = optim.from_config(opt.get_config())
        elif isinstance(opt, str):
            try:
                opt = optim.get(opt)
            except ValueError as exc:
                raise ValueError(f"{type(self).__name__}: optimizer: {exc}") \
                    from None
        else:
            raise ValueError(
                f"{type(self).__name__}: optimizer must be 'adam', 'adamw', "
                f"'sgd' or a cnnkit.optim.Optimizer, got {opt!r}")
        if self.learning_rate is not None:
            opt.lr = float(self.learning_rate)
        return opt

    def _make_augment(self):
        """A copy of the ``augment`` transform (None without one)."""
        aug = self.augment
        if aug is None:
            return None
        try:
            if isinstance(aug, str):
                return transforms.parse(aug)
            if isinstance(aug, transforms.Transform):
                return copy.deepcopy(aug)
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: augment: {exc}") \
                from None
        raise ValueError(
            f"{type(self).__name__}: augment must be None, a "
            f"cnnkit.transforms transform or a spec such as 'crop:1,flip', "
            f"got {aug!r}")

    def _batch(self, n):
        return min(200 if self.batch_size == "auto" else self.batch_size, n)

    # ------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------
    def _validate_X(self, X, y=None, reset=False, with_y=False):
        """X validated as flat float rows (n, C*H*W), y validated, and the
        per-sample shape of image-shaped X (None for flat rows).

        Sets ``n_features_in_`` (and ``feature_names_in_``) when ``reset``,
        and checks them otherwise; image-shaped X must then match
        ``image_shape_``.
        """
        kwargs = dict(dtype=_FLOATS, reset=reset)
        ndim = _ndim(X)
        sample_shape = None
        if ndim is not None and ndim > 2:
            if ndim > 4:
                raise ValueError(
                    f"X must have shape (n, C, H, W), (n, H, W) or (n, "
                    f"features); got an array with {ndim} axes")
            X = check_array(X, allow_nd=True, dtype=_FLOATS,
                            estimator=self, input_name="X")
            sample_shape = X.shape[1:]
            if not reset:
                self._check_sample_shape(sample_shape)
            X = X.reshape(X.shape[0], -1)
        if with_y:
            X, y = _validate_data(self, X, y, **kwargs)
        else:
            X = _validate_data(self, X, **kwargs)
        return X, y, sample_shape

    def _check_sample_shape(self, sample_shape):
        c, h, w = self.image_shape_
        ok = (tuple(sample_shape) == self.image_shape_ or
              (c == 1 and tuple(sample_shape) == (h, w)))
        if not ok:
            raise ValueError(
                f"X has images of shape {tuple(sample_shape)}, but "
                f"{type(self).__name__} was fitted on images of shape "
                f"{self.image_shape_} (image_shape_); pass (n, C, H, W) = "
                f"(n, {c}, {h}, {w}) arrays, (n, H, W) for one channel, or "
                f"flat (n, {c * h * w}) rows")

    def _resolve_image_shape(self, n_features, sample_shape):
        """The (C, H, W) of the images from ``image_shape`` and the input."""
        given = _check_image_shape(self.image_shape)
        if sample_shape is not None:
            actual = tuple(sample_shape)
            actual3 = (1,) + actual if len(actual) == 2 else actual
            if given is not None and given != actual3:
                raise ValueError(
                    f"image_shape={self.image_shape!r} does not match the "
                    f"images in X: expected samples of shape {given}"
                    + (f" or {given[1:]}" if given[0] == 1 else "")
                    + f", got X of shape (n,) + {actual}")
            return actual3
        if given is None:
            return (1, 1, n_features)
        size = given[0] * given[1] * given[2]
        if size != n_features:
            raise ValueError(
                f"image_shape={self.image_shape!r} holds {size} values per "
                f"sample (C*H*W = {' * '.join(map(str, given))}), but X has "
                f"{n_features} features per sample")
        return given

    def _images(self, X):
        return X.reshape((X.shape[0],) + self.image_shape_)

    def _check_sample_weight(self, sample_weight, n):
        if sample_weight is None:
            return None
        if _is_real(sample_weight):
            sw = np.full(n, float(sample_weight))
        else:
            sw = check_array(sample_weight, ensure_2d=False, dtype=np.float64,
                             input_name="sample_weight", copy=False)
            if sw.ndim != 1 or sw.shape[0] != n:
                raise ValueError(
                    f"sample_weight must have shape ({n},) to match X; got "
                    f"{sw.shape}")
        if not np.isfinite(sw).all():
            raise ValueError("sample_weight must be finite")
        if (sw < 0).any():
            raise ValueError("sample_weight must be non-negative; got "
                             f"{int((sw < 0).sum())} negative weights")
        if not sw.any():
            raise ValueError("sample_weight is all zero: at least one weight "
                             "must be non-zero")
        return sw

    def _encode(self, y, classes=None):
        """Indices of y's labels in ``classes`` (default ``classes_``);
        unknown labels raise."""
        classes = self.classes_ if classes is None else classes
        try:
            idx = np.searchsorted(classes, y)
            idx = np.clip(idx, 0, len(classes) - 1)
            bad = classes[idx] != y
        except TypeError:
            bad = np.ones(len(y), dtype=bool)
            idx = None
        if np.any(bad):
            unknown = list(dict.fromkeys(np.asarray(y)[bad].tolist()))
            raise ValueError(
                f"y holds labels {unknown[:10]} that are not in classes_ "
                f"{classes.tolist()}")
        return idx.astype(np.int64)

    # ------------------------------------------------------------------
    # the network
    # ------------------------------------------------------------------
    def _build_model(self, image_shape, n_classes, dtype, seed):
        """A new network: the body, Flatten if needed, the output layer;
        or the architecture's model."""
        if self.architecture is not None:
            return self._build_architecture(image_shape, n_classes, dtype,
                                            seed)
        if self.layers is None:
            body = _default_layers(image_shape)
        else:
            body = [_layer_from_spec(s, i) for i, s in enumerate(self.layers)]
        needs_flatten = True
        if body:
            try:
                probe = Sequential(body, input_shape=image_shape, seed=0)
            except ValueError as exc:
                raise ValueError(f"layers cannot take images of shape "
                                 f"{image_shape}: {exc}") from None
            needs_flatten = len(probe.output_shape) != 1
        head = ([Flatten()] if needs_flatten else []) + [Dense(n_classes)]
        return Sequential(body + head, input_shape=image_shape, seed=seed,
                          dtype=dtype)

    def _build_architecture(self, image_shape, n_classes, dtype, seed):
        """The model ``architecture`` returns, checked, then rebuilt from its
        config with ``seed`` and ``dtype``: fresh weights drawn from the
        estimator's seed, whatever the function's model was given."""
        arch = self.architecture
        if isinstance(arch, str):
            fn = models.resolve(arch)
            return fn(input_shape=image_shape, num_classes=n_classes,
                      seed=seed, dtype=dtype)
        call = (f"{type(self).__name__}: architecture "
                f"{_function_name(arch)}(input_shape="
                f"{image_shape}, n_classes={n_classes})")
        model = arch(image_shape, n_classes)
        if not isinstance(model, Model):
            raise ValueError(
                f"{call} returned {type(model).__name__} {model!r:.200}, "
                f"not a cnnkit.Model; it must return the network, e.g. "
                f"cnnkit.Model(inp, logits) with inp = "
                f"cnnkit.Input(input_shape)")
        kind = type(model).__name__
        if model.input_shape is None:
            raise ValueError(
                f"{call} returned a {kind} without an input shape; build it "
                f"for the images, e.g. Sequential(layers, "
                f"input_shape=input_shape)")
        if tuple(model.input_shape) != tuple(image_shape):
            raise ValueError(
                f"{call} returned a {kind} whose input shape is "
                f"{tuple(model.input_shape)}, but the images are "
                f"{tuple(image_shape)}; build it on "
                f"cnnkit.Input(input_shape)")
        if tuple(model.output_shape) != (n_classes,):
            raise ValueError(
                f"{call} returned a {kind} whose output shape is "
                f"{tuple(model.output_shape)}; it must output one logit per "
                f"class, shape ({n_classes},)")
        config = dict(model.get_config(), seed=seed,
                      dtype=np.dtype(dtype).name)
        try:
            return _model_from_config(config)
        except ValueError as exc:
            raise ValueError(
                f"{call} returned a {kind} that cannot be rebuilt from its "
                f"get_config() (the estimator rebuilds it to seed it from "
                f"random_state and give it the dtype of X): {exc}") from None

    def _initialize(self, classes, image_shape, dtype):
        """Make a new network and reset what training records."""
        seed = int(check_random_state(self.random_state).randint(
            np.iinfo(np.int32).max))
        model = self._build_model(image_shape, len(classes), dtype, seed)
        model.optimizer = self._make_optimizer()
        self.classes_ = classes
        self.image_shape_ = image_shape
        self.model_ = model
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.loss_ = np.inf
        self.best_loss_ = np.inf

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def _train(self, X, y, sample_weight, epochs, patience_rule):
        """Run up to ``epochs`` epochs on the model; returns the plateau
        callback."""
        plateau = _Plateau(float(self.tol), int(self.n_iter_no_change),
                           first_epoch=self.n_iter_)
        if not patience_rule:
            plateau.patience = np.inf
        self.model_.fit(
            self._images(X), y, epochs=epochs,
            batch_size=self._batch(X.shape[0]),
            shuffle=bool(self.shuffle), verbose=2 if self.verbose else 0,
            callbacks=[plateau], sample_weight=sample_weight,
            label_smoothing=float(self.label_smoothing),
            augment=self._make_augment())
        return plateau

    def _record(self, losses):
        self.n_iter_ += len(losses)
        self.loss_curve_ = list(self.loss_curve_) + list(losses)
        if losses:
            self.loss_ = losses[-1]

    # ------------------------------------------------------------------
    # fitting
    # ------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train the network on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
(n_samples, n_features)
            Training images, or flat rows reshaped by ``image_shape``.
        y : array-like of shape (n_samples,)
            Class labels (ints, strings, ...).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: each mini-batch minimises the weighted mean
            loss.

        Returns
        -------
        self : CNNClassifier
            The fitted estimator.
        """
        self._check_params()
        warm = bool(self.warm_start) and hasattr(self, "model_")
        X, y, sample_shape = self._validate_X(X, y, reset=not warm,
                                              with_y=True)
        check_classification_targets(y)
        image_shape = self._resolve_image_shape(X.shape[1], sample_shape)
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        if warm:
            if image_shape != self.image_shape_:
                raise ValueError(
                    f"warm_start: X has images of shape {image_shape} but "
                    f"the network was trained on {self.image_shape_}")
            yi = self._encode(y)
        else:
            classes, yi = np.unique(y, return_inverse=True)
            yi = yi.astype(np.int64).reshape(-1)
            self._initialize(classes, image_shape, X.dtype)
        if len(self.classes_) == 1:
            self.loss_ = self.best_loss_ = 0.0
            return self
        plateau = self._train(X, yi, sw, int(self.max_iter), True)
        self._record(plateau.losses)
        self.best_loss_ = plateau.best
        if not plateau.converged and len(plateau.losses) == self.max_iter:
            warnings.warn(self._not_converged(plateau), ConvergenceWarning)
        return self

    def _not_converged(self, plateau):
        """The ConvergenceWarning's message: what the training loss was
        doing when max_iter ran out."""
        losses = plateau.losses
        tail = losses[-3:]
        last = (f"last {_count(len(tail), 'epoch')}: "
                f"{', '.join(f'{v:.4g}' for v in tail)}")
        if len(losses) == 1:
            state = f"was {losses[0]:.4g} after its first epoch"
        elif plateau.count == 0:
            gain = min(losses[:-1]) - losses[-1]
            state = (f"was still falling ({last}; the last one improved it "
                     f"by {gain:.2g}, more than tol={self.tol})")
        else:
            state = (f"had not improved by tol={self.tol} for "
                     f"{_count(plateau.count, 'epoch')} ({last}), fewer than "
                     f"the {plateau.patience + 1} in a row "
                     f"(n_iter_no_change={self.n_iter_no_change}) that end "
                     f"training")
        return (f"{type(self).__name__}: max_iter={self.max_iter} "
                f"{'epoch' if self.max_iter == 1 else 'epochs'} ran out "
                f"while the training loss {state}; raise max_iter to train "
                f"until it levels off, or ignore this warning.")

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train the network for one epoch on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
(n_samples, n_features)
            Training images, or flat rows reshaped by ``image_shape``.
        y : array-like of shape (n_samples,)
            Class labels, all in ``classes``.
        classes : array-like of shape (n_classes,), default=None
            Every class label; required on the first call, ignored (if
            equal) later.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights.

        Returns
        -------
        self : CNNClassifier
            The estimator, trained one more epoch.
        """
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to "
                             "partial_fit")
        if not first and classes is not None:
            if not np.array_equal(self.classes_, unique_labels(classes)):
                raise ValueError(
                    f"classes={unique_labels(classes).tolist()} differs from "
                    f"classes_={self.classes_.tolist()} of the previous call")
        self._check_params()
        X, y, sample_shape = self._validate_X(X, y, reset=first, with_y=True)
        check_classification_targets(y)
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        image_shape = self._resolve_image_shape(X.shape[1], sample_shape)
        if first:
            classes = unique_labels(classes)
            self._encode(y, classes)
            self._initialize(classes, image_shape, X.dtype)
        elif image_shape != self.image_shape_:
            raise ValueError(
                f"partial_fit: X has images of shape {image_shape} but "
                f"the network was trained on {self.image_shape_}")
        yi = self._encode(y)
        if len(self.classes_) == 1:
            self.loss_ = self.best_loss_ = 0.0
            return self
        plateau = self._train(X, yi, sw, 1, False)
        self._record(plateau.losses)
        self.best_loss_ = min(self.best_loss_, self.loss_)
        return self

    # ------------------------------------------------------------------
    # prediction
    # ------------------------------------------------------------------
    def _logit_input(self, X):
        X, _, _ = self._validate_X(X, reset=False)
        return self._images(X)

    def predict_proba(self, X):
        """Class probabilities, the softmax of the network's outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
(n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities of ``classes_``, in the network's dtype.
        """
        check_is_fitted(self)
        return self.model_.predict_proba(self._logit_input(X))

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
(n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
(n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``: the most probable class.
        """
        check_is_fitted(self)
        proba = self.model_.predict_proba(self._logit_input(X))
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
(n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        return super().score(X, y, sample_weight=sample_weight)

    # ------------------------------------------------------------------
    # pickling
    # ------------------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            state["_model_config"] = model.get_config()
            state["_model_weights"] = model.get_weights()
            state["_model_rng_state"] = model.rng.bit_generator.state
            if model.optimizer is not None:
                state["_optimizer_config"] = model.optimizer.get_config()
                state["_optimizer_state"] = model.optimizer.state_dict()
        return state

    def __setstate__(self, state):
        state = dict(state)
        config = state.pop("_model_config", None)
        weights = state.pop("_model_weights", None)
        rng_state = state.pop("_model_rng_state", None)
        opt_config = state.pop("_optimizer_config", None)
        opt_state = state.pop("_optimizer_state", None)
        if config is not None:
            model = _model_from_config(config)
            model.set_weights(weights)
            if rng_state is not None:
                model.rng.bit_generator.state = rng_state
            if opt_config is not None:
                opt = optim.from_config(opt_config)
                opt.load_state_dict({k: np.array(v) for k, v in
                                     opt_state.items()})
                model.optimizer = opt
            state["model_"] = model
        super().__setstate__(state)
