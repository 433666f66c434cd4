"""Writing reports: tables (CSV, Markdown, booktabs LaTeX), figures (PNG, PDF), provenance.

Knows nothing about numerics. Every file is written atomically (a temporary file in the same
directory, then `os.replace`), so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

__all__ = ["atomic_write", "write_csv", "write_markdown", "write_latex", "save_figure",
           "write_metadata", "provenance", "format_number"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """Open a temporary file beside `path`; on success move it over `path`.

    The data is flushed to disk before the rename, so after a crash `path` holds either its
    old contents or the new ones, never a part. An exception inside the block leaves `path`
    untouched and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8",
                                                             "newline": ""})) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive(lock_path, busy: str, remove: bool = False):
    """Hold an exclusive posix lock on `lock_path`, or raise InputError(`busy`) at once;
    `remove` deletes the lock file after a successful block."""
    from .inputs import InputError
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not posix: no lock
        yield
        return
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(busy) from None
        yield
        if remove:
            with contextlib.suppress(OSError):
                lock_path.unlink()
    finally:
        f.close()


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


def _formatted(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda col: col.map(format_number) if col.dtype != object else col)


def write_markdown(df: pd.DataFrame, path, title: str | None = None,
                   caption: str | None = None, notes: str | None = None) -> Path:
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if caption:
        parts.append(f"{caption}\n")
    parts.append(_formatted(df).to_markdown(index=False) + "\n")
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


def write_latex(df: pd.DataFrame, path, caption: str, label: str) -> Path:
    """A booktabs table ready to \\input{} (needs \\usepackage{booktabs})."""
    body = _formatted(df)
    cols = [_tex_escape(str(c)) for c in body.columns]
    align = "".join("l" if df[c].dtype == object else "r" for c in df.columns)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small",
             rf"\caption{{{_tex_escape(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(cols) + r" \\",
             r"\midrule"]
    for row in body.itertuples(index=False):
        lines.append(" & ".join(_tex_escape(str(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    with atomic_write(path) as f:
        f.write("\n".join(lines))
    return Path(path)


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


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "precision_lab", "experiments"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """Date, commit, versions and machine, for metadata.json."""
    import matplotlib
    import ml_dtypes
    import mpmath
    import numpy
    import torch
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": {"python": platform.python_version(), "numpy": numpy.__version__,
                     "torch": torch.__version__, "mpmath": mpmath.__version__,
                     "mpmath_backend": mpmath.libmp.BACKEND,
                     "ml_dtypes": ml_dtypes.__version__, "pandas": pd.__version__,
                     "matplotlib": matplotlib.__version__},
        "cpu": _cpu(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
    }


def write_metadata(out_dir, **fields) -> Path:
    path = Path(out_dir) / "metadata.json"
    with atomic_write(path) as f:
        json.dump({**provenance(), **fields}, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    return path
