"""cnnkit in one process with threadpoolctl and PyTorch."""
import subprocess
import sys

import numpy as np
import pytest

import cnnkit
from cnnkit import functional as F

from helpers import require


def test_threadpoolctl_sees_and_limits_cnnkit_openmp():
    threadpoolctl = require("threadpoolctl")
    if not cnnkit._kernels.build_info()["openmp"]:
        pytest.skip("built without OpenMP")
    F.relu(np.ones(3))                       # the runtime is loaded
    info = threadpoolctl.threadpool_info()
    assert any(p["user_api"] == "openmp" for p in info), info
    before = cnnkit._ops.thread_policy()["limit"]
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cnnkit.get_num_threads() == 1
    assert cnnkit._ops.thread_policy()["limit"] == before


SCRIPT = """
import sys
import numpy as np
order = sys.argv[1]
if order == "torch-first":
    import torch
    import cnnkit
else:
    import cnnkit
    import torch
from cnnkit import functional as F, reference as R
torch.set_num_threads(2)
cnnkit.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3, 12, 12))
w = rng.standard_normal((5, 3, 3, 3))
for _ in range(3):
    ours = F.conv2d(x, w, padding=1)
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x),
                                        torch.from_numpy(w), padding=1)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours, R.conv2d(x, w, padding=1), rtol=1e-12,
                               atol=1e-12)
print("coexist ok")
"""


@pytest.mark.parametrize("order", ["torch-first", "cnnkit-first"])
def test_pytorch_and_cnnkit_in_one_process(order, tmp_path):
    require("torch")
    script = tmp_path / "coexist.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), order],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "coexist ok" in proc.stdout


def test_weights_from_pytorch_give_the_same_logits():
    torch = require("torch")
    from torch import nn
    from cnnkit import layers as L
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 2 * 2, 5)).double()
    model = cnnkit.Sequential([L.Conv2D(4, 3, padding=1), L.ReLU(),
                               L.MaxPool2D(2), L.Conv2D(6, 3), L.ReLU(),
                               L.Flatten(), L.Dense(5)],
                              input_shape=(1, 8, 8), dtype="float64")
    model.set_weights([t.detach().numpy() for t in net.state_dict().values()])
    assert list(model.state_dict()) == list(net.state_dict())
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-12, atol=1e-12)
