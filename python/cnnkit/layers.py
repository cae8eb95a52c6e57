"""Layers: thin shells over :mod:`cnnkit.functional` that own parameters.

Each layer follows one lifecycle (Keras's): hyperparameters are validated in
``__init__``; ``build(input_shape, ...)`` computes the output shape and the
shapes of the parameters; the model then hands the layer views into its flat
parameter and gradient buffers and asks it to initialise them; ``forward``
keeps what ``backward`` needs; ``backward`` writes the parameter gradients
(overwriting them) and returns the gradient with respect to the input.

Both passes take a step context (``cnnkit._context.StepContext``) from the
model: whether the pass trains, the arena of arrays kept between training
steps (so that a step allocates no arrays after the first of its batch
size), which layers may skip their input gradient, the shard bounds of the
per-shard parameter gradients and the dropout window.  ``bool(ctx)`` is
whether it trains, so ``layer.forward(x, training=True)`` and a layer
written as ``forward(self, x, training=False)`` work as they read.  The
kernels are reached through the op objects of :mod:`cnnkit._ops`, made
once at ``build``.

Fusion is declared, never inferred from classes: a layer that is an
element-wise op another layer can apply in its epilogue names it in
:attr:`Layer.elementwise` (ReLU: ``"relu"``); a layer whose forward pass can
apply one lists it in :attr:`Layer.forward_epilogues`; a layer whose
backward pass can also run the backward of the element-wise layer before
it lists it in :attr:`Layer.backward_prologues`; a layer whose backward
pass can run the backward of the element-wise layer its forward epilogue
applied lists it in :attr:`Layer.backward_epilogues`.  The model asks these
and runs the pair as one pass, with the bits of the two passes.

Shapes exclude the batch axis: a Conv2D's ``input_shape`` is ``(C, H, W)``.
Layouts follow PyTorch, so ``Conv2D.params["weight"]`` is ``(K, C, R, S)`` and
``Dense.params["weight"]`` is ``(units, in_features)``.
"""
import inspect
import math
import numbers
import re
import threading

import numpy as np

from . import _ops
from ._checks import check_elements, check_int, check_pair
from ._context import as_context
from ._graph import Node, symbolic_args

__all__ = [
    "Layer", "Conv2D", "DepthwiseConv2D", "ReLU", "MaxPool2D", "AvgPool2D",
    "GlobalAvgPool2D", "GlobalMaxPool2D", "Flatten", "Dense", "Dropout",
    "Add", "Multiply", "Concatenate", "BatchNorm2D", "BatchNorm1D",
    "LeakyReLU", "Sigmoid", "Tanh", "SiLU", "GELU", "Softmax", "LogSoftmax",
    "LAYERS",
]

# Numbers given to unnamed layers, per name prefix.
_NAME_COUNTS = {}
_NAME_LOCK = threading.Lock()


def _snake_case(cls):
    """``Conv2D`` -> ``conv2d``, ``MaxPool2D`` -> ``max_pool2d``."""
    return getattr(cls, "_name_prefix", None) or re.sub(
        r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])", "_",
        cls.__name__).lower()


