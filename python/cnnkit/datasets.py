"""Datasets for training and testing cnnkit models, all offline.

- :func:`load_digits` returns the 8x8 handwritten digits (UCI "Optical
  Recognition of Handwritten Digits", 1,797 images, 10 classes, CC BY 4.0),
  shipped inside the package as ``cnnkit/data/digits.npz``; see
  ``cnnkit/data/README.md`` for its provenance and attribution.
- :func:`load_mnist` reads MNIST or Fashion-MNIST from files the caller
  already has: a folder of the standard IDX files or one ``.npz`` archive.
- :func:`train_test_split` makes a seeded, stratified train/test split.
- :func:`make_synthetic` draws a learnable synthetic image-classification
  task of any size, for benchmarks and tests.

Images come back in cnnkit's layout, float32 ``(n, channels, rows, cols)``
with pixel values scaled to [0, 1], and labels as int64 ``(n,)``. Only NumPy
and the standard library are used.
"""
from __future__ import annotations

import functools
import gzip
import importlib.resources
import io
import math
import numbers
import os
import struct
import zlib

import numpy as np

from ._checks import check_int

__all__ = ["load_digits", "load_mnist", "train_test_split", "make_synthetic"]


# --------------------------------------------------------------------------
# Shipped data files
# --------------------------------------------------------------------------

def _read_data_file(name):
    """Bytes of ``cnnkit/data/<name>``, found through importlib.resources
    (which also covers zipped and editable installs), else beside this file."""
    try:
        resource = importlib.resources.files(__package__ or "cnnkit") / "data" / name
        return resource.read_bytes()
    except (OSError, ImportError, TypeError, ValueError):
        pass
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"cnnkit's data file 'data/{name}' is missing from the installed "
            f"package (looked for {path}); reinstall cnnkit") from None


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """The digits as read-only float32 images and int64 labels, read once."""
    with np.load(io.BytesIO(_read_data_file("digits.npz")),
                 allow_pickle=False) as archive:
        images = archive["images"]
        labels = archive["labels"]
    if (images.shape != (1797, 8, 8) or labels.shape != (1797,)
            or images.dtype != np.uint8 or labels.dtype != np.uint8
            or images.max() > 16 or labels.max() > 9):
        raise ValueError(
            "cnnkit's data file 'data/digits.npz' is damaged (expected uint8 "
            "images (1797, 8, 8) in 0..16 and uint8 labels (1797,) in 0..9, "
            f"got images {images.dtype} {images.shape} and labels "
            f"{labels.dtype} {labels.shape}); reinstall cnnkit")
    x = (images.astype(np.float32) / np.float32(16)).reshape(1797, 1, 8, 8)
    y = labels.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_digits():
    """Load the 8x8 handwritten digits shipped with cnnkit.

    The test partition of the UCI "Optical Recognition of Handwritten
    Digits" dataset (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0;
    https://doi.org/10.24432/C50P49), as distributed with scikit-learn:
    1,797 grey images of 8x8 pixels, each pixel the count (0..16) of ink
    pixels in a 4x4 block of a 32x32 bitmap, in 10 classes (the digits 0-9,
    174 to 183 images each). It needs no network access.

    Returns
    -------
    x : ndarray of float32, shape (1797, 1, 8, 8)
        The images, pixel counts divided by 16 so values lie in [0, 1].
    y : ndarray of int64, shape (1797,)
        The digit shown in each image, 0..9.

    Raises
    ------
    FileNotFoundError
        If the installed package lacks its data file ``data/digits.npz``.

    Notes
    -----
    The file is read once per process; every call returns new arrays that
    the caller may modify.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.datasets import load_digits
    >>> x, y = load_digits()
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((1797, 1, 8, 8), dtype('float32'), (1797,), dtype('int64'))
    >>> float(x.min()), float(x.max())
    (0.0, 1.0)
    >>> np.bincount(y).tolist()
    [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    """
    x, y = _digits_arrays()
    return x.copy(), y.copy()


