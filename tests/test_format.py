"""Tests of the cnnkit file format (cnnkit._format): round trips, safetensors
compatibility, strict rejection of damaged or foreign files, the model
metadata helpers and atomic saving."""
import json
import math
import os
import struct

import numpy as np
import pytest

from cnnkit import _format
from cnnkit._format import (FORMAT_NAME, FORMAT_VERSION, MAX_HEADER_SIZE,
                            load_file, pack_metadata, save_file,
                            unpack_metadata)

from helpers import require

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
          np.int64, np.uint8, np.bool_]
CODES = {np.float16: "F16", np.float32: "F32", np.float64: "F64",
         np.int8: "I8", np.int16: "I16", np.int32: "I32", np.int64: "I64",
         np.uint8: "U8", np.bool_: "BOOL"}
SHAPES = [(), (0,), (1,), (5,), (2, 3), (3, 0, 2), (0, 0), (2, 1, 3, 2)]


def _values(rng, dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        out = rng.random(shape) < 0.5
    elif dtype.kind == "f":
        out = (rng.standard_normal(shape) * 100).astype(dtype)
    else:
        info = np.iinfo(dtype)
        out = rng.integers(info.min, info.max, size=shape, dtype=dtype,
                           endpoint=True)
    out = np.array(out, dtype=dtype)
    assert isinstance(out, np.ndarray) and out.shape == shape
    return out


def _assert_same(loaded, expected):
    assert isinstance(loaded, np.ndarray)
    expected = np.asarray(expected)
    assert loaded.dtype == expected.dtype.newbyteorder("=")
    assert loaded.dtype.isnative
    assert loaded.shape == expected.shape
    assert loaded.flags.c_contiguous and loaded.flags.writeable
    np.testing.assert_array_equal(loaded, expected)


def _parse(raw):
    """(header length, header dict, data bytes) of a file's bytes."""
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def _raw_file(path, header, data=b"", n=None):
    """Write a file with ``header`` (dict or bytes) and ``data``; the header
    length field is ``n`` when given."""
    if isinstance(header, dict):
        header = json.dumps(header).encode()
    if n is None:
        n = len(header)
    path.write_bytes(struct.pack("<Q", n) + header + data)
    return path


def _entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _load_error(path):
    with pytest.raises(ValueError) as info:
        load_file(path)
    message = str(info.value)
    assert path.name in message, message
    return message


# --------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_shape(tmp_path, rng, dtype):
    tensors = {f"t{i}": _values(rng, dtype, shape)
               for i, shape in enumerate(SHAPES)}
    path = tmp_path / "m.cnnkit"
    save_file(path, tensors, {})
    loaded, metadata = load_file(path)
    assert metadata == {}
    assert list(loaded) == list(tensors)
    for name, value in tensors.items():
        _assert_same(loaded[name], value)
        assert not np.shares_memory(loaded[name], value)
    n, header, data = _parse(path.read_bytes())
    assert all(header[k]["dtype"] == CODES[dtype] for k in tensors)
    assert len(data) == sum(v.nbytes for v in tensors.values())


def test_special_float_values_round_trip(tmp_path):
    values = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, 1.7e308])
    with np.errstate(over="ignore"):
        t = {"f64": values, "f32": values.astype(np.float32),
             "f16": values.astype(np.float16)}
    save_file(tmp_path / "f", t)
    loaded, _ = load_file(tmp_path / "f")
    for k, v in t.items():
        assert loaded[k].tobytes() == v.tobytes()


def test_non_contiguous_inputs(tmp_path, rng):
    base = rng.standard_normal((4, 6, 5))
    readonly = base.copy()
    readonly.flags.writeable = False
    tensors = {
        "transposed": base.transpose(2, 0, 1),
        "fortran": np.asfortranarray(base),
        "strided": base[::2, 1::3, ::-1],
        "reversed": base[::-1, ::-1],
        "broadcast": np.broadcast_to(base[:1], (7, 6, 5)),
        "column": base[:, 0, 0:1],
        "readonly": readonly,
        "int_strided": np.arange(40, dtype=np.int64)[::3],
    }
    before = {k: v.copy() for k, v in tensors.items()}
    save_file(tmp_path / "nc", tensors)
    loaded, _ = load_file(tmp_path / "nc")
    for name, value in tensors.items():
        _assert_same(loaded[name], value)
        np.testing.assert_array_equal(value, before[name])  # not modified


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", ">i2", ">i4", ">i8",
                                   "<f4", "<i8"])
