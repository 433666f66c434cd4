"""Line panels for the gradient reports: one panel per value of a key, one line per
(method, accumulator) series. Knows nothing about numerics."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .figures import plt, variant_label, variant_style

__all__ = ["line_panels", "grad_caption"]


def grad_caption(formats, seed, bits: int = 100) -> str:
    """The gradient reports' caption: formats, seed and ground-truth precision."""
    return (f"Formats: {', '.join(formats)}. Seed {seed}. Ground truth: certified gradient "
            f"(ball arithmetic, proven error bound) of the inputs as rounded into each format, "
            f"at least {bits} correct bits per entry.")


def line_panels(df: pd.DataFrame, x: str, y: str, panel_key: str, panels, series,
                xlabel: str, ylabel: str, title: str, xscale: str = "log",
                hline: float | None = None, floor=1e-10):
    """A row of panels (one per value of `panel_key`) with a line per (method, accumulator)
    in `series` (a list, or {panel: list}); y values below `floor` (a number or {panel: number};
    exact ones included) drawn at it."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        d = df[df[panel_key] == p]
        for method, acc in (series[p] if isinstance(series, dict) else series):
            s = d[(d["method"] == method) & (d["accumulator"] == acc)].sort_values(x)
            if len(s):
                lo = floor[p] if isinstance(floor, dict) else floor
                ax.plot(s[x], np.maximum(s[y].to_numpy(dtype=float), lo),
                        label=variant_label(method, acc), **variant_style(method, acc))
        if hline is not None:
            ax.axhline(hline, color="0.45", linewidth=0.9, linestyle=":")
        if xscale == "symlog":  # a log axis that keeps 0 (epoch 0), nothing left of it
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=0)
        else:
            ax.set_xscale(xscale)
        ax.set_yscale("log")
        ax.set_title(p if panel_key == "format" else f"{panel_key} = {p}", fontsize=10)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    seen = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    handles, labels = list(seen.values()), list(seen)
    fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)),
               bbox_to_anchor=(0.5, 1.12), fontsize=8, frameon=False)
    fig.suptitle(title, y=1.18, fontsize=10)
    return fig