# --------------------------------------------------------------------------
# MNIST: IDX files and .npz archives
# --------------------------------------------------------------------------

_IDX_TYPE_NAMES = {
    0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16",
    0x0C: "int32", 0x0D: "float32", 0x0E: "float64",
}

# (role, standard file name, alternative spelling used by some mirrors)
_MNIST_FILES = (
    ("train images", "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train labels", "train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test images", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test labels", "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
)

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

_CHUNK = 1 << 22


def _read_upto(f, n):
    """Read at most ``n`` bytes, in chunks, so that a header promising more
    data than the stream holds never allocates the promised size."""
    parts = []
    remaining = n
    while remaining > 0:
        piece = f.read(min(_CHUNK, remaining))
        if not piece:
            break
        parts.append(piece)
        remaining -= len(piece)
    return b"".join(parts)


def _count_rest(f):
    """Number of bytes left in the stream (read and discarded in chunks)."""
    total = 0
    while True:
        piece = f.read(_CHUNK)
        if not piece:
            return total
        total += len(piece)


def _read_idx(path, kind):
    """Parse one IDX file (plain or gzip-compressed) of unsigned bytes.

    ``kind`` is "images" (3 dimensions, magic 0x00000803) or "labels"
    (1 dimension, magic 0x00000801). Returns a uint8 array of the shape in
    the header."""
    expected_ndim = 3 if kind == "images" else 1
    expected_magic = 0x0800 | expected_ndim
    compressed = path.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            head = _read_upto(f, 4)
            if len(head) < 4:
                raise ValueError(
                    f"{path}: truncated header: the file holds {len(head)} "
                    "byte(s), but an IDX file starts with a 4-byte magic "
                    f"number (0x{expected_magic:08X} for {kind})")
            magic = struct.unpack(">I", head)[0]
            type_code, ndim = head[2], head[3]
            if head[0] != 0 or head[1] != 0:
                hint = ""
                if head[:2] == b"\x1f\x8b":
                    hint = (" (the data is gzip-compressed twice)" if compressed
                            else " (the data is gzip-compressed: name the file "
                            "with a .gz suffix)")
                raise ValueError(
                    f"{path}: wrong magic number 0x{magic:08X}; an IDX file "
                    f"of {kind} starts with 0x{expected_magic:08X}{hint}")
            if type_code != 0x08:
                type_name = _IDX_TYPE_NAMES.get(type_code, "unknown type")
                raise ValueError(
                    f"{path}: wrong data-type byte 0x{type_code:02X} "
                    f"({type_name}) in magic number 0x{magic:08X}; expected "
                    f"0x08 (unsigned byte), magic 0x{expected_magic:08X}")
            if ndim != expected_ndim:
                raise ValueError(
                    f"{path}: wrong dimension count {ndim} in magic number "
                    f"0x{magic:08X}; {kind} have {expected_ndim} "
                    f"dimension(s), magic 0x{expected_magic:08X}")
            raw_dims = _read_upto(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(
                    f"{path}: truncated header: {ndim} dimension size(s) "
                    f"({4 * ndim} bytes) must follow the magic number, but "
                    f"the file ends after {len(raw_dims)} of those bytes")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            if kind == "images" and (dims[1] == 0 or dims[2] == 0):
                raise ValueError(
                    f"{path}: the header gives an empty image size "
                    f"({dims[1]} rows x {dims[2]} cols)")
            header_size = 4 + 4 * ndim
            n_data = math.prod(dims)
            shape_text = (" x ".join(str(d) for d in dims) + f" = {n_data}"
                          if ndim > 1 else str(n_data))
            if not compressed:
                file_size = os.fstat(f.fileno()).st_size
                if file_size < header_size + n_data:
                    raise ValueError(
                        f"{path}: truncated data: the header promises "
                        f"{shape_text} data bytes after its "
                        f"{header_size}-byte header, but only "
                        f"{file_size - header_size} follow")
                if file_size > header_size + n_data:
                    raise ValueError(
                        f"{path}: {file_size - header_size - n_data} "
                        "trailing byte(s) after the data that the header "
                        f"promises ({shape_text} bytes)")
            data = _read_upto(f, n_data)
            if len(data) < n_data:
                raise ValueError(
                    f"{path}: truncated data: the header promises "
                    f"{shape_text} data bytes after its "
                    f"{header_size}-byte header, but only "
                    f"{len(data)} follow")
            if compressed:
                extra = _count_rest(f)
                if extra:
                    raise ValueError(
                        f"{path}: {extra} trailing byte(s) after the data "
                        f"that the header promises ({shape_text} bytes)")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}: not a valid gzip file or truncated ({exc})") from exc
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find_idx_file(folder, name, alt_name):
    """The path of an IDX file in ``folder``: the plain file if present,
    else the .gz one, under the standard or the alternative name."""
    for candidate in (name, name + ".gz", alt_name, alt_name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(folder, name)}: missing: the folder {folder} holds "
        f"neither {name} nor {name}.gz")


