"""Figures of the package's shape: modules directly in ``gilmsg/``, the largest module, the
longest function (by ``ast``: a function's lines from its ``def`` (decorators excluded) to its
last line, nested functions counted inside their parent too).

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
from pathlib import Path


def stats(package: Path, top: int = 3) -> list[str]:
    """The report's lines for the package directory ``package``."""
    modules = sorted(package.rglob("*.py"))
    direct = [p for p in package.glob("*.py") if p.name != "__init__.py"]
    sizes = sorted(((len(p.read_text().splitlines()), p) for p in modules), reverse=True)
    functions: list[tuple[int, str]] = []
    for path in modules:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{path.relative_to(package.parent)}:{node.name}"))
    functions.sort(reverse=True)
    lines = [f"modules directly in {package.name}/ (besides __init__.py): {len(direct)}"]
    lines += [f"largest module: {p.relative_to(package.parent)} {n} lines" for n, p in sizes[:top]]
    lines += [f"longest function: {name} {n} lines" for n, name in functions[:top]]
    lines.append(f"modules in all: {len(modules)}, lines in all: {sum(n for n, _ in sizes)}")
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
