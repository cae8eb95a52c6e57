"""Export models to ONNX and import ONNX models as cnnkit models.

:func:`export` writes a model, a :class:`~cnnkit.Sequential` or a graph
:class:`~cnnkit.Model`, as an ONNX graph that `onnxruntime
<https://onnxruntime.ai>`_ (or any ONNX runtime) can run; :func:`load` reads
the ONNX graph of a CNN, as written by ``torch.onnx.export``, tf2onnx or
:func:`export`, back into a cnnkit model: a :class:`~cnnkit.Sequential`
when the graph is a chain, a :class:`~cnnkit.Model` when it branches.

The `onnx <https://onnx.ai>`_ package is an optional dependency (``pip
install onnx onnxruntime``, the ``onnx`` extra); it is imported by these
functions, never by ``import cnnkit``.

Exported graphs
---------------
A :class:`~cnnkit.Sequential` becomes one node per layer, named after the
layer's type and index (``conv2d_0``, ``relu_1``, ...), with the
parameters stored as initializers named as in
:meth:`~cnnkit.Sequential.state_dict` (``"0.weight"``, ``"0.bias"``, ...).
A graph :class:`~cnnkit.Model` becomes one node per call, in the order the
calls run: a layer's first call is named after the layer, its later calls
``"<layer>/call_2"``, ...; its parameters are initializers named as in its
:meth:`~cnnkit.Model.state_dict` (``"<layer>.weight"``, ...), written once
and read by every call of the layer.

=================  ====================================================
cnnkit layer       ONNX
=================  ====================================================
Conv2D             ``Conv`` (``pads`` explicit; ``"same"`` becomes the
                   pads it stands for; ``group`` is the layer's groups)
DepthwiseConv2D    ``Conv`` with ``group`` = C, the input's channels
ReLU               ``Relu``
MaxPool2D          ``MaxPool`` (explicit pads; ``ceil_mode=1`` when the
                   layer's ``ceil_mode``)
AvgPool2D          ``AveragePool`` (explicit pads and
                   ``count_include_pad``; ``ceil_mode=1`` likewise)
GlobalAvgPool2D    ``GlobalAveragePool`` followed by ``Flatten``
GlobalMaxPool2D    ``GlobalMaxPool`` followed by ``Flatten``
Flatten            ``Flatten`` (``axis=1``)
Dense              ``Gemm`` (``transB=1``: the weight stays ``(out, in)``)
Dropout            nothing (it is the identity at inference)
Add                a chain of binary ``Add`` nodes in list order,
                   ``((x0 + x1) + x2) + ...``: cnnkit's order of the sums
Multiply           a chain of binary ``Mul`` nodes, likewise
Concatenate        ``Concat`` on the layer's ``axis``
BatchNorm2D,       ``BatchNormalization`` in evaluation mode (the running
BatchNorm1D        statistics; ``scale`` 1 and ``B`` 0 without ``affine``;
                   ``num_batches_tracked`` is not written)
LeakyReLU          ``LeakyRelu`` (``alpha``: the negative slope)
Sigmoid, Tanh      ``Sigmoid``, ``Tanh``
SiLU               ``Mul(x, Sigmoid(x))``
GELU               ``Gelu`` (``approximate``) from opset 20; before it
                   ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``,
                   or the tanh form of ``approximate="tanh"``, as
                   PyTorch's exporter writes them
Softmax            ``Softmax`` (``axis=1``)
LogSoftmax         ``LogSoftmax`` (``axis=1``)
=================  ====================================================

With ``probabilities=True`` a model that ends in a Softmax layer gets no
second ``Softmax``.

The input is ``"input"`` of shape ``("batch", C, H, W)`` with a symbolic
batch size; the output is ``"logits"``, or ``"probabilities"`` (a final
``Softmax``) with ``probabilities=True``.

Imported graphs
---------------
:func:`load` accepts a graph of the operators above, in the forms
exporters write: ``Gemm`` or ``MatMul`` followed by ``Add``; ``Flatten`` or
a ``Reshape`` to ``(batch, features)``, with the target shape given by a
constant or computed from the input's shape (``Shape``, ``Gather``,
``Unsqueeze``, ``Concat``, ...); weights given as initializers or through
``Constant`` and ``Identity`` nodes; ``auto_pad``; a graph input in NHWC
layout followed by a ``Transpose`` to NCHW (tf2onnx's form of a Keras
model), with the ``Transpose`` back to NHWC before the flattening folded
into the next dense layer's weights; ``Dropout`` and ``Identity``
(skipped); ``ReduceMean`` over the spatial axes (a global average pool);
the activations of the table above, with SiLU and GELU also in their
decomposed forms (``x * Sigmoid(x)``; GELU through ``Erf`` or, for the tanh
approximation, ``Tanh``), which become one layer when nothing else reads
their intermediate values; ``Softmax`` and ``LogSoftmax`` over the classes
as layers; and a final ``Softmax`` or ``LogSoftmax``, which is dropped
because cnnkit models return logits (:meth:`~cnnkit.Model.predict_proba`
applies the softmax) -- except in a file :func:`export` wrote with its
output named ``logits``, where it is the model's last layer.  A value may be read by several nodes, and ``Add``, ``Mul`` and
``Concat`` of computed values (residual connections, gates, Inception and
DenseNet blocks) become :class:`~cnnkit.layers.Add`,
:class:`~cnnkit.layers.Multiply` and :class:`~cnnkit.layers.Concatenate`;
nodes of one operator on the same weight tensors become one layer called
several times.  A graph that is a chain loads as a
:class:`~cnnkit.Sequential`, any other as a :class:`~cnnkit.Model`, whose
layers are named after their ONNX nodes (or ``<type>_<index>`` when a
node name cannot name a cnnkit layer).  Anything else is refused with a
:class:`ValueError` naming the first node, attribute or value that cannot
be imported; so are graphs whose structure a cnnkit model cannot hold:
several inputs, several outputs, a node whose output does not lead to the
graph's output, ``Add`` or ``Mul`` that broadcasts.

Loading never executes anything from the file: it parses the protobuf,
checks every tensor's declared shape and data type against the bytes it
holds before converting it, and builds the model only from the layer types
of :mod:`cnnkit.layers`.
"""
import math
import os

import numpy as np

from . import _format
from . import layers as L
from ._checks import is_int
from ._version import __version__
from ._graph import Input
from .model import Model, Sequential

__all__ = ["export", "load", "MIN_OPSET", "DEFAULT_OPSET", "MIN_IMPORT_OPSET",
           "MAX_FILE_SIZE"]

#: Oldest opset :func:`export` writes (``Softmax`` has today's meaning from
#: opset 13 on).
MIN_OPSET = 13
#: The opset :func:`export` writes by default.
DEFAULT_OPSET = 17
#: Oldest opset of the default domain :func:`load` reads.
MIN_IMPORT_OPSET = 7
#: Largest file :func:`load` reads, in bytes (the 2 GiB limit of protobuf).
MAX_FILE_SIZE = 2 ** 31 - 1

_INSTALL_HINT = ('the onnx package is needed for ONNX export and import; '
                 'install it, with onnxruntime to run the exported files: '
                 'pip install onnx onnxruntime')


def _require_onnx():
    """The ``onnx`` module, or ImportError saying how to install it."""
    try:
        import onnx
        import onnx.helper  # noqa: F401  (used below)
    except ImportError as exc:
        raise ImportError(f"cnnkit.onnx: {_INSTALL_HINT} ({exc})") from exc
    return onnx


# ==========================================================================
# export
# ==========================================================================
def _conv_pads(layer):
    """ONNX ``pads`` ``[top, left, bottom, right]`` of a Conv2D."""
    if layer.padding == "valid":
        return [0, 0, 0, 0]
    if layer.padding == "same":
        before, after = [], []
        for k, d in zip(layer.kernel_size, layer.dilation):
            total = d * (k - 1)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after
    ph, pw = layer.padding
    return [ph, pw, ph, pw]


def no_float64_layers(model):
    """The layer types of ``model`` that onnxruntime's CPU provider cannot
    run in float64 (it has no double Conv, AveragePool, GlobalAveragePool
    or GlobalMaxPool), sorted; empty when a float64 graph runs there."""
    return sorted({type(layer).__name__ for layer in model.layers
                   if isinstance(layer, (L.Conv2D, L.AvgPool2D,
                                         L.GlobalAvgPool2D,
                                         L.GlobalMaxPool2D))})


