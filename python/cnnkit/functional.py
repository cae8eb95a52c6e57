r"""The functional API: stateless kernels on NumPy arrays.

Each function here normalises its arguments (int-or-pair hyperparameters,
``"same"``/``"valid"`` padding, the 2-D convenience forms, dtype promotion)
and runs the C kernel.  Its pure-NumPy twin in :mod:`cnnkit.reference` takes
the same arguments and returns the same values.

Conventions
-----------
* Layouts follow PyTorch: ``x`` is ``(N, C, H, W)``, convolution weights are
  ``(K, C, R, S)``, dense weights are ``(O, F)``.
* float32 and float64 are computed natively and results keep the input
  dtype.  Integers and bools are promoted to float64, float16 is computed in
  float32, and mixed float inputs follow NumPy's promotion.  Any other dtype
  (complex, object, strings, long double) is a :class:`TypeError`.
* Inputs of any memory order are accepted and never written to; outputs are
  new C-contiguous arrays.
* Bad arguments raise :class:`ValueError` or :class:`TypeError` naming the
  argument, what was expected and what was given.
"""

import math
import numbers

import numpy as np

from . import _kernels, _ops
from ._checks import is_int

__all__ = [
    "conv2d",
    "conv2d_backward",
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "silu",
    "silu_backward",
    "gelu",
    "gelu_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "global_max_pool2d",
    "global_max_pool2d_backward",
    "dense",
    "dense_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "softmax_cross_entropy",
    "conv2d_output_shape",
    "pool2d_output_shape",
    "batch_norm",
    "batch_norm_backward",
    "fold_batch_norm",
]


# --------------------------------------------------------------------------
# argument normalisation
# --------------------------------------------------------------------------
def _as_array(a, name, fn):
    """``a`` as an ndarray whose dtype cnnkit can compute with."""
    if a is None:
        raise TypeError(f"{fn}: {name} must be an array, got None")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{fn}: {name} must be array-like ({exc})") from None
    kind = arr.dtype.kind
    if kind not in "biuf" or arr.dtype.itemsize > 8 and kind == "f":
        raise TypeError(
            f"{fn}: {name} must have a real float, integer or bool dtype; "
            f"got dtype {arr.dtype}")
    return arr


def _compute_dtype(*arrays):
    """The float dtype to compute in: NumPy's promotion of the inputs, with
    integers and bools counted as float64 and float16 computed in float32."""
    dt = arrays[0].dtype
    if (dt == np.float32 or dt == np.float64) and all(
            a is None or a.dtype == dt for a in arrays):
        return dt                          # the common case, decided fast
    dts = [np.float64 if a.dtype.kind in "biu" else a.dtype
           for a in arrays if a is not None]
    dt = np.result_type(*dts)
    if dt == np.float16:
        dt = np.dtype(np.float32)
    return np.dtype(dt)


def _cast(a, dt):
    return None if a is None else a.astype(dt, copy=False)


def _int(v, name, fn):
    if type(v) is int:
        return v
    if not is_int(v):
        raise TypeError(
            f"{fn}: {name} must be an int or a pair of ints, got {v!r}")
    return int(v)


def _pair(v, name, fn):
    """An int or a pair of ints as a tuple (h, w)."""
    if type(v) is int:
        return v, v
    if isinstance(v, (tuple, list, np.ndarray)):
        if len(v) != 2:
            raise ValueError(
                f"{fn}: {name} must be an int or a pair of ints, got {v!r}")
        return _int(v[0], name, fn), _int(v[1], name, fn)
    v = _int(v, name, fn)
    return v, v


def _positive_pair(v, name, fn):
    p = _pair(v, name, fn)
    if p[0] <= 0 or p[1] <= 0:
        raise ValueError(f"{fn}: {name} must be positive, got {v!r}")
    return p


def _conv_padding(padding, kernel_hw, stride, dilation, fn):
    """(top, bottom, left, right) padding for conv2d."""
    if not isinstance(padding, str):
        padding = _pair(padding, "padding", fn)
        if padding[0] < 0 or padding[1] < 0:
            raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    return _ops.conv_padding(padding, kernel_hw, stride, dilation, fn)


def _check_ndim(arr, allowed, name, fn, layout):
    if arr.ndim not in allowed:
        raise ValueError(
            f"{fn}: {name} must be {layout}; got shape {arr.shape}")


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def _conv_groups(groups, x_shape, w_shape, fn):
    """``groups`` checked against x (N, C, H, W) and weight
    (K, C/groups, R, S)."""
    if not is_int(groups):
        raise TypeError(f"{fn}: groups must be an int, got "
                        f"{type(groups).__name__} {groups!r}")
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups}")
    c, k = x_shape[1], w_shape[0]
    if groups == 1:
        return groups               # (the channel check is the caller's)
    if c % groups:
        raise ValueError(
            f"{fn}: groups={groups} must divide the {c} channels of x "
            f"(shape {tuple(x_shape)})")
    if k % groups:
        raise ValueError(
            f"{fn}: groups={groups} must divide the {k} filters of weight "
            f"(shape {tuple(w_shape)})")
    if w_shape[1] != c // groups:
        raise ValueError(
            f"{fn}: with groups={groups}, weight must have {c // groups} "
            f"channels per filter (x has {c}, shape {tuple(x_shape)}); got "
            f"weight shape {tuple(w_shape)}")
    return groups


