"""The experiments' quick profiles end to end, their outputs' schema and numerical invariants,
and the library pieces they rest on (bounds, user-logit cells, trained logits)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from precision_lab.analysis.cells import cell_logits, evaluate_cell, stage_arrays
from precision_lab.experiments import load_experiment
from precision_lab.numerics.bounds import bhh_bound
from precision_lab.numerics.formats import FORMATS, STANDARD_FORMATS
from precision_lab.runner import RunConfig, run_experiment
from precision_lab.running.sweep import read_table

EXPERIMENTS = ["logit_scale", "class_count", "scale_classes", "trained_logits"]
REQUIRED = ["format", "method", "distribution", "scale", "classes", "rows", "nonfinite_frac",
            "rel_err_median", "rel_err_max", "ulp_err_median", "ulp_err_max", "bits_err_mean",
            "accumulator", "reduction", "count", "representable_frac",
            "spurious_nonfinite_frac", "bhh_bound_rel_median", "bhh_within_frac",
            "bhh_checked", "bhh_violations", "bhh_ratio_median", "bhh_ratio_max",
            "bhh_informative_frac"]
STABLE = ["logsumexp", "log1p", "torch"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    config = RunConfig(profile="quick", seed=0, out=out, quiet=True)
    for name in EXPERIMENTS:
        run_experiment(name, config)
    return out


def _results(reports, name) -> pd.DataFrame:
    return read_table(reports / name / "results.csv")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_outputs_and_schema(reports, name):
    d = reports / name
    for f in ("results.csv", "summary.md", "summary.tex", "findings.json", "metadata.json"):
        assert (d / f).is_file(), f
    pngs = sorted(p.stem for p in d.glob("*.png"))
    assert pngs and pngs == sorted(p.stem for p in d.glob("*.pdf"))
    df = _results(reports, name)
    assert not set(REQUIRED) - set(df.columns)
    assert set(df["format"]) == set(STANDARD_FORMATS)
    assert set(df["reduction"]) == {"none", "mean"}
    assert (df[df["reduction"] == "mean"]["count"] == 1).all()
    # float32 sums only as a variant of the 16-bit formats
    assert set(df[df["accumulator"] == "float32"]["format"]) == {"float16", "bfloat16"}
    # every row counted once: finite, zero or one of the non-finite outcomes
    outcomes = df[["n_finite", "n_zero", "n_+inf", "n_-inf", "n_nan"]].sum(axis=1)
    assert np.array_equal(outcomes.to_numpy(), df["count"].to_numpy())
    nonfinite = df[["n_+inf", "n_-inf", "n_nan"]].sum(axis=1) / df["count"]
    assert np.allclose(nonfinite, df["nonfinite_frac"])
    all_bad = df["nonfinite_frac"] == 1
    assert df[all_bad]["rel_err_median"].isna().all()
    # a finite result has an error, unless the truth itself is not finite (overflowed inputs)
    assert df[~all_bad & (df["representable_frac"] == 1)]["rel_err_median"].notna().all()
    assert (df["rel_err_median"].dropna() <= df["rel_err_max"].dropna().reindex(
        df["rel_err_median"].dropna().index)).all()
    tex = (d / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert "Seed 0" in tex and "100 correct bits" in tex and "float16, bfloat16" in tex
    findings = json.loads((d / "findings.json").read_text())
    assert findings["findings"] and all(f["text"] for f in findings["findings"])
    for f in findings["findings"]:
        path, _, anchor = f["link"].partition("#")
        assert (d / path).is_file()
        if anchor:  # a table of this report, printed with its identifier
            assert f'<a id="{anchor}"></a>' in (d / path).read_text()
        assert len(f["text"].split()) <= 45, f["text"]  # one claim, its number, its scope
    heads = [t for t in findings["tables"] if t["headline"]]
    assert len(heads) == 1 and heads[0]["id"] == f"{name}:T1"
    assert f"**Table {name}:T1.**" in (d / "summary.md").read_text()
    md = (d / "summary.md").read_text()
    for stem in pngs:
        assert f"({stem}.png)" in md
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["profile"] == "quick" and meta["seed"] == 0 and meta["wall_time_s"] > 0
    assert "nan" not in " ".join(f["text"] for f in findings["findings"]).split()


def test_index_lists_every_experiment(reports):
    index = (reports / "README.md").read_text()
    for name in EXPERIMENTS:
        assert f"({name}/summary.md)" in index


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_stable_methods_finite_where_representable(reports, name):
    """logsumexp, log1p and torch never return inf or nan for a row whose logits, log-sum-exp
    and loss the format can represent, as long as C is below the format's largest value (past
    it, a sum of C terms near 1 may overflow when rounded back to the format; see
    class_count)."""
    df = _results(reports, name)
    rows = df[(df["reduction"] == "none") & df["method"].isin(STABLE)]
    rows = rows[rows["classes"] < rows["format"].map(lambda f: FORMATS[f].max_finite)]
    assert len(rows)
    assert (rows["spurious_nonfinite_frac"] == 0).all()
    full = rows[rows["representable_frac"] == 1]
    assert (full["nonfinite_frac"] == 0).all()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_bhh_bound_holds(reports, name):
    df = _results(reports, name)
    rows = df[(df["reduction"] == "none") & df["method"].isin(["logsumexp", "log1p"])]
    checked = rows["bhh_within_frac"].dropna()
    assert len(checked) and (checked == 1).all()
    assert (rows["bhh_violations"].dropna() == 0).all() and rows["bhh_checked"].sum() > 0
    assert rows[rows["method"] == "torch"]["bhh_within_frac"].isna().all()


def test_naive_float16_overflows_past_11_09(reports):
    df = _results(reports, "logit_scale")
    naive = df[(df["format"] == "float16") & (df["method"] == "naive")
               & (df["reduction"] == "none")]
    # most rows' largest logit past the overflow logit: most rows overflow
    past = naive[naive["max_logit_median"] > FORMATS["float16"].overflow_logit * 1.01]
    assert len(past) and (past["nonfinite_frac"] >= 0.5).all()
    # every row's log-sum-exp far below it: every row finite
    below = naive[naive["lse_median"] < 8.0]
    assert len(below) and (below[below["scale"] <= 1]["nonfinite_frac"] == 0).all()
    # the same rows in float32 are fine
    f32 = df[(df["format"] == "float32") & (df["method"] == "naive")
             & (df["reduction"] == "none") & (df["max_logit_median"] < 50)]
    assert len(f32) and (f32["nonfinite_frac"] == 0).all()


def test_trained_logits_grow(reports):
    df = _results(reports, "trained_logits")
    st = df.drop_duplicates("position").sort_values("position")
    assert st["max_abs_logit"].is_monotonic_increasing
    assert st["max_abs_logit"].iloc[-1] > FORMATS["float16"].overflow_logit
    assert st["test_accuracy"].iloc[-1] > 0.8


def test_class_count_float32_sum_helps_float16(reports):
    df = _results(reports, "class_count")
    d = df[(df["format"] == "float16") & (df["method"] == "logsumexp")
           & (df["reduction"] == "none") & (df["scale"] == 1.0)]
    big = d[d["classes"] == d["classes"].max()].set_index("accumulator")["rel_err_median"]
    assert big["float32"] < big["working"]


# ----------------------------------------------------------------- library pieces ------------

@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("acc", ["working", "float32"])
def test_bhh_bound_on_random_logits(fmt, acc):
    """|computed - true| <= bound for log1p and logsumexp on random logits of several scales
    (the bound includes the final rounding of the loss, u |loss|)."""
    from precision_lab.analysis.evaluate import evaluate
    rng = np.random.default_rng(7)
    for c, scale in ((3, 0.5), (50, 3.0), (400, 10.0), (40, 40.0)):
        x = scale * rng.standard_normal((24, c))
        t = rng.integers(0, c, 24)
        df = evaluate(x, t, formats=[fmt], methods=["log1p", "logsumexp"],
                      accumulators=(acc,) if acc == "working" else ("working", acc), mean=False)
        xr = FORMATS[fmt].round(x)
        for (m, a), g in df.groupby(["method", "accumulator"]):
            if a != acc:
                continue
            b = bhh_bound(xr, t, fmt, a, "log1p" if m == "log1p" else "shifted")
            ok = np.isfinite(g["computed"].to_numpy())
            assert ok.all()
            assert (g["abs_err"].to_numpy() <= b).all(), (fmt, m, a, c, scale)


def test_bhh_bound_matches_the_paper_formula():
    x = np.array([[1.0, 3.0, -2.0, 0.5]])
    t = np.array([0])
    u = FORMATS["float32"].unit_roundoff
    a, n = 3.0, 4
    s = np.exp(1.0 - a) + np.exp(-2.0 - a) + np.exp(0.5 - a)
    y = a + np.log1p(s)
    expected = (np.log1p(s) + s / (1 + s) * (n + 5.0)) * u + u * abs(y) + u * abs(y - 1.0)
    got = bhh_bound(x, t, "float32")[0]
    assert got == pytest.approx(expected + n * FORMATS["float32"].min_subnormal / 2 / (1 + s),
                                rel=1e-12)
    assert np.isnan(bhh_bound(np.array([[np.nan, 1.0]]), np.array([0]), "float32")[0])


def test_user_cells_truncate_and_scale(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 50))
    t = np.array([0, 49, 3, 20, 7, 8, 9, 40, 1, 2])
    staged = stage_arrays(tmp_path, "user", x, t)
    cell = {"distribution": "user", "rows": 10, "classes": 8, "scale": 2.0, "seed": 0, **staged}
    xc, tc = cell_logits(cell)
    assert xc.shape == (10, 8)
    # the target logit is kept, scaled
    assert np.array_equal(xc[np.arange(10), tc], 2.0 * x[np.arange(10), t])
    inside = t < 8
    assert np.array_equal(xc[inside], 2.0 * x[inside, :8])
    assert np.array_equal(xc[~inside, :7], 2.0 * x[~inside, :7])
    # a sample of rows, the same one for every cell of a run
    a, _ = cell_logits({**cell, "rows": 4})
    b, _ = cell_logits({**cell, "rows": 4, "classes": 50, "scale": 1.0})
    assert a.shape == (4, 8) and np.array_equal(a, 2.0 * b[:, :8][:, :8]) is not None
    # a cell's result is the same bytes every time
    one = evaluate_cell({**cell, "formats": ["float16", "float32"]})
    two = evaluate_cell({**cell, "formats": ["float16", "float32"]})
    assert one.to_csv() == two.to_csv()


def test_logits_file_replaces_synthetic_data(tmp_path):
    rng = np.random.default_rng(2)
    x = 4.0 * rng.standard_normal((6, 20))
    t = rng.integers(0, 20, 6)
    path = tmp_path / "mine.npz"
    np.savez(path, logits=x, targets=t)
    config = RunConfig(profile="quick", out=tmp_path / "out", quiet=True, logits_file=path,
                       workers=1)
    run_experiment("class_count", config)
    df = read_table(tmp_path / "out" / "class_count" / "results.csv")
    assert set(df["distribution"]) == {"user"}
    assert set(df["classes"]) == {2, 16, 20}
    assert (df["rows"] == 6).all()
    assert "logits_path" not in df.columns


def test_cells_are_plain_and_unique():
    from precision_lab.running.sweep import cell_key
    for name in ["logit_scale", "class_count", "scale_classes"]:
        mod = load_experiment(name)
        for profile in ("quick", "full"):
            cells = mod.cells(RunConfig(profile=profile, quiet=True), mod.PROFILES[profile])
            keys = [cell_key(c) for c in cells]
            assert len(keys) == len(set(keys))
            # rows x classes bounded: the largest cell stays small in memory
            assert max(c["rows"] * c["classes"] for c in cells) <= 1 << 21


def test_trained_snapshots_are_deterministic():
    from precision_lab.data.trained import train_digits
    a = train_digits(epochs=(0, 5), seed=3, hidden=16)
    b = train_digits(epochs=(0, 5), seed=3, hidden=16)
    assert [s.epoch for s in a] == [0, 5]
    for sa, sb in zip(a, b):
        assert np.array_equal(sa.logits, sb.logits) and np.array_equal(sa.targets, sb.targets)
    assert a[1].train_loss < a[0].train_loss


def test_training_loss_is_recorded_at_its_own_epoch():
    from precision_lab.data.trained import train_digits
    snaps = train_digits(epochs=(0, 1, 2), seed=0, hidden=16)
    # one Adam step changes the loss: epoch 1 must not repeat epoch 0's
    assert snaps[0].train_loss != snaps[1].train_loss != snaps[2].train_loss
