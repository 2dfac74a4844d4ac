"""Every ```python block in the README and in docs/**/*.md runs as written.

The README is the front page; the guide's examples live in the documentation site's pages
(docs/), and both are tested the same way. Blocks that talk to ``127.0.0.1:8080`` run in a
subprocess against a real server started here (``tests/readme_app.py``, synthetic chat
traffic) on a free port. Blocks marked ``# no-run`` (they block forever, like
``web.run_app``, or need a notebook's top-level ``await``) are compiled but not run. A block
of ``>>>`` lines is a doctest. docs/PROTOCOL.md's examples need NATS and Redis and run in
``tests/test_protocol_examples.py``.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "PROTOCOL.md")]
PYTHON = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """(``file:line`` of the fence, code) for each ```python block of a markdown file."""
    text = path.read_text()
    where = path.relative_to(ROOT)
    return [
        (f"{where}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1))
        for m in PYTHON.finditer(text)
    ]


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "adapters.cli", "serve", "tests.readme_app:make"]
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("README example server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_readme_has_a_runnable_tour() -> None:
    tour = [code for where, code in BLOCKS if where.startswith("README.md")]
    assert tour and "# no-run" not in tour[0]


def test_no_example_was_lost_when_the_guide_moved_to_docs() -> None:
    # The README held 25 python examples before the guide moved into docs/ (issue 14).
    assert len(BLOCKS) >= 26


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_example_runs(
    where: str, code: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if code.lstrip().startswith(">>>"):
        import doctest

        parser = doctest.DocTestParser()
        test = parser.get_doctest(code, {}, where, where, 0)
        runner = doctest.DocTestRunner()
        runner.run(test)
        assert runner.failures == 0
        return
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if "# no-run" in code:
        return
    if "127.0.0.1:8080" not in code:
        exec(compile(code, where, "exec"), {"__name__": "readme"})
        return
    port = request.getfixturevalue("server")
    (tmp_path / "readings.ndjson").write_bytes(b'{"c": 20.1}\n{"c": 20.2}\n')
    script = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, f"{where}: {done.stderr.decode()}"
