"""cnnkit.transforms: values against the NumPy twins of cnnkit.reference,
the draws' independence of batches, threads, shards and ranks, errors,
configs, the command-line syntax and fit(augment=...)."""
import copy
import pickle

import numpy as np
import pytest

import cnnkit
from cnnkit import _ops, layers
from cnnkit import reference as ref
from cnnkit.transforms import (Compose, Normalize, RandomCrop,
                               RandomHorizontalFlip, RandomTranslation,
                               Transform, deserialize, parse, serialize)

from helpers import DTYPES, THREADS, num_threads, require, to_layout

KEYS = (0, 1, 12345, 2 ** 64 - 1)


def _images(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------
# the draws
# --------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS)
def test_index_hash_is_the_reference_hash(key):
    index = np.array([0, 1, 2, 17, 1000, 2 ** 40, 2 ** 63 - 1])
    np.testing.assert_array_equal(_ops.index_hash(index, key, 3),
                                  ref.index_hash(index, key, 3))


def test_draws_are_roughly_uniform():
    h = _ops.index_hash(np.arange(20000), 7, 2)
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    flips = RandomHorizontalFlip(0.3)(np.arange(20000.0).reshape(
        20000, 1, 1, 1) * 0 + np.array([[[[1.0, 2.0]]]]), key=3)
    assert abs((flips[:, 0, 0, 0] == 2.0).mean() - 0.3) < 0.015


def test_window_draws_stay_in_range():
    params = _ops.window_draws(np.arange(5000), 9, (5, 3), (2, 1), 4, 0.5)
    assert params[:, 0].min() == -2 and params[:, 0].max() == 2
    assert params[:, 1].min() == -1 and params[:, 1].max() == 1
    assert set(np.unique(params[:, 2])) == {0, 1}


# --------------------------------------------------------------------------
# values against the reference
# --------------------------------------------------------------------------
CROPS = [
    # (image shape, size, padding)
    ((1, 8, 8), 8, 1),
    ((3, 7, 5), None, 2),
    ((2, 5, 9), (3, 4), 0),
    ((1, 6, 6), 1, 0),                 # 1x1 crops
    ((1, 4, 4), 6, 1),                 # the whole padded image
    ((2, 3, 5), (5, 9), (1, 2)),
    ((1, 1, 1), None, 3),              # far more padding than image
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size,padding", CROPS)
@pytest.mark.parametrize("n", [1, 6])
def test_random_crop_matches_reference(rng, dtype, shape, size, padding, n):
    x = _images(rng, (n,) + shape, dtype)
    index = rng.permutation(50)[:n]
    for key in KEYS:
        got = RandomCrop(size, padding)(x, index=index, key=key)
        want = ref.random_crop(x, index, key, size, padding)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_random_horizontal_flip_matches_reference(rng, dtype, p):
    x = _images(rng, (9, 2, 3, 5), dtype)
    index = np.arange(100, 109)
    for key in KEYS:
        np.testing.assert_array_equal(
            RandomHorizontalFlip(p)(x, index=index, key=key),
            ref.random_horizontal_flip(x, index, key, p))
    if p == 0.0:
        np.testing.assert_array_equal(RandomHorizontalFlip(p)(x), x)
    if p == 1.0:
        np.testing.assert_array_equal(RandomHorizontalFlip(p)(x),
                                      x[..., ::-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,factors", [
    ((1, 8, 8), (0.25, 0.25)), ((3, 5, 7), (0.5, 0.0)),
    ((1, 4, 6), (1.0, 1.0)), ((2, 3, 3), (0.0, 0.0)),
    ((1, 1, 9), (0.9, 0.3))])
def test_random_translation_matches_reference(rng, dtype, shape, factors):
    x = _images(rng, (7,) + shape, dtype)
    index = np.array([3, 1, 4, 1, 5, 9, 2])         # repeats draw alike
    x[3] = x[1]
    for key in KEYS:
        got = RandomTranslation(*factors)(x, index=index, key=key)
        np.testing.assert_array_equal(
            got, ref.random_translation(x, index, key, *factors))
        np.testing.assert_array_equal(got[1], ref.random_translation(
            x[3:4], [1], key, *factors)[0])
        np.testing.assert_array_equal(got[3], got[1])


def test_translation_by_zero_is_a_copy(rng):
    x = _images(rng, (3, 1, 4, 4))
    y = RandomTranslation(0.2, 0.2)(x, key=1)      # floor(0.8) = 0 pixels
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mean,std", [(0.5, 0.25), ([0.1, -0.2, 0.3],
                                                    [1.0, 2.0, -0.5]),
                                      ([0.3], [0.7, 0.1, 3.0])])