def _idx_to_float(images):
    """uint8 (n, rows, cols) -> float32 (n, 1, rows, cols) in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255))[:, None, :, :]


def _load_idx_folder(folder):
    paths = [_find_idx_file(folder, name, alt) for _, name, alt in _MNIST_FILES]
    arrays = [_read_idx(p, "images" if i % 2 == 0 else "labels")
              for i, p in enumerate(paths)]
    for i in (0, 2):
        n_images, n_labels = arrays[i].shape[0], arrays[i + 1].shape[0]
        if n_images != n_labels:
            raise ValueError(
                f"{paths[i + 1]}: holds {n_labels} labels, but "
                f"{paths[i]} holds {n_images} images")
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise ValueError(
            f"{paths[2]}: images of {arrays[2].shape[1]}x{arrays[2].shape[2]} "
            f"pixels, but {paths[0]} has {arrays[0].shape[1]}x"
            f"{arrays[0].shape[2]}")
    x_train, y_train, x_test, y_test = arrays
    return ((_idx_to_float(x_train), y_train.astype(np.int64)),
            (_idx_to_float(x_test), y_test.astype(np.int64)))


def _npz_images(arr, key, path):
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{path}: array '{key}' has shape {arr.shape} ({arr.ndim} "
            "dimensions); expected 3 dimensions (n, rows, cols) or 4 "
            "(n, channels, rows, cols)")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / np.float32(255)
    elif arr.dtype.kind == "f":
        x = arr.astype(np.float32)
    else:
        raise ValueError(
            f"{path}: array '{key}' has dtype {arr.dtype}; expected uint8 "
            "(pixel values 0..255, scaled by 1/255) or a floating-point "
            "type (kept as is)")
    if x.ndim == 3:
        x = x[:, None, :, :]
    return np.ascontiguousarray(x)


def _npz_labels(arr, key, path):
    if arr.ndim != 1:
        raise ValueError(
            f"{path}: array '{key}' has shape {arr.shape}; expected labels "
            "of shape (n,)")
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: array '{key}' has dtype {arr.dtype}; expected integer "
            "labels")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(
            f"{path}: array '{key}' holds labels outside 0..255 (min "
            f"{arr.min()}, max {arr.max()})")
    return arr.astype(np.int64)


def _idx_magic(head):
    """Whether 4 bytes are an IDX magic number: two zero bytes, a known
    data-type byte and 1 to 4 dimensions."""
    return (len(head) == 4 and head[:2] == b"\0\0"
            and head[2] in _IDX_TYPE_NAMES and 1 <= head[3] <= 4)


def _not_an_npz(path):
    """Why the file ``path`` is not a .npz archive, saying what it seems to
    be and what to pass instead; None when it starts as a zip file (a .npz
    is one) or is a .npy file (reported by the caller)."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"PK") or head.startswith(b"\x93NUMPY"):
        return None
    folder = ("the folder that holds the four MNIST IDX files "
              f"({', '.join(name for _, name, _ in _MNIST_FILES)}, plain or "
              ".gz)")
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as f:
                inner = f.read(4)
        except (OSError, EOFError, zlib.error):
            inner = b""
        what = ("an IDX file compressed with gzip" if _idx_magic(inner)
                else "a gzip-compressed file")
        return (f"{path}: cannot be read as a .npz archive: it is {what}; "
                f"pass {folder}")
    if _idx_magic(head[:4]):
        return (f"{path}: cannot be read as a .npz archive: it is an IDX "
                f"file; pass {folder}")
    return (f"{path}: cannot be read as a .npz archive: it is not a zip "
            f"file, as numpy.savez writes; pass an .npz with the arrays "
            f"{', '.join(_NPZ_KEYS)}, or {folder}")


