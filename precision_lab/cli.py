"""The `precision-lab` command: a thin layer over the library."""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import warnings

from . import runner
from .analysis import analyze_report, check_grad
from .analysis import implementations as impls
from .errors import InputError
from .experiments import available, load_experiment, measured_timings
from .numerics.formats import FORMATS
from .numerics.methods import METHODS

__all__ = ["main"]


def _list(args) -> int:
    print("formats (values carried in float64, every operation rounded to the format):")
    print(f"  {'name':<14} {'bits':>4} {'p':>3} {'emin':>5} {'emax':>5} {'unit roundoff':>13} "
          f"{'max finite':>11} {'min normal':>10} {'min subnormal':>13} {'overflow logit':>14} "
          f"{'overflow':>8} {'NaN codes':>9}  dtypes")
    for f in FORMATS.values():
        dtypes = ", ".join(d for d in (f"numpy {f.dtype}" if f.dtype is not None else "",
                                       f"{f.torch_dtype}" if f.torch_dtype is not None else "")
                           if d) or "none (float64 carrier)"
        print(f"  {f.name:<14} {f.bits:>4} {f.precision:>3} {f.emin:>5} {f.emax:>5} "
              f"{f.unit_roundoff:>13.4g} {f.max_finite:>11.5g} {f.min_normal:>10.4g} "
              f"{f.min_subnormal:>13.4g} {f.overflow_logit:>14.6g} {f.overflow:>8} "
              f"{f.nan_encodings:>9}  {dtypes}")
    print("  any other: --formats p=P,emin=EMIN,emax=EMAX[,overflow=saturate][,round=sr]"
          "[,seed=N] (emin defaults to 1 - emax),\n  or NAME,round=sr / NAME,overflow=saturate; "
          "reports name it p5_emin-14_emax15, float16_sr, float8_e4m3fn_sat.\n  "
          "float8_e4m3fn overflows to NaN (ml_dtypes; OCP's non-saturating mode); "
          "float8_e4m3fn_sat saturates to 448 (torch's cast).")
    print("\nmethods (every operation rounded to the working format; sums sequential, in the "
          "working format or float32):")
    for m in METHODS.values():
        acc = "accumulator: working | float32" if m.uses_accumulator else "accumulator: its own"
        runs = "" if m.unsupported is None else "; runs in " + ", ".join(
            f.name for f in FORMATS.values() if m.runs_in(f))
        print(f"  {m.name:<12} {m.formula}\n  {'':<12} {m.summary}; {acc}{runs}")
    print("\nimplementations (library adapters; `check implementation:NAME`, the "
          "implementations experiment):")
    for r in impls.IMPLEMENTATIONS.values():
        missing = r.missing()
        state = f"needs {', '.join(missing)} (pip install -e .[frameworks])" if missing \
            else f"{r.device}; {' '.join(r.formats)}"
        print(f"  {r.name:<20} {r.call}\n  {'':<20} {state}")
    timings = measured_timings()
    print("\nexperiments (precision-lab run NAME --profile PROFILE; wall time as last measured, "
          "on the machine its metadata names):")
    for name in available():
        mod = load_experiment(name)
        title = (mod.__doc__ or name).strip().splitlines()[0]
        print(f"  {name:<16} {title}")
        runs = []
        for prof in mod.PROFILES:
            t = timings.get(name, {}).get(prof)
            runs.append(f"{prof} ({t['wall_time_s']:.0f} s, {t['cpu_count']} cores)" if t
                        else f"{prof} (not measured)")
        print(f"  {'':<16} profiles: {', '.join(runs)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="precision-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the formats, methods and experiments").set_defaults(func=_list)
    run = sub.add_parser("run", help="run an experiment (or 'all') and write its report",
                         description="Run an experiment (or 'all') and write its report "
                                     f"directory. Experiments: {', '.join(available())}.")
    runner.add_arguments(run)
    run.set_defaults(func=runner.cli)
    chk = sub.add_parser("check", help="check your own cross-entropy implementation")
    check_grad.add_arguments(chk)  # the loss check's arguments plus --grad
    chk.set_defaults(func=check_grad.dispatch)
    ana = sub.add_parser("analyze", help="analyse every row of your own logits file")
    analyze_report.add_arguments(ana)
    ana.set_defaults(func=analyze_report.cli)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"precision-lab: warning: {message}\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    args.command_line = shlex.join(["precision-lab", *map(str, argv)])
    try:
        return args.func(args)
    except InputError as exc:  # bad input: one clear line, no traceback
        print(f"precision-lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handler (loading, check)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one: ignored, we are ending
        print("\nprecision-lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
