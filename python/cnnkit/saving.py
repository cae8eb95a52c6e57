"""Reading models back: :func:`load_model` for cnnkit files and ONNX.

Writing is :meth:`cnnkit.Sequential.save`; the file format itself (a
safetensors-compatible container with the architecture as JSON) is
``cnnkit._format``.  Loading checks everything before it allocates: the
format version, the layer types (only :data:`cnnkit.layers.LAYERS`), and
every tensor's name, shape and dtype against the architecture.  An error
about something this cnnkit does not know (a layer type, a layer argument,
an optimizer) names the cnnkit version that wrote the file.
"""
import json
import os
import warnings

from . import _format, optim
from ._checks import check_keys
from ._version import __version__
from .model import Model, Sequential

__all__ = ["load_model"]


def load_model(path):
    """Load a model written by :meth:`Sequential.save`, or an ONNX file
    (a path ending in ``.onnx``, read by :func:`cnnkit.onnx.load`).

    The file's format version is checked (a newer one is refused by name),
    layers are built only from the known layer types, and every tensor's
    name, shape and dtype is checked against the architecture before the
    model is returned; a damaged or foreign file raises ValueError.  The
    messages about a layer type, a layer argument or an optimizer this
    cnnkit does not know name the cnnkit version that wrote the file.

    The optimizer is needed only to go on training: when a file written by
    another cnnkit version holds an optimizer this one cannot restore (an
    optimizer or an optimizer argument it does not know), the model is
    returned without it (``model.optimizer`` is None) and a warning names
    both versions.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`Sequential.save`, or an ONNX model.

    Returns
    -------
    Sequential or Model
        The model (a :class:`~cnnkit.Model` for a graph), built, with its weights, the ``metadata`` it was saved
        with (``model.metadata``, empty when none) and, when the file holds
        one, its optimizer (``model.optimizer``) with the saved state.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, truncated, not a cnnkit model file, from a
        newer cnnkit, or names a layer type outside
        :data:`cnnkit.layers.LAYERS`; the message names the file and the
        problem.

    Warns
    -----
    UserWarning
        When the file, written by another cnnkit version, holds an
        optimizer this version cannot restore; the model comes without it.
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
    metadata = _format.unpack_user_metadata(meta, source=path)
    writer, written, newer = _format.written_by(meta)
    upgrade = ": upgrade cnnkit to read it" if newer else ""
    where = os.fspath(path)
    weights = {k: v for k, v in tensors.items()
               if not k.startswith("optimizer.")}
    opt_state = {k[len("optimizer."):]: v for k, v in tensors.items()
                 if k.startswith("optimizer.")}
    try:
        if not isinstance(config, dict):
            raise ValueError("the architecture is not a JSON object")
        cls = Model if config.get("class_name") == "Model" else Sequential
        # Shapes first: the file's tensors are checked against the
        # architecture before anything is allocated, so a small file cannot
        # ask for a huge model.
        model = cls.from_config(config, build=False)
        expected = {name: (shape, model.dtype) for name, shape in
                    model.parameter_shapes().items()}
        expected.update(model.buffer_shapes())
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{where}: invalid model architecture: {exc} "
                         f"({written}{upgrade})") from None
    check_keys(expected, weights,
               f"{where}: weights do not match the architecture")
    for name, (shape, dtype) in expected.items():
        arr = weights[name]
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(
                f"{where}: weights do not match the architecture: {name} is "
                f"{arr.dtype}{list(arr.shape)}, the architecture needs "
                f"{dtype}{list(shape)}")
    model.build(model.input_shape)
    model.load_state_dict(weights, strict_dtype=True)
    model.metadata = metadata
    if "optimizer" in meta:
        try:
            opt = optim.from_config(json.loads(meta["optimizer"]))
            opt.load_state_dict(opt_state)
        except (TypeError, ValueError, KeyError) as exc:
            if writer is None or writer == __version__:
                # this cnnkit wrote it, so it is damaged
                raise ValueError(f"{where}: invalid optimizer state: {exc} "
                                 f"({written})") from None
            warnings.warn(
                f"{where}: {written}, which cannot restore the file's "
                f"optimizer ({exc}); the model is loaded without it "
                f"(model.optimizer is None): predict and evaluate work, fit "
                f"starts a new optimizer", UserWarning, stacklevel=2)
        else:
            model.optimizer = opt
    elif opt_state:
        raise ValueError(f"{where}: optimizer tensors without an optimizer "
                         f"config: {sorted(opt_state)}")
    return model
