"""Property tests (hypothesis) of the ground truth and the methods, and the reference's refusal
to return an uncertified value.

Inputs are drawn per format and rounded into it, so every method sees values of its format and
the truth is that of the rounded inputs (as `evaluate` measures)."""
from __future__ import annotations

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp

from precision_lab.analysis.evaluate import evaluate, variants
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import METHODS
from precision_lab.truth import fastref, reference
from precision_lab.truth.reference import UncertifiedError, reference_loss, reference_truth

FMTS = list(FORMATS.values())
FMT_IDS = [f.name for f in FMTS]
PROPS = settings(max_examples=100, deadline=None, derandomize=True)
# Methods that compute a shifted log-sum-exp, so must stay finite when the loss is representable.
STABLE = ("logsumexp", "log1p", "log_softmax", "online", "torch")


@st.composite
def batches(draw, fmt, max_classes=40, scales=(1.0, 8.0, 30.0, 1e3, 1e6)):
    """One row of finite logits of `fmt` (float64 carrier) and its target."""
    c = draw(st.integers(1, max_classes))
    scale = draw(st.sampled_from([s for s in scales if s < fmt.max_finite / 4]))
    u = draw(st.lists(st.floats(-1.0, 1.0), min_size=c, max_size=c))
    x = fmt.round(np.array(u) * scale)[None, :]
    t = np.array([draw(st.integers(0, c - 1))])
    return x, t


def truth(x, t):
    tr = reference_truth(x, t, cache=False)
    return tr.hi, tr.lo


def computed(x, t, fmt):
    """{(method, accumulator): loss} for every method and accumulator that runs in `fmt`."""
    out = {}
    for m in METHODS.values():
        for acc in variants(m, fmt):
            out[m.name, acc] = m(x, t, fmt, acc if acc != "internal" else "working")
    return out


# ---------------------------------------------------------------------------------------------
# Shift invariance of the reference: x + c with x, c on the grid 2**-10, |x + c| < 2**41, so
# every shifted logit is exact in float64 and the true loss is unchanged.

@PROPS
@given(k=st.lists(st.integers(-2 ** 20, 2 ** 20), min_size=1, max_size=30),
       m=st.integers(-2 ** 40, 2 ** 40), data=st.data())
def test_reference_is_shift_invariant(k, m, data):
    x = np.array(k, dtype=np.float64) * 2.0 ** -10
    c = m * 2.0 ** -10
    assert np.array_equal((x + c) - c, x)  # the shift is exact
    t = [data.draw(st.integers(0, len(k) - 1))]
    a = reference_loss(x[None, :], t)[0]
    b = reference_loss((x + c)[None, :], t)[0]
    # each is within 2**-101 relative of the one true value
    assert abs(a - b) <= mp.ldexp(abs(a), -99)


# ---------------------------------------------------------------------------------------------
# Loss >= 0: the truth and every method in every format (nan allowed for the methods that
# overflow, never a negative number), except softmax_eps: -log(p_t + eps) is -log(1 + eps) < 0
# when p_t = 1, in every format where 1 + eps rounds above 1 (float32, float64).

@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
@PROPS
@given(data=st.data())
def test_loss_is_never_negative(fmt, data):
    x, t = data.draw(batches(fmt, scales=(1.0, 30.0, 1e3, 1e6, fmt.max_finite / 8)))
    assert reference_loss(x, t)[0] >= 0
    for (name, acc), v in computed(x, t, fmt).items():
        if name != "softmax_eps":
            assert not (v < 0).any(), (name, acc, v)
        if name in STABLE:
            assert not np.isnan(v).any(), (name, acc, v)


@pytest.mark.parametrize("fmt", ["float32", "float64"])
def test_softmax_eps_is_negative_on_a_certain_prediction(fmt):
    v = METHODS["softmax_eps"](np.array([[0.0]]), np.array([0]), fmt, "working")[0]
    assert v < 0 and v == -FORMATS[fmt].round(np.log(FORMATS[fmt].round(1 + FORMATS[fmt].round(1e-7))))


# ---------------------------------------------------------------------------------------------
# The stable methods stay finite whenever the true loss is well inside the format's range:
# at most max_finite / 2, a margin no rounding error of a few ulps can cross.

