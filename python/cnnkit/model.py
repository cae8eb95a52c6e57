"""Models: a graph of layers with shapes, weights and state.

:class:`Model` is what every model shares: the flat parameter and gradient
buffers (every parameter in one contiguous array, every gradient in
another, in PyTorch ``state_dict`` order; each layer's parameters are views
into them), the weights API (``get_weights``, ``state_dict``, ...),
prediction, evaluation, pickling, saving and the summary, and ``fit``,
which hands the model to :class:`cnnkit.trainer.Trainer`.  A subclass says
what the graph is and how it computes: :class:`Sequential` is a chain.

All randomness (initialisation, shuffling, dropout) comes from the model's
seeded :class:`numpy.random.Generator`.
"""
import json
import math

import numpy as np

from . import _context, _format, _inputs, _ops, _summary, functional
from . import distributed as dist
from . import optim
from . import plan as _plan
from . import trainer as _trainer
from . import transforms as _transforms
from ._checks import MAX_ELEMENTS, check_int, check_keys, is_int
from ._graph import (ABSORBED, FUSED, PLAIN, THROUGH, Input, Node,
                     SymbolicTensor, symbolic_args, topological_order)
from ._version import __version__
from .layers import LAYERS, Layer

__all__ = ["Model", "Sequential"]



def _copy_folded(new, layer, bn):
    """Write ``layer``'s weights and buffers into its copy ``new``, with the
    inference-mode batch norm ``bn`` (or None) folded into them."""
    if bn is None:
        for k, v in layer.params.items():
            new.params[k][...] = v
        for k, v in layer.buffers.items():
            new.buffers[k][...] = v
        return
    w, b = functional.fold_batch_norm(
        layer.params["weight"], layer.params.get("bias"),
        bn.buffers["running_mean"], bn.buffers["running_var"],
        bn.params.get("weight"), bn.params.get("bias"), bn.eps)
    new.params["weight"][...] = w
    new.params["bias"][...] = b