def test_byte_order_is_little_endian_on_disk(tmp_path, dtype):
    value = np.array([[1.5, -2.0, 3.0], [0.0, 7.0, -8.0]]).astype(dtype)
    save_file(tmp_path / "be", {"x": value})
    _, header, data = _parse((tmp_path / "be").read_bytes())
    assert data == value.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    loaded, _ = load_file(tmp_path / "be")
    _assert_same(loaded["x"], value)


def test_numpy_scalars_are_zero_d(tmp_path):
    save_file(tmp_path / "s", {"a": np.float32(1.5), "b": np.int64(-3),
                               "c": np.bool_(True)})
    loaded, _ = load_file(tmp_path / "s")
    assert loaded["a"].shape == () and loaded["a"].dtype == np.float32
    assert loaded["a"][()] == 1.5 and loaded["b"][()] == -3
    assert loaded["c"][()] is np.True_


def test_metadata_and_order_round_trip(tmp_path, rng):
    names = ["z", "a", "conv.weight", "b10", "b2", "é ünï ☃", "0", "__meta"]
    tensors = {n: rng.standard_normal(i + 1).astype(np.float32)
               for i, n in enumerate(names)}
    metadata = {"format": "cnnkit", "note": "ünïcödé ☃ \"quoted\" \n",
                "empty": "", "": "empty key", "json": '{"a": [1, 2]}'}
    path = tmp_path / "order.safetensors"
    save_file(path, tensors, metadata)
    loaded, loaded_metadata = load_file(path)
    assert list(loaded) == names
    assert loaded_metadata == metadata
    n, header, data = _parse(path.read_bytes())
    assert list(header) == ["__metadata__"] + names
    offsets = [header[k]["data_offsets"] for k in names]
    assert offsets[0][0] == 0 and offsets[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(offsets, offsets[1:]))


def test_exact_bytes_of_a_small_file(tmp_path):
    save_file(tmp_path / "tiny", {"a": np.array([1, 2], dtype=np.int32)},
              {"k": "v"})
    raw = (tmp_path / "tiny").read_bytes()
    header = (b'{"__metadata__":{"k":"v"},'
              b'"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}')
    header += b" " * (-len(header) % 8)
    assert raw == struct.pack("<Q", len(header)) + header + \
        b"\x01\x00\x00\x00\x02\x00\x00\x00"


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 9])
def test_header_is_padded_to_8_bytes_with_spaces(tmp_path, count):
    tensors = {"x" * (i + 1): np.zeros(i, np.uint8) for i in range(count)}
    save_file(tmp_path / "p", tensors, None)
    raw = (tmp_path / "p").read_bytes()
    n, header, _ = _parse(raw)
    assert n % 8 == 0
    text = raw[8:8 + n]
    assert text.rstrip(b" ").endswith(b"}")
    assert "__metadata__" not in header
    assert load_file(tmp_path / "p")[0].keys() == tensors.keys()


def test_empty_file_of_tensors(tmp_path):
    save_file(tmp_path / "e", {})
    assert load_file(tmp_path / "e") == ({}, {})


def test_str_and_pathlike_paths(tmp_path):
    t = {"w": np.arange(3.0)}
    save_file(str(tmp_path / "a"), t, {"x": "1"})
    save_file(tmp_path / "b", t, {"x": "1"})
    for p in (str(tmp_path / "b"), tmp_path / "a"):
        loaded, meta = load_file(p)
        _assert_same(loaded["w"], t["w"])
        assert meta == {"x": "1"}


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "m"
    save_file(path, {"a": np.ones(1000)})
    save_file(path, {"b": np.zeros(2, np.int8)}, {"v": "2"})
    loaded, meta = load_file(path)
    assert list(loaded) == ["b"] and meta == {"v": "2"}
    assert sorted(os.listdir(tmp_path)) == ["m"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_file_mode_follows_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        save_file(tmp_path / "m", {"a": np.ones(1)})
    finally:
        os.umask(mask)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------
# safetensors compatibility


def test_readable_by_safetensors(tmp_path, rng):
    st = require("safetensors.numpy")
    safetensors = require("safetensors")
    tensors = {f"{np.dtype(d).name}_{i}": _values(rng, d, s)
               for d in DTYPES for i, s in enumerate([(), (0, 3), (2, 3)])}
    tensors["big_endian"] = np.arange(6, dtype=">f8").reshape(2, 3)
    tensors["transposed"] = np.arange(6.0).reshape(2, 3).T
    path = tmp_path / "ours.safetensors"
    save_file(path, tensors, {"format": "cnnkit", "note": "é"})
    theirs = st.load_file(str(path))
    assert theirs.keys() == tensors.keys()
    for name, value in tensors.items():
        np.testing.assert_array_equal(theirs[name], value)
        assert theirs[name].dtype == value.dtype.newbyteorder("=")
        assert theirs[name].shape == value.shape
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"format": "cnnkit", "note": "é"}


