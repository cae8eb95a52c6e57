"""Callbacks: hooks into :meth:`cnnkit.Sequential.fit` (Keras's protocol).

``fit`` calls, in order, ``on_train_begin(logs)``, then per epoch
``on_epoch_begin(epoch, logs)``, ``on_batch_end(batch, logs)`` after every
optimizer step, ``on_epoch_end(epoch, logs)``, and finally
``on_train_end(logs)``.  A callback sets ``self.model.stop_training = True``
to end training after the current epoch.
"""
import math
import os
import warnings

import numpy as np

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint"]


class Callback:
    """Base class: every hook does nothing.

    Subclasses override the hooks they need.  :meth:`cnnkit.Sequential.fit`
    calls :meth:`set_model` first, then the hooks in the order of the module
    notes.

    Attributes
    ----------
    model : cnnkit.Sequential or None
        The model being trained; set ``self.model.stop_training = True`` to
        end training after the current epoch.
    params : dict
        The run's parameters (:meth:`set_params`).
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        """Called by ``fit`` before training, with the model it trains."""
        self.model = model

    def set_params(self, params):
        """Called by ``fit`` before training with the run's parameters:
        ``epochs``, ``steps`` (batches per epoch), ``verbose`` and ``rank``
        (this process's rank in a data-parallel run, else 0)."""
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        """Called once, before the first epoch."""
        pass

    def on_train_end(self, logs=None):
        """Called once, after the last epoch, also after an early stop or a
        Ctrl-C (not when ``fit`` raises)."""
        pass

    def on_epoch_begin(self, epoch, logs=None):
        """Called before each epoch; ``epoch`` counts from 0 (or from
        ``initial_epoch``)."""
        pass

    def on_epoch_end(self, epoch, logs=None):
        """Called after each epoch with its logs: ``loss``, ``accuracy``,
        ``val_loss`` and ``val_accuracy`` (with validation data), ``lr``,
        ``seconds`` and ``images_per_s``."""
        pass

    def on_batch_end(self, batch, logs=None):
        """Called after each optimizer step with the batch's ``loss`` and
        ``size``."""
        pass


class History(Callback):
    """Per-epoch logs of a training run; ``fit`` returns one.

    Attributes
    ----------
    epoch : list of int
        The epochs completed.
    history : dict of str to list of float
        ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (with
        validation data), ``lr``, ``seconds`` and ``images_per_s``, one
        entry per completed epoch.
    interrupted : bool
        True when training stopped on Ctrl-C.
    exchange_seconds : float
        Seconds spent exchanging and adding the shard gradients (the
        data-parallel reduction), for benchmarks.
    """

    def __init__(self):
        super().__init__()
        self.epoch = []
        self.history = {}
        self.interrupted = False
        self.exchange_seconds = 0.0

    def on_train_begin(self, logs=None):
        self.interrupted = False

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return (f"History(epochs={len(self.epoch)}, "
                f"keys={sorted(self.history)})")


def _monitor_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return mode


class EarlyStopping(Callback):
    """Stop training when a monitored value stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch logs.
    patience : int, default 0
        Epochs without improvement to wait before stopping.
    min_delta : float, default 0
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        "auto" maximises keys containing "acc", minimises the others.
    restore_best_weights : bool, default False
        Put the weights of the best epoch back when training ends early.

    Attributes
    ----------
    stopped_epoch : int or None
        The epoch after which training stopped.
    best : float
    best_epoch : int or None
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0,
                 mode="auto", restore_best_weights=False):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) \
                or patience < 0:
            raise ValueError(
                f"EarlyStopping: patience must be an int >= 0, got "
                f"{patience!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(float(min_delta))
        self.mode = _monitor_mode(monitor, mode)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = None
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self.best_weights = None

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"EarlyStopping: '{self.monitor}' is not in the epoch logs "
                f"(available: {sorted(logs or {})}); pass validation data or "
                f"monitor another key", RuntimeWarning, stacklevel=2)
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if (self.restore_best_weights and self.best_weights is not None
                and self.stopped_epoch is not None):
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after every epoch, or only when it improves.

    Parameters
    ----------
    path : str or os.PathLike
        File to write; may contain ``{epoch}`` and log keys, e.g.
        ``"model-{epoch:02d}-{val_loss:.3f}.cnnkit"``.  Each save is atomic.
    monitor : str, default "val_loss"
    save_best_only : bool, default False
    mode : {"auto", "min", "max"}, default "auto"
    include_optimizer : bool, default True
        Store the optimizer state so training can resume.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False,
                 mode="auto", include_optimizer=True):
        super().__init__()
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _monitor_mode(monitor, mode)
        self.include_optimizer = bool(include_optimizer)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(
                    f"ModelCheckpoint: '{self.monitor}' is not in the epoch "
                    f"logs (available: {sorted(logs)}); nothing saved",
                    RuntimeWarning, stacklevel=2)
                return
            better = (value < self.best if self.mode == "min"
                      else value > self.best)
            if not better or not np.isfinite(value):
                return
            self.best = value
        if self.params.get("rank", 0) != 0:
            return                    # in a data-parallel run, rank 0 saves
        path = self.path.format(epoch=epoch + 1, **logs)
        self.model.save(path, include_optimizer=self.include_optimizer)
        self.saved.append(path)
