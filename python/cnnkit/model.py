"""Models: a graph of layers with shapes, weights and state.

:class:`Model` is what every model shares: the flat parameter and gradient
buffers (every parameter in one contiguous array, every gradient in
another, in PyTorch ``state_dict`` order; each layer's parameters are views
into them), the weights API (``get_weights``, ``state_dict``, ...),
prediction, evaluation, pickling, saving and the summary, and ``fit``,
which hands the model to :class:`cnnkit.trainer.Trainer`.  A subclass says
what the graph is and how it computes: :class:`Sequential` is a chain.

All randomness (initialisation, shuffling, dropout) comes from the model's
seeded :class:`numpy.random.Generator`.
"""
import json
import math

import numpy as np

from . import _context, _format, _ops, _summary
from . import distributed as dist
from . import optim
from . import trainer as _trainer
from ._checks import MAX_ELEMENTS, check_int, check_keys, is_int
from ._version import __version__
from .layers import LAYERS, Layer

__all__ = ["Model", "Sequential"]


class Model:
    """What every cnnkit model shares; subclasses define the graph.

    A subclass provides :attr:`layers` (every layer, in the order their
    parameters are stored), :meth:`_infer_shapes`, :meth:`forward`,
    :meth:`backward`, :attr:`input_layers`, :meth:`get_config` and
    :meth:`from_config`.

    Attributes
    ----------
    input_shape, output_shape : tuple of int or None
        Shapes of one sample, set when the model is built.
    built : bool
        Whether shapes and parameters exist.
    dtype : numpy.dtype
        float32 or float64.
    rng : numpy.random.Generator
        The seeded generator behind initialisation, shuffling and dropout.
    optimizer : cnnkit.optim.Optimizer or None
        The optimizer of the last :meth:`fit` (or of a loaded file).
    metadata : dict
        What :func:`cnnkit.load_model` read from the file's ``metadata``
        (written by ``save(path, metadata=...)``); empty for a new model.
    stop_training : bool
        Set by a callback to end :meth:`fit` after the current epoch.
    """

    def __init__(self, seed=None, dtype="float32"):
        name = type(self).__name__
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(
                f"{name}: dtype must be 'float32' or 'float64', got "
                f"{dtype!r}")
        if seed is not None and not is_int(seed):
            raise TypeError(f"{name}: seed must be an int or None, got "
                            f"{seed!r}")
        self.seed = None if seed is None else int(seed)
        self.dtype = dt
        self.rng = np.random.default_rng(self.seed)
        self.input_shape = None
        self.output_shape = None
        self.built = False
        self.optimizer = None
        self.metadata = {}
        self.stop_training = False
        self._flat_params = np.zeros(0, dtype=dt)
        self._flat_grads = np.zeros(0, dtype=dt)
        self._names = []

    # ------------------------------------------------------------------
    # building
    # ------------------------------------------------------------------
    def build(self, input_shape):
        """Infer every layer's shapes, allocate and initialise parameters.

        Called by the constructor when ``input_shape`` is given, otherwise
        on the first data the model sees.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one sample, ``(C, H, W)``, or ``(H, W)`` for one
            channel.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When a layer cannot take its input, naming the layer and the
            shapes.
        """
        shape, specs, out = self._infer_shapes(input_shape)
        total = sum(math.prod(s) for spec in specs for s in spec.values())
        self._flat_params = np.zeros(total, dtype=self.dtype)
        self._flat_grads = np.zeros(total, dtype=self.dtype)
        self._names = []
        off = 0
        for layer, (prefix, spec) in zip(self.layers, zip(
                self._param_prefixes(), specs)):
            params, grads = {}, {}
            for name, s in spec.items():
                size = math.prod(s)
                params[name] = self._flat_params[off:off + size].reshape(s)
                grads[name] = self._flat_grads[off:off + size].reshape(s)
                self._names.append((f"{prefix}.{name}", layer, name))
                off += size
            layer.bind(params, grads)
        for layer, before_relu in zip(self.layers, self._before_relu()):
            layer.initialize(self.rng, before_relu)
        self.input_shape, self.output_shape = shape, out
        self.built = True
        return self

    @staticmethod
    def _check_input_shape(input_shape, owner):
        shape = tuple(input_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if not shape or any(not is_int(d) or d < 1 for d in shape):
            raise ValueError(
                f"{owner}: input_shape must be positive ints, e.g. "
                f"(C, H, W); got {tuple(input_shape)}")
        return tuple(int(d) for d in shape)

    @staticmethod
    def _check_param_total(specs, owner):
        total = sum(math.prod(s) for spec in specs for s in spec.values())
        if total > MAX_ELEMENTS:
            raise ValueError(f"{owner}: {total} parameters are more than "
                             f"cnnkit supports (2**62)")

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}.{what}: the model is not built yet; "
                f"pass input_shape to {type(self).__name__} or call it on "
                f"data first")

    @property
    def flat_params(self):
        """Every parameter in one contiguous array (the layers' parameters
        are views into it), in :meth:`state_dict` order."""
        return self._flat_params

    @property
    def flat_grads(self):
        """Every gradient of the last backward pass in one contiguous array,
        laid out as :attr:`flat_params`."""
        return self._flat_grads

    def grad_offsets(self):
        """Per layer with parameters: ``(layer, {name: (offset, shape)})``,
        where its gradients lie in :attr:`flat_grads` (offsets in
        elements)."""
        out, off, by_layer = [], 0, {}
        for _, layer, name in self._names:
            shape = layer.grads[name].shape
            if layer not in by_layer:
                by_layer[layer] = {}
                out.append((layer, by_layer[layer]))
            by_layer[layer][name] = (off, shape)
            off += math.prod(shape)
        return out

    # ------------------------------------------------------------------
    # computing
    # ------------------------------------------------------------------
    def __call__(self, x, training=False):
        """Logits of x, after checking and converting it.

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
        training : bool, default False
            As in :meth:`forward`.

        Returns
        -------
        logits : ndarray of shape (n,) + output_shape
        """
        return self.forward(self._prepare_x(x, check_finite=False), training)

    def clear_caches(self):
        """Drop what the layers kept for a backward pass."""
        for layer in self.layers:
            layer.clear_cache()

    def _batched_logits(self, x, batch_size):
        _check_batch_size(batch_size)
        for i in range(0, x.shape[0], batch_size):
            yield i, self.forward(x[i:i + batch_size])

    def predict_proba(self, x, batch_size=256):
        """Class probabilities (softmax of the logits), shape (n, classes).

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
        batch_size : int, default 256
            Images per forward pass.

        Returns
        -------
        proba : ndarray of shape (n, classes), in the model's dtype
        """
        x = self._prepare_x(x)
        out = np.empty((x.shape[0],) + self.output_shape, dtype=self.dtype)
        for i, logits in self._batched_logits(x, batch_size):
            out[i:i + logits.shape[0]] = _ops.softmax(logits)
        return out

    def predict(self, x, batch_size=256):
        """Predicted class indices, shape (n,).

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
        batch_size : int, default 256
            Images per forward pass.

        Returns
        -------
        classes : ndarray of int64, shape (n,)
            The index of the largest logit of each image.
        """
        x = self._prepare_x(x)
        out = np.empty(x.shape[0], dtype=np.int64)
        for i, logits in self._batched_logits(x, batch_size):
            out[i:i + logits.shape[0]] = logits.argmax(axis=1)
        return out

    def evaluate(self, x, y, batch_size=256):
        """Mean softmax cross-entropy and accuracy on (x, y).

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
        y : array_like of int, shape (n,)
            Class indices.
        batch_size : int, default 256
            Images per forward pass.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``; the per-sample losses
            are added exactly, so the result does not depend on batching.
        """
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape[0])
        _check_batch_size(batch_size)
        return _trainer.evaluate(self, x, y, batch_size)

    # ------------------------------------------------------------------
    # data checks
    # ------------------------------------------------------------------
    def _prepare_x(self, x, name="x", check_finite=True):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be array-like ({exc})") from None
        if x.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must be a real numeric array, got dtype {x.dtype}")
        if self.built:
            expected = self.input_shape
            if x.ndim == len(expected) and expected[0] == 1 and \
                    x.shape[1:] == expected[1:]:
                x = x[:, None]            # (n, H, W) for one channel
            if x.shape[1:] != expected:
                raise ValueError(
                    f"{name} must have shape (n,) + {expected} (or (n, H, W) "
                    f"for one channel); got {x.shape}")
        else:
            if x.ndim == 3:
                x = x[:, None]
            if x.ndim < 2:
                raise ValueError(
                    f"{name} must have shape (n, C, H, W) or (n, H, W); got "
                    f"{x.shape}")
            self.build(x.shape[1:])
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {x.shape})")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if check_finite and not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(f"{name} contains {bad} NaN or infinite values")
        return x

    def _prepare_weights(self, sample_weight, n):
        if sample_weight is None:
            return None
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be real numbers, got dtype "
                            f"{sw.dtype}")
        if sw.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},) to match "
                             f"x; got {sw.shape}")
        sw = sw.astype(np.float64)
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise ValueError("sample_weight must be finite and >= 0")
        return sw

    def _prepare_y(self, y, n, name="y"):
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(
                f"{name} must hold integer class indices, got dtype "
                f"{y.dtype}")
        if y.shape != (n,):
            raise ValueError(
                f"{name} must have shape ({n},) to match x; got {y.shape}")
        classes = self.output_shape[-1]
        if y.size and (y.min() < 0 or y.max() >= classes):
            bad = y.min() if y.min() < 0 else y.max()
            raise ValueError(
                f"{name} must lie in [0, {classes}) for a model with "
                f"{classes} outputs; got {bad}")
        return y.astype(np.int64, copy=False)

    # ------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------
    def parameters(self):
        """The parameter arrays (views, updated in place), state order."""
        return [layer.params[name] for _, layer, name in self._names]

    def named_parameters(self):
        """``(name, array)`` pairs, names as PyTorch's ``state_dict``."""
        return [(key, layer.params[name]) for key, layer, name in self._names]

    def gradients(self):
        """The gradient arrays of the last backward pass, state order."""
        return [layer.grads[name] for _, layer, name in self._names]

    def count_params(self):
        """The number of parameters (numbers, not arrays), an int."""
        return int(self._flat_params.size)

    def get_weights(self):
        """Copies of the parameters, in PyTorch ``state_dict`` order and
        layouts (per layer: weight, then bias).

        Returns
        -------
        list of ndarray
        """
        self._require_built("get_weights")
        return [p.copy() for p in self.parameters()]

    def set_weights(self, weights):
        """Set the parameters from arrays in :meth:`get_weights` order.

        Arrays from PyTorch (``[t.detach().numpy() for t in
        module.state_dict().values()]``) load as they are.  Values are cast
        to the model's dtype; shapes must match exactly.

        Parameters
        ----------
        weights : sequence of array_like
            One array per parameter, in :meth:`get_weights` order.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A wrong number of arrays or a wrong shape, naming the parameter;
            nothing is changed.
        TypeError
            An array that is not real numbers.
        """
        self._require_built("set_weights")
        weights = list(weights)
        names = self.named_parameters()
        if len(weights) != len(names):
            raise ValueError(
                f"set_weights: the model has {len(names)} parameter arrays "
                f"({', '.join(n for n, _ in names)}); got {len(weights)}")
        checked = []
        for (name, p), w in zip(names, weights):
            w = np.asarray(w)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: {name} must be a real array, "
                                f"got dtype {w.dtype}")
            if w.shape != p.shape:
                raise ValueError(f"set_weights: {name} must have shape "
                                 f"{p.shape}, got {w.shape}")
            checked.append(w)
        for (_, p), w in zip(names, checked):
            p[...] = w
        return self

    def state_dict(self):
        """``{name: array copy}`` with PyTorch's ``nn.Sequential`` names
        (``"0.weight"``, ``"0.bias"``, ...)."""
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state, strict_dtype=False):
        """Set the parameters from a ``{name: array}`` mapping.

        Missing and unexpected names are errors; shapes must match; with
        ``strict_dtype`` the dtypes must equal the model's.

        Parameters
        ----------
        state : dict of str to array_like
            As returned by :meth:`state_dict` (or PyTorch's ``state_dict``,
            converted to NumPy).
        strict_dtype : bool, default False
            Refuse arrays of another dtype instead of converting them.

        Returns
        -------
        self
        """
        self._require_built("load_state_dict")
        names = [n for n, _ in self.named_parameters()]
        check_keys(names, state, "load_state_dict")
        if strict_dtype:
            for n in names:
                if np.asarray(state[n]).dtype != self.dtype:
                    raise ValueError(
                        f"load_state_dict: {n} has dtype "
                        f"{np.asarray(state[n]).dtype}, the model "
                        f"{self.dtype}")
        return self.set_weights([state[n] for n in names])

    # ------------------------------------------------------------------
    # description, pickling, saving
    # ------------------------------------------------------------------
    def summary(self, print_fn=None):
        """Print a table of the layers, their output shapes and parameter
        counts, with totals and sizes; returns the text.

        Parameters
        ----------
        print_fn : callable, optional
            Called with the text instead of :func:`print`.

        Returns
        -------
        str
        """
        self._require_built("summary")
        text = _summary.summary_text(self)
        (print_fn or print)(text)
        return text

    # -- pickling: plain NumPy state, rebuilt from the architecture --------
    def __getstate__(self):
        opt = None
        if self.optimizer is not None:
            opt = (self.optimizer.get_config(),
                   {k: np.array(v) for k, v in
                    self.optimizer.state_dict().items()})
        builtin = all(LAYERS.get(type(layer).__name__) is type(layer)
                      for layer in self.layers)
        return {"config": self.get_config(),
                # layers of other packages travel as objects
                "layers": None if builtin else self.layers,
                "params": self._flat_params.copy() if self.built else None,
                "rng": self.rng.bit_generator.state,
                "optimizer": opt,
                "metadata": self.metadata,
                "stop_training": self.stop_training}

    def __setstate__(self, state):
        config = state["config"]
        shape = config.get("input_shape")
        fresh = type(self)._from_state(state)
        self.__dict__.update(fresh.__dict__)
        if shape is not None:
            self.build(tuple(shape))
            self._flat_params[...] = state["params"]
        self.rng.bit_generator.state = state["rng"]
        if state["optimizer"] is not None:
            opt_config, opt_state = state["optimizer"]
            self.optimizer = optim.from_config(opt_config)
            self.optimizer.load_state_dict(opt_state)
        self.metadata = state.get("metadata", {})
        self.stop_training = state["stop_training"]

    def save(self, path, include_optimizer=True, metadata=None):
        """Write the architecture, the weights and (optionally) the optimizer
        state to one file, atomically; no pickle is involved.

        The file is safetensors-compatible: the tensors are named as in
        :meth:`state_dict`, the architecture is JSON in its metadata, with
        the version of cnnkit that wrote it and ``metadata``.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; an existing file is replaced.
        include_optimizer : bool, default True
            Also store the optimizer's configuration and state, so that
            training can resume from the file.
        metadata : dict, optional
            Anything to keep with the model, e.g. how it was trained: str
            keys, values that JSON represents (str, numbers, bool, None,
            lists and dicts of them). The loaded model has it as
            :attr:`metadata`. Only what is passed is written:
            ``save(path, metadata=model.metadata)`` keeps what the model
            was loaded with.

        Raises
        ------
        OSError
            If the file cannot be written; an existing file at ``path`` is
            then left as it was.
        TypeError, ValueError
            If ``metadata`` cannot be stored as JSON (the message says why).

        See Also
        --------
        load_model : read the file back.

        Examples
        --------
        >>> import os, tempfile
        >>> import cnnkit
        >>> from cnnkit import layers
        >>> model = cnnkit.Sequential([layers.Flatten(), layers.Dense(3)],
        ...                           input_shape=(1, 4, 4), seed=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.cnnkit")
        >>> model.save(path)
        >>> cnnkit.load_model(path).output_shape
        (3,)
        >>> model.save(path, metadata={"data": "digits", "seed": 1})
        >>> cnnkit.load_model(path).metadata
        {'data': 'digits', 'seed': 1}
        """
        self._require_built("save")
        tensors = self.state_dict()
        extra = {_format.VERSION_KEY: __version__}
        if metadata is not None:
            extra[_format.USER_METADATA_KEY] = _format.pack_user_metadata(
                metadata)
        if include_optimizer and self.optimizer is not None:
            extra["optimizer"] = json.dumps(self.optimizer.get_config())
            for k, v in self.optimizer.state_dict().items():
                tensors[f"optimizer.{k}"] = np.asarray(v)
        meta = _format.pack_metadata("model", self.get_config(), extra)
        _format.save_file(path, tensors, meta)

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None,
            validation_data=None, validation_split=0.0, shuffle=True,
            callbacks=(), verbose=1, sample_weight=None, initial_epoch=0,
            distributed=None):
        """Train on (x, y) with mini-batch gradient descent.

        Parameters
        ----------
        x : array_like of shape (n, C, H, W) or (n, H, W)
        y : array_like of int, shape (n,)
            Class indices in ``[0, classes)``.
        epochs : int, default 1
        batch_size : int, default 32
        optimizer : str or cnnkit.optim.Optimizer, optional
            ``"sgd"``, ``"adam"``, ``"adamw"`` or an instance.  By default
            the model's current optimizer (so a second ``fit`` resumes), or
            ``Adam(1e-3)`` the first time.
        validation_data : (x_val, y_val), optional
        validation_split : float, default 0
            Fraction of (x, y), taken from the end before shuffling, held out
            for validation (ignored when validation_data is given).
        shuffle : bool, default True
            Reshuffle the training samples every epoch (seeded).
        callbacks : sequence of cnnkit.callbacks.Callback
        verbose : {0, 1, 2}, default 1
            0 silent, 1 a progress bar per epoch (one line per epoch when the
            output is not a terminal), 2 one line per epoch.
        sample_weight : array_like of shape (n,), optional
            Non-negative per-sample weights: each batch minimises the
            weighted mean loss, and ``loss`` in the history is weighted.
        initial_epoch : int, default 0
            Epoch to start counting from, to resume a run (as in Keras):
            training runs epochs ``initial_epoch .. epochs - 1``, and
            learning-rate schedules see those epoch numbers.
        distributed : None, "mpi" or cnnkit.distributed.DataParallel
            Train data-parallel over the ranks of an MPI job (see
            :mod:`cnnkit.distributed`): every rank passes the same data,
            ``batch_size`` is the global batch, and each rank computes its
            share of it.  ``"mpi"`` is ``DataParallel()``, whose
            ``"ordered"`` reduction gives the same weights, bit for bit, as
            this method without ``distributed``.

        Returns
        -------
        History
            Per-epoch ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy``, ``lr``, ``seconds`` and ``images_per_s``.

        Raises
        ------
        FloatingPointError
            When the loss becomes NaN or infinite; the weights from before
            that batch are kept.

        Notes
        -----
        Ctrl-C stops training at the next batch boundary; the model stays
        usable and the returned history (``interrupted=True``) holds the
        completed epochs.

        Each batch's gradient is formed from the gradients of a fixed number
        of parts of the batch (8 contiguous runs of samples), added in a fixed
        pairwise order: the same arithmetic a data-parallel run performs, so
        a run over any number of ranks reproduces this one bit for bit.
        """
        check_int(epochs, "epochs", 0, type_error=ValueError)
        check_int(initial_epoch, "initial_epoch", 0, type_error=ValueError)
        check_int(batch_size, "batch_size", 1, type_error=ValueError)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        world, shards, reduction = dist.resolve(distributed)
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape[0])
        sw = self._prepare_weights(sample_weight, x.shape[0])
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or \
                    len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, "
                                 "y_val)")
            xv = self._prepare_x(validation_data[0], "validation x")
            yv = self._prepare_y(validation_data[1], xv.shape[0],
                                 "validation y")
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in [0, 1), got "
                                 f"{validation_split!r}")
            nv = int(math.floor(x.shape[0] * validation_split))
            if nv < 1 or nv >= x.shape[0]:
                raise ValueError(
                    f"validation_split={validation_split} of {x.shape[0]} "
                    f"samples leaves an empty training or validation set")
            x, xv = x[:-nv], x[-nv:]
            y, yv = y[:-nv], y[-nv:]
            sw = None if sw is None else sw[:-nv]
        else:
            xv = yv = None
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None \
                else optim.Adam(1e-3)
        self.optimizer = optim.get(optimizer)
        callbacks = _trainer.check_callbacks(callbacks)
        self._require_built("fit")
        if world.size > 1:
            _trainer.join(world, self, x, y, sw, xv, yv,
                          (epochs, initial_epoch, batch_size, bool(shuffle)))
        trainer = _trainer.Trainer(self, world, shards, reduction,
                                   strict=world is not dist.LOCAL)
        return trainer.fit(x, y, sw, xv, yv, initial_epoch, epochs,
                           batch_size, shuffle, callbacks, verbose)


