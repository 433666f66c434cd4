"""Running experiments: load one by name, run a profile, write its report directory.

An experiment module follows the protocol in `precision_lab.experiments` (its docstring).
Formats: `--formats` (RunConfig.formats), else a profile's "formats" entry, else every
experiment's default (the standard four), reach the experiment's sweep cells (`RunConfig.sweep`
sets them in every cell); an experiment whose formats are its own grid says so with
`TAKES_FORMATS = False` and refuses the option.
The runner adds metadata.json (provenance, seed, profile, wall time, peak memory) and rebuilds
the reports index, REPORTS/README.md, from every experiment's findings.json.

A report directory is replaced whole, never edited in place: `run` and `report` write into a
staging directory OUT/.NAME.staging, which then replaces OUT/NAME by two renames (the old one
moved to OUT/.NAME.old, the new one moved in, the old one deleted). So results.csv, the tables
and the figures in OUT/NAME always come from one run: a crash leaves either the previous report
or the new one (and a run that finds only OUT/.NAME.old puts it back). The sweep's checkpoints
live in OUT/.checkpoints/NAME and are removed only after the new report is in place, so a run
killed at any point, even while writing the report, resumes without recomputing a finished
cell. Two runs of one experiment into the same OUT are refused (a lock).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .analysis.cells import evaluate_cell
from .data.inputs import load_logits
from .errors import InputError
from .experiments import available, load_experiment
from .numerics.formats import get_format
from .reporting.document import doc_head
from .reporting.index import write_index
from .reporting.tables import write_csv
from .running.provenance import peak_memory_mib, write_metadata
from .running.storage import atomic_write, check_writable_dir, exclusive, recover_dir, replace_dir
from .running.sweep import checkpoints_kept, run_cells

__all__ = ["RunConfig", "run_experiment", "add_arguments", "cli", "script_main",
           "command_line", "COMMAND_ENV"]

# `run all` runs each experiment in its own process; this tells them the command the user typed.
COMMAND_ENV = "PRECISION_LAB_COMMAND"


@dataclass
class RunConfig:
    profile: str = "quick"
    seed: int = 0
    out: Path = Path("reports")
    workers: int | None = None
    scheduler: str | None = None
    logits_file: Path | None = None
    quiet: bool = False
    formats: tuple | None = None  # format names or spellings (numerics.formats.get_format)
    command: str | None = None  # the command line that started this run, for provenance
    user_logits: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.workers is not None and (isinstance(self.workers, bool)
                                         or not isinstance(self.workers, int) or self.workers < 1):
            raise InputError(f"--workers must be an integer of at least 1, got {self.workers!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.profile, str) or not self.profile:
            raise InputError(f"--profile must be a profile name, got {self.profile!r}")
        if self.formats is not None:
            if isinstance(self.formats, str):
                self.formats = (self.formats,)
            self.formats = tuple(get_format(f).name for f in self.formats)  # stable names
            if not self.formats:
                raise InputError("--formats needs at least one format")
        if isinstance(self.out, str) and not self.out.strip():
            raise InputError("--out is empty; give a directory (--out . for this one)")
        self.out = Path(self.out)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} exists and is not a directory")
        check_writable_dir(self.out, "--out")
        if self.logits_file is not None and self.user_logits is None:
            self.user_logits = load_logits(self.logits_file)

    def sweep(self, name: str, cells, fn=evaluate_cell):
        """Run an experiment's grid cells with this run's checkpoints, workers, scheduler and
        progress setting; the staged-array digests (part of the cells' keys only) dropped.
        With `formats`, every cell evaluates those formats (over any the cell names)."""
        if self.formats is not None:
            cells = [{**c, "formats": list(self.formats)} for c in cells]
        df = run_cells(cells, fn, checkpoint_dir=self.checkpoint_dir(name), workers=self.workers,
                       scheduler=self.scheduler, quiet=self.quiet, desc=name)
        return df.drop(columns=["logits_digest"], errors="ignore")

    def checkpoint_dir(self, name: str) -> Path:
        """Where `name`'s sweep keeps finished cells (outside the report directory, which is
        replaced whole at the end of a run)."""
        return Path(self.out) / ".checkpoints" / name


def _check_profile(name: str, module, profile: str) -> dict:
    if profile not in module.PROFILES:
        raise InputError(f"unknown profile {profile!r} for {name}; "
                         f"valid: {', '.join(module.PROFILES)}")
    return module.PROFILES[profile]



def _check_formats(name: str, module, config: RunConfig) -> None:
    if config.formats is not None and not getattr(module, "TAKES_FORMATS", True):
        raise InputError(f"{name} takes no --formats: "
                         f"{getattr(module, 'FORMATS_NOTE', 'its formats are part of its design')}")


def run_experiment(name: str, config: RunConfig) -> Path:
    module = load_experiment(name)
    params = _check_profile(name, module, config.profile)
    _check_formats(name, module, config)
    if config.formats is None and "formats" in params:
        config = dataclasses.replace(config, formats=tuple(params["formats"]))
    out = Path(config.out)
    final = out / name
    with exclusive(out / f".{name}.lock", f"another run of {name} is writing to {out}; wait "
                   f"for it to finish or give this run another --out", remove=True):
        recover_dir(final)
        staging = out / f".{name}.staging"
        staging.mkdir(parents=True)
        start = time.perf_counter()
        with checkpoints_kept() as ckpts:
            df = module.run(config, params)
            findings = module.report(df, config, params, staging)
            write_csv(df, staging / "results.csv")
            wall = time.perf_counter() - start
            _write_findings(staging / "findings.json", name, module, findings)
            write_metadata(staging, experiment=name, profile=config.profile, seed=config.seed,
                           command=config.command or command_line(name, config),
                           workers=config.workers, scheduler=config.scheduler,
                           logits_file=str(config.logits_file) if config.logits_file else None,
                           formats=list(config.formats) if config.formats else None,
                           wall_time_s=round(wall, 2), **peak_memory_mib(), params=params)
            replace_dir(staging, final)
        for d in ckpts:
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out / ".checkpoints").rmdir()  # only if empty
    write_index(out)
    if not config.quiet:
        print(f"{name}: wrote {final} in {wall:.1f} s", file=sys.stderr)
    return final

def _write_findings(path: Path, name: str, module, findings) -> None:
    """findings.json: name, title, question and findings; a report built with
    `reporting.document.Report` has written it already (with its tables), and keeps it."""
    title, question = doc_head(module.__doc__, module.__name__)
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc = {"name": name, "title": doc.get("title", title),
           "question": doc.get("question", question), "findings": findings,
           **{k: v for k, v in doc.items() if k not in ("name", "title", "question",
                                                         "findings")}}
    with atomic_write(path) as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def command_line(name: str, config: RunConfig) -> str:
    """The `precision-lab run` command that reproduces this run (output directory included)."""
    parts = ["precision-lab", "run", name, "--profile", config.profile, "--out",
             str(config.out), "--seed", str(config.seed)]
    if config.workers is not None:
        parts += ["--workers", str(config.workers)]
    if config.logits_file is not None:
        parts += ["--logits-file", str(config.logits_file)]
    if config.formats is not None:
        parts += ["--formats", *config.formats]
    return shlex.join(parts)

def add_arguments(p: argparse.ArgumentParser, with_name: bool = True) -> None:
    if with_name:
        names = available()
        p.add_argument("name", metavar="NAME",
                       help=f"an experiment ({', '.join(names)}) or 'all'; "
                            "`precision-lab list` describes them")
    p.add_argument("--profile", default="quick",
                   help="quick or full (the committed reports); `precision-lab list` shows "
                        "the time each took when last measured "
                        "(default: %(default)s)")
    p.add_argument("--out", default="reports",
                   help="reports directory; each experiment writes OUT/NAME "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every random draw (synthetic logits, samples of your rows, "
                        "training) (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes on this machine (default: every core)")
    p.add_argument("--scheduler", default=None,
                   help="a Dask distributed scheduler address (default: none, local processes)")
    p.add_argument("--logits-file", type=Path, default=None,
                   help="your own logits and targets (.npy, .npz or .csv) (default: none, "
                        "synthetic logits)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    p.add_argument("--formats", nargs="+", default=None, metavar="FORMAT",
                   help="formats to evaluate (default: the profile's, else float16 bfloat16 "
                        "float32 float64): names from `precision-lab list`, or "
                        "p=P,emin=EMIN,emax=EMAX[,overflow=saturate][,round=sr][,seed=N], or "
                        "NAME,round=sr")

def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cli(args) -> int:
    config = RunConfig(profile=args.profile, seed=args.seed, out=args.out, workers=args.workers,
                       scheduler=args.scheduler, logits_file=args.logits_file, quiet=args.quiet,
                       formats=getattr(args, "formats", None),
                       command=os.environ.get(COMMAND_ENV) or getattr(args, "command_line", None))
    if config.command is None:
        config.command = command_line(args.name, config)
    names = available() if args.name == "all" else [args.name]
    if args.name == "all" and config.formats is not None:
        skip = [n for n in names if not getattr(load_experiment(n), "TAKES_FORMATS", True)]
        if skip:
            print(f"--formats: skipping {', '.join(skip)} (they take no --formats)",
                  file=sys.stderr)
        names = [n for n in names if n not in skip]
    for name in names:  # every name, profile and option checked before anything runs
        module = load_experiment(name)
        _check_profile(name, module, config.profile)
        _check_formats(name, module, config)
        if config.logits_file is not None and not getattr(module, "ACCEPTS_LOGITS_FILE", False):
            takers = [n for n in available()
                      if getattr(load_experiment(n), "ACCEPTS_LOGITS_FILE", False)]
            raise InputError(f"{name} does not use --logits-file (it would be ignored); "
                             f"experiments that do: {', '.join(takers)}")
    if len(names) > 1:
        return _each_in_own_process(names, args)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # `kill PID` stops a run as Ctrl-C does: workers stopped, finished cells kept.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name in names:
            try:
                run_experiment(name, config)
            except KeyboardInterrupt:
                if threading.current_thread() is threading.main_thread():
                    # a second Ctrl-C is ignored from here until the process ends (the CLI
                    # returns at once): one line, never a traceback
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                print(f"\ninterrupted: {name}'s finished cells are kept in "
                      f"{config.checkpoint_dir(name)}; run the same command again to resume",
                      file=sys.stderr)
                return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _each_in_own_process(names, args) -> int:
    """`run all`: each experiment in a process of its own, so its metadata.json records its
    own wall time and peak memory (a process's peak never goes down), and one experiment's
    state cannot leak into the next."""
    opts = ["--profile", args.profile, "--out", str(args.out), "--seed", str(args.seed)]
    for flag, value in (("--workers", args.workers), ("--scheduler", args.scheduler),
                        ("--logits-file", args.logits_file)):
        if value is not None:
            opts += [flag, str(value)]
    if args.quiet:
        opts.append("--quiet")
    if getattr(args, "formats", None):
        opts += ["--formats", *args.formats]
    typed = getattr(args, "command_line", None) or command_line("all", RunConfig(
        profile=args.profile, seed=args.seed, out=args.out, workers=args.workers))
    env = {**os.environ, COMMAND_ENV: typed}
    for name in names:
        rc = subprocess.call([sys.executable, "-m", "precision_lab", "run", name, *opts],
                             env=env)
        if rc != 0:
            return rc
    return 0


def script_main(name: str, argv=None) -> int:
    """`python experiments/NAME.py [options]`: the same as `precision-lab run NAME`."""
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py")
    add_arguments(p, with_name=False)
    args = p.parse_args(argv)
    args.name = name
    try:
        return cli(args)
    except InputError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
