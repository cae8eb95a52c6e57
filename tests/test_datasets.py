"""Tests of cnnkit.datasets: the shipped digits, the MNIST readers (IDX
folders and .npz archives, well-formed and malformed), train_test_split and
make_synthetic."""
import doctest
import gzip
import importlib.resources
import os
import re
import struct

import numpy as np
import pytest

from cnnkit import datasets
from cnnkit.datasets import load_digits, load_mnist, make_synthetic, train_test_split

from helpers import require

DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------
# load_digits
# --------------------------------------------------------------------------

def test_digits_shape_dtype_range_and_classes():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    counts16 = x * 16
    np.testing.assert_array_equal(counts16, np.round(counts16))
    assert set(np.unique(y).tolist()) == set(range(10))
    assert np.bincount(y).tolist() == DIGITS_CLASS_COUNTS
    # The first image of the UCI test partition is a 0.
    assert y[0] == 0
    assert (x[0, 0, 0] * 16).tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


def test_digits_identical_to_scikit_learn():
    sk_datasets = require("sklearn.datasets")
    bunch = sk_datasets.load_digits()
    x, y = load_digits()
    np.testing.assert_array_equal(x[:, 0].astype(np.float64), bunch.images / 16.0)
    np.testing.assert_array_equal(y, bunch.target)


def test_digits_returns_fresh_copies():
    x1, y1 = load_digits()
    x1[:] = -1.0
    y1[:] = 42
    x2, y2 = load_digits()
    assert x2.min() == 0.0 and x2.max() == 1.0
    assert np.bincount(y2).tolist() == DIGITS_CLASS_COUNTS
    assert not np.shares_memory(x1, x2) and not np.shares_memory(y1, y2)
    assert x2.flags.writeable and y2.flags.writeable
    assert x2.flags.c_contiguous


def test_data_files_found_through_importlib_resources():
    data = importlib.resources.files("cnnkit") / "data"
    assert (data / "digits.npz").is_file()
    readme = (data / "README.md").read_text(encoding="utf-8")
    for needle in ("Optical Recognition of Handwritten Digits", "Alpaydin",
                   "Kaynak", "UCI Machine Learning Repository",
                   "10.24432/C50P49", "CC BY 4.0", "scikit-learn"):
        assert needle in readme


def test_data_file_found_beside_the_module_without_importlib_resources(monkeypatch):
    expected = (importlib.resources.files("cnnkit") / "data" / "digits.npz").read_bytes()

    def no_resources(package):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", no_resources)
    assert datasets._read_data_file("digits.npz") == expected
    with pytest.raises(FileNotFoundError, match=r"data/no-such-file.*reinstall cnnkit"):
        datasets._read_data_file("no-such-file")


# --------------------------------------------------------------------------
# load_mnist: well-formed files
# --------------------------------------------------------------------------

@pytest.fixture
def raw_mnist():
    """5 training and 3 test images of 4x6 pixels, uint8, with labels."""
    rng = np.random.default_rng(123)
    x_train = rng.integers(0, 256, (5, 4, 6), dtype=np.uint8)
    x_train[0, 0, 0], x_train[0, 0, 1] = 0, 255
    x_test = rng.integers(0, 256, (3, 4, 6), dtype=np.uint8)
    return {"x_train": x_train, "y_train": np.array([7, 0, 9, 3, 3], np.uint8),
            "x_test": x_test, "y_test": np.array([1, 255, 4], np.uint8)}


