r"""Data augmentation: random crops, flips and translations of training
batches, and per-channel normalisation.

A transform takes a batch of images ``x`` of shape ``(N, C, H, W)`` and
returns a new one; ``x`` is never written.  Pass one to
:meth:`cnnkit.Sequential.fit` (``augment=``) and every gathered training
batch goes through it before the forward pass; validation and evaluation
batches never do.

Random draws are counter-based: image ``i`` of the training set (its index,
its position in the ``x`` given to ``fit``) gets draws that depend only on
a 64-bit ``key`` and ``i``:

.. math::

   \operatorname{hash}(k, i, j) = \operatorname{mix}\bigl(
       \operatorname{mix}(k + (i + 1) G) + (j + 1) G\bigr) \bmod 2^{64},

where :math:`\operatorname{mix}` is the finaliser of splitmix64 and
:math:`G` = ``0x9E3779B97F4A7C15``.  An integer in :math:`[0, R)` is
``((hash >> 32) * R) >> 32``, a uniform number in :math:`[0, 1)` is
``(hash >> 11) * 2**-53``.  During ``fit`` the model's seeded generator
draws one key per epoch (after the epoch's shuffle), so an image's
augmentation depends on the seed, the epoch and the image's index only: not
on the batch it falls in, the batch size, the thread count, the number of
shards or the number of MPI ranks.  :class:`Compose` gives its ``j``-th
transform the key ``mix(key + (j + 1) G)``.  :mod:`cnnkit.reference` holds
the same computations in plain NumPy.

The crops, translations and flips run in C over the images (OpenMP),
writing into a second buffer; a flip that follows a crop or a translation in
a :class:`Compose` runs in the same pass.

Examples
--------
>>> import numpy as np
>>> from cnnkit.transforms import Compose, RandomCrop, RandomHorizontalFlip
>>> augment = Compose([RandomCrop(8, padding=1), RandomHorizontalFlip()])
>>> x = np.ones((4, 1, 8, 8), dtype=np.float32)
>>> y = augment(x, key=7)
>>> y.shape
(4, 1, 8, 8)
>>> bool((augment(x, key=7) == y).all())      # same key, same images
True
"""
import json
import math
import numbers

import numpy as np

from . import _ops

__all__ = ["Transform", "Compose", "RandomCrop", "RandomHorizontalFlip",
           "RandomTranslation", "Normalize", "serialize", "deserialize",
           "parse", "TRANSFORMS"]

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = 2 ** 64 - 1


def _mix(z):
    """splitmix64's finaliser of a 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _child_key(key, position):
    """The key of the transform at ``position`` in a Compose."""
    return _mix((key + (position + 1) * _GOLDEN) & _MASK)


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _size_pair(value, name, owner, minimum):
    """An int or a pair of ints, each >= minimum, as a tuple of two."""
    pair = (value, value) if _is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or \
            not all(_is_int(v) for v in pair):
        raise TypeError(f"{owner}: {name} must be an int or a pair of ints, "
                        f"got {value!r}")
    pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum or max(pair) > 2 ** 31 - 1:
        raise ValueError(f"{owner}: {name} must lie in [{minimum}, 2**31), "
                         f"got {value!r}")
    return pair


def _fraction(value, name, owner):
    if not _is_real(value):
        raise TypeError(f"{owner}: {name} must be a float, got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {value!r}")
    return value


def _batch(x, owner):
    """x as a float (N, C, H, W) ndarray (ints and bools as float64)."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{owner}: x must be array-like ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: x must be a real numeric array, got dtype "
                        f"{arr.dtype}")
    if arr.ndim != 4:
        raise ValueError(f"{owner}: x must be a batch of shape (N, C, H, W), "
                         f"got shape {arr.shape}")
    return _ops.as_float(arr)


def _index(index, n, owner):
    """The sample indices of a batch of n images, as int64 (n,)."""
    if index is None:
        return np.arange(n, dtype=np.int64)
    ind = np.asarray(index)
    if ind.size == 0 and ind.dtype == np.float64:
        ind = ind.astype(np.int64)          # [] or np.array([]): no images
    if ind.dtype.kind not in "iu":
        raise TypeError(f"{owner}: index must be integer sample indices, got "
                        f"dtype {ind.dtype}")
    if ind.shape != (n,):
        raise ValueError(f"{owner}: index must have shape ({n},), one index "
                         f"per image, got {ind.shape}")
    if n and (int(ind.min()) < 0 or int(ind.max()) >= 2 ** 63):
        raise ValueError(f"{owner}: index must lie in [0, 2**63), got values "
                         f"in [{int(ind.min())}, {int(ind.max())}]")
    return np.ascontiguousarray(ind, dtype=np.int64)