class Model:
    """A graph of layers from an input to an output (Keras's functional
    API); also the base of :class:`Sequential`, so both share training,
    prediction, weights, state, saving and the summary.

    Parameters
    ----------
    inputs : SymbolicTensor
        The tensor of :func:`cnnkit.Input` the graph starts from (or a list
        holding it).
    outputs : SymbolicTensor
        The tensor the graph computes: the logits (or a list holding it).
    seed : int, optional
        Seed of the generator behind initialisation, shuffling and dropout.
    dtype : {"float32", "float64"}, default "float32"

    Attributes
    ----------
    layers : list of Layer
        Every layer of the graph, in the order they were first called (the
        order of :meth:`get_weights`).
    input_shape, output_shape : tuple of int or None
        Shapes of one sample, set when the model is built.
    built : bool
        Whether shapes and parameters exist.
    dtype : numpy.dtype
        float32 or float64.
    rng : numpy.random.Generator
        The seeded generator behind initialisation, shuffling and dropout.
    optimizer : cnnkit.optim.Optimizer or None
        The optimizer of the last :meth:`fit` (or of a loaded file).
    metadata : dict
        What :func:`cnnkit.load_model` read from the file's ``metadata``
        (written by ``save(path, metadata=...)``); empty for a new model.
    stop_training : bool
        Set by a callback to end :meth:`fit` after the current epoch.

    Notes
    -----
    A tensor read by several layers gets the sum of their gradients, added
    in a fixed order; a layer called several times shares its weights, and
    its gradients are summed the same way.  Calling a model on a tensor
    calls its layers again (the same weights), so blocks compose.
    Parameters are named ``"<layer name>.<parameter>"`` in
    :meth:`state_dict`.

    Examples
    --------
    >>> import cnnkit
    >>> from cnnkit import layers as L
    >>> inp = cnnkit.Input((1, 8, 8))
    >>> x = L.ReLU()(L.Conv2D(8, 3, padding=1)(inp))
    >>> y = L.Conv2D(8, 3, padding=1)(L.ReLU()(L.Conv2D(8, 3, padding=1)(x)))
    >>> x = L.ReLU()(L.Add()([x, y]))
    >>> out = L.Dense(10)(L.Flatten()(L.GlobalAvgPool2D()(x)))
    >>> model = cnnkit.Model(inp, out, seed=0)
    >>> model.output_shape
    (10,)
    """

    def __init__(self, inputs=None, outputs=None, seed=None,
                 dtype="float32"):
        self._init_state(seed, dtype)
        if inputs is None or outputs is None:
            raise TypeError("Model(inputs, outputs): give the input tensor "
                            "(cnnkit.Input(shape)) and the output tensor the "
                            "layers computed from it")
        self._init_graph(inputs, outputs)
        self.build(self.input_shape)

    def _init_state(self, seed, dtype):
        """What every model holds before its graph: dtype, seed, generator,
        empty buffers."""
        name = type(self).__name__
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(
                f"{name}: dtype must be 'float32' or 'float64', got "
                f"{dtype!r}")
        if seed is not None and not is_int(seed):
            raise TypeError(f"{name}: seed must be an int or None, got "
                            f"{seed!r}")
        self.seed = None if seed is None else int(seed)
        self.dtype = dt
        self.rng = np.random.default_rng(self.seed)
        self.input_shape = None
        self.output_shape = None
        self.built = False
        self.optimizer = None
        self.metadata = {}
        self.stop_training = False
        self._flat_params = np.zeros(0, dtype=dt)
        self._flat_grads = np.zeros(0, dtype=dt)
        self._names = []
        self._buffer_names = []
        self._saved = {}
        self._plan_cache = None

    def _init_graph(self, inputs, outputs):
        self._graph = _Graph(_single(inputs, "inputs"),
                             _single(outputs, "outputs"))
        self.layers = self._graph.layers
        self.input_shape = self._graph.input.shape

    # ------------------------------------------------------------------
    # building
    # ------------------------------------------------------------------
    def build(self, input_shape):
        """Infer every layer's shapes, allocate and initialise parameters.

        Called by the constructor when ``input_shape`` is given, otherwise
        on the first data the model sees.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one sample, ``(C, H, W)``, or ``(H, W)`` for one
            channel.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When a layer cannot take its input, naming the layer and the
            shapes.
        """
        shape, specs, out = self._infer_shapes(input_shape)
        total = sum(math.prod(s) for spec in specs for s in spec.values())
        # In a graph, layers whose weights another model holds (a block
        # called inside it, an encoder two models share) keep their values;
        # a Sequential initialises its layers, as it always has.
        kept = {} if isinstance(self, Sequential) else {
            layer: {k: v.copy() for k, v in layer.params.items()}
            for layer, spec in zip(self.layers, specs)
            if spec and self._bound_elsewhere(layer, spec)}
        self._flat_params = np.zeros(total, dtype=self.dtype)
        self._flat_grads = np.zeros(total, dtype=self.dtype)
        self._names = []
        off = 0
        for layer, (prefix, spec) in zip(self.layers, zip(
                self._param_prefixes(), specs)):
            params, grads = {}, {}
            for name, s in spec.items():
                size = math.prod(s)
                params[name] = self._flat_params[off:off + size].reshape(s)
                grads[name] = self._flat_grads[off:off + size].reshape(s)
                self._names.append((f"{prefix}.{name}", layer, name))
                off += size
            layer.bind(params, grads)
        for layer, before_relu in zip(self.layers, self._before_relu()):
            if layer in kept:
                for k, v in kept[layer].items():
                    layer.params[k][...] = v
            else:
                layer.initialize(self.rng, before_relu)
        self._bind_buffers()
        self.input_shape, self.output_shape = shape, out
        self.built = True
        self._weights_changed()
        return self

    def _layer_buffer_specs(self, layer):
        """The layer's buffers as ``{name: (shape, dtype)}``, the model's
        dtype for the float ones."""
        spec = layer.buffer_shapes(layer.input_shape)
        return {k: (tuple(int(d) for d in s),
                    self.dtype if dt is None else np.dtype(dt))
                for k, (s, dt) in spec.items()}

    def _bind_buffers(self):
        """Allocate each layer's buffers (its state that is not trained)
        and give them their initial values.  In a graph, a layer whose
        buffers another model allocated keeps them, as it keeps its
        weights; a Sequential starts its layers afresh."""
        own = {id(layer.buffers.get(name))
               for _, layer, name in self._buffer_names}
        self._buffer_names = []
        for layer, prefix in zip(self.layers, self._param_prefixes()):
            want = self._layer_buffer_specs(layer)
            if not want:
                continue
            cur = layer.buffers
            keep = (not isinstance(self, Sequential)
                    and list(cur) == list(want)
                    and all(cur[k].shape == s and cur[k].dtype == dt and
                            id(cur[k]) not in own
                            for k, (s, dt) in want.items()))
            if not keep:
                layer.bind_buffers({k: np.zeros(s, dtype=dt)
                                    for k, (s, dt) in want.items()})
                layer.reset_buffers()
            for k in want:
                self._buffer_names.append((f"{prefix}.{k}", layer, k))

    def _bound_elsewhere(self, layer, spec):
        """Whether the layer's parameters, of the shapes ``spec`` asks for,
        are views of another model's buffer (not this model's)."""
        params = layer.params
        return (set(params) == set(spec)
                and all(params[k].shape == tuple(s) for k, s in spec.items())
                and not any(np.shares_memory(p, self._flat_params)
                            for p in params.values()))

    def parameter_shapes(self, input_shape=None):
        """The parameters a built model has, without allocating them:
        ``{state_dict name: shape}`` in :meth:`state_dict` order.

        Parameters
        ----------
        input_shape : tuple of int, optional
            Shape of one sample; by default the model's.

        Returns
        -------
        dict of str to tuple of int
        """
        shape = self.input_shape if input_shape is None else input_shape
        if shape is None:
            raise ValueError(f"{type(self).__name__}.parameter_shapes: the "
                             f"model has no input shape; pass input_shape")
        if self.built and self._check_input_shape(
                shape, type(self).__name__) != self.input_shape:
            raise ValueError(f"{type(self).__name__}.parameter_shapes: the "
                             f"model is built for input shape "
                             f"{self.input_shape}, not {tuple(shape)}")
        _, specs, _ = self._infer_shapes(tuple(shape))
        return {f"{prefix}.{name}": tuple(s)
                for prefix, spec in zip(self._param_prefixes(), specs)
                for name, s in spec.items()}

    def buffer_shapes(self, input_shape=None):
        """The buffers (state that is not trained: running statistics) a
        built model has, without allocating them: ``{state_dict name:
        (shape, dtype)}`` in :meth:`state_dict` order.

        Parameters
        ----------
        input_shape : tuple of int, optional
            Shape of one sample; by default the model's.

        Returns
        -------
        dict of str to (tuple of int, numpy.dtype)
        """
        shape = self.input_shape if input_shape is None else input_shape
        self.parameter_shapes(shape)          # checks, builds the layers
        return {f"{prefix}.{k}": v
                for layer, prefix in zip(self.layers, self._param_prefixes())
                for k, v in self._layer_buffer_specs(layer).items()}

    @staticmethod
    def _check_input_shape(input_shape, owner):
        shape = tuple(input_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if not shape or any(not is_int(d) or d < 1 for d in shape):
            raise ValueError(
                f"{owner}: input_shape must be positive ints, e.g. "
                f"(C, H, W); got {tuple(input_shape)}")
        return tuple(int(d) for d in shape)

    @staticmethod
    def _check_param_total(specs, owner):
        total = sum(math.prod(s) for spec in specs for s in spec.values())
        if total > MAX_ELEMENTS:
            raise ValueError(f"{owner}: {total} parameters are more than "
                             f"cnnkit supports (2**62)")

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}.{what}: the model is not built yet; "
                f"pass input_shape to {type(self).__name__} or call it on "
                f"data first")

    @property
    def flat_params(self):
        """Every parameter in one contiguous array (the layers' parameters
        are views into it), in :meth:`state_dict` order."""
        return self._flat_params

    @property
    def flat_grads(self):
        """Every gradient of the last backward pass in one contiguous array,
        laid out as :attr:`flat_params`."""
        return self._flat_grads

    def is_shared(self, layer):
        """Whether ``layer`` is called more than once in the model (its
        parameter gradients are then the sum of its calls')."""
        return self._graph.shared(layer)

    def grad_offsets(self):
        """Per layer with parameters: ``(layer, {name: (offset, shape)})``,
        where its gradients lie in :attr:`flat_grads` (offsets in
        elements)."""
        out, off, by_layer = [], 0, {}
        for _, layer, name in self._names:
            shape = layer.grads[name].shape
            if layer not in by_layer:
                by_layer[layer] = {}
                out.append((layer, by_layer[layer]))
            by_layer[layer][name] = (off, shape)
            off += math.prod(shape)
        return out

    # ------------------------------------------------------------------
    # the graph
    # ------------------------------------------------------------------
    @property
    def input_nodes(self):
        """The calls that read only the model's input: a training step
        skips their input gradient."""
        return self._graph.input_nodes

    def _param_prefixes(self):
        """The state_dict prefix of each layer: its name."""
        return [layer.name for layer in self.layers]

    def _before_relu(self):
        """Per layer: whether every layer reading its first call's output,
        looking through layers transparent to initialisation, is an
        element-wise ReLU."""
        return [self._graph.feeds_relu(layer) for layer in self.layers]

    def _infer_shapes(self, input_shape):
        """Shape inference without allocating anything: the input shape,
        each layer's parameter shapes and the output shape."""
        g = self._graph
        shape = self._check_input_shape(input_shape, "Model")
        if shape != g.input.shape:
            raise ValueError(f"Model: the graph's input has shape "
                             f"{g.input.shape}; got input_shape {shape}")
        specs = [layer.param_shapes(g.first_input_shape(layer))
                 for layer in self.layers]
        self._check_param_total(specs, "Model")
        return shape, specs, g.output.shape

    def forward(self, x, training=False):
        """Logits for a batch, without checks or conversion.

        Parameters
        ----------
        x : ndarray of shape (n,) + input_shape
            In the model's dtype.
        training : bool or StepContext, default False
            Keep what :meth:`backward` needs and apply dropout (the trainer
            passes its step context).

        Returns
        -------
        logits : ndarray of shape (n,) + output_shape

        Notes
        -----
        The nodes run in a topological order computed once; an activation
        is dropped as soon as its last reader has run (the layers keep
        what their backward pass needs while training).  A layer whose
        forward pass can apply the element-wise layer that alone reads its
        output runs the two as one pass, as :class:`Sequential` does.
        """
        g = self._graph
        ctx = _context.as_context(training)
        if ctx:
            self._weights_changed()       # batch norm's running statistics
        values = [None] * (len(g.order) + 1)
        values[0] = x
        keep = bool(ctx) and g.has_shared
        for i, node in enumerate(g.order):
            ctx.node = i
            layer, (step, op) = node.layer, g.forward_plan[i]
            ins = g.slots[i]
            arg = (values[ins[0]] if layer.num_inputs == 1
                   else [values[k] for k in ins])
            if step is _PLAIN:
                y = layer.forward(arg, ctx)
            elif step is _FUSED:
                y = layer.forward(arg, ctx, epilogue=op)
            else:
                y = layer.fused_forward(arg, ctx)
            if keep and g.shared(layer):
                self._saved[i] = dict(vars(layer))
            values[i + 1] = y
            for k in g.free_after[i]:
                values[k] = None
        return values[g.output_slot]

    def backward(self, grad, input_grad=True, ctx=None):
        """Backpropagate ``grad`` (d loss / d logits) through the graph of
        the last training forward pass; fills the gradients and returns d
        loss / d input.

        Parameters
        ----------
        grad : ndarray of shape (n,) + output_shape
        input_grad : bool, default True
            Whether to compute the gradient with respect to the input.
        ctx : StepContext, optional
            The trainer's step context (it then decides, and
            ``input_grad`` is not read).

        Returns
        -------
        grad_x : ndarray of shape (n,) + input_shape, or None

        Notes
        -----
        The nodes run in reverse topological order.  A tensor read by
        several nodes gets their gradients added as they arrive, the
        last reader's first; a layer called several times gets the
        parameter gradients of its calls added in the same order.  Both
        orders are fixed by the graph, so results do not depend on the
        thread count or on the batch.
        """
        g = self._graph
        self._weights_changed()           # the optimizer's step follows
        if ctx is None:
            ctx = _context.StepContext(
                training=True,
                frozen_input=() if input_grad else self.input_nodes)
        grads = [None] * (len(g.order) + 1)
        grads[g.output_slot] = grad
        sums = {}
        for i in reversed(range(len(g.order))):
            node = g.order[i]
            layer, plan = node.layer, g.backward_plan[i]
            if plan[0] is _ABSORBED:
                continue       # the element-wise layer another one ran
            out = plan[2] + 1 if plan[0] is _THROUGH else i + 1
            gy, grads[out] = grads[out], None
            if gy is None:
                continue
            ctx.node = i
            if i in self._saved:
                vars(layer).update(self._saved[i])
            if plan[0] is _FUSED:
                result = layer.backward(gy, ctx, prologue=plan[1])
                targets = g.slots[plan[2]]
            elif plan[0] is _THROUGH:
                result = layer.backward(gy, ctx, epilogue=plan[1])
                targets = g.slots[i]
            else:
                result = layer.backward(gy, ctx)
                targets = g.slots[i]
            if layer.grads and g.shared(layer):
                self._add_param_grads(layer, ctx, sums)
            if layer.num_inputs == 1:
                if result is not None:
                    self._add_grad(grads, targets[0], result, ctx)
            else:
                for k, gk in zip(targets, result):
                    if gk is not None:
                        self._add_grad(grads, k, gk, ctx)
        for layer, held in sums.items():
            shard = ctx.shard_parts(layer)
            dest = shard[1] if shard is not None else layer.grads
            for k, a in held.items():
                dest[k][...] = a
        return grads[0] if input_grad else None

    def _add_grad(self, grads, k, g, ctx):
        """grads[k] += g, in a new or kept array (the arrays layers return
        are read only)."""
        prev = grads[k]
        if prev is None:
            grads[k] = g
        else:
            out = ctx.buffer(self, ("sum", k), g.shape, g.dtype)
            if _ops.eltwise_in_place(prev, g):
                grads[k] = _ops.eltwise(prev, g, out=out)
            else:
                grads[k] = np.add(prev, g, out=out)

    def _add_param_grads(self, layer, ctx, sums):
        """Add the parameter gradients this call of a shared layer wrote
        (the whole batch's, or each shard's) to what its later calls
        wrote."""
        shard = ctx.shard_parts(layer)
        dest = shard[1] if shard is not None else layer.grads
        held = sums.get(layer)
        if held is None:
            sums[layer] = {k: a.copy() for k, a in dest.items()}
        else:
            for k, a in dest.items():
                np.add(held[k], a, out=held[k])

    def skip_batch(self, n, ctx=None):
        """Advance the layers' random streams as a training pass over ``n``
        samples would, once per call (a rank of a data-parallel run whose
        part of a batch is empty); with the trainer's step context, also
        take part in the exchanges of the layers with batch statistics, in
        the order a forward and a backward pass make them."""
        order = self._graph.order
        for node in order:
            node.layer.skip_batch(n)
        if ctx is None or getattr(ctx, "batch_sums", None) is None:
            return
        for i, node in enumerate(order):
            ctx.node = i
            node.layer.skip_exchange(ctx, False)
        for i in reversed(range(len(order))):
            ctx.node = i
            order[i].layer.skip_exchange(ctx, True)

    def clear_caches(self):
        """Drop what the layers kept for a backward pass."""
        self._saved = {}
        for layer in self.layers:
            layer.clear_cache()

    # ------------------------------------------------------------------
    # computing
    # ------------------------------------------------------------------
    def __call__(self, x, training=False):
        """Logits of x, after checking and converting it.

        Called on a symbolic tensor (inside a graph being built), it calls
        the model's layers on it instead and returns the output tensor: the
        model is a block of another model, with the same weights.

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
            Or one image, (C, H, W) or (H, W) for one channel.
        training : bool, default False
            As in :meth:`forward`.

        Returns
        -------
        logits : ndarray of shape (n,) + output_shape
        """
        if symbolic_args(x)[1]:
            return self._replay(_single(x, "inputs"))
        x = self._prepare_x(x, check_finite=False)
        if training is False:
            plan = self._inference_plan()
            # Winograd's transforms may turn an infinity into NaN where
            # the layers' sums keep it: non-finite input takes the layers
            if plan is not None and (not plan.winograd or
                                     _ops.all_finite(x)):
                return plan._run(x)
        return self.forward(x, training)

    def _replay(self, tensor):
        return self._graph.replay(tensor)

    def _require_logits(self, what):
        """ValueError unless the output is a vector of logits per sample
        (a model built as a block of another may end anywhere)."""
        if self.output_shape is not None and len(self.output_shape) != 1:
            raise ValueError(
                f"{type(self).__name__}.{what}: the model's output has shape "
                f"{self.output_shape} per sample; {what} needs one vector of "
                f"logits, shape (classes,) (end with Flatten or "
                f"GlobalAvgPool2D and Dense)")

    def _per_batch(self, x, batch_size, tail, dtype, fn, proba=False):
        """``fn(logits)`` of checked ``x``, ``batch_size`` images per
        forward pass, into one array of shape (n,) + tail; the compiled
        plan's pass when the model compiles (with ``proba``, its softmax
        straight into the result)."""
        x = self._prepare_x(x)
        _check_batch_size(batch_size)
        out = np.empty((x.shape[0],) + tail, dtype=dtype)
        plan = self._inference_plan()
        proba = proba and plan is not None and len(plan.output_shape) == 1
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            if proba:
                plan._run(xb, out[i:i + xb.shape[0]], True)
                continue
            logits = self.forward(xb) if plan is None else plan._run(xb)
            out[i:i + logits.shape[0]] = fn(logits)
        return out

    # ------------------------------------------------------------------
    # compiled plans
    # ------------------------------------------------------------------
    def compile(self, batch_size=None, dtype=None, winograd=True):
        """The model's forward pass compiled into one call into C
        (:func:`cnnkit.plan.compile`).

        The returned plan holds copies of some weights (dense weights,
        stored transposed, and the weights of a convolution or dense
        layer with the batch norm after it folded in): compile again
        after changing weights.  :meth:`predict`,
        :meth:`predict_proba` and ``model(x)`` keep their own plan, which
        every cnnkit path that writes weights (:meth:`fit`,
        :meth:`set_weights`, :meth:`load_state_dict`, a training pass)
        marks stale; after writing into the arrays of :meth:`parameters`
        or :meth:`buffers` directly, call this method, which marks it
        stale too.

        Parameters
        ----------
        batch_size : int, optional
            Reserve the arena for batches of this many images now.
        dtype : {"float32", "float64"}, optional
            The plan's dtype; the model's by default.
        winograd : bool, default True
            Run 3x3 convolutions of stride 1 on channel blocks by
            Winograd's F(4x4, 3x3) or F(2x2, 3x3) where they apply (see
            :func:`cnnkit.plan.compile`); False keeps the layers' sums.

        Returns
        -------
        cnnkit.plan.Plan

        Raises
        ------
        TypeError
            A layer the plan cannot express, named.

        Examples
        --------
        >>> import numpy as np
        >>> from cnnkit import models
        >>> net = models.lenet5(seed=0)
        >>> plan = net.compile()
        >>> plan.run(np.zeros((1, 1, 28, 28))).shape
        (1, 10)
        """
        self._require_built("compile")
        self._weights_changed()
        return _plan.compile(self, batch_size=batch_size, dtype=dtype,
                             winograd=winograd)

    def _weights_changed(self):
        """Mark every cached plan stale: called by each cnnkit path that
        writes parameters or buffers (build, set_weights and
        load_state_dict, a training forward pass, backward, fit).  The
        count is shared by all models, since layers may be shared between
        models (a block trained inside a bigger model, which also binds
        the block's layers to its own arrays)."""
        _WEIGHTS_VERSION[0] += 1

    def _inference_plan(self):
        """The plan of the current structure and weights, compiled when
        they changed since the last one; None when the model cannot
        compile (it then runs layer by layer)."""
        if not self.built:
            return None
        graph = self._graph
        key = (_WEIGHTS_VERSION[0], self.dtype)
        cache = getattr(self, "_plan_cache", None)
        if cache is not None and cache[0] is graph and cache[1] == key:
            return cache[2]
        try:
            plan = _plan.compile(self)
        except (TypeError, ValueError):
            plan = None
        self._plan_cache = (graph, key, plan)
        return plan

    def predict_proba(self, x, batch_size=256):
        """Class probabilities (softmax of the logits), shape (n, classes).

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
            Or one image, (C, H, W) or (H, W) for one channel.
        batch_size : int, default 256
            Images per forward pass.

        Returns
        -------
        proba : ndarray of shape (n, classes), in the model's dtype
        """
        return self._per_batch(x, batch_size, self.output_shape, self.dtype,
                               _ops.softmax, proba=True)

    def predict(self, x, batch_size=256):
        """Predicted class indices: the index of the largest logit of each
        image, as in :meth:`predict_proba` (the same ``x`` and
        ``batch_size``).

        Returns
        -------
        classes : ndarray of int64, shape (n,)
        """
        return self._per_batch(x, batch_size, (), np.int64,
                               lambda logits: logits.argmax(axis=1))

    def evaluate(self, x, y, batch_size=256):
        """Mean softmax cross-entropy and accuracy on (x, y).

        Parameters
        ----------
        x : array_like of shape (n, C, H, W), or (n, H, W) for one channel
            Or one image, (C, H, W) or (H, W) for one channel.
        y : array_like of int, shape (n,)
            Class indices.
        batch_size : int, default 256
            Images per forward pass.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``; the per-sample losses
            are added exactly, so the result does not depend on batching.
            The loss is the plain cross-entropy, whatever
            ``label_smoothing`` :meth:`fit` trained with.
        """
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape[0])
        _check_batch_size(batch_size)
        return _trainer.evaluate(self, x, y, batch_size)

    # ------------------------------------------------------------------
    # data checks
    # ------------------------------------------------------------------
    def _prepare_x(self, x, name="x", check_finite=True):
        x = _inputs.real_array(x, name)
        if self.built:
            x = _inputs.as_batch(x, self.input_shape, name)
        else:
            if x.ndim == 3:
                x = x[:, None]
            if x.ndim < 2:
                raise ValueError(
                    f"{name} must have shape (n, C, H, W) or (n, H, W); got "
                    f"{x.shape}")
            self.build(x.shape[1:])
        return _inputs.checked_batch(x, self.dtype, name, check_finite)

    def _check_augment(self, augment):
        """``augment`` must be None or a transform that keeps the images'
        shape (the model's input shape)."""
        if augment is None:
            return
        if not isinstance(augment, _transforms.Transform):
            raise TypeError(f"augment must be a cnnkit.transforms transform "
                            f"or None, got {augment!r}")
        shape = tuple(self.input_shape)
        out = augment.output_shape(shape)
        if out != shape:
            raise ValueError(
                f"augment must keep the image shape {shape} (the model's "
                f"input), but {augment!r} makes {out}; crop with size=None "
                f"or the image's size")

    def _prepare_weights(self, sample_weight, n):
        if sample_weight is None:
            return None
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be real numbers, got dtype "
                            f"{sw.dtype}")
        if sw.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},) to match "
                             f"x; got {sw.shape}")
        sw = sw.astype(np.float64)
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise ValueError("sample_weight must be finite and >= 0")
        return sw

    def _prepare_y(self, y, n, name="y"):
        self._require_logits("fit and evaluate")
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(
                f"{name} must hold integer class indices, got dtype "
                f"{y.dtype}")
        if y.shape != (n,):
            raise ValueError(
                f"{name} must have shape ({n},) to match x; got {y.shape}")
        classes = self.output_shape[-1]
        if y.size and (y.min() < 0 or y.max() >= classes):
            bad = y.min() if y.min() < 0 else y.max()
            raise ValueError(
                f"{name} must lie in [0, {classes}) for a model with "
                f"{classes} outputs; got {bad}")
        return y.astype(np.int64, copy=False)

    # ------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------
    def parameters(self):
        """The parameter arrays (views, updated in place), state order."""
        return [layer.params[name] for _, layer, name in self._names]

    def named_parameters(self):
        """``(name, array)`` pairs, names as PyTorch's ``state_dict``."""
        return [(key, layer.params[name]) for key, layer, name in self._names]

    def gradients(self):
        """The gradient arrays of the last backward pass, state order."""
        return [layer.grads[name] for _, layer, name in self._names]

    def count_params(self):
        """The number of parameters (numbers, not arrays), an int."""
        return int(self._flat_params.size)

    def buffers(self):
        """The buffer arrays (state that is not trained, e.g. running
        statistics; updated in place), in :meth:`state_dict` order."""
        return [layer.buffers[name] for _, layer, name in self._buffer_names]

    def named_buffers(self):
        """``(name, array)`` pairs of the buffers, named as in
        :meth:`state_dict`."""
        return [(key, layer.buffers[name])
                for key, layer, name in self._buffer_names]

    def count_buffers(self):
        """The number of float buffer values (running statistics; the
        summary's non-trainable parameters), an int."""
        return int(sum(b.size for b in self.buffers()
                       if b.dtype.kind == "f"))

    def _state_arrays(self):
        """``(name, array)`` of every parameter and buffer, in
        :meth:`state_dict` order: per layer, its parameters, then its
        buffers."""
        per = {}
        for key, layer, name in self._names:
            per.setdefault(layer, []).append((key, layer.params[name]))
        for key, layer, name in self._buffer_names:
            per.setdefault(layer, []).append((key, layer.buffers[name]))
        return [item for layer in self.layers for item in per.get(layer, ())]

    def get_weights(self):
        """Copies of the parameters, in PyTorch ``state_dict`` order and
        layouts (per layer: weight, then bias, then any buffers such as
        :class:`~cnnkit.layers.BatchNorm2D`'s running statistics).

        Returns
        -------
        list of ndarray
        """
        self._require_built("get_weights")
        return [a.copy() for _, a in self._state_arrays()]

    def set_weights(self, weights):
        """Set the parameters from arrays in :meth:`get_weights` order.

        Arrays from PyTorch (``[t.detach().numpy() for t in
        module.state_dict().values()]``) load as they are.  Values are cast
        to the model's dtype; shapes must match exactly.

        Parameters
        ----------
        weights : sequence of array_like
            One array per parameter and buffer, in :meth:`get_weights`
            order; or, for a model with buffers, one per parameter only
            (the buffers are then left as they are).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A wrong number of arrays or a wrong shape, naming the parameter;
            nothing is changed.
        TypeError
            An array that is not real numbers.
        """
        self._require_built("set_weights")
        weights = list(weights)
        names = self._state_arrays()
        params = self.named_parameters()
        if len(weights) == len(params) and len(params) != len(names):
            names = params
        if len(weights) != len(names):
            extra = (f" and {len(names) - len(params)} buffers"
                     if len(names) != len(params) else "")
            raise ValueError(
                f"set_weights: the model has {len(params)} parameter arrays"
                f"{extra} ({', '.join(n for n, _ in names)}); got "
                f"{len(weights)}")
        checked = []
        for (name, p), w in zip(names, weights):
            w = np.asarray(w)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: {name} must be a real array, "
                                f"got dtype {w.dtype}")
            if w.shape != p.shape:
                raise ValueError(f"set_weights: {name} must have shape "
                                 f"{p.shape}, got {w.shape}")
            checked.append(w)
        for (_, p), w in zip(names, checked):
            p[...] = w
        self._weights_changed()
        return self

    def state_dict(self):
        """``{name: array copy}`` of the parameters and buffers: for a
        :class:`Sequential` PyTorch's ``nn.Sequential`` names
        (``"0.weight"``, ``"0.bias"``, ``"1.running_mean"``, ...), for a
        graph model ``"<layer name>.<parameter>"``; per layer the
        parameters, then the buffers, as PyTorch orders them."""
        return {name: a.copy() for name, a in self._state_arrays()}

    def load_state_dict(self, state, strict_dtype=False):
        """Set the parameters from a ``{name: array}`` mapping.

        Missing and unexpected names are errors; shapes must match; with
        ``strict_dtype`` the dtypes must equal the model's.

        Parameters
        ----------
        state : dict of str to array_like
            As returned by :meth:`state_dict` (or PyTorch's ``state_dict``,
            converted to NumPy).
        strict_dtype : bool, default False
            Refuse arrays of another dtype instead of converting them.

        Returns
        -------
        self
        """
        self._require_built("load_state_dict")
        arrays = self._state_arrays()
        names = [n for n, _ in arrays]
        check_keys(names, state, "load_state_dict")
        if strict_dtype:
            for n, a in arrays:
                if np.asarray(state[n]).dtype != a.dtype:
                    raise ValueError(
                        f"load_state_dict: {n} has dtype "
                        f"{np.asarray(state[n]).dtype}, the model "
                        f"{a.dtype}")
        return self.set_weights([state[n] for n in names])

    # ------------------------------------------------------------------
    # description, pickling, saving
    # ------------------------------------------------------------------
    def summary(self, print_fn=None):
        """Print a table of the layers, their output shapes and parameter
        counts, with totals and sizes; returns the text.

        Parameters
        ----------
        print_fn : callable, optional
            Called with the text instead of :func:`print`.

        Returns
        -------
        str
        """
        self._require_built("summary")
        text = self._summary_text()
        (print_fn or print)(text)
        return text

    _summary_connections = True

    def _call_label(self, i, k):
        """The summary's name of call ``i``, the layer's ``k``-th."""
        layer = self._graph.order[i].layer
        return layer.name if k == 1 else f"{layer.name} (call {k})"

    def _summary_text(self):
        """Rows per call: the layer's name and type, its output shape, its
        parameter count (on its first call) and, for a graph, the calls it
        reads."""
        g = self._graph
        rows, calls, labels = [], {}, {}
        for i, node in enumerate(g.order):
            layer = node.layer
            k = calls[layer] = calls.get(layer, 0) + 1
            labels[node.output.uid] = self._call_label(i, k)
            held = layer.count_params + sum(
                b.size for b in layer.buffers.values() if b.dtype.kind == "f")
            row = (f"{labels[node.output.uid]} ({type(layer).__name__})",
                   str((None,) + node.output.shape),
                   f"{held:,}" if k == 1 else "0")
            if self._summary_connections:
                row += (", ".join(labels.get(t.uid, t.name)
                                  for t in node.inputs),)
            rows.append(row)
        header = ("Layer (type)", "Output Shape", "Param #")
        if self._summary_connections:
            header += ("Connected to",)
        return _summary.summary_text(self, rows, header)

    def get_config(self):
        """The architecture as a JSON-serialisable dict: the layers (in
        :attr:`layers` order), the calls between them in the order they
        run, the input and the output.

        Returns
        -------
        dict
            ``{"class_name": "Model", "input": {"name", "shape"},
            "dtype", "seed", "layers": [{"class_name", "name",
            "config"}], "nodes": [{"layer": name, "inputs": [...]}],
            "output": index}``, where an input is ``"input"`` or the index
            of an earlier node.
        """
        g = self._graph
        index = {node.output.uid: i for i, node in enumerate(g.order)}
        return {
            "class_name": "Model",
            "input": {"name": g.input.name, "shape": list(g.input.shape)},
            "dtype": self.dtype.name,
            "seed": self.seed,
            "layers": [{"class_name": type(layer).__name__,
                        "name": layer.name, "config": layer.get_config()}
                       for layer in self.layers],
            "nodes": [{"layer": node.layer.name,
                       "inputs": ["input" if t is g.input else index[t.uid]
                                  for t in node.inputs]}
                      for node in g.order],
            "output": index[g.output.uid],
        }

    @classmethod
    def from_config(cls, config, build=True):
        """Rebuild a model from :meth:`get_config` output, checking the
        whole graph before anything is allocated.

        Parameters
        ----------
        config : dict
        build : bool, default True
            Allocate and initialise the parameters; with False the model
            knows its shapes (:meth:`parameter_shapes`) and :meth:`build`
            allocates them.

        Returns
        -------
        Model
            A new model with freshly initialised weights.

        Raises
        ------
        ValueError
            An unknown layer type, a reference to a missing node, a cycle,
            an input or output that does not connect, or shapes that do not
            fit, each named.
        """
        inp, out = _graph_from_config(config)
        if build:
            return cls(inp, out, seed=config.get("seed"),
                       dtype=config.get("dtype", "float32"))
        model = cls.__new__(cls)
        model._init_state(config.get("seed"), config.get("dtype", "float32"))
        model._init_graph(inp, out)
        return model

    def fold_batch_norm(self):
        """A copy of the model for inference, with each
        :class:`~cnnkit.layers.BatchNorm2D` (``BatchNorm1D``) whose input is
        the output of a :class:`~cnnkit.layers.Conv2D` or
        :class:`~cnnkit.layers.DepthwiseConv2D` (a
        :class:`~cnnkit.layers.Dense`) folded into that layer's weight and
        bias (:func:`cnnkit.functional.fold_batch_norm`, from its running
        statistics).  A pair folds when each of its layers is called once
        and nothing but the normalisation reads the first one's output;
        other batch normalisations stay as they are.  Its outputs are the
        evaluation-mode outputs of this model, up to rounding.

        Returns
        -------
        Model
            A new, built model of the same class, with the same layer
            names; this one is unchanged.

        Examples
        --------
        >>> import cnnkit
        >>> from cnnkit import layers as L
        >>> inp = cnnkit.Input((1, 6, 6))
        >>> x = L.ReLU()(L.BatchNorm2D()(L.Conv2D(4, 3, padding=1)(inp)))
        >>> x = L.Add()([x, L.BatchNorm2D()(L.Conv2D(4, 1)(x))])
        >>> model = cnnkit.Model(inp, L.Dense(3)(L.Flatten()(x)), seed=0)
        >>> folded = model.fold_batch_norm()
        >>> [type(la).__name__ for la in folded.layers]
        ['Conv2D', 'ReLU', 'Conv2D', 'Add', 'Flatten', 'Dense']
        """
        self._require_built("fold_batch_norm")
        g = self._graph
        folds = _bn_folds(g)                     # batch norm -> its source
        pos = {id(node): i for i, node in enumerate(g.order)}
        config = self.get_config()
        dropped = {bn.name for bn in folds}
        sources = {src.name for src in folds.values()}
        nodes, remap = [], {}
        for i, (node, spec) in enumerate(zip(g.order, config["nodes"])):
            if node.layer in folds:
                remap[i] = remap[pos[id(node.inputs[0].node)]]
                continue
            remap[i] = len(nodes)
            nodes.append({"layer": spec["layer"],
                          "inputs": [k if k == "input" else remap[k]
                                     for k in spec["inputs"]]})
        config["nodes"] = nodes
        config["output"] = remap[config["output"]]
        config["layers"] = [spec for spec in config["layers"]
                            if spec["name"] not in dropped]
        for spec in config["layers"]:
            if spec["name"] in sources:
                spec["config"]["use_bias"] = True
        model = type(self).from_config(config)
        old = {layer.name: layer for layer in self.layers}
        bn_of = {src.name: bn for bn, src in folds.items()}
        for new in model.layers:
            layer, bn = old[new.name], bn_of.get(new.name)
            _copy_folded(new, layer, bn)
        return model

    @classmethod
    def _from_state(cls, state):
        """A built model of a pickled state's architecture."""
        if state.get("graph") is not None:
            inp, out = state["graph"]
            config = state["config"]
            return cls(inp, out, seed=config.get("seed"),
                       dtype=config.get("dtype", "float32"))
        return cls.from_config(state["config"])

    def __repr__(self):
        return (f"Model(input={(None,) + self._graph.input.shape}, "
                f"layers={len(self.layers)}, calls={len(self._graph.order)}, "
                f"output={(None,) + self._graph.output.shape})")

    # -- pickling: plain NumPy state, rebuilt from the architecture --------
    def __getstate__(self):
        opt = None
        if self.optimizer is not None:
            opt = (self.optimizer.get_config(),
                   {k: np.array(v) for k, v in
                    self.optimizer.state_dict().items()})
        builtin = all(LAYERS.get(type(layer).__name__) is type(layer)
                      for layer in self.layers)
        graph = None if isinstance(self, Sequential) else self._graph
        return {"config": self.get_config(),
                # layers of other packages travel as objects
                "layers": None if builtin else self.layers,
                "graph": (None if builtin or graph is None
                          else (graph.input, graph.output)),
                # the live arrays (a block's layers may be bound elsewhere)
                "params": (np.concatenate([p.ravel() for p in
                                           self.parameters()] or
                                          [self._flat_params[:0]])
                           if self.built else None),
                "buffers": ([b.copy() for b in self.buffers()]
                            if self.built else None),
                "rng": self.rng.bit_generator.state,
                "optimizer": opt,
                "metadata": self.metadata,
                "stop_training": self.stop_training}

    def __setstate__(self, state):
        fresh = type(self)._from_state(state)
        self.__dict__.update(fresh.__dict__)
        if state["params"] is not None:
            if not self.built:
                self.build(tuple(state["config"]["input_shape"]))
            self._flat_params[...] = state["params"]
            for b, saved in zip(self.buffers(), state.get("buffers") or ()):
                b[...] = saved
        self.rng.bit_generator.state = state["rng"]
        if state["optimizer"] is not None:
            opt_config, opt_state = state["optimizer"]
            self.optimizer = optim.from_config(opt_config)
            self.optimizer.load_state_dict(opt_state)
        self.metadata = state.get("metadata", {})
        self.stop_training = state["stop_training"]
        self._weights_changed()

    def save(self, path, include_optimizer=True, metadata=None):
        """Write the architecture, the weights and (optionally) the optimizer
        state to one file, atomically; no pickle is involved.

        The file is safetensors-compatible: the tensors are named as in
        :meth:`state_dict`, the architecture is JSON in its metadata, with
        the version of cnnkit that wrote it and ``metadata``.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; an existing file is replaced.
        include_optimizer : bool, default True
            Also store the optimizer's configuration and state, so that
            training can resume from the file.
        metadata : dict, optional
            Anything to keep with the model, e.g. how it was trained: str
            keys, values that JSON represents (str, numbers, bool, None,
            lists and dicts of them). The loaded model has it as
            :attr:`metadata`. By default the model's :attr:`metadata` (what
            it was loaded with) is written again; pass ``{}`` to write
            none.

        Raises
        ------
        OSError
            If the file cannot be written; an existing file at ``path`` is
            then left as it was.
        TypeError, ValueError
            If ``metadata`` cannot be stored as JSON (the message says why).

        See Also
        --------
        load_model : read the file back.

        Examples
        --------
        >>> import os, tempfile
        >>> import cnnkit
        >>> from cnnkit import layers
        >>> model = cnnkit.Sequential([layers.Flatten(), layers.Dense(3)],
        ...                           input_shape=(1, 4, 4), seed=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.cnnkit")
        >>> model.save(path)
        >>> cnnkit.load_model(path).output_shape
        (3,)
        >>> model.save(path, metadata={"data": "digits", "seed": 1})
        >>> cnnkit.load_model(path).metadata
        {'data': 'digits', 'seed': 1}
        """
        self._require_built("save")
        tensors = self.state_dict()
        extra = {_format.VERSION_KEY: __version__}
        if metadata is None:
            metadata = self.metadata
        if metadata:
            extra[_format.USER_METADATA_KEY] = _format.pack_user_metadata(
                metadata)
        if include_optimizer and self.optimizer is not None:
            extra["optimizer"] = json.dumps(self.optimizer.get_config())
            for k, v in self.optimizer.state_dict().items():
                tensors[f"optimizer.{k}"] = np.asarray(v)
        # a graph needs a reader that knows graphs (format version 2)
        meta = _format.pack_metadata(
            "model", self.get_config(), extra,
            version=1 if isinstance(self, Sequential) else 2)
        _format.save_file(path, tensors, meta)

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None,
            validation_data=None, validation_split=0.0, shuffle=True,
            callbacks=(), verbose=1, sample_weight=None, initial_epoch=0,
            distributed=None, label_smoothing=0.0, augment=None):
        """Train on (x, y) with mini-batch gradient descent.

        Parameters
        ----------
        x : array_like of shape (n, C, H, W) or (n, H, W)
        y : array_like of int, shape (n,)
            Class indices in ``[0, classes)``.
        epochs : int, default 1
        batch_size : int, default 32
        optimizer : str or cnnkit.optim.Optimizer, optional
            ``"sgd"``, ``"adam"``, ``"adamw"`` or an instance.  By default
            the model's current optimizer (so a second ``fit`` resumes), or
            ``Adam(1e-3)`` the first time.
        validation_data : (x_val, y_val), optional
        validation_split : float, default 0
            Fraction of (x, y), taken from the end before shuffling, held out
            for validation (ignored when validation_data is given).
        shuffle : bool, default True
            Reshuffle the training samples every epoch (seeded).
        callbacks : sequence of cnnkit.callbacks.Callback
        verbose : {0, 1, 2}, default 1
            0 silent, 1 a progress bar per epoch (one line per epoch when the
            output is not a terminal), 2 one line per epoch.
        sample_weight : array_like of shape (n,), optional
            Non-negative per-sample weights: each batch minimises the
            weighted mean loss, and ``loss`` in the history is weighted.
        initial_epoch : int, default 0
            Epoch to start counting from, to resume a run (as in Keras):
            training runs epochs ``initial_epoch .. epochs - 1``, and
            learning-rate schedules see those epoch numbers.
        distributed : None, "mpi" or cnnkit.distributed.DataParallel
            Train data-parallel over the ranks of an MPI job (see
            :mod:`cnnkit.distributed`): every rank passes the same data,
            ``batch_size`` is the global batch, and each rank computes its
            share of it.  ``"mpi"`` is ``DataParallel()``, whose
            ``"ordered"`` reduction gives the same weights, bit for bit, as
            this method without ``distributed``.
        label_smoothing : float in [0, 1], default 0
            Train on the label-smoothed cross-entropy (PyTorch's
            ``CrossEntropyLoss(label_smoothing=...)``, see
            :func:`cnnkit.functional.softmax_cross_entropy`): ``loss`` and
            ``val_loss`` in the history are that loss, as PyTorch's and
            Keras's training loops report the criterion they train with;
            :meth:`evaluate` stays the plain cross-entropy.
        augment : cnnkit.transforms.Transform, optional
            Data augmentation applied to every training batch (never to
            validation data), e.g. ``Compose([RandomCrop(None, padding=2),
            RandomHorizontalFlip()])``; it must keep the image shape.  The
            model's generator draws one key per epoch and each image's
            draws depend on that key and its index in ``x`` only, so the
            training is the same for any thread count, shard count or
            number of MPI ranks.

        Returns
        -------
        History
            Per-epoch ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy``, ``lr``, ``seconds`` and ``images_per_s``.

        Raises
        ------
        FloatingPointError
            When the loss becomes NaN or infinite; the weights from before
            that batch are kept.

        Notes
        -----
        Ctrl-C stops training at the next batch boundary; the model stays
        usable and the returned history (``interrupted=True``) holds the
        completed epochs.

        Each batch's gradient is formed from the gradients of a fixed number
        of parts of the batch (8 contiguous runs of samples), added in a fixed
        pairwise order: the same arithmetic a data-parallel run performs, so
        a run over any number of ranks reproduces this one bit for bit.
        """
        check_int(epochs, "epochs", 0, type_error=ValueError)
        check_int(initial_epoch, "initial_epoch", 0, type_error=ValueError)
        check_int(batch_size, "batch_size", 1, type_error=ValueError)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        label_smoothing = _check_label_smoothing(label_smoothing)
        world, shards, reduction = dist.resolve(distributed)
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape[0])
        sw = self._prepare_weights(sample_weight, x.shape[0])
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or \
                    len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, "
                                 "y_val)")
            xv = self._prepare_x(validation_data[0], "validation x")
            yv = self._prepare_y(validation_data[1], xv.shape[0],
                                 "validation y")
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in [0, 1), got "
                                 f"{validation_split!r}")
            nv = int(math.floor(x.shape[0] * validation_split))
            if nv < 1 or nv >= x.shape[0]:
                raise ValueError(
                    f"validation_split={validation_split} of {x.shape[0]} "
                    f"samples leaves an empty training or validation set")
            x, xv = x[:-nv], x[-nv:]
            y, yv = y[:-nv], y[-nv:]
            sw = None if sw is None else sw[:-nv]
        else:
            xv = yv = None
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None \
                else optim.Adam(1e-3)
        optimizer = optim.get(optimizer)
        callbacks = _trainer.check_callbacks(callbacks)
        self._require_built("fit")
        self._check_augment(augment)
        trainer = _trainer.Trainer(self, world, shards, reduction,
                                   strict=world is not dist.LOCAL,
                                   label_smoothing=label_smoothing,
                                   augment=augment)
        previous, self.optimizer = self.optimizer, optimizer
        if world.size > 1:
            try:
                _trainer.join(world, self, x, y, sw, xv, yv,
                              (epochs, initial_epoch, batch_size,
                               bool(shuffle), label_smoothing)
                              + (() if augment is None else (
                                  json.dumps(_transforms.serialize(augment),
                                             sort_keys=True),)))
            except BaseException:
                self.optimizer = previous
                raise
        try:
            return trainer.fit(x, y, sw, xv, yv, initial_epoch, epochs,
                               batch_size, shuffle, callbacks, verbose)
        finally:
            self._weights_changed()