def _unique_name(cls):
    prefix = _snake_case(cls)
    with _NAME_LOCK:
        n = _NAME_COUNTS.get(prefix, 0)
        _NAME_COUNTS[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def _check_name(name, owner):
    if not isinstance(name, str) or not name or "." in name or \
            name != name.strip():
        raise ValueError(f"{owner}: name must be a non-empty str without "
                         f"dots or surrounding spaces, got {name!r}")
    return name


class Layer:
    """Base class of all layers.

    Parameters
    ----------
    name : str, optional
        The layer's name in a model (``state_dict`` keys of a graph model
        are ``"<name>.<parameter>"``); by default the class's name in
        snake case, numbered to be unique in the process (``"conv2d"``,
        ``"conv2d_1"``, ...), as in Keras.

    Attributes
    ----------
    name : str
        The layer's name.
    input_shape, output_shape : tuple of int or None
        Per-sample shapes, set by :meth:`build`.
    params, grads : dict of str to ndarray
        Parameters and their gradients (views into the model's flat
        buffers), in PyTorch ``state_dict`` order; empty for layers without
        parameters.
    buffers : dict of str to ndarray
        State that is not trained (:class:`BatchNorm2D`'s running
        statistics), in PyTorch ``state_dict`` order, after the
        parameters; the model allocates it and the optimizer never sees
        it.  Empty for most layers.
    built : bool
        Whether :meth:`build` has run.
    elementwise : str or None
        The element-wise op this layer computes when another layer can run
        it in its epilogue (:class:`ReLU`: ``"relu"``), else None.
    forward_epilogues : frozenset of str
        The element-wise ops this layer's forward pass can apply to its
        output (``forward(x, ctx, epilogue=name)``).
    backward_prologues : frozenset of str
        The element-wise ops whose backward this layer's backward pass can
        run too, for the layer just before it (``backward(grad, ctx,
        prologue=name)``).
    backward_epilogues : frozenset of str
        The element-wise ops of :attr:`forward_epilogues` whose backward
        this layer's backward pass can run first, when its forward applied
        them (``backward(grad, ctx, epilogue=name)``, ``grad`` the
        gradient of the element-wise op's output).
    per_shard_grads : bool
        Whether :meth:`backward` can write the parameter gradients of each
        shard of the batch on its own (``ctx.shard_parts(self)``), which
        data-parallel training and the fixed-shard reduction need.
    tree_sum_grads : tuple of str
        The parameters whose per-shard gradients :meth:`backward` can add
        itself, in the fixed tree and with its bits, straight into the
        model's gradient (``ctx.shard_tree(self)``), so that no copy per
        shard is written.
    transparent : bool
        Whether initialisation looks through the layer (:class:`Dropout`):
        the layer before it is initialised for the layer after it.
    num_inputs : int or None
        How many tensors the layer takes: 1, or None for a merge layer
        (:class:`Add`, :class:`Concatenate`, :class:`Multiply`: a list of
        two or more, and ``forward`` takes a list and ``backward`` returns
        one).
    """

    elementwise = None
    forward_epilogues = frozenset()
    backward_prologues = frozenset()
    backward_epilogues = frozenset()
    per_shard_grads = False
    tree_sum_grads = ()
    transparent = False
    num_inputs = 1

    def __init__(self, name=None):
        self.name = _unique_name(type(self)) if name is None else \
            _check_name(name, type(self).__name__)
        self.input_shape = None
        self.output_shape = None
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.built = False
        self._call_shape = None

    def __init_subclass__(cls, **kwargs):
        # A layer written as ``backward(self, grad)`` (without the step
        # context) keeps working: the model's context is not passed to it.
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if backward is not None and _positional_count(backward) < 3:
            def with_context(self, grad, ctx=None, _backward=backward):
                return _backward(self, grad)
            with_context.__doc__ = backward.__doc__
            cls.backward = with_context

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
        input_shape : tuple of int, or list of them
            Shape of one input sample (for a merge layer, of each input).

        Returns
        -------
        dict of str to tuple of int
            ``{"weight": shape, "bias": shape}`` for layers with
            parameters, in PyTorch ``state_dict`` order; empty otherwise.
        """
        return {}

    def buffer_shapes(self, input_shape):
        """Shapes and dtypes of the layer's buffers (state that is not
        trained) for ``input_shape``, in ``state_dict`` order.

        Parameters
        ----------
        input_shape : tuple of int

        Returns
        -------
        dict of str to (tuple of int, dtype or None)
            None for the model's float dtype; empty for layers without
            buffers.
        """
        return {}

    def bind_buffers(self, buffers):
        """Attach buffer arrays (the model allocates them).

        Parameters
        ----------
        buffers : dict of str to ndarray
            Arrays of the shapes and dtypes :meth:`buffer_shapes` asked for.
        """
        self.buffers = dict(buffers)

    def reset_buffers(self):
        """Give new buffers their initial values (nothing for layers
        without buffers)."""

    def build(self, input_shape):
        """Check ``input_shape`` and record the input and output shapes
        (a model calls it again whenever it infers its shapes).

        Parameters
        ----------
        input_shape : tuple of int, or list of them for a merge layer

        Returns
        -------
        tuple of int
            The per-sample output shape.
        """
        if self.num_inputs == 1:
            input_shape = tuple(int(d) for d in input_shape)
        elif not isinstance(input_shape, list) or len(input_shape) < 2:
            raise ValueError(
                f"{type(self).__name__} takes a list of two or more tensors "
                f"(in a graph model, cnnkit.Model); got one input of shape "
                f"{tuple(input_shape)}")
        else:
            input_shape = [tuple(int(d) for d in s) for s in input_shape]
        self.output_shape = self.compute_output_shape(input_shape)
        self.input_shape = input_shape
        self.built = True
        return self.output_shape

    def __call__(self, inputs, training=False):
        """Call the layer: on a symbolic tensor (or, for a merge layer, a
        list of them) it records a node of a graph and returns the output
        tensor, built for the input shape at once; on arrays it is
        :meth:`forward`.

        Raises
        ------
        ValueError
            If the layer cannot take the tensors' shapes, naming this layer,
            the layers the tensors come from and the shapes; or if a layer
            already called on one shape is called on another.
        """
        me = f"{type(self).__name__} {self.name!r}"
        try:
            tensors, symbolic = symbolic_args(inputs)
        except TypeError as exc:
            raise TypeError(f"{me}: {exc}") from None
        if not symbolic:
            return self.forward(inputs, training)
        if self.num_inputs == 1 and isinstance(inputs, (list, tuple)):
            raise TypeError(f"{me} takes one tensor, got a list of "
                            f"{len(inputs)}")
        if self.num_inputs is None and (not isinstance(inputs, (list, tuple))
                                        or len(inputs) < 2):
            raise TypeError(f"{me} takes a list of two or more tensors")
        shapes = (tensors[0].shape if self.num_inputs == 1
                  else [t.shape for t in tensors])
        if self._call_shape is not None and shapes != self._call_shape:
            raise ValueError(
                f"{me} was called on shape {self._call_shape} and now on "
                f"{shapes}: a layer used twice takes the same shape each "
                f"time (create another layer for the other shape)")
        try:
            out = self.build(shapes)
        except ValueError as exc:
            srcs = " and ".join(f"{t.source} (shape {t.shape})"
                                for t in tensors)
            raise ValueError(f"{me} cannot take {srcs}: {exc}") from None
        self._call_shape = shapes
        return Node(self, tensors, out).output

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
        training : bool or StepContext, default False
            Keep what :meth:`backward` needs (and, for :class:`Dropout`,
            drop values); with False nothing is kept.  A model passes its
            step context, whose truth value is whether it trains.

        Returns
        -------
        y : ndarray of shape (n,) + output_shape
        """
        raise NotImplementedError

    def backward(self, grad, ctx=None):
        """Store parameter gradients; return d loss / d input (None when
        the step context says this layer may skip it).

        Parameters
        ----------
        grad : ndarray of shape (n,) + output_shape
            Gradient of the loss with respect to the output of the last
            ``forward(x, training=True)``.
        ctx : StepContext, optional
            The model's step context; None computes every gradient into new
            arrays.

        Returns
        -------
        grad_x : ndarray of shape (n,) + input_shape, or None
            The gradient with respect to the input.  The parameter
            gradients are written into :attr:`grads` (overwritten, not
            accumulated).
        """
        raise NotImplementedError

    def fused_forward(self, y, ctx):
        """Keep what :meth:`backward` needs when the layer before applied
        this (element-wise) layer in its own pass, and return its output
        ``y``.  Only layers with an :attr:`elementwise` op are asked."""
        raise NotImplementedError

    def skip_batch(self, n):
        """Advance any random stream of the layer as a training forward pass
        over ``n`` samples would (for a process whose part of a global batch
        is empty); nothing for layers without one."""

    def skip_exchange(self, ctx, backward):
        """Take part, with no samples, in the exchanges across ranks that
        this layer's training forward (``backward`` False) or backward pass
        makes (a rank whose part of a global batch is empty); nothing for
        layers whose passes exchange nothing."""

    def clear_cache(self):
        """Drop what forward kept for backward."""

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

        Raises
        ------
        TypeError
            If ``config`` names an argument the constructor does not take
            (a config of another cnnkit version, say); the message names
            it and the arguments there are.
        """
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            allowed = [n for n in list(params)[1:]
                       if params[n].kind in (params[n].POSITIONAL_OR_KEYWORD,
                                             params[n].KEYWORD_ONLY)]
            unknown = sorted(str(k) for k in config if k not in allowed)
            if unknown:
                raise TypeError(
                    f"unknown argument(s) {unknown} for {cls.__name__}; "
                    f"{cls.__name__} takes "
                    f"{', '.join(allowed) or 'no arguments'}")
        return cls(**config)

    @property
    def count_params(self):
        """The number of parameters of the layer (a property), an int."""
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _positional_count(fn):
    """How many positional parameters ``fn`` takes (self included); a large
    number when it takes ``*args``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 1 << 30
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in params)


def _kept(layer, value):
    """What ``layer``'s last training forward pass kept for its backward
    pass, or ValueError when there was none."""
    if value is None:
        raise ValueError(f"{type(layer).__name__} {layer.name!r}: backward "
                         f"needs a forward(x, training=True) first")
    return value


