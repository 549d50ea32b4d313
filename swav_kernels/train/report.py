"""What a run leaves behind: a per-iteration CSV log, a PNG loss curve, the collapse check."""
from __future__ import annotations

import csv
import math
import os
from typing import Sequence

LOG_FIELDS = ("epoch", "iteration", "loss", "lr", "images_per_s", "loss_time_share", "queue_in_use")
COLLAPSE_MARGIN = 0.02  # nats either side of ln K


def write_log(path: str, rows: Sequence[dict]) -> None:
    """(Re)write the CSV log with one row per iteration (columns :data:`LOG_FIELDS`)."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def append_log(path: str, rows: Sequence[dict]) -> None:
    """Append rows to the CSV log written by :func:`write_log`."""
    with open(path, "a", newline="") as file:
        csv.DictWriter(file, fieldnames=LOG_FIELDS).writerows(rows)


def read_log(path: str) -> list[dict]:
    """The CSV log's rows, numbers parsed."""
    with open(path, newline="") as file:
        return [
            {key: (int(value) if key in ("epoch", "iteration", "queue_in_use") else float(value)) for key, value in row.items()}
            for row in csv.DictReader(file)
        ]


def is_collapsed(epoch_mean_loss: float, nmb_prototypes: int) -> bool:
    """True when the loss sits at ln K (within :data:`COLLAPSE_MARGIN`): every crop predicts
    the uniform distribution over the K prototypes, the value of a network whose scores no
    longer depend on the image. (Early losses above ln K are predictions that disagree with
    the codes, not a collapse.)"""
    return abs(epoch_mean_loss - math.log(nmb_prototypes)) < COLLAPSE_MARGIN


def plot_loss(path: str, rows: Sequence[dict], nmb_prototypes: int, title: str = "SwAV pre-training") -> None:
    """PNG of the per-iteration loss, its per-epoch mean and the collapse level ln K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [row["iteration"] for row in rows]
    losses = [row["loss"] for row in rows]
    epochs = sorted({row["epoch"] for row in rows})
    epoch_ends, epoch_means = [], []
    for epoch in epochs:
        values = [row for row in rows if row["epoch"] == epoch]
        epoch_ends.append(values[-1]["iteration"])
        epoch_means.append(sum(row["loss"] for row in values) / len(values))
    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    axes.plot(iterations, losses, linewidth=0.8, alpha=0.6, label="loss per iteration")
    axes.plot(epoch_ends, epoch_means, "o-", linewidth=1.5, markersize=3, label="epoch mean")
    axes.axhline(math.log(nmb_prototypes), color="grey", linestyle="--", linewidth=1, label=f"ln K (collapse), K={nmb_prototypes}")
    axes.set_xlabel("iteration")
    axes.set_ylabel("SwAV loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
