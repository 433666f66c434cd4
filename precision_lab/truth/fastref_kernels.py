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
  `_terms` itself (so they are the numpy path's bounds, float for float). A row is taken in
  segments that stay within one chunk, each segment's counts summed without a branch (an
  unkept logit counts as the lead, which adds nothing), the target's copy of the maximum
  taken out afterwards; the current chunk's counts are kept in registers.
* `sums` (a second pass): per kept logit the term, by the same integer steps as `_terms`,
  `_mul` (partial products with i + j <= drop - 2 skipped, then carried), `_g_off`,
  `_expm1_fix` (its float64 tail by the same IEEE operations in the same order: no fastmath,
  no libm call but ldexp and floor, which are exact here), `_frac_limbs`; the nl limbs added
  into the row's int64 sums. Integer sums are exact and associative, so the row sums are the
  numpy path's, bit for bit, in whatever order the terms are added.
* How `sums` runs. Its per-logit loop (`_run`, a small function with the loop's state in
  registers) returns only at the rare events: a list full, a kept logit that opens the next
  chunk, the row's end. The kept logits of the current chunk go onto two lists (value,
  count, row; on the grid and off it), each summed (`_chunk`) when it holds LIST terms or at
  the chunk's end. For nl = 5 (the limb count of the default 100 bits) a list is summed in
  blocks of B lanes (`_block5`, structure of arrays): the lanes' table indices, each lane's
  table entries gathered into (words, B) scratch (tables packed 5 limbs in 3 int64 words,
  `pack3`), then every product, carry and float64 step as a loop over the lanes (no branch,
  the same operations per lane as the scalar formulas: LLVM vectorises them, AVX-512
  vpmullq where the CPU has it), the block's terms summed in registers when its lanes are
  of one row (else each into its row). A list's last block is padded with copies of its
  last term, count 0. Other nl: one term at a time (`_term1`, the general `_mul`).
* Fewer terms where the logits have few distinct values (long rows; `fastref` chooses by the
  first row's significant bits; only a matter of speed: the term is a function of the value
  within a row and a chunk, and integer sums are exact, so the sums are the same):
  - `hsize` > 0 (5 to 12 bits: float16, bfloat16), nl = 5: an on-grid logit with l = 0 (on
    the 2**-12 grid: most float16 / bfloat16 logits) has the term T_hi[h] (1 + T_lo[0]) =
    T_hi[h], the tables' l = 0 entries being 0; such logits are counted per h (a count array
    indexed by h and the list of the h seen) and, at the chunk's or the row's end, each
    distinct h adds count x T_hi[h] (`_hist`, T_hi as in `_block5`).
  - `cache_bits` > 0 (<= 8 bits: bfloat16, float8s), for the other logits: equal logits of
    one row and one chunk share one term: a hash table keyed by the float64's bits (8 linear
    probes; a value that finds no slot is kept apart, counted once per occurrence) holds
    (value, count); at the chunk's or the row's end each entry goes onto a list with its
    count (limbs < 2**27, counts < 2**27: products < 2**54, a row's sums stay below
    C 2**27 < 2**63).

Formats: logits float64 in, everything else int64 limbs (tables int32 / int64, packed
tables int64 words); the only float64 arithmetic is `_frac_limbs` and `_expm1_fix`'s (exact
scalings, floors, and the series tail whose float64 error `_expm1_fix` bounds), replayed
exactly.
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
TWO26 = 2.0 ** R
TWO52 = 2.0 ** (2 * R)
TWO78 = 2.0 ** (3 * R)
B = 32                       # lanes per block of `sums` (structure of arrays: (limbs, B))
LIST = 16 * B                # terms summed at a time (lists that stay in the L1 cache)

__all__ = ["scan", "sums"]


@numba.njit(cache=True, nogil=True, inline="always")
def _grid(v, bg):
    """A kept logit's (off the 2**-31 grid, h, l != 0) as `scan` and `_terms` define them."""
    xs = v * TWO31
    fl = np.floor(xs)
    d = np.int64(fl - bg)
    return xs != fl, -(d >> LO_BITS), (d & LMASK) != 0


