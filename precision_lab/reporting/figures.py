"""Shared figure helpers: one fixed colour per method (line style per accumulator) in every
figure, formats as panels in a fixed order, each format's overflow logit and unit roundoff
marked, non-finite results drawn rather than dropped.

Rendering only: every function takes a tidy results DataFrame (or plain numbers) and draws.
The Agg backend is selected on import; figures are written by `report.save_figure`.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..numerics.arithmetic import OWN  # noqa: E402
from ..numerics.formats import FORMATS, get_format  # noqa: E402
from ..numerics.methods import METHODS  # noqa: E402
from ..running.storage import atomic_write  # noqa: E402
from ..truth.reference import DEFAULT_BITS  # noqa: E402

__all__ = ["FORMAT_ORDER", "method_color", "register_colors", "variant_style", "variant_label",
           "variants_in", "formats_in", "format_title", "mark_unit_roundoff", "mark_vline",
           "floored", "legend_handles", "figure_legend", "caption", "plot_error_panels",
           "nonfinite_cmap", "error_cmap", "BOUND_STYLE", "method_style", "FAMILY_GROUPS",
           "GROUP_LABEL", "plt",
           "crossing", "error_text", "with_variant", "order_table", "error_pivot", "panel_grid",
           "legend_rows", "light_log_axis", "machine_marked", "heatmap_grid", "heatmap_columns",
           "save_figure", "truth_sentence", "error_panels_legend"]

FORMAT_ORDER = tuple(FORMATS)  # float16, bfloat16, float32, float64, float8s, tf32

_SPARE = ["#7f7f7f", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]

# The accumulator is the line style: solid for the working format, dashed for float32.
ACC_STYLE = {"working": {"linestyle": "-", "marker": "o"},
             "float32": {"linestyle": "--", "marker": "^", "markerfacecolor": "white"},
             OWN: {"linestyle": "-", "marker": "s"}}
ACC_ORDER = {"working": 0, OWN: 0, "float32": 1}

BOUND_STYLE = {"color": "black", "linestyle": ":", "linewidth": 1.6}
MARK_STYLE = {"color": "0.45", "linewidth": 0.9}
LIMIT_STYLE = {"color": "0.82", "linewidth": 0, "zorder": 0}


_EXTRA_COLORS: dict[str, str] = {}


def register_colors(colors: dict) -> None:
    """Colours for series that are not registered methods (library implementations): name ->
    colour, used by `method_color` like a method record's own."""
    _EXTRA_COLORS.update(colors)


def method_color(method: str) -> str:
    """The method's own colour (its record's), the same in every figure of every report."""
    if method in METHODS and METHODS[method].color:
        return METHODS[method].color
    if method in _EXTRA_COLORS:
        return _EXTRA_COLORS[method]
    return _SPARE[sum(method.encode()) % len(_SPARE)]


def variant_label(method: str, accumulator: str) -> str:
    if accumulator == "float32":
        return f"{method} (float32 sum)"
    return method


def variant_style(method: str, accumulator: str, markers: bool = True) -> dict:
    style = {"color": method_color(method), "linewidth": 1.5, "markersize": 3.5,
             **ACC_STYLE.get(accumulator, ACC_STYLE["working"])}
    if not markers:
        style["marker"] = None
    return style


def _method_rank(m: str) -> int:
    names = list(METHODS)
    return names.index(m) if m in names else len(names)


