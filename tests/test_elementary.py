"""Correctly rounded exp, log, log1p (numerics.elementary): against mpmath and exact rationals,
on adversarial inputs, every format's overflow and underflow edge, hypothesis samples,
exhaustively for float16, and bit-identical across numpy's CPU dispatch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy._core import _multiarray_umath as umath
from tolerances import ELEMENTARY_BOUND_MARGIN

from precision_lab.errors import InputError
from precision_lab.numerics import elementary as el
from precision_lab.numerics.arithmetic import Arithmetic, elementary_variant
from precision_lab.numerics.formats import FORMATS


@dataclass(frozen=True)
class Custom:
    """A format given only by (precision, emin, emax): all the module may rely on."""
    name: str
    precision: int
    emin: int
    emax: int

    @property
    def max_finite(self) -> float:
        return (2.0 - 2.0 ** (1 - self.precision)) * 2.0 ** self.emax


ALL = [*FORMATS.values(), Custom("e4m3-like", 4, -6, 8), Custom("p3", 3, -4, 5),
       Custom("e5m2-like", 3, -14, 15)]
IDS = [f.name for f in ALL]
NAMES = ("exp", "log", "log1p", "expm1", "tanh")


def bits(v) -> np.ndarray:
    """Bit patterns, every nan the same."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.isnan(v), np.nan, v).view(np.uint64)


def _ulps(x, k=3):
    """x and its k float64 neighbours on each side."""
    x = np.asarray(x, dtype=np.float64)
    out = [x]
    up, down = x, x
    for _ in range(k):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
        out += [up, down]
    return np.concatenate(out)


def adversarial(name: str, seed: int = 0) -> np.ndarray:
    """Inputs where the evaluations are weakest or the rounding hardest."""
    rng = np.random.default_rng(seed)
    pow2 = 2.0 ** -np.arange(1, 1075, 7.0)
    if name == "exp":
        n = rng.integers(-2_200_000, 2_000_000, 200)
        edges = (n + 0.5) * (np.log(2) / 2048)           # argument-reduction boundaries
        parts = [rng.uniform(-746, 710, 2000), pow2, -pow2, _ulps(edges, 1),
                 _ulps([709.782712893384, -745.1332191019411, -708.3964185322641], 2),
                 -(2.0 ** -54) * (1 + np.arange(1, 20) * 2.0 ** -52),     # hard: near 1 - 2^-54
                 2.0 ** -53 * (1 + np.arange(1, 20) * 2.0 ** -52)]
    elif name == "log":
        k = np.arange(1.0, 60.0)
        mids = (np.arange(362, 724) + 0.5) / 512                          # table boundaries
        parts = [np.exp(rng.uniform(-744, 709, 2000)), 1 + k * 2.0 ** -52, 1 - k * 2.0 ** -53,
                 1 + pow2[:8], 1 - pow2[:8], _ulps(mids, 1),
                 _ulps(mids * 2.0 ** rng.integers(-1000, 1000, mids.size), 1),
                 _ulps([np.sqrt(0.5), np.sqrt(2.0)], 2), 2.0 ** -1074 * np.arange(1, 40),
                 rng.uniform(0, 2.0 ** -1022, 200), [np.finfo(np.float64).max, 2.0 ** -1022]]
    elif name == "expm1":
        parts = [pow2, -pow2, _ulps([2.0 ** -9.5, -(2.0 ** -9.5), 2.0 ** -60, -(2.0 ** -60)], 2),
                 rng.uniform(-746, 710, 1500), rng.uniform(-0.01, 0.01, 1000),
                 _ulps([709.782712893384, -745.1332191019411, 0.693147180559945], 2)]
    elif name == "tanh":
        parts = [pow2, -pow2, _ulps([2.0 ** -10.5, -(2.0 ** -10.5), 2.0 ** -30, 19.0615], 2),
                 rng.uniform(-45, 45, 1500), rng.uniform(-0.01, 0.01, 1000),
                 _ulps([40.0, -40.0, 0.5493061443340549], 2)]
    else:
        parts = [pow2, -pow2, _ulps([2.0 ** -9.5, -(2.0 ** -9.5), 2.0 ** -67, -(2.0 ** -67)], 2),
                 -1 + np.arange(1, 40) * 2.0 ** -53, -1 + 2.0 ** -np.arange(1.0, 53.0),
                 np.exp(rng.uniform(-40, 709, 1500)), rng.uniform(-1, 1, 1500),
                 [np.finfo(np.float64).max, 2.0 ** 53, 2.0 ** 53 + 2]]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def _dd(name, x):
    """(hi, lo, k, bound): the double-double (hi + lo) 2**k and its relative error bound."""
    if name == "exp":
        return (*el._exp_dd(x), el.BOUNDS[name])
    zero = np.zeros(x.shape, dtype=np.int64)
    if name in ("expm1", "tanh"):
        hi, lo, bound = el._expm1_dd(x) if name == "expm1" else el._tanh_dd(x)
        return hi, lo, zero, bound
    hi, lo = el._log_dd(x) if name == "log" else el._log1p_dd(x)
    return hi, lo, zero, el.BOUNDS[name]


