"""The lean tier into the kernels, for layers, the trainer and optimizers.

:mod:`cnnkit.functional` is the public way into the C kernels: it
normalises every argument on every call.  Inside a model the arguments are
known when the model is built, so the layers hold op objects made once at
``build`` (the geometry normalised, the padding resolved to four sides) and
call the bindings through them; the trainer, the optimizers, the shard
reduction and the thread settings call the functions here.  These two
modules are the only ones that import ``_kernels``.

Inputs that are not already C-contiguous arrays of the op's float dtype are
converted once (:func:`as_float`), by the dtype rules of
:mod:`cnnkit.functional`.  Every ``out`` argument is an array to write
instead of allocating, or None.
"""
import numpy as np

from . import _kernels
# Element-wise ops, the loss, the fixed pairwise tree that adds shard
# gradients, optimizer steps over the flat parameter buffer, threads and
# build facts: no geometry to hold, the bindings as they are.
from ._kernels import (adam_step, all_finite, build_info, eltwise,
                       get_num_threads, relu_backward, relu_forward,
                       set_num_threads,
                       sgd_step, softmax, softmax_cross_entropy,
                       thread_policy, tree_sum)
from ._kernels import (gelu_backward, gelu_forward, leaky_relu_backward,
                       leaky_relu_forward, log_softmax, log_softmax_backward,
                       sigmoid_backward, sigmoid_forward, silu_backward,
                       silu_forward, softmax_backward, tanh_backward,
                       tanh_forward)
# Data augmentation (cnnkit.transforms): the per-image draws and the window
# copy, on arguments the transforms have checked.
from ._kernels import index_hash, shift_flip_forward, window_draws
# Compiled inference plans (cnnkit.plan) and training steps: the checked
# steps, held in C, whether a convolution's pass can end with a 2x2 max
# pooling, the channel-blocked layout of the plans' convolutions, and how
# a step keeps a max pooling's winners.
from ._kernels import PlanProgram, TrainProgram
from ._kernels import _max_pool_places as max_pool_places
from ._kernels import aligned_empty
from ._kernels import _conv_pools as conv_pools
from ._kernels import _blocked_lanes as blocked_lanes
from ._kernels import _blocked_size as blocked_size
from ._kernels import _conv_blocked as conv_blocked