def _key(key, owner):
    if key is None:
        return int(np.random.default_rng().integers(0, 2 ** 64,
                                                    dtype=np.uint64))
    if not _is_int(key):
        raise TypeError(f"{owner}: key must be an int or None, got {key!r}")
    key = int(key)
    if not 0 <= key < 2 ** 64:
        raise ValueError(f"{owner}: key must be in [0, 2**64), got {key}")
    return key


def _image_shape(shape, owner):
    """A (C, H, W) image shape as a tuple of ints."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 3 or \
            not all(_is_int(v) and v >= 0 for v in shape):
        raise ValueError(f"{owner}: input_shape must be (C, H, W), got "
                         f"{shape!r}")
    return tuple(int(v) for v in shape)


# ---------------------------------------------------------------------------
# the passes a transform runs
# ---------------------------------------------------------------------------
class _Window:
    """One pass of the window copy: per image, (dy, dx) = draws in
    ``[0, range)`` minus ``base``, a flip with probability ``flip_p``,
    output shape ``out``."""

    __slots__ = ("key_shift", "range_hw", "base_hw", "key_flip", "flip_p",
                 "out")

    def __init__(self, key_shift, range_hw, base_hw, key_flip, flip_p, out):
        self.key_shift, self.range_hw, self.base_hw = (key_shift, range_hw,
                                                       base_hw)
        self.key_flip, self.flip_p, self.out = key_flip, flip_p, out

    def pure_flip(self):
        return self.range_hw == (1, 1) and self.base_hw == (0, 0)

    def run(self, x, index, kept, slot):
        n = x.shape[0]
        params = _ops.window_draws(
            index, self.key_shift, self.range_hw, self.base_hw,
            self.key_flip, self.flip_p,
            None if kept is None else kept(("params", slot), (n, 3),
                                           np.int64))
        out = None if kept is None else kept(slot, (n,) + self.out, x.dtype)
        return _ops.shift_flip_forward(x, params, self.out[1:], out)


class _Affine:
    """One pass of ``(x - mean) / std`` per channel, in x's dtype."""

    __slots__ = ("mean", "std")

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def run(self, x, index, kept, slot):
        mean = self.mean.astype(x.dtype)
        std = self.std.astype(x.dtype)
        out = (np.empty(x.shape, x.dtype) if kept is None
               else kept(slot, x.shape, x.dtype))
        np.subtract(x, mean, out=out)
        return np.divide(out, std, out=out)


def _plan(pairs, shape):
    """The passes of (transform, key) pairs on images of ``shape`` (C, H, W):
    a flip right after a crop or translation joins its pass."""
    passes = []
    for transform, key in pairs:
        step = transform._pass(key, shape)
        if isinstance(step, _Window):
            last = passes[-1] if passes else None
            if step.pure_flip() and isinstance(last, _Window) and \
                    last.flip_p == 0.0:
                passes[-1] = _Window(last.key_shift, last.range_hw,
                                     last.base_hw, step.key_flip,
                                     step.flip_p, last.out)
                continue
            shape = step.out
        passes.append(step)
    return passes


# ---------------------------------------------------------------------------
# the transforms
# ---------------------------------------------------------------------------
class Transform:
    """Base class of the transforms: a callable on ``(N, C, H, W)``
    batches with a config."""

    def __call__(self, x, index=None, key=None):
        """The transformed batch, a new array.

        Parameters
        ----------
        x : array_like of shape (N, C, H, W)
            float32 and float64 are kept; integers and bools become
            float64.  Never written.
        index : array_like of int, shape (N,), optional
            The images' sample indices, which select their draws; by
            default ``0 .. N-1``.
        key : int in [0, 2**64), optional
            The draws' key; a fresh random one when None.

        Returns
        -------
        ndarray of shape (N, C, OH, OW)
        """
        owner = type(self).__name__
        x = _batch(x, owner)
        index = _index(index, x.shape[0], owner)
        key = _key(key, owner)
        self.output_shape(x.shape[1:])
        y = self._run(x, index, key, None)
        return x.copy() if y is x else y

    def output_shape(self, input_shape):
        """The image shape ``(C, OH, OW)`` this transform makes of images
        of ``input_shape`` ``(C, H, W)``; ValueError when it cannot take
        them."""
        shape = _image_shape(input_shape, type(self).__name__)
        for step in _plan(self._pairs(0), shape):
            if isinstance(step, _Window):
                shape = step.out
        return shape

    def get_config(self):
        """The constructor's arguments, JSON-friendly."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        """A transform from :meth:`get_config`'s dict."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(
            f"{k}={tuple(v) if isinstance(v, list) else v!r}"
            for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and \
            self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__,
                     json.dumps(self.get_config(), sort_keys=True)))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cache", None)
        return state

    # -- how the model's trainer runs it --------------------------------
    def _pairs(self, key):
        """The (primitive transform, key) pairs this transform runs."""
        return [(self, key)]

    def _pass(self, key, shape):
        """The pass of a primitive transform on images of ``shape``."""
        raise NotImplementedError

    def _run(self, x, index, key, kept):
        """Run on a checked batch: ``x`` a C-contiguous float array,
        ``index`` int64 (N,), ``key`` an int; ``kept(slot, shape, dtype)``
        gives the arrays to write (None: new ones).  Returns x itself when
        there is nothing to do."""
        tag = (key, x.shape[1:])
        cache = self.__dict__.get("_cache")
        if cache is None or cache[0] != tag:
            cache = self._cache = (tag, _plan(self._pairs(key), x.shape[1:]))
        for slot, step in enumerate(cache[1]):
            x = step.run(x, index, kept, slot)
        return x


