"""The choice of the GEMM engine's SIMD path (AVX-512, AVX2+FMA, generic):
CNNKIT_SIMD forces a path the CPU supports, an unknown or unsupported
request falls back with a warning, and build_info reports what runs.

The path is chosen once per process, so each request runs in a subprocess.
(The results of every path against the reference: test_conv2d.py and
test_dense.py.)
"""
import json
import os
import subprocess
import sys

import pytest

import cnnkit

from helpers import SIMD_PATHS as PATHS

INFO = cnnkit._kernels.build_info()
NAMES = {"avx512": "AVX-512", "avx2": "AVX2+FMA", "generic": "generic"}


def _run(env_simd, code):
    env = dict(os.environ)
    env.pop("CNNKIT_SIMD", None)
    if env_simd is not None:
        env["CNNKIT_SIMD"] = env_simd
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)


SMOKE = ("import numpy as np, cnnkit; from cnnkit import functional as F; "
         "x = np.ones((3, 5), np.float32); "
         "assert (F.dense(x, np.ones((4, 5), np.float32)) == 5).all(); "
         "print(cnnkit._kernels.build_info()['simd_request']); "
         "print(cnnkit._kernels.build_info()['simd_path'])")

INFO_JSON = ("import json, cnnkit; "
             "print(json.dumps(cnnkit._kernels.build_info()))")


@pytest.mark.parametrize("path", PATHS)
def test_forced_path_is_reported(path):
    out = _run(path, INFO_JSON)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["simd_request"] == "forced"
    assert info["simd_path"].startswith(NAMES[path])
    assert f"CNNKIT_SIMD={path}" in info["simd_path"]


def test_paths_built_and_supported():
    assert "generic" in PATHS
    built = INFO["simd_paths_built"]
    for p in PATHS:
        assert p in built


def test_unknown_request_falls_back_with_a_warning():
    out = _run("sse9", "import warnings; warnings.simplefilter('always'); "
               + SMOKE)
    assert out.returncode == 0, out.stderr
    how, label = out.stdout.split("\n")[:2]
    assert how == "unknown"
    assert label.startswith(NAMES[PATHS[0]])
    assert "RuntimeWarning" in out.stderr and "sse9" in out.stderr


@pytest.mark.skipif("avx512" in PATHS, reason="this CPU runs every path")
def test_unsupported_request_falls_back_with_a_warning():
    out = _run("avx512", "import warnings; warnings.simplefilter('always'); "
               + SMOKE)
    assert out.returncode == 0, out.stderr
    how, label = out.stdout.split("\n")[:2]
    assert how == "unsupported"
    assert label.startswith(NAMES[PATHS[0]])
    assert "RuntimeWarning" in out.stderr


def test_auto_and_case_insensitive_requests():
    out = _run("AUTO", SMOKE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "auto"
    out = _run(PATHS[-1].upper(), SMOKE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "forced"
