"""The compiled per-logit sums (`fastref_kernels`, `fastref.USE_KERNEL`) against the numpy path
they mirror (`fastref._term_sums`): the same limbs, the same radii, the same double-doubles,
bit for bit, on every route (formats, wide and short rows, masked classes, target-is-max
rows, off-grid float64 logits, tiny and huge scales, rows that go to `arb`)."""
import numpy as np
import pytest

from precision_lab.numerics.formats import get_format
from precision_lab.truth import fastref
from precision_lab.truth import fastref_kernels as fk


def _run(monkeypatch, x, t, kernel, bits=100):
    monkeypatch.setattr(fastref, "USE_KERNEL", kernel)
    return fastref.certified_losses(np.asarray(x, dtype=np.float64), np.asarray(t), bits,
                                    1 << 15)


def _same(a, b):
    assert np.array_equal(a.kind, b.kind)
    assert np.array_equal(a.block, b.block) and np.array_equal(a.pos, b.pos)
    assert len(a.blocks) == len(b.blocks)
    for (v1, k1, f1, r1), (v2, k2, f2, r2) in zip(a.blocks, b.blocks):
        assert f1 == f2
        assert np.array_equal(v1, v2) and np.array_equal(k1, k2)
        assert np.array_equal(r1.view(np.uint64), r2.view(np.uint64))   # radii, bit for bit
    assert a.balls.keys() == b.balls.keys()
    for i in a.balls:
        assert a.balls[i].mid() == b.balls[i].mid() and a.balls[i].rad() == b.balls[i].rad()
    h1, l1 = a.double_double()
    h2, l2 = b.double_double()
    assert np.array_equal(h1.view(np.uint64), h2.view(np.uint64))
    assert np.array_equal(l1.view(np.uint64), l2.view(np.uint64))


def _check(monkeypatch, x, t, bits=100):
    a = _run(monkeypatch, x, t, False, bits)
    b = _run(monkeypatch, x, t, True, bits)
    _same(a, b)
    return b


FORMATS = ["float16", "bfloat16", "float32", "float64", "float8_e5m2", "float8_e4m3fn"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(40, 10), (6, 1000), (2, 40000)])
def test_random_rows_every_format(monkeypatch, fmt, shape):
    rng = np.random.default_rng([11, *shape, FORMATS.index(fmt)])
    n, c = shape
    for scale in (1e-3, 1.0, 10.0, 300.0):
        x = get_format(fmt).round(scale * rng.standard_normal((n, c)))
        t = rng.integers(0, c, n)
        _check(monkeypatch, x, t)


def test_masked_classes_and_target_is_max(monkeypatch):
    rng = np.random.default_rng(5)
    for c in (12, 3000, 33000):
        n = 8
        x = get_format("bfloat16").round(3 * rng.standard_normal((n, c)))
        x[rng.random((n, c)) < 0.3] = -np.inf          # masked classes
        t = rng.integers(0, c, n)
        x[0, t[0]] = np.inf * -1                         # masked target: +inf loss
        mx = np.nanmax(np.where(np.isfinite(x), x, -np.inf), axis=1)
        x[1:4, t[1:4]] = mx[1:4] + 0.5                   # target is the maximum
        x[4, t[4]] = mx[4]                               # target ties the maximum
        x[5] = -np.inf
        x[5, t[5]] = 1.0                                 # the target is the only live class
        _check(monkeypatch, x, t)


def test_short_rows_all_kept_whole_row_chunks(monkeypatch):
    rng = np.random.default_rng(6)
    for fmt in ("float16", "float32", "float64"):
        x = get_format(fmt).round(2 * rng.standard_normal((5000, 7)))
        t = rng.integers(0, 7, 5000)
        x[::3, 0] = 50.0
        t[::3] = 0                                        # target is the maximum
        _check(monkeypatch, x, t)


def test_off_grid_float64_and_edge_values(monkeypatch):
    rng = np.random.default_rng(7)
    c = 64
    x = rng.standard_normal((30, c))
    x[0, :8] = [-1e-12, -2.0 ** -40, -5e-324, 0.0, -0.0, 2.0 ** -33, -2.0 ** -32, 1e-300]
    x[1] = rng.standard_normal(c) * 1e-9              # all tiny: every logit off the grid
    x[2] = np.round(rng.standard_normal(c) * 2 ** 20) / 2 ** 20   # on the grid
    x[3] = -rng.random(c) * 2e-10                     # tiny negatives
    t = rng.integers(0, c, 30)
    _check(monkeypatch, x, t)


