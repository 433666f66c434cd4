"""Stochastic rounding: exact in the mean (statistical tests with fixed seeds and stated
tolerances, which a bias fails), one ulp at most, reproducible bytes whatever the chunking,
row order or worker count, and independent of the other roundings."""
import numpy as np
import pytest
from tolerances import SR_MEAN_SIGMAS

from precision_lab import FORMATS, METHODS, Arithmetic, evaluate, get_format
from precision_lab.analysis.cells import evaluate_cell
from precision_lab.numerics.bounds import bhh_bound
from precision_lab.numerics.stochastic import random_bits, round_stochastic, uniform53
from precision_lab.running.sweep import run_cells

N = 40_000


def sr_mean_within(values, exact, ulp):
    frac = (exact - np.floor(exact / ulp) * ulp) / ulp
    sigma = ulp * np.sqrt(frac * (1 - frac) / values.size)
    return abs(values.mean() - exact) <= SR_MEAN_SIGMAS * sigma + 1e-300


@pytest.mark.parametrize("name,x", [("float16", 1 + 0.3 * 2 ** -10), ("float16", -3.7e-6),
                                    ("bfloat16", 1000.1), ("float8_e4m3fn", 0.3),
                                    ("float8_e5m2", -7.1), ("p5_emin-14_emax15", 2.2),
                                    ("p30_emin-126_emax127", np.pi)])
def test_stochastic_rounding_is_exact_in_the_mean(name, x):
    f = get_format(name)
    ar = Arithmetic(get_format(f"{name},round=sr,seed=11"))
    out = ar.round(np.full((1, N), x))  # N columns: N independent draws
    lo = f.round(x)
    ulp = float(f.ulp(x))
    a = float(np.floor(x / ulp) * ulp)
    hi = a + ulp
    assert set(np.unique(out)) <= {a, hi}  # one of the two neighbours, never further
    assert sr_mean_within(out, x, ulp)
    # round to nearest, by contrast, is biased by up to half an ulp: the test can tell
    assert not sr_mean_within(np.full(N, lo), x, ulp)


def test_probability_is_the_fraction_exactly():
    """The rounding-up test compares a 53-bit uniform with the fraction: for uniform bits
    k = 0 .. 2**53 - 1 the share of k with k 2**-53 < frac is frac itself."""
    f = FORMATS["float16"]
    x = np.array([1 + 2 ** -10 * 0.25])  # frac = 1/4 exactly
    k = np.array([0, 2 ** 51 - 1, 2 ** 51, 2 ** 53 - 1], dtype=np.uint64) << np.uint64(11)
    up = round_stochastic(np.repeat(x, 4), f, k) > 1
    assert up.tolist() == [True, True, False, False]
    assert uniform53(np.array([2 ** 64 - 1], dtype=np.uint64))[0] == 1 - 2 ** -53


def test_exact_values_nan_inf_and_signed_zero():
    f = get_format("float16_sr")
    ar = Arithmetic(f)
    v = np.array([[1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0]])
    out = ar.round(v)
    assert np.array_equal(out[0, :6], v[0, :6]) and np.isnan(out[0, 6]) and out[0, 7] == 65504
    assert np.signbit(out[0, 3])
    tiny = ar.round(np.full((1, 2000), -2.0 ** -26))  # a quarter of the smallest subnormal
    assert set(np.unique(tiny)) <= {0.0, -2.0 ** -24} and np.signbit(tiny).all()
    # past max_finite: overflows with the probability of rounding up to 2**16
    big = ar.round(np.full((1, N), 65504 + 0.25 * 32))
    share = np.isinf(big).mean()
    assert abs(share - 0.25) <= SR_MEAN_SIGMAS * np.sqrt(0.25 * 0.75 / N)
    e4 = Arithmetic(get_format("float8_e4m3fn,round=sr")).round(np.full((1, 1000), 456.0))
    assert set(np.unique(e4[~np.isnan(e4)])) == {448.0} and np.isnan(e4).any()


def test_sum_is_exact_in_the_mean_where_round_to_nearest_stalls():
    """4096 terms of 1 in float16: a sum in round to nearest stalls at 2048 (2048 + 1 is a tie
    that goes to even); the stochastically rounded sum is unbiased: over 300 rows (each with
    its own first term, so its own random bits) the mean error lies within SR_MEAN_SIGMAS
    standard errors of 0."""
    v = np.ones((300, 4096))
    v[:, 0] = 1 + np.arange(300) * 2.0 ** -10
    exact = v.sum(axis=1)  # exact in float64
    rn = Arithmetic(FORMATS["float16"]).sum(v)
    assert (rn == 2048.0).all()
    err = Arithmetic(get_format("float16,round=sr,seed=4")).sum(v) - exact
    se = err.std(ddof=1) / np.sqrt(len(err))
    assert abs(err.mean()) <= SR_MEAN_SIGMAS * se and se > 0
    assert np.abs(err).max() < 0.05 * 4096  # no stall: every row within 5% of its sum


