"""The ``cnnkit`` command line (also ``python -m cnnkit``).

Commands: ``train``, ``evaluate``, ``predict``, ``export``, ``info``,
``bench``.  A user mistake (a missing or corrupt file, a bad flag) prints one
line to stderr and exits with status 2; anything else is a bug and keeps its
traceback.
"""
import argparse
import os
import sys
import time

import numpy as np

from ._version import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in what the user asked for: reported without traceback."""


# --------------------------------------------------------------------------
# data and models
# --------------------------------------------------------------------------
def _load_data(path, seed, test_size):
    """(x_train, y_train, x_test, y_test, name) for --data PATH (or the
    shipped digits with a stratified held-out split)."""
    from . import datasets
    if path is None:
        x, y = datasets.load_digits()
        x_tr, x_te, y_tr, y_te = datasets.train_test_split(
            x, y, test_size=test_size, seed=seed, stratify=True)
        return x_tr, y_tr, x_te, y_te, "digits"
    try:
        (x_tr, y_tr), (x_te, y_te) = datasets.load_mnist(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --data {path}: {exc}") from None
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return x_tr, y_tr, x_te, y_te, name or "data"


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


def _load_model(path):
    from .saving import load_model
    try:
        return load_model(path)
    except (OSError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot load model {path}: {exc}") from None


def _set_threads(n):
    if n is not None:
        from ._config import set_num_threads
        set_num_threads(n)


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------
def cmd_train(args):
    from . import optim
    _set_threads(args.threads)
    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te, name = _load_data(args.data, args.seed,
                                              args.test_size)
    classes = int(max(y_tr.max(), y_te.max())) + 1
    model = default_model(x_tr.shape[1:], classes, args.seed)
    opt = {"sgd": optim.SGD(args.lr, momentum=0.9),
           "adam": optim.Adam(args.lr),
           "adamw": optim.AdamW(args.lr)}[args.optimizer]
    dist, root = None, True
    if args.distributed:
        from . import distributed
        world = distributed.init()
        dist = distributed.DataParallel(args.distributed)
        root = world["rank"] == 0
    quiet = args.quiet or not root
    say = (lambda *a: None) if quiet else print
    say(f"Training a {len(model.layers)}-layer CNN on {name}: "
        f"{x_tr.shape[0]} training and {x_te.shape[0]} test images of "
        f"shape {x_tr.shape[1:]}, {classes} classes")
    if dist is not None:
        say(f"data-parallel over {world['size']} rank(s), {dist.reduction} "
            f"reduction; {world['threads']} thread(s) per rank; "
            f"{world['library']}")
    history = model.fit(x_tr, y_tr, epochs=args.epochs,
                        batch_size=args.batch_size, optimizer=opt,
                        verbose=0 if quiet else 1, distributed=dist)
    test = model.evaluate(x_te, y_te)
    if not root:
        return 0                      # rank 0 reports and writes the file
    out = args.out or f"{name}.cnnkit"
    try:
        model.save(out)
    except OSError as exc:
        raise UsageError(f"cannot write --out {out}: {exc}") from None
    seconds = time.perf_counter() - t0
    print(f"test accuracy: {test['accuracy']:.4f}  test loss: "
          f"{test['loss']:.4f}  ({len(history.epoch)} epochs, "
          f"{seconds:.1f} s)")
    print(f"saved model: {os.path.abspath(out)}")
    if history.interrupted:
        print("training was interrupted; the saved model holds the weights "
              "of the last completed batch", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def cmd_evaluate(args):
    _set_threads(args.threads)
    model = _load_model(args.model)
    _, _, x_te, y_te, name = _load_data(args.data, args.seed,
                                        args.test_size)
    try:
        result = model.evaluate(x_te, y_te, batch_size=args.batch_size)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"the model does not fit the data ({name}): "
                         f"{exc}") from None
    print(f"{name} test set: accuracy {result['accuracy']:.4f}, loss "
          f"{result['loss']:.4f} ({x_te.shape[0]} images)")
    return 0


def cmd_predict(args):
    _set_threads(args.threads)
    model = _load_model(args.model)
    try:
        images = np.load(args.images, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read images {args.images}: {exc}") \
            from None
    if isinstance(images, np.lib.npyio.NpzFile):
        raise UsageError(f"{args.images} is an .npz archive; pass one .npy "
                         f"array of images")
    if images.ndim == len(model.input_shape) - 1 or (
            images.ndim == 2 and model.input_shape[0] == 1):
        images = images[None]                    # a single image
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


def cmd_export(args):
    try:
        from . import onnx as cnnkit_onnx
        cnnkit_onnx._require_onnx()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    model = _load_model(args.model)
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


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got "
                                         f"{text!r}") from None
    if not v > 0 or not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v}")
    return v


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


def build_parser():
    parser = _Parser(
        prog="cnnkit",
        description="Train, evaluate and run small CNNs on the CPU.")
    parser.add_argument("--version", action="version",
                        version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=_Parser)
    sub.required = True

    def data_opts(p):
        p.add_argument("--data", metavar="PATH",
                       help="MNIST-style folder of IDX files (plain or .gz) "
                            "or an .npz with x_train, y_train, x_test, "
                            "y_test (default: the shipped 8x8 digits, "
                            "split into train and test)")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the split, initialisation and "
                            "shuffling (default 0)")
        p.add_argument("--test-size", type=_fraction, default=0.2,
                       help="held-out fraction of the shipped digits "
                            "(default 0.2)")

    def threads_opt(p):
        p.add_argument("--threads", type=_positive_int, default=None,
                       help="OpenMP threads (default: all cores)")

    p = sub.add_parser("train", help="train a CNN and save it",
                       description="Train a LeNet-style CNN, report its test "
                                   "accuracy and save it.")
    data_opts(p)
    p.add_argument("--epochs", type=_positive_int, default=30,
                   help="passes over the training set (default 30)")
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="images per step (default 32)")
    p.add_argument("--lr", type=_positive_float, default=2e-3,
                   help="learning rate (default 0.002)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"],
                   default="adam", help="default adam; sgd uses momentum "
                                        "0.9")
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
                                   "test set.")
    p.add_argument("model", metavar="MODEL", help="a .cnnkit file")
    data_opts(p)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    threads_opt(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify images in an .npy file",
                       description="Predict the class of each image in an "
                                   ".npy array of shape (n, C, H, W), "
                                   "(n, H, W) or one image.")
    p.add_argument("model", metavar="MODEL", help="a .cnnkit file")
    p.add_argument("images", metavar="IMAGES.npy")
    p.add_argument("--proba", action="store_true",
                   help="print class probabilities instead of labels")
    p.add_argument("--out", metavar="PATH",
                   help="write to PATH (.npy, else text) instead of stdout")
    p.add_argument("--batch-size", type=_positive_int, default=256)
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
                   help="data type of the graph (default: the model's)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="version, compiler, OpenMP, SIMD path",
                       description="Print how cnnkit was built and what it "
                                   "runs on.")
    p.set_defaults(func=cmd_info)

    from . import bench
    p = sub.add_parser("bench", help="time cnnkit against NumPy (and "
                                     "PyTorch if installed)",
                       description="Time cnnkit's kernels, square matrix "
                                   "products and LeNet-5 training and "
                                   "inference against the NumPy reference "
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
                        "(a 64-channel 3x3 layer) (default: all; kernels "
                        "and lenet with --quick)")
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
