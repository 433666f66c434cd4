"""Other libraries' cross entropy as adapters: numpy logits in, per-row losses out.

An implementation is one `Implementation` record, registered with `@register_implementation`
like a method (`numerics.methods`): its name, the library call it makes, the formats it
supports, the device it runs on, the packages it needs, and its forward
`fn(x, targets, fmt, reduction)`, where `x` is float64 carrying values of `fmt` (exact in its
dtype), `reduction` is "none" (per-row losses) or "mean" (the library's own batch mean), and
the result is float64. The record converts `x` to the library's dtype exactly; what the
library does inside (its kernels, its accumulators) is what is measured.

Registered here (each needs its library; `pip install -e .[frameworks]`):
  torch_eager_default / _avx2 / _avx512  F.cross_entropy, eager, on the CPU, under one ATen CPU
        kernel each: ATEN_CPU_CAPABILITY is read once when torch is imported, so each runs in a
        child process of its own (`aten_worker`, one thread); the kernel the child reports
        (torch.backends.cpu.get_cpu_capability()) is checked, and kernels this CPU cannot run
        are unavailable.
  torch_compile    the same under torch.compile (inductor, C++ on the CPU), in this process: one
        graph per (shape, dtype, reduction), static shapes, compiled once and counted
        (`compile_count`).
  jax_optax        optax.softmax_cross_entropy_with_integer_labels, jitted, JAX's CPU backend
        (float64 with jax_enable_x64, which this module turns on when it first uses JAX).
  jax_log_softmax  -jax.nn.log_softmax(x)[t], jitted, the same backend.
  scipy_log_softmax / scipy_logsumexp   -scipy.special.log_softmax(x)[t] and
        logsumexp(x) - x_t (float32, float64; scipy has no 16-bit path of its own).
  tensorflow       tf.nn.sparse_softmax_cross_entropy_with_logits on the CPU.
  suite_log1p      the suite's own best method (`log1p`, Blanchard-Higham-Higham), sums in
        float32 for the 16-bit formats and in the working format otherwise: the yardstick.

CUDA: `register_cuda_implementations()` adds torch_eager_cuda and torch_compile_cuda
(device="cuda") when torch.cuda.is_available(); it is called on import, so on a machine with a
GPU they appear in `IMPLEMENTATIONS` and every experiment that loops over `available()` runs
them. GPU-only kernels (Liger, Cut Cross-Entropy, flash-attn's) belong there too, as further
`@register_implementation(..., device="cuda", requires=(...))` adapters.

Gradient: `Implementation.backward(x, targets, fmt, reduction)` -> (N, C) float64 is each
adapter's dL/dx as its library computes it (autograd in torch, jax.grad, tf.GradientTape; the
yardstick's is the `log1p` method's backward with float32 sums for 16-bit formats);
`evaluate_implementation_grads` measures it against the certified gradient
(truth.grad.reference_grad_dd). torch_compile and scipy have none (a compiled backward graph
per shape is not worth its compile time here; scipy has no autograd).

`as_method(impl)` wraps an adapter as a `numerics.methods.Method` (family "library", its own
reduction), so `evaluate`, and every analysis built on it, takes implementations beside
methods; and an `Implementation` called on an array of a format's numpy dtype returns its
per-row losses, so `check.check_implementation(impl)` checks it like a user's function.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from ..data.inputs import validate_batch
from ..errors import InputError
from ..numerics.arithmetic import ACCUMULATORS, OWN
from ..numerics.formats import FORMATS, STANDARD_FORMATS, get_format
from ..numerics.grad_metrics import grad_error_columns
from ..numerics.methods import Method, get_method
from ..truth.grad import reference_grad_dd
from . import aten_worker
from .cells import representable_rows
from .evaluate import evaluate

__all__ = ["Implementation", "IMPLEMENTATIONS", "register_implementation", "get_implementation",
           "available", "as_method", "cpu_kernels", "compile_count", "KERNELS",
           "register_cuda_implementations", "baseline", "YARDSTICK", "close_workers",
           "evaluate_implementations", "evaluate_implementation_grads"]

ALL_FORMATS = STANDARD_FORMATS  # the adapters run in the standard formats
KERNELS = ("default", "avx2", "avx512")  # ATEN_CPU_CAPABILITY values, narrowest first


@dataclass(frozen=True)
class Implementation:
    """One library's cross entropy, as the suite runs it."""
    name: str
    fn: Callable            # (x float64 in fmt, targets int64, fmt, reduction) -> float64
    library: str            # torch | jax | scipy | tensorflow | precision_lab
    call: str               # the library call, as a user would write it
    formats: tuple          # the formats it supports
    device: str = "cpu"     # cpu | cuda
    requires: tuple = ()    # the importable modules it needs
    kernel: str | None = None  # the ATen CPU kernel it is pinned to, if any
    color: str | None = None
    backward: Callable | None = None  # the gradient: filled once the reference gradient lands
    options: frozenset = field(default_factory=frozenset)

    def missing(self) -> list[str]:
        """The modules it needs that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def run(self, x, targets, fmt, reduction: str = "none") -> np.ndarray:
        """Per-row losses (reduction "none") or the batch mean ("mean") of logits `x` (float64
        carrying values of `fmt`), as float64."""
        fmt = get_format(fmt)
        if fmt.name not in self.formats:
            raise InputError(f"implementation {self.name!r} does not support {fmt.name}; "
                             f"it supports {', '.join(self.formats)}")
        if reduction not in ("none", "mean"):
            raise InputError(f"reduction must be 'none' or 'mean', got {reduction!r}")
        x, targets = validate_batch(x, targets)
        out = np.asarray(self.fn(np.ascontiguousarray(x, dtype=np.float64),
                                 targets.astype(np.int64), fmt, reduction), dtype=np.float64)
        return out.reshape(()) if reduction == "mean" else out.reshape(len(targets))

    def grad(self, x, targets, fmt, reduction: str = "none") -> np.ndarray:
        """dL/dx (N, C) of logits `x` (float64 carrying values of `fmt`) as the library
        computes it, float64; of each row's loss ("none") or of the batch mean ("mean")."""
        if self.backward is None:
            raise InputError(f"implementation {self.name!r} has no gradient adapter")
        fmt = get_format(fmt)
        if fmt.name not in self.formats:
            raise InputError(f"implementation {self.name!r} does not support {fmt.name}")
        x, targets = validate_batch(x, targets)
        return np.asarray(self.backward(np.ascontiguousarray(x, dtype=np.float64),
                                        targets.astype(np.int64), fmt, reduction),
                          dtype=np.float64).reshape(x.shape)

    def __call__(self, logits, targets) -> np.ndarray:
        """Per-row losses of `logits` given in a format's numpy dtype (float16, ml_dtypes
        bfloat16, float32, float64), as `check` calls a user's function."""
        arr = np.asarray(logits)
        fmt = next((f for f in FORMATS.values() if f.dtype == arr.dtype), None)
        if fmt is None:
            raise InputError(f"logits of dtype {arr.dtype} are in none of the formats "
                             f"{', '.join(FORMATS)}")
        return self.run(arr.astype(np.float64), np.asarray(targets), fmt)


