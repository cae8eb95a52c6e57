"""The ``cnnkit`` command line (also ``python -m cnnkit``).

Commands: ``train``, ``evaluate``, ``predict``, ``export``, ``info``,
``bench``.  A user mistake (a missing or corrupt file, a bad flag) prints one
line to stderr and exits with status 2; anything else is a bug and keeps its
traceback.
"""
import argparse
import difflib
import hashlib
import os
import sys
import time
import warnings

import numpy as np

from ._inputs import as_batch
from ._version import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in what the user asked for: reported without traceback."""


# --------------------------------------------------------------------------
# data and models
# --------------------------------------------------------------------------
#: Defaults of --seed and --test-size (None on the parser, so that a flag
#: the user gave can be told from a default).
DEFAULT_SEED = 0
DEFAULT_TEST_SIZE = 0.2
#: The model file's metadata entry where ``cnnkit train`` records how it
#: trained the model.
TRAINING_KEY = "training"


def fingerprint(*arrays):
    """SHA-256 (hex) of arrays: their dtypes, shapes and bytes, in order."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(memoryview(a.reshape(-1).view(np.uint8)))
    return digest.hexdigest()


def _load_data(path, seed, test_size):
    """The training and test data: of --data PATH, or the shipped digits
    with a stratified held-out split.

    Returns
    -------
    x_train, y_train, x_test, y_test : ndarray
    name : str
        The dataset's name (messages, the default model file name).
    source : dict
        Where the data came from, for the model file's training record:
        ``data`` (``"shipped digits"`` or the absolute path), ``data_kind``
        (``"digits"``, ``"idx"`` or ``"npz"``), ``sha256`` (of the whole
        data, before any split) and, for the digits, the split's ``seed``
        and ``test_size``.
    """
    from . import datasets
    if path is None:
        x, y = datasets.load_digits()
        x_tr, x_te, y_tr, y_te = datasets.train_test_split(
            x, y, test_size=test_size, seed=seed, stratify=True)
        return x_tr, y_tr, x_te, y_te, "digits", {
            "data": "shipped digits", "data_kind": "digits",
            "sha256": fingerprint(x, y), "seed": seed,
            "test_size": test_size}
    try:
        (x_tr, y_tr), (x_te, y_te) = datasets.load_mnist(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --data {path}: {exc}") from None
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    full = os.path.abspath(os.path.expanduser(path))
    return x_tr, y_tr, x_te, y_te, name or "data", {
        "data": full, "data_kind": "idx" if os.path.isdir(full) else "npz",
        "sha256": fingerprint(x_tr, y_tr, x_te, y_te)}


def _check_split_flags(args, command):
    """--test-size (and, for evaluate, --seed) only choose the split of the
    shipped digits: refuse them with --data, which has its own test set."""
    if args.data is None:
        return
    flags = ["--test-size"] + (["--seed"] if command == "evaluate" else [])
    for flag in flags:
        if getattr(args, flag[2:].replace("-", "_")) is not None:
            raise UsageError(
                f"{flag} splits the shipped digits, but --data {args.data} "
                f"has its own test set (x_test and y_test, or the t10k "
                f"files): leave out {flag}")


def _training_record(model, path):
    """The record ``cnnkit train`` wrote into the model file, or None for a
    file without one; a record that does not make sense is refused."""
    record = model.metadata.get(TRAINING_KEY)
    if record is None:
        return None
    ok = isinstance(record, dict) and isinstance(record.get("sha256"), str)
    if ok and record.get("data_kind") == "digits":
        seed, size = record.get("seed"), record.get("test_size")
        ok = (isinstance(seed, int) and not isinstance(seed, bool)
              and isinstance(size, float) and 0 < size < 1)
    if not ok:
        raise UsageError(f"{path} has a malformed {TRAINING_KEY!r} record "
                         f"in its metadata: {record!r}")
    return record


def default_model(input_shape, classes, seed):
    """A LeNet-style network sized for the input: LeNet-5 for images of at
    least 20x20, two 3x3 conv blocks for smaller ones (e.g. 8x8 digits)."""
    from .model import Sequential
    from . import layers as L
    c, h, w = input_shape
    if min(h, w) >= 20:
        stack = [L.Conv2D(6, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
                 L.Conv2D(16, 5), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                 L.Dense(120), L.ReLU(), L.Dense(84), L.ReLU(),
                 L.Dense(classes)]
    else:
        stack = [L.Conv2D(16, 3, padding=1), L.ReLU()]
        if min(h, w) >= 2:
            stack.append(L.MaxPool2D(2))
        stack += [L.Conv2D(32, 3, padding=1), L.ReLU()]
        if min(h, w) >= 4:
            stack.append(L.MaxPool2D(2))
        stack += [L.Flatten(), L.Dense(64), L.ReLU(), L.Dense(classes)]
    return Sequential(stack, input_shape=input_shape, seed=seed)


def _load_model(path, command):
    """load_model, with its errors as UsageError and its warnings (an
    optimizer a file of another cnnkit version holds, say) as one line
    each on stderr."""
    from .saving import load_model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_model(path)
        except (OSError, ValueError, ImportError) as exc:
            raise UsageError(f"cannot load model {path}: {exc}") from None
    for w in caught:
        print(f"cnnkit {command}: warning: {w.message}", file=sys.stderr)
    return model


def _set_threads(n):
    if n is not None:
        from ._config import set_num_threads
        set_num_threads(n)


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------
def cmd_train(args):
    from . import optim
    from .callbacks import History
    _set_threads(args.threads)
    _check_split_flags(args, "train")
    if args.seed is None:
        args.seed = DEFAULT_SEED
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te, name, source = _load_data(
        args.data, args.seed,
        DEFAULT_TEST_SIZE if args.test_size is None else args.test_size)
    classes = int(max(y_tr.max(), y_te.max())) + 1
    if args.model is None:
        model = default_model(x_tr.shape[1:], classes, args.seed)
    else:
        from . import models
        try:
            model = models.get(args.model, x_tr.shape[1:], classes,
                               seed=args.seed)
        except ValueError as exc:
            raise UsageError(f"--model: {exc}") from None
    schedule = (optim.CosineAnnealingLR(args.epochs)
                if args.schedule == "cosine" else None)
    wd = args.weight_decay
    opt = {"sgd": lambda: optim.SGD(args.lr, momentum=0.9,
                                    weight_decay=wd or 0.0,
                                    schedule=schedule),
           "adam": lambda: optim.Adam(args.lr, weight_decay=wd or 0.0,
                                      schedule=schedule),
           "adamw": lambda: optim.AdamW(
               args.lr, weight_decay=0.01 if wd is None else wd,
               schedule=schedule)}[args.optimizer]()
    dist, root = None, True
    if args.distributed:
        from . import distributed
        world = distributed.init()
        dist = distributed.DataParallel(args.distributed)
        root = world["rank"] == 0
    quiet = args.quiet or not root
    say = (lambda *a: None) if quiet else print
    what = (f"a {len(model.layers)}-layer CNN" if args.model is None
            else f"{args.model} ({len(model.layers)} layers, "
                 f"{model.count_params():,} parameters)")
    say(f"Training {what} on {name}: "
        f"{x_tr.shape[0]} training and {x_te.shape[0]} test images of "
        f"shape {x_tr.shape[1:]}, {classes} classes")
    if dist is not None:
        say(f"data-parallel over {world['size']} rank(s), {dist.reduction} "
            f"reduction; {world['threads']} thread(s) per rank; "
            f"{world['library']}")
    out = args.out or f"{name}.cnnkit"
    record = dict(source, seed=args.seed, test_size=source.get("test_size"),
                  train_images=int(x_tr.shape[0]),
                  test_images=int(x_te.shape[0]), epochs=args.epochs,
                  batch_size=args.batch_size, optimizer=args.optimizer,
                  lr=args.lr, label_smoothing=args.label_smoothing)
    for key in ("model", "schedule", "weight_decay"):
        if getattr(args, key) is not None:
            record[key] = getattr(args, key)
    if args.augment is not None:
        from . import transforms
        record["augment"] = transforms.serialize(args.augment)
    counter = History()                  # the epochs done if fit raises
    try:
        history = model.fit(x_tr, y_tr, epochs=args.epochs,
                            batch_size=args.batch_size, optimizer=opt,
                            verbose=0 if quiet else 1, distributed=dist,
                            callbacks=[counter], augment=args.augment,
                            label_smoothing=args.label_smoothing)
    except Exception as exc:
        if not root:
            raise
        kept = _save_partial(model, out, record, len(counter.epoch))
        if isinstance(exc, FloatingPointError):   # the loss diverged
            raise UsageError(f"{exc}; {kept}") from None
        print(f"cnnkit train: training failed; {kept}", file=sys.stderr)
        raise
    test = model.evaluate(x_te, y_te)
    if not root:
        return 0                      # rank 0 reports and writes the file
    seconds = time.perf_counter() - t0
    done = len(history.epoch)
    if history.interrupted:
        # never replace a model file with a half-trained one
        kept = _save_partial(model, out, record, done, strict=True)
        print(f"test accuracy: {test['accuracy']:.4f}  test loss: "
              f"{test['loss']:.4f}  (interrupted after "
              f"{_count(done, 'complete epoch')} of {args.epochs}, "
              f"{seconds:.1f} s)")
        print(f"training was interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        model.save(out, metadata={TRAINING_KEY: dict(
            record, epochs_completed=done)})
    except OSError as exc:
        raise UsageError(f"cannot write --out {out}: {exc}") from None
    print(f"test accuracy: {test['accuracy']:.4f}  test loss: "
          f"{test['loss']:.4f}  ({_count(done, 'epoch')}, {seconds:.1f} s)")
    print(f"saved model: {os.path.abspath(out)}")
    return 0


