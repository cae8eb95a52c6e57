"""The :class:`Sequential` model: a chain of layers trained end to end.

The model owns two flat, contiguous buffers, one holding every parameter and
one every gradient, in PyTorch ``state_dict`` order (per layer: weight, then
bias); each layer's parameters are views into them.  A training step is
forward, backward (the gradients are then complete: the one place where
data-parallel training would average them), then one optimizer update over
the whole flat buffer.  All randomness (initialisation, shuffling, dropout)
comes from the model's seeded :class:`numpy.random.Generator`.
"""
import json
import math
import os
import signal
import sys
import threading
import time
import zlib

import numpy as np

from . import _format
from . import distributed as _dist
from . import functional as F
from . import optim
from .callbacks import Callback, History
from .layers import LAYERS, Conv2D, Dropout, Layer, MaxPool2D, ReLU

__all__ = ["Sequential", "load_model"]


def _fmt_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0
    return f"{n:.2f} GB"  # pragma: no cover


class Sequential:
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
    stop_training : bool
        Set by a callback to end :meth:`fit` after the current epoch.

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
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(
                f"Sequential: dtype must be 'float32' or 'float64', got "
                f"{dtype!r}")
        if seed is not None and (isinstance(seed, bool) or
                                 not isinstance(seed, (int, np.integer))):
            raise TypeError(f"Sequential: seed must be an int or None, got "
                            f"{seed!r}")
        self.layers = layers
        self.seed = None if seed is None else int(seed)
        self.dtype = dt
        self.rng = np.random.default_rng(self.seed)
        self.input_shape = None
        self.output_shape = None
        self.built = False
        self.optimizer = None
        self.stop_training = False
        self._flat_params = np.zeros(0, dtype=dt)
        self._flat_grads = np.zeros(0, dtype=dt)
        self._names = []
        self._plan = self._plan_key = None
        if input_shape is not None:
            self.build(input_shape)

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
        self : Sequential

        Raises
        ------
        ValueError
            When a layer cannot take the previous layer's output, naming the
            layer and the shapes.
        """
        shape, specs, cur = self._infer_shapes(input_shape)
        total = sum(math.prod(s) for spec in specs for s in spec.values())
        self._flat_params = np.zeros(total, dtype=self.dtype)
        self._flat_grads = np.zeros(total, dtype=self.dtype)
        self._names = []
        off = 0
        for i, (layer, spec) in enumerate(zip(self.layers, specs)):
            params, grads = {}, {}
            for name, s in spec.items():
                size = math.prod(s)
                params[name] = self._flat_params[off:off + size].reshape(s)
                grads[name] = self._flat_grads[off:off + size].reshape(s)
                self._names.append((f"{i}.{name}", layer, name))
                off += size
            layer.bind(params, grads)
        for i, layer in enumerate(self.layers):
            nxt = next((lay for lay in self.layers[i + 1:]
                        if not isinstance(lay, Dropout)), None)
            layer.initialize(self.rng, isinstance(nxt, ReLU))
            if isinstance(layer, Dropout):
                layer.rng = self.rng
        self.input_shape, self.output_shape = shape, cur
        self.built = True
        return self

    def _infer_shapes(self, input_shape):
        """Shape inference without allocating anything: the normalised
        input shape, each layer's parameter shapes and the output shape."""
        shape = tuple(input_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if not shape or any(isinstance(d, bool) or
                            not isinstance(d, (int, np.integer)) or d < 1
                            for d in shape):
            raise ValueError(
                f"Sequential: input_shape must be positive ints, e.g. "
                f"(C, H, W); got {tuple(input_shape)}")
        shape = tuple(int(d) for d in shape)
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
        total = sum(math.prod(s) for spec in specs for s in spec.values())
        if total > 2 ** 62:
            raise ValueError(f"Sequential: {total} parameters are more than "
                             f"cnnkit supports (2**62)")
        return shape, specs, cur

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"Sequential.{what}: the model is not built yet; pass "
                f"input_shape to Sequential or call it on data first")

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
    # forward / backward
    # ------------------------------------------------------------------
    def forward(self, x, training=False):
        """Logits for a batch, without checks or conversion.

        Parameters
        ----------
        x : ndarray of shape (n,) + input_shape
            In the model's dtype.
        training : bool, default False
            Keep what :meth:`backward` needs and apply dropout.

        Returns
        -------
        logits : ndarray of shape (n,) + output_shape

        Notes
        -----
        A :class:`~cnnkit.layers.Conv2D` directly followed by a
        :class:`~cnnkit.layers.ReLU` runs as one pass (the ReLU applied in
        the convolution's epilogue), with the same bits as the two layers
        one after the other; so does, in :meth:`backward`, a ReLU directly
        followed by a :class:`~cnnkit.layers.MaxPool2D`.
        """
        layers = self.layers
        for layer, step in zip(layers, self._fusion(layers)[0]):
            if step == _PLAIN:
                x = layer.forward(x, training)
            elif step == _WITH_RELU:
                x = layer.forward(x, training, relu=True)
            else:
                x = layer.folded(x, training)
        return x

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

    def backward(self, grad, input_grad=True):
        """Backpropagate ``grad`` (d loss / d logits) through every layer of
        the last training forward pass; fills the gradients and returns d loss
        / d input (None with ``input_grad=False``, which lets the first layer
        skip that work).

        Parameters
        ----------
        grad : ndarray of shape (n,) + output_shape
            Gradient of the loss with respect to the logits of the last
            ``forward(x, training=True)``.
        input_grad : bool, default True
            Whether to compute the gradient with respect to the input.

        Returns
        -------
        grad_x : ndarray of shape (n,) + input_shape, or None
            None when ``input_grad`` is false.
        """
        layers = self.layers
        first = layers[0]
        first.input_grad = bool(input_grad)
        try:
            for layer, step in zip(reversed(layers),
                                   reversed(self._fusion(layers)[1])):
                if step == _PLAIN:
                    grad = layer.backward(grad)
                elif step == _WITH_RELU:
                    grad = layer.backward(grad, relu=True)
                else:
                    continue    # the ReLU the next layer's pass went through
                if grad is None:
                    break
        finally:
            first.input_grad = True
        return grad if input_grad else None

    def _fusion(self, layers):
        """The forward and backward plans of the layers (_fusion_plan),
        made again if the layers changed."""
        key = tuple(layers)
        if self._plan_key != key:
            self._plan, self._plan_key = _fusion_plan(layers), key
        return self._plan

    def _clear_caches(self):
        for layer in self.layers:
            layer.clear_cache()
            layer.buffers = None

    def _batched_logits(self, x, batch_size):
        _check_batch_size(batch_size)
        for i in range(0, x.shape[0], batch_size):
            yield i, self.forward(x[i:i + batch_size], training=False)

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
            out[i:i + logits.shape[0]] = F.softmax(logits)
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
            ``{"loss": float, "accuracy": float}``
        """
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape[0])
        return self._evaluate(x, y, batch_size)

    def _evaluate(self, x, y, batch_size, world=_dist._LOCAL):
        # The per-sample losses are added exactly (math.fsum), so the result
        # does not depend on batching or on how ranks split the data.
        _check_batch_size(batch_size)
        total, correct = _dist._sharded_losses(self, x, y, batch_size, world)
        n = x.shape[0]
        return {"loss": total / n, "accuracy": correct / n}

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
        self : Sequential

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
        self : Sequential
        """
        self._require_built("load_state_dict")
        names = [n for n, _ in self.named_parameters()]
        missing = [n for n in names if n not in state]
        unexpected = [n for n in state if n not in names]
        if missing or unexpected:
            raise ValueError(
                f"load_state_dict: missing {missing or 'none'}, unexpected "
                f"{unexpected or 'none'}")
        if strict_dtype:
            for n in names:
                if np.asarray(state[n]).dtype != self.dtype:
                    raise ValueError(
                        f"load_state_dict: {n} has dtype "
                        f"{np.asarray(state[n]).dtype}, the model "
                        f"{self.dtype}")
        return self.set_weights([state[n] for n in names])

    # ------------------------------------------------------------------
    # description
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
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for i, layer in enumerate(self.layers):
            rows.append((f"{type(layer).__name__.lower()}_{i} "
                         f"({type(layer).__name__})",
                         str((None,) + tuple(layer.output_shape)),
                         f"{layer.count_params:,}"))
        w0 = max(len(r[0]) for r in rows) + 2
        w1 = max(len(r[1]) for r in rows) + 2
        w2 = max(len(r[2]) for r in rows)
        width = w0 + w1 + w2
        itemsize = self.dtype.itemsize
        total = self.count_params()
        lines = [f'Model: "Sequential" (input {(None,) + self.input_shape}, '
                 f'{self.dtype.name})', "=" * width]
        for j, r in enumerate(rows):
            lines.append(f"{r[0]:<{w0}}{r[1]:<{w1}}{r[2]:>{w2}}")
            if j == 0:
                lines.append("=" * width)
        lines += ["=" * width,
                  f"Total params: {total:,} ({_fmt_bytes(total * itemsize)})",
                  f"Trainable params: {total:,} "
                  f"({_fmt_bytes(total * itemsize)})",
                  "Non-trainable params: 0 (0 B)", "=" * width]
        text = "\n".join(lines)
        (print_fn or print)(text)
        return text

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
                "stop_training": self.stop_training}

    def __setstate__(self, state):
        config = state["config"]
        shape = config.get("input_shape")
        if state.get("layers") is not None:
            fresh = type(self)(state["layers"], seed=config.get("seed"),
                               dtype=config.get("dtype", "float32"))
        else:
            fresh = type(self).from_config(dict(config, input_shape=None))
        self.__dict__.update(fresh.__dict__)
        if shape is not None:
            self.build(tuple(shape))
            self._flat_params[...] = state["params"]
        self.rng.bit_generator.state = state["rng"]
        if state["optimizer"] is not None:
            opt_config, opt_state = state["optimizer"]
            self.optimizer = optim.from_config(opt_config)
            self.optimizer.load_state_dict(opt_state)
        self.stop_training = state["stop_training"]

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential([{inner}])"

    # ------------------------------------------------------------------
    # saving
    # ------------------------------------------------------------------
    def save(self, path, include_optimizer=True):
        """Write the architecture, the weights and (optionally) the optimizer
        state to one file, atomically; no pickle is involved.

        The file is safetensors-compatible: the tensors are named as in
        :meth:`state_dict`, the architecture is JSON in its metadata.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; an existing file is replaced.
        include_optimizer : bool, default True
            Also store the optimizer's configuration and state, so that
            training can resume from the file.

        Raises
        ------
        OSError
            If the file cannot be written; an existing file at ``path`` is
            then left as it was.

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
        """
        self._require_built("save")
        tensors = self.state_dict()
        extra = {}
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
        _check_pos_int(epochs, "epochs", minimum=0)
        _check_pos_int(initial_epoch, "initial_epoch", minimum=0)
        _check_pos_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        world, shards, reduction = _dist._resolve(distributed)
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
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be cnnkit Callback "
                                f"instances, got {type(cb).__name__}")
        self._require_built("fit")
        if world.size > 1:
            self._join(world, x, y, sw, xv, yv,
                       (epochs, initial_epoch, batch_size, bool(shuffle)))
        engine = _dist._Engine(self, world, shards, reduction,
                               strict=world is not _dist._LOCAL)
        history = History()
        cbs = [history] + callbacks
        for cb in cbs:
            cb.set_model(self)
        return _Trainer(self, cbs, history, verbose, engine).run(
            x, y, sw, xv, yv, initial_epoch, epochs, batch_size, shuffle)

    def _join(self, world, x, y, sw, xv, yv, schedule):
        """Start of a data-parallel fit: check that every rank has the same
        model, data, fit arguments and optimizer state, then take rank 0's
        weights and random state."""
        def digest(a):
            return None if a is None else (
                a.shape, a.dtype.str,
                zlib.crc32(np.ascontiguousarray(a).view(np.uint8)))
        opt = self.optimizer
        _dist._check_same(world, "fit arguments (epochs, initial_epoch, "
                          "batch_size, shuffle)", schedule)
        _dist._check_same(world, "optimizers (config, state checksums)", (
            json.dumps(opt.get_config(), sort_keys=True),
            sorted((k, digest(np.asarray(v)))
                   for k, v in opt.state_dict().items())))
        config = self.get_config()
        config.pop("seed")
        _dist._check_same(world, "models", (json.dumps(config),
                                            self._flat_params.size))
        _dist._check_same(world, "training data (shape, dtype, checksum)",
                          (digest(x), digest(y), digest(sw), digest(xv),
                           digest(yv)))
        world.bcast_array(self._flat_params)
        self.rng.bit_generator.state = world.bcast(
            self.rng.bit_generator.state)