@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
@PROPS
@given(data=st.data())
def test_stable_methods_finite_when_the_loss_is_representable(fmt, data):
    x, t = data.draw(batches(fmt, scales=(1.0, 1e3, fmt.max_finite / 8, fmt.max_finite / 2.5)))
    hi, _ = truth(x, t)
    if not hi[0] <= fmt.max_finite / 2:
        return
    for (name, acc), v in computed(x, t, fmt).items():
        if name in STABLE:
            assert np.isfinite(v).all(), (name, acc, v, hi)


# ---------------------------------------------------------------------------------------------
# The Blanchard-Higham-Higham bound (precision_lab.bounds) holds for the log1p and logsumexp
# methods in every format and accumulator. The bound is first order; its exact form replaces
# n u by gamma_n = n u / (1 - n u) <= n u (1 + 2 n u) for n u <= 1/2, so the test allows the
# factor 1 + 2 (n + 2) u for the second-order terms (n <= 40 classes: n u <= 0.16 in bfloat16).

@pytest.mark.parametrize("fmt", FMTS, ids=FMT_IDS)
@PROPS
@given(data=st.data())
def test_bhh_bound_holds(fmt, data):
    from precision_lab.numerics.bounds import bhh_bound
    from precision_lab.numerics.methods import bounded_methods
    x, t = data.draw(batches(fmt, scales=(1.0, 8.0, 30.0)))
    hi, lo = truth(x, t)
    n, u = x.shape[1], fmt.unit_roundoff
    safety = 1 + 2 * (n + 2) * u
    for name, form in bounded_methods().items():
        for acc in variants(name, fmt):
            v = METHODS[name](x, t, fmt, acc)
            err = abs((v[0] - hi[0]) - lo[0])
            bound = bhh_bound(x, t, fmt, acc, form)[0]
            assert err <= bound * safety, (name, acc, err, bound, x, t)


def test_bhh_bound_is_not_vacuous():
    """The bound is of the size of the errors it bounds (within 2**12), not a blanket."""
    from precision_lab.numerics.bounds import bhh_bound
    fmt = FORMATS["bfloat16"]
    rng = np.random.default_rng(0)
    x = fmt.round(rng.standard_normal((200, 30)) * 8)
    t = rng.integers(0, 30, 200)
    hi, lo = truth(x, t)
    err = np.abs((METHODS["log1p"](x, t, fmt, "working") - hi) - lo)
    b = bhh_bound(x, t, fmt, "working", "log1p")
    assert np.all(err <= b) and np.median(b / hi) < 2.0 ** 12 * np.median(err / hi + 2 ** -60)
    assert err.max() > 0


# ---------------------------------------------------------------------------------------------
# The reference never returns an uncertified value

X = np.array([[0.0, 1.0, 2.0], [1.5, -3.0, 0.25], [4.0, 4.0, -1.0]])
T = np.array([2, 0, 1])


def test_mpmath_backend_raises_naming_the_row_that_never_agrees(monkeypatch):
    real = reference._row_loss

    def disagreeing(x, t, prec):  # row 1's evaluations differ at every precision
        v = real(x, t, prec)
        if x[1] == -3.0:
            return v + mp.ldexp(1, -20) * (prec % 7)
        return v
    monkeypatch.setattr(reference, "_row_loss", disagreeing)
    with pytest.raises(UncertifiedError, match=r"row 1: .*precision cap 512 bits"):
        reference_loss(X, T, backend="mpmath", max_prec=512)
    assert mpmath.mp.prec == 53


def test_arb_backend_raises_naming_the_row_whose_ball_stays_wide(monkeypatch, tmp_path):
    real = fastref._attempt

    def wide(x, t, bits, p, out, idx):  # row 2's ball never narrows enough
        failed = set(real(x, t, bits, p, out, idx).tolist())
        if 2 in idx:
            out[2] = None
            failed.add(2)
        return np.array(sorted(failed), dtype=np.int64)
    monkeypatch.setattr(fastref, "_attempt", wide)
    with pytest.raises(UncertifiedError, match=r"row 2: .*precision cap"):
        reference_loss(X, T, max_prec=1024)
    with pytest.raises(UncertifiedError, match="row 2"):
        reference_truth(X, T, max_prec=1024, cache=tmp_path / "cache")
    assert not list(tmp_path.glob("cache/*.npz"))  # nothing uncertified is cached


def test_evaluate_lets_the_error_through(monkeypatch):
    def fails(x, t, bits, max_prec):
        raise UncertifiedError("row 2: forced")
    monkeypatch.setattr(reference, "_arb_losses", fails)
    with pytest.raises(UncertifiedError, match="row 2"):
        evaluate(X, T, formats=["float32"], methods=["logsumexp"])