@pytest.mark.parametrize("name", NAMES)
def test_double_double_error_within_bound(name):
    """The accuracy argument: the double-double is within BOUNDS / margin of the truth."""
    x = adversarial(name, seed=1)
    x = x[~el._specials(name, x)[0]]
    with np.errstate(all="ignore"):
        hi, lo, k, bound = _dd(name, x)
    bound = np.broadcast_to(bound, x.shape)
    fn = {"exp": mpmath.exp, "log": mpmath.log, "log1p": mpmath.log1p, "expm1": mpmath.expm1,
          "tanh": mpmath.tanh}[name]
    worst = mpmath.mpf(0)
    with mpmath.workprec(300):
        for xi, h, lw, ki, b in zip(x.tolist(), hi.tolist(), lo.tolist(), k.tolist(),
                                    bound.tolist()):
            t = fn(mpmath.mpf(xi))
            got = (mpmath.mpf(h) + mpmath.mpf(lw)) * mpmath.ldexp(1, int(ki))
            worst = max(worst, abs(got - t) / abs(t) / b)
    assert worst <= 1.0 / ELEMENTARY_BOUND_MARGIN, (name, float(worst))


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
@pytest.mark.parametrize("name", NAMES)
def test_matches_mpmath_on_adversarial_inputs(name, fmt):
    x = adversarial(name)[::3]
    got, _ = el.compute(name, x, fmt)
    assert np.array_equal(bits(got), bits(el.reference(name, x, fmt)))


def test_hard_cases_are_settled_by_arb():
    """exp(x) for x near -2**-54 lies within 2**-105 of the float64 midpoint 1 - 2**-54: the
    double-double cannot decide; arb does, and both sides of the midpoint occur."""
    f64 = FORMATS["float64"]
    x = np.concatenate([[-(2.0 ** -54)], -(2.0 ** -54) * (1 + np.arange(1, 9) * 2.0 ** -52)])
    got, settled = el.compute("exp", x, f64)
    assert settled == x.size
    assert np.array_equal(got, el.reference("exp", x, f64))
    assert set(got.tolist()) == {1.0, 1.0 - 2.0 ** -53}
    # a 3-bit format: log(x) for x = the float64 nearest exp(midpoint) is always ambiguous
    p3 = Custom("p3", 3, -4, 5)
    mids = np.array([1.125, 1.375, 1.625, 2.25, 2.75])      # midpoints of the p=3 grid
    xs = np.exp(mids)
    got, settled = el.compute("log", xs, p3)
    assert settled == xs.size
    assert np.array_equal(got, el.reference("log", xs, p3))


def _threshold(fmt, which: str) -> float:
    """The float64 nearest the x where exp(x) crosses the format's overflow midpoint
    (max_finite + half an ulp) or its underflow midpoint (half the smallest subnormal)."""
    with mpmath.workprec(200):
        if which == "over":
            m = mpmath.mpf(fmt.max_finite) + mpmath.ldexp(1, fmt.emax - fmt.precision)
        else:
            m = mpmath.ldexp(1, fmt.emin - fmt.precision)
        return float(mpmath.log(m))


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_exp_overflow_and_underflow_edges(fmt):
    for which in ("over", "under"):
        x = np.sort(_ulps([_threshold(fmt, which)], 4))
        got = el.exp(x, fmt)
        assert np.array_equal(bits(got), bits(el.reference("exp", x, fmt)))
        if which == "over":
            assert np.isfinite(got[0]) and got[-1] == np.inf
            # below the edge exp(x) rounds to max_finite (float64's x-steps are coarser there)
            assert fmt.precision == 53 or got[0] == fmt.max_finite
        else:
            tiny = 2.0 ** (fmt.emin - fmt.precision + 1)
            assert got[0] == 0.0 and got[-1] == tiny