@numba.njit(cache=True, nogil=True)
def scan(x, b, lead, tm, t, thr, echunk, step, do_full, nkb, nfin, noff_p, noff_f,
         c_m, c_hmax, c_off, c_nzl, f_m, f_hmax, f_off, f_nzl):
    """One pass over the rows (x: (n, c) float64, C-contiguous). Per row: nkb (kept,
    (x - lead) >= thr, before one copy of the maximum is removed), nfin (x != -inf), noff_p
    (kept off-grid logits, without the maximum's copy), noff_f (off-grid logits of the row
    with the maximum's copy replaced by lead: the whole-rows chunking). Per chunk of ECHUNK
    kept logits (c_*) and, if do_full, per chunk of `step` whole rows (f_*): count, largest h,
    off-grid count, count of l != 0. Returns the number of kept logits.

    How: a row is taken in segments of at most (pnext - pos) logits, so that a segment's kept
    logits all fall into the current chunk; a segment's counts are summed without a branch
    (an unkept logit counts as the lead, h = 0, and adds 0), every logit taken as it is; then
    the target's copy of the maximum (always kept) is taken out of the chunk's counts and, for
    the whole-rows chunking, replaced by the lead. A chunk is closed when the next segment
    starts (an empty last chunk is not counted: `fastref` takes ceil(pos / echunk) chunks)."""
    n, c = x.shape
    pos = 0
    pch = 0
    pnext = echunk
    cm = 0                                    # the current chunk's counts, kept in registers
    chx = 0
    co = 0
    cz = 0
    for i in range(n):
        bg = b[i] * TWO31
        ld = lead[i]
        ti = t[i] if tm[i] else -1
        kb = 0
        fin = 0
        op = 0
        of = 0
        fhx = 0
        fz = 0
        j = 0
        while j < c:
            if pos == pnext:                  # the chunk is full: close it
                c_m[pch] += cm
                c_hmax[pch] = max(c_hmax[pch], chx)
                c_off[pch] += co
                c_nzl[pch] += cz
                cm = 0
                chx = 0
                co = 0
                cz = 0
                pch += 1
                pnext += echunk
            j1 = min(c, j + (pnext - pos))
            k = 0
            o = 0
            z = 0
            hm = 0
            for jj in range(j, j1):
                v = x[i, jj]
                fin += v != NINF
                keep = (v - ld) >= thr        # -inf (a masked class) is never kept
                off, h, lz = _grid(v if keep else ld, bg)
                hm = max(hm, h)
                k += keep
                o += keep & off
                z += keep & lz
            kb += k
            of += o
            fz += z
            fhx = max(fhx, hm)
            if j <= ti < j1:                  # the maximum's copy: only in whole-rows chunks
                off_t, _, lz_t = _grid(x[i, ti], bg)
                k -= 1
                o -= off_t
                z -= lz_t
            pos += k
            cm += k
            chx = max(chx, hm)
            co += o
            op += o
            cz += z
            j = j1
        if ti >= 0:                           # whole rows: the copy counted as the lead
            off_t, _, lz_t = _grid(x[i, ti], bg)
            off_l, _, lz_l = _grid(ld, bg)
            of += off_l - off_t
            fz += lz_l - lz_t
        if do_full:
            fc = i // step
            f_m[fc] += kb
            f_hmax[fc] = max(f_hmax[fc], fhx)
            f_off[fc] += of
            f_nzl[fc] += fz
        nkb[i] = kb
        nfin[i] = fin
        noff_p[i] = op
        noff_f[i] = of
    c_m[pch] += cm
    c_hmax[pch] = max(c_hmax[pch], chx)
    c_off[pch] += co
    c_nzl[pch] += cz
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
    kbe = _mul(f, nl, e, ke, nl, acc, be)
    for j in range(ke):
        f[j] += e[j]
    for j in range(kbe):
        f[j] += be[j]
    la = l >> 10
    for j in range(nl):
        g[j] = a1t[la, j]
    _mul(g, nl, f, nl, nl, acc, af)
    for j in range(nl):
        g[j] = g[j] + f[j] + af[j]


@numba.njit(cache=True, nogil=True, inline="always")
def _m5(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4):
    """`_mul(a, 5, b, 5, 5, ...)` (nl = 5) written out on scalars: the products of positions
    0 .. 4 (i + j = 4 .. 8), then the carries (the same integers); the 5 limbs as a tuple,
    for the lane loops."""
    s0 = a0 * b4 + a1 * b3 + a2 * b2 + a3 * b1 + a4 * b0
    s1 = a1 * b4 + a2 * b3 + a3 * b2 + a4 * b1 + (s0 >> R)
    s2 = a2 * b4 + a3 * b3 + a4 * b2 + (s1 >> R)
    s3 = a3 * b4 + a4 * b3 + (s2 >> R)
    s4 = a4 * b4 + (s3 >> R)
    return s1 & RMASK, s2 & RMASK, s3 & RMASK, s4 & RMASK, s4 >> R