def test_reads_safetensors_files(tmp_path, rng):
    st = require("safetensors.numpy")
    tensors = {f"{np.dtype(d).name}.{i}": _values(rng, d, s)
               for d in DTYPES for i, s in enumerate([(), (4, 0), (3, 2)])}
    path = tmp_path / "theirs.safetensors"
    st.save_file(tensors, str(path), metadata={"framework": "np", "ü": "ß"})
    loaded, metadata = load_file(path)
    assert metadata == {"framework": "np", "ü": "ß"}
    assert loaded.keys() == tensors.keys()
    for name, value in tensors.items():
        _assert_same(loaded[name], value)
    st.save_file({"only": np.ones((2, 2), np.float32)}, str(path))
    loaded, metadata = load_file(path)
    assert metadata == {} and loaded["only"].sum() == 4


# --------------------------------------------------------------------------
# invalid arguments to save_file


@pytest.mark.parametrize("value", [
    np.zeros(2, np.complex128), np.zeros(2, np.uint16), np.zeros(2, np.uint32),
    np.zeros(2, np.uint64), np.array(["a"]), np.array([b"a"]),
    np.array([object()]), np.zeros(2, "datetime64[s]"),
    np.zeros(2, [("a", "f4")]),
    np.zeros(2, np.longdouble) if np.dtype(np.longdouble).itemsize > 8
    else np.zeros(2, np.complex64),
], ids=lambda v: str(v.dtype))
def test_save_rejects_unsupported_dtypes(tmp_path, value):
    with pytest.raises(TypeError) as info:
        save_file(tmp_path / "m", {"ok": np.ones(1), "layer.w": value})
    message = str(info.value)
    assert "'layer.w'" in message and str(value.dtype) in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tensors, error, words", [
    ({"": np.ones(1)}, ValueError, "non-empty"),
    ({"__metadata__": np.ones(1)}, ValueError, "reserved"),
    ({1: np.ones(1)}, TypeError, "str"),
    ({"a": [1.0, 2.0]}, TypeError, "'a'"),
    ({"a": None}, TypeError, "'a'"),
    ({"a\udcff": np.ones(1)}, ValueError, "UTF-8"),
    ([("a", np.ones(1))], TypeError, "dict"),
])
def test_save_rejects_bad_tensors(tmp_path, tensors, error, words):
    with pytest.raises(error, match=words):
        save_file(tmp_path / "m", tensors)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata, error", [
    ({"a": 1}, TypeError), ({1: "a"}, TypeError), ([("a", "b")], TypeError),
    ({"a": None}, TypeError), ({"a": "\ud800"}, ValueError),
])
def test_save_rejects_bad_metadata(tmp_path, metadata, error):
    with pytest.raises(error, match="metadata"):
        save_file(tmp_path / "m", {"a": np.ones(1)}, metadata)
    assert os.listdir(tmp_path) == []


