"""Compiled (numba) kernels for `fastref._vec`'s per-logit part: the same integer limb
arithmetic, operation for operation, fused per logit, without (N C, nl) temporaries.

What they compute. `_vec` sums, per row, T(x) = exp(x - b) 2**fb over the kept logits, in
nl limbs of R = 26 bits (int64, exact sums). The numpy path does it in chunks (ECHUNK kept
logits in row-major order, or whole rows for short rows with every logit kept) and, per
chunk, chooses how each factor of a term is formed (`fastref._terms`): T_hi[h] from the big
table or as A[h >> 9] B[h & 511] ("spread": the chunk's largest h is >= HI_SPREAD), and
1 + T_lo[l] from the big table or from a1[l >> 10], b0[l & 1023] ("product": more than a
quarter of the chunk's l nonzero); logits off the 2**-31 grid always by `_g_off`. The
factors differ by a few units between the two ways (a floor of an exact product against a
truncated product), so the kernels replay the same chunks:

* `scan` (one pass over the rows): per row the kept counts and off-grid counts, per chunk
  (of both chunkings) its size, largest h, off-grid count and nonzero-l count, from which
  `fastref` derives each chunk's choices exactly as `_terms` does, and the error bounds from
  `_terms` itself (so they are the numpy path's bounds, float for float).
* `sums` (a second pass): per kept logit the term, by the same integer steps as `_terms`,
  `_mul` (partial products with i + j <= drop - 2 skipped, then carried), `_g_off`,
  `_expm1_fix` (its float64 tail by the same IEEE operations in the same order: no fastmath,
  no libm call but ldexp and floor, which are exact here), `_frac_limbs`; the nl limbs added
  into the row's int64 sums. Integer sums are exact and associative, so the row sums are the
  numpy path's, bit for bit.
* With `cache_bits` > 0 (logits of a format with few distinct values: float16, bfloat16,
  float8s), equal logits of one row and one chunk share one term: a hash table keyed by the
  float64's bits (8 linear probes; a value that finds no slot is kept apart, counted once
  per occurrence) holds (value, count); at the chunk's or the row's end each entry adds
  count x its term (limbs < 2**27, counts < 2**27: products < 2**54, a row's sums stay
  below C 2**27 < 2**63). The term is a function of the value within a chunk, so the sums
  are unchanged.
* For nl = 5 (the limb count of the default 100 bits) the products are written out
  (`_mul5`, `_mul445`, `_mul545`): the same partial products, the same carries.

Formats: logits float64 in, everything else int64 limbs (tables int32 / int64); the only
float64 arithmetic is `_frac_limbs` and `_expm1_fix`'s (exact scalings, floors, and the
series tail whose float64 error `_expm1_fix` bounds), replayed exactly.
"""
from __future__ import annotations

import numba
import numpy as np

R = 26
RMASK = (1 << R) - 1
GRID = 31
LO_BITS = 19
LMASK = (1 << LO_BITS) - 1
TWO31 = 2.0 ** 31
TWOM31 = 2.0 ** -31
NINF = -np.inf

__all__ = ["scan", "sums"]