IMPLEMENTATIONS: dict[str, Implementation] = {}


def register_implementation(name: str, library: str, call: str, formats=ALL_FORMATS, *,
                            device: str = "cpu", requires: Iterable[str] = (),
                            kernel: str | None = None, color: str | None = None,
                            backward: Callable | None = None):
    """Register `fn(x, targets, fmt, reduction)` as the implementation `name`; `backward`:
    (x, targets, fmt, reduction) -> its gradient dL/dx (N, C), float64."""
    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown formats {bad} for implementation {name!r}")

    def deco(fn):
        IMPLEMENTATIONS[name] = Implementation(name, fn, library, call, formats, device,
                                               tuple(requires), kernel, color, backward)
        return fn
    return deco


def get_implementation(name: str | Implementation) -> Implementation:
    """The implementation `name`; a clear InputError if it is unknown or cannot run here."""
    if isinstance(name, Implementation):
        return name
    impl = IMPLEMENTATIONS.get(name) if isinstance(name, str) else None
    if impl is None:
        raise InputError(f"unknown implementation {name!r}; valid implementations: "
                         f"{', '.join(IMPLEMENTATIONS)}")
    missing = impl.missing()
    if missing:
        raise InputError(f"implementation {name!r} needs {', '.join(missing)}, which is not "
                         f"installed: pip install -e .[frameworks]")
    if impl.kernel is not None and impl.kernel not in cpu_kernels():
        raise InputError(f"implementation {name!r} needs the ATen CPU kernel {impl.kernel}, "
                         f"which this CPU cannot run (it runs {', '.join(cpu_kernels())})")
    return impl