def test_save_refuses_directories_and_missing_parents(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        save_file(tmp_path / "d", {"a": np.ones(1)})
    assert os.listdir(tmp_path / "d") == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_file(tmp_path / "missing" / "m", {"a": np.ones(1)})


# --------------------------------------------------------------------------
# atomic saving


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "model.cnnkit"
    save_file(path, {"old": np.arange(10.0)}, {"v": "old"})
    return path, path.read_bytes()


def _assert_untouched(path, raw):
    assert path.read_bytes() == raw
    assert os.listdir(path.parent) == [path.name]
    assert load_file(path)[1] == {"v": "old"}


def test_failed_replace_leaves_old_file(existing, monkeypatch):
    path, raw = existing

    def fail(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(_format.os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        save_file(path, {"new": np.ones(100)})
    monkeypatch.undo()
    _assert_untouched(path, raw)


@pytest.mark.parametrize("exc", [OSError("no space left"), KeyboardInterrupt])
def test_failure_mid_write_leaves_old_file(existing, monkeypatch, exc):
    path, raw = existing
    real = _format._write_all

    def write_some_then_fail(f, header, arrays):
        f.write(b"partial garbage")
        f.flush()
        raise exc

    monkeypatch.setattr(_format, "_write_all", write_some_then_fail)
    with pytest.raises(type(exc) if isinstance(exc, Exception) else exc):
        save_file(path, {"new": np.ones(100)})
    monkeypatch.setattr(_format, "_write_all", real)
    _assert_untouched(path, raw)


def test_failed_fsync_leaves_old_file(existing, monkeypatch):
    path, raw = existing

    def fail(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(_format.os, "fsync", fail)
    with pytest.raises(OSError, match="fsync failed"):
        save_file(path, {"new": np.ones(100)})
    monkeypatch.undo()
    _assert_untouched(path, raw)


def test_failure_with_no_previous_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_format.os, "replace",
                        lambda a, b: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        save_file(tmp_path / "m", {"a": np.ones(3)})
    assert os.listdir(tmp_path) == []


def test_save_fsyncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}")
                      if os.path.isdir("/proc/self/fd") else None)
        real(fd)

    monkeypatch.setattr(_format.os, "fsync", spy)
    save_file(tmp_path / "m", {"a": np.ones(3)})
    assert len(synced) >= 1
    if os.name == "posix" and synced[0] is not None:
        assert synced == [False, True]


# --------------------------------------------------------------------------
# damaged and foreign files


@pytest.fixture
def valid(tmp_path):
    """Bytes of a valid file with three tensors and metadata."""
    path = tmp_path / "valid.cnnkit"
    save_file(path, {"w": np.arange(12.0).reshape(3, 4),
                     "b": np.arange(3, dtype=np.int32),
                     "m": np.array([True, False])}, {"format": "cnnkit"})
    return path.read_bytes()


def test_truncated_everywhere(tmp_path, valid):
    n = struct.unpack("<Q", valid[:8])[0]
    cuts = sorted({0, 1, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1,
                   len(valid) - 97, len(valid) - 2, len(valid) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.cnnkit"
        path.write_bytes(valid[:cut])
        message = _load_error(path)
        assert "truncated" in message, (cut, message)
    for cut in range(len(valid)):  # every cut is a clean ValueError
        path = tmp_path / "every.cnnkit"
        path.write_bytes(valid[:cut])
        _load_error(path)


def test_trailing_bytes(tmp_path, valid):
    path = tmp_path / "trail"
    path.write_bytes(valid + b"\0")
    assert "trailing bytes" in _load_error(path)


@pytest.mark.parametrize("n", [MAX_HEADER_SIZE + 1, 2**40, 2**64 - 1])
def test_absurd_header_length(tmp_path, n):
    path = _raw_file(tmp_path / "huge", b"{}      ", n=n)
    message = _load_error(path)
    assert "not a cnnkit/safetensors file" in message and "limit" in message


def test_header_length_past_end_of_file(tmp_path):
    path = _raw_file(tmp_path / "past", b"{}      ", n=9)
    assert "truncated" in _load_error(path)


@pytest.mark.parametrize("header", [
    b"{not json}", b"{\"a\": }", b"{}{}", b"{\"a\": 1,}", b"{" + b"\0" * 7,
    b'{"a": NaN}', b'{"a": Infinity}', b'{"\xff\xfe": 1}',
    b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_garbage_json(tmp_path, header):
    message = _load_error(_raw_file(tmp_path / "garbage", header))
    assert "not a cnnkit/safetensors file" in message


@pytest.mark.parametrize("header", [b"[]", b'"x"', b"   {}", b"\0" * 8, b""])
def test_header_not_an_object(tmp_path, header):
    message = _load_error(_raw_file(tmp_path / "notobj", header))
    assert "not a cnnkit/safetensors file" in message


def test_duplicate_tensor_name(tmp_path):
    header = (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
              b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
    message = _load_error(_raw_file(tmp_path / "dup", header, b"\1\2"))
    assert "duplicate key 'a'" in message


def test_duplicate_key_inside_entry_and_metadata(tmp_path):
    header = b'{"a":{"dtype":"U8","dtype":"U8","shape":[1],' \
             b'"data_offsets":[0,1]}}'
    assert "duplicate key 'dtype'" in _load_error(
        _raw_file(tmp_path / "dup1", header, b"\1"))
    header = b'{"__metadata__":{"k":"1","k":"2"}}'
    assert "duplicate key 'k'" in _load_error(
        _raw_file(tmp_path / "dup2", header))


@pytest.mark.parametrize("entries, data, words", [
    ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)},
     12, "overlap"),
    ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 0, 8)},
     8, "overlap"),
    ({"a": _entry("F32", [2], 0, 8), "e": _entry("F32", [0], 4, 4)},
     8, "overlap"),
    ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [1], 12, 16)},
     16, "gap"),
    ({"a": _entry("F32", [2], 4, 12)}, 12, "gap"),
    ({"a": _entry("F32", [2], 0, 8)}, 9, "trailing bytes"),
    ({}, 3, "trailing bytes"),
    ({"a": _entry("F32", [2], 0, 8)}, 7, "truncated"),
    ({"a": _entry("F64", [2**40], 0, 2**43)}, 8, "truncated"),
    ({"a": _entry("F32", [3], 0, 8)}, 8, "need 12 bytes"),
    ({"a": _entry("F32", [2, 2], 0, 8)}, 8, "need 16 bytes"),
    ({"a": _entry("I64", [], 0, 4)}, 4, "need 8 bytes"),
    ({"a": _entry("C64", [1], 0, 8)}, 8, "unsupported dtype 'C64'"),
    ({"a": _entry("BF16", [1], 0, 2)}, 2, "unsupported dtype 'BF16'"),
    ({"a": _entry("U16", [1], 0, 2)}, 2, "unsupported dtype 'U16'"),
    ({"a": _entry("f32", [1], 0, 4)}, 4, "unsupported dtype"),
    ({"a": _entry(4, [1], 0, 4)}, 4, "unsupported dtype"),
    ({"a": _entry("F32", [-1], 0, 0)}, 0, "invalid shape"),
    ({"a": _entry("F32", [1.0], 0, 4)}, 4, "invalid shape"),
    ({"a": _entry("F32", [True], 0, 4)}, 4, "invalid shape"),
    ({"a": _entry("F32", "1", 0, 4)}, 4, "invalid shape"),
    ({"a": _entry("F32", [1] * 65, 0, 4)}, 4, "invalid shape"),
    ({"a": _entry("F32", [0, 2**62], 0, 0)}, 0, "too large"),
    ({"a": _entry("U8", [1], -1, 0)}, 1, "invalid data_offsets"),
    ({"a": _entry("U8", [0], 1, 0)}, 1, "invalid data_offsets"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0]}}, 1,
     "invalid data_offsets"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.0]}}, 1,
     "invalid data_offsets"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": None}}, 1,
     "invalid data_offsets"),
    ({"a": {"dtype": "U8", "shape": [1]}}, 1, "missing ['data_offsets']"),
    ({"a": {**_entry("U8", [1], 0, 1), "x": 1}}, 1, "unexpected ['x']"),
    ({"a": [1, 2]}, 0, "not a JSON object"),
    ({"": _entry("U8", [1], 0, 1)}, 1, "empty name"),
    ({"__metadata__": {"k": 1}}, 0, "str to str"),
    ({"__metadata__": {"k": None}}, 0, "str to str"),
    ({"__metadata__": ["k"]}, 0, "str to str"),
    ({"__metadata__": None}, 0, "str to str"),
    ({"a": _entry("BOOL", [2], 0, 2)}, b"\x01\x02", "BOOL"),
])
def test_invalid_headers(tmp_path, entries, data, words):
    if isinstance(data, int):
        data = bytes(range(data))
    message = _load_error(_raw_file(tmp_path / "bad.cnnkit", entries, data))
    assert words in message, message
    name = next((k for k in entries if k and k != "__metadata__"), None)
    if name is not None and words not in ("trailing bytes",):
        assert repr(name) in message, message


