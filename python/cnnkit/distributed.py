"""Data-parallel training over MPI, reproducible bit for bit.

Launch the same script on several processes (ranks) with MPI::

    mpiexec -n 4 python -m mpi4py train.py

and train with ``model.fit(x, y, ..., distributed="mpi")``.  Every rank
passes the same ``x`` and ``y`` and computes its share of each global
batch; the gradients are exchanged once per step.  ``python -m mpi4py``
makes an exception on any rank end the whole job at once (a plain
``python train.py`` would leave the other ranks waiting).

Each global batch of ``b`` samples is cut into a fixed number ``S`` of
*virtual shards* (8 by default): shard ``s`` holds the samples
``[s*b//S, (s+1)*b//S)``, whatever the number of ranks or threads.  Each
rank owns a contiguous run of shards, and computes the gradient sum of each
of its shards separately.  With ``reduction="ordered"`` (the default) the
shard sums are gathered on every rank and added in one fixed pairwise tree,
``((g0 + g1) + (g2 + g3)) + ((g4 + g5) + (g6 + g7))``.  A single-process
``fit`` forms its gradient from the same shard sums in the same tree, so
the final weights are the same bits for 1 process and for any number of
ranks up to the number of shards, on any MPI library.  With
``reduction="allreduce"`` each rank adds its own shards and one in-place
``MPI_Allreduce`` sums the ranks: less data on the wire, and reproducible
for a fixed rank count and MPI library.

This module imports :mod:`mpi4py` only when a distributed function is
first used; without it, or without a launcher, the world is one process.
"""
import logging
import os
import warnings

from . import _config, _ops
from ._checks import is_int

__all__ = [
    "DataParallel", "init", "rank", "size", "is_root", "barrier",
    "broadcast_parameters", "info",
]

_log = logging.getLogger(__name__)

#: Environment variables through which launchers announce the world size.
_LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                  "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")

#: The default number of virtual shards per global batch.
DEFAULT_SHARDS = 8

_MAX_SHARDS = 4096


class _World:
    """The processes of one job: an MPI communicator, or this process."""

    def __init__(self, comm=None, mpi=None):
        self.comm, self.MPI = comm, mpi
        if comm is None:
            self.rank, self.size, self.local_size = 0, 1, 1
            self.library = "none (one process)"
        else:
            self.rank, self.size = comm.Get_rank(), comm.Get_size()
            node = comm.Split_type(mpi.COMM_TYPE_SHARED)
            self.local_size = node.Get_size()
            node.Free()
            lib = mpi.Get_library_version().strip().splitlines()
            self.library = lib[0].strip() if lib else "unknown MPI"
        self.threads = None
        self.threads_source = None
        self._rowtypes = {}

    # -- collectives (no-ops in a one-process world) -----------------------
    def barrier(self):
        if self.comm is not None:
            self.comm.Barrier()

    def bcast_array(self, arr, root=0):
        if self.comm is not None and self.size > 1:
            self.comm.Bcast(arr, root=root)

    def bcast(self, obj, root=0):
        if self.comm is None or self.size == 1:
            return obj
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj):
        if self.comm is None or self.size == 1:
            return [obj]
        return self.comm.allgather(obj)

    def allgather_rows(self, buf, counts, displs):
        """Gather, in place, each rank's block of rows of a 2-D byte buffer;
        counts and displacements are in rows (sent as one datatype per row,
        so that no count passes 2**31)."""
        if self.comm is not None and self.size > 1:
            rowbytes = buf.shape[1]
            rowtype = self._rowtypes.get(rowbytes)
            if rowtype is None:
                rowtype = self.MPI.BYTE.Create_contiguous(rowbytes)
                rowtype.Commit()
                self._rowtypes[rowbytes] = rowtype
            self.comm.Allgatherv(self.MPI.IN_PLACE,
                                 [buf, (counts, displs), rowtype])

    def allreduce_sum(self, arr):
        """Sum ``arr`` over the ranks, in place."""
        if self.comm is not None and self.size > 1:
            self.comm.Allreduce(self.MPI.IN_PLACE, arr, op=self.MPI.SUM)


_WORLD = None
#: The world of one process, for training without MPI.
LOCAL = _World()


def _launcher_size():
    for var in _LAUNCHER_VARS:
        try:
            n = int(os.environ.get(var, ""))
        except ValueError:
            continue
        if n > 1:
            return n, var
    return 1, None


