r"""Optimizers and learning-rate schedules.

An optimizer updates a model's parameters from their gradients, once per
training step.  The model keeps every parameter in one flat, contiguous 1-D
array and every gradient in another of the same size and dtype; the trainer
calls

.. code-block:: python

    optimizer.step(params, grads)

after the step's gradients are complete (and, in data-parallel training,
averaged across ranks).  ``step`` updates ``params`` in place and never
writes to ``grads``.

The update rules are PyTorch's (:class:`SGD`, :class:`Adam`, :class:`AdamW`
follow ``torch.optim`` with its defaults), so a training run can be checked
against PyTorch step for step.

Conventions
-----------
* The update is whole-array NumPy arithmetic, in place, with scratch
  buffers allocated at the first step and reused; no step after the first
  allocates an array of the parameters' size.
* State buffers (momentum, moment estimates) have the parameters' dtype.
  Scalars (learning rate, bias corrections, decay factors) are computed as
  float64 Python floats; for float32 parameters NumPy rounds each scalar to
  float32 where it meets the array, as PyTorch does.
* After its first step an optimizer is bound to the size and dtype of the
  parameters it saw; :meth:`Optimizer.reset` unbinds it.
* Learning-rate schedules are per epoch: the trainer calls
  :meth:`Optimizer.set_epoch` at the start of every epoch, and
  :meth:`Optimizer.current_lr` is the base ``lr`` after the schedule.
* Configurations (:meth:`Optimizer.get_config`) are JSON-serialisable and
  rebuilt by :func:`from_config` through the explicit registries
  :data:`OPTIMIZERS` and :data:`SCHEDULES`; nothing is imported by name.
* Bad arguments raise :class:`ValueError` or :class:`TypeError` naming the
  argument, what was expected and what was given.
"""
import inspect
import math
import numbers
from collections.abc import Mapping

import numpy as np

from . import _ops
from ._checks import check_int, is_int

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "Schedule",
    "StepLR",
    "CosineAnnealingLR",
    "OPTIMIZERS",
    "SCHEDULES",
    "get",
    "from_config",
    "schedule_from_config",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------
def _real(value, name, owner, expected):
    """``value`` as a finite Python float, or TypeError/ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be {expected}, "
                        f"got {value!r} of type {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return out


def _positive(value, name, owner):
    expected = "a finite float > 0"
    out = _real(value, name, owner, expected)
    if not out > 0.0:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return out


def _non_negative(value, name, owner):
    expected = "a finite float >= 0"
    out = _real(value, name, owner, expected)
    if not out >= 0.0:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return out


def _int(value, name, owner, minimum):
    """``value`` as a Python int >= ``minimum``, or TypeError/ValueError."""
    return check_int(value, name, minimum, owner)


def _bool(value, name, owner):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a bool, "
                        f"got {value!r} of type {type(value).__name__}")
    return bool(value)


def _arguments(cls):
    """The names of ``cls.__init__``'s arguments, ``self`` left out."""
    return tuple(inspect.signature(cls.__init__).parameters)[1:]


def _describe(a):
    """A short description of an array for error messages."""
    return f"{a.size}-element {a.dtype} array"


