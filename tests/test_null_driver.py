"""The Triton backend's real launch path, on a machine without a GPU (``swav_kernels.bench.null_driver``).

A child process (``tests/null_launches.py``, TRITON_INTERPRET unset) compiles the kernels for the GPU
it pretends to be and launches them through Triton's C launcher into a CUDA driver that does nothing
but record each launch. These tests hold the host path's direct launches to what ``kernel[grid]``
issues (kernel, grid, block, shared memory, every parameter byte), count the launches of one
fwd+bwd at the paper's one-GPU shape with an H200's 132-SM rules (DESIGN §5a), and run the host-cost
benchmark end to end.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("triton")
if shutil.which("gcc") is None and shutil.which("cc") is None:
    pytest.skip("the null driver is built with a C compiler; none on PATH", allow_module_level=True)

HERE = pathlib.Path(__file__).parent
# DESIGN §5a's 12 and 10, less autograd's seed, and the scores path's loss sum (the fused loss forward adds
# its loss up itself)
TRITON_LAUNCHES = {"fused": 11, "scores": 8}
ROW_STEPS = {"fused": 3, "scores": 2}  # T = 3: T − 1, plus one for the fused codes' row normalisation


def child_env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONSAFEPATH"] = "0"
    return env


def run_child(capability, sms, shapes):
    command = [sys.executable, str(HERE / "null_launches.py"), *map(str, capability), str(sms), ",".join(shapes)]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def h200():
    return run_child((9, 0), 132, ["tiny", "swav-1gpu"])


def test_direct_launches_equal_what_kernel_grid_issues(h200):
    assert len(h200["same_launch"]) >= 30
    for launch in h200["same_launch"]:
        assert launch["parameter_bytes"] >= 40, launch  # the parameters were recorded and compared
        assert launch["equal"], launch


def test_later_calls_issue_the_first_calls_kernels(h200):
    for label, calls in h200["calls"].items():
        assert calls["first"] == calls["later"], label
        assert calls["per_call_later"] == len(calls["first"]), label


def test_swav_1gpu_stays_within_the_launch_budget_with_132_sm_rules(h200):
    for path, budget in TRITON_LAUNCHES.items():
        calls = h200["calls"][f"swav-1gpu:{path}"]
        assert calls["per_call_later"] <= budget, calls["later"]
        assert calls["later"].count("_column_step_kernel") == 3
        assert calls["later"].count("_row_step_kernel") == ROW_STEPS[path]


def test_an_a100_takes_its_own_tables():
    a100 = run_child((8, 0), 108, ["tiny"])
    assert all(launch["equal"] for launch in a100["same_launch"])


def test_the_comparison_sees_a_changed_parameter():
    # the harness itself: the same launch with one buffer moved by 16 bytes is recorded as different
    code = """
import json, torch
from swav_kernels.bench import null_driver
null_driver.activate()
from swav_kernels.triton.launcher import Buffer
from swav_kernels.triton.scores_loss import prepare_scores_loss
s, codes, out = torch.zeros(8, 16), torch.zeros(2, 2, 16), torch.zeros(3, 16)
launch = prepare_scores_loss(8, 16, 2, 2, (0, 1), 10.0, *map(Buffer, range(5)))
tensors = (s, codes, out[0], out[1], out[2])
launch.run_tensors(tensors)
null_driver.expect_parameters(launch.compiled)
before = null_driver.launch_count()
addresses = [t.data_ptr() for t in tensors]
launch.direct(0, tuple(addresses))
addresses[2] += 16
launch.direct(0, tuple(addresses))
first, second = null_driver.launches(before)
print(json.dumps([first.parameters == second.parameters, len(first.parameters)]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    same, size = json.loads(done.stdout.strip().splitlines()[-1])
    assert size > 0 and not same


def test_host_benchmark_runs_and_reports_both_paths():
    done = subprocess.run([sys.executable, "-m", "swav_kernels.bench", "--host", "--host-calls", "20",
                           "--host-repeats", "2"], capture_output=True, text=True, env=child_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    for path, launches in (("fused", 9), ("scores", 8)):  # T = 3 at the tiny shape, no splits to merge
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(path))
        assert "µs wall" in line and f"{launches} launches" in line, line
    assert "null driver as sm_90, 132 SMs" in done.stdout


def test_torch_compile_traces_the_triton_launches():
    # Under torch.compile the losses are Triton ops (torch.library.triton_op): the graph holds each
    # launch (a triton_kernel_wrapper node), which Inductor compiles with the rest of the step.
    code = """
import json, torch
from swav_kernels.bench import null_driver
null_driver.activate()
from torch._dynamo.backends.common import aot_autograd
from swav_kernels import swav_loss
graphs = []
def record(graph, inputs):
    graphs.append([str(node.kwargs.get("kernel_idx", "")) for node in graph.graph.nodes
                   if "triton_kernel_wrapper" in str(node.target)])
    return graph.forward
z = torch.nn.functional.normalize(torch.randn(32, 16), dim=1).to(torch.bfloat16).requires_grad_()
c = torch.nn.functional.normalize(torch.randn(64, 16), dim=1).to(torch.bfloat16).requires_grad_()
step = torch.compile(lambda z, c: swav_loss(z, c, nmb_crops=8, backend="triton"),
                     backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
step(z, c).backward()
before = null_driver.launch_count()
loss = step(z, c)
loss.backward()
print(json.dumps([len(g) for g in graphs] + [null_driver.launch_count() - before]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    *graphs, launches = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(graphs) == 2, graphs  # one forward graph, one backward graph
    forward, backward = graphs
    assert forward == 2 * 3 + 2 and backward == 1  # Sinkhorn 2T + the codes' row step, loss forward; backward
    assert launches == forward + backward
