"""The report builder: one object collects an experiment's tables, figures, prose and findings,
and one call writes its report directory. Knows nothing about numerics.

    rep = Report("logit_scale", "Logit scale: where each method breaks",
                 context=Context(seed=0, profile="quick", truth="certified ..."))
    t1 = rep.table(df, "First failing scale of each method ...", headline=True)  # logit_scale:T1
    f1 = rep.figure(fig, "scale_normal", "Median relative error against s ...", headline=True)
    rep.finding("`naive` first fails at s = 10 in float16 ...", t1)   # linked to the table
    rep.section("Median relative error at selected scales", "A paragraph ...")
    rep.table(err, "Median relative error ...", stem="errors")          # logit_scale:T2
    rep.paragraph("How to read the figures ...")
    return rep.write(out_dir)        # -> the findings, as `report()` returns them

`write` produces, each file atomically (`running.storage.atomic_write`):
  summary.md     the title, the headline table and figure (the answer first), the findings (each
                 one claim, linked to the table or figure that backs it), then every section in
                 the order it was added, then the provenance line;
  summary.tex    the booktabs twin of every table, in order (each also as tables/STEM.tex),
                 with the same caption and identifier;
  findings.json  name, title, question, findings, and every table's identifier and caption
                 (the reports index prints a "cite this table" line for the headline table);
  STEM.png/.pdf  each figure (written when it is added, by `figures.save_figure`).

Every table gets a stable identifier `NAME:T<n>`, numbered in the order tables are added, printed
above the table and at the start of its caption; the caption ends with the context (what the
truth is, the seed, the profile, precision_lab's version and the commit), so a table copied
into a paper carries what it needs. Numbers stay numbers in the DataFrames handed in; the
writer formats them (`tables.format_number`, or the `formats` argument of `table`).
"""
from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..running.provenance import git_commit
from ..running.storage import atomic_write
from .figures import plt, save_figure
from .tables import formatted, latex_table

__all__ = ["Context", "Report", "TableRef", "FigureRef", "markdown_table", "doc_head",
           "package_version", "report_for"]