def test_huge_and_small_scales_and_arb_rows(monkeypatch):
    rng = np.random.default_rng(8)
    c = 300
    x = rng.standard_normal((12, c))
    x[0] *= 1e4
    x[1] *= 1e-7
    x[2] += 2.0 ** 41                                 # |lead| >= 2**40: the arb path
    x[3, 5] = 2.0 ** 45
    x[4] = x[4] * 1e3 + 1e12
    x[5, :] = 7.25                                    # all equal
    x[6, :150] = 1e6                                  # a wide gap
    t = rng.integers(0, c, 12)
    t[6] = 3                                          # target is the maximum, gap 1e6
    _check(monkeypatch, x, t)


def test_more_limbs_generic_multiplication(monkeypatch):
    """bits = 200 (nl = 10): the kernel's general `_mul`, not the nl = 5 one."""
    rng = np.random.default_rng(9)
    for fmt in ("bfloat16", "float32", "float64"):
        x = get_format(fmt).round(3 * rng.standard_normal((4, 5000)))
        t = rng.integers(0, 5000, 4)
        x[0, t[0]] = 20.0
        _check(monkeypatch, x, t, bits=200)


def test_bounds_are_the_numpy_paths():
    """`_term_bounds` (shape tables) returns what `_terms` returns on the real tables."""
    tab = fastref._fix_tables(5)
    tab.ensure_hi(fastref.HI_SPREAD + 1)
    kx = -(-(tab.fb - fastref.GRID) // fastref.R)
    for spread in (False, True):
        for prod in (False, True):
            for offs in (0, 1, 4):
                h = np.full(4, fastref.HI_SPREAD if spread else 3, dtype=np.int64)
                l = np.full(4, 5 if prod else 0, dtype=np.int64)
                off = np.arange(offs)
                xl = np.zeros((kx, offs), dtype=np.int64) if offs else None
                xf = np.zeros(offs) if offs else None
                _, b1, b2 = fastref._terms(tab, h, l, xl, xf, off)
                assert fastref._term_bounds(5, spread, offs == 4, prod, offs > 0) == (b1, b2)


@pytest.mark.parametrize("bits_cache", [0, 3, 14])
def test_value_cache_any_size(monkeypatch, bits_cache):
    """The per-row value cache (on, tiny so that slots collide and spill, or off) changes
    nothing: equal values of a chunk share one term, the integer sums are exact."""
    monkeypatch.setattr(fastref, "_cache_bits", lambda xr: bits_cache)
    rng = np.random.default_rng(10)
    for fmt in ("bfloat16", "float16", "float32", "float64", "float8_e4m3fn"):
        x = get_format(fmt).round(3 * rng.standard_normal((5, 34000)))
        t = rng.integers(0, 34000, 5)
        x[0, t[0]] = 40.0
        x[1, ::7] = -np.inf
        _check(monkeypatch, x, t)
        y = get_format(fmt).round(2 * rng.standard_normal((300, 9)))
        _check(monkeypatch, y, rng.integers(0, 9, 300))


@pytest.mark.parametrize("cache", [0, 3, 14])
def test_histogram_by_h_every_format(monkeypatch, cache):
    """The per-row count of on-grid l = 0 logits by h (`fastref_kernels._hist`) forced on for
    every format, with the value cache off, tiny (colliding) or on: the same limbs and radii
    as the numpy path, on wide rows crossing chunk boundaries mid-row (C = 34000 > ECHUNK),
    spread and non-spread chunks (scales 0.5 and 30), masked classes, target = max, and
    lists that fill up (C = 600 with the whole-rows chunking, every logit kept, and
    without)."""
    monkeypatch.setattr(fastref, "_cache_bits", lambda xr: cache)
    monkeypatch.setattr(fastref, "_hist_size",
                        lambda xr, hmax, packed: int(hmax.max()) + 1 if hmax.size else 0)
    rng = np.random.default_rng([15, cache])
    for fmt in ("bfloat16", "float16", "float32", "float64", "float8_e5m2"):
        for scale, shape, mask in ((0.5, (3, 34000), True), (30.0, (3, 34000), True),
                                   (2.0, (70, 600), True), (2.0, (70, 600), False)):
            x = get_format(fmt).round(scale * rng.standard_normal(shape))
            t = rng.integers(0, shape[1], shape[0])
            x[0, t[0]] = np.max(x[0]) + 2.0               # target is the maximum
            if mask:                                      # (else: whole-row chunks)
                x[1, ::5] = -np.inf                       # masked classes
            _check(monkeypatch, x, t)


def test_dedup_policy_by_significant_bits():
    """The cache for values of <= 8 significant bits, the histogram for 5 to 12, neither for
    float32 / float64 or short rows (`_sig_bits` of the first row)."""
    rng = np.random.default_rng(16)
    want = {"float8_e5m2": (3, True, False), "float8_e4m3fn": (4, True, False),
            "bfloat16": (8, True, True), "float16": (11, False, True),
            "float32": (24, False, False), "float64": (53, False, False)}
    tab = fastref._fix_tables(5)
    packed = fastref._kernel_tables(tab)[-1]
    for fmt, (bits, cache, hist) in want.items():
        x = get_format(fmt).round(3 * rng.standard_normal((2, 5000)))
        assert fastref._sig_bits(x) == bits
        assert (fastref._cache_bits(x) > 0) == cache
        assert (fastref._hist_size(x, np.array([7]), packed) == 8) == hist
        assert fastref._sig_bits(x[:, :100]) == 53


@pytest.mark.parametrize("fmt", ["float32", "float64", "bfloat16"])
def test_lane_blocks_tails_and_lists(monkeypatch, fmt):
    """`_block5`'s blocks of B lanes and `sums`'s lists of LIST terms: rows shorter than a block,
    rows and lists that end one short of, on, and one past a block or a list, blocks whose lanes
    span several rows (short rows), masked classes and a target that is the maximum."""
    rng = np.random.default_rng([12, FORMATS.index(fmt)])
    b, lst = fk.B, fk.LIST
    for c in (1, 2, b - 1, b, b + 1, lst - 1, lst, lst + 1, 3 * lst + b - 1):
        n = max(3, 2 * lst // c)
        x = get_format(fmt).round(2.0 * rng.standard_normal((n, c)))
        t = rng.integers(0, c, n)
        if c > 2:
            x[0, ::3] = -np.inf                           # masked classes
            t[0] = 1
            x[1, t[1]] = np.max(x[1]) + 1.0               # target is the maximum
        _check(monkeypatch, x, t)


def test_lane_blocks_tiny_negative_lanes(monkeypatch):
    """Off-grid float64 logits in [-2**-32, 0) (x_f = 2**-31 - |x|: `_tiny_fix`) in some lanes of a
    block and not others, at every lane position, in the chunked and the whole-rows paths."""
    rng = np.random.default_rng(13)
    for c in (40, 3000, 40000):
        n = 4
        x = rng.standard_normal((n, c))
        pos = rng.choice(c, size=min(c, 64), replace=False)
        x[0, pos] = -rng.random(pos.size) * 2.0 ** -32    # tiny negatives, scattered
        x[1, :c // 2] = -rng.random(c // 2) * 2.0 ** -33
        x[2, ::2] = -5e-324                               # subnormal, every other lane
        x[3, 0] = 9.0
        t = np.array([0, 1, 2, 0])                        # row 3: target is the maximum
        _check(monkeypatch, x, t)


def test_pack3_round_trip_and_refusal():
    """`pack3` keeps an entry's 5 limbs exactly (what `_unpack` reads back) and refuses a limb
    outside [0, 2**26) (the packed words would mix limbs)."""
    rng = np.random.default_rng(14)
    for dt in (np.int32, np.int64):
        t = rng.integers(0, 1 << 26, (300, 5)).astype(dt)
        t[0] = (1 << 26) - 1
        t[1] = 0
        out = np.zeros((300, 3), dtype=np.int64)
        assert fk.pack3(t, out)
        back = np.stack([out[:, 0] & fk.RMASK, out[:, 0] >> fk.R, out[:, 1] & fk.RMASK,
                         out[:, 1] >> fk.R, out[:, 2]], axis=1)
        assert np.array_equal(back, t.astype(np.int64))
        for bad in (-1, 1 << 26):
            t2 = t.copy()
            t2[7, 3] = bad
            assert not fk.pack3(t2, np.zeros((300, 3), dtype=np.int64))


def test_packed_tables_are_the_kernel_tables():
    """For nl = 5 `_kernel_tables` hands the kernels the packed tables (so the lane path runs),
    each the packing of its unpacked table, also after T_hi has grown; other nl: none."""
    tab = fastref._fix_tables(5)
    for nh in (100, 40000):
        tab.ensure_hi(nh)
        *tables, packed = fastref._kernel_tables(tab)
        assert len(packed) == 6
        for tb, pk in zip(tables, packed):
            assert pk.shape == (tb.shape[0], 3)
            t64 = tb.astype(np.int64)
            assert np.array_equal(pk[:, 0], t64[:, 0] | (t64[:, 1] << 26))
            assert np.array_equal(pk[:, 1], t64[:, 2] | (t64[:, 3] << 26))
            assert np.array_equal(pk[:, 2], t64[:, 4])
    *_, packed = fastref._kernel_tables(fastref._fix_tables(10))
    assert all(pk.shape[0] == 0 for pk in packed)


def _scan_by_definition(x, b, lead, tm, t, thr, echunk, step):
    """`scan`'s outputs from their definitions, in numpy (the oracle for the kernel)."""
    n, c = x.shape
    keep = (x - lead[:, None]) >= thr
    part = keep.copy()
    rows = np.flatnonzero(tm)
    part[rows, t[rows]] = False                        # the maximum's copy
    v = np.where(keep, x, lead[:, None])
    full_v = v.copy()
    full_v[rows, t[rows]] = lead[rows]                 # whole rows: the copy as the lead
    def grid(vals):
        xs = vals * 2.0 ** 31
        fl = np.floor(xs)
        d = (fl - (b * 2.0 ** 31)[:, None]).astype(np.int64)
        return xs != fl, -(d >> fk.LO_BITS), (d & fk.LMASK) != 0
    off, h, lz = grid(v)
    off_f, h_f, lz_f = grid(full_v)
    out = {"nkb": keep.sum(1), "nfin": (x != -np.inf).sum(1), "noff_p": (off & part).sum(1),
           "noff_f": (off_f & keep).sum(1)}
    flat = np.flatnonzero(part.ravel())
    ch = np.arange(flat.size) // echunk
    nch = -(-flat.size // echunk)
    for name, vals in (("c_m", np.ones(flat.size, np.int64)), ("c_off", off.ravel()[flat]),
                       ("c_nzl", lz.ravel()[flat])):
        out[name] = np.bincount(ch, vals.astype(np.int64), minlength=nch)
    out["c_hmax"] = np.array([max(0, h.ravel()[flat][ch == k].max()) for k in range(nch)],
                             dtype=np.int64)
    fc = np.arange(n) // step
    out["f_m"] = np.bincount(fc, keep.sum(1))
    out["f_off"] = np.bincount(fc, (off_f & keep).sum(1))
    out["f_nzl"] = np.bincount(fc, (lz_f & keep).sum(1))
    hf = np.where(keep, h_f, 0).max(1)
    out["f_hmax"] = np.array([max(0, hf[fc == k].max()) for k in range(fc.max() + 1)])
    return out, flat.size


@pytest.mark.parametrize("c, echunk", [(7, 16), (33, 16), (1000, 256), (5000, 1024)])
def test_scan_counts_by_definition(c, echunk):
    """`scan` (segments summed without a branch, the target's copy corrected afterwards)
    against its outputs computed from their definitions: rows with unkept and masked
    logits, the target the maximum or not, chunk boundaries inside rows and at their ends."""
    rng = np.random.default_rng(c)
    n = 40
    x = get_format("float32").round(rng.standard_normal((n, c)) * 3)
    x[::4] = np.round(x[::4] * 64) / 64                 # on the 2**-12 grid: l = 0
    x[1::4, ::3] = -np.inf                              # masked classes
    x[2::4, : c // 2] -= 60.0                           # unkept logits
    t = rng.integers(0, c, n)
    tm = np.zeros(n, dtype=bool)
    tm[::3] = True
    x[tm, t[tm]] = x[tm].max(1) + 0.25                  # target is the maximum
    a = x.max(1)
    lead = a.copy()
    for i in np.flatnonzero(tm):
        lead[i] = np.max(np.delete(x[i], t[i])) if c > 1 else -np.inf
    b = np.floor(lead * 4096.0) / 4096.0
    thr, step = -30.0, max(1, echunk // c)
    want, npos = _scan_by_definition(x, b, lead, tm, t, thr, echunk, step)
    got = {k: np.zeros(n, np.int64) for k in ("nkb", "nfin", "noff_p", "noff_f")}
    ncp = -(-(n * c) // echunk) + 1
    for k in ("c_m", "c_hmax", "c_off", "c_nzl"):
        got[k] = np.zeros(ncp, np.int64)
    for k in ("f_m", "f_hmax", "f_off", "f_nzl"):
        got[k] = np.zeros(-(-n // step), np.int64)
    order = ["nkb", "nfin", "noff_p", "noff_f", "c_m", "c_hmax", "c_off", "c_nzl", "f_m",
             "f_hmax", "f_off", "f_nzl"]
    with np.errstate(invalid="ignore"):
        assert fk.scan(x, b, lead, tm, t.astype(np.int64), thr, echunk, step, True,
                       *[got[k] for k in order]) == npos
    for k in order:
        g = got[k][:want[k].size] if k.startswith("c_") else got[k]
        assert np.array_equal(g, want[k]), k