def test_normalize_matches_reference(rng, dtype, mean, std):
    x = _images(rng, (4, 3, 5, 2), dtype)
    got = Normalize(mean, std)(x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, ref.normalize(x, mean, std))


def test_normalize_matches_torch(rng):
    torch = require("torch")
    x = _images(rng, (4, 3, 5, 6), np.float32)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    t = torch.from_numpy(x.copy())
    want = t.sub_(torch.tensor(mean)[:, None, None]).div_(
        torch.tensor(std)[:, None, None]).numpy()
    np.testing.assert_array_equal(Normalize(mean, std)(x), want)


def test_crop_then_flip_matches_torchvision_semantics(rng):
    """PyTorch's crop of the zero-padded image at the drawn corner, then
    the flip, with the same draws."""
    torch = require("torch")
    x = _images(rng, (5, 2, 6, 7), np.float32)
    key, index = 99, np.arange(5)
    kc, kf = ref.child_key(key, 0), ref.child_key(key, 1)
    hc, hf = ref.index_hash(index, kc, 2), ref.index_hash(index, kf, 1)
    padded = torch.nn.functional.pad(torch.from_numpy(x), (1, 1, 1, 1))
    got = Compose([RandomCrop(5, padding=1),
                   RandomHorizontalFlip()])(x, index=index, key=key)
    for i in range(5):
        oy = ((int(hc[i, 0]) >> 32) * 4) >> 32
        ox = ((int(hc[i, 1]) >> 32) * 5) >> 32
        img = padded[i, :, oy:oy + 5, ox:ox + 5]
        if (int(hf[i, 0]) >> 11) * 2.0 ** -53 < 0.5:
            img = torch.flip(img, dims=[2])
        np.testing.assert_array_equal(got[i], img.numpy())


def _ref_chain(x, index, key, steps):
    """The reference transforms of a Compose, one after another."""
    for j, (name, kw) in enumerate(steps):
        k = ref.child_key(key, j)
        if name == "crop":
            x = ref.random_crop(x, index, k, **kw)
        elif name == "flip":
            x = ref.random_horizontal_flip(x, index, k, **kw)
        elif name == "translate":
            x = ref.random_translation(x, index, k, **kw)
        else:
            x = ref.normalize(x, **kw)
    return x


def _make(name, kw):
    return {"crop": RandomCrop, "flip": RandomHorizontalFlip,
            "translate": RandomTranslation, "normalize": Normalize}[name](**kw)


CHAINS = [
    [("crop", dict(size=8, padding=1)), ("flip", dict(p=0.5))],
    [("flip", dict(p=0.5)), ("crop", dict(size=(5, 6), padding=2))],
    [("translate", dict(height_factor=0.3, width_factor=0.5)),
     ("flip", dict(p=0.7)), ("flip", dict(p=0.4))],
    [("crop", dict(size=None, padding=2)),
     ("translate", dict(height_factor=0.25, width_factor=0.25)),
     ("flip", dict(p=0.5))],
    [("normalize", dict(mean=0.5, std=2.0)), ("crop", dict(padding=1)),
     ("flip", dict(p=0.5)), ("normalize", dict(mean=[1.0], std=[3.0]))],
    [],
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("steps", CHAINS)
def test_compose_is_its_steps_in_order(rng, dtype, steps):
    x = _images(rng, (6, 1, 8, 8), dtype)
    index = rng.permutation(40)[:6]
    t = Compose([_make(*s) for s in steps])
    for key in KEYS:
        np.testing.assert_array_equal(t(x, index=index, key=key),
                                      _ref_chain(x, index, key, steps))


def test_nested_compose_takes_child_keys(rng):
    x = _images(rng, (4, 2, 6, 6))
    inner = Compose([RandomCrop(padding=1), RandomHorizontalFlip()])
    t = Compose([RandomTranslation(0.3, 0.3), inner])
    index, key = np.arange(4), 5
    y = RandomTranslation(0.3, 0.3)(x, index=index,
                                    key=ref.child_key(key, 0))
    y = inner(y, index=index, key=ref.child_key(key, 1))
    np.testing.assert_array_equal(t(x, index=index, key=key), y)


# --------------------------------------------------------------------------
# layouts, threads, batches
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["C", "F", "strided", "readonly"])
def test_any_layout_is_read_and_never_written(rng, layout):
    x = _images(rng, (5, 2, 6, 7), np.float32)
    t = Compose([RandomCrop(padding=2), RandomHorizontalFlip(),
                 Normalize(0.1, 0.5)])
    want = t(x, key=3)
    xl = to_layout(x, layout)
    before = np.array(xl, copy=True)
    got = t(xl, key=3)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(xl, before)
    assert not np.shares_memory(got, xl)