@pytest.mark.parametrize("fmt", [FORMATS["float16"], FORMATS["float64"]], ids=["f16", "f64"])
def test_specials(fmt):
    inf, nan = np.inf, np.nan
    cases = {"exp": ([nan, inf, -inf, 0.0, -0.0, 711.0, -747.0, 1e308, -1e308],
                     [nan, inf, 0.0, 1.0, 1.0, inf, 0.0, inf, 0.0]),
             "log": ([nan, inf, -inf, 0.0, -0.0, -1.0, 1.0, -1e-300],
                     [nan, inf, nan, -inf, -inf, nan, 0.0, nan]),
             "log1p": ([nan, inf, -inf, 0.0, -0.0, -1.0, -2.0, -1.0 - 2.0 ** -52],
                       [nan, inf, nan, 0.0, -0.0, -inf, nan, nan]),
             "expm1": ([nan, inf, -inf, 0.0, -0.0, 711.0, -747.0, -1e308],
                       [nan, inf, -1.0, 0.0, -0.0, inf, -1.0, -1.0]),
             "tanh": ([nan, inf, -inf, 0.0, -0.0, 40.0, -1e308], [nan, 1.0, -1.0, 0.0, -0.0, 1.0, -1.0])}
    for name, (x, want) in cases.items():
        got = el.compute(name, np.array(x), fmt)[0]
        assert np.array_equal(bits(got), bits(want)), name
    assert np.signbit(el.log1p(np.array([-0.0]), fmt)[0])
    # a negative result that underflows keeps its sign
    assert np.signbit(el.log1p(np.array([-(2.0 ** -40)]), FORMATS["float16"])[0])


def test_rejects_formats_not_carried_in_float64():
    with pytest.raises(InputError, match="not carried in float64"):
        el.exp(np.array([1.0]), Custom("wide", 64, -16382, 16383))
    with pytest.raises(InputError, match="unknown elementary"):
        el.compute("sin", np.array([1.0]), FORMATS["float32"])


_f64 = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=40, deadline=None)
@given(x=st.lists(st.floats(-750, 750), min_size=1, max_size=8),
       fi=st.integers(0, len(ALL) - 1))
def test_exp_property(x, fi):
    x = np.array(x)
    assert np.array_equal(bits(el.exp(x, ALL[fi])), bits(el.reference("exp", x, ALL[fi])))


@settings(max_examples=40, deadline=None)
@given(x=st.lists(_f64.filter(lambda v: v > 0), min_size=1, max_size=8),
       fi=st.integers(0, len(ALL) - 1))
def test_log_property(x, fi):
    x = np.array(x)
    assert np.array_equal(bits(el.log(x, ALL[fi])), bits(el.reference("log", x, ALL[fi])))


@settings(max_examples=40, deadline=None)
@given(x=st.lists(_f64.filter(lambda v: v > -1), min_size=1, max_size=8),
       fi=st.integers(0, len(ALL) - 1))
def test_log1p_property(x, fi):
    x = np.array(x)
    assert np.array_equal(bits(el.log1p(x, ALL[fi])), bits(el.reference("log1p", x, ALL[fi])))


@settings(max_examples=40, deadline=None)
@given(x=st.lists(st.floats(-800, 800), min_size=1, max_size=8),
       fi=st.integers(0, len(ALL) - 1), name=st.sampled_from(["expm1", "tanh"]))
def test_expm1_tanh_property(x, fi, name):
    x = np.array(x)
    assert np.array_equal(bits(el.compute(name, x, ALL[fi])[0]),
                          bits(el.reference(name, x, ALL[fi])))


@pytest.mark.parametrize("name", NAMES)
def test_exhaustive_float16(name):
    """Every finite float16 input, rounded into float16. Independent check: numpy's float64
    libm (within an ulp or two of float64) rounded once gives the same float16 wherever it is
    not within 2**-48 (relative) of a float16 midpoint; the few others against mpmath."""
    f16 = FORMATS["float16"]
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    x = x[np.isfinite(x)]
    got = el.compute(name, x, f16)[0]
    with np.errstate(all="ignore"):
        libm = getattr(np, name)(x)
        r = f16.round(libm)
        near = ((bits(f16.round(libm * (1 + 2.0 ** -48))) != bits(r))
                | (bits(f16.round(libm * (1 - 2.0 ** -48))) != bits(r)))
    assert np.array_equal(bits(got[~near]), bits(r[~near]))
    assert near.sum() < x.size // 100
    assert np.array_equal(bits(got[near]), bits(el.reference(name, x[near], f16)))


