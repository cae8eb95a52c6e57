"""The cnnkit single-file model format: safetensors-compatible, no pickle.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_
file, so any safetensors reader can open it and cnnkit can open the files
that safetensors writes (for the dtypes listed below). Its layout is::

    [8 bytes]  N, the header length: unsigned 64-bit little-endian integer
    [N bytes]  the header: a UTF-8 JSON object, padded with spaces to a
               multiple of 8 bytes
    [rest]     the data section: the raw bytes of every tensor, little-endian,
               C order, one after the other

The header maps each tensor name to ``{"dtype": "F32", "shape": [2, 3],
"data_offsets": [begin, end]}``, where ``begin`` and ``end`` are byte offsets
relative to the start of the data section. An optional ``"__metadata__"``
entry holds a flat ``str -> str`` dictionary; cnnkit keeps the model's
architecture there as JSON (see :func:`pack_metadata` and
:func:`unpack_metadata`), the version of cnnkit that wrote the file
(``"cnnkit_version"``) and the caller's own metadata, as JSON (``"metadata"``,
see :func:`pack_user_metadata` and :func:`unpack_user_metadata`).

Supported dtypes and their header names:

=========  ========  =========  ========
NumPy      header    NumPy      header
=========  ========  =========  ========
float16    ``F16``   int16      ``I16``
float32    ``F32``   int32      ``I32``
float64    ``F64``   int64      ``I64``
int8       ``I8``    uint8      ``U8``
bool       ``BOOL``
=========  ========  =========  ========

Why there is no pickle: unpickling runs whatever code the file tells it to,
so opening a pickled model from an untrusted source is the same as running
an untrusted program. This format only ever holds numbers, shapes, names and
strings; loading parses JSON and copies bytes into freshly allocated arrays
of sizes that were checked against the file beforehand. A damaged or
hostile file can make :func:`load_file` raise :class:`ValueError`, never
execute code, crash the interpreter, allocate more memory than the file's
size, or return a partly loaded model.

Writes are atomic: :func:`save_file` writes a temporary file next to the
target, flushes and fsyncs it, and renames it over the target, so a reader
sees either the old file or the complete new one, and a failed save leaves
the old file untouched.
"""
import json
import math
import os
import re
import secrets
import struct
import sys
from collections.abc import Mapping

import numpy as np

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_HEADER_SIZE",
    "save_file",
    "load_file",
    "pack_metadata",
    "unpack_metadata",
    "pack_user_metadata",
    "unpack_user_metadata",
    "written_by",
]

#: Value of the ``"format"`` metadata entry of every cnnkit model file.
FORMAT_NAME = "cnnkit"
#: Newest version of the metadata layout this cnnkit reads and writes.  A
#: file records the oldest version that can read it: 1 for a chain of layers
#: (:class:`~cnnkit.Sequential`), 2 for a graph (:class:`~cnnkit.Model`),
#: so that a cnnkit that knows only chains refuses a graph by name instead
#: of misreading it.
FORMAT_VERSION = 2
#: Largest header accepted, in bytes (the limit safetensors uses).
MAX_HEADER_SIZE = 100_000_000

_METADATA_KEY = "__metadata__"
#: The metadata entry naming the cnnkit version that wrote a model file.
VERSION_KEY = "cnnkit_version"
#: The metadata entry holding the caller's metadata as JSON.
USER_METADATA_KEY = "metadata"
_RESERVED_METADATA = ("format", "format_version", "kind", "config")
_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))
# Most dimensions NumPy supports (32 before NumPy 2; np.empty reports it).
_MAX_NDIM = 64

# header dtype name -> little-endian NumPy dtype
_DTYPES = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# (kind, itemsize) of a NumPy dtype -> header dtype name
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _DTYPES.items()}


# --------------------------------------------------------------------------
# saving


def _dtype_name(name, array):
    """Header dtype name of ``array``, or TypeError naming tensor ``name``."""
    dt = array.dtype
    code = None
    if dt.fields is None and dt.subdtype is None:
        code = _NAMES.get((dt.kind, dt.itemsize))
    if code is None:
        supported = ", ".join(str(np.dtype(d.name)) for d in _DTYPES.values())
        raise TypeError(
            f"tensor {name!r} has dtype {dt}, which the cnnkit format cannot "
            f"store; supported dtypes are {supported}")
    return code


