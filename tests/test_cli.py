"""The ``cnnkit`` command line."""
import gzip
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import cli
from cnnkit.datasets import make_synthetic


def run(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:           # argparse: --help, --version, errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"cnnkit {cnnkit.__version__}"
    for cmd in ("train", "evaluate", "predict", "export", "info", "bench"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0 and f"usage: cnnkit {cmd}" in out


def test_default_train_reaches_98_percent_on_the_digits(tmp_path, capsys):
    out_file = tmp_path / "digits.cnnkit"
    code, out, _ = run(capsys, "train", "--quiet", "--out", str(out_file))
    assert code == 0
    acc = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert acc >= 0.98
    assert f"saved model: {out_file}" in out
    model = cnnkit.load_model(out_file)
    assert model.output_shape == (10,)


def test_train_evaluate_predict_round_trip(tmp_path, capsys):
    model_path = tmp_path / "m.cnnkit"
    code, out, _ = run(capsys, "train", "--epochs", "3", "--quiet",
                       "--optimizer", "sgd", "--lr", "0.05", "--threads", "1",
                       "--out", str(model_path))
    assert code == 0
    acc = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    code, out, _ = run(capsys, "evaluate", str(model_path))
    assert code == 0
    assert f"accuracy {acc:.4f}" in out           # same held-out split
    x, _ = cnnkit.datasets.load_digits()
    np.save(tmp_path / "imgs.npy", x[:5, 0])        # (n, H, W)
    code, out, _ = run(capsys, "predict", str(model_path),
                       str(tmp_path / "imgs.npy"))
    assert code == 0
    model = cnnkit.load_model(model_path)
    assert [int(v) for v in out.split()] == list(model.predict(x[:5]))
    code, _, _ = run(capsys, "predict", str(model_path),
                     str(tmp_path / "imgs.npy"), "--proba", "--out",
                     str(tmp_path / "p.npy"))
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"),
                               model.predict_proba(x[:5]), rtol=1e-6)
    np.save(tmp_path / "one.npy", x[0, 0])          # a single image
    code, out, _ = run(capsys, "predict", str(model_path),
                       str(tmp_path / "one.npy"))
    assert code == 0 and out.split() == [str(model.predict(x[:1])[0])]


def test_train_on_npz_data(tmp_path, capsys):
    xtr, ytr = make_synthetic(200, (1, 12, 12), 3, seed=0)
    xte, yte = make_synthetic(60, (1, 12, 12), 3, seed=1)
    data = tmp_path / "synth.npz"
    np.savez(data, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    code, out, _ = run(capsys, "train", "--data", str(data), "--epochs", "3",
                       "--quiet", "--out", str(tmp_path / "s.cnnkit"))
    assert code == 0
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) > 0.9
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "s.cnnkit"),
                       "--data", str(data))
    assert code == 0 and "synth test set" in out


def test_user_mistakes_are_one_line_and_exit_2(
        tmp_path, capsys, assert_user_error):
    missing = str(tmp_path / "nope.cnnkit")
    assert_user_error(*run(capsys, "evaluate", missing)[::2], "nope.cnnkit")
    bad = tmp_path / "bad.cnnkit"
    bad.write_bytes(b"not a model at all, just bytes")
    assert_user_error(*run(capsys, "predict", str(bad), "x.npy")[::2],
                      "bad.cnnkit")
    assert_user_error(*run(capsys, "train", "--epochs", "zero")[::2],
                      "--epochs")
    assert_user_error(*run(capsys, "train", "--lr", "-1")[::2], "--lr")
    assert_user_error(*run(capsys, "train", "--data",
                           str(tmp_path / "nowhere"))[::2], "nowhere")
    assert_user_error(*run(capsys, "frobnicate")[::2], "frobnicate")


def test_predict_rejects_images_of_the_wrong_shape(
        tmp_path, capsys, assert_user_error):
    model = cnnkit.Sequential([cnnkit.layers.Flatten(),
                               cnnkit.layers.Dense(3)],
                              input_shape=(1, 8, 8), seed=0)
    model.save(tmp_path / "m.cnnkit")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 5, 5)))
    assert_user_error(*run(capsys, "predict", str(tmp_path / "m.cnnkit"),
                           str(tmp_path / "x.npy"))[::2], "x.npy")
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    assert_user_error(*run(capsys, "predict", str(tmp_path / "m.cnnkit"),
                           str(tmp_path / "x.npz"))[::2], "x.npz")