def idx_bytes(arr, type_code=0x08):
    arr = np.asarray(arr)
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(
        f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_file(path, data, gz=False):
    if gz:
        path = str(path) + ".gz"
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def write_idx_folder(folder, raw, gz=False, override=None, names=IDX_NAMES):
    """Write the four IDX files; ``override`` maps a key to raw bytes that
    replace that file's content. Returns the paths by key."""
    override = override or {}
    paths = {}
    for key, name in names.items():
        data = override.get(key, idx_bytes(raw[key]) if key in raw else None)
        if data is None:
            continue
        use_gz = gz if isinstance(gz, bool) else key in gz
        paths[key] = write_file(os.path.join(folder, name), data, gz=use_gz)
    return paths


def check_mnist_equal(result, raw):
    (x_train, y_train), (x_test, y_test) = result
    for x, key in ((x_train, "x_train"), (x_test, "x_test")):
        expected = raw[key].astype(np.float32)[:, None] / np.float32(255)
        assert x.dtype == np.float32 and x.shape == expected.shape
        np.testing.assert_array_equal(x, expected)
        assert x.min() >= 0.0 and x.max() <= 1.0
    for y, key in ((y_train, "y_train"), (y_test, "y_test")):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, raw[key].astype(np.int64))


@pytest.mark.parametrize("gz", [False, True, ("x_train", "y_test")],
                         ids=["plain", "gzip", "mixed"])
def test_mnist_idx_folder_round_trip(tmp_path, raw_mnist, gz):
    write_idx_folder(tmp_path, raw_mnist, gz=gz)
    result = load_mnist(tmp_path)
    check_mnist_equal(result, raw_mnist)
    (x_train, _), (x_test, _) = result
    assert x_train.shape == (5, 1, 4, 6) and x_test.shape == (3, 1, 4, 6)
    assert x_train[0, 0, 0, 0] == 0.0 and x_train[0, 0, 0, 1] == 1.0
    check_mnist_equal(load_mnist(str(tmp_path)), raw_mnist)


def test_mnist_idx_folder_dotted_names(tmp_path, raw_mnist):
    dotted = {k: v.replace("-idx", ".idx") for k, v in IDX_NAMES.items()}
    write_idx_folder(tmp_path, raw_mnist, names=dotted)
    check_mnist_equal(load_mnist(tmp_path), raw_mnist)


def test_mnist_idx_plain_file_preferred_over_gz(tmp_path, raw_mnist):
    write_idx_folder(tmp_path, raw_mnist)
    other = dict(raw_mnist, y_train=np.zeros(5, np.uint8))
    write_idx_folder(tmp_path, other, gz=True)
    check_mnist_equal(load_mnist(tmp_path), raw_mnist)


def test_mnist_npz_uint8_3d_round_trip(tmp_path, raw_mnist):
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, **raw_mnist)
    check_mnist_equal(load_mnist(path), raw_mnist)


def test_mnist_npz_float_4d_kept_as_is(tmp_path):
    rng = np.random.default_rng(5)
    x_train = rng.standard_normal((4, 2, 3, 5))            # float64
    x_test = rng.random((2, 2, 3, 5), dtype=np.float32)
    path = tmp_path / "f.npz"
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2, 3], np.int64),
             x_test=x_test, y_test=np.array([9, 0], np.int16))
    (xa, ya), (xb, yb) = load_mnist(path)
    assert xa.dtype == np.float32 and xb.dtype == np.float32
    np.testing.assert_array_equal(xa, x_train.astype(np.float32))
    np.testing.assert_array_equal(xb, x_test)
    assert ya.dtype == np.int64 and ya.tolist() == [0, 1, 2, 3]
    assert yb.dtype == np.int64 and yb.tolist() == [9, 0]


# --------------------------------------------------------------------------
# load_mnist: malformed files
# --------------------------------------------------------------------------

def _images(raw):
    return idx_bytes(raw["x_train"])


