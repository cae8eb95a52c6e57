"""LeNet-5 inference: cnnkit against onnxruntime running the exported model.

The LeNet-5 of ``bench_lenet.py`` (28x28 images: conv 6@5x5 pad 2, max pool
2, conv 16@5x5, max pool 2, dense 120, 84, 10) is exported with
:func:`cnnkit.onnx.export` and run by onnxruntime's CPU provider with its
default graph optimisations.  Both use the same number of threads
(``cnnkit.set_num_threads`` and onnxruntime's ``intra_op_num_threads``;
one inter-op thread).  cnnkit is timed through ``model(x)`` and
onnxruntime through ``session.run``, both returning logits; the two outputs
are checked to agree before timing.

Each measurement runs a fixed number of images in batches of the given
size; the two runtimes alternate within each repeat.  The table shows the
median time of each, and the median over the repeats of the ratio of the
two times measured side by side (more robust on a shared, noisy machine
than the ratio of the medians); a ratio below 1 means cnnkit is slower.

Usage::

    python benchmarks/bench_onnx.py [--threads 2] [--repeats 15]
        [--batch-sizes 1 256] [--images 2048]

With ``--plan`` it compares instead cnnkit's compiled plan
(:func:`cnnkit.plan.compile`), cnnkit's layer-by-layer ``model.forward``,
onnxruntime (``ORT_ENABLE_ALL``) and PyTorch (eager, ``inference_mode``) on
LeNet-5 (batches of 1 and 256), the default network of ``cnnkit train``
on 1x8x8 digits (1 and 256) and ResNet-20 on 3x32x32 images (1 and 64).
Each runtime runs in its own process with the same thread count; the
driver asks them in turn, so only one works at a time, in an order that
alternates from one repeat to the next.  The table gives each runtime's
median time per batch, the median over the repeats of the ratios of the
plan against onnxruntime and PyTorch (above 1: the plan is faster), and at
batch 1 the latency of single calls (p50 and p99 over every call)::

    python benchmarks/bench_onnx.py --plan [--threads 2] [--repeats 11]

Where a C compiler is found, the FMA probe of ``bench_grid.py``
(``fma_peak.c``) runs before the table and after each network, on 1
thread and on ``--threads``: on a shared machine (a virtual machine whose
host runs other work) a core can be taken away without any process of
this machine showing it, and the probe then reads far less than its
threads times the run's best one-thread rate.  A run in which it did says
so at the end: its rows at that thread count carry the host's load.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import cnnkit
from cnnkit.bench import cpu_name, lenet_cnnkit as lenet
from cnnkit.datasets import make_synthetic

SETTLE = 0.05   # let idle OpenMP threads stop spinning between runs
#: a probe of n threads below this share of n times the run's best
#: one-thread rate found a core taken
PROBE_SHARE = 0.8


def main(argv=None):
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--images", type=int, default=2048,
                    help="images per measurement (batch 1 uses an eighth)")
    args = ap.parse_args(argv)

    cnnkit.set_num_threads(args.threads)
    nt = cnnkit.get_num_threads()
    model = lenet()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "lenet.onnx")
    cnnkit.onnx.export(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = nt
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options,
                                   providers=["CPUExecutionProvider"])
    x, _ = make_synthetic(args.images, (1, 28, 28), 10, seed=0)
    x = np.ascontiguousarray(x, dtype=np.float32)
    (check,) = session.run(None, {"input": x[:64]})
    err = float(np.abs(check - model(x[:64])).max())
    assert np.allclose(check, model(x[:64]), rtol=1e-4, atol=1e-4), err

    simd = cnnkit._kernels.build_info().get("simd_path", "?")
    print(f"cnnkit {cnnkit.__version__} ({simd}), onnxruntime "
          f"{ort.__version__}, {nt} threads each, {cpu_name()} "
          f"({os.cpu_count()} CPUs visible)")
    print(f"LeNet-5 on 1x28x28 images, logits; median of {args.repeats} "
          f"interleaved repeats; max |difference| of the logits {err:.1e}")
    print()
    header = (f"{'batch':>5}  {'cnnkit ms/batch':>15}  "
              f"{'onnxruntime ms/batch':>20}  {'cnnkit img/s':>12}  "
              f"{'onnxruntime img/s':>17}  {'cnnkit/onnxruntime':>18}")
    print(header)
    print("-" * len(header))
    for bs in args.batch_sizes:
        n = max(bs, args.images // 8 if bs == 1 else args.images)
        n -= n % bs
        batches = [x[i:i + bs] for i in range(0, n, bs)]

        def run_cnnkit():
            for xb in batches:
                model(xb)

        def run_ort():
            for xb in batches:
                session.run(None, {"input": xb})

        times = _measure({"cnnkit": run_cnnkit, "onnxruntime": run_ort},
                         args.repeats)
        med = {k: statistics.median(v) for k, v in times.items()}
        per = {k: 1e3 * v / len(batches) for k, v in med.items()}
        rate = {k: n / v for k, v in med.items()}
        # onnxruntime time / cnnkit time, per repeat: above 1 means cnnkit
        # is faster
        ratio = statistics.median(
            o / c for o, c in zip(times["onnxruntime"], times["cnnkit"]))
        print(f"{bs:>5}  {per['cnnkit']:>15.3f}  {per['onnxruntime']:>20.3f}"
              f"  {rate['cnnkit']:>12.0f}  {rate['onnxruntime']:>17.0f}  "
              f"{ratio:>17.2f}x", flush=True)


def _measure(runs, repeats):
    """Seconds of each run in each repeat; the runs alternate within a
    repeat."""
    for fn in runs.values():       # warm up
        fn()
    times = {k: [] for k in runs}
    for r in range(repeats):
        order = list(runs.items())
        if r % 2:
            order.reverse()        # neither always goes first
        for k, fn in order:
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------
# the compiled plan against onnxruntime and PyTorch, one process each
# --------------------------------------------------------------------------
#: (case, input shape, batch sizes, batches per measurement per size)
PLAN_CASES = [("LeNet-5", (1, 28, 28), {1: 200, 256: 4}),
              ("cnnkit train default", (1, 8, 8), {1: 400, 256: 20}),
              ("ResNet-20", (3, 32, 32), {1: 40, 64: 1})]
RUNTIMES = ["plan", "layers", "onnxruntime", "torch"]


def _plan_model(case):
    from cnnkit import models
    from cnnkit.cli import default_model
    if case == "LeNet-5":
        return models.lenet5(seed=0)
    if case == "ResNet-20":
        model = models.resnet(20, seed=0)
        rng = np.random.default_rng(0)
        for name, b in model.named_buffers():      # trained-like statistics
            if name.endswith("running_mean"):
                b[...] = rng.normal(0, 0.1, b.shape)
            elif name.endswith("running_var"):
                b[...] = rng.uniform(0.5, 2.0, b.shape)
        model.set_weights(model.get_weights())
        return model
    return default_model((1, 8, 8), 10, 0)


def _torch_twin(model):
    """A PyTorch module that runs the cnnkit model's graph node by node,
    with its weights (the layers the cases use)."""
    import torch
    from torch import nn
    from cnnkit import layers as L

    g = model._graph
    mods = []
    for node in g.order:
        la, shp = node.layer, node.inputs[0].shape
        if isinstance(la, L.Conv2D):
            pt, pb, pl, pr = la._op.padding
            m = nn.Conv2d(shp[0], la.params["weight"].shape[0],
                          la.kernel_size, la.stride, (pt, pl), la.dilation,
                          la._op.groups, "bias" in la.params)
        elif isinstance(la, L.BatchNorm2D):
            m = nn.BatchNorm2d(shp[0], eps=la.eps).eval()
            m.running_mean.copy_(torch.from_numpy(
                la.buffers["running_mean"].copy()))
            m.running_var.copy_(torch.from_numpy(
                la.buffers["running_var"].copy()))
        elif isinstance(la, L.Dense):
            m = nn.Linear(shp[0], la.params["weight"].shape[0],
                          "bias" in la.params)
        elif isinstance(la, L.ReLU):
            m = nn.ReLU()
        elif isinstance(la, L.MaxPool2D):
            m = nn.MaxPool2d(la.pool_size, la.stride, la.padding)
        elif isinstance(la, L.GlobalAvgPool2D):
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif isinstance(la, L.Flatten):
            m = nn.Flatten()
        elif isinstance(la, L.Add):
            m = None
        else:
            raise TypeError(f"no PyTorch twin for {type(la).__name__}")
        if m is not None and la.params:
            with torch.no_grad():
                for k, v in la.params.items():
                    getattr(m, k).copy_(torch.from_numpy(v.copy()))
        mods.append(m)

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = nn.ModuleList([m or nn.Identity() for m in mods])

        def forward(self, x):
            values = [x] + [None] * len(g.order)
            for i, m in enumerate(self.mods):
                ins = [values[k] for k in g.slots[i]]
                values[i + 1] = (ins[0] + ins[1] if mods[i] is None
                                 else m(ins[0]))
            return values[g.output_slot]

    return Twin().eval()


def _plan_worker(runtime, threads, conn):
    """Serve ("setup", case) and ("run", case, batch, batches) requests for
    one runtime: the logits of the check batch, and each call's seconds."""
    cnnkit.set_num_threads(threads)
    runners, data = {}, {}
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        if msg[0] == "setup":
            case = msg[1]
            shape = dict((c, s) for c, s, _ in PLAN_CASES)[case]
            model = _plan_model(case)
            x = np.random.default_rng(1).standard_normal(
                (256,) + shape).astype(np.float32)
            data[case] = x
            if runtime == "plan":
                fn = model.compile()._run
            elif runtime == "layers":
                fn = model.forward
            elif runtime == "onnxruntime":
                import onnxruntime as ort
                path = os.path.join(tempfile.mkdtemp(), "model.onnx")
                cnnkit.onnx.export(model, path)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = \
                    ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(
                    path, opts, providers=["CPUExecutionProvider"])
                name = sess.get_inputs()[0].name

                def fn(xb, sess=sess, name=name):
                    return sess.run(None, {name: xb})[0]
            else:
                import torch
                torch.set_num_threads(threads)
                twin = _torch_twin(model)

                def fn(xb, twin=twin):
                    with torch.inference_mode():
                        return twin(torch.from_numpy(xb)).numpy()
            runners[case] = fn
            conn.send(np.asarray(fn(x[:8])).copy())
        else:
            _, case, bs, nb = msg
            fn, x = runners[case], data[case]
            batches = [np.ascontiguousarray(x[(i * bs) % 256:][:bs])
                       for i in range(nb)]
            fn(batches[0])
            calls = []
            for xb in batches:
                t0 = time.perf_counter()
                fn(xb)
                calls.append(time.perf_counter() - t0)
            conn.send(calls)


