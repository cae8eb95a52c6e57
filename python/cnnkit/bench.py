"""Time cnnkit against the NumPy reference and, when installed, PyTorch.

One entry point for every benchmark of the project: ``cnnkit bench`` and
``python benchmarks/run.py`` (the same options; ``benchmarks/bench_kernels.py``
and ``benchmarks/bench_lenet.py`` select groups of it).  Workloads come in
groups:

``kernels``
    LeNet-size kernels: conv2d forward and backward (LeNet-5's two
    convolutions; depthwise 3x3 convolutions of 32 x 64 x 56 x 56 and
    32 x 128 x 28 x 28 at stride 1 and 2, and a 3x3 convolution of 8
    groups on 32 x 128 x 28 x 28), max pooling forward and backward, ReLU,
    dense forward and
    backward, softmax cross-entropy (loss and gradient); in full mode also a
    1024 x 1024 x 1024 dense layer.
``lenet``
    LeNet-5 training through ``Sequential.fit`` at batch 1, 32 and 64 and
    inference through ``predict_proba`` at batch 256, against the same loop
    in PyTorch; then the peak memory of a training epoch at batch 64
    (tracemalloc).  The NumPy reference has no trainer.
``gemm``
    Square matrix products C = A @ B^T, float32 and float64:
    ``functional.dense`` (no bias) against ``numpy.matmul`` and ``torch``'s
    ``@``.
``conv64``
    A ResNet-style layer: 64 -> 64 channels, 3x3, padding 1, on a batch of
    32 x 64 x 56 x 56 (8 in quick mode), forward and forward + backward
    (PyTorch through autograd).  The NumPy reference is too slow for it and
    is not run.
``grid`` (only when asked for: ``--only grid``)
    The layers small and medium CNNs are made of, forward and backward,
    against PyTorch: 3x3 and 5x5, 1x1 and depthwise convolutions of 16-128
    channels on planes of 7 to 56, stride 1 and 2, at batch 1 and 32 (three
    of them at 128), and dense layers up to 4096 wide.
    ``benchmarks/bench_grid.py`` runs it and sets each rate against the
    machine's FMA peak.
``zoo``
    Networks past LeNet-5 on 1 x 28 x 28 images, Fashion-MNIST's shape,
    against their PyTorch twins: the medium network of
    :func:`medium_cnnkit` (two 5x5 convolutions of 32 and 64 filters, a
    3136 -> 1024 dense layer, dropout), a training pass over 1024 images at
    batch 64 (Adam); ResNet-20 (:func:`cnnkit.models.resnet`, batch
    normalisation, shortcuts; :func:`resnet_torch`), a training pass over
    1024 images at batch 128 (Adam), once with the direct sums and once
    with its 3x3 stride-1 convolutions by Winograd's F(4x4, 3x3)
    (``Conv2D(winograd=True)``), and inference at batch 256.  Times per
    image scale to an epoch of 60,000 images.

Method
------
Each framework runs in a process of its own: the command starts one worker
per framework (``python -m cnnkit.bench --worker NAME CONFIG``), which sets
its thread count (``cnnkit.set_num_threads``, ``torch.set_num_threads``, and
NumPy's BLAS through threadpoolctl when installed) and then builds and times
the workloads it is asked for.  Only the PyTorch worker imports torch.  For
each workload, every worker first calibrates how many back-to-back calls make
one measurement last about 20 ms (after one warm-up call; a LeNet
measurement is one pass over its images).  Then the command drives
interleaved rounds: in each repeat every framework is timed once, one after
the other (the order rotating between repeats), with a pause of 0.12 s
before each measurement so that the idle threads of the previous one stop
spinning.  The table shows the median time per call over the repeats and
the ratios ``other / cnnkit`` of the medians (above 1: cnnkit is faster).

On machines whose environment sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE,
unset both so that NumPy's matmul runs its best kernel:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE cnnkit bench``.  Set
``CNNKIT_SIMD=avx512|avx2|generic`` to time one SIMD path.

A busy machine makes the numbers meaningless: when another process holds
a core, a framework's threads wait for the preempted one, and a ratio such
as ``relu x0.01`` only says which framework was unlucky.  So the run reads
the 1-minute load average before it starts and, before every measurement
(while all workers wait), how many other tasks are running
(``/proc/loadavg``); it also compares each framework's repeats of a
workload.  A row measured beside other work, or whose repeats are more
than 1.5x apart, ends with ``!`` and the reason, and the run ends with a
warning that says why its timings are unreliable (:func:`busy_reasons`).

``--json PATH`` writes every result (machine, versions, settings, the load,
and per workload the medians, all samples, ratios and rates, the other
tasks running; the reasons the timings are unreliable, if any);
:func:`validate` checks a file against that schema.
"""
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

SCHEMA = 1
FRAMEWORKS = ("cnnkit", "numpy", "torch")
# The order the groups run in.  LeNet-5 first: after the kernel group
# (its NumPy reference loops, the 1024-wide dense layers) both cnnkit and
# PyTorch measured slower LeNet passes on the shared machine.
GROUPS = ("lenet", "kernels", "gemm", "conv64", "zoo", "grid")
DEFAULT_GROUPS = {"full": GROUPS[:-1], "quick": ("lenet", "kernels"),
                  "smoke": GROUPS}
DEFAULT_REPEATS = {"full": 7, "quick": 3, "smoke": 1}
DEFAULT_SIZES = {"full": [1024, 2048, 4096], "quick": [1024, 2048, 4096],
                 "smoke": [16, 32]}
DEFAULT_IMAGES = {"full": 2048, "quick": 512, "smoke": 32}
DEFAULT_BATCH_SIZES = [1, 32, 64]
MEMORY_BATCH = 64

# Seconds one measurement should last, and the pause before each: the idle
# threads of OpenMP and OpenBLAS keep spinning for a while after a call
# (OpenBLAS's for up to ~0.1 s) and would steal the cores from whatever is
# measured next.
TARGET = {"full": 0.02, "quick": 0.02, "smoke": 0.002}
SETTLE = {"full": 0.12, "quick": 0.12, "smoke": 0.005}
MAX_CALLS = 10000


# --------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------
class Workload:
    """One timed operation: what the table shows about it and, for each
    framework that runs it, how to build the function to call.

    ``build(fw)`` runs in the framework's worker and returns a function of
    no arguments.  ``calls`` fixes the calls per measurement (else they are
    calibrated); ``max_repeats`` caps the repeats of a long workload.
    """

    def __init__(self, group, name, shape, build, frameworks=FRAMEWORKS,
                 flops=None, nbytes=None, images=None, calls=None,
                 max_repeats=None):
        self.group = group
        self.name = name
        self.shape = shape
        self.build = build
        self.frameworks = tuple(frameworks)
        self.flops = flops
        self.nbytes = nbytes
        self.images = images
        self.calls = calls
        self.max_repeats = max_repeats