def test_arithmetic_uses_the_correctly_rounded_functions():
    f64 = FORMATS["float64"]
    x = -(2.0 ** -54) * (1 + np.arange(1, 9) * 2.0 ** -52)     # where libm may be wrong
    assert Arithmetic(f64).elementary == "correct"
    assert np.array_equal(Arithmetic(f64).exp(x), el.exp(x, f64))
    assert np.array_equal(Arithmetic(f64, elementary="libm").exp(x), np.exp(x))
    with elementary_variant("mpmath"):
        assert Arithmetic(f64).elementary == "mpmath"
    with pytest.raises(InputError, match="elementary variant"):
        Arithmetic(f64, elementary="fast")


# --- the same results frame on every CPU -------------------------------------------------------

def frame_hashes(variant: str) -> dict:
    """SHA-256 of evaluate(...) frames (every method but torch, every format) and of a sweep
    cell's aggregate (with the BHH bound and lse_median), with the elementary `variant`; and of
    numpy's own float64 exp on a grid (to tell whether the kernels differ)."""
    import hashlib

    from precision_lab.analysis.cells import evaluate_cell
    from precision_lab.analysis.evaluate import evaluate
    from precision_lab.numerics.methods import METHODS
    rng = np.random.default_rng(7)
    x = rng.normal(0, 12, (4, 24))
    x[0, :5] = [90.0, -90.0, 11.5, 88.7, -700.0]
    t = rng.integers(0, 24, 4)
    v = rng.uniform(-30, 30, 256)          # two-class rows: the loss follows exp's last bits
    x2, t2 = np.stack([np.zeros(256), v], axis=1), np.ones(256, dtype=np.int64)
    cell = {"distribution": "normal", "rows": 3, "classes": 50, "scale": 30.0, "seed": 3,
            "methods": ["naive", "logsumexp", "log1p"]}
    methods = [m for m in METHODS if m != "torch"]
    with elementary_variant(variant):
        frames = [evaluate(x, t, methods=methods, cache=False),
                  evaluate(x2, t2, formats=["float64"], methods=methods, cache=False)]
        agg = evaluate_cell(cell)
    with np.errstate(over="ignore"):
        libm = np.exp(np.linspace(-700, 700, 100001))
    return {"frame": hashlib.sha256("".join(f.to_csv() for f in frames).encode()).hexdigest(),
            "cell": hashlib.sha256(agg.to_csv().encode()).hexdigest(),
            "numpy_exp": hashlib.sha256(libm.tobytes()).hexdigest(),
            "dispatch": [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]}


def test_results_frame_identical_across_cpu_dispatch_and_pure_python():
    """evaluate(...) and a sweep cell with numpy's SIMD dispatch as found, in a subprocess with
    every dispatched feature disabled (NPY_DISABLE_CPU_FEATURES: baseline kernels only), and
    with the pure-Python (mpmath) elementary path: the same bytes, where numpy's own float64
    exp differs between the first two (skipped, after the comparison, where it does not)."""
    full = frame_hashes("correct")
    assert frame_hashes("mpmath") == full
    if not full["dispatch"]:
        pytest.skip("no dispatched CPU features here: only the mpmath path was compared")
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.abspath(el.__file__)))
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(full["dispatch"]),
           "PRECISION_LAB_CACHE": "off",
           "PYTHONPATH": os.pathsep.join([here, os.path.dirname(root),
                                          os.environ.get("PYTHONPATH", "")])}
    code = "import json, test_elementary as m; print(json.dumps(m.frame_hashes('correct')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    base = json.loads(out.stdout.strip().splitlines()[-1])
    assert base["dispatch"] == []
    assert (base["frame"], base["cell"]) == (full["frame"], full["cell"])
    if base["numpy_exp"] == full["numpy_exp"]:
        pytest.skip("numpy's exp is the same with and without its dispatched kernels here: the "
                    "comparison above could not have failed through them")