def main_plan(argv=None):
    import multiprocessing as mp

    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    workers = {}
    for rt in RUNTIMES:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_plan_worker, args=(rt, args.threads,
                                                      theirs))
        proc.start()
        workers[rt] = (proc, mine)
    probe_dir = tempfile.TemporaryDirectory()
    try:
        probe = _Probe(probe_dir.name, args.threads)
        probe.check("before the table")
        versions = _plan_versions()
        print(f"cnnkit {cnnkit.__version__} "
              f"({cnnkit._kernels.build_info().get('simd_path', '?')}), "
              f"{versions}; {args.threads} threads each, {cpu_name()} "
              f"({os.cpu_count()} CPUs visible); median of {args.repeats} "
              f"interleaved repeats, one process per runtime")
        header = (f"{'network':<21} {'batch':>5}  "
                  + "  ".join(f"{rt + ' ms':>14}" for rt in RUNTIMES)
                  + f"  {'plan/ort':>8}  {'plan/torch':>10}")
        print(header)
        print("-" * len(header))
        latency = []
        for case, _, sizes in PLAN_CASES:
            outs = {}
            for rt, (_, conn) in workers.items():
                conn.send(("setup", case))
            for rt, (_, conn) in workers.items():
                outs[rt] = conn.recv()
            ref = outs["layers"]
            for rt, out in outs.items():
                err = float(np.abs(out - ref).max())
                assert err <= 1e-3 * (1 + np.abs(ref).max()), (case, rt, err)
            for bs, nb in sizes.items():
                times = {rt: [] for rt in RUNTIMES}
                calls = {rt: [] for rt in RUNTIMES}
                for r in range(args.repeats):
                    order = RUNTIMES[r % len(RUNTIMES):] + \
                        RUNTIMES[:r % len(RUNTIMES)]
                    if r % 2:
                        order = order[::-1]
                    for rt in order:
                        time.sleep(SETTLE)
                        conn = workers[rt][1]
                        conn.send(("run", case, bs, nb))
                        c = conn.recv()
                        times[rt].append(sum(c) / nb)
                        calls[rt].extend(c)
                med = {rt: 1e3 * statistics.median(v)
                       for rt, v in times.items()}
                vs = {o: statistics.median(
                    a / b for a, b in zip(times[o], times["plan"]))
                    for o in ("onnxruntime", "torch")}
                print(f"{case:<21} {bs:>5}  "
                      + "  ".join(f"{med[rt]:>14.3f}" for rt in RUNTIMES)
                      + f"  {vs['onnxruntime']:>7.2f}x"
                      + f"  {vs['torch']:>9.2f}x", flush=True)
                if bs == 1:
                    latency.append((case, {
                        rt: (1e3 * np.percentile(c, 50),
                             1e3 * np.percentile(c, 99))
                        for rt, c in calls.items()}))
            probe.check(f"after {case}")
        print()
        print("latency of single calls at batch 1, ms (p50 / p99)")
        for case, lat in latency:
            print(f"{case:<21} " + "  ".join(
                f"{rt} {p50:.3f} / {p99:.3f}"
                for rt, (p50, p99) in lat.items()))
        probe.summary()
    finally:
        probe_dir.cleanup()
        for proc, conn in workers.values():
            conn.send(("stop",))
            proc.join(10)


