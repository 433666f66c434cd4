"""Compiled (numba) kernels for `fastref`'s per-row part: the limb arithmetic of `_log_fix`
and of `_dd_from_limbs`, operation for operation, fused per row (one column of limbs at a
time, in a few int64 scratch limbs), without the (limbs, rows) temporaries of the numpy path.

What they compute, and why the bits are the numpy path's.
* `log_q` (`_log_fix`'s first half): per row the table term e = exp(-y) 2**fb (`_terms_norm`
  with no logit off the grid: T_hi[h] from the big table or as A[h >> 9] B[h & 511], 1 +
  T_lo[l] from the big table or from a1[l >> 10], b0[l & 1023], the choice made by the caller
  for the whole call exactly as `_terms` makes it), then q = w e / 2**(R nl) - 2**fb by
  `_mul`'s partial products (those with i + j <= drop - 2 skipped), carried as `_norm`
  carries, and negated where negative. Everything is int64 integer arithmetic: sums and
  products of the same integers, so the same limbs in any order.
* `log_series` (`_log_fix`'s second half): lam = Y 2**(fb - 31) + sg (rho - rho**2 / 2 +
  ...) in limbs (`_int_to_limbs`, the powers by `_mul`, the quotients by `_div_small` or
  `_shr`), plus the float64 tail the caller computed, carried.
* `dd_from_limbs` (`_dd_from_limbs`): the top six limbs as three floats and TwoSum /
  FastTwoSum, the same IEEE operations in the same order (no fastmath, no FMA contraction),
  ldexp the only library call (exact, or the same correctly rounded subnormal as numpy's).

What stays in numpy: every float64 conversion of limbs (`_to_float`, a BLAS product whose
summation order is the library's), the correctly rounded log of `elementary`, the error
bounds (functions of the limb counts and of the per-call choices only), the checks.
Formats: int64 limbs in and out (tables int32 / int64), float64 only in `dd_from_limbs`.
"""
from __future__ import annotations

import numba
import numpy as np

R = 26
RMASK = (1 << R) - 1

__all__ = ["log_q", "log_series", "dd_from_limbs"]


@numba.njit(cache=True, nogil=True, inline="always")
def _norm1(a, k):
    """`fastref._norm` of one column a[:k]."""
    for j in range(k - 1):
        c = a[j] >> R
        a[j] &= RMASK
        a[j + 1] += c


@numba.njit(cache=True, nogil=True, inline="always")
def _mul1(a, ka, b, kb, drop, out, tmp):
    """`fastref._mul` of one column: out[:ka + kb - drop] = the normalised truncated product
    (the partial products with i + j <= drop - 2 skipped); tmp has >= ka + kb - drop + 1
    slots. Returns the limb count (the caller never has k < 1)."""
    k = ka + kb - drop
    for p in range(k + 1):
        tmp[p] = 0
    for i in range(ka):
        j0 = drop - 1 - i
        if j0 < 0:
            j0 = 0
        if j0 >= kb:
            continue
        p0 = i + j0 - (drop - 1)
        ai = a[i]
        for j in range(j0, kb):
            tmp[p0 + j - j0] += ai * b[j]
    _norm1(tmp, k + 1)
    for p in range(k):
        out[p] = tmp[p + 1]
    return k


@numba.njit(cache=True, nogil=True)
def log_q(w, h, l, spread, prod, nl, hit, lot, aht, bht, a1t, b0t, q, neg):
    """Per column i of w ((nl + 1, m) normalised limbs): e = `_terms_norm(tab, h, l)` (the
    choices `spread`, `prod` as `_terms` makes them for the call), q[:, i] = `_mul(w, e, nl)`
    minus 2**fb, carried, negated (and neg[i] set) where its top limb is negative. q is
    (nl + 2, m). Tables one entry per row (`fastref._kernel_tables`)."""
    m = w.shape[1]
    kq = nl + 2
    th = np.zeros(nl, np.int64)
    g = np.zeros(nl, np.int64)
    ta = np.zeros(nl, np.int64)
    tb = np.zeros(nl, np.int64)
    pr = np.zeros(nl + 2, np.int64)
    tmp = np.zeros(2 * nl + 4, np.int64)
    e = np.zeros(nl + 1, np.int64)
    wc = np.zeros(nl + 1, np.int64)
    qc = np.zeros(nl + 2, np.int64)
    for i in range(m):
        hh = h[i]
        ll = l[i]
        if spread:
            for j in range(nl):
                ta[j] = aht[hh >> 9, j]
                tb[j] = bht[hh & 511, j]
            _mul1(ta, nl, tb, nl, nl, th, tmp)
        else:
            for j in range(nl):
                th[j] = hit[hh, j]
        if prod:
            for j in range(nl):
                ta[j] = a1t[ll >> 10, j]
                tb[j] = b0t[ll & 1023, j]
            _mul1(ta, nl, tb, nl, nl, pr, tmp)
            for j in range(nl):
                g[j] = ta[j] + tb[j] + pr[j]
        else:
            for j in range(nl):
                g[j] = lot[ll, j]
        _mul1(th, nl, g, nl, nl, pr, tmp)
        for j in range(nl):
            e[j] = th[j] + pr[j]
        e[nl] = 0
        _norm1(e, nl + 1)
        for j in range(nl + 1):
            wc[j] = w[j, i]
        _mul1(wc, nl + 1, e, nl + 1, nl, qc, tmp)
        qc[nl] -= 1
        _norm1(qc, kq)
        if qc[kq - 1] < 0:
            neg[i] = True
            for j in range(kq):
                qc[j] = -qc[j]
            _norm1(qc, kq)
        for j in range(kq):
            q[j, i] = qc[j]


