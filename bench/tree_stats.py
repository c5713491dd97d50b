"""Figures of the package's shape: modules directly in ``gilmsg/``, the largest module, the
longest function (by ``ast``: a function's lines from its ``def`` (decorators excluded) to its
last line, nested functions counted inside their parent too).

The measurement (:func:`measure`) and issue 18's limits are importable:
``tests/unit/test_tree_limits.py`` holds the limits with them.

Usage: ``python bench/tree_stats.py [--rev REV] [--top N]``. With ``--rev`` the figures are of
that commit (read with ``git archive`` into a temporary directory), e.g. ``--rev 68bda4b``.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

#: Issue 18's limits: lines per module, lines per function, modules directly in the package
#: (besides ``__init__.py``). ``tests/unit/test_tree_limits.py`` holds them.
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 70
MAX_DIRECT_MODULES = 12


@dataclass(frozen=True)
class Tree:
    """The measured shape of a package: sizes in lines, names relative to its parent
    (``gilmsg/core/wire.py``, ``gilmsg/core/wire.py:parse_ack``)."""

    name: str  #: the package directory's name
    direct: tuple[str, ...]  #: modules directly in it, besides ``__init__.py``
    modules: tuple[tuple[int, str], ...]  #: (lines, module), the largest first
    functions: tuple[tuple[int, str], ...]  #: (lines, ``module:function``), the longest first

    def offenders(self, exempt: Collection[str] = ()) -> list[str]:
        """One line per figure over its limit (module, function, direct modules), with its
        size and the limit; empty when the package keeps every limit. Modules named in
        ``exempt`` (as in :attr:`modules`) are not counted, nor are their functions."""
        out = [f"module {m}: {n} lines (limit {MAX_MODULE_LINES})"
               for n, m in self.modules if n > MAX_MODULE_LINES and m not in exempt]
        out += [f"function {f}: {n} lines (limit {MAX_FUNCTION_LINES})"
                for n, f in self.functions
                if n > MAX_FUNCTION_LINES and f.partition(":")[0] not in exempt]
        if len(self.direct) > MAX_DIRECT_MODULES:
            out.append(f"{len(self.direct)} modules directly in {self.name}/ (limit "
                       f"{MAX_DIRECT_MODULES}): {', '.join(self.direct)}")
        return out


def measure(package: Path) -> Tree:
    """Measure the package directory ``package``: every ``*.py`` under it, by ``ast``."""
    modules = sorted(package.rglob("*.py"))
    direct = tuple(sorted(p.name for p in package.glob("*.py") if p.name != "__init__.py"))
    sizes = sorted(((len(p.read_text().splitlines()), str(p.relative_to(package.parent)))
                    for p in modules), reverse=True)
    functions: list[tuple[int, str]] = []
    for path in modules:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{path.relative_to(package.parent)}:{node.name}"))
    functions.sort(reverse=True)
    return Tree(package.name, direct, tuple(sizes), tuple(functions))


def stats(package: Path, top: int = 3) -> list[str]:
    """The report's lines for the package directory ``package``."""
    tree = measure(package)
    lines = [f"modules directly in {tree.name}/ (besides __init__.py): {len(tree.direct)}"]
    lines += [f"largest module: {m} {n} lines" for n, m in tree.modules[:top]]
    lines += [f"longest function: {name} {n} lines" for n, name in tree.functions[:top]]
    lines.append(f"modules in all: {len(tree.modules)}, "
                 f"lines in all: {sum(n for n, _ in tree.modules)}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git commit to measure instead of the work tree")
    parser.add_argument("--top", type=int, default=3, help="how many of each to list")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    if args.rev is None:
        print("\n".join(stats(root / "gilmsg", args.top)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", args.rev, "gilmsg"],
                                 capture_output=True, check=False)
        if archive.returncode != 0:
            print(f"tree_stats: git archive {args.rev}: {archive.stderr.decode().strip()}",
                  file=sys.stderr)
            return 2
        tar_path = Path(tmp) / "tree.tar"
        tar_path.write_bytes(archive.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        print(f"at {args.rev}:")
        print("\n".join(stats(Path(tmp) / "gilmsg", args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