def _check_export_args(model, opset, probabilities, dtype, onnx):
    if not isinstance(model, Model):
        raise TypeError(f"export: model must be a cnnkit.Sequential or a "
                        f"cnnkit.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError("export: the model is not built yet; pass "
                         "input_shape to Sequential or call it on data first")
    newest = onnx.defs.onnx_opset_version()
    if not is_int(opset):
        raise TypeError(f"export: opset must be an int, got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"export: opset must be between {MIN_OPSET} and {newest} (the "
            f"newest this onnx {onnx.__version__} knows); got {opset}")
    if not isinstance(probabilities, (bool, np.bool_)):
        raise TypeError(f"export: probabilities must be a bool, got "
                        f"{probabilities!r}")
    if probabilities and len(model.output_shape) != 1:
        raise ValueError(
            f"export: probabilities=True needs a model whose output is one "
            f"vector of class scores per image; this model's output shape "
            f"is {model.output_shape}")
    if dtype is None:
        dt = model.dtype
        if dt == np.float64:
            kinds = no_float64_layers(model)
            if kinds:
                raise ValueError(
                    f"export: the model is float64 and has {', '.join(kinds)} "
                    f"layers, which onnxruntime's CPU provider cannot run in "
                    f"float64 (it has no double Conv, AveragePool, "
                    f"GlobalAveragePool or GlobalMaxPool); pass "
                    f"dtype='float32' to export "
                    f"float32 weights, or dtype='float64' to write the "
                    f"float64 graph anyway")
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(f"export: dtype must be None, 'float32' or "
                             f"'float64'; got {dtype!r}")
    return int(opset), bool(probabilities), np.dtype(dt)


def _layer_nodes(layer, name, xs, param, make, opset=DEFAULT_OPSET,
                 dtype=np.float32):
    """The ONNX nodes of one call of ``layer`` on the values ``xs``.

    ``make(op, name, inputs, **attrs)`` adds a node and returns the name of
    its output; ``param(layer, pname)`` returns the name of a parameter's
    initializer.  ``opset`` and ``dtype`` are the graph's (constants of
    decomposed activations take the dtype).  Returns the name of the
    call's output (``xs[0]`` for Dropout, which is the identity at
    inference), or None for a layer without an ONNX form.
    """
    out = _activation_nodes(layer, name, xs, make, opset, dtype)
    if out is not None:
        return out
    if isinstance(layer, L.Conv2D):
        inputs = [param(layer, "weight")]
        if layer.use_bias:
            inputs.append(param(layer, "bias"))
        return make("Conv", name, xs + inputs,
                    kernel_shape=list(layer.kernel_size),
                    strides=list(layer.stride),
                    dilations=list(layer.dilation), pads=_conv_pads(layer),
                    group=int(layer.groups))
    if isinstance(layer, L.ReLU):
        return make("Relu", name, xs)
    if isinstance(layer, L.MaxPool2D):           # AvgPool2D too: subclass
        ph, pw = layer.padding
        # ceil_mode=1 only where set: other graphs stay as they were
        ceil = {"ceil_mode": 1} if layer.ceil_mode else {}
        if isinstance(layer, L.AvgPool2D):
            return make("AveragePool", name, xs,
                        kernel_shape=list(layer.pool_size),
                        strides=list(layer.stride), pads=[ph, pw, ph, pw],
                        count_include_pad=int(layer.count_include_pad),
                        **ceil)
        return make("MaxPool", name, xs, kernel_shape=list(layer.pool_size),
                    strides=list(layer.stride), pads=[ph, pw, ph, pw],
                    **ceil)
    if isinstance(layer, L.GlobalAvgPool2D):
        pooled = make("GlobalAveragePool", name, xs)
        return make("Flatten", f"{name}/flatten", [pooled], axis=1)
    if isinstance(layer, L.GlobalMaxPool2D):
        pooled = make("GlobalMaxPool", name, xs)
        return make("Flatten", f"{name}/flatten", [pooled], axis=1)
    if isinstance(layer, L.Flatten):
        return make("Flatten", name, xs, axis=1)
    if isinstance(layer, L.Dense):
        inputs = [param(layer, "weight")]
        if layer.use_bias:
            inputs.append(param(layer, "bias"))
        return make("Gemm", name, xs + inputs, alpha=1.0, beta=1.0,
                    transB=1)
    if isinstance(layer, L.Dropout):
        return xs[0]
    if isinstance(layer, (L.Add, L.Multiply)):
        # binary nodes in list order: ((x0 + x1) + x2) + ..., as cnnkit sums
        op = "Add" if isinstance(layer, L.Add) else "Mul"
        out = make(op, name, xs[:2])
        for k, x in enumerate(xs[2:], 2):
            out = make(op, f"{name}/{op.lower()}_{k}", [out, x])
        return out
    if isinstance(layer, L.Concatenate):
        return make("Concat", name, xs, axis=layer.axis)
    if isinstance(layer, L.BatchNorm2D):          # and BatchNorm1D
        inputs = [param(layer, k) for k in ("weight", "bias",
                                            "running_mean", "running_var")]
        return make("BatchNormalization", name, xs + inputs,
                    epsilon=layer.eps,
                    momentum=1.0 - (0.1 if layer.momentum is None
                                    else layer.momentum))
    return None


def _export_array(layer, pname):
    """The array a layer's initializer ``pname`` holds: a parameter, a
    buffer, or (a BatchNorm2D without ``affine``) the scale 1 and shift 0
    its normalisation applies."""
    if pname in layer.params:
        return layer.params[pname]
    if pname in layer.buffers:
        return layer.buffers[pname]
    c = layer.buffers["running_mean"].shape
    return np.ones(c) if pname == "weight" else np.zeros(c)


def _activation_nodes(layer, name, xs, make, opset, dtype):
    """The ONNX nodes of an activation layer (see :func:`_layer_nodes`),
    or None for other layers.  SiLU is ``x * Sigmoid(x)``; GELU is the
    ``Gelu`` operator from opset 20 on, before it the decomposition
    PyTorch's exporter writes: ``(x * (Erf(x / sqrt 2) + 1)) * 0.5``, or
    for the tanh approximation ``(x * (Tanh(sqrt(2/pi) * (x + 0.044715 *
    (x * (x * x)))) + 1)) * 0.5``."""
    from onnx import numpy_helper

    def const(suffix, value):
        return make("Constant", f"{name}/{suffix}", [],
                    value=numpy_helper.from_array(
                        np.asarray(value, dtype=dtype), f"{name}/{suffix}"))

    x = xs[0] if xs else None
    if isinstance(layer, L.LeakyReLU):
        return make("LeakyRelu", name, xs, alpha=layer.negative_slope)
    if isinstance(layer, L.Sigmoid):
        return make("Sigmoid", name, xs)
    if isinstance(layer, L.Tanh):
        return make("Tanh", name, xs)
    if isinstance(layer, L.SiLU):
        s = make("Sigmoid", f"{name}/sigmoid", xs)
        return make("Mul", name, [x, s])
    if isinstance(layer, L.LogSoftmax):          # before Softmax: subclass
        return make("LogSoftmax", name, xs, axis=1)
    if isinstance(layer, L.Softmax):
        return make("Softmax", name, xs, axis=1)
    if not isinstance(layer, L.GELU):
        return None
    if opset >= 20:
        return make("Gelu", name, xs, approximate=layer.approximate)
    if layer.approximate == "tanh":
        sq = make("Mul", f"{name}/square", [x, x])
        cube = make("Mul", f"{name}/cube", [x, sq])
        k = make("Mul", f"{name}/kappa_cube", [const("kappa", 0.044715),
                                               cube])
        inner = make("Add", f"{name}/add", [x, k])
        u = make("Mul", f"{name}/scale", [const("beta",
                                               math.sqrt(2 / math.pi)),
                                         inner])
        t = make("Tanh", f"{name}/tanh", [u])
    else:
        d = make("Div", f"{name}/div", [x, const("sqrt2", math.sqrt(2))])
        t = make("Erf", f"{name}/erf", [d])
    a = make("Add", f"{name}/add_one", [t, const("one", 1.0)])
    m = make("Mul", f"{name}/mul", [x, a])
    return make("Mul", name, [m, const("half", 0.5)])


def _no_onnx_form(layer, which):
    return TypeError(f"export: {which} is a {type(layer).__name__}, which "
                     f"has no ONNX form; known layers: {sorted(L.LAYERS)}")


def _finish(nodes, inits, model, opset, probabilities, dtype, kind,
            description):
    """The ModelProto of a graph's nodes and initializers."""
    from onnx import TensorProto, helper
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    output = "probabilities" if probabilities else "logits"
    graph = helper.make_graph(
        nodes, f"cnnkit.{kind}",
        [helper.make_tensor_value_info(
            "input", elem, ["batch"] + list(model.input_shape))],
        [helper.make_tensor_value_info(
            output, elem, ["batch"] + list(model.output_shape))],
        initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="cnnkit",
        producer_version=__version__,
        doc_string=f"cnnkit.{kind} with {description}, {dtype.name}, "
                   f"returning {output}")
    # make_model writes the newest IR version, which older runtimes refuse;
    # use the oldest one that knows this opset.
    proto.ir_version = helper.find_min_ir_version_for(opsets, True)
    return proto


def _ends_in_softmax(last):
    """Whether ``last`` (a list of at most one layer) is a Softmax layer
    (not a LogSoftmax), whose output is the probabilities."""
    return bool(last) and type(last[0]) is L.Softmax


def _build_graph(model, opset, probabilities, dtype):
    """The ModelProto of a :class:`~cnnkit.Sequential` (see :func:`export`):
    one node per layer, named by its type and index."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    keys = {key for key, _ in model.named_parameters()}
    current = "input"

    def make(op, name, inputs, **attrs):
        out = f"{name}_output"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def param(layer, pname):
        key = f"{index}.{pname}"                 # Sequential's state_dict
        assert key in keys or isinstance(layer, L.BatchNorm2D), key
        inits.append(numpy_helper.from_array(
            np.ascontiguousarray(_export_array(layer, pname), dtype=dtype),
            key))
        return key

    for index, layer in enumerate(model.layers):
        name = f"{type(layer).__name__.lower()}_{index}"
        out = _layer_nodes(layer, name, [current], param, make, opset,
                           dtype)
        if out is None:
            raise _no_onnx_form(layer, f"layer {index}")
        current = out
    # a model that ends in a Softmax layer returns probabilities already
    if probabilities and not _ends_in_softmax(model.layers[-1:]):
        current = make("Softmax", "softmax", [current], axis=-1)
    output = "probabilities" if probabilities else "logits"
    if nodes:
        nodes[-1].output[0] = output
    else:                                        # a model of Dropout layers
        nodes.append(helper.make_node("Identity", ["input"], [output],
                                      name="identity"))
    return _finish(nodes, inits, model, opset, probabilities, dtype,
                   "Sequential", f"{len(model.layers)} layers")


def _build_model_graph(model, opset, probabilities, dtype):
    """The ModelProto of a graph :class:`~cnnkit.Model` (see
    :func:`export`): the calls in the order they run, one node (or a short
    run of nodes) per call, named after the layer; a layer's initializers
    are written once, however often it is called."""
    from onnx import helper, numpy_helper

    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    params = model.named_parameters()
    keys = {key for key, _ in params}
    inits = [numpy_helper.from_array(np.ascontiguousarray(p, dtype=dtype),
                                     key) for key, p in params]
    nodes = []
    # node names: a layer's first call takes its name; every other node a
    # name of its own, never a layer's
    taken = set(by_name)

    def unique(base):
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    call_name = None

    def make(op, name, inputs, **attrs):
        if name != call_name:
            name = unique(name)
        out = f"{name}_output"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def param(layer, pname):
        key = f"{layer.name}.{pname}"            # the graph's state_dict
        if key not in keys:                     # a buffer, written once
            assert isinstance(layer, L.BatchNorm2D), key
            keys.add(key)
            inits.append(numpy_helper.from_array(np.ascontiguousarray(
                _export_array(layer, pname), dtype=dtype), key))
        return key

    values, calls = [], {}
    for spec in config["nodes"]:
        layer = by_name[spec["layer"]]
        k = calls[layer.name] = calls.get(layer.name, 0) + 1
        call_name = layer.name if k == 1 else unique(
            f"{layer.name}/call_{k}")
        xs = ["input" if r == "input" else values[r]
              for r in spec["inputs"]]
        out = _layer_nodes(layer, call_name, xs, param, make, opset, dtype)
        if out is None:
            raise _no_onnx_form(layer, f"layer {layer.name!r}")
        values.append(out)
    call_name = None
    result = values[config["output"]]
    read = {name for n in nodes for name in n.input}
    last = by_name[config["nodes"][config["output"]]["layer"]]
    if probabilities and _ends_in_softmax([last]):
        for n in nodes:                          # already probabilities
            if n.output[0] == result:
                n.output[0] = "probabilities"
    elif probabilities:
        nodes.append(helper.make_node("Softmax", [result], ["probabilities"],
                                      name=unique("softmax"), axis=-1))
    elif result == "input" or result in read:    # the output of a Dropout
        nodes.append(helper.make_node("Identity", [result], ["logits"],
                                      name=unique("identity")))
    else:
        for n in nodes:
            if n.output[0] == result:
                n.output[0] = "logits"
    return _finish(nodes, inits, model, opset, probabilities, dtype, "Model",
                   f"{len(model.layers)} layers in {len(config['nodes'])} "
                   f"calls")


def export(model, path, opset=DEFAULT_OPSET, probabilities=False,
           dtype=None):
    """Write a model as an ONNX file, atomically.

    Parameters
    ----------
    model : Sequential or Model
        A built model: a chain, or a graph of layers (merges, shared
        layers).  Every layer of :mod:`cnnkit.layers` is supported;
        :class:`~cnnkit.layers.Dropout` layers are left out (they are the
        identity at inference).
    path : str or os.PathLike
        The file to write (``.onnx`` by convention); an existing file is
        replaced.
    opset : int, default 17
        The ONNX opset, between :data:`MIN_OPSET` and the newest the
        installed ``onnx`` knows.  The file's IR version is the oldest that
        supports the opset (8 for opset 17), so older runtimes accept it.
    probabilities : bool, default False
        End the graph with a ``Softmax``, so that it returns class
        probabilities (as :meth:`~cnnkit.Sequential.predict_proba`) instead
        of logits.  The model's output must be one vector per image.
    dtype : {None, "float32", "float64"}, default None
        The data type of the graph: by default the model's.  A float64 model
        with Conv2D, AvgPool2D or GlobalAvgPool2D layers is refused by
        default, since onnxruntime's CPU provider has no float64 kernels for
        them; ``dtype="float32"`` writes its weights rounded to float32, and
        ``dtype="float64"`` writes the float64 graph anyway.

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed.
    TypeError
        If ``model`` is not a :class:`~cnnkit.Sequential` or
        :class:`~cnnkit.Model`, has a layer type without an ONNX form, or an
        argument has the wrong type.
    ValueError
        If the model is not built, or an argument is out of range.
    OSError
        If the file cannot be written; an existing file at ``path`` is then
        left as it was.

    See Also
    --------
    load : read an ONNX file into a cnnkit model.

    Notes
    -----
    The graph's input is ``"input"``, of shape ``("batch", C, H, W)`` with
    a symbolic batch size, and its output ``"logits"`` (or
    ``"probabilities"``).  Pooling is written with explicit ``pads``, and
    with ``ceil_mode=1`` only for layers built with ``ceil_mode=True``:
    onnxruntime sizes those by PyTorch's rule, as cnnkit does (ONNX's
    shape inference before opset 19 may count one window more where the
    last would start in the padding).  The file records ``producer_name="cnnkit"`` and the
    cnnkit version.

    A graph model's calls are written in the order they run, one node per
    call (an ``Add`` or ``Multiply`` of n inputs is n - 1 binary nodes, in
    cnnkit's order), named after the layer (``"conv2d"``, then
    ``"conv2d/call_2"`` for its second call); a layer's initializers are
    written once and read by all its calls.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import cnnkit
    >>> from cnnkit import layers
    >>> model = cnnkit.Sequential([
    ...     layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
    ...     layers.Flatten(), layers.Dense(10)], input_shape=(1, 8, 8), seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> cnnkit.onnx.export(model, path)
    >>> import onnxruntime as ort
    >>> session = ort.InferenceSession(path,
    ...                                providers=["CPUExecutionProvider"])
    >>> x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    >>> (logits,) = session.run(None, {"input": x})
    >>> bool(np.allclose(logits, model(x), rtol=1e-5, atol=1e-6))
    True
    """
    onnx = _require_onnx()
    opset, probabilities, dt = _check_export_args(model, opset,
                                                  probabilities, dtype, onnx)
    build = _build_graph if isinstance(model, Sequential) else \
        _build_model_graph
    proto = build(model, opset, probabilities, dt)
    data = proto.SerializeToString()
    _format.write_atomic(path, lambda f: f.write(data), "export")


# ==========================================================================
# import
# ==========================================================================
_BATCH = "batch"          # the symbolic batch size in computed shapes


class _ImportError(ValueError):
    pass


# the attribute types of the supported operators
_INT, _INTS, _FLOAT, _STRING, _TENSOR, _FLOATS = (
    "INT", "INTS", "FLOAT", "STRING", "TENSOR", "FLOATS")
_ATTR_TYPES = {
    "group": _INT, "ceil_mode": _INT, "count_include_pad": _INT,
    "storage_order": _INT, "axis": _INT, "keepdims": _INT,
    "noop_with_empty_axes": _INT, "transA": _INT, "transB": _INT,
    "allowzero": _INT, "seed": _INT, "is_test": _INT, "to": _INT,
    "saturate": _INT, "start": _INT, "end": _INT, "value_int": _INT,
    "kernel_shape": _INTS, "strides": _INTS, "pads": _INTS,
    "dilations": _INTS, "perm": _INTS, "axes": _INTS, "value_ints": _INTS,
    "alpha": _FLOAT, "beta": _FLOAT, "ratio": _FLOAT, "value_float": _FLOAT,
    "value_floats": _FLOATS, "auto_pad": _STRING, "round_mode": _STRING,
    "value": _TENSOR, "approximate": _STRING,
    "epsilon": _FLOAT, "momentum": _FLOAT, "training_mode": _INT,
    "spatial": _INT,
}


def _attrs(node, allowed, fail):
    """``{name: python value}`` of a node's attributes; unknown ones, and
    ones of the wrong type, fail."""
    from onnx import AttributeProto, helper
    out = {}
    for a in node.attribute:
        if a.name not in allowed:
            fail(f"attribute {a.name!r} is not supported (supported: "
                 f"{', '.join(sorted(allowed)) or 'none'})")
        if a.ref_attr_name:
            fail(f"attribute {a.name!r} refers to a function attribute")
        if a.name in out:
            fail(f"attribute {a.name!r} is given twice")
        expected = _ATTR_TYPES[a.name]
        kind = AttributeProto.AttributeType.Name(a.type) if a.type in \
            AttributeProto.AttributeType.values() else str(a.type)
        if kind != expected:
            fail(f"attribute {a.name!r} must be of type {expected}, got "
                 f"{kind}")
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                fail(f"attribute {a.name!r} is not UTF-8 text")
        elif expected in (_INTS, _FLOATS):
            value = list(value)
        out[a.name] = value
    return out


def _ints(value, n, name, fail, minimum):
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
            isinstance(v, int) and v >= minimum for v in value):
        shown = list(value) if isinstance(value, (list, tuple)) else value
        fail(f"attribute {name}={shown!r} must be {n} integers >= "
             f"{minimum}")
    return [int(v) for v in value]


class _Importer:
    """Walks an ONNX graph node by node and builds the cnnkit layers."""

    def __init__(self, proto, where):
        import onnx
        from onnx import TensorProto
        self.onnx = onnx
        self.TP = TensorProto
        self.proto = proto
        self.where = where
        self.node = None

    # -- errors ------------------------------------------------------------
    def fail(self, message):
        if self.node is not None:
            n = self.node
            label = f"node {n.name!r} ({n.op_type})" if n.name else \
                f"a {n.op_type} node (output {n.output[0]!r})" if n.output \
                else f"a {n.op_type} node"
            message = f"{label}: {message}"
        raise _ImportError(f"cannot import {self.where!r}: {message}")

    # -- tensors -----------------------------------------------------------
    _NUMPY = {1: "<f4", 11: "<f8", 7: "<i8", 6: "<i4"}
    _FIELDS = {1: "float_data", 11: "double_data", 7: "int64_data",
               6: "int32_data"}

    def tensor(self, t, what):
        """A validated tensor as a NumPy array (sizes checked first)."""
        TP = self.TP
        if t.data_type not in self._NUMPY:
            name = TP.DataType.Name(t.data_type) if t.data_type in \
                TP.DataType.values() else str(t.data_type)
            self.fail(f"{what} has data type {name}; supported: FLOAT, "
                      f"DOUBLE, INT64, INT32")
        if t.data_location == TP.EXTERNAL or len(t.external_data):
            self.fail(f"{what} keeps its data in an external file; cnnkit "
                      f"reads only self-contained ONNX files")
        if t.HasField("segment"):
            self.fail(f"{what} is segmented, which is not supported")
        dims = list(t.dims)
        if len(dims) > 8 or any(d < 0 for d in dims):
            self.fail(f"{what} has invalid dims {dims}")
        count = math.prod(dims)
        dtype = np.dtype(self._NUMPY[t.data_type])
        field = self._FIELDS[t.data_type]
        typed = getattr(t, field)
        others = [f for f in ("float_data", "double_data", "int64_data",
                              "int32_data", "string_data", "uint64_data")
                  if f != field and len(getattr(t, f))]
        if others:
            self.fail(f"{what} of type {TP.DataType.Name(t.data_type)} holds "
                      f"values in {others[0]}")
        if t.raw_data and len(typed):
            self.fail(f"{what} holds both raw_data and {field}")
        if t.raw_data:
            have = len(t.raw_data)
            need = count * dtype.itemsize
            if have != need:
                self.fail(
                    f"{what} declares shape {dims} of "
                    f"{TP.DataType.Name(t.data_type)} ({need} bytes) but "
                    f"holds {have} bytes")
            arr = np.frombuffer(t.raw_data, dtype=dtype).reshape(dims)
        else:
            if len(typed) != count:
                self.fail(
                    f"{what} declares shape {dims} ({count} values) but "
                    f"holds {len(typed)} values")
            arr = np.asarray(typed, dtype=dtype).reshape(dims)
        return arr.astype(dtype.newbyteorder("="), copy=True)

    def static(self, name, what):
        """The constant value called ``name`` (converted on first use)."""
        if name in self.consts:
            return self.consts[name]
        if name in self.raw_consts:
            t = self.raw_consts.pop(name)
            self.consts[name] = self.tensor(t, f"{what} {name!r}")
            return self.consts[name]
        if name in self.shapes_of:
            return self.shapes_of[name]
        if name in self.data_shapes:
            self.fail(f"input {name!r} must be a constant ({what}), but it "
                      f"is computed from the graph input")
        self.fail(f"input {name!r} ({what}) is not defined by any earlier "
                  f"node, initializer or graph input")

    # -- main --------------------------------------------------------------
    def run(self):
        proto, onnx = self.proto, self.onnx
        if not proto.HasField("graph") or proto.ir_version <= 0:
            self.fail("not an ONNX model (it has no graph or no IR version)")
        if proto.ir_version > onnx.IR_VERSION:
            self.fail(f"IR version {proto.ir_version} is newer than this onnx "
                      f"{onnx.__version__} reads ({onnx.IR_VERSION}); "
                      f"upgrade onnx")
        newest = onnx.defs.onnx_opset_version()
        self.opset = None
        for op in proto.opset_import:
            if op.domain in ("", "ai.onnx"):
                self.opset = op.version
        if proto.ir_version >= 3 and self.opset is None:
            self.fail("the model imports no version of the default ONNX "
                      "operator set")
        if self.opset is None:
            self.opset = 1
        if not MIN_IMPORT_OPSET <= self.opset <= newest:
            self.fail(f"opset {self.opset} is not supported; cnnkit imports "
                      f"opsets {MIN_IMPORT_OPSET} to {newest}")
        g = proto.graph
        if len(g.sparse_initializer):
            self.fail("sparse initializers are not supported")
        # initializers: check every one's size now, convert when used
        self.raw_consts, self.consts = {}, {}
        for t in g.initializer:
            if not t.name:
                self.fail("an initializer has no name")
            if t.name in self.raw_consts:
                self.fail(f"initializer {t.name!r} is defined twice")
            self.raw_consts[t.name] = t
        for t in g.initializer:                 # validation, no conversion
            self._check_sizes(t, f"initializer {t.name!r}")
        inputs = [v for v in g.input if v.name not in self.raw_consts]
        if len(inputs) != 1:
            self.fail(f"the graph has {len(inputs)} data inputs "
                      f"({', '.join(repr(v.name) for v in inputs) or 'none'});"
                      f" cnnkit imports graphs with one image input")
        if len(g.output) != 1:
            self.fail(f"the graph has {len(g.output)} outputs "
                      f"({', '.join(repr(v.name) for v in g.output) or 'none'}"
                      f"); cnnkit imports graphs with one output")
        x = inputs[0]
        self._read_input(x)
        self.output_name = g.output[0].name
        nodes = self._fused(list(g.node))
        if self.output_name != x.name and not any(
                self.output_name in n.output for n in nodes):
            self.fail(f"the graph output {self.output_name!r} is not "
                      f"computed from the graph input by any node")
        self.data_shapes = {}       # data value -> actual per-sample shape
        self.values = {}            # data value -> _Value
        self.shapes_of = {}         # symbolic shape values (lists)
        self.nodes = []             # the cnnkit calls, in the order made
        self.defined = set(self.raw_consts) | {x.name}
        self.used = set()
        for name in (v.name for v in g.output):
            self.used.add(name)
        for n in nodes:
            self.used.update(n.input)
        # how often each value is read by a node that needs its contents
        # (not Shape), the graph output counting as a reader
        self.uses = {self.output_name: 1}
        for n in nodes:
            if n.op_type != "Shape":
                for name in n.input:
                    self.uses[name] = self.uses.get(name, 0) + 1
        # the values the graph output depends on
        self.live = {self.output_name}
        for n in reversed(nodes):
            if any(o in self.live for o in n.output if o):
                self.live.update(i for i in n.input if i)
        self.dead = None            # the first node the output ignores
        self.ref = "input"
        self.sole = self.uses.get(x.name, 0) == 1
        self.gap_pending = self.open_dense = None
        self._store(x.name)
        for node in nodes:
            self.node = node
            self._node(node)
        self.node = None
        return self._model()

    def _check_sizes(self, t, what):
        """Validate a tensor's dims and byte count without converting it."""
        TP = self.TP
        if t.data_type not in self._NUMPY:
            return                      # refused by name if it is used
        dims = list(t.dims)
        if len(dims) > 8 or any(d < 0 for d in dims):
            self.fail(f"{what} has invalid dims {dims}")
        count = math.prod(dims)
        itemsize = np.dtype(self._NUMPY[t.data_type]).itemsize
        if t.data_location == TP.EXTERNAL or len(t.external_data):
            self.fail(f"{what} keeps its data in an external file; cnnkit "
                      f"reads only self-contained ONNX files")
        have = (len(t.raw_data) if t.raw_data else
                len(getattr(t, self._FIELDS[t.data_type])) * itemsize)
        if have != count * itemsize:
            self.fail(f"{what} declares shape {dims} of "
                      f"{TP.DataType.Name(t.data_type)} ({count * itemsize} "
                      f"bytes) but holds {have} bytes")

    def _read_input(self, x):
        TP = self.TP
        tt = x.type.tensor_type if x.type.HasField("tensor_type") else None
        if tt is None:
            self.fail(f"graph input {x.name!r} is not a tensor")
        if tt.elem_type not in (TP.FLOAT, TP.DOUBLE):
            name = TP.DataType.Name(tt.elem_type) if tt.elem_type in \
                TP.DataType.values() else str(tt.elem_type)
            self.fail(f"graph input {x.name!r} has element type {name}; "
                      f"cnnkit imports FLOAT or DOUBLE models")
        self.dtype = np.dtype(np.float32 if tt.elem_type == TP.FLOAT
                              else np.float64)
        if not tt.HasField("shape"):
            self.fail(f"graph input {x.name!r} has no shape; cnnkit needs "
                      f"(batch, C, H, W) with fixed C, H and W")
        dims = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(_BATCH)
            else:
                what = d.dim_param or "unknown"
                self.fail(f"graph input {x.name!r} has a symbolic size "
                          f"{what!r} on axis {i}; cnnkit needs fixed C, H and "
                          f"W (only the batch axis may be symbolic)")
        if len(dims) not in (2, 4):
            self.fail(f"graph input {x.name!r} has {len(dims)} axes; cnnkit "
                      f"imports images (batch, C, H, W) or vectors (batch, "
                      f"features)")
        if any(isinstance(d, int) and d > 2 ** 31 for d in dims):
            self.fail(f"graph input {x.name!r} has shape {dims}, too large")
        self.batch = dims[0]
        self.input_name = x.name or None
        self.input_shape = tuple(dims[1:])
        self.input_nhwc = False
        # state of the current value: its cnnkit per-sample shape, and how
        # the ONNX tensor relates to it
        self.cur = self.input_shape
        self.nhwc = False           # tensor is (H, W, C) of cur = (C, H, W)
        self.order = None           # tensor vector = cnnkit vector[order]

    def _load(self, value):
        """Make ``value`` the current value the operator handlers read."""
        (self.ref, self.cur, self.nhwc, self.order, self.gap_pending,
         self.open_dense, self.sole) = (
            value.tensor, value.cur, value.nhwc, value.order, value.gap,
            value.open_dense, value.sole)

    def _store(self, name):
        """Record the current value as the data value ``name``."""
        self.values[name] = _Value(
            self.ref, tuple(self.cur), self.nhwc, self.order,
            self.gap_pending, self.open_dense,
            self.sole and self.ref == "input" and
            self.uses.get(name, 0) == 1)
        self.data_shapes[name] = self.actual_shape()

    def actual_shape(self):
        if self.nhwc:
            c, h, w = self.cur
            return (h, w, c)
        return tuple(self.cur)

    # -- nodes -------------------------------------------------------------
    _DATA_OPS = ("Conv", "Relu", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Gemm", "MatMul",
                 "Add", "Mul", "Concat", "Dropout", "Identity", "Transpose",
                 "Softmax", "LogSoftmax", "ReduceMean",
                 "BatchNormalization")
    _ACTIVATION_OPS = ("LeakyRelu", "Sigmoid", "Tanh", "Gelu")
    _DATA_OPS += _ACTIVATION_OPS
    _MERGE_OPS = ("Add", "Mul", "Concat")
    _SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat",
                  "Slice", "Cast")

    def _node(self, node):
        if node.domain not in ("", "ai.onnx"):
            self.fail(f"operator {node.domain}.{node.op_type} is not "
                      f"supported (only the default ONNX domain)")
        if not node.output or not node.output[0]:
            self.fail("it has no output")
        for out in node.output:
            if out and out in self.defined:
                self.fail(f"value {out!r} is defined twice (an ONNX graph "
                          f"defines each value once)")
            self.defined.add(out)
        op = node.op_type
        if op == "Constant":
            return self._constant(node)
        data_in = [i for i, name in enumerate(node.input)
                   if name in self.values]
        if op == "Shape" and data_in:
            return self._shape(node)
        if not data_in:
            if op == "Identity":
                self._alias(node)
                return
            if op in self._SHAPE_OPS:
                return self._shape_op(node, op)
            self.fail(f"operator {op} on constants is not supported")
        if op not in self._DATA_OPS and id(node) not in self.synthetic:
            self.fail(f"operator {op} is not supported; cnnkit imports "
                      f"{', '.join(self._DATA_OPS)}")
        if self.dead is None and not any(
                out in self.live for out in node.output if out):
            self.dead = node            # refused once the walk is done
        for extra in node.output[1:]:
            if extra and extra in self.used:
                self.fail(f"its second output {extra!r} is used; cnnkit "
                          f"supports only the first")
        if op in self._MERGE_OPS and (len(data_in) > 1 or op != "Add"):
            return self._merge(node, data_in)
        if len(data_in) > 1:
            self.fail(f"it takes {len(data_in)} inputs computed from the "
                      f"graph input; cnnkit's {op} takes one (values are "
                      f"merged by Add, Mul and Concat)")
        pos = data_in[0]
        self._load(self.values[node.input[pos]])
        if op != "Add":
            if op != "MatMul":
                self.open_dense = None
            if op not in ("Flatten", "Reshape", "Dropout", "Identity"):
                self.gap_pending = None
        try:
            getattr(self, f"_op_{op}")(node, pos)
        except _ImportError:
            raise
        except (TypeError, ValueError) as exc:   # from a layer's checks
            self.fail(str(exc))
        self._store(node.output[0])

    def _constant(self, node):
        a = _attrs(node, {"value", "value_float", "value_floats",
                          "value_int", "value_ints"}, self.fail)
        if len(a) != 1:
            self.fail("a Constant needs exactly one of value, value_float, "
                      "value_floats, value_int, value_ints")
        (key, value), = a.items()
        if key == "value":
            self._check_sizes(value, "its value")
            arr = self.tensor(value, "its value")
        elif key in ("value_float", "value_floats"):
            arr = np.asarray(value, dtype=np.float32)
        else:
            arr = np.asarray(value, dtype=np.int64)
        self.consts[node.output[0]] = arr

    def _alias(self, node):
        if len(node.input) != 1:
            self.fail("an Identity takes one input")
        value = self.static(node.input[0], "the input")
        if isinstance(value, list):
            self.shapes_of[node.output[0]] = value
        else:
            self.consts[node.output[0]] = value

    # -- activations written as several nodes -------------------------------
    def _fused(self, nodes):
        """``nodes`` with the decomposed forms of SiLU (``x *
        Sigmoid(x)``) and GELU (``0.5 * x * (1 + Erf(x / sqrt 2))`` and
        the tanh approximation, as PyTorch's exporter and :func:`export`
        write them before opset 20) each replaced by one node: ``Gelu``, or
        ``SiLU`` (a node of this importer's own, marked in
        ``self.synthetic``).  A form is taken only when nothing else reads
        its intermediate values."""
        from onnx import helper
        self.synthetic = set()
        producer = {o: n for n in nodes for o in n.output if o}
        readers = {}
        for n in nodes:
            for name in n.input:
                readers.setdefault(name, []).append(n)
        const_nodes = {n.output[0]: n for n in nodes
                       if n.op_type == "Constant" and n.output}

        def scalar(name):
            arr = None
            if name in self.raw_consts:
                arr = self.tensor(self.raw_consts[name], f"initializer "
                                                         f"{name!r}")
            elif name in const_nodes:
                for a in const_nodes[name].attribute:
                    if a.name == "value" and a.type == a.TENSOR:
                        arr = self.tensor(a.t, f"constant {name!r}")
                    elif a.name == "value_float" and a.type == a.FLOAT:
                        arr = np.asarray(a.f)
            if arr is None or arr.size != 1 or arr.dtype.kind != "f":
                return None
            return float(arr.reshape(()))

        def sole(name):
            """The one node reading ``name``, when it is not the output."""
            r = readers.get(name, [])
            return r[0] if len(r) == 1 and name != self.output_name else None

        def binary(n, op):
            return (n is not None and n.op_type == op and len(n.input) == 2
                    and n.domain in ("", "ai.onnx") and not n.attribute)

        def split(n, value):
            """The other input of ``n`` when one is the scalar ``value``."""
            for i in (0, 1):
                c = scalar(n.input[i])
                if c is not None and math.isclose(c, value, rel_tol=1e-6):
                    return n.input[1 - i]
            return None

        def tail(start, x):
            """(x * (start + 1)) * 0.5, or (x * 0.5) * (start + 1)."""
            a = sole(start)
            if not binary(a, "Add") or split(a, 1.0) != start:
                return None
            m = sole(a.output[0])
            if not binary(m, "Mul"):
                return None
            other = m.input[1] if m.input[0] == a.output[0] else m.input[0]
            if other == x:
                h = sole(m.output[0])
                if binary(h, "Mul") and split(h, 0.5) == m.output[0]:
                    return [a, m, h]
                return None
            h = producer.get(other)
            if binary(h, "Mul") and split(h, 0.5) == x and sole(other) is m:
                return [h, a, m]
            return None

        def tanh_front(e):
            """(x, nodes) of sqrt(2/pi) * (x + 0.044715 * x * (x * x))."""
            b = producer.get(e.input[0])
            if not binary(b, "Mul") or sole(e.input[0]) is not e:
                return None
            inner = split(b, math.sqrt(2 / math.pi))
            ad = producer.get(inner)
            if not binary(ad, "Add") or sole(inner) is not b:
                return None
            for x, k in ((ad.input[0], ad.input[1]),
                         (ad.input[1], ad.input[0])):
                km = producer.get(k)
                if not binary(km, "Mul") or sole(k) is not ad:
                    continue
                cube = split(km, 0.044715)
                cm = producer.get(cube)
                if not binary(cm, "Mul") or sole(cube) is not km or \
                        x not in cm.input:
                    continue
                sq = cm.input[1] if cm.input[0] == x else cm.input[0]
                sm = producer.get(sq)
                if binary(sm, "Mul") and list(sm.input) == [x, x] and \
                        sole(sq) is cm:
                    return x, [sm, cm, km, ad, b]
            return None

        matches = []                    # (nodes, op, x, output, attrs)
        for e in nodes:
            if e.op_type == "Erf" and len(e.input) == 1:
                d, x = producer.get(e.input[0]), None
                if sole(e.input[0]) is not e:
                    continue
                if binary(d, "Div"):
                    c = scalar(d.input[1])
                    if c is not None and math.isclose(c, math.sqrt(2),
                                                      rel_tol=1e-6):
                        x = d.input[0]
                elif binary(d, "Mul"):
                    x = split(d, math.sqrt(0.5))
                t = x is not None and tail(e.output[0], x)
                if t:
                    matches.append(([d, e] + t, "Gelu", x,
                                    {"approximate": "none"}))
            elif e.op_type == "Tanh" and len(e.input) == 1:
                front = tanh_front(e)
                t = front and tail(e.output[0], front[0])
                if t:
                    matches.append((front[1] + [e] + t, "Gelu", front[0],
                                    {"approximate": "tanh"}))
            elif e.op_type == "Sigmoid" and len(e.input) == 1:
                m = sole(e.output[0])
                if binary(m, "Mul") and sorted(m.input) == sorted(
                        [e.input[0], e.output[0]]):
                    matches.append(([e, m], "SiLU", e.input[0], {}))
        if not matches:
            return nodes
        taken, last = set(), {}
        for group, op, x, attrs in matches:
            ids = {id(n) for n in group}
            if ids & taken:
                continue
            taken |= ids
            final = group[-1]
            fused = helper.make_node(op, [x], [final.output[0]],
                                     name=final.name, **attrs)
            if op == "SiLU":
                self.synthetic.add(id(fused))
            last[id(max(group, key=lambda n: next(
                i for i, m in enumerate(nodes) if m is n)))] = fused
        out = []
        for n in nodes:
            if id(n) in last:
                out.append(last[id(n)])
            elif id(n) not in taken:
                out.append(n)
        return out

    # -- shape arithmetic (e.g. x.view(x.size(0), -1) in PyTorch) ----------
    def _shape(self, node):
        a = _attrs(node, {"start", "end"}, self.fail)
        shape = [_BATCH] + list(self.data_shapes[node.input[0]])
        start, end = a.get("start", 0), a.get("end", len(shape))
        self.shapes_of[node.output[0]] = shape[slice(start, end)]

    def _as_list(self, name, what):
        value = self.static(name, what)
        if isinstance(value, list):
            return value, True
        if value.dtype.kind not in "iu":
            self.fail(f"{what} {name!r} must hold integers, got "
                      f"{value.dtype}")
        if value.ndim > 1:
            self.fail(f"{what} {name!r} must have at most one axis, got "
                      f"shape {list(value.shape)}")
        return [int(v) for v in value.reshape(-1)], value.ndim == 1

    def _shape_op(self, node, op):
        out = node.output[0]
        if op == "Cast":
            _attrs(node, {"to", "saturate", "round_mode"}, self.fail)
            value = self.static(node.input[0], "the input")
            if isinstance(value, list):
                self.shapes_of[out] = value
            else:
                self.fail("Cast of constants is not supported")
            return
        if op == "Gather":
            a = _attrs(node, {"axis"}, self.fail)
            data, _ = self._as_list(node.input[0], "the data")
            idx, _ = self._as_list(node.input[1], "the indices")
            if a.get("axis", 0) != 0:
                self.fail(f"attribute axis={a['axis']} is not supported")
            try:
                picked = [data[i] for i in idx]
            except IndexError:
                self.fail(f"indices {idx} are out of range for {data}")
            self.shapes_of[out] = picked
            return
        if op in ("Unsqueeze", "Squeeze"):
            _attrs(node, {"axes"}, self.fail)
            data, _ = self._as_list(node.input[0], "the data")
            self.shapes_of[out] = list(data)
            return
        if op == "Concat":
            a = _attrs(node, {"axis"}, self.fail)
            if a.get("axis", 0) not in (0, -1):
                self.fail(f"attribute axis={a['axis']} is not supported")
            result = []
            for name in node.input:
                part, _ = self._as_list(name, "an input")
                result += part
            self.shapes_of[out] = result
            return
        if op == "Slice":
            _attrs(node, set(), self.fail)
            data, _ = self._as_list(node.input[0], "the data")
            starts, _ = self._as_list(node.input[1], "starts")
            ends, _ = self._as_list(node.input[2], "ends")
            if len(node.input) > 3 and node.input[3]:
                axes, _ = self._as_list(node.input[3], "axes")
                if axes not in ([0], [-1]):
                    self.fail(f"axes {axes} are not supported")
            step = 1
            if len(node.input) > 4 and node.input[4]:
                steps, _ = self._as_list(node.input[4], "steps")
                step = steps[0] if steps else 0
                if step == 0:
                    self.fail("steps must be non-zero")
            if not starts or not ends:
                self.fail("starts and ends must not be empty")
            self.shapes_of[out] = data[starts[0]:ends[0]:step]
            return
        self.fail(f"operator {op} is not supported")  # pragma: no cover

    # -- layers ------------------------------------------------------------
    def _add_layer(self, layer, params=None, share=None):
        """Call ``layer`` on the current value, which becomes its output.
        ``share`` names the weights' sources: calls with equal ``share``,
        configuration, input shape and weights are one layer called
        several times."""
        try:
            out = layer.compute_output_shape(self.cur)
        except ValueError as exc:
            self.fail(f"cnnkit's {type(layer).__name__} cannot take its "
                      f"input of shape {self.cur}: {exc}")
        if isinstance(layer, (L.Conv2D, L.MaxPool2D, L.GlobalAvgPool2D,
                              L.GlobalMaxPool2D)) \
                and (self.nhwc or self.order is not None):
            self.fail("its input is in a transposed layout that cnnkit "
                      "cannot fold away")
        self.ref = self._call(layer, params, [self.ref], share)
        self.cur = tuple(out)
        return layer

    def _call(self, layer, params, inputs, share=None):
        """Record a cnnkit call of ``layer`` on ``inputs`` (``"input"`` or
        the indices of earlier calls); returns its index."""
        self.nodes.append(_Call(layer, params or {}, list(inputs),
                                self.node.name, share and (
                                    share, tuple(self.cur))))
        return len(self.nodes) - 1

    def _pads(self, a, kernel, stride, dilation):
        """(top, left, bottom, right) from pads / auto_pad."""
        auto = a.get("auto_pad", "NOTSET")
        if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            self.fail(f"attribute auto_pad={auto!r} is not supported")
        if auto == "NOTSET":
            return _ints(a.get("pads", [0, 0, 0, 0]), 4, "pads", self.fail, 0)
        if "pads" in a and any(a["pads"]):
            self.fail(f"attribute pads={a['pads']} cannot go with "
                      f"auto_pad={auto}")
        if auto == "VALID":
            return [0, 0, 0, 0]
        before, after = [], []
        for size, k, s, d in zip(self.cur[1:], kernel, stride, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            small, big = total // 2, total - total // 2
            before.append(small if auto == "SAME_UPPER" else big)
            after.append(big if auto == "SAME_UPPER" else small)
        return before + after

    def _check_4d(self, what):
        if len(self.cur) != 3:
            self.fail(f"{what} needs an input of shape (batch, C, H, W); got "
                      f"(batch, {', '.join(map(str, self.actual_shape()))})")
        if self.nhwc:
            self.fail("its input is in NHWC layout (after a Transpose); "
                      "cnnkit convolves and pools NCHW tensors")

    def _op_Conv(self, node, pos):
        a = _attrs(node, {"auto_pad", "dilations", "group", "kernel_shape",
                          "pads", "strides"}, self.fail)
        if pos != 0:
            self.fail("the graph input must be its first input")
        self._check_4d("Conv")
        if len(node.input) < 2:
            self.fail("it has no weight input")
        w = self.static(node.input[1], "the weight")
        b = self.static(node.input[2], "the bias") if len(node.input) > 2 \
            and node.input[2] else None
        if not isinstance(w, np.ndarray) or w.ndim != 4:
            self.fail(f"the weight must be 4-D (K, C, R, S), got shape "
                      f"{list(np.shape(w))}")
        group = a.get("group", 1)
        if not is_int(group) or group < 1 or self.cur[0] % group or \
                w.shape[0] % group:
            self.fail(f"attribute group={group!r} must be a positive int "
                      f"dividing the input's {self.cur[0]} channels and the "
                      f"weight's {w.shape[0]} filters")
        group = int(group)
        self._check_dtype(w, "weight")
        kernel = list(w.shape[2:])
        if "kernel_shape" in a and list(a["kernel_shape"]) != kernel:
            self.fail(f"attribute kernel_shape={list(a['kernel_shape'])} does "
                      f"not match the weight's shape {list(w.shape)}")
        if w.shape[1] * group != self.cur[0]:
            self.fail(f"the weight of shape {list(w.shape)} with group="
                      f"{group} expects {w.shape[1] * group} input channels; "
                      f"the input has {self.cur[0]}")
        stride = _ints(a.get("strides", [1, 1]), 2, "strides", self.fail, 1)
        dilation = _ints(a.get("dilations", [1, 1]), 2, "dilations",
                         self.fail, 1)
        t, left, bot, right = self._pads(a, kernel, stride, dilation)
        if t == bot and left == right:
            padding = (t, left)
        else:
            same = [d * (k - 1) for k, d in zip(kernel, dilation)]
            if stride == [1, 1] and [t, left, bot, right] == [
                    same[0] // 2, same[1] // 2, same[0] - same[0] // 2,
                    same[1] - same[1] // 2]:
                padding = "same"
            else:
                self.fail(f"pads [top, left, bottom, right] = "
                          f"{[t, left, bot, right]} are asymmetric; cnnkit's "
                          f"Conv2D pads both sides alike (or as 'same' at "
                          f"stride 1)")
        if b is not None:
            self._check_dtype(b, "bias")
            if b.shape != (w.shape[0],):
                self.fail(f"the bias must have shape [{w.shape[0]}], got "
                          f"{list(b.shape)}")
        params = {"weight": w}
        if b is not None:
            params["bias"] = b
        if group > 1 and group == self.cur[0]:
            # one group per channel: the depthwise convolution
            layer = L.DepthwiseConv2D(
                tuple(kernel), int(w.shape[0]) // group, tuple(stride),
                padding, tuple(dilation), use_bias=b is not None)
        else:
            layer = L.Conv2D(int(w.shape[0]), tuple(kernel), tuple(stride),
                             padding, tuple(dilation), use_bias=b is not None,
                             groups=group)
        self._add_layer(layer, params, ("Conv", *node.input[1:3]))

    def _check_dtype(self, arr, what):
        if arr.dtype != self.dtype:
            self.fail(f"the {what} is {arr.dtype}, but the graph input is "
                      f"{self.dtype}; cnnkit models have one dtype")

    def _op_BatchNormalization(self, node, pos):
        a = _attrs(node, {"epsilon", "momentum", "training_mode",
                          "spatial"}, self.fail)
        if pos != 0:
            self.fail("the graph input must be its first input (X)")
        if a.get("training_mode", 0):
            self.fail("training_mode=1 is not supported (cnnkit imports "
                      "the evaluation form)")
        if a.get("spatial", 1) != 1:
            self.fail("spatial=0 is not supported")
        if len(node.input) != 5 or not all(node.input):
            self.fail("it needs the inputs X, scale, B, input_mean and "
                      "input_var")
        if len(self.cur) not in (1, 3):
            self.fail(f"it needs an input of shape (batch, C) or (batch, C, "
                      f"H, W); got (batch, "
                      f"{', '.join(map(str, self.actual_shape()))})")
        if self.nhwc or self.order is not None:
            self.fail("its input is in a transposed layout that cnnkit "
                      "cannot fold away")
        c = self.cur[0]
        params = {}
        for key, name in zip(("weight", "bias", "running_mean",
                              "running_var"), node.input[1:]):
            arr = self.static(name, f"the {key}")
            if not isinstance(arr, np.ndarray) or arr.shape != (c,):
                self.fail(f"the {key} must be a constant of shape [{c}], "
                          f"got {list(np.shape(arr))}")
            self._check_dtype(arr, key)
            params[key] = np.ascontiguousarray(arr)
        params["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        # attributes are float32: keep the 7 digits they hold
        eps = float(f"{float(a.get('epsilon', 1e-5)):.7g}")
        momentum = float(f"{1.0 - float(a.get('momentum', 0.9)):.7g}")
        if not 0.0 <= momentum <= 1.0 or not eps >= 0.0:
            self.fail(f"attributes epsilon={eps} and momentum="
                      f"{1.0 - momentum} are out of range")
        cls = L.BatchNorm2D if len(self.cur) == 3 else L.BatchNorm1D
        self._add_layer(cls(momentum=momentum, eps=eps), params,
                        ("BatchNormalization", *node.input[1:]))

    def _op_Relu(self, node, pos):
        _attrs(node, set(), self.fail)
        self._add_layer(L.ReLU())

    def _pool(self, node, avg):
        allowed = {"auto_pad", "ceil_mode", "kernel_shape", "pads",
                   "strides", "dilations"}
        allowed |= {"count_include_pad"} if avg else {"storage_order"}
        a = _attrs(node, allowed, self.fail)
        self._check_4d(node.op_type)
        if "kernel_shape" not in a:
            self.fail("attribute kernel_shape is missing")
        kernel = _ints(a["kernel_shape"], 2, "kernel_shape", self.fail, 1)
        stride = _ints(a.get("strides", [1, 1]), 2, "strides", self.fail, 1)
        if _ints(a.get("dilations", [1, 1]), 2, "dilations", self.fail,
                 1) != [1, 1]:
            self.fail(f"attribute dilations={list(a['dilations'])} is not "
                      f"supported (cnnkit pools without dilation)")
        t, left, bot, right = self._pads(a, kernel, stride, [1, 1])
        if t != bot or left != right:
            self.fail(f"pads [top, left, bottom, right] = "
                      f"{[t, left, bot, right]} are asymmetric; cnnkit's "
                      f"pooling pads both sides alike")
        if a.get("ceil_mode", 0) not in (0, 1):
            self.fail(f"attribute ceil_mode={a['ceil_mode']} is not 0 or 1")
        ceil = bool(a.get("ceil_mode", 0))
        if 2 * t > kernel[0] or 2 * left > kernel[1]:
            self.fail(f"pads {[t, left, bot, right]} are more than half the "
                      f"kernel {kernel}, which cnnkit's pooling does not "
                      f"support")
        if avg:
            cip = a.get("count_include_pad", 0)
            layer = L.AvgPool2D(tuple(kernel), tuple(stride), (t, left),
                                count_include_pad=bool(cip), ceil_mode=ceil)
        else:
            layer = L.MaxPool2D(tuple(kernel), tuple(stride), (t, left),
                                ceil_mode=ceil)
        self._add_layer(layer)

    def _op_MaxPool(self, node, pos):
        self._pool(node, avg=False)

    def _op_AveragePool(self, node, pos):
        self._pool(node, avg=True)

    def _op_GlobalAveragePool(self, node, pos):
        _attrs(node, set(), self.fail)
        self._check_4d("GlobalAveragePool")
        c, h, w = self.cur
        self._add_layer(L.AvgPool2D((h, w)))
        self.gap_pending = self.ref

    def _op_GlobalMaxPool(self, node, pos):
        _attrs(node, set(), self.fail)
        self._check_4d("GlobalMaxPool")
        c, h, w = self.cur
        self._add_layer(L.MaxPool2D((h, w)))
        self.gap_pending = self.ref       # a Flatten after it folds it

    def _op_ReduceMean(self, node, pos):
        a = _attrs(node, {"axes", "keepdims", "noop_with_empty_axes"},
                   self.fail)
        if "axes" in a:
            axes = list(a["axes"])
        elif len(node.input) > 1 and node.input[1]:
            axes, _ = self._as_list(node.input[1], "the axes")
        else:
            self.fail("a ReduceMean over all axes is not supported")
        if len(self.cur) != 3:
            self.fail("ReduceMean needs a 4-D input")
        if any(not -4 <= ax < 4 for ax in axes):
            self.fail(f"axes {axes} are out of range for a 4-D input")
        axes = sorted(ax % 4 for ax in axes)
        spatial = [1, 2] if self.nhwc else [2, 3]
        if axes != spatial:
            self.fail(f"ReduceMean over axes {axes} is not supported (only "
                      f"the spatial axes {spatial})")
        keep = a.get("keepdims", 1)
        if keep and self.nhwc:
            self.fail("ReduceMean with keepdims=1 in NHWC layout is not "
                      "supported")
        self.nhwc = False
        if keep:
            self._add_layer(L.AvgPool2D(tuple(self.cur[1:])))
        else:
            self._add_layer(L.GlobalAvgPool2D())

    def _flatten(self):
        """The current value, flattened per sample (a Flatten layer)."""
        if self.gap_pending is not None and self.cur[1:] == (1, 1):
            # AvgPool2D over the plane and Flatten: one GlobalAvgPool2D
            # when nothing else reads the pooled value (see _model)
            gap, self.gap_pending = self.gap_pending, None
            self._add_layer(L.Flatten())
            self.nodes[self.ref].folds = gap
            return
        if self.nhwc:
            c, h, w = self.cur
            self.order = np.arange(c * h * w).reshape(c, h, w).transpose(
                1, 2, 0).reshape(-1)
            self.nhwc = False
        self._add_layer(L.Flatten())

    def _op_Flatten(self, node, pos):
        a = _attrs(node, {"axis"}, self.fail)
        rank = len(self.cur) + 1
        axis = a.get("axis", 1)
        if axis < 0:
            axis += rank
        if axis != 1:
            self.fail(f"attribute axis={a['axis']} is not supported (cnnkit "
                      f"flattens each sample: axis 1)")
        self._flatten()

    def _op_Reshape(self, node, pos):
        a = _attrs(node, {"allowzero"}, self.fail)
        if pos != 0 or len(node.input) != 2:
            self.fail("it must reshape its first input by a second one")
        target, _ = self._as_list(node.input[1], "the target shape")
        shape = [_BATCH if self.batch == _BATCH else self.batch] + \
            list(self.actual_shape())
        size = math.prod(shape[1:])
        resolved = []
        for i, t in enumerate(target):
            if t == 0 and not a.get("allowzero", 0) and i < len(shape):
                resolved.append(shape[i])
            else:
                resolved.append(t)
        ok_batch = resolved[:1] in ([_BATCH], [self.batch], [-1])
        if len(resolved) == 2 and ok_batch and resolved[1] in (size, -1) \
                and not (resolved[0] == -1 and resolved[1] == -1):
            self._flatten()
        elif ok_batch and resolved[1:] == list(self.actual_shape()):
            pass                                 # a reshape to itself
        else:
            self.fail(f"a reshape of (batch, "
                      f"{', '.join(map(str, self.actual_shape()))}) to "
                      f"{target} is not supported; cnnkit reshapes only to "
                      f"(batch, features)")

    def _dense(self, w, b, node, share=None):
        """Append a Dense layer with weight ``w`` (out, in)."""
        self._check_dtype(w, "weight")
        if len(self.cur) != 1:
            self.fail(f"it needs an input of shape (batch, features); got "
                      f"(batch, {', '.join(map(str, self.actual_shape()))})")
        if w.shape[1] != self.cur[0]:
            self.fail(f"the weight takes {w.shape[1]} features; the input "
                      f"has {self.cur[0]}")
        if self.order is not None:      # undo an NHWC flattening order
            folded = np.empty_like(w)
            folded[:, self.order] = w
            w = folded
            share = share and share + (self.order.tobytes(),)
            self.order = None
        params = {"weight": np.ascontiguousarray(w)}
        if b is not None:
            params["bias"] = self._bias(b, w.shape[0])
        return self._add_layer(L.Dense(int(w.shape[0]),
                                       use_bias=b is not None), params,
                               share)

    def _bias(self, b, units):
        if not isinstance(b, np.ndarray):
            self.fail("the bias must be a constant tensor")
        self._check_dtype(b, "bias")
        if b.shape in ((units,), (1, units)):
            return b.reshape(units)
        if b.size == 1:
            return np.full(units, b.reshape(()), dtype=b.dtype)
        self.fail(f"the bias of shape {list(b.shape)} does not broadcast "
                  f"to [{units}] as a per-output bias")

    def _op_Gemm(self, node, pos):
        a = _attrs(node, {"alpha", "beta", "transA", "transB"}, self.fail)
        if pos != 0:
            self.fail("the graph input must be its first input (A)")
        for key in ("alpha", "beta"):
            if a.get(key, 1.0) != 1.0:
                self.fail(f"attribute {key}={a[key]} is not supported (only "
                          f"1.0)")
        if a.get("transA", 0):
            self.fail(f"attribute transA={a['transA']} is not supported")
        w = self.static(node.input[1], "the weight")
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            self.fail(f"the weight must be 2-D, got shape "
                      f"{list(np.shape(w))}")
        if not a.get("transB", 0):
            w = w.T
        b = self.static(node.input[2], "the bias") if len(node.input) > 2 \
            and node.input[2] else None
        self._dense(w, b, node, ("Gemm", a.get("transB", 0),
                                 *node.input[1:3]))

    def _op_MatMul(self, node, pos):
        _attrs(node, set(), self.fail)
        if pos != 0:
            self.fail("the graph input must be its first input (x @ W)")
        w = self.static(node.input[1], "the weight")
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            self.fail(f"the weight must be 2-D (in, out), got shape "
                      f"{list(np.shape(w))}")
        self._dense(w.T, None, node)
        self.open_dense = self.ref

    def _op_Add(self, node, pos):
        _attrs(node, set(), self.fail)
        call = None if self.open_dense is None else \
            self.nodes[self.open_dense]
        self.open_dense = None
        if call is None or call.layer.use_bias or \
                self.uses.get(node.input[pos], 0) != 1:
            self.fail("an Add of a constant is supported only as the bias "
                      "of a MatMul right before it, whose output nothing "
                      "else reads")
        b = self.static(node.input[1 - pos], "the bias")
        call.params["bias"] = self._bias(b, call.layer.units)
        call.layer.use_bias = True

    def _op_Dropout(self, node, pos):
        _attrs(node, {"ratio", "seed", "is_test"}, self.fail)
        if len(node.input) > 2 and node.input[2]:
            mode = self.static(node.input[2], "training_mode")
            if not isinstance(mode, np.ndarray) or mode.size != 1 or \
                    bool(mode.reshape(())):
                self.fail("training_mode must be a constant false")

    def _op_Identity(self, node, pos):
        _attrs(node, set(), self.fail)

    def _op_Transpose(self, node, pos):
        a = _attrs(node, {"perm"}, self.fail)
        rank = len(self.cur) + 1
        perm = list(a.get("perm", range(rank - 1, -1, -1)))
        if perm == list(range(rank)):
            return
        if rank == 4 and perm == [0, 2, 3, 1] and not self.nhwc:
            self.nhwc = True
            return
        if rank == 4 and perm == [0, 3, 1, 2]:
            if self.nhwc:
                self.nhwc = False
                return
            if self.ref == "input" and self.sole and \
                    not self.input_nhwc:
                # an NHWC graph input: the cnnkit model takes NCHW images
                h, w, c = self.cur
                self.cur = self.input_shape = (c, h, w)
                self.input_nhwc = True
                return
        self.fail(f"attribute perm={perm} on a tensor of shape (batch, "
                  f"{', '.join(map(str, self.actual_shape()))}) is not "
                  f"supported: cnnkit folds only NHWC <-> NCHW transposes "
                  f"that cancel")

    def _softmax(self, node, layer):
        """A final Softmax or LogSoftmax is dropped (cnnkit models return
        logits), except in a graph that cnnkit exported with its output
        named ``logits``, where it is a layer of the model; anywhere else
        it is a layer."""
        a = _attrs(node, {"axis"}, self.fail)
        if len(self.cur) != 1 or self.order is not None:
            self.fail(f"a {node.op_type} needs an input of shape (batch, "
                      f"classes)")
        default = -1 if self.opset >= 13 else 1
        if a.get("axis", default) not in (1, -1):
            self.fail(f"attribute axis={a['axis']} is not supported")
        if node.output[0] != self.output_name or (
                self.proto.producer_name == "cnnkit" and
                self.output_name == "logits"):
            self._add_layer(layer)

    def _op_Softmax(self, node, pos):
        self._softmax(node, L.Softmax())

    def _op_LogSoftmax(self, node, pos):
        self._softmax(node, L.LogSoftmax())

    def _op_LeakyRelu(self, node, pos):
        a = _attrs(node, {"alpha"}, self.fail)
        # alpha is a float32 attribute: its shortest decimal form gives
        # back the slope an exporter rounded (0.01, not 0.009999999776)
        alpha = float(str(np.float32(a.get("alpha", 0.01))))
        self._add_layer(L.LeakyReLU(alpha))

    def _op_Sigmoid(self, node, pos):
        _attrs(node, set(), self.fail)
        self._add_layer(L.Sigmoid())

    def _op_Tanh(self, node, pos):
        _attrs(node, set(), self.fail)
        self._add_layer(L.Tanh())

    def _op_SiLU(self, node, pos):
        self._add_layer(L.SiLU())

    def _op_Gelu(self, node, pos):
        a = _attrs(node, {"approximate"}, self.fail)
        self._add_layer(L.GELU(a.get("approximate", "none")))

    # -- merges ------------------------------------------------------------
    def _merge(self, node, data_in):
        """Add, Mul or Concat of two or more computed values: cnnkit's
        Add, Multiply or Concatenate."""
        op = node.op_type
        a = _attrs(node, {"axis"} if op == "Concat" else set(), self.fail)
        consts = [name for i, name in enumerate(node.input)
                  if i not in data_in]
        if consts:
            self.fail(f"it combines a computed value with {consts[0]!r}, "
                      f"which is not computed from the graph input; cnnkit "
                      f"merges computed values only" + (
                          " (an Add of a constant is supported as the bias "
                          "of a MatMul)" if op == "Add" else ""))
        if len(data_in) < 2:
            self.fail(f"a {op} of one input is not supported")
        names = [node.input[i] for i in data_in]
        values = [self.values[name] for name in names]
        first = values[0]
        if any(v.nhwc != first.nhwc for v in values):
            self.fail("its inputs are in different layouts (NCHW and NHWC, "
                      "after a Transpose), which cnnkit cannot merge")
        if any((v.order is None) != (first.order is None) or (
                v.order is not None and not np.array_equal(
                    v.order, first.order)) for v in values) or (
                op == "Concat" and first.order is not None):
            self.fail("its inputs are flattened from NHWC tensors, which "
                      "cnnkit cannot merge")
        shapes = [self.data_shapes[name] for name in names]
        shown = " and ".join(str(list(shape)) for shape in shapes)
        if op == "Concat":
            rank = len(shapes[0]) + 1
            if "axis" not in a:
                self.fail("attribute axis is missing")
            axis = a["axis"]
            if not -rank <= axis < rank:
                self.fail(f"attribute axis={axis} is out of range for "
                          f"inputs of {rank} axes")
            if axis % rank == 0:
                self.fail(f"attribute axis={axis} joins along the batch "
                          f"axis, which cnnkit does not")
            if first.nhwc:                    # the axis of the NCHW tensor
                axis = (0, 2, 3, 1)[axis % rank]
            layer = L.Concatenate(axis=axis)
        else:
            if any(shape != shapes[0] for shape in shapes):
                kind = "Add" if op == "Add" else "Multiply"
                self.fail(f"its inputs have shapes {shown} (per sample); "
                          f"cnnkit's {kind} takes inputs of one shape (no "
                          f"broadcasting)")
            layer = L.Add() if op == "Add" else L.Multiply()
        try:
            out = layer.compute_output_shape([v.cur for v in values])
        except ValueError as exc:
            self.fail(f"cnnkit's {type(layer).__name__} cannot take inputs "
                      f"of shapes {shown}: {exc}")
        self._load(first)
        self.ref = self._call(layer, None, [v.tensor for v in values])
        self.cur = tuple(out)
        self.gap_pending = self.open_dense = None
        self._store(node.output[0])

    # -- result ------------------------------------------------------------
    def _model(self):
        out = self.values.get(self.output_name)
        if out is None:
            self.fail(f"the graph output {self.output_name!r} is not computed "
                      f"from the graph input")
        if self.dead is not None:
            self.node = self.dead
            self.fail(f"its output {self.dead.output[0]!r} does not lead to "
                      f"the graph output {self.output_name!r}; cnnkit models "
                      f"compute one output")
        if out.nhwc or out.order is not None:
            self.fail("the graph ends in a transposed layout that cnnkit "
                      "cannot fold away")
        if out.tensor == "input":
            self.fail("the graph has no layers cnnkit can hold (only "
                      "identities)")
        calls, output = self._simplified(out.tensor)
        chain = output == len(calls) - 1 and all(
            call.inputs == [i - 1 if i else "input"]
            for i, call in enumerate(calls))
        if chain:
            return self._sequential(calls)
        return self._graph_model(calls, output)

    def _simplified(self, output):
        """The calls that lead to ``output`` (and its new index), with an
        AvgPool2D (MaxPool2D) over the plane read only by a Flatten made one
        GlobalAvgPool2D (GlobalMaxPool2D), and an Add (Multiply) whose first input is an Add
        (Multiply) that nothing else reads made one call over all their
        inputs, in order: the same sums and products, in the same order."""
        calls = self.nodes
        gone = {}                       # index -> the call that replaces it

        def find(ref):
            while ref in gone:
                ref = gone[ref]
            return ref

        def readers():
            count = {output: 1}
            for k, call in enumerate(calls):
                if k not in gone:
                    for ref in call.inputs:
                        count[ref] = count.get(ref, 0) + 1
            return count

        count = readers()
        for k, call in enumerate(calls):
            gap = call.folds
            if gap is not None and call.inputs == [gap] and count[gap] == 1:
                calls[gap].layer = (L.GlobalMaxPool2D()
                                    if type(calls[gap].layer) is L.MaxPool2D
                                    else L.GlobalAvgPool2D())
                gone[k] = gap
        for call in calls:
            call.inputs = [find(ref) for ref in call.inputs]
        output = find(output)
        count = readers()
        for k, call in enumerate(calls):
            head = call.inputs[0]
            if k in gone or type(call.layer) not in (L.Add, L.Multiply) or \
                    head == "input" or head == output:
                continue
            inner = calls[head]
            if type(inner.layer) is type(call.layer) and count[head] == 1:
                call.inputs = inner.inputs + call.inputs[1:]
                call.name = inner.name
                gone[head] = k
        # the calls the output depends on, in order
        needed, stack = set(), [output]
        while stack:
            k = stack.pop()
            if k != "input" and k not in needed:
                needed.add(k)
                stack.extend(calls[k].inputs)
        index = {k: i for i, k in enumerate(sorted(needed))}
        kept = []
        for k in sorted(needed):
            call = calls[k]
            call.inputs = [ref if ref == "input" else index[ref]
                           for ref in call.inputs]
            kept.append(call)
        return kept, index[output]

    def _sequential(self, calls):
        layers = [call.layer for call in calls]
        try:
            model = Sequential(layers, input_shape=self.input_shape, seed=0,
                               dtype=self.dtype)
        except ValueError as exc:
            self.fail(f"the layers do not form a cnnkit model: {exc}")
        model.load_state_dict({f"{i}.{name}": value
                               for i, call in enumerate(calls)
                               for name, value in call.params.items()})
        return model

    def _graph_model(self, calls, output):
        """A cnnkit.Model of the calls.  Calls of one operator on the same
        weight tensors (equal configuration, input shape and values) are
        one layer called several times.  Layers are named after their
        first node when every such name can be a cnnkit layer name (no
        dots, unique), else ``<type>_<index>``."""
        layers, first = [], {}          # distinct layers; share key -> index
        which = []                      # per call: its index in layers
        for call in calls:
            key = call.share and (call.share, type(call.layer),
                                  repr(call.layer.get_config()))
            k = first.get(key) if key else None
            if k is not None and all(np.array_equal(
                    call.params[n], layers[k][1].params[n])
                    for n in call.params):
                which.append(k)
                continue
            if key:
                first[key] = len(layers)
            which.append(len(layers))
            layers.append((call.layer, call))
        names = [call.name for _, call in layers]
        if len(set(names)) != len(names) or not all(
                isinstance(n, str) and n and "." not in n and n == n.strip()
                for n in names):
            names = [f"{type(layer).__name__.lower()}_{i}"
                     for i, (layer, _) in enumerate(layers)]
        try:
            built = [type(layer).from_config(dict(layer.get_config(),
                                                  name=name))
                     for (layer, _), name in zip(layers, names)]
            inp = Input(self.input_shape, self.input_name)
            tensors = []
            for call, k in zip(calls, which):
                args = [inp if ref == "input" else tensors[ref]
                        for ref in call.inputs]
                layer = built[k]
                tensors.append(layer(args[0] if layer.num_inputs == 1
                                     else args))
            model = Model(inp, tensors[output], seed=0, dtype=self.dtype)
        except (TypeError, ValueError) as exc:
            self.fail(f"the layers do not form a cnnkit model: {exc}")
        model.load_state_dict({f"{layer.name}.{name}": value
                               for layer, (_, call) in zip(built, layers)
                               for name, value in call.params.items()})
        return model


class _Value:
    """What the importer knows of one data value of the graph: the cnnkit
    tensor it holds (``"input"`` or the index of a call), that tensor's
    per-sample shape ``cur``, how the ONNX tensor is laid out relative to
    it (``nhwc``: (H, W, C) of cur = (C, H, W); ``order``: a flattened
    vector is cnnkit's vector[order]), the GlobalAveragePool call a
    Flatten may fold (``gap``), the MatMul call an Add may give a bias
    (``open_dense``), and whether it is the graph input read by one chain
    of nodes (``sole``)."""

    __slots__ = ("tensor", "cur", "nhwc", "order", "gap", "open_dense",
                 "sole")

    def __init__(self, tensor, cur, nhwc, order, gap, open_dense, sole):
        self.tensor, self.cur, self.nhwc, self.order = tensor, cur, nhwc, \
            order
        self.gap, self.open_dense, self.sole = gap, open_dense, sole


class _Call:
    """One cnnkit call: the layer, its parameters, its inputs (``"input"``
    or indices of earlier calls), the ONNX node it comes from, its weights'
    sources (``share``) and, for a Flatten, the GlobalAveragePool call it
    may fold (``folds``)."""

    __slots__ = ("layer", "params", "inputs", "name", "share", "folds")

    def __init__(self, layer, params, inputs, name, share):
        self.layer, self.params, self.inputs = layer, params, inputs
        self.name, self.share, self.folds = name, share, None


def load(path):
    """Build a cnnkit model from an ONNX file.

    The graph must be made of the supported operators (see the module
    notes and :doc:`/user_guide/deploying`): convolutions, ReLU, max and
    average pooling, flattening and dense layers, and the sums, products
    and concatenations of branches, in the forms ``torch.onnx.export``,
    tf2onnx and :func:`export` write.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.onnx`` file, self-contained (no external data files).

    Returns
    -------
    Sequential or Model
        A built model with the graph's weights, in float32 (or float64 for a
        DOUBLE graph), taking images of shape ``(n, C, H, W)``: a
        :class:`~cnnkit.Sequential` when the graph is a chain, else a graph
        :class:`~cnnkit.Model` whose layers are named after the ONNX nodes
        (``<type>_<index>`` when a node's name has a dot, is empty or is
        not unique).  Nodes of one operator on the same weight tensors
        (same attributes and input shape) are one layer called several
        times.  For a graph
        whose input is NHWC followed by a ``Transpose`` to NCHW (Keras
        models converted by tf2onnx), the model takes the NCHW images,
        ``x.transpose(0, 3, 1, 2)``.  A final ``Softmax`` or ``LogSoftmax``
        is dropped: the model returns logits, and
        :meth:`~cnnkit.Sequential.predict_proba` gives the probabilities
        (in a file :func:`export` wrote with the output ``logits`` it is
        the model's last layer instead).

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed.
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, truncated or not an ONNX model, is larger than
        :data:`MAX_FILE_SIZE`, holds a tensor whose size does not match its
        declared shape and data type, or has a node, attribute, shape or
        graph structure cnnkit cannot import (several inputs or outputs, a
        node whose output does not lead to the graph output, a
        broadcasting ``Add``); the message names the file and the first
        such node (operator type, name, attribute and value) or value.

    See Also
    --------
    export : write a cnnkit model as ONNX.

    Notes
    -----
    Nothing in the file is executed.  The protobuf is parsed, every
    tensor's dims and byte count are checked against its data type before
    it is converted, and the model is built only from the layer types of
    :mod:`cnnkit.layers`.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import cnnkit
    >>> from cnnkit import layers
    >>> model = cnnkit.Sequential([layers.Flatten(), layers.Dense(3)],
    ...                           input_shape=(1, 4, 4), seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> cnnkit.onnx.export(model, path)
    >>> same = cnnkit.onnx.load(path)
    >>> same
    Sequential([Flatten(), Dense(units=3, use_bias=True)])
    >>> all(np.array_equal(a, b) for a, b in
    ...     zip(same.get_weights(), model.get_weights()))
    True

    A graph that branches comes back as a graph model:

    >>> inp = cnnkit.Input((2, 4, 4))
    >>> x = layers.Add()([inp, layers.Conv2D(2, 3, padding=1)(inp)])
    >>> graph = cnnkit.Model(inp, layers.Dense(3)(layers.Flatten()(x)), seed=0)
    >>> cnnkit.onnx.export(graph, path)
    >>> same = cnnkit.onnx.load(path)
    >>> type(same).__name__, [type(la).__name__ for la in same.layers]
    ('Model', ['Conv2D', 'Add', 'Flatten', 'Dense'])
    >>> x = np.random.default_rng(0).random((3, 2, 4, 4), dtype=np.float32)
    >>> bool(np.array_equal(same(x), graph(x)))
    True
    """
    onnx = _require_onnx()
    from google.protobuf.message import DecodeError
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot import {path!r}: it is a directory")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_SIZE:
            raise ValueError(
                f"cannot import {path!r}: the file holds {size} bytes, more "
                f"than the {MAX_FILE_SIZE}-byte limit of an ONNX protobuf")
        data = f.read(MAX_FILE_SIZE + 1)
    if not data:
        raise ValueError(f"cannot import {path!r}: the file is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ValueError(
            f"cannot import {path!r}: not an ONNX model, or a truncated one "
            f"(the protobuf cannot be decoded: {exc})") from None
    del data
    try:
        return _Importer(proto, path).run()
    except _ImportError as exc:
        raise ValueError(str(exc)) from None