# How Sequential runs each layer: on its own; together with a ReLU next to
# it (forward: a Conv2D with the next layer's ReLU in its epilogue;
# backward: a MaxPool2D whose pass also goes back through the ReLU before
# it); or as that ReLU, whose work the other layer did.
_PLAIN, _WITH_RELU, _FOLDED = 0, 1, 2


def _fusion_plan(layers):
    """(forward plan, backward plan): a step code per layer."""
    fwd, bwd = [_PLAIN] * len(layers), [_PLAIN] * len(layers)
    for i in range(len(layers) - 1):
        if type(layers[i]) is Conv2D and type(layers[i + 1]) is ReLU:
            fwd[i], fwd[i + 1] = _WITH_RELU, _FOLDED
        if type(layers[i]) is ReLU and type(layers[i + 1]) is MaxPool2D:
            bwd[i], bwd[i + 1] = _FOLDED, _WITH_RELU
    return fwd, bwd


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got "
                         f"{batch_size!r}")


def _check_pos_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or \
            v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")


class _Trainer:
    """The fit loop: batching, shuffling, steps, callbacks, progress and
    interruption."""

    def __init__(self, model, callbacks, history, verbose, engine):
        self.model = model
        self.callbacks = callbacks
        self.history = history
        self.engine = engine
        self.world = engine.world
        # Only rank 0 of a data-parallel run reports progress.
        self.verbose = verbose if self.world.rank == 0 else 0
        self.interrupt = False

    # -- Ctrl-C at batch boundaries ---------------------------------------
    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self.interrupt:            # a second Ctrl-C: stop right away
                raise KeyboardInterrupt
            self.interrupt = True

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:                 # pragma: no cover
            return None

    def _progress(self, epoch, epochs, nbatches):
        if self.verbose != 1:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:                # pragma: no cover
            return None
        notebook = any(c.__module__.startswith("tqdm.notebook")
                       for c in tqdm.__mro__)
        if not notebook and not sys.stderr.isatty():
            return None                    # logs get one line per epoch
        return tqdm(total=nbatches, desc=f"Epoch {epoch + 1}/{epochs}",
                    unit="batch", leave=True, dynamic_ncols=True)

    def _line(self, epoch, epochs, logs):
        parts = [f"Epoch {epoch + 1}/{epochs}", f"{logs['seconds']:.2f}s",
                 f"{logs['images_per_s']:.0f} img/s",
                 f"loss: {logs['loss']:.4f}",
                 f"accuracy: {logs['accuracy']:.4f}"]
        if "val_loss" in logs:
            parts += [f"val_loss: {logs['val_loss']:.4f}",
                      f"val_accuracy: {logs['val_accuracy']:.4f}"]
        print(" - ".join(parts), flush=True)

    def run(self, x, y, sw, xv, yv, initial_epoch, epochs, batch_size,
            shuffle):
        model, opt = self.model, self.model.optimizer
        n = x.shape[0]
        nbatches = -(-n // batch_size)
        model.stop_training = False
        model._rank = self.world.rank
        for cb in self.callbacks:
            cb.on_train_begin({})
        # Under MPI, Ctrl-C ends the job (ranks could not agree on the batch
        # to stop at).
        old_handler = (self._install_sigint() if self.world.size == 1
                       else None)
        try:
            # the layers keep their outputs and gradients between steps
            for layer in model.layers:
                layer.buffers = {}
            for epoch in range(initial_epoch, epochs):
                if self._epoch(epoch, epochs, x, y, sw, xv, yv, n, nbatches,
                               batch_size, shuffle, opt):
                    break
                if model.stop_training:
                    break
        finally:
            model._clear_caches()
            model._rank = 0
            model._exchange_seconds = self.engine.exchange_seconds
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        for cb in self.callbacks:
            cb.on_train_end({})
        return self.history

    def _epoch(self, epoch, epochs, x, y, sw, xv, yv, n, nbatches,
               batch_size, shuffle, opt):
        """One epoch; returns True when training was interrupted."""
        model = self.model
        if hasattr(opt, "set_epoch"):
            opt.set_epoch(epoch)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})
        order = model.rng.permutation(n) if shuffle else None
        bar = self._progress(epoch, epochs, nbatches)
        t0 = time.perf_counter()
        seen, loss_sum, weight_sum, correct = 0, 0.0, 0.0, 0
        last_post = t0
        try:
            for b in range(nbatches):
                if self.interrupt:
                    self.history.interrupted = True
                    if self.verbose:
                        print(f"\nTraining interrupted at epoch {epoch + 1}, "
                              f"batch {b + 1}; the model keeps the weights "
                              f"of the last completed batch.",
                              file=sys.stderr, flush=True)
                    return True
                lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
                idx = slice(lo, hi) if order is None else order[lo:hi]
                total, hits, bw = self.engine.step(x, y, sw, idx)
                loss = total / bw if bw > 0 else 0.0
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss} at epoch {epoch + 1}, batch "
                        f"{b + 1}; training stopped and the weights from "
                        f"before this batch are kept (try a smaller learning "
                        f"rate)")
                opt.step(model._flat_params, model._flat_grads)
                m = hi - lo
                seen += m
                loss_sum += total
                weight_sum += bw
                correct += hits
                for cb in self.callbacks[1:]:
                    cb.on_batch_end(b, {"loss": loss, "size": m})
                if bar is not None:
                    bar.update(1)
                    now = time.perf_counter()
                    if now - last_post > 0.2:
                        last_post = now
                        bar.set_postfix(
                            loss=f"{loss_sum / max(weight_sum, 1e-300):.4f}",
                            acc=f"{correct / seen:.4f}",
                            img_s=f"{seen / max(now - t0, 1e-9):.0f}",
                            refresh=False)
            seconds = time.perf_counter() - t0
            logs = {"loss": loss_sum / weight_sum if weight_sum > 0 else 0.0,
                    "accuracy": correct / seen}
            if xv is not None:
                v = model._evaluate(xv, yv, max(batch_size, 256), self.world)
                logs["val_loss"] = v["loss"]
                logs["val_accuracy"] = v["accuracy"]
            logs["lr"] = float(opt.current_lr()) if hasattr(
                opt, "current_lr") else float("nan")
            # Every rank reports rank 0's time, so histories are equal.
            seconds = self.world.bcast(seconds)
            logs["seconds"] = seconds
            logs["images_per_s"] = seen / max(seconds, 1e-9)
            if bar is not None:
                post = {"loss": f"{logs['loss']:.4f}",
                        "acc": f"{logs['accuracy']:.4f}",
                        "img_s": f"{logs['images_per_s']:.0f}"}
                if xv is not None:
                    post["val_loss"] = f"{logs['val_loss']:.4f}"
                    post["val_acc"] = f"{logs['val_accuracy']:.4f}"
                bar.set_postfix(post, refresh=True)
        finally:
            if bar is not None:
                bar.close()
        if self.verbose == 2 or (self.verbose == 1 and bar is None):
            self._line(epoch, epochs, logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)
        return False


