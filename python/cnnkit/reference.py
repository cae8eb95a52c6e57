r"""Pure-NumPy reference implementations of the cnnkit kernels.

Every kernel that :mod:`cnnkit.functional` runs in C has a twin here, written
to be read next to its formula rather than to be fast. The functions take the
same arguments, in the same order, and return the same things as their
:mod:`cnnkit.functional` counterparts, so the test suite uses this module as
the oracle for the compiled kernels and the documentation quotes it beside the
mathematics.

Conventions shared by all functions:

* Layouts follow PyTorch: images are ``(N, C, H, W)``, convolution weights
  ``(K, C, R, S)``, dense weights ``(O, F)``.
* Arguments are read with :func:`numpy.asarray` and never written to; every
  result is a new array.
* Arithmetic is done in the inputs' floating dtype: float32 stays float32,
  float64 stays float64, mixed floats follow NumPy's promotion, and integers
  or booleans are promoted to float64.
* Inputs are assumed to be valid already (shapes agree, the kernel fits in
  the padded input, ...). Checking them is the job of :mod:`cnnkit.functional`.

The worked example this library grew from reads, step by step::

    >>> import numpy as np
    >>> from cnnkit import reference as ref
    >>> image = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    >>> kernel = np.array([[1, 0], [0, -1]])
    >>> feature_map = ref.conv2d(image, kernel)
    >>> feature_map
    array([[-4., -4.],
           [-4., -4.]])
    >>> ref.relu(feature_map)
    array([[0., 0.],
           [0., 0.]])
    >>> x = ref.relu(feature_map).reshape(1, -1)
    >>> ref.dense(x, np.array([[0.5, -0.2, 0.1, 0.4]]), np.array([0.1]))
    array([[0.1]])
"""

import math

import numpy as np

__all__ = [
    "conv_output_size",
    "conv2d_output_shape",
    "pool2d_output_shape",
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
    "add",
    "add_backward",
    "multiply",
    "multiply_backward",
    "concatenate",
    "concatenate_backward",
    "batch_norm",
    "batch_norm_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "softmax_cross_entropy",
    "flush_subnormal",
    "sgd_step",
    "adam_step",
    "index_hash",
    "child_key",
    "random_crop",
    "random_horizontal_flip",
    "random_translation",
    "normalize",
]


# ---------------------------------------------------------------------------
# Small helpers: dtypes, argument pairs, padding and output sizes
# ---------------------------------------------------------------------------


def _float_dtype(*arrays):
    """Return the floating dtype in which to compute with ``arrays``.

    Parameters
    ----------
    *arrays : ndarray
        The array arguments of a kernel (``None`` entries are skipped).

    Returns
    -------
    numpy.dtype
        NumPy's promoted dtype of ``arrays`` if it is floating, otherwise
        float64 (integers and booleans are promoted to float64).
    """
    dtype = np.result_type(*[a for a in arrays if a is not None])
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    return dtype


def _pair(value):
    """Return ``value`` as a pair ``(h, w)`` of Python ints.

    Parameters
    ----------
    value : int or pair of int
        A single number used for both axes, or a ``(h, w)`` pair.

    Returns
    -------
    tuple of int
        ``(value, value)`` for a single number, ``(h, w)`` for a pair.
    """
    if np.ndim(value) == 0:
        return int(value), int(value)
    h, w = value
    return int(h), int(w)


