"""The README and the documentation site (``mkdocs.yml``, ``docs/``) stay usable.

``make test`` builds the site with ``mkdocs build --strict``, which refuses a broken link or anchor
inside ``docs/``; the README lies outside the site, so its links and its size are checked here.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _nav_pages(entries) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_readme_is_short_and_names_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "make demo" in readme and "make test" in readme


def test_readme_links_point_at_files_and_anchors_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/|\./)[^)#\s]*)(#[^)\s]*)?\)", readme)
    assert len(links) >= 10
    for path, anchor in links:
        target = REPO / path
        assert target.exists(), path
        if anchor and target.is_file():  # Material's slugs: lower case, words joined by '-'
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.MULTILINE)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor[1:] in slugs, (path, anchor)


def test_every_docs_page_is_in_the_nav_and_every_nav_page_exists() -> None:
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md"))
    assert sorted(nav) == pages


def test_sphinx_roles_become_inline_code() -> None:
    convert = runpy.run_path(str(REPO / "scripts" / "griffe_sphinx_roles.py"))["convert"]
    text = "See :class:`~medattn.errors.ConfigError` and :func:`medattn.data.load_index`.\n\nExample::\n\n    x"
    assert convert(text) == "See `ConfigError` and `medattn.data.load_index`.\n\nExample:\n\n    x"
    assert convert(":py:meth:`Registry.get`, a :ref:`table <lrp-rules>`") == "`Registry.get`, a `table`"
