"""The certified gradient of the cross entropy with respect to the logits.

Per row, dL/dx_i = p_i - [i = t] with p = softmax(x) (divided by N for the mean). Written so
that nothing cancels:
  i != t:   g_i = e_i / S                      e_i = exp(x_i - a), a = max x, S = sum_i e_i
  i == t:   g_t = -(S - e_t) / S = -S_t' / S   S_t' = sum_{i != t} e_i  (1 - p_t as a sum of the
                                               other probabilities, never 1 minus p_t)
Every quantity is an `arb` ball (python-flint): x_i - a, its exp, the sums and the quotient,
so the radius of each entry is a proof of its error. An entry is certified when its relative
accuracy is at least `bits` + 2 bits (its midpoint is then within 2**-(bits + 1) relative of
the true gradient); a row that fails is retried at twice the precision, up to `max_prec`, past
which `UncertifiedError` names it. Exact zeros (masked classes, the target of a row with no
other finite class) are exact.

Two forms:
* `reference_grad` (public): every entry as an exact `mpmath.mpf` (the certified midpoint),
  however small (exp(-1000) is kept, with its 100 bits).
* `reference_grad_dd` (internal, what the evaluation uses): double-double (hi, lo) float64
  (N, C) arrays, hi + lo within 2**-104 relative of the certified midpoint where the entry is
  at least 2**-969 in magnitude; below that the pair is the value rounded to float64's
  subnormal grid (exactly 0 below 2**-1075). Entries certainly below 2**-1076 (x_i - a <
  -746.5, since S >= 1) are not evaluated one by one, only bounded in the sums. Cached on disk
  like the loss truth (`cache`), under a key salted for the gradient and the reduction.

Cost: one arb exp, one product and one conversion per distinct logit value of a row (the
others' sum weights each value by its count: integers, no subtraction). About 2 microseconds
per logit for float32 rows on one idle core; rows of 16-bit values repeat values, so a
bfloat16 row of 32768 normal logits costs a fraction of that. The sums prune terms that
provably do not matter (below 2**-(prec + 8) of the sum they enter).

Training options (`options=LossOptions(...)`, numerics.options: weight, ignore_index, label
smoothing, probability targets, z-loss, soft-cap): each kept row's entries from
`truth.grad_options.option_row` (its docstring has the formulas), certified by the same loop,
converted and cached the same way; ignored rows are exactly 0; "mean" divides by D (the kept
rows' summed weights, their count, or N for probability targets) and "sum" does not; D = 0
exactly makes every kept entry IEEE x / 0 (+-inf, or nan for an exact 0).

Non-finite inputs (PyTorch's policy): a nan or a +inf logit makes the row's gradient nan; a
-inf logit is a masked class (gradient exactly 0); a -inf target gives g_t = -1 and g_i = p_i
over the other classes; a row with every logit -inf is nan.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import mpmath
import numpy as np
from flint import arb
from mpmath import mp
from numpy.typing import ArrayLike

from ..data.inputs import validate_batch
from ..errors import InputError, UncertifiedError
from ..numerics.options import LossOptions, check_batch
from ..running.provenance import code_fingerprint
from . import grad_options
from .cache import TruthCache, resolve_cache, truth_key
from .fastref import arbprec

__all__ = ["reference_grad", "reference_grad_dd", "REDUCTIONS", "DEFAULT_BITS"]

DEFAULT_BITS = 100
DEFAULT_MAX_PREC = 1 << 14
REDUCTIONS = ("none", "mean", "sum")
GRAD_SALT = b"precision_lab.truth.grad.v1"
# exp(x_i - a) / S < 2**-1076 rounds to 0 in float64 (S >= 1): x_i - a < -1076 ln 2 = -745.8.
DD_FLOOR = -746.5


def _check_reduction(reduction: str | None, options: LossOptions | None = None) -> str:
    if reduction is None:
        return "none" if options is None else options.reduction
    if reduction not in REDUCTIONS:
        raise InputError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    return reduction


class _Row(NamedTuple):
    """A row's certified gradient: `cols` (the non-target columns evaluated one by one) take
    the values `ug[idx]` (one ball per distinct logit value: 16-bit rows repeat values), `gt`
    is the target entry (None: exactly 0); every other entry is exactly 0."""
    cols: np.ndarray
    idx: np.ndarray
    ug: list
    gt: object

    def balls(self):
        return self.ug + ([] if self.gt is None else [self.gt])


_EMPTY = np.zeros(0, dtype=np.int64)


def _row(x: np.ndarray, t: int, prec: int, scale, full: bool):
    """One row at `prec` bits: a `_Row`, or "nan".

    `scale`: None, or the arb 1/N of the mean. `full`: evaluate every entry (else entries
    below DD_FLOOR are only bounded in the sums)."""
    if np.isnan(x).any() or (x == np.inf).any():
        return "nan"
    fin = np.flatnonzero(x != -np.inf)
    if fin.size == 0:
        return "nan"
    a = float(x[fin].max())
    others = fin[fin != t]
    if others.size == 0:       # only the target: p_t = 1, gradient 0 (exact)
        return _Row(_EMPTY, _EMPTY, [], None)
    lead = float(x[others].max())
    cut = (prec + 8) * math.log(2) + math.log(x.size) + 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        keep_sum = (x - lead >= -cut) if math.isfinite(lead - cut) else np.ones(x.size, bool)
        keep_own = (x - a >= DD_FLOOR) if math.isfinite(a + DD_FLOOR) else np.ones(x.size, bool)
    cols = others if full else others[keep_sum[others] | keep_own[others]]
    dropped = int(others.size - cols.size)
    # Distinct values: one exp each; the sum of the others weights each by its count (exact
    # integers: no subtraction of the target's term from a total, which would cancel).
    u, idx, cnt = np.unique(x[cols], return_inverse=True, return_counts=True)
    with arbprec(prec):
        A = arb(a)
        eu = [(arb(v) - A).exp() for v in u.tolist()]
        s_other = arb(0)
        for v, c in zip(eu, cnt.tolist()):
            s_other += v * c
        if dropped:
            # Each dropped term is below exp(lead - a) exp(-cut) <= S_t' 2**-(prec+8) / C.
            bound = (arb(lead) - A).exp() * arb(2) ** -(prec + 8)
            s_other = s_other + arb(0, bound.upper())
        xt = float(x[t])
        s = s_other if xt == -np.inf else s_other + (arb(xt) - A).exp()
        inv = 1 / s if scale is None else scale / s
        ug = [v * inv for v in eu]
        gt = -(s_other * inv)
    own = np.ones(cols.size, bool) if full else keep_own[cols]
    return _Row(cols[own], idx.reshape(-1)[own], ug, gt)


def _certify(make, x, bits, max_prec, row):
    """`make(prec)` (a `_Row` or "nan") at doubling precisions until every ball carries
    `bits` + 2 bits relative, or UncertifiedError past `max_prec`."""
    prec = bits + 24 + max(int(x.size).bit_length(), 1)
    while True:
        with arbprec(prec):
            res = make(prec)
        if res == "nan" or all(v.rel_accuracy_bits() >= bits + 2 for v in res.balls()):
            return res, prec
        if prec >= max_prec:
            raise UncertifiedError(f"row {row}: gradient not certified to {bits} bits at "
                                   f"{prec} bits of precision (cap {max_prec})")
        prec = min(2 * prec, max_prec)


def _certified_row(x, t, bits, max_prec, scale_n, full, row):
    def make(prec):
        scale = None if scale_n is None else 1 / arb(scale_n)
        return _row(x, t, prec, scale, full)
    return _certify(make, x, bits, max_prec, row)


def _option_scale(t, kept, w, opt: LossOptions, reduction: str):
    """(the mean's 1/D as a Fraction or None, D == 0 exactly)."""
    if reduction != "mean":
        return None, False
    if opt.probabilities:
        d = Fraction(len(t))
    elif w is None:
        d = Fraction(int(np.count_nonzero(kept)))
    else:
        d = sum((Fraction(v) for v in w[t[kept]].tolist()), Fraction(0))
    return (None, True) if d == 0 else (1 / d, False)


_EMPTY_ROW = _Row(_EMPTY, _EMPTY, [], None)


def _option_rows(logits, targets, options, reduction, bits, max_prec):
    x, t = check_batch(logits, targets, options)
    w = options.weight_array
    kept = np.ones(len(t), dtype=bool) if options.probabilities else t != options.ignore_index
    scale, den_zero = _option_scale(t, kept, w, options, reduction)
    rows = []
    for r in range(len(t)):
        if not kept[r]:
            rows.append((_EMPTY_ROW, 0))
            continue

        def make(prec, r=r):
            res = grad_options.option_row(x[r], t[r], w, options, scale)
            return res if res == "nan" else _Row(res[0], res[1], res[2], None)
        rows.append(_certify(make, x[r], bits, max_prec, r))
    return x, t, rows, den_zero


def _rows(logits, targets, reduction, bits, max_prec, full, options=None):
    """(x, t, [(row, prec)], D == 0) of a batch, with or without options."""
    reduction = _check_reduction(reduction, options)
    if options is not None:
        return _option_rows(logits, targets, options, reduction, bits, max_prec)
    x, t = validate_batch(logits, targets)
    n = None if reduction != "mean" else len(t)
    return x, t, [_certified_row(x[r], int(t[r]), bits, max_prec, n, full, r)
                  for r in range(len(t))], False


def _to_mpf(v: arb):
    """The ball's midpoint as an exact mpf."""
    man, ex = v.mid().man_exp()
    return mp.make_mpf(mpmath.libmp.from_man_exp(int(man), int(ex)))


def reference_grad(logits: ArrayLike, targets: ArrayLike, reduction: str | None = None, bits: int = DEFAULT_BITS,
                   max_prec: int = DEFAULT_MAX_PREC, options: LossOptions | None = None
                   ) -> np.ndarray:
    """dL/dlogits of the cross entropy of the exact float64 `logits` (N, C) at `targets`.

    `reduction`: "none" (the gradient of each row's loss), "mean" (of the batch mean: each
    row's divided by N) or "sum"; None: "none", or the options' own. `options`: a
    `LossOptions` (then `targets` are as it says: class indices or (N, C) probabilities).
    Returns an (N, C) object array of `mpmath.mpf`, each within 2**-(bits + 1) relative of
    the true entry (proven by ball arithmetic), exact zeros exact.
    """
    x, t, rows, den_zero = _rows(logits, targets, reduction, bits, max_prec, True, options)
    out = np.full(x.shape, mp.zero, dtype=object)
    for r, (res, _) in enumerate(rows):
        if res == "nan":
            out[r, :] = mp.nan
            continue
        vals = np.empty(len(res.ug), dtype=object)
        vals[:] = [_to_mpf(v) for v in res.ug]
        out[r, res.cols] = vals[res.idx]
        if res.gt is not None:
            out[r, int(t[r])] = _to_mpf(res.gt)
        if den_zero and res.cols.size:
            out[r, :] = [mp.nan if v == 0 else (mp.inf if v > 0 else mp.ninf) for v in out[r]]
    return out


def _dd(balls: list, prec: int) -> tuple[np.ndarray, np.ndarray]:
    """hi = each midpoint rounded to nearest float64 (python-flint's float() of an arb rounds
    its midpoint to nearest, ties to even, subnormals included; tests check it against
    mpmath), lo = the exact rest rounded so."""
    with arbprec(prec + 64):  # the rest mid - hi is exact at this precision
        mids = [v.mid() for v in balls]
        his = [float(m) for m in mids]
        los = [float(m - h) for m, h in zip(mids, his)]
    return np.array(his, dtype=np.float64), np.array(los, dtype=np.float64)


_CODE: list[str] = []


def _key(x, t, bits, reduction, options=None) -> str:
    """The loss truth's key (inputs, bits, the reference's code) salted with this module's own
    code (and grad_options'), the reduction and the options (with probability targets, their
    bytes): a changed gradient engine is never served an older result."""
    if not _CODE:
        _CODE.append(code_fingerprint(files=[Path(__file__).resolve(),
                                             Path(grad_options.__file__).resolve()],
                                      salt=GRAD_SALT))
    h = hashlib.sha256(_CODE[0].encode())
    if options is not None and options.probabilities:
        h.update(truth_key(x, np.zeros(len(t), dtype=np.int64), bits).encode())
        h.update(np.ascontiguousarray(t, dtype=np.float64).tobytes())
    else:
        h.update(truth_key(x, t, bits).encode())
    h.update(reduction.encode())
    if options is not None:
        h.update(repr(options).encode())
    return h.hexdigest()


class _GradCache:
    """Gradient truths in a `TruthCache`'s directory: (N, C) hi and lo arrays, the key stored
    and checked, anything unreadable or mismatched ignored (recomputed)."""

    def __init__(self, store: TruthCache):
        self.store = store

    def path(self, key):
        return self.store.directory / f"grad-{key}.npz"

    def load(self, key, shape):
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    return None
                hi, lo = np.array(z["hi"]), np.array(z["lo"])
        except Exception:
            return None
        if any(a.dtype != np.float64 or a.shape != shape for a in (hi, lo)):
            return None
        return hi, lo

    def save(self, key, hi, lo):
        tmp = None
        try:
            self.store.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.store.directory, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, key=np.array(key), hi=hi, lo=lo)
            os.replace(tmp, self.path(key))
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def reference_grad_dd(logits, targets, reduction: str | None = None, bits: int = DEFAULT_BITS,
                      *, max_prec: int = DEFAULT_MAX_PREC, cache=None,
                      options: LossOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The certified gradient as double-double float64 (hi, lo) arrays (N, C); see the
    module docstring for the range where the pair carries every bit. `cache` as in
    `reference_truth` (None: the default directory, False: none, or a directory);
    `reduction` and `options` as in `reference_grad`."""
    reduction = _check_reduction(reduction, options)
    x, t = validate_batch(logits, targets) if options is None else \
        check_batch(logits, targets, options)
    store = resolve_cache(cache)
    gc = _GradCache(store) if store is not None else None
    key = _key(x, t, bits, reduction, options) if gc is not None else None
    if gc is not None:
        hit = gc.load(key, x.shape)
        if hit is not None:
            return hit
    _, _, rows, den_zero = _rows(x, t, reduction, bits, max_prec, False, options)
    hi = np.zeros(x.shape)
    lo = np.zeros(x.shape)
    for r, (res, prec) in enumerate(rows):
        if res == "nan":
            hi[r, :] = np.nan
            continue
        his, los = _dd(res.balls(), prec)
        m = len(res.ug)
        hi[r, res.cols], lo[r, res.cols] = his[:m][res.idx], los[:m][res.idx]
        if res.gt is not None:
            hi[r, int(t[r])], lo[r, int(t[r])] = his[m], los[m]
        if den_zero and res.cols.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                hi[r] = hi[r] / 0.0
            lo[r] = 0.0
    if gc is not None:
        gc.save(key, hi, lo)
    return hi, lo
