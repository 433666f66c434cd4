"""Tables: CSV (exact round trip), Markdown and booktabs LaTeX. Knows nothing about numerics."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..running.storage import atomic_write

__all__ = ["write_csv", "write_markdown", "write_latex", "format_number", "formatted",
           "latex_table", "markdown_table"]


def write_csv(df: pd.DataFrame, path) -> Path:
    """CSV with full round-trip precision (repr of floats), so the same data is the same bytes."""
    with atomic_write(path) as f:
        df.to_csv(f, index=False, lineterminator="\n")
    return Path(path)


def format_number(v) -> str:
    """Three significant digits for tables; integers as such; nan/inf spelled out."""
    if isinstance(v, str):
        return v
    if isinstance(v, (int,)) or (hasattr(v, "is_integer") and float(v).is_integer()
                                 and abs(v) < 1e6):
        return f"{int(v)}"
    v = float(v)
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return f"{v:.3g}"


def formatted(df: pd.DataFrame, formats: dict | None = None) -> pd.DataFrame:
    """Numbers formatted (by `formats[column]` where given, else `format_number`), text kept."""
    formats = formats or {}
    out = df.copy()
    for c in out.columns:
        if c in formats or out[c].dtype != object:
            f = formats.get(c, format_number)
            out[c] = out[c].map(lambda v, f=f: v if isinstance(v, str) else f(v))
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """The table as Markdown text, numbers as `format_number` writes them."""
    return formatted(df).to_markdown(index=False) + "\n"


def write_markdown(df: pd.DataFrame, path, title: str | None = None,
                   caption: str | None = None, notes: str | None = None) -> Path:
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if caption:
        parts.append(f"{caption}\n")
    parts.append(markdown_table(df))
    if notes:
        parts.append(f"\n{notes}\n")
    with atomic_write(path) as f:
        f.write("\n".join(parts))
    return Path(path)


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("$", r"\$")):
        s = s.replace(a, b)
    return s


def write_latex(df: pd.DataFrame, path, caption: str, label: str,
                formats: dict | None = None) -> Path:
    """A booktabs table ready to \\input{} (needs \\usepackage{booktabs})."""
    with atomic_write(path) as f:
        f.write(latex_table(df, caption, label, formats))
    return Path(path)


def latex_table(df: pd.DataFrame, caption: str, label: str, formats: dict | None = None) -> str:
    """The booktabs table environment of `df` as text."""
    body = formatted(df, formats)
    cols = [_tex_escape(str(c)) for c in body.columns]
    align = "".join("l" if df[c].dtype == object else "r" for c in df.columns)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small",
             rf"\caption{{{_tex_escape(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(cols) + r" \\",
             r"\midrule"]
    for row in body.itertuples(index=False):
        lines.append(" & ".join(_tex_escape(str(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