class _Affine(Layer):
    """A layer ``y = op(x, weight) + bias`` (Conv2D, Dense): both passes
    run through the op object ``self._op`` made in ``__init__``.

    The backward pass writes the parameter gradients of the whole batch,
    or, when the step context asks for per-shard gradients, those of each
    run of samples ``[bounds[q], bounds[q+1])`` on its own, into
    ``parts["weight"][q]`` and ``parts["bias"][q]``.  The input gradient is
    per sample either way.
    """

    per_shard_grads = True

    def __init__(self, name=None):
        super().__init__(name)
        self._x = None

    def forward(self, x, training=False, epilogue=None):
        """The layer's output for a batch; with an ``epilogue`` of
        :attr:`forward_epilogues` (``"relu"``), that element-wise op
        applied in the same pass (bit for bit what the layer after would
        give).

        Parameters
        ----------
        x : ndarray of shape (n,) + input_shape
        training : bool or StepContext, default False
            Keep x for :meth:`backward`.
        epilogue : str, optional
            An element-wise op of :attr:`forward_epilogues` to apply.

        Returns
        -------
        y : ndarray of shape (n,) + output_shape
        """
        ctx = as_context(training)
        w = self.params["weight"]
        x = _ops.as_float(x, w.dtype)
        out = None
        if ctx.training:
            self._x = x
            out = ctx.buffer(self, "y", (x.shape[0],) + self.output_shape,
                             w.dtype)
        return self._op.forward(x, w, self.params.get("bias"),
                                epilogue == "relu", out)

    def backward(self, grad, ctx=None):
        ctx = as_context(ctx)
        w, x = self.params["weight"], _kept(self, self._x)
        grad = _ops.as_float(grad, w.dtype)
        input_grad = ctx.needs_input_grad()
        gx = ctx.buffer(self, "gx", x.shape, x.dtype) if input_grad else None
        shard = ctx.shard_parts(self)
        if shard is not None:
            bounds, parts = shard
            tree = ctx.shard_tree(self)
            if tree is not None:            # the weight's tree sum, in place
                return self._op.backward_parts(
                    grad, x, w, bounds, None, parts.get("bias"), input_grad,
                    gx, gw_tree=tree["weight"])
            return self._op.backward_parts(grad, x, w, bounds,
                                           parts["weight"], parts.get("bias"),
                                           input_grad, gx)
        gw, gb = self.grads["weight"], self.grads.get("bias")
        gx, gw_new, gb_new = self._op.backward(grad, x, w, input_grad,
                                               self.use_bias, gx, gw, gb)
        if gw_new is not gw:
            gw[...] = gw_new
        if gb_new is not None and gb_new is not gb:
            gb[...] = gb_new
        return gx

    def clear_cache(self):
        self._x = None


class Conv2D(_Affine):
    """2-D convolution layer (cross-correlation), PyTorch's ``nn.Conv2d``.

    Parameters
    ----------
    filters : int
        Number of output channels K.
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
    use_bias : bool, default True
    groups : int, default 1
        Grouped convolution (PyTorch's ``groups``): the input channels and
        the filters are cut into ``groups`` equal runs, and filter run q
        sees only channel run q; the weight is ``(filters, C / groups, R,
        S)``.  ``groups`` must divide ``filters`` and the input channels.
    winograd : bool, default False
        Compute the passes of a 3x3 convolution of stride 1 and dilation 1
        with ``groups=1`` by Winograd's minimal filtering F(4x4, 3x3)
        where each pays (see :ref:`perf-winograd-training`), on the SIMD
        paths where the filters are a multiple of 16 (8 in float64): the
        forward pass with 16 input channels or more, the input gradient
        with 16 filters or more, the weight gradient with 32 of each and
        runs of images of 64 tiles of 4x4 outputs or more.  Elsewhere the
        layer keeps the direct sums.  Measured at batches of 32-128 on
        layers of 16-64 channels, the forward pass ran 1.2-2.5x faster and
        the gradients 1.1-1.9x; 7x7 planes of 128 channels at batch 32 and
        layers of 64 channels and more at batch 1 (where each call
        transforms the filters) ran slower.  Rounding differs from the
        direct sums: each output within ``8 eps (max|x| sum|w_k| +
        |b_k|)`` of the exact one, each weight-gradient element within
        ``8 eps max|x| sum|g_k|`` (g the output gradient, k its filter),
        eps the dtype's.  The results do not depend on the threads, the
        forward pass's not on the batch either, and training keeps its
        promises across MPI ranks.

    Examples
    --------
    >>> from cnnkit.layers import Conv2D
    >>> conv = Conv2D(16, 3, stride=2, padding=1)
    >>> conv.build((3, 32, 32))
    (16, 16, 16)
    >>> conv.param_shapes((3, 32, 32))
    {'weight': (16, 3, 3, 3), 'bias': (16,)}
    >>> Conv2D(16, 3, groups=4).param_shapes((8, 32, 32))
    {'weight': (16, 2, 3, 3), 'bias': (16,)}
    """

    forward_epilogues = frozenset({"relu"})

    def __init__(self, filters, kernel_size, stride=1, padding=0, dilation=1,
                 use_bias=True, groups=1, winograd=False, name=None):
        super().__init__(name)
        cls = type(self).__name__
        self.groups = check_int(groups, "groups", 1, cls)
        if not isinstance(winograd, (bool, np.bool_)):
            raise TypeError(f"{cls}: winograd must be a bool, got "
                            f"{winograd!r}")
        self._init_geometry(filters, kernel_size, stride, padding, dilation,
                            use_bias, bool(winograd))
        if self.filters % self.groups:
            raise ValueError(
                f"{cls}: groups={self.groups} must divide filters="
                f"{self.filters}")
        if self.winograd and (self.kernel_size != (3, 3) or
                              self.stride != (1, 1) or
                              self.dilation != (1, 1) or self.groups != 1):
            raise ValueError(
                f"{cls}: winograd=True needs a 3x3 kernel of stride 1 and "
                f"dilation 1 with groups=1; got kernel_size="
                f"{self.kernel_size}, stride={self.stride}, dilation="
                f"{self.dilation}, groups={self.groups}")

    def _init_geometry(self, filters, kernel_size, stride, padding, dilation,
                       use_bias, winograd=False):
        cls = type(self).__name__
        self.filters = check_int(filters, "filters", 1, cls)
        self.kernel_size = check_pair(kernel_size, "kernel_size", 1, cls)
        self.stride = check_pair(stride, "stride", 1, cls)
        self.dilation = check_pair(dilation, "dilation", 1, cls)
        if isinstance(padding, str):
            padding = padding.lower()
        else:
            padding = check_pair(padding, "padding", 0, cls)
        # (top, bottom, left, right); raises for a bad mode or 'same' with
        # a stride
        pad4 = _ops.conv_padding(padding, self.kernel_size, self.stride,
                                 self.dilation, cls)
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.winograd = winograd
        self._op = _ops.Conv2DOp(self.stride, pad4, self.dilation,
                                 self.groups, winograd)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (C, H, W) per "
                f"sample; got {tuple(input_shape)}")
        c, h, w = input_shape
        if c % self.groups:
            raise ValueError(
                f"Conv2D: groups={self.groups} must divide the input "
                f"channels; got input of shape {tuple(input_shape)}")
        oh, ow = _ops.conv_output_hw((h, w), self.kernel_size, self.stride,
                                     self._op.padding, self.dilation)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"Conv2D: kernel {self.kernel_size} (dilation "
                f"{self.dilation}, padding {self.padding!r}) does not fit in "
                f"an input of shape {tuple(input_shape)}")
        return (self.filters, oh, ow)

    def param_shapes(self, input_shape):
        shapes = {"weight": (self.filters, input_shape[0] // self.groups) +
                  self.kernel_size}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def get_config(self):
        config = {"filters": self.filters,
                  "kernel_size": list(self.kernel_size),
                  "stride": list(self.stride),
                  "padding": (self.padding if isinstance(self.padding, str)
                              else list(self.padding)),
                  "dilation": list(self.dilation),
                  "use_bias": self.use_bias}
        if self.groups != 1:
            config["groups"] = self.groups
        if self.winograd:
            config["winograd"] = True
        return config


class DepthwiseConv2D(Conv2D):
    """Depthwise 2-D convolution: each input channel convolved on its own
    with ``depth_multiplier`` filters of its own, PyTorch's
    ``nn.Conv2d(C, C * depth_multiplier, kernel_size, groups=C)``.

    Output channel ``c * depth_multiplier + m`` is input channel ``c``
    convolved with filter ``m`` of that channel.  The number of filters,
    ``C * depth_multiplier``, and the group count ``C`` are fixed when the
    layer is built for an input of C channels; the weight is ``(C *
    depth_multiplier, 1, R, S)``, the layout of PyTorch's ``state_dict``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    depth_multiplier : int, default 1
        Filters per input channel.
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
    use_bias : bool, default True

    Examples
    --------
    >>> from cnnkit.layers import DepthwiseConv2D
    >>> conv = DepthwiseConv2D(3, depth_multiplier=2, padding=1)
    >>> conv.build((8, 32, 32))
    (16, 32, 32)
    >>> conv.param_shapes((8, 32, 32))
    {'weight': (16, 1, 3, 3), 'bias': (16,)}
    """

    def __init__(self, kernel_size, depth_multiplier=1, stride=1, padding=0,
                 dilation=1, use_bias=True, name=None):
        _Affine.__init__(self, name)
        cls = "DepthwiseConv2D"
        self.depth_multiplier = check_int(depth_multiplier,
                                          "depth_multiplier", 1, cls)
        self.groups = 1         # the input channels, once built
        self._init_geometry(self.depth_multiplier, kernel_size, stride,
                            padding, dilation, use_bias)

    def _for_channels(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"DepthwiseConv2D expects input of shape (C, H, W) per "
                f"sample; got {tuple(input_shape)}")
        return int(input_shape[0])

    def compute_output_shape(self, input_shape):
        c = self._for_channels(input_shape)
        oh, ow = _ops.conv_output_hw(input_shape[1:], self.kernel_size,
                                     self.stride, self._op.padding,
                                     self.dilation)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"DepthwiseConv2D: kernel {self.kernel_size} (dilation "
                f"{self.dilation}, padding {self.padding!r}) does not fit in "
                f"an input of shape {tuple(input_shape)}")
        return (c * self.depth_multiplier, oh, ow)

    def param_shapes(self, input_shape):
        c = self._for_channels(input_shape)
        shapes = {"weight": (c * self.depth_multiplier, 1) + self.kernel_size}
        if self.use_bias:
            shapes["bias"] = (c * self.depth_multiplier,)
        return shapes

    def build(self, input_shape):
        out = super().build(input_shape)
        c = self._for_channels(self.input_shape)
        self.groups = self._op.groups = c
        self.filters = c * self.depth_multiplier
        return out

    def get_config(self):
        return {"kernel_size": list(self.kernel_size),
                "depth_multiplier": self.depth_multiplier,
                "stride": list(self.stride),
                "padding": (self.padding if isinstance(self.padding, str)
                            else list(self.padding)),
                "dilation": list(self.dilation),
                "use_bias": self.use_bias}


