"""Layers: thin shells over :mod:`cnnkit.functional` that own parameters.

Each layer follows one lifecycle (Keras's): hyperparameters are validated in
``__init__``; ``build(input_shape, ...)`` computes the output shape and the
shapes of the parameters; the model then hands the layer views into its flat
parameter and gradient buffers and asks it to initialise them; ``forward``
caches what ``backward`` needs; ``backward`` writes the parameter gradients
(overwriting them) and returns the gradient with respect to the input.
While a model trains, each layer writes its outputs and gradients into
arrays it keeps between steps (:attr:`Layer.buffers`), so that a training
step allocates no arrays after the first one of its batch size.

Shapes exclude the batch axis: a Conv2D's ``input_shape`` is ``(C, H, W)``.
Layouts follow PyTorch, so ``Conv2D.params["weight"]`` is ``(K, C, R, S)`` and
``Dense.params["weight"]`` is ``(units, in_features)``.
"""
import math
import numbers

import numpy as np

from . import _kernels
from . import functional as F

__all__ = [
    "Layer", "Conv2D", "ReLU", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
    "Flatten", "Dense", "Dropout", "LAYERS",
]


def _check_int(value, name, cls, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Integral):
        raise TypeError(f"{cls}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{cls}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_pair(value, name, cls, minimum=1):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{cls}: {name} must be an int or a pair of ints, got "
                f"{value!r}")
        return tuple(_check_int(v, name, cls, minimum) for v in value)
    v = _check_int(value, name, cls, minimum)
    return (v, v)


