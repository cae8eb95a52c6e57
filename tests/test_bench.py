"""The benchmark runner (``benchmarks/run.py``, ``cnnkit bench``) and the
chart extension of the docs: structure only, never timings."""
import copy
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cnnkit import bench, cli

from helpers import require

ROOT = Path(__file__).resolve().parents[1]
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _simd_path():
    from cnnkit import _kernels
    return _kernels.build_info()["simd_path"]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One run of benchmarks/run.py on tiny shapes, every group, 1 repeat:
    (results document, printed table)."""
    path = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke",
         "--threads", "1", "--json", str(path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with open(path) as f:
        return json.load(f), proc.stdout


def test_results_follow_the_schema(smoke):
    doc, _ = smoke
    assert bench.validate(doc) is doc
    assert doc["schema"] == 1
    assert doc["threads"] == 1
    assert doc["machine"]["cores"] == os.cpu_count()
    assert doc["simd_path"] == _simd_path()
    assert {r["group"] for r in doc["workloads"]} == set(bench.GROUPS)
    assert doc["memory"]["epoch_peak_bytes"] > 0
    for rec in doc["workloads"]:
        med = rec["median_s"]
        assert med["cnnkit"] > 0
        for fw in bench.FRAMEWORKS:
            if med[fw] is not None:
                assert len(rec["samples_s"][fw]) == 1
                assert med[fw] == rec["samples_s"][fw][0] > 0
        for fw in ("numpy", "torch"):
            if med[fw] is None:
                assert rec["ratios"][fw] is None
            else:
                assert rec["ratios"][fw] == pytest.approx(
                    med[fw] / med["cnnkit"], rel=1e-12)
        if rec["flops"]:
            assert rec["gflops"]["cnnkit"] == pytest.approx(
                rec["flops"] / med["cnnkit"] / 1e9)
        else:
            assert rec["gflops"]["cnnkit"] is None
        # the NumPy reference has no trainer and skips the 64-channel conv
        # and the layer grid
        if rec["group"] in ("lenet", "conv64", "zoo", "grid"):
            assert med["numpy"] is None
        else:
            assert med["numpy"] > 0
        assert (med["torch"] is not None) == HAVE_TORCH


def test_each_framework_ran_in_a_process_of_its_own(smoke):
    doc, _ = smoke
    frameworks = doc["frameworks"]
    running = [fw for fw in bench.FRAMEWORKS if frameworks[fw] is not None]
    assert running == (list(bench.FRAMEWORKS) if HAVE_TORCH
                       else ["cnnkit", "numpy"])
    pids = [frameworks[fw]["pid"] for fw in running]
    assert len(set(pids)) == len(pids)
    assert doc["parent_pid"] not in pids and os.getpid() not in pids
    assert frameworks["cnnkit"]["torch_loaded"] is False
    assert frameworks["numpy"]["torch_loaded"] is False
    if HAVE_TORCH:
        assert frameworks["torch"]["torch_loaded"] is True
        assert doc["versions"]["torch"] == frameworks["torch"]["version"]
    else:
        assert doc["versions"]["torch"] is None


def test_the_table_shows_every_workload(smoke):
    doc, out = smoke
    head = out.splitlines()[0]
    assert f"SIMD {doc['simd_path']}" in head and "1 thread(s)" in head
    assert doc["machine"]["cpu"] in head
    for group in bench.GROUPS:
        assert f"[{group}]" in out
    for rec in doc["workloads"]:
        assert rec["shape"] in out
    assert "memory: a training epoch at batch 64" in out
    assert ("PyTorch/cnnkit" in out) == HAVE_TORCH
    assert bench.format_table(doc).splitlines()[0] == head


def test_validate_rejects_a_wrong_document(smoke):
    doc, _ = smoke
    bad = copy.deepcopy(doc)
    i = next(i for i, rec in enumerate(bad["workloads"])
             if rec["ratios"].get("numpy") is not None)
    bad["workloads"][i]["ratios"]["numpy"] *= 2
    with pytest.raises(ValueError, match=rf"workloads\[{i}\]\.ratios\.numpy"):
        bench.validate(bad)
    bad = copy.deepcopy(doc)
    bad["schema"] = 2
    with pytest.raises(ValueError, match="schema"):
        bench.validate(bad)
    bad = copy.deepcopy(doc)
    del bad["workloads"][-1]["samples_s"]
    with pytest.raises(ValueError, match="samples_s"):
        bench.validate(bad)


def test_cli_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "gemm.json"
    code = cli.main(["bench", "--smoke", "--threads", "1", "--gemm",
                     "--sizes", "8", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"results: {path}" in out
    doc = bench.validate(json.loads(path.read_text()))
    assert [(r["group"], r["shape"]) for r in doc["workloads"]] == [
        ("gemm", "8^3 float32"), ("gemm", "8^3 float64")]
    assert doc["memory"] is None and doc["settings"]["groups"] == ["gemm"]


@pytest.mark.parametrize("argv, option", [
    (["--only", "nonsense"], "--only"),
    (["--repeats", "0"], "--repeats"),
    (["--threads", "two"], "--threads"),
    (["--gemm", "--only", "kernels"], "--gemm"),
    (["--sizes", "64"], "--sizes"),
    (["--only", "gemm", "--batch-sizes", "8"], "--batch-sizes"),
    (["--only", "kernels", "--images", "8"], "--images"),
    (["--json", "/nonexistent-folder/r.json"], "--json"),
])
def test_bad_options_are_usage_errors(argv, option, capsys,
                                      assert_user_error):
    try:
        code = cli.main(["bench", *argv])
    except SystemExit as exc:          # argparse
        code = exc.code
    assert_user_error(code, capsys.readouterr().err, option)


def test_run_script_reports_bad_options():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only",
         "lenet", "--repeats", "-1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--repeats" in proc.stderr and "Traceback" not in proc.stderr


def test_group_scripts_select_their_groups(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(argv) or 0)
    lenet = _load(ROOT / "benchmarks" / "bench_lenet.py", "bench_lenet")
    kernels = _load(ROOT / "benchmarks" / "bench_kernels.py",
                    "bench_kernels")
    assert lenet.main(["--images", "64", "--batch-sizes", "1", "8"]) == 0
    assert kernels.main(["--quick"]) == 0
    assert kernels.main(["--gemm", "--sizes", "64"]) == 0
    assert all(a[0] == "bench" for a in calls)
    args = [cli.build_parser().parse_args(a) for a in calls]
    configs = [bench.make_config(a) for a in args]
    assert configs[0]["groups"] == ["lenet"]
    assert configs[0]["repeats"] == 5 and configs[0]["images"] == 64
    assert configs[0]["batch_sizes"] == [1, 8]
    assert configs[1]["groups"] == ["kernels", "conv64"]
    assert configs[1]["mode"] == "quick" and configs[1]["repeats"] == 3
    assert configs[2]["groups"] == ["gemm"] and configs[2]["sizes"] == [64]


def test_onnx_benchmark_flags_a_probe_that_lost_a_core(capsys):
    """bench_onnx --plan reads the FMA probe between its networks and
    names the reads whose threads fell short of the best 1-thread rate."""
    onnx = _load(ROOT / "benchmarks" / "bench_onnx.py", "bench_onnx")
    probe = onnx._Probe(str(ROOT), 1)          # 1 thread: nothing built
    assert probe.exe is None
    probe.check("never")
    probe.summary()
    assert capsys.readouterr().out == ""
    reads = iter([(100.0, 195.0, 2), (50.0, 190.0, 2), (98.0, 110.0, 2)])
    probe.exe, probe.threads = "probe", 2
    probe.grid = types.SimpleNamespace(run_probe=lambda exe, n: next(reads))
    for when in ("before the table", "after A", "after B"):
        probe.check(when)
    probe.summary()
    out = capsys.readouterr().out
    assert "FMA probe after A: 50 GFLOP/s on 1 thread, 190 on 2" in out
    verdict = out.split("\n\n")[-1]
    assert "under 80% of 2 times the best 1-thread rate (100" in verdict
    assert "after B" in verdict and "after A" not in verdict
    assert "before the table" not in verdict


def test_workloads_of_each_mode():
    args = cli.build_parser().parse_args(["bench"])
    full = bench.workloads(bench.make_config(args))
    names = [(w.group, w.name) for w in full]
    assert ("conv64", "conv2d fwd+bwd") in names
    assert ("zoo", "Medium CNN train") in names
    assert ("zoo", "ResNet-20 train") in names
    assert ("zoo", "ResNet-20 train, Winograd") in names
    assert ("zoo", "ResNet-20 predict") in names
    assert names.count(("lenet", "LeNet-5 train")) == 3
    assert [w.shape for w in full if w.group == "gemm"] == [
        f"{n}^3 {t}" for t in ("float32", "float64")
        for n in (1024, 2048, 4096)]
    conv64 = [w for w in full if w.group == "conv64"]
    assert all(w.frameworks == ("cnnkit", "torch") for w in conv64)
    assert conv64[0].shape == "32x64x56x56 * 64x64x3x3 p1"
    quick = bench.make_config(cli.build_parser().parse_args(
        ["bench", "--quick"]))
    assert quick["groups"] == ["lenet", "kernels"]


def test_chart_extension_renders_a_png(smoke, tmp_path):
    require("matplotlib")
    require("sphinx")
    chart = _load(ROOT / "docs" / "_ext" / "benchchart.py", "benchchart")
    doc, _ = smoke
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    png = chart.render(str(path), str(tmp_path / "out" / "chart.png"))
    data = Path(png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    tables = chart.tables(doc)
    assert len(tables) == len(bench.GROUPS) + 1      # + the memory line
    assert doc["machine"]["cpu"] in chart.caption(doc)
    assert doc["date"][:10] in chart.caption(doc)


# --------------------------------------------------------------------------
# a busy machine: the detection, on made-up loads and samples
# --------------------------------------------------------------------------
def _rec(name, others=0.0, **samples):
    """A workload record with what the detection reads."""
    per_fw = {fw: None for fw in bench.FRAMEWORKS}
    per_fw.update(samples)
    return {"name": name, "shape": "2x2", "others_running": others,
            "samples_s": per_fw}


def test_an_idle_machine_is_not_flagged():
    recs = [_rec("relu", 0.0, cnnkit=[1e-3, 1.1e-3, 1.05e-3],
                 numpy=[2e-3, 2e-3, 2.9e-3]),
            _rec("gemm", 0.4, cnnkit=[5e-3, 5.2e-3, 5.1e-3])]
    assert bench.busy_reasons(2, 2, 0.3, recs) == []
    assert all(bench.row_flags(r, 2, 2) == [] for r in recs)
    # 16 cores, 4 threads: 12 free, so 11 cores of other work leave room
    assert bench.busy_reasons(16, 4, 11.0, [_rec("relu", 11.0)]) == []
    # nothing known (no load average, one repeat): nothing to say
    assert bench.busy_reasons(2, 2, None, [_rec("relu", None,
                                                cnnkit=[1e-3])]) == []


def test_a_loaded_machine_before_the_run():
    reasons = bench.busy_reasons(2, 2, 1.2, [_rec("relu")])
    assert reasons == [
        "the load average was 1.20 on 2 cores when the run started: other "
        "work held cores that the 2 thread(s) of each framework need"]
    # with one thread per framework one core is free: 1.2 fits, 1.6 not
    assert bench.busy_reasons(2, 1, 1.2, [_rec("relu")]) == []
    assert len(bench.busy_reasons(2, 1, 1.6, [_rec("relu")])) == 1


def test_other_tasks_running_beside_workloads():
    recs = [_rec("relu", 1.0), _rec("gemm", 0.2), _rec("dense fwd", 2.0)]
    assert bench.busy_reasons(2, 2, 0.0, recs) == [
        "other processes were running during 2 of 3 workloads (relu, "
        "dense fwd): 1.5 tasks on average beside the run's 2 thread(s), "
        "on 2 cores"]
    assert bench.row_flags(recs[0], 2, 2) == ["1.0 other tasks running"]
    assert bench.row_flags(recs[1], 2, 2) == []
    # the same other work fits beside one thread per framework
    assert bench.busy_reasons(2, 1, 0.0, recs[:2]) == []


def test_repeats_far_apart():
    # what a core taken away mid-run does: cnnkit's relu 100x slower once
    recs = [_rec("relu", 0.0, cnnkit=[2e-5, 2e-3, 2.1e-5],
                 numpy=[2e-5, 2e-5, 2e-5]),
            _rec("gemm", 0.0, cnnkit=[1e-3, 1.4e-3],
                 numpy=[1e-3, 1.6e-3]),
            _rec("dense fwd", 0.0, cnnkit=[1e-3, 1.2e-3, 1.1e-3])]
    assert bench.busy_reasons(2, 2, 0.0, recs) == [
        "the repeats of 2 of 3 workloads differ by more than 1.5x (relu, "
        "cnnkit: 20.0 us to 2.000 ms; gemm, NumPy: 1.000 ms to 1.600 ms)"]
    assert bench.row_flags(recs[0], 2, 2) == ["cnnkit repeats 100.0x apart"]
    assert bench.row_flags(recs[1], 2, 2) == ["NumPy repeats 1.6x apart"]
    assert bench.row_flags(recs[2], 2, 2) == []
    both = _rec("relu", 3.0, cnnkit=[1e-3, 4e-3])
    assert bench.row_flags(both, 2, 2) == ["3.0 other tasks running",
                                           "cnnkit repeats 4.0x apart"]


def test_more_threads_than_cores():
    assert bench.busy_reasons(2, 4, 0.0, [_rec("relu")]) == [
        "4 threads per framework on 2 cores: the threads compete with each "
        "other"]


def test_the_verdict_in_the_table_and_the_json(smoke):
    doc, out = smoke
    # the run's own verdict depends on its machine: only its form is fixed
    assert doc["load"]["cores"] == os.cpu_count()
    assert isinstance(doc["unreliable"], list)
    assert doc["unreliable"] == bench.assess(doc)
    assert ("warning: these timings are unreliable:" in out) \
        == bool(doc["unreliable"])
    assert all("others_running" in rec for rec in doc["workloads"])

    busy = copy.deepcopy(doc)
    busy["threads"], busy["load"]["cores"], busy["load"]["before"] = 2, 2, 2.5
    for rec in busy["workloads"]:
        rec["others_running"] = 1.0
    busy["unreliable"] = bench.assess(busy)
    bench.validate(busy)
    assert len(busy["unreliable"]) == 2
    lines = bench.format_table(busy).splitlines()
    assert lines[2].startswith("warning: the load average was 2.50 on 2 "
                               "cores when the run started")
    rows = [line for line in lines if any(
        line.startswith(rec["name"]) for rec in busy["workloads"])]
    assert len(rows) == len(busy["workloads"])
    assert all(r.endswith("! 1.0 other tasks running") for r in rows)
    assert lines[-4] == "warning: these timings are unreliable:"
    assert lines[-3] == f"  - {busy['unreliable'][0]}"

    idle = copy.deepcopy(busy)
    idle["load"]["before"] = 0.1
    for rec in idle["workloads"]:
        rec["others_running"] = 0.0
    idle["unreliable"] = bench.assess(idle)
    assert idle["unreliable"] == []
    assert "!" not in bench.format_table(idle)
    assert "warning" not in bench.format_table(idle)


def test_documents_without_the_load_still_validate(smoke):
    doc, _ = smoke
    old = copy.deepcopy(doc)
    del old["load"], old["unreliable"]
    for rec in old["workloads"]:
        del rec["others_running"]
    assert bench.validate(old) is old
    assert bench.assess(old) == [] and "!" not in bench.format_table(old)
    for key, value, where in (("unreliable", "busy", "unreliable"),
                              ("load", {"cores": 0}, "load.cores"),
                              ("load", {"cores": 2, "before": -1,
                                        "after": None}, "load.before")):
        bad = copy.deepcopy(doc)
        bad[key] = value
        with pytest.raises(ValueError, match=where):
            bench.validate(bad)
    bad = copy.deepcopy(doc)
    bad["workloads"][0]["others_running"] = "many"
    with pytest.raises(ValueError, match=r"workloads\[0\]\.others_running"):
        bench.validate(bad)
