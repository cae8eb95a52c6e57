"""Training: the fit loop and the training step, in one place.

:meth:`cnnkit.Sequential.fit` checks its arguments and hands the model to a
:class:`Trainer`, which runs the epochs (shuffling, batching, callbacks,
progress, Ctrl-C at batch boundaries) and, per batch, :meth:`Trainer.step`:

1. forward: the model's logits for this process's part of the global batch;
2. loss: softmax cross-entropy, its per-sample values and its gradient;
3. backward: each layer with parameters writes the gradient of each fixed
   shard of the batch into that shard's row;
4. reduction: the shard rows (gathered from every rank) added in one fixed
   pairwise tree into the model's gradient buffer;
5. the optimizer's update of the flat parameter buffer.

Every global batch of ``b`` samples is cut into ``S`` shards (8 by default,
:data:`cnnkit.distributed.DEFAULT_SHARDS`): shard ``s`` holds samples
``[s*b//S, (s+1)*b//S)`` whatever the number of ranks or threads, so one
process and any number of MPI ranks form the same sums in the same order.
With one shard in one process (``DataParallel(shards=1)`` or a batch of
one sample) the layers write the batch gradient straight into the model's
buffer: the tree of one row is that row.

The step context (:class:`cnnkit._context.StepContext`) carries the arena of
arrays kept between steps, the first layer's exemption from the input
gradient, the shard bounds and the dropout window to the layers.

With ``augment`` (a :mod:`cnnkit.transforms` transform), each rank's part of
a gathered training batch is augmented before the forward pass, into kept
arrays.  The model's generator draws one key per epoch, after the shuffle;
an image's draws depend on that key and the image's index in the training
set only, so the batches any number of ranks, shards or threads see are the
ones one process sees.  Validation and evaluation batches are never
augmented.
"""
import json
import math
import signal
import sys
import threading
import time
import zlib
from collections import OrderedDict

import numpy as np

from . import _ops
from . import distributed as dist
from . import optim
from ._context import Arena, StepContext
from ._graph import ABSORBED, FUSED
from .callbacks import Callback, History
from .plan import _SERIAL_FLOPS

__all__ = ["Trainer", "evaluate"]