def _conv_padding(padding, kernel_size, stride, dilation):
    r"""Return the zero padding of a convolution on each side of each axis.

    Parameters
    ----------
    padding : int, pair of int, "valid" or "same"
        The convolution's ``padding`` argument.
    kernel_size, stride, dilation : pair of int
        ``(R, S)``, ``(sh, sw)`` and ``(dh, dw)``.

    Returns
    -------
    tuple
        ``((top, bottom), (left, right))``.

    Notes
    -----
    ``"valid"`` is no padding. ``"same"`` (stride 1 only) pads each axis by
    the dilated kernel's extent minus one, split as PyTorch does, with the
    odd element on the bottom / right:

    .. math::

        p_\text{total} = d\,(k - 1), \qquad
        p_\text{before} = \lfloor p_\text{total} / 2 \rfloor, \qquad
        p_\text{after} = p_\text{total} - p_\text{before}.

    An integer or pair ``p`` pads ``p`` on both sides of its axis.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            if tuple(stride) != (1, 1):
                raise ValueError(
                    f"padding='same' requires stride 1, got stride={tuple(stride)}"
                )
            sides = []
            for k, d in zip(kernel_size, dilation):
                total = d * (k - 1)
                sides.append((total // 2, total - total // 2))
            return tuple(sides)
        raise ValueError(
            f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    ph, pw = _pair(padding)
    return (ph, ph), (pw, pw)


def _window_count(size, extent, stride, total_padding):
    r"""Return how many windows of ``extent`` fit along a padded axis.

    Parameters
    ----------
    size : int
        Length of the unpadded axis.
    extent : int
        Length covered by one window (``d*(k-1)+1`` for a dilated kernel).
    stride : int
        Step between window starts.
    total_padding : int
        Padding added to the axis, both sides together.

    Returns
    -------
    int
        The number of window positions.

    Notes
    -----
    .. math::

        O = \left\lfloor \frac{I + p_\text{total} - e}{s} \right\rfloor + 1
    """
    return (size + total_padding - extent) // stride + 1


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    r"""Length of a convolution's output along one axis.

    Parameters
    ----------
    size : int
        Input length along the axis (``H`` or ``W``).
    kernel : int
        Kernel length along the axis (``R`` or ``S``).
    stride : int, optional
        Step between windows. Default 1.
    padding : int, "valid" or "same", optional
        Zeros added on each side of the axis. Default 0.
    dilation : int, optional
        Spacing between kernel taps. Default 1.

    Returns
    -------
    int
        The output length.

    Notes
    -----
    .. math::

        O = \left\lfloor \frac{I + 2p - d\,(k - 1) - 1}{s} \right\rfloor + 1

    With ``"same"`` (stride 1) the output length equals the input length.

    Examples
    --------
    >>> from cnnkit.reference import conv_output_size
    >>> conv_output_size(3, 2)
    2
    >>> conv_output_size(28, 3, stride=2, padding=1)
    14
    """
    (before, after), _ = _conv_padding(
        padding, (kernel, kernel), (stride, stride), (dilation, dilation)
    )
    return _window_count(size, dilation * (kernel - 1) + 1, stride, before + after)


def conv2d_output_shape(input_size, kernel_size, stride=1, padding=0, dilation=1):
    r"""Spatial size ``(OH, OW)`` of a 2-D convolution's output.

    Parameters
    ----------
    input_size : pair of int
        ``(H, W)``.
    kernel_size : int or pair of int
        ``(R, S)``.
    stride, dilation : int or pair of int, optional
        Default 1.
    padding : int, pair of int, "valid" or "same", optional
        Default 0.

    Returns
    -------
    tuple of int
        ``(OH, OW)``.

    Notes
    -----
    Per axis, with the padding added before (:math:`p_b`) and after
    (:math:`p_a`) the input:

    .. math::

        O = \left\lfloor \frac{I + p_b + p_a - d\,(k - 1) - 1}{s} \right\rfloor + 1
    """
    H, W = _pair(input_size)
    R, S = _pair(kernel_size)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = _conv_padding(padding, (R, S), (sh, sw), (dh, dw))
    OH = _window_count(H, dh * (R - 1) + 1, sh, pt + pb)
    OW = _window_count(W, dw * (S - 1) + 1, sw, pl + pr)
    return OH, OW


def _pool_window_count(size, kernel, stride, padding, ceil_mode):
    r"""Return how many pooling windows fit along an axis.

    Parameters
    ----------
    size, kernel, stride, padding : int
        Input length, window length, step and the padding on each side.
    ceil_mode : bool
        Round up instead of down.

    Returns
    -------
    int
        :func:`_window_count` rounded down; with ``ceil_mode`` rounded up,
        less one when the last window would start in the right padding
        (PyTorch's rule).
    """
    if not ceil_mode:
        return _window_count(size, kernel, stride, 2 * padding)
    count = -(-(size + 2 * padding - kernel) // stride) + 1   # ceiling
    if (count - 1) * stride >= size + padding:
        count -= 1      # that window would start in the right padding
    return count


def pool2d_output_shape(input_size, kernel_size, stride=None, padding=0,
                        ceil_mode=False):
    r"""Spatial size ``(OH, OW)`` of a 2-D max pooling's output.

    Parameters
    ----------
    input_size : pair of int
        ``(H, W)``.
    kernel_size : int or pair of int
        ``(kh, kw)``.
    stride : int or pair of int, optional
        Defaults to ``kernel_size``.
    padding : int or pair of int, optional
        Default 0.
    ceil_mode : bool, optional
        Round the size up instead of down. Default False.

    Returns
    -------
    tuple of int
        ``(OH, OW)``.

    Notes
    -----
    .. math::

        O = \left\lfloor \frac{I + 2p - k}{s} \right\rfloor + 1

    With ``ceil_mode``, :math:`O = \lceil (I + 2p - k) / s \rceil + 1`, less
    one when :math:`(O - 1)\,s \ge I + p`: a last window must start inside
    the input or the left padding, never in the right padding.

    Examples
    --------
    >>> from cnnkit.reference import pool2d_output_shape
    >>> pool2d_output_shape((5, 5), 2), pool2d_output_shape((5, 5), 2, ceil_mode=True)
    ((2, 2), (3, 3))
    >>> pool2d_output_shape((4, 4), 2, stride=3, padding=1, ceil_mode=True)
    (2, 2)
    """
    H, W = _pair(input_size)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    return (_pool_window_count(H, kh, sh, ph, ceil_mode),
            _pool_window_count(W, kw, sw, pw, ceil_mode))


# The names these had before they took functional's names.
conv2d_output_size = conv2d_output_shape
pool2d_output_size = pool2d_output_shape


def _window(out_index, stride, kernel, dilation):
    """Slice of the padded input seen by one output position along one axis.

    Parameters
    ----------
    out_index : int
        Output coordinate (``oh`` or ``ow``).
    stride, kernel, dilation : int
        The convolution's parameters along that axis.

    Returns
    -------
    slice
        ``start : start + d*(k-1) + 1 : d`` with ``start = out_index * stride``;
        it selects exactly ``kernel`` elements.
    """
    start = out_index * stride
    return slice(start, start + dilation * (kernel - 1) + 1, dilation)


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    r"""2-D convolution (cross-correlation) of a batch of images.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Input images. A 2-D ``(H, W)`` array together with a 2-D ``(R, S)``
        ``weight`` is taken as one image with one channel.
    weight : array_like, shape (K, C / groups, R, S)
        ``K`` filters of ``C / groups`` channels each.
    bias : array_like, shape (K,), optional
        One value added to each output channel.
    stride : int or pair of int, optional
        Step ``(sh, sw)`` between windows. Default 1.
    padding : int, pair of int, "valid" or "same", optional
        Zeros added around the input. ``"same"`` (stride 1 only) keeps the
        spatial size, putting the odd element of padding on the bottom / right.
        Default 0.
    dilation : int or pair of int, optional
        Spacing ``(dh, dw)`` between kernel taps. Default 1.
    groups : int, optional
        The channels and the filters are cut into ``groups`` equal runs;
        filter run ``q`` sees only channel run ``q``. ``groups == C`` is the
        depthwise convolution. Default 1.

    Returns
    -------
    y : ndarray, shape (N, K, OH, OW)
        The feature maps; ``(OH, OW)`` for the 2-D form.

    Notes
    -----
    With :math:`\tilde x` the zero-padded input, each output is the sum of
    the element-wise product of one (dilated) window with the kernel; the
    kernel is not flipped:

    .. math::

        y_{n,k,i,j} = b_k + \sum_{c=0}^{C-1} \sum_{r=0}^{R-1} \sum_{s=0}^{S-1}
            \tilde x_{n,\,c,\; i s_h + r d_h,\; j s_w + s d_w}\; w_{k,c,r,s}

    and :math:`OH = \lfloor (H + 2p_h - d_h(R-1) - 1) / s_h \rfloor + 1`
    (likewise for :math:`OW`).  With groups, the sum over :math:`c` runs
    only over the channels of filter :math:`k`'s group (the loop over
    groups below).

    Examples
    --------
    >>> from cnnkit.reference import conv2d
    >>> conv2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, -1]])
    array([[-4., -4.],
           [-4., -4.]])
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    bias = None if bias is None else np.asarray(bias)
    dtype = _float_dtype(x, weight, bias)

    single_image = x.ndim == 2 and weight.ndim == 2
    if single_image:
        x = x[np.newaxis, np.newaxis]
        weight = weight[np.newaxis, np.newaxis]
    x = x.astype(dtype, copy=False)
    weight = weight.astype(dtype, copy=False)

    N, C, H, W = x.shape
    K, _, R, S = weight.shape
    Cg, Kg = C // groups, K // groups  # channels and filters of one group
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = _conv_padding(padding, (R, S), (sh, sw), (dh, dw))
    OH, OW = conv2d_output_shape((H, W), (R, S), (sh, sw), padding, (dh, dw))

    x_padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.empty((N, K, OH, OW), dtype=dtype)
    for q in range(groups):
        cs = slice(q * Cg, (q + 1) * Cg)  # the group's input channels
        ks = slice(q * Kg, (q + 1) * Kg)  # and its filters
        for oh in range(OH):
            for ow in range(OW):
                rows = _window(oh, sh, R, dh)
                cols = _window(ow, sw, S, dw)
                region = x_padded[:, cs, rows, cols]  # (N, Cg, R, S)
                # multiply by each kernel and sum over (Cg, R, S) -> (N, Kg)
                y[:, ks, oh, ow] = np.tensordot(region, weight[ks],
                                                axes=([1, 2, 3], [1, 2, 3]))

    if bias is not None:
        y += bias.astype(dtype, copy=False).reshape(1, K, 1, 1)
    return y[0, 0] if single_image else y


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, bias=True,
                    groups=1):
    r"""Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, K, OH, OW)
        Gradient of the loss with respect to the convolution's output.
    x : array_like, shape (N, C, H, W)
        The forward input.
    weight : array_like, shape (K, C / groups, R, S)
        The forward weight.
    stride, padding, dilation
        As in :func:`conv2d` (``padding`` may be ``"valid"`` or ``"same"``).
    bias : bool, optional
        Whether the forward pass had a bias; if false no bias gradient is
        computed. Default True.
    groups : int, optional
        As in :func:`conv2d`. Default 1.

    Returns
    -------
    grad_x : ndarray, shape (N, C, H, W)
    grad_weight : ndarray, shape (K, C / groups, R, S)
    grad_bias : ndarray, shape (K,), or None
        ``None`` when ``bias`` is false.

    Notes
    -----
    With :math:`g = \partial L / \partial y` and the same window indexing as
    the forward pass, every output position sends gradient back along the
    products that made it:

    .. math::

        \frac{\partial L}{\partial w_{k,c,r,s}} = \sum_{n,i,j} g_{n,k,i,j}\,
            \tilde x_{n,\,c,\; i s_h + r d_h,\; j s_w + s d_w}

    .. math::

        \frac{\partial L}{\partial \tilde x_{n,\,c,\; i s_h + r d_h,\; j s_w + s d_w}}
            \mathrel{+}= \sum_k g_{n,k,i,j}\, w_{k,c,r,s}

    .. math::

        \frac{\partial L}{\partial b_k} = \sum_{n,i,j} g_{n,k,i,j}

    The input gradient is accumulated on the padded input :math:`\tilde x`
    and then cropped back to ``(H, W)``; padding receives gradient but is not
    an input, so that part is dropped.
    """
    grad_out = np.asarray(grad_out)
    x = np.asarray(x)
    weight = np.asarray(weight)
    dtype = _float_dtype(grad_out, x, weight)
    grad_out = grad_out.astype(dtype, copy=False)
    x = x.astype(dtype, copy=False)
    weight = weight.astype(dtype, copy=False)

    N, C, H, W = x.shape
    K, _, R, S = weight.shape
    _, _, OH, OW = grad_out.shape
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = _conv_padding(padding, (R, S), (sh, sw), (dh, dw))

    x_padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    grad_x_padded = np.zeros_like(x_padded)
    grad_weight = np.zeros_like(weight)
    Cg, Kg = C // groups, K // groups
    for q in range(groups):
        cs = slice(q * Cg, (q + 1) * Cg)  # the group's input channels
        ks = slice(q * Kg, (q + 1) * Kg)  # and its filters
        for oh in range(OH):
            for ow in range(OW):
                rows = _window(oh, sh, R, dh)
                cols = _window(ow, sw, S, dw)
                g = grad_out[:, ks, oh, ow]  # (N, Kg)
                # dL/dw[k] += sum_n g[n, k] * window[n]
                grad_weight[ks] += np.tensordot(g, x_padded[:, cs, rows, cols],
                                                axes=([0], [0]))
                # dL/dwindow[n] += sum_k g[n, k] * w[k]   (scatter-add into the window)
                grad_x_padded[:, cs, rows, cols] += np.tensordot(g, weight[ks],
                                                                 axes=([1], [0]))

    grad_x = grad_x_padded[:, :, pt:pt + H, pl:pl + W].copy()
    grad_bias = grad_out.sum(axis=(0, 2, 3)) if bias else None
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------


