"""Thread control: cnnkit.set_num_threads / get_num_threads,
OMP_NUM_THREADS and threadpoolctl, and kernels in forked children.

(Each op family's tests hold its results bit-identical for 1, 2 and 3
threads; test_reliability.py does so for every kernel at once, for 7
threads and for whole training runs.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnkit

from helpers import require


@pytest.fixture(autouse=True)
def default_threads():
    cnnkit.set_num_threads(0)
    yield
    cnnkit.set_num_threads(0)


def test_get_num_threads_reflects_set_num_threads():
    default = cnnkit.get_num_threads()
    assert isinstance(default, int) and default >= 1
    for n in (1, 3, 2, 7):
        cnnkit.set_num_threads(n)
        assert cnnkit.get_num_threads() == n
    cnnkit.set_num_threads(np.int64(5))
    assert cnnkit.get_num_threads() == 5
    cnnkit.set_num_threads(0)
    assert cnnkit.get_num_threads() == default


@pytest.mark.parametrize("n", [-1, -8, np.int32(-2)])
def test_set_num_threads_rejects_negative(n):
    cnnkit.set_num_threads(3)
    with pytest.raises(ValueError, match=r"\bn must be in \[0, 4096\]"):
        cnnkit.set_num_threads(n)
    assert cnnkit.get_num_threads() == 3


@pytest.mark.parametrize("n", [1.5, 2.0, "2", None, True, False,
                               np.float64(2)])
def test_set_num_threads_rejects_non_int(n):
    cnnkit.set_num_threads(3)
    with pytest.raises(TypeError, match=r"\bn must be an int"):
        cnnkit.set_num_threads(n)
    assert cnnkit.get_num_threads() == 3


def test_threadpoolctl_limits_the_default():
    threadpoolctl = require("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cnnkit.get_num_threads() == 1
        cnnkit.set_num_threads(2)  # an explicit count wins over the limit
        assert cnnkit.get_num_threads() == 2
        cnnkit.set_num_threads(0)
        assert cnnkit.get_num_threads() == 1


@pytest.mark.parametrize("n", ["1", "3"])
def test_omp_num_threads_sets_the_default(n):
    env = dict(os.environ, OMP_NUM_THREADS=n)
    out = subprocess.run(
        [sys.executable, "-c",
         "import cnnkit; print(cnnkit.get_num_threads())"],
        env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == n


def _import_cnnkit(env, code="pass"):
    env = {k: v for k, v in env.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | {
        "OMP_DISPLAY_ENV": "true"}
    return subprocess.run(
        [sys.executable, "-c", "import os, cnnkit\n" + code], env=env,
        capture_output=True, text=True, check=True)


def test_idle_threads_sleep_unless_the_environment_says_otherwise():
    # spinning idle threads collapse on a busy machine; cnnkit sets the
    # passive policy for libgomp's start-up only, and never over the user's
    out = _import_cnnkit(dict(os.environ), code=(
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
        "print(cnnkit._config._config()['idle threads'])"))
    assert out.stdout.split("\n")[:2] == ["None",
                                          "passive (cnnkit's default)"]
    if "OPENMP DISPLAY ENVIRONMENT" in out.stderr:     # GNU OpenMP
        assert "OMP_WAIT_POLICY = 'PASSIVE'" in out.stderr
    env = dict(os.environ, OMP_WAIT_POLICY="ACTIVE")
    out = subprocess.run(
        [sys.executable, "-c", "import os, cnnkit\n"
         "print(os.environ['OMP_WAIT_POLICY'])\n"
         "print(cnnkit._config._config()['idle threads'])"],
        env=dict(env, OMP_DISPLAY_ENV="true"), capture_output=True,
        text=True, check=True)
    assert out.stdout.split("\n")[:2] == [
        "ACTIVE", "from the environment: OMP_WAIT_POLICY=ACTIVE"]
    if "OPENMP DISPLAY ENVIRONMENT" in out.stderr:
        assert "OMP_WAIT_POLICY = 'ACTIVE'" in out.stderr


FORK_SCRIPT = """
import multiprocessing as mp
import numpy as np
import cnnkit
from cnnkit import functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((16, 8, 32, 32)).astype(np.float32)
w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
expected = F.conv2d(x, w, padding=1)       # the parent runs a parallel region

def work(i):
    return cnnkit.get_num_threads(), F.conv2d(x, w, padding=1)

if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(work, range(4))
    for threads, y in results:
        assert threads == 1, threads
        assert np.array_equal(y, expected)
    assert cnnkit.get_num_threads() >= 1
    print("fork ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_children_run_single_threaded_and_do_not_hang(tmp_path):
    script = tmp_path / "fork_children.py"
    script.write_text(FORK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fork ok" in proc.stdout
