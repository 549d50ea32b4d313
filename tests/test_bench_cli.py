"""The ``swav-bench`` command end to end on the CPU: table, JSON, plots, failures, arguments."""
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys

import pytest
import torch

import swav_kernels.loss as loss
import swav_kernels.registry as registry
from kernel_oracle import OracleKernels
from swav_kernels.backend import Backend
from swav_kernels.bench.cli import main
from swav_kernels.bench.flops import matmul_flops
from swav_kernels.bench.shapes import QUICK_SHAPES, sweep_shapes
from swav_kernels.kernel_backend import KernelBackend

RECORD_KEYS = {
    "shape", "batch", "nmb_crops", "rows", "prototypes", "dim", "queue", "sweeps", "dtype", "op", "pass", "peer",
    "status", "reason", "first_call_ms", "samples_ms", "n_samples", "median_ms", "iqr_ms", "peak_bytes",
    "input_bytes", "memory_ratio_vs_reference", "speedup_vs_reference", "speedup_vs_reference_compiled",
    "speedup_vs_plain_compiled", "max_rel_err_vs_reference", "kernels", "memcpy", "memset", "flops", "tflops",
    "algorithm_flops", "algorithm_tflops", "bytes", "tbps", "pct_of_peak", "kernel_times", "kernel_times_error",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_capturing(argv):
    """(exit code, stdout, stderr) of ``swav-bench argv`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def run_in_process(argv):
    """(exit code, stdout) of ``swav-bench argv`` run in this process."""
    code, out, _ = run_capturing(argv)
    return code, out


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m swav_kernels.bench --quick`` (float32) in a fresh process, in a temp dir."""
    out = tmp_path_factory.mktemp("quick")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "swav_kernels.bench", "--quick", "--dtypes", "float32",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=out, env=env)
    return done, out, json.loads((out / "results.json").read_text())


def test_quick_run_succeeds_and_prints_the_table(quick_run):
    done, out, data = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].split()[:6] == ["shape", "dtype", "op", "pass", "peer", "median"]
    rows = [line for line in lines if line.startswith(("quick-", "k-", "rows-"))]
    assert len(rows) == len(data["results"])
    assert "peak memory is not measured on cpu" in done.stdout
    assert (out / "table.txt").read_text().strip() == done.stdout.strip()
    assert "swav-bench:" in done.stderr and "case" in done.stderr  # progress
    # the device that ran, not the CUDA version torch was built with; every file written
    device = [line for line in lines if line.startswith("device: ")]
    assert len(device) == 1 and device[0].startswith("device: cpu (") and "; CUDA " not in device[0]
    assert lines[-1].startswith("written: ") and f"{out / 'table.txt'}" in lines[-1]
    assert f"{out / 'results.json'}" in lines[-1] and f"{out / 'time_vs_k.png'}" in lines[-1]
    # the conventions are stated: what the ratio columns compare with, what the FLOP figures count
    text = done.stdout
    assert "x plain-comp" in lines[0] and "x ref-comp" in lines[0] and "useful TFLOP/s" in lines[0]
    assert "plain-compiled (torch.compile of the plain" in " ".join(text.split())
    assert "2·M·K·D" in text and "matmul_passes" in text
    assert "% peak: not computed on cpu" in text
    targets = [line for line in lines if line.startswith("target: ")]
    assert len(targets) == 14 and all("not measured in this run" in t for t in targets)
    # the per-kernel section and its ceilings need the GPU's profiler and timers
    assert ("per-kernel times, device-copy bandwidth and torch.mm at the shapes' sizes: not measured on cpu "
            "(they need the GPU's profiler and timers)") in lines
    assert "ceilings (device copy, torch.mm at the shapes' sizes): not measured on cpu" in lines


