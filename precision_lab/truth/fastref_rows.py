"""Compiled (numba) kernels for `fastref`'s per-row part, operation for operation the numpy
path they mirror, fused per row or per block of BLOCK rows (the inner loops over the block's
columns, so that they vectorise; the scratch limbs stay in L1), without the (limbs, rows)
temporaries and the per-call overhead of the numpy path. `fastref.USE_ROWS_KERNEL` switches
them on (default) or off (the numpy path, still callable); tests/test_fastref_rows.py checks
that both give the same bits.

What they compute, and why the bits are the numpy path's.
* `row_max` (`_vec`'s preamble): per row x_t, the maximum a and the maximum without the
  target's copy; maxima are exact.
* `log_floor31` (`_log_fix`'s y = floor(log(w) 2**31) - 1): `elementary._log_dd` and
  `elementary._round` for float64, ported per element with the same IEEE +, -, * in the same
  order (no fastmath, so no FMA contraction), frexp / ldexp from the bits (exact here); the
  log is correctly rounded, hence unique, so the same as `elementary.log`'s. Where the rounding
  is uncertain but both neighbours floor alike y is known; the rest go to `elementary`.
* `log_q`, `log_series` (`_log_fix`'s limbs): the table term e = exp(-y) 2**fb
  (`_terms_norm`, the call's choices `spread` / `prod` made by the caller exactly as `_terms`
  makes them), q = w e / 2**(R nl) - 2**fb by `_mul`'s partial products (those with i + j <=
  drop - 2 skipped) and `_norm`'s carries, negated where negative; then lam = Y 2**(fb - 31)
  + sg (rho - rho**2 / 2 + ...) (`_int_to_limbs`, `_mul`, `_div_small` / `_shr`) plus the
  float64 tail the caller computed. All int64 integer arithmetic: sums and products of the
  same integers, so the same limbs in any order.
* `below_max` (`_vec`'s loss where the target is below the maximum): b 2**fb + log S -
  floor(x_t 2**fb), `_from_float`'s float64 steps (floor, exact scalings) then integers.
* `shift_right`, `small_z` (`_max_rows`): `_shift_right`; the Horner series c of log1p(Z) / Z
  for small Z and Z c, by `_mul` and `_norm`.
* `dd_from_limbs` (`_dd_from_limbs`): the top six limbs as three floats and TwoSum /
  FastTwoSum, the same operations in the same order; ldexp as a product by a normal power of
  two (one correct rounding, as ldexp's), numpy's ldexp beyond.
* `limb_sums` (`Results.mean`): exact int64 sums of limbs.

What stays in numpy: every float64 conversion of limbs (`_to_float`, a BLAS product whose
summation order is the library's), the per-call choices, the error bounds (functions of the
limb counts and of the choices only: `_term_bounds`, `_mul_bound` run the numpy functions on
dummy columns), the certification test, and the rare elements `log_floor31` sends back.
Formats: int64 limbs in and out (tables int32 / int64), float64 only where named above.
"""
from __future__ import annotations

import numba
import numpy as np

from ..numerics.fastround import _bits, _float

R = 26
RMASK = (1 << R) - 1

__all__ = ["log_q", "log_series", "dd_from_limbs", "log_floor31"]


BLOCK = 256     # columns per block: the scratch limbs stay in L1, the inner loops vectorise


@numba.njit(cache=True, nogil=True, inline="always")
def _normb(a, k, nb):
    """`fastref._norm` of a block a[:k, :nb]."""
    for j in range(k - 1):
        for c in range(nb):
            cy = a[j, c] >> R
            a[j, c] &= RMASK
            a[j + 1, c] += cy