def _conv_args(fn, x, weight, stride, padding, dilation, groups=1):
    """Validated arrays (4-D forms) and hyperparameters for conv2d.

    Returns x4, w4, stride, pad4, dilation, groups and how to shape the
    result: "2d" (2-D image and kernel), "3d" (one unbatched image) or
    "4d"."""
    x = _as_array(x, "x", fn)
    weight = _as_array(weight, "weight", fn)
    if x.ndim == 2 and weight.ndim == 2:
        form = "2d"
        x4, w4 = x[None, None], weight[None, None]
    else:
        _check_ndim(weight, (4,), "weight", fn,
                    "(out_channels K, in_channels C, R, S) (or 2-D together "
                    "with a 2-D x)")
        _check_ndim(x, (3, 4), "x", fn,
                    "(N, C, H, W) or one image (C, H, W)")
        form = "3d" if x.ndim == 3 else "4d"
        x4 = x[None] if x.ndim == 3 else x
        w4 = weight
    groups = _conv_groups(groups, x4.shape, w4.shape, fn)
    if groups == 1 and x4.shape[1] != w4.shape[1]:
        raise ValueError(
            f"{fn}: x has {x4.shape[1]} channels (shape {x.shape}) but "
            f"weight expects {w4.shape[1]} (shape {weight.shape})")
    stride = _positive_pair(stride, "stride", fn)
    dilation = _positive_pair(dilation, "dilation", fn)
    pad4 = _conv_padding(padding, w4.shape[2:], stride, dilation, fn)
    return x4, w4, stride, pad4, dilation, groups, form


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    r"""2-D convolution (cross-correlation, no kernel flip), as in PyTorch.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        Input images.  One image ``(C, H, W)`` gives a result without the
        batch axis; a 2-D image with a 2-D ``weight`` is one image with one
        channel and gives a 2-D result.
    weight : array_like of shape (K, C / groups, R, S)
        K filters of C / groups channels, R rows and S columns.
    bias : array_like of shape (K,), optional
        Added to every output position of each filter.
    stride, dilation : int or (int, int), default 1
        Step between windows and between kernel taps, per axis.
    padding : int, (int, int), "valid" or "same", default 0
        Zeros added on each side.  ``"same"`` (stride 1 only) keeps H and W,
        putting the odd extra row/column at the bottom/right as PyTorch does.
    groups : int, default 1
        Grouped convolution, as PyTorch's ``groups``: the C channels and the
        K filters are cut into ``groups`` equal runs and filter run q sees
        only channel run q.  ``groups == C`` (with K a multiple of C) is the
        depthwise convolution.

    Returns
    -------
    y : ndarray of shape (N, K, OH, OW)
        With the dtype of the inputs (see the module notes).

    Raises
    ------
    ValueError
        Wrong ndim, channel mismatch, non-positive stride, dilation or
        groups, groups not dividing C and K, negative padding, or a kernel
        larger than the padded input.
    TypeError
        A dtype cnnkit cannot compute with (complex, object, ...), or
        ``groups`` not an int.

    Notes
    -----
    .. math::

        y_{n,k,i,j} = b_k + \sum_{c,r,s} w_{k,c,r,s}\,
            x_{n,\,q C_g + c,\,i s_h - p_h + r d_h,\; j s_w - p_w + s d_w}

    where :math:`C_g = C / \text{groups}`, :math:`q = \lfloor k / (K /
    \text{groups}) \rfloor` is the group of filter k and c runs over
    :math:`0 \ldots C_g - 1` (with one group, q = 0 and c over all
    channels); :math:`OH = \lfloor (H + 2p_h - d_h (R-1) - 1) / s_h
    \rfloor + 1` and likewise OW.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import conv2d
    >>> image = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    >>> kernel = np.array([[1, 0], [0, -1]])
    >>> conv2d(image, kernel)
    array([[-4., -4.],
           [-4., -4.]])
    """
    fn = "conv2d"
    if type(x) is np.ndarray and type(weight) is np.ndarray and \
            x.ndim == 4 and weight.ndim == 4 and \
            (x.dtype == np.float32 or x.dtype == np.float64) and \
            weight.dtype == x.dtype and (bias is None or (
                type(bias) is np.ndarray and bias.dtype == x.dtype)) and \
            type(stride) is int and type(padding) is int and \
            type(dilation) is int and stride >= 1 and dilation >= 1 and \
            padding >= 0 and type(groups) is int and groups >= 1 and \
            x.shape[1] == weight.shape[1] * groups and \
            weight.shape[0] % groups == 0:
        # batched arrays of one float dtype, valid int hyperparameters:
        # nothing to normalise (the kernel checks the rest, with these
        # messages)
        return _kernels.conv2d_forward(x, weight, bias, (stride, stride),
                                       (padding,) * 4, (dilation, dilation),
                                       groups=groups)
    x4, w4, stride, pad4, dilation, groups, form = _conv_args(
        fn, x, weight, stride, padding, dilation, groups)
    if bias is not None:
        bias = _as_array(bias, "bias", fn)
        if form == "2d" and bias.ndim == 0:
            bias = bias.reshape(1)
        if bias.shape != (w4.shape[0],):
            raise ValueError(
                f"{fn}: bias must have shape ({w4.shape[0]},) for weight "
                f"shape {np.shape(weight)}, got {bias.shape}")
    dt = _compute_dtype(x4, w4, bias)
    y = _kernels.conv2d_forward(_cast(x4, dt), _cast(w4, dt), _cast(bias, dt),
                                stride, pad4, dilation, groups=groups)
    if form == "2d":
        return y[0, 0]
    if form == "3d":
        return y[0]
    return y


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1,
                    bias=True, input_grad=True, groups=1):
    r"""Gradients of :func:`conv2d` with respect to x, weight and bias.

    Parameters
    ----------
    grad_out : array_like of shape (N, K, OH, OW)
        Gradient of the loss with respect to the output of the convolution.
    x, weight, stride, padding, dilation, groups
        As given to :func:`conv2d` (including the 2-D and unbatched forms).
    bias : bool, default True
        Whether to compute the bias gradient.
    input_grad : bool, default True
        Whether to compute the input gradient; the first layer of a network
        does not need it, and skipping it saves a third of the work.

    Returns
    -------
    grad_x : ndarray, shape of x, or None when ``input_grad`` is false
    grad_weight : ndarray, shape of weight
    grad_bias : ndarray of shape (K,) or None

    Notes
    -----
    .. math::

        \frac{\partial L}{\partial w_{k,c,r,s}} = \sum_{n,i,j} g_{n,k,i,j}\,
            x_{n,c,\,i s_h - p_h + r d_h,\; j s_w - p_w + s d_w}, \qquad
        \frac{\partial L}{\partial b_k} = \sum_{n,i,j} g_{n,k,i,j}

    and :math:`\partial L / \partial x` scatters :math:`g_{n,k,i,j}\,
    w_{k,c,r,s}` back onto the input position each tap read (a transposed
    convolution).  With groups, channel c of the weight is channel
    :math:`q C_g + c` of x for the group q of filter k (as in
    :func:`conv2d`).  Gradients are overwritten, never accumulated.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import conv2d_backward
    >>> image = np.array([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])
    >>> kernel = np.array([[-1., 0.], [0., 1.]])
    >>> grad_x, grad_kernel, grad_bias = conv2d_backward(
    ...     np.ones((2, 2)), image, kernel)
    >>> grad_kernel            # each tap's four inputs, summed
    array([[12., 16.],
           [24., 28.]])
    >>> grad_x                 # the kernel, added at every window
    array([[-1., -1.,  0.],
           [-1.,  0.,  1.],
           [ 0.,  1.,  1.]])
    >>> grad_bias
    array([4.])
    """
    fn = "conv2d_backward"
    if isinstance(bias, np.ndarray) or not isinstance(bias, (bool, np.bool_)):
        raise TypeError(
            f"{fn}: bias must be True or False (whether to return the bias "
            f"gradient), got {type(bias).__name__}")
    x4, w4, stride, pad4, dilation, groups, form = _conv_args(
        fn, x, weight, stride, padding, dilation, groups)
    g = _as_array(grad_out, "grad_out", fn)
    g4 = {"2d": lambda a: a[None, None] if a.ndim == 2 else a,
          "3d": lambda a: a[None] if a.ndim == 3 else a,
          "4d": lambda a: a}[form](g)
    dt = _compute_dtype(x4, w4, g4)
    gx, gw, gb = _kernels.conv2d_backward(
        _cast(g4, dt), _cast(x4, dt), _cast(w4, dt), stride, pad4, dilation,
        bool(input_grad), bool(bias), groups=groups)
    if form == "2d":
        return None if gx is None else gx[0, 0], gw[0, 0], gb
    if form == "3d":
        return None if gx is None else gx[0], gw, gb
    return gx, gw, gb


def conv2d_output_shape(input_shape, kernel_size, stride=1, padding=0,
                        dilation=1):
    """(OH, OW) of :func:`conv2d` for an input (H, W) and a kernel (R, S).

    Parameters
    ----------
    input_shape : tuple of int
        The input's shape; its last two entries are (H, W), so ``x.shape``
        works as it is.
    kernel_size : int or (int, int)
        (R, S).
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0

    Returns
    -------
    (OH, OW) : tuple of int

    Raises
    ------
    ValueError
        If the (dilated) kernel does not fit in the padded input.

    Examples
    --------
    >>> from cnnkit.functional import conv2d_output_shape
    >>> conv2d_output_shape((28, 28), 3, stride=2, padding=1)
    (14, 14)
    >>> conv2d_output_shape((8, 1, 28, 28), 5, padding="same")
    (28, 28)
    """
    fn = "conv2d_output_shape"
    h, w = _pair(tuple(input_shape)[-2:], "input_shape", fn)
    r, s = _positive_pair(kernel_size, "kernel_size", fn)
    stride = _positive_pair(stride, "stride", fn)
    dilation = _positive_pair(dilation, "dilation", fn)
    pad4 = _conv_padding(padding, (r, s), stride, dilation, fn)
    oh, ow = _ops.conv_output_hw((h, w), (r, s), stride, pad4, dilation)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{fn}: kernel {(r, s)} with dilation {dilation} does not fit in "
            f"the padded input of {(h, w)}")
    return oh, ow


# --------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------
def relu(x):
    r"""Rectified linear unit, :math:`\max(0, x)` elementwise; NaN stays NaN.

    Parameters
    ----------
    x : array_like of any shape

    Returns
    -------
    y : ndarray of the shape of x

    Examples
    --------
    >>> from cnnkit.functional import relu
    >>> relu([-2.0, 0.0, 3.0])
    array([0., 0., 3.])
    """
    x = _as_array(x, "x", "relu")
    dt = _compute_dtype(x)
    return _kernels.relu_forward(x.astype(dt, copy=False))