MALFORMED_IDX = {
    # case: (key of the bad file, function raw -> bytes, message pattern)
    "wrong magic": ("x_train", lambda r: b"\x12\x34" + _images(r)[2:],
                    r"wrong magic number 0x12340803.*0x00000803"),
    "labels file as images": ("x_train", lambda r: idx_bytes(r["y_train"]),
                              r"wrong dimension count 1 .*0x00000801.*0x00000803"),
    "images file as labels": ("y_test", lambda r: idx_bytes(r["x_test"]),
                              r"wrong dimension count 3 .*0x00000803.*0x00000801"),
    "wrong type byte": ("x_train", lambda r: idx_bytes(r["x_train"], 0x0D),
                        r"wrong data-type byte 0x0D \(float32\).*expected 0x08"),
    "empty file": ("y_train", lambda r: b"",
                   r"truncated header: the file holds 0 byte"),
    "truncated magic": ("y_train", lambda r: b"\x00\x00\x08",
                        r"truncated header: the file holds 3 byte"),
    "truncated dimensions": ("x_train", lambda r: _images(r)[:9],
                             r"truncated header: 3 dimension size\(s\) \(12 bytes\).*after 5"),
    "truncated data": ("x_train", lambda r: _images(r)[:-1],
                       r"truncated data: .*5 x 4 x 6 = 120 data bytes.*only 119 follow"),
    "trailing bytes": ("x_test", lambda r: idx_bytes(r["x_test"]) + b"abc",
                       r"3 trailing byte\(s\) after the data.*3 x 4 x 6 = 72"),
    "labels trailing": ("y_train", lambda r: idx_bytes(r["y_train"]) + b"\x00",
                        r"1 trailing byte\(s\) after the data .*\(5 bytes\)"),
    "gzip data without .gz": ("y_train", lambda r: gzip.compress(idx_bytes(r["y_train"])),
                              r"wrong magic number 0x1F8B.*the data is gzip-compressed"),
    "huge header": ("x_train",
                    lambda r: bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2**32 - 1] * 3),
                    r"truncated data: the header promises 4294967295 x 4294967295 x 4294967295"),
    "empty image size": ("x_test",
                         lambda r: bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 0, 6),
                         r"empty image size \(0 rows x 6 cols\)"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", list(MALFORMED_IDX))
def test_mnist_malformed_idx_file(tmp_path, raw_mnist, case, gz):
    key, make, pattern = MALFORMED_IDX[case]
    paths = write_idx_folder(tmp_path, raw_mnist, gz=gz,
                             override={key: make(raw_mnist)})
    with pytest.raises(ValueError, match=pattern) as info:
        load_mnist(tmp_path)
    assert str(info.value).startswith(paths[key] + ": ")


def test_mnist_label_count_mismatch(tmp_path, raw_mnist):
    paths = write_idx_folder(tmp_path, raw_mnist,
                             override={"y_train": idx_bytes(np.arange(4))})
    with pytest.raises(ValueError, match="holds 4 labels, but .* holds 5 images") as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert paths["y_train"] in message and paths["x_train"] in message


def test_mnist_train_test_image_size_mismatch(tmp_path, raw_mnist):
    raw = dict(raw_mnist, x_test=np.zeros((3, 4, 5), np.uint8))
    paths = write_idx_folder(tmp_path, raw)
    with pytest.raises(ValueError, match=r"images of 4x5 pixels, but .* has 4x6") as info:
        load_mnist(tmp_path)
    assert paths["x_test"] in str(info.value)


def test_mnist_missing_file(tmp_path, raw_mnist):
    raw = {k: v for k, v in raw_mnist.items() if k != "y_test"}
    write_idx_folder(tmp_path, raw)
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte: missing") as info:
        load_mnist(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)


def test_mnist_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="no such file or folder") as info:
        load_mnist(missing)
    assert str(missing) in str(info.value)


def test_mnist_corrupt_gzip(tmp_path, raw_mnist):
    paths = write_idx_folder(tmp_path, raw_mnist, gz=True)
    with open(paths["x_test"], "rb") as f:
        data = f.read()
    with open(paths["x_test"], "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid gzip file or truncated") as info:
        load_mnist(tmp_path)
    assert paths["x_test"] in str(info.value)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