def _arrays(*shapes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _api(fw):
    """cnnkit.functional or its NumPy twin: the same signatures."""
    if fw == "cnnkit":
        from . import functional
        return functional
    from . import reference
    return reference


def _conv(group, n, c, h, k, r, pad, passes, stride=1, groups=1,
          winograd=False):
    """Conv2d of x (n, c, h, h) with k filters r x r (of c / groups
    channels); ``passes`` among "fwd", "bwd" (the gradients of x, weight
    and bias from the output's) and "fwd+bwd".  With ``winograd``,
    cnnkit's side is the passes of ``Conv2D(winograd=True)`` (forward,
    input and weight gradients by F(4x4, 3x3) where it takes them),
    PyTorch's the same as without."""
    oh = (h + 2 * pad - r) // stride + 1
    cg = c // groups
    flops = 2 * n * k * oh * oh * cg * r * r
    shape = f"{n}x{c}x{h}x{h} * {k}x{cg}x{r}x{r} p{pad}"
    if stride != 1:
        shape += f" s{stride}"
    if groups != 1:
        shape += f" g{groups}"
    hp = dict(padding=pad, stride=stride, groups=groups)
    name = "conv2d" if groups == 1 else \
        "depthwise" if groups == c else "grouped conv"
    if winograd:
        name = "winograd"

    def build(fw, kind):
        x, w, b, g = _arrays((n, c, h, h), (k, cg, r, r), (k,),
                             (n, k, oh, oh))
        if fw == "cnnkit" and winograd:
            from ._ops import Conv2DOp
            op = Conv2DOp((1, 1), (pad,) * 4, (1, 1), 1, winograd=True)
            if kind == "fwd":
                return lambda: op.forward(x, w, b)
            if kind == "bwd":
                return lambda: op.backward(g, x, w)

            def wstep():
                op.forward(x, w, b)
                return op.backward(g, x, w)
            return wstep
        if fw != "torch":
            api = _api(fw)
            if kind == "fwd":
                return lambda: api.conv2d(x, w, b, **hp)
            if kind == "bwd":
                return lambda: api.conv2d_backward(g, x, w, **hp)

            def step():
                api.conv2d(x, w, b, **hp)
                return api.conv2d_backward(g, x, w, **hp)
            return step
        import torch
        import torch.nn.functional as TF
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        if kind == "fwd":
            return lambda: TF.conv2d(tx, tw, tb, **hp)
        if kind == "bwd":
            return lambda: torch.ops.aten.convolution_backward(
                tg, tx, tw, [k], [stride, stride], [pad, pad], [1, 1], False,
                [0, 0], groups, [True, True, True])
        txg, twg, tbg = (t.clone().requires_grad_() for t in (tx, tw, tb))

        def step():
            out = TF.conv2d(txg, twg, tbg, **hp)
            return torch.autograd.grad(out, (txg, twg, tbg), tg)
        return step

    fws = FRAMEWORKS if group == "kernels" else ("cnnkit", "torch")
    work = {"fwd": flops, "bwd": 2 * flops, "fwd+bwd": 3 * flops}
    return [Workload(group, f"{name} {kind}", shape,
                     lambda fw, kind=kind: build(fw, kind), fws,
                     flops=work[kind]) for kind in passes]


def _pool(n, c, h):
    """Max pooling 2x2, stride 2, of x (n, c, h, h), forward (values and
    argmax indices) and backward."""
    oh = h // 2
    x_bytes, y_bytes = 4 * n * c * h * h, 4 * n * c * oh * oh
    shape = f"{n}x{c}x{h}x{h} k2"

    def build(fw, kind):
        x, g = _arrays((n, c, h, h), (n, c, oh, oh))
        if fw != "torch":
            api = _api(fw)
            if kind == "fwd":
                return lambda: api.max_pool2d(x, 2)
            _, idx = api.max_pool2d(x, 2)
            return lambda: api.max_pool2d_backward(g, idx, x.shape)
        import torch
        import torch.nn.functional as TF
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)
        if kind == "fwd":
            return lambda: TF.max_pool2d(tx, 2, return_indices=True)
        _, ti = TF.max_pool2d(tx, 2, return_indices=True)
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, ti)

    # bytes read and written: x, y and the int64 indices; g, indices, dx
    moved = x_bytes + 3 * y_bytes
    return [Workload("kernels", f"maxpool {kind}", shape,
                     lambda fw, kind=kind: build(fw, kind), nbytes=moved)
            for kind in ("fwd", "bwd")]


def _relu(shape):
    def build(fw):
        x, = _arrays(shape)
        if fw != "torch":
            api = _api(fw)
            return lambda: api.relu(x)
        import torch
        tx = torch.from_numpy(x)
        return lambda: torch.relu(tx)

    size = int(np.prod(shape))
    return [Workload("kernels", "relu", "x".join(map(str, shape)), build,
                     nbytes=2 * 4 * size)]


def _dense(n, f, o, group="kernels"):
    """Dense layer x (n, f) -> (n, o), forward and backward (the gradients
    of x, weight and bias)."""
    def build(fw, kind):
        x, w, b, g = _arrays((n, f), (o, f), (o,), (n, o))
        if fw != "torch":
            api = _api(fw)
            if kind == "fwd":
                return lambda: api.dense(x, w, b)
            return lambda: api.dense_backward(g, x, w)
        import torch
        import torch.nn.functional as TF
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        if kind == "fwd":
            return lambda: TF.linear(tx, tw, tb)
        return lambda: (tg @ tw, tg.T @ tx, tg.sum(0))

    flops = 2 * n * f * o
    fws = FRAMEWORKS if group == "kernels" else ("cnnkit", "torch")
    return [Workload(group, f"dense {kind}", f"{n}x{f} @ {f}x{o}",
                     lambda fw, kind=kind: build(fw, kind), fws,
                     flops=flops * (1 if kind == "fwd" else 2))
            for kind in ("fwd", "bwd")]


