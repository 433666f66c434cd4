"""A user's own logits file, every row as given, in every requested format, method and
accumulator, against the certified truth, streamed in blocks of rows.

The file is never held whole (.npy, .pt and .safetensors are mapped; .npz and .csv are read
whole, as they cannot be mapped): rows are read in chunks sized from a memory budget, and each
chunk is one sweep cell (`running.sweep.run_cells`), so chunks run on workers or a Dask cluster
and a finished chunk is checkpointed. A chunk keeps, per row and variant, only the computed
loss, the certified truth (double-double), the BHH bound and a few row statistics: O(rows), not
O(rows x classes). Every statistic (median, 99th percentile, maximum, counts, the batch mean)
is then computed exactly from all rows at once, so the report is the same bytes whatever the
chunk size, worker count or scheduler.

Splitting cannot change a number: every method is row by row, torch's batch mean is formed
from its per-row losses exactly as F.cross_entropy forms it (`Method.mean_of_losses`), and the
certified truth is computed on fixed blocks of rows (`truth_block`, aligned to the analysed
rows, independent of the chunking: the engine's path, though never its guarantee, depends on
the rows it is given together); chunks are whole numbers of these blocks.

Training options (`options=`, a `numerics.options.LossOptions`; CLI: the flags `check` takes):
every row's loss is the method's reduction-"none" loss under the options (`Method(options=)`),
against the certified truth under them (`truth.options`, computed on the same fixed blocks),
the logits' and weights' values rounded into each format first, as `evaluate(options=)` does.
Rows whose target equals `ignore_index` are kept, counted and marked `ignored` (their loss is 0
in torch's semantics). The batch reduction (the options' own; "mean" when it is "none") is
formed from every method's per-row losses by `numerics.optioned.reduce_rows` (a sequential sum
in the accumulator, then the division by the kept rows' weight) -- for torch too, whose own
kernel would need the whole batch at once; its truth is the exact sum of the per-row truths
over the exact denominator. The BHH bound covers plain cross entropy only: none is checked
under options. Methods that cannot express an option in use are skipped (named with the reason
in the report), unless named in `methods` (InputError).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mpmath
import numpy as np
import pandas as pd

from ..data import files
from ..data.inputs import load_logits, read_csv, validate_batch
from ..errors import InputError
from ..numerics.arithmetic import ACCUMULATORS, check_accumulators
from ..numerics.bounds import bhh_bound, lse_terms
from ..numerics.formats import STANDARD_FORMATS, get_format
from ..numerics.methods import METHODS, get_method, shared_steps
from ..numerics.metrics import aggregate, error_columns
from ..numerics.optioned import reduce_rows
from ..numerics.options import LossOptions, check_batch, require_supported
from ..running.sweep import run_cells
from ..truth.fastref import CHUNK, ROWS
from ..truth.options import certified_option_losses
from ..truth.reference import DEFAULT_BITS, reference_truth, to_double_double
from .cells import GROUP, _median
from .evaluate import frozen, reading_frozen

__all__ = ["analyze", "Analysis", "analyze_chunk", "parse_memory", "truth_block",
           "sample_index", "plan_chunks", "top2_gap", "top2_gap_partition", "BYTES_PER_LOGIT",
           "DEFAULT_MEMORY", "ROW_STATS", "QUANTILE_METHOD"]

# Peak working memory of one chunk per logit (float64 logits, the rounded copy, the methods'
# float64 temporaries, the certified engine's): numpy's traced allocations measure ~197 bytes
# per logit for 8 x 8192 bfloat16 logits and every method
# (tests/test_analyze.py::test_chunk_working_memory_within_estimate); with a margin.
BYTES_PER_LOGIT = 256
DEFAULT_MEMORY = 512 << 20  # smaller arrays than 2 GiB gave: the same bytes, 5x less system time
# Quantiles are observed values: the smallest value with at least q of the rows at or below it.
QUANTILE_METHOD = "inverted_cdf"
ROW_STATS = ("max_logit", "top2_gap", "lse", "loss")


def parse_memory(text) -> int:
    """'2GiB', '512M', '1e9' -> bytes (K/M/G/T are powers of 1024, with or without 'iB')."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*",
                         str(text), flags=re.IGNORECASE)
        if not m:
            raise InputError(f"--memory must be a size such as 2GiB or 512M, got {text!r}")
        value = int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))
    if value < 1 << 20:
        raise InputError(f"--memory must be at least 1 MiB, got {text!r}")
    return value