def relu_backward(grad_out, x):
    r"""Gradient of :func:`relu`: 0 where ``x <= 0``, else ``grad_out``.

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to the output of :func:`relu`.
    x : array_like, shape of grad_out
        The input given to :func:`relu`.

    Returns
    -------
    grad_x : ndarray of the shape of x

    Notes
    -----
    The gradient at ``x == 0`` is 0, and a NaN in ``x`` passes ``grad_out``
    through, as PyTorch's ``threshold_backward`` does.

    Examples
    --------
    >>> from cnnkit.functional import relu_backward
    >>> relu_backward([1.0, 2.0, 3.0], [-1.0, 0.0, 5.0])
    array([0., 0., 3.])
    """
    fn = "relu_backward"
    g = _as_array(grad_out, "grad_out", fn)
    x = _as_array(x, "x", fn)
    if g.shape != x.shape:
        raise ValueError(
            f"{fn}: grad_out must have the shape of x {x.shape}, got "
            f"{g.shape}")
    dt = _compute_dtype(g, x)
    return _kernels.relu_backward(_cast(g, dt), _cast(x, dt))


# --------------------------------------------------------------------------
# leaky ReLU, sigmoid, tanh, SiLU, GELU
# --------------------------------------------------------------------------
def _negative_slope(negative_slope, fn):
    """negative_slope as a finite float."""
    if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
            negative_slope, numbers.Real):
        raise TypeError(f"{fn}: negative_slope must be a real number, got "
                        f"{negative_slope!r}")
    a = float(negative_slope)
    if not math.isfinite(a):
        raise ValueError(f"{fn}: negative_slope must be finite, got "
                         f"{negative_slope!r}")
    return a


def _approximate(approximate, fn):
    """Whether GELU takes its tanh approximation ("tanh") or not ("none")."""
    if not isinstance(approximate, str):
        raise TypeError(f"{fn}: approximate must be 'none' or 'tanh', got "
                        f"{approximate!r}")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{fn}: approximate must be 'none' or 'tanh', got "
                         f"{approximate!r}")
    return approximate == "tanh"


def _unary(fn, x):
    x = _as_array(x, "x", fn)
    return x.astype(_compute_dtype(x), copy=False)


def _unary_backward(fn, grad_out, x):
    g = _as_array(grad_out, "grad_out", fn)
    x = _as_array(x, "x", fn)
    if g.shape != x.shape:
        raise ValueError(
            f"{fn}: grad_out must have the shape of x {x.shape}, got "
            f"{g.shape}")
    dt = _compute_dtype(g, x)
    return _cast(g, dt), _cast(x, dt)


def leaky_relu(x, negative_slope=0.01):
    r"""Leaky rectified linear unit, elementwise: ``x`` where ``x > 0``,
    else ``negative_slope * x``; NaN stays NaN.

    Parameters
    ----------
    x : array_like of any shape
    negative_slope : float, default 0.01
        The slope for ``x <= 0``; any finite real number (rounded to
        float32 for float32 inputs, as in PyTorch).

    Returns
    -------
    y : ndarray of the shape of x

    Raises
    ------
    TypeError
        ``negative_slope`` that is not a real number.
    ValueError
        ``negative_slope`` that is NaN or infinite.

    Notes
    -----
    .. math:: y = \begin{cases} x & x > 0 \\ a x & x \le 0 \end{cases}

    Examples
    --------
    >>> from cnnkit.functional import leaky_relu
    >>> leaky_relu([-2.0, 0.0, 3.0], negative_slope=0.1)
    array([-0.2,  0. ,  3. ])
    """
    a = _negative_slope(negative_slope, "leaky_relu")
    return _kernels.leaky_relu_forward(_unary("leaky_relu", x), a)


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    r"""Gradient of :func:`leaky_relu`: ``grad_out`` where ``x > 0``, else
    ``negative_slope * grad_out`` (so at 0 it is the negative slope's, as in
    PyTorch).

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to the output of
        :func:`leaky_relu`.
    x : array_like, shape of grad_out
        The input given to :func:`leaky_relu`.
    negative_slope : float, default 0.01

    Returns
    -------
    grad_x : ndarray of the shape of x

    Examples
    --------
    >>> from cnnkit.functional import leaky_relu_backward
    >>> leaky_relu_backward([1.0, 1.0, 1.0], [-1.0, 0.0, 2.0], 0.5)
    array([0.5, 0.5, 1. ])
    """
    fn = "leaky_relu_backward"
    a = _negative_slope(negative_slope, fn)
    g, x = _unary_backward(fn, grad_out, x)
    return _kernels.leaky_relu_backward(g, x, a)


def sigmoid(x):
    r"""Logistic sigmoid, :math:`1 / (1 + e^{-x})` elementwise.

    Computed from :math:`e^{-|x|}`, so no input overflows: the result is
    exactly 0 or 1 only where the true value rounds to it.

    Parameters
    ----------
    x : array_like of any shape

    Returns
    -------
    y : ndarray of the shape of x, in [0, 1]

    Examples
    --------
    >>> from cnnkit.functional import sigmoid
    >>> sigmoid([0.0, -1e4, 1e4])
    array([0.5, 0. , 1. ])
    """
    return _kernels.sigmoid_forward(_unary("sigmoid", x))


def sigmoid_backward(grad_out, x):
    r"""Gradient of :func:`sigmoid`: ``grad_out * s * (1 - s)``,
    :math:`s = \sigma(x)`, computed as :math:`e^{-|x|}/(1 + e^{-|x|})^2`
    (exact in both tails).

    Parameters
    ----------
    grad_out : array_like
    x : array_like, shape of grad_out
        The input given to :func:`sigmoid`.

    Returns
    -------
    grad_x : ndarray of the shape of x

    Examples
    --------
    >>> from cnnkit.functional import sigmoid_backward
    >>> sigmoid_backward([1.0, 1.0], [0.0, 1e4])
    array([0.25, 0.  ])
    """
    g, x = _unary_backward("sigmoid_backward", grad_out, x)
    return _kernels.sigmoid_backward(g, x)


def tanh(x):
    r"""Hyperbolic tangent, elementwise.

    Parameters
    ----------
    x : array_like of any shape

    Returns
    -------
    y : ndarray of the shape of x, in [-1, 1]

    Examples
    --------
    >>> from cnnkit.functional import tanh
    >>> tanh([0.0, -1e4])
    array([ 0., -1.])
    """
    return _kernels.tanh_forward(_unary("tanh", x))


def tanh_backward(grad_out, x):
    r"""Gradient of :func:`tanh`: ``grad_out * (1 - y) * (1 + y)``,
    :math:`y = \tanh x`.

    Parameters
    ----------
    grad_out : array_like
    x : array_like, shape of grad_out
        The input given to :func:`tanh`.

    Returns
    -------
    grad_x : ndarray of the shape of x

    Examples
    --------
    >>> from cnnkit.functional import tanh_backward
    >>> tanh_backward([2.0, 2.0], [0.0, 1e4])
    array([2., 0.])
    """
    g, x = _unary_backward("tanh_backward", grad_out, x)
    return _kernels.tanh_backward(g, x)


def silu(x):
    r"""Sigmoid linear unit (swish), :math:`x \sigma(x)` elementwise.

    Parameters
    ----------
    x : array_like of any shape

    Returns
    -------
    y : ndarray of the shape of x

    Notes
    -----
    :math:`\sigma` is taken from :math:`e^{-|x|}` (see :func:`sigmoid`);
    the limits at infinity are kept: ``silu(-inf) == 0``.

    Examples
    --------
    >>> from cnnkit.functional import silu
    >>> silu([0.0, 1e4, -1e4])
    array([    0., 10000.,    -0.])
    """
    return _kernels.silu_forward(_unary("silu", x))


def silu_backward(grad_out, x):
    r"""Gradient of :func:`silu`:
    ``grad_out * s * (1 + x * (1 - s))``, :math:`s = \sigma(x)`.

    Parameters
    ----------
    grad_out : array_like
    x : array_like, shape of grad_out
        The input given to :func:`silu`.

    Returns
    -------
    grad_x : ndarray of the shape of x

    Examples
    --------
    >>> from cnnkit.functional import silu_backward
    >>> silu_backward([1.0, 1.0, 1.0], [0.0, 1e4, -1e4])
    array([0.5, 1. , 0. ])
    """
    g, x = _unary_backward("silu_backward", grad_out, x)
    return _kernels.silu_backward(g, x)


