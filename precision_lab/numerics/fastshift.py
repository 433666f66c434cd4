"""The shifted exponentials and their sums in one compiled (numba) pass: per row (or per block
of a row), s = the sequential sum of exp(round(x - m)) in the accumulator, m = max x, without
the (N, C) float64 arrays of the difference and of the exponentials.

`shifted_sums(ar, x, ...)` returns what the numpy path computes step by step (m by np.max,
`Arithmetic.exp_sub(x, m)`, then `Arithmetic.sum`), bit for bit, for the formats and
accumulators whose steps it inlines (`fusable`):

  the working format bfloat16 (exp by fastelem's 65536-entry table keyed by the top 16 bits
  of the float32, `fastelem._table16`: its entries are `elementary.compute`'s bits) or a
  format served by fast32 (float32: fast32's plain float64 exp `_exp1` of the rounded
  difference, with `_sub_exp1`'s treatment of differences below the smallest normal);
  round to nearest, overflow to inf, the "correct" elementary functions;
  the accumulator the working format itself (float64 sums rounded to p <= 25 bits as
  fastelem's `_accumulate_native` rounds them) or float32 (float32 additions, as
  `_accumulate_float32`; the total then rounded once to the working format, as
  `Arithmetic.round` does, by fastround's `_round1`). Other formats (float16, the float8s,
  stochastic rounding) are not served: `fusable` is False and the callers take the numpy path.

The maxima (and log1p's argmax) are numpy's own (np.max, np.argmax on the same rows and
blocks as the numpy path takes them, so the same zero is picked where a row's maximum is
+-0). The difference x - m is rounded to the working format as fastround's `_sub_kernel`
rounds it (its fast pass for normal results, `_round_rare` for the others); every sum starts
with its first term and adds the others in column order, as the numpy path's sums do. All
arithmetic is IEEE float64 / float32 (numba without fastmath), no libm.

A row is declined (ok False: the caller recomputes it by the numpy path, on those rows alone,
which every step allows: each is elementwise or along one row) where the fast steps would
not be the numpy path's: a (block) maximum that is nan (a nan logit) or +-inf; an
exponential that is nan, +inf, uncertain (fast32's rounding test: the numpy path settles it
by the double-double path) or, for the unshifted exp, an input that is not a value of the
format; a sum that is not finite in the accumulator. Everything else is exactly the numpy
path's steps, in the same order.

Options: `block` (None: the whole row, else columns in blocks of `block`, each with its own
maximum and sum, the last one ragged: the online method's blocks); `shifted=False`: exp(x)
itself (the unshifted `naive`); `skip_argmax`: the term of the row's first maximum (np.argmax)
replaced by 0 (log1p's sum without the argmax's exp(0) = 1); `pick`: also exp(round(x_t - m))
at column pick[i] (the softmax's numerator). `ENABLED = False` turns the pass off (every
caller then takes its numpy path; tests/test_fastshift.py compares the two).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from . import fast32, fastelem
from .fastelem import _round_bits
from .fastround import _bits, _bits32, _float, _round1, _round_rare
from .formats import NEAREST

__all__ = ["fusable", "shifted_sums", "ENABLED"]

ENABLED = True               # False: every caller takes its numpy path (tests compare them)
_CH = 256                    # columns per chunk (a block of the online method is one chunk)
_R = 8                       # rows side by side (independent chains of sequential sums)
_DBL_MAX = 1.7976931348623157e308
_EXP_TOP16, _EXP_F32 = 0, 1
_ACC_NATIVE, _ACC_F32 = 0, 1


def _exp_kind(fmt) -> int | None:
    if fastelem._is_top16(fmt):
        return _EXP_TOP16
    if fast32.supports(fmt) and fastelem.table_size(fmt) > fastelem.TABLE_MAX:
        return _EXP_F32
    return None


def _acc_kind(acc_fmt) -> int | None:
    """The compiled sum `Arithmetic.sum` takes for this accumulator format, if it is one of
    fastelem.accumulate_native's."""
    if not (acc_fmt.native and acc_fmt.rounding == NEAREST and acc_fmt.precision <= 25):
        return None
    if acc_fmt.name == "float32":
        return _ACC_F32
    return _ACC_NATIVE if acc_fmt.overflow == "inf" else None