__all__ = [
    "as_float", "conv_padding", "conv_output_hw", "Conv2DOp", "DenseOp",
    "MaxPool2DOp", "AvgPool2DOp", "GlobalMaxPool2DOp", "pool_output_hw",
    "relu_forward", "relu_backward", "eltwise", "eltwise_in_place",
    "softmax",
    "softmax_cross_entropy", "tree_sum", "sgd_step", "adam_step",
    "all_finite",
    "set_num_threads", "get_num_threads", "thread_policy", "build_info",
    "batch_norm_statistics", "batch_norm_invstd", "batch_norm_forward",
    "batch_norm_inference", "batch_norm_backward_sums",
    "batch_norm_backward", "batch_norm_update_running", "tree_rows",
    "leaky_relu_forward", "leaky_relu_backward", "sigmoid_forward",
    "sigmoid_backward", "tanh_forward", "tanh_backward", "silu_forward",
    "silu_backward", "gelu_forward", "gelu_backward", "softmax_backward",
    "log_softmax", "log_softmax_backward",
    "index_hash", "window_draws", "shift_flip_forward",
    "PlanProgram",
    "TrainProgram",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def eltwise_in_place(a, b):
    """Whether :func:`eltwise` reads ``a`` and ``b`` where they lie: one
    shape and float dtype, both C-contiguous and aligned.  Other pairs
    (strided views, broadcasting shapes) take NumPy's ufuncs, which read
    them without a copy."""
    return (type(a) is np.ndarray and type(b) is np.ndarray and
            a.shape == b.shape and a.dtype == b.dtype and
            a.dtype in _FLOATS and a.flags.c_contiguous and
            b.flags.c_contiguous and a.flags.aligned and b.flags.aligned)


def as_float(x, dtype=None):
    """``x`` as an ndarray the kernels take: of ``dtype`` when given, else
    float32 and float64 kept, float16 computed in float32, integers and
    bools promoted to float64 (the rules of :mod:`cnnkit.functional`)."""
    if type(x) is np.ndarray and (x.dtype == dtype if dtype is not None
                                  else x.dtype in _FLOATS):
        return x
    x = np.asarray(x)
    if dtype is None:
        kind, size = x.dtype.kind, x.dtype.itemsize
        if kind in "biu":
            dtype = np.float64
        elif kind == "f" and size <= 8:
            dtype = np.float32 if size <= 4 else np.float64
        else:
            raise TypeError(f"input must have a real float, integer or bool "
                            f"dtype; got dtype {x.dtype}")
    return x.astype(dtype, copy=False)


def conv_padding(padding, kernel_hw, stride, dilation, owner):
    """conv2d's padding as (top, bottom, left, right): from a pair
    (ph, pw) of checked ints, or from ``"valid"`` / ``"same"`` (stride 1;
    an odd total puts the extra row and column at the bottom and right, as
    PyTorch does)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            if tuple(stride) != (1, 1):
                raise ValueError(
                    f"{owner}: padding='same' needs stride 1, got stride "
                    f"{tuple(stride)}")
            out = []
            for k, d in zip(kernel_hw, dilation):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return tuple(out)
        raise ValueError(
            f"{owner}: padding must be an int, a pair, 'valid' or 'same'; got "
            f"{padding!r}")
    ph, pw = padding
    return ph, ph, pw, pw


def conv_output_hw(hw, kernel_hw, stride, padding, dilation=(1, 1)):
    """(OH, OW) of a convolution or pooling window sweep: ``(H + pt + pb -
    dh*(R-1) - 1) // sh + 1`` and likewise for the width; ``padding`` is
    (top, bottom, left, right).  A size below 1 means the window does not
    fit."""
    h, w = hw
    pt, pb, pl, pr = padding
    oh = (h + pt + pb - dilation[0] * (kernel_hw[0] - 1) - 1) // stride[0] + 1
    ow = (w + pl + pr - dilation[1] * (kernel_hw[1] - 1) - 1) // stride[1] + 1
    return oh, ow


def pool_output_hw(hw, kernel_hw, stride, padding, ceil_mode=False):
    """(OH, OW) of a pooling window sweep with ``padding`` (ph, pw) on
    each side: ``(H + 2ph - kh) // sh + 1``, or with ``ceil_mode`` rounded
    up, less one when the last window would start in the bottom (right)
    padding (PyTorch's rule).  A size below 1 means no window fits."""
    out = []
    for i, k, s, p in zip(hw, kernel_hw, stride, padding):
        if ceil_mode:
            o = (i + 2 * p - k + s - 1) // s + 1
            if o >= 1 and (o - 1) * s >= i + p:
                o -= 1
        else:
            o = (i + 2 * p - k) // s + 1
        out.append(o)
    return tuple(out)


#: Tiles of 4x4 outputs a run of images needs for Winograd's weight
#: gradient (fewer: the direct sums, which measured faster there).
WINOGRAD_WEIGHT_MIN_TILES = 64


class Conv2DOp:
    """conv2d with a fixed geometry: stride (sh, sw), padding (top, bottom,
    left, right), dilation (dh, dw) and groups; with ``winograd``, the
    forward pass and the input and weight gradients by Winograd's
    F(4x4, 3x3) where :meth:`winograd_tiles` says it computes them."""

    __slots__ = ("stride", "padding", "dilation", "groups", "winograd",
                 "_tiles")

    def __init__(self, stride, padding, dilation, groups=1, winograd=False):
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = int(groups)
        self.winograd = bool(winograd)
        self._tiles = {}

    def winograd_tiles(self, x_shape, w_shape, dtype):
        """(forward, input gradient, weight gradient): 4 where that pass
        runs by F(4x4, 3x3), else 0, for inputs of ``x_shape`` (C, H, W).
        A pass takes it where Winograd's route through channel blocks
        computes it (a 3x3 kernel of stride 1 and dilation 1, one group,
        padding of at most 2 for the input gradient, filters a whole number
        of the SIMD path's vectors) and, as measured, pays: the products'
        depth -- the input channels forward, the filters for the input
        gradient -- at least 16, and for the weight gradient at least 32
        channels and 32 filters (the weight gradient of a run of images
        also needs ``WINOGRAD_WEIGHT_MIN_TILES`` tiles of 4x4 outputs).
        The choice depends on the shapes alone (and a run's images), never
        on the threads."""
        key = (tuple(x_shape), tuple(w_shape), np.dtype(dtype).char)
        tiles = self._tiles.get(key)
        if tiles is not None:
            return tiles
        tiles = (0, 0, 0)
        if (self.winograd and self.groups == 1 and
                tuple(w_shape[2:]) == (3, 3) and self.stride == (1, 1) and
                self.dilation == (1, 1) and len(self.padding) == 4):
            k, c = w_shape[0], w_shape[1]
            fwd = int(c >= 16 and _kernels._winograd_blocks(
                (1,) + tuple(x_shape), w_shape, self.padding, dtype, 4))
            back = tuple(2 - p for p in self.padding)
            oh, ow = conv_output_hw(x_shape[1:], (3, 3), (1, 1),
                                    self.padding, (1, 1))
            data = int(k >= 16 and min(back) >= 0 and
                       _kernels._winograd_blocks(
                           (1, k, oh, ow), (c, k, 3, 3), back, dtype, 4))
            tiles = (4 * fwd, 4 * data, 4 * (fwd and c >= 32 and k >= 32))
        self._tiles[key] = tiles
        return tiles

    def forward(self, x, weight, bias, relu=False, out=None):
        """y (N,K,OH,OW) = conv(x, weight) + bias, then max(0, y) when
        ``relu`` (the bits of a separate ReLU)."""
        tile = (self.winograd_tiles(x.shape[1:], weight.shape, x.dtype)[0]
                if self.winograd else 0)
        return _kernels.conv2d_forward(x, weight, bias, self.stride,
                                       self.padding, self.dilation, relu, out,
                                       groups=self.groups,
                                       winograd=tile or None)

    def _winograd_input_grad(self, grad, x, weight, input_grad, gx):
        """The input gradient by F(4x4, 3x3) where it takes it, else None:
        a convolution of grad by the filters turned half a turn and
        transposed (C, K, 3, 3), padded by 2 - p on each side."""
        if not (self.winograd and input_grad and
                self.winograd_tiles(x.shape[1:], weight.shape, x.dtype)[1]):
            return None
        turned = np.ascontiguousarray(
            weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        return _kernels.conv2d_forward(
            grad, turned, None, (1, 1), tuple(2 - p for p in self.padding),
            (1, 1), False, gx, winograd=4)

    def _winograd_weight(self, grad, x, weight):
        """Whether the weight gradient runs by F(4x4, 3x3)."""
        return bool(self.winograd and x.shape[0] and
                    self.winograd_tiles(x.shape[1:], weight.shape,
                                        x.dtype)[2])

    def _weight_parts(self, grad, x, weight, bounds, gw_parts, gb_parts):
        """The weight (and bias) gradients of the runs of samples: by
        F(4x4, 3x3) for the runs it takes, by the direct sums for the
        others (the bias gradients are the direct path's bits)."""
        done = _kernels._conv_winograd_weight_parts(
            grad, x, weight, self.padding, bounds, gw_parts,
            WINOGRAD_WEIGHT_MIN_TILES, gb_parts)
        b = [int(v) for v in bounds]
        done = [0] * (len(b) - 1) if done is None else done.tolist()
        q = 0
        while q < len(done):
            if done[q]:
                q += 1
                continue
            r = q
            while r < len(done) and not done[r]:
                r += 1
            _kernels.conv2d_backward_parts(
                grad, x, weight, self.stride, self.padding, self.dilation,
                b[q:r + 1], gw_parts[q:r],
                None if gb_parts is None else gb_parts[q:r], False, None,
                groups=self.groups)
            q = r

    def backward(self, grad, x, weight, input_grad=True, bias=True,
                 gx=None, gw=None, gb=None):
        """(grad_x or None, grad_weight, grad_bias or None)."""
        if self._winograd_weight(grad, x, weight):
            # the batch in runs of a fixed split (by its size alone), their
            # gradients added in order
            n = x.shape[0]
            runs = max(1, min(8, n // 4))
            bounds = [n * i // runs for i in range(runs + 1)]
            parts = np.empty((runs,) + weight.shape, weight.dtype)
            bparts = np.empty((runs, weight.shape[0]), weight.dtype) \
                if bias else None
            gx = self.backward_parts(grad, x, weight, bounds, parts, bparts,
                                     input_grad, gx)
            return (gx, _sum_into(parts, gw),
                    _sum_into(bparts, gb) if bias else None)
        wgx = self._winograd_input_grad(grad, x, weight, input_grad, gx)
        if wgx is not None:
            _, gw, gb = _kernels.conv2d_backward(
                grad, x, weight, self.stride, self.padding, self.dilation,
                False, bias, None, gw, gb, groups=self.groups)
            return wgx, gw, gb
        return _kernels.conv2d_backward(grad, x, weight, self.stride,
                                        self.padding, self.dilation,
                                        input_grad, bias, gx, gw, gb,
                                        groups=self.groups)

    def backward_parts(self, grad, x, weight, bounds, gw_parts, gb_parts,
                       input_grad=True, gx=None):
        """The weight (and bias) gradient of each run of samples
        ``[bounds[q], bounds[q+1])`` into ``gw_parts[q]`` (``gb_parts[q]``);
        returns the input gradient (or None)."""
        wino_weight = self._winograd_weight(grad, x, weight)
        wgx = self._winograd_input_grad(grad, x, weight, input_grad, gx)
        if not wino_weight and wgx is None:
            return _kernels.conv2d_backward_parts(
                grad, x, weight, self.stride, self.padding, self.dilation,
                bounds, gw_parts, gb_parts, input_grad, gx,
                groups=self.groups)
        if wino_weight:
            self._weight_parts(grad, x, weight, bounds, gw_parts, gb_parts)
        else:
            _kernels.conv2d_backward_parts(
                grad, x, weight, self.stride, self.padding, self.dilation,
                bounds, gw_parts, gb_parts, False, None, groups=self.groups)
        if wgx is None and input_grad:     # the direct input gradient alone
            wgx = _kernels._conv2d_input_grad(
                grad, x, weight, self.stride, self.padding, self.dilation,
                gx, groups=self.groups)
        return wgx


def _sum_into(parts, out):
    """parts summed over their first axis, in order, into out (or new)."""
    total = np.add.reduce(parts, axis=0)
    if out is None:
        return total
    out[...] = total
    return out


class MaxPool2DOp:
    """Max pooling with a fixed window, stride, (-inf) padding and
    output-size rounding (``ceil_mode``)."""

    __slots__ = ("kernel_size", "stride", "padding", "ceil_mode")

    def __init__(self, kernel_size, stride, padding, ceil_mode=False):
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x, out=None, indices_out=None):
        """(y, indices): int64 flat ``h*W+w`` indices of each maximum."""
        return _kernels.max_pool2d_forward(x, self.kernel_size, self.stride,
                                          self.padding, out, indices_out,
                                          self.ceil_mode)

    def backward(self, grad, indices, input_shape, out=None,
                 relu_pooled=None):
        """The input gradient; with ``relu_pooled`` (this pool's output) it
        also goes back through the ReLU that produced the pool's input."""
        return _kernels.max_pool2d_backward(grad, indices, input_shape, out,
                                           relu_pooled)


class AvgPool2DOp:
    """Average pooling with a fixed window, stride, (zero) padding and
    output-size rounding (``ceil_mode``)."""

    __slots__ = ("kernel_size", "stride", "padding", "count_include_pad",
                 "ceil_mode")

    def __init__(self, kernel_size, stride, padding, count_include_pad=True,
                 ceil_mode=False):
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.count_include_pad = bool(count_include_pad)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        return _kernels.avg_pool2d_forward(x, self.kernel_size, self.stride,
                                          self.padding,
                                          self.count_include_pad,
                                          self.ceil_mode)

    def backward(self, grad, input_shape):
        return _kernels.avg_pool2d_backward(grad, tuple(input_shape),
                                           self.kernel_size, self.stride,
                                           self.padding,
                                           self.count_include_pad,
                                           self.ceil_mode)


class GlobalMaxPool2DOp:
    """The maximum of each plane: (N, C, H, W) -> (N, C), with the flat
    ``h*W+w`` index of each maximum."""

    __slots__ = ()

    def forward(self, x, out=None, indices_out=None):
        return _kernels.global_max_pool2d_forward(x, out, indices_out)

    def backward(self, grad, indices, input_shape, out=None):
        return _kernels.global_max_pool2d_backward(grad, indices,
                                                  tuple(input_shape), out)


class DenseOp:
    """The dense layer's passes, with the call shape of :class:`Conv2DOp`
    (a dense layer has no geometry to hold)."""

    __slots__ = ()

    def forward(self, x, weight, bias, relu=False, out=None):
        """y (N,O) = x @ weight.T + bias."""
        if relu:
            raise ValueError("dense: no fused activation")
        return _kernels.dense_forward(x, weight, bias, out)

    def backward(self, grad, x, weight, input_grad=True, bias=True,
                 gx=None, gw=None, gb=None):
        return _kernels.dense_backward(grad, x, weight, input_grad, bias,
                                       gx, gw, gb)

    def backward_parts(self, grad, x, weight, bounds, gw_parts, gb_parts,
                       input_grad=True, gx=None, gw_tree=None):
        return _kernels.dense_backward_parts(grad, x, weight, bounds,
                                             gw_parts, gb_parts, input_grad,
                                             gx, gw_tree)


# --------------------------------------------------------------------------
# batch normalisation: the statistics from per-run sums, and the passes
# --------------------------------------------------------------------------
batch_norm_forward = _kernels.batch_norm_forward
batch_norm_inference = _kernels.batch_norm_inference
batch_norm_backward_sums = _kernels.batch_norm_backward_sums
batch_norm_backward = _kernels.batch_norm_backward


def tree_rows(rows):
    """The float64 sum of the rows of ``rows`` (runs, k) in the fixed
    pairwise tree (one row: that row)."""
    out = np.empty(rows.shape[1:], dtype=np.float64)
    if rows.shape[0] == 1:
        out[...] = rows[0]
    else:
        flat = rows.reshape(rows.shape[0], -1)
        tree_sum([flat[i] for i in range(flat.shape[0])], out.reshape(-1))
    return out


def batch_norm_statistics(x, count, bounds=None, reduce=tree_rows):
    """The batch mean and biased variance per channel (float64) of x (N, C,
    H, W) or (N, C), over ``count`` values per channel, in two passes: the
    sums of each run of images ``[bounds[q], bounds[q+1])`` (one run of
    all by default), added by ``reduce`` ((runs, C) float64 -> (C,)) into
    the batch's sum, for the mean, then the centred sums of squares."""
    mean = reduce(_kernels.batch_norm_sums(x, None, bounds)) / count
    var = reduce(_kernels.batch_norm_sums(x, mean, bounds)) / count
    return mean, var


def batch_norm_invstd(var, eps, dtype):
    """``1 / sqrt(var + eps)`` in float64, rounded to ``dtype`` (the
    rounding the inference kernel does)."""
    return (1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)).astype(
        dtype)


def batch_norm_update_running(running_mean, running_var, mean, var, count,
                              momentum):
    """In place, PyTorch's rule: ``running = (1 - momentum) * running +
    momentum * batch``, with the unbiased variance ``var * count / (count -
    1)`` (computed in float64, stored in the running arrays' dtype)."""
    if running_mean is not None:
        running_mean[...] = ((1.0 - momentum) *
                             running_mean.astype(np.float64) +
                             momentum * mean)
    if running_var is not None:
        unbiased = var * (count / (count - 1.0))
        running_var[...] = ((1.0 - momentum) *
                            running_var.astype(np.float64) +
                            momentum * unbiased)
