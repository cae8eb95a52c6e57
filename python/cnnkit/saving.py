"""Reading models back: :func:`load_model` for cnnkit files and ONNX.

Writing is :meth:`cnnkit.Sequential.save`; the file format itself (a
safetensors-compatible container with the architecture as JSON) is
``cnnkit._format``.  Loading checks everything before it allocates: the
format version, the layer types (only :data:`cnnkit.layers.LAYERS`), and
every tensor's name, shape and dtype against the architecture.
"""
import json
import os

from . import _format, optim
from ._checks import check_keys
from .model import Sequential

__all__ = ["load_model"]


def load_model(path):
    """Load a model written by :meth:`Sequential.save`, or an ONNX file
    (a path ending in ``.onnx``, read by :func:`cnnkit.onnx.load`).

    The file's format version is checked (a newer one is refused by name),
    layers are built only from the known layer types, and every tensor's
    name, shape and dtype is checked against the architecture before the
    model is returned; a damaged or foreign file raises ValueError.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`Sequential.save`, or an ONNX model.

    Returns
    -------
    Sequential
        The model, built, with its weights and, when the file holds one, its
        optimizer (``model.optimizer``) with the saved state.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, truncated, not a cnnkit model file, from a
        newer cnnkit, or names a layer type outside
        :data:`cnnkit.layers.LAYERS`; the message names the file and the
        problem.
    ImportError
        For an ``.onnx`` path when the onnx package is not installed
        (``pip install onnx onnxruntime``).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import cnnkit
    >>> from cnnkit import datasets, layers
    >>> x, y = datasets.load_digits()
    >>> model = cnnkit.Sequential([layers.Flatten(), layers.Dense(10)],
    ...                           input_shape=(1, 8, 8), seed=0)
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "digits.cnnkit")
    >>> model.save(path)
    >>> same = cnnkit.load_model(path)
    >>> bool(np.array_equal(same.predict(x), model.predict(x)))
    True
    """
    if os.fsdecode(os.fspath(path)).lower().endswith(".onnx") and \
            not _format.looks_like_file(path):
        from . import onnx          # the optional onnx package, on use
        return onnx.load(path)
    tensors, meta = _format.load_file(path)
    config = _format.unpack_metadata(meta, "model", source=path)
    where = os.fspath(path)
    weights = {k: v for k, v in tensors.items()
               if not k.startswith("optimizer.")}
    opt_state = {k[len("optimizer."):]: v for k, v in tensors.items()
                 if k.startswith("optimizer.")}
    try:
        if not isinstance(config, dict):
            raise ValueError("the architecture is not a JSON object")
        input_shape = config.get("input_shape")
        if input_shape is None:
            raise ValueError("the saved model has no input shape")
        model = Sequential.from_config(dict(config, input_shape=None))
        # Check the file's tensors against the architecture before anything
        # is allocated, so a small file cannot ask for a huge model.
        _, specs, _ = model._infer_shapes(tuple(input_shape))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{where}: invalid model architecture: {exc}") \
            from None
    expected = {f"{i}.{name}": tuple(shape)
                for i, spec in enumerate(specs) for name, shape in spec.items()}
    check_keys(expected, weights,
               f"{where}: weights do not match the architecture")
    for name, shape in expected.items():
        arr = weights[name]
        if arr.shape != shape or arr.dtype != model.dtype:
            raise ValueError(
                f"{where}: weights do not match the architecture: {name} is "
                f"{arr.dtype}{list(arr.shape)}, the architecture needs "
                f"{model.dtype}{list(shape)}")
    model.build(tuple(input_shape))
    model.load_state_dict(weights, strict_dtype=True)
    if "optimizer" in meta:
        try:
            opt = optim.from_config(json.loads(meta["optimizer"]))
            opt.load_state_dict(opt_state)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{where}: invalid optimizer state: {exc}") \
                from None
        model.optimizer = opt
    elif opt_state:
        raise ValueError(f"{where}: optimizer tensors without an optimizer "
                         f"config: {sorted(opt_state)}")
    return model
