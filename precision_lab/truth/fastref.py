"""The fast certified backend of the ground truth: a vectorised fixed-point engine (numpy
int64 limbs, no Python per row or per logit) with a proven error bound per row, and ball
arithmetic (python-flint's `arb`) for the rows it does not take.

What is computed. Per row the loss is, as in `reference` (mpmath),
  target is a maximum:  loss = log1p(Z),  Z = exp(b - a) * S
  otherwise:            loss = log(S) + (b - x_t)
where S = sum_{i in R} exp(x_i - b), R is the row (without one copy of the maximum when the
target is the maximum), `lead` = max(R) and b = lead rounded down to a multiple of 2**-12, so
S >= exp(lead - b) >= 1. Terms with x_i - lead < -cutoff, cutoff = (fb + 8) ln 2 + ln C + 1,
are dropped; together they are below 2**-fb (one unit, added to the radius).

The engine (`_vec`), at fb = 26 nl fraction bits (nl = ceil(P / 26) limbs of 26 bits; P = 128,
fb = 130 for 100 bits and C up to 2**20). Every number is an exact integer multiple of 2**-fb
held in limbs; every rounding is a floor with a stated error in units of 2**-fb, and the errors
are added up (as float64 upper bounds, inflated by 2**-20) into a radius per row:
* exp(x - b): x - b = D 2**-31 + x_f exactly, D = floor((x - b) 2**31) = -h 2**19 + l and
  x_f in [0, 2**-31) (zero for every float16 / bfloat16 / float32 value of magnitude >= 2**-8;
  floor(x_f 2**fb) is extracted exactly from the float). exp(x - b) = T_hi[h] (1 + T_lo[l])
  (1 + expm1(x_f)), the tables within 4 units (`_FixTables`), expm1 by its series (terms above
  2**44 units in limbs, the rest in float64); the products truncated to fb bits (`_mul`
  states the bound). Where indices spread over a large table (float32 and float64 logits,
  wide rows of logits), a table entry is instead the product of two small, cached tables'
  entries (T_hi[h] = A[h >> 9] B[h & 511], 1 + T_lo[l] = (1 + a1[l >> 10]) (1 + b0[l & 1023])):
  a cache miss costs more than a product. Per logit this is within ~20 to ~120 units
  depending on the path (each bound computed from the path's roundings); per row the terms
  are summed exactly (int64 limb sums). This per-logit part runs compiled (`USE_KERNEL`:
  `fastref_kernels.scan` replays the numpy path's chunks and their choices, `sums` the same
  integer steps per logit, fused, with no (N C, nl) temporaries, lane-wise in blocks of
  logits so that the limb products vectorise); the numpy path
  (`_term_sums`) stays callable, and both give the same limbs and the same bounds (the
  kernel's bounds are `_terms`'s own, by `_term_bounds`), so every result and radius is the
  same bit for bit (tests/test_fastref_kernels.py).
* log S (`_log_fix`): y = Y 2**-31 a little below log S from float64, exp(-y) from the tables,
  rho = S exp(-y) - 1 with |rho| < 2**-29.5 (checked), log S = y + log1p(rho), the series by
  Horner in limbs.
* Target the maximum (`_max_rows`): a - b = k ln 2 - v, v in (-ln 2, 2**-40] to within
  1 + k 2**-26 units, Zm = S exp(v) by the tables, Z = Zm 2**-k. Z >= 2**-20: loss =
  log(1 + Z) (an absolute error, relative to a loss >= 2**-21); else loss = Z c with
  c = sum_i (-Z)**i / (i + 1) by Horner (a relative error), the exponent k kept apart.
* b - x_t exactly, x_t floored to the grid (one unit).
A row is certified when its radius is at most 2**-(bits + 2) of its midpoint (so the midpoint
is within 2**-(bits + 1) relative of the true loss): this bounds the error, where two
evaluations agreeing only suggests it. Rows the engine does not take (|lead| or |x_t| >= 2**40,
a - b > 2**20, more than 624 fraction bits) or cannot certify go to the `arb` path below
(`_attempt_arb`: exact fixed-point sums of on-grid terms, `arb` for the rest and for the log);
what that cannot certify is retried with P doubled, up to `max_prec`.

The per-row part runs compiled too (`USE_ROWS_KERNEL`: `fastref_rows`): the row maxima,
`_log_fix`'s y (elementary's correctly rounded float64 log, ported) and its limbs, the loss of
rows whose target is below the maximum, `_max_rows`' shifts and small-Z series, the
double-doubles and the mean's limb sums, each by the numpy path's integer steps and IEEE
operations, fused per block of rows; every float64 conversion of limbs (`_to_float`), every
choice and every error bound stays numpy's, so the results, radii and the rows sent to `arb`
are the same bit for bit (tests/test_fastref_rows.py).

Results (`Results`) keep the certified midpoints as limbs; double-doubles (hi = hi + lo
rounded to nearest, hi + lo within 2**-104 relative of the midpoint, or exact per row below
2**-900) and the mean (exact sums of the midpoints) are vectorised.

Non-finite inputs follow `reference`'s policy exactly (see `special_losses`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
from flint import arb, ctx

from ..numerics import elementary
from ..numerics.formats import FORMATS
from . import fastref_kernels, fastref_rows

__all__ = ["certified_losses", "special_losses", "arb_to_double_double", "start_prec",
           "Results", "man_exp_to_double_double"]

HI_BITS = 12                 # b and the first table are on the 2**-12 grid
GRID = 31                    # on-grid values are multiples of 2**-31
LO_BITS = GRID - HI_BITS     # the second table has 2**19 entries
BIG = 2.0 ** 900             # beyond this, values go to the arb path (2**31 * x must not overflow)
DENSE_BINS = 1 << 22         # the largest dense (row, H) histogram, unless denser
CHUNK = 1 << 20              # logits per pass of the vectorised part
PREC_STEP = 32               # fixed-point precisions are multiples of this
R = 26                       # radix bits of the products (26 x 26 bits fit int64 with room)
RMASK = (1 << R) - 1


@contextmanager
def arbprec(prec: int):
    """Set python-flint's working precision locally (it is a global of the library)."""
    old = ctx.prec
    ctx.prec = int(prec)
    try:
        yield
    finally:
        ctx.prec = old


