"""A griffe extension for the API pages (mkdocs.yml): Sphinx roles in docstrings become inline code.

medattn's docstrings cross-reference with Sphinx roles (``:class:`~medattn.errors.ConfigError```,
``:func:`load_index```), which mkdocstrings prints literally. This extension rewrites each role to
an inline code span of its target (the last component where the target starts with ``~``, as
Sphinx shows it), and a paragraph ending in ``::`` (a reStructuredText literal block) to one
ending in ``:``. It is hand-written because no maintained griffe or mkdocstrings extension
converts Sphinx roles; it does not produce links, because a link to an object that the API pages
do not render (torch, pandas, a private helper) would fail ``mkdocs build --strict``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj|const|term|ref):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    if "<" in target and target.endswith(">"):  # :ref:`text <target>` shows its text
        target = target.split("<", 1)[0].strip()
    elif short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def convert(text: str) -> str:
    """``text`` with every Sphinx role as inline code and ``::`` paragraph ends as ``:``."""
    return LITERAL_BLOCK.sub(":", ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrite the docstring of every loaded object (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
