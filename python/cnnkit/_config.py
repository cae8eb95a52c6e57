"""Thread control and build information."""
import platform
import sys

import numpy as np

from . import _ops
from ._version import __version__


def set_num_threads(n):
    """Set how many OpenMP threads the kernels use.

    Parameters
    ----------
    n : int
        A positive count, fixed whatever the load, or 0 to go back to the
        default: the CPUs that other processes leave free, at most OpenMP's
        ``omp_get_max_threads()`` (which follows threadpoolctl's limits)
        and a container's CPU quota; ``OMP_NUM_THREADS`` in the environment
        fixes the default instead.

    Notes
    -----
    The setting is process-wide and safe to change while another thread is
    computing: a running kernel keeps the count it started with.  Results are
    bit-identical for every thread count.  In a child created by ``fork()``
    (e.g. ``multiprocessing`` on Linux) the kernels run single-threaded,
    since GNU OpenMP's thread pool does not survive a fork.

    Examples
    --------
    >>> import cnnkit
    >>> cnnkit.set_num_threads(2)
    >>> cnnkit.get_num_threads()
    2
    >>> cnnkit.set_num_threads(0)      # back to the default
    """
    _ops.set_num_threads(n)
    _state["user_threads"] = n != 0


# Whether the thread count was chosen by the user (so cnnkit.distributed
# leaves it alone).
_state = {"user_threads": False}


def user_chose_threads():
    """Whether the thread count was set by the user."""
    return _state["user_threads"]


def set_threads_quietly(n):
    """Set the thread count without recording it as the user's choice."""
    _ops.set_num_threads(n)


def get_num_threads():
    """The number of threads the next kernel call will use.

    Returns
    -------
    int
        The count set by :func:`set_num_threads`, or else OpenMP's
        ``omp_get_max_threads()``; 1 in a child created by ``fork()`` and
        in a build without OpenMP that was not given a count.

    Examples
    --------
    >>> import cnnkit
    >>> cnnkit.get_num_threads() >= 1
    True
    """
    return _ops.get_num_threads()


def _thread_policy():
    """The show_config line on how the thread count is chosen."""
    pol = _ops.thread_policy()
    if not pol["adaptive"]:
        return f"fixed by {pol['fixed_by']}"
    line = "follows the CPUs other processes leave free"
    if pol["others"] is not None:
        line += f" (they use {pol['others']:.1f} now)"
    if pol["cgroup_cpus"]:
        line += f", at most the CPU quota, {pol['cgroup_cpus']}"
    return line


def _config():
    info = _ops.build_info()
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
        "thread policy": _thread_policy(),
        "simd path": info["simd_path"],
        "simd paths built": info["simd_paths_built"],
    }


def show_config(file=None):
    """Print the version, compiler, OpenMP, thread count and SIMD path.

    Parameters
    ----------
    file : file-like, optional
        Where to print; standard output by default.

    Examples
    --------
    >>> import io
    >>> import cnnkit
    >>> out = io.StringIO()
    >>> cnnkit.show_config(file=out)
    >>> print(out.getvalue())  # doctest: +SKIP
    cnnkit:           0.1.0
    python:           3.11.7
    platform:         Linux-6.1.0-x86_64-with-glibc2.36
    numpy:            2.4.6
    compiler:         GNU 12.2.0
    openmp:           yes (version 201511)
    threads:          8
    idle threads:     passive (cnnkit's default)
    simd path:        AVX-512
    simd paths built: avx512, avx2, generic (runtime dispatch)
    >>> "simd path:" in out.getvalue()
    True
    """
    cfg = _config()
    width = max(len(k) for k in cfg)
    lines = [f"{k + ':':<{width + 1}} {v}" for k, v in cfg.items()]
    if not _ops.build_info()["openmp"]:
        lines.append("WARNING: cnnkit was built without OpenMP; rebuild with "
                     "CNNKIT_OPENMP=ON for parallel kernels.")
    print("\n".join(lines), file=file if file is not None else sys.stdout)
