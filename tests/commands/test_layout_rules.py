"""The house rules of docs/architecture.md, read from the code's own imports (nothing is run but the parser).

- the core knows no model family, and a family never imports what sits above the families (priors.py, api.py,
  training/, commands/, the protocols);
- imports inside functions only in commands/ and cli.py (fast ``--help``), or for a library one path alone needs,
  each of those with a comment saying why;
- ``priorswap --help`` imports neither torch nor diffusers.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from repo_paths import REPO

TOOLKIT = Path(REPO) / "toolkit"
FAMILIES = ("dit", "unet", "video", "t2i")
ABOVE_FAMILIES = ("priors", "api", "training", "commands", "protocols", "vbench", "evaluation", "demo", "cli")


def _relative_targets(path: Path) -> set[str]:
    """The toolkit modules ``path`` imports, as dotted names under toolkit/ (relative imports only)."""
    package = path.relative_to(TOOLKIT).parent.parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            parts = [*base, *(node.module.split(".") if node.module else [])]
            for alias in node.names if not node.module else [None]:
                out.add(".".join(parts + ([alias.name] if alias else [])))
    return out


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (TOOLKIT / f).rglob("*.py"))


def test_the_core_knows_no_family_and_nothing_above_it():
    bad = [
        (str(p.relative_to(TOOLKIT)), t)
        for p in _files("core")
        for t in _relative_targets(p)
        if t.split(".")[0] in FAMILIES + ABOVE_FAMILIES + ("lora",)
    ]
    assert bad == []


def test_a_family_imports_nothing_above_the_families():
    bad = [
        (str(p.relative_to(TOOLKIT)), t)
        for p in _files(*FAMILIES)
        for t in _relative_targets(p)
        if t.split(".")[0] in ABOVE_FAMILIES
    ]
    assert bad == []


def test_imports_inside_functions_only_where_the_rules_allow_and_say_why():
    """Outside commands/ and cli.py an import inside a function must carry a comment (the heavy optional library it
    defers, or the ``--help`` it keeps fast), or sit in a ``try`` that turns a missing library into a one-line error.
    demo/ follows its own engineer's schedule."""
    unexplained = []
    for path in sorted(TOOLKIT.rglob("*.py")):
        rel = path.relative_to(TOOLKIT)
        if rel.parts[0] in ("commands", "demo") or rel.name == "cli.py" and len(rel.parts) == 1:
            continue
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        guarded = {
            m.lineno
            for t in ast.walk(tree)
            if isinstance(t, ast.Try)
            for b in t.body
            for m in ast.walk(b)
            if isinstance(m, (ast.Import, ast.ImportFrom))
        }
        lazy = {
            n.lineno: f.lineno
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        }
        for line in sorted(set(lazy) - guarded):
            said = any("#" in lines[i - 1] for i in (line, line - 1, lazy[line]))  # the line, above, or the def
            if not said:
                unexplained.append(f"{rel}:{line}: {lines[line - 1].strip()}")
    assert unexplained == []


def test_help_imports_neither_torch_nor_diffusers():
    code = (
        "import sys, io, contextlib\n"
        "from priorswap.toolkit import cli\n"
        "for argv in (['--help'], ['sample', 'dit', '--help'], ['sample', 'dynamicrafter', '--help'],"
        " ['eval', 'dynamicrafter', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            cli.main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