class Layer:
    """Base class of all layers.

    Attributes
    ----------
    input_shape, output_shape : tuple of int or None
        Per-sample shapes, set by :meth:`build`.
    params, grads : dict of str to ndarray
        Parameters and their gradients (views into the model's flat
        buffers), in PyTorch ``state_dict`` order; empty for layers without
        parameters.
    built : bool
        Whether :meth:`build` has run.
    input_grad : bool
        Whether :meth:`backward` must return the gradient with respect to
        the input; the model sets it to False on its first layer during
        training, which lets that layer skip the work.
    buffers : dict or None
        None, or (while :meth:`Sequential.fit <cnnkit.Sequential.fit>`
        runs) the arrays that ``forward(x, training=True)`` and
        :meth:`backward` write and return instead of new ones, kept from
        one step to the next.  An array returned then is overwritten by the
        next step.
    """

    buffers = None

    def __init__(self):
        self.input_shape = None
        self.output_shape = None
        self.params = {}
        self.grads = {}
        self.built = False
        # False for the first layer of a model being trained: backward then
        # need not compute the gradient with respect to the input.
        self.input_grad = True
        # Set by the training loop to (bounds, parts): backward then writes
        # the parameter gradients of each run of samples [bounds[q],
        # bounds[q+1]) of the batch separately, into parts[name][q].
        self.shard_grads = None

    # -- lifecycle --------------------------------------------------------
    def compute_output_shape(self, input_shape):
        """Per-sample output shape for a per-sample ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one input sample, without the batch axis.

        Returns
        -------
        tuple of int

        Raises
        ------
        ValueError
            If the layer cannot take that input.
        """
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        """Shapes of the parameters for ``input_shape``, in order.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one input sample.

        Returns
        -------
        dict of str to tuple of int
            ``{"weight": shape, "bias": shape}`` for layers with
            parameters, in PyTorch ``state_dict`` order; empty otherwise.
        """
        return {}

    def build(self, input_shape):
        """Check ``input_shape`` and record the input and output shapes.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one input sample.

        Returns
        -------
        tuple of int
            The per-sample output shape.
        """
        input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = self.compute_output_shape(input_shape)
        self.input_shape = input_shape
        self.built = True
        return self.output_shape

    def bind(self, params, grads):
        """Attach parameter and gradient arrays (views the model owns).

        Parameters
        ----------
        params, grads : dict of str to ndarray
            Arrays of the shapes :meth:`param_shapes` asked for.
        """
        self.params = dict(params)
        self.grads = dict(grads)

    def initialize(self, rng, followed_by_relu):
        r"""Fill the parameters: He-normal weights before a ReLU, LeCun-normal
        otherwise, zero biases.

        Parameters
        ----------
        rng : numpy.random.Generator
            The model's seeded generator.
        followed_by_relu : bool
            Whether the next layer (skipping :class:`Dropout`) is a
            :class:`ReLU`.

        Notes
        -----
        The standard deviation is :math:`\sqrt{2/\text{fan-in}}` (He) or
        :math:`\sqrt{1/\text{fan-in}}` (LeCun), with the fan-in the product
        of the weight's shape after its first axis (:math:`C R S` for a
        convolution, the input features for a dense layer).
        """
        w = self.params.get("weight")
        if w is not None:
            fan_in = int(np.prod(w.shape[1:]))
            gain = 2.0 if followed_by_relu else 1.0
            std = math.sqrt(gain / max(fan_in, 1))
            w[...] = rng.standard_normal(w.shape) * std
        b = self.params.get("bias")
        if b is not None:
            b[...] = 0

    # -- computation ------------------------------------------------------
    def forward(self, x, training=False):
        """The layer's output for a batch.

        Parameters
        ----------
        x : ndarray of shape (n,) + input_shape
        training : bool, default False
            Keep what :meth:`backward` needs (and, for :class:`Dropout`,
            drop values); with False nothing is kept.

        Returns
        -------
        y : ndarray of shape (n,) + output_shape
        """
        raise NotImplementedError

    def backward(self, grad):
        """Store parameter gradients; return d loss / d input (None when
        ``input_grad`` is false and the layer can skip it).

        Parameters
        ----------
        grad : ndarray of shape (n,) + output_shape
            Gradient of the loss with respect to the output of the last
            ``forward(x, training=True)``.

        Returns
        -------
        grad_x : ndarray of shape (n,) + input_shape, or None
            The gradient with respect to the input.  The parameter
            gradients are written into :attr:`grads` (overwritten, not
            accumulated).
        """
        raise NotImplementedError

    def clear_cache(self):
        """Drop what forward kept for backward."""

    def __getstate__(self):
        # a copy made while a model trains does not take the arrays the
        # layer keeps between steps (it would reuse them outside training)
        state = self.__dict__.copy()
        state.pop("buffers", None)
        return state

    # -- description ------------------------------------------------------
    def get_config(self):
        """JSON-serialisable constructor arguments.

        Returns
        -------
        dict
            Keyword arguments that rebuild the layer with
            :meth:`from_config`.
        """
        return {}

    @classmethod
    def from_config(cls, config):
        """A new layer from :meth:`get_config` output.

        Parameters
        ----------
        config : dict
            Keyword arguments of the constructor.

        Returns
        -------
        Layer
        """
        return cls(**config)

    @property
    def count_params(self):
        """The number of parameters of the layer (a property), an int."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _buffer(layer, key, shape, dtype):
    """The layer's kept array for ``key`` of this shape and dtype while
    a training loop runs (made on first use), None otherwise (the kernels
    then return new arrays)."""
    bufs = layer.buffers
    if bufs is None:
        return None
    key = (key, shape)
    a = bufs.get(key)
    if a is None or a.dtype != dtype:
        a = bufs[key] = np.empty(shape, dtype=dtype)
    return a


def _native(x, like, ndim):
    """Whether x can go straight to the kernels (an ndarray of the layer's
    dtype and rank, as inside a model); other inputs take the checked and
    converting path of cnnkit.functional."""
    return type(x) is np.ndarray and x.dtype == like.dtype and x.ndim == ndim


def _param_backward(layer, grad):
    """Backward of a layer with a weight and an optional bias: the parameter
    gradients of the whole batch, or, when the training loop set
    ``layer.shard_grads = (bounds, parts)``, those of each run of samples
    ``[bounds[q], bounds[q+1])`` on its own, written to
    ``parts["weight"][q]`` and ``parts["bias"][q]``.  The input gradient is
    per sample either way."""
    if layer.shard_grads is None:
        gx, gw, gb = layer._backward(grad, layer._x)
        if gw is not layer.grads["weight"]:
            layer.grads["weight"][...] = gw
        if gb is not None and gb is not layer.grads["bias"]:
            layer.grads["bias"][...] = gb
        return gx
    bounds, parts = layer.shard_grads
    dt = layer.params["weight"].dtype
    x = np.ascontiguousarray(layer._x, dtype=dt)
    grad = np.ascontiguousarray(grad, dtype=dt)
    return layer._backward_parts(grad, x, bounds, parts["weight"],
                                 parts.get("bias"))


def _grad_outs(layer, x):
    """Where a backward kernel writes (gx, gw, gb): the layer's kept
    input-gradient array and its gradient views while training, new arrays
    otherwise."""
    if layer.buffers is None:
        return None, None, None
    gx = (_buffer(layer, "gx", x.shape, x.dtype) if layer.input_grad
          else None)
    return gx, layer.grads["weight"], layer.grads.get("bias")


class Conv2D(Layer):
    """2-D convolution layer (cross-correlation), PyTorch's ``nn.Conv2d``.

    Parameters
    ----------
    filters : int
        Number of output channels K.
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
    use_bias : bool, default True

    Examples
    --------
    >>> from cnnkit.layers import Conv2D
    >>> conv = Conv2D(16, 3, stride=2, padding=1)
    >>> conv.build((3, 32, 32))
    (16, 16, 16)
    >>> conv.param_shapes((3, 32, 32))
    {'weight': (16, 3, 3, 3), 'bias': (16,)}
    """

    def __init__(self, filters, kernel_size, stride=1, padding=0, dilation=1,
                 use_bias=True):
        super().__init__()
        cls = "Conv2D"
        self.filters = _check_int(filters, "filters", cls)
        self.kernel_size = _check_pair(kernel_size, "kernel_size", cls)
        self.stride = _check_pair(stride, "stride", cls)
        self.dilation = _check_pair(dilation, "dilation", cls)
        if isinstance(padding, str):
            if padding.lower() not in ("same", "valid"):
                raise ValueError(
                    f"{cls}: padding must be an int, a pair, 'valid' or "
                    f"'same'; got {padding!r}")
            padding = padding.lower()
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(
                    f"{cls}: padding='same' needs stride 1, got stride "
                    f"{self.stride}")
            self.padding = padding
        else:
            self.padding = _check_pair(padding, "padding", cls, minimum=0)
        self.use_bias = bool(use_bias)
        self._x = None
        self._pads = None          # (top, bottom, left, right), on first use

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"Conv2D expects input of shape (C, H, W) per sample; got "
                f"{tuple(input_shape)}")
        c, h, w = input_shape
        try:
            oh, ow = F.conv2d_output_shape(
                (h, w), self.kernel_size, self.stride, self.padding,
                self.dilation)
        except ValueError:
            raise ValueError(
                f"Conv2D: kernel {self.kernel_size} (dilation "
                f"{self.dilation}, padding {self.padding!r}) does not fit in "
                f"an input of shape {tuple(input_shape)}") from None
        return (self.filters, oh, ow)

    def param_shapes(self, input_shape):
        shapes = {"weight": (self.filters, input_shape[0]) + self.kernel_size}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def _pad4(self):
        if self._pads is None:
            self._pads = F._conv_padding(self.padding, self.kernel_size,
                                         self.stride, self.dilation, "Conv2D")
        return self._pads

    def forward(self, x, training=False, relu=False):
        """The layer's output for a batch; with ``relu=True``,
        ``max(0, output)`` computed in the same pass (bit for bit what a
        following :class:`ReLU` gives: :class:`~cnnkit.Sequential` fuses a
        Conv2D and the ReLU after it this way).

        Parameters
        ----------
        x : ndarray of shape (n, C, H, W)
        training : bool, default False
            Keep x for :meth:`backward`.
        relu : bool, default False
            Apply a ReLU to the output.

        Returns
        -------
        y : ndarray of shape (n, K, OH, OW)
        """
        self._x = x if training else None
        w = self.params["weight"]
        if _native(x, w, 4):
            out = (_buffer(self, "y", (x.shape[0],) + self.output_shape,
                           w.dtype) if training else None)
            return _kernels.conv2d_forward(x, w, self.params.get("bias"),
                                           self.stride, self._pad4(),
                                           self.dilation, relu, out)
        y = F.conv2d(x, w, self.params.get("bias"), self.stride,
                     self.padding, self.dilation)
        return F.relu(y) if relu else y

    def _backward_parts(self, grad, x, bounds, gw_parts, gb_parts):
        return _kernels.conv2d_backward_parts(
            grad, x, self.params["weight"], self.stride, self._pad4(),
            self.dilation, bounds, gw_parts, gb_parts, self.input_grad,
            _grad_outs(self, x)[0])

    def _backward(self, grad, x):
        w = self.params["weight"]
        if _native(x, w, 4) and _native(grad, w, 4):
            gx, gw, gb = _grad_outs(self, x)
            return _kernels.conv2d_backward(
                grad, x, w, self.stride, self._pad4(), self.dilation,
                self.input_grad, self.use_bias, gx, gw, gb)
        return F.conv2d_backward(grad, x, self.params["weight"], self.stride,
                                 self.padding, self.dilation,
                                 bias=self.use_bias,
                                 input_grad=self.input_grad)

    def backward(self, grad):
        return _param_backward(self, grad)

    def clear_cache(self):
        self._x = None

    def get_config(self):
        return {"filters": self.filters,
                "kernel_size": list(self.kernel_size),
                "stride": list(self.stride),
                "padding": (self.padding if isinstance(self.padding, str)
                            else list(self.padding)),
                "dilation": list(self.dilation),
                "use_bias": self.use_bias}


class ReLU(Layer):
    """Rectified linear unit, ``max(0, x)``; its gradient at 0 is 0."""

    def __init__(self):
        super().__init__()
        self._x = None

    def forward(self, x, training=False):
        self._x = x if training else None
        if type(x) is np.ndarray and x.dtype in (np.float32, np.float64):
            out = (_buffer(self, "y", x.shape, x.dtype) if training
                   else None)
            return _kernels.relu_forward(x, out)
        return F.relu(x)

    def folded(self, y, training=False):
        """Take the output of the previous layer, which already applied
        this ReLU (a fused ``Conv2D(..., relu=True)``): keep it for
        :meth:`backward` and return it.  ``y > 0`` exactly where the ReLU's
        input was, so the gradient is the same."""
        self._x = y if training else None
        return y

    def backward(self, grad):
        x = self._x
        if type(grad) is np.ndarray and _native(x, grad, grad.ndim) and \
                grad.dtype in (np.float32, np.float64):
            return _kernels.relu_backward(
                grad, x, _buffer(self, "gx", x.shape, x.dtype))
        return F.relu_backward(grad, x)

    def clear_cache(self):
        self._x = None


class MaxPool2D(Layer):
    """2-D max pooling, PyTorch's ``nn.MaxPool2d``.

    Parameters
    ----------
    pool_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : int or (int, int), default 0
        ``-inf`` padding, at most half the pool size.
    """

    def __init__(self, pool_size, stride=None, padding=0):
        super().__init__()
        cls = "MaxPool2D"
        self.pool_size = _check_pair(pool_size, "pool_size", cls)
        self.stride = (self.pool_size if stride is None
                       else _check_pair(stride, "stride", cls))
        self.padding = _check_pair(padding, "padding", cls, minimum=0)
        if (2 * self.padding[0] > self.pool_size[0]
                or 2 * self.padding[1] > self.pool_size[1]):
            raise ValueError(
                f"{cls}: padding {self.padding} must be at most half the pool "
                f"size {self.pool_size}")
        self._idx = None
        self._shape = None
        self._y = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"MaxPool2D expects input of shape (C, H, W) per sample; got "
                f"{tuple(input_shape)}")
        try:
            oh, ow = F.pool2d_output_shape(input_shape[1:], self.pool_size,
                                           self.stride, self.padding)
        except ValueError:
            raise ValueError(
                f"MaxPool2D: pool size {self.pool_size} (padding "
                f"{self.padding}) is larger than the input of shape "
                f"{tuple(input_shape)}") from None
        return (input_shape[0], oh, ow)

    def forward(self, x, training=False):
        if type(x) is np.ndarray and x.ndim == 4 and \
                x.dtype in (np.float32, np.float64):
            out = idx = None
            if training:
                shape = (x.shape[0],) + self.output_shape
                out = _buffer(self, "y", shape, x.dtype)
                idx = _buffer(self, "indices", shape, np.dtype(np.int64))
            y, idx = _kernels.max_pool2d_forward(x, self.pool_size,
                                                self.stride, self.padding,
                                                out, idx)
        else:
            y, idx = F.max_pool2d(x, self.pool_size, self.stride,
                                  self.padding)
        if training:
            self._idx, self._shape, self._y = idx, x.shape, y
        return y

    def backward(self, grad, relu=False):
        """The gradient with respect to the input; with ``relu=True``, with
        respect to the input of the :class:`ReLU` before this layer, in the
        same pass (bit for bit what that ReLU's backward gives:
        :class:`~cnnkit.Sequential` fuses the two this way).  The pass reads
        this layer's last output, which the layers after it must not have
        changed in place (cnnkit's layers never write their inputs)."""
        if relu:
            grad = np.ascontiguousarray(grad, dtype=self._y.dtype)
            return _kernels.max_pool2d_backward(
                grad, self._idx, self._shape,
                _buffer(self, "gx", self._shape, grad.dtype), self._y)
        if type(grad) is np.ndarray and grad.ndim == 4 and \
                len(self._shape) == 4 and grad.dtype in (np.float32,
                                                        np.float64):
            return _kernels.max_pool2d_backward(
                grad, self._idx, self._shape,
                _buffer(self, "gx", self._shape, grad.dtype))
        return F.max_pool2d_backward(grad, self._idx, self._shape)

    def clear_cache(self):
        self._idx = self._shape = self._y = None

    def get_config(self):
        return {"pool_size": list(self.pool_size),
                "stride": list(self.stride),
                "padding": list(self.padding)}


class AvgPool2D(MaxPool2D):
    """2-D average pooling, PyTorch's ``nn.AvgPool2d``.

    Parameters
    ----------
    pool_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : int or (int, int), default 0
        Zero padding, at most half the pool size.
    count_include_pad : bool, default True
        Whether padded zeros count in the divisor.
    """

    def __init__(self, pool_size, stride=None, padding=0,
                 count_include_pad=True):
        super().__init__(pool_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def compute_output_shape(self, input_shape):
        try:
            return super().compute_output_shape(input_shape)
        except ValueError as exc:
            raise ValueError(str(exc).replace("MaxPool2D", "AvgPool2D")) \
                from None

    def forward(self, x, training=False):
        self._shape = x.shape
        return F.avg_pool2d(x, self.pool_size, self.stride, self.padding,
                            self.count_include_pad)

    def backward(self, grad):
        return F.avg_pool2d_backward(grad, self._shape, self.pool_size,
                                     self.stride, self.padding,
                                     self.count_include_pad)

    def get_config(self):
        config = super().get_config()
        config["count_include_pad"] = self.count_include_pad
        return config


class GlobalAvgPool2D(Layer):
    """Mean of each channel over its plane: (C, H, W) -> (C,)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"GlobalAvgPool2D expects input of shape (C, H, W) per "
                f"sample; got {tuple(input_shape)}")
        return (input_shape[0],)

    def forward(self, x, training=False):
        self._shape = x.shape
        return F.global_avg_pool2d(x)

    def backward(self, grad):
        return F.global_avg_pool2d_backward(grad, self._shape)


class Flatten(Layer):
    """Flattens each sample to a vector, in C order (as ``torch.flatten``)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def compute_output_shape(self, input_shape):
        size = math.prod(int(d) for d in input_shape)
        if size > 2 ** 62:
            raise ValueError(
                f"Flatten: an input of shape {tuple(input_shape)} has {size} "
                f"values per sample, more than cnnkit supports (2**62)")
        return (size,)

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape(self._shape)


class Dense(Layer):
    """Fully connected layer, ``y = x @ W.T + b`` (PyTorch's ``nn.Linear``).

    Parameters
    ----------
    units : int
        Number of outputs.
    use_bias : bool, default True
    """

    def __init__(self, units, use_bias=True):
        super().__init__()
        self.units = _check_int(units, "units", "Dense")
        self.use_bias = bool(use_bias)
        self._x = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects input of shape (features,) per sample; got "
                f"{tuple(input_shape)} (add a Flatten layer before it)")
        return (self.units,)

    def param_shapes(self, input_shape):
        shapes = {"weight": (self.units, input_shape[0])}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def forward(self, x, training=False):
        self._x = x if training else None
        w = self.params["weight"]
        if _native(x, w, 2):
            out = (_buffer(self, "y", (x.shape[0], self.units), w.dtype)
                   if training else None)
            return _kernels.dense_forward(x, w, self.params.get("bias"), out)
        return F.dense(x, w, self.params.get("bias"))

    def _backward_parts(self, grad, x, bounds, gw_parts, gb_parts):
        return _kernels.dense_backward_parts(
            grad, x, self.params["weight"], bounds, gw_parts, gb_parts,
            self.input_grad, _grad_outs(self, x)[0])

    def _backward(self, grad, x):
        w = self.params["weight"]
        if _native(x, w, 2) and _native(grad, w, 2):
            gx, gw, gb = _grad_outs(self, x)
            return _kernels.dense_backward(grad, x, w, self.input_grad,
                                           self.use_bias, gx, gw, gb)
        return F.dense_backward(grad, x, self.params["weight"],
                                bias=self.use_bias)

    def backward(self, grad):
        return _param_backward(self, grad)

    def clear_cache(self):
        self._x = None

    def get_config(self):
        return {"units": self.units, "use_bias": self.use_bias}


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability
    ``rate`` and scale the rest by ``1 / (1 - rate)``; identity otherwise.

    The mask is drawn from the model's seeded generator, so training is
    reproducible.
    """

    def __init__(self, rate):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"Dropout: rate must be a float, got {rate!r}")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = None
        # (n, lo, hi) while the training loop runs part of a global batch.
        self.window = None
        self._mask = None

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        rng = self.rng if self.rng is not None else np.random.default_rng()
        window = self.window
        draw = _buffer(self, "draw", x.shape, np.dtype(np.float64))
        if window is None:
            draw = rng.random(x.shape, out=draw)
        else:
            # This batch is the part [lo, hi) of a global batch of n: draw
            # the global batch's mask, so every part of it matches.
            n, lo, hi = window
            draw = _window_draw(rng, n, lo, hi, x.shape[1:], draw)
        keep = np.greater_equal(draw, self.rate,
                                out=_buffer(self, "keep", x.shape, np.bool_))
        self._mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - self.rate)),
                                 out=_buffer(self, "mask", x.shape, x.dtype),
                                 dtype=x.dtype)
        return np.multiply(x, self._mask,
                           out=_buffer(self, "y", x.shape, x.dtype))

    def backward(self, grad):
        if self._mask is None:
            return grad
        return np.multiply(grad, self._mask,
                           out=_buffer(self, "gx", grad.shape, grad.dtype))

    def skip_batch(self, n):
        """Advance the random stream as a training forward pass over a batch
        of ``n`` samples would (for a part of a global batch that is
        empty)."""
        if self.rate > 0.0 and self.rng is not None:
            _window_draw(self.rng, n, 0, 0, tuple(self.input_shape))

    def clear_cache(self):
        self._mask = None

    def get_config(self):
        return {"rate": self.rate}


def _window_draw(rng, n, lo, hi, shape, out=None):
    """Rows [lo, hi) of ``rng.random((n,) + shape)`` (into ``out`` when
    given), leaving the generator where that call would.  Generators that
    can skip ahead (PCG64, NumPy's default: one 64-bit output per double)
    skip the other rows instead of drawing them."""
    per = math.prod(shape)
    bitgen = rng.bit_generator
    if type(bitgen) is np.random.PCG64:
        bitgen.advance(lo * per)
        part = rng.random((hi - lo,) + tuple(shape), out=out)
        bitgen.advance((n - hi) * per)
        return part
    part = rng.random((n,) + tuple(shape))[lo:hi]
    if out is None:
        return part
    out[...] = part
    return out


#: The layer types a saved model may name; loading builds only these.
LAYERS = {cls.__name__: cls for cls in
          (Conv2D, ReLU, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten,
           Dense, Dropout)}