def test_info_shows_config(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    for key in ("cnnkit:", "compiler:", "openmp:", "threads:", "simd path:"):
        assert key in out


def test_python_dash_m_and_console_script_entry():
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"cnnkit {cnnkit.__version__}"
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "evaluate",
                           "/nonexistent/model.cnnkit"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_bench_gemm_sweep(capsys, assert_user_error):
    code, out, _ = run(capsys, "bench", "--gemm", "--sizes", "64",
                       "--repeats", "1", "--threads", "1")
    assert code == 0
    assert "float32" in out and "float64" in out and "64" in out
    code, _, err = run(capsys, "bench", "--sizes", "64")
    assert_user_error(code, err, "--sizes goes with --gemm")


# ---------------------------------------------------------------------------
# the training record: evaluate tests on the images train held out
# ---------------------------------------------------------------------------
def test_evaluate_uses_the_split_the_model_was_trained_with(
        tmp_path, capsys, assert_user_error):
    path = str(tmp_path / "m.cnnkit")
    code, out, _ = run(capsys, "train", "--seed", "1", "--epochs", "2",
                       "--quiet", "--threads", "1", "--out", path)
    assert code == 0
    acc = re.search(r"test accuracy: ([0-9.]+)", out).group(1)
    record = cnnkit.load_model(path).metadata["training"]
    x, y = cnnkit.datasets.load_digits()
    assert record["data_kind"] == "digits"
    assert (record["seed"], record["test_size"]) == (1, 0.2)
    assert record["sha256"] == cli.fingerprint(x, y)
    assert (record["train_images"], record["test_images"]) == (1438, 359)
    assert record["epochs_completed"] == 2
    # no flags: the split of seed 1, not the default seed 0
    code, out, _ = run(capsys, "evaluate", path)
    assert code == 0
    assert f"accuracy {acc}" in out
    assert "the split it was trained with, seed 1, test size 0.2" in out
    code, out, _ = run(capsys, "evaluate", path, "--seed", "1",
                       "--test-size", "0.2")
    assert code == 0 and f"accuracy {acc}" in out
    # flags that would test on training images are refused
    assert_user_error(*run(capsys, "evaluate", path, "--seed", "0")[::2],
                      "--seed 0 contradicts", "seed 1", "leave out --seed")
    assert_user_error(*run(capsys, "evaluate", path, "--test-size",
                           "0.5")[::2], "--test-size 0.5", "test size 0.2")


def test_files_without_a_training_record_keep_the_defaults(tmp_path, capsys):
    model = cnnkit.cli.default_model((1, 8, 8), 10, seed=0)
    model.save(tmp_path / "old.cnnkit")
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "old.cnnkit"))
    assert code == 0 and "(359 images: seed 0, test size 0.2)" in out
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "old.cnnkit"),
                       "--seed", "3", "--test-size", "0.3")
    assert code == 0 and "(539 images: seed 3, test size 0.3)" in out


def test_split_flags_with_data_are_refused(tmp_path, capsys,
                                           assert_user_error):
    xtr, ytr = make_synthetic(60, (1, 8, 8), 3, seed=0)
    xte, yte = make_synthetic(20, (1, 8, 8), 3, seed=1)
    data = tmp_path / "synth.npz"
    np.savez(data, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    model_path = str(tmp_path / "s.cnnkit")
    assert_user_error(*run(capsys, "train", "--data", str(data),
                           "--test-size", "0.3", "--out", model_path)[::2],
                      "--test-size", "own test set", "leave out --test-size")
    assert not (tmp_path / "s.cnnkit").exists()
    code, _, _ = run(capsys, "train", "--data", str(data), "--epochs", "1",
                     "--seed", "4", "--quiet", "--out", model_path)
    assert code == 0
    record = cnnkit.load_model(model_path).metadata["training"]
    assert record["data"] == str(data) and record["data_kind"] == "npz"
    assert record["seed"] == 4 and record["test_size"] is None
    (x_tr, y_tr), (x_te, y_te) = cnnkit.datasets.load_mnist(data)
    assert record["sha256"] == cli.fingerprint(x_tr, y_tr, x_te, y_te)
    for flag, value in (("--seed", "4"), ("--test-size", "0.2")):
        assert_user_error(*run(capsys, "evaluate", model_path, "--data",
                               str(data), flag, value)[::2],
                          flag, "own test set")
    code, out, _ = run(capsys, "evaluate", model_path, "--data", str(data))
    assert code == 0 and "(20 images)" in out


# ---------------------------------------------------------------------------
# an interrupted or failed run never replaces a model file
# ---------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32",
                    reason="Popen.send_signal sends no SIGINT on Windows")