def available(device: str | None = None) -> list[str]:
    """The implementations that can run here (their packages installed, their kernel
    supported by this CPU), in registry order; only those on `device` if given."""
    out = []
    for impl in IMPLEMENTATIONS.values():
        if device is not None and impl.device != device:
            continue
        if impl.missing() or (impl.kernel is not None and impl.kernel not in cpu_kernels()):
            continue
        out.append(impl.name)
    return out


def as_method(impl: str | Implementation) -> Method:
    """The implementation as a `Method` record (family "library", its own reduction), so
    `evaluate` runs it beside the methods; its name is the implementation's."""
    impl = get_implementation(impl)
    return Method(impl.name, functools.partial(_method_forward, impl),
                  impl.call, f"{impl.library} on the {impl.device}", "library", True,
                  impl.color, own_reduction=True,
                  mean_fn=functools.partial(_method_mean, impl),
                  backward=functools.partial(_method_backward, impl) if impl.backward else None)


def _method_forward(impl, x, targets, fmt, accumulator=OWN):
    return impl.run(x, targets, fmt, "none")


def _method_backward(impl, x, targets, fmt, accumulator=None, reduction="none"):
    return impl.grad(x, targets, fmt, reduction)


def _method_mean(impl, x, targets, fmt):
    return float(impl.run(x, targets, fmt, "mean"))


def _module(name: str):
    """An optional dependency, imported on first use (importing JAX or TensorFlow costs
    seconds, and they are not needed by the rest of the suite)."""
    return importlib.import_module(name)


# --------------------------------------------------------------------- torch, per ATen kernel

