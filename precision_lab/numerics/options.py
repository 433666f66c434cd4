"""The options people train cross entropy with, as one record: `LossOptions`.

Names and semantics are those of `torch.nn.functional.cross_entropy` (checked against torch
2.13 in float64 by tests/test_options.py), plus two options torch does not have: PaLM's
z-loss and Gemma 2's logit soft-cap. This docstring is the one place they are defined; the
certified truth (`truth.options`), the emulated methods (`numerics.optioned`), `evaluate`,
`check` and the `options` experiment all follow it.

Notation: logits x (N, C); y = x, or y = softcap * tanh(x / softcap) when `softcap` is set
(applied first: every other option sees y, and a -inf logit becomes -softcap, a live class);
lse_n = log sum_c exp(y_nc); log p_nc = y_nc - lse_n; w = `weight` (C,) or all ones;
eps = `label_smoothing`; z = `z_loss`.

Class-index targets t (N,). Row n is *kept* when t_n != `ignore_index` (default -100; a target
must be in [0, C) or equal `ignore_index`, which may itself be a class):
  nll_n    = -w[t_n] log p[n, t_n]                      (0 for an ignored row)
  smooth_n = -sum_c w_c log p_nc                        (0 for an ignored row; eps > 0 only)
  zl_n     = w[t_n] lse_n ** 2                          (0 for an ignored row; z > 0 only)
  reduction "none":  loss_n = (1 - eps) nll_n + (eps / C) smooth_n + z zl_n
                     (with eps = 0 the smoothing term is not formed at all, as in torch:
                     a -inf non-target logit then leaves the loss finite)
  reduction "sum":   sum_n loss_n
  reduction "mean":  sum_n loss_n / D,  D = sum over kept rows of w[t_n]
                     (without `weight`, D is the number of kept rows). The weights scale rows
                     under "none" too (w[t_n] nll_n, not divided). An all-ignored batch, or
                     kept weights summing to zero, gives 0 / 0 = nan (a nonzero numerator over
                     D = 0 gives +-inf); "sum" gives 0 for an all-ignored batch.
Probability targets P (N, C), `probabilities=True` (torch infers them from the shape; here the
kind is stated, so a batch of the other kind is an error, not a reinterpretation):
  q_nc     = (1 - eps) P_nc + eps / C                   (label smoothing mixes in the uniform)
  loss_n   = -sum_c w_c q_nc log p_nc + z lse_n ** 2
  "mean" divides the sum by N (not by any weights); `ignore_index` is refused (torch:
  "ignore_index is not supported for floating point target"). P must be finite and >= 0;
  rows need not sum to 1 (torch does not require it).
Non-finite logits, as torch: a -inf logit is a masked class (exp = 0) unless soft-capped, but
its log p is -inf, so it makes smooth_n +inf (nan where its weight is 0: 0 * inf), and a
probability target's term nan (q = 0) or +inf; a -inf target gives nll +inf; every class -inf,
a +inf logit or a nan logit gives nan for that row (torch's log_softmax subtracts the row max:
inf - inf). Ignored rows are 0 whatever their logits. IEEE rules combine the rest
((1 - eps) * inf = nan at eps = 1).

Validation (`LossOptions.__post_init__`, `check_batch`) raises InputError naming the problem:
a reduction other than the three, label_smoothing outside [0, 1], a negative or non-finite
z_loss, a soft-cap that is not a positive finite number, a weight that is not C finite
numbers, targets of the wrong kind, shape or range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..errors import InputError

__all__ = ["LossOptions", "OPTION_NAMES", "REDUCTIONS", "DEFAULT_IGNORE_INDEX", "check_batch",
           "require_supported"]

REDUCTIONS = ("none", "mean", "sum")
DEFAULT_IGNORE_INDEX = -100
# The option names a `Method.options` declares (those a method may be unable to express).
OPTION_NAMES = ("weight", "ignore_index", "reduction", "label_smoothing", "probabilities",
                "z_loss", "softcap")


def _real(name: str, v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a real number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class LossOptions:
    """The training options of one cross-entropy call (semantics: this module's docstring).

    `weight` is kept as a tuple of floats (hashable, comparable); `weight_array` gives it as
    float64. Defaults are torch's: no weight, ignore_index -100, reduction "mean", no smoothing,
    class-index targets; no z-loss, no soft-cap."""
    weight: tuple | None = None
    ignore_index: int = DEFAULT_IGNORE_INDEX
    reduction: str = "mean"
    label_smoothing: float = 0.0
    probabilities: bool = False
    z_loss: float = 0.0
    softcap: float | None = None

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise InputError(f"reduction must be one of {', '.join(REDUCTIONS)}; "
                             f"got {self.reduction!r}")
        eps = _real("label_smoothing", self.label_smoothing)
        if not 0.0 <= eps <= 1.0:
            raise InputError(f"label_smoothing must be between 0.0 and 1.0, got {eps!r}")
        z = _real("z_loss", self.z_loss)
        if not (math.isfinite(z) and z >= 0.0):
            raise InputError(f"z_loss must be a finite number >= 0, got {z!r}")
        if self.softcap is not None:
            c = _real("softcap", self.softcap)
            if not (math.isfinite(c) and c > 0.0):
                raise InputError(f"softcap must be a positive finite number (or None), got {c!r}")
            object.__setattr__(self, "softcap", c)
        if isinstance(self.ignore_index, (bool, np.bool_)) or \
                not isinstance(self.ignore_index, (int, np.integer)):
            raise InputError(f"ignore_index must be an integer, got {self.ignore_index!r}")
        if not isinstance(self.probabilities, (bool, np.bool_)):
            raise InputError(f"probabilities must be True or False, got {self.probabilities!r}")
        if self.probabilities and self.ignore_index != DEFAULT_IGNORE_INDEX:
            raise InputError("ignore_index is not supported with probability targets "
                             "(as in torch)")
        if self.weight is not None:
            try:
                w = np.asarray(self.weight, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"weight must be a 1-D array of real numbers: {exc}") from None
            if w.ndim != 1 or w.size == 0:
                raise InputError(f"weight must be 1-D, one entry per class; got shape {w.shape}")
            if not np.isfinite(w).all():
                raise InputError("weight must be finite numbers")
            object.__setattr__(self, "weight", tuple(w.tolist()))
        object.__setattr__(self, "label_smoothing", eps)
        object.__setattr__(self, "z_loss", z)
        object.__setattr__(self, "ignore_index", int(self.ignore_index))
        object.__setattr__(self, "probabilities", bool(self.probabilities))

    @property
    def weight_array(self) -> np.ndarray | None:
        return None if self.weight is None else np.asarray(self.weight, dtype=np.float64)

    @property
    def used(self) -> frozenset:
        """The options that differ from plain cross entropy (a method must express them)."""
        out = set()
        if self.weight is not None:
            out.add("weight")
        if self.ignore_index != DEFAULT_IGNORE_INDEX:
            out.add("ignore_index")
        if self.reduction != "mean":
            out.add("reduction")
        if self.label_smoothing > 0:
            out.add("label_smoothing")
        if self.probabilities:
            out.add("probabilities")
        if self.z_loss > 0:
            out.add("z_loss")
        if self.softcap is not None:
            out.add("softcap")
        return frozenset(out)

    def label(self) -> str:
        """A short label of the non-default options ("plain" when none), for tables."""
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                parts.append(f"{f.name}=<{len(v)}>" if f.name == "weight" else f"{f.name}={v}")
        return ", ".join(parts) or "plain"

    def torch_kwargs(self) -> dict:
        """The keyword arguments F.cross_entropy takes (without weight, which needs a dtype)."""
        return {"ignore_index": self.ignore_index, "reduction": self.reduction,
                "label_smoothing": self.label_smoothing}


def check_batch(logits, targets, options: LossOptions) -> tuple[np.ndarray, np.ndarray]:
    """(logits float64 (N, C), targets) for `options`, or InputError: int64 (N,) class indices
    in [0, C) or equal to ignore_index, or float64 (N, C) probabilities (finite, >= 0)."""
    if not isinstance(options, LossOptions):
        raise InputError(f"options must be a LossOptions, got {type(options).__name__}")
    try:
        x = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"logits are not an array of real numbers: {exc}") from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"logits must be 2-D (rows, classes) with at least one of each, "
                         f"got shape {x.shape}")
    n, c = x.shape
    if options.weight is not None and len(options.weight) != c:
        raise InputError(f"weight has {len(options.weight)} entries for {c} classes")
    t = np.asarray(targets)
    if options.probabilities:
        if t.shape != x.shape:
            raise InputError(f"probability targets must have the logits' shape {x.shape}, "
                             f"got {t.shape}")
        try:
            p = t.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError("probability targets must be real numbers") from None
        if not np.isfinite(p).all() or (p < 0).any():
            raise InputError("probability targets must be finite and >= 0")
        return np.ascontiguousarray(x), np.ascontiguousarray(p)
    if t.ndim != 1 or len(t) != n:
        hint = (" (for (N, C) probability targets pass probabilities=True)"
                if t.shape == x.shape else "")
        raise InputError(f"targets must be {n} class indices, got shape {t.shape}{hint}")
    if t.dtype == np.bool_ or not (np.issubdtype(t.dtype, np.integer) or
                                   np.issubdtype(t.dtype, np.floating)):
        raise InputError(f"targets must be integer class indices, got {t.dtype}")
    tf = t.astype(np.float64)
    if not (np.isfinite(tf) & (tf == np.floor(tf))).all():
        raise InputError("targets must be integer class indices")
    ok = ((tf >= 0) & (tf < c)) | (tf == options.ignore_index)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(f"target {t[i].item()} of row {i} is out of range [0, {c}) and not "
                         f"ignore_index ({options.ignore_index})")
    return np.ascontiguousarray(x), tf.astype(np.int64)


def require_supported(method_name: str, supported: frozenset, options: LossOptions) -> None:
    """InputError naming the options `method_name` cannot express, if any are in use."""
    missing = sorted(options.used - supported)
    if missing:
        raise InputError(f"method {method_name!r} cannot express option(s) "
                         f"{', '.join(missing)}; it supports: "
                         f"{', '.join(sorted(supported)) or 'none'}")
