"""The disk cache of certified truths: hits, misses, verification of what is read."""
import numpy as np
import pytest

from precision_lab.truth import reference as ref
from precision_lab.truth.cache import TruthCache, default_cache_dir, resolve_cache, truth_key


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
    a = ref.reference_truth(x, t, cache=tmp_path)
    assert len(counting) == 1 and not np.any(a.hi == 123.0)
    # the right key but the wrong shape
    store.store(key, {**bad, "hi": np.zeros(4), "lo": np.zeros(4)})
    assert store.load(key, 3) is None
    # the right key and shapes but object (pickled) data cannot be read
    np.savez(store.path(key), key=np.array(key), hi=np.array([object()] * 3, dtype=object),
             lo=np.zeros(3), mean_hi=np.float64(1), mean_lo=np.float64(0))
    assert store.load(key, 3) is None


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
