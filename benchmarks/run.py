"""The benchmark entry point: cnnkit against the NumPy reference and PyTorch.

The same as ``cnnkit bench``; the code lives in the package
(:mod:`cnnkit.bench`, whose docstring describes the workloads and the
method).  Each framework runs in its own worker process; the table shows
median times over interleaved repeats and the ratios ``other / cnnkit``.

Usage::

    python benchmarks/run.py [--quick] [--threads N] [--repeats R]
        [--only kernels conv64 gemm lenet] [--gemm] [--sizes 1024 2048]
        [--batch-sizes 1 32 64] [--images 2048] [--json results.json]

The results of the documentation (``docs/_static/bench/results.json``)
come from::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py \\
        --threads 2 --repeats 7 --only kernels conv64 gemm lenet \\
        --sizes 1024 2048 --json docs/_static/bench/results.json
"""
import sys

from cnnkit import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", *sys.argv[1:]]))
