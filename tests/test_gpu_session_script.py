"""benchmarks/gpu_session.sh on a CPU: the GPU time is minutes, so the script must be right the
first time. Its syntax, every pytest selection it makes (each must select >= 1 test), the quick
mode's schedule against the device call, the commit it records, and a dry run of the quick mode end
to end (no build, selections collected, GPU-only tools skipped, the schedule scaled down)."""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
STATUSES = {"pass", "FAIL", "timeout", "unavailable", "skipped"}
QUICK_STEPS = ["env", "build", "gpu", "kernel-tests", "bench", "sanitizer-memcheck", "sanitizer-racecheck",
               "sanitizer-synccheck", "sanitizer-initcheck", "train-1gpu", "train-2gpu-torchrun"]
# the device call (benchmarks/gpu_session.sh's header): timeout_s 270 at least, the machine's start
# not counted in it; measured on an H200 (issue 17): the build 22 s, the kernel tests alone 57 s (-n 12)
CALL_TIMEOUT_S = 270
MEASURED_S = {"build": 22, "kernel-tests": 97}  # H200: b05a185, 208b416
# the trainer's dependencies: without them (CI's torch 2.13 leg) its steps are "unavailable"
TRAINER = all(importlib.util.find_spec(m) is not None for m in ("torchvision", "timm", "sklearn"))
TRAIN_STATUS = "pass" if TRAINER else "unavailable"
# what the device tool returns from $OUT: at most 8 files, at most 2 folders down, plain names
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _selections() -> dict[str, list[str]]:
    done = subprocess.run(["bash", str(SCRIPT), "selections"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    selections = {}
    for line in done.stdout.splitlines():
        name, *args = line.split("\t")
        selections[name] = args
    return selections


SELECTIONS = _selections()


def test_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_usage_and_help():
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage:" in done.stderr
    done = subprocess.run(["bash", str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "carry=[\".gpu-commit\"]" in done.stdout and "at most 8 files" in done.stdout


def test_every_pytest_run_uses_a_declared_selection():
    """All pytest invocations go through the SEL_* arrays that `selections` prints, so the
    collection test below covers every test selection the script makes."""
    text = "\n".join(line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert set(SELECTIONS) == set(re.findall(r"^(SEL_[A-Z_]+)=\(", text, re.M))
    runs = [line for line in text.splitlines() if re.search(r"-m pytest\b", line)]
    assert runs and all('"${sel[@]}"' in line for line in runs), runs
    used = re.findall(r"pytest_step \S+ \S+ (\S+)", text) + re.findall(r'sanitizer_step "\$tool" (\S+)', text)
    used += re.findall(r"count_collected (SEL_\S+)", text)
    assert used and set(used) <= set(SELECTIONS), used
    assert '-k "shape1 and float16"' not in SCRIPT.read_text()  # issue 13 item 14: it selects no test


@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_selection_collects_tests(name):
    args = SELECTIONS[name]
    assert args, f"{name} is empty"
    # the script's own environment: the installed package, not the source tree
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert done.returncode == 0, f"{name} {args}: pytest exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    assert len(ids) >= 1, f"{name} {args} selects no test"
    if name.startswith("SEL_SANITIZER"):
        # the sanitizers check the CUDA kernels, and only them: small, GPU-marked kernel tests
        assert all(i.startswith(("tests/test_cuda_kernels.py::", "tests/test_cuda_loss.py::")) for i in ids)
        assert any(i.startswith("tests/test_cuda_kernels.py::") for i in ids)
        assert len(ids) <= 100, f"{len(ids)} tests would take too long under racecheck"
    if name == "SEL_SANITIZER_HEAVY":  # racecheck and initcheck: each CUDA kernel once, nothing else
        tests = {i.split("::")[1].split("[")[0] for i in ids}
        assert len(tests) == len(ids)  # one test each: the Sinkhorn's three kernels run in one
        assert tests == {"test_sinkhorn_steps", "test_swapped_loss", "test_ragged_scale_gradients",
                         "test_ragged_shift_queue"}


def _schedule() -> tuple[dict, dict[str, tuple[int, int]]]:
    done = subprocess.run(["bash", str(SCRIPT), "schedule"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    head, *phases = done.stdout.splitlines()
    words = head.split()
    totals = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    return totals, {name: (int(limit), int(floor)) for name, limit, floor in (p.split() for p in phases)}


def test_the_quick_schedule_fits_one_device_call():
    """Phases one after another, each within its limit and never into the floors of those after it:
    the floors and the packing fit the script's budget, which ends inside the call's timeout with a
    margin for the kill grace of the last step and the packing; the measured steps fit their floors."""
    totals, phases = _schedule()
    assert list(phases) == ["build", "gpu", "kernel-tests", "bench", "checks"]
    assert sum(floor for _, floor in phases.values()) + totals["pack"] <= totals["budget"]
    assert totals["budget"] + 5 + 2 * totals["pack"] <= CALL_TIMEOUT_S
    assert all(floor <= limit for limit, floor in phases.values())
    for step, seconds in MEASURED_S.items():
        assert phases[step][1] >= 1.1 * seconds, (step, phases[step], seconds)
    header = SCRIPT.read_text()
    assert f"timeout_s={CALL_TIMEOUT_S}" in header and f"ends within {totals['budget']} s" in header


def _git(folder, *args) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def _commit_of_copy(project: pathlib.Path) -> str:
    done = subprocess.run(["bash", str(project / "benchmarks" / "gpu_session.sh"), "commit"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_is_the_projects_never_an_enclosing_repositorys(tmp_path):
    _git(tmp_path, "init", "-q")  # the device copy sat inside another repository (issue 17)
    (tmp_path / "README").write_text("x\n")
    _git(tmp_path, "add", "README")
    _git(tmp_path, "commit", "-q", "-m", "enclosing")
    project = tmp_path / "copy"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(SCRIPT, project / "benchmarks" / "gpu_session.sh")
    assert _commit_of_copy(project) == "none (neither a git checkout of this folder nor a .gpu-commit)"
    (project / ".gpu-commit").write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert _commit_of_copy(project) == "0123456789abcdef0123456789abcdef01234567 (.gpu-commit)"
    (project / ".gpu-commit").write_text("HEAD\n")
    assert _commit_of_copy(project) == "none (.gpu-commit holds no commit)"
    _git(project, "init", "-q")
    _git(project, "add", "benchmarks")
    _git(project, "commit", "-q", "-m", "own")
    assert _commit_of_copy(project) == f"{_git(project, 'rev-parse', 'HEAD')} (git)"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])}
    start = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), "quick", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=170)
    return done, out, time.monotonic() - start


def _summary(out: pathlib.Path) -> dict[str, tuple[str, str]]:
    return {name: (status, note) for name, (status, note, _) in _timed_summary(out).items()}


def _timed_summary(out: pathlib.Path) -> dict[str, tuple[str, str, tuple | None]]:
    """{step: (status, note, (start, seconds, limit) or None where it ran no command)}."""
    rows = {}
    for line in (out / "summary.txt").read_text().splitlines():
        if line.startswith("#") or line.startswith("step "):
            continue
        name, status, _rc, secs, start, limit, *note = line.split()
        timing = None if start == "-" else (int(start), int(secs), int(limit))
        rows[name] = (status, " ".join(note), timing)
    return rows


def test_dry_run_finishes_in_time_and_passes(dry_run):
    done, out, seconds = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert seconds < 120, f"the dry run took {seconds:.0f} s"
    rows = _summary(out)
    assert list(rows) == QUICK_STEPS
    assert all(status in STATUSES for status, _ in rows.values()), rows
    assert not any(status in ("FAIL", "timeout") for status, _ in rows.values()), rows
    assert rows["env"][0] == "pass" and rows["build"][0] == "skipped" and rows["gpu"][0] == "skipped"
    assert rows["bench"][0] == "pass" and rows["train-1gpu"][0] == TRAIN_STATUS
    assert rows["kernel-tests"][0] == "pass" and "dry run: collected" in rows["kernel-tests"][1]
    for tool in ("memcheck", "racecheck", "synccheck", "initcheck"):
        status, note = rows[f"sanitizer-{tool}"]
        assert status in ("unavailable", "skipped"), (tool, status)  # never a pass without running
        assert re.search(r"selection collects [1-9]\d* tests", note), note
    assert rows["train-2gpu-torchrun"][0] == ("skipped" if TRAINER else "unavailable")
    assert (out / "summary.txt").read_text() in done.stdout


def test_dry_run_keeps_the_schedule(dry_run):
    """The quick schedule, scaled to the dry run's budget: the kernel tests first and alone, then the
    bench alone, then the checks; each step within its limit, every limit within its scaled phase."""
    _, out, _ = dry_run
    totals, phases = _schedule()
    scale = totals["dry-budget"] / totals["budget"]
    timed = {name: timing for name, (_, _, timing) in _timed_summary(out).items() if timing is not None}
    assert {"kernel-tests", "bench"} <= set(timed), timed
    for name, (start, seconds, limit) in timed.items():
        phase = name if name in phases else "checks"
        assert limit <= phases[phase][0] * scale + 1, (name, limit)
        assert seconds <= limit + 5, (name, seconds, limit)  # killed at its limit at the latest
        assert start + limit <= totals["dry-budget"], (name, start, limit)
    tests_start, tests_seconds, _ = timed["kernel-tests"]
    bench_start, bench_seconds, _ = timed["bench"]
    assert tests_start + tests_seconds <= bench_start  # the kernel tests first, and alone
    for name, (start, seconds, _) in timed.items():
        if name not in ("kernel-tests", "bench"):
            assert start >= bench_start + bench_seconds, name  # the checks after both


def test_dry_run_output_fits_the_device_tool(dry_run):
    _, out, _ = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["env.txt", "logs.tar.gz", "results.json", "summary.txt", "table.txt"]
    assert len(files) <= 8
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(OUT_NAME.match(part) for part in rel.parts), rel
    env = (out / "env.txt").read_text()
    assert "command: bash benchmarks/gpu_session.sh quick --dry-run" in env and "commit: " in env
    assert "torch" in env
    table = (out / "table.txt").read_text()
    assert "target: [triton] tiny bf16 fwd+bwd eager <= 0.25 ms" in table and "device: cpu (" in table
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert {(r["shape"], r["dtype"]) for r in results["results"]} == {("tiny", "bfloat16"), ("tiny", "float32")}
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    trainer_logs = ("logs/train-1gpu.log", "train-1gpu/log.csv") if TRAINER else ()
    for name in ("logs/env.txt", "logs/bench.log", "logs/kernel-tests.log", "bench/results.json", *trainer_logs):
        assert name in names, sorted(names)
    assert not any(n.endswith(".pt") for n in names)


# ---- the GPU path's bookkeeping, with stand-ins for the GPU machine's tools ---------------------------
FAKE_PYTHON = r"""#!/usr/bin/env bash
# stand-in for the GPU machine's python3: real for collection and probes, canned for GPU work
real=REAL_PYTHON
case "$1 $2" in
  "-m pip") echo "Successfully installed swav-kernels"; exit 0 ;;
  "-m swav_kernels.info") echo "swav_kernels info: cuda extension built"; exit 0 ;;
  "-m swav_kernels.train") echo "epoch 1/1  loss 3.7000  lr 0.6  5000 images/s"; exit 0 ;;
  "-m torch.distributed.run") echo "epoch 1/1  loss 3.8000  lr 0.6  9000 images/s"; exit 0 ;;
  "-m swav_kernels.bench")
    while [[ $# -gt 0 && "$1" != --out ]]; do shift; done
    mkdir -p "$2"; echo '{"complete": true, "results": []}' > "$2/results.json"
    printf 'shape dtype\nswav-1gpu bfloat16 loss fwd+bwd triton 0.9  ok\ntarget: a <= 1 ms: triton 0.9 ms met\ntarget: b <= 2 ms: cuda 3 ms MISSED\n' > "$2/table.txt"
    exit 0 ;;
  "-m pytest")
    for a in "$@"; do [[ "$a" == --collect-only ]] && exec "$real" "$@"; done
    echo "12 passed, 1 skipped in 3.21s"; exit 0 ;;
esac
for a in "$@"; do
  if [[ "$a" == *"torch.cuda.is_available(), "* ]]; then echo "NVIDIA H200 (9, 0) 2 devices"; exit 0; fi
done
exec "$real" "$@"
"""
FAKE_SANITIZER = r"""#!/usr/bin/env bash
echo "compute-sanitizer $*"
tool=$2; shift 2
case "$tool" in
  memcheck) echo "12 passed in 2.00s"; echo "========= ERROR SUMMARY: 3 errors"; exit 99 ;;
  racecheck) echo "========= Error: Device not supported"; exit 1 ;;
  synccheck) echo "12 passed in 2.00s"; echo "========= ERROR SUMMARY: 0 errors"; exit 0 ;;
  initcheck) echo "no tests ran in 0.10s"; echo "========= ERROR SUMMARY: 0 errors"; exit 5 ;;
esac
"""
FAKE_NVIDIA_SMI = r"""#!/usr/bin/env bash
if [[ "$1" == -L ]]; then echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"; echo "GPU 1: NVIDIA H200 (UUID: GPU-1)"; exit 0; fi
echo "NVIDIA H200, 580.159.04, 143771 MiB"
"""


def test_gpu_mode_records_each_outcome(tmp_path):
    """quick mode, not a dry run, on stand-ins: a sanitizer that finds errors fails, one the device
    refuses is unavailable (not a pass), a selection that collects nothing fails, two GPUs run torchrun."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python3", FAKE_PYTHON.replace("REAL_PYTHON", sys.executable)),
                       ("compute-sanitizer", FAKE_SANITIZER), ("nvidia-smi", FAKE_NVIDIA_SMI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": str(bin_dir / "python3"),
           "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    env.pop("GPU_SESSION_DRY_RUN", None)
    done = subprocess.run(["bash", str(SCRIPT), "quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=170)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # some steps failed
    rows = _summary(out)
    assert list(rows) == QUICK_STEPS
    status = {name: s for name, (s, _) in rows.items()}
    assert status == {"env": "pass", "build": "pass", "gpu": "pass", "bench": "pass", "kernel-tests": "pass",
                      "sanitizer-memcheck": "FAIL", "sanitizer-racecheck": "unavailable",
                      "sanitizer-synccheck": "pass", "sanitizer-initcheck": "FAIL", "train-1gpu": TRAIN_STATUS,
                      "train-2gpu-torchrun": TRAIN_STATUS}, rows
    assert "12 passed, 1 skipped" in rows["kernel-tests"][1]
    assert "ERROR SUMMARY: 3 errors (sanitizer errors)" in rows["sanitizer-memcheck"][1]
    assert "refused compute-sanitizer" in rows["sanitizer-racecheck"][1]
    assert "collected no test" in rows["sanitizer-initcheck"][1]
    assert "target lines met: 1 of 2" in rows["bench"][1]
    assert "swav_kernels info" in (out / "env.txt").read_text()
    assert "# 11 of 11 steps recorded; 2 failed or timed out" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["env.txt", "logs.tar.gz", "results.json", "summary.txt",
                                                     "table.txt"]
    # heavy sanitizers on the small selection, the others on the wider one
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {tool: tar.extractfile(f"logs/sanitizer-{tool}.log").read().decode()
                for tool in ("memcheck", "racecheck", "synccheck", "initcheck")}
    for tool, log in logs.items():
        heavy = tool in ("racecheck", "initcheck")
        assert f"--tool {tool} " in log and (SELECTIONS["SEL_SANITIZER_HEAVY" if heavy else "SEL_SANITIZER"][-1]
                                            in log), (tool, log)
    timed = {name: timing for name, (_, _, timing) in _timed_summary(out).items() if timing is not None}
    assert timed["kernel-tests"][0] <= timed["bench"][0] <= timed["sanitizer-initcheck"][0]
    assert "commit: " in (out / "env.txt").read_text()