def fusable(ar) -> bool:
    """This pass gives `ar`'s bits (see the module docstring)."""
    fmt, acc = ar.fmt, ar.acc_fmt
    return (ENABLED and ar.elementary == "correct" and fmt.rounding == NEAREST
            and fmt.overflow == "inf" and fmt.precision <= 25 and _exp_kind(fmt) is not None
            and _acc_kind(acc) is not None and (acc is fmt or acc.name == "float32"))


@numba.njit(cache=True, nogil=True, inline="always")
def _diff_round(v, p, qmin, max_finite, min_normal, shift, half, mask):
    """fastround._sub_kernel's rounding of the float64 difference v (not nan)."""
    av = abs(v)
    if av >= min_normal and av <= _DBL_MAX:
        b = _bits(v)
        w = _float((b + half + ((b >> shift) & np.uint64(1))) & mask)
        return math.copysign(math.inf, v) if abs(w) > max_finite else w
    if v == 0.0 or math.isinf(v):
        return v
    return _round_rare(v, p, qmin, max_finite)


@numba.njit(cache=True, nogil=True, inline="always")
def _top16(d, table):
    """exp of d by the top-16 table (fastelem._lookup16's look-up); nan where d is not a
    bfloat16 value (the caller declines those)."""
    f = np.float32(d)
    b = _bits32(f)
    ok = np.float64(f) == d and (b & np.uint32(0xFFFF)) == np.uint32(0)
    y = np.float64(table[np.int64(b >> np.uint32(16))])
    return y if ok else np.nan


@numba.njit(cache=True, nogil=True, inline="always")
def _elem(v, kind, shifted, table, p, qmin, max_finite, min_normal, xlo, xhi, tol, shift,
          half, mask):
    """(exp(round(v)) if shifted (v the float64 difference) else exp(v), bad): bad where the
    value is not the numpy path's certain value (nan, +inf, uncertain, not a value)."""
    if kind == _EXP_F32:
        if shifted:
            y, u = fast32._sub_exp1(v, p, qmin, max_finite, min_normal, xlo, xhi, tol, shift,
                                    half, mask)
        else:
            y, u = fast32._exp1(v, p, qmin, max_finite, xlo, xhi, tol)
        return y, u or y != y or y == math.inf
    if shifted:
        if v != v:
            return np.nan, True
        v = _diff_round(v, p, qmin, max_finite, min_normal, shift, half, mask)
    y = _top16(v, table)
    return y, y != y or y == math.inf


@numba.njit(cache=True, nogil=True, inline="always")
def _add_native(t, v, ap, aqmin, amax, amin_normal, ashift, ahalf, alow):
    """fastelem._accumulate_native's step: round(t + v) to the accumulator's p bits (inf past
    its largest finite value: the caller declines it)."""
    y = t + v
    if abs(y) >= amin_normal:
        bb = _bits(y)
        y = _float((bb + ahalf + ((bb >> ashift) & np.uint64(1))) & ~alow)
        return math.inf if abs(y) > amax else y
    return _round_bits(y, ap, amin_normal, aqmin, amax)


@numba.njit(cache=True, nogil=True, inline="always")
def _index_chunk(xr, mr, ir, shifted, src, p, qmin, max_finite, min_normal, shift, half,
                 mask):
    """The table's index of each exp (`_top16`'s: the top 16 bits of the float32) into ir;
    returns the number bad (the row is then declined). A branch-free pass for the common
    case (shifted: a difference in the normal range, or 0; unshifted: x < 88, whose exp is finite),
    then, where some element is not, a scalar pass with `_diff_round` and the checks of
    `_elem`. The table loads themselves are left to the sums (scalar loads beside the chain
    of additions: a vector gather costs more)."""
    nc = xr.size
    odd = 0
    if shifted:
        for k in range(nc):
            v = xr[k] - mr
            av = abs(v)
            b = _bits(v)
            w = _float((b + half + ((b >> shift) & np.uint64(1))) & mask)
            ir[k] = np.int64(_bits32(np.float32(w)) >> np.uint32(16))
            odd += 0 if ((av >= min_normal and av <= max_finite) or v == 0.0) else 1
    else:
        for k in range(nc):
            v = xr[k]
            f = np.float32(v)
            fb = _bits32(f)
            ok = np.float64(f) == v and (fb & np.uint32(0xFFFF)) == np.uint32(0)
            ir[k] = np.int64(fb >> np.uint32(16))
            odd += 0 if (ok and v < 88.0) else 1
    if odd == 0:
        return 0
    bad = 0
    for k in range(nc):
        v = xr[k] - mr if shifted else xr[k]
        if v != v:
            bad += 1
            ir[k] = 0
            continue
        if shifted:
            v = _diff_round(v, p, qmin, max_finite, min_normal, shift, half, mask)
        f = np.float32(v)
        fb = _bits32(f)
        ok = np.float64(f) == v and (fb & np.uint32(0xFFFF)) == np.uint32(0)
        j = np.int64(fb >> np.uint32(16))
        y = src[j]
        ir[k] = j
        bad += 0 if (ok and y <= _DBL_MAX) else 1
    return bad