def _count(n, noun):
    """``"1 epoch"``, ``"2 epochs"``, ``"0 epochs"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def partial_path(out):
    """Where an interrupted or failed ``cnnkit train --out OUT`` saves the
    model so far: ``NAME.partial.cnnkit`` beside ``NAME.cnnkit``."""
    root, ext = os.path.splitext(out)
    return (root if ext == ".cnnkit" else out) + ".partial.cnnkit"


def _save_partial(model, out, record, epochs, strict=False):
    """Save the model so far beside ``out`` (never over it); returns a
    sentence saying where.  A failed save is a UsageError with ``strict``,
    else said in the sentence (an error is being reported already)."""
    path = partial_path(out)
    left = (f"{out} is left as it was" if os.path.exists(out)
            else f"{out} is not written")
    try:
        model.save(path, metadata={TRAINING_KEY: dict(
            record, epochs_completed=epochs)})
    except OSError as exc:
        if strict:
            raise UsageError(f"cannot write {path}: {exc}; {left}") \
                from None
        return f"the model so far could not be saved ({exc}); {left}"
    return f"the model so far is saved in {os.path.abspath(path)}; {left}"


def cmd_evaluate(args):
    _set_threads(args.threads)
    _check_split_flags(args, "evaluate")
    model = _load_model(args.model, args.command)
    record = _training_record(model, args.model)
    seed, test_size = args.seed, args.test_size
    from_record = (args.data is None and record is not None
                   and record.get("data_kind") in ("idx", "npz"))
    if from_record:
        # a model trained on --data is tested on that data's test set
        recorded = record.get("data")
        if not (isinstance(recorded, str) and os.path.exists(recorded)):
            raise UsageError(
                f"{args.model} was trained on --data {recorded}, which is "
                f"not there now; give its test data with --data PATH")
        args.data = recorded
    as_trained = (args.data is None and record is not None
                  and record.get("data_kind") == "digits")
    if as_trained:
        # the held-out part of the split the model was trained with: any
        # other split would test it on images it learnt from
        for flag, given, recorded in (
                ("--seed", seed, record["seed"]),
                ("--test-size", test_size, record["test_size"])):
            if given is not None and given != recorded:
                raise UsageError(
                    f"{flag} {given} contradicts how {args.model} was "
                    f"trained: on the shipped digits split with seed "
                    f"{record['seed']} and test size {record['test_size']}; "
                    f"another split would test it on images it was trained "
                    f"on, so leave out {flag} (that split is the default)")
        seed, test_size = record["seed"], record["test_size"]
    seed = DEFAULT_SEED if seed is None else seed
    test_size = DEFAULT_TEST_SIZE if test_size is None else test_size
    _, _, x_te, y_te, name, source = _load_data(args.data, seed, test_size)
    if from_record and source["sha256"] != record["sha256"]:
        print(f"cnnkit evaluate: warning: {args.data} has changed since "
              f"{args.model} was trained on it", file=sys.stderr)
    if as_trained and source["sha256"] != record["sha256"]:
        print(f"cnnkit evaluate: warning: the shipped digits differ from "
              f"those {args.model} was trained on (another cnnkit "
              f"version?), so its test set may hold training images",
              file=sys.stderr)
    try:
        result = model.evaluate(x_te, y_te, batch_size=args.batch_size)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"the model does not fit the data ({name}): "
                         f"{exc}") from None
    if args.data is not None:
        split = ""
    elif as_trained:
        split = (f": the split it was trained with, seed {seed}, test size "
                 f"{test_size}")
    else:
        split = f": seed {seed}, test size {test_size}"
    print(f"{name} test set: accuracy {result['accuracy']:.4f}, loss "
          f"{result['loss']:.4f} ({_count(x_te.shape[0], 'image')}{split})")
    return 0


def cmd_predict(args):
    _set_threads(args.threads)
    model = _load_model(args.model, args.command)
    images = _read_images(args.images, model.input_shape)
    try:
        images = as_batch(images, model.input_shape, name="the array")
    except ValueError as exc:
        raise UsageError(f"images {args.images} do not fit the model: "
                         f"{exc}") from None
    try:
        if args.proba:
            result = model.predict_proba(images, batch_size=args.batch_size)
        else:
            result = model.predict(images, batch_size=args.batch_size)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"images {args.images} do not fit the model: "
                         f"{exc}") from None
    if args.out:
        try:
            if args.out.endswith(".npy"):
                np.save(args.out, result)
            else:
                np.savetxt(args.out, result,
                           fmt="%.6f" if args.proba else "%d")
        except OSError as exc:
            raise UsageError(f"cannot write --out {args.out}: {exc}") \
                from None
    else:
        if args.proba:
            np.savetxt(sys.stdout, result, fmt="%.6f")
        else:
            print("\n".join(str(int(v)) for v in result))
    return 0


def _read_images(path, input_shape):
    """The array in the .npy file ``path``; a UsageError that says what
    the file is not, and what to pass, for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise UsageError(f"cannot read images {path}: {exc}") from None
    if head.startswith(b"PK"):
        raise UsageError(f"{path} is an .npz archive; pass one .npy array "
                         f"of images (numpy.save)")
    if not head.startswith(b"\x93NUMPY"):
        # text: no control bytes but tabs and line ends (UTF-8 passes)
        text = bool(head) and not any(b < 9 or 13 < b < 32 or b == 127
                                      for b in head)
        shape = ", ".join(str(d) for d in input_shape)
        what, how = (
            ("a text file", f"numpy.save('images.npy', numpy.loadtxt("
                            f"'{path}').reshape(-1, {shape}))") if text else
            ("not an .npy file", "numpy.save('images.npy', images)"))
        raise UsageError(
            f"cannot read images {path}: it is {what}, and cnnkit predict "
            f"reads one .npy array (a file that starts with NumPy's magic "
            f"string); write one with {how}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UsageError(f"cannot read images {path}: it holds Python "
                             f"objects (dtype object); pass an .npy array "
                             f"of numbers") from None
        raise UsageError(f"cannot read images {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read images {path}: {exc}") from None


