"""The performance targets checked against a run's records: one line per target and peer, the measured
figure next to the target, and whether it was met. Each target names the backend it holds for, since the
Triton and CUDA backends are built to different designs (DESIGN §5a).

Triton backend (issues 18, host path, and 19, kernels), all fwd+bwd of the loss:
  - swav-1gpu bf16 eager ≤ its captured replay (``triton-graph``) + 0.15 ms: the host's share is small;
  - tiny bf16 eager ≤ 0.25 ms;
  - swav-1gpu bf16 captured replay ≤ 0.25 ms;
  - large-k bf16 (fused) ≤ 6 ms and ≤ 700 MiB above the inputs; large-k fp32 exact (no TF32) ≤ 30 ms;
  - device kernels per call at swav-1gpu: ≤ 12 fused, ≤ 10 scores path (``torch.profiler``).
CUDA backend (issue 20):
  - large-k bf16 ≤ 5 ms and ≤ 700 MiB; large-k fp32 exact ≤ 30 ms and ≤ 1.5 GiB;
  - swav-1gpu bf16 eager ≤ 0.6 ms; tiny bf16 eager ≤ 0.3 ms.
The host benchmark's own target (≤ 70 µs per call on the null driver, ``swav-bench --host``) is checked
where it is measured (``swav_kernels.bench.host``).
"""
from __future__ import annotations

from dataclasses import dataclass

from .peers import BUILTIN_PEERS, GRAPH_SUFFIX, SCORES_SUFFIX


def peer_path(peer: str) -> str | None:
    """``"fused"``, ``"scores"`` or ``"graph"`` for a kernel backend's peer; None for the
    built-in peers (reference, plain and their compiled forms)."""
    if peer in BUILTIN_PEERS or peer == "compiled":  # "compiled": the reference-compiled of schema 1 results
        return None
    if peer.endswith(GRAPH_SUFFIX):
        return "graph"
    if peer.endswith(SCORES_SUFFIX):
        return "scores"
    return "fused"


def peer_backend(peer: str) -> str | None:
    """The kernel backend a peer runs (``triton`` for ``triton-scores``); None for the built-in peers."""
    path = peer_path(peer)
    if path is None:
        return None
    suffix = {"graph": GRAPH_SUFFIX, "scores": SCORES_SUFFIX}.get(path, "")
    return peer[: len(peer) - len(suffix)] if suffix else peer


@dataclass(frozen=True)
class Target:
    """``metric`` of the loss fwd+bwd on ``shape``/``dtype`` ≤ ``limit`` for ``backend``'s peers on
    ``paths``; ``metric`` is a record key, or ``"vs graph"`` (median ≤ the same backend's captured
    replay + ``limit``)."""

    label: str
    backend: str
    shape: str
    dtypes: tuple[str, ...]
    paths: tuple[str, ...]
    metric: str
    limit: float
    unit: str
    exact_fp32: bool = False  # only meaningful when float32 matmuls may not use TF32