def load_model(path):
    """Load a model written by :meth:`Sequential.save`, or an ONNX file
    (a path ending in ``.onnx``, read by :func:`cnnkit.onnx.load`).

    The file's format version is checked (a newer one is refused by name),
    layers are built only from the known layer types, and every tensor's
    name, shape and dtype is checked against the architecture before the
    model is returned; a damaged or foreign file raises ValueError.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`Sequential.save`, or an ONNX model.

    Returns
    -------
    Sequential
        The model, built, with its weights and, when the file holds one, its
        optimizer (``model.optimizer``) with the saved state.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, truncated, not a cnnkit model file, from a
        newer cnnkit, or names a layer type outside
        :data:`cnnkit.layers.LAYERS`; the message names the file and the
        problem.
    ImportError
        For an ``.onnx`` path when the onnx package is not installed
        (``pip install "cnnkit[onnx]"``).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import cnnkit
    >>> from cnnkit import datasets, layers
    >>> x, y = datasets.load_digits()
    >>> model = cnnkit.Sequential([layers.Flatten(), layers.Dense(10)],
    ...                           input_shape=(1, 8, 8), seed=0)
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "digits.cnnkit")
    >>> model.save(path)
    >>> same = cnnkit.load_model(path)
    >>> bool(np.array_equal(same.predict(x), model.predict(x)))
    True
    """
    if os.fsdecode(os.fspath(path)).lower().endswith(".onnx") and \
            not _format.looks_like_file(path):
        from . import onnx as _onnx
        return _onnx.load(path)
    tensors, meta = _format.load_file(path)
    config = _format.unpack_metadata(meta, "model", source=path)
    where = os.fspath(path)
    weights = {k: v for k, v in tensors.items()
               if not k.startswith("optimizer.")}
    opt_state = {k[len("optimizer."):]: v for k, v in tensors.items()
                 if k.startswith("optimizer.")}
    try:
        if not isinstance(config, dict):
            raise ValueError("the architecture is not a JSON object")
        input_shape = config.get("input_shape")
        if input_shape is None:
            raise ValueError("the saved model has no input shape")
        model = Sequential.from_config(dict(config, input_shape=None))
        # Check the file's tensors against the architecture before anything
        # is allocated, so a small file cannot ask for a huge model.
        _, specs, _ = model._infer_shapes(tuple(input_shape))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{where}: invalid model architecture: {exc}") \
            from None
    expected = {f"{i}.{name}": tuple(shape)
                for i, spec in enumerate(specs) for name, shape in spec.items()}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{where}: weights do not match the architecture: missing "
            f"{missing or 'none'}, unexpected {unexpected or 'none'}")
    for name, shape in expected.items():
        arr = weights[name]
        if arr.shape != shape or arr.dtype != model.dtype:
            raise ValueError(
                f"{where}: weights do not match the architecture: {name} is "
                f"{arr.dtype}{list(arr.shape)}, the architecture needs "
                f"{model.dtype}{list(shape)}")
    model.build(tuple(input_shape))
    model.load_state_dict(weights, strict_dtype=True)
    if "optimizer" in meta:
        try:
            opt = optim.from_config(json.loads(meta["optimizer"]))
            opt.load_state_dict(opt_state)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{where}: invalid optimizer state: {exc}") \
                from None
        model.optimizer = opt
    elif opt_state:
        raise ValueError(f"{where}: optimizer tensors without an optimizer "
                         f"config: {sorted(opt_state)}")
    return model
