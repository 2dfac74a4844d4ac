"""The executed copies in docs/notebooks/ match the notebooks they were rendered from.

Committed notebooks carry no outputs; their rendered copies (``make notebooks``) carry them,
so a reader sees the marble diagrams, graphs and plots without running anything. A copy
whose code differs from its notebook is stale: re-render it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


def code(path: Path) -> list[str]:
    nb: Any = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return [c.source for c in nb.cells if c.cell_type == "code"]


def cells(path: Path) -> list[tuple[str, str]]:
    nb: Any = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return [(c.cell_type, c.source) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_the_rendered_copy_matches_its_notebook(name: str) -> None:
    rendered = ROOT / "docs" / "notebooks" / name
    assert rendered.exists(), f"{rendered} is missing: run `make notebooks`"
    assert cells(rendered) == cells(ROOT / "notebooks" / name), (
        f"{rendered} is stale: run `make notebooks` and commit docs/notebooks"
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_rendered_copy_shows_what_every_cell_computed(name: str) -> None:
    nb: Any = nbformat.read(ROOT / "docs" / "notebooks" / name, as_version=4)  # type: ignore[no-untyped-call]
    runs = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in runs), "every code cell was executed"
    assert not [o for c in runs for o in c.outputs if o.output_type == "error"]
    assert any(c.outputs for c in runs), "a rendered notebook shows outputs"