class _AtenWorker:
    """A child process with ATEN_CPU_CAPABILITY=kernel running `aten_worker.serve`."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        r_req, w_req = os.pipe()
        r_rep, w_rep = os.pipe()
        env = dict(os.environ, ATEN_CPU_CAPABILITY=kernel, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(aten_worker.__file__)), str(r_req), str(w_rep)],
            pass_fds=(r_req, w_rep), env=env, stdin=subprocess.DEVNULL)
        os.close(r_req)
        os.close(w_rep)
        self.out = os.fdopen(w_req, "wb")
        self.inp = os.fdopen(r_rep, "rb")
        self.capability = str(self.ask("probe")).lower()

    def ask(self, *msg):
        try:
            aten_worker.send(self.out, msg)
            status, value = aten_worker.receive(self.inp)
        except (EOFError, BrokenPipeError, OSError) as exc:
            raise RuntimeError(f"the ATen {self.kernel} worker died: {exc}") from None
        if status != "ok":
            raise RuntimeError(f"torch under the ATen {self.kernel} kernel: {value}")
        return value

    def close(self) -> None:
        try:
            aten_worker.send(self.out, ("exit",))
        except OSError:
            pass
        for s in (self.out, self.inp):
            try:
                s.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_WORKERS: dict[str, _AtenWorker] = {}


def _worker(kernel: str) -> _AtenWorker:
    w = _WORKERS.get(kernel)
    if w is None or w.proc.poll() is not None:
        w = _WORKERS[kernel] = _AtenWorker(kernel)
    return w


def close_workers() -> None:
    """End the ATen kernel child processes (also done at exit)."""
    while _WORKERS:
        _WORKERS.popitem()[1].close()


atexit.register(close_workers)


@functools.cache
def cpu_kernels() -> tuple[str, ...]:
    """The ATen CPU kernels this machine runs: those whose child process reports the kernel it
    was started with (ATen falls back to a narrower one when the CPU lacks the instructions)."""
    ok = []
    for k in KERNELS:
        if _worker(k).capability == k:
            ok.append(k)
        else:
            _WORKERS.pop(k).close()
    return tuple(ok)


def _eager_kernel(kernel: str):
    def fn(x, targets, fmt, reduction):
        return _worker(kernel).ask("ce", str(fmt.torch_dtype).removeprefix("torch."), x,
                                   targets, reduction)
    return fn


def _eager_kernel_grad(kernel: str):
    def fn(x, targets, fmt, reduction):
        return _worker(kernel).ask("grad", str(fmt.torch_dtype).removeprefix("torch."), x,
                                   targets, reduction)
    return fn


for _k in KERNELS:
    register_implementation(
        f"torch_eager_{_k}", "torch", "torch.nn.functional.cross_entropy(x, t) (eager, CPU, "
        f"ATEN_CPU_CAPABILITY={_k})", kernel=_k,
        color={"default": "#c5b0d5", "avx2": "#8c6bb1", "avx512": "#9467bd"}[_k],
        backward=_eager_kernel_grad(_k))(_eager_kernel(_k))


def baseline() -> str:
    """The torch eager adapter a user of this machine gets: the widest kernel it runs."""
    return f"torch_eager_{cpu_kernels()[-1]}"


# --------------------------------------------------------------------------- torch.compile

_COMPILED: dict = {}


def compile_count() -> int:
    """How many graphs torch_compile has compiled in this process (one per shape and dtype;
    each returns the per-row losses and their mean)."""
    return len(_COMPILED)


def _ce(x, t, reduction: str):
    return torch.nn.functional.cross_entropy(x, t, reduction=reduction)


def _ce_both(x, t):
    return _ce(x, t, "none"), _ce(x, t, "mean")


def _compiled(shape, dtype, device: str = "cpu"):
    key = (tuple(shape), dtype, device)
    fn = _COMPILED.get(key)
    if fn is None:
        # One static graph per key; dynamo keeps them as guarded entries of one code object,
        # so its recompile limit is raised past the number of keys, and hitting it is an
        # error, never a silent fall-back to eager.
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 2 * (len(_COMPILED) + 8))
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit,
                                              2 * (len(_COMPILED) + 8))
        cfg.fail_on_recompile_limit_hit = True
        fn = _COMPILED[key] = torch.compile(_ce_both, dynamic=False, fullgraph=True,
                                            backend="inductor")
    return fn


def _torch_compile(device: str):
    def fn(x, targets, fmt, reduction):
        xt = torch.from_numpy(x).to(fmt.torch_dtype).to(device)
        tt = torch.from_numpy(targets).to(device)
        with warnings.catch_warnings():  # inductor's own deprecations, raised while compiling
            warnings.simplefilter("ignore", DeprecationWarning)
            losses, mean = _compiled(x.shape, fmt.torch_dtype, device)(xt, tt)
        out = mean if reduction == "mean" else losses
        return out.to(torch.float64).cpu().numpy()
    return fn


register_implementation("torch_compile", "torch",
                        "torch.compile(F.cross_entropy) (inductor, C++ on the CPU, static shapes)",
                        color="#e377c2")(_torch_compile("cpu"))


def _torch_eager(device: str):
    def fn(x, targets, fmt, reduction):
        xt = torch.from_numpy(x).to(fmt.torch_dtype).to(device)
        tt = torch.from_numpy(targets).to(device)
        return _ce(xt, tt, reduction).to(torch.float64).cpu().numpy()
    return fn


def register_cuda_implementations() -> list[str]:
    """The CUDA column: torch eager and torch.compile (Triton) on the GPU, registered only
    when torch.cuda.is_available(). Returns the names registered."""
    if not torch.cuda.is_available():
        return []
    register_implementation("torch_eager_cuda", "torch", "F.cross_entropy(x, t) (eager, CUDA)",
                            device="cuda", color="#17becf")(_torch_eager("cuda"))
    register_implementation("torch_compile_cuda", "torch",
                            "torch.compile(F.cross_entropy) (inductor, Triton on CUDA)",
                            device="cuda", color="#9edae5")(_torch_compile("cuda"))
    return ["torch_eager_cuda", "torch_compile_cuda"]


# -------------------------------------------------------------------------------------- JAX

@functools.cache
def _jax():
    jax = _module("jax")
    jax.config.update("jax_enable_x64", True)  # float64 stays float64 (before any array)
    return jax


_JNP_DTYPE = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32",
              "float64": "float64"}


@functools.cache
def _jax_fn(kind: str):
    """The jitted (losses, mean) of one kind; jit keeps one executable per shape and dtype."""
    jax = _jax()
    jnp = jax.numpy
    if kind == "optax":
        optax = _module("optax")

        def losses(x, t):
            return optax.softmax_cross_entropy_with_integer_labels(x, t)
    else:
        def losses(x, t):
            return -jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), t[:, None], axis=-1)[:, 0]

    def both(x, t):
        v = losses(x, t)
        return v, jnp.mean(v)
    return jax.jit(both)


@functools.cache
def _jax_grad_fn(kind: str, reduction: str):
    """The jitted gradient of the summed (rows independent) or averaged losses."""
    jax = _jax()
    jnp = jax.numpy
    both = _jax_fn(kind)

    def total(x, t):
        v, m = both(x, t)
        return m if reduction == "mean" else jnp.sum(v)
    return jax.jit(jax.grad(total))


def _jax_inputs(x, targets, fmt):
    """Logits in fmt's jax dtype (exact: x carries fmt values) and int64 targets, on the CPU."""
    jax = _jax()
    jnp = jax.numpy
    dev = jax.devices("cpu")[0]
    xj = jax.device_put(jnp.asarray(x, dtype=jnp.float64).astype(_JNP_DTYPE[fmt.name]), dev)
    return xj, jax.device_put(jnp.asarray(targets, dtype=jnp.int64), dev)


