"""The ``cnnkit`` command line."""
import re
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