def _load_npz(path):
    try:
        why = _not_an_npz(path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc})") from exc
    if why is not None:
        raise ValueError(why)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"{path}: cannot be read as a .npz archive ({exc})") from exc
    if isinstance(archive, np.ndarray):
        raise ValueError(
            f"{path}: holds one .npy array; expected a .npz archive with "
            f"the arrays {', '.join(_NPZ_KEYS)}")
    with archive:
        missing = [k for k in _NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path}: missing array(s) {', '.join(repr(k) for k in missing)}; "
                f"the archive holds {sorted(archive.files)}, and "
                f"{', '.join(_NPZ_KEYS)} are needed")
        raw = {}
        for key in _NPZ_KEYS:
            try:
                raw[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise ValueError(
                        f"{path}: array '{key}' holds Python objects (dtype "
                        "object), which are refused: .npz files are loaded "
                        "with allow_pickle=False") from exc
                raise ValueError(
                    f"{path}: array '{key}' cannot be read ({exc})") from exc
            except (OSError, EOFError, zlib.error) as exc:
                raise ValueError(
                    f"{path}: array '{key}' cannot be read ({exc})") from exc
    x_train = _npz_images(raw["x_train"], "x_train", path)
    y_train = _npz_labels(raw["y_train"], "y_train", path)
    x_test = _npz_images(raw["x_test"], "x_test", path)
    y_test = _npz_labels(raw["y_test"], "y_test", path)
    for xk, yk, x, y in (("x_train", "y_train", x_train, y_train),
                         ("x_test", "y_test", x_test, y_test)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{path}: array '{yk}' holds {y.shape[0]} labels, but "
                f"'{xk}' holds {x.shape[0]} images")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{path}: array 'x_test' has images of shape {x_test.shape[1:]}, "
            f"but 'x_train' has {x_train.shape[1:]}")
    return (x_train, y_train), (x_test, y_test)