def test_reading_is_bounded_by_file_size(tmp_path):
    # A tiny file claiming a 1 TB tensor fails before allocating it.
    entries = {"a": _entry("F32", [2**38], 0, 2**40)}
    assert "truncated" in _load_error(_raw_file(tmp_path / "t", entries))


def test_foreign_files(tmp_path, rng):
    foreign = {
        "random.bin": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "image.png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(40),
        "text.txt": b"hello, this is not a model file\n",
        "data.json": b'{"dtype": "F32", "shape": [1]}',
        "empty": b"",
        "zeros": bytes(64),
        "ones": b"\xff" * 64,
    }
    for name, raw in foreign.items():
        (tmp_path / name).write_bytes(raw)
    np.savez(tmp_path / "arrays.npz", a=np.ones(3))
    np.save(tmp_path / "array.npy", np.ones(3))
    for name in list(foreign) + ["arrays.npz", "array.npy"]:
        message = _load_error(tmp_path / name)
        assert ("not a cnnkit/safetensors file" in message
                or "truncated" in message), (name, message)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "nope.cnnkit")
    with pytest.raises(IsADirectoryError):
        load_file(tmp_path)


def test_random_corruption_never_crashes(tmp_path, rng, valid):
    path = tmp_path / "fuzz"
    n = struct.unpack("<Q", valid[:8])[0]
    ok = 0
    for _ in range(300):
        raw = bytearray(valid)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, 8 + n))
            raw[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(raw))
        try:
            tensors, metadata = load_file(path)
        except ValueError:
            continue
        ok += 1
        m = struct.unpack("<Q", bytes(raw[:8]))[0]
        assert sum(t.nbytes for t in tensors.values()) == len(raw) - 8 - m
        assert all(t.flags.c_contiguous for t in tensors.values())
    assert ok < 300