def truth_block(classes: int) -> int:
    """Rows per certified-truth evaluation: the fixed-point engine's own rows per pass, so the
    truth of a row depends on its block alone (chunks are whole blocks)."""
    return max(1, min(CHUNK // max(classes, 1), ROWS))


def sample_index(total: int, rows: int | None, seed: int) -> np.ndarray | None:
    """The analysed rows: None for all; else a seeded sample of `rows`, in file order."""
    if rows is None or rows >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, rows, replace=False))


def plan_chunks(n: int, classes: int, memory: int, workers: int,
                block: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) positions of the analysed rows in chunks: whole truth blocks (`block`
    rows, default `truth_block(classes)`), each chunk's working memory within
    `memory` / `workers` (at least one block)."""
    block = block or truth_block(classes)
    per_chunk = (memory // max(workers, 1)) // (classes * BYTES_PER_LOGIT)
    blocks = max(1, per_chunk // block)
    step = blocks * block
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _csv_reader(p):
    return load_logits(p)


def _csv_raw(p):
    """A .csv's logits and raw targets (validated per chunk, under the options)."""
    a = read_csv(p)
    if a.ndim != 2 or a.shape[1] < 2:
        raise InputError(f"{p}: a .csv needs the logits then the target on each line")
    return a[:, :-1], a[:, -1]


def _cell_options(cell: dict) -> LossOptions | None:
    o = cell.get("options")
    return None if o is None else LossOptions(**o)


def _in_format(options: LossOptions | None, fmt) -> LossOptions | None:
    """The options with their weights rounded into the format (as `evaluate(options=)`)."""
    if options is None or options.weight is None:
        return options
    return replace(options, weight=tuple(fmt.round(options.weight_array).tolist()))


def _variants(formats, methods, accumulators):
    out = []
    for f in formats:
        for m in methods:
            for acc in get_method(m).accumulators(f, accumulators):
                out.append((f, m, acc))
    return out


def _read_chunk(cell: dict):
    index = sample_index(int(cell["file_rows"]), cell.get("sample_rows"), int(cell["seed"]))
    opts = _cell_options(cell)
    ign = None if opts is None else opts.ignore_index
    x, t = files.read_rows(cell["path"], int(cell["start"]), int(cell["stop"]), index,
                           csv_reader=_csv_reader if opts is None else _csv_raw,
                           ignore_index=ign)
    rows = np.arange(cell["start"], cell["stop"]) if index is None else \
        index[cell["start"]:cell["stop"]]
    c = x.shape[1] if x.ndim == 2 else 0
    t = np.asarray(t)
    if np.issubdtype(t.dtype, np.number):
        with np.errstate(invalid="ignore"):
            bad = ~((t >= 0) & (t < c))
            if ign is not None:
                bad &= t != ign
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{cell['path']}: target {t[i].item()} of row {int(rows[i])} is "
                             f"out of range [0, {c}) for {c} classes"
                             + ("" if ign is None else f" and not ignore_index ({ign})"))
    try:   # x is the reader's own fresh array: frozen, the check copies nothing
        x, t = validate_batch(frozen(x), t) if opts is None else check_batch(x, t, opts)
    except InputError as exc:
        raise InputError(f"{cell['path']} (rows {int(rows[0])}..{int(rows[-1])}): {exc}") \
            from None
    return x, t, rows