def _check_utf8(text, what):
    """Raise ValueError if ``text`` cannot be encoded as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {text!r} is not valid UTF-8 ({exc})") from None


def _check_str_dict(mapping, what):
    """Check that ``mapping`` is a ``str -> str`` mapping; return a dict."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a dict of str to str, "
                        f"not {type(mapping).__name__}")
    out = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be str; got {key!r} "
                            f"({type(key).__name__})")
        if not isinstance(value, str):
            raise TypeError(f"{what} value for {key!r} must be str, not "
                            f"{type(value).__name__}")
        _check_utf8(key, f"{what} key")
        _check_utf8(value, f"{what} value for key {key!r}:")
        out[key] = value
    return out


def _prepare(tensors, metadata):
    """Validate the arguments of :func:`save_file`.

    Returns
    -------
    header : bytes
        The padded JSON header.
    arrays : list of (str, numpy.ndarray, numpy.dtype)
        Each tensor, as given, with the little-endian dtype it is written in.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError("tensors must be a dict of str to numpy.ndarray, "
                        f"not {type(tensors).__name__}")
    header = {}
    if metadata is not None:
        metadata = _check_str_dict(metadata, "metadata")
        if metadata:
            header[_METADATA_KEY] = metadata
    arrays = []
    offset = 0
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str; got {name!r} "
                            f"({type(name).__name__})")
        if not name:
            raise ValueError("tensor names must be non-empty")
        if name == _METADATA_KEY:
            raise ValueError(f"{_METADATA_KEY!r} is reserved for the metadata "
                             "and cannot be a tensor name")
        _check_utf8(name, "tensor name")
        if isinstance(array, np.generic):
            array = np.asarray(array)
        if not isinstance(array, np.ndarray):
            raise TypeError(f"tensor {name!r} must be a numpy.ndarray, not "
                            f"{type(array).__name__}")
        code = _dtype_name(name, array)
        nbytes = array.size * array.dtype.itemsize
        header[name] = {
            "dtype": code,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + nbytes],
        }
        arrays.append((name, array, _DTYPES[code]))
        offset += nbytes
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if len(raw) > MAX_HEADER_SIZE:
        raise ValueError(
            f"the header would be {len(raw)} bytes, more than the "
            f"{MAX_HEADER_SIZE}-byte limit of the format; use fewer tensors "
            "or shorter names and metadata")
    return raw, arrays


def _write_all(f, header, arrays):
    """Write the header length, the header and each tensor's bytes to ``f``."""
    f.write(struct.pack("<Q", len(header)))
    f.write(header)
    for _, array, dtype in arrays:
        if array.size == 0:
            continue
        data = np.ascontiguousarray(array, dtype=dtype)
        f.write(memoryview(data.reshape(-1).view(np.uint8)))


def _open_temp(directory, base):
    """Create and open a new, empty temporary file in ``directory``.

    The file is created with mode 0o666 minus the umask, like a file made
    by :func:`open`, and with ``O_EXCL``, so it never reuses an existing file.

    Returns
    -------
    file : io.BufferedWriter
    path : str
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory,
                           f".{base[:100]}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            return os.fdopen(fd, "wb"), tmp
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    raise FileExistsError(f"could not create a temporary file in "
                          f"{directory!r}")  # pragma: no cover


def _fsync_directory(directory):
    """fsync ``directory`` so a rename in it is durable (where possible)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_file(path, tensors, metadata=None):
    """Write tensors and metadata to a cnnkit (safetensors) file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        File to write. An existing file there is replaced; a directory is
        refused.
    tensors : dict of str to numpy.ndarray
        The tensors, written in the dictionary's order. Names must be
        non-empty strings other than ``"__metadata__"``. Arrays may have any
        strides and byte order; they are stored C-ordered and little-endian
        and are never modified. NumPy scalars are stored as 0-d tensors.
    metadata : dict of str to str, optional
        Stored as the header's ``"__metadata__"`` entry (omitted when empty
        or None).

    Raises
    ------
    TypeError
        If a tensor is not an array or has an unsupported dtype (the message
        names the tensor and the dtype), or if a name or metadata entry is not
        a string.
    ValueError
        If a tensor name is empty or reserved, a string is not valid UTF-8,
        or the header would exceed :data:`MAX_HEADER_SIZE`.
    IsADirectoryError
        If ``path`` is a directory.
    FileNotFoundError
        If the directory that should hold ``path`` does not exist.
    OSError
        If writing fails; the temporary file is removed and an existing file
        at ``path`` is left as it was.

    Notes
    -----
    The data goes to a temporary file in the same directory, which is
    flushed, fsynced and renamed over ``path`` with :func:`os.replace`;
    the directory is then fsynced where the platform allows it.
    """
    header, arrays = _prepare(tensors, metadata)
    write_atomic(path, lambda f: _write_all(f, header, arrays))