def package_version() -> str:
    try:
        return importlib.metadata.version("precision_lab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def doc_head(doc: str | None, fallback: str = "") -> tuple[str, str]:
    """(title, question) of an experiment: its docstring's first line and first paragraph."""
    lines = (doc or "").strip().splitlines()
    title = lines[0].strip() if lines else fallback
    rest = "\n".join(lines[1:]).strip().split("\n\n")[0].replace("\n", " ")
    return title, rest


@dataclass(frozen=True)
class Context:
    """What every caption of one report ends with."""
    seed: int | None = None
    profile: str | None = None
    truth: str = ""
    version: str = ""
    commit: str = ""
    extra: str = ""

    def sentence(self) -> str:
        run = []
        if self.seed is not None:
            run.append(f"Seed {self.seed}")
        if self.profile:
            run.append(f"profile {self.profile}")
        if self.version:
            run.append(f"precision_lab {self.version}")
        if self.commit:
            run.append(f"commit {self.commit[:12]}")
        parts = [self.truth.strip()] if self.truth else []
        if run:
            parts.append(", ".join(run) + ".")
        if self.extra:
            parts.append(self.extra)
        return " ".join(parts)


@dataclass(frozen=True)
class TableRef:
    id: str
    stem: str
    anchor: str

    @property
    def link(self) -> str:
        return f"summary.md#{self.anchor}"


@dataclass(frozen=True)
class FigureRef:
    stem: str

    @property
    def link(self) -> str:
        return f"{self.stem}.png"


@dataclass
class _Table:
    ref: TableRef
    df: pd.DataFrame
    caption: str
    formats: dict


@dataclass
class _Figure:
    ref: FigureRef
    caption: str


def markdown_table(df: pd.DataFrame, formats: dict | None = None) -> str:
    """A pipe table; numbers formatted by `formats[column]` or `format_number`, text as is."""
    return formatted(df, formats).to_markdown(index=False, disable_numparse=True)


@dataclass
class Report:
    """An experiment's report, built up in order and written once; see the module docstring."""
    name: str
    title: str
    question: str = ""
    context: Context = field(default_factory=Context)
    intro: str = ""
    _blocks: list = field(default_factory=list, repr=False)
    _tables: list = field(default_factory=list, repr=False)
    _figures: list = field(default_factory=list, repr=False)
    _findings: list = field(default_factory=list, repr=False)
    _headline_table: _Table | None = field(default=None, repr=False)
    _headline_figure: _Figure | None = field(default=None, repr=False)
    _out: Path | None = field(default=None, repr=False)

    def bind(self, out_dir) -> Report:
        """Where figures are saved as they are added (before `write`)."""
        self._out = Path(out_dir)
        return self

    # -- content -------------------------------------------------------------------------
    def section(self, heading: str, text: str = "") -> None:
        self._blocks.append(("h", heading))
        if text:
            self.paragraph(text)

    def paragraph(self, text: str) -> None:
        self._blocks.append(("p", text))

    def table(self, df: pd.DataFrame, caption: str, stem: str | None = None,
              headline: bool = False, formats: dict | None = None) -> TableRef:
        """Add a table (numbers as numbers); returns its reference, id NAME:T<n>."""
        n = len(self._tables) + 1
        ref = TableRef(id=f"{self.name}:T{n}", stem=stem or f"table{n}",
                       anchor=f"{self.name}-t{n}")
        t = _Table(ref, df.reset_index(drop=True), caption, formats or {})
        self._tables.append(t)
        if headline and self._headline_table is None:
            self._headline_table = t
        else:
            self._blocks.append(("t", t))
        return ref

    def figure(self, fig, stem: str, caption: str, headline: bool = False,
               close: bool = True) -> FigureRef:
        """Save `fig` as STEM.png/.pdf now (the report must be bound to its directory)."""
        if self._out is None:
            raise RuntimeError("Report.figure needs Report.bind(out_dir) first")
        save_figure(fig, self._out, stem)
        if close:
            plt.close(fig)
        f = _Figure(FigureRef(stem), caption)
        self._figures.append(f)
        if headline and self._headline_figure is None:
            self._headline_figure = f
        else:
            self._blocks.append(("f", f))
        return f.ref

    def finding(self, text: str, source: TableRef | FigureRef | None = None) -> None:
        """One claim with its number and scope, linked to the table or figure behind it."""
        if source is None:
            source = self._headline_table.ref if self._headline_table else None
        if isinstance(source, TableRef):
            self._findings.append({"text": text, "link": source.link, "label": source.id})
        elif isinstance(source, FigureRef):
            self._findings.append({"text": text, "link": source.link, "label": "figure"})
        else:
            self._findings.append({"text": text, "link": "summary.md", "label": "summary"})

    # -- output --------------------------------------------------------------------------
    def caption_of(self, t: _Table) -> str:
        return f"{t.ref.id}. {t.caption.rstrip()} {self.context.sentence()}".strip()

    def _md_table(self, t: _Table) -> list[str]:
        return [f'<a id="{t.ref.anchor}"></a>**Table {t.ref.id}.** '
                f"{t.caption.rstrip()} {self.context.sentence()} "
                f"LaTeX: `tables/{t.ref.stem}.tex`.".replace("  ", " "), "",
                markdown_table(t.df, t.formats), ""]

    @staticmethod
    def _md_figure(f: _Figure) -> list[str]:
        return [f"![{f.ref.stem}]({f.ref.stem}.png)", "", f"*Figure {f.ref.stem}: "
                f"{f.caption.rstrip()}*", ""]

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        if self.question:
            lines += [f"*{self.question}*", ""]
        if self.intro:
            lines += [self.intro, ""]
        if self._headline_table:
            lines += self._md_table(self._headline_table)
        if self._headline_figure:
            lines += self._md_figure(self._headline_figure)
        if self._findings:
            lines += ["## Findings", ""]
            for f in self._findings:
                link = f["link"].removeprefix("summary.md")  # an anchor of this page
                lines.append(f"- {f['text']} ([{f['label']}]({link}))")
            lines.append("")
        for kind, v in self._blocks:
            if kind == "h":
                lines += [f"## {v}", ""]
            elif kind == "p":
                lines += [v, ""]
            elif kind == "t":
                lines += self._md_table(v)
            else:
                lines += self._md_figure(v)
        if self.context.sentence():
            lines += ["---", "", self.context.sentence(), ""]
        return "\n".join(lines)

    def write(self, out_dir) -> list[dict]:
        """summary.md, summary.tex (+ tables/*.tex), findings.json; returns the findings."""
        out = Path(out_dir)
        with atomic_write(out / "summary.md") as f:
            f.write(self.markdown())
        tex = [rf"% {self.title}. Generated by precision_lab; needs \usepackage{{booktabs}}.",
               "% Every table of summary.md, in order; each is also in tables/STEM.tex.", ""]
        for t in self._tables:
            text = latex_table(t.df, self.caption_of(t), f"tab:{t.ref.id}", t.formats)
            with atomic_write(out / "tables" / f"{t.ref.stem}.tex") as f:
                f.write(text)
            tex.append(text)
        with atomic_write(out / "summary.tex") as f:
            f.write("\n".join(tex) + "\n")
        head = self._headline_table
        doc = {"name": self.name, "title": self.title, "question": self.question,
               "version": self.context.version, "commit": self.context.commit,
               "findings": self._findings,
               "tables": [{"id": t.ref.id, "caption": self.caption_of(t),
                           "headline": t is head, "link": t.ref.link} for t in self._tables]}
        with atomic_write(out / "findings.json") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        return list(self._findings)


def report_for(name: str, doc: str | None, config, out_dir, truth: str = "",
               title: str | None = None) -> Report:
    """A Report for one run of experiment `name`: title and question from its docstring, the
    captions' context from the run (seed, profile, version, commit) and `truth`, bound to
    `out_dir` for its figures."""
    t, q = doc_head(doc, name)
    ctx = Context(seed=getattr(config, "seed", None), profile=getattr(config, "profile", None),
                  truth=truth, version=package_version(), commit=git_commit())
    return Report(name, title or t, question=q, context=ctx).bind(out_dir)
