"""The API refuses malformed input with an InputError naming it, as the README promises, and
accepts torch tensors straight from a model (requires_grad: detached)."""
import numpy as np
import pytest
import torch

from precision_lab import InputError, evaluate, reference_loss, validate_batch
from precision_lab.numerics.methods import METHODS
from precision_lab.truth.reference import reference_truth

X = np.array([[0.5, 1.0, -2.0], [3.0, 0.0, 1.0]])
T = np.array([0, 2])


def _longdouble_past_float64():
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("longdouble is float64 on this platform")
    a = X.astype(np.longdouble)
    a[1, 1] = np.longdouble(np.finfo(np.float64).max) * 8
    return a


@pytest.mark.parametrize("logits, match", [
    (np.array([[0.5, None, 1.0]], dtype=object), "Python objects"),
    ([[0.5, None, 1.0]], "Python objects"),
    (np.ones((1, 3), dtype=bool), "booleans"),
    (np.array([["1", "2", "3"]]), "strings"),
    (np.array([[b"1", b"2", b"3"]]), "bytes"),
    (np.zeros((1, 3), dtype="datetime64[ns]"), "datetimes"),
    (np.zeros((1, 3), dtype="f8,f8"), "structured"),
    (np.ma.masked_array(np.ones((1, 3)), mask=[[0, 1, 0]]), "masked arrays"),
    (torch.ones((1, 3), dtype=torch.complex64), "complex"),
    (np.full((1, 3), 2 ** 62 + 1, dtype=np.int64), "not exactly a float64"),
], ids=["object-None", "list-None", "bool", "str", "bytes", "datetime", "structured",
        "masked", "torch-complex", "inexact-int"])
@pytest.mark.parametrize("entry", ["validate_batch", "evaluate", "reference_loss", "method"])
def test_malformed_logits_are_refused(entry, logits, match):
    t = [0]
    call = {"validate_batch": lambda: validate_batch(logits, t),
            "evaluate": lambda: evaluate(logits, t, formats=["float32"]),
            "reference_loss": lambda: reference_loss(logits, t),
            "method": lambda: METHODS["logsumexp"](logits, t, "float32")}[entry]
    with pytest.raises(InputError, match=match):
        call()


def test_longdouble_past_float64_is_refused():
    with pytest.raises(InputError, match="outside float64's range"):
        evaluate(_longdouble_past_float64(), T)


@pytest.mark.parametrize("targets, match", [
    (np.array([0, None], dtype=object), "Python objects"), (np.array(["0", "2"]), "strings"),
    (np.array([True, False]), "booleans"), (np.ma.masked_array([0, 2]), "masked"),
])
def test_malformed_targets_are_refused(targets, match):
    with pytest.raises(InputError, match=match):
        evaluate(X, targets, formats=["float32"])


@pytest.mark.parametrize("bits", [0, -5, 2.5, 100.0, True, "100", None])
def test_bits_must_be_a_positive_integer(bits):
    for call in (lambda: evaluate(X, T, formats=["float32"], bits=bits),
                 lambda: reference_loss(X, T, bits=bits),
                 lambda: reference_truth(X, T, bits=bits, cache=False)):
        with pytest.raises(InputError, match="bits must be a positive integer"):
            call()


@pytest.mark.parametrize("kw, match", [
    ({"formats": []}, "formats is empty"), ({"methods": []}, "methods is empty"),
    ({"accumulators": []}, "accumulators is empty"),
    ({"formats": "float32"}, "bare string 'float32'"),
    ({"methods": "naive"}, "bare string 'naive'"),
    ({"accumulators": "working"}, "bare string 'working'"),
    ({"accumulators": ["working", "float64"]}, "unknown accumulator 'float64'"),
    ({"accumulators": ["wrking"]}, "unknown accumulator 'wrking'"),
    ({"formats": None}, "formats must be a list of names"),
])
def test_name_lists_are_checked(kw, match):
    with pytest.raises(InputError, match=match):
        evaluate(X, T, **kw)


def test_float32_accumulator_alone_runs_everywhere():
    df = evaluate(X, T, methods=["logsumexp"], accumulators=["float32"], mean=False)
    got = df.groupby("format")["accumulator"].unique().map(list).to_dict()
    assert got == {"bfloat16": ["float32"], "float16": ["float32"], "float32": ["working"],
                   "float64": ["working"]}


def test_tensors_that_require_grad_are_accepted_detached():
    x = torch.tensor(X, requires_grad=True)
    t = torch.tensor(T)
    a = evaluate(x, t, formats=["float32"], methods=["logsumexp", "torch"])
    b = evaluate(X, T, formats=["float32"], methods=["logsumexp", "torch"])
    assert a.equals(b)
    assert reference_loss(x * 2, t)[1] == reference_loss(X * 2, T)[1]
    xb = torch.tensor(X, dtype=torch.bfloat16, requires_grad=True)
    vx, _ = validate_batch(xb, t)
    assert vx.dtype == np.float64 and np.array_equal(vx, xb.detach().double().numpy())
    assert x.grad is None and x.requires_grad   # the caller's tensor is untouched