def load_mnist(path):
    """Load MNIST (or Fashion-MNIST, or any set in the same format) from disk.

    Nothing is downloaded: ``path`` names files the caller already has,
    either

    - a folder holding the four standard IDX files, ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
      ``t10k-labels-idx1-ubyte``, each plain or gzip-compressed (``.gz``;
      the plain file is used when both exist). The spelling
      ``train-images.idx3-ubyte`` (a dot before ``idx``) is accepted too.
      Fashion-MNIST ships under the same names. Or
    - one ``.npz`` archive with the arrays ``x_train``, ``y_train``,
      ``x_test`` and ``y_test``, as Keras's ``mnist.npz``. It is loaded with
      ``allow_pickle=False``. Images are ``(n, rows, cols)`` or
      ``(n, channels, rows, cols)``: uint8 values are divided by 255,
      floating-point values are converted to float32 and otherwise kept.
      Labels are integers in 0..255.

    Parameters
    ----------
    path : str or os.PathLike
        The folder of IDX files or the ``.npz`` file; ``~`` is expanded.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuples of ndarrays
        Images as float32 ``(n, 1, rows, cols)`` (the size from the IDX
        header, 28x28 for MNIST) with values in [0, 1] (uint8 pixels divided
        by 255), and labels as int64 ``(n,)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or the folder lacks one of the four
        files (the message names it).
    ValueError
        If a file is malformed; the message names the file (and, for a
        ``.npz``, the array) and what is wrong: a wrong magic number,
        data-type byte or dimension count, a truncated header or data
        section, trailing bytes after the data, a broken gzip stream,
        image and label counts that differ, train and test images of
        different sizes, a missing ``.npz`` array, an array of the wrong
        number of dimensions or dtype (object arrays included), or labels
        outside 0..255. Sizes are checked against the file before any data
        is allocated.

    Examples
    --------
    A tiny archive in the ``.npz`` form:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from cnnkit.datasets import load_mnist
    >>> rng = np.random.default_rng(0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "tiny.npz")
    ...     np.savez(path,
    ...              x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
    ...              y_train=np.arange(6, dtype=np.uint8),
    ...              x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
    ...              y_test=np.array([3, 1], dtype=np.uint8))
    ...     (x_train, y_train), (x_test, y_test) = load_mnist(path)
    >>> x_train.shape, x_train.dtype, y_train.dtype
    ((6, 1, 28, 28), dtype('float32'), dtype('int64'))
    >>> x_test.shape, y_test.tolist()
    ((2, 1, 28, 28), [3, 1])
    >>> bool(x_train.min() >= 0.0 and x_train.max() <= 1.0)
    True

    With the IDX files downloaded to a folder:

    >>> (x_train, y_train), (x_test, y_test) = load_mnist("~/data/mnist")  # doctest: +SKIP
    >>> x_train.shape, x_test.shape  # doctest: +SKIP
    ((60000, 1, 28, 28), (10000, 1, 28, 28))
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        return _load_idx_folder(path)
    if os.path.isfile(path):
        return _load_npz(path)
    raise FileNotFoundError(
        f"{path}: no such file or folder; load_mnist expects a folder of "
        "MNIST IDX files or a .npz archive")


# --------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------

def _test_counts(class_sizes, test_size, n):
    """Number of test samples to take from each class.

    A float ``test_size`` takes round(test_size * n_class) per class
    (halves round up). An int takes exactly ``test_size`` in all, shared
    out by largest remainders of test_size * n_class / n. At least one test
    sample and at least one training sample are kept overall."""
    sizes = np.asarray(class_sizes, dtype=np.int64)
    if isinstance(test_size, numbers.Integral):
        scaled = sizes * int(test_size)
        counts = scaled // n
        remainders = scaled % n
        short = int(test_size) - int(counts.sum())
        # Largest remainder first; ties: larger class, then lower label.
        order = np.lexsort((np.arange(len(sizes)), -sizes, -remainders))
        counts[order[:short]] += 1
        return counts
    exact = float(test_size) * sizes
    counts = np.floor(exact + 0.5).astype(np.int64)
    counts = np.minimum(counts, sizes)
    if counts.sum() == 0:
        order = np.lexsort((np.arange(len(sizes)), -sizes,
                            -(exact - np.floor(exact))))
        counts[order[0]] += 1
    if counts.sum() == n:
        counts[int(np.argmax(sizes))] -= 1
    return counts


def train_test_split(x, y, test_size=0.2, seed=0, stratify=True):
    """Split images and labels into a training and a test set.

    With ``stratify=True`` each class keeps its proportion: the samples of
    each class are shuffled with the seeded generator and the first
    ``round(test_size * n_class)`` of them go to the test set. The two sets
    are then shuffled, so neither is ordered by class. The same ``seed``
    always gives the same split.

    Parameters
    ----------
    x : array_like, shape (n, ...)
        Samples (for example images ``(n, channels, rows, cols)``).
    y : array_like, shape (n,) or (n, ...)
        Labels; 1-D when ``stratify`` is true, any values that compare equal
        within a class (ints, strings, ...).
    test_size : float or int, default 0.2
        A float in (0, 1) is the fraction of samples put in the test set
        (per class when stratified). An int is the exact number of test
        samples, in [1, n - 1]; when stratified, the per-class shares of it
        are rounded so that they add up to it exactly. At least one sample
        always lands in each set.
    seed : int, numpy.random.Generator or None, default 0
        Seed of the generator that shuffles; None gives a different split
        every call.
    stratify : bool, default True
        Preserve class proportions (True) or split the shuffled samples
        regardless of class (False).

    Returns
    -------
    x_train, x_test, y_train, y_test : ndarrays
        New arrays, in scikit-learn's order, with the dtypes of ``x`` and
        ``y``. Every sample is in exactly one of the two sets.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` differ in length, hold fewer than 2 samples,
        ``y`` is not 1-D when stratifying, ``test_size`` is neither a float
        in (0, 1) nor an int in [1, n - 1], ``stratify`` is not a bool, or
        ``seed`` is not a valid seed. The message names the argument.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.datasets import load_digits, train_test_split
    >>> x, y = load_digits()
    >>> x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, seed=0)
    >>> x_train.shape, x_test.shape
    ((1438, 1, 8, 8), (359, 1, 8, 8))
    >>> np.bincount(y_test).tolist()
    [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    >>> len(train_test_split(x, y, test_size=100)[1])
    100
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 0:
        raise ValueError("x must be an array of samples (n, ...), got a scalar")
    if y.ndim == 0:
        raise ValueError("y must be an array of labels (n,), got a scalar")
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(
            f"x and y must hold the same number of samples, got x with "
            f"shape {x.shape} and y with shape {y.shape}")
    if n < 2:
        raise ValueError(
            f"x must hold at least 2 samples to split, got {n}")
    if not isinstance(stratify, (bool, np.bool_)):
        raise ValueError(f"stratify must be True or False, got {stratify!r}")
    if isinstance(test_size, (bool, np.bool_)):
        raise ValueError(
            f"test_size must be a float in (0, 1) or an int count, got {test_size!r}")
    if isinstance(test_size, numbers.Integral):
        if not 1 <= test_size <= n - 1:
            raise ValueError(
                f"test_size as an int is the number of test samples and "
                f"must be in [1, n - 1] = [1, {n - 1}], got {test_size}")
        test_size = int(test_size)
    elif isinstance(test_size, numbers.Real):
        if not 0.0 < float(test_size) < 1.0:
            raise ValueError(
                "test_size as a float is the fraction of test samples and "
                f"must be in the open interval (0, 1), got {test_size!r}")
        test_size = float(test_size)
    else:
        raise ValueError(
            "test_size must be a float in (0, 1) or an int count, got "
            f"{type(test_size).__name__} {test_size!r}")
    rng = _generator(seed)

    if stratify:
        if y.ndim != 1:
            raise ValueError(
                f"y must be 1-D (one label per sample) to stratify, got "
                f"shape {y.shape}; pass stratify=False to split regardless "
                "of class")
        _, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
        by_class = np.argsort(inverse.reshape(-1), kind="stable")
        groups = np.split(by_class, np.cumsum(sizes)[:-1])
    else:
        sizes = np.array([n])
        groups = [np.arange(n)]
    counts = _test_counts(sizes, test_size, n)
    train_parts, test_parts = [], []
    for group, k in zip(groups, counts):
        shuffled = rng.permutation(group)
        test_parts.append(shuffled[:k])
        train_parts.append(shuffled[k:])
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]


# --------------------------------------------------------------------------
# Synthetic task
# --------------------------------------------------------------------------

def _generator(seed):
    """``numpy.random.default_rng(seed)``, or ValueError naming ``seed``."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"seed must be an int >= 0, a numpy.random.Generator or None, "
            f"got {seed!r} ({exc})") from exc


def _check_int(value, name, minimum):
    return check_int(value, name, minimum, type_error=ValueError)


def _synthetic_templates(image_shape, n_classes):
    """One smooth random image per class, fixed by the shape and class count.

    White noise is low-pass filtered with a Gaussian of width
    max(rows, cols) / 8 pixels (periodic, through the FFT); all templates
    together are scaled to a root mean square of 1."""
    channels, rows, cols = image_shape
    rng = np.random.default_rng([0x636E6E6B, n_classes, channels, rows, cols])
    white = rng.standard_normal((n_classes, channels, rows, cols))
    sigma = max(rows, cols) / 8.0
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    response = np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * (fy ** 2 + fx ** 2))
    smooth = np.fft.irfft2(np.fft.rfft2(white) * response, s=(rows, cols))
    smooth /= np.sqrt(np.mean(smooth ** 2))
    return smooth.astype(np.float32)


def make_synthetic(n_samples=1000, image_shape=(1, 28, 28), n_classes=10,
                   seed=0, noise=0.5):
    """Draw a synthetic image-classification task that a network can learn.

    Each class has one fixed template, a smooth random image (white noise
    blurred with a Gaussian max(rows, cols) / 8 pixels wide; all templates
    scaled together to a root mean square of 1). A sample is its class's
    template plus independent Gaussian noise of standard deviation
    ``noise`` on every pixel. Classes are balanced (their sizes differ by at
    most one) and appear in random order.

    The templates depend only on ``image_shape`` and ``n_classes``, not on
    ``seed``: calls with different seeds draw fresh samples of the same
    task, for example a training set with ``seed=0`` and a test set with
    ``seed=1``. The same arguments always give the same arrays.

    Parameters
    ----------
    n_samples : int, default 1000
        Number of samples, >= 1.
    image_shape : tuple of 3 ints, default (1, 28, 28)
        ``(channels, rows, cols)`` of each image, all >= 1.
    n_classes : int, default 10
        Number of classes, >= 2.
    seed : int, numpy.random.Generator or None, default 0
        Seed of the labels' order and the noise.
    noise : float, default 0.5
        Standard deviation of the pixel noise, >= 0. Larger is harder.

    Returns
    -------
    x : ndarray of float32, shape (n_samples, channels, rows, cols)
        The images (not clipped; values are roughly zero-mean).
    y : ndarray of int64, shape (n_samples,)
        The classes, 0..n_classes-1.

    Raises
    ------
    ValueError
        If an argument is out of range or of the wrong type; the message
        names it.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.datasets import make_synthetic
    >>> x, y = make_synthetic(200, image_shape=(1, 8, 8), n_classes=4, seed=0)
    >>> x.shape, x.dtype, y.dtype, np.bincount(y).tolist()
    ((200, 1, 8, 8), dtype('float32'), dtype('int64'), [50, 50, 50, 50])
    >>> x_new, y_new = make_synthetic(100, image_shape=(1, 8, 8), n_classes=4, seed=1)
    >>> means = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    >>> d = ((x_new[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    >>> bool((d.argmin(axis=1) == y_new).mean() > 0.9)
    True
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_classes = _check_int(n_classes, "n_classes", 2)
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            "image_shape must be a tuple (channels, rows, cols) of 3 ints, "
            f"got {image_shape!r}")
    shape = tuple(_check_int(s, "each entry of image_shape", 1) for s in shape)
    if (isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real)
            or not math.isfinite(noise) or noise < 0):
        raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    rng = _generator(seed)
    templates = _synthetic_templates(shape, n_classes)
    y = rng.permutation(np.arange(n_samples, dtype=np.int64) % n_classes)
    x = rng.standard_normal((n_samples, *shape), dtype=np.float32)
    x *= np.float32(noise)
    x += templates[y]
    return x, y