@numba.njit(cache=True, nogil=True)
def scan(x, b, lead, tm, t, thr, echunk, step, do_full, nkb, nfin, noff_p, noff_f,
         c_m, c_hmax, c_off, c_nzl, f_m, f_hmax, f_off, f_nzl):
    """One pass over the rows (x: (n, c) float64, C-contiguous). Per row: nkb (kept,
    (x - lead) >= thr, before one copy of the maximum is removed), nfin (x != -inf), noff_p
    (kept off-grid logits, without the maximum's copy), noff_f (off-grid logits of the row
    with the maximum's copy replaced by lead: the whole-rows chunking). Per chunk of ECHUNK
    kept logits (c_*) and, if do_full, per chunk of `step` whole rows (f_*): count, largest h,
    off-grid count, count of l != 0. Returns the number of kept logits."""
    n, c = x.shape
    pos = 0
    for i in range(n):
        bg = b[i] * TWO31
        ld = lead[i]
        ti = t[i] if tm[i] else -1
        kb = 0
        fin = 0
        op = 0
        of = 0
        fc = i // step
        for j in range(c):
            v = x[i, j]
            if v != NINF:
                fin += 1
            keep = (v - ld) >= thr            # -inf (a masked class) is never kept
            if not keep:
                continue                      # (and the whole-rows chunking is then unused)
            kb += 1
            keep_p = True
            if j == ti:
                v = ld                        # the maximum's copy: only in whole-rows chunks
                keep_p = False
            xs = v * TWO31
            fl = np.floor(xs)
            off = xs != fl
            d = np.int64(fl - bg)
            h = -(d >> LO_BITS)
            lz = (d & LMASK) != 0
            if do_full:
                f_m[fc] += 1
                if h > f_hmax[fc]:
                    f_hmax[fc] = h
                if off:
                    f_off[fc] += 1
                    of += 1
                if lz:
                    f_nzl[fc] += 1
            if keep_p:
                ch = pos // echunk
                pos += 1
                c_m[ch] += 1
                if h > c_hmax[ch]:
                    c_hmax[ch] = h
                if off:
                    c_off[ch] += 1
                    op += 1
                if lz:
                    c_nzl[ch] += 1
        nkb[i] = kb
        nfin[i] = fin
        noff_p[i] = op
        noff_f[i] = of
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _mul(a, ka, b, kb, drop, acc, res):
    """`fastref._mul`: res[:k] = (a b / 2**(R drop)) rounded down with the partial products
    i + j <= drop - 2 skipped, k = ka + kb - drop (k < 1: one zero limb); returns k. The
    same sums per position (exact integers, so in any order) and the same carries."""
    k = ka + kb - drop
    if k < 1:
        res[0] = 0
        return 1
    carry = 0
    for p in range(k + 1):               # position p: the products i + j = p + drop - 1
        sm = carry
        q = p + drop - 1
        i0 = q - kb + 1
        if i0 < 0:
            i0 = 0
        i1 = q
        if i1 > ka - 1:
            i1 = ka - 1
        for i in range(i0, i1 + 1):
            sm += a[i] * b[q - i]
        if p == k:
            res[p - 1] = sm              # the top limb keeps the carries
        elif p > 0:
            res[p - 1] = sm & RMASK
        carry = sm >> R
    return k


@numba.njit(cache=True, nogil=True, inline="always")
def _mul5(a, b, res):
    """`_mul(a, 5, b, 5, 5, ...)` written out (nl = 5, the usual limb count): the products of
    positions 0 .. 4 (i + j = 4 .. 8), then the carries; the same integers."""
    a0, a1, a2, a3, a4 = a[0], a[1], a[2], a[3], a[4]
    b0, b1, b2, b3, b4 = b[0], b[1], b[2], b[3], b[4]
    s0 = a0 * b4 + a1 * b3 + a2 * b2 + a3 * b1 + a4 * b0
    s1 = a1 * b4 + a2 * b3 + a3 * b2 + a4 * b1 + (s0 >> R)
    s2 = a2 * b4 + a3 * b3 + a4 * b2 + (s1 >> R)
    s3 = a3 * b4 + a4 * b3 + (s2 >> R)
    s4 = a4 * b4 + (s3 >> R)
    res[0] = s1 & RMASK
    res[1] = s2 & RMASK
    res[2] = s3 & RMASK
    res[3] = s4 & RMASK
    res[4] = s4 >> R


@numba.njit(cache=True, nogil=True, inline="always")
def _mul445(a, b, res):
    """`_mul(a, 4, b, 4, 5, ...)` written out (x_f's square, nl = 5): 3 limbs."""
    a1, a2, a3 = a[1], a[2], a[3]
    b1, b2, b3 = b[1], b[2], b[3]
    s0 = a1 * b3 + a2 * b2 + a3 * b1
    s1 = a2 * b3 + a3 * b2 + (s0 >> R)
    s2 = a3 * b3 + (s1 >> R)
    res[0] = s1 & RMASK
    res[1] = s2 & RMASK
    res[2] = s2 >> R
    return 3


@numba.njit(cache=True, nogil=True, inline="always")
def _mul545(a, b, res):
    """`_mul(a, 5, b, 4, 5, ...)` written out (b0 expm1(x_f), nl = 5): 4 limbs."""
    a1, a2, a3, a4 = a[1], a[2], a[3], a[4]
    b0, b1, b2, b3 = b[0], b[1], b[2], b[3]
    s0 = a1 * b3 + a2 * b2 + a3 * b1 + a4 * b0
    s1 = a2 * b3 + a3 * b2 + a4 * b1 + (s0 >> R)
    s2 = a3 * b3 + a4 * b2 + (s1 >> R)
    s3 = a4 * b3 + (s2 >> R)
    res[0] = s1 & RMASK
    res[1] = s2 & RMASK
    res[2] = s3 & RMASK
    res[3] = s3 >> R
    return 4