#: The layer grid (``--only grid``): (c, k, h, kernel, stride, groups) at
#: batch 1 and 32 -- 3x3 and 5x5, 1x1 and depthwise, 16-128 channels,
#: planes of 7 to 56, stride 1 and 2 -- and the shapes also at batch 128.
GRID_CONV = [(16, 16, 56, 3, 1, 1), (32, 32, 28, 3, 1, 1),
             (64, 64, 14, 3, 1, 1), (128, 128, 7, 3, 1, 1),
             (16, 32, 56, 3, 2, 1), (64, 128, 14, 3, 2, 1),
             (1, 32, 28, 5, 1, 1), (32, 64, 14, 5, 1, 1),
             (64, 128, 28, 1, 1, 1), (128, 128, 14, 1, 1, 1),
             (64, 128, 28, 1, 2, 1),
             (64, 64, 56, 3, 1, 64), (128, 128, 28, 3, 2, 128)]
GRID_CONV_128 = [(32, 32, 28, 3, 1, 1), (128, 128, 7, 3, 1, 1),
                 (32, 64, 14, 5, 1, 1)]
#: The grid's 3x3 layers of stride 1 again with Conv2D(winograd=True):
#: (batch, c, k, h).
GRID_WINOGRAD = [(n, c, c, h) for n in (1, 32)
                 for c, h in ((16, 56), (32, 28), (64, 14), (128, 7))] + \
                [(128, 32, 32, 28), (128, 128, 128, 7)]
#: (batch, in, out) dense layers up to 4096 wide.
GRID_DENSE = [(1, 3136, 1024), (32, 3136, 1024), (128, 3136, 1024),
              (1, 4096, 4096), (32, 4096, 4096), (128, 1024, 1024)]


def _grid(smoke):
    """The layer grid's workloads, forward and backward, cnnkit against
    PyTorch (FLOP rates; benchmarks/bench_grid.py sets them against the
    machine's measured peak)."""
    if smoke:
        return (_conv("grid", 1, 2, 6, 3, 3, 1, ("fwd", "bwd")) +
                _conv("grid", 2, 16, 6, 16, 3, 1, ("fwd", "bwd"),
                      winograd=True) +
                _dense(2, 16, 8, "grid"))
    out = []
    for n, shapes in ((1, GRID_CONV), (32, GRID_CONV),
                      (128, GRID_CONV_128)):
        for c, k, h, r, stride, groups in shapes:
            out += _conv("grid", n, c, h, k, r, r // 2, ("fwd", "bwd"),
                         stride, groups)
    for n, c, k, h in GRID_WINOGRAD:
        out += _conv("grid", n, c, h, k, 3, 1, ("fwd", "bwd"), winograd=True)
    for n, f, o in GRID_DENSE:
        out += _dense(n, f, o, "grid")
    return out


def _xent(n, c):
    """Softmax cross-entropy of logits (n, c): the loss and its gradient."""
    def build(fw):
        z, = _arrays((n, c))
        y = np.random.default_rng(1).integers(0, c, n)
        if fw != "torch":
            api = _api(fw)
            return lambda: api.softmax_cross_entropy(z, y)
        import torch
        import torch.nn.functional as TF
        tz = torch.from_numpy(z).requires_grad_()
        ty = torch.from_numpy(y)

        def step():
            loss = TF.cross_entropy(tz, ty)
            return torch.autograd.grad(loss, tz)
        return step

    return [Workload("kernels", "softmax xent", f"{n}x{c}", build)]


def _gemm(size, dtype):
    def build(fw):
        a, b = _arrays((size, size), (size, size), dtype=dtype)
        if fw == "cnnkit":
            from . import functional
            return lambda: functional.dense(a, b)
        if fw == "numpy":
            return lambda: np.matmul(a, b.T)
        import torch
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: ta @ tb.T

    return [Workload("gemm", "gemm", f"{size}^3 {np.dtype(dtype).name}",
                     build, flops=2 * size ** 3,
                     max_repeats=3 if size >= 4096 else None)]


def lenet_cnnkit(seed=0):
    """LeNet-5 for 1 x 28 x 28 images (:func:`cnnkit.models.lenet5`): conv
    6@5x5 pad 2, max pool 2, conv 16@5x5, max pool 2, dense 120, 84, 10,
    ReLU between."""
    from .models import lenet5
    return lenet5(seed=seed)