def variants_in(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (method, accumulator) pairs present, in registry order, working before float32."""
    pairs = df[["method", "accumulator"]].drop_duplicates().itertuples(index=False)
    return sorted(((m, a) for m, a in pairs),
                  key=lambda p: (_method_rank(p[0]), ACC_ORDER.get(p[1], 2), p[0]))


def formats_in(df: pd.DataFrame) -> list[str]:
    present = set(df["format"])
    return [f for f in FORMAT_ORDER if f in present] + sorted(present - set(FORMAT_ORDER))


def format_title(fmt: str) -> str:
    f = get_format(fmt)
    return f"{fmt}  (u = 2^-{f.precision}, overflow logit {f.overflow_logit:.2f})"


def mark_unit_roundoff(ax, fmt: str, label: bool = True) -> None:
    """A horizontal line at the format's unit roundoff u on a relative-error axis."""
    u = get_format(fmt).unit_roundoff
    ax.axhline(u, **MARK_STYLE, linestyle="--", zorder=1)
    if label:  # outside the panel, at the line's height, off the data
        ax.annotate("u", xy=(1.0, u), xycoords=("axes fraction", "data"),
                    xytext=(2, 0), textcoords="offset points", ha="left", va="center",
                    fontsize=7, color="0.35", annotation_clip=False)


def mark_vline(ax, x: float, text: str | None, y: float = 0.97, side: str = "right",
               linestyle: str = "-.") -> None:
    """A vertical marker (an overflow logit, a class count) with a small rotated label on
    `side` of the line (no label when `text` is None)."""
    if x is None or not np.isfinite(x):
        return
    ax.axvline(x, **MARK_STYLE, linestyle=linestyle, zorder=1)
    if text:
        ax.annotate(text, xy=(x, y), xycoords=("data", "axes fraction"),
                    xytext=(2 if side == "right" else -2, 0), textcoords="offset points",
                    rotation=90, ha="left" if side == "right" else "right", va="top",
                    fontsize=6, color="0.3",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.8,
                          "linewidth": 0})


CEILING = 1e10  # relative errors beyond this are drawn at it (the panel's top)


def floored(values, floor: float, ceiling: float = CEILING) -> np.ndarray:
    """Values for a log axis: anything below `floor` (exact results: 0) drawn at `floor`,
    anything above `ceiling` at `ceiling`."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v), np.clip(v, floor, ceiling), np.nan)


def legend_handles(pairs, bound: bool = False, limit: bool = False) -> list:
    handles = [Line2D([], [], label=variant_label(m, a), **variant_style(m, a)) for m, a in pairs]
    if bound:
        handles.append(Line2D([], [], label="BHH bound (log1p form, median over rows)",
                              **BOUND_STYLE))
    if limit:
        handles.append(Patch(label="rows the format cannot represent", **LIMIT_STYLE))
    return handles


def figure_legend(fig, pairs, bound: bool = False, ncol: int | None = None,
                  limit: bool = False):
    """One legend for the whole figure, centred at its bottom edge (leave room there)."""
    handles = legend_handles(pairs, bound, limit)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0),
               ncol=ncol or min(len(handles), 6), fontsize=8, frameon=False)


def _pow10(v, _pos=None) -> str:
    if v <= 0 or not np.isfinite(v):
        return ""
    e = np.log10(v)
    if abs(e - round(e)) > 1e-9:
        return ""
    e = int(round(e))
    return {0: "1", 1: "10", 2: "100", -1: "0.1", -2: "0.01"}.get(e, f"1e{e}")


def light_log_axis(axis, max_major: int = 7) -> None:
    """Log-axis ticks that are cheap to draw (the figures hold dozens of panels): at most
    `max_major` labelled powers of ten, plain-text labels (1e-3) rather than mathtext, no minor
    ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    axis.set_major_locator(LogLocator(base=10, numticks=max_major))
    axis.set_major_formatter(FuncFormatter(_pow10))
    axis.set_minor_locator(NullLocator())