@numba.njit(cache=True, nogil=True, inline="always")
def _from_float(v, k, out):
    """`fastref._from_float`: floor(v) for float64 v >= 0 as k limbs (exact)."""
    w = np.floor(v)
    for j in range(k - 1, 0, -1):
        s = 1.0
        for _ in range(j):
            s *= 67108864.0              # 2**(R j), exactly
        q = np.floor(w * (1.0 / s))
        out[j] = np.int64(q)
        w = w - q * s
    out[0] = np.int64(w)


@numba.njit(cache=True, nogil=True, inline="always")
def _g_off(xv, xs, fl, l, nl, p_x, p_fb, kx, ke, kend, facf, p_t, qf, rf, a1t, b0t,
           xl, e, term, pr, acc, be, f, af, g):
    """`fastref._frac_limbs`, `_expm1_fix` and `_g_off` for one off-grid logit: g (nl limbs,
    below 5 2**R, not normalised) = exp(l 2**-31) (1 + expm1(x_f)) - 1 in units 2**-fb."""
    # _frac_limbs: x_f = x - fl 2**-31 as floor(x_f 2**fb) (kx limbs) and as float64
    frac = xs - fl
    _from_float(frac * p_x, kx, xl)       # = ldexp(frac, fb - 31): exact
    xf = frac * TWOM31
    if xs < 0 and xs > -0.5:            # tiny negative x: x_f = 2**-31 - |x|
        vv = np.ceil(-xv * p_fb)            # = ldexp(-x, fb): exact
        _from_float(vv, kx, term)
        for j in range(kx):
            acc[j] = -term[j]
        acc[kx] = 0
        acc[qf] += np.int64(1) << rf
        for j in range(kx):
            cq = acc[j] >> R
            acc[j] &= RMASK
            acc[j + 1] += cq
        for j in range(kx):
            xl[j] = acc[j]
        xf = (1.0 + xs) * TWOM31
    # _expm1_fix: x + x**2/2 + ... in limbs while a term can exceed 2**44 units, the rest in
    # float64 (the same operations as the numpy path, in the same order)
    for j in range(ke + 1):
        e[j] = 0
    for j in range(kx):
        e[j] = xl[j]
        term[j] = xl[j]
    kt = kx
    for k in range(2, kend):
        if nl == 5 and kt == 4 and kx == 4:
            kp = _mul445(term, xl, pr)
        else:
            kp = _mul(term, kt, xl, kx, nl, acc, pr)
        if k & (k - 1):                  # _div_small
            rem = np.int64(0)
            for j in range(kp - 1, -1, -1):
                cur = (rem << R) + pr[j]
                qq = cur // k
                term[j] = qq
                rem = cur - qq * k
        else:                            # _shr by log2 k
            s = 0
            while (1 << s) < k:
                s += 1
            for j in range(kp):
                term[j] = pr[j] >> s
            for j in range(kp - 1):
                term[j] |= (pr[j + 1] << (R - s)) & RMASK
        kt = kp
        for j in range(kt):
            e[j] += term[j]
    u = xf * TWO31
    fk = 1.0 + u * TWOM31 / (kend + 1) * (1.0 + u * TWOM31 / (kend + 2))
    pw = u
    for _ in range(kend - 1):
        pw = pw * u
    tail = np.int64(np.floor(pw * (fk / facf) * p_t))   # = ldexp(., tsh): one rounding
    e[0] += tail & RMASK
    e[1] += tail >> R
    for j in range(ke):
        cq = e[j] >> R
        e[j] &= RMASK
        e[j + 1] += cq
    # _g_off: f = b0 + e + b0 e, g = a1 + f + a1 f
    lb = l & 1023
    for j in range(nl):
        f[j] = b0t[lb, j]
    if nl == 5 and ke == 4:
        kbe = _mul545(f, e, be)
    else:
        kbe = _mul(f, nl, e, ke, nl, acc, be)
    for j in range(ke):
        f[j] += e[j]
    for j in range(kbe):
        f[j] += be[j]
    la = l >> 10
    for j in range(nl):
        g[j] = a1t[la, j]
    if nl == 5:
        _mul5(g, f, af)
    else:
        _mul(g, nl, f, nl, nl, acc, af)
    for j in range(nl):
        g[j] = g[j] + f[j] + af[j]