class _Probe:
    """The FMA probe (bench_grid.fma_peak's), run between the networks."""

    def __init__(self, directory, threads):
        import subprocess
        import sys
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_grid
        self.grid, self.threads, self.reads = bench_grid, threads, []
        self.exe = None
        if threads > 1:
            try:
                self.exe = bench_grid.build_probe(directory)
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"the FMA probe does not build here: {e}")

    def check(self, when):
        if not self.exe:
            return
        time.sleep(SETTLE)
        one, many, n = self.grid.run_probe(self.exe, self.threads)
        self.reads.append((when, one, many, n))
        print(f"FMA probe {when}: {one:.0f} GFLOP/s on 1 thread, "
              f"{many:.0f} on {n} ({many / one:.2f}x)", flush=True)

    def summary(self):
        if not self.reads:
            return
        best = max(one for _, one, _, _ in self.reads)
        short = [w for w, one, many, n in self.reads
                 if many < PROBE_SHARE * n * best]
        if short:
            print(f"\nthe {self.threads}-thread probe read under "
                  f"{PROBE_SHARE:.0%} of {self.threads} times the best "
                  f"1-thread rate ({best:.0f} GFLOP/s) {', '.join(short)}: "
                  "cores were taken by other work (possibly the host's) "
                  f"during this run, and the table's {self.threads}-thread "
                  "times carry that load")


def _plan_versions():
    out = []
    for mod in ("onnxruntime", "torch"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            out.append(f"{mod} missing")
    return ", ".join(out)


if __name__ == "__main__":
    import sys
    if "--plan" in sys.argv[1:]:
        main_plan()
    else:
        main()