@numba.njit(cache=True, nogil=True, inline="always")
def _exp_chunk(xr, mr, er, shifted, p, qmin, max_finite, min_normal, xlo, xhi, tol, shift,
               half, mask):
    """er[k] = exp(round(xr[k] - mr)) (exp(xr[k]) unshifted) by fast32, branch-free; returns
    the number bad (uncertain, nan or +inf: the row is then declined)."""
    odd = 0
    if shifted:                  # fast32._sub_exp1's rounded difference d, then its _exp1 (two
        for k in range(xr.size):  # loops: each vectorises better than the one of _sub_exp1)
            v = xr[k] - mr
            av = abs(v)
            bits = _bits(v)
            w = _float((bits + half + ((bits >> shift) & np.uint64(1))) & mask)
            w = math.copysign(math.inf, v) if abs(w) > max_finite else w
            er[k] = w if (av >= min_normal and av <= _DBL_MAX) else (
                0.0 if av < min_normal else v)
        for k in range(xr.size):
            y, u = fast32._exp1(er[k], p, qmin, max_finite, xlo, xhi, tol)
            er[k] = y
            odd += 1 if (u or not (y <= _DBL_MAX)) else 0
    else:
        for k in range(xr.size):
            y, u = fast32._exp1(xr[k], p, qmin, max_finite, xlo, xhi, tol)
            er[k] = y
            odd += 1 if (u or not (y <= _DBL_MAX)) else 0
    return odd


@numba.njit(cache=True, nogil=True, inline="always")
def _step(a, v, amin_normal, amax, ashift, ahalf, alow):
    """(`_add_native`'s result where the sum is normal and finite in the accumulator, whether
    it is not: then the caller redoes the step by `_add_native`); branch-free."""
    y = a + v
    bb = _bits(y)
    w = _float((bb + ahalf + ((bb >> ashift) & np.uint64(1))) & ~alow)
    return w, not (abs(y) >= amin_normal and abs(w) <= amax)


@numba.njit(cache=True, nogil=True, inline="always")
def _sum8_native(t, src, idx, k0, nc, ap, aqmin, amax, amin_normal, ashift, ahalf, alow):
    """Eight rows' chains of `_add_native` over columns k0..nc of src[idx[r, k]]: branch-free
    steps (`_step`), a row with any step outside them redone step by step by `_add_native`
    from its sum before the chunk."""
    a0, a1, a2, a3 = t[0], t[1], t[2], t[3]
    a4, a5, a6, a7 = t[4], t[5], t[6], t[7]
    f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = False
    for k in range(k0, nc):
        a0, u0 = _step(a0, src[idx[0, k]], amin_normal, amax, ashift, ahalf, alow)
        a1, u1 = _step(a1, src[idx[1, k]], amin_normal, amax, ashift, ahalf, alow)
        a2, u2 = _step(a2, src[idx[2, k]], amin_normal, amax, ashift, ahalf, alow)
        a3, u3 = _step(a3, src[idx[3, k]], amin_normal, amax, ashift, ahalf, alow)
        a4, u4 = _step(a4, src[idx[4, k]], amin_normal, amax, ashift, ahalf, alow)
        a5, u5 = _step(a5, src[idx[5, k]], amin_normal, amax, ashift, ahalf, alow)
        a6, u6 = _step(a6, src[idx[6, k]], amin_normal, amax, ashift, ahalf, alow)
        a7, u7 = _step(a7, src[idx[7, k]], amin_normal, amax, ashift, ahalf, alow)
        f0 |= u0
        f1 |= u1
        f2 |= u2
        f3 |= u3
        f4 |= u4
        f5 |= u5
        f6 |= u6
        f7 |= u7
    redo = (f0, f1, f2, f3, f4, f5, f6, f7)
    out = (a0, a1, a2, a3, a4, a5, a6, a7)
    for r in range(_R):
        if redo[r]:
            a = t[r]
            for k in range(k0, nc):
                a = _add_native(a, src[idx[r, k]], ap, aqmin, amax, amin_normal, ashift,
                                ahalf, alow)
            t[r] = a
        else:
            t[r] = out[r]


