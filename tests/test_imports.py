"""The import graph of ``streamer/`` and ``models/``, read from the source with ``ast``.

Nothing is imported: every ``.py`` file is parsed, and every import in it counts,
module-level or inside a function (a local import that dodges a cycle is still
a cycle). An import is an edge to the deepest module of the packages it names:
``from X import Y`` to ``X.Y`` when that is a module, else to ``X``; ``import
X.Y`` to ``X.Y``. The parent packages Python runs on the way (``X/__init__.py``)
are not edges: they would make every package that imports its own submodules
a cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streamer", "models")
# the online worker runs on onnxruntime alone (``make demo`` installs no training extra)
TRAINING_ONLY = ("torch", "transformers", "peft")


@dataclass(frozen=True)
class Import:
    target: str  # the imported name, absolute (may lie outside the packages)
    path: str  # the importing file, relative to the root
    line: int


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool, path: str) -> list[Import]:
    """Every import statement anywhere in the tree (functions, classes, ``if`` blocks included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: counted from the package this module is in (or is)
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.extend(Import(f"{prefix}.{alias.name}", path, node.lineno) for alias in node.names)
    return found


def build_graph(root: Path, packages: tuple[str, ...]) -> tuple[dict[str, list[Import]], dict[str, dict[str, Import]]]:
    """Every module's imports, and its edges to other modules of ``packages`` (the first import of each)."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            files[_module_name(root, path)] = path
    imports: dict[str, list[Import]] = {}
    edges: dict[str, dict[str, Import]] = {}
    for module, path in files.items():
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        imports[module] = found = _imports(tree, module, path.name == "__init__.py", rel)
        out = edges[module] = {}
        for imp in sorted(found, key=lambda i: i.line):
            target = imp.target
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.setdefault(target, imp)
    return imports, edges


def find_cycles(edges: dict[str, dict[str, Import]], limit: int = 100) -> list[list[str]]:
    """The elementary cycles (up to ``limit``), each once, listed from its smallest module."""
    cycles: list[list[str]] = []
    for start in sorted(edges):
        # only modules after ``start``: a cycle is found from its smallest member only
        def after(node: str) -> list[str]:
            return sorted(t for t in edges.get(node, ()) if t >= start)

        path, on_path = [start], {start}
        stack = [iter(after(start))]
        while stack and len(cycles) < limit:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
            elif nxt == start:
                cycles.append(list(path))
            elif nxt not in on_path:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(after(nxt)))
    return cycles


def describe(cycle: list[str], edges: dict[str, dict[str, Import]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
        imp = edges[a][b]
        steps.append(f"{a} -> {b} ({imp.path}:{imp.line})")
    return "  " + "\n    ".join(steps)


@cache
def _repo_graph() -> tuple[dict[str, list[Import]], dict[str, dict[str, Import]]]:
    return build_graph(ROOT, PACKAGES)


def _in(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles_through(package: str) -> list[str]:
    _, edges = _repo_graph()
    return [describe(c, edges) for c in find_cycles(edges) if any(_in(package, m) for m in c)]


def test_models_has_no_import_cycles():
    cycles = _cycles_through("models")
    assert not cycles, f"{len(cycles)} import cycle(s) through models/:\n" + "\n".join(cycles)


def test_streamer_has_no_import_cycles():
    cycles = _cycles_through("streamer")
    assert not cycles, f"{len(cycles)} import cycle(s) through streamer/:\n" + "\n".join(cycles)


def test_streamer_imports_no_training_libraries():
    imports, _ = _repo_graph()
    bad = sorted({
        f"{imp.path}:{imp.line} imports {imp.target.split('.')[0]}"
        for module, found in imports.items() if _in("streamer", module)
        for imp in found if imp.target.split(".")[0] in TRAINING_ONLY
    })
    assert not bad, "streamer/ must run without the training extra:\n" + "\n".join(bad)


def test_the_graph_counts_local_relative_and_from_imports(tmp_path):
    """The checker itself, on a made-up package: each kind of import is an edge, a cycle is reported once."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from pkg import a\n",
        "a.py": "import json\nfrom pkg.b import thing\n",
        "b.py": "thing = 1\n\ndef later():\n    from pkg import c  # local: still an edge\n    return c\n",
        "c.py": "from .sub import d\n",
        "sub/__init__.py": "",
        "sub/d.py": "from .. import a\nimport torch.nn\n",
        "e.py": "if False:\n    import pkg.sub.d as alias\n",
    }
    for name, text in sources.items():
        (pkg / name).write_text(text)
    imports, edges = build_graph(tmp_path, ("pkg",))
    assert {m: sorted(t) for m, t in edges.items()} == {
        "pkg": ["pkg.a"], "pkg.a": ["pkg.b"], "pkg.b": ["pkg.c"], "pkg.c": ["pkg.sub.d"], "pkg.sub": [],
        "pkg.sub.d": ["pkg.a"], "pkg.e": ["pkg.sub.d"],
    }
    assert find_cycles(edges) == [["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"]]
    assert "pkg/b.py:4" in describe(find_cycles(edges)[0], edges)
    assert [i.target for i in imports["pkg.sub.d"]] == ["pkg.a", "torch.nn"]