BF16, ANY = ("bfloat16",), ("bfloat16", "float32", "float16")
TARGETS = (
    # Triton: the host path (issue 18)
    Target("swav-1gpu bf16 fwd+bwd eager, over its captured replay", "triton", "swav-1gpu", BF16, ("fused",),
           "vs graph", 0.15, "ms"),
    Target("tiny bf16 fwd+bwd eager", "triton", "tiny", BF16, ("fused",), "median_ms", 0.25, "ms"),
    Target("kernels per fwd+bwd (fused path)", "triton", "swav-1gpu", ANY, ("fused",), "kernels", 12, "kernels"),
    Target("kernels per fwd+bwd (scores path)", "triton", "swav-1gpu", ANY, ("scores",), "kernels", 10, "kernels"),
    # Triton: the kernels (issue 19)
    Target("swav-1gpu bf16 fwd+bwd captured (CUDA graph)", "triton", "swav-1gpu", BF16, ("graph",), "median_ms",
           0.25, "ms"),
    Target("large-k bf16 fwd+bwd", "triton", "large-k", BF16, ("fused",), "median_ms", 6.0, "ms"),
    Target("large-k bf16 fwd+bwd peak extra memory", "triton", "large-k", BF16, ("fused",), "peak_mib", 700.0, "MiB"),
    Target("large-k fp32 exact fwd+bwd", "triton", "large-k", ("float32",), ("fused",), "median_ms", 30.0, "ms",
           exact_fp32=True),
    # CUDA (issue 20)
    Target("large-k bf16 fwd+bwd", "cuda", "large-k", BF16, ("fused",), "median_ms", 5.0, "ms"),
    Target("large-k bf16 fwd+bwd peak extra memory", "cuda", "large-k", BF16, ("fused",), "peak_mib", 700.0, "MiB"),
    Target("large-k fp32 exact fwd+bwd", "cuda", "large-k", ("float32",), ("fused",), "median_ms", 30.0, "ms",
           exact_fp32=True),
    Target("large-k fp32 exact fwd+bwd peak extra memory", "cuda", "large-k", ("float32",), ("fused",), "peak_mib",
           1536.0, "MiB", exact_fp32=True),
    Target("swav-1gpu bf16 fwd+bwd eager", "cuda", "swav-1gpu", BF16, ("fused",), "median_ms", 0.6, "ms"),
    Target("tiny bf16 fwd+bwd eager", "cuda", "tiny", BF16, ("fused",), "median_ms", 0.3, "ms"),
)


def _value(record: dict, metric: str):
    if metric == "peak_mib":
        return None if record["peak_bytes"] is None else record["peak_bytes"] / 2**20
    return record.get(metric)


def _fmt(value: float, unit: str) -> str:
    return f"{value:d} {unit}" if isinstance(value, int) else f"{value:.4g} {unit}"


def target_lines(records: list[dict], allow_tf32: bool = False) -> list[str]:
    """``target: <what> <= <limit>: <peer> <measured> met|MISSED`` for every target and every
    peer that should meet it; a target whose case was not measured says so."""
    lines = []
    loss = [r for r in records if r["op"] == "loss" and r["pass"] == "fwd+bwd"]
    for t in TARGETS:
        limit = f"captured + {_fmt(t.limit, t.unit)}" if t.metric == "vs graph" else _fmt(t.limit, t.unit)
        head = f"target: [{t.backend}] {t.label} <= {limit}:"
        if t.exact_fp32 and allow_tf32:
            lines.append(f"{head} not measured (this run let float32 matmuls use TF32: not exact)")
            continue
        rows = [r for r in loss if r["shape"] == t.shape and r["dtype"] in t.dtypes
                and peer_path(r["peer"]) in t.paths and peer_backend(r["peer"]) == t.backend]
        if not rows:
            lines.append(f"{head} not measured in this run (no {t.backend} {'/'.join(t.paths)} peer on {t.shape} "
                         f"{'/'.join(t.dtypes)})")
            continue
        for r in rows:
            who = f"{r['peer']}" + (f" {r['dtype']}" if len(t.dtypes) > 1 else "")
            if r["status"] != "ok":
                lines.append(f"{head} {who} {r['status']}" + (f" ({r['reason']})" if r["reason"] else "")
                             + " MISSED")
                continue
            if t.metric == "vs graph":
                graph = [g for g in loss if g["shape"] == r["shape"] and g["dtype"] == r["dtype"]
                         and g["peer"] == t.backend + GRAPH_SUFFIX and g["status"] == "ok"]
                if not graph:
                    lines.append(f"{head} {who} {_fmt(r['median_ms'], 'ms')}, {t.backend}{GRAPH_SUFFIX} not measured: "
                                 "n/a")
                    continue
                over = r["median_ms"] - graph[0]["median_ms"]
                lines.append(f"{head} {who} {_fmt(r['median_ms'], 'ms')} = captured {_fmt(graph[0]['median_ms'], 'ms')}"
                             f" + {_fmt(over, 'ms')} {'met' if over <= t.limit else 'MISSED'}")
                continue
            value = _value(r, t.metric)
            if value is None:
                why = "not counted on this device" if t.metric == "kernels" else "not measured on this device"
                lines.append(f"{head} {who} n/a ({why})")
                continue
            lines.append(f"{head} {who} {_fmt(value, t.unit)} {'met' if value <= t.limit else 'MISSED'}")
    return lines
