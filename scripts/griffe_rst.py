"""A griffe extension for the API reference (mkdocs.yml): the docstrings' reST idioms as Markdown.

The docstrings are prose written for ``help()`` and doctest, with reST inline roles
(``:class:`Event```), doctest sessions (``>>>``) and literal blocks (a paragraph ending in
``::``). Markdown would show the roles verbatim and read ``>>>`` as three nested quotes,
so each docstring is rewritten as it is loaded: a role becomes inline code (not a cross
reference: a reference mkdocstrings cannot resolve fails the strict build), a doctest
session and a literal block become fenced code. The source files are not touched.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|ref):`([^`]+)`")


def _role(match: re.Match[str]) -> str:
    text = match.group(1)
    label = re.match(r"(.+?)\s*<[^>]+>$", text)  # :ref:`words <target>`
    if label:
        return f"`{label.group(1)}`"
    return f"`{text.lstrip('~').rsplit('.', 1)[-1] if text.startswith('~') else text}`"


def _is_indented(line: str) -> bool:
    return line.startswith((" ", "\t")) or not line.strip()


def _literal_block(lines: list[str], i: int, out: list[str]) -> int:
    """Fence the indented block after a ``::`` paragraph; return the next line to read."""
    j = i
    while j < len(lines) and not lines[j].strip():
        j += 1
    k = j
    while k < len(lines) and _is_indented(lines[k]):
        k += 1
    block = textwrap.dedent("\n".join(lines[j:k])).strip("\n")
    if not block:
        return i
    out += ["", "```python", *block.splitlines(), "```", ""]
    return k


def markdown(text: str) -> str:
    """``text`` with reST roles, doctest sessions and ``::`` literal blocks as Markdown.

    >>> print(markdown("See :class:`~streams.Event`.\\n\\n>>> 1 + 1\\n2"))
    See `Event`.
    <BLANKLINE>
    ```pycon
    >>> 1 + 1
    2
    ```
    """
    lines = ROLE.sub(_role, text).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += ["```pycon", *lines[i:j], "```"]
            i = j
            continue
        i += 1
        if line.rstrip().endswith("::") and not line.lstrip().startswith((">>>", "...")):
            out.append(line.rstrip()[:-1])
            i = _literal_block(lines, i, out)
            continue
        out.append(line)
    return "\n".join(out)


class RstToMarkdown(Extension):
    """Rewrite every loaded docstring with :func:`markdown`."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
