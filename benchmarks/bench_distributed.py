"""Data-parallel training on one machine: 1 rank x T threads against
R ranks x 1 thread, and the share of each step spent exchanging gradients.

    python benchmarks/bench_distributed.py [--ranks 2] [--batch-size 64]

The script launches itself under ``mpiexec`` (mpi4py and an MPI library,
e.g. ``pip install mpi4py mpich``) once per configuration; the
configurations run interleaved, ``--repeats`` times, and the table shows
medians.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np


def worker(args):
    """One measurement, inside an MPI job (or alone)."""
    import cnnkit
    from cnnkit import distributed
    distributed.init()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.samples)
    from cnnkit.bench import lenet_cnnkit
    model = lenet_cnnkit()
    opt = cnnkit.optim.SGD(0.01, momentum=0.9)
    dist = (None if args.reduction == "none"
            else distributed.DataParallel(args.reduction))
    model.fit(x[:args.batch_size * 4], y[:args.batch_size * 4],
              batch_size=args.batch_size, optimizer=opt, verbose=0,
              distributed=dist)                                  # warm-up
    distributed.barrier()
    t0 = time.perf_counter()
    history = model.fit(x, y, batch_size=args.batch_size, optimizer=opt,
                        verbose=0, distributed=dist)
    seconds = time.perf_counter() - t0
    steps = -(-args.samples // args.batch_size)
    if distributed.is_root():
        print(json.dumps({"images_per_s": args.samples / seconds,
                          "step_ms": 1e3 * seconds / steps,
                          "exchange_ms": 1e3 * history.exchange_seconds / steps,
                          "library": distributed.info()["library"]}))


def run(cfg, args, mpiexec):
    ranks, threads, reduction = cfg
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker",
           "--reduction", reduction, "--batch-size", str(args.batch_size),
           "--samples", str(args.samples)]
    if reduction != "none":
        cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py"] + \
            cmd[1:]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reduction", default="ordered",
                   choices=["none", "ordered", "allreduce"])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) \
        or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install mpi4py mpich")
    r = args.ranks
    configs = [(1, r, "none"), (1, r, "ordered"), (r, 1, "ordered"),
               (r, 1, "allreduce")]
    results = {c: [] for c in configs}
    for _ in range(args.repeats):
        for c in configs:                                  # interleaved
            results[c].append(run(c, args, mpiexec))
    lib = next(v[0]["library"] for v in results.values()
               if v[0]["library"].startswith("MPI"))
    print(f"LeNet-5 training, batch {args.batch_size}, {args.samples} "
          f"images per run, median of {args.repeats}; {lib}")
    print(f"{'configuration':34s} {'images/s':>9s} {'step ms':>8s} "
          f"{'exchange ms':>12s} {'share':>6s}")
    base = statistics.median(v["images_per_s"] for v in results[configs[0]])
    for (ranks, threads, reduction), vals in results.items():
        ips = statistics.median(v["images_per_s"] for v in vals)
        step = statistics.median(v["step_ms"] for v in vals)
        ex = statistics.median(v["exchange_ms"] for v in vals)
        name = (f"{ranks} rank x {threads} thread(s), "
                + ("plain fit" if reduction == "none" else reduction))
        print(f"{name:34s} {ips:9.0f} {step:8.2f} {ex:12.3f} "
              f"{ex / step:6.1%}   ({ips / base:.2f}x)")


if __name__ == "__main__":
    main()