def gelu(x, approximate="none"):
    r"""Gaussian error linear unit, elementwise (PyTorch's ``gelu``).

    Parameters
    ----------
    x : array_like of any shape
    approximate : {"none", "tanh"}, default "none"
        ``"none"``: the exact :math:`x \Phi(x)`; ``"tanh"``: the tanh
        approximation.

    Returns
    -------
    y : ndarray of the shape of x

    Raises
    ------
    TypeError, ValueError
        ``approximate`` other than ``"none"`` or ``"tanh"``.

    Notes
    -----
    .. math::
        y = x\,\Phi(x) = \tfrac{x}{2}\,\mathrm{erfc}(-x/\sqrt2), \qquad
        y_{\tanh} = \tfrac{x}{2}\bigl(1 + \tanh\bigl(\sqrt{2/\pi}\,
        (x + 0.044715\,x^3)\bigr)\bigr)

    ``erfc`` keeps the negative tail that :math:`1 + \mathrm{erf}` would
    round to 0.

    Examples
    --------
    >>> from cnnkit.functional import gelu
    >>> gelu([0.0, 1e4, -1e4])
    array([    0., 10000.,    -0.])
    """
    tanh_approx = _approximate(approximate, "gelu")
    return _kernels.gelu_forward(_unary("gelu", x), tanh_approx)


def gelu_backward(grad_out, x, approximate="none"):
    r"""Gradient of :func:`gelu`: ``grad_out * (Phi(x) + x * phi(x))``
    (exact), or the derivative of the tanh approximation.

    Parameters
    ----------
    grad_out : array_like
    x : array_like, shape of grad_out
        The input given to :func:`gelu`.
    approximate : {"none", "tanh"}, default "none"

    Returns
    -------
    grad_x : ndarray of the shape of x

    Examples
    --------
    >>> from cnnkit.functional import gelu_backward
    >>> gelu_backward([1.0, 1.0, 1.0], [0.0, 1e4, -1e4])
    array([0.5, 1. , 0. ])
    """
    fn = "gelu_backward"
    tanh_approx = _approximate(approximate, fn)
    g, x = _unary_backward(fn, grad_out, x)
    return _kernels.gelu_backward(g, x, tanh_approx)


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
def _pool_args(fn, kernel_size, stride, padding):
    kernel = _positive_pair(kernel_size, "kernel_size", fn)
    stride = kernel if stride is None else _positive_pair(stride, "stride",
                                                          fn)
    pad = _pair(padding, "padding", fn)
    if pad[0] < 0 or pad[1] < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    return kernel, stride, pad


def _ceil_mode(v, fn):
    """ceil_mode as a bool: True, False or a NumPy bool, nothing else."""
    if type(v) is bool or isinstance(v, np.bool_):
        return bool(v)
    raise TypeError(f"{fn}: ceil_mode must be a bool, got {v!r}")


def _to_4d(arr, name, fn):
    _check_ndim(arr, (2, 3, 4), name, fn,
                "(N, C, H, W), (C, H, W) or (H, W)")
    return arr.reshape((1,) * (4 - arr.ndim) + arr.shape)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    r"""2-D max pooling with the argmax of each window.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        Also (C, H, W) or (H, W); the result then has the same number of
        axes.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit ``-inf`` on each side; at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up instead of down, so that a last, partial
        window covers the bottom and right edges; a window that would start
        in the bottom (right) padding is dropped (PyTorch's rule).

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW)
    indices : ndarray of int64, shape of y
        Flat position ``h * W + w`` of each maximum in its input plane, as
        PyTorch's ``return_indices=True``.  Ties go to the first maximum in
        row-major window order; a NaN in a window wins (NaN propagates).

    Notes
    -----
    .. math::

        y_{n,c,i,j} = \max_{0 \le r < k_h,\ 0 \le s < k_w}
            x_{n,c,\,i s_h - p_h + r,\; j s_w - p_w + s}

    with :math:`OH = \lfloor (H + 2p_h - k_h) / s_h \rfloor + 1`; with
    ``ceil_mode`` :math:`OH = \lceil (H + 2p_h - k_h) / s_h \rceil + 1`,
    less one when :math:`(OH - 1) s_h \ge H + p_h`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import max_pool2d
    >>> y, idx = max_pool2d(np.array([[1., 5.], [3., 2.]]), 2)
    >>> y, idx
    (array([[5.]]), array([[1]]))
    >>> max_pool2d(np.arange(9.0).reshape(3, 3), 2, ceil_mode=True)[0]
    array([[4., 5.],
           [7., 8.]])
    """
    fn = "max_pool2d"
    if type(x) is np.ndarray and x.ndim == 4 and \
            (x.dtype == np.float32 or x.dtype == np.float64) and \
            type(kernel_size) is int and kernel_size >= 1 and \
            (stride is None or (type(stride) is int and stride >= 1)) and \
            type(padding) is int and padding >= 0 and \
            type(ceil_mode) is bool:
        # a batch of one float dtype, valid int hyperparameters: nothing to
        # normalise (the kernel checks the rest, with these messages)
        s = kernel_size if stride is None else stride
        return _kernels.max_pool2d_forward(x, (kernel_size, kernel_size),
                                          (s, s), (padding, padding), None,
                                          None, ceil_mode)
    x = _as_array(x, "x", fn)
    x4 = _to_4d(x, "x", fn)
    kernel, stride, pad = _pool_args(fn, kernel_size, stride, padding)
    ceil_mode = _ceil_mode(ceil_mode, fn)
    dt = _compute_dtype(x4)
    y, idx = _kernels.max_pool2d_forward(x4.astype(dt, copy=False), kernel,
                                        stride, pad, None, None, ceil_mode)
    lead = x.shape[:-2]
    return (y.reshape(lead + y.shape[2:]), idx.reshape(lead + idx.shape[2:]))


def max_pool2d_backward(grad_out, indices, input_shape):
    r"""Gradient of :func:`max_pool2d`: ``grad_out`` scattered to the argmax.

    Parameters
    ----------
    grad_out : array_like of shape (N, C, OH, OW)
    indices : array_like of int, shape of grad_out
        As returned by :func:`max_pool2d`.
    input_shape : tuple of int
        Shape of the pooled input, ``(N, C, H, W)`` (or the 3-D / 2-D form
        used in the forward call).

    Returns
    -------
    grad_x : ndarray of shape input_shape
        Overlapping windows add their contributions.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import max_pool2d, max_pool2d_backward
    >>> x = np.array([[1., 5.], [3., 2.]])
    >>> y, idx = max_pool2d(x, 2)
    >>> max_pool2d_backward([[10.]], idx, x.shape)
    array([[ 0., 10.],
           [ 0.,  0.]])
    """
    fn = "max_pool2d_backward"
    g = _as_array(grad_out, "grad_out", fn)
    try:
        shape = tuple(_int(d, "input_shape", fn) for d in input_shape)
    except TypeError as exc:
        if "input_shape" in str(exc):
            raise
        raise TypeError(
            f"{fn}: input_shape must be a tuple of ints, got "
            f"{input_shape!r}") from None
    if len(shape) != g.ndim:
        raise ValueError(
            f"{fn}: input_shape {shape} and grad_out shape {g.shape} must "
            f"have the same number of axes")
    g4 = _to_4d(g, "grad_out", fn)
    ind = np.asarray(indices)
    if ind.shape != g.shape:
        raise ValueError(
            f"{fn}: indices shape {ind.shape} must equal grad_out shape "
            f"{g.shape}")
    ind4 = ind.reshape(g4.shape)
    shape4 = (1,) * (4 - len(shape)) + shape
    dt = _compute_dtype(g4)
    gx = _kernels.max_pool2d_backward(g4.astype(dt, copy=False), ind4, shape4)
    return gx.reshape(shape)