def _jax_grad(kind: str):
    def fn(x, targets, fmt, reduction):
        g = _jax_grad_fn(kind, reduction)(*_jax_inputs(x, targets, fmt))
        return np.asarray(g.astype(_jax().numpy.float64))
    return fn


def _jax_adapter(kind: str):
    def fn(x, targets, fmt, reduction):
        losses, mean = _jax_fn(kind)(*_jax_inputs(x, targets, fmt))
        return np.asarray((mean if reduction == "mean" else losses).astype(_jax().numpy.float64))
    return fn


register_implementation("jax_optax", "jax",
                        "optax.softmax_cross_entropy_with_integer_labels(x, t) (jit, CPU)",
                        requires=("jax", "jaxlib", "optax"), color="#2ca02c",
                        backward=_jax_grad("optax"))(
                            _jax_adapter("optax"))
register_implementation("jax_log_softmax", "jax", "-jax.nn.log_softmax(x)[t] (jit, CPU)",
                        requires=("jax", "jaxlib"), color="#98df8a",
                        backward=_jax_grad("log_softmax"))(_jax_adapter("log_softmax"))


# ------------------------------------------------------------------------------------ scipy

def _scipy_adapter(kind: str):
    def fn(x, targets, fmt, reduction):
        special = _module("scipy.special")
        xs = x.astype(fmt.dtype)
        rows = np.arange(len(targets))
        if kind == "log_softmax":
            losses = -special.log_softmax(xs, axis=1)[rows, targets]
        else:
            losses = special.logsumexp(xs, axis=1) - xs[rows, targets]
        losses = np.asarray(losses, dtype=fmt.dtype)
        # the batch mean as a numpy user forms it: np.mean in the format (pairwise sum)
        return np.mean(losses) if reduction == "mean" else losses
    return fn


register_implementation("scipy_log_softmax", "scipy", "-scipy.special.log_softmax(x)[t]",
                        ("float32", "float64"), requires=("scipy",), color="#ff7f0e")(
                            _scipy_adapter("log_softmax"))
register_implementation("scipy_logsumexp", "scipy", "scipy.special.logsumexp(x) - x[t]",
                        ("float32", "float64"), requires=("scipy",), color="#ffbb78")(
                            _scipy_adapter("logsumexp"))


# ------------------------------------------------------------------------------- TensorFlow

@functools.cache
def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = _module("tensorflow")
    tf.config.set_visible_devices([], "GPU")
    return tf


def _tensorflow(x, targets, fmt, reduction):
    tf = _tf()
    with tf.device("/CPU:0"):
        xt = tf.cast(tf.constant(x, dtype=tf.float64), getattr(tf, fmt.name))
        out = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(targets),
                                                             logits=xt)
        if reduction == "mean":
            out = tf.reduce_mean(out)
        return tf.cast(out, tf.float64).numpy()


def _tensorflow_grad(x, targets, fmt, reduction):
    tf = _tf()
    with tf.device("/CPU:0"):
        xt = tf.cast(tf.constant(x, dtype=tf.float64), getattr(tf, fmt.name))
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(targets),
                                                                 logits=xt)
            total = tf.reduce_mean(out) if reduction == "mean" else tf.reduce_sum(out)
        return tf.cast(tape.gradient(total, xt), tf.float64).numpy()


register_implementation("tensorflow", "tensorflow",
                        "tf.nn.sparse_softmax_cross_entropy_with_logits(t, x) (CPU)",
                        requires=("tensorflow",), color="#d62728",
                        backward=_tensorflow_grad)(_tensorflow)


# ------------------------------------------------------------------------- the yardstick