@numba.njit(cache=True, nogil=True, inline="always")
def _sum8_f32(t, src, idx, k0, nc):
    """Eight rows' chains of float32 additions over columns k0..nc of src[idx[r, k]]."""
    a0, a1, a2, a3 = t[0], t[1], t[2], t[3]
    a4, a5, a6, a7 = t[4], t[5], t[6], t[7]
    for k in range(k0, nc):
        a0 = a0 + np.float32(src[idx[0, k]])
        a1 = a1 + np.float32(src[idx[1, k]])
        a2 = a2 + np.float32(src[idx[2, k]])
        a3 = a3 + np.float32(src[idx[3, k]])
        a4 = a4 + np.float32(src[idx[4, k]])
        a5 = a5 + np.float32(src[idx[5, k]])
        a6 = a6 + np.float32(src[idx[6, k]])
        a7 = a7 + np.float32(src[idx[7, k]])
    t[0], t[1], t[2], t[3] = a0, a1, a2, a3
    t[4], t[5], t[6], t[7] = a4, a5, a6, a7


@numba.njit(cache=True, nogil=True, inline="always")
def _sum8_native_d(t, ev, k0, nc, ap, aqmin, amax, amin_normal, ashift, ahalf, alow):
    """Eight rows' chains of `_add_native` over columns k0..nc of ev[r, k]: branch-free
    steps (`_step`), a row with any step outside them redone step by step by `_add_native`
    from its sum before the chunk."""
    a0, a1, a2, a3 = t[0], t[1], t[2], t[3]
    a4, a5, a6, a7 = t[4], t[5], t[6], t[7]
    f0 = f1 = f2 = f3 = f4 = f5 = f6 = f7 = False
    for k in range(k0, nc):
        a0, u0 = _step(a0, ev[0, k], amin_normal, amax, ashift, ahalf, alow)
        a1, u1 = _step(a1, ev[1, k], amin_normal, amax, ashift, ahalf, alow)
        a2, u2 = _step(a2, ev[2, k], amin_normal, amax, ashift, ahalf, alow)
        a3, u3 = _step(a3, ev[3, k], amin_normal, amax, ashift, ahalf, alow)
        a4, u4 = _step(a4, ev[4, k], amin_normal, amax, ashift, ahalf, alow)
        a5, u5 = _step(a5, ev[5, k], amin_normal, amax, ashift, ahalf, alow)
        a6, u6 = _step(a6, ev[6, k], amin_normal, amax, ashift, ahalf, alow)
        a7, u7 = _step(a7, ev[7, k], amin_normal, amax, ashift, ahalf, alow)
        f0 |= u0
        f1 |= u1
        f2 |= u2
        f3 |= u3
        f4 |= u4
        f5 |= u5
        f6 |= u6
        f7 |= u7
    redo = (f0, f1, f2, f3, f4, f5, f6, f7)
    out = (a0, a1, a2, a3, a4, a5, a6, a7)
    for r in range(_R):
        if redo[r]:
            a = t[r]
            for k in range(k0, nc):
                a = _add_native(a, ev[r, k], ap, aqmin, amax, amin_normal, ashift,
                                ahalf, alow)
            t[r] = a
        else:
            t[r] = out[r]


