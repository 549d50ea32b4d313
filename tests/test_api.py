"""Public API: both input paths, lists, queues, dtypes, backend selection."""
import pathlib
import sys
import warnings

import pytest
import torch

import swav_kernels
from problems import make_problem, rel_err
from swav_kernels import Backend, reference as R, register_backend, sinkhorn, swapped_prediction_loss, swav_loss
from swav_kernels.registry import unregister_backend
from transcription import sinkhorn_f64, swav_loss_f64

KW = dict(temperature=0.1, epsilon=0.05, sinkhorn_iterations=3, backend="reference")


def _readme_usage_snippet() -> str:
    """The first ```python block of README.md's "## Usage" section, as written there."""
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    usage = readme.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    return usage.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_usage_snippet_computes_the_swav_loss():
    """Runs README.md's Usage snippet itself and checks its loss, its scores-path loss and the
    gradients it leaves against the float64 transcription of main_swav.py."""
    snippet = _readme_usage_snippet()
    assert "swav_loss(z, prototypes=prototypes.weight" in snippet
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "auto" on CPU tensors: the reference, said once
        exec(compile(snippet, "README.md (Usage)", "exec"), namespace)
    z, weight, loss = namespace["z"], namespace["prototypes"].weight, namespace["loss"]
    z64 = z.detach().double().requires_grad_()
    c64 = weight.detach().double().requires_grad_()
    expected = swav_loss_f64(z64 @ c64.t(), 8, (0, 1), 0.1, 0.05, 3)
    expected.backward()
    assert loss.shape == () and loss.dtype == torch.float32
    assert abs(loss.item() - expected.item()) <= 1e-5 * abs(expected.item())
    assert abs(namespace["scores_loss"].item() - expected.item()) <= 1e-5 * abs(expected.item())
    assert rel_err(z.grad, z64.grad) <= 1e-4 and rel_err(weight.grad, c64.grad) <= 1e-4


def test_scores_path_equals_embeddings_path():
    p = make_problem(n_crops=8, batch=5, prototypes=40, dim=12, queue=7)
    z = p.embeddings.clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    fused = swav_loss(z, c, nmb_crops=[2, 6], queue=p.queue, **KW)
    fused.backward()
    s = (z.detach() @ c.detach().t()).requires_grad_()
    plain = swav_loss(s, nmb_crops=[2, 6], queue_scores=p.queue_scores, **KW)
    plain.backward()
    assert torch.allclose(fused, plain, rtol=1e-6)
    assert rel_err(z.grad, s.grad @ p.prototypes) <= 1e-5
    assert rel_err(c.grad, s.grad.t() @ p.embeddings) <= 1e-5


def test_api_matches_float64_transcription():
    p = make_problem(n_crops=6, batch=4, prototypes=25, dim=8, queue=6, crops_for_assign=(1, 4))
    loss = swav_loss(p.embeddings, p.prototypes, nmb_crops=6, crops_for_assign=(1, 4), queue=p.queue, **KW)
    expected = swav_loss_f64(p.scores.double(), 6, (1, 4), 0.1, 0.05, 3, p.queue_scores)
    assert abs(loss.item() - expected.item()) <= 1e-6 * abs(expected.item())


def test_list_of_crops_equals_crop_major_tensor():
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5)
    crops = list(p.scores.split(3))
    assert torch.equal(swav_loss(crops, **KW), swav_loss(p.scores, nmb_crops=4, **KW))
    assert torch.equal(swav_loss(crops, nmb_crops=[2, 2], **KW), swav_loss(p.scores, nmb_crops=4, **KW))


def test_list_of_crops_gets_gradients():
    crops = [torch.randn(3, 7, requires_grad=True) for _ in range(3)]
    swav_loss(crops, **KW).backward()
    assert all(c.grad is not None and torch.isfinite(c.grad).all() for c in crops)


def test_queue_embeddings_equal_queue_scores():
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5, queue=4)
    a = swav_loss(p.embeddings, p.prototypes, nmb_crops=4, queue=p.queue, **KW)
    b = swav_loss(p.embeddings, p.prototypes, nmb_crops=4, queue_scores=p.queue_scores, **KW)
    assert torch.allclose(a, b)
    empty = swav_loss(p.embeddings, p.prototypes, nmb_crops=4, queue=p.queue[:, :0], **KW)
    assert torch.equal(empty, swav_loss(p.embeddings, p.prototypes, nmb_crops=4, **KW))