@numba.njit(cache=True, nogil=True, inline="always")
def _unpack(p0, p1, p2):
    """An entry of a `pack3` table: its 5 limbs from its 3 words."""
    return p0 & RMASK, p0 >> R, p1 & RMASK, p1 >> R, p2


@numba.njit(cache=True, nogil=True)
def pack3(t, out):
    """out[i] = (t[i, 0] + t[i, 1] 2**R, t[i, 2] + t[i, 3] 2**R, t[i, 4]) for a table of 5
    limbs per entry (each in [0, 2**R)); returns False (out unfinished) if a limb is not."""
    for i in range(t.shape[0]):
        for jj in range(5):
            if t[i, jj] < 0 or t[i, jj] > RMASK:
                return False
        out[i, 0] = np.int64(t[i, 0]) | (np.int64(t[i, 1]) << R)
        out[i, 1] = np.int64(t[i, 2]) | (np.int64(t[i, 3]) << R)
        out[i, 2] = np.int64(t[i, 4])
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _entries5(tab, ix, w, dst):
    """w[dst, :5, ln] = the 5 limbs of the packed table's entry ix[ln], for the B lanes:
    the words gathered into scratch w[2] first, then unpacked (two lane loops)."""
    for ln in range(B):
        k = ix[ln]
        for jj in range(3):
            w[2, jj, ln] = tab[k, jj]
    for ln in range(B):
        a0, a1, a2, a3, a4 = _unpack(w[2, 0, ln], w[2, 1, ln], w[2, 2, ln])
        w[dst, 0, ln] = a0
        w[dst, 1, ln] = a1
        w[dst, 2, ln] = a2
        w[dst, 3, ln] = a3
        w[dst, 4, ln] = a4


@numba.njit(cache=True, nogil=True, inline="always")
def _tiny_fix(xv, kx, p_fb, qf, rf, w, ln, term, acc):
    """`_g_off`'s tiny negative x (-2**-32 < x < 0) for lane ln: x_f = 2**-31 - |x|,
    w[4, :kx, ln] = 2**(fb - 31) - ceil(|x| 2**fb) (the same integer steps)."""
    vv = np.ceil(-xv * p_fb)                 # = ldexp(-x, fb): exact
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
        w[4, j, ln] = acc[j]


