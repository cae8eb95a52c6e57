"""The optional extras (sklearn, onnx, mpi): what they bring, and that the
README, the getting-started page and cnnkit's messages about a missing
package give the same install command, ``pip install <the extra's
packages>``, into the environment that has cnnkit (``pip install
".[extra]"`` would build cnnkit again)."""
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from helpers import source_root

from cnnkit import distributed
from cnnkit import onnx as cnnkit_onnx


ROOT = source_root()


def extra_packages(extra):
    """The names of the packages that the installed cnnkit's ``extra``
    brings, in the order pyproject.toml lists them."""
    names = []
    for req in importlib.metadata.requires("cnnkit") or []:
        m = re.search(r"""extra\s*==\s*["']([\w-]+)["']""", req)
        if m and m.group(1) == extra:
            names.append(re.match(r"[A-Za-z0-9_.-]+", req).group(0))
    return names


# the command each extra's packages install with (mpich: an MPI library
# from pip, for a machine without one; not in the extra, which a cluster's
# own MPI must not be shadowed by)
COMMANDS = {
    "sklearn": "pip install scikit-learn",
    "onnx": "pip install onnx onnxruntime",
    "mpi": "pip install mpi4py mpich",
}


@pytest.mark.parametrize("extra", sorted(COMMANDS))
def test_the_command_installs_the_extras_packages(extra):
    packages = extra_packages(extra)
    assert packages, f"the installed cnnkit has no extra {extra!r}"
    assert COMMANDS[extra].split()[2:2 + len(packages)] == packages


def test_the_onnx_extra_brings_onnxruntime():
    # export is for onnxruntime: the extra brings what runs the files
    assert extra_packages("onnx") == ["onnx", "onnxruntime"]


def test_messages_give_the_commands(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError) as info:
        cnnkit_onnx.load(tmp_path / "m.onnx")
    assert COMMANDS["onnx"] in str(info.value)
    assert "cnnkit[" not in str(info.value)

    # one rank of an MPI job without mpi4py
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(ImportError) as info:
        distributed.init()
    assert COMMANDS["mpi"] in str(info.value)
    assert "cnnkit[" not in str(info.value)


@pytest.mark.parametrize("page", ["README.md", "docs/getting_started.rst"])
def test_the_pages_give_the_commands(page):
    if ROOT is None or not (ROOT / page).is_file():
        pytest.skip(f"{page} is not beside the tests (an installed wheel)")
    text = (ROOT / page).read_text()
    for command in COMMANDS.values():
        assert command in text, f"{page} does not show {command!r}"
    # an extra named through the package index, where cnnkit is not
    assert not re.search(r'pip install "?cnnkit\[', text)
    assert "up to a minute" in text          # the silent first build


def test_no_message_sends_pip_to_the_index_for_cnnkit():
    # cnnkit is installed from its source folder: "cnnkit[onnx]" would
    # make pip look for cnnkit on the package index
    import cnnkit
    folder = Path(cnnkit.__file__).parent
    for path in sorted(folder.glob("*.py")) + sorted(folder.glob("*.pyx")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"pip install \\?[\"']?cnnkit\[", line), \
                f"{path.name}:{i}: {line.strip()}"


def test_the_readme_gives_the_docs_extras_packages():
    if ROOT is None or not (ROOT / "README.md").is_file():
        pytest.skip("README.md is not beside the tests (an installed wheel)")
    text = " ".join((ROOT / "README.md").read_text().split())
    command = "pip install " + " ".join(extra_packages("docs"))
    assert command in text
