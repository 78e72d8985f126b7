"""Regret plots of a comparison (matplotlib's Agg canvas: no display, no global backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from naslib_bayes.comparison.summary import CONFIDENCE, Summary
from naslib_bayes.results import atomic_write

#: Below this regret the y axis is linear, above it logarithmic (regrets reach 0 exactly).
SYMLOG_LINTHRESH = 0.1


def plot_regret(summary: Summary, dataset: str, path: Path) -> Path:
    """Mean regret vs queries with the bootstrap band, one line per optimizer.

    Legend entries are ordered by final mean regret (best first), so the legend reads as a
    ranking; the symlog axis shows both the early percent-level regrets and the zeros reached
    late.
    """
    rows = sorted((r for r in summary.rows if r.dataset == dataset), key=lambda r: (r.mean[-1], r.optimizer))
    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    queries = np.arange(1, summary.budget + 1)
    colours = _colours(summary.optimizers)
    for row in rows:
        colour = colours[row.optimizer]
        ax.plot(queries, row.mean, color=colour, lw=1.8, marker="o" if summary.budget == 1 else None,
                label=f"{row.optimizer} ({row.mean[-1]:.2f})")
        ax.fill_between(queries, row.low, row.high, color=colour, alpha=0.18, lw=0)
    ax.set_yscale("symlog", linthresh=SYMLOG_LINTHRESH)
    ax.set_ylim(bottom=0)
    ax.set_xlim(*((1, summary.budget) if summary.budget > 1 else (0.5, 1.5)))  # a budget of 1: one point, centred
    ax.set_xlabel("queries (initial design included)")
    ax.set_ylabel(f"regret of {summary.report_metric} (pp)")
    seeds = len(summary.seeds)
    ax.set_title(f"{dataset}: " + ("1 seed, no band (n=1)" if seeds == 1 else
                                   f"mean over {seeds} seeds, {CONFIDENCE:.0%} bootstrap band"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title=f"optimizer (regret @{summary.budget})", fontsize=9, title_fontsize=9,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    # Atomically: stopped mid-write (Ctrl-C), the previous plot stays whole rather than truncated.
    path = Path(path)
    image_format = path.suffix.lstrip(".").lower() or "png"  # as savefig would infer it from the name
    return atomic_write(path, lambda handle: fig.savefig(handle, format=image_format, metadata={"Software": None}),
                        binary=True)


def _colours(optimizers: list[str]) -> dict[str, tuple]:
    """A fixed colour per optimizer (by its position in the command), tab10 then tab20."""
    from matplotlib import colormaps

    palette = list(colormaps["tab10"].colors) + list(colormaps["tab20"].colors[1::2])
    return {name: palette[i % len(palette)] for i, name in enumerate(optimizers)}