class RandomCrop(Transform):
    """Crop a random ``size`` window of each image zero-padded by
    ``padding`` on every side (PyTorch's ``RandomCrop(size, padding)``).

    Parameters
    ----------
    size : int, (int, int) or None
        Output height and width; None keeps the input's (the usual choice
        with padding: the image moves by up to ``padding`` pixels).
    padding : int or (int, int), default 0
        Zero rows above and below, zero columns left and right.

    Notes
    -----
    For an image of ``H x W`` padded by ``(ph, pw)`` and a crop of
    ``(sh, sw)``, the top-left corner ``(oy, ox)`` in the padded image is
    drawn uniformly in ``[0, H + 2ph - sh] x [0, W + 2pw - sw]`` (draws 0
    and 1 of the image): ``y[c, r, s] = padded[c, oy + r, ox + s]``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.transforms import RandomCrop
    >>> RandomCrop(6, padding=1)(np.zeros((2, 3, 8, 8)), key=0).shape
    (2, 3, 6, 6)
    """

    def __init__(self, size=None, padding=0):
        owner = "RandomCrop"
        self.size = None if size is None else _size_pair(size, "size",
                                                         owner, 1)
        self.padding = _size_pair(padding, "padding", owner, 0)

    def get_config(self):
        return {"size": None if self.size is None else list(self.size),
                "padding": list(self.padding)}

    def _pass(self, key, shape):
        c, h, w = shape
        ph, pw = self.padding
        sh, sw = (h, w) if self.size is None else self.size
        if sh > h + 2 * ph or sw > w + 2 * pw or sh < 1 or sw < 1:
            raise ValueError(
                f"RandomCrop: crop size ({sh}, {sw}) does not fit in the "
                f"padded image ({h + 2 * ph}, {w + 2 * pw}) (images "
                f"{shape}, padding {self.padding})")
        rh, rw = h + 2 * ph - sh + 1, w + 2 * pw - sw + 1
        if max(rh, rw) >= 2 ** 32:
            raise ValueError(f"RandomCrop: images of {shape} are too large")
        return _Window(key, (rh, rw), (ph, pw), 0, 0.0, (c, sh, sw))


class RandomHorizontalFlip(Transform):
    """Mirror each image left to right with probability ``p`` (PyTorch's
    ``RandomHorizontalFlip``).

    Parameters
    ----------
    p : float in [0, 1], default 0.5

    Notes
    -----
    Image ``i`` is flipped when its uniform draw 0 is below ``p``:
    ``y[c, r, s] = x[c, r, W - 1 - s]``.
    """

    def __init__(self, p=0.5):
        self.p = _fraction(p, "p", "RandomHorizontalFlip")

    def get_config(self):
        return {"p": self.p}

    def _pass(self, key, shape):
        return _Window(0, (1, 1), (0, 0), key, self.p, tuple(shape))


