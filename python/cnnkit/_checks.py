"""Argument checks shared by the Python modules: integers, sizes.

Each check raises with a message that names the owner (``"Conv2D"``,
``"fit"``), the argument, what was expected and what was given.  The array
checks that protect the C kernels live in the bindings (``_kernels.pyx``);
these are the checks of the hyperparameters and sizes above them.
"""
import math
import numbers

import numpy as np

#: The most elements an array, a parameter buffer or a per-sample shape may
#: hold: index arithmetic in the kernels is 64-bit and products of sizes
#: must not overflow it.
MAX_ELEMENTS = 2 ** 62


def is_int(value):
    """Whether ``value`` is an integer (a Python or NumPy int, not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_))


def check_int(value, name, minimum=None, owner=None, type_error=TypeError):
    """``value`` as a Python int (>= ``minimum`` when given).

    A value that is not an int raises ``type_error`` (TypeError unless the
    caller documents ValueError); one below ``minimum`` raises ValueError.
    """
    prefix = f"{owner}: " if owner else ""
    expected = "an int" if minimum is None else f"an int >= {minimum}"
    if not is_int(value):
        raise type_error(f"{prefix}{name} must be {expected}, got {value!r} "
                         f"of type {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{prefix}{name} must be {expected}, got {value!r}")
    return int(value)


def check_pair(value, name, minimum=1, owner=None):
    """An int or a pair of ints (each >= ``minimum``) as a tuple (h, w)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            prefix = f"{owner}: " if owner else ""
            raise ValueError(f"{prefix}{name} must be an int or a pair of "
                             f"ints, got {value!r}")
        return tuple(check_int(v, name, minimum, owner) for v in value)
    v = check_int(value, name, minimum, owner)
    return (v, v)


def check_elements(shape, what):
    """The number of elements of ``shape``, or ValueError naming ``what``
    when it passes :data:`MAX_ELEMENTS`."""
    size = math.prod(int(d) for d in shape)
    if size > MAX_ELEMENTS:
        raise ValueError(f"{what} has {size} elements, more than cnnkit "
                         f"supports (2**62)")
    return size


def check_keys(expected, given, prefix):
    """ValueError ``"{prefix}: missing [...], unexpected [...]"`` unless the
    names in ``given`` are exactly those in ``expected``."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{prefix}: missing {missing or 'none'}, unexpected "
                         f"{unexpected or 'none'}")