def test_ctrl_c_saves_beside_the_old_file(tmp_path):
    out_file = tmp_path / "digits.cnnkit"
    out_file.write_bytes(b"the model of an earlier run")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "train", "--epochs", "100000",
         "--threads", "1", "--out", str(out_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:            # one line per epoch off a tty
            if line.startswith("Epoch 2/"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == cli.EXIT_INTERRUPTED
    assert out_file.read_bytes() == b"the model of an earlier run"
    partial = tmp_path / "digits.partial.cnnkit"
    assert re.search(r"interrupted after [0-9]+ complete epochs? of 100000",
                     out)
    assert f"the model so far is saved in {partial}" in err
    assert f"{out_file} is left as it was" in err
    assert "Traceback" not in err
    model = cnnkit.load_model(partial)
    assert model.metadata["training"]["epochs_completed"] >= 1


def test_a_diverging_run_saves_beside_the_old_file(
        tmp_path, capsys, assert_user_error):
    out_file = tmp_path / "m.cnnkit"
    out_file.write_bytes(b"old")
    code, _, err = run(capsys, "train", "--epochs", "2", "--quiet",
                       "--optimizer", "sgd", "--lr", "1e30", "--out",
                       str(out_file))
    assert_user_error(code, err, "the loss became",
                      f"saved in {tmp_path / 'm.partial.cnnkit'}",
                      "is left as it was")
    assert out_file.read_bytes() == b"old"
    cnnkit.load_model(tmp_path / "m.partial.cnnkit")


def test_a_failing_run_saves_beside_and_keeps_the_traceback(
        tmp_path, capsys, monkeypatch):
    fit = cnnkit.Sequential.fit

    class Broken(cnnkit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("a bug")

    def broken_fit(self, *args, callbacks=(), **kwargs):
        return fit(self, *args, callbacks=list(callbacks) + [Broken()],
                   **kwargs)

    monkeypatch.setattr(cnnkit.Sequential, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train", "--epochs", "5", "--quiet", "--out",
                  str(tmp_path / "m.cnnkit")])
    err = capsys.readouterr().err
    assert "training failed; the model so far is saved in" in err
    assert not (tmp_path / "m.cnnkit").exists()
    partial = cnnkit.load_model(tmp_path / "m.partial.cnnkit")
    assert partial.metadata["training"]["epochs_completed"] == 2


def test_partial_path():
    assert cli.partial_path("digits.cnnkit") == "digits.partial.cnnkit"
    assert cli.partial_path("a/b.model") == "a/b.model.partial.cnnkit"


# ---------------------------------------------------------------------------
# files of another cnnkit version
# ---------------------------------------------------------------------------
def _as_written_by(src, dst, version, change):
    from cnnkit import _format
    tensors, meta = _format.load_file(src)
    meta["cnnkit_version"] = version
    change(meta)
    _format.save_file(dst, tensors, meta)
    return str(dst)


def test_predict_and_evaluate_a_file_with_an_unknown_optimizer(
        tmp_path, capsys):
    import json
    path = tmp_path / "m.cnnkit"
    assert run(capsys, "train", "--epochs", "1", "--quiet", "--out",
               str(path))[0] == 0
    newer = _as_written_by(path, tmp_path / "new.cnnkit", "0.2.0",
                           lambda meta: meta.update(optimizer=json.dumps(
                               {"class_name": "Lion", "lr": 1e-4})))
    x, _ = cnnkit.datasets.load_digits()
    np.save(tmp_path / "x.npy", x[:3])
    code, out, err = run(capsys, "predict", newer, str(tmp_path / "x.npy"))
    assert code == 0 and len(out.split()) == 3
    assert err.count("\n") == 1
    assert err.startswith("cnnkit predict: warning: ")
    assert "written by cnnkit 0.2.0; this is cnnkit" in err
    code, out, err = run(capsys, "evaluate", newer)
    assert code == 0 and "digits test set: accuracy" in out
    assert "written by cnnkit 0.2.0" in err


def test_unknown_layer_argument_names_the_versions(tmp_path, capsys,
                                                   assert_user_error):
    import json
    path = tmp_path / "m.cnnkit"
    cnnkit.cli.default_model((1, 8, 8), 10, seed=0).save(path)

    def reflected(meta):
        cfg = json.loads(meta["config"])
        cfg["layers"][0]["config"]["padding_mode"] = "reflect"
        meta["config"] = json.dumps(cfg)
    newer = _as_written_by(path, tmp_path / "new.cnnkit", "0.3.0", reflected)
    code, _, err = run(capsys, "evaluate", newer)
    assert_user_error(code, err, "unknown argument(s) ['padding_mode'] for Conv2D",
                      f"written by cnnkit 0.3.0; this is cnnkit "
                      f"{cnnkit.__version__}: upgrade cnnkit")
    assert "__init__()" not in err


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------
def test_export_refuses_float64_graphs_onnxruntime_cannot_run(
        tmp_path, capsys, assert_user_error):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    cnn = tmp_path / "cnn.cnnkit"
    cnnkit.cli.default_model((1, 8, 8), 10, seed=0).save(cnn)
    assert_user_error(*run(capsys, "export", str(cnn),
                           str(tmp_path / "a.onnx"), "--dtype",
                           "float64")[::2],
                      "--dtype float64", "Conv2D", "onnxruntime",
                      "--dtype float32")
    assert not (tmp_path / "a.onnx").exists()
    cnn64 = tmp_path / "cnn64.cnnkit"
    cnnkit.Sequential([cnnkit.layers.Conv2D(2, 3), cnnkit.layers.Flatten(),
                       cnnkit.layers.Dense(3)], input_shape=(1, 8, 8),
                      dtype="float64").save(cnn64)
    assert_user_error(*run(capsys, "export", str(cnn64),
                           str(tmp_path / "b.onnx"))[::2],
                      "cnn64.cnnkit is float64", "--dtype float32")
    code, _, _ = run(capsys, "export", str(cnn64), str(tmp_path / "b.onnx"),
                     "--dtype", "float32")
    assert code == 0
    # a float64 graph without those layers runs in onnxruntime
    mlp = tmp_path / "mlp.cnnkit"
    model = cnnkit.Sequential([cnnkit.layers.MaxPool2D(2),
                               cnnkit.layers.Flatten(),
                               cnnkit.layers.Dense(3)],
                              input_shape=(1, 8, 8), dtype="float64", seed=0)
    model.save(mlp)
    code, _, _ = run(capsys, "export", str(mlp), str(tmp_path / "m.onnx"),
                     "--dtype", "float64")
    assert code == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 1, 8, 8))
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(logits, model.forward(x), rtol=1e-12)