class RandomTranslation(Transform):
    """Shift each image by a random whole number of pixels, filling with
    zeros (Keras's ``RandomTranslation`` with ``fill_mode="constant"``).

    Parameters
    ----------
    height_factor, width_factor : float in [0, 1]
        The largest shift as a fraction of the height and width: the
        bound is ``m = floor(factor * size)`` pixels and the shift is
        drawn uniformly among the integers in ``[-m, m]``.

    Notes
    -----
    With draws ``d_y`` in ``[0, 2 m_y]`` (draw 0) and ``d_x`` in
    ``[0, 2 m_x]`` (draw 1), the shift is ``t = m - d`` and
    ``y[c, r, s] = x[c, r - t_y, s - t_x]`` (0 outside the image): a
    positive ``t_y`` moves the picture down.  Keras draws a real shift and
    interpolates; here shifts are whole pixels, so no value is blurred.
    """

    def __init__(self, height_factor, width_factor):
        owner = "RandomTranslation"
        self.height_factor = _fraction(height_factor, "height_factor", owner)
        self.width_factor = _fraction(width_factor, "width_factor", owner)

    def get_config(self):
        return {"height_factor": self.height_factor,
                "width_factor": self.width_factor}

    def _pass(self, key, shape):
        c, h, w = shape
        mh = math.floor(self.height_factor * h)
        mw = math.floor(self.width_factor * w)
        return _Window(key, (2 * mh + 1, 2 * mw + 1), (mh, mw), 0, 0.0,
                       tuple(shape))


class Normalize(Transform):
    """``(x - mean) / std`` per channel (torchvision's ``Normalize``).

    Parameters
    ----------
    mean, std : float or sequence of float
        One value for every channel, or one per channel; ``std`` has no
        zeros.  Computed in the batch's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.transforms import Normalize
    >>> Normalize([0.5, 1.0], [0.5, 2.0])(np.ones((1, 2, 1, 1)))[0, :, 0, 0]
    array([1., 0.])
    """

    def __init__(self, mean, std):
        owner = "Normalize"
        self.mean = self._values(mean, "mean", owner)
        self.std = self._values(std, "std", owner)
        if len(self.mean) > 1 and len(self.std) > 1 and \
                len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean has {len(self.mean)} values "
                             f"but std has {len(self.std)}")
        if any(s == 0.0 for s in self.std):
            raise ValueError(f"Normalize: std must have no zeros, got "
                             f"{list(self.std)}")

    @staticmethod
    def _values(v, name, owner):
        vals = [v] if _is_real(v) else v
        if not isinstance(vals, (tuple, list, np.ndarray)) or \
                np.ndim(vals) != 1 or len(vals) == 0 or \
                not all(_is_real(a) for a in vals):
            raise TypeError(f"{owner}: {name} must be a float or a sequence "
                            f"of floats, got {v!r}")
        vals = tuple(float(a) for a in vals)
        if not all(math.isfinite(a) for a in vals):
            raise ValueError(f"{owner}: {name} must be finite, got {v!r}")
        return vals

    def get_config(self):
        return {"mean": list(self.mean), "std": list(self.std)}

    def _pass(self, key, shape):
        c = shape[0]
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, c):
                raise ValueError(
                    f"Normalize: {name} has {len(vals)} values but the "
                    f"images have {c} channels (shape {tuple(shape)})")
        mean = np.broadcast_to(np.array(self.mean), (c,)).reshape(c, 1, 1)
        std = np.broadcast_to(np.array(self.std), (c,)).reshape(c, 1, 1)
        return _Affine(mean, std)


class Compose(Transform):
    """Apply transforms one after the other (torchvision's ``Compose``).

    Parameters
    ----------
    transforms : sequence of Transform
        The ``j``-th draws with the key ``mix(key + (j + 1) G)``.

    Examples
    --------
    >>> from cnnkit.transforms import (Compose, RandomCrop,
    ...                                RandomHorizontalFlip)
    >>> Compose([RandomCrop(8, padding=1), RandomHorizontalFlip()])
    Compose([RandomCrop(size=(8, 8), padding=(1, 1)), RandomHorizontalFlip(p=0.5)])
    """

    def __init__(self, transforms):
        if isinstance(transforms, Transform) or \
                not isinstance(transforms, (list, tuple)):
            raise TypeError(f"Compose: transforms must be a list of "
                            f"transforms, got {transforms!r}")
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"Compose: transforms must be cnnkit "
                                f"transforms, got {t!r}")
        self.transforms = list(transforms)

    def get_config(self):
        return {"transforms": [serialize(t) for t in self.transforms]}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or set(config) != {"transforms"} or \
                not isinstance(config["transforms"], list):
            raise ValueError(f"Compose: config must be "
                             f"{{'transforms': [...]}}, got {config!r}")
        return cls([deserialize(c) for c in config["transforms"]])

    def __repr__(self):
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"

    def _pairs(self, key):
        pairs = []
        for j, t in enumerate(self.transforms):
            pairs.extend(t._pairs(_child_key(key, j)))
        return pairs