def relu(x):
    r"""Rectified linear unit, element-wise.

    Parameters
    ----------
    x : array_like
        Any shape.

    Returns
    -------
    y : ndarray
        Same shape as ``x``.

    Notes
    -----
    .. math::

        y = \max(0, x)

    NaN inputs give NaN outputs (:func:`numpy.maximum` propagates NaN).
    """
    x = np.asarray(x)
    x = x.astype(_float_dtype(x), copy=False)
    return np.maximum(x.dtype.type(0), x)


def relu_backward(grad_out, x):
    r"""Gradient of :func:`relu` with respect to its input.

    Parameters
    ----------
    grad_out : array_like
        Gradient of the loss with respect to ReLU's output.
    x : array_like
        The forward input, same shape as ``grad_out``.

    Returns
    -------
    grad_x : ndarray
        Same shape as ``x``.

    Notes
    -----
    .. math::

        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\,
            \mathbb{1}[\lnot (x \le 0)]

    The gradient at :math:`x = 0` is taken as 0, and a NaN input passes the
    gradient through (``NaN <= 0`` is false), as PyTorch's
    ``threshold_backward`` does. Where :math:`x \le 0` the result is exactly
    0 even if ``grad_out`` holds an infinity or NaN there.
    """
    grad_out = np.asarray(grad_out)
    x = np.asarray(x)
    dtype = _float_dtype(grad_out, x)
    return np.where(x <= 0, 0, grad_out).astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# Leaky ReLU, sigmoid, tanh, SiLU, GELU
# ---------------------------------------------------------------------------


def _as_float(x):
    x = np.asarray(x)
    return x.astype(_float_dtype(x), copy=False)


def leaky_relu(x, negative_slope=0.01):
    r"""Leaky ReLU, element-wise.

    Notes
    -----
    .. math::

        y = \begin{cases} x & x > 0 \\ a x & x \le 0 \end{cases}

    The slope :math:`a` is rounded to the dtype of ``x`` first (PyTorch
    does the same). NaN stays NaN.
    """
    x = _as_float(x)
    a = x.dtype.type(negative_slope)
    return np.where(x > 0, x, x * a)


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    r"""Gradient of :func:`leaky_relu`.

    Notes
    -----
    .. math::

        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}
            \cdot \begin{cases} 1 & x > 0 \\ a & x \le 0 \end{cases}

    At :math:`x = 0` (and at NaN) the slope is :math:`a`, as in PyTorch.
    """
    grad_out, x = np.asarray(grad_out), np.asarray(x)
    dtype = _float_dtype(grad_out, x)
    g = grad_out.astype(dtype, copy=False)
    return np.where(x > 0, g, g * dtype.type(negative_slope))


def _sigmoid_parts(x):
    """(s, 1 - s, s * (1 - s)) of the logistic sigmoid, from
    :math:`e = e^{-|x|}` so that nothing overflows and neither tail loses
    its digits to a cancellation."""
    e = np.exp(-np.abs(x))
    big, small = 1 / (1 + e), e / (1 + e)
    s = np.where(x >= 0, big, small)
    c = np.where(x >= 0, small, big)
    return s, c, small / (1 + e)


def sigmoid(x):
    r"""Logistic sigmoid, element-wise.

    Notes
    -----
    .. math::

        \sigma(x) = \frac{1}{1 + e^{-x}} =
            \begin{cases} 1/(1 + e^{-|x|}) & x \ge 0 \\
                          e^{-|x|}/(1 + e^{-|x|}) & x < 0 \end{cases}

    The second form never takes the exponential of a positive number.
    """
    return _sigmoid_parts(_as_float(x))[0]


def sigmoid_backward(grad_out, x):
    r"""Gradient of :func:`sigmoid`.

    Notes
    -----
    .. math::

        \sigma'(x) = \sigma(x)\,(1 - \sigma(x)) = \frac{e^{-|x|}}{(1 + e^{-|x|})^2}
    """
    grad_out, x = np.asarray(grad_out), np.asarray(x)
    dtype = _float_dtype(grad_out, x)
    return grad_out.astype(dtype) * _sigmoid_parts(x.astype(dtype))[2]


def tanh(x):
    r"""Hyperbolic tangent, element-wise (:func:`numpy.tanh`)."""
    return np.tanh(_as_float(x))


def tanh_backward(grad_out, x):
    r"""Gradient of :func:`tanh`, from its output :math:`y = \tanh x`.

    Notes
    -----
    .. math::

        \tanh'(x) = 1 - y^2 = (1 - y)(1 + y)
    """
    grad_out, x = np.asarray(grad_out), np.asarray(x)
    dtype = _float_dtype(grad_out, x)
    y = np.tanh(x.astype(dtype))
    return grad_out.astype(dtype) * ((1 - y) * (1 + y))


