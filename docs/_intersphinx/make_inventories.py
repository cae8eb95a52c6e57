"""Write the small offline intersphinx inventories of this folder.

The documentation builds without network access, so it cannot download the
``objects.inv`` files of Python and NumPy.  Instead this script writes two
small inventories in Sphinx's format (version 2, zlib-compressed), holding
only the Python and NumPy names that cnnkit's documentation refers to, with
their addresses in the online documentation.  Run it again after adding a
name::

    python docs/_intersphinx/make_inventories.py
"""
import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, domain:role, address relative to the base URL; "$" stands for name)
PYTHON = [
    ("ValueError", "py:exception", "library/exceptions.html#$"),
    ("TypeError", "py:exception", "library/exceptions.html#$"),
    ("FloatingPointError", "py:exception", "library/exceptions.html#$"),
    ("FileNotFoundError", "py:exception", "library/exceptions.html#$"),
    ("IsADirectoryError", "py:exception", "library/exceptions.html#$"),
    ("ImportError", "py:exception", "library/exceptions.html#$"),
    ("KeyboardInterrupt", "py:exception", "library/exceptions.html#$"),
    ("OSError", "py:exception", "library/exceptions.html#$"),
    ("RuntimeWarning", "py:exception", "library/exceptions.html#$"),
    ("int", "py:class", "library/functions.html#$"),
    ("float", "py:class", "library/functions.html#$"),
    ("bool", "py:class", "library/functions.html#$"),
    ("str", "py:class", "library/stdtypes.html#$"),
    ("dict", "py:class", "library/stdtypes.html#$"),
    ("list", "py:class", "library/stdtypes.html#$"),
    ("tuple", "py:class", "library/stdtypes.html#$"),
    ("callable", "py:function", "library/functions.html#$"),
    ("os.PathLike", "py:class", "library/os.html#$"),
    ("os.replace", "py:function", "library/os.html#$"),
    ("os.fork", "py:function", "library/os.html#$"),
    ("json.loads", "py:function", "library/json.html#$"),
    ("pickle", "py:module", "library/pickle.html#module-$"),
    ("multiprocessing", "py:module", "library/multiprocessing.html#module-$"),
    ("argparse", "py:module", "library/argparse.html#module-$"),
    # the targets of numpydoc's default type aliases
    ("None", "py:data", "library/constants.html#$"),
    ("True", "py:data", "library/constants.html#$"),
    ("False", "py:data", "library/constants.html#$"),
    ("bltin-boolean-values", "std:label", "library/stdtypes.html#$"),
    ("iterable", "std:term", "glossary.html#term-$"),
    ("sequence", "std:term", "glossary.html#term-$"),
    ("generator", "std:term", "glossary.html#term-$"),
    ("contextlib.contextmanager", "py:function", "library/contextlib.html#$"),
    ("collections.namedtuple", "py:function", "library/collections.html#$"),
]

NUMPY = [
    ("numpy.ndarray", "py:class", "reference/generated/$.html#$"),
    ("numpy.dtype", "py:class", "reference/generated/$.html#$"),
    ("numpy.asarray", "py:function", "reference/generated/$.html#$"),
    ("numpy.maximum", "py:data", "reference/generated/$.html#$"),
    ("numpy.load", "py:function", "reference/generated/$.html#$"),
    ("numpy.savez", "py:function", "reference/generated/$.html#$"),
    ("numpy.result_type", "py:function", "reference/generated/$.html#$"),
    ("numpy.tensordot", "py:function", "reference/generated/$.html#$"),
    ("numpy.random.Generator", "py:class",
     "reference/random/generator.html#$"),
    ("numpy.random.default_rng", "py:function",
     "reference/random/generator.html#$"),
    ("numpy.float32", "py:attribute", "reference/arrays.scalars.html#$"),
    ("numpy.float64", "py:attribute", "reference/arrays.scalars.html#$"),
    ("numpy.int64", "py:attribute", "reference/arrays.scalars.html#$"),
    # the targets of numpydoc's default type aliases
    ("numpy", "py:module", "reference/index.html#module-$"),
    ("array_like", "std:term", "glossary.html#term-$"),
    ("arrays.scalars", "std:label", "reference/arrays.scalars.html#arrays-scalars"),
    ("numpy.random.RandomState", "py:class", "reference/random/legacy.html#$"),
    ("numpy.inf", "py:data", "reference/constants.html#$"),
    ("numpy.nan", "py:data", "reference/constants.html#$"),
]


def write(path, project, version, entries):
    lines = []
    for name, role, uri in entries:
        priority = -1 if role == "std:label" else 1
        lines.append(f"{name} {role} {priority} {uri.replace('$', name)} "
                     f"{name}\n")
    body = zlib.compress("".join(lines).encode(), 9)
    head = ("# Sphinx inventory version 2\n"
            f"# Project: {project}\n"
            f"# Version: {version}\n"
            "# The remainder of this file is compressed using zlib.\n")
    with open(path, "wb") as f:
        f.write(head.encode() + body)


if __name__ == "__main__":
    write(os.path.join(HERE, "python-objects.inv"), "Python", "3", PYTHON)
    write(os.path.join(HERE, "numpy-objects.inv"), "NumPy", "stable", NUMPY)