# --------------------------------------------------------------------------
# learning-rate schedules
# --------------------------------------------------------------------------
class Schedule:
    """Base class of the per-epoch learning-rate schedules.

    A schedule maps the optimizer's base learning rate and the current epoch
    (0 for the first) to the learning rate used during that epoch.
    Subclasses implement :meth:`_lr` and :meth:`_config`.
    """

    def __call__(self, base_lr, epoch):
        """The learning rate for ``epoch``.

        Parameters
        ----------
        base_lr : float
            The optimizer's base learning rate, > 0.
        epoch : int
            The epoch, counted from 0.

        Returns
        -------
        float
        """
        owner = type(self).__name__
        base_lr = _positive(base_lr, "base_lr", owner)
        epoch = _int(epoch, "epoch", owner, 0)
        return float(self._lr(base_lr, epoch))

    @classmethod
    def _arguments(cls):
        """The names of the constructor's arguments."""
        return _arguments(cls)

    def _lr(self, base_lr, epoch):  # pragma: no cover - abstract
        raise NotImplementedError

    def _config(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        """The schedule's constructor arguments as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``{"class_name": ..., <argument>: <value>, ...}``; rebuild it
            with :func:`schedule_from_config`.
        """
        return {"class_name": type(self).__name__, **self._config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return (type(other) is type(self)
                and other.get_config() == self.get_config())

    def __hash__(self):
        return hash(repr(self))


class StepLR(Schedule):
    r"""Decay the learning rate by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    step_size : int
        Epochs between two decays, >= 1.
    gamma : float, default 0.1
        Multiplicative factor of each decay, > 0.

    Notes
    -----
    The closed form of PyTorch's ``torch.optim.lr_scheduler.StepLR``:

    .. math::

        \eta_e = \eta \, \gamma^{\lfloor e / s \rfloor}

    with base rate :math:`\eta`, epoch :math:`e` and step size :math:`s`.

    Examples
    --------
    >>> from cnnkit.optim import StepLR
    >>> schedule = StepLR(step_size=2, gamma=0.5)
    >>> [schedule(1.0, epoch) for epoch in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, step_size, gamma=0.1):
        self.step_size = _int(step_size, "step_size", "StepLR", 1)
        self.gamma = _positive(gamma, "gamma", "StepLR")

    def _lr(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)

    def _config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(Schedule):
    r"""Cosine annealing from the base rate down to ``eta_min``.

    Parameters
    ----------
    t_max : int
        Epochs of the half cosine period, >= 1: the rate reaches ``eta_min``
        at epoch ``t_max``.
    eta_min : float, default 0.0
        The minimum learning rate, >= 0.

    Notes
    -----
    The closed form of PyTorch's
    ``torch.optim.lr_scheduler.CosineAnnealingLR``:

    .. math::

        \eta_e = \eta_{\min} + \frac{1}{2}(\eta - \eta_{\min})
                 \left(1 + \cos\frac{\pi e}{T_{\max}}\right)

    Past ``t_max`` the formula continues: the rate rises again towards the
    base rate over the next ``t_max`` epochs.

    Examples
    --------
    >>> from cnnkit.optim import CosineAnnealingLR
    >>> schedule = CosineAnnealingLR(t_max=4, eta_min=0.0)
    >>> [round(schedule(1.0, epoch), 6) for epoch in range(5)]
    [1.0, 0.853553, 0.5, 0.146447, 0.0]
    """

    def __init__(self, t_max, eta_min=0.0):
        self.t_max = _int(t_max, "t_max", "CosineAnnealingLR", 1)
        self.eta_min = _non_negative(eta_min, "eta_min", "CosineAnnealingLR")

    def _lr(self, base_lr, epoch):
        return self.eta_min + (base_lr - self.eta_min) * (
            1.0 + math.cos(math.pi * epoch / self.t_max)) / 2.0

    def _config(self):
        return {"t_max": self.t_max, "eta_min": self.eta_min}


#: The schedules :func:`schedule_from_config` can build, by class name.
SCHEDULES = {"StepLR": StepLR, "CosineAnnealingLR": CosineAnnealingLR}


def _build(cfg, registry, what, fn):
    """An instance of ``registry[cfg["class_name"]]`` with the other keys of
    ``cfg`` as keyword arguments."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{fn}: the config must be a dict, got "
                        f"{cfg!r} of type {type(cfg).__name__}")
    if "class_name" not in cfg:
        raise ValueError(f"{fn}: the config has no 'class_name' key; "
                         f"got keys {sorted(map(str, cfg))}")
    name = cfg["class_name"]
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"{fn}: unknown {what} class_name {name!r}; "
                         f"expected one of {sorted(registry)}")
    cls = registry[name]
    kwargs = {k: v for k, v in cfg.items() if k != "class_name"}
    allowed = cls._arguments()
    unknown = sorted(str(k) for k in kwargs if k not in allowed)
    if unknown:
        raise ValueError(f"{fn}: unknown argument(s) {unknown} for {name}; "
                         f"expected some of {list(allowed)}")
    return cls, kwargs


