"""Every figure of the toolkit: one style, one atomic PNG save (:func:`styled_figure`), and the charts of
the top-p and missing-input sweeps. Attention maps are drawn by :mod:`e2e.reporting.attention_maps`.

Figures are :class:`matplotlib.figure.Figure` objects rendered by Agg, never pyplot: no backend is
chosen and no figure registry is kept, so plotting works in any process under whatever backend it set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import cycler
from matplotlib.figure import Figure

from data_reorg.io import atomic_path
from e2e.reporting.tables import RAW_METRICS, mean_std, metric_label, metric_scale

DPI = 100
CHART_SIZE = (6.5, 4.5)  # inches per chart panel
ATTENTION_MAP_SIZE = (7.2, 9.6)  # fixed, so every attention map is 720×960 pixels
COLORS = {"main": "tab:blue", "f1": "tab:orange", "gflops": "tab:green", "kept_sites": (1.0, 0.15, 0.0)}
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "figure.titlesize": 8,
    "legend.fontsize": 7,
    "axes.prop_cycle": cycler(color=matplotlib.colormaps["tab10"].colors),  # one colour per model line
}


@contextlib.contextmanager
def styled_figure(
    path: Path, size: tuple[float, float], rows: int = 1, columns: int = 1
) -> Iterator[tuple[Figure, np.ndarray]]:
    """A figure of ``size`` inches with a (rows, columns) array of axes to draw on inside the block, in
    :data:`STYLE` (applied while the block runs: text takes its size when it is created); saved to
    ``path`` as PNG when the block ends without error, via a temporary file renamed into place, so a
    reader never sees half an image."""
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=size, dpi=DPI)
        axes = figure.subplots(rows, columns, squeeze=False)
        yield figure, axes
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")


def plot_top_p(rows: list[dict], metrics: tuple[str, str], path: Path) -> None:
    """The first two main metrics (e.g. Acc and F1; mean ± std over seeds) against p, GFLOPs on a second
    axis, FE2E as horizontal reference lines."""
    mesm = [row for row in rows if row["model"] == "mesm"]
    fe2e = [row for row in rows if row["model"] == "fe2e"]
    ps = sorted({row["p"] for row in mesm})
    with styled_figure(path, CHART_SIZE) as (figure, axes):
        left = axes[0, 0]
        right = left.twinx()
        for key, color in zip(metrics, (COLORS["main"], COLORS["f1"])):
            stats = [mean_std([metric_scale(key) * row[key] for row in mesm if row["p"] == p]) for p in ps]
            left.errorbar(
                ps,
                [m for m, _ in stats],
                yerr=[s for _, s in stats],
                color=color,
                marker="o",
                capsize=3,
                label=f"MESM {metric_label(key)}",
            )
            left.axhline(
                mean_std([metric_scale(key) * row[key] for row in fe2e])[0],
                color=color,
                linestyle="--",
                label=f"FE2E {metric_label(key)}",
            )
        gflops = [mean_std([row["gflops"] for row in mesm if row["p"] == p])[0] for p in ps]
        right.plot(ps, gflops, color=COLORS["gflops"], marker="s", label="MESM GFLOPs")
        right.axhline(
            mean_std([row["gflops"] for row in fe2e])[0], color=COLORS["gflops"], linestyle=":", label="FE2E GFLOPs"
        )
        for axis in (left, right):
            axis.margins(y=0.15)  # keep reference lines at a data extreme off the frame
        right.set_ylim(bottom=0)  # GFLOPs from zero: the saving reads as a proportion
        left.set_xlabel("top-p (fraction of attention mass kept)")
        left.set_ylabel(_axis_label("test metric", metrics))
        right.set_ylabel("GFLOPs per utterance (feature extraction)")
        handles = [h for axis in (left, right) for h in axis.get_legend_handles_labels()[0]]
        left.legend(handles, [h.get_label() for h in handles], loc="lower right")
        left.set_title(f"MESM top-p sweep (seeds: {len({row['seed'] for row in rows})})")
        figure.tight_layout()


def plot_missing(rows: list[dict], metric: str, path: Path) -> None:
    """One panel per mode: ``metric`` (mean ± std over seeds; % for a fraction) against the missing rate,
    a line per model."""
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    size = (CHART_SIZE[0] * len(modes), CHART_SIZE[1])
    with styled_figure(path, size, columns=len(modes)) as (figure, axes):
        for axis, mode in zip(axes[0], modes):
            for model in dict.fromkeys(row["model"] for row in rows):
                points = [row for row in rows if row["mode"] == mode and row["model"] == model]
                rates = sorted({row["rate"] for row in points})
                stats = [
                    mean_std([metric_scale(metric) * row[metric] for row in points if row["rate"] == rate])
                    for rate in rates
                ]
                axis.errorbar(
                    rates, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=2, label=model
                )
            axis.set_xlabel(
                "missing rate"
                + (
                    " (fraction of frames, chunks, tokens)"
                    if mode == "elements"
                    else " (probability a modality is removed)"
                )
            )
            axis.set_ylabel(_axis_label(f"test {metric_label(metric)}", (metric,)))
            axis.set_title(f"missing {mode}")
            axis.grid(alpha=0.3)
        axes[0][-1].legend(ncol=2)
        figure.tight_layout()


def _axis_label(text: str, metrics: tuple[str, ...]) -> str:
    """``text`` with " (%)" when every metric on the axis is a fraction."""
    return text if any(metric in RAW_METRICS for metric in metrics) else f"{text} (%)"