#: The transforms a config may name.
TRANSFORMS = {cls.__name__: cls for cls in
              (Compose, RandomCrop, RandomHorizontalFlip, RandomTranslation,
               Normalize)}


def serialize(transform):
    """``{"class_name": ..., "config": ...}`` of a transform (JSON-friendly).

    Examples
    --------
    >>> from cnnkit.transforms import RandomHorizontalFlip, serialize
    >>> serialize(RandomHorizontalFlip(0.25))
    {'class_name': 'RandomHorizontalFlip', 'config': {'p': 0.25}}
    """
    if not isinstance(transform, Transform):
        raise TypeError(f"serialize: expected a cnnkit transform, got "
                        f"{transform!r}")
    return {"class_name": type(transform).__name__,
            "config": transform.get_config()}


def deserialize(config):
    """The transform of a :func:`serialize` dict."""
    if not isinstance(config, dict) or \
            set(config) != {"class_name", "config"}:
        raise ValueError(f"deserialize: expected {{'class_name': ..., "
                         f"'config': ...}}, got {config!r}")
    cls = TRANSFORMS.get(config["class_name"])
    if cls is None:
        raise ValueError(f"deserialize: unknown transform "
                         f"{config['class_name']!r}; expected one of "
                         f"{', '.join(sorted(TRANSFORMS))}")
    if not isinstance(config["config"], dict):
        raise ValueError(f"deserialize: config of {config['class_name']} "
                         f"must be a dict, got {config['config']!r}")
    try:
        return cls.from_config(config["config"])
    except TypeError as exc:
        if "argument" in str(exc):
            raise ValueError(f"deserialize: bad config for "
                             f"{config['class_name']}: {exc}") from None
        raise


SPEC_HELP = ("comma-separated steps: crop:P (pad by P, crop back to the "
             "image size), flip[:P] (horizontal, probability P, default "
             "0.5), translate:F[:FW] (shift by up to F of the height and FW "
             "of the width, default FW = F), normalize:MEAN:STD (numbers, or "
             "one per channel joined by '/')")


def parse(spec):
    """A :class:`Compose` from the command line's ``--augment`` syntax.

    Steps are separated by commas and run in order:

    ``crop:P``
        :class:`RandomCrop` ``(None, padding=P)``: pad by ``P`` pixels,
        crop back to the image's size.
    ``flip`` or ``flip:P``
        :class:`RandomHorizontalFlip` ``(P)`` (default 0.5).
    ``translate:F`` or ``translate:FH:FW``
        :class:`RandomTranslation` ``(FH, FW)`` (``FW = FH`` by default).
    ``normalize:MEAN:STD``
        :class:`Normalize`; each of ``MEAN`` and ``STD`` a number or one
        number per channel joined by ``/`` (``0.5/0.4/0.4``).

    Examples
    --------
    >>> from cnnkit.transforms import parse
    >>> parse("crop:2,flip")
    Compose([RandomCrop(size=None, padding=(2, 2)), RandomHorizontalFlip(p=0.5)])
    """
    if not isinstance(spec, str):
        raise TypeError(f"augment spec must be a string, got {spec!r}")
    if not spec.strip():
        raise ValueError(f"augment spec is empty; expected {SPEC_HELP}")
    steps = []
    for item in spec.split(","):
        name, *args = item.strip().split(":")
        try:
            steps.append(_parse_step(name, args))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"augment step {item.strip()!r}: {exc}; "
                             f"expected {SPEC_HELP}") from None
    return Compose(steps)


def _parse_step(name, args):
    def number(text, kind=float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a "
                             f"{'whole ' if kind is int else ''}number") \
                from None

    def arity(lo, hi):
        if not lo <= len(args) <= hi:
            raise ValueError(f"{name} takes {lo}"
                             f"{'' if lo == hi else f' to {hi}'} "
                             f"argument(s), got {len(args)}")

    if name == "crop":
        arity(1, 1)
        return RandomCrop(None, padding=number(args[0], int))
    if name == "flip":
        arity(0, 1)
        return RandomHorizontalFlip(number(args[0]) if args else 0.5)
    if name == "translate":
        arity(1, 2)
        fh = number(args[0])
        return RandomTranslation(fh, number(args[1]) if len(args) > 1
                                 else fh)
    if name == "normalize":
        arity(2, 2)
        return Normalize([number(v) for v in args[0].split("/")],
                         [number(v) for v in args[1].split("/")])
    raise ValueError(f"unknown step {name!r}")