YARDSTICK = "suite_log1p"


_LAST: dict = {}


def _yardstick(x, targets, fmt, reduction):
    m = get_method("log1p")
    acc = "float32" if fmt.precision < FORMATS["float32"].precision else "working"
    # The mean is a sum of the per-row losses, asked for right after them: the last batch's
    # losses are kept (keyed by its content) so the emulation does not run twice.
    key = (fmt.name, x.shape, hash(x.tobytes()), hash(targets.tobytes()))
    losses = _LAST.get(key)
    if losses is None:
        losses = m(x, targets, fmt, acc)
        _LAST.clear()
        _LAST[key] = losses
    return m.batch_mean(losses, fmt, acc) if reduction == "mean" else losses.copy()


def _yardstick_grad(x, targets, fmt, reduction):
    acc = "float32" if fmt.precision < FORMATS["float32"].precision else "working"
    return get_method("log1p").backward(x, targets, fmt, acc, reduction)


register_implementation(YARDSTICK, "precision_lab",
                        "methods['log1p'], float32 sums for 16-bit formats (emulated)",
                        color="#1f77b4", backward=_yardstick_grad)(_yardstick)

register_cuda_implementations()



def evaluate_implementations(x, targets, names: Iterable[str], formats=ALL_FORMATS,
                             methods: Iterable[str] = (), accumulators=ACCUMULATORS,
                             mean: bool = True, cache=None) -> pd.DataFrame:
    """`evaluate` of the implementations `names`, each in those of `formats` it supports,
    beside the suite's `methods`: one row per (input row, format, method) as `evaluate` gives
    (the implementation's name in "method", accumulator "internal"), plus `kind`
    ("implementation" or "method") and `representable` (`cells.representable_rows`: the row's
    rounded logits, log-sum-exp and loss are finite in the format; for a batch mean, every
    row is and so is the true mean)."""
    names = [get_implementation(n).name for n in names]
    methods = list(methods)
    blocks = []
    for f in formats:
        fmt = get_format(f)
        meths = [as_method(n) for n in names if fmt.name in IMPLEMENTATIONS[n].formats]
        if not meths and not methods:
            continue
        df = evaluate(x, targets, formats=[fmt.name], methods=meths + methods,
                      accumulators=accumulators, mean=mean, cache=cache)
        rows = df["reduction"] == "none"
        first = df[rows].drop_duplicates("row").sort_values("row")
        ok = representable_rows(x, first["truth"].to_numpy(), fmt)
        with np.errstate(over="ignore", invalid="ignore"):
            mean_ok = bool(ok.all()) and bool(np.isfinite(fmt.round(
                df.loc[~rows, "truth"].to_numpy())).all())
        rep = np.where(rows, ok[np.clip(df["row"].to_numpy(), 0, None)], mean_ok)
        df.insert(2, "kind", np.where(df["method"].isin(names), "implementation", "method"))
        df["representable"] = rep.astype(bool)
        blocks.append(df)
    return pd.concat(blocks, ignore_index=True)


def evaluate_implementation_grads(x, targets, names: Iterable[str], formats=ALL_FORMATS,
                                  reduction: str = "none", cache=None) -> pd.DataFrame:
    """The gradient of each implementation in `names` that has one, in each of `formats` it
    supports, against the certified gradient of the rounded inputs: one row per (input row,
    format, implementation) with the columns of `numerics.grad_metrics.grad_error_columns`
    (as `evaluate_grad` gives for the methods)."""
    x, targets = validate_batch(x, targets)
    impls_ = [get_implementation(n) for n in names]
    blocks = []
    for f in formats:
        fmt = get_format(f)
        todo = [i for i in impls_ if i.backward is not None and fmt.name in i.formats]
        if not todo:
            continue
        xr = fmt.round(x)
        hi, lo = reference_grad_dd(xr, targets, reduction, cache=cache)
        for impl in todo:
            cols = grad_error_columns(impl.grad(xr, targets, fmt, reduction), hi, lo, targets)
            n = len(targets)
            blocks.append({"format": [fmt.name] * n, "method": [impl.name] * n,
                           "accumulator": [OWN] * n, "row": np.arange(n),
                           "reduction": [reduction] * n, **cols})
    if not blocks:
        return pd.DataFrame()
    return pd.DataFrame({k: np.concatenate([np.asarray(b[k]) for b in blocks])
                         for k in blocks[0]})
