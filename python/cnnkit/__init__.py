"""cnnkit: fast, readable convolutional networks on the CPU.

The kernels (conv2d, ReLU, max pooling, dense, softmax cross-entropy, forward
and backward) are C with OpenMP loops; :mod:`cnnkit.functional` is their
NumPy-facing API and :mod:`cnnkit.reference` their pure-NumPy twin.
"""
import os as _os

from ._version import __version__

# GNU OpenMP's idle threads spin for about 300,000 iterations before they
# sleep, and between two kernels of a training step they never get there.
# When another process holds a core, a spinning thread has used its share
# of that core, so the scheduler makes it wait a whole time slice (several
# milliseconds) before it may join the next kernel, and every kernel of the
# team waits with it: LeNet-5 trained 38x slower on 2 threads beside one
# busy process than on an idle machine.  Threads that sleep at once are
# woken with the scheduler's credit for sleepers and run within
# microseconds, so the wait policy is passive unless the environment says
# otherwise.  libgomp reads it once, when the extension loads it; it is set
# for that moment only, so child processes inherit the user's environment.
_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_SET_POLICY = not any(v in _os.environ for v in _POLICY_VARS)
if _SET_POLICY:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
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
finally:
    if _SET_POLICY:
        del _os.environ["OMP_WAIT_POLICY"]

from . import (callbacks, datasets, distributed, functional, layers, models,
               optim, reference)
from . import plan
from ._config import get_num_threads, set_num_threads, show_config
from ._config import record_wait_policy as _record_wait_policy

_record_wait_policy({v: _os.environ.get(v) for v in _POLICY_VARS},
                    _SET_POLICY)
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