#: How often any model's parameters or buffers were written by cnnkit: a
#: cached plan compiled at another count is compiled again.
_WEIGHTS_VERSION = [0]


def _check_label_smoothing(value):
    """fit's label_smoothing as a float in [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise TypeError(f"label_smoothing must be a number in [0, 1], got "
                        f"{value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got "
                         f"{value!r}")
    return float(value)


class Sequential(Model):
    """A linear stack of layers with a Keras-style training API.

    Parameters
    ----------
    layers : sequence of Layer
        The layers, input first.
    input_shape : tuple of int, optional
        Shape of one sample, e.g. ``(1, 28, 28)``; ``(H, W)`` means one
        channel.  Without it the model is built on the first data it sees.
    seed : int, optional
        Seed of the generator behind initialisation, shuffling and dropout.
        The same seed and thread count give bit-identical training.
    dtype : {"float32", "float64"}, default "float32"
        Parameter and computation dtype; float64 for exact gradient checks.

    Attributes
    ----------
    layers : list of Layer
        The layers, input first.

    The other attributes (``input_shape``, ``output_shape``, ``built``,
    ``dtype``, ``rng``, ``optimizer``, ``stop_training``) are
    :class:`Model`'s.

    Examples
    --------
    >>> import cnnkit
    >>> from cnnkit import layers
    >>> model = cnnkit.Sequential([
    ...     layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
    ...     layers.Flatten(), layers.Dense(10)], input_shape=(1, 8, 8), seed=0)
    >>> model.output_shape
    (10,)
    """

    def __init__(self, layers=(), input_shape=None, seed=None,
                 dtype="float32"):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: layer {i} must be a cnnkit layer, got "
                    f"{type(layer).__name__}")
        if len(set(map(id, layers))) != len(layers):
            raise ValueError("Sequential: the same layer object appears "
                             "twice; create one instance per position")
        self._init_state(seed, dtype)
        self.layers = layers
        self._chain = self._chain_key = None
        if input_shape is not None:
            self.build(input_shape)

    def fold_batch_norm(self):
        """A copy of the model for inference, with each
        :class:`~cnnkit.layers.BatchNorm2D` (``BatchNorm1D``) that directly
        follows a :class:`~cnnkit.layers.Conv2D` or
        :class:`~cnnkit.layers.DepthwiseConv2D` (``Dense``) folded into
        that layer's weight and bias
        (:func:`cnnkit.functional.fold_batch_norm`, from its running
        statistics).  Its outputs are the evaluation-mode
        outputs of this model, up to rounding; other batch normalisations
        stay as they are.

        Returns
        -------
        Sequential
            A new, built model; this one is unchanged.

        Examples
        --------
        >>> import numpy as np
        >>> import cnnkit
        >>> from cnnkit import layers
        >>> model = cnnkit.Sequential([
        ...     layers.Conv2D(4, 3), layers.BatchNorm2D(), layers.ReLU(),
        ...     layers.Flatten(), layers.Dense(3)], input_shape=(1, 5, 5))
        >>> [type(la).__name__ for la in model.fold_batch_norm().layers]
        ['Conv2D', 'ReLU', 'Flatten', 'Dense']
        """
        self._require_built("fold_batch_norm")
        from .layers import BatchNorm2D, Conv2D, Dense, DepthwiseConv2D
        plan = []                         # (source layer, folded BN or None)
        for layer in self.layers:
            if isinstance(layer, BatchNorm2D) and plan and \
                    plan[-1][1] is None and type(plan[-1][0]) in (
                        (Conv2D, DepthwiseConv2D)
                        if type(layer) is BatchNorm2D else (Dense,)):
                plan[-1] = (plan[-1][0], layer)
            else:
                plan.append((layer, None))
        layers = []
        for layer, bn in plan:
            config = layer.get_config()
            if bn is not None:
                config["use_bias"] = True
            layers.append(type(layer).from_config(config))
        model = Sequential(layers, input_shape=self.input_shape,
                           seed=self.seed, dtype=self.dtype)
        for new, (layer, bn) in zip(layers, plan):
            _copy_folded(new, layer, bn)
        return model

    def _replay(self, tensor):
        if not self.built:
            self.build(tensor.shape)
        elif tensor.shape != self.input_shape:
            raise ValueError(
                f"Sequential: built for input shape {self.input_shape}, "
                f"called on {tensor.source} of shape {tensor.shape}")
        for layer in self.layers:
            tensor = layer(tensor)
        return tensor

    _summary_connections = False

    def _call_label(self, i, k):
        """The summary's name of call ``i``: type and position, as the
        layers of PyTorch's nn.Sequential are numbered."""
        return f"{type(self.layers[i]).__name__.lower()}_{i}"

    def _param_prefixes(self):
        """The state_dict prefix of each layer: its index, as PyTorch's
        ``nn.Sequential`` names them."""
        return [str(i) for i in range(len(self.layers))]

    def _before_relu(self):
        """Per layer: whether the next layer that is not transparent to
        initialisation (Dropout) is an element-wise ReLU."""
        out = []
        for i in range(len(self.layers)):
            nxt = next((lay for lay in self.layers[i + 1:]
                        if not lay.transparent), None)
            out.append(nxt is not None and nxt.elementwise == "relu")
        return out

    def _infer_shapes(self, input_shape):
        """Shape inference without allocating anything: the normalised
        input shape, each layer's parameter shapes and the output shape."""
        shape = self._check_input_shape(input_shape, "Sequential")
        if not self.layers:
            raise ValueError("Sequential: the model has no layers")
        specs, cur = [], shape
        for i, layer in enumerate(self.layers):
            try:
                out = layer.build(cur)
            except ValueError as exc:
                source = ("the model input" if i == 0 else
                          "the output of the previous layer")
                raise ValueError(
                    f"Sequential: layer {i} ({type(layer).__name__}) cannot "
                    f"take {source}, shape {cur}: {exc}") from None
            specs.append(layer.param_shapes(cur))
            cur = out
        self._check_param_total(specs, "Sequential")
        return shape, specs, cur

    @property
    def _graph(self):
        """The chain of the layers as a graph, made again when the layers
        or the input shape change (Model runs it)."""
        key = (tuple(self.layers), self.input_shape)
        if self._chain_key != key:
            self._chain = _Graph.chain(self.layers, self.input_shape)
            self._chain_key = key
        return self._chain

    def get_config(self):
        """The architecture as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``{"input_shape": [...], "dtype": ..., "seed": ..., "layers":
            [{"class_name": ..., "config": {...}}, ...]}``.
        """
        return {
            "input_shape": list(self.input_shape) if self.built else None,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "layers": [{"class_name": type(layer).__name__,
                        "config": layer.get_config()}
                       for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config, build=True):
        """Rebuild a model from :meth:`get_config` output; only the layer
        types in :data:`cnnkit.layers.LAYERS` are accepted.

        Parameters
        ----------
        config : dict
            As returned by :meth:`get_config`.
        build : bool, default True
            Allocate and initialise the parameters when the config has an
            input shape; with False the model knows its shapes
            (:meth:`parameter_shapes`) and :meth:`build` allocates them.

        Returns
        -------
        Sequential
            A new model with freshly initialised weights.

        Raises
        ------
        ValueError
            An unknown layer type or a malformed config.
        """
        if not isinstance(config, dict) or not isinstance(
                config.get("layers"), list):
            raise ValueError("model config must be a dict with a 'layers' "
                             "list")
        layers = []
        for i, spec in enumerate(config["layers"]):
            if not isinstance(spec, dict):
                raise ValueError(f"model config: layer {i} is not a dict")
            name = spec.get("class_name")
            if not isinstance(name, str) or name not in LAYERS:
                raise ValueError(
                    f"model config: layer {i} has unknown type {name!r}; "
                    f"known: {sorted(LAYERS)}")
            lcfg = spec.get("config", {})
            if not isinstance(lcfg, dict):
                raise ValueError(f"model config: layer {i} config is not a "
                                 f"dict")
            if "name" in spec:
                lcfg = dict(lcfg, name=spec["name"])
            try:
                layers.append(LAYERS[name].from_config(lcfg))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model config: layer {i} ({name}): "
                                 f"{exc}") from None
        shape = config.get("input_shape")
        model = cls(layers, seed=config.get("seed"),
                    dtype=config.get("dtype", "float32"))
        if shape is not None:
            model.input_shape = model._check_input_shape(shape, "Sequential")
            if build:
                model.build(model.input_shape)
        return model

    @classmethod
    def _from_state(cls, state):
        """An unbuilt model of a pickled state's architecture."""
        config = state["config"]
        if state.get("layers") is not None:
            return cls(state["layers"], seed=config.get("seed"),
                       dtype=config.get("dtype", "float32"))
        return cls.from_config(dict(config, input_shape=None))

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential([{inner}])"