def avg_pool2d(x, kernel_size, stride=None, padding=0,
               count_include_pad=True, ceil_mode=False):
    r"""2-D average pooling, as PyTorch's ``avg_pool2d``.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        Also (C, H, W) or (H, W).
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Zeros on each side; at most half the kernel size.
    count_include_pad : bool, default True
        Divide by the window size with its padding (the window clipped to
        the padded input); otherwise by the number of input elements the
        window covers.
    ceil_mode : bool, default False
        Round the output size up, as :func:`max_pool2d`.

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW)

    Notes
    -----
    .. math::

        y_{n,c,i,j} = \frac{1}{|w|} \sum_{0 \le r < k_h,\ 0 \le s < k_w}
            x_{n,c,\,i s_h - p_h + r,\; j s_w - p_w + s}

    with :math:`|w| = k_h k_w` (``count_include_pad``; with ``ceil_mode`` a
    last window reaching past the padded input counts only its part inside
    it, as PyTorch), sizes as :func:`max_pool2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import avg_pool2d
    >>> avg_pool2d(np.arange(9.0).reshape(3, 3), 2, ceil_mode=True)
    array([[2. , 3.5],
           [6.5, 8. ]])
    """
    fn = "avg_pool2d"
    x = _as_array(x, "x", fn)
    x4 = _to_4d(x, "x", fn)
    kernel, stride, pad = _pool_args(fn, kernel_size, stride, padding)
    ceil_mode = _ceil_mode(ceil_mode, fn)
    dt = _compute_dtype(x4)
    y = _kernels.avg_pool2d_forward(x4.astype(dt, copy=False), kernel, stride,
                                   pad, bool(count_include_pad), ceil_mode)
    return y.reshape(x.shape[:-2] + y.shape[2:])


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None,
                        padding=0, count_include_pad=True, ceil_mode=False):
    """Gradient of :func:`avg_pool2d`: each output's gradient spread evenly
    over its window.

    Parameters
    ----------
    grad_out : array_like of shape (N, C, OH, OW)
        Also (C, OH, OW) or (OH, OW), as the forward output.
    input_shape : tuple of int
        Shape of the pooled input.
    kernel_size, stride, padding, count_include_pad, ceil_mode
        As given to :func:`avg_pool2d`.

    Returns
    -------
    grad_x : ndarray of shape input_shape

    Examples
    --------
    >>> from cnnkit.functional import avg_pool2d_backward
    >>> avg_pool2d_backward([[1.0]], (2, 2), 2)
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    fn = "avg_pool2d_backward"
    g = _as_array(grad_out, "grad_out", fn)
    shape = tuple(_int(d, "input_shape", fn) for d in input_shape)
    if len(shape) != g.ndim:
        raise ValueError(
            f"{fn}: input_shape {shape} and grad_out shape {g.shape} must "
            f"have the same number of axes")
    g4 = _to_4d(g, "grad_out", fn)
    shape4 = (1,) * (4 - len(shape)) + shape
    kernel, stride, pad = _pool_args(fn, kernel_size, stride, padding)
    ceil_mode = _ceil_mode(ceil_mode, fn)
    dt = _compute_dtype(g4)
    gx = _kernels.avg_pool2d_backward(g4.astype(dt, copy=False), shape4,
                                     kernel, stride, pad,
                                     bool(count_include_pad), ceil_mode)
    return gx.reshape(shape)


def global_avg_pool2d(x):
    r"""Mean over the spatial axes: (N, C, H, W) -> (N, C).

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)

    Returns
    -------
    y : ndarray of shape (N, C)

    Notes
    -----
    .. math:: y_{n,c} = \frac{1}{HW} \sum_{h,w} x_{n,c,h,w}

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import global_avg_pool2d
    >>> global_avg_pool2d(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[1.5, 5.5]])
    """
    fn = "global_avg_pool2d"
    x = _as_array(x, "x", fn)
    _check_ndim(x, (4,), "x", fn, "(N, C, H, W)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{fn}: x has an empty spatial plane, shape "
                         f"{x.shape}")
    return avg_pool2d(x, x.shape[2:]).reshape(x.shape[:2])


def global_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of :func:`global_avg_pool2d`: ``grad_out / (H*W)`` at every
    position of each plane.

    Parameters
    ----------
    grad_out : array_like of shape (N, C)
    input_shape : tuple of int
        (N, C, H, W), the shape of the pooled input.

    Returns
    -------
    grad_x : ndarray of shape input_shape
    """
    fn = "global_avg_pool2d_backward"
    g = _as_array(grad_out, "grad_out", fn)
    shape = tuple(_int(d, "input_shape", fn) for d in input_shape)
    if len(shape) != 4 or g.shape != shape[:2]:
        raise ValueError(
            f"{fn}: grad_out must have shape (N, C) of input_shape (N, C, H, "
            f"W) = {shape}; got {g.shape}")
    return avg_pool2d_backward(g.reshape(shape[:2] + (1, 1)), shape,
                               shape[2:])


def global_max_pool2d(x):
    r"""Maximum over the spatial axes: (N, C, H, W) -> (N, C), with its
    position, as PyTorch's ``adaptive_max_pool2d(x, 1)``.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)

    Returns
    -------
    y : ndarray of shape (N, C)
    indices : ndarray of int64, shape (N, C)
        Flat position ``h * W + w`` of each maximum in its plane.  Ties go
        to the first maximum in row-major order; a NaN wins (NaN
        propagates), as in :func:`max_pool2d`.

    Notes
    -----
    .. math:: y_{n,c} = \max_{h,w} x_{n,c,h,w}

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import global_max_pool2d
    >>> global_max_pool2d(np.array([[[[1., 7.], [7., 2.]]]]))
    (array([[7.]]), array([[1]]))
    """
    fn = "global_max_pool2d"
    x = _as_array(x, "x", fn)
    _check_ndim(x, (4,), "x", fn, "(N, C, H, W)")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{fn}: x has an empty spatial plane, shape "
                         f"{x.shape}")
    dt = _compute_dtype(x)
    return _kernels.global_max_pool2d_forward(x.astype(dt, copy=False))


