"""Run in a child process (TRITON_INTERPRET unset) by tests/test_null_driver.py: the Triton backend's
launches through Triton's real launch path down to the null CUDA driver, as a GPU of the capability
and size given on the command line. Prints one JSON object:

- ``same_launch``: for every launch of every plan, whether the direct launch (``PreparedLaunch.direct``,
  the host path's fast path) reached the driver exactly as ``kernel[grid]`` did with the same buffers:
  kernel, grid, block, shared memory and every parameter byte;
- ``calls``: per shape and path, the kernels one fwd+bwd issues on its first call (``kernel[grid]``)
  and on later ones (direct), and the number of launches per call.

Usage: python tests/null_launches.py MAJOR MINOR SMS SHAPE[,SHAPE...] (shapes of swav_kernels.bench.shapes).
"""
import json
import sys

import torch

from swav_kernels.bench import null_driver


def main() -> None:
    major, minor, sms = (int(a) for a in sys.argv[1:4])
    shapes = sys.argv[4].split(",")
    null_driver.activate((major, minor), sms)
    from swav_kernels import loss as loss_module
    from swav_kernels.bench.host import _step
    from swav_kernels.bench.shapes import NAMED_SHAPES, QUICK_SHAPES, Shape

    known = {**NAMED_SHAPES, **QUICK_SHAPES}
    report = {"same_launch": [], "calls": {}}
    for name in shapes:
        shape = known.get(name) or Shape(name, *json.loads(name.split("=", 1)[1]))
        for path in ("fused", "scores"):
            loss_module._PREPARED.clear()
            step = _step(shape, path, "cpu", torch.bfloat16)
            first = null_driver.launch_count()
            step()  # kernel[grid]: compiles, and settles every launch on its compiled kernel
            middle = null_driver.launch_count()
            step()  # direct
            step()
            last = null_driver.launch_count()
            report["calls"][f"{name}:{path}"] = {
                "first": [launch.name for launch in null_driver.launches(first)][: middle - first],
                "later": [launch.name for launch in null_driver.launches(middle)][: (last - middle) // 2],
                "per_call_later": (last - middle) / 2,
            }
            (plan,) = loss_module._PREPARED.values()
            report["same_launch"] += compare_plan(plan, f"{name}:{path}", step.tensors, step.extra)
    print(json.dumps(report))


def compare_plan(plan, label: str, leaves, extra) -> list:
    """Each launch of ``plan`` once through ``kernel[grid]`` and once direct, with the same buffers (the
    plan's own inputs, so that Triton picks the binary the plan was compiled with)."""
    queue = extra.get("queue", extra.get("queue_scores"))
    if len(leaves) == 2:  # fused: z, queue or z, c, the loss; gradients of z and c
        z, c = leaves
        inputs = (z, z if queue is None else queue, c, torch.empty((), dtype=torch.float32))
    else:  # scores: s, queued scores or s, s; gradient of s
        (s,) = leaves
        inputs = (s, s if queue is None else queue, s)
    results = []
    forward = plan.workspace.allocate(plan.float32)
    backward = plan.backward_workspace.allocate(plan.float32)
    gradients = (torch.ones((), dtype=torch.float32),) + tuple(torch.empty_like(t) for t in leaves)
    tensors = inputs + plan.workspace.views(forward) + gradients + plan.backward_workspace.views(backward)
    addresses = tuple(t.data_ptr() for t in tensors)
    for launch in plan.forward_launches + plan.backward_launches:
        null_driver.expect_parameters(launch.compiled)
        before = null_driver.launch_count()
        launch.run_tensors(tensors)
        launch.direct(0, addresses)
        through_jit, direct = null_driver.launches(before)
        results.append({"plan": label, "kernel": launch.name, "equal": through_jit == direct,
                        "parameter_bytes": len(direct.parameters)})
    return results


if __name__ == "__main__":
    main()
