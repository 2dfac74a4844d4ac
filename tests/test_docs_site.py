"""The documentation site's plumbing: README links, the docstring rewriting, the make targets.

The strict build itself (``make docs-strict``, part of ``make test``) catches broken links
inside docs/; the README is not part of the site, so its relative links (which GitHub
follows) are checked here, anchors included.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _griffe_rst() -> ModuleType:
    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "scripts" / "griffe_rst.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchors(page: Path) -> set[str]:
    """The heading anchors of a markdown page, as mkdocs (and GitHub, for these headings) make."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in headings}


README_LINKS = [
    link for link in LINK.findall(README.read_text()) if not re.match(r"[a-z]+://", link)
]


def test_the_readme_links_the_site_pages() -> None:
    pages = {link.split("#")[0] for link in README_LINKS}
    for page in [
        "docs/getting-started.md",
        "docs/guide/streams.md",
        "docs/guide/operators.md",
        "docs/guide/server.md",
        "docs/PROTOCOL.md",
        "docs/performance.md",
    ]:
        assert page in pages


@pytest.mark.parametrize("link", README_LINKS)
def test_each_relative_link_of_the_readme_resolves(link: str) -> None:
    path, _, anchor = link.partition("#")
    target = ROOT / path
    assert target.exists(), f"README.md links {link}, which does not exist"
    if anchor:
        assert anchor in anchors(target), f"README.md links {link}: no such heading"


def test_docstring_roles_become_inline_code() -> None:
    markdown = _griffe_rst().markdown
    text = "See :class:`~streams.Event`, :func:`operators.batch` and :ref:`the rules <rules>`."
    assert markdown(text) == "See `Event`, `operators.batch` and `the rules`."


def test_a_doctest_session_becomes_a_fenced_block() -> None:
    markdown = _griffe_rst().markdown
    text = "Counts events.\n\n>>> f(1)\n2\n\nMore prose."
    assert markdown(text) == "Counts events.\n\n```pycon\n>>> f(1)\n2\n```\n\nMore prose."


def test_a_literal_block_becomes_fenced_code() -> None:
    markdown = _griffe_rst().markdown
    text = "Switch it on first::\n\n    with enabled():\n        run()\n\nThen read it."
    assert markdown(text) == (
        "Switch it on first:\n\n```python\nwith enabled():\n    run()\n```\n\nThen read it."
    )


def test_make_test_builds_the_site_strictly_without_executing_the_notebooks() -> None:
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "test"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "mkdocs build --strict" in dry
    assert "RXSTREAMS_DOCS_EXECUTE=false" in dry
    docs = subprocess.run(
        ["make", "-n", "--no-print-directory", "docs"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "mkdocs build --strict" in docs and "RXSTREAMS_DOCS_EXECUTE" not in docs