def silu(x):
    r"""SiLU (swish), element-wise.

    Notes
    -----
    .. math::

        y = x\,\sigma(x)

    Where :math:`\sigma(x)` underflows to 0 the result is :math:`-0`, the
    limit, also at :math:`x = -\infty`.
    """
    x = _as_float(x)
    s = _sigmoid_parts(x)[0]
    with np.errstate(invalid="ignore"):
        return np.where(s == 0, x.dtype.type(-0.0), x * s)


def silu_backward(grad_out, x):
    r"""Gradient of :func:`silu`.

    Notes
    -----
    .. math::

        y' = \sigma(x) + x\,\sigma(x)(1 - \sigma(x))
           = \sigma(x)\bigl(1 + x\,(1 - \sigma(x))\bigr)

    with :math:`1 - \sigma(x)` taken as :math:`\sigma(-x)`; a factor that
    underflows to 0 makes its product 0 (the limits at infinity).
    """
    grad_out, x = np.asarray(grad_out), np.asarray(x)
    dtype = _float_dtype(grad_out, x)
    x = x.astype(dtype)
    s, c, _ = _sigmoid_parts(x)
    with np.errstate(invalid="ignore"):
        t = np.where(c == 0, 0, x * c)
        d = np.where(s == 0, 0, s * (1 + t))
    return (grad_out.astype(dtype) * d).astype(dtype, copy=False)


_erfc = np.frompyfunc(math.erfc, 1, 1)
_SQRT_2_PI = math.sqrt(2 / math.pi)


def gelu(x, approximate="none"):
    r"""GELU, element-wise, exact or with PyTorch's tanh approximation.

    Notes
    -----
    .. math::

        y = x\,\Phi(x) = \frac{x}{2}\,\mathrm{erfc}\Bigl(-\frac{x}{\sqrt 2}\Bigr)

    (:math:`\mathrm{erfc}` rather than :math:`1 + \mathrm{erf}`, which
    rounds the negative tail to 0), and with ``approximate="tanh"``, using
    :math:`\tfrac12(1 + \tanh u) = \sigma(2u)`:

    .. math::

        y = \frac{x}{2}\bigl(1 + \tanh u\bigr) = x\,\sigma(2u), \qquad
        u = \sqrt{2/\pi}\,\bigl(x + 0.044715\,x^3\bigr)
    """
    x = _as_float(x)
    if approximate == "tanh":
        u = _SQRT_2_PI * (x + 0.044715 * x ** 3)
        p = _sigmoid_parts(2 * u)[0]
    else:
        p = 0.5 * np.asarray(_erfc(-x / math.sqrt(2)), dtype=x.dtype)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.where(p == 0, x.dtype.type(-0.0), x * p),
                          dtype=x.dtype)


def gelu_backward(grad_out, x, approximate="none"):
    r"""Gradient of :func:`gelu`.

    Notes
    -----
    .. math::

        y' = \Phi(x) + x\,\varphi(x), \qquad
        \varphi(x) = \frac{e^{-x^2/2}}{\sqrt{2\pi}}

    and with ``approximate="tanh"``, :math:`s = \sigma(2u)`:

    .. math::

        y' = s + 2x\,s(1 - s)\,u', \qquad
        u' = \sqrt{2/\pi}\,\bigl(1 + 3 \cdot 0.044715\,x^2\bigr)

    A term whose small factor underflows to 0 is 0 (the limits at
    infinity).
    """
    grad_out, x = np.asarray(grad_out), np.asarray(x)
    dtype = _float_dtype(grad_out, x)
    x = x.astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        if approximate == "tanh":
            u = _SQRT_2_PI * (x + 0.044715 * x ** 3)
            du = _SQRT_2_PI * (1 + 3 * 0.044715 * x ** 2)
            s, _, q = _sigmoid_parts(2 * u)
            d = s + np.where(q == 0, 0, 2 * x * q * du)
        else:
            p = 0.5 * np.asarray(_erfc(-x / math.sqrt(2)), dtype=dtype)
            f = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            d = p + np.where(f == 0, 0, x * f)
    return (grad_out.astype(dtype) * d).astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    r"""2-D max pooling, returning the maxima and where they came from.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Input images.
    kernel_size : int or pair of int
        Window size ``(kh, kw)``.
    stride : int or pair of int, optional
        Step ``(sh, sw)`` between windows; defaults to ``kernel_size``.
    padding : int or pair of int, optional
        Implicit ``-inf`` added on each side, at most half the window.
        Default 0.
    ceil_mode : bool, optional
        Round the output size up (:func:`pool2d_output_shape`); a last
        window may then reach past the padding and is clipped. Default
        False.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        The maximum of each window.
    indices : ndarray of int64, shape (N, C, OH, OW)
        Position of each maximum in its input plane, flattened as
        ``h * W + w`` (PyTorch's ``return_indices``).

    Notes
    -----
    .. math::

        y_{n,c,i,j} = \max_{0 \le a < k_h,\; 0 \le b < k_w}
            \tilde x_{n,\,c,\; i s_h + a,\; j s_w + b}

    where :math:`\tilde x` is the input padded with :math:`-\infty`, and
    :math:`OH = \lfloor (H + 2p_h - k_h) / s_h \rfloor + 1`.

    Each window is scanned in row-major order; an element replaces the
    current maximum when ``value > maximum or isnan(value)``. So ties go to
    the first maximum, a window holding a NaN gives NaN with the index of its
    last NaN, and a window of only ``-inf`` gives ``-inf`` with the index of
    its first element inside the input. Padding is never selected: only the
    part of each window that overlaps the input is scanned, which is the same
    as padding with ``-inf``.
    """
    x = np.asarray(x)
    x = x.astype(_float_dtype(x), copy=False)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    OH, OW = pool2d_output_shape((H, W), (kh, kw), (sh, sw), (ph, pw),
                                 ceil_mode)

    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    indices = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh in range(OH):
        # the window in padded coordinates, clipped to the input
        h0 = max(oh * sh - ph, 0)
        h1 = min(oh * sh - ph + kh, H)
        for ow in range(OW):
            w0 = max(ow * sw - pw, 0)
            w1 = min(ow * sw - pw + kw, W)
            region = x[:, :, h0:h1, w0:w1].reshape(N, C, -1)  # row-major order

            # first maximum (np.argmax also returns 0 for an all -inf window)
            best = np.argmax(region, axis=-1)
            # ... unless the window holds a NaN: then the last NaN wins
            is_nan = np.isnan(region)
            last_nan = region.shape[-1] - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
            best = np.where(is_nan.any(axis=-1), last_nan, best)

            y[:, :, oh, ow] = np.take_along_axis(region, best[..., None], axis=-1)[..., 0]
            r, s = np.divmod(best, w1 - w0)
            indices[:, :, oh, ow] = (h0 + r) * W + (w0 + s)
    return y, indices


def max_pool2d_backward(grad_out, indices, input_shape):
    r"""Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW)
        Gradient of the loss with respect to the pooled output.
    indices : array_like of int, shape (N, C, OH, OW)
        The ``indices`` returned by :func:`max_pool2d`.
    input_shape : tuple of int
        ``(N, C, H, W)``, the forward input's shape.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``

    Notes
    -----
    Only the selected element of each window receives gradient; an element
    chosen by several overlapping windows receives the sum:

    .. math::

        \frac{\partial L}{\partial x_{n,c,h,w}} = \sum_{i,j:\;
            \mathrm{idx}_{n,c,i,j} = hW + w} \frac{\partial L}{\partial y_{n,c,i,j}}
    """
    grad_out = np.asarray(grad_out)
    grad_out = grad_out.astype(_float_dtype(grad_out), copy=False)
    indices = np.asarray(indices)
    N, C, H, W = (int(n) for n in input_shape)

    grad_planes = np.zeros((N * C, H * W), dtype=grad_out.dtype)
    plane = np.arange(N * C)[:, None]
    np.add.at(
        grad_planes,
        (plane, indices.reshape(N * C, -1)),
        grad_out.reshape(N * C, -1),
    )
    return grad_planes.reshape(N, C, H, W)