@numba.njit(cache=True, nogil=True)
def _block5(bv, bc, brw, nk, off, spread, prod, b, hit, lot, aht, bht, a1t, b0t, p_x, p_fb,
            p_t, facf, qf, rf, hl, fv, w, term, acc, s):
    """nl = 5: the terms of the B logits vv = bv[k0:k0 + B] (all on the grid, or all off it:
    `off`) of one chunk (choices spread, prod), of rows rw = brw[k0:k0 + B] (non-decreasing),
    s[brw[k0 + ln], :5] += bc[k0 + ln] x term (cnt = bc[k0:k0 + B]). The tables are `pack3`'s
    (an entry's 5 limbs in 3 int64 words); an entry's words are gathered per lane into
    (3, B) scratch (w[k]) and unpacked where used; every step is a loop over the lanes
    (`_m5`, and `_mul(x, 4, x, 4, 5)`, `_mul(b0, 5, e, 4, 5)`, `_g_off` written out for
    kx = ke = 4 and the series' limb part up to x**2/2: the same integers and the same IEEE
    float64 operations, in the same order)."""
    for k0 in range(0, nk, B):
        r = brw[k0]
        one = brw[k0 + B - 1] == r           # the block's lanes of one row (the usual case)
        if one:
            bg = b[r] * TWO31
            for ln in range(B):
                xs = bv[k0 + ln] * TWO31
                fl = np.floor(xs)
                d = np.int64(fl - bg)
                hl[0, ln] = -(d >> LO_BITS)
                hl[1, ln] = d & LMASK
        else:
            for ln in range(B):
                xs = bv[k0 + ln] * TWO31
                fl = np.floor(xs)
                d = np.int64(fl - b[brw[k0 + ln]] * TWO31)
                hl[0, ln] = -(d >> LO_BITS)
                hl[1, ln] = d & LMASK
        if spread:                               # T_hi[h] = A[h >> 9] B[h & 511]
            for ln in range(B):
                ha = hl[0, ln] >> 9
                hb = hl[0, ln] & 511
                for jj in range(3):
                    w[2, jj, ln] = aht[ha, jj]
                    w[3, jj, ln] = bht[hb, jj]
            for ln in range(B):
                a0, a1, a2, a3, a4 = _unpack(w[2, 0, ln], w[2, 1, ln], w[2, 2, ln])
                b0, b1, b2, b3, b4 = _unpack(w[3, 0, ln], w[3, 1, ln], w[3, 2, ln])
                r0, r1, r2, r3, r4 = _m5(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4)
                w[0, 0, ln] = r0
                w[0, 1, ln] = r1
                w[0, 2, ln] = r2
                w[0, 3, ln] = r3
                w[0, 4, ln] = r4
        else:
            _entries5(hit, hl[0], w, 0)              # T_hi[h] from the big table
        if off:                                  # _frac_limbs, _expm1_fix, _g_off
            ntiny = 0
            for ln in range(B):
                xs = bv[k0 + ln] * TWO31
                ntiny += (xs < 0) & (xs > -0.5)  # (no branch: the sign is random)
                frac = xs - np.floor(xs)
                wv = np.floor(frac * p_x)        # _from_float(ldexp(frac, fb - 31), 4)
                q = np.floor(wv * (1.0 / TWO78))
                w[4, 3, ln] = np.int64(q)
                wv = wv - q * TWO78
                q = np.floor(wv * (1.0 / TWO52))
                w[4, 2, ln] = np.int64(q)
                wv = wv - q * TWO52
                q = np.floor(wv * (1.0 / TWO26))
                w[4, 1, ln] = np.int64(q)
                wv = wv - q * TWO26
                w[4, 0, ln] = np.int64(wv)
                fv[0, ln] = frac * TWOM31
            for ln in range(B if ntiny else 0):
                xs = bv[k0 + ln] * TWO31
                if xs < 0 and xs > -0.5:         # tiny negative x: x_f = 2**-31 - |x|
                    _tiny_fix(bv[k0 + ln], 4, p_fb, qf, rf, w, ln, term, acc)
                    fv[0, ln] = (1.0 + xs) * TWOM31
            for ln in range(B):                  # expm1(x_f): x + x**2/2 in limbs, then floats
                x0, x1, x2, x3 = w[4, 0, ln], w[4, 1, ln], w[4, 2, ln], w[4, 3, ln]
                s0 = x1 * x3 + x2 * x2 + x3 * x1             # _mul(x, 4, x, 4, 5)
                s1 = x2 * x3 + x3 * x2 + (s0 >> R)
                s2 = x3 * x3 + (s1 >> R)
                p0 = s1 & RMASK
                p1 = s2 & RMASK
                p2 = s2 >> R
                t0 = (p0 >> 1) | ((p1 << (R - 1)) & RMASK)   # _shr by 1
                t1 = (p1 >> 1) | ((p2 << (R - 1)) & RMASK)
                t2 = p2 >> 1
                e0 = x0 + t0
                e1 = x1 + t1
                e2 = x2 + t2
                e3 = x3
                u = fv[0, ln] * TWO31
                fk = 1.0 + u * TWOM31 / 4 * (1.0 + u * TWOM31 / 5)
                pw = u * u
                pw = pw * u
                tail = np.int64(np.floor(pw * (fk / facf) * p_t))
                e0 += tail & RMASK
                e1 += tail >> R
                cq = e0 >> R
                e0 &= RMASK
                e1 += cq
                cq = e1 >> R
                e1 &= RMASK
                e2 += cq
                cq = e2 >> R
                e2 &= RMASK
                e3 += cq
                e3 &= RMASK
                w[5, 0, ln] = e0
                w[5, 1, ln] = e1
                w[5, 2, ln] = e2
                w[5, 3, ln] = e3
            for ln in range(B):
                lx = hl[1, ln]
                la = lx >> 10
                lb = lx & 1023
                for jj in range(3):
                    w[2, jj, ln] = b0t[lb, jj]
                    w[3, jj, ln] = a1t[la, jj]
            for ln in range(B):
                f0, f1, f2, f3, f4 = _unpack(w[2, 0, ln], w[2, 1, ln], w[2, 2, ln])
                e0, e1, e2, e3 = w[5, 0, ln], w[5, 1, ln], w[5, 2, ln], w[5, 3, ln]
                s0 = f1 * e3 + f2 * e2 + f3 * e1 + f4 * e0   # _mul(b0, 5, e, 4, 5)
                s1 = f2 * e3 + f3 * e2 + f4 * e1 + (s0 >> R)
                s2 = f3 * e3 + f4 * e2 + (s1 >> R)
                s3 = f4 * e3 + (s2 >> R)
                f0 = f0 + e0 + (s1 & RMASK)
                f1 = f1 + e1 + (s2 & RMASK)
                f2 = f2 + e2 + (s3 & RMASK)
                f3 = f3 + e3 + (s3 >> R)
                a0, a1, a2, a3, a4 = _unpack(w[3, 0, ln], w[3, 1, ln], w[3, 2, ln])
                r0, r1, r2, r3, r4 = _m5(a0, a1, a2, a3, a4, f0, f1, f2, f3, f4)
                w[1, 0, ln] = a0 + f0 + r0
                w[1, 1, ln] = a1 + f1 + r1
                w[1, 2, ln] = a2 + f2 + r2
                w[1, 3, ln] = a3 + f3 + r3
                w[1, 4, ln] = a4 + f4 + r4
        elif prod:                               # 1 + T_lo[l] = (1 + a1[l >> 10]) (1 + b0[l & 1023])
            for ln in range(B):
                lx = hl[1, ln]
                la = lx >> 10
                lb = lx & 1023
                for jj in range(3):
                    w[2, jj, ln] = a1t[la, jj]
                    w[3, jj, ln] = b0t[lb, jj]
            for ln in range(B):
                a0, a1, a2, a3, a4 = _unpack(w[2, 0, ln], w[2, 1, ln], w[2, 2, ln])
                b0, b1, b2, b3, b4 = _unpack(w[3, 0, ln], w[3, 1, ln], w[3, 2, ln])
                r0, r1, r2, r3, r4 = _m5(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4)
                w[1, 0, ln] = a0 + b0 + r0
                w[1, 1, ln] = a1 + b1 + r1
                w[1, 2, ln] = a2 + b2 + r2
                w[1, 3, ln] = a3 + b3 + r3
                w[1, 4, ln] = a4 + b4 + r4
        else:
            _entries5(lot, hl[1], w, 1)              # T_lo[l] from the big table
        if one:                              # cnt th (1 + g), summed over the lanes (exact)
            z0 = np.int64(0)
            z1 = np.int64(0)
            z2 = np.int64(0)
            z3 = np.int64(0)
            z4 = np.int64(0)
            for ln in range(B):
                a0, a1, a2, a3, a4 = w[0, 0, ln], w[0, 1, ln], w[0, 2, ln], w[0, 3, ln], w[0, 4, ln]
                r0, r1, r2, r3, r4 = _m5(a0, a1, a2, a3, a4, w[1, 0, ln], w[1, 1, ln],
                                         w[1, 2, ln], w[1, 3, ln], w[1, 4, ln])
                m = bc[k0 + ln]
                z0 += m * (a0 + r0)
                z1 += m * (a1 + r1)
                z2 += m * (a2 + r2)
                z3 += m * (a3 + r3)
                z4 += m * (a4 + r4)
            s[r, 0] += z0
            s[r, 1] += z1
            s[r, 2] += z2
            s[r, 3] += z3
            s[r, 4] += z4
        else:                                # lanes of several rows: each into its row
            for ln in range(B):
                a0, a1, a2, a3, a4 = w[0, 0, ln], w[0, 1, ln], w[0, 2, ln], w[0, 3, ln], w[0, 4, ln]
                r0, r1, r2, r3, r4 = _m5(a0, a1, a2, a3, a4, w[1, 0, ln], w[1, 1, ln],
                                         w[1, 2, ln], w[1, 3, ln], w[1, 4, ln])
                m = bc[k0 + ln]
                w[0, 0, ln] = m * (a0 + r0)
                w[0, 1, ln] = m * (a1 + r1)
                w[0, 2, ln] = m * (a2 + r2)
                w[0, 3, ln] = m * (a3 + r3)
                w[0, 4, ln] = m * (a4 + r4)
            for ln in range(B):
                rr = brw[k0 + ln]
                for q in range(5):
                    s[rr, q] += w[0, q, ln]


