"""``swav-bench`` (or ``python -m swav_kernels.bench``): time and memory of the SwAV loss.

Runs the DESIGN §5 shapes and the K / rows / queue sweeps on every peer (reference eager and
compiled, the plain user-style loss eager and compiled, each available kernel backend's fused
path, scores path and CUDA-graph replay), prints one table with the targets of DESIGN §5a under
it, and writes ``results.json`` (every raw sample), ``table.txt`` and PNG plots. On a GPU it first
measures the bf16 (and fp32) matmul rate, which "% peak" divides by, and the device-copy bandwidth;
it counts the device kernels of every call with ``torch.profiler`` and, for the kernel backends'
fused and scores rows, times each kernel against ``torch.mm`` at the shape's own product sizes or
against the copy (``kernel_times``). ``--plan`` prints the Triton backend's launch plans compiled for
a GPU, without one (``plan``); ``--host`` measures the host cost of a call (``host``).

Every row is checked against the reference on the upcast inputs (``accuracy``, DESIGN §4). Exit
status: 0; 1 when a row of this package's backends failed (a wrong result, NaN, or an error such
as running out of memory) or when none of the requested peers could run; 2 for bad arguments.
A plain peer's failure (its Sinkhorn overflowing) is reported but fails nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import torch

from ..registry import backend_names, backend_status
from .accuracy import is_ours, truth_words
from .hardware import device_peaks, measure_copy_rate, measure_matmul_rate
from .kernel_times import format_kernel_section
from .peers import BUILTIN_PEERS, GRAPH_SUFFIX, SCORES_SUFFIX, available_peer_names
from .report import device_line, legend_lines, environment, format_table, write_json
from .targets import target_lines
from .runner import Settings, run_cases
from .shapes import NAMED_SHAPES, OPS, PASSES, QUICK_SHAPES, SWEEPS, display_order, plan_cases

DTYPES = ("float32", "bfloat16", "float16")
# (full, quick) defaults of the timing options
TIMING_DEFAULTS = {"warmup_ms": (25.0, 5.0), "rep_ms": (100.0, 20.0), "min_samples": (5, 3), "max_samples": (200, 50)}


def _peer_names() -> list[str]:
    backends = [n for n in backend_names() if n not in ("auto", *BUILTIN_PEERS)]
    return list(BUILTIN_PEERS) + [n + suffix for n in backends for suffix in ("", SCORES_SUFFIX, GRAPH_SUFFIX)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swav-bench",
        description="Time, peak memory and device kernels of the SwAV loss on every peer (reference and plain "
                    "user-style loss, eager and compiled; each available kernel backend, its scores path and its "
                    "CUDA-graph replay): one table with the DESIGN §5a targets, results.json, PNG plots.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes and short timings: the whole harness in well under a minute on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--shapes", nargs="*", metavar="NAME", default=None,
                        help=f"named shapes to run (default: all; full: {', '.join(NAMED_SHAPES)}; "
                             f"quick: {', '.join(QUICK_SHAPES)})")
    parser.add_argument("--sweeps", nargs="*", choices=SWEEPS, default=list(SWEEPS),
                        help="sweeps to run, loss op only (default: all; none with an empty list)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="operations on the named shapes")
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["float32", "bfloat16"])
    parser.add_argument("--peers", nargs="+", metavar="NAME", default=None,
                        help=f"peers to run (default: every available one; known: {', '.join(_peer_names())})")
    parser.add_argument("--exclude-peers", nargs="+", metavar="NAME", default=[],
                        help="peers not to run (e.g. reference-compiled, to save its compile time)")
    parser.add_argument("--cases", nargs="+", metavar="SHAPE:DTYPE", default=None,
                        help="run only these (shape, dtype) pairs of the plan, e.g. tiny:bfloat16 large-k:float32")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the reference-compiled and plain-compiled peers (full: "
                             "inductor; quick: aot_eager, which traces like inductor but generates no code, so the "
                             "quick run takes seconds)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; quick: 1, steadier on a busy CPU)")
    parser.add_argument("--warmup-ms", type=float, help="warm-up time per measurement (full 25, quick 5)")
    parser.add_argument("--rep-ms", type=float, help="sampling time per measurement (full 100, quick 20)")
    parser.add_argument("--min-samples", type=int, help="samples per measurement at least (full 5, quick 3)")
    parser.add_argument("--max-samples", type=int, help="samples per measurement at most (full 200, quick 50)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new case after this many seconds; the rest is recorded as skipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-scale", type=float, default=1.0,
                        help="norm of the prototypes: scores lie in [-s, s] (s > 4.4 overflows exp(s/0.05))")
    parser.add_argument("--allow-tf32", action="store_true", help="let float32 matmuls use TF32 tensor cores")
    parser.add_argument("--no-peak-measure", action="store_true",
                        help="on a GPU, skip measuring the ceilings: the matmul rate at start-up (8192³ torch.mm in "
                             "bf16, and fp32 when measured; %% peak then divides by the datasheet's figure), the "
                             "device-copy bandwidth and torch.mm at each shape's own product sizes")
    parser.add_argument("--no-kernel-count", action="store_true",
                        help="on a GPU, skip counting each call's device kernels with torch.profiler")
    parser.add_argument("--no-kernel-times", action="store_true",
                        help="on a GPU, skip the per-kernel times (torch.profiler over 5 calls) of the kernel "
                             "backends' fused and scores rows")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("swav-bench-results"),
                        help="folder for results.json, table.txt and the PNG plots")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--host", action="store_true",
                        help="measure only the host cost of one eager fwd+bwd of the Triton backend (fused and scores "
                             "paths, tiny shape); without a GPU through Triton's real launch path to a CUDA driver that "
                             "does nothing, as an sm_90 device with 132 SMs (the H200's split rules)")
    parser.add_argument("--host-profile", action="store_true", help="with --host: the top functions (cProfile)")
    parser.add_argument("--host-calls", type=int, default=500, help="with --host: calls per timed repeat")
    parser.add_argument("--host-repeats", type=int, default=9, help="with --host: timed repeats (the best is kept)")
    parser.add_argument("--plan", action="store_true",
                        help="measure nothing: print every launch of one fwd+bwd of the Triton backend as a GPU "
                             "would run it (grid, programs per SM, tiles, registers, spills, shared memory, "
                             "tensor-core instructions, FLOPs, bytes, roofline time), compiled through Triton's real "
                             "launch path to a CUDA driver that does nothing; no GPU needed (--shapes, --dtypes, "
                             "--paths, --arch, --sms, --allow-tf32, --json)")
    parser.add_argument("--paths", nargs="+", choices=("fused", "scores"), default=["fused", "scores"],
                        help="with --plan: the fused path (embeddings, prototypes) and/or the scores path")
    parser.add_argument("--arch", type=int, choices=(90, 80), default=90,
                        help="with --plan: the GPU architecture compiled for, sm_90 (H100/H200) or sm_80 (A100)")
    parser.add_argument("--sms", type=int, default=None,
                        help="with --plan: multiprocessors of that GPU (default: 132 for sm_90, 108 for sm_80)")
    parser.add_argument("--json", action="store_true", help="with --plan: print the reports as JSON")
    parser.add_argument("--from-json", type=pathlib.Path, metavar="RESULTS_JSON",
                        help="measure nothing: print the table and draw the plots of an earlier run's results.json")
    return parser


def _check_args(parser: argparse.ArgumentParser, args) -> torch.device:
    named = QUICK_SHAPES if args.quick else NAMED_SHAPES
    if args.shapes is None:
        args.shapes = list(named)
    unknown = [s for s in args.shapes if s not in named]
    if unknown:
        parser.error(f"--shapes: unknown {'quick ' if args.quick else ''}shape(s) {unknown}; choose from {list(named)}")
    for option in ("peers", "exclude_peers"):
        unknown = [p for p in getattr(args, option) or () if p not in _peer_names()]
        if unknown:
            parser.error(f"--{option.replace('_', '-')}: unknown peer(s) {unknown}; choose from {_peer_names()}")
    if args.exclude_peers:
        args.peers = [p for p in (args.peers or _peer_names()) if p not in args.exclude_peers]
    if args.cases is not None:
        pairs = [tuple(c.split(":", 1)) for c in args.cases]
        bad = [c for c, pair in zip(args.cases, pairs) if len(pair) != 2 or pair[1] not in args.dtypes]
        if bad:
            parser.error(f"--cases: {bad} are not SHAPE:DTYPE with DTYPE among --dtypes {args.dtypes}")
        args.cases = [list(pair) for pair in pairs]
    if args.compile_backend is None:
        args.compile_backend = "aot_eager" if args.quick else "inductor"
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    for name, (full, quick) in TIMING_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.warmup_ms < 0 or args.rep_ms < 0:
        parser.error("--warmup-ms and --rep-ms must be >= 0")
    if args.min_samples < 1 or args.max_samples < args.min_samples:
        parser.error("--min-samples must be >= 1 and --max-samples >= --min-samples")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    if not args.score_scale > 0:
        parser.error("--score-scale must be > 0")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be a cpu or cuda device, got {args.device!r}")
    return device


def _progress(cases):
    """Cases with a progress bar on stderr (tqdm), or one line per case where stderr is not a
    terminal (a log file) or tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        start = time.perf_counter()
        for n, case in enumerate(cases, 1):
            print(f"[{n}/{len(cases)} {time.perf_counter() - start:6.0f} s] {case.shape.name} {case.dtype} {case.op}",
                  file=sys.stderr, flush=True)
            yield case
        return
    bar = tqdm(cases, file=sys.stderr, unit="case", dynamic_ncols=True)
    for case in bar:
        bar.set_description(f"{case.shape.name} {case.dtype} {case.op}")
        yield case


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_json is not None:
        if not args.from_json.is_file():
            parser.error(f"--from-json: no such file {str(args.from_json)!r}")
        return _from_json(args)
    if args.plan:
        return _plan(parser, args)
    if args.host:
        from . import host

        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") == "1":
            parser.error("--host measures Triton's real launch path: unset TRITON_INTERPRET")
        if args.host_calls < 1 or args.host_repeats < 1:
            parser.error("--host-calls and --host-repeats must be >= 1")
        return host.main(profile=args.host_profile, calls=args.host_calls, repeats=args.host_repeats,
                         threads=args.threads or 1)
    device = _check_args(parser, args)
    threads, tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
        return _run(parser, args, device)
    finally:  # main() may be called in-process (tests): leave torch as it was
        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _plan(parser: argparse.ArgumentParser, args) -> int:
    """``--plan``: the launch plans of the Triton backend (``plan``), after checking the options."""
    from . import plan

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("--plan compiles the kernels for a GPU through Triton's real launch path: unset TRITON_INTERPRET")
    if torch.cuda.is_available():
        parser.error("--plan runs Triton's launch path on a CUDA driver that does nothing, which cannot share a "
                     "process with a real one: run it where no GPU is visible")
    try:
        import triton  # noqa: F401
    except ImportError:
        parser.error("--plan needs triton installed")
    shapes = list(NAMED_SHAPES) if args.shapes is None else args.shapes
    unknown = [s for s in shapes if s not in NAMED_SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown shape(s) {unknown} for --plan; choose from {list(NAMED_SHAPES)}")
    if args.sms is not None and args.sms < 1:
        parser.error("--sms must be >= 1")
    return plan.main(shapes, args.dtypes, args.paths, args.arch, args.sms, args.allow_tf32, args.json)


def _run(parser: argparse.ArgumentParser, args, device: torch.device) -> int:
    cases = plan_cases(args.shapes, args.sweeps, args.ops, args.passes, args.dtypes, quick=args.quick)
    if args.cases is not None:
        wanted = {tuple(pair) for pair in args.cases}
        cases = [c for c in cases if (c.shape.name, c.dtype) in wanted]
    if not cases:
        parser.error("nothing to run: no shapes and no sweeps were chosen (or --cases matched none)")

    env = environment(device)
    peaks = device_peaks(env["device_name"]) if device.type == "cuda" else None
    measured, measure_errors = {}, {}
    if device.type == "cuda" and not args.no_peak_measure:
        wanted = ["bfloat16"] + (["float32"] if "float32" in args.dtypes else [])
        print(f"swav-bench: measuring the matmul rate ({', '.join(wanted)}, 8192³ torch.mm)", file=sys.stderr,
              flush=True)
        for dtype in wanted:
            try:
                measured[dtype] = measure_matmul_rate(device, getattr(torch, dtype))
            except Exception as error:  # out of memory on a small or busy GPU, ...
                measure_errors[dtype] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    copy_rate, copy_error = None, None
    if device.type == "cuda" and not args.no_peak_measure:
        print("swav-bench: measuring the device-copy bandwidth (1 GiB device to device)", file=sys.stderr, flush=True)
        try:
            copy_rate = measure_copy_rate(device)
        except Exception as error:
            copy_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    settings = Settings(device=device, peers=tuple(args.peers) if args.peers else None,
                        warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, min_samples=args.min_samples,
                        max_samples=args.max_samples, seed=args.seed, score_scale=args.score_scale,
                        compile_backend=args.compile_backend, budget_s=args.budget_s, peaks=peaks,
                        measured_rates=measured or None, allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                        count_kernels=not args.no_kernel_count, kernel_times=not args.no_kernel_times,
                        measure_ceilings=not args.no_peak_measure, copy_rate=copy_rate)
    backends = {dtype: backend_status(device, getattr(torch, dtype)) for dtype in args.dtypes}
    not_available = {dtype: available_peer_names(device, getattr(torch, dtype))[1] for dtype in args.dtypes}
    meta = {
        "environment": env,
        "peaks": None if peaks is None else dataclasses.asdict(peaks),
        "measured_peaks": {k: dataclasses.asdict(v) for k, v in measured.items()},
        "measured_peak_errors": measure_errors,
        "settings": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "backends": backends,
        # the requested peers that cannot run here, and why
        "peers_not_run": {dtype: {p: why for p, why in reasons.items() if p in (args.peers or ())}
                          for dtype, reasons in not_available.items()},
        "cases": [{"shape": c.shape.name, "dtype": c.dtype, "op": c.op, "passes": list(c.passes),
                   "sweeps": list(c.sweeps)} for c in cases],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "results.json"
    print(f"swav-bench: {len(cases)} cases on {env['device_name']} ({device}), torch {env['torch']}; "
          f"writing {args.out}/", file=sys.stderr, flush=True)

    records: list[dict] = []
    for case_records in run_cases(_progress(cases), settings):
        records += case_records
        write_json(json_path, {**meta, "complete": False}, records)  # a killed run keeps what it measured

    meta["ceilings"] = ceilings_meta(device, copy_rate, copy_error, settings.matmul_rates)
    text, plots, notes = _report(meta, records, args.out, draw=not args.no_plots)
    write_json(json_path, {**meta, "complete": True, "plots": plots, "notes": notes}, records)
    print(text)
    status, why = verdict(records, meta)
    if why:
        print(f"swav-bench: exit {status}: {why}", file=sys.stderr, flush=True)
    return status


def ceilings_meta(device: torch.device, copy_rate, copy_error: str | None, matmul_rates: dict) -> dict:
    """What the per-kernel rates were held to, for ``results.json``: the device copy and every torch.mm size
    measured (None where not measured: on a CPU, or with --no-peak-measure)."""
    if device.type != "cuda":
        return {"measured": False, "why": f"not measured on {device.type}"}
    copy = None if copy_rate is None else {**dataclasses.asdict(copy_rate), "gbps": copy_rate.gbps}
    matmuls = [{**dataclasses.asdict(rate), "tflops": rate.tflops}
               for rate in matmul_rates.values() if rate is not None]
    return {"measured": True, "copy": copy, "copy_error": copy_error, "matmul": matmuls}


def ceilings_line(meta: dict) -> str:
    """The device copy (DESIGN §5a's bandwidth figure) and the torch.mm sizes measured, in one line."""
    ceilings = meta.get("ceilings")
    if ceilings is None:
        return "ceilings: not in these results (measured by swav-bench from issue 19 on)"
    if not ceilings.get("measured"):
        return f"ceilings (device copy, torch.mm at the shapes' sizes): {ceilings.get('why', 'not measured')}"
    copy = ceilings.get("copy")
    parts = [f"device copy {copy['size'] / 2**20:.0f} MiB: {copy['gbps']:.0f} GB/s read + written (DESIGN §5a's "
             "bandwidth)" if copy else f"device copy not measured ({ceilings.get('copy_error') or 'skipped'})"]
    parts += [f"torch.mm {m['dtype']} {m['rows']}×{m['dim']}×{m['prototypes']}: {m['tflops']:.0f} TFLOP/s"
              for m in ceilings.get("matmul", [])]
    return "ceilings: " + "; ".join(parts)


def _row_name(r: dict) -> str:
    return f"{r['peer']} {r['shape']} {r['dtype']} {r['op']} {r['pass']}"


def _why_not_run(peer: str, dtype: str, meta: dict) -> str | None:
    """Why ``peer`` did not run for ``dtype``: its own reason, else its backend's (``-scores``, ``-graph``)."""
    reason = (meta.get("peers_not_run") or {}).get(dtype, {}).get(peer)
    backend = peer.removesuffix(SCORES_SUFFIX).removesuffix(GRAPH_SUFFIX)
    return reason or meta["backends"].get(dtype, {}).get(backend)


def verdict(records: list[dict], meta: dict) -> tuple[int, str | None]:
    """(exit status, why it is not 0): 1 when no peer ran at all, or when a row of this package's
    backends failed (wrong result, non-finite output, or an error); plain peers fail nothing."""
    if not any(r["status"] in ("ok", "failed") for r in records):
        requested = meta["settings"].get("peers") or []
        reasons = [f"{peer} ({dtype}): {why}" for dtype in meta["backends"] for peer in requested
                   if (why := _why_not_run(peer, dtype, meta)) is not None]
        return 1, "no requested peer ran" + (f": {'; '.join(reasons)}" if reasons else "")
    failed = [r for r in records if r["status"] == "failed" and is_ours(r["peer"])]
    if failed:
        rows = "; ".join(f"{_row_name(r)}: {r['reason']}" for r in failed)
        return 1, f"{len(failed)} row{'s' if len(failed) > 1 else ''} of this package's backends failed: {rows}"
    return 0, None


def peak_line(meta: dict) -> str:
    """The matmul peak that "% peak" divides by: the rate measured on the device at start-up
    next to the datasheet's dense figure; the measured one is used where there is one."""
    env = meta["environment"]
    if not env["device"].startswith("cuda"):
        return f"% peak: not computed on {env['device']} (no matmul peak is measured or known for a CPU)"
    parts = []
    for dtype, rate in (meta.get("measured_peaks") or {}).items():
        mode = " (TF32 allowed)" if dtype == "float32" and rate.get("allow_tf32") else ""
        parts.append(f"measured {dtype} torch.mm {rate['n']}³{mode} {rate['tflops']:.0f} TFLOP/s")
    for dtype, error in (meta.get("measured_peak_errors") or {}).items():
        parts.append(f"{dtype} rate not measured ({error})")
    sheet = meta.get("peaks")
    if sheet:
        parts.append(f"datasheet {sheet['model']} dense: bf16 {sheet['bf16_tflops']:g}, tf32 {sheet['tf32_tflops']:g}, "
                     f"fp32 {sheet['fp32_tflops']:g} TFLOP/s, HBM {sheet['hbm_tbps']:g} TB/s")
    else:
        parts.append(f"datasheet: {env['device_name']} is not in the table of known devices")
    use = ("% peak divides by the measured rate of the dtype's matrix unit (fp16 uses the bf16 rate), else by "
           "the datasheet's" if meta.get("measured_peaks") else "% peak divides by the datasheet's figure")
    return "matmul peak: " + "; ".join(parts) + f". {use}"


def _notes(meta: dict, records: list[dict]) -> list[str]:
    """What the table cannot say by itself: the compile backend, backends not run, missing figures."""
    env, notes = meta["environment"], []
    compiled = sorted({r["peer"] for r in records if r["peer"].endswith("-compiled")})
    if compiled:
        notes.append(f"{' and '.join(compiled)}: torch.compile backend {meta['settings']['compile_backend']!r} "
                     "(reference: fullgraph=True; plain: default options)")
    if any(r["peer"].endswith(GRAPH_SUFFIX) for r in records):
        notes.append("<backend>-graph: one call captured with torch.cuda.graph on static inputs, timed as replays "
                     "(peak memory: over warm-up and capture); <backend>-scores: the user's matmul, then "
                     "swav_loss(scores, queue_scores=...)")
    for dtype, status in meta["backends"].items():
        for name, reason in status.items():
            if reason is not None and name not in BUILTIN_PEERS:
                notes.append(f"backend {name} not run for {dtype}: {reason}")
    for dtype, reasons in (meta.get("peers_not_run") or {}).items():
        for name, reason in reasons.items():
            if name not in meta["backends"].get(dtype, {}):  # a backend's own reason is noted above
                notes.append(f"peer {name} not run for {dtype}: {reason}")
    limits = {}  # dtype -> pass -> the tolerances its rows were held to
    for r in records:
        if r.get("tolerance") is not None:
            limits.setdefault(r["dtype"], {}).setdefault(r["pass"], set()).add(r["tolerance"])
    if limits:
        held = "; ".join(f"{dtype} vs {truth_words(getattr(torch, dtype))}: " + ", ".join(
            f"{pass_} <= {'/'.join(f'{t:.2g}' for t in sorted(ts))}" for pass_, ts in sorted(passes.items()))
            for dtype, passes in sorted(limits.items()))
        notes.append("err vs ref: max|output - truth| / max|truth| (fwd: the loss, codes or lse; fwd+bwd: the "
                     f"gradients), the truth being the reference on the same inputs upcast; {held} (DESIGN §4: "
                     "fp32 1e-5 / 1e-4, fp16/bf16 and TF32 2e-3 / 1e-2, grown to 8 ulp of max|score|/ε where "
                     "larger, as tests/problems.py::logit_tolerance). A row of this package's backends over its "
                     "tolerance fails, and so does the run; the plain peers are not held to it")
    device_type = torch.device(env["device"]).type
    if device_type != "cuda":
        notes.append(f"peak memory is not measured on {device_type} (n/a): the allocator keeps no peak statistics")
    return notes


def _report(meta: dict, records: list[dict], out: pathlib.Path, draw: bool) -> tuple[str, list[str], list[str]]:
    """(the text printed and saved as ``out/table.txt``, PNG names drawn into ``out``, notes)."""
    notes, plots = _notes(meta, records), []
    if draw:
        try:
            from .plots import plot_sweeps
        except ImportError as error:
            notes.append(f"plots not drawn ({error}); pip install 'swav-kernels[bench]'")
        else:
            written, plot_notes = plot_sweeps(records, out)
            plots = [p.name for p in written]
            notes += plot_notes
    env = meta["environment"]
    allow_tf32 = bool(meta.get("settings", {}).get("allow_tf32") or env.get("allow_tf32"))
    text = "\n".join([format_table(display_order(records)), "", *legend_lines(), peak_line(meta), *notes,
                      *target_lines(records, allow_tf32), "",
                      *format_kernel_section(display_order(records), env["device"]), ceilings_line(meta), "",
                      device_line(env),
                      f"written: {out / 'results.json'}, {out / 'table.txt'}" + "".join(f", {out / p}" for p in plots)])
    (out / "table.txt").write_text(text + "\n")
    return text, plots, notes


def _from_json(args) -> int:
    """``--from-json``: the table and plots of a finished run, e.g. one measured on a GPU
    machine without matplotlib, drawn here into ``--out``."""
    data = json.loads(args.from_json.read_text())
    records = data.pop("results")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.out.resolve() != args.from_json.parent.resolve():
        write_json(args.out / "results.json", data, records)
    text, _, _ = _report(data, records, args.out, draw=not args.no_plots)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