# ---------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True,
               ceil_mode=False):
    r"""2-D average pooling (PyTorch's ``avg_pool2d``).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size : int or pair of int
    stride : int or pair of int, optional
        Defaults to ``kernel_size``.
    padding : int or pair of int, optional
        Zeros added on each side, at most half the window. Default 0.
    count_include_pad : bool, optional
        Divide by the window's size with its padding (default) or by the
        number of input elements inside the window.
    ceil_mode : bool, optional
        Round the output size up, as :func:`max_pool2d`. Default False.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Notes
    -----
    .. math::

        y_{n,c,i,j} = \frac{1}{|w_{ij}|} \sum_{a < k_h,\; b < k_w}
            \tilde x_{n,\,c,\; i s_h + a,\; j s_w + b}

    with :math:`\tilde x` the zero-padded input and output sizes as
    :func:`max_pool2d`. When padding counts, :math:`|w_{ij}|` is the size of
    the window clipped to the padded input: :math:`k_h k_w`, except for a
    last window of ``ceil_mode`` that reaches past the padding (PyTorch's
    divisor).
    """
    x = np.asarray(x)
    x = x.astype(_float_dtype(x), copy=False)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    OH, OW = pool2d_output_shape((H, W), (kh, kw), (sh, sw), (ph, pw),
                                 ceil_mode)

    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
        for ow in range(OW):
            w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
            count = _avg_divisor(oh, ow, (H, W), (kh, kw), (sh, sw), (ph, pw),
                                 count_include_pad)
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / count
    return y


def _avg_divisor(oh, ow, size, kernel, stride, padding, count_include_pad):
    """The divisor of average-pooling window ``(oh, ow)``: its size clipped
    to the padded input when padding counts, else its number of input
    elements."""
    sides = []
    for i, n, k, s, p in zip((oh, ow), size, kernel, stride, padding):
        start = i * s - p
        if count_include_pad:
            sides.append(min(start + k, n + p) - start)
        else:
            sides.append(min(start + k, n) - max(start, 0))
    return sides[0] * sides[1]


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None,
                        padding=0, count_include_pad=True, ceil_mode=False):
    r"""Gradient of :func:`avg_pool2d`: every element of a window receives
    the window's gradient divided by the window's divisor.

    .. math::

        \frac{\partial L}{\partial x_{n,c,h,w}} = \sum_{(i,j) \ni (h,w)}
            \frac{1}{|w_{ij}|} \frac{\partial L}{\partial y_{n,c,i,j}}
    """
    grad_out = np.asarray(grad_out)
    grad_out = grad_out.astype(_float_dtype(grad_out), copy=False)
    N, C, H, W = (int(n) for n in input_shape)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    # ceil_mode changes only the number of windows, which grad_out carries
    OH, OW = grad_out.shape[2:]

    grad_x = np.zeros((N, C, H, W), dtype=grad_out.dtype)
    for oh in range(OH):
        h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
        for ow in range(OW):
            w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
            count = _avg_divisor(oh, ow, (H, W), (kh, kw), (sh, sw), (ph, pw),
                                 count_include_pad)
            grad_x[:, :, h0:h1, w0:w1] += (grad_out[:, :, oh, ow] / count)[:, :, None, None]
    return grad_x


def global_avg_pool2d(x):
    r"""The mean of each plane: ``(N, C, H, W) -> (N, C)``,
    :math:`y_{n,c} = \frac{1}{HW} \sum_{h,w} x_{n,c,h,w}`."""
    x = np.asarray(x)
    x = x.astype(_float_dtype(x), copy=False)
    return x.mean(axis=(2, 3))


def global_avg_pool2d_backward(grad_out, input_shape):
    r"""Gradient of :func:`global_avg_pool2d`: ``grad_out / (H W)`` spread
    over each plane."""
    grad_out = np.asarray(grad_out)
    grad_out = grad_out.astype(_float_dtype(grad_out), copy=False)
    N, C, H, W = (int(n) for n in input_shape)
    return np.broadcast_to((grad_out / (H * W))[:, :, None, None], (N, C, H, W)).copy()


def global_max_pool2d(x):
    r"""The maximum of each plane and where it is: ``(N, C, H, W) -> (N, C)``,
    PyTorch's ``adaptive_max_pool2d(x, 1, return_indices=True)``.

    Returns
    -------
    y : ndarray, shape (N, C)
        :math:`y_{n,c} = \max_{h,w} x_{n,c,h,w}`.
    indices : ndarray of int64, shape (N, C)
        Flat position ``h * W + w`` of each maximum: :func:`max_pool2d` with
        one window per plane (ties to the first maximum, a NaN wins).
    """
    x = np.asarray(x)
    N, C, H, W = x.shape
    y, indices = max_pool2d(x, (H, W))
    return y.reshape(N, C), indices.reshape(N, C)


def global_max_pool2d_backward(grad_out, indices, input_shape):
    r"""Gradient of :func:`global_max_pool2d`: each plane's gradient goes to
    its maximum, :math:`\partial L / \partial x_{n,c,h,w} = [hW + w =
    \mathrm{idx}_{n,c}]\, \partial L / \partial y_{n,c}`."""
    grad_out = np.asarray(grad_out)
    N, C, H, W = (int(n) for n in input_shape)
    return max_pool2d_backward(grad_out.reshape(N, C, 1, 1),
                               np.asarray(indices).reshape(N, C, 1, 1),
                               (N, C, H, W))


# ---------------------------------------------------------------------------
# Dense (fully connected)
# ---------------------------------------------------------------------------