class ReLU(Layer):
    """Rectified linear unit, ``max(0, x)``; its gradient at 0 is 0.

    Its backward pass reads the output, whose sign is the input's (so a
    layer that applied this ReLU in its own pass leaves the same record).
    """

    elementwise = "relu"
    _name_prefix = "relu"

    def __init__(self, name=None):
        super().__init__(name)
        self._y = None

    def forward(self, x, training=False):
        ctx = as_context(training)
        x = _ops.as_float(x)
        if ctx.training:
            y = self._y = _ops.relu_forward(
                x, ctx.buffer(self, "y", x.shape, x.dtype))
        else:
            y = _ops.relu_forward(x)
        return y

    def fused_forward(self, y, ctx):
        if as_context(ctx).training:
            self._y = y
        return y

    def backward(self, grad, ctx=None):
        y = _kept(self, self._y)
        grad = _ops.as_float(grad, y.dtype)
        return _ops.relu_backward(
            grad, y, as_context(ctx).buffer(self, "gx", y.shape, y.dtype))

    def clear_cache(self):
        self._y = None


class MaxPool2D(Layer):
    """2-D max pooling, PyTorch's ``nn.MaxPool2d``.

    Parameters
    ----------
    pool_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : int or (int, int), default 0
        ``-inf`` padding, at most half the pool size.
    ceil_mode : bool, default False
        Round the output size up, so that a last, partial window covers the
        bottom and right edges (a window that would start in the padding is
        dropped, as in PyTorch).
    """

    backward_prologues = frozenset({"relu"})
    _name = "MaxPool2D"

    def __init__(self, pool_size, stride=None, padding=0, ceil_mode=False,
                 name=None):
        super().__init__(name)
        cls = self._name
        self.pool_size = check_pair(pool_size, "pool_size", 1, cls)
        self.stride = (self.pool_size if stride is None
                       else check_pair(stride, "stride", 1, cls))
        self.padding = check_pair(padding, "padding", 0, cls)
        if (2 * self.padding[0] > self.pool_size[0]
                or 2 * self.padding[1] > self.pool_size[1]):
            raise ValueError(
                f"{cls}: padding {self.padding} must be at most half the pool "
                f"size {self.pool_size}")
        if type(ceil_mode) is not bool and not isinstance(ceil_mode,
                                                          np.bool_):
            raise TypeError(f"{cls}: ceil_mode must be a bool, got "
                            f"{ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self._op = self._make_op()
        self._idx = None
        self._shape = None
        self._y = None

    def _make_op(self):
        return _ops.MaxPool2DOp(self.pool_size, self.stride, self.padding,
                                self.ceil_mode)

    def compute_output_shape(self, input_shape):
        cls = self._name
        if len(input_shape) != 3:
            raise ValueError(
                f"{cls} expects input of shape (C, H, W) per sample; got "
                f"{tuple(input_shape)}")
        oh, ow = _ops.pool_output_hw(input_shape[1:], self.pool_size,
                                     self.stride, self.padding,
                                     self.ceil_mode)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{cls}: pool size {self.pool_size} (padding "
                f"{self.padding}) is larger than the input of shape "
                f"{tuple(input_shape)}")
        return (input_shape[0], oh, ow)

    def forward(self, x, training=False):
        x = _ops.as_float(x)
        out = idx = None
        ctx = as_context(training)
        if ctx.training and ctx.arena is not None:
            shape = (x.shape[0],) + self.output_shape
            out = ctx.buffer(self, "y", shape, x.dtype)
            idx = ctx.buffer(self, "indices", shape, np.int64)
        y, idx = self._op.forward(x, out, idx)
        if ctx.training:
            self._idx, self._shape, self._y = idx, x.shape, y
        return y

    def backward(self, grad, ctx=None, prologue=None):
        """The gradient with respect to the input; with
        ``prologue="relu"``, with respect to the input of the :class:`ReLU`
        before this layer, in the same pass (bit for bit what that ReLU's
        backward gives).  That pass reads this layer's last output, which
        the layers after it must not have changed in place (cnnkit's layers
        never write their inputs)."""
        grad = _ops.as_float(grad, _kept(self, self._y).dtype)
        out = as_context(ctx).buffer(self, "gx", self._shape, grad.dtype)
        return self._op.backward(grad, self._idx, self._shape, out,
                                 self._y if prologue == "relu" else None)

    def clear_cache(self):
        self._idx = self._shape = self._y = None

    def get_config(self):
        config = {"pool_size": list(self.pool_size),
                  "stride": list(self.stride),
                  "padding": list(self.padding)}
        if self.ceil_mode:     # absent when False: files stay as before
            config["ceil_mode"] = True
        return config


class AvgPool2D(MaxPool2D):
    """2-D average pooling, PyTorch's ``nn.AvgPool2d``.

    Parameters
    ----------
    pool_size, stride
        The window and its step, as for :class:`MaxPool2D` (the stride
        defaults to the window).
    padding : int or (int, int), default 0
        Zeros on each side, at most half the pool size.
    count_include_pad : bool, default True
        Whether padded zeros count in the divisor.
    ceil_mode : bool, default False
        Round the output size up, as :class:`MaxPool2D`; with
        ``count_include_pad`` a last window reaching past the padding
        divides by its part inside the padded input (PyTorch's rule).
    """

    backward_prologues = frozenset()
    _name = "AvgPool2D"

    def __init__(self, pool_size, stride=None, padding=0,
                 count_include_pad=True, ceil_mode=False, name=None):
        self.count_include_pad = bool(count_include_pad)
        super().__init__(pool_size, stride, padding, ceil_mode, name)

    def _make_op(self):
        return _ops.AvgPool2DOp(self.pool_size, self.stride, self.padding,
                                self.count_include_pad, self.ceil_mode)

    def forward(self, x, training=False):
        x = _ops.as_float(x)
        if training:
            self._shape = x.shape
        return self._op.forward(x)

    def backward(self, grad, ctx=None):
        return self._op.backward(_ops.as_float(grad), self._shape)

    def get_config(self):
        config = super().get_config()
        config["count_include_pad"] = self.count_include_pad
        return config


class GlobalAvgPool2D(Layer):
    """Mean of each channel over its plane: (C, H, W) -> (C,)."""

    def __init__(self, name=None):
        super().__init__(name)
        self._shape = None
        self._op = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"GlobalAvgPool2D expects input of shape (C, H, W) per "
                f"sample; got {tuple(input_shape)}")
        if input_shape[1] < 1 or input_shape[2] < 1:
            raise ValueError(f"GlobalAvgPool2D: the input of shape "
                             f"{tuple(input_shape)} has an empty plane")
        plane = tuple(input_shape[1:])
        self._op = _ops.AvgPool2DOp(plane, plane, (0, 0))
        return (input_shape[0],)

    def forward(self, x, training=False):
        x = _ops.as_float(x)
        if training:
            self._shape = x.shape
        op = self._op
        if op is None or op.kernel_size != x.shape[2:]:
            op = _ops.AvgPool2DOp(x.shape[2:], x.shape[2:], (0, 0))
        return op.forward(x).reshape(x.shape[:2])

    def backward(self, grad, ctx=None):
        shape = self._shape
        grad = _ops.as_float(grad).reshape(shape[:2] + (1, 1))
        op = self._op
        if op is None or op.kernel_size != shape[2:]:
            op = _ops.AvgPool2DOp(shape[2:], shape[2:], (0, 0))
        return op.backward(grad, shape)


