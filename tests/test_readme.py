"""What the README shows works as written: its links lead to files, and
its MPI script trains and saves a model in one process and, under
``mpiexec -n 2 python -m mpi4py``, gives the same weights bit for bit.

The README is not beside the tests of an installed wheel: these tests are
skipped there.  Without mpi4py or mpiexec the two-rank run is skipped
(with CNNKIT_REQUIRE_EXTRAS=1, set by CI, it fails instead).
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import source_root

import cnnkit
from cnnkit import distributed


ROOT = source_root()
README = ROOT / "README.md" if ROOT else None

pytestmark = pytest.mark.skipif(
    README is None or not README.is_file(),
    reason="README.md is not beside the tests (an installed wheel)")


def _blocks(text, language):
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def _train_script(text):
    found = [b for b in _blocks(text, "python")
             if b.startswith("# train.py\n")]
    assert len(found) == 1, "the README shows one train.py"
    return found[0]


def test_links_lead_to_files():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links no file"
    for link in local:
        assert (ROOT / link).exists(), f"README links {link}, which is missing"
    for page in ("deploying", "scaling", "performance", "benchmarks"):
        assert f"docs/user_guide/{page}.rst" in local


def test_the_docs_build_command_is_shown():
    text = README.read_text()
    assert "sphinx-build -b html docs docs/_build/html" in text
    assert 'pip install ".[docs]"' in text


def test_the_train_script_is_the_scaling_pages():
    script = _train_script(README.read_text())
    page = (ROOT / "docs" / "user_guide" / "scaling.rst").read_text()
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:   .*\n|\n)+)",
                        page, re.M)
    assert script in [textwrap.dedent(b).strip("\n") + "\n" for b in blocks]
    launches = "\n".join(_blocks(README.read_text(), "bash"))
    assert "mpiexec -n 4 python -m mpi4py train.py" in launches


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in distributed._LAUNCHER_VARS:
        env.pop(var, None)
    return env


def _run(cmd, folder):
    proc = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return cnnkit.load_model(folder / "digits.cnnkit")


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        why = "mpi4py is not installed"
    else:
        bindir = os.path.dirname(sys.executable)
        exe = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
        if exe:
            return exe
        why = "no mpiexec found"
    if os.environ.get("CNNKIT_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"{why}: pip install mpi4py mpich")
    pytest.skip(why)


def test_the_train_script_runs_as_shown(tmp_path):
    script = _train_script(README.read_text())
    one = tmp_path / "one"
    one.mkdir()
    (one / "train.py").write_text(script)
    model = _run([sys.executable, "train.py"], one)
    x, y = cnnkit.datasets.load_digits()
    assert model.evaluate(x, y)["accuracy"] > 0.8

    mpiexec = _mpiexec()
    two = tmp_path / "two"
    two.mkdir()
    (two / "train.py").write_text(script)
    ranks = _run([mpiexec, "-n", "2", sys.executable, "-m", "mpi4py",
                  "train.py"], two)
    for a, b in zip(model.get_weights(), ranks.get_weights()):
        assert np.array_equal(a, b)