@numba.njit(cache=True, nogil=True)
def _term1(v, bg, spread, prod, nl, hit, lot, aht, bht, a1t, b0t, p_x, p_fb, kx, ke, kend,
           facf, p_t, qf, rf, th, g, p, acc, xl, e, term, pr, be, f, af, tv):
    """One logit's term (any nl, scalar): tv[:nl] = th (1 + g) as `fastref._terms`."""
    xs = v * TWO31
    fl = np.floor(xs)
    d = np.int64(fl - bg)
    h = -(d >> LO_BITS)
    l = d & LMASK
    if spread:
        ha = h >> 9
        hb = h & 511
        for jj in range(nl):
            p[jj] = aht[ha, jj]
            g[jj] = bht[hb, jj]
        _mul(p, nl, g, nl, nl, acc, th)
    else:
        for jj in range(nl):
            th[jj] = hit[h, jj]
    if xs != fl:
        _g_off(v, xs, fl, l, nl, p_x, p_fb, kx, ke, kend, facf, p_t, qf, rf, a1t, b0t,
               xl, e, term, pr, acc, be, f, af, g)
    elif prod:
        la = l >> 10
        lb = l & 1023
        for jj in range(nl):
            f[jj] = a1t[la, jj]
            af[jj] = b0t[lb, jj]
        _mul(f, nl, af, nl, nl, acc, p)
        for jj in range(nl):
            g[jj] = f[jj] + af[jj] + p[jj]
    else:
        for jj in range(nl):
            g[jj] = lot[l, jj]
    _mul(th, nl, g, nl, nl, acc, p)
    for jj in range(nl):
        tv[jj] = th[jj] + p[jj]


