"""Training options in the emulated methods (numerics.optioned) and in torch."""
import math

import numpy as np
import pytest
from test_options import batch, every_option, targets_for, torch_f64

from precision_lab import FORMATS, METHODS, STANDARD_FORMATS, InputError, get_method
from precision_lab.numerics.arithmetic import ACCUMULATORS
from precision_lab.numerics.options import LossOptions
from precision_lab.truth.options import certified_option_losses

EMULATED = [m for m in METHODS if not METHODS[m].own_reduction]


@pytest.mark.parametrize("fmt", list(STANDARD_FORMATS))
@pytest.mark.parametrize("method", list(METHODS))
def test_plain_options_reproduce_the_plain_method_bit_for_bit(method, fmt):
    m, f = get_method(method), FORMATS[fmt]
    x, t, _, _ = batch(5, n=6, c=300, scale=4.0)
    t[1] = 7
    x = f.round(x)
    for acc in m.accumulators(f, ACCUMULATORS):
        plain = m(x, t, f, acc)
        np.testing.assert_array_equal(m(x, t, f, acc, options=LossOptions()), plain)
        want = m.batch_mean(plain, f, acc, x=x, targets=t)
        got = m.batch_mean(None, f, acc, x=x, targets=t, options=LossOptions())
        assert got == want or (math.isnan(got) and math.isnan(want))


@pytest.mark.parametrize("k", range(12))
@pytest.mark.parametrize("method", [m for m in METHODS if m != "softmax_eps"])
def test_float64_methods_agree_with_the_truth_under_every_option(method, k):
    x, t, w, p = batch(2)
    o = every_option(w)[k]
    m = get_method(method)
    if not o.used <= m.options:
        pytest.skip(f"{method} cannot express {sorted(o.used - m.options)}")
    tg = targets_for(o, t, p)
    truth = certified_option_losses(x, tg, o)
    rows = m(x, tg, "float64", options=o)
    np.testing.assert_allclose(rows, [float(v) for v in truth.rows], rtol=1e-12, atol=1e-300)
    mean = m.batch_mean(None, "float64", x=x, targets=tg, options=o)
    assert abs(mean - float(truth.mean)) <= 1e-12 * abs(float(truth.mean))
    total = m.loss(x, tg, "float64", options=o, reduction="sum")
    assert abs(total - float(truth.total)) <= 1e-12 * abs(float(truth.total))


@pytest.mark.parametrize("k", range(12))
def test_torch_method_passes_the_options_through(k):
    x, t, w, p = batch(3)
    o = every_option(w)[k]
    tg = targets_for(o, t, p)
    rows, mean = torch_f64(x, tg, o)
    np.testing.assert_array_equal(get_method("torch")(x, tg, "float64", options=o), rows)
    assert get_method("torch").batch_mean(None, "float64", x=x, targets=tg, options=o) == mean


def test_a_method_refuses_an_option_it_cannot_express():
    x, t, _, _ = batch(0)
    t[1] = 0
    with pytest.raises(InputError, match="softmax_eps.*z_loss"):
        get_method("softmax_eps")(x, t, "float32", options=LossOptions(z_loss=1e-4))


def test_label_smoothing_sum_overflows_float16_at_large_class_counts():
    rng = np.random.default_rng(0)
    c = 8192
    f = FORMATS["float16"]
    x = f.round(rng.standard_normal((2, c)))
    t = np.array([0, 1])
    o = LossOptions(label_smoothing=0.1)
    truth = certified_option_losses(x, t, o)
    assert all(math.isfinite(float(v)) and float(v) < 100 for v in truth.rows)
    m = get_method("logsumexp")
    # the smoothing sum of 8192 terms near log 8192 = 9 exceeds 65504: the float32 total is
    # rounded back to float16, inf; a float16 sum stalls at 32768 (ulp 32 > 2 * 9.5): wrong
    assert np.isposinf(m(x, t, f, "float32", options=o)).all()
    work = m(x, t, f, "working", options=o)
    want = np.array([float(v) for v in truth.rows])
    assert np.isfinite(work).all() and (np.abs(work - want) > 0.03 * want).all()
    assert np.isfinite(m(x, t, f, "float32", options=LossOptions(label_smoothing=0.0))).all()


def test_softcap_turns_masked_lanes_into_live_classes():
    x = np.array([[0.5, 0.0] + [-math.inf] * 62])
    t = np.array([0])
    o = LossOptions(softcap=5.0)
    plain = certified_option_losses(x, t, LossOptions()).rows[0]
    capped = certified_option_losses(x, t, o).rows[0]
    assert float(capped) > float(plain) + 0.1       # 62 lanes at -5 hold probability mass
    got = get_method("logsumexp")(x, t, "float32", options=o)
    assert abs(got[0] - float(capped)) <= 1e-5 * float(capped)


def test_fused_smoothing_form_cancels_for_large_nearly_equal_logits():
    rng = np.random.default_rng(1)
    f = FORMATS["float32"]
    x = f.round(1000.0 + rng.standard_normal((4, 4096)) * 0.01)
    t = np.arange(4)
    o = LossOptions(label_smoothing=1.0)
    truth = np.array([float(v) for v in certified_option_losses(x, t, o).rows])
    err = {m: np.max(np.abs(get_method(m)(x, t, f, "working", options=o) - truth) / truth)
           for m in ("online", "logsumexp")}
    assert err["online"] > 10 * err["logsumexp"]


def test_evaluate_with_options():
    from precision_lab import evaluate
    x, t, w, _ = batch(6)
    o = LossOptions(weight=w, label_smoothing=0.1, z_loss=1e-3)
    df = evaluate(x, t, formats=["bfloat16", "float64"], options=o)
    assert set(df["options"]) == {o.label()}
    assert not {"softmax_eps", "softmax_log"} & set(df["method"])   # cannot form log Z
    assert set(df["reduction"]) == {"none", "mean"}
    f64 = df[(df["format"] == "float64") & (df["method"] == "logsumexp")]
    assert (f64["rel_err"] < 1e-12).all()
    with pytest.raises(InputError, match="z_loss"):
        evaluate(x, t, methods=["softmax_eps"], options=o)
    s = evaluate(x, t, formats=["float32"], methods=["torch"],
                 options=LossOptions(reduction="sum"))
    assert set(s["reduction"]) == {"none", "sum"}


def test_check_runs_a_user_function_with_its_options():
    import torch.nn.functional as F

    from precision_lab.analysis.check import check_implementation, option_keywords

    def mine(x, t, label_smoothing=0.0):
        return F.cross_entropy(x, t, label_smoothing=label_smoothing)

    def plain(x, t):
        return F.cross_entropy(x, t)

    o = LossOptions(label_smoothing=0.1)
    assert option_keywords(mine, o) == ["label_smoothing"]
    with pytest.raises(InputError, match="does not accept the option.*label_smoothing"):
        check_implementation(plain, formats=["float64"], options=o)
    res = check_implementation(mine, formats=["float64"], options=o, baselines=False)
    assert res.passed
    # the same function checked against plain truths would be off by the smoothing term
    wrong = check_implementation(lambda x, t: mine(x, t, 0.1), formats=["float64"],
                                 baselines=False)
    assert not wrong.passed
