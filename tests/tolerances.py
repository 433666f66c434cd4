"""Every tolerance the tests use, in one place, with the reason for each."""

# The ground truth promises this many correct bits relative (reference.DEFAULT_BITS).
REFERENCE_BITS = 100
# Precision of the independent check of the reference: direct formula, no tricks, far higher.
CHECK_PREC = 4000

# A correctly rounded result is within half an ulp, and 0 bits of error (Herbie's measure).
CORRECTLY_ROUNDED_ULP = 0.5

# Overflow thresholds of exp: log(max_finite) of each format (closed form, checked in tests).
OVERFLOW_LOGIT_REL = 1e-12

# Emulated exp/log/log1p are correctly rounded in every format (numerics.elementary), so
# methods are compared bit for bit with their scalar definitions.
METHOD_BITWISE = 0.0

# Library cross entropies (analysis.implementations) on well-scaled rows (|logit| <= 8, 10
# classes): the loss a + log(sum) - x_t is formed at the magnitude of the largest logit, so
# the error is counted in ulps at max(|loss|, max |x|, 1); 4 of them leave room for one
# rounding in each of exp, sum, log and the two additions.
IMPLEMENTATION_ULP = 4.0

# numerics.elementary's double-double evaluations must be this many times more accurate than
# the bound the module relies on (BOUNDS), measured against mpmath on adversarial inputs.
ELEMENTARY_BOUND_MARGIN = 16
# The certified gradient promises this many correct bits relative per entry (truth.grad), and
# its double-double form 2**-104 relative where the entry is at least 2**-969.
GRAD_BITS = 100
GRAD_DD_REL = 2.0 ** -104
# The certified truth with training options against torch's float64 F.cross_entropy: torch's
# float64 log_softmax and sums lose a few ulps (C up to 64 here), far below this.
TORCH_F64_REL = 1e-12
# Precision of the independent mpmath check of the options truth (direct formulas, no tricks).
OPTIONS_CHECK_PREC = 1500

# Library gradients (analysis.implementations backward adapters) on well-scaled rows: softmax
# minus one-hot; the exponent x - a (or x - lse) is rounded at the logits' magnitude, so each
# probability carries a relative error of about u max|x|: norm-wise within 4 u max(1, max|x|)
# of the certified gradient (exp, sum, division and the subtraction of 1, with room to spare).
IMPLEMENTATION_GRAD_U = 4.0

# Stochastic rounding is unbiased: a sample mean of n independent roundings lies within this
# many standard deviations (sigma = ulp sqrt(f (1 - f) / n), f the fraction) of the exact value;
# with the tests' fixed seeds the check is deterministic, and a bias of 0.01 ulp at the tests'
# n fails it. Round to nearest misses by up to half an ulp.
SR_MEAN_SIGMAS = 5.0
