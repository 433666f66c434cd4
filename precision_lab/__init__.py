"""precision_lab: the numerical precision of cross-entropy loss across floating-point formats,
measured against a certified arbitrary-precision ground truth."""
from .evaluate import evaluate, variants
from .formats import FORMATS, Format, get_format, round_to_format
from .inputs import InputError, load_logits, validate_batch
from .methods import ACCUMULATORS, METHODS, Arithmetic, Method, batch_mean, get_method, register
from .metrics import aggregate, errors
from .reference import UncertifiedError, reference_loss, reference_mean, to_double_double

__all__ = [
    "FORMATS", "Format", "get_format", "round_to_format",
    "METHODS", "Method", "get_method", "register", "Arithmetic", "ACCUMULATORS", "batch_mean",
    "reference_loss", "reference_mean", "to_double_double", "UncertifiedError",
    "errors", "aggregate", "evaluate", "variants",
    "validate_batch", "load_logits", "InputError",
]
__version__ = "0.1.0"
