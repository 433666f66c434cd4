"""precision_lab: the numerical precision of cross-entropy loss across floating-point formats,
measured against a certified arbitrary-precision ground truth.

Layers, bottom to top (a module imports only from layers below it, or its own):
  errors      the exceptions every layer raises
  running     storage (one atomic writer, locks), provenance (one fingerprint, machine and
              kernel facts), the grid runner (workers, Dask, checkpoints); no numerics
  data        batches: validation, loading files, synthetic and trained logits
  numerics    formats, arithmetic (rounding, accumulators), methods (one record each),
              metrics, error bounds
  truth       the certified reference (mpmath, the fixed-point engine, arb) and its cache
  reporting   tables, figures, the reports index (no numerics)
  analysis    evaluate, grid cells, check
  experiments one module per experiment; the runner; the command line
"""
from .analysis.analyze import Analysis, analyze
from .analysis.evaluate import evaluate, variants
from .analysis.evaluate_grad import evaluate_grad, grad_methods
from .analysis.tolerance import Tolerance, tolerance
from .data.inputs import load_logits, validate_batch
from .errors import InputError, UncertifiedError
from .numerics import gradients  # noqa: F401  (declares every method's backward)
from .numerics.arithmetic import ACCUMULATORS, Arithmetic
from .numerics.formats import FORMATS, STANDARD_FORMATS, Format, custom_format, get_format, round_to_format
from .numerics.methods import METHODS, Method, batch_mean, get_method, register
from .numerics.metrics import aggregate, errors
from .numerics.options import LossOptions
from .truth.grad import reference_grad
from .truth.reference import reference_loss, reference_mean, to_double_double

__all__ = [
    "FORMATS", "STANDARD_FORMATS", "Format", "custom_format", "get_format", "round_to_format",
    "METHODS", "Method", "get_method", "register", "Arithmetic", "ACCUMULATORS", "batch_mean",
    "reference_loss", "reference_mean", "to_double_double", "UncertifiedError",
    "reference_grad",
    "errors", "aggregate", "evaluate", "variants", "evaluate_grad", "grad_methods",
    "analyze", "Analysis",
    "validate_batch", "load_logits", "InputError", "LossOptions", "tolerance", "Tolerance",
]
__version__ = "0.1.0"
