"""Sphinx configuration of gilmsg's documentation (``./run docs`` builds it, warnings as errors)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import gilmsg  # noqa: E402  (the installed package: one version for the docs and the wheel)

project = "gilmsg"
author = "Ralph Bean and the gilmsg contributors"
copyright = "2015-2026, " + author
version = release = gilmsg.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings' Args:/Returns:/Raises: sections
    "sphinx_click",
]

root_doc = "index"
exclude_patterns = ["_build", "_ext"]
templates_path: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# The prose refers to modules that have no page of their own (gilmsg.link.Link ...): plain
# text there, not a warning.
nitpicky = False
# Command lines must read as typed: no en dashes for "--", no curly quotes.
smartquotes = False


def _literal_backslashes(_app: object, _ctx: object, lines: list[str]) -> None:
    """A command's epilog (its examples) is read as reStructuredText: keep its backslashes."""
    lines[:] = [line.replace("\\", "\\\\") for line in lines]


def setup(app: object) -> None:
    app.connect("sphinx-click-process-epilog", _literal_backslashes)  # type: ignore[attr-defined]
