"""Thread control and build information."""
import platform
import sys

import numpy as np

from . import _kernels
from ._version import __version__


def set_num_threads(n):
    """Set how many OpenMP threads the kernels use.

    Parameters
    ----------
    n : int
        A positive count, or 0 to go back to the default: OpenMP's
        ``omp_get_max_threads()``, which follows ``OMP_NUM_THREADS`` and
        threadpoolctl's limits (all cores when neither is set).

    Notes
    -----
    The setting is process-wide and safe to change while another thread is
    computing: a running kernel keeps the count it started with.  Results are
    bit-identical for every thread count.  In a child created by ``fork()``
    (e.g. ``multiprocessing`` on Linux) the kernels run single-threaded,
    since GNU OpenMP's thread pool does not survive a fork.
    """
    _kernels.set_num_threads(n)


def get_num_threads():
    """The number of threads the next kernel call will use."""
    return _kernels.get_num_threads()


def _config():
    info = _kernels.build_info()
    return {
        "cnnkit": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "compiler": info["compiler"],
        "openmp": (f"yes (version {info['openmp_version']})"
                   if info["openmp"] else
                   "no: built without OpenMP, kernels run serially"),
        "threads": get_num_threads(),
        "simd path": info["simd_path"],
        "simd paths built": info["simd_paths_built"],
    }


def show_config(file=None):
    """Print the version, compiler, OpenMP, thread count and SIMD path.

    Parameters
    ----------
    file : file-like, optional
        Where to print; standard output by default.
    """
    cfg = _config()
    width = max(len(k) for k in cfg)
    lines = [f"{k + ':':<{width + 1}} {v}" for k, v in cfg.items()]
    if not _kernels.build_info()["openmp"]:
        lines.append("WARNING: cnnkit was built without OpenMP; rebuild with "
                     "CNNKIT_OPENMP=ON for parallel kernels.")
    print("\n".join(lines), file=file if file is not None else sys.stdout)
