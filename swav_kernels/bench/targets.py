"""The performance targets (DESIGN §5a, issues 10–12) checked against a run's records: one line
per target and peer, the measured figure next to the target, and whether it was met.

Targets, all of the loss (fwd+bwd) and of the kernel backends:
  - swav-1gpu bf16, eager (fused and scores path): ≤ 1.0 ms;
  - swav-1gpu bf16, CUDA-graph replay (``<backend>-graph``): ≤ 0.35 ms;
  - large-k bf16 (fused): ≤ 6.0 ms, and peak memory above the inputs ≤ 700 MiB;
  - large-k fp32, exact (no TF32; fused): ≤ 30 ms;
  - tiny, eager: no slower than ``plain`` (each dtype measured);
  - device kernels per fwd+bwd at swav-1gpu (queue, 2 assign crops, 3 iterations): ≤ 12 on the
    fused path, ≤ 10 on the scores path (``torch.profiler``; not countable on a CPU).
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


@dataclass(frozen=True)
class Target:
    """``metric`` of the loss fwd+bwd on ``shape``/``dtype`` ≤ ``limit`` for the peers on
    ``paths``; ``metric`` is a record key, or ``"vs plain"`` (median ≤ plain's)."""

    label: str
    shape: str
    dtypes: tuple[str, ...]
    paths: tuple[str, ...]
    metric: str
    limit: float | None
    unit: str
    exact_fp32: bool = False  # only meaningful when float32 matmuls may not use TF32


TARGETS = (
    Target("swav-1gpu bf16 fwd+bwd eager", "swav-1gpu", ("bfloat16",), ("fused", "scores"), "median_ms", 1.0, "ms"),
    Target("swav-1gpu bf16 fwd+bwd captured (CUDA graph)", "swav-1gpu", ("bfloat16",), ("graph",), "median_ms",
           0.35, "ms"),
    Target("large-k bf16 fwd+bwd", "large-k", ("bfloat16",), ("fused",), "median_ms", 6.0, "ms"),
    Target("large-k bf16 fwd+bwd peak extra memory", "large-k", ("bfloat16",), ("fused",), "peak_mib", 700.0, "MiB"),
    Target("large-k fp32 exact fwd+bwd", "large-k", ("float32",), ("fused",), "median_ms", 30.0, "ms",
           exact_fp32=True),
    Target("tiny fwd+bwd eager", "tiny", ("bfloat16", "float32", "float16"),
           ("fused", "scores"), "vs plain", None, "ms"),
    Target("kernels per fwd+bwd (fused path)", "swav-1gpu", ("bfloat16", "float32", "float16"), ("fused",),
           "kernels", 12, "kernels"),
    Target("kernels per fwd+bwd (scores path)", "swav-1gpu", ("bfloat16", "float32", "float16"), ("scores",),
           "kernels", 10, "kernels"),
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
        limit = "plain's time" if t.limit is None else _fmt(t.limit, t.unit)
        head = f"target: {t.label} <= {limit}:"
        if t.exact_fp32 and allow_tf32:
            lines.append(f"{head} not measured (this run let float32 matmuls use TF32: not exact)")
            continue
        rows = [r for r in loss if r["shape"] == t.shape and r["dtype"] in t.dtypes and peer_path(r["peer"]) in t.paths]
        if not rows:
            lines.append(f"{head} not measured in this run (no {'/'.join(t.paths)} peer on {t.shape} "
                         f"{'/'.join(t.dtypes)})")
            continue
        for r in rows:
            who = f"{r['peer']}" + (f" {r['dtype']}" if len(t.dtypes) > 1 else "")
            if r["status"] != "ok":
                lines.append(f"{head} {who} {r['status']}" + (f" ({r['reason']})" if r["reason"] else "")
                             + " MISSED")
                continue
            if t.metric == "vs plain":
                plain = [p for p in loss if p["shape"] == r["shape"] and p["dtype"] == r["dtype"]
                         and p["peer"] == "plain" and p["status"] == "ok"]
                if not plain:
                    lines.append(f"{head} {who} {_fmt(r['median_ms'], 'ms')}, plain not measured: n/a")
                    continue
                met = r["median_ms"] <= plain[0]["median_ms"]
                lines.append(f"{head} {who} {_fmt(r['median_ms'], 'ms')} vs plain "
                             f"{_fmt(plain[0]['median_ms'], 'ms')} {'met' if met else 'MISSED'}")
                continue
            value = _value(r, t.metric)
            if value is None:
                why = "not counted on this device" if t.metric == "kernels" else "not measured on this device"
                lines.append(f"{head} {who} n/a ({why})")
                continue
            lines.append(f"{head} {who} {_fmt(value, t.unit)} {'met' if value <= t.limit else 'MISSED'}")
    return lines