# ---------------------------------------------------------------------------
# files that are not what a flag takes, and images of another shape
# ---------------------------------------------------------------------------
def _idx_labels(n=3):
    return b"\0\0\x08\x01" + n.to_bytes(4, "big") + bytes(range(n))


@pytest.mark.parametrize("name, content, words", [
    ("train-labels-idx1-ubyte.gz", gzip.compress(_idx_labels()),
     ["an IDX file compressed with gzip", "pass the folder that holds the "
      "four MNIST IDX files"]),
    ("train-labels-idx1-ubyte", _idx_labels(),
     ["it is an IDX file", "pass the folder"]),
    ("data.txt", b"1 2 3\n4 5 6\n",
     ["not a zip file", "x_train, y_train, x_test, y_test", "the folder"]),
])
def test_data_that_is_not_an_npz_says_what_to_pass(
        tmp_path, capsys, assert_user_error, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = run(capsys, "train", "--data", str(path))
    assert_user_error(code, err, f"cannot read --data {path}", *words)
    assert "allow_pickle" not in err


def test_predict_says_what_the_images_file_is_not(tmp_path, capsys,
                                                  assert_user_error):
    model_path = tmp_path / "m.cnnkit"
    cnnkit.cli.default_model((1, 8, 8), 10, seed=0).save(model_path)
    text = tmp_path / "images.txt"
    text.write_text("0 1 2\n3 4 5\n")
    code, _, err = run(capsys, "predict", str(model_path), str(text))
    assert_user_error(code, err, "images.txt: it is a text file",
                      "reads one .npy array",
                      "numpy.loadtxt('" + str(text) + "')"
                      ".reshape(-1, 1, 8, 8)")
    assert "allow_pickle" not in err
    np.save(tmp_path / "objects.npy", np.array([1, None], dtype=object),
            allow_pickle=True)
    code, _, err = run(capsys, "predict", str(model_path),
                       str(tmp_path / "objects.npy"))
    assert_user_error(code, err, "holds Python objects")
    assert "allow_pickle" not in err


@pytest.mark.parametrize("shape, words", [
    ((5, 64), ["has shape (5, 64) (flat rows of 64 values)",
               "x.reshape(-1, 1, 8, 8)"]),
    ((5, 8, 8, 1), ["has shape (5, 8, 8, 1) (channels last",
                    "x.transpose(0, 3, 1, 2)"]),
    ((2, 1, 5, 5), ["(n, 1, 8, 8) or (n, 8, 8) for one channel, or one "
                    "image (1, 8, 8) or (8, 8); got (2, 1, 5, 5)"]),
])
def test_predict_reports_the_shape_of_the_file(tmp_path, capsys,
                                               assert_user_error, shape,
                                               words):
    model_path = tmp_path / "m.cnnkit"
    cnnkit.cli.default_model((1, 8, 8), 10, seed=0).save(model_path)
    np.save(tmp_path / "x.npy", np.zeros(shape))
    code, _, err = run(capsys, "predict", str(model_path),
                       str(tmp_path / "x.npy"))
    assert_user_error(code, err, "x.npy", *words)
    assert f"(1, {shape[0]}," not in err          # no shape it never made


# ---------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["train", "--batchsize", "64"],
     ["cnnkit train: error: unrecognized arguments: --batchsize 64",
      "did you mean --batch-size?", "(see 'cnnkit train --help')"]),
    (["train", "--batchsize=64"], ["did you mean --batch-size?"]),
    (["evaluate", "m.cnnkit", "--sed", "3"],
     ["cnnkit evaluate: error:", "did you mean --seed?",
      "'cnnkit evaluate --help'"]),
    (["predict", "m.cnnkit", "x.npy", "--probba"],
     ["cnnkit predict: error:", "did you mean --proba?"]),
    (["train", "--zzz"], ["cnnkit train: error: unrecognized arguments: "
                          "--zzz (see 'cnnkit train --help')"]),
])
def test_a_misspelt_flag_is_reported_by_its_command(capsys, argv, words,
                                                    assert_user_error):
    code, _, err = run(capsys, *argv)
    assert_user_error(code, err, *words)
    assert "'cnnkit --help'" not in err


