"""Every SIMD path of the GEMM engine (AVX-512, AVX2+FMA, generic) against
the NumPy reference, on shapes that hit every edge of the tiling, plus
bit-identical results for 1, 2 and 3 threads and batch independence on each
path.

The path is chosen once per process, so each one runs in a subprocess with
CNNKIT_SIMD set; only the paths this machine supports are run.
"""
import json
import os
import subprocess
import sys

import pytest

import cnnkit

INFO = cnnkit._kernels.build_info()
PATHS = INFO["simd_paths_supported"]
NAMES = {"avx512": "AVX-512", "avx2": "AVX2+FMA", "generic": "generic"}

# Runs inside the subprocess; prints one JSON object.
CHECKER = r'''
import json
import numpy as np
import cnnkit
from cnnkit import functional as F
from cnnkit import reference as R

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
failures = []
checked = 0


def close(name, actual, expected, dtype, n_terms):
    global checked
    checked += 1
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.dtype != dtype or actual.shape != expected.shape:
        failures.append(f"{name}: dtype/shape {actual.dtype} {actual.shape}")
        return
    rtol = RTOL[np.dtype(dtype)]
    scale = float(np.max(np.abs(expected), initial=0.0))
    atol = rtol * scale * np.sqrt(n_terms)
    err = np.abs(actual.astype(np.float64) - expected)
    bad = err > atol + rtol * np.abs(expected)
    if bad.any() or not np.isfinite(actual).all():
        failures.append(f"{name}: max error {err.max():.3g} > {atol:.3g}")


rng = np.random.default_rng(7)

# dense (n, f, o): row tiles MR 6 / 12 and blocks MC 96 / 120, column
# strips NR 8 / 16 / 32 and panels NC 1024, slabs KC 256 / 512 (forward's inner
# size is f, grad-x's is o, grad-w's is n), batch 1
DENSE = [(1, 1, 1), (5, 7, 11), (13, 257, 33), (7, 300, 17), (121, 40, 9),
         (97, 513, 1025), (1, 1030, 3), (259, 20, 35), (11, 31, 63)]
# conv2d (n, c, h, w, k, r, s, stride, pad, dil)
CONV = [(1, 3, 9, 9, 5, 3, 3, 1, 1, 1),        # batch 1
        (2, 29, 8, 7, 13, 3, 3, 1, 1, 1),      # C*R*S = 261 > KC, K = MR + 1
        (3, 4, 11, 10, 7, 1, 1, 1, 0, 1),      # 1x1, read in place
        (2, 5, 13, 12, 17, 3, 2, 2, 1, 1),     # stride 2, 3x2 kernel
        (2, 3, 15, 14, 6, 3, 3, 1, 2, 2),      # dilation 2, padding 2
        (1, 2, 40, 40, 33, 3, 3, 1, 1, 1),     # 1600 pixels > a block
        (2, 8, 17, 17, 121, 1, 1, 2, 0, 1),    # K = 121 > MC, 1x1 stride 2
        (1, 2, 6, 6, 260, 3, 3, 1, 1, 1)]      # K = 260 > KC (grad-x)

for dt in (np.float32, np.float64):
    for n, f, o in DENSE:
        x = rng.standard_normal((n, f)).astype(dt)
        w = rng.standard_normal((o, f)).astype(dt)
        b = rng.standard_normal(o).astype(dt)
        g = rng.standard_normal((n, o)).astype(dt)
        x64, w64, b64, g64 = (a.astype(np.float64) for a in (x, w, b, g))
        tag = f"dense {np.dtype(dt).name} {(n, f, o)}"
        close(tag + " fwd", F.dense(x, w, b), R.dense(x64, w64, b64), dt, f)
        gx, gw, gb = F.dense_backward(g, x, w)
        rx, rw, rb = R.dense_backward(g64, x64, w64)
        close(tag + " gx", gx, rx, dt, o)
        close(tag + " gw", gw, rw, dt, n)
        close(tag + " gb", gb, rb, dt, n)
    for n, c, h, wd, k, r, s, st, pad, dil in CONV:
        x = rng.standard_normal((n, c, h, wd)).astype(dt)
        w = rng.standard_normal((k, c, r, s)).astype(dt)
        b = rng.standard_normal(k).astype(dt)
        kw = dict(stride=st, padding=pad, dilation=dil)
        y = F.conv2d(x, w, b, **kw)
        g = rng.standard_normal(y.shape).astype(dt)
        x64, w64, b64, g64 = (a.astype(np.float64) for a in (x, w, b, g))
        tag = f"conv {np.dtype(dt).name} {(n, c, h, wd, k, r, s, st, pad, dil)}"
        close(tag + " fwd", y, R.conv2d(x64, w64, b64, **kw), dt, c * r * s)
        gx, gw, gb = F.conv2d_backward(g, x, w, **kw)
        rx, rw, rb = R.conv2d_backward(g64, x64, w64, **kw)
        p = y.shape[2] * y.shape[3]
        close(tag + " gx", gx, rx, dt, k * r * s)
        close(tag + " gw", gw, rw, dt, n * p)
        close(tag + " gb", gb, rb, dt, n * p)

# bit-identical for 1, 2 and 3 threads; a sample's result does not depend
# on its batch
variant = []
for dt in (np.float32, np.float64):
    x = rng.standard_normal((203, 301)).astype(dt)
    w = rng.standard_normal((157, 301)).astype(dt)
    g = rng.standard_normal((203, 157)).astype(dt)
    xc = rng.standard_normal((7, 9, 19, 18)).astype(dt)
    wc = rng.standard_normal((14, 9, 3, 3)).astype(dt)
    gc = rng.standard_normal((7, 14, 19, 18)).astype(dt)
    runs = []
    for nt in (1, 2, 3):
        cnnkit.set_num_threads(nt)
        runs.append([F.dense(x, w), *F.dense_backward(g, x, w),
                     F.conv2d(xc, wc, padding=1),
                     *F.conv2d_backward(gc, xc, wc, padding=1)[:2]])
    for i, ref in enumerate(runs[0]):
        for nt, other in zip((2, 3), runs[1:]):
            if ref.tobytes() != other[i].tobytes():
                variant.append(f"{np.dtype(dt).name} result {i}: "
                               f"{nt} threads differ from 1")
    cnnkit.set_num_threads(2)
    full = F.dense(x, w)
    for lo, hi in ((0, 1), (5, 18), (100, 203)):
        if F.dense(x[lo:hi], w).tobytes() != full[lo:hi].tobytes():
            variant.append(f"{np.dtype(dt).name} dense rows {lo}:{hi} "
                           f"depend on the batch")
    yc = F.conv2d(xc, wc, padding=1)
    if F.conv2d(xc[3:4], wc, padding=1).tobytes() != yc[3:4].tobytes():
        variant.append(f"{np.dtype(dt).name} conv image 3 depends on the "
                       f"batch")

# The direct convolution forward (SIMD paths) against the im2col path: the
# same bits, on shapes at its edges -- C*R*S at and past the slab depth KC
# (several slabs), outputs half a vector wide or filling too few lanes,
# filters and columns off the tile, stride and dilation in both
# directions, asymmetric and oversized padding, inf and nan inputs -- and
# the same bits for 1, 2 and 3 threads; the gradients against the
# reference and the same bits for 1, 2 and 3 threads.
K = cnnkit._kernels
DIRECT = [  # (n, c, h, w, k, r, s, stride, (top, bottom, left, right), dil)
    (2, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),   # LeNet conv 1
    (3, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1)),  # LeNet conv 2
    (1, 3, 9, 17, 13, 3, 3, (2, 1), (1, 1, 1, 1), (1, 1)),
    (2, 2, 10, 40, 25, 3, 2, (1, 1), (0, 1, 2, 0), (2, 3)),
    (1, 4, 7, 8, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
    (5, 1, 5, 33, 7, 5, 1, (3, 1), (2, 2, 0, 0), (1, 1)),
    (2, 3, 12, 12, 30, 1, 7, (1, 1), (0, 0, 3, 3), (1, 1)),
    (1, 2, 4, 70, 12, 2, 3, (1, 1), (4, 3, 5, 6), (1, 2)),   # pad > kernel
    (1, 32, 5, 16, 3, 4, 4, (1, 1), (1, 2, 1, 2), (1, 1)),   # CRS = 512
    (1, 16, 5, 16, 3, 4, 4, (1, 1), (1, 2, 1, 2), (1, 1)),   # CRS = 256
    (1, 17, 5, 16, 3, 4, 4, (1, 1), (1, 2, 1, 2), (1, 1)),   # CRS = 272
    (2, 64, 6, 20, 13, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),  # 576: 2+ slabs
    (1, 130, 4, 9, 5, 2, 2, (1, 1), (0, 1, 0, 1), (1, 1)),   # 520: 3 in f64
    (1, 2, 6, 8, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # OW = 8
    (1, 2, 6, 7, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # OW = 7
    (1, 2, 6, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # OW = 3
    (4, 2, 3, 9, 14, 3, 1, (2, 1), (0, 0, 0, 0), (1, 1)),    # OH = 1
    # outputs 11 and 8 wide: the weight gradient sweeps each image's output
    # plane as one row over column-shifted copies of the input
    (2, 3, 11, 12, 7, 3, 3, (1, 1), (2, 1, 0, 3), (2, 2)),
    (1, 2, 9, 13, 4, 2, 4, (1, 1), (1, 0, 2, 2), (1, 3)),
    # ... with padding past the row: a shifted plane of only zeros; ten
    # images, so that a weight-gradient group holds several
    (10, 1, 1, 9, 2, 1, 3, (1, 1), (0, 0, 64, 64), (1, 64)),
]
direct_seen = 0
for dt in (np.float32, np.float64):
    for n, c, h, wd, k, r, s, st, pad, dil in DIRECT:
        x = rng.standard_normal((n, c, h, wd)).astype(dt)
        x[0, 0, 0, 0] = np.inf
        x[-1, -1, -1, -1] = np.nan
        w = rng.standard_normal((k, c, r, s)).astype(dt)
        b = rng.standard_normal(k).astype(dt)
        tag = (f"direct {np.dtype(dt).name} "
               f"{(n, c, h, wd, k, r, s, st, pad, dil)}")
        path = K._conv_forward_path(x.shape, w.shape, st, pad, dil, dt)
        direct_seen += path == "direct"
        if K._conv_forward_path(x.shape, w.shape, st, pad, dil, dt,
                                direct=False) != "im2col":
            variant.append(f"{tag}: direct=False does not report im2col")
        want = {bias is not None: K.conv2d_forward(x, w, bias, st, pad, dil,
                                                   direct=False)
                for bias in (b, None)}
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            for bias in (b, None):
                out = K.conv2d_forward(x, w, bias, st, pad, dil)
                if out.tobytes() != want[bias is not None].tobytes():
                    variant.append(f"{tag} ({path}, {nt} threads, bias "
                                   f"{bias is not None}) differs from im2col")
                # the ReLU in the epilogue: the bits of relu(conv), on both
                # paths, NaN kept and -0 made +0 as relu_forward does
                relu_want = K.relu_forward(want[bias is not None])
                for direct in (True, False):
                    fused = K.conv2d_forward(x, w, bias, st, pad, dil, True,
                                             direct=direct)
                    if fused.tobytes() != relu_want.tobytes():
                        variant.append(f"{tag} ({nt} threads, bias "
                                       f"{bias is not None}, direct "
                                       f"{direct}) conv+relu differs from "
                                       f"relu(conv)")
        cnnkit.set_num_threads(2)
        x64 = np.nan_to_num(x, nan=0.0, posinf=0.0).astype(np.float64)
        x[0, 0, 0, 0] = x[-1, -1, -1, -1] = 0
        x64 = np.pad(x64, ((0, 0), (0, 0), pad[:2], pad[2:]))
        w64 = w.astype(np.float64)
        close(tag, K.conv2d_forward(x, w, b, st, pad, dil),
              R.conv2d(x64, w64, b.astype(np.float64), stride=st,
                       dilation=dil), dt, c * r * s)
        # backward: the input gradient (a direct convolution of gy with
        # unit strides) and the weight gradient (direct with unit column
        # stride) against the reference, and the same bits for 1, 2 and 3
        # threads
        gy = rng.standard_normal(want[True].shape).astype(dt)
        runs = []
        for nt in (1, 2, 3):
            cnnkit.set_num_threads(nt)
            runs.append(K.conv2d_backward(gy, x, w, st, pad, dil))
        cnnkit.set_num_threads(2)
        for i, name in enumerate(("gx", "gw", "gb")):
            if any(run[i].tobytes() != runs[0][i].tobytes()
                   for run in runs[1:]):
                variant.append(f"{tag} {name} depends on the threads")
        rx, rw, rb = R.conv2d_backward(gy.astype(np.float64), x64, w64,
                                       stride=st, dilation=dil)
        rx = rx[:, :, pad[0]:pad[0] + h, pad[2]:pad[2] + wd]
        p = gy.shape[2] * gy.shape[3]
        close(tag + " gx", runs[0][0], rx, dt, k * r * s)
        close(tag + " gw", runs[0][1], rw, dt, n * p)
        close(tag + " gb", runs[0][2], rb, dt, n * p)
        # an infinite weight: NaN only where the im2col path has it
        w[0, 0, 0, 0] = np.inf
        gx_ref = K.conv2d_backward(gy, x, w, st, pad, dil, True, False,
                                   direct=False)[0]
        gx_inf = K.conv2d_backward(gy, x, w, st, pad, dil, True, False)[0]
        if not np.array_equal(np.isnan(gx_inf), np.isnan(gx_ref)):
            variant.append(f"{tag} gx NaN positions with an inf weight")

print(json.dumps({"info": cnnkit._kernels.build_info(), "checked": checked,
                  "failures": failures, "variant": variant,
                  "direct_seen": direct_seen}))
'''


