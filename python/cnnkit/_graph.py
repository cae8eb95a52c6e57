"""Symbolic tensors and nodes: how calling layers records a graph.

``cnnkit.Input(shape)`` gives a :class:`SymbolicTensor`; calling a layer on
one (or on a list of them, for a merge layer) builds the layer for that
shape at once and returns a new symbolic tensor, the output of a
:class:`Node` that records the layer and its inputs.  A model walks back
from its output to its input through the nodes (:func:`topological_order`).

Shapes exclude the batch axis, as everywhere in cnnkit.
"""
import itertools

__all__ = ["SymbolicTensor", "Node", "Input", "topological_order",
           "symbolic_args"]

_ids = itertools.count()

# How a model runs each call of a layer (Graph._fusion in model.py): on its
# own; fused with the element-wise layer next to it (forward: its epilogue
# applies the next layer; backward: its pass also goes back through the
# layer before); as that element-wise layer, whose work the other layer
# did; or, backward, through the element-wise layer after it that its
# forward epilogue applied (from that layer's output gradient).
PLAIN, FUSED, ABSORBED, THROUGH = "plain", "fused", "absorbed", "through"


class SymbolicTensor:
    """A placeholder for the array a graph computes at this point.

    Attributes
    ----------
    shape : tuple of int
        Per-sample shape (no batch axis).
    node : Node or None
        The node that computes it; None for a model input.
    name : str
        The input's name, or the producing layer's name.
    """

    __slots__ = ("shape", "node", "name", "uid")

    def __init__(self, shape, node=None, name=None):
        self.shape = tuple(shape)
        self.node = node
        self.uid = next(_ids)
        self.name = name if name is not None else f"input_{self.uid}"

    def __repr__(self):
        where = ("an input" if self.node is None
                 else f"the output of {self.node.layer.name!r}")
        return (f"<SymbolicTensor shape=(None, "
                f"{', '.join(map(str, self.shape))}) from {where}>")

    @property
    def source(self):
        """Who produced the tensor, for messages: ``"Conv2D 'conv2d_1'"``
        or ``"the input 'input_0'"``."""
        if self.node is None:
            return f"the input {self.name!r}"
        return f"{type(self.node.layer).__name__} {self.node.layer.name!r}"


class Node:
    """One call of a layer in a graph: the layer, its input tensors and
    its output tensor (``uid`` orders nodes by creation)."""

    __slots__ = ("layer", "inputs", "output", "uid")

    def __init__(self, layer, inputs, output_shape):
        self.layer = layer
        self.inputs = tuple(inputs)
        self.uid = next(_ids)
        self.output = SymbolicTensor(output_shape, self, layer.name)


def Input(shape, name=None):
    """A symbolic input of a graph model: calling layers on it records the
    graph (Keras's functional API).

    Parameters
    ----------
    shape : tuple of int
        Shape of one sample, ``(C, H, W)``, ``(H, W)`` for one channel, or
        ``(features,)``.
    name : str, optional

    Returns
    -------
    SymbolicTensor

    Examples
    --------
    >>> import cnnkit
    >>> from cnnkit import layers as L
    >>> inp = cnnkit.Input((1, 8, 8))
    >>> x = L.Conv2D(4, 3, padding=1)(inp)
    >>> x.shape
    (4, 8, 8)
    """
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"Input: shape must be a tuple of ints, got "
                        f"{shape!r}") from None
    if len(shape) == 2:
        shape = (1,) + shape
    if not shape or any(isinstance(d, bool) or not hasattr(d, "__index__")
                        or d < 1 for d in shape):
        raise ValueError(f"Input: shape must be positive ints, e.g. (C, H, "
                         f"W); got {shape!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"Input: name must be a non-empty str, got {name!r}")
    return SymbolicTensor(tuple(int(d) for d in shape), None, name)


def topological_order(outputs):
    """The nodes that compute ``outputs``, each after the nodes it reads,
    ties broken by creation order (so the order is fixed), and the input
    tensors they reach."""
    nodes, inputs, stack, seen = {}, {}, list(outputs), set()
    while stack:
        t = stack.pop()
        if t.uid in seen:
            continue
        seen.add(t.uid)
        if t.node is None:
            inputs[t.uid] = t
            continue
        nodes[t.node.uid] = t.node
        stack.extend(t.node.inputs)
    # Kahn's algorithm over the nodes found, smallest creation id first
    waiting = {uid: sum(1 for t in n.inputs if t.node is not None)
               for uid, n in nodes.items()}
    consumers = {uid: [] for uid in nodes}
    for uid, n in nodes.items():
        for t in n.inputs:
            if t.node is not None:
                consumers[t.node.uid].append(uid)
    ready = sorted(uid for uid, w in waiting.items() if w == 0)
    order = []
    while ready:
        uid = ready.pop(0)
        order.append(nodes[uid])
        for c in consumers[uid]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
                ready.sort()
    return order, [inputs[k] for k in sorted(inputs)]


def symbolic_args(inputs):
    """The tensors of a call's argument (one, or a list) and whether the call
    is symbolic; TypeError when it mixes symbolic tensors and arrays."""
    tensors = (list(inputs) if isinstance(inputs, (list, tuple))
               else [inputs])
    symbolic = [isinstance(t, SymbolicTensor) for t in tensors]
    if any(symbolic) and not all(symbolic):
        raise TypeError("cannot mix symbolic tensors and arrays in one call")
    return tensors, any(symbolic)