class GlobalMaxPool2D(Layer):
    """Maximum of each channel over its plane: (C, H, W) -> (C,), as
    PyTorch's ``adaptive_max_pool2d(x, 1)`` flattened.

    A NaN in a plane propagates; the gradient of a plane goes to its first
    maximum (row-major order).
    """

    def __init__(self, name=None):
        super().__init__(name)
        self._op = _ops.GlobalMaxPool2DOp()
        self._idx = None
        self._shape = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"GlobalMaxPool2D expects input of shape (C, H, W) per "
                f"sample; got {tuple(input_shape)}")
        if input_shape[1] < 1 or input_shape[2] < 1:
            raise ValueError(f"GlobalMaxPool2D: the input of shape "
                             f"{tuple(input_shape)} has an empty plane")
        return (input_shape[0],)

    def forward(self, x, training=False):
        x = _ops.as_float(x)
        out = idx = None
        ctx = as_context(training)
        if ctx.training and ctx.arena is not None:
            out = ctx.buffer(self, "y", x.shape[:2], x.dtype)
            idx = ctx.buffer(self, "indices", x.shape[:2], np.int64)
        y, idx = self._op.forward(x, out, idx)
        if ctx.training:
            self._idx, self._shape = idx, x.shape
        return y

    def backward(self, grad, ctx=None):
        idx = _kept(self, self._idx)
        grad = _ops.as_float(grad)
        out = as_context(ctx).buffer(self, "gx", self._shape, grad.dtype)
        return self._op.backward(grad, idx, self._shape, out)

    def clear_cache(self):
        self._idx = self._shape = None


class Flatten(Layer):
    """Flattens each sample to a vector, in C order (as ``torch.flatten``)."""

    def __init__(self, name=None):
        super().__init__(name)
        self._shape = None

    def compute_output_shape(self, input_shape):
        size = check_elements(input_shape, f"Flatten: an input of shape "
                                           f"{tuple(input_shape)}")
        return (size,)

    def forward(self, x, training=False):
        if training:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad, ctx=None):
        return grad.reshape(self._shape)


class Dense(_Affine):
    """Fully connected layer, ``y = x @ W.T + b`` (PyTorch's ``nn.Linear``).

    Parameters
    ----------
    units : int
        Number of outputs.
    use_bias : bool, default True
    """

    # the weight gradient of a training step's shards, added tile by tile
    # in cache (cnnkit_dense_weight_tree): no copy of W per shard
    tree_sum_grads = ("weight",)

    def __init__(self, units, use_bias=True, name=None):
        super().__init__(name)
        self.units = check_int(units, "units", 1, "Dense")
        self.use_bias = bool(use_bias)
        self._op = _ops.DenseOp()

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

    def get_config(self):
        return {"units": self.units, "use_bias": self.use_bias}


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability
    ``rate`` and scale the rest by ``1 / (1 - rate)``; identity otherwise.

    The mask is drawn from the model's seeded generator (:attr:`rng`, given
    by the model when it is built), so training is reproducible.  When the
    step context names a window ``(n, lo, hi)`` (this batch is the part
    ``[lo, hi)`` of a global batch of ``n``), the rows ``[lo, hi)`` of the
    global batch's mask are drawn, so every part of it matches.
    """

    transparent = True

    def __init__(self, rate, name=None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"Dropout: rate must be a float, got {rate!r}")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = None
        self._mask = None

    def forward(self, x, training=False):
        if not training:
            return x
        if self.rate == 0.0:
            self._mask = None
            return x
        ctx = as_context(training)
        rng = self.rng if self.rng is not None else np.random.default_rng()
        draw = ctx.buffer(self, "draw", x.shape, np.float64)
        if ctx.window is None:
            draw = rng.random(x.shape, out=draw)
        else:
            n, lo, hi = ctx.window
            draw = _window_draw(rng, n, lo, hi, x.shape[1:], draw)
        keep = np.greater_equal(draw, self.rate,
                                out=ctx.buffer(self, "keep", x.shape,
                                               np.bool_))
        self._mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - self.rate)),
                                 out=ctx.buffer(self, "mask", x.shape,
                                                x.dtype),
                                 dtype=x.dtype)
        return np.multiply(x, self._mask,
                           out=ctx.buffer(self, "y", x.shape, x.dtype))

    def backward(self, grad, ctx=None):
        if self._mask is None:
            return grad
        return np.multiply(grad, self._mask,
                           out=as_context(ctx).buffer(self, "gx", grad.shape,
                                                      grad.dtype))

    def initialize(self, rng, followed_by_relu):
        """Take the model's generator, which draws the masks."""
        self.rng = rng

    def skip_batch(self, n):
        if self.rate > 0.0 and self.rng is not None:
            _window_draw(self.rng, n, 0, 0, tuple(self.input_shape))

    def clear_cache(self):
        self._mask = None

    def get_config(self):
        return {"rate": self.rate}