@numba.njit(cache=True, nogil=True, inline="always")
def _mulb(a, ka, b, kb, drop, out, tmp, nb):
    """`fastref._mul` of a block: out[:ka + kb - drop, :nb] = the normalised truncated product
    (the partial products with i + j <= drop - 2 skipped); tmp has >= ka + kb - drop + 1
    rows. The caller never has ka + kb - drop < 1."""
    k = ka + kb - drop
    for p in range(k + 1):
        for c in range(nb):
            tmp[p, c] = 0
    for i in range(ka):
        j0 = drop - 1 - i
        if j0 < 0:
            j0 = 0
        if j0 >= kb:
            continue
        p0 = i + j0 - (drop - 1)
        for j in range(j0, kb):
            pp = p0 + j - j0
            for c in range(nb):
                tmp[pp, c] += a[i, c] * b[j, c]
    _normb(tmp, k + 1, nb)
    for p in range(k):
        for c in range(nb):
            out[p, c] = tmp[p + 1, c]


@numba.njit(cache=True, nogil=True)
def log_q(w, h, l, spread, prod, nl, hit, lot, aht, bht, a1t, b0t, q, neg):
    """Per column i of w ((nl + 1, m) normalised limbs): e = `_terms_norm(tab, h, l)` (the
    choices `spread`, `prod` as `_terms` makes them for the call), q[:, i] = `_mul(w, e, nl)`
    minus 2**fb, carried, negated (and neg[i] set) where its top limb is negative. q is
    (nl + 2, m). Tables one entry per row (`fastref._kernel_tables`). Blocks of BLOCK
    columns."""
    m = w.shape[1]
    kq = nl + 2
    B = BLOCK
    th = np.zeros((nl, B), np.int64)
    g = np.zeros((nl, B), np.int64)
    ta = np.zeros((nl, B), np.int64)
    tb = np.zeros((nl, B), np.int64)
    pr = np.zeros((nl + 2, B), np.int64)
    tmp = np.zeros((2 * nl + 4, B), np.int64)
    e = np.zeros((nl + 1, B), np.int64)
    wc = np.zeros((nl + 1, B), np.int64)
    qc = np.zeros((nl + 2, B), np.int64)
    for i0 in range(0, m, B):
        nb = min(B, m - i0)
        if spread:
            for c in range(nb):
                hh = h[i0 + c]
                for j in range(nl):
                    ta[j, c] = aht[hh >> 9, j]
                    tb[j, c] = bht[hh & 511, j]
            _mulb(ta, nl, tb, nl, nl, th, tmp, BLOCK)
        else:
            for c in range(nb):
                hh = h[i0 + c]
                for j in range(nl):
                    th[j, c] = hit[hh, j]
        if prod:
            for c in range(nb):
                ll = l[i0 + c]
                for j in range(nl):
                    ta[j, c] = a1t[ll >> 10, j]
                    tb[j, c] = b0t[ll & 1023, j]
            _mulb(ta, nl, tb, nl, nl, pr, tmp, BLOCK)
            for j in range(nl):
                for c in range(nb):
                    g[j, c] = ta[j, c] + tb[j, c] + pr[j, c]
        else:
            for c in range(nb):
                ll = l[i0 + c]
                for j in range(nl):
                    g[j, c] = lot[ll, j]
        _mulb(th, nl, g, nl, nl, pr, tmp, BLOCK)
        for j in range(nl):
            for c in range(nb):
                e[j, c] = th[j, c] + pr[j, c]
        for c in range(nb):
            e[nl, c] = 0
        _normb(e, nl + 1, BLOCK)
        for j in range(nl + 1):
            for c in range(nb):
                wc[j, c] = w[j, i0 + c]
        _mulb(wc, nl + 1, e, nl + 1, nl, qc, tmp, BLOCK)
        for c in range(nb):
            qc[nl, c] -= 1
        _normb(qc, kq, BLOCK)
        anyneg = False
        for c in range(nb):
            if qc[kq - 1, c] < 0:
                anyneg = True
        if anyneg:
            for c in range(nb):
                if qc[kq - 1, c] < 0:
                    neg[i0 + c] = True
                    for j in range(kq):
                        qc[j, c] = -qc[j, c]
            _normb(qc, kq, BLOCK)
        for j in range(kq):
            for c in range(nb):
                q[j, i0 + c] = qc[j, c]