def _truth(xr, t, bits, block):
    """Certified per-row truth in fixed blocks of rows (see `truth_block`)."""
    his, los = [], []
    for s in range(0, len(t), block):
        tr = reference_truth(xr[s:s + block], t[s:s + block], bits=bits)
        his.append(tr.hi)
        los.append(tr.lo)
    return np.concatenate(his), np.concatenate(los)


def _option_truth(xr, t, options: LossOptions, bits, block):
    """Certified per-row truth under `options` (reduction "none"), in the same fixed blocks."""
    his, los = [], []
    for s in range(0, len(t), block):
        h, lo_ = to_double_double(certified_option_losses(xr[s:s + block], t[s:s + block],
                                                          options, bits).rows)
        his.append(np.asarray(h, dtype=np.float64))
        los.append(np.asarray(lo_, dtype=np.float64))
    return np.concatenate(his), np.concatenate(los)


def top2_gap(x: np.ndarray) -> np.ndarray:
    """Per row, the largest value minus the second largest (a repeated maximum: 0; nan where
    the row has a nan or is a single class, or the two are both +inf or both -inf): the
    difference of the last two of `np.partition(x, C - 2)` (`top2_gap_partition`, which it
    equals bit for bit), from one maximum, one argmax and one more maximum (float64)."""
    n, c = x.shape
    if c < 2:
        return np.full(n, np.nan)
    rows = np.arange(n)
    with np.errstate(invalid="ignore", over="ignore"):
        first = x.max(axis=1)              # nan if the row has one: so is the partition's top
        rest = np.array(x)
        rest[rows, np.argmax(x, axis=1)] = -np.inf   # one copy of the maximum out
        second = rest.max(axis=1)
        gap = first - second
    # top two both zeros: their order in the partition (so the sign of the zero gap) is the
    # partition's own, so those rows (rare) take it from the partition itself
    tie = (first == 0) & (second == 0)
    if tie.any():
        gap[tie] = top2_gap_partition(x[tie])
    return gap


def top2_gap_partition(x: np.ndarray) -> np.ndarray:
    """`top2_gap` by a partial sort (the definition it mirrors)."""
    n, c = x.shape
    if c < 2:
        return np.full(n, np.nan)
    top = np.partition(x, c - 2, axis=1)[:, -2:]
    with np.errstate(invalid="ignore", over="ignore"):
        return top[:, 1] - top[:, 0]


def _row_stats(fmt, xr, t, hi, lo, loss=None) -> dict:
    """Row statistics from the plain certified truth (hi + lo: lse = x_t + it); `loss`: the
    row's true loss where it is another (training options)."""
    loss = hi if loss is None else loss
    n, c = xr.shape
    ar = np.arange(n)
    xt = xr[ar, t]
    with np.errstate(invalid="ignore", over="ignore"):
        gap = top2_gap(xr)
        lse = (xt + hi) + lo          # the certified log-sum-exp (loss + x_t), in float64
        lse = np.where(np.isnan(hi), np.nan, lse)
        ok = (np.isfinite(xr) | (xr == -np.inf)).all(axis=1)
        ok &= np.isfinite(fmt.round(lse)) & np.isfinite(fmt.round(loss))
    return {"target": t, "target_logit": xt, "max_logit": np.max(xr, axis=1), "top2_gap": gap,
            "lse": lse, "loss": loss, "representable": ok}


def _run(m, xr, t, fmt, acc, options):
    """The method's per-row losses of the frozen logits `xr`."""
    with reading_frozen():
        return m(xr, t, fmt, acc, options=options)