def lenet_torch():
    """The PyTorch twin of :func:`lenet_cnnkit`."""
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def resnet_torch(depth=20, num_classes=10, in_channels=3, width=16):
    """The PyTorch twin of :func:`cnnkit.models.resnet`: the usual CIFAR
    ResNet with projection shortcuts, its ``state_dict`` in the order of
    the cnnkit model's weights (stem conv, bn; per block conv1, bn1, conv2,
    bn2, then the projection's conv and bn where there is one; fc)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False),
                    nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            blocks, cin = [], width
            for stage in range(3):
                cout = width * 2 ** stage
                for b in range((depth - 2) // 6):
                    blocks.append(Block(cin, cout,
                                        2 if stage and not b else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = self.blocks(torch.relu(self.bn(self.conv(x))))
            return self.fc(x.mean(dim=(2, 3)))

    return ResNet()


def medium_cnnkit(seed=0):
    """The network of the next size up from LeNet-5, for 1 x 28 x 28
    images: conv 32@5x5 pad 2, max pool 2, conv 64@5x5 pad 2, max pool 2,
    dense 1024, dropout 0.5, dense 10, ReLU after each convolution and the
    first dense layer (3.3 million parameters, 3.2 of them in the 3136 ->
    1024 dense layer)."""
    from . import layers as L
    from .model import Sequential
    return Sequential([
        L.Conv2D(32, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(64, 5, padding=2), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
        L.Dense(1024), L.ReLU(), L.Dropout(0.5), L.Dense(10)],
        input_shape=(1, 28, 28), seed=seed)


def medium_torch():
    """The PyTorch twin of :func:`medium_cnnkit`."""
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 1024), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1024, 10))


def _adam_train(name, make_cnnkit, make_torch, bs, n):
    """A zoo training workload: one pass over ``n`` synthetic 1 x 28 x 28
    images at batch ``bs``, Adam, through ``fit`` (``make_cnnkit()``'s
    model) and the same loop in PyTorch (``make_torch()``'s net)."""
    def build(fw):
        from .datasets import make_synthetic
        x, y = make_synthetic(n, (1, 28, 28), 10, seed=0)
        if fw == "cnnkit":
            from . import optim
            model = make_cnnkit()
            opt = optim.Adam(1e-3)
            return lambda: model.fit(x, y, epochs=1, batch_size=bs,
                                     optimizer=opt, verbose=0)
        import torch
        from torch import nn
        net = make_torch()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        loss_fn = nn.CrossEntropyLoss()

        def epoch():
            perm = torch.randperm(n)
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                opt.zero_grad(set_to_none=True)
                loss_fn(net(tx[idx]), ty[idx]).backward()
                opt.step()
        return epoch

    return Workload("zoo", name, f"1x28x28, batch {bs}, {n} images", build,
                    ("cnnkit", "torch"), images=n, calls=1, max_repeats=5)


def _medium_train(bs, n):
    """The medium network (:func:`medium_cnnkit`)."""
    return _adam_train("Medium CNN train", medium_cnnkit, medium_torch, bs,
                       n)


def _zoo_train(bs, n, winograd=False):
    """ResNet-20 on 1 x 28 x 28 images (Fashion-MNIST's shape); with
    ``winograd``, its 3x3 stride-1 convolutions ``Conv2D(winograd=True)``."""
    def resnet20():
        from . import models
        return models.resnet(20, input_shape=(1, 28, 28), seed=0,
                             winograd=winograd)
    name = "ResNet-20 train, Winograd" if winograd else "ResNet-20 train"
    return _adam_train(name, resnet20, lambda: resnet_torch(20, 10, 1, 16),
                       bs, n)


def _zoo_predict(bs, n):
    """ResNet-20 class probabilities (evaluation-mode batch norm)."""
    def build(fw):
        from .datasets import make_synthetic
        x, _ = make_synthetic(n, (1, 28, 28), 10, seed=0)
        if fw == "cnnkit":
            from . import models
            model = models.resnet(20, input_shape=(1, 28, 28), seed=0)
            return lambda: model.predict_proba(x, batch_size=bs)
        import torch
        net = resnet_torch(20, 10, 1, 16).eval()
        tx = torch.from_numpy(x)

        def infer():
            with torch.inference_mode():
                for i in range(0, n, bs):
                    torch.softmax(net(tx[i:i + bs]), dim=1)
        return infer

    return Workload("zoo", "ResNet-20 predict", f"1x28x28, batch {bs}, "
                    f"{n} images", build, ("cnnkit", "torch"), images=n,
                    calls=1, max_repeats=5)


def _lenet_data(images):
    from .datasets import make_synthetic
    return make_synthetic(images, (1, 28, 28), 10, seed=0)


def _lenet_train(bs, n, images):
    """One training epoch over ``n`` images at batch ``bs``: ``model.fit``
    (shuffling, batching, loss, backward, SGD with momentum 0.9), and the
    same per batch in PyTorch."""
    def build(fw):
        x, y = _lenet_data(images)
        xs, ys = x[:n], y[:n]
        if fw == "cnnkit":
            from . import optim
            model = lenet_cnnkit()
            opt = optim.SGD(0.01, momentum=0.9)
            return lambda: model.fit(xs, ys, epochs=1, batch_size=bs,
                                     optimizer=opt, verbose=0)
        import torch
        from torch import nn
        net = lenet_torch()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.from_numpy(xs), torch.from_numpy(ys)
        loss_fn = nn.CrossEntropyLoss()

        def epoch():
            perm = torch.randperm(n)
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(tx[idx]), ty[idx])
                loss.backward()
                opt.step()
        return epoch

    return Workload("lenet", "LeNet-5 train", f"batch {bs}, {n} images",
                    build, ("cnnkit", "torch"), images=n, calls=1)


def _lenet_predict(bs, n, images):
    """Class probabilities of ``n`` images in batches of ``bs``."""
    def build(fw):
        x, _ = _lenet_data(images)
        xi = x[:n]
        if fw == "cnnkit":
            model = lenet_cnnkit()
            return lambda: model.predict_proba(xi, batch_size=bs)
        import torch
        net = lenet_torch().eval()
        txi = torch.from_numpy(xi)

        def infer():
            with torch.inference_mode():
                for i in range(0, n, bs):
                    torch.softmax(net(txi[i:i + bs]), dim=1)
        return infer

    return Workload("lenet", "LeNet-5 predict", f"batch {bs}, {n} images",
                    build, ("cnnkit", "torch"), images=n, calls=1)