def test_integers_are_promoted_to_float64():
    x = np.arange(16, dtype=np.int32).reshape(1, 1, 4, 4)
    y = RandomHorizontalFlip(1.0)(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, x[..., ::-1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bits_do_not_depend_on_the_thread_count(rng, dtype):
    x = _images(rng, (200, 3, 32, 32), dtype)      # enough work for threads
    t = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()])
    outs = []
    for n in THREADS:
        with num_threads(n):
            outs.append(t(x, key=11))
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_an_images_draws_depend_on_its_index_not_its_batch(rng):
    x = _images(rng, (30, 1, 6, 6))
    t = Compose([RandomTranslation(0.5, 0.5), RandomHorizontalFlip(),
                 RandomCrop(4, padding=1)])
    whole = t(x, key=8)
    perm = rng.permutation(30)
    np.testing.assert_array_equal(t(x[perm], index=perm, key=8),
                                  whole[perm])
    for lo, hi in [(0, 1), (3, 17), (17, 30)]:
        np.testing.assert_array_equal(
            t(x[lo:hi], index=np.arange(lo, hi), key=8), whole[lo:hi])
    assert not np.array_equal(t(x, key=9), whole)   # another key


def test_empty_batch_and_empty_compose(rng):
    x = np.zeros((0, 1, 4, 4), np.float32)
    assert RandomCrop(2, 1)(x).shape == (0, 1, 2, 2)
    y = Compose([])(np.ones((2, 1, 3, 3)))
    np.testing.assert_array_equal(y, np.ones((2, 1, 3, 3)))