@numba.njit(cache=True, nogil=True)
def log_series(Y, bitpos, rho, neg, tail, jend, nl, lam):
    """Per column: lam[:, i] = `_int_to_limbs(Y, bitpos, nl + 1)` + sg rho + sum_{j=2}^{jend-1}
    (-1)**(j+1) sg**j P_j / j (P_j = `_mul`(P_{j-1}, rho, nl), the quotient by `_div_small`,
    or `_shr` for powers of 2), + the float64 tail (int64, split at R bits), carried (`_norm`).
    sg = -1 where neg. lam is (nl + 1, m). Blocks of BLOCK columns."""
    m = rho.shape[1]
    k = nl + 1
    qb = bitpos // R
    rb = bitpos % R
    B = BLOCK
    lc = np.zeros((k, B), np.int64)
    rc = np.zeros((nl, B), np.int64)
    pw = np.zeros((nl, B), np.int64)
    pn = np.zeros((nl, B), np.int64)
    term = np.zeros((nl, B), np.int64)
    tmp = np.zeros((2 * nl + 2, B), np.int64)
    sg = np.zeros(B, np.int64)
    for i0 in range(0, m, B):
        nb = min(B, m - i0)
        for j in range(k):
            for c in range(nb):
                lc[j, c] = 0
        for c in range(nb):
            v = Y[i0 + c]
            lc[qb, c] = (v & ((1 << (R - rb)) - 1)) << rb
            rest = v >> (R - rb)
            for j in range(qb + 1, k - 1):
                lc[j, c] = rest & RMASK
                rest = rest >> R
            lc[k - 1, c] += rest
            sg[c] = -1 if neg[i0 + c] else 1
        for j in range(nl):
            for c in range(nb):
                rc[j, c] = rho[j, i0 + c]
                pw[j, c] = rc[j, c]
                lc[j, c] += sg[c] * rc[j, c]
        for jj in range(2, jend):
            _mulb(pw, nl, rc, nl, nl, pn, tmp, BLOCK)
            for j in range(nl):
                for c in range(nb):
                    pw[j, c] = pn[j, c]
            if jj & (jj - 1):
                for c in range(nb):
                    rem = np.int64(0)
                    for j in range(nl - 1, -1, -1):
                        cur = (rem << R) + pw[j, c]
                        qq = cur // jj
                        term[j, c] = qq
                        rem = cur - qq * jj
            else:
                s = 0
                t2 = jj
                while t2 > 1:
                    t2 >>= 1
                    s += 1
                for j in range(nl):
                    for c in range(nb):
                        term[j, c] = pw[j, c] >> s
                for j in range(nl - 1):
                    for c in range(nb):
                        term[j, c] |= (pw[j + 1, c] << (R - s)) & RMASK
            if jj % 2:
                for j in range(nl):
                    for c in range(nb):
                        lc[j, c] += sg[c] * term[j, c]
            else:
                for j in range(nl):
                    for c in range(nb):
                        lc[j, c] -= term[j, c]
        for c in range(nb):
            tv = tail[i0 + c]
            lc[0, c] += tv & RMASK
            lc[1, c] += tv >> R
        _normb(lc, k, BLOCK)
        for j in range(k):
            for c in range(nb):
                lam[j, i0 + c] = lc[j, c]


@numba.njit(cache=True, nogil=True, inline="always")
def _ldexp(y, e):
    """ldexp(y, e): y * 2**e where 2**e is a normal float64 (one correct rounding, as ldexp's),
    else numpy's ldexp."""
    if -1022 <= e <= 1023:
        return y * _float(np.uint64(e + 1023) << np.uint64(52))
    return np.ldexp(y, e)