def test_queue_changes_the_codes():
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5, queue=20)
    with_queue = swav_loss(p.embeddings, p.prototypes, nmb_crops=4, queue=p.queue, **KW)
    without = swav_loss(p.embeddings, p.prototypes, nmb_crops=4, **KW)
    assert abs(with_queue.item() - without.item()) > 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_return_float32_loss_of_upcast_inputs(dtype):
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5, dtype=dtype)
    z = p.embeddings.clone().requires_grad_()
    c = p.prototypes.clone().requires_grad_()
    loss = swav_loss(z, c, nmb_crops=4, **KW)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z.grad.dtype == dtype and c.grad.dtype == dtype
    upcast = swav_loss(p.embeddings.float(), p.prototypes.float(), nmb_crops=4, **KW)
    assert loss.item() == pytest.approx(upcast.item(), rel=1e-6)


def test_float64_stays_float64():
    p = make_problem(n_crops=3, batch=2, prototypes=7, dim=4, dtype=torch.float64)
    assert swav_loss(p.scores, nmb_crops=3, **KW).dtype == torch.float64
    assert sinkhorn(p.scores, backend="reference").dtype == torch.float64


def test_zero_iterations_is_legal():
    p = make_problem(n_crops=3, batch=4, prototypes=7, dim=4)
    loss = swav_loss(p.scores, nmb_crops=3, **{**KW, "sinkhorn_iterations": 0})
    expected = swav_loss_f64(p.scores, 3, (0, 1), 0.1, 0.05, 0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sinkhorn_public_function():
    x = torch.randn(12, 9)
    codes = sinkhorn(x, epsilon=0.05, iterations=3, backend="reference")
    assert codes.shape == (12, 9) and codes.dtype == torch.float32
    assert rel_err(codes, sinkhorn_f64(x, 0.05, 3)) <= 1e-5
    batched = sinkhorn(torch.stack((x, -x)), backend="reference")
    assert batched.shape == (2, 12, 9)
    assert torch.allclose(batched[0], codes)


def test_auto_on_cpu_falls_back_to_reference_and_says_so_once():
    from swav_kernels import registry

    registry._WARNED.clear()
    registry._RESOLVED.clear()  # resolution (and its warning) happens once per device and dtype
    x = torch.randn(6, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = swav_loss(x, nmb_crops=2)
        second = swav_loss(x, nmb_crops=2)
    messages = [str(w.message) for w in caught if "pure-PyTorch reference" in str(w.message)]
    assert len(messages) == 1
    assert torch.equal(first, second)
    assert torch.equal(first, swav_loss(x, nmb_crops=2, backend="reference"))


def test_registered_backend_is_used_and_explicit_unavailable_backend_raises():
    calls = []

    class Counting(Backend):
        name = "counting"

        def assignment_codes(self, rows, epsilon, iterations, process_group):
            calls.append((rows.groups, rows.batch, rows.prototype_count))
            return super().assignment_codes(rows, epsilon, iterations, process_group)

    class Nowhere(Backend):
        def unavailable_reason(self, device, dtype):
            return "needs hardware this machine lacks"

    register_backend("counting", Counting)
    register_backend("nowhere", Nowhere)
    try:
        x = torch.randn(8, 5)
        assert torch.equal(swav_loss(x, nmb_crops=4, backend="counting"), swav_loss(x, nmb_crops=4, **KW))
        assert calls == [(2, 2, 5)]
        with pytest.raises(RuntimeError, match="needs hardware this machine lacks"):
            swav_loss(x, nmb_crops=4, backend="nowhere")
        assert swav_kernels.backend_status("cpu")["nowhere"] == "needs hardware this machine lacks"
    finally:
        for name in ("counting", "nowhere"):
            unregister_backend(name)


def test_loader_failure_is_reported_not_raised_at_import():
    register_backend("broken", "swav_kernels_no_such_module:Backend", auto_rank=0)
    try:
        assert "ModuleNotFoundError" in swav_kernels.backend_status("cpu")["broken"]
        with pytest.raises(RuntimeError, match="ModuleNotFoundError"):
            swav_loss(torch.randn(4, 3), nmb_crops=2, backend="broken")
    finally:
        unregister_backend("broken")


def test_non_contiguous_inputs():
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5)
    wide = torch.zeros(p.scores.shape[0], 2 * p.scores.shape[1])
    wide[:, ::2] = p.scores
    assert torch.allclose(swav_loss(wide[:, ::2], nmb_crops=4, **KW), swav_loss(p.scores, nmb_crops=4, **KW))


def test_swapped_prediction_loss_with_given_codes():
    p = make_problem(n_crops=4, batch=3, prototypes=11, dim=5, crops_for_assign=(2, 0))
    assign = p.scores.view(4, 3, -1)[[2, 0]]
    codes = R.assignment_codes_reference(assign, None, 0.05, 3)
    s = p.scores.clone().requires_grad_()
    loss = swapped_prediction_loss(list(s.split(3)), codes, (2, 0), temperature=0.1, backend="reference")
    expected = swav_loss(p.scores, nmb_crops=4, crops_for_assign=(2, 0), **KW)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    hard = torch.nn.functional.one_hot(codes.argmax(-1), 11).float()  # VISSL-style hard assignments
    assert torch.allclose(swapped_prediction_loss(p.scores, hard, (2, 0), 0.1, backend="reference"),
                          R.swapped_prediction_reference(p.scores, hard, 4, (2, 0), 0.1))
    with pytest.raises(ValueError, match="codes must hold one"):
        swapped_prediction_loss(p.scores, codes[:1], (2, 0), backend="reference")
    with pytest.raises(ValueError, match=r"V crops of the \(B, K\) shape"):
        swapped_prediction_loss(p.scores[:, :5], codes, (2, 0), backend="reference")
    with pytest.raises(ValueError, match="crops_for_assign holds"):
        swapped_prediction_loss(p.scores, codes, (2, 7), backend="reference")


@pytest.mark.parametrize("call, error", [
    (lambda x: swav_loss(x, nmb_crops=2, backend=["triton"]), TypeError),
    (lambda x: swav_loss(x, nmb_crops=2, backend="tritn"), ValueError),
    (lambda x: sinkhorn(x, backend=None), TypeError),
    (lambda x: swapped_prediction_loss(x, torch.ones(2, 3, 5) / 5, (0, 1), backend={"triton"}), TypeError),
    (lambda x: swav_kernels.SwAVLoss(nmb_crops=2, backend="tritn"), ValueError),  # at construction
    (lambda x: swav_kernels.SwAVLoss(nmb_crops=2, backend=["triton"]), TypeError),
], ids=["list", "typo", "none", "set", "module-typo", "module-list"])
def test_a_bad_backend_name_is_refused_with_the_valid_names(call, error):
    with pytest.raises(error) as caught:
        call(torch.randn(6, 5))
    assert str(caught.value).startswith("backend must be ")
    assert str(swav_kernels.backend_names()) in str(caught.value)  # ('auto', 'cuda', 'reference', 'triton')


def _entry_points():
    """{name: a call of that entry point on CPU tensors with backend="auto"}, each written on one
    line of this file: the reference fallback's warning must point at that line."""
    from swav_kernels.compat import dinov2, facebook_swav, lightly, solo_learn

    s = torch.randn(6, 5)
    codes = torch.softmax(torch.randn(2, 3, 5), dim=-1)
    z, c = torch.nn.functional.normalize(torch.randn(6, 4), dim=1), torch.randn(5, 4)
    return {
        "swav_loss": lambda: swav_loss(s, nmb_crops=2),
        "swav_loss(prototypes=)": lambda: swav_loss(z, c, nmb_crops=2),
        "sinkhorn": lambda: sinkhorn(s),
        "swapped_prediction_loss": lambda: swapped_prediction_loss(s, codes, (0, 1)),
        "SwAVLoss.forward": lambda: swav_kernels.SwAVLoss(nmb_crops=2)(z, c),
        "lightly.SwaVLoss": lambda: lightly.SwaVLoss()([s[:3], s[3:]], []),
        "solo_learn.swav_loss_func": lambda: solo_learn.swav_loss_func([s[:3], s[3:]], [codes[0], codes[1]]),
        "facebook_swav.distributed_sinkhorn": lambda: facebook_swav.distributed_sinkhorn(s),
        "dinov2.sinkhorn_knopp_teacher": lambda: dinov2.sinkhorn_knopp_teacher(s, 0.05),
    }


@pytest.mark.parametrize("entry_point", sorted(_entry_points()))
def test_the_reference_fallback_warning_points_at_the_callers_line(entry_point, monkeypatch):
    from swav_kernels import loss, registry

    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setattr(registry, "_RESOLVED", {})  # the warning comes with the first resolution,
    monkeypatch.setattr(loss, "_PREPARED", {})  # which a prepared call (of an earlier test) skips
    call = _entry_points()[entry_point]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    fallback = [w for w in caught if "using the pure-PyTorch reference" in str(w.message)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    assert (fallback[0].filename, fallback[0].lineno) == (__file__, call.__code__.co_firstlineno)


def test_the_no_kernel_backend_warning_points_at_the_callers_line(monkeypatch):
    from swav_kernels import registry

    class Nowhere(Backend):
        def unavailable_reason(self, device, dtype):
            return "needs hardware this machine lacks"

    for table in ("_LOADERS", "_AUTO_RANK", "_INSTANCES", "_RESOLVED"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setattr(registry, "_AUTO_RANK", {})
    register_backend("nowhere", Nowhere, auto_rank=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        registry.resolve_backend("auto", torch.device("cuda"), torch.float32)  # as the entry points call it
    [warning] = [w for w in caught if "no kernel backend applies" in str(w.message)]
    assert "nowhere: needs hardware this machine lacks" in str(warning.message)
    assert (warning.filename, warning.lineno) == (__file__, line)
