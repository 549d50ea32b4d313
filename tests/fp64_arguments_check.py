"""Child process of tests/test_triton_compile.py: every kernel of the Triton plans (fused and scores path,
swav-1gpu bf16, as an sm_90 with 132 SMs through the null driver) compiled again with its float arguments
typed fp64, as torch.compile's wrapper (``wrap_triton``) passes them; prints one line per kernel,
"ok NAME" or "FAIL NAME: error". On the H200 (torch 2.11, triton 3.6) the kernels that kept an fp32 loop
variable updated from such an argument failed to compile under torch.compile."""
import torch

from swav_kernels.bench import null_driver

null_driver.activate((9, 0), 132)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from swav_kernels import loss as loss_module  # noqa: E402
from swav_kernels.bench.host import _step  # noqa: E402
from swav_kernels.bench.shapes import NAMED_SHAPES  # noqa: E402

seen = set()
for path in ("fused", "scores"):
    loss_module._PREPARED.clear()
    _step(NAMED_SHAPES["swav-1gpu"], path, "cpu", torch.bfloat16)()
    (plan,) = loss_module._PREPARED.values()
    for launch in plan.forward_launches + plan.backward_launches:
        source = launch.compiled.src
        floats = [name for name, kind in source.signature.items() if kind == "fp32"]
        if source.fn.__name__ in seen or not floats:
            continue
        seen.add(source.fn.__name__)
        signature = {name: "fp64" if kind == "fp32" else kind for name, kind in source.signature.items()}
        try:
            triton.compile(ASTSource(source.fn, signature, source.constants, source.attrs),
                           target=GPUTarget("cuda", 90, 32))
            print(f"ok {source.fn.__name__}", flush=True)
        except Exception as error:  # noqa: BLE001 - reported to the test
            print(f"FAIL {source.fn.__name__}: {str(error).strip().splitlines()[-1][:300]}", flush=True)
