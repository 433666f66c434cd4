"""+inf logits follow torch's policy everywhere: any +inf logit in a row gives a nan loss (the
shift by the maximum makes inf - inf), at the target or elsewhere, once or twice, with -inf
classes or not. The truth (both backends), torch, every shifted method and the cache agree;
`naive` (unshifted) returns its formula's own +inf where the +inf is not the target."""
import numpy as np
import pytest
import torch

from precision_lab import FORMATS, evaluate, reference_loss
from precision_lab.numerics.methods import METHODS
from precision_lab.truth.cache import invariant_violation
from precision_lab.truth.reference import reference_truth

INF = np.inf
CASES = {
    "at the target": ([INF, 0.0, 1.0], 0),
    "elsewhere": ([INF, 0.0, 1.0], 1),
    "twice, one the target": ([INF, INF, 1.0], 0),
    "twice, elsewhere": ([INF, INF, 1.0], 2),
    "with -inf, target finite": ([INF, -INF, 1.0], 2),
    "with -inf at the target": ([INF, -INF, 1.0], 1),
    "target -inf, +inf elsewhere": ([-INF, INF, 1.0], 0),
    "with -inf, +inf the target": ([0.0, -INF, INF], 2),
}
X = np.array([row for row, _ in CASES.values()])
T = np.array([t for _, t in CASES.values()])
IDS = list(CASES)


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_torch_gives_nan(i):
    for fmt in FORMATS.values():
        if not METHODS["torch"].runs_in(fmt):  # no torch kernel (float8) or dtype (tf32)
            continue
        v = torch.nn.functional.cross_entropy(torch.tensor(X[i:i + 1]).to(fmt.torch_dtype),
                                              torch.tensor(T[i:i + 1]))
        assert torch.isnan(v), fmt.name


@pytest.mark.parametrize("backend", ["arb", "mpmath"])
def test_truth_is_nan(backend):
    out = reference_loss(X, T, backend=backend)
    assert all(str(v) == "nan" for v in out), list(zip(IDS, out))
    tr = reference_truth(X, T, cache=False)
    assert np.isnan(tr.hi).all() and np.isnan(tr.mean_hi)
    assert invariant_violation(tr._asdict(), X, T) is None


SHIFTED = [m for m in METHODS if m != "naive"]


@pytest.mark.parametrize("method", SHIFTED)
def test_every_shifted_method_gives_nan_as_the_truth(method):
    df = evaluate(X, T, methods=[method], cache=False)
    assert (df["outcome"] == "nan").all(), df[df["outcome"] != "nan"]
    assert df["truth"].isna().all()


def test_naive_gives_its_formulas_inf_where_the_inf_is_not_the_target():
    out = METHODS["naive"](X, T, "float32")
    at_target = X[np.arange(len(T)), T] == INF
    assert np.isnan(out[at_target]).all()            # inf / inf
    assert (out[~at_target] == INF).all()            # exp(x_t) / inf = 0, -log 0


def test_a_finite_row_beside_is_unaffected():
    x = np.vstack([X, [[0.5, 1.0, -1.0]]])
    t = np.append(T, 1)
    df = evaluate(x, t, methods=["logsumexp", "log1p", "torch"], mean=False, cache=False)
    last = df[df["row"] == len(T)]
    assert (last["outcome"] == "finite").all() and np.isfinite(last["truth"]).all()