@numba.njit(cache=True, nogil=True)
def dd_from_limbs(v, e0, hi, lo):
    """`fastref._dd_from_limbs` per column: v (k, m) normalised limbs >= 0, e0 (m,) int64;
    writes hi, lo (m,) float64."""
    k, m = v.shape
    two_r = 2.0 ** R
    ls = np.zeros(6)
    for i in range(m):
        jt = k - 1
        while jt >= 0 and v[jt, i] == 0:
            jt -= 1
        if jt < 0:                       # all zero: numpy's argmax of no True is 0
            jt = k - 1
        for d in range(6):
            j = jt - d
            ls[d] = float(v[j, i]) if j >= 0 else 0.0
        ee = e0[i]
        t1 = _ldexp(ls[0] * two_r + ls[1], R * (jt - 1) + ee)
        t2 = _ldexp(ls[2] * two_r + ls[3], R * (jt - 3) + ee)
        t3 = _ldexp(ls[4] * two_r + ls[5], R * (jt - 5) + ee)
        s = t1 + t2
        bb = s - t1
        er = (t1 - (s - bb)) + (t2 - bb)
        lw = er + t3
        hh = s + lw
        lw = lw - (hh - s)
        hi[i] = hh
        lo[i] = lw


_SPLIT = 134217729.0                    # 2**27 + 1 (Veltkamp), as `elementary`
_FRAC = (1 << 52) - 1
_HALF_BITS = 1022 << 52                 # the bits of 0.5's exponent


@numba.njit(cache=True, nogil=True, inline="always")
def _pow2(q):
    """2.0**q exactly for -1022 <= q <= 1023 (from its bits)."""
    return _float(np.uint64(q + 1023) << np.uint64(52))
_MAGIC = 6755399441055744.0             # 1.5 * 2**52: (v + M) - M = rint(v) for |v| < 2**51


_CH = 512                               # elements per chunk of `log_floor31` (scratch in L1)