def start_prec(bits: int, c: int) -> int:
    """The first fixed-point precision tried: `bits` plus guard bits for the C terms' errors
    (each term is within 5 * 2**-P and the sum is >= 1)."""
    p = bits + 8 + max(c, 2).bit_length()
    return PREC_STEP * -(-p // PREC_STEP)


class _Tables:
    """Per fixed-point precision P, filled on first use and kept for the process:
    hi[:, h] = exp(-h * 2**-12) * 2**P and lo[:, l] = (exp(l * 2**-31) - 1) * 2**P, each the
    floor of an `arb` midpoint whose radius is below one unit, so within 2 units of the true
    value; both in radix 2**26 (hi int64, lo float64: exact, and sums of up to 2**27 of its
    limbs stay exact in float64)."""

    def __init__(self, p: int):
        self.p = p
        self.khi = -(-(p + 1) // R)
        self.klo = -(-(p - HI_BITS) // R)
        self.lo = np.zeros((self.klo, 1 << LO_BITS), dtype=np.float64)
        self.lo_done = np.zeros(1 << LO_BITS, dtype=bool)
        self.hi = np.zeros((self.khi, 0), dtype=np.int64)
        self.hi_done = np.zeros(0, dtype=bool)

    def _entry(self, x: arb, minus_one: bool) -> int:
        e = x.exp()
        if minus_one:
            e = e - 1
        m = e * arb(2) ** self.p
        if not m.rad() < 1:  # cannot happen at the working precision used; refuse if it does
            raise ArithmeticError("table entry not accurate enough")
        man, ex = m.mid().man_exp()
        man, ex = int(man), int(ex)
        return man << ex if ex >= 0 else man >> -ex

    def need_lo(self, idx: np.ndarray) -> None:
        if self.lo_done[idx].all():
            return
        idx = (np.flatnonzero(np.bincount(idx, minlength=1 << LO_BITS)) if idx.size > 1 << 16
               else np.unique(idx))
        idx = idx[~self.lo_done[idx]]
        if idx.size == 0:
            return
        with arbprec(self.p + 40):
            vals = [self._entry(arb((int(i), -GRID)), True) for i in idx.tolist()]
        for j in range(self.klo):
            self.lo[j, idx] = [(v >> (R * j)) & RMASK for v in vals]
        self.lo_done[idx] = True

    def need_hi(self, idx: np.ndarray) -> None:
        if idx.max() < len(self.hi_done) and self.hi_done[idx].all():
            return
        idx = np.flatnonzero(np.bincount(idx)) if idx.size > 1 << 16 else np.unique(idx)
        top = int(idx[-1]) + 1
        if top > len(self.hi_done):
            n = max(top, 2 * len(self.hi_done))
            hi = np.zeros((self.khi, n), dtype=np.int64)
            hi[:, :self.hi.shape[1]] = self.hi
            done = np.zeros(n, dtype=bool)
            done[:len(self.hi_done)] = self.hi_done
            self.hi, self.hi_done = hi, done
        idx = idx[~self.hi_done[idx]]
        if idx.size == 0:
            return
        with arbprec(self.p + 40):
            vals = [self._entry(arb((-int(i), -HI_BITS)), False) for i in idx.tolist()]
        for j in range(self.khi):
            self.hi[j, idx] = [(v >> (R * j)) & RMASK for v in vals]
        self.hi_done[idx] = True


_TABLES: dict[int, _Tables] = {}


def _tables(p: int) -> _Tables:
    if p not in _TABLES:
        _TABLES[p] = _Tables(p)
    return _TABLES[p]


def _carry(a: np.ndarray, bits: int) -> np.ndarray:
    """Propagate carries in place so every limb but the last is in [0, 2**bits); a is
    (limbs, n) int64 >= 0."""
    mask = (1 << bits) - 1
    for j in range(a.shape[0] - 1):
        a[j + 1] += a[j] >> bits
        a[j] &= mask
    return a


def _grid_sums(rows: np.ndarray, d: np.ndarray, n_rows: int, c: int, tab: _Tables) -> list[int]:
    """Exact integer sums, per row, of the table products for on-grid terms.

    `rows` (sorted) and `d` (the integers D = (x - b) * 2**31) list the terms. Returns, per row,
    an integer V with V * 2**-(2P) within 5 * 2**-P * count of the row's sum of exp(x_i - b).
    """
    out = [0] * n_rows
    if d.size == 0:
        return out
    p = tab.p
    h = -(d >> LO_BITS)              # >= 0
    lo = d & ((1 << LO_BITS) - 1)
    tab.need_lo(lo)
    tab.need_hi(h)
    nh = int(h.max()) + 1
    # Groups (row, h) in row-major order: a dense histogram when small enough, else the
    # distinct keys (a sort).
    key = rows.astype(np.int64) * nh + h
    nb = n_rows * nh
    if nb <= min(DENSE_BINS, 4 * d.size) or nb <= d.size:
        counts = np.bincount(key, minlength=nb)
        used = np.flatnonzero(counts)
        cnt = counts[used]
        grp, ng, dense = key, nb, True
    else:
        used, grp, cnt = np.unique(key, return_inverse=True, return_counts=True)
        ng, dense = used.size, False
    # Sums of the lo limbs per group in float64: exact while count * 2**26 < 2**53 (a group
    # lies in one row, so count <= C < 2**27, which `_attempt` ensures).
    kl = tab.klo
    kg = max(-(-(p + 1 + c.bit_length()) // R) + 1, kl + 1)
    gr = np.zeros((kg, used.size), dtype=np.int64)
    for j in range(kl):
        s = np.bincount(grp, weights=tab.lo[j][lo], minlength=ng)
        gr[j] = (s[used] if dense else s).astype(np.int64)
    q, sft = divmod(p, R)
    gr[q] += cnt.astype(np.int64) << sft        # the 1 of 1 + (exp(L 2**-31) - 1), per term
    gr = _carry(gr, R)
    e1 = tab.hi[:, used % nh]                     # (khi, groups)
    prod = np.zeros((tab.khi + kg, used.size), dtype=np.int64)
    for i in range(tab.khi):
        prod[i:i + kg] += e1[i] * gr              # < 2**52 each, few per limb
    prod = _carry(prod, R)
    grow = used // nh
    starts = np.flatnonzero(np.r_[True, grow[1:] != grow[:-1]])
    sums = np.add.reduceat(prod, starts, axis=1)  # < 2**26 * groups: no overflow
    for r, limbs in zip(grow[starts].tolist(), sums.T.tolist()):
        v = 0
        for j in reversed(range(len(limbs))):
            v = (v << R) + limbs[j]
        out[r] = v
    return out


def special_losses(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per row: nan or +inf where the non-finite policy decides the loss, else 0 for "compute".

    Policy (as `reference`, and as torch: its shift by the row maximum makes inf - inf): any
    nan or +inf logit gives nan, wherever the +inf is and however many; otherwise a -inf
    target gives +inf unless the row has nothing but -inf (nan).
    Returns an array of codes: 0 compute, 1 nan, 2 +inf.
    """
    n = len(t)
    if np.isfinite(x).all():
        return np.zeros(n, dtype=np.int8)
    xt = x[np.arange(n), t]
    anynan = np.isnan(x).any(axis=1)
    anypinf = (x == np.inf).any(axis=1)
    allninf = (x == -np.inf).all(axis=1)
    code = np.zeros(n, dtype=np.int8)
    tm = xt == -np.inf
    code[tm] = np.where(allninf[tm], 1, 2)
    code[anynan | anypinf] = 1
    return code


def _row_arb(val: np.ndarray, b: float, prec: int) -> arb:
    """sum over `val` of exp(val - b) in arb, once per distinct value."""
    s = arb(0)
    if val.size == 0:
        return s
    u, c = np.unique(val, return_counts=True)
    bb = arb(b)
    with arbprec(prec):
        for v, m in zip(u.tolist(), c.tolist()):
            s += (arb(v) - bb).exp() * m
    return s


# ---------------------------------------------------------------------------------------------
# The vectorised fixed-point engine: numpy int64 limbs, no per-row or per-logit Python.
#
# A fixed-point vector is an int64 array (K, m): column i is sum_j a[j, i] 2**(R j) in units of
# 2**-fb (fb = R nl). Normalised: limbs 0..K-2 in [0, 2**R), the top limb signed. Every rounding
# is a floor whose error each function states in units; callers add those bounds (float64,
# inflated by SAFE) into a radius per row.
# ---------------------------------------------------------------------------------------------

LMASK = (1 << LO_BITS) - 1
HI_SPREAD = 1 << 15         # beyond, T_hi[h] = A[h >> 9] B[h & 511] per logit
SAFE = 1.0 + 2.0 ** -20      # inflation of the float64 error sums (their own rounding ~2**-50)
MAX_ABS = 2.0 ** 40          # the vectorised path takes rows with |lead| (and |x_t|) below this,
MAX_GAP = 2.0 ** 20          # and, when the target is the maximum, a - b up to this
TINY_K = 900                 # losses below 2**-900: double-doubles converted exactly per row
ROWS = 16384                  # rows per pass of the per-row part
MAX_NL = 24                  # up to 624 fraction bits (beyond, `arb` only)
ECHUNK = 1 << 15             # logits per pass of the per-logit part (cache-sized temporaries)
USE_KERNEL = True            # the per-logit part by `fastref_kernels` (False: numpy, the same bits)
USE_ROWS_KERNEL = True       # the per-row limbs by `fastref_rows` (False: numpy, the same bits)
LOG2 = math.log(2.0)


def _norm(a: np.ndarray) -> np.ndarray:
    """Carry in place: limbs 0..K-2 into [0, 2**R), the rest into the (signed) top limb."""
    for j in range(a.shape[0] - 1):
        c = a[j] >> R
        a[j] &= RMASK
        a[j + 1] += c
    return a


def _mul(a: np.ndarray, b: np.ndarray, drop: int, bmax: int = 1) -> tuple[np.ndarray, float]:
    """a b / 2**(R drop) rounded down, as Ka + Kb - drop normalised limbs, and its error bound.

    Partial products a_i b_j with i + j <= drop - 2 are skipped; each is below one unit of the
    result when the inputs' limbs below the top are normalised (so >= 0 and < 2**R), which every
    caller ensures (no skipped pair involves a top limb). So the result lies in
    (exact - nskip - 1, exact]. With b's limbs only below bmax 2**R (not normalised, bmax <= 8)
    each is below bmax units. Positions hold at most min(Ka, Kb) products < 2**55 + 3: no
    overflow for up to 2**5 limbs."""
    ka, kb, m = a.shape[0], b.shape[0], a.shape[1]
    k = ka + kb - drop
    if k < 1:
        return np.zeros((1, m), dtype=np.int64), float(ka * kb + 1)
    out = np.zeros((k + 1, m), dtype=np.int64)
    nskip = 0
    for i in range(ka):
        j0 = max(0, drop - 1 - i)
        nskip += min(j0, kb)
        if j0 >= kb:
            continue
        p0 = i + j0 - (drop - 1)
        out[p0:p0 + kb - j0] += a[i] * b[j0:]
    _norm(out)
    return out[1:], float(nskip * bmax + 1)


_MUL_BOUNDS: dict[tuple, float] = {}


def _mul_bound(ka: int, kb: int, drop: int, bmax: int = 1) -> float:
    """`_mul`'s error bound for these limb counts (a function of the shapes only): `_mul`
    itself, on one column of zeros."""
    key = (ka, kb, drop, bmax)
    if key not in _MUL_BOUNDS:
        _MUL_BOUNDS[key] = _mul(np.zeros((ka, 1), dtype=np.int64),
                                np.zeros((kb, 1), dtype=np.int64), drop, bmax)[1]
    return _MUL_BOUNDS[key]


def _mul_exact(a: np.ndarray, b: np.ndarray, drop: int) -> np.ndarray:
    """floor(a b / 2**(R drop)) exactly (every partial product), Ka + Kb - drop limbs."""
    ka, kb, m = a.shape[0], b.shape[0], a.shape[1]
    out = np.zeros((ka + kb, m), dtype=np.int64)
    for i in range(ka):
        out[i:i + kb] += a[i] * b
    _norm(out)
    return out[drop:]


def _div_small(a: np.ndarray, d: int) -> np.ndarray:
    """floor(a / d) for a normalised a >= 0 and a small integer d (error below one unit)."""
    out = np.empty_like(a)
    rem = np.zeros(a.shape[1], dtype=np.int64)
    for j in range(a.shape[0] - 1, -1, -1):
        cur = (rem << R) + a[j]
        q = cur // d
        out[j] = q
        rem = cur - q * d
    return out


def _ipow(u: np.ndarray, k: int) -> np.ndarray:
    """u**k by k - 1 multiplications (np.power is much slower)."""
    out = u
    for _ in range(k - 1):
        out = out * u
    return out


def _from_float(v: np.ndarray, k: int) -> np.ndarray:
    """floor(v) for float64 v >= 0 below 2**(R k), as k normalised limbs (exact)."""
    out = np.empty((k, v.size), dtype=np.int64)
    w = np.floor(v)
    for j in range(k - 1, 0, -1):
        s = float(1 << (R * j))
        q = np.floor(w * (1.0 / s))
        out[j] = q
        w = w - q * s                 # w mod 2**(R j): a subset of w's bits, so exact
    out[0] = w
    return out


def _from_ints(vals: list[int], k: int) -> np.ndarray:
    """Python ints >= 0 below 2**(R k) as k limbs (k, len(vals))."""
    return np.array([[(v >> (R * j)) & RMASK for v in vals] for j in range(k)],
                    dtype=np.int64).reshape(k, len(vals))


def _int_to_limbs(v: np.ndarray, bitpos: int, k: int) -> np.ndarray:
    """v 2**bitpos for int64 v (signed, |v| < 2**62) as k normalised limbs (exact)."""
    q, r = divmod(bitpos, R)
    out = np.zeros((k, v.size), dtype=np.int64)
    out[q] = (v & ((1 << (R - r)) - 1)) << r
    rest = v >> (R - r)
    for j in range(q + 1, k - 1):
        out[j] = rest & RMASK
        rest = rest >> R
    out[k - 1] += rest
    return out


def _to_float(a: np.ndarray, exp: int = 0) -> np.ndarray:
    """sum_j a_j 2**(R j + exp) in float64: within K 2**-53 relative when every limb is >= 0."""
    w = np.ldexp(1.0, R * np.arange(a.shape[0]) + exp)
    return w @ a.astype(np.float64)


def _shr(a: np.ndarray, s: int) -> np.ndarray:
    """floor(a / 2**s) for a constant 0 < s < R, a normalised and >= 0; same limb count."""
    out = a >> s
    out[:-1] |= (a[1:] << (R - s)) & RMASK
    return out


def _shift_right(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """floor(a / 2**s) per column (int s >= 0), a normalised and >= 0; same limb count."""
    k, m = a.shape
    s = np.minimum(s, R * k)
    q, r = s // R, s % R
    pad = np.zeros((2 * k + 2, m), dtype=np.int64)
    pad[:k] = a
    cols = np.arange(m)
    out = np.empty_like(a)
    for j in range(k):
        lo = pad[j + q, cols]
        hi = pad[j + q + 1, cols]
        out[j] = (lo >> r) | ((hi << (R - r)) & RMASK)
    return out


def _shift_right_compiled(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """`_shift_right` by `fastref_rows.shift_right` (the same limbs)."""
    out = np.empty(a.shape, dtype=np.int64)
    fastref_rows.shift_right(np.ascontiguousarray(a), np.ascontiguousarray(s, dtype=np.int64),
                             out)
    return out


def _fixed(v: arb, bits: int) -> int:
    """floor(mid(v) 2**bits), for a ball far narrower than 2**-bits (checked): within
    1 + 2**-8 below and 2**-8 above v 2**bits."""
    m = v * arb(2) ** bits
    if not m.rad() < 2.0 ** -8:
        raise ArithmeticError("table entry not accurate enough")
    man, ex = m.mid().man_exp()
    man, ex = int(man), int(ex)
    return man << ex if ex >= 0 else man >> -ex


class _FixTables:
    """Per limb count nl (fb = 26 nl fraction bits), filled on first use and kept:
    hi[:, h] = exp(-h 2**-12) 2**fb (h >= 0, grown on demand) and
    lo[:, l] = (exp(l 2**-31) - 1) 2**fb (l < 2**19), each within ERR_TAB units of the true
    value: products of two `arb`-rounded factors from small tables, hi = floor(A[h >> 9] B[h & 511])
    and lo = A1 + B0 + floor(A1 B0) (each factor within 1.004 units, factors <= 1, so the floor
    of the product is within 3.01 units). A[0] and B[0] are 2**fb - 1 so that every entry fits
    nl limbs. Also ln 2 to fb + 26 bits and floor(2**fb / j) for the series."""

    ERR_TAB = 4.0

    def __init__(self, nl: int):
        self.nl, self.fb = nl, R * nl
        fb, top = self.fb, (1 << self.fb) - 1
        with arbprec(fb + 64):
            a1 = [_fixed(arb((i, -21)).exp() - 1, fb) for i in range(1 << 9)]
            b0 = [_fixed(arb((i, -31)).exp() - 1, fb) for i in range(1 << 10)]
            bh = [min(_fixed(arb((-i, -12)).exp(), fb), top) for i in range(512)]
            self.ln2 = _from_ints([_fixed(arb(2).log(), fb + R)], nl + 1)[:, 0]
        self._bh = _from_ints(bh, nl)
        a1, b0 = _from_ints(a1, nl), _from_ints(b0, nl)
        self.a1, self.b0 = a1, b0                  # small tables for logits off the grid
        big_a = np.repeat(a1, 1 << 10, axis=1)
        big_b = np.tile(b0, (1, 1 << 9))
        lo = big_a + big_b
        lo += _mul_exact(big_a, big_b, nl)[:nl]
        self.lo = _norm(lo).astype(np.int32)      # 26-bit limbs: int32 halves the footprint
        self._ah: list[int] = []
        self.ah = np.zeros((nl, 0), dtype=np.int64)   # A[i] = exp(-i / 8), as limbs
        self.hi = np.zeros((nl, 0), dtype=np.int32)
        self.inv: dict[int, np.ndarray] = {}

    def ensure_hi(self, nh: int) -> None:
        """Entries h < nh exist (computed in blocks of 512)."""
        have = self.hi.shape[1]
        if nh <= have:
            return
        blocks = -(-nh // 512)
        new = max(blocks, 2 * (have // 512))       # amortised growth
        fb = self.fb
        with arbprec(fb + 64):
            while len(self._ah) < new:
                i = len(self._ah)
                self._ah.append(min(_fixed((arb(-i) / 8).exp(), fb), (1 << fb) - 1))
        a = _from_ints(self._ah[have // 512:new], self.nl)
        self.ah = np.concatenate([self.ah, a], axis=1)
        big_a = np.repeat(a, 512, axis=1)
        big_b = np.tile(self._bh, (1, new - have // 512))
        block = _mul_exact(big_a, big_b, self.nl)[:self.nl]
        self.hi = np.ascontiguousarray(np.concatenate([self.hi, block.astype(np.int32)], axis=1))

    def inverse(self, j: int) -> np.ndarray:
        """floor(2**fb / j) as nl + 1 limbs (a column)."""
        if j not in self.inv:
            self.inv[j] = _from_ints([(1 << self.fb) // j], self.nl + 1)
        return self.inv[j]


_FIX: dict[int, _FixTables] = {}


def _fix_tables(nl: int) -> _FixTables:
    if nl not in _FIX:
        _FIX[nl] = _FixTables(nl)
    return _FIX[nl]


def _expm1_fix(x: np.ndarray, xf: np.ndarray, tab: _FixTables) -> tuple[np.ndarray, float]:
    """expm1(x_f) 2**fb as nl limbs, for x_f in [0, 2**-31) given as x = floor(x_f 2**fb)
    (kx limbs, so within one unit) and xf (float64, within 2**-52 relative); and the error bound.

    x + x**2/2 + ... in limbs while a term can exceed 2**44 units, the rest (< 2**44 units) in
    float64 (relative error < 2**-47, so < 1/8 unit) and floored."""
    nl, fb, m = tab.nl, tab.fb, x.shape[1]
    ke = min(nl, -(-(fb - 30) // R))               # e < 2**(fb - 30.99) units
    e = np.zeros((ke + 1, m), dtype=np.int64)
    e[:x.shape[0]] = x
    err, term, err_t = 1.0, x, 1.0
    k = 2

    def bound(j):  # 2**(fb - 31 j) / j! units, an upper bound of the j-th term
        return math.ldexp(1.0, fb - 31 * j) / math.factorial(j)

    while bound(k) >= 2.0 ** 44:
        pr, ep = _mul(term, x, nl)
        term = _div_small(pr, k) if k & (k - 1) else _shr(pr, k.bit_length() - 1)
        err_t = (err_t * 2.0 ** -31 + bound(k - 1) * 2.0 ** -fb + ep) / k + 1.0
        e[:term.shape[0]] += term
        err += err_t
        k += 1
    u = xf * 2.0 ** 31                               # < 1
    f = 1.0 + u * 2.0 ** -31 / (k + 1) * (1.0 + u * 2.0 ** -31 / (k + 2))
    tail = np.floor(np.ldexp(_ipow(u, k) * (f / math.factorial(k)), fb - 31 * k)).astype(np.int64)
    e[0] += tail & RMASK
    e[1] += tail >> R
    err += 1.0 + bound(k) * 2.0 ** -46 + bound(k + 3)
    return _norm(e)[:ke], err


def _frac_limbs(xv, xs, fl, tab):
    """For logits off the 2**-31 grid: x_f = x - fl 2**-31 in [0, 2**-31) as floor(x_f 2**fb)
    (kx limbs, exact floor) and as float64 (exact, or within 2**-53 relative for tiny negative
    x, where x_f = 2**-31 - |x| is not a float)."""
    fb = tab.fb
    kx = -(-(fb - GRID) // R)
    frac = xs - fl                       # exact unless -2**-32 < x < 0 (see below)
    x = _from_float(np.ldexp(frac, fb - GRID), kx)
    xf = frac * 2.0 ** -GRID
    tn = np.flatnonzero((xs < 0) & (xs > -0.5))
    if tn.size:
        v = np.ceil(np.ldexp(-xv[tn], fb))            # ceil(|x| 2**fb) <= 2**(fb - 32)
        xt = np.zeros((kx + 1, tn.size), dtype=np.int64)
        xt[:kx] = -_from_float(v, kx)
        q, r = divmod(fb - GRID, R)
        xt[q] += 1 << r                               # 2**(fb - 31) - ceil(|x| 2**fb)
        x[:, tn] = _norm(xt)[:kx]
        xf[tn] = (1.0 + xs[tn]) * 2.0 ** -GRID
    return x, xf


def _terms(tab, h, l, x=None, xf=None, off=None):
    """exp(-h 2**-12) (1 + (exp(l 2**-31) - 1)) (1 + expm1(x_f)) 2**fb per column (the last
    factor only in columns `off`, with x, xf from `_frac_limbs`): nl limbs, each below 2**27
    (not normalised), and the error bounds (units) of columns without and with the x_f factor.

    th = T_hi[h] within E_T (the table's 4 units, or A[h >> 9] B[h & 511] from small tables
    when h is spread wide); g = exp(l 2**-31) (1 + expm1(x_f)) - 1 within err_g (the table's,
    a1 + b0 + a1 b0 from small tables, or `_g_off`'s); th (1 + g) - exact <= E_T (1 + g) +
    th err_g + err_p (the product's floor), th <= 1."""
    nl = tab.nl
    et = _FixTables.ERR_TAB
    m = h.size
    if m and h.max() >= HI_SPREAD:     # spread over the table: cache misses cost more than
        ta = np.take(tab.ah, h >> 9, axis=1)             # a product of two small tables
        tb = np.take(tab._bh, h & 511, axis=1)
        th, err_th = _mul(ta, tb, nl)
        et = 2.02 + err_th + 1e-6                         # A, B within 1.01 units each
    else:
        th = np.take(tab.hi, h, axis=1).astype(np.int64)
    err_on = err_off = 0.0
    gmax = 5                                      # g's limbs are below gmax 2**R
    if off is not None and off.size == m:
        g, err_off = _g_off(tab, l, x, xf)
    else:
        err_on = _FixTables.ERR_TAB
        if np.count_nonzero(l) > m // 4:      # spread over the table: cache misses cost
            # more than a product of two small, cached tables (float32); else (float16,
            # bfloat16: l mostly 0) gather from the full table
            a1 = np.take(tab.a1, l >> 10, axis=1)
            b0 = np.take(tab.b0, l & 1023, axis=1)
            ab, err_ab = _mul(a1, b0, nl)
            g = a1 + b0                          # limbs below 3 2**R
            g += ab[:nl]
            err_on = 2.02 + err_ab + 0.01        # a1, b0 within 1.01 units each
            gmax = 3
        else:
            g = np.take(tab.lo, l, axis=1).astype(np.int64)
            gmax = 1
        if off is not None and off.size:
            g[:, off], err_off = _g_off(tab, l[off], x, xf)
            gmax = 5
    p, err_p = _mul(th, g, nl, bmax=gmax)
    t = th + p[:nl]
    base = et * 1.0003 + err_p + 1e-6
    return t, SAFE * (base + err_on), SAFE * (base + err_off * 1.0003)


def _g_off(tab, l, x, xf):
    """exp(l 2**-31) (1 + expm1(x_f)) - 1 in nl limbs (below 5 2**R, not normalised) and its
    error bound, from the small tables: l = l1 2**10 + l0, a1 = exp(l1 2**-21) - 1 < 2**-12, b0 = exp(l0 2**-31) - 1
    < 2**-21 (each within 1.01 units), e = expm1(x_f) < 2**-30.99: f = b0 + e + b0 e,
    g = a1 + f + a1 f (the products' floors stated by `_mul`; the cross terms of the input
    errors are below 2**-11 of them)."""
    nl = tab.nl
    ea = 1.01
    e, err_e = _expm1_fix(x, xf, tab)
    b0 = np.take(tab.b0, l & 1023, axis=1)
    be, err_be = _mul(b0, e, nl)                   # ke limbs
    ke = e.shape[0]
    f = b0.copy()                                  # limbs below 3 2**R (not normalised)
    f[:ke] += e
    f[:ke] += be
    err_f = ea + err_e + err_be + 2.0 ** -20 * (err_e + ea)
    a1 = np.take(tab.a1, l >> 10, axis=1)
    af, err_af = _mul(a1, f, nl, bmax=3)
    g = a1 + f                                     # limbs below 5 2**R
    g += af[:nl]
    return g, ea + err_f + err_af + 2.0 ** -11 * (err_f + ea) + 1e-6


def _terms_norm(tab, h, l, x=None, xf=None, off=None):
    """`_terms` as nl + 1 normalised limbs (the value may reach 1 + 2**-40)."""
    t, b_on, b_off = _terms(tab, h, l, x, xf, off)
    out = np.zeros((tab.nl + 1, t.shape[1]), dtype=np.int64)
    out[:tab.nl] = t
    return _norm(out), b_on, b_off


def _log_y(v: np.ndarray) -> np.ndarray:
    """`_log_fix`'s y = floor(log(v) 2**31) - 1, log `elementary.log(v, float64)` (correctly
    rounded); where USE_ROWS_KERNEL by the compiled port `fastref_rows.log_floor31`, the
    elements it cannot decide (and any outside (1, 2**1000)) from `elementary` itself: the
    same bits."""
    f64 = FORMATS["float64"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if not USE_ROWS_KERNEL:
            return np.floor(elementary.log(v, f64) * 2.0 ** GRID) - 1.0  # any CPU
        v = np.ascontiguousarray(v, dtype=np.float64)
        out = np.empty_like(v)
        amb = np.zeros(v.size, dtype=np.bool_)
        e = elementary
        if fastref_rows.log_floor31(v, out, amb, e._RJ, e._RJ_SPLIT[0], e._RJ_SPLIT[1], e._LH,
                                    e._LL, e._LN2H, e._LN2L, e._SQRT_HALF, float(e.LOG_GRID),
                                    float(e._LOG_LO), e.BOUNDS["log"]):
            idx = np.flatnonzero(amb)
            out[idx] = np.floor(elementary.log(v[idx], f64) * 2.0 ** GRID) - 1.0
        return out


def _log_fix(w, err_w, tab):
    """log of w 2**-fb for w (nl + 1 normalised limbs, value in [1, 2**30)) known within err_w
    units: (nl + 1 limbs of the log in units 2**-fb, its error bound, ok).

    y = Y 2**-31 (Y from float64, a little below log w) on the tables' grid; q = w exp(-y)
    = 1 + rho with 0 <= rho < 2**-29.5 (else not ok: the row goes to `arb`); log w =
    y + log1p(rho), the series in limbs (terms above 2**44 units) and float64 (the rest)."""
    nl, fb = tab.nl, tab.fb
    m = w.shape[1]
    if m == 0:
        return np.zeros((nl + 1, 0), dtype=np.int64), np.zeros(0), np.zeros(0, dtype=bool)
    wf = _to_float(w, -fb)
    y = _log_y(wf)           # any CPU
    big = np.int64(1) << 40
    Y = np.clip(np.nan_to_num(y, nan=0.0), 0, big).astype(np.int64)
    h = (Y + LMASK) >> LO_BITS
    l = (h << LO_BITS) - Y
    tab.ensure_hi(int(h.max()) + 1)
    if USE_ROWS_KERNEL:      # the same limbs, fused per row (`fastref_rows.log_q`)
        spread = bool(h.max() >= HI_SPREAD)
        prod = bool(np.count_nonzero(l) > m // 4)
        err_e = _term_bounds(nl, spread, False, prod, False)[0]
        err_qt = _mul_bound(nl + 1, nl + 1, nl)
        hit, lot, aht, bht, a1t, b0t, _ = _kernel_tables(tab)
        q = np.empty((nl + 2, m), dtype=np.int64)
        neg = np.zeros(m, dtype=bool)
        fastref_rows.log_q(np.ascontiguousarray(w), h, l, spread, prod, nl, hit, lot, aht,
                           bht, a1t, b0t, q, neg)
    else:
        e, err_e, _ = _terms_norm(tab, h, l)
        q, err_qt = _mul(w, e, nl)                     # nl + 2 limbs, value 1 + rho
        q[nl] -= 1
        _norm(q)
        neg = q[-1] < 0          # rho < 0: w a few units below exp(y) (y clipped at 0)
        if neg.any():
            q[:, neg] = -q[:, neg]
            _norm(q)
    sg = np.where(neg, -1, 1)
    rho = q[:nl]             # |rho|
    rf = _to_float(rho, -fb)
    ok = (q[nl] == 0) & (q[nl + 1] == 0) & (rf < 2.0 ** -29.5)
    err_q = SAFE * (err_w + (wf * SAFE + err_w * 2.0 ** -fb) * err_e + err_qt + 1e-6)
    # log1p(sg r) = sum_j (sg)**j (-1)**(j+1) r**j / j: the powers P_j = floor(r**j 2**fb) in
    # limbs while a term can exceed 2**44 units, the rest in float64 (< 1/8 unit), as in
    # `_expm1_fix`; |r| < 2**-29.5.
    rmax = 2.0 ** -29.5

    def bound(j):
        return math.ldexp(1.0, fb) * rmax ** j / j

    kernel = USE_ROWS_KERNEL
    if not kernel:
        lam = _int_to_limbs(Y, fb - GRID, nl + 1)
        lam[:nl] += sg * rho
    err = 0.0
    pw, err_pw = rho, 0.0
    j = 2
    while bound(j) >= 2.0 ** 44:
        if kernel:           # the bound only (the limbs below, by `fastref_rows.log_series`)
            ep = _mul_bound(nl, nl, nl)
        else:
            pw, ep = _mul(pw, rho, nl)
        err_pw = err_pw * rmax + ep
        if not kernel:
            term = _div_small(pw, j) if j & (j - 1) else _shr(pw, j.bit_length() - 1)
            lam[:term.shape[0]] += sg * term if j % 2 else -term
        err += err_pw / j + 1.0
        j += 1
    u = np.where(ok, rf, 0.0) * sg
    tail = np.zeros(m)
    for i in range(j + 3, j - 1, -1):         # terms j .. j + 3 by Horner
        tail = 1.0 / i - u * tail
    tail = np.floor(np.ldexp(-_ipow(-u, j) * tail, fb)).astype(np.int64)
    if kernel:
        lam = np.empty((nl + 1, m), dtype=np.int64)
        fastref_rows.log_series(Y, fb - GRID, np.ascontiguousarray(rho), neg, tail, j, nl, lam)
    else:
        lam[0] += tail & RMASK
        lam[1] += tail >> R
        _norm(lam)
    err += 1.0 + bound(j) * 2.0 ** -40 + bound(j + 4) * 2.0
    err = SAFE * (err + err_q * (1.0 + 2.0 ** -28))
    return lam, err, ok


def _vec(x, t, bits, p, out, idx):
    """One evaluation of rows `idx` (x, t: those rows; none has a special loss) with nl =
    ceil(p / 26) limbs. Fills `out` for the rows it certifies; returns (failed, unsupported)
    as boolean masks over the rows (both go on to `_attempt_arb`)."""
    n, c = x.shape
    nl = max(2, -(-p // R))
    if nl > MAX_NL:
        return np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    tab = _fix_tables(nl)
    fb = tab.fb
    if USE_ROWS_KERNEL:                        # the same values in one pass per row
        xt, a, lead = np.empty(n), np.empty(n), np.empty(n)
        fastref_rows.row_max(np.ascontiguousarray(x, dtype=np.float64),
                             np.ascontiguousarray(t, dtype=np.int64), xt, a, lead)
        tmax = xt == a
    else:
        ar = np.arange(n)
        xt = x[ar, t]
        a = np.max(x, axis=1)                  # -inf are masked classes: they never lead
        tmax = xt == a
        lead = a.copy()
        mi = np.flatnonzero(tmax)
        if mi.size:                            # lead: the maximum without the target's copy
            xm = x[mi]
            xm[np.arange(mi.size), t[mi]] = -np.inf
            lead[mi] = np.max(xm, axis=1)
    zero = lead == -np.inf                     # the target is the only live class: loss 0
    with np.errstate(invalid="ignore", over="ignore"):
        lz = np.where(zero, 0.0, lead)
        b = np.floor(lz * 4096.0) / 4096.0
        sup = (np.abs(lz) < MAX_ABS) & np.where(tmax, a - b <= MAX_GAP, np.abs(xt) < MAX_ABS)
    sup |= zero
    failed = np.zeros(n, dtype=bool)
    out.put_zero(idx[zero])
    rows = np.flatnonzero(sup & ~zero)
    if rows.size == 0:
        return failed, ~sup
    nr = rows.size
    if nr == n:
        xr, br, tm, xtr, leadr, tr = x, b, tmax, xt, lead, t
    else:
        xr, br, tm, xtr, leadr, tr = x[rows], b[rows], tmax[rows], xt[rows], lead[rows], t[rows]
    cutoff = (fb + 8) * LOG2 + math.log(max(c, 2)) + 1.0
    sums = _term_sums_compiled if USE_KERNEL else _term_sums
    s, n_all, n_off, pruned, b_on, b_off = sums(tab, xr, br, tm, xtr, leadr, tr, cutoff)
    _norm(s)
    err_s = SAFE * (b_on * (n_all - n_off) + b_off * n_off + pruned)
    sf = _to_float(s, -fb)
    kk = np.zeros(nr, dtype=np.int64)
    res = np.zeros((nl + 3, nr), dtype=np.int64)
    err = np.zeros(nr)
    good = np.ones(nr, dtype=bool)
    # Target is the maximum: loss = log1p(Z), Z = S exp(b - a) = Zm 2**-k; loss = Z c for
    # small Z (filled in here), else log(1 + Z) below.
    mx = np.flatnonzero(tm)
    wl_cols, wl, err_wl = np.zeros(0, dtype=np.int64), np.zeros((nl + 1, 0), np.int64), []
    if mx.size:
        wl_cols, wl, err_wl = _max_rows(tab, bits, a[rows][mx], br[mx], s[:, mx], sf[mx],
                                        err_s[mx], res, err, kk, good, mx)
    # One `_log_fix` for log S (target below the maximum) and log(1 + Z).
    nm = np.flatnonzero(~tm)
    lam, el, okl = _log_fix(np.concatenate([s[:, nm], wl], axis=1),
                            np.concatenate([err_s[nm], err_wl]), tab)
    res[:nl + 1, wl_cols] = lam[:, nm.size:]
    err[wl_cols] = el[nm.size:]
    good[wl_cols] = okl[nm.size:]
    # Target below the maximum: loss = log S + (b - x_t) > ln 2.
    if nm.size and USE_ROWS_KERNEL:
        fastref_rows.below_max((br[nm] * 4096.0).astype(np.int64), fb - HI_BITS, lam,
                               np.ascontiguousarray(xtr[nm]), fb, nl, res, nm)
        err[nm] = el[:nm.size] + 1.0
        good[nm] = okl[:nm.size]
    elif nm.size:
        v = _int_to_limbs((br[nm] * 4096.0).astype(np.int64), fb - HI_BITS, nl + 3)
        v[:nl + 1] += lam[:, :nm.size]
        sc = np.ldexp(np.abs(xtr[nm]), fb)
        pos = xtr[nm] >= 0
        mag = _from_float(np.where(pos, np.floor(sc), np.ceil(sc)), nl + 2)
        v[:nl + 2] += np.where(pos, -mag, mag)               # - floor(x_t 2**fb)
        res[:, nm] = _norm(v)
        err[nm] = el[:nm.size] + 1.0
        good[nm] = okl[:nm.size]
    val = _to_float(res, -fb)
    cert = good & (res[-1] >= 0) & (np.ldexp(err, -fb) <= val * 2.0 ** -(bits + 2) * (1 - 2.0 ** -30))
    if cert.all():               # (the same block, without copies)
        out.put_fixed(idx[rows], res, kk, fb, err)
    else:
        out.put_fixed(idx[rows[cert]], res[:, cert], kk[cert], fb, err[cert])
    failed[rows[~cert]] = True
    return failed, ~sup



def _term_sums(tab, xr, br, tm, xtr, leadr, tr, cutoff):
    """The per-logit part of `_vec`, numpy path: per row the sum of the kept logits' terms
    exp(x - b) 2**fb (nl + 1 int64 limbs, not normalised; exact sums of limbs < 2**27), in
    chunks of ECHUNK kept logits (or whole rows, for short rows with every logit kept), and
    (n_all, n_off, pruned, b_on, b_off): per row the terms counted, those off the grid, whether
    any live logit was dropped; the largest error bound (units) of an on-grid and of an
    off-grid term. `_term_sums_compiled` is the same, fused."""
    nr, c = xr.shape
    nl = tab.nl
    with np.errstate(invalid="ignore"):
        keep = (xr - leadr[:, None]) >= -cutoff - 1.0      # -inf (masked) fails
    full = c <= ECHUNK // 8 and bool(keep.all())   # all kept, short rows: whole rows
    mr = np.flatnonzero(tm)
    keep[mr, tr[mr]] = False                   # one copy of the maximum is the 1
    pruned = np.count_nonzero(keep, axis=1) < np.count_nonzero(xr != -np.inf, axis=1) - tm
    # Per logit: exp(x - b) 2**fb, summed per row (exact int64 sums of limbs < 2**27).
    if full:                       # ... the maximum's copy is zeroed below
        step = max(1, ECHUNK // c)
        chunks = ((np.arange(r0, min(r0 + step, nr)), None) for r0 in range(0, nr, step))
    else:
        rr, cc = np.nonzero(keep)
        chunks = ((rr[s0:s0 + ECHUNK], cc[s0:s0 + ECHUNK]) for s0 in range(0, rr.size, ECHUNK))
    s = np.zeros((nl + 1, nr), dtype=np.int64)
    n_all = np.zeros(nr)
    n_off = np.zeros(nr)
    b_on = b_off = 0.0
    for r_, c_ in chunks:
        if full:
            xv = xr[r_].ravel()                # (a copy)
            mi = np.flatnonzero(tm[r_])
            xv[mi * c + tr[r_[mi]]] = leadr[r_[mi]]   # the maximum's copy: a valid term
            # like the others (on or off the grid), zeroed below
            r_ = np.repeat(r_, c)
        else:
            xv = xr[r_, c_]
        xs = xv * 2.0 ** GRID
        fl = np.floor(xs)
        d = (fl - br[r_] * 2.0 ** GRID).astype(np.int64)   # exact: x - b < 2**22 on the grid
        h = -(d >> LO_BITS)
        l = d & LMASK
        tab.ensure_hi(int(h.max()) + 1)
        off = np.flatnonzero(xs != fl)
        xl = xfl = None
        if off.size:
            xl, xfl = _frac_limbs(xv[off], xs[off], fl[off], tab)
            n_off += np.bincount(r_[off], minlength=nr)
        tv, b1, b2 = _terms(tab, h, l, xl, xfl, off)
        b_on = max(b_on, b1)
        b_off = max(b_off, b2 if off.size else 0.0)
        if full:
            rows_ = r_[::c]
            mi = np.flatnonzero(tm[rows_])
            tv[:, mi * c + tr[rows_[mi]]] = 0    # one copy of the maximum is the 1
            s[:nl, rows_] += np.add.reduceat(tv, np.arange(0, tv.shape[1], c), axis=1)
            n_all[rows_] += c - tm[rows_]
        else:
            starts = np.flatnonzero(np.r_[True, r_[1:] != r_[:-1]])
            s[:nl, r_[starts]] += np.add.reduceat(tv, starts, axis=1)
            n_all += np.bincount(r_, minlength=nr)
    return s, n_all, n_off, pruned, b_on, b_off



class _ShapeTab:
    """Zero tables of a `_FixTables`'s shapes, for `_term_bounds`: `_terms`'s error bounds
    depend on limb counts and on its choices only, never on the values."""

    def __init__(self, nl: int):
        self.nl, self.fb = nl, R * nl
        self.ah = np.zeros((nl, (HI_SPREAD >> 9) + 1), dtype=np.int64)
        self._bh = np.zeros((nl, 512), dtype=np.int64)
        self.hi = np.zeros((nl, 1), dtype=np.int32)
        self.a1 = np.zeros((nl, 1 << 9), dtype=np.int64)
        self.b0 = np.zeros((nl, 1 << 10), dtype=np.int64)
        self.lo = np.zeros((nl, 2), dtype=np.int32)


_BOUNDS: dict[tuple, tuple[float, float]] = {}


def _term_bounds(nl: int, spread: bool, offall: bool, prod: bool, anyoff: bool):
    """(b1, b2) as `_terms` returns them for a chunk with these choices (largest h >=
    HI_SPREAD; every logit off the grid; more than a quarter of l nonzero; any logit off the
    grid): `_terms` itself, run on four logits of zero tables that make the same choices."""
    key = (nl, spread, offall, prod and not offall, anyoff)
    if key not in _BOUNDS:
        tab = _ShapeTab(nl)
        kx = -(-(tab.fb - GRID) // R)
        h = np.full(4, HI_SPREAD if spread else 0, dtype=np.int64)
        l = np.full(4, 1 if prod else 0, dtype=np.int64)
        off = (np.arange(4) if offall else np.arange(1) if anyoff else np.zeros(0, np.int64))
        xl = np.zeros((kx, off.size), dtype=np.int64) if off.size else None
        xfl = np.zeros(off.size) if off.size else None
        _, b1, b2 = _terms(tab, h, l, xl, xfl, off)
        _BOUNDS[key] = (b1, b2)
    return _BOUNDS[key]


def _kernel_tables(tab: _FixTables) -> tuple:
    """`tab`'s tables one entry per row (entries x limbs, contiguous) for the kernels, and
    (nl = 5) the same tables packed, 5 limbs in 3 int64 words (`fastref_kernels.pack3`; else
    empty); kept on `tab` and rebuilt when its T_hi table has grown."""
    kt = getattr(tab, "_kt", None)
    if kt is None or kt[0] != tab.hi.shape[1]:
        lot = kt[2] if kt is not None else np.ascontiguousarray(tab.lo.T)
        a1t = kt[5] if kt is not None else np.ascontiguousarray(tab.a1.T)
        b0t = kt[6] if kt is not None else np.ascontiguousarray(tab.b0.T)
        new = (np.ascontiguousarray(tab.hi.T), lot, np.ascontiguousarray(tab.ah.T),
               np.ascontiguousarray(tab._bh.T), a1t, b0t)
        kt = (tab.hi.shape[1],) + new + (_packed(new, kt[7] if kt is not None else None),)
        tab._kt = kt
    return kt[1:]


def _packed(tables: tuple, old) -> tuple:
    """`_kernel_tables`'s tables (T_hi, T_lo, A, B, a1, b0) in `pack3` form for nl = 5 (the
    fixed ones taken from `old`, only T_hi and A grow), else six empty tables; a table with a
    limb outside [0, 2**26) is refused."""
    if tables[0].shape[1] != 5:
        return tuple(np.zeros((0, 3), dtype=np.int64) for _ in tables)
    out = []
    for k, tb in enumerate(tables):
        if old is not None and k not in (0, 2):
            out.append(old[k])
            continue
        pk = np.zeros((tb.shape[0], 3), dtype=np.int64)
        if not fastref_kernels.pack3(tb, pk):
            raise ArithmeticError("a table limb outside [0, 2**26)")
        out.append(pk)
    return tuple(out)


def _off_constants(tab: _FixTables) -> tuple:
    """`_frac_limbs` and `_expm1_fix`'s constants for the kernel: kx, ke, the first k of the
    float64 tail, k! (as numpy converts it), the tail's scaling fb - 31 k, and
    divmod(fb - 31, R)."""
    nl, fb = tab.nl, tab.fb
    kx = -(-(fb - GRID) // R)
    ke = min(nl, -(-(fb - 30) // R))
    k = 2
    while math.ldexp(1.0, fb - 31 * k) / math.factorial(k) >= 2.0 ** 44:
        k += 1
    qf, rf = divmod(fb - GRID, R)
    return kx, ke, k, float(np.float64(math.factorial(k))), fb - 31 * k, qf, rf


def _sig_bits(xr: np.ndarray) -> int:
    """The most significant bits among the first row's first 4096 values (53 for rows
    shorter than 2048 or a batch without rows: no dedup there)."""
    if xr.shape[1] < 2048 or xr.shape[0] == 0:
        return 53
    m = int(np.bitwise_or.reduce(xr[0, :4096].view(np.uint64) & np.uint64((1 << 52) - 1)))
    low = m & -m if m else 1 << 52           # the lowest significand bit set in any value
    return 53 - (low.bit_length() - 1)


def _cache_bits(xr: np.ndarray) -> int:
    """log2 of the kernel's per-row value cache: 2**14 slots for long rows of values of at
    most 8 significant bits (bfloat16, float8 logits: few distinct values), else 0 (none).
    Only a matter of speed: the sums are the same either way (for float16's 11 bits the
    distinct values are too many: measured slower than no cache)."""
    return 14 if _sig_bits(xr) <= 8 else 0


def _hist_size(xr: np.ndarray, hmax: np.ndarray, packed: tuple) -> int:
    """The size of the kernel's per-row count of on-grid logits with l = 0 by h (`sums`'s
    `_hist`: their term is T_hi[h], one per distinct h with its count): the largest h + 1,
    for long rows of values of 5 to 12 significant bits (float16, bfloat16 logits: mostly on
    the 2**-12 grid; float8s' few values are the cache's), where nl = 5 and the tables' l = 0
    entries are 0; else 0 (none). Only a matter of speed: the sums are the same either way."""
    if hmax.size == 0 or packed[0].shape[0] == 0 or not 5 <= _sig_bits(xr) <= 12:
        return 0
    if packed[1][0].any() or packed[4][0].any() or packed[5][0].any():
        return 0
    return int(hmax.max()) + 1


def _term_sums_compiled(tab, xr, br, tm, xtr, leadr, tr, cutoff):
    """`_term_sums` by `fastref_kernels`: `scan` replays the numpy path's chunks (their sizes,
    largest h, off-grid and nonzero-l counts), from which each chunk's choices and bounds
    follow as in `_terms` (the bounds by `_term_bounds`, i.e. by `_terms`); `sums` adds each
    term into its row's int64 limbs by the same integer steps. Same limbs, same bounds."""
    nr, c = xr.shape
    nl = tab.nl
    xr = np.ascontiguousarray(xr, dtype=np.float64)
    thr = -cutoff - 1.0
    step = max(1, ECHUNK // c)
    do_full = c <= ECHUNK // 8
    tmi = np.ascontiguousarray(tm, dtype=np.bool_)
    tri = np.ascontiguousarray(tr, dtype=np.int64)
    nkb = np.zeros(nr, dtype=np.int64)
    nfin = np.zeros(nr, dtype=np.int64)
    noff_p = np.zeros(nr, dtype=np.int64)
    noff_f = np.zeros(nr, dtype=np.int64)
    ncp = -(-(nr * c) // ECHUNK) + 1
    ncf = -(-nr // step) if do_full else 1
    cst = np.zeros((4, ncp), dtype=np.int64)
    fst = np.zeros((4, ncf), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        npos = fastref_kernels.scan(xr, br, leadr, tmi, tri, thr, ECHUNK, step, do_full, nkb,
                                    nfin, noff_p, noff_f, cst[0], cst[1], cst[2], cst[3],
                                    fst[0], fst[1], fst[2], fst[3])
    full = do_full and bool((nkb == c).all())
    if full:
        st, n_off = fst, noff_f
    else:
        st, n_off = cst[:, :-(-npos // ECHUNK)], noff_p
    n_all = (nkb - tm).astype(np.float64)
    pruned = nkb - tm < nfin - tm
    m, hmax, noff, nzl = st
    spread = hmax >= HI_SPREAD
    offall = noff == m
    prod = nzl > m // 4
    b_on = b_off = 0.0
    for key in set(zip(spread.tolist(), offall.tolist(), prod.tolist(), (noff > 0).tolist())):
        b1, b2 = _term_bounds(nl, *key)
        b_on = max(b_on, b1)
        b_off = max(b_off, b2 if key[3] else 0.0)
    out = np.zeros((nr, nl), dtype=np.int64)
    if m.size:
        tab.ensure_hi(int(hmax.max()) + 1)
        hit, lot, aht, bht, a1t, b0t, packed = _kernel_tables(tab)
        kx, ke, kend, facf, tsh, qf, rf = _off_constants(tab)
        fastref_kernels.sums(xr, xr.view(np.uint64), br, leadr, tmi, tri, thr, ECHUNK, step,
                             full, spread, prod & ~offall, nl, hit, lot, aht, bht, a1t, b0t, packed,
                             tab.fb, kx, ke, kend, facf, tsh, qf, rf, _cache_bits(xr),
                             _hist_size(xr, hmax, packed), out)
    s = np.zeros((nl + 1, nr), dtype=np.int64)
    s[:nl] = out.T
    return s, n_all, n_off.astype(np.float64), pruned, b_on, b_off


def _max_terms_fits(nl: int, kx: int, kend: int) -> bool:
    """`fastref_rows.max_terms` takes these limb counts: every power of `_expm1_fix`'s series
    keeps at least one limb (`_mul`'s k >= 1) and x_f's limbs fit nl."""
    kt = kx
    for _ in range(2, kend):
        kt = kt + kx - nl
        if kt < 1:
            return False
    return kx <= nl


def _max_rows(tab, bits, av, bv, s, sf, err_s, res, err, kk, good, cols):
    """Rows whose target is the maximum a: Z = S exp(b - a) with b - a = D_a 2**-31 - a_f;
    k = floor((a - b) / ln 2) and v = b - a + k ln 2 in (-ln 2 - 2**-31, 2**-40] in limbs (k ln 2
    to within 1 + k 2**-26 units), exp(v) by the tables, Zm = S exp(v), Z = Zm 2**-k.
    Z < 2**-T: loss = Z c, c = sum_i (-Z)**i / (i + 1) by Horner in limbs (a relative error),
    filled in `res` with the exponent k; Z >= 2**-T: returns (columns, 1 + Z in nl + 1 limbs,
    its error) for loss = log(1 + Z) by `_log_fix` (an absolute error, relative to a loss
    >= 2**-T-1)."""
    nl, fb = tab.nl, tab.fb
    m = av.size
    kx = -(-(fb - GRID) // R)
    as_ = av * 2.0 ** GRID
    fa = np.floor(as_)
    da = (bv * 2.0 ** GRID - fa).astype(np.int64)         # (b - a_hi) 2**31 <= 0, exact
    xa = np.zeros((kx, m), dtype=np.int64)
    xfa = np.zeros(m)
    offa = np.flatnonzero(as_ != fa)
    if offa.size:
        xa[:, offa], xfa[offa] = _frac_limbs(av[offa], as_[offa], fa[offa], tab)
    k = np.maximum(np.floor((-da * 2.0 ** -GRID + xfa) / LOG2), 0).astype(np.int64)
    kl = np.zeros((nl + 3, m), dtype=np.int64)
    kl[:nl + 1] = tab.ln2[:, None] * k
    kl = _norm(kl)[1:]                                        # floor(k ln2 2**fb), nl + 2 limbs
    v = kl + _int_to_limbs(da, fb - GRID, nl + 2)
    v[:kx] -= xa
    _norm(v)
    q0, r0 = divmod(fb - GRID, R)
    acc = v[-1].copy()
    for j in range(nl, q0 - 1, -1):
        acc = (acc << R) + v[j]
    d2 = acc >> r0                                            # floor(v 2**31)
    x2 = v[:kx].copy()
    if r0:
        x2[q0] &= (1 << r0) - 1
    h2 = -(d2 >> LO_BITS)
    l2 = d2 & LMASK
    tab.ensure_hi(int(h2.max()) + 1)
    kx_, ke, kend, facf, tsh, _, _ = _off_constants(tab)
    if USE_ROWS_KERNEL and _max_terms_fits(nl, kx_, kend):   # the same limbs, fused
        spread = bool(h2.max() >= HI_SPREAD)
        err_e2 = _term_bounds(nl, spread, True, False, True)[1]
        ez = _mul_bound(nl + 1, nl + 1, nl)
        hit, _, aht, bht, a1t, b0t, _ = _kernel_tables(tab)
        zm = np.empty((nl + 2, m), dtype=np.int64)
        fastref_rows.max_terms(h2, l2, np.ascontiguousarray(x2), _to_float(x2, -fb),
                               np.ascontiguousarray(s), spread, nl, kx_, ke, kend, facf,
                               math.ldexp(1.0, tsh), hit, aht, bht, a1t, b0t, zm)
    else:
        e2, _, err_e2 = _terms_norm(tab, h2, l2, x2, _to_float(x2, -fb), np.arange(m))
        zm, ez = _mul(s, e2, nl)                              # nl + 2 limbs
    err_e2 = SAFE * (err_e2 + 2.0 + k * 2.0 ** -26)          # + the errors of k ln 2, a_f
    err_z = SAFE * (err_s * (1 + 2.0 ** -30) + (sf * SAFE + err_s * 2.0 ** -fb) * err_e2 + ez)
    zmf = _to_float(zm, -fb)
    zf = np.ldexp(zmf, -k)
    tt = max(1, min(20, fb - bits - 12))
    big = zf >= 2.0 ** -tt
    bl = np.flatnonzero(big)
    kernel = USE_ROWS_KERNEL
    shift = _shift_right_compiled if kernel else _shift_right
    zs = shift(zm[:, bl], k[bl])
    w = zs[:nl + 1].copy()
    w[nl] += (zs[nl + 1] << R) + 1                          # 1 + Z, for `_log_fix`
    sl = np.flatnonzero(~big)
    if sl.size:
        zs = shift(zm[:, sl], k[sl])[:nl]
        err_zs = err_z[sl] * np.ldexp(1.0, -k[sl]) + 1.0
        zb = float(np.max(zf[sl] * SAFE + err_zs * 2.0 ** -fb))
        jj = 0 if zb <= 2.0 ** -fb else max(0, math.ceil(fb / -math.log2(zb)) - 1)
        if kernel:               # the same limbs (`fastref_rows.small_z`), the same bounds
            inv = np.ascontiguousarray(np.concatenate(
                [np.zeros((nl + 1, 1), dtype=np.int64)]
                + [tab.inverse(i) for i in range(1, jj + 2)], axis=1).T)
            mm = np.empty((nl + 3, sl.size), dtype=np.int64)
            fastref_rows.small_z(np.ascontiguousarray(zs), np.ascontiguousarray(zm[:, sl]),
                                 inv, jj, nl, mm)
            ep, em = _mul_bound(nl, nl + 1, nl), _mul_bound(nl + 2, nl + 1, nl)
        err_c = 1.0
        if not kernel:
            c = np.repeat(tab.inverse(jj + 1), sl.size, axis=1)
        for i in range(jj, 0, -1):
            if not kernel:
                pr, ep = _mul(zs, c, nl)
                c = tab.inverse(i) - pr
                _norm(c)
            err_c = 1.0 + ep + zb * err_c
        err_c = err_c + 1.0 + err_zs * 0.50001               # + series remainder, + dc/dZ dZ
        if not kernel:
            mm, em = _mul(zm[:, sl], c, nl)                   # nl + 3 limbs
        res[:, cols[sl]] = mm
        err[cols[sl]] = SAFE * (err_z[sl] + (zmf[sl] * SAFE) * err_c + em)
        kk[cols[sl]] = k[sl]
    return cols[bl], w, err_z[bl] * np.ldexp(1.0, -k[bl]) + 1.0


# ---------------------------------------------------------------------------------------------
# Results of a batch, the driver, and conversions.
# ---------------------------------------------------------------------------------------------

PENDING, NAN, INF, ZERO, BALL, FIXED = range(6)


class Results:
    """Certified losses of a batch, without a Python object per row: `kind` per row (PENDING,
    NAN, INF, ZERO, BALL: an `arb` ball in `balls`, FIXED: limbs V with exponent k in a block,
    the loss V 2**-(fb + k), its radius at most 2**-(bits + 2) of it). Assigning an `arb`,
    a float (nan / inf) or None (not done) to a row works as for a list."""

    def __init__(self, n: int):
        self.n = n
        self.kind = np.zeros(n, dtype=np.int8)
        self.balls: dict[int, arb] = {}
        self.blocks: list[tuple] = []
        self.block_rows: list[np.ndarray] = []     # per block, the rows put in it
        self.block = np.full(n, -1, dtype=np.int64)
        self.pos = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def __setitem__(self, i: int, v) -> None:
        self.balls.pop(i, None)
        if v is None:
            self.kind[i] = PENDING
        elif isinstance(v, float):
            self.kind[i] = NAN if math.isnan(v) else INF
        else:
            self.kind[i] = BALL
            self.balls[i] = v

    def put_zero(self, rows: np.ndarray) -> None:
        self.kind[rows] = ZERO

    def put_fixed(self, rows: np.ndarray, v: np.ndarray, k: np.ndarray, fb: int,
                  rad: np.ndarray) -> None:
        if rows.size == 0:
            return
        for r in rows[self.kind[rows] == BALL].tolist():
            self.balls.pop(r, None)
        self.kind[rows] = FIXED
        self.block[rows] = len(self.blocks)
        self.pos[rows] = np.arange(rows.size)
        self.blocks.append((v, k, fb, rad))
        self.block_rows.append(rows.copy())

    def _fixed_rows(self):
        """Per block: (rows, limbs, k, fb) of the rows that still point at it."""
        for bi, (v, k, fb, _) in enumerate(self.blocks):
            # = np.flatnonzero((self.block == bi) & (self.kind == FIXED)), from the rows
            # put in the block (the only rows that can point at it), ascending
            put = self.block_rows[bi]
            ordered = put.size < 2 or bool((put[1:] > put[:-1]).all())
            if not ordered:
                put = np.unique(put)
            rows = put[(self.block[put] == bi) & (self.kind[put] == FIXED)]
            if ordered and rows.size == put.size:   # all still here, in order: the block
                yield rows, v, k, fb
            elif rows.size:
                p = self.pos[rows]
                yield rows, v[:, p], k[p], fb

    def __getitem__(self, i: int):
        """The row's loss: an `arb` ball (exact midpoint, its radius), or nan / inf floats."""
        kind = self.kind[i]
        if kind == NAN:
            return math.nan
        if kind == INF:
            return math.inf
        if kind == ZERO:
            return arb(0)
        if kind == BALL:
            return self.balls[i]
        if kind == FIXED:
            man, ex = self.man_exp(i)
            rad = self.blocks[self.block[i]][3][self.pos[i]]
            with arbprec(man.bit_length() + 8):
                return arb((man, ex), arb((int(math.ceil(rad)), ex)).upper())
        raise KeyError(i)

    def man_exp(self, i: int) -> tuple[int, int]:
        """A FIXED row's loss as the exact integer pair (man, exp): man 2**exp."""
        v, k, fb, _ = self.blocks[self.block[i]]
        p = self.pos[i]
        man = 0
        for j in range(v.shape[0] - 1, -1, -1):
            man = (man << R) + int(v[j, p])
        return man, -(fb + int(k[p]))

    def double_double(self) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) per row: for FIXED rows hi + lo within 2**-104 relative of the midpoint and
        hi = hi + lo rounded to nearest; for balls `arb_to_double_double`; nan / inf / 0."""
        hi = np.zeros(self.n)
        lo = np.zeros(self.n)
        hi[self.kind == NAN] = math.nan
        hi[self.kind == INF] = math.inf
        for i, v in self.balls.items():
            hi[i], lo[i] = arb_to_double_double(v)
        for rows, v, k, fb in self._fixed_rows():
            hi[rows], lo[rows] = _dd_from_limbs(v, -(fb + k))
            for r in rows[k > TINY_K].tolist():              # near or below underflow
                hi[r], lo[r] = man_exp_to_double_double(*self.man_exp(r))
        return hi, lo

    def mean(self, bits: int):
        """Certified mean (an `arb` ball, or nan / inf), as a sum of the midpoints
        (exact integer sums of the limbs; exact float sums of the double-doubles of rows with
        an exponent) and balls, at bits + 64 + log2(N) bits."""
        if (self.kind == NAN).any():
            return math.nan
        if (self.kind == INF).any():
            return math.inf
        if (self.kind == PENDING).any():
            raise ValueError("pending rows")
        with arbprec(bits + 64 + max(self.n, 2).bit_length()):
            total = arb(0)
            for v in self.balls.values():
                total += v
            for rows, v, k, fb in self._fixed_rows():
                plain = k == 0
                if plain.any():
                    if USE_ROWS_KERNEL:
                        limbs = np.empty(v.shape[0], dtype=np.int64)
                        fastref_rows.limb_sums(np.ascontiguousarray(v), plain, limbs)
                    else:
                        limbs = v[:, plain].sum(axis=1)       # < N 2**27 each: exact
                    man = 0
                    for j in range(len(limbs) - 1, -1, -1):
                        man = (man << R) + int(limbs[j])
                    total += arb((man, -fb))
                for r in rows[k > TINY_K].tolist():          # exactly, per row
                    total += arb(self.man_exp(r))
                mid = (k > 0) & (k <= TINY_K)
                if mid.any():
                    h, l = _dd_from_limbs(v[:, mid], -(fb + k[mid]))
                    vals = h.tolist() + l.tolist()
                    for _ in range(3):                        # exact-sum expansion, 3 floats
                        part = math.fsum(vals)
                        total += arb(part)
                        vals.append(-part)
            return total / self.n


def _dd_from_limbs(v: np.ndarray, e0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) of sum_j v_j 2**(R j + e0) (normalised limbs >= 0): the top six limbs as three
    exact floats, summed with TwoSum / FastTwoSum; hi + lo within 2**-104 relative.
    (`fastref_rows.dd_from_limbs` where USE_ROWS_KERNEL: the same operations per row.)"""
    k, m = v.shape
    if USE_ROWS_KERNEL:
        e0 = np.broadcast_to(np.asarray(e0, dtype=np.int64), (m,))
        hi, lo = np.empty(m), np.empty(m)
        fastref_rows.dd_from_limbs(np.ascontiguousarray(v), np.ascontiguousarray(e0), hi, lo)
        return hi, lo
    cols = np.arange(m)
    jt = (k - 1) - np.argmax(v[::-1] != 0, axis=0)
    pad = np.zeros((k + 6, m), dtype=np.float64)
    pad[6:] = v

    def limb(d):
        return pad[jt + 6 - d, cols]

    e0 = np.asarray(e0, dtype=np.int64)
    t1 = np.ldexp(limb(0) * 2.0 ** R + limb(1), R * (jt - 1) + e0)
    t2 = np.ldexp(limb(2) * 2.0 ** R + limb(3), R * (jt - 3) + e0)
    t3 = np.ldexp(limb(4) * 2.0 ** R + limb(5), R * (jt - 5) + e0)
    s = t1 + t2
    bb = s - t1
    er = (t1 - (s - bb)) + (t2 - bb)
    lo = er + t3
    hi = s + lo
    lo = lo - (hi - s)
    return hi, lo


def certified_losses(x: np.ndarray, t: np.ndarray, bits: int, max_prec: int,
                     error_cls=ArithmeticError) -> Results:
    """Certified losses of a validated batch (`Results`). Raises `error_cls` naming the first
    row that cannot be certified within `max_prec` bits."""
    n, c = x.shape
    out = Results(n)
    code = special_losses(x, t)
    out.kind[code == 1] = NAN
    out.kind[code == 2] = INF
    todo = np.flatnonzero(code == 0)
    cap = PREC_STEP * -(-max_prec // PREC_STEP)
    p = min(start_prec(bits, c), cap)
    while todo.size:
        step = max(1, min(CHUNK // c, ROWS))   # rows per pass: bounded, cache-sized temporaries
        failed = np.concatenate([np.zeros(0, dtype=np.int64)] + [
            _attempt(*_rows(x, t, ix), bits, p, out, ix)
            for ix in (todo[k:k + step] for k in range(0, todo.size, step))])
        if failed.size and p >= max_prec:
            r = int(failed[0])
            raise error_cls(f"row {r}: the loss ball is wider than 2**-{bits + 2} relative at "
                            f"{p} bits; precision cap {max_prec} bits reached")
        todo = failed
        p = min(2 * p, cap)
    return out


def _rows(x: np.ndarray, t: np.ndarray, ix: np.ndarray) -> tuple:
    """Rows ix (ascending) of x and t: views where they are consecutive, else copies."""
    if ix.size and ix[-1] - ix[0] == ix.size - 1:
        return x[ix[0]:ix[-1] + 1], t[ix[0]:ix[-1] + 1]
    return x[ix], t[ix]


def _attempt(x, t, bits, p, out, idx) -> np.ndarray:
    """One evaluation at precision p of rows `idx`: the vectorised engine, then `arb` for the
    rows it does not take or cannot certify; fills `out`; returns the rows (indices of the
    full batch) still uncertified."""
    failed, unsup = _vec(x, t, bits, p, out, idx)
    rest = np.flatnonzero(failed | unsup)
    if rest.size == 0:
        return np.zeros(0, dtype=np.int64)
    return _attempt_arb(x[rest], t[rest], bits, p, out, idx[rest])


def _attempt_arb(x, t, bits, p, out, idx) -> np.ndarray:
    """One evaluation at fixed-point precision p of rows `idx`; fills `out`; returns the
    rows (as indices of the full batch) whose balls are too wide."""
    n, c = x.shape
    ar = np.arange(n)
    xt = x[ar, t]
    finite = x != -np.inf
    a = np.max(np.where(finite, x, -np.inf), axis=1)
    tmax = xt == a
    incl = finite.copy()
    incl[ar[tmax], t[tmax]] = False           # one copy of the maximum is the 1
    lead = np.max(np.where(incl, x, -np.inf), axis=1)
    cutoff = (p + 8) * math.log(2) + math.log(max(c, 2)) + 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        keep = incl & ((x - lead[:, None]) >= -cutoff - 1.0)
    npruned = incl.sum(axis=1) - keep.sum(axis=1)
    safe = np.abs(lead) < 2.0 ** 40
    b = np.where(safe, np.floor(np.where(safe, lead, 0.0) * 4096.0) / 4096.0, lead)
    with np.errstate(invalid="ignore", over="ignore"):
        y = x * 2.0 ** GRID
        on = keep & (np.abs(x) < BIG) & (np.floor(y) == y) & (np.abs(b) < BIG)[:, None]
    if c >= 1 << 27:  # float64 sums of table limbs would no longer be exact
        on[:] = False
    off = keep & ~on
    rr, cc = np.nonzero(on)
    d = ((x[rr, cc] - b[rr]) * 2.0 ** GRID).astype(np.int64)
    tab = _tables(p)
    vsum = _grid_sums(rr, d, n, c, tab)
    ngrid = on.sum(axis=1).tolist()
    offany = off.any(axis=1).tolist()
    npr = npruned.tolist()
    leadinf = (lead == -np.inf).tolist()
    tml = tmax.tolist()
    bl, al, xtl = b.tolist(), a.tolist(), xt.tolist()
    failed = []
    wprec = p + 40
    with arbprec(wprec):
        unit = arb(2) ** (-p)
        tail1 = (arb(2.0 ** -12) - arb(cutoff)).exp()   # bound on one dropped term
        thr = arb(2) ** (bits + 2)
        zero = arb(0)
        for i in range(n):
            if leadinf[i]:                   # target is the only class (or the rest masked)
                out[idx[i]] = zero
                continue
            # mid vsum 2**-2P, radius 5 * 2**-P per on-grid term
            s = arb((vsum[i], -p), ngrid[i] * 5) * unit if vsum[i] else zero
            if offany[i]:
                s += _row_arb(x[i][off[i]], bl[i], wprec)
            if npr[i]:
                s += arb(0, (tail1 * npr[i]).upper())  # the dropped terms lie in [0, tail]
            bb = arb(bl[i])
            if tml[i]:
                loss = (s * (bb - arb(al[i])).exp()).log1p()
            else:
                loss = s.log() + (bb - arb(xtl[i]))
            if loss.rad() * thr <= abs(loss.mid()) and loss > 0:
                out[idx[i]] = loss
            else:
                failed.append(idx[i])
    return np.asarray(failed, dtype=np.int64)


def arb_to_double_double(v) -> tuple[float, float]:
    """(hi, lo) of an arb midpoint (or a float nan / inf): hi the midpoint rounded to nearest,
    lo the rest rounded to nearest."""
    if isinstance(v, float):
        return v, 0.0
    man, ex = v.mid().man_exp()
    return man_exp_to_double_double(int(man), int(ex))


def man_exp_to_double_double(man: int, ex: int) -> tuple[float, float]:
    """(hi, lo) of man 2**ex: hi rounded to nearest, lo the rest rounded to nearest."""
    if man == 0:
        return 0.0, 0.0
    hi = _round_float(man, ex)
    if not math.isfinite(hi) or hi == 0.0:
        return hi, 0.0
    # hi = hm * 2**he exactly; the rest is an exact integer combination.
    hm, he = float.as_integer_ratio(hi)
    he = -(he.bit_length() - 1)
    e0 = min(ex, he)
    rest = (man << (ex - e0)) - (hm << (he - e0))
    return hi, _round_float(rest, e0) if rest else 0.0


def _round_float(man: int, ex: int) -> float:
    """man * 2**ex rounded to the nearest float64 (ties to even), overflowing to inf."""
    if man == 0:
        return 0.0
    sign = -1.0 if man < 0 else 1.0
    m = abs(man)
    # Python's int / int true division is correctly rounded; scale into range first.
    nb = m.bit_length()
    try:
        if ex >= 0:
            if nb + ex > 1100:
                return sign * math.inf
            return sign * float(m << ex)
        if nb + ex < -1200:
            return sign * 0.0
        return sign * (m / (1 << -ex))   # int / int true division is correctly rounded
    except OverflowError:                # rounds past float64's largest value
        return sign * math.inf

