"""Compiled inference plans: a model's whole forward pass in one call.

:func:`compile` turns a built model (a :class:`~cnnkit.Sequential` or a
graph :class:`~cnnkit.Model`) into a :class:`Plan`: a list of steps, each an
existing C kernel, over one preallocated arena of activations, that runs
with one call into C (the GIL released once) instead of one Python call per
layer.  On the way it

- folds each inference batch norm into the convolution or dense layer
  whose output only it reads (:func:`cnnkit.functional.fold_batch_norm`),
  and runs any other batch norm as its own step from the running
  statistics;
- fuses a ReLU into the convolution or residual add whose output only it
  reads (the bits of a separate ReLU), a 2x2 max pooling of stride 2 into
  the convolution before it where the engine can pool in its pass, and the
  add of a residual block (two tensors of one shape) into the convolution
  that computes the second of its inputs, with the ReLU after it: the
  convolution adds the other input to each block of output rows as it
  finishes them (the bits of the separate steps);
- runs chains of convolutions on channel-blocked tensors (blocks of
  64-byte pixels in planes with a zero border): the border is the next
  convolution's padding and each pixel's filters lie side by side, so no
  step pads a copy of its input or transposes its sums into planes (the
  same sums: the same bits), and their 3x3 convolutions of stride 1 by
  Winograd's F(4x4, 3x3) where the output's sides are multiples of 4,
  F(2x2, 3x3) where they are even (unless ``winograd=False``); a chain's
  first convolution, where its input's channels fill less than a block
  (a network's first layer), reads its input in planes and writes blocks,
  with its 2x2 max pooling if it has one, instead of a conversion step;
- drops what does nothing at inference: :class:`~cnnkit.layers.Dropout`,
  and :class:`~cnnkit.layers.Flatten` (a view of the same memory);
- places every activation in one arena, reusing the memory of tensors no
  later step reads.

A layer the plan cannot express makes :func:`compile` raise a
:class:`TypeError` that names it; such a model keeps the layer-by-layer path
in :meth:`~cnnkit.Model.predict`.

Rounding: without batch norm and Winograd (``winograd=False``), a plan
gives the bits of the layer path (``model.forward``).  Folding a batch
norm rounds the folded weight and bias once, and Winograd's
transforms round, so outputs differ from the layer path by a few
units in the last place of the logits' scale: the tests hold every plan
to ``|plan - layers| <= 1e-4 * (1 + max|layers|)`` in float32 and
``1e-10 * (1 + max|layers|)`` in float64.  Results are bit-identical for
any thread count, and each image's result does not depend on the others
in its batch.
"""
import math
import threading

import numpy as np

from . import _inputs, _ops, functional
from . import layers as L

__all__ = ["compile", "Plan", "RTOL32", "RTOL64"]

#: The bound the tests hold a plan to, relative to ``1 + max|logits|`` of
#: the layer path: float32 and float64.
RTOL32 = 1e-4
RTOL64 = 1e-10

_INPUT, _OUTPUT = -1, -2
_TWIN = 1 << 40              # tensor t's blocked twin is tensor _TWIN + t
#: The widest zero border of the blocked layout: a convolution whose
#: padding needs more keeps the plain layout.
_BLOCK_BORDER = 4
#: Whether compile may run chains of convolutions on channel-blocked
#: tensors (off: every tensor in planes, to compare the layouts).
_USE_BLOCKS = True
#: Fewer input channels than this keep the direct sums under Winograd: each
#: of the 16 products of a tile then sums too few terms to repay the
#: transforms (ResNet-20's 3 -> 16 stem: 0.94x).
_WINOGRAD_CHANNELS = 16
#: Whether Winograd steps take F(4x4, 3x3) where it applies (off: F(2x2,
#: 3x3) only, to compare the tiles).
_WINOGRAD4 = True
#: Whether a chain's first convolution may read its plain input and write
#: blocks (off: a step of its own converts, to compare).
_PLAIN_FIRST = True
_ALIGN = 16                  # offsets per image in multiples of 16 elements

#: A batch of less arithmetic than this (floating-point operations, about
#: two per multiply-add) runs on one thread: waking a second one costs
#: more than it saves, or risks more.  On 2 threads (AMD EPYC, AVX-512),
#: the 8x8 default network of ``cnnkit train`` (0.18 MFLOP per image) ran
#: 1.6-2x faster on one thread at batches of 1-2, 1.2x at 4; LeNet-5 (0.83
#: MFLOP) ran 1.1x faster on two at batch 1 on an idle machine (25 against
#: 28 us), and 1.25x slower (a median of 34.6 against 28 us, single runs
#: up to 37) while the host held the other core.  A compiled training
#: step whose forward pass is under it runs on one thread too, and so
#: does the optimizer's update after it.
_SERIAL_FLOPS = 1e6

