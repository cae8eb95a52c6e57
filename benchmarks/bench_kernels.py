"""Kernel benchmark: cnnkit against the NumPy reference and PyTorch.

The code lives in the package (``cnnkit.bench``, also ``cnnkit bench``);
see its docstring for the method and options.
"""
import sys

from cnnkit import bench

if __name__ == "__main__":
    bench.main(sys.argv[1:])