def test_quick_run_json_holds_every_sample(quick_run):
    _, _, data = quick_run
    assert data["schema"] == "swav-bench/2" and data["complete"] is True
    env = data["environment"]
    for key in ("device_name", "torch", "cuda", "triton", "git", "date", "python"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert data["settings"]["quick"] is True and data["peaks"] is None
    assert set(data["backends"]) == {"float32"}
    planned = {(c["shape"], c["op"]) for c in data["cases"]}
    assert planned == {(r["shape"], r["op"]) for r in data["results"]}
    assert {(r["shape"], r["op"]) for r in data["results"] if r["op"] != "loss"} == {
        ("quick-queue", "sinkhorn"), ("quick-queue", "scores-lse")}
    shapes = {s.name: s for s in [*QUICK_SHAPES.values(), *(s for k in ("k", "rows", "queue")
                                                              for s in sweep_shapes(k, quick=True))]}
    for r in data["results"]:
        assert RECORD_KEYS <= set(r)
        if r["peer"].endswith("-scores") and r["op"] != "loss":  # the scores path measures the loss only
            assert r["status"] == "unsupported", r
            continue
        if r["status"] == "unsupported":  # kernel backends time scoring + lse forward only
            assert r["op"] == "scores-lse" and r["pass"] == "fwd+bwd", r
            continue
        assert r["status"] == "ok", r
        assert r["n_samples"] == len(r["samples_ms"]) >= 3
        assert r["median_ms"] == pytest.approx(statistics.median(r["samples_ms"]))
        assert r["iqr_ms"] >= 0 and r["peak_bytes"] is None
        assert r["flops"] == matmul_flops(shapes[r["shape"]], r["op"], r["pass"])
        if r["peer"] != "reference":
            assert r["max_rel_err_vs_reference"] < 1e-5
    assert {r["peer"] for r in data["results"]} >= {"reference", "reference-compiled", "plain", "plain-compiled"}
    for r in data["results"]:
        assert r["kernels"] is None and r["pct_of_peak"] is None  # not counted, no peak on a CPU
        assert r["kernel_times"] is None  # no per-kernel profile on a CPU
        if r["op"] == "loss" and r["pass"] == "fwd+bwd" and r["peer"] != "plain-compiled":
            assert r["speedup_vs_plain_compiled"] > 0
    assert data["measured_peaks"] == {}
    assert data["ceilings"] == {"measured": False, "why": "not measured on cpu"}


def test_quick_run_draws_valid_pngs(quick_run):
    from matplotlib.image import imread

    _, out, data = quick_run
    assert sorted(data["plots"]) == ["time_vs_k.png", "time_vs_rows.png"]
    for name in data["plots"]:
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, channels = imread(path).shape
        assert height > 100 and width > 100 and channels in (3, 4)


@pytest.fixture
def registry_copy(monkeypatch):
    """The backend registry's tables, restored after the test (backends added here vanish)."""
    for table in ("_LOADERS", "_INSTANCES", "_LOAD_ERRORS", "_RESOLVED"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    monkeypatch.setattr(loss, "_PREPARED", {})  # swav_loss's prepared calls hold the backend they resolved
    return registry._LOADERS


class BrokenBackend(Backend):
    """A backend that runs out of memory in every operation."""

    name = "broken"

    def assignment_codes(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")

    def loss_from_embeddings(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")


def test_failing_peers_are_recorded_and_fail_the_run(tmp_path, registry_copy):
    registry_copy["broken"] = BrokenBackend
    code, text, err = run_capturing(["--quick", "--sweeps", "--dtypes", "float32", "--ops", "loss", "sinkhorn",
                                     "--peers", "reference", "broken", "--out", str(tmp_path)])
    assert code == 1  # a backend of this package failed: the run fails, and says which rows
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    status = {(r["op"], r["pass"], r["peer"]): (r["status"], r["reason"]) for r in results}
    assert len(status) == 6
    for key, (state, reason) in status.items():
        if key[2] == "reference":
            assert state == "ok"
        else:
            assert state == "failed" and reason.startswith("OutOfMemoryError: CUDA out of memory")
    assert "failed: OutOfMemoryError: CUDA out of memory" in text
    assert "swav-bench: exit 1: 3 rows of this package's backends failed: broken quick-queue float32 loss fwd: " \
           "OutOfMemoryError" in err


def test_the_plain_sinkhorn_overflow_is_reported_and_fails_nothing(tmp_path):
    # scores up to 10: exp(10 / 0.05) overflows float32 in the plain Sinkhorn, not in the reference
    code, text, err = run_capturing(["--quick", "--sweeps", "--dtypes", "float32", "--ops", "loss", "sinkhorn",
                                     "--score-scale", "10", "--peers", "reference", "plain", "--out", str(tmp_path)])
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    status = {(r["op"], r["pass"], r["peer"]): (r["status"], r["reason"]) for r in results}
    assert len(status) == 6
    overflow = ("FloatingPointError: non-finite output (NaN or inf): the plain Sinkhorn's exp(score/ε) overflows "
                "float32 once score/ε > 88.7 (here up to 200); its documented failure")
    for (op, pass_, peer), (state, reason) in status.items():
        assert (state, reason) == (("ok", None) if peer == "reference" else ("failed", overflow))
    # the reference is checked at that scale, against its float64 self, within the grown bound
    for r in results:
        if r["peer"] == "reference":
            assert r["tolerance"] == pytest.approx(max(1e-5 if r["pass"] == "fwd" else 1e-4,
                                                       8 * torch.finfo(torch.float32).eps * 10 / 0.05))
            assert r["max_rel_err_vs_reference"] <= r["tolerance"]
    assert "failed: FloatingPointError: non-finite output (NaN or inf): the plain Sinkhorn" in text
    assert "swav-bench: exit" not in err


class OffBy(Backend):
    """The reference, with its loss scaled by (1 + ``factor``): a relative error of ``factor``."""

    name = "off-by"
    factor = 0.0

    def loss_from_embeddings(self, *args, **kwargs):
        return super().loss_from_embeddings(*args, **kwargs) * (1 + self.factor)


# DESIGN §4 on the loss: 1e-5 in float32, grown to 8 ulp of max|score|/ε = 1.9e-5 here (unit scores,
# ε = 0.05: tests/problems.py::logit_tolerance); 2e-3 in bfloat16
FLOAT32_LOSS_TOLERANCE = 8 * torch.finfo(torch.float32).eps / 0.05


@pytest.mark.parametrize("dtype, factor, fails", [
    ("float32", 5e-6, False), ("float32", 4e-5, True), ("bfloat16", 1e-3, False), ("bfloat16", 4e-3, True),
])
def test_a_row_over_its_tolerance_fails_the_run_also_without_the_reference_peer(tmp_path, registry_copy, dtype,
                                                                               factor, fails):
    registry_copy["off-by"] = type("OffByThis", (OffBy,), {"factor": factor})
    code, text, err = run_capturing(["--quick", "--sweeps", "--dtypes", dtype, "--ops", "loss", "--passes", "fwd",
                                     "--peers", "off-by", "--out", str(tmp_path)])
    [record] = json.loads((tmp_path / "results.json").read_text())["results"]
    assert record["peer"] == "off-by" and record["max_rel_err_vs_reference"] == pytest.approx(factor, rel=0.05)
    assert record["tolerance"] == pytest.approx(FLOAT32_LOSS_TOLERANCE if dtype == "float32" else 2e-3)
    if not fails:
        assert code == 0 and record["status"] == "ok", err
        return
    truth = "the reference in float64" if dtype == "float32" else "the reference in float32 on the upcast inputs"
    reason = (f"WrongResult: error {record['max_rel_err_vs_reference']:.2e} vs {truth} exceeds the {dtype} value "
              f"tolerance {record['tolerance']:.2g} (DESIGN §4)")
    assert code == 1 and record["status"] == "failed" and record["reason"].startswith(reason)
    assert f"failed: {reason}" in text
    assert f"swav-bench: exit 1: 1 row of this package's backends failed: off-by quick-queue {dtype} loss fwd: " \
           f"{reason}" in err


def test_no_requested_peer_that_can_run_is_an_error(tmp_path, registry_copy):
    registry_copy["absent"] = AbsentBackend
    code, text, err = run_capturing(["--quick", "--sweeps", "--dtypes", "float32", "--peers", "absent",
                                     "absent-graph", "--out", str(tmp_path)])
    assert code == 1
    assert "backend absent not run for float32: needs a GPU" in text
    assert ("swav-bench: exit 1: no requested peer ran: absent (float32): needs a GPU; "
            "absent-graph (float32): needs a GPU") in err
    assert json.loads((tmp_path / "results.json").read_text())["results"] == []


class AbsentBackend(Backend):
    name = "absent"

    def unavailable_reason(self, device, dtype):
        return "needs a GPU"


def test_kernel_backends_are_discovered_from_the_registry(tmp_path, registry_copy):
    registry_copy["oracle"] = lambda: KernelBackend(OracleKernels())
    registry_copy["absent"] = AbsentBackend
    code, text = run_in_process(["--quick", "--sweeps", "--ops", "loss", "scores-lse",
                                 "--peers", "reference", "plain", "oracle", "oracle-scores", "oracle-graph", "absent",
                                 "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["backends"]["bfloat16"]["oracle"] is None
    assert data["backends"]["float32"]["absent"] == "needs a GPU"
    assert "backend absent not run for float32: needs a GPU" in text
    oracle = [r for r in data["results"] if r["peer"] == "oracle" and r["status"] == "ok"]
    assert {(r["dtype"], r["op"], r["pass"]) for r in oracle} == {
        (d, o, p) for d in ("float32", "bfloat16") for o, p in (("loss", "fwd"), ("loss", "fwd+bwd"),
                                                                ("scores-lse", "fwd"))}
    reference = {(r["dtype"], r["op"], r["pass"]): r for r in data["results"] if r["peer"] == "reference"}
    for r in oracle:
        assert r["status"] == "ok"
        # the oracle computes the same function: forward values and gradients agree
        assert r["max_rel_err_vs_reference"] < (1e-5 if r["dtype"] == "float32" else 1e-2)
        ref = reference[(r["dtype"], r["op"], r["pass"])]
        assert r["speedup_vs_reference"] == pytest.approx(ref["median_ms"] / r["median_ms"])
    assert not any(r["peer"] == "absent" for r in data["results"])
    # the scores path: the loss only, the same function; no CUDA graph on a CPU
    scores = {(r["dtype"], r["op"], r["pass"]): r for r in data["results"] if r["peer"] == "oracle-scores"}
    for (dtype, op, pass_), r in scores.items():
        if op == "loss":
            assert r["status"] == "ok"
            assert r["max_rel_err_vs_reference"] < (1e-5 if dtype == "float32" else 1e-2)
        else:
            assert r["status"] == "unsupported"
    assert not any(r["peer"] == "oracle-graph" for r in data["results"])
    # performed FLOPs follow each peer's algorithm: the fused path recomputes, the scores path does not
    fused = {(r["dtype"], r["op"], r["pass"]): r for r in oracle}
    loss = ("float32", "loss", "fwd+bwd")
    assert fused[loss]["algorithm_flops"] > fused[loss]["flops"] == scores[loss]["algorithm_flops"]


@pytest.mark.parametrize("argv, message", [
    (["--dtypes", "float64"], "invalid choice: 'float64'"),
    (["--ops", "attention"], "invalid choice: 'attention'"),
    (["--shapes", "swav-9000"], "unknown shape(s) ['swav-9000']"),
    (["--quick", "--shapes", "large-k"], "unknown quick shape(s) ['large-k']"),
    (["--peers", "fastest"], "unknown peer(s) ['fastest']"),
    (["--peers", "compiled"], "unknown peer(s) ['compiled']"),
    (["--min-samples", "0"], "--min-samples must be >= 1"),
    (["--rep-ms", "-1"], "--rep-ms must be >= 0"),
    (["--budget-s", "0"], "--budget-s must be > 0"),
    (["--score-scale", "0"], "--score-scale must be > 0"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--device", "meta"], "must be a cpu or cuda device"),
    (["--shapes", "--sweeps"], "nothing to run"),
    (["--batch", "3"], "unrecognized arguments: --batch 3"),
    (["--exclude-peers", "fastest"], "--exclude-peers: unknown peer(s) ['fastest']"),
    (["--cases", "tiny"], "--cases: ['tiny'] are not SHAPE:DTYPE"),
    (["--cases", "tiny:float16"], "--cases: ['tiny:float16'] are not SHAPE:DTYPE with DTYPE among --dtypes"),
    (["--quick", "--cases", "tiny:float32"], "--cases matched none"),
])
def test_argument_errors_are_argparse_errors(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: swav-bench") and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_device_without_a_gpu_is_an_argument_error(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--device", "cuda", "--out", str(tmp_path)])
    assert "no CUDA device is visible to torch" in capsys.readouterr().err


def test_from_json_redraws_table_and_plots(quick_run, tmp_path):
    """A run made elsewhere (a GPU machine without matplotlib) is rendered here; memory plots
    appear once records carry peak memory (set here to 3× the inputs, as a GPU run would have)."""
    data = json.loads(json.dumps(quick_run[2]))  # a copy: the fixture is shared
    for r in data["results"]:
        r["peak_bytes"] = 3 * r["input_bytes"]
    data["environment"]["device"] = "cuda"
    source = tmp_path / "gpu" / "results.json"
    source.parent.mkdir()
    source.write_text(json.dumps(data))
    code, text = run_in_process(["--from-json", str(source), "--out", str(tmp_path / "drawn")])
    assert code == 0
    drawn = tmp_path / "drawn"
    for name in ("time_vs_k.png", "time_vs_rows.png", "memory_vs_k.png", "memory_vs_rows.png"):
        assert (drawn / name).read_bytes()[:8] == PNG_SIGNATURE
    assert json.loads((drawn / "results.json").read_text())["results"] == data["results"]
    first = data["results"][0]
    assert f"{3 * first['input_bytes'] / 2**20:.1f}" in text.splitlines()[2]
    assert "is not in the table of known devices" in text  # peaks were None in the source run


def test_from_json_missing_file_is_an_argument_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--from-json", str(tmp_path / "none.json")])
    assert exit_info.value.code == 2 and "--from-json: no such file" in capsys.readouterr().err


def test_cases_and_excluded_peers_narrow_the_plan(tmp_path):
    code, _ = run_in_process(["--shapes", "tiny", "--sweeps", "--ops", "loss", "--passes", "fwd+bwd",
                              "--dtypes", "bfloat16", "float32", "--cases", "tiny:float32",
                              "--exclude-peers", "reference-compiled", "plain-compiled", "--compile-backend", "eager",
                              "--warmup-ms", "0", "--rep-ms", "0", "--min-samples", "1", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {(r["shape"], r["dtype"], r["op"], r["pass"]) for r in results} == {("tiny", "float32", "loss", "fwd+bwd")}
    peers = {r["peer"] for r in results}
    assert {"reference", "plain"} <= peers and not peers & {"reference-compiled", "plain-compiled"}