@numba.njit(cache=True, nogil=True)
def log_floor31(x, out, amb, rj, rjh, rjl, lh_, ll_, ln2h, ln2l, sqrt_half, grid, lo_k,
                bound):
    """out[i] = floor(L 2**31) - 1 for L = log(x[i]) correctly rounded to float64 (`_log_fix`'s
    y), L by `elementary._log_dd` and `elementary._round` (p = 53, k = 0) ported per element:
    the same IEEE +, -, * in the same order (Veltkamp split, Dekker product, TwoSum), frexp
    and ldexp from the bits (exact here), floor and table loads. Where the rounding is
    uncertain (L is one of the two floats next to a midpoint) y is still known when both
    give the same floor; amb[i] where they do not or x[i] is not in (1, 2**1000) (then y is
    to be computed from `elementary.log`). Returns the number of such elements. Per chunk:
    the reduction, the table loads, the rest, each a loop without branches (selects), so
    that the arithmetic vectorises; elements out of range are evaluated at 2."""
    n_amb = 0
    yv = np.empty(_CH)
    ev = np.empty(_CH)
    kv = np.empty(_CH, dtype=np.int64)
    t_rj = np.empty(_CH)
    t_rjh = np.empty(_CH)
    t_rjl = np.empty(_CH)
    t_lh = np.empty(_CH)
    t_ll = np.empty(_CH)
    a_ = np.zeros(_CH, dtype=np.bool_)
    b_ = np.empty(_CH)
    q_ = np.empty(_CH, dtype=np.int64)
    for c0 in range(0, x.size, _CH):
        nc = min(_CH, x.size - c0)
        for i in range(nc):
            v0 = x[c0 + i]
            inside = v0 > 1.0 and v0 < 2.0 ** 1000       # (False for nan)
            v = v0 if inside else 2.0
            vb = _bits(v)                                 # frexp(v) from the bits
            e = np.int64((vb >> np.uint64(52)) & np.uint64(0x7FF)) - 1022
            f = _float((vb & np.uint64(_FRAC)) | np.uint64(_HALF_BITS))
            low = f < sqrt_half
            y = 2.0 * f if low else f
            yv[i] = y
            ev[i] = float(e - (1 if low else 0))
            kv[i] = np.int64(((y * grid + _MAGIC) - _MAGIC) - lo_k)
        for i in range(nc):
            k = kv[i]
            t_rj[i] = rj[k]
            t_rjh[i] = rjh[k]
            t_rjl[i] = rjl[k]
            t_lh[i] = lh_[k]
            t_ll[i] = ll_[k]
        for i in range(nc):
            y = yv[i]
            ef = ev[i]
            p = y * t_rj[i]
            t = _SPLIT * y
            ah = t - (t - y)
            al = y - ah
            pl = ((ah * t_rjh[i] - p) + ah * t_rjl[i] + al * t_rjh[i]) + al * t_rjl[i]
            s0 = p - 1.0
            zh = s0 + pl
            zl = pl - (zh - s0)
            # _log_sum(e, lh, ll, zh, zl, 0.0)
            sqh = zh * zh
            t = _SPLIT * zh
            zhh = t - (t - zh)
            zhl = zh - zhh
            sql = ((zhh * zhh - sqh) + zhh * zhl + zhl * zhh) + zhl * zhl
            q = sqh * zh * (1 / 3 + zh * (-0.25 + zh * (0.2 + zh * (-1 / 6
                                                                    + zh * (1 / 7 - zh / 8)))))
            a0 = ef * ln2h
            b0 = t_lh[i]
            s = a0 + b0
            bb = s - a0
            t1 = (a0 - (s - bb)) + (b0 - bb)
            a0 = s
            s = a0 + zh
            bb = s - a0
            t2 = (a0 - (s - bb)) + (zh - bb)
            a0 = s
            b0 = -0.5 * sqh
            s = a0 + b0
            bb = s - a0
            t3 = (a0 - (s - bb)) + (b0 - bb)
            lo = (t1 + t2 + t3) + ((ef * ln2l + t_ll[i]) + (zl - 0.5 * sql - zh * zl + q) + 0.0)
            hi = s + lo
            bb = hi - s
            lo = (s - (hi - bb)) + (lo - bb)
            # _round(hi, lo, 0, float64, bound): hi > 2**-60 here (normal)
            hb = _bits(hi)
            e2 = np.int64((hb >> np.uint64(52)) & np.uint64(0x7FF)) - 1022
            fr_half = (hb & np.uint64(_FRAC)) == np.uint64(0)
            big = e2 - 1 - (1 if (fr_half and lo < 0) else 0)
            qe = max(big - 52, -1074)     # = big - 52 in [-113, 0]: 2**-qe and 2**qe normal,
            sh = hi * _pow2(-qe)          # so ldexp(y, -qe) = y * 2**-qe, one rounding
            sl = lo * _pow2(-qe)
            n0 = np.floor(sh)
            ff = (sh - n0) + sl
            fl = np.floor(ff)
            a = abs(ff - (fl + 0.5)) <= 2.0 * bound * sh + 2.0 ** -50
            nn = n0 + fl + (1.0 if ff - fl > 0.5 else 0.0)
            out[c0 + i] = np.floor(nn * _pow2(qe) * 2.0 ** 31) - 1.0   # ldexp(nn, qe): exact
            inside = x[c0 + i] > 1.0 and x[c0 + i] < 2.0 ** 1000
            a_[i] = a or not inside
            b_[i] = n0 + fl
            q_[i] = qe
        for i in range(nc):
            if a_[i]:                     # either side of the midpoint (base + 1/2) 2**qe
                v0 = x[c0 + i]
                a = True
                if v0 > 1.0 and v0 < 2.0 ** 1000:
                    y0 = np.floor(b_[i] * _pow2(q_[i]) * 2.0 ** 31) - 1.0
                    y1 = np.floor((b_[i] + 1.0) * _pow2(q_[i]) * 2.0 ** 31) - 1.0
                    a = y0 != y1
                amb[c0 + i] = a
                n_amb += 1 if a else 0
    return n_amb


