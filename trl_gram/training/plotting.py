"""The self-training plot: kept fraction of pseudo-labels and held-out accuracy per round."""

from __future__ import annotations

import math
from pathlib import Path


def plot_self_training(history: list[dict], path: str | Path) -> Path | None:
    """Write a PNG with, per round, the kept fraction (round 0: share of labeled pairs with a valid rationale) and
    the held-out accuracy; the base model's and the final judge's accuracies are drawn as reference lines. Returns
    the path, or ``None`` when there is no round to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [h for h in history if h.get("round") is not None]
    if not rounds:
        return None
    xs = [h["round"] for h in rounds]
    kept = [h.get("kept_fraction", math.nan) for h in rounds]
    acc = [h.get("eval", {}).get("accuracy", math.nan) for h in rounds]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, kept, marker="o", label="kept fraction")
    if any(not math.isnan(a) for a in acc):
        ax.plot(xs, acc, marker="s", label="eval accuracy")
    for h, style, name in (
        (next((h for h in history if h.get("stage") == "base"), None), ":", "base model"),
        (next((h for h in history if h.get("stage") == "final"), None), "--", "final judge"),
    ):
        value = (h or {}).get("eval", {}).get("accuracy")
        if value is not None and not math.isnan(value):
            ax.axhline(value, linestyle=style, color="gray", label=f"{name} accuracy")
    ax.set_xlabel("round (0 = initial judge)")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("GRAM-R² self-training")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