def write_atomic(path, write, verb="save"):
    """Create or replace ``path`` atomically: ``write(f)`` fills a temporary
    file in the same directory, which is flushed, fsynced and renamed over
    ``path``; on any error it is removed and ``path`` is left as it was.
    ``verb`` names the action in error messages."""
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot {verb} to {path!r}: it is a "
                                f"directory; refusing to overwrite it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot {verb} to {path!r}: directory "
                                f"{directory!r} does not exist")
    f, tmp = _open_temp(directory, os.path.basename(path))
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


# --------------------------------------------------------------------------
# loading


def _reject_duplicates(pairs):
    """``object_pairs_hook`` for :func:`json.loads`: refuse repeated keys."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name):
    """``parse_constant`` for :func:`json.loads`: refuse NaN and Infinity."""
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text):
    """Strict :func:`json.loads`: no duplicate keys, no NaN/Infinity.

    Raises ValueError for anything that is not valid JSON.
    """
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates,
                          parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(name, entry, data_size, fail):
    """Validate one tensor's header entry.

    Returns
    -------
    (dtype, shape, begin, end)
    """
    if not name:
        fail("the header has a tensor with an empty name")
    if not isinstance(entry, dict):
        fail(f"the header entry of tensor {name!r} is not a JSON object")
    keys = set(entry)
    if keys != _ENTRY_KEYS:
        missing = sorted(_ENTRY_KEYS - keys)
        extra = sorted(keys - _ENTRY_KEYS)
        what = []
        if missing:
            what.append(f"missing {missing}")
        if extra:
            what.append(f"unexpected {extra}")
        fail(f"the header entry of tensor {name!r} must have exactly the keys "
             f"'dtype', 'shape' and 'data_offsets' ({', '.join(what)})")
    code = entry["dtype"]
    if not isinstance(code, str) or code not in _DTYPES:
        fail(f"tensor {name!r} has unsupported dtype {code!r}; supported "
             f"dtypes are {', '.join(_DTYPES)}")
    dtype = _DTYPES[code]
    shape = entry["shape"]
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(_is_int(d) and d >= 0 for d in shape)):
        fail(f"tensor {name!r} has an invalid shape {shape!r}; it must be a "
             f"list of at most {_MAX_NDIM} non-negative integers")
    offsets = entry["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        fail(f"tensor {name!r} has invalid data_offsets {offsets!r}; they "
             "must be two integers [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    nonzero = math.prod(d for d in shape if d)
    if nonzero * dtype.itemsize > sys.maxsize:
        fail(f"tensor {name!r} has shape {shape!r}, too large for an array")
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        fail(f"tensor {name!r} has shape {shape!r} and dtype {code}, which "
             f"need {nbytes} bytes, but its data_offsets [{begin}, {end}] "
             f"span {end - begin} bytes")
    if end > data_size:
        fail(f"truncated: tensor {name!r} has data_offsets [{begin}, {end}] "
             f"but the data section holds only {data_size} bytes")
    return dtype, tuple(shape), begin, end


def _check_layout(entries, data_size, fail):
    """Check that the tensors' byte ranges tile the data section exactly."""
    ranges = sorted((begin, end, name)
                    for name, (_, _, begin, end) in entries.items())
    cursor = 0
    previous = None
    for begin, end, name in ranges:
        if begin < cursor:
            fail(f"the data of tensors {previous!r} and {name!r} overlap "
                 f"(byte {begin} < {cursor})")
        if begin > cursor:
            after = ("the start of the data section" if previous is None
                     else f"tensor {previous!r}")
            fail(f"gap in the data section: bytes [{cursor}, {begin}) between "
                 f"{after} and tensor {name!r} belong to no tensor")
        cursor = end
        previous = name
    if cursor != data_size:
        fail(f"trailing bytes: the data section holds {data_size} bytes but "
             f"the tensors use only {cursor}")


