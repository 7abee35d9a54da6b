"""Check the import structure of the packages (docs/architecture.md): no import circle, no upward import, and
the packages layered as the architecture says.

    python tools/check_imports.py            # prints the problems and exits 1, or one "ok" line

Reads the source with ``ast`` (nothing is imported), every import statement of every module under
``packages/*/src``, at module level or inside a function (a lazy import still ties two modules together);
imports under ``if TYPE_CHECKING:`` are left out. Three rules:

- **No import circle**: the graph of modules importing modules has no cycle.
- **No upward import**: a module does not import from the ``__init__`` of a package that contains it
  (``from gta_data import __version__`` inside ``gta_data/store.py``), since the ``__init__`` imports its
  modules; importing a sibling submodule through the package (``from gta_rl import fused_mlp``) is fine.
- **Layers**: gta-data imports no other package of the repository; gta-diffusion, gta-rl and gta-eval import
  gta-data only (they talk to each other through files); gta-pixel imports gta-data and gta-rl (its DrQ+BC is
  built on gta-rl's parts); nothing imports gta-pixel.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Which repository packages each package may import (besides itself).
ALLOWED = {
    "gta_data": set(),
    "gta_diffusion": {"gta_data"},
    "gta_rl": {"gta_data"},
    "gta_eval": {"gta_data"},
    "gta_pixel": {"gta_data", "gta_rl"},  # DrQ+BC on gta-rl's building blocks; latents reach gta-diffusion as stores
}


def find_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module under packages/*/src."""
    modules = {}
    for src in sorted(root.glob("packages/*/src")):
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names imported from it) of every import statement of one module; a name that is
    itself a submodule (``from pkg import sub``) is reported as an import of ``pkg.sub``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            plain = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.append((sub, node.lineno, []))
                else:
                    plain.append(alias.name)
            if plain:
                found.append((target, node.lineno, plain))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root: Path = ROOT) -> list[str]:
    """Every problem found, one line each (empty: the structure is as the architecture says)."""
    modules = find_modules(root)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        top = name.split(".")[0]
        for target, line, names in imports_of(name, path, modules):
            where = f"{path.relative_to(root)}:{line}"
            target_top = target.split(".")[0]
            if target_top in ALLOWED and target_top != top and target_top not in ALLOWED.get(top, set()):
                problems.append(f"{where}: {name} imports {target} (a {top} module may import "
                                f"{', '.join(sorted(ALLOWED.get(top, set()))) or 'no other package'})")
            if target in modules:
                graph[name].add(target)
                if target != name and name.startswith(target + ".") and _is_package(target, modules):
                    what = ", ".join(names) if names else "the package"
                    problems.append(f"{where}: upward import: {name} imports {what} from {target}/__init__")
    for comp in _cycles(graph):
        problems.append(f"import circle: {' <-> '.join(comp)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = ap.parse_args(argv)
    problems = check(args.root)
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok: {len(find_modules(args.root))} modules, no import circle, no upward import, packages layered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