_ACTIVATIONS = {L.ReLU: "relu", L.Sigmoid: "sigmoid", L.Tanh: "tanh",
                L.SiLU: "silu"}

#: The layers a plan runs, with the options (``get_config`` keys) it
#: understands: a layer with another option runs layer by layer.
_CONV = {"filters", "kernel_size", "stride", "padding", "dilation",
         "use_bias", "groups"}
_POOL = {"pool_size", "stride", "padding", "ceil_mode"}
_KNOWN = {L.Conv2D: _CONV,
          L.DepthwiseConv2D: _CONV - {"filters", "groups"} |
          {"depth_multiplier"},
          L.Dense: {"units", "use_bias"},
          L.BatchNorm2D: {"affine", "eps", "momentum"},
          L.BatchNorm1D: {"affine", "eps", "momentum"},
          L.ReLU: set(), L.LeakyReLU: {"negative_slope"}, L.Sigmoid: set(),
          L.Tanh: set(), L.SiLU: set(), L.GELU: {"approximate"},
          L.Softmax: set(), L.LogSoftmax: set(), L.MaxPool2D: _POOL,
          L.AvgPool2D: _POOL | {"count_include_pad"},
          L.GlobalAvgPool2D: set(), L.GlobalMaxPool2D: set(),
          L.Flatten: set(), L.Dropout: {"rate"}, L.Add: set(),
          L.Multiply: set(), L.Concatenate: {"axis"}}


def _unsupported(layer, why=""):
    return TypeError(
        f"compile: layer {layer.name!r} ({type(layer).__name__}) cannot run "
        f"in a compiled plan{why}; use the layer-by-layer path "
        f"(model.forward)")


