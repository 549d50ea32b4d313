"""``backend="cuda"`` end to end on CPU tensors: its orchestration with torch's CPU matmuls and the
kernels of csrc/ under the emulation (cuda_emulated_backend.py), against the reference at the
DESIGN.md §4 tolerances. Chunk boundaries (budgets that cut the loss into chunks of one and two
images and recompute the queue's scores in chunks), ragged K, queue on and off, T = 0, K = 1, the
scores path, no_grad, double backward, determinism, argument errors, torch.compile and two ranks.
"""
import pytest
import torch
import torch.distributed as dist

from cuda_emulated_backend import BUDGETS, emulated_backend, requires_emulation
from multiprocess import run_in_processes
from problems import logit_tolerance, make_problem, rel_err
from swav_kernels import SwAVLoss, reference as R, sinkhorn, swapped_prediction_loss, swav_loss
from swav_kernels.backend import LossSpec
from swav_kernels.kernels import Codes, SinkhornRows

pytestmark = requires_emulation
KW = dict(temperature=0.1, epsilon=0.05)
LOSS_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-3}
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}

CASES = {  # name: make_problem kwargs, Sinkhorn iterations
    "ragged-queue": (dict(n_crops=4, batch=5, prototypes=70, dim=19, queue=7), 3),
    "no-queue": (dict(n_crops=4, batch=5, prototypes=70, dim=19), 3),
    "one-assign-crop": (dict(n_crops=3, batch=3, prototypes=65, dim=40, crops_for_assign=(2,)), 3),
    "assign-crops-reversed": (dict(n_crops=5, batch=3, prototypes=70, dim=20, crops_for_assign=(3, 0), queue=4), 3),
    "batch-1": (dict(n_crops=3, batch=1, prototypes=12, dim=4), 3),
    "k-1": (dict(n_crops=3, batch=4, prototypes=1, dim=4), 3),
    "k-1-queue": (dict(n_crops=3, batch=4, prototypes=1, dim=4, queue=3), 3),
    "overflow": (dict(n_crops=4, batch=6, prototypes=25, dim=6, scale=20.0), 3),
    "iterations-0": (dict(n_crops=4, batch=5, prototypes=70, dim=8, queue=7), 0),
    "iterations-0-one-crop": (dict(n_crops=3, batch=5, prototypes=33, dim=8, crops_for_assign=(1,)), 0),
    "iterations-1": (dict(n_crops=3, batch=2, prototypes=33, dim=8, queue=5), 1),
    "iterations-5": (dict(n_crops=4, batch=5, prototypes=70, dim=8, queue=7), 5),
}


@pytest.fixture(scope="module", params=sorted(BUDGETS))
def backend(request):
    return emulated_backend(request.param)


def _loss_and_grads(p, dtype, work_dtype, backend, iterations, from_scores):
    """(loss, gradients) through the embeddings or the scores path; inputs rounded to ``dtype`` first."""
    args = dict(nmb_crops=p.n_crops, crops_for_assign=p.crops_for_assign, sinkhorn_iterations=iterations,
                backend=backend, **KW)
    z, c = (t.to(dtype).to(work_dtype) for t in (p.embeddings, p.prototypes))
    queue = None if p.queue is None else p.queue.to(dtype).to(work_dtype)
    if from_scores:
        s = (z @ c.t()).to(dtype).to(work_dtype).requires_grad_()
        queue_scores = None if queue is None else (queue @ c.t()).to(dtype).to(work_dtype)
        loss = swav_loss(s, queue_scores=queue_scores, **args)
        loss.backward()
        return loss, s.grad
    z, c = z.clone().requires_grad_(), c.clone().requires_grad_()
    loss = swav_loss(z, c, queue=queue, **args)
    loss.backward()
    return loss, z.grad, c.grad