def _run(env_simd, code=CHECKER):
    env = dict(os.environ)
    env.pop("CNNKIT_SIMD", None)
    if env_simd is not None:
        env["CNNKIT_SIMD"] = env_simd
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)


_results = {}


def _checked(path):
    if path not in _results:
        out = _run(path)
        assert out.returncode == 0, out.stderr[-3000:]
        _results[path] = json.loads(out.stdout.strip().splitlines()[-1])
    return _results[path]


@pytest.mark.parametrize("path", PATHS)
def test_forced_path_is_reported(path):
    res = _checked(path)
    assert res["info"]["simd_request"] == "forced"
    assert res["info"]["simd_path"].startswith(NAMES[path])
    assert f"CNNKIT_SIMD={path}" in res["info"]["simd_path"]


@pytest.mark.parametrize("path", PATHS)
def test_gemm_kernels_match_reference(path):
    res = _checked(path)
    assert res["checked"] > 100
    assert res["failures"] == []


@pytest.mark.parametrize("path", PATHS)
def test_bits_do_not_depend_on_threads_or_batch(path):
    assert _checked(path)["variant"] == []


@pytest.mark.parametrize("path", PATHS)
def test_direct_convolution_where_it_applies(path):
    # The SIMD paths compute most of DIRECT's shapes directly (not the ones
    # with C*R*S above the slab depth or outputs under half a vector wide);
    # the generic path always lowers onto the GEMM.  Either way the bits
    # equal the im2col path's (test_bits_do_not_depend_on_threads_or_batch).
    seen = _checked(path)["direct_seen"]
    if path == "generic":
        assert seen == 0
    else:
        assert seen >= 20


def test_paths_built_and_supported():
    assert "generic" in PATHS
    built = INFO["simd_paths_built"]
    for p in PATHS:
        assert p in built


SMOKE = ("import numpy as np, cnnkit; from cnnkit import functional as F; "
         "x = np.ones((3, 5), np.float32); "
         "assert (F.dense(x, np.ones((4, 5), np.float32)) == 5).all(); "
         "print(cnnkit._kernels.build_info()['simd_request']); "
         "print(cnnkit._kernels.build_info()['simd_path'])")


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