class _Builder:
    """Walks a model's graph into plan steps over symbolic tensors (the
    graph's slots), then places the tensors in the arena."""

    def __init__(self, model, dtype, winograd=False):
        self.model, self.dtype, self.winograd = model, dtype, winograd
        self.g = g = model._graph
        self.size = {0: math.prod(g.input.shape)}   # per-image elements
        self.base = {0: 0}                          # slot -> tensor it views
        self.steps = []
        self.folds = []          # (layer, bn) pairs whose weights were folded
        self.flops = 0           # floating-point operations per image

    # -- helpers ----------------------------------------------------------
    def readers(self, i):
        """The calls that read the output of call i."""
        return self.g.readers.get(self.g.order[i].output.uid, [])

    def only_reader(self, i):
        """The one call that reads call i's output, or None (several
        readers, or the model's output)."""
        r = self.readers(i)
        if len(r) != 1 or self.g.order[i].output is self.g.output:
            return None
        return r[0]

    @staticmethod
    def pools_2x2(layer):
        """Whether layer is a plain 2x2 max pooling of stride 2: no
        padding, floor mode, no option the plan does not know."""
        return (type(layer) is L.MaxPool2D and
                tuple(layer.pool_size) == (2, 2) and
                tuple(layer.stride) == (2, 2) and
                not any(layer.padding) and not layer.ceil_mode and
                not set(layer.get_config()) - _KNOWN[L.MaxPool2D] - {"name"})

    def residual(self, mine, k, i):
        """The other input of call k when k is the add of two tensors of one
        shape, one of them slot ``mine`` (the output of the convolution at
        call i, with what it absorbed), the other computed before call i;
        else None."""
        node = self.g.order[k]
        ins = self.g.slots[k]
        if type(node.layer) is not L.Add or len(ins) != 2 or \
                node.inputs[0].shape != node.inputs[1].shape or \
                set(node.layer.get_config()) - _KNOWN[L.Add] - {"name"}:
            return None
        other = ins[1] if ins[0] == mine else ins[0]
        if other == mine or mine not in ins or other > i:
            return None
        return other

    def array(self, a):
        return None if a is None else np.ascontiguousarray(a, self.dtype)

    def emit(self, step, ins, out, size):
        step.setdefault("layers", tuple(self.names))
        self.flops += _flops(step, size)
        self.size[out] = size
        self.base.setdefault(out, out)
        step["in"] = [self.base[k] for k in ins]
        step["out"] = self.base[out]
        self.steps.append(step)

    # -- the walk ---------------------------------------------------------
    def build(self):
        g = self.g
        absorbed = set()
        for i, node in enumerate(g.order):
            if i in absorbed:
                continue
            layer, ins = node.layer, list(g.slots[i])
            self.names = [layer.name]
            in_shape = node.inputs[0].shape
            out_shape = node.output.shape
            out = i + 1
            kind = type(layer)
            if kind not in _KNOWN:
                raise _unsupported(layer)
            extra = set(layer.get_config()) - _KNOWN[kind] - {"name"}
            if extra:
                raise _unsupported(layer, f" (its options {sorted(extra)} "
                                   f"are not compiled)")
            if kind in (L.Conv2D, L.DepthwiseConv2D, L.Dense):
                w = layer.params["weight"]
                b = layer.params.get("bias")
                last = i
                j = self.only_reader(i)
                bn_kind = L.BatchNorm1D if kind is L.Dense else L.BatchNorm2D
                if j is not None and type(g.order[j].layer) is bn_kind:
                    bn = g.order[j].layer
                    w, b = functional.fold_batch_norm(
                        w, b, bn.buffers["running_mean"],
                        bn.buffers["running_var"], bn.params.get("weight"),
                        bn.params.get("bias"), bn.eps)
                    self.folds.append((layer, bn))
                    self.names.append(bn.name)
                    absorbed.add(j)
                    last = j
                res = None
                k = self.only_reader(last)
                if kind is L.Conv2D and k is not None:
                    res = self.residual(last + 1, k, i)
                    if res is not None:
                        # the add of a residual block, in the same pass
                        self.names.append(g.order[k].layer.name)
                        absorbed.add(k)
                        last = k
                act = None
                k = self.only_reader(last)
                if k is not None and type(g.order[k].layer) is L.ReLU:
                    act = "relu"
                    self.names.append(g.order[k].layer.name)
                    absorbed.add(k)
                    last = k
                pool = False
                k = self.only_reader(last)
                if kind is L.Conv2D and k is not None and res is None and \
                        self.pools_2x2(g.order[k].layer) and \
                        _ops.conv_pools(in_shape, w.shape, layer.stride,
                                        layer._op.padding, layer.dilation,
                                        self.dtype, layer._op.groups):
                    # the 2x2 max pooling after it, in the same pass
                    pool = True
                    self.names.append(g.order[k].layer.name)
                    absorbed.add(k)
                    last = k
                out = last + 1
                if kind is L.Dense:
                    step = {"op": "dense", "weight": self.array(w),
                            "bias": self.array(b), "act": act}
                else:
                    step = {"op": "conv", "x_shape": in_shape,
                            "weight": self.array(w), "bias": self.array(b),
                            "stride": layer.stride,
                            "padding": layer._op.padding,
                            "dilation": layer.dilation,
                            "groups": layer._op.groups, "act": act,
                            "pool": pool}
                    if res is not None:
                        step["residual"] = True
                        ins = ins + [res]
                self.emit(step, ins, out, math.prod(g.order[last].output.shape))
            elif kind in (L.BatchNorm2D, L.BatchNorm1D):
                c = in_shape[0]
                self.emit({"op": "batch_norm", "channels": c,
                           "hw": math.prod(in_shape[1:]),
                           "mean": self.array(layer.buffers["running_mean"]),
                           "var": self.array(layer.buffers["running_var"]),
                           "weight": self.array(layer.params.get("weight")),
                           "bias": self.array(layer.params.get("bias")),
                           "param": layer.eps}, ins, out,
                          math.prod(out_shape))
            elif kind in _ACTIVATIONS or kind in (L.LeakyReLU, L.GELU):
                if kind is L.LeakyReLU:
                    act, param = "leaky_relu", layer.negative_slope
                elif kind is L.GELU:
                    act = "gelu_tanh" if layer.approximate == "tanh" \
                        else "gelu"
                    param = 0.0
                else:
                    act, param = _ACTIVATIONS[kind], 0.0
                self.emit({"op": "act", "act": act, "param": param,
                           "size": math.prod(out_shape)}, ins, out,
                          math.prod(out_shape))
            elif kind in (L.Softmax, L.LogSoftmax):
                if len(in_shape) != 1:
                    raise _unsupported(layer, " on samples of shape "
                                       f"{in_shape}")
                self.emit({"op": "softmax" if kind is L.Softmax
                           else "log_softmax", "size": in_shape[0]},
                          ins, out, in_shape[0])
            elif kind in (L.MaxPool2D, L.AvgPool2D):
                step = {"op": "max_pool" if kind is L.MaxPool2D
                        else "avg_pool", "x_shape": in_shape,
                        "kernel": layer.pool_size, "stride": layer.stride,
                        "padding": layer.padding,
                        "ceil_mode": layer.ceil_mode}
                if kind is L.AvgPool2D:
                    step["count_include_pad"] = layer.count_include_pad
                self.emit(step, ins, out, math.prod(out_shape))
            elif kind is L.GlobalAvgPool2D:
                self.emit({"op": "avg_pool", "x_shape": in_shape,
                           "kernel": in_shape[1:], "stride": in_shape[1:],
                           "padding": (0, 0)}, ins, out, in_shape[0])
            elif kind is L.GlobalMaxPool2D:
                self.emit({"op": "global_max_pool", "x_shape": in_shape},
                          ins, out, in_shape[0])
            elif kind in (L.Flatten, L.Dropout):
                self.base[out] = self.base[ins[0]]
                self.size[out] = self.size[ins[0]]
            elif kind in (L.Add, L.Multiply):
                size = math.prod(out_shape)
                act = None
                k = self.only_reader(i)
                if k is not None and type(g.order[k].layer) is L.ReLU:
                    act = "relu"
                    self.names.append(g.order[k].layer.name)
                    absorbed.add(k)
                    out = k + 1
                op = "add" if kind is L.Add else "mul"
                for q in range(1, len(ins)):
                    first = ins[0] if q == 1 else out
                    self.emit({"op": op, "size": size,
                               "act": act if q == len(ins) - 1 else None},
                              [first, ins[q]], out, size)
            elif kind is L.Concatenate:
                shapes = [t.shape for t in node.inputs]
                axis = layer._sample_axis(len(shapes[0]))
                rows = math.prod(out_shape[:axis])
                stride = math.prod(out_shape[axis:])
                total, at = math.prod(out_shape), 0
                for k, s in zip(ins, shapes):
                    size = math.prod(s[axis:])
                    self.emit({"op": "copy", "rows": rows, "size": size,
                               "stride": stride, "at": at, "total": total},
                              [k], out, total)
                    at += size
            else:
                raise _unsupported(layer)
        final = self.base[g.output_slot]
        if final == 0:            # the output is a view of the input
            size = self.size[0]
            self.names = ["output"]
            self.emit({"op": "act", "size": size}, [0], g.output_slot, size)
            final = self.base[g.output_slot]
        return final

    # -- the channel-blocked layout ----------------------------------------
    def block(self, final):
        """Runs chains of convolutions on channel-blocked tensors.

        A convolution the blocked kernel computes (one group, no pooling,
        whole vectors of filters) and that has such a neighbour (the
        convolution that computes its input or residual, or one that reads
        its output), and a convolution Winograd takes (with
        or without a 2x2 max pooling in its pass, neighbours or not),
        reads and writes its tensors in the blocked layout: a
        zero border as wide as the widest padding any of them needs, so
        that no step pads a copy of its input, and each pixel's filters
        side by side, so that no step transposes its sums into planes.  A
        tensor that something else reads, or that comes from something
        else, crosses between the layouts in a step of its own -- except
        into a chain whose first convolution reads fewer channels than a
        block holds (a network's first layer, pooled or not, or the
        chain's first step): that convolution reads its input in planes
        and writes blocks.  The sums are conv2d's forward's, so the bits
        stay the layer path's.
        """
        dt = self.dtype
        lanes = _ops.blocked_lanes(dt) if _USE_BLOCKS else 0
        if not lanes:
            return

        def need(step, wino=False):
            """The narrowest border around the conv's input that the
            blocked kernel (with wino, its Winograd pass) computes it
            from, or None."""
            if step["op"] != "conv" or (step.get("pool") and not wino):
                return None
            for p in range(_BLOCK_BORDER + 1):
                if _ops.conv_blocked(
                        step["x_shape"], step["weight"].shape,
                        step["stride"], step["padding"], step["dilation"],
                        dt, step["groups"], p, winograd=wino,
                        pool=bool(step.get("pool"))):
                    return p
            return None

        def plain(step):
            """Whether the blocked kernel computes the conv (with its
            pooling, if any) from its plain input: a first layer, whose
            few channels fill less than a block (the 8x8 network's 1 ->
            16 with its pooling at batch 256, 1 thread, AVX2: 165 us for
            the conv and its output's conversion, 127 us in one step; the
            plan 1.07-1.11x at batch 256 and 1.2x at batch 1, ResNet-20's
            3 -> 16 stem the same speed)."""
            return (_PLAIN_FIRST and step["op"] == "conv" and
                    step["x_shape"][0] < lanes and
                    not (step.get("pool") and step.get("residual")) and
                    _ops.conv_blocked(
                        step["x_shape"], step["weight"].shape,
                        step["stride"], step["padding"], step["dilation"],
                        dt, step["groups"], -1,
                        pool=bool(step.get("pool"))))

        def winograd(step):
            """Whether the conv runs by Winograd (F(2x2, 3x3), or F(4x4,
            3x3) where tile() says)."""
            return (self.winograd and step["op"] == "conv" and
                    step["x_shape"][0] >= _WINOGRAD_CHANNELS and
                    not (step.get("pool") and step.get("residual")) and
                    np.isfinite(step["weight"]).all() and
                    need(step, True) is not None)

        def tile(step):
            """Winograd's tile for the conv: 4 (F(4x4, 3x3)) where the
            output's sides are multiples of 4, else 2.  F(4x4, 3x3) takes
            36 products per 16 outputs to F(2x2, 3x3)'s 64 (measured on
            AVX2, 1-2 threads, plans alternated: ResNet-20 1.22-1.24x at
            batch 1 and 1.36-1.40x at 16; the 8x8 network 1.16x at batch
            256, but 0.96x at batch 1, where its 4x4 output is one tile
            and each weight load feeds two products)."""
            if _WINOGRAD4 and need(step, 4) is not None:
                return 4
            return 2

        steps = self.steps
        wino = {i for i, st in enumerate(steps) if winograd(st)}
        fits = wino | {i for i, st in enumerate(steps)
                       if need(st) is not None}
        producer = {st["out"]: i for i, st in enumerate(steps)}
        readers = {}
        for i, st in enumerate(steps):
            for t in st["in"]:
                readers.setdefault(t, []).append(i)
        # a convolution with a blocked neighbour, or one by Winograd (its
        # gain pays for the layout steps around it)
        chosen = {i for i in fits
                  if i in wino or
                  any(producer.get(t) in fits for t in steps[i]["in"]) or
                  any(j in fits for j in readers.get(steps[i]["out"], ()))}
        if not chosen:
            return
        tiles = {i: tile(steps[i]) for i in wino}
        # convolutions that read a plain input and write blocks: one
        # outside the chains whose output only the chains read (in place
        # of its own pass and a conversion), and a chain's first, whose
        # input comes from outside and no other step of the chains reads
        # (in place of the input's conversion)
        first = {i for i, st in enumerate(steps)
                 if i not in chosen and st["out"] != final and
                 readers.get(st["out"]) and
                 all(j in chosen for j in readers[st["out"]]) and
                 plain(st)}
        first |= {i for i in chosen - wino
                  if producer.get(steps[i]["in"][0]) not in chosen | first
                  and all(j == i or j not in chosen
                          for j in readers[steps[i]["in"][0]])
                  and plain(steps[i])}
        # the border: the widest padding of a step that reads blocks
        border = max((need(steps[i], tiles.get(i, False))
                      for i in chosen - first), default=0)
        blocked = {}                      # tensor -> its blocked twin
        out = []

        def twin(t, shape, edge=border):
            """The blocked twin of tensor t (shape (c, h, w), a border of
            edge pixels), converted from t by a step of its own unless its
            producer writes it."""
            if t not in blocked:
                b = blocked[t] = _TWIN + t
                self.size[b] = _ops.blocked_size(*shape, edge, lanes)
                self.base[b] = b
                if producer.get(t) not in chosen | first:
                    out.append({"op": "to_blocked", "shape": shape,
                                "border": edge, "layers": (),
                                "in": [t], "out": b})
            return blocked[t]

        for i, st in enumerate(steps):
            if i not in chosen | first:
                out.append(st)
                continue
            y_shape = _conv_out_shape(st)
            if st.get("pool"):
                y_shape = (y_shape[0], y_shape[1] // 2, y_shape[2] // 2)
            if i in first:
                ins = [st["in"][0]]
            else:
                ins = [twin(st["in"][0], tuple(st["x_shape"]))]
            if st.get("residual"):
                ins.append(twin(st["in"][1], y_shape))
            t = st["out"]
            # no border where no step that reads blocks reads the output
            # (the end of a chain: its step writes no border, and the
            # conversion back reads a smaller plane), unless a residual
            # laid out with one is added to it
            edge = border if st.get("residual") or any(
                j in chosen | first for j in readers.get(t, ())) else 0
            step = dict(st, op="conv_blocked",
                        border_in=-1 if i in first else border,
                        border_out=edge, **{"in": ins})
            if i in wino:
                step["winograd"] = tiles[i]
            step["out"] = twin(t, y_shape, edge)  # this step writes it
            out.append(step)
            if t == final or any(j not in chosen
                                 for j in readers.get(t, ())):
                out.append({"op": "from_blocked", "shape": y_shape,
                            "border": edge, "layers": (),
                            "in": [step["out"]], "out": t})
        self.steps = out

    # -- the arena --------------------------------------------------------
    def place(self, final, out_size):
        """Offsets per image for every tensor: first fit, a tensor's memory
        free after the last step that reads it, never shared by a step's
        input and output (an add or product may write its first input)."""
        last = {}
        for s, step in enumerate(self.steps):
            for t in step["in"]:
                last[t] = s
        where = {0: _INPUT, final: _OUTPUT}
        live = []                               # (offset, size, tensor)
        top = 0

        def fit(size):
            off = 0
            for o, sz, _ in sorted(live):
                if o - off >= size:
                    return off
                off = max(off, o + sz)
            return off

        for s, step in enumerate(self.steps):
            t = step["out"]
            if t not in where:
                size = -(-self.size[t] // _ALIGN) * _ALIGN
                off = fit(size)
                live.append((off, size, t))
                where[t] = off
                top = max(top, off + size)
            for u in set(step["in"]):
                if last.get(u) == s and u != t:
                    live[:] = [b for b in live if b[2] != u]
            step["in0"] = where[step["in"][0]]
            if len(step["in"]) > 1:
                step["in1"] = where[step["in"][1]]
            step["out"] = where[t]
            del step["in"]
        logits = -(-top // _ALIGN) * _ALIGN
        return logits + out_size, logits


def compile(model, batch_size=None, dtype=None, winograd=True):
    """A compiled inference plan of ``model``.

    Parameters
    ----------
    model : cnnkit.Model or cnnkit.Sequential
        A built model.
    batch_size : int, optional
        Allocate the arena for batches of this many images now (otherwise
        at the first run, for its batch; a larger batch grows it).
    dtype : {"float32", "float64"}, optional
        The plan's dtype; by default the model's.  In another dtype than
        the model's the plan holds converted copies of the weights.
    winograd : bool, default True
        Run the 3x3 convolutions of stride 1 on a chain of channel blocks
        (at least 16 input channels) by Winograd's minimal filtering:
        F(4x4, 3x3) where the output's height and width are multiples of
        4 (36 products per channel and filter for each 4x4 tile of
        outputs where the direct sums take 144), else F(2x2, 3x3) where
        they are even (16 products for each 2x2 tile where the direct
        sums take 36).  Their rounding differs from the layer path's,
        within the bound the plans are held to (:data:`RTOL32`,
        :data:`RTOL64`); False keeps the layer path's sums, and without
        batch norm its bits.

    Returns
    -------
    Plan

    Raises
    ------
    TypeError
        A layer the plan cannot express (named), or a bad dtype.
    ValueError
        An unbuilt model or a bad batch size.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit import models, plan
    >>> net = models.lenet5(seed=0)
    >>> p = plan.compile(net)
    >>> x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    >>> bool(np.array_equal(p.run(x), net.forward(x)))
    True
    """
    if not getattr(model, "built", False):
        raise ValueError("compile: the model is not built yet; pass "
                         "input_shape to it or call it on data first")
    dt = model.dtype if dtype is None else dtype
    try:
        dt = np.dtype(dt)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"compile: dtype must be 'float32' or 'float64', got "
                        f"{dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size,
                                                  (int, np.integer))):
        raise TypeError(f"compile: batch_size must be an int or None, got "
                        f"{batch_size!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"compile: batch_size must be >= 1, got "
                         f"{batch_size}")
    if not isinstance(winograd, (bool, np.bool_)):
        raise TypeError(f"compile: winograd must be a bool, got "
                        f"{winograd!r}")
    b = _Builder(model, dt, bool(winograd))
    final = b.build()
    b.block(final)
    out_size = math.prod(model.output_shape)
    arena, logits = b.place(final, out_size)
    program = _ops.PlanProgram(b.steps, dt, math.prod(model.input_shape),
                               out_size, arena, logits)
    p = Plan(program, tuple(model.input_shape), tuple(model.output_shape),
             dt, len(b.steps), len(b.folds),
             [_describe(step) for step in b.steps], b.flops,
             sum(bool(step.get("winograd")) for step in b.steps))
    if batch_size is not None:
        nt = _ops.get_num_threads()
        p._reserve(int(batch_size), nt, program.chunk(int(batch_size), nt))
    return p


def _flops(step, size):
    """Floating-point operations of a step on one image whose output has
    ``size`` elements: two per multiply-add, one per element read for
    pooling and copies, one per output element for the element-wise
    steps."""
    op = step["op"]
    if op in ("conv", "conv_blocked", "dense"):
        w = step["weight"]
        if step.get("pool"):
            # size: the pooled output's; the pooling reads 4 per element
            return 2 * 4 * size * (w.size // w.shape[0]) + 4 * size
        return (2 * size * (w.size // w.shape[0]) +
                size * bool(step.get("residual")))
    if op in ("max_pool", "avg_pool", "global_max_pool"):
        return math.prod(step["x_shape"])
    if op == "copy":
        return step["rows"] * step["size"]
    return size


def _conv_out_shape(step):
    """(k, oh, ow) of a conv step's output, before any pooling."""
    c, h, w = step["x_shape"]
    k, _, r, s = step["weight"].shape
    pt, pb, pl, pr = step["padding"]
    (sh, sw), (dh, dw) = step["stride"], step["dilation"]
    return (k, (h + pt + pb - dh * (r - 1) - 1) // sh + 1,
            (w + pl + pr - dw * (s - 1) - 1) // sw + 1)


def _describe(step):
    """One line for a step: what it computes on one image, and the layers
    it runs."""
    op = step["op"]
    if op in ("to_blocked", "from_blocked"):
        shape = "x".join(map(str, step["shape"]))
        return (f"{shape} to channel blocks" if op == "to_blocked" else
                f"{shape} from channel blocks")
    if op in ("conv", "conv_blocked"):
        c, h, w = step["x_shape"]
        k, _, r, s_ = step["weight"].shape
        text = f"conv {c}x{h}x{w} -> {k}, {r}x{s_}"
        if tuple(step["stride"]) != (1, 1):
            text += f" stride {_pair(step['stride'])}"
        if any(step["padding"]):
            text += f" pad {_pair(step['padding'])}"
        if step["groups"] > 1:
            text += f" groups {step['groups']}"
        if op == "conv_blocked" and step.get("border_in") == -1:
            text += " into channel blocks"
        if step.get("winograd") == 4:
            text += " winograd 4x4"
        elif step.get("winograd"):
            text += " winograd"
    elif op == "dense":
        o, f = step["weight"].shape
        text = f"dense {f} -> {o}"
    elif op in ("max_pool", "avg_pool"):
        c, h, w = step["x_shape"]
        text = f"{op} {_pair(step['kernel'])} on {c}x{h}x{w}"
    elif op == "global_max_pool":
        text = "global_max_pool on {}x{}x{}".format(*step["x_shape"])
    elif op == "batch_norm":
        text = f"batch_norm {step['channels']} channels"
    elif op == "copy":
        text = f"copy {step['rows'] * step['size']} elements"
    elif op == "act":
        text = f"{step.get('act') or 'copy'} {step['size']} elements"
    else:
        text = f"{op} {step['size']} elements"
    if step.get("residual"):
        text += " + add"
    if op != "act" and step.get("act"):
        text += f" + {step['act']}"
    if step.get("pool"):
        text += " + max_pool 2"
    return f"{text} ({', '.join(step['layers'])})"


def _pair(v):
    v = tuple(v)
    if len(v) == 4:                     # (top, bottom, left, right)
        v = (v[0], v[2]) if v[0] == v[1] and v[2] == v[3] else v
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


class Plan:
    """A model's forward pass compiled into one call into C.

    Made by :func:`compile` or :meth:`cnnkit.Model.compile`.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        Shapes of one sample.
    dtype : numpy.dtype
    num_steps : int
        The C steps the pass runs.
    folded : int
        The batch normalisations folded into a convolution or dense
        layer.
    winograd : int
        The convolutions run by Winograd's F(2x2, 3x3).
    """

    def __init__(self, program, input_shape, output_shape, dtype, num_steps,
                 folded, labels, flops, winograd=0):
        self._program = program
        self._labels, self._flops = labels, flops
        self.input_shape, self.output_shape = input_shape, output_shape
        self.dtype, self.num_steps, self.folded = dtype, num_steps, folded
        self.winograd = winograd
        # each Python thread runs on its own arena and workspace, so that
        # threads share a plan without waiting for each other
        self._local = threading.local()

    def __repr__(self):
        return (f"<Plan {self.input_shape} -> {self.output_shape}, "
                f"{self.dtype.name}, {self.num_steps} steps>")

    def _reserve(self, n, nthreads, chunk=0):
        """This thread's arena and workspace, grown for n images on
        nthreads threads, whole or in chunks of chunk images."""
        local = self._local
        key = (n, nthreads, chunk)
        if getattr(local, "key", None) == key:
            return local.arena, local.work
        arena = getattr(local, "arena", None)
        need = max(self._program.arena_elements(n, chunk), 1)
        if arena is None or arena.size < need:
            arena = local.arena = _ops.aligned_empty(need, self.dtype)
        work = getattr(local, "work", None)
        need = self._program.workspace_size(n, nthreads, chunk)
        if work is None or work.size < need:
            work = local.work = _ops.aligned_empty(need, self.dtype)
        local.key = key
        return arena, work

    def _checked(self, x):
        """x as a C-contiguous batch of the plan's dtype, refused as
        :meth:`cnnkit.Model.predict` refuses it."""
        if (type(x) is np.ndarray and x.dtype == self.dtype and
                x.shape[1:] == self.input_shape and x.shape[0] > 0 and
                x.flags.c_contiguous and x.flags.aligned and
                _ops.all_finite(x)):
            return x     # a batch as the plan takes it: nothing to convert
        x = _inputs.as_batch(_inputs.real_array(x), self.input_shape, "x")
        return _inputs.checked_batch(x, self.dtype)

    def run(self, x, out=None, probabilities=False):
        """The logits (or, with ``probabilities``, their softmax) of ``x``.

        Parameters
        ----------
        x : array_like of shape (n,) + input_shape
            Or one image (``input_shape``); ``(n, H, W)`` for one channel.
            Converted to the plan's dtype; refused, as by
            :meth:`cnnkit.Model.predict`, when it is not real numbers, has
            another shape, is empty or holds NaN or infinite values.
        out : ndarray of shape (n,) + output_shape, optional
            A C-contiguous array of the plan's dtype to write.
        probabilities : bool, default False
            Return the softmax of the logits (one pass, as
            :meth:`cnnkit.Model.predict_proba`).

        Returns
        -------
        ndarray of shape (n,) + output_shape
        """
        x = self._checked(x)
        if probabilities and len(self.output_shape) != 1:
            raise ValueError(f"run: probabilities need one vector of logits "
                             f"per sample; the output has shape "
                             f"{self.output_shape}")
        return self._run(x, out, bool(probabilities))

    def _run(self, x, out=None, probabilities=False, chunk=None):
        """run on a checked, C-contiguous batch of the plan's dtype (chunk:
        as PlanProgram.run; None chooses)."""
        n = x.shape[0]
        shape = (n,) + self.output_shape
        if out is None:
            out = np.empty(shape, self.dtype)
        elif not (isinstance(out, np.ndarray) and out.shape == shape and
                  out.dtype == self.dtype and out.flags.c_contiguous and
                  out.flags.writeable):
            raise ValueError(
                f"run: out must be a writeable C-contiguous {self.dtype.name} "
                f"array of shape {shape}, got "
                f"{getattr(out, 'dtype', type(out).__name__)} "
                f"{getattr(out, 'shape', '')}")
        # one thread count for sizing and running: the default count may
        # change between two calls (it follows the free CPUs)
        nt = _ops.get_num_threads()
        if nt > 1 and n * self._flops < _SERIAL_FLOPS:
            nt = 1
        if chunk is None:
            chunk = self._program.chunk(n, nt)
        arena, work = self._reserve(n, nt, chunk)
        self._program.run(x, out, arena, work, probabilities, nt, chunk)
        return out

    def profile(self, x, repeats=5):
        """Time each step of the plan on a batch.

        The batch runs ``repeats`` times, whole and step after step (each
        step's kernel with the current thread count, as :meth:`run` does
        for small batches; large batches run in chunks of images, whose
        steps are not timed one by one), after one untimed run.

        Parameters
        ----------
        x : array_like of shape (n,) + input_shape
            Checked and converted as by :meth:`run`.
        repeats : int, default 5

        Returns
        -------
        list of (str, float)
            One ``(step, seconds)`` pair per step, in order: what the step
            computes on one image and the layers it runs, and its median
            wall-clock time over the repeats.

        Examples
        --------
        >>> import cnnkit
        >>> net = cnnkit.models.lenet5(seed=0)
        >>> steps = net.compile().profile(np.zeros((8, 1, 28, 28)))
        >>> steps[0][0].split(" (")[0]       # then the layers it runs
        'conv 1x28x28 -> 6, 5x5 pad 2 + relu'
        >>> len(steps) == net.compile().num_steps
        True
        """
        if isinstance(repeats, bool) or not isinstance(repeats, int) \
                or repeats < 1:
            raise ValueError(f"profile: repeats must be a positive int, got "
                             f"{repeats!r}")
        x = self._checked(x)
        n = x.shape[0]
        out = np.empty((n,) + self.output_shape, self.dtype)
        nt = _ops.get_num_threads()
        arena, work = self._reserve(n, nt, 0)
        self._program.run(x, out, arena, work, False, nt, 0)
        runs = np.zeros((repeats, self.num_steps + 1))
        for r in range(repeats):
            self._program.run(x, out, arena, work, False, nt, 0, runs[r])
        med = np.median(runs[:, :self.num_steps], axis=0)
        return [(label, float(t)) for label, t in zip(self._labels, med)]
