"""``backend="triton"`` end to end against the reference and the float64 transcription.

DESIGN §4: fp32 matches float64 to 1e-5 (loss, codes) and 1e-4 (gradients); fp16/bf16 match
the reference evaluated in fp32 on the upcast inputs to 2e-3 (loss) and 1e-2 (gradients).
On CPU the kernels run in Triton's interpreter (fp32 and fp16; bf16 needs the GPU: the backend
refuses it under the interpreter, whose tl.dot on bf16 is wrong).
"""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from problems import logit_tolerance, make_problem, rel_err  # noqa: E402
from swav_kernels import SwAVLoss, sinkhorn, swapped_prediction_loss, swav_loss  # noqa: E402
from swav_kernels.registry import unavailable_reason  # noqa: E402
from swav_kernels.triton.launch import interpreting  # noqa: E402
from transcription import codes_f64, swav_loss_f64  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# tl.dot on bf16 is wrong in the interpreter, so the backend refuses bf16 there: it runs on a GPU
# only, skipped elsewhere with the backend's reason
BF16_REFUSED = unavailable_reason("triton", DEVICE, torch.bfloat16)
HALF_DTYPES = [torch.float16, pytest.param(torch.bfloat16, id="bfloat16", marks=[
    pytest.mark.gpu, pytest.mark.skipif(BF16_REFUSED is not None, reason=str(BF16_REFUSED))])]
TAU, EPS = 0.1, 0.05


def run(problem, backend, dtype, iterations=3, path="embeddings", **kwargs):
    """(loss, grad wrt inputs, grad wrt prototypes or None) of one problem on one backend."""
    z = problem.embeddings.to(DEVICE, dtype, copy=True).requires_grad_()
    c = problem.prototypes.to(DEVICE, dtype, copy=True).requires_grad_()
    args = dict(nmb_crops=problem.n_crops, crops_for_assign=problem.crops_for_assign, temperature=TAU,
                epsilon=EPS, sinkhorn_iterations=iterations, backend=backend, **kwargs)
    if path == "embeddings":
        queue = None if problem.queue is None else problem.queue.to(DEVICE, dtype)
        loss = swav_loss(z, c, queue=queue, **args)
        loss.backward()
        return loss, z.grad, c.grad
    s = (problem.embeddings @ problem.prototypes.t()).to(DEVICE, dtype).requires_grad_()
    queue_scores = None if problem.queue is None else (problem.queue @ problem.prototypes.t()).to(DEVICE, dtype)
    loss = swav_loss(s, queue_scores=queue_scores, **args)
    loss.backward()
    return loss, s.grad, None


def float64_truth(problem, iterations, path):
    z = problem.embeddings.double().requires_grad_()
    c = problem.prototypes.double().requires_grad_()
    queue_scores = None if problem.queue is None else problem.queue.double() @ c.detach().t()
    if path == "embeddings":
        loss = swav_loss_f64(z @ c.t(), problem.n_crops, problem.crops_for_assign, TAU, EPS, iterations, queue_scores)
        loss.backward()
        return loss, z.grad, c.grad
    s = (z @ c.t()).detach().requires_grad_()
    loss = swav_loss_f64(s, problem.n_crops, problem.crops_for_assign, TAU, EPS, iterations, queue_scores)
    loss.backward()
    return loss, s.grad, None


CASES = {
    "paper-crops": dict(n_crops=8, batch=4, prototypes=45, dim=16),
    "queue": dict(n_crops=8, batch=4, prototypes=45, dim=16, queue=11),
    "ragged": dict(n_crops=3, batch=5, prototypes=67, dim=13, crops_for_assign=(2, 0)),
    "one-assign-crop": dict(n_crops=4, batch=3, prototypes=20, dim=7, crops_for_assign=(1,)),
    "two-crops": dict(n_crops=2, batch=6, prototypes=19, dim=5),
    "batch-1": dict(n_crops=3, batch=1, prototypes=9, dim=4, queue=2),
    "k-1": dict(n_crops=3, batch=4, prototypes=1, dim=4),
    "overflow": dict(n_crops=4, batch=4, prototypes=25, dim=6, scale=20.0, queue=5),
    "wide-k": dict(n_crops=2, batch=3, prototypes=700, dim=8, crops_for_assign=(0,)),
}


