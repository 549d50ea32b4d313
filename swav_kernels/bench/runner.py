"""Run benchmark cases: every peer on every pass of a case, measured and compared.

Each (case, pass, peer) gives one record (a flat dict, as written to the JSON). Every record's
outputs are compared with the case's truth (``accuracy``: the reference on the upcast inputs,
computed whichever peers run). A peer that raises (out of memory, a compile error, a failed
CUDA-graph capture, …), returns NaN/inf (the plain Sinkhorn's exp overflowing) or, for this
package's backends, misses DESIGN §4's tolerance is recorded with ``status="failed"`` and the
reason; the run goes on.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from . import accuracy
from .flops import algorithm_flops, fused_width_splits, sinkhorn_bytes, useful_flops
from .hardware import CopyRate, DevicePeaks, MatmulRate, matmul_peak_for, measure_mm_rate
from .kernel_times import PROFILED_CALLS, kernel_rows, plan_costs, profile_device_events, sum_kernel_events
from .launches import count_device_work
from .peers import GRAPH_SUFFIX, SCORES_SUFFIX, ReferencePeer, Unsupported, available_peer_names, make_peer
from .problem import make_problem
from .shapes import Case
from .targets import peer_path
from .timing import cpu_samples, cuda_samples, first_call_ms, peak_memory_bytes

# the peers every other one is compared with: record key of the speed-up -> peer
BASELINES = {"speedup_vs_reference": "reference", "speedup_vs_reference_compiled": "reference-compiled",
             "speedup_vs_plain_compiled": "plain-compiled"}


@dataclass
class Settings:
    """How to measure: device, timing budget per sample set, problem scale, peers."""

    device: torch.device
    peers: tuple[str, ...] | None = None  # None: every available peer
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_samples: int = 5
    max_samples: int = 200
    seed: int = 0
    score_scale: float = 1.0
    compile_backend: str = "inductor"
    budget_s: float | None = None
    peaks: DevicePeaks | None = None  # the datasheet's
    measured_rates: dict | None = None  # {"bfloat16"/"float32": hardware.MeasuredRate} measured at start-up
    allow_tf32: bool = False
    count_kernels: bool = True  # profile one call per record (CUDA only)
    kernel_times: bool = True  # per-kernel times of the kernel backends' fused and scores rows (CUDA only)
    measure_ceilings: bool = True  # torch.mm at each shape's product sizes (CUDA only)
    copy_rate: CopyRate | None = None  # the device copy measured at start-up
    matmul_rates: dict = field(default_factory=dict)  # (dtype, rows, D, K, TF32) -> MatmulRate, filled as measured


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _release(device: torch.device, collect: bool = False) -> None:
    """Give cached GPU memory back, so that each peer starts from the same allocator state;
    ``collect`` also breaks reference cycles (a caught exception's traceback holds tensors).
    gc.collect() takes ~0.5 s with dynamo loaded, so it runs once per case and after failures."""
    if device.type == "cuda":
        if collect:
            gc.collect()
        torch.cuda.empty_cache()


def _base_record(case: Case, pass_: str, peer: str) -> dict:
    shape = case.shape
    return {
        "shape": shape.name, "batch": shape.batch, "nmb_crops": list(shape.nmb_crops),
        "n_crops": shape.n_crops, "rows": shape.rows, "prototypes": shape.prototypes, "dim": shape.dim,
        "queue": shape.queue, "crops_for_assign": list(shape.crops_for_assign), "sweeps": list(case.sweeps),
        "dtype": case.dtype, "op": case.op, "pass": pass_, "peer": peer, "status": "ok", "reason": None,
        "first_call_ms": None, "samples_ms": [], "n_samples": 0, "median_ms": None, "iqr_ms": None,
        "peak_bytes": None, "input_bytes": None, "memory_ratio_vs_reference": None,
        **{key: None for key in BASELINES}, "max_rel_err_vs_reference": None, "tolerance": None,
        "kernels": None, "memcpy": None, "memset": None, "kernel_times": None, "kernel_times_error": None,
        "flops": None, "tflops": None, "algorithm_flops": None, "algorithm_tflops": None,
        "bytes": None, "tbps": None, "pct_of_peak": None, "peak_kind": None,
    }


class WrongResult(Exception):
    """A row of this package's backends misses the numerics contract (DESIGN §4)."""


def _check(record: dict, outputs: tuple, truth: tuple | None, settings: Settings, epsilon: float) -> None:
    """Record the error of ``outputs`` against ``truth``; raise if they are not finite, or if a
    backend of this package misses its tolerance."""
    if not all(bool(torch.isfinite(t).all()) for t in outputs):
        raise FloatingPointError(accuracy.non_finite_reason(record["peer"], settings.score_scale, epsilon))
    if truth is None:
        return
    dtype = getattr(torch, record["dtype"])
    limit = accuracy.tolerance(dtype, record["pass"], settings.allow_tf32, settings.score_scale, epsilon)
    error = accuracy.rel_err(outputs, truth)
    record.update(max_rel_err_vs_reference=error, tolerance=limit)
    if accuracy.is_ours(record["peer"]) and not error <= limit:
        raise WrongResult(f"error {error:.2e} vs {accuracy.truth_words(dtype)} exceeds the {record['dtype']} "
                          f"{'value' if record['pass'] == 'fwd' else 'gradient'} tolerance {limit:.2g} (DESIGN §4)")


def _measure(fn, record: dict, truth: tuple | None, settings: Settings, epsilon: float) -> None:
    """Fill ``record`` with one peer's measurements of ``fn`` (checked against ``truth`` first)."""
    device = settings.device
    # a CUDA-graph replay allocates nothing: its memory is what warm-up and capture (the first call) took
    graph = record["peer"].endswith(GRAPH_SUFFIX) and device.type == "cuda"
    try:
        if graph:
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        record["first_call_ms"], outputs = first_call_ms(fn, device)
        _check(record, outputs, truth, settings, epsilon)
        del outputs
        if graph:
            record["peak_bytes"] = torch.cuda.max_memory_allocated(device) - before
        else:
            record["peak_bytes"] = peak_memory_bytes(fn, device)
        if settings.count_kernels:
            work = count_device_work(fn, device)
            if work is not None:
                record.update(kernels=work.kernels, memcpy=work.memcpy, memset=work.memset)
        if device.type == "cuda":
            samples = cuda_samples(fn, device, settings.warmup_ms, settings.rep_ms,
                                   settings.min_samples, settings.max_samples)
        else:
            samples = cpu_samples(fn, settings.warmup_ms, settings.rep_ms, settings.min_samples, settings.max_samples)
    except Exception as error:  # out of memory, compile failure, unsupported input, ...
        record.update(status="failed", reason=_short(error))
    if record["status"] == "failed":  # outside the except block: the traceback is gone now
        _release(device, collect=True)
        return
    q1, median, q3 = torch.tensor(samples, dtype=torch.float64).quantile(
        torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()  # linear interpolation, as numpy
    record.update(samples_ms=samples, n_samples=len(samples), median_ms=median, iqr_ms=q3 - q1)


def _matmul_rate(settings: Settings, dtype: torch.dtype, rows: int, dim: int, prototypes: int) -> MatmulRate | None:
    """torch.mm at ``(rows × dim) @ (dim × prototypes)``, measured once per size in a run."""
    if not settings.measure_ceilings:
        return None
    key = (str(dtype), rows, dim, prototypes, settings.allow_tf32)
    if key not in settings.matmul_rates:
        try:
            settings.matmul_rates[key] = measure_mm_rate(settings.device, dtype, rows, dim, prototypes,
                                                         settings.warmup_ms, settings.rep_ms)
        except Exception:  # out of memory beside a large case: no ceiling for it
            settings.matmul_rates[key] = None
    return settings.matmul_rates[key]


def kernel_breakdown(fn, case: Case, pass_: str, settings: Settings) -> list[dict]:
    """Per-kernel time of ``fn`` (a kernel backend's fused or scores call, warmed up) over
    ``PROFILED_CALLS`` calls, with FLOPs or bytes from the Triton plan it runs (``kernel_times``)."""
    from .. import loss as loss_module

    dtype = getattr(torch, case.dtype)
    loss_module._PREPARED.clear()  # the next call prepares its plan afresh (kernels stay compiled): find it
    fn()
    plans = [p for p in loss_module._PREPARED.values() if hasattr(p, "forward_launches")]
    costs = plan_costs(plans[0], case.shape, dtype, backward=pass_ == "fwd+bwd") if len(plans) == 1 else {}
    times = sum_kernel_events(profile_device_events(fn, settings.device, PROFILED_CALLS), PROFILED_CALLS)
    shape = case.shape
    return kernel_rows(times, costs, lambda rows: _matmul_rate(settings, dtype, rows, shape.dim, shape.prototypes),
                       settings.copy_rate)


def case_truth(case: Case, problem, settings: Settings) -> tuple[dict, str | None]:
    """({pass: outputs of the reference on ``problem``'s inputs upcast (float64 for float32, float32
    for 16-bit)}, None), or ({}, why not) if it could not be computed (out of memory, ...)."""
    upcast = accuracy.upcast(problem, accuracy.truth_dtype(getattr(torch, case.dtype)))
    try:
        functions = ReferencePeer().functions(case.op, upcast)
        truth = {pass_: tuple(t.detach() for t in functions[pass_]()) for pass_ in case.passes}
    except Exception as error:
        truth, why = {}, _short(error)
    else:
        why = None
    del upcast
    _release(settings.device, collect=why is not None)
    return truth, why


def scores_path_truth(case: Case, problem, settings: Settings) -> tuple[dict, str | None]:
    """The truth of the ``<backend>-scores`` rows of a loss case: the reference's loss of the scores the
    user's matmul gives in the case's dtype (the scores path's input), upcast as ``case_truth`` upcasts,
    and its gradients chained to Z and C in that precision. The rounding of a 16-bit matmul is the
    input of this path, not its error: against ``case_truth`` a bf16 row carries it whatever the loss
    does (1.2e-2 at swav-1gpu on an H200, beside plain-compiled's 1.2e-2, over the 1e-2 gradient bound)."""
    from ..loss import swav_loss

    dtype = accuracy.truth_dtype(getattr(torch, case.dtype))
    z, c, queue, shape = problem.embeddings, problem.prototypes, problem.queue, problem.shape
    try:
        with torch.no_grad():
            scores = (z @ c.t()).to(dtype).requires_grad_(True)
            queue_scores = None if queue is None else (queue @ c.t()).to(dtype)
        loss = swav_loss(scores, nmb_crops=list(shape.nmb_crops), crops_for_assign=shape.crops_for_assign,
                         temperature=problem.temperature, epsilon=problem.epsilon,
                         sinkhorn_iterations=problem.sinkhorn_iterations, queue_scores=queue_scores,
                         backend="reference", check_finite_inputs=False)
        (grad,) = torch.autograd.grad(loss, scores)
        z_up, c_up = z.detach().to(dtype), c.detach().to(dtype)
        truth = {"fwd": (loss.detach(),), "fwd+bwd": (grad @ c_up, grad.t() @ z_up)}
        why = None
    except Exception as error:
        truth, why = {}, _short(error)
    _release(settings.device, collect=why is not None)
    return {p: t for p, t in truth.items() if p in case.passes}, why


def width_splits_of(peer: str, case: Case, dtype: torch.dtype, device: torch.device) -> dict | None:
    """The Triton fused path's parts of the width per kernel (``flops.fused_width_splits``) for a Triton peer
    that runs it; None (one part each) for every other peer."""
    if peer.removesuffix(GRAPH_SUFFIX) != "triton":
        return None
    return fused_width_splits(case.shape.dim, dtype, device)


def _derive(records: list[dict], case: Case, settings: Settings, iterations: int = 3) -> None:
    """Speed-ups against the reference, reference-compiled and plain-compiled peers, memory
    ratio against the reference; throughput: useful TFLOP/s (DESIGN §5's count, the same for
    every peer), the FLOPs the peer's algorithm performs (``flops.matmul_passes``) and their rate
    as % of the matmul peak (measured on the device where it was, else the datasheet's)."""
    dtype = getattr(torch, case.dtype)
    by_peer = {r["peer"]: r for r in records if r["status"] == "ok"}
    reference = by_peer.get("reference")
    peak = matmul_peak_for(dtype, settings.allow_tf32, settings.measured_rates, settings.peaks)
    for r in by_peer.values():
        for key, baseline in BASELINES.items():
            if baseline in by_peer:
                r[key] = by_peer[baseline]["median_ms"] / r["median_ms"]
        if reference and reference["peak_bytes"] and r["peak_bytes"] is not None:
            r["memory_ratio_vs_reference"] = r["peak_bytes"] / reference["peak_bytes"]
        seconds = r["median_ms"] / 1e3
        flops = useful_flops(case.shape, case.op, r["pass"])
        if flops is not None:
            r.update(flops=flops, tflops=flops / seconds / 1e12)
            performed = algorithm_flops(r["peer"], case.shape, case.op, r["pass"], iterations,
                                        case.dtype in ("bfloat16", "float16"),
                                        width_splits_of(r["peer"], case, dtype, settings.device))
            if performed is not None:
                r.update(algorithm_flops=performed, algorithm_tflops=performed / seconds / 1e12)
                if peak is not None:
                    r.update(pct_of_peak=100.0 * r["algorithm_tflops"] / peak[0], peak_kind=peak[1])
        else:
            moved = sinkhorn_bytes(case.shape, dtype)
            r.update(bytes=moved, tbps=moved / seconds / 1e12)
            if settings.peaks is not None:
                r.update(pct_of_peak=100.0 * r["tbps"] / settings.peaks.hbm_tbps,
                         peak_kind=f"HBM {settings.peaks.hbm_tbps:g} TB/s")


def run_case(case: Case, settings: Settings) -> list[dict]:
    """Records of every pass × peer of ``case`` (reference first), each checked against the truth."""
    dtype = getattr(torch, case.dtype)
    names, _ = available_peer_names(settings.device, dtype)
    if settings.peers is not None:
        names = [n for n in names if n in settings.peers]
    if "reference" in names:  # first: the baseline of the speed-ups
        names.remove("reference")
        names.insert(0, "reference")
    problem = make_problem(case.shape, settings.device, dtype, settings.seed, settings.score_scale,
                           sinkhorn_scores=case.op == "sinkhorn")
    truth, unchecked = case_truth(case, problem, settings) if names else ({}, None)
    scores_truth = None  # the <backend>-scores rows' own (scores_path_truth), made at the first of them
    records = []
    for name in names:
        peer_truth, peer_unchecked = truth, unchecked
        if name.endswith(SCORES_SUFFIX) and case.op == "loss":
            scores_truth = scores_truth or scores_path_truth(case, problem, settings)
            peer_truth, peer_unchecked = scores_truth
        pass_records = {p: _base_record(case, p, name) for p in case.passes}
        for r in pass_records.values():
            r["input_bytes"] = problem.input_bytes(case.op)
        records += pass_records.values()
        try:
            functions = make_peer(name, settings.compile_backend).functions(case.op, problem)
        except Unsupported as why:
            for r in pass_records.values():
                r.update(status="unsupported", reason=str(why))
            continue
        except Exception as error:
            functions = None
            for r in pass_records.values():
                r.update(status="failed", reason=_short(error))
        if functions is None:
            _release(settings.device, collect=True)
            continue
        for pass_, record in pass_records.items():
            if pass_ not in functions:
                record.update(status="unsupported", reason=f"{name} has no separate {pass_} for {case.op}")
                continue
            _measure(functions[pass_], record, peer_truth.get(pass_), settings, problem.epsilon)
            if (record["status"] == "ok" and settings.kernel_times and settings.device.type == "cuda"
                    and peer_path(name) in ("fused", "scores")):
                try:
                    record["kernel_times"] = kernel_breakdown(functions[pass_], case, pass_, settings)
                except Exception as error:
                    record["kernel_times_error"] = _short(error)
            if peer_unchecked is not None and record["status"] == "ok":
                record["reason"] = f"error not checked: the reference on upcast inputs failed ({peer_unchecked})"
            _release(settings.device)
        del functions
        _release(settings.device)
    problem_iterations = problem.sinkhorn_iterations
    del problem, truth, scores_truth
    _release(settings.device, collect=True)
    for pass_ in case.passes:
        _derive([r for r in records if r["pass"] == pass_], case, settings, problem_iterations)
    return records


def skipped_records(case: Case, settings: Settings, reason: str) -> list[dict]:
    """Records saying that ``case`` was not run, and why."""
    names, _ = available_peer_names(settings.device, getattr(torch, case.dtype))
    if settings.peers is not None:
        names = [n for n in names if n in settings.peers]
    records = []
    for name in names:
        for pass_ in case.passes:
            record = _base_record(case, pass_, name)
            record.update(status="skipped", reason=reason)
            records.append(record)
    return records


def run_cases(cases: Iterable[Case], settings: Settings) -> Iterator[list[dict]]:
    """Records case by case; once ``settings.budget_s`` has passed, the remaining cases are
    yielded as skipped (so a run always ends on time with a complete record)."""
    start = time.perf_counter()
    for case in cases:
        if settings.budget_s is not None and time.perf_counter() - start > settings.budget_s:
            yield skipped_records(case, settings, f"time budget of {settings.budget_s:g} s used up")
            continue
        yield run_case(case, settings)