@numba.njit(cache=True, nogil=True)
def log_series(Y, bitpos, rho, neg, tail, jend, nl, lam):
    """Per column: lam[:, i] = `_int_to_limbs(Y, bitpos, nl + 1)` + sg rho + sum_{j=2}^{jend-1}
    (-1)**(j+1) sg**j P_j / j (P_j = `_mul`(P_{j-1}, rho, nl), the quotient by `_div_small`,
    or `_shr` for powers of 2), + the float64 tail (int64, split at R bits), carried (`_norm`).
    sg = -1 where neg. lam is (nl + 1, m)."""
    m = rho.shape[1]
    k = nl + 1
    qb = bitpos // R
    rb = bitpos % R
    lc = np.zeros(k, np.int64)
    rc = np.zeros(nl, np.int64)
    pw = np.zeros(nl, np.int64)
    pn = np.zeros(nl, np.int64)
    term = np.zeros(nl, np.int64)
    tmp = np.zeros(2 * nl + 2, np.int64)
    for i in range(m):
        for j in range(k):
            lc[j] = 0
        v = Y[i]
        lc[qb] = (v & ((1 << (R - rb)) - 1)) << rb
        rest = v >> (R - rb)
        for j in range(qb + 1, k - 1):
            lc[j] = rest & RMASK
            rest = rest >> R
        lc[k - 1] += rest
        sg = -1 if neg[i] else 1
        for j in range(nl):
            rc[j] = rho[j, i]
            pw[j] = rc[j]
            lc[j] += sg * rc[j]
        for jj in range(2, jend):
            _mul1(pw, nl, rc, nl, nl, pn, tmp)
            for j in range(nl):
                pw[j] = pn[j]
            if jj & (jj - 1):
                rem = np.int64(0)
                for j in range(nl - 1, -1, -1):
                    cur = (rem << R) + pw[j]
                    qq = cur // jj
                    term[j] = qq
                    rem = cur - qq * jj
            else:
                s = 0
                t2 = jj
                while t2 > 1:
                    t2 >>= 1
                    s += 1
                for j in range(nl):
                    term[j] = pw[j] >> s
                for j in range(nl - 1):
                    term[j] |= (pw[j + 1] << (R - s)) & RMASK
            if jj % 2:
                for j in range(nl):
                    lc[j] += sg * term[j]
            else:
                for j in range(nl):
                    lc[j] -= term[j]
        tv = tail[i]
        lc[0] += tv & RMASK
        lc[1] += tv >> R
        _norm1(lc, k)
        for j in range(k):
            lam[j, i] = lc[j]


@numba.njit(cache=True, nogil=True)
def dd_from_limbs(v, e0, hi, lo):
    """`fastref._dd_from_limbs` per column: v (k, m) normalised limbs >= 0, e0 (m,) int64;
    writes hi, lo (m,) float64."""
    k, m = v.shape
    two_r = 2.0 ** R
    for i in range(m):
        jt = k - 1
        while jt >= 0 and v[jt, i] == 0:
            jt -= 1
        if jt < 0:                       # all zero: numpy's argmax of no True is 0
            jt = k - 1
        ls = np.zeros(6)
        for d in range(6):
            j = jt - d
            ls[d] = float(v[j, i]) if j >= 0 else 0.0
        ee = e0[i]
        t1 = np.ldexp(ls[0] * two_r + ls[1], R * (jt - 1) + ee)
        t2 = np.ldexp(ls[2] * two_r + ls[3], R * (jt - 3) + ee)
        t3 = np.ldexp(ls[4] * two_r + ls[5], R * (jt - 5) + ee)
        s = t1 + t2
        bb = s - t1
        er = (t1 - (s - bb)) + (t2 - bb)
        lw = er + t3
        hh = s + lw
        lw = lw - (hh - s)
        hi[i] = hh
        lo[i] = lw