def test_working_sr_accumulator_rounds_only_the_sums_stochastically():
    f = FORMATS["float16"]
    ar = Arithmetic(f, "working_sr")
    assert ar.acc_fmt.name == "float16_sr" and ar.fmt.rounding == "nearest"
    v = np.full((3, 4096), 1.0)
    assert (ar.sum(v) > 2048).all()
    assert ar.add(np.array([1.0]), np.array([2 ** -11]))[0] == 1.0  # ops: nearest
    f32 = Arithmetic(f, "float32_sr")
    assert f32.acc_fmt.name == "float32_sr"


def test_same_seed_same_bytes_whatever_chunking_or_row_order():
    rng = np.random.default_rng(5)
    x = get_format("float16").round(rng.standard_normal((12, 50)) * 4)
    t = rng.integers(0, 50, 12)
    f = get_format("float16,round=sr,seed=9")
    for m in ("logsumexp", "naive", "online", "log1p"):
        whole = METHODS[m](x, t, f)
        halves = np.concatenate([METHODS[m](x[:5], t[:5], f), METHODS[m](x[5:], t[5:], f)])
        order = np.random.default_rng(1).permutation(12)
        permuted = METHODS[m](x[order], t[order], f)
        assert whole.tobytes() == halves.tobytes()
        assert whole[order].tobytes() == permuted.tobytes()
        assert whole.tobytes() == METHODS[m](x, t, f).tobytes()
    other = METHODS["logsumexp"](x, t, get_format("float16,round=sr,seed=10"))
    assert other.tobytes() != METHODS["logsumexp"](x, t, f).tobytes()


def test_same_bytes_whatever_the_workers(tmp_path):
    cells = [{"distribution": "normal", "rows": 4, "classes": 20, "scale": s, "seed": 0,
              "formats": ["float16_sr3", "p6_emin-14_emax15_sr"], "methods": ["logsumexp"]}
             for s in (1.0, 10.0)]
    one = run_cells(cells, evaluate_cell, workers=1, quiet=True)
    two = run_cells(cells, evaluate_cell, workers=2, quiet=True)
    assert one.to_csv().encode() == two.to_csv().encode()


def test_random_bits_depend_on_every_key():
    x = np.full((2, 3), 1.5)
    base = random_bits(1, 2, np.arange(3), x)
    assert (base[0] == base[1]).all()  # the same value, column and stream: the same bits
    assert len(set(base[0].tolist())) == 3  # columns differ
    assert (random_bits(2, 2, np.arange(3), x) != base).all()
    assert (random_bits(1, 3, np.arange(3), x) != base).all()
    assert (random_bits(1, 2, np.arange(3), x + 1) != base).all()
    bits = random_bits(0, 0, np.arange(N), np.zeros(N))
    u = uniform53(bits)
    assert abs(u.mean() - 0.5) <= SR_MEAN_SIGMAS * np.sqrt(1 / 12 / N)
    ones = np.unpackbits(bits.view(np.uint8)).mean()
    assert abs(ones - 0.5) <= SR_MEAN_SIGMAS * np.sqrt(0.25 / (64 * N))


def test_evaluate_runs_stochastic_and_custom_formats_and_bound_uses_two_u():
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((6, 30)) * 3, rng.integers(0, 30, 6)
    df = evaluate(x, t, formats=["float16_sr", "p9_emin-30_emax31"], cache=False)
    assert set(df["format"]) == {"float16_sr", "p9_emin-30_emax31"}
    assert "torch" not in set(df["method"])
    assert get_format("float16_sr").max_rel_error == 2 * FORMATS["float16"].unit_roundoff


def test_bound_holds_for_stochastic_sums_and_operations():
    rng = np.random.default_rng(8)
    x = get_format("bfloat16").round(rng.standard_normal((40, 300)) * 2)
    t = rng.integers(0, 300, 40)
    df = evaluate(x, t, formats=["bfloat16", "bfloat16_sr"], methods=["log1p", "logsumexp"],
                  accumulators=("working", "working_sr"), mean=False, cache=False)
    n = 0
    for (fmt, m, a), g in df.groupby(["format", "method", "accumulator"]):
        b = bhh_bound(x, t, fmt, a, "log1p" if m == "log1p" else "shifted")
        assert (g["abs_err"].to_numpy() <= b).all(), (fmt, m, a)
        n += 1
    assert n == 6  # bfloat16: working, working_sr; bfloat16_sr: working (already stochastic)