@numba.njit(cache=True, nogil=True)
def _run(xi, xbi, j, c, i, ti, ld, thr, bgr, full, pos, pnext, hist, cache_bits, bv, bc, brw,
         n0, n1, hcnt, hused, nh, keys, vals, cnts, used, nused, smask):
    """The per-logit loop of `sums` for row i (values xi, their bits xbi) from column j, in
    one chunk: each kept logit (not the target's copy ti; `full`: whole rows, all kept)
    counted into the row's histogram by h (`hist`, on-grid l = 0), or into the value cache
    (`cache_bits`), or appended to list 0 (on the grid) or 1 (off it). Returns (j, pos, n0,
    n1, nh, nused, event) where it stopped: event 0 the row's end, 1 a kept logit that opens
    the next chunk (pos == pnext, not consumed), 2 / 3 list 0 / 1 full (after appending)."""
    while j < c:
        v = xi[j]
        if j == ti:
            j += 1
            continue                         # one copy of the maximum is the 1
        if not full:
            if not ((v - ld) >= thr):
                j += 1
                continue
            if pos == pnext:
                return j, pos, n0, n1, nh, nused, 1
            pos += 1
        j += 1
        xs = v * TWO31
        fl = np.floor(xs)
        if hist and xs == fl:                # on the 2**-12 grid (l = 0): counted per h
            d = np.int64(fl - bgr)
            if (d & LMASK) == 0:
                hh = -(d >> LO_BITS)
                hused[nh] = hh
                nh += hcnt[hh] == 0
                hcnt[hh] += 1
                continue
        if cache_bits:                       # equal values share a slot (linear probing)
            key = xbi[j - 1]
            sl = np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - cache_bits))
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
        k = 0 if xs == fl else 1             # a term of its own
        nk = n0 if k == 0 else n1
        bv[k, nk] = v
        brw[k, nk] = i
        if cache_bits:
            bc[k, nk] = 1
        if k == 0:
            n0 += 1
            if n0 == LIST:
                return j, pos, n0, n1, nh, nused, 2
        else:
            n1 += 1
            if n1 == LIST:
                return j, pos, n0, n1, nh, nused, 3
    return j, pos, n0, n1, nh, nused, 0


