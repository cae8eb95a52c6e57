"""Sequential, layers, training loop, callbacks and saving."""
import os
import signal

import numpy as np
import pytest

import cnnkit
from cnnkit import layers as L
from cnnkit import reference as R
from cnnkit.callbacks import Callback, EarlyStopping, ModelCheckpoint


def make_task(n=240, seed=0, size=8):
    """Four classes: a bright bar in one of four places, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0.0, 0.3, (n, 1, size, size)).astype(np.float32)
    h = size // 2
    for i, c in enumerate(y):
        if c == 0:
            x[i, 0, :h, :] += 1.0
        elif c == 1:
            x[i, 0, h:, :] += 1.0
        elif c == 2:
            x[i, 0, :, :h] += 1.0
        else:
            x[i, 0, :, h:] += 1.0
    return x, y


def small_cnn(seed=0, dtype="float32", **kw):
    return cnnkit.Sequential([
        L.Conv2D(6, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Flatten(), L.Dense(16), L.ReLU(), L.Dense(4)],
        input_shape=(1, 8, 8), seed=seed, dtype=dtype, **kw)


# ---------------------------------------------------------------------------
# building and shapes
# ---------------------------------------------------------------------------
def test_shapes_and_parameter_layout():
    model = small_cnn()
    assert model.output_shape == (4,)
    assert [l.output_shape for l in model.layers] == [
        (6, 8, 8), (6, 8, 8), (6, 4, 4), (96,), (16,), (16,), (4,)]
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "4.weight", "4.bias", "6.weight",
                     "6.bias"]
    shapes = [p.shape for p in model.parameters()]
    assert shapes == [(6, 1, 3, 3), (6,), (16, 96), (16,), (4, 16), (4,)]
    assert model.count_params() == 6 * 9 + 6 + 16 * 96 + 16 + 4 * 16 + 4
    # parameters are views into one flat buffer
    for p in model.parameters():
        assert np.shares_memory(p, model.flat_params)
    # biases start at zero, He-initialised weights have the right scale
    assert not model.layers[0].params["bias"].any()
    w = model.layers[4].params["weight"]
    assert 0.5 * np.sqrt(2 / 96) < w.std() < 1.5 * np.sqrt(2 / 96)


def test_build_error_names_layer_and_shapes():
    with pytest.raises(ValueError, match=r"layer 3 \(Conv2D\).*\(4, 2, 2\)"):
        cnnkit.Sequential([L.Conv2D(4, 3), L.ReLU(), L.MaxPool2D(3),
                           L.Conv2D(4, 3)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="Dense expects .*Flatten"):
        cnnkit.Sequential([L.Conv2D(4, 3), L.Dense(3)], input_shape=(1, 8, 8))


def test_lazy_build_on_first_data():
    model = cnnkit.Sequential([L.Flatten(), L.Dense(3)], seed=1)
    assert not model.built
    x = np.zeros((2, 5, 5))                       # (n, H, W): one channel
    assert model.predict(x).shape == (2,)
    assert model.input_shape == (1, 5, 5)


def test_hyperparameter_validation():
    with pytest.raises(ValueError, match="filters"):
        L.Conv2D(0, 3)
    with pytest.raises(TypeError, match="kernel_size"):
        L.Conv2D(2, 2.5)
    with pytest.raises(ValueError, match="rate"):
        L.Dropout(1.0)
    with pytest.raises(ValueError, match="padding"):
        L.MaxPool2D(2, padding=2)
    with pytest.raises(TypeError, match="layer 1"):
        cnnkit.Sequential([L.ReLU(), "relu"])
    with pytest.raises(ValueError, match="dtype"):
        cnnkit.Sequential([L.ReLU()], dtype="int32")


# ---------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------
def test_weights_in_pytorch_layout_match_reference_forward():
    model = cnnkit.Sequential([
        L.Conv2D(3, (3, 2), stride=(2, 1), padding=1), L.ReLU(),
        L.MaxPool2D(2, stride=1), L.Conv2D(4, 2, dilation=2), L.ReLU(),
        L.Flatten(), L.Dense(5)], input_shape=(2, 9, 8), dtype="float64")
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal(p.shape) for p in model.parameters()]
    model.set_weights(weights)
    x = rng.standard_normal((3, 2, 9, 8))
    w0, b0, w1, b1, w2, b2 = weights
    h = R.relu(R.conv2d(x, w0, b0, stride=(2, 1), padding=1))
    h, _ = R.max_pool2d(h, 2, stride=1)
    h = R.relu(R.conv2d(h, w1, b1, dilation=2))
    expected = R.dense(h.reshape(3, -1), w2, b2)
    np.testing.assert_allclose(model(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.get_weights()[2], w1)


def test_whole_model_gradients_by_finite_differences():
    model = cnnkit.Sequential([
        L.Conv2D(3, 3, stride=2, padding=1), L.ReLU(),
        L.MaxPool2D(2, stride=1, padding=1), L.Conv2D(2, 2),
        L.AvgPool2D(2, stride=1, padding=1, count_include_pad=False),
        L.Flatten(), L.Dense(5), L.ReLU(), L.Dropout(0.0), L.Dense(3)],
        input_shape=(2, 7, 7), seed=4, dtype="float64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 7, 7))
    y = np.array([0, 2])

    def loss_at(flat):
        saved = model.flat_params.copy()
        model.flat_params[...] = flat
        loss, _ = cnnkit.functional.softmax_cross_entropy(model.forward(x),
                                                          y)
        model.flat_params[...] = saved
        return float(loss)

    logits = model.forward(x, training=True)
    _, g = cnnkit.functional.softmax_cross_entropy(logits, y)
    gx = model.backward(g)
    analytic = model.flat_grads.copy()
    flat = model.flat_params.copy()
    eps = 1e-6
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = eps
        num = (loss_at(flat + e) - loss_at(flat - e)) / (2 * eps)
        assert num == pytest.approx(analytic[i], rel=1e-5, abs=1e-8), i
    # and with respect to the input
    for idx in [(0, 0, 0, 0), (1, 1, 3, 4), (0, 1, 6, 6), (1, 0, 2, 5)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        lp = cnnkit.functional.softmax_cross_entropy(model.forward(xp), y)[0]
        lm = cnnkit.functional.softmax_cross_entropy(model.forward(xm), y)[0]
        assert (lp - lm) / (2 * eps) == pytest.approx(gx[idx], rel=1e-5,
                                                      abs=1e-8)


def test_global_average_pooling_model_gradients():
    model = cnnkit.Sequential([L.Conv2D(3, 3), L.ReLU(), L.AvgPool2D(2),
                               L.GlobalAvgPool2D(), L.Dense(2)],
                              input_shape=(1, 8, 8), seed=0, dtype="float64")
    assert model.output_shape == (2,)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    y = np.array([1, 0])
    logits = model.forward(x, training=True)
    _, g = cnnkit.functional.softmax_cross_entropy(logits, y)
    model.backward(g)
    analytic = model.flat_grads.copy()
    flat = model.flat_params.copy()
    for i in range(0, flat.size, 3):
        vals = []
        for sign in (1, -1):
            model.flat_params[...] = flat
            model.flat_params[i] += sign * 1e-6
            vals.append(cnnkit.functional.softmax_cross_entropy(
                model.forward(x), y)[0])
        model.flat_params[...] = flat
        assert (vals[0] - vals[1]) / 2e-6 == pytest.approx(
            analytic[i], rel=1e-5, abs=1e-9)


def test_dropout_is_seeded_inverted_and_off_in_inference():
    model = cnnkit.Sequential([L.Flatten(), L.Dropout(0.5)],
                              input_shape=(1, 20, 20), seed=0)
    x = np.ones((4, 1, 20, 20), dtype=np.float32)
    assert np.array_equal(model(x), x.reshape(4, -1))
    y = model.forward(x.reshape(4, 1, 20, 20), training=True)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    g = model.backward(np.ones_like(y))
    assert np.array_equal(g.reshape(4, -1), y)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def test_small_cnn_learns_separable_task():
    x, y = make_task()
    model = small_cnn(seed=0)
    hist = model.fit(x, y, epochs=8, batch_size=16,
                     optimizer=cnnkit.optim.Adam(1e-2), verbose=0)
    assert hist.history["accuracy"][-1] >= 0.98
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert model.evaluate(x, y)["accuracy"] >= 0.98
    assert np.array_equal(model.predict(x), model.predict_proba(x).argmax(1))
    np.testing.assert_allclose(model.predict_proba(x).sum(1), 1, rtol=1e-5)


def test_training_is_deterministic_for_a_seed():
    x, y = make_task(96)
    runs = []
    for _ in range(2):
        model = small_cnn(seed=7)
        hist = model.fit(x, y, epochs=2, batch_size=8, optimizer="sgd",
                         validation_split=0.25, verbose=0)
        runs.append((model.get_weights(), hist.history))
    for a, b in zip(runs[0][0], runs[1][0]):
        assert np.array_equal(a, b)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert runs[0][1][key] == runs[1][1][key]


def test_history_contents_and_validation():
    x, y = make_task(64)
    model = small_cnn()
    hist = model.fit(x, y, epochs=3, batch_size=32,
                     validation_data=(x[:16], y[:16]), verbose=0)
    assert hist.epoch == [0, 1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr",
                "seconds", "images_per_s"):
        assert len(hist.history[key]) == 3
    assert hist.history["val_loss"][-1] == pytest.approx(
        model.evaluate(x[:16], y[:16])["loss"], rel=1e-6)


def test_verbose_two_prints_one_line_per_epoch(capsys):
    x, y = make_task(32)
    small_cnn().fit(x, y, epochs=2, batch_size=8, verbose=2)
    out = capsys.readouterr()
    lines = [l for l in out.out.splitlines() if l.startswith("Epoch")]
    assert len(lines) == 2 and "loss:" in lines[0] and "img/s" in lines[0]
    assert "\r" not in out.out + out.err


def test_verbose_one_without_terminal_prints_clean_lines(capsys):
    x, y = make_task(32)
    small_cnn().fit(x, y, epochs=2, batch_size=8, verbose=1)
    out = capsys.readouterr()
    assert len([l for l in out.out.splitlines() if l.startswith("Epoch")]) == 2
    assert "\r" not in out.out + out.err


def test_progress_bar_keeps_one_order_of_fields(monkeypatch):
    import io
    import re

    from tqdm import tqdm

    from cnnkit import trainer
    screen = io.StringIO()

    def bar(verbose, epoch, epochs, nbatches):
        return tqdm(total=nbatches, file=screen, ascii=True, mininterval=0,
                    miniters=1)

    class Clock:                        # 0.3 s per reading: every batch posts
        now = 0.0

        @classmethod
        def perf_counter(cls):
            cls.now += 0.3
            return cls.now

    monkeypatch.setattr(trainer, "_progress_bar", bar)
    monkeypatch.setattr(trainer, "time", Clock)
    x, y = make_task(48)
    small_cnn().fit(x[:32], y[:32], epochs=2, batch_size=8, verbose=1,
                    validation_data=(x[32:], y[32:]))
    frames = [f for f in re.split(r"[\r\n]", screen.getvalue())
              if "loss=" in f]
    orders = {tuple(re.findall(r"([a-z_/]+)=", f)) for f in frames}
    assert orders == {("loss", "acc", "img/s"),
                      ("loss", "acc", "img/s", "val_loss", "val_acc")}, orders


def test_non_finite_loss_stops_and_keeps_weights():
    x, y = make_task(32)
    model = small_cnn()
    w = model.get_weights()
    w[-1][0] = np.inf                              # bias of the last layer
    model.set_weights(w)
    before = model.get_weights()
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)


def test_ctrl_c_stops_at_batch_boundary():
    x, y = make_task(64)
    model = small_cnn()

    class Interrupt(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    hist = model.fit(x, y, epochs=3, batch_size=8, callbacks=[Interrupt()],
                     verbose=0)
    assert hist.interrupted
    assert hist.epoch == []                        # stopped inside epoch 1
    assert np.isfinite(model.flat_params).all()
    assert model.predict(x).shape == (64,)
    # the handler is restored: a later fit runs normally
    assert model.fit(x, y, epochs=1, verbose=0).epoch == [0]


def test_early_stopping_restores_best_weights():
    model = small_cnn()
    es = EarlyStopping(monitor="val_loss", patience=1,
                       restore_best_weights=True)
    es.set_model(model)
    es.on_train_begin()
    best = None
    for epoch, val in enumerate([1.0, 0.5, 0.6, 0.7, 0.4]):
        model.flat_params[...] += 1.0                 # weights change each epoch
        es.on_epoch_end(epoch, {"val_loss": val})
        if epoch == 1:
            best = model.get_weights()
        if model.stop_training:
            break
    assert es.stopped_epoch == 3 and es.best_epoch == 1
    es.on_train_end()
    for a, b in zip(best, model.get_weights()):
        assert np.array_equal(a, b)


def test_early_stopping_in_fit_stops_training():
    x, y = make_task(32)
    model = small_cnn()
    es = EarlyStopping(monitor="loss", patience=0, min_delta=100.0)
    hist = model.fit(x, y, epochs=10, batch_size=8, callbacks=[es], verbose=0)
    assert hist.epoch == [0, 1]
    assert es.stopped_epoch == 1


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("xfun, yfun, exc, match", [
    (lambda x: x, lambda y: y + 4, ValueError, r"\[0, 4\)"),
    (lambda x: x, lambda y: -y - 1, ValueError, r"\[0, 4\)"),
    (lambda x: x, lambda y: y.astype(float), TypeError, "integer"),
    (lambda x: x, lambda y: y[:-1], ValueError, "shape"),
    (lambda x: np.where(x > 1.2, np.nan, x), lambda y: y, ValueError, "NaN"),
    (lambda x: x[:0], lambda y: y[:0], ValueError, "empty"),
    (lambda x: x[:, :, :7], lambda y: y, ValueError, r"\(1, 8, 8\)"),
    (lambda x: x.astype(complex), lambda y: y, TypeError, "complex"),
])
def test_fit_rejects_bad_input(xfun, yfun, exc, match):
    x, y = make_task(32)
    with pytest.raises(exc, match=match):
        small_cnn().fit(xfun(x), yfun(y), verbose=0)


def test_set_weights_checks_count_and_shapes():
    model = small_cnn()
    w = model.get_weights()
    with pytest.raises(ValueError, match="6 parameter arrays"):
        model.set_weights(w[:-1])
    w[2] = w[2].T
    with pytest.raises(ValueError, match="4.weight"):
        model.set_weights(w)


# ---------------------------------------------------------------------------
# summary and saving
# ---------------------------------------------------------------------------
def test_summary_table():
    model = small_cnn()
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    assert "conv2d_0 (Conv2D)" in text and "(None, 6, 8, 8)" in text
    assert "dense_6 (Dense)" in text and "(None, 4)" in text
    total = model.count_params()
    assert f"Total params: {total:,} ({total * 4 / 1024:.2f} KB)" in text
    assert "Non-trainable params: 0" in text


def test_save_load_round_trip(tmp_path):
    x, y = make_task(48)
    model = small_cnn()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "m.cnnkit"
    model.save(path)
    loaded = cnnkit.load_model(path)
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.get_config() == model.get_config()
    assert type(loaded.optimizer) is type(model.optimizer)


def test_resume_training_from_file_is_identical(tmp_path):
    x, y = make_task(48)
    straight = small_cnn(seed=2)
    straight.fit(x, y, epochs=3, batch_size=16, shuffle=False,
                 optimizer=cnnkit.optim.Adam(1e-2), verbose=0)
    resumed = small_cnn(seed=2)
    resumed.fit(x, y, epochs=2, batch_size=16, shuffle=False,
                optimizer=cnnkit.optim.Adam(1e-2), verbose=0)
    resumed.save(tmp_path / "m.cnnkit")
    resumed = cnnkit.load_model(tmp_path / "m.cnnkit")
    resumed.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        assert np.array_equal(a, b)


def test_damaged_file_is_refused(tmp_path):
    model = small_cnn()
    path = tmp_path / "m.cnnkit"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "cut.cnnkit").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="cut.cnnkit"):
        cnnkit.load_model(tmp_path / "cut.cnnkit")
    (tmp_path / "junk.cnnkit").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError):
        cnnkit.load_model(tmp_path / "junk.cnnkit")


def test_architecture_and_weights_are_cross_checked(tmp_path):
    from cnnkit import _format
    model = small_cnn()
    tensors = model.state_dict()
    cfg = model.get_config()
    tensors["4.weight"] = tensors["4.weight"][:, :-1].copy()
    _format.save_file(tmp_path / "a.cnnkit", tensors,
                      _format.pack_metadata("model", cfg))
    with pytest.raises(ValueError, match="4.weight"):
        cnnkit.load_model(tmp_path / "a.cnnkit")
    cfg["layers"][0]["class_name"] = "os.system"
    _format.save_file(tmp_path / "b.cnnkit", model.state_dict(),
                      _format.pack_metadata("model", cfg))
    with pytest.raises(ValueError, match="unknown type 'os.system'"):
        cnnkit.load_model(tmp_path / "b.cnnkit")


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    model = small_cnn(seed=1)
    path = tmp_path / "m.cnnkit"
    model.save(path)
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        small_cnn(seed=2).save(path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cnnkit"]


def test_save_keeps_metadata_and_the_writing_version(tmp_path):
    import pickle

    from cnnkit import _format
    model = small_cnn()
    assert model.metadata == {}
    record = {"data": "digits", "seed": 1, "test_size": 0.2,
              "sizes": [1437, 360], "note": None, "split": {"stratify": True}}
    model.save(tmp_path / "m.cnnkit", metadata=record)
    loaded = cnnkit.load_model(tmp_path / "m.cnnkit")
    assert loaded.metadata == record
    assert pickle.loads(pickle.dumps(loaded)).metadata == record
    _, meta = _format.load_file(tmp_path / "m.cnnkit")
    assert meta["cnnkit_version"] == cnnkit.__version__
    # a loaded model writes what it was loaded with again, unless told
    loaded.save(tmp_path / "again.cnnkit")
    assert cnnkit.load_model(tmp_path / "again.cnnkit").metadata == record
    loaded.save(tmp_path / "none.cnnkit", metadata={})
    assert cnnkit.load_model(tmp_path / "none.cnnkit").metadata == {}
    # a file without metadata (written before it existed) loads as before
    _format.save_file(tmp_path / "old.cnnkit", model.state_dict(),
                      _format.pack_metadata("model", model.get_config()))
    assert cnnkit.load_model(tmp_path / "old.cnnkit").metadata == {}


@pytest.mark.parametrize("metadata, exc, match", [
    ({"x": np.float32(1)}, TypeError, "JSON"),
    ({"x": float("nan")}, ValueError, "JSON"),
    ({1: "a"}, TypeError, "keys must be str"),
    ([("a", "b")], TypeError, "dict"),
])
def test_save_refuses_metadata_json_cannot_hold(tmp_path, metadata, exc,
                                                match):
    with pytest.raises(exc, match=match):
        small_cnn().save(tmp_path / "m.cnnkit", metadata=metadata)
    assert not (tmp_path / "m.cnnkit").exists()


def _rewrite(src, dst, version=None, config=None, optimizer=None):
    """Copy the model file ``src`` to ``dst`` as another cnnkit ``version``
    would have written it, with a changed architecture or optimizer."""
    import json

    from cnnkit import _format
    tensors, meta = _format.load_file(src)
    if version is None:
        meta.pop("cnnkit_version")
    else:
        meta["cnnkit_version"] = version
    if config is not None:
        cfg = json.loads(meta["config"])
        config(cfg)
        meta["config"] = json.dumps(cfg)
    if optimizer is not None:
        meta["optimizer"] = json.dumps(optimizer)
    _format.save_file(dst, tensors, meta)
    return dst


def test_unknown_layer_argument_names_it_and_the_versions(tmp_path):
    small_cnn().save(tmp_path / "m.cnnkit")

    def reflected(cfg):
        cfg["layers"][0]["config"]["padding_mode"] = "reflect"
    path = _rewrite(tmp_path / "m.cnnkit", tmp_path / "new.cnnkit",
                    version="0.3.0", config=reflected)
    with pytest.raises(ValueError) as info:
        cnnkit.load_model(path)
    message = str(info.value)
    assert "__init__" not in message
    assert "unknown argument(s) ['padding_mode'] for Conv2D" in message
    assert "kernel_size" in message                  # what Conv2D takes
    assert (f"written by cnnkit 0.3.0; this is cnnkit "
            f"{cnnkit.__version__}: upgrade cnnkit") in message


def test_unknown_layer_type_names_the_versions(tmp_path):
    small_cnn().save(tmp_path / "m.cnnkit")

    def conv3d(cfg):
        cfg["layers"][0]["class_name"] = "Conv3D"
    path = _rewrite(tmp_path / "m.cnnkit", tmp_path / "new.cnnkit",
                    version="1.0.0rc1", config=conv3d)
    with pytest.raises(ValueError, match=r"unknown type 'Conv3D'.*written "
                       r"by cnnkit 1\.0\.0rc1; this is cnnkit"):
        cnnkit.load_model(path)
    path = _rewrite(tmp_path / "m.cnnkit", tmp_path / "unsaid.cnnkit",
                    version=None, config=conv3d)
    with pytest.raises(ValueError, match="does not say which cnnkit wrote"):
        cnnkit.load_model(path)


def test_unknown_optimizer_of_another_version_loads_without_it(tmp_path):
    x, y = make_task(32)
    model = small_cnn()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.cnnkit", metadata={"seed": 1})
    lion = {"class_name": "Lion", "lr": 1e-4, "betas": [0.9, 0.99]}
    path = _rewrite(tmp_path / "m.cnnkit", tmp_path / "new.cnnkit",
                    version="0.2.0", optimizer=lion)
    with pytest.warns(UserWarning, match=r"written by cnnkit 0\.2\.0; this "
                      r"is cnnkit .*'Lion'.*model\.optimizer is None"):
        loaded = cnnkit.load_model(path)
    assert loaded.optimizer is None
    assert loaded.metadata == {"seed": 1}
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    # an optimizer argument this version does not know: the same
    adam = dict(model.optimizer.get_config(), amsgrad=True)
    path = _rewrite(tmp_path / "m.cnnkit", tmp_path / "new2.cnnkit",
                    version="0.2.0", optimizer=adam)
    with pytest.warns(UserWarning, match="amsgrad"):
        assert cnnkit.load_model(path).optimizer is None
    # in a file of this very version it is damage, and refused
    path = _rewrite(tmp_path / "m.cnnkit", tmp_path / "same.cnnkit",
                    version=cnnkit.__version__, optimizer=lion)
    with pytest.raises(ValueError, match=r"invalid optimizer state.*"
                       r"'Lion'.*written by cnnkit"):
        cnnkit.load_model(path)


def test_model_checkpoint_best_only(tmp_path):
    x, y = make_task(48)
    model = small_cnn()
    ckpt = ModelCheckpoint(tmp_path / "best-{epoch}.cnnkit", monitor="loss",
                           save_best_only=True)
    model.fit(x, y, epochs=3, batch_size=16, callbacks=[ckpt], verbose=0,
              optimizer=cnnkit.optim.Adam(1e-2))
    assert len(ckpt.saved) >= 1
    assert all(os.path.exists(p) for p in ckpt.saved)
    last = cnnkit.load_model(ckpt.saved[-1])
    assert last.predict(x).shape == (48,)


def test_sample_weight_equals_repeating_samples():
    x, y = make_task(24)
    reps = np.random.default_rng(1).integers(0, 3, 24)
    runs = []
    for xs, ys, sw in [(x, y, reps),
                       (np.repeat(x, reps, axis=0), np.repeat(y, reps), None)]:
        model = small_cnn(seed=3, dtype="float64")
        hist = model.fit(xs, ys, epochs=3, batch_size=1000, shuffle=False,
                         optimizer=cnnkit.optim.SGD(0.1), sample_weight=sw,
                         verbose=0)
        runs.append((model.get_weights(), hist.history["loss"]))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-10)


def test_sample_weight_validation():
    x, y = make_task(16)
    with pytest.raises(ValueError, match="sample_weight"):
        small_cnn().fit(x, y, sample_weight=-np.ones(16), verbose=0)
    with pytest.raises(ValueError, match=r"\(16,\)"):
        small_cnn().fit(x, y, sample_weight=np.ones(15), verbose=0)


def test_initial_epoch_resumes_schedules():
    x, y = make_task(32)
    model = small_cnn()
    opt = cnnkit.optim.SGD(0.1, schedule=cnnkit.optim.StepLR(1, 0.5))
    hist = model.fit(x, y, epochs=2, optimizer=opt, verbose=0)
    assert hist.epoch == [0, 1] and hist.history["lr"] == [0.1, 0.05]
    hist = model.fit(x, y, epochs=4, initial_epoch=2, verbose=0)
    assert hist.epoch == [2, 3] and hist.history["lr"] == [0.025, 0.0125]


def test_layers_take_what_the_functional_api_takes():
    """The layers' direct path to the kernels falls back to
    cnnkit.functional for inputs it does not cover."""
    from cnnkit import functional as F
    x = np.linspace(-2, 2, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    swapped = x.astype(">f4")
    relu = L.ReLU()
    assert np.array_equal(relu.forward(swapped), F.relu(swapped))
    pool = L.MaxPool2D(2)
    assert np.array_equal(pool.forward(swapped, training=True),
                          F.max_pool2d(swapped, 2)[0])
    ints = (x * 10).astype(np.int64)
    assert np.array_equal(relu.forward(ints), F.relu(ints))


# ---------------------------------------------------------------------------
# Conv2D + ReLU fused; buffers kept between training steps
# ---------------------------------------------------------------------------
def deep_cnn(seed=0, dtype="float32"):
    return cnnkit.Sequential([
        L.Conv2D(6, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(8, 3, padding=1), L.ReLU(), L.Conv2D(8, 1), L.ReLU(),
        L.Flatten(), L.Dense(16), L.ReLU(), L.Dense(4)],
        input_shape=(1, 8, 8), seed=seed, dtype=dtype)


def _layer_by_layer(model, x, training):
    for layer in model.layers:
        x = layer.forward(x, training)
    return x


def _back_layer_by_layer(model, grad):
    for layer in reversed(model.layers):
        grad = layer.backward(grad)
    return grad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_conv_relu_has_the_bits_of_the_two_layers(dtype):
    x, y = make_task(20)
    x = x.astype(dtype)
    x[0, 0, 0, 0], x[1, 0, 3, 3], x[2, 0, 5, 1] = np.nan, np.inf, -np.inf
    model = deep_cnn(dtype=dtype)
    forward_plan = model._graph.forward_plan
    backward_plan = model._graph.backward_plan
    assert [type(layer).__name__ for layer, (step, _) in
            zip(model.layers, forward_plan) if step != "plain"] == \
        ["Conv2D", "ReLU", "Conv2D", "ReLU", "Conv2D", "ReLU"]
    assert [type(layer).__name__ for layer, step in
            zip(model.layers, backward_plan) if step[0] != "plain"] == \
        ["ReLU", "MaxPool2D"]
    for training in (False, True):
        fused = model.forward(x, training)
        plain = _layer_by_layer(model, x, training)
        assert fused.tobytes() == plain.tobytes()
    # gradients: the folded ReLU keeps the fused output, which is positive
    # exactly where its input was; the max pool after a ReLU masks its
    # scatter as the ReLU's backward would
    x = np.nan_to_num(x, nan=0.0, posinf=3.0, neginf=-3.0)
    x[3] = -1.0         # a plane of zeros after the first ReLU: ties at 0
    grads = []
    for fused in (True, False):
        if fused:
            logits = model.forward(x, True)
        else:
            logits = _layer_by_layer(model, x, True)
        _, g = cnnkit.functional.softmax_cross_entropy(logits, y)
        gx = model.backward(g) if fused else _back_layer_by_layer(model, g)
        grads.append((gx.tobytes(), model.flat_grads.tobytes()))
    assert grads[0] == grads[1]


def test_fit_with_fusion_equals_fit_without():
    x, y = make_task(96)
    weights = []
    for fuse in (True, False):
        model = deep_cnn(seed=3)
        if not fuse:                            # every layer on its own
            plain = [("plain", None)] * len(model.layers)
            model._graph.forward_plan = model._graph.backward_plan = plain
        model.fit(x, y, epochs=2, batch_size=16, optimizer="sgd", verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert a.tobytes() == b.tobytes()


class _StepMemory(Callback):
    """Peak memory traced during each training step, above the start."""

    def __init__(self):
        super().__init__()
        self.peaks = []
        self.base = None

    def on_batch_end(self, batch, logs):
        import tracemalloc
        if self.base is not None:
            self.peaks.append(tracemalloc.get_traced_memory()[1] - self.base)
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]


@pytest.mark.parametrize("fit_kw", [
    {},                                              # 8 shards, shuffled
    {"shuffle": False},
    {"distributed": cnnkit.distributed.DataParallel(shards=1)},
    {"sample_weight": "ones"},
    {"dropout": 0.25},
    {"dropout": 0.25, "distributed": cnnkit.distributed.DataParallel(
        shards=1)},
])
def test_training_steps_allocate_no_arrays_after_the_first(fit_kw):
    import tracemalloc
    x, y = make_task(16 * 6, size=16)
    fit_kw = dict(fit_kw)
    if fit_kw.get("sample_weight") == "ones":
        fit_kw["sample_weight"] = np.linspace(0.5, 1.5, len(y))
    drop = [L.Dropout(fit_kw.pop("dropout"))] if "dropout" in fit_kw else []
    model = cnnkit.Sequential([
        L.Conv2D(8, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(8, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Flatten(), L.Dense(32), L.ReLU()] + drop + [L.Dense(4)],
        input_shape=(1, 16, 16), seed=0)
    probe = _StepMemory()
    tracemalloc.start()
    try:
        model.fit(x, y, epochs=2, batch_size=16, optimizer="sgd", verbose=0,
                  callbacks=[probe], **fit_kw)
    finally:
        tracemalloc.stop()
    # The arrays one step writes take about 490 KiB (the first conv's
    # output alone is 16*8*16*16*4 = 128 KiB); later steps reuse them and
    # allocate only a few small Python objects.
    assert len(probe.peaks) == 11
    assert max(probe.peaks) < 8192, probe.peaks
    # the kept arrays belong to the training loop, not to the layers
    assert not any(isinstance(v, dict) and v and k not in ("params", "grads")
                   for layer in model.layers for k, v in vars(layer).items())


def test_fusion_follows_layers_replaced_in_place():
    x, _ = make_task(8)
    model = deep_cnn()
    want = _layer_by_layer(model, x, False)
    assert model.forward(x).tobytes() == want.tobytes()
    # the ReLU after the first Conv2D replaced by an equivalent layer that
    # the model does not fuse: the plan is made again
    relu = model.layers[1]
    model.layers[1] = L.Dropout(0.0)
    model.layers[1].build(relu.input_shape)
    y = model.forward(x)
    model.layers[1] = relu
    assert (y < 0).any()             # the conv output, without the ReLU
    assert model.forward(x).tobytes() == want.tobytes()


def test_a_copy_made_while_training_keeps_no_buffers():
    import copy
    x, y = make_task(32)
    model = small_cnn()
    copies = []

    class Snapshot(Callback):
        def on_batch_end(self, batch, logs):
            if batch == 1:
                copies.append([copy.deepcopy(layer) for layer in
                               model.layers])

    model.fit(x, y, epochs=1, batch_size=8, optimizer="sgd", verbose=0,
              callbacks=[Snapshot()])
    # the kept arrays belong to the training loop: a copy of a layer takes
    # its parameters and what it keeps for backward, nothing else
    for layer in copies[0]:
        arrays = {k for k, v in vars(layer).items()
                  if isinstance(v, (dict, np.ndarray)) and len(v)}
        assert arrays <= {"params", "grads", "_x", "_y", "_idx"}, arrays


def test_outputs_outside_training_are_new_arrays():
    x, y = make_task(32)
    model = small_cnn()
    model.fit(x, y, epochs=1, batch_size=8, optimizer="sgd", verbose=0)
    a = model.forward(x[:8])
    b = model.forward(x[8:16])
    assert a is not b and not np.shares_memory(a, b)
    assert np.array_equal(a, model.forward(x[:8]))
    p = model.predict_proba(x)
    assert np.array_equal(p[:8], model.predict_proba(x[:8]))


# ---------------------------------------------------------------------------
# the shapes a built model takes (cnnkit._inputs)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape, batch", [
    ((5, 1, 8, 8), (5, 1, 8, 8)), ((5, 8, 8), (5, 1, 8, 8)),
    ((1, 8, 8), (1, 1, 8, 8)), ((8, 8), (1, 1, 8, 8)),
])
def test_as_batch_takes_batches_and_one_image(shape, batch):
    from cnnkit._inputs import as_batch
    x = np.arange(np.prod(shape)).reshape(shape)
    out = as_batch(x, (1, 8, 8))
    assert out.shape == batch and np.shares_memory(out, x)
    assert np.array_equal(out.reshape(-1), x.reshape(-1))
    rgb = np.zeros((3, 8, 8))
    assert as_batch(rgb, (3, 8, 8)).shape == (1, 3, 8, 8)
    assert as_batch(np.zeros((2, 16)), (16,)).shape == (2, 16)
    assert as_batch(np.zeros(16), (16,)).shape == (1, 16)


@pytest.mark.parametrize("shape, input_shape, words", [
    ((5, 64), (1, 8, 8), ["x has shape (5, 64)", "flat rows of 64 values",
                          "x.reshape(-1, 1, 8, 8)"]),
    ((64,), (1, 8, 8), ["x has shape (64,)", "x.reshape(1, 1, 8, 8)"]),
    ((5, 8, 8, 1), (1, 8, 8), ["x has shape (5, 8, 8, 1)", "channels last",
                               "x.transpose(0, 3, 1, 2)"]),
    ((5, 8, 8, 3), (3, 8, 8), ["channels last", "x.transpose(0, 3, 1, 2)"]),
    ((8, 8, 3), (3, 8, 8), ["one image, channels last",
                            "x.transpose(2, 0, 1)"]),
    ((2, 1, 5, 5), (1, 8, 8), ["x must have shape (n, 1, 8, 8) or (n, 8, 8) "
                               "for one channel, or one image (1, 8, 8) or "
                               "(8, 8); got (2, 1, 5, 5)"]),
    ((5, 8, 8), (3, 8, 8), ["x must have shape (n, 3, 8, 8), or one image "
                            "(3, 8, 8); got (5, 8, 8)"]),
])
def test_as_batch_names_the_shape_it_was_given(shape, input_shape, words):
    from cnnkit._inputs import as_batch
    with pytest.raises(ValueError) as info:
        as_batch(np.zeros(shape), input_shape)
    for w in words:
        assert w in str(info.value), (w, str(info.value))



def test_predict_takes_one_image_as_the_command_line_does():
    x, _ = make_task(4)
    model = small_cnn()
    assert model.predict(x[0, 0]).tolist() == model.predict(x[:1]).tolist()
    assert np.array_equal(model.predict_proba(x[0]),
                          model.predict_proba(x[:1]))


@pytest.mark.parametrize("x, hint", [
    (np.zeros((5, 64)), "x.reshape(-1, 1, 8, 8)"),
    (np.zeros((5, 8, 8, 1)), "x.transpose(0, 3, 1, 2)"),
])
def test_predict_says_how_to_fix_flat_or_channels_last_input(x, hint):
    with pytest.raises(ValueError, match=r"x has shape \(5, "):
        small_cnn().predict(x)
    with pytest.raises(ValueError) as info:
        small_cnn().evaluate(x, np.zeros(5, np.int64))
    assert hint in str(info.value)


# ---------------------------------------------------------------------------
# label smoothing in fit
# ---------------------------------------------------------------------------
def _smoothing_model():
    return cnnkit.Sequential([L.Flatten(), L.Dense(3)], input_shape=(1, 2, 3),
                             seed=0, dtype="float64")


@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0])
def test_fit_label_smoothing_trains_on_the_smoothed_loss(eps):
    """One SGD step (lr 1, one batch) moves the weights by minus the
    gradient of the label-smoothed loss; the history's loss is that loss."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 1, 2, 3))
    y = rng.integers(0, 3, 10)
    model = _smoothing_model()
    w0, b0 = (a.copy() for a in model.get_weights())
    x2 = x.reshape(10, -1)
    loss, g = R.softmax_cross_entropy(x2 @ w0.T + b0, y, label_smoothing=eps)
    history = model.fit(x, y, epochs=1, batch_size=10, shuffle=False,
                        optimizer=cnnkit.optim.SGD(1.0), verbose=0,
                        label_smoothing=eps)
    w1, b1 = model.get_weights()
    np.testing.assert_allclose(w1, w0 - g.T @ x2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b1, b0 - g.sum(axis=0), rtol=1e-12,
                               atol=1e-14)
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-12)


