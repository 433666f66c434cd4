"""The disk cache of certified truths: hits, misses, verification of what is read."""
import numpy as np
import pandas as pd
import pytest

from precision_lab.analysis.evaluate import evaluate
from precision_lab.truth import reference as ref
from precision_lab.truth.cache import (
    TruthCache,
    UntrustedEntryWarning,
    checksum,
    default_cache_dir,
    invariant_violation,
    resolve_cache,
    truth_key,
)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 20)), np.array([0, 5, 19])


@pytest.fixture
def counting(monkeypatch):
    """Count the calls to the arb backend."""
    calls = []
    real = ref._arb_losses

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(ref, "_arb_losses", spy)
    return calls


def test_second_call_is_a_hit(tmp_path, batch, counting):
    x, t = batch
    a = ref.reference_truth(x, t, cache=tmp_path)
    b = ref.reference_truth(x, t, cache=tmp_path)
    assert len(counting) == 1
    np.testing.assert_array_equal(a.hi, b.hi)
    np.testing.assert_array_equal(a.lo, b.lo)
    assert (a.mean_hi, a.mean_lo) == (b.mean_hi, b.mean_lo)
    assert len(list(tmp_path.glob("truth-*.npz"))) == 1


def test_key_depends_on_inputs_targets_bits(batch):
    x, t = batch
    k = truth_key(x, t, 100)
    y = x.copy()
    y[1, 2] = np.nextafter(y[1, 2], np.inf)
    assert truth_key(y, t, 100) != k
    assert truth_key(x, t[::-1].copy(), 100) != k
    assert truth_key(x, t, 101) != k
    assert truth_key(x.reshape(6, 10), np.zeros(6, dtype=int), 100) != truth_key(
        x.reshape(3, 20), np.zeros(3, dtype=int), 100)


def test_corrupt_entry_is_recomputed(tmp_path, batch, counting):
    x, t = batch
    a = ref.reference_truth(x, t, cache=tmp_path)
    (p,) = tmp_path.glob("truth-*.npz")
    p.write_bytes(b"not an npz at all")
    with pytest.warns(UntrustedEntryWarning, match="unreadable"):
        b = ref.reference_truth(x, t, cache=tmp_path)
    assert len(counting) == 2
    np.testing.assert_array_equal(a.hi, b.hi)
    c = ref.reference_truth(x, t, cache=tmp_path)   # rewritten: a hit again
    assert len(counting) == 2
    np.testing.assert_array_equal(a.lo, c.lo)


def test_mismatched_entry_is_not_trusted(tmp_path, batch, counting):
    x, t = batch
    store = TruthCache(tmp_path)
    key = truth_key(x, t, 100)
    bad = {"hi": np.full(3, 123.0), "lo": np.zeros(3), "mean_hi": np.float64(1.0),
           "mean_lo": np.float64(0.0)}
    store.store("0" * 64, bad)
    # an entry stored under another key but placed at this key's path
    store.path("0" * 64).rename(store.path(key))
    with pytest.warns(UntrustedEntryWarning, match="another key"):
        a = ref.reference_truth(x, t, cache=tmp_path)
    assert len(counting) == 1 and not np.any(a.hi == 123.0)
    # the right key but the wrong shape
    store.store(key, {**bad, "hi": np.zeros(4), "lo": np.zeros(4)})
    with pytest.warns(UntrustedEntryWarning, match="shape"):
        assert TruthCache._verify(store.path(key), key, 3, None, None) is not None
        assert store.load(key, 3) is None
    # the right key and shapes but object (pickled) data cannot be read
    np.savez(store.path(key), key=np.array(key), hi=np.array([object()] * 3, dtype=object),
             lo=np.zeros(3), mean_hi=np.float64(1), mean_lo=np.float64(0))
    assert isinstance(TruthCache._verify(store.path(key), key, 3, None, None), str)


def test_disabled_and_default_dir(monkeypatch, tmp_path, batch, counting):
    x, t = batch
    monkeypatch.setenv("PRECISION_LAB_CACHE", "off")
    assert default_cache_dir() is None and resolve_cache(None) is None
    ref.reference_truth(x, t)
    ref.reference_truth(x, t)
    assert len(counting) == 2
    monkeypatch.setenv("PRECISION_LAB_CACHE", str(tmp_path / "c"))
    assert resolve_cache(None).directory == tmp_path / "c"
    ref.reference_truth(x, t)
    ref.reference_truth(x, t)
    assert len(counting) == 3
    assert resolve_cache(False) is None
    monkeypatch.delenv("PRECISION_LAB_CACHE")
    assert str(default_cache_dir()).endswith(".cache/precision_lab")


def test_reference_truth_uses_the_cache(tmp_path, batch, counting):
    x, t = batch
    hi, lo, mhi, mlo = ref.reference_truth(x, t, cache=tmp_path)
    assert len(counting) == 1 and hi.shape == (3,) and isinstance(mhi, float)


