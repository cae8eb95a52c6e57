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
    limit = cnnkit._ops.thread_policy()["limit"]
    default = cnnkit.get_num_threads()
    assert isinstance(default, int) and 1 <= default <= limit
    for n in (1, 3, 2, 7):
        cnnkit.set_num_threads(n)
        assert cnnkit.get_num_threads() == n
    cnnkit.set_num_threads(np.int64(5))
    assert cnnkit.get_num_threads() == 5
    cnnkit.set_num_threads(0)
    assert 1 <= cnnkit.get_num_threads() <= limit


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


HOG = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"

BUSY_CHILD = """
import os, sys, time
os.sched_setaffinity(0, {cpus})
import cnnkit
from cnnkit import functional as F
x = cnnkit.datasets.make_synthetic(64, (1, 12, 12), 2, seed=0)[0]
seen = []
for _ in range(12):
    time.sleep(0.05)
    F.relu(x)
    seen.append(cnnkit.get_num_threads())
pol = cnnkit._ops.thread_policy()
line = cnnkit._config._config()["thread policy"]
cnnkit.set_num_threads(2)
print(seen[-1], pol["limit"], pol["others"], cnnkit.get_num_threads())
print(line)
print(cnnkit._config._config()["thread policy"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the load is read from Linux's /proc/stat")
def test_the_default_thread_count_leaves_a_busy_cpu_to_its_process():
    # a process that may run on two CPUs, one of them held by a busy
    # process: the default count drops to one thread (a team of two would
    # wait for the thread that shares the busy CPU in every kernel); a
    # count set by the user stays as it is
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    two = set(cpus[:2])
    hog = subprocess.Popen([sys.executable, "-c", HOG],
                           preexec_fn=lambda: os.sched_setaffinity(
                               0, {cpus[1]}))
    try:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        out = subprocess.run(
            [sys.executable, "-c", BUSY_CHILD.format(cpus=two)], env=env,
            capture_output=True, text=True, check=True, timeout=120)
    finally:
        hog.kill()
        hog.wait()
    first, adaptive, fixed = out.stdout.strip().split("\n")
    last, limit, others, chosen = first.split()
    assert (last, limit, chosen) == ("1", "2", "2")
    assert float(others) > 0.5
    assert adaptive.startswith("follows the CPUs other processes leave free")
    assert fixed == "fixed by set_num_threads"


def test_omp_num_threads_fixes_the_count_however_busy_the_machine():
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-c", "import cnnkit\n"
         "print(cnnkit._config._config()['thread policy'])"],
        env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "fixed by OMP_NUM_THREADS"


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