def test_output_shape():
    assert RandomCrop(5, 1).output_shape((3, 8, 8)) == (3, 5, 5)
    assert RandomCrop(None, 1).output_shape((3, 8, 9)) == (3, 8, 9)
    assert Compose([RandomCrop((2, 3)), RandomHorizontalFlip(),
                    Normalize(0, 1)]).output_shape((1, 4, 4)) == (1, 2, 3)
    assert RandomTranslation(0.1, 0.1).output_shape([2, 3, 4]) == (2, 3, 4)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make,exc,match", [
    (lambda: RandomCrop(0), ValueError, "size must lie in"),
    (lambda: RandomCrop((3, -1)), ValueError, "size must lie in"),
    (lambda: RandomCrop(2.5), TypeError, "size must be an int"),
    (lambda: RandomCrop((1, 2, 3)), TypeError, "size must be an int"),
    (lambda: RandomCrop(2, padding=-1), ValueError, "padding must lie in"),
    (lambda: RandomCrop(2, padding=True), TypeError, "padding must be"),
    (lambda: RandomHorizontalFlip(1.5), ValueError, r"p must be in \[0, 1\]"),
    (lambda: RandomHorizontalFlip(-0.1), ValueError, "p must be in"),
    (lambda: RandomHorizontalFlip("0.5"), TypeError, "p must be a float"),
    (lambda: RandomHorizontalFlip(True), TypeError, "p must be a float"),
    (lambda: RandomTranslation(1.2, 0), ValueError, "height_factor"),
    (lambda: RandomTranslation(0, -0.1), ValueError, "width_factor"),
    (lambda: RandomTranslation(None, 0), TypeError, "height_factor"),
    (lambda: Normalize([0.5], [0.0]), ValueError, "std must have no zeros"),
    (lambda: Normalize([0.5, 0.1], [1.0, 0.0]), ValueError, "no zeros"),
    (lambda: Normalize([0.5, 0.1], [1.0, 2.0, 3.0]), ValueError,
     "mean has 2 values but std has 3"),
    (lambda: Normalize([], [1.0]), TypeError, "mean must be a float"),
    (lambda: Normalize("a", 1.0), TypeError, "mean must be a float"),
    (lambda: Normalize(float("nan"), 1.0), ValueError, "finite"),
    (lambda: Compose(RandomHorizontalFlip()), TypeError, "list of"),
    (lambda: Compose([lambda x: x]), TypeError, "cnnkit transforms"),
])
def test_bad_arguments_are_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_calls_are_refused():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"crop size \(7, 7\) does not fit "
                                         r"in the padded image \(6, 6\)"):
        RandomCrop(7, padding=1)(x)
    with pytest.raises(ValueError, match="does not fit"):
        RandomCrop(7, padding=1).output_shape((1, 4, 4))
    with pytest.raises(ValueError, match="mean has 2 values but the images "
                                         "have 1 channels"):
        Normalize([0.0, 1.0], 1.0)(x)
    with pytest.raises(ValueError, match="std has 3 values"):
        Normalize(0.0, [1.0, 2.0, 3.0])(np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), got shape "
                                         r"\(4, 4\)"):
        RandomHorizontalFlip()(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="real numeric array"):
        RandomHorizontalFlip()(np.zeros((1, 1, 2, 2), complex))
    with pytest.raises(TypeError, match="real numeric array"):
        RandomHorizontalFlip()(np.array([[[["a"]]]]))
    with pytest.raises(ValueError, match=r"index must have shape \(2,\)"):
        RandomHorizontalFlip()(x, index=[0, 1, 2])
    with pytest.raises(TypeError, match="index must be integer"):
        RandomHorizontalFlip()(x, index=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"index must lie in \[0, 2\*\*63\)"):
        RandomHorizontalFlip()(x, index=[0, -1])
    with pytest.raises(ValueError, match=r"key must be in \[0, 2\*\*64\)"):
        RandomHorizontalFlip()(x, key=2 ** 64)
    with pytest.raises(TypeError, match="key must be an int"):
        RandomHorizontalFlip()(x, key=1.5)
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        RandomCrop(2).output_shape((4, 4))


def test_kernel_bindings_check_their_arguments():
    x = np.zeros((2, 1, 3, 3), np.float32)
    good = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match="params must be a C-contiguous "
                                         "int64 ndarray of shape"):
        _ops.shift_flip_forward(x, np.zeros((2, 3), np.int32), (3, 3))
    with pytest.raises(ValueError, match="params must be"):
        _ops.shift_flip_forward(x, np.zeros((3, 3), np.int64), (3, 3))
    with pytest.raises(ValueError, match=r"params must lie in"):
        _ops.shift_flip_forward(x, np.full((2, 3), 2 ** 50, np.int64),
                                (3, 3))
    with pytest.raises(ValueError, match="out_hw must be positive"):
        _ops.shift_flip_forward(x, good, (0, 3))
    with pytest.raises(ValueError, match="out overlaps x"):
        _ops.shift_flip_forward(x, good, (3, 3), out=x)
    with pytest.raises(ValueError, match="x must be 4-D"):
        _ops.shift_flip_forward(x[0], good, (3, 3))
    with pytest.raises(ValueError, match=r"range_hw must lie in"):
        _ops.window_draws([0], 0, (0, 1), (0, 0), 0, 0.5)
    with pytest.raises(ValueError, match=r"flip_p must be in"):
        _ops.window_draws([0], 0, (1, 1), (0, 0), 0, 1.5)
    with pytest.raises(ValueError, match=r"key_shift must be in"):
        _ops.window_draws([0], -1, (1, 1), (0, 0), 0, 0.5)
    with pytest.raises(ValueError, match="index must be 1-D"):
        _ops.index_hash(np.zeros((2, 2), np.int64), 0, 1)