def workloads(config):
    """The workloads that ``config`` selects, in the order they run; the
    command and every worker build the same list from the same config."""
    mode, groups = config["mode"], config["groups"]
    smoke = mode == "smoke"
    out = []
    if "lenet" in groups:
        images = config["images"]
        for bs in config["batch_sizes"]:
            n = max(1, images // 4) if bs == 1 else images
            out.append(_lenet_train(bs, n, images))
        out.append(_lenet_predict(256, min(images, 1024), images))
    if "kernels" in groups:
        if smoke:
            out += _conv("kernels", 2, 1, 8, 2, 3, 1, ("fwd", "bwd"))
            out += _pool(2, 2, 8)
            out += _relu((2, 2, 8, 8))
            out += _dense(2, 16, 8)
            out += _xent(4, 10)
        else:
            out += _conv("kernels", 32, 1, 28, 6, 5, 2, ("fwd", "bwd"))
            out += _conv("kernels", 32, 6, 14, 16, 5, 0, ("fwd", "bwd"))
            # depthwise 3x3 (MobileNet's blocks) and a grouped 3x3
            # (ResNeXt's, 8 groups of 16 channels)
            for c, h in ((64, 56), (128, 28)):
                for stride in (1, 2):
                    out += _conv("kernels", 32, c, h, c, 3, 1,
                                 ("fwd", "bwd"), stride, c)
            out += _conv("kernels", 32, 128, 28, 128, 3, 1, ("fwd", "bwd"),
                         1, 8)
            out += _pool(32, 6, 28)
            out += _relu((32, 6, 28, 28))
            out += _dense(32, 400, 120)
            out += _xent(64, 10)
            if mode == "full":
                out += _dense(1024, 1024, 1024)
    if "gemm" in groups:
        for dtype in (np.float32, np.float64):
            for size in config["sizes"]:
                out += _gemm(size, dtype)
    if "conv64" in groups:
        n, c, h = {"full": (32, 64, 56), "quick": (8, 64, 56),
                   "smoke": (2, 4, 8)}[mode]
        out += _conv("conv64", n, c, h, c, 3, 1, ("fwd", "fwd+bwd"))
    if "zoo" in groups:
        n = {"full": 1024, "quick": 256, "smoke": 4}[mode]
        out += [_medium_train(64 if n >= 64 else 2, n),
                _zoo_train(128 if n >= 128 else 2, n),
                _zoo_train(128 if n >= 128 else 2, n, winograd=True),
                _zoo_predict(256 if n >= 256 else 2, n)]
    if "grid" in groups:
        out += _grid(smoke)
    return out


def _memory(images, bs=MEMORY_BATCH):
    """Peak memory that a training epoch adds on top of the model, the data
    and the kernels' kept scratch buffers (all allocated by a warm-up
    epoch), as tracemalloc sees it: Python objects and NumPy arrays."""
    import tracemalloc

    from . import optim
    x, y = _lenet_data(images)
    model = lenet_cnnkit()
    opt = optim.SGD(0.01, momentum=0.9)
    model.fit(x[:4 * bs], y[:4 * bs], epochs=1, batch_size=bs, optimizer=opt,
              verbose=0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model.fit(x, y, epochs=1, batch_size=bs, optimizer=opt, verbose=0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except ImportError:  # not on Unix
        rss = None
    return {"batch_size": bs, "images": len(x), "epoch_peak_bytes": peak,
            "parameter_bytes": model.count_params() * 4,
            "data_bytes": int(x.nbytes), "peak_rss_bytes": rss}


# --------------------------------------------------------------------------
# the worker: one process per framework
# --------------------------------------------------------------------------
def _time(fn, number):
    """Seconds per call, over ``number`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _calibrate(fn, target):
    """Calls per measurement so that one lasts about ``target`` seconds (a
    single call of a fast kernel is dominated by thread wake-up and by the
    spinning thread pool of whatever ran before it).

    After one warm-up call that pays the first call's costs (allocations,
    caches), the number of calls doubles until they last a tenth of the
    target; the time per call is the least of three such probes, so that
    one call slowed down by other work does not cut the measurement short.
    """
    fn()
    number = 1
    while True:
        t = _time(fn, number)
        if t * number >= target / 10 or number >= MAX_CALLS:
            break
        number *= 2
    if t < target:
        t = min(t, _time(fn, number), _time(fn, number))
    return max(1, min(MAX_CALLS, int(target / max(t, 1e-7))))


def _setup(fw, threads):
    """Set the worker's thread counts and return what it reports about
    itself; NumPy's BLAS is limited in every worker when threadpoolctl is
    installed."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(threads, user_api="blas")
        blas = [d["num_threads"] for d in threadpool_info()
                if d["user_api"] == "blas"]
        blas_threads = min(blas) if blas else None
    except ImportError:  # NumPy's BLAS then uses its own thread count
        blas_threads = None
    if fw == "cnnkit":
        import cnnkit
        cnnkit.set_num_threads(threads)
        version, actual = cnnkit.__version__, cnnkit.get_num_threads()
    elif fw == "numpy":
        version, actual = np.__version__, blas_threads
    elif fw == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        version, actual = torch.__version__, torch.get_num_threads()
    else:
        raise ValueError(f"unknown framework {fw!r}")
    return {"pid": os.getpid(), "version": version, "threads": actual,
            "blas_threads": blas_threads}


def _serve(fw, config):
    """Answer the command's requests, one JSON line each, until "exit" or
    the end of stdin.  Requests: ``prepare`` (build and calibrate a
    workload), ``time`` (one measurement), ``memory``, ``info``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the command stops us
    reply_to = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)              # whatever else prints goes to stderr

    def send(obj):
        reply_to.write(json.dumps(obj) + "\n")

    try:
        hello = _setup(fw, config["threads"])
    except Exception:
        send({"error": traceback.format_exc()})
        return 1
    send(dict(hello, ready=True))
    table = workloads(config)
    current, fn, calls = None, None, None
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        try:
            if op == "exit":
                break
            if op in ("prepare", "time") and req["case"] != current:
                fn = None                       # free the previous data
                wl = table[req["case"]]
                fn = wl.build(fw)
                calls = wl.calls
                if calls is None:
                    calls = _calibrate(fn, config["target"])
                else:
                    fn()                        # warm-up
                current = req["case"]
            if op == "prepare":
                send({"calls": calls})
            elif op == "time":
                send({"seconds": _time(fn, calls)})
            elif op == "memory":
                send(_memory(config["images"]))
            elif op == "info":
                send({"pid": os.getpid(),
                      "torch_loaded": "torch" in sys.modules})
            else:
                send({"error": f"unknown request {req!r}"})
        except Exception:
            send({"error": traceback.format_exc()})
    return 0


class _Worker:
    """The command's end of one worker process."""

    def __init__(self, fw, config):
        self.fw = fw
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnnkit.bench", "--worker", fw,
             json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)
        self.hello = None

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.fw} worker exited with status "
                               f"{self.proc.wait()} (its error is above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the {self.fw} worker failed:\n"
                               f"{reply['error']}")
        return reply

    def start(self):
        self.hello = self._read()
        return self.hello

    def ask(self, op, **kw):
        self.proc.stdin.write(json.dumps(dict(kw, op=op)) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write('{"op": "exit"}\n')
                self.proc.stdin.flush()
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------
def make_config(args):
    """The run's settings from the parsed options of ``cnnkit bench``;
    ValueError for options that do not go together."""
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.gemm and args.only:
        raise ValueError("--gemm is --only gemm; give one of the two")
    groups = ["gemm"] if args.gemm else args.only or DEFAULT_GROUPS[mode]
    groups = [g for g in GROUPS if g in groups]
    if args.sizes and not (args.gemm or "gemm" in (args.only or [])):
        raise ValueError("--sizes goes with --gemm (or --only ... gemm)")
    for opt, value in (("--batch-sizes", args.batch_sizes),
                       ("--images", args.images)):
        if value and "lenet" not in groups:
            raise ValueError(f"{opt} goes with the lenet group")
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            raise ValueError(f"cannot write --json {args.json}: no folder "
                             f"{folder}")
    if args.threads:
        threads = args.threads
    else:
        from ._config import get_num_threads
        threads = get_num_threads()
    return {"mode": mode, "groups": groups,
            "repeats": args.repeats or DEFAULT_REPEATS[mode],
            "threads": threads,
            "sizes": list(args.sizes or DEFAULT_SIZES[mode]),
            "batch_sizes": list(args.batch_sizes or DEFAULT_BATCH_SIZES),
            "images": args.images or DEFAULT_IMAGES[mode],
            "target": TARGET[mode], "settle": SETTLE[mode]}


def cpu_name():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_installed():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def run(config, out=None):
    """Run the benchmark that ``config`` (from :func:`make_config`)
    describes, print its table to ``out`` (default stdout) as it goes, and
    return the results (the document that ``--json`` writes)."""
    from . import _ops
    from ._version import __version__
    out = sys.stdout if out is None else out

    def say(text=""):
        print(text, file=out, flush=True)

    load_before = load_average()       # before the workers add their own
    table = workloads(config)
    wanted = [fw for fw in FRAMEWORKS
              if any(fw in wl.frameworks for wl in table)]
    notes = []
    if "torch" in wanted and not _torch_installed():
        wanted.remove("torch")
        notes.append("PyTorch is not installed: pip install torch to "
                     "compare with it")
    workers = {}
    try:
        for fw in wanted:
            workers[fw] = _Worker(fw, config)
        for fw in wanted:
            try:
                workers[fw].start()
            except RuntimeError as exc:
                if fw != "torch":
                    raise
                workers.pop(fw).close()
                notes.append(f"PyTorch failed to start, running without it: "
                             f"{str(exc).strip().splitlines()[-1]}")
        doc = _document(config, workers, __version__,
                        _ops.build_info()["simd_path"])
        doc["load"]["before"] = load_before
        for line in header_lines(doc) + notes:
            say(line)
        say()
        shown = shown_frameworks(doc)
        group = None
        for i, wl in enumerate(table):
            if wl.group != group:
                group = wl.group
                say(_row_text(_columns(shown, group)))
            rec = _measure(i, wl, workers, config)
            doc["workloads"].append(rec)
            say(_row_line(rec, shown, doc))
            if wl is table[-1] or table[i + 1].group != group:
                if group == "lenet":
                    doc["memory"] = workers["cnnkit"].ask("memory")
                    say(memory_text(doc["memory"]))
                say()
        for fw, w in workers.items():
            doc["frameworks"][fw]["torch_loaded"] = \
                w.ask("info")["torch_loaded"]
        doc["load"]["after"] = load_average()
        doc["unreliable"] = assess(doc)
        for line in verdict_lines(doc):
            say(line)
    finally:
        for w in workers.values():
            w.close()
    return doc


def _measure(i, wl, workers, config):
    """Interleaved repeats of workload ``i`` over the frameworks that run
    it; its record in the results."""
    fws = [fw for fw in FRAMEWORKS if fw in wl.frameworks and fw in workers]
    calls = {fw: workers[fw].ask("prepare", case=i)["calls"] for fw in fws}
    samples = {fw: [] for fw in fws}
    others = []
    repeats = config["repeats"]
    if wl.max_repeats:
        repeats = min(repeats, wl.max_repeats)
    for r in range(repeats):
        for fw in fws[r % len(fws):] + fws[:r % len(fws)]:
            time.sleep(config["settle"])
            others.append(others_running(config["threads"]))
            samples[fw].append(workers[fw].ask("time", case=i)["seconds"])
    others = [n for n in others if n is not None]
    med = {fw: statistics.median(samples[fw]) if fw in samples else None
           for fw in FRAMEWORKS}

    def rate(amount, scale):
        return {fw: (amount / med[fw] / scale if amount and med[fw]
                     else None) for fw in FRAMEWORKS}

    return {
        "group": wl.group, "name": wl.name, "shape": wl.shape,
        "flops": wl.flops, "bytes": wl.nbytes, "images": wl.images,
        "calls": {fw: calls.get(fw) for fw in FRAMEWORKS},
        "median_s": med,
        "samples_s": {fw: samples.get(fw) for fw in FRAMEWORKS},
        "ratios": {fw: (med[fw] / med["cnnkit"] if med[fw] else None)
                   for fw in FRAMEWORKS[1:]},
        "gflops": rate(wl.flops, 1e9),
        "gbps": rate(wl.nbytes, 1e9),
        "images_per_s": rate(wl.images, 1),
        "others_running": (round(statistics.fmean(others), 2) if others
                           else None),
    }


def _document(config, workers, version, simd_path):
    env = {k: os.environ.get(k) for k in
           ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
            "OMP_WAIT_POLICY", "CNNKIT_SIMD")}
    torch = workers.get("torch")
    return {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                    "arch": platform.machine(),
                    "os": f"{platform.system()} {platform.release()}"},
        "threads": config["threads"],
        "simd_path": simd_path,
        "versions": {"python": platform.python_version(), "cnnkit": version,
                     "numpy": np.__version__,
                     "torch": torch.hello["version"] if torch else None},
        "settings": dict(config, env=env),
        "parent_pid": os.getpid(),
        "frameworks": {fw: ({k: w.hello[k] for k in
                             ("pid", "version", "threads", "blas_threads")}
                            if (w := workers.get(fw)) else None)
                       for fw in FRAMEWORKS},
        "load": {"cores": os.cpu_count() or 1, "before": None,
                 "after": None, "others_from": _OTHERS_FROM},
        "workloads": [],
        "memory": None,
        "unreliable": [],
    }