def _set_threads(world):
    """Threads per rank: the node's cores split among its ranks, unless the
    user chose a count or this process is alone."""
    if world.local_size == 1:
        world.threads_source = "one rank on this node: unchanged"
    elif os.environ.get("OMP_NUM_THREADS"):
        world.threads_source = "OMP_NUM_THREADS"
    elif _config.user_chose_threads():
        world.threads_source = "set_num_threads"
    else:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):       # pragma: no cover
            cores = os.cpu_count() or 1
        _config.set_threads_quietly(max(1, cores // world.local_size))
        world.threads_source = (f"{cores} cores / {world.local_size} "
                                f"rank(s) on this node")
    world.threads = _config.get_num_threads()


def init(comm=None):
    """Join the MPI job this process was launched in (idempotent).

    Imports :mod:`mpi4py` (initialising MPI) when it is installed; without
    it, and without a launcher, the world is this one process.  When
    several ranks share a node, sets the OpenMP threads of each to the cores
    of the node's affinity mask divided by the ranks on that node, unless
    ``OMP_NUM_THREADS`` is set or :func:`cnnkit.set_num_threads` was called.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The communicator to train over; ``MPI.COMM_WORLD`` by default.

    Returns
    -------
    dict
        :func:`info` of the world joined.

    Raises
    ------
    ImportError
        If a launcher started several ranks but mpi4py is not installed.

    Warns
    -----
    RuntimeWarning
        When the environment says the job has several ranks but MPI reports
        one: the launcher and the MPI library mpi4py was built against do
        not belong together.
    """
    global _WORLD
    if _WORLD is not None and (comm is None or comm is _WORLD.comm):
        return info()
    launched, var = _launcher_size()
    try:
        from mpi4py import MPI
    except ImportError:
        if launched > 1:
            raise ImportError(
                f"this process is one of {launched} MPI ranks ({var}), but "
                f"mpi4py is not installed: pip install mpi4py mpich (leave "
                f"out mpich where the system has an MPI library)"
            ) from None
        world = _World()
    else:
        world = _World(MPI.COMM_WORLD if comm is None else comm, MPI)
        if launched > 1 and world.size == 1 and comm is None:
            warnings.warn(
                f"the launcher started {launched} ranks ({var}={launched}) but "
                f"MPI reports a world of one: mpi4py's MPI library "
                f"({world.library}) is not the one the launcher belongs to; "
                f"each process trains alone. Launch with the mpiexec of that "
                f"library (python -m mpi4py --mpi-library shows its path).",
                RuntimeWarning, stacklevel=2)
    _set_threads(world)
    _WORLD = world
    _log.info("cnnkit.distributed: rank %d of %d, %d on this node, %s; "
              "%d thread(s) per rank (%s)", world.rank, world.size,
              world.local_size, world.library, world.threads,
              world.threads_source)
    return info()


def _world():
    if _WORLD is None:
        init()
    return _WORLD


def info():
    """The world this process belongs to.

    Returns
    -------
    dict
        ``rank``, ``size``, ``local_size`` (ranks on this node),
        ``library`` (the MPI library's version line), ``threads`` (OpenMP
        threads per rank) and ``threads_source`` (where that count came
        from).
    """
    w = _world()
    return {"rank": w.rank, "size": w.size, "local_size": w.local_size,
            "library": w.library, "threads": w.threads,
            "threads_source": w.threads_source}


def rank():
    """This process's rank, 0 in a one-process world.

    Returns
    -------
    int
    """
    return _world().rank


def size():
    """The number of ranks, 1 without MPI.

    Returns
    -------
    int
    """
    return _world().size


def is_root():
    """Whether this process is rank 0.

    Returns
    -------
    bool
    """
    return _world().rank == 0


def barrier():
    """Wait until every rank reaches this call."""
    _world().barrier()


def broadcast_parameters(model, root=0):
    """Copy ``root``'s weights into ``model`` on every rank.

    Parameters
    ----------
    model : cnnkit.Sequential
        A built model, with the same architecture on every rank.
    root : int, default 0
        The rank whose weights everyone gets.

    Raises
    ------
    ValueError
        If ``root`` is not a rank, or if the ranks' models differ in
        parameter count or dtype (checked on every rank before anything is
        sent).
    """
    w = _world()
    if not is_int(root) or not 0 <= root < w.size:
        raise ValueError(f"broadcast_parameters: root must be a rank in "
                         f"[0, {w.size}), got {root!r}")
    if not getattr(model, "built", False):
        raise ValueError("broadcast_parameters: the model must be built "
                         "(give it an input_shape)")
    check_same(w, "models", (model.flat_params.size,
                              model.flat_params.dtype.str))
    w.bcast_array(model.flat_params, root=int(root))


def check_same(world, what, value):
    """Raise on every rank if ``value`` differs between ranks."""
    values = world.allgather(value)
    if any(v != values[0] for v in values):
        raise ValueError(f"distributed: the ranks' {what} differ: "
                         + "; ".join(f"rank {i}: {v}"
                                     for i, v in enumerate(values)))


class DataParallel:
    """Synchronous data-parallel training over MPI, for
    :meth:`cnnkit.Sequential.fit` (``distributed=DataParallel(...)``;
    ``distributed="mpi"`` is ``DataParallel()``).

    ``batch_size`` stays the global batch: each rank computes the shards of
    it that it owns, and the gradients are exchanged once per step over one
    contiguous buffer.  Initial weights and the random state come from rank
    0; every rank runs the same steps, ends with the same weights and
    returns the same history; only rank 0 shows progress and runs
    :class:`~cnnkit.callbacks.ModelCheckpoint`.

    Parameters
    ----------
    reduction : {"ordered", "allreduce"}, default "ordered"
        ``"ordered"`` gathers the shard gradients and adds them in a fixed
        tree: bit-identical weights for any rank count up to ``shards`` and
        any MPI library, and identical to a one-process ``fit`` with the
        same ``shards``.  ``"allreduce"`` sums each rank's shards locally and
        then the ranks with one ``MPI_Allreduce``: less traffic,
        reproducible for a fixed rank count and library.
    shards : int, default 8
        Virtual shards per global batch; the most ranks a run may use.  A
        one-process ``fit`` uses 8, so keep the default to compare runs with
        it.
    comm : mpi4py.MPI.Comm, optional
        Communicator to train over, ``MPI.COMM_WORLD`` by default.
    """

    def __init__(self, reduction="ordered", shards=DEFAULT_SHARDS, comm=None):
        if reduction not in ("ordered", "allreduce"):
            raise ValueError(f"DataParallel: reduction must be 'ordered' or "
                             f"'allreduce', got {reduction!r}")
        if not is_int(shards) or not 1 <= shards <= _MAX_SHARDS:
            raise ValueError(f"DataParallel: shards must be an int in [1, "
                             f"{_MAX_SHARDS}], got {shards!r}")
        self.reduction = reduction
        self.shards = int(shards)
        self.comm = comm
        self._comm_world = None

    def __repr__(self):
        return (f"DataParallel(reduction={self.reduction!r}, "
                f"shards={self.shards})")

    def _world(self):
        if self.comm is None:
            w = _world()
        else:                      # a communicator of its own
            if getattr(self, "_comm_world", None) is None:
                from mpi4py import MPI
                self._comm_world = _World(self.comm, MPI)
                _set_threads(self._comm_world)
            w = self._comm_world
        if w.size > self.shards:
            raise ValueError(
                f"DataParallel: {w.size} ranks need at least as many shards, "
                f"got shards={self.shards}")
        return w


def resolve(distributed):
    """``fit``'s ``distributed`` argument as (world, shards, reduction)."""
    if distributed is None or distributed is False:
        return LOCAL, DEFAULT_SHARDS, "ordered"
    if isinstance(distributed, str):
        if distributed.lower() != "mpi":
            raise ValueError(f"distributed must be None, 'mpi' or a "
                             f"cnnkit.distributed.DataParallel, got "
                             f"{distributed!r}")
        distributed = DataParallel()
    if not isinstance(distributed, DataParallel):
        raise TypeError(f"distributed must be None, 'mpi' or a "
                        f"cnnkit.distributed.DataParallel, got "
                        f"{type(distributed).__name__}")
    return distributed._world(), distributed.shards, distributed.reduction


def bounds(n, parts):
    """Split ``range(n)`` into ``parts`` contiguous runs: their edges."""
    return [i * n // parts for i in range(parts + 1)]


def tree_sum(nodes, out):
    """Add the arrays in ``nodes`` (flat rows like ``out``, None for absent
    ones) in a fixed pairwise tree, adjacent pairs first, into ``out`` (0
    where none is present); the rows are not written."""
    _ops.tree_sum(nodes, out)
