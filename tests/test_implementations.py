"""Library adapters (analysis.implementations): registry, lookup errors, every available
adapter close to the certified truth in every format it supports, kernels and compile counts."""
import numpy as np
import pytest
from tolerances import IMPLEMENTATION_ULP

import precision_lab.analysis.implementations as impls
from precision_lab import InputError, evaluate
from precision_lab.numerics.formats import FORMATS
from precision_lab.truth.reference import reference_truth

RNG = np.random.default_rng(7)
X = RNG.uniform(-8, 8, size=(6, 10))
T = RNG.integers(0, 10, size=6)
FAST = [n for n in impls.available() if n not in ("tensorflow", "torch_compile")]


def _ulps(computed, fmt):
    hi, lo, _, _ = reference_truth(fmt.round(X), T, cache=False)
    # ulps at the row's largest magnitude: a + log(sum) - x_t is rounded at the logits' scale
    big = np.maximum(np.abs(fmt.round(X)).max(axis=1), np.maximum(np.abs(hi), 1.0))
    scale = fmt.ulp(big)
    return np.abs((computed - hi) - lo) / scale


def test_unknown_implementation_names_the_valid_ones():
    with pytest.raises(InputError, match="valid implementations: .*suite_log1p"):
        impls.get_implementation("no_such_library")


def test_missing_dependency_is_a_clear_error(monkeypatch):
    rec = impls.Implementation("fake", lambda *a: None, "fake", "fake()", ("float32",),
                               requires=("precision_lab_no_such_module",))
    monkeypatch.setitem(impls.IMPLEMENTATIONS, "fake", rec)
    with pytest.raises(InputError, match="needs precision_lab_no_such_module.*frameworks"):
        impls.get_implementation("fake")
    assert "fake" not in impls.available()


def test_unsupported_format_is_refused():
    with pytest.raises(InputError, match="does not support float16"):
        impls.IMPLEMENTATIONS["scipy_logsumexp"].run(X, T, "float16")


@pytest.mark.parametrize("name", FAST)
def test_adapter_is_close_to_the_truth_in_every_format(name):
    impl = impls.get_implementation(name)
    for f in impl.formats:
        fmt = FORMATS[f]
        out = impl.run(fmt.round(X), T, fmt)
        assert out.shape == T.shape and np.isfinite(out).all()
        assert np.all(_ulps(out, fmt) <= IMPLEMENTATION_ULP), (name, f)
        mean = impl.run(fmt.round(X), T, fmt, "mean")
        assert mean.shape == () and np.isfinite(mean)


def test_each_aten_kernel_runs_in_its_own_process_and_reports_itself():
    kernels = impls.cpu_kernels()
    assert kernels[0] == "default"
    for k in kernels:
        assert impls._worker(k).capability == k
        assert impls.get_implementation(f"torch_eager_{k}").kernel == k
    assert impls.baseline() == f"torch_eager_{kernels[-1]}"


def test_adapter_called_like_a_user_function_takes_the_format_dtype():
    impl = impls.get_implementation(impls.YARDSTICK)
    xb = FORMATS["bfloat16"].cast(X)
    np.testing.assert_array_equal(impl(xb, T), impl.run(FORMATS["bfloat16"].round(X), T,
                                                        "bfloat16"))
    with pytest.raises(InputError, match="dtype int64"):
        impl(np.zeros((2, 3), dtype=np.int64), np.zeros(2, dtype=np.int64))


def test_as_method_runs_inside_evaluate():
    df = evaluate(X, T, formats=["float32"], methods=[impls.as_method("torch_eager_default"),
                                                      "log1p"])
    got = set(df["method"])
    assert got == {"torch_eager_default", "log1p"}
    assert (df[df["method"] == "torch_eager_default"]["ulp_err"] <= IMPLEMENTATION_ULP).all()


def test_torch_compile_compiles_once_per_shape_and_dtype():
    impl = impls.get_implementation("torch_compile")
    fmt = FORMATS["float32"]
    x = fmt.round(X[:3, :5])
    t = np.minimum(T[:3], 4)
    before = impls.compile_count()
    a = impl.run(x, t, fmt)
    b = impl.run(x * 0.5, t, fmt)
    assert impls.compile_count() == before + 1
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))


def test_tensorflow_adapter_when_installed():
    pytest.importorskip("tensorflow")
    impl = impls.get_implementation("tensorflow")
    for f in ("bfloat16", "float32"):
        fmt = FORMATS[f]
        assert np.all(_ulps(impl.run(fmt.round(X), T, fmt), fmt) <= IMPLEMENTATION_ULP)
        g = impl.grad(fmt.round(X), T, fmt)
        ref = impls.IMPLEMENTATIONS[impls.YARDSTICK].grad(FORMATS["float64"].round(X), T,
                                                           "float64")
        assert np.abs(g - ref).max() <= 8 * fmt.unit_roundoff * np.abs(X).max()


def test_cuda_column_registers_only_with_a_gpu():
    names = impls.register_cuda_implementations()
    import torch
    assert bool(names) == torch.cuda.is_available()
    assert all(impls.IMPLEMENTATIONS[n].device == "cuda" for n in names)


def test_check_runs_an_adapter_in_the_formats_it_supports():
    from precision_lab.analysis.check import check_implementation, load_function
    impl = load_function("implementation:scipy_logsumexp")
    assert impl is impls.IMPLEMENTATIONS["scipy_logsumexp"]
    res = check_implementation(impl, baselines=False)
    assert set(res.verdict["format"]) == {"float32", "float64"}
    assert res.name == "implementation:scipy_logsumexp" and res.output == "per-row"
    with pytest.raises(InputError, match="unknown implementation"):
        load_function("implementation:nope")


GRADS = [n for n in impls.available() if impls.IMPLEMENTATIONS[n].backward is not None
         and n != "tensorflow"]


@pytest.mark.parametrize("name", GRADS)
def test_adapter_gradient_is_close_to_the_certified_one(name):
    from tolerances import IMPLEMENTATION_GRAD_U

    from precision_lab.truth.grad import reference_grad_dd
    impl = impls.get_implementation(name)
    for f in impl.formats:
        fmt = FORMATS[f]
        xr = fmt.round(X)
        hi, lo = reference_grad_dd(xr, T, "none", cache=False)
        g = impl.grad(xr, T, fmt)
        err = np.linalg.norm((g - hi) - lo, axis=1) / np.linalg.norm(hi, axis=1)
        big = np.maximum(np.abs(xr).max(axis=1), 1.0)
        bound = IMPLEMENTATION_GRAD_U * fmt.unit_roundoff * big
        assert np.all(err <= bound), (name, f, (err / bound).max())
        gm = impl.grad(xr, T, fmt, "mean")
        scale = np.linalg.norm(hi) / len(T)
        assert np.linalg.norm(gm - g / len(T)) <= 2 * bound.max() * scale * len(T), (name, f)


def test_gradients_are_measured_like_the_methods():
    df = impls.evaluate_implementation_grads(X, T, [impls.YARDSTICK, "scipy_logsumexp"],
                                             formats=["bfloat16"])
    assert set(df["method"]) == {impls.YARDSTICK}  # scipy has no gradient (nor bfloat16)
    assert len(df) == len(T)
    with pytest.raises(InputError, match="no gradient adapter"):
        impls.IMPLEMENTATIONS["scipy_logsumexp"].grad(X, T, "float32")