# --------------------------------------------------------------------------
# model metadata


CONFIG = {"layers": [{"class": "Conv2D", "filters": 16, "kernel_size": [3, 3],
                      "padding": "same"}, {"class": "Dense", "units": 10}],
          "input_shape": [1, 8, 8], "seed": 0, "lr": 1e-3, "name": "é"}


def test_pack_unpack_round_trip(tmp_path):
    metadata = pack_metadata("Sequential", CONFIG, {"cnnkit_version": "0.1"})
    assert metadata["format"] == FORMAT_NAME == "cnnkit"
    # a chain of layers is readable by every cnnkit: version 1 by default
    assert metadata["format_version"] == "1" and FORMAT_VERSION == 2
    assert metadata["kind"] == "Sequential"
    assert json.loads(metadata["config"]) == CONFIG
    assert metadata["cnnkit_version"] == "0.1"
    assert all(isinstance(v, str) for v in metadata.values())
    save_file(tmp_path / "m", {"w": np.ones(2)}, metadata)
    _, loaded = load_file(tmp_path / "m")
    assert loaded == metadata
    assert unpack_metadata(loaded, "Sequential") == CONFIG


def test_pack_metadata_errors():
    with pytest.raises(ValueError, match="reserved"):
        pack_metadata("Sequential", {}, {"kind": "x"})
    with pytest.raises(TypeError, match="metadata"):
        pack_metadata("Sequential", {}, {"a": 1})
    with pytest.raises(TypeError, match="JSON"):
        pack_metadata("Sequential", {"a": object()})
    with pytest.raises(ValueError, match="JSON"):
        pack_metadata("Sequential", {"a": math.nan})
    with pytest.raises(TypeError, match="config"):
        pack_metadata("Sequential", [1, 2])
    with pytest.raises(TypeError, match="kind"):
        pack_metadata(None, {})
    with pytest.raises(ValueError, match="kind"):
        pack_metadata("", {})


def _meta(**changes):
    metadata = pack_metadata("Sequential", CONFIG)
    for key, value in changes.items():
        if value is None:
            del metadata[key]
        else:
            metadata[key] = value
    return metadata


@pytest.mark.parametrize("metadata", [
    {}, {"framework": "pt"}, _meta(format="safetensors"), _meta(format=None),
    _meta(format="CNNKIT"),
], ids=["empty", "foreign", "other-format", "no-format", "case"])
def test_unpack_foreign(metadata):
    with pytest.raises(ValueError, match="not a cnnkit file"):
        unpack_metadata(metadata, "Sequential")


