"""The fast certified backend of the ground truth: ball arithmetic (python-flint's `arb`) for
every rounding that is not exact, plus an exact fixed-point sum for the bulk of the terms.

What is computed. Per row the loss is, as in `reference` (mpmath),
  target is a maximum:  loss = log1p(exp(b - a) * S)
  otherwise:            loss = log(S) + (b - x_t)
where S = sum_{i in R} exp(x_i - b), R is the row (without one copy of the maximum when the
target is the maximum), `lead` = max(R) and b = lead rounded down to a multiple of 2**-12.
S >= exp(lead - b) >= 1 and is known as a ball [mid +- rad] that provably contains it:

* Terms with x_i - lead < -cutoff, cutoff = (P + 8) ln 2 + ln C + 1, are dropped; each is below
  exp(2**-12 - cutoff), and their count times that bound is added to the ball (one-sided).
* "On-grid" terms (x_i a multiple of 2**-31, as every float16, bfloat16 and float32 value of
  magnitude >= 2**-8 is) are summed exactly in integers. x_i - b is then exactly an integer
  D times 2**-31 (both are multiples of 2**-31 and the difference is below 2**22), split as
  D = H * 2**19 + L, and exp(x_i - b) = exp(H * 2**-12) * (1 + (exp(L * 2**-31) - 1)).
  Both factors come from tables rounded to P fraction bits (entries from `arb` balls, each
  within 2 units of 2**-P of the true value); per row and per H the second factors are added
  in int64/float64 limbs (exactly), then multiplied by the first and added (exactly). Each
  term's product of table values is within (2 + 2 * 1.0003 + 2**-P) * 2**-P < 5 * 2**-P of the
  true term, so the ball radius is 5 * 2**-P times the number of such terms.
* The remaining terms (float64 values, tiny or huge magnitudes) are summed in `arb`, once per
  distinct value with its count.
Every operation after that (exp(b - a), log, log1p, the subtraction b - x_t) is ball arithmetic.
A row is certified when the radius of the loss is at most 2**-(bits + 2) of its midpoint (so
the midpoint is within 2**-(bits + 1) relative of the true loss): this bounds the error, where
two evaluations agreeing only suggests it. Otherwise P doubles, up to `max_prec`.

Non-finite inputs follow `reference`'s policy exactly (see `special_losses`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
from flint import arb, ctx

__all__ = ["certified_losses", "special_losses", "arb_to_double_double", "arb_mean", "start_prec"]

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

    Policy (as `reference`): any nan gives nan; a -inf target gives +inf unless the row has
    nothing but -inf (nan); a +inf logit gives +inf unless it is the target (inf - inf: nan).
    Returns an array of codes: 0 compute, 1 nan, 2 +inf.
    """
    n = len(t)
    xt = x[np.arange(n), t]
    anynan = np.isnan(x).any(axis=1)
    anypinf = (x == np.inf).any(axis=1)
    allninf = (x == -np.inf).all(axis=1)
    code = np.zeros(n, dtype=np.int8)
    tm = xt == -np.inf
    code[tm] = np.where(allninf[tm], 1, 2)
    pi = ~tm & anypinf
    code[pi] = np.where(xt[pi] == np.inf, 1, 2)
    code[anynan] = 1
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


def certified_losses(x: np.ndarray, t: np.ndarray, bits: int, max_prec: int,
                     error_cls=ArithmeticError) -> list:
    """Certified loss balls for a validated batch: a list with an `arb` per row, or the floats
    nan / inf for rows the non-finite policy decides. Raises `error_cls` naming the first row
    that cannot be certified within `max_prec` bits."""
    n, c = x.shape
    out: list = [None] * n
    code = special_losses(x, t)
    for i in np.flatnonzero(code):
        out[i] = math.nan if code[i] == 1 else math.inf
    todo = np.flatnonzero(code == 0)
    cap = PREC_STEP * -(-max_prec // PREC_STEP)
    p = min(start_prec(bits, c), cap)
    while todo.size:
        step = max(1, CHUNK // c)   # rows per pass: bounded temporaries (memory)
        failed = np.concatenate([np.zeros(0, dtype=np.int64)] + [
            _attempt(x[ix], t[ix], bits, p, out, ix)
            for ix in (todo[k:k + step] for k in range(0, todo.size, step))])
        if failed.size and p >= max_prec:
            r = int(failed[0])
            raise error_cls(f"row {r}: the loss ball is wider than 2**-{bits + 2} relative at "
                            f"{p} bits; precision cap {max_prec} bits reached")
        todo = failed
        p = min(2 * p, cap)
    return out


def _attempt(x, t, bits, p, out, idx) -> np.ndarray:
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
    man, ex = int(man), int(ex)
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
    if ex >= 0:
        if nb + ex > 1100:
            return sign * math.inf
        return sign * float(m << ex)
    if nb + ex < -1200:
        return sign * 0.0
    return sign * (m / (1 << -ex))   # int / int true division is correctly rounded


def arb_mean(losses: list, bits: int):
    """Mean of certified losses (arb balls, or nan / inf floats): nan if any is nan, else inf if
    any is inf; a sum of non-negative balls keeps their relative radius, and the sum and the
    division run with `bits` + 64 + log2(N) bits."""
    if any(isinstance(v, float) and math.isnan(v) for v in losses):
        return math.nan
    if any(isinstance(v, float) for v in losses):
        return math.inf
    with arbprec(bits + 64 + max(len(losses), 2).bit_length()):
        s = arb(0)
        for v in losses:
            s += v
        return s / len(losses)