@numba.njit(cache=True, nogil=True)
def row_max(x, t, xt, a, lead):
    """`_vec`'s preamble per row of x ((n, c) float64, no nan, no +inf): xt = x[i, t_i],
    a = max_j x[i, j], lead = a, or where x_t = a the maximum without the target's copy
    (-inf when nothing else is live). Maxima are exact, so the same values as numpy's
    (equal as numbers: a zero's sign may differ, and every use of a, lead and b compares them
    or converts them to integers)."""
    n, c = x.shape
    for i in range(n):
        ti = t[i]
        m = x[i, 0]
        for j in range(1, c):
            v = x[i, j]
            if v > m:
                m = v
        xv = x[i, ti]
        xt[i] = xv
        a[i] = m
        if xv == m:
            m2 = -np.inf
            for j in range(c):
                if j != ti and x[i, j] > m2:
                    m2 = x[i, j]
            lead[i] = m2
        else:
            lead[i] = m


@numba.njit(cache=True, nogil=True)
def below_max(bi, bitpos, lam, xt, fb, nl, res, cols):
    """`_vec`'s loss for rows whose target is below the maximum, per column i:
    res[:, cols[i]] = `_int_to_limbs`(bi[i], bitpos, nl + 3) + lam[:, i] - floor(x_t 2**fb)
    (x_t 2**fb exact; `_from_float`'s float64 steps: floor, exact scalings by powers of two),
    carried (`_norm`). res is (nl + 3, m), lam (nl + 1, n) with n >= len(cols)."""
    k = nl + 3
    qb = bitpos // R
    rb = bitpos % R
    km = nl + 2
    v = np.zeros(k, np.int64)
    mag = np.zeros(km, np.int64)
    sfb = _pow2(fb)
    for i in range(cols.size):
        for j in range(k):
            v[j] = 0
        b = bi[i]
        v[qb] = (b & ((1 << (R - rb)) - 1)) << rb
        rest = b >> (R - rb)
        for j in range(qb + 1, k - 1):
            v[j] = rest & RMASK
            rest = rest >> R
        v[k - 1] += rest
        for j in range(nl + 1):
            v[j] += lam[j, i]
        x0 = xt[i]
        sc = abs(x0) * sfb
        pos = x0 >= 0
        w = np.floor(sc) if pos else np.ceil(sc)
        w = np.floor(w)
        for j in range(km - 1, 0, -1):
            s = _pow2(R * j)
            q = np.floor(w * (1.0 / s))
            mag[j] = np.int64(q)
            w = w - q * s
        mag[0] = np.int64(w)
        for j in range(km):
            v[j] += -mag[j] if pos else mag[j]
        for j in range(k - 1):
            cy = v[j] >> R
            v[j] &= RMASK
            v[j + 1] += cy
        col = cols[i]
        for j in range(k):
            res[j, col] = v[j]


@numba.njit(cache=True, nogil=True)
def shift_right(a, s, out):
    """`fastref._shift_right`: out[:, i] = floor(a[:, i] / 2**s[i]) (a normalised, >= 0), the
    same limb-wise shifts (shifts past the top read zeros)."""
    k, m = a.shape
    for i in range(m):
        si = min(s[i], R * k)
        q = si // R
        r = si % R
        for j in range(k):
            lo = a[j + q, i] if j + q < k else 0
            hi = a[j + q + 1, i] if j + q + 1 < k else 0
            out[j, i] = (lo >> r) | ((hi << (R - r)) & RMASK)


