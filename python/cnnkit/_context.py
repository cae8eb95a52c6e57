"""The step context: what one pass through the layers is asked to do.

A model passes one :class:`StepContext` to every layer's ``forward`` and
``backward``; a layer never learns about training from attributes set on it
from outside.  The context says

* whether the pass trains (keep what backward needs, drop values in
  :class:`~cnnkit.layers.Dropout`): ``bool(ctx)`` is ``ctx.training``, so a
  layer written as ``forward(self, x, training=False)`` reads it as before;
* where outputs go: while a model trains, the :class:`Arena` hands each
  layer arrays kept from one step to the next, so a step allocates nothing
  after the first of its batch size; without an arena the kernels return
  new arrays;
* which calls need not compute the gradient with respect to their input
  (those that read only the model's input, while training);
* the shard bounds: the layers with parameters then write the gradient of
  each run of samples ``[bounds[q], bounds[q+1])`` on its own, into
  ``parts[name][q]`` (the fixed-shard reduction of :mod:`cnnkit.trainer`);
* the dropout window ``(n, lo, hi)``: this batch is the part ``[lo, hi)`` of
  a global batch of ``n`` samples, whose random draws every part shares;
* the batch sums (``batch_sums``): how a layer with batch statistics
  (:class:`~cnnkit.layers.BatchNorm2D`) forms a sum over the global batch
  from the sums of this rank's shards (``batch_sums.bounds``, relative to
  its first sample; ``batch_sums.n`` samples in the global batch;
  ``batch_sums.sum(rows)`` gathers the shard rows of every rank and adds
  them in the fixed tree).  None: the batch is the whole batch.
"""
import numpy as np

from ._ops import aligned_empty

__all__ = ["StepContext", "Arena"]


class Arena:
    """Arrays kept between training steps, one per (owner, key, shape,
    dtype), made on first use."""

    __slots__ = ("_arrays",)

    def __init__(self):
        self._arrays = {}

    def get(self, owner, key, shape, dtype):
        """The kept array of ``owner`` for ``key`` of this shape and dtype
        (uninitialised when new)."""
        k = (id(owner), key, shape)
        a = self._arrays.get(k)
        if a is None or a.dtype != dtype:
            a = self._arrays[k] = aligned_empty(shape, dtype)
        return a

    def clear(self):
        self._arrays.clear()


class StepContext:
    """One forward/backward pass's instructions to the layers.

    Parameters
    ----------
    training : bool, default False
    arena : Arena, optional
        Where outputs and gradients go (kept arrays); None for new arrays.
    frozen_input : collection of int, optional
        The nodes (call positions, :attr:`node`) whose backward need not
        return the input gradient.
    shards : (bounds, {layer: {name: parts}}[, {layer: {name: out}}])
        Per-shard parameter gradients: ``bounds`` (int64, the edges of the
        runs of samples) and, per layer, arrays ``(runs,) + param shape``;
        optionally, per layer, the arrays its :attr:`Layer.tree_sum_grads`
        go to as the runs' tree sum (their parts are then not written).
    window : (n, lo, hi), optional
        This batch is rows ``[lo, hi)`` of a global batch of ``n``.
    batch_sums : object, optional
        Sums over the global batch from per-shard rows (``bounds``, ``n``,
        ``sum(rows)``), for layers with batch statistics.
    """

    __slots__ = ("training", "arena", "frozen_input", "shards", "window",
                 "node", "batch_sums", "trees_taken")

    def __init__(self, training=False, arena=None, frozen_input=(),
                 shards=None, window=None, batch_sums=None):
        self.training = bool(training)
        self.arena = arena
        self.frozen_input = frozen_input
        self.shards = shards
        self.window = window
        self.batch_sums = batch_sums
        #: The call being run: set by the model before each layer call, so
        #: that a layer called twice keeps an array per call.
        self.node = None
        #: The layers that took the arrays of :meth:`shard_tree` in this
        #: pass (and so wrote their shards' tree sums there).
        self.trees_taken = set()

    def __bool__(self):
        return self.training

    def __repr__(self):
        return (f"StepContext(training={self.training}, "
                f"arena={self.arena is not None}, "
                f"shards={self.shards is not None}, window={self.window})")

    def buffer(self, owner, key, shape, dtype):
        """A kept array for ``owner``'s ``key`` while a model trains with an
        arena, else None (the kernel then returns a new array)."""
        if self.arena is None or not self.training:
            return None
        return self.arena.get(owner, (self.node, key), shape,
                              np.dtype(dtype))

    def needs_input_grad(self):
        """Whether the layer being called must return d loss / d input."""
        return self.node not in self.frozen_input

    def shard_parts(self, layer):
        """``(bounds, {name: parts})`` when ``layer`` writes per-shard
        parameter gradients in this pass, else None."""
        if self.shards is None:
            return None
        bounds, parts = self.shards[:2]
        mine = parts.get(layer)
        return None if mine is None else (bounds, mine)

    def shard_tree(self, layer):
        """``{name: out}`` when ``layer`` may write the tree sum of its
        shards' gradients of those parameters into ``out`` itself, else
        None.  A layer that takes them must write them: the reduction then
        leaves those ranges of the shard rows out."""
        if self.shards is None or len(self.shards) < 3:
            return None
        out = self.shards[2].get(layer)
        if out is not None:
            self.trees_taken.add(layer)
        return out


def as_context(ctx):
    """A StepContext from a context or a bool (``training``): a new one for
    a bool, with no arena (new arrays) and every gradient."""
    if isinstance(ctx, StepContext):
        return ctx
    return StepContext(training=bool(ctx))