# --------------------------------------------------------------------------
# is the machine busy?
# --------------------------------------------------------------------------
# Other work tolerated beyond the cores the run leaves free, in cores, and
# the largest ratio of the slowest to the fastest repeat of one framework
# on one workload.
BUSY_MARGIN = 0.5
SPREAD_LIMIT = 1.5
_OTHERS_FROM = ("/proc/loadavg" if os.path.exists("/proc/loadavg")
                else "load average")


def load_average():
    """The 1-minute load average, or None where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def others_running(threads):
    """How many tasks besides the benchmark's are running now.

    Called while every worker waits for its next request, so of the
    runnable tasks that ``/proc/loadavg`` counts (its "running/total"
    field) one is the caller and the rest are other work.  Without
    ``/proc/loadavg``: the 1-minute load average less the run's ``threads``
    (a lower bound); None when there is neither."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(running - 1, 0)
    except (OSError, ValueError, IndexError):
        load = load_average()
        return None if load is None else max(round(load - threads, 2), 0.0)


def _free(cores, threads):
    return max(cores - threads, 0)


def _before_reason(cores, threads, load_before):
    if load_before is None or load_before <= _free(cores, threads) \
            + BUSY_MARGIN:
        return None
    return (f"the load average was {load_before:.2f} on {cores} cores when "
            f"the run started: other work held cores that the "
            f"{threads} thread(s) of each framework need")


def _spread(samples):
    """The slowest repeat over the fastest, or None for fewer than two."""
    if not samples or len(samples) < 2 or min(samples) <= 0:
        return None
    return max(samples) / min(samples)


def row_flags(rec, cores, threads):
    """Why one workload's numbers are suspect, in a few words each: other
    tasks running beside it, or repeats far apart."""
    flags = []
    others = rec.get("others_running")
    if others is not None and others > _free(cores, threads) + BUSY_MARGIN:
        flags.append(f"{others:.1f} other tasks running")
    spreads = [(s, fw) for fw in FRAMEWORKS
               if (s := _spread(rec["samples_s"].get(fw))) is not None
               and s > SPREAD_LIMIT]
    if spreads:
        s, fw = max(spreads)
        flags.append(f"{NAMES[fw]} repeats {s:.1f}x apart")
    return flags