def _rewrite(path, **changes):
    """Rewrite an entry's arrays, keeping its key and its (now stale) checksum."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {f: np.array(z[f]) for f in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def _tamper_cases(x, t, good):
    other = ref.reference_truth(x[::-1].copy(), t[::-1].copy(), cache=False)
    return {
        "hi times 1.5": {"hi": good.hi * 1.5},
        "nans": {"hi": np.full_like(good.hi, np.nan)},
        "another batch's truth": {"hi": other.hi, "lo": other.lo,
                                  "mean_hi": np.float64(other.mean_hi)},
        "one bit": {"lo": np.where(np.arange(len(t)) == 1,
                                   np.nextafter(good.lo, np.inf), good.lo)},
    }


@pytest.mark.parametrize("case", ["hi times 1.5", "nans", "another batch's truth", "one bit"])
def test_tampered_entry_is_recomputed_and_reported_once(tmp_path, batch, counting, case):
    x, t = batch
    good = ref.reference_truth(x, t, cache=tmp_path)
    (p,) = tmp_path.glob("truth-*.npz")
    _rewrite(p, **_tamper_cases(x, t, good)[case])
    counting.clear()
    with pytest.warns(UntrustedEntryWarning, match="checksum") as rec:
        again = ref.reference_truth(x, t, cache=tmp_path)
    assert len(rec) == 1 and str(p) in str(rec[0].message)
    assert len(counting) == 1                       # recomputed ...
    np.testing.assert_array_equal(again.hi, good.hi)
    np.testing.assert_array_equal(again.lo, good.lo)
    ref.reference_truth(x, t, cache=tmp_path)      # ... and rewritten: a trusted hit again
    assert len(counting) == 1


def _checksummed(p, **changes):
    """Rewrite an entry *and* its checksum (what only an adversary or a bug does): the
    invariants still catch a wrong truth."""
    with np.load(p, allow_pickle=False) as z:
        arrays = {f: np.array(z[f]) for f in z.files if f != "checksum"}
    arrays.update(changes)
    np.savez(p, checksum=np.array(checksum(arrays)), **arrays)


def test_invariants_catch_a_wrong_truth_with_a_valid_checksum(tmp_path, counting):
    x = np.array([[0.0, 30.0, -1.0, 2.0], [5.0, 1.0, -np.inf, 0.0], [0.0, np.nan, 1.0, 1.0],
                  [np.inf, 0.0, 1.0, 2.0], [-np.inf, 1.0, 2.0, 3.0]])
    t = np.array([0, 0, 1, 2, 0])
    good = ref.reference_truth(x, t, cache=tmp_path)
    assert invariant_violation(good._asdict(), x, t) is None
    (p,) = tmp_path.glob("truth-*.npz")
    for changes, match in [({"hi": good.hi * 1.5}, "row 0: .* outside"),
                           ({"hi": good.hi * 0.5}, "row 0: .* outside"),
                           ({"hi": np.where(np.isnan(good.hi), 1.0, good.hi)}, "row 2"),
                           ({"hi": np.where(np.isinf(good.hi), 7.0, good.hi)}, "masked target"),
                           ({"mean_hi": np.float64(3.0)}, "mean"),
                           ({"lo": np.full(5, 0.5)}, "low part")]:
        _checksummed(p, **changes)
        counting.clear()
        with pytest.warns(UntrustedEntryWarning, match=match):
            again = ref.reference_truth(x, t, cache=tmp_path)
        assert len(counting) == 1
        np.testing.assert_array_equal(again.hi, good.hi)


def test_invariants_hold_on_real_truths():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal((20, 50)) * 1e3,
                        rng.standard_normal((20, 50)) * 1e-3])
    x[3, 7] = -np.inf
    x[5, :] = -np.inf
    t = rng.integers(0, 50, size=40)
    t[5] = 2
    x[6, t[6]] = x[6].max() + 200   # a loss of about 50 exp(-200)
    tr = ref.reference_truth(x, t, cache=False)
    assert invariant_violation(tr._asdict(), x, t) is None


def test_a_whole_evaluation_after_tampering_is_unchanged(tmp_path):
    """Every entry of an evaluation rewritten (hi * 1.5, key kept): the same table again."""
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((6, 30)) * 40, rng.integers(0, 30, size=6)
    first = evaluate(x, t, methods=["logsumexp", "naive"], cache=tmp_path)
    entries = sorted(tmp_path.glob("truth-*.npz"))
    assert len(entries) == 4                           # one per format
    for p in entries:
        with np.load(p) as z:
            _rewrite(p, hi=np.array(z["hi"]) * 1.5)
    with pytest.warns(UntrustedEntryWarning) as rec:
        second = evaluate(x, t, methods=["logsumexp", "naive"], cache=tmp_path)
    assert len(rec) == 4
    pd.testing.assert_frame_equal(first, second)