class Trainer:
    """Runs :meth:`~cnnkit.Sequential.fit` for one model.

    Parameters
    ----------
    model : cnnkit.Sequential
        A built model with its optimizer set.
    world : cnnkit.distributed world
        The ranks training together (this process alone by default).
    shards : int
        Virtual shards per global batch.
    reduction : {"ordered", "allreduce"}
        How shard gradients are added across ranks.
    strict : bool
        Refuse layers that cannot write per-shard gradients when shards are
        needed (else train them with one shard).
    label_smoothing : float in [0, 1]
        The training loss's label smoothing (PyTorch's), also that of the
        validation loss.
    augment : cnnkit.transforms.Transform, optional
        Applied to each gathered training batch, with one key per epoch
        drawn from the model's generator and the samples' indices.
    """

    def __init__(self, model, world=dist.LOCAL, shards=dist.DEFAULT_SHARDS,
                 reduction="ordered", strict=True, label_smoothing=0.0,
                 augment=None):
        if not all(np.shares_memory(p, model.flat_params)
                   for p in model.parameters()):
            raise ValueError(
                f"layers of this {type(model).__name__} were built into "
                f"another model, which holds their weights now: train that "
                f"model (this one still predicts with them)")
        unsplit = [layer for layer in model.layers
                   if layer.grads and not layer.per_shard_grads]
        if unsplit and (shards > 1 or world.size > 1):
            if strict:
                raise TypeError(
                    f"{type(unsplit[0]).__name__} has parameters but cannot "
                    f"compute them per shard (per_shard_grads is False); "
                    f"train it with distributed=DataParallel(shards=1) in "
                    f"one process, or without it")
            shards = 1      # a plain fit of layers that cannot split them
        self.model, self.world = model, world
        self.shards, self.reduction = shards, reduction
        self.label_smoothing = float(label_smoothing)
        edges = dist.bounds(shards, world.size)
        self.s0, self.s1 = edges[world.rank], edges[world.rank + 1]
        self.arena = Arena()
        self.bounds = {}
        self.sums = np.zeros(2, dtype=np.float64)
        #: Seconds spent exchanging and adding the shard gradients.
        self.exchange_seconds = 0.0
        self.interrupt = False
        self.single = shards == 1 and world.size == 1
        self.batch_sums = None
        self.augment = augment
        #: The augmentation draws' key of the current epoch.
        self.augment_key = 0
        # compiled steps, per (global batch, one shard): see _program
        self.programs = {}
        self.compiled = _compilable(model)
        # the optimizer whose step checked the model's flat arrays
        self.checked_optimizer = None
        if not self.single:
            self._make_shard_rows(edges)
            self.batch_sums = BatchSums(world, shards, self.s0, self.s1,
                                        self.counts, self.displs)

    def _make_shard_rows(self, edges):
        """One row of bytes per shard: the shard's gradient, laid out as the
        model's flat gradient buffer, then its (loss sum, hits) statistics.
        Per layer with parameters, views of its gradients in this rank's
        shard rows, arrays (local shards,) + parameter shape."""
        model, world = self.model, self.world
        dt = model.dtype
        flat = model.flat_grads
        gbytes = flat.nbytes
        stats_off = -(-gbytes // 16) * 16
        self.counts = [edges[r + 1] - edges[r] for r in range(world.size)]
        self.displs = edges[:world.size]
        self.rows = np.zeros((self.shards, stats_off + 16), dtype=np.uint8)
        self.grads = [self.rows[s, :gbytes].view(dt)
                      for s in range(self.shards)]
        self.stats = [self.rows[s, stats_off:].view(np.float64)
                      for s in range(self.shards)]
        local = self.rows[self.s0:self.s1].view(dt)[:, :flat.size]
        self.parts = {}
        # In one process, a layer that can add its shards' gradients in the
        # tree itself (Layer.tree_sum_grads) writes them into the model's
        # gradient, and the reduction adds the other ranges of the rows:
        # the same bits, without a copy of each such gradient per shard.
        # (A layer called twice adds its calls per shard first: not so.)
        # Only the layers that took their tree in the step
        # (StepContext.shard_tree) are left out of the reduction: a
        # subclass whose backward writes per-shard rows still gets them
        # added.
        self.trees, self.tree_ranges, self._reductions = {}, {}, {}
        for layer, offsets in model.grad_offsets():
            self.parts[layer] = {
                name: local[:, off:off + math.prod(shape)].reshape(
                    (self.s1 - self.s0,) + shape)
                for name, (off, shape) in offsets.items()}
            names = [k for k in layer.tree_sum_grads if k in offsets]
            if world.size == 1 and names and not model.is_shared(layer):
                self.trees[layer] = {k: layer.grads[k] for k in names}
                self.tree_ranges[layer] = [
                    (offsets[k][0], offsets[k][0] + math.prod(offsets[k][1]))
                    for k in names]

    def _spans_without(self, layers):
        """The ranges of the flat gradient that the reduction adds when
        ``layers`` wrote their tree sums themselves (``_reduction`` keeps
        them per set)."""
        done = sorted(r for la in set(layers) for r in self.tree_ranges[la])
        size = self.model.flat_grads.size
        spans, at = [], 0
        for lo, hi in done + [(size, size)]:
            if lo > at:
                spans.append((at, lo))
            at = max(at, hi)
        return spans

    # -- one training step ---------------------------------------------
    def step(self, x, y, sw, idx, where=""):
        """One optimizer step on the global batch ``x[idx]`` (a slice or
        an index array).

        Returns (weighted loss sum, correct count, weight sum) over the
        global batch, the same on every rank.  Raises FloatingPointError,
        with the weights left as they were, when the loss is not finite.
        """
        model, world, S = self.model, self.world, self.shards
        b = idx.stop - idx.start if isinstance(idx, slice) else idx.shape[0]
        edges = dist.bounds(b, S)
        lo, hi = edges[self.s0], edges[self.s1]        # this rank's samples
        swb = None if sw is None else self._rows("sw", sw, idx)
        norm = float(b) if sw is None else math.fsum(swb)
        # A batch of one sample fills one shard: the tree's sum of it is
        # that shard's gradient, written straight into the model's buffer.
        single = self.single or (world.size == 1 and b == 1)
        bounds = None if single else self._shard_bounds(edges, b)
        if not single:
            self.batch_sums.start(edges, bounds, b)
        ctx = StepContext(
            training=True, arena=self.arena, frozen_input=model.input_nodes,
            shards=None if single else (bounds, self.parts, self.trees),
            window=None if single else (b, lo, hi),
            batch_sums=None if single else self.batch_sums)
        serial = False      # the kernels ran on one thread
        if hi > lo:
            rows = (slice(idx.start + lo, idx.start + hi)
                    if isinstance(idx, slice) else idx[lo:hi])
            program = (self._program(b, hi - lo, single, bounds)
                       if self.compiled else None)
            # the compiled step gathers the rows itself, each run of
            # samples by the thread that runs it
            gather = (program is not None and self.augment is None and
                      not isinstance(rows, slice) and rows.shape[0] > 1 and
                      x.dtype == program[0].dtype and
                      x.flags.c_contiguous and x.flags.aligned)
            xb = None if gather else self._rows("x", x, rows)
            yb = self._rows("y", y, rows)
            if self.augment is not None:
                xb = self._augment(xb, rows)
            if program is not None:
                # 1-3 in one call into C: the kernels the layers call,
                # with the same arguments (so the same bits)
                losses, hit, serial = self._run_program(
                    program, xb, yb, swb, lo, hi, norm, ctx,
                    (x, rows) if gather else None)
                serial = serial and single
            else:
                losses, hit = self._layer_step(xb, yb, swb, lo, hi, norm,
                                               ctx)
            if single:
                total, hits = math.fsum(losses), int(np.count_nonzero(hit))
            else:
                # over Python lists: 16 calls a step on slices of NumPy
                # arrays cost more than the sums themselves
                ls, hs = losses.tolist(), hit.tolist()
                for s in range(self.s0, self.s1):
                    a, c = edges[s] - lo, edges[s + 1] - lo
                    if c > a:
                        st = self.stats[s]
                        st[0] = math.fsum(ls[a:c])
                        st[1] = sum(hs[a:c])
        else:
            # no samples here: advance the random streams and take part in
            # the exchanges of batch statistics all the same
            model.skip_batch(b, ctx)
        # 4. reduction of the shard gradients, in the fixed tree
        if not single:
            total, hits = self._reduce([edges[s + 1] > edges[s]
                                        for s in range(S)],
                                       ctx.trees_taken)
        loss = total / norm if norm > 0 else 0.0
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss}{where}; training stopped and the "
                f"weights from before this batch are kept (try a smaller "
                f"learning rate)")
        # 5. the optimizer's update (the model's own flat arrays: checked at
        # a fit's first step, as Optimizer.step checks any arrays)
        opt = model.optimizer
        if type(opt).step is optim.Optimizer.step:
            if self.checked_optimizer is not opt:
                opt._check_arrays(model.flat_params, model.flat_grads)
                self.checked_optimizer = opt
            # on one thread after kernels that ran on one: waking the idle
            # thread took LeNet-5's update from 10 to 27 us at batch 1
            opt._step_unchecked(model.flat_params, model.flat_grads,
                                1 if serial else 0)
        else:
            opt.step(model.flat_params, model.flat_grads)
        return total, hits, norm

    def _layer_step(self, xb, yb, swb, lo, hi, norm, ctx):
        """Forward, loss and backward through the layers; returns the
        per-sample losses and hits."""
        model, m = self.model, hi - lo
        # 1. forward
        logits = model.forward(xb, ctx)
        # 2. loss: per-sample values and the gradient of the batch's
        # (weighted) mean
        _, grad, losses = _ops.softmax_cross_entropy(
            logits, yb, None if swb is None else swb[lo:hi],
            need_grad=True, normalizer=norm, per_sample=True,
            grad_out=self._kept("grad", logits.shape, logits.dtype),
            losses_out=self._kept("losses", (m,), np.float64),
            label_smoothing=self.label_smoothing)
        pred = np.argmax(logits, axis=1,
                         out=self._kept("pred", (m,), np.intp))
        hit = np.equal(pred, yb, out=self._kept("hit", (m,), np.bool_))
        # 3. backward: per-shard parameter gradients into the shard rows
        model.backward(grad, ctx=ctx)
        return losses, hit

    # -- compiled steps ----------------------------------------------------
    def _program(self, b, m, single, bounds):
        """The compiled step for global batches of ``b`` samples, ``m`` of
        them here (made on first use), or None when the model's parameter
        arrays are no longer those it was made for."""
        key = (b, single)
        entry = self.programs.get(key)
        if entry is None:
            entry = self.programs[key] = _compile_step(
                self.model, m, None if single else
                (bounds, self.parts, self.trees))
        params = entry[2]
        for layer, k, a in params:
            if layer.params.get(k) is not a:    # rebound: back to layers
                self.compiled = False
                return None
        return entry

    def _run_program(self, entry, xb, yb, swb, lo, hi, norm, ctx,
                     gather=None):
        """Run the compiled step on xb, or on the rows ``gather`` = (x,
        rows) of x; returns (losses, hits, whether it ran on one
        thread)."""
        program, taken, _, flops = entry
        serial = flops < _SERIAL_FLOPS
        rows = None
        if gather is not None:
            xb, rows = gather
        elif xb.dtype != program.dtype or not (xb.flags.c_contiguous and
                                               xb.flags.aligned):
            xb = np.require(xb, dtype=program.dtype, requirements=["C", "A"])
        self.model._weights_changed()
        program.run(xb, yb, None if swb is None else swb[lo:hi], norm,
                    self.label_smoothing,
                    # a step whose forward is under the plans' limit (on 2
                    # threads, LeNet-5's at batch 1, 0.83 MFLOP: 67.8 us on
                    # one thread, 68.9 on two and up to 1.3x longer while
                    # another process held a core; at batch 2 two threads
                    # were 1.15x faster)
                    nthreads=1 if serial else 0, rows=rows)
        ctx.trees_taken.update(taken)
        return program.losses, program.hit, serial

    def _reduce(self, present, trees_taken=()):
        """Add the shard rows into the model's gradient buffer and the
        statistics into (loss sum, hits): gathered from every rank and
        added in one tree ("ordered"), or each rank's added and the ranks
        summed by MPI ("allreduce")."""
        world, out = self.world, self.model.flat_grads
        t0 = time.perf_counter()
        if self.reduction == "ordered":
            world.allgather_rows(self.rows, self.counts, self.displs)
            shards = range(self.shards)
        else:
            shards = range(self.s0, self.s1)
        for nodes, total in self._reduction(present, shards, trees_taken,
                                            out):
            _ops.tree_sum(nodes, total)
        if self.reduction != "ordered":
            world.allreduce_sum(out)
            world.allreduce_sum(self.sums)
        self.exchange_seconds += time.perf_counter() - t0
        return float(self.sums[0]), int(self.sums[1])

    def _reduction(self, present, shards, trees_taken, out):
        """The tree sums of a step's reduction, (rows, out) pairs: the
        ranges of the gradient not summed by their layers (all of it with
        several ranks), then the statistics.  Made once per pattern of
        present shards and layers that took their trees (the slicing took
        a sixth of the reduction of LeNet-5's step at batch 64)."""
        local = bool(trees_taken) and self.world.size == 1
        # (the pairs hold views of out: its id stays its own while cached)
        key = (tuple(present), frozenset(trees_taken) if local else None,
               id(out))
        pairs = self._reductions.get(key)
        if pairs is None:
            spans = (self._spans_without(trees_taken) if local
                     else [(0, out.size)])
            pairs = [([self.grads[s][lo:hi] if present[s] else None
                       for s in shards], out[lo:hi]) for lo, hi in spans]
            pairs.append(([self.stats[s] if present[s] else None
                           for s in shards], self.sums))
            self._reductions[key] = pairs
        return pairs

    def _shard_bounds(self, edges, b):
        """This rank's shard edges, relative to its first sample (made once
        per batch size)."""
        bounds = self.bounds.get(b)
        if bounds is None:
            bounds = np.array(edges[self.s0:self.s1 + 1], dtype=np.int64)
            bounds -= edges[self.s0]
            self.bounds[b] = bounds
        return bounds

    def _kept(self, key, shape, dtype):
        return self.arena.get(self, key, shape, np.dtype(dtype))

    def _augment(self, xb, rows):
        """The augmented batch ``xb`` (rows ``rows`` of the training set),
        into kept arrays: the draws of each image are those of its index
        under this epoch's key, whichever batch, shard or rank it is in."""
        index = (np.arange(rows.start, rows.stop, dtype=np.int64)
                 if isinstance(rows, slice) else rows)
        return self.augment._run(
            xb, index, self.augment_key,
            lambda slot, shape, dtype: self.arena.get(
                self, ("augment", slot), shape, np.dtype(dtype)))

    def _rows(self, key, a, idx):
        """a[idx]: a view for a slice, else gathered into a kept array."""
        if isinstance(idx, slice):
            return a[idx]
        if idx.shape[0] == 1 and a.flags.c_contiguous:
            # one row: a view, nothing to gather
            i = int(idx[0])
            return a[i:i + 1]
        # (mode="raise" would gather into a temporary first; the indices
        # are a permutation's, always in range)
        return np.take(a, idx, axis=0, mode="clip",
                       out=self._kept(key, idx.shape + a.shape[1:], a.dtype))

    # -- the loop ---------------------------------------------------------
    def fit(self, x, y, sw, xv, yv, initial_epoch, epochs, batch_size,
            shuffle, callbacks, verbose):
        """Run the epochs; returns the History."""
        model = self.model
        history = History()
        callbacks = [history] + list(callbacks)
        # Only rank 0 of a data-parallel run reports progress.
        verbose = verbose if self.world.rank == 0 else 0
        n = x.shape[0]
        nbatches = -(-n // batch_size)
        params = {"epochs": epochs, "steps": nbatches, "verbose": verbose,
                  "rank": self.world.rank}
        for cb in callbacks:
            cb.set_model(model)
            cb.set_params(params)
        model.stop_training = False
        for cb in callbacks:
            cb.on_train_begin({})
        # Under MPI, Ctrl-C ends the job (ranks could not agree on the batch
        # to stop at).
        old_handler = (self._install_sigint() if self.world.size == 1
                       else None)
        try:
            for epoch in range(initial_epoch, epochs):
                logs = self._epoch(epoch, epochs, x, y, sw, xv, yv,
                                   batch_size, shuffle, callbacks, verbose)
                if logs is None:
                    history.interrupted = True
                    break
                if model.stop_training:
                    break
        finally:
            model.clear_caches()
            self.arena.clear()
            history.exchange_seconds = self.exchange_seconds
            if self.batch_sums is not None:
                history.batch_sums_seconds = self.batch_sums.seconds
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        for cb in callbacks:
            cb.on_train_end({})
        return history

    def _epoch(self, epoch, epochs, x, y, sw, xv, yv, batch_size, shuffle,
               callbacks, verbose):
        """One epoch; returns its logs, None when training was
        interrupted."""
        model, opt = self.model, self.model.optimizer
        n = x.shape[0]
        nbatches = -(-n // batch_size)
        if hasattr(opt, "set_epoch"):
            opt.set_epoch(epoch)
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        order = model.rng.permutation(n) if shuffle else None
        if self.augment is not None:
            # one key per epoch: an image's draws are (key, its index)'s
            self.augment_key = int(model.rng.integers(0, 2 ** 64,
                                                      dtype=np.uint64))
        bar = _progress_bar(verbose, epoch, epochs, nbatches)
        t0 = last_post = time.perf_counter()
        seen, loss_sum, weight_sum, correct = 0, 0.0, 0.0, 0
        try:
            for b in range(nbatches):
                if self.interrupt:
                    if verbose:
                        print(f"\nTraining interrupted at epoch {epoch + 1}, "
                              f"batch {b + 1}; the model keeps the weights "
                              f"of the last completed batch.",
                              file=sys.stderr, flush=True)
                    return None
                lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
                idx = slice(lo, hi) if order is None else order[lo:hi]
                total, hits, bw = self.step(
                    x, y, sw, idx, f" at epoch {epoch + 1}, batch {b + 1}")
                seen += hi - lo
                loss_sum += total
                weight_sum += bw
                correct += hits
                for cb in callbacks[1:]:
                    cb.on_batch_end(b, {"loss": total / bw if bw > 0 else 0.0,
                                        "size": hi - lo})
                if bar is not None:
                    bar.update(1)
                    now = time.perf_counter()
                    if now - last_post > 0.2:
                        last_post = now
                        bar.set_postfix(_bar_post(
                            loss_sum / max(weight_sum, 1e-300),
                            correct / seen, seen / max(now - t0, 1e-9)),
                            refresh=False)
            seconds = time.perf_counter() - t0
            logs = {"loss": loss_sum / weight_sum if weight_sum > 0 else 0.0,
                    "accuracy": correct / seen}
            if xv is not None:
                logs.update(evaluate(model, xv, yv, max(batch_size, 256),
                                     self.world, prefix="val_",
                                     label_smoothing=self.label_smoothing))
            logs["lr"] = float(opt.current_lr()) if hasattr(
                opt, "current_lr") else float("nan")
            # Every rank reports rank 0's time, so histories are equal.
            seconds = self.world.bcast(seconds)
            logs["seconds"] = seconds
            logs["images_per_s"] = seen / max(seconds, 1e-9)
            if bar is not None:
                bar.set_postfix(_bar_post(
                    logs["loss"], logs["accuracy"], logs["images_per_s"],
                    logs.get("val_loss"), logs.get("val_accuracy")),
                    refresh=True)
        finally:
            if bar is not None:
                bar.close()
        if verbose == 2 or (verbose == 1 and bar is None):
            print(_epoch_line(epoch, epochs, logs), flush=True)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        return logs

    def _install_sigint(self):
        """Ctrl-C stops at the next batch boundary (a second one at once)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self.interrupt:
                raise KeyboardInterrupt
            self.interrupt = True

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:                 # pragma: no cover
            return None


class BatchSums:
    """Sums over a global batch from the sums of its fixed shards, for the
    layers with batch statistics (:class:`~cnnkit.layers.BatchNorm2D`),
    given to them as the step context's ``batch_sums``.

    A layer computes one row per shard of this rank (``bounds``: the
    shard edges relative to the rank's first sample); :meth:`sum` gathers
    the rows of every rank (``Allgatherv``, whatever the gradient
    reduction) and adds the rows of the shards that hold samples in the
    fixed pairwise tree, so every rank gets the same bits as one process
    with the same shards.  ``n`` is the global batch's sample count.
    """

    def __init__(self, world, shards, s0, s1, counts, displs):
        self.world, self.shards = world, shards
        self.s0, self.s1 = s0, s1
        self.counts, self.displs = counts, displs
        self.rows = {}
        self.present = [True] * shards
        self.bounds = None
        self.n = 0
        #: Seconds spent exchanging and adding (the gather included).
        self.seconds = 0.0
        #: Exchanges made.
        self.calls = 0

    def start(self, edges, bounds, n):
        """The batch of a step: global shard edges, this rank's local
        bounds and the global sample count."""
        self.present = [edges[s + 1] > edges[s] for s in range(self.shards)]
        self.bounds, self.n = bounds, n

    def sum(self, local):
        """The sum over every shard of the batch of ``local`` (this rank's
        shard rows, float64, shape (local shards,) + shape): an array of
        that shape, the same bits on every rank."""
        t0 = time.perf_counter()
        local = np.asarray(local, dtype=np.float64)
        shape = local.shape[1:]
        k = math.prod(shape)
        rows = self.rows.get(k)
        if rows is None:
            rows = self.rows[k] = np.zeros((self.shards, k), np.float64)
        rows[self.s0:self.s1] = local.reshape(self.s1 - self.s0, k)
        self.world.allgather_rows(rows.view(np.uint8), self.counts,
                                  self.displs)
        out = np.empty(k, dtype=np.float64)
        dist.tree_sum([rows[s] if self.present[s] else None
                       for s in range(self.shards)], out)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out.reshape(shape)


def _compilable(model):
    """Whether a compiled step (:func:`_compile_step`) can train the model:
    a chain of Conv2D, Dense, ReLU, MaxPool2D and Flatten layers (exactly
    these classes), each called once, with parameters; no Conv2D with
    ``winograd`` (the step runs the direct sums)."""
    from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    g = getattr(model, "_graph", None)
    if g is None or model.dtype not in (np.float32, np.float64):
        return False
    for i, node in enumerate(g.order):
        layer = node.layer
        if type(layer) not in (Conv2D, Dense, Flatten, MaxPool2D, ReLU) \
                or g.slots[i] != (i,) or g.shared(layer):
            return False
        if type(layer) is Conv2D and (len(layer._op.padding) != 4 or
                                      layer.winograd):
            return False
    return (g.output_slot == len(g.order) and
            any(node.layer.grads for node in g.order))


def _compile_step(model, m, shards):
    """A compiled training step (:class:`cnnkit._kernels.TrainProgram`)
    of the chain model for ``m`` samples, the trees it takes and the
    parameter arrays it binds: ``(program, trees_taken, params)``.

    It runs the kernels the layers run in :meth:`Trainer.step`, in the
    same order with the same arguments: the graph's fusions (a ReLU in
    the epilogue of the convolution before it, and in the backward pass of
    the max pooling after it), the parameter gradients of the whole batch
    (``shards`` None) or of each shard (``shards`` = (bounds, parts,
    trees)), no input gradient for the first layer with parameters, and
    nothing before it in the backward pass (only the input's gradient
    would need it).
    """
    from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    g, dt = model._graph, np.dtype(model.dtype)
    order = g.order
    first = min(i for i, node in enumerate(order) if node.layer.grads)
    vals = [None] * (len(order) + 1)     # slot -> array (None: the input)
    specs, params, taken = [], [], set()
    flops = 0
    shape = g.input.shape
    for i, node in enumerate(order):
        layer, (fstep, _) = node.layer, g.forward_plan[i]
        out = (m,) + tuple(layer.output_shape)
        spec = {"in_shape": shape, "x": vals[i], "fwd": True,
                "bwd": i >= first, "gx": None, "gy": None}
        if type(layer) is Flatten:
            vals[i + 1] = None if vals[i] is None else vals[i].reshape(out)
            spec = None
        elif type(layer) is ReLU and fstep == ABSORBED:
            vals[i + 1] = vals[i]          # the layer before applied it
            spec.update(op="relu", fwd=False, y=vals[i])
        else:
            y = vals[i + 1] = _ops.aligned_empty(out, dt)
            spec["y"] = y
            if isinstance(layer, (Conv2D, Dense)):
                op = layer._op
                w = layer.params["weight"]
                spec.update(weight=w, bias=layer.params.get("bias"))
                flops += 2 * y.size * (w.size // max(w.shape[0], 1))
                if type(layer) is Conv2D:
                    spec.update(op="conv", stride=op.stride,
                                padding=op.padding, dilation=op.dilation,
                                groups=op.groups, relu=fstep == FUSED)
                else:
                    spec["op"] = "dense"
                for k in layer.params:
                    params.append((layer, k, layer.params[k]))
                if shards is None:
                    spec.update(grads="whole", gw=layer.grads["weight"],
                                gb=layer.grads.get("bias"))
                else:
                    parts = shards[1][layer]
                    tree = shards[2].get(layer)
                    if tree is not None and "weight" in tree:
                        spec.update(grads="tree", gw=tree["weight"])
                        taken.add(layer)
                    else:
                        spec.update(grads="parts", gw=parts["weight"])
                    spec["gb"] = parts.get("bias")
            elif type(layer) is ReLU:
                spec["op"] = "relu"
            else:
                op = layer._op
                places = _ops.max_pool_places(
                    (m,) + shape, op.kernel_size, op.stride, op.padding,
                    op.ceil_mode)
                spec.update(op="max_pool", pool_size=op.kernel_size,
                            stride=op.stride, padding=op.padding,
                            ceil_mode=op.ceil_mode, relu=False,
                            idx=np.empty(out, dtype=np.uint8 if places
                                         else np.int64))
        if spec is not None:
            spec["node"] = i
            specs.append(spec)
        shape = tuple(layer.output_shape)
    # the backward pass: gradients per slot, the last one the loss's
    logits = vals[len(order)]
    grads = [None] * (len(order) + 1)
    grads[len(order)] = grad = np.empty_like(logits)
    by_node = {spec["node"]: spec for spec in specs}
    for i in reversed(range(len(order))):
        node, plan = order[i], g.backward_plan[i]
        layer, spec = node.layer, by_node.get(i)
        gy = grads[i + 1]
        if type(layer) is Flatten:
            if gy is not None:
                grads[i] = gy.reshape((m,) + tuple(node.inputs[0].shape))
            continue
        if i < first or plan[0] == ABSORBED:
            spec["bwd"] = False
            continue
        spec["gy"] = gy
        target = i
        if plan[0] == FUSED:               # max pool through the ReLU
            spec["relu"] = True
            target = plan[2]
        if i > first:
            gx = _ops.aligned_empty((m,) + tuple(node.inputs[0].shape), dt)
            spec["gx"] = grads[g.slots[target][0]] = gx
    for spec in specs:
        del spec["node"]
    program = _ops.TrainProgram(specs, dt, tuple(g.input.shape), m, logits,
                                grad, None if shards is None else shards[0])
    return program, frozenset(taken), tuple(params), flops


def _progress_bar(verbose, epoch, epochs, nbatches):
    """A tqdm bar on a terminal or in a notebook with verbose=1, else None
    (logs then get one line per epoch)."""
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:                # pragma: no cover
        return None
    notebook = any(c.__module__.startswith("tqdm.notebook")
                   for c in tqdm.__mro__)
    if not notebook and not sys.stderr.isatty():
        return None
    return tqdm(total=nbatches, desc=f"Epoch {epoch + 1}/{epochs}",
                unit="batch", leave=True, dynamic_ncols=True)


def _bar_post(loss, accuracy, images_per_s, val_loss=None,
              val_accuracy=None):
    """The progress bar's fields, in one order while an epoch runs and at
    its end: loss, acc, img/s, then val_loss, val_acc.  An ordered dict,
    passed as set_postfix's first argument (tqdm sorts keyword fields)."""
    post = OrderedDict([("loss", f"{loss:.4f}"), ("acc", f"{accuracy:.4f}"),
                        ("img/s", f"{images_per_s:.0f}")])
    if val_loss is not None:
        post["val_loss"] = f"{val_loss:.4f}"
        post["val_acc"] = f"{val_accuracy:.4f}"
    return post


def _epoch_line(epoch, epochs, logs):
    parts = [f"Epoch {epoch + 1}/{epochs}", f"{logs['seconds']:.2f}s",
             f"{logs['images_per_s']:.0f} img/s",
             f"loss: {logs['loss']:.4f}",
             f"accuracy: {logs['accuracy']:.4f}"]
    if "val_loss" in logs:
        parts += [f"val_loss: {logs['val_loss']:.4f}",
                  f"val_accuracy: {logs['val_accuracy']:.4f}"]
    return " - ".join(parts)


def evaluate(model, x, y, batch_size, world=dist.LOCAL, prefix="",
             label_smoothing=0.0):
    """Mean softmax cross-entropy (with ``label_smoothing``) and accuracy
    of ``model`` on checked ``(x, y)``: ``{prefix + "loss": ...,
    prefix + "accuracy": ...}``.

    Each rank scores its contiguous part; the per-sample losses are added
    exactly (math.fsum), so the result depends neither on the batching nor
    on how ranks split the data.
    """
    n = x.shape[0]
    edges = dist.bounds(n, world.size)
    lo, hi = edges[world.rank], edges[world.rank + 1]
    losses = np.empty(hi - lo, dtype=np.float64)
    correct = 0
    for i in range(lo, hi, batch_size):
        j = min(hi, i + batch_size)
        logits = model.forward(x[i:j])
        _, _, per = _ops.softmax_cross_entropy(
            logits, y[i:j], None, need_grad=False, per_sample=True,
            label_smoothing=label_smoothing)
        losses[i - lo:j - lo] = per
        correct += int(np.count_nonzero(logits.argmax(axis=1) == y[i:j]))
    parts = world.allgather((losses, correct))
    total = math.fsum(v for part, _ in parts for v in part.tolist())
    return {prefix + "loss": total / n,
            prefix + "accuracy": sum(c for _, c in parts) / n}


def join(world, model, x, y, sw, xv, yv, schedule):
    """Start of a data-parallel fit: check that every rank has the same
    model, data, fit arguments and optimizer state, then take rank 0's
    weights and random state."""
    def digest(a):
        return None if a is None else (
            a.shape, a.dtype.str,
            zlib.crc32(np.ascontiguousarray(a).view(np.uint8)))
    opt = model.optimizer
    dist.check_same(world, "fit arguments (epochs, initial_epoch, "
                    "batch_size, shuffle, label_smoothing, augment)",
                    schedule)
    dist.check_same(world, "optimizers (config, state checksums)", (
        json.dumps(opt.get_config(), sort_keys=True),
        sorted((k, digest(np.asarray(v)))
               for k, v in opt.state_dict().items())))
    config = model.get_config()
    config.pop("seed")
    dist.check_same(world, "models", (json.dumps(config),
                                      model.flat_params.size))
    dist.check_same(world, "training data (shape, dtype, checksum)",
                    (digest(x), digest(y), digest(sw), digest(xv),
                     digest(yv)))
    world.bcast_array(model.flat_params)
    for b in model.buffers():
        world.bcast_array(b.reshape(-1))
    model.rng.bit_generator.state = world.bcast(model.rng.bit_generator.state)


def check_callbacks(callbacks):
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be cnnkit Callback instances, "
                            f"got {type(cb).__name__}")
    return callbacks