def _names(recs, most=4):
    names = list(dict.fromkeys(r["name"] for r in recs))
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def busy_reasons(cores, threads, load_before, records):
    """Why the timings of a run are unreliable: a list of sentences, empty
    when nothing was seen.

    Parameters
    ----------
    cores : int
        The machine's logical CPUs (the load average counts all of them).
    threads : int
        The threads of each framework.
    load_before : float or None
        The 1-minute load average before the run started.
    records : list of dict
        Per workload: ``name``, ``samples_s`` (per framework, the seconds
        per call of each repeat, or None) and ``others_running`` (the mean
        number of other tasks running before its measurements, or None).

    A run is unreliable when its threads outnumber the cores, when other
    work held more than the cores the run leaves free (plus
    ``BUSY_MARGIN``) before it started or beside a workload, or when the
    slowest repeat of a framework on a workload took more than
    ``SPREAD_LIMIT`` times its fastest.
    """
    reasons = []
    free = _free(cores, threads)
    if threads > cores:
        reasons.append(f"{threads} threads per framework on {cores} cores: "
                       f"the threads compete with each other")
    before = _before_reason(cores, threads, load_before)
    if before:
        reasons.append(before)
    busy = [r for r in records if r.get("others_running") is not None
            and r["others_running"] > free + BUSY_MARGIN]
    if busy:
        mean = statistics.fmean(r["others_running"] for r in busy)
        reasons.append(f"other processes were running during {len(busy)} of "
                       f"{len(records)} workloads ({_names(busy)}): "
                       f"{mean:.1f} tasks on average beside the run's "
                       f"{threads} thread(s), on {cores} cores")
    spread = []
    for r in records:
        for fw in FRAMEWORKS:
            s = _spread(r["samples_s"].get(fw))
            if s is not None and s > SPREAD_LIMIT:
                spread.append((s, r, fw))
    if spread:
        spread.sort(key=lambda t: -t[0])
        worst = "; ".join(
            f"{r['name']}, {NAMES[fw]}: {format_time(min(r['samples_s'][fw]))}"
            f" to {format_time(max(r['samples_s'][fw]))}"
            for _, r, fw in spread[:3])
        count = len({id(r) for _, r, _ in spread})
        reasons.append(f"the repeats of {count} of {len(records)} workloads "
                       f"differ by more than {SPREAD_LIMIT}x ({worst})")
    return reasons


def assess(doc):
    """:func:`busy_reasons` of a results document (none for a document
    without the load, written before it was recorded)."""
    load = doc.get("load")
    if not load:
        return []
    return busy_reasons(load["cores"], doc["threads"], load["before"],
                        doc["workloads"])


def verdict_lines(doc):
    """The warning that ends a run whose timings are unreliable."""
    reasons = doc.get("unreliable") or []
    if not reasons:
        return []
    return (["warning: these timings are unreliable:"]
            + [f"  - {r}" for r in reasons]
            + ["  Run again on an idle machine (or with fewer --threads); "
               "rows marked ! were measured beside other work or vary "
               "between repeats."])


# --------------------------------------------------------------------------
# text output
# --------------------------------------------------------------------------
NAMES = {"cnnkit": "cnnkit", "numpy": "NumPy", "torch": "PyTorch"}


def format_time(s):
    """``s`` seconds as us, ms or s with 3-4 significant digits."""
    if s is None:
        return "-"
    ms = s * 1e3
    if ms < 1:
        return f"{ms * 1e3:.1f} us"
    if ms < 1000:
        return f"{ms:.{3 if ms < 10 else 2 if ms < 100 else 1}f} ms"
    return f"{s:.2f} s"


def format_rate(rec, fw="cnnkit"):
    """The rate of ``fw`` on a workload: GFLOP/s, GB/s or img/s; "" when
    none applies."""
    for key, unit, fmt in (("gflops", "GFLOP/s", ".1f"),
                           ("gbps", "GB/s", ".1f"),
                           ("images_per_s", "img/s", ".0f")):
        value = rec[key][fw]
        if value is not None:
            return f"{value:{fmt}} {unit}"
    return ""


def format_ratio(r):
    return "-" if r is None else f"x{r:.2f}"


def shown_frameworks(doc):
    """The frameworks that the table of ``doc`` has columns for: cnnkit,
    the NumPy reference (with "-" where it does not run) and PyTorch when
    it ran."""
    return [fw for fw in FRAMEWORKS
            if fw != "torch" or doc["frameworks"]["torch"] is not None]


def _columns(shown, group):
    cols = [f"[{group}]", "shape"] + [NAMES[fw] for fw in shown]
    cols += [f"{NAMES[fw]}/cnnkit" for fw in shown[1:]]
    return cols + ["cnnkit rate"]


def _cells(rec, shown):
    cells = [rec["name"], rec["shape"]]
    cells += [format_time(rec["median_s"][fw]) for fw in shown]
    cells += [format_ratio(rec["ratios"][fw]) for fw in shown[1:]]
    return cells + [format_rate(rec)]


def _row_line(rec, shown, doc):
    """A workload's row, and ``!`` with the reasons when it is suspect."""
    text = _row_text(_cells(rec, shown))
    load = doc.get("load")
    flags = row_flags(rec, load["cores"], doc["threads"]) if load else []
    return text + (f"  ! {'; '.join(flags)}" if flags else "")


def _row_text(cells):
    # name, shape, k times, k - 1 ratios, rate
    k = (len(cells) - 2) // 2
    widths = (16, 28) + (10,) * k + (14,) * (k - 1) + (15,)
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


def header_lines(doc):
    """The two lines above the table: what ran where."""
    v, m = doc["versions"], doc["machine"]
    blas = doc["frameworks"]["numpy"]
    blas_note = ""
    if blas is not None:
        blas_note = (f"; NumPy's BLAS limited to {blas['blas_threads']} "
                     f"thread(s)" if blas["blas_threads"] else
                     "; NumPy's BLAS not limited (no threadpoolctl)")
    lines = [
        f"cnnkit {v['cnnkit']} (SIMD {doc['simd_path']}), NumPy "
        f"{v['numpy']}, PyTorch {v['torch'] or 'not installed'}; "
        f"{m['cpu']}, {m['cores']} cores; {doc['threads']} thread(s) per "
        f"framework{blas_note}",
        f"each framework in its own process; times are medians per call "
        f"over {doc['settings']['repeats']} interleaved repeats; "
        f"'X/cnnkit' = X's time / cnnkit's (above 1: cnnkit is faster)"]
    load = doc.get("load")
    before = load and _before_reason(load["cores"], doc["threads"],
                                     load["before"])
    if before:
        lines.append(f"warning: {before}; the timings may be unreliable")
    set_vars = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                if doc["settings"]["env"][k] is not None]
    if set_vars:
        lines.append(f"note: {' and '.join(set_vars)} set: NumPy's BLAS may "
                     f"not run its best kernel (env -u {' -u '.join(set_vars)}"
                     f" ...)")
    return lines