@numba.njit(cache=True, nogil=True, inline="always")
def _sum8_f32_d(t, ev, k0, nc):
    """Eight rows' chains of float32 additions over columns k0..nc of ev[r, k]."""
    a0, a1, a2, a3 = t[0], t[1], t[2], t[3]
    a4, a5, a6, a7 = t[4], t[5], t[6], t[7]
    for k in range(k0, nc):
        a0 = a0 + np.float32(ev[0, k])
        a1 = a1 + np.float32(ev[1, k])
        a2 = a2 + np.float32(ev[2, k])
        a3 = a3 + np.float32(ev[3, k])
        a4 = a4 + np.float32(ev[4, k])
        a5 = a5 + np.float32(ev[5, k])
        a6 = a6 + np.float32(ev[6, k])
        a7 = a7 + np.float32(ev[7, k])
    t[0], t[1], t[2], t[3] = a0, a1, a2, a3
    t[4], t[5], t[6], t[7] = a4, a5, a6, a7


@numba.njit(cache=True, nogil=True)
def _kernel(x, kind, shifted, block, kskip, pick, table, m_in, s_out, e_pick, ok,
            p, qmin, max_finite, min_normal, xlo, xhi, tol, acc, ap, aqmin, amax,
            amin_normal, round_total):
    """See `shifted_sums`. `table`: the top-16 table as float64 with one more entry, 0.0
    (the skipped term's value), for kind _EXP_TOP16. Per group of eight rows: their (block)
    maxima, then per chunk of columns each row's exponentials (fast32's, into a scratch) or
    table indices, then the eight sums side by side, each in column order."""
    n, c = x.shape
    nb = (c + block - 1) // block
    shift = np.uint64(53 - p)
    half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
    mask = ~((np.uint64(1) << shift) - np.uint64(1))
    ashift = np.uint64(53 - ap)
    ahalf = (np.uint64(1) << (ashift - np.uint64(1))) - np.uint64(1)
    alow = (np.uint64(1) << ashift) - np.uint64(1)
    top16 = kind == _EXP_TOP16
    ev = np.zeros((_R, _CH))                      # fast32's exps (rows past the batch: 0)
    src = table
    zero = src.size - 1                           # the index of a 0.0 (a skipped term)
    idx = np.empty((_R, _CH), dtype=np.int64)
    t = np.empty(_R)
    t32 = np.empty(_R, dtype=np.float32)
    for g0 in range(0, n, _R):
        nr = min(_R, n - g0)
        for r in range(nr):                       # a nan or infinite maximum: declined
            i = g0 + r
            good = True
            if shifted:
                for b in range(nb):
                    if not (abs(m_in[i, b]) <= _DBL_MAX):
                        good = False
            ok[i] = good
        for r in range(nr, _R):                   # rows past the batch: zeros
            for k in range(_CH):
                idx[r, k] = zero
        for c0 in range(0, c, _CH):
            nc = min(_CH, c - c0)
            b = c0 // block
            first = c0 == b * block               # a block (sum) starts here
            last = c0 + nc == min(c, (b + 1) * block)
            for r in range(nr):
                i = g0 + r
                xr = x[i, c0:c0 + nc]
                if top16:
                    bad = _index_chunk(xr, m_in[i, b], idx[r, :nc], shifted, src, p, qmin,
                                       max_finite, min_normal, shift, half, mask)
                else:
                    bad = _exp_chunk(xr, m_in[i, b], ev[r, :nc], shifted, p, qmin,
                                     max_finite, min_normal, xlo, xhi, tol, shift, half, mask)
                if bad:
                    ok[i] = False
                ks = kskip[i] - c0 if kskip.size else -1
                if ks >= 0 and ks < nc:
                    if top16:
                        idx[r, ks] = zero
                    else:
                        ev[r, ks] = 0.0
            k0 = 1 if first else 0
            if acc == _ACC_F32:
                if first:
                    for r in range(_R):
                        t32[r] = np.float32(src[idx[r, 0]] if top16 else ev[r, 0])
                if top16:
                    _sum8_f32(t32, src, idx, k0, nc)
                else:
                    _sum8_f32_d(t32, ev, k0, nc)
                if last:
                    for r in range(nr):
                        tot = np.float64(t32[r])
                        if math.isinf(tot) or tot != tot:
                            ok[g0 + r] = False
                        if round_total:
                            tot = _round1(tot, p, qmin, max_finite, min_normal)
                        s_out[g0 + r, b] = tot
            else:
                if first:
                    for r in range(_R):
                        t[r] = src[idx[r, 0]] if top16 else ev[r, 0]
                if top16:
                    _sum8_native(t, src, idx, k0, nc, ap, aqmin, amax, amin_normal, ashift,
                                 ahalf, alow)
                else:
                    _sum8_native_d(t, ev, k0, nc, ap, aqmin, amax, amin_normal, ashift,
                                   ahalf, alow)
                if last:
                    for r in range(nr):
                        tot = t[r]
                        if math.isinf(tot) or tot != tot:
                            ok[g0 + r] = False
                        s_out[g0 + r, b] = tot
        if pick.size:
            for r in range(nr):
                i = g0 + r
                v = x[i, pick[i]] - m_in[i, 0] if shifted else x[i, pick[i]]
                tb = table[:table.size - 1] if top16 else table
                y, u = _elem(v, kind, shifted, tb, p, qmin, max_finite, min_normal, xlo,
                             xhi, tol, shift, half, mask)
                e_pick[i] = y
                if u:
                    ok[i] = False