def _read_into(f, array, offset, fail, name):
    """Fill ``array`` with the bytes of ``f`` starting at ``offset``."""
    view = memoryview(array.reshape(-1).view(np.uint8))
    f.seek(offset)
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            fail(f"truncated: the file ended while reading tensor {name!r}")
        done += n


def looks_like_file(path):
    """Whether ``path`` starts as a cnnkit (safetensors) file does: an
    8-byte header length, then a JSON object.  False for files that cannot
    be read; only a first look, :func:`load_file` checks everything."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def load_file(path):
    """Read a cnnkit (safetensors) file.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    tensors : dict of str to numpy.ndarray
        The tensors in the order of the file's header (for a file written by
        :func:`save_file`, the order they were given in). Each is a new,
        writable, C-contiguous array in native byte order.
    metadata : dict of str to str
        The header's ``"__metadata__"`` entry, or an empty dict.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    ValueError
        If the file is not a valid safetensors file with supported dtypes:
        truncated, a header length out of bounds (more than the file holds or
        more than :data:`MAX_HEADER_SIZE`), a header that is not strict JSON
        (duplicate keys included), entries without exactly ``dtype``,
        ``shape`` and ``data_offsets`` or with wrong types, a shape that does
        not match its byte range, byte ranges that overlap, leave gaps, run
        past the end or leave trailing bytes, metadata that is not
        ``str -> str``, or BOOL data other than 0 and 1. The message names the
        file and the problem. Nothing is returned in part.

    Notes
    -----
    The whole header is validated against the file size before any tensor
    memory is allocated, so the memory used is bounded by the file size.
    """
    path = os.fsdecode(os.fspath(path))

    def fail(message):
        raise ValueError(f"cannot load {path!r}: {message}")

    def foreign(message):
        fail(f"not a cnnkit/safetensors file ({message})")

    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot load {path!r}: it is a directory")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            fail(f"truncated or not a cnnkit/safetensors file: it holds "
                 f"{len(prefix)} bytes, fewer than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_SIZE:
            foreign(f"its header length field reads {n} bytes, more than the "
                    f"{MAX_HEADER_SIZE}-byte limit")
        if n > size - 8:
            fail(f"truncated or not a cnnkit/safetensors file: the header "
                 f"length field reads {n} bytes but only {size - 8} bytes "
                 "follow it")
        raw = f.read(n)
        if len(raw) < n:
            fail("truncated: the file ended inside the header")
        if not raw.startswith(b"{"):
            foreign("the header does not start with '{'")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            foreign(f"the header is not UTF-8: {exc}")
        try:
            header = _parse_json(text)
        except ValueError as exc:
            foreign(f"the header is not valid JSON: {exc}")
        if not isinstance(header, dict):
            foreign("the header is not a JSON object")

        data_start = 8 + n
        data_size = size - data_start
        metadata = {}
        entries = {}
        for name, entry in header.items():
            if name == _METADATA_KEY:
                if not isinstance(entry, dict) or not all(
                        isinstance(v, str) for v in entry.values()):
                    fail(f"the {_METADATA_KEY!r} entry must be a JSON object "
                         "mapping str to str")
                metadata = dict(entry)
            else:
                entries[name] = _check_entry(name, entry, data_size, fail)
        _check_layout(entries, data_size, fail)

        tensors = {}
        for name, (dtype, shape, begin, end) in entries.items():
            try:
                array = np.empty(shape, dtype=dtype)
            except (ValueError, MemoryError) as exc:
                fail(f"cannot allocate tensor {name!r} of shape "
                     f"{list(shape)}: {exc}")
            if end > begin:
                _read_into(f, array, data_start + begin, fail, name)
            if dtype.kind == "b" and array.size and \
                    array.view(np.uint8).max() > 1:
                fail(f"tensor {name!r} has dtype BOOL but holds bytes other "
                     "than 0 and 1")
            if not dtype.isnative:
                array = array.astype(dtype.newbyteorder("="))
            tensors[name] = array
        if f.read(1):
            fail("trailing bytes: the file grew while it was read")
    return tensors, metadata


# --------------------------------------------------------------------------
# model metadata


def pack_metadata(kind, config, extra=None, version=1):
    """Build the metadata of a cnnkit model file.

    Parameters
    ----------
    kind : str
        What the file holds, e.g. ``"Sequential"``; checked on loading by
        :func:`unpack_metadata`.
    config : dict
        The architecture, stored as JSON. It must be JSON-serialisable
        (tuples come back as lists; NaN and infinities are refused).
    extra : dict of str to str, optional
        More entries (e.g. the cnnkit version that wrote the file). They
        cannot use the keys ``format``, ``format_version``, ``kind`` or
        ``config``.
    version : int, default 1
        The format version to record: the oldest that can read what
        ``config`` describes (at most :data:`FORMAT_VERSION`).

    Returns
    -------
    dict of str to str
        ``{"format": "cnnkit", "format_version": "1", "kind": kind,
        "config": <JSON>}`` followed by ``extra``, ready for
        :func:`save_file`.

    Raises
    ------
    TypeError
        If ``kind`` is not a string, ``config`` is not a dict or holds values
        JSON cannot represent, or ``extra`` is not ``str -> str``.
    ValueError
        If ``kind`` is empty, ``config`` holds NaN or infinity, or ``extra``
        uses a reserved key.
    """
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, not {type(kind).__name__}")
    if not kind:
        raise ValueError("kind must be a non-empty string")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    if isinstance(version, bool) or not isinstance(version, int) or \
            not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"version must be an int in [1, {FORMAT_VERSION}], "
                         f"got {version!r}")
    try:
        text = json.dumps(config, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"config cannot be stored as JSON: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"config cannot be stored as JSON: {exc}") from None
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(version),
        "kind": kind,
        "config": text,
    }
    if extra is not None:
        extra = _check_str_dict(extra, "extra metadata")
        for key, value in extra.items():
            if key in _RESERVED_METADATA:
                raise ValueError(f"extra metadata key {key!r} is reserved; "
                                 f"the reserved keys are "
                                 f"{', '.join(_RESERVED_METADATA)}")
            metadata[key] = value
    return metadata


def unpack_metadata(metadata, expected_kind, *, source=None):
    """Check the metadata of a cnnkit model file and return its config.

    Parameters
    ----------
    metadata : dict of str to str
        As returned by :func:`load_file`.
    expected_kind : str
        The ``kind`` the caller can load, e.g. ``"Sequential"``.
    source : str or os.PathLike, optional
        The file the metadata came from, named in error messages.

    Returns
    -------
    dict
        The parsed ``config``.

    Raises
    ------
    ValueError
        If the metadata does not say ``format`` is ``"cnnkit"`` (a foreign
        safetensors file), ``format_version`` is missing or not a positive
        integer, or is newer than :data:`FORMAT_VERSION` (upgrade cnnkit),
        ``kind`` is not ``expected_kind``, or ``config`` is missing or is not
        a JSON object.
    """
    where = "" if source is None else f"{os.fsdecode(os.fspath(source))!r}: "
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{where}metadata must be a dict of str to str, not "
                         f"{type(metadata).__name__}")
    fmt = metadata.get("format")
    if fmt != FORMAT_NAME:
        found = ("it has no 'format' entry" if fmt is None
                 else f"its 'format' entry is {fmt!r}")
        raise ValueError(
            f"{where}not a cnnkit file: {found}, expected {FORMAT_NAME!r} "
            "(it may be a safetensors file written by another program)")
    version = metadata.get("format_version")
    if not (isinstance(version, str) and version.isascii()
            and version.isdigit() and int(version) >= 1):
        raise ValueError(f"{where}malformed cnnkit file: 'format_version' is "
                         f"{version!r}, expected a positive integer")
    version = int(version)
    if version > FORMAT_VERSION:
        try:
            from ._version import __version__ as cnnkit_version
        except ImportError:  # pragma: no cover
            cnnkit_version = "unknown"
        writer = metadata.get(VERSION_KEY)
        writer = "" if not isinstance(writer, str) else (
            f" (written by cnnkit {writer})")
        raise ValueError(
            f"{where}the file uses cnnkit format version {version}{writer}, "
            f"but this cnnkit ({cnnkit_version}) reads format versions up to "
            f"{FORMAT_VERSION}; upgrade cnnkit to load it")
    kind = metadata.get("kind")
    if kind != expected_kind:
        raise ValueError(f"{where}the file holds a {kind!r}, not a "
                         f"{expected_kind!r}")
    config = metadata.get("config")
    if not isinstance(config, str):
        raise ValueError(f"{where}malformed cnnkit file: the 'config' entry "
                         "is missing")
    try:
        parsed = _parse_json(config)
    except ValueError as exc:
        raise ValueError(f"{where}malformed cnnkit file: the 'config' entry "
                         f"is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{where}malformed cnnkit file: the 'config' entry "
                         f"is not a JSON object")
    return parsed


def pack_user_metadata(metadata):
    """The caller's metadata of a model file, as the JSON text stored in
    its ``"metadata"`` entry.

    Parameters
    ----------
    metadata : dict
        String keys; values that JSON represents (str, int, float, bool,
        None, and lists and dicts of them). Tuples come back as lists.

    Returns
    -------
    str

    Raises
    ------
    TypeError
        If ``metadata`` is not a dict, a key is not a string, or a value
        cannot be stored as JSON.
    ValueError
        If a value is NaN or infinite, or a string is not valid UTF-8.

    Examples
    --------
    >>> pack_user_metadata({"data": "digits", "seed": 1})
    '{"data":"digits","seed":1}'
    """
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict with str keys, not "
                        f"{type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str; got {key!r} "
                            f"({type(key).__name__})")
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False,
                          allow_nan=False, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"metadata cannot be stored as JSON: {exc}") \
            from None
    except ValueError as exc:
        raise ValueError(f"metadata cannot be stored as JSON: {exc}") \
            from None
    _check_utf8(text, "metadata")
    return text


def unpack_user_metadata(metadata, *, source=None):
    """The caller's metadata stored in a model file's metadata.

    Parameters
    ----------
    metadata : dict of str to str
        As returned by :func:`load_file`.
    source : str or os.PathLike, optional
        The file the metadata came from, named in error messages.

    Returns
    -------
    dict
        The parsed ``"metadata"`` entry; an empty dict when there is none.

    Raises
    ------
    ValueError
        If the entry is not a JSON object.
    """
    where = "" if source is None else f"{os.fsdecode(os.fspath(source))!r}: "
    text = metadata.get(USER_METADATA_KEY)
    if text is None:
        return {}
    try:
        parsed = _parse_json(text)
    except ValueError as exc:
        raise ValueError(f"{where}malformed cnnkit file: the "
                         f"{USER_METADATA_KEY!r} entry is not valid JSON "
                         f"({exc})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{where}malformed cnnkit file: the "
                         f"{USER_METADATA_KEY!r} entry is not a JSON object")
    return parsed


def written_by(metadata):
    """Which cnnkit wrote a model file, for messages about what this one
    does not know.

    Parameters
    ----------
    metadata : dict of str to str
        As returned by :func:`load_file`.

    Returns
    -------
    version : str or None
        The ``"cnnkit_version"`` entry; None when the file has none (files
        of cnnkit 0.1.0 and before).
    text : str
        ``"written by cnnkit X.Y.Z; this is cnnkit A.B.C"`` (or that the
        file does not say).
    newer : bool
        Whether the writer's release is newer than this cnnkit's.
    """
    from ._version import __version__ as ours
    version = metadata.get(VERSION_KEY)
    if not isinstance(version, str) or not version:
        return None, (f"the file does not say which cnnkit wrote it; this "
                      f"is cnnkit {ours}"), False
    return (version, f"written by cnnkit {version}; this is cnnkit {ours}",
            _release(version) > _release(ours))


def _release(version):
    """The leading release numbers of a version string: ``"0.2.0rc1"`` ->
    ``(0, 2, 0)``; ``()`` when it starts with none."""
    match = re.match(r"[0-9]+(?:\.[0-9]+)*", version)
    return tuple(int(p) for p in match.group().split(".")) if match else ()