@pytest.mark.parametrize("path", ["embeddings", "scores"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_matches_float64(case, path):
    problem = make_problem(**CASES[case])
    loss, grad_in, grad_c = run(problem, "triton", torch.float32, path=path)
    loss64, grad_in64, grad_c64 = float64_truth(problem, 3, path)
    loss_tolerance = logit_tolerance(problem.scores, EPS)  # 1e-5 unless scores overflow exp
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert rel_err(loss.cpu(), loss64) <= loss_tolerance
    assert rel_err(grad_in.cpu(), grad_in64) <= max(1e-4, loss_tolerance)
    if grad_c is not None:
        assert rel_err(grad_c.cpu(), grad_c64) <= max(1e-4, loss_tolerance)


@pytest.mark.parametrize("iterations", range(6))
def test_iterations_0_to_5(iterations):
    problem = make_problem(n_crops=4, batch=3, prototypes=21, dim=6, queue=4)
    loss, grad_z, grad_c = run(problem, "triton", torch.float32, iterations=iterations)
    loss64, grad_z64, grad_c64 = float64_truth(problem, iterations, "embeddings")
    assert rel_err(loss.cpu(), loss64) <= 1e-5
    assert rel_err(grad_z.cpu(), grad_z64) <= 1e-4
    assert rel_err(grad_c.cpu(), grad_c64) <= 1e-4


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("path", ["embeddings", "scores"])
@pytest.mark.parametrize("case", ["queue", "ragged", "overflow"])
def test_half_precision_matches_reference_on_upcast_inputs(dtype, path, case):
    problem = make_problem(**CASES[case])
    problem.embeddings = problem.embeddings.to(dtype).float()  # the same values in both runs
    problem.prototypes = problem.prototypes.to(dtype).float()
    if problem.queue is not None:
        problem.queue = problem.queue.to(dtype).float()
    loss, grad_in, grad_c = run(problem, "triton", dtype, path=path)
    ref_loss, ref_in, ref_c = run(problem, "reference", torch.float32, path=path)
    assert loss.dtype == torch.float32 and grad_in.dtype == dtype
    assert rel_err(loss, ref_loss) <= 2e-3
    assert rel_err(grad_in.float(), ref_in) <= 1e-2
    if grad_c is not None:
        assert rel_err(grad_c.float(), ref_c) <= 1e-2


@pytest.mark.skipif(not interpreting(), reason="checks the refusal of Triton's interpreter (TRITON_INTERPRET=1)")
def test_the_interpreter_refuses_bfloat16_at_every_entry_point():
    """Its tl.dot on bf16 gave a loss of ~4e11 with no error: every entry point now raises the
    backend's reason (cause and what works instead), and ``swav_kernels.info`` reports the same."""
    from swav_kernels.info import report

    problem = make_problem(n_crops=4, batch=3, prototypes=11, dim=5, dtype=torch.bfloat16)
    z, c, s = problem.embeddings, problem.prototypes, problem.scores
    codes = torch.full((2, 3, 11), 1 / 11)
    calls = {
        "swav_loss(z, prototypes=c)": lambda: swav_loss(z, c, nmb_crops=4, backend="triton"),
        "swav_loss(scores)": lambda: swav_loss(s, nmb_crops=4, backend="triton"),
        "sinkhorn": lambda: sinkhorn(s, backend="triton"),
        "swapped_prediction_loss": lambda: swapped_prediction_loss(s, codes, (0, 1), backend="triton"),
        "SwAVLoss": lambda: SwAVLoss(nmb_crops=4, backend="triton")(z, c),
    }
    reason = unavailable_reason("triton", "cpu", torch.bfloat16)
    assert "tl.dot on bfloat16" in reason and "float32 or float16" in reason and "CUDA GPU" in reason
    for name, call in calls.items():
        with pytest.raises(RuntimeError) as error:
            call()
        assert str(error.value) == f"backend='triton' cannot run torch.bfloat16 tensors on cpu: {reason}", name
    bf16_lines = report().split("backends on cpu for torch.bfloat16:\n", 1)[1].splitlines()
    assert f"  triton     unavailable: {reason}" in bf16_lines
    # float16 stays available there, and computes the reference's loss (the half-precision test above)
    assert unavailable_reason("triton", "cpu", torch.float16) is None


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_codes_match_float64(scale):
    problem = make_problem(n_crops=4, batch=6, prototypes=33, dim=8, queue=9, scale=scale)
    scores = problem.scores.to(DEVICE)
    assign = scores.view(4, 6, -1)[[0, 1]]
    rows = torch.cat((problem.queue_scores.to(DEVICE), assign), dim=1)
    codes = sinkhorn(rows, EPS, 3, backend="triton")[:, -6:]
    expected = codes_f64(problem.scores, 4, (0, 1), EPS, 3, problem.queue_scores)
    assert torch.isfinite(codes).all()
    assert rel_err(codes.cpu(), expected) <= logit_tolerance(problem.scores, EPS)


def test_deterministic_run_to_run():
    problem = make_problem(n_crops=4, batch=5, prototypes=70, dim=9, queue=6)
    first = run(problem, "triton", torch.float32)
    second = run(problem, "triton", torch.float32)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_fused_path_never_allocates_a_crops_by_prototypes_tensor():
    # DESIGN §2 allows the fused path O(|A|·B·K + (V·B + K)·D) extra memory: the codes, and per-row or
    # per-prototype vectors of width D, times the split counts (≤ MAX_SPLITS), plus the (S ≤ 8) column statistics.
    # At this shape that bound is well under the V·B·K fp32 logits it guards against.
    from torch.profiler import ProfilerActivity, profile

    from swav_kernels.triton.tiles import MAX_COLUMN_SPLITS, MAX_SPLITS

    v, b, k, d, a = 8, 96, 1024, 4, 2
    problem = make_problem(n_crops=v, batch=b, prototypes=k, dim=d)
    full_logits = v * b * k * 4
    allowed = 4 * (a * b * k + MAX_SPLITS * (v * b + k) * d + 2 * MAX_COLUMN_SPLITS * a * k + 8 * v * b)
    assert allowed < full_logits / 1.5

    def largest_allocation(backend):
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
        with profile(activities=activities, profile_memory=True) as prof:
            run(problem, backend, torch.float32)
        # leaf ops only: an op's figure includes what the ops it calls allocate
        usage = [max(e.cpu_memory_usage, getattr(e, "device_memory_usage", 0)) for e in prof.events()
                 if not e.cpu_children]
        return max(usage)

    assert largest_allocation("reference") >= full_logits  # the measurement sees the logits when they exist
    assert largest_allocation("triton") <= allowed


@pytest.mark.parametrize("path", ["embeddings", "scores"])
def test_compiled_training_step_has_no_graph_breaks(path):
    # inductor, as users compile; fullgraph=True fails on any graph break
    problem = make_problem(n_crops=4, batch=3, prototypes=13, dim=6, queue=4)
    head = torch.nn.Linear(6, 6).to(DEVICE)
    prototypes = torch.nn.Linear(6, 13, bias=False).to(DEVICE)
    queue = problem.queue.to(DEVICE)

    def forward(x):
        z = F.normalize(head(x), dim=1)
        if path == "embeddings":
            return swav_loss(z, prototypes.weight, nmb_crops=4, queue=queue, backend="triton", temperature=TAU,
                             epsilon=EPS)
        return swav_loss(prototypes(z), nmb_crops=4, queue_scores=prototypes(queue), backend="triton",
                         temperature=TAU, epsilon=EPS)

    compiled = torch.compile(forward, fullgraph=True, backend="inductor")
    x = problem.embeddings.to(DEVICE)
    loss = compiled(x)
    loss.backward()
    grads = [p.grad.clone() for p in (*head.parameters(), prototypes.weight)]
    head.zero_grad()
    prototypes.zero_grad()
    expected = forward(x)
    expected.backward()
    assert rel_err(loss, expected) <= 1e-6
    for grad, p in zip(grads, (*head.parameters(), prototypes.weight)):
        assert rel_err(grad, p.grad) <= 1e-5


@settings(max_examples=12, deadline=None)
@given(
    n_crops=st.integers(2, 5), batch=st.integers(1, 6), prototypes=st.integers(1, 40), dim=st.integers(1, 20),
    queue=st.integers(0, 8), n_assign=st.integers(1, 2), iterations=st.integers(0, 4),
    temperature=st.floats(0.05, 1.0), epsilon=st.floats(0.02, 0.5), seed=st.integers(0, 2**16),
)
def test_random_problems_agree_with_reference(n_crops, batch, prototypes, dim, queue, n_assign, iterations,
                                              temperature, epsilon, seed):
    crops = tuple(range(n_crops))[-n_assign:]
    problem = make_problem(n_crops=n_crops, batch=batch, prototypes=prototypes, dim=dim, queue=queue,
                           crops_for_assign=crops, seed=seed)
    results = {}
    for backend in ("triton", "reference"):
        z = problem.embeddings.to(DEVICE, copy=True).requires_grad_()
        c = problem.prototypes.to(DEVICE, copy=True).requires_grad_()
        queue_rows = None if problem.queue is None else problem.queue.to(DEVICE)
        loss = swav_loss(z, c, nmb_crops=n_crops, crops_for_assign=crops, temperature=temperature, epsilon=epsilon,
                         sinkhorn_iterations=iterations, queue=queue_rows, backend=backend)
        loss.backward()
        results[backend] = (loss, z.grad, c.grad)
    for actual, expected in zip(results["triton"], results["reference"]):
        # relative to the reference, or absolute where it is rounding noise around an exact 0 (K = 1: the
        # loss and its gradients vanish, and both backends return values of 1e-9 or so)
        absolute = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs().max().item()
        assert rel_err(actual, expected) <= 1e-4 or absolute <= 1e-6