def test_huge_shifts_read_nothing_outside_the_image(rng):
    x = _images(rng, (2, 1, 3, 3), np.float32)
    params = np.array([[2 ** 39, -2 ** 39, 1], [-5, 1, 0]], np.int64)
    y = _ops.shift_flip_forward(x, params, (4, 2))
    assert not y.any()


# --------------------------------------------------------------------------
# config, repr, pickling, the command-line syntax
# --------------------------------------------------------------------------
ALL = [RandomCrop(8, padding=1), RandomCrop(None, (1, 2)),
       RandomHorizontalFlip(0.25), RandomTranslation(0.1, 0.2),
       Normalize([0.5, 0.4], [0.2, 0.3]), Normalize(0.0, 2.0),
       Compose([RandomCrop(padding=2), RandomHorizontalFlip(),
                Compose([Normalize(0.5, 0.5)])])]


@pytest.mark.parametrize("t", ALL, ids=repr)
def test_config_round_trips(t, rng):
    import json
    data = json.loads(json.dumps(serialize(t)))
    back = deserialize(data)
    assert back == t and type(back) is type(t) and hash(back) == hash(t)
    assert repr(back) == repr(t)
    assert type(t).from_config(t.get_config()) == t
    x = _images(rng, (3, 2, 8, 8))
    for other in (back, pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        np.testing.assert_array_equal(other(x, key=4), t(x, key=4))
    t(x, key=4)                            # a used one pickles the same
    assert pickle.loads(pickle.dumps(t)) == t


def test_reprs():
    assert repr(Compose([RandomCrop(8, padding=1), RandomHorizontalFlip()])) \
        == ("Compose([RandomCrop(size=(8, 8), padding=(1, 1)), "
            "RandomHorizontalFlip(p=0.5)])")
    assert repr(RandomTranslation(0.1, 0.2)) == \
        "RandomTranslation(height_factor=0.1, width_factor=0.2)"
    assert repr(Normalize(0.5, [1, 2])) == "Normalize(mean=(0.5,), " \
        "std=(1.0, 2.0))"


def test_deserialize_refuses_bad_configs():
    with pytest.raises(ValueError, match="unknown transform 'Blur'"):
        deserialize({"class_name": "Blur", "config": {}})
    with pytest.raises(ValueError, match="expected"):
        deserialize({"class_name": "RandomCrop"})
    with pytest.raises(ValueError, match="bad config for RandomCrop"):
        deserialize({"class_name": "RandomCrop", "config": {"sise": 3}})
    with pytest.raises(ValueError, match="must be a dict"):
        deserialize({"class_name": "RandomCrop", "config": [3]})
    with pytest.raises(ValueError, match="Compose: config must be"):
        deserialize({"class_name": "Compose", "config": {"t": []}})
    with pytest.raises(TypeError, match="expected a cnnkit transform"):
        serialize("flip")


@pytest.mark.parametrize("spec,want", [
    ("crop:2,flip", Compose([RandomCrop(None, 2), RandomHorizontalFlip()])),
    ("flip:0.25", Compose([RandomHorizontalFlip(0.25)])),
    (" translate:0.1 , crop:0", Compose([RandomTranslation(0.1, 0.1),
                                          RandomCrop(None, 0)])),
    ("translate:0.1:0.3", Compose([RandomTranslation(0.1, 0.3)])),
    ("normalize:0.5:0.25", Compose([Normalize(0.5, 0.25)])),
    ("normalize:0.1/0.2/0.3:1/2/3", Compose([Normalize([0.1, 0.2, 0.3],
                                                       [1, 2, 3])])),
])
def test_parse(spec, want):
    assert parse(spec) == want


@pytest.mark.parametrize("spec,match", [
    ("", "empty"), ("blur", "unknown step 'blur'"),
    ("crop", "crop takes 1 argument"), ("crop:1.5", "not a whole number"),
    ("crop:-1", "padding must lie in"), ("flip:2", r"p must be in \[0, 1\]"),
    ("flip:1:2", "flip takes 0 to 1"), ("translate:a", "'a' is not a"),
    ("normalize:0:0", "no zeros"), ("crop:1,,flip", "unknown step ''"),
])
def test_parse_refuses_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse(spec)
    with pytest.raises(TypeError):
        parse(3)


# --------------------------------------------------------------------------
# fit(augment=...)
# --------------------------------------------------------------------------
class Spy(Compose):
    """A Compose that records, per key (epoch), each image it augments by
    its index, and the batch sizes it sees."""

    def __init__(self, transforms):
        super().__init__(transforms)
        self.seen, self.sizes = {}, []

    def _run(self, x, index, key, kept):
        y = super()._run(x, index, key, kept)
        record = self.seen.setdefault(key, {})
        for i, img in zip(index.tolist(), y):
            assert i not in record             # each image once per epoch
            record[i] = img.copy()
        self.sizes.append(x.shape[0])
        return y


def _data(n=120):
    x, y = cnnkit.datasets.load_digits()
    return x[:n], y[:n]


def _model(seed=0, dropout=True, dtype="float32"):
    body = [layers.Conv2D(4, 3, padding=1), layers.ReLU(),
            layers.MaxPool2D(2), layers.Flatten()]
    if dropout:
        body.append(layers.Dropout(0.2))
    return cnnkit.Sequential(body + [layers.Dense(10)], input_shape=(1, 8, 8),
                             seed=seed, dtype=dtype)


def _spy():
    return Spy([RandomCrop(padding=1), RandomHorizontalFlip(),
                RandomTranslation(0.25, 0.25)])


def _epochs(spy):
    """The augmented images of each epoch, in epoch order."""
    return [spy.seen[k] for k in spy.seen]


def _same_epochs(a, b):
    assert len(a) == len(b)
    for ea, eb in zip(a, b):
        assert sorted(ea) == sorted(eb)
        for i in ea:
            np.testing.assert_array_equal(ea[i], eb[i])


def test_fit_augments_every_training_image_once_per_epoch():
    x, y = _data()
    xv, yv = _data(160)
    spy = _spy()
    model = _model()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, augment=spy,
              validation_data=(xv[120:], yv[120:]))
    epochs = _epochs(spy)
    assert len(epochs) == 3                     # a new key each epoch
    for e in epochs:
        assert sorted(e) == list(range(120))   # never a validation image
    assert sum(spy.sizes) == 360
    model.evaluate(xv, yv)
    model.predict(xv)
    assert sum(spy.sizes) == 360               # never an evaluated one
    # each image's augmentation is the transform's under the epoch's key
    key = list(spy.seen)[1]
    plain = Compose(spy.transforms)
    np.testing.assert_array_equal(
        np.stack([spy.seen[key][i] for i in range(120)]),
        plain(x, index=np.arange(120), key=key))