def test_fit_label_smoothing_zero_is_the_plain_fit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 1, 2, 3))
    y = rng.integers(0, 3, 20)
    runs = []
    for kwargs in ({}, {"label_smoothing": 0.0}, {"label_smoothing": 0}):
        model = _smoothing_model()
        h = model.fit(x, y, epochs=2, batch_size=8, verbose=0, **kwargs)
        runs.append((model.get_weights(), h.history["loss"]))
    for weights, loss in runs[1:]:
        assert loss == runs[0][1]
        for a, b in zip(weights, runs[0][0]):
            assert a.tobytes() == b.tobytes()


def test_fit_label_smoothing_validation_and_evaluate():
    """val_loss is the smoothed loss fit trains with (as PyTorch's and
    Keras's loops report their criterion); evaluate stays plain."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 1, 2, 3))
    y = rng.integers(0, 3, 12)
    model = _smoothing_model()
    h = model.fit(x, y, epochs=1, batch_size=4, verbose=0,
                  validation_data=(x[:6], y[:6]), label_smoothing=0.4)
    logits = model.forward(x[:6])
    smoothed = R.softmax_cross_entropy(logits, y[:6], label_smoothing=0.4)[0]
    plain = R.softmax_cross_entropy(logits, y[:6])[0]
    assert h.history["val_loss"][0] == pytest.approx(smoothed, rel=1e-12)
    assert model.evaluate(x[:6], y[:6])["loss"] == pytest.approx(plain,
                                                                 rel=1e-12)


@pytest.mark.parametrize("bad,exc", [(1.5, ValueError), (-0.1, ValueError),
                                     (float("nan"), ValueError),
                                     ("0.1", TypeError), (None, TypeError),
                                     (True, TypeError)])
def test_fit_label_smoothing_errors_leave_the_model_alone(bad, exc):
    model = _smoothing_model()
    before = [a.copy() for a in model.get_weights()]
    with pytest.raises(exc, match="label_smoothing must be"):
        model.fit(np.zeros((4, 1, 2, 3)), np.zeros(4, int), verbose=0,
                  label_smoothing=bad)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer is None