def cmd_export(args):
    try:
        from . import onnx as cnnkit_onnx
        cnnkit_onnx._require_onnx()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    model = _load_model(args.model, args.command)
    dtype = args.dtype or model.dtype.name
    kinds = cnnkit_onnx.no_float64_layers(model)
    if dtype == "float64" and kinds:
        why = ("--dtype float64 writes" if args.dtype else
               f"{args.model} is float64, so the graph would have")
        raise UsageError(
            f"{why} {', '.join(kinds)} layers in double, which "
            f"onnxruntime's CPU provider cannot run (it has no double Conv, "
            f"AveragePool or GlobalAveragePool); pass --dtype float32 "
            f"(cnnkit.onnx.export(model, path, dtype='float64') writes the "
            f"float64 graph for other runtimes)")
    try:
        cnnkit_onnx.export(model, args.out, opset=args.opset,
                           probabilities=args.probabilities,
                           dtype=args.dtype)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot export {args.model}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc}") from None
    print(f"exported {args.model} to {os.path.abspath(args.out)} (ONNX opset "
          f"{args.opset}, returns "
          f"{'probabilities' if args.probabilities else 'logits'})")
    return 0


def cmd_info(args):
    from ._config import show_config
    show_config()
    return 0


def cmd_bench(args):
    from . import bench
    try:
        config = bench.make_config(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    results = bench.run(config)
    if args.json:
        try:
            bench.write_json(results, args.json)
        except OSError as exc:
            raise UsageError(f"cannot write --json {args.json}: {exc}") \
                from None
        print(f"results: {os.path.abspath(args.json)}")
    return 0


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------
def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got "
                                         f"{text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got "
                                         f"{v}")
    return v