def test_a_misspelt_flag_through_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "train",
                           "--batchsize", "64"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("cnnkit train: error: unrecognized arguments: "
                           "--batchsize 64; did you mean --batch-size? (see "
                           "'cnnkit train --help')\n")


def test_every_option_has_help(capsys):
    for cmd in ("train", "evaluate", "predict", "export", "bench"):
        parser = cli.build_parser()._subparsers._group_actions[0].choices[cmd]
        for action in parser._actions:
            assert action.help, (cmd, action.option_strings)


def test_counts_are_pluralised(tmp_path, capsys):
    path = str(tmp_path / "m.cnnkit")
    code, out, _ = run(capsys, "train", "--epochs", "1", "--quiet",
                       "--out", path)
    assert code == 0 and "(1 epoch, " in out and "epochs" not in out
    code, out, _ = run(capsys, "train", "--epochs", "2", "--quiet",
                       "--out", path)
    assert code == 0 and "(2 epochs, " in out


def test_a_malformed_training_record_is_one_line(tmp_path, capsys,
                                                 assert_user_error):
    model = cnnkit.cli.default_model((1, 8, 8), 10, seed=0)
    model.save(tmp_path / "m.cnnkit", metadata={"training": {
        "data_kind": "digits", "sha256": "0" * 64, "seed": "one",
        "test_size": 0.2}})
    assert_user_error(*run(capsys, "evaluate",
                           str(tmp_path / "m.cnnkit"))[::2],
                      "m.cnnkit has a malformed 'training' record")


