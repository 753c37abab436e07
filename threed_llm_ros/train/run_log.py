"""The run's loss log (``log.jsonl``, one JSON line per step) and its plot (``loss.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
LOSS_PARTS = ("loss", "language_loss", "box_loss", "load_balance_loss", "semantic_loss")


def truncate_log(path: Path, next_step: int) -> None:
    """Drop log lines of steps at or after ``next_step`` (they will be run again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < next_step]
    path.write_text("".join(line + "\n" for line in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines training log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(log_path: Path, image_path: Path, window: int = 10) -> Path | None:
    """PNG of the loss parts against the step (raw and a moving average), stage boundaries dashed."""
    if not log_path.is_file():
        return None
    records = read_log(log_path)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in records])
    figure, axes = plt.subplots(len(LOSS_PARTS), 1, figsize=(9, 2.4 * len(LOSS_PARTS)), sharex=True)
    for axis, part in zip(axes, LOSS_PARTS):
        values = np.array([r.get(part, 0.0) for r in records], dtype=np.float64)  # older logs lack newer parts
        axis.plot(steps, values, color="0.7", linewidth=0.8, label="per step")
        if len(values) >= window:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            axis.plot(steps[window - 1 :], smooth, color="C0", linewidth=1.5, label=f"mean of {window}")
        axis.set_ylabel(part)
        axis.grid(alpha=0.3)
        for index in range(1, len(records)):
            if records[index]["stage"] != records[index - 1]["stage"]:
                axis.axvline(steps[index], color="C3", linestyle="--", linewidth=1)
    axes[0].set_title("training losses (" + " → ".join(dict.fromkeys(r["stage"] for r in records)) + ")")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    image_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(image_path, dpi=100)
    plt.close(figure)
    return image_path