@pytest.mark.parametrize("from_scores", [False, True], ids=["fused", "scores"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_match_reference(backend, case, dtype, from_scores):
    kwargs, iterations = CASES[case]
    p = make_problem(**kwargs)
    ref_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    got = _loss_and_grads(p, dtype, dtype, backend, iterations, from_scores)
    expected = _loss_and_grads(p, dtype, ref_dtype, "reference", iterations, from_scores)
    assert got[0].dtype == torch.float32 and torch.isfinite(got[0])
    assert rel_err(got[0], expected[0]) <= LOSS_TOL[dtype]
    for actual, ref in zip(got[1:], expected[1:]):
        assert actual.dtype == dtype
        assert rel_err(actual, ref) <= GRAD_TOL[dtype]


def test_the_budgets_take_the_chunked_paths(backend):
    from swav_kernels.registry import resolve_backend

    impl = resolve_backend(backend, torch.device("cpu"), torch.float32)
    p = make_problem(**CASES["ragged-queue"][0])
    rows = SinkhornRows(p.embeddings, p.queue, (0, 1), 5, p.prototypes)
    sinkhorn_plan = impl.sinkhorn_plan(rows, 0.05, 3)
    loss_plan = impl.embeddings_plan(p.embeddings, p.prototypes, torch.zeros(2, 5, 70), (0, 1), 0.1)
    queue_chunk, queue_chunks, chunk_images = {"cuda_emu": (0, 0, 5), "cuda_emu_chunks1": (3, 3, 1),
                                               "cuda_emu_chunks2": (7, 1, 2)}[backend]
    assert (sinkhorn_plan.queue_chunk, len(sinkhorn_plan.queue_chunks)) == (queue_chunk, queue_chunks)
    assert loss_plan.chunk_images == chunk_images and len(loss_plan.chunks) == -(-5 // chunk_images)


@pytest.mark.parametrize("iterations", [0, 1, 3])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sinkhorn_matches_reference(backend, iterations, scale):
    x = torch.randn(2, 21, 70) * scale
    codes = sinkhorn(x, 0.05, iterations, backend=backend)
    assert codes.shape == x.shape and codes.dtype == torch.float32
    assert rel_err(codes, R.sinkhorn_reference(x.double(), 0.05, iterations)) <= logit_tolerance(x, 0.05)


def test_swapped_prediction_loss_with_given_codes(backend):
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5, crops_for_assign=(2, 0))
    hard = torch.nn.functional.one_hot(torch.randint(0, 11, (2, 3)), 11).double()  # float64 codes are cast
    s = p.scores.clone().requires_grad_()
    loss = swapped_prediction_loss(s, hard, (2, 0), 0.1, backend=backend)
    loss.backward()
    s_ref = p.scores.double().clone().requires_grad_()
    expected = swapped_prediction_loss(s_ref, hard, (2, 0), 0.1, backend="reference")
    expected.backward()
    assert rel_err(loss, expected) <= 1e-5 and rel_err(s.grad, s_ref.grad) <= 1e-4


def test_only_one_input_requires_grad_and_no_grad_skips_the_gradients(backend):
    p = make_problem(n_crops=4, batch=5, prototypes=70, dim=19, queue=7)
    args = dict(nmb_crops=4, queue=p.queue, backend=backend, **KW)
    z, c = p.embeddings.clone().requires_grad_(), p.prototypes.clone().requires_grad_()
    both = swav_loss(z, c, **args)
    both.backward()
    z_only = p.embeddings.clone().requires_grad_()
    loss = swav_loss(z_only, p.prototypes, **args)
    loss.backward()
    assert torch.equal(loss, both) and torch.equal(z_only.grad, z.grad)
    c_only = p.prototypes.clone().requires_grad_()
    swav_loss(p.embeddings, c_only, **args).backward()
    assert torch.equal(c_only.grad, c.grad)
    with torch.no_grad():
        assert torch.equal(swav_loss(z, c, **args), both)


def test_double_backward_raises_a_clear_error(backend):
    p = make_problem(n_crops=3, batch=2, prototypes=7, dim=4)
    for from_scores in (False, True):
        x = (p.scores if from_scores else p.embeddings).clone().requires_grad_()
        loss = swav_loss(x, None if from_scores else p.prototypes, nmb_crops=3, backend=backend, **KW)
        with pytest.raises(RuntimeError, match="differentiable once"):
            torch.autograd.grad(loss, x, create_graph=True)


def test_bitwise_reproducible_and_unchanged_by_deterministic_mode(backend):
    """Run to run bitwise; and identical under torch.use_deterministic_algorithms(True), which also fills
    every torch.empty with NaN: no buffer is read before the kernels or matmuls wrote it."""
    p = make_problem(n_crops=4, batch=5, prototypes=70, dim=19, queue=7)

    def run(from_scores):
        return _loss_and_grads(p, torch.float32, torch.float32, backend, 3, from_scores)

    for from_scores in (False, True):
        first, second = run(from_scores), run(from_scores)
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        torch.use_deterministic_algorithms(True)
        try:
            assert torch.utils.deterministic.fill_uninitialized_memory
            third = run(from_scores)
        finally:
            torch.use_deterministic_algorithms(False)
        assert all(torch.equal(a, b) for a, b in zip(first, third))


def test_non_finite_inputs_give_nan(backend):
    p = make_problem(n_crops=4, batch=3, prototypes=21, dim=8, queue=4)
    for value in (float("nan"), float("inf")):
        z = p.embeddings.clone()
        z[5, 2] = value
        assert torch.isnan(swav_loss(z, p.prototypes, nmb_crops=4, queue=p.queue, backend=backend, **KW))
        s = p.scores.clone()
        s[7, 3] = value
        assert torch.isnan(swav_loss(s, nmb_crops=4, backend=backend, **KW))


def test_module_with_queue_matches_reference(backend):
    """SwAVLoss: the queue fills, then joins the Sinkhorn; the one-launch shift moves the same rows."""
    p = make_problem(n_crops=8, batch=4, prototypes=70, dim=16)
    modules = {name: SwAVLoss(nmb_crops=[2, 6], queue_length=6, feat_dim=16, backend=name, **KW)
               for name in (backend, "reference")}
    for step in range(3):
        z = torch.nn.functional.normalize(p.embeddings + 0.1 * step, dim=1)
        losses = {name: module(z, p.prototypes) for name, module in modules.items()}
        assert rel_err(losses[backend], losses["reference"]) <= 1e-5
        assert torch.equal(modules[backend].queue, modules["reference"].queue)


# ---- the same argument errors as the Triton path -----------------------------------------------

def _bad_calls(impl):
    """Backend-level calls with one bad argument each (swav_loss itself validates before these)."""
    p = make_problem(n_crops=3, batch=2, prototypes=7, dim=4, queue=3)
    codes = Codes(torch.softmax(torch.randn(2, 2, 7), -1), torch.ones(2, 2), torch.zeros(2, 2, 4))
    spec = LossSpec(3, (0, 1), 0.1, 0.05, 3)
    z, c = p.embeddings, p.prototypes
    return [
        lambda: impl.assignment_codes(SinkhornRows(z, p.queue.double(), (0, 1), 2, c), 0.05, 3, None),
        lambda: impl.assignment_codes(SinkhornRows(z, p.queue[:, :, :3].contiguous(), (0, 1), 2, c), 0.05, 3, None),
        lambda: impl.assignment_codes(SinkhornRows(z, None, (0, 5), 2, c), 0.05, 3, None),
        lambda: impl.assignment_codes(SinkhornRows(z, None, (0, 1), 4, c), 0.05, 3, None),
        lambda: impl.assignment_codes(SinkhornRows(z, None, (0, 1), 2, c[:, :3].contiguous()), 0.05, 3, None),
        lambda: impl.assignment_codes(SinkhornRows(z.double(), None, (0, 1), 2, c.double()), 0.05, 3, None),
        lambda: impl.assignment_codes(SinkhornRows(z, None, (0, 1), 2, c), 1e-320, 3, None),
        lambda: impl.loss_from_embeddings(z, c.half(), codes, spec),
        lambda: impl.loss_from_embeddings(z, c, codes._replace(codes=codes.codes.half()), spec),
        lambda: impl.loss_from_embeddings(z, c, codes._replace(codes=codes.codes[:, :, :5]), spec),
        lambda: impl.loss_from_embeddings(z, c, codes._replace(codes=codes.codes[:, :, :5].contiguous()), spec),
        lambda: impl.loss_from_embeddings(z, c, codes, LossSpec(3, (0, 0), 0.1, 0.05, 3)),
        lambda: impl.loss_from_scores(p.scores, codes._replace(codes=codes.codes[:1]), spec),
        lambda: impl.loss_from_scores(p.scores[:, :5], codes, spec),
    ]


def test_argument_errors_are_those_of_the_triton_path(backend):
    pytest.importorskip("triton")
    from swav_kernels.registry import resolve_backend

    cuda = resolve_backend(backend, torch.device("cpu"), torch.float32)
    triton = resolve_backend("triton", torch.device("cpu"), torch.float32)
    for index, (cuda_call, triton_call) in enumerate(zip(_bad_calls(cuda), _bad_calls(triton))):
        errors = []
        for call in (cuda_call, triton_call):
            with pytest.raises((TypeError, ValueError)) as caught:
                call()
            errors.append(caught.value)
        assert type(errors[0]) is type(errors[1]), (index, errors)
        assert str(errors[0]) == str(errors[1]).replace("Triton", "CUDA"), (index, errors)


# ---- torch.compile -------------------------------------------------------------------------------

@pytest.mark.parametrize("from_scores", [False, True], ids=["fused", "scores"])
def test_compiled_training_step_equals_eager(backend, from_scores):
    """fullgraph=True: no graph break; aot_eager runs the same ops, so the numbers are the same bits."""
    p = make_problem(n_crops=4, batch=3, prototypes=13, dim=6, queue=2)

    def step(x, c, queue):
        if from_scores:
            return swav_loss(x, nmb_crops=4, queue_scores=queue, backend=backend, **KW)
        return swav_loss(torch.nn.functional.normalize(x, dim=1), c, nmb_crops=4, queue=queue, backend=backend, **KW)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        x = (p.scores if from_scores else p.embeddings).clone().requires_grad_()
        c = p.prototypes.clone().requires_grad_()
        loss = fn(x, c, p.queue_scores if from_scores else p.queue)
        loss.backward()
        results.append((loss, x.grad, c.grad))
    for eager, traced in zip(*results):
        assert (eager is None and traced is None) or torch.equal(eager, traced)


# ---- two ranks ------------------------------------------------------------------------------------

V, B, K, D, L, WORLD = 4, 3, 10, 5, 4, 2


def _shard(x, rank):
    return x.view(V, WORLD, B, -1)[:, rank].reshape(V * B, -1)


def _rank_loss(rank, world_size, name, iterations):
    backend = emulated_backend(name)
    p = make_problem(n_crops=V, batch=B * WORLD, prototypes=K, dim=D, queue=L * WORLD)
    z = _shard(p.embeddings, rank).clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    queue = p.queue.view(2, WORLD, L, D)[:, rank]
    loss = swav_loss(z, c, nmb_crops=V, queue=queue, process_group=dist.group.WORLD, backend=backend,
                     sinkhorn_iterations=iterations)
    loss.backward()
    x = torch.randn(11, 7, generator=torch.Generator().manual_seed(5))
    codes = sinkhorn(x[:3] if rank == 0 else x[3:], 0.05, iterations, process_group=dist.group.WORLD, backend=backend)
    return {"loss": loss.detach(), "z_grad": z.grad, "c_grad": c.grad, "codes": codes}


@pytest.mark.parametrize("iterations", [0, 3])
@pytest.mark.parametrize("name", ["cuda_emu", "cuda_emu_chunks1"])
def test_two_ranks_equal_one_process_on_concatenated_batch(name, iterations):
    results = run_in_processes(_rank_loss, WORLD, name, iterations)
    p = make_problem(n_crops=V, batch=B * WORLD, prototypes=K, dim=D, queue=L * WORLD)
    z, c = p.embeddings.clone().requires_grad_(), p.prototypes.clone().requires_grad_()
    loss = swav_loss(z, c, nmb_crops=V, queue=p.queue, backend="reference", sinkhorn_iterations=iterations)
    loss.backward()
    assert rel_err(sum(r["loss"] for r in results) / WORLD, loss) <= 1e-5
    for rank, r in enumerate(results):  # DDP averages gradients: W · one-process grad = rank's grad
        assert rel_err(r["z_grad"], WORLD * _shard(z.grad, rank)) <= 1e-4
    assert rel_err(sum(r["c_grad"] for r in results) / WORLD, c.grad) <= 1e-4
    x = torch.randn(11, 7, generator=torch.Generator().manual_seed(5))
    expected = sinkhorn(x, 0.05, iterations, backend="reference")  # 3 rows on rank 0, 8 on rank 1
    assert rel_err(torch.cat([r["codes"] for r in results]), expected) <= 1e-5


def _rank_compiled(rank, world_size, name):
    backend = emulated_backend(name)
    p = make_problem(n_crops=V, batch=B * WORLD, prototypes=K, dim=D, queue=L * WORLD)
    queue = p.queue.view(2, WORLD, L, D)[:, rank]

    def step(z, c):
        return swav_loss(z, c, nmb_crops=V, queue=queue, process_group=dist.group.WORLD, backend=backend)

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        z = _shard(p.embeddings, rank).clone().requires_grad_()
        c = p.prototypes.clone().requires_grad_()
        loss = fn(z, c)
        loss.backward()
        results.append((loss.detach(), z.grad, c.grad))
    return results


def test_two_ranks_compiled_equal_eager():
    """Under torch.compile the distributed Sinkhorn's steps are custom ops with the collectives traced
    between them (fullgraph: no graph break); each rank's numbers are eager's."""
    for eager, compiled in run_in_processes(_rank_compiled, WORLD, "cuda_emu"):
        assert all(torch.equal(a, b) for a, b in zip(eager, compiled))


@pytest.mark.parametrize("from_scores", [False, True], ids=["fused", "scores"])
def test_prepared_calls_equal_the_generic_path(backend, from_scores):
    """swav_loss prepares a call once per signature (swav_kernels/cuda/prepared.py); its numbers are
    the generic path's (the backend's three operations), bit for bit, and a repeated call reuses it."""
    from swav_kernels import loss as api
    from swav_kernels.cuda.prepared import PreparedCall
    from swav_kernels.registry import resolve_backend

    p = make_problem(n_crops=4, batch=5, prototypes=70, dim=19, queue=7)
    spec = LossSpec(4, (0, 1), 0.1, 0.05, 3)
    impl = resolve_backend(backend, torch.device("cpu"), torch.float32)
    results = []
    for run in ("prepared", "again", "generic"):
        x = (p.scores if from_scores else p.embeddings).clone().requires_grad_()
        c = None if from_scores else p.prototypes.clone().requires_grad_()
        queue, queue_scores = (None, p.queue_scores) if from_scores else (p.queue, None)
        if run == "generic":
            loss = api._generic_loss(impl, spec, x, c, queue, queue_scores)
        else:
            loss = swav_loss(x, c, nmb_crops=4, queue=queue, queue_scores=queue_scores, backend=backend, **KW)
        loss.backward()
        results.append((loss, x.grad) if from_scores else (loss, x.grad, c.grad))
    assert any(isinstance(call, PreparedCall) and call.sinkhorn.rows == 12 for call in api._PREPARED.values())
    for prepared, other in ((results[0], results[1]), (results[0], results[2])):
        assert all(torch.equal(a, b) for a, b in zip(prepared, other))