def schedule_from_config(cfg):
    """Build a schedule from :meth:`Schedule.get_config` output.

    Parameters
    ----------
    cfg : dict or None
        ``{"class_name": "StepLR" | "CosineAnnealingLR", ...arguments}``.
        ``None`` gives ``None`` (no schedule).

    Returns
    -------
    Schedule or None

    Examples
    --------
    >>> from cnnkit.optim import StepLR, schedule_from_config
    >>> schedule_from_config(StepLR(3, gamma=0.5).get_config())
    StepLR(step_size=3, gamma=0.5)
    """
    if cfg is None:
        return None
    cls, kwargs = _build(cfg, SCHEDULES, "schedule", "schedule_from_config")
    return cls(**kwargs)


# --------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------
class Optimizer:
    """Base class of the optimizers.

    Parameters
    ----------
    lr : float
        The base learning rate, > 0.
    schedule : Schedule, optional
        A per-epoch learning-rate schedule; ``None`` keeps ``lr``.

    Attributes
    ----------
    lr : float
        The base learning rate (validated when set).
    schedule : Schedule or None
        The learning-rate schedule.
    iterations : int
        Steps taken since construction, :meth:`reset` or the state loaded by
        :meth:`load_state_dict`.
    epoch : int
        The current epoch, set by the trainer through :meth:`set_epoch`.

    Notes
    -----
    Subclasses define the state buffers (:meth:`_buffer_names`), the update
    (:meth:`_update`, a compiled pass whose NumPy twin is in
    :mod:`cnnkit.reference`) and their constructor arguments
    (:meth:`_config`).  The base class validates
    the arrays, binds the optimizer to the parameters' size and dtype,
    allocates the buffers and counts the steps.
    """

    #: Threads of the step in progress (0: the current count); see
    #: :meth:`_step_unchecked`.
    _threads = 0

    def __init__(self, lr, schedule=None):
        self.lr = lr
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(
                f"{type(self).__name__}: schedule must be a Schedule "
                "(StepLR, CosineAnnealingLR) or None, got "
                f"{schedule!r} of type {type(schedule).__name__}")
        self.schedule = schedule
        self.reset()

    # -- hyperparameters ---------------------------------------------------
    @property
    def lr(self):
        """The base learning rate, a float > 0."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _positive(value, "lr", type(self).__name__)

    @classmethod
    def _arguments(cls):
        """The names of the constructor's arguments."""
        return _arguments(cls)

    def _config(self):
        """The constructor arguments other than ``lr`` and ``schedule``."""
        return {}

    def get_config(self):
        """The optimizer's constructor arguments, JSON-serialisable.

        Returns
        -------
        dict
            ``{"class_name": ..., "lr": ..., <argument>: <value>, ...,
            "schedule": <schedule config or None>}``; rebuild it with
            :func:`from_config`.  The state (buffers, counters) is not part
            of it: see :meth:`state_dict`.
        """
        return {
            "class_name": type(self).__name__,
            "lr": self.lr,
            **self._config(),
            "schedule": (None if self.schedule is None
                         else self.schedule.get_config()),
        }

    def __repr__(self):
        cfg = self.get_config()
        del cfg["class_name"]
        cfg["schedule"] = self.schedule
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"{type(self).__name__}({args})"

    # -- epochs and the learning rate --------------------------------------
    def set_epoch(self, epoch):
        """Set the current epoch (counted from 0) for the schedule.

        Parameters
        ----------
        epoch : int
            The epoch about to run, >= 0.
        """
        self.epoch = _int(epoch, "epoch", f"{type(self).__name__}.set_epoch",
                          0)

    def current_lr(self):
        """The learning rate of the current epoch: ``lr`` after the schedule.

        Returns
        -------
        float
        """
        if self.schedule is None:
            return self.lr
        return self.schedule(self.lr, self.epoch)

    # -- state ---------------------------------------------------------------
    def _buffer_names(self):
        """The names of the per-parameter state buffers."""
        return ()


    def reset(self):
        """Forget all state: buffers, counters and the bound size and dtype.

        The hyperparameters are kept; the next :meth:`step` behaves like the
        first step of a new optimizer and may see parameters of any size.
        """
        self.iterations = 0
        self.epoch = 0
        self._state = {}
        self._shape = None
        self._dtype = None

    def state_dict(self):
        """A copy of the optimizer's state.

        Returns
        -------
        dict of str to numpy.ndarray
            ``"iterations"`` and ``"epoch"`` as 0-d int64 arrays, and each
            per-parameter state buffer (e.g. ``"momentum_buffer"``,
            ``"exp_avg"``, ``"exp_avg_sq"``) as a 1-D array of the
            parameters' dtype.  The buffers appear once they exist: after
            the first step, or after a state holding them was loaded.
            The arrays are copies; later steps do not change them.
        """
        state = {
            "iterations": np.array(self.iterations, dtype=np.int64),
            "epoch": np.array(self.epoch, dtype=np.int64),
        }
        for name in self._buffer_names():
            if name in self._state:
                state[name] = self._state[name].copy()
        return state

    def load_state_dict(self, state):
        """Replace the optimizer's state with ``state`` (a copy of it).

        Parameters
        ----------
        state : dict of str to numpy.ndarray
            :meth:`state_dict` output of an optimizer of the same class and
            hyperparameters.

        Raises
        ------
        TypeError
            If ``state`` is not a mapping.
        ValueError
            Naming what is wrong: a missing or unexpected key, a counter
            that is not a non-negative integer, a buffer that is not a 1-D
            float32/float64 array, buffers of different shapes or dtypes,
            only some of the buffers, ``iterations > 0`` without the
            buffers, or buffers whose size or dtype differ from the
            parameters this optimizer has already stepped.

        Notes
        -----
        Nothing is changed unless the whole state is valid.  Loaded into an
        optimizer that has not stepped yet, the buffers bind it to their size
        and dtype: the next :meth:`step` checks the parameters against them.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{owner}: state must be a dict of arrays, got "
                            f"{type(state).__name__}")
        buffer_names = self._buffer_names()
        expected = ("iterations", "epoch") + buffer_names
        unexpected = sorted(str(k) for k in state if k not in expected)
        if unexpected:
            raise ValueError(
                f"{owner}: unexpected key(s) {unexpected} in state; "
                f"{self!r} expects {list(expected)} (the buffers only once "
                "they exist)")
        for key in ("iterations", "epoch"):
            if key not in state:
                raise ValueError(f"{owner}: state has no {key!r} counter")
        counters = {k: self._load_counter(state[k], k, owner)
                    for k in ("iterations", "epoch")}

        present = [n for n in buffer_names if n in state]
        missing = [n for n in buffer_names if n not in state]
        if present and missing:
            raise ValueError(f"{owner}: state has {present} but not "
                             f"{missing}; the buffers come together")
        if missing and counters["iterations"] > 0:
            raise ValueError(
                f"{owner}: state has iterations={counters['iterations']} "
                f"but no {missing}; a state after a step holds its buffers")
        buffers = {}
        for name in present:
            buf = state[name]
            if not isinstance(buf, np.ndarray):
                raise ValueError(f"{owner}: {name!r} must be a numpy array, "
                                 f"got {type(buf).__name__}")
            if buf.dtype not in _FLOAT_DTYPES:
                raise ValueError(f"{owner}: {name!r} must have dtype float32 "
                                 f"or float64, got {buf.dtype}")
            if buf.ndim != 1:
                raise ValueError(f"{owner}: {name!r} must be 1-D, got shape "
                                 f"{buf.shape}")
            buffers[name] = buf
        if buffers:
            first, ref = next(iter(buffers.items()))
            for name, buf in buffers.items():
                if buf.shape != ref.shape or buf.dtype != ref.dtype:
                    raise ValueError(
                        f"{owner}: {name!r} is a {_describe(buf)} but "
                        f"{first!r} is a {_describe(ref)}")
            if self._shape is not None and (ref.shape != self._shape
                                            or ref.dtype != self._dtype):
                raise ValueError(
                    f"{owner}: the state's buffers are "
                    f"{ref.shape[0]}-element {ref.dtype} arrays but this "
                    f"optimizer steps {self._shape[0]}-element {self._dtype} "
                    "parameters; call reset() first to use it with other "
                    "parameters")

        self.iterations = counters["iterations"]
        self.epoch = counters["epoch"]
        self._state = {n: np.array(b, dtype=b.dtype, order="C", copy=True)
                       for n, b in buffers.items()}
        if buffers and self._shape is None:
            self._shape = ref.shape
            self._dtype = ref.dtype

    @staticmethod
    def _load_counter(value, name, owner):
        if isinstance(value, np.ndarray):
            if value.ndim != 0 or value.dtype.kind not in "iu":
                raise ValueError(f"{owner}: {name!r} must be a 0-d integer "
                                 f"array, got a {value.dtype} array of "
                                 f"shape {value.shape}")
            value = value.item()
        elif not is_int(value):
            raise ValueError(f"{owner}: {name!r} must be a 0-d integer array, "
                             f"got {value!r} of type {type(value).__name__}")
        value = int(value)
        if value < 0:
            raise ValueError(f"{owner}: {name!r} must be >= 0, got {value}")
        return value

    # -- the step ------------------------------------------------------------
    def _check_arrays(self, params, grads):
        owner = f"{type(self).__name__}.step"
        for name, a in (("params", params), ("grads", grads)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{owner}: {name} must be a numpy array, got "
                                f"{type(a).__name__}")
            if a.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"{owner}: {name} must have dtype float32 or "
                                f"float64, got {a.dtype}")
            if a.ndim != 1:
                raise ValueError(f"{owner}: {name} must be a flat 1-D array, "
                                 f"got shape {a.shape}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{owner}: {name} must be contiguous, got a "
                                 f"strided view (strides {a.strides})")
        if grads.dtype != params.dtype:
            raise TypeError(f"{owner}: grads must have the params' dtype "
                            f"{params.dtype}, got {grads.dtype}")
        if grads.shape != params.shape:
            raise ValueError(f"{owner}: grads must have the params' shape "
                             f"{params.shape}, got {grads.shape}")
        if not params.flags.writeable:
            raise ValueError(f"{owner}: params must be writable; the update "
                             "is in place")
        if params.size and np.may_share_memory(params, grads):
            raise ValueError(f"{owner}: params and grads share memory; the "
                             "in-place update would change the gradients")

    def _bind(self, params):
        """Check ``params`` against the bound size and dtype, binding them at
        the first step."""
        if self._shape is None:
            self._shape = params.shape
            self._dtype = params.dtype
        elif params.shape != self._shape or params.dtype != self._dtype:
            held = sorted(self._state) or "no buffers yet"
            raise ValueError(
                f"{type(self).__name__}.step: params are a "
                f"{_describe(params)} but the optimizer's state "
                f"({held}) is for {self._shape[0]}-element {self._dtype} "
                "parameters; call reset() to use it with other parameters")

    def step(self, params, grads):
        """Update ``params`` in place from ``grads``: one optimizer step.

        Parameters
        ----------
        params : numpy.ndarray
            The model's flat parameters: 1-D, C-contiguous, writable,
            float32 or float64.  Updated in place.
        grads : numpy.ndarray
            Their gradients: same shape and dtype, not sharing memory with
            ``params``.  Never modified.

        Raises
        ------
        TypeError
            If an argument is not an ndarray or has a dtype other than
            float32/float64, or the dtypes differ.
        ValueError
            If an argument is not 1-D and contiguous, the shapes differ,
            ``params`` is read-only or shares memory with ``grads``, or the
            optimizer's state is for parameters of another size or dtype.
        """
        self._check_arrays(params, grads)
        self._step_unchecked(params, grads)

    def _step_unchecked(self, params, grads, nthreads=0):
        """:meth:`step` on arrays that passed its checks before (a model's
        own flat parameters and gradients, during a fit), on ``nthreads``
        threads (0: the current count).  A step of the trainer's whose
        kernels ran on one thread updates on one too: waking the idle
        threads costs more than the update of a small network saves."""
        self._bind(params)
        self._threads = nthreads
        try:
            self._update(params, grads, self.current_lr())
        finally:
            self._threads = 0
        self.iterations += 1

    def _update(self, params, grads, lr):  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    r"""Stochastic gradient descent, with momentum and weight decay.

    Parameters
    ----------
    lr : float, default 0.01
        The base learning rate, > 0.
    momentum : float, default 0.0
        Momentum factor, >= 0; 0 turns momentum off.
    nesterov : bool, default False
        Use Nesterov momentum; needs ``momentum > 0``.
    weight_decay : float, default 0.0
        L2 penalty, >= 0, added to the gradient.
    schedule : Schedule, optional
        A per-epoch learning-rate schedule.

    Notes
    -----
    PyTorch's ``torch.optim.SGD`` (dampening 0).  At step :math:`t` with
    gradient :math:`\nabla_t`, learning rate :math:`\eta`, momentum
    :math:`\mu` and weight decay :math:`\lambda`:

    .. math::

        g_t &= \nabla_t + \lambda \theta_{t-1} \\
        b_t &= \mu b_{t-1} + g_t \qquad (b_1 = g_1) \\
        g_t &\leftarrow \begin{cases}
            g_t + \mu b_t & \text{Nesterov} \\
            b_t & \text{otherwise}
        \end{cases} \\
        \theta_t &= \theta_{t-1} - \eta\, g_t

    Without momentum the middle lines are skipped.  The state is the
    momentum buffer :math:`b` (``"momentum_buffer"``), present only when
    ``momentum > 0``.  Where :math:`b` would be subnormal (below about
    1.2e-38 in magnitude in float32, 2.2e-308 in float64) it is stored as
    0: the momentum of a unit whose gradient stays 0 decays into that range
    and stays there, and arithmetic on subnormal numbers can be many times
    slower on x86 CPUs (see :func:`cnnkit.reference.flush_subnormal`).
    PyTorch keeps those values; the parameters differ from its by at most
    the learning rate times that bound.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.optim import SGD
    >>> params = np.array([1.0, -2.0])
    >>> grads = np.array([0.5, 0.5])
    >>> opt = SGD(lr=0.1, momentum=0.9)
    >>> opt.step(params, grads)          # b = g
    >>> params
    array([ 0.95, -2.05])
    >>> opt.step(params, grads)          # b = 0.9 * 0.5 + 0.5 = 0.95
    >>> params
    array([ 0.855, -2.145])
    """

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False,
                 weight_decay=0.0, schedule=None):
        self.momentum = _non_negative(momentum, "momentum", "SGD")
        self.nesterov = _bool(nesterov, "nesterov", "SGD")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True requires momentum > 0, got "
                             f"momentum={momentum!r}")
        self.weight_decay = _non_negative(weight_decay, "weight_decay", "SGD")
        super().__init__(lr, schedule)

    def _config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _buffer_names(self):
        return ("momentum_buffer",) if self.momentum != 0.0 else ()

    def _update(self, params, grads, lr):
        mu = self.momentum
        buf, first = None, False
        if mu != 0.0:
            buf = self._state.get("momentum_buffer")
            if buf is None:
                buf = self._state["momentum_buffer"] = np.empty_like(params)
                first = True
        _ops.sgd_step(params, grads, buf, lr, self.weight_decay, mu,
                      self.nesterov, first, self._threads)


class Adam(Optimizer):
    r"""Adam: adaptive moment estimation.

    Parameters
    ----------
    lr : float, default 1e-3
        The base learning rate, > 0.
    betas : pair of float, default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in
        [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    weight_decay : float, default 0.0
        L2 penalty, >= 0, added to the gradient (see :class:`AdamW` for the
        decoupled form).
    schedule : Schedule, optional
        A per-epoch learning-rate schedule.

    Notes
    -----
    PyTorch's ``torch.optim.Adam`` (``amsgrad=False``).  At step
    :math:`t = 1, 2, \ldots` with gradient :math:`\nabla_t`:

    .. math::

        g_t &= \nabla_t + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1 - \beta_1^t}\,
            \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`m_0 = v_0 = 0`.  The state is ``"exp_avg"`` (:math:`m`) and
    ``"exp_avg_sq"`` (:math:`v`); :math:`t` is :attr:`iterations` + 1.
    Values of :math:`m` and :math:`v` that would be subnormal are stored as
    0, as :class:`SGD`'s momentum buffer is.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.optim import Adam
    >>> params = np.array([1.0, -2.0])
    >>> opt = Adam(lr=0.1)
    >>> opt.step(params, np.array([0.5, -4.0]))  # first step: lr * sign(g)
    >>> params
    array([ 0.9, -1.9])
    >>> sorted(opt.state_dict())
    ['epoch', 'exp_avg', 'exp_avg_sq', 'iterations']
    """

    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, schedule=None):
        owner = type(self).__name__
        if isinstance(betas, (str, bytes, Mapping)) or not hasattr(
                betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{owner}: betas must be a pair of floats in "
                            f"[0, 1), got {betas!r}")
        checked = []
        for i, b in enumerate(betas):
            name = f"betas[{i}]"
            b = _real(b, name, owner, "a float in [0, 1)")
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{owner}: {name} must be a float in "
                                 f"[0, 1), got {betas[i]!r}")
            checked.append(b)
        self.betas = tuple(checked)
        self.eps = _positive(eps, "eps", owner)
        self.weight_decay = _non_negative(weight_decay, "weight_decay", owner)
        super().__init__(lr, schedule)

    def _config(self):
        return {"betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _buffer_names(self):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, params, grads, lr):
        beta1, beta2 = self.betas
        wd = self.weight_decay
        t = self.iterations + 1
        if "exp_avg" not in self._state:           # zeros before step 1
            self._state["exp_avg"] = np.zeros_like(params)
            self._state["exp_avg_sq"] = np.zeros_like(params)
        m, v = self._state["exp_avg"], self._state["exp_avg_sq"]
        _ops.adam_step(params, grads, m, v, beta1, beta2, self.eps, wd,
                       self._decoupled, 1.0 - lr * wd,
                       lr / (1.0 - beta1 ** t),
                       math.sqrt(1.0 - beta2 ** t), self._threads)


class AdamW(Adam):
    r"""Adam with decoupled weight decay.

    Parameters
    ----------
    lr : float, default 1e-3
        The base learning rate, > 0.
    betas : pair of float, default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in
        [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    weight_decay : float, default 0.01
        Decoupled decay coefficient, >= 0.
    schedule : Schedule, optional
        A per-epoch learning-rate schedule.

    Notes
    -----
    PyTorch's ``torch.optim.AdamW`` (``amsgrad=False``): the parameters
    decay before the :class:`Adam` update, and the gradient is not changed:

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1} (1 - \eta \lambda) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, \nabla_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, \nabla_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1 - \beta_1^t}\,
            \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    :math:`\eta` is the current (scheduled) learning rate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnkit.optim import AdamW
    >>> params = np.array([1.0, -2.0])
    >>> opt = AdamW(lr=0.1, weight_decay=0.5)
    >>> opt.step(params, np.array([0.5, -4.0]))  # decay by 0.95, then Adam
    >>> params
    array([ 0.85, -1.8 ])
    """

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.01, schedule=None):
        super().__init__(lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, schedule=schedule)


#: The optimizers :func:`from_config` can build, by class name.
OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}

_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(identifier):
    """An optimizer from a name, or the optimizer itself.

    Parameters
    ----------
    identifier : str or Optimizer
        ``"sgd"``, ``"adam"`` or ``"adamw"`` (any case) for an instance with
        the default hyperparameters; an :class:`Optimizer` is returned as
        it is.

    Returns
    -------
    Optimizer

    Raises
    ------
    ValueError
        For anything else; the message lists the valid names.

    Examples
    --------
    >>> from cnnkit import optim
    >>> optim.get("Adam")  # doctest: +NORMALIZE_WHITESPACE
    Adam(lr=0.001, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.0,
         schedule=None)
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _NAMES[identifier.lower()]()
    raise ValueError(f"unknown optimizer {identifier!r}; expected an "
                     f"Optimizer instance or one of {sorted(_NAMES)}")


def from_config(cfg):
    """Build an optimizer from :meth:`Optimizer.get_config` output.

    Parameters
    ----------
    cfg : dict
        ``{"class_name": "SGD" | "Adam" | "AdamW", ...arguments}``; the
        ``"schedule"`` entry may be a schedule config dict or ``None``.

    Returns
    -------
    Optimizer
        A new optimizer with fresh state.

    Examples
    --------
    >>> from cnnkit import optim
    >>> opt = optim.SGD(0.1, momentum=0.9, schedule=optim.StepLR(10))
    >>> optim.from_config(opt.get_config())  # doctest: +NORMALIZE_WHITESPACE
    SGD(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0,
        schedule=StepLR(step_size=10, gamma=0.1))
    """
    cls, kwargs = _build(cfg, OPTIMIZERS, "optimizer", "from_config")
    schedule = kwargs.get("schedule")
    if isinstance(schedule, Mapping):
        kwargs["schedule"] = schedule_from_config(schedule)
    return cls(**kwargs)