def _single(tensors, what):
    """One symbolic tensor, from itself or a list holding only it."""
    if isinstance(tensors, (list, tuple)):
        if len(tensors) != 1:
            raise ValueError(f"Model: {what} must be one tensor (models "
                             f"with several {what} are not supported); got "
                             f"{len(tensors)}")
        tensors = tensors[0]
    if not isinstance(tensors, SymbolicTensor):
        raise TypeError(f"Model: {what} must be a symbolic tensor (from "
                        f"cnnkit.Input or a layer called on one), got "
                        f"{type(tensors).__name__}")
    return tensors


class _Graph:
    """The nodes between a model's input and its output, in the order they
    run, and what the model asks of them: which layer is called where, how
    often each tensor is read, which calls read only the input, and the
    fusion plans."""

    def __init__(self, inp, out, unique_names=True):
        if inp.node is not None:
            raise TypeError(f"Model: inputs must be the tensor of "
                            f"cnnkit.Input(...), not the output of "
                            f"{inp.source}")
        if out is inp:
            raise ValueError("Model: the output is the input; call layers on "
                             "the input first")
        order, reached = topological_order([out])
        others = [t for t in reached if t is not inp]
        if inp not in reached:
            raise ValueError(
                f"Model: the output does not depend on the model's input "
                f"{inp.name!r}" + (f"; it depends on {others[0].source}"
                                   if others else ""))
        if others:
            raise ValueError(
                f"Model: the output depends on {others[0].source} (shape "
                f"{others[0].shape}), which is not the model's input "
                f"{inp.name!r}")
        self.input, self.output, self.order = inp, out, order
        self.calls = {}
        for i, node in enumerate(order):
            self.calls.setdefault(node.layer, []).append(i)
        #: Whether some layer is called more than once.
        self.has_shared = len(self.calls) < len(order)
        # layers in the order they were first called (node creation)
        self.layers = sorted(self.calls,
                             key=lambda lay: order[self.calls[lay][0]].uid)
        names = {}
        for layer in self.layers if unique_names else ():
            if layer.name in names:
                raise ValueError(
                    f"Model: two layers are named {layer.name!r} "
                    f"({type(names[layer.name]).__name__} and "
                    f"{type(layer).__name__}); give them different names")
            names[layer.name] = layer
        self.readers = {}
        for i, node in enumerate(order):
            for t in node.inputs:
                self.readers.setdefault(t.uid, []).append(i)
        self.input_nodes = tuple(i for i, node in enumerate(order)
                                 if all(t is inp for t in node.inputs))
        # Values live in slots: 0 the input, i + 1 the output of call i.
        # Per call: the slots it reads, and those nobody reads after it.
        slot = {inp.uid: 0}
        slot.update((node.output.uid, i + 1) for i, node in enumerate(order))
        self.slots = [tuple(slot[t.uid] for t in node.inputs)
                      for node in order]
        self.output_slot = slot[out.uid]
        last = {}
        for i, ins in enumerate(self.slots):
            for k in ins:
                last[k] = i
        self.free_after = [[] for _ in order]
        for k, i in last.items():
            if k != self.output_slot:
                self.free_after[i].append(k)
        self.forward_plan, self.backward_plan = self._fusion()

    @classmethod
    def chain(cls, layers, input_shape):
        """The graph of layers called one after the other (built layers:
        their shapes are known)."""
        t = inp = SymbolicTensor(input_shape)
        for layer in layers:
            t = Node(layer, [t], layer.output_shape).output
        return cls(inp, t, unique_names=False)

    def shared(self, layer):
        """Whether the layer is called more than once in the graph."""
        return len(self.calls[layer]) > 1

    def first_input_shape(self, layer):
        """The input shape (a list of them for a merge layer) of the
        layer's first call."""
        node = self.order[self.calls[layer][0]]
        if layer.num_inputs == 1:
            return node.inputs[0].shape
        return [t.shape for t in node.inputs]

    def feeds_relu(self, layer):
        """Whether every reader of the layer's first output, looking
        through layers transparent to initialisation, is a ReLU."""
        found, stack = False, [self.order[self.calls[layer][0]].output]
        while stack:
            t = stack.pop()
            for j in self.readers.get(t.uid, ()):
                nxt = self.order[j]
                if nxt.layer.transparent:
                    stack.append(nxt.output)
                elif nxt.layer.elementwise == "relu":
                    found = True
                else:
                    return False
        return found

    def _fusion(self):
        """Per node, (step, op) of the forward pass and (step, op[, the
        absorbed node]) of the backward pass: a layer whose output only
        one element-wise layer reads runs it in its epilogue when it
        declares it can, and then that layer's backward in its own when it
        declares it can (THROUGH, from the absorbed node's output
        gradient); a layer that alone reads an element-wise layer's
        output runs that layer's backward in its own when it declares it
        can."""
        n = len(self.order)
        fwd, bwd = [(_PLAIN, None)] * n, [(_PLAIN, None)] * n
        for i, node in enumerate(self.order):
            readers = self.readers.get(node.output.uid, [])
            if len(readers) != 1 or node.output is self.output:
                continue
            j = readers[0]
            nxt = self.order[j]
            if nxt.layer.num_inputs != 1:
                continue
            op = nxt.layer.elementwise
            if op is not None and op in node.layer.forward_epilogues and \
                    fwd[i][0] is _PLAIN and fwd[j][0] is _PLAIN:
                fwd[i], fwd[j] = (_FUSED, op), (_ABSORBED, op)
                if op in node.layer.backward_epilogues and \
                        bwd[i][0] is _PLAIN and bwd[j][0] is _PLAIN:
                    bwd[i], bwd[j] = (_THROUGH, op, j), (_ABSORBED, op)
            op = node.layer.elementwise
            if op is not None and op in nxt.layer.backward_prologues and \
                    bwd[i][0] is _PLAIN and bwd[j][0] is _PLAIN:
                bwd[i], bwd[j] = (_ABSORBED, op), (_FUSED, op, i)
        return fwd, bwd

    def replay(self, tensor):
        """Call the graph's layers again on ``tensor``: the output tensor
        of the same computation (shared weights) in the graph being
        built."""
        values = {self.input.uid: tensor}
        for node in self.order:
            args = [values[t.uid] for t in node.inputs]
            values[node.output.uid] = node.layer(
                args[0] if node.layer.num_inputs == 1 else args)
        return values[self.output.uid]