def analyze_chunk(cell: dict) -> pd.DataFrame:
    """One chunk (a sweep cell): per analysed row and (format, method, accumulator), the
    computed loss, the certified truth (truth_hi + truth_lo), the BHH bound (nan where none
    applies) and the row's statistics in that format."""
    x, t, rows = _read_chunk(cell)
    opts = _cell_options(cell)
    stored = cell.get("stored_format")
    bits = int(cell.get("bits", DEFAULT_BITS))
    accs = tuple(cell["accumulators"])
    blocks = []
    for fname in cell["formats"]:
        fmt = get_format(fname)
        # stored values are already exact in fmt; read-only, so that no method's own check
        # of them copies them
        xr = frozen(x if fname == stored else fmt.round(x))
        o = _in_format(opts, fmt)
        block = int(cell["truth_block"])
        extra = {}
        if o is None:
            hi, lo = _truth(xr, t, bits, block)
            stats = _row_stats(fmt, xr, t, hi, lo)
        else:  # the plain truth of each row (its lse; target 0 where ignored), then the loss
            keep = t != o.ignore_index
            phi, plo = _truth(xr, np.where(keep, t, 0), bits, block)
            hi, lo = _option_truth(xr, t, o, bits, block)
            stats = {**_row_stats(fmt, xr, np.where(keep, t, 0), phi, plo, hi), "target": t}
            extra = {"ignored": ~keep}
        bounds: dict = {}
        bhh = o is None and any(get_method(m).bound for m in cell["methods"])
        terms = lse_terms(xr) if bhh else None
        with shared_steps():   # the methods' common steps (exp(x - max x)) once
            for mname in cell["methods"]:
                m = get_method(mname)
                for acc in m.accumulators(fmt, accs):
                    if bhh and m.bound is not None and (acc, m.bound) not in bounds:
                        bounds[(acc, m.bound)] = bhh_bound(xr, t, fmt, acc, m.bound, terms)
                    b = bounds[(acc, m.bound)] if (acc, m.bound) in bounds else \
                        np.full(len(t), np.nan)
                    n = len(t)
                    blocks.append(pd.DataFrame({
                        "format": [fname] * n, "method": [mname] * n, "accumulator": [acc] * n,
                        "row": rows, "computed": _run(m, xr, t, fmt, acc, o), "truth_hi": hi,
                        "truth_lo": lo, "bhh_bound": b, **stats, **extra}))
        del xr
    return pd.concat(blocks, ignore_index=True)


@dataclass
class Analysis:
    """The result of `analyze`: per-row errors, the results table, and what was analysed."""
    path: str
    info: files.FileInfo
    sha256: str
    formats: list[str]
    methods: list[str]
    rows: pd.DataFrame            # one row per (format, method, accumulator, analysed row)
    results: pd.DataFrame         # one row per (format, method, accumulator, reduction)
    means: pd.DataFrame           # the batch mean per variant, with its truth and errors
    sample_rows: int | None
    seed: int
    chunks: list[tuple[int, int]]
    memory: int
    meta: dict = field(default_factory=dict)
    options: LossOptions | None = None   # the training options (None: plain cross entropy)
    skipped: dict = field(default_factory=dict)  # {method: why} under the options

    @property
    def reduction(self) -> str:
        """The batch reduction reported: "mean", or the options' "sum"."""
        return "sum" if self.options is not None and self.options.reduction == "sum" else "mean"

    @property
    def n_ignored(self) -> int:
        """Analysed rows whose target is ignore_index (0 without options)."""
        if "ignored" not in self.rows:
            return 0
        return int(self.rows.drop_duplicates("row")["ignored"].sum())

    @property
    def n_rows(self) -> int:
        return int(self.rows["row"].nunique())


def _quantile(v, q: float) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.quantile(v, q, method=QUANTILE_METHOD)) if len(v) else np.nan


