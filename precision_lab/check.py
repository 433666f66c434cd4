"""`precision-lab check MODULE:FUNCTION`: a user's cross-entropy implementation against the
certified truth. (Placeholder interface; being built for issue 4.)"""
from __future__ import annotations

__all__ = ["add_arguments", "cli"]


def add_arguments(p) -> None:
    p.add_argument("target", help="MODULE:FUNCTION taking (logits, targets)")


def cli(args) -> int:
    raise NotImplementedError("precision-lab check is not built yet")