class _Activation(Layer):
    """An element-wise (or, for :class:`Softmax` and :class:`LogSoftmax`,
    row-wise) activation without parameters: ``forward`` keeps its input
    for ``backward``, whose kernels take it.  Subclasses give the two
    passes as ``_forward(x, out)`` and ``_backward(grad, x, out)``."""

    def __init__(self, name=None):
        super().__init__(name)
        self._x = None

    def forward(self, x, training=False):
        ctx = as_context(training)
        x = _ops.as_float(x)
        if ctx.training:
            self._x = x
            return self._forward(x, ctx.buffer(self, "y", x.shape, x.dtype))
        return self._forward(x, None)

    def backward(self, grad, ctx=None):
        x = _kept(self, self._x)
        grad = _ops.as_float(grad, x.dtype)
        return self._backward(
            grad, x, as_context(ctx).buffer(self, "gx", x.shape, x.dtype))

    def clear_cache(self):
        self._x = None


class LeakyReLU(_Activation):
    """Leaky ReLU, ``x`` where ``x > 0`` else ``negative_slope * x``
    (PyTorch's ``nn.LeakyReLU``); any input shape.

    Parameters
    ----------
    negative_slope : float, default 0.01
        Any finite real number.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.layers import LeakyReLU
    >>> LeakyReLU(0.1).forward(np.array([[-2.0, 3.0]]))
    array([[-0.2,  3. ]])
    """

    _name_prefix = "leaky_relu"

    def __init__(self, negative_slope=0.01, name=None):
        super().__init__(name)
        if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
                negative_slope, numbers.Real):
            raise TypeError(f"LeakyReLU: negative_slope must be a real "
                            f"number, got {negative_slope!r}")
        if not math.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU: negative_slope must be finite, got "
                             f"{negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _forward(self, x, out):
        return _ops.leaky_relu_forward(x, self.negative_slope, out)

    def _backward(self, grad, x, out):
        return _ops.leaky_relu_backward(grad, x, self.negative_slope, out)

    def get_config(self):
        return {"negative_slope": self.negative_slope}


class Sigmoid(_Activation):
    """Logistic sigmoid, ``1 / (1 + exp(-x))`` (PyTorch's ``nn.Sigmoid``);
    any input shape."""

    def _forward(self, x, out):
        return _ops.sigmoid_forward(x, out)

    def _backward(self, grad, x, out):
        return _ops.sigmoid_backward(grad, x, out)


class Tanh(_Activation):
    """Hyperbolic tangent (PyTorch's ``nn.Tanh``); any input shape."""

    def _forward(self, x, out):
        return _ops.tanh_forward(x, out)

    def _backward(self, grad, x, out):
        return _ops.tanh_backward(grad, x, out)


class SiLU(_Activation):
    """Sigmoid linear unit (swish), ``x * sigmoid(x)`` (PyTorch's
    ``nn.SiLU``); any input shape."""

    _name_prefix = "silu"

    def _forward(self, x, out):
        return _ops.silu_forward(x, out)

    def _backward(self, grad, x, out):
        return _ops.silu_backward(grad, x, out)


class GELU(_Activation):
    """Gaussian error linear unit, ``x * Phi(x)`` (PyTorch's ``nn.GELU``);
    any input shape.

    Parameters
    ----------
    approximate : {"none", "tanh"}, default "none"
        ``"tanh"`` takes the tanh approximation of :math:`\\Phi`.
    """

    def __init__(self, approximate="none", name=None):
        super().__init__(name)
        if not isinstance(approximate, str):
            raise TypeError(f"GELU: approximate must be 'none' or 'tanh', "
                            f"got {approximate!r}")
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', "
                             f"got {approximate!r}")
        self.approximate = approximate

    def _forward(self, x, out):
        return _ops.gelu_forward(x, self.approximate == "tanh", out)

    def _backward(self, grad, x, out):
        return _ops.gelu_backward(grad, x, self.approximate == "tanh", out)

    def get_config(self):
        return {"approximate": self.approximate}


class Softmax(_Activation):
    """Probabilities over the class axis of ``(N, classes)``: each row's
    softmax (PyTorch's ``nn.Softmax(dim=1)``).

    A model trains with softmax cross-entropy on its outputs and
    :meth:`~cnnkit.Model.predict_proba` applies a softmax to them, so a
    classifier trained by cnnkit ends in its logits; this layer is for
    probabilities inside a network (attention-like gates, say) and for
    models that must output them.
    """

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (classes,) "
                f"per sample; got {tuple(input_shape)}")
        return tuple(input_shape)

    def _forward(self, x, out):
        if x.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects input of shape "
                             f"(N, classes); got {x.shape}")
        return _ops.softmax(x, out)

    def _backward(self, grad, x, out):
        return _ops.softmax_backward(grad, x, out)


class LogSoftmax(Softmax):
    """Log-probabilities over the class axis of ``(N, classes)``: each
    row's log-softmax (PyTorch's ``nn.LogSoftmax(dim=1)``)."""

    _name_prefix = "log_softmax"

    def _forward(self, x, out):
        if x.ndim != 2:
            raise ValueError(f"LogSoftmax expects input of shape "
                             f"(N, classes); got {x.shape}")
        return _ops.log_softmax(x, out)

    def _backward(self, grad, x, out):
        return _ops.log_softmax_backward(grad, x, out)


