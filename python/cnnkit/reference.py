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
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "dense",
    "dense_backward",
    "add",
    "add_backward",
    "multiply",
    "multiply_backward",
    "concatenate",
    "concatenate_backward",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
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


def pool2d_output_shape(input_size, kernel_size, stride=None, padding=0):
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

    Returns
    -------
    tuple of int
        ``(OH, OW)``.

    Notes
    -----
    .. math::

        O = \left\lfloor \frac{I + 2p - k}{s} \right\rfloor + 1
    """
    H, W = _pair(input_size)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    return _window_count(H, kh, sh, 2 * ph), _window_count(W, kw, sw, 2 * pw)


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


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    r"""2-D convolution (cross-correlation) of a batch of images.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Input images. A 2-D ``(H, W)`` array together with a 2-D ``(R, S)``
        ``weight`` is taken as one image with one channel.
    weight : array_like, shape (K, C, R, S)
        ``K`` filters of ``C`` channels each.
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
    (likewise for :math:`OW`).

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
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = _conv_padding(padding, (R, S), (sh, sw), (dh, dw))
    OH, OW = conv2d_output_shape((H, W), (R, S), (sh, sw), padding, (dh, dw))

    x_padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.empty((N, K, OH, OW), dtype=dtype)
    for oh in range(OH):
        for ow in range(OW):
            rows = _window(oh, sh, R, dh)
            cols = _window(ow, sw, S, dw)
            region = x_padded[:, :, rows, cols]  # (N, C, R, S)
            # multiply by each kernel and sum over (C, R, S) -> (N, K)
            y[:, :, oh, ow] = np.tensordot(region, weight, axes=([1, 2, 3], [1, 2, 3]))

    if bias is not None:
        y += bias.astype(dtype, copy=False).reshape(1, K, 1, 1)
    return y[0, 0] if single_image else y


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, bias=True):
    r"""Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, K, OH, OW)
        Gradient of the loss with respect to the convolution's output.
    x : array_like, shape (N, C, H, W)
        The forward input.
    weight : array_like, shape (K, C, R, S)
        The forward weight.
    stride, padding, dilation
        As in :func:`conv2d` (``padding`` may be ``"valid"`` or ``"same"``).
    bias : bool, optional
        Whether the forward pass had a bias; if false no bias gradient is
        computed. Default True.

    Returns
    -------
    grad_x : ndarray, shape (N, C, H, W)
    grad_weight : ndarray, shape (K, C, R, S)
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
    for oh in range(OH):
        for ow in range(OW):
            rows = _window(oh, sh, R, dh)
            cols = _window(ow, sw, S, dw)
            g = grad_out[:, :, oh, ow]  # (N, K)
            # dL/dw[k] += sum_n g[n, k] * window[n]
            grad_weight += np.tensordot(g, x_padded[:, :, rows, cols], axes=([0], [0]))
            # dL/dwindow[n] += sum_k g[n, k] * w[k]   (scatter-add into the window)
            grad_x_padded[:, :, rows, cols] += np.tensordot(g, weight, axes=([1], [0]))

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
# Max pooling
# ---------------------------------------------------------------------------


def max_pool2d(x, kernel_size, stride=None, padding=0):
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
    OH, OW = pool2d_output_shape((H, W), (kh, kw), (sh, sw), (ph, pw))

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


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
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
        Divide by ``kh * kw`` (default) or by the number of input elements
        inside the window.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Notes
    -----
    .. math::

        y_{n,c,i,j} = \frac{1}{|w_{ij}|} \sum_{a < k_h,\; b < k_w}
            \tilde x_{n,\,c,\; i s_h + a,\; j s_w + b}

    with :math:`\tilde x` the zero-padded input, :math:`|w_{ij}| = k_h k_w`
    when padding counts, and output sizes as :func:`max_pool2d`.
    """
    x = np.asarray(x)
    x = x.astype(_float_dtype(x), copy=False)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    OH, OW = pool2d_output_shape((H, W), (kh, kw), (sh, sw), (ph, pw))

    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
        for ow in range(OW):
            w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
            count = kh * kw if count_include_pad else (h1 - h0) * (w1 - w0)
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / count
    return y


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None,
                        padding=0, count_include_pad=True):
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
    OH, OW = grad_out.shape[2:]

    grad_x = np.zeros((N, C, H, W), dtype=grad_out.dtype)
    for oh in range(OH):
        h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
        for ow in range(OW):
            w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
            count = kh * kw if count_include_pad else (h1 - h0) * (w1 - w0)
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


def softmax_cross_entropy(logits, labels, sample_weight=None):
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
    """
    z = np.asarray(logits)
    z = z.astype(_float_dtype(z), copy=False)
    labels = np.asarray(labels).astype(np.intp, copy=False)
    N = z.shape[0]
    rows = np.arange(N)

    w = np.ones(N) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = w.sum()
    scale = w / total if total > 0 else np.zeros(N)    # 1/N each without weights

    log_p = log_softmax(z)
    loss = z.dtype.type(-(scale * log_p[rows, labels]).sum())

    one_hot = np.zeros_like(z)
    one_hot[rows, labels] = 1
    grad_logits = ((softmax(z) - one_hot) * scale[:, None]).astype(z.dtype, copy=False)
    return loss, grad_logits


# ---------------------------------------------------------------------------
# Optimizer steps
# ---------------------------------------------------------------------------


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
    step reproduces these bits.
    """
    g = grads
    if weight_decay != 0.0:
        g = g + weight_decay * params
    buf = None
    if momentum != 0.0:
        buf = g.copy() if momentum_buffer is None \
            else momentum * momentum_buffer + g
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
    step reproduces these bits.
    """
    beta1, beta2 = betas
    g = grads
    if weight_decay != 0.0:
        if decoupled:
            params = params * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * params
    m = beta1 * exp_avg + (1.0 - beta1) * g
    v = beta2 * exp_avg_sq + (1.0 - beta2) * g * g
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
    r"""The draws ``j = 0 .. k-1`` of the images ``index`` under ``key``.

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