@numba.njit(cache=True, nogil=True)
def small_z(zs, zm, inv, jj, nl, mm):
    """`_max_rows`' loss for small Z, per column: c = 1/(jj + 1), then for i = jj .. 1
    c = floor(2**fb / i) - `_mul`(zs, c, nl), carried; mm[:, i] = `_mul`(zm, c, nl). zs is
    (nl, m) (Z's limbs), zm (nl + 2, m), inv (jj + 2, nl + 1) with inv[i] = floor(2**fb / i)
    (`_FixTables.inverse`), mm (nl + 3, m). Blocks of BLOCK columns."""
    m = zs.shape[1]
    B = BLOCK
    kc = nl + 1
    zb = np.zeros((nl, B), np.int64)
    zmb = np.zeros((nl + 2, B), np.int64)
    c = np.zeros((kc, B), np.int64)
    pr = np.zeros((kc, B), np.int64)
    mb = np.zeros((nl + 3, B), np.int64)
    tmp = np.zeros((2 * nl + 6, B), np.int64)
    for i0 in range(0, m, B):
        nb = min(B, m - i0)
        for j in range(nl):
            for cc in range(nb):
                zb[j, cc] = zs[j, i0 + cc]
        for j in range(nl + 2):
            for cc in range(nb):
                zmb[j, cc] = zm[j, i0 + cc]
        for j in range(kc):
            for cc in range(B):
                c[j, cc] = inv[jj + 1, j]
        for i in range(jj, 0, -1):
            _mulb(zb, nl, c, kc, nl, pr, tmp, B)
            for j in range(kc):
                for cc in range(B):
                    c[j, cc] = inv[i, j] - pr[j, cc]
            _normb(c, kc, B)
        _mulb(zmb, nl + 2, c, kc, nl, mb, tmp, B)
        for j in range(nl + 3):
            for cc in range(nb):
                mm[j, i0 + cc] = mb[j, cc]


@numba.njit(cache=True, nogil=True)
def limb_sums(v, keep, out):
    """out[j] = sum of v[j, i] over the columns i where keep[i] (exact int64 sums: the limbs
    are below 2**27 and there are fewer than 2**36 columns). `Results.mean`'s sums."""
    k, m = v.shape
    for j in range(k):
        acc = np.int64(0)
        for i in range(m):
            if keep[i]:
                acc += v[j, i]
        out[j] = acc


