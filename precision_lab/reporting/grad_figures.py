"""Line panels for the gradient reports: one panel per value of a key, one line per
(method, accumulator) series, in its method family's colour (a backward variant such as
`fused_store_first` in its forward's), told apart within a family by line style. Knows
nothing about numerics."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..numerics.methods import GRAD_VARIANTS
from .figures import MARK_STYLE, light_log_axis, method_style, plt

__all__ = ["line_panels", "grad_caption", "series_style", "grad_truth"]

# A backward variant's line style (its forward's family uses the four of `method_style`).
VARIANT_STYLE = {"linestyle": (0, (5, 1, 1, 1, 1, 1)), "marker": "v"}


def grad_truth(formats, bits: int = 100) -> str:
    """What every gradient table is measured against, and in which formats."""
    return (f"Formats: {', '.join(formats)}. Ground truth: certified gradient (ball "
            f"arithmetic, proven error bound) of the inputs as rounded into each format, at "
            f"least {bits} correct bits per entry.")


def grad_caption(formats, seed, bits: int = 100) -> str:
    """The gradient reports' caption: formats, seed and ground-truth precision."""
    return grad_truth(formats, bits).replace(". Ground truth", f". Seed {seed}. Ground truth",
                                             1)


def series_style(method: str, markers: bool = True) -> dict:
    """The family colour and line style of a backward: a method's own (`method_style`), a
    variant's in its forward's colour with a style of its own."""
    if method in GRAD_VARIANTS:
        style = {**method_style(GRAD_VARIANTS[method][0]), **VARIANT_STYLE}
    else:
        style = method_style(method)
    if not markers:
        style["marker"] = None
    return style


def line_panels(df: pd.DataFrame, x: str, y: str, panel_key: str, panels, series,
                xlabel: str, ylabel: str, title: str, xscale: str = "log",
                hline: float | None = None, floor=1e-10, hline_label: str | None = None):
    """A row of panels (one per value of `panel_key`) with a line per (method, accumulator)
    in `series` (a list, or {panel: list}; at most about six), labelled by method (a panel
    whose series sum in float32 says so in its title); y values below `floor` (a
    number or {panel: number}; exact ones included) drawn at it. `hline` is labelled
    (`hline_label`) outside the panel, off the data."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.3), squeeze=False)
    for ax, p in zip(axes[0], panels):
        d = df[df[panel_key] == p]
        shown = series[p] if isinstance(series, dict) else series
        for method, acc in shown:
            s = d[(d["method"] == method) & (d["accumulator"] == acc)].sort_values(x)
            if len(s):
                lo = floor[p] if isinstance(floor, dict) else floor
                ax.plot(s[x], np.maximum(s[y].to_numpy(dtype=float), lo),
                        label=method, **series_style(method))
        if hline is not None:
            ax.axhline(hline, **MARK_STYLE, linestyle=":", zorder=1)
            if hline_label:
                ax.annotate(hline_label, xy=(1.0, hline), xycoords=("axes fraction", "data"),
                            xytext=(2, 0), textcoords="offset points", ha="left",
                            va="center", fontsize=7, color="0.35", annotation_clip=False)
        if xscale == "symlog":  # a log axis that keeps 0 (epoch 0), nothing left of it
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=0)
        else:
            ax.set_xscale(xscale)
            light_log_axis(ax.xaxis, max_major=6)
        ax.set_yscale("log")
        light_log_axis(ax.yaxis, max_major=6)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=7)
        f32 = any(a == "float32" for _, a in shown)
        ax.set_title((p if panel_key == "format" else f"{panel_key} = {p}")
                     + (", float32 sums" if f32 else ""), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    seen = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    handles, labels = list(seen.values()), list(seen)
    fig.tight_layout(rect=(0, 0, 1, 0.8))
    fig.legend(handles, labels, loc="upper center", ncol=min(5, len(labels)),
               bbox_to_anchor=(0.5, 0.91), fontsize=8, frameon=False)
    fig.suptitle(title, y=0.99, fontsize=10)
    return fig
