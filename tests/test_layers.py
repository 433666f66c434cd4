"""The package's shape: layers import only downward, no function-local package imports, and a
non-editable install runs from outside the checkout."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "precision_lab"

# Bottom to top; a module may import its own layer or any below it.
LAYERS = ["errors", "running", "data", "numerics", "truth", "reporting", "analysis", "examples",
          "experiments", "runner", "cli", "__init__", "__main__"]


def _layer(module: str) -> int:
    head = module.split(".")[0]
    return LAYERS.index(head)


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        yield ".".join(rel.parts), path


def _package_imports(path: Path, module: str):
    """(lineno, imported precision_lab module, at module level?) for each import of the package."""
    tree = ast.parse(path.read_text())
    parts = module.split(".")
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("precision_lab"):
                target = node.module[len("precision_lab"):].lstrip(".")
            else:
                continue
            names = [target] if node.module or not node.level else \
                [".".join([*package, a.name]) for a in node.names]
            for t in names:
                yield node.lineno, t or "__init__", id(node) in top_level
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("precision_lab."):
                    yield node.lineno, a.name[len("precision_lab."):], id(node) in top_level


def test_layers_import_only_downward():
    bad = []
    for module, path in _modules():
        for line, target, _ in _package_imports(path, module):
            if target and _layer(target) > _layer(module):
                bad.append(f"{module}:{line} imports {target}")
    assert not bad, "imports running up the layers:\n" + "\n".join(bad)


def test_no_function_local_package_imports():
    bad = [f"{m}:{line} imports {t}" for m, p in _modules()
           for line, t, top in _package_imports(p, m) if not top]
    assert not bad, "function-local package imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    names = {m for m, _ in _modules()}
    for module, path in _modules():
        deps = set()
        for _, t, top in _package_imports(path, module):
            t = t if t in names else f"{t}.__init__"
            if top and t in names and t != module:
                deps.add(t)
        graph[module] = deps
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, m, d]))
            if d not in state:
                visit(d, [*stack, m])
        state[m] = 2
    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.skipif(os.environ.get("PRECISION_LAB_SKIP_INSTALL_TEST") == "1",
                    reason="install test disabled")
def test_non_editable_install_runs_outside_the_checkout(tmp_path):
    """`pip install .` (a wheel, not a link to the checkout) then list and a quick run, from a
    directory that is not the checkout."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(PKG.parent)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target), "PRECISION_LAB_CACHE": "off"}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        return subprocess.run([sys.executable, "-m", "precision_lab", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
    where = subprocess.run([sys.executable, "-c", "import precision_lab; print(precision_lab.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where
    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    assert "seed_questions" in listed.stdout and "float16" in listed.stdout
    ran = run("run", "seed_questions", "--profile", "quick", "--out", str(work / "out"),
              "--quiet", "--workers", "1")
    assert ran.returncode == 0, ran.stderr
    assert (work / "out" / "seed_questions" / "summary.md").is_file()
