"""What a simulation writes: ``curve.csv``, ``summary.json`` and ``curve.png``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from slidelabel.services.simulation import SimulationOptions, SimulationResult  # noqa: E402
from slidelabel.store.atomic import atomic_path, write_json_atomic  # noqa: E402

CURVE_COLUMNS = ("strategy", "repeat", "labels", "accuracy", "balanced_accuracy", "macro_f1", "pixel_dice")
#: Label counts at which the summary quotes the mean macro F1.
CHECKPOINTS = (50, 100, 250, 500)


def mean_curves(result: SimulationResult, metric: str = "macro_f1") -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per strategy: label counts, and the mean and standard deviation of ``metric`` over repeats."""
    curves = {}
    for strategy in dict.fromkeys(row["strategy"] for row in result.rows):
        rows = [row for row in result.rows if row["strategy"] == strategy]
        labels = np.array(sorted({row["labels"] for row in rows}))
        values = [[row[metric] for row in rows if row["labels"] == n] for n in labels]
        curves[strategy] = (labels, np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values]))
    return curves


def summarise(result: SimulationResult, options: SimulationOptions) -> dict:
    """Per strategy: labels needed to reach 95% of the full-supervision macro F1, area under the
    mean curve (as the mean macro F1 over the label range) and the macro F1 at checkpoints."""
    full = result.full_supervision["macro_f1"]
    summary = {"full_supervision": result.full_supervision, "target_macro_f1": 0.95 * full, "strategies": {},
               "options": {**options.__dict__, "strategies": list(options.strategies)},
               "train_images": result.train_images, "test_images": result.test_images,
               "class_values": result.class_values}
    for strategy, (labels, mean, std) in mean_curves(result).items():
        reached = np.flatnonzero(mean >= 0.95 * full)
        span = labels[-1] - labels[0]
        summary["strategies"][strategy] = {
            "labels_to_95_percent": int(labels[reached[0]]) if reached.size else None,
            "area_under_curve": float(np.trapezoid(mean, labels) / span) if span else float(mean[0]),
            # Checkpoints the run reached only: beyond the budget the last value says nothing.
            "macro_f1_at": {str(n): float(mean[labels <= n][-1]) for n in CHECKPOINTS if labels[0] <= n <= labels[-1]},
            "final_macro_f1": float(mean[-1]),
            "final_macro_f1_std": float(std[-1]),
        }
    random = summary["strategies"].get("random", {}).get("labels_to_95_percent")
    for entry in summary["strategies"].values():
        mine = entry["labels_to_95_percent"]
        entry["labels_saved_vs_random"] = random - mine if random is not None and mine is not None else None
    return summary


def _plot(result: SimulationResult, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    for strategy, (labels, mean, std) in mean_curves(result).items():
        line, = axes.plot(labels, mean, label=strategy, linewidth=1.8)
        axes.fill_between(labels, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    full = result.full_supervision["macro_f1"]
    axes.axhline(full, color="black", linestyle="--", linewidth=1,
                 label=f"all {result.full_supervision['labels']} labels")
    axes.axhline(0.95 * full, color="grey", linestyle=":", linewidth=1, label="95% of that")
    axes.set_xlabel("labelled superpixels")
    axes.set_ylabel("macro F1 on test images")
    axes.set_title("Active learning: mean and standard deviation over repeats")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def write_report(result: SimulationResult, options: SimulationOptions, folder: Path) -> dict:
    """Write the three files into ``folder`` (created), each atomically; returns the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "curve.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in CURVE_COLUMNS} for row in result.rows)
    summary = summarise(result, options)
    write_json_atomic(folder / "summary.json", json.loads(json.dumps(summary, default=float)))
    _plot(result, folder / "curve.png")
    return summary
