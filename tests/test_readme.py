"""Every ```python block in the README runs as written (blocks marked `# no-run` are skipped)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str):
    if "# no-run" in code:
        pytest.skip("needs a running server or broker; exercised by its own tests")
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
