"""What a built model takes as images, and the messages when it is not.

A model built for samples of shape ``input_shape`` (``(C, H, W)`` for a
CNN) takes a batch ``(n, C, H, W)``, a batch ``(n, H, W)`` when ``C`` is 1,
or one image, ``(C, H, W)`` or, when ``C`` is 1, ``(H, W)``.  Anything else
is refused with a message that names the shape the caller gave (never one
made from it) and, when the array looks like flat rows or channels-last
images, the NumPy call that converts it.
"""
import math

import numpy as np

from . import _ops

__all__ = ["as_batch", "real_array", "checked_batch"]


def real_array(x, name="x"):
    """``x`` as an array of real numbers (bool and integers included):
    TypeError otherwise, naming ``name``."""
    try:
        x = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like ({exc})") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a real numeric array, got dtype {x.dtype}")
    return x


def checked_batch(x, dtype, name="x", check_finite=True):
    """A batch (first axis: samples) as a C-contiguous array of ``dtype``:
    ValueError when it is empty or, with ``check_finite``, holds NaN or
    infinite values."""
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    # C-contiguous and aligned (a view of a byte buffer at an odd offset is
    # copied: the kernels read whole elements)
    x = np.require(x, dtype=dtype, requirements=["C", "A"])
    if check_finite and not _ops.all_finite(x):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return x


def _dims(shape):
    """``(1, 8, 8)`` -> ``"1, 8, 8"``."""
    return ", ".join(str(d) for d in shape)


def _accepted(input_shape):
    """The shapes a model of ``input_shape`` takes, in words."""
    batch = [f"(n, {_dims(input_shape)})"]
    one = [str(tuple(input_shape))]
    if len(input_shape) > 1 and input_shape[0] == 1:
        batch.append(f"(n, {_dims(input_shape[1:])}) for one channel")
        one.append(str(tuple(input_shape[1:])))
    return f"{' or '.join(batch)}, or one image {' or '.join(one)}"


def _hint(shape, input_shape):
    """What an array of ``shape`` seems to be and the call that makes it
    what a model of ``input_shape`` takes; "" when it seems nothing."""
    size = math.prod(input_shape)
    if len(input_shape) == 3:
        c, h, w = input_shape
        if len(shape) == 4 and shape[1:] == (h, w, c):
            return (" (channels last: (n, H, W, C)); the model takes "
                    "channels first: x.transpose(0, 3, 1, 2)")
        if shape == (h, w, c):
            return (" (one image, channels last: (H, W, C)); the model "
                    "takes channels first: x.transpose(2, 0, 1)")
    if len(input_shape) > 1:
        if len(shape) == 2 and shape[1] == size:
            return (f" (flat rows of {size} values); the model takes "
                    f"images: x.reshape(-1, {_dims(input_shape)})")
        if shape == (size,):
            return (f" (one flat image of {size} values); the model takes "
                    f"images: x.reshape(1, {_dims(input_shape)})")
    return ""


def as_batch(x, input_shape, name="x"):
    """``x`` as a batch of samples of shape ``input_shape``.

    Parameters
    ----------
    x : numpy.ndarray
        A batch ``(n,) + input_shape``; a batch ``(n, H, W)`` when
        ``input_shape`` is ``(1, H, W)``; or one sample, ``input_shape`` or,
        when its first axis is 1, ``input_shape[1:]``.
    input_shape : tuple of int
        The shape of one sample (a built model's ``input_shape``).
    name : str, default "x"
        What ``x`` is called in messages.

    Returns
    -------
    numpy.ndarray
        ``x`` of shape ``(n,) + input_shape``, a view of it (never a copy).

    Raises
    ------
    ValueError
        For any other shape; the message names ``name``, its shape, the
        accepted shapes and, for flat rows or channels-last images, the
        call that converts them.

    Examples
    --------
    >>> import numpy as np
    >>> as_batch(np.zeros((5, 8, 8)), (1, 8, 8)).shape
    (5, 1, 8, 8)
    >>> as_batch(np.zeros((8, 8)), (1, 8, 8)).shape
    (1, 1, 8, 8)
    >>> as_batch(np.zeros((5, 64)), (1, 8, 8))
    Traceback (most recent call last):
    ...
    ValueError: x has shape (5, 64) (flat rows of 64 values); the model \
takes images: x.reshape(-1, 1, 8, 8)
    """
    input_shape = tuple(input_shape)
    shape = tuple(x.shape)
    k = len(input_shape)
    if shape[1:] == input_shape:
        return x
    if shape == input_shape:
        return x[None]                              # one sample
    if k > 1 and input_shape[0] == 1:               # one channel
        if shape[1:] == input_shape[1:]:
            return x[:, None]
        if shape == input_shape[1:]:
            return x[None, None]
    hint = _hint(shape, input_shape)
    if hint:
        raise ValueError(f"{name} has shape {shape}{hint}")
    raise ValueError(f"{name} must have shape {_accepted(input_shape)}; "
                     f"got {shape}")
