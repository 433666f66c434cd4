"""The errors precision_lab raises on purpose; every layer may import them."""
from __future__ import annotations

__all__ = ["InputError", "UncertifiedError"]


class InputError(ValueError):
    """The logits, targets, file or option given are not valid; the message says why."""


class UncertifiedError(ArithmeticError):
    """The two evaluations did not agree to the required bits within the precision cap."""