@numba.njit(cache=True, nogil=True)
def sums(x, xb, b, lead, tm, t, thr, echunk, step, full, c_spread, c_prod, nl, hit, lot,
         aht, bht, a1t, b0t, packed, fb, kx, ke, kend, facf, tsh, qf, rf, cache_bits, hsize, s):
    """Per row i, s[i, :nl] += the terms of its kept logits (`scan`'s chunks and the choices
    per chunk c_spread, c_prod), as `fastref._vec`'s numpy loop; cache_bits > 0: equal
    values of a row and chunk share one term (see the module docstring); hsize > 0 (nl = 5):
    on-grid logits with l = 0 are counted per h and summed per distinct h (`_hist`). The
    per-logit loop is `_run`; a chunk's terms are collected (value, count, row; on-grid and
    off-grid ones apart) and summed by `_chunk` when a list is full and at the chunk's end;
    the cache's and the histogram's at the chunk's and the row's end."""
    p_x = np.ldexp(1.0, fb - GRID)
    p_fb = np.ldexp(1.0, fb)
    p_t = np.ldexp(1.0, tsh)
    lanes = nl == 5 and kx == 4 and ke == 4 and kend == 3 and packed[2].shape[0] > 0
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
    w = np.zeros((6, 5, B), np.int64)        # `_block5`'s limbs
    hl = np.zeros((2, B), np.int64)
    fv = np.zeros((1, B), np.float64)
    cap = LIST + B                           # a list's terms at most, and a block's padding
    bv = np.zeros((2, cap), np.float64)      # a chunk's terms: [0] on the grid, [1] off it
    bc = np.zeros((2, cap), np.int64)        # their counts (with the value cache)
    brw = np.zeros((2, cap), np.int64)       # their rows
    nslot = 1 << cache_bits
    keys = np.zeros(nslot, np.uint64)
    vals = np.zeros(nslot, np.float64)
    cnts = np.zeros(nslot, np.int64)
    used = np.zeros(nslot, np.int64)
    smask = nslot - 1
    ones = cache_bits == 0
    if ones:
        bc[:, :] = 1                         # one term per logit (`_chunk` restores the ones)
    hist = hsize > 0 and lanes
    hcnt = np.zeros(max(hsize, 1), np.int64)
    hused = np.zeros(min(c, echunk) + 1 if hist else 1, np.int64)
    nh = np.int64(0)                         # (int64, not literals: one compiled `_run`)
    nused = np.int64(0)
    pos = np.int64(0)
    pch = 0
    pnext = echunk
    cur = -1 if full else 0                  # chunks of whole rows start at their rows
    n0 = np.int64(0)
    n1 = np.int64(0)
    for i in range(n + 1):                   # i = n: the last chunk's end
        if i == n or (full and i // step != cur):
            if cur >= 0:                     # a new chunk (or the end): the last one's sums
                for k in range(2):
                    nk = n0 if k == 0 else n1
                    if nk:
                        _chunk(bv[k], bc[k], brw[k], np.int64(nk), k == 1, c_spread[cur], c_prod[cur],
                               ones, b, lanes, nl, hit, lot, aht, bht, a1t, b0t, packed, p_x,
                               p_fb, kx, ke, kend, facf, p_t, qf, rf, hl, fv, w, th, g, p,
                               acc, xl, e, term, pr, be, f, af, tv, s)
            n0 = 0
            n1 = 0
            if i == n:
                break
            cur = i // step
        ti = t[i] if tm[i] else -1
        j = np.int64(0)
        while True:
            j, pos, n0, n1, nh, nused, ev = _run(
                x[i], xb[i], j, c, i, ti, lead[i], thr, b[i] * TWO31, full, pos, pnext, hist,
                cache_bits, bv, bc, brw, n0, n1, hcnt, hused, nh, keys, vals, cnts, used,
                nused, smask)
            if ev == 2 or ev == 3:           # a full list: its sums now (cache-sized lists)
                k = ev - 2
                _chunk(bv[k], bc[k], brw[k], np.int64(LIST), k == 1, c_spread[cur], c_prod[cur], ones,
                       b, lanes, nl, hit, lot, aht, bht, a1t, b0t, packed, p_x, p_fb, kx, ke,
                       kend, facf, p_t, qf, rf, hl, fv, w, th, g, p, acc, xl, e, term, pr, be,
                       f, af, tv, s)
                if k == 0:
                    n0 = 0
                else:
                    n1 = 0
                continue
            # the row's end or a new chunk: the histogram's and the cache's terms
            if nh:
                _hist(hused, nh, hcnt, i, c_spread[cur], packed[0], packed[2], packed[3], s)
                nh = 0
            for u in range(nused):
                sl = used[u]
                vu = vals[sl]
                xs = vu * TWO31
                k = 0 if xs == np.floor(xs) else 1
                nk = n0 if k == 0 else n1
                bv[k, nk] = vu
                bc[k, nk] = cnts[sl]
                brw[k, nk] = i
                cnts[sl] = 0
                if k == 0:
                    n0 += 1
                else:
                    n1 += 1
                if nk + 1 == LIST:
                    _chunk(bv[k], bc[k], brw[k], np.int64(LIST), k == 1, c_spread[cur], c_prod[cur],
                           ones, b, lanes, nl, hit, lot, aht, bht, a1t, b0t, packed, p_x, p_fb,
                           kx, ke, kend, facf, p_t, qf, rf, hl, fv, w, th, g, p, acc, xl, e,
                           term, pr, be, f, af, tv, s)
                    if k == 0:
                        n0 = 0
                    else:
                        n1 = 0
            nused = 0
            if ev == 0:
                break
            for k in range(2):               # ev == 1: a new chunk; the last one's sums
                nk = n0 if k == 0 else n1
                if nk:
                    _chunk(bv[k], bc[k], brw[k], np.int64(nk), k == 1, c_spread[cur], c_prod[cur], ones,
                           b, lanes, nl, hit, lot, aht, bht, a1t, b0t, packed, p_x, p_fb, kx,
                           ke, kend, facf, p_t, qf, rf, hl, fv, w, th, g, p, acc, xl, e, term,
                           pr, be, f, af, tv, s)
            n0 = 0
            n1 = 0
            pch += 1
            pnext += echunk
            cur = pch


@numba.njit(cache=True, nogil=True)
def _hist(hused, nh, hcnt, r, spread, hit, aht, bht, s):
    """The on-grid logits with l = 0 of one row and one chunk, counted per h (hcnt[h], the
    distinct h in hused[:nh]): s[r, :5] += hcnt[h] T_hi[h] for each, and hcnt reset. Their
    term is T_hi[h] (1 + T_lo[0]) = T_hi[h] + _mul(T_hi[h], 0) = T_hi[h] (`fastref` uses
    this only where the tables' l = 0 entries are 0), T_hi[h] from the big table or as
    A[h >> 9] B[h & 511] (spread) as in `_block5`: the same integers, so the same sums."""
    z0 = np.int64(0)
    z1 = np.int64(0)
    z2 = np.int64(0)
    z3 = np.int64(0)
    z4 = np.int64(0)
    for u in range(nh):
        hx = hused[u]
        m = hcnt[hx]
        hcnt[hx] = 0
        if spread:
            ha = hx >> 9
            hb = hx & 511
            a0, a1, a2, a3, a4 = _unpack(aht[ha, 0], aht[ha, 1], aht[ha, 2])
            b0, b1, b2, b3, b4 = _unpack(bht[hb, 0], bht[hb, 1], bht[hb, 2])
            a0, a1, a2, a3, a4 = _m5(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4)
        else:
            a0, a1, a2, a3, a4 = _unpack(hit[hx, 0], hit[hx, 1], hit[hx, 2])
        z0 += m * a0
        z1 += m * a1
        z2 += m * a2
        z3 += m * a3
        z4 += m * a4
    s[r, 0] += z0
    s[r, 1] += z1
    s[r, 2] += z2
    s[r, 3] += z3
    s[r, 4] += z4


@numba.njit(cache=True, nogil=True)
def _chunk(bv, bc, brw, nk, off, sp, pd, ones, b, lanes, nl, hit, lot, aht, bht, a1t, b0t, packed, p_x,
           p_fb, kx, ke, kend, facf, p_t, qf, rf, hl, fv, w, th, g, p, acc, xl, e, term, pr,
           be, f, af, tv, s):
    """A chunk's terms (the first nk of bv, counts bc, rows brw; all on or all off the grid)
    added into s: `_block5` per B of them (the last block padded with copies of the last
    term, count 0), or `_term1` each; ones: the counts past nk are set back to 1."""
    if lanes:
        nend = -(-nk // B) * B
        for ln in range(nk, nend):
            bv[ln] = bv[nk - 1]
            bc[ln] = 0
            brw[ln] = brw[nk - 1]
        _block5(bv, bc, brw, nk, off, sp, pd, b, packed[0], packed[1], packed[2], packed[3],
                packed[4], packed[5], p_x, p_fb, p_t, facf, qf, rf, hl, fv, w, term, acc, s)
        if ones:
            for ln in range(nk, nend):
                bc[ln] = 1
        return
    for k in range(nk):
        r = brw[k]
        _term1(bv[k], b[r] * TWO31, sp, pd, nl, hit, lot, aht, bht, a1t, b0t, p_x, p_fb, kx,
               ke, kend, facf, p_t, qf, rf, th, g, p, acc, xl, e, term, pr, be, f, af, tv)
        m = bc[k]
        for q in range(nl):
            s[r, q] += m * tv[q]
