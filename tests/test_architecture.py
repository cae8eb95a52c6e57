"""The layers of the package hold in its imports (docs/developer.rst):
only the two tiers into C import the bindings, and no module imports,
even inside a function, a module that imports it back."""
import ast
import importlib.util
import pathlib

import pytest

import cnnkit

PACKAGE = pathlib.Path(cnnkit.__file__).parent

#: The modules that call the compiled bindings: the public, normalising
#: functional API and the lean internal tier.
KERNEL_CALLERS = {"functional", "_ops"}


def _imports():
    """{module: set of cnnkit modules it imports anywhere in its code}."""
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = path.stem
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    deps.add(node.module.split(".")[0])
                elif node.level == 1:
                    deps.update(a.name for a in node.names)
                elif node.module and node.module.startswith("cnnkit."):
                    deps.add(node.module.split(".")[1])
                elif node.module == "cnnkit":
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names
                            if a.name.startswith("cnnkit."))
        graph[name] = {d for d in deps if d != name}
    # a name that is not a module comes from the package's __init__
    for deps in graph.values():
        for d in list(deps):
            if d not in graph and d != "_kernels":
                deps.discard(d)
                deps.add("__init__")
    return graph


def test_the_package_sources_are_there():
    if not (PACKAGE / "model.py").exists():           # pragma: no cover
        pytest.skip("the package has no sources next to it")
    assert {"functional", "_ops", "model", "trainer", "layers"} <= set(
        _imports())


def test_only_the_two_tiers_import_the_bindings():
    callers = {m for m, deps in _imports().items() if "_kernels" in deps}
    assert callers <= KERNEL_CALLERS, sorted(callers - KERNEL_CALLERS)
    # the package's __init__ imports the lean tier, never the bindings
    assert "_kernels" not in _imports().get("__init__", set())


def test_no_module_imports_the_package_itself():
    graph = _imports()
    users = {m for m, deps in graph.items() if "__init__" in deps}
    assert users <= {"__main__"}, sorted(users)


def _cycles(graph):
    """Every cycle a depth-first walk of ``graph`` ({module: imports})
    meets, each as the list of modules around it."""
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_the_cycle_check_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
        ["a", "b", "c", "a"]]
    assert _cycles({"a": {"a"}}) == [["a", "a"]]


def test_no_import_cycles():
    graph = _imports()
    graph.pop("__init__", None)      # the package imports its API
    cycles = _cycles(graph)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_the_bindings_are_importable_as_a_module():
    assert importlib.util.find_spec("cnnkit._kernels") is not None
