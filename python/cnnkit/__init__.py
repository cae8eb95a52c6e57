"""cnnkit: fast, readable convolutional networks on the CPU.

The kernels (conv2d, ReLU, max pooling, dense, softmax cross-entropy, forward
and backward) are C with OpenMP loops; :mod:`cnnkit.functional` is their
NumPy-facing API and :mod:`cnnkit.reference` their pure-NumPy twin.
"""

from ._version import __version__

try:
    from . import _ops  # noqa: F401  (loads the compiled bindings)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "cnnkit's compiled kernels could not be imported "
        f"({exc}). cnnkit must be built before it is used: install it with "
        "'pip install .' (or 'pip install --no-build-isolation -e .' for "
        "development) from the source tree, and do not run Python from "
        "inside the source folder's python/ directory."
    ) from exc

from . import (callbacks, datasets, distributed, functional, layers, models,
               optim, reference)
from . import plan
from ._config import get_num_threads, set_num_threads, show_config
from ._graph import Input
from .model import Model, Sequential
from .saving import load_model

__all__ = [
    "__version__",
    "Input",
    "Model",
    "Sequential",
    "load_model",
    "callbacks",
    "datasets",
    "distributed",
    "functional",
    "layers",
    "models",
    "optim",
    "plan",
    "reference",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    "onnx",
]


def __getattr__(name):
    # cnnkit.onnx is imported on first use, so that ``import cnnkit`` never
    # imports the optional onnx package.
    if name == "onnx":
        import importlib
        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
