"""Kernel benchmark: cnnkit against the NumPy reference and PyTorch.

The kernels and conv64 groups of ``benchmarks/run.py`` (``cnnkit bench``),
or with ``--gemm`` the square matrix-product sweep; ``--only`` picks other
groups.  See :mod:`cnnkit.bench` for the method and options.

Usage::

    python benchmarks/bench_kernels.py [--quick] [--threads N] [--repeats R]
    python benchmarks/bench_kernels.py --gemm [--sizes 1024 2048 4096]
"""
import sys

from cnnkit import cli


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--gemm" not in argv and "--only" not in argv:
        argv = ["--only", "kernels", "conv64", *argv]
    return cli.main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main())