@numba.njit(cache=True, nogil=True)
def max_terms(h, l, x2, xf, s, spread, nl, kx, ke, kend, facf, p_t, hit, aht, bht, a1t, b0t,
              zm):
    """`_max_rows`' exp(v) term and Zm, per column: e2 = `_terms_norm(tab, h, l, x2, xf, all
    off)` (T_hi[h] from the big table or, `spread`, as A[h >> 9] B[h & 511]; then `_g_off`
    with `_expm1_fix`: x + x**2/2 + ... in limbs for k < kend, the float64 tail by the same
    operations in the same order, facf = float(kend!), p_t = 2**(fb - 31 kend)), and
    zm[:, i] = `_mul`(s, e2, nl) (nl + 2 limbs). x2 is (kx, m), xf = `_to_float`(x2, -fb),
    s (nl + 1, m). Blocks of BLOCK columns."""
    m = h.size
    B = BLOCK
    K = 2 * nl + 6
    th = np.zeros((nl, B), np.int64)
    ta = np.zeros((nl, B), np.int64)
    tb = np.zeros((nl, B), np.int64)
    xl = np.zeros((kx, B), np.int64)
    e = np.zeros((ke + 1, B), np.int64)
    term = np.zeros((K, B), np.int64)
    pr = np.zeros((K, B), np.int64)
    be = np.zeros((K, B), np.int64)
    f = np.zeros((nl, B), np.int64)
    af = np.zeros((K, B), np.int64)
    g = np.zeros((nl, B), np.int64)
    p = np.zeros((K, B), np.int64)
    e2 = np.zeros((nl + 1, B), np.int64)
    sb = np.zeros((nl + 1, B), np.int64)
    zb = np.zeros((nl + 2, B), np.int64)
    tmp = np.zeros((K, B), np.int64)
    tl = np.zeros(B, np.int64)
    for i0 in range(0, m, B):
        nb = min(B, m - i0)
        if spread:
            for c in range(nb):
                hh = h[i0 + c]
                for j in range(nl):
                    ta[j, c] = aht[hh >> 9, j]
                    tb[j, c] = bht[hh & 511, j]
            _mulb(ta, nl, tb, nl, nl, th, tmp, B)
        else:
            for c in range(nb):
                hh = h[i0 + c]
                for j in range(nl):
                    th[j, c] = hit[hh, j]
        # _expm1_fix
        for j in range(kx):
            for c in range(nb):
                xl[j, c] = x2[j, i0 + c]
        for j in range(ke + 1):
            for c in range(B):
                e[j, c] = 0
        for j in range(kx):
            for c in range(B):
                e[j, c] = xl[j, c]
                term[j, c] = xl[j, c]
        kt = kx
        for k in range(2, kend):
            kp = kt + kx - nl
            _mulb(term, kt, xl, kx, nl, pr, tmp, B)
            if k & (k - 1):                  # _div_small
                for c in range(B):
                    rem = np.int64(0)
                    for j in range(kp - 1, -1, -1):
                        cur = (rem << R) + pr[j, c]
                        qq = cur // k
                        term[j, c] = qq
                        rem = cur - qq * k
            else:                            # _shr by log2 k
                sh = 0
                while (1 << sh) < k:
                    sh += 1
                for j in range(kp):
                    for c in range(B):
                        term[j, c] = pr[j, c] >> sh
                for j in range(kp - 1):
                    for c in range(B):
                        term[j, c] |= (pr[j + 1, c] << (R - sh)) & RMASK
            kt = kp
            for j in range(kt):
                for c in range(B):
                    e[j, c] += term[j, c]
        for c in range(nb):
            u = xf[i0 + c] * 2.0 ** 31
            fk = 1.0 + u * 2.0 ** -31 / (kend + 1) * (1.0 + u * 2.0 ** -31 / (kend + 2))
            pw = u
            for _ in range(kend - 1):
                pw = pw * u
            tl[c] = np.int64(np.floor(pw * (fk / facf) * p_t))   # = ldexp(., tsh): exact
        for c in range(nb):
            e[0, c] += tl[c] & RMASK
            e[1, c] += tl[c] >> R
        _normb(e, ke + 1, B)
        # _g_off: f = b0 + e + b0 e, g = a1 + f + a1 f
        for c in range(nb):
            lb = l[i0 + c] & 1023
            la = l[i0 + c] >> 10
            for j in range(nl):
                f[j, c] = b0t[lb, j]
                g[j, c] = a1t[la, j]
        _mulb(f, nl, e, ke, nl, be, tmp, B)
        for j in range(ke):
            for c in range(B):
                f[j, c] += e[j, c] + be[j, c]
        _mulb(g, nl, f, nl, nl, af, tmp, B)
        for j in range(nl):
            for c in range(B):
                g[j, c] = g[j, c] + f[j, c] + af[j, c]
        # _terms: th (1 + g), as nl + 1 normalised limbs
        _mulb(th, nl, g, nl, nl, p, tmp, B)
        for j in range(nl):
            for c in range(B):
                e2[j, c] = th[j, c] + p[j, c]
        for c in range(B):
            e2[nl, c] = 0
        _normb(e2, nl + 1, B)
        for j in range(nl + 1):
            for c in range(nb):
                sb[j, c] = s[j, i0 + c]
        _mulb(sb, nl + 1, e2, nl + 1, nl, zb, tmp, B)
        for j in range(nl + 2):
            for c in range(nb):
                zm[j, i0 + c] = zb[j, c]