MALFORMED_NPZ = {
    # case: (changes to the arrays, message pattern)
    "missing key": ({"y_test": None}, r"missing array\(s\) 'y_test'"),
    "object array": ({"y_train": np.array([1, "a", None, 2, 3], dtype=object)},
                     r"array 'y_train' holds Python objects .*allow_pickle=False"),
    "x 2-D": ({"x_train": np.zeros((5, 24), np.uint8)},
              r"array 'x_train' has shape \(5, 24\) \(2 dimensions\)"),
    "x 5-D": ({"x_test": np.zeros((3, 1, 1, 4, 6), np.uint8)},
              r"array 'x_test' has shape .* \(5 dimensions\)"),
    "x int64": ({"x_train": np.zeros((5, 4, 6), np.int64)},
                r"array 'x_train' has dtype int64; expected uint8"),
    "x complex": ({"x_test": np.zeros((3, 4, 6), np.complex64)},
                  r"array 'x_test' has dtype complex64"),
    "x strings": ({"x_test": np.full((3, 4, 6), "a")},
                  r"array 'x_test' has dtype <U1"),
    "y float": ({"y_train": np.zeros(5)}, r"array 'y_train' has dtype float64; expected integer"),
    "y 2-D": ({"y_test": np.zeros((3, 1), np.uint8)}, r"array 'y_test' has shape \(3, 1\)"),
    "y negative": ({"y_train": np.array([0, 1, -1, 2, 3])},
                   r"array 'y_train' holds labels outside 0..255 \(min -1"),
    "y above 255": ({"y_test": np.array([0, 256, 1], np.int16)},
                    r"array 'y_test' holds labels outside 0..255 .*max 256"),
    "count mismatch": ({"y_test": np.array([1, 2], np.uint8)},
                       r"array 'y_test' holds 2 labels, but 'x_test' holds 3 images"),
    "image size mismatch": ({"x_test": np.zeros((3, 6, 4), np.uint8)},
                            r"array 'x_test' has images of shape \(1, 6, 4\), but 'x_train'"),
}


@pytest.mark.parametrize("case", list(MALFORMED_NPZ))
def test_mnist_malformed_npz(tmp_path, raw_mnist, case):
    changes, pattern = MALFORMED_NPZ[case]
    arrays = {k: v for k, v in {**raw_mnist, **changes}.items() if v is not None}
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=pattern) as info:
        load_mnist(path)
    assert str(info.value).startswith(path + ": ")


def test_mnist_file_that_is_not_npz(tmp_path, raw_mnist):
    path = write_file(tmp_path / "train-images-idx3-ubyte", idx_bytes(raw_mnist["x_train"]))
    with pytest.raises(ValueError, match="cannot be read as a .npz archive") as info:
        load_mnist(path)
    assert path in str(info.value)
    npy = tmp_path / "one.npy"
    np.save(npy, raw_mnist["x_train"])
    with pytest.raises(ValueError, match=r"holds one .npy array; expected a .npz"):
        load_mnist(npy)


# --------------------------------------------------------------------------
# train_test_split
# --------------------------------------------------------------------------

def test_split_digits_sizes_and_stratification():
    x, y = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, seed=0)
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    expected_test = [int(np.floor(0.2 * n + 0.5)) for n in DIGITS_CLASS_COUNTS]
    assert np.bincount(y_test, minlength=10).tolist() == expected_test
    assert (np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)).tolist() \
        == DIGITS_CLASS_COUNTS
    fractions = np.bincount(y_test) / np.bincount(y)
    assert np.all(np.abs(fractions - 0.2) < 0.01)