_TAB64: dict = {}


def _table64(fmt) -> np.ndarray:
    """fastelem's top-16 exp table of `fmt` as float64 (exact: each entry a bfloat16 value),
    and one more entry, 0.0."""
    key = fastelem._key(fmt)
    tab = _TAB64.get(key)
    if tab is None:
        tab = np.append(fastelem._table16("exp", fmt).astype(np.float64), 0.0)
        tab.setflags(write=False)
        _TAB64[key] = tab
    return tab


def shifted_sums(ar, x: np.ndarray, block: int | None = None, shifted: bool = True,
                 skip_argmax: bool = False, pick: np.ndarray | None = None):
    """(m (N, nb), s (N, nb), e_pick (N,) or None, ok (N,)) for float64 x (N, C) in `ar`'s
    format and accumulator (`fusable(ar)`): per block (one if `block` is None) m the maximum
    (0 where unshifted) and s the sum of exp(round(x - m)) (exp(x) where unshifted) in the
    accumulator, rounded to the working format; e_pick the exponential at column pick[i].
    Rows where ok is False are to be recomputed by the numpy path (their values are not
    meaningful). Counts no operations into `ar` (the caller does)."""
    fmt, acc = ar.fmt, ar.acc_fmt
    x = np.ascontiguousarray(x, dtype=np.float64)
    n, c = x.shape
    block = c if block is None or block >= c else int(block)
    if block != c and block % _CH:
        raise ValueError(f"block {block} is not a multiple of {_CH}")
    nb = (c + block - 1) // block
    kind = _exp_kind(fmt)
    table = _table64(fmt) if kind == _EXP_TOP16 else np.zeros(1)
    xlo, xhi = fast32.limits(fmt) if kind == _EXP_F32 else (0.0, 0.0)
    if not shifted:
        m = np.zeros((n, nb))
    elif nb == 1:                              # numpy's maxima, as the numpy path takes them
        m = np.max(x, axis=1, keepdims=True)
    else:
        full = c // block * block
        m = np.empty((n, nb))
        m[:, :full // block] = np.max(x[:, :full].reshape(n, -1, block), axis=2)
        if full < c:
            m[:, -1] = np.max(x[:, full:], axis=1)
    ks = (np.argmax(x, axis=1).astype(np.int64) if skip_argmax
          else np.zeros(0, dtype=np.int64))
    s = np.empty((n, nb))
    ok = np.empty(n, dtype=np.bool_)
    pk = (np.zeros(0, dtype=np.int64) if pick is None
          else np.ascontiguousarray(pick, dtype=np.int64))
    e_pick = np.empty(n)
    akind = _acc_kind(acc)
    _kernel(x, kind, bool(shifted), block, ks, pk, table, m, s, e_pick, ok,
            int(fmt.precision), int(fmt.emin - fmt.precision + 1), float(fmt.max_finite),
            float(2.0 ** fmt.emin), float(xlo), float(xhi), 2.0 * fast32.BOUND, akind,
            int(acc.precision), int(acc.emin - acc.precision + 1), float(acc.max_finite),
            float(acc.min_normal), acc is not fmt)
    return m, s, (None if pick is None else e_pick), ok