def test_train_with_label_smoothing(tmp_path, capsys, assert_user_error):
    xtr, ytr = make_synthetic(120, (1, 10, 10), 3, seed=0)
    xte, yte = make_synthetic(40, (1, 10, 10), 3, seed=1)
    data = tmp_path / "synth.npz"
    np.savez(data, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    outs = {}
    for eps in ("0", "0.2"):
        path = tmp_path / f"s{eps}.cnnkit"
        code, out, _ = run(capsys, "train", "--data", str(data), "--epochs",
                           "1", "--quiet", "--threads", "1",
                           "--label-smoothing", eps, "--out", str(path))
        assert code == 0
        model = cnnkit.load_model(path)
        assert model.metadata["training"]["label_smoothing"] == float(eps)
        outs[eps] = model.get_weights()
    # the smoothed loss trains other weights
    assert any(not np.array_equal(a, b)
               for a, b in zip(outs["0"], outs["0.2"]))
    for bad in ("1.5", "-0.1", "x", "nan"):
        code, _, err = run(capsys, "train", "--data", str(data),
                           "--label-smoothing", bad)
        assert_user_error(code, err, "--label-smoothing")

def test_train_with_augment_records_it(tmp_path, capsys):
    out_file = tmp_path / "aug.cnnkit"
    code, out, _ = run(capsys, "train", "--epochs", "2", "--quiet",
                       "--threads", "1", "--augment", "crop:1,translate:0.2",
                       "--out", str(out_file))
    assert code == 0 and "test accuracy" in out
    record = cnnkit.load_model(out_file).metadata["training"]
    assert record["augment"] == {"class_name": "Compose", "config": {
        "transforms": [
            {"class_name": "RandomCrop",
             "config": {"size": None, "padding": [1, 1]}},
            {"class_name": "RandomTranslation",
             "config": {"height_factor": 0.2, "width_factor": 0.2}}]}}
    plain = tmp_path / "plain.cnnkit"
    assert run(capsys, "train", "--epochs", "2", "--quiet", "--threads",
               "1", "--out", str(plain))[0] == 0
    assert "augment" not in cnnkit.load_model(plain).metadata["training"]
    assert not np.array_equal(cnnkit.load_model(plain).flat_params,
                              cnnkit.load_model(out_file).flat_params)


@pytest.mark.parametrize("spec,match", [
    ("blur", "unknown step 'blur'"), ("crop:x", "'x' is not a whole number"),
    ("flip:3", r"p must be in \[0, 1\]"), ("", "empty")])
def test_train_refuses_bad_augment_specs(capsys, spec, match):
    code, _, err = run(capsys, "train", "--augment", spec)
    assert code == cli.EXIT_USAGE
    assert re.search(f"argument --augment: .*{match}", err)


def test_evaluate_uses_the_data_a_model_was_trained_on(tmp_path, capsys,
                                                       assert_user_error):
    xtr, ytr = make_synthetic(120, (1, 10, 10), 3, seed=0)
    xte, yte = make_synthetic(40, (1, 10, 10), 3, seed=1)
    data = tmp_path / "synth.npz"
    np.savez(data, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    model_path = tmp_path / "m.cnnkit"
    code, out, _ = run(capsys, "train", "--data", str(data), "--epochs", "2",
                       "--quiet", "--threads", "1", "--out", str(model_path))
    assert code == 0
    acc = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    code, out, err = run(capsys, "evaluate", str(model_path))
    assert code == 0 and not err
    assert f"synth test set: accuracy {acc:.4f}" in out
    assert "(40 images)" in out
    # the data changed since: evaluated all the same, with a warning
    np.savez(data, x_train=xtr, y_train=ytr, x_test=xte[::-1],
             y_test=yte[::-1])
    code, out, err = run(capsys, "evaluate", str(model_path))
    assert code == 0 and f"{data} has changed since" in err
    # the data is gone: say so and ask for --data
    data.unlink()
    code, _, err = run(capsys, "evaluate", str(model_path))
    assert_user_error(code, err, "was trained on --data")
    assert "give its test data with --data PATH" in err
