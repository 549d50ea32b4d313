"""DESIGN §5a's rules for what a Triton launch compiles to and how it fills the GPU, checked on the plan
reports of ``swav-bench --plan`` (``plan.py``; ``tests/test_triton_compile.py`` asserts them).

- ``spill``: the compiled kernel spills no registers.
- ``wgmma``: on sm_90 every kernel that multiplies (a launch with FLOPs in the cost model) does so with
  the warpgroup MMA only (``wgmma``; one product left on ``mma.sync`` runs at the warp MMA's rate).
- ``grid``: a launch that does real work offers at least one program per SM. Real work: a roofline time
  on the whole device of at least ``GRID_RULE_MIN_US``. Below that a launch costs its fixed overhead
  (launch, ramp-up, tail: microseconds) whatever its grid, and a further split's merge would cost more
  than the idle SMs do (at swav-4096 the loss forward's 2.5 µs would need its ≈ 12 MB of partials
  merged to fill 132 SMs).

A breach of ``spill`` or ``wgmma`` that the tile tables document as a known shortfall
(``triton.tiles.KNOWN_SHORTFALLS``, with the reason no tile fits) is reported with that reason and is
not a failure; any other breach is.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..triton.tiles import KNOWN_SHORTFALLS

GRID_RULE_MIN_US = 5.0
# kernel function name -> its family in the tile tables (``triton.tiles.SM90``/``SM80``)
TABLE_FAMILIES = {"_column_step_kernel": "column", "_row_step_kernel": "row", "_codes_kernel": "codes",
                  "_loss_forward_kernel": "forward", "_backward_kernel": "backward"}


@dataclass(frozen=True)
class Breach:
    rule: str  # "spill", "wgmma" or "grid"
    index: int  # the launch's position in the plan
    kernel: str
    detail: str
    known: str | None  # the documented reason, for a known shortfall


def cell(report: dict, launch: dict) -> tuple:
    """(arch, path, family, operands, width): the tile-table cell a launch's kernel was compiled from
    (the scores path's streaming kernels: family = the kernel's, operands "16bit" or "fp32", width 0)."""
    family = TABLE_FAMILIES.get(launch["kernel"], launch["kernel"])
    if report["dtype"] != "float32":
        operands = "16bit"
    elif report["path"] == "scores":
        operands = "fp32"
    else:
        operands = "tf32" if report["allow_tf32"] else "tf32x3"
    width = 0 if report["path"] == "scores" else (128 if report["dim"] <= 128 else 256)
    return (report["arch"], report["path"], family, operands, width)


def breaches(report: dict) -> list[Breach]:
    """Every breach of the rules in one plan report (``dataclasses.asdict`` of a ``PlanReport`` or its
    JSON), known shortfalls included (``Breach.known`` set)."""
    found = []
    for launch in report["launches"]:
        where = cell(report, launch)

        def add(rule, detail):
            found.append(Breach(rule, launch["index"], launch["kernel"], detail, KNOWN_SHORTFALLS.get((*where, rule))))

        if launch["compiled"] and launch["spill_bytes"]:
            add("spill", f"{launch['spill_bytes']} bytes spilled ({launch['registers']} registers, "
                         f"{launch['stack_bytes']} bytes of stack)")
        if (report["arch"] >= 90 and launch["flops"] and launch["compiled"] and launch["mma"] != "wgmma"):
            add("wgmma", f"tensor-core instructions {launch['mma']!r} ({', '.join(launch['mma_shapes']) or 'none'})")
        programs = launch["programs"]
        if 0 < programs < report["sms"] and (launch["roofline_us"] or 0.0) >= GRID_RULE_MIN_US:
            add("grid", f"{programs} programs (grid {tuple(launch['grid'])}) on {report['sms']} SMs, roofline "
                        f"{launch['roofline_us']:.1f} µs")
    return found