def memory_text(mem):
    mib = 2 ** 20
    rss = mem["peak_rss_bytes"]
    return (f"memory: a training epoch at batch {mem['batch_size']} peaks "
            f"{mem['epoch_peak_bytes'] / mib:.1f} MiB above its start "
            f"(tracemalloc; parameters {mem['parameter_bytes'] / mib:.2f} "
            f"MiB, {mem['images']} images {mem['data_bytes'] / mib:.1f} MiB)"
            + (f"; the cnnkit worker's peak RSS so far {rss / mib:.0f} MiB"
               if rss else ""))


def format_table(doc):
    """The whole table of a results document, as printed by the run."""
    shown = shown_frameworks(doc)
    lines = header_lines(doc) + [""]
    group = None
    for rec in doc["workloads"]:
        if rec["group"] != group:
            if group is not None:
                lines.append("")
            group = rec["group"]
            lines.append(_row_text(_columns(shown, group)))
        lines.append(_row_line(rec, shown, doc))
    if doc["memory"]:
        lines.append(memory_text(doc["memory"]))
    verdict = verdict_lines(doc)
    if verdict:
        lines += [""] + verdict
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the results file
# --------------------------------------------------------------------------
def write_json(doc, path):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def validate(doc):
    """Check a results document (what ``--json`` writes) against schema 1;
    raise ValueError naming the first field that is missing or wrong."""
    def need(cond, where, what):
        if not cond:
            raise ValueError(f"bench results: {where}: {what}")

    def positive(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) \
            and v > 0

    def nonneg(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) \
            and v >= 0

    need(isinstance(doc, dict), "document", "expected an object")
    need(doc.get("schema") == SCHEMA, "schema",
         f"expected {SCHEMA}, got {doc.get('schema')!r}")
    for key, kind in (("date", str), ("machine", dict), ("threads", int),
                      ("simd_path", str), ("versions", dict),
                      ("settings", dict), ("parent_pid", int),
                      ("frameworks", dict), ("workloads", list)):
        need(isinstance(doc.get(key), kind), key,
             f"expected {kind.__name__}, got {doc.get(key)!r}")
    need("memory" in doc, "memory", "missing")
    # the load and the verdict: absent from documents written before they
    # were recorded
    if "load" in doc:
        load = doc["load"]
        need(isinstance(load, dict), "load", "expected an object")
        need(isinstance(load.get("cores"), int) and load["cores"] > 0,
             "load.cores", "expected a positive integer")
        for key in ("before", "after"):
            need(key in load and (load[key] is None or nonneg(load[key])),
                 f"load.{key}", "expected a number >= 0 or null")
    if "unreliable" in doc:
        need(isinstance(doc["unreliable"], list)
             and all(isinstance(r, str) for r in doc["unreliable"]),
             "unreliable", "expected a list of strings")
    for key in ("cpu", "cores", "arch", "os"):
        need(key in doc["machine"], f"machine.{key}", "missing")
    for key in ("python", "cnnkit", "numpy", "torch"):
        need(key in doc["versions"], f"versions.{key}", "missing")
    need(set(doc["frameworks"]) == set(FRAMEWORKS), "frameworks",
         f"expected the keys {FRAMEWORKS}")
    need(doc["frameworks"]["cnnkit"] is not None, "frameworks.cnnkit",
         "missing")
    for fw, info in doc["frameworks"].items():
        if info is not None:
            for key in ("pid", "version", "threads", "blas_threads",
                        "torch_loaded"):
                need(key in info, f"frameworks.{fw}.{key}", "missing")
    for i, rec in enumerate(doc["workloads"]):
        at = f"workloads[{i}]"
        need(rec.get("group") in GROUPS, f"{at}.group",
             f"expected one of {GROUPS}")
        for key in ("name", "shape"):
            need(isinstance(rec.get(key), str), f"{at}.{key}",
                 "expected a string")
        for key in ("flops", "bytes", "images"):
            need(key in rec and (rec[key] is None or positive(rec[key])),
                 f"{at}.{key}", "expected a positive number or null")
        for key in ("calls", "median_s", "samples_s", "gflops", "gbps",
                    "images_per_s"):
            need(isinstance(rec.get(key), dict)
                 and set(rec[key]) == set(FRAMEWORKS), f"{at}.{key}",
                 f"expected an object with the keys {FRAMEWORKS}")
        med, samples = rec["median_s"], rec["samples_s"]
        need(positive(med["cnnkit"]), f"{at}.median_s.cnnkit",
             "expected a positive number")
        for fw in FRAMEWORKS:
            if med[fw] is None:
                need(samples[fw] is None and rec["calls"][fw] is None,
                     f"{at}.{fw}", "samples or calls without a median")
                continue
            need(positive(med[fw]), f"{at}.median_s.{fw}",
                 "expected a positive number")
            need(isinstance(samples[fw], list) and samples[fw]
                 and all(positive(s) for s in samples[fw]),
                 f"{at}.samples_s.{fw}", "expected positive numbers")
            need(statistics.median(samples[fw]) == med[fw],
                 f"{at}.median_s.{fw}", "not the median of the samples")
            need(isinstance(rec["calls"][fw], int) and rec["calls"][fw] > 0,
                 f"{at}.calls.{fw}", "expected a positive integer")
        if "others_running" in rec:
            need(rec["others_running"] is None
                 or nonneg(rec["others_running"]), f"{at}.others_running",
                 "expected a number >= 0 or null")
        ratios = rec.get("ratios")
        need(isinstance(ratios, dict) and set(ratios) == set(FRAMEWORKS[1:]),
             f"{at}.ratios", f"expected the keys {FRAMEWORKS[1:]}")
        for fw in FRAMEWORKS[1:]:
            want = med[fw] / med["cnnkit"] if med[fw] is not None else None
            need(ratios[fw] == want or (
                want is not None and ratios[fw] is not None
                and abs(ratios[fw] - want) <= 1e-12 * want),
                f"{at}.ratios.{fw}", f"expected {want}, got {ratios[fw]}")
    return doc


# --------------------------------------------------------------------------
# the worker process (the command line is ``cnnkit bench``, cnnkit.cli)
# --------------------------------------------------------------------------
if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 4:
        sys.exit("python -m cnnkit.bench is the benchmark's worker process; "
                 "run cnnkit bench (or python benchmarks/run.py)")
    sys.exit(_serve(sys.argv[2], json.loads(sys.argv[3])))
