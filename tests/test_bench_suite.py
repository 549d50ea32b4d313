"""The pytest-benchmark suite in benchmarks/ runs (a tiny CPU subset of it) and records its extras."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmark_suite_quick_subset(tmp_path):
    report = tmp_path / "bench.json"
    env = {**os.environ, "SWAV_BENCH_SET": "quick"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q", "-p", "no:cacheprovider",
         "-k", "quick-queue-float32 and (reference or plain) and not compiled", f"--benchmark-json={report}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    benchmarks = json.loads(report.read_text())["benchmarks"]
    names = {b["name"] for b in benchmarks}
    # 2 peers × (loss fwd, loss fwd+bwd, sinkhorn fwd, scores-lse fwd, scores-lse fwd+bwd)
    assert len(names) == 10 and "test_swav[quick-queue-float32-loss-fwd+bwd-reference]" in names
    for b in benchmarks:
        extra = b["extra_info"]
        assert extra["device"] == "cpu" and extra["peak_bytes"] is None
        assert (extra["flops"] is None) == ("-sinkhorn-" in b["name"])
        assert b["stats"]["rounds"] == 3 and b["stats"]["median"] > 0


def test_plain_pytest_does_not_collect_the_benchmarks():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert config["testpaths"] == ["tests"]
    assert not list((ROOT / "tests").glob("**/test_swav_benchmarks.py"))
