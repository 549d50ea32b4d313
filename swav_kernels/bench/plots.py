"""PNG plots of the sweeps: time and peak memory of the loss against K and against rows,
one line per peer, one panel per (dtype, pass). Drawn with matplotlib's object API
(no pyplot, no global backend switch)."""
from __future__ import annotations

import pathlib

SWEEP_AXES = {"k": ("prototypes", "K (prototypes)"), "rows": ("rows", "rows V·B")}
METRICS = {"time": ("median_ms", 1.0, "median time (ms)"), "memory": ("peak_bytes", 2.0**-20, "peak memory above inputs (MiB)")}


def plot_sweeps(records: list[dict], out_dir: pathlib.Path) -> tuple[list[pathlib.Path], list[str]]:
    """Draw ``{metric}_vs_{sweep}.png`` for every sweep and metric that has measurements.
    Returns (files written, notes on what was not drawn and why)."""
    from matplotlib.figure import Figure

    written, notes = [], []
    for sweep, (x_key, x_label) in SWEEP_AXES.items():
        ok = [r for r in records if sweep in r["sweeps"] and r["op"] == "loss" and r["status"] == "ok"]
        if not ok:
            notes.append(f"no {sweep} sweep measured: nothing to plot against {x_label}")
            continue
        dtypes = sorted({r["dtype"] for r in ok})
        passes = sorted({r["pass"] for r in ok})
        peers = sorted({r["peer"] for r in ok})  # one colour per peer in every panel
        for metric, (y_key, y_scale, y_label) in METRICS.items():
            if all(r[y_key] is None for r in ok):
                notes.append(f"{metric} vs {sweep}: not drawn ({y_label.split(' (')[0]} not measured on this device)")
                continue
            fig = Figure(figsize=(5.5 * len(passes), 4.2 * len(dtypes)), layout="constrained")
            grid = fig.subplots(len(dtypes), len(passes), squeeze=False)
            for (row, dtype), (col, pass_) in ((d, p) for d in enumerate(dtypes) for p in enumerate(passes)):
                ax = grid[row][col]
                panel = [r for r in ok if r["dtype"] == dtype and r["pass"] == pass_ and r[y_key] is not None]
                for n, peer in enumerate(peers):
                    points = sorted((r[x_key], r[y_key] * y_scale) for r in panel if r["peer"] == peer)
                    if points:
                        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=peer, color=f"C{n}")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel(x_label)
                ax.set_ylabel(y_label)
                ax.set_title(f"SwAV loss {pass_}, {dtype}")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend()
            path = out_dir / f"{metric}_vs_{sweep}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    return written, notes