@numba.njit(cache=True, nogil=True)
def sums(x, xb, b, lead, tm, t, thr, echunk, step, full, c_spread, c_prod, nl, hit, lot,
         aht, bht, a1t, b0t, fb, kx, ke, kend, facf, tsh, qf, rf, cache_bits, s):
    """Per row i, s[i, :nl] += the terms of its kept logits (`scan`'s chunks and the choices
    per chunk c_spread, c_prod), as `fastref._vec`'s numpy loop; cache_bits > 0: equal
    values of a row and chunk share one term (see the module docstring)."""
    p_x = np.ldexp(1.0, fb - GRID)
    p_fb = np.ldexp(1.0, fb)
    p_t = np.ldexp(1.0, tsh)
    n, c = x.shape
    th = np.zeros(64, np.int64)
    g = np.zeros(64, np.int64)
    p = np.zeros(64, np.int64)
    acc = np.zeros(64, np.int64)
    xl = np.zeros(64, np.int64)
    e = np.zeros(64, np.int64)
    term = np.zeros(64, np.int64)
    pr = np.zeros(64, np.int64)
    be = np.zeros(64, np.int64)
    f = np.zeros(64, np.int64)
    af = np.zeros(64, np.int64)
    tv = np.zeros(64, np.int64)
    nslot = 1 << cache_bits
    keys = np.zeros(nslot, np.uint64)
    vals = np.zeros(nslot, np.float64)
    cnts = np.zeros(nslot, np.int64)
    used = np.zeros(nslot, np.int64)
    ovf = np.zeros(c, np.float64)
    smask = nslot - 1
    pos = 0
    for i in range(n):
        bg = b[i] * TWO31
        ld = lead[i]
        ti = t[i] if tm[i] else -1
        cur = -1
        nused = 0
        novf = 0
        for j in range(c + 1):               # j = c: the end of the row (a last flush)
            ch = -2
            if j < c:
                v = x[i, j]
                if j == ti:
                    continue                 # one copy of the maximum is the 1
                if full:
                    ch = i // step
                else:
                    if not ((v - ld) >= thr):
                        continue
                    ch = pos // echunk
                    pos += 1
            if ch != cur:                    # a new chunk (or the row's end): the pending terms
                for u in range(nused + novf):
                    if u < nused:
                        sl = used[u]
                        v = vals[sl]
                        mcount = cnts[sl]
                        cnts[sl] = 0
                    else:
                        v = ovf[u - nused]
                        mcount = 1
                    ch0 = cur
                    xs = v * TWO31
                    fl = np.floor(xs)
                    d = np.int64(fl - bg)
                    h = -(d >> LO_BITS)
                    l = d & LMASK
                    if c_spread[ch0]:
                        ha = h >> 9
                        hb = h & 511
                        for jj in range(nl):
                            p[jj] = aht[ha, jj]
                            g[jj] = bht[hb, jj]
                        _mul5(p, g, th) if nl == 5 else _mul(p, nl, g, nl, nl, acc, th)
                    else:
                        for jj in range(nl):
                            th[jj] = hit[h, jj]
                    if xs != fl:
                        _g_off(v, xs, fl, l, nl, p_x, p_fb, kx, ke, kend, facf, p_t, qf, rf, a1t, b0t,
                               xl, e, term, pr, acc, be, f, af, g)
                    elif c_prod[ch0]:
                        la = l >> 10
                        lb = l & 1023
                        for jj in range(nl):
                            f[jj] = a1t[la, jj]
                            af[jj] = b0t[lb, jj]
                        _mul5(f, af, p) if nl == 5 else _mul(f, nl, af, nl, nl, acc, p)
                        for jj in range(nl):
                            g[jj] = f[jj] + af[jj] + p[jj]
                    else:
                        for jj in range(nl):
                            g[jj] = lot[l, jj]
                    nz = False
                    for jj in range(nl):
                        if g[jj] != 0:
                            nz = True
                    if nz:
                        _mul5(th, g, p) if nl == 5 else _mul(th, nl, g, nl, nl, acc, p)
                        for jj in range(nl):
                            tv[jj] = th[jj] + p[jj]
                    else:                                # th g = 0: every partial product is 0
                        for jj in range(nl):
                            tv[jj] = th[jj]

                    for q in range(nl):
                        s[i, q] += mcount * tv[q]
                nused = 0
                novf = 0
                cur = ch
            if j == c:
                break
            v = x[i, j]
            if cache_bits:                   # equal values share a slot (linear probing)
                key = xb[i, j]
                sl = np.int64((key * np.uint64(0x9E3779B97F4A7C15))
                              >> np.uint64(64 - cache_bits))
                placed = False
                for _ in range(8):
                    if cnts[sl] == 0:
                        used[nused] = sl
                        nused += 1
                        keys[sl] = key
                        vals[sl] = v
                        cnts[sl] = 1
                        placed = True
                        break
                    if keys[sl] == key:
                        cnts[sl] += 1
                        placed = True
                        break
                    sl = (sl + 1) & smask
                if placed:
                    continue
            ovf[novf] = v
            novf += 1