def _certified_mean(hi, lo) -> tuple[float, float]:
    """The mean of per-row double-double truths: their exact sum (mpmath, exact addition of
    floats) divided at 64 bits beyond the truths' 100; nan / inf as any row's."""
    hi = np.asarray(hi, dtype=np.float64)
    if np.isnan(hi).any():
        return math.nan, 0.0
    if np.isinf(hi).any():
        return math.inf, 0.0
    with mpmath.workprec(DEFAULT_BITS + 64 + len(hi).bit_length() + 1100):
        total = mpmath.fsum([mpmath.mpf(float(v)) for v in hi] +
                            [mpmath.mpf(float(v)) for v in lo])
    with mpmath.workprec(DEFAULT_BITS + 64):
        mean = total / len(hi)
    h, lo_ = to_double_double([mean])
    return float(h[0]), float(lo_[0])


def _certified_option_reduction(hi, lo, den) -> tuple[float, float]:
    """The exact sum of per-row double-double truths (`den` None: "sum"), or that sum over the
    exact float sum `den` ("mean", at 64 bits beyond the truths'); IEEE specials as torch."""
    hi = np.asarray(hi, dtype=np.float64)
    if not np.isfinite(hi).all():
        with np.errstate(all="ignore"):
            total = np.sum(hi[~np.isfinite(hi)])         # inf + -inf = nan
            return float(total if den is None else total / np.float64(float(den))), 0.0
    with mpmath.workprec(DEFAULT_BITS + 64 + len(hi).bit_length() + 1100):
        total = mpmath.fsum([mpmath.mpf(float(v)) for v in hi] +
                            [mpmath.mpf(float(v)) for v in lo])
    if den is not None and den == 0:
        return (math.nan if total == 0 else math.copysign(math.inf, float(total))), 0.0
    if den is not None:
        with mpmath.workprec(DEFAULT_BITS + 64):
            total = total / den
    h, lo_ = to_double_double([total])
    return float(h[0]), float(lo_[0])


def _option_denominator(targets, options: LossOptions):
    """D of the options' "mean": the kept rows' count, or the exact sum of their (rounded)
    weights."""
    keep = targets != options.ignore_index
    if options.weight is None:
        return int(np.count_nonzero(keep))
    w = options.weight_array[np.where(keep, targets, 0)][keep]
    with mpmath.workprec(1100 + 64 + len(w).bit_length()):
        return mpmath.fsum([mpmath.mpf(float(v)) for v in w])


def _option_means(df: pd.DataFrame, options: LossOptions) -> pd.DataFrame:
    red = "sum" if options.reduction == "sum" else "mean"
    recs = []
    for (fname, mname, acc), g in df.groupby(["format", "method", "accumulator"], sort=False):
        fmt = get_format(fname)
        o = _in_format(options, fmt)
        tg = g["target"].to_numpy().astype(np.int64)
        mval = reduce_rows(g["computed"].to_numpy(), tg, fmt, acc, o, red)
        den = None if red == "sum" else _option_denominator(tg, o)
        mhi, mlo = _certified_option_reduction(g["truth_hi"].to_numpy(),
                                               g["truth_lo"].to_numpy(), den)
        recs.append({"format": fname, "method": mname, "accumulator": acc, "reduction": red,
                     "row": -1, "truth": mhi, "truth_lo": mlo,
                     **{k: v[0] for k, v in error_columns(np.array([mval]), np.array([mhi]),
                                                          np.array([mlo]), fmt).items()}})
    return pd.DataFrame(recs)


def _batch_means(df: pd.DataFrame) -> pd.DataFrame:
    recs = []
    for (fname, mname, acc), g in df.groupby(["format", "method", "accumulator"], sort=False):
        fmt = get_format(fname)
        losses = g["computed"].to_numpy()
        mval = get_method(mname).batch_mean(losses, fmt, acc)
        mhi, mlo = _certified_mean(g["truth_hi"].to_numpy(), g["truth_lo"].to_numpy())
        recs.append({"format": fname, "method": mname, "accumulator": acc, "reduction": "mean",
                     "row": -1, "truth": mhi, "truth_lo": mlo,
                     **{k: v[0] for k, v in error_columns(np.array([mval]), np.array([mhi]),
                                                          np.array([mlo]), fmt).items()}})
    return pd.DataFrame(recs)