def global_max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of :func:`global_max_pool2d`: ``grad_out`` at each
    plane's maximum, zero elsewhere.

    Parameters
    ----------
    grad_out : array_like of shape (N, C)
    indices : array_like of int, shape (N, C)
        As returned by :func:`global_max_pool2d`.
    input_shape : tuple of int
        (N, C, H, W), the shape of the pooled input.

    Returns
    -------
    grad_x : ndarray of shape input_shape

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import global_max_pool2d_backward
    >>> global_max_pool2d_backward([[5.]], [[1]], (1, 1, 2, 2))
    array([[[[0., 5.],
             [0., 0.]]]])
    """
    fn = "global_max_pool2d_backward"
    g = _as_array(grad_out, "grad_out", fn)
    try:
        shape = tuple(_int(d, "input_shape", fn) for d in input_shape)
    except TypeError as exc:
        if "input_shape" in str(exc):
            raise
        raise TypeError(
            f"{fn}: input_shape must be a tuple of ints, got "
            f"{input_shape!r}") from None
    if len(shape) != 4 or g.shape != shape[:2]:
        raise ValueError(
            f"{fn}: grad_out must have shape (N, C) of input_shape (N, C, H, "
            f"W) = {shape}; got {g.shape}")
    dt = _compute_dtype(g)
    return _kernels.global_max_pool2d_backward(g.astype(dt, copy=False),
                                              indices, shape)


def pool2d_output_shape(input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False):
    r"""(OH, OW) of :func:`max_pool2d` for an input (H, W).

    Also the output size of :func:`avg_pool2d`.

    Parameters
    ----------
    input_shape : tuple of int
        The input's shape; its last two entries are (H, W).
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
    ceil_mode : bool, default False
        Round up: :math:`\lceil (H + 2p - k) / s \rceil + 1`, less one when
        the last window would start in the bottom (right) padding.

    Returns
    -------
    (OH, OW) : tuple of int

    Raises
    ------
    ValueError
        If the window is larger than the padded input.

    Examples
    --------
    >>> from cnnkit.functional import pool2d_output_shape
    >>> pool2d_output_shape((7, 7), 2)
    (3, 3)
    >>> pool2d_output_shape((7, 7), 3, stride=2, padding=1)
    (4, 4)
    >>> pool2d_output_shape((7, 7), 2, ceil_mode=True)
    (4, 4)
    """
    fn = "pool2d_output_shape"
    h, w = _pair(tuple(input_shape)[-2:], "input_shape", fn)
    kernel, stride, pad = _pool_args(fn, kernel_size, stride, padding)
    ceil_mode = _ceil_mode(ceil_mode, fn)
    oh, ow = _ops.pool_output_hw((h, w), kernel, stride, pad, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{fn}: kernel_size {kernel} is larger than the padded input "
            f"({h + 2 * pad[0]}, {w + 2 * pad[1]})"
            + (" plus stride - 1 (ceil_mode)" if ceil_mode else ""))
    return oh, ow


# --------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------
def _dense_args(fn, x, weight):
    x = _as_array(x, "x", fn)
    weight = _as_array(weight, "weight", fn)
    _check_ndim(x, (1, 2), "x", fn, "(N, F) or one sample (F,)")
    _check_ndim(weight, (1, 2), "weight", fn,
                "(out_features O, in_features F) or one output (F,)")
    x2 = x[None] if x.ndim == 1 else x
    w2 = weight[None] if weight.ndim == 1 else weight
    if x2.shape[1] != w2.shape[1]:
        raise ValueError(
            f"{fn}: x has {x2.shape[1]} features (shape {x.shape}) but "
            f"weight expects {w2.shape[1]} (shape {weight.shape})")
    # result axes: batch unless x is 1-D, outputs unless weight is 1-D
    out_shape = ((x2.shape[0],) if x.ndim == 2 else ()) + \
                ((w2.shape[0],) if weight.ndim == 2 else ())
    return x, weight, x2, w2, out_shape


def dense(x, weight, bias=None):
    r"""Fully connected layer, ``x @ weight.T + bias`` (PyTorch's linear).

    Parameters
    ----------
    x : array_like of shape (N, F)
        One sample ``(F,)`` drops the batch axis from the result.
    weight : array_like of shape (O, F)
        One output ``(F,)`` drops the output axis (the seed example's
        ``np.dot(W, x) + b``).
    bias : array_like of shape (O,), optional
        A scalar when ``weight`` is 1-D.

    Returns
    -------
    y : ndarray of shape (N, O)

    Notes
    -----
    .. math:: y_{n,o} = \sum_f x_{n,f}\, W_{o,f} + b_o

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import dense
    >>> dense(np.zeros(4), np.array([0.5, -0.2, 0.1, 0.4]), 0.1)
    array(0.1)
    """
    fn = "dense"
    if type(x) is np.ndarray and type(weight) is np.ndarray and \
            x.ndim == 2 and weight.ndim == 2 and \
            (x.dtype == np.float32 or x.dtype == np.float64) and \
            weight.dtype == x.dtype and (bias is None or (
                type(bias) is np.ndarray and bias.dtype == x.dtype)):
        # arrays of one float dtype, batch and outputs: nothing to
        # normalise (the kernel checks the shapes, with these messages)
        return _kernels.dense_forward(x, weight, bias)
    x, weight, x2, w2, out_shape = _dense_args(fn, x, weight)
    if bias is not None:
        bias = _as_array(bias, "bias", fn)
        expected = (w2.shape[0],)
        b = bias.reshape(1) if weight.ndim == 1 and bias.ndim == 0 else bias
        if b.shape != expected:
            raise ValueError(
                f"{fn}: bias must have shape {expected} for weight shape "
                f"{weight.shape}, got {bias.shape}")
        bias = b
    dt = _compute_dtype(x2, w2, bias)
    y = _kernels.dense_forward(_cast(x2, dt), _cast(w2, dt), _cast(bias, dt))
    return y.reshape(out_shape)


def dense_backward(grad_out, x, weight, bias=True):
    r"""Gradients of :func:`dense`.

    Parameters
    ----------
    grad_out : array_like of shape (N, O)
        Gradient of the loss with respect to the output of :func:`dense`
        (without the axes that the 1-D forms of ``x`` and ``weight`` drop).
    x, weight
        As given to :func:`dense`.
    bias : bool, default True
        Whether to compute the bias gradient.

    Returns
    -------
    grad_x : ndarray, shape of x
        ``grad_out @ weight``
    grad_weight : ndarray, shape of weight
        ``grad_out.T @ x``
    grad_bias : ndarray of shape (O,) or None
        ``grad_out.sum(axis=0)``, when ``bias`` is true.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import dense_backward
    >>> grad_x, grad_w, grad_b = dense_backward(
    ...     [[1.0, -1.0]], [[1.0, 2.0]], np.eye(2))
    >>> grad_w
    array([[ 1.,  2.],
           [-1., -2.]])
    >>> grad_x, grad_b
    (array([[ 1., -1.]]), array([ 1., -1.]))
    """
    fn = "dense_backward"
    if isinstance(bias, np.ndarray) or not isinstance(bias, (bool, np.bool_)):
        raise TypeError(
            f"{fn}: bias must be True or False (whether to return the bias "
            f"gradient), got {type(bias).__name__}")
    x, weight, x2, w2, out_shape = _dense_args(fn, x, weight)
    g = _as_array(grad_out, "grad_out", fn)
    if g.shape != out_shape:
        raise ValueError(
            f"{fn}: grad_out must have shape {out_shape} for x {x.shape} and "
            f"weight {weight.shape}, got {g.shape}")
    g2 = g.reshape(x2.shape[0], w2.shape[0])
    dt = _compute_dtype(x2, w2, g2)
    gx, gw, gb = _kernels.dense_backward(_cast(g2, dt), _cast(x2, dt),
                                         _cast(w2, dt), True, bool(bias))
    if gb is not None and weight.ndim == 1:
        gb = gb.reshape(())
    return gx.reshape(x.shape), gw.reshape(weight.shape), gb


# --------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------
def _bn_real(v, name, fn, low, high=None):
    """A real number in [low, high] (no upper end when high is None)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got "
                        f"{type(v).__name__}")
    v = float(v)
    if not (v >= low and (high is None or v <= high)):
        where = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{fn}: {name} must be {where}, got {v}")
    return v


def _bn_args(fn, x, weight, bias, running_mean, running_var, training,
             writes_running=True):
    """x as (N, C, H, W) or (N, C) (more than two spatial axes folded into
    one), the channel vectors checked against C, the compute dtype and the
    number of values per channel."""
    x = _as_array(x, "x", fn)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must be (N, C, H, W) or (N, C) (or "
                         f"(N, C, L), (N, C, D, H, W)), got shape {x.shape}")
    c = x.shape[1]
    given = {"weight": weight, "bias": bias, "running_mean": running_mean,
             "running_var": running_var}
    vecs = {}
    for name, v in given.items():
        if v is None:
            vecs[name] = None
            continue
        a = _as_array(v, name, fn)
        if a.shape != (c,):
            raise ValueError(
                f"{fn}: {name} must have shape ({c},), one value per channel "
                f"of x (shape {x.shape}); got {a.shape}")
        vecs[name] = a
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: give both running_mean and running_var, "
                         f"or neither")
    if training and writes_running:
        for name in ("running_mean", "running_var"):
            v = given[name]
            if v is None:
                continue
            if type(v) is not np.ndarray or v.dtype.kind != "f" or \
                    not v.flags.writeable:
                what = (f"a read-only {v.dtype} array"
                        if isinstance(v, np.ndarray) else
                        f"{type(v).__name__} of dtype {vecs[name].dtype}")
                raise TypeError(
                    f"{fn}: in training {name} is updated in place, so it "
                    f"must be a writeable float ndarray of shape ({c},); "
                    f"got {what}")
    elif not training and running_mean is None:
        raise ValueError(f"{fn}: running_mean and running_var are needed "
                         f"when training is False")
    dt = _compute_dtype(x, vecs["weight"], vecs["bias"])
    if x.ndim > 4:
        x = x.reshape(x.shape[0], c, -1, 1)
    elif x.ndim == 3:
        x = x.reshape(x.shape + (1,))
    hw = x.shape[2] * x.shape[3] if x.ndim == 4 else 1
    return x, vecs, dt, x.shape[0] * hw