def test_validation_is_not_augmented():
    """val_loss of a fit with augmentation is the evaluate() of its
    weights."""
    x, y = _data(160)
    model = _model(dropout=False)
    ckpt = []

    class Keep(cnnkit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ckpt.append((self.model.flat_params.copy(), logs["val_loss"]))

    model.fit(x[:120], y[:120], epochs=2, batch_size=16, verbose=0,
              validation_data=(x[120:], y[120:]), callbacks=[Keep()],
              augment=Compose([RandomCrop(padding=2),
                               RandomHorizontalFlip(1.0)]))
    for params, val_loss in ckpt:
        model.flat_params[...] = params
        assert model.evaluate(x[120:], y[120:])["loss"] == val_loss


@pytest.mark.parametrize("kwargs", [
    dict(batch_size=7), dict(batch_size=120), dict(batch_size=1),
    dict(threads=1), dict(threads=3), dict(shards=1), dict(shards=5)])
def test_draws_depend_on_seed_epoch_and_index_only(kwargs):
    """Another batch size, thread count or shard count: the same images,
    epoch by epoch (the shuffle changes only which batch they fall in)."""
    x, y = _data()
    base = _spy()
    _model().fit(x, y, epochs=2, batch_size=32, verbose=0, augment=base)
    spy = _spy()
    kwargs = dict(kwargs)
    threads = kwargs.pop("threads", None)
    shards = kwargs.pop("shards", None)
    fit = dict(epochs=2, batch_size=32, verbose=0, augment=spy)
    fit.update(kwargs)
    if threads:
        with num_threads(threads):
            _model().fit(x, y, **fit)
    elif shards:
        require("mpi4py")
        try:
            _model().fit(x, y, distributed=cnnkit.distributed.DataParallel(
                shards=shards), **fit)
        except RuntimeError as exc:         # mpi4py without its library
            if "MPI" not in str(exc):
                raise
            pytest.skip(f"DataParallel needs a working MPI library: {exc}")
    else:
        _model().fit(x, y, **fit)
    _same_epochs(_epochs(spy), _epochs(base))


def test_fit_with_augment_is_reproducible_and_thread_independent():
    x, y = _data(200)
    runs = []
    for threads in (1, 2, 3, 2):
        model = _model(seed=3)
        with num_threads(threads):
            h = model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                          augment=parse("crop:1,flip,translate:0.2"))
        runs.append((model.flat_params.copy(), h.history["loss"]))
    for params, loss in runs[1:]:
        np.testing.assert_array_equal(params, runs[0][0])
        assert loss == runs[0][1]
    # and augmentation changes the training
    plain = _model(seed=3)
    plain.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert not np.array_equal(plain.flat_params, runs[0][0])


