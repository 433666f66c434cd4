"""The training-option flags shared by `check` and `analyze` (names and semantics:
`numerics.options.LossOptions`; its constructor validates the values)."""
from __future__ import annotations

from ..numerics.options import LossOptions

__all__ = ["add_option_arguments", "options_from_args"]


def add_option_arguments(p, title: str):
    """--label-smoothing --z-loss --softcap --ignore-index --reduction, in a group `title`."""
    o = p.add_argument_group(title)
    o.add_argument("--label-smoothing", type=float, default=None, metavar="EPS")
    o.add_argument("--z-loss", type=float, default=None, metavar="COEF")
    o.add_argument("--softcap", type=float, default=None, metavar="C")
    o.add_argument("--ignore-index", type=int, default=None, metavar="I")
    o.add_argument("--reduction", choices=["mean", "sum"], default=None)
    return o


def options_from_args(args) -> LossOptions | None:
    """The LossOptions the CLI flags ask for, or None when none is given."""
    kw = {k: getattr(args, k, None) for k in ("label_smoothing", "z_loss", "softcap",
                                               "ignore_index", "reduction")}
    kw = {k: v for k, v in kw.items() if v is not None}
    if getattr(args, "probabilities", False):
        kw["probabilities"] = True
    return LossOptions(**kw) if kw else None