class _Merge(Layer):
    """A layer over a list of two or more tensors of one shape (or, for
    :class:`Concatenate`, shapes that differ along its axis)."""

    num_inputs = None

    def __init__(self, name=None):
        super().__init__(name)
        self._xs = None

    def _check_list(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2 or \
                not all(isinstance(s, tuple) for s in shapes):
            raise ValueError(
                f"{type(self).__name__} takes a list of two or more tensors "
                f"(in a graph model, cnnkit.Model); got one input of shape "
                f"{tuple(shapes)}")

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        first = input_shape[0]
        for s in input_shape[1:]:
            if s != first:
                raise ValueError(
                    f"{type(self).__name__} needs inputs of one shape; got "
                    f"{' and '.join(map(str, input_shape))}")
        return first

    def clear_cache(self):
        self._xs = None

    def _inputs(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise TypeError(f"{type(self).__name__} takes a list of two or "
                            f"more arrays, got {type(xs).__name__}")
        xs = [_ops.as_float(x) for x in xs]
        dt = np.result_type(*xs)
        return [x.astype(dt, copy=False) for x in xs], dt

    def _fold(self, mul, xs, ctx, relu=False):
        """``((x0 op x1) op x2) ...`` in list order (op: + or *, one IEEE
        operation per element), then with relu a ReLU, into a kept array
        while training; returns it and the inputs as computed with.  Two
        inputs the C pass reads in place take that one pass on the threads
        (:func:`_ops.eltwise_in_place`), others NumPy's, then the ReLU's
        own."""
        xs, dt = self._inputs(xs)
        out = ctx.buffer(self, "y", xs[0].shape, dt)
        if len(xs) == 2 and _ops.eltwise_in_place(xs[0], xs[1]):
            return _ops.eltwise(xs[0], xs[1], mul, relu, out), xs
        ufunc = np.multiply if mul else np.add
        y = ufunc(xs[0], xs[1], out=out)
        for x in xs[2:]:
            ufunc(y, x, out=y)
        if relu:
            y = _ops.relu_forward(y, ctx.buffer(self, "relu", y.shape, dt))
        return y, xs


class Add(_Merge):
    """The sum of its inputs, ``((x0 + x1) + x2) + ...`` in list order
    (Keras's ``Add``; the residual connection of a ResNet block).

    Examples
    --------
    >>> import cnnkit
    >>> from cnnkit import layers as L
    >>> inp = cnnkit.Input((4, 8, 8))
    >>> y = L.Add()([inp, L.Conv2D(4, 3, padding=1)(inp)])
    >>> y.shape
    (4, 8, 8)
    """

    forward_epilogues = frozenset({"relu"})

    def forward(self, xs, training=False, epilogue=None):
        """The sum; with ``epilogue="relu"`` (see
        :attr:`Layer.forward_epilogues`), the ReLU after it applied in the
        same pass, with its bits."""
        self._xs = len(xs)
        return self._fold(False, xs, as_context(training),
                          relu=epilogue == "relu")[0]

    def backward(self, grad, ctx=None):
        """The gradient reaches every input unchanged (one array, read
        only)."""
        return [grad] * self._xs


class Multiply(_Merge):
    """The element-wise product of its inputs, ``((x0 * x1) * x2) * ...``
    in list order (Keras's ``Multiply``; gates and attention masks)."""

    def forward(self, xs, training=False):
        ctx = as_context(training)
        y, xs = self._fold(True, xs, ctx)
        if ctx.training:
            self._xs = xs
        return y

    def backward(self, grad, ctx=None):
        """Input ``i``'s gradient: ``grad`` times the other inputs, in list
        order."""
        xs = self._xs
        out = []
        for i in range(len(xs)):
            g = grad
            for j, x in enumerate(xs):
                if j != i:
                    g = g * x
            out.append(g)
        return out


class Concatenate(_Merge):
    """Its inputs joined along ``axis`` (default 1: channels of (N, C, H, W),
    as ``torch.cat(xs, dim=1)``; Inception and DenseNet blocks).

    Parameters
    ----------
    axis : int, default 1
        The axis of the batched arrays (0 is the batch, which cannot be
        joined); negative counts from the end.
    """

    def __init__(self, axis=1, name=None):
        super().__init__(name)
        self.axis = check_int(axis, "axis", owner="Concatenate")
        if self.axis == 0:
            raise ValueError("Concatenate: axis 0 is the batch axis; join "
                             "along 1 (channels) or a later axis")
        self._sizes = None

    def _sample_axis(self, ndim):
        """The axis within one sample's shape (no batch axis)."""
        axis = self.axis - 1 if self.axis > 0 else self.axis + ndim
        if not 0 <= axis < ndim:
            raise ValueError(f"Concatenate: axis {self.axis} is out of range "
                             f"for samples of {ndim} axes")
        return axis

    def compute_output_shape(self, input_shape):
        self._check_list(input_shape)
        first = input_shape[0]
        axis = self._sample_axis(len(first))
        for s in input_shape[1:]:
            if len(s) != len(first) or any(
                    a != b for k, (a, b) in enumerate(zip(s, first))
                    if k != axis):
                raise ValueError(
                    f"Concatenate needs inputs that differ only along axis "
                    f"{self.axis}; got {' and '.join(map(str, input_shape))}")
        size = sum(s[axis] for s in input_shape)
        return first[:axis] + (size,) + first[axis + 1:]

    def forward(self, xs, training=False):
        xs, dt = self._inputs(xs)
        axis = self._sample_axis(xs[0].ndim - 1) + 1
        self._sizes = [x.shape[axis] for x in xs]
        shape = list(xs[0].shape)
        shape[axis] = sum(self._sizes)
        out = as_context(training).buffer(self, "y", tuple(shape), dt)
        return np.concatenate(xs, axis=axis, out=out)

    def backward(self, grad, ctx=None):
        """Each input's slice of ``grad`` (views)."""
        axis = self._sample_axis(grad.ndim - 1) + 1
        edges = np.cumsum([0] + self._sizes)
        index = [slice(None)] * grad.ndim
        out = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            index[axis] = slice(int(lo), int(hi))
            out.append(grad[tuple(index)])
        return out

    def get_config(self):
        return {"axis": self.axis}


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


class BatchNorm2D(Layer):
    r"""Batch normalisation over channels, PyTorch's ``nn.BatchNorm2d``.

    In training, each channel is normalised with the mean and the biased
    variance of the batch over (N, H, W), and the running statistics are
    updated (``running = (1 - momentum) * running + momentum * batch``,
    with the unbiased variance); otherwise the running statistics are
    used.  Inside :meth:`cnnkit.Sequential.fit` the statistics are those
    of the whole global batch, formed from the sums of its fixed shards
    added in the fixed tree, on one process or over MPI ranks alike.

    Parameters
    ----------
    momentum : float in [0, 1] or None, default 0.1
        Weight of each batch in the running statistics; None for their
        cumulative average (PyTorch's ``momentum=None``).
    eps : float >= 0, default 1e-5
        Added to the variance.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (initially 1) and shift
        ``bias`` (initially 0).

    Notes
    -----
    ``state_dict`` entries, in PyTorch's order: ``weight``, ``bias``
    (parameters), ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` (an int64 scalar), the buffers, which the
    optimizer never changes.

    Examples
    --------
    >>> from cnnkit.layers import BatchNorm2D
    >>> bn = BatchNorm2D()
    >>> bn.build((16, 8, 8))
    (16, 8, 8)
    >>> bn.param_shapes((16, 8, 8))
    {'weight': (16,), 'bias': (16,)}
    >>> list(bn.buffer_shapes((16, 8, 8)))
    ['running_mean', 'running_var', 'num_batches_tracked']
    """

    per_shard_grads = True
    forward_epilogues = frozenset({"relu"})
    backward_epilogues = frozenset({"relu"})
    _name_prefix = "batch_norm2d"
    _sample_ndim = 3
    _layout = "(C, H, W)"

    def __init__(self, momentum=0.1, eps=1e-5, affine=True, name=None):
        super().__init__(name)
        cls = type(self).__name__
        if momentum is not None:
            if isinstance(momentum, bool) or \
                    not isinstance(momentum, numbers.Real):
                raise TypeError(f"{cls}: momentum must be a float or None, "
                                f"got {momentum!r}")
            if not 0.0 <= momentum <= 1.0:
                raise ValueError(f"{cls}: momentum must be in [0, 1], got "
                                 f"{momentum}")
            momentum = float(momentum)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise TypeError(f"{cls}: eps must be a float, got {eps!r}")
        if not eps >= 0.0:
            raise ValueError(f"{cls}: eps must be >= 0, got {eps}")
        self.momentum = momentum
        self.eps = float(eps)
        self.affine = bool(affine)
        self._kept = None

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self._sample_ndim:
            raise ValueError(
                f"{type(self).__name__} expects input of shape "
                f"{self._layout} per sample; got {tuple(input_shape)}")
        return tuple(input_shape)

    def param_shapes(self, input_shape):
        c = (int(input_shape[0]),)
        return {"weight": c, "bias": c} if self.affine else {}

    def buffer_shapes(self, input_shape):
        c = (int(input_shape[0]),)
        return {"running_mean": (c, None), "running_var": (c, None),
                "num_batches_tracked": ((), np.dtype(np.int64))}

    def initialize(self, rng, followed_by_relu):
        """weight 1, bias 0 (PyTorch's initialisation)."""
        if self.affine:
            self.params["weight"][...] = 1
            self.params["bias"][...] = 0

    def reset_buffers(self):
        """running_mean 0, running_var 1, num_batches_tracked 0."""
        b = self.buffers
        if b:
            b["running_mean"][...] = 0
            b["running_var"][...] = 1
            b["num_batches_tracked"][...] = 0

    def _factor(self):
        """The running update's momentum for the batch being counted."""
        if self.momentum is not None:
            return self.momentum
        return 1.0 / float(self.buffers["num_batches_tracked"])

    def _update_running(self, mean, var, count):
        b = self.buffers
        if not b:
            return
        b["num_batches_tracked"][...] += 1
        _ops.batch_norm_update_running(b["running_mean"], b["running_var"],
                                       mean, var, count, self._factor())

    def forward(self, x, training=False, epilogue=None):
        """The normalised batch; with ``epilogue="relu"`` (see
        :attr:`Layer.forward_epilogues`), the ReLU after it applied in the
        same pass, with its bits."""
        ctx = as_context(training)
        relu = epilogue == "relu"
        rm, rv = self.buffers.get("running_mean"), \
            self.buffers.get("running_var")
        w, b = self.params.get("weight"), self.params.get("bias")
        dt = rm.dtype if rm is not None else None
        x = _ops.as_float(x, dt)
        if x.ndim != self._sample_ndim + 1:
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape "
                f"(N,) + {self._layout}; got {x.shape}")
        if not ctx.training:
            if rm is None:
                raise ValueError(f"{type(self).__name__} {self.name!r}: no "
                                 f"running statistics (build it in a "
                                 f"model first)")
            return _ops.batch_norm_inference(x, rm, rv, w, b, self.eps,
                                             relu=relu)[0]
        sums = getattr(ctx, "batch_sums", None)
        hw = math.prod(x.shape[2:])
        count = (x.shape[0] if sums is None else sums.n) * hw
        if count <= 1:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: training needs more "
                f"than one value per channel; got a batch of shape "
                f"{x.shape}")
        if sums is None:
            mean, var = _ops.batch_norm_statistics(x, count)
        else:
            mean, var = _ops.batch_norm_statistics(x, count, sums.bounds,
                                                   sums.sum)
        mean_r = mean.astype(x.dtype)
        invstd = _ops.batch_norm_invstd(var, self.eps, x.dtype)
        y = _ops.batch_norm_forward(
            x, mean_r, invstd, w, b,
            ctx.buffer(self, "y", x.shape, x.dtype), relu=relu)
        self._update_running(mean, var, count)
        self._kept = (x, mean_r, invstd, count)
        return y

    def backward(self, grad, ctx=None, epilogue=None):
        """The input's gradient (parameter gradients into ``grads``); with
        ``epilogue="relu"`` (see :attr:`Layer.backward_epilogues`),
        ``grad`` is that of the ReLU the forward pass applied, taken
        through it in the same passes, with the bits of its backward."""
        ctx = as_context(ctx)
        x, mean, invstd, count = _kept(self, self._kept)
        grad = _ops.as_float(grad, x.dtype)
        relu = epilogue == "relu"
        w, b = self.params.get("weight"), self.params.get("bias")
        sums = getattr(ctx, "batch_sums", None)
        parts = _ops.batch_norm_backward_sums(
            grad, x, mean, invstd, None if sums is None else sums.bounds,
            w, b, relu)
        total = parts[0] if sums is None else sums.sum(parts)
        if self.affine:
            shard = ctx.shard_parts(self)
            if shard is not None:
                dest = shard[1]
                dest["weight"][...] = parts[:, 1]
                dest["bias"][...] = parts[:, 0]
            else:
                self.grads["weight"][...] = total[1]
                self.grads["bias"][...] = total[0]
        if not ctx.needs_input_grad():
            return None
        return _ops.batch_norm_backward(
            grad, x, mean, invstd, w, total, float(count),
            ctx.buffer(self, "gx", x.shape, x.dtype), b, relu)

    def skip_exchange(self, ctx, backward):
        sums = getattr(ctx, "batch_sums", None)
        if sums is None:
            return
        c = self.input_shape[0]
        local = sums.bounds.shape[0] - 1
        if backward:
            sums.sum(np.zeros((local, 2, c)))
            return
        count = sums.n * math.prod(self.input_shape[1:])
        if count <= 1:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: training needs more "
                f"than one value per channel")
        zero = np.zeros((local, c))
        mean = sums.sum(zero) / count
        var = sums.sum(zero) / count
        self._update_running(mean, var, count)

    def clear_cache(self):
        self._kept = None

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps,
                "affine": self.affine}


class BatchNorm1D(BatchNorm2D):
    """Batch normalisation of features, PyTorch's ``nn.BatchNorm1d`` on
    (N, C) (after :class:`Dense`): :class:`BatchNorm2D`'s statistics over
    the batch axis alone, with the same parameters and buffers.

    Parameters
    ----------
    momentum, eps, affine
        As for :class:`BatchNorm2D`.

    Examples
    --------
    >>> from cnnkit.layers import BatchNorm1D
    >>> BatchNorm1D().build((32,))
    (32,)
    """

    _name_prefix = "batch_norm1d"
    _sample_ndim = 1
    _layout = "(C,)"


#: The layer types a saved model may name; loading builds only these.
LAYERS = {cls.__name__: cls for cls in
          (Conv2D, ReLU, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten,
           Dense, Dropout, Add, Multiply, Concatenate, BatchNorm2D,
           BatchNorm1D, DepthwiseConv2D, GlobalMaxPool2D, LeakyReLU, Sigmoid,
           Tanh, SiLU, GELU, Softmax, LogSoftmax)}