def batch_norm(x, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    r"""Batch normalisation, as ``torch.nn.functional.batch_norm``.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W) or (N, C)
        Also (N, C, L) and (N, C, D, H, W); the statistics are per channel,
        over every axis but the channel axis.
    running_mean, running_var : ndarray of shape (C,) or None
        The running statistics.  Read when ``training`` is False (then
        required); when ``training`` is True and they are given, updated in
        place (they must then be writeable float arrays).
    weight, bias : array_like of shape (C,), optional
        The affine parameters :math:`\gamma` and :math:`\beta` (1 and 0 when
        None).
    training : bool, default False
        Normalise with the batch's statistics (and update the running
        ones) instead of the running statistics.
    momentum : float in [0, 1], default 0.1
        Weight of the batch statistics in the running update.
    eps : float >= 0, default 1e-5
        Added to the variance.

    Returns
    -------
    y : ndarray of the shape of x

    Notes
    -----
    With the mean :math:`\mu_c` and the biased variance :math:`\sigma_c^2`
    of channel c over the :math:`m = N H W` values (training) or the
    running statistics (evaluation):

    .. math::

        \hat x = \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}, \qquad
        y = \gamma_c \hat x + \beta_c

    and in training, :math:`r_\mu \leftarrow (1 - p) r_\mu + p \mu_c`,
    :math:`r_{\sigma^2} \leftarrow (1 - p) r_{\sigma^2} + p
    \frac{m}{m - 1} \sigma_c^2` with :math:`p` the momentum.  The mean is
    computed first, then the centred sum of squares (two passes).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import batch_norm
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> batch_norm(x, rm, rv, training=True, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> rm, rv
    (array([0.2, 2. ]), array([ 1.1, 20.9]))
    """
    fn = "batch_norm"
    training = bool(training)
    momentum = _bn_real(momentum, "momentum", fn, 0.0, 1.0)
    eps = _bn_real(eps, "eps", fn, 0.0)
    shape = np.shape(x)
    x4, v, dt, count = _bn_args(fn, x, weight, bias, running_mean,
                                running_var, training)
    x4, w, b = _cast(x4, dt), _cast(v["weight"], dt), _cast(v["bias"], dt)
    if not training:
        y, _ = _ops.batch_norm_inference(x4, _cast(v["running_mean"], dt),
                                         _cast(v["running_var"], dt), w, b,
                                         eps)
        return y.reshape(shape)
    if count <= 1:
        raise ValueError(f"{fn}: training needs more than one value per "
                         f"channel, got x of shape {shape}")
    mean, var = _ops.batch_norm_statistics(x4, count)
    y = _ops.batch_norm_forward(x4, mean.astype(dt),
                                _ops.batch_norm_invstd(var, eps, dt), w, b)
    _ops.batch_norm_update_running(running_mean, running_var, mean, var,
                                   count, momentum)
    return y.reshape(shape)


def batch_norm_backward(grad_out, x, weight=None, running_mean=None,
                        running_var=None, training=True, eps=1e-5):
    r"""Gradients of :func:`batch_norm`.

    Parameters
    ----------
    grad_out : array_like, shape of x
        Gradient of the loss with respect to the output.
    x : array_like of shape (N, C, H, W) or (N, C)
        The forward input (the batch statistics are formed again from it).
    weight : array_like of shape (C,), optional
        :math:`\gamma` (1 when None: then no affine gradients).
    running_mean, running_var : array_like of shape (C,), optional
        The statistics of an evaluation-mode forward (``training=False``);
        not read in training.
    training : bool, default True
        Whether the forward normalised with the batch statistics.
    eps : float >= 0, default 1e-5

    Returns
    -------
    grad_x : ndarray, shape of x
    grad_weight, grad_bias : ndarray of shape (C,), or None
        :math:`\sum g \hat x` and :math:`\sum g` per channel; None when
        ``weight`` is None.

    Notes
    -----
    In training, with :math:`g = \partial L / \partial y`, :math:`m` values
    per channel and :math:`\sigma = \sqrt{\sigma_c^2 + \epsilon}`:

    .. math::

        \frac{\partial L}{\partial x} = \frac{\gamma}{m \sigma}
        \Bigl(m g - \sum g - \hat x \sum g \hat x\Bigr)

    (derived on :doc:`/math`); in evaluation the statistics are constants
    and :math:`\partial L / \partial x = \gamma g / \sigma`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import batch_norm_backward
    >>> x = np.array([[1.0], [3.0]])
    >>> gx, gw, gb = batch_norm_backward([[1.0], [1.0]], x, np.ones(1),
    ...                                  eps=0.0)
    >>> gx, gw, gb
    (array([[0.],
           [0.]]), array([0.]), array([2.]))
    """
    fn = "batch_norm_backward"
    training = bool(training)
    eps = _bn_real(eps, "eps", fn, 0.0)
    shape = np.shape(x)
    x4, v, dt, count = _bn_args(fn, x, weight, None, running_mean,
                                running_var, training, writes_running=False)
    g = _as_array(grad_out, "grad_out", fn)
    if g.shape != shape:
        raise ValueError(f"{fn}: grad_out must have the shape of x {shape}, "
                         f"got {g.shape}")
    dt = _compute_dtype(x4, v["weight"], g)
    x4, w = _cast(x4, dt), _cast(v["weight"], dt)
    g4 = _cast(g.reshape(x4.shape), dt)
    if training:
        if count <= 1:
            raise ValueError(f"{fn}: training needs more than one value per "
                             f"channel, got x of shape {shape}")
        mean, var = _ops.batch_norm_statistics(x4, count)
        mean = mean.astype(dt)
    else:
        mean = _cast(v["running_mean"], dt)
        var = v["running_var"]
    invstd = _ops.batch_norm_invstd(var, eps, dt)
    sums = _ops.batch_norm_backward_sums(g4, x4, mean, invstd)[0]
    gx = _ops.batch_norm_backward(g4, x4, mean, invstd, w,
                                  sums if training else None, float(count))
    if w is None:
        return gx.reshape(shape), None, None
    return gx.reshape(shape), sums[1].astype(dt), sums[0].astype(dt)


def fold_batch_norm(weight, bias, running_mean, running_var, gamma=None,
                    beta=None, eps=1e-5):
    r"""The weight and bias of a convolution or dense layer followed by an
    evaluation-mode batch normalisation, as one layer.

    Parameters
    ----------
    weight : array_like of shape (K, ...)
        The weight of the layer before the normalisation: (K, C, R, S) of a
        convolution, (O, F) of a dense layer; axis 0 is the channel the
        normalisation sees.
    bias : array_like of shape (K,) or None
        Its bias (0 when None).
    running_mean, running_var : array_like of shape (K,)
    gamma, beta : array_like of shape (K,), optional
        The normalisation's weight and bias (1 and 0 when None).
    eps : float >= 0, default 1e-5

    Returns
    -------
    weight, bias : ndarray
        The folded weight (shape of ``weight``) and bias (K,).

    Notes
    -----
    .. math::

        s = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}, \qquad
        W' = s\, W, \qquad b' = s\,(b - \mu) + \beta

    so that :math:`W' x + b' = \gamma (W x + b - \mu) / \sqrt{\sigma^2 +
    \epsilon} + \beta` for every input.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import fold_batch_norm
    >>> w, b = fold_batch_norm(np.ones((2, 3)), np.zeros(2), np.array([1.0,
    ...                        0.0]), np.array([4.0, 1.0]), eps=0.0)
    >>> w, b
    (array([[0.5, 0.5, 0.5],
           [1. , 1. , 1. ]]), array([-0.5,  0. ]))
    """
    fn = "fold_batch_norm"
    eps = _bn_real(eps, "eps", fn, 0.0)
    w = _as_array(weight, "weight", fn)
    if w.ndim < 1:
        raise ValueError(f"{fn}: weight must have a channel axis, got shape "
                         f"{w.shape}")
    k = w.shape[0]
    vecs = []
    for name, v in (("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var), ("gamma", gamma),
                    ("beta", beta)):
        if v is None:
            vecs.append(None)
            continue
        a = _as_array(v, name, fn)
        if a.shape != (k,):
            raise ValueError(f"{fn}: {name} must have shape ({k},) for "
                             f"weight of shape {w.shape}, got {a.shape}")
        vecs.append(a)
    b, mean, var, g, beta = vecs
    if mean is None or var is None:
        raise ValueError(f"{fn}: running_mean and running_var are needed")
    dt = _compute_dtype(w, b, g, beta)
    scale = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    if g is not None:
        scale = scale * g.astype(np.float64)
    shift = -mean.astype(np.float64)
    if b is not None:
        shift = shift + b.astype(np.float64)
    new_b = shift * scale + (0.0 if beta is None else beta.astype(np.float64))
    new_w = w.astype(np.float64) * scale.reshape((k,) + (1,) * (w.ndim - 1))
    return new_w.astype(dt), new_b.astype(dt)


# --------------------------------------------------------------------------
# softmax and cross-entropy
# --------------------------------------------------------------------------
def softmax(logits):
    r"""Row-wise softmax, stable for logits of any magnitude.

    Parameters
    ----------
    logits : array_like of shape (N, C)
        Also one row ``(C,)``.

    Returns
    -------
    p : ndarray, shape of logits; each row sums to 1

    Notes
    -----
    .. math:: p_{n,c} = \frac{e^{z_{n,c} - m_n}}{\sum_{c'} e^{z_{n,c'} - m_n}},
        \quad m_n = \max_c z_{n,c}

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import softmax
    >>> softmax([[0.0, np.log(3.0)]])
    array([[0.25, 0.75]])
    >>> softmax([[1000.0, 0.0]])
    array([[1., 0.]])
    """
    fn = "softmax"
    z = _as_array(logits, "logits", fn)
    _check_ndim(z, (1, 2), "logits", fn, "(N, C) or one row (C,)")
    if z.shape[-1] == 0:
        raise ValueError(f"{fn}: logits need at least one class, got shape "
                         f"{z.shape}")
    dt = _compute_dtype(z)
    p = _kernels.softmax(z.reshape(-1, z.shape[-1]).astype(dt, copy=False))
    return p.reshape(z.shape)


def _rows_args(fn, logits, grad_out=None):
    """(logits as (N, C), grad_out as (N, C) or None, the original shape)."""
    z = _as_array(logits, "logits", fn)
    _check_ndim(z, (1, 2), "logits", fn, "(N, C) or one row (C,)")
    if z.shape[-1] == 0:
        raise ValueError(f"{fn}: logits need at least one class, got shape "
                         f"{z.shape}")
    g = None
    if grad_out is not None or fn.endswith("_backward"):
        g = _as_array(grad_out, "grad_out", fn)
        if g.shape != z.shape:
            raise ValueError(f"{fn}: grad_out must have the shape of logits "
                             f"{z.shape}, got {g.shape}")
    dt = _compute_dtype(*([z] if g is None else [g, z]))
    z2 = z.reshape(-1, z.shape[-1]).astype(dt, copy=False)
    g2 = None if g is None else g.reshape(z2.shape).astype(dt, copy=False)
    return z2, g2, z.shape


def softmax_backward(grad_out, logits):
    r"""Gradient of :func:`softmax` with respect to the logits.

    Parameters
    ----------
    grad_out : array_like of shape (N, C)
        Gradient of the loss with respect to the probabilities.
    logits : array_like of shape (N, C)
        The logits given to :func:`softmax` (also one row ``(C,)``).

    Returns
    -------
    grad_logits : ndarray of shape (N, C)

    Notes
    -----
    .. math:: \frac{\partial L}{\partial z_{n,c}} = p_{n,c}\Bigl(g_{n,c}
        - \sum_{c'} g_{n,c'}\,p_{n,c'}\Bigr)

    Examples
    --------
    >>> from cnnkit.functional import softmax_backward
    >>> softmax_backward([[1.0, 0.0]], [[0.0, 0.0]])
    array([[ 0.25, -0.25]])
    """
    z, g, shape = _rows_args("softmax_backward", logits, grad_out)
    return _kernels.softmax_backward(g, z).reshape(shape)


def log_softmax(logits):
    r"""Row-wise logarithm of :func:`softmax`, stable for logits of any
    magnitude (PyTorch's ``log_softmax`` over the class axis).

    Parameters
    ----------
    logits : array_like of shape (N, C)
        Also one row ``(C,)``.

    Returns
    -------
    log_p : ndarray, shape of logits

    Notes
    -----
    .. math:: \log p_{n,c} = (z_{n,c} - m_n)
        - \log \sum_{c'} e^{z_{n,c'} - m_n}, \quad m_n = \max_c z_{n,c}

    A NaN logit makes its row NaN, as in PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import log_softmax
    >>> np.exp(log_softmax([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    >>> log_softmax([[1e4, 0.0]])
    array([[     0., -10000.]])
    """
    z, _, shape = _rows_args("log_softmax", logits)
    return _kernels.log_softmax(z).reshape(shape)


def log_softmax_backward(grad_out, logits):
    r"""Gradient of :func:`log_softmax` with respect to the logits.

    Parameters
    ----------
    grad_out : array_like of shape (N, C)
        Gradient of the loss with respect to :func:`log_softmax`'s output.
    logits : array_like of shape (N, C)
        The logits given to :func:`log_softmax` (also one row ``(C,)``).

    Returns
    -------
    grad_logits : ndarray of shape (N, C)

    Notes
    -----
    .. math:: \frac{\partial L}{\partial z_{n,c}} = g_{n,c}
        - p_{n,c} \sum_{c'} g_{n,c'}

    Examples
    --------
    >>> from cnnkit.functional import log_softmax_backward
    >>> log_softmax_backward([[1.0, 0.0]], [[0.0, 0.0]])
    array([[ 0.5, -0.5]])
    """
    z, g, shape = _rows_args("log_softmax_backward", logits, grad_out)
    return _kernels.log_softmax_backward(g, z).reshape(shape)


def _label_smoothing(v, fn):
    """label_smoothing as a float in [0, 1]."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{fn}: label_smoothing must be a number in [0, 1], got {v!r}")
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise ValueError(
            f"{fn}: label_smoothing must be in [0, 1], got {v!r}")
    return v


def softmax_cross_entropy(logits, labels, sample_weight=None,
                          label_smoothing=0.0):
    r"""Mean softmax cross-entropy over a batch, and its gradient.

    Parameters
    ----------
    logits : array_like of shape (N, C)
        Unnormalised class scores.
    labels : array_like of int, shape (N,)
        Class indices in ``[0, C)``.
    sample_weight : array_like of shape (N,), optional
        Non-negative weights: the loss is then the weighted mean
        :math:`\sum_n w_n \ell_n / \sum_n w_n` (0 when all weights are 0)
        and each row's gradient is scaled by :math:`w_n / \sum w`.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`: the target of row :math:`n` becomes
        :math:`t_c = (1 - \varepsilon)\,[c = y_n] + \varepsilon / C`, so
        :math:`\ell_n = \log \sum_c e^{z_{n,c}} - \sum_c t_c z_{n,c}` and
        its gradient is :math:`p_{n,c} - t_c` (PyTorch's
        ``cross_entropy(..., label_smoothing=eps)``; with sample weights
        the smoothed :math:`\ell_n` enter the weighted mean).

    Returns
    -------
    loss : numpy scalar of the logits' float dtype
        :math:`\frac1N \sum_n (\log \sum_c e^{z_{n,c}} - z_{n,y_n})`,
        computed with the log-sum-exp trick (exact for logits of 1e4).
    grad_logits : ndarray of shape (N, C)
        :math:`(\mathrm{softmax}(z) - \mathrm{onehot}(y)) / N`, the gradient
        of the mean loss.

    Raises
    ------
    TypeError
        Labels that are not integers, a ``label_smoothing`` that is not a
        number.
    ValueError
        Labels outside ``[0, C)``, shapes that do not match, a
        ``label_smoothing`` outside ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.functional import softmax_cross_entropy
    >>> loss, grad = softmax_cross_entropy([[0.0, np.log(3.0)]], [1])
    >>> float(loss)            # -log(3/4)
    0.28768207245178085
    >>> grad                   # softmax - onehot
    array([[ 0.25, -0.25]])
    >>> loss, grad = softmax_cross_entropy([[0.0, np.log(3.0)]], [1],
    ...                                    label_smoothing=0.2)
    >>> grad                   # softmax - (0.8 onehot + 0.2 / 2)
    array([[ 0.15, -0.15]])
    """
    fn = "softmax_cross_entropy"
    if type(label_smoothing) is not float or label_smoothing != 0.0:
        label_smoothing = _label_smoothing(label_smoothing, fn)
    z = _as_array(logits, "logits", fn)
    _check_ndim(z, (2,), "logits", fn, "(N, C)")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and lab.size and np.all(
                np.isfinite(lab)) and np.all(lab == np.round(lab)):
            hint = " (integral floats: pass labels.astype(int))"
        else:
            hint = ""
        raise TypeError(
            f"{fn}: labels must be integer class indices, got dtype "
            f"{lab.dtype}{hint}")
    dt = _compute_dtype(z)
    loss, grad = _kernels.softmax_cross_entropy(
        z.astype(dt, copy=False), lab, sample_weight,
        label_smoothing=label_smoothing)
    return dt.type(loss), grad
