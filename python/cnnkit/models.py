"""Ready-made architectures: LeNet-5, the CIFAR ResNets, a small MobileNet.

Each function returns a new, built, untrained model (a
:class:`cnnkit.Sequential` or a graph :class:`cnnkit.Model`) with its
weights drawn from ``seed``; :func:`get` makes one by name, which is how
``cnnkit train --model NAME`` and ``CNNClassifier(architecture=NAME)`` take
them.

=================  =====================================================
name               network
=================  =====================================================
``"lenet5"``       :func:`lenet5`
``"resnet<d>"``    :func:`resnet` of depth ``d = 6n + 2``: ``"resnet20"``,
                   ``"resnet32"``, ``"resnet44"``, ``"resnet56"``,
                   ``"resnet110"`` (and ``"resnet8"``, ``"resnet14"``, ...)
``"mobilenet"``    :func:`mobilenet`
=================  =====================================================
"""
import functools
import re
import numpy as np

from . import layers as L
from ._checks import check_int
from ._graph import Input
from .model import Model, Sequential

__all__ = ["lenet5", "resnet", "mobilenet", "get", "resolve", "MODELS"]

#: The names :func:`get` takes besides ``"resnet<depth>"``.
MODELS = ("lenet5", "resnet20", "resnet32", "resnet44", "resnet56",
          "resnet110", "mobilenet")


def _check_shape(input_shape, owner):
    """``input_shape`` as a (C, H, W) tuple of positive ints."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(f"{owner}: input_shape must be (channels, height, "
                         f"width), got {input_shape!r}")
    return tuple(check_int(d, "input_shape", 1, owner) for d in shape)


def lenet5(num_classes=10, input_shape=(1, 28, 28), seed=None,
           dtype="float32"):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling.

    Conv 6@5x5 (padding 2), max pool 2, conv 16@5x5, max pool 2, dense 120,
    84 and ``num_classes``, with ReLU between: 61,706 parameters on 1x28x28
    images and 10 classes.

    Parameters
    ----------
    num_classes : int, default 10
    input_shape : (int, int, int), default (1, 28, 28)
        (channels, height, width); height and width at least 12.
    seed : int or None
    dtype : {"float32", "float64"}

    Returns
    -------
    cnnkit.Sequential

    Examples
    --------
    >>> from cnnkit import models
    >>> models.lenet5().count_params()
    61706
    """
    c, h, w = _check_shape(input_shape, "lenet5")
    num_classes = check_int(num_classes, "num_classes", 1, "lenet5")
    if min(h, w) < 12:
        raise ValueError(f"lenet5: input images must be at least 12x12, got "
                         f"{h}x{w}")
    return Sequential([
        L.Conv2D(6, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(16, 5), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
        L.Dense(120), L.ReLU(), L.Dense(84), L.ReLU(),
        L.Dense(num_classes)], input_shape=(c, h, w), seed=seed, dtype=dtype)


def _conv_bn(x, filters, kernel_size, stride, relu, winograd=False):
    """conv (no bias) -> batch norm [-> ReLU]; ``winograd`` for the 3x3
    convolutions of stride 1."""
    winograd = winograd and kernel_size == 3 and stride == 1
    x = L.Conv2D(filters, kernel_size, stride=stride,
                 padding=kernel_size // 2, use_bias=False,
                 winograd=winograd)(x)
    x = L.BatchNorm2D()(x)
    return L.ReLU()(x) if relu else x


def _basic_block(x, filters, stride, channels, winograd):
    """Two 3x3 conv-BN layers and a shortcut: the identity, or a 1x1
    conv-BN projection where the shape changes."""
    y = _conv_bn(x, filters, 3, stride, relu=True, winograd=winograd)
    y = _conv_bn(y, filters, 3, 1, relu=False, winograd=winograd)
    if stride != 1 or channels != filters:
        x = _conv_bn(x, filters, 1, stride, relu=False)
    return L.ReLU()(L.Add()([y, x]))


def resnet(depth=20, num_classes=10, input_shape=(3, 32, 32), width=16,
           seed=None, dtype="float32", winograd=False):
    r"""The CIFAR ResNets of He et al. (2016), with batch normalisation.

    A 3x3 conv of ``width`` channels, then three stages of
    :math:`n = (\text{depth} - 2) / 6` basic blocks (two 3x3 conv-BN
    layers, ReLU between, a shortcut added before the last ReLU) with
    ``width``, ``2 width`` and ``4 width`` channels, the last two stages
    starting with stride 2; global average pooling and a dense layer.
    Where a block changes the shape its shortcut is a 1x1 conv-BN projection
    (the paper's option B; PyTorch's ``torchvision`` ResNets do the same).
    Convolutions have no bias (the batch norm after each has one).

    ResNet-20 has 272,474 parameters at ``width=16`` and 10 classes (the
    paper's 0.27M), ResNet-56 0.86M, ResNet-110 1.7M.

    Parameters
    ----------
    depth : int, default 20
        ``6n + 2`` for some n >= 1: 8, 14, 20, 32, 44, 56, 110, ...
    num_classes : int, default 10
    input_shape : (int, int, int), default (3, 32, 32)
        (channels, height, width); any size of at least 1x1 (the strided
        stages halve it, rounding up).
    width : int, default 16
        Channels of the first stage.
    seed : int or None
    dtype : {"float32", "float64"}
    winograd : bool, default False
        Build the 3x3 convolutions of stride 1 with ``winograd=True``
        (:class:`~cnnkit.layers.Conv2D`): their forward passes and input
        gradients by F(4x4, 3x3) where the shapes allow it, rounded
        differently from the direct sums.

    Returns
    -------
    cnnkit.Model
        Its layers in the order of PyTorch's ``state_dict`` for the same
        network written the usual way (stem conv, stem BN, then per block
        conv1, bn1, conv2, bn2 and, where there is one, the projection's
        conv and BN, then the dense layer), so
        ``model.set_weights(list(torch_model.state_dict().values()))``
        loads a PyTorch twin.

    Examples
    --------
    >>> from cnnkit import models
    >>> net = models.resnet(20, seed=0)
    >>> net.count_params()
    272474
    >>> net.output_shape
    (10,)
    """
    depth = check_int(depth, "depth", 8, "resnet")
    if (depth - 2) % 6:
        raise ValueError(f"resnet: depth must be 6n + 2 (8, 14, 20, 32, 44, "
                         f"56, 110, ...), got {depth}")
    num_classes = check_int(num_classes, "num_classes", 1, "resnet")
    width = check_int(width, "width", 1, "resnet")
    shape = _check_shape(input_shape, "resnet")
    n = (depth - 2) // 6
    inp = Input(shape)
    if not isinstance(winograd, (bool, np.bool_)):
        raise TypeError(f"resnet: winograd must be a bool, got {winograd!r}")
    x = _conv_bn(inp, width, 3, 1, relu=True, winograd=bool(winograd))
    channels = width
    for stage in range(3):
        filters = width * 2 ** stage
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, channels, bool(winograd))
            channels = filters
    x = L.GlobalAvgPool2D()(x)
    out = L.Dense(num_classes)(L.Flatten()(x))
    return Model(inp, out, seed=seed, dtype=dtype)