def _bn_folds(graph):
    """{batch norm layer: the layer before it} of the pairs a graph model
    folds: a BatchNorm2D called once on the output of a Conv2D or
    DepthwiseConv2D (a BatchNorm1D on a Dense's) called once, that output
    read by the normalisation alone."""
    from .layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, \
        DepthwiseConv2D
    kinds = {BatchNorm2D: (Conv2D, DepthwiseConv2D), BatchNorm1D: (Dense,)}
    folds = {}
    for i, node in enumerate(graph.order):
        bn = node.layer
        if type(bn) not in kinds or graph.shared(bn):
            continue
        src = node.inputs[0]
        if src.node is None:
            continue
        prev = src.node.layer
        if type(prev) in kinds[type(bn)] and not graph.shared(prev) and \
                graph.readers.get(src.uid) == [i]:
            folds[bn] = prev
    return folds


def _graph_from_config(config):
    """The input and output tensors of a graph model's config, every layer
    built for its shapes and nothing allocated; ValueError naming the
    first thing that does not fit."""
    def fail(msg):
        raise ValueError(f"model config: {msg}")

    if not isinstance(config, dict):
        fail("must be a dict")
    spec = config.get("input")
    if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list):
        fail("'input' must be a dict with a 'shape' list")
    layer_specs, node_specs = config.get("layers"), config.get("nodes")
    if not isinstance(layer_specs, list) or not isinstance(node_specs, list):
        fail("'layers' and 'nodes' must be lists")
    layers = {}
    for i, ls in enumerate(layer_specs):
        if not isinstance(ls, dict):
            fail(f"layer {i} is not a dict")
        kind, name, lcfg = ls.get("class_name"), ls.get("name"), \
            ls.get("config", {})
        if not isinstance(kind, str) or kind not in LAYERS:
            fail(f"layer {i} has unknown type {kind!r}; known: "
                 f"{sorted(LAYERS)}")
        if not isinstance(name, str) or not name:
            fail(f"layer {i} ({kind}) has no name")
        if name in layers:
            fail(f"two layers are named {name!r}")
        if not isinstance(lcfg, dict):
            fail(f"layer {i} ({name}) config is not a dict")
        try:
            layer = LAYERS[kind].from_config(dict(lcfg, name=name))
        except (TypeError, ValueError) as exc:
            fail(f"layer {i} ({name}): {exc}")
        layers[name] = layer
    out_ref = config.get("output")
    if not is_int(out_ref) or not 0 <= out_ref < len(node_specs):
        fail(f"'output' must be the index of a node in [0, "
             f"{len(node_specs)}), got {out_ref!r}")
    refs = []
    for i, ns in enumerate(node_specs):
        if not isinstance(ns, dict) or not isinstance(ns.get("layer"), str) \
                or ns["layer"] not in layers or \
                not isinstance(ns.get("inputs"), list) or not ns["inputs"]:
            fail(f"node {i} must name a layer of 'layers' and list its "
                 f"inputs")
        for r in ns["inputs"]:
            if r != "input" and not (is_int(r) and 0 <= r < i):
                fail(f"node {i} ({ns['layer']}) reads {r!r}, which is "
                     f"neither 'input' nor an earlier node (a missing "
                     f"node, a forward reference or a cycle)")
        refs.append(ns["inputs"])
    # every node leads to the output, and the output reaches the input
    needed, stack, reads_input = set(), [out_ref], False
    while stack:
        k = stack.pop()
        if k in needed:
            continue
        needed.add(k)
        for r in refs[k]:
            if r == "input":
                reads_input = True
            else:
                stack.append(r)
    for i, ns in enumerate(node_specs):
        if i not in needed:
            fail(f"node {i} ({ns['layer']}) does not lead to the output")
    if not reads_input:
        fail("the output does not depend on the input")
    unused = sorted(set(layers) - {ns["layer"] for ns in node_specs})
    if unused:
        fail(f"layers {unused} are never called")
    try:
        inp = Input(tuple(spec["shape"]), spec.get("name"))
    except (TypeError, ValueError) as exc:
        fail(f"input: {exc}")
    tensors = []
    for i, (ns, r) in enumerate(zip(node_specs, refs)):
        layer = layers[ns["layer"]]
        args = [inp if k == "input" else tensors[k] for k in r]
        try:
            tensors.append(layer(args[0] if layer.num_inputs == 1
                                 else args))
        except (TypeError, ValueError) as exc:
            fail(f"node {i} ({ns['layer']}): {exc}")
    return inp, tensors[out_ref]


_PLAIN, _FUSED, _ABSORBED, _THROUGH = PLAIN, FUSED, ABSORBED, THROUGH


def _check_batch_size(batch_size):
    check_int(batch_size, "batch_size", 1, type_error=ValueError)
