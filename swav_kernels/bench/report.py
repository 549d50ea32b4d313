"""The printed table, the run's metadata and the JSON file."""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import pathlib
import platform
import subprocess

import torch

SCHEMA = "swav-bench/2"
COLUMNS = ("shape", "dtype", "op", "pass", "peer", "median ms", "IQR ms", "x ref", "x ref-comp", "x plain-comp",
           "peak MiB", "mem/ref", "kernels", "cpy/set", "useful TFLOP/s", "% peak", "err vs ref", "status")
# what the table's columns mean, printed under it (wrapped by legend_lines)
LEGEND = (
    "columns: x ref / x ref-comp / x plain-comp = speed-up over reference (eager), reference-compiled "
    "(the reference under torch.compile(fullgraph=True)) and plain-compiled (torch.compile of the plain "
    "facebookresearch/swav loss: the figure to beat); kernels, cpy/set = device kernels and memcpy/memset "
    "of one call (torch.profiler, CUDA only)",
    "FLOPs: one matmul pass over M rows = 2·M·K·D. useful TFLOP/s = DESIGN §5's count (scores 2·(V·B)·D·K "
    "forward, 6·(V·B)·D·K forward+backward, + 2·|A|·L·D·K queue scoring), the same for every peer / time; "
    "% peak = the FLOPs the peer's algorithm performs (swav_kernels.bench.flops.matmul_passes: fused path "
    "2T Sinkhorn passes over |A|·(L+B) rows + codes·C + 2 forward + 2 backward passes over V·B; reference and "
    "plain 1 forward + 2 backward + queue) / time / the matmul peak named below; Sinkhorn alone: TB/s of its "
    "minimal traffic / HBM bandwidth",
)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _is_commit(text: str) -> bool:
    return 7 <= len(text) <= 40 and all(c in "0123456789abcdef" for c in text)


def git_commit(root: pathlib.Path | None = None) -> dict | None:
    """The commit measured: ``{"commit", "dirty", "source"}`` of the project at ``root`` (default:
    the checkout holding this package), or None when it cannot be known.

    From git only where ``root`` is the top level of its own repository (a copy inside another
    repository, or a site-packages inside a project's virtual environment, must not record that
    repository's commit); else from ``.gpu-commit`` at ``root``, written before the project was
    copied to a machine without its ``.git`` (``dirty`` then unknown: None). Git comes first
    where it applies and the tree is clean (a ``.gpu-commit`` left in a checkout may be stale); a dirty
    tree with a ``.gpu-commit`` is a device copy whose ``.git`` holds an older base with the copied files
    as changes (seen on the device machine: it recorded the base, 263fdc6, for b05a185), so there the
    recorded commit wins.
    """
    root = pathlib.Path(root or pathlib.Path(__file__).resolve().parents[2]).resolve()
    if not (root / "pyproject.toml").is_file():  # not the project's folder (an installed package)
        return None
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() == root:
            commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
            if not (status and _recorded_commit(root)):
                return {"commit": commit, "dirty": bool(status), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    commit = _recorded_commit(root)
    return {"commit": commit, "dirty": None, "source": ".gpu-commit"} if commit else None


def _recorded_commit(root: pathlib.Path) -> str | None:
    recorded = root / ".gpu-commit"
    commit = recorded.read_text().strip() if recorded.is_file() else ""
    return commit if _is_commit(commit) else None


def device_name(device: torch.device) -> str:
    """The GPU's marketing name, or the CPU's processor string."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def device_line(env: dict) -> str:
    """Which device ran and with what: ``device: cuda:0 (NVIDIA H200, sm_90); torch …; CUDA 13.0;
    …`` on a GPU, ``device: cpu (x86_64, 2 threads); torch … (built with CUDA 13.0, unused); …``
    on a CPU, where the CUDA version of torch's build says nothing about the run."""
    device = env["device"]
    if device.startswith("cuda"):
        capability = env.get("capability")
        sm = f", sm_{capability[0]}{capability[1]}" if capability else ""
        what = f"device: {device} ({env['device_name']}{sm}); torch {env['torch']}; CUDA {env['cuda']}"
    else:
        threads = env.get("cpu_threads")
        what = (f"device: {device} ({env['device_name']}" + (f", torch threads: {threads}" if threads else "") + ")"
                f"; torch {env['torch']}" + (f" (built with CUDA {env['cuda']}, unused)" if env.get("cuda") else ""))
    git = env.get("git") or {}
    commit = f"; commit {git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}" if git.get("commit") else ""
    return f"{what}; triton {env['triton']}{commit}; {env['date']}"


def environment(device: torch.device) -> dict:
    """Where and with what this run was measured."""
    info = {
        "device": str(device),
        "device_name": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "swav_kernels": _version("swav-kernels"),
        "git": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_threads": torch.get_num_threads(),
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        info["capability"] = list(torch.cuda.get_device_capability(device))
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return info


def write_json(path: pathlib.Path, meta: dict, records: list[dict]) -> None:
    """``{"schema", **meta, "results": records}`` to ``path`` (written whole, then renamed)."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({"schema": SCHEMA, **meta, "results": records}, indent=1))
    partial.replace(path)


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _throughput(r: dict) -> str:
    if r.get("tflops") is not None:
        return f"{r['tflops']:.3g}"
    if r.get("tbps") is not None:
        return f"{r['tbps']:.3g} TB/s"
    return "-"


def _copies(r: dict) -> str:
    if r.get("memcpy") is None:
        return "n/a" if r["status"] == "ok" else "-"
    return f"{r['memcpy']}/{r['memset']}"


def _row(r: dict) -> tuple[str, ...]:
    ok = r["status"] == "ok"
    memory = "n/a" if ok and r["peak_bytes"] is None else _fmt(
        None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20, ".1f")
    kernels = "n/a" if ok and r.get("kernels") is None else _fmt(r.get("kernels"), "d")
    status = r["status"] if r["reason"] is None else f"{r['status']}: {r['reason']}"
    return (r["shape"], r["dtype"], r["op"], r["pass"], r["peer"], _fmt(r["median_ms"], ".4g"),
            _fmt(r["iqr_ms"], ".2g"), _fmt(r.get("speedup_vs_reference"), ".2f"),
            _fmt(r.get("speedup_vs_reference_compiled"), ".2f"), _fmt(r.get("speedup_vs_plain_compiled"), ".2f"),
            memory, _fmt(r["memory_ratio_vs_reference"], ".3f"), kernels, _copies(r), _throughput(r),
            _fmt(r.get("pct_of_peak"), ".1f"), _fmt(r["max_rel_err_vs_reference"], ".1e"), status)


def format_table(records: list[dict]) -> str:
    """One row per record, aligned columns; failures carry their reason in the last column."""
    rows = [COLUMNS] + [_row(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def legend_lines(width: int = 120) -> list[str]:
    """``LEGEND`` wrapped to ``width`` columns, continuation lines indented."""
    import textwrap

    return [line for text in LEGEND for line in textwrap.wrap(text, width, subsequent_indent="  ")]