def mobilenet(num_classes=10, input_shape=(3, 32, 32), width=32, seed=None,
              dtype="float32"):
    """A small network of depthwise-separable blocks, after MobileNet
    (Howard et al., 2017).

    A 3x3 conv-BN-ReLU stem of ``width`` channels, then five blocks of a
    3x3 depthwise conv-BN-ReLU and a 1x1 (pointwise) conv-BN-ReLU, with
    ``2, 4, 4, 8, 8`` times ``width`` output channels and stride 2 in the
    second and fourth; global average pooling and a dense layer.  At
    ``width=32`` it has 136,778 parameters on 3x32x32 images and 10
    classes; a block of K output channels does :math:`1/9 + 1/K` of the
    multiply-adds of a full 3x3 convolution.

    Parameters
    ----------
    num_classes : int, default 10
    input_shape : (int, int, int), default (3, 32, 32)
    width : int, default 32
        Channels of the stem.
    seed : int or None
    dtype : {"float32", "float64"}

    Returns
    -------
    cnnkit.Sequential

    Examples
    --------
    >>> from cnnkit import models
    >>> models.mobilenet(input_shape=(1, 28, 28), seed=0).output_shape
    (10,)
    """
    num_classes = check_int(num_classes, "num_classes", 1, "mobilenet")
    width = check_int(width, "width", 1, "mobilenet")
    shape = _check_shape(input_shape, "mobilenet")
    stack = [L.Conv2D(width, 3, padding=1, use_bias=False),
             L.BatchNorm2D(), L.ReLU()]
    for mult, stride in ((2, 1), (4, 2), (4, 1), (8, 2), (8, 1)):
        stack += [L.DepthwiseConv2D(3, stride=stride, padding=1,
                                    use_bias=False),
                  L.BatchNorm2D(), L.ReLU(),
                  L.Conv2D(width * mult, 1, use_bias=False),
                  L.BatchNorm2D(), L.ReLU()]
    stack += [L.GlobalAvgPool2D(), L.Flatten(), L.Dense(num_classes)]
    return Sequential(stack, input_shape=shape, seed=seed, dtype=dtype)


_RESNET = re.compile(r"resnet(\d+)\Z")


def get(name, input_shape, num_classes, seed=None, dtype="float32"):
    """The architecture ``name`` for ``input_shape`` and ``num_classes``.

    Parameters
    ----------
    name : str
        ``"lenet5"``, ``"resnet<depth>"`` (``"resnet20"``, ...) or
        ``"mobilenet"``; case and ``-``/``_`` are ignored
        (``"ResNet-20"`` works).
    input_shape : (int, int, int)
    num_classes : int
    seed : int or None
    dtype : {"float32", "float64"}

    Returns
    -------
    cnnkit.Model

    Examples
    --------
    >>> from cnnkit import models
    >>> models.get("ResNet-20", (1, 28, 28), 10, seed=0).count_params()
    272186
    """
    return resolve(name)(num_classes=num_classes, input_shape=input_shape,
                         seed=seed, dtype=dtype)


def resolve(name):
    """The function :func:`get` calls for ``name`` (a
    :func:`functools.partial` of :func:`resnet` for ``"resnet<d>"``);
    a ValueError for a name it does not know, a TypeError for a non-str."""
    if not isinstance(name, str):
        raise TypeError(f"models.get: name must be a str, got "
                        f"{type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    if key == "lenet5":
        return lenet5
    if key == "mobilenet":
        return mobilenet
    match = _RESNET.match(key)
    if match:
        depth = int(match.group(1))
        if depth >= 8 and (depth - 2) % 6 == 0:
            return functools.partial(resnet, depth)
    raise ValueError(f"models.get: unknown architecture {name!r}; expected "
                     f"one of {', '.join(MODELS)} or resnet<6n+2>")