class Sequential(Model):
    """A linear stack of layers with a Keras-style training API.

    Parameters
    ----------
    layers : sequence of Layer
        The layers, input first.
    input_shape : tuple of int, optional
        Shape of one sample, e.g. ``(1, 28, 28)``; ``(H, W)`` means one
        channel.  Without it the model is built on the first data it sees.
    seed : int, optional
        Seed of the generator behind initialisation, shuffling and dropout.
        The same seed and thread count give bit-identical training.
    dtype : {"float32", "float64"}, default "float32"
        Parameter and computation dtype; float64 for exact gradient checks.

    Attributes
    ----------
    layers : list of Layer
        The layers, input first.

    The other attributes (``input_shape``, ``output_shape``, ``built``,
    ``dtype``, ``rng``, ``optimizer``, ``stop_training``) are
    :class:`Model`'s.

    Examples
    --------
    >>> import cnnkit
    >>> from cnnkit import layers
    >>> model = cnnkit.Sequential([
    ...     layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
    ...     layers.Flatten(), layers.Dense(10)], input_shape=(1, 8, 8), seed=0)
    >>> model.output_shape
    (10,)
    """

    def __init__(self, layers=(), input_shape=None, seed=None,
                 dtype="float32"):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: layer {i} must be a cnnkit layer, got "
                    f"{type(layer).__name__}")
        if len(set(map(id, layers))) != len(layers):
            raise ValueError("Sequential: the same layer object appears "
                             "twice; create one instance per position")
        super().__init__(seed, dtype)
        self.layers = layers
        self._plan = self._plan_key = None
        if input_shape is not None:
            self.build(input_shape)

    @property
    def input_layers(self):
        """The layers that take the model's input (the first one)."""
        return (self.layers[0],) if self.layers else ()

    def _param_prefixes(self):
        """The state_dict prefix of each layer: its index, as PyTorch's
        ``nn.Sequential`` names them."""
        return [str(i) for i in range(len(self.layers))]

    def _before_relu(self):
        """Per layer: whether the next layer that is not transparent to
        initialisation (Dropout) is an element-wise ReLU."""
        out = []
        for i in range(len(self.layers)):
            nxt = next((lay for lay in self.layers[i + 1:]
                        if not lay.transparent), None)
            out.append(nxt is not None and nxt.elementwise == "relu")
        return out

    def _infer_shapes(self, input_shape):
        """Shape inference without allocating anything: the normalised
        input shape, each layer's parameter shapes and the output shape."""
        shape = self._check_input_shape(input_shape, "Sequential")
        if not self.layers:
            raise ValueError("Sequential: the model has no layers")
        specs, cur = [], shape
        for i, layer in enumerate(self.layers):
            try:
                out = layer.build(cur)
            except ValueError as exc:
                source = ("the model input" if i == 0 else
                          "the output of the previous layer")
                raise ValueError(
                    f"Sequential: layer {i} ({type(layer).__name__}) cannot "
                    f"take {source}, shape {cur}: {exc}") from None
            specs.append(layer.param_shapes(cur))
            cur = out
        self._check_param_total(specs, "Sequential")
        return shape, specs, cur

    def forward(self, x, training=False):
        """Logits for a batch, without checks or conversion.

        Parameters
        ----------
        x : ndarray of shape (n,) + input_shape
            In the model's dtype.
        training : bool or StepContext, default False
            Keep what :meth:`backward` needs and apply dropout (the trainer
            passes its step context).

        Returns
        -------
        logits : ndarray of shape (n,) + output_shape

        Notes
        -----
        A layer whose forward pass can apply the element-wise layer after
        it (a :class:`~cnnkit.layers.Conv2D` followed by a
        :class:`~cnnkit.layers.ReLU`) runs the two as one pass, with the
        same bits as the two layers one after the other; so does, in
        :meth:`backward`, a layer whose backward pass can also run the
        element-wise layer's before it (a ReLU followed by a
        :class:`~cnnkit.layers.MaxPool2D`).
        """
        ctx = _context.as_context(training)
        layers = self.layers
        for layer, (step, op) in zip(layers, self._fusion()[0]):
            if step is _PLAIN:
                x = layer.forward(x, ctx)
            elif step is _FUSED:
                x = layer.forward(x, ctx, epilogue=op)
            else:
                x = layer.fused_forward(x, ctx)
        return x

    def backward(self, grad, input_grad=True, ctx=None):
        """Backpropagate ``grad`` (d loss / d logits) through every layer of
        the last training forward pass; fills the gradients and returns d loss
        / d input.

        Parameters
        ----------
        grad : ndarray of shape (n,) + output_shape
            Gradient of the loss with respect to the logits of the last
            ``forward(x, training=True)``.
        input_grad : bool, default True
            Whether to compute the gradient with respect to the input
            (False lets the first layer skip that work).
        ctx : StepContext, optional
            The trainer's step context (it then decides, and
            ``input_grad`` is not read).

        Returns
        -------
        grad_x : ndarray of shape (n,) + input_shape, or None
            None when the input gradient is not computed.
        """
        if ctx is None:
            ctx = _context.StepContext(
                training=True,
                frozen_input=() if input_grad else self.input_layers)
        for layer, (step, op) in zip(reversed(self.layers),
                                     reversed(self._fusion()[1])):
            if step is _PLAIN:
                grad = layer.backward(grad, ctx)
            elif step is _FUSED:
                grad = layer.backward(grad, ctx, prologue=op)
            else:
                continue    # an element-wise layer the next one ran
            if grad is None:
                break
        return grad

    def _fusion(self):
        """The forward and backward plans of the layers (_fusion_plan),
        made again if the layers changed."""
        key = tuple(self.layers)
        if self._plan_key != key:
            self._plan, self._plan_key = _fusion_plan(self.layers), key
        return self._plan

    def get_config(self):
        """The architecture as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``{"input_shape": [...], "dtype": ..., "seed": ..., "layers":
            [{"class_name": ..., "config": {...}}, ...]}``.
        """
        return {
            "input_shape": list(self.input_shape) if self.built else None,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "layers": [{"class_name": type(layer).__name__,
                        "config": layer.get_config()}
                       for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config):
        """Rebuild a model from :meth:`get_config` output; only the layer
        types in :data:`cnnkit.layers.LAYERS` are accepted.

        Parameters
        ----------
        config : dict
            As returned by :meth:`get_config`.

        Returns
        -------
        Sequential
            A new model with freshly initialised weights.

        Raises
        ------
        ValueError
            An unknown layer type or a malformed config.
        """
        if not isinstance(config, dict) or not isinstance(
                config.get("layers"), list):
            raise ValueError("model config must be a dict with a 'layers' "
                             "list")
        layers = []
        for i, spec in enumerate(config["layers"]):
            if not isinstance(spec, dict):
                raise ValueError(f"model config: layer {i} is not a dict")
            name = spec.get("class_name")
            if name not in LAYERS:
                raise ValueError(
                    f"model config: layer {i} has unknown type {name!r}; "
                    f"known: {sorted(LAYERS)}")
            lcfg = spec.get("config", {})
            if not isinstance(lcfg, dict):
                raise ValueError(f"model config: layer {i} config is not a "
                                 f"dict")
            try:
                layers.append(LAYERS[name].from_config(lcfg))
            except TypeError as exc:
                raise ValueError(f"model config: layer {i} ({name}): "
                                 f"{exc}") from None
        shape = config.get("input_shape")
        return cls(layers, input_shape=None if shape is None else
                   tuple(shape), seed=config.get("seed"),
                   dtype=config.get("dtype", "float32"))

    @classmethod
    def _from_state(cls, state):
        """An unbuilt model of a pickled state's architecture."""
        config = state["config"]
        if state.get("layers") is not None:
            return cls(state["layers"], seed=config.get("seed"),
                       dtype=config.get("dtype", "float32"))
        return cls.from_config(dict(config, input_shape=None))

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential([{inner}])"


# How Sequential runs each layer: on its own; fused with the element-wise
# layer next to it (forward: its epilogue applies the next layer; backward:
# its pass also goes back through the layer before); or as that
# element-wise layer, whose work the other layer did.
_PLAIN, _FUSED, _ABSORBED = "plain", "fused", "absorbed"


def _fusion_plan(layers):
    """(forward plan, backward plan): a (step, op) pair per layer, from
    what the layers declare (elementwise, forward_epilogues,
    backward_prologues)."""
    n = len(layers)
    fwd, bwd = [(_PLAIN, None)] * n, [(_PLAIN, None)] * n
    for i in range(n - 1):
        a, b = layers[i], layers[i + 1]
        op = b.elementwise
        if op is not None and op in a.forward_epilogues and \
                fwd[i][0] is _PLAIN:
            fwd[i], fwd[i + 1] = (_FUSED, op), (_ABSORBED, op)
        op = a.elementwise
        if op is not None and op in b.backward_prologues and \
                bwd[i][0] is _PLAIN:
            bwd[i], bwd[i + 1] = (_ABSORBED, op), (_FUSED, op)
    return fwd, bwd


def _check_batch_size(batch_size):
    check_int(batch_size, "batch_size", 1, type_error=ValueError)