def test_unpack_newer_version():
    with pytest.raises(ValueError) as info:
        unpack_metadata(_meta(format_version="3"), "Sequential")
    message = str(info.value)
    assert "version 3" in message and "2" in message
    assert "upgrade cnnkit" in message


@pytest.mark.parametrize("version", [None, "", "0", "-1", "1.0", "one", " 1",
                                     "١", "²"])
def test_unpack_malformed_version(version):
    with pytest.raises(ValueError, match="format_version"):
        unpack_metadata(_meta(format_version=version), "Sequential")


def test_unpack_newer_version_names_the_writer():
    with pytest.raises(ValueError, match=r"format version 3 \(written by "
                       r"cnnkit 0\.4\.0\), but this cnnkit"):
        unpack_metadata(_meta(format_version="3", cnnkit_version="0.4.0"),
                        "Sequential")


def test_user_metadata_round_trip():
    record = {"data": "digits", "seed": 1, "test_size": 0.2, "ok": True,
              "none": None, "sizes": (1437, 360), "nested": {"é": "ü"}}
    text = _format.pack_user_metadata(record)
    meta = dict(_meta(), metadata=text)
    assert _format.unpack_user_metadata(meta) == dict(record,
                                                      sizes=[1437, 360])
    assert _format.unpack_user_metadata(_meta()) == {}


@pytest.mark.parametrize("metadata, exc, match", [
    ("seed=1", TypeError, "dict"), ({2: "a"}, TypeError, "keys must be str"),
    ({"a": object()}, TypeError, "JSON"), ({"a": math.inf}, ValueError,
                                            "JSON"),
    ({"a": "\ud800"}, ValueError, "UTF-8"),
])
def test_pack_user_metadata_errors(metadata, exc, match):
    with pytest.raises(exc, match=match):
        _format.pack_user_metadata(metadata)


@pytest.mark.parametrize("text, words", [
    ("{oops", "not valid JSON"), ("[1]", "not a JSON object"),
    ('{"a": 1, "a": 2}', "duplicate key"),
])
def test_unpack_user_metadata_errors(tmp_path, text, words):
    with pytest.raises(ValueError, match=f"m.cnnkit.*{words}"):
        _format.unpack_user_metadata(dict(_meta(), metadata=text),
                                     source=tmp_path / "m.cnnkit")


def test_written_by():
    from cnnkit import __version__ as ours
    assert _format.written_by({}) == (
        None, f"the file does not say which cnnkit wrote it; this is "
              f"cnnkit {ours}", False)
    version, text, newer = _format.written_by({"cnnkit_version": ours})
    assert (version, newer) == (ours, False)
    assert text == f"written by cnnkit {ours}; this is cnnkit {ours}"
    for other, is_newer in [("99.0.0", True), ("0.1.1.dev3", True),
                            ("0.0.9", False), ("0.1.0rc1", False),
                            ("nightly", False)]:
        assert _format.written_by({"cnnkit_version": other})[2] is is_newer


def test_unpack_older_equal_version_with_leading_zero():
    assert unpack_metadata(_meta(format_version="01"), "Sequential") == CONFIG


def test_unpack_wrong_kind():
    with pytest.raises(ValueError, match="'Sequential'.*'Graph'"):
        unpack_metadata(_meta(), "Graph")
    with pytest.raises(ValueError, match="None"):
        unpack_metadata(_meta(kind=None), "Graph")


@pytest.mark.parametrize("config, words", [
    ("{not json", "not valid JSON"), ("", "not valid JSON"),
    ('{"a": 1, "a": 2}', "duplicate key"), ('{"a": NaN}', "not valid JSON"),
    ("[1, 2]", "not a JSON object"), ("null", "not a JSON object"),
    (None, "missing"),
])
def test_unpack_bad_config(config, words):
    with pytest.raises(ValueError, match=words):
        unpack_metadata(_meta(config=config), "Sequential")


def test_unpack_names_the_source(tmp_path):
    with pytest.raises(ValueError, match="model.cnnkit"):
        unpack_metadata({}, "Sequential", source=tmp_path / "model.cnnkit")
    with pytest.raises(ValueError, match="dict"):
        unpack_metadata(None, "Sequential")
