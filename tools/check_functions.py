"""List the functions longer than a limit in the packages' sources (a long function is one to split).

    python tools/check_functions.py              # functions over 100 lines under packages/*/src; exit 1 if any
    python tools/check_functions.py --limit 80 packages/gta-rl/src

Reads the source with ``ast`` (nothing is imported). A function's length counts its lines from the ``def`` (or its
first decorator) to its last line, docstring and comments included; a nested function counts within its parent
and is also listed on its own.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 100


def long_functions(paths: list[Path], limit: int = LIMIT) -> list[tuple[Path, int, str, int]]:
    """(file, line, qualified name, length) of every function longer than ``limit`` lines in the ``.py`` files
    under ``paths`` (files or folders), longest first."""
    found = []
    for path in paths:
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            tree = ast.parse(file.read_text(), filename=str(file))
            for name, node in _functions(tree, ""):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > limit:
                    found.append((file, first, name, length))
    return sorted(found, key=lambda f: (-f[3], str(f[0]), f[1]))


def _functions(node: ast.AST, prefix: str):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (default: packages/*/src)")
    parser.add_argument("--limit", type=int, default=LIMIT, help=f"longest allowed function (default {LIMIT} lines)")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(ROOT.glob("packages/*/src"))
    found = long_functions(paths, args.limit)
    for file, line, name, length in found:
        shown = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
        print(f"{shown}:{line}: {name} is {length} lines")
    if found:
        print(f"{len(found)} function(s) over {args.limit} lines")
        return 1
    print(f"ok: no function over {args.limit} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