def _number_in(ok, expected):
    """An argparse type: a float for which ``ok(v)`` holds, else an error
    that says ``expected a number <expected>``."""
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got "
                                             f"{text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected a number {expected}, "
                                             f"got {v}")
        return v
    return parse


_positive_float = _number_in(lambda v: 0 < v < np.inf, "> 0")
_non_negative_float = _number_in(lambda v: 0 <= v < np.inf, ">= 0")
_unit_interval = _number_in(lambda v: 0 <= v <= 1, "in [0, 1]")


def _augment_spec(text):
    """--augment SPEC as a cnnkit.transforms.Compose."""
    from . import transforms
    try:
        return transforms.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text):
    v = _positive_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), "
                                         f"got {v}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``cnnkit train: error: ...``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see "
                              f"'{self.prog} --help')\n")


class _CommandParser(_Parser):
    """The parser of one command: it reports the arguments it does not
    know itself (argparse leaves them to the top-level parser, whose
    message points at ``cnnkit --help``), with the closest flag it
    has."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self._unrecognized(extras))
        return namespace, extras

    def _unrecognized(self, extras):
        message = f"unrecognized arguments: {' '.join(extras)}"
        flags = [o for a in self._actions for o in a.option_strings
                 if o.startswith("--")]
        for arg in extras:
            if arg.startswith("-"):
                close = difflib.get_close_matches(arg.split("=", 1)[0],
                                                  flags, n=1, cutoff=0.6)
                if close:
                    return f"{message}; did you mean {close[0]}?"
        return message


def build_parser():
    parser = _Parser(
        prog="cnnkit",
        description="Train, evaluate and run small CNNs on the CPU.")
    parser.add_argument("--version", action="version",
                        version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=_CommandParser)
    sub.required = True

    def data_opts(p, seed_help, default=DEFAULT_TEST_SIZE):
        p.add_argument("--data", metavar="PATH",
                       help="MNIST-style folder of IDX files (plain or .gz) "
                            "or an .npz with x_train, y_train, x_test, "
                            "y_test (default: the shipped 8x8 digits, "
                            "split into train and test)")
        p.add_argument("--seed", type=int, default=None, help=seed_help)
        p.add_argument("--test-size", type=_fraction, default=None,
                       help=f"held-out fraction of the shipped digits "
                            f"(default: {default}; not with --data)")

    def threads_opt(p):
        p.add_argument("--threads", type=_positive_int, default=None,
                       help="OpenMP threads (default: all cores)")

    p = sub.add_parser("train", help="train a CNN and save it",
                       description="Train a CNN (a LeNet-style network, or "
                                   "--model NAME from cnnkit.models), report "
                                   "its test accuracy and save it.")
    data_opts(p, f"seed of the digits' split, the initialisation and the "
                 f"shuffling (default {DEFAULT_SEED})")
    p.add_argument("--epochs", type=_positive_int, default=30,
                   help="passes over the training set (default 30)")
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="images per step (default 32)")
    p.add_argument("--lr", type=_positive_float, default=2e-3,
                   help="learning rate (default 0.002)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"],
                   default="adam", help="default adam; sgd uses momentum "
                                        "0.9")
    p.add_argument("--model", metavar="NAME", default=None,
                   help="an architecture of cnnkit.models: lenet5, "
                        "resnet20 (any resnet<6n+2>), mobilenet (default: a "
                        "LeNet-style network sized for the images)")
    p.add_argument("--schedule", choices=["cosine"], default=None,
                   help="learning-rate schedule: cosine annealing to 0 over "
                        "the epochs (default: a constant rate)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=None,
                   metavar="WD", help="weight decay (default 0; 0.01 for "
                                      "adamw)")
    p.add_argument("--label-smoothing", type=_unit_interval, default=0.0,
                   metavar="EPS",
                   help="train on the label-smoothed cross-entropy, targets "
                        "(1 - EPS) one-hot + EPS / classes (default 0)")
    p.add_argument("--augment", metavar="SPEC", type=_augment_spec,
                   default=None,
                   help="augment the training batches (never the test "
                        "data), e.g. crop:1,flip; SPEC is comma-separated "
                        "steps: crop:P (pad by P, crop back), flip[:P], "
                        "translate:F[:FW], normalize:MEAN:STD")
    threads_opt(p)
    p.add_argument("--out", metavar="PATH",
                   help="model file to write (default: <dataset>.cnnkit)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output, only the result")
    p.add_argument("--distributed", nargs="?", const="ordered",
                   choices=["ordered", "allreduce"],
                   help="train data-parallel over the ranks of an MPI job "
                        "(mpiexec -n N python -m mpi4py -m cnnkit train "
                        "--distributed); the reduction, default ordered: "
                        "the same weights as one process")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a saved model",
                       description="Accuracy and loss of a saved model on a "
                                   "test set: by default that of the data "
                                   "it was trained on (the --data it was "
                                   "given, or the shipped digits' held-out "
                                   "split).")
    p.add_argument("model", metavar="MODEL", help="a .cnnkit file")
    data_opts(p, f"seed of the digits' split (default: the one MODEL was "
                 f"trained with, else {DEFAULT_SEED}; not with --data)",
              default=f"the one MODEL was trained with, else "
                      f"{DEFAULT_TEST_SIZE}")
    p.add_argument("--batch-size", type=_positive_int, default=256,
                   help="images per forward pass (default 256)")
    threads_opt(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify images in an .npy file",
                       description="Predict the class of each image in an "
                                   ".npy array of shape (n, C, H, W), "
                                   "(n, H, W) or one image.")
    p.add_argument("model", metavar="MODEL", help="a .cnnkit file")
    p.add_argument("images", metavar="IMAGES.npy",
                   help="the images, an .npy array (numpy.save)")
    p.add_argument("--proba", action="store_true",
                   help="print class probabilities instead of labels")
    p.add_argument("--out", metavar="PATH",
                   help="write to PATH (.npy, else text) instead of stdout")
    p.add_argument("--batch-size", type=_positive_int, default=256,
                   help="images per forward pass (default 256)")
    threads_opt(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a saved model as ONNX",
                       description="Write a saved model as an ONNX file "
                                   "for onnxruntime and other runtimes "
                                   "(needs the onnx package).")
    p.add_argument("model", metavar="MODEL", help="a .cnnkit file")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=_positive_int, default=17,
                   help="ONNX opset (default 17)")
    p.add_argument("--probabilities", action="store_true",
                   help="end with a softmax: the graph returns class "
                        "probabilities instead of logits")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="data type of the graph (default: the model's); "
                        "float64 only for models without convolution or "
                        "average pooling, which onnxruntime cannot run in "
                        "float64")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="version, compiler, OpenMP, SIMD path",
                       description="Print how cnnkit was built and what it "
                                   "runs on.")
    p.set_defaults(func=cmd_info)

    from . import bench
    p = sub.add_parser("bench", help="time cnnkit against NumPy (and "
                                     "PyTorch if installed)",
                       description="Time cnnkit's kernels, square matrix "
                                   "products and LeNet-5 and ResNet-20 "
                                   "training and inference against the NumPy reference "
                                   "and, when installed, PyTorch, each "
                                   "framework in its own process; prints "
                                   "median times and ratios.")
    p.add_argument("--quick", action="store_true",
                   help="3 repeats, 512 LeNet-5 images, conv64 at batch "
                        "8, and only the kernels and lenet groups unless "
                        "--only says otherwise")
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help="interleaved repeats (default 7, 3 with --quick)")
    p.add_argument("--only", nargs="+", metavar="GROUP",
                   choices=bench.GROUPS,
                   help="run these groups: lenet, kernels, gemm, conv64 "
                        "(a 64-channel 3x3 layer), zoo (ResNet-20) "
                        "(default: all; kernels and lenet with --quick)")
    p.add_argument("--gemm", action="store_true",
                   help="square matrix products (float32 and float64) "
                        "only: the same as --only gemm")
    p.add_argument("--sizes", type=_positive_int, nargs="+", metavar="N",
                   help="matrix sizes of the gemm group (default 1024 2048 "
                        "4096)")
    p.add_argument("--batch-sizes", type=_positive_int, nargs="+",
                   metavar="N", help="training batch sizes of the lenet "
                                     "group (default 1 32 64)")
    p.add_argument("--images", type=_positive_int, metavar="N",
                   help="images per training pass of the lenet group "
                        "(default 2048, 512 with --quick; batch 1 uses a "
                        "quarter)")
    p.add_argument("--json", metavar="PATH",
                   help="also write every result (machine, medians, "
                        "samples, ratios) to this JSON file")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    threads_opt(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"cnnkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