def test_resuming_reproduces_the_draws():
    x, y = _data()
    a, b = _spy(), _spy()
    one = _model()
    one.fit(x, y, epochs=3, verbose=0, augment=a)
    two = _model()
    two.fit(x, y, epochs=1, verbose=0, augment=b)
    two.fit(x, y, epochs=3, initial_epoch=1, verbose=0, augment=b)
    _same_epochs(_epochs(b), _epochs(a))
    np.testing.assert_array_equal(one.flat_params, two.flat_params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_with_augment_trains(dtype):
    x, y = cnnkit.datasets.load_digits()
    model = cnnkit.Sequential([
        layers.Conv2D(8, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
        layers.Flatten(), layers.Dense(10)], input_shape=(1, 8, 8), seed=0,
        dtype=dtype)
    h = model.fit(x[:1200], y[:1200], epochs=6, batch_size=32, verbose=0,
                  optimizer=cnnkit.optim.Adam(1e-2),
                  augment=Compose([RandomCrop(padding=1),
                                   RandomTranslation(0.125, 0.125)]))
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0]
    assert model.evaluate(x[1200:], y[1200:])["accuracy"] > 0.85


def test_graph_models_fit_with_augment():
    x, y = _data()
    inp = cnnkit.Input((1, 8, 8))
    h = layers.ReLU()(layers.Conv2D(4, 3, padding=1)(inp))
    h = layers.Add()([h, layers.Conv2D(4, 3, padding=1)(h)])
    out = layers.Dense(10)(layers.Flatten()(h))
    model = cnnkit.Model(inp, out, seed=0)
    spy = _spy()
    model.fit(x, y, epochs=1, verbose=0, augment=spy)
    assert len(spy.seen) == 1 and sorted(_epochs(spy)[0]) == list(range(120))


def test_fit_refuses_bad_augment():
    x, y = _data(40)
    model = _model()
    with pytest.raises(TypeError, match="augment must be a cnnkit.transforms"
                                        " transform or None"):
        model.fit(x, y, verbose=0, augment=lambda b: b)
    with pytest.raises(TypeError, match="augment must be"):
        model.fit(x, y, verbose=0, augment="crop:1")
    with pytest.raises(ValueError, match=r"augment must keep the image shape "
                                         r"\(1, 8, 8\).*makes \(1, 6, 6\)"):
        model.fit(x, y, verbose=0, augment=RandomCrop(6))
    with pytest.raises(ValueError, match="does not fit"):
        model.fit(x, y, verbose=0, augment=RandomCrop(12, padding=1))
    with pytest.raises(ValueError, match="mean has 3 values"):
        model.fit(x, y, verbose=0, augment=Normalize([0, 0, 0], 1))


def test_fit_never_writes_the_training_data():
    x, y = _data(64)
    before = x.copy()
    _model().fit(x, y, epochs=1, verbose=0, shuffle=False,
                 augment=Compose([Normalize(0.5, 0.5),
                                  RandomHorizontalFlip(1.0)]))
    np.testing.assert_array_equal(x, before)


def test_the_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        Transform().get_config()


# ==========================================================================
# fuzzing: the C window copy under random shapes, draws and bad arguments
# ==========================================================================
import fuzzing  # noqa: E402
from fuzzing import (Case, arrays, assert_result, bad_array,  # noqa: E402
                     design_dtype)
from fuzzing import fuzz_property  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def transform_cases(draw):
    """A RandomCrop, RandomTranslation or RandomHorizontalFlip (alone or
    composed with a flip) on a random batch, index and key, against the
    reference; or one mutation that must raise."""
    n, c = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    x = draw(arrays((n, c, h, w), kinds=("normal", "int", "special")))
    index = draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n))
    key = draw(st.integers(0, 2**64 - 1))
    kind = draw(st.sampled_from(["crop", "translate", "flip", "crop+flip"]))
    pad = draw(st.integers(0, 12))
    size = (draw(st.integers(1, h + 2 * pad)),
            draw(st.integers(1, w + 2 * pad)))
    hf, wf = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])), \
        draw(st.sampled_from([0.0, 0.3, 1.0]))
    p = draw(st.sampled_from([0.0, 0.5, 1.0]))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 5 + [
        "size", "padding", "p", "factor", "dtype", "ndim", "index"]))
    if mutation == "size":
        size = (h + 2 * pad + 1, size[1])
        expect, errors, why = "error", (ValueError,), "crop too large"
        kind = "crop"
    elif mutation == "padding":
        pad, kind = -1, "crop"
        expect, errors, why = "error", (ValueError,), "negative padding"
    elif mutation == "p":
        p, kind = draw(st.sampled_from([-0.5, 1.5, float("nan")])), "flip"
        expect, errors, why = "error", (ValueError,), "p outside [0, 1]"
    elif mutation == "factor":
        hf, kind = draw(st.sampled_from([-0.1, 1.5])), "translate"
        expect, errors, why = "error", (ValueError,), "factor outside [0, 1]"
    elif mutation == "dtype":
        x = bad_array(draw, (n, c, h, w))
        expect, errors, why = "error", (TypeError,), "bad dtype"
    elif mutation == "ndim":
        x = np.ones((n, h, w))
        expect, errors, why = "error", (ValueError,), "3-D batch"
    elif mutation == "index" and n:
        index = index[:-1]
        expect, errors, why = "error", (ValueError,), "index of N-1"

    def oracle(result):
        xa = np.asarray(x)
        dt = design_dtype(xa)
        xf = xa.astype(dt)
        if kind == "crop":
            exp = ref.random_crop(xf, index, key, size, pad)
        elif kind == "translate":
            exp = ref.random_translation(xf, index, key, hf, wf)
        elif kind == "flip":
            exp = ref.random_horizontal_flip(xf, index, key, p)
        else:
            exp = ref.random_horizontal_flip(
                ref.random_crop(xf, index, key=ref.child_key(key, 0),
                                size=size, padding=pad),
                index, ref.child_key(key, 1), p)
        assert_result(result, exp.astype(np.float64), dt, exact=True)

    spec = (kind, size, pad, hf, wf, p)
    return Case((x, index, key), {"spec": spec}, expect, errors, why, oracle)


def apply_transform(x, index, key, spec):
    """The transform ``spec`` names, made and applied to ``x``."""
    kind, size, pad, hf, wf, p = spec
    if kind == "crop":
        t = RandomCrop(size, padding=pad)
    elif kind == "translate":
        t = RandomTranslation(hf, wf)
    elif kind == "flip":
        t = RandomHorizontalFlip(p)
    else:
        t = Compose([RandomCrop(size, padding=pad), RandomHorizontalFlip(p)])
    return t(x, index=index, key=key)


prop_transforms = fuzz_property(apply_transform, transform_cases())

test_property, _ = fuzzing.family_tests(globals(), extreme="EXTREME")