def test_split_disjoint_complete_and_pairs_kept():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 101)
    x = np.arange(101) * 10
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, seed=4)
    assert len(np.intersect1d(x_train, x_test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([x_train, x_test])), x)
    np.testing.assert_array_equal(y[x_train // 10], y_train)
    np.testing.assert_array_equal(y[x_test // 10], y_test)
    # Shuffled: the training set is not ordered by class or by index.
    assert not np.all(np.diff(y_train) >= 0)
    assert not np.all(np.diff(x_train) > 0)


def test_split_deterministic_for_a_seed():
    x, y = np.arange(200), np.arange(200) % 4
    first = train_test_split(x, y, seed=7)
    again = train_test_split(x, y, seed=7)
    other = train_test_split(x, y, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_split_int_test_size_is_exact_and_stratified():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    x = np.arange(100)
    for k in (1, 7, 33, 99):
        _, x_test, _, y_test = train_test_split(x, y, test_size=k, seed=1)
        assert len(x_test) == k
        counts = np.bincount(y_test, minlength=3)
        share = k * np.array([50, 30, 20]) / 100
        assert np.all(counts >= np.floor(share)) and np.all(counts <= np.ceil(share))


def test_split_without_stratification():
    y = np.repeat([0, 1], [90, 10])
    x = np.arange(100)
    x_train, x_test, _, _ = train_test_split(x, y, test_size=0.25, seed=3, stratify=False)
    assert len(x_test) == 25 and len(x_train) == 75
    _, x_test, _, _ = train_test_split(x, y, test_size=12, stratify=False)
    assert len(x_test) == 12
    # y of any shape is accepted without stratification.
    _, _, y_train, y_test = train_test_split(x, np.zeros((100, 2)), stratify=False)
    assert y_train.shape == (80, 2) and y_test.shape == (20, 2)


def test_split_string_labels():
    y = np.array(["cat", "dog"] * 10)
    _, _, y_train, y_test = train_test_split(np.arange(20), y, test_size=0.5)
    assert sorted(y_test.tolist()) == ["cat"] * 5 + ["dog"] * 5
    assert y_train.dtype == y.dtype


def test_split_keeps_one_sample_in_each_set():
    x, y = np.arange(10), np.arange(10) % 5
    _, x_test, _, _ = train_test_split(x, y, test_size=0.01)
    assert len(x_test) == 1
    x_train, x_test, _, _ = train_test_split(np.arange(2), np.array([0, 1]), test_size=0.9)
    assert len(x_train) == 1 and len(x_test) == 1
    x_train, x_test, _, _ = train_test_split(np.arange(3), np.array([0, 1, 2]), test_size=0.6)
    assert len(x_train) >= 1 and len(x_test) >= 1 and len(x_train) + len(x_test) == 3


@pytest.mark.parametrize("kwargs, pattern", [
    ({"test_size": 0.0}, r"test_size .* \(0, 1\), got 0.0"),
    ({"test_size": 1.0}, r"test_size .* \(0, 1\), got 1.0"),
    ({"test_size": float("nan")}, r"test_size"),
    ({"test_size": -0.5}, r"test_size"),
    ({"test_size": 0}, r"test_size .* \[1, 9\], got 0"),
    ({"test_size": 10}, r"test_size .* \[1, 9\], got 10"),
    ({"test_size": True}, r"test_size"),
    ({"test_size": "0.2"}, r"test_size must be a float .* got str"),
    ({"stratify": "yes"}, r"stratify must be True or False"),
    ({"seed": -1}, r"seed must be"),
    ({"seed": "abc"}, r"seed must be"),
])
def test_split_argument_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        train_test_split(np.arange(10), np.arange(10) % 2, **kwargs)


def test_split_data_errors():
    with pytest.raises(ValueError, match="same number of samples"):
        train_test_split(np.arange(10), np.arange(9))
    with pytest.raises(ValueError, match="at least 2 samples"):
        train_test_split(np.arange(1), np.arange(1))
    with pytest.raises(ValueError, match="x must be an array"):
        train_test_split(np.float64(1.0), np.arange(1))
    with pytest.raises(ValueError, match="y must be 1-D .* stratify"):
        train_test_split(np.arange(10), np.zeros((10, 2)))


# --------------------------------------------------------------------------
# make_synthetic
# --------------------------------------------------------------------------

def test_synthetic_shapes_dtypes_and_balance():
    x, y = make_synthetic()
    assert x.shape == (1000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (1000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100] * 10
    assert np.all(np.isfinite(x))
    x, y = make_synthetic(7, image_shape=(3, 5, 9), n_classes=3, seed=2)
    assert x.shape == (7, 3, 5, 9)
    assert sorted(np.bincount(y).tolist()) == [2, 2, 3]
    x, y = make_synthetic(5, image_shape=[1, 4, 4], noise=0)
    assert x.shape == (5, 1, 4, 4)


def test_synthetic_deterministic_for_a_seed():
    a = make_synthetic(50, (1, 8, 8), 4, seed=3)
    b = make_synthetic(50, (1, 8, 8), 4, seed=3)
    c = make_synthetic(50, (1, 8, 8), 4, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # Same task across seeds: without noise, each class is one fixed image.
    xa, ya = make_synthetic(20, (1, 8, 8), 4, seed=0, noise=0)
    xb, yb = make_synthetic(20, (1, 8, 8), 4, seed=9, noise=0)
    for cls in range(4):
        np.testing.assert_array_equal(xa[ya == cls][0], xb[yb == cls][0])
        assert np.all(xa[ya == cls] == xa[ya == cls][0])


def nearest_mean_accuracy(x_train, y_train, x_test, y_test, n_classes):
    means = np.stack([x_train[y_train == c].mean(axis=0) for c in range(n_classes)])
    flat_test = x_test.reshape(len(x_test), -1).astype(np.float64)
    flat_means = means.reshape(n_classes, -1).astype(np.float64)
    dist = ((flat_test[:, None, :] - flat_means[None]) ** 2).sum(axis=2)
    return float((dist.argmin(axis=1) == y_test).mean())


@pytest.mark.parametrize("shape, n_classes, noise",
                         [((1, 28, 28), 10, 0.5), ((1, 8, 8), 10, 0.5),
                          ((3, 16, 16), 5, 1.0)])
def test_synthetic_is_learnable(shape, n_classes, noise):
    x_train, y_train = make_synthetic(500, shape, n_classes, seed=0, noise=noise)
    x_test, y_test = make_synthetic(300, shape, n_classes, seed=1, noise=noise)
    assert nearest_mean_accuracy(x_train, y_train, x_test, y_test, n_classes) > 0.9
    # Chance level without the class structure: shuffled training labels.
    shuffled = np.random.default_rng(0).permutation(y_train)
    assert nearest_mean_accuracy(x_train, shuffled, x_test, y_test, n_classes) < 0.5


@pytest.mark.parametrize("kwargs, pattern", [
    ({"n_samples": 0}, r"n_samples must be an int >= 1, got 0"),
    ({"n_samples": 2.5}, r"n_samples must be an int"),
    ({"n_classes": 1}, r"n_classes must be an int >= 2"),
    ({"image_shape": (28, 28)}, r"image_shape must be a tuple"),
    ({"image_shape": 28}, r"image_shape must be a tuple"),
    ({"image_shape": (1, 0, 28)}, r"each entry of image_shape must be an int >= 1"),
    ({"noise": -0.1}, r"noise must be a finite float >= 0"),
    ({"noise": float("inf")}, r"noise must be"),
    ({"noise": "loud"}, r"noise must be"),
    ({"seed": -3}, r"seed must be"),
])
def test_synthetic_argument_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_synthetic(**{"n_samples": 10, **kwargs})


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------

def test_docstring_examples_run():
    failures, tried = doctest.testmod(datasets, optionflags=doctest.ELLIPSIS)
    assert tried > 10
    assert failures == 0


def test_public_api_documented():
    assert datasets.__doc__
    for name in datasets.__all__:
        doc = getattr(datasets, name).__doc__
        for section in ("Parameters", "Returns", "Raises", "Examples"):
            if name == "load_digits" and section == "Parameters":
                continue
            assert re.search(rf"^\s*{section}\n\s*-+\n", doc, re.M), (name, section)