def legend_rows(n_entries: int, ncol: int = 6) -> int:
    return -(-n_entries // ncol)


def panel_grid(nrows: int, ncols: int, panel_w: float, heights, top: float = 0.75,
               bottom: float = 0.5, left: float = 0.85, right: float = 0.15,
               hspace: float = 0.12, wspace: float = 0.25, sharex: bool = True):
    """A figure of nrows x ncols axes with fixed margins in inches (no layout engine: the
    figures are large and constrained layout dominates the cost of drawing them).
    `heights` are the rows' heights in inches; `bottom` leaves room for a legend."""
    heights = list(heights)
    inner_h = sum(heights) * (1 + hspace)
    inner_w = ncols * panel_w * (1 + wspace)
    w, h = left + inner_w + right, top + inner_h + bottom
    fig = plt.figure(figsize=(w, h))
    gs = fig.add_gridspec(nrows, ncols, left=left / w, right=1 - right / w, top=1 - top / h,
                          bottom=bottom / h, height_ratios=heights, hspace=hspace,
                          wspace=wspace)
    axes = np.empty((nrows, ncols), dtype=object)
    for r in range(nrows):
        for c in range(ncols):
            share = axes[0, c] if (sharex and r > 0) else None
            axes[r, c] = fig.add_subplot(gs[r, c], sharex=share)
            if sharex and r < nrows - 1:
                axes[r, c].tick_params(labelbottom=False)
    return fig, axes


def truth_sentence(formats, bits: int = 100) -> str:
    """What every table is measured against, and in which formats."""
    bits = bits or DEFAULT_BITS
    return (f"Formats: {', '.join(formats)}. Ground truth: certified (proven error bound, "
            f"cross-checked against mpmath) loss of the inputs as rounded into each format, at "
            f"least {bits} correct bits per loss.")


def caption(formats, seed, bits: int = 100, extra: str = "") -> str:
    """The standard caption: formats, seed and ground-truth precision."""
    text = truth_sentence(formats, bits)
    text = text.replace(". Ground truth", f". Seed {seed}. Ground truth", 1)
    return f"{text} {extra}".strip()


def error_panels_legend(markers: str) -> str:
    """How to read a `plot_error_panels` figure; `markers` describes its vertical lines."""
    return ("Columns: formats, float16 and bfloat16 also with float32 sums (torch, with its own "
            "accumulator, in the plain column). Panels: the unshifted and softmax families "
            "above, the shifted and library families below; one colour per family, line "
            "styles tell its methods apart. Dotted black: the Blanchard-Higham-Higham bound "
            "(log1p form), median over the rows of bound / loss; 'u': the format's unit "
            f"roundoff. {markers} Errors below u/100, including "
            "exact results, are drawn at u/100; the strip under each panel is the fraction of "
            "rows whose loss is non-finite, grey where the format cannot represent the row.")


def nonfinite_cmap():
    return plt.get_cmap("Reds").with_extremes(bad="0.85")


def error_cmap():
    # every row non-finite: no finite error to show, drawn black
    return plt.get_cmap("viridis").with_extremes(bad="black")


# Small multiples: each panel shows one group of method families (at most about six series),
# columns are formats and, for float16 and bfloat16, their float32-sum variant.
FAMILY_GROUPS = (("unshifted", "softmax"), ("shifted", "library"))
GROUP_LABEL = {FAMILY_GROUPS[0]: "unshifted & softmax", FAMILY_GROUPS[1]: "shifted & library"}
_STYLES = ({"linestyle": "-", "marker": "o"}, {"linestyle": "--", "marker": "s"},
           {"linestyle": ":", "marker": "^"}, {"linestyle": "-.", "marker": "D"})


def method_style(method: str, markers: bool = True) -> dict:
    """The method's family colour (its record's) and a line style and marker that tell the
    methods of one family apart (registry order within the family)."""
    rec = METHODS.get(method)
    same = [m for m in METHODS.values() if rec is not None and m.family == rec.family]
    i = [m.name for m in same].index(method) if rec is not None else 0
    style = {"color": method_color(method), "linewidth": 1.4, "markersize": 3.2,
             **_STYLES[i % len(_STYLES)]}
    if not markers:
        style["marker"] = None
    return style


def _group_of(method: str) -> int:
    rec = METHODS.get(method)
    fam = rec.family if rec is not None else "library"
    return next((i for i, g in enumerate(FAMILY_GROUPS) if fam in g), len(FAMILY_GROUPS) - 1)


def plot_error_panels(df: pd.DataFrame, x: str, row_key: str, row_values, row_label,
                      metric: str = "rel_err_median", xlog: bool = True, xlabel: str = "",
                      ylabel: str = "median relative error", bound: bool = True,
                      vlines=None, title: str | None = None):
    """Small multiples of `metric` against `x`: one column per format and accumulator (float16
    and bfloat16 also with float32 sums; torch's own accumulator in the plain column), and for
    each value of `row_key` one error panel per group of method families (FAMILY_GROUPS: at most
    five methods each, in their family's colour, told apart by line style), each above a short
    strip with the fraction of non-finite results, so a method that overflows shows as a gap
    above and a rise to 1 below, never as a missing line. The BHH bound is dotted black in the
    shifted panels; u and the markers are labelled outside the data.

    `vlines(ax, fmt, row_value, sub)` draws markers (sub is a DataFrame of that panel, None on
    the strips). Exact results (error 0) are drawn at the floor u / 100 of each format.
    Returns the figure.
    """
    df = df[df["reduction"] == "none"]
    cols = heatmap_columns(df)
    methods = [m for m, _ in variants_in(df)]
    methods = list(dict.fromkeys(methods))
    groups = [g for g in range(len(FAMILY_GROUPS)) if any(_group_of(m) == g for m in methods)]
    row_values = list(row_values)
    heights = [2.0, 0.55] * (len(groups) * len(row_values))
    n_leg = len(methods) + int(bound) + int("representable_frac" in df)
    fig, axes = panel_grid(len(heights), len(cols), 2.55, heights,
                           top=0.95 if title else 0.6,
                           bottom=0.55 + 0.2 * legend_rows(n_leg, 5), hspace=0.18,
                           wspace=0.28)
    xs = df[x].to_numpy(dtype=np.float64)
    xs = xs[np.isfinite(xs)]
    for r, rv in enumerate(row_values):
        for gi, g in enumerate(groups):
            row = 2 * (r * len(groups) + gi)
            for c, (fmt, acc) in enumerate(cols):
                ax, axn = axes[row, c], axes[row + 1, c]
                sub = df[(df[row_key] == rv) & (df["format"] == fmt)]
                accs = [acc] if acc == "float32" else [acc, OWN]
                panel = sub[sub["accumulator"].isin(accs)]
                u = get_format(fmt).unit_roundoff
                floor = u / 100
                top = floor
                for m in methods:
                    if _group_of(m) != g:
                        continue
                    gm = panel[panel["method"] == m].sort_values(x)
                    if gm.empty:
                        continue
                    y = floored(gm[metric], floor)
                    if np.isfinite(y).any():
                        top = max(top, np.nanmax(y))
                    ax.plot(gm[x], y, label=m, **method_style(m, markers=len(gm) <= 12))
                    axn.plot(gm[x], gm["nonfinite_frac"], **method_style(m, markers=False))
                if "representable_frac" in sub and sub["representable_frac"].notna().any():
                    gr = sub.dropna(subset=["representable_frac"]).drop_duplicates(x)
                    gr = gr.sort_values(x)
                    axn.fill_between(gr[x], 0, 1 - gr["representable_frac"], **LIMIT_STYLE)
                if bound and "bhh_bound_rel_median" in sub and FAMILY_GROUPS[g] == \
                        FAMILY_GROUPS[-1]:
                    gb = sub[(sub["method"] == "log1p") & (sub["accumulator"] == acc)]
                    gb = gb.sort_values(x)
                    if gb["bhh_bound_rel_median"].notna().any():
                        yb = floored(gb["bhh_bound_rel_median"], floor)
                        ax.plot(gb[x], yb, **BOUND_STYLE)
                        if np.isfinite(yb).any():
                            top = max(top, min(np.nanmax(yb), 10.0))
                mark_unit_roundoff(ax, fmt, label=True)
                ax.set_yscale("log")
                light_log_axis(ax.yaxis, max_major=5)
                ax.set_ylim(floor / 2, min(max(top * 3, u * 10), CEILING * 3))
                axn.set_ylim(-0.05, 1.05)
                axn.set_yticks([0, 1])
                if xlog:
                    ax.set_xscale("log")
                    light_log_axis(ax.xaxis)
                if vlines is not None:
                    vlines(ax, fmt, rv, sub if (r == 0 and gi == 0) else None)
                    vlines(axn, fmt, rv, None)
                if len(xs):  # the x range of the data run (a single value: a small span)
                    lo, hi = xs.min(), xs.max()
                    if xlog and lo > 0:
                        pad = (hi / lo) ** 0.03 if hi > lo else 1.5
                        ax.set_xlim(lo / pad, hi * pad)
                    else:
                        pad = 0.03 * (hi - lo) if hi > lo else max(abs(lo) * 0.05, 0.5)
                        ax.set_xlim(lo - pad, hi + pad)
                if row == 0:
                    ax.set_title(f"{fmt}" + (", float32 sums" if acc == "float32" else "")
                                 + f"\nu = 2^-{get_format(fmt).precision}, overflow logit "
                                 f"{get_format(fmt).overflow_logit:.2f}", fontsize=8)
                if c == 0:
                    lab = row_label(rv)
                    ax.set_ylabel((f"{lab}\n" if lab else "") + f"{GROUP_LABEL[FAMILY_GROUPS[g]]}"
                                  f"\n{ylabel}", fontsize=7)
                    axn.set_ylabel("non-finite\nfraction", fontsize=6)
                ax.grid(True, which="major", alpha=0.3)
                axn.grid(True, alpha=0.3)
                ax.tick_params(labelsize=6)
                axn.tick_params(labelsize=6)
    for c in range(len(cols)):
        axes[-1, c].set_xlabel(xlabel, fontsize=8)
    handles = [Line2D([], [], label=m, **method_style(m)) for m in methods]
    if bound:
        handles.append(Line2D([], [], label="BHH bound (log1p form, median over rows)",
                              **BOUND_STYLE))
    if "representable_frac" in df:
        handles.append(Patch(label="rows the format cannot represent", **LIMIT_STYLE))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=5,
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


# ------------------------------------------------------------- shared table helpers ----------

def crossing(x, v, level: float) -> float:
    """The x at which the increasing-ish series v first reaches `level`, interpolated on log
    axes between the two grid points around it; nan if it never does or already starts there."""
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(x) & (x > 0)
    x, v = x[ok], v[ok]
    above = np.flatnonzero(v >= level)
    if len(above) == 0 or above[0] == 0:
        return np.nan
    i = above[0]
    f = (np.log(level) - np.log(v[i - 1])) / (np.log(v[i]) - np.log(v[i - 1]))
    return float(np.exp(np.log(x[i - 1]) + f * (np.log(x[i]) - np.log(x[i - 1]))))


def error_text(rel_err_median: float, nonfinite_frac: float, count: int | None = None) -> str:
    """A table entry: the median relative error over finite rows, the non-finite rows in
    brackets (as a count k/n when `count` is given, so 1 of 539 never prints as 0%), 'all
    non-finite' when none is finite, and a median over fewer than 5 finite rows flagged."""
    if nonfinite_frac >= 1:
        return "all non-finite"
    v = "0" if rel_err_median == 0 else f"{rel_err_median:.2g}"
    if nonfinite_frac > 0:
        if count:
            bad = int(round(nonfinite_frac * count))
            v += f" ({bad}/{int(count)} non-finite)"
            if count - bad < FEW_ROWS:
                v += " [few rows]"
        else:
            v += f" ({100 * nonfinite_frac:.0f}% non-finite)"
    return v


FEW_ROWS = 5  # a median over fewer finite rows than this is flagged in tables


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    """df with a 'variant' column: the method, with ' (float32 sum)' for the float32 variant."""
    return df.assign(variant=[variant_label(m, a) for m, a in zip(df["method"],
                                                                  df["accumulator"])])


def order_table(table: pd.DataFrame, fmts, pairs) -> pd.DataFrame:
    """Rows in format order, then method (registry) order, working before float32."""
    order = {variant_label(m, a): i for i, (m, a) in enumerate(pairs)}
    table = table.assign(_f=table["format"].map({f: i for i, f in enumerate(fmts)}),
                         _v=table["variant"].map(order))
    table = table.sort_values(["_f", "_v"], kind="stable").drop(
        columns=["_f", "_v"]).reset_index(drop=True)
    return table.assign(variant=table["variant"].map(machine_marked))


MACHINE_MARK = " [machine-dependent]"


def machine_marked(variant: str) -> str:
    """A table's variant label, marked where the method runs a library's own kernels (its
    record's family is "library": torch's CPU kernels depend on ATEN_CPU_CAPABILITY)."""
    m = variant.split(" (")[0]
    if m in METHODS and METHODS[m].family == "library" and MACHINE_MARK not in variant:
        return variant + MACHINE_MARK
    return variant


def error_pivot(df: pd.DataFrame, column: str, values, label) -> pd.DataFrame:
    """A table: one row per (format, variant), one column per value of `column` (restricted
    to `values`), entries `error_text` of the per-row losses; columns named label(value)."""
    d = with_variant(df[(df["reduction"] == "none") & df[column].isin(values)])
    counts = d["count"] if "count" in d else [None] * len(d)
    d = d.assign(cell=[error_text(e, n, c) for e, n, c in zip(d["rel_err_median"],
                                                               d["nonfinite_frac"], counts)])
    piv = d.pivot_table(index=["format", "variant"], columns=column, values="cell",
                        aggfunc="first", sort=False).reset_index()
    piv = order_table(piv, formats_in(d), variants_in(d))
    piv.columns.name = None
    return piv.rename(columns={v: label(v) for v in values})


# ------------------------------------------------------------------- heatmaps ----------------

def heatmap_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(format, accumulator) panel columns: each format with working sums, then its float32
    variant where it has one."""
    cols = []
    for fmt in formats_in(df):
        accs = set(df[df["format"] == fmt]["accumulator"])
        cols.append((fmt, "working"))
        if "float32" in accs:
            cols.append((fmt, "float32"))
    return cols


def heatmap_grid(df: pd.DataFrame, values, title: str, cbar_label: str, norm, cmap,
                 x: str = "scale", y: str = "classes", mark_partial: bool = True,
                 mark_limit: bool = True, footnote: str | None = None):
    """Heatmaps of `values(sub)` (an array aligned with sub's rows) over x (columns of each
    panel) and y (rows), one panel per method (figure rows) and format + accumulator (figure
    columns; torch's own accumulator shares the working column). Cells where every row is
    non-finite are drawn black (nan); a white dot marks cells where some but not all rows are
    non-finite (mark_partial), a grey cross cells with rows the format cannot represent.
    """
    d = df[df["reduction"] == "none"]
    xs = sorted(d[x].unique())
    ys = sorted(d[y].unique())
    cols = heatmap_columns(d)
    methods = [m for m in METHODS if m in set(d["method"])]
    methods += sorted(set(d["method"]) - set(methods))
    fig, axes = panel_grid(len(methods), len(cols), 2.0, [1.55] * len(methods), top=0.85,
                           bottom=0.75, left=0.9, right=1.0, hspace=0.18, wspace=0.12,
                           sharex=False)
    xi = {v: i for i, v in enumerate(xs)}
    yi = {v: i for i, v in enumerate(ys)}
    mesh = None
    for r, m in enumerate(methods):
        for c, (fmt, acc) in enumerate(cols):
            ax = axes[r, c]
            sub = d[(d["method"] == m) & (d["format"] == fmt)
                    & (d["accumulator"] == acc if m != "torch" or acc == "float32"
                       else d["accumulator"].isin([acc, OWN]))]
            grid = np.full((len(ys), len(xs)), np.nan)
            if len(sub):
                v = np.asarray(values(sub), dtype=np.float64)
                for (xv, yv, val) in zip(sub[x], sub[y], v):
                    grid[yi[yv], xi[xv]] = val
                mesh = ax.pcolormesh(np.arange(len(xs) + 1) - 0.5, np.arange(len(ys) + 1) - 0.5,
                                     np.ma.masked_invalid(grid), norm=norm, cmap=cmap,
                                     shading="flat")
                if mark_partial:
                    p = sub[(sub["nonfinite_frac"] > 0) & (sub["nonfinite_frac"] < 1)]
                    if len(p):
                        ax.plot([xi[v] for v in p[x]], [yi[v] for v in p[y]], "o",
                                color="white", markersize=2.2, markeredgewidth=0)
                if mark_limit and "representable_frac" in sub:
                    p = sub[sub["representable_frac"] < 1]
                    if len(p):
                        ax.plot([xi[v] for v in p[x]], [yi[v] for v in p[y]], "x",
                                color="0.6", markersize=2.6, markeredgewidth=0.7)
            else:
                ax.set_facecolor("white")
                ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center",
                        fontsize=8, color="0.5")
            ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_ylim(-0.5, len(ys) - 0.5)
            xt = [i for i, v in enumerate(xs) if abs(np.log10(v) - round(np.log10(v))) < 1e-9]
            xt = xt[:: max(1, len(xt) // 4)] if len(xt) > 5 else xt
            ax.set_xticks(xt)
            ax.set_xticklabels([_pow10(xs[i]) for i in xt] if r == len(methods) - 1 else [],
                               fontsize=7)
            yt = list(range(0, len(ys), max(1, len(ys) // 4)))
            ax.set_yticks(yt)
            ax.set_yticklabels([_pow2(ys[i]) for i in yt] if c == 0 else [], fontsize=7)
            if r == 0:
                ax.set_title(fmt + (" + float32 sum" if acc == "float32" else ""), fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{m}\n{y}", fontsize=8)
            if r == len(methods) - 1:
                ax.set_xlabel(x, fontsize=8)
    if mesh is not None:
        w, h = fig.get_figwidth(), fig.get_figheight()
        cax = fig.add_axes([1 - 0.75 / w, 0.75 / h, 0.15 / w, 1 - 1.6 / h])
        cb = fig.colorbar(mesh, cax=cax)
        cb.set_label(cbar_label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / fig.get_figheight(), va="top")
    if footnote is None:
        footnote = ("black: every row non-finite;  white dot: some rows non-finite;  grey x: "
                    "some rows overflow the format itself (logits, log-sum-exp or loss);  n/a: "
                    "no such variant")
    fig.text(0.5, 0.15 / fig.get_figheight(), footnote,
             ha="center", va="bottom", fontsize=8, color="0.3")
    return fig


def _pow2(v) -> str:
    e = np.log2(v)
    return f"2^{int(round(e))}" if abs(e - round(e)) < 1e-9 else f"{v:g}"


def save_figure(fig, out_dir, stem: str) -> list[Path]:
    """Save `fig` as STEM.png and STEM.pdf, without timestamps, so reruns give the same bytes."""
    paths = []
    for ext, meta in (("png", {"Software": None}),
                      ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None,
                               "Creator": None})):
        path = Path(out_dir) / f"{stem}.{ext}"
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        paths.append(path)
    return paths


