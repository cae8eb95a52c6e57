"""The layer grid: cnnkit against PyTorch and against the machine's peak.

Measures the float32 FMA peak of this machine first (``fma_peak.c``,
compiled with the C compiler that ``CC`` names, else ``cc``, with
``-march=native``), then runs the ``grid`` group of ``benchmarks/run.py``
(``cnnkit bench --only grid``: the method, interleaving and medians are
described there) and prints, for every layer and pass, cnnkit's GFLOP/s,
the share of the peak of the threads used, PyTorch's GFLOP/s and
PyTorch's time over cnnkit's (above 1: cnnkit is faster).  The
``winograd`` rows time ``Conv2D(winograd=True)``'s forward pass and its
gradients (by F(4x4, 3x3) where it takes them), their rate
counted in the direct convolution's multiply-adds.

    python benchmarks/bench_grid.py [--threads 2] [--repeats 5] [--json F]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from cnnkit import cli

HERE = os.path.dirname(os.path.abspath(__file__))


def build_probe(directory):
    """The path of fma_peak.c compiled into directory, or None without a
    compiler."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    exe = os.path.join(directory, "fma_peak")
    subprocess.run([cc, "-O2", "-march=native", "-ffp-contract=fast",
                    "-fopenmp", os.path.join(HERE, "fma_peak.c"), "-o", exe],
                   check=True)
    return exe


def run_probe(exe, threads=None):
    """(GFLOP/s of 1 thread, of `threads` threads (OMP_NUM_THREADS or all
    when None), threads) measured by the compiled probe."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([exe], check=True, capture_output=True, text=True,
                         env=env).stdout
    one = float(re.search(r"1 thread: ([\d.]+)", out).group(1))
    many = re.search(r"(\d+) threads: ([\d.]+)", out)
    return one, float(many.group(2)), int(many.group(1))


def fma_peak(threads=None):
    """(GFLOP/s of 1 thread, of `threads` threads, threads), or None
    without a compiler."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_probe(tmp)
        return run_probe(exe, threads) if exe else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write cnnkit bench's results here")
    args = p.parse_args(argv)
    peak = fma_peak(args.threads)
    path = args.json or os.path.join(tempfile.mkdtemp(), "grid.json")
    cli.main(["bench", "--only", "grid", "--threads", str(args.threads),
              "--repeats", str(args.repeats), "--json", path])
    with open(path) as f:
        doc = json.load(f)
    if peak:
        one, many, n = peak
        per_thread = many / n
        print(f"\nFMA peak (float32, fma_peak.c): {one:.0f} GFLOP/s on 1 "
              f"thread, {many:.0f} on {n}")
        top = per_thread * args.threads
    else:
        print("\nno C compiler: the peak is not measured")
        top = None
    print(f"{'layer':34s} {'pass':4s} {'cnnkit GF/s':>11s} "
          f"{'% peak':>7s} {'torch GF/s':>10s} {'torch/cnnkit':>12s}")
    below = 0
    for w in doc["workloads"]:
        g = w["gflops"]
        mine, theirs = g.get("cnnkit"), g.get("torch")
        ratio = w["ratios"].get("torch")
        below += ratio is not None and ratio < 1.0
        share = f"{100 * mine / top:6.0f}%" if top and mine else ""
        print(f"{w['name'].split()[0] + ' ' + w['shape']:34s} "
              f"{w['name'].split()[-1]:4s} {mine or 0:11.1f} {share:>7s} "
              f"{theirs or 0:10.1f} "
              f"{'' if ratio is None else f'{ratio:.2f}x':>12s}")
    print(f"rows where PyTorch is faster: {below} of "
          f"{len(doc['workloads'])}")
    if any(w["name"].startswith("winograd") for w in doc["workloads"]):
        print("winograd rows: Conv2D(winograd=True)'s passes, their rate "
              "counted in the direct\nconvolution's multiply-adds, so it "
              "may pass the peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