def dense(x, weight, bias=None):
    r"""Fully connected layer.

    Parameters
    ----------
    x : array_like, shape (N, F)
        ``N`` flattened feature vectors.
    weight : array_like, shape (O, F)
        One row of weights per output.
    bias : array_like, shape (O,), optional
        Added to each output row.

    Returns
    -------
    y : ndarray, shape (N, O)

    Notes
    -----
    .. math::

        y_{n,o} = \sum_{f} x_{n,f}\, w_{o,f} + b_o
        \qquad\text{i.e.}\qquad y = x W^\top + b

    Examples
    --------
    >>> from cnnkit.reference import dense
    >>> dense([[1, 2, 3, 4]], [[0.5, -0.2, 0.1, 0.4]], [0.1])
    array([[2.1]])
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    bias = None if bias is None else np.asarray(bias)
    dtype = _float_dtype(x, weight, bias)
    y = x.astype(dtype, copy=False) @ weight.astype(dtype, copy=False).T
    if bias is not None:
        y = y + bias.astype(dtype, copy=False)
    return y


def dense_backward(grad_out, x, weight, bias=True):
    r"""Gradients of :func:`dense` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, O)
        Gradient of the loss with respect to the output.
    x : array_like, shape (N, F)
        The forward input.
    weight : array_like, shape (O, F)
        The forward weight.
    bias : bool, optional
        Whether the forward pass had a bias. Default True.

    Returns
    -------
    grad_x : ndarray, shape (N, F)
    grad_weight : ndarray, shape (O, F)
    grad_bias : ndarray, shape (O,), or None
        ``None`` when ``bias`` is false.

    Notes
    -----
    With :math:`G = \partial L / \partial y`:

    .. math::

        \frac{\partial L}{\partial x} = G W, \qquad
        \frac{\partial L}{\partial W} = G^\top x, \qquad
        \frac{\partial L}{\partial b} = \sum_n G_{n,:}
    """
    grad_out = np.asarray(grad_out)
    x = np.asarray(x)
    weight = np.asarray(weight)
    dtype = _float_dtype(grad_out, x, weight)
    grad_out = grad_out.astype(dtype, copy=False)
    x = x.astype(dtype, copy=False)
    weight = weight.astype(dtype, copy=False)

    grad_x = grad_out @ weight
    grad_weight = grad_out.T @ x
    grad_bias = grad_out.sum(axis=0) if bias else None
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------
# Merge ops: where branches of a graph meet
# ---------------------------------------------------------------------------
def add(xs):
    r"""The sum of arrays of one shape, added in list order.

    .. math:: y = ((x_0 + x_1) + x_2) + \dots

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.reference import add
    >>> add([np.ones(2), np.arange(2.0), np.full(2, 0.5)])
    array([1.5, 2.5])
    """
    y = np.array(xs[0], dtype=_float_dtype(*xs))
    for x in xs[1:]:
        y = y + x
    return y


def add_backward(grad_out, count):
    r"""Gradients of :func:`add` with respect to its ``count`` inputs: each
    is ``grad_out`` (:math:`\partial y / \partial x_i = 1`)."""
    return [np.array(grad_out) for _ in range(count)]


def multiply(xs):
    r"""The element-wise product of arrays of one shape, in list order.

    .. math:: y = ((x_0 \odot x_1) \odot x_2) \odot \dots
    """
    y = np.array(xs[0], dtype=_float_dtype(*xs))
    for x in xs[1:]:
        y = y * x
    return y


def multiply_backward(grad_out, xs):
    r"""Gradients of :func:`multiply`: input :math:`i` gets
    :math:`\bar y \odot \prod_{j \ne i} x_j`, the product taken in list
    order."""
    grads = []
    for i in range(len(xs)):
        g = np.array(grad_out)
        for j, x in enumerate(xs):
            if j != i:
                g = g * x
        grads.append(g)
    return grads


def concatenate(xs, axis=1):
    """Arrays joined along ``axis`` (1: the channels of (N, C, H, W)).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.reference import concatenate
    >>> concatenate([np.zeros((1, 1, 2)), np.ones((1, 2, 2))]).shape
    (1, 3, 2)
    """
    return np.concatenate([np.asarray(x, dtype=_float_dtype(*xs))
                           for x in xs], axis=axis)


def concatenate_backward(grad_out, sizes, axis=1):
    """Gradients of :func:`concatenate`: ``grad_out`` cut back into pieces
    of ``sizes`` along ``axis``."""
    edges = np.cumsum(sizes)[:-1]
    return [np.array(g) for g in np.split(np.asarray(grad_out), edges,
                                          axis=axis)]


# ---------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------


def _bn_axes(x):
    """The axes a channel's statistics run over, and the shape that lines a
    (C,) vector up with x."""
    axes = (0,) + tuple(range(2, x.ndim))
    return axes, (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm(x, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    r"""Batch normalisation (PyTorch's ``batch_norm``).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (N, C)
    running_mean, running_var : ndarray, shape (C,), or None
        Read in evaluation; updated in place in training when given.
    weight, bias : array_like, shape (C,), optional
        :math:`\gamma` and :math:`\beta` (1 and 0 when None).
    training : bool, optional
        Use the batch statistics. Default False.
    momentum : float, optional
        Weight of the batch in the running update. Default 0.1.
    eps : float, optional
        Added to the variance. Default 1e-5.

    Returns
    -------
    y : ndarray, shape of x

    Notes
    -----
    Per channel :math:`c`, over the :math:`m` values of the channel:

    .. math::

        \mu_c = \frac{1}{m} \sum x, \qquad
        \sigma_c^2 = \frac{1}{m} \sum (x - \mu_c)^2, \qquad
        y = \gamma_c \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c
    """
    x = np.asarray(x, dtype=np.float64)
    axes, shape = _bn_axes(x)
    if training:
        m = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = ((1 - momentum) * running_var +
                                momentum * var * m / (m - 1))
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    gamma = 1.0 if weight is None else np.asarray(weight).reshape(shape)
    beta = 0.0 if bias is None else np.asarray(bias).reshape(shape)
    return xhat * gamma + beta


def batch_norm_backward(grad_out, x, weight=None, running_mean=None,
                        running_var=None, training=True, eps=1e-5):
    r"""Gradients of :func:`batch_norm`.

    Parameters
    ----------
    grad_out : array_like, shape of x
    x : array_like, shape (N, C, H, W) or (N, C)
    weight : array_like, shape (C,), optional
    running_mean, running_var : array_like, shape (C,), optional
        The statistics of an evaluation-mode forward.
    training : bool, optional
        Whether the forward used the batch statistics. Default True.
    eps : float, optional

    Returns
    -------
    grad_x : ndarray, shape of x
    grad_weight, grad_bias : ndarray, shape (C,), or None
        None when ``weight`` is None.

    Notes
    -----
    With :math:`g = \partial L / \partial y`, :math:`m` values per channel
    and :math:`\sigma = \sqrt{\sigma_c^2 + \epsilon}`, in training

    .. math::

        \frac{\partial L}{\partial x} = \frac{\gamma}{m \sigma}
        \Bigl(m g - \sum g - \hat x \sum g \hat x\Bigr),

    and :math:`\gamma g / \sigma` when the statistics are fixed.
    """
    g = np.asarray(grad_out, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    axes, shape = _bn_axes(x)
    m = x.size // x.shape[1]
    if training:
        mean = x.mean(axis=axes)
        var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    sigma = np.sqrt(var + eps).reshape(shape)
    xhat = (x - mean.reshape(shape)) / sigma
    gamma = 1.0 if weight is None else np.asarray(
        weight, dtype=np.float64).reshape(shape)
    g_sum = g.sum(axis=axes).reshape(shape)
    gx_sum = (g * xhat).sum(axis=axes).reshape(shape)
    if training:
        grad_x = gamma / (m * sigma) * (m * g - g_sum - xhat * gx_sum)
    else:
        grad_x = gamma * g / sigma
    if weight is None:
        return grad_x, None, None
    return grad_x, gx_sum.reshape(-1), g_sum.reshape(-1)


# ---------------------------------------------------------------------------
# Softmax and cross-entropy
# ---------------------------------------------------------------------------


def softmax(logits):
    r"""Row-wise softmax, computed stably.

    Parameters
    ----------
    logits : array_like, shape (N, C)
        One row of class scores per sample.

    Returns
    -------
    p : ndarray, shape (N, C)
        Non-negative rows that sum to 1.

    Notes
    -----
    Subtracting the row maximum :math:`m_n = \max_c z_{n,c}` changes nothing
    mathematically and keeps every exponent :math:`\le 0`, so nothing
    overflows:

    .. math::

        p_{n,c} = \frac{e^{z_{n,c}}}{\sum_{c'} e^{z_{n,c'}}}
                = \frac{e^{z_{n,c} - m_n}}{\sum_{c'} e^{z_{n,c'} - m_n}}
    """
    z = np.asarray(logits)
    z = z.astype(_float_dtype(z), copy=False)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits):
    r"""Row-wise logarithm of :func:`softmax`, computed stably.

    Parameters
    ----------
    logits : array_like, shape (N, C)
        One row of class scores per sample.

    Returns
    -------
    log_p : ndarray, shape (N, C)

    Notes
    -----
    Using the log-sum-exp trick with :math:`m_n = \max_c z_{n,c}`:

    .. math::

        \log p_{n,c} = z_{n,c} - \log \sum_{c'} e^{z_{n,c'}}
                     = (z_{n,c} - m_n) - \log \sum_{c'} e^{z_{n,c'} - m_n}
    """
    z = np.asarray(logits)
    z = z.astype(_float_dtype(z), copy=False)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_backward(grad_out, logits):
    r"""Gradient of :func:`softmax` with respect to the logits.

    Parameters
    ----------
    grad_out : array_like, shape (N, C)
        Gradient of the loss with respect to the probabilities.
    logits : array_like, shape (N, C)

    Returns
    -------
    grad_logits : ndarray, shape (N, C)

    Notes
    -----
    The Jacobian of a row is :math:`\partial p_c / \partial z_k =
    p_c(\mathbb{1}[c = k] - p_k)`, so

    .. math::

        \frac{\partial L}{\partial z_{n,k}} = p_{n,k}\Bigl(g_{n,k}
            - \sum_c g_{n,c}\,p_{n,c}\Bigr)
    """
    grad_out, z = np.asarray(grad_out), np.asarray(logits)
    dtype = _float_dtype(grad_out, z)
    p = softmax(z.astype(dtype))
    g = grad_out.astype(dtype)
    return p * (g - (g * p).sum(axis=-1, keepdims=True))


def log_softmax_backward(grad_out, logits):
    r"""Gradient of :func:`log_softmax` with respect to the logits.

    Parameters
    ----------
    grad_out : array_like, shape (N, C)
        Gradient of the loss with respect to the log-probabilities.
    logits : array_like, shape (N, C)

    Returns
    -------
    grad_logits : ndarray, shape (N, C)

    Notes
    -----
    :math:`\partial \log p_c / \partial z_k = \mathbb{1}[c = k] - p_k`, so

    .. math::

        \frac{\partial L}{\partial z_{n,k}} = g_{n,k} - p_{n,k} \sum_c g_{n,c}
    """
    grad_out, z = np.asarray(grad_out), np.asarray(logits)
    dtype = _float_dtype(grad_out, z)
    g = grad_out.astype(dtype)
    return g - softmax(z.astype(dtype)) * g.sum(axis=-1, keepdims=True)


def softmax_cross_entropy(logits, labels, sample_weight=None,
                          label_smoothing=0.0):
    r"""Mean softmax cross-entropy loss and its gradient with respect to the logits.

    Parameters
    ----------
    logits : array_like, shape (N, C)
        Class scores.
    labels : array_like of int, shape (N,)
        The true class of each sample, in ``[0, C)``.
    sample_weight : array_like, shape (N,), optional
        Non-negative weights :math:`w_n`; the loss becomes the weighted mean
        :math:`\sum_n w_n \ell_n / \sum_n w_n` (0 if all weights are 0).
    label_smoothing : float in [0, 1], optional
        :math:`\varepsilon`: the one-hot target is mixed with the uniform
        one (PyTorch's ``label_smoothing``). Default 0.

    Returns
    -------
    loss : numpy floating scalar
        The mean loss, of the logits' float dtype.
    grad_logits : ndarray, shape (N, C)
        Gradient of ``loss`` with respect to ``logits``.

    Notes
    -----
    .. math::

        L = \frac{1}{N} \sum_{n} \Bigl(\log \sum_{c} e^{z_{n,c}} - z_{n,y_n}\Bigr)
          = -\frac{1}{N} \sum_n \log p_{n,y_n}

    .. math::

        \frac{\partial L}{\partial z_{n,c}} =
            \frac{1}{N}\bigl(p_{n,c} - \mathbb{1}[c = y_n]\bigr)

    where :math:`p` is :func:`softmax` of the logits. The loss is computed
    from :func:`log_softmax`, so logits of any magnitude give finite results.

    With label smoothing the target of row :math:`n` is
    :math:`t_{n,c} = (1 - \varepsilon)\,\mathbb{1}[c = y_n] + \varepsilon / C`:

    .. math::

        \ell_n = -\sum_c t_{n,c} \log p_{n,c}
              = (1 - \varepsilon)(-\log p_{n,y_n})
                + \frac{\varepsilon}{C} \sum_c (-\log p_{n,c}),
        \qquad
        \frac{\partial \ell_n}{\partial z_{n,c}} = p_{n,c} - t_{n,c}

    and the (weighted) mean is taken over these :math:`\ell_n`.
    """
    z = np.asarray(logits)
    z = z.astype(_float_dtype(z), copy=False)
    labels = np.asarray(labels).astype(np.intp, copy=False)
    N = z.shape[0]
    rows = np.arange(N)

    w = np.ones(N) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = w.sum()
    scale = w / total if total > 0 else np.zeros(N)    # 1/N each without weights

    eps = float(label_smoothing)
    C = z.shape[1]
    target = np.zeros(z.shape, dtype=np.float64)
    target[rows, labels] = 1
    if eps:
        target = (1 - eps) * target + eps / C

    log_p = log_softmax(z)
    per_row = -log_p[rows, labels]
    if eps:
        # PyTorch's form of -sum_c t_c log p_c (so a label of logit -inf
        # with eps = 1 gives 0 * inf = NaN, as there)
        per_row = (1 - eps) * per_row + eps / C * -log_p.sum(axis=1)
    loss = z.dtype.type((scale * per_row).sum())

    grad_logits = ((softmax(z) - target) * scale[:, None]).astype(z.dtype, copy=False)
    return loss, grad_logits


# ---------------------------------------------------------------------------
# Optimizer steps
# ---------------------------------------------------------------------------


def flush_subnormal(a):
    """``a`` with its subnormal values (and zeros) replaced by +0.

    The optimizers' buffers are stored this way: a unit whose gradient
    stays 0 (a dead ReLU) has its momentum shrink by the momentum factor
    each step into the subnormal range, where it would stay (0.9 times the
    smallest subnormal rounds back to it), and on x86 CPUs arithmetic on
    subnormal operands can take microcode assists many times slower than
    the operation itself.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.reference import flush_subnormal
    >>> flush_subnormal(np.array([1e-39, -1e-39, 1e-37, 0.5], np.float32))
    array([0.e+00, 0.e+00, 1.e-37, 5.e-01], dtype=float32)
    """
    a = np.asarray(a)
    tiny = np.finfo(a.dtype).tiny
    return np.where((a < tiny) & (a > -tiny), a.dtype.type(0), a)


def sgd_step(params, grads, momentum_buffer=None, lr=0.01, momentum=0.0,
             nesterov=False, weight_decay=0.0):
    r"""One step of SGD (PyTorch's, dampening 0), as :class:`cnnkit.optim.SGD`.

    Parameters
    ----------
    params, grads : ndarray
        The parameters and their gradients, one float dtype.
    momentum_buffer : ndarray or None
        The buffer of the previous step; None on the first step.
    lr, momentum, weight_decay : float
    nesterov : bool

    Returns
    -------
    params : ndarray
        The new parameters.
    momentum_buffer : ndarray or None
        The new buffer (None without momentum).

    Notes
    -----
    .. math::

        g &= \nabla + \lambda \theta \\
        b &= \mu b + g \qquad (b = g \text{ on the first step}) \\
        g &\leftarrow g + \mu b \text{ (Nesterov), else } b \\
        \theta &\leftarrow \theta - \eta g

    Each operation rounds to the arrays' dtype, in this order; the compiled
    step reproduces these bits.  A buffer value smaller in magnitude than
    the dtype's smallest normal number is stored as +0 (see
    :func:`flush_subnormal`).
    """
    g = grads
    if weight_decay != 0.0:
        g = g + weight_decay * params
    buf = None
    if momentum != 0.0:
        buf = g.copy() if momentum_buffer is None \
            else momentum * momentum_buffer + g
        buf = flush_subnormal(buf)
        g = g + momentum * buf if nesterov else buf
    return params - lr * g, buf


def adam_step(params, grads, exp_avg, exp_avg_sq, step, lr=1e-3,
              betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              decoupled=False):
    r"""One step of Adam, or AdamW with ``decoupled=True``, as
    :class:`cnnkit.optim.Adam` and :class:`cnnkit.optim.AdamW`.

    Parameters
    ----------
    params, grads, exp_avg, exp_avg_sq : ndarray
        Parameters, gradients and the moment estimates (zeros before the
        first step), one float dtype.
    step : int
        The 1-based number of this step (for the bias corrections).
    lr, eps, weight_decay : float
    betas : (float, float)
    decoupled : bool
        Decay the parameters directly (AdamW) instead of adding
        ``weight_decay * params`` to the gradient.

    Returns
    -------
    params, exp_avg, exp_avg_sq : ndarray
        The new parameters and moment estimates.

    Notes
    -----
    .. math::

        m &= \beta_1 m + (1 - \beta_1) g \\
        v &= \beta_2 v + (1 - \beta_2) g^2 \\
        \theta &\leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\, m \Big/
            \Bigl(\frac{\sqrt{v}}{\sqrt{1 - \beta_2^t}} + \epsilon\Bigr)

    Each operation rounds to the arrays' dtype, in this order; the compiled
    step reproduces these bits.  Values of ``m`` and ``v`` smaller in
    magnitude than the dtype's smallest normal number are stored as +0 (see
    :func:`flush_subnormal`).
    """
    beta1, beta2 = betas
    g = grads
    if weight_decay != 0.0:
        if decoupled:
            params = params * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * params
    m = flush_subnormal(beta1 * exp_avg + (1.0 - beta1) * g)
    v = flush_subnormal(beta2 * exp_avg_sq + (1.0 - beta2) * g * g)
    step_size = lr / (1.0 - beta1 ** step)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    return params - step_size * m / (np.sqrt(v) / bc2_sqrt + eps), m, v


# ---------------------------------------------------------------------------
# Data augmentation (cnnkit.transforms): the draws and the transforms
# ---------------------------------------------------------------------------
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = 2 ** 64 - 1


def _splitmix_finaliser(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def index_hash(index, key, k):
    r"""The ``k`` draws of each image of ``index`` under ``key``.

    Parameters
    ----------
    index : sequence of int
        Sample indices.
    key : int in [0, 2**64)
    k : int

    Returns
    -------
    ndarray of uint64, shape (len(index), k)

    Notes
    -----
    With :math:`\operatorname{mix}` the finaliser of splitmix64 and
    :math:`G` = ``0x9E3779B97F4A7C15``, all modulo :math:`2^{64}`:

    .. math::

        \operatorname{hash}(k, i, j) = \operatorname{mix}\bigl(
            \operatorname{mix}(k + (i + 1) G) + (j + 1) G\bigr)
    """
    out = np.zeros((len(index), k), dtype=np.uint64)
    for row, i in enumerate(index):
        h = _splitmix_finaliser((key + (int(i) + 1) * _GOLDEN) & _MASK64)
        for j in range(k):
            out[row, j] = _splitmix_finaliser((h + (j + 1) * _GOLDEN)
                                              & _MASK64)
    return out


def child_key(key, position):
    """The key of the transform at ``position`` of a ``Compose`` whose key
    is ``key``: ``mix(key + (position + 1) G)``."""
    return _splitmix_finaliser((key + (position + 1) * _GOLDEN) & _MASK64)


def _below(h, r):
    """An integer in [0, r) from a 64-bit draw: its top 32 bits, scaled."""
    return ((int(h) >> 32) * r) >> 32


def _uniform(h):
    """A float in [0, 1) from a 64-bit draw: its top 53 bits."""
    return (int(h) >> 11) * 2.0 ** -53


def random_crop(x, index, key, size=None, padding=0):
    """:class:`cnnkit.transforms.RandomCrop` of the batch ``x`` (N, C, H, W)
    whose images have the sample indices ``index``, under ``key``.

    Each image is zero-padded by ``padding`` (an int or ``(ph, pw)``) and
    cropped at ``(oy, ox)``, draws 0 and 1 of the image as integers in
    ``[0, H + 2ph - sh]`` and ``[0, W + 2pw - sw]``.
    """
    x = np.asarray(x)
    n, c, h, w = x.shape
    ph, pw = _pair(padding)
    sh, sw = (h, w) if size is None else _pair(size)
    draws = index_hash(index, key, 2)
    y = np.zeros((n, c, sh, sw), dtype=x.dtype)
    for i in range(n):
        padded = np.pad(x[i], ((0, 0), (ph, ph), (pw, pw)))
        oy = _below(draws[i, 0], h + 2 * ph - sh + 1)
        ox = _below(draws[i, 1], w + 2 * pw - sw + 1)
        y[i] = padded[:, oy:oy + sh, ox:ox + sw]
    return y


def random_horizontal_flip(x, index, key, p=0.5):
    """:class:`cnnkit.transforms.RandomHorizontalFlip`: image ``i`` is
    mirrored left to right when its uniform draw 0 is below ``p``."""
    x = np.asarray(x)
    draws = index_hash(index, key, 1)
    y = x.copy()
    for i in range(x.shape[0]):
        if _uniform(draws[i, 0]) < p:
            y[i] = x[i, :, :, ::-1]
    return y


def random_translation(x, index, key, height_factor, width_factor):
    """:class:`cnnkit.transforms.RandomTranslation`: image ``i`` moves by
    ``t = m - d`` pixels down and right, with ``m = floor(factor * size)``
    and ``d`` its draws 0 and 1 as integers in ``[0, 2m]``; zeros fill."""
    x = np.asarray(x)
    n, c, h, w = x.shape
    mh = math.floor(height_factor * h)
    mw = math.floor(width_factor * w)
    draws = index_hash(index, key, 2)
    y = np.zeros_like(x)
    for i in range(n):
        ty = mh - _below(draws[i, 0], 2 * mh + 1)
        tx = mw - _below(draws[i, 1], 2 * mw + 1)
        for r in range(h):
            for s in range(w):
                if 0 <= r - ty < h and 0 <= s - tx < w:
                    y[i, :, r, s] = x[i, :, r - ty, s - tx]
    return y


def normalize(x, mean, std):
    """:class:`cnnkit.transforms.Normalize`: ``(x - mean) / std`` per
    channel, in x's dtype."""
    x = np.asarray(x)
    c = x.shape[1]
    mean = np.broadcast_to(np.asarray(mean, dtype=x.dtype), (c,))
    std = np.broadcast_to(np.asarray(std, dtype=x.dtype), (c,))
    return (x - mean[:, None, None]) / std[:, None, None]

