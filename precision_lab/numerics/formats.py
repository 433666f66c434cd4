"""The floating-point format registry and correct rounding of float64 values into a format.

Values of every format are carried in float64 arrays (every value of every format here is
exactly a float64), so the methods can round each operation explicitly with `Format.round`.

A `Format` is data: precision p (significand bits, implicit bit included), the normal exponent
range [emin, emax], how the encoding spends its top codes (IEEE: an all-ones exponent for inf
and NaN; OCP float8_e4m3fn: no infinity, only the all-ones pattern is NaN), what rounding
does past the largest finite value (`overflow`), and the rounding mode of arithmetic in it
(`rounding`: "nearest", or "stochastic" with a `seed`; see numerics.stochastic).

Named formats (`FORMATS`): float16, bfloat16, float32, float64, float8_e5m2, float8_e4m3fn, tf32.
Any other format is spelled (on every command line and in `get_format`):
  p=5,emin=-14,emax=15          precision and exponent range (emin defaults to 1 - emax)
  ...,overflow=saturate         overflow to +-max_finite instead of +-inf (or NaN)
  ...,round=sr[,seed=3]         stochastic rounding of the arithmetic (round=nearest: default)
  float16,round=sr              a named format with options
and is shown in reports by a stable name that parses back: p5_emin-14_emax15, float16_sr,
float16_sr3 (seed 3), float8_e4m3fn_sat, p5_emin-14_emax15_sat_sr.

float8_e4m3fn overflow: the OCP 8-bit specification (OFP8 rev. 1.0, 2023) defines two
conversion modes, saturating (to +-448) and non-saturating (to NaN, since e4m3fn has no
infinity). This suite's rounding is non-saturating, as ml_dtypes' casts are (so overflow stays
visible as a non-finite outcome): |x| > 464 (448 plus half an ulp; 464 itself is a tie that
goes to the even 448) and +-inf give NaN. `float8_e4m3fn_sat` is the saturating mode, which
is what torch's `.to(torch.float8_e4m3fn)` does (inf included). float8_e5m2 is IEEE-like:
overflow and inf give inf.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch

from ..errors import InputError
from . import fastround

__all__ = ["Format", "FORMATS", "STANDARD_FORMATS", "FLOAT8_FORMATS", "get_format",
           "custom_format", "round_to_format", "quantum_exponent", "overflow_to_format",
           "NEAREST", "STOCHASTIC", "OVERFLOWS"]

NEAREST, STOCHASTIC = "nearest", "stochastic"
OVERFLOWS = ("inf", "nan", "saturate")


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: `precision` significand bits (implicit bit included),
    normal exponents in [emin, emax], gradual underflow.

    infinities:    the format encodes +-inf (an all-ones exponent reserved for inf and NaN);
    top_nan_codes: how many of the largest significands of the top binade are NaN codes
                   instead of numbers (float8_e4m3fn: 1, S.1111.111; IEEE formats: 0);
    overflow:      what rounding gives past the overflow threshold: "inf", "nan", "saturate";
    rounding:      the rounding of arithmetic in the format ("nearest" or "stochastic");
                   `round` (one cast) is always round-to-nearest-even;
    seed:          the key of stochastic rounding's random bits;
    native:        numpy arithmetic in `dtype` is correctly rounded to this format (the tests
                   check every pair for the float8 formats), so sums may use numpy's
                   sequential `add.accumulate` in it.
    """

    name: str
    dtype: np.dtype | None
    torch_dtype: torch.dtype | None
    precision: int
    emin: int
    emax: int
    infinities: bool = True
    top_nan_codes: int = 0
    overflow: str = "inf"
    rounding: str = NEAREST
    seed: int = 0
    native: bool = False

    @property
    def unit_roundoff(self) -> float:
        """u = 2^-p: the largest relative error of one round-to-nearest."""
        return 2.0 ** -self.precision

    @property
    def max_rel_error(self) -> float:
        """The largest relative error of one rounding in the arithmetic's mode: u for round to
        nearest, 2u (one ulp) for stochastic rounding."""
        return self.unit_roundoff * (2.0 if self.rounding == STOCHASTIC else 1.0)

    @property
    def max_finite(self) -> float:
        return (2.0 - 2.0 ** (1 - self.precision) * (1 + self.top_nan_codes)) * 2.0 ** self.emax

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.precision + 1)

    @property
    def overflow_logit(self) -> float:
        """The largest x for which exp(x) is finite in exact arithmetic: log(max_finite).

        A correctly rounded exp overflows slightly later (where exp(x) reaches max_finite plus
        half an ulp); this is the textbook threshold, e.g. log(65504) = 11.09 for float16.
        """
        return math.log(self.max_finite)

    @property
    def exponent_bits(self) -> int:
        """Exponent field width: enough codes for emax - emin + 1 normal exponents, the
        subnormal/zero code and (with infinities) the all-ones inf/NaN code."""
        return math.ceil(math.log2(self.emax - self.emin + (3 if self.infinities else 2)))

    @property
    def bits(self) -> int:
        """Storage width: sign, exponent field, p - 1 stored significand bits."""
        return 1 + self.exponent_bits + self.precision - 1

    @property
    def nan_encodings(self) -> int:
        """How many bit patterns are NaN: with infinities, every nonzero significand under the
        all-ones exponent (both signs); otherwise the `top_nan_codes` of each sign."""
        if self.infinities:
            return 2 * (2 ** (self.precision - 1) - 1)
        return 2 * self.top_nan_codes

    @property
    def is_float64(self) -> bool:
        """Rounding to it is the identity on float64 values."""
        return self.precision >= 53 and self.emin <= -1022 and self.emax >= 1023 \
            and self.overflow == "inf"

    def round(self, x, residual=None) -> np.ndarray:
        """Round float64 values to this format once (round to nearest, ties to even).

        Returns float64 carrying the rounded values; overflow as `overflow` says, NaN stays
        NaN. `residual` (optional): the float64 error of `x` against an exact value x + r,
        which decides a tie at x (see `round_to_format`).
        """
        return round_to_format(x, self, residual)

    def cast(self, x) -> np.ndarray:
        """Correctly round float64 values and return them in this format's numpy dtype."""
        if self.dtype is None:
            raise InputError(f"format {self.name} has no numpy dtype; its values are carried "
                             f"in float64 (use Format.round)")
        return self.round(x).astype(self.dtype)

    def ulp(self, x) -> np.ndarray:
        """The spacing of this format at |x| (the gap to the next larger magnitude); inf at inf."""
        x = np.abs(np.asarray(x, dtype=np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            _, e = np.frexp(x)  # x = m * 2**e, 0.5 <= m < 1
        exponent = np.maximum(e.astype(np.int64) - 1, self.emin)
        out = np.where(x == 0, self.min_subnormal, np.ldexp(1.0, exponent - (self.precision - 1)))
        return np.where(np.isfinite(x), out, np.inf)


def quantum_exponent(x: np.ndarray, fmt: Format) -> np.ndarray:
    """q such that 2**q is the spacing of `fmt` at float64 `x` (floored at the subnormal
    spacing): x / 2**q is an integer exactly when x is a value of the format."""
    with np.errstate(invalid="ignore"):
        _, e = np.frexp(x)
    return np.maximum(e.astype(np.int64) - fmt.precision, fmt.emin - fmt.precision + 1)


def overflow_to_format(y: np.ndarray, x: np.ndarray, fmt: Format) -> np.ndarray:
    """Apply `fmt.overflow` to rounded values `y` of inputs `x`: a finite y past max_finite,
    and an infinite x where the format has no infinity."""
    with np.errstate(invalid="ignore"):
        over = np.abs(y) > fmt.max_finite
    if fmt.overflow == "inf":
        return np.where(over & np.isfinite(x), np.copysign(np.inf, x), y)
    if fmt.overflow == "nan":
        return np.where(over, np.nan, y)
    return np.where(over, np.copysign(fmt.max_finite, x), y)  # saturate (inf included)


def round_to_format(x, fmt: Format, residual=None) -> np.ndarray:
    """One correct rounding (round-to-nearest-even) of float64 `x` into `fmt`, as float64.

    Every product here is by a power of two and exact in float64, and `np.rint` rounds half to
    even, so the only rounding is the one `np.rint` makes at the format's quantum. This avoids
    ml_dtypes' float64 -> bfloat16 cast, which goes through float32 and so rounds twice.

    `residual`: where x is itself the float64 rounding of an exact result x + r (r given, as
    TwoSum returns it), a tie at x is not a tie of the exact result: it is decided by the sign
    of r. That is the only case where rounding x differs from rounding x + r (no format
    boundary lies strictly between two adjacent doubles, p <= 52), so the result is the correct
    rounding of x + r for every precision, beyond the 2p + 2 <= 53 where double rounding is
    innocuous anyway.
    """
    x = np.asarray(x, dtype=np.float64)
    if fmt.is_float64:
        return x.copy()
    if residual is None and fmt.precision <= 51 and x.size >= fastround.MIN_SIZE:
        # the same rounding, compiled (numerics/fastround.py); it overflows to +-inf, which
        # overflow_to_format turns into NaN or +-max_finite for the formats that say so
        y = fastround.round_compiled(x, fmt.precision, fmt.emin, fmt.max_finite)
        return y if fmt.overflow == "inf" else overflow_to_format(y, x, fmt)
    return _round_numpy(x, fmt, residual)


def _round_numpy(x: np.ndarray, fmt: Format, residual=None) -> np.ndarray:
    """`round_to_format` in numpy operations (the definition the compiled kernel matches)."""
    with np.errstate(invalid="ignore", over="ignore"):
        q = quantum_exponent(x, fmt)
        scaled = np.ldexp(x, -q)
        r = np.rint(scaled)
        if residual is not None:
            res = np.broadcast_to(np.asarray(residual, dtype=np.float64), x.shape)
            tie = (np.abs(scaled - np.trunc(scaled)) == 0.5) & (res != 0)
            if np.any(tie):
                toward = np.where(np.sign(res) == np.sign(x), np.trunc(scaled) + np.sign(x),
                                  np.trunc(scaled))
                r = np.where(tie, toward, r)
        y = np.ldexp(r, q)
    return overflow_to_format(y, x, fmt)


def _named(name, dtype, torch_dtype, p, emin, emax, **kw) -> Format:
    return Format(name, None if dtype is None else np.dtype(dtype), torch_dtype, p, emin, emax,
                  **kw)


_F = [
    _named("float16", np.float16, torch.float16, 11, -14, 15, native=True),
    _named("bfloat16", ml_dtypes.bfloat16, torch.bfloat16, 8, -126, 127, native=True),
    _named("float32", np.float32, torch.float32, 24, -126, 127, native=True),
    _named("float64", np.float64, torch.float64, 53, -1022, 1023, native=True),
    _named("float8_e5m2", ml_dtypes.float8_e5m2, torch.float8_e5m2, 3, -14, 15, native=True),
    _named("float8_e4m3fn", ml_dtypes.float8_e4m3fn, torch.float8_e4m3fn, 4, -6, 8,
           infinities=False, top_nan_codes=1, overflow="nan", native=True),
    # NVIDIA TensorFloat-32: float32's exponent range, float16's precision, no storage dtype
    # (a mode of GPU matrix units); 19 bits.
    _named("tf32", None, None, 11, -126, 127),
]

STANDARD_FORMATS = ("float16", "bfloat16", "float32", "float64")  # every default run
FLOAT8_FORMATS = ("float8_e5m2", "float8_e4m3fn")


class _Registry(dict):
    """The named formats; a lookup of any other stable name (p5_emin-14_emax15, float16_sr)
    builds that format, so `FORMATS[name]` works for every name a report shows."""

    def __missing__(self, key):
        fmt = _parse_name(key) if isinstance(key, str) else None
        if fmt is None:
            raise KeyError(key)
        return fmt

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default


FORMATS: dict[str, Format] = _Registry((f.name, f) for f in _F)

_CUSTOM = re.compile(r"^p(\d+)_emin(-?\d+)_emax(-?\d+)$")
_SUFFIX = re.compile(r"^(?P<base>.+?)(?P<sat>_sat)?(?P<sr>_sr(?P<seed>\d*))?$")


def _check_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InputError(f"format {name} must be an integer, got {v!r}")
    return int(v)


def custom_format(precision: int, emin: int | None = None, emax: int = 15, *,
                  overflow: str = "inf", rounding: str = NEAREST, seed: int = 0) -> Format:
    """An IEEE-style binary format of `precision` bits and normal exponents [emin, emax]
    (emin defaults to 1 - emax, IEEE's bias rule), with infinities and gradual underflow;
    `overflow` "inf" or "saturate"; `rounding` of its arithmetic "nearest" or "stochastic".

    Its values are carried in float64, so 2 <= precision <= 53, emax <= 1023 and the smallest
    subnormal 2**(emin - precision + 1) >= 2**-1074. Its name (p5_emin-14_emax15, with _sat
    and _sr[SEED] suffixes) is what reports show and what `get_format` parses back.
    """
    p = _check_int("precision", precision)
    emax = _check_int("emax", emax)
    emin = 1 - emax if emin is None else _check_int("emin", emin)
    if not 2 <= p <= 53:
        raise InputError(f"format precision must be in 2..53 (values are carried in float64), "
                         f"got {p}")
    if emin > emax:
        raise InputError(f"format emin ({emin}) must not exceed emax ({emax})")
    if emax > 1023 or emin - p + 1 < -1074:
        raise InputError(f"format range emin={emin}, emax={emax} at p={p} exceeds float64's "
                         f"(emax <= 1023, emin - p + 1 >= -1074)")
    if overflow not in ("inf", "saturate"):
        raise InputError(f"overflow of a custom format must be inf or saturate, got "
                         f"{overflow!r}")
    base = Format(f"p{p}_emin{emin}_emax{emax}", None, None, p, emin, emax)
    return _variant(base, overflow=overflow, rounding=rounding, seed=seed)


def _variant(fmt: Format, overflow: str | None = None, rounding: str | None = None,
             seed: int | None = None) -> Format:
    """fmt with another overflow mode and/or rounding mode, named with suffixes."""
    overflow = fmt.overflow if overflow is None else overflow
    rounding = _rounding_name(fmt.rounding if rounding is None else rounding)
    seed = fmt.seed if seed is None else _check_int("seed", seed)
    if seed < 0:
        raise InputError(f"format seed must be non-negative, got {seed}")
    valid = ("inf" if fmt.infinities else "nan", "saturate")
    if overflow not in valid:
        raise InputError(f"overflow of {fmt.name} must be one of {', '.join(valid)}, got "
                         f"{overflow!r}")
    if (overflow, rounding, seed) == (fmt.overflow, fmt.rounding, fmt.seed):
        return fmt
    base = _SUFFIX.match(fmt.name).group("base")
    default_overflow = "inf" if fmt.infinities else "nan"
    name = base + ("_sat" if overflow == "saturate" and default_overflow != "saturate" else "")
    if rounding == STOCHASTIC:
        name += f"_sr{seed if seed else ''}"
    return dataclasses.replace(fmt, name=name, overflow=overflow, rounding=rounding, seed=seed,
                               native=fmt.native and overflow == fmt.overflow)


def _rounding_name(r: str) -> str:
    aliases = {"nearest": NEAREST, "rn": NEAREST, "stochastic": STOCHASTIC, "sr": STOCHASTIC}
    if r not in aliases:
        raise InputError(f"rounding must be nearest (rn) or stochastic (sr), got {r!r}")
    return aliases[r]


def _parse_name(name: str) -> Format | None:
    """A stable name back to its format (None if it is not one)."""
    m = _SUFFIX.match(name)
    if not m:
        return None
    base = m.group("base")
    if base in _F_NAMES:
        fmt = dict.__getitem__(FORMATS, base)
    else:
        c = _CUSTOM.match(base)
        if not c:
            return None
        fmt = custom_format(int(c.group(1)), int(c.group(2)), int(c.group(3)))
    if not (m.group("sat") or m.group("sr")):
        return fmt
    seed = int(m.group("seed")) if m.group("seed") else 0
    return _variant(fmt, overflow="saturate" if m.group("sat") else None,
                    rounding=STOCHASTIC if m.group("sr") else None, seed=seed)


_F_NAMES = frozenset(f.name for f in _F)
_KEYS = {"p": "precision", "precision": "precision", "emin": "emin", "emax": "emax",
         "overflow": "overflow", "round": "rounding", "rounding": "rounding", "seed": "seed"}


def _parse_spec(spec: str) -> Format:
    """`p=5,emin=-14,emax=15[,overflow=saturate][,round=sr][,seed=3]` or `NAME,key=value...`."""
    parts = [s.strip() for s in spec.split(",") if s.strip()]
    base = None
    if parts and "=" not in parts[0]:
        base = get_format(parts.pop(0))
    kw: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise InputError(f"bad format spelling {spec!r}: {part!r} is not one of "
                             f"{', '.join(sorted(set(_KEYS)))}=VALUE")
        value = value.strip()
        if _KEYS[key] in ("precision", "emin", "emax", "seed"):
            try:
                kw[_KEYS[key]] = int(value)
            except ValueError:
                raise InputError(f"bad format spelling {spec!r}: {key} must be an integer, "
                                 f"got {value!r}") from None
        else:
            kw[_KEYS[key]] = value
    if base is not None:
        if {"precision", "emin", "emax"} & set(kw):
            raise InputError(f"bad format spelling {spec!r}: a named format takes only "
                             f"overflow, round and seed")
        return _variant(base, kw.get("overflow"), kw.get("rounding"), kw.get("seed"))
    if "precision" not in kw or "emax" not in kw:
        raise InputError(f"bad format spelling {spec!r}: give at least p=P,emax=EMAX "
                         f"(emin defaults to 1 - emax)")
    return custom_format(kw["precision"], kw.get("emin"), kw["emax"],
                         overflow=kw.get("overflow", "inf"),
                         rounding=kw.get("rounding", NEAREST), seed=kw.get("seed", 0))


def get_format(name: str | Format) -> Format:
    """A format by name (registered or a stable custom name) or by its spelling
    `p=5,emin=-14,emax=15[,...]`; a clear error lists the valid names and the spelling."""
    if isinstance(name, Format):
        return name
    if isinstance(name, str):
        if "=" in name or "," in name:
            return _parse_spec(name)
        try:
            return FORMATS[name]
        except KeyError:
            pass
    raise InputError(f"unknown format {name!r}; valid formats: {', '.join(_F_NAMES_ORDER)}, "
                     f"or p=P,emin=EMIN,emax=EMAX[,overflow=saturate][,round=sr][,seed=N] "
                     f"(also NAME,round=sr)") from None


_F_NAMES_ORDER = [f.name for f in _F]
