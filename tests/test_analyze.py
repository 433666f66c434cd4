"""`precision-lab analyze`: a user's file, every row as given, streamed in chunks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from precision_lab import InputError, evaluate, load_logits
from precision_lab.analysis.analyze import analyze, parse_memory, plan_chunks, truth_block
from precision_lab.analysis.analyze_report import write_report
from precision_lab.cli import main
from precision_lab.data import files
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import METHODS
from precision_lab.numerics.options import LossOptions


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("PRECISION_LAB_CACHE", "off")


def _batch(n=30, c=12, scale=9.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)) * scale, rng.integers(0, c, n)


def _bf16_file(tmp_path, suffix, n=24, c=300, scale=20.0):
    x, t = _batch(n, c, scale, seed=3)
    xb = torch.from_numpy(x).to(torch.bfloat16)
    tt = torch.from_numpy(t)
    path = tmp_path / f"logits{suffix}"
    if suffix == ".safetensors":
        save_file({"logits": xb, "targets": tt}, str(path))
    else:
        torch.save({"logits": xb, "targets": tt}, path)
    return path, xb.to(torch.float64).numpy(), t


def test_every_row_matches_evaluate(tmp_path):
    x, t = _batch()
    x[2, 3] = -np.inf   # a masked class
    x[5, :] = x[5, :] * 100   # rows that overflow
    path = tmp_path / "b.npz"
    np.savez(path, logits=x.astype(np.float16), targets=t)
    a = analyze(path)
    assert a.formats == ["float16"]          # the file's own dtype
    assert a.n_rows == len(t)
    ref = evaluate(x.astype(np.float16).astype(np.float64), t, formats=["float16"])
    ref = ref[ref["reduction"] == "none"]
    mine = a.rows.sort_values(["method", "accumulator", "row"], kind="mergesort")
    ref = ref.sort_values(["method", "accumulator", "row"], kind="mergesort")
    np.testing.assert_array_equal(mine["computed"].to_numpy(), ref["computed"].to_numpy())
    np.testing.assert_array_equal(mine["truth"].to_numpy(), ref["truth"].to_numpy())
    np.testing.assert_array_equal(mine["outcome"].to_numpy(), ref["outcome"].to_numpy())
    # one results row per (format, method, accumulator, reduction), experiments' columns
    r = a.results
    assert len(r) == 2 * len(mine.groupby(["method", "accumulator"]))
    for col in ("rows", "nonfinite_frac", "n_finite", "n_+inf", "n_nan", "rel_err_median",
                "ulp_err_median", "ulp_err_max", "ulp_err_p99", "bhh_within_frac"):
        assert col in r.columns
    naive = r[(r["method"] == "naive") & (r["accumulator"] == "working")
              & (r["reduction"] == "none")].iloc[0]
    assert naive["n_+inf"] + naive["n_nan"] > 0


def test_batch_mean_matches_evaluate(tmp_path):
    x, t = _batch(n=20, c=7, scale=3.0)
    path = tmp_path / "m.npz"
    np.savez(path, logits=x, targets=t)
    a = analyze(path, formats=["bfloat16", "float32"])
    ref = evaluate(x, t, formats=["bfloat16", "float32"])
    ref = ref[ref["reduction"] == "mean"].set_index(["format", "method", "accumulator"])
    for _, m in a.means.iterrows():
        e = ref.loc[(m["format"], m["method"], m["accumulator"])]
        assert m["computed"] == e["computed"] or (np.isnan(m["computed"])
                                                   and np.isnan(e["computed"]))
        assert m["truth"] == e["truth"]


def test_torch_mean_of_losses_is_its_mean():
    m = METHODS["torch"]
    for name, fmt in FORMATS.items():
        if not m.runs_in(fmt):  # no torch kernel (float8) or dtype (tf32)
            continue
        x, t = _batch(n=257, c=33, scale=30.0, seed=5)
        xr = fmt.round(x)
        losses = m(xr, t, fmt)
        assert m.mean_of_losses(losses, fmt) == m.batch_mean(losses, fmt, x=xr, targets=t)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_bfloat16_files_kept_exactly(tmp_path, suffix):
    path, exact, t = _bf16_file(tmp_path, suffix)
    info = files.file_info(path)
    assert (info.rows, info.classes, info.stored_format) == (24, 300, "bfloat16")
    x, tt = files.read_rows(path, 5, 9)
    np.testing.assert_array_equal(x, exact[5:9])
    np.testing.assert_array_equal(tt, t[5:9])
    lx, lt = load_logits(path)
    np.testing.assert_array_equal(lx, exact)
    a = analyze(path, methods=["logsumexp", "torch"])
    assert a.formats == ["bfloat16"]
    ref = evaluate(exact, t, formats=["bfloat16"], methods=["logsumexp", "torch"], mean=False)
    np.testing.assert_array_equal(
        a.rows.sort_values(["method", "accumulator", "row"], kind="mergesort")["computed"],
        ref.sort_values(["method", "accumulator", "row"], kind="mergesort")["computed"])


def test_same_bytes_whatever_the_split(tmp_path):
    path, _, _ = _bf16_file(tmp_path, ".safetensors", n=24, c=700, scale=1e3)
    texts, splits = [], set()
    for memory, workers in (("2GiB", 1), ("1MiB", 1), ("2MiB", 1), ("5MiB", 2)):
        a = analyze(path, memory=memory, workers=workers, block=4)
        texts.append(a.results.to_csv(index=False) + a.rows.to_csv(index=False))
        splits.add(tuple(a.chunks))
    assert len(splits) == 4              # four different splits (1, 6, 3 and 2 chunks)
    assert all(s == texts[0] for s in texts)


def test_chunks_are_whole_truth_blocks_within_memory():
    c = 128256
    assert truth_block(c) == 8
    chunks = plan_chunks(4096, c, 1 << 30, 1)
    rows = chunks[0][1] - chunks[0][0]
    assert rows % 8 == 0 and rows * c * 256 <= 1 << 30
    assert chunks[-1][1] == 4096 and all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert plan_chunks(10, 5, 1 << 20, 1) == [(0, 10)]
    assert parse_memory("512M") == 512 << 20 and parse_memory("2GiB") == 2 << 30


def test_sample_and_report(tmp_path):
    x, t = _batch(n=40, c=6)
    path = tmp_path / "s.npy"
    np.save(path, np.column_stack([x.astype(np.float32), t]))
    a = analyze(path, rows=10, seed=4, methods=["naive", "logsumexp"])
    b = analyze(path, rows=10, seed=4, methods=["naive", "logsumexp"])
    assert a.n_rows == 10 and a.sample_rows == 10
    assert a.results.to_csv() == b.results.to_csv()
    picked = np.sort(a.rows["row"].unique())
    assert len(picked) == 10 and picked.max() < 40
    out = write_report(a, tmp_path / "rep")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["file_sha256"] == files.file_sha256(path)
    assert meta["rows_analysed"] == 10 and meta["sampled"] and meta["sample_seed"] == 4
    summary = (out / "summary.md").read_text()
    assert "seeded sample of 10 of the file's 40 rows" in summary
    assert (out / "results.csv").exists() and (out / "error.png").exists()


def test_cli(tmp_path, capsys):
    x, t = _batch(n=25, c=5, scale=12.0)
    path = tmp_path / "c.npz"
    np.savez(path, logits=x.astype(np.float16), targets=t)
    out = tmp_path / "report"
    assert main(["analyze", str(path), "--out", str(out), "--quiet",
                 "--methods", "naive", "logsumexp", "torch"]) == 0
    text = (out / "summary.md").read_text()
    assert "all 25 rows" in text and "naive in float16 gives a non-finite loss" in text
    # bad inputs: one line, exit 2
    t2 = t.copy()
    t2[3] = -100
    bad = tmp_path / "bad.safetensors"
    save_file({"logits": torch.from_numpy(x), "targets": torch.from_numpy(t2)}, str(bad))
    cases = [([str(bad)], "ignore_index"),
             ([str(tmp_path / "none.pt")], "not found"),
             ([str(path), "--memory", "lots"], "--memory"),
             ([str(path), "--formats", "float8"], "unknown format"),
             ([str(path), "--rows", "0"], "--rows")]
    for args, needle in cases:
        capsys.readouterr()
        assert main(["analyze", *args, "--out", str(tmp_path / "x"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err


def _sorted(df):
    return df.sort_values(["method", "accumulator", "row"], kind="mergesort")


def test_label_smoothing_changes_the_truth_and_matches_evaluate(tmp_path):
    x, t = _batch(n=20, c=7, scale=6.0, seed=5)
    x16 = x.astype(np.float16)
    path = tmp_path / "s.npz"
    np.savez(path, logits=x16, targets=t)
    o = LossOptions(label_smoothing=0.1)
    a = analyze(path, methods=["naive", "logsumexp", "torch"], options=o)
    plain = analyze(path, methods=["naive", "logsumexp", "torch"])
    assert not np.array_equal(a.rows["truth"].to_numpy(), plain.rows["truth"].to_numpy())
    ref = evaluate(x16.astype(np.float64), t, formats=["float16"],
                   methods=["naive", "logsumexp", "torch"], options=o)
    mine, r = _sorted(a.rows), _sorted(ref[ref["reduction"] == "none"])
    for col in ("computed", "truth", "outcome"):
        np.testing.assert_array_equal(mine[col].to_numpy(), r[col].to_numpy())
    # the mean: the same truth; the same value for the methods that sum their rows
    m = a.means.set_index(["method", "accumulator"])
    rm = ref[ref["reduction"] == "mean"].set_index(["method", "accumulator"])
    np.testing.assert_array_equal(m.loc[rm.index, "truth"].to_numpy(), rm["truth"].to_numpy())
    own = rm.index.get_level_values(0) != "torch"
    np.testing.assert_array_equal(m.loc[rm.index[own], "computed"].to_numpy(),
                                  rm.loc[own, "computed"].to_numpy())
    write_report(a, tmp_path / "rep")
    meta = json.loads((tmp_path / "rep" / "metadata.json").read_text())
    assert meta["options"]["label_smoothing"] == 0.1
    assert "training options: label" in (tmp_path / "rep" / "summary.tex").read_text()
    assert "Training options: label_smoothing=0.1" in \
        (tmp_path / "rep" / "summary.md").read_text()


def test_ignore_index_rows_are_counted(tmp_path, capsys):
    x, t = _batch(n=16, c=5, scale=4.0, seed=2)
    t[[1, 4, 9]] = -100
    path = tmp_path / "ign.safetensors"
    save_file({"logits": torch.from_numpy(x).to(torch.float32),
               "targets": torch.from_numpy(t)}, str(path))
    with pytest.raises(InputError, match="ignore_index"):
        analyze(path)                      # without the option, a negative target is refused
    out = tmp_path / "rep"
    assert main(["analyze", str(path), "--out", str(out), "--quiet", "--methods", "naive",
                 "torch", "--ignore-index", "-100", "--reduction", "sum"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["rows_ignored"] == 3 and meta["options"]["reduction"] == "sum"
    assert "3 of the 16 analysed rows have target ignore_index" in \
        (out / "summary.md").read_text()
    a = analyze(path, methods=["naive"], options=LossOptions(reduction="sum"))
    assert a.n_ignored == 3
    ign = a.rows[a.rows["ignored"]]
    assert sorted(ign["row"].unique()) == [1, 4, 9]
    assert (ign["computed"] == 0).all() and (ign["truth"] == 0).all()
    x32 = torch.from_numpy(x).to(torch.float32).double().numpy()
    ref = evaluate(x32, t, formats=["float32"], methods=["naive"],
                   options=LossOptions(reduction="sum"))
    np.testing.assert_array_equal(a.means["truth"].to_numpy(),
                                  ref.loc[ref["reduction"] == "sum", "truth"].to_numpy())
    assert list(a.means["reduction"]) == ["sum"]


def test_unsupported_method_skipped_or_refused(tmp_path, capsys):
    x, t = _batch(n=6, c=4, scale=3.0)
    path = tmp_path / "z.npz"
    np.savez(path, logits=x.astype(np.float32), targets=t)
    capsys.readouterr()
    assert main(["analyze", str(path), "--out", str(tmp_path / "x"), "--quiet", "--z-loss",
                 "1e-4", "--methods", "softmax_eps"]) == 2
    err = capsys.readouterr().err.strip()
    assert "softmax_eps" in err and "z_loss" in err and "\n" not in err
    a = analyze(path, options=LossOptions(z_loss=1e-4))
    assert set(a.skipped) == {"softmax_eps", "softmax_log"}
    assert "z_loss" in a.skipped["softmax_eps"] and "softmax_eps" not in a.methods
    write_report(a, tmp_path / "rep")
    assert "Skipped: softmax_eps (cannot express z_loss" in \
        (tmp_path / "rep" / "summary.md").read_text()


def test_bad_files(tmp_path):
    x, t = _batch(n=4, c=3)
    torch.save({"logits": torch.from_numpy(x)}, tmp_path / "a.pt")
    torch.save([torch.from_numpy(x)], tmp_path / "b.pt")
    (tmp_path / "c.pt").write_bytes(b"not a torch file")
    save_file({"logits": torch.from_numpy(x)}, str(tmp_path / "d.safetensors"))
    torch.save({"logits": torch.from_numpy(x), "targets": torch.from_numpy(t + 3)},
               tmp_path / "e.pt")
    for name, needle in (("a.pt", "'targets'"), ("b.pt", "tuple"), ("c.pt", "cannot read"),
                         ("d.safetensors", "'targets'"), ("e.pt", "out of range")):
        with pytest.raises(InputError, match=needle):
            analyze(tmp_path / name)
        with pytest.raises(InputError, match=needle):
            load_logits(tmp_path / name)


def test_experiment_cells_state_what_was_done_to_the_users_rows(tmp_path):
    from precision_lab.analysis.cells import evaluate_cell, stage_arrays
    x, t = _batch(n=30, c=20, scale=2.0)
    staged = stage_arrays(tmp_path, "user", x, t)
    cell = {**staged, "rows": 8, "classes": 5, "scale": 100.0, "seed": 3,
            "formats": ["float32"], "methods": ["logsumexp"]}
    df = evaluate_cell(cell)
    row = df.iloc[0]
    assert (row["user_file_rows"], row["user_rows_used"], row["user_file_classes"],
            row["user_classes_used"]) == (30, 8, 20, 5)
    assert bool(row["user_rows_sampled"]) and row["user_sample_seed"] == 3
    assert row["user_scale"] == 100.0
    whole = evaluate_cell({**staged, "seed": 3, "formats": ["float32"],
                           "methods": ["logsumexp"]}).iloc[0]
    assert not bool(whole["user_rows_sampled"]) and whole["user_rows_used"] == 30


def test_chunk_working_memory_within_estimate(tmp_path):
    """The per-logit working memory of a chunk (numpy's allocations, traced) stays within
    BYTES_PER_LOGIT, which sizes the chunks from --memory."""
    import tracemalloc

    from precision_lab.analysis.analyze import BYTES_PER_LOGIT, analyze_chunk
    n, c = 8, 8192
    path, _, _ = _bf16_file(tmp_path, ".safetensors", n=n, c=c, scale=3.0)
    cell = {"path": str(path), "sha256": "", "file_rows": n, "stored_format": "bfloat16",
            "formats": ["bfloat16"], "methods": list(METHODS),
            "accumulators": ["working", "float32"], "seed": 0, "bits": 100,
            "truth_block": truth_block(c), "start": 0, "stop": n}
    analyze_chunk(cell)   # warm: tables, kernels
    tracemalloc.start()
    try:
        analyze_chunk(cell)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= BYTES_PER_LOGIT * n * c, peak / (n * c)


def test_analyze_speed_quick(tmp_path, monkeypatch):
    from precision_lab.experiments import load_experiment
    from precision_lab.runner import RunConfig, run_experiment
    from precision_lab.running.sweep import read_table
    mod = load_experiment("analyze_speed")
    monkeypatch.setitem(mod.PROFILES, "quick", {**mod.PROFILES["quick"], "shapes": [[4, 64]],
                                                "repeats": 1, "file_shape": [4, 64]})
    out = run_experiment("analyze_speed", RunConfig(profile="quick", out=tmp_path, quiet=True,
                                                    workers=1))
    df = read_table(out / "results.csv")
    kinds = set(df["kind"])
    assert kinds == {"native", "truth", "method", "evaluate", "file"}
    base = df[df["what"] == "numpy float64 log-sum-exp"]
    assert (base["times_numpy"] == 1.0).all()
    assert len(df[df["kind"] == "method"]) == 15    # every bfloat16 variant
    md = (out / "summary.md").read_text()
    assert "not estimated" in md
    # the answer first: the headline table, then its figure, then the findings
    first_table = md.index("**Table ")
    assert first_table == md.index("**Table analyze_speed:T1.**")
    assert first_table < md.index("![speed](speed.png)") < md.index("## Findings")
    assert (out / "speed.png").is_file() and (out / "tables" / "times.tex").is_file()


def test_reference_speed_quick(tmp_path, monkeypatch):
    """reference_speed on a tiny profile: a row per cell, its ratios the ratios of its
    throughputs, the findings on both goals."""
    from precision_lab.experiments import load_experiment
    from precision_lab.runner import RunConfig, run_experiment
    from precision_lab.running.sweep import read_table
    mod = load_experiment("reference_speed")
    monkeypatch.setitem(mod.PROFILES, "quick", {**mod.PROFILES["quick"], "classes": [10, 100],
                                                "scales": [1.0], "formats": ["float16"],
                                                "logits": 2000, "repeats": 1,
                                                "mpmath_sample": 50})
    out = run_experiment("reference_speed", RunConfig(profile="quick", out=tmp_path, quiet=True,
                                                      workers=1))
    df = read_table(out / "results.csv")
    assert len(df) == 2
    assert np.allclose(df["numpy_over_ref"], df["numpy_logits_per_s"] / df["ref_logits_per_s"])
    md = (out / "summary.md").read_text()
    assert "faster than a plain mpmath loop" in md and "within 10x in" in md


def test_real_classifier_logits_every_row(tmp_path, capsys):
    """The digits MLP's held-out logits at two epochs, written by
    `python -m precision_lab.data.trained` (float32, as the model gives them): analysed in
    every standard format, every row reported, the command line in the metadata."""
    from precision_lab.data.trained import main as write_main
    from precision_lab.data.trained import train_digits
    path = tmp_path / "digits.npz"
    assert write_main([str(path), "--epochs", "0", "3"]) == 0
    with np.load(path) as f:
        x, t, epoch = f["logits"], f["targets"], f["epoch"]
    assert f"{len(t)} x 10 logits (float32), epochs [0, 3]" in capsys.readouterr().out
    assert x.dtype == np.float32 and sorted(set(epoch.tolist())) == [0, 3]
    snaps = train_digits(epochs=(0, 3))
    assert np.array_equal(x.astype(np.float64), np.concatenate([s.logits for s in snaps]))
    out = tmp_path / "rep"
    argv = ["analyze", str(path), "--formats", "float16", "bfloat16", "float32", "float64",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    md = (out / "summary.md").read_text()
    assert f"Analysed all {len(t)} rows of the file, as stored (float32; 10 classes)" in md
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["rows_analysed"] == len(t) and meta["command"].startswith("precision-lab analyze")
    for bad, why in (([str(tmp_path / "digits.csv")], "must end in .npz"),
                     ([str(path), "--epochs", "-1"], "epochs must be non-negative")):
        with pytest.raises(SystemExit):
            write_main(bad)
        assert why in capsys.readouterr().err


def test_error_figure_never_draws_a_finite_error_as_non_finite():
    """float64 errors reach 2**53 ULPs (a loss computed as 0 of a tiny true one): the figure's
    non-finite position is a power of ten above the panel's every finite error, 1e12 at least."""
    import pandas as pd

    from precision_lab.analysis.analyze_report import _nonfinite_position
    d = pd.DataFrame({"ulp_err": [0.5, 2.0 ** 53, np.inf, 3.0], "computed": [1, 0, np.inf, 2]})
    assert _nonfinite_position(d) == 1e16
    d = pd.DataFrame({"ulp_err": [0.5, 1e30], "computed": [1.0, np.nan]})   # nan: not counted
    assert _nonfinite_position(d) == 1e12
    assert _nonfinite_position(d.iloc[:0]) == 1e12