def _with_errors(df: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for fname, g in df.groupby("format", sort=False):
        cols = error_columns(g["computed"].to_numpy(), g["truth_hi"].to_numpy(),
                             g["truth_lo"].to_numpy(), get_format(fname))
        parts.append(g.assign(**{k: v for k, v in cols.items() if k != "computed"}))
    out = pd.concat(parts)
    out.insert(3, "reduction", "none")
    return out.rename(columns={"truth_hi": "truth"})


def _extras(rows: pd.DataFrame) -> pd.DataFrame:
    recs = []
    for (fname, mname, acc), g in rows.groupby(["format", "method", "accumulator"], sort=False):
        comp = g["computed"].to_numpy()
        fin = np.isfinite(comp)
        truth = g["truth"].to_numpy()
        rep = g["representable"].to_numpy(dtype=bool)
        rec = {"format": fname, "method": mname, "accumulator": acc, "reduction": "none",
               "rel_err_p99": _quantile(g["rel_err"].to_numpy()[fin], 0.99),
               "ulp_err_p99": _quantile(g["ulp_err"].to_numpy()[fin], 0.99),
               "representable_frac": float(rep.mean()),
               "spurious_nonfinite_frac": float(np.mean(rep & ~fin)),
               "n_spurious_nonfinite": int(np.sum(rep & ~fin)),
               "loss_median": _median(truth),
               "max_logit_median": _median(g["max_logit"].to_numpy()),
               "lse_median": _median(g["lse"].to_numpy()),
               "bhh_bound_rel_median": np.nan, "bhh_n_checked": 0, "bhh_n_within": 0,
               "bhh_within_frac": np.nan}
        b = g["bhh_bound"].to_numpy()
        if get_method(mname).bound is not None:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                rec["bhh_bound_rel_median"] = _median(b / np.abs(truth))
            ok = fin & np.isfinite(b)
            within = g["abs_err"].to_numpy()[ok] <= b[ok]
            rec["bhh_n_checked"] = int(ok.sum())
            rec["bhh_n_within"] = int(within.sum())
            rec["bhh_within_frac"] = float(within.mean()) if ok.any() else np.nan
        recs.append(rec)
    return pd.DataFrame(recs)


def _results(rows: pd.DataFrame, means: pd.DataFrame, n: int, file_rows: int) -> pd.DataFrame:
    cols = ["format", "method", "accumulator", "reduction", "row", "truth", "computed",
            "abs_err", "rel_err", "ulp_err", "bits_err", "outcome"]
    both = pd.concat([rows[cols], means[cols]], ignore_index=True)
    agg = aggregate(both, GROUP)
    agg = agg.merge(_extras(rows), on=GROUP, how="left")
    mean_truth = means.set_index(["format", "method", "accumulator"])["truth"]
    agg["mean_truth"] = [mean_truth[(f, m, a)] for f, m, a in
                         zip(agg["format"], agg["method"], agg["accumulator"])]
    agg.insert(len(GROUP), "rows", n)
    agg.insert(len(GROUP) + 1, "file_rows", file_rows)
    return agg


def analyze(path, formats=None, methods=None, accumulators=ACCUMULATORS, rows: int | None = None,
            seed: int = 0, memory=DEFAULT_MEMORY, workers: int | None = 1,
            scheduler: str | None = None, quiet: bool = True, checkpoint_dir=None,
            bits: int = DEFAULT_BITS, block: int | None = None,
            options: LossOptions | None = None) -> Analysis:
    """Analyse every row of the logits file `path` (or, with `rows`, a seeded sample of that
    many rows, kept in file order) in each of `formats` (default: the format the logits are
    stored in when they are one, else all), with every method of `methods` (default: all) and
    accumulator, against the certified truth. `memory` (bytes or '2GiB') bounds the working
    memory of the chunks running at once; `workers` / `scheduler` as for the experiments.
    `block`: rows per certified-truth evaluation (default `truth_block(classes)`); the results
    are the same bytes for every chunking and worker count at one `block`.
    `options` (a `LossOptions`): the training options (module docstring); methods that cannot
    express them are skipped (`Analysis.skipped`), or refused when named in `methods`."""
    if options is not None and not isinstance(options, LossOptions):
        raise InputError(f"options must be a LossOptions, got {type(options).__name__}")
    if options is not None and options.probabilities:
        raise InputError("analyze reads class-index targets from the file; probability "
                         "targets (probabilities=True) are not supported")
    p = Path(path)
    info = files.file_info(p, csv_reader=_csv_reader if options is None else _csv_raw)
    if formats is None or len(list(formats)) == 0:
        formats = [info.stored_format] if info.stored_format else list(STANDARD_FORMATS)
    formats = [get_format(f).name for f in formats]
    skipped: dict = {}
    if options is None:
        methods = [get_method(m).name for m in (methods or list(METHODS))]
    else:
        if options.weight is not None and len(options.weight) != info.classes:
            raise InputError(f"weight has {len(options.weight)} entries for the file's "
                             f"{info.classes} classes")
        if methods:
            methods = [get_method(m).name for m in methods]
            for m in methods:
                require_supported(m, get_method(m).options, options)
        else:
            for m in METHODS.values():
                missing = sorted(options.used - m.options)
                if missing:
                    skipped[m.name] = (f"cannot express {', '.join(missing)} (it supports: "
                                       f"{', '.join(sorted(m.options)) or 'none'})")
            methods = [m for m in METHODS if m not in skipped]
    accumulators = list(check_accumulators(accumulators))
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, (int, np.integer))
                             or rows < 1):
        raise InputError(f"--rows must be an integer of at least 1, got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    memory = parse_memory(memory)
    index = sample_index(info.rows, rows, seed)
    n = info.rows if index is None else len(index)
    # memory per chunk is per format (formats run one after another inside a chunk)
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise InputError(f"block must be an integer of at least 1, got {block!r}")
    block = block or truth_block(info.classes)
    chunks = plan_chunks(n, info.classes, memory, workers or 1, block)
    sha = files.file_sha256(p)
    base = {"path": str(p.resolve()), "sha256": sha, "file_rows": info.rows,
            "stored_format": info.stored_format, "formats": formats, "methods": methods,
            "accumulators": accumulators, "seed": int(seed), "bits": int(bits),
            "truth_block": block}
    if index is not None:
        base["sample_rows"] = int(rows)
    if options is not None:
        base["options"] = asdict(options)
    cells = [{**base, "start": s, "stop": e} for s, e in chunks]
    raw = run_cells(cells, analyze_chunk, checkpoint_dir=checkpoint_dir, workers=workers,
                    scheduler=scheduler, quiet=quiet, desc=f"analyze {p.name}")
    # one order whatever the split: variant by variant, rows in analysed order
    order = {v: i for i, v in enumerate(_variants(formats, methods, accumulators))}
    key = [order[v] for v in zip(raw["format"], raw["method"], raw["accumulator"])]
    raw = raw.assign(_k=key).sort_values(["_k", "row"], kind="mergesort").drop(columns="_k")
    raw = raw.reset_index(drop=True)
    means = _batch_means(raw) if options is None else _option_means(raw, options)
    per_row = _with_errors(raw)
    results = _results(per_row, means, n, info.rows)
    return Analysis(str(p), info, sha, formats, methods, per_row, results, means,
                    None if index is None else int(rows), int(seed), chunks, memory,
                    meta={"truth_block": block, "chunk_rows": chunks[0][1] - chunks[0][0],
                          "n_chunks": len(chunks), "workers": workers, "scheduler": scheduler},
                    options=options, skipped=skipped)
